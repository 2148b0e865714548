/* analyzer — one analysis cycle; see analyzer.h and design.md §4. */
#include "analyzer.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "attempts.h"
#include "history.h"
#include "stats.h"
#include "tsv.h"
#include "upmon/alloc.h"
#include "upmon/buf.h"
#include "upmon/clock.h"
#include "upmon/errstr.h"
#include "upmon/log.h"

#define MOD "analyzer"

/* ------------------------------------------------------------------------ */
/* Configuration                                                            */

#define NONE 1, 0 /* no range */
static const char *const clock_choices[] = {"wall", "data", NULL};

#define AOFF(f) offsetof(struct an_config, f)
const struct upm_config_key an_config_keys[] = {
    {"cycle", UPM_CFG_DURATION_MS, AOFF(cycle_ms), "10s", 100, 3600000, NULL,
     "Interval between two analysis cycles of the leader (a cycle that overruns is reported, the "
     "next starts at the following tick).",
     0},
    {"clock", UPM_CFG_ENUM, AOFF(clock), "wall", NONE, clock_choices,
     "What \"now\" is: wall = the wall clock; data = the newest second stored in events_1s (for "
     "simulations running faster than real time).",
     0},
    {"settle", UPM_CFG_DURATION_MS, AOFF(settle_ms), "10s", 0, 86400000, NULL,
     "How far behind \"now\" the analysis runs, so that late rows of a minute have arrived.", 0},
    {"max_segments", UPM_CFG_INT, AOFF(max_segments), "20", 1, 200, NULL,
     "Countries and origins (each) that get charts: the top ones by the last hour's volume.", 0},
    {"min_tries", UPM_CFG_INT, AOFF(min_tries), "50", 1, 1e9, NULL,
     "Tries (SAVE + ERROR events) a window needs before its failure rate is judged.", 0},
    {"baseline_weeks", UPM_CFG_INT, AOFF(baseline_weeks), "4", 0, 12, NULL,
     "Past weeks whose same hour-of-week forms the baseline (0 = trailing day only).", 0},
    {"baseline_refresh", UPM_CFG_DURATION_MS, AOFF(baseline_refresh_ms), "10m", 1000, 86400000,
     NULL, "How often (in the analysis' own time) the new-seller count is re-read.", 0},
    {"min_baseline_points", UPM_CFG_INT, AOFF(min_baseline_points), "3", 2, 10000, NULL,
     "Baseline points a chart needs before it gets limits (fewer: no limits, no alert).", 0},
    {"limit_sigmas", UPM_CFG_DOUBLE, AOFF(limit_sigmas), "3", 1, 10, NULL,
     "Width of the control limits in sigmas.", 0},
    {"ewma_lambda", UPM_CFG_DOUBLE, AOFF(ewma_lambda), "0.2", 0.01, 1, NULL,
     "Weight of the newest point in the EWMA charts.", 0},
    {"min_effect", UPM_CFG_DOUBLE, AOFF(min_effect), "0.1", 0, 10, NULL,
     "Latency and throughput limits lie at least this fraction of the centre away from it (a "
     "statistically real 2 % move is not an incident).",
     0},
    {"top_k", UPM_CFG_INT, AOFF(top_k), "20", 1, 1000, NULL,
     "Sellers exported by anomaly score (bounded label cardinality).", 0},
    {"seller_alert_score", UPM_CFG_DOUBLE, AOFF(seller_alert_score), "8", 0, 1e6, NULL,
     "Score from which a seller is anomalous (exported as upmon_seller_anomaly_threshold).", 0},
    {"seller_reason_z", UPM_CFG_DOUBLE, AOFF(seller_reason_z), "4", 0, 1e6, NULL,
     "z-score from which a component is listed among a seller's reasons.", 0},
    {"seller_prior_tries", UPM_CFG_DOUBLE, AOFF(seller_prior_tries), "200", 0, 1e9, NULL,
     "Pseudo-tries of the peers' failure rate mixed into a seller's own baseline (shrinkage).", 0},
    {"seller_min_tries", UPM_CFG_INT, AOFF(seller_min_tries), "30", 1, 1e9, NULL,
     "Tries in the last hour a seller needs to be scored.", 0},
    {"attempt_horizon", UPM_CFG_DURATION_MS, AOFF(attempt_horizon_ms), "6h", 60000, 604800000, NULL,
     "Longest attempt considered: its other events are looked up this far before (and after) "
     "the window.",
     0},
    {"write_results", UPM_CFG_BOOL, AOFF(write_results), "true", NONE, NULL,
     "Write every statistic to analyzer_stats and seller_scores.", 0},
};
const size_t an_config_nkeys = sizeof(an_config_keys) / sizeof(an_config_keys[0]);

/* ------------------------------------------------------------------------ */
/* State                                                                    */

#define NWIN 3
static const struct {
    const char *name;
    int64_t minutes;
} windows[NWIN] = {{"1m", 1}, {"5m", 5}, {"1h", 60}};

#define TRAIL_MIN   (25 * 60) /* trailing minutes kept: a day plus the run */
#define RUN_POINTS  8         /* Western Electric rule 4 needs 8 */
#define EWMA_POINTS 20
#define WEEK_MIN    (7 * 24 * 60)

enum chart { CH_FAILURE, CH_LATENCY, CH_THROUGHPUT, NCHART };
static const char *const chart_names[NCHART] = {"failure_rate", "latency", "throughput"};

/* Per window and segment: what the window-detail and attempt queries gave. */
struct detail {
    bool have;
    double sellers_uniq;
    double ft_q[3]; /* p50, p95, p99 in ms */
    bool have_att;
    double att_n, att_mean, att_sd, att_q[3], att_tries, att_first, att_beyond;
};

/* One exported series: metric + label values joined by 0x1f. */
struct exported {
    struct upm_prom_metric *m;
    char *key;
};

#define SELLER_MAX_MIX 16

/* A seller's baseline: days, events, tries, errors, ft_n, Σft, Σft² (ms). */
struct base_entry {
    uint64_t id;
    double v[7];
};

struct seller_row {
    struct an_seller s;
    double score;
    unsigned reasons;
    struct {
        int g;    /* origin segment */
        double w; /* the seller's events there today */
    } mix[SELLER_MAX_MIX];
    size_t nmix;
};

struct analyzer {
    struct an_config cfg;
    struct upm_ch_client *ch;
    struct upm_prom_registry *reg;
    an_gate_fn gate;
    void *gate_opaque;
    const volatile int *stop;
    const char *db;

    struct hist *trail, *weekly;
    int64_t trail_end;     /* minutes before this are fetched (exclusive end) */
    struct att_store *att; /* attempts that went live, per minute (the last hour) */
    int64_t att_end;       /* minutes before this are fetched (exclusive end) */
    int64_t weekly_at;     /* now_min at the last weekly refresh; 0 = never */
    int64_t thresholds_at; /* now_min at the last threshold refresh; 0 = never */
    /* now_min of the last published analysis (0 = none, or withdrawn):
     * windows are whole minutes, so a cycle within the same minute has
     * nothing new to say. Atomic: analyzer_clear runs on the elector's
     * thread. */
    _Atomic int64_t analysed_min;
    /* per origin segment over the sellers' baseline days: tries, errors,
     * ft_n, ft_sum_ms; and the day that was computed for */
    double origin_base[HIST_MAX_SEGMENTS][4];
    char origin_base_day[16];
    double new_sellers;
    bool have_new_sellers;
    /* Sellers' 30-day baselines of base_day (sorted by id; see fetch_sellers). */
    struct base_entry *base;
    size_t nbase, capbase;
    char base_day[16];

    /* attempt-time thresholds (mean + 3σ of the last 1h window) per segment */
    double thr[HIST_MAX_SEGMENTS];

    struct detail det[NWIN][HIST_MAX_SEGMENTS];
    bool chosen[HIST_MAX_SEGMENTS];

    struct upm_buf sql, resp, rows, srows;
    /* The result writer (see write_results): its own thread and client. */
    struct {
        pthread_t th;
        pthread_mutex_t mu;
        pthread_cond_t cv;
        bool started, have, busy, stop;
        struct upm_buf rows, srows;
        struct upm_ch_client *ch;
    } w;
    char row_date[16], row_datetime[32]; /* the cycle's "now" as written in result rows */

    struct exported *prev, *cur;
    size_t nprev, ncur, capcur;

    /* metrics */
    struct upm_prom_metric *m_eps, *m_created, *m_fr, *m_fr_c, *m_fr_u, *m_fr_l, *m_fr_n;
    struct upm_prom_metric *m_lat, *m_lat_c, *m_lat_u, *m_lat_l, *m_late, *m_late_u, *m_late_l;
    struct upm_prom_metric *m_tp, *m_tp_c, *m_tp_u, *m_tp_l, *m_tpe, *m_tpe_u, *m_tpe_l;
    struct upm_prom_metric *m_ftq, *m_ftm, *m_fts, *m_atq, *m_atm, *m_ats, *m_ats_tries;
    struct upm_prom_metric *m_first, *m_beyond, *m_media, *m_su, *m_sn, *m_bsrc, *m_viol, *m_dir;
    struct upm_prom_metric *m_sscore, *m_sreason, *m_sfr, *m_seph, *m_sthr;
    struct upm_prom_metric *stat_metrics[48];
    size_t nstat;
    struct upm_prom_series *s_cycles_ok, *s_cycles_err, *s_cycle_sec, *s_last, *s_data_time;
    struct upm_prom_series *s_write_err, *s_dropped;
    struct upm_prom_metric *m_query_sec;
};

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */

static void fmt_date(int64_t epoch_s, char *out, size_t n)
{
    time_t t = (time_t)epoch_s;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%Y-%m-%d", &tm);
}

static void fmt_datetime(int64_t epoch_s, char *out, size_t n)
{
    time_t t = (time_t)epoch_s;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%Y-%m-%d %H:%M:%S", &tm);
}

/* Run a query into an->resp, timing it under upmon_analyzer_query_seconds. */
static int run_query(struct analyzer *an, const char *name)
{
    struct upm_ch_error err;
    int64_t t0 = upm_clock_mono_ns();
    int rc = upm_ch_query(an->ch, an->sql.data, &an->resp, &err);
    double sec = (double)(upm_clock_mono_ns() - t0) / 1e9;
    upm_prom_observe(upm_prom_series_get(an->m_query_sec, (const char *[]){name}), sec);
    if (rc != 0) {
        upm_log_warn(MOD, "query failed | query=%s code=%d http=%d error=\"%s\"", name, err.code,
                     err.http_status, err.message);
        return -1;
    }
    upm_log_debug(MOD, "query | query=%s seconds=%.3f bytes=%zu", name, sec, an->resp.len);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Metrics                                                                  */

static const char *const seg_labels[] = {"window", "dimension", "segment"};

static struct upm_prom_metric *stat_gauge(struct analyzer *an, const char *name, const char *help,
                                          const char *extra)
{
    const char *labels[4] = {seg_labels[0], seg_labels[1], seg_labels[2], extra};
    struct upm_prom_metric *m = upm_prom_gauge(an->reg, name, help, extra ? 4 : 3, labels);
    an->stat_metrics[an->nstat++] = m;
    return m;
}

static void register_metrics(struct analyzer *an)
{
    struct upm_prom_registry *r = an->reg;
    an->m_eps = stat_gauge(an, "upmon_events_per_second",
                           "Events per second in the window, by type.", "event");
    an->m_created = stat_gauge(an, "upmon_items_created_per_minute",
                               "Cards that went live per minute in the window.", NULL);
    an->m_fr =
        stat_gauge(an, "upmon_failure_rate",
                   "ERROR events / (SAVE + ERROR events) in the window (p-chart point).", NULL);
    an->m_fr_c = stat_gauge(an, "upmon_failure_rate_center",
                            "p-chart centre: the baseline failure rate.", NULL);
    an->m_fr_u =
        stat_gauge(an, "upmon_failure_rate_ucl",
                   "p-chart upper control limit (Laney-adjusted) for this window's tries.", NULL);
    an->m_fr_l = stat_gauge(an, "upmon_failure_rate_lcl", "p-chart lower control limit.", NULL);
    an->m_fr_n = stat_gauge(an, "upmon_failure_rate_tries",
                            "Tries (SAVE + ERROR events) behind the failure rate.", NULL);
    an->m_lat =
        stat_gauge(an, "upmon_latency_seconds",
                   "Mean full time (up_ts - ts_ns of the successful event) in the window.", NULL);
    an->m_lat_c = stat_gauge(an, "upmon_latency_seconds_center",
                             "Latency chart centre: baseline median.", NULL);
    an->m_lat_u = stat_gauge(an, "upmon_latency_seconds_ucl",
                             "Latency X-bar upper limit (median + k * 1.4826 * MAD).", NULL);
    an->m_lat_l = stat_gauge(an, "upmon_latency_seconds_lcl", "Latency X-bar lower limit.", NULL);
    an->m_late = stat_gauge(an, "upmon_latency_ewma_seconds",
                            "EWMA of the window's mean full time over consecutive windows.", NULL);
    an->m_late_u =
        stat_gauge(an, "upmon_latency_ewma_seconds_ucl", "Latency EWMA upper limit.", NULL);
    an->m_late_l =
        stat_gauge(an, "upmon_latency_ewma_seconds_lcl", "Latency EWMA lower limit.", NULL);
    an->m_tp = stat_gauge(an, "upmon_throughput", "All events per second in the window.", NULL);
    an->m_tp_c = stat_gauge(an, "upmon_throughput_center", "Throughput chart centre.", NULL);
    an->m_tp_u = stat_gauge(an, "upmon_throughput_ucl", "Throughput X-bar upper limit.", NULL);
    an->m_tp_l = stat_gauge(an, "upmon_throughput_lcl", "Throughput X-bar lower limit.", NULL);
    an->m_tpe = stat_gauge(an, "upmon_throughput_ewma", "EWMA of the throughput.", NULL);
    an->m_tpe_u = stat_gauge(an, "upmon_throughput_ewma_ucl", "Throughput EWMA upper limit.", NULL);
    an->m_tpe_l = stat_gauge(an, "upmon_throughput_ewma_lcl", "Throughput EWMA lower limit.", NULL);
    an->m_ftq =
        stat_gauge(an, "upmon_full_time_seconds", "Full time quantiles in the window.", "quantile");
    an->m_ftm = stat_gauge(an, "upmon_full_time_mean_seconds", "Mean full time.", NULL);
    an->m_fts =
        stat_gauge(an, "upmon_full_time_stddev_seconds", "Standard deviation of full time.", NULL);
    an->m_atq = stat_gauge(an, "upmon_attempt_time_seconds",
                           "Attempt time (up_ts - first ts of the attempt) quantiles of attempts "
                           "that went live in the window.",
                           "quantile");
    an->m_atm = stat_gauge(an, "upmon_attempt_time_mean_seconds", "Mean attempt time.", NULL);
    an->m_ats = stat_gauge(an, "upmon_attempt_time_stddev_seconds",
                           "Standard deviation of attempt time.", NULL);
    an->m_ats_tries = stat_gauge(an, "upmon_attempts_to_success",
                                 "Mean tries of the attempts that went live in the window.", NULL);
    an->m_first = stat_gauge(an, "upmon_first_try_share",
                             "Share of the attempts that went live at their first try.", NULL);
    an->m_beyond = stat_gauge(an, "upmon_beyond_3sigma_share",
                              "Share of attempts whose attempt time exceeds the segment's "
                              "mean + 3 sigma over the previous hour.",
                              NULL);
    an->m_media = stat_gauge(an, "upmon_media", "Media links in the window by kind.", "kind");
    an->m_su = stat_gauge(an, "upmon_sellers_unique", "Distinct sellers in the window.", NULL);
    an->m_sn = stat_gauge(an, "upmon_sellers_new",
                          "Sellers whose first day of activity is today (window=\"today\").", NULL);
    an->m_bsrc = stat_gauge(an, "upmon_baseline_source",
                            "Baseline of a chart: 1 same hour-of-week of past weeks, 2 trailing "
                            "day, 0 too little history (no limits).",
                            "chart");
    const char *vl[] = {"chart", "rule", "window", "dimension", "segment"};
    an->m_viol =
        upm_prom_gauge(r, "upmon_control_violation",
                       "1 when Western Electric rule `rule` holds on the latest point.", 5, vl);
    an->stat_metrics[an->nstat++] = an->m_viol;
    const char *dl[] = {"chart", "window", "dimension", "segment"};
    an->m_dir = upm_prom_gauge(r, "upmon_control_violation_direction",
                               "+1 violations above the centre, -1 below, 0 none.", 4, dl);
    an->stat_metrics[an->nstat++] = an->m_dir;
    an->m_sscore = upm_prom_gauge(r, "upmon_seller_anomaly_score",
                                  "Anomaly score of the top sellers (largest z of the reasons).", 2,
                                  (const char *[]){"company_id", "rank"});
    an->m_sreason = upm_prom_gauge(r, "upmon_seller_anomaly_reason",
                                   "1 for each reason behind a top seller's score.", 2,
                                   (const char *[]){"company_id", "reason"});
    an->m_sfr = upm_prom_gauge(r, "upmon_seller_failure_rate",
                               "A top seller's failure rate over the last hour.", 1,
                               (const char *[]){"company_id"});
    an->m_seph = upm_prom_gauge(r, "upmon_seller_events_per_hour",
                                "A top seller's events over the last hour.", 1,
                                (const char *[]){"company_id"});
    an->m_sthr = upm_prom_gauge(r, "upmon_seller_anomaly_threshold",
                                "Score from which a seller counts as anomalous.", 0, NULL);
    an->stat_metrics[an->nstat++] = an->m_sscore;
    an->stat_metrics[an->nstat++] = an->m_sreason;
    an->stat_metrics[an->nstat++] = an->m_sfr;
    an->stat_metrics[an->nstat++] = an->m_seph;
    an->stat_metrics[an->nstat++] = an->m_sthr;

    struct upm_prom_metric *cyc =
        upm_prom_counter(r, "upmon_analyzer_cycles_total", "Analysis cycles by result.", 1,
                         (const char *[]){"result"});
    an->s_cycles_ok = upm_prom_series_get(cyc, (const char *[]){"ok"});
    an->s_cycles_err = upm_prom_series_get(cyc, (const char *[]){"error"});
    static const double cb[] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
    an->s_cycle_sec = upm_prom_series_get(
        upm_prom_histogram(r, "upmon_analyzer_cycle_seconds", "Duration of an analysis cycle.",
                           sizeof(cb) / sizeof(cb[0]), cb, 0, NULL),
        NULL);
    an->m_query_sec = upm_prom_histogram(
        r, "upmon_analyzer_query_seconds", "Duration of each ClickHouse query of a cycle.",
        sizeof(cb) / sizeof(cb[0]), cb, 1, (const char *[]){"query"});
    an->s_last = upm_prom_series_get(
        upm_prom_gauge(r, "upmon_analyzer_last_cycle_timestamp_seconds",
                       "Wall time of the last successful cycle (leader only).", 0, NULL),
        NULL);
    an->s_data_time = upm_prom_series_get(
        upm_prom_gauge(r, "upmon_analyzer_data_time_seconds",
                       "The \"now\" the last cycle analysed, in epoch seconds.", 0, NULL),
        NULL);
    an->s_write_err =
        upm_prom_series_get(upm_prom_counter(r, "upmon_analyzer_write_errors_total",
                                             "Failed writes of results to ClickHouse.", 0, NULL),
                            NULL);
    an->s_dropped = upm_prom_series_get(
        upm_prom_gauge(r, "upmon_analyzer_segments_dropped",
                       "Segment values beyond the analyzer's table (counted in \"all\" only).", 0,
                       NULL),
        NULL);
}

/* Record that (m, values) was set this cycle. */
static void track(struct analyzer *an, struct upm_prom_metric *m, const char *const *v, size_t n)
{
    struct upm_buf k;
    upm_buf_init(&k, 0);
    for (size_t i = 0; i < n; i++) {
        if (i)
            upm_buf_putc(&k, '\x1f');
        upm_buf_puts(&k, v[i]);
    }
    if (an->ncur == an->capcur) {
        an->capcur = an->capcur ? an->capcur * 2 : 1024;
        an->cur = upm_realloc(an->cur, an->capcur * sizeof(*an->cur));
    }
    an->cur[an->ncur].m = m;
    an->cur[an->ncur].key = k.data ? upm_buf_steal(&k, NULL) : upm_strdup("");
    an->ncur++;
}

static void gset(struct analyzer *an, struct upm_prom_metric *m, const char *const *v, size_t n,
                 double x)
{
    if (isnan(x))
        return; /* not available: export nothing rather than a misleading value */
    upm_prom_set(upm_prom_series_get(m, v), x);
    track(an, m, v, n);
}

static int cmp_exp(const void *a, const void *b)
{
    const struct exported *x = a, *y = b;
    if (x->m != y->m)
        return x->m < y->m ? -1 : 1;
    return strcmp(x->key, y->key);
}

static void free_exported(struct exported *e, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(e[i].key);
}

/* Remove the series exported last cycle but not this one (mark and sweep:
 * never clear-and-refill, which a scrape could observe half done and which
 * would reset the `for:` of pending alerts). */
static void sweep(struct analyzer *an)
{
    qsort(an->cur, an->ncur, sizeof(*an->cur), cmp_exp);
    for (size_t i = 0; i < an->nprev; i++) {
        if (bsearch(&an->prev[i], an->cur, an->ncur, sizeof(*an->cur), cmp_exp))
            continue;
        const char *vals[8];
        size_t n = 0;
        char *k = an->prev[i].key;
        vals[n++] = k;
        for (char *p = k; *p && n < 8; p++) {
            if (*p == '\x1f') {
                *p = '\0';
                vals[n++] = p + 1;
            }
        }
        upm_prom_series_remove(an->prev[i].m, vals);
    }
    free_exported(an->prev, an->nprev);
    free(an->prev);
    an->prev = an->cur;
    an->nprev = an->ncur;
    an->cur = NULL;
    an->ncur = an->capcur = 0;
}

void analyzer_clear(struct analyzer *an)
{
    atomic_store(&an->analysed_min, 0);
    for (size_t i = 0; i < an->nstat; i++)
        upm_prom_metric_clear(an->stat_metrics[i]);
    free_exported(an->prev, an->nprev);
    free(an->prev);
    an->prev = NULL;
    an->nprev = 0;
}

/* ------------------------------------------------------------------------ */
/* Queries                                                                  */

/* events_1m rows → per-minute counters, for the minute ranges given. */
static int fetch_minutes(struct analyzer *an, struct hist *h, const int64_t (*ranges)[2],
                         size_t nranges, const char *name)
{
    upm_buf_reset(&an->sql);
    upm_buf_printf(&an->sql,
                   "SELECT intDiv(toUInt32(minute), 60) AS m, origin, toString(country), "
                   "countMerge(events), sumMerge(saves), sumMerge(updates), sumMerge(errors), "
                   "sumMerge(created), sumMerge(media_own), sumMerge(media_external), "
                   "sumMerge(media_bad), sumMerge(full_time_n), sumMerge(full_time_sum_ms), "
                   "sumMerge(full_time_sumsq_ms) FROM %s.events_1m WHERE ",
                   an->db);
    for (size_t i = 0; i < nranges; i++) {
        char d0[16], d1[16];
        fmt_date(ranges[i][0] * 60, d0, sizeof(d0));
        fmt_date(ranges[i][1] * 60 - 1, d1, sizeof(d1));
        upm_buf_printf(
            &an->sql,
            "%s(event_date >= '%s' AND event_date <= '%s' AND minute >= toDateTime(%" PRId64
            ") AND minute < toDateTime(%" PRId64 "))",
            i ? " OR " : "", d0, d1, ranges[i][0] * 60, ranges[i][1] * 60);
    }
    upm_buf_puts(&an->sql, " GROUP BY m, origin, country FORMAT TabSeparated");
    if (run_query(an, name) != 0)
        return -1;
    for (size_t i = 0; i < nranges; i++) {
        hist_clear_range(h, ranges[i][0], ranges[i][1]);
        hist_mark_fetched(h, ranges[i][0], ranges[i][1]);
    }
    char *p = an->resp.data, *line;
    while ((line = an_tsv_next_line(&p))) {
        char *f[16];
        if (an_tsv_split(line, f, 16) != 14)
            continue;
        struct hist_counters c;
        for (int k = 0; k < HC_COUNT; k++)
            c.v[k] = an_tsv_num(f[3 + k]);
        double minute = an_tsv_num(f[0]);
        if (!isfinite(minute))
            continue;
        hist_add_row(h, (int64_t)minute, f[1], f[2], &c);
    }
    return 0;
}

/* Newest second in events_1s (data clock); 0 when empty. */
static int fetch_watermark(struct analyzer *an, int64_t *out)
{
    upm_buf_reset(&an->sql);
    upm_buf_printf(&an->sql,
                   "SELECT toUInt32(max(ts)) FROM %s.events_1s WHERE event_date >= "
                   "(SELECT max(event_date) FROM %s.events_1s_local) FORMAT TabSeparated",
                   an->db, an->db);
    if (run_query(an, "watermark") != 0)
        return -1;
    *out = (int64_t)an_tsv_num(an->resp.data ? an->resp.data : "");
    if (*out < 0)
        *out = 0;
    return 0;
}

static int seg_of(struct analyzer *an, const char *dim, const char *value)
{
    if (strcmp(dim, "all") == 0)
        return 0;
    if (strcmp(dim, "country") == 0)
        return hist_segment(an->trail, HIST_DIM_COUNTRY, value);
    if (strcmp(dim, "origin") == 0)
        return hist_segment(an->trail, HIST_DIM_ORIGIN, value);
    return -1;
}

/*
 * Quantile and uniq states of the three windows, per segment, in one pass
 * over the last hour of events_1m: the segments come from an ARRAY JOIN and
 * each window is a -MergeIf on its start. (Three UNION ALL queries per
 * window read the same granules nine times: 3.7 s against 0.85 s at 1,000
 * events/s in tests/bench/analyzer; per-minute states instead of
 * per-second ones merge 60 times fewer.)
 */
static int fetch_window_detail(struct analyzer *an, int64_t to_min)
{
    int64_t from_min = to_min - windows[NWIN - 1].minutes;
    char d0[16], d1[16];
    fmt_date(from_min * 60, d0, sizeof(d0));
    fmt_date(to_min * 60 - 1, d1, sizeof(d1));
    upm_buf_reset(&an->sql);
    upm_buf_puts(&an->sql, "SELECT tupleElement(seg, 1) AS d, tupleElement(seg, 2) AS s");
    for (int w = 0; w < NWIN; w++) {
        char cond[64];
        snprintf(cond, sizeof(cond), "minute >= toDateTime(%" PRId64 ")",
                 (to_min - windows[w].minutes) * 60);
        upm_buf_printf(&an->sql,
                       ", uniqMergeIf(sellers, %s), "
                       "quantilesTDigestIfMergeIf(0.5, 0.9, 0.95, 0.99)(full_time_q_ms, %s)",
                       cond, cond);
    }
    upm_buf_printf(&an->sql,
                   " FROM %s.events_1m ARRAY JOIN [('all', 'all'), ('country', "
                   "toString(country)), ('origin', origin)] AS seg WHERE event_date >= '%s' AND "
                   "event_date <= '%s' AND minute >= toDateTime(%" PRId64
                   ") AND minute < toDateTime(%" PRId64 ") GROUP BY d, s FORMAT TabSeparated",
                   an->db, d0, d1, from_min * 60, to_min * 60);
    if (run_query(an, "detail") != 0)
        return -1;
    char *p = an->resp.data, *line;
    while ((line = an_tsv_next_line(&p))) {
        char *f[2 + 2 * NWIN + 1];
        if (an_tsv_split(line, f, 2 + 2 * NWIN + 1) != 2 + 2 * NWIN)
            continue;
        int s = seg_of(an, f[0], f[1]);
        if (s < 0)
            continue;
        for (int w = 0; w < NWIN; w++) {
            char **g = f + 2 + 2 * w;
            struct detail *d = &an->det[w][s];
            double q[4];
            an_tsv_array(g[1], q, 4);
            /* A segment without rows in a shorter window merges nothing:
             * uniq gives 0 and the quantiles nan; keep it "not available". */
            d->sellers_uniq = an_tsv_num(g[0]);
            d->have = d->sellers_uniq > 0;
            d->ft_q[0] = q[0];
            d->ft_q[1] = q[2];
            d->ft_q[2] = q[3];
        }
    }
    return 0;
}

/*
 * Attempts that went live in [from_min, to_min), into the per-minute store
 * (attempts.h): per minute of their first creating event, origin × country
 * and attempt-time bucket, their count and sums. Read from attempt_events
 * (time-ordered, 8-byte attempt hashes): the range's created events name the
 * attempts, and their other events are looked up attempt_horizon before the
 * range and as long after it (an attempt's events all count, as in the
 * attempts rollup). Over `attempts`, whose day is ordered by seller and
 * attempt id, the same lookup scanned whole days (3.0 s at 1,000 events/s
 * in tests/bench/analyzer); over attempt_events for the whole hour every
 * cycle, 1.8 s (the horizon scan probing a set of an hour's attempts, then
 * aggregating all of them) — hence a few minutes at a time. The hash test
 * is a PREWHERE: only the granules holding those attempts' events are read
 * past attempt_h (0.17 s against 0.34-0.40 s for 4 minutes at 1,000
 * events/s; ClickHouse's own choice of PREWHERE took the time range).
 */
static int fetch_attempts(struct analyzer *an, int64_t from_min, int64_t to_min)
{
    int64_t from_s = from_min * 60, to_s = to_min * 60;
    int64_t h_s = an->cfg.attempt_horizon_ms / 1000;
    char d0[16], d1[16], dh[16], dt[16], bucket[256];
    fmt_date(from_s, d0, sizeof(d0));
    fmt_date(to_s - 1, d1, sizeof(d1));
    fmt_date(from_s - h_s, dh, sizeof(dh));
    fmt_date(to_s + h_s - 1, dt, sizeof(dt));
    att_bucket_sql(bucket, sizeof(bucket), "t");
    struct upm_buf *b = &an->sql;
    upm_buf_reset(b);
    upm_buf_printf(b,
                   "SELECT intDiv(sts, 60000000000) AS m, origin, country, %s AS b, count(), "
                   "sum(t), sum(t * t), sum(tries), countIf(tries = 1) "
                   "FROM (SELECT anyIf(origin, is_created = 1) AS origin, "
                   "anyIf(country, is_created = 1) AS country, "
                   "(max(up_ts) - min(ts_ns)) / 1e9 AS t, sum(is_error) + 1 AS tries, "
                   "minIf(ts_ns, is_created = 1) AS sts FROM %s.attempt_events "
                   "PREWHERE attempt_h IN (SELECT attempt_h FROM %s.attempt_events_local WHERE "
                   "event_date >= '%s' AND event_date <= '%s' AND ts_ns >= %" PRId64
                   "000000000 AND ts_ns < %" PRId64 "000000000 AND is_created = 1) "
                   "WHERE event_date >= '%s' AND event_date <= '%s' AND ts_ns >= %" PRId64
                   "000000000 AND ts_ns < %" PRId64 "000000000 "
                   "GROUP BY attempt_h "
                   "HAVING sts >= %" PRId64 "000000000 AND sts < %" PRId64 "000000000) "
                   "GROUP BY m, origin, country, b FORMAT TabSeparated",
                   bucket, an->db, an->db, d0, d1, from_s, to_s, dh, dt, from_s - h_s, to_s + h_s,
                   from_s, to_s);
    if (run_query(an, "attempts") != 0)
        return -1;
    att_clear_range(an->att, from_min, to_min);
    char *p = an->resp.data, *line;
    while ((line = an_tsv_next_line(&p))) {
        char *f[10];
        if (an_tsv_split(line, f, 10) != 9)
            continue;
        double m = an_tsv_num(f[0]), bk = an_tsv_num(f[3]);
        if (!isfinite(m) || !isfinite(bk) || m < (double)from_min || m >= (double)to_min)
            continue;
        struct att_row r = {(int)bk,          an_tsv_num(f[4]), an_tsv_num(f[5]),
                            an_tsv_num(f[6]), an_tsv_num(f[7]), an_tsv_num(f[8])};
        /* Every attempt counts in "all", its country's and its origin's
         * segment (the history's, so that the charts and these agree). */
        int segs[3] = {0, hist_find(an->trail, HIST_DIM_COUNTRY, f[2]),
                       hist_find(an->trail, HIST_DIM_ORIGIN, f[1])};
        for (int k = 0; k < 3; k++) {
            if (segs[k] >= 0)
                att_add(an->att, (int64_t)m, (size_t)segs[k], &r);
        }
    }
    return 0;
}

/* The attempt figures of the three windows from the store; the 1h window's
 * mean + 3σ per segment becomes the next cycles' threshold for "beyond 3σ". */
static void attempt_windows(struct analyzer *an, int64_t now_min)
{
    double next_thr[HIST_MAX_SEGMENTS];
    for (size_t s = 0; s < HIST_MAX_SEGMENTS; s++)
        next_thr[s] = NAN;
    for (size_t s = 0; s < hist_nsegments(an->trail); s++) {
        for (int w = 0; w < NWIN; w++) {
            struct att_window aw;
            att_window(an->att, s, now_min - windows[w].minutes, now_min, an->thr[s], &aw);
            struct detail *d = &an->det[w][s];
            d->have_att = aw.n > 0;
            d->att_n = aw.n;
            d->att_mean = aw.mean;
            d->att_sd = aw.sd;
            memcpy(d->att_q, aw.q, sizeof(d->att_q));
            d->att_tries = aw.tries;
            d->att_first = aw.first;
            d->att_beyond = aw.beyond;
            if (w == NWIN - 1)
                next_thr[s] = aw.n >= 2 ? aw.mean + 3 * aw.sd : NAN;
        }
    }
    memcpy(an->thr, next_thr, sizeof(an->thr));
}

static int fetch_new_sellers(struct analyzer *an, int64_t now_s)
{
    char today[16];
    fmt_date(now_s, today, sizeof(today));
    upm_buf_reset(&an->sql);
    upm_buf_printf(&an->sql,
                   "SELECT count() FROM (SELECT company_id FROM %s.events_1d_company "
                   "WHERE day <= '%s' GROUP BY company_id HAVING min(day) = '%s') "
                   "FORMAT TabSeparated",
                   an->db, today, today);
    if (run_query(an, "new_sellers") != 0)
        return -1;
    an->new_sellers = an_tsv_num(an->resp.data ? an->resp.data : "");
    an->have_new_sellers = !isnan(an->new_sellers);
    return 0;
}

/* ",id,id,…" of the sellers, for an IN on the per-company rollups (company_id
 * leads their keys). */
static void put_company_ids(struct upm_buf *b, const struct seller_row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++)
        upm_buf_printf(b, "%s%" PRIu64, i ? "," : "", rows[i].s.company_id);
}

static int cmp_score(const void *a, const void *b)
{
    const struct seller_row *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return x->s.company_id < y->s.company_id ? -1 : x->s.company_id > y->s.company_id;
}

/*
 * Difference in differences for the seller scores: how each origin's
 * failure log-odds and mean full time moved from the sellers' baseline days
 * (the 30 days before today) to the last hour, weighted by each seller's origin mix today. An
 * origin-wide incident then leaves its sellers' own-baseline scores where they were, and a seller
 * that fails alone still stands out. (Countries are not in the per-company rollups, so a
 * country-wide incident still shows in its sellers' scores, damped by the failure floor.)
 */
static int seller_shifts(struct analyzer *an, struct seller_row *rows, size_t n, int64_t now_min,
                         const char *today, const char *start)
{
    /* Each origin over the same 30 days as the sellers' own baselines (the
     * reference of the difference), read once per day: a trailing window
     * would already hold the incident being judged. */
    if (strcmp(an->origin_base_day, today) != 0) {
        upm_buf_reset(&an->sql);
        upm_buf_printf(&an->sql,
                       "SELECT origin, sumMerge(saves) + sumMerge(errors), sumMerge(errors), "
                       "sumMerge(full_time_n), sumMerge(full_time_sum_ms) FROM "
                       "%s.events_1d_company WHERE day >= '%s' AND day < '%s' GROUP BY origin "
                       "FORMAT TabSeparated",
                       an->db, start, today);
        if (run_query(an, "origins_baseline") != 0)
            return -1;
        memset(an->origin_base, 0, sizeof(an->origin_base));
        char *p = an->resp.data, *line;
        while ((line = an_tsv_next_line(&p))) {
            char *f[6];
            if (an_tsv_split(line, f, 6) != 5)
                continue;
            int g = hist_segment(an->trail, HIST_DIM_ORIGIN, f[0]);
            if (g < 0)
                continue;
            for (int k = 0; k < 4; k++)
                an->origin_base[g][k] = an_tsv_num(f[1 + k]);
        }
        snprintf(an->origin_base_day, sizeof(an->origin_base_day), "%s", today);
    }
    upm_buf_reset(&an->sql);
    upm_buf_printf(&an->sql,
                   "SELECT company_id, origin, countMerge(events) FROM %s.events_1d_company "
                   "WHERE day = '%s' AND company_id IN (",
                   an->db, today);
    put_company_ids(&an->sql, rows, n);
    upm_buf_puts(&an->sql, ") GROUP BY company_id, origin FORMAT TabSeparated");
    if (run_query(an, "sellers_mix") != 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        rows[i].nmix = 0;
    char *p = an->resp.data, *line;
    while ((line = an_tsv_next_line(&p))) {
        char *f[4];
        if (an_tsv_split(line, f, 4) != 3)
            continue;
        uint64_t id = strtoull(f[0], NULL, 10);
        int g = hist_find(an->trail, HIST_DIM_ORIGIN, f[1]);
        double w = an_tsv_num(f[2]);
        if (g < 0 || !(w > 0))
            continue;
        for (size_t i = 0; i < n; i++) {
            if (rows[i].s.company_id == id && rows[i].nmix < SELLER_MAX_MIX) {
                rows[i].mix[rows[i].nmix].g = g;
                rows[i].mix[rows[i].nmix].w = w;
                rows[i].nmix++;
                break;
            }
        }
    }
    double min_tries = (double)an->cfg.min_tries;
    for (size_t i = 0; i < n; i++) {
        struct an_seller *sl = &rows[i].s;
        double wtot = 0, sh = 0, ws = 0, ra = 0, wr = 0;
        for (size_t k = 0; k < rows[i].nmix; k++)
            wtot += rows[i].mix[k].w;
        for (size_t k = 0; k < rows[i].nmix && wtot > 0; k++) {
            int g = rows[i].mix[k].g;
            double fr = rows[i].mix[k].w / wtot;
            struct hist_counters now;
            hist_sum(an->trail, (size_t)g, now_min - 60, now_min, &now);
            const double *b = an->origin_base[g];
            /* The seller's own share comes out of both sides: a big
             * seller's storm must not become its origin's shift. Its
             * figures are split across origins by its event mix today. */
            double t = now.v[HC_SAVES] + now.v[HC_ERRORS] - fr * sl->tries;
            double e = now.v[HC_ERRORS] - fr * sl->errors;
            double tb = b[0] - fr * sl->base_tries, eb = b[1] - fr * sl->base_errors;
            if (t >= min_tries && tb >= min_tries) {
                double pn = e / t, pb = eb / tb;
                if (pn > 0 && pn < 1 && pb > 0 && pb < 1) {
                    sh += fr * (log(pn / (1 - pn)) - log(pb / (1 - pb)));
                    ws += fr;
                }
            }
            double fn = now.v[HC_FT_N] - fr * sl->ft_n,
                   fs = now.v[HC_FT_SUM_MS] - fr * sl->ft_sum_ms;
            double fnb = b[2] - fr * sl->base_ft_n, fsb = b[3] - fr * sl->base_ft_sum_ms;
            if (fn >= 10 && fnb >= 10 && fs > 0 && fsb > 0) {
                ra += fr * ((fs / fn) / (fsb / fnb));
                wr += fr;
            }
        }
        sl->shift_logit = ws > 0 ? sh / ws : 0;
        sl->latency_ratio = wr > 0 ? ra / wr : 1;
    }
    return 0;
}

static int cmp_base(const void *a, const void *b)
{
    uint64_t x = ((const struct base_entry *)a)->id, y = ((const struct base_entry *)b)->id;
    return x < y ? -1 : x > y;
}

static struct base_entry *base_find(struct analyzer *an, uint64_t id)
{
    struct base_entry key = {.id = id};
    return an->nbase ? bsearch(&key, an->base, an->nbase, sizeof(*an->base), cmp_base) : NULL;
}

/* Sellers active in the last hour, their 30-day baselines, scores. */
static int fetch_sellers(struct analyzer *an, int64_t now_min, struct seller_row **out,
                         size_t *nout)
{
    int64_t from_s = (now_min - 60) * 60, to_s = now_min * 60;
    char d0[16], d1[16];
    fmt_date(from_s, d0, sizeof(d0));
    fmt_date(to_s - 1, d1, sizeof(d1));
    upm_buf_reset(&an->sql);
    upm_buf_printf(&an->sql,
                   "SELECT company_id, countMerge(events), sumMerge(saves) + sumMerge(errors) AS "
                   "tries, sumMerge(errors), sumMerge(full_time_n), sumMerge(full_time_sum_ms) "
                   "FROM %s.events_1m_company WHERE event_date >= '%s' AND event_date <= '%s' AND "
                   "minute >= toDateTime(%" PRId64 ") AND minute < toDateTime(%" PRId64 ") "
                   "GROUP BY company_id HAVING tries >= %" PRId64 " FORMAT TabSeparated",
                   an->db, d0, d1, from_s, to_s, an->cfg.seller_min_tries);
    *out = NULL;
    *nout = 0;
    if (run_query(an, "sellers_now") != 0)
        return -1;
    size_t n = 0, cap = 0;
    struct seller_row *rows = NULL;
    char *p = an->resp.data, *line;
    while ((line = an_tsv_next_line(&p))) {
        char *f[8];
        if (an_tsv_split(line, f, 8) != 6)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 256;
            rows = upm_realloc(rows, cap * sizeof(*rows));
        }
        struct seller_row *r = &rows[n++];
        memset(r, 0, sizeof(*r));
        r->s.company_id = strtoull(f[0], NULL, 10);
        r->s.events = an_tsv_num(f[1]);
        r->s.tries = an_tsv_num(f[2]);
        r->s.errors = an_tsv_num(f[3]);
        r->s.ft_n = an_tsv_num(f[4]);
        r->s.ft_sum_ms = an_tsv_num(f[5]);
    }
    if (n == 0) {
        free(rows);
        return 0;
    }
    /* Baselines of exactly those companies (company_id leads the key). They
     * cover the 30 days before today, so each company's is read once a day:
     * the cache is emptied when the day changes and only companies not in it
     * are asked for. */
    char today[16], start[16];
    fmt_date(to_s - 1, today, sizeof(today));
    fmt_date(to_s - 1 - 30 * 86400, start, sizeof(start));
    if (strcmp(an->base_day, today) != 0) {
        an->nbase = 0;
        snprintf(an->base_day, sizeof(an->base_day), "%s", today);
    }
    size_t nmiss = 0;
    upm_buf_reset(&an->sql);
    upm_buf_printf(&an->sql,
                   "SELECT company_id, uniqExact(day), countMerge(events), sumMerge(saves) + "
                   "sumMerge(errors), sumMerge(errors), sumMerge(full_time_n), "
                   "sumMerge(full_time_sum_ms), sumMerge(full_time_sumsq_ms) FROM "
                   "%s.events_1d_company WHERE day >= '%s' AND day < '%s' AND company_id IN (",
                   an->db, start, today);
    for (size_t i = 0; i < n; i++) {
        if (base_find(an, rows[i].s.company_id))
            continue;
        upm_buf_printf(&an->sql, "%s%" PRIu64, nmiss++ ? "," : "", rows[i].s.company_id);
        /* A company without rows in those days has a zero baseline. */
        if (an->nbase == an->capbase) {
            an->capbase = an->capbase ? an->capbase * 2 : 1024;
            an->base = upm_realloc(an->base, an->capbase * sizeof(*an->base));
        }
        memset(&an->base[an->nbase], 0, sizeof(an->base[an->nbase]));
        an->base[an->nbase++].id = rows[i].s.company_id;
    }
    upm_buf_puts(&an->sql, ") GROUP BY company_id FORMAT TabSeparated");
    if (nmiss > 0) {
        qsort(an->base, an->nbase, sizeof(*an->base), cmp_base);
        if (run_query(an, "sellers_baseline") != 0) {
            an->nbase = 0; /* the new, unfilled entries are among the old: start over */
            free(rows);
            return -1;
        }
        p = an->resp.data;
        while ((line = an_tsv_next_line(&p))) {
            char *f[10];
            if (an_tsv_split(line, f, 10) != 8)
                continue;
            struct base_entry *e = base_find(an, strtoull(f[0], NULL, 10));
            if (!e)
                continue;
            for (int k = 0; k < 7; k++)
                e->v[k] = an_tsv_num(f[1 + k]);
        }
    }
    for (size_t i = 0; i < n; i++) {
        const struct base_entry *e = base_find(an, rows[i].s.company_id);
        struct an_seller *s = &rows[i].s;
        s->base_days = e->v[0];
        s->base_events = e->v[1];
        s->base_tries = e->v[2];
        s->base_errors = e->v[3];
        s->base_ft_n = e->v[4];
        s->base_ft_sum_ms = e->v[5];
        s->base_ft_sumsq_ms = e->v[6];
    }
    if (seller_shifts(an, rows, n, now_min, today, start) != 0) {
        free(rows);
        return -1;
    }
    *out = rows;
    *nout = n;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Charts                                                                   */

struct chart_out {
    double value;
    struct an_limits lim; /* NaN when no baseline */
    double ewma;
    struct an_limits ewma_lim;
    int source;  /* 1 weekly, 2 trailing day, 0 none */
    unsigned we; /* Western Electric bits */
    int dir;
};

/* A tile's statistic for a chart (NaN when the tile cannot be judged). */
static double tile_value(enum chart c, const struct hist_counters *t, int64_t minutes,
                         double min_tries)
{
    double tries = t->v[HC_SAVES] + t->v[HC_ERRORS];
    switch (c) {
    case CH_FAILURE:
        return tries >= min_tries ? t->v[HC_ERRORS] / tries : NAN;
    case CH_LATENCY:
        return t->v[HC_FT_N] >= 1 ? t->v[HC_FT_SUM_MS] / t->v[HC_FT_N] / 1000.0 : NAN;
    case CH_THROUGHPUT:
        return t->v[HC_EVENTS] / (double)(minutes * 60);
    case NCHART:
        break;
    }
    return NAN;
}

/* Baseline tiles of window length wm for segment seg: weekly first. */
struct sample {
    double v[2048], x[2048], n[2048]; /* value; failures and tries for the p-chart */
    size_t len;
};

static void sample_add(struct sample *s, enum chart c, const struct hist_counters *t, int64_t wm)
{
    if (s->len == sizeof(s->v) / sizeof(s->v[0]))
        return;
    double v = tile_value(c, t, wm, 1);
    if (isnan(v))
        return;
    s->v[s->len] = v;
    s->x[s->len] = t->v[HC_ERRORS];
    s->n[s->len] = t->v[HC_SAVES] + t->v[HC_ERRORS];
    s->len++;
}

static int baseline(struct analyzer *an, enum chart c, size_t seg, int64_t now_min, int64_t wm,
                    struct sample *s)
{
    struct hist_counters t;
    int weeks = 0;
    s->len = 0;
    /* The weekly store interns segments in its own order: look ours up by
     * name (absent there = no weekly history for it). */
    const struct hist_segment *sg = hist_segment_at(an->trail, seg);
    int wseg = seg == 0 ? 0 : hist_find(an->weekly, sg->dim, sg->value);
    for (int64_t k = 1; wseg >= 0 && k <= an->cfg.baseline_weeks; k++) {
        int64_t centre = now_min - k * WEEK_MIN;
        size_t before = s->len;
        if (wm >= 60) {
            if (hist_sum(an->weekly, (size_t)wseg, centre - wm, centre, &t) == (size_t)wm &&
                t.v[HC_EVENTS] > 0)
                sample_add(s, c, &t, wm);
        } else {
            for (int64_t a = centre - 30; a + wm <= centre + 30; a += wm) {
                if (hist_sum(an->weekly, (size_t)wseg, a, a + wm, &t) == (size_t)wm &&
                    t.v[HC_EVENTS] > 0)
                    sample_add(s, c, &t, wm);
            }
        }
        if (s->len > before)
            weeks++;
    }
    if (weeks >= 2 && s->len >= (size_t)an->cfg.min_baseline_points)
        return 1;
    /* Trailing day, leaving out the run being judged. */
    s->len = 0;
    int64_t skip = wm * RUN_POINTS > 60 ? wm * RUN_POINTS : 60;
    for (int64_t a = now_min - 24 * 60; a + wm <= now_min - skip; a += wm) {
        if (hist_sum(an->trail, seg, a, a + wm, &t) == (size_t)wm && t.v[HC_EVENTS] > 0)
            sample_add(s, c, &t, wm);
    }
    return s->len >= (size_t)an->cfg.min_baseline_points ? 2 : 0;
}

/*
 * Limits at least min_effect × centre from the centre. A big segment's
 * limits are tight enough to flag a 2 % move that is real but not worth
 * anyone's night, and a small segment's mean full time is the mean of a
 * long-tailed distribution whose MAD understates its upper swings.
 */
static void widen(struct an_limits *l, double min_effect)
{
    if (isnan(l->centre) || !(min_effect > 0))
        return;
    double d = fabs(l->centre) * min_effect;
    if (l->ucl < l->centre + d)
        l->ucl = l->centre + d;
    if (l->lcl > l->centre - d)
        l->lcl = l->centre - d > 0 ? l->centre - d : 0;
}

static void build_chart(struct analyzer *an, enum chart c, size_t seg, int64_t now_min, int64_t wm,
                        struct sample *s, struct chart_out *o)
{
    struct hist_counters t;
    double k = an->cfg.limit_sigmas, min_tries = (double)an->cfg.min_tries;
    struct an_limits none = {NAN, NAN, NAN, NAN};

    memset(o, 0, sizeof(*o));
    o->lim = none;
    o->ewma_lim = none;
    o->ewma = NAN;
    hist_sum(an->trail, seg, now_min - wm, now_min, &t);
    o->value = tile_value(c, &t, wm, c == CH_FAILURE ? min_tries : 1);
    if (c == CH_FAILURE && t.v[HC_SAVES] + t.v[HC_ERRORS] > 0)
        o->value = t.v[HC_ERRORS] / (t.v[HC_SAVES] + t.v[HC_ERRORS]);
    double cur_tries = t.v[HC_SAVES] + t.v[HC_ERRORS];

    o->source = baseline(an, c, seg, now_min, wm, s);
    if (o->source == 0)
        return;

    /* The run: the last RUN_POINTS tiles (oldest first), and the EWMA's. */
    double run[EWMA_POINTS];
    size_t nrun = 0;
    int64_t npts = c == CH_FAILURE ? RUN_POINTS : EWMA_POINTS;
    double centre, sigma;
    if (c == CH_FAILURE) {
        double pooled;
        double sz = an_laney_sigma_z(s->x, s->n, s->len, &pooled);
        if (isnan(pooled))
            return;
        /* The centre is the median of the baseline windows' rates, not the
         * pooled rate: a trailing day that already holds hours of the
         * incident being judged must not drag the centre up with it. */
        double tmp[2048];
        memcpy(tmp, s->v, s->len * sizeof(double));
        double pbar = an_median(tmp, s->len);
        if (isnan(pbar))
            pbar = pooled;
        if (cur_tries >= min_tries)
            o->lim = an_p_chart(pbar, cur_tries, sz, k);
        else
            o->lim.centre = pbar;
        /* Standardise each point by its own n (the limits vary with n). */
        for (int64_t i = npts; i >= 1; i--) {
            hist_sum(an->trail, seg, now_min - i * wm, now_min - (i - 1) * wm, &t);
            double n = t.v[HC_SAVES] + t.v[HC_ERRORS];
            struct an_limits l = an_p_chart(pbar, n, sz, 1);
            run[nrun++] =
                n >= min_tries && l.sigma > 0 ? (t.v[HC_ERRORS] / n - pbar) / l.sigma : NAN;
        }
        o->we = cur_tries >= min_tries ? an_western_electric(run, nrun, 0, 1, &o->dir) : 0;
        return;
    }
    double tmp[2048];
    if (an_robust(s->v, s->len, tmp, &centre, &sigma) == 0)
        return;
    o->lim = an_xbar_limits(centre, sigma, k, 0);
    for (int64_t i = npts; i >= 1; i--) {
        hist_sum(an->trail, seg, now_min - i * wm, now_min - (i - 1) * wm, &t);
        run[nrun++] = tile_value(c, &t, wm, 1);
    }
    o->ewma = an_ewma(run, nrun, an->cfg.ewma_lambda, centre, sigma, k, 0, &o->ewma_lim);
    widen(&o->lim, an->cfg.min_effect);
    widen(&o->ewma_lim, an->cfg.min_effect);
    o->we = an_western_electric(run + nrun - RUN_POINTS, RUN_POINTS, centre, sigma, &o->dir);
}

/* ------------------------------------------------------------------------ */
/* Publication                                                              */

struct pubctx {
    struct analyzer *an;
    const char *w, *dim, *seg;
};

static void row(struct pubctx *p, const char *metric, double value, const struct an_limits *l,
                unsigned rules, int source)
{
    struct analyzer *an = p->an;
    if (!an->cfg.write_results || isnan(value))
        return;
    struct upm_buf *b = &an->rows;
    upm_buf_printf(b, "%s\t%s\t", an->row_date, an->row_datetime);
    an_tsv_put(b, p->w);
    upm_buf_putc(b, '\t');
    an_tsv_put(b, p->dim);
    upm_buf_putc(b, '\t');
    an_tsv_put(b, p->seg);
    upm_buf_putc(b, '\t');
    an_tsv_put(b, metric);
    upm_buf_putc(b, '\t');
    an_tsv_put_num(b, value);
    upm_buf_putc(b, '\t');
    an_tsv_put_num(b, l ? l->centre : NAN);
    upm_buf_putc(b, '\t');
    an_tsv_put_num(b, l ? l->lcl : NAN);
    upm_buf_putc(b, '\t');
    an_tsv_put_num(b, l ? l->ucl : NAN);
    upm_buf_printf(b, "\t%u\t%d\n", rules, source);
}

static void put(struct pubctx *p, struct upm_prom_metric *m, double v)
{
    gset(p->an, m, (const char *[]){p->w, p->dim, p->seg}, 3, v);
}

static void put1(struct pubctx *p, struct upm_prom_metric *m, const char *extra, double v)
{
    gset(p->an, m, (const char *[]){p->w, p->dim, p->seg, extra}, 4, v);
}

static void publish_chart(struct pubctx *p, enum chart c, const struct chart_out *o,
                          struct upm_prom_metric *val, struct upm_prom_metric *cen,
                          struct upm_prom_metric *ucl, struct upm_prom_metric *lcl,
                          struct upm_prom_metric *ewma, struct upm_prom_metric *eu,
                          struct upm_prom_metric *el)
{
    struct analyzer *an = p->an;
    put(p, val, o->value);
    put1(p, an->m_bsrc, chart_names[c], o->source);
    row(p, chart_names[c], o->value, &o->lim, o->we, o->source);
    if (o->source == 0)
        return;
    put(p, cen, o->lim.centre);
    put(p, ucl, o->lim.ucl);
    put(p, lcl, o->lim.lcl);
    if (ewma) {
        put(p, ewma, o->ewma);
        put(p, eu, o->ewma_lim.ucl);
        put(p, el, o->ewma_lim.lcl);
        char name[48];
        snprintf(name, sizeof(name), "%s_ewma", chart_names[c]);
        row(p, name, o->ewma, &o->ewma_lim, 0, o->source);
    }
    for (int r = 1; r <= 4; r++) {
        char rs[2] = {(char)('0' + r), 0};
        gset(an, an->m_viol, (const char *[]){chart_names[c], rs, p->w, p->dim, p->seg}, 5,
             (o->we >> (r - 1)) & 1u ? 1 : 0);
    }
    gset(an, an->m_dir, (const char *[]){chart_names[c], p->w, p->dim, p->seg}, 4,
         o->we ? o->dir : 0);
}

static const char *const q_labels[3] = {"0.5", "0.95", "0.99"};

static void publish_segment(struct analyzer *an, int w, size_t seg, int64_t now_min,
                            struct sample *s)
{
    const struct hist_segment *sg = hist_segment_at(an->trail, seg);
    int64_t wm = windows[w].minutes;
    struct pubctx p = {an, windows[w].name, hist_dim_name(sg->dim), sg->value};
    struct hist_counters t;
    hist_sum(an->trail, seg, now_min - wm, now_min, &t);
    double secs = (double)(wm * 60);

    put1(&p, an->m_eps, "SAVE", t.v[HC_SAVES] / secs);
    put1(&p, an->m_eps, "UPDATE", t.v[HC_UPDATES] / secs);
    put1(&p, an->m_eps, "ERROR", t.v[HC_ERRORS] / secs);
    put(&p, an->m_created, t.v[HC_CREATED] / (double)wm);
    row(&p, "items_created_per_minute", t.v[HC_CREATED] / (double)wm, NULL, 0, 0);
    put1(&p, an->m_media, "own", t.v[HC_MEDIA_OWN]);
    put1(&p, an->m_media, "external", t.v[HC_MEDIA_EXTERNAL]);
    put1(&p, an->m_media, "bad", t.v[HC_MEDIA_BAD]);
    row(&p, "media_bad", t.v[HC_MEDIA_BAD], NULL, 0, 0);

    struct chart_out o;
    build_chart(an, CH_FAILURE, seg, now_min, wm, s, &o);
    publish_chart(&p, CH_FAILURE, &o, an->m_fr, an->m_fr_c, an->m_fr_u, an->m_fr_l, NULL, NULL,
                  NULL);
    put(&p, an->m_fr_n, t.v[HC_SAVES] + t.v[HC_ERRORS]);
    build_chart(an, CH_LATENCY, seg, now_min, wm, s, &o);
    publish_chart(&p, CH_LATENCY, &o, an->m_lat, an->m_lat_c, an->m_lat_u, an->m_lat_l, an->m_late,
                  an->m_late_u, an->m_late_l);
    build_chart(an, CH_THROUGHPUT, seg, now_min, wm, s, &o);
    publish_chart(&p, CH_THROUGHPUT, &o, an->m_tp, an->m_tp_c, an->m_tp_u, an->m_tp_l, an->m_tpe,
                  an->m_tpe_u, an->m_tpe_l);

    if (t.v[HC_FT_N] > 0) {
        double mean = t.v[HC_FT_SUM_MS] / t.v[HC_FT_N];
        double var = t.v[HC_FT_SUMSQ_MS] / t.v[HC_FT_N] - mean * mean;
        put(&p, an->m_ftm, mean / 1000);
        put(&p, an->m_fts, var > 0 ? sqrt(var) / 1000 : 0);
        row(&p, "full_time_mean_seconds", mean / 1000, NULL, 0, 0);
    }
    const struct detail *d = &an->det[w][seg];
    if (d->have) {
        for (int q = 0; q < 3; q++) {
            put1(&p, an->m_ftq, q_labels[q], d->ft_q[q] / 1000);
            char name[48];
            snprintf(name, sizeof(name), "full_time_p%s", q == 0 ? "50" : q == 1 ? "95" : "99");
            row(&p, name, d->ft_q[q] / 1000, NULL, 0, 0);
        }
        put(&p, an->m_su, d->sellers_uniq);
        row(&p, "sellers_unique", d->sellers_uniq, NULL, 0, 0);
    }
    if (d->have_att && d->att_n > 0) {
        for (int q = 0; q < 3; q++)
            put1(&p, an->m_atq, q_labels[q], d->att_q[q]);
        put(&p, an->m_atm, d->att_mean);
        put(&p, an->m_ats, d->att_sd);
        put(&p, an->m_ats_tries, d->att_tries);
        put(&p, an->m_first, d->att_first);
        put(&p, an->m_beyond, d->att_beyond);
        row(&p, "attempt_time_p95", d->att_q[1], NULL, 0, 0);
        row(&p, "attempt_time_mean_seconds", d->att_mean, NULL, 0, 0);
        row(&p, "attempt_time_stddev_seconds", d->att_sd, NULL, 0, 0);
        row(&p, "attempts_to_success", d->att_tries, NULL, 0, 0);
        row(&p, "first_try_share", d->att_first, NULL, 0, 0);
        row(&p, "beyond_3sigma_share", d->att_beyond, NULL, 0, 0);
    }
}

struct segvol {
    size_t seg;
    double events;
};

static int cmp_vol(const void *a, const void *b)
{
    const struct segvol *x = a, *y = b;
    if (x->events != y->events)
        return x->events > y->events ? -1 : 1;
    return x->seg < y->seg ? -1 : x->seg > y->seg;
}

/* The top max_segments countries and origins by the last hour's events. */
static void choose_segments(struct analyzer *an, int64_t now_min)
{
    size_t n = hist_nsegments(an->trail);
    struct segvol v[HIST_MAX_SEGMENTS] = {{0, 0}};
    memset(an->chosen, 0, sizeof(an->chosen));
    an->chosen[0] = true;
    for (int dim = HIST_DIM_COUNTRY; dim <= HIST_DIM_ORIGIN; dim++) {
        size_t nv = 0;
        for (size_t s = 1; s < n; s++) {
            if (hist_segment_at(an->trail, s)->dim != (enum hist_dim)dim)
                continue;
            struct hist_counters t;
            hist_sum(an->trail, s, now_min - 60, now_min, &t);
            if (t.v[HC_EVENTS] > 0)
                v[nv++] = (struct segvol){s, t.v[HC_EVENTS]};
        }
        qsort(v, nv, sizeof(v[0]), cmp_vol);
        for (size_t i = 0; i < nv && i < (size_t)an->cfg.max_segments; i++)
            an->chosen[v[i].seg] = true;
    }
}

static void publish_sellers(struct analyzer *an, struct seller_row *rows, size_t n,
                            double peers_rate)
{
    gset(an, an->m_sthr, NULL, 0, an->cfg.seller_alert_score);
    for (size_t i = 0; i < n; i++) {
        const struct seller_row *r = &rows[i];
        bool top = i < (size_t)an->cfg.top_k;
        if (!top && r->score < an->cfg.seller_alert_score)
            break;
        char id[24], rank[24];
        snprintf(id, sizeof(id), "%" PRIu64, r->s.company_id);
        snprintf(rank, sizeof(rank), "%zu", i + 1);
        if (top) {
            gset(an, an->m_sscore, (const char *[]){id, rank}, 2, r->score);
            gset(an, an->m_sfr, (const char *[]){id}, 1,
                 r->s.tries > 0 ? r->s.errors / r->s.tries : NAN);
            gset(an, an->m_seph, (const char *[]){id}, 1, r->s.events);
            for (unsigned bit = 1; bit <= AN_REASON_LATENCY_OWN; bit <<= 1) {
                if (r->reasons & bit)
                    gset(an, an->m_sreason,
                         (const char *[]){id, an_reason_name((enum an_reason)bit)}, 2, 1);
            }
        }
        if (!an->cfg.write_results)
            continue;
        struct upm_buf *b = &an->srows;
        upm_buf_printf(b, "%s\t%s\t%s\t%zu\t", an->row_date, an->row_datetime, id, i + 1);
        an_tsv_put_num(b, r->score);
        upm_buf_putc(b, '\t');
        for (unsigned bit = 1, first = 1; bit <= AN_REASON_LATENCY_OWN; bit <<= 1) {
            if (r->reasons & bit) {
                upm_buf_printf(b, "%s%s", first ? "" : ",", an_reason_name((enum an_reason)bit));
                first = 0;
            }
        }
        const struct an_seller *s = &r->s;
        double own = s->base_tries > 0 ? s->base_errors / s->base_tries : NAN;
        upm_buf_putc(b, '\t');
        an_tsv_put_num(b, s->events);
        upm_buf_putc(b, '\t');
        an_tsv_put_num(b, s->tries > 0 ? s->errors / s->tries : NAN);
        upm_buf_putc(b, '\t');
        an_tsv_put_num(b, own);
        upm_buf_putc(b, '\t');
        an_tsv_put_num(b, peers_rate);
        upm_buf_putc(b, '\t');
        an_tsv_put_num(b, s->ft_n > 0 ? s->ft_sum_ms / s->ft_n : NAN);
        upm_buf_putc(b, '\t');
        an_tsv_put_num(b, s->base_ft_n > 0 ? s->base_ft_sum_ms / s->base_ft_n : NAN);
        upm_buf_putc(b, '\t');
        an_tsv_put_num(b, s->base_days > 0 ? s->base_events / (s->base_days * 24) : NAN);
        upm_buf_putc(b, '\n');
    }
}

/*
 * Results go to ClickHouse on their own thread and client: two replicated
 * inserts, each a part committed through ZooKeeper (0.1-0.3 s apiece on the
 * bench machine), would otherwise lengthen every publishing cycle. One batch
 * in flight: a cycle whose previous batch is still being written waits for
 * it, so nothing is dropped and nothing queues without bound.
 */
static void write_batch(struct analyzer *an, struct upm_buf *rows, struct upm_buf *srows)
{
    struct upm_ch_error err;
    int64_t t0 = upm_clock_mono_ns();
    if (rows->len > 0 &&
        upm_ch_insert(an->w.ch, "analyzer_stats",
                      "event_date, ts, window, dimension, segment, metric, value, centre, lcl, "
                      "ucl, rules, baseline",
                      "TabSeparated", rows->data, rows->len, &err) != 0) {
        upm_prom_inc(an->s_write_err, 1);
        upm_log_warn(MOD, "writing analyzer_stats failed | code=%d error=\"%s\"", err.code,
                     err.message);
    }
    if (srows->len > 0 &&
        upm_ch_insert(an->w.ch, "seller_scores",
                      "event_date, ts, company_id, rank, score, reasons, events_1h, "
                      "failure_rate_1h, failure_rate_own, failure_rate_peers, latency_1h_ms, "
                      "latency_own_ms, events_per_hour_own",
                      "TabSeparated", srows->data, srows->len, &err) != 0) {
        upm_prom_inc(an->s_write_err, 1);
        upm_log_warn(MOD, "writing seller_scores failed | code=%d error=\"%s\"", err.code,
                     err.message);
    }
    upm_log_debug(MOD, "results written | seconds=%.3f bytes=%zu",
                  (double)(upm_clock_mono_ns() - t0) / 1e9, rows->len + srows->len);
    upm_buf_reset(rows);
    upm_buf_reset(srows);
}

static void *writer_main(void *opaque)
{
    struct analyzer *an = opaque;
    pthread_mutex_lock(&an->w.mu);
    for (;;) {
        while (!an->w.have && !an->w.stop)
            pthread_cond_wait(&an->w.cv, &an->w.mu);
        if (!an->w.have)
            break; /* stopping, nothing pending */
        an->w.have = false;
        an->w.busy = true;
        pthread_mutex_unlock(&an->w.mu);
        write_batch(an, &an->w.rows, &an->w.srows);
        pthread_mutex_lock(&an->w.mu);
        an->w.busy = false;
        pthread_cond_broadcast(&an->w.cv);
    }
    pthread_mutex_unlock(&an->w.mu);
    return NULL;
}

/* Hand the cycle's rows to the writer (buffers are swapped, not copied). */
static void write_results(struct analyzer *an)
{
    if (an->rows.len == 0 && an->srows.len == 0)
        return;
    if (!an->w.started) {
        write_batch(an, &an->rows, &an->srows);
        return;
    }
    pthread_mutex_lock(&an->w.mu);
    while (an->w.have || an->w.busy)
        pthread_cond_wait(&an->w.cv, &an->w.mu);
    struct upm_buf t = an->w.rows;
    an->w.rows = an->rows;
    an->rows = t;
    t = an->w.srows;
    an->w.srows = an->srows;
    an->srows = t;
    an->w.have = true;
    pthread_cond_broadcast(&an->w.cv);
    pthread_mutex_unlock(&an->w.mu);
}

/* ------------------------------------------------------------------------ */
/* The cycle                                                                */

/*
 * What a standby keeps warm too: the trailing per-minute history, the
 * weekly slots and the new sellers (and the attempt sketches, see
 * refresh_attempts). All schedules are in data
 * time (now_min), so a simulation at high speed refreshes them as often per
 * simulated hour as production does per real hour.
 */
static int refresh_history(struct analyzer *an, int64_t now_min, int64_t now_s)
{
    /* Trailing minutes: the whole day on first use (or after a jump), then
     * the last few minutes again, since their rows may still be arriving. */
    int64_t from = an->trail_end - 3;
    if (an->trail_end == 0 || an->trail_end > now_min || now_min - an->trail_end > TRAIL_MIN)
        from = now_min - TRAIL_MIN;
    int64_t r[1][2] = {{from, now_min}};
    if (fetch_minutes(an, an->trail, (const int64_t(*)[2])r, 1, "minutes") != 0)
        return -1;
    an->trail_end = now_min;
    hist_evict_before(an->trail, now_min - TRAIL_MIN);

    /* The slots span [centre - 60, centre + 40): good for 10 minutes. */
    bool due = an->weekly_at == 0 || now_min < an->weekly_at || now_min - an->weekly_at >= 10;
    if (due && an->cfg.baseline_weeks > 0) {
        int64_t wr[12][2];
        for (int64_t k = 1; k <= an->cfg.baseline_weeks; k++) {
            wr[k - 1][0] = now_min - k * WEEK_MIN - 60;
            wr[k - 1][1] = now_min - k * WEEK_MIN + 40;
        }
        hist_destroy(an->weekly);
        an->weekly = hist_create();
        if (fetch_minutes(an, an->weekly, (const int64_t(*)[2])wr, (size_t)an->cfg.baseline_weeks,
                          "minutes_weekly") != 0)
            return -1;
        an->weekly_at = now_min;
    }
    int64_t every = an->cfg.baseline_refresh_ms / 60000;
    if (every < 1)
        every = 1;
    if (an->thresholds_at == 0 || now_min < an->thresholds_at ||
        now_min - an->thresholds_at >= every) {
        if (fetch_new_sellers(an, now_s) != 0)
            return -1;
        an->thresholds_at = now_min;
    }
    return 0;
}

/*
 * The last hour of attempts: all of it on first use (or after a gap or a jump
 * of the clock), then the last 3 minutes again (rows of a recent minute may
 * still be arriving) and the new ones. Once per minute: by the leader in its
 * working cycles and by a warm standby, so that a takeover's first cycle
 * reads a few minutes, not the hour (1.7 s at 1,000 events/s).
 */
static int refresh_attempts(struct analyzer *an, int64_t now_min)
{
    if (an->att_end == now_min)
        return 0;
    int64_t from = an->att_end - 3;
    if (an->att_end == 0 || an->att_end > now_min || from < now_min - 60)
        from = now_min - 60;
    if (fetch_attempts(an, from, now_min) != 0)
        return -1;
    an->att_end = now_min;
    att_evict_before(an->att, now_min - 60);
    return 0;
}

/* The current windows' quantile, uniq and attempt figures (leader only). */
static int refresh_windows(struct analyzer *an, int64_t now_min)
{
    memset(an->det, 0, sizeof(an->det));
    if (fetch_window_detail(an, now_min) != 0 || refresh_attempts(an, now_min) != 0)
        return -1;
    attempt_windows(an, now_min);
    return 0;
}

/* "Now" of the analysis, in seconds; 0 with *now_s = 0 when the data clock
 * has no data yet; -1 on a failed query. */
static int analysis_now(struct analyzer *an, int64_t *now_s)
{
    *now_s = 0;
    if (strcmp(an->cfg.clock, "data") == 0) {
        int64_t wm;
        if (fetch_watermark(an, &wm) != 0)
            return -1;
        if (wm > 0)
            *now_s = wm - an->cfg.settle_ms / 1000;
        return 0;
    }
    *now_s = upm_clock_real_ns() / 1000000000 - an->cfg.settle_ms / 1000;
    return 0;
}

int analyzer_warm(struct analyzer *an)
{
    int64_t now_s;
    if (analysis_now(an, &now_s) != 0)
        return -1;
    if (now_s == 0)
        return 0;
    if (refresh_history(an, now_s / 60, now_s) != 0)
        return -1;
    return refresh_attempts(an, now_s / 60);
}

int analyzer_cycle(struct analyzer *an)
{
    int64_t t0 = upm_clock_mono_ns();
    int64_t now_s;
    if (analysis_now(an, &now_s) != 0)
        goto fail;
    if (now_s == 0) {
        upm_log_info(MOD, "no data yet");
        upm_prom_inc(an->s_cycles_ok, 1);
        return 0;
    }
    int64_t now_min = now_s / 60; /* windows end at the current minute's start */
    if (now_min == atomic_load(&an->analysed_min)) {
        upm_prom_set(an->s_last, (double)upm_clock_real_ns() / 1e9);
        upm_prom_inc(an->s_cycles_ok, 1);
        return 0;
    }

    if (refresh_history(an, now_min, now_s) != 0 || refresh_windows(an, now_min) != 0)
        goto fail;
    struct seller_row *sellers = NULL;
    size_t nsellers = 0;
    if (fetch_sellers(an, now_min, &sellers, &nsellers) != 0)
        goto fail;

    /* Peers: the marketplace over the same hour. */
    struct hist_counters all;
    hist_sum(an->trail, 0, now_min - 60, now_min, &all);
    struct an_peers peers = {all.v[HC_SAVES] + all.v[HC_ERRORS], all.v[HC_ERRORS], 0};
    if (nsellers > 0) {
        /* Sellers differ from each other by nature: their spread is the
         * yardstick for "unlike its peers", not the binomial noise. */
        double *rates = upm_malloc(2 * nsellers * sizeof(double));
        size_t nr = 0;
        for (size_t i = 0; i < nsellers; i++) {
            if (sellers[i].s.tries > 0)
                rates[nr++] = sellers[i].s.errors / sellers[i].s.tries;
        }
        peers.spread = an_peer_spread(rates, nr, rates + nsellers);
        free(rates);
    }
    for (size_t i = 0; i < nsellers; i++)
        sellers[i].score = an_seller_score(&sellers[i].s, &peers, an->cfg.seller_prior_tries,
                                           (double)an->cfg.seller_min_tries,
                                           an->cfg.seller_reason_z, &sellers[i].reasons);
    qsort(sellers, nsellers, sizeof(*sellers), cmp_score);

    choose_segments(an, now_min);
    upm_buf_reset(&an->rows);
    upm_buf_reset(&an->srows);
    fmt_date(now_min * 60, an->row_date, sizeof(an->row_date));
    fmt_datetime(now_min * 60, an->row_datetime, sizeof(an->row_datetime));
    struct sample *s = upm_malloc(sizeof(*s));
    bool published = false;
    if (an->gate(an->gate_opaque, true)) {
        for (int w = 0; w < NWIN; w++) {
            for (size_t seg = 0; seg < hist_nsegments(an->trail); seg++) {
                if (an->chosen[seg])
                    publish_segment(an, w, seg, now_min, s);
            }
        }
        struct pubctx p = {an, "today", "all", "all"};
        if (an->have_new_sellers) {
            put(&p, an->m_sn, an->new_sellers);
            row(&p, "sellers_new", an->new_sellers, NULL, 0, 0);
        }
        publish_sellers(an, sellers, nsellers, peers.tries > 0 ? peers.errors / peers.tries : NAN);
        sweep(an);
        upm_prom_set(an->s_data_time, (double)(now_min * 60));
        upm_prom_set(an->s_dropped, (double)hist_dropped_segments(an->trail));
        published = true;
        atomic_store(&an->analysed_min, now_min);
        an->gate(an->gate_opaque, false);
    }
    free(s);
    free(sellers);
    size_t nrows = an->rows.len;
    if (published) {
        write_results(an);
        upm_prom_set(an->s_last, (double)upm_clock_real_ns() / 1e9);
    }
    double sec = (double)(upm_clock_mono_ns() - t0) / 1e9;
    upm_prom_observe(an->s_cycle_sec, sec);
    upm_prom_inc(an->s_cycles_ok, 1);
    upm_log_debug(MOD, "cycle | now=%" PRId64 " seconds=%.3f sellers=%zu rows=%zu", now_min * 60,
                  sec, nsellers, nrows);
    return 0;
fail:
    upm_prom_inc(an->s_cycles_err, 1);
    upm_prom_observe(an->s_cycle_sec, (double)(upm_clock_mono_ns() - t0) / 1e9);
    return -1;
}

/* ------------------------------------------------------------------------ */

struct analyzer *analyzer_create(const struct an_config *cfg, const struct upm_ch_config *ch,
                                 struct upm_prom_registry *reg, an_gate_fn gate, void *gate_opaque,
                                 const volatile int *stop, char *errstr, size_t errstr_size)
{
    struct analyzer *an = upm_calloc(1, sizeof(*an));
    an->cfg = *cfg;
    an->reg = reg;
    an->gate = gate;
    an->gate_opaque = gate_opaque;
    an->stop = stop;
    an->ch = upm_ch_client_create(ch, reg, errstr, errstr_size);
    if (!an->ch) {
        free(an);
        return NULL;
    }
    upm_ch_client_set_stop(an->ch, stop);
    /* ClickHouse 18.16 keeps running a query whose client gave up, and a
     * retry starts another copy: make the server stop at the same deadline. */
    char secs[32];
    snprintf(secs, sizeof(secs), "%lld", (long long)((ch->query_timeout_ms + 999) / 1000));
    upm_ch_client_set_setting(an->ch, "max_execution_time", secs);
    an->db = upm_ch_client_database(an->ch);
    an->w.ch = upm_ch_client_create(ch, reg, errstr, errstr_size);
    if (!an->w.ch) {
        upm_ch_client_destroy(an->ch);
        free(an);
        return NULL;
    }
    upm_ch_client_set_stop(an->w.ch, stop);
    upm_ch_client_set_setting(an->w.ch, "max_execution_time", secs);
    pthread_mutex_init(&an->w.mu, NULL);
    pthread_cond_init(&an->w.cv, NULL);
    upm_buf_init(&an->w.rows, 0);
    upm_buf_init(&an->w.srows, 0);
    /* Without the thread (it failed to start) results are written inline. */
    an->w.started = pthread_create(&an->w.th, NULL, writer_main, an) == 0;
    an->trail = hist_create();
    an->weekly = hist_create();
    an->att = att_create();
    upm_buf_init(&an->sql, 0);
    upm_buf_init(&an->resp, 256u << 20);
    upm_buf_init(&an->rows, 0);
    upm_buf_init(&an->srows, 0);
    for (size_t i = 0; i < HIST_MAX_SEGMENTS; i++)
        an->thr[i] = NAN;
    register_metrics(an);
    return an;
}

void analyzer_destroy(struct analyzer *an)
{
    if (!an)
        return;
    if (an->w.started) {
        /* A batch handed over is still written (one attempt once stopping). */
        pthread_mutex_lock(&an->w.mu);
        an->w.stop = true;
        pthread_cond_broadcast(&an->w.cv);
        pthread_mutex_unlock(&an->w.mu);
        pthread_join(an->w.th, NULL);
    }
    pthread_mutex_destroy(&an->w.mu);
    pthread_cond_destroy(&an->w.cv);
    upm_buf_free(&an->w.rows);
    upm_buf_free(&an->w.srows);
    upm_ch_client_destroy(an->w.ch);
    upm_ch_client_destroy(an->ch);
    hist_destroy(an->trail);
    hist_destroy(an->weekly);
    att_destroy(an->att);
    free(an->base);
    upm_buf_free(&an->sql);
    upm_buf_free(&an->resp);
    upm_buf_free(&an->rows);
    upm_buf_free(&an->srows);
    free_exported(an->prev, an->nprev);
    free(an->prev);
    free_exported(an->cur, an->ncur);
    free(an->cur);
    free(an);
}
