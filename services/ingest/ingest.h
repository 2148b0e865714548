/*
 * ingest — the upmon-ingest loop: Kafka → validate → per-shard RowBinary
 * blocks → ClickHouse shards, with DLQ for rejected messages and offsets
 * committed only behind stored rows. The guarantee and its reasoning are in
 * docs/ingest.md.
 *
 * One thread runs the loop (the consumer and the DLQ producer belong to
 * it); while a group is inserted, each shard's insert may run on a thread
 * of its own with that shard's ClickHouse client. The registry is shared
 * with the HTTP thread.
 */
#ifndef UPMON_INGEST_INGEST_H
#define UPMON_INGEST_INGEST_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "upmon/clickhouse.h"
#include "upmon/config.h"
#include "upmon/httpd.h"
#include "upmon/kafka.h"
#include "upmon/prom.h"

/* The `ingest` configuration section. */
struct ing_config {
    struct upm_strlist shards; /* per shard: its replicas' URLs joined by '|' */
    char *table;               /* local table on every shard */
    int64_t batch_rows;
    int64_t batch_bytes;
    int64_t batch_age_ms;
    int64_t poll_max; /* messages per poll */
    int64_t retry_backoff_max_ms;
    int64_t shutdown_timeout_ms;
    bool parallel_shards; /* insert a group's shard blocks at once */
    bool check_topology;  /* compare shards with system.clusters at start */
    struct upm_strlist cdn_hosts;
    char *topology_resource;  /* ClickHouseCluster followed; "" = static shards */
    char *topology_namespace; /* "" = $POD_NAMESPACE */
};

extern const struct upm_config_key ing_config_keys[];
extern const size_t ing_config_nkeys;

struct ingest;

/*
 * Build everything (clients, consumer, DLQ producer, metrics) from the
 * loaded sections; nothing is consumed yet. The configs are borrowed until
 * ingest_destroy. stop is the signal flag the loop watches. NULL with
 * errstr on failure.
 */
struct ingest *ingest_create(const struct ing_config *icfg, const struct upm_kafka_config *kcfg,
                             const struct upm_ch_config *ccfg, struct upm_prom_registry *reg,
                             struct upm_httpd *httpd, volatile sig_atomic_t *stop, char *errstr,
                             size_t errstr_size);

/* Run until *stop, then flush what can be flushed within
 * shutdown_timeout, commit, and leave the group. 0 on a clean stop, -1 on a
 * fatal client error. */
int ingest_run(struct ingest *in);

/* Follow a write topology (topology.h) from now on; seen is the generation
 * the shards given to ingest_create came from. Call before ingest_run. */
struct ing_topology;
void ingest_follow_topology(struct ingest *in, struct ing_topology *topo, uint64_t seen);

/* NULL-safe; safe on a half-built ingest. */
void ingest_destroy(struct ingest *in);

#endif
