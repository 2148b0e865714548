"""The layout of a ci/kube state folder, its certificates and kubeconfigs, and the control
plane: etcd and kube-apiserver.

Without --node the API server listens on 127.0.0.1 and nothing reconciles (the Lease tests
need no more). With --node it listens on the node address, which pods reach through the
`kubernetes` Service, and the node's components get their own client certificates."""

import json
import os
import shutil
import ssl
import time
import urllib.error
import urllib.request

from . import build
from .util import (KubeError, env_int, owned_pid, report_failure, run, say, spawn,
                   write_file)

DEFAULT_PORTS = {"etcd": 2479, "etcd_peer": 2480, "api": 6443}
SERVER_PORTS = {"etcd": ("etcd", "etcd_peer"), "apiserver": ("api",)}

SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_API_IP = "10.96.0.1"
ADMIN_USER = "upmon-admin"

# The node (one per machine): its address sits alone (/32) on a bridge of its own, since
# the kubelet refuses a loopback node address; pods get 10.244.0.0/24 on the CNI bridge.
NODE_NAME = "upmon-node"
NODE_IP = "10.245.0.1"
NODE_DEVICE = "upmon-node0"
CNI_BRIDGE = "upmon-cni0"
POD_CIDR = "10.244.0.0/24"
CLUSTER_DNS = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
# Fixed: a second node would fight over them anyway (and over iptables).
NODE_PORTS = {"kubelet": 10250, "kubelet_healthz": 10248, "controller_manager": 10257,
              "scheduler": 10259, "proxy_healthz": 10256, "proxy_metrics": 10249}

READY_TIMEOUT = {"etcd": 60, "apiserver": 180}

# Client identities of the node's components: (file name, subject). The groups and users
# are the ones Kubernetes' default RBAC and the Node authorizer bind.
NODE_CLIENTS = (
    ("kubelet", "/O=system:nodes/CN=system:node:" + NODE_NAME),
    ("controller-manager", "/CN=system:kube-controller-manager"),
    ("scheduler", "/CN=system:kube-scheduler"),
    ("proxy", "/CN=system:kube-proxy"),
    ("provisioner", "/O=system:masters/CN=upmon-local-provisioner"),
    # The API server's identity towards the kubelet (logs, exec, port-forward).
    ("apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client"),
)


def state_dir_from(args):
    d = (args.state or os.environ.get("UPMON_KUBE_STATE_DIR")
         or os.path.join(build.ROOT, ".state-kube"))
    return os.path.abspath(d)


def load_layout(state):
    path = os.path.join(state, "kube.json")
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise KubeError("cannot read %s: %s" % (path, e))


def build_layout(args, state, stored):
    sp = (stored or {}).get("ports", {})
    offset = getattr(args, "port_offset", None)
    if offset is None:
        offset = env_int("UPMON_KUBE_PORT_OFFSET")
    if offset is None:
        offset = (stored or {}).get("port_offset", 0)
    ports = {}
    for key, default in DEFAULT_PORTS.items():
        val = getattr(args, key + "_port", None)
        if val is None:
            val = env_int("UPMON_KUBE_%s_PORT" % key.upper())
        if val is None and (stored or {}).get("port_offset") == offset:
            val = sp.get(key)
        if val is None:
            val = default + offset
        if not 1024 <= val <= 65535:
            raise KubeError("%s port %d out of range [1024, 65535]" % (key, val))
        ports[key] = val
    if len(set(ports.values())) != len(ports):
        raise KubeError("ports must differ: %s" % ports)
    node = getattr(args, "node", None)
    if node is None:
        node = bool((stored or {}).get("node"))
    pki = os.path.join(state, "pki")
    names = ["etcd", "apiserver"]
    if node:
        names += ["containerd", "controller-manager", "scheduler", "kubelet", "kube-proxy",
                  "provisioner"]
    return {
        "state": state,
        "port_offset": offset,
        "ports": ports,
        "node": node,
        "version": build.kube_version(),
        "pki": pki,
        "kubeconfig": os.path.join(state, "admin.kubeconfig"),
        "servers": [{"name": n, "dir": os.path.join(state, n),
                     "pidfile": os.path.join(state, n, "pid")} for n in names],
    }


def server(layout, name):
    return next(s for s in layout["servers"] if s["name"] == name)


def api_host(layout):
    return NODE_IP if layout.get("node") else "127.0.0.1"


def api_url(layout):
    return "https://%s:%d" % (api_host(layout), layout["ports"]["api"])


def public_layout(layout):
    out = {k: v for k, v in layout.items() if k != "servers"}
    out["servers"] = [{k: v for k, v in s.items() if not k.startswith("_")}
                      for s in layout["servers"]]
    return out


# --------------------------------------------------------------------------
# certificates


def openssl(*args, cwd):
    run(["openssl"] + list(args), cwd=cwd, timeout=60)


def make_cert(pki, name, subj, ext):
    """Key + certificate signed by the CA; ext is an openssl extension section body."""
    extfile = os.path.join(pki, name + ".ext")
    write_file(extfile, "[v3]\n" + ext)
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-out", name + ".key", cwd=pki)
    openssl("req", "-new", "-key", name + ".key", "-subj", subj, "-out", name + ".csr", cwd=pki)
    openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "3650", "-sha256", "-extfile", extfile,
            "-extensions", "v3", "-out", name + ".crt", cwd=pki)
    for suffix in (".csr", ".ext"):
        os.unlink(os.path.join(pki, name + suffix))
    for suffix, mode in ((".key", 0o600), (".crt", 0o644)):
        os.chmod(os.path.join(pki, name + suffix), mode)


CLIENT_EXT = ("basicConstraints=critical,CA:FALSE\n"
              "keyUsage=critical,digitalSignature,keyEncipherment\n"
              "extendedKeyUsage=clientAuth\n")


def ensure_pki(layout):
    """Create the CA, serving, admin and service-account keys once (kept until --wipe);
    the node's client certificates are added when the folder first runs a node."""
    pki = layout["pki"]
    want = ("ca.crt", "ca.key", "apiserver.crt", "apiserver.key", "admin.crt", "admin.key",
            "sa.key", "sa.pub")
    made = False
    if not all(os.path.exists(os.path.join(pki, f)) for f in want):
        shutil.rmtree(pki, ignore_errors=True)
        os.makedirs(pki, mode=0o700)
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-out", "ca.key", cwd=pki)
        openssl("req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=upmon-kube-ca",
                "-days", "3650", "-sha256",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                "-out", "ca.crt", cwd=pki)
        make_cert(pki, "apiserver", "/CN=kube-apiserver",
                  "basicConstraints=critical,CA:FALSE\n"
                  "keyUsage=critical,digitalSignature,keyEncipherment\n"
                  "extendedKeyUsage=serverAuth\n"
                  "subjectAltName=IP:127.0.0.1,IP:%s,IP:%s,DNS:localhost,DNS:kubernetes,"
                  "DNS:kubernetes.default,DNS:kubernetes.default.svc,"
                  "DNS:kubernetes.default.svc.cluster.local\n" % (SERVICE_API_IP, NODE_IP))
        # O=system:masters is the group RBAC binds to cluster-admin out of the box.
        make_cert(pki, "admin", "/O=system:masters/CN=%s" % ADMIN_USER, CLIENT_EXT)
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                "-out", "sa.key", cwd=pki)
        openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
        for f in ("ca.key", "sa.key"):
            os.chmod(os.path.join(pki, f), 0o600)
        made = True
    if layout.get("node"):
        for name, subj in NODE_CLIENTS:
            if not os.path.exists(os.path.join(pki, name + ".crt")):
                make_cert(pki, name, subj, CLIENT_EXT)
                made = True
    if made:
        say("certificates       made in %s" % pki)
    return made


def kubeconfig_text(layout, user, cert, key):
    pki = layout["pki"]
    return """apiVersion: v1
kind: Config
clusters:
- name: upmon-kube
  cluster:
    server: %(server)s
    certificate-authority: %(pki)s/ca.crt
users:
- name: %(user)s
  user:
    client-certificate: %(cert)s
    client-key: %(key)s
contexts:
- name: upmon-kube
  context:
    cluster: upmon-kube
    user: %(user)s
    namespace: default
current-context: upmon-kube
""" % {"server": api_url(layout), "pki": pki, "user": user, "cert": cert, "key": key}


def component_kubeconfig(layout, name):
    return os.path.join(layout["pki"], name + ".kubeconfig")


def write_kubeconfigs(layout):
    pki = layout["pki"]
    write_file(layout["kubeconfig"],
               kubeconfig_text(layout, ADMIN_USER, os.path.join(pki, "admin.crt"),
                               os.path.join(pki, "admin.key")), 0o600)
    if layout.get("node"):
        for name, subj in NODE_CLIENTS:
            user = subj.rsplit("CN=", 1)[1]
            write_file(component_kubeconfig(layout, name),
                       kubeconfig_text(layout, user, os.path.join(pki, name + ".crt"),
                                       os.path.join(pki, name + ".key")), 0o600)


# --------------------------------------------------------------------------
# health


def admin_context(layout):
    pki = layout["pki"]
    ctx = ssl.create_default_context(cafile=os.path.join(pki, "ca.crt"))
    ctx.load_cert_chain(os.path.join(pki, "admin.crt"), os.path.join(pki, "admin.key"))
    return ctx


def api_get(layout, path, timeout=5.0):
    req = urllib.request.Request(api_url(layout) + path)
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=admin_context(layout)) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def etcd_healthy(layout):
    url = "http://127.0.0.1:%d/health" % layout["ports"]["etcd"]
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return json.loads(resp.read().decode()).get("health") == "true"
    except (OSError, ValueError, urllib.error.URLError):
        return False


def apiserver_healthy(layout):
    try:
        status, _ = api_get(layout, "/readyz", timeout=5)
    except (OSError, urllib.error.URLError, ssl.SSLError):
        return False
    return status == 200


def wait_ready(layout, srv, healthy, timeout, why_extra=None):
    """Poll until the server's process is ours and healthy; fail with its log's tail."""
    deadline = time.monotonic() + timeout
    while True:
        pid = owned_pid(srv)
        if pid is not None and healthy(layout):
            return pid
        proc = srv.get("_launcher")
        if proc is not None and proc.poll() is not None:
            raise KubeError(report_failure(srv, "process exited with status %s"
                                           % proc.returncode))
        if time.monotonic() > deadline:
            why = "no answer within %ds" % timeout
            if why_extra is not None and pid is not None:
                why += why_extra(layout)
            raise KubeError(report_failure(srv, why))
        time.sleep(0.25)


def apiserver_why(layout):
    try:
        status, body = api_get(layout, "/readyz?verbose", timeout=5)
        return "; /readyz -> %d:\n%s" % (status, body.strip()[-2000:])
    except (OSError, urllib.error.URLError, ssl.SSLError) as e:
        return "; /readyz: %s" % e


# --------------------------------------------------------------------------
# start


def start_etcd(layout, srv):
    p = layout["ports"]
    client = "http://127.0.0.1:%d" % p["etcd"]
    peer = "http://127.0.0.1:%d" % p["etcd_peer"]
    spawn(srv, ["etcd", "--name", "upmon-kube",
                "--data-dir", os.path.join(srv["dir"], "data"),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", "upmon-kube=" + peer,
                "--initial-cluster-state", "new", "--initial-cluster-token", "upmon-kube",
                # Test data: a smaller backend quota and compaction keep the folder small.
                "--quota-backend-bytes", str(1 << 30),
                "--auto-compaction-mode", "periodic", "--auto-compaction-retention", "5m",
                "--log-level", "warn", "--logger", "zap"])


def start_apiserver(layout, srv):
    p = layout["ports"]
    pki = layout["pki"]
    k = lambda f: os.path.join(pki, f)  # noqa: E731
    argv = [
        build.apiserver_bin(),
        "--etcd-servers=http://127.0.0.1:%d" % p["etcd"],
        "--etcd-prefix=/registry",
        "--bind-address=" + api_host(layout),
        "--advertise-address=" + api_host(layout),
        "--secure-port=%d" % p["api"],
        "--cert-dir=" + os.path.join(srv["dir"], "certs"),
        "--tls-cert-file=" + k("apiserver.crt"),
        "--tls-private-key-file=" + k("apiserver.key"),
        "--client-ca-file=" + k("ca.crt"),
        "--anonymous-auth=false",
        "--authorization-mode=Node,RBAC",
        "--service-account-issuer=" + SA_ISSUER,
        "--service-account-key-file=" + k("sa.pub"),
        "--service-account-signing-key-file=" + k("sa.key"),
        "--api-audiences=" + SA_ISSUER,
        "--service-cluster-ip-range=" + SERVICE_CIDR,
        "--allow-privileged=false",
        "--profiling=false",
        "--v=1",
    ]
    if layout.get("node"):
        argv += [
            # The node address is a real (bridge) address: the `kubernetes` Service's
            # endpoint is reconciled to it, so pods reach the API server by the Service.
            "--endpoint-reconciler-type=lease",
            "--kubelet-client-certificate=" + k("apiserver-kubelet-client.crt"),
            "--kubelet-client-key=" + k("apiserver-kubelet-client.key"),
            "--kubelet-preferred-address-types=InternalIP",
            # The default admission chain (PodSecurity, quotas, default StorageClass,
            # webhooks...) as a user's cluster has it; NodeRestriction on top.
            "--enable-admission-plugins=NodeRestriction",
        ]
    else:
        argv += [
            # Loopback is not a valid endpoint address for the `kubernetes` Service, and no
            # pod here would use it: do not reconcile it.
            "--endpoint-reconciler-type=none",
            # Only what the tests use; webhooks would call out to Services that cannot exist.
            # PodSecurity needs nothing outside the server, and the chart tests check the
            # restricted profile with it.
            "--enable-admission-plugins=NamespaceLifecycle,ServiceAccount,NodeRestriction,"
            "PodSecurity",
            "--disable-admission-plugins=MutatingAdmissionWebhook,ValidatingAdmissionWebhook,"
            "ValidatingAdmissionPolicy,ResourceQuota,LimitRanger,"
            "DefaultStorageClass,DefaultIngressClass,StorageObjectInUseProtection,"
            "PersistentVolumeClaimResize",
        ]
    spawn(srv, argv)


def kubectl(layout, *args, timeout=120, check=True, input=None):
    env = dict(os.environ)
    env["KUBECONFIG"] = layout["kubeconfig"]
    return run([build.kubectl_bin()] + list(args), timeout=timeout, check=check, env=env,
               input=input)


def install_crds(layout):
    d = build.crd_dir()
    for name in build.CRD_FILES:
        # Server-side apply: these CRDs are larger than the client-side
        # last-applied annotation may be.
        kubectl(layout, "apply", "--server-side", "--force-conflicts", "-f",
                os.path.join(d, name))
    kubectl(layout, "wait", "--for=condition=Established", "--timeout=60s",
            *["crd/" + n for n in build.CRD_NAMES], timeout=90)
    say("CRDs               %s established (prometheus-operator %s)"
        % (", ".join(build.CRD_NAMES), build.PROM_OPERATOR_VERSION))
