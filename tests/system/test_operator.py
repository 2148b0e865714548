"""upmon-operator and charts/clickhouse on the real node (issue 13).

`helm install` of charts/clickhouse (values-local.yaml: the locally built images) puts the
operator (2 replicas, one Lease leader), a 3-node ZooKeeper and a ClickHouseCluster of
2 shards x 2 replicas on the node. Events then flow simulator -> Kafka -> ingest (pods, ingest
following the resource's write topology) while the tests scale the shards with
`kubectl scale`, kill the operator's leader in the middle, and finally count: stored events
equal produced events exactly, per shard and through the Distributed tables, and every
rollup agrees with the raw rows.

The tests of this module run in order and share one installation.
"""

import base64
import json
import os
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from kubeplane import start_node, stop_node, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHART = os.path.join(ROOT, "charts", "clickhouse")
CACHE = os.environ.get("UPMON_CACHE") or os.path.expanduser("~/.cache/upmon")
HELM = os.path.join(CACHE, "helm")
NS = "chop"
RELEASE = "ch"
CHC = "ch-clickhouse"          # the ClickHouseCluster (the chart's fullname)
OPERATOR_SA = "ch-clickhouse-operator"
KAFKA = "kafka.%s.svc.cluster.local:9092" % NS
N_EVENTS = 90000               # produced by the simulator, all valid
RATE = 600                     # events per second: ~150 s of traffic
ROLLUPS = ("events_1s", "events_1m", "events_1m_company", "events_1d_company")


def helm(*args, check=True, timeout=300, node=None):
    env = dict(os.environ)
    env["KUBECONFIG"] = node.kubeconfig
    res = subprocess.run([HELM] + list(args), capture_output=True, text=True, timeout=timeout,
                         env=env)
    if check and res.returncode != 0:
        raise AssertionError("helm %s -> exit %d: %s%s" % (" ".join(args), res.returncode,
                                                          res.stdout[-2000:], res.stderr[-2000:]))
    return res


@pytest.fixture(scope="module")
def node():
    if not os.access(HELM, os.X_OK):
        pytest.fail("helm is missing from the cache (run ci/deps)", pytrace=False)
    plane = start_node(["base", "upmon-operator", "upmon-ingest", "upmon-simulator",
                        "clickhouse", "zookeeper", "kafka"],
                       lambda msg: pytest.fail(msg, pytrace=False))
    yield plane
    if not os.environ.get("UPMON_TEST_KEEP"):  # keep the installation to look at it
        plane.kubectl("delete", "namespace", NS, "--wait=false", check=False)
        stop_node(plane)


def chc(node):
    return json.loads(node.kubectl("get", "clickhousecluster", CHC, "-n", NS,
                                   "-o", "json").stdout)


def condition(obj, kind):
    for c in obj.get("status", {}).get("conditions", []):
        if c["type"] == kind:
            return c
    return {}


def pod_ip(node, name):
    return node.kubectl("get", "pod", name, "-n", NS, "-o",
                        "jsonpath={.status.podIP}").stdout.strip()


def secret(node, name, key):
    out = node.kubectl("get", "secret", name, "-n", NS, "-o",
                       "jsonpath={.data.%s}" % key.replace(".", "\\.")).stdout
    return base64.b64decode(out).decode()


class Server:
    """One ClickHouse pod over HTTP from the host (pod IPs are routed to the node's bridge)."""

    def __init__(self, node, pod):
        self.node, self.pod = node, pod
        self.password = secret(node, "%s-internal" % CHC, "password")

    def query(self, sql, timeout=60):
        ip = pod_ip(self.node, self.pod)
        req = urllib.request.Request("http://%s:8123/" % ip, data=sql.encode(), method="POST")
        req.add_header("X-ClickHouse-User", "upmon_internal")
        req.add_header("X-ClickHouse-Key", self.password)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.read().decode()
        except urllib.error.HTTPError as e:
            raise AssertionError("%s: %s -> %s" % (self.pod, sql[:200], e.read().decode()[:500]))

    def scalar(self, sql):
        return self.query(sql).strip()


def peak_rss(comm):
    """VmHWM of every process named comm (the node's pods run on this machine)."""
    out = []
    for pid in subprocess.run(["pgrep", "-x", comm], capture_output=True,
                              text=True).stdout.split():
        try:
            with open("/proc/%s/status" % pid) as f:
                out += [int(line.split()[1]) for line in f if line.startswith("VmHWM:")]
        except OSError:
            pass
    return sorted(out)


def pods(node, shard, replicas=2):
    return ["%s-s%d-%d" % (CHC, shard, r) for r in range(replicas)]


def wait_phase(node, shards, timeout=600):
    """Until the resource is Running with `shards` published and Ready; returns seconds."""
    t0 = time.monotonic()

    def check():
        obj = chc(node)
        st = obj.get("status", {})
        return (st.get("phase") == "Running" and st.get("publishedShards") == shards
                and st.get("readyShards") == shards and not st.get("drain")
                and condition(obj, "Ready").get("status") == "True") or None
    try:
        wait_for("ClickHouseCluster Running with %d shards" % shards, check, timeout, 1)
    except AssertionError:
        print(json.dumps(chc(node).get("status"), indent=1))
        print(node.kubectl("get", "events", "-n", NS, "--sort-by=.lastTimestamp",
                           check=False).stdout[-4000:])
        for p in operator_pods(node):
            print(node.kubectl("logs", p, "-n", NS, "--tail=40", check=False).stdout)
        raise
    return time.monotonic() - t0


def operator_pods(node):
    out = node.kubectl("get", "pods", "-n", NS, "-l", "app.kubernetes.io/component=operator",
                       "-o", "jsonpath={.items[*].metadata.name}").stdout
    return out.split()


def leader(node):
    return node.kubectl("get", "lease", "%s-operator" % CHC, "-n", NS, "-o",
                        "jsonpath={.spec.holderIdentity}").stdout.strip()


def events(node, reason):
    out = json.loads(node.kubectl("get", "events", "-n", NS, "-o", "json").stdout)
    return [e for e in out["items"] if e.get("reason") == reason
            and e["involvedObject"].get("kind") == "ClickHouseCluster"]


# ---- the installation ---------------------------------------------------------------------


def test_install_2x2_schema_everywhere_and_replicated_read(node):
    node.kubectl("create", "namespace", NS, check=False)
    t0 = time.monotonic()
    helm("install", RELEASE, CHART, "-n", NS, "-f", os.path.join(CHART, "values-local.yaml"),
         "--set", "cluster.shards=2", "--set", "cluster.replicas=2",
         "--set", "operator.config.operator.drain_grace=10s", node=node)
    took = wait_phase(node, 2, timeout=600)
    print("helm install to a serving 2x2 cluster: %.0fs" % (time.monotonic() - t0))
    assert took >= 0
    obj = chc(node)
    assert condition(obj, "Ready").get("status") == "True", obj["status"]
    assert obj["status"]["topologyGeneration"] >= 1
    # Every server has every migration and sees both shards.
    migrations = sorted(f for f in os.listdir(os.path.join(ROOT, "sql")) if f.endswith(".sql"))
    for shard in (1, 2):
        for pod in pods(node, shard):
            s = Server(node, pod)
            assert int(s.scalar("SELECT count() FROM upmon.schema_migrations")) == len(migrations)
            assert s.scalar("SELECT count(DISTINCT shard_num) FROM system.clusters "
                            "WHERE cluster = 'upmon'") == "2"
            assert s.scalar("SELECT substitution FROM system.macros WHERE macro = 'shard'") \
                == str(shard)
    # A row through the Distributed table is read back from both replicas of its shard.
    s1 = Server(node, pods(node, 1)[0])
    s1.query("INSERT INTO upmon.events_in_all SELECT today(), 1, 1, 'probe-attempt', 'r', 'SAVE', "
             "1, 0, 'web', '', 'DE', 7, 1, [], 0, 0, 0, '', 999, 1 SETTINGS "
             "insert_distributed_sync = 1")
    shard = int(s1.scalar("SELECT sipHash64('probe-attempt') % 2")) + 1
    for pod in pods(node, shard):
        wait_for("probe row on %s" % pod,
                 lambda: Server(node, pod).scalar(
                     "SELECT count() FROM upmon.events_local WHERE attempt_id = 'probe-attempt'")
                 == "1", 30, 0.5)
    other = 3 - shard
    assert Server(node, pods(node, other)[0]).scalar(
        "SELECT count() FROM upmon.events_local WHERE attempt_id = 'probe-attempt'") == "0"
    # The probe row stays (kafka_partition 999): the event counts below leave it out.


def test_operator_rbac_exactly_what_it_uses(node):
    allowed = [("get", "clickhouseclusters.upmon.io"), ("watch", "clickhouseclusters.upmon.io"),
               ("create", "statefulsets.apps"), ("delete", "statefulsets.apps"),
               ("patch", "configmaps"), ("create", "secrets"), ("get", "secrets"),
               ("patch", "pods"), ("list", "pods"), ("create", "events"),
               ("create", "leases.coordination.k8s.io"), ("delete", "services")]
    denied = [("update", "clickhouseclusters.upmon.io"), ("delete", "clickhouseclusters.upmon.io"),
              ("delete", "secrets"), ("delete", "pods"), ("create", "pods/exec"),
              ("create", "pods"), ("delete", "persistentvolumeclaims"),
              ("list", "nodes"), ("create", "roles.rbac.authorization.k8s.io"),
              ("delete", "leases.coordination.k8s.io"), ("create", "deployments.apps")]
    for verb, res in allowed:
        assert node.can_i(NS, OPERATOR_SA, verb, res), "%s %s should be allowed" % (verb, res)
    for verb, res in denied:
        assert not node.can_i(NS, OPERATOR_SA, verb, res), "%s %s should be denied" % (verb, res)
    def can_status(verb):
        res = node.kubectl("auth", "can-i", verb, "clickhouseclusters.upmon.io",
                           "--subresource=status", "-n", NS,
                           "--as", "system:serviceaccount:%s:%s" % (NS, OPERATOR_SA), check=False)
        return res.stdout.strip() == "yes"
    assert can_status("patch") and can_status("update") and not can_status("delete")
    # Leases: get/update only the operator's own.
    assert node.can_i(NS, OPERATOR_SA, "update", "leases.coordination.k8s.io",
                      "%s-operator" % CHC)
    assert not node.can_i(NS, OPERATOR_SA, "update", "leases.coordination.k8s.io", "other")
    # Nothing outside its namespace.
    assert not node.can_i("default", OPERATOR_SA, "get", "clickhouseclusters.upmon.io")


def test_crd_rejects_bad_specs_with_the_api_servers_message(node):
    for patch, want in (({"spec": {"shards": 0}}, "spec.shards"),
                        ({"spec": {"replicas": 9}}, "spec.replicas"),
                        ({"spec": {"storage": {"reclaimPolicy": "Keep"}}}, "spec.storage.reclaimPolicy"),
                        ({"spec": {"coordination": {"nodes": []}}}, "spec.coordination.nodes")):
        res = node.kubectl("patch", "clickhousecluster", CHC, "-n", NS, "--type=merge",
                           "-p", json.dumps(patch), check=False)
        assert res.returncode != 0, patch
        assert want in res.stderr and "is invalid" in res.stderr, res.stderr
    res = node.kubectl("scale", "clickhousecluster", CHC, "-n", NS, "--replicas=0", check=False)
    assert res.returncode != 0 and "spec.shards" in res.stderr, res.stderr
    assert chc(node)["spec"]["shards"] == 2


# ---- events flowing: Kafka, ingest following the topology, the simulator -----------------

def kafka_objects():
    props = "\n".join([
        "process.roles=broker,controller", "node.id=1",
        "controller.quorum.voters=1@127.0.0.1:9093",
        "listeners=PLAINTEXT://:9092,CONTROLLER://127.0.0.1:9093",
        "advertised.listeners=PLAINTEXT://%s" % KAFKA,
        "controller.listener.names=CONTROLLER", "inter.broker.listener.name=PLAINTEXT",
        "log.dirs=/data/kafka", "num.partitions=4", "auto.create.topics.enable=true",
        "offsets.topic.replication.factor=1", "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1", "group.initial.rebalance.delay.ms=0", ""])
    labels = {"app": "kafka"}
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kafka", "namespace": NS},
         "data": {"server.properties": props}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kafka", "namespace": NS},
         "spec": {"selector": labels, "ports": [{"name": "kafka", "port": 9092}]}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "kafka", "namespace": NS},
         "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels}, "spec": {
                      "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000},
                      "containers": [{
                          "name": "kafka", "image": "localhost/upmon/kafka:3.9.1",
                          "imagePullPolicy": "Never",
                          "env": [{"name": "KAFKA_CONFIG", "value": "/conf/server.properties"},
                                  {"name": "KAFKA_CLUSTER_ID", "value": "upmon-operator-test01"},
                                  {"name": "KAFKA_HEAP_OPTS", "value": "-Xms128m -Xmx384m"}],
                          "readinessProbe": {"tcpSocket": {"port": 9092}, "periodSeconds": 2},
                          "volumeMounts": [{"name": "conf", "mountPath": "/conf"},
                                           {"name": "data", "mountPath": "/data"}]}],
                      "volumes": [{"name": "conf", "configMap": {"name": "kafka"}},
                                  {"name": "data", "emptyDir": {}}]}}}},
    ]


def ingest_objects():
    config = "\n".join([
        "log: {level: info}",
        "http: {port: 9302}",
        "kafka: {brokers: \"%s\", group_id: upmon-ingest}" % KAFKA,
        "clickhouse: {user: upmon, database: upmon, cluster: upmon}",
        "ingest: {topology_resource: %s}" % CHC, ""])
    labels = {"app": "ingest"}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "ingest", "namespace": NS}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "ingest-topology", "namespace": NS},
         "rules": [{"apiGroups": ["upmon.io"], "resources": ["clickhouseclusters"],
                    "verbs": ["get", "list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "ingest-topology", "namespace": NS},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                     "name": "ingest-topology"},
         "subjects": [{"kind": "ServiceAccount", "name": "ingest", "namespace": NS}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ingest", "namespace": NS},
         "data": {"ingest.yaml": config}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "ingest", "namespace": NS},
         "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels}, "spec": {
                      "serviceAccountName": "ingest",
                      "securityContext": {"runAsNonRoot": True, "runAsUser": 10001,
                                          "seccompProfile": {"type": "RuntimeDefault"}},
                      "containers": [{
                          "name": "ingest", "image": "docker.io/library/upmon-ingest:0.1.0",
                          "imagePullPolicy": "Never",
                          "args": ["--config", "/etc/upmon/ingest.yaml"],
                          "env": [{"name": "POD_NAMESPACE", "valueFrom": {
                                      "fieldRef": {"fieldPath": "metadata.namespace"}}},
                                  {"name": "UPMON_CLICKHOUSE_PASSWORD", "valueFrom": {
                                      "secretKeyRef": {"name": "%s-users" % CHC,
                                                       "key": "upmon-password"}}}],
                          "readinessProbe": {"httpGet": {"path": "/readyz", "port": 9302},
                                             "periodSeconds": 2},
                          "securityContext": {"allowPrivilegeEscalation": False,
                                              "readOnlyRootFilesystem": True,
                                              "capabilities": {"drop": ["ALL"]}},
                          "volumeMounts": [{"name": "conf", "mountPath": "/etc/upmon"}]}],
                      "volumes": [{"name": "conf", "configMap": {"name": "ingest"}}]}}}},
    ]


def simulator_job(name, count, seed):
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": NS},
            "spec": {"backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never",
                "securityContext": {"runAsNonRoot": True, "runAsUser": 10001,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{
                    "name": "simulator", "image": "docker.io/library/upmon-simulator:0.1.0",
                    "imagePullPolicy": "Never",
                    "args": ["--count", str(count), "--rate", str(RATE), "--seed", str(seed),
                             "--start", "now", "--speed", "1"],
                    "env": [{"name": "UPMON_KAFKA_BROKERS", "value": KAFKA},
                            {"name": "UPMON_HTTP_PORT", "value": "9301"}]}]}}}}


def apply_all(node, objs):
    for o in objs:
        node.apply(o)


def events_total(node, shards):
    """Events ingest stored (the probe row left out), through the Distributed table."""
    s = Server(node, pods(node, 1)[0])
    return int(s.scalar("SELECT count() FROM upmon.events WHERE kafka_partition != 999"))


def check_exact(node, shards, produced):
    """Stored = produced through the Distributed table and summed per shard; no duplicate;
    every rollup agrees with the raw rows; nothing left on a removed shard."""
    s = Server(node, pods(node, 1)[0])
    total, distinct = map(int, s.scalar(
        "SELECT count(), uniqExact(kafka_partition, kafka_offset) FROM upmon.events "
        "WHERE kafka_partition != 999").split("\t"))
    per_shard = [int(Server(node, pods(node, i)[0]).scalar(
        "SELECT count() FROM upmon.events_local WHERE kafka_partition != 999"))
        for i in range(1, shards + 1)]
    replicas = [int(Server(node, pods(node, i)[1]).scalar(
        "SELECT count() FROM upmon.events_local WHERE kafka_partition != 999"))
        for i in range(1, shards + 1)]
    print("stored %d (distinct %d), per shard %s, second replicas %s, produced %d"
          % (total, distinct, per_shard, replicas, produced))
    assert total == produced and distinct == produced, (total, distinct, produced)
    assert sum(per_shard) == produced and per_shard == replicas, (per_shard, replicas)
    raw = int(s.scalar("SELECT count() FROM upmon.events"))
    for t in ROLLUPS:
        got = int(s.scalar("SELECT countMerge(events) FROM upmon.%s" % t))
        assert got == raw, "%s counts %d events, the raw rows %d" % (t, got, raw)


def wait_stored(node, produced, timeout=600):
    wait_for("%d events stored" % produced,
             lambda: events_total(node, 0) >= produced or None, timeout, 2)


def test_scale_up_and_down_with_events_flowing(node):
    apply_all(node, kafka_objects())
    wait_for("kafka ready", lambda: node.kubectl(
        "get", "deploy", "kafka", "-n", NS, "-o",
        "jsonpath={.status.readyReplicas}").stdout.strip() == "1" or None, 180, 2)
    apply_all(node, ingest_objects())
    wait_for("ingest ready", lambda: node.kubectl(
        "get", "deploy", "ingest", "-n", NS, "-o",
        "jsonpath={.status.readyReplicas}").stdout.strip() == "2" or None, 180, 2)
    node.apply(simulator_job("sim-1", N_EVENTS, 11))
    wait_for("events arriving", lambda: events_total(node, 2) > 2000 or None, 180, 2)

    # Up: 2 -> 3 shards while events flow.
    t0 = time.monotonic()
    node.kubectl("scale", "clickhousecluster", CHC, "-n", NS, "--replicas=3")
    took = wait_phase(node, 3, timeout=600)
    print("kubectl scale 2->3 to a serving third shard: %.1fs" % (time.monotonic() - t0))
    for pod in pods(node, 3):
        assert int(Server(node, pod).scalar("SELECT count() FROM upmon.schema_migrations")) >= 8
    third = Server(node, pods(node, 3)[0])
    wait_for("new events on shard 3", lambda: int(third.scalar(
        "SELECT count() FROM upmon.events_local")) > 0 or None, 120, 2)
    assert took < 600

    # Down: 3 -> 2 while events still flow; the third shard is drained, then removed.
    t0 = time.monotonic()
    node.kubectl("scale", "clickhousecluster", CHC, "-n", NS, "--replicas=2")
    wait_for("drain started", lambda: chc(node)["status"].get("drain") or None, 60, 0.5)
    wait_phase(node, 2, timeout=900)
    took = time.monotonic() - t0
    moved = [e["message"] for e in events(node, "DrainFinished")]
    print("kubectl scale 3->2 to drained and removed: %.1fs (%s)" % (took, moved[-1:]))
    # The pods run on this machine: their processes' peak RSS after a scale up and a drain.
    print("upmon-operator peak RSS (KiB): %s" % peak_rss("upmon-operator"))
    assert moved, "no DrainFinished event"
    sts = node.kubectl("get", "statefulsets", "-n", NS, "-o",
                       "jsonpath={.items[*].metadata.name}").stdout.split()
    assert "%s-s3" % CHC not in sts, sts
    node.kubectl("wait", "--for=condition=complete", "job/sim-1", "-n", NS, "--timeout=600s",
                 timeout=620)
    wait_stored(node, N_EVENTS)
    time.sleep(3)  # a late duplicate, if any, would land now
    check_exact(node, 2, N_EVENTS)
    # Nothing of the removed shard left in coordination.
    s = Server(node, pods(node, 1)[0])
    left = s.scalar("SELECT count() FROM system.zookeeper WHERE path = '/clickhouse/tables/3/upmon'")
    assert left == "0", "shard 3 left %s tables in ZooKeeper" % left


def test_leader_killed_mid_scale_standby_finishes(node):
    produced = N_EVENTS + N_EVENTS // 2
    node.apply(simulator_job("sim-2", N_EVENTS // 2, 12))
    node.kubectl("scale", "clickhousecluster", CHC, "-n", NS, "--replicas=3")
    wait_for("scaling", lambda: chc(node)["status"].get("phase") in ("Scaling", "Creating") or None,
             60, 0.2)
    first = leader(node)
    node.kubectl("delete", "pod", first, "-n", NS, "--grace-period=0", "--force")
    t0 = time.monotonic()
    wait_phase(node, 3, timeout=600)
    print("scale-up finished by the standby %.1fs after the leader was killed" %
          (time.monotonic() - t0))
    assert leader(node) != first

    node.kubectl("scale", "clickhousecluster", CHC, "-n", NS, "--replicas=2")
    wait_for("drain moving rows", lambda: (chc(node)["status"].get("drain") or {}).get("step", 0)
             >= 1 or None, 300, 0.2)
    second = leader(node)
    node.kubectl("delete", "pod", second, "-n", NS, "--grace-period=0", "--force")
    t0 = time.monotonic()
    wait_phase(node, 2, timeout=900)
    print("drain finished by the standby %.1fs after the leader was killed" %
          (time.monotonic() - t0))
    node.kubectl("wait", "--for=condition=complete", "job/sim-2", "-n", NS, "--timeout=600s",
                 timeout=620)
    wait_stored(node, produced)
    time.sleep(3)
    check_exact(node, 2, produced)


# ---- specs the operator cannot reconcile ---------------------------------------------------

def server_pods(node):
    out = json.loads(node.kubectl("get", "pods", "-n", NS, "-l", "upmon.io/cluster=%s" % CHC,
                                  "-o", "json").stdout)
    return {p["metadata"]["name"]: (p["metadata"]["uid"], p["spec"]["containers"][0]["image"])
            for p in out["items"] if not p["metadata"].get("deletionTimestamp")}


def wait_degraded(node, reason, timeout=180):
    def check():
        c = condition(chc(node), "Degraded")
        return c if c.get("status") == "True" and c.get("reason") == reason else None
    return wait_for("Degraded/%s" % reason, check, timeout, 1)


def test_missing_secret_is_degraded_and_touches_nothing(node):
    before_pods = server_pods(node)
    creds = "%s-credentials" % CHC
    before_rv = node.kubectl("get", "secret", creds, "-n", NS, "-o",
                             "jsonpath={.metadata.resourceVersion}").stdout
    users = chc(node)["spec"].get("users", [])
    node.kubectl("patch", "clickhousecluster", CHC, "-n", NS, "--type=merge", "-p", json.dumps(
        {"spec": {"users": users + [{"name": "reporting",
                                     "passwordSecret": {"name": "no-such-secret",
                                                        "key": "pw"}}]}}))
    cond = wait_degraded(node, "SecretMissing")
    assert "no-such-secret" in cond["message"], cond
    assert chc(node)["status"]["phase"] == "Degraded"
    assert any("no-such-secret" in e["message"] and e["type"] == "Warning"
               for e in events(node, "SecretMissing"))
    time.sleep(5)
    assert node.kubectl("get", "secret", creds, "-n", NS, "-o",
                        "jsonpath={.metadata.resourceVersion}").stdout == before_rv
    assert server_pods(node) == before_pods
    # The Secret appears: the operator continues by itself and the user can log in.
    node.kubectl("create", "secret", "generic", "no-such-secret", "-n", NS,
                 "--from-literal=pw=reporting-pass-1")
    wait_phase(node, 2, timeout=300)
    ip = pod_ip(node, pods(node, 1)[0])

    def login(password):
        req = urllib.request.Request("http://%s:8123/" % ip, data=b"SELECT 42")
        req.add_header("X-ClickHouse-User", "reporting")
        req.add_header("X-ClickHouse-Key", password)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.read().decode().strip() == "42"
        except urllib.error.HTTPError:
            return False
    wait_for("the new user can log in", lambda: login("reporting-pass-1"), 120, 2)
    assert not login("wrong-password")


def test_image_that_does_not_exist_is_tried_on_one_pod_then_refused(node):
    before = server_pods(node)
    good = chc(node)["spec"]["image"]
    bad = "localhost/upmon/clickhouse:does-not-exist"
    canary = "%s-s1-1" % CHC
    node.kubectl("patch", "clickhousecluster", CHC, "-n", NS, "--type=merge",
                 "-p", json.dumps({"spec": {"image": bad}}))
    cond = wait_degraded(node, "ImageUnavailable", timeout=300)
    assert bad in cond["message"] and good in cond["message"], cond
    assert events(node, "ImageRejected"), "no ImageRejected event"
    # Every server back on the running image; only the canary pod was replaced.
    def back():
        now = server_pods(node)
        ok = set(now) == set(before) and all(img == good for _, img in now.values())
        return now if ok and all(
            p["status"] == "True" for p in [
                {"status": node.kubectl("get", "pod", name, "-n", NS, "-o",
                                        "jsonpath={.status.conditions[?(@.type=='Ready')].status}"
                                        ).stdout}
                for name in now]) else None
    now = wait_for("every server Ready on %s" % good, back, 300, 2)
    changed = sorted(n for n in before if now[n][0] != before[n][0])
    assert changed in ([], [canary]), "pods other than the canary were replaced: %s" % changed
    assert chc(node)["status"]["currentImage"] == good
    # Back to the good image: Ready again.
    node.kubectl("patch", "clickhousecluster", CHC, "-n", NS, "--type=merge",
                 "-p", json.dumps({"spec": {"image": good}}))
    wait_phase(node, 2, timeout=300)
    assert condition(chc(node), "Degraded").get("status") == "False"


# ---- replicas per shard, retention ----------------------------------------------------------

def test_replicas_removed_leave_nothing_in_coordination_and_added_ones_catch_up(node):
    s1 = Server(node, pods(node, 1)[0])
    total = s1.scalar("SELECT count() FROM upmon.events")
    node.kubectl("patch", "clickhousecluster", CHC, "-n", NS, "--type=merge",
                 "-p", json.dumps({"spec": {"replicas": 1}}))
    wait_for("one replica per shard", lambda: not any(
        n.endswith("-1") for n in server_pods(node)) or None, 300, 2)
    wait_phase(node, 2, timeout=300)
    for shard in (1, 2):
        reps = s1.query("SELECT name FROM system.zookeeper WHERE path = "
                        "'/clickhouse/tables/%d/upmon/events_local/replicas'" % shard).split()
        assert reps == ["%s-s%d-0" % (CHC, shard)], reps
    assert s1.scalar("SELECT count() FROM upmon.events") == total
    assert events(node, "ReplicasRemoved")
    node.kubectl("patch", "clickhousecluster", CHC, "-n", NS, "--type=merge",
                 "-p", json.dumps({"spec": {"replicas": 2}}))
    wait_phase(node, 2, timeout=600)
    for shard in (1, 2):
        first, second = (Server(node, p) for p in pods(node, shard))
        want = first.scalar("SELECT count() FROM upmon.events_local")
        wait_for("replica %s caught up" % second.pod, lambda: second.scalar(
            "SELECT count() FROM upmon.events_local") == want or None, 180, 1)
        for t in ROLLUPS:
            q = "SELECT countMerge(events) FROM upmon.%s_local" % t
            want_t = first.scalar(q)
            wait_for("%s of %s caught up" % (t, second.pod),
                     lambda: second.scalar(q) == want_t or None, 180, 1)
    assert Server(node, pods(node, 1)[1]).scalar("SELECT count() FROM upmon.events") == total


def test_leader_runs_retention(node):
    s1 = Server(node, pods(node, 1)[0])
    # A row 100 days old: beyond rawDays (30), inside dailyDays (400).
    s1.query("INSERT INTO upmon.events_in_all SELECT today() - 100, 1, 1, 'old-attempt', 'r', "
             "'SAVE', 1, 0, 'web', '', 'DE', 7, 1, [], 0, 0, 0, '', 998, 1")
    old = "SELECT count() FROM upmon.events WHERE kafka_partition = 998"
    assert s1.scalar(old) == "1"
    # A new leader runs retention at its first steady reconcile.
    node.kubectl("delete", "pod", leader(node), "-n", NS)
    wait_for("the expired partition dropped", lambda: s1.scalar(old) == "0" or None, 180, 2)
    wait_for("a RetentionApplied event", lambda: events(node, "RetentionApplied"), 60, 1)
    # The daily rollup keeps that day (400 days).
    assert s1.scalar("SELECT countMerge(events) FROM upmon.events_1d_company "
                     "WHERE day = today() - 100") == "1"
