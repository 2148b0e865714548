"""The ci/kube commands (see ci/kube --help)."""

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time

from . import addons, build, net, node, plane
from .util import (KubeError, ROOT, alive, listening_ports, owned_pid, port_free,
                   processes_mentioning, read_pid, say, stop, write_file)

# One node per machine: two kube-proxies would fight over the same iptables chains and
# two kubelets over the node address. The lock names the state folder that runs it.
NODE_LOCK = "/run/upmon-kube-node.json"
NODE_READY_TIMEOUT = 180
STATE_MAX = 60
DNS_TIMEOUT = 180


def node_owner():
    """The state folder whose node holds the lock, if any of its processes still runs."""
    try:
        with open(NODE_LOCK) as f:
            other = json.load(f).get("state")
    except (OSError, ValueError):
        return None
    if other and processes_mentioning(other):
        return other
    return None


def check_ports(layout):
    busy = []
    for srv in layout["servers"]:
        if owned_pid(srv) is not None:
            continue
        for key in plane.SERVER_PORTS.get(srv["name"], ()):
            host = plane.api_host(layout) if key == "api" else "127.0.0.1"
            if plane.NODE_IP == host and not net.link_exists(plane.NODE_DEVICE):
                host = "127.0.0.1"
            if not port_free(layout["ports"][key], host):
                busy.append("%s %s port %d" % (srv["name"], key, layout["ports"][key]))
    if layout.get("node"):
        taken = listening_ports()
        for key, port in plane.NODE_PORTS.items():
            if port in taken and not any(owned_pid(s) for s in layout["servers"][2:]):
                busy.append("node %s port %d" % (key, port))
    if busy:
        raise KubeError("in use by another process: %s (another ci/kube? give this one "
                        "--port-offset or UPMON_KUBE_PORT_OFFSET)" % ", ".join(busy))


def start_server(layout, srv, starter):
    os.makedirs(srv["dir"], exist_ok=True)
    pid = owned_pid(srv)
    if pid is not None:
        say("%-18s already running (pid %d)" % (srv["name"], pid))
        return False
    if read_pid(srv) is not None:
        say("%-18s stale pid file (pid %d gone); starting anew" % (srv["name"], read_pid(srv)))
        os.unlink(srv["pidfile"])
    starter(layout, srv)
    say("%-18s started (pid %d)" % (srv["name"], read_pid(srv)))
    return True


def bring_up(layout, srv, starter, healthy, timeout, t0, why=None):
    started = start_server(layout, srv, starter)
    pid = plane.wait_ready(layout, srv, healthy, timeout, why)
    if started:
        say("%-18s ready (pid %d, %.1fs)" % (srv["name"], pid, time.monotonic() - t0))


def load_node_images(layout):
    """The pause and CoreDNS images, built (cached) and imported into our containerd."""
    argv = [os.path.join(ROOT, "ci", "images"), "build", "--load", "--kube-state",
            layout["state"], "pause", "coredns"]
    res = subprocess.run(argv)
    if res.returncode != 0:
        raise KubeError("`%s` failed (exit %d)" % (" ".join(argv), res.returncode))


def cmd_up(args):
    state = plane.state_dir_from(args)
    stored = plane.load_layout(state)
    if stored and args.node is False and stored.get("node"):
        args.node = True  # a node folder stays a node folder until --wipe
    layout = plane.build_layout(args, state, stored)
    if stored:
        running = [s["name"] for s in stored["servers"] if owned_pid(s) is not None]
        if running and stored["ports"] != layout["ports"]:
            raise KubeError("the control plane in %s runs on other ports (%s); run "
                            "`ci/kube down` first" % (state, stored["ports"]))
        if running and bool(stored.get("node")) != layout["node"]:
            raise KubeError("%s runs %s; run `ci/kube down` first"
                            % (state, "a node" if stored.get("node") else
                               "a control plane without a node"))
    if layout["node"]:
        other = node_owner()
        if other and other != state:
            raise KubeError("a node of this project already runs from %s (one node per "
                            "machine: its kube-proxy and kubelet own the node address and "
                            "iptables); use that one (UPMON_KUBE_STATE_DIR=%s) or stop it with "
                            "`ci/kube --state %s down`" % (other, other, other))
        # The kubelet and containerd keep unix sockets deep under the state folder
        # (pod-resources, plugin registry), and a socket path has at most 107 bytes.
        if len(state) > STATE_MAX:
            raise KubeError("the state folder %s is too long for a node (%d > %d bytes: the "
                            "kubelet's unix sockets live under it); use a shorter --state"
                            % (state, len(state), STATE_MAX))
        build.build(names=build.ALL_BINARIES)
        build.crictl_bin()
    else:
        build.build(names=build.PLANE_BINARIES)
    os.makedirs(state, exist_ok=True)
    plane.ensure_pki(layout)
    if layout["node"]:
        write_file(NODE_LOCK, json.dumps({"state": state, "pid": os.getpid()}) + "\n")
        net.ensure_node_device(layout)
        net.write_cni(layout)
    plane.write_kubeconfigs(layout)
    write_file(os.path.join(state, "kube.json"),
               json.dumps(plane.public_layout(layout), indent=2) + "\n")
    # Check every port before starting anything, so a clash leaves nothing half-started.
    check_ports(layout)
    t0 = time.monotonic()
    bring_up(layout, plane.server(layout, "etcd"), plane.start_etcd, plane.etcd_healthy,
             plane.READY_TIMEOUT["etcd"], t0)
    bring_up(layout, plane.server(layout, "apiserver"), plane.start_apiserver,
             plane.apiserver_healthy, plane.READY_TIMEOUT["apiserver"], t0, plane.apiserver_why)
    if args.crds:
        plane.install_crds(layout)
    if layout["node"]:
        for name in ("containerd", "controller-manager", "scheduler"):
            bring_up(layout, plane.server(layout, name), node.STARTERS[name],
                     node.HEALTH[name], node.READY_TIMEOUT[name], t0)
        # Pods cannot start before the pause image is in containerd.
        load_node_images(layout)
        for name in ("kubelet", "kube-proxy", "provisioner"):
            bring_up(layout, plane.server(layout, name), node.STARTERS[name],
                     node.HEALTH[name], node.READY_TIMEOUT[name], t0)
        addons.wait_node_ready(layout, NODE_READY_TIMEOUT)
        say("node               %s Ready (%.1fs)" % (plane.NODE_NAME, time.monotonic() - t0))
        addons.apply(layout)
        addons.wait_dns(layout, DNS_TIMEOUT)
        say("cluster DNS        %s answers (%.1fs)" % (plane.CLUSTER_DNS, time.monotonic() - t0))
    say("up in %.1fs; %s; KUBECONFIG=%s" % (time.monotonic() - t0, plane.api_url(layout),
                                            layout["kubeconfig"]))
    return 0


# --------------------------------------------------------------------------
# down / status / env


def stop_node(layout):
    """Node first, in the order that leaves nothing running: the components that would
    restart pods, then the pods (through CRI), then containerd and its shims."""
    state = layout["state"]
    for name in ("provisioner", "kube-proxy", "scheduler", "controller-manager", "kubelet"):
        stop(plane.server(layout, name), 30)
    node.stop_pods(layout)
    stop(plane.server(layout, "containerd"), 30)
    left = node.kill_leftovers(os.path.join(state, "containerd"))
    if left:
        raise KubeError("processes of containerd still run: %s" % left)
    n = node.kill_pod_processes()
    if n:
        say("pods               killed %d leftover container processes" % n)
    left = node.remove_cgroups()
    if left:
        say("cgroups            could not remove %d kubepods cgroups" % len(left))
    left = node.unmount_under(state)
    if left:
        raise KubeError("still mounted under %s: %s" % (state, left[:10]))
    node.remove_log_links(layout)
    net.teardown(layout)
    try:
        with open(NODE_LOCK) as f:
            if json.load(f).get("state") == state:
                os.unlink(NODE_LOCK)
    except (OSError, ValueError):
        pass


def cmd_down(args):
    state = plane.state_dir_from(args)
    layout = plane.load_layout(state)
    if layout is not None and args.only:
        # A partial stop is for outage tests; `up` starts the server again.
        if args.wipe:
            raise KubeError("--wipe stops everything; it cannot go with --only")
        srv = plane.server(layout, args.only)
        pid = owned_pid(srv)
        stop(srv, 30)
        if pid is not None and alive(pid):
            say("%s (pid %d) is still running" % (args.only, pid))
            return 1
        say("%s down; `ci/kube up` starts it again" % args.only)
        return 0
    if layout is not None:
        if layout.get("node"):
            stop_node(layout)
        # The apiserver first: etcd going away under it only makes it log errors. It may
        # ignore SIGTERM for long with clients connected: SIGKILL after 15 s.
        stop(plane.server(layout, "apiserver"), 15)
        stop(plane.server(layout, "etcd"), 30)
    else:
        say("no kube.json in %s; nothing recorded to stop" % state)
    deadline = time.monotonic() + 10
    left = processes_mentioning(state)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = processes_mentioning(state)
    if left:
        say("processes still mention %s:" % state)
        for pid, cmd in left:
            print("  %d %s" % (pid, cmd[:300]), flush=True)
        return 1
    if layout is not None and layout.get("node"):
        rest = net.leftovers()
        if rest:
            say("left behind: " + "; ".join(rest))
            return 1
    if args.wipe and os.path.isdir(state):
        if node.mounts_under(state):
            raise KubeError("refusing to wipe %s: still mounted: %s"
                            % (state, node.mounts_under(state)[:5]))
        shutil.rmtree(state)
        say("wiped %s" % state)
    say("down")
    return 0


def cmd_status(args):
    state = plane.state_dir_from(args)
    layout = plane.load_layout(state)
    if layout is None:
        say("no control plane in %s (run ci/kube up)" % state)
        return 1
    ok = True
    health = {"etcd": plane.etcd_healthy, "apiserver": plane.apiserver_healthy}
    health.update(node.HEALTH)
    where = {"etcd": "port=%d" % layout["ports"]["etcd"],
             "apiserver": "port=%d" % layout["ports"]["api"],
             "containerd": "socket",
             "controller-manager": "port=%d" % plane.NODE_PORTS["controller_manager"],
             "scheduler": "port=%d" % plane.NODE_PORTS["scheduler"],
             "kubelet": "port=%d" % plane.NODE_PORTS["kubelet"],
             "kube-proxy": "port=%d" % plane.NODE_PORTS["proxy_healthz"],
             "provisioner": "watch"}
    for srv in layout["servers"]:
        pid = owned_pid(srv)
        good = pid is not None and health[srv["name"]](layout)
        ok = ok and good
        print("%-20s pid=%-8s %-11s %s" % (srv["name"], pid if pid else "-",
                                           where[srv["name"]], "healthy" if good else "down"),
              flush=True)
    if layout.get("node") and ok:
        for what, fn in (("node", lambda: addons.wait_node_ready(layout, 1)),
                         ("cluster-dns", lambda: addons.wait_dns(layout, 2))):
            try:
                fn()
                print("%-20s %-19s %s" % (what, "", "healthy"), flush=True)
            except KubeError as e:
                ok = False
                print("%-20s %-19s down: %s" % (what, "", str(e).splitlines()[0]), flush=True)
    return 0 if ok else 1


def env_lines(layout):
    pki = layout["pki"]
    lines = [
        ("KUBECONFIG", layout["kubeconfig"]),
        ("UPMON_KUBE_API", plane.api_url(layout)),
        ("UPMON_KUBE_CA", os.path.join(pki, "ca.crt")),
        ("UPMON_KUBE_CLIENT_CERT", os.path.join(pki, "admin.crt")),
        ("UPMON_KUBE_CLIENT_KEY", os.path.join(pki, "admin.key")),
        ("UPMON_KUBECTL", build.kubectl_bin()),
        ("UPMON_KUBE_STATE_DIR", layout["state"]),
    ]
    if layout.get("node"):
        lines += [("UPMON_KUBE_NODE", plane.NODE_NAME),
                  ("UPMON_KUBE_NODE_IP", plane.NODE_IP),
                  ("CONTAINER_RUNTIME_ENDPOINT",
                   "unix://" + node.containerd_paths(layout)["sock"])]
    return lines


def cmd_env(args):
    state = plane.state_dir_from(args)
    layout = plane.load_layout(state)
    if layout is None:
        say("no control plane in %s (run ci/kube up)" % state)
        return 1
    for k, v in env_lines(layout):
        print("export %s=%s" % (k, shlex.quote(str(v))))
    return 0


def cmd_kubectl(args):
    state = plane.state_dir_from(args)
    layout = plane.load_layout(state)
    if layout is None:
        say("no control plane in %s (run ci/kube up)" % state)
        return 1
    if not os.access(build.kubectl_bin(), os.X_OK):
        build.build(names=build.PLANE_BINARIES)
    env = dict(os.environ)
    env["KUBECONFIG"] = layout["kubeconfig"]
    os.execve(build.kubectl_bin(), [build.kubectl_bin()] + args.args, env)


def cmd_build(args):
    names = build.ALL_BINARIES if args.node else build.PLANE_BINARIES
    if not build.build(force=args.force, names=names):
        say("%s %s: cached in %s" % (", ".join(names), build.kube_version(), build.bin_dir()))
    if args.node:
        say("crictl: %s" % build.crictl_bin())
        say("coredns: %s" % build.coredns_bin())
    if args.crds:
        say("CRDs: %s" % build.crd_dir())
    return 0


# --------------------------------------------------------------------------


def main(argv, doc):
    ap = argparse.ArgumentParser(prog="ci/kube", description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--state", help="state folder (UPMON_KUBE_STATE_DIR; default "
                    "<repo>/.state-kube)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the Kubernetes binaries into the cache")
    b.add_argument("--force", action="store_true", help="rebuild even when cached")
    b.add_argument("--crds", action="store_true", help="also fetch the CRDs' module")
    b.add_argument("--node", action="store_true",
                   help="also the node's binaries, crictl and CoreDNS")
    up = sub.add_parser("up", help="start the control plane, and with --node a node (idempotent)")
    up.add_argument("--crds", action="store_true",
                    help="install the PrometheusRule and ServiceMonitor CRDs")
    up.add_argument("--node", action="store_true", default=None,
                    help="also run a real node: containerd, kubelet, kube-proxy, "
                    "controller-manager, scheduler, CoreDNS, local volumes")
    up.add_argument("--port-offset", type=int, help="added to every default port "
                    "(UPMON_KUBE_PORT_OFFSET; default 0)")
    for key, default in plane.DEFAULT_PORTS.items():
        up.add_argument("--%s-port" % key.replace("_", "-"), type=int, dest=key + "_port",
                        help="UPMON_KUBE_%s_PORT; default %d" % (key.upper(), default))
    down = sub.add_parser("down", help="stop what up started")
    down.add_argument("--wipe", action="store_true", help="also delete the state folder")
    down.add_argument("--only", choices=("apiserver", "etcd"),
                      help="stop just this server (outage tests); `up` restarts it")
    sub.add_parser("status", help="one line per component; exit 0 only if all are healthy")
    sub.add_parser("env", help="print shell export lines for the running control plane")
    sub.add_parser("kubectl", help="run the pinned kubectl as the admin")
    for p in sub.choices.values():
        p.add_argument("--state", help=argparse.SUPPRESS, default=argparse.SUPPRESS)
    # kubectl's own flags must reach it untouched, so split them off before parsing.
    rest = []
    if "kubectl" in argv:
        i = argv.index("kubectl")
        argv, rest = argv[:i + 1], argv[i + 1:]
    args = ap.parse_args(argv)
    if args.cmd == "kubectl":
        args.args = rest
    if not hasattr(args, "state"):
        args.state = None
    if args.cmd == "up" and args.node is None:
        args.node = False
    try:
        return {"build": cmd_build, "up": cmd_up, "down": cmd_down, "status": cmd_status,
                "env": cmd_env, "kubectl": cmd_kubectl}[args.cmd](args)
    except KubeError as e:
        print("ci/kube: error: %s" % e, file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130
