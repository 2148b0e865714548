"""upmon-analyzer on the real stack (issue 6).

One scenario, run once per module, feeds every test:

  simulator (speed S, seeded, flat seasonality)  ->  Kafka  ->  upmon-ingest  ->  ClickHouse
  two upmon-analyzer replicas (Lease election on the real kube-apiserver, data clock)
  the stack's Prometheus scrapes them and evaluates alerts/*.rules.yml
  its Alertmanager sends to a webhook receiver this module runs

Simulated timeline (T0 = 14:00 UTC two days ago, so the incidents start after
midnight and every seller has a previous day as its own baseline):
  [0, CALM_H)                      calm: no alert may fire
  [CALM_H, CALM_H + INC_H)         four incidents at once, each in its own segment:
                                     failure spike in KZ, latency x6 on upload/api,
                                     throughput drop of 90 % in BY, failure storm of
                                     the seller of rank 3 (company 100002)
  [CALM_H + INC_H, END_H)          recovery: every alert resolves
During the recovery the leading analyzer is SIGKILLed; the standby takes over.

`for:` clauses count wall time, so the incidents last INC_H simulated hours =
INC_H * 3600 / S wall seconds (4 minutes at the defaults), which is longer than
`for:` plus detection plus Alertmanager's group_wait.

Why flat seasonality: with less than two weeks of history the charts' baseline
is the trailing day (design.md section 4), which cannot model a daily cycle;
the limits then span the whole cycle and a 90 % drop in one country would
stay inside them. The weekly baseline is what handles seasonality.

Knobs (env): UPMON_TEST_ANALYZER_SPEED (120), UPMON_TEST_ANALYZER_CALM_HOURS (12).
"""
import datetime
import http.server
import json
import math
import os
import re
import signal
import socketserver
import subprocess
import threading
import time
import urllib.request
import uuid

import pytest

from conftest import ROOT, poll, run_stack
from test_lease import write_kubeconfig
from test_stack import kafka_java

SPEED = float(os.environ.get("UPMON_TEST_ANALYZER_SPEED", "120"))
CALM_H = float(os.environ.get("UPMON_TEST_ANALYZER_CALM_HOURS", "12"))
INC_H = 8.0
REC_H = 3.0
END_H = CALM_H + INC_H + REC_H
ATTEMPT_RATE = 20  # attempts per simulated second (~50 events/s)

# The stack's Prometheus scrapes these fixed ports (ci/stack SERVICE_TARGETS).
LEASE_S, RENEW_S, RETRY_S = 6, 4, 1
CYCLE = "2s"

STAT_ALERTS = {"UpmonFailureRateAboveUCL", "UpmonLatencyAboveUCL", "UpmonThroughputBelowLCL",
               "UpmonSellerAnomaly", "UpmonControlChartRun", "UpmonAnalyzerStalled",
               "UpmonAnalyzerCyclesFailing", "UpmonNoLeader"}
INCIDENTS = [
    # (name, yaml, expected alert, label, value)
    ("kz-failures", "kind: failure_spike, country: KZ, magnitude: 0.6",
     "UpmonFailureRateAboveUCL", "segment", "KZ"),
    ("api-slow", "kind: latency, origin: upload/api, magnitude: 6",
     "UpmonLatencyAboveUCL", "segment", "upload/api"),
    ("by-drop", "kind: throughput_drop, country: BY, magnitude: 0.9",
     "UpmonThroughputBelowLCL", "segment", "BY"),
    ("seller-storm", "kind: seller_failures, seller: 3, magnitude: 0.9",
     "UpmonSellerAnomaly", "company_id", "100002"),
]


def build_bin(name):
    build = os.path.abspath(os.environ.get("UPMON_BUILD_DIR") or os.path.join(ROOT, "build"))
    path = os.path.join(build, "bin", name)
    if not os.access(path, os.X_OK):
        pytest.fail("%s missing: build it first" % path, pytrace=False)
    return path


class Webhook:
    """Alertmanager's webhook receiver: keeps (wall time, alert) for every alert sent."""

    def __init__(self):
        self.received = []
        self.lock = threading.Lock()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                now = time.time()
                try:
                    payload = json.loads(body)
                except ValueError:
                    payload = {"alerts": []}
                with outer.lock:
                    for a in payload.get("alerts", []):
                        outer.received.append((now, a))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d/alerts" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alerts(self, since=0):
        """(received, alert) for alerts that started at or after `since` (epoch s): an
        Alertmanager that outlived an earlier run may still resolve that run's alerts."""
        with self.lock:
            return [(t, a) for t, a in self.received if started(a) >= since]

    def close(self):
        self.server.shutdown()


def started(alert):
    """An Alertmanager alert's startsAt in epoch seconds."""
    ts = alert.get("startsAt", "")
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z$", ts)
    if not m:
        return 0
    t = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(
        tzinfo=datetime.timezone.utc).timestamp()
    return t + float(m.group(2) or 0)


def metrics(port, timeout=2):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=timeout) as r:
        return r.read().decode()


def gauge(text, name, **labels):
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        m = re.match(r"^(\w+)(\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            return float(m.group(4))
    return None


class Scenario:
    def __init__(self, stack, topology, kube, tmp):
        self.stack, self.topology, self.kube, self.tmp = stack, topology, kube, tmp
        self.env = stack["env"]
        # The ports the stack's Prometheus scrapes (they follow its port offset, so a
        # developer's demo on the default ports is not read by mistake).
        self.port_sim = int(self.env["UPMON_STACK_PORT_SIMULATOR"])
        self.port_ingest = int(self.env["UPMON_STACK_PORT_INGEST"])
        self.port_an = (int(self.env["UPMON_STACK_PORT_ANALYZER"]),
                        int(self.env["UPMON_STACK_PORT_ANALYZER_2"]))
        tag = uuid.uuid4().hex[:8]
        self.topic = "upmon.analyzer-test.%s" % tag
        self.dlq = self.topic + ".dlq"
        self.group = "upmon-analyzer-test-%s" % tag
        self.db = "analyzer_test_%s" % tag
        self.ch = topology[(1, 1)]
        self.procs = {}
        self.samples = []  # (wall, sim_s, {port: leader}, firing alert list)
        self.failover = None
        day = datetime.datetime.now(datetime.timezone.utc).date() - datetime.timedelta(days=2)
        self.t0 = int(datetime.datetime(day.year, day.month, day.day, 14,
                                        tzinfo=datetime.timezone.utc).timestamp())

    # -- setup -------------------------------------------------------------
    def base_env(self):
        env = dict(os.environ)
        env.update({k: v for k, v in self.env.items() if k.startswith("UPMON_CLICKHOUSE_")})
        env.update({"UPMON_CLICKHOUSE_DATABASE": self.db, "UPMON_KAFKA_BROKERS":
                    self.env["UPMON_KAFKA_BROKERS"], "UPMON_KAFKA_TOPIC": self.topic,
                    "UPMON_KAFKA_DLQ_TOPIC": self.dlq, "UPMON_HTTP_BIND": "127.0.0.1"})
        return env

    def setup(self):
        # Two partitions: at 120x a wall second of ingest delay is two simulated
        # minutes, and fewer, larger blocks keep ingest's delay short.
        for t, parts in ((self.topic, 2), (self.dlq, 1)):
            r = kafka_java(self.stack, "org.apache.kafka.tools.TopicCommand", "--bootstrap-server",
                           self.env["UPMON_KAFKA_BROKERS"], "--create", "--topic", t,
                           "--partitions", str(parts), "--replication-factor", "1")
            assert r.returncode == 0, r.stdout + r.stderr
        r = subprocess.run([build_bin("upmon-schema"), "apply"], env=self.base_env(),
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        self.hook = Webhook()
        r = run_stack("up", "--alert-webhook", self.hook.url, state=self.stack["state"],
                      timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        self.ns = self.kube.namespace("upmon-analyzer")
        self.kubeconfig = write_kubeconfig(self.tmp, self.kube)

    def spawn(self, name, argv, env):
        log = open(os.path.join(self.tmp, name + ".log"), "wb")
        self.procs[name] = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        return self.procs[name]

    def start_ingest(self):
        nshards = max(s for s, _ in self.topology)
        shards = ",".join("|".join(self.topology[k].url for k in sorted(self.topology)
                                   if k[0] == s) for s in range(1, nshards + 1))
        env = self.base_env()
        env.update({"UPMON_KAFKA_GROUP_ID": self.group, "UPMON_INGEST_SHARDS": shards,
                    "UPMON_INGEST_CDN_HOSTS": "cdn.upmon.example",
                    "UPMON_INGEST_BATCH_AGE": "1s",
                    "UPMON_HTTP_PORT": str(self.port_ingest)})
        self.spawn("ingest", [build_bin("upmon-ingest")], env)

    def start_analyzer(self, i):
        env = self.base_env()
        env.update({
            "UPMON_HTTP_PORT": str(self.port_an[i]), "UPMON_K8S_KUBECONFIG": self.kubeconfig,
            "UPMON_K8S_TIMEOUT": "2s", "UPMON_LEASE_NAMESPACE": self.ns,
            "UPMON_LEASE_NAME": "analyzer", "UPMON_LEASE_IDENTITY": "analyzer-%d" % i,
            "UPMON_LEASE_LEASE_DURATION": "%ds" % LEASE_S,
            "UPMON_LEASE_RENEW_DEADLINE": "%ds" % RENEW_S,
            "UPMON_LEASE_RETRY_PERIOD": "%ds" % RETRY_S,
            "UPMON_ANALYZER_CYCLE": CYCLE, "UPMON_ANALYZER_CLOCK": "data",
            # At speed S a wall second of ingest delay is S seconds of data
            # time: analyse 30 simulated minutes (15 s) behind the newest row.
            "UPMON_ANALYZER_SETTLE": "30m",
            # Thresholds and new sellers once per simulated hour (30 s wall).
            "UPMON_ANALYZER_BASELINE_REFRESH": "60m",
        })
        self.spawn("analyzer-%d" % i, [build_bin("upmon-analyzer")], env)

    def start_simulator(self):
        cfg = os.path.join(self.tmp, "sim.yaml")
        start = datetime.datetime.fromtimestamp(self.t0, datetime.timezone.utc)
        with open(cfg, "w") as f:
            f.write("simulator:\n  seed: 20261122\n  attempt_rate: %d\n"
                    "  daily_amplitude: 0\n  weekly_amplitude: 0\nincidents:\n" % ATTEMPT_RATE)
            for name, spec, *_ in INCIDENTS:
                f.write("  - {name: %s, %s, start: %dm, duration: %dm}\n"
                        % (name, spec, int(CALM_H * 60), int(INC_H * 60)))
        env = self.base_env()
        env["UPMON_HTTP_PORT"] = str(self.port_sim)
        self.sim_wall0 = time.time()
        self.wall0 = self.sim_wall0
        self.spawn("simulator", [build_bin("upmon-simulator"), "--config", cfg, "--start",
                                 start.strftime("%Y-%m-%dT%H:%M:%SZ"), "--speed", str(SPEED),
                                 "--duration", "%ds" % int(END_H * 3600 / SPEED)], env)

    # -- observation -------------------------------------------------------
    def sim_time(self):
        """Simulated seconds since T0 (from the simulator's own clock)."""
        try:
            v = gauge(metrics(self.port_sim), "upmon_simulator_simulated_time_seconds")
            if v:
                return v - self.t0
        except OSError:
            pass
        return (time.time() - self.sim_wall0) * SPEED

    def firing(self):
        try:
            data = json.loads(urllib.request.urlopen(
                self.env["UPMON_PROMETHEUS_URL"] + "/api/v1/alerts", timeout=5).read())
        except OSError:
            return None
        return [a for a in data["data"]["alerts"] if a["state"] == "firing"]

    def leaders(self):
        out = {}
        for i, port in enumerate(self.port_an):
            if self.procs["analyzer-%d" % i].poll() is not None:
                continue
            try:
                text = metrics(port)
            except OSError:
                continue
            out[i] = (gauge(text, "upmon_leader"),
                      gauge(text, "upmon_failure_rate", window="5m", dimension="all",
                            segment="all"))
        return out

    def observe(self):
        self.samples.append((time.time(), self.sim_time(), self.leaders(), self.firing()))

    def kill_leader(self):
        """SIGKILL the leader; measure the gap in the failure-rate gauge."""
        lead = [i for i, (l, _) in self.leaders().items() if l == 1]
        assert len(lead) == 1, self.leaders()
        old = lead[0]
        standby = 1 - old
        text = metrics(self.port_an[standby])
        assert gauge(text, "upmon_leader") == 0
        # A standby exports no statistics, never stale zeros.
        assert "upmon_failure_rate{" not in text and "upmon_throughput{" not in text
        last_seen = time.time()
        assert self.leaders()[old][1] is not None
        self.procs["analyzer-%d" % old].send_signal(signal.SIGKILL)
        self.procs["analyzer-%d" % old].wait()
        t_kill = time.time()
        first = None
        deadline = t_kill + 60
        while time.time() < deadline:
            state = self.leaders().get(standby)
            if state and state[0] == 1 and state[1] is not None:
                first = time.time()
                break
            time.sleep(0.2)
        cycle = None
        if first:
            text = metrics(self.port_an[standby])
            n = gauge(text, "upmon_analyzer_cycle_seconds_count")
            total = gauge(text, "upmon_analyzer_cycle_seconds_sum")
            cycle = total / n if n else None
        self.failover = {"old": old, "new": standby, "gap": (first or deadline) - last_seen,
                         "took_over": first is not None, "first_cycle": cycle}

    def run(self):
        self.setup()
        self.start_ingest()
        for i in range(2):
            self.start_analyzer(i)
        self.start_simulator()
        inc_end = (CALM_H + INC_H) * 3600
        killed = False
        while self.procs["simulator"].poll() is None:
            self.observe()
            if not killed and self.sim_time() > inc_end + 1800:
                self.kill_leader()
                killed = True
            time.sleep(2)
        assert self.procs["simulator"].returncode == 0
        # Let the last data be analysed and every alert resolve: Alertmanager
        # sends a resolution at its next group_interval (1 m).
        deadline = time.time() + 240
        while time.time() < deadline:
            self.observe()
            got = self.hook.alerts(self.wall0)
            pending = [n for n, *_, alert, lab, val in INCIDENTS
                       if not any(a["labels"].get("alertname") == alert and
                                  a["labels"].get(lab) == val and a["status"] == "resolved"
                                  for _, a in got)]
            if not pending:
                break
            time.sleep(3)
        self.end_wall = time.time()

    def teardown(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        steps = [
            lambda: run_stack("up", "--alert-webhook", "", state=self.stack["state"],
                              timeout=300),
            lambda: self.hook.close() if hasattr(self, "hook") else None,
        ] + [lambda ch=ch: ch.query("DROP DATABASE IF EXISTS %s" % self.db, timeout=300)
             for ch in self.topology.values()] + [
            lambda t=t: kafka_java(self.stack, "org.apache.kafka.tools.TopicCommand",
                                   "--bootstrap-server", self.env["UPMON_KAFKA_BROKERS"],
                                   "--delete", "--topic", t) for t in (self.topic, self.dlq)]
        errors = []
        for step in steps:  # every step runs; the first failure is reported
            try:
                step()
            except Exception as e:  # noqa: BLE001 - cleanup goes on
                errors.append(e)
        if errors:
            raise errors[0]

    # -- helpers for the tests ---------------------------------------------
    def wall_at(self, sim_s):
        """Wall time at which the simulation reached sim_s (from the samples)."""
        for wall, s, *_ in self.samples:
            if s >= sim_s:
                return wall
        return None


@pytest.fixture(scope="module")
def scenario(stack, topology, kube, tmp_path_factory):
    s = Scenario(stack, topology, kube, str(tmp_path_factory.mktemp("analyzer")))
    try:
        s.run()
        yield s
    finally:
        s.teardown()


def test_calm_run_raises_no_alert(scenario):
    calm_end = CALM_H * 3600
    fired = set()
    for wall, sim_s, _, firing in scenario.samples:
        if sim_s >= calm_end or firing is None:
            continue
        for a in firing:
            if a["labels"]["alertname"] in STAT_ALERTS:
                fired.add((round(sim_s / 3600, 2), a["labels"]["alertname"],
                           tuple(sorted(a["labels"].items()))))
    inc_start_wall = scenario.wall_at(calm_end)
    hooked = [a for t, a in scenario.hook.alerts(scenario.wall0)
              if a["labels"].get("alertname") in STAT_ALERTS and inc_start_wall and
              t < inc_start_wall]
    assert not fired, "alerts fired during %.0f calm simulated hours: %s" % (CALM_H, sorted(fired))
    assert not hooked, hooked


@pytest.mark.parametrize("name,alert,label,value",
                         [(n, a, l, v) for n, _, a, l, v in INCIDENTS])
def test_incident_fires_through_alertmanager_and_resolves(scenario, name, alert, label, value):
    start_wall = scenario.wall_at(CALM_H * 3600)
    end_wall = scenario.wall_at((CALM_H + INC_H) * 3600)
    assert start_wall and end_wall, "the simulation did not reach the incident"
    got = [(t, a) for t, a in scenario.hook.alerts(scenario.wall0)
           if a["labels"].get("alertname") == alert and a["labels"].get(label) == value]
    firing = [t for t, a in got if a["status"] == "firing"]
    assert firing, "%s never reached the webhook for %s=%s; received: %s" % (
        alert, label, value, sorted({(a["labels"].get("alertname"), a["labels"].get(label),
                                      a["status"]) for _, a in scenario.hook.alerts(scenario.wall0)}))
    # Bound: the for: (2 m) + detection (settle 30 simulated minutes, the
    # seller's hour filling about 50) + cycle, scrape and evaluation (10 s) +
    # group_wait (10 s) + margin for a loaded machine (60 s).
    bound = 120 + 80 * 60 / SPEED + 20 + 60
    assert firing[0] - start_wall <= bound, (firing[0] - start_wall, bound)
    assert firing[0] < end_wall + 30, "fired only after the incident ended"
    resolved = [t for t, a in got if a["status"] == "resolved" and t > firing[0]]
    assert resolved, "%s for %s=%s never resolved" % (alert, label, value)
    assert resolved[0] > end_wall
    ann = [a for _, a in got if a["status"] == "firing"][0]["annotations"]
    assert value in ann["summary"] or value in ann["description"], ann


def test_leader_failover_keeps_the_gauges(scenario):
    f = scenario.failover
    assert f, "the leader was never killed (the run ended early)"
    assert f["took_over"], "the standby did not take over within 60 s"
    # The failover time: lease expiry (6 s after the standby last saw a
    # renewal, which is up to one retry period old) + one retry period + the new
    # leader's first cycle (a warm standby has only the windows to read),
    # plus our 0.2 s polling and the metrics read.
    cycle = f["first_cycle"] or 0
    bound = LEASE_S + 2 * RETRY_S + cycle + 1.5
    assert f["gap"] <= bound, "failure-rate gauge missing for %.1f s (> %.1f s: first cycle " \
        "%.1f s)" % (f["gap"], bound, cycle)
    assert cycle < 10, "the new leader's first cycle took %.1f s" % cycle
    # Exactly one leader in every sample.
    for wall, _, leaders, _ in scenario.samples:
        n = sum(1 for l, _ in leaders.values() if l == 1)
        assert n <= 1, leaders


def raw_window(s, ts, seconds, where=""):
    sql = ("SELECT ts_ns, event, is_created, up_ts, country, origin, attempt_id FROM %s.events "
           "WHERE ts_ns >= %d AND ts_ns < %d %s FORMAT TabSeparated"
           % (s.db, (ts - seconds) * 10**9, ts * 10**9, where))
    rows = []
    for line in s.ch.query(sql).splitlines():
        f = line.split("\t")
        rows.append((int(f[0]), f[1], int(f[2]), int(f[3]), f[4], f[5], f[6]))
    return rows


def analyzer_once(s, now_s):
    """One cycle of a fresh upmon-analyzer over the finished run, analysing as of now_s
    (data clock; settle = newest second - now_s). Its /metrics as {(name, labels): value}."""
    newest = int(s.ch.scalar("SELECT toUInt32(max(ts)) FROM %s.events_1s" % s.db))
    env = s.base_env()
    env.update({"UPMON_ANALYZER_CLOCK": "data", "UPMON_ANALYZER_SETTLE": "%ds" % (newest - now_s),
                "UPMON_ANALYZER_WRITE_RESULTS": "false", "UPMON_HTTP_PORT": "0"})
    p = subprocess.run([build_bin("upmon-analyzer"), "--once", "--print-metrics"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    out = {}
    for line in p.stdout.splitlines():
        m = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if m:
            labels = tuple(sorted(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or "")))
            out[(m.group(1), labels)] = float(m.group(3))
    return out


def stat(metrics, name, **labels):
    return metrics.get((name, tuple(sorted(labels.items()))))


def test_results_written_to_clickhouse(scenario):
    s = scenario
    n = int(s.ch.scalar("SELECT uniqExact(ts) FROM %s.analyzer_stats WHERE metric = "
                        "'failure_rate' AND window = '5m'" % s.db))
    # One per cycle that moved the data clock: at 2 s cycles over the run.
    assert n >= 50, "only %d distinct analysis times stored" % n
    top = s.ch.scalar("SELECT count() FROM %s.seller_scores WHERE company_id = 100002 AND "
                      "score >= 8" % s.db)
    assert int(top) > 0, "the storm seller never scored >= 8 in seller_scores"


def test_statistics_match_the_raw_events(scenario):
    """A cycle as of half way through the calm phase, against the raw events.

    Run after the scenario on the complete data (so ingest's lag during the run cannot
    make the comparison flaky): counts are exact, t-digest quantiles within 3 %."""
    s = scenario
    ts = (s.t0 + int(CALM_H * 3600 / 2)) // 60 * 60
    got = analyzer_once(s, ts)
    assert stat(got, "upmon_analyzer_data_time_seconds") == ts
    rows = raw_window(s, ts, 300)
    checked = 0
    names = {"failure_rate": "upmon_failure_rate", "throughput": "upmon_throughput",
             "created": "upmon_items_created_per_minute", "latency": "upmon_latency_seconds",
             "ft_mean": "upmon_full_time_mean_seconds"}
    for dim, seg in (("all", "all"), ("country", "RU"), ("origin", "upload/ui")):
        sel = [r for r in rows if dim == "all" or (dim == "country" and r[4] == seg) or
               (dim == "origin" and r[5] == seg)]
        saves = sum(1 for r in sel if r[1] == "SAVE")
        errors = sum(1 for r in sel if r[1] == "ERROR")
        created = sum(r[2] for r in sel)
        ft = [(r[3] - r[0]) / 1e9 for r in sel if r[2] == 1 and r[3] >= r[0]]
        expect = {"failure_rate": errors / (saves + errors), "throughput": len(sel) / 300.0,
                  "created": created / 5.0, "latency": sum(ft) / len(ft),
                  "ft_mean": sum(ft) / len(ft)}
        lab = {"window": "5m", "dimension": dim, "segment": seg}
        # Counts are exact: the rollups hold the same rows (tolerance for float
        # summation order only).
        for m, want in expect.items():
            v = stat(got, names[m], **lab)
            assert v is not None and math.isclose(v, want, rel_tol=1e-9), (dim, seg, m, v, want)
            checked += 1
        for ev in ("SAVE", "UPDATE", "ERROR"):
            v = stat(got, "upmon_events_per_second", event=ev, **lab)
            want = sum(1 for r in sel if r[1] == ev) / 300.0
            assert v is not None and math.isclose(v, want, rel_tol=1e-9), (dim, seg, ev, v, want)
            checked += 1
        # Quantiles come from t-digest states: within 3 % of the exact value.
        ft.sort()
        p95 = ft[min(len(ft) - 1, int(math.ceil(0.95 * len(ft))) - 1)]
        v = stat(got, "upmon_full_time_seconds", quantile="0.95", **lab)
        assert v is not None and abs(v - p95) <= 0.03 * p95, (dim, seg, v, p95)
        checked += 1
    # Attempt-level figures: attempts whose successful event is in the window,
    # with all their events (any time) from the raw table.
    succ = {r[6] for r in rows if r[2] == 1}
    ids = ",".join("'%s'" % a for a in succ)
    att = {}
    for line in s.ch.query("SELECT attempt_id, min(ts_ns), max(up_ts), countIf(event = 'ERROR') "
                           "FROM %s.events WHERE attempt_id IN (%s) GROUP BY attempt_id "
                           "FORMAT TabSeparated" % (s.db, ids)).splitlines():
        a, first, up, errs = line.split("\t")
        att[a] = ((int(up) - int(first)) / 1e9, int(errs) + 1)
    times = [t for t, _ in att.values()]
    tries = [n for _, n in att.values()]
    lab = {"window": "5m", "dimension": "all", "segment": "all"}
    for m, want in (("upmon_attempt_time_mean_seconds", sum(times) / len(times)),
                    ("upmon_attempts_to_success", sum(tries) / len(tries)),
                    ("upmon_first_try_share", sum(1 for n in tries if n == 1) / len(tries))):
        v = stat(got, m, **lab)
        assert v is not None and math.isclose(v, want, rel_tol=1e-6), (m, v, want)
        checked += 1
    # Attempt-time quantiles come from 4 % log buckets (services/analyzer/attempts.h): the
    # mean of the bucket that holds the nearest-rank element, so within 4 % of it.
    times.sort()
    for q in (0.5, 0.95, 0.99):
        want = times[min(len(times) - 1, int(math.ceil(q * len(times))) - 1)]
        v = stat(got, "upmon_attempt_time_seconds", quantile=str(q), **lab)
        assert v is not None and abs(v - want) <= 0.04 * want, (q, v, want)
        checked += 1
    assert checked == 33
