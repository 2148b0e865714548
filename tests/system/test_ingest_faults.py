"""upmon-ingest fault runs on the real stack (issue 4): a whole ClickHouse shard down
for 30 s, the Kafka broker killed and restarted, and two ingest replicas in one group
with a rebalance in the middle. Each run ends with exact counts: rows in `events` ==
valid events produced, each (kafka_partition, kafka_offset) once, and the per-second
rollup (fed by a materialized view, so it sees every insert that was not
deduplicated) counting each event once on every replica.

Reuses the fixtures and helpers of test_ingest.py (own topics, database from
upmon-schema, consumer group; removed afterwards). Binaries: INGEST_TEST_BIN and
INGEST_TEST_SCHEMA_BIN as there.
Run time: 2.3-2.7 minutes on the 2-core machine under load (the shard outage alone is 30 s).
"""

import os
import re
import signal
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import poll, run_stack
from test_ingest import ienv, produce, stop, valid_events  # noqa: F401 (ienv is a fixture)

N = int(os.environ.get("INGEST_FAULT_EVENTS", "60000"))
OUTAGE_S = 30


def metrics_url(log_path):
    """The /metrics URL of an ingest process, from its start log line (it binds port 0)."""
    def port():
        with open(log_path, "rb") as f:
            m = re.search(rb'msg="upmon-ingest running" http_port=(\d+)', f.read())
        return int(m.group(1)) if m else None
    return "http://127.0.0.1:%d" % poll("ingest logged its http port", port, timeout=30,
                                        interval=0.1)


def metric_sum(base, name):
    """Sum of every series of one metric (all label sets)."""
    with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def ready_status(base):
    try:
        with urllib.request.urlopen(base + "/readyz", timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code


def log_text(path):
    with open(path, "rb") as f:
        return f.read().decode(errors="replace")


def server_pid(e, name):
    with open(os.path.join(e.stack["state"], name, "pid")) as f:
        return int(f.read())


def restart_stack(e):
    r = run_stack("up", state=e.stack["state"], timeout=300)
    assert r.returncode == 0, "ci/stack up (restart) failed:\n%s%s" % (r.stdout, r.stderr)


def local_count(ch, e, table="events_local"):
    return int(ch.scalar("SELECT count() FROM %s.%s" % (e.db, table)))


def total_local(e):
    """Rows over every shard, read from each shard's replica 1 (works while a shard's
    other replica, or the Distributed table, would not)."""
    return sum(local_count(e.topology[(s, 1)], e) for s in range(1, e.nshards + 1))


def assert_exact(e, n, what):
    """Exact counts: events, distinct source positions, and the rollup on each replica."""
    poll("%s: all %d events stored" % (what, n), lambda: e.count() >= n, timeout=180,
         interval=0.25)
    # Both replicas of every shard hold the same rows before they are compared.
    for s in range(1, e.nshards + 1):
        r1, r2 = e.topology[(s, 1)], e.topology[(s, 2)]
        poll("%s: replicas of shard %d in sync" % (what, s),
             lambda: local_count(r1, e) == local_count(r2, e), timeout=120)
    # Give a late duplicate the time to show up before judging.
    time.sleep(2)
    count = e.count()
    assert count == n, "%s: events holds %d rows, %d valid events were produced" % (
        what, count, n)
    distinct = e.distinct()
    assert distinct == n, "%s: %d distinct (partition, offset) for %d events" % (
        what, distinct, n)
    for r in (1, 2):
        def rollup():
            return sum(int(e.topology[(s, r)].scalar(
                "SELECT countMerge(events) FROM %s.events_1s_local" % e.db))
                for s in range(1, e.nshards + 1))
        # A restarted replica fetches the rollup's parts after the table's: wait for
        # them, then judge (a count that never converges fails here).
        poll("%s: per-second rollup on replica %d holds %d events" % (what, r, n),
             lambda: rollup() >= n, timeout=120)
        time.sleep(1)
        got = rollup()
        assert got == n, "%s: per-second rollup on replica %d counts %d events, %d stored" % (
            what, r, got, n)


def test_ingest_exact_with_a_whole_shard_down_for_30s(ienv):  # noqa: F811
    e = ienv
    n = N
    events = valid_events(n, 11)
    half = n // 2
    produce(e.brokers, e.topic, events[:half])
    # Small age-cut batches so that the outage catches ranges half inserted.
    p = e.start(batch_rows=3000, batch_age="50ms", poll_max=2000, retry_backoff_max="2s")
    base = metrics_url(e.log)
    poll("ingest under way", lambda: total_local(e) > 0, timeout=60, interval=0.05)
    victims = ["clickhouse-s2r1", "clickhouse-s2r2"]
    try:
        for name in victims:
            os.kill(server_pid(e, name), signal.SIGKILL)
        t0 = time.monotonic()
        # Rows keep arriving while the shard is down; ingest must hold them.
        produce(e.brokers, e.topic, events[half:])
        poll("ingest reports inserts failing", lambda: metric_sum(
            base, "upmon_ingest_insert_failures_total") > 0, timeout=OUTAGE_S, interval=0.2)
        poll("/readyz reports not ready during the outage", lambda: ready_status(base) == 503,
             timeout=OUTAGE_S, interval=0.2)
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - t0)))
        assert p.poll() is None, "upmon-ingest exited while shard 2 was down (see %s)" % e.log
        stored = local_count(e.topology[(1, 1)], e)
        assert stored < n, "shard 1 alone holds %d rows of %d: ingest cannot have paused" % (
            stored, n)
    finally:
        restart_stack(e)
    print("outage %.1fs, insert failures %d" % (
        time.monotonic() - t0, metric_sum(base, "upmon_ingest_insert_failures_total")))
    assert_exact(e, n, "shard 2 down %ds" % OUTAGE_S)
    poll("/readyz ready again", lambda: ready_status(base) == 200, timeout=30)
    assert p.poll() is None
    assert stop(p) == 0, "SIGTERM must end upmon-ingest with exit 0"


def test_ingest_exact_with_the_kafka_broker_restarted(ienv):  # noqa: F811
    e = ienv
    n = N
    events = valid_events(n, 12)
    first = (2 * n) // 3
    produce(e.brokers, e.topic, events[:first])
    p = e.start(batch_rows=3000, batch_age="50ms", poll_max=2000)
    poll("ingest under way", lambda: e.count() > 0, timeout=60, interval=0.05)
    brokers = [s["name"] for s in e.stack["layout"]["servers"] if s["kind"] == "kafka"]
    try:
        for name in brokers:
            os.kill(server_pid(e, name), signal.SIGKILL)
        killed_at = e.count()
        time.sleep(3)
        assert p.poll() is None, "upmon-ingest exited when the broker died (see %s)" % e.log
    finally:
        restart_stack(e)
    print("broker killed with %d of %d rows stored" % (killed_at, first))
    # The stream goes on after the restart.
    produce(e.brokers, e.topic, events[first:])
    assert_exact(e, n, "broker restarted")
    assert p.poll() is None
    assert stop(p) == 0, "SIGTERM must end upmon-ingest with exit 0"


class Stream(threading.Thread):
    """Produces chunks of fresh valid events at a steady pace until told to stop, so that
    every step of a test happens mid-stream however slow the machine is."""

    def __init__(self, e, chunk, pause, max_chunks):
        super().__init__(daemon=True)
        self.e, self.chunk, self.pause, self.max_chunks = e, chunk, pause, max_chunks
        self.done = threading.Event()
        self.error = None
        self.sent = 0

    def run(self):
        try:
            for k in range(self.max_chunks):
                if self.done.is_set():
                    break
                produce(self.e.brokers, self.e.topic, valid_events(self.chunk, 1000 + k))
                self.sent += self.chunk
                time.sleep(self.pause)
        except BaseException as err:  # reported by finish() in the test's thread
            self.error = err

    def streaming(self):
        return self.is_alive() and not self.done.is_set()

    def finish(self):
        self.done.set()
        self.join(timeout=300)
        assert not self.is_alive(), "producing the stream did not end"
        if self.error is not None:
            raise self.error
        return self.sent


def test_ingest_exact_with_two_replicas_and_a_rebalance(ienv):  # noqa: F811
    e = ienv
    opts = {"batch_rows": 3000, "batch_age": "50ms", "poll_max": 2000}
    # At most 100k events; a normal run sends about 40-70k.
    stream = Stream(e, chunk=500, pause=0.1, max_chunks=200)
    stream.start()
    try:
        p1 = e.start(**opts)
        log1 = e.log
        poll("first replica stores rows", lambda: e.count() > 0, timeout=60, interval=0.05)
        p2 = e.start(**opts)
        log2 = e.log
        base2 = metrics_url(log2)
        # The second member joins mid-stream: the group rebalances, partitions are split.
        poll("second replica owns partitions", lambda: "partition started" in log_text(log2),
             timeout=60, interval=0.1)
        before = metric_sum(base2, "upmon_ingest_inserted_total")
        poll("second replica stores rows", lambda: metric_sum(
            base2, "upmon_ingest_inserted_total") > before, timeout=60, interval=0.1)
        assert p1.poll() is None and p2.poll() is None
        assert stream.streaming(), "the stream ended before the rebalance"
        # The first leaves gracefully mid-stream: its partitions move to the second.
        assert stop(p1) == 0, "SIGTERM must end upmon-ingest with exit 0 (see %s)" % log1
        assert stream.streaming(), "the stream ended before the first replica left"
        sent_at_stop = stream.sent
        poll("second replica owns every partition", lambda: len(set(re.findall(
            r'msg="partitions assigned" .* count=6 ', log_text(log2)))) > 0, timeout=60,
            interval=0.1)
        before = metric_sum(base2, "upmon_ingest_inserted_total")
        poll("second replica stores rows alone", lambda: metric_sum(
            base2, "upmon_ingest_inserted_total") > before, timeout=60, interval=0.1)
    finally:
        n = stream.finish()
    print("first replica left after %d events, %d produced in all" % (sent_at_stop, n))
    assert_exact(e, n, "rebalance")
    print("replica 2 restarts (assignment changes) = %d" % metric_sum(
        base2, "upmon_ingest_restarts_total"))
    assert p2.poll() is None
    assert stop(p2) == 0
