"""Binaries built from Go modules into the cache, once per version.

- kube-apiserver, kubectl (the control plane) and kubelet, kube-controller-manager,
  kube-scheduler, kube-proxy (the node), from the pinned k8s.io/kubernetes release through
  the wrapper module ci/kube-apiserver/ (k8s.io/kubernetes cannot be `go install`ed: its
  go.mod replaces staging modules with paths that are not in the published module);
- crictl, to tear pod sandboxes down through CRI when the node stops;
- CoreDNS, the node's cluster DNS (packed into an image by ci/images).
"""

import json
import os
import re
import shutil
import subprocess
import time

from .util import KubeError, ROOT, cache_dir, say, tail

MODULE_DIR = os.path.join(ROOT, "ci", "kube-apiserver")
BUILD_TIMEOUT = 3600

PROM_OPERATOR_MODULE = "github.com/prometheus-operator/prometheus-operator"
PROM_OPERATOR_VERSION = "v0.85.0"
CRICTL_MODULE = "sigs.k8s.io/cri-tools"
# v1.32.x of cri-tools is refused by the module proxy; v1.34.0 is served and speaks the
# same CRI v1 API as containerd 1.6.
CRICTL_VERSION = "v1.34.0"
COREDNS_MODULE = "github.com/coredns/coredns"
COREDNS_VERSION = "v1.15.0"

# The control plane needs only these two; --node needs the rest.
PLANE_BINARIES = ("kube-apiserver", "kubectl")
NODE_BINARIES = ("kubelet", "kube-controller-manager", "kube-scheduler", "kube-proxy")
ALL_BINARIES = PLANE_BINARIES + NODE_BINARIES


def kube_version():
    path = os.path.join(MODULE_DIR, "go.mod")
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise KubeError("cannot read %s: %s" % (path, e))
    m = re.search(r"^(?:require)?\s*k8s\.io/kubernetes\s+(v\d+\.\d+\.\d+)\s*$", text, re.M)
    if not m:
        raise KubeError("%s does not require k8s.io/kubernetes vX.Y.Z" % path)
    return m.group(1)


def bin_dir():
    return os.path.join(cache_dir(), "kube-" + kube_version())


def kube_bin(name):
    return os.path.join(bin_dir(), name)


def apiserver_bin():
    return kube_bin("kube-apiserver")


def kubectl_bin():
    return kube_bin("kubectl")


def go_env():
    env = dict(os.environ)
    # Never swap in another Go toolchain.
    env["GOTOOLCHAIN"] = "local"
    return env


def run_build(what, argv, cwd, env, log):
    if shutil.which("go") is None:
        raise KubeError("go not found: it is needed once to build %s" % what)
    say("building %s from the Go module proxy (log: %s)" % (what, log))
    t0 = time.monotonic()
    with open(log, "w") as f:
        try:
            rc = subprocess.run(argv, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, env=env,
                                timeout=BUILD_TIMEOUT).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout after %ds" % BUILD_TIMEOUT
    if rc != 0:
        raise KubeError("building %s failed (%s):\n%s" % (what, rc, "\n".join(tail(log, 40))))
    return time.monotonic() - t0


def build(force=False, names=ALL_BINARIES):
    """Build the named Kubernetes binaries into the cache unless they are there.

    One `go build` for all missing ones: they share most packages, so building
    them together costs little more than the largest alone."""
    ver = kube_version()
    out = bin_dir()
    want = [n for n in names if force or not os.access(kube_bin(n), os.X_OK)]
    if not want:
        return False
    os.makedirs(out, exist_ok=True)
    major, minor = ver[1:].split(".")[:2]
    ldflags = ["-s", "-w"]
    # Stamp the version the way the release build does: the apiserver derives its
    # emulated/binary version from it, kubectl compares it with the server's and the
    # kubelet reports it as the node's version.
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        ldflags += ["-X", "%s.gitVersion=%s" % (pkg, ver), "-X", "%s.gitMajor=%s" % (pkg, major),
                    "-X", "%s.gitMinor=%s" % (pkg, minor),
                    "-X", "%s.gitTreeState=clean" % pkg]
    tmp = os.path.join(out, "tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    env = go_env()
    # Never rewrite the committed go.mod/go.sum.
    env["GOFLAGS"] = (env.get("GOFLAGS", "") + " -mod=readonly").strip()
    argv = ["go", "build", "-trimpath", "-ldflags", " ".join(ldflags), "-o", tmp + "/"]
    argv += ["./cmd/" + n for n in want]
    secs = run_build("%s %s" % (", ".join(want), ver), argv, MODULE_DIR, env,
                     os.path.join(out, "build.log"))
    for name in want:
        os.replace(os.path.join(tmp, name), os.path.join(out, name))
    shutil.rmtree(tmp, ignore_errors=True)
    say("built %s %s in %.0fs into %s" % (", ".join(want), ver, secs, out))
    return True


def go_install(module, version, pkg, binary, ldflags="", cgo=False):
    """`go install module/pkg@version` into <cache>/<binary>-<version>/ unless there."""
    out = os.path.join(cache_dir(), "%s-%s" % (binary, version))
    path = os.path.join(out, binary)
    if os.access(path, os.X_OK):
        return path
    os.makedirs(out, exist_ok=True)
    env = go_env()
    env["GOBIN"] = out
    env["GOFLAGS"] = "-mod=mod"
    # Static where possible: the binary goes into an image with no libc.
    env["CGO_ENABLED"] = "1" if cgo else "0"
    argv = ["go", "install", "-trimpath"]
    if ldflags:
        argv += ["-ldflags", ldflags]
    argv.append("%s/%s@%s" % (module, pkg, version) if pkg else "%s@%s" % (module, version))
    secs = run_build("%s %s" % (binary, version), argv, cache_dir(), env,
                     os.path.join(out, "build.log"))
    if not os.access(path, os.X_OK):
        raise KubeError("building %s %s left no %s" % (binary, version, path))
    say("built %s %s in %.0fs" % (binary, version, secs))
    return path


def crictl_bin():
    return go_install(CRICTL_MODULE, CRICTL_VERSION, "cmd/crictl", "crictl",
                      "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=" + CRICTL_VERSION)


def coredns_bin():
    return go_install(COREDNS_MODULE, COREDNS_VERSION, "", "coredns", "-s -w")


def module_dir(module, version):
    """Download a module through the module proxy; return its folder in the module cache."""
    env = go_env()
    env["GOFLAGS"] = "-mod=mod"
    # Outside any module, so the download is not recorded in a go.mod.
    os.makedirs(cache_dir(), exist_ok=True)
    try:
        res = subprocess.run(["go", "mod", "download", "-json", "%s@%s" % (module, version)],
                             cwd=cache_dir(), capture_output=True, text=True, env=env,
                             timeout=600)
    except (OSError, subprocess.SubprocessError) as e:
        raise KubeError("go mod download %s: %s" % (module, e))
    try:
        info = json.loads(res.stdout)
    except ValueError:
        info = {}
    if res.returncode != 0 or not info.get("Dir"):
        raise KubeError("go mod download %s@%s failed: %s %s"
                        % (module, version, info.get("Error", ""), res.stderr.strip()))
    return info["Dir"]


CRD_FILES = ("monitoring.coreos.com_prometheusrules.yaml",
             "monitoring.coreos.com_servicemonitors.yaml")
CRD_NAMES = ("prometheusrules.monitoring.coreos.com", "servicemonitors.monitoring.coreos.com")


def crd_dir():
    """The Prometheus Operator module's CRD folder."""
    d = os.path.join(module_dir(PROM_OPERATOR_MODULE, PROM_OPERATOR_VERSION), "example",
                     "prometheus-operator-crd")
    for name in CRD_FILES:
        if not os.path.isfile(os.path.join(d, name)):
            raise KubeError("%s@%s has no %s" % (PROM_OPERATOR_MODULE, PROM_OPERATOR_VERSION,
                                                 os.path.join(d, name)))
    return d
