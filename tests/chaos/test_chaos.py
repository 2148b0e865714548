"""Chaos on the real node: delete pods under load, check the invariants continuously, and
verify the data at the end (issue 15).

The small profile is installed by `k8s/up --local` with the simulator as a Deployment at a
fixed rate. A known number of malformed messages is written to the events topic on purpose.
Then k8s/lib/chaos.py deletes pods (seeded: UPMON_CHAOS_SEED, default 1; count:
UPMON_CHAOS_COUNT, default 12, covering every kind), graceful and forced, while its checker
samples the Leases, each leader pod's own upmon_leader and the analyzer's gauges.

At the end, with the simulator stopped gracefully and the backlog drained:
  - what Kafka holds in the events topic (its log end offsets) = rows stored + malformed sent,
    counted through the Distributed table and per shard, no (partition, offset) twice;
  - every rollup counts exactly the stored rows;
  - the DLQ topic holds exactly the malformed messages;
  - no under-replicated partition;
  - the checker saw no violation, and every Lease takeover was within its bound.

Run: python3 -m pytest -v tests/chaos (UPMON_KUBE_NODE_STATE_DIR and UPMON_TEST_KEEP as for
the node tests in tests/system).
"""

import json
import os
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "system"))
sys.path.insert(0, os.path.join(ROOT, "k8s"))

from kubeplane import start_node, stop_node, wait_for  # noqa: E402
import test_chart_install as ci  # noqa: E402
from lib import chaos  # noqa: E402

SEED = int(os.environ.get("UPMON_CHAOS_SEED", "1"))
COUNT = int(os.environ.get("UPMON_CHAOS_COUNT", "12"))
INTERVAL = float(os.environ.get("UPMON_CHAOS_INTERVAL", "20"))
KINDS = [k for k in os.environ.get("UPMON_CHAOS_KINDS", ",".join(chaos.KINDS)).split(",") if k]
FORCE_SHARE = float(os.environ.get("UPMON_CHAOS_FORCE", "0.5"))
# Of the forced deletions, the share that SIGKILLs the pod's processes first (the node is
# this machine): Kubernetes itself sends SIGTERM even on --grace-period=0, so only this
# leaves a Lease unreleased, the case the lease-duration bound is about.
KILL_SHARE = float(os.environ.get("UPMON_CHAOS_KILL", "0.5"))
RATE = 100
MALFORMED = 17
TOPIC, DLQ = "upmon.events.v1", "upmon.events.dlq"
KAFKA_TOOL = "/etc/upmon-kafka/kafka-tool.sh"
# The analyzer's gauges come back with the new leader: a killed leader's worst takeover
# (lease 15 s + 2 retry periods of 2 s), one 10 s cycle, one sampling interval.
GAUGE_BOUND = 15 + 2 * 2 + 10 + 1


@pytest.fixture(scope="module")
def node():
    plane = start_node(ci.IMAGES, lambda msg: pytest.fail(msg, pytrace=False))
    yield plane
    if not os.environ.get("UPMON_TEST_KEEP"):
        ci.helm(plane, "uninstall", ci.RELEASE, "-n", ci.NS, "--wait", check=False)
        plane.kubectl("delete", "namespace", ci.NS, "--wait=false", check=False)
        stop_node(plane)


def kafka_tool(node, *args, input=None):
    return node.kubectl("exec", "-i", "-n", ci.NS, "upmon-kafka-0", "-c", "kafka", "--",
                        "sh", KAFKA_TOOL, *args, input=input, timeout=180).stdout


def topic_messages(node, topic):
    """Messages a topic holds: log end minus log start offsets, summed over partitions."""
    def offsets(time_spec):
        out = kafka_tool(node, "get-offsets", "--bootstrap-server", "localhost:9092",
                         "--topic", topic, "--time", time_spec)
        got = {}
        for line in out.split():        # topic:partition:offset
            _, part, off = line.rsplit(":", 2)
            got[int(part)] = int(off)
        return got
    end, start = offsets("-1"), offsets("-2")
    return sum(end[p] - start.get(p, 0) for p in end)


def drain(node, want, timeout=900, still=90):
    """Wait until `want` rows are stored; False when the count stops moving below it for
    `still` seconds (what is missing will not come) or at the timeout."""
    deadline = time.time() + timeout
    last, since = -1, time.time()
    while time.time() < deadline:
        got = ci.stored(node, unique=False)[0]
        if got == want:
            return True
        if got != last:
            last, since = got, time.time()
        elif time.time() - since > still:
            return False
        time.sleep(3)
    return False


def report(runner, checker, **figures):
    """The run's figures as JSON to UPMON_CHAOS_REPORT (tests/bench/chaos/soak reads it)."""
    path = os.environ.get("UPMON_CHAOS_REPORT")
    if not path:
        return
    doc = {"seed": SEED, "count": COUNT, "interval": INTERVAL, "kinds": KINDS,
           "actions": runner.actions, "violations": checker.violations,
           "longest_gauge_gap": checker.longest_gauge_gap, "rounds": checker.rounds,
           "failed_samples": checker.errors, "transitions": len(checker.transitions),
           "alerts_fired": sorted(checker.alerts_fired), "malformed": MALFORMED}
    doc.update(figures)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)


def test_chaos_loses_nothing_and_leadership_holds(node, request):
    # A fresh release: the counts compare what this run produced with what it stored (a
    # release kept from an earlier run, UPMON_TEST_KEEP, still holds that run's data).
    if node.kubectl("get", "namespace", ci.NS, check=False).returncode == 0:
        ci.helm(node, "uninstall", ci.RELEASE, "-n", ci.NS, "--wait", check=False)
        node.kubectl("delete", "namespace", ci.NS, "--wait=true", "--timeout=300s", timeout=330)
    res = ci.subprocess.run(
        [ci.UP, "--local", "--state", node.state, "--no-demo", "--timeout",
         str(ci.READY_BOUND), "--set", "simulator.enabled=true", "--set", "simulator.count=0",
         "--set", "simulator.rate=%d" % RATE, "--set", "simulator.seed=%d" % SEED],
        capture_output=True, text=True, env=node.run_env, timeout=ci.READY_BOUND + 1800)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    wait_for("events stored", lambda: ci.stored(node, unique=False)[0] > 0 or None, 300, 3)
    junk = "".join("not json %d {\n" % i for i in range(MALFORMED))
    kafka_tool(node, "console-producer", "--bootstrap-server", "localhost:9092",
               "--topic", TOPIC, input=junk)

    log = []
    proxy = chaos.Proxy(node.kubectl_bin, env=dict(os.environ, KUBECONFIG=node.kubeconfig))
    request.addfinalizer(proxy.close)
    checker = chaos.Checker(proxy, ci.NS, log=lambda m: (log.append(m), print(m)),
                            gauge_bound=GAUGE_BOUND)
    checker.start()
    runner = chaos.Chaos(proxy, checker, ci.NS, SEED, kinds=KINDS, force_share=FORCE_SHARE,
                         kill_share=KILL_SHARE, log=lambda m: (log.append(m), print(m)))
    try:
        time.sleep(5)
        for kind, mode in runner.plan(COUNT):
            started = time.time()
            runner.delete(kind, mode)
            time.sleep(max(0.0, INTERVAL - (time.time() - started)))
        # Let everything come back, still checking.
        settled = chaos.wait_settled(proxy, ci.NS, 600)
        assert settled is not None, "pods not all Ready 600 s after the last deletion"
        time.sleep(GAUGE_BOUND)     # a last takeover's gauges are inside the checked window
    finally:
        checker.stop()
    print("seed %d: %s" % (SEED, [(a["kind"], a["mode"], a["takeover"])
                                  for a in runner.actions]))
    print("every pod Ready %.1f s after the last deletion; alerts fired meanwhile: %s"
          % (settled, sorted(checker.alerts_fired) or "none"))
    report(runner, checker, settled=settled)
    assert {a["kind"] for a in runner.actions} == set(KINDS) or COUNT < len(KINDS), \
        "a kind was never deleted (no live pod of it)"
    assert not checker.violations, "\n".join(checker.violations)
    assert checker.rounds > 0 and checker.longest_gauge_gap > 0, "the checker saw nothing"

    node.kubectl("scale", "deployment", "upmon-simulator", "-n", ci.NS, "--replicas=0")
    wait_for("the simulator stopped", lambda: not ci.pods(
        node, "app.kubernetes.io/component=simulator"), 120, 2)
    held = topic_messages(node, TOPIC)
    want = held - MALFORMED
    t0 = time.time()
    drained = drain(node, want)
    total, per = ci.stored(node, unique=False)
    drain_s = time.time() - t0 if drained else None
    ch = ci.ClickHouse(node, ci.shard_pod(node, 1))
    dup = int(ch.scalar("SELECT count() - uniqExact(kafka_partition, kafka_offset) "
                        "FROM upmon.events"))
    report(runner, checker, settled=settled, produced=want, stored=total, per_shard=per,
           duplicated=dup, drain_s=drain_s)
    assert dup == 0, "%d rows stored twice" % dup
    assert total == want and sum(per) == want and all(per), \
        "stored %d (per shard %s), Kafka holds %d well-formed events" % (total, per, want)
    for rollup in ("events_1s", "events_1m", "events_1m_company", "events_1d_company"):
        got = int(ch.scalar("SELECT countMerge(events) FROM upmon.%s" % rollup))
        assert got == want, "%s counts %d events, %d stored" % (rollup, got, want)
    assert topic_messages(node, DLQ) == MALFORMED
    under = kafka_tool(node, "topics", "--bootstrap-server", "localhost:9092", "--describe",
                       "--under-replicated-partitions")
    assert not under.strip(), under
    print("Kafka held %d, stored %d (per shard %s), DLQ %d; longest gauge gap %.1f s"
          % (held, total, per, MALFORMED, checker.longest_gauge_gap))
    # Whatever fired during the loop resolves once the release is whole again.
    t0 = time.time()
    still = wait_for("every alert resolved", lambda: (
        lambda f: f is not None and not f and "none")(checker.poll_alerts()), 600, 10)
    assert still == "none"
    report(runner, checker, settled=settled, produced=want, stored=total, per_shard=per,
           duplicated=dup, drain_s=drain_s, alerts_resolved_s=time.time() - t0, dlq=MALFORMED,
           passed=True)
