"""The whole system with one `helm install` on the real node (issue 14).

`k8s/up --local` (the script users run) installs charts/upmon with the small profile on this
machine's node: upmon-ingest, upmon-analyzer (2, Lease), a simulator Job producing a known
number of events, the ClickHouse cluster (operator, ZooKeeper, 2 shards), Kafka (KRaft, topics
by a Job) and the monitoring chart (the Prometheus Operator with a Prometheus and an Alertmanager
it manages). Then, in order, on that one installation:

- every pod Ready within a bound (printed);
- a scripted incident: Kafka is stopped under the simulator, whose back-pressure alert fires in
  the operator-managed Prometheus and reaches a webhook on this machine through the
  operator-managed Alertmanager, and resolves once Kafka is back;
- stored = produced exactly (through the Distributed table and per shard), the DLQ empty;
- the analyzer's gauges are in that Prometheus, scraped through the ServiceMonitor;
- `helm upgrade` with a changed value rolls the ingest pods while a second run flows, and the
  counts stay exact;
- `helm uninstall` then `helm install` finds the data again (PVCs kept, the Kafka cluster id
  and the ClickHouse password kept).
"""

import base64
import http.server
import json
import os
import subprocess
import threading
import time
import urllib.parse
import urllib.request

import pytest

from kubeplane import start_node, stop_node, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHART = os.path.join(ROOT, "charts", "upmon")
UP = os.path.join(ROOT, "k8s", "up")
CACHE = os.environ.get("UPMON_CACHE") or os.path.expanduser("~/.cache/upmon")
HELM = os.path.join(CACHE, "helm")
NS = "upmon"
RELEASE = "upmon"
CHC = "upmon-clickhouse"
NODE_IP = "10.245.0.1"       # the node's address on this machine; pods reach it
N1, N2 = 60000, 9000         # the two simulator runs
RATE = 250                   # events/s: the first run lasts 4 minutes, the Kafka outage inside
READY_BOUND = 900            # seconds from `helm install` to every pod Ready
IMAGES = ["base", "upmon-ingest", "upmon-analyzer", "upmon-simulator", "upmon-operator",
          "clickhouse", "zookeeper", "kafka", "prometheus", "alertmanager",
          "prometheus-operator", "prometheus-config-reloader"]


class Webhook:
    """Alertmanager's webhook receiver, on the node address (reachable from the pods)."""

    def __init__(self):
        self.posts = []
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hook.posts.append(json.loads(body or b"{}"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer((NODE_IP, 0), Handler)
        self.url = "http://%s:%d/alerts" % (NODE_IP, self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def seen(self, alertname, status):
        return [a for p in self.posts for a in p.get("alerts", [])
                if a["labels"].get("alertname") == alertname and a["status"] == status]

    def close(self):
        self.server.shutdown()


def helm(node, *args, check=True, timeout=900):
    env = dict(os.environ, KUBECONFIG=node.kubeconfig)
    res = subprocess.run([HELM] + list(args), capture_output=True, text=True, timeout=timeout,
                         env=env)
    if check and res.returncode != 0:
        raise AssertionError("helm %s -> %d:\n%s%s" % (" ".join(args[:3]), res.returncode,
                                                       res.stdout[-3000:], res.stderr[-3000:]))
    return res


def values_args(webhook_url, count, seed):
    # A small producer queue: with Kafka gone the simulator is back-pressured within seconds
    # (the default queue holds 50,000 events, minutes at this rate).
    return ["--set", "simulator.enabled=true", "--set", "simulator.count=%d" % count,
            "--set", "simulator.config.kafka.properties[0]=queue.buffering.max.messages=1000",
            "--set", "simulator.rate=%d" % RATE, "--set", "simulator.seed=%d" % seed,
            "--set", "monitoring.alertmanager.webhookUrl=" + webhook_url]


@pytest.fixture(scope="module")
def node():
    if not os.access(HELM, os.X_OK):
        pytest.fail("helm is missing from the cache (run ci/deps)", pytrace=False)
    plane = start_node(IMAGES, lambda msg: pytest.fail(msg, pytrace=False))
    yield plane
    if not os.environ.get("UPMON_TEST_KEEP"):
        helm(plane, "uninstall", RELEASE, "-n", NS, "--wait", check=False)
        plane.kubectl("delete", "namespace", NS, "--wait=false", check=False)
        stop_node(plane)


@pytest.fixture(scope="module")
def webhook():
    w = Webhook()
    yield w
    w.close()


def kubectl_json(node, *args):
    return json.loads(node.kubectl(*(list(args) + ["-o", "json"])).stdout)


def pod_ip(node, name):
    return kubectl_json(node, "get", "pod", name, "-n", NS)["status"]["podIP"]


def pods(node, selector):
    items = kubectl_json(node, "get", "pods", "-n", NS, "-l", selector)["items"]
    return [p for p in items if p["status"].get("phase") == "Running"]


def secret(node, name, key):
    data = kubectl_json(node, "get", "secret", name, "-n", NS)["data"]
    return base64.b64decode(data[key]).decode()


class ClickHouse:
    """One ClickHouse pod over HTTP from the host, as the upmon user."""

    def __init__(self, node, pod):
        self.ip = pod_ip(node, pod)
        self.password = secret(node, "%s-users" % CHC, "upmon-password")

    def scalar(self, sql):
        req = urllib.request.Request("http://%s:8123/" % self.ip, data=sql.encode(),
                                     method="POST")
        req.add_header("X-ClickHouse-User", "upmon")
        req.add_header("X-ClickHouse-Key", self.password)
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.read().decode().strip()


def shard_pod(node, shard):
    return "%s-s%d-0" % (CHC, shard)


def prometheus(node, query):
    """An instant query against the operator-managed Prometheus (its pod, from the host)."""
    pod = [p for p in pods(node, "app.kubernetes.io/name=prometheus")
           if p["metadata"]["name"].startswith("prometheus-")]
    assert pod, "no Prometheus pod"
    url = "http://%s:9090/api/v1/query?%s" % (pod[0]["status"]["podIP"],
                                               urllib.parse.urlencode({"query": query}))
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())["data"]["result"]


def stored(node, unique=True):
    """(total through the Distributed table, [per shard]); with `unique`, asserts that no
    (partition, offset) is stored twice."""
    ch = ClickHouse(node, shard_pod(node, 1))
    total = int(ch.scalar("SELECT count() FROM upmon.events"))
    per = [int(ClickHouse(node, shard_pod(node, s)).scalar(
        "SELECT count() FROM upmon.events_local")) for s in (1, 2)]
    if unique:
        distinct = int(ch.scalar("SELECT uniqExact(kafka_partition, kafka_offset) "
                                 "FROM upmon.events"))
        assert distinct == total, "duplicates: %d rows, %d distinct" % (total, distinct)
    return total, per


def wait_job(node, prefix, timeout):
    def done():
        jobs = [j for j in kubectl_json(node, "get", "jobs", "-n", NS)["items"]
                if j["metadata"]["name"].startswith(prefix)]
        return jobs and all(j["status"].get("succeeded") for j in jobs)
    wait_for("job %s succeeded" % prefix, done, timeout, 2)


# ------------------------------------------------------------------------------------------


def test_k8s_up_installs_everything_ready(node, webhook):
    t0 = time.monotonic()
    argv = [UP, "--local", "--state", node.state, "--no-demo", "--timeout", str(READY_BOUND)]
    argv += values_args(webhook.url, N1, 1)
    res = subprocess.run(argv, capture_output=True, text=True, env=node.run_env,
                         timeout=READY_BOUND + 1800)
    print(res.stdout[-3000:])
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    print("k8s/up --local: %.0fs in all" % (time.monotonic() - t0))
    names = [p["metadata"]["name"] for p in kubectl_json(node, "get", "pods", "-n", NS)["items"]]
    for want in ("upmon-ingest-", "upmon-analyzer-", "upmon-kafka-0",
                 "upmon-clickhouse-s1-0", "upmon-clickhouse-s2-0", "upmon-clickhouse-operator",
                 "prometheus-", "alertmanager-"):
        assert any(n.startswith(want) for n in names), (want, names)


def test_kafka_outage_fires_the_alert_through_alertmanager_and_resolves(node, webhook):
    """Scripted incident: Kafka stops under the running simulator. Its back-pressure gauge
    goes to 1, the rule from alerts/ fires in the operator-managed Prometheus, Alertmanager
    posts it to the webhook; Kafka back, the alert resolves and the resolution is posted."""
    alert = "UpmonSimulatorBackpressure"
    wait_for("the simulator producing", lambda: prometheus(
        node, 'upmon_simulator_delivered_total{service="simulator",job="upmon"} > 0'), 180, 3)
    jobs = [j for j in kubectl_json(node, "get", "jobs", "-n", NS)["items"]
            if j["metadata"]["name"].startswith("upmon-simulator-")]
    assert jobs and jobs[0]["status"].get("active"), \
        "the simulator finished before the outage could start; raise N1: %s" % jobs
    t0 = time.monotonic()
    node.kubectl("scale", "statefulset", "upmon-kafka", "-n", NS, "--replicas=0")
    wait_for("%s firing in Prometheus" % alert, lambda: [
        r for r in prometheus(node, 'ALERTS{alertname="%s",alertstate="firing"}' % alert)],
        420, 5)
    fired = time.monotonic() - t0
    wait_for("%s posted to the webhook" % alert, lambda: webhook.seen(alert, "firing"), 180, 2)
    posted = time.monotonic() - t0
    node.kubectl("scale", "statefulset", "upmon-kafka", "-n", NS, "--replicas=1")
    t1 = time.monotonic()
    wait_for("%s resolved at the webhook" % alert, lambda: webhook.seen(alert, "resolved"),
             600, 3)
    print("Kafka stopped: alert firing after %.0fs, at the webhook after %.0fs; Kafka back: "
          "resolved at the webhook after %.0fs" % (fired, posted, time.monotonic() - t1))
    a = webhook.seen(alert, "firing")[0]
    assert a["labels"].get("service") == "simulator" and a["labels"].get("severity"), a


def test_stored_equals_produced_exactly(node):
    wait_job(node, "upmon-simulator-", 900)
    wait_for("ingest caught up", lambda: stored(node)[0] == N1 or None, 600, 3)
    total, per = stored(node)
    print("stored %d of %d produced, per shard %s" % (total, N1, per))
    assert total == N1 and sum(per) == N1 and all(per), per
    ch = ClickHouse(node, shard_pod(node, 1))
    for rollup in ("events_1s", "events_1m", "events_1m_company", "events_1d_company"):
        got = int(ch.scalar("SELECT countMerge(events) FROM upmon.%s" % rollup))
        assert got == N1, "%s counts %d events, %d stored" % (rollup, got, N1)
    dlq = prometheus(node, 'sum(upmon_ingest_dlq_produced_total{service="ingest"})')
    assert dlq and float(dlq[0]["value"][1]) == 0, dlq


def test_analyzer_gauges_in_prometheus_through_the_servicemonitor(node):
    leaders = wait_for("one analyzer leader scraped", lambda: [
        r for r in prometheus(node, 'upmon_leader{job="upmon",service="analyzer"}')
        if r["value"][1] == "1"], 120, 3)
    assert len(leaders) == 1, leaders
    up = prometheus(node, 'up{job="upmon",service="analyzer"}')
    assert len(up) == 2 and all(r["value"][1] == "1" for r in up), up
    # The 5m window empties once the simulator's run is over: the last value it had.
    rate = wait_for("the analyzer's failure-rate gauge", lambda: prometheus(
        node, 'last_over_time(upmon_failure_rate{job="upmon",window="5m",dimension="all"}[1h])'),
        180, 3)
    v = float(rate[0]["value"][1])
    assert 0.3 < v < 0.95, v
    for svc in ("ingest", "operator"):
        got = prometheus(node, 'up{job="upmon",service="%s"}' % svc)
        assert got and all(r["value"][1] == "1" for r in got), (svc, got)


def test_helm_upgrade_rolls_the_pods_and_loses_nothing(node, webhook):
    before = {p["metadata"]["name"] for p in pods(node, "app.kubernetes.io/component=ingest,"
                                                        "app.kubernetes.io/name=upmon")}
    t0 = time.monotonic()
    helm(node, "upgrade", RELEASE, CHART, "-n", NS, "--reuse-values", "--wait",
         "--timeout", "10m", "--set", "ingest.config.ingest.batch_age=400ms",
         *values_args(webhook.url, N2, 2))
    after = {p["metadata"]["name"] for p in pods(node, "app.kubernetes.io/component=ingest,"
                                                       "app.kubernetes.io/name=upmon")}
    assert after and not (after & before), "ingest pods not rolled: %s -> %s" % (before, after)
    wait_job(node, "upmon-simulator-", 900)
    wait_for("ingest caught up", lambda: stored(node)[0] == N1 + N2 or None, 600, 3)
    total, per = stored(node)
    print("helm upgrade: rolled in %.0fs; stored %d = %d + %d" % (time.monotonic() - t0, total,
                                                                 N1, N2))
    assert total == N1 + N2


def test_uninstall_then_install_finds_the_data(node, webhook):
    cluster_id = secret(node, "upmon-kafka-cluster-id", "cluster-id")
    password = secret(node, "%s-users" % CHC, "upmon-password")
    pvcs = {p["metadata"]["name"] for p in kubectl_json(node, "get", "pvc", "-n", NS)["items"]}
    helm(node, "uninstall", RELEASE, "-n", NS, "--wait", "--timeout", "10m")
    wait_for("the pods gone", lambda: not kubectl_json(node, "get", "pods", "-n", NS)["items"],
             300, 3)
    left = {p["metadata"]["name"] for p in kubectl_json(node, "get", "pvc", "-n", NS)["items"]}
    assert left == pvcs, "volume claims lost on uninstall: %s" % (pvcs - left)
    t0 = time.monotonic()
    argv = [UP, "--local", "--state", node.state, "--no-demo", "--timeout", str(READY_BOUND),
            "--set", "monitoring.alertmanager.webhookUrl=" + webhook.url]
    res = subprocess.run(argv, capture_output=True, text=True, env=node.run_env,
                         timeout=READY_BOUND + 900)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    assert secret(node, "upmon-kafka-cluster-id", "cluster-id") == cluster_id
    assert secret(node, "%s-users" % CHC, "upmon-password") == password
    wait_for("the data back", lambda: stored(node)[0] == N1 + N2 or None, 300, 3)
    print("reinstalled and serving the kept data in %.0fs" % (time.monotonic() - t0))
