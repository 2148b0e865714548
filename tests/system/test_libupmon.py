"""libupmon against the real stack: the ClickHouse client, the Kafka producer
and consumer, the event codec and the metrics server, driven through the
system_probe program (tests/system/probe.c), which uses only the library's
public API and takes its configuration from the `ci/stack env` variables.

The probe is found in $UPMON_BUILD_DIR/tests/system_probe, else in
build/tests/system_probe under the repository root; a missing probe fails
the tests (build it with `ninja -C <build dir> system_probe`).
"""

import json
import os
import signal
import socket
import subprocess
import urllib.parse
import uuid

import pytest

from conftest import ROOT, http, http_json, poll
from test_stack import kafka_java

U64_MAX = 2**64 - 1
I64_MIN = -2**63


def build_dir():
    return os.path.abspath(os.environ.get("UPMON_BUILD_DIR") or os.path.join(ROOT, "build"))


def parse_kv(text):
    """key=value lines (the probe prints one per line) into a dict."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key] = value
    return out


class Probe:
    def __init__(self, path, env):
        self.path = path
        self.base_env = env

    def env(self, **overrides):
        env = dict(self.base_env)
        env.update({k: str(v) for k, v in overrides.items()})
        return env

    def run(self, *args, env=None, timeout=120, check=True):
        """Run one subcommand; returns (key=value dict, CompletedProcess)."""
        p = subprocess.run([self.path] + [str(a) for a in args], capture_output=True, text=True,
                           timeout=timeout, env=self.env(**(env or {})))
        if check:
            assert p.returncode == 0, "system_probe %s exited %d:\nstdout:\n%s\nstderr:\n%s" % (
                " ".join(str(a) for a in args), p.returncode, p.stdout, p.stderr[-4000:])
        return parse_kv(p.stdout), p

    def query(self, sql, **env):
        """The body of a ClickHouse query run by upm_ch_query."""
        _, p = self.run("ch-query", "--sql", sql, env=env)
        return p.stdout


@pytest.fixture(scope="session")
def probe(stack):
    path = os.path.join(build_dir(), "tests", "system_probe")
    if not os.access(path, os.X_OK):
        pytest.fail("%s is missing: build it (cmake ... && ninja -C %s system_probe) or point "
                    "UPMON_BUILD_DIR at the build directory" % (path, build_dir()),
                    pytrace=False)
    # The stack's variables only: whatever UPMON_* the caller's shell
    # exports for another stack must not leak into the probe's config.
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPMON_")}
    env.update(stack["env"])
    env["UPMON_LOG_LEVEL"] = "info"
    return Probe(path, env)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_probe_rejects_bad_usage_and_config(probe):
    # The probe says what is wrong instead of running with a default.
    _, p = probe.run("kafka-consume", "--topic", "t", "--group", "g", "--max", "x", check=False)
    assert p.returncode == 2 and "--max" in p.stderr, p.stderr
    _, p = probe.run("ch-query", "--sql", "SELECT 1", env={"UPMON_CLICKHOUSE_URLZ": "x"},
                     check=False)
    assert p.returncode == 2 and "UPMON_CLICKHOUSE_URLZ" in p.stderr, p.stderr
    # A port already taken fails the server's start, naming the port.
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    try:
        port = blocker.getsockname()[1]
        out, p = probe.run("serve", "--seconds", "5", check=False, timeout=30,
                           env={"UPMON_HTTP_BIND": "127.0.0.1", "UPMON_HTTP_PORT": port})
    finally:
        blocker.close()
    assert p.returncode == 1 and str(port) in out.get("error", ""), (out, p.stderr)


# --------------------------------------------------------------------------
# ClickHouse


def expected_rows(seed, n):
    """The rows probe.c's ch_row() builds, in insertion order."""
    rows = []
    for i in range(n):
        if i == 1:
            ts = I64_MIN
        elif i % 2:
            ts = -(seed * 1000000 + i)
        else:
            ts = seed * 1000000 + i
        rows.append((U64_MAX - i, ts, "seed=%d row=%d \u00e9\t\"q\"\\\n" % (seed, i)))
    return rows


def test_clickhouse_insert_dedup_failover_and_errors(stack, topology, probe):
    cluster = stack["env"]["UPMON_CLICKHOUSE_CLUSTER"]
    r1, r2 = topology[(1, 1)], topology[(1, 2)]
    db = "probe_%s" % uuid.uuid4().hex[:10]
    n = 1000
    admin = r1
    admin.query("CREATE DATABASE %s ON CLUSTER %s" % (db, cluster))
    try:
        admin.query(
            "CREATE TABLE %s.t_local ON CLUSTER %s (id UInt64, ts Int64, s String) "
            "ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/%s/t_local', '{replica}') "
            "ORDER BY (id, ts)" % (db, cluster, db))
        admin.query("CREATE TABLE %s.t ON CLUSTER %s AS %s.t_local "
                    "ENGINE = Distributed(%s, %s, t_local, intHash64(id))"
                    % (db, cluster, db, cluster, db))

        def count(ch, table="t_local"):
            ch.query("SYSTEM SYNC REPLICA %s.t_local" % db, timeout=60)
            return int(probe.query("SELECT count() FROM %s.%s" % (db, table),
                                   UPMON_CLICKHOUSE_URLS=ch.url).strip())

        # One batch straight into replica 1 of shard 1 ...
        first, _ = probe.run("ch-insert", "--table", "%s.t_local" % db, "--rows", n,
                             "--seed", 11, env={"UPMON_CLICKHOUSE_URLS": r1.url})
        assert first["result"] == "ok" and first["attempts"] == "1", first
        assert first["rows"] == str(n)
        assert count(r1) == n and count(r2) == n
        # ... and the byte-identical batch into replica 2: what upm_ch's
        # failover does after "the insert may or may not have happened".
        second, _ = probe.run("ch-insert", "--table", "%s.t_local" % db, "--rows", n,
                              "--seed", 11, env={"UPMON_CLICKHOUSE_URLS": r2.url})
        assert second["result"] == "ok" and second["bytes"] == first["bytes"], (first, second)
        for ch in (r1, r2):
            assert count(ch) == n, "the retried batch was not deduplicated on %s" % ch.url
        assert count(r1, "t") == n, "the Distributed table sees duplicates"

        # Values exact, read back from the other replica through JSON.
        body = probe.query("SELECT toString(id) AS id, toString(ts) AS ts, s FROM %s.t_local "
                           "ORDER BY id DESC FORMAT JSONEachRow" % db,
                           UPMON_CLICKHOUSE_URLS=r2.url)
        got = [json.loads(line) for line in body.splitlines()]
        got = [(int(r["id"]), int(r["ts"]), r["s"]) for r in got]
        assert got == expected_rows(11, n), "rows differ from what the probe encoded"
        assert probe.query("SELECT max(id) FROM %s.t" % db).strip() == str(U64_MAX)
        assert probe.query("SELECT min(ts) FROM %s.t" % db).strip() == str(I64_MIN)

        # A different batch is not mistaken for a retry.
        probe.run("ch-insert", "--table", "%s.t_local" % db, "--rows", 10, "--seed", 12,
                  env={"UPMON_CLICKHOUSE_URLS": r2.url})
        assert count(r1) == n + 10

        # Failover: a dead endpoint first, a live one second.
        dead = "http://127.0.0.1:%d" % free_port()
        fo, _ = probe.run("ch-insert", "--table", "%s.t_local" % db, "--rows", 5, "--seed", 13,
                          env={"UPMON_CLICKHOUSE_URLS": "%s,%s" % (dead, r1.url)})
        assert fo["result"] == "ok" and fo["attempts"] == "2", fo
        assert count(r2) == n + 15
        # Only a dead endpoint: retriable, retried, then reported.
        only_dead, p = probe.run("ch-insert", "--table", "%s.t_local" % db, "--rows", 5,
                                 "--seed", 14, check=False,
                                 env={"UPMON_CLICKHOUSE_URLS": dead,
                                      "UPMON_CLICKHOUSE_RETRIES": 2,
                                      "UPMON_CLICKHOUSE_BACKOFF_INITIAL": "10ms"})
        assert p.returncode == 1, p.stdout + p.stderr
        assert only_dead["result"] == "error" and only_dead["retriable"] == "1", only_dead
        assert only_dead["attempts"] == "3" and only_dead["http_status"] == "0"
        assert only_dead["curl_code"] != "0"

        # Error classification as the real 18.16 reports it: none retried.
        cases = [
            ("SELECT * FROM %s.no_such_table" % db, {}, ("60",)),
            ("SELEC 1", {}, ("62",)),
            ("SELECT 1", {"UPMON_CLICKHOUSE_PASSWORD": "not-the-password"}, ("193", "516")),
            ("SELECT 1", {"UPMON_CLICKHOUSE_PASSWORD": ""}, ("193", "194", "516")),
        ]
        for sql, env, codes in cases:
            e, _ = probe.run("ch-error", "--sql", sql, env=env)
            assert e["result"] == "error", (sql, e)
            assert e["code"] in codes, "%r: code %s, want one of %s (%s)" % (sql, e["code"],
                                                                          codes, e["message"])
            assert e["retriable"] == "0" and e["attempts"] == "1", (sql, e)
            assert int(e["http_status"]) >= 400 and e["curl_code"] == "0", (sql, e)
            assert "not-the-password" not in e["message"]
        # The generated password, sent only in headers, is accepted.
        assert probe.query("SELECT 42").strip() == "42"
    finally:
        admin.query("DROP TABLE IF EXISTS %s.t ON CLUSTER %s" % (db, cluster))
        admin.query("DROP TABLE IF EXISTS %s.t_local ON CLUSTER %s" % (db, cluster))
        admin.query("DROP DATABASE IF EXISTS %s ON CLUSTER %s" % (db, cluster))
    for key, ch in topology.items():
        assert ch.scalar("SELECT count() FROM system.databases WHERE name = '%s'" % db) == "0", \
            "database %s still exists on %s" % (db, key)


# --------------------------------------------------------------------------
# Kafka


def test_kafka_produce_consume_commit(stack, probe):
    brokers = stack["env"]["UPMON_KAFKA_BROKERS"]
    n_brokers = len(brokers.split(","))
    topic = "upmon.probe.%s" % uuid.uuid4().hex[:12]
    n = 10_000
    r = kafka_java(stack, "org.apache.kafka.tools.TopicCommand", "--bootstrap-server", brokers,
                   "--create", "--topic", topic, "--partitions", "6",
                   "--replication-factor", str(min(3, n_brokers)))
    assert r.returncode == 0, "creating %s failed:\n%s%s" % (topic, r.stdout, r.stderr)
    try:
        prod, _ = probe.run("kafka-produce", "--topic", topic, "--count", n, "--seed", 5)
        assert prod["delivered"] == str(n) and prod["failed"] == "0", prod
        assert prod["in_flight"] == "0"

        def consume(group, **extra):
            args = ["kafka-consume", "--topic", topic, "--group", group, "--max", n,
                    "--seed", 5, "--commit"]
            for k, v in extra.items():
                args += ["--" + k.replace("_", "-"), v]
            out, _ = probe.run(*args)
            # The probe exits non-zero on these too; assert them by name anyway.
            for k in ("parse_failed", "mismatched", "bad_header", "commit_failed"):
                assert out[k] == "0", "%s: %s" % (k, out)
            return out

        group = "probe-%s" % uuid.uuid4().hex[:8]
        c1 = consume(group)
        assert c1["consumed"] == str(n), c1
        # Same ids and the very (partition, offset) pairs the producer was
        # told about: nothing lost, nothing twice.
        assert c1["id_checksum"] == prod["id_checksum"], (prod, c1)
        assert c1["offset_checksum"] == prod["offset_checksum"], (prod, c1)

        c2 = consume(group, idle_ms=3000)
        assert c2["consumed"] == "0" and c2["stop"] == "idle", \
            "the group's committed offsets were not honoured: %s" % c2

        c3 = consume(group + "-other")
        assert c3["consumed"] == str(n), c3
        assert c3["id_checksum"] == prod["id_checksum"]
        assert c3["offset_checksum"] == prod["offset_checksum"]
    finally:
        kafka_java(stack, "org.apache.kafka.tools.TopicCommand", "--bootstrap-server", brokers,
                   "--delete", "--topic", topic)


# --------------------------------------------------------------------------
# Prometheus scrapes upm_httpd / upm_prom

# Every character the text format escapes in label values, a literal
# backslash-n (which must not turn into a newline), and multi-byte UTF-8.
LABEL = 'quote" backslash\\ literal\\n newline\n utf8 \u00e9\u65e5\U0001F600'


def prom_query(prom, expr):
    data = http_json("%s/api/v1/query?%s" % (prom, urllib.parse.urlencode({"query": expr})))
    assert data["status"] == "success", data
    return data["data"]["result"]


def test_prometheus_scrapes_probe_metrics(stack, probe):
    prom = stack["env"]["UPMON_PROMETHEUS_URL"]
    port = free_port()
    inst = "127.0.0.1:%d" % port
    targets = os.path.join(stack["state"], "prometheus", "targets")
    assert os.path.isdir(targets), "ci/stack's file_sd folder %s is missing" % targets
    sd_file = os.path.join(targets, "probe-%d.json" % port)

    proc = subprocess.Popen([probe.path, "serve", "--seconds", "120", "--label", LABEL],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=probe.env(UPMON_HTTP_BIND="127.0.0.1", UPMON_HTTP_PORT=port))
    try:
        def serving():
            assert proc.poll() is None, "probe serve exited %s" % proc.returncode
            return http("http://%s/healthz" % inst, timeout=2) == "ok"
        poll("probe serve answering on %s" % inst, serving, timeout=15, interval=0.2)
        exposition = http("http://%s/metrics" % inst)
        assert "upmon_probe_label_gauge{" in exposition, exposition

        # Written under another name first: file_sd must never read half a file.
        tmp = sd_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump([{"targets": [inst], "labels": {"service": "probe"}}], f)
        os.rename(tmp, sd_file)

        def up():
            res = prom_query(prom, 'up{instance="%s"}' % inst)
            return res if res and res[0]["value"][1] == "1" else None
        res = poll("prometheus scraping %s with up == 1" % inst, up, timeout=60, interval=1)
        assert res[0]["metric"]["job"] == "upmon" and res[0]["metric"]["service"] == "probe"

        # The escaped label value arrives exactly, whether read back from the
        # series or used as an exact-match selector (a PromQL string literal
        # takes Go escapes, which JSON's are a subset of).
        res = prom_query(prom, 'upmon_probe_label_gauge{instance="%s"}' % inst)
        assert len(res) == 1, res
        assert res[0]["metric"]["value"] == LABEL, res[0]["metric"]
        assert res[0]["metric"]["plain"] == "x"
        assert float(res[0]["value"][1]) == 2.5
        lit = json.dumps(LABEL, ensure_ascii=False)
        res = prom_query(prom, 'upmon_probe_label_gauge{instance="%s",value=%s}' % (inst, lit))
        assert len(res) == 1 and float(res[0]["value"][1]) == 2.5, res

        res = prom_query(prom, 'upmon_probe_events_total{instance="%s"}' % inst)
        assert len(res) == 1 and res[0]["value"][1] == "12345", res

        res = prom_query(prom, 'upmon_probe_latency_seconds_bucket{instance="%s"}' % inst)
        buckets = {r["metric"]["le"]: r["value"][1] for r in res}
        assert buckets == {"0.005": "1", "0.1": "2", "1": "3", "10": "4", "+Inf": "5"}, buckets
        res = prom_query(prom, 'upmon_probe_latency_seconds_count{instance="%s"}' % inst)
        assert len(res) == 1 and res[0]["value"][1] == "5", res
        res = prom_query(prom, 'upmon_probe_latency_seconds_sum{instance="%s"}' % inst)
        assert len(res) == 1 and abs(float(res[0]["value"][1]) - 55.551) < 1e-9, res
        # Prometheus computes on our buckets: the median falls in (0.1, 1].
        res = prom_query(prom, 'histogram_quantile(0.5, upmon_probe_latency_seconds_bucket'
                               '{instance="%s"})' % inst)
        assert len(res) == 1 and 0.1 < float(res[0]["value"][1]) <= 1, res

        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, "probe serve exited %d: %s" % (proc.returncode, err)
        assert parse_kv(out).get("stopped") == "signal", out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
        for path in (sd_file, sd_file + ".tmp"):
            if os.path.exists(path):
                os.unlink(path)

    # Leave the target list as ci/stack wrote it (test_stack checks it).
    def gone():
        active = http_json(prom + "/api/v1/targets")["data"]["activeTargets"]
        return not any(t["labels"].get("instance") == inst for t in active)
    poll("prometheus dropping the probe target", gone, timeout=30, interval=1)
