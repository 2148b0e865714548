/*
 * range — one source partition's share of a group (group.h): a contiguous
 * run of its offsets, [start, next), turned into one RowBinary block per
 * ClickHouse shard, rows in offset order, each routed to shard
 * sipHash64(attempt_id) % nshards (the Distributed table's rule).
 *
 * A range's blocks are a pure function of (partition, start, end) and the
 * messages there: a consumer that rebuilds a recorded range gets the same
 * bytes, which ReplicatedMergeTree's block deduplication relies on.
 *
 * Not thread-safe: a range belongs to the ingest loop.
 */
#ifndef UPMON_INGEST_RANGE_H
#define UPMON_INGEST_RANGE_H

#include <stddef.h>
#include <stdint.h>

#include "upmon/buf.h"
#include "upmon/event.h"

struct ing_range {
    int32_t partition;
    uint32_t nshards;
    int64_t start; /* committed offset the range begins at */
    int64_t next;  /* offset after the last message added; == start when empty */
    size_t nmsgs;  /* messages added (valid and rejected) */
    size_t nvalid;
    size_t bytes;           /* RowBinary bytes over all shards */
    int64_t first_ns;       /* monotonic time its first message was read (set by the caller) */
    struct upm_buf *blocks; /* [nshards] RowBinary */
    size_t *shard_rows;     /* [nshards] */
    int64_t *ts_ns;         /* event times of the valid rows (latency metric) */
    size_t ts_cap;
};

/* Set up an empty range of partition at start. */
void ing_range_init(struct ing_range *r, int32_t partition, uint32_t nshards, int64_t start);
/* Empty the range (keeping its storage) and begin again at start. */
void ing_range_reset(struct ing_range *r, int64_t start);
/* Free the storage. Safe on a zeroed range and twice. */
void ing_range_free(struct ing_range *r);

/*
 * Add the message at offset: ev NULL for a rejected message (it only moves
 * the range on), else its row goes to its shard. Returns the RowBinary
 * bytes added (0 for a rejected message), or -1 when offset is below next
 * (a replayed or out-of-order message: the caller's view of the partition
 * is stale and it must start over).
 */
long ing_range_add(struct ing_range *r, const struct upm_event *ev, int64_t offset);

#endif
