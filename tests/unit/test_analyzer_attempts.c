/*
 * Unit tests for the analyzer's per-minute attempt sketches
 * (services/analyzer/attempts.c).
 *
 * Attempts are added one per row, as ClickHouse would group them when each
 * lands in its own bucket, or several per row; the expected figures are
 * computed here from the same attempt times directly (exact mean, σ, tries,
 * first-try share; nearest-rank quantiles and the share above a threshold,
 * which the sketch gives within a bucket's width).
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "attempts.h"

#define M0 INT64_C(29000000)

static void add1(struct att_store *a, int64_t minute, size_t seg, double t, int tries)
{
    struct att_row r = {att_bucket(t), 1, t, t * t, tries, tries == 1};
    assert_int_equal(att_add(a, minute, seg, &r), 0);
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

static double nearest_rank(const double *sorted, size_t n, double q)
{
    size_t k = (size_t)ceil(q * (double)n);
    return sorted[k < 1 ? 0 : k - 1];
}

static void test_buckets_bracket_their_values(void **state)
{
    (void)state;
    assert_int_equal(att_bucket(0), 0);
    assert_int_equal(att_bucket(-5), 0);
    assert_int_equal(att_bucket(NAN), 0);
    assert_int_equal(att_bucket(ATT_T0), 0);
    assert_int_equal(att_bucket(ATT_T0 * 1.0001), 1);
    assert_int_equal(att_bucket(1e30), ATT_BUCKETS - 1);
    assert_true(isinf(att_bucket_high(ATT_BUCKETS - 1)));
    for (double t = 0.011; t < 1e6; t *= 1.013) {
        int b = att_bucket(t);
        assert_true(b > 0 && b < ATT_BUCKETS - 1);
        /* (low, high], up to the rounding of log() at a bound */
        assert_true(t > att_bucket_low(b) * (1 - 1e-12));
        assert_true(t <= att_bucket_high(b) * (1 + 1e-12));
        assert_true(att_bucket_high(b) / att_bucket_low(b) < ATT_RATIO + 1e-9);
    }
    /* The SQL text carries the same constants. */
    char buf[256];
    const char *sql = att_bucket_sql(buf, sizeof(buf), "t");
    assert_non_null(strstr(sql, "log(t / 0.01"));
    assert_non_null(strstr(sql, "log(1.04"));
    assert_non_null(strstr(sql, "least(511,"));
}

static void test_window_sums_are_exact(void **state)
{
    (void)state;
    struct att_store *a = att_create();
    /* minute M0+k, seg 0: attempt times 10k+1 .. 10k+5 with tries 1..5 */
    double st = 0, st2 = 0, tries = 0, first = 0, n = 0;
    for (int k = 0; k < 6; k++) {
        for (int i = 1; i <= 5; i++) {
            double t = 10.0 * k + i;
            add1(a, M0 + k, 0, t, i);
            add1(a, M0 + k, 3, 1000 + t, 1); /* another segment, never counted in 0 */
            if (k >= 1 && k < 5) {
                st += t, st2 += t * t, tries += i, first += i == 1, n++;
            }
        }
    }
    struct att_window w;
    att_window(a, 0, M0 + 1, M0 + 5, NAN, &w);
    assert_true(w.n == n);
    double mean = st / n;
    assert_true(fabs(w.mean - mean) < 1e-12 * mean);
    assert_true(fabs(w.sd - sqrt(st2 / n - mean * mean)) < 1e-9);
    assert_true(w.tries == tries / n);
    assert_true(w.first == first / n);
    assert_true(isnan(w.beyond));

    /* Several attempts in one row add up like one row each. */
    struct att_store *b = att_create();
    struct att_row r = {att_bucket(12), 3, 36, 3 * 144, 6, 1};
    assert_int_equal(att_add(b, M0, 0, &r), 0);
    att_window(b, 0, M0, M0 + 1, NAN, &w);
    assert_true(w.n == 3 && w.mean == 12 && w.sd == 0 && w.tries == 2);
    assert_true(fabs(w.first - 1.0 / 3) < 1e-15);
    assert_true(w.q[0] == 12 && w.q[1] == 12 && w.q[2] == 12);
    att_destroy(b);
    att_destroy(a);
}

static void test_quantiles_and_beyond_within_a_bucket(void **state)
{
    (void)state;
    struct att_store *a = att_create();
    enum { N = 5000 };
    double *t = malloc(N * sizeof(double));
    srand(7);
    for (int i = 0; i < N; i++) {
        /* log-normal-ish: exp of a sum of uniforms, 0.2 s .. 2,000 s */
        double u = 0;
        for (int k = 0; k < 4; k++)
            u += (double)rand() / RAND_MAX;
        t[i] = exp(u * 2.3 - 1.6);
        add1(a, M0 + i % 60, 0, t[i], 1 + i % 3);
    }
    qsort(t, N, sizeof(double), cmp_double);
    struct att_window w;
    double thr = nearest_rank(t, N, 0.9);
    att_window(a, 0, M0, M0 + 60, thr, &w);
    static const double qs[3] = {0.5, 0.95, 0.99};
    for (int k = 0; k < 3; k++) {
        double want = nearest_rank(t, N, qs[k]);
        assert_true(fabs(w.q[k] - want) <= (ATT_RATIO - 1) * want);
    }
    /* 10 % lie above the 90th percentile; the threshold's bucket is split
     * pro rata, so within that bucket's share of the attempts. */
    int tb = att_bucket(thr);
    double in_bucket = 0;
    for (int i = 0; i < N; i++)
        in_bucket += att_bucket(t[i]) == tb;
    assert_true(fabs(w.beyond - 0.1) <= in_bucket / N + 1e-12);
    /* A threshold above everything: none beyond; below everything: all. */
    att_window(a, 0, M0, M0 + 60, 1e9, &w);
    assert_true(w.beyond == 0);
    att_window(a, 0, M0, M0 + 60, 0.001, &w);
    assert_true(fabs(w.beyond - 1) < 1e-12);
    free(t);
    att_destroy(a);
}

static void test_clear_evict_and_reread(void **state)
{
    (void)state;
    struct att_store *a = att_create();
    for (int k = 0; k < 10; k++)
        add1(a, M0 + k, 0, 5, 1);
    struct att_window w;
    att_window(a, 0, M0, M0 + 10, NAN, &w);
    assert_true(w.n == 10);
    /* Re-reading minutes replaces them: clear, then add what is there now. */
    att_clear_range(a, M0 + 7, M0 + 10);
    for (int k = 7; k < 10; k++) {
        add1(a, M0 + k, 0, 5, 1);
        add1(a, M0 + k, 0, 5, 1);
    }
    att_window(a, 0, M0, M0 + 10, NAN, &w);
    assert_true(w.n == 13);
    att_evict_before(a, M0 + 8);
    att_window(a, 0, M0, M0 + 10, NAN, &w);
    assert_true(w.n == 4);
    /* An empty window says "no attempts", not zeros. */
    att_window(a, 0, M0 + 20, M0 + 30, 3, &w);
    assert_true(w.n == 0 && isnan(w.mean) && isnan(w.q[1]) && isnan(w.beyond));
    att_window(a, 5, M0, M0 + 10, NAN, &w);
    assert_true(w.n == 0 && isnan(w.tries) && isnan(w.first));
    /* Minutes out of order land in order. */
    add1(a, M0 + 3, 0, 1, 1);
    add1(a, M0 - 100, 0, 1, 1);
    att_window(a, 0, M0 - 100, M0 + 4, NAN, &w);
    assert_true(w.n == 2);
    att_destroy(a);
}

static void test_bad_rows_are_refused(void **state)
{
    (void)state;
    struct att_store *a = att_create();
    struct att_row r = {-1, 1, 1, 1, 1, 1};
    assert_int_equal(att_add(a, M0, 0, &r), -1);
    r.bucket = ATT_BUCKETS;
    assert_int_equal(att_add(a, M0, 0, &r), -1);
    r.bucket = 3;
    r.n = NAN;
    assert_int_equal(att_add(a, M0, 0, &r), -1);
    r.n = -2;
    assert_int_equal(att_add(a, M0, 0, &r), -1);
    struct att_window w;
    att_window(a, 0, M0, M0 + 1, NAN, &w);
    assert_true(w.n == 0);
    att_destroy(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buckets_bracket_their_values),
        cmocka_unit_test(test_window_sums_are_exact),
        cmocka_unit_test(test_quantiles_and_beyond_within_a_bucket),
        cmocka_unit_test(test_clear_evict_and_reread),
        cmocka_unit_test(test_bad_rows_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
