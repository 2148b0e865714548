/*
 * Unit tests for the analyzer's statistics (services/analyzer/stats.c).
 *
 * Expected values are worked out by hand in the comments beside them. The
 * two statistical checks (Laney's σz on binomial and beta-binomial data)
 * use a fixed seed, so they are exact reruns, and tolerances of about 3
 * standard errors of the estimate so that a different seed would pass too.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "stats.h"

#define EPS 1e-9

static void near(const char *what, double got, double want, double tol)
{
    if (!(fabs(got - want) <= tol))
        fail_msg("%s: got %.12g, want %.12g (± %g)", what, got, want, tol);
}

static void is_nan(const char *what, double got)
{
    if (!isnan(got))
        fail_msg("%s: got %.12g, want NaN", what, got);
}

/* splitmix64: small, seedable, and good enough for sampling tests. */
static uint64_t rng_state;

static double unif(void)
{
    uint64_t z = (rng_state += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    z ^= z >> 31;
    return ((double)(z >> 11) + 0.5) / 9007199254740992.0; /* (0, 1) */
}

static double binomial(int n, double p)
{
    int k = 0;
    for (int i = 0; i < n; i++)
        k += unif() < p;
    return k;
}

/* Gamma with an integer shape: a sum of exponentials. */
static double gamma_int(int shape)
{
    double s = 0;
    for (int i = 0; i < shape; i++)
        s -= log(unif());
    return s;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* ---- median ---------------------------------------------------------- */

static void test_median(void **state)
{
    double odd[] = {5, 1, 3};
    near("median {5,1,3}", an_median(odd, 3), 3, 0);
    double even[] = {4, 1, 3, 2};
    near("median {4,1,3,2} = (2+3)/2", an_median(even, 4), 2.5, 0);
    double dup[] = {2, 2, 1, 2};
    near("median {2,2,1,2}", an_median(dup, 4), 2, 0);
    double one[] = {-7};
    near("median of one", an_median(one, 1), -7, 0);

    /* NaNs are not values: {7,1,4} and {2,8} remain. */
    double nan_odd[] = {NAN, 7, NAN, 1, 4};
    near("median skips NaN (odd)", an_median(nan_odd, 5), 4, 0);
    double nan_even[] = {NAN, 2, NAN, 8};
    near("median skips NaN (even)", an_median(nan_even, 4), 5, 0);

    double all_nan[] = {NAN, NAN};
    is_nan("median of NaNs", an_median(all_nan, 2));
    is_nan("median of nothing", an_median(NULL, 0));
}

/* The selection against a full sort, over sizes and heavy duplication
 * (flat baselines are the common case). */
static void test_median_matches_sort(void **state)
{
    double v[257] = {0}, s[257];
    rng_state = 42;
    for (size_t n = 1; n <= 257; n += 8) {
        for (int levels = 2; levels <= 1000; levels *= 10) {
            for (size_t i = 0; i < n; i++)
                v[i] = floor(unif() * levels);
            memcpy(s, v, n * sizeof(*v));
            qsort(s, n, sizeof(*s), cmp_double);
            double want = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
            double got = an_median(v, n);
            if (got != want)
                fail_msg("n=%zu levels=%d: median %g, sorted says %g", n, levels, got, want);
        }
    }
}

/* ---- robust centre and sigma ------------------------------------------ */

static void test_robust(void **state)
{
    double tmp[8], c, s;

    /* median 3; |dev| = {2,1,0,1,2}, MAD 1 */
    const double clean[] = {1, 2, 3, 4, 5};
    assert_int_equal(an_robust(clean, 5, tmp, &c, &s), 5);
    near("centre", c, 3, 0);
    near("sigma = 1.4826·MAD", s, 1.4826, EPS);

    /* One wild point: median still 3, |dev| = {2,1,0,1,97}, MAD still 1,
     * so the limits are exactly those of the clean baseline. */
    const double wild[] = {1, 2, 3, 4, 100};
    double cw, sw;
    assert_int_equal(an_robust(wild, 5, tmp, &cw, &sw), 5);
    struct an_limits lc = an_xbar_limits(c, s, 3, 0);
    struct an_limits lw = an_xbar_limits(cw, sw, 3, 0);
    near("outlier does not move ucl", lw.ucl, lc.ucl, 0);
    near("outlier does not move lcl", lw.lcl, lc.lcl, 0);
    near("ucl = 3 + 3·1.4826", lc.ucl, 3 + 3 * 1.4826, EPS);

    /* Non-finite values are skipped and not counted. */
    const double gaps[] = {NAN, 1, 2, INFINITY, 3, 4, 100, NAN};
    assert_int_equal(an_robust(gaps, 8, tmp, &c, &s), 5);
    near("centre with gaps", c, 3, 0);
    near("sigma with gaps", s, 1.4826, EPS);
}

static void test_robust_mad_zero(void **state)
{
    double tmp[6], c, s;

    /* median (5+5)/2 = 5; |dev| = {0,0,0,0,2,4}: MAD 0, so the mean
     * absolute deviation 6/6 = 1 scales to σ = 1.253314. */
    const double flat[] = {5, 9, 5, 7, 5, 5};
    assert_int_equal(an_robust(flat, 6, tmp, &c, &s), 6);
    near("centre", c, 5, 0);
    near("sigma falls back to 1.253314·meanAD", s, 1.253314, EPS);

    const double constant[] = {3, 3, 3};
    assert_int_equal(an_robust(constant, 3, tmp, &c, &s), 3);
    near("constant centre", c, 3, 0);
    near("constant sigma", s, 0, 0);

    const double none[] = {NAN, NAN};
    assert_int_equal(an_robust(none, 2, tmp, &c, &s), 0);
    is_nan("empty centre", c);
    is_nan("empty sigma", s);
}

/* ---- p-chart ------------------------------------------------------------ */

static void test_p_chart(void **state)
{
    /* σ = √(0.1·0.9/900) = 0.01, × σz 1.5 = 0.015; 0.1 ± 0.045 */
    struct an_limits l = an_p_chart(0.1, 900, 1.5, 3);
    near("centre", l.centre, 0.1, 0);
    near("sigma", l.sigma, 0.015, EPS);
    near("ucl", l.ucl, 0.145, EPS);
    near("lcl", l.lcl, 0.055, EPS);

    /* σ = √(0.02·0.98/400) = 0.007: lcl 0.02 − 0.021 < 0 clamps to 0 */
    l = an_p_chart(0.02, 400, 1, 3);
    near("sigma", l.sigma, 0.007, EPS);
    near("ucl", l.ucl, 0.041, EPS);
    near("lcl clamped at 0", l.lcl, 0, 0);

    /* σ = √(0.9·0.1/4) = 0.15: ucl 0.9 + 0.45 clamps to 1, lcl 0.45 */
    l = an_p_chart(0.9, 4, 1, 3);
    near("ucl clamped at 1", l.ucl, 1, 0);
    near("lcl", l.lcl, 0.45, EPS);

    /* A baseline that never failed: any failure is outside. */
    l = an_p_chart(0, 1000, 1, 3);
    near("pbar 0 sigma", l.sigma, 0, 0);
    near("pbar 0 ucl", l.ucl, 0, 0);
    near("pbar 0 lcl", l.lcl, 0, 0);

    l = an_p_chart(0.05, 0, 1, 3);
    near("n = 0 keeps the centre", l.centre, 0.05, 0);
    is_nan("n = 0 sigma", l.sigma);
    is_nan("n = 0 ucl", l.ucl);
    is_nan("n = 0 lcl", l.lcl);
    l = an_p_chart(0.05, -3, 1, 3);
    is_nan("n < 0 ucl", l.ucl);
    l = an_p_chart(NAN, 100, 1, 3);
    is_nan("pbar NaN ucl", l.ucl);
    is_nan("pbar NaN lcl", l.lcl);
}

/* ---- Laney σz ------------------------------------------------------------ */

static void test_laney_hand(void **state)
{
    /* pbar = 4/20 = 0.2, σ_i = √(0.16/10) = 0.126491; z = ∓0.790569;
     * one moving range 1.581139 / 1.128 = 1.401719. */
    const double x[] = {1, 3}, n[] = {10, 10};
    double pbar;
    near("sigma_z", an_laney_sigma_z(x, n, 2, &pbar), 1.4017188209966, 1e-9);
    near("pbar", pbar, 0.2, EPS);

    /* The middle point has no trials: skipped, same answer. */
    const double x3[] = {1, 5, 3}, n3[] = {10, 0, 10};
    near("n = 0 point skipped", an_laney_sigma_z(x3, n3, 3, &pbar), 1.4017188209966, 1e-9);
    near("pbar without it", pbar, 0.2, EPS);

    /* Identical proportions: σz estimate 0, floored at 1. */
    const double xs[] = {2, 2, 2}, ns[] = {10, 10, 10};
    near("under-dispersion floors at 1", an_laney_sigma_z(xs, ns, 3, NULL), 1, 0);

    near("one point", an_laney_sigma_z(x, n, 1, &pbar), 1, 0);
    near("one point pbar", pbar, 0.1, EPS);
    const double nz[] = {0, 0};
    near("no trials", an_laney_sigma_z(x, nz, 2, &pbar), 1, 0);
    is_nan("no trials pbar", pbar);
}

#define LANEY_POINTS 1000
#define LANEY_N      1000

/* Share of points outside the p-chart limits with factor sigma_z. */
static double share_outside(const double *x, double pbar, double sigma_z)
{
    struct an_limits l = an_p_chart(pbar, LANEY_N, sigma_z, 3);
    int out = 0;
    for (int i = 0; i < LANEY_POINTS; i++) {
        double p = x[i] / LANEY_N;
        out += p > l.ucl || p < l.lcl;
    }
    return (double)out / LANEY_POINTS;
}

static void test_laney_dispersion(void **state)
{
    static double x[LANEY_POINTS], n[LANEY_POINTS];
    double pbar;

    /* Binomial, p = 0.05, n = 1000: the estimate of σz is 1 with a
     * standard error near 0.03 for 1000 points; it is floored at 1, so
     * it must land in [1, 1.1]. */
    rng_state = 20260302;
    for (int i = 0; i < LANEY_POINTS; i++) {
        n[i] = LANEY_N;
        x[i] = binomial(LANEY_N, 0.05);
    }
    double sz = an_laney_sigma_z(x, n, LANEY_POINTS, &pbar);
    if (!(sz >= 1 && sz <= 1.1))
        fail_msg("binomial data: sigma_z %.4f, want 1..1.1", sz);
    near("binomial pbar", pbar, 0.05, 0.001);

    /* Beta-binomial: each point's p ~ Beta(5, 95) (mean 0.05, sd 0.0217)
     * against a binomial sd of √(0.05·0.95/1000) = 0.0069, so σz ≈
     * √(0.0217² + 0.0069²)/0.0069 ≈ 3.3. */
    for (int i = 0; i < LANEY_POINTS; i++) {
        double a = gamma_int(5), b = gamma_int(95);
        x[i] = binomial(LANEY_N, a / (a + b));
    }
    sz = an_laney_sigma_z(x, n, LANEY_POINTS, &pbar);
    if (!(sz > 2.5 && sz < 4.5))
        fail_msg("beta-binomial data: sigma_z %.4f, want about 3.3", sz);

    /* What σz is for: the classic chart flags about a third of ordinary
     * points, Laney's almost none. */
    double classic = share_outside(x, pbar, 1), laney = share_outside(x, pbar, sz);
    if (!(classic > 0.2))
        fail_msg("classic p-chart flags %.3f of over-dispersed points, want > 0.2", classic);
    if (!(laney < 0.03))
        fail_msg("Laney p'-chart flags %.3f of over-dispersed points, want < 0.03", laney);
}

/* ---- X̄ limits and EWMA -------------------------------------------------- */

static void test_xbar_limits(void **state)
{
    struct an_limits l = an_xbar_limits(10, 2, 3, 0);
    near("ucl", l.ucl, 16, 0);
    near("lcl", l.lcl, 4, 0);
    l = an_xbar_limits(1, 2, 3, 0);
    near("lcl clamped at 0", l.lcl, 0, 0);
    l = an_xbar_limits(1, 2, 3, -INFINITY);
    near("no lower bound", l.lcl, -5, 0);
    l = an_xbar_limits(NAN, 2, 3, 0);
    is_nan("NaN centre gives no lcl (not the bound)", l.lcl);
    l = an_xbar_limits(1, NAN, 3, 0);
    is_nan("NaN sigma ucl", l.ucl);
}

static void test_ewma(void **state)
{
    struct an_limits l;

    /* z1 = 0.5·10 + 0.5·8 = 9, z2 = 0.5·12 + 0.5·9 = 10.5.
     * t = 2: λ/(2−λ)·(1 − 0.5⁴) = 1/3 · 15/16 = 5/16; 8 ± 3·2·√(5/16). */
    const double xs[] = {10, 12};
    near("z after two points", an_ewma(xs, 2, 0.5, 8, 2, 3, 0, &l), 10.5, EPS);
    near("ucl at t=2", l.ucl, 8 + 6 * sqrt(5.0 / 16), EPS);
    near("lcl at t=2", l.lcl, 8 - 6 * sqrt(5.0 / 16), EPS);
    near("ucl at t=2 (value)", l.ucl, 11.354101966249685, 1e-9);

    /* t = 1: 1/3 · (1 − 0.25) = 1/4, so the half-width is 3·2·0.5 = 3. */
    near("z after one point", an_ewma(xs, 1, 0.5, 8, 2, 3, 0, &l), 9, EPS);
    near("ucl at t=1", l.ucl, 11, EPS);
    near("lcl at t=1", l.lcl, 5, EPS);

    /* A missing window holds the EWMA and does not count as a step. */
    const double gap[] = {10, NAN, 12};
    near("NaN skipped", an_ewma(gap, 3, 0.5, 8, 2, 3, 0, &l), 10.5, EPS);
    near("NaN does not advance t", l.ucl, 8 + 6 * sqrt(5.0 / 16), EPS);

    /* Long run: the limits reach the asymptotic √(λ/(2−λ)); λ = 0.2 gives
     * √(1/9) = 1/3, so 8 ± 3·2/3 = 8 ± 2; a constant input converges. */
    double flat[200];
    for (int i = 0; i < 200; i++)
        flat[i] = 9;
    near("converges to the input", an_ewma(flat, 200, 0.2, 8, 2, 3, 0, &l), 9, 1e-9);
    near("asymptotic ucl", l.ucl, 10, 1e-9);
    near("asymptotic lcl", l.lcl, 6, 1e-9);

    /* lcl clamped at the lower bound; t = 1 half-width 3 around 1. */
    an_ewma(xs, 1, 0.5, 1, 2, 3, 0, &l);
    near("lcl clamped", l.lcl, 0, 0);
    near("ucl unclamped", l.ucl, 4, EPS);

    /* No points: z is the centre, limits collapse onto it. */
    near("empty z", an_ewma(NULL, 0, 0.5, 8, 2, 3, 0, &l), 8, 0);
    near("empty ucl", l.ucl, 8, 0);

    is_nan("NaN centre", an_ewma(xs, 2, 0.5, NAN, 2, 3, 0, &l));
    is_nan("NaN centre limits", l.ucl);
    near("limits may be NULL", an_ewma(xs, 2, 0.5, 8, 2, 3, 0, NULL), 10.5, EPS);
}

/* ---- Western Electric -------------------------------------------------- */

/* Rules on xs with centre 0, σ 1, and the same chart mirrored below the
 * centre: each case must hold (or not) on both sides. */
static void we_both(const char *what, const double *xs, size_t n, unsigned want)
{
    double neg[16];
    int dir;
    unsigned got = an_western_electric(xs, n, 0, 1, &dir);
    if (got != want)
        fail_msg("%s (above): rules 0x%x, want 0x%x", what, got, want);
    if (dir != (want ? 1 : 0))
        fail_msg("%s (above): direction %d", what, dir);
    for (size_t i = 0; i < n; i++)
        neg[i] = -xs[i];
    got = an_western_electric(neg, n, 0, 1, &dir);
    if (got != want)
        fail_msg("%s (below): rules 0x%x, want 0x%x", what, got, want);
    if (dir != (want ? -1 : 0))
        fail_msg("%s (below): direction %d", what, dir);
}

#define WE(what, want, ...)                                                                        \
    do {                                                                                           \
        const double xs_[] = {__VA_ARGS__};                                                        \
        we_both(what, xs_, sizeof(xs_) / sizeof(xs_[0]), want);                                    \
    } while (0)

#define R1 1u
#define R2 2u
#define R3 4u
#define R4 8u

static void test_we_rule1(void **state)
{
    WE("3.1σ", R1, 3.1);
    WE("2.9σ is a near miss", 0, 2.9);
    WE("exactly 3σ is not beyond", 0, 3.0);
    WE("earlier point beyond, last inside", 0, 3.5, 0.2);
}

static void test_we_rule2(void **state)
{
    WE("2 of 3 beyond 2σ, adjacent", R2, 0, 2.5, 2.5);
    WE("2 of 3 beyond 2σ, split", R2, 2.5, 0, 2.5);
    WE("last point inside", 0, 0, 2.5, 2.5, 1.9);
    WE("opposite sides", 0, -2.5, 0, 2.5);
    WE("only 1 of 3 beyond 2σ", 0, 2.5, 1.9, 1.9);
    WE("first beyond falls out of the 3", 0, 2.5, 0, 0, 2.5);
}

static void test_we_rule3(void **state)
{
    WE("4 of 5 beyond 1σ", R3, 0, 1.5, 1.5, 1.5, 1.5);
    WE("4 of 5 beyond 1σ, split", R3, 1.5, 1.5, 0, 1.5, 1.5);
    WE("only 3 of 5", 0, 0, 0, 1.5, 1.5, 1.5);
    WE("last point inside", 0, 1.5, 1.5, 1.5, 1.5, 0.5);
    WE("one of the 4 on the other side", 0, -1.5, 1.5, 0, 1.5, 1.5);
}

static void test_we_rule4(void **state)
{
    WE("8 on one side", R4, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5);
    WE("7 on one side", 0, -0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5);
    WE("8th point on the centre", 0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0);
    WE("only 7 points", 0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5);
    WE("all four at once", R1 | R2 | R3 | R4, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5, 2.5, 3.5);
}

static void test_we_nan_and_scale(void **state)
{
    WE("NaN breaks the run of 8", 0, 0.5, NAN, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5);
    WE("NaN before the run of 8", R4, NAN, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5);
    WE("NaN inside the 3 of rule 2", 0, 2.5, NAN, 2.5);
    WE("NaN inside the 5 of rule 3", 0, 1.5, 1.5, NAN, 1.5, 1.5);
    WE("rule 1 still judges the last point after a NaN", R1, NAN, 3.5);
    WE("missing last point is not judged", 0, 3.5, 3.5, NAN);

    /* Standardisation: centre 10, σ 2 — 16.2 is 3.1σ, 15.8 is 2.9σ. */
    int dir;
    const double hi[] = {16.2}, lo[] = {15.8}, below[] = {3.8};
    assert_int_equal(an_western_electric(hi, 1, 10, 2, &dir), R1);
    assert_int_equal(dir, 1);
    assert_int_equal(an_western_electric(lo, 1, 10, 2, &dir), 0);
    assert_int_equal(an_western_electric(below, 1, 10, 2, &dir), R1);
    assert_int_equal(dir, -1);

    /* No limits, no judgement. */
    assert_int_equal(an_western_electric(hi, 1, 10, 0, &dir), 0);
    assert_int_equal(dir, 0);
    assert_int_equal(an_western_electric(hi, 1, 10, NAN, &dir), 0);
    assert_int_equal(an_western_electric(hi, 1, NAN, 2, &dir), 0);
    assert_int_equal(an_western_electric(NULL, 0, 10, 2, &dir), 0);
    assert_int_equal(an_western_electric(hi, 1, 10, 2, NULL), R1);
}

/* ---- peer spread ---------------------------------------------------------- */

static void test_peer_spread(void **state)
{
    double tmp[8];

    /* median 0.03; |dev| = {0.02, 0.02, 0.17, 0, 0.01}, MAD 0.02: the one
     * failing seller (20 %) does not widen the spread. */
    const double odd[] = {0.05, 0.01, 0.20, 0.03, 0.02};
    near("1.4826·MAD", an_peer_spread(odd, 5, tmp), 1.4826 * 0.02, 1e-12);

    /* median (0.03+0.04)/2 = 0.035; |dev| = {0.025, 0.015, 0.005, 0.005,
     * 0.015, 0.265}, MAD (0.015+0.015)/2 = 0.015. */
    const double even[] = {0.01, 0.02, 0.03, 0.04, 0.05, 0.30};
    near("even count", an_peer_spread(even, 6, tmp), 1.4826 * 0.015, 1e-12);

    /* Non-finite rates (a seller without tries) are not sellers. */
    const double gaps[] = {NAN, 0.05, 0.01, INFINITY, 0.20, 0.03, 0.02, NAN};
    near("non-finite skipped", an_peer_spread(gaps, 8, tmp), 1.4826 * 0.02, 1e-12);

    near("4 sellers are too few", an_peer_spread(odd, 4, tmp), 0, 0);
    const double four[] = {NAN, 0.05, 0.01, 0.20, 0.03};
    near("4 finite are too few", an_peer_spread(four, 5, tmp), 0, 0);
    near("no sellers", an_peer_spread(NULL, 0, tmp), 0, 0);

    /* Over half the sellers at 0 %: MAD 0, spread unknown. */
    const double zeros[] = {0, 0, 0, 0.1, 0.2};
    near("MAD 0", an_peer_spread(zeros, 5, tmp), 0, 0);
}

/* ---- seller score -------------------------------------------------------- */

/* A steady seller: 30 active days at 500 events/h (λ = 360000/720), a
 * 2 % failure rate like its peers, full time 1000 ± 200 ms. This hour
 * matches its baseline exactly, so every component is 0. */
static struct an_seller steady(void)
{
    struct an_seller s;
    memset(&s, 0, sizeof(s));
    s.company_id = 1001;
    s.events = 500;
    s.tries = 400;
    s.errors = 8;
    s.ft_n = 392;
    s.ft_sum_ms = 392 * 1000.0;
    s.base_days = 30;
    s.base_events = 360000;
    s.base_tries = 60000;
    s.base_errors = 1200;
    s.base_ft_n = 50000;
    s.base_ft_sum_ms = 50000 * 1000.0;
    /* Σx² = (n−1)s² + n·m² for s = 200, m = 1000 */
    s.base_ft_sumsq_ms = 49999 * 40000.0 + 50000 * 1e6;
    return s;
}

/* Peers without a known spread: the peer test is the binomial one. */
static const struct an_peers peers2 = {100000, 2000, 0}; /* 2 % */

#define PRIOR 100
#define MIN   50
#define RZ    3

static double score(const struct an_seller *s, const struct an_peers *p, unsigned *r)
{
    return an_seller_score(s, p, PRIOR, MIN, RZ, r);
}

static void test_seller_steady(void **state)
{
    struct an_seller s = steady();
    unsigned r = 99;
    near("steady seller", score(&s, &peers2, &r), 0, 1e-9);
    assert_int_equal(r, 0);
}

static void test_seller_failure_own(void **state)
{
    /* The marketplace runs at 5 % with sellers 5 points apart; this one
     * usually runs at 1 %: p0 = (600 + 100·0.05)/(60000 + 100) = 0.0100666.
     * Now 3 %: (0.03 − p0)/√(p0(1−p0)/400 + 0.02²) = 0.967 — 2 points is
     * within the drift floor (the binomial term alone made it 3.99). */
    const struct an_peers peers = {100000, 5000, 0.05};
    struct an_seller s = steady();
    s.base_errors = 600;
    s.errors = 12;
    unsigned r;
    near("drift", score(&s, &peers, &r), 0.967012996768, 1e-9);
    assert_int_equal(r, 0);

    /* Now 15 %: (0.15 − p0)/√(2.4913e-5 + 4e-4) = 6.788464; vs peers it is
     * (0.15 − 0.05)/√(0.0475/400 + 0.05²) = 1.954, within the spread. */
    s.errors = 60;
    near("jump", score(&s, &peers, &r), 6.78846352489, 1e-9);
    assert_int_equal(r, AN_REASON_FAILURE_OWN);
}

/* A big seller: 10^5 tries/h at 2 % for 30 days, now at 4 %. The binomial
 * term is √(0.0196/10^5) = 0.00044, which alone made this 45σ; with the
 * floor it is 0.02/√(1.96e-7 + 4e-4) = 0.99976 against both its own rate and
 * peers at 2 % with a 3-point spread. */
static void test_seller_big_drift(void **state)
{
    const struct an_peers peers = {1000000, 20000, 0.03};
    struct an_seller s = steady();
    s.events = 125000;
    s.tries = 100000;
    s.errors = 4000;
    s.base_events = 125000 * 720.0;
    s.base_tries = 100000 * 720.0;
    s.base_errors = 2000 * 720.0;
    unsigned r;
    double got = score(&s, &peers, &r);
    near("big seller, 2 points up", got, 0.999755090001, 1e-9);
    if (!(got < 1))
        fail_msg("big seller 2 points above its own rate scores %.3f, want < 1", got);
    assert_int_equal(r, 0);
}

/* A failure storm: a seller that usually fails 60 % of its tries (no
 * peers, so p0 is its own 0.6) fails 92 % of 500:
 * 0.32/√(0.24/500 + 0.02²) = 0.32/√0.00088 = 10.787198. */
static void test_seller_failure_storm(void **state)
{
    const struct an_peers none = {0, 0, 0};
    struct an_seller s = steady();
    s.base_errors = 36000;
    s.tries = 500;
    s.errors = 460;
    unsigned r;
    double got = score(&s, &none, &r);
    near("storm", got, 10.7871977994, 1e-9);
    if (!(got > 8))
        fail_msg("failure storm 0.6 -> 0.92 scores %.3f, want > 8", got);
    assert_int_equal(r, AN_REASON_FAILURE_OWN);
}

/* The storm again, but the seller's whole origin moved the same way
 * (0.6 -> 0.92 for everyone there): the own-baseline score is adjusted by
 * that shift and the seller is unremarkable; the shift of half of it
 * still leaves a signal. Same for latency: the origin got 2x slower. */
static void test_seller_segment_shift(void **state)
{
    const struct an_peers none = {0, 0, 0};
    struct an_seller s = steady();
    s.base_errors = 36000;
    s.tries = 500;
    s.errors = 460;
    s.shift_logit = log(0.92 / 0.08) - log(0.6 / 0.4);
    unsigned r;
    double got = score(&s, &none, &r);
    if (!(fabs(got) < 1e-6))
        fail_msg("shared shift scored %.6f, want 0", got);
    assert_int_equal(r, 0);
    s.shift_logit /= 2;
    got = score(&s, &none, &r);
    /* p0 = expit(logit 0.6 + shift/2) = 0.806: z = 0.114/0.0267 = 4.27 */
    near("half the shift", got, 4.2718, 1e-3);
    assert_int_equal(r, AN_REASON_FAILURE_OWN);

    /* Latency: baseline mean 3000 ms, now 6000 ms over 400 successes. */
    struct an_seller l = steady();
    l.base_ft_n = 10000;
    l.base_ft_sum_ms = 3000.0 * 10000;
    l.base_ft_sumsq_ms = 10000 * (3000.0 * 3000.0 + 1000.0 * 1000.0);
    l.ft_n = 400;
    l.ft_sum_ms = 6000.0 * 400;
    double alone = score(&l, &none, &r);
    if (!(alone > 4))
        fail_msg("2x latency alone scored %.3f, want > 4", alone);
    l.latency_ratio = 2;
    got = score(&l, &none, &r);
    if (!(fabs(got) < 1e-6))
        fail_msg("2x latency with a 2x origin scored %.6f, want 0", got);
}

static void test_seller_failure_peers(void **state)
{
    /* Always 10 % (own z ≈ 0.004), peers 2 % with no known spread:
     * z = (0.10 − 0.02)/√(0.02·0.98/400) = 0.08/0.007 = 11.428571. */
    struct an_seller s = steady();
    s.base_errors = 6000;
    s.errors = 40;
    unsigned r;
    near("no spread", score(&s, &peers2, &r), 0.08 / 0.007, 1e-9);
    assert_int_equal(r, AN_REASON_FAILURE_PEERS);

    /* Sellers 2 points apart: 0.08/√(0.007² + 0.02²) = 3.775433. */
    struct an_peers peers = {100000, 2000, 0.02};
    near("spread 0.02", score(&s, &peers, &r), 0.08 / sqrt(0.000049 + 0.0004), 1e-9);
    assert_int_equal(r, AN_REASON_FAILURE_PEERS);

    /* A NaN or negative spread counts as unknown. */
    peers.spread = NAN;
    near("NaN spread", score(&s, &peers, &r), 0.08 / 0.007, 1e-9);
    peers.spread = -1;
    near("negative spread", score(&s, &peers, &r), 0.08 / 0.007, 1e-9);

    /* A spotless marketplace: without a spread there is no σ, so the
     * peer test is skipped (own: p0 = 6000/60100, z ≈ 0.005); with one,
     * 0.10/0.02 = 5. */
    peers.errors = 0;
    peers.spread = 0;
    double got = score(&s, &peers, &r);
    if (!(got < 0.01))
        fail_msg("peers at 0 %% without a spread: score %.4f, want the own z (~0)", got);
    assert_int_equal(r, 0);
    peers.spread = 0.02;
    near("peers at 0 % with a spread", score(&s, &peers, &r), 5, 1e-9);
    assert_int_equal(r, AN_REASON_FAILURE_PEERS);
}

static void test_seller_volume(void **state)
{
    /* λ = 500, σ = √(500 + 250²) = √63000 = 250.998. */
    struct an_seller s = steady();
    unsigned r;
    double got;

    s.events = 5000; /* 10×: 4500/√63000 = 17.928429 */
    got = score(&s, &peers2, &r);
    near("10x burst", got, 4500 / sqrt(63000), 1e-9);
    if (!(got > 8))
        fail_msg("10x volume burst after 30 days scores %.3f, want > 8", got);
    assert_int_equal(r, AN_REASON_VOLUME_OWN);

    /* The day/night swing: twice the daily mean at noon (500/√63000 =
     * 1.992), half of it at night (0.996). */
    s.events = 1000;
    got = score(&s, &peers2, &r);
    near("2x day", got, 500 / sqrt(63000), 1e-9);
    if (!(got < 3))
        fail_msg("2x day/night swing scores %.3f, want < 3", got);
    assert_int_equal(r, 0);
    s.events = 250;
    near("0.5x night", score(&s, &peers2, &r), 250 / sqrt(63000), 1e-9);
    assert_int_equal(r, 0);

    /* A seller that stops: 500/√63000 = 1.992 — the floor caps a drop
     * below 2 (documented in stats.h), so silence alone is no reason. */
    s.events = 0;
    near("stopped", score(&s, &peers2, &r), 500 / sqrt(63000), 1e-9);
    assert_int_equal(r, 0);

    /* A small seller (λ = 10) bursting 10×: 90/√(10 + 25) = 15.212777. */
    s = steady();
    s.base_events = 10 * 720.0;
    s.events = 100;
    near("small seller 10x", score(&s, &peers2, &r), 90 / sqrt(35), 1e-9);
    assert_int_equal(r, AN_REASON_VOLUME_OWN);
}

static void test_seller_volume_history(void **state)
{
    /* 6 days have no hourly level: the 10× burst is not judged. */
    struct an_seller s = steady();
    unsigned r;
    s.base_days = 6;
    s.base_events = 500 * 6 * 24.0;
    s.events = 5000;
    near("6 days of history", score(&s, &peers2, &r), 0, 1e-9);
    assert_int_equal(r, 0);

    /* 7 days are enough: λ = 500 again, 17.928429. */
    s.base_days = 7;
    s.base_events = 500 * 7 * 24.0;
    near("7 days of history", score(&s, &peers2, &r), 4500 / sqrt(63000), 1e-9);
    assert_int_equal(r, AN_REASON_VOLUME_OWN);
}

static void test_seller_latency(void **state)
{
    /* σ = √(200²/392 + (0.2·1000)²) = √40102.04 = 200.255. 10 % slower
     * is within the floor (the standard error alone made it 9.9σ); twice
     * as slow is 1000/200.255 = 4.993635. Faster does not count. */
    struct an_seller s = steady();
    unsigned r;
    s.ft_sum_ms = 392 * 1100.0;
    near("10 % slower", score(&s, &peers2, &r), 100 / sqrt(40000.0 / 392 + 40000), 1e-6);
    assert_int_equal(r, 0);
    s.ft_sum_ms = 392 * 2000.0;
    near("2x slower", score(&s, &peers2, &r), 1000 / sqrt(40000.0 / 392 + 40000), 1e-6);
    assert_int_equal(r, AN_REASON_LATENCY_OWN);
    s.ft_sum_ms = 392 * 500.0;
    near("faster", score(&s, &peers2, &r), 0, 1e-9);
    assert_int_equal(r, 0);

    /* A constant baseline (s0 = 0) is judged by the floor alone:
     * (2000 − 1000)/200 = 5. */
    s = steady();
    s.base_ft_sumsq_ms = 50000 * 1e6;
    s.ft_sum_ms = 392 * 2000.0;
    near("constant baseline", score(&s, &peers2, &r), 5, 1e-6);
    assert_int_equal(r, AN_REASON_LATENCY_OWN);

    /* A single baseline success is not a baseline: skipped. */
    s = steady();
    s.ft_sum_ms = 392 * 5000.0;
    s.base_ft_n = 1;
    s.base_ft_sum_ms = 1000;
    s.base_ft_sumsq_ms = 1e6;
    near("one baseline success", score(&s, &peers2, &r), 0, 1e-9);
    assert_int_equal(r, 0);
}

static void test_seller_max_and_min_tries(void **state)
{
    /* Both the peer (11.43) and the volume (17.93) component fire; the
     * score is the larger. */
    struct an_seller s = steady();
    s.base_errors = 6000;
    s.errors = 40;
    s.events = 5000;
    unsigned r;
    near("max of components", score(&s, &peers2, &r), 4500 / sqrt(63000), 1e-9);
    assert_int_equal(r, AN_REASON_FAILURE_PEERS | AN_REASON_VOLUME_OWN);

    /* 49 tries, all failed: too little evidence. 50 is enough. */
    s = steady();
    s.tries = 49;
    s.errors = 49;
    near("below min_tries", score(&s, &peers2, &r), 0, 0);
    assert_int_equal(r, 0);
    s.tries = 50;
    s.errors = 50;
    assert_true(score(&s, &peers2, &r) > RZ);
    assert_true(r & AN_REASON_FAILURE_PEERS);

    s.tries = 0;
    s.errors = 0;
    near("no tries, min_tries 0", an_seller_score(&s, &peers2, PRIOR, 0, RZ, &r), 0, 0);
}

static void test_seller_new(void **state)
{
    /* No history: p0 is the peers' rate. Against peers (no spread),
     * (0.10 − 0.02)/0.007 = 11.428571; against "own" the drift floor
     * applies, 0.08/√(0.02·0.98/400 + 0.02²) = 3.63, above reason_z too.
     * Volume and latency are skipped. */
    struct an_seller s;
    memset(&s, 0, sizeof(s));
    s.company_id = 7;
    s.events = 5000;
    s.tries = 400;
    s.errors = 40;
    s.ft_n = 360;
    s.ft_sum_ms = 360 * 99999.0;
    unsigned r;
    near("new seller failing", score(&s, &peers2, &r), 0.08 / 0.007, 1e-9);
    assert_int_equal(r, AN_REASON_FAILURE_OWN | AN_REASON_FAILURE_PEERS);
    near("own component alone", an_seller_score(&s, &peers2, PRIOR, MIN, 2.5, &r), 0.08 / 0.007,
         1e-9);
    assert_int_equal(r, AN_REASON_FAILURE_OWN | AN_REASON_FAILURE_PEERS);

    s.errors = 8; /* at the peers' rate */
    near("new seller like its peers", score(&s, &peers2, &r), 0, 1e-9);
    assert_int_equal(r, 0);

    /* Without peers and history there is nothing to judge against. */
    const struct an_peers none = {0, 0, 0};
    s.errors = 40;
    near("no peers, no history", score(&s, &none, &r), 0, 0);
    assert_int_equal(r, 0);
}

static void test_reason_names(void **state)
{
    assert_string_equal(an_reason_name(AN_REASON_FAILURE_OWN), "failure_rate_vs_own");
    assert_string_equal(an_reason_name(AN_REASON_FAILURE_PEERS), "failure_rate_vs_peers");
    assert_string_equal(an_reason_name(AN_REASON_VOLUME_OWN), "volume_vs_own");
    assert_string_equal(an_reason_name(AN_REASON_LATENCY_OWN), "latency_vs_own");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_median),
        cmocka_unit_test(test_median_matches_sort),
        cmocka_unit_test(test_robust),
        cmocka_unit_test(test_robust_mad_zero),
        cmocka_unit_test(test_p_chart),
        cmocka_unit_test(test_laney_hand),
        cmocka_unit_test(test_laney_dispersion),
        cmocka_unit_test(test_xbar_limits),
        cmocka_unit_test(test_ewma),
        cmocka_unit_test(test_we_rule1),
        cmocka_unit_test(test_we_rule2),
        cmocka_unit_test(test_we_rule3),
        cmocka_unit_test(test_we_rule4),
        cmocka_unit_test(test_we_nan_and_scale),
        cmocka_unit_test(test_peer_spread),
        cmocka_unit_test(test_seller_steady),
        cmocka_unit_test(test_seller_failure_own),
        cmocka_unit_test(test_seller_big_drift),
        cmocka_unit_test(test_seller_segment_shift),
        cmocka_unit_test(test_seller_failure_storm),
        cmocka_unit_test(test_seller_failure_peers),
        cmocka_unit_test(test_seller_volume),
        cmocka_unit_test(test_seller_volume_history),
        cmocka_unit_test(test_seller_latency),
        cmocka_unit_test(test_seller_max_and_min_tries),
        cmocka_unit_test(test_seller_new),
        cmocka_unit_test(test_reason_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
