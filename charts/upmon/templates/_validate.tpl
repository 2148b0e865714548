{{/*
Checks across values that values.schema.json cannot express; rendered by ingest-configmap.yaml,
so `helm template`, `install` and `upgrade` all stop with the message before anything is applied.
*/}}
{{- define "upmon.validate" -}}
{{- if and .Values.monitoring.enabled .Values.releaseLabel -}}
{{- $mon := dig "release" "label" "" .Values.monitoring -}}
{{- if ne (default .Release.Name $mon) .Values.releaseLabel -}}
{{- fail (printf "releaseLabel=%q but the bundled monitoring chart selects release=%q: its Prometheus would not discover upmon's ServiceMonitors and rules. Set monitoring.release.label to the same value, or monitoring.enabled=false when another Prometheus (kube-prometheus-stack) selects on releaseLabel." .Values.releaseLabel (default .Release.Name $mon)) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.simulator.enabled (not .Values.kafka.enabled) (not .Values.externalKafka.brokers) -}}
{{- fail "simulator.enabled needs Kafka: kafka.enabled=true or externalKafka.brokers" -}}
{{- end -}}
{{- end -}}
