"""upmon-ingest on the real stack: exact counts, DLQ contents, shard routing by
ClickHouse's own sipHash64, and exactly-once across kill -9 restarts.

Each test creates its own topics, database (tables from the issue-4 contract,
on every replica) and consumer group, and removes them afterwards.
Run time: about 2-3 minutes on the 2-core CI machine.
"""

import json
import os
import random
import signal
import subprocess
import time
import urllib.request
import uuid

import pytest

from conftest import ROOT, poll
from test_stack import kafka_java

BIN = os.environ.get("INGEST_TEST_BIN") or os.path.join(ROOT, "build", "bin", "upmon-ingest")
SCHEMA_BIN = os.environ.get("INGEST_TEST_SCHEMA_BIN") or os.path.join(ROOT, "build", "bin",
                                                                         "upmon-schema")
N_VALID = int(os.environ.get("INGEST_TEST_EVENTS", "100000"))  # the fault runs
N_SIM = int(os.environ.get("INGEST_TEST_SIM_EVENTS", "1000000"))  # the exact-count run
COUNTRIES = ["DE", "US", "FR", "PL", "KZ", "BY", "UZ", "AM"]
ORIGINS = ["upload/ui", "upload/api", "update/manual", "update/xlsx"]

TABLE_SQL = """
CREATE TABLE {db}.events_local ON CLUSTER {cluster} (
    event_date Date, ts_ns Int64, item_id UInt64, attempt_id String, request_id String,
    event Enum8('SAVE' = 1, 'UPDATE' = 2, 'ERROR' = 3), is_created UInt8, up_ts Int64,
    origin String, origin_id String, country FixedString(2), company_id UInt64,
    category_id UInt64, media Array(String), media_own UInt16, media_external UInt16,
    media_bad UInt16, data String, kafka_partition UInt32, kafka_offset UInt64
) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{{shard}}/{db}/events_local', '{{replica}}')
PARTITION BY event_date ORDER BY (origin, country, company_id, ts_ns, attempt_id)
SETTINGS replicated_deduplication_window = 10000
"""
DIST_SQL = """
CREATE TABLE {db}.events ON CLUSTER {cluster} AS {db}.events_local
ENGINE = Distributed({cluster}, {db}, events_local, sipHash64(attempt_id))
"""


def binary():
    if not os.path.exists(BIN):
        pytest.fail("%s missing: build it (ninja -C build upmon-ingest)" % BIN, pytrace=False)
    return BIN


def valid_events(n, seed):
    rnd = random.Random(seed)
    now = time.time_ns()
    out = []
    for i in range(n):
        attempt = "att-%d-%x" % (seed, rnd.getrandbits(40) if i % 3 else i)
        created = rnd.random() < 0.3
        ts = now - rnd.randrange(0, 3_600_000_000_000)
        ev = {"item_id": rnd.getrandbits(63), "attempt_id": attempt, "request_id": "r%d" % i,
              "event": rnd.choice(["SAVE", "UPDATE", "ERROR"]) if not created else "SAVE",
              "ts_ns": ts, "is_created": created, "up_ts": ts + 5 if created else 0,
              "origin": rnd.choice(ORIGINS), "origin_id": "o%d" % (i % 97),
              "country": rnd.choice(COUNTRIES), "company_id": rnd.randrange(1, 5000),
              "category_id": rnd.randrange(1, 300),
              "media": ["https://cdn.example.com/%d.jpg" % i, "http://x.org/a.png", "bad link"],
              "data": {"i": i, "note": "ok"}}
        out.append((attempt.encode(), json.dumps(ev, separators=(",", ":")).encode()))
    return out


def malformed():
    """(key, value, expected reason): every rejection reason the wire format names."""
    base = json.loads(valid_events(1, 7)[0][1])

    def mod(**kw):
        d = dict(base)
        for k, v in kw.items():
            if v is KeyError:
                d.pop(k)
            else:
                d[k] = v
        return json.dumps(d, separators=(",", ":")).encode()

    cases = [
        (b"", "invalid_json"),                                  # empty payload
        (b'{"item_id":1,"attempt_id":"a', "invalid_json"),     # truncated JSON
        (b"[1,2,3]", "not_object"),
        (mod(attempt_id="x\udcff") .replace(b"\\udcff", b"\xff"), "invalid_utf8"),
        (mod(item_id=KeyError), "missing_field"),
        (mod(item_id="12"), "wrong_type"),
        (mod(ts_ns=1.5), "wrong_type"),
        (mod(company_id=-1), "out_of_range"),
        (mod(origin="o" * 65), "too_long"),
        (mod(event="DELETE"), "unknown_event"),
        (mod(is_created=False, up_ts=5), "up_ts_without_created"),
        (mod(country="XX"), "bad_country"),
        (mod(media="not-a-list"), "bad_media"),
        (mod(data={"blob": "z" * 70000}), "data_too_large"),
        (mod(data={"blob": "h" * 900000}), "data_too_large"),     # huge message
        (mod(v=2), "unsupported_version"),
        (mod().replace(b'{"item_id"', b'{"origin":"a","item_id"', 1)
         .replace(b'"origin":"a",', b'"origin":"a","origin":"b",', 1), "duplicate_field"),
        (mod(data=json.loads("[" * 70 + "]" * 70)), "too_deep"),
        (mod(request_id="a\u0000b"), "nul_in_string"),
    ]
    return [(b"bad-%d" % i, v, r) for i, (v, r) in enumerate(cases)]


def produce(brokers, topic, msgs):
    payload = b"".join(k + b"\t" + v + b"\n" for k, v in msgs)
    p = subprocess.run(["kcat", "-P", "-b", brokers, "-t", topic, "-K", "\t", "-X", "acks=all",
                        "-X", "linger.ms=20", "-X", "message.max.bytes=2000000"],
                       input=payload, capture_output=True, timeout=300)
    assert p.returncode == 0, "kcat -P failed (%d): %s" % (p.returncode, p.stderr)
    assert b"fail" not in p.stderr.lower(), "kcat -P reported: %s" % p.stderr


class Env:
    def __init__(self, stack, topology):
        self.stack = stack
        self.env = stack["env"]
        self.topology = topology
        self.brokers = self.env["UPMON_KAFKA_BROKERS"]
        self.cluster = self.env["UPMON_CLICKHOUSE_CLUSTER"]
        tag = uuid.uuid4().hex[:10]
        self.topic = "upmon.ingest-test.%s" % tag
        self.dlq = "upmon.ingest-test.%s.dlq" % tag
        self.group = "upmon-ingest-test-%s" % tag
        self.db = "ingest_test_%s" % tag
        self.ch = topology[(1, 1)]
        self.nshards = max(s for s, _ in topology)
        self.procs = []

    def setup(self):
        for t, parts in ((self.topic, 6), (self.dlq, 3)):
            r = kafka_java(self.stack, "org.apache.kafka.tools.TopicCommand", "--bootstrap-server",
                           self.brokers, "--create", "--topic", t, "--partitions", str(parts),
                           "--replication-factor", "1", "--config", "max.message.bytes=2000000")
            assert r.returncode == 0, "creating %s failed:\n%s%s" % (t, r.stdout, r.stderr)
        if os.path.exists(SCHEMA_BIN):
            # The real schema (sql/), rollups included, in this test's database.
            env = dict(os.environ)
            env.update({k: v for k, v in self.env.items() if k.startswith("UPMON_CLICKHOUSE_")})
            env["UPMON_CLICKHOUSE_DATABASE"] = self.db
            r = subprocess.run([SCHEMA_BIN, "apply"], env=env, capture_output=True, text=True,
                               timeout=300)
            assert r.returncode == 0, "upmon-schema apply failed:\n%s%s" % (r.stdout, r.stderr)
        else:
            # Before upmon-schema existed: the tables of the issue-4 contract.
            self.ch.query("CREATE DATABASE %s ON CLUSTER %s" % (self.db, self.cluster))
            self.ch.query(TABLE_SQL.format(db=self.db, cluster=self.cluster))
            self.ch.query(DIST_SQL.format(db=self.db, cluster=self.cluster))

    def teardown(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.ch.query("DROP DATABASE IF EXISTS %s ON CLUSTER %s" % (self.db, self.cluster))
        for t in (self.topic, self.dlq):
            kafka_java(self.stack, "org.apache.kafka.tools.TopicCommand", "--bootstrap-server",
                       self.brokers, "--delete", "--topic", t)

    def shards_spec(self):
        shards = []
        for s in range(1, self.nshards + 1):
            urls = [self.topology[k].url for k in sorted(self.topology) if k[0] == s]
            shards.append("|".join(urls))
        return ",".join(shards)

    def start(self, **extra):
        env = dict(os.environ)
        env.update({
            "UPMON_KAFKA_BROKERS": self.brokers, "UPMON_KAFKA_TOPIC": self.topic,
            "UPMON_KAFKA_DLQ_TOPIC": self.dlq, "UPMON_KAFKA_GROUP_ID": self.group,
            "UPMON_KAFKA_STATISTICS_INTERVAL": "1s",
            # A killed member blocks the group's rebalance for this long.
            "UPMON_KAFKA_SESSION_TIMEOUT": "6s",
            "UPMON_KAFKA_PROPERTIES": "message.max.bytes=2000000",
            "UPMON_CLICKHOUSE_URLS": self.env["UPMON_CLICKHOUSE_URLS"],
            "UPMON_CLICKHOUSE_USER": self.env["UPMON_CLICKHOUSE_USER"],
            "UPMON_CLICKHOUSE_PASSWORD": self.env["UPMON_CLICKHOUSE_PASSWORD"],
            "UPMON_CLICKHOUSE_DATABASE": self.db, "UPMON_CLICKHOUSE_CLUSTER": self.cluster,
            "UPMON_INGEST_SHARDS": self.shards_spec(), "UPMON_HTTP_PORT": "0",
        })
        if not os.path.exists(SCHEMA_BIN):
            env["UPMON_INGEST_TABLE"] = "events_local"  # the fallback tables have no events_in
        env.update({"UPMON_INGEST_" + k.upper(): str(v) for k, v in extra.items()})
        self.log = os.path.join(self.stack["state"], "ingest-test-%s-%d.log" % (
            self.group[-10:], len(self.procs)))
        log = open(self.log, "wb")
        p = subprocess.Popen([binary()], env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def count(self, table="events"):
        return int(self.ch.scalar("SELECT count() FROM %s.%s" % (self.db, table)))

    def distinct(self):
        return int(self.ch.scalar("SELECT uniqExact(kafka_partition, kafka_offset) FROM %s.events"
                                  % self.db))


@pytest.fixture
def ienv(stack, topology):
    e = Env(stack, topology)
    e.setup()
    try:
        yield e
    finally:
        e.teardown()


def stop(p, timeout=30):
    p.send_signal(signal.SIGTERM)
    return p.wait(timeout=timeout)


def dlq_messages(e, expected):
    fmt = "%k\t%h\n"
    out = poll("DLQ holds %d messages" % expected, lambda: (lambda lines: lines if len(lines) >= expected else None)(
        subprocess.run(["kcat", "-C", "-b", e.brokers, "-t", e.dlq, "-o", "beginning", "-e", "-q",
                        "-f", fmt, "-X", "fetch.message.max.bytes=2000000"],
                       capture_output=True, timeout=60).stdout.decode(errors="replace").splitlines()),
        timeout=60)
    return out


def simulate(e, count, seed):
    """count simulator events (all valid) into the test's topic, unpaced."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPMON_")}
    env.update({"UPMON_KAFKA_BROKERS": e.brokers, "UPMON_KAFKA_TOPIC": e.topic,
                "UPMON_HTTP_PORT": "0", "UPMON_KAFKA_STATISTICS_INTERVAL": "0"})
    sim = os.path.join(os.path.dirname(BIN), "upmon-simulator")
    p = subprocess.run([sim, "--seed", str(seed), "--start", "2026-11-01T00:00:00Z", "--speed",
                        "0", "--count", str(count), "--output", "kafka"], env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "delivered=%d undelivered=0" % count in p.stderr, p.stderr[-3000:]


def test_ingest_exact_counts_dlq_and_shard_routing(ienv):
    """N_SIM (1,000,000) simulator events with every kind of malformed message in the middle."""
    e = ienv
    bad = malformed()
    simulate(e, N_SIM // 2, 1)
    produce(e.brokers, e.topic, [(k, v) for k, v, _ in bad])
    simulate(e, N_SIM - N_SIM // 2, 2)
    p = e.start()
    poll("all %d valid events stored" % N_SIM,
         lambda: p.poll() is None and e.count() >= N_SIM or (p.poll() is not None and
                                                              pytest.fail("ingest exited")),
         timeout=600)
    # Give a spurious duplicate the time to show up before judging.
    time.sleep(2)
    assert e.count() == N_SIM, "events holds %d rows, %d valid events were sent" % (
        e.count(), N_SIM)
    assert e.distinct() == N_SIM

    # Every shard holds exactly the rows ClickHouse's own sipHash64 sends it.
    for s in range(1, e.nshards + 1):
        local = e.topology[(s, 1)]
        wrong = int(local.scalar("SELECT count() FROM %s.events_local WHERE sipHash64(attempt_id) "
                                 "%% %d != %d" % (e.db, e.nshards, s - 1)))
        total = int(local.scalar("SELECT count() FROM %s.events_local" % e.db))
        assert total > 0 and wrong == 0, "shard %d: %d of %d rows belong elsewhere" % (
            s, wrong, total)
    # And the split equals the hash's share computed by the server over the data.
    shares = e.ch.rows("SELECT sipHash64(attempt_id) %% %d AS s, count() FROM %s.events "
                       "GROUP BY s ORDER BY s" % (e.nshards, e.db))
    for s, n in shares:
        local = e.topology[(int(s) + 1, 2)]  # the other replica has them too
        poll("replica of shard %s caught up" % s,
             lambda: int(local.scalar("SELECT count() FROM %s.events_local" % e.db)) == int(n),
             timeout=60)

    lines = dlq_messages(e, len(bad))
    assert len(lines) == len(bad), "DLQ holds %d messages, %d were malformed" % (len(lines),
                                                                                  len(bad))
    by_key = {}
    for line in lines:
        key, _, hdrs = line.partition("\t")
        by_key[key] = dict(h.split("=", 1) for h in hdrs.split(",") if "=" in h)
    for k, _, reason in bad:
        h = by_key.get(k.decode())
        assert h is not None, "%s missing from the DLQ" % k
        assert h.get("reason") == reason, "%s: reason %r, expected %r (%r)" % (
            k, h.get("reason"), reason, h)
        assert "source_partition" in h and "source_offset" in h and "field" in h
    assert stop(p) == 0, "SIGTERM must end upmon-ingest with exit 0"


def probe_bin():
    build = os.environ.get("UPMON_BUILD_DIR") or os.path.join(ROOT, "build")
    path = os.path.join(build, "tests", "system_probe")
    if not os.path.exists(path):
        pytest.fail("%s missing: build it (ninja -C build system_probe)" % path, pytrace=False)
    return path


def end_offsets(e, parts):
    """Each partition's log end (the offset the next message would get), via kcat -Q."""
    argv = ["kcat", "-Q", "-b", e.brokers]
    for part in parts:
        argv += ["-t", "%s:%d:-1" % (e.topic, part)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, "kcat -Q failed: %s" % out.stderr
    ends = {}
    for line in out.stdout.splitlines():
        # "<topic> [<partition>] offset <end>"
        words = line.split()
        if len(words) == 4 and words[1].startswith("[") and words[2] == "offset":
            ends[int(words[1].strip("[]"))] = int(words[3])
    assert sorted(ends) == sorted(parts), out.stdout
    return ends


def commit_as_crashed(e, offsets, metadata):
    """Leave the group's committed offsets (and their metadata) as a consumer that
    recorded a cut and died would have."""
    env = dict(os.environ)
    env.update({"UPMON_KAFKA_BROKERS": e.brokers, "UPMON_LOG_LEVEL": "warn"})
    r = subprocess.run([probe_bin(), "kafka-commit", "--topic", e.topic, "--group", e.group,
                        "--offsets", ",".join("%d=%d" % kv for kv in sorted(offsets.items())),
                        "--metadata", metadata], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "result=ok" in r.stdout, r.stdout + r.stderr


def test_ingest_finishes_a_group_recorded_by_a_crashed_consumer(ienv):
    """A cut recorded in three partitions' offsets and never inserted is rebuilt and
    stored once; a record whose group another member shows as stored inserts nothing."""
    e = ienv
    if not os.path.exists(SCHEMA_BIN):
        pytest.fail("%s missing: this test needs the real schema (ninja -C build upmon-schema)"
                    % SCHEMA_BIN, pytrace=False)
    n = 3000
    produce(e.brokers, e.topic, valid_events(n, 21))
    ends = end_offsets(e, range(6))
    assert all(ends[p] > 0 for p in (0, 1, 2, 3)), ends
    meta = "upmon-ingest/2 shards=%d p=%s" % (
        e.nshards, ",".join("%d:0-%d" % (p, ends[p]) for p in (0, 1, 2)))
    commit_as_crashed(e, {0: 0, 1: 0, 2: 0}, meta)

    p = e.start()
    poll("all %d events stored" % n, lambda: e.count() >= n, timeout=120)
    time.sleep(2)
    assert e.count() == n and e.distinct() == n, (e.count(), e.distinct())
    with open(e.log, "rb") as f:
        log = f.read().decode(errors="replace")
    finished = [l for l in log.splitlines() if "recorded cut finished" in l]
    # Whichever member came first finished the group for all three (one replica owns all).
    assert len(finished) == 1 and "finished=3" in finished[0] and "stored_before=0" in finished[0], \
        finished
    assert stop(p) == 0

    # Partition 0 rewound with a record naming partition 3, which is past its end: that
    # group was stored (ends are committed only after the inserts), so nothing may be
    # inserted again. Inserting it would duplicate rows: this block never existed.
    meta2 = "upmon-ingest/2 shards=%d p=0:0-%d,3:0-%d" % (e.nshards, ends[0], ends[3])
    commit_as_crashed(e, {0: 0}, meta2)
    p = e.start()
    poll("the second record finished", lambda: "stored_before=1" in open(e.log, "rb").read()
         .decode(errors="replace"), timeout=60)
    time.sleep(3)
    assert e.count() == n and e.distinct() == n, (e.count(), e.distinct())
    rollup = sum(int(e.topology[(s, 1)].scalar(
        "SELECT countMerge(events) FROM %s.events_1s_local" % e.db))
        for s in range(1, e.nshards + 1))
    assert rollup == n, "per-second rollup counts %d events, %d stored" % (rollup, n)
    assert stop(p) == 0


def test_ingest_exactly_once_across_kill9(ienv):
    e = ienv
    n = N_VALID
    valid = valid_events(n, 2)
    produce(e.brokers, e.topic, valid)
    rnd = random.Random(5)
    kills = 0
    replays = 0
    # Small, age-cut batches so that kills land between the recording of a
    # cut, its inserts and its commit.
    opts = {"batch_rows": 3000, "batch_age": "%dms" % 40, "poll_max": 2000}
    p = e.start(**opts)
    while kills < 4:
        # Kill only once this process is storing rows itself.
        before = e.count()
        poll("restarted ingest makes progress", lambda: e.count() > before or p.poll() is not None,
             timeout=90, interval=0.1)
        assert p.poll() is None, "upmon-ingest exited by itself (see %s)" % e.log
        time.sleep(rnd.uniform(0.0, 0.8))
        if e.count() >= n:
            break
        p.kill()
        p.wait()
        kills += 1
        p = e.start(**opts)
    poll("all %d events stored after %d kills" % (n, kills), lambda: e.count() >= n, timeout=240)
    for path in (e.log[: e.log.rindex("-")] + "-%d.log" % i for i in range(kills + 1)):
        with open(path, "rb") as f:
            replays += len([l for l in f if b"recorded cut finished" in l])
    time.sleep(2)
    assert e.count() == n, "after %d kill -9: %d rows for %d events" % (kills, e.count(), n)
    assert e.distinct() == n
    assert kills >= 2, "the stream ended before the kills: raise INGEST_TEST_EVENTS"
    print("kills=%d replays_of_recorded_ranges=%d" % (kills, replays))
    rollup = 0
    for s in range(1, e.nshards + 1):
        try:
            rollup += int(e.topology[(s, 1)].scalar(
                "SELECT countMerge(events) FROM %s.events_1s_local" % e.db))
        except AssertionError as err:
            print("no rollup to compare: %s" % err)
            break
    print("rows=%d rollup_events=%d" % (e.count(), rollup))
    if os.path.exists(SCHEMA_BIN):
        # The materialized views saw each event once too (replays included).
        assert rollup == n, "per-second rollup counts %d events, %d stored" % (rollup, n)
    assert stop(p) == 0


def test_ingest_exact_with_a_replica_killed_and_restarted(ienv):
    e = ienv
    n = N_VALID
    events = valid_events(n, 3)
    # Half before the kill, half while the replica is down: ingest may well
    # have stored the first half before the kill lands.
    produce(e.brokers, e.topic, events[: n // 2])
    opts = {"batch_rows": 5000, "batch_age": "50ms", "poll_max": 2000}
    p = e.start(**opts)
    # Read through a replica that stays up.
    reader = e.topology[(2, 2)]
    count = lambda: int(reader.scalar("SELECT count() FROM %s.events" % e.db))  # noqa: E731
    poll("ingest under way", lambda: count() > 0, timeout=60, interval=0.05)
    victim = os.path.join(e.stack["state"], "clickhouse-s1r1", "pid")
    with open(victim) as f:
        pid = int(f.read())
    os.kill(pid, signal.SIGKILL)
    try:
        # Inserts of shard 1 move to its other replica meanwhile.
        time.sleep(5)
        assert p.poll() is None, "upmon-ingest died while a replica was down"
        before = count()
        produce(e.brokers, e.topic, events[n // 2:])
        poll("shard 1 keeps taking rows on its other replica",
             lambda: int(e.topology[(1, 2)].scalar(
                 "SELECT count() FROM %s.events_local" % e.db)) > 0 and count() > before,
             timeout=60)
    finally:
        from conftest import run_stack
        r = run_stack("up", state=e.stack["state"], timeout=300)
        assert r.returncode == 0, "restarting the replica failed:\n%s%s" % (r.stdout, r.stderr)
    poll("all %d events stored" % n, lambda: count() >= n, timeout=240)
    s1r1 = e.topology[(1, 1)]
    s1r2 = e.topology[(1, 2)]
    poll("the restarted replica caught up",
         lambda: s1r1.scalar("SELECT count() FROM %s.events_local" % e.db) ==
         s1r2.scalar("SELECT count() FROM %s.events_local" % e.db), timeout=120)
    time.sleep(2)
    assert count() == n, "%d rows for %d events" % (count(), n)
    assert int(reader.scalar("SELECT uniqExact(kafka_partition, kafka_offset) FROM %s.events"
                             % e.db)) == n
    assert stop(p) == 0
