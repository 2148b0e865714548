"""Errors, logging, processes and files shared by ci/kube's modules.

A process is ours only if its command line names our state folder: pid files can be
stale and pids are reused, so a pid file alone never proves ownership."""

import os
import re
import signal
import socket
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class KubeError(Exception):
    pass


def say(msg):
    print("ci/kube: " + msg, flush=True)


def cache_dir():
    return os.environ.get("UPMON_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                         "upmon")


def env_int(name):
    val = os.environ.get(name)
    if val is None or val == "":
        return None
    try:
        return int(val, 10)
    except ValueError:
        raise KubeError("%s=%r is not an integer" % (name, val))


def read_cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None


def proc_state(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def alive(pid):
    return proc_state(pid) not in (None, "Z")


def read_pid(srv):
    try:
        with open(srv["pidfile"]) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def owned_pid(srv):
    pid = read_pid(srv)
    if pid is None or pid <= 0:
        return None
    cmd = read_cmdline(pid)
    if cmd is None or not alive(pid):
        return None
    if srv["dir"] + "/" not in cmd + "/":
        return None
    return pid


def ancestors():
    pids = set()
    pid = os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            with open("/proc/%d/stat" % pid) as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def processes_mentioning(path):
    mine = ancestors()
    found = []
    # The path itself or anything under it, but not a sibling that merely
    # shares the prefix (.state vs .state-ci).
    needle = re.compile(re.escape(path.rstrip("/")) + r"(/|\s|$)")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if pid in mine:
            continue
        cmd = read_cmdline(pid)
        if not cmd or not needle.search(cmd):
            continue
        if not alive(pid):
            continue
        found.append((pid, cmd))
    return found


def port_free(port, host="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def listening_ports():
    """{port: [local address, ...]} of every listening TCP socket (IPv4 and IPv6)."""
    out = {}
    for path, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] != "0A":  # LISTEN
                        continue
                    addr, port = parts[1].rsplit(":", 1)
                    out.setdefault(int(port, 16), []).append(addr if v6 else hex_ip4(addr))
        except OSError:
            pass
    return out


def hex_ip4(h):
    b = bytes.fromhex(h)
    return ".".join(str(x) for x in reversed(b))


def write_file(path, text, mode=0o644):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def tail(path, n=30):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 65536))
            lines = f.read().decode(errors="replace").splitlines()
        return lines[-n:]
    except OSError:
        return []


def spawn(srv, argv, env=None):
    console = open(os.path.join(srv["dir"], "console.log"), "ab")
    try:
        proc = subprocess.Popen(argv, cwd=srv["dir"], stdin=subprocess.DEVNULL, stdout=console,
                                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                                env=env)
    except OSError as e:
        raise KubeError("%s: cannot start %s: %s" % (srv["name"], argv[0], e))
    finally:
        console.close()
    write_file(srv["pidfile"], "%d\n" % proc.pid)
    srv["_launcher"] = proc
    return proc


def report_failure(srv, why):
    lines = ["%s did not come up: %s" % (srv["name"], why)]
    path = os.path.join(srv["dir"], "console.log")
    t = tail(path, 40)
    if t:
        lines.append("--- last %d lines of %s" % (len(t), path))
        lines += t
    return "\n".join(lines)


def stop(srv, timeout):
    """SIGTERM the server, SIGKILL after timeout; remove its pid file."""
    pid = owned_pid(srv)
    if pid is None:
        if read_pid(srv) is not None:
            say("%-18s not running (stale pid file removed)" % srv["name"])
    else:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(pid):
            say("%-18s did not stop within %ds; SIGKILL pid %d" % (srv["name"], timeout, pid))
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 10
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
        else:
            say("%-18s stopped (pid %d)" % (srv["name"], pid))
    try:
        os.unlink(srv["pidfile"])
    except FileNotFoundError:
        pass


def run(argv, timeout=120, check=True, **kw):
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    except (OSError, subprocess.SubprocessError) as e:
        raise KubeError("%s: %s" % (" ".join(argv[:3]), e))
    if check and res.returncode != 0:
        raise KubeError("%s failed (%d): %s" % (" ".join(argv), res.returncode,
                                                (res.stderr or res.stdout).strip()[-2000:]))
    return res
