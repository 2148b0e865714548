"""The test control plane (ci/kube): a real kube-apiserver on etcd, with RBAC enforced,
service-account tokens minted by the API server, and the Prometheus Operator CRDs.

About 1-2 minutes once kube-apiserver is built and cached (two control planes start:
the shared `kube` fixture and the lifecycle test's own one).
"""

import os
import re
import shutil
import socket
import uuid

import pytest

from kubeplane import LEASES, ROOT, parse_env, run_kube, wait_for


def pinned_version():
    with open(os.path.join(ROOT, "ci", "kube-apiserver", "go.mod")) as f:
        return re.search(r"^(?:require)?\s*k8s\.io/kubernetes\s+(v\S+)", f.read(), re.M).group(1)


def test_api_answers_the_admin_and_refuses_anonymous(kube):
    ready = kube.request("GET", "/readyz", admin=True)
    assert ready.status == 200 and ready.body.strip() == "ok", ready
    version = kube.request("GET", "/version", admin=True)
    assert version.status == 200, version
    assert version.json()["gitVersion"] == pinned_version()
    # The serving certificate is valid for the names clients use (hostname checked).
    assert kube.api.startswith("https://127.0.0.1:")
    ns = kube.request("GET", "/api/v1/namespaces/kube-system", admin=True)
    assert ns.status == 200 and ns.json()["metadata"]["name"] == "kube-system", ns
    # No client certificate and no token: anonymous auth is off.
    anon = kube.request("GET", "/api/v1/namespaces")
    assert anon.status == 401, anon
    # A token the server did not sign is rejected too.
    forged = kube.request("GET", "/api/v1/namespaces", token="not-a-token")
    assert forged.status == 401, forged


def test_env_names_existing_files(kube):
    for key in ("KUBECONFIG", "UPMON_KUBE_CA", "UPMON_KUBE_CLIENT_CERT", "UPMON_KUBE_CLIENT_KEY",
                "UPMON_KUBECTL"):
        assert os.path.isfile(kube.env[key]), (key, kube.env[key])
    assert os.access(kube.env["UPMON_KUBECTL"], os.X_OK)
    assert re.fullmatch(r"https://127\.0\.0\.1:\d+", kube.env["UPMON_KUBE_API"])
    out = kube.kubectl("version", "-o", "json").stdout
    assert pinned_version() in out


def test_rbac_lease_role_for_a_service_account_token(kube):
    ns = kube.namespace()
    kube.service_account(ns, "elect")
    kube.service_account(ns, "norole")
    leases = LEASES % ns
    token = kube.token(ns, "elect")
    other_token = kube.token(ns, "norole")
    assert token.count(".") == 2  # a JWT minted through the TokenRequest API

    # No Role yet: authenticated as the ServiceAccount, but forbidden.
    who = kube.request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                       body={"apiVersion": "authentication.k8s.io/v1",
                             "kind": "SelfSubjectReview"}, token=token)
    assert who.status == 201, who
    assert who.json()["status"]["userInfo"]["username"] == "system:serviceaccount:%s:elect" % ns
    r = kube.request("GET", leases + "/upmon-test", token=token)
    assert r.status == 403, r
    assert 'cannot get resource "leases"' in r.json()["message"], r
    r = kube.request("POST", leases, body=kube.lease_body(ns, "upmon-test", "a"), token=token)
    assert r.status == 403, r
    assert 'cannot create resource "leases"' in r.json()["message"], r

    kube.grant_lease(ns, "elect", "upmon-test")
    # The authorizer sees new RBAC objects through its informers: poll, bounded.
    created = wait_for("create allowed after the RoleBinding",
                       lambda: (lambda x: x if x.status == 201 else None)(
                           kube.request("POST", leases,
                                        body=kube.lease_body(ns, "upmon-test", "a"),
                                        token=token)),
                       timeout=15)
    assert created.json()["spec"]["holderIdentity"] == "a"

    got = kube.request("GET", leases + "/upmon-test", token=token)
    assert got.status == 200, got
    rv = got.json()["metadata"]["resourceVersion"]
    upd = kube.request("PUT", leases + "/upmon-test",
                       body=kube.lease_body(ns, "upmon-test", "b", resource_version=rv),
                       token=token)
    assert upd.status == 200, upd
    assert upd.json()["spec"]["holderIdentity"] == "b"
    # Optimistic concurrency, which the election relies on: a stale resourceVersion loses.
    stale = kube.request("PUT", leases + "/upmon-test",
                         body=kube.lease_body(ns, "upmon-test", "c", resource_version=rv),
                         token=token)
    assert stale.status == 409, stale

    # Another lease name: the admin creates it; the ServiceAccount may not read or write it.
    adm = kube.request("POST", leases, body=kube.lease_body(ns, "other", "x"), admin=True)
    assert adm.status == 201, adm
    r = kube.request("GET", leases + "/other", token=token)
    assert r.status == 403, r
    arv = adm.json()["metadata"]["resourceVersion"]
    r = kube.request("PUT", leases + "/other",
                     body=kube.lease_body(ns, "other", "b", resource_version=arv), token=token)
    assert r.status == 403, r
    assert 'cannot update resource "leases"' in r.json()["message"], r
    # Nor list, delete, or touch leases in another namespace.
    assert kube.request("GET", leases, token=token).status == 403
    assert kube.request("DELETE", leases + "/upmon-test", token=token).status == 403
    assert kube.request("GET", (LEASES % "default") + "/upmon-test", token=token).status == 403
    # The Role is bound to `elect` only.
    assert kube.request("GET", leases + "/upmon-test", token=other_token).status == 403
    # The admin sees the update the ServiceAccount made.
    final = kube.request("GET", leases + "/upmon-test", admin=True)
    assert final.json()["spec"]["holderIdentity"] == "b"
    assert kube.can_i(ns, "elect", "update", "leases", "upmon-test")
    assert not kube.can_i(ns, "elect", "update", "leases", "other")


@pytest.mark.parametrize("crd,kind", [("prometheusrules.monitoring.coreos.com", "PrometheusRule"),
                                      ("servicemonitors.monitoring.coreos.com", "ServiceMonitor")])
def test_prometheus_operator_crds_are_established_and_served(kube, crd, kind):
    r = kube.request("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/" + crd,
                     admin=True)
    assert r.status == 200, r
    conds = {c["type"]: c["status"] for c in r.json()["status"]["conditions"]}
    assert conds.get("Established") == "True", conds
    assert r.json()["spec"]["names"]["kind"] == kind
    ns = kube.namespace("upmon-crd")
    plural = crd.split(".")[0]
    if kind == "PrometheusRule":
        spec = {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "vector(1)"}]}]}
    else:
        spec = {"selector": {"matchLabels": {"app": "upmon"}}, "endpoints": [{"port": "metrics"}]}
    obj = {"apiVersion": "monitoring.coreos.com/v1", "kind": kind,
           "metadata": {"name": "upmon", "namespace": ns}, "spec": spec}
    path = "/apis/monitoring.coreos.com/v1/namespaces/%s/%s" % (ns, plural)
    created = kube.request("POST", path, body=obj, admin=True)
    assert created.status == 201, created
    got = kube.request("GET", path + "/upmon", admin=True)
    assert got.status == 200 and got.json()["spec"] == created.json()["spec"], got
    # The CRD's schema is enforced: an unknown type for a typed field is refused.
    bad = dict(obj, metadata={"name": "bad", "namespace": ns},
               spec={"groups": "not-a-list"} if kind == "PrometheusRule"
               else {"endpoints": "not-a-list"})
    assert kube.request("POST", path, body=bad, admin=True).status == 422


def port_free(port):
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def mentioning(state):
    """Processes whose command line names the state folder."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if state + "/" in cmd + "/":
                found.append((int(pid), cmd[:200]))
    return found


def free_offset():
    """A port offset whose three ci/kube ports are all free (other developers' control
    planes may hold the usual ones)."""
    for offset in range(1000, 3000, 10):
        if all(port_free(p + offset) for p in (2479, 2480, 6443)):
            return offset
    raise AssertionError("no free port offset for a second control plane")


def test_up_is_idempotent_and_down_leaves_nothing():
    # Its own control plane, folder and ports, so the shared one is not disturbed.
    state = os.path.join(ROOT, ".state-kube-lifecycle-" + uuid.uuid4().hex[:6])
    env = dict(os.environ)
    env["UPMON_KUBE_PORT_OFFSET"] = os.environ.get("UPMON_KUBE_LIFECYCLE_OFFSET",
                                                   str(free_offset()))
    api_port = 6443 + int(env["UPMON_KUBE_PORT_OFFSET"])
    try:
        # A port held by someone else: `up` refuses before starting anything.
        squatter = socket.socket()
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", api_port))
        squatter.listen(1)
        try:
            clash = run_kube("up", state=state, env=env, timeout=600)
        finally:
            squatter.close()
        assert clash.returncode == 1, clash.stdout + clash.stderr
        assert "port %d" % api_port in clash.stderr, clash.stderr
        assert not mentioning(state), mentioning(state)
        assert not os.path.exists(os.path.join(state, "etcd", "pid"))

        up = run_kube("up", state=state, env=env, timeout=600)
        assert up.returncode == 0, up.stdout + up.stderr
        st = run_kube("status", state=state, env=env)
        assert st.returncode == 0, st.stdout
        pids = {}
        for name in ("etcd", "apiserver"):
            with open(os.path.join(state, name, "pid")) as f:
                pids[name] = int(f.read())
            assert os.path.exists("/proc/%d" % pids[name])
        values = parse_env(run_kube("env", state=state, env=env).stdout)
        port = int(values["UPMON_KUBE_API"].rsplit(":", 1)[1])
        assert not port_free(port)
        again = run_kube("up", state=state, env=env, timeout=300)
        assert again.returncode == 0, again.stdout + again.stderr
        assert again.stdout.count("already running") == 2, again.stdout
        for name, pid in pids.items():
            with open(os.path.join(state, name, "pid")) as f:
                assert int(f.read()) == pid

        # An API server outage (for the election tests): only it stops, `up` restarts it.
        part = run_kube("down", "--only", "apiserver", state=state, env=env, timeout=120)
        assert part.returncode == 0, part.stdout + part.stderr
        assert not alive(pids["apiserver"]) and alive(pids["etcd"])
        assert run_kube("status", state=state, env=env).returncode == 1
        back = run_kube("up", state=state, env=env, timeout=300)
        assert back.returncode == 0, back.stdout + back.stderr
        assert run_kube("status", state=state, env=env).returncode == 0
        with open(os.path.join(state, "apiserver", "pid")) as f:
            pids["apiserver"] = int(f.read())

        down = run_kube("down", state=state, env=env, timeout=120)
        assert down.returncode == 0, down.stdout + down.stderr
        for name, pid in pids.items():
            assert not alive(pid), "%s (pid %d) survived down" % (name, pid)
        assert not mentioning(state), mentioning(state)
        wait_for("API port released", lambda: port_free(port), timeout=10)
        assert run_kube("status", state=state, env=env).returncode == 1
        wipe = run_kube("down", "--wipe", state=state, env=env)
        assert wipe.returncode == 0, wipe.stdout + wipe.stderr
        assert not os.path.exists(state)
    finally:
        run_kube("down", state=state, env=env, timeout=120)
        shutil.rmtree(state, ignore_errors=True)
