{{/*
Names and labels. Every template name starts with "upmon." (template names are global across
this chart and its sub-charts, which use "upmon-clickhouse.", "upmon-kafka.", "upmon-monitoring.").
*/}}

{{- define "upmon.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* fullnameOverride, else "<release>-upmon", else the release name when it contains "upmon". */}}
{{- define "upmon.fullname" -}}
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

{{- define "upmon.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Object name of one component: "<fullname>-<component>". Call with (dict "ctx" $ "component" "ingest"). */}}
{{- define "upmon.componentName" -}}
{{- printf "%s-%s" (include "upmon.fullname" .ctx) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels (immutable after install). Call with (dict "ctx" $ "component" "ingest"). */}}
{{- define "upmon.selectorLabels" -}}
app.kubernetes.io/name: {{ include "upmon.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "upmon.labels" -}}
{{ include "upmon.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: upmon
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ include "upmon.chart" .ctx }}
{{- end -}}

{{/* The `release` label value kube-prometheus-stack (or the bundled monitoring chart) selects on. */}}
{{- define "upmon.releaseLabel" -}}
{{- default .Release.Name .Values.releaseLabel -}}
{{- end -}}

{{/* <repository>:<tag or appVersion> of one service. Call with (dict "ctx" $ "image" .Values.ingest.image). */}}
{{- define "upmon.image" -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/*
Sub-chart object names, as the sub-charts compute them with their default name (the parent
cannot call a sub-chart's template with the sub-chart's values): "<release>-<chart>", or the
release name when it already contains the chart name.
*/}}
{{- define "upmon.subchartFullname" -}}
{{- if contains .chart .ctx.Release.Name -}}
{{- .ctx.Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .ctx.Release.Name .chart | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Kafka bootstrap servers. */}}
{{- define "upmon.kafka.brokers" -}}
{{- if .Values.kafka.enabled -}}
{{- printf "%s.%s.svc.%s:9092" (include "upmon.subchartFullname" (dict "ctx" . "chart" "kafka")) .Release.Namespace .Values.clusterDomain -}}
{{- else -}}
{{- required "externalKafka.brokers is required when kafka.enabled=false" .Values.externalKafka.brokers -}}
{{- end -}}
{{- end -}}

{{/* The ClickHouseCluster ingest follows ("" = none). */}}
{{- define "upmon.clickhouse.resource" -}}
{{- if .Values.clickhouse.enabled -}}
{{- $c := .Values.clickhouse.cluster | default dict -}}
{{- default (include "upmon.subchartFullname" (dict "ctx" . "chart" "clickhouse")) $c.name -}}
{{- else -}}
{{- .Values.externalClickHouse.clusterResource -}}
{{- end -}}
{{- end -}}

{{/* ClickHouse URLs the analyzer reads through, as a YAML flow list. */}}
{{- define "upmon.clickhouse.urls" -}}
{{- if .Values.clickhouse.enabled -}}
{{- list (printf "http://%s.%s.svc.%s:8123" (include "upmon.clickhouse.resource" .) .Release.Namespace .Values.clusterDomain) | toJson -}}
{{- else -}}
{{- required "externalClickHouse.urls is required when clickhouse.enabled=false" .Values.externalClickHouse.urls | toJson -}}
{{- end -}}
{{- end -}}

{{/* The Secret and key of the upmon ClickHouse user's password. */}}
{{- define "upmon.clickhouse.secretName" -}}
{{- if .Values.clickhouse.enabled -}}
{{- $u := dig "cluster" "users" "upmon" "existingSecret" "" (.Values.clickhouse | toYaml | fromYaml) -}}
{{- default (printf "%s-users" (include "upmon.subchartFullname" (dict "ctx" . "chart" "clickhouse"))) $u -}}
{{- else -}}
{{- required "externalClickHouse.passwordSecret.name is required when clickhouse.enabled=false" .Values.externalClickHouse.passwordSecret.name -}}
{{- end -}}
{{- end -}}

{{- define "upmon.clickhouse.secretKey" -}}
{{- if .Values.clickhouse.enabled -}}
{{- $u := dig "cluster" "users" "upmon" "existingSecret" "" (.Values.clickhouse | toYaml | fromYaml) -}}
{{- if $u -}}
{{- dig "cluster" "users" "upmon" "existingSecretKey" "password" (.Values.clickhouse | toYaml | fromYaml) -}}
{{- else -}}
upmon-password
{{- end -}}
{{- else -}}
{{- .Values.externalClickHouse.passwordSecret.key -}}
{{- end -}}
{{- end -}}

{{- define "upmon.clickhouse.setting" -}}
{{- if .ctx.Values.clickhouse.enabled -}}
{{- dig "cluster" .key .default (.ctx.Values.clickhouse | toYaml | fromYaml) -}}
{{- else -}}
{{- index .ctx.Values.externalClickHouse .key -}}
{{- end -}}
{{- end -}}

{{/* The Lease the analyzer replicas elect their leader with (its Role names it too). */}}
{{- define "upmon.analyzer.leaseName" -}}
{{- include "upmon.componentName" (dict "ctx" . "component" "analyzer") -}}
{{- end -}}

{{/* Restricted Pod Security Standard: pod and container parts. */}}
{{- define "upmon.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "upmon.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "upmon.spreadAffinity" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "upmon.selectorLabels" . | nindent 12 }}
{{- end -}}

{{/*
The keys of a service's configuration the chart owns, merged over the user's `config`.
Call with (dict "ctx" $ "component" "ingest" "values" .Values.ingest "own" (dict ...)).
*/}}
{{- define "upmon.serviceConfig" -}}
{{- $cfg := deepCopy (.values.config | default dict) -}}
{{- $own := dict "http" (dict "bind" "0.0.0.0" "port" (int .values.port)) -}}
{{- $cfg = mustMergeOverwrite $cfg $own .own -}}
{{- toYaml $cfg -}}
{{- end -}}
