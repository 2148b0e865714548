"""upmon-schema against the real ClickHouse 18.16 cluster of the local stack.

Needs the ClickHouse part of a stack (`ci/stack up`, or `--components
zookeeper,clickhouse`; UPMON_STATE_DIR selects it) and build/bin/upmon-schema
(UPMON_BUILD_DIR overrides build/). Every run works in its own database
(schema_test_<random>), dropped at the end on every server, so it never meets
the `upmon` database or another engineer's run.

What it proves: apply creates everything on every replica of every shard and
is a no-op the second time; status and verify agree; a changed migration is
refused; the materialized views fill the rollups with exactly what the raw
rows say (read through the Distributed tables); drop-expired drops exactly
the expired partitions (dry run lists them, the real run drops them on every
replica, a second run finds nothing); a batch inserted twice (a retry, on the
other replica) is counted once in events and in every rollup. About 15 s.
"""

import datetime
import os
import random
import shutil
import subprocess
import uuid

import pytest

from conftest import ROOT, ClickHouse, parse_env, poll, run_stack, state_dir

DAY_NS = 86400 * 10**9


def build_dir():
    return os.path.abspath(os.environ.get("UPMON_BUILD_DIR") or os.path.join(ROOT, "build"))


@pytest.fixture(scope="module")
def cluster():
    """The stack's ClickHouse servers, a fresh database name and the tool's environment."""
    state = state_dir()
    if not os.path.exists(os.path.join(state, "stack.json")):
        pytest.fail("no stack in %s: start it with `ci/stack up`" % state, pytrace=False)
    out = run_stack("env", state=state, timeout=60)
    if out.returncode != 0:
        pytest.fail("`ci/stack env` failed:\n%s" % out.stderr, pytrace=False)
    env = parse_env(out.stdout)
    if not env.get("UPMON_STACK_CLICKHOUSE_TOPOLOGY"):
        pytest.fail("the stack in %s runs no ClickHouse" % state, pytrace=False)
    servers = {}
    for item in env["UPMON_STACK_CLICKHOUSE_TOPOLOGY"].split(","):
        key, _, url = item.partition("=")
        shard, _, replica = key.partition(":")
        servers[(int(shard), int(replica))] = ClickHouse(url, env["UPMON_CLICKHOUSE_USER"],
                                                         env["UPMON_CLICKHOUSE_PASSWORD"])
    binary = os.path.join(build_dir(), "bin", "upmon-schema")
    if not os.access(binary, os.X_OK):
        pytest.fail("%s is missing: build it (ninja -C %s upmon-schema)" % (binary, build_dir()),
                    pytrace=False)
    db = "schema_test_%s" % uuid.uuid4().hex[:10]
    tool_env = {k: v for k, v in os.environ.items() if not k.startswith("UPMON_")}
    tool_env.update({
        "UPMON_CLICKHOUSE_URLS": env["UPMON_CLICKHOUSE_URLS"],
        "UPMON_CLICKHOUSE_USER": env["UPMON_CLICKHOUSE_USER"],
        "UPMON_CLICKHOUSE_PASSWORD": env["UPMON_CLICKHOUSE_PASSWORD"],
        "UPMON_CLICKHOUSE_CLUSTER": env["UPMON_CLICKHOUSE_CLUSTER"],
        "UPMON_CLICKHOUSE_DATABASE": db,
        "UPMON_LOG_LEVEL": "warn",
    })
    yield {"servers": servers, "db": db, "env": tool_env, "binary": binary}
    for ch in servers.values():
        ch.query("DROP DATABASE IF EXISTS %s" % db)


def tool(cluster, *args, env=None, timeout=120):
    e = dict(cluster["env"])
    e.update(env or {})
    return subprocess.run([cluster["binary"]] + list(args), capture_output=True, text=True,
                          env=e, timeout=timeout)


def migration_names():
    return sorted(f[:-4] for f in os.listdir(os.path.join(ROOT, "sql")) if f.endswith(".sql"))


# --------------------------------------------------------------------------
# Migrations


def test_apply_twice_status_verify(cluster):
    names = migration_names()
    first = tool(cluster, "apply")
    assert first.returncode == 0, first.stdout + first.stderr
    for (shard, replica), ch in cluster["servers"].items():
        for name in names:
            assert "url=%s applied %s" % (ch.url, name) in first.stdout, first.stdout
        recorded = ch.rows("SELECT name FROM %s.schema_migrations ORDER BY version"
                           % cluster["db"])
        assert [r[0] for r in recorded] == names, (shard, replica, recorded)

    second = tool(cluster, "apply")
    assert second.returncode == 0, second.stdout + second.stderr
    assert " applied " not in second.stdout, "second apply changed something:\n" + second.stdout
    assert second.stdout.count("(up to date)") == len(cluster["servers"]), second.stdout
    for ch in cluster["servers"].values():
        assert ch.scalar("SELECT count() FROM %s.schema_migrations" % cluster["db"]) == \
            str(len(names))

    for cmd, word in (("status", ""), ("verify", " verified")):
        out = tool(cluster, cmd)
        assert out.returncode == 0, out.stdout + out.stderr
        expect = "applied=%d/%d%s" % (len(names), len(names), word)
        assert out.stdout.count(expect) == len(cluster["servers"]), out.stdout

    # Every table the contract names exists on every server.
    for ch in cluster["servers"].values():
        tables = {r[0] for r in ch.rows("SELECT name FROM system.tables WHERE database = '%s'"
                                        % cluster["db"])}
        for t in ("events_local", "events", "events_1s_local", "events_1s",
                  "events_1m_company_local", "events_1m_company", "events_1d_company_local",
                  "events_1d_company", "attempts_local", "attempts", "analyzer_stats_local",
                  "events_1m_local", "events_1m", "attempt_events_local", "attempt_events",
                  "analyzer_stats", "seller_scores_local", "seller_scores", "schema_migrations"):
            assert t in tables, (ch.url, t, sorted(tables))


def test_changed_migration_is_refused(cluster, tmp_path):
    sql = tmp_path / "sql"
    shutil.copytree(os.path.join(ROOT, "sql"), sql)
    target = sorted(p for p in os.listdir(sql) if p.endswith(".sql"))[1]
    with open(sql / target, "a") as f:
        f.write("-- an edit after the migration was applied\n")
    for cmd in ("apply", "status", "verify"):
        out = tool(cluster, "--sql-dir", str(sql), cmd)
        assert out.returncode == 1, (cmd, out.stdout, out.stderr)
        assert "applied migrations must not change" in out.stderr, out.stderr
        assert out.stdout.count("ERROR migration %s was applied with checksum" % target[:-4]) \
            == len(cluster["servers"]), out.stdout
    # A migration the server has but this schema lacks: the server is newer.
    os.remove(sql / target)
    shutil.copy(os.path.join(ROOT, "sql", target), sql / target)
    last = sorted(p for p in os.listdir(sql) if p.endswith(".sql"))[-1]
    os.remove(sql / last)
    out = tool(cluster, "--sql-dir", str(sql), "verify")
    assert out.returncode == 1 and "schema is newer" in out.stderr, out.stdout + out.stderr
    # Nothing was changed by the refused runs.
    out = tool(cluster, "verify")
    assert out.returncode == 0, out.stdout + out.stderr


# --------------------------------------------------------------------------
# Rollups


COLUMNS = ("event_date, ts_ns, item_id, attempt_id, request_id, event, is_created, up_ts, origin, "
           "origin_id, country, company_id, category_id, media, media_own, media_external, "
           "media_bad, data, kafka_partition, kafka_offset")


def make_events(rng, base_ns, attempts, prefix):
    """Attempts of 1..4 events each: some errors, most go live with the last event."""
    rows = []
    for a in range(attempts):
        attempt_id = "%s-%d" % (prefix, a)
        origin = rng.choice(["upload/ui", "upload/api", "update/xlsx"])
        country = rng.choice(["DE", "FR", "PL"])
        company = rng.choice([11, 12, 13])
        n = rng.randint(1, 4)
        t = base_ns + rng.randint(0, 50) * 10**9 + rng.randint(0, 10**9 - 1)
        live = rng.random() < 0.8
        for i in range(n):
            last = i == n - 1
            created = 1 if (last and live) else 0
            event = "SAVE" if created else rng.choice(["ERROR", "UPDATE", "ERROR"])
            up_ts = t + rng.randint(1, 3000) * 10**6 if created else 0
            rows.append({
                "ts_ns": t, "item_id": 1000 + a, "attempt_id": attempt_id,
                "request_id": "r%d" % i, "event": event, "is_created": created,
                "up_ts": up_ts, "origin": origin, "country": country, "company_id": company,
                "media_own": rng.randint(0, 3), "media_external": rng.randint(0, 2),
                "media_bad": rng.randint(0, 1),
            })
            t += rng.randint(1, 2000) * 10**6
    return rows


def values(rows):
    out = []
    for r in rows:
        day = datetime.datetime.fromtimestamp(r["ts_ns"] // 10**9, datetime.timezone.utc).date()
        out.append("('%s', %d, %d, '%s', '%s', '%s', %d, %d, '%s', 'o', '%s', %d, 7, [], %d, %d, "
                   "%d, '{}', 0, 0)" % (day.isoformat(), r["ts_ns"], r["item_id"],
                                        r["attempt_id"], r["request_id"], r["event"],
                                        r["is_created"], r["up_ts"], r["origin"], r["country"],
                                        r["company_id"], r["media_own"], r["media_external"],
                                        r["media_bad"]))
    return ",".join(out)


def insert(ch, db, rows):
    # events_in: the table writers use; its views fill events_local and the rollups.
    ch.query("INSERT INTO %s.events_in (%s) VALUES %s" % (db, COLUMNS, values(rows)))


def add_counts(e, x):
    """Add event x to e[0:8]: events, SAVE, UPDATE, ERROR, created, media own/external/bad."""
    for i, v in enumerate((1, x["event"] == "SAVE", x["event"] == "UPDATE",
                           x["event"] == "ERROR", x["is_created"], x["media_own"],
                           x["media_external"], x["media_bad"])):
        e[i] += v


def test_rollups_match_raw_rows(cluster):
    db = cluster["db"]
    rng = random.Random(4)
    # 2026-01-05T10:00:00Z, far from a day boundary.
    base = 1767607200 * 10**9
    shards = sorted({s for s, _ in cluster["servers"]})
    rows = []
    for s in shards:
        part = make_events(rng, base, 60, "s%d" % s)
        insert(cluster["servers"][(s, 1)], db, part)
        # A retry of the same batch, on the other replica: block deduplication
        # must drop it in events_local and in every rollup (exactly-once).
        last = max(r for sh, r in cluster["servers"] if sh == s)
        insert(cluster["servers"][(s, last)], db, part)
        rows += part
    any_ch = cluster["servers"][(shards[0], 1)]

    # Distributed reads pick any replica: wait until replication caught up.
    poll("events through the Distributed table", lambda: any_ch.scalar(
        "SELECT count() FROM %s.events" % db) == str(len(rows)), 30)
    for (s, r), ch in cluster["servers"].items():
        want = sum(1 for x in rows if x["attempt_id"].startswith("s%d-" % s))
        poll("replica %d:%d has its shard's rows" % (s, r), lambda: ch.scalar(
            "SELECT count() FROM %s.events_1s_local" % db) != "0" and ch.scalar(
            "SELECT count() FROM %s.events_local" % db) == str(want), 30)

    # Per second x origin x country: counts by type, created, media, attempts.
    expect = {}
    for x in rows:
        key = (str(x["ts_ns"] // 10**9), x["origin"], x["country"])
        e = expect.setdefault(key, [0, 0, 0, 0, 0, 0, 0, 0, set()])
        add_counts(e, x)
        e[8].add(x["attempt_id"])
    got = {}
    for r in any_ch.rows(
            "SELECT toUInt32(ts), origin, country, countMerge(events), sumMerge(saves), "
            "sumMerge(updates), sumMerge(errors), sumMerge(created), sumMerge(media_own), "
            "sumMerge(media_external), sumMerge(media_bad), uniqMerge(attempts) "
            "FROM %s.events_1s GROUP BY ts, origin, country" % db):
        got[(r[0], r[1], r[2])] = [int(v) for v in r[3:]]
    assert set(got) == set(expect)
    for k, e in expect.items():
        assert got[k] == e[:8] + [len(e[8])], (k, got[k], e)

    # Latency: full time = up_ts - ts_ns of the creating event, in ms.
    full = sorted((x["up_ts"] - x["ts_ns"]) / 1e6 for x in rows if x["is_created"])
    r = any_ch.rows("SELECT sumMerge(full_time_n), sumMerge(full_time_sum_ms), "
                    "quantilesTDigestIfMerge(0.5, 0.9, 0.95, 0.99)(full_time_q_ms) "
                    "FROM %s.events_1s" % db)[0]
    assert int(r[0]) == len(full)
    assert abs(float(r[1]) - sum(full)) < 1e-6 * sum(full)
    q = [float(v) for v in r[2].strip("[]").split(",")]
    assert q == sorted(q), q
    assert full[0] <= q[0] and q[-1] <= full[-1], (q, full[0], full[-1])
    median = full[len(full) // 2]
    # t-digest over < 200 points is close to exact; 10% of the spread is generous.
    assert abs(q[0] - median) < 0.1 * (full[-1] - full[0]), (q[0], median)

    # Per minute x company and per day x company x origin: event and error counts.
    minute = {}
    day = {}
    for x in rows:
        sec = x["ts_ns"] // 10**9
        k = (str(sec - sec % 60), str(x["company_id"]))
        minute[k] = [a + b for a, b in zip(minute.get(k, [0, 0]), [1, x["event"] == "ERROR"])]
        d = datetime.datetime.fromtimestamp(sec, datetime.timezone.utc).date().isoformat()
        k = (d, str(x["company_id"]), x["origin"])
        day[k] = [a + b for a, b in zip(day.get(k, [0, 0]), [1, x["is_created"]])]
    got = {(r[0], r[1]): [int(r[2]), int(r[3])] for r in any_ch.rows(
        "SELECT toUInt32(minute), company_id, countMerge(events), sumMerge(errors) "
        "FROM %s.events_1m_company GROUP BY minute, company_id" % db)}
    assert got == minute
    got = {(r[0], r[1], r[2]): [int(r[3]), int(r[4])] for r in any_ch.rows(
        "SELECT day, company_id, origin, countMerge(events), sumMerge(created) "
        "FROM %s.events_1d_company GROUP BY day, company_id, origin" % db)}
    assert got == day

    # Per minute x origin x country (the analyzer's history and window detail): the same
    # counts as per second, summed by minute, and unique sellers.
    per_min = {}
    for x in rows:
        sec = x["ts_ns"] // 10**9
        e = per_min.setdefault((str(sec - sec % 60), x["origin"], x["country"]),
                               [0, 0, 0, 0, 0, 0, 0, 0, 0, set()])
        add_counts(e, x)
        e[8] += x["is_created"] == 1 and x["up_ts"] >= x["ts_ns"]
        e[9].add(x["company_id"])
    got = {(r[0], r[1], r[2]): [int(v) for v in r[3:]] for r in any_ch.rows(
        "SELECT toUInt32(minute), origin, country, countMerge(events), sumMerge(saves), "
        "sumMerge(updates), sumMerge(errors), sumMerge(created), sumMerge(media_own), "
        "sumMerge(media_external), sumMerge(media_bad), sumMerge(full_time_n), "
        "uniqMerge(sellers) FROM %s.events_1m GROUP BY minute, origin, country" % db)}
    assert got == {k: e[:9] + [len(e[9])] for k, e in per_min.items()}
    r = any_ch.rows("SELECT sumMerge(full_time_sum_ms) FROM %s.events_1m" % db)[0]
    assert abs(float(r[0]) - sum(full)) < 1e-6 * sum(full)
    # Its full-time states hold the same samples as the per-second ones.
    r = any_ch.rows("SELECT quantilesTDigestIfMerge(0.5, 0.9, 0.95, 0.99)(full_time_q_ms) "
                    "FROM %s.events_1m" % db)[0]
    q1m = [float(v) for v in r[0].strip("[]").split(",")]
    assert full[0] <= q1m[0] and q1m[-1] <= full[-1], (q1m, full[0], full[-1])
    assert abs(q1m[0] - median) < 0.1 * (full[-1] - full[0]), (q1m[0], median)

    # Every event, time-ordered, by attempt hash (the analyzer's attempt-time
    # lookups): one row per event, the hash sipHash64(attempt_id).
    got = sorted(tuple(r) for r in any_ch.rows(
        "SELECT ts_ns, attempt_h, is_error, is_created, up_ts, origin, country "
        "FROM %s.attempt_events" % db))
    hashes = {r[0]: r[1] for r in any_ch.rows(
        "SELECT attempt_id, sipHash64(attempt_id) FROM %s.events GROUP BY attempt_id" % db)}
    assert got == sorted((str(x["ts_ns"]), hashes[x["attempt_id"]],
                          str(int(x["event"] == "ERROR")), str(x["is_created"]), str(x["up_ts"]),
                          x["origin"], x["country"]) for x in rows)

    # Per attempt: first ts, success ts, up_ts, events, errors, failed.
    att = {}
    for x in rows:
        a = att.setdefault(x["attempt_id"], {"first": x["ts_ns"], "success": 0, "up": 0,
                                             "n": 0, "err": 0, "created": 0})
        a["first"] = min(a["first"], x["ts_ns"])
        a["n"] += 1
        a["err"] += x["event"] == "ERROR"
        if x["is_created"]:
            a["success"], a["up"], a["created"] = x["ts_ns"], x["up_ts"], 1
    got = {}
    for r in any_ch.rows(
            "SELECT attempt_id, minMerge(first_ts), minIfMerge(success_ts), maxMerge(up_ts), "
            "countMerge(events), sumMerge(errors), maxMerge(created) "
            "FROM %s.attempts GROUP BY attempt_id" % db):
        got[r[0]] = {"first": int(r[1]), "success": int(r[2]), "up": int(r[3]), "n": int(r[4]),
                     "err": int(r[5]), "created": int(r[6])}
    assert got == att
    failed = sum(1 for a in att.values() if a["err"] > 0 and not a["created"])
    assert failed > 0, "the generated data should contain failed attempts"
    assert any_ch.scalar("SELECT count() FROM (SELECT attempt_id FROM %s.attempts GROUP BY "
                         "attempt_id HAVING sumMerge(errors) > 0 AND maxMerge(created) = 0)"
                         % db) == str(failed)


# --------------------------------------------------------------------------
# Retention


def partitions(ch, db):
    return {(r[0], r[1]) for r in ch.rows(
        "SELECT table, partition_id FROM system.parts WHERE active AND database = '%s'" % db)}


def test_retention_drops_exactly_the_expired(cluster):
    db = cluster["db"]
    servers = cluster["servers"]
    shards = sorted({s for s, _ in servers})
    now = datetime.datetime.now(datetime.timezone.utc)
    today = datetime.datetime(now.year, now.month, now.day, tzinfo=datetime.timezone.utc)
    ancient = datetime.datetime(2020, 1, 15, 12, tzinfo=datetime.timezone.utc)  # all tables
    middle = today - datetime.timedelta(days=100)  # raw only (raw 30 d, fine 200 d)
    rng = random.Random(6)
    for s in shards:
        for label, when in (("old", ancient), ("mid", middle), ("new", today)):
            base = int(when.timestamp()) * 10**9 + 3600 * 10**9
            insert(servers[(s, 1)], db, make_events(rng, base, 5, "ret-%s-%d" % (label, s)))
    def day_id(d):
        return d.strftime("%Y%m%d")

    days = {("events_local", day_id(d)) for d in (ancient, middle, today)}

    def settled(s):
        sets = [partitions(ch, db) for (sh, _), ch in servers.items() if sh == s]
        return days <= sets[0] and all(x == sets[0] for x in sets)

    for s in shards:
        poll("the replicas of shard %d hold the same partitions" % s, lambda: settled(s), 30)

    expired = set()
    for t in ("events_local", "events_1s_local", "events_1m_company_local", "attempts_local"):
        expired.add((t, day_id(ancient)))
    expired.add(("events_local", day_id(middle)))
    expired.add(("events_1d_company_local", ancient.strftime("%Y%m")))
    before = {k: partitions(ch, db) for k, ch in servers.items()}
    for k, parts in before.items():
        assert expired <= parts, (k, expired - parts)

    env = {"UPMON_SCHEMA_RAW_DAYS": "30", "UPMON_SCHEMA_FINE_DAYS": "200",
           "UPMON_SCHEMA_DAILY_DAYS": "1825"}

    def listed(out, word):
        found = set()
        for line in out.splitlines():
            f = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
            if line.startswith(word + " "):
                found.add((int(f["shard"]), f["table"], f["partition"]))
        return found

    # Independently of the C code: a partition goes when its last day is
    # before today - age. Besides the rows above, this covers the rollup
    # test's (earlier in this module) January rows, also expired here.
    ages = {"events_local": 30, "events_1s_local": 200, "events_1m_company_local": 200,
            "attempts_local": 200, "events_1d_company_local": 1825,
            "events_1m_local": 200, "attempt_events_local": 200,
            "analyzer_stats_local": 200, "seller_scores_local": 200}
    cut = (today - datetime.timedelta(days=1)).date()

    def is_expired(table, pid):
        if len(pid) == 8:
            last = datetime.date(int(pid[:4]), int(pid[4:6]), int(pid[6:]))
        else:
            nxt = datetime.date(int(pid[:4]) + int(pid[4:6]) // 12, int(pid[4:6]) % 12 + 1, 1)
            last = nxt - datetime.timedelta(days=1)
        return last < cut - datetime.timedelta(days=ages[table] - 1)

    want = set()
    for (s, _), parts in before.items():
        want |= {(s, t, p) for t, p in parts if t in ages and is_expired(t, p)}
    assert {(s, t, p) for s in shards for t, p in expired} <= want
    assert not any(p == day_id(today) for _, _, p in want), want
    expired = {(t, p) for _, t, p in want}
    dry = tool(cluster, "drop-expired", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert listed(dry.stdout, "would-drop") == want, dry.stdout
    assert {k: partitions(ch, db) for k, ch in servers.items()} == before, "dry run dropped"

    real = tool(cluster, "drop-expired", env=env)
    assert real.returncode == 0, real.stdout + real.stderr
    assert listed(real.stdout, "drop") == want, real.stdout
    # Issued once per shard; replication carries it to the other replicas.
    for k, ch in servers.items():
        poll("replica %s dropped the expired partitions" % (k,),
             lambda: partitions(ch, db) == before[k] - expired, 30)

    # What is left: raw rows of today only; fine rollups keep the middle day.
    ev = servers[(shards[0], 1)]
    assert ev.scalar("SELECT count() FROM %s.events WHERE attempt_id LIKE 'ret-old-%%' OR "
                     "attempt_id LIKE 'ret-mid-%%'" % db) == "0"
    assert int(ev.scalar("SELECT count() FROM %s.events WHERE attempt_id LIKE 'ret-new-%%'"
                         % db)) > 0
    assert ev.scalar("SELECT count() FROM %s.attempts WHERE attempt_id LIKE 'ret-old-%%'"
                     % db) == "0"
    assert int(ev.scalar("SELECT count() FROM %s.attempts WHERE attempt_id LIKE 'ret-mid-%%'"
                         % db)) > 0

    again = tool(cluster, "drop-expired", env=env)
    assert again.returncode == 0 and listed(again.stdout, "drop") == set(), again.stdout


def test_verify_notices_a_missing_table(cluster):
    db = cluster["db"]
    ch = cluster["servers"][max(cluster["servers"])]
    ch.query("DROP TABLE %s.attempts_mv" % db)
    out = tool(cluster, "verify")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "table %s.attempts_mv is missing" % db in out.stdout, out.stdout
    assert out.stdout.count(" verified") == len(cluster["servers"]) - 1, out.stdout


def test_check_config(cluster):
    out = tool(cluster, "--check-config", env={"UPMON_SCHEMA_RAW_DAYS": "7"})
    assert out.returncode == 0, out.stderr
    assert "raw_days: 7" in out.stdout
    assert "password: <redacted>" in out.stdout or "password: \"<redacted>\"" in out.stdout
    assert cluster["env"]["UPMON_CLICKHOUSE_PASSWORD"] not in out.stdout
    bad = tool(cluster, "--check-config", env={"UPMON_SCHEMA_RAW_DAYS": "0"})
    assert bad.returncode == 1 and "raw_days" in bad.stderr, bad.stderr
    usage = tool(cluster, "frobnicate")
    assert usage.returncode == 2


def test_topology_key_replaces_discovery(cluster):
    items = ",".join("%d:%d=%s" % (s, r, ch.url) for (s, r), ch in sorted(
        cluster["servers"].items()))
    # clickhouse.urls points nowhere: only schema.topology can reach the servers.
    env = {"UPMON_SCHEMA_TOPOLOGY": items, "UPMON_CLICKHOUSE_URLS": "http://127.0.0.1:1"}
    out = tool(cluster, "status", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    for (s, r), ch in cluster["servers"].items():
        assert "shard=%d replica=%d url=%s database=%s applied=" % (s, r, ch.url, cluster["db"]) \
            in out.stdout, out.stdout
    bad = tool(cluster, "status", env={"UPMON_SCHEMA_TOPOLOGY": "1=http://x"})
    assert bad.returncode == 1 and "shard:replica=url" in bad.stderr, bad.stderr

    # verify refuses a topology that leaves a server of the cluster out.
    partial = ",".join(items.split(",")[:-1])
    out = tool(cluster, "verify", env={"UPMON_SCHEMA_TOPOLOGY": partial})
    assert out.returncode == 1, out.stdout + out.stderr
    assert "servers but only %d were checked" % (len(cluster["servers"]) - 1) in out.stdout, \
        out.stdout
