"""ci/deps installs by purpose: the main job (ci/demo) gets only what it uses, so a fresh
machine runs the demo in minutes; ci/test (the default) gets everything."""

import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPS = os.path.join(ROOT, "ci", "deps")

# What only the tests and the Kubernetes path use.
NOT_FOR_DEMO = ("etcd-server", "containerd", "podman", "mmdebstrap", "clang", "cppcheck",
                "helm", "Kubernetes", "chdb", "faketime")


def plan(*args):
    res = subprocess.run([DEPS, "--plan"] + list(args), capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_demo_plan_leaves_out_tests_and_kubernetes():
    out = plan("--for", "demo")
    pkgs = out.split("plan: Debian packages:")[1].splitlines()[0].split()
    assert not [w for w in NOT_FOR_DEMO if w in pkgs or ("plan: " + w) in out
                or (" %s " % w) in out], out
    for needed in ("clickhouse-server", "zookeeper", "librdkafka-dev", "cmake", "maven"):
        assert needed in pkgs, (needed, pkgs)
    assert "Kafka" in out


def test_default_plan_is_everything():
    out = plan()
    for w in ("etcd-server", "containerd", "podman", "mmdebstrap", "clang", "helm",
              "Kubernetes binaries", "chdb"):
        assert w in out, (w, out)


def test_demo_uses_the_demo_purpose():
    with open(os.path.join(ROOT, "ci", "demo")) as f:
        assert '"$root/ci/deps" --for demo' in f.read()


def test_bad_purpose_is_refused():
    res = subprocess.run([DEPS, "--for", "everything"], capture_output=True, text=True)
    assert res.returncode == 2 and "--for must be" in res.stderr
