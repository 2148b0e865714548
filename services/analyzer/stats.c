#include "stats.h"

#include <math.h>

/* √(π/2): the mean absolute deviation of normal data is σ·√(2/π). */
#define AN_MEANAD_SCALE 1.253314
/* d2 for n = 2: the mean moving range of unit normal points. */
#define AN_D2 1.128

/* fmax/fmin return the other argument for a NaN; a NaN limit must stay NaN
 * so that the caller exports nothing rather than the bound. */
static double clamp_lo(double x, double lo)
{
    return isnan(x) || x >= lo ? x : lo;
}

static double clamp_hi(double x, double hi)
{
    return isnan(x) || x <= hi ? x : hi;
}

static struct an_limits nan_limits(double centre)
{
    struct an_limits l = {centre, NAN, NAN, NAN};
    return l;
}

/* Wirth's selection: afterwards a[0..k) <= a[k] <= a[k+1..n). Baselines
 * are a few thousand points at most, so the quadratic worst case of a
 * middle-element pivot does not matter; duplicates (common: a flat
 * series) do not degrade it. */
static double select_kth(double *a, size_t n, size_t kk)
{
    /* Signed: j steps one below l when the pivot is the minimum. */
    ptrdiff_t l = 0, m = (ptrdiff_t)n - 1, k = (ptrdiff_t)kk;
    while (l < m) {
        double x = a[k];
        ptrdiff_t i = l, j = m;
        do {
            while (a[i] < x)
                i++;
            while (x < a[j])
                j--;
            if (i <= j) {
                double t = a[i];
                a[i] = a[j];
                a[j] = t;
                i++;
                j--;
            }
        } while (i <= j);
        if (j < k)
            l = i;
        if (k < i)
            m = j;
    }
    return a[k];
}

double an_median(double *v, size_t n)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(v[i]))
            continue;
        double t = v[m];
        v[m++] = v[i];
        v[i] = t;
    }
    if (m == 0)
        return NAN;
    double hi = select_kth(v, m, m / 2);
    if (m % 2)
        return hi;
    /* The lower middle is the largest of the half below the upper one. */
    double lo = v[0];
    for (size_t i = 1; i < m / 2; i++)
        if (v[i] > lo)
            lo = v[i];
    return lo + (hi - lo) / 2;
}

size_t an_robust(const double *v, size_t n, double *tmp, double *centre, double *sigma)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (isfinite(v[i]))
            tmp[m++] = v[i];
    if (m == 0) {
        *centre = NAN;
        *sigma = NAN;
        return 0;
    }
    double c = an_median(tmp, m);
    for (size_t i = 0; i < m; i++)
        tmp[i] = fabs(tmp[i] - c);
    double mad = an_median(tmp, m);
    double s = AN_MAD_SCALE * mad;
    if (mad == 0) {
        /* Over half the baseline sits on one value (a quiet segment with
         * the same count each window): the MAD says nothing about the
         * rest, the mean deviation still does. */
        double sum = 0;
        for (size_t i = 0; i < m; i++)
            sum += tmp[i];
        s = AN_MEANAD_SCALE * (sum / (double)m);
    }
    *centre = c;
    *sigma = s;
    return m;
}

struct an_limits an_p_chart(double pbar, double n, double sigma_z, double k)
{
    if (!(n > 0) || isnan(pbar) || isnan(sigma_z) || isnan(k))
        return nan_limits(pbar);
    struct an_limits l;
    l.centre = pbar;
    l.sigma = sigma_z * sqrt(pbar * (1 - pbar) / n);
    l.lcl = clamp_lo(pbar - k * l.sigma, 0);
    l.ucl = clamp_hi(pbar + k * l.sigma, 1);
    return l;
}

double an_laney_sigma_z(const double *x, const double *n, size_t npoints, double *pbar_out)
{
    double sx = 0, sn = 0;
    size_t used = 0;
    for (size_t i = 0; i < npoints; i++) {
        if (!(n[i] > 0) || isnan(x[i]))
            continue;
        sx += x[i];
        sn += n[i];
        used++;
    }
    double pbar = sn > 0 ? sx / sn : NAN;
    if (pbar_out)
        *pbar_out = pbar;
    double var = pbar * (1 - pbar);
    /* With pbar 0 or 1 every z is 0/0: there is no dispersion to measure. */
    if (used < 2 || !(var > 0))
        return 1;

    double mr_sum = 0, zprev = 0;
    size_t nmr = 0;
    bool have_prev = false;
    for (size_t i = 0; i < npoints; i++) {
        if (!(n[i] > 0) || isnan(x[i]))
            continue;
        double z = (x[i] / n[i] - pbar) / sqrt(var / n[i]);
        if (have_prev) {
            mr_sum += fabs(z - zprev);
            nmr++;
        }
        zprev = z;
        have_prev = true;
    }
    double sz = mr_sum / (double)nmr / AN_D2;
    return sz > 1 ? sz : 1;
}

struct an_limits an_xbar_limits(double centre, double sigma, double k, double lower_bound)
{
    if (isnan(centre) || isnan(sigma) || isnan(k))
        return nan_limits(centre);
    struct an_limits l;
    l.centre = centre;
    l.sigma = sigma;
    l.lcl = clamp_lo(centre - k * sigma, lower_bound);
    l.ucl = centre + k * sigma;
    return l;
}

double an_ewma(const double *xs, size_t n, double lambda, double centre, double sigma, double k,
               double lower_bound, struct an_limits *limits)
{
    if (isnan(centre) || !(lambda > 0 && lambda <= 1)) {
        if (limits)
            *limits = nan_limits(NAN);
        return NAN;
    }
    double z = centre;
    double t = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(xs[i]))
            continue;
        z = lambda * xs[i] + (1 - lambda) * z;
        t++;
    }
    if (limits) {
        /* σ of z_t: the start at the centre makes early points tighter
         * than the asymptotic λ/(2−λ). */
        double w = sigma * sqrt(lambda / (2 - lambda) * (1 - pow(1 - lambda, 2 * t)));
        *limits = an_xbar_limits(centre, w, k, lower_bound);
    }
    return z;
}

/* How many of the last `len` standardised points lie beyond `bound` on
 * side `side` (+1/−1); -1 when the run since the last NaN is shorter
 * than len. */
static int beyond(const double *z, size_t nrun, size_t len, double bound, int side)
{
    if (nrun < len)
        return -1;
    int c = 0;
    for (size_t i = nrun - len; i < nrun; i++)
        if (side * z[i] > bound)
            c++;
    return c;
}

unsigned an_western_electric(const double *xs, size_t n, double centre, double sigma,
                             int *direction)
{
    if (direction)
        *direction = 0;
    if (n == 0 || !(sigma > 0) || isnan(centre) || isnan(xs[n - 1]))
        return 0;

    /* Only the run of observed points ending at the judged one counts
     * (the rules are about consecutive windows), and no rule looks back
     * further than 8. */
    size_t start = n - 1;
    while (start > 0 && n - start < 8 && !isnan(xs[start - 1]))
        start--;
    size_t nrun = n - start;
    double z[8] = {0};
    for (size_t i = 0; i < nrun; i++)
        z[i] = (xs[start + i] - centre) / sigma;

    double last = z[nrun - 1];
    if (last == 0)
        return 0;
    /* Every rule needs the judged point on its side, so all that fire
     * agree on the direction: the side of the last point. */
    int side = last > 0 ? 1 : -1;
    unsigned rules = 0;
    if (side * last > 3)
        rules |= 1u << 0;
    if (side * last > 2 && beyond(z, nrun, 3, 2, side) >= 2)
        rules |= 1u << 1;
    if (side * last > 1 && beyond(z, nrun, 5, 1, side) >= 4)
        rules |= 1u << 2;
    if (beyond(z, nrun, 8, 0, side) == 8)
        rules |= 1u << 3;
    if (direction && rules)
        *direction = side;
    return rules;
}

const char *an_reason_name(enum an_reason r)
{
    switch (r) {
    case AN_REASON_FAILURE_OWN:
        return "failure_rate_vs_own";
    case AN_REASON_FAILURE_PEERS:
        return "failure_rate_vs_peers";
    case AN_REASON_VOLUME_OWN:
        return "volume_vs_own";
    case AN_REASON_LATENCY_OWN:
        return "latency_vs_own";
    }
    return "unknown";
}

double an_peer_spread(const double *rates, size_t n, double *tmp)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (isfinite(rates[i]))
            tmp[m++] = rates[i];
    if (m < 5)
        return 0;
    double c = an_median(tmp, m);
    for (size_t i = 0; i < m; i++)
        tmp[i] = fabs(tmp[i] - c);
    return AN_MAD_SCALE * an_median(tmp, m);
}

/* z of p against p0 over n tries, with sd_floor (a σ of its own) added to
 * the binomial variance; NaN when there is no σ (p0 unknown, or 0 or 1
 * without a floor). */
static double binom_z(double p, double p0, double n, double sd_floor)
{
    double var = p0 * (1 - p0) / n + sd_floor * sd_floor;
    if (!(var > 0))
        return NAN;
    return (p - p0) / sqrt(var);
}

double an_seller_score(const struct an_seller *s, const struct an_peers *peers, double prior_tries,
                       double min_tries, double reason_z, unsigned *reasons)
{
    if (reasons)
        *reasons = 0;
    if (!(s->tries >= min_tries) || !(s->tries > 0))
        return 0;

    double p = s->errors / s->tries;
    double pp = peers && peers->tries > 0 ? peers->errors / peers->tries : NAN;
    /* A NaN or negative spread is as good as none. */
    double spread = peers && peers->spread > 0 ? peers->spread : 0;
    double z[4] = {NAN, NAN, NAN, NAN};

    /* The prior keeps a seller with a short or spotless history from
     * being alarmed by its first few errors, and judges a new seller by
     * the marketplace. Without peers the own history stands alone. */
    double w = isnan(pp) ? 0 : prior_tries;
    double p0_tries = s->base_tries + w;
    if (p0_tries > 0) {
        double p0 = (s->base_errors + (w > 0 ? w * pp : 0)) / p0_tries;
        if (isfinite(s->shift_logit) && s->shift_logit != 0 && p0 > 0 && p0 < 1) {
            double lo = log(p0 / (1 - p0)) + s->shift_logit;
            p0 = 1 / (1 + exp(-lo));
        }
        z[0] = binom_z(p, p0, s->tries, AN_SELLER_FAILURE_FLOOR);
    }
    /* Sellers differ (their buyers, their catalogue), so the peers' rate is
     * a centre with a spread around it, not every seller's true rate. */
    z[1] = binom_z(p, pp, s->tries, spread);

    if (s->base_days >= AN_SELLER_VOLUME_MIN_DAYS) {
        double lambda = s->base_events / (s->base_days * 24);
        /* Volume counts both ways: a seller that stops sending is as much
         * a sign of a broken integration as a flood (though the floor
         * keeps a drop alone below 2σ). */
        if (lambda > 0) {
            double rel = AN_SELLER_VOLUME_REL * lambda;
            z[2] = fabs(s->events - lambda) / sqrt(lambda + rel * rel);
        }
    }

    if (s->base_ft_n >= 2 && s->ft_n >= AN_SELLER_LATENCY_MIN_N) {
        double m0 = s->base_ft_sum_ms / s->base_ft_n;
        double var = (s->base_ft_sumsq_ms - s->base_ft_n * m0 * m0) / (s->base_ft_n - 1);
        /* Σx² − n·m² of a near-constant baseline can round below 0. */
        if (!(var > 0))
            var = 0;
        if (isfinite(s->latency_ratio) && s->latency_ratio > 0) {
            m0 *= s->latency_ratio;
            var *= s->latency_ratio * s->latency_ratio;
        }
        double rel = AN_SELLER_LATENCY_REL * m0;
        double v = var / s->ft_n + rel * rel;
        if (v > 0)
            z[3] = (s->ft_sum_ms / s->ft_n - m0) / sqrt(v);
    }
    static const unsigned bit[4] = {AN_REASON_FAILURE_OWN, AN_REASON_FAILURE_PEERS,
                                    AN_REASON_VOLUME_OWN, AN_REASON_LATENCY_OWN};
    double score = 0;
    for (int i = 0; i < 4; i++) {
        if (isnan(z[i]))
            continue;
        /* Fewer failures or a faster seller is not an anomaly to chase. */
        double zi = z[i] > 0 ? z[i] : 0;
        if (zi > score)
            score = zi;
        if (reasons && zi >= reason_z)
            *reasons |= bit[i];
    }
    return score;
}
