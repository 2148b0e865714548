/*
 * sim — the simulator's generator: a seeded, deterministic discrete-event
 * model of a marketplace's upload attempts (population, attempts, time,
 * incidents), producing struct upm_event values in simulated-time order.
 *
 * Model, per simulated second t:
 *   attempts arrive as a Poisson process of rate
 *     attempt_rate * (1 + daily_amplitude * cos(2π(t - daily_peak)/1d))
 *                  * (1 + weekly_amplitude * cos(2π(t - weekly_peak)/7d))
 *     * (1 - throughput_drop magnitude, for an active drop incident)
 *   (sampled by thinning, so the rate varies smoothly), plus the extra
 *   attempts/s of active seller_burst incidents;
 *   an attempt picks a seller by Zipf(zipf_s) over the current population
 *   (ranks 1..N; new sellers join at the tail at new_sellers_per_day), an
 *   item of its catalogue, its country and origin (the seller's own with
 *   probability seller_affinity, else the global mix);
 *   each try emits an UPDATE with probability update_share, then a SAVE
 *   (is_created, up_ts = ts + full time) with the success probability of
 *   its try number (per origin and country; shifted on the logit scale by
 *   the seller's reliability), else an ERROR; after an ERROR the attempt is
 *   abandoned with probability abandon_share (always after max_tries), else
 *   retried after a log-normal gap.
 *
 * Determinism: one xoshiro256** stream seeded from the seed; no clock is
 * read. Same seed and configuration: the same events, bit for bit.
 *
 * Thread-safety: a struct sim belongs to one thread.
 */
#ifndef UPMON_SIM_H
#define UPMON_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "upmon/buf.h"
#include "upmon/config.h"
#include "upmon/event.h"

#define SIM_MAX_INCIDENTS 64
#define SIM_MAX_MIX       64 /* countries or origins in a mix */
#define SIM_MAX_TRIES_CAP 64

/* The `simulator` configuration section (sim_config_keys). */
struct sim_config {
    int64_t seed;
    char *start; /* RFC 3339 UTC ("2026-01-01T00:00:00Z") or "now" */
    double speed;
    double rate;
    int64_t burst;
    int64_t count;
    int64_t duration_ms;
    int64_t warmup_ms; /* simulated time run before start, its events discarded */
    char *output;      /* "kafka", "-" (stdout) or a file path */
    int64_t flush_timeout_ms;
    int64_t sellers;
    double zipf_s;
    double new_sellers_per_day;
    double seller_affinity;
    double seller_reliability_sd;
    int64_t catalogue_median;
    double attempt_rate;
    double daily_amplitude;
    int64_t daily_peak_hour;
    double weekly_amplitude;
    double update_share;
    double p_success_1, p_success_2, p_success_3;
    struct upm_strlist success_overrides; /* "origin:NAME=p1/p2/p3", "country:CC=p1/p2/p3" */
    double abandon_share;
    int64_t max_tries;
    int64_t retry_gap_median_ms;
    double retry_gap_sigma;
    int64_t full_time_median_ms;
    double full_time_sigma;
    int64_t update_delay_median_ms;
    struct upm_strlist countries; /* "CC=weight" */
    struct upm_strlist origins;   /* "name=weight" */
    int64_t media_max;
    double media_own_share, media_external_share, media_bad_share;
    char *cdn_host;
};

extern const struct upm_config_key sim_config_keys[];
extern const size_t sim_config_nkeys;

enum sim_incident_kind {
    SIM_INC_FAILURE_SPIKE = 0, /* magnitude in [0,1]: share of would-be successes that fail */
    SIM_INC_LATENCY,           /* magnitude >= 1: full time and retry gaps multiplied */
    SIM_INC_THROUGHPUT_DROP,   /* magnitude in [0,1]: share of attempts that do not arrive */
    SIM_INC_SELLER_BURST,      /* magnitude > 0: extra attempts per simulated second */
    SIM_INC_SELLER_FAILURES,   /* magnitude in [0,1]: share of the seller's tries that fail */
    SIM_INC_KIND_COUNT,
};

struct sim_incident {
    char name[65];
    enum sim_incident_kind kind;
    int64_t start_ns;    /* offset from the simulation start */
    int64_t duration_ns; /* > 0 */
    double magnitude;
    char country[3]; /* "" = any */
    char origin[65]; /* "" = any */
    int64_t seller;  /* rank (1 = most active); 0 = any (required for seller kinds) */
};

const char *sim_incident_kind_name(enum sim_incident_kind kind);

/*
 * Parse the `incidents` top-level key of a YAML configuration (len bytes,
 * name used in messages): a sequence of mappings with keys name, kind,
 * start, duration, magnitude and, by kind, country, origin, seller. Absent
 * key: 0 incidents. Unknown keys, duplicates, missing required keys, bad
 * values and magnitudes outside their kind's range are errors, reported as
 * "name:line:column: incidents[i].key: why". Other top-level keys are not
 * examined (the config loader owns them). Returns the number of incidents
 * (0..SIM_MAX_INCIDENTS) written to out, or -1 with errstr filled.
 * Reentrant.
 */
int sim_incidents_parse(const char *yaml, size_t len, const char *name, struct sim_incident *out,
                        char *errstr, size_t errstr_size);

/* Parse an RFC 3339 UTC time "YYYY-MM-DDTHH:MM:SS[.fff…]Z" into ns since
 * the epoch. 0, or -1 if malformed or out of range. */
int sim_parse_time(const char *s, int64_t *out_ns);

/* Per-event facts the wire format does not carry (tests, metrics). */
struct sim_meta {
    uint32_t try_no;           /* 1-based try of the attempt */
    bool first_of_attempt;     /* first event of its attempt */
    bool last_of_attempt;      /* SAVE, or the ERROR that abandons */
    int64_t attempt_first_ts;  /* ts_ns of the attempt's first event */
    uint32_t seller_rank;      /* 1 = most active */
    uint32_t active_incidents; /* incidents active at ts_ns (bit i = incident i, i < 32) */
};

struct sim;

/*
 * Create a generator from cfg (copied as needed; not referenced after
 * return), start_ns (simulated time of the first arrival) and n incidents
 * (copied). NULL with errstr on a bad configuration (malformed mix or
 * override entries, shares that do not fit, an incident naming a country or
 * origin outside the mix). Caller frees with sim_destroy.
 */
struct sim *sim_create(const struct sim_config *cfg, int64_t start_ns,
                       const struct sim_incident *incidents, size_t n, char *errstr,
                       size_t errstr_size);

/* NULL-safe. */
void sim_destroy(struct sim *s);

/*
 * Produce the next event in simulated-time order into *ev (and *meta when
 * not NULL). ev's strings are copied into its arrays; ev->media and
 * ev->data point into storage owned by the generator, valid until the next
 * call: never pass ev to upm_event_clear. Never fails.
 */
void sim_next(struct sim *s, struct upm_event *ev, struct sim_meta *meta);

/* Simulated time of the last event produced (start_ns before the first). */
int64_t sim_now(const struct sim *s);

/* Incidents as given to sim_create, and whether incident i is active at
 * simulated time t. */
size_t sim_incident_count(const struct sim *s);
const struct sim_incident *sim_incident(const struct sim *s, size_t i);
bool sim_incident_active_at(const struct sim *s, size_t i, int64_t t_ns);

/* The seasonal rate multiplier at simulated time t: daily cycle peaking at
 * daily_peak_hour UTC, weekly cycle peaking on Wednesday noon UTC. */
double sim_season(const struct sim *s, int64_t t_ns);

/* Current seller population (grows with new_sellers_per_day). */
size_t sim_population(const struct sim *s);

/* Probability that an attempt starting now picks the seller of this rank
 * (Zipf over the current population); tests compare observed shares. */
double sim_seller_share(const struct sim *s, uint32_t rank);

/* Expected share of attempts (outside incidents) from country cc: the
 * Zipf-weighted mix of the sellers' own countries and the global mix. Same
 * for an origin. */
double sim_expected_country_share(const struct sim *s, const char *cc);
double sim_expected_origin_share(const struct sim *s, const char *origin);

/* Success probability of try t (1-based) for an origin and a country,
 * before seller reliability and incidents. -1 for unknown names. */
double sim_success_prob(const struct sim *s, const char *origin, const char *cc, uint32_t t);

/*
 * Append ev as upm_event_serialize would, byte for byte, without printf:
 * the hot path of --output and Kafka. Falls back to upm_event_serialize
 * when a string needs escaping. 0, or -1 if out's limit was reached (out
 * unchanged).
 */
int sim_serialize(const struct upm_event *ev, struct upm_buf *out);

/*
 * Token bucket pacing the output: rate tokens per second, at most burst
 * stored (so never more than burst events back to back above the rate).
 * Starts full. Times are monotonic ns supplied by the caller (tests drive a
 * fake clock).
 */
struct sim_bucket {
    double rate, burst, tokens;
    int64_t last_ns;
};

void sim_bucket_init(struct sim_bucket *b, double rate, double burst, int64_t now_ns);

/* Take one token: 0 when taken, else the ns until one will be available. */
int64_t sim_bucket_take(struct sim_bucket *b, int64_t now_ns);

#endif
