{{/*
Names and labels. Every template name starts with "upmon-clickhouse." because template names
are global across a parent chart and its sub-charts (charts/upmon includes this one).
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "upmon-clickhouse.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The prefix of every object's name: fullnameOverride, else "<release>-<name>", else the release
name alone when it already contains the name. Truncated to 63 (a DNS label).
*/}}
{{- define "upmon-clickhouse.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "name-version" for the helm.sh/chart label. */}}
{{- define "upmon-clickhouse.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Selector labels of one component. Call with (dict "ctx" $ "component" "operator").
These never change after install: a Deployment's or StatefulSet's selector is immutable.
*/}}
{{- define "upmon-clickhouse.selectorLabels" -}}
app.kubernetes.io/name: {{ include "upmon-clickhouse.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* All standard labels of one component. Call like selectorLabels. */}}
{{- define "upmon-clickhouse.labels" -}}
{{ include "upmon-clickhouse.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: upmon
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ include "upmon-clickhouse.chart" .ctx }}
{{- end -}}

{{/* Operator object names. */}}
{{- define "upmon-clickhouse.operator.fullname" -}}
{{- printf "%s-operator" (include "upmon-clickhouse.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The Lease the operator replicas elect their leader with (the Role names it too). */}}
{{- define "upmon-clickhouse.operator.leaseName" -}}
{{- include "upmon-clickhouse.operator.fullname" . -}}
{{- end -}}

{{- define "upmon-clickhouse.operator.image" -}}
{{- printf "%s:%s" .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag) -}}
{{- end -}}

{{/* ZooKeeper object names. */}}
{{- define "upmon-clickhouse.zookeeper.fullname" -}}
{{- printf "%s-zookeeper" (include "upmon-clickhouse.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "upmon-clickhouse.zookeeper.headless" -}}
{{- printf "%s-zookeeper-headless" (include "upmon-clickhouse.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* DNS name of ZooKeeper pod N (0-based): <pod>.<headless>.<ns>.svc.<clusterDomain>. Call with (dict "ctx" $ "i" N). */}}
{{- define "upmon-clickhouse.zookeeper.host" -}}
{{- printf "%s-%d.%s.%s.svc.%s" (include "upmon-clickhouse.zookeeper.fullname" .ctx) (int .i) (include "upmon-clickhouse.zookeeper.headless" .ctx) .ctx.Release.Namespace .ctx.Values.clusterDomain -}}
{{- end -}}

{{- define "upmon-clickhouse.zookeeper.image" -}}
{{- printf "%s:%s" .Values.zookeeper.image.repository .Values.zookeeper.image.tag -}}
{{- end -}}

{{/* The ClickHouseCluster's name. */}}
{{- define "upmon-clickhouse.cluster.name" -}}
{{- default (include "upmon-clickhouse.fullname" .) .Values.cluster.name -}}
{{- end -}}

{{/* The Secret holding the upmon user's password, and its key. */}}
{{- define "upmon-clickhouse.users.secretName" -}}
{{- default (printf "%s-users" (include "upmon-clickhouse.fullname" .)) .Values.cluster.users.upmon.existingSecret -}}
{{- end -}}

{{- define "upmon-clickhouse.users.secretKey" -}}
{{- if .Values.cluster.users.upmon.existingSecret -}}
{{- .Values.cluster.users.upmon.existingSecretKey -}}
{{- else -}}
upmon-password
{{- end -}}
{{- end -}}

{{/*
Pod and container security that passes the "restricted" Pod Security Standard.
Call with the uid/gid: (dict "uid" 10001 "fsGroup" false).
*/}}
{{- define "upmon-clickhouse.podSecurityContext" -}}
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

{{- define "upmon-clickhouse.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
Preferred pod anti-affinity across nodes for one component, used when the component's
affinity value is empty. Call like selectorLabels.
*/}}
{{- define "upmon-clickhouse.spreadAffinity" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "upmon-clickhouse.selectorLabels" . | nindent 12 }}
{{- end -}}
