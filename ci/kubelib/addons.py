"""What the node runs on itself once it is Ready: CoreDNS (cluster DNS, a Deployment on
its own image) and the node-local StorageClasses served by kubelib.provisioner."""

import socket
import struct
import time

from . import build, plane
from .util import KubeError

COREDNS_IMAGE = "localhost/upmon/coredns:%s" % build.COREDNS_VERSION
# Unprivileged inside the pod; the Service maps 53 to it.
COREDNS_PORT = 1053

MANIFEST = """apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects:
- {kind: ServiceAccount, name: coredns, namespace: kube-system}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  Corefile: |
    .:%(port)d {
        errors
        health :8080
        ready :8181
        kubernetes %(domain)s in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
            ttl 30
        }
        cache 30
        loop
        reload
        loadbalance
    }
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  replicas: 1
  selector:
    matchLabels: {k8s-app: kube-dns}
  template:
    metadata:
      labels: {k8s-app: kube-dns}
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      dnsPolicy: Default
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        seccompProfile: {type: RuntimeDefault}
      containers:
      - name: coredns
        image: %(image)s
        imagePullPolicy: IfNotPresent
        args: ["-conf", "/etc/coredns/Corefile"]
        ports:
        - {name: dns, containerPort: %(port)d, protocol: UDP}
        - {name: dns-tcp, containerPort: %(port)d, protocol: TCP}
        resources:
          requests: {cpu: 50m, memory: 40Mi}
          limits: {memory: 128Mi}
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {drop: [ALL]}
        livenessProbe:
          httpGet: {path: /health, port: 8080}
          periodSeconds: 10
        readinessProbe:
          httpGet: {path: /ready, port: 8181}
          periodSeconds: 2
        volumeMounts:
        - {name: config, mountPath: /etc/coredns, readOnly: true}
      volumes:
      - name: config
        configMap:
          name: coredns
          items: [{key: Corefile, path: Corefile}]
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns, kubernetes.io/name: CoreDNS}
spec:
  clusterIP: %(dns)s
  selector: {k8s-app: kube-dns}
  ports:
  - {name: dns, port: 53, targetPort: %(port)d, protocol: UDP}
  - {name: dns-tcp, port: 53, targetPort: %(port)d, protocol: TCP}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: upmon-local
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: upmon.io/local-volume
reclaimPolicy: Delete
volumeBindingMode: WaitForFirstConsumer
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: upmon-local-retain
provisioner: upmon.io/local-volume
reclaimPolicy: Retain
volumeBindingMode: WaitForFirstConsumer
"""


def apply(layout):
    text = MANIFEST % {"port": COREDNS_PORT, "domain": plane.CLUSTER_DOMAIN,
                       "image": COREDNS_IMAGE, "dns": plane.CLUSTER_DNS}
    plane.kubectl(layout, "apply", "-f", "-", input=text)


def dns_query(server, name, timeout=2.0):
    """One A query over UDP; returns the answer's IPv4 addresses ([] on NXDOMAIN)."""
    qid = int(time.monotonic() * 1000) & 0xFFFF
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\0" + struct.pack(">HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(q, (server, 53))
        data, _ = s.recvfrom(4096)
    finally:
        s.close()
    rid, flags, qd, an = struct.unpack(">HHHH", data[:8])
    if rid != qid or flags & 0x000F not in (0, 3):
        raise OSError("DNS answer code %d" % (flags & 0xF))
    pos = 12
    for _ in range(qd):
        while data[pos]:
            pos += data[pos] + 1
        pos += 5
    out = []
    for _ in range(an):
        if data[pos] & 0xC0 == 0xC0:
            pos += 2
        else:
            while data[pos]:
                pos += data[pos] + 1
            pos += 1
        rtype, _cls, _ttl, rdlen = struct.unpack(">HHIH", data[pos:pos + 10])
        pos += 10
        if rtype == 1 and rdlen == 4:
            out.append(socket.inet_ntoa(data[pos:pos + 4]))
        pos += rdlen
    return out


def wait_dns(layout, timeout):
    """Until the cluster DNS Service answers for the API server's own Service."""
    name = "kubernetes.default.svc." + plane.CLUSTER_DOMAIN
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            ips = dns_query(plane.CLUSTER_DNS, name)
            if plane.SERVICE_API_IP in ips:
                return
            last = "answer %s" % ips
        except OSError as e:
            last = str(e)
        time.sleep(1)
    res = plane.kubectl(layout, "-n", "kube-system", "get", "pods,endpointslices", "-o", "wide",
                        check=False)
    raise KubeError("cluster DNS at %s did not answer %s within %ds (last: %s)\n%s%s"
                    % (plane.CLUSTER_DNS, name, timeout, last, res.stdout, res.stderr))


def wait_node_ready(layout, timeout):
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        res = plane.kubectl(layout, "get", "node", plane.NODE_NAME, "-o",
                            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} "
                            "{.status.conditions[?(@.type==\"Ready\")].message}", check=False)
        last = (res.stdout or res.stderr).strip()
        if res.returncode == 0 and last.startswith("True"):
            return
        time.sleep(1)
    raise KubeError("node %s not Ready within %ds: %s" % (plane.NODE_NAME, timeout, last))

