/*
 * sim — see sim.h for the model. The hot path (sim_next + sim_serialize)
 * makes no allocation and no printf call: the simulator must generate over
 * a million events per second on one core.
 */
#include "sim.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "upmon/alloc.h"

#define NS_PER_S  1000000000.0
#define DAY_NS    (86400.0 * NS_PER_S)
#define WEEK_NS   (7.0 * DAY_NS)
#define MEDIA_CAP 16
#define URL_MAX   160
#define DATA_MAX  96

/* ---- configuration table ---------------------------------------------- */

#define OFF(f) offsetof(struct sim_config, f)
#define NONE   1, 0 /* no range */

const struct upm_config_key sim_config_keys[] = {
    {"seed", UPM_CFG_INT, OFF(seed), "1", 0, 9.2e18, NULL,
     "PRNG seed; the same seed and configuration give byte-identical output.", 0},
    {"start", UPM_CFG_STRING, OFF(start), "2026-01-01T00:00:00Z", NONE, NULL,
     "Simulated time of the first event: RFC 3339 UTC, or \"now\" (then not reproducible).", 0},
    {"speed", UPM_CFG_DOUBLE, OFF(speed), "0", 0, 1e9, NULL,
     "Simulated seconds per real second (1 = real time); 0 = do not pace by simulated time.", 0},
    {"rate", UPM_CFG_DOUBLE, OFF(rate), "0", 0, 1e9, NULL,
     "Output limit in events per real second (token bucket); 0 = as fast as possible.", 0},
    {"burst", UPM_CFG_INT, OFF(burst), "1000", 1, 1e9, NULL,
     "Token bucket size: the most events sent back to back above the rate.", 0},
    {"count", UPM_CFG_INT, OFF(count), "0", 0, 9.2e18, NULL,
     "Stop after this many events; 0 = no limit.", 0},
    {"duration", UPM_CFG_DURATION_MS, OFF(duration_ms), "0", NONE, NULL,
     "Stop after this much real time; 0 = no limit.", 0},
    {"warmup", UPM_CFG_DURATION_MS, OFF(warmup_ms), "10m", 0, 86400000, NULL,
     "Simulated time generated before start and discarded, so the first events come from a "
     "steady state (retries in flight) rather than only first tries; 0 = start empty. Costs "
     "about attempt_rate x warmup generated events at start.",
     0},
    {"output", UPM_CFG_STRING, OFF(output), "kafka", NONE, NULL,
     "Where events go: \"kafka\" (the kafka section's topic), \"-\" (stdout, JSON lines) or a "
     "file path.",
     0},
    {"flush_timeout", UPM_CFG_DURATION_MS, OFF(flush_timeout_ms), "10s", 0, 3600000, NULL,
     "On shutdown, how long to wait for queued Kafka messages before reporting them undelivered.",
     0},
    {"sellers", UPM_CFG_INT, OFF(sellers), "50000", 1, 10000000, NULL, "Initial seller population.",
     0},
    {"zipf_s", UPM_CFG_DOUBLE, OFF(zipf_s), "1.0", 0, 4, NULL,
     "Zipf exponent of seller activity (0 = uniform).", 0},
    {"new_sellers_per_day", UPM_CFG_DOUBLE, OFF(new_sellers_per_day), "200", 0, 1e7, NULL,
     "New sellers joining per simulated day.", 0},
    {"seller_affinity", UPM_CFG_DOUBLE, OFF(seller_affinity), "0.8", 0, 1, NULL,
     "Share of a seller's attempts from its own country and origin (else the global mix).", 0},
    {"seller_reliability_sd", UPM_CFG_DOUBLE, OFF(seller_reliability_sd), "0.5", 0, 5, NULL,
     "Spread of seller reliability: s.d. of a per-seller shift of success log-odds.", 0},
    {"catalogue_median", UPM_CFG_INT, OFF(catalogue_median), "200", 1, 1000000, NULL,
     "Median items per seller catalogue (log-normal).", 0},
    {"attempt_rate", UPM_CFG_DOUBLE, OFF(attempt_rate), "400", 0.001, 1e9, NULL,
     "Mean new attempts per simulated second (events are about 2.5 times that).", 0},
    {"daily_amplitude", UPM_CFG_DOUBLE, OFF(daily_amplitude), "0.5", 0, 0.99, NULL,
     "Relative amplitude of the daily rate cycle.", 0},
    {"daily_peak_hour", UPM_CFG_INT, OFF(daily_peak_hour), "14", 0, 23, NULL,
     "UTC hour of the daily peak.", 0},
    {"weekly_amplitude", UPM_CFG_DOUBLE, OFF(weekly_amplitude), "0.2", 0, 0.99, NULL,
     "Relative amplitude of the weekly rate cycle (peak on Wednesday).", 0},
    {"update_share", UPM_CFG_DOUBLE, OFF(update_share), "0.3", 0, 1, NULL,
     "Share of tries that emit an UPDATE before their outcome.", 0},
    {"p_success_1", UPM_CFG_DOUBLE, OFF(p_success_1), "0.05", 0, 1, NULL,
     "Success probability of a first try.", 0},
    {"p_success_2", UPM_CFG_DOUBLE, OFF(p_success_2), "0.40", 0, 1, NULL,
     "Success probability of a second try.", 0},
    {"p_success_3", UPM_CFG_DOUBLE, OFF(p_success_3), "0.80", 0, 1, NULL,
     "Success probability from the third try on.", 0},
    {"success_overrides", UPM_CFG_STRING_LIST, OFF(success_overrides), "", NONE, NULL,
     "Per origin or country success probabilities: \"origin:NAME=p1/p2/p3\", "
     "\"country:CC=p1/p2/p3\" (country wins over origin).",
     0},
    {"abandon_share", UPM_CFG_DOUBLE, OFF(abandon_share), "0.1", 0, 1, NULL,
     "Share of failed tries after which the attempt is abandoned.", 0},
    {"max_tries", UPM_CFG_INT, OFF(max_tries), "10", 1, SIM_MAX_TRIES_CAP, NULL,
     "Tries after which an attempt is abandoned.", 0},
    {"retry_gap_median", UPM_CFG_DURATION_MS, OFF(retry_gap_median_ms), "60s", 1, 86400000, NULL,
     "Median simulated time between an ERROR and the next try (log-normal).", 0},
    {"retry_gap_sigma", UPM_CFG_DOUBLE, OFF(retry_gap_sigma), "1.0", 0, 4, NULL,
     "Log-normal sigma of the retry gap.", 0},
    {"full_time_median", UPM_CFG_DURATION_MS, OFF(full_time_median_ms), "3s", 1, 86400000, NULL,
     "Median full time (up_ts - ts_ns of the SAVE; log-normal).", 0},
    {"full_time_sigma", UPM_CFG_DOUBLE, OFF(full_time_sigma), "0.8", 0, 4, NULL,
     "Log-normal sigma of the full time.", 0},
    {"update_delay_median", UPM_CFG_DURATION_MS, OFF(update_delay_median_ms), "2s", 1, 86400000,
     NULL, "Median simulated time from an UPDATE to its try's outcome (log-normal, sigma 1).", 0},
    {"countries", UPM_CFG_STRING_LIST, OFF(countries),
     "RU=0.55,KZ=0.1,BY=0.08,UZ=0.07,KG=0.05,AM=0.04,TR=0.04,CN=0.04,DE=0.03", NONE, NULL,
     "Global country mix, \"CC=weight\" (weights are normalised).", 0},
    {"origins", UPM_CFG_STRING_LIST, OFF(origins),
     "upload/ui=0.35,upload/api=0.25,update/manual=0.2,update/xlsx=0.2", NONE, NULL,
     "Global origin mix, \"name=weight\".", 0},
    {"media_max", UPM_CFG_INT, OFF(media_max), "5", 0, MEDIA_CAP, NULL,
     "Most media links per event (uniform 0..media_max).", 0},
    {"media_own_share", UPM_CFG_DOUBLE, OFF(media_own_share), "0.85", 0, 1, NULL,
     "Share of media links on the own CDN.", 0},
    {"media_external_share", UPM_CFG_DOUBLE, OFF(media_external_share), "0.12", 0, 1, NULL,
     "Share of external media links.", 0},
    {"media_bad_share", UPM_CFG_DOUBLE, OFF(media_bad_share), "0.03", 0, 1, NULL,
     "Share of malformed media links (the three shares must sum to 1).", 0},
    {"cdn_host", UPM_CFG_STRING, OFF(cdn_host), "cdn.upmon.example", NONE, NULL,
     "Host of own-CDN media links (match it in ingest's CDN hosts).", 0},
};
const size_t sim_config_nkeys = sizeof(sim_config_keys) / sizeof(sim_config_keys[0]);

/* ---- PRNG: xoshiro256** seeded by splitmix64 -------------------------- */

struct rng {
    uint64_t s[4];
};

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(struct rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* Uniform in [0, 1). */
static double rng_unif(struct rng *r)
{
    return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

/* Uniform in (0, 1]: safe under log(). */
static double rng_unif_pos(struct rng *r)
{
    return ((double)(rng_next(r) >> 11) + 1.0) * 0x1.0p-53;
}

/* Uniform in [0, n), n > 0; Lemire's multiply-shift (bias < 2^-32 for the
 * small n used here, far below anything a test could see). */
static uint64_t rng_below(struct rng *r, uint64_t n)
{
    return (uint64_t)(((unsigned __int128)rng_next(r) * n) >> 64);
}

static double rng_normal(struct rng *r)
{
    /* Box-Muller, one value per call: simple and deterministic. */
    double u1 = rng_unif_pos(r), u2 = rng_unif(r);
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

static double rng_lognormal(struct rng *r, double median, double sigma)
{
    return sigma > 0 ? median * exp(sigma * rng_normal(r)) : median;
}

static double rng_exp(struct rng *r, double rate)
{
    return -log(rng_unif_pos(r)) / rate;
}

/* ---- model state ------------------------------------------------------ */

struct mix {
    char names[SIM_MAX_MIX][65];
    double cdf[SIM_MAX_MIX]; /* normalised, last = 1 */
    double p[SIM_MAX_MIX];
    size_t n;
};

struct seller {
    uint64_t company_id;
    uint64_t category_base;
    uint32_t catalogue;
    uint16_t country, origin;
    uint8_t ncategories;
    double reliability; /* logit shift */
};

struct attempt {
    int64_t next_ts;
    uint64_t seq; /* arrival order: deterministic tie-break */
    int64_t first_ts;
    uint64_t item_id;
    uint64_t category_id;
    uint32_t seller; /* index = rank - 1 */
    uint16_t country, origin;
    uint16_t try_no;
    uint8_t phase; /* PH_UPDATE or PH_OUTCOME */
};

enum { PH_UPDATE = 0, PH_OUTCOME = 1 };

struct sim {
    struct rng rng;
    uint64_t seed;
    struct sim_config cfg; /* scalars only; strings and lists are not kept */
    int64_t start_ns, now_ns;

    struct mix countries, origins;
    double (*succ)[3]; /* [origin * ncountries + country][min(try,3)-1] */

    struct seller *sellers;
    double *zipf_cum; /* zipf_cum[i] = sum_{k<=i} (k+1)^-s */
    size_t nsellers, cap_sellers;
    int64_t next_seller_ts;

    struct attempt *heap;
    size_t nheap, cap_heap;
    uint64_t arrivals;
    int64_t next_arrival_ts;
    double lambda_max; /* attempts per ns, the thinning bound */

    struct sim_incident inc[SIM_MAX_INCIDENTS];
    size_t ninc;

    /* Per-event scratch the returned event points into. */
    char media[MEDIA_CAP][URL_MAX];
    char *media_ptr[MEDIA_CAP];
    char data[DATA_MAX];
    char cdn_host_buf[65];
};

static int parse_mix(const struct upm_strlist *l, const char *what, bool country, struct mix *m,
                     char *errstr, size_t errstr_size)
{
    double total = 0;
    memset(m, 0, sizeof(*m));
    if (l->count == 0 || l->count > SIM_MAX_MIX) {
        snprintf(errstr, errstr_size, "simulator.%s: need 1..%d entries", what, SIM_MAX_MIX);
        return -1;
    }
    for (size_t i = 0; i < l->count; i++) {
        const char *e = l->items[i];
        const char *eq = strrchr(e, '=');
        char *end = NULL;
        size_t nlen = eq ? (size_t)(eq - e) : 0;
        if (!eq || nlen == 0 || nlen > 64) {
            snprintf(errstr, errstr_size, "simulator.%s: \"%.80s\": expected name=weight", what, e);
            return -1;
        }
        errno = 0;
        double w = strtod(eq + 1, &end);
        if (errno || end == eq + 1 || *end || !isfinite(w) || w <= 0) {
            snprintf(errstr, errstr_size, "simulator.%s: \"%.80s\": weight must be > 0", what, e);
            return -1;
        }
        memcpy(m->names[i], e, nlen);
        m->names[i][nlen] = '\0';
        if (country && !upm_event_country_valid(m->names[i])) {
            snprintf(errstr, errstr_size, "simulator.%s: \"%s\" is not an ISO 3166 alpha-2 code",
                     what, m->names[i]);
            return -1;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(m->names[j], m->names[i]) == 0) {
                snprintf(errstr, errstr_size, "simulator.%s: \"%s\" listed twice", what,
                         m->names[i]);
                return -1;
            }
        }
        m->p[i] = w;
        total += w;
    }
    m->n = l->count;
    double acc = 0;
    for (size_t i = 0; i < m->n; i++) {
        m->p[i] /= total;
        acc += m->p[i];
        m->cdf[i] = acc;
    }
    m->cdf[m->n - 1] = 1.0;
    return 0;
}

static int mix_find(const struct mix *m, const char *name)
{
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->names[i], name) == 0)
            return (int)i;
    return -1;
}

static uint16_t mix_draw(const struct mix *m, struct rng *r)
{
    double u = rng_unif(r);
    size_t i = 0;
    while (i + 1 < m->n && u >= m->cdf[i])
        i++;
    return (uint16_t)i;
}

static int parse_prob3(const char *s, double p[3])
{
    const char *cur = s;
    for (int i = 0; i < 3; i++) {
        char *end = NULL;
        errno = 0;
        p[i] = strtod(cur, &end);
        if (errno || end == cur || !isfinite(p[i]) || p[i] < 0 || p[i] > 1)
            return -1;
        if (i < 2 && *end != '/')
            return -1;
        if (i == 2 && *end)
            return -1;
        cur = end + 1;
    }
    return 0;
}

static int apply_overrides(struct sim *s, const struct upm_strlist *l, char *errstr,
                           size_t errstr_size)
{
    size_t nc = s->countries.n, no = s->origins.n;
    /* Two passes so that a country entry wins over an origin entry
     * whatever the order of the list. */
    for (int pass = 0; pass < 2; pass++) {
        const char *prefix = pass == 0 ? "origin:" : "country:";
        for (size_t i = 0; i < l->count; i++) {
            const char *e = l->items[i];
            if (strncmp(e, "origin:", 7) != 0 && strncmp(e, "country:", 8) != 0) {
                snprintf(errstr, errstr_size,
                         "simulator.success_overrides: \"%.80s\": expected origin:NAME=p1/p2/p3 "
                         "or country:CC=p1/p2/p3",
                         e);
                return -1;
            }
            if (strncmp(e, prefix, strlen(prefix)) != 0)
                continue;
            const char *name = e + strlen(prefix);
            const char *eq = strrchr(name, '=');
            double p[3];
            char nm[65];
            size_t nlen = eq ? (size_t)(eq - name) : 0;
            if (!eq || nlen == 0 || nlen > 64 || parse_prob3(eq + 1, p) != 0) {
                snprintf(errstr, errstr_size,
                         "simulator.success_overrides: \"%.80s\": expected %sNAME=p1/p2/p3 with "
                         "probabilities in [0,1]",
                         e, prefix);
                return -1;
            }
            memcpy(nm, name, nlen);
            nm[nlen] = '\0';
            int idx = mix_find(pass == 0 ? &s->origins : &s->countries, nm);
            if (idx < 0) {
                snprintf(errstr, errstr_size,
                         "simulator.success_overrides: \"%.80s\": %s is not in simulator.%s", e, nm,
                         pass == 0 ? "origins" : "countries");
                return -1;
            }
            for (size_t o = 0; o < no; o++) {
                for (size_t c = 0; c < nc; c++) {
                    if ((pass == 0 && o != (size_t)idx) || (pass == 1 && c != (size_t)idx))
                        continue;
                    memcpy(s->succ[o * nc + c], p, sizeof(p));
                }
            }
        }
    }
    return 0;
}

static void add_seller(struct sim *s)
{
    if (s->nsellers == s->cap_sellers) {
        s->cap_sellers = s->cap_sellers ? s->cap_sellers * 2 : 1024;
        s->sellers = upm_realloc(s->sellers, s->cap_sellers * sizeof(*s->sellers));
        s->zipf_cum = upm_realloc(s->zipf_cum, s->cap_sellers * sizeof(*s->zipf_cum));
    }
    size_t i = s->nsellers++;
    struct seller *sl = &s->sellers[i];
    struct rng *r = &s->rng;
    sl->company_id = 100000 + i;
    sl->country = mix_draw(&s->countries, r);
    sl->origin = mix_draw(&s->origins, r);
    double cat = rng_lognormal(r, (double)s->cfg.catalogue_median, 1.0);
    sl->catalogue = cat < 1 ? 1 : cat > 1e6 ? 1000000 : (uint32_t)cat;
    sl->category_base = 1 + rng_below(r, 5000);
    sl->ncategories = (uint8_t)(1 + rng_below(r, 8));
    sl->reliability = s->cfg.seller_reliability_sd * rng_normal(r);
    double w = pow((double)(i + 1), -s->cfg.zipf_s);
    s->zipf_cum[i] = (i ? s->zipf_cum[i - 1] : 0) + w;
}

static uint32_t draw_seller(struct sim *s)
{
    double u = rng_unif(&s->rng) * s->zipf_cum[s->nsellers - 1];
    size_t lo = 0, hi = s->nsellers - 1;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->zipf_cum[mid] > u)
            hi = mid;
        else
            lo = mid + 1;
    }
    return (uint32_t)lo;
}

/* ---- heap of attempts by (next_ts, seq) -------------------------------- */

static bool before(const struct attempt *a, const struct attempt *b)
{
    return a->next_ts < b->next_ts || (a->next_ts == b->next_ts && a->seq < b->seq);
}

static void heap_push(struct sim *s, const struct attempt *a)
{
    if (s->nheap == s->cap_heap) {
        s->cap_heap = s->cap_heap ? s->cap_heap * 2 : 4096;
        s->heap = upm_realloc(s->heap, s->cap_heap * sizeof(*s->heap));
    }
    size_t i = s->nheap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!before(a, &s->heap[p]))
            break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = *a;
}

/* Re-seat the root after its key grew or it was replaced by the last. */
static void heap_sift_down(struct sim *s, size_t i)
{
    struct attempt a = s->heap[i];
    size_t n = s->nheap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && before(&s->heap[c + 1], &s->heap[c]))
            c++;
        if (!before(&s->heap[c], &a))
            break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    s->heap[i] = a;
}

static void heap_pop(struct sim *s)
{
    s->heap[0] = s->heap[--s->nheap];
    if (s->nheap)
        heap_sift_down(s, 0);
}

/* ---- incidents --------------------------------------------------------- */

static const char *const kind_names[SIM_INC_KIND_COUNT] = {
    "failure_spike", "latency", "throughput_drop", "seller_burst", "seller_failures",
};

const char *sim_incident_kind_name(enum sim_incident_kind kind)
{
    return (unsigned)kind < SIM_INC_KIND_COUNT ? kind_names[kind] : "unknown";
}

bool sim_incident_active_at(const struct sim *s, size_t i, int64_t t_ns)
{
    if (i >= s->ninc)
        return false;
    int64_t off = t_ns - s->start_ns;
    return off >= s->inc[i].start_ns && off - s->inc[i].start_ns < s->inc[i].duration_ns;
}

static bool inc_matches(const struct sim *s, const struct sim_incident *in, const struct attempt *a)
{
    if (in->country[0] && strcmp(in->country, s->countries.names[a->country]) != 0)
        return false;
    if (in->origin[0] && strcmp(in->origin, s->origins.names[a->origin]) != 0)
        return false;
    if (in->seller && (uint64_t)in->seller != (uint64_t)a->seller + 1)
        return false;
    return true;
}

/* ---- time -------------------------------------------------------------- */

int sim_parse_time(const char *s, int64_t *out_ns)
{
    int y, mo, d, h, mi, sec, n = 0;
    if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 ||
        n != 19)
        return -1;
    if (y < 1970 || y > 2261 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 ||
        sec > 59 || h < 0 || mi < 0 || sec < 0)
        return -1;
    const char *p = s + 19;
    int64_t frac = 0, scale = 100000000;
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9')
            return -1;
        while (*p >= '0' && *p <= '9') {
            frac += (*p - '0') * scale;
            scale /= 10;
            p++;
        }
    }
    if (p[0] != 'Z' || p[1])
        return -1;
    /* Days from civil (proleptic Gregorian), so no timegm/TZ dependency. */
    int yy = y - (mo <= 2);
    int era = yy / 400;
    int yoe = yy - era * 400;
    int doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    int64_t days = (int64_t)era * 146097 + doe - 719468;
    *out_ns = ((days * 86400 + h * 3600 + mi * 60 + sec) * INT64_C(1000000000)) + frac;
    return 0;
}

/* Rate multiplier of the daily and weekly cycles at t. The epoch was a
 * Thursday, so Wednesday noon UTC, the weekly peak, is 6.5 days into each
 * week counted from it. */
double sim_season(const struct sim *s, int64_t t)
{
    double td = fmod((double)t, DAY_NS) - (double)s->cfg.daily_peak_hour * 3600.0 * NS_PER_S;
    double tw = fmod((double)t, WEEK_NS) - 6.5 * DAY_NS;
    double d = 1.0 + s->cfg.daily_amplitude * cos(2.0 * M_PI * td / DAY_NS);
    double w = 1.0 + s->cfg.weekly_amplitude * cos(2.0 * M_PI * tw / WEEK_NS);
    return d * w;
}

/* ---- create / destroy --------------------------------------------------- */

static void arrive(struct sim *s);
static void step(struct sim *s, struct upm_event *ev, struct sim_meta *meta);

struct sim *sim_create(const struct sim_config *cfg, int64_t start_ns,
                       const struct sim_incident *incidents, size_t n, char *errstr,
                       size_t errstr_size)
{
    struct sim *s = upm_calloc(1, sizeof(*s));
    s->cfg = *cfg;
    s->cfg.start = s->cfg.output = s->cfg.cdn_host = NULL;
    memset(&s->cfg.countries, 0, sizeof(s->cfg.countries));
    memset(&s->cfg.origins, 0, sizeof(s->cfg.origins));
    memset(&s->cfg.success_overrides, 0, sizeof(s->cfg.success_overrides));
    s->start_ns = s->now_ns = start_ns;
    s->seed = (uint64_t)cfg->seed;
    uint64_t x = s->seed;
    for (int i = 0; i < 4; i++)
        s->rng.s[i] = splitmix64(&x);

    double shares = cfg->media_own_share + cfg->media_external_share + cfg->media_bad_share;
    if (fabs(shares - 1.0) > 1e-9) {
        snprintf(errstr, errstr_size,
                 "simulator.media_*_share: own + external + bad must be 1, got %.6g", shares);
        goto fail;
    }
    if (!cfg->cdn_host || !cfg->cdn_host[0] || strlen(cfg->cdn_host) > 64 ||
        strpbrk(cfg->cdn_host, " /\"\\:@")) {
        snprintf(errstr, errstr_size, "simulator.cdn_host: need a plain host name");
        goto fail;
    }
    snprintf(s->cdn_host_buf, sizeof(s->cdn_host_buf), "%s", cfg->cdn_host);
    if (n > SIM_MAX_INCIDENTS) {
        snprintf(errstr, errstr_size, "incidents: at most %d", SIM_MAX_INCIDENTS);
        goto fail;
    }
    if (parse_mix(&cfg->countries, "countries", true, &s->countries, errstr, errstr_size) != 0 ||
        parse_mix(&cfg->origins, "origins", false, &s->origins, errstr, errstr_size) != 0)
        goto fail;
    s->succ = upm_calloc(s->countries.n * s->origins.n, sizeof(*s->succ));
    for (size_t i = 0; i < s->countries.n * s->origins.n; i++) {
        s->succ[i][0] = cfg->p_success_1;
        s->succ[i][1] = cfg->p_success_2;
        s->succ[i][2] = cfg->p_success_3;
    }
    if (apply_overrides(s, &cfg->success_overrides, errstr, errstr_size) != 0)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        const struct sim_incident *in = &incidents[i];
        if (in->country[0] && mix_find(&s->countries, in->country) < 0) {
            snprintf(errstr, errstr_size,
                     "incidents[%zu] (%s): country %s is not in "
                     "simulator.countries",
                     i, in->name, in->country);
            goto fail;
        }
        if (in->origin[0] && mix_find(&s->origins, in->origin) < 0) {
            snprintf(errstr, errstr_size,
                     "incidents[%zu] (%s): origin %s is not in "
                     "simulator.origins",
                     i, in->name, in->origin);
            goto fail;
        }
        s->inc[i] = *in;
    }
    s->ninc = n;

    for (int64_t i = 0; i < cfg->sellers; i++)
        add_seller(s);
    s->next_seller_ts =
        cfg->new_sellers_per_day > 0
            ? start_ns + (int64_t)rng_exp(&s->rng, cfg->new_sellers_per_day / DAY_NS)
            : INT64_MAX;
    s->lambda_max =
        cfg->attempt_rate / NS_PER_S * (1.0 + cfg->daily_amplitude) * (1.0 + cfg->weekly_amplitude);
    for (size_t i = 0; i < n; i++)
        if (s->inc[i].kind == SIM_INC_SELLER_BURST)
            s->lambda_max += s->inc[i].magnitude / NS_PER_S;
    for (size_t i = 0; i < MEDIA_CAP; i++)
        s->media_ptr[i] = s->media[i];
    if (cfg->warmup_ms > 0) {
        /* Run from start - warmup and drop what falls before start: the attempts then in
         * flight (retries pending) carry over, as in a system that was already running.
         * Incidents stay relative to start (they are inactive before it). */
        int64_t w0 = start_ns - cfg->warmup_ms * INT64_C(1000000);
        if (cfg->new_sellers_per_day > 0)
            s->next_seller_ts = w0 + (int64_t)rng_exp(&s->rng, cfg->new_sellers_per_day / DAY_NS);
        s->next_arrival_ts = w0 + (int64_t)rng_exp(&s->rng, s->lambda_max);
        struct upm_event ev;
        for (;;) {
            if (s->nheap == 0 || s->heap[0].next_ts > s->next_arrival_ts) {
                if (s->next_arrival_ts >= start_ns)
                    break;
                arrive(s);
            } else if (s->heap[0].next_ts >= start_ns) {
                break;
            } else {
                step(s, &ev, NULL);
            }
        }
        s->now_ns = start_ns;
    } else {
        s->next_arrival_ts = start_ns + (int64_t)rng_exp(&s->rng, s->lambda_max);
    }
    return s;
fail:
    sim_destroy(s);
    return NULL;
}

void sim_destroy(struct sim *s)
{
    if (!s)
        return;
    free(s->succ);
    free(s->sellers);
    free(s->zipf_cum);
    free(s->heap);
    free(s);
}

/* ---- generation --------------------------------------------------------- */

static void start_attempt(struct sim *s, int64_t t, int64_t forced_seller)
{
    struct rng *r = &s->rng;
    struct attempt a;
    memset(&a, 0, sizeof(a));
    a.seller = forced_seller >= 0 ? (uint32_t)forced_seller : draw_seller(s);
    const struct seller *sl = &s->sellers[a.seller];
    bool own = rng_unif(r) < s->cfg.seller_affinity;
    a.country = own ? sl->country : mix_draw(&s->countries, r);
    a.origin = own ? sl->origin : mix_draw(&s->origins, r);
    /* Throughput drop: thin the matching arrivals. */
    for (size_t i = 0; i < s->ninc; i++) {
        const struct sim_incident *in = &s->inc[i];
        if (in->kind == SIM_INC_THROUGHPUT_DROP && sim_incident_active_at(s, i, t) &&
            inc_matches(s, in, &a) && rng_unif(r) < in->magnitude)
            return;
    }
    a.item_id = sl->company_id * 1000000u + rng_below(r, sl->catalogue);
    a.category_id = sl->category_base + rng_below(r, sl->ncategories);
    a.seq = s->arrivals++;
    a.next_ts = a.first_ts = t;
    a.try_no = 1;
    a.phase = rng_unif(r) < s->cfg.update_share ? PH_UPDATE : PH_OUTCOME;
    heap_push(s, &a);
}

/* Advance the arrival processes (thinned Poisson) up to the first accepted
 * arrival. */
static void arrive(struct sim *s)
{
    struct rng *r = &s->rng;
    int64_t t = s->next_arrival_ts;
    while (s->next_seller_ts <= t) {
        add_seller(s);
        s->next_seller_ts += 1 + (int64_t)rng_exp(r, s->cfg.new_sellers_per_day / DAY_NS);
    }
    s->next_arrival_ts = t + 1 + (int64_t)rng_exp(r, s->lambda_max);
    double u = rng_unif(r) * s->lambda_max;
    double base_max = s->cfg.attempt_rate / NS_PER_S * (1.0 + s->cfg.daily_amplitude) *
                      (1.0 + s->cfg.weekly_amplitude);
    if (u < base_max) {
        if (u < s->cfg.attempt_rate / NS_PER_S * sim_season(s, t))
            start_attempt(s, t, -1);
        return;
    }
    u -= base_max;
    for (size_t i = 0; i < s->ninc; i++) {
        const struct sim_incident *in = &s->inc[i];
        if (in->kind != SIM_INC_SELLER_BURST)
            continue;
        double m = in->magnitude / NS_PER_S;
        if (u < m) {
            if (sim_incident_active_at(s, i, t) && (size_t)in->seller <= s->nsellers)
                start_attempt(s, t, in->seller - 1);
            return;
        }
        u -= m;
    }
}

static double logistic_shift(double p, double z)
{
    if (z == 0 || p <= 0 || p >= 1)
        return p;
    double l = log(p / (1 - p)) + z;
    return 1.0 / (1.0 + exp(-l));
}

/* Decimal digits of v into p (no NUL); returns the end. */
static char *put_u64(char *p, uint64_t v)
{
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

static char *put_hex64(char *p, uint64_t v)
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 15; i >= 0; i--)
        *p++ = hex[(v >> (i * 4)) & 15];
    return p;
}

static char *put_str(char *p, const char *s)
{
    size_t n = strlen(s);
    memcpy(p, s, n);
    return p + n;
}

static void fill_media(struct sim *s, struct upm_event *ev, const struct attempt *a)
{
    struct rng *r = &s->rng;
    size_t n = (size_t)rng_below(r, (uint64_t)s->cfg.media_max + 1);
    unsigned own = 0, ext = 0, bad = 0;
    for (size_t i = 0; i < n; i++) {
        double u = rng_unif(r);
        char *p = s->media[i];
        uint64_t tag = rng_next(r) & 0xffffffffu;
        if (u < s->cfg.media_own_share) {
            p = put_str(p, "https://");
            p = put_str(p, s->cdn_host_buf);
            p = put_str(p, "/i/");
            p = put_u64(p, a->item_id);
            *p++ = '/';
            p = put_u64(p, tag);
            p = put_str(p, ".jpg");
            own++;
        } else if (u < s->cfg.media_own_share + s->cfg.media_external_share) {
            p = put_str(p,
                        (tag & 1) ? "https://images.example.org/p/" : "http://photos.example.net/");
            p = put_u64(p, tag);
            p = put_str(p, ".png");
            ext++;
        } else {
            /* The malformed links sellers really send: no scheme, a typo'd
             * scheme, a blank inside. */
            static const char *const bad_prefix[] = {"htp://", "www.example.com/", "https://"};
            uint64_t k = tag % 3;
            p = put_str(p, bad_prefix[k]);
            if (k == 2)
                p = put_str(p, "bad host/");
            p = put_u64(p, tag);
            bad++;
        }
        *p = '\0';
    }
    ev->media = s->media_ptr;
    ev->n_media = n;
    ev->media_own = own;
    ev->media_external = ext;
    ev->media_bad = bad;
}

static const char *const error_codes[] = {"timeout", "validation", "media_fetch", "duplicate",
                                          "rate_limited"};

/* Emit the event of the heap's root attempt and reschedule or retire it. */
static void step(struct sim *s, struct upm_event *ev, struct sim_meta *meta)
{
    struct rng *r = &s->rng;
    struct attempt *a = &s->heap[0];
    const struct seller *sl = &s->sellers[a->seller];
    int64_t t = a->next_ts;
    bool done = false;
    uint32_t active = 0;
    double lat = 1.0, fail_extra = 0.0;
    for (size_t i = 0; i < s->ninc; i++) {
        if (!sim_incident_active_at(s, i, t))
            continue;
        if (i < 32)
            active |= 1u << i;
        const struct sim_incident *in = &s->inc[i];
        if (!inc_matches(s, in, a))
            continue;
        if (in->kind == SIM_INC_LATENCY)
            lat *= in->magnitude;
        else if (in->kind == SIM_INC_FAILURE_SPIKE || in->kind == SIM_INC_SELLER_FAILURES)
            fail_extra = 1.0 - (1.0 - fail_extra) * (1.0 - in->magnitude);
    }

    memset(ev, 0, offsetof(struct upm_event, attempt_id));
    ev->item_id = a->item_id;
    ev->company_id = sl->company_id;
    ev->category_id = a->category_id;
    ev->ts_ns = t;
    /* attempt_id: a keyed hash of the arrival number, so ids look random
     * (as the original's UUID-like ids do) yet are reproducible. */
    uint64_t x = s->seed ^ (a->seq * 0x9e3779b97f4a7c15ULL);
    char *p = ev->attempt_id;
    *p++ = 'a';
    p = put_hex64(p, splitmix64(&x));
    *p = '\0';
    p = ev->request_id;
    p = put_str(p, ev->attempt_id);
    *p++ = '-';
    p = put_u64(p, a->try_no);
    *p++ = a->phase == PH_UPDATE ? 'u' : 'o';
    *p = '\0';
    const char *origin = s->origins.names[a->origin];
    p = put_str(ev->origin, origin);
    *p = '\0';
    p = ev->origin_id;
    *p++ = 'o';
    p = put_u64(p, sl->company_id);
    *p++ = '-';
    p = put_u64(p, a->origin);
    *p = '\0';
    memcpy(ev->country, s->countries.names[a->country], 3);
    fill_media(s, ev, a);

    if (meta) {
        meta->try_no = a->try_no;
        /* Within an attempt times strictly increase (every delay is >= 1 ns). */
        meta->first_of_attempt = t == a->first_ts;
        meta->attempt_first_ts = a->first_ts;
        meta->seller_rank = a->seller + 1;
        meta->active_incidents = active;
    }

    p = s->data;
    if (a->phase == PH_UPDATE) {
        ev->type = UPM_EVENT_UPDATE;
        p = put_str(p, "{\"try\":");
        p = put_u64(p, a->try_no);
        p = put_str(p, "}");
        a->phase = PH_OUTCOME;
        a->next_ts =
            t + 1 + (int64_t)(rng_lognormal(r, (double)s->cfg.update_delay_median_ms * 1e6, 1.0));
    } else {
        uint32_t k = a->try_no > 3 ? 3 : a->try_no;
        double ps = s->succ[a->origin * s->countries.n + a->country][k - 1];
        ps = logistic_shift(ps, sl->reliability) * (1.0 - fail_extra);
        if (rng_unif(r) < ps) {
            ev->type = UPM_EVENT_SAVE;
            ev->is_created = true;
            double full =
                rng_lognormal(r, (double)s->cfg.full_time_median_ms * 1e6, s->cfg.full_time_sigma) *
                lat;
            ev->up_ts = t + 1 + (int64_t)full;
            p = put_str(p, "{\"try\":");
            p = put_u64(p, a->try_no);
            p = put_str(p, "}");
            done = true;
        } else {
            ev->type = UPM_EVENT_ERROR;
            p = put_str(p, "{\"try\":");
            p = put_u64(p, a->try_no);
            p = put_str(p, ",\"code\":\"");
            p = put_str(p, error_codes[rng_below(r, 5)]);
            p = put_str(p, "\"}");
            if (a->try_no >= s->cfg.max_tries || rng_unif(r) < s->cfg.abandon_share) {
                done = true;
            } else {
                a->try_no++;
                a->phase = rng_unif(r) < s->cfg.update_share ? PH_UPDATE : PH_OUTCOME;
                a->next_ts = t + 1 +
                             (int64_t)(rng_lognormal(r, (double)s->cfg.retry_gap_median_ms * 1e6,
                                                     s->cfg.retry_gap_sigma) *
                                       lat);
            }
        }
    }
    *p = '\0';
    ev->data = s->data;
    ev->data_len = (size_t)(p - s->data);
    if (meta)
        meta->last_of_attempt = done;
    if (done)
        heap_pop(s);
    else
        heap_sift_down(s, 0);
    s->now_ns = t;
}

void sim_next(struct sim *s, struct upm_event *ev, struct sim_meta *meta)
{
    while (s->nheap == 0 || s->heap[0].next_ts > s->next_arrival_ts)
        arrive(s);
    step(s, ev, meta);
}

int64_t sim_now(const struct sim *s)
{
    return s->now_ns;
}

size_t sim_incident_count(const struct sim *s)
{
    return s->ninc;
}

const struct sim_incident *sim_incident(const struct sim *s, size_t i)
{
    return i < s->ninc ? &s->inc[i] : NULL;
}

size_t sim_population(const struct sim *s)
{
    return s->nsellers;
}

double sim_seller_share(const struct sim *s, uint32_t rank)
{
    if (rank == 0 || rank > s->nsellers)
        return 0;
    double prev = rank > 1 ? s->zipf_cum[rank - 2] : 0;
    return (s->zipf_cum[rank - 1] - prev) / s->zipf_cum[s->nsellers - 1];
}

static double expected_share(const struct sim *s, const struct mix *m, int idx, bool country)
{
    if (idx < 0)
        return 0;
    double own = 0, total = s->zipf_cum[s->nsellers - 1];
    for (size_t i = 0; i < s->nsellers; i++) {
        uint16_t v = country ? s->sellers[i].country : s->sellers[i].origin;
        if (v == (uint16_t)idx)
            own += (s->zipf_cum[i] - (i ? s->zipf_cum[i - 1] : 0)) / total;
    }
    return s->cfg.seller_affinity * own + (1 - s->cfg.seller_affinity) * m->p[idx];
}

double sim_expected_country_share(const struct sim *s, const char *cc)
{
    return expected_share(s, &s->countries, mix_find(&s->countries, cc), true);
}

double sim_expected_origin_share(const struct sim *s, const char *origin)
{
    return expected_share(s, &s->origins, mix_find(&s->origins, origin), false);
}

double sim_success_prob(const struct sim *s, const char *origin, const char *cc, uint32_t t)
{
    int o = mix_find(&s->origins, origin), c = mix_find(&s->countries, cc);
    if (o < 0 || c < 0 || t == 0)
        return -1;
    return s->succ[(size_t)o * s->countries.n + (size_t)c][(t > 3 ? 3 : t) - 1];
}

/* ---- fast serializer ----------------------------------------------------- */

static bool plain(const char *str)
{
    for (const unsigned char *u = (const unsigned char *)str; *u; u++)
        if (*u < 0x20 || *u == '"' || *u == '\\' || *u >= 0x7f)
            return false;
    return true;
}

static char *put_i64(char *p, int64_t v)
{
    if (v < 0) {
        *p++ = '-';
        return put_u64(p, (uint64_t)0 - (uint64_t)v);
    }
    return put_u64(p, (uint64_t)v);
}

static char *put_jstr(char *p, const char *str)
{
    *p++ = '"';
    p = put_str(p, str);
    *p++ = '"';
    return p;
}

int sim_serialize(const struct upm_event *ev, struct upm_buf *out)
{
    /* Fixed text ~200, numbers <= 5 * 20, the five strings <= 5 * 66. */
    size_t need = 768 + ev->data_len;
    bool simple = plain(ev->attempt_id) && plain(ev->request_id) && plain(ev->origin) &&
                  plain(ev->origin_id) && plain(ev->country);
    for (size_t i = 0; simple && i < ev->n_media; i++) {
        if (!ev->media[i] || !plain(ev->media[i]))
            simple = false;
        else
            need += strlen(ev->media[i]) + 3;
    }
    if (!simple)
        return upm_event_serialize(ev, out);
    if (upm_buf_reserve(out, need) != 0)
        return upm_event_serialize(ev, out); /* near the limit: let it decide exactly */
    char *start = out->data + out->len, *p = start;
    p = put_str(p, "{\"v\":1,\"item_id\":");
    p = put_u64(p, ev->item_id);
    p = put_str(p, ",\"attempt_id\":");
    p = put_jstr(p, ev->attempt_id);
    p = put_str(p, ",\"request_id\":");
    p = put_jstr(p, ev->request_id);
    p = put_str(p, ",\"event\":\"");
    p = put_str(p, upm_event_type_name(ev->type));
    p = put_str(p, "\",\"ts_ns\":");
    p = put_i64(p, ev->ts_ns);
    p = put_str(p, ev->is_created ? ",\"is_created\":true,\"up_ts\":"
                                  : ",\"is_created\":false,\"up_ts\":");
    p = put_i64(p, ev->up_ts);
    p = put_str(p, ",\"origin\":");
    p = put_jstr(p, ev->origin);
    p = put_str(p, ",\"origin_id\":");
    p = put_jstr(p, ev->origin_id);
    p = put_str(p, ",\"country\":");
    p = put_jstr(p, ev->country);
    p = put_str(p, ",\"company_id\":");
    p = put_u64(p, ev->company_id);
    p = put_str(p, ",\"category_id\":");
    p = put_u64(p, ev->category_id);
    p = put_str(p, ",\"media\":[");
    for (size_t i = 0; i < ev->n_media; i++) {
        if (i)
            *p++ = ',';
        p = put_jstr(p, ev->media[i]);
    }
    p = put_str(p, "],\"data\":");
    if (ev->data) {
        memcpy(p, ev->data, ev->data_len);
        p += ev->data_len;
    } else {
        p = put_str(p, "{}");
    }
    *p++ = '}';
    *p = '\0';
    out->len += (size_t)(p - start);
    return 0;
}

/* ---- token bucket --------------------------------------------------------- */

void sim_bucket_init(struct sim_bucket *b, double rate, double burst, int64_t now_ns)
{
    b->rate = rate;
    b->burst = burst < 1 ? 1 : burst;
    b->tokens = b->burst;
    b->last_ns = now_ns;
}

int64_t sim_bucket_take(struct sim_bucket *b, int64_t now_ns)
{
    if (now_ns > b->last_ns) {
        b->tokens += (double)(now_ns - b->last_ns) * b->rate / NS_PER_S;
        if (b->tokens > b->burst)
            b->tokens = b->burst;
        b->last_ns = now_ns;
    }
    if (b->tokens >= 1.0) {
        b->tokens -= 1.0;
        return 0;
    }
    return 1 + (int64_t)((1.0 - b->tokens) * NS_PER_S / b->rate);
}
