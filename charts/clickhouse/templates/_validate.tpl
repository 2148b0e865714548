{{/*
Checks across values that values.schema.json cannot state with a clear message. Included by
clickhousecluster.yaml; a failure stops rendering with the message.
*/}}
{{- define "upmon-clickhouse.validate" -}}
{{- $co := .Values.cluster.coordination -}}
{{- if .Values.zookeeper.enabled -}}
{{- if $co.nodes -}}
{{- fail "cluster.coordination.nodes is set, but zookeeper.enabled=true uses the chart's own ZooKeeper pods: set zookeeper.enabled=false to use your own ensemble, or remove cluster.coordination.nodes" -}}
{{- end -}}
{{- if ne $co.kind "zookeeper" -}}
{{- fail (printf "cluster.coordination.kind=%s, but the chart's own ensemble (zookeeper.enabled=true) is ZooKeeper: set kind zookeeper, or zookeeper.enabled=false with cluster.coordination.nodes" $co.kind) -}}
{{- end -}}
{{- else if and .Values.cluster.enabled (not $co.nodes) -}}
{{- fail "zookeeper.enabled=false needs cluster.coordination.nodes: the ZooKeeper or ClickHouse Keeper servers, e.g. [{host: zk-0.zk.example.svc.cluster.local, port: 2181}]" -}}
{{- end -}}
{{- end -}}
