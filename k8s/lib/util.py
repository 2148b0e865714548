"""Running commands, printing what is done, finding the tools."""

import os
import shutil
import subprocess
import sys

K8S = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(K8S)


class Failure(Exception):
    """A step failed; the message names it and carries the tail of its output."""


def say(prog, msg):
    print("%s: %s" % (prog, msg), flush=True)


def run(argv, check=True, capture=False, timeout=None, env=None, input=None):
    """Run argv; on failure raise Failure naming the command with its output's tail."""
    try:
        res = subprocess.run(argv, capture_output=capture, text=True, timeout=timeout, env=env,
                             input=input)
    except FileNotFoundError:
        raise Failure("%s: command not found" % argv[0])
    except subprocess.TimeoutExpired:
        raise Failure("%s timed out after %ss" % (" ".join(argv[:4]), timeout))
    if check and res.returncode != 0:
        tail = ((res.stdout or "") + (res.stderr or ""))[-3000:] if capture else ""
        raise Failure("%s exited %d%s" % (" ".join(argv[:6]), res.returncode,
                                          (":\n" + tail) if tail else ""))
    return res


def cache_dir():
    return os.environ.get("UPMON_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                         "upmon")


def tool(name, local):
    """helm or kubectl: on --local the pinned builds ci/deps put in the cache, else PATH."""
    if local:
        if name == "helm":
            path = os.path.join(cache_dir(), "helm")
        else:
            sys.path.insert(0, os.path.join(ROOT, "ci"))
            from kubelib import build  # the pinned kubectl of the local node
            path = build.kubectl_bin()
        if not os.access(path, os.X_OK):
            raise Failure("%s is not in the cache: run ci/deps" % name)
        return path
    path = shutil.which(name)
    if not path:
        raise Failure("%s is not on PATH (install it first: https://helm.sh, "
                      "https://kubernetes.io/docs/tasks/tools/)" % name)
    return path


def project_version():
    with open(os.path.join(ROOT, "CMakeLists.txt")) as f:
        for line in f:
            if line.strip().startswith("project("):
                parts = line.replace("(", " ").replace(")", " ").split()
                if "VERSION" in parts:
                    return parts[parts.index("VERSION") + 1]
    raise Failure("no project VERSION in CMakeLists.txt")
