"""The local stack is real: Kafka, a replicated sharded ClickHouse, Prometheus
with upmon's rules and Alertmanager, and ci/stack's own lifecycle."""

import json
import os
import re
import socket
import subprocess
import uuid

import pytest

from conftest import ROOT, ClickHouse, http, http_json, parse_env, poll, run_stack

N_MESSAGES = 100_000
U64_MAX = 2**64 - 1


# --------------------------------------------------------------------------
# Kafka


def kafka_java(stack, cls, *args, timeout=120):
    home = stack["env"].get("UPMON_STACK_KAFKA_HOME") or stack["layout"]["kafka_home"]
    argv = ["java", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]
    tools_log = os.path.join(stack["state"], "kafka-1", "tools-log4j.properties")
    if os.path.exists(tools_log):
        argv.append("-Dlog4j.configuration=file:" + tools_log)
    argv += ["-cp", os.path.join(home, "libs", "*"), cls] + list(args)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def test_kafka_roundtrip_100k_messages(stack):
    brokers = stack["env"]["UPMON_KAFKA_BROKERS"]
    n_brokers = len(brokers.split(","))
    topic = "upmon.systest.%s" % uuid.uuid4().hex[:12]
    r = kafka_java(stack, "org.apache.kafka.tools.TopicCommand", "--bootstrap-server", brokers,
                   "--create", "--topic", topic, "--partitions", "6",
                   "--replication-factor", str(min(3, n_brokers)))
    assert r.returncode == 0, "creating %s failed:\n%s%s" % (topic, r.stdout, r.stderr)
    try:
        payload = "".join("k%d\t%d|payload-%08d\n" % (i, i, i) for i in range(N_MESSAGES))
        p = subprocess.run(["kcat", "-P", "-b", brokers, "-t", topic, "-K", "\t",
                            "-X", "acks=all", "-X", "linger.ms=20"],
                           input=payload, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, "kcat -P failed (%d): %s" % (p.returncode, p.stderr)
        assert "fail" not in p.stderr.lower(), "kcat -P reported: %s" % p.stderr

        c = subprocess.run(["kcat", "-C", "-b", brokers, "-t", topic, "-o", "beginning", "-e",
                            "-q", "-f", "%p\t%k\t%s\n"],
                           capture_output=True, text=True, timeout=120)
        assert c.returncode == 0, "kcat -C failed (%d): %s" % (c.returncode, c.stderr)
        lines = c.stdout.splitlines()
        assert len(lines) == N_MESSAGES, "consumed %d messages, produced %d" % (
            len(lines), N_MESSAGES)
        seen = set()
        partitions_by_key = {}
        for line in lines:
            part, key, value = line.split("\t")
            seq_s, _, body = value.partition("|")
            seq = int(seq_s)
            assert key == "k%d" % seq, "key %r does not match value %r" % (key, value)
            assert body == "payload-%08d" % seq, "payload corrupted: %r" % value
            assert seq not in seen, "message %d consumed twice" % seq
            seen.add(seq)
            partitions_by_key[key] = int(part)
        assert seen == set(range(N_MESSAGES))
        # Keys spread over every partition (the default partitioner hashes keys).
        assert set(partitions_by_key.values()) == set(range(6))
    finally:
        kafka_java(stack, "org.apache.kafka.tools.TopicCommand", "--bootstrap-server", brokers,
                   "--delete", "--topic", topic)


def test_kafka_upmon_topics_exist_with_leaders(stack):
    brokers = stack["env"]["UPMON_KAFKA_BROKERS"]
    params = stack["layout"]["params"]
    want = {"upmon.events.v1": params["partitions"], "upmon.events.dlq": params["dlq_partitions"]}
    md = json.loads(subprocess.run(["kcat", "-L", "-J", "-b", brokers], capture_output=True,
                                   text=True, timeout=30, check=True).stdout)
    topics = {t["topic"]: t for t in md["topics"]}
    for name, parts in want.items():
        assert name in topics, "topic %s missing; have %s" % (name, sorted(topics))
        t = topics[name]
        assert len(t["partitions"]) == parts
        for p in t["partitions"]:
            assert p["leader"] >= 0, "%s[%d] has no leader" % (name, p["partition"])
            assert len(p["replicas"]) == min(3, params["brokers"])


# --------------------------------------------------------------------------
# ClickHouse


def test_clickhouse_cluster_replication_sharding_dedup(stack, topology):
    cluster = stack["env"]["UPMON_CLICKHOUSE_CLUSTER"]
    params = stack["layout"]["params"]
    shards, replicas = params["shards"], params["replicas"]
    assert replicas >= 2 and shards >= 2, "this test needs at least 2 shards x 2 replicas"
    assert sorted(topology) == [(s, r) for s in range(1, shards + 1)
                                for r in range(1, replicas + 1)]
    any_ch = topology[(1, 1)]
    for key, ch in topology.items():
        rows = ch.scalar("SELECT count() FROM system.clusters WHERE cluster = '%s'" % cluster)
        assert rows == str(shards * replicas), "%s sees %s rows of cluster %s" % (key, rows,
                                                                                 cluster)
        macros = dict(ch.rows("SELECT macro, substitution FROM system.macros"))
        assert macros.get("shard") == str(key[0]), "%s macros: %r" % (key, macros)
    assert any_ch.scalar("SELECT count() FROM system.settings "
                         "WHERE name = 'insert_distributed_sync'") == "1"

    db = "systest_%s" % uuid.uuid4().hex[:10]
    n = 20_000
    any_ch.query("CREATE DATABASE %s ON CLUSTER %s" % (db, cluster))
    try:
        any_ch.query(
            "CREATE TABLE %s.t_local ON CLUSTER %s (id UInt64, v UInt64, s String) "
            "ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/%s/t_local', '{replica}') "
            "ORDER BY id" % (db, cluster, db))
        any_ch.query("CREATE TABLE %s.t ON CLUSTER %s AS %s.t_local "
                     "ENGINE = Distributed(%s, %s, t_local, intHash64(id))"
                     % (db, cluster, db, cluster, db))
        # Values at the very top of UInt64 catch any float or signed detour.
        rows = {i: (U64_MAX - i, "row-%d" % i) for i in range(n)}
        tsv = "".join("%d\t%d\t%s\n" % (i, v, s) for i, (v, s) in rows.items())
        topology[(2, 2)].query("INSERT INTO %s.t FORMAT TabSeparated" % db, data=tsv,
                               insert_distributed_sync=1)

        def sync_and_read(ch):
            ch.query("SYSTEM SYNC REPLICA %s.t_local" % db, timeout=60)
            return {int(i): (int(v), s)
                    for i, v, s in ch.rows("SELECT id, v, s FROM %s.t_local ORDER BY id" % db)}

        per_shard = {}
        for s in range(1, shards + 1):
            got = [sync_and_read(topology[(s, r)]) for r in range(1, replicas + 1)]
            for r in range(2, replicas + 1):
                assert got[r - 1] == got[0], "shard %d: replica %d differs from replica 1 " \
                    "(%d vs %d rows)" % (s, r, len(got[r - 1]), len(got[0]))
            assert got[0], "shard %d holds no rows: sharding key sent everything elsewhere" % s
            per_shard[s] = got[0]
        all_ids = [i for rs in per_shard.values() for i in rs]
        assert len(all_ids) == len(set(all_ids)), "a row landed on more than one shard"
        merged = {}
        for rs in per_shard.values():
            merged.update(rs)
        assert merged == rows, "shards together do not hold exactly the inserted rows"
        assert any_ch.scalar("SELECT count() FROM %s.t" % db) == str(n)
        assert any_ch.scalar("SELECT max(v) FROM %s.t" % db) == str(U64_MAX)

        # A retried, byte-identical block is deduplicated even when the retry
        # goes to the other replica.
        r1, r2 = topology[(1, 1)], topology[(1, 2)]
        before = int(r1.scalar("SELECT count() FROM %s.t_local" % db))
        block = "".join("%d\t%d\tretry-%d\n" % (i, U64_MAX - i, i) for i in range(n, n + 500))
        r1.query("INSERT INTO %s.t_local FORMAT TabSeparated" % db, data=block)
        r2.query("INSERT INTO %s.t_local FORMAT TabSeparated" % db, data=block)
        r1.query("INSERT INTO %s.t_local FORMAT TabSeparated" % db, data=block)
        for ch in (r1, r2):
            ch.query("SYSTEM SYNC REPLICA %s.t_local" % db, timeout=60)
            assert int(ch.scalar("SELECT count() FROM %s.t_local" % db)) == before + 500, \
                "retried block was not deduplicated"
        # A different block is not mistaken for a retry.
        r2.query("INSERT INTO %s.t_local FORMAT TabSeparated" % db,
                 data="%d\t1\tother\n" % (n + 1000))
        r1.query("SYSTEM SYNC REPLICA %s.t_local" % db, timeout=60)
        assert int(r1.scalar("SELECT count() FROM %s.t_local" % db)) == before + 501
    finally:
        any_ch.query("DROP TABLE IF EXISTS %s.t ON CLUSTER %s" % (db, cluster))
        any_ch.query("DROP TABLE IF EXISTS %s.t_local ON CLUSTER %s" % (db, cluster))
        any_ch.query("DROP DATABASE IF EXISTS %s ON CLUSTER %s" % (db, cluster))
    for key, ch in topology.items():
        assert ch.scalar("SELECT count() FROM system.databases WHERE name = '%s'" % db) == "0", \
            "database %s still exists on %s after DROP ON CLUSTER" % (db, key)


def test_clickhouse_upmon_database_and_credentials(stack, topology):
    for key, ch in topology.items():
        assert ch.scalar("SELECT count() FROM system.databases WHERE name = 'upmon'") == "1"
    wrong = ClickHouse(topology[(1, 1)].url, "upmon", "not-the-password")
    with pytest.raises(AssertionError, match="HTTP"):
        wrong.query("SELECT 1")


# --------------------------------------------------------------------------
# Prometheus and Alertmanager


def rule_file_names():
    """Group and alert names declared in alerts/upmon.rules.yml (no YAML library needed)."""
    with open(os.path.join(ROOT, "alerts", "upmon.rules.yml")) as f:
        text = f.read()
    groups = re.findall(r"^\s*-\s*name:\s*(\S+)\s*$", text, re.M)
    alerts = re.findall(r"^\s*-\s*alert:\s*(\S+)\s*$", text, re.M)
    return groups, alerts


def test_prometheus_targets(stack):
    prom = stack["env"]["UPMON_PROMETHEUS_URL"]
    am_port = stack["env"]["UPMON_ALERTMANAGER_URL"].rsplit(":", 1)[1]
    prom_port = prom.rsplit(":", 1)[1]

    def up_jobs():
        data = http_json(prom + "/api/v1/targets")["data"]["activeTargets"]
        health = {(t["labels"]["job"], t["labels"]["instance"]): t["health"] for t in data}
        ok = (health.get(("prometheus", "127.0.0.1:" + prom_port)) == "up"
              and health.get(("alertmanager", "127.0.0.1:" + am_port)) == "up")
        return health if ok else None

    health = poll("prometheus and alertmanager targets up", up_jobs, timeout=60)
    with open(os.path.join(stack["state"], "prometheus", "targets", "services.json")) as f:
        services = json.load(f)
    want = {t for group in services for t in group["targets"]}
    assert len(want) >= 6
    have = {inst for (job, inst) in health if job == "upmon"}
    assert have == want, "upmon targets %s, services.json lists %s" % (sorted(have), sorted(want))


def test_service_ports_follow_the_offset(stack):
    """The services a test (or ci/demo) starts listen where this stack's Prometheus
    scrapes: the defaults plus the stack's port offset, exported by `env`."""
    offset = stack["layout"]["params"].get("port_offset", 0)
    env = stack["env"]
    want = {"UPMON_STACK_PORT_SIMULATOR": 9301, "UPMON_STACK_PORT_INGEST": 9302,
            "UPMON_STACK_PORT_ANALYZER": 9303, "UPMON_STACK_PORT_ANALYZER_2": 9304,
            "UPMON_STACK_PORT_OPERATOR": 9305, "UPMON_STACK_PORT_OPERATOR_2": 9306}
    assert {k: int(env[k]) for k in want} == {k: v + offset for k, v in want.items()}
    with open(os.path.join(stack["state"], "prometheus", "targets", "services.json")) as f:
        scraped = {t for group in json.load(f) for t in group["targets"]}
    assert scraped == {"127.0.0.1:%d" % (v + offset) for v in want.values()}


def test_prometheus_loaded_upmon_rules(stack):
    prom = stack["env"]["UPMON_PROMETHEUS_URL"]
    groups, alerts = rule_file_names()
    assert groups and alerts, "could not read rule names from alerts/upmon.rules.yml"
    data = http_json(prom + "/api/v1/rules")["data"]["groups"]
    ours = [g for g in data if g["file"].endswith("/alerts/upmon.rules.yml")]
    assert sorted(g["name"] for g in ours) == sorted(groups)
    loaded = sorted(r["name"] for g in ours for r in g["rules"])
    assert loaded == sorted(alerts)
    for g in ours:
        for r in g["rules"]:
            assert r["type"] == "alerting"
            assert r["labels"].get("severity") in ("critical", "warning", "info"), r["name"]
            assert r["annotations"].get("summary") and r["annotations"].get("description")
    # Evaluation works against live data (a rule that cannot evaluate says so).
    def evaluated():
        g = http_json(prom + "/api/v1/rules")["data"]["groups"]
        rs = [r for grp in g if grp["file"].endswith("/alerts/upmon.rules.yml")
              for r in grp["rules"]]
        return rs if all(r.get("health") == "ok" for r in rs) else None
    poll("upmon rules evaluated with health ok", evaluated, timeout=30)


def test_prometheus_sends_to_local_alertmanager(stack):
    prom = stack["env"]["UPMON_PROMETHEUS_URL"]
    am = stack["env"]["UPMON_ALERTMANAGER_URL"]

    def active():
        data = http_json(prom + "/api/v1/alertmanagers")["data"]
        urls = [a["url"] for a in data["activeAlertmanagers"]]
        return urls if any(u.startswith(am + "/") for u in urls) else None

    poll("alertmanager %s active in prometheus" % am, active, timeout=30)
    status = http_json(am + "/api/v2/status")
    assert status["cluster"]["status"] == "disabled", "alertmanager should run without a cluster"


# --------------------------------------------------------------------------
# ci/stack itself


def pids_of(state, layout):
    out = {}
    for srv in layout["servers"]:
        with open(os.path.join(state, srv["name"], "pid")) as f:
            out[srv["name"]] = int(f.read())
    return out


def test_up_again_is_a_noop(stack):
    state, layout = stack["state"], stack["layout"]
    before = pids_of(state, layout)
    r = run_stack("up", state=state, timeout=300)
    assert r.returncode == 0, "second up failed:\n%s%s" % (r.stdout, r.stderr)
    assert pids_of(state, layout) == before
    for name, pid in before.items():
        assert os.path.exists("/proc/%d" % pid), "%s (pid %d) died" % (name, pid)
    assert r.stdout.count("already running") == len(layout["servers"])
    st = run_stack("status", state=state, timeout=120)
    assert st.returncode == 0, st.stdout + st.stderr
    assert st.stdout.count("healthy") == len(layout["servers"])


def listening(port):
    s = socket.socket()
    s.settimeout(1)
    try:
        return s.connect_ex(("127.0.0.1", port)) == 0
    finally:
        s.close()


def cmdlines_mentioning(path):
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if path in cmd:
            found.append((int(entry), cmd))
    return found


def clean_env():
    # The lifecycle stack is described by its flags only, not by whatever
    # the caller's shell exports for the shared stack.
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("UPMON_PORT_", "UPMON_STACK_")) and k != "UPMON_STATE_DIR"}


def test_lifecycle_own_state_dir(tmp_path):
    state = str(tmp_path / "stack-state")
    offset = 20000
    env = clean_env()
    up_args = ["up", "--components", "zookeeper,clickhouse,prometheus", "--shards", "1",
               "--replicas", "1", "--port-offset", str(offset)]
    ports = [2181 + offset, 8123 + offset, 9000 + offset, 9009 + offset, 9090 + offset]
    for port in ports:
        assert not listening(port), "port %d is busy before the test" % port

    # A foreign listener on one of our ports is named, and nothing is started.
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", 2181 + offset))
    blocker.listen(1)
    try:
        r = run_stack(*up_args, state=state, env=env, timeout=120)
    finally:
        blocker.close()
    assert r.returncode != 0
    assert "%d" % (2181 + offset) in r.stderr and "zookeeper" in r.stderr, r.stderr
    assert not cmdlines_mentioning(state)

    try:
        r = run_stack(*up_args, state=state, env=env, timeout=240)
        assert r.returncode == 0, "up failed:\n%s%s" % (r.stdout, r.stderr)
        st = run_stack("status", state=state, env=env)
        assert st.returncode == 0, st.stdout
        values = parse_env(run_stack("env", state=state, env=env).stdout)
        assert values["UPMON_CLICKHOUSE_URLS"] == "http://127.0.0.1:%d" % (8123 + offset)
        assert values["UPMON_ZOOKEEPER"] == "127.0.0.1:%d" % (2181 + offset)
        assert values["UPMON_STACK_PORT_ANALYZER"] == str(9303 + offset)
        assert "UPMON_KAFKA_BROKERS" not in values
        ch = ClickHouse(values["UPMON_CLICKHOUSE_URLS"], values["UPMON_CLICKHOUSE_USER"],
                        values["UPMON_CLICKHOUSE_PASSWORD"])
        assert ch.scalar("SELECT count() FROM system.clusters WHERE cluster = 'upmon'") == "1"
        assert http(values["UPMON_PROMETHEUS_URL"] + "/-/ready")

        # A stale pid file naming a live process that is not ours (this test)
        # is neither trusted nor signalled.
        with open(os.path.join(state, "zookeeper", "pid")) as f:
            zk_pid = int(f.read())
        r = run_stack("down", state=state, env=env, timeout=180)
        assert r.returncode == 0, "down failed:\n%s%s" % (r.stdout, r.stderr)
        assert not os.path.exists("/proc/%d" % zk_pid) or \
            open("/proc/%d/stat" % zk_pid).read().split()[2] == "Z"
        with open(os.path.join(state, "zookeeper", "pid"), "w") as f:
            f.write("%d\n" % os.getpid())
        st = run_stack("status", state=state, env=env)
        assert st.returncode != 0 and "down" in st.stdout
        # up over the stale pid file starts a fresh server and keeps the data.
        r = run_stack(*up_args[:1], state=state, env=env, timeout=240)
        assert r.returncode == 0, "up after down failed:\n%s%s" % (r.stdout, r.stderr)
        assert "stale pid file" in r.stdout
        with open(os.path.join(state, "zookeeper", "pid")) as f:
            assert int(f.read()) != os.getpid()
        assert run_stack("status", state=state, env=env).returncode == 0
        assert ch.scalar("SELECT count() FROM system.databases WHERE name = 'upmon'") == "1"
    finally:
        # Whatever happened above, leave nothing running.
        final = run_stack("down", state=state, env=env, timeout=180)

    assert final.returncode == 0, final.stdout + final.stderr
    left = cmdlines_mentioning(state)
    assert not left, "processes left after down: %r" % left
    for port in ports:
        assert not listening(port), "port %d still answers after down" % port
    assert os.path.isdir(os.path.join(state, "clickhouse-s1r1", "data")), \
        "down without --wipe must keep the data"
    r = run_stack("down", "--wipe", state=state, env=env, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not os.path.exists(state)
