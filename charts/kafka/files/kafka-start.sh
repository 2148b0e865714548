#!/bin/sh
# The command of every Kafka node (KRaft: one process is both a broker and a controller).
#   1. node.id = this pod's ordinal: the StatefulSet names its pods <name>-<ordinal>, and the
#      controller quorum voters in server.properties are listed by the same ids.
#   2. server.properties = the chart's (rendered into the ConfigMap, beside this script) with
#      @NODE_ID@ and @POD_NAME@ filled in, written to $KAFKA_CONF_DIR (an emptyDir: the root
#      filesystem is read-only).
#   3. The first of log.dirs is formatted once, while it has no meta.properties, with the
#      cluster id from the chart's Secret (KAFKA_CLUSTER_ID). A volume already formatted for
#      another cluster id stops the start here, saying so, instead of Kafka's
#      INCONSISTENT_CLUSTER_ID later.
#   4. exec the broker through kafka-tool.sh, which runs the image's bin/kafka-server-start.sh
#      when it has one and java with $KAFKA_HOME/libs otherwise.
set -eu

here="${KAFKA_CHART_DIR:-$(dirname "$0")}"
confdir="${KAFKA_CONF_DIR:-/var/lib/kafka/config}"

say() { echo "kafka-start: $*" >&2; }

pod="${POD_NAME:-${HOSTNAME:-}}"
id="${pod##*-}"
case "$id" in
  '' | *[!0-9]*)
    say "the pod name '$pod' does not end in -<ordinal>: run me in the chart's StatefulSet"
    exit 2
    ;;
esac

cid="${KAFKA_CLUSTER_ID:-}"
case "$cid" in
  '' | *[!A-Za-z0-9_-]*) ok=no ;;
  *) if [ "${#cid}" -eq 22 ]; then ok=yes; else ok=no; fi ;;
esac
if [ "$ok" != yes ]; then
  say "KAFKA_CLUSTER_ID='$cid' is not a KRaft cluster id (22 characters of base64url): check the cluster id Secret"
  exit 2
fi

conf="$confdir/server.properties"
sed -e "s/@NODE_ID@/$id/g" -e "s/@POD_NAME@/$pod/g" "$here/server.properties" >"$conf.tmp"
mv "$conf.tmp" "$conf"

dirs="$(sed -n 's/^log\.dirs=//p' "$conf" | tail -n 1)"
first="${dirs%%,*}"
if [ -z "$first" ]; then
  say "no log.dirs in $conf"
  exit 2
fi
if [ -f "$first/meta.properties" ]; then
  have="$(sed -n 's/^cluster\.id=//p' "$first/meta.properties" | tail -n 1)"
  if [ "$have" != "$cid" ]; then
    say "$first was formatted for cluster id '$have', but the Secret holds '$cid'."
    say "To keep this data, put '$have' back into the Secret (the chart's README, \"The cluster id\");"
    say "to start this node over, delete its PersistentVolumeClaim (its data is lost)."
    exit 3
  fi
  say "node $id: $first is formatted for cluster $cid"
else
  say "node $id: formatting $dirs for cluster $cid"
  sh "$here/kafka-tool.sh" storage format --ignore-formatted -t "$cid" -c "$conf" </dev/null
fi

say "node $id: starting $pod with the image's $(sh "$here/kafka-tool.sh" flavour) form"
exec sh "$here/kafka-tool.sh" server "$conf"
