"""Helpers of k8s/up, k8s/down and k8s/port-forward: one module per concern (flavour.py makes
and deletes the cluster and loads images, install.py installs the CRDs and the chart and
waits, util.py runs commands and prints)."""
