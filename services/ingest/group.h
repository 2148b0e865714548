/*
 * group — several partitions' ranges stored together, as one RowBinary
 * block per shard, and the commit metadata that records such a cut.
 *
 * Why groups (docs/ingest.md, "Groups"): every block costs the cluster a
 * part in each replicated table its views feed, on every replica, whatever
 * its size. One block per partition and shard made that cost scale with the
 * partition count; a group makes it one block per shard per cut.
 *
 * Why the recorded member list: a block is deduplicated only when rebuilt
 * byte-identically, so whoever finishes a recorded group must rebuild it
 * from exactly the same messages. The cut is recorded before any insert, as
 * the metadata of every member's committed offset (its start), all in one
 * offset commit: "upmon-ingest/2 shards=N p=P:S-E,P:S-E,...", members in
 * ascending partition order. A block is the concatenation, in that order,
 * of each member's block for the shard (range.h builds those in offset
 * order), so it is a pure function of the record.
 *
 * Pure functions; no I/O.
 */
#ifndef UPMON_INGEST_GROUP_H
#define UPMON_INGEST_GROUP_H

#include <stddef.h>
#include <stdint.h>

#include "range.h"
#include "upmon/buf.h"

/* Members per group: keeps the metadata (up to ~50 bytes a member) well
 * under Kafka's default offset.metadata.max.bytes (4096). */
#define ING_GROUP_MAX 48
/* Room for the longest metadata ING_GROUP_MAX members can produce. */
#define ING_GROUP_META_MAX 3072

struct ing_member {
    int32_t partition;
    int64_t start; /* committed offset the member's range begins at */
    int64_t end;   /* offset after its last message */
};

struct ing_group {
    uint32_t nshards;
    size_t n;
    struct ing_member m[ING_GROUP_MAX]; /* ascending partition */
};

enum ing_cut {
    ING_CUT_NONE = 0,
    ING_CUT_RECORDED, /* a cut recorded by an earlier owner, finished on recovery */
    ING_CUT_ROWS,
    ING_CUT_BYTES,
    ING_CUT_AGE,
    ING_CUT_FINAL,    /* shutdown */
    ING_CUT_TOPOLOGY, /* the write topology changed */
};

const char *ing_cut_name(enum ing_cut cut);

/* What cuts a group: its members' totals. */
struct ing_limits {
    size_t max_rows;    /* valid rows (all members, all shards) */
    size_t max_bytes;   /* RowBinary bytes (all members, all shards) */
    int64_t max_age_ns; /* since the group's first message was consumed */
};

/* The open (not yet cut) group's totals, kept by the ingest loop. */
struct ing_totals {
    size_t msgs;
    size_t rows;
    size_t bytes;
    int64_t first_ns; /* monotonic time of the first message, 0 when empty */
};

/* Whether the open group must be cut now: by rows, bytes, or age, in that
 * order. An empty group is never cut. */
enum ing_cut ing_group_cut(const struct ing_totals *t, const struct ing_limits *lim,
                           int64_t now_ns);

/* The metadata recording g. 0, or -1 if out is too small or g is not
 * well-formed (see ing_group_parse). */
int ing_group_format(char *out, size_t size, const struct ing_group *g);

/*
 * Parse the metadata of partition's committed offset: 0 with *g set when
 * it records a cut that includes partition at committed; 1 when s is empty
 * or not ours (no cut recorded); -1 when it is ours but malformed (members
 * not strictly ascending, start > end, too many members, partition absent
 * or recorded at another start). Also reads the single-partition form of
 * earlier versions, "upmon-ingest/1 end=E shards=N" (a group of one member,
 * [committed, E)).
 */
int ing_group_parse(const char *s, int32_t partition, int64_t committed, struct ing_group *g);

/* The member of g for partition, or NULL. */
const struct ing_member *ing_group_member(const struct ing_group *g, int32_t partition);

/* Append the group block of shard: members' blocks[shard] concatenated in
 * the given order (the caller passes them in the group's member order).
 * Returns the rows appended. */
size_t ing_group_block(struct ing_range *const *members, size_t n, uint32_t shard,
                       struct upm_buf *out);

#endif
