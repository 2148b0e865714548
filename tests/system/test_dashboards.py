"""The Grafana dashboards in dashboards/ (issue 18): their structure, and every query run
against real servers over data from a simulator run.

A real Grafana cannot run on these machines, so each panel's query is executed the way
Grafana would send it:

- PromQL, with Grafana's interval variables expanded, to the stack's Prometheus: it must parse
  and evaluate, and every metric it names must be one an upmon service registers;
- SQL for the ClickHouse plugin (grafana-clickhouse-datasource), with the plugin's macros
  expanded exactly as its backend does (`expand_macros` in grafana.py, after its pkg/macros) and the
  dashboard's variables set, on two engines:
    * ClickHouse 18.16, the stack's cluster, through the Distributed tables;
    * the current engine (chDB), the schema loaded the way test_schema_chdb.py loads it;
  both over the same data: three simulated hours (a seller's failure storm among them) sent by
  upmon-simulator through Kafka and upmon-ingest into a database of their own, with
  upmon-analyzer running meanwhile on the data's clock, writing its statistics and seller
  scores at each new minute. Each query must return rows, with a time column for a time
  series, and a non-null figure.

Panels bucket time with `$__interval_s` arithmetic, not the plugin's `$__timeInterval`: that
expands to toStartOfInterval, which 18.16 lacks (test_structure refuses it).
"""

import datetime
import json
import math
import os
import re
import subprocess
import urllib.parse
import uuid

import pytest

from conftest import http_json, poll
from grafana import (DASHBOARDS, ROOT, expand, expand_macros, load, panels, registered_metrics,
                     server_state, set_variables, targets)
from test_analyzer import build_bin
from test_schema_chdb import migrations, split, to_chdb
from test_stack import kafka_java

DATASOURCES = {"prometheus": "${datasource}", "grafana-clickhouse-datasource": "${clickhouse}"}
# The simulated run: T0 .. T0 + HOURS, a seller's failure storm in its second half.
HOURS = 3
SPEED = 900
SELLER = 100002  # the simulator's seller of rank 3
INTERVAL_S = 300  # Grafana's $__interval for the queries: a 3 h range on a wide panel


def test_macros_expand_as_the_plugin_does():
    t0 = 1767607200  # 2026-01-05T10:00:00Z
    got = expand_macros("SELECT $__timeInterval(ts) AS t FROM x WHERE $__timeFilter(ts) AND "
                        "$__dateFilter(d) AND $__dt(d, ts) AND y > $__fromTime AND "
                        "y < $__toTime GROUP BY t, $__interval_s", t0, t0 + 3600, 0.2)
    assert got == (
        "SELECT toStartOfInterval(toDateTime(ts), INTERVAL 1 second) AS t FROM x WHERE "
        "ts >= toDateTime(1767607200) AND ts <= toDateTime(1767610800) AND "
        "d >= toDate('2026-01-05') AND d <= toDate('2026-01-05') AND "
        "(d >= toDate('2026-01-05') AND d <= toDate('2026-01-05')) AND "
        "(ts >= toDateTime(1767607200) AND ts <= toDateTime(1767610800)) AND "
        "y > toDateTime(1767607200) AND y < toDateTime(1767610800) GROUP BY t, 1"), got
    with pytest.raises(ValueError):
        expand_macros("SELECT $__timeFilter(a, b)", t0, t0, 60)
    with pytest.raises(ValueError):
        expand_macros("SELECT $__unixEpochFilter(a)", t0, t0, 60)


def test_there_are_dashboards():
    names = {os.path.basename(p) for p in DASHBOARDS}
    assert {"upload-overview.json", "seller.json", "pipeline-health.json"} <= names, names


@pytest.mark.parametrize("path", DASHBOARDS, ids=os.path.basename)
def test_structure(path):
    raw = open(path).read()
    dash = json.loads(raw)
    assert "${DS_" not in raw and "__inputs" not in dash, \
        "exported with ${DS_...} inputs: the provisioning sidecar cannot fill them"
    assert dash["schemaVersion"] >= 36 and dash["uid"] and dash["title"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    ids, cells = set(), set()
    for p in panels(dash):
        assert p["id"] not in ids, "panel id %s twice" % p["id"]
        ids.add(p["id"])
        ds = p["datasource"]
        assert DATASOURCES.get(ds["type"]) == ds["uid"], \
            "%s: data source %s is not chosen by its template variable" % (p["title"], ds)
        assert ds["uid"][2:-1] in variables, "%s: no variable %s" % (p["title"], ds["uid"])
        assert p.get("targets"), "%s: no query" % p["title"]
        for t in p["targets"]:
            tds = t.get("datasource", ds)
            assert DATASOURCES.get(tds["type"]) == tds["uid"], (p["title"], t["refId"], tds)
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, "%s: wider than the grid" % p["title"]
        mine = {(g["x"] + i, g["y"] + j) for i in range(g["w"]) for j in range(g["h"])}
        assert not mine & cells, "%s overlaps another panel" % p["title"]
        cells |= mine
        assert p.get("description"), "%s: no description" % p["title"]
    # Fast at any range: the ClickHouse panels read rollups and the analyzer's tables, and
    # every one of them limits the time (or the day) it reads.
    for p in panels(dash):
        for t in p["targets"]:
            sql = t.get("rawSql")
            if not sql:
                continue
            tables = set(re.findall(r"\bFROM\s+([a-z_0-9.]+)", sql))
            assert not tables & {"events", "events_local", "events_in"}, \
                "%s reads raw events: %s" % (p["title"], sql)
            assert "$__timeInterval" not in sql, \
                "%s: $__timeInterval needs toStartOfInterval, which 18.16 lacks" % p["title"]
            if tables - {"system.parts", "system.replication_queue", "system.replicas"}:
                assert re.search(r"\$__(dt|timeFilter|dateFilter|dateTimeFilter)\(|"
                                 r"\$__(toTime|fromTime)", sql), \
                    "%s reads without a time filter: %s" % (p["title"], sql)


def test_every_metric_named_is_registered_by_a_service():
    known = registered_metrics()
    missing = []
    for where, _, t in targets("prometheus"):
        for name in re.findall(r"\b(upmon_[a-z0-9_]+)", t["expr"]):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if name not in known and base not in known:
                missing.append("%s: %s" % (where, name))
    assert not missing, "metrics no service registers:\n" + "\n".join(missing)


@pytest.mark.parametrize("where,panel,target", list(targets("prometheus")),
                         ids=lambda x: x if isinstance(x, str) else "")
def test_promql_evaluates_on_the_stack(stack, where, panel, target):
    prom = stack["env"]["UPMON_PROMETHEUS_URL"]
    url = prom + "/api/v1/query?" + urllib.parse.urlencode({"query": expand(target["expr"])})
    res = http_json(url)
    assert res["status"] == "success", (where, res)


# --------------------------------------------------------------------------
# Data: three simulated hours through the real pipeline, then the analyzer.


class Run:
    def __init__(self, stack, topology, tmp):
        self.env = stack["env"]
        self.stack = stack
        self.topology = topology
        self.tmp = tmp
        tag = uuid.uuid4().hex[:8]
        self.db = "dash_test_%s" % tag
        self.topic = "upmon.dash-test.%s" % tag
        self.ch = topology[(1, 1)]
        day = datetime.datetime.now(datetime.timezone.utc).date() - datetime.timedelta(days=1)
        self.t0 = int(datetime.datetime(day.year, day.month, day.day, 9,
                                        tzinfo=datetime.timezone.utc).timestamp())
        self.t1 = self.t0 + HOURS * 3600

    def base_env(self):
        env = dict(os.environ)
        env.update({k: v for k, v in self.env.items() if k.startswith("UPMON_CLICKHOUSE_")})
        env.update({"UPMON_CLICKHOUSE_DATABASE": self.db,
                    "UPMON_KAFKA_BROKERS": self.env["UPMON_KAFKA_BROKERS"],
                    "UPMON_KAFKA_TOPIC": self.topic, "UPMON_KAFKA_DLQ_TOPIC": self.topic + ".dlq",
                    "UPMON_HTTP_BIND": "127.0.0.1", "UPMON_HTTP_PORT": "0"})
        return env

    def run(self, argv, env, what, timeout=300):
        p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
        assert p.returncode == 0, "%s failed:\n%s%s" % (what, p.stdout[-2000:], p.stderr[-2000:])
        return p

    def fill(self):
        for t in (self.topic, self.topic + ".dlq"):
            r = kafka_java(self.stack, "org.apache.kafka.tools.TopicCommand",
                           "--bootstrap-server", self.env["UPMON_KAFKA_BROKERS"], "--create",
                           "--topic", t, "--partitions", "2", "--replication-factor", "1")
            assert r.returncode == 0, r.stdout + r.stderr
        self.run([build_bin("upmon-schema"), "apply"], self.base_env(), "upmon-schema apply")
        cfg = os.path.join(self.tmp, "sim.yaml")
        with open(cfg, "w") as f:
            f.write("simulator:\n  seed: 18\n  attempt_rate: 6\n  daily_amplitude: 0\n"
                    "  weekly_amplitude: 0\nincidents:\n"
                    "  - {name: storm, kind: seller_failures, seller: 3, magnitude: 0.9, "
                    "start: 90m, duration: 90m}\n")
        nshards = max(s for s, _ in self.topology)
        shards = ",".join("|".join(self.topology[k].url for k in sorted(self.topology)
                                   if k[0] == s) for s in range(1, nshards + 1))
        env = self.base_env()
        env.update({"UPMON_KAFKA_GROUP_ID": "upmon-dash-test-" + self.db,
                    "UPMON_INGEST_SHARDS": shards, "UPMON_INGEST_CDN_HOSTS": "cdn.upmon.example",
                    "UPMON_INGEST_BATCH_AGE": "1s"})
        procs = []

        def spawn(name, argv, env):
            log = open(os.path.join(self.tmp, name + ".log"), "wb")
            procs.append(subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT))
            return procs[-1]

        spawn("ingest", [build_bin("upmon-ingest")], env)
        # The analyzer as it runs in production (one instance, no Lease), on the data's clock:
        # a cycle per new minute of data, settle 45 simulated minutes (3 s of ingest delay at
        # this speed). Two cycles at least are needed for the beyond-3σ share, whose threshold
        # is the previous cycle's.
        aenv = self.base_env()
        aenv.update({"UPMON_ANALYZER_CLOCK": "data", "UPMON_ANALYZER_CYCLE": "500ms",
                     "UPMON_ANALYZER_SETTLE": "45m", "UPMON_ANALYZER_BASELINE_REFRESH": "60m",
                     "UPMON_ANALYZER_WRITE_RESULTS": "true"})
        analyzer = spawn("analyzer", [build_bin("upmon-analyzer"), "--leader-election=off"],
                         aenv)
        try:
            start = datetime.datetime.fromtimestamp(self.t0, datetime.timezone.utc)
            sim = self.run([build_bin("upmon-simulator"), "--config", cfg, "--start",
                            start.strftime("%Y-%m-%dT%H:%M:%SZ"), "--speed", str(SPEED),
                            "--duration", "%ds" % (HOURS * 3600 // SPEED)],
                           self.base_env(), "upmon-simulator", timeout=120)
            # Its last line: "done | generated=N delivered=N ...".
            counts = re.findall(r"\bdelivered=(\d+)", sim.stdout + sim.stderr)
            assert counts, "the simulator did not log its delivered count:\n" + sim.stderr[-1500:]
            self.produced = int(counts[-1])
            assert self.produced > 10000, "the simulator delivered %d events:\n%s" % (
                self.produced, sim.stderr[-3000:])
            poll("all %d events stored" % self.produced,
                 lambda: int(self.ch.scalar("SELECT count() FROM %s.events" % self.db))
                 >= self.produced, timeout=180, interval=1)
            # The analyzer has reached the end of the data (less its settle time).
            newest = int(self.ch.scalar("SELECT toUInt32(max(ts)) FROM %s.events_1s" % self.db))
            poll("the analyzer's last cycle at the end of the data", lambda: int(self.ch.scalar(
                "SELECT toUInt32(max(ts)) FROM %s.analyzer_stats" % self.db) or 0)
                >= (newest - 45 * 60) // 60 * 60 - 60, timeout=120, interval=1)
            assert analyzer.poll() is None, "upmon-analyzer exited (see its log in %s)" % self.tmp
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(timeout=30)
        cycles = int(self.ch.scalar("SELECT uniqExact(ts) FROM %s.analyzer_stats" % self.db))
        assert cycles >= 10, "the analyzer wrote %d cycles" % cycles
        n = int(self.ch.scalar("SELECT count() FROM %s.seller_scores" % self.db))
        assert n > 0, "the analyzer scored no seller"

    def drop(self):
        for ch in self.topology.values():
            try:
                ch.query("DROP DATABASE IF EXISTS %s" % self.db, timeout=120)
            except Exception:  # noqa: BLE001 — best effort; the stack is wiped at the end
                pass


@pytest.fixture(scope="module")
def data(stack, topology, tmp_path_factory):
    r = Run(stack, topology, str(tmp_path_factory.mktemp("dashboards")))
    try:
        r.fill()
        yield r
    finally:
        r.drop()


@pytest.fixture(scope="module")
def chdb_copy(data, tmp_path_factory):
    """The same rows in chDB: the schema as test_schema_chdb.py loads it, the raw events and
    the analyzer's tables copied from the 18.16 run."""
    try:
        from chdb import session
    except ImportError:
        pytest.fail("the chdb package is missing: run ci/deps", pytrace=False)
    s = session.Session(str(tmp_path_factory.mktemp("chdb-dash")))
    db = "upmon_chdb"
    s.query("CREATE DATABASE IF NOT EXISTS %s" % db)
    for _, text in migrations():
        for stmt in split(text):
            s.query(to_chdb(stmt))
    for table in ("events", "analyzer_stats", "seller_scores"):
        path = os.path.join(str(tmp_path_factory.mktemp("tsv")), table + ".tsv")
        with open(path, "wb") as f:
            f.write(data.ch.query("SELECT * FROM %s.%s FORMAT TabSeparated" % (data.db, table),
                                  timeout=300).encode())
        # Raw events enter where ingest sends them (events_in): its views fill events_local
        # and every rollup, as on a server.
        into = "events_in" if table == "events" else table + "_local"
        s.query("INSERT INTO %s.%s SELECT * FROM file('%s', 'TabSeparated')" % (db, into, path))
        got = int(str(s.query("SELECT count() FROM %s.%s" % (db, table), "TabSeparated")))
        want = int(data.ch.scalar("SELECT count() FROM %s.%s" % (data.db, table)))
        assert got == want, (table, got, want)
    yield s, db
    s.close()


def sql_for(data, target):
    values = {"window": "5m", "dimension": "all", "segment": "all", "company_id": SELLER}
    return set_variables(expand_macros(target["rawSql"], data.t0, data.t1, INTERVAL_S), values)


def check_result(where, panel, meta, rows):
    """Rows, a time column where the panel is a time series, a non-null figure."""
    cols = [c["name"] for c in meta]
    assert cols, where
    assert rows, "%s returned no rows" % where
    if panel["type"] in ("timeseries", "state-timeline"):
        assert cols[0] == "time" and "DateTime" in meta[0]["type"], (where, meta)
    numeric = [i for i, c in enumerate(meta) if re.search(r"Int|Float|Decimal", c["type"])]
    assert numeric or panel["type"] == "variable", (where, meta)

    def real(v):
        if v is None or isinstance(v, str) and v.lower() in ("nan", "inf", "-inf"):
            return False
        return not (isinstance(v, float) and (math.isnan(v) or math.isinf(v)))
    assert any(real(r[i]) for r in rows for i in numeric) or panel["type"] == "variable", \
        "%s: every figure is null or NaN: %s" % (where, rows[:3])


CH_TARGETS = list(targets("grafana-clickhouse-datasource"))
DATA_TARGETS = [x for x in CH_TARGETS if not server_state(x[2])]


@pytest.mark.parametrize("where,panel,target", CH_TARGETS,
                         ids=lambda x: x if isinstance(x, str) else "")
def test_sql_on_clickhouse_18_16(data, where, panel, target):
    out = data.ch.query(sql_for(data, target) + " FORMAT JSONCompact", database=data.db,
                        timeout=60)
    res = json.loads(out)
    if server_state(target):
        assert res["meta"], where
        return
    check_result(where, panel, res["meta"], res["data"])


@pytest.mark.parametrize("where,panel,target", DATA_TARGETS,
                         ids=lambda x: x if isinstance(x, str) else "")
def test_sql_on_the_current_engine(chdb_copy, data, where, panel, target):
    s, db = chdb_copy
    s.query("USE %s" % db)
    res = json.loads(str(s.query(sql_for(data, target), "JSONCompact")))
    check_result(where, panel, res["meta"], res["data"])


def test_the_seller_storm_shows(data):
    """The data behind the panels means something: the seller whose failures the simulator
    raised is the top anomaly, and in the storm's last hour its failure rate stands far above
    its peers' in every interval (the simulator's own failure rate is high: about 0.66)."""
    dash = load(os.path.join(ROOT, "dashboards", "upload-overview.json"))
    t = [t for p in panels(dash) if p["title"].startswith("Seller anomalies")
         for t in p["targets"]][0]
    rows = json.loads(data.ch.query(sql_for(data, t) + " FORMAT JSONCompact",
                                    database=data.db))["data"]
    assert rows and int(rows[0][1]) == SELLER, rows[:3]
    seller = load(os.path.join(ROOT, "dashboards", "seller.json"))
    t = [t for p in panels(seller) if p["title"].startswith("Failure rate: seller")
         for t in p["targets"]][0]
    rows = json.loads(data.ch.query(sql_for(data, t) + " FORMAT JSONCompact",
                                    database=data.db))["data"]
    late = [r for r in rows if r[1] is not None and r[3] is not None and
            r[0] >= datetime.datetime.fromtimestamp(data.t1 - 3600, datetime.timezone.utc)
            .strftime("%Y-%m-%d %H:%M:%S")]
    assert late and all(float(r[1]) > float(r[3]) + 0.2 for r in late), rows[-5:]
