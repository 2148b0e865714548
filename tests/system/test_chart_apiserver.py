"""Every chart with every values file in the repo, accepted by the real API server.

`helm template` proves the templates render; only the API server proves what they render is
valid Kubernetes: field names and types against the built-in schemas and the installed CRDs
(the Prometheus Operator's and our ClickHouseCluster), immutable-field rules, defaulting,
and admission. Each rendering is applied with `kubectl apply --dry-run=server` into its own
namespace labelled for the Pod Security "restricted" profile, so the API server also reports
every workload whose pods that profile would refuse (as a warning on the workload, which the
test turns into a failure).

Uses the `kube` fixture's control plane (no node is needed: nothing is scheduled).
"""

import glob
import os
import subprocess

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHARTS = os.path.join(ROOT, "charts")

# (chart, values files on top of the chart's defaults). Every values file in charts/ appears
# at least once (test_every_values_file_is_covered), plus the combination k8s/up installs.
CASES = [
    ("clickhouse", []),
    ("clickhouse", ["values-local.yaml"]),
    ("kafka", []),
    ("kafka", ["values-local.yaml"]),
    ("monitoring", []),
    ("monitoring", ["values-local.yaml"]),
    ("upmon", []),
    ("upmon", ["values-small.yaml"]),
    ("upmon", ["values-production.yaml"]),
    ("upmon", ["values-demo.yaml"]),
    ("upmon", ["values-local.yaml"]),
    ("upmon", ["values-small.yaml", "values-local.yaml", "values-demo.yaml"]),
]

# The API versions `helm install` would discover on a cluster with the CRDs installed.
API = ["--api-versions", "monitoring.coreos.com/v1/Prometheus",
       "--api-versions", "monitoring.coreos.com/v1/Alertmanager",
       "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor",
       "--api-versions", "monitoring.coreos.com/v1/PrometheusRule",
       "--api-versions", "upmon.io/v1alpha1/ClickHouseCluster"]

# The Prometheus Operator CRDs the monitoring chart's resources need beyond the two that
# `ci/kube up --crds` installs.
PROM_CRDS = ("monitoring.coreos.com_prometheuses.yaml", "monitoring.coreos.com_alertmanagers.yaml",
             "monitoring.coreos.com_alertmanagerconfigs.yaml",
             "monitoring.coreos.com_podmonitors.yaml")


def helm_bin():
    cache = os.environ.get("UPMON_CACHE") or os.path.expanduser("~/.cache/upmon")
    path = os.path.join(cache, "helm")
    if not os.access(path, os.X_OK):
        pytest.fail("helm is missing from %s (run ci/deps)" % cache, pytrace=False)
    return path


def helm(*args):
    res = subprocess.run([helm_bin()] + list(args), capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        raise AssertionError("helm %s -> %d:\n%s%s" % (" ".join(args[:3]), res.returncode,
                                                       res.stdout[-3000:], res.stderr[-3000:]))
    return res.stdout


@pytest.fixture(scope="module")
def plane(kube):
    """The control plane with every CRD the charts' resources use."""
    import sys
    sys.path.insert(0, os.path.join(ROOT, "ci"))
    from kubelib import build
    d = build.crd_dir()
    for name in PROM_CRDS:
        kube.kubectl("apply", "--server-side", "--force-conflicts", "-f",
                     os.path.join(d, name), timeout=120)
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f",
                 os.path.join(CHARTS, "clickhouse", "crds"), timeout=120)
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                 "crd/prometheuses.monitoring.coreos.com",
                 "crd/alertmanagers.monitoring.coreos.com",
                 "crd/clickhouseclusters.upmon.io", timeout=90)
    helm("dependency", "update", os.path.join(CHARTS, "upmon"), "--skip-refresh")
    return kube


def test_every_values_file_is_covered():
    covered = {(c, f) for c, files in CASES for f in files}
    for path in glob.glob(os.path.join(CHARTS, "*", "values-*.yaml")):
        chart = os.path.basename(os.path.dirname(path))
        assert (chart, os.path.basename(path)) in covered, \
            "%s is not applied to the API server by this test; add it to CASES" % path


@pytest.mark.parametrize("chart,files", CASES,
                         ids=["%s%s" % (c, "".join("+" + f[len("values-"):-len(".yaml")]
                                                   for f in fs)) for c, fs in CASES])
def test_rendering_is_accepted_by_the_api_server(plane, chart, files):
    ns = plane.namespace("dry-" + chart)
    plane.kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted",
                  "pod-security.kubernetes.io/warn=restricted")
    argv = ["template", "dry", os.path.join(CHARTS, chart), "-n", ns] + API
    for f in files:
        argv += ["-f", os.path.join(CHARTS, chart, f)]
    manifest = helm(*argv)
    objects = [d for d in yaml.safe_load_all(manifest) if d]
    assert len(objects) >= 5, manifest[:2000]
    res = plane.kubectl("apply", "--dry-run=server", "-n", ns, "-f", "-", input=manifest,
                        check=False, timeout=180)
    assert res.returncode == 0, "the API server refused %s %s:\n%s" % (chart, files, res.stderr)
    # Every object was seen by the server (one line each: "... created (server dry run)").
    applied = [line for line in res.stdout.splitlines() if "(server dry run)" in line]
    assert len(applied) == len(objects), res.stdout
    refused = [line for line in res.stderr.splitlines() if "PodSecurity" in line]
    assert not refused, "pods the restricted profile would refuse:\n" + "\n".join(refused)


def test_the_restricted_check_can_fail(plane):
    """The warning the test above relies on really comes for a pod the profile refuses."""
    ns = plane.namespace("dry-neg")
    plane.kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted",
                  "pod-security.kubernetes.io/warn=restricted")
    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "root"},
           "spec": {"selector": {"matchLabels": {"a": "b"}},
                    "template": {"metadata": {"labels": {"a": "b"}},
                                 "spec": {"containers": [{"name": "c", "image": "x"}]}}}}
    res = plane.kubectl("apply", "--dry-run=server", "-n", ns, "-f", "-", input=yaml.dump(bad))
    assert "would violate PodSecurity" in res.stderr and "runAsNonRoot" in res.stderr, res.stderr
    # And a refusal of an invalid object comes back as a failure, not a warning.
    bad["spec"]["replicas"] = "three"
    res = plane.kubectl("apply", "--dry-run=server", "-n", ns, "-f", "-", input=yaml.dump(bad),
                        check=False)
    assert res.returncode != 0
