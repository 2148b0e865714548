#!/bin/sh
# The topics Job (a Helm post-install and post-upgrade hook): makes every topic of topics.list
# exist as listed. Idempotent, so every upgrade runs it again:
#   missing topic                  -> created with its partitions, replication factor and configs
#   fewer partitions than listed   -> raised to the listed count
#   more partitions than listed    -> kept, with a warning: Kafka cannot decrease partitions
#   another replication factor     -> kept, with a warning: that needs a partition reassignment
#   listed configs                 -> set on the existing topic when they differ (configs no
#                                     longer listed are left on the topic)
# While the nodes are still starting (a fresh install) a pass fails; the whole pass is retried
# every $RETRY_SECONDS until it succeeds, and the Job's activeDeadlineSeconds bounds it all.
# After a pass that changed something, one more describe checks that every topic is there with
# at least its partitions.
#
# topics.list (rendered by the chart): one topic a line, fields separated by spaces:
#   NAME PARTITIONS REPLICATION_FACTOR [KEY=VALUE ...]
# (the chart's schema allows no whitespace in names or config values).
# Environment: KAFKA_BOOTSTRAP (host:port), KAFKA_TOOL (kafka-tool.sh), TOPICS_LIST, RETRY_SECONDS.
set -eu
set -f # config values are split into words, never globbed

here="$(dirname "$0")"
list="${TOPICS_LIST:-$here/topics.list}"
tool="${KAFKA_TOOL:-/etc/upmon-kafka/kafka-tool.sh}"
bootstrap="${KAFKA_BOOTSTRAP:?KAFKA_BOOTSTRAP (host:port of a broker) is required}"
retry="${RETRY_SECONDS:-10}"
tmp="${TMPDIR:-/tmp}"
described="$tmp/topics.described"
tab="$(printf '\t')"

say() { echo "topics: $*" >&2; }

kafka() { sh "$tool" "$@" --bootstrap-server "$bootstrap" </dev/null; }

# Every topic as "NAME PARTITIONS REPLICATION_FACTOR CONFIGS" into $described, from the
# summary lines of `kafka-topics --describe` (Topic: <name> TopicId: ... PartitionCount: <n>
# ReplicationFactor: <n> Configs: k=v,...; tab-separated; partition lines start with a tab).
describe() {
  kafka topics --describe >"$tmp/topics.out" || return 1
  sed -n "s/^Topic: \([^$tab]*\)$tab.*PartitionCount: \([0-9]*\)${tab}ReplicationFactor: \([0-9]*\)${tab}Configs: *\([^$tab]*\).*$/\1 \2 \3 \4/p" \
    "$tmp/topics.out" >"$described"
}

# Looks NAME up in $described: sets cur_parts, cur_rf, cur_configs ("" = no such topic).
lookup() {
  cur_parts="" cur_rf="" cur_configs=""
  while read -r n p r c; do
    if [ "$n" = "$1" ]; then
      cur_parts="$p" cur_rf="$r" cur_configs="$c"
    fi
  done <"$described"
}

# ensure NAME PARTITIONS RF [KEY=VALUE ...]: one topic to its listed state. Sets changed=1
# when it acts; returns 1 when a tool fails.
ensure() {
  name="$1" parts="$2" rf="$3"
  shift 3
  lookup "$name"
  if [ -z "$cur_parts" ]; then
    say "$name: creating, $parts partitions, replication factor $rf${1:+, $*}"
    n=$#
    while [ "$n" -gt 0 ]; do
      set -- "$@" --config "$1"
      shift
      n=$((n - 1))
    done
    kafka topics --create --if-not-exists --topic "$name" --partitions "$parts" \
      --replication-factor "$rf" "$@" || return 1
    changed=1
    return 0
  fi
  if [ "$cur_parts" -lt "$parts" ]; then
    say "$name: raising partitions from $cur_parts to $parts"
    kafka topics --alter --topic "$name" --partitions "$parts" || return 1
    changed=1
  elif [ "$cur_parts" -gt "$parts" ]; then
    say "WARNING: $name has $cur_parts partitions and the values ask for $parts; Kafka cannot decrease partitions, so it keeps $cur_parts"
  fi
  if [ "$cur_rf" != "$rf" ]; then
    say "WARNING: $name has replication factor $cur_rf and the values ask for $rf; not changed (that needs a partition reassignment)"
  fi
  add=""
  for c in "$@"; do
    case ",$cur_configs," in *",$c,"*) continue ;; esac
    # kafka-configs separates settings by commas: a value holding commas goes in brackets.
    case "$c" in *=*,*) c="${c%%=*}=[${c#*=}]" ;; esac
    add="${add:+$add,}$c"
  done
  if [ -n "$add" ]; then
    say "$name: setting $add"
    kafka configs --alter --entity-type topics --entity-name "$name" --add-config "$add" || return 1
    changed=1
  fi
  return 0
}

# One pass over topics.list; returns 1 when anything failed.
pass() {
  describe || return 1
  rc=0
  while read -r line; do
    case "$line" in '' | '#'*) continue ;; esac
    # shellcheck disable=SC2086 # the fields are split on purpose
    set -- $line
    ensure "$@" || rc=1
  done <"$list"
  return "$rc"
}

# Every listed topic exists with at least its partitions (after a pass that changed things).
verify() {
  describe || return 1
  rc=0
  while read -r name parts _; do
    case "$name" in '' | '#'*) continue ;; esac
    lookup "$name"
    if [ -z "$cur_parts" ] || [ "$cur_parts" -lt "$parts" ]; then
      say "$name: not there yet (partitions: ${cur_parts:-none}, listed: $parts)"
      rc=1
    else
      say "$name: $cur_parts partitions, replication factor $cur_rf, configs: ${cur_configs:-(defaults)}"
    fi
  done <"$list"
  return "$rc"
}

say "bootstrap $bootstrap, $(grep -c '^[^#]' "$list" || true) topics, tools in the image's $(sh "$tool" flavour) form"
attempt=1
while :; do
  changed=0
  if pass; then
    if [ "$changed" = 0 ] || verify; then
      say "done: every topic is in place (attempt $attempt)"
      exit 0
    fi
  fi
  say "attempt $attempt did not finish; again in ${retry}s (the Job's activeDeadlineSeconds ends it)"
  attempt=$((attempt + 1))
  sleep "$retry"
done
