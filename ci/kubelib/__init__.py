"""ci/kube's package: a real Kubernetes control plane, and optionally a real node, as local
processes. One module per concern:

  util         errors, logging, processes, files (shared by every module)
  build        the pinned Kubernetes binaries, crictl and CoreDNS built from Go modules
  plane        layout, certificates, kubeconfigs, etcd and kube-apiserver
  net          the node's bridge, CNI configuration, sysctls and iptables cleanup
  node         containerd, kube-controller-manager, kube-scheduler, kubelet, kube-proxy
  addons       CoreDNS, the StorageClasses and waiting for DNS
  provisioner  the node-local volume provisioner (runs as its own process)
  cli          the ci/kube commands
"""
