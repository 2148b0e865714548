"""The same for every flavour: the Prometheus Operator's CRDs, `helm upgrade --install` of
charts/upmon with the chosen profile, and a bounded wait until everything serves."""

import json
import os
import sys
import time

from .util import Failure, ROOT, run, say

CHART = os.path.join(ROOT, "charts", "upmon")
PROM_OPERATOR_VERSION = "v0.85.0"
CRD_URL = ("https://github.com/prometheus-operator/prometheus-operator/releases/download/"
           "%s/stripped-down-crds.yaml" % PROM_OPERATOR_VERSION)


def install_crds(prog, args, kubectl, env):
    """Helm never upgrades CRDs, and the Prometheus Operator's are too large for
    client-side apply: server-side apply them, then wait until they are served."""
    if args.flavour == "local":
        sys.path.insert(0, os.path.join(ROOT, "ci"))
        from kubelib import build  # the module the local node's CRDs come from
        d = build.crd_dir()
        sources = [os.path.join(d, f) for f in sorted(os.listdir(d)) if f.endswith(".yaml")]
    else:
        sources = [CRD_URL]
    for src in sources:
        run([kubectl, "apply", "--server-side", "--force-conflicts", "-f", src], env=env,
            capture=True, timeout=300)
    # The chart's own CRD (ClickHouseCluster) too, so an upgrade brings its new fields.
    run([kubectl, "apply", "--server-side", "--force-conflicts", "-f",
         os.path.join(ROOT, "charts", "clickhouse", "crds")], env=env, capture=True, timeout=120)
    out = run([kubectl, "get", "crd", "-o", "json"], env=env, capture=True).stdout
    names = [c["metadata"]["name"] for c in json.loads(out)["items"]
             if c["spec"]["group"] in ("monitoring.coreos.com", "upmon.io")]
    run([kubectl, "wait", "--for=condition=Established", "--timeout=120s"]
        + ["crd/" + n for n in names], env=env, capture=True, timeout=180)
    say(prog, "CRDs established: %d (Prometheus Operator %s, upmon.io)"
        % (len(names), PROM_OPERATOR_VERSION))


def values_files(args):
    files = [os.path.join(CHART, "values-%s.yaml" % args.profile)]
    if args.flavour == "local":
        files.append(os.path.join(CHART, "values-local.yaml"))
    if args.demo:
        files.append(os.path.join(CHART, "values-demo.yaml"))
    return files + list(args.values or [])


def image_overrides(args, version):
    """kind and minikube run the upmon images the script built and loaded (never pulled)."""
    if args.flavour == "local":
        return []
    sets = []
    for key in ("ingest", "analyzer", "simulator", "clickhouse.operator"):
        svc = key.split(".")[-1]
        sets += ["--set", "%s.image.repository=docker.io/library/upmon-%s" % (key, svc),
                 "--set", "%s.image.tag=%s" % (key, version),
                 "--set", "%s.image.pullPolicy=Never" % key]
    return sets


def helm_install(prog, args, helm, env, version):
    run([helm, "dependency", "update", CHART, "--skip-refresh"], env=env, capture=True,
        timeout=300)
    argv = [helm, "upgrade", "--install", args.release, CHART, "-n", args.namespace,
            "--create-namespace", "--timeout", "15m"]
    for f in values_files(args):
        argv += ["-f", f]
    argv += image_overrides(args, version)
    for s in args.set or []:
        argv += ["--set", s]
    t0 = time.monotonic()
    run(argv, env=env, capture=True, timeout=1200)
    say(prog, "helm upgrade --install %s (%s profile) applied in %.0fs"
        % (args.release, args.profile, time.monotonic() - t0))


def wait_ready(prog, args, kubectl, env, timeout):
    """Every pod of the release Ready (the ClickHouse pods come from the operator after the
    ClickHouseCluster is reconciled, so its phase is waited for too)."""
    t0 = time.monotonic()
    ns = args.namespace
    deadline = t0 + timeout
    last = ""
    while time.monotonic() < deadline:
        chc = run([kubectl, "get", "clickhouseclusters", "-n", ns, "-o", "json"], env=env,
                  capture=True, check=False)
        phases, clusters_ready = [], []
        if chc.returncode == 0:
            for c in json.loads(chc.stdout)["items"]:
                st = c.get("status", {})
                phases.append(st.get("phase", ""))
                clusters_ready.append(any(k.get("type") == "Ready" and k.get("status") == "True"
                                 for k in st.get("conditions", [])))
        pods = run([kubectl, "get", "pods", "-n", ns, "-o", "json"], env=env, capture=True,
                   check=False)
        waiting = []
        if pods.returncode == 0:
            for p in json.loads(pods.stdout)["items"]:
                if p["status"].get("phase") == "Succeeded":
                    continue
                ready = any(c["type"] == "Ready" and c["status"] == "True"
                            for c in p["status"].get("conditions", []))
                if not ready:
                    waiting.append(p["metadata"]["name"])
        state = "clusters %s; not ready: %s" % (phases or "-", ", ".join(waiting) or "none")
        if state != last:
            say(prog, "waiting: " + state)
            last = state
        if clusters_ready and all(clusters_ready) and not waiting and pods.returncode == 0:
            took = time.monotonic() - t0
            say(prog, "every pod Ready %.0fs after install" % took)
            return took
        time.sleep(3)
    raise Failure("not ready within %ds: %s" % (timeout, last))
