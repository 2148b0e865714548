"""The node's volume provisioner (run by `ci/kube up --node` as its own process).

StorageClasses `upmon-local` (the default; reclaim Delete) and `upmon-local-retain`
(reclaim Retain: data kept after the claim is deleted) name provisioner
`upmon.io/local-volume`. For every claim of those classes that the scheduler has placed
(WaitForFirstConsumer), this makes a folder under <state>/volumes/ and a `local`
PersistentVolume bound to that claim; when a Delete volume is released it removes the
folder and the volume. Retained volumes stay, folder and all, until someone deletes them.

It lists claims and volumes, then watches both from the lists' resourceVersion (a relist
on 410 Gone or any error, with backoff); a slow resync catches anything missed."""

import argparse
import json
import os
import shutil
import ssl
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

PROVISIONER = "upmon.io/local-volume"
RESYNC = 30


def log(msg, **kv):
    fields = " ".join("%s=%s" % (k, json.dumps(v)) for k, v in kv.items())
    print("%s provisioner: %s %s" % (time.strftime("%Y-%m-%dT%H:%M:%S"), msg, fields),
          flush=True)


class Api:
    def __init__(self, state):
        with open(os.path.join(state, "kube.json")) as f:
            layout = json.load(f)
        pki = layout["pki"]
        host = "10.245.0.1" if layout.get("node") else "127.0.0.1"
        self.url = "https://%s:%d" % (host, layout["ports"]["api"])
        self.ctx = ssl.create_default_context(cafile=os.path.join(pki, "ca.crt"))
        self.ctx.load_cert_chain(os.path.join(pki, "provisioner.crt"),
                                 os.path.join(pki, "provisioner.key"))

    def call(self, method, path, body=None, timeout=30):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.ctx) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            try:
                return e.code, json.loads(e.read() or b"{}")
            except ValueError:
                return e.code, {}

    def watch(self, path, rv, wake, stop):
        """Stream watch events until the server ends the watch; any event wakes the loop."""
        q = urllib.parse.urlencode({"watch": "1", "resourceVersion": rv,
                                    "timeoutSeconds": "300", "allowWatchBookmarks": "true"})
        req = urllib.request.Request("%s%s?%s" % (self.url, path, q))
        with urllib.request.urlopen(req, timeout=330, context=self.ctx) as resp:
            for line in resp:
                if stop.is_set():
                    return rv
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if ev.get("type") == "ERROR":
                    # 410 Gone: our version is too old; the caller relists.
                    raise RuntimeError("watch %s: %s" % (path, ev.get("object", {})
                                                         .get("message", "error")))
                rv = ev.get("object", {}).get("metadata", {}).get("resourceVersion", rv)
                if ev.get("type") != "BOOKMARK":
                    wake.set()
        return rv


class Provisioner:
    def __init__(self, state, heartbeat):
        self.state = state
        self.api = Api(state)
        self.root = os.path.join(state, "volumes")
        os.makedirs(self.root, exist_ok=True)
        self.heartbeat = heartbeat
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.versions = {}

    def classes(self):
        st, body = self.api.call("GET", "/apis/storage.k8s.io/v1/storageclasses")
        if st != 200:
            raise RuntimeError("list storageclasses: HTTP %d" % st)
        return {c["metadata"]["name"]: c for c in body.get("items", [])
                if c.get("provisioner") == PROVISIONER}

    def reconcile(self):
        classes = self.classes()
        st, pvcs = self.api.call("GET", "/api/v1/persistentvolumeclaims")
        if st != 200:
            raise RuntimeError("list claims: HTTP %d" % st)
        st, pvs = self.api.call("GET", "/api/v1/persistentvolumes")
        if st != 200:
            raise RuntimeError("list volumes: HTTP %d" % st)
        self.versions = {"claims": pvcs["metadata"]["resourceVersion"],
                         "volumes": pvs["metadata"]["resourceVersion"]}
        by_claim = {}
        for pv in pvs.get("items", []):
            ref = pv["spec"].get("claimRef") or {}
            by_claim[ref.get("uid")] = pv
        for pvc in pvcs.get("items", []):
            self.provision(pvc, classes, by_claim)
        for pv in pvs.get("items", []):
            self.reclaim(pv)
        with open(self.heartbeat, "w") as f:
            f.write("%d\n" % time.time())

    def provision(self, pvc, classes, by_claim):
        meta, spec = pvc["metadata"], pvc["spec"]
        cls = classes.get(spec.get("storageClassName") or "")
        if cls is None or pvc.get("status", {}).get("phase") != "Pending":
            return
        if spec.get("volumeName") or meta["uid"] in by_claim:
            return
        ann = meta.get("annotations", {})
        node = ann.get("volume.kubernetes.io/selected-node")
        if not node:
            return  # WaitForFirstConsumer: not placed yet
        name = "pvc-" + meta["uid"]
        path = os.path.join(self.root, "%s_%s_%s" % (meta["namespace"], meta["name"],
                                                     meta["uid"][:8]))
        os.makedirs(path, exist_ok=True)
        # Pods run as non-root users of their own choosing; the folder is theirs.
        os.chmod(path, 0o777)
        size = spec.get("resources", {}).get("requests", {}).get("storage", "1Gi")
        pv = {
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": name,
                         "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
                         "labels": {"upmon.io/local-volume": "true"}},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                "volumeMode": spec.get("volumeMode", "Filesystem"),
                "persistentVolumeReclaimPolicy": cls.get("reclaimPolicy", "Delete"),
                "storageClassName": cls["metadata"]["name"],
                "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                             "namespace": meta["namespace"], "name": meta["name"],
                             "uid": meta["uid"],
                             "resourceVersion": meta["resourceVersion"]},
                "local": {"path": path},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In",
                     "values": [node]}]}]}},
            },
        }
        st, body = self.api.call("POST", "/api/v1/persistentvolumes", pv)
        if st in (200, 201):
            log("provisioned", claim="%s/%s" % (meta["namespace"], meta["name"]), volume=name,
                path=path, size=size)
        elif st != 409:
            log("create failed", volume=name, status=st, message=body.get("message", ""))

    def reclaim(self, pv):
        ann = pv["metadata"].get("annotations", {})
        if ann.get("pv.kubernetes.io/provisioned-by") != PROVISIONER:
            return
        if pv.get("status", {}).get("phase") != "Released":
            return
        if pv["spec"].get("persistentVolumeReclaimPolicy") != "Delete":
            return
        path = pv["spec"].get("local", {}).get("path", "")
        # Only ever delete under our own volumes folder.
        if os.path.dirname(path) == self.root and os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        st, body = self.api.call("DELETE", "/api/v1/persistentvolumes/" + pv["metadata"]["name"])
        if st in (200, 202, 404):
            log("deleted", volume=pv["metadata"]["name"], path=path)
        else:
            log("delete failed", volume=pv["metadata"]["name"], status=st,
                message=body.get("message", ""))

    def watcher(self, what, path):
        backoff = 1
        while not self.stop.is_set():
            rv = self.versions.get(what)
            if not rv:
                time.sleep(1)
                continue
            try:
                self.versions[what] = self.api.watch(path, rv, self.wake, self.stop)
                backoff = 1
            except Exception as e:  # noqa: BLE001 - any failure: relist, back off
                log("watch ended", what=what, error=str(e)[:200])
                self.versions.pop(what, None)
                self.wake.set()
                time.sleep(backoff)
                backoff = min(backoff * 2, 30)

    def run(self):
        for what, path in (("claims", "/api/v1/persistentvolumeclaims"),
                           ("volumes", "/api/v1/persistentvolumes")):
            threading.Thread(target=self.watcher, args=(what, path), daemon=True).start()
        backoff = 1
        log("started", root=self.root, provisioner=PROVISIONER)
        while not self.stop.is_set():
            try:
                self.reconcile()
                backoff = 1
            except Exception as e:  # noqa: BLE001
                log("reconcile failed", error=str(e)[:300])
                time.sleep(backoff)
                backoff = min(backoff * 2, 30)
                continue
            self.wake.wait(RESYNC)
            self.wake.clear()
            # Let a burst of events (a StatefulSet's claims) settle into one pass.
            time.sleep(0.2)


def main(argv):
    ap = argparse.ArgumentParser(prog="kubelib.provisioner")
    ap.add_argument("--state", required=True)
    ap.add_argument("--heartbeat", required=True, help="file touched after every pass")
    args = ap.parse_args(argv)
    Provisioner(os.path.abspath(args.state), os.path.abspath(args.heartbeat)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
