/*
 * analyzer — one analysis cycle of upmon-analyzer (design.md §4).
 *
 * A cycle reads the rollups (never raw history: per-minute sums from
 * events_1s, quantile and uniq states of the current windows, the attempts
 * that went live in the last hour, per-company minute and day rollups),
 * builds the control charts and seller scores, publishes them as gauges and
 * writes them to upmon.analyzer_stats / upmon.seller_scores.
 *
 * Threading: analyzer_cycle runs on the leader-work thread; publication
 * into the registry happens under the caller's gate (see publish_fn), so a
 * standby never exports statistics: analyzer_clear removes every statistic
 * series and may be called from another thread while no cycle publishes.
 */
#ifndef UPMON_ANALYZER_ANALYZER_H
#define UPMON_ANALYZER_ANALYZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "upmon/clickhouse.h"
#include "upmon/config.h"
#include "upmon/prom.h"

struct an_config {
    int64_t cycle_ms;
    char *clock; /* "wall" | "data" */
    int64_t settle_ms;
    int64_t max_segments;
    int64_t min_tries;
    int64_t baseline_weeks;
    int64_t baseline_refresh_ms;
    int64_t min_baseline_points;
    double limit_sigmas;
    double ewma_lambda;
    double min_effect;
    int64_t top_k;
    double seller_alert_score;
    double seller_reason_z;
    double seller_prior_tries;
    int64_t seller_min_tries;
    int64_t attempt_horizon_ms;
    bool write_results;
};

extern const struct upm_config_key an_config_keys[];
extern const size_t an_config_nkeys;

struct analyzer;

/*
 * Gate for publication: called with publish = true before a cycle touches
 * the registry and false after; returns false when the cycle must not
 * publish (leadership lost meanwhile). The gate holds whatever lock makes
 * publication and analyzer_clear mutually exclusive.
 */
typedef bool (*an_gate_fn)(void *opaque, bool enter);

struct analyzer *analyzer_create(const struct an_config *cfg, const struct upm_ch_config *ch,
                                 struct upm_prom_registry *reg, an_gate_fn gate, void *gate_opaque,
                                 const volatile int *stop, char *errstr, size_t errstr_size);
void analyzer_destroy(struct analyzer *an);

/* One cycle. 0 ok (also "no data yet"), -1 failed (logged, counted). */
int analyzer_cycle(struct analyzer *an);

/* Remove every statistic series (a standby exports none). Call inside the
 * gate's lock, never concurrently with a publishing cycle. */
void analyzer_clear(struct analyzer *an);

/*
 * A standby's step: keep the in-memory history current (trailing minutes,
 * weekly slots, new sellers, and once a minute the attempt sketches) without
 * publishing anything, so that a new leader's first cycle has only the
 * current windows to read. 0 or -1.
 */
int analyzer_warm(struct analyzer *an);

#endif
