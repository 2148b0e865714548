#!/bin/sh
# Run one unit test without the caller's configuration: every UPMON_* override (but the
# test data folder ctest sets), the in-cluster Kubernetes variables, the pod name the lease
# module reads, and the proxy variables libcurl obeys. A developer's exported
# UPMON_HTTP_PORT must not change what a unit test sees.
for v in $(env | sed -n 's/^\(UPMON_[A-Za-z0-9_]*\)=.*/\1/p'); do
  [ "$v" = UPMON_TEST_DATA ] || unset "$v"
done
unset KUBERNETES_SERVICE_HOST KUBERNETES_SERVICE_PORT POD_NAME KUBECONFIG \
  http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY
# No ~/.kube/config either: an empty kubeconfig must mean in-cluster here.
HOME=/nonexistent-upmon-unit-home
export HOME
exec "$@"
