"""charts/kafka without a cluster: `helm lint`, `helm template` and the chart's shell scripts.

The template logic is asserted on the rendered objects (labels, replication settings per node
count, the quorum voters, the cluster id Secret, the topics Job, the restricted pod security,
the schema's and the templates' rejections), and the scripts in charts/kafka/files/ are run
with stand-ins for Kafka's tools (no JVM, no network). Nothing here needs the stack or a
Kubernetes node. helm comes from ci/deps ($UPMON_CACHE or ~/.cache/upmon); PyYAML parses the
rendered manifests.
"""

import base64
import functools
import glob
import json
import os
import shutil
import subprocess
import sys

import pytest

try:
    import yaml
except ImportError:  # fail, never skip: say what to install
    pytest.fail("tests/system/test_chart_kafka.py needs PyYAML (python3 -m pip install pyyaml)",
                pytrace=False, allow_module_level=True)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHART = os.path.join(ROOT, "charts", "kafka")
LOCAL = os.path.join(CHART, "values-local.yaml")
FILES = os.path.join(CHART, "files")
NS = "upmon"


def find_helm():
    caches = [os.environ.get("UPMON_CACHE"), os.path.expanduser("~/.cache/upmon")]
    for cache in filter(None, caches):
        for cand in [os.path.join(cache, "helm")] + sorted(
                glob.glob(os.path.join(cache, "helm-v*", "helm")), reverse=True):
            if os.path.isfile(cand) and os.access(cand, os.X_OK):
                return cand
    return None


HELM = find_helm()
if HELM is None:
    pytest.fail("helm not found in $UPMON_CACHE or ~/.cache/upmon (helm, helm-v*/helm): run ci/deps",
                pytrace=False, allow_module_level=True)


def helm(*args, check=True):
    res = subprocess.run([HELM] + list(args), capture_output=True, text=True, timeout=120)
    if check and res.returncode != 0:
        raise AssertionError("helm %s -> exit %d:\n%s%s" % (" ".join(args), res.returncode,
                                                          res.stdout[-3000:], res.stderr[-3000:]))
    return res


@functools.lru_cache(maxsize=None)
def _render(args):
    out = helm("template", "t", CHART, "-n", NS, *args).stdout
    return tuple(d for d in yaml.safe_load_all(out) if d)


def render(*args):
    return list(_render(tuple(args)))


def render_error(*args):
    res = helm("template", "t", CHART, "-n", NS, *args, check=False)
    assert res.returncode != 0, "helm template %s rendered, but should fail" % " ".join(args)
    return res.stderr


def values_file(tmp_path, text, name="values.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def one(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, "expected one %s %s, found %d" % (kind, name or "", len(found))
    return found[0]


def props(docs):
    """server.properties of the nodes' ConfigMap as a dict (later lines win, as in Kafka)."""
    text = one(docs, "ConfigMap", "t-kafka")["data"]["server.properties"]
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            out[k] = v
    return out


def topics_list(docs):
    text = one(docs, "ConfigMap", "t-kafka-topics")["data"]["topics.list"]
    return [line.split() for line in text.splitlines() if line.strip()]


# ---- lint and render ------------------------------------------------------------------------

@pytest.mark.parametrize("extra", [[], ["-f", LOCAL]], ids=["defaults", "values-local"])
def test_lint_strict(extra):
    res = helm("lint", "--strict", CHART, *extra)
    assert "0 chart(s) failed" in res.stdout, res.stdout


@pytest.mark.parametrize("extra", [[], ["-f", LOCAL], ["--set", "replicas=1"],
                                   ["--set", "replicas=5"]],
                         ids=["defaults", "values-local", "replicas-1", "replicas-5"])
def test_renders_every_object(extra):
    kinds = sorted(d["kind"] for d in render(*extra))
    assert kinds == sorted(["ConfigMap", "ConfigMap", "Job", "PodDisruptionBudget", "Secret",
                            "Service", "Service", "StatefulSet"])


# ---- labels and names -----------------------------------------------------------------------

def test_standard_labels_on_every_object():
    for d in render():
        labels = d["metadata"]["labels"]
        want = {"app.kubernetes.io/name": "kafka", "app.kubernetes.io/instance": "t",
                "app.kubernetes.io/version": "3.9.1", "app.kubernetes.io/part-of": "upmon",
                "app.kubernetes.io/managed-by": "Helm", "helm.sh/chart": "kafka-0.1.0"}
        for k, v in want.items():
            assert labels.get(k) == v, "%s %s: label %s=%r" % (d["kind"], d["metadata"]["name"],
                                                              k, labels.get(k))
        assert labels["app.kubernetes.io/component"] in ("broker", "topics")
        assert d["metadata"]["namespace"] == NS


def test_selectors_match_the_pods():
    docs = render()
    sts = one(docs, "StatefulSet")
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    selector = sts["spec"]["selector"]["matchLabels"]
    assert selector == {"app.kubernetes.io/name": "kafka", "app.kubernetes.io/instance": "t",
                        "app.kubernetes.io/component": "broker"}
    assert selector.items() <= pod_labels.items()
    for svc in (d for d in docs if d["kind"] == "Service"):
        assert svc["spec"]["selector"] == selector, svc["metadata"]["name"]
    assert one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector
    job_labels = one(docs, "Job")["spec"]["template"]["metadata"]["labels"]
    assert job_labels["app.kubernetes.io/component"] == "topics", "the Job's pods must not match the Services"


def test_fullname_override_and_release_name_containing_chart():
    docs = render("--set", "fullnameOverride=kafka")
    assert one(docs, "StatefulSet")["metadata"]["name"] == "kafka"
    assert "0@kafka-0.kafka-headless.upmon.svc.cluster.local:9093" in \
        [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "kafka"][0]["data"]["server.properties"]
    out = helm("template", "my-kafka", CHART, "-n", NS).stdout
    assert "name: my-kafka-headless" in out and "name: my-kafka-kafka" not in out


# ---- replication settings, voters, listeners -----------------------------------------------

@pytest.mark.parametrize("n, rf, isr", [(1, 1, 1), (3, 3, 2), (5, 3, 2)])
def test_replication_settings_follow_the_node_count(n, rf, isr):
    docs = render("--set", "replicas=%d" % n)
    p = props(docs)
    for key in ("default.replication.factor", "offsets.topic.replication.factor",
                "transaction.state.log.replication.factor"):
        assert p[key] == str(rf), key
    assert p["min.insync.replicas"] == str(isr)
    assert p["transaction.state.log.min.isr"] == str(isr)
    assert one(docs, "StatefulSet")["spec"]["replicas"] == n
    for name, parts, topic_rf, *_ in topics_list(docs):
        assert topic_rf == str(rf), name


@pytest.mark.parametrize("n", [1, 3, 5])
def test_quorum_voters_are_the_pods_stable_names(n):
    p = props(render("--set", "replicas=%d" % n))
    want = ",".join("%d@t-kafka-%d.t-kafka-headless.upmon.svc.cluster.local:9093" % (i, i)
                    for i in range(n))
    assert p["controller.quorum.voters"] == want
    assert p["process.roles"] == "broker,controller"
    assert p["node.id"] == "@NODE_ID@", "node.id is filled in from the pod's ordinal at start"
    assert p["advertised.listeners"] == \
        "PLAINTEXT://@POD_NAME@.t-kafka-headless.upmon.svc.cluster.local:9092"
    assert p["listeners"] == "PLAINTEXT://:9092,CONTROLLER://:9093"
    assert p["controller.listener.names"] == "CONTROLLER"
    assert p["log.dirs"] == "/var/lib/kafka/data/logs"


def test_cluster_domain_reaches_every_name():
    docs = render("--set", "clusterDomain=example.internal")
    assert "t-kafka-0.t-kafka-headless.upmon.svc.example.internal:9093" in props(docs)["controller.quorum.voters"]
    env = {e["name"]: e.get("value") for e in
           one(docs, "Job")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KAFKA_BOOTSTRAP"] == "t-kafka.upmon.svc.example.internal:9092"


def test_kafka_config_values_render_as_kafka_reads_them(tmp_path):
    f = values_file(tmp_path, "kafka:\n  config:\n    log.retention.ms: 604800000\n"
                              "    log.cleaner.min.cleanable.ratio: 0.5\n"
                              "    auto.create.topics.enable: true\n")
    p = props(render("-f", f))
    assert p["log.retention.ms"] == "604800000"
    assert p["log.cleaner.min.cleanable.ratio"] == "0.5"
    assert p["auto.create.topics.enable"] == "true"
    assert props(render())["auto.create.topics.enable"] == "false"


# ---- services, PDB, volumes, probes ---------------------------------------------------------

def test_services():
    docs = render()
    headless = one(docs, "Service", "t-kafka-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert {p["port"] for p in headless["spec"]["ports"]} == {9092, 9093}
    client = one(docs, "Service", "t-kafka")
    assert [p["port"] for p in client["spec"]["ports"]] == [9092]
    assert "clusterIP" not in client["spec"]
    sts = one(docs, "StatefulSet")
    assert sts["spec"]["serviceName"] == "t-kafka-headless"
    assert sts["spec"]["podManagementPolicy"] == "Parallel"


def test_pod_disruption_budget():
    assert one(render(), "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert not [d for d in render("--set", "podDisruptionBudget.enabled=false")
                if d["kind"] == "PodDisruptionBudget"]


def test_volume_claims_and_data_dir():
    sts = one(render(), "StatefulSet")
    (vct,) = sts["spec"]["volumeClaimTemplates"]
    assert vct["metadata"]["name"] == "data"
    assert vct["spec"]["resources"]["requests"]["storage"] == "8Gi"
    assert "storageClassName" not in vct["spec"], '"" must mean the default class (field omitted)'
    mounts = {m["name"]: m["mountPath"] for m in sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["data"] == "/var/lib/kafka/data"
    sts = one(render("--set", "persistence.storageClassName=fast,persistence.size=20Gi"), "StatefulSet")
    spec = sts["spec"]["volumeClaimTemplates"][0]["spec"]
    assert spec["storageClassName"] == "fast" and spec["resources"]["requests"]["storage"] == "20Gi"


def test_probes_resources_and_spreading():
    sts = one(render(), "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["tcpSocket"]["port"] == "client", probe
    assert c["livenessProbe"]["failureThreshold"] * c["livenessProbe"]["periodSeconds"] >= 60
    assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] >= 300
    assert c["resources"]["limits"]["memory"] == "2Gi"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["KAFKA_HEAP_OPTS"] == "-Xms512m -Xmx1g"
    term = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert "checksum/config" in sts["spec"]["template"]["metadata"]["annotations"]


def test_command_is_the_start_script_from_the_configmap():
    docs = render()
    c = one(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["/bin/sh", "/etc/upmon-kafka/kafka-start.sh"]
    cm = one(docs, "ConfigMap", "t-kafka")["data"]
    for name in ("kafka-start.sh", "kafka-tool.sh", "log4j.properties", "tools-log4j.properties"):
        with open(os.path.join(FILES, name)) as f:
            assert cm[name].strip() == f.read().strip(), name
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["KAFKA_CLUSTER_ID"]["valueFrom"]["secretKeyRef"] == {"name": "t-kafka-cluster-id",
                                                                    "key": "cluster-id"}


# ---- the cluster id -------------------------------------------------------------------------

def check_cluster_id(cid):
    assert len(cid) == 22, cid
    raw = base64.urlsafe_b64decode(cid + "==")
    assert len(raw) == 16, cid
    assert base64.urlsafe_b64encode(raw).decode().rstrip("=") == cid, "not canonical: " + cid


def secret_id(docs):
    s = one(docs, "Secret", "t-kafka-cluster-id")
    return base64.b64decode(s["data"]["cluster-id"]).decode()


def test_cluster_id_secret_is_kept_and_valid():
    docs = render()
    s = one(docs, "Secret", "t-kafka-cluster-id")
    assert s["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    check_cluster_id(secret_id(docs))


def test_cluster_id_generated_fresh_and_always_valid():
    ids = set()
    for _ in range(8):  # helm template cannot look the Secret up: every render generates
        out = helm("template", "t", CHART, "-s", "templates/secret-cluster-id.yaml").stdout
        cid = base64.b64decode(yaml.safe_load(out)["data"]["cluster-id"]).decode()
        check_cluster_id(cid)
        ids.add(cid)
    assert len(ids) == 8


def test_cluster_id_pinned_and_existing_secret():
    assert secret_id(render("--set", "kafka.clusterId=MkU3OEVBNTcwNTJENDM2Qg")) == "MkU3OEVBNTcwNTJENDM2Qg"
    docs = render("--set", "kafka.existingClusterIdSecret=my-id,kafka.existingClusterIdSecretKey=id")
    assert not [d for d in docs if d["kind"] == "Secret"]
    env = {e["name"]: e for e in
           one(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KAFKA_CLUSTER_ID"]["valueFrom"]["secretKeyRef"] == {"name": "my-id", "key": "id"}


# ---- the topics Job -------------------------------------------------------------------------

def test_topics_job_is_a_hook_with_the_nodes_image():
    docs = render()
    job = one(docs, "Job", "t-kafka-topics")
    ann = job["metadata"]["annotations"]
    assert ann["helm.sh/hook"] == "post-install,post-upgrade"
    assert ann["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    assert job["spec"]["backoffLimit"] == 2
    assert job["spec"]["activeDeadlineSeconds"] == 600
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    node = one(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    (c,) = pod["containers"]
    assert c["image"] == node["image"] == "apache/kafka:3.9.1"
    assert c["command"] == ["/bin/sh", "/etc/upmon-kafka-topics/topics.sh"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["KAFKA_BOOTSTRAP"] == "t-kafka.upmon.svc.cluster.local:9092"
    with open(os.path.join(FILES, "topics.sh")) as f:
        assert one(docs, "ConfigMap", "t-kafka-topics")["data"]["topics.sh"].strip() == f.read().strip()


def test_topics_job_renders_each_topic(tmp_path):
    assert topics_list(render()) == [
        ["upmon.events.v1", "6", "3", "retention.ms=604800000"],
        ["upmon.events.dlq", "3", "3", "retention.ms=1209600000"]]
    f = values_file(tmp_path, """
topics:
  - {name: a.b, partitions: 12, replicationFactor: 2, config: {cleanup.policy: "compact,delete", min.insync.replicas: 1}}
  - {name: c_d, partitions: 1}
""")
    assert topics_list(render("-f", f)) == [
        ["a.b", "12", "2", "cleanup.policy=compact,delete", "min.insync.replicas=1"],
        ["c_d", "1", "3"]]
    local = render("-f", LOCAL)
    assert [t[:3] for t in topics_list(local)] == [["upmon.events.v1", "6", "1"],
                                                   ["upmon.events.dlq", "3", "1"]]


def test_no_job_without_topics():
    for args in (["--set", "topicsJob.enabled=false"], ["--set-json", "topics=[]"]):
        kinds = [d["kind"] for d in render(*args)]
        assert "Job" not in kinds and kinds.count("ConfigMap") == 1, args


# ---- pod security ---------------------------------------------------------------------------

ALLOWED_VOLUMES = {"configMap", "emptyDir", "persistentVolumeClaim", "secret", "projected",
                   "downwardAPI", "csi", "ephemeral"}


@pytest.mark.parametrize("extra", [[], ["-f", LOCAL]], ids=["defaults", "values-local"])
def test_every_pod_passes_restricted(extra):
    pods = [d["spec"]["template"]["spec"] for d in render(*extra) if d["kind"] in ("StatefulSet", "Job")]
    assert len(pods) == 2
    for pod in pods:
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 1000
        assert psc["runAsGroup"] == 1000 and psc["fsGroup"] == 1000
        assert psc["seccompProfile"]["type"] == "RuntimeDefault"
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            assert not pod.get(key), key
        assert pod["automountServiceAccountToken"] is False
        for vol in pod["volumes"]:
            assert set(vol) - {"name"} <= ALLOWED_VOLUMES, vol
        for c in pod.get("initContainers", []) + pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, c["name"]
            assert sc["readOnlyRootFilesystem"] is True, c["name"]
            assert sc["runAsNonRoot"] is True and sc.get("runAsUser", 1000) != 0, c["name"]
            assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), c["name"]
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", c["name"]
            assert not sc.get("privileged"), c["name"]
            assert all("hostPort" not in p for p in c.get("ports", [])), c["name"]
            mounts = {m["mountPath"] for m in c["volumeMounts"]}
            assert "/tmp" in mounts, "%s: the JVM needs a writable /tmp" % c["name"]


# ---- values-local ---------------------------------------------------------------------------

def test_values_local():
    docs = render("-f", LOCAL)
    sts = one(docs, "StatefulSet")
    c = sts["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "localhost/upmon/kafka:3.9.1" and c["imagePullPolicy"] == "Never"
    assert sts["spec"]["replicas"] == 1
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "upmon-local"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["KAFKA_HEAP_OPTS"] == "-Xms128m -Xmx256m"
    assert c["resources"] == {"requests": {"cpu": "50m", "memory": "512Mi"},
                              "limits": {"memory": "768Mi"}}
    job = one(docs, "Job")["spec"]["template"]["spec"]["containers"][0]
    assert job["image"] == c["image"] and job["imagePullPolicy"] == "Never"
    p = props(docs)
    assert p["controller.quorum.voters"] == "0@t-kafka-0.t-kafka-headless.upmon.svc.cluster.local:9093"
    assert p["auto.create.topics.enable"] == "false", "values-local's kafka.config merges with the defaults"


# ---- rejections -----------------------------------------------------------------------------

SCHEMA_REJECTS = [
    ("replicas: 2", "replicas"),
    ("replicas: 0", "replicas"),
    ("replicas: 4", "replicas"),
    ("topics: [{name: a, partitions: -1}]", "topics.0.partitions"),
    ("topics: [{name: a, partitions: 0}]", "topics.0.partitions"),
    ("topics: [{partitions: 3}]", "topics.0: name is required"),
    ("topics: [{name: '', partitions: 3}]", "topics.0.name"),
    ("topics: [{name: 'a b', partitions: 3}]", "topics.0.name"),
    ("topics: [{name: a}]", "topics.0: partitions is required"),
    ("topics: [{name: a, partitions: 1, replicationFactor: 0}]", "topics.0.replicationFactor"),
    ("topics: [{name: a, partitions: 1, partiton: 2}]", "Additional property partiton"),
    ("topics: [{name: a, partitions: 1, config: {retention.ms: '1 day'}}]", "topics.0.config.retention.ms"),
    ("replica: 3", "Additional property replica"),
    ("kafka: {clusterID: x}", "Additional property clusterID"),
    ("kafka: {clusterId: not-an-id}", "kafka.clusterId"),
    ("kafka: {clusterId: MkU3OEVBNTcwNTJENDM2Qh}", "kafka.clusterId"),
    ("image: {pullPolicy: Sometimes}", "image.pullPolicy"),
    ("image: {repository: ''}", "image.repository"),
    ("heapOpts: -Xms1g", "heapOpts"),
    ("persistence: {size: lots}", "persistence.size"),
    ("topicsJob: {backoffLimit: -1}", "topicsJob.backoffLimit"),
    ("topicsJob: {activeDeadlineSeconds: 5}", "topicsJob.activeDeadlineSeconds"),
    ("podDisruptionBudget: {maxUnavailable: 0}", "podDisruptionBudget.maxUnavailable"),
]


@pytest.mark.parametrize("text, key", SCHEMA_REJECTS, ids=[t for t, _ in SCHEMA_REJECTS])
def test_schema_rejects_with_the_key(tmp_path, text, key):
    err = render_error("-f", values_file(tmp_path, text + "\n"))
    assert "values don't meet the specifications of the schema" in err, err
    assert key in err, "the message should name %r:\n%s" % (key, err)


def test_schema_rejects_replicas_on_the_command_line():
    err = render_error("--set", "replicas=2")
    assert "- replicas: replicas must be one of the following: 1, 3, 5" in err, err


TEMPLATE_REJECTS = [
    ("topics: [{name: a, partitions: 1}, {name: a, partitions: 2}]", "topics.1.name"),
    ("replicas: 1\ntopics: [{name: a, partitions: 1, replicationFactor: 3}]", "topics.0.replicationFactor"),
    ("replicas: 1\ntopics: [{name: a, partitions: 1, config: {min.insync.replicas: 2}}]",
     "topics.0.config.min.insync.replicas"),
    ("kafka: {config: {log.dirs: /x}}", "kafka.config.log.dirs"),
    ("kafka: {config: {min.insync.replicas: 3}}", "kafka.config.min.insync.replicas"),
    ("kafka: {config: {listeners: 'PLAINTEXT://:9092'}}", "kafka.config.listeners"),
    ("kafka: {clusterId: MkU3OEVBNTcwNTJENDM2Qg, existingClusterIdSecret: s}", "kafka.clusterId"),
    ("podDisruptionBudget: {maxUnavailable: 2}", "podDisruptionBudget.maxUnavailable"),
]


@pytest.mark.parametrize("text, key", TEMPLATE_REJECTS, ids=[t for t, _ in TEMPLATE_REJECTS])
def test_templates_reject_with_the_key(tmp_path, text, key):
    err = render_error("-f", values_file(tmp_path, text + "\n"))
    assert key in err, "the message should name %r:\n%s" % (key, err)


# ---- NOTES ----------------------------------------------------------------------------------

def test_notes_give_bootstrap_and_topic_listing(tmp_path):
    # helm renders NOTES.txt only on install; render it through a copy of the chart.
    copy = tmp_path / "kafka"
    shutil.copytree(CHART, copy)
    shutil.copy(copy / "templates" / "NOTES.txt", copy / "files" / "notes.txt")
    (copy / "templates" / "zz-notes.yaml").write_text(
        'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n'
        'data:\n  notes: {{ tpl (.Files.Get "files/notes.txt") . | toJson }}\n')
    out = helm("template", "t", str(copy), "-n", NS, "-s", "templates/zz-notes.yaml").stdout
    notes = yaml.safe_load(out)["data"]["notes"]
    assert "t-kafka.upmon.svc.cluster.local:9092" in notes
    assert "kafka-tool.sh topics --bootstrap-server localhost:9092 --list" in notes
    assert "upmon.events.v1: 6 partitions, replication factor 3" in notes


# ---- README ---------------------------------------------------------------------------------

def test_readme_values_table_is_current():
    res = subprocess.run([sys.executable, os.path.join(CHART, "scripts", "values-table.py"), "--check"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_value_is_documented():
    with open(os.path.join(CHART, "values.schema.json")) as f:
        schema = json.load(f)

    def walk(s, path):
        if s.get("type") == "object" and "properties" in s:
            assert s.get("additionalProperties") is False, "%s: additionalProperties" % (path or "(root)")
        for k, sub in s.get("properties", {}).items():
            assert sub.get("description"), "%s%s has no description" % (path, k)
            walk(sub, path + k + ".")
        if isinstance(s.get("items"), dict):
            walk(s["items"], path + "[].")

    walk(schema, "")


# ---- the scripts, with stand-ins for Kafka's tools ------------------------------------------

def sh(script, env, timeout=60):
    full = dict(os.environ)
    full.update(env)
    return subprocess.run(["sh", script], capture_output=True, text=True, env=full, timeout=timeout)


@pytest.mark.parametrize("name", ["kafka-start.sh", "kafka-tool.sh", "topics.sh"])
def test_scripts_parse_as_posix_sh(name):
    res = subprocess.run(["sh", "-n", os.path.join(FILES, name)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


FAKE_TOOL = r"""#!/bin/sh
# Stand-in for kafka-tool.sh: records its arguments; `storage format` writes meta.properties.
echo "$*" >> "$CALLS"
case "$1" in
  flavour) echo fake ;;
  storage)
    conf=$(echo "$*" | sed -n 's/.* -c \([^ ]*\).*/\1/p')
    id=$(echo "$*" | sed -n 's/.* -t \([^ ]*\).*/\1/p')
    dir=$(sed -n 's/^log\.dirs=//p' "$conf")
    mkdir -p "$dir" && printf 'version=1\ncluster.id=%s\n' "$id" > "$dir/meta.properties" ;;
  server) echo "SERVER $2" ;;
esac
"""


def start_env(tmp_path, cid):
    chart = tmp_path / "chart"
    chart.mkdir()
    shutil.copy(os.path.join(FILES, "kafka-start.sh"), chart)
    (chart / "kafka-tool.sh").write_text(FAKE_TOOL)
    props_text = one(render("--set", "replicas=3"), "ConfigMap", "t-kafka")["data"]["server.properties"]
    (chart / "server.properties").write_text(
        props_text.replace("/var/lib/kafka/data/logs", str(tmp_path / "data" / "logs")))
    (tmp_path / "config").mkdir(exist_ok=True)
    return str(chart / "kafka-start.sh"), {
        "POD_NAME": "t-kafka-2", "KAFKA_CLUSTER_ID": cid, "KAFKA_CHART_DIR": str(chart),
        "KAFKA_CONF_DIR": str(tmp_path / "config"), "CALLS": str(tmp_path / "calls")}


def test_start_script_formats_once_then_starts(tmp_path):
    cid = "MkU3OEVBNTcwNTJENDM2Qg"
    script, env = start_env(tmp_path, cid)
    res = sh(script, env)
    assert res.returncode == 0, res.stderr
    conf = (tmp_path / "config" / "server.properties").read_text()
    assert "\nnode.id=2\n" in conf
    assert "advertised.listeners=PLAINTEXT://t-kafka-2.t-kafka-headless.upmon.svc.cluster.local:9092" in conf
    assert "@NODE_ID@" not in conf and "@POD_NAME@" not in conf
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[0].startswith("storage format --ignore-formatted -t %s -c " % cid), calls
    assert calls[-1] == "server %s" % (tmp_path / "config" / "server.properties")
    # A restart finds meta.properties and does not format again.
    (tmp_path / "calls").write_text("")
    res = sh(script, env)
    assert res.returncode == 0, res.stderr
    assert not [c for c in (tmp_path / "calls").read_text().splitlines() if c.startswith("storage")]
    assert "is formatted for cluster %s" % cid in res.stderr


def test_start_script_refuses_another_cluster_id(tmp_path):
    script, env = start_env(tmp_path, "MkU3OEVBNTcwNTJENDM2Qg")
    assert sh(script, env).returncode == 0
    env["KAFKA_CLUSTER_ID"] = "AAAAAAAAAAAAAAAAAAAAAQ"
    res = sh(script, env)
    assert res.returncode == 3
    assert "formatted for cluster id 'MkU3OEVBNTcwNTJENDM2Qg'" in res.stderr


@pytest.mark.parametrize("change, message", [
    ({"KAFKA_CLUSTER_ID": ""}, "not a KRaft cluster id"),
    ({"KAFKA_CLUSTER_ID": "short"}, "not a KRaft cluster id"),
    ({"KAFKA_CLUSTER_ID": "MkU3OEVBNTcwNTJENDM2Q+"}, "not a KRaft cluster id"),
    ({"POD_NAME": "kafka"}, "does not end in -<ordinal>"),
])
def test_start_script_checks_its_inputs(tmp_path, change, message):
    script, env = start_env(tmp_path, "MkU3OEVBNTcwNTJENDM2Qg")
    env.update(change)
    res = sh(script, env)
    assert res.returncode == 2 and message in res.stderr, res.stderr


def fake_home(tmp_path, scripts):
    """A KAFKA_HOME with bin/*.sh (the official layout) or only libs/ (the local image), and a
    fake `java` in PATH; both record how they were called."""
    home = tmp_path / ("scripts" if scripts else "jars")
    (home / "libs").mkdir(parents=True)
    record = '#!/bin/sh\necho "$(basename "$0") HEAP=$KAFKA_HEAP_OPTS LOG4J=$KAFKA_LOG4J_OPTS EXTRA=${EXTRA_ARGS:-} ARGS=$*"\n'
    if scripts:
        (home / "bin").mkdir()
        for name in ("kafka-server-start.sh", "kafka-storage.sh", "kafka-topics.sh"):
            (home / "bin" / name).write_text(record)
            (home / "bin" / name).chmod(0o755)
    path = tmp_path / "path"
    path.mkdir(exist_ok=True)
    (path / "java").write_text(record)
    (path / "java").chmod(0o755)
    return {"KAFKA_HOME": str(home), "PATH": "%s:%s" % (path, os.environ["PATH"]),
            "KAFKA_HEAP_OPTS": "-Xmx1g", "KAFKA_TOOL_HEAP_OPTS": "-Xmx64m"}


def tool(env, *args):
    full = dict(os.environ)
    full.update(env)
    full.pop("EXTRA_ARGS", None)
    return subprocess.run(["sh", os.path.join(FILES, "kafka-tool.sh")] + list(args),
                          capture_output=True, text=True, env=full, timeout=30)


def test_tool_uses_the_images_scripts_when_present(tmp_path):
    env = fake_home(tmp_path, scripts=True)
    assert tool(env, "flavour").stdout.strip() == "scripts"
    out = tool(env, "server", "/c/server.properties").stdout
    assert out.startswith("kafka-server-start.sh HEAP=-Xmx1g")
    assert "log4j.properties" in out and "EXTRA=-name kafkaServer" in out, out
    assert out.rstrip().endswith("ARGS=/c/server.properties")
    out = tool(env, "topics", "--list").stdout
    assert out.startswith("kafka-topics.sh HEAP=-Xmx64m") and "tools-log4j.properties" in out, out


def test_tool_falls_back_to_java_with_the_jars(tmp_path):
    env = fake_home(tmp_path, scripts=False)
    assert tool(env, "flavour").stdout.strip() == "java"
    out = tool(env, "server", "/c/server.properties").stdout
    assert out.startswith("java ") and "-Xmx1g" in out and "-XX:+UseG1GC" in out, out
    assert "-cp %s/libs/* kafka.Kafka /c/server.properties" % env["KAFKA_HOME"] in out, out
    out = tool(env, "storage", "format", "-t", "X").stdout
    assert "-Xmx64m" in out and "kafka.tools.StorageTool format -t X" in out, out
    out = tool(env, "topics", "--list").stdout
    assert "org.apache.kafka.tools.TopicCommand --list" in out, out
    out = tool(env, "configs", "--describe").stdout
    assert "kafka.admin.ConfigCommand --describe" in out, out


def test_tool_says_when_the_image_has_neither(tmp_path):
    env = {"KAFKA_HOME": str(tmp_path / "nothing"), "PATH": "/usr/bin:/bin"}
    res = tool(env, "topics", "--list")
    assert res.returncode == 127 and "neither" in res.stderr


FAKE_TOPICS_TOOL = r"""#!/bin/sh
# Stand-in for kafka-tool.sh in the topics Job: a tiny topic store in $STORE
# (one "name partitions rf configs" line per topic); prints describe output like Kafka's.
echo "$*" >> "$CALLS"
tab=$(printf '\t')
get() { echo "$*" | sed -n "s/.*--$1 \([^ ]*\).*/\1/p"; }
case "$1 $2" in
  "topics --describe")
    while read -r n p r c; do
      printf 'Topic: %s\tTopicId: xyz\tPartitionCount: %s\tReplicationFactor: %s\tConfigs: %s\n' "$n" "$p" "$r" "$c"
      printf '\tTopic: %s\tPartition: 0\tLeader: 0\n' "$n"
    done < "$STORE" ;;
  "topics --create")
    cfg=$(echo "$*" | tr ' ' '\n' | sed -n '/^--config$/{n;p;}' | paste -sd, -)
    echo "$(get topic "$*") $(get partitions "$*") $(get replication-factor "$*") $cfg" >> "$STORE" ;;
  "topics --alter")
    t=$(get topic "$*"); p=$(get partitions "$*")
    awk -v t="$t" -v p="$p" '$1 == t { $2 = p } { print }' "$STORE" > "$STORE.new" && mv "$STORE.new" "$STORE" ;;
esac
"""


def run_topics(tmp_path, listing, store):
    (tmp_path / "tool.sh").write_text(FAKE_TOPICS_TOOL)
    (tmp_path / "topics.list").write_text(listing)
    (tmp_path / "store").write_text(store)
    (tmp_path / "calls").write_text("")
    env = {"KAFKA_BOOTSTRAP": "b:9092", "KAFKA_TOOL": str(tmp_path / "tool.sh"),
           "TOPICS_LIST": str(tmp_path / "topics.list"), "RETRY_SECONDS": "0",
           "TMPDIR": str(tmp_path), "STORE": str(tmp_path / "store"),
           "CALLS": str(tmp_path / "calls")}
    res = sh(os.path.join(FILES, "topics.sh"), env, timeout=60)
    calls = [c for c in (tmp_path / "calls").read_text().splitlines() if c != "flavour"]
    return res, calls


def test_topics_script_creates_missing_topics(tmp_path):
    listing = "upmon.events.v1 6 3 retention.ms=604800000\nupmon.events.dlq 3 3\n"
    res, calls = run_topics(tmp_path, listing, "")
    assert res.returncode == 0, res.stderr
    assert ("topics --create --if-not-exists --topic upmon.events.v1 --partitions 6 "
            "--replication-factor 3 --config retention.ms=604800000 --bootstrap-server b:9092") in calls
    assert ("topics --create --if-not-exists --topic upmon.events.dlq --partitions 3 "
            "--replication-factor 3 --bootstrap-server b:9092") in calls
    assert calls[-1].startswith("topics --describe"), "a pass that changed things is verified"
    # Idempotent: a second run only describes.
    res, calls = run_topics(tmp_path, listing, (tmp_path / "store").read_text())
    assert res.returncode == 0, res.stderr
    assert calls == ["topics --describe --bootstrap-server b:9092"], calls


def test_topics_script_grows_never_shrinks_and_sets_configs(tmp_path):
    store = ("big 8 3 retention.ms=1,min.insync.replicas=2\n"
             "small 2 3 retention.ms=5\n"
             "same 3 3 cleanup.policy=compact,delete\n")
    listing = ("big 4 3 retention.ms=1\n"
               "small 6 1 retention.ms=7 cleanup.policy=compact,delete\n"
               "same 3 3 cleanup.policy=compact,delete\n")
    res, calls = run_topics(tmp_path, listing, store)
    assert res.returncode == 0, res.stderr
    assert "topics --alter --topic small --partitions 6 --bootstrap-server b:9092" in calls
    assert not [c for c in calls if "--topic big" in c and "--alter" in c], calls
    assert "Kafka cannot decrease partitions" in res.stderr
    assert "small has replication factor 3 and the values ask for 1" in res.stderr
    assert ("configs --alter --entity-type topics --entity-name small --add-config "
            "retention.ms=7,cleanup.policy=[compact,delete] --bootstrap-server b:9092") in calls
    assert not [c for c in calls if "--entity-name big" in c or "--entity-name same" in c], calls


def test_topics_script_retries_until_the_brokers_answer(tmp_path):
    # The first describe fails (brokers still starting); the pass is retried.
    (tmp_path / "tool.sh").write_text(FAKE_TOPICS_TOOL)
    wrapper = tmp_path / "flaky.sh"
    wrapper.write_text('#!/bin/sh\nif [ "$1 $2" = "topics --describe" ] && [ ! -e "%s/once" ]; then\n'
                       '  : > "%s/once"; echo "not yet" >&2; exit 1\nfi\n'
                       'exec sh "%s" "$@"\n' % (tmp_path, tmp_path, tmp_path / "tool.sh"))
    (tmp_path / "topics.list").write_text("a 1 1\n")
    (tmp_path / "store").write_text("")
    (tmp_path / "calls").write_text("")
    env = {"KAFKA_BOOTSTRAP": "b:9092", "KAFKA_TOOL": str(wrapper),
           "TOPICS_LIST": str(tmp_path / "topics.list"), "RETRY_SECONDS": "0",
           "TMPDIR": str(tmp_path), "STORE": str(tmp_path / "store"), "CALLS": str(tmp_path / "calls")}
    res = sh(os.path.join(FILES, "topics.sh"), env)
    assert res.returncode == 0, res.stderr
    assert "attempt 1 did not finish" in res.stderr and "done" in res.stderr
    assert (tmp_path / "store").read_text().split() == ["a", "1", "1"]


# ---- the checks against an installed release (lookup), with lookup stubbed -----------------
# `helm template` cannot look anything up, so a copy of the chart gets the installed objects
# the template would find in place of its `lookup` calls.

STS_LOOKUP = 'lookup "apps/v1" "StatefulSet" .Release.Namespace (include "upmon-kafka.fullname" .)'
SECRET_LOOKUP = 'lookup "v1" "Secret" .Release.Namespace $name'


def chart_with_lookups(tmp_path, sts_replicas=None, secret_id=None):
    copy = tmp_path / "kafka"
    shutil.copytree(CHART, copy)
    for rel, call, stub in (
            ("templates/_validate.tpl", STS_LOOKUP,
             "dict" if sts_replicas is None else '(dict "spec" (dict "replicas" %d))' % sts_replicas),
            ("templates/secret-cluster-id.yaml", SECRET_LOOKUP,
             "dict" if secret_id is None else '(dict "data" (dict "cluster-id" ("%s" | b64enc)))' % secret_id)):
        path = copy / rel
        text = path.read_text()
        assert call in text, "%s: the lookup this test replaces has changed" % rel
        path.write_text(text.replace(call, stub))
    return str(copy)


def test_upgrade_keeps_the_installed_cluster_id(tmp_path):
    chart = chart_with_lookups(tmp_path, secret_id="MkU3OEVBNTcwNTJENDM2Qg")
    for _ in range(3):
        out = helm("template", "t", chart, "-s", "templates/secret-cluster-id.yaml").stdout
        assert base64.b64decode(yaml.safe_load(out)["data"]["cluster-id"]).decode() == "MkU3OEVBNTcwNTJENDM2Qg"
    helm("template", "t", chart, "--set", "kafka.clusterId=MkU3OEVBNTcwNTJENDM2Qg")
    res = helm("template", "t", chart, "--set", "kafka.clusterId=AAAAAAAAAAAAAAAAAAAAAQ", check=False)
    assert res.returncode != 0 and "kafka.clusterId=AAAAAAAAAAAAAAAAAAAAAQ" in res.stderr, res.stderr
    assert "INCONSISTENT_CLUSTER_ID" in res.stderr


@pytest.mark.parametrize("installed, wanted, ok", [(3, 3, True), (3, 1, False), (1, 3, False),
                                                   (0, 3, True)])
def test_upgrade_refuses_another_node_count(tmp_path, installed, wanted, ok):
    chart = chart_with_lookups(tmp_path, sts_replicas=installed)
    res = helm("template", "t", chart, "--set", "replicas=%d" % wanted, check=False)
    if ok:
        assert res.returncode == 0, res.stderr
    else:
        assert res.returncode != 0 and "replicas: the installed cluster has %d nodes" % installed in res.stderr, res.stderr
