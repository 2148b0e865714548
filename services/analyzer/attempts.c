/* attempts — per-minute attempt sketches; see attempts.h. */
#include "attempts.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "upmon/alloc.h"

struct att_cell {
    size_t seg;
    double n, sum_t, sum_t2, sum_tries, n_first;
    uint32_t *bn; /* ATT_BUCKETS counts */
    double *bs;   /* ATT_BUCKETS sums of t */
};

struct att_minute {
    int64_t minute;
    struct att_cell *cells;
    size_t ncells;
};

struct att_store {
    struct att_minute *m; /* sorted by minute */
    size_t n, cap;
};

/* Bucket b > 0 holds (T0·R^(b-1), T0·R^b]; bucket 0 everything up to T0. */
int att_bucket(double t_s)
{
    if (!(t_s > ATT_T0))
        return 0;
    double b = floor(log(t_s / ATT_T0) / log(ATT_RATIO)) + 1;
    return b >= ATT_BUCKETS - 1 ? ATT_BUCKETS - 1 : (int)b;
}

const char *att_bucket_sql(char *buf, size_t n, const char *t_expr)
{
    snprintf(buf, n,
             "if(%s > %.17g, least(%d, toUInt32(floor(log(%s / %.17g) / log(%.17g))) + 1), 0)",
             t_expr, ATT_T0, ATT_BUCKETS - 1, t_expr, ATT_T0, ATT_RATIO);
    return buf;
}

double att_bucket_low(int b)
{
    return b <= 0 ? 0 : ATT_T0 * pow(ATT_RATIO, b - 1);
}

double att_bucket_high(int b)
{
    return b >= ATT_BUCKETS - 1 ? INFINITY : ATT_T0 * pow(ATT_RATIO, b);
}

struct att_store *att_create(void)
{
    return upm_calloc(1, sizeof(struct att_store));
}

static void minute_free(struct att_minute *m)
{
    for (size_t i = 0; i < m->ncells; i++) {
        free(m->cells[i].bn);
        free(m->cells[i].bs);
    }
    free(m->cells);
}

void att_destroy(struct att_store *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->n; i++)
        minute_free(&a->m[i]);
    free(a->m);
    free(a);
}

static void remove_if(struct att_store *a, int64_t from_min, int64_t to_min)
{
    size_t k = 0;
    for (size_t i = 0; i < a->n; i++) {
        if (a->m[i].minute >= from_min && a->m[i].minute < to_min)
            minute_free(&a->m[i]);
        else
            a->m[k++] = a->m[i];
    }
    a->n = k;
}

void att_clear_range(struct att_store *a, int64_t from_min, int64_t to_min)
{
    remove_if(a, from_min, to_min);
}

void att_evict_before(struct att_store *a, int64_t before_min)
{
    remove_if(a, INT64_MIN, before_min);
}

static struct att_minute *minute_get(struct att_store *a, int64_t minute)
{
    size_t lo = 0, hi = a->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (a->m[mid].minute < minute)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < a->n && a->m[lo].minute == minute)
        return &a->m[lo];
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 64;
        a->m = upm_realloc(a->m, a->cap * sizeof(*a->m));
    }
    memmove(&a->m[lo + 1], &a->m[lo], (a->n - lo) * sizeof(*a->m));
    a->n++;
    memset(&a->m[lo], 0, sizeof(a->m[lo]));
    a->m[lo].minute = minute;
    return &a->m[lo];
}

static const struct att_cell *cell_find(const struct att_minute *m, size_t seg)
{
    for (size_t i = 0; i < m->ncells; i++) {
        if (m->cells[i].seg == seg)
            return &m->cells[i];
    }
    return NULL;
}

int att_add(struct att_store *a, int64_t minute, size_t seg, const struct att_row *r)
{
    if (r->bucket < 0 || r->bucket >= ATT_BUCKETS || !(r->n >= 0) || r->n > UINT32_MAX)
        return -1;
    struct att_minute *m = minute_get(a, minute);
    struct att_cell *c = (struct att_cell *)cell_find(m, seg);
    if (!c) {
        m->cells = upm_realloc(m->cells, (m->ncells + 1) * sizeof(*m->cells));
        c = &m->cells[m->ncells++];
        memset(c, 0, sizeof(*c));
        c->seg = seg;
        c->bn = upm_calloc(ATT_BUCKETS, sizeof(*c->bn));
        c->bs = upm_calloc(ATT_BUCKETS, sizeof(*c->bs));
    }
    c->n += r->n;
    c->sum_t += r->sum_t;
    c->sum_t2 += r->sum_t2;
    c->sum_tries += r->sum_tries;
    c->n_first += r->n_first;
    c->bn[r->bucket] += (uint32_t)r->n;
    c->bs[r->bucket] += r->sum_t;
    return 0;
}

void att_window(const struct att_store *a, size_t seg, int64_t from_min, int64_t to_min, double thr,
                struct att_window *out)
{
    double n = 0, st = 0, st2 = 0, tries = 0, first = 0;
    double *bn = upm_calloc(ATT_BUCKETS, sizeof(double));
    double *bs = upm_calloc(ATT_BUCKETS, sizeof(double));
    for (size_t i = 0; i < a->n; i++) {
        const struct att_minute *m = &a->m[i];
        if (m->minute < from_min || m->minute >= to_min)
            continue;
        const struct att_cell *c = cell_find(m, seg);
        if (!c)
            continue;
        n += c->n;
        st += c->sum_t;
        st2 += c->sum_t2;
        tries += c->sum_tries;
        first += c->n_first;
        for (int b = 0; b < ATT_BUCKETS; b++) {
            bn[b] += c->bn[b];
            bs[b] += c->bs[b];
        }
    }
    memset(out, 0, sizeof(*out));
    out->n = n;
    if (n <= 0) {
        out->mean = out->sd = out->tries = out->first = out->beyond = NAN;
        out->q[0] = out->q[1] = out->q[2] = NAN;
        free(bn);
        free(bs);
        return;
    }
    out->mean = st / n;
    double var = st2 / n - out->mean * out->mean;
    out->sd = sqrt(var > 0 ? var : 0);
    out->tries = tries / n;
    out->first = first / n;

    static const double qs[3] = {0.5, 0.95, 0.99};
    for (int k = 0; k < 3; k++) {
        /* nearest rank: the ceil(q·n)-th smallest */
        double rank = ceil(qs[k] * n);
        if (rank < 1)
            rank = 1;
        double cum = 0;
        out->q[k] = NAN;
        for (int b = 0; b < ATT_BUCKETS; b++) {
            cum += bn[b];
            if (bn[b] > 0 && cum >= rank) {
                out->q[k] = bs[b] / bn[b];
                break;
            }
        }
    }

    if (isnan(thr)) {
        out->beyond = NAN;
    } else {
        double above = 0;
        int tb = att_bucket(thr);
        for (int b = tb + 1; b < ATT_BUCKETS; b++)
            above += bn[b];
        if (bn[tb] > 0) {
            /* The threshold's bucket: its share above thr, log-linear
             * between the bucket's bounds (bucket 0 and the open last
             * bucket by their mean instead). */
            double lo = att_bucket_low(tb), hi = att_bucket_high(tb), frac;
            if (tb == 0 || isinf(hi))
                frac = bs[tb] / bn[tb] > thr ? 1 : 0;
            else
                frac = (log(hi) - log(thr)) / (log(hi) - log(lo));
            if (frac < 0)
                frac = 0;
            if (frac > 1)
                frac = 1;
            above += bn[tb] * frac;
        }
        out->beyond = above / n;
    }
    free(bn);
    free(bs);
}
