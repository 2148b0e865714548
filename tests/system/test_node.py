"""The real single-node Kubernetes cluster (`ci/kube up --node`) and upmon's images on it.

The module starts its own node in <repo>/.state-kube-node-test (or uses the one named by
UPMON_KUBE_NODE_STATE_DIR, left running), builds the images that changed (ci/images,
cached by content) and loads them into the node's containerd. The last test stops the
node with `down --wipe` and checks that no process, mount, iptables chain, bridge or
listening port is left: it must stay last in this file.
"""

import json
import os
import re
import subprocess
import time
import urllib.request

import pytest

from kubeplane import KubePlane, parse_env, run_kube, start_node, stop_node, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGES = os.path.join(ROOT, "ci", "images")
VERSION = "0.1.0"
BASE = "docker.io/library/debian:bookworm-slim"
# Services that run as servers (the schema tool is a one-shot job, tested as one).
SERVERS = {"simulator": 9301, "ingest": 9302, "analyzer": 9303, "elect": 8080}
SERVICES = sorted(list(SERVERS) + ["schema"])
NODE_IP = "10.245.0.1"
NODE_PORTS = (6443 + 200, 2479 + 200, 2480 + 200, 10250, 10248, 10257, 10259, 10256, 10249)


def image(svc):
    return "upmon-%s:%s" % (svc, VERSION)


@pytest.fixture(scope="module")
def node():
    plane = start_node(["base"] + ["upmon-" + s for s in SERVICES],
                       lambda msg: pytest.fail(msg, pytrace=False))
    yield plane
    stop_node(plane)


def apply(node, text):
    node.kubectl("apply", "-f", "-", input=text, timeout=120)


def ready_pods(node, ns, selector):
    out = node.kubectl("get", "pods", "-n", ns, "-l", selector, "-o", "json").stdout
    pods = []
    for p in json.loads(out)["items"]:
        if p["metadata"].get("deletionTimestamp"):
            continue
        conds = {c["type"]: c["status"] for c in p.get("status", {}).get("conditions", [])}
        if conds.get("Ready") == "True":
            pods.append(p)
    return pods


def wait_ready(node, ns, selector, count=1, timeout=180):
    def check():
        pods = ready_pods(node, ns, selector)
        return pods if len(pods) >= count else None
    try:
        return wait_for("%d ready pod(s) %s in %s" % (count, selector, ns), check, timeout, 1)
    except AssertionError:
        desc = node.kubectl("describe", "pods", "-n", ns, "-l", selector, check=False).stdout
        events = node.kubectl("get", "events", "-n", ns, check=False).stdout
        raise AssertionError("pods %s in %s not ready:\n%s\n%s"
                             % (selector, ns, desc[-3000:], events[-2000:]))


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.status, resp.read().decode(errors="replace")


def pod_shell(node, ns, name, script, timeout=120):
    """A one-shot pod of the base image running a bash script; returns (phase, log)."""
    apply(node, json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"restartPolicy": "Never",
                 "securityContext": {"runAsNonRoot": True, "runAsUser": 10001,
                                     "seccompProfile": {"type": "RuntimeDefault"}},
                 "containers": [{"name": "sh", "image": BASE, "imagePullPolicy": "Never",
                                 "command": ["bash", "-c", script],
                                 "securityContext": {"allowPrivilegeEscalation": False,
                                                     "capabilities": {"drop": ["ALL"]}}}]}}))

    def done():
        out = node.kubectl("get", "pod", name, "-n", ns, "-o",
                           "jsonpath={.status.phase}").stdout
        return out if out in ("Succeeded", "Failed") else None
    phase = wait_for("pod %s/%s finished" % (ns, name), done, timeout, 1)
    log = node.kubectl("logs", name, "-n", ns).stdout
    return phase, log


# --------------------------------------------------------------------------


def test_node_ready_dns_and_storage_class(node):
    st = run_kube("status", state=node.state, env=node.run_env, timeout=60)
    assert st.returncode == 0, "ci/kube status:\n%s%s" % (st.stdout, st.stderr)
    for comp in ("containerd", "kubelet", "kube-proxy", "controller-manager", "scheduler",
                 "provisioner", "node", "cluster-dns"):
        assert any(line.startswith(comp) and line.endswith("healthy")
                   for line in st.stdout.splitlines()), "%s not healthy:\n%s" % (comp, st.stdout)
    n = json.loads(node.kubectl("get", "node", "upmon-node", "-o", "json").stdout)
    addrs = {a["type"]: a["address"] for a in n["status"]["addresses"]}
    assert addrs.get("InternalIP") == NODE_IP, addrs
    assert n["status"]["nodeInfo"]["kubeletVersion"] == "v1.32.13"
    sc = node.kubectl("get", "storageclass", "-o", "json").stdout
    default = [c["metadata"]["name"] for c in json.loads(sc)["items"]
               if c["metadata"].get("annotations", {})
               .get("storageclass.kubernetes.io/is-default-class") == "true"]
    assert default == ["upmon-local"], default
    # CoreDNS runs in a pod: its network namespace is mounted under the node's own state
    # folder, never in the machine-wide /run/netns where a killed node's would linger.
    with open("/proc/self/mountinfo") as f:
        nsfs = [line.split()[4] for line in f if " nsfs " in line]
    ours = [m for m in nsfs if m.startswith(node.state)]
    assert ours, nsfs
    assert not [m for m in nsfs if m.startswith("/run/netns/cni-")], nsfs


def test_up_twice_is_harmless(node):
    up = run_kube("up", "--node", state=node.state, env=node.run_env, timeout=600)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "already running" in up.stdout and "started (pid" not in up.stdout, up.stdout


def test_second_node_elsewhere_is_refused(node, tmp_path):
    env = dict(node.run_env, UPMON_KUBE_PORT_OFFSET="300")
    res = run_kube("up", "--node", state=str(tmp_path / "other"), env=env, timeout=120)
    assert res.returncode != 0
    assert "already runs from %s" % node.state in res.stderr, res.stderr


def test_service_by_dns_name_from_another_pod_and_pod_recreated(node):
    ns = node.namespace("node-svc")
    apply(node, """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: %(ns)s}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: simulator
        image: %(image)s
        imagePullPolicy: Never
        env:
        - {name: UPMON_KAFKA_BROKERS, value: "kafka.invalid:9092"}
        - {name: UPMON_CLICKHOUSE_URLS, value: "http://clickhouse.invalid:8123"}
        - {name: UPMON_INGEST_SHARDS, value: "http://clickhouse.invalid:8123"}
        ports: [{containerPort: 9301, name: http}]
        readinessProbe:
          httpGet: {path: /healthz, port: http}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: %(ns)s}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
""" % {"ns": ns, "image": image("simulator")})
    first = wait_ready(node, ns, "app=web")[0]["metadata"]["name"]
    script = ("exec 3<>/dev/tcp/web.%s.svc.cluster.local/80 && "
              "printf 'GET /healthz HTTP/1.0\\r\\nHost: web\\r\\n\\r\\n' >&3 && cat <&3" % ns)
    phase, log = pod_shell(node, ns, "client", script)
    assert phase == "Succeeded" and "200" in log.splitlines()[0], (phase, log)

    # A deleted pod comes back (the ReplicaSet) under a new name and is Ready again.
    node.kubectl("delete", "pod", first, "-n", ns, "--wait=false")
    wait_for("a new ready pod replaces %s" % first,
             lambda: [p for p in ready_pods(node, ns, "app=web")
                      if p["metadata"]["name"] != first], 180, 1)
    # ... and the Service follows it.
    node.kubectl("delete", "pod", "client", "-n", ns)
    phase, log = pod_shell(node, ns, "client", script)
    assert phase == "Succeeded" and "200" in log.splitlines()[0], (phase, log)


def test_statefulset_volume_survives_pod_deletion(node):
    ns = node.namespace("node-sts")
    apply(node, """
apiVersion: v1
kind: Service
metadata: {name: data, namespace: %(ns)s}
spec: {clusterIP: None, selector: {app: data}, ports: [{port: 80}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: data, namespace: %(ns)s}
spec:
  serviceName: data
  replicas: 1
  selector: {matchLabels: {app: data}}
  template:
    metadata: {labels: {app: data}}
    spec:
      securityContext: {runAsUser: 10001, runAsNonRoot: true}
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: %(base)s
        imagePullPolicy: Never
        command: [bash, -c, "[ -s /data/id ] || echo $RANDOM$RANDOM-$HOSTNAME > /data/id; exec sleep infinity"]
        readinessProbe:
          exec: {command: [test, -s, /data/id]}
          periodSeconds: 1
        volumeMounts: [{name: vol, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: vol}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 64Mi}}
""" % {"ns": ns, "base": BASE})
    wait_ready(node, ns, "app=data")
    before = node.kubectl("exec", "-n", ns, "data-0", "--", "cat", "/data/id").stdout.strip()
    assert before.endswith("-data-0"), before
    pvc = json.loads(node.kubectl("get", "pvc", "vol-data-0", "-n", ns, "-o", "json").stdout)
    assert pvc["status"]["phase"] == "Bound" and pvc["spec"]["storageClassName"] == "upmon-local"
    pv = json.loads(node.kubectl("get", "pv", pvc["spec"]["volumeName"], "-o", "json").stdout)
    path = pv["spec"]["local"]["path"]
    assert path.startswith(os.path.join(node.state, "volumes") + "/"), path
    with open(os.path.join(path, "id")) as f:
        assert f.read().strip() == before

    node.kubectl("delete", "pod", "data-0", "-n", ns)
    wait_ready(node, ns, "app=data")
    after = node.kubectl("exec", "-n", ns, "data-0", "--", "cat", "/data/id").stdout.strip()
    assert after == before, "the volume's data changed across the pod's deletion"

    # Deleting the claim (reclaim Delete) removes the volume and its folder.
    node.kubectl("delete", "statefulset", "data", "-n", ns)
    wait_for("data-0 gone", lambda: not node.kubectl(
        "get", "pod", "data-0", "-n", ns, "--ignore-not-found", "-o", "name").stdout, 120, 1)
    node.kubectl("delete", "pvc", "vol-data-0", "-n", ns)
    wait_for("volume folder removed", lambda: not os.path.exists(path), 120, 1)


def test_memory_limit_enforced(node):
    ns = node.namespace("node-mem")
    apply(node, """
apiVersion: v1
kind: Pod
metadata: {name: hog, namespace: %(ns)s}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: %(base)s
    imagePullPolicy: Never
    command: [bash, -c, "cat /sys/fs/cgroup/memory/memory.limit_in_bytes; x=$(head -c 200000000 /dev/zero | tr '\\\\0' a); echo survived ${#x}"]
    resources:
      limits: {memory: 64Mi}
""" % {"ns": ns, "base": BASE})

    def terminated():
        p = json.loads(node.kubectl("get", "pod", "hog", "-n", ns, "-o", "json").stdout)
        for cs in p.get("status", {}).get("containerStatuses", []):
            t = cs.get("state", {}).get("terminated")
            if t:
                return t
        return None
    t = wait_for("the hog terminated", terminated, 120, 1)
    log = node.kubectl("logs", "hog", "-n", ns).stdout
    assert log.splitlines()[0].strip() == str(64 * 1024 * 1024), log
    assert t["reason"] == "OOMKilled" and "survived" not in log, (t, log)


@pytest.mark.parametrize("svc", SERVICES)
def test_image_help_runs_as_non_root(node, svc):
    ns = node.namespace("img-help")
    apply(node, json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "help", "namespace": ns},
        "spec": {"restartPolicy": "Never",
                 "securityContext": {"runAsNonRoot": True,
                                     "seccompProfile": {"type": "RuntimeDefault"}},
                 "containers": [{"name": svc, "image": image(svc), "imagePullPolicy": "Never",
                                 "args": ["--help"],
                                 "securityContext": {"allowPrivilegeEscalation": False,
                                                     "readOnlyRootFilesystem": True,
                                                     "capabilities": {"drop": ["ALL"]}}}]}}))
    phase = wait_for("upmon-%s --help finished" % svc, lambda: node.kubectl(
        "get", "pod", "help", "-n", ns, "-o", "jsonpath={.status.phase}").stdout
        in ("Succeeded", "Failed") and node.kubectl(
        "get", "pod", "help", "-n", ns, "-o", "jsonpath={.status.phase}").stdout, 120, 1)
    log = node.kubectl("logs", "help", "-n", ns).stdout
    assert phase == "Succeeded", (phase, log)
    assert "usage: upmon-%s" % svc in log, log


@pytest.mark.parametrize("svc", sorted(SERVERS))
def test_image_serves_healthz_and_metrics(node, svc):
    ns = node.namespace("img-" + svc)
    port = SERVERS[svc]
    env = [{"name": "UPMON_KAFKA_BROKERS", "value": "kafka.invalid:9092"},
           {"name": "UPMON_CLICKHOUSE_URLS", "value": "http://clickhouse.invalid:8123"},
           {"name": "UPMON_INGEST_SHARDS", "value": "http://clickhouse.invalid:8123"},
           {"name": "UPMON_LEASE_NAMESPACE", "value": ns},
           {"name": "UPMON_LEASE_NAME", "value": "upmon-" + svc},
           {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    sa = node.service_account(ns, svc)
    node.grant_lease(ns, sa, "upmon-" + svc)
    apply(node, json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": svc, "namespace": ns},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": svc}},
                 "template": {
                     "metadata": {"labels": {"app": svc}},
                     "spec": {
                         "serviceAccountName": sa,
                         "securityContext": {"runAsNonRoot": True,
                                             "seccompProfile": {"type": "RuntimeDefault"}},
                         "containers": [{
                             "name": svc, "image": image(svc), "imagePullPolicy": "Never",
                             "env": env, "ports": [{"containerPort": port, "name": "http"}],
                             "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                                               "periodSeconds": 2},
                             "resources": {"limits": {"memory": "64Mi"}},
                             "securityContext": {"allowPrivilegeEscalation": False,
                                                 "readOnlyRootFilesystem": True,
                                                 "capabilities": {"drop": ["ALL"]}}}]}}}}))

    def running():
        out = json.loads(node.kubectl("get", "pods", "-n", ns, "-l", "app=" + svc, "-o",
                                      "json").stdout)["items"]
        return [p for p in out if p["status"].get("podIP")
                and p["status"].get("phase") == "Running"]
    pod = wait_for("upmon-%s running" % svc, running, 180, 1)[0]
    ip = pod["status"]["podIP"]
    status, body = wait_for("upmon-%s /healthz" % svc,
                            lambda: http_get("http://%s:%d/healthz" % (ip, port)), 60, 1)
    assert status == 200, body
    status, metrics = http_get("http://%s:%d/metrics" % (ip, port))
    assert status == 200 and "# TYPE " in metrics, metrics[:500]
    uid = node.kubectl("exec", "-n", ns, pod["metadata"]["name"], "--", "/usr/bin/id",
                       "-u").stdout.strip()
    assert uid == "10001", uid
    if svc == "elect":
        # In-cluster config, the ServiceAccount's token and RBAC: it becomes the leader.
        wait_for("upmon-elect leads through the Service of the API server", lambda: any(
            line.startswith("upmon_leader") and line.rstrip().endswith(" 1")
            for line in http_get("http://%s:%d/metrics" % (ip, port))[1].splitlines()), 60, 1)


def test_runtime_images_hold_no_compiler_or_dev_package(node):
    env = dict(os.environ, CONTAINERS_CONF=os.path.join(
        os.environ.get("UPMON_CACHE") or os.path.expanduser("~/.cache/upmon"), "podman",
        "containers.conf"))
    for svc in SERVICES:
        ref = "docker.io/library/" + image(svc)
        res = subprocess.run(["podman", "run", "--rm", "--network=none", "--entrypoint",
                              "/bin/sh", ref, "-c",
                              "dpkg-query -W -f '${Package}\\n'; echo ---; "
                              "ls /usr/bin /usr/local/bin /bin"],
                             capture_output=True, text=True, env=env, timeout=120)
        assert res.returncode == 0, res.stderr
        pkgs, _, files = res.stdout.partition("---")
        pkgs = pkgs.split()
        files = set(files.split())
        dev = [p for p in pkgs if p.endswith("-dev")]
        # gcc-12-base (runtime support files of libgcc) is no compiler.
        tools = [p for p in pkgs if re.match(r"^(gcc|cpp|g\+\+|clang|binutils|make|cmake|"
                                             r"ninja-build|pkg-config|pkgconf)(-\d+)?$", p)]
        assert not dev and not tools, "%s holds %s" % (ref, dev + tools)
        assert not files & {"cc", "gcc", "c++", "ld", "as", "make", "cmake"}, files
        assert "upmon-" + svc in files
        labels = json.loads(subprocess.run(
            ["podman", "image", "inspect", "--format", "{{json .Config.Labels}}", ref],
            capture_output=True, text=True, env=env).stdout)
        assert labels.get("org.opencontainers.image.version") == VERSION, labels
        assert labels.get("org.opencontainers.image.revision", "unknown") != "unknown", labels
        user = subprocess.run(["podman", "image", "inspect", "--format", "{{.Config.User}}",
                               ref], capture_output=True, text=True, env=env).stdout.strip()
        assert user == "10001:10001", user


def listening(ports):
    out = subprocess.run(["ss", "-Htlnp"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines()
            if any(line.split()[3].endswith(":%d" % p) for p in ports)]


def test_down_wipe_leaves_nothing(node):
    """Must stay last: it stops the module's node."""
    if not node.own:
        pytest.skip("UPMON_KUBE_NODE_STATE_DIR names a node this test must not stop")
    with open(os.path.join(node.state, "net.json")) as f:
        created = json.load(f).get("created_dirs", [])
    down = run_kube("down", "--wipe", state=node.state, env=node.run_env, timeout=600)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not os.path.exists(node.state)
    left = subprocess.run(["pgrep", "-af", node.state], capture_output=True, text=True).stdout
    assert not left.strip(), left
    # By name, what only a node runs (other tests' control planes may still run an
    # apiserver and etcd; ours were matched by their folder above).
    for name in ("containerd", "kubelet", "kube-proxy", "kube-controller-manager",
                 "kube-scheduler", "containerd-shim-runc-v2", "coredns", "pause"):
        res = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True)
        assert res.returncode != 0, "%s still runs: %s" % (name, res.stdout)
    with open("/proc/self/mountinfo") as f:
        mounts = [line for line in f if node.state in line]
    assert not mounts, mounts
    for binary in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            rules = subprocess.run([binary, "-w", "5", "-t", table, "-S"], capture_output=True,
                                   text=True).stdout
            bad = [r for r in rules.splitlines() if "KUBE-" in r or "CNI-" in r]
            assert not bad, "%s -t %s: %s" % (binary, table, bad[:5])
    for dev in ("upmon-node0", "upmon-cni0"):
        assert not os.path.exists("/sys/class/net/" + dev), dev
    veths = subprocess.run(["ip", "-o", "link", "show", "type", "veth"], capture_output=True,
                           text=True).stdout
    assert "upmon-cni0" not in veths, veths
    assert not listening(NODE_PORTS), listening(NODE_PORTS)
    assert not os.path.exists("/run/upmon-kube-node.json")
    # Folders containerd, libcni and the kubelet made outside the state folder.
    assert not [d for d in created if os.path.exists(d)], created
