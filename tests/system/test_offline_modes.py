"""One-shot and offline modes work while something else holds the service's metrics port.

A developer runs `ci/demo`: its services hold their default ports (9301..9303, 8080).
Beside it, the same binaries' offline modes — a simulator writing to stdout or a file,
`--verify`, `--check-config`, the analyzer's `--once`, the schema tool — must still run:
they serve nothing, or (the simulator into a file) serve /metrics only when they can.
Each test holds the service's *default* port itself (or finds it already held), and runs
the mode with no port override."""

import errno
import os
import socket
import subprocess
import uuid

import pytest
from conftest import ClickHouse

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_PORT = {"simulator": 9301, "ingest": 9302, "analyzer": 9303, "elect": 8080,
                "operator": 8080}


def binary(name):
    build = os.path.abspath(os.environ.get("UPMON_BUILD_DIR") or os.path.join(ROOT, "build"))
    path = os.path.join(build, "bin", "upmon-" + name)
    if not os.access(path, os.X_OK):
        pytest.fail("%s not built (ninja -C %s)" % (path, build), pytrace=False)
    return path


@pytest.fixture
def busy():
    """hold(port): the port is in use when it returns (by us, or already by someone)."""
    held = []

    def hold(port):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("0.0.0.0", port))
            s.listen(1)
            held.append(s)
        except OSError as e:
            s.close()
            if e.errno != errno.EADDRINUSE:
                raise
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            with pytest.raises(OSError):
                probe.bind(("0.0.0.0", port))
        finally:
            probe.close()
    yield hold
    for s in held:
        s.close()


def clean_env(**extra):
    """No UPMON_* from the caller: every service falls back to its default port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPMON_")}
    env["UPMON_LOG_LEVEL"] = "info"
    env.update(extra)
    return env


def stack_env(stack, **extra):
    e = stack["env"]
    return clean_env(UPMON_CLICKHOUSE_URLS=e["UPMON_CLICKHOUSE_URLS"],
                     UPMON_CLICKHOUSE_USER=e["UPMON_CLICKHOUSE_USER"],
                     UPMON_CLICKHOUSE_PASSWORD=e["UPMON_CLICKHOUSE_PASSWORD"],
                     UPMON_CLICKHOUSE_CLUSTER=e["UPMON_CLICKHOUSE_CLUSTER"], **extra)


def run(argv, env, **kw):
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, **kw)


@pytest.mark.parametrize("svc", sorted(DEFAULT_PORT))
def test_check_config_with_the_port_held(busy, svc):
    busy(DEFAULT_PORT[svc])
    p = run([binary(svc), "--check-config"], clean_env())
    assert p.returncode == 0, p.stderr
    assert "port: %d" % DEFAULT_PORT[svc] in p.stdout, p.stdout


def test_simulator_to_stdout_file_and_verify_with_the_port_held(busy, tmp_path):
    busy(DEFAULT_PORT["simulator"])
    sim = binary("simulator")
    p = run([sim, "--output", "-", "--count", "10", "--seed", "3"], clean_env())
    assert p.returncode == 0, p.stderr
    assert len(p.stdout.splitlines()) == 10, p.stdout
    # The run says why there is no /metrics and how to have them.
    assert "metrics server not started" in p.stderr and "UPMON_HTTP_PORT" in p.stderr, p.stderr
    assert "generated=10 delivered=10" in p.stderr, p.stderr

    out = tmp_path / "events.jsonl"
    p = run([sim, "--output", str(out), "--count", "25", "--seed", "3"], clean_env())
    assert p.returncode == 0, p.stderr
    assert len(out.read_text().splitlines()) == 25

    p = run([sim, "--verify", str(out)], clean_env())
    assert p.returncode == 0, p.stdout + p.stderr
    assert "lines=25" in p.stdout and "valid=25" in p.stdout, p.stdout


def test_simulator_into_kafka_still_needs_its_port(busy):
    """A long-running producer without /metrics would be invisible: it refuses to start."""
    port = DEFAULT_PORT["simulator"]
    busy(port)
    p = run([binary("simulator"), "--output", "kafka", "--count", "10"],
            clean_env(UPMON_KAFKA_BROKERS="127.0.0.1:1"))
    assert p.returncode != 0
    assert "port %d" % port in p.stderr, p.stderr


@pytest.fixture
def database(stack):
    """A throwaway database on the stack's cluster, dropped at the end."""
    db = "offline_%s" % uuid.uuid4().hex[:10]
    yield db
    env = stack["env"]
    for item in env["UPMON_STACK_CLICKHOUSE_TOPOLOGY"].split(","):
        ClickHouse(item.partition("=")[2], env["UPMON_CLICKHOUSE_USER"],
                   env["UPMON_CLICKHOUSE_PASSWORD"]).query("DROP DATABASE IF EXISTS " + db)


def test_schema_tool_and_analyzer_once_with_every_default_port_held(busy, stack, database):
    for port in sorted(set(DEFAULT_PORT.values())):
        busy(port)
    env = stack_env(stack, UPMON_CLICKHOUSE_DATABASE=database)
    for cmd in ("apply", "status", "verify"):
        p = run([binary("schema"), cmd], env)
        assert p.returncode == 0, "%s: %s%s" % (cmd, p.stdout, p.stderr)
    p = run([binary("analyzer"), "--once"], dict(env, UPMON_ANALYZER_WRITE_RESULTS="false"))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "cycle rc=0" in p.stdout, p.stdout
