{{/*
Names, labels and the settings derived from the node count. Every template name starts with
"upmon-kafka." because template names are global across a parent chart and its sub-charts.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "upmon-kafka.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The prefix of every object's name: fullnameOverride, else "<release>-<name>", else the release
name alone when it already contains the name. Truncated to 63 (a DNS label).
*/}}
{{- define "upmon-kafka.fullname" -}}
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
{{- define "upmon-kafka.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Selector labels of one component: "broker" (the nodes, each a broker and a controller) or
"topics" (the topics Job). Call with (dict "ctx" $ "component" "broker"). These never change
after install: a StatefulSet's selector is immutable.
*/}}
{{- define "upmon-kafka.selectorLabels" -}}
app.kubernetes.io/name: {{ include "upmon-kafka.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* All standard labels of one component. Call like selectorLabels. */}}
{{- define "upmon-kafka.labels" -}}
{{ include "upmon-kafka.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: upmon
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ include "upmon-kafka.chart" .ctx }}
{{- end -}}

{{/* The headless Service that gives each node its stable DNS name. */}}
{{- define "upmon-kafka.headless" -}}
{{- printf "%s-headless" (include "upmon-kafka.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* DNS name of node N (0-based): <pod>.<headless>.<ns>.svc.<clusterDomain>. Call with (dict "ctx" $ "i" N). */}}
{{- define "upmon-kafka.host" -}}
{{- printf "%s-%d.%s.%s.svc.%s" (include "upmon-kafka.fullname" .ctx) (int .i) (include "upmon-kafka.headless" .ctx) .ctx.Release.Namespace .ctx.Values.clusterDomain -}}
{{- end -}}

{{/* controller.quorum.voters: <id>@<host>:9093 for every node; node id = pod ordinal. */}}
{{- define "upmon-kafka.voters" -}}
{{- $voters := list -}}
{{- range $i := until (int .Values.replicas) -}}
{{- $voters = append $voters (printf "%d@%s:9093" $i (include "upmon-kafka.host" (dict "ctx" $ "i" $i))) -}}
{{- end -}}
{{- join "," $voters -}}
{{- end -}}

{{/* The client bootstrap address: the client Service. */}}
{{- define "upmon-kafka.bootstrap" -}}
{{- printf "%s.%s.svc.%s:9092" (include "upmon-kafka.fullname" .) .Release.Namespace .Values.clusterDomain -}}
{{- end -}}

{{/* Replication factor of new topics and of the internal topics: min(3, replicas). */}}
{{- define "upmon-kafka.replicationFactor" -}}
{{- min 3 (int .Values.replicas) -}}
{{- end -}}

{{/* min.insync.replicas (and transaction.state.log.min.isr): 2 with 3 or more nodes, else 1. */}}
{{- define "upmon-kafka.minInsyncReplicas" -}}
{{- if ge (int .Values.replicas) 3 -}}2{{- else -}}1{{- end -}}
{{- end -}}

{{/* A topic's replication factor: its replicationFactor, else the default above. Call with (dict "ctx" $ "topic" T). */}}
{{- define "upmon-kafka.topicReplicationFactor" -}}
{{- if .topic.replicationFactor -}}
{{- int .topic.replicationFactor -}}
{{- else -}}
{{- include "upmon-kafka.replicationFactor" .ctx -}}
{{- end -}}
{{- end -}}

{{/*
A configuration value as Kafka reads it. Numbers from a values file arrive as float64, which
would print as 6.048e+08: whole numbers print as integers, others (0.5) as they are.
*/}}
{{- define "upmon-kafka.configValue" -}}
{{- if and (kindIs "float64" .) (eq (float64 (int64 .)) .) -}}
{{- int64 . -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}

{{- define "upmon-kafka.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The Secret holding the KRaft cluster id, and its key. */}}
{{- define "upmon-kafka.clusterIdSecretName" -}}
{{- default (printf "%s-cluster-id" (include "upmon-kafka.fullname" .)) .Values.kafka.existingClusterIdSecret -}}
{{- end -}}

{{- define "upmon-kafka.clusterIdSecretKey" -}}
{{- if .Values.kafka.existingClusterIdSecret -}}
{{- .Values.kafka.existingClusterIdSecretKey -}}
{{- else -}}
cluster-id
{{- end -}}
{{- end -}}

{{/*
A new KRaft cluster id, as `kafka-storage.sh random-uuid` makes one: 16 random bytes
(crypto/rand) in base64url without padding, 22 characters. randBytes gives standard base64
with padding (24 characters ending in "=="); swapping "+/" for "-_" and dropping the padding
gives the base64url form, so the id decodes to exactly 16 bytes (Kafka's Uuid.fromString).
*/}}
{{- define "upmon-kafka.newClusterId" -}}
{{- randBytes 16 | replace "+" "-" | replace "/" "_" | trimSuffix "==" -}}
{{- end -}}

{{/* Where the chart's scripts and configuration files are mounted (ConfigMap <fullname>). */}}
{{- define "upmon-kafka.chartDir" -}}/etc/upmon-kafka{{- end -}}

{{/*
Pod and container security that passes the "restricted" Pod Security Standard. Both supported
images run Kafka as uid/gid 1000 (apache/kafka's "appuser"; localhost/upmon/kafka's USER).
*/}}
{{- define "upmon-kafka.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 1000
fsGroup: 1000
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "upmon-kafka.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 1000
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Preferred pod anti-affinity across nodes, used when .Values.affinity is empty. */}}
{{- define "upmon-kafka.spreadAffinity" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "upmon-kafka.selectorLabels" (dict "ctx" . "component" "broker") | nindent 12 }}
{{- end -}}

{{/* The topics Job and its ConfigMap. */}}
{{- define "upmon-kafka.topicsName" -}}
{{- printf "%s-topics" (include "upmon-kafka.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
