"""Lease leader election (common/lease, build/bin/upmon-elect) on the real kube-apiserver.

Needs the control plane of ci/kube (the `kube` fixture starts its own when none runs;
UPMON_KUBE_STATE_DIR selects a running one) and build/bin/upmon-elect (UPMON_BUILD_DIR
overrides build/). Every test works in its own namespace. Short lease settings
(4 s / 3 s / 1 s) keep the run to about two and a half minutes; LEASE_SAMPLE_SECONDS
(default 60) sets how long the one-leader invariant is sampled.
"""

import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LEASE_S, RENEW_S, RETRY_S = 4, 3, 1
SAMPLE_SECONDS = float(os.environ.get("LEASE_SAMPLE_SECONDS", "60"))
LEASES = "/apis/coordination.k8s.io/v1/namespaces/%s/leases"
FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"


def elect_bin():
    build = os.path.abspath(os.environ.get("UPMON_BUILD_DIR") or os.path.join(ROOT, "build"))
    path = os.path.join(build, "bin", "upmon-elect")
    if not os.access(path, os.X_OK):
        pytest.fail("%s missing: build it (ninja -C %s upmon-elect)" % (path, build),
                    pytrace=False)
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_kubeconfig(dirname, kube, token=None, server=None):
    """A kubeconfig for upmon-elect: the admin's client certificate, or a bearer token."""
    path = os.path.join(dirname, "kubeconfig-%d" % free_port())
    if token:
        user = "    token: %s\n" % token
    else:
        user = ("    client-certificate: %s\n    client-key: %s\n"
                % (kube.env["UPMON_KUBE_CLIENT_CERT"], kube.env["UPMON_KUBE_CLIENT_KEY"]))
    with open(path, "w") as f:
        f.write("apiVersion: v1\nkind: Config\ncurrent-context: t\n"
                "clusters:\n- name: c\n  cluster:\n    server: %s\n"
                "    certificate-authority: %s\n"
                "contexts:\n- name: t\n  context: {cluster: c, user: u}\n"
                "users:\n- name: u\n  user:\n%s" % (server or kube.api, kube.ca, user))
    return path


class Candidate:
    """One upmon-elect process with its own /metrics port and log file."""

    def __init__(self, ns, lease, identity, kubeconfig, logdir, faketime=None):
        self.identity = identity
        self.port = free_port()
        self.log_path = os.path.join(logdir, "%s.log" % identity)
        env = dict(os.environ)
        env.update({
            "UPMON_K8S_KUBECONFIG": kubeconfig,
            "UPMON_K8S_TIMEOUT": "2s",
            "UPMON_LEASE_NAMESPACE": ns,
            "UPMON_LEASE_NAME": lease,
            "UPMON_LEASE_IDENTITY": identity,
            "UPMON_LEASE_LEASE_DURATION": "%ds" % LEASE_S,
            "UPMON_LEASE_RENEW_DEADLINE": "%ds" % RENEW_S,
            "UPMON_LEASE_RETRY_PERIOD": "%ds" % RETRY_S,
            "UPMON_HTTP_BIND": "127.0.0.1",
            "UPMON_HTTP_PORT": str(self.port),
            "UPMON_ELECT_HEARTBEAT": "100ms",
        })
        argv = [elect_bin()]
        if faketime:
            # Preloaded directly (the faketime wrapper would sit between us and the
            # pid we kill). Only the wall clock moves; the monotonic clock stays real.
            env["LD_PRELOAD"] = FAKETIME_LIB
            env["FAKETIME"] = faketime
            env["FAKETIME_DONT_FAKE_MONOTONIC"] = "1"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def metrics(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.port, timeout=2) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            m = re.match(r"^(upmon_leader\w*) (\S+)$", line)
            if m:
                out[m.group(1)] = float(m.group(2))
        return out

    def leader(self):
        """1/0 from /metrics, or None if it cannot be read (dead or not up yet)."""
        try:
            return int(self.metrics().get("upmon_leader", -1))
        except OSError:
            return None

    def ready(self):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/readyz" % self.port,
                                        timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def text(self):
        with open(self.log_path) as f:
            return f.read()

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def wait_for(what, fn, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = fn()
            if last:
                return last
        except Exception as e:  # keep the last error for the message
            last = e
        if time.monotonic() > deadline:
            raise AssertionError("%s: not true within %ss (last: %r)" % (what, timeout, last))
        time.sleep(interval)


def holder(kube, ns, lease):
    r = kube.request("GET", LEASES % ns + "/" + lease, admin=True, timeout=5)
    if r.status == 404:
        return None
    assert r.status == 200, r
    return r.json()["spec"].get("holderIdentity") or ""


@pytest.fixture
def workdir():
    with tempfile.TemporaryDirectory(prefix="upmon-lease-") as d:
        yield d


@pytest.fixture
def group(kube, workdir):
    """Start candidates in a fresh namespace; all are stopped at the end."""
    started = []

    def start(n, ns=None, lease="elect", kubeconfig=None, prefix="cand", faketimes=None):
        ns = ns or kube.namespace("upmon-lease")
        kc = kubeconfig or write_kubeconfig(workdir, kube)
        cands = []
        for i in range(n):
            c = Candidate(ns, lease, "%s-%d" % (prefix, i), kc, workdir,
                          faketime=faketimes[i] if faketimes else None)
            started.append(c)
            cands.append(c)
        return ns, cands

    yield start
    for c in started:
        c.stop()


def current_leader(cands):
    leaders = [c for c in cands if c.alive() and c.leader() == 1]
    return leaders[0] if len(leaders) == 1 else None


def sample_one_leader(kube, ns, lease, cands, seconds):
    """Every 200 ms: at most one candidate reports upmon_leader 1, and whenever one
    does it is the Lease's holder. Returns the number of samples with one leader."""
    deadline = time.monotonic() + seconds
    samples = with_leader = 0
    while time.monotonic() < deadline:
        states = {c.identity: c.leader() for c in cands if c.alive()}
        h = holder(kube, ns, lease)
        leading = [i for i, v in states.items() if v == 1]
        assert len(leading) <= 1, "two leaders at once: %r (holder %r)" % (states, h)
        if leading:
            # A leader is always the holder of record (it stops before anyone else
            # could have written the Lease).
            assert h == leading[0], "leader %s but the Lease names %r" % (leading[0], h)
            with_leader += 1
        samples += 1
        time.sleep(0.2)
    return samples, with_leader


def test_three_candidates_one_leader_then_kill9(kube, group):
    ns, cands = group(3)
    leader = wait_for("a leader", lambda: current_leader(cands), 15)
    assert all(c.ready() for c in cands), "a standby must be ready too"
    samples, with_leader = sample_one_leader(kube, ns, "elect", cands, SAMPLE_SECONDS)
    # Steady state: nobody fails, so every sample has exactly one leader.
    assert with_leader == samples, "%d of %d samples had no leader" % (samples - with_leader,
                                                                      samples)
    lease = kube.request("GET", LEASES % ns + "/elect", admin=True).json()["spec"]
    assert lease["leaseDurationSeconds"] == LEASE_S
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$", lease["renewTime"]), lease

    # kill -9: no release, no goodbye. A standby takes over once the record has not
    # changed for leaseDuration (by its own clock), within one or two retry periods.
    t0 = time.monotonic()
    leader.proc.kill()
    leader.proc.wait()
    others = [c for c in cands if c is not leader]
    new = wait_for("a new holder", lambda: holder(kube, ns, "elect") in
                   [c.identity for c in others], LEASE_S + 2 * RETRY_S + 5)
    took = time.monotonic() - t0
    assert took <= LEASE_S + 2 * RETRY_S, "failover took %.2fs" % took
    assert new
    # The old holder's leader work has stopped: its process is gone.
    assert leader.proc.returncode == -signal.SIGKILL
    wait_for("the new leader reports upmon_leader 1", lambda: current_leader(others), 5)
    samples, with_leader = sample_one_leader(kube, ns, "elect", others, 5)
    assert with_leader == samples
    transitions = kube.request("GET", LEASES % ns + "/elect", admin=True).json()["spec"]
    assert transitions["leaseTransitions"] >= 1


def test_sigterm_releases_successor_within_retry_period(kube, group):
    ns, cands = group(2)
    leader = wait_for("a leader", lambda: current_leader(cands), 15)
    standby = [c for c in cands if c is not leader][0]
    wait_for("standby reports 0", lambda: standby.leader() == 0, 5)
    leader.proc.send_signal(signal.SIGTERM)
    assert leader.proc.wait(timeout=10) == 0
    t_exit = time.monotonic()
    wait_for("successor", lambda: holder(kube, ns, "elect") == standby.identity,
             RETRY_S + 3, interval=0.02)
    took = time.monotonic() - t_exit
    # The release (empty holder, 1 s) went out before exit; the standby's next step,
    # at most one retry period away, takes it over.
    assert took <= RETRY_S + 0.3, "successor after %.2fs" % took
    text = leader.text()
    stop = text.index("leader work stopped")
    assert stop < text.index("released lease"), "released before leader work stopped"
    last_leading = text.rindex('msg="leading"')
    assert last_leading < stop, "leader work after stop"
    wait_for("successor reports upmon_leader 1", lambda: standby.leader() == 1, 3)


def test_rbac_least_privilege_and_forbidden(kube, group, workdir):
    ns = kube.namespace("upmon-lease-rbac")
    kube.service_account(ns, "elector")
    kube.grant_lease(ns, "elector", "elect")
    assert kube.can_i(ns, "elector", "update", "leases", "elect")
    assert not kube.can_i(ns, "elector", "update", "leases", "other")
    kc = write_kubeconfig(workdir, kube, token=kube.token(ns, "elector"))
    _, (c,) = group(1, ns=ns, kubeconfig=kc, prefix="sa")
    wait_for("the minted-token candidate leads", lambda: c.leader() == 1, 15)
    assert holder(kube, ns, "elect") == c.identity
    # Renewals work with only get/update on the named lease.
    before = kube.request("GET", LEASES % ns + "/elect", admin=True).json()
    time.sleep(2 * RETRY_S + 0.5)
    after = kube.request("GET", LEASES % ns + "/elect", admin=True).json()
    assert after["metadata"]["resourceVersion"] != before["metadata"]["resourceVersion"]
    assert after["spec"]["holderIdentity"] == c.identity

    # No Role: a clear 403 naming verb and resource, retried, never a crash.
    kube.service_account(ns, "norole")
    kc2 = write_kubeconfig(workdir, kube, token=kube.token(ns, "norole"))
    _, (d,) = group(1, ns=ns, lease="elect2", kubeconfig=kc2, prefix="norole")
    wait_for("403s logged", lambda: d.text().count("kind=forbidden") >= 3, 10)
    assert d.alive()
    text = d.text()
    assert "verb=get resource=leases.coordination.k8s.io name=elect2 namespace=%s" % ns in text
    assert 'cannot get resource \\"leases\\"' in text or "cannot get resource" in text, text
    assert d.leader() == 0
    assert d.ready(), "readiness does not depend on leadership"


class Blackhole:
    """A TCP proxy to the API server that can be cut off (a network partition of the
    candidates behind it): while cut, connections hang and new ones are refused."""

    def __init__(self, target_host, target_port):
        import threading
        self.target = (target_host, target_port)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.cut = threading.Event()
        self.conns = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _pipe(self, a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                while self.cut.is_set() and not self.closed:
                    time.sleep(0.05)  # hold the bytes: the peer sees silence
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.close()
            except OSError:
                pass

    def _accept(self):
        import threading
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            if self.cut.is_set():
                c.close()
                continue
            try:
                u = socket.create_connection(self.target, timeout=5)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.conns += [c, u]
            threading.Thread(target=self._pipe, args=(c, u), daemon=True).start()
            threading.Thread(target=self._pipe, args=(u, c), daemon=True).start()

    def partition(self):
        self.cut.set()

    def heal(self):
        # Drop the held connections: the client's request timed out long ago.
        with self.lock:
            for s in self.conns:
                try:
                    s.close()
                except OSError:
                    pass
            self.conns = []
        self.cut.clear()

    def close(self):
        self.closed = True
        self.heal()
        self.sock.close()


def test_partitioned_leader_fences_before_expiry(kube, group, workdir):
    """The leader loses the API server for longer than the renew deadline: it stops
    leader work before its lease can expire; the other candidate takes over only
    after expiry; when the partition heals nobody leads twice."""
    m = re.match(r"https://([^:/]+):(\d+)", kube.api)
    bh = Blackhole(m.group(1), int(m.group(2)))
    try:
        kc_cut = write_kubeconfig(workdir, kube, server="https://%s:%d" % (m.group(1), bh.port))
        ns, (a,) = group(1, kubeconfig=kc_cut, prefix="cut")
        wait_for("a leads", lambda: a.leader() == 1, 15)
        _, (b,) = group(1, ns=ns, prefix="direct")
        wait_for("b stands by", lambda: b.leader() == 0, 10)
        time.sleep(2 * RETRY_S)
        bh.partition()
        t_cut = time.monotonic()
        wait_for("a fences", lambda: a.leader() == 0, RENEW_S + 2)
        t_fenced = time.monotonic()
        # Fenced no later than the renew deadline (+ polling slack) after the cut,
        # i.e. before the lease (4 s after the last renewal) can expire.
        assert t_fenced - t_cut <= RENEW_S + 0.5, "fenced %.2fs after the cut" % (
            t_fenced - t_cut)
        assert b.leader() == 0, "b led while a's lease was still valid"
        wait_for("b takes over", lambda: holder(kube, ns, "elect") == b.identity,
                 LEASE_S + 2 * RETRY_S + 2)
        assert time.monotonic() - t_cut >= LEASE_S - RETRY_S, "takeover before expiry"
        assert a.metrics()["upmon_leader_fenced_total"] == 1
        assert "fencing leader work" in a.text()
        bh.heal()
        samples, with_leader = sample_one_leader(kube, ns, "elect", [a, b], 6)
        assert with_leader == samples
        assert b.leader() == 1 and a.leader() == 0
    finally:
        bh.close()


def test_wall_clocks_minutes_apart(kube, group):
    """Candidates whose wall clocks differ by minutes (libfaketime) elect exactly one
    leader and fail over normally: expiry never compares renewTime with a local clock."""
    if not os.path.exists(FAKETIME_LIB):
        pytest.fail("libfaketime missing (apt-get install faketime)", pytrace=False)
    ns, cands = group(3, faketimes=["-7m", "+0", "+11m"])
    leader = wait_for("a leader", lambda: current_leader(cands), 15)
    samples, with_leader = sample_one_leader(kube, ns, "elect", cands, 10)
    assert with_leader == samples
    t0 = time.monotonic()
    leader.proc.kill()
    leader.proc.wait()
    others = [c for c in cands if c is not leader]
    wait_for("a new holder", lambda: holder(kube, ns, "elect") in
             [c.identity for c in others], LEASE_S + 2 * RETRY_S + 5)
    assert time.monotonic() - t0 <= LEASE_S + 2 * RETRY_S
    wait_for("one leader", lambda: current_leader(others), 5)
    samples, with_leader = sample_one_leader(kube, ns, "elect", others, 5)
    assert with_leader == samples


@pytest.fixture
def private_kube():
    """A control plane of this test's own (state folder and ports), so that stopping its
    kube-apiserver disturbs nobody else; stopped and wiped at the end."""
    from kubeplane import KubePlane, parse_env, run_kube

    state = os.path.join(ROOT, ".state-kube-lease-outage")
    env = dict(os.environ)
    env["UPMON_KUBE_PORT_OFFSET"] = os.environ.get("LEASE_OUTAGE_PORT_OFFSET", "370")
    up = run_kube("up", state=state, env=env, timeout=3600)
    if up.returncode != 0:
        run_kube("down", "--wipe", state=state, env=env, timeout=180)
        pytest.fail("`ci/kube up` (private) failed:\n%s%s" % (up.stdout, up.stderr),
                    pytrace=False)
    out = run_kube("env", state=state, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    plane = KubePlane(state, parse_env(out.stdout))
    plane.restart = lambda: run_kube("up", state=state, env=env, timeout=600)
    yield plane
    down = run_kube("down", "--wipe", state=state, env=env, timeout=180)
    assert down.returncode == 0, "ci/kube down failed:\n%s%s" % (down.stdout, down.stderr)


def test_apiserver_outage_fences_and_one_leader_after(private_kube, workdir):
    """kube-apiserver stopped for longer than the renew deadline: the leader stops
    leading before its lease could expire, and when the server is back exactly one
    candidate leads."""
    kube = private_kube
    ns = kube.namespace("upmon-lease-outage")
    kc = write_kubeconfig(workdir, kube)
    cands = [Candidate(ns, "elect", "out-%d" % i, kc, workdir) for i in range(2)]
    try:
        leader = wait_for("a leader", lambda: current_leader(cands), 15)
        time.sleep(2 * RETRY_S)
        with open(os.path.join(kube.state, "apiserver", "pid")) as f:
            pid = int(f.read().strip())
        t_stop = time.monotonic()
        os.kill(pid, signal.SIGKILL)  # no graceful drain: the API is simply gone
        wait_for("leader fences", lambda: leader.leader() == 0, RENEW_S + 2)
        fenced_after = time.monotonic() - t_stop
        # The last renewal started < 1 retry period before the stop; fencing comes at
        # most renew_deadline after it, i.e. before the lease (4 s) can expire.
        assert fenced_after <= RENEW_S + 0.5, "fenced %.2fs after the stop" % fenced_after
        assert all(c.leader() == 0 for c in cands), "someone leads without an API server"
        assert leader.metrics()["upmon_leader_fenced_total"] == 1
        time.sleep(max(0.0, RENEW_S + 2 - (time.monotonic() - t_stop)))
        up = kube.restart()
        assert up.returncode == 0, up.stdout + up.stderr
        wait_for("a leader after the outage", lambda: current_leader(cands), 15)
        samples, with_leader = sample_one_leader(kube, ns, "elect", cands, 8)
        assert with_leader == samples
        assert all(c.alive() for c in cands)
    finally:
        for c in cands:
            c.stop()
