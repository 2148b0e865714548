/*
 * drain — move a departing shard's rows onto the shards that stay, exactly.
 *
 * One call does one unit of work and records it in *d (which the controller
 * writes to the resource's status before the next call), so a new leader
 * resumes where the last recorded unit ended:
 *   1. wait drain_grace after the write topology dropped the shards (ingest
 *      finishes the groups it recorded under the old topology);
 *   2. stop merges on the departing servers, so a (table, partition) read
 *      twice gives the same rows in the same order, hence the same bytes;
 *   3. per (table, partition) of a departing shard, after SYSTEM SYNC REPLICA:
 *      per chunk (a hash range fixed when the partition starts) and per
 *      staying shard, read the rows routed there (sipHash64(attempt_id) %
 *      staying, like the Distributed tables; rollup-only tables go whole to
 *      one shard) as RowBinary and insert them into that shard's *_local
 *      table (not through events_in: the rollups are moved, not recomputed,
 *      so rollups whose raw rows retention already dropped move too). A unit
 *      redone after a crash sends identical bytes and the shard's block
 *      deduplication drops them (replicated_deduplication_window);
 *   4. when every chunk is in, DROP PARTITION on the departing shard;
 *   5. nothing left: wait drain_grace again for stragglers, then report
 *      finished (the controller removes the shards from remote_servers).
 * Queries through the Distributed tables count the partition being moved
 * twice from its first chunk's insert to its drop (seconds per partition);
 * docs/operator.md bounds it.
 */
#ifndef UPMON_OPERATOR_DRAIN_H
#define UPMON_OPERATOR_DRAIN_H

#include <stdint.h>

#include "chops.h"
#include "spec.h"

enum op_drain_result {
    OP_DRAIN_PROGRESS = 0, /* a unit was done: record *d, call again */
    OP_DRAIN_WAIT = 1,     /* nothing to do yet: call again after *wait_ms */
    OP_DRAIN_DONE = 2,     /* empty and quiet: remove the shards */
    OP_DRAIN_ERROR = -1,
};

/* now_s: wall clock (status times are RFC 3339). msg receives what was done. */
enum op_drain_result op_drain_step(const struct op_ch *ch, struct chc_drain *d, int64_t now_s,
                                   int64_t grace_ms, int64_t chunk_rows, int64_t *wait_ms,
                                   char *msg, size_t msg_size);

/* RFC 3339 (UTC, seconds) <-> epoch seconds; parse returns -1 on a bad time. */
void op_time_format(int64_t epoch_s, char *out, size_t size);
int64_t op_time_parse(const char *s);

/* The WHERE clause selecting partition_id of a table partitioned by day
 * (YYYYMMDD: event_date) or month (YYYYMM: toYYYYMM(day)). -1 otherwise. */
int op_partition_where(const char *partition_id, char *out, size_t size);

#endif
