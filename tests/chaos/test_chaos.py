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
RATE = 100
MALFORMED = 17
TOPIC, DLQ = "upmon.events.v1", "upmon.events.dlq"
KAFKA_TOOL = "/etc/upmon-kafka/kafka-tool.sh"


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


def test_chaos_loses_nothing_and_leadership_holds(node):
    res = ci.subprocess.run(
        [ci.UP, "--local", "--state", node.state, "--no-demo", "--timeout",
         str(ci.READY_BOUND), "--set", "simulator.enabled=true", "--set", "simulator.count=0",
         "--set", "simulator.rate=%d" % RATE, "--set", "simulator.seed=%d" % SEED],
        capture_output=True, text=True, env=node.run_env, timeout=ci.READY_BOUND + 1800)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    wait_for("events stored", lambda: ci.stored(node)[0] > 0 or None, 300, 3)
    junk = "".join("not json %d {\n" % i for i in range(MALFORMED))
    kafka_tool(node, "console-producer", "--bootstrap-server", "localhost:9092",
               "--topic", TOPIC, input=junk)

    log = []
    proxy = chaos.Proxy(node.kubectl_bin, env=dict(os.environ, KUBECONFIG=node.kubeconfig))
    checker = chaos.Checker(proxy, ci.NS, log=lambda m: (log.append(m), print(m)))
    checker.start()
    runner = chaos.Chaos(proxy, checker, ci.NS, SEED, log=lambda m: (log.append(m), print(m)))
    try:
        time.sleep(5)
        for kind in runner.plan(COUNT):
            started = time.time()
            runner.delete(kind)
            time.sleep(max(0.0, INTERVAL - (time.time() - started)))
        # Let everything come back, still checking.
        wait_for("every pod Ready again", lambda: all(
            chaos.live(p) for p in proxy.json("/api/v1/namespaces/%s/pods" % ci.NS)["items"]
            if p["status"].get("phase") != "Succeeded"), 600, 3)
    finally:
        checker.stop()
        proxy.close()
    print("seed %d: %s" % (SEED, [(a["kind"], a["forced"], a["takeover"])
                                  for a in runner.actions]))
    assert {a["kind"] for a in runner.actions} == set(chaos.KINDS) or COUNT < len(chaos.KINDS)
    assert not checker.violations, "\n".join(checker.violations)

    node.kubectl("scale", "deployment", "upmon-simulator", "-n", ci.NS, "--replicas=0")
    wait_for("the simulator stopped", lambda: not ci.pods(
        node, "app.kubernetes.io/component=simulator"), 120, 2)
    held = topic_messages(node, TOPIC)
    want = held - MALFORMED
    wait_for("ingest drained the backlog", lambda: ci.stored(node)[0] == want or None, 900, 3)
    total, per = ci.stored(node)
    assert total == want and sum(per) == want and all(per), (total, per, want)
    ch = ci.ClickHouse(node, ci.shard_pod(node, 1))
    for rollup in ("events_1s", "events_1m", "events_1m_company", "events_1d_company"):
        got = int(ch.scalar("SELECT countMerge(events) FROM upmon.%s" % rollup))
        assert got == want, "%s counts %d events, %d stored" % (rollup, got, want)
    assert topic_messages(node, DLQ) == MALFORMED
    under = kafka_tool(node, "topics", "--bootstrap-server", "localhost:9092", "--describe",
                       "--under-replicated-partitions")
    assert not under.strip(), under
    print("Kafka held %d, stored %d (per shard %s), DLQ %d; longest gauge gap %.1f s"
          % (held, total, per, MALFORMED, checker.longest_gauge_gap))
