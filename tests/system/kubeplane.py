"""Helpers for system tests against the real control plane started by ci/kube.

The `kube` fixture (conftest.py) hands out a KubePlane: the admin kubectl, unique
namespaces, ServiceAccounts, Roles and tokens minted through the TokenRequest API, and
raw HTTPS requests to the API server as the admin or with a bearer token, so a test can
act exactly as a pod with that ServiceAccount would.
"""

import json
import os
import shlex
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KUBE = os.path.join(ROOT, "ci", "kube")

LEASES = "/apis/coordination.k8s.io/v1/namespaces/%s/leases"


def run_kube(*args, state, env=None, timeout=900):
    """Run ci/kube on the control plane in `state`; never raises on exit status."""
    return subprocess.run([KUBE, "--state", state] + list(args), capture_output=True,
                          text=True, timeout=timeout, env=env)


def parse_env(text):
    out = {}
    for line in text.splitlines():
        if line.startswith("export "):
            name, _, value = line[len("export "):].partition("=")
            words = shlex.split(value)
            out[name] = words[0] if words else ""
    return out


class ApiResponse:
    def __init__(self, status, body):
        self.status = status
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "ApiResponse(%d, %s)" % (self.status, self.body[:300])


class KubePlane:
    def __init__(self, state, env):
        self.state = state
        self.env = env
        self.api = env["UPMON_KUBE_API"]
        self.ca = env["UPMON_KUBE_CA"]
        self.kubeconfig = env["KUBECONFIG"]
        self.kubectl_bin = env["UPMON_KUBECTL"]
        self._admin_ctx = ssl.create_default_context(cafile=self.ca)
        self._admin_ctx.load_cert_chain(env["UPMON_KUBE_CLIENT_CERT"],
                                        env["UPMON_KUBE_CLIENT_KEY"])
        self._anon_ctx = ssl.create_default_context(cafile=self.ca)

    # ---- kubectl as the admin

    def kubectl(self, *args, input=None, check=True, timeout=60):
        env = dict(os.environ)
        env["KUBECONFIG"] = self.kubeconfig
        res = subprocess.run([self.kubectl_bin] + list(args), input=input, capture_output=True,
                             text=True, timeout=timeout, env=env)
        if check and res.returncode != 0:
            raise AssertionError("kubectl %s -> exit %d: %s"
                                 % (" ".join(args), res.returncode, res.stderr.strip()))
        return res

    def apply(self, obj):
        """Create or update one object (a dict) as the admin."""
        return self.kubectl("apply", "-f", "-", input=json.dumps(obj))

    def namespace(self, prefix="upmon-test"):
        """A new namespace with a unique name. Without a controller manager a deleted
        namespace never finishes terminating, so they are left to `ci/kube down --wipe`."""
        name = "%s-%s" % (prefix, uuid.uuid4().hex[:8])
        self.kubectl("create", "namespace", name)
        return name

    def service_account(self, ns, name):
        self.kubectl("create", "serviceaccount", name, "-n", ns)
        return name

    def token(self, ns, sa, duration="1h"):
        """A bearer token for ServiceAccount ns/sa, minted by the API server (TokenRequest)."""
        return self.kubectl("create", "token", sa, "-n", ns,
                            "--duration", duration).stdout.strip()

    def grant_lease(self, ns, sa, lease, role=None):
        """The least privilege a Lease candidate needs: create on leases (RBAC cannot limit
        create by name) and get/update on the one named lease; returns the Role's name."""
        role = role or "lease-%s" % lease
        self.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                    "metadata": {"name": role, "namespace": ns},
                    "rules": [
                        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                         "verbs": ["create"]},
                        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                         "resourceNames": [lease], "verbs": ["get", "update"]}]})
        self.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                    "metadata": {"name": role, "namespace": ns},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                "name": role},
                    "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}]})
        return role

    def can_i(self, ns, sa, verb, resource, name=None):
        """Ask the authorizer (as the admin impersonating sa) whether sa may do verb."""
        what = resource + ("/" + name if name else "")
        res = self.kubectl("auth", "can-i", verb, what, "-n", ns,
                           "--as", "system:serviceaccount:%s:%s" % (ns, sa), check=False)
        return res.stdout.strip() == "yes"

    # ---- raw HTTPS

    def request(self, method, path, body=None, token=None, admin=False, timeout=30):
        """One API request; as the admin (client cert), with a bearer token, or with no
        credentials at all. Returns ApiResponse for every HTTP status."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = "Bearer " + token
        req = urllib.request.Request(self.api + path, data=data, method=method, headers=headers)
        ctx = self._admin_ctx if admin else self._anon_ctx
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
                return ApiResponse(resp.status, resp.read().decode(errors="replace"))
        except urllib.error.HTTPError as e:
            return ApiResponse(e.code, e.read().decode(errors="replace"))

    def lease_body(self, ns, name, holder, duration=15, resource_version=None):
        meta = {"name": name, "namespace": ns}
        if resource_version:
            meta["resourceVersion"] = resource_version
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
                "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration}}


def wait_for(what, fn, timeout, interval=0.2):
    """Call fn until it returns a truthy value; raise naming `what` after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = fn()
            if last:
                return last
        except Exception as e:  # keep the last error for the message
            last = e
        if time.monotonic() > deadline:
            raise AssertionError("%s: not true within %ss (last: %r)" % (what, timeout, last))
        time.sleep(interval)


IMAGES = os.path.join(ROOT, "ci", "images")


def node_state_dir():
    """The node's state folder: UPMON_KUBE_NODE_STATE_DIR, else one of the test run's own."""
    state = os.path.abspath(os.environ.get("UPMON_KUBE_NODE_STATE_DIR")
                            or os.path.join(ROOT, ".state-kube-node-test"))
    if not os.environ.get("UPMON_KUBE_NODE_STATE_DIR") and len(state) > 60:
        # A node's state path must stay short (the kubelet's unix sockets live under it):
        # a deep checkout gets a folder of its own under /tmp instead.
        state = "/tmp/upmon-kube-node-test-%08x" % (hash(ROOT) & 0xFFFFFFFF)
    return state


def start_node(images, fail):
    """Start (or reuse) the test node and load `images` (ci/images names) into it.

    Returns a KubePlane with .own (this call started it), .state and .run_env. `fail` is
    pytest.fail, called with a message when the node or the images cannot be had.
    """
    own = not os.environ.get("UPMON_KUBE_NODE_STATE_DIR")
    state = node_state_dir()
    env = dict(os.environ)
    if own:
        # Apart from the Lease tests' control plane (offset 100) and a developer's (0).
        env["UPMON_KUBE_PORT_OFFSET"] = "200"
    t0 = time.monotonic()
    up = run_kube("up", "--node", state=state, env=env, timeout=3600)
    if up.returncode != 0:
        if own:
            run_kube("down", state=state, env=env, timeout=300)
        fail("`ci/kube up --node` failed (exit %d):\n%s%s"
             % (up.returncode, up.stdout[-4000:], up.stderr[-4000:]))
    print("node up in %.0fs" % (time.monotonic() - t0))
    t0 = time.monotonic()
    res = subprocess.run([IMAGES, "build", "--load", "--kube-state", state] + list(images),
                         capture_output=True, text=True, timeout=3600)
    if res.returncode != 0:
        if own:
            run_kube("down", state=state, env=env, timeout=300)
        fail("`ci/images build --load` failed:\n%s%s" % (res.stdout[-4000:],
                                                         res.stderr[-4000:]))
    print("images built and loaded in %.0fs" % (time.monotonic() - t0))
    out = run_kube("env", state=state, env=env, timeout=60)
    plane = KubePlane(state, parse_env(out.stdout))
    plane.own = own
    plane.state = state
    plane.run_env = env
    return plane


def stop_node(plane):
    """Stop and wipe a node that start_node started (a developer's is left running)."""
    if plane.own and os.path.exists(os.path.join(plane.state, "kube.json")):
        run_kube("down", "--wipe", state=plane.state, env=plane.run_env, timeout=600)
