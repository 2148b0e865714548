"""System tests against the real local stack started by ci/stack.

The stack must already be up (`ci/stack up`); these tests never start the
shared stack themselves and never skip: if it is not there they fail, saying
how to start it. The lifecycle test runs its own small stack in its own state
folder on offset ports.
"""

import json
import os
import shlex
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STACK = os.path.join(ROOT, "ci", "stack")


def state_dir():
    return os.path.abspath(os.environ.get("UPMON_STATE_DIR") or os.path.join(ROOT, ".state"))


def run_stack(*args, state=None, env=None, timeout=300):
    """Run ci/stack; returns the CompletedProcess (never raises on exit status)."""
    argv = [STACK]
    if state:
        argv += ["--state", state]
    argv += list(args)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)


def parse_env(text):
    out = {}
    for line in text.splitlines():
        if not line.startswith("export "):
            continue
        name, _, value = line[len("export "):].partition("=")
        words = shlex.split(value)
        out[name] = words[0] if words else ""
    return out


def poll(what, fn, timeout, interval=0.5):
    """Call fn until it returns a truthy value; fail naming `what` after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            val = fn()
            if val:
                return val
            last = val
        except Exception as e:  # keep the last error for the failure message
            last = e
        if time.monotonic() > deadline:
            pytest.fail("%s: not true within %ss (last: %r)" % (what, timeout, last))
        time.sleep(interval)


def http(url, data=None, timeout=60, method=None):
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.read().decode()
    except urllib.error.HTTPError as e:
        raise AssertionError("%s -> HTTP %d: %s" % (url.split("?")[0], e.code,
                                                    e.read().decode(errors="replace")))


def http_json(url, timeout=30):
    return json.loads(http(url, timeout=timeout))


class ClickHouse:
    """A tiny ClickHouse HTTP client bound to one server and credentials."""

    def __init__(self, url, user, password):
        self.url = url.rstrip("/")
        self.user = user
        self.password = password

    def query(self, sql, data=None, timeout=60, **settings):
        params = {"user": self.user, "password": self.password}
        params.update({k: str(v) for k, v in settings.items()})
        if data is None:
            body = sql.encode()
        else:
            params["query"] = sql
            body = data if isinstance(data, bytes) else data.encode()
        return http("%s/?%s" % (self.url, urllib.parse.urlencode(params)), data=body,
                    timeout=timeout)

    def rows(self, sql, **settings):
        out = self.query(sql + " FORMAT TabSeparated", **settings)
        return [line.split("\t") for line in out.splitlines()]

    def scalar(self, sql, **settings):
        return self.query(sql, **settings).strip()


@pytest.fixture(scope="session")
def stack():
    """The running shared stack: its layout (stack.json) and `ci/stack env` values."""
    state = state_dir()
    path = os.path.join(state, "stack.json")
    if not os.path.exists(path):
        pytest.fail("no stack in %s: start it with `ci/stack up` before the system tests"
                    % state, pytrace=False)
    st = run_stack("status", state=state, timeout=120)
    if st.returncode != 0:
        pytest.fail("the stack in %s is not healthy (`ci/stack status` exit %d); run "
                    "`ci/stack up`:\n%s%s" % (state, st.returncode, st.stdout, st.stderr),
                    pytrace=False)
    env = run_stack("env", state=state, timeout=60)
    if env.returncode != 0:
        pytest.fail("`ci/stack env` failed:\n%s" % env.stderr, pytrace=False)
    with open(path) as f:
        layout = json.load(f)
    values = parse_env(env.stdout)
    needed = ["UPMON_KAFKA_BROKERS", "UPMON_CLICKHOUSE_URLS", "UPMON_CLICKHOUSE_USER",
              "UPMON_CLICKHOUSE_PASSWORD", "UPMON_CLICKHOUSE_CLUSTER",
              "UPMON_STACK_CLICKHOUSE_TOPOLOGY", "UPMON_ZOOKEEPER", "UPMON_PROMETHEUS_URL",
              "UPMON_ALERTMANAGER_URL", "UPMON_STATE_DIR"]
    missing = [n for n in needed if not values.get(n)]
    if missing:
        pytest.fail("the stack in %s lacks components the system tests need (missing %s); "
                    "run `ci/stack down` and `ci/stack up` with all components"
                    % (state, ", ".join(missing)), pytrace=False)
    return {"state": state, "layout": layout, "env": values}


@pytest.fixture(scope="session")
def topology(stack):
    """{(shard, replica): ClickHouse} for every server of the cluster."""
    env = stack["env"]
    out = {}
    for item in env["UPMON_STACK_CLICKHOUSE_TOPOLOGY"].split(","):
        key, _, url = item.partition("=")
        shard, _, replica = key.partition(":")
        out[(int(shard), int(replica))] = ClickHouse(url, env["UPMON_CLICKHOUSE_USER"],
                                                     env["UPMON_CLICKHOUSE_PASSWORD"])
    return out


# --------------------------------------------------------------------------
# The Kubernetes control plane (ci/kube) for the Lease election tests.


@pytest.fixture(scope="session")
def kube():
    """A running ci/kube control plane (with the Prometheus Operator CRDs) as a KubePlane.

    Uses UPMON_KUBE_STATE_DIR if set, else its own <repo>/.state-kube-test on ports
    offset by UPMON_KUBE_PORT_OFFSET (default 100, so a developer's `ci/kube up` on the
    default ports is not disturbed). If a control plane already runs there it is reused
    and left running; one this fixture started is stopped (and wiped) at the end.
    """
    from kubeplane import KubePlane, parse_env, run_kube

    state = os.path.abspath(os.environ.get("UPMON_KUBE_STATE_DIR")
                            or os.path.join(ROOT, ".state-kube-test"))
    env = dict(os.environ)
    if not os.environ.get("UPMON_KUBE_STATE_DIR"):
        # Our own folder gets our own ports; a named folder keeps the ports it was made with.
        env.setdefault("UPMON_KUBE_PORT_OFFSET", "100")
    was_running = run_kube("status", state=state, env=env, timeout=60).returncode == 0
    # Cold, this builds kube-apiserver and kubectl first (minutes); cached, seconds.
    up = run_kube("up", "--crds", state=state, env=env, timeout=3600)
    if up.returncode != 0:
        run_kube("down", state=state, env=env, timeout=120)
        pytest.fail("`ci/kube up --crds` failed (exit %d):\n%s%s"
                    % (up.returncode, up.stdout, up.stderr), pytrace=False)
    out = run_kube("env", state=state, env=env, timeout=60)
    if out.returncode != 0:
        pytest.fail("`ci/kube env` failed:\n%s" % out.stderr, pytrace=False)
    yield KubePlane(state, parse_env(out.stdout))
    if not was_running:
        down = run_kube("down", "--wipe", state=state, env=env, timeout=180)
        assert down.returncode == 0, "ci/kube down failed:\n%s%s" % (down.stdout, down.stderr)
