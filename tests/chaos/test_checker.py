"""Unit tests of the chaos checker (k8s/lib/chaos.py) against a fake API server: each
invariant it watches must be reported when broken, and only then. No node needed."""

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "k8s"))

from lib import chaos  # noqa: E402


def ts(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%06dZ" % int((t % 1) * 1e6)


def pod(name, role="analyzer", ready=True):
    labels = dict(chaos.ROLES[role])
    return {"metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{"ports": [{"containerPort": 9303}]}]},
            "status": {"phase": "Running", "containerStatuses": [{"ready": ready}]}}


class FakeProxy:
    """Pods, one Lease, and each pod's /metrics text."""

    def __init__(self):
        self.pods, self.lease, self.metrics = [], None, {}

    def json(self, path, timeout=5.0):
        if path.endswith("/pods"):
            return {"items": self.pods}
        if "/leases" in path:
            return {"items": [self.lease] if self.lease else []}
        raise OSError("not served: " + path)

    def get(self, path, timeout=5.0):
        for name, text in self.metrics.items():
            if "/pods/%s:" % name in path:
                return text
        raise OSError("no metrics")


def lease(holder, renew, acquire=None, duration=15):
    return {"metadata": {"name": "upmon-analyzer"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration,
                     "renewTime": ts(renew), "acquireTime": ts(acquire or renew)}}


def checker(fp, **kw):
    return chaos.Checker(fp, "upmon", log=lambda m: None, **kw)


def test_steady_leader_and_standby_is_no_violation():
    fp = FakeProxy()
    fp.pods = [pod("a"), pod("b")]
    fp.lease = lease("a", time.time())
    fp.metrics = {"a": "upmon_leader 1\nupmon_failure_rate 0.5\n", "b": "upmon_leader 0\n"}
    c = checker(fp, gauge_bound=30)
    for _ in range(3):
        c.sample()
    assert c.violations == [] and c.rounds == 3 and c.gauge_seen is not None


def test_two_pods_reporting_leader_in_one_round_is_a_violation():
    fp = FakeProxy()
    fp.pods = [pod("a"), pod("b")]
    fp.lease = lease("a", time.time())
    fp.metrics = {"a": "upmon_leader 1\n", "b": 'upmon_leader{lease="x"} 1\n'}
    c = checker(fp)
    c.sample()
    assert len(c.violations) == 1 and "a, b all report upmon_leader 1" in c.violations[0]


def test_lease_outliving_its_pod_is_fine_but_a_renewal_after_it_is_not():
    fp = FakeProxy()
    now = time.time()
    fp.pods = [pod("a"), pod("b")]
    fp.lease = lease("a", now)
    c = checker(fp)
    c.sample()
    fp.pods = [pod("b")]            # a's pod is gone; its last renewal stands until expiry
    c.sample()
    assert c.violations == []
    c.pod_gone["a"] -= 10           # ... and 10 s later someone renews as a
    fp.lease = lease("a", time.time())
    c.sample()
    c.sample()
    assert len(c.violations) == 1 and "after its pod was gone" in c.violations[0]


def test_takeover_is_timed_by_the_new_holders_acquire_time():
    fp = FakeProxy()
    now = time.time()
    fp.pods = [pod("a"), pod("b")]
    fp.lease = lease("a", now, now - 100)
    c = checker(fp)
    c.sample()
    took = time.time() - 0.4        # b acquired 0.4 s before the checker looked
    fp.lease = lease("b", took, took)
    c.sample()
    t, name, old, new = c.transitions[-1]
    assert (name, old, new) == ("upmon-analyzer", "a", "b") and abs(t - took) < 0.01
    assert c.takeover("upmon-analyzer", "a", took - 1.0, 1.0) == t - (took - 1.0)


def test_gauge_gap_beyond_the_bound_is_reported_while_it_lasts():
    fp = FakeProxy()
    fp.pods = [pod("a")]
    fp.lease = lease("a", time.time())
    fp.metrics = {"a": "upmon_leader 1\nupmon_failure_rate 0.5\n"}
    c = checker(fp, gauge_bound=5)
    c.sample()
    fp.metrics = {"a": "upmon_leader 1\n"}
    c.gauge_seen -= 6               # the gauges have been gone 6 s
    c.sample()
    c.sample()
    assert len(c.violations) == 1 and "missing for" in c.violations[0]
    fp.metrics = {"a": "upmon_failure_rate 0.5\n"}
    c.sample()                      # back: not reported twice
    assert len(c.violations) == 1 and c.longest_gauge_gap >= 6


def test_roles_follow_the_charts_labels():
    ch = {"metadata": {"name": "upmon-clickhouse-s1-0", "labels": {
        "app.kubernetes.io/name": "clickhouse", "app.kubernetes.io/managed-by": "upmon-operator",
        "upmon.io/shard": "1"}}}
    prom_op = {"metadata": {"name": "upmon-monitoring-operator-x", "labels": {
        "app.kubernetes.io/name": "monitoring", "app.kubernetes.io/component": "operator"}}}
    kafka = {"metadata": {"name": "upmon-kafka-0", "labels": {
        "app.kubernetes.io/name": "kafka", "app.kubernetes.io/component": "broker"}}}
    assert chaos.component(ch) == "clickhouse"
    assert chaos.component(kafka) == "kafka"
    assert chaos.component(prom_op) == ""   # not upmon's operator


def test_plan_is_seeded_covers_every_kind_and_times_each_leader_mode():
    a = chaos.Chaos(None, None, "upmon", 5, kill_share=0.5).plan(12)
    b = chaos.Chaos(None, None, "upmon", 5, kill_share=0.5).plan(12)
    assert a == b and {k for k, _ in a} == set(chaos.KINDS)
    first = {}
    for kind, mode in a:
        first.setdefault(kind, mode)
    assert first["analyzer-leader"] == "killed" and first["operator-leader"] == "killed"
    assert chaos.Chaos(None, None, "upmon", 6).plan(12) != a
