/*
 * stats — the analyzer's statistics, as pure functions (design.md §4).
 *
 * No I/O, no allocation unless stated, no clock: everything here is a
 * function of its arguments so that it is unit-tested exactly.
 * NaN means "not available" throughout (an empty sample, n = 0); callers
 * export nothing for a NaN rather than a misleading 0.
 */
#ifndef UPMON_ANALYZER_STATS_H
#define UPMON_ANALYZER_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* 1.4826 · MAD estimates σ for normal data. */
#define AN_MAD_SCALE 1.4826

/* Median of v[0..n) (v is reordered in place). NaN when n == 0. NaNs in v
 * are ignored (moved out of the way, not counted). */
double an_median(double *v, size_t n);

/*
 * Robust location and scale of a baseline sample: centre = median,
 * sigma = 1.4826 · MAD. When MAD is 0 (more than half the sample equal),
 * sigma falls back to 1.253314 · the mean absolute deviation around the
 * median, and if that is 0 too, sigma is 0 (a constant series). tmp must
 * hold n doubles (scratch). Returns the number of finite values used;
 * centre/sigma NaN when it is 0.
 */
size_t an_robust(const double *v, size_t n, double *tmp, double *centre, double *sigma);

struct an_limits {
    double centre;
    double sigma; /* σ of one plotted point */
    double lcl;   /* centre − k·sigma (clamped to the statistic's range) */
    double ucl;   /* centre + k·sigma */
};

/*
 * p-chart for a proportion with n trials in the plotted point and baseline
 * proportion pbar: sigma = σz · √(pbar(1−pbar)/n), limits pbar ± k·sigma
 * clamped to [0, 1]. σz is Laney's over-dispersion factor (1 = the classic
 * p-chart; see an_laney_sigma_z). NaN limits when n <= 0 or pbar is NaN.
 * pbar of exactly 0 or 1 gives sigma 0 (every point outside is a signal).
 */
struct an_limits an_p_chart(double pbar, double n, double sigma_z, double k);

/*
 * Laney's σz from baseline points (x[i] successes... here failures, of
 * n[i] trials): z_i = (p_i − pbar)/√(pbar(1−pbar)/n_i), σz = mean moving
 * range of z / 1.128. Points with n[i] <= 0 are skipped. Returns σz, never
 * below 1 (under-dispersion is not used to tighten limits), or 1 when there
 * are fewer than 2 usable points. *pbar_out (may be NULL) receives
 * Σx/Σn (NaN when Σn == 0).
 */
double an_laney_sigma_z(const double *x, const double *n, size_t npoints, double *pbar_out);

/*
 * X̄ (individuals) limits from a robust baseline: centre ± k·sigma, lcl
 * clamped at lower_bound (0 for rates and times; -INFINITY for none).
 */
struct an_limits an_xbar_limits(double centre, double sigma, double k, double lower_bound);

/*
 * EWMA: z_t = λ x_t + (1−λ) z_{t−1}, starting at z_0 = centre. Limits at
 * step t (1-based, t = number of points folded in):
 *   centre ± k·sigma·√(λ/(2−λ) · (1 − (1−λ)^(2t)))
 * an_ewma folds xs[0..n) (oldest first; NaN points are skipped: the EWMA
 * holds) and returns the last z; *limits (may be NULL) gets the limits at
 * the last step (lcl clamped at lower_bound). NaN when centre is NaN or
 * λ is outside (0, 1].
 */
double an_ewma(const double *xs, size_t n, double lambda, double centre, double sigma, double k,
               double lower_bound, struct an_limits *limits);

/*
 * Western Electric rules on the latest point of a chart. xs[0..n) are the
 * plotted points, oldest first; the last is the point judged. The rules are
 * evaluated on the standardised values (x − centre)/sigma (sigma > 0):
 *   1: the last point beyond 3σ;
 *   2: 2 of the last 3 beyond 2σ on the same side (the last point among them);
 *   3: 4 of the last 5 beyond 1σ on the same side (the last point among them);
 *   4: the last 8 points on the same side of the centre.
 * NaN points break runs (a missing window is not evidence): each rule sees
 * only the points after the last NaN, and a NaN last point is not judged.
 * Bit r−1 of the result is set when rule r holds; *direction (may be NULL)
 * is +1 when the violations are above the centre, −1 below, 0 none (every
 * rule needs the last point on its side, so the rules cannot disagree).
 * sigma <= 0 or NaN: 0 (no judgement without limits).
 */
unsigned an_western_electric(const double *xs, size_t n, double centre, double sigma,
                             int *direction);

/* A seller's figures, now and in its baseline. */
struct an_seller {
    uint64_t company_id;
    /* the last hour */
    double events;    /* all events */
    double tries;     /* SAVE + ERROR events */
    double errors;    /* ERROR events */
    double ft_n;      /* successful events with a full time */
    double ft_sum_ms; /* Σ full time, ms */
    /* own baseline: the last 30 days (excluding today) */
    double base_days;   /* days with activity (0 = new seller) */
    double base_events; /* Σ events over those days */
    double base_tries;
    double base_errors;
    double base_ft_n;
    double base_ft_sum_ms;
    double base_ft_sumsq_ms;
    /*
     * What the seller's segments did meanwhile, so that its own baseline is
     * compared with what it would be now had nothing happened to the seller
     * itself (difference in differences): a platform- or origin-wide
     * incident moves every seller there and is the charts' business, not a
     * seller anomaly. shift_logit is added to the log-odds of the baseline
     * failure rate; latency_ratio multiplies the baseline full time. 0 and 1
     * (or NaN) = no adjustment.
     */
    double shift_logit;
    double latency_ratio;
};

/*
 * Absolute floor on the drift of a seller's own failure rate (2 percentage
 * points): an hour's rate wanders from the 30-day one by more than the
 * binomial noise of a big seller's tries, so without the floor a seller
 * with 10^5 tries/h alarms on a move of a few tenths of a point.
 */
#define AN_SELLER_FAILURE_FLOOR 0.02
/* Days of history before the volume is judged: a shorter one has not seen
 * each hour of the day (or of the week) enough to give an hourly level. */
#define AN_SELLER_VOLUME_MIN_DAYS 7
/* Relative floor on the volume's σ (50 % of the hourly level): the λ used
 * is a daily mean, and the day/night swing around it is not an anomaly. */
#define AN_SELLER_VOLUME_REL 0.5
/* Successes the last hour needs before its mean full time is judged: full
 * times are log-normal, and the mean of a handful is mostly its tail. */
#define AN_SELLER_LATENCY_MIN_N 30
/* Relative floor on the latency's σ (20 % of the baseline mean): load and
 * time of day move a seller's mean full time by more than the standard
 * error of an hour's mean. */
#define AN_SELLER_LATENCY_REL 0.2

/* Peers: all sellers in the same hour (the marketplace as a whole). */
struct an_peers {
    double tries;
    double errors;
    /* Between-seller σ of the failure rate (an_peer_spread over the scored
     * sellers); 0 = unknown, and the peer test is the plain binomial one. */
    double spread;
};

/*
 * The between-seller spread of failure rates: 1.4826 · MAD of
 * rates[0..n) (robust to the few failing sellers the score is looking
 * for). Non-finite rates are skipped. Returns 0 (unknown) when fewer than
 * 5 rates remain: a spread from a handful of sellers is not one. The MAD
 * is used as is, so more than half the sellers sharing one rate (all at
 * 0 %, say) gives 0 as well. tmp must hold n doubles (scratch); rates is
 * not modified.
 */
double an_peer_spread(const double *rates, size_t n, double *tmp);

enum an_reason {
    AN_REASON_FAILURE_OWN = 1u << 0,   /* failure rate vs its own baseline */
    AN_REASON_FAILURE_PEERS = 1u << 1, /* failure rate vs the peers now */
    AN_REASON_VOLUME_OWN = 1u << 2,    /* volume vs its own baseline (up or down) */
    AN_REASON_LATENCY_OWN = 1u << 3,   /* mean full time vs its own baseline */
};

/* Stable reason names for metrics and tables ("failure_rate_vs_own", …). */
const char *an_reason_name(enum an_reason r);

/*
 * Score a seller: the largest of four z-scores (each ≥ 0 counts only in
 * the direction that hurts, except volume, which counts both ways). Each
 * σ adds to the sampling noise a floor for the variation that real
 * sellers show without anything being wrong:
 *   failure vs own:   (p − p0)/√(p0(1−p0)/tries + F²), F =
 *                     AN_SELLER_FAILURE_FLOOR; p0 = own baseline rate
 *                     shrunk toward the peers' rate with prior_tries
 *                     pseudo-tries (a new seller is judged against peers);
 *   failure vs peers: (p − pp)/√(pp(1−pp)/tries + spread²), spread from
 *                     peers->spread (0: the binomial term alone);
 *   volume vs own:    |events − λ|/√(λ + (R·λ)²) with λ =
 *                     base_events/(base_days·24), R = AN_SELLER_VOLUME_REL
 *                     (skipped below AN_SELLER_VOLUME_MIN_DAYS days of
 *                     history). The floor caps a drop: events = 0 gives
 *                     λ/√(λ + R²λ²) < 1/R = 2, so a seller that stops
 *                     sending never scores 2 or more on volume;
 *   latency vs own:   (m − m0)/√(s0²/ft_n + (L·m0)²) with m0, s0 from
 *                     the baseline, L = AN_SELLER_LATENCY_REL (skipped
 *                     without ≥ 2 baseline successes).
 * A component without a reference (no p0, no pp, or pp of 0 or 1 with
 * spread 0: a σ of 0) is skipped. Sellers with fewer than min_tries tries
 * get score 0 (too little evidence). *reasons receives every component
 * whose z ≥ reason_z. Returns the score.
 */
double an_seller_score(const struct an_seller *s, const struct an_peers *peers, double prior_tries,
                       double min_tries, double reason_z, unsigned *reasons);

#endif
