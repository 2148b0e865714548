{{/*
Checks across values that values.schema.json cannot state with a clear message, and the
checks against what is already installed (lookup; `helm template` and client-side dry runs
see nothing installed and skip those). Included by configmap.yaml; a failure stops rendering
with the message.
*/}}
{{- define "upmon-kafka.validate" -}}
{{- $n := int .Values.replicas -}}
{{- $k := .Values.kafka -}}
{{- if and $k.clusterId $k.existingClusterIdSecret -}}
{{- fail "kafka.clusterId and kafka.existingClusterIdSecret are both set: the cluster id comes from one place; put it in the Secret, or unset kafka.existingClusterIdSecret" -}}
{{- end -}}
{{- $managed := list "process.roles" "node.id" "broker.id" "controller.quorum.voters" "controller.quorum.bootstrap.servers" "listeners" "advertised.listeners" "listener.security.protocol.map" "controller.listener.names" "inter.broker.listener.name" "log.dirs" "log.dir" "metadata.log.dir" "zookeeper.connect" "default.replication.factor" "offsets.topic.replication.factor" "transaction.state.log.replication.factor" "transaction.state.log.min.isr" "min.insync.replicas" -}}
{{- range $key, $_ := $k.config -}}
{{- if has $key $managed -}}
{{- fail (printf "kafka.config.%s: the chart sets %s itself (from replicas and the pods' names); remove it from kafka.config" $key $key) -}}
{{- end -}}
{{- end -}}
{{- $pdb := .Values.podDisruptionBudget -}}
{{- if and $pdb.enabled (gt $n 1) (gt (int $pdb.maxUnavailable) (div (sub $n 1) 2)) -}}
{{- fail (printf "podDisruptionBudget.maxUnavailable=%d would let a drain take %d of %d nodes and with them the controller quorum: use at most %d" (int $pdb.maxUnavailable) (int $pdb.maxUnavailable) $n (div (sub $n 1) 2)) -}}
{{- end -}}
{{- $seen := dict -}}
{{- range $i, $t := .Values.topics -}}
{{- if hasKey $seen $t.name -}}
{{- fail (printf "topics.%d.name: topic %s is listed twice" $i $t.name) -}}
{{- end -}}
{{- $_ := set $seen $t.name true -}}
{{- $rf := int (include "upmon-kafka.topicReplicationFactor" (dict "ctx" $ "topic" $t)) -}}
{{- if gt $rf $n -}}
{{- fail (printf "topics.%d.replicationFactor: %d copies of %s need as many nodes, and replicas is %d" $i $rf $t.name $n) -}}
{{- end -}}
{{- if and $t.config (hasKey $t.config "min.insync.replicas") -}}
{{- $isr := int (include "upmon-kafka.configValue" (index $t.config "min.insync.replicas")) -}}
{{- if gt $isr $rf -}}
{{- fail (printf "topics.%d.config.min.insync.replicas: %d is more than the topic's replication factor %d, so no write with acks=all could succeed" $i $isr $rf) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- /* The voter set is written into every node's storage at format time: a new count would split the quorum. */ -}}
{{- $sts := lookup "apps/v1" "StatefulSet" .Release.Namespace (include "upmon-kafka.fullname" .) -}}
{{- if and $sts $sts.spec -}}
{{- $have := int (default 0 $sts.spec.replicas) -}}
{{- /* 0 = stopped with `kubectl scale --replicas=0`: the upgrade brings the same nodes back. */ -}}
{{- if and (gt $have 0) (ne $have $n) -}}
{{- fail (printf "replicas: the installed cluster has %d nodes and this upgrade asks for %d; the KRaft controller voters are fixed when the nodes' storage is formatted, so the count cannot change in place. Keep replicas=%d, or start a new cluster (the chart's README, \"Changing replicas\")" $have $n $have) -}}
{{- end -}}
{{- end -}}
{{- end -}}
