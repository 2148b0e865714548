"""The third-party images the local node runs (k8s/images/), built by ci/images and
started with podman: each starts as its non-root user and answers as its server should.

(The upmon images and the pause and CoreDNS images are exercised on the node itself by
test_node.py.)"""

import os
import subprocess
import time
import uuid

import pytest

from kubeplane import wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGES = os.path.join(ROOT, "ci", "images")
THIRD_PARTY = ("clickhouse", "zookeeper", "kafka", "prometheus", "alertmanager",
               "prometheus-operator", "prometheus-config-reloader")


def podman_env():
    cache = os.environ.get("UPMON_CACHE") or os.path.expanduser("~/.cache/upmon")
    return dict(os.environ, CONTAINERS_CONF=os.path.join(cache, "podman", "containers.conf"))


def podman(*args, check=True, timeout=120):
    res = subprocess.run(["podman"] + list(args), capture_output=True, text=True,
                         env=podman_env(), timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError("podman %s -> %d: %s" % (" ".join(args[:3]), res.returncode,
                                                      res.stderr[-2000:]))
    return res


@pytest.fixture(scope="module")
def built():
    t0 = time.monotonic()
    res = subprocess.run([IMAGES, "build"] + list(THIRD_PARTY), capture_output=True,
                         text=True, timeout=3600)
    if res.returncode != 0:
        pytest.fail("ci/images build failed:\n%s%s" % (res.stdout[-3000:], res.stderr[-3000:]),
                    pytrace=False)
    print("third-party images built in %.0fs" % (time.monotonic() - t0))
    refs = {}
    for line in subprocess.run([IMAGES, "list"], capture_output=True, text=True).stdout.split(
            "\n")[1:]:
        parts = line.split()
        if parts:
            refs[parts[0]] = parts[1]
    return refs


@pytest.fixture
def conf(tmp_path):
    """A folder to mount as a config folder: the images' non-root users must read it."""
    os.chmod(tmp_path, 0o755)
    return tmp_path


@pytest.fixture
def container():
    names = []

    def run(ref, *args, volumes=(), env=()):
        name = "upmon-test-" + uuid.uuid4().hex[:8]
        argv = ["run", "-d", "--name", name, "--network", "none"]
        for v in volumes:
            argv += ["-v", v]
        for e in env:
            argv += ["-e", e]
        podman(*(argv + [ref] + list(args)))
        names.append(name)
        return name
    yield run
    for n in names:
        podman("rm", "-f", "-t", "2", n, check=False)


def logs(name):
    res = podman("logs", name, check=False)
    return res.stdout + res.stderr


def test_clickhouse_answers_as_uid_101(built, container):
    c = container(built["clickhouse"])
    out = wait_for("clickhouse answers", lambda: podman(
        "exec", c, "clickhouse-client", "-q", "SELECT version()", check=False).stdout.strip(),
        60, 1)
    assert out.startswith("18.16."), out
    assert podman("exec", c, "id", "-u").stdout.strip() == "101"


def test_zookeeper_serves_with_its_id(built, container, conf):
    (conf / "zoo.cfg").write_text("tickTime=2000\ndataDir=/data\nclientPort=2181\n"
                                      "admin.enableServer=false\n4lw.commands.whitelist=ruok\n")
    c = container(built["zookeeper"], volumes=["%s:/conf:ro" % conf], env=["ZOO_MY_ID=3"])
    script = "exec 3<>/dev/tcp/127.0.0.1/2181; printf ruok >&3; cat <&3"
    wait_for("zookeeper imok", lambda: podman("exec", c, "bash", "-c", script,
                                             check=False).stdout == "imok", 60, 1)
    assert podman("exec", c, "cat", "/data/myid").stdout.strip() == "3"
    assert podman("exec", c, "id", "-u").stdout.strip() == "1000"


def test_zookeeper_without_an_id_refuses(built, container, conf):
    (conf / "zoo.cfg").write_text("dataDir=/data\nclientPort=2181\n")
    res = podman("run", "--rm", "--network", "none", "--hostname", "zk",
                 "-v", "%s:/conf:ro" % conf, built["zookeeper"], check=False)
    assert res.returncode == 2 and "ZOO_MY_ID" in res.stderr, res.stderr


def test_kafka_formats_once_and_starts(built, container, conf):
    (conf / "server.properties").write_text(
        "process.roles=broker,controller\nnode.id=1\n"
        "controller.quorum.voters=1@127.0.0.1:9093\n"
        "listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093\n"
        "controller.listener.names=CONTROLLER\n"
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n"
        "log.dirs=/var/lib/kafka/data\noffsets.topic.replication.factor=1\n")
    c = container(built["kafka"], volumes=["%s:/etc/kafka:ro" % conf],
                  env=["KAFKA_CLUSTER_ID=MkU3OEVBNTcwNTJENDM2Qg"])
    wait_for("kafka started", lambda: "Kafka Server started" in logs(c), 120, 1)
    assert "Formatting metadata directory /var/lib/kafka/data" in logs(c)
    # A restart finds the storage formatted and keeps it.
    podman("restart", "-t", "5", c)
    wait_for("kafka restarted", lambda: logs(c).count("Kafka Server started") == 2, 120, 1)
    assert logs(c).count("Formatting metadata directory") == 1
    assert podman("exec", c, "id", "-u").stdout.strip() == "1000"


def test_kafka_without_a_cluster_id_refuses(built, conf):
    (conf / "server.properties").write_text("log.dirs=/var/lib/kafka/data\n")
    res = podman("run", "--rm", "--network", "none", "-v",
                 "%s:/etc/kafka:ro" % conf, built["kafka"], check=False)
    assert res.returncode == 2 and "KAFKA_CLUSTER_ID" in res.stderr, res.stderr


@pytest.mark.parametrize("name,version", [("prometheus", "2.54.1"), ("alertmanager", "0.25.")])
def test_prometheus_and_alertmanager_run(built, name, version):
    res = podman("run", "--rm", "--network", "none", built[name], "--version")
    assert version in res.stdout + res.stderr
    user = podman("image", "inspect", "--format", "{{.Config.User}}", built[name]).stdout
    assert user.strip() == "65534:65534"


@pytest.mark.parametrize("name", ["prometheus-operator", "prometheus-config-reloader"])
def test_prometheus_operator_images_carry_their_version(built, name):
    res = podman("run", "--rm", "--network", "none", built[name], "--version")
    # Without the version stamp the operator's default config-reloader tag comes out broken.
    assert "%s, version 0.85.0" % name in res.stdout + res.stderr, res.stdout + res.stderr
    user = podman("image", "inspect", "--format", "{{.Config.User}}", built[name]).stdout
    assert user.strip() == "65534:65534"
