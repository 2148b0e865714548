/*
 * attempts — per-minute, per-segment sketches of the attempts that went
 * live, kept in memory by the analyzer.
 *
 * An attempt belongs to the minute of its first creating event. Its figures
 * (attempt time, tries) never change once all its events are stored, so the
 * analyzer reads each minute's attempts once (plus a re-read of the last few
 * minutes, whose rows may still be arriving) instead of the whole hour every
 * cycle: the lookup of an attempt's earlier events costs a scan of
 * attempt_horizon of attempt_events whatever the number of attempts looked
 * up, and the hour's worth of them made that scan's set probes and the
 * per-attempt aggregation the largest query of the cycle.
 *
 * Each (minute, segment) keeps exact sums (count, Σt, Σt², Σtries, first-try
 * count) and a sparse histogram of attempt time over logarithmic buckets
 * (ratio ATT_RATIO from ATT_T0 seconds) with each bucket's count and Σt.
 * Window figures: mean, σ, mean tries and first-try share are exact; a
 * quantile is the mean of the bucket holding its rank (the nearest-rank
 * element lies in that bucket, so the error is below the bucket's width,
 * 4 %, and usually far less); the share beyond a threshold counts whole
 * buckets above it and the threshold's own bucket pro rata (log-linear).
 *
 * Segments are the history's indices (0 = all). Not thread-safe.
 */
#ifndef UPMON_ANALYZER_ATTEMPTS_H
#define UPMON_ANALYZER_ATTEMPTS_H

#include <stddef.h>
#include <stdint.h>

#define ATT_T0      0.01 /* seconds: bucket 0 holds everything up to here */
#define ATT_RATIO   1.04
#define ATT_BUCKETS 512 /* the last bucket is open-ended (above ~130 days) */

/* The same bucket function as SQL text (argument: the attempt time in
 * seconds as an expression), so that ClickHouse bins rows as att_bucket
 * would. Written into buf; returns buf. */
const char *att_bucket_sql(char *buf, size_t n, const char *t_expr);
int att_bucket(double t_s);
/* Bounds of bucket b in seconds: [low, high). */
double att_bucket_low(int b);
double att_bucket_high(int b);

struct att_store;

struct att_store *att_create(void);
void att_destroy(struct att_store *a);

/* Forget minutes in [from_min, to_min) before re-reading them, and minutes
 * before before_min (eviction). */
void att_clear_range(struct att_store *a, int64_t from_min, int64_t to_min);
void att_evict_before(struct att_store *a, int64_t before_min);

/* One aggregated row: the attempts of one minute and segment whose time
 * fell in bucket b, with their sums. Repeated rows add up. Returns -1 for a
 * bucket or segment out of range (nothing added). */
struct att_row {
    int bucket;
    double n, sum_t, sum_t2, sum_tries, n_first;
};
int att_add(struct att_store *a, int64_t minute, size_t seg, const struct att_row *r);

struct att_window {
    double n;        /* attempts that went live in the window */
    double mean, sd; /* attempt time, s (population σ); NAN without attempts */
    double q[3];     /* p50, p95, p99, s */
    double tries;    /* mean tries */
    double first;    /* share live at the first try */
    double beyond;   /* share with attempt time > thr; NAN if thr is NAN */
};

/* The attempts of minutes [from_min, to_min) in segment seg. */
void att_window(const struct att_store *a, size_t seg, int64_t from_min, int64_t to_min, double thr,
                struct att_window *out);

#endif
