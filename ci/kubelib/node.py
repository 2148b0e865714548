"""The node's processes: containerd (with runc and the CNI plugins from Debian),
kube-controller-manager, kube-scheduler, the kubelet and kube-proxy, plus stopping them so
that no container, mount or cgroup is left behind.

Settings forced by this kind of machine (see the team's kube-node notes): no
CAP_SYS_RESOURCE (containerd must not set a negative oom_score_adj; the kubelet's own
attempt only logs), a 20000 open-files limit, cgroup v1 with the cgroupfs driver, and a
node address that is not loopback."""

import os
import signal
import socket
import ssl
import time
import urllib.request

from . import build, net, plane
from .util import alive, processes_mentioning, run, say, spawn, write_file

PAUSE_IMAGE = "localhost/upmon/pause:3.10"

def socket_path(state):
    """containerd's socket. `up --node` keeps state folders short (cli.STATE_MAX), so the
    path fits a unix socket."""
    return os.path.join(state, "containerd", "containerd.sock")


def containerd_paths(layout):
    d = plane.server(layout, "containerd")["dir"]
    return {"dir": d, "sock": socket_path(layout["state"]), "root": os.path.join(d, "root"),
            "state": os.path.join(d, "run"), "config": os.path.join(d, "config.toml")}


def start_containerd(layout, srv):
    p = containerd_paths(layout)
    cni = net.cni_dirs(layout)
    write_file(p["config"], """version = 2
root = "%(root)s"
state = "%(state)s"
oom_score = 0

[grpc]
  address = "%(sock)s"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "%(pause)s"
  # This machine grants no CAP_SYS_RESOURCE: never try a lower oom_score_adj than ours.
  restrict_oom_score_adj = true
  enable_selinux = false
  # Pod network namespaces under our own state folder, not the machine-wide /run/netns:
  # `down` unmounts them with everything else of ours even when containerd is gone, and
  # a killed node's leftovers never mix with another node's.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "%(cniconf)s"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
""" % {"root": p["root"], "state": p["state"], "sock": p["sock"], "pause": PAUSE_IMAGE,
       "cniconf": cni["conf"]})
    spawn(srv, ["containerd", "--config", p["config"], "--log-level", "warn"])

def containerd_healthy(layout):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(containerd_paths(layout)["sock"])
        return True
    except OSError:
        return False
    finally:
        s.close()

def crictl(layout, *args, timeout=120, check=True):
    sock = "unix://" + containerd_paths(layout)["sock"]
    return run([build.crictl_bin(), "--runtime-endpoint", sock, "--image-endpoint", sock,
                "--timeout", "30s"] + list(args), timeout=timeout, check=check)

def delegated_auth(layout, name):
    kc = plane.component_kubeconfig(layout, name)
    return ["--kubeconfig=" + kc, "--authentication-kubeconfig=" + kc,
            "--authorization-kubeconfig=" + kc]

def start_controller_manager(layout, srv):
    pki = layout["pki"]
    spawn(srv, [build.kube_bin("kube-controller-manager")]
          + delegated_auth(layout, "controller-manager") + [
        "--bind-address=127.0.0.1",
        "--secure-port=%d" % plane.NODE_PORTS["controller_manager"],
        "--cert-dir=" + os.path.join(srv["dir"], "certs"),
        "--service-account-private-key-file=" + os.path.join(pki, "sa.key"),
        "--root-ca-file=" + os.path.join(pki, "ca.crt"),
        "--use-service-account-credentials=true",
        "--cluster-name=upmon",
        "--service-cluster-ip-range=" + plane.SERVICE_CIDR,
        "--cluster-signing-cert-file=" + os.path.join(pki, "ca.crt"),
        "--cluster-signing-key-file=" + os.path.join(pki, "ca.key"),
        # One instance: no election to wait for after a restart.
        "--leader-elect=false",
        "--profiling=false",
        "--v=1",
    ])

def start_scheduler(layout, srv):
    spawn(srv, [build.kube_bin("kube-scheduler")] + delegated_auth(layout, "scheduler") + [
        "--bind-address=127.0.0.1",
        "--secure-port=%d" % plane.NODE_PORTS["scheduler"],
        "--cert-dir=" + os.path.join(srv["dir"], "certs"),
        "--leader-elect=false",
        "--profiling=false",
        "--v=1",
    ])

def kubelet_dirs(layout):
    d = plane.server(layout, "kubelet")["dir"]
    return {"dir": d, "root": os.path.join(d, "root"), "logs": os.path.join(d, "pod-logs"),
            "config": os.path.join(d, "config.yaml"), "certs": os.path.join(d, "certs")}

def start_kubelet(layout, srv):
    k = kubelet_dirs(layout)
    for key in ("root", "logs", "certs"):
        os.makedirs(k[key], exist_ok=True)
    write_file(k["config"], """apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %(ip)s
port: %(port)d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %(hport)d
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %(ca)s}
authorization:
  mode: Webhook
containerRuntimeEndpoint: unix://%(sock)s
cgroupDriver: cgroupfs
# cgroup v1 (hybrid) here; supported but deprecated from 1.31 on.
failCgroupV1: false
failSwapOn: false
# The machine's hard limit; the kubelet's default (1000000) cannot be set.
maxOpenFiles: 20000
clusterDNS: [%(dns)s]
clusterDomain: %(domain)s
podLogsDir: %(logs)s
serializeImagePulls: false
# Nothing can be pulled again here: never garbage-collect images.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "200Mi"
  nodefs.available: "2%%"
  imagefs.available: "2%%"
  nodefs.inodesFree: "2%%"
evictionPressureTransitionPeriod: 30s
nodeStatusUpdateFrequency: 5s
shutdownGracePeriod: 0s
""" % {"ip": plane.NODE_IP, "port": plane.NODE_PORTS["kubelet"],
       "hport": plane.NODE_PORTS["kubelet_healthz"],
       "ca": os.path.join(layout["pki"], "ca.crt"), "sock": containerd_paths(layout)["sock"],
       "dns": plane.CLUSTER_DNS, "domain": plane.CLUSTER_DOMAIN, "logs": k["logs"]})
    spawn(srv, [build.kube_bin("kubelet"),
                "--config=" + k["config"],
                "--kubeconfig=" + plane.component_kubeconfig(layout, "kubelet"),
                "--root-dir=" + k["root"],
                "--cert-dir=" + k["certs"],
                "--node-ip=" + plane.NODE_IP,
                "--hostname-override=" + plane.NODE_NAME,
                "--v=1"])

def start_proxy(layout, srv):
    cfg = os.path.join(srv["dir"], "config.yaml")
    write_file(cfg, """apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: %(kc)s
mode: iptables
clusterCIDR: %(pods)s
hostnameOverride: %(node)s
healthzBindAddress: 127.0.0.1:%(hport)d
metricsBindAddress: 127.0.0.1:%(mport)d
nodePortAddresses: ["%(ip)s/32"]
# No sysctl writes: this machine refuses some, and the defaults serve a test node.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
""" % {"kc": plane.component_kubeconfig(layout, "proxy"), "pods": plane.POD_CIDR,
       "node": plane.NODE_NAME, "hport": plane.NODE_PORTS["proxy_healthz"],
       "mport": plane.NODE_PORTS["proxy_metrics"], "ip": plane.NODE_IP})
    spawn(srv, [build.kube_bin("kube-proxy"), "--config=" + cfg, "--v=1"])

def start_provisioner(layout, srv):
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spawn(srv, ["python3", "-u", "-m", "kubelib.provisioner", "--state", layout["state"],
                "--heartbeat", os.path.join(srv["dir"], "heartbeat")],
          env=dict(os.environ, PYTHONPATH=here))

def http_ok(url, insecure=False):
    ctx = None
    if insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=3, context=ctx) as resp:
            return resp.status == 200
    except (OSError, ValueError):
        return False

def provisioner_healthy(layout):
    # It writes a heartbeat after every successful list of claims and volumes.
    path = os.path.join(plane.server(layout, "provisioner")["dir"], "heartbeat")
    try:
        return time.time() - os.path.getmtime(path) < 60
    except OSError:
        return False

HEALTH = {
    "containerd": containerd_healthy,
    "controller-manager": lambda layout: http_ok(
        "https://127.0.0.1:%d/healthz" % plane.NODE_PORTS["controller_manager"], True),
    "scheduler": lambda layout: http_ok(
        "https://127.0.0.1:%d/healthz" % plane.NODE_PORTS["scheduler"], True),
    "kubelet": lambda layout: http_ok(
        "http://127.0.0.1:%d/healthz" % plane.NODE_PORTS["kubelet_healthz"]),
    "kube-proxy": lambda layout: http_ok(
        "http://127.0.0.1:%d/livez" % plane.NODE_PORTS["proxy_healthz"]),
    "provisioner": provisioner_healthy,
}

STARTERS = {
    "containerd": start_containerd,
    "controller-manager": start_controller_manager,
    "scheduler": start_scheduler,
    "kubelet": start_kubelet,
    "kube-proxy": start_proxy,
    "provisioner": start_provisioner,
}

READY_TIMEOUT = {"containerd": 60, "controller-manager": 120, "scheduler": 120,
                 "kubelet": 120, "kube-proxy": 120, "provisioner": 60}

# --------------------------------------------------------------------------
# stopping

def stop_pods(layout):
    """Stop and remove every pod sandbox through CRI, so their network namespaces, veths,
    IP leases and mounts are released the way the kubelet would release them. The kubelet
    must already be stopped (it would start them again); on the next `up` it recreates
    the pods the API server still has."""
    if not containerd_healthy(layout):
        return 0
    res = crictl(layout, "pods", "-q", check=False)
    ids = res.stdout.split() if res.returncode == 0 else []
    for pid in ids:
        crictl(layout, "stopp", pid, check=False, timeout=90)
        crictl(layout, "rmp", "--force", pid, check=False, timeout=90)
    if ids:
        say("pods               stopped and removed %d pod sandboxes" % len(ids))
    return len(ids)

def kubepods_cgroups():
    """Every cgroup folder the kubelet made (kubepods*), deepest first."""
    found = []
    base = "/sys/fs/cgroup"
    try:
        controllers = os.listdir(base)
    except OSError:
        return found
    for c in controllers:
        root = os.path.join(base, c, "kubepods")
        if os.path.isdir(root):
            for dirpath, _dirs, _files in os.walk(root):
                found.append(dirpath)
    found.sort(key=lambda p: p.count("/"), reverse=True)
    return found

def kill_pod_processes():
    """Safety net: SIGKILL anything still in a kubepods cgroup."""
    pids = set()
    for d in kubepods_cgroups():
        try:
            with open(os.path.join(d, "cgroup.procs")) as f:
                pids.update(int(x) for x in f.read().split())
        except (OSError, ValueError):
            pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(pids)

def remove_cgroups():
    for _ in range(20):
        left = []
        for d in kubepods_cgroups():
            try:
                os.rmdir(d)
            except OSError:
                left.append(d)
        if not left:
            return []
        time.sleep(0.25)
    return left

def mounts_under(path):
    out = []
    prefix = path.rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp.startswith(prefix) or mp == path:
                out.append(mp)
    out.sort(key=lambda p: p.count("/"), reverse=True)
    return out

def unmount_under(path):
    for mp in mounts_under(path):
        if run(["umount", mp], check=False).returncode != 0:
            run(["umount", "-l", mp], check=False)
    return mounts_under(path)

def remove_log_links(layout):
    """/var/log/containers holds the kubelet's symlinks to our pods' logs."""
    d = "/var/log/containers"
    try:
        names = os.listdir(d)
    except OSError:
        return
    target = kubelet_dirs(layout)["logs"] + "/"
    for n in names:
        p = os.path.join(d, n)
        try:
            if os.path.islink(p) and os.readlink(p).startswith(target):
                os.unlink(p)
        except OSError:
            pass

def kill_leftovers(state):
    """containerd-shim processes outlive containerd by design; ours name our folder."""
    for pid, _cmd in processes_mentioning(state):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = [p for p, _ in processes_mentioning(state) if alive(p)]
        if not left:
            return []
        time.sleep(0.2)
    return processes_mentioning(state)


