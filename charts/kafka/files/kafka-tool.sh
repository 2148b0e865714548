#!/bin/sh
# Runs the Kafka broker or one of its command-line tools in whichever form the image has:
#   - $KAFKA_HOME/bin/kafka-*.sh when present (the official apache/kafka image);
#   - else java with the jars in $KAFKA_HOME/libs (localhost/upmon/kafka: jars and java only).
# Usage: kafka-tool.sh COMMAND [ARGS...], e.g.
#   kafka-tool.sh topics --bootstrap-server localhost:9092 --list
#   kafka-tool.sh metadata-quorum --bootstrap-server localhost:9092 describe --status
# COMMAND: server, storage, topics, configs, metadata-quorum, consumer-groups,
# broker-api-versions, features, get-offsets, console-producer, console-consumer, or flavour (prints "scripts" or "java").
# The broker (server) logs with log4j.properties and runs with KAFKA_HEAP_OPTS; the tools log
# warnings only (tools-log4j.properties) and run with KAFKA_TOOL_HEAP_OPTS (default -Xmx256m),
# so a tool run inside a node's container does not claim the broker's heap.
set -eu
set -f # the JVM options below are split into words, never globbed

KAFKA_HOME="${KAFKA_HOME:-/opt/kafka}"
here="$(dirname "$0")"

usage() {
  echo "usage: kafka-tool.sh server|storage|topics|configs|metadata-quorum|consumer-groups|broker-api-versions|features|get-offsets|console-producer|console-consumer|flavour [ARGS...]" >&2
  exit 2
}

[ $# -ge 1 ] || usage
cmd="$1"
shift
case "$cmd" in
  server) script=kafka-server-start.sh class=kafka.Kafka ;;
  storage) script=kafka-storage.sh class=kafka.tools.StorageTool ;;
  topics) script=kafka-topics.sh class=org.apache.kafka.tools.TopicCommand ;;
  configs) script=kafka-configs.sh class=kafka.admin.ConfigCommand ;;
  metadata-quorum) script=kafka-metadata-quorum.sh class=org.apache.kafka.tools.MetadataQuorumCommand ;;
  consumer-groups) script=kafka-consumer-groups.sh class=org.apache.kafka.tools.consumer.group.ConsumerGroupCommand ;;
  broker-api-versions) script=kafka-broker-api-versions.sh class=kafka.admin.BrokerApiVersionsCommand ;;
  features) script=kafka-features.sh class=org.apache.kafka.tools.FeatureCommand ;;
  get-offsets) script=kafka-get-offsets.sh class=org.apache.kafka.tools.GetOffsetShell ;;
  console-producer) script=kafka-console-producer.sh class=kafka.tools.ConsoleProducer ;;
  console-consumer) script=kafka-console-consumer.sh class=org.apache.kafka.tools.consumer.ConsoleConsumer ;;
  flavour) script=kafka-server-start.sh class="" ;;
  *) usage ;;
esac

if [ -x "$KAFKA_HOME/bin/$script" ]; then
  flavour=scripts
elif [ -d "$KAFKA_HOME/libs" ] && command -v java >/dev/null 2>&1; then
  flavour=java
else
  echo "kafka-tool: this image has neither $KAFKA_HOME/bin/$script nor java with $KAFKA_HOME/libs" >&2
  exit 127
fi
if [ "$cmd" = flavour ]; then
  echo "$flavour"
  exit 0
fi

if [ "$cmd" = server ]; then
  KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms512m -Xmx1g}"
  KAFKA_JVM_PERFORMANCE_OPTS="${KAFKA_JVM_PERFORMANCE_OPTS:--server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true}"
  KAFKA_LOG4J_OPTS="-Dlog4j.configuration=file:$here/log4j.properties"
else
  KAFKA_HEAP_OPTS="${KAFKA_TOOL_HEAP_OPTS:--Xmx256m}"
  # A short-lived JVM: the quick compiler and the serial collector start fastest.
  KAFKA_JVM_PERFORMANCE_OPTS="-XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true"
  KAFKA_LOG4J_OPTS="-Dlog4j.configuration=file:$here/tools-log4j.properties"
fi
# kafka-run-class.sh creates LOG_DIR: keep it off the read-only root filesystem (on /tmp, an
# emptyDir). The log4j files above log to the console only, so nothing else is written there.
LOG_DIR="${LOG_DIR:-/tmp/kafka-logs}"
export KAFKA_HEAP_OPTS KAFKA_JVM_PERFORMANCE_OPTS KAFKA_LOG4J_OPTS LOG_DIR

if [ "$flavour" = scripts ]; then
  # Read by kafka-server-start.sh only: its default adds -loggc (GC log files in LOG_DIR).
  export EXTRA_ARGS="-name kafkaServer"
  exec "$KAFKA_HOME/bin/$script" "$@"
fi
# shellcheck disable=SC2086 # the option strings are lists of JVM options
exec java $KAFKA_HEAP_OPTS $KAFKA_JVM_PERFORMANCE_OPTS $KAFKA_LOG4J_OPTS ${KAFKA_OPTS:-} \
  -cp "$KAFKA_HOME/libs/*" "$class" "$@"
