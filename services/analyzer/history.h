/*
 * history — per-minute, per-segment counters the analyzer keeps in memory.
 *
 * Every chart point and every baseline sample is a sum of additive
 * per-minute counters (events, errors, Σ full time, …), so the analyzer
 * fetches minutes from the events_1m rollup once, keeps them, and only
 * re-reads the last few minutes each cycle (rows of a recent minute may
 * still be arriving). Tiles of any window length are then sums over
 * minutes, computed here without another query.
 *
 * Segments: index 0 is "all"; others are a (dimension, value) pair —
 * country "RU", origin "upload/ui" — interned on first sight, up to
 * HIST_MAX_SEGMENTS (further values count in "all" only, and are counted
 * in hist_dropped_segments so the overflow is visible).
 *
 * A store holds a set of minutes (sorted); minutes outside any range the
 * caller still needs are evicted with hist_evict_before / hist_clear_range.
 * Not thread-safe: one analyzer thread owns it.
 */
#ifndef UPMON_ANALYZER_HISTORY_H
#define UPMON_ANALYZER_HISTORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HIST_MAX_SEGMENTS 256

enum hist_dim { HIST_DIM_ALL, HIST_DIM_COUNTRY, HIST_DIM_ORIGIN };

/* The additive counters of one minute (or a sum of minutes). */
enum hist_counter {
    HC_EVENTS,
    HC_SAVES,
    HC_UPDATES,
    HC_ERRORS,
    HC_CREATED,
    HC_MEDIA_OWN,
    HC_MEDIA_EXTERNAL,
    HC_MEDIA_BAD,
    HC_FT_N,
    HC_FT_SUM_MS,
    HC_FT_SUMSQ_MS,
    HC_COUNT
};

struct hist_counters {
    double v[HC_COUNT];
};

struct hist_segment {
    enum hist_dim dim;
    char value[72];
};

struct hist;

struct hist *hist_create(void);
void hist_destroy(struct hist *h);

/* Segment index for (dim, value), interning it; 0 for HIST_DIM_ALL; -1 when
 * the table is full (counted). */
int hist_segment(struct hist *h, enum hist_dim dim, const char *value);
/* Index of (dim, value) without interning it; -1 when unknown. */
int hist_find(const struct hist *h, enum hist_dim dim, const char *value);
size_t hist_nsegments(const struct hist *h);
const struct hist_segment *hist_segment_at(const struct hist *h, size_t i);
uint64_t hist_dropped_segments(const struct hist *h);
const char *hist_dim_name(enum hist_dim dim);

/* Forget minutes in [from_min, to_min) (epoch minutes) — before re-reading
 * them — and minutes before `before_min` (eviction). */
void hist_clear_range(struct hist *h, int64_t from_min, int64_t to_min);
void hist_evict_before(struct hist *h, int64_t before_min);

/*
 * Add one rollup row: minute, origin, country and its counters. The row
 * counts in "all", in its country's segment and in its origin's segment.
 */
void hist_add_row(struct hist *h, int64_t minute, const char *origin, const char *country,
                  const struct hist_counters *c);

/*
 * Sum of segment seg over minutes [from_min, to_min) into *out. Returns
 * the number of those minutes present in the store (0 = no data at all for
 * the range, as opposed to a range of quiet minutes that were fetched).
 */
size_t hist_sum(const struct hist *h, size_t seg, int64_t from_min, int64_t to_min,
                struct hist_counters *out);

/* Mark [from_min, to_min) as fetched: minutes there without rows are real
 * zeros, not missing data. */
void hist_mark_fetched(struct hist *h, int64_t from_min, int64_t to_min);

/* Minutes currently held (tests, metrics). */
size_t hist_nminutes(const struct hist *h);

#endif
