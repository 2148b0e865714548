{{/*
Names and labels. Every template name starts with "upmon-monitoring." because template names
are global across a parent chart and its sub-charts (charts/upmon includes this one).
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "upmon-monitoring.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The prefix of every object's name: fullnameOverride, else "<release>-<name>", else the release
name alone when it already contains the name. Truncated to 39, not 63: the operator names the
StatefulSets "prometheus-<name>" and "alertmanager-<name>", and a StatefulSet name longer than
52 characters breaks its pods' controller-revision-hash label (63 at most).
*/}}
{{- define "upmon-monitoring.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 39 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 39 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 39 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "name-version" for the helm.sh/chart label. */}}
{{- define "upmon-monitoring.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Selector labels of one component. Call with (dict "ctx" $ "component" "operator").
These never change after install: a Deployment's selector is immutable.
*/}}
{{- define "upmon-monitoring.selectorLabels" -}}
app.kubernetes.io/name: {{ include "upmon-monitoring.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* All standard labels of one component. Call like selectorLabels. */}}
{{- define "upmon-monitoring.labels" -}}
{{ include "upmon-monitoring.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: upmon
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ include "upmon-monitoring.chart" .ctx }}
{{- end -}}

{{/* Object names of each component. */}}
{{- define "upmon-monitoring.operator.fullname" -}}
{{- printf "%s-operator" (include "upmon-monitoring.fullname" .) -}}
{{- end -}}

{{/* The Prometheus and Alertmanager resources are named <fullname> (their kinds differ). */}}
{{- define "upmon-monitoring.prometheus.name" -}}
{{- include "upmon-monitoring.fullname" . -}}
{{- end -}}

{{- define "upmon-monitoring.alertmanager.name" -}}
{{- include "upmon-monitoring.fullname" . -}}
{{- end -}}

{{/* Services, ServiceAccounts and the like of Prometheus, Alertmanager, Grafana. */}}
{{- define "upmon-monitoring.prometheus.fullname" -}}
{{- printf "%s-prometheus" (include "upmon-monitoring.fullname" .) -}}
{{- end -}}

{{- define "upmon-monitoring.alertmanager.fullname" -}}
{{- printf "%s-alertmanager" (include "upmon-monitoring.fullname" .) -}}
{{- end -}}

{{- define "upmon-monitoring.alertmanager.configSecret" -}}
{{- printf "%s-alertmanager-config" (include "upmon-monitoring.fullname" .) -}}
{{- end -}}

{{- define "upmon-monitoring.grafana.fullname" -}}
{{- printf "%s-grafana" (include "upmon-monitoring.fullname" .) -}}
{{- end -}}

{{/* The Secret with Grafana's admin-user and admin-password. */}}
{{- define "upmon-monitoring.grafana.secretName" -}}
{{- default (include "upmon-monitoring.grafana.fullname" .) .Values.grafana.existingSecret -}}
{{- end -}}

{{/* The value of the `release` label the Prometheus selects on. */}}
{{- define "upmon-monitoring.releaseLabel" -}}
{{- default .Release.Name .Values.release.label -}}
{{- end -}}

{{/*
The namespaces the operator watches, as a JSON list (fromJsonArray to use it). Empty when it
watches every namespace (prometheusOperator.allNamespaces).
*/}}
{{- define "upmon-monitoring.watchedNamespaces" -}}
{{- if .Values.prometheusOperator.allNamespaces -}}
[]
{{- else if .Values.prometheusOperator.namespaces -}}
{{- .Values.prometheusOperator.namespaces | uniq | toJson -}}
{{- else -}}
{{- list .Release.Namespace | toJson -}}
{{- end -}}
{{- end -}}

{{/*
The namespaces the Prometheus discovers targets in and so needs a Role in (JSON list); empty
when it needs a ClusterRole (the operator watches every namespace and namespaceScope is
"watched"). The release namespace is always one: the Alertmanager is discovered there.
*/}}
{{- define "upmon-monitoring.prometheus.namespaces" -}}
{{- if eq .Values.prometheus.namespaceScope "release" -}}
{{- list .Release.Namespace | toJson -}}
{{- else if .Values.prometheusOperator.allNamespaces -}}
[]
{{- else -}}
{{- concat (list .Release.Namespace) (include "upmon-monitoring.watchedNamespaces" . | fromJsonArray) | uniq | toJson -}}
{{- end -}}
{{- end -}}

{{/* The kubelet Service "<namespace>/<name>" the operator maintains. */}}
{{- define "upmon-monitoring.kubeletService" -}}
{{- $k := .Values.prometheusOperator.kubeletService -}}
{{- printf "%s/%s" $k.namespace (default (printf "%s-kubelet" (include "upmon-monitoring.fullname" .)) $k.name) -}}
{{- end -}}

{{/* <repository>:<tag> of an image value. */}}
{{- define "upmon-monitoring.image" -}}
{{- printf "%s:%s" .repository .tag -}}
{{- end -}}

{{/*
Pod and container security that passes the "restricted" Pod Security Standard.
Call with the uid: (dict "uid" 65534 "fsGroup" true).
*/}}
{{- define "upmon-monitoring.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
{{- if .fsGroup }}
fsGroup: {{ .uid }}
fsGroupChangePolicy: OnRootMismatch
{{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "upmon-monitoring.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
The label selector of the Prometheus's ServiceMonitors, PodMonitors, Probes, ScrapeConfigs
and PrometheusRules: release=<label>.
*/}}
{{- define "upmon-monitoring.releaseSelector" -}}
matchLabels:
  release: {{ include "upmon-monitoring.releaseLabel" . | quote }}
{{- end -}}

{{/* Their namespace selector: {} (every watched namespace) or the release namespace. */}}
{{- define "upmon-monitoring.namespaceSelector" -}}
{{- if eq .Values.prometheus.namespaceScope "release" -}}
matchLabels:
  kubernetes.io/metadata.name: {{ .Release.Namespace | quote }}
{{- else -}}
{}
{{- end -}}
{{- end -}}

{{/* A volumeClaimTemplate or an emptyDir for the operator's `storage` field. Call with the storage value. */}}
{{- define "upmon-monitoring.storage" -}}
{{- if .enabled -}}
volumeClaimTemplate:
  spec:
    {{- with .storageClassName }}
    storageClassName: {{ . | quote }}
    {{- end }}
    accessModes: [ReadWriteOnce]
    resources:
      requests:
        storage: {{ .size | quote }}
{{- else -}}
emptyDir:
  sizeLimit: {{ .size | quote }}
{{- end -}}
{{- end -}}

{{/*
Name of a cluster-scoped object of the release (ClusterRole, ClusterRoleBinding): the
namespace is part of it, so equal release names in two namespaces do not collide.
Call with (dict "ctx" $ "name" "operator").
*/}}
{{- define "upmon-monitoring.clusterName" -}}
{{- printf "%s-%s-%s" .ctx.Release.Namespace (include "upmon-monitoring.fullname" .ctx) .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
What the operator needs in each namespace it watches, for the Prometheus and Alertmanager
controllers (its PrometheusAgent and ThanosRuler controllers get nothing and stay off: the
operator checks its permissions at start and disables a controller it cannot run). Upstream's
ClusterRole grants "*" on these; the verbs below are the ones v0.85.0's code calls.
*/}}
{{- define "upmon-monitoring.operator.rules" -}}
# The workloads it reconciles: read them, write their status (server-side apply of /status).
- apiGroups: [monitoring.coreos.com]
  resources: [prometheuses, alertmanagers]
  verbs: [get, list, watch]
- apiGroups: [monitoring.coreos.com]
  resources: [prometheuses/status, alertmanagers/status]
  verbs: [get, update, patch]
# Owner references with blockOwnerDeletion on what it creates (OwnerReferencesPermissionEnforcement).
- apiGroups: [monitoring.coreos.com]
  resources: [prometheuses/finalizers, alertmanagers/finalizers]
  verbs: [update]
# The configuration resources: read only.
- apiGroups: [monitoring.coreos.com]
  resources: [servicemonitors, podmonitors, probes, scrapeconfigs, prometheusrules, alertmanagerconfigs]
  verbs: [get, list, watch]
# The StatefulSets it makes from the resources (deleted when their shape must change).
- apiGroups: [apps]
  resources: [statefulsets]
  verbs: [get, list, watch, create, update, delete]
# Generated configuration (config, web config, TLS assets Secrets; rule ConfigMaps), and the
# Secrets/ConfigMaps the resources reference.
- apiGroups: [""]
  resources: [configmaps, secrets]
  verbs: [get, list, watch, create, update, delete]
# The governing Services prometheus-operated and alertmanager-operated.
- apiGroups: [""]
  resources: [services]
  verbs: [get, create, update, delete]
# Rollout status of its StatefulSets (it lists their pods; it never deletes one).
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
{{- end -}}

{{/* What the Prometheus reads to discover targets and the Alertmanager (prometheus-role.yaml). */}}
{{- define "upmon-monitoring.prometheus.rules" -}}
- apiGroups: [""]
  resources: [services, endpoints, pods]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get]
{{- end -}}
