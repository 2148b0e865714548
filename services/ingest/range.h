/*
 * range — the unit of work of upmon-ingest: a contiguous run of offsets of
 * one source partition, [start, end), turned into one RowBinary block per
 * ClickHouse shard.
 *
 * Why ranges (docs/ingest.md): ReplicatedMergeTree drops a block it has
 * already stored only when the retry is byte-identical. Blocks are built
 * from exactly the messages of one range, in offset order, so a range's
 * blocks are a pure function of (partition, start, end). Before any block of
 * a range is inserted, its end is recorded durably in the metadata of the
 * partition's committed offset (start); a consumer that restarts from start
 * reads that end and rebuilds the same range, hence the same blocks.
 *
 * Not thread-safe: a range belongs to the ingest loop.
 */
#ifndef UPMON_INGEST_RANGE_H
#define UPMON_INGEST_RANGE_H

#include <stddef.h>
#include <stdint.h>

#include "upmon/buf.h"
#include "upmon/event.h"

struct ing_limits {
    size_t max_rows;    /* valid rows in a range (all shards) */
    size_t max_bytes;   /* RowBinary bytes in a range (all shards) */
    int64_t max_age_ns; /* since the range's first message was consumed */
};

enum ing_cut {
    ING_CUT_NONE = 0,
    ING_CUT_RECORDED, /* reached the end recorded by an earlier owner */
    ING_CUT_ROWS,
    ING_CUT_BYTES,
    ING_CUT_AGE,
    ING_CUT_FINAL, /* shutdown */
};

struct ing_range {
    int32_t partition;
    uint32_t nshards;
    int64_t start;        /* committed offset the range begins at */
    int64_t next;         /* offset after the last message added; == start when empty */
    int64_t recorded_end; /* end recorded by an earlier owner, -1 = none: cut freely */
    size_t nmsgs;         /* messages added (valid and rejected) */
    size_t nvalid;
    size_t bytes;           /* RowBinary bytes over all shards */
    int64_t first_ns;       /* monotonic time of the first message, 0 when empty */
    struct upm_buf *blocks; /* [nshards] RowBinary */
    size_t *shard_rows;     /* [nshards] */
    int64_t *ts_ns;         /* event times of the valid rows (latency metric) */
    size_t ts_cap;
};

/* Set up an empty range of partition at start. recorded_end -1 = none. */
void ing_range_init(struct ing_range *r, int32_t partition, uint32_t nshards, int64_t start,
                    int64_t recorded_end);
/* Empty the range (keeping its storage) and begin again at start. */
void ing_range_reset(struct ing_range *r, int64_t start, int64_t recorded_end);
/* Free the storage. Safe on a zeroed range and twice. */
void ing_range_free(struct ing_range *r);

/*
 * Add the message at offset: ev NULL for a rejected message (it only moves
 * the range on), else its row goes to shard sipHash64(attempt_id) % nshards.
 * Returns 0 when added; 1 when the message lies at or beyond recorded_end
 * (the caller finishes this range first, then adds it to the next one);
 * -1 when offset is below next (a replayed or out-of-order message: the
 * caller's view of the partition is stale and it must start over).
 */
int ing_range_add(struct ing_range *r, const struct upm_event *ev, int64_t offset, int64_t now_ns);

/* Whether the range must be cut now: with a recorded end, only once it has
 * reached it (never earlier, whatever the limits); otherwise by rows, bytes,
 * or age, in that order. An empty range is never cut. */
enum ing_cut ing_range_cut(const struct ing_range *r, const struct ing_limits *lim, int64_t now_ns);

const char *ing_cut_name(enum ing_cut cut);

/* The offset-commit metadata recording a cut: "upmon-ingest/1 end=E shards=N".
 * 0, or -1 if out is too small. */
int ing_meta_format(char *out, size_t size, int64_t end, uint32_t nshards);
/* 0 with *end and *nshards set; 1 when s is empty or not ours (no cut
 * recorded); -1 when it is ours but malformed. */
int ing_meta_parse(const char *s, int64_t *end, uint32_t *nshards);

#endif
