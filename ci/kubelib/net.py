"""The node's network on the host: the node-address bridge, the CNI configuration for
containerd, the sysctls pods need, and removing everything kube-proxy, the kubelet and the
CNI plugins leave in iptables.

What `up` changes is recorded in <state>/net.json so that `down` undoes exactly that."""

import json
import os
import shlex

from . import plane
from .util import KubeError, run, say, write_file

# Chains created by kube-proxy and the kubelet (KUBE-*) and by the CNI portmap/bridge
# plugins (CNI-*). Nothing else on a machine names its chains so.
CHAIN_PREFIXES = ("KUBE-", "CNI-")
TABLES = ("filter", "nat", "mangle", "raw")
SYSCTLS = {"net/ipv4/ip_forward": "1",
           # Service traffic between pods on one bridge must pass iptables (kube-proxy's
           # DNAT and its reverse); the module is on here but the switch may be off.
           "net/bridge/bridge-nf-call-iptables": "1"}


def net_record(layout):
    return os.path.join(layout["state"], "net.json")


def link_exists(name):
    return os.path.exists("/sys/class/net/" + name)


# Folders outside the state folder that containerd (shim sockets, runc state), libcni (its
# result cache) and the kubelet (log links) create at fixed paths. `down` removes them when
# `up` found them absent and they are empty again (they are shared with other users of
# containerd, CNI or podman otherwise).
HOST_DIRS = ("/run/containerd", "/var/lib/cni", "/var/log/containers")


def ensure_node_device(layout):
    """A bridge with the node's address alone (/32): a real, non-loopback address."""
    rec = load_record(layout)
    if "created_dirs" not in rec:
        rec["created_dirs"] = [d for d in HOST_DIRS if not os.path.exists(d)]
    if not link_exists(plane.NODE_DEVICE):
        run(["ip", "link", "add", plane.NODE_DEVICE, "type", "bridge"])
        rec["devices"] = sorted(set(rec.get("devices", [])) | {plane.NODE_DEVICE})
    addrs = run(["ip", "-o", "-4", "addr", "show", "dev", plane.NODE_DEVICE]).stdout
    if " %s/32 " % plane.NODE_IP not in addrs:
        run(["ip", "addr", "add", plane.NODE_IP + "/32", "dev", plane.NODE_DEVICE])
    run(["ip", "link", "set", plane.NODE_DEVICE, "up"])
    # The CNI bridge is made by the bridge plugin on the first pod; record it now so that
    # `down` removes it.
    rec["devices"] = sorted(set(rec.get("devices", [])) | {plane.NODE_DEVICE, plane.CNI_BRIDGE})
    for key, val in SYSCTLS.items():
        path = "/proc/sys/" + key
        try:
            with open(path) as f:
                old = f.read().strip()
        except OSError:
            continue
        if old != val:
            rec.setdefault("sysctls", {}).setdefault(key, old)
            with open(path, "w") as f:
                f.write(val)
    save_record(layout, rec)


def load_record(layout):
    try:
        with open(net_record(layout)) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise KubeError("cannot read %s: %s" % (net_record(layout), e))


def save_record(layout, rec):
    write_file(net_record(layout), json.dumps(rec, indent=2) + "\n")


def cni_dirs(layout):
    base = os.path.join(layout["state"], "cni")
    return {"conf": os.path.join(base, "net.d"), "ipam": os.path.join(base, "ipam"),
            "cache": os.path.join(base, "cache")}


def write_cni(layout):
    d = cni_dirs(layout)
    for p in d.values():
        os.makedirs(p, exist_ok=True)
    conf = {
        "cniVersion": "1.0.0",
        "name": "upmon",
        "plugins": [
            {"type": "bridge", "bridge": plane.CNI_BRIDGE, "isGateway": True,
             # No masquerade: pods talk to each other, the node and Services, never out.
             "ipMasq": False, "hairpinMode": True,
             "ipam": {"type": "host-local", "dataDir": d["ipam"],
                      "ranges": [[{"subnet": plane.POD_CIDR}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    write_file(os.path.join(d["conf"], "10-upmon.conflist"), json.dumps(conf, indent=2) + "\n")


def iptables_leftovers():
    """[(binary, table, chain)] of every KUBE-*/CNI-* chain in iptables and ip6tables."""
    out = []
    for binary in ("iptables", "ip6tables"):
        for table in TABLES:
            res = run([binary, "-w", "5", "-t", table, "-S"], check=False)
            if res.returncode != 0:
                continue
            for line in res.stdout.splitlines():
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "-N" and parts[1].startswith(CHAIN_PREFIXES):
                    out.append((binary, table, parts[1]))
    return out


def remove_iptables():
    """Delete the jumps into KUBE-*/CNI-* chains from every chain, then the chains."""
    removed = 0
    for binary in ("iptables", "ip6tables"):
        for table in TABLES:
            res = run([binary, "-w", "5", "-t", table, "-S"], check=False)
            if res.returncode != 0:
                continue
            rules, chains = [], []
            for line in res.stdout.splitlines():
                # Comments are quoted ("kubernetes service portals"): split as a shell does.
                parts = shlex.split(line)
                if len(parts) >= 2 and parts[0] == "-N" and parts[1].startswith(CHAIN_PREFIXES):
                    chains.append(parts[1])
                elif parts[:1] == ["-A"] and not parts[1].startswith(CHAIN_PREFIXES) and any(
                        p.startswith(CHAIN_PREFIXES) for p in parts[2:]):
                    rules.append(parts[1:])
            for rule in rules:
                run([binary, "-w", "5", "-t", table, "-D"] + rule, check=False)
            for chain in chains:
                run([binary, "-w", "5", "-t", table, "-F", chain], check=False)
            for chain in chains:
                if run([binary, "-w", "5", "-t", table, "-X", chain],
                       check=False).returncode == 0:
                    removed += 1
    return removed


def teardown(layout):
    """Remove the bridges, iptables chains and sysctl changes `up` made."""
    rec = load_record(layout)
    n = remove_iptables()
    if n:
        say("iptables           removed %d KUBE-*/CNI-* chains" % n)
    for dev in rec.get("devices", [plane.NODE_DEVICE, plane.CNI_BRIDGE]):
        if link_exists(dev):
            run(["ip", "link", "delete", dev], check=False)
            say("network            removed %s" % dev)
    for top in rec.get("created_dirs", []):
        remove_empty_tree(top)
    for key, old in rec.get("sysctls", {}).items():
        try:
            with open("/proc/sys/" + key, "w") as f:
                f.write(old)
        except OSError:
            pass
    try:
        os.unlink(net_record(layout))
    except FileNotFoundError:
        pass


def remove_empty_tree(top):
    """Remove top and its subfolders if nothing but empty folders is in them."""
    if not os.path.isdir(top) or os.path.islink(top):
        return
    for root, dirs, files in os.walk(top, topdown=False):
        if files:
            return
        try:
            os.rmdir(root)
        except OSError:
            return


def leftovers():
    """What a clean `down` must not leave: chains and devices, as lines for a message."""
    lines = ["%s -t %s chain %s" % x for x in iptables_leftovers()]
    for dev in (plane.NODE_DEVICE, plane.CNI_BRIDGE):
        if link_exists(dev):
            lines.append("network device %s" % dev)
    return lines
