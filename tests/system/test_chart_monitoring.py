"""charts/monitoring rendered and linted: the template logic a user relies on, without a cluster.

helm lint --strict and helm template with the defaults and values-local.yaml; the refusal to
render without the Prometheus Operator's CRDs; the Prometheus's selectors on the release label;
the Alertmanager configuration (webhook receiver, send_resolved; accepted by Debian's amtool
0.25, the local node's Alertmanager); Grafana's admin Secret (kept, generated, never a default);
restricted pod security on every container; least-privilege RBAC; the custom resources against
the v0.85.0 CRD schemas; NOTES; values.schema.json rejections naming the key. No cluster and no
`stack` fixture: helm only (test_chart_install.py-style tests on the real node are elsewhere)."""

import base64
import glob
import os
import re
import shutil
import subprocess

import jsonschema
import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHART = os.path.join(ROOT, "charts", "monitoring")
LOCAL = os.path.join(CHART, "values-local.yaml")
# Rendering without a cluster: the Prometheus Operator's API is declared present.
API = ["--api-versions", "monitoring.coreos.com/v1/Prometheus"]
PROM_OPERATOR = "github.com/prometheus-operator/prometheus-operator@v0.85.0"
CRD_MESSAGE = "The Prometheus Operator's CRDs are not installed"


def helm_bin():
    cache = os.environ.get("UPMON_CACHE") or os.path.expanduser("~/.cache/upmon")
    candidates = [os.path.join(cache, "helm")] + sorted(
        glob.glob(os.path.join(cache, "helm-v*", "helm")), reverse=True)
    for path in candidates:
        if os.access(path, os.X_OK):
            return path
    pytest.fail("helm is missing: neither %s/helm nor %s/helm-v*/helm (run ci/deps)"
                % (cache, cache), pytrace=False)


def helm(*args, check=True):
    res = subprocess.run([helm_bin()] + list(args), capture_output=True, text=True, timeout=300)
    if check and res.returncode != 0:
        raise AssertionError("helm %s -> %d:\n%s%s" % (" ".join(args[:3]), res.returncode,
                                                       res.stdout[-3000:], res.stderr[-3000:]))
    return res


def render(*args, release="upmon", ns="upmon", local=False, chart=CHART):
    argv = ["template", release, chart, "-n", ns] + API
    if local:
        argv += ["-f", LOCAL]
    out = helm(*(argv + list(args))).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def of_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def one(docs, kind, name=None):
    found = [d for d in of_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, "%s %s: %s" % (kind, name, [d["metadata"]["name"] for d in found])
    return found[0]


def pod_specs(docs):
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield d["metadata"]["name"], d["spec"]["template"]["spec"]


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


def rules_of(docs, kind, name=None):
    out = []
    for d in of_kind(docs, kind):
        if name is None or d["metadata"]["name"] == name:
            out += d["rules"]
    return out


# Every feature switched on, for the checks that must hold whatever the values.
EVERYTHING = ["--set", "prometheusOperator.kubeletService.enabled=true",
              "--set", "prometheusOperator.namespaces={upmon,apps}",
              "--set", "alertmanager.webhookUrl=https://hooks.example/upmon",
              "--set", "alertmanager.storage.enabled=true",
              "--set", "prometheus.replicas=2"]
PROFILES = {"defaults": dict(), "local": dict(local=True),
            "everything": dict(args=EVERYTHING),
            "all-namespaces": dict(args=["--set", "prometheusOperator.allNamespaces=true"])}


def render_profile(name):
    p = PROFILES[name]
    return render(*p.get("args", []), local=p.get("local", False))


# --- lint and render -------------------------------------------------------------------------

@pytest.mark.parametrize("local", [False, True], ids=["defaults", "local"])
def test_lint_strict(local):
    argv = ["lint", "--strict", CHART, "--set", "crdCheck=false"]
    if local:
        argv += ["-f", LOCAL]
    helm(*argv)


def test_lint_reports_missing_crds_and_lints_on():
    """helm lint has no --api-versions; it renders in lint mode, where `fail` is an [INFO]."""
    res = helm("lint", "--strict", CHART)
    out = res.stdout + res.stderr
    assert "[INFO] Fail" in out and CRD_MESSAGE in out, out
    # A real problem still fails the lint.
    res = helm("lint", "--strict", CHART, "--set", "prometheus.replicas=0", check=False)
    assert res.returncode != 0


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_render(profile):
    docs = render_profile(profile)
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for kind, name in (("Deployment", "upmon-monitoring-operator"),
                       ("Prometheus", "upmon-monitoring"), ("Alertmanager", "upmon-monitoring"),
                       ("Secret", "upmon-monitoring-alertmanager-config"),
                       ("Service", "upmon-monitoring-prometheus"),
                       ("Service", "upmon-monitoring-alertmanager"),
                       ("Service", "upmon-monitoring-operator"),
                       ("ServiceAccount", "upmon-monitoring-prometheus")):
        assert (kind, name) in names, sorted(names)
    grafana = ("Deployment", "upmon-monitoring-grafana") in names
    assert grafana == (profile != "local"), "grafana is off only in values-local.yaml"
    for d in docs:  # names are DNS labels the operator can still prefix
        assert re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", d["metadata"]["name"]), d["metadata"]
        assert len(d["metadata"]["name"]) <= 63
        assert d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "upmon"


def test_no_crds_in_the_chart():
    """The CRDs are a prerequisite installed by k8s/up, never vendored."""
    assert not os.path.exists(os.path.join(CHART, "crds"))
    for path in glob.glob(os.path.join(CHART, "**", "*"), recursive=True):
        if os.path.isfile(path):
            with open(path, errors="replace") as f:
                assert "kind: CustomResourceDefinition" not in f.read(), path


# --- the CRD check ---------------------------------------------------------------------------

def test_missing_crds_fail_with_a_clear_message():
    res = helm("template", "upmon", CHART, "-n", "upmon", check=False)
    assert res.returncode != 0
    msg = res.stderr
    assert CRD_MESSAGE in msg, msg
    for word in ("monitoring.coreos.com/v1 Prometheus", "v0.85.0", "k8s/up", "--server-side",
                 "stripped-down-crds.yaml", "--api-versions monitoring.coreos.com/v1/Prometheus",
                 "crdCheck=false", "servicemonitors", "thanosrulers"):
        assert word in msg, (word, msg)


def test_crd_check_can_be_turned_off():
    plain = helm("template", "upmon", CHART, "-n", "upmon", "--set", "crdCheck=false").stdout
    with_api = helm("template", "upmon", CHART, "-n", "upmon", *API).stdout
    strip = lambda s: re.sub(r"admin-password: \S+", "", s)  # noqa: E731 (random per render)
    assert strip(plain) == strip(with_api)


# --- the release label -----------------------------------------------------------------------

SELECTORS = ("serviceMonitor", "podMonitor", "probe", "scrapeConfig", "rule")


@pytest.mark.parametrize("label,expected", [(None, "upmon"), ("kps", "kps")])
def test_selectors_use_the_release_label(label, expected):
    args = ["--set", "release.label=%s" % label] if label else []
    docs = render(*args)
    spec = one(docs, "Prometheus")["spec"]
    for s in SELECTORS:
        assert spec[s + "Selector"] == {"matchLabels": {"release": expected}}, s
        assert spec[s + "NamespaceSelector"] == {}, s  # every namespace the operator watches
    for sm in of_kind(docs, "ServiceMonitor"):
        assert sm["metadata"]["labels"]["release"] == expected, sm["metadata"]["name"]
    assert len(of_kind(docs, "ServiceMonitor")) == 3


def test_release_label_defaults_to_the_release_name():
    spec = one(render(release="other"), "Prometheus")["spec"]
    assert spec["ruleSelector"]["matchLabels"] == {"release": "other"}


def test_namespace_scope_release():
    spec = one(render("--set", "prometheus.namespaceScope=release", ns="mon"), "Prometheus")["spec"]
    for s in SELECTORS:
        assert spec[s + "NamespaceSelector"] == {
            "matchLabels": {"kubernetes.io/metadata.name": "mon"}}, s


def test_prometheus_alerts_its_alertmanager_and_services_select_operator_pods():
    docs = render()
    prom, am = one(docs, "Prometheus"), one(docs, "Alertmanager")
    target = prom["spec"]["alerting"]["alertmanagers"]
    assert target == [{"namespace": "upmon", "name": "upmon-monitoring-alertmanager",
                       "port": "web", "apiVersion": "v2"}]
    # The operator labels its pods app.kubernetes.io/name=<kind> and <kind>=<resource name>.
    assert one(docs, "Service", "upmon-monitoring-alertmanager")["spec"]["selector"] == {
        "app.kubernetes.io/name": "alertmanager", "alertmanager": am["metadata"]["name"]}
    assert one(docs, "Service", "upmon-monitoring-prometheus")["spec"]["selector"] == {
        "app.kubernetes.io/name": "prometheus", "prometheus": prom["metadata"]["name"]}
    # Self-monitoring selects the chart's own Services by their labels and port names.
    for sm in of_kind(docs, "ServiceMonitor"):
        svc = one(docs, "Service", sm["metadata"]["name"])
        for k, v in sm["spec"]["selector"]["matchLabels"].items():
            assert svc["metadata"]["labels"][k] == v
        assert sm["spec"]["endpoints"][0]["port"] in [p["name"] for p in svc["spec"]["ports"]]


# --- the Alertmanager configuration -----------------------------------------------------------

def alertmanager_config(docs):
    am = one(docs, "Alertmanager")
    secret = one(docs, "Secret", am["spec"]["configSecret"])
    return secret["stringData"]["alertmanager.yaml"]


def amtool_check(text, tmp_path):
    amtool = shutil.which("amtool")
    if not amtool:
        pytest.fail("amtool is missing (Debian's prometheus-alertmanager; run ci/deps)",
                    pytrace=False)
    path = tmp_path / "alertmanager.yaml"
    path.write_text(text)
    res = subprocess.run([amtool, "check-config", str(path)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_alertmanager_webhook_receiver_with_send_resolved(tmp_path):
    url = "https://hooks.example/upmon?token=abc"
    text = alertmanager_config(render("--set", "alertmanager.webhookUrl=" + url))
    cfg = yaml.safe_load(text)
    assert cfg["route"]["receiver"] == "webhook"
    assert cfg["route"]["group_by"] == ["alertname"]
    assert cfg["receivers"] == [{"name": "webhook", "webhook_configs": [
        {"url": url, "send_resolved": True}]}]
    amtool_check(text, tmp_path)


def test_alertmanager_null_receiver_without_url(tmp_path):
    text = alertmanager_config(render())
    cfg = yaml.safe_load(text)
    assert cfg["route"]["receiver"] == "null"
    assert cfg["receivers"] == [{"name": "null"}]
    amtool_check(text, tmp_path)


def test_alertmanager_local_timings_and_version():
    docs = render(local=True)
    cfg = yaml.safe_load(alertmanager_config(docs))
    assert (cfg["route"]["group_wait"], cfg["route"]["group_interval"]) == ("5s", "10s")
    spec = one(docs, "Alertmanager")["spec"]
    assert spec["version"] == "v0.25.0"
    assert spec["automountServiceAccountToken"] is False


# --- Grafana ---------------------------------------------------------------------------------

def test_grafana_password_secret_kept_generated_never_default():
    passwords = set()
    for _ in range(2):
        secret = one(render(), "Secret", "upmon-monitoring-grafana")
        assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        pw = base64.b64decode(secret["data"]["admin-password"]).decode()
        assert re.match(r"^[A-Za-z0-9]{32}$", pw), pw
        assert base64.b64decode(secret["data"]["admin-user"]).decode() == "admin"
        passwords.add(pw)
    assert len(passwords) == 2, "a fresh random password per render without a cluster"
    with open(os.path.join(CHART, "values.yaml")) as f:
        values = yaml.safe_load(f)

    def keys(d):
        for k, v in d.items():
            yield k
            if isinstance(v, dict):
                yield from keys(v)

    assert not [k for k in keys(values) if "password" in k.lower()], "no password value"
    # The password reaches Grafana and the reloading sidecar from the Secret only.
    dep = one(render(), "Deployment", "upmon-monitoring-grafana")
    for c in dep["spec"]["template"]["spec"]["containers"]:
        for e in c.get("env", []):
            if "PASSWORD" in e["name"] and e["name"] != "UPMON_CLICKHOUSE_PASSWORD":
                assert "value" not in e and e["valueFrom"]["secretKeyRef"] == {
                    "name": "upmon-monitoring-grafana", "key": "admin-password"}, e


def test_grafana_existing_secret():
    docs = render("--set", "grafana.existingSecret=mine")
    assert not [s for s in of_kind(docs, "Secret") if "grafana" in s["metadata"]["name"]]
    grafana = one(docs, "Deployment", "upmon-monitoring-grafana")["spec"]["template"]["spec"]
    env = env_of(grafana["containers"][0])
    assert env["GF_SECURITY_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "mine"


def test_grafana_sidecars_and_provisioning():
    extra = ("grafana:\n  extraEnv:\n    - name: UPMON_CLICKHOUSE_PASSWORD\n      valueFrom:\n"
             "        secretKeyRef: {name: '{{ .Release.Name }}-clickhouse-users', "
             "key: upmon-password}\n")
    res = subprocess.run([helm_bin(), "template", "upmon", CHART, "-n", "upmon", "-f", "-"] + API,
                         input=extra, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    docs = [d for d in yaml.safe_load_all(res.stdout) if d]
    spec = one(docs, "Deployment", "upmon-monitoring-grafana")["spec"]["template"]["spec"]
    cs = {c["name"]: c for c in spec["containers"] + spec["initContainers"]}
    assert set(cs) == {"grafana", "dashboards", "datasources", "datasources-init"}
    g = env_of(cs["grafana"])
    assert g["GF_INSTALL_PLUGINS"]["value"] == "grafana-clickhouse-datasource"
    assert g["UPMON_CLICKHOUSE_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == \
        "upmon-clickhouse-users"  # extraEnv goes through tpl
    assert cs["grafana"]["image"] == "grafana/grafana:11.3.0"
    for name, label, method in (("dashboards", "grafana_dashboard", "WATCH"),
                                ("datasources", "grafana_datasource", "WATCH"),
                                ("datasources-init", "grafana_datasource", "LIST")):
        e = env_of(cs[name])
        assert cs[name]["image"] == "quay.io/kiwigrid/k8s-sidecar:1.28.0"
        assert (e["LABEL"]["value"], e["LABEL_VALUE"]["value"], e["METHOD"]["value"]) == \
            (label, "1", method), name
        assert e["NAMESPACE"]["value"] == "upmon"
    assert env_of(cs["dashboards"])["FOLDER_ANNOTATION"]["value"] == "grafana_folder"
    assert env_of(cs["datasources"])["REQ_URL"]["value"].endswith(
        "/api/admin/provisioning/datasources/reload")
    # The token only in the sidecars; Grafana's data dirs are emptyDirs.
    assert spec["automountServiceAccountToken"] is False
    token = "/var/run/secrets/kubernetes.io/serviceaccount"
    for name, c in cs.items():
        has = any(m["mountPath"] == token for m in c.get("volumeMounts", []))
        assert has == (name != "grafana"), name
    mounts = {m["mountPath"]: m["name"] for m in cs["grafana"]["volumeMounts"]}
    vols = {v["name"]: v for v in spec["volumes"]}
    for path in ("/var/lib/grafana", "/tmp"):
        assert "emptyDir" in vols[mounts[path]], path
    # Its sidecars' Role: configmaps, read-only, in the namespace.
    assert rules_of(docs, "Role", "upmon-monitoring-grafana") == [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}]
    # The Prometheus data source is published for the sidecar like charts/upmon's.
    ds = one(docs, "ConfigMap", "upmon-monitoring-grafana-datasource-prometheus")
    assert ds["metadata"]["labels"]["grafana_datasource"] == "1"
    src = yaml.safe_load(ds["data"]["prometheus.yaml"])["datasources"][0]
    assert src["url"] == "http://upmon-monitoring-prometheus.upmon.svc.cluster.local:9090"
    provider = yaml.safe_load(one(docs, "ConfigMap", "upmon-monitoring-grafana-dashboard-provider")
                              ["data"]["provider.yaml"])["providers"][0]
    assert provider["options"]["path"] == env_of(cs["dashboards"])["FOLDER"]["value"]


# --- pod security ----------------------------------------------------------------------------

def assert_restricted_container(where, c):
    sc = c.get("securityContext") or {}
    assert sc.get("allowPrivilegeEscalation") is False, where
    assert sc.get("readOnlyRootFilesystem") is True, where
    assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
    assert not sc.get("capabilities", {}).get("add"), where
    assert not sc.get("privileged"), where
    assert sc.get("runAsUser", 1) != 0, where


def assert_restricted_pod(where, psc):
    assert psc.get("runAsNonRoot") is True, where
    assert psc.get("runAsUser", 1) != 0, where
    assert psc.get("seccompProfile") == {"type": "RuntimeDefault"}, where


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_container_is_restricted(profile):
    docs = render_profile(profile)
    specs = list(pod_specs(docs))
    assert specs
    for name, spec in specs:
        assert_restricted_pod(name, spec.get("securityContext", {}))
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(key), (name, key)
        for v in spec.get("volumes", []):
            assert "hostPath" not in v, (name, v)
        for c in spec.get("initContainers", []) + spec["containers"]:
            assert_restricted_container("%s/%s" % (name, c["name"]), c)
            assert not any(p.get("hostPort") for p in c.get("ports", [])), (name, c["name"])
    # The pods the operator makes: the pod-level part is the chart's (the operator adds the
    # container-level part to every container it generates).
    for kind in ("Prometheus", "Alertmanager"):
        spec = one(docs, kind)["spec"]
        assert_restricted_pod(kind, spec["securityContext"])
        assert spec["securityContext"]["runAsUser"] == 65534
        assert not spec.get("containers") and not spec.get("initContainers"), kind


def test_grafana_runs_as_472():
    spec = one(render(), "Deployment", "upmon-monitoring-grafana")["spec"]["template"]["spec"]
    psc = spec["securityContext"]
    assert (psc["runAsUser"], psc["runAsGroup"], psc["fsGroup"]) == (472, 472, 472)


# --- RBAC ------------------------------------------------------------------------------------

def all_rules(docs):
    for kind in ("Role", "ClusterRole"):
        for d in of_kind(docs, kind):
            for r in d["rules"]:
                yield kind, d["metadata"]["name"], d["metadata"].get("namespace"), r


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_rbac_no_wildcards_no_escalation(profile):
    for kind, name, ns, r in all_rules(render_profile(profile)):
        where = (kind, name, ns, r)
        assert "*" not in r["verbs"] and "*" not in r["resources"], where
        assert "*" not in r.get("apiGroups", []), where
        assert not set(r["verbs"]) & {"escalate", "bind", "impersonate", "patch"} or \
            r["resources"] in (["prometheuses/status", "alertmanagers/status"], ["events"]), where
        assert not set(r["resources"]) & {"pods/exec", "roles", "rolebindings", "clusterroles",
                                          "clusterrolebindings", "serviceaccounts/token"}, where
        if "pods" in r["resources"]:
            assert set(r["verbs"]) <= {"get", "list", "watch"}, where
        if "secrets" in r["resources"]:
            assert name.endswith("-operator"), where  # only the operator touches Secrets


def test_operator_rbac_default_is_namespaced():
    docs = render(ns="mon")
    role = one(docs, "Role", "upmon-monitoring-operator")
    assert role["metadata"]["namespace"] == "mon"
    ns_rules = [r for r in role["rules"] if "namespaces" in r["resources"]]
    assert ns_rules == [{"apiGroups": [""], "resources": ["namespaces"],
                         "resourceNames": ["mon"], "verbs": ["get"]}]
    granted = {res for r in role["rules"] for res in r["resources"]}
    assert not granted & {"thanosrulers", "prometheusagents", "nodes", "endpoints",
                          "daemonsets", "ingresses"}
    # Cluster-wide: Events and StorageClasses, nothing else.
    cluster = rules_of(docs, "ClusterRole")
    assert cluster == [
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
        {"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"], "verbs": ["get"]}]
    args = one(docs, "Deployment", "upmon-monitoring-operator")["spec"]["template"]["spec"][
        "containers"][0]["args"]
    assert "--namespaces=mon" in args
    assert not [a for a in args if a.startswith("--kubelet-service")]
    assert "--prometheus-config-reloader=quay.io/prometheus-operator/" \
           "prometheus-config-reloader:v0.85.0" in args
    binding = one(docs, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "upmon-monitoring-operator",
                                    "namespace": "mon"}]


def test_operator_rbac_nothing_cluster_wide():
    docs = render("--set", "prometheusOperator.rbac.clusterRole=false")
    assert not of_kind(docs, "ClusterRole") and not of_kind(docs, "ClusterRoleBinding")


def test_operator_rbac_several_namespaces_and_kubelet():
    docs = render(*EVERYTHING)
    roles = {(d["metadata"]["name"], d["metadata"]["namespace"]) for d in of_kind(docs, "Role")}
    for ns in ("upmon", "apps"):
        assert ("upmon-monitoring-operator", ns) in roles
        assert ("upmon-monitoring-prometheus", ns) in roles
    assert ("upmon-monitoring-operator-kubelet", "kube-system") in roles
    bindings = {(d["metadata"]["name"], d["metadata"]["namespace"])
                for d in of_kind(docs, "RoleBinding")}
    assert roles == bindings
    assert {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list", "watch"]} in \
        rules_of(docs, "ClusterRole")
    args = one(docs, "Deployment", "upmon-monitoring-operator")["spec"]["template"]["spec"][
        "containers"][0]["args"]
    assert "--namespaces=upmon,apps" in args
    assert "--kubelet-service=kube-system/upmon-monitoring-kubelet" in args


def test_operator_rbac_all_namespaces():
    docs = render("--set", "prometheusOperator.allNamespaces=true")
    assert not [r for r in of_kind(docs, "Role") if r["metadata"]["name"].endswith("-operator")]
    names = {d["metadata"]["name"] for d in of_kind(docs, "ClusterRole")}
    assert names == {"upmon-upmon-monitoring-operator", "upmon-upmon-monitoring-prometheus"}
    ns_rule = [r for r in rules_of(docs, "ClusterRole", "upmon-upmon-monitoring-operator")
               if r["resources"] == ["namespaces"]]
    assert ns_rule == [{"apiGroups": [""], "resources": ["namespaces"],
                        "verbs": ["get", "list", "watch"]}]
    args = one(docs, "Deployment", "upmon-monitoring-operator")["spec"]["template"]["spec"][
        "containers"][0]["args"]
    assert not [a for a in args if a.startswith("--namespaces")]


def test_prometheus_rbac_is_read_only_discovery():
    docs = render()
    rules = rules_of(docs, "Role", "upmon-monitoring-prometheus")
    assert rules == [
        {"apiGroups": [""], "resources": ["services", "endpoints", "pods"],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]
    assert one(docs, "Prometheus")["spec"]["serviceAccountName"] == "upmon-monitoring-prometheus"
    am_sa = one(docs, "ServiceAccount", "upmon-monitoring-alertmanager")
    assert am_sa["automountServiceAccountToken"] is False
    assert not [r for r in of_kind(docs, "RoleBinding")
                if r["subjects"][0]["name"] == "upmon-monitoring-alertmanager"]


# --- values-local.yaml -----------------------------------------------------------------------

def test_local_values():
    docs = render(local=True)
    op = one(docs, "Deployment", "upmon-monitoring-operator")["spec"]["template"]["spec"][
        "containers"][0]
    assert (op["image"], op["imagePullPolicy"]) == (
        "localhost/upmon/prometheus-operator:v0.85.0", "Never")
    assert "--prometheus-config-reloader=localhost/upmon/prometheus-config-reloader:v0.85.0" \
        in op["args"]
    prom = one(docs, "Prometheus")["spec"]
    assert (prom["image"], prom["version"], prom["imagePullPolicy"]) == (
        "localhost/upmon/prometheus:2.54.1", "v2.54.1", "Never")
    assert (prom["scrapeInterval"], prom["evaluationInterval"]) == ("5s", "5s")
    assert prom["storage"]["volumeClaimTemplate"]["spec"]["storageClassName"] == "upmon-local"
    am = one(docs, "Alertmanager")["spec"]
    assert (am["image"], am["version"], am["imagePullPolicy"]) == (
        "localhost/upmon/alertmanager:0.25", "v0.25.0", "Never")
    # The operator sets only args on these containers, so the images' ENTRYPOINTs run.
    for name, binary in (("prometheus", "/bin/prometheus"),
                         ("alertmanager", "/usr/bin/prometheus-alertmanager")):
        with open(os.path.join(ROOT, "k8s", "images", name, "Dockerfile")) as f:
            df = f.read()
        assert 'ENTRYPOINT ["%s"]' % binary in df, name
        assert "USER 65534:65534" in df, name
    with open(os.path.join(ROOT, "k8s", "images", "prometheus-config-reloader", "Dockerfile")) as f:
        assert "/bin/prometheus-config-reloader" in f.read()
    for sm in of_kind(docs, "ServiceMonitor"):
        assert sm["spec"]["endpoints"][0]["interval"] == "5s"


# --- the custom resources against the CRDs k8s/up installs -----------------------------------

def crd_dir():
    cache = os.environ.get("GOMODCACHE") or os.path.expanduser("~/go/pkg/mod")
    d = os.path.join(cache, PROM_OPERATOR, "example", "prometheus-operator-crd")
    if not os.path.isdir(d):
        pytest.fail("the Prometheus Operator %s module is missing from %s (ci/kube downloads it)"
                    % (PROM_OPERATOR, cache), pytrace=False)
    return d


class CRDLoader(yaml.SafeLoader):
    """PyYAML reads a bare `=` as YAML 1.1's value tag; the CRDs use it as a string."""


CRDLoader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: node.value)


def crd_schema(kind):
    for path in glob.glob(os.path.join(crd_dir(), "*.yaml")):
        with open(path) as f:
            crd = yaml.load(f, Loader=CRDLoader)
        if crd["spec"]["names"]["kind"] == kind:
            version = [v for v in crd["spec"]["versions"] if v["name"] == "v1"][0]
            return version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    raise AssertionError("no CRD for " + kind)


def test_crd_files_are_the_ten_listed_in_the_readme():
    with open(os.path.join(CHART, "README.md")) as f:
        readme = f.read()
    plurals = sorted(os.path.basename(p)[len("monitoring.coreos.com_"):-len(".yaml")]
                     for p in glob.glob(os.path.join(crd_dir(), "*.yaml")))
    assert len(plurals) == 10
    for p in plurals:
        assert "`%s`" % p in readme, p


def unknown_fields(value, schema, path="spec"):
    """Fields the API server would prune silently (CRD schemas do not reject them)."""
    if isinstance(value, dict) and "properties" in schema:
        for k, v in value.items():
            if k not in schema["properties"]:
                if not schema.get("x-kubernetes-preserve-unknown-fields"):
                    yield "%s.%s" % (path, k)
            else:
                yield from unknown_fields(v, schema["properties"][k], "%s.%s" % (path, k))
    elif isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            yield from unknown_fields(v, schema["items"], "%s[%d]" % (path, i))


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_custom_resources_match_the_crd_schemas(profile):
    docs = render_profile(profile)
    for kind in ("Prometheus", "Alertmanager", "ServiceMonitor"):
        schema = crd_schema(kind)
        for d in of_kind(docs, kind):
            assert d["apiVersion"] == "monitoring.coreos.com/v1"
            errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(d["spec"]), key=str)
            assert not errors, "%s %s: %s" % (kind, d["metadata"]["name"],
                                              [e.message for e in errors][:5])
            unknown = list(unknown_fields(d["spec"], schema))
            assert not unknown, "%s %s: unknown fields %s" % (kind, d["metadata"]["name"], unknown)


# --- NOTES -----------------------------------------------------------------------------------

def test_notes(tmp_path):
    """NOTES.txt rendered through a copy of the chart (helm template never prints NOTES)."""
    chart = tmp_path / "monitoring"
    shutil.copytree(CHART, chart)
    shutil.move(str(chart / "templates" / "NOTES.txt"), str(chart / "notes.txt"))
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
        "data:\n  notes: {{ tpl (.Files.Get \"notes.txt\") . | toJson }}\n")
    notes = one(render(chart=str(chart), ns="mon"), "ConfigMap", "notes")["data"]["notes"]
    for line in ("kubectl -n mon port-forward svc/upmon-monitoring-prometheus 9090:9090",
                 "kubectl -n mon port-forward svc/upmon-monitoring-alertmanager 9093:9093",
                 "kubectl -n mon port-forward svc/upmon-monitoring-grafana 3000:3000",
                 "kubectl -n mon get secret upmon-monitoring-grafana "
                 "-o jsonpath='{.data.admin-password}' | base64 -d",
                 "release: upmon"):
        assert line in notes, (line, notes)


# --- values.schema.json ----------------------------------------------------------------------

@pytest.mark.parametrize("setting,key", [
    ("prometheus.replicas=0", "prometheus.replicas"),
    ("alertmanager.replicas=9", "alertmanager.replicas"),
    ("alertmanager.webhookUrl=ftp://x", "alertmanager.webhookUrl"),
    ("prometheus.retention=10days", "prometheus.retention"),
    ("prometheus.scrapeInterval=fast", "prometheus.scrapeInterval"),
    ("prometheus.version=2.42", "prometheus.version"),
    ("alertmanager.version=latest", "alertmanager.version"),
    ("prometheus.storage.size=lots", "prometheus.storage.size"),
    ("prometheus.namespaceScope=all", "prometheus.namespaceScope"),
    ("grafana.image.pullPolicy=Sometimes", "grafana.image.pullPolicy"),
    ("prometheusOperator.image.repository=", "prometheusOperator.image.repository"),
    ("prometheusOperator.logLevel=loud", "prometheusOperator.logLevel"),
    ("prometheusOperator.namespaces[0]=Bad_NS", "prometheusOperator.namespaces.0"),
    ("prometheusOperator.configReloader.memoryLimit=lots",
     "prometheusOperator.configReloader.memoryLimit"),
    ("release.label=not a label", "release.label"),
    ("fullnameOverride=a-name-longer-than-thirty-nine-characters", "fullnameOverride"),
    ("crdCheck=maybe", "crdCheck"),
    ("grafana.sidecar.dashboards.labelValue=x y", "grafana.sidecar.dashboards.labelValue"),
    ("prometheus.resources.limits.memory=much", "prometheus.resources.limits.memory"),
    ("bogus=1", "Additional property bogus"),
    ("prometheus.bogus=1", "Additional property bogus"),
    ("grafana.sidecar.bogus=1", "Additional property bogus"),
])
def test_schema_rejects_naming_the_key(setting, key):
    res = helm("template", "upmon", CHART, "-n", "upmon", *API, "--set", setting, check=False)
    assert res.returncode != 0, setting
    assert "values don't meet the specifications of the schema" in res.stderr, res.stderr
    assert key in res.stderr, (key, res.stderr)


@pytest.mark.parametrize("args,words", [
    (["--set", "prometheusOperator.namespaces={apps}"],
     ["prometheusOperator.namespaces", "must include the release namespace \"upmon\""]),
    (["--set", "prometheusOperator.namespaces={upmon}", "--set",
      "prometheusOperator.allNamespaces=true"],
     ["prometheusOperator.allNamespaces", "prometheusOperator.namespaces"]),
])
def test_checks_across_values(args, words):
    res = helm("template", "upmon", CHART, "-n", "upmon", *API, *args, check=False)
    assert res.returncode != 0
    for w in words:
        assert w in res.stderr, (w, res.stderr)


# --- documentation ---------------------------------------------------------------------------

def test_every_value_is_documented():
    """Each leaf of values.yaml has a `# --` comment and a row in README.md's table."""
    with open(os.path.join(CHART, "values.yaml")) as f:
        text = f.read()
    with open(os.path.join(CHART, "README.md")) as f:
        readme = f.read()
    values = yaml.safe_load(text)
    documented, stack, pending = set(), [], False
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("# --"):
            pending = True
            continue
        m = re.match(r"^(\s*)([A-Za-z0-9_]+):", line)
        if not m or s.startswith("#"):
            continue
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m.group(2)))
        if pending:
            documented.add(".".join(k for _, k in stack))
            pending = False

    def leaves(d, prefix=()):
        for k, v in d.items():
            if isinstance(v, dict) and v and k != "resources":
                yield from leaves(v, prefix + (k,))
            else:
                yield ".".join(prefix + (k,))

    for leaf in leaves(values):
        assert leaf in documented, "values.yaml: %s has no `# --` comment" % leaf
        assert "| `%s` |" % leaf in readme, "README.md: no row for %s" % leaf
