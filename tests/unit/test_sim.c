/*
 * Unit tests for the simulator's generator (services/simulator/sim.c) and
 * its incident script parser (sim_incidents.c).
 *
 * Statistical checks use a fixed seed and 5-sigma binomial (or Poisson)
 * tolerances: they fail when the model is wrong, essentially never by
 * chance, and, with the seed fixed, never flakily.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sim.h"
#include "upmon/config.h"
#include "upmon/event.h"

#define N_EVENTS 1000000
#define START    INT64_C(1772409600000000000) /* 2026-03-02T00:00:00Z, a Monday */

static char err[1024];

/* Defaults from the table, plus short delays so that few attempts are in
 * flight: the shares over a window then match the per-attempt model. */
static void load_cfg(struct sim_config *cfg, const char *yaml)
{
    memset(cfg, 0, sizeof(*cfg));
    const struct upm_config_section sec[] = {{"simulator", sim_config_keys, sim_config_nkeys, cfg}};
    const char *base = yaml ? yaml : "";
    int rc = upm_config_load_string(sec, 1, base, strlen(base), "test", err, sizeof(err));
    if (rc != 0)
        fail_msg("config: %s", err);
}

static void free_cfg(struct sim_config *cfg)
{
    const struct upm_config_section sec[] = {{"simulator", sim_config_keys, sim_config_nkeys, cfg}};
    upm_config_free(sec, 1);
}

static const char *fast_yaml = "simulator:\n"
                               "  retry_gap_median: 1ms\n"
                               "  update_delay_median: 1ms\n"
                               "  full_time_median: 1ms\n"
                               "  seller_reliability_sd: 0\n"
                               "  new_sellers_per_day: 0\n"
                               "  sellers: 20000\n";

static struct sim *make(const char *yaml, const struct sim_incident *inc, size_t n)
{
    struct sim_config cfg;
    load_cfg(&cfg, yaml);
    struct sim *s = sim_create(&cfg, START, inc, n, err, sizeof(err));
    if (!s)
        fail_msg("sim_create: %s", err);
    free_cfg(&cfg);
    return s;
}

/* |obs - p| within k sigma of a binomial proportion over n trials. */
static void assert_share(const char *what, double obs_count, double n, double p, double k)
{
    double sigma = sqrt(p * (1 - p) / n);
    double obs = obs_count / n;
    if (fabs(obs - p) > k * sigma + 1e-12)
        fail_msg("%s: observed share %.6f, expected %.6f (n=%.0f, %.1f sigma = %.6f)", what, obs, p,
                 n, k, k * sigma);
}

/* One 10^6-event run with fast_yaml feeds several tests (a run per test
 * would make the suite slow under the sanitizers). */
static const char *mix_cc[] = {"RU", "KZ", "BY", "UZ", "KG", "AM", "TR", "CN", "DE"};
static const char *mix_orig[] = {"upload/ui", "upload/api", "update/manual", "update/xlsx"};

static struct {
    bool done;
    double tries[4], saves[4];            /* by try number (3 = 3 and more) */
    double types[4];                      /* by enum upm_event_type */
    double attempts, top1, top2_10, tail; /* attempt starts by seller rank */
    double p1, p2_10, ptail;              /* their expected shares */
    double nc[9], no[4], pc[9], po[4];    /* country / origin of attempt starts */
    double own, ext, bad, per_count[6];   /* media links */
    unsigned classify_mismatch;
} fs;

static void collect_fast_stats(void)
{
    if (fs.done)
        return;
    struct sim *s = make(fast_yaml, NULL, 0);
    const char *cdn[] = {"cdn.upmon.example"};
    struct upm_event_opts opts = {0, cdn, 1};
    struct upm_event ev;
    struct sim_meta m;
    for (int i = 0; i < N_EVENTS; i++) {
        sim_next(s, &ev, &m);
        fs.types[ev.type]++;
        if (ev.type != UPM_EVENT_UPDATE) {
            int k = m.try_no > 3 ? 3 : (int)m.try_no;
            fs.tries[k]++;
            fs.saves[k] += ev.type == UPM_EVENT_SAVE;
        }
        if (m.first_of_attempt) {
            fs.attempts++;
            if (m.seller_rank == 1)
                fs.top1++;
            else if (m.seller_rank <= 10)
                fs.top2_10++;
            else if (m.seller_rank > 1000)
                fs.tail++;
            for (int j = 0; j < 9; j++)
                fs.nc[j] += strcmp(ev.country, mix_cc[j]) == 0;
            for (int j = 0; j < 4; j++)
                fs.no[j] += strcmp(ev.origin, mix_orig[j]) == 0;
        }
        fs.own += ev.media_own;
        fs.ext += ev.media_external;
        fs.bad += ev.media_bad;
        if (ev.n_media > 5 || ev.media_own + ev.media_external + ev.media_bad != ev.n_media)
            fail_msg("event %d: %zu media, %u+%u+%u classified", i, ev.n_media, ev.media_own,
                     ev.media_external, ev.media_bad);
        fs.per_count[ev.n_media]++;
        /* The generator's own labels agree with the event parser's. */
        if (i < 100000) {
            unsigned o = 0, e = 0, b = 0;
            for (size_t j = 0; j < ev.n_media; j++) {
                enum upm_media_class c =
                    upm_event_media_classify(ev.media[j], strlen(ev.media[j]), &opts);
                o += c == UPM_MEDIA_OWN;
                e += c == UPM_MEDIA_EXTERNAL;
                b += c == UPM_MEDIA_BAD;
            }
            fs.classify_mismatch +=
                o != ev.media_own || e != ev.media_external || b != ev.media_bad;
        }
    }
    fs.p1 = sim_seller_share(s, 1);
    for (uint32_t r = 2; r <= 10; r++)
        fs.p2_10 += sim_seller_share(s, r);
    for (uint32_t r = 1001; r <= sim_population(s); r++)
        fs.ptail += sim_seller_share(s, r);
    for (int j = 0; j < 9; j++)
        fs.pc[j] = sim_expected_country_share(s, mix_cc[j]);
    for (int j = 0; j < 4; j++)
        fs.po[j] = sim_expected_origin_share(s, mix_orig[j]);
    assert_true(fabs(sim_seller_share(s, 1) / sim_seller_share(s, 100) - 100.0) < 1e-6);
    sim_destroy(s);
    fs.done = true;
}

/* ---- serialization -------------------------------------------------------- */

static void test_fast_serializer_matches_canonical(void **state)
{
    struct sim *s = make(NULL, NULL, 0);
    struct upm_buf a, b;
    struct upm_event ev;
    upm_buf_init(&a, 0);
    upm_buf_init(&b, 0);
    const char *cdn[] = {"cdn.upmon.example"};
    struct upm_event_opts opts = {0, cdn, 1};
    for (int i = 0; i < 200000; i++) {
        sim_next(s, &ev, NULL);
        upm_buf_reset(&a);
        upm_buf_reset(&b);
        assert_int_equal(sim_serialize(&ev, &a), 0);
        assert_int_equal(upm_event_serialize(&ev, &b), 0);
        if (a.len != b.len || memcmp(a.data, b.data, a.len) != 0)
            fail_msg("event %d differs:\nfast: %s\ncanon: %s", i, a.data, b.data);
        if (i % 16 == 0) {
            struct upm_event back;
            struct upm_event_error e;
            if (upm_event_parse(a.data, a.len, &opts, &back, &e) != 0)
                fail_msg("event %d rejected: %s %s %s", i, upm_event_reason_name(e.reason), e.field,
                         e.detail);
            assert_true(upm_event_equal(&back, &ev));
            upm_event_clear(&back);
        }
    }
    /* Strings that need escaping take the canonical path. */
    sim_next(s, &ev, NULL);
    snprintf(ev.origin, sizeof(ev.origin), "we\"ird\\\n");
    upm_buf_reset(&a);
    upm_buf_reset(&b);
    assert_int_equal(sim_serialize(&ev, &a), 0);
    assert_int_equal(upm_event_serialize(&ev, &b), 0);
    assert_string_equal(a.data, b.data);
    /* A limit: the buffer is left unchanged on failure. */
    struct upm_buf small;
    upm_buf_init(&small, 64);
    assert_int_equal(upm_buf_puts(&small, "x"), 0);
    assert_int_equal(sim_serialize(&ev, &small), -1);
    assert_int_equal(small.len, 1);
    upm_buf_free(&small);
    upm_buf_free(&a);
    upm_buf_free(&b);
    sim_destroy(s);
}

/* ---- determinism ---------------------------------------------------------- */

static uint64_t hash_run(uint64_t seed, int n)
{
    char yaml[256];
    snprintf(yaml, sizeof(yaml), "simulator:\n  seed: %llu\n", (unsigned long long)seed);
    struct sim *s = make(yaml, NULL, 0);
    struct upm_buf b;
    struct upm_event ev;
    uint64_t h = 1469598103934665603ULL;
    upm_buf_init(&b, 0);
    for (int i = 0; i < n; i++) {
        sim_next(s, &ev, NULL);
        upm_buf_reset(&b);
        sim_serialize(&ev, &b);
        for (size_t j = 0; j < b.len; j++)
            h = (h ^ (unsigned char)b.data[j]) * 1099511628211ULL;
    }
    upm_buf_free(&b);
    sim_destroy(s);
    return h;
}

static void test_deterministic_by_seed(void **state)
{
    uint64_t a = hash_run(42, 200000), b = hash_run(42, 200000), c = hash_run(43, 200000);
    assert_true(a == b);
    assert_true(a != c);
}

/* ---- distributions --------------------------------------------------------- */

static void test_success_by_try_number(void **state)
{
    collect_fast_stats();
    const double p[4] = {0, 0.05, 0.40, 0.80};
    const char *names[4] = {"", "try 1", "try 2", "try >= 3"};
    for (int k = 1; k <= 3; k++) {
        assert_true(fs.tries[k] > 10000);
        assert_share(names[k], fs.saves[k], fs.tries[k], p[k], 5);
    }
}

static void test_overrides_per_origin_and_country(void **state)
{
    const char *yaml = "simulator:\n"
                       "  retry_gap_median: 1ms\n  update_delay_median: 1ms\n"
                       "  seller_reliability_sd: 0\n  seller_affinity: 0\n"
                       "  success_overrides: [\"country:KZ=0.5/0.6/0.7\", "
                       "\"origin:upload/api=0.2/0.3/0.9\"]\n";
    struct sim *s = make(yaml, NULL, 0);
    /* Country wins over origin, whatever the order. */
    assert_true(sim_success_prob(s, "upload/api", "KZ", 1) == 0.5);
    assert_true(sim_success_prob(s, "upload/api", "RU", 1) == 0.2);
    assert_true(sim_success_prob(s, "upload/api", "RU", 7) == 0.9);
    assert_true(sim_success_prob(s, "upload/ui", "RU", 2) == 0.40);
    assert_true(sim_success_prob(s, "nope", "RU", 1) == -1);
    struct upm_event ev;
    struct sim_meta m;
    double n_kz = 0, s_kz = 0, n_api = 0, s_api = 0;
    for (int i = 0; i < N_EVENTS / 2; i++) {
        sim_next(s, &ev, &m);
        if (ev.type == UPM_EVENT_UPDATE || m.try_no != 1)
            continue;
        if (strcmp(ev.country, "KZ") == 0) {
            n_kz++;
            s_kz += ev.type == UPM_EVENT_SAVE;
        } else if (strcmp(ev.origin, "upload/api") == 0) {
            n_api++;
            s_api += ev.type == UPM_EVENT_SAVE;
        }
    }
    assert_share("KZ first try", s_kz, n_kz, 0.5, 5);
    assert_share("upload/api first try", s_api, n_api, 0.2, 5);
    sim_destroy(s);
}

/* Expected event-type shares from the attempt model (no reliability
 * spread): per try an UPDATE with probability u, then SAVE with p_k or
 * ERROR; after an ERROR, abandon with a, always at max_tries. */
static void test_event_type_shares(void **state)
{
    collect_fast_stats();
    const double u = 0.3, a = 0.1, p[4] = {0, 0.05, 0.40, 0.80};
    double reach = 1, e_save = 0, e_err = 0, e_upd = 0;
    for (int k = 1; k <= 10; k++) {
        double pk = p[k > 3 ? 3 : k];
        e_upd += reach * u;
        e_save += reach * pk;
        e_err += reach * (1 - pk);
        reach *= (1 - pk) * (k < 10 ? (1 - a) : 0);
    }
    double total = e_save + e_err + e_upd;
    /* Events of one attempt are not independent: count the sample as
     * attempts (at most 20 events each) for the tolerance. */
    double n_eff = N_EVENTS / 20.0, scale = n_eff / N_EVENTS;
    assert_share("SAVE", fs.types[UPM_EVENT_SAVE] * scale, n_eff, e_save / total, 5);
    assert_share("ERROR", fs.types[UPM_EVENT_ERROR] * scale, n_eff, e_err / total, 5);
    assert_share("UPDATE", fs.types[UPM_EVENT_UPDATE] * scale, n_eff, e_upd / total, 5);
}

static void test_zipf_skew(void **state)
{
    collect_fast_stats();
    /* Zipf s=1 over 20000 sellers: rank 1 has 1/H(20000) ~ 9.3 %. */
    assert_true(fs.p1 > 0.09 && fs.p1 < 0.10);
    assert_share("rank 1", fs.top1, fs.attempts, fs.p1, 5);
    assert_share("ranks 2-10", fs.top2_10, fs.attempts, fs.p2_10, 5);
    assert_share("ranks > 1000", fs.tail, fs.attempts, fs.ptail, 5);
}

static void test_country_and_origin_mix(void **state)
{
    collect_fast_stats();
    double sum = 0;
    for (int j = 0; j < 9; j++) {
        sum += fs.pc[j];
        assert_share(mix_cc[j], fs.nc[j], fs.attempts, fs.pc[j], 5);
    }
    assert_true(fabs(sum - 1) < 1e-9);
    for (int j = 0; j < 4; j++)
        assert_share(mix_orig[j], fs.no[j], fs.attempts, fs.po[j], 5);
    /* RU dominates as configured (0.55 of the global mix). */
    assert_true(fs.nc[0] / fs.attempts > 0.3);
}

static void test_media_shares(void **state)
{
    collect_fast_stats();
    assert_int_equal(fs.classify_mismatch, 0);
    double links = fs.own + fs.ext + fs.bad;
    assert_share("own CDN", fs.own, links, 0.85, 5);
    assert_share("external", fs.ext, links, 0.12, 5);
    assert_share("malformed", fs.bad, links, 0.03, 5);
    for (int k = 0; k <= 5; k++)
        assert_share("media count", fs.per_count[k], N_EVENTS, 1.0 / 6, 5);
}

/* ---- attempt consistency ------------------------------------------------------ */

static void test_attempt_consistency(void **state)
{
    /* Default (realistic) delays and reliability spread. */
    struct sim *s = make(NULL, NULL, 0);
    struct upm_event ev;
    struct sim_meta m;
    int64_t prev_ts = 0;
    double saves = 0;
    for (int i = 0; i < N_EVENTS; i++) {
        sim_next(s, &ev, &m);
        assert_true(ev.ts_ns >= prev_ts); /* simulated-time order */
        prev_ts = ev.ts_ns;
        assert_true(m.attempt_first_ts <= ev.ts_ns);
        /* Attempts begun in the default 10 min warm-up carry over; nothing before START
         * is emitted. */
        assert_true(ev.ts_ns >= START);
        assert_true(m.attempt_first_ts >= START - INT64_C(600) * 1000000000);
        switch (ev.type) {
        case UPM_EVENT_SAVE:
            saves++;
            assert_true(ev.is_created);
            assert_true(ev.up_ts > ev.ts_ns);
            assert_true(ev.up_ts >= m.attempt_first_ts);
            assert_true(m.last_of_attempt);
            break;
        case UPM_EVENT_ERROR:
            assert_false(ev.is_created);
            assert_int_equal(ev.up_ts, 0);
            break;
        case UPM_EVENT_UPDATE:
            assert_false(ev.is_created);
            assert_int_equal(ev.up_ts, 0);
            assert_false(m.last_of_attempt);
            break;
        default:
            fail_msg("event %d has no type", i);
        }
        assert_true(upm_event_country_valid(ev.country));
        assert_true(strlen(ev.attempt_id) > 0 && strlen(ev.request_id) <= UPM_EVENT_STR_MAX);
        assert_int_equal(m.first_of_attempt, m.attempt_first_ts == ev.ts_ns);
    }
    assert_true(saves > N_EVENTS / 20);
    sim_destroy(s);
}

static void test_full_time_lognormal(void **state)
{
    struct sim *s = make("simulator:\n  full_time_median: 3s\n  full_time_sigma: 0.8\n", NULL, 0);
    struct upm_event ev;
    double n = 0, below_median = 0, below_1sigma = 0;
    for (int i = 0; i < N_EVENTS; i++) {
        sim_next(s, &ev, NULL);
        if (ev.type != UPM_EVENT_SAVE)
            continue;
        double ft = (double)(ev.up_ts - ev.ts_ns) / 1e9;
        n++;
        below_median += ft < 3.0;
        below_1sigma += ft < 3.0 * exp(0.8);
    }
    assert_share("full time below median", below_median, n, 0.5, 5);
    assert_share("full time below median*e^sigma", below_1sigma, n, 0.841345, 5);
    sim_destroy(s);
}

/* ---- time ----------------------------------------------------------------------- */

static void test_daily_seasonality(void **state)
{
    struct sim *s = make("simulator:\n  attempt_rate: 2\n  daily_amplitude: 0.5\n"
                         "  weekly_amplitude: 0\n  retry_gap_median: 1ms\n"
                         "  update_delay_median: 1ms\n  full_time_median: 1ms\n",
                         NULL, 0);
    struct upm_event ev;
    struct sim_meta m;
    double per_hour[24] = {0};
    for (;;) {
        sim_next(s, &ev, &m);
        if (ev.ts_ns >= START + INT64_C(86400) * 1000000000)
            break;
        if (m.first_of_attempt)
            per_hour[(ev.ts_ns - START) / (INT64_C(3600) * 1000000000)]++;
    }
    /* Mean of cos over one hour centred on the peak: sin(pi/24)/(pi/24). */
    double c = sin(M_PI / 24) / (M_PI / 24);
    double peak = 2 * 3600 * (1 + 0.5 * c), trough = 2 * 3600 * (1 - 0.5 * c);
    /* Hours 14 and 2 are centred on 14:30 and 2:30, half an hour off the
     * extremes: integrate instead. */
    double exp14 = 0, exp2 = 0;
    for (int i = 0; i < 3600; i++) {
        exp14 += 2 * (1 + 0.5 * cos(2 * M_PI * (i + 0.5) / 86400.0));
        exp2 += 2 * (1 + 0.5 * cos(2 * M_PI * (12 * 3600.0 + i + 0.5) / 86400.0));
    }
    assert_true(exp14 < peak + 1 && exp2 > trough - 1);
    if (fabs(per_hour[14] - exp14) > 5 * sqrt(exp14))
        fail_msg("peak hour: %.0f attempts, expected %.0f", per_hour[14], exp14);
    if (fabs(per_hour[2] - exp2) > 5 * sqrt(exp2))
        fail_msg("trough hour: %.0f attempts, expected %.0f", per_hour[2], exp2);
    sim_destroy(s);
}

static void test_weekly_cycle(void **state)
{
    struct sim *s = make("simulator:\n  daily_amplitude: 0\n  weekly_amplitude: 0.2\n", NULL, 0);
    const int64_t H = INT64_C(3600) * 1000000000;
    /* START is Monday 00:00; Wednesday noon is the peak, Sunday midnight
     * (half a week later) the trough. */
    assert_true(fabs(sim_season(s, START + 2 * 24 * H + 12 * H) - 1.2) < 1e-9);
    assert_true(fabs(sim_season(s, START + 6 * 24 * H) - 0.8) < 1e-9);
    assert_true(fabs(sim_season(s, START + 9 * 24 * H + 12 * H) - 1.2) < 1e-9);
    sim_destroy(s);
    s = make("simulator:\n  daily_amplitude: 0.5\n  weekly_amplitude: 0\n"
             "  daily_peak_hour: 14\n",
             NULL, 0);
    assert_true(fabs(sim_season(s, START + 14 * H) - 1.5) < 1e-9);
    assert_true(fabs(sim_season(s, START + 2 * H) - 0.5) < 1e-9);
    sim_destroy(s);
}

static void test_new_sellers_join(void **state)
{
    struct sim *s = make("simulator:\n  sellers: 100\n  new_sellers_per_day: 24000\n"
                         "  attempt_rate: 50\n  warmup: 0\n",
                         NULL, 0);
    struct upm_event ev;
    assert_int_equal(sim_population(s), 100);
    do
        sim_next(s, &ev, NULL);
    while (ev.ts_ns < START + INT64_C(3600) * 1000000000);
    /* 1000 expected in an hour (Poisson, sd ~32). */
    double joined = (double)sim_population(s) - 100;
    assert_true(fabs(joined - 1000) < 5 * sqrt(1000));
    sim_destroy(s);
}

/* Share of ERROR among outcomes (SAVE/ERROR) in [from, to) minutes after START, and the
 * share of events whose attempt began before START. */
static void outcome_failure_share(const char *yaml, int from, int to, double *fail, double *carried)
{
    struct sim *s = make(yaml, NULL, 0);
    struct upm_event ev;
    struct sim_meta m;
    double out = 0, err_n = 0, all = 0, before = 0;
    const int64_t min_ns = INT64_C(60) * 1000000000;
    for (;;) {
        sim_next(s, &ev, &m);
        if (ev.ts_ns >= START + to * min_ns)
            break;
        if (ev.ts_ns < START + from * min_ns)
            continue;
        all++;
        before += m.attempt_first_ts < START;
        if (ev.type != UPM_EVENT_UPDATE) {
            out++;
            err_n += ev.type == UPM_EVENT_ERROR;
        }
    }
    sim_destroy(s);
    *fail = err_n / out;
    *carried = before / all;
}

static void test_warmup_starts_in_steady_state(void **state)
{
    (void)state;
    double steady, cold, warm, carried;
    outcome_failure_share("simulator:\n  warmup: 0\n", 30, 40, &steady, &carried);
    outcome_failure_share("simulator:\n  warmup: 0\n", 0, 1, &cold, &carried);
    assert_true(carried == 0);
    /* Started empty, the first minute is mostly first tries (95 % fail): the artefact. */
    assert_true(cold > steady + 0.1);
    outcome_failure_share(NULL, 0, 1, &warm, &carried);
    /* The default warm-up: retries already in flight, the steady share from the start. */
    if (fabs(warm - steady) > 0.02)
        fail_msg("first minute after a warm start: failure share %.3f, steady %.3f", warm, steady);
    assert_true(carried > 0.2);
}

static void test_parse_time(void **state)
{
    int64_t t;
    assert_int_equal(sim_parse_time("1970-01-01T00:00:00Z", &t), 0);
    assert_int_equal(t, 0);
    assert_int_equal(sim_parse_time("2026-03-02T00:00:00Z", &t), 0);
    assert_true(t == START);
    assert_int_equal(sim_parse_time("2000-02-29T12:34:56.5Z", &t), 0);
    assert_true(t == INT64_C(951827696500000000));
    const char *bad[] = {"",
                         "2026-13-01T00:00:00Z",
                         "2026-01-01 00:00:00Z",
                         "2026-01-01T00:00:00",
                         "2026-01-01T00:00:00+01:00",
                         "2026-01-01T24:00:00Z",
                         "1969-12-31T23:59:59Z",
                         "2026-01-01T00:00:00.Z"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(sim_parse_time(bad[i], &t), -1);
}

static void test_token_bucket(void **state)
{
    struct sim_bucket b;
    int64_t t = 1000;
    sim_bucket_init(&b, 1000.0, 50, t);
    /* Full at start: exactly the burst back to back, then a wait. */
    for (int i = 0; i < 50; i++)
        assert_int_equal(sim_bucket_take(&b, t), 0);
    int64_t wait = sim_bucket_take(&b, t);
    assert_true(wait > 0 && wait <= 1000001);
    /* Over one second of a fake clock in 100 µs steps: rate tokens. */
    int taken = 0;
    for (int i = 1; i <= 10000; i++)
        taken += sim_bucket_take(&b, t + (int64_t)i * 100000) == 0;
    assert_true(taken >= 999 && taken <= 1001);
    /* Idle for a minute: no more than the burst is stored. */
    t += INT64_C(61) * 1000000000;
    taken = 0;
    while (sim_bucket_take(&b, t) == 0)
        taken++;
    assert_int_equal(taken, 50);
}

/* ---- incidents ---------------------------------------------------------------------- */

static void test_incident_schedule_and_effects(void **state)
{
    struct sim_incident inc[5];
    const char *yaml =
        "incidents:\n"
        "  - {name: ru-down, kind: failure_spike, country: RU, start: 10s, duration: 10s,"
        " magnitude: 1}\n"
        "  - {name: slow-api, kind: latency, origin: upload/api, start: 30s, duration: 10s,"
        " magnitude: 20}\n"
        "  - {name: drop, kind: throughput_drop, start: 50s, duration: 10s, magnitude: 0.5}\n"
        "  - {name: burst, kind: seller_burst, seller: 5000, start: 70s, duration: 10s,"
        " magnitude: 500}\n"
        "  - {name: storm, kind: seller_failures, seller: 1, start: 90s, duration: 10s,"
        " magnitude: 1}\n";
    int n = sim_incidents_parse(yaml, strlen(yaml), "t.yaml", inc, err, sizeof(err));
    if (n != 5)
        fail_msg("parse: %d %s", n, err);
    struct sim *s = make("simulator:\n  attempt_rate: 1000\n  daily_amplitude: 0\n"
                         "  weekly_amplitude: 0\n  retry_gap_median: 1ms\n"
                         "  update_delay_median: 1ms\n  full_time_median: 10ms\n"
                         "  full_time_sigma: 0\n  seller_reliability_sd: 0\n"
                         "  new_sellers_per_day: 0\n",
                         inc, 5);
    const int64_t S = 1000000000;
    /* Boundaries: start inclusive, end exclusive. */
    assert_false(sim_incident_active_at(s, 0, START + 10 * S - 1));
    assert_true(sim_incident_active_at(s, 0, START + 10 * S));
    assert_true(sim_incident_active_at(s, 0, START + 20 * S - 1));
    assert_false(sim_incident_active_at(s, 0, START + 20 * S));
    assert_false(sim_incident_active_at(s, 5, START + 15 * S));

    double ru_try_in = 0, ru_save_in = 0, ru_save_out = 0;
    double lat_in = 0, lat_in_n = 0, lat_out = 0, lat_out_n = 0;
    double att_drop = 0, att_before = 0;
    double burst_in = 0, burst_before = 0;
    double s1_save_storm = 0, s1_try_storm = 0;
    struct upm_event ev;
    struct sim_meta m;
    for (;;) {
        sim_next(s, &ev, &m);
        int64_t off = ev.ts_ns - START;
        if (off >= 100 * S)
            break;
        int sec = (int)(off / S);
        /* The bits say which incidents are active at ts_ns. */
        for (int i = 0; i < 5; i++) {
            bool on = sec >= 10 + 20 * i && sec < 20 + 20 * i;
            assert_int_equal(!!(m.active_incidents & (1u << i)), on);
        }
        if (strcmp(ev.country, "RU") == 0 && ev.type != UPM_EVENT_UPDATE) {
            if (sec >= 10 && sec < 20) {
                ru_try_in++;
                ru_save_in += ev.type == UPM_EVENT_SAVE;
            } else {
                ru_save_out += ev.type == UPM_EVENT_SAVE;
            }
        }
        if (ev.type == UPM_EVENT_SAVE && strcmp(ev.origin, "upload/api") == 0) {
            double ft = (double)(ev.up_ts - ev.ts_ns);
            if (sec >= 30 && sec < 40) {
                lat_in += ft;
                lat_in_n++;
            } else {
                lat_out += ft;
                lat_out_n++;
            }
        }
        if (m.first_of_attempt && m.seller_rank != 5000) {
            if (sec >= 50 && sec < 60)
                att_drop++;
            else if (sec >= 40 && sec < 50)
                att_before++;
        }
        if (m.first_of_attempt && m.seller_rank == 5000) {
            if (sec >= 70 && sec < 80)
                burst_in++;
            else
                burst_before++;
        }
        if (m.seller_rank == 1 && sec >= 90 && ev.type != UPM_EVENT_UPDATE) {
            s1_try_storm++;
            s1_save_storm += ev.type == UPM_EVENT_SAVE;
        }
    }
    /* failure_spike magnitude 1: no RU success inside, plenty outside. */
    assert_true(ru_try_in > 1000);
    assert_true(ru_save_in == 0);
    assert_true(ru_save_out > 1000);
    /* latency x20 on upload/api full time (sigma 0: exactly 10 ms vs 200 ms). */
    assert_true(lat_in_n > 100 && lat_out_n > 100);
    assert_true(fabs(lat_in / lat_in_n - 20 * lat_out / lat_out_n) < 0.01 * lat_in / lat_in_n);
    /* throughput_drop 0.5: about half the attempts of the 10 s before
     * (Poisson ~10000 vs ~5000). */
    assert_true(fabs(att_drop - 0.5 * att_before) < 5 * sqrt(att_before));
    /* seller_burst +500/s for 10 s on a seller that otherwise has ~0.1/s. */
    assert_true(burst_in > 4500 && burst_before < 100);
    /* seller_failures magnitude 1: the top seller never succeeds. */
    assert_true(s1_try_storm > 500);
    assert_true(s1_save_storm == 0);
    sim_destroy(s);
}

static void expect_inc_err(const char *yaml, const char *needle)
{
    struct sim_incident inc[SIM_MAX_INCIDENTS];
    err[0] = '\0';
    int n = sim_incidents_parse(yaml, strlen(yaml), "c.yaml", inc, err, sizeof(err));
    if (n != -1)
        fail_msg("accepted (%d): %s", n, yaml);
    if (!strstr(err, needle))
        fail_msg("error \"%s\" lacks \"%s\" for:\n%s", err, needle, yaml);
}

static void test_incident_parse_errors(void **state)
{
    struct sim_incident inc[SIM_MAX_INCIDENTS];
    /* No section, null section, other sections skipped. */
    assert_int_equal(sim_incidents_parse("", 0, "c", inc, err, sizeof(err)), 0);
    const char *none = "log: {level: info}\nincidents:\n";
    assert_int_equal(sim_incidents_parse(none, strlen(none), "c", inc, err, sizeof(err)), 0);
    const char *one =
        "simulator:\n  seed: 3\nincidents:\n  - name: a\n    kind: latency\n"
        "    start: 1h\n    duration: 5m\n    magnitude: 2.5\n    origin: upload/ui\n";
    assert_int_equal(sim_incidents_parse(one, strlen(one), "c", inc, err, sizeof(err)), 1);
    assert_string_equal(inc[0].name, "a");
    assert_int_equal(inc[0].kind, SIM_INC_LATENCY);
    assert_true(inc[0].start_ns == INT64_C(3600000000000));
    assert_true(inc[0].duration_ns == INT64_C(300000000000));
    assert_true(inc[0].magnitude == 2.5);
    assert_string_equal(inc[0].origin, "upload/ui");

    const char *head = "incidents:\n  - {name: x, kind: failure_spike, start: 1s, duration: 1s, ";
    char y[512];
#define BAD(tail, needle)                                                                          \
    do {                                                                                           \
        snprintf(y, sizeof(y), "%s%s", head, tail);                                                \
        expect_inc_err(y, needle);                                                                 \
    } while (0)
    BAD("magnitude: 0.5, colour: red}\n", "c.yaml:2:");
    BAD("magnitude: 0.5, colour: red}\n", "unknown key \"colour\"");
    BAD("magnitude: 1.5}\n", "incidents[0].magnitude");
    BAD("magnitude: nan}\n", "not a number");
    BAD("magnitude: 0x1}\n", "not a number");
    BAD("magnitude: 0.5, country: XX}\n", "incidents[0].country");
    BAD("magnitude: 0.5, country: ru}\n", "incidents[0].country");
    BAD("magnitude: 0.5, seller: 3}\n", "seller applies only");
    BAD("magnitude: 0.5, magnitude: 0.4}\n", "duplicate key");
    BAD("magnitude: [1]}\n", "expected a scalar");
    BAD("}\n", "missing key magnitude");
    expect_inc_err("incidents:\n  - {kind: latency, start: 1s, duration: 1s, magnitude: 2}\n",
                   "missing key name");
    expect_inc_err("incidents:\n  - {name: a, kind: latency, start: 1s, duration: 0s, "
                   "magnitude: 2}\n",
                   "duration: must be > 0");
    expect_inc_err("incidents:\n  - {name: a, kind: latency, start: soon, duration: 1s, "
                   "magnitude: 2}\n",
                   "incidents[0].start");
    expect_inc_err("incidents:\n  - {name: a, kind: latency, start: 1s, duration: 1s, "
                   "magnitude: 0.5}\n",
                   "outside [1, 1000]");
    expect_inc_err("incidents:\n  - {name: a, kind: meltdown, start: 1s, duration: 1s, "
                   "magnitude: 2}\n",
                   "is not one of");
    expect_inc_err("incidents:\n  - {name: A B, kind: latency, start: 1s, duration: 1s, "
                   "magnitude: 2}\n",
                   "incidents[0].name");
    expect_inc_err("incidents:\n  - {name: s, kind: seller_burst, start: 1s, duration: 1s, "
                   "magnitude: 2}\n",
                   "needs a seller");
    expect_inc_err("incidents:\n  - {name: s, kind: seller_burst, seller: 0, start: 1s, "
                   "duration: 1s, magnitude: 2}\n",
                   "incidents[0].seller");
    expect_inc_err("incidents:\n  - {name: s, kind: seller_failures, seller: 2, country: RU, "
                   "start: 1s, duration: 1s, magnitude: 1}\n",
                   "takes no country");
    expect_inc_err("incidents:\n  - {name: a, kind: latency, start: 1s, duration: 1s, "
                   "magnitude: 2}\n  - {name: a, kind: latency, start: 1s, duration: 1s, "
                   "magnitude: 2}\n",
                   "c.yaml:3:5: incidents[1]: name \"a\" already used");
    expect_inc_err("incidents: {name: a}\n", "expected a list");
    expect_inc_err("incidents:\n  - 3\n", "incidents[0]: expected a mapping");
    expect_inc_err("incidents: []\nincidents: []\n", "duplicate section");
    expect_inc_err("incidents:\n  - &x {name: a, kind: latency, start: 1s, duration: 1s, "
                   "magnitude: 2}\n  - *x\n",
                   "c.yaml:3:5: aliases");
    expect_inc_err("incidents: [\n", "c.yaml:");
    /* 65 incidents */
    struct upm_buf b;
    upm_buf_init(&b, 0);
    upm_buf_puts(&b, "incidents:\n");
    for (int i = 0; i <= SIM_MAX_INCIDENTS; i++)
        upm_buf_printf(&b,
                       "  - {name: i%d, kind: latency, start: 1s, duration: 1s, "
                       "magnitude: 2}\n",
                       i);
    expect_inc_err(b.data, "at most 64");
    upm_buf_free(&b);
#undef BAD
}

/* The loader skips `incidents` (UPM_CFG_EXTERNAL) while the simulator's
 * pass reads it: one file serves both. */
static void test_incidents_beside_config_sections(void **state)
{
    const char *yaml = "simulator:\n  seed: 9\nincidents:\n  - {name: a, kind: throughput_drop,"
                       " start: 1m, duration: 1m, magnitude: 0.9}\n";
    struct sim_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    const struct upm_config_section sec[] = {
        {"simulator", sim_config_keys, sim_config_nkeys, &cfg},
        {"incidents", UPM_CFG_EXTERNAL, 0, NULL},
    };
    assert_int_equal(upm_config_load_string(sec, 2, yaml, strlen(yaml), "f", err, sizeof(err)), 0);
    assert_int_equal(cfg.seed, 9);
    struct sim_incident inc[SIM_MAX_INCIDENTS];
    assert_int_equal(sim_incidents_parse(yaml, strlen(yaml), "f", inc, err, sizeof(err)), 1);
    upm_config_free(sec, 2);
}

static void test_create_errors(void **state)
{
    struct {
        const char *yaml, *needle;
    } cases[] = {
        {"simulator:\n  countries: [\"RU\"]\n", "expected name=weight"},
        {"simulator:\n  countries: [\"XX=1\"]\n", "ISO 3166"},
        {"simulator:\n  countries: [\"RU=0\"]\n", "weight must be > 0"},
        {"simulator:\n  countries: [\"RU=1\", \"RU=2\"]\n", "listed twice"},
        {"simulator:\n  origins: [\"a=x\"]\n", "simulator.origins"},
        {"simulator:\n  media_bad_share: 0.5\n", "must be 1"},
        {"simulator:\n  success_overrides: [\"planet:X=1/1/1\"]\n", "expected origin:"},
        {"simulator:\n  success_overrides: [\"country:FR=0.1/0.2/0.3\"]\n", "not in"},
        {"simulator:\n  success_overrides: [\"origin:upload/ui=0.1/0.2\"]\n", "p1/p2/p3"},
        {"simulator:\n  success_overrides: [\"origin:upload/ui=0.1/2/0.3\"]\n", "[0,1]"},
        {"simulator:\n  cdn_host: \"a b\"\n", "cdn_host"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct sim_config cfg;
        load_cfg(&cfg, cases[i].yaml);
        err[0] = '\0';
        struct sim *s = sim_create(&cfg, START, NULL, 0, err, sizeof(err));
        if (s)
            fail_msg("accepted: %s", cases[i].yaml);
        if (!strstr(err, cases[i].needle))
            fail_msg("error \"%s\" lacks \"%s\"", err, cases[i].needle);
        free_cfg(&cfg);
    }
    /* An incident naming a country outside the mix. */
    struct sim_incident inc = {.name = "x",
                               .kind = SIM_INC_FAILURE_SPIKE,
                               .duration_ns = 1,
                               .magnitude = 1,
                               .country = "FR"};
    struct sim_config cfg;
    load_cfg(&cfg, NULL);
    assert_null(sim_create(&cfg, START, &inc, 1, err, sizeof(err)));
    assert_non_null(strstr(err, "not in simulator.countries"));
    free_cfg(&cfg);
    sim_destroy(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fast_serializer_matches_canonical),
        cmocka_unit_test(test_deterministic_by_seed),
        cmocka_unit_test(test_success_by_try_number),
        cmocka_unit_test(test_overrides_per_origin_and_country),
        cmocka_unit_test(test_event_type_shares),
        cmocka_unit_test(test_zipf_skew),
        cmocka_unit_test(test_country_and_origin_mix),
        cmocka_unit_test(test_media_shares),
        cmocka_unit_test(test_attempt_consistency),
        cmocka_unit_test(test_full_time_lognormal),
        cmocka_unit_test(test_daily_seasonality),
        cmocka_unit_test(test_weekly_cycle),
        cmocka_unit_test(test_new_sellers_join),
        cmocka_unit_test(test_warmup_starts_in_steady_state),
        cmocka_unit_test(test_parse_time),
        cmocka_unit_test(test_token_bucket),
        cmocka_unit_test(test_incident_schedule_and_effects),
        cmocka_unit_test(test_incident_parse_errors),
        cmocka_unit_test(test_incidents_beside_config_sections),
        cmocka_unit_test(test_create_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
