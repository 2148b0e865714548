"""The three ways to get a cluster and the images into it. They differ only here:
create, delete, and load images; install.py is the same for all.

  local     this project's own node (ci/kube up --node): images built by ci/images with
            podman and imported into its containerd; the third-party servers are the
            Debian-based images of k8s/images (values-local.yaml). What the tests run.
  kind      `kind create cluster` with k8s/kind.yaml (extra port mappings); the upmon images
            built with docker from the same Dockerfiles and `kind load docker-image`ed; the
            third-party servers are the official images, pulled by the cluster.
  minikube  a `minikube start -p upmon` profile; images built with docker and
            `minikube image load`ed.
"""

import os

from .util import Failure, K8S, ROOT, run, say

SERVICES = ("ingest", "analyzer", "simulator", "operator")
LOCAL_THIRD_PARTY = ("clickhouse", "zookeeper", "kafka", "prometheus", "alertmanager",
                     "prometheus-operator", "prometheus-config-reloader")


def local_state(args):
    return os.path.abspath(args.state or os.environ.get("UPMON_KUBE_STATE_DIR")
                           or os.path.join(ROOT, ".state-kube"))


def create(prog, args):
    """Make (or reuse) the cluster; returns the environment kubectl and helm need."""
    env = dict(os.environ)
    if args.flavour == "local":
        state = local_state(args)
        say(prog, "local node in %s (ci/kube up --node)" % state)
        run([os.path.join(ROOT, "ci", "deps")])
        run([os.path.join(ROOT, "ci", "kube"), "--state", state, "up", "--node"], timeout=3600)
        out = run([os.path.join(ROOT, "ci", "kube"), "--state", state, "env"], capture=True)
        for line in out.stdout.splitlines():
            if line.startswith("export ") and "=" in line:
                k, _, v = line[len("export "):].partition("=")
                env[k] = v.strip("'\"")
    elif args.flavour == "kind":
        have = run(["kind", "get", "clusters"], capture=True).stdout.split()
        if args.name in have:
            say(prog, "kind cluster %s exists; reusing it" % args.name)
        else:
            run(["kind", "create", "cluster", "--name", args.name, "--config",
                 os.path.join(K8S, "kind.yaml"), "--wait", "120s"], timeout=900)
        env["KUBECONFIG"] = os.environ.get("KUBECONFIG", "")
        run(["kubectl", "config", "use-context", "kind-" + args.name])
    elif args.flavour == "minikube":
        run(["minikube", "start", "-p", args.name, "--cpus", str(args.cpus),
             "--memory", args.memory], timeout=1800)
        run(["kubectl", "config", "use-context", args.name])
    return env


def load_images(prog, args, version):
    if args.flavour == "local":
        names = ["upmon-" + s for s in SERVICES] + list(LOCAL_THIRD_PARTY)
        say(prog, "building and loading %d images (ci/images; unchanged ones are skipped)"
            % len(names))
        run([os.path.join(ROOT, "ci", "images"), "build", "--load", "--kube-state",
             local_state(args)] + names, timeout=7200)
        return
    builder = args.builder
    for svc in SERVICES:
        ref = "upmon-%s:%s" % (svc, version)
        say(prog, "building %s with %s" % (ref, builder))
        run([builder, "build", "-t", ref, "-f",
             os.path.join(ROOT, "services", svc, "Dockerfile"), ROOT], timeout=3600)
        if args.flavour == "kind":
            run(["kind", "load", "docker-image", "--name", args.name, ref], timeout=900)
        else:
            run(["minikube", "-p", args.name, "image", "load", ref], timeout=900)


def delete(prog, args, env):
    if args.flavour == "local":
        argv = [os.path.join(ROOT, "ci", "kube"), "--state", local_state(args), "down"]
        if args.wipe:
            argv.append("--wipe")
        run(argv, timeout=900)
    elif args.flavour == "kind":
        run(["kind", "delete", "cluster", "--name", args.name], timeout=600)
    elif args.flavour == "minikube":
        run(["minikube", "delete", "-p", args.name], timeout=600)
    else:
        raise Failure("unknown flavour %s" % args.flavour)
