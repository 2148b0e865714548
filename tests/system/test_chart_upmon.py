"""charts/upmon rendered and linted: the template logic a user relies on, without a cluster.

helm lint --strict and helm template of every profile; the PrometheusRule is exactly the rules
in alerts/ (one source of truth) and the packaged copies equal their sources; the release label;
each service's rendered configuration is accepted by the service itself (`--check-config`);
restricted pod security on every pod of every chart; least-privilege RBAC; values.schema.json
rejections naming the key. (test_chart_install.py installs the same chart on the real node.)"""

import filecmp
import glob
import os
import subprocess

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHART = os.path.join(ROOT, "charts", "upmon")
PROFILES = [[], ["values-small.yaml"], ["values-production.yaml"], ["values-demo.yaml"],
            ["values-small.yaml", "values-local.yaml", "values-demo.yaml"]]
# Rendering without a cluster: the Prometheus Operator's API is declared present.
API = ["--api-versions", "monitoring.coreos.com/v1/Prometheus",
       "--api-versions", "monitoring.coreos.com/v1/Alertmanager",
       "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor",
       "--api-versions", "monitoring.coreos.com/v1/PrometheusRule"]


def helm_bin():
    cache = os.environ.get("UPMON_CACHE") or os.path.expanduser("~/.cache/upmon")
    path = os.path.join(cache, "helm")
    if not os.access(path, os.X_OK):
        pytest.fail("helm is missing from %s (run ci/deps)" % cache, pytrace=False)
    return path


def helm(*args, check=True):
    res = subprocess.run([helm_bin()] + list(args), capture_output=True, text=True, timeout=300)
    if check and res.returncode != 0:
        raise AssertionError("helm %s -> %d:\n%s%s" % (" ".join(args[:3]), res.returncode,
                                                       res.stdout[-3000:], res.stderr[-3000:]))
    return res


@pytest.fixture(scope="module", autouse=True)
def dependencies():
    helm("dependency", "update", CHART, "--skip-refresh")


def render(*args, release="upmon", ns="upmon", profiles=()):
    argv = ["template", release, CHART, "-n", ns] + API
    for p in profiles:
        argv += ["-f", os.path.join(CHART, p)]
    out = helm(*(argv + list(args))).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def of_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def pod_specs(docs):
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield d["metadata"]["name"], d["spec"]["template"]["spec"]


@pytest.mark.parametrize("profiles", PROFILES, ids=lambda p: "+".join(p) or "defaults")
def test_lint_strict_and_render(profiles):
    argv = ["lint", "--strict", CHART]
    for p in profiles:
        argv += ["-f", os.path.join(CHART, p)]
    helm(*argv)
    docs = render(profiles=profiles)
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for kind, name in (("Deployment", "upmon-ingest"), ("Deployment", "upmon-analyzer"),
                       ("Deployment", "upmon-clickhouse-operator"),
                       ("StatefulSet", "upmon-kafka"), ("ClickHouseCluster", "upmon-clickhouse"),
                       ("PrometheusRule", "upmon")):
        assert (kind, name) in names, sorted(names)


def test_packaged_copies_equal_their_sources():
    """charts/upmon/files holds copies (Helm reads only inside the chart): sync-files makes
    them; they must be byte-identical to alerts/ and dashboards/."""
    pairs = [("alerts/*.rules.yml", "files/alerts"), ("dashboards/*.json", "files/dashboards")]
    for pattern, sub in pairs:
        sources = sorted(glob.glob(os.path.join(ROOT, pattern)))
        copies = sorted(glob.glob(os.path.join(CHART, sub, os.path.basename(pattern))))
        assert [os.path.basename(p) for p in copies] == [os.path.basename(p) for p in sources], \
            "run charts/upmon/sync-files"
        for s, c in zip(sources, copies):
            assert filecmp.cmp(s, c, shallow=False), "%s differs from %s: run " \
                "charts/upmon/sync-files" % (c, s)
    assert glob.glob(os.path.join(ROOT, "alerts", "*.rules.yml"))


def test_prometheusrule_is_the_alert_rules():
    rule = of_kind(render(), "PrometheusRule")
    assert len(rule) == 1
    want = []
    for path in sorted(glob.glob(os.path.join(ROOT, "alerts", "*.rules.yml"))):
        with open(path) as f:
            want += yaml.safe_load(f)["groups"]
    got = rule[0]["spec"]["groups"]
    assert sorted(g["name"] for g in got) == sorted(g["name"] for g in want)
    by_name = {g["name"]: g for g in got}
    for g in want:
        assert by_name[g["name"]] == g, "group %s differs from alerts/" % g["name"]


def test_release_label_on_monitoring_objects():
    kps = ("--set", "releaseLabel=kps", "--set", "monitoring.enabled=false")
    for args, want in (((), "rel1"), (kps, "kps")):
        docs = render(*args, release="rel1")
        objs = [o for o in of_kind(docs, "ServiceMonitor") + of_kind(docs, "PrometheusRule")
                if o["metadata"]["labels"]["app.kubernetes.io/name"] == "upmon"]
        assert len(objs) >= 4
        for o in objs:
            assert o["metadata"]["labels"]["release"] == want, o["metadata"]
    # With the bundled monitoring chart, a releaseLabel it does not select is refused.
    res = helm(*(["template", "rel1", CHART] + API + ["--set", "releaseLabel=kps"]), check=False)
    assert res.returncode != 0 and "monitoring.release.label" in res.stderr, res.stderr
    docs = render("--set", "releaseLabel=kps", "--set", "monitoring.release.label=kps")
    assert of_kind(docs, "Prometheus")[0]["spec"]["serviceMonitorSelector"]["matchLabels"][
        "release"] == "kps"
    # The bundled Prometheus selects exactly that label.
    prom = of_kind(render(release="rel1"), "Prometheus")
    assert prom, "the monitoring chart renders a Prometheus"
    assert prom[0]["spec"]["serviceMonitorSelector"]["matchLabels"]["release"] == "rel1"
    assert prom[0]["spec"]["ruleSelector"]["matchLabels"]["release"] == "rel1"


def test_monitoring_off_keeps_the_objects_kube_prometheus_stack_reads():
    docs = render("--set", "monitoring.enabled=false", "--set", "releaseLabel=kps")
    kinds = {d["kind"] for d in docs}
    assert "Prometheus" not in kinds and "Alertmanager" not in kinds
    assert of_kind(docs, "ServiceMonitor") and of_kind(docs, "PrometheusRule")
    ds = [d for d in of_kind(docs, "ConfigMap")
          if d["metadata"]["labels"].get("grafana_datasource") == "1"]
    assert ds, "the ClickHouse data source ConfigMap for Grafana's sidecar"


def service_configs(docs):
    out = {}
    for d in of_kind(docs, "ConfigMap"):
        for key, text in (d.get("data") or {}).items():
            svc = key[:-len(".yaml")]
            if key.endswith(".yaml") and svc in ("ingest", "analyzer", "simulator", "operator"):
                out[svc] = text
    return out


def binary(svc):
    path = os.path.join(os.environ.get("UPMON_BUILD_DIR") or os.path.join(ROOT, "build"),
                        "bin", "upmon-" + svc)
    if not os.access(path, os.X_OK):
        pytest.fail("%s not built" % path, pytrace=False)
    return path


@pytest.mark.parametrize("profiles", PROFILES, ids=lambda p: "+".join(p) or "defaults")
def test_every_service_accepts_its_rendered_config(profiles, tmp_path):
    """The chart's values are the services' own keys: each service's --check-config accepts
    what the chart renders for it (a misspelt key would stop the pod at start)."""
    configs = service_configs(render(profiles=profiles))
    assert {"ingest", "analyzer", "operator"} <= set(configs), sorted(configs)
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPMON_")}
    env["HOME"] = "/nonexistent"
    for svc, text in configs.items():
        path = tmp_path / (svc + ".yaml")
        path.write_text(text)
        res = subprocess.run([binary(svc), "--config", str(path), "--check-config"], env=env,
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, "%s rejects its rendered config: %s\n%s" % (
            svc, res.stderr, text)
    cfg = yaml.safe_load(configs["analyzer"])
    assert cfg["lease"]["name"] == "upmon-analyzer" and cfg["lease"]["namespace"] == "upmon"
    ing = yaml.safe_load(configs["ingest"])
    assert ing["ingest"]["topology_resource"] == "upmon-clickhouse"
    assert ing["kafka"]["brokers"] == "upmon-kafka.upmon.svc.cluster.local:9092"


def test_restricted_pod_security_everywhere():
    docs = render("--set", "simulator.enabled=true")
    specs = list(pod_specs(docs))
    assert len(specs) >= 6
    for name, spec in specs:
        psc = spec.get("securityContext", {})
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c.get("securityContext", {})
            where = "%s/%s" % (name, c["name"])
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, where
            seccomp = sc.get("seccompProfile") or psc.get("seccompProfile") or {}
            assert seccomp.get("type") == "RuntimeDefault", where
            assert c.get("resources", {}).get("limits", {}).get("memory"), where


def test_upmon_rbac_is_least_privilege():
    docs = render()
    roles = {d["metadata"]["name"]: d["rules"] for d in of_kind(docs, "Role")}
    assert roles["upmon-analyzer"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "resourceNames": ["upmon-analyzer"], "verbs": ["get", "update"]}]
    ing = roles["upmon-ingest"]
    assert all(r["apiGroups"] == ["upmon.io"] and r["resources"] == ["clickhouseclusters"]
               for r in ing)
    assert {v for r in ing for v in r["verbs"]} == {"get", "list", "watch"}
    # Only the services that call the API get a token; no upmon ClusterRole.
    ups = [d for d in docs if d["metadata"]["labels"].get("app.kubernetes.io/name") == "upmon"]
    assert not [d for d in ups if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    sim = render("--set", "simulator.enabled=true")
    dep = [d for d in of_kind(sim, "Deployment") if d["metadata"]["name"] == "upmon-simulator"]
    assert dep[0]["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_pdbs_networkpolicies_and_probes():
    docs = render()
    pdbs = {d["metadata"]["name"] for d in of_kind(docs, "PodDisruptionBudget")}
    assert {"upmon-ingest", "upmon-analyzer"} <= pdbs, pdbs
    nps = {d["metadata"]["name"]: d for d in of_kind(docs, "NetworkPolicy")}
    assert {"upmon-ingest", "upmon-analyzer"} <= set(nps)
    assert nps["upmon-ingest"]["spec"]["ingress"][0]["ports"] == [{"port": "http",
                                                                    "protocol": "TCP"}]
    for d in of_kind(docs, "Deployment"):
        if d["metadata"]["labels"].get("app.kubernetes.io/name") != "upmon":
            continue
        assert d["spec"]["template"]["spec"]["enableServiceLinks"] is False
        c = d["spec"]["template"]["spec"]["containers"][0]
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_generated_secrets_are_random_and_never_in_configmaps():
    a = {d["metadata"]["name"]: d.get("data") for d in of_kind(render(), "Secret")}
    b = {d["metadata"]["name"]: d.get("data") for d in of_kind(render(), "Secret")}
    assert a["upmon-clickhouse-users"] != b["upmon-clickhouse-users"], \
        "a fresh install must not get a fixed password"
    docs = render()
    for cm in of_kind(docs, "ConfigMap"):
        text = yaml.safe_dump(cm.get("data") or {})
        assert "password: " not in text.replace("password: $UPMON_CLICKHOUSE_PASSWORD", ""), \
            cm["metadata"]["name"]


BAD = [
    (["--set", "ingest.replicas=0"], "ingest.replicas"),
    (["--set", "analyzer.replicas=9"], "analyzer.replicas"),
    (["--set", "simulator.rate=-5"], "simulator.rate"),
    (["--set", "ingest.port=80"], "ingest.port"),
    (["--set", "ingst.replicas=1"], "ingst"),
    (["--set", "ingest.image.pullPolicy=Sometimes"], "ingest.image.pullPolicy"),
    (["--set", "externalKafka.brokers=no-port"], "externalKafka.brokers"),
    (["--set", "releaseLabel=not a label"], "releaseLabel"),
    (["--set", "serviceMonitor.interval=5 parsecs"], "serviceMonitor.interval"),
    (["--set", "ingest.config.colour=red"], "ingest.config"),
    (["--set", "kafka.enabled=false"], "externalKafka.brokers"),
]


@pytest.mark.parametrize("args,key", BAD, ids=[k for _, k in BAD])
def test_bad_values_are_rejected_naming_the_key(args, key):
    res = helm(*(["template", "upmon", CHART] + API + args), check=False)
    assert res.returncode != 0, "accepted %s" % args
    msg = res.stderr.replace("/", ".")
    assert key in msg or key.split(".")[-1] in msg, res.stderr


def charts_with_reference():
    out = []
    for readme in sorted(glob.glob(os.path.join(ROOT, "charts", "*", "README.md"))):
        with open(readme) as f:
            if "<!-- values-reference:begin -->" in f.read():
                out.append(os.path.basename(os.path.dirname(readme)))
    return out


def test_values_reference_in_the_readmes_is_current():
    charts = charts_with_reference()
    assert "upmon" in charts, charts
    for chart in charts:
        readme = os.path.join(ROOT, "charts", chart, "README.md")
        res = subprocess.run([os.path.join(ROOT, "charts", "values-reference"),
                              os.path.join(ROOT, "charts", chart), "--check", readme],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
