#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "upmon/buf.h"
#include "upmon/log.h"
#include "upmon/prom.h"

#define L(...) ((const char *const[]){__VA_ARGS__})

static char *log_text;
static size_t log_len;
static FILE *log_sink;

static int setup(void **state)
{
    log_sink = open_memstream(&log_text, &log_len);
    upm_log_set_sink(log_sink);
    upm_log_set_level(UPM_LOG_INFO);
    *state = upm_prom_registry_create();
    return 0;
}

static int teardown(void **state)
{
    upm_prom_registry_destroy(*state);
    upm_log_set_sink(NULL);
    fclose(log_sink);
    free(log_text);
    log_text = NULL;
    return 0;
}

/* Render the registry into a fresh string the caller frees. */
static char *render(struct upm_prom_registry *reg)
{
    struct upm_buf b;
    upm_buf_init(&b, 0);
    assert_int_equal(upm_prom_render(reg, &b), 0);
    return upm_buf_steal(&b, NULL);
}

static void assert_render(struct upm_prom_registry *reg, const char *expected)
{
    char *got = render(reg);
    if (strcmp(got, expected) != 0)
        fprintf(stderr, "--- expected\n%s--- got\n%s---\n", expected, got);
    assert_string_equal(got, expected);
    free(got);
}

static const char *logged(void)
{
    fflush(log_sink);
    return log_text ? log_text : "";
}

static void test_counter_and_gauge_exposition(void **state)
{
    struct upm_prom_registry *reg = *state;
    struct upm_prom_metric *ev =
        upm_prom_counter(reg, "upmon_events_total", "Events consumed by type.", 1, L("type"));
    struct upm_prom_metric *lag =
        upm_prom_gauge(reg, "upmon_lag", "Consumer lag.", 2, L("topic", "partition"));
    struct upm_prom_metric *up = upm_prom_gauge(reg, "upmon_up", NULL, 0, NULL);
    assert_non_null(ev);
    assert_non_null(lag);
    assert_non_null(up);

    upm_prom_inc(upm_prom_series_get(ev, L("SAVE")), 3);
    upm_prom_inc(upm_prom_series_get(ev, L("ERROR")), 1);
    upm_prom_inc(upm_prom_series_get(ev, L("SAVE")), 2);
    struct upm_prom_series *l0 = upm_prom_series_get(lag, L("ev", "0"));
    upm_prom_set(l0, 10);
    upm_prom_add(l0, -12.5);
    upm_prom_set(upm_prom_series_get(up, NULL), 1);

    assert_render(reg, "# HELP upmon_events_total Events consumed by type.\n"
                       "# TYPE upmon_events_total counter\n"
                       "upmon_events_total{type=\"SAVE\"} 5\n"
                       "upmon_events_total{type=\"ERROR\"} 1\n"
                       "# HELP upmon_lag Consumer lag.\n"
                       "# TYPE upmon_lag gauge\n"
                       "upmon_lag{topic=\"ev\",partition=\"0\"} -2.5\n"
                       "# TYPE upmon_up gauge\n"
                       "upmon_up 1\n");
    assert_true(upm_prom_value(l0) == -2.5);
}

static void test_value_formatting(void **state)
{
    struct upm_prom_registry *reg = *state;
    struct upm_prom_metric *g = upm_prom_gauge(reg, "v", "", 1, L("k"));
    upm_prom_set(upm_prom_series_get(g, L("big")), 1e15);
    upm_prom_set(upm_prom_series_get(g, L("neg")), -42);
    upm_prom_set(upm_prom_series_get(g, L("tenth")), 0.1);
    upm_prom_set(upm_prom_series_get(g, L("half")), 2.5);
    upm_prom_set(upm_prom_series_get(g, L("pinf")), INFINITY);
    upm_prom_set(upm_prom_series_get(g, L("ninf")), -INFINITY);
    upm_prom_set(upm_prom_series_get(g, L("nan")), NAN);
    upm_prom_set(upm_prom_series_get(g, L("huge")), 1e300);
    upm_prom_set(upm_prom_series_get(g, L("zero")), 0);
    /* An empty help string still gets its (empty) HELP line. */
    assert_render(reg, "# HELP v \n"
                       "# TYPE v gauge\n"
                       "v{k=\"big\"} 1000000000000000\n"
                       "v{k=\"neg\"} -42\n"
                       "v{k=\"tenth\"} 0.10000000000000001\n"
                       "v{k=\"half\"} 2.5\n"
                       "v{k=\"pinf\"} +Inf\n"
                       "v{k=\"ninf\"} -Inf\n"
                       "v{k=\"nan\"} NaN\n"
                       "v{k=\"huge\"} 1.0000000000000001e+300\n"
                       "v{k=\"zero\"} 0\n");
}

static void test_histogram_exposition(void **state)
{
    struct upm_prom_registry *reg = *state;
    const double b[] = {0.005, 0.5, 1, 2.5, 100000, 1e6};
    struct upm_prom_metric *h =
        upm_prom_histogram(reg, "upmon_latency_seconds", "Latency.", 6, b, 1, L("origin"));
    assert_non_null(h);
    struct upm_prom_series *s = upm_prom_series_get(h, L("ui"));
    upm_prom_observe(s, 0.001);
    upm_prom_observe(s, 0.25);
    upm_prom_observe(s, 2);
    upm_prom_observe(s, 3);
    upm_prom_observe(s, 5e6);
    struct upm_prom_metric *plain = upm_prom_histogram(reg, "h2", NULL, 1, (double[]){1}, 0, NULL);
    upm_prom_observe(upm_prom_series_get(plain, NULL), 1.5);

    assert_render(reg, "# HELP upmon_latency_seconds Latency.\n"
                       "# TYPE upmon_latency_seconds histogram\n"
                       "upmon_latency_seconds_bucket{origin=\"ui\",le=\"0.005\"} 1\n"
                       "upmon_latency_seconds_bucket{origin=\"ui\",le=\"0.5\"} 2\n"
                       "upmon_latency_seconds_bucket{origin=\"ui\",le=\"1\"} 2\n"
                       "upmon_latency_seconds_bucket{origin=\"ui\",le=\"2.5\"} 3\n"
                       "upmon_latency_seconds_bucket{origin=\"ui\",le=\"100000\"} 4\n"
                       "upmon_latency_seconds_bucket{origin=\"ui\",le=\"1e+06\"} 4\n"
                       "upmon_latency_seconds_bucket{origin=\"ui\",le=\"+Inf\"} 5\n"
                       "upmon_latency_seconds_sum{origin=\"ui\"} 5000005.2510000002\n"
                       "upmon_latency_seconds_count{origin=\"ui\"} 5\n"
                       "# TYPE h2 histogram\n"
                       "h2_bucket{le=\"1\"} 0\n"
                       "h2_bucket{le=\"+Inf\"} 1\n"
                       "h2_sum 1.5\n"
                       "h2_count 1\n");
    assert_true(upm_prom_value(s) == 5.0);
}

static void test_histogram_boundaries(void **state)
{
    struct upm_prom_registry *reg = *state;
    const double b[] = {1, 2, 4};
    struct upm_prom_metric *h = upm_prom_histogram(reg, "h", NULL, 3, b, 0, NULL);
    struct upm_prom_series *s = upm_prom_series_get(h, NULL);
    /* Exactly on each bound: le is "less or equal", so each lands in its own bucket. */
    upm_prom_observe(s, 1);
    upm_prom_observe(s, 2);
    upm_prom_observe(s, 4);
    /* Just above a bound goes to the next one; below the first to the first. */
    upm_prom_observe(s, nextafter(1.0, 2.0));
    upm_prom_observe(s, -7);
    upm_prom_observe(s, 4.0000001);
    assert_render(reg, "# TYPE h histogram\n"
                       "h_bucket{le=\"1\"} 2\n"
                       "h_bucket{le=\"2\"} 4\n"
                       "h_bucket{le=\"4\"} 5\n"
                       "h_bucket{le=\"+Inf\"} 6\n"
                       "h_sum 5.0000001000000003\n"
                       "h_count 6\n");
}

static void test_histogram_nan_and_no_buckets(void **state)
{
    struct upm_prom_registry *reg = *state;
    struct upm_prom_metric *h = upm_prom_histogram(reg, "h", NULL, 0, NULL, 0, NULL);
    assert_non_null(h);
    struct upm_prom_series *s = upm_prom_series_get(h, NULL);
    upm_prom_observe(s, 3);
    assert_render(reg, "# TYPE h histogram\n"
                       "h_bucket{le=\"+Inf\"} 1\n"
                       "h_sum 3\n"
                       "h_count 1\n");
    struct upm_prom_metric *h2 = upm_prom_histogram(reg, "h2", NULL, 1, (double[]){1}, 0, NULL);
    struct upm_prom_series *s2 = upm_prom_series_get(h2, NULL);
    upm_prom_observe(s2, NAN);
    char *out = render(reg);
    assert_non_null(strstr(out, "h2_bucket{le=\"1\"} 0\nh2_bucket{le=\"+Inf\"} 1\n"
                                "h2_sum NaN\nh2_count 1\n"));
    free(out);
}

static void test_escaping(void **state)
{
    struct upm_prom_registry *reg = *state;
    struct upm_prom_metric *c =
        upm_prom_counter(reg, "esc_total", "Back\\slash\nnew \"q\"", 2, L("a", "b"));
    upm_prom_inc(upm_prom_series_get(c, L("q\"uo\"te", "b\\s\nn")), 1);
    upm_prom_inc(upm_prom_series_get(c, L("", "ünï{}=,")), 1);
    /* HELP escapes \ and newline but leaves quotes; label values escape all three. */
    assert_render(reg, "# HELP esc_total Back\\\\slash\\nnew \"q\"\n"
                       "# TYPE esc_total counter\n"
                       "esc_total{a=\"q\\\"uo\\\"te\",b=\"b\\\\s\\nn\"} 1\n"
                       "esc_total{a=\"\",b=\"ünï{}=,\"} 1\n");
}

static void test_invalid_names_rejected(void **state)
{
    struct upm_prom_registry *reg = *state;
    const char *bad_names[] = {"", "1abc", "a-b", "a b", "é", "a.b", "a{b}"};
    for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++)
        assert_null(upm_prom_counter(reg, bad_names[i], "x", 0, NULL));
    assert_null(upm_prom_counter(reg, NULL, "x", 0, NULL));
    assert_non_null(strstr(logged(), "invalid metric name"));
    assert_non_null(upm_prom_counter(reg, "a:b_c9", "x", 0, NULL));
    assert_non_null(upm_prom_gauge(reg, "_x", "x", 0, NULL));

    const char *bad_labels[] = {"", "__reserved", "1a", "a-b", "a:b"};
    for (size_t i = 0; i < sizeof(bad_labels) / sizeof(bad_labels[0]); i++)
        assert_null(upm_prom_gauge(reg, "g", "x", 1, &bad_labels[i]));
    assert_null(upm_prom_gauge(reg, "g", "x", 1, L(NULL)));
    assert_null(upm_prom_gauge(reg, "g", "x", 2, L("a", "a")));
    assert_null(upm_prom_gauge(reg, "g", "x", 1, NULL));
    assert_non_null(strstr(logged(), "invalid label name"));
    assert_non_null(strstr(logged(), "duplicate label name"));
    /* "le" belongs to the histogram's buckets, but is fine on a gauge. */
    assert_null(upm_prom_histogram(reg, "h", "x", 1, (double[]){1}, 1, L("le")));
    assert_non_null(upm_prom_gauge(reg, "g_le", "x", 1, L("le")));
    assert_non_null(upm_prom_gauge(reg, "g_ok", "x", 2, L("_a", "b_1")));

    /* Buckets: strictly increasing and finite. */
    assert_null(upm_prom_histogram(reg, "h", "x", 2, (double[]){2, 1}, 0, NULL));
    assert_null(upm_prom_histogram(reg, "h", "x", 2, (double[]){1, 1}, 0, NULL));
    assert_null(upm_prom_histogram(reg, "h", "x", 2, (double[]){NAN, 1}, 0, NULL));
    assert_null(upm_prom_histogram(reg, "h", "x", 2, (double[]){-INFINITY, 1}, 0, NULL));
    assert_null(upm_prom_histogram(reg, "h", "x", 2, NULL, 0, NULL));
    assert_non_null(strstr(logged(), "strictly increasing"));
    assert_non_null(strstr(logged(), "histogram buckets missing"));
    /* None of the rejected families leaked into the registry. */
    char *out = render(reg);
    assert_string_equal(out, "");
    free(out);
}

static void test_reregistration(void **state)
{
    struct upm_prom_registry *reg = *state;
    struct upm_prom_metric *c = upm_prom_counter(reg, "c_total", "first", 1, L("a"));
    assert_non_null(c);
    assert_ptr_equal(upm_prom_counter(reg, "c_total", "other help", 1, L("a")), c);
    assert_null(upm_prom_gauge(reg, "c_total", "first", 1, L("a")));
    assert_non_null(strstr(logged(), "different shape\" name=c_total type=gauge "
                                     "registered_type=counter"));
    assert_null(upm_prom_counter(reg, "c_total", "first", 1, L("b")));
    assert_null(upm_prom_counter(reg, "c_total", "first", 0, NULL));
    assert_null(upm_prom_counter(reg, "c_total", "first", 2, L("a", "b")));

    const double b1[] = {1, 2};
    struct upm_prom_metric *h = upm_prom_histogram(reg, "h", "x", 2, b1, 0, NULL);
    assert_non_null(h);
    assert_ptr_equal(upm_prom_histogram(reg, "h", "x", 2, b1, 0, NULL), h);
    /* A spelled-out trailing +Inf is the same shape. */
    assert_ptr_equal(upm_prom_histogram(reg, "h", "x", 3, (double[]){1, 2, INFINITY}, 0, NULL), h);
    assert_null(upm_prom_histogram(reg, "h", "x", 2, (double[]){1, 3}, 0, NULL));
    assert_null(upm_prom_histogram(reg, "h", "x", 1, (double[]){1}, 0, NULL));

    /* The series survive: re-registering hands back the same live family. */
    upm_prom_inc(upm_prom_series_get(c, L("x")), 1);
    upm_prom_inc(upm_prom_series_get(upm_prom_counter(reg, "c_total", NULL, 1, L("a")), L("x")), 1);
    assert_render(reg, "# HELP c_total first\n"
                       "# TYPE c_total counter\n"
                       "c_total{a=\"x\"} 2\n");
}

static void test_series_identity_remove_and_clear(void **state)
{
    struct upm_prom_registry *reg = *state;
    struct upm_prom_metric *g = upm_prom_gauge(reg, "top", NULL, 2, L("company", "rank"));
    struct upm_prom_metric *other = upm_prom_gauge(reg, "other", NULL, 0, NULL);
    struct upm_prom_series *a = upm_prom_series_get(g, L("1", "a"));
    struct upm_prom_series *b = upm_prom_series_get(g, L("2", "b"));
    struct upm_prom_series *c = upm_prom_series_get(g, L("3", "c"));
    /* The hash covers the boundaries between values: ("1a","") is not ("1","a"). */
    struct upm_prom_series *d = upm_prom_series_get(g, L("1a", ""));
    assert_ptr_not_equal(a, d);
    assert_ptr_equal(upm_prom_series_get(g, L("2", "b")), b);
    upm_prom_set(a, 1);
    upm_prom_set(b, 2);
    upm_prom_set(c, 3);
    upm_prom_set(d, 4);
    upm_prom_set(upm_prom_series_get(other, NULL), 9);

    upm_prom_series_remove(g, L("2", "b"));
    upm_prom_series_remove(g, L("9", "nope")); /* unknown: ignored */
    upm_prom_series_remove(g, NULL);           /* missing values: ignored */
    /* A re-created series starts from 0 at the end of the creation order. */
    struct upm_prom_series *b2 = upm_prom_series_get(g, L("2", "b"));
    assert_true(upm_prom_value(b2) == 0.0);
    upm_prom_set(b2, 5);
    assert_render(reg, "# TYPE top gauge\n"
                       "top{company=\"1\",rank=\"a\"} 1\n"
                       "top{company=\"3\",rank=\"c\"} 3\n"
                       "top{company=\"1a\",rank=\"\"} 4\n"
                       "top{company=\"2\",rank=\"b\"} 5\n"
                       "# TYPE other gauge\n"
                       "other 9\n");

    /* Remove first and last, then the middle: the order links stay sound. */
    upm_prom_series_remove(g, L("1", "a"));
    upm_prom_series_remove(g, L("2", "b"));
    assert_render(reg, "# TYPE top gauge\n"
                       "top{company=\"3\",rank=\"c\"} 3\n"
                       "top{company=\"1a\",rank=\"\"} 4\n"
                       "# TYPE other gauge\n"
                       "other 9\n");

    /* A cleared family disappears from the output, then comes back on use. */
    upm_prom_metric_clear(g);
    assert_render(reg, "# TYPE other gauge\nother 9\n");
    upm_prom_set(upm_prom_series_get(g, L("7", "z")), 7);
    assert_render(reg, "# TYPE top gauge\n"
                       "top{company=\"7\",rank=\"z\"} 7\n"
                       "# TYPE other gauge\n"
                       "other 9\n");
}

static void test_many_series_lookup(void **state)
{
    struct upm_prom_registry *reg = *state;
    struct upm_prom_metric *c = upm_prom_counter(reg, "many_total", NULL, 1, L("id"));
    enum { N = 5000 };
    struct upm_prom_series **s = calloc(N, sizeof(*s));
    char v[32];
    for (int i = 0; i < N; i++) {
        snprintf(v, sizeof(v), "%d", i);
        s[i] = upm_prom_series_get(c, L(v));
        upm_prom_inc(s[i], i);
    }
    /* Every lookup after growth of the hash table finds the original. */
    for (int i = 0; i < N; i++) {
        snprintf(v, sizeof(v), "%d", i);
        assert_ptr_equal(upm_prom_series_get(c, L(v)), s[i]);
        assert_true(upm_prom_value(s[i]) == (double)i);
    }
    for (int i = 0; i < N; i += 2) {
        snprintf(v, sizeof(v), "%d", i);
        upm_prom_series_remove(c, L(v));
    }
    char *out = render(reg);
    assert_null(strstr(out, "many_total{id=\"4998\"}"));
    assert_non_null(strstr(out, "many_total{id=\"4999\"} 4999\n"));
    size_t lines = 0;
    for (char *p = out; *p; p++)
        lines += *p == '\n';
    assert_int_equal(lines, 1 + N / 2);
    free(out);
    free(s);
}

static void test_counter_ignores_negative(void **state)
{
    struct upm_prom_registry *reg = *state;
    struct upm_prom_series *s =
        upm_prom_series_get(upm_prom_counter(reg, "c", NULL, 0, NULL), NULL);
    upm_prom_inc(s, 2.5);
    upm_prom_inc(s, -1);
    upm_prom_inc(s, -INFINITY);
    upm_prom_inc(s, NAN);
    upm_prom_inc(s, 0);
    assert_true(upm_prom_value(s) == 2.5);
    /* Gauges do go down. */
    struct upm_prom_series *g = upm_prom_series_get(upm_prom_gauge(reg, "g", NULL, 0, NULL), NULL);
    upm_prom_add(g, -1.5);
    upm_prom_add(g, -1.5);
    assert_true(upm_prom_value(g) == -3.0);
}

static void test_null_safety(void **state)
{
    struct upm_prom_registry *reg = *state;
    upm_prom_registry_destroy(NULL);
    upm_prom_inc(NULL, 1);
    upm_prom_set(NULL, 1);
    upm_prom_add(NULL, 1);
    upm_prom_observe(NULL, 1);
    assert_true(upm_prom_value(NULL) == 0.0);
    assert_null(upm_prom_series_get(NULL, NULL));
    upm_prom_series_remove(NULL, NULL);
    upm_prom_metric_clear(NULL);
    assert_null(upm_prom_counter(NULL, "x", NULL, 0, NULL));
    struct upm_prom_metric *c = upm_prom_counter(reg, "c", NULL, 2, L("a", "b"));
    assert_null(upm_prom_series_get(c, NULL));
    assert_null(upm_prom_series_get(c, L("x", NULL)));
    assert_non_null(strstr(logged(), "label values missing\" name=c"));
    /* Observing a counter series is a no-op, not a crash. */
    struct upm_prom_series *s = upm_prom_series_get(c, L("x", "y"));
    upm_prom_observe(s, 1);
    assert_true(upm_prom_value(s) == 0.0);
}

static void test_render_limit(void **state)
{
    struct upm_prom_registry *reg = *state;
    struct upm_prom_metric *c = upm_prom_counter(reg, "limit_total", "Help.", 1, L("id"));
    char v[32];
    for (int i = 0; i < 100; i++) {
        snprintf(v, sizeof(v), "%d", i);
        upm_prom_inc(upm_prom_series_get(c, L(v)), 1);
    }
    char *full = render(reg);
    size_t full_len = strlen(full);

    /* One byte short fails, and what was written is a prefix of the real thing. */
    struct upm_buf b;
    upm_buf_init(&b, full_len - 1);
    assert_int_equal(upm_prom_render(reg, &b), -1);
    assert_true(b.len < full_len);
    assert_memory_equal(b.data, full, b.len);
    upm_buf_free(&b);

    upm_buf_init(&b, 10);
    assert_int_equal(upm_prom_render(reg, &b), -1);
    upm_buf_free(&b);

    /* Exactly enough succeeds; render appends to what is already there. */
    upm_buf_init(&b, full_len + 3);
    assert_int_equal(upm_buf_puts(&b, "x\n"), 0);
    assert_int_equal(upm_prom_render(reg, &b), 0);
    assert_int_equal(b.len, full_len + 2);
    assert_string_equal(b.data + 2, full);
    upm_buf_free(&b);
    free(full);
}

/* ---- threads -------------------------------------------------------------------------------- */

enum { THREADS = 4, PER_THREAD = 100000 };

struct hammer {
    struct upm_prom_metric *c, *g, *h;
    atomic_int stop;
    atomic_long renders;
    atomic_int failures;
};

static void *hammer_update(void *arg)
{
    struct hammer *hm = arg;
    /* Each thread looks the series up itself: creation races must converge
     * on one series per label set. */
    struct upm_prom_series *c = upm_prom_series_get(hm->c, L("shared"));
    struct upm_prom_series *g = upm_prom_series_get(hm->g, NULL);
    struct upm_prom_series *h = upm_prom_series_get(hm->h, NULL);
    for (int i = 0; i < PER_THREAD; i++) {
        upm_prom_inc(c, 1);
        upm_prom_add(g, 0.5);
        upm_prom_observe(h, (double)(i % 4));
    }
    return NULL;
}

static struct upm_prom_registry *shared_reg;

static void *churn_and_render(void *arg)
{
    struct hammer *hm = arg;
    char v[32];
    for (long i = 0; !atomic_load(&hm->stop) || atomic_load(&hm->renders) < 3; i++) {
        snprintf(v, sizeof(v), "t%ld", i % 50);
        upm_prom_inc(upm_prom_series_get(hm->c, L(v)), 1);
        if (i % 3 == 0)
            upm_prom_series_remove(hm->c, L(v));
        struct upm_buf b;
        upm_buf_init(&b, 0);
        /* cmocka's asserts must stay on the main thread: count failures. */
        if (upm_prom_render(shared_reg, &b) != 0)
            atomic_fetch_add(&hm->failures, 1);
        /* Every histogram rendering is internally consistent: +Inf == _count. */
        const char *inf = b.data ? strstr(b.data, "hh_bucket{le=\"+Inf\"} ") : NULL;
        const char *cnt = b.data ? strstr(b.data, "hh_count ") : NULL;
        if (inf && cnt && strtoll(inf + 21, NULL, 10) != strtoll(cnt + 9, NULL, 10))
            atomic_fetch_add(&hm->failures, 1);
        upm_buf_free(&b);
        atomic_fetch_add(&hm->renders, 1);
    }
    return NULL;
}

static void test_threads_exact_totals(void **state)
{
    struct upm_prom_registry *reg = *state;
    shared_reg = reg;
    struct hammer hm = {
        .c = upm_prom_counter(reg, "cc_total", NULL, 1, L("k")),
        .g = upm_prom_gauge(reg, "gg", NULL, 0, NULL),
        .h = upm_prom_histogram(reg, "hh", NULL, 3, (double[]){0, 1, 2}, 0, NULL),
    };
    atomic_init(&hm.stop, 0);
    atomic_init(&hm.renders, 0);
    atomic_init(&hm.failures, 0);
    pthread_t upd[THREADS], churn;
    assert_int_equal(pthread_create(&churn, NULL, churn_and_render, &hm), 0);
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&upd[i], NULL, hammer_update, &hm), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(upd[i], NULL);
    atomic_store(&hm.stop, 1);
    pthread_join(churn, NULL);
    assert_true(atomic_load(&hm.renders) >= 3);
    assert_int_equal(atomic_load(&hm.failures), 0);

    const double total = (double)THREADS * PER_THREAD;
    assert_true(upm_prom_value(upm_prom_series_get(hm.c, L("shared"))) == total);
    assert_true(upm_prom_value(upm_prom_series_get(hm.g, NULL)) == total / 2);
    struct upm_prom_series *h = upm_prom_series_get(hm.h, NULL);
    assert_true(upm_prom_value(h) == total);
    char *out = render(reg);
    /* i % 4 spreads evenly over 0,1,2,3: buckets le=0,1,2 and the rest in +Inf. */
    char expect[512];
    snprintf(expect, sizeof(expect),
             "hh_bucket{le=\"0\"} %d\nhh_bucket{le=\"1\"} %d\nhh_bucket{le=\"2\"} %d\n"
             "hh_bucket{le=\"+Inf\"} %d\nhh_sum %d\nhh_count %d\n",
             THREADS * PER_THREAD / 4, THREADS * PER_THREAD / 2, THREADS * PER_THREAD / 4 * 3,
             THREADS * PER_THREAD, THREADS * PER_THREAD / 4 * 6, THREADS * PER_THREAD);
    assert_non_null(strstr(out, expect));
    snprintf(expect, sizeof(expect), "cc_total{k=\"shared\"} %d\n", THREADS * PER_THREAD);
    assert_non_null(strstr(out, expect));
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_counter_and_gauge_exposition, setup, teardown),
        cmocka_unit_test_setup_teardown(test_value_formatting, setup, teardown),
        cmocka_unit_test_setup_teardown(test_histogram_exposition, setup, teardown),
        cmocka_unit_test_setup_teardown(test_histogram_boundaries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_histogram_nan_and_no_buckets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_escaping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_names_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reregistration, setup, teardown),
        cmocka_unit_test_setup_teardown(test_series_identity_remove_and_clear, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_series_lookup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_counter_ignores_negative, setup, teardown),
        cmocka_unit_test_setup_teardown(test_null_safety, setup, teardown),
        cmocka_unit_test_setup_teardown(test_render_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads_exact_totals, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
