"""Pod chaos for an upmon release, and the checker that watches the invariants meanwhile.

Shared by `k8s/chaos` (for users) and `tests/chaos` (the bounded CI run and the soak). Talks
to the API server through `kubectl proxy`, so it works with any kubeconfig (client
certificates, tokens, exec plugins) without reimplementing their auth.

The checker samples continuously (every `interval` seconds), never only at the end:
  - each Lease of the namespace has at most one holder, and the holder is a live pod;
  - no two pods report `upmon_leader 1` in their own /metrics in the same sampling round;
  - after a leader pod is deleted, the Lease names another live pod within the bound
    (killed, no release: leaseDuration + 2 retry periods; forced, which still sends SIGTERM:
    leaseDuration + 2 s; graceful: one retry period plus a margin, the Lease being released
    on SIGTERM);
  - the analyzer's published gauges (`upmon_failure_rate` on some pod) have no gap longer
    than the failover bound.
"""

import calendar
import json
import os
import random
import signal
import re
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

# What a deletion may hit, and how its pods are found (app.kubernetes.io/component and, for
# the leader kinds, the Lease that tells leader from standby).
KINDS = ("analyzer-leader", "analyzer-standby", "operator-leader", "ingest", "clickhouse",
         "kafka", "zookeeper", "simulator")

LEADER_METRIC = re.compile(r"^upmon_leader(?:\{[^}]*\})? ([0-9.]+)", re.M)
GAUGE_METRIC = re.compile(r"^upmon_failure_rate(?:\{[^}]*\})? ", re.M)


class Proxy:
    """`kubectl proxy` on a free loopback port, and JSON/text requests through it."""

    def __init__(self, kubectl, env=None):
        self.proc = subprocess.Popen([kubectl, "proxy", "--port=0", "--address=127.0.0.1"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env)
        line = self.proc.stdout.readline()
        m = re.search(r"127\.0\.0\.1:(\d+)", line)
        if not m:
            self.proc.kill()
            raise RuntimeError("kubectl proxy did not start: %s" % line.strip())
        self.base = "http://127.0.0.1:%s" % m.group(1)

    def get(self, path, timeout=5.0):
        with urllib.request.urlopen(self.base + path, timeout=timeout) as r:
            return r.read().decode("utf-8", "replace")

    def json(self, path, timeout=5.0):
        return json.loads(self.get(path, timeout))

    def delete_pod(self, ns, name, grace=None):
        body = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if grace is not None:
            body["gracePeriodSeconds"] = grace
        req = urllib.request.Request(self.base + "/api/v1/namespaces/%s/pods/%s" % (ns, name),
                                     data=json.dumps(body).encode(), method="DELETE",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# Which pods each role is, by the labels the charts and the operator put on them (the
# ClickHouse servers are the operator's, without a component label; the Prometheus
# Operator's pod is also component=operator, but of another chart).
ROLES = {
    "analyzer": {"app.kubernetes.io/name": "upmon", "app.kubernetes.io/component": "analyzer"},
    "ingest": {"app.kubernetes.io/name": "upmon", "app.kubernetes.io/component": "ingest"},
    "simulator": {"app.kubernetes.io/name": "upmon", "app.kubernetes.io/component": "simulator"},
    "operator": {"app.kubernetes.io/name": "clickhouse", "app.kubernetes.io/component": "operator"},
    "zookeeper": {"app.kubernetes.io/name": "clickhouse",
                  "app.kubernetes.io/component": "zookeeper"},
    "clickhouse": {"app.kubernetes.io/name": "clickhouse",
                   "app.kubernetes.io/managed-by": "upmon-operator"},
    "kafka": {"app.kubernetes.io/name": "kafka", "app.kubernetes.io/component": "broker"},
}


def component(pod):
    """The pod's role (a key of ROLES), or ""."""
    labels = pod["metadata"].get("labels", {})
    for role, want in ROLES.items():
        if all(labels.get(k) == v for k, v in want.items()):
            return role
    return ""


def live(pod):
    """Running, not being deleted, every container ready."""
    st = pod.get("status", {})
    return (st.get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp")
            and all(c.get("ready") for c in st.get("containerStatuses", [])))


def wait_settled(proxy, ns, timeout):
    """Seconds until every pod of `ns` (but finished Job pods) is live, or None."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            pods = proxy.json("/api/v1/namespaces/%s/pods" % ns)["items"]
            if all(live(p) for p in pods if p["status"].get("phase") != "Succeeded"):
                return time.time() - t0
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(2.0)
    return None


def parse_time(text):
    if not text:
        return None
    base, _, frac = text.rstrip("Z").partition(".")
    t = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
    return t + (float("0." + frac) if frac else 0.0)


class Checker(threading.Thread):
    """Samples the namespace until stop(); `violations` lists what broke, with times."""

    def __init__(self, proxy, ns, interval=0.5, log=print, gauge_bound=None,
                 prometheus="prometheus-operated:web"):
        super().__init__(daemon=True)
        self.proxy, self.ns, self.interval, self.log = proxy, ns, interval, log
        # Longest tolerated time without the analyzer's gauges on any pod: a forced takeover
        # (lease duration + 2 s) plus the new leader's first cycle. None = measure only.
        self.gauge_bound = gauge_bound
        self.t0 = time.time()
        self.violations = []
        self.holders = {}          # lease -> (holder, since)
        self.lease_spec = {}       # lease -> leaseDurationSeconds
        self.transitions = []      # (t, lease, old, new)
        self.gauge_seen = None     # last time some pod published the gauges
        self.longest_gauge_gap = 0.0
        self.gauge_late = False
        # Alerts from the release's Prometheus (the Service through the API proxy), polled
        # every 10 s when there is one: name -> first time seen firing; and those firing now.
        self.prometheus = prometheus
        self.alerts_fired = {}
        self.alerts_firing = set()
        self._alerts_at = 0.0
        self.pod_gone = {}         # pod -> first sample it was missing in
        self.reported = set()
        self.rounds = 0
        self.errors = 0
        self._halt = threading.Event()

    def stop(self):
        self._halt.set()
        self.join(30)

    def violation(self, msg):
        line = "+%.1fs %s" % (time.time() - self.t0, msg)
        self.violations.append(line)
        self.log("checker: VIOLATION " + line)

    def pods(self):
        return self.proxy.json("/api/v1/namespaces/%s/pods" % self.ns)["items"]

    def sample(self):
        now = time.time()
        pods = {p["metadata"]["name"]: p for p in self.pods()}
        leases = self.proxy.json("/apis/coordination.k8s.io/v1/namespaces/%s/leases"
                                 % self.ns)["items"]
        for lease in leases:
            name = lease["metadata"]["name"]
            spec = lease.get("spec", {})
            holder = spec.get("holderIdentity") or ""
            self.lease_spec[name] = spec.get("leaseDurationSeconds") or 15
            renew = parse_time(spec.get("renewTime"))
            valid = holder and renew is not None and now - renew <= self.lease_spec[name]
            old = self.holders.get(name, ("", now))[0]
            if holder != old:
                # When the new holder took it: its acquireTime (written by that pod, microsecond
                # precision), not this sample's time, which is up to one interval late.
                acquired = parse_time(spec.get("acquireTime"))
                at = acquired if acquired is not None and abs(acquired - now) < 60 else now
                self.transitions.append((at, name, old, holder))
                self.holders[name] = (holder, now)
            pod = holder if holder in pods else holder.split("_")[0]
            if holder and pod not in pods:
                # The holder must be a live pod: a Lease may outlive its holder's pod (it
                # expires), but nobody may renew it once that pod is gone. 3 s of slack: a
                # forced delete removes the object before the kubelet's SIGTERM lands.
                gone = self.pod_gone.setdefault(pod, now)
                if renew is not None and renew > gone + 3 and (name, renew) not in self.reported:
                    self.reported.add((name, renew))
                    self.violation("Lease %s renewed by %s %.1f s after its pod was gone"
                                   % (name, holder, renew - gone))
            elif holder:
                self.pod_gone.pop(pod, None)
                phase = pods[pod].get("status", {}).get("phase")
                if valid and phase in ("Succeeded", "Failed") and \
                        (name, holder, phase) not in self.reported:
                    self.reported.add((name, holder, phase))
                    self.violation("Lease %s held by %s, whose pod has %s" % (name, holder, phase))
        leaders, gauges = [], False
        for name, pod in pods.items():
            if component(pod) not in ("analyzer", "operator") or not live(pod):
                continue
            port = pod["spec"]["containers"][0].get("ports", [{}])[0].get("containerPort")
            if not port:
                continue
            try:
                text = self.proxy.get("/api/v1/namespaces/%s/pods/%s:%d/proxy/metrics"
                                      % (self.ns, name, port), timeout=2.0)
            except (urllib.error.URLError, OSError):
                continue
            m = LEADER_METRIC.search(text)
            if m and float(m.group(1)) == 1.0:
                leaders.append((component(pod), name))
            if GAUGE_METRIC.search(text):
                gauges = True
        for comp in ("analyzer", "operator"):
            who = [n for c, n in leaders if c == comp]
            if len(who) > 1:
                self.violation("%s: %s all report upmon_leader 1" % (comp, ", ".join(who)))
        if gauges:
            if self.gauge_seen is not None:
                gap = now - self.gauge_seen
                if self.gauge_bound is not None and gap > self.gauge_bound and not self.gauge_late:
                    self.violation("the analyzer's gauges were missing for %.1f s (bound %.1f s)"
                                   % (gap, self.gauge_bound))
                self.longest_gauge_gap = max(self.longest_gauge_gap, gap)
            self.gauge_seen = now
            self.gauge_late = False
        elif (self.gauge_bound is not None and self.gauge_seen is not None
              and now - self.gauge_seen > self.gauge_bound and not self.gauge_late):
            # Reported while it lasts, not only when the gauges come back.
            self.gauge_late = True
            self.violation("the analyzer's gauges have been missing for %.1f s (bound %.1f s)"
                           % (now - self.gauge_seen, self.gauge_bound))
        self.rounds += 1

    def poll_alerts(self):
        """The alerts firing in the release's Prometheus now (None if it cannot be asked)."""
        if not self.prometheus:
            return None
        try:
            res = self.proxy.json("/api/v1/namespaces/%s/services/%s/proxy/api/v1/query?query=%s"
                                  % (self.ns, self.prometheus,
                                     urllib.parse.quote('ALERTS{alertstate="firing"}')),
                                  timeout=5.0)
        except (urllib.error.URLError, OSError, ValueError):
            return None
        now = time.time()
        firing = {r["metric"].get("alertname", "?") for r in res["data"]["result"]}
        for name in firing - self.alerts_firing:
            self.alerts_fired.setdefault(name, now)
            self.log("checker: +%.1fs alert %s firing" % (now - self.t0, name))
        for name in self.alerts_firing - firing:
            self.log("checker: +%.1fs alert %s resolved" % (now - self.t0, name))
        self.alerts_firing = firing
        return firing

    def run(self):
        while not self._halt.is_set():
            if time.time() - self._alerts_at >= 10.0:
                self._alerts_at = time.time()
                self.poll_alerts()
            try:
                self.sample()
            except (urllib.error.URLError, OSError, ValueError) as e:
                self.errors += 1
                if self.errors % 20 == 1:
                    self.log("checker: sample failed (%s); going on" % e)
            self._halt.wait(self.interval)

    def takeover(self, lease, old, since, timeout):
        """Seconds from `since` until `lease` names a holder other than `old` (None if not
        within `timeout`)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            for t, name, prev, new in list(self.transitions):
                if name == lease and t >= since and new and new != old:
                    return t - since
            time.sleep(0.1)
        return None


def pick(proxy, ns, kind, holders, rng):
    """A pod name for `kind`, or None when there is none to take."""
    pods = [p for p in proxy.json("/api/v1/namespaces/%s/pods" % ns)["items"] if live(p)]
    comp = kind.split("-")[0]
    cands = sorted(p["metadata"]["name"] for p in pods if component(p) == comp)
    if kind.endswith("-leader") or kind.endswith("-standby"):
        lead = {h for (h, _) in holders.values()}
        lead |= {h.split("_")[0] for h in lead}
        if kind.endswith("-leader"):
            # The takeover bound assumes a standby to take over: wait for one to be live
            # (it may itself be restarting from an earlier deletion).
            if len(cands) < 2:
                return None
            cands = [c for c in cands if c in lead]
        else:
            cands = [c for c in cands if c not in lead]
    return rng.choice(cands) if cands else None


def kill_on_this_host(pod):
    """SIGKILL every process of `pod` running on this machine (a local node): found by the
    HOSTNAME the runtime gives each of the pod's containers. Returns how many were killed.
    The crash a forced delete is not: Kubernetes still sends SIGTERM on --grace-period=0."""
    want = ("HOSTNAME=%s" % pod).encode()
    killed = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % pid, "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if want in env:
            try:
                os.kill(int(pid), signal.SIGKILL)
                killed += 1
            except OSError:
                pass
    return killed


def lease_of(checker, pod):
    for name, (holder, _) in checker.holders.items():
        if holder == pod or holder.split("_")[0] == pod:
            return name
    return None


class Chaos:
    """Deletes pods of `ns` by seeded choice, measuring takeovers; `actions` records them."""

    def __init__(self, proxy, checker, ns, seed, kinds=KINDS, force_share=0.5, log=print,
                 retry_period=2.0, kill_share=0.0):
        self.proxy, self.checker, self.ns = proxy, checker, ns
        self.rng = random.Random(seed)
        self.kinds, self.force_share, self.log = list(kinds), force_share, log
        # Of the forced deletions, the share that first SIGKILLs the pod's processes from this
        # host (a local node only): the process dies without releasing its Lease, as in a
        # node crash, and the pod object is then force-deleted.
        self.kill_share = kill_share
        self.retry_period = retry_period
        self.actions = []   # dicts: t, kind, pod, forced, lease, takeover, bound

    def mode(self):
        """A seeded mode: killed, forced or graceful, by the shares."""
        if self.rng.random() < self.force_share:
            return "killed" if self.rng.random() < self.kill_share else "forced"
        return "graceful"

    def plan(self, count):
        """[(kind, mode)]: every kind at least once (when count allows), then seeded choices.
        A leader's first deletion is its hardest (killed when kill_share allows, else
        forced) and its second graceful, so that even a short run bounds both takeovers."""
        order = self.kinds[:]
        self.rng.shuffle(order)
        while len(order) < count:
            order.append(self.rng.choice(self.kinds))
        seen, out = {}, []
        for kind in order[:count]:
            n = seen[kind] = seen.get(kind, 0) + 1
            if kind.endswith("-leader") and n == 1 and self.force_share > 0:
                mode = "killed" if self.kill_share > 0 else "forced"
            elif kind.endswith("-leader") and n == 2 and self.force_share < 1:
                mode = "graceful"
            else:
                mode = self.mode()
            out.append((kind, mode))
        return out

    def delete(self, kind, mode=None, wait=60.0):
        """Delete one pod of `kind`, waiting up to `wait` s for one to be live (a standby
        that is itself still restarting, say); None if none came."""
        deadline = time.time() + wait
        pod = pick(self.proxy, self.ns, kind, self.checker.holders, self.rng)
        while pod is None and time.time() < deadline:
            time.sleep(1.0)
            pod = pick(self.proxy, self.ns, kind, self.checker.holders, self.rng)
        if pod is None:
            self.log("chaos: no live pod for %s within %.0f s; skipped" % (kind, wait))
            return None
        mode = mode or self.mode()
        forced, killed = mode in ("forced", "killed"), mode == "killed"
        lease = lease_of(self.checker, pod) if kind.endswith("-leader") else None
        t = time.time()
        procs = kill_on_this_host(pod) if killed else 0
        if killed and not procs:
            self.checker.violation("no process of %s found on this host to kill" % pod)
        self.proxy.delete_pod(self.ns, pod, grace=0 if forced else None)
        act = {"t": t, "kind": kind, "pod": pod, "forced": forced, "mode": mode,
               "lease": lease, "takeover": None, "bound": None}
        self.log("chaos: +%.1fs deleted %s (%s, %s%s)"
                 % (t - self.checker.t0, pod, kind, mode,
                    ": %d processes SIGKILLed first" % procs if killed else ""))
        if lease:
            duration = float(self.checker.lease_spec.get(lease, 15))
            if killed:
                # Nobody releases the Lease. A standby counts the lease duration from when IT
                # saw the last renewal (its own clock: no trust in the holder's), which is up
                # to one retry period after the renewal, and tries again at most one retry
                # period after expiry: duration + 2 x retry period after the kill, at worst.
                act["bound"] = duration + 2 * self.retry_period
            elif forced:
                act["bound"] = duration + 2.0
            else:
                act["bound"] = self.retry_period + 1.5
            act["takeover"] = self.checker.takeover(lease, pod, t, act["bound"] + 30)
            if act["takeover"] is None or act["takeover"] > act["bound"]:
                self.checker.violation("Lease %s: takeover after %s delete of %s took %s s "
                                       "(bound %.1f s)" % (lease, mode, pod, act["takeover"],
                                                           act["bound"]))
            else:
                self.log("chaos: Lease %s taken over in %.1f s (bound %.1f s)"
                         % (lease, act["takeover"], act["bound"]))
        self.actions.append(act)
        return act
