"""sql/ on a current ClickHouse engine: chDB (the ClickHouse engine in-process, from PyPI).

The local stack runs ClickHouse 18.16 (test_schema.py proves sql/ there); the chart deploys a
current release. chDB runs one server without ZooKeeper or a cluster, so the migrations are
loaded with these mappings, and with nothing else changed:

    Replicated<X>MergeTree('<zk path>', '<replica>')  ->  <X>MergeTree()
        (same engine family, same ORDER BY / PARTITION BY, without replication)
    CREATE TABLE <db>.t AS <db>.t_local ENGINE = Distributed(...)
        ->  CREATE VIEW <db>.t AS SELECT * FROM <db>.t_local
        (one server is the whole "cluster": reading through the view is reading every shard)
    {database} -> the test database, {cluster} -> upmon (as upmon-schema substitutes)

Then rows go into events_local and the materialized views must fill the rollups with the
counts the rows imply. It also checks the SQL for what 18.16 lacks (LowCardinality, TTL,
DateTime64, Map, JSON functions), so a migration that only a current release accepts fails
here even before the 18.16 test runs. Needs the `chdb` Python package (ci/deps installs it);
about 3 s.
"""

import os
import re

import pytest

from conftest import ROOT

SQL_DIR = os.path.join(ROOT, "sql")
DB = "upmon_chdb"


def migrations():
    files = sorted(f for f in os.listdir(SQL_DIR) if f.endswith(".sql"))
    assert files, "no migrations in sql/"
    return [(f, open(os.path.join(SQL_DIR, f), encoding="utf-8").read()) for f in files]


def split(sql):
    """Statements at ';' outside quotes and comments (as upm_schema_split does)."""
    out, cur, i, n = [], [], 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"`":
            j = i + 1
            while j < n and sql[j] != c:
                j += 2 if sql[j] == "\\" else 1
            cur.append(sql[i:j + 1])
            i = j + 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j
        elif sql.startswith("/*", i):
            i = sql.index("*/", i) + 2
        elif c == ";":
            out.append("".join(cur).strip())
            cur = []
            i += 1
        else:
            cur.append(c)
            i += 1
    out.append("".join(cur).strip())
    return [s for s in out if s]


REPLICATED = re.compile(r"Replicated(\w*MergeTree)\(\s*'[^']*'\s*,\s*'[^']*'\s*\)")
DISTRIBUTED = re.compile(
    r"^CREATE TABLE IF NOT EXISTS (\w+)\.(\w+) AS (\w+)\.(\w+)\s+ENGINE = Distributed\(.*\)$",
    re.S)


def to_chdb(stmt):
    stmt = stmt.replace("{database}", DB).replace("{cluster}", "upmon")
    m = DISTRIBUTED.match(stmt)
    if m:
        return "CREATE VIEW IF NOT EXISTS %s.%s AS SELECT * FROM %s.%s" % m.groups()
    return REPLICATED.sub(r"\1()", stmt)


def test_sql_avoids_what_18_16_lacks():
    banned = re.compile(r"\b(LowCardinality|TTL|DateTime64|Map\s*\(|JSON\w*\s*\(|"
                        r"SimpleAggregateFunction|ON CLUSTER)\b", re.I)
    for name, text in migrations():
        code = re.sub(r"--[^\n]*", "", text)
        hit = banned.search(code)
        assert not hit, "%s uses %r, which ClickHouse 18.16 lacks" % (name, hit.group(0))
        for stmt in split(text):
            if "MergeTree" in stmt:
                assert REPLICATED.search(stmt), \
                    "%s: MergeTree tables are Replicated (one copy per shard replica)" % name


@pytest.fixture(scope="module")
def chdb_session(tmp_path_factory):
    try:
        from chdb import session
    except ImportError:
        pytest.fail("the chdb package is missing: run ci/deps (python3 -m pip install chdb)",
                    pytrace=False)
    s = session.Session(str(tmp_path_factory.mktemp("chdb")))
    yield s
    s.close()


def q(s, sql):
    return str(s.query(sql, "TabSeparated")).strip()


def test_migrations_load_and_rollups_fill(chdb_session):
    s = chdb_session
    q(s, "CREATE DATABASE IF NOT EXISTS %s" % DB)
    loaded = 0
    for name, text in migrations():
        for stmt in split(text):
            q(s, to_chdb(stmt))
            loaded += 1
    # Loading twice is a no-op (every statement is IF NOT EXISTS).
    for name, text in migrations():
        for stmt in split(text):
            q(s, to_chdb(stmt))
    tables = set(q(s, "SELECT name FROM system.tables WHERE database = '%s'" % DB).split())
    for t in ("events_local", "events", "events_1s", "events_1m_company", "events_1d_company",
              "attempts", "events_1s_mv", "attempts_mv"):
        assert t in tables, (t, sorted(tables))
    created = set()
    for _, text in migrations():
        created |= set(re.findall(r"IF NOT EXISTS \{database\}\.(\w+)", text))
    assert loaded >= len(created) and tables == created, (sorted(tables), sorted(created))

    # Two attempts: a1 = ERROR then SAVE (live 400 ms later), a2 = UPDATE, ERROR (failed).
    base = 1767607200 * 10**9  # 2026-01-05T10:00:00Z
    rows = [
        ("a1", base, "ERROR", 0, 0, "DE", 11),
        ("a1", base + 500 * 10**6, "SAVE", 1, base + 900 * 10**6, "DE", 11),
        ("a2", base + 10**9, "UPDATE", 0, 0, "FR", 12),
        ("a2", base + 2 * 10**9, "ERROR", 0, 0, "FR", 12),
    ]
    q(s, "INSERT INTO %s.events_in (event_date, ts_ns, item_id, attempt_id, request_id, event, "
         "is_created, up_ts, origin, origin_id, country, company_id, category_id, media, "
         "media_own, media_external, media_bad, data, kafka_partition, kafka_offset) VALUES %s"
      % (DB, ",".join("('2026-01-05', %d, 1, '%s', 'r', '%s', %d, %d, 'upload/ui', 'o', '%s', %d, "
                      "3, ['u'], 1, 2, 0, '{}', 0, %d)" % (t, a, e, c, u, co, cid, i)
                      for i, (a, t, e, c, u, co, cid) in enumerate(rows))))

    assert q(s, "SELECT count() FROM %s.events" % DB) == "4"
    got = q(s, "SELECT countMerge(events), sumMerge(saves), sumMerge(updates), sumMerge(errors), "
               "sumMerge(created), sumMerge(media_own), sumMerge(media_external), "
               "uniqMerge(attempts), sumMerge(full_time_n), sumMerge(full_time_sum_ms) "
               "FROM %s.events_1s" % DB)
    assert got.split("\t") == ["4", "1", "1", "2", "1", "4", "8", "2", "1", "400"], got
    # One sample of 400 ms: every quantile is 400.
    got = q(s, "SELECT quantilesTDigestIfMerge(0.5, 0.9, 0.95, 0.99)(full_time_q_ms) "
               "FROM %s.events_1s" % DB)
    assert [float(x) for x in got.strip("[]").split(",")] == [400.0] * 4, got
    got = q(s, "SELECT toUInt32(ts), country, countMerge(events) FROM %s.events_1s "
               "GROUP BY ts, country ORDER BY ts, country" % DB)
    assert got.splitlines() == ["%d\tDE\t2" % (base // 10**9), "%d\tFR\t1" % (base // 10**9 + 1),
                                "%d\tFR\t1" % (base // 10**9 + 2)], got
    got = q(s, "SELECT company_id, countMerge(events), sumMerge(errors) FROM %s.events_1m_company "
               "GROUP BY company_id ORDER BY company_id" % DB)
    assert got.splitlines() == ["11\t2\t1", "12\t2\t1"], got
    got = q(s, "SELECT day, company_id, countMerge(events), sumMerge(created) "
               "FROM %s.events_1d_company GROUP BY day, company_id ORDER BY company_id" % DB)
    assert got.splitlines() == ["2026-01-05\t11\t2\t1", "2026-01-05\t12\t2\t0"], got
    got = q(s, "SELECT toUInt32(minute), country, uniqMerge(sellers), "
               "quantilesTDigestIfMerge(0.5, 0.9, 0.95, 0.99)(full_time_q_ms) FROM %s.events_1m "
               "GROUP BY minute, country ORDER BY country" % DB)
    minute = base // 10**9 // 60 * 60
    assert got.splitlines() == ["%d\tDE\t1\t[400,400,400,400]" % minute,
                                "%d\tFR\t1\t[nan,nan,nan,nan]" % minute], got
    got = q(s, "SELECT ts_ns, attempt_h = sipHash64('a1'), is_error, is_created, up_ts, country "
               "FROM %s.attempt_events ORDER BY ts_ns" % DB)
    assert got.splitlines() == [
        "%d\t1\t1\t0\t0\tDE" % base, "%d\t1\t0\t1\t%d\tDE" % (base + 500 * 10**6, base + 900 * 10**6),
        "%d\t0\t0\t0\t0\tFR" % (base + 10**9), "%d\t0\t1\t0\t0\tFR" % (base + 2 * 10**9),
    ], got
    got = q(s, "SELECT attempt_id, minMerge(first_ts), minIfMerge(success_ts), maxMerge(up_ts), "
               "countMerge(events), sumMerge(errors), maxMerge(created) FROM %s.attempts "
               "GROUP BY attempt_id ORDER BY attempt_id" % DB)
    assert got.splitlines() == [
        "a1\t%d\t%d\t%d\t2\t1\t1" % (base, base + 500 * 10**6, base + 900 * 10**6),
        "a2\t%d\t0\t0\t2\t1\t0" % (base + 10**9),
    ], got
