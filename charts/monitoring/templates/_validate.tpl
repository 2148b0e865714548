{{/*
Checks that values.schema.json cannot state, with a message saying what to do. Included by
prometheus.yaml (always rendered); a failure stops rendering with the message.
*/}}
{{- define "upmon-monitoring.validate" -}}
{{- /*
The CRDs. Helm fills .Capabilities.APIVersions from the API server's discovery on install and
upgrade ("group/version" and "group/version/Kind" entries); `helm template` and `helm lint`
have no cluster and use a built-in list, to which `helm template --api-versions` adds (lint
has no such flag, but renders in lint mode, where `fail` is reported as [INFO] and rendering
goes on). One sentinel suffices: the ten CRDs are released and installed together.
*/ -}}
{{- if and .Values.crdCheck (not (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/Prometheus")) -}}
{{- $v := printf "v%s" .Chart.AppVersion -}}
{{- fail (printf `

The Prometheus Operator's CRDs are not installed: the cluster does not serve monitoring.coreos.com/v1 Prometheus.
The monitoring chart needs the CRDs of Prometheus Operator %s first (prometheuses, alertmanagers, servicemonitors,
prometheusrules, podmonitors, probes, scrapeconfigs, alertmanagerconfigs, prometheusagents, thanosrulers).
k8s/up installs them before helm install; by hand:
  kubectl apply --server-side -f https://github.com/prometheus-operator/prometheus-operator/releases/download/%s/stripped-down-crds.yaml
To render without a cluster: helm template --api-versions monitoring.coreos.com/v1/Prometheus ...,
or set crdCheck=false (monitoring.crdCheck=false from charts/upmon).` $v $v) -}}
{{- end -}}
{{- $op := .Values.prometheusOperator -}}
{{- if and $op.allNamespaces $op.namespaces -}}
{{- fail "prometheusOperator.allNamespaces=true watches every namespace, but prometheusOperator.namespaces lists some: set one or the other" -}}
{{- end -}}
{{- if and $op.namespaces (not (has .Release.Namespace $op.namespaces)) -}}
{{- fail (printf "prometheusOperator.namespaces=%s must include the release namespace %q: this chart's Prometheus and Alertmanager live there, and the operator only manages what it watches" (toJson $op.namespaces) .Release.Namespace) -}}
{{- end -}}
{{- end -}}
