"""upmon-simulator against the real broker of the local stack (ci/stack).

Needs only the stack's Kafka (any `ci/stack up`, including the default one
ci/test starts). Each test creates its own topic and deletes it. One test
stops and restarts the stack's broker (by the pid file `ci/stack up` wrote,
then `ci/stack up` again), so run this file alone or serially, as ci/test
does. Run time on the default stack: about 1.5 to 2.5 minutes.

The binary is found in $UPMON_BUILD_DIR/bin, else build/bin.
"""

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
import uuid

import pytest

from conftest import ROOT, parse_env, poll, run_stack, state_dir
from test_stack import kafka_java

N_MILLION = 1_000_000


def simulator_path():
    build = os.path.abspath(os.environ.get("UPMON_BUILD_DIR") or os.path.join(ROOT, "build"))
    path = os.path.join(build, "bin", "upmon-simulator")
    if not os.path.exists(path):
        pytest.fail("%s not built (ninja -C %s upmon-simulator)" % (path, build), pytrace=False)
    return path


@pytest.fixture(scope="module")
def kstack():
    """The running stack's Kafka: layout and env. Fails (never skips) without one."""
    state = state_dir()
    path = os.path.join(state, "stack.json")
    if not os.path.exists(path):
        pytest.fail("no stack in %s: start it with `ci/stack up`" % state, pytrace=False)
    env = run_stack("env", state=state, timeout=60)
    assert env.returncode == 0, env.stderr
    values = parse_env(env.stdout)
    if not values.get("UPMON_KAFKA_BROKERS"):
        pytest.fail("the stack in %s has no Kafka" % state, pytrace=False)
    with open(path) as f:
        layout = json.load(f)
    return {"state": state, "layout": layout, "env": values,
            "brokers": values["UPMON_KAFKA_BROKERS"]}


@pytest.fixture
def topic(kstack):
    name = "upmon.simtest.%s" % uuid.uuid4().hex[:12]
    n_brokers = len(kstack["brokers"].split(","))
    r = kafka_java(kstack, "org.apache.kafka.tools.TopicCommand", "--bootstrap-server",
                   kstack["brokers"], "--create", "--topic", name, "--partitions", "6",
                   "--replication-factor", str(min(3, n_brokers)))
    assert r.returncode == 0, "creating %s failed:\n%s%s" % (name, r.stdout, r.stderr)
    yield name
    kafka_java(kstack, "org.apache.kafka.tools.TopicCommand", "--bootstrap-server",
               kstack["brokers"], "--delete", "--topic", name)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sim_env(kstack, topic=None, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPMON_")}
    env["UPMON_KAFKA_BROKERS"] = kstack["brokers"] if kstack else "127.0.0.1:1"
    if topic:
        env["UPMON_KAFKA_TOPIC"] = topic
    env["UPMON_HTTP_PORT"] = str(extra.pop("http_port", 0))
    env["UPMON_KAFKA_STATISTICS_INTERVAL"] = "0"
    env.update({k: str(v) for k, v in extra.items()})
    return env


def done_line(stderr):
    """The simulator's final accounting line as a dict of ints."""
    lines = [l for l in stderr.splitlines() if 'msg="done"' in l]
    assert lines, "no done line in:\n" + stderr[-4000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", lines[-1])}


def verify_topic(kstack, topic, expect):
    """Consume the whole topic with kcat, check every message with the event
    parser (the simulator's --verify mode). Returns the verify line as a dict."""
    kcat = subprocess.Popen(["kcat", "-C", "-b", kstack["brokers"], "-t", topic, "-e", "-q",
                             "-f", "%s\n"], stdout=subprocess.PIPE)
    ver = subprocess.run([simulator_path(), "--verify", "-"], stdin=kcat.stdout,
                         capture_output=True, text=True, timeout=300)
    kcat.stdout.close()
    assert kcat.wait(timeout=60) == 0
    out = dict(re.findall(r"(\w+)=(\w+)", ver.stdout.splitlines()[0]))
    assert ver.returncode == 0, "invalid events in %s:\n%s" % (topic, ver.stdout)
    assert int(out["lines"]) == expect, out
    assert int(out["valid"]) == expect and int(out["distinct"]) == expect, out
    return out


def metric(port, name):
    body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5).read().decode()
    m = re.search(r"^%s(?:\{[^}]*\})? (\S+)$" % re.escape(name), body, re.M)
    return float(m.group(1)) if m else None


# --------------------------------------------------------------------------


def test_million_events_exactly_once_and_valid(kstack, topic):
    t0 = time.monotonic()
    p = subprocess.run([simulator_path(), "--count", str(N_MILLION), "--seed", "11",
                        "--output", "kafka"], env=sim_env(kstack, topic), capture_output=True,
                       text=True, timeout=180)
    assert p.returncode == 0, p.stderr[-4000:]
    d = done_line(p.stderr)
    assert d["generated"] == N_MILLION and d["delivered"] == N_MILLION, d
    assert d["undelivered"] == 0, d
    produce_s = time.monotonic() - t0
    got = verify_topic(kstack, topic, N_MILLION)
    # The topic holds exactly the events the same seed writes to a file:
    # same order-independent checksum of the message bytes.
    gen = subprocess.Popen([simulator_path(), "--count", str(N_MILLION), "--seed", "11",
                            "--output", "-"], env=sim_env(None), stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL)
    ver = subprocess.run([simulator_path(), "--verify", "-"], stdin=gen.stdout,
                         capture_output=True, text=True, timeout=120)
    gen.stdout.close()
    assert gen.wait(timeout=60) == 0
    ref = dict(re.findall(r"(\w+)=(\w+)", ver.stdout))
    assert ref["sum"] == got["sum"], (ref, got)
    print("produced 1M in %.1fs" % produce_s)


def test_deterministic_output():
    def digest(seed):
        p = subprocess.run([simulator_path(), "--count", "100000", "--seed", str(seed),
                            "--output", "-"], env=sim_env(None), capture_output=True,
                           timeout=60)
        assert p.returncode == 0
        return hashlib.sha256(p.stdout).hexdigest()
    a, b, c = digest(5), digest(5), digest(6)
    assert a == b, "same seed, different output"
    assert a != c, "different seeds, same output"


def kafka_pid(kstack):
    with open(os.path.join(kstack["state"], "kafka-1", "pid")) as f:
        return int(f.read().strip())


def test_broker_stop_restart_no_event_vanishes(kstack, topic):
    """Kill the broker mid-run: the simulator keeps a bounded queue, reports
    back-pressure, survives, resumes when the broker returns; on SIGTERM it
    flushes and reports. delivered + undelivered == generated, and the topic
    holds exactly the delivered events (idempotent producer: no duplicates
    from the retries)."""
    if len(kstack["brokers"].split(",")) != 1:
        pytest.fail("this test stops the only broker; run it on a 1-broker stack")
    port = free_port()
    proc = subprocess.Popen([simulator_path(), "--rate", "40000", "--seed", "3",
                             "--output", "kafka"],
                            env=sim_env(kstack, topic, http_port=port,
                                        UPMON_SIMULATOR_FLUSH_TIMEOUT="60s",
                                        UPMON_KAFKA_PROPERTIES="queue.buffering.max.messages=50000"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    restarted = False
    try:
        poll("simulator delivering", lambda: (metric(port, "upmon_simulator_delivered_total")
                                              or 0) > 50000, 60)
        pid = kafka_pid(kstack)
        os.kill(pid, signal.SIGKILL)
        poll("broker gone", lambda: not os.path.exists("/proc/%d" % pid), 30)
        poll("back-pressure reported",
             lambda: metric(port, "upmon_simulator_backpressure") == 1.0, 60)
        time.sleep(2)
        assert proc.poll() is None, "the simulator exited while the broker was down"
        queued = metric(port, "upmon_simulator_queued")
        assert 0 < queued <= 50000 + 1, queued  # bounded by the producer queue
        delivered_down = metric(port, "upmon_simulator_delivered_total")
        up = run_stack("up", state=kstack["state"], timeout=300)
        assert up.returncode == 0, up.stdout + up.stderr
        restarted = True
        poll("delivery resumed", lambda: metric(port, "upmon_simulator_delivered_total")
             > delivered_down + 100000, 120)
        assert metric(port, "upmon_simulator_backpressure") == 0.0
    finally:
        if not restarted:
            run_stack("up", state=kstack["state"], timeout=300)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-4000:]
    d = done_line(err)
    assert d["generated"] == d["delivered"] + d["undelivered"], d
    assert d["undelivered"] == 0, d  # the broker was back: the flush delivers everything
    assert "back-pressure" in err, "no back-pressure log line"
    verify_topic(kstack, topic, d["delivered"])


def test_sigterm_with_broker_unreachable_reports_undelivered():
    port = free_port()
    env = sim_env(None, topic="t", http_port=port,
                  UPMON_KAFKA_BROKERS="127.0.0.1:%d" % free_port(),
                  UPMON_SIMULATOR_FLUSH_TIMEOUT="1s")
    proc = subprocess.Popen([simulator_path(), "--rate", "20000"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        poll("events generated", lambda: (metric(port, "upmon_simulator_generated_total")
                                          or 0) > 10000, 30)
    finally:
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-4000:]
    # flush_timeout 1s + the producer's bounded destroy: well under 15 s.
    assert time.monotonic() - t0 < 15
    d = done_line(err)
    assert d["delivered"] == 0 and d["generated"] > 10000, d
    assert d["undelivered"] == d["generated"], d


def test_incident_exported_and_logged(tmp_path):
    cfg = tmp_path / "sim.yaml"
    cfg.write_text("simulator:\n  attempt_rate: 100\n"
                   "incidents:\n"
                   "  - {name: api-slow, kind: latency, origin: upload/api, start: 0s,"
                   " duration: 10d, magnitude: 5}\n"
                   "  - {name: later, kind: throughput_drop, start: 300d, duration: 1h,"
                   " magnitude: 0.5}\n")
    port = free_port()
    proc = subprocess.Popen([simulator_path(), "--config", str(cfg), "--output", os.devnull,
                             "--rate", "2000"], env=sim_env(None, http_port=port),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        poll("incident active metric", lambda: metric(
            port, 'upmon_simulator_incident_active{incident="api-slow",kind="latency"}')
            == 1.0, 30)
        body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port).read().decode()
        assert 'upmon_simulator_incident_active{incident="later",kind="throughput_drop"} 0' \
            in body
        assert urllib.request.urlopen("http://127.0.0.1:%d/readyz" % port).status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert re.search(r'msg="incident started" incident=api-slow kind=latency', err), err[-2000:]


def test_check_config_and_errors(tmp_path):
    cfg = tmp_path / "sim.yaml"
    cfg.write_text("kafka:\n  sasl_password: hunter2\nsimulator:\n  seed: 4\nincidents:\n"
                   "  - {name: a, kind: failure_spike, country: KZ, start: 1h, duration: 5m,"
                   " magnitude: 0.5}\n")
    env = sim_env(None)
    del env["UPMON_HTTP_PORT"]
    p = subprocess.run([simulator_path(), "--config", str(cfg), "--check-config"],
                       env=env, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert "hunter2" not in p.stdout and "<redacted>" in p.stdout
    # The simulator's own default port (the stack's Prometheus scrapes it).
    assert re.search(r"^http:\n(  .*\n)*  port: 9301$", p.stdout, re.M), p.stdout
    assert "name: a, kind: failure_spike" in p.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("incidents:\n  - {name: a, kind: latency, start: 1s, duration: 1s,"
                   " magnitude: 2, colour: red}\n")
    p = subprocess.run([simulator_path(), "--config", str(bad), "--check-config"],
                       env=sim_env(None), capture_output=True, text=True, timeout=30)
    assert p.returncode == 1
    assert "%s:2:" % bad in p.stderr and "colour" in p.stderr, p.stderr
