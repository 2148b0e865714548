#include "upmon/prom.h"

#include "upmon/alloc.h"
#include "upmon/log.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Doubles live in atomic 64-bit words holding their bit pattern: C11 has no
 * portable atomic double with fetch_add, and a compare-exchange loop on the
 * bits keeps the hot path lock-free.
 */
typedef _Atomic uint64_t atomic_bits;

struct upm_prom_series {
    struct upm_prom_metric *metric;
    char **values;                       /* nlabels copies */
    char *labels;                        /* pre-escaped `a="x",b="y"` (empty without labels) */
    uint64_t hash;                       /* of the label values, for the lookup table */
    struct upm_prom_series *hnext;       /* hash chain */
    struct upm_prom_series *prev, *next; /* creation order */
    atomic_bits value;                   /* counter/gauge value; histogram sum */
    _Atomic uint64_t *counts;            /* histogram: per bucket (not cumulative), +Inf last */
};

struct upm_prom_metric {
    struct upm_prom_registry *reg;
    char *name;
    char *help; /* NULL: no HELP line */
    enum upm_prom_type type;
    size_t nlabels;
    char **labels;
    size_t nbuckets; /* finite bounds; the +Inf bucket is implied */
    double *buckets;
    /* Guarded by reg->lock. */
    struct upm_prom_series *first, *last;
    struct upm_prom_series **table; /* hash chains, ntable a power of two */
    size_t ntable;
    size_t nseries;
};

struct upm_prom_registry {
    pthread_mutex_t lock;             /* guards metrics and every metric's series lists */
    struct upm_prom_metric **metrics; /* registration order */
    size_t nmetrics, cap;
};

static uint64_t dbl_to_bits(double v)
{
    uint64_t u;
    memcpy(&u, &v, sizeof(u));
    return u;
}

static double bits_to_dbl(uint64_t u)
{
    double v;
    memcpy(&v, &u, sizeof(v));
    return v;
}

static void bits_add(atomic_bits *a, double v)
{
    uint64_t old = atomic_load_explicit(a, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(a, &old, dbl_to_bits(bits_to_dbl(old) + v),
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

/* ---- names ---------------------------------------------------------------------------------- */

static bool valid_metric_name(const char *s)
{
    if (!s || !*s)
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                  (p != s && c >= '0' && c <= '9');
        if (!ok)
            return false;
    }
    return true;
}

static bool valid_label_name(const char *s)
{
    if (!s || !*s || strncmp(s, "__", 2) == 0)
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                  (p != s && c >= '0' && c <= '9');
        if (!ok)
            return false;
    }
    return true;
}

/* ---- families ------------------------------------------------------------------------------- */

static void series_free(struct upm_prom_series *s)
{
    if (!s)
        return;
    if (s->values) {
        for (size_t i = 0; i < s->metric->nlabels; i++)
            free(s->values[i]);
        free(s->values);
    }
    free(s->labels);
    free(s->counts);
    free(s);
}

static void metric_clear_locked(struct upm_prom_metric *m)
{
    struct upm_prom_series *s = m->first;
    while (s) {
        struct upm_prom_series *next = s->next;
        series_free(s);
        s = next;
    }
    m->first = m->last = NULL;
    if (m->table)
        memset(m->table, 0, m->ntable * sizeof(*m->table));
    m->nseries = 0;
}

static void metric_free(struct upm_prom_metric *m)
{
    if (!m)
        return;
    metric_clear_locked(m);
    free(m->table);
    free(m->name);
    free(m->help);
    if (m->labels) {
        for (size_t i = 0; i < m->nlabels; i++)
            free(m->labels[i]);
        free(m->labels);
    }
    free(m->buckets);
    free(m);
}

struct upm_prom_registry *upm_prom_registry_create(void)
{
    struct upm_prom_registry *reg = upm_calloc(1, sizeof(*reg));
    pthread_mutex_init(&reg->lock, NULL);
    return reg;
}

void upm_prom_registry_destroy(struct upm_prom_registry *reg)
{
    if (!reg)
        return;
    for (size_t i = 0; i < reg->nmetrics; i++)
        metric_free(reg->metrics[i]);
    free(reg->metrics);
    pthread_mutex_destroy(&reg->lock);
    free(reg);
}

static const char *type_name(enum upm_prom_type type)
{
    switch (type) {
    case UPM_PROM_COUNTER:
        return "counter";
    case UPM_PROM_GAUGE:
        return "gauge";
    case UPM_PROM_HISTOGRAM:
        return "histogram";
    }
    return "untyped";
}

static bool same_shape(const struct upm_prom_metric *m, enum upm_prom_type type, size_t nbuckets,
                       const double *buckets, size_t nlabels, const char *const *labels)
{
    if (m->type != type || m->nlabels != nlabels || m->nbuckets != nbuckets)
        return false;
    for (size_t i = 0; i < nlabels; i++)
        if (strcmp(m->labels[i], labels[i]) != 0)
            return false;
    for (size_t i = 0; i < nbuckets; i++)
        if (m->buckets[i] != buckets[i])
            return false;
    return true;
}

static struct upm_prom_metric *metric_register(struct upm_prom_registry *reg,
                                               enum upm_prom_type type, const char *name,
                                               const char *help, size_t nbuckets,
                                               const double *buckets, size_t nlabels,
                                               const char *const *labels)
{
    if (!reg)
        return NULL;
    if (!valid_metric_name(name)) {
        upm_log_error("prom", "invalid metric name | name=\"%s\"", name ? name : "(null)");
        return NULL;
    }
    if (nlabels && !labels) {
        upm_log_error("prom", "label names missing | name=%s", name);
        return NULL;
    }
    for (size_t i = 0; i < nlabels; i++) {
        /* "le" is the bucket label of a histogram: a user label of that
         * name would produce two le pairs on every bucket line. */
        if (!valid_label_name(labels[i]) ||
            (type == UPM_PROM_HISTOGRAM && strcmp(labels[i], "le") == 0)) {
            upm_log_error("prom", "invalid label name | name=%s label=\"%s\"", name,
                          labels[i] ? labels[i] : "(null)");
            return NULL;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(labels[i], labels[j]) == 0) {
                upm_log_error("prom", "duplicate label name | name=%s label=%s", name, labels[i]);
                return NULL;
            }
        }
    }
    /* A trailing +Inf is the implied bucket; accept it so callers may
     * spell the full list. */
    if (nbuckets && !buckets) {
        upm_log_error("prom", "histogram buckets missing | name=%s", name);
        return NULL;
    }
    if (type == UPM_PROM_HISTOGRAM && nbuckets && isinf(buckets[nbuckets - 1]) &&
        buckets[nbuckets - 1] > 0)
        nbuckets--;
    for (size_t i = 0; i < nbuckets; i++) {
        if (!isfinite(buckets[i]) || (i > 0 && !(buckets[i] > buckets[i - 1]))) {
            upm_log_error("prom",
                          "histogram buckets must be finite and strictly increasing | "
                          "name=%s index=%zu",
                          name, i);
            return NULL;
        }
    }

    struct upm_prom_metric *m = NULL;
    pthread_mutex_lock(&reg->lock);
    for (size_t i = 0; i < reg->nmetrics; i++) {
        struct upm_prom_metric *old = reg->metrics[i];
        if (strcmp(old->name, name) != 0)
            continue;
        if (same_shape(old, type, nbuckets, buckets, nlabels, labels)) {
            m = old;
        } else {
            upm_log_error("prom",
                          "metric re-registered with a different shape | name=%s "
                          "type=%s registered_type=%s",
                          name, type_name(type), type_name(old->type));
        }
        goto out;
    }

    m = upm_calloc(1, sizeof(*m));
    m->reg = reg;
    m->name = upm_strdup(name);
    m->help = help ? upm_strdup(help) : NULL;
    m->type = type;
    m->nlabels = nlabels;
    if (nlabels) {
        m->labels = upm_calloc(nlabels, sizeof(*m->labels));
        for (size_t i = 0; i < nlabels; i++)
            m->labels[i] = upm_strdup(labels[i]);
    }
    m->nbuckets = nbuckets;
    if (nbuckets) {
        m->buckets = upm_calloc(nbuckets, sizeof(*m->buckets));
        memcpy(m->buckets, buckets, nbuckets * sizeof(*buckets));
    }
    if (reg->nmetrics == reg->cap) {
        reg->cap = reg->cap ? reg->cap * 2 : 16;
        reg->metrics = upm_realloc(reg->metrics, reg->cap * sizeof(*reg->metrics));
    }
    reg->metrics[reg->nmetrics++] = m;
out:
    pthread_mutex_unlock(&reg->lock);
    return m;
}

struct upm_prom_metric *upm_prom_counter(struct upm_prom_registry *reg, const char *name,
                                         const char *help, size_t nlabels,
                                         const char *const *labels)
{
    return metric_register(reg, UPM_PROM_COUNTER, name, help, 0, NULL, nlabels, labels);
}

struct upm_prom_metric *upm_prom_gauge(struct upm_prom_registry *reg, const char *name,
                                       const char *help, size_t nlabels, const char *const *labels)
{
    return metric_register(reg, UPM_PROM_GAUGE, name, help, 0, NULL, nlabels, labels);
}

struct upm_prom_metric *upm_prom_histogram(struct upm_prom_registry *reg, const char *name,
                                           const char *help, size_t nbuckets, const double *buckets,
                                           size_t nlabels, const char *const *labels)
{
    return metric_register(reg, UPM_PROM_HISTOGRAM, name, help, nbuckets, buckets, nlabels, labels);
}

/* ---- series --------------------------------------------------------------------------------- */

/* FNV-1a over the values, each terminated by its NUL so ("ab","c") and
 * ("a","bc") differ. */
static uint64_t values_hash(size_t n, const char *const *values)
{
    uint64_t h = UINT64_C(14695981039346656037);
    for (size_t i = 0; i < n; i++) {
        const unsigned char *p = (const unsigned char *)values[i];
        do {
            h ^= *p;
            h *= UINT64_C(1099511628211);
        } while (*p++);
    }
    return h;
}

static bool values_equal(const struct upm_prom_series *s, size_t n, const char *const *values)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(s->values[i], values[i]) != 0)
            return false;
    return true;
}

/* Label value escaping per the exposition format: only \, " and newline. */
static int put_escaped(struct upm_buf *out, const char *s, bool quote)
{
    const char *run = s;
    for (const char *p = s;; p++) {
        const char *esc = NULL;
        if (*p == '\\')
            esc = "\\\\";
        else if (*p == '\n')
            esc = "\\n";
        else if (quote && *p == '"')
            esc = "\\\"";
        else if (*p != '\0')
            continue;
        if (upm_buf_append(out, run, (size_t)(p - run)) != 0)
            return -1;
        if (!esc)
            return 0;
        if (upm_buf_puts(out, esc) != 0)
            return -1;
        run = p + 1;
    }
}

static struct upm_prom_series **lookup_slot(struct upm_prom_metric *m, uint64_t hash,
                                            const char *const *values)
{
    struct upm_prom_series **pp = &m->table[hash & (m->ntable - 1)];
    while (*pp && !((*pp)->hash == hash && values_equal(*pp, m->nlabels, values)))
        pp = &(*pp)->hnext;
    return pp;
}

static void table_grow(struct upm_prom_metric *m)
{
    size_t n = m->ntable ? m->ntable * 2 : 16;
    struct upm_prom_series **t = upm_calloc(n, sizeof(*t));
    for (struct upm_prom_series *s = m->first; s; s = s->next) {
        struct upm_prom_series **slot = &t[s->hash & (n - 1)];
        s->hnext = *slot;
        *slot = s;
    }
    free(m->table);
    m->table = t;
    m->ntable = n;
}

static bool values_ok(const struct upm_prom_metric *m, const char *const *values)
{
    if (!m->nlabels)
        return true;
    if (!values)
        return false;
    for (size_t i = 0; i < m->nlabels; i++)
        if (!values[i])
            return false;
    return true;
}

struct upm_prom_series *upm_prom_series_get(struct upm_prom_metric *m, const char *const *values)
{
    if (!m)
        return NULL;
    if (!values_ok(m, values)) {
        upm_log_error("prom", "label values missing | name=%s", m->name);
        return NULL;
    }
    uint64_t hash = values_hash(m->nlabels, values);
    struct upm_prom_registry *reg = m->reg;
    pthread_mutex_lock(&reg->lock);
    if (m->nseries >= m->ntable)
        table_grow(m);
    struct upm_prom_series **slot = lookup_slot(m, hash, values);
    struct upm_prom_series *s = *slot;
    if (s)
        goto out;

    s = upm_calloc(1, sizeof(*s));
    s->metric = m;
    s->hash = hash;
    atomic_init(&s->value, dbl_to_bits(0.0));
    if (m->nlabels)
        s->values = upm_calloc(m->nlabels, sizeof(*s->values));
    /* Escape the label pairs once here so rendering is a copy. */
    struct upm_buf lb;
    upm_buf_init(&lb, 0);
    for (size_t i = 0; i < m->nlabels; i++) {
        s->values[i] = upm_strdup(values[i]);
        upm_buf_printf(&lb, "%s%s=\"", i ? "," : "", m->labels[i]);
        put_escaped(&lb, values[i], true);
        upm_buf_putc(&lb, '"');
    }
    s->labels = upm_buf_steal(&lb, NULL);
    if (m->type == UPM_PROM_HISTOGRAM) {
        s->counts = upm_calloc(m->nbuckets + 1, sizeof(*s->counts));
        for (size_t i = 0; i <= m->nbuckets; i++)
            atomic_init(&s->counts[i], 0);
    }
    *slot = s;
    s->prev = m->last;
    if (m->last)
        m->last->next = s;
    else
        m->first = s;
    m->last = s;
    m->nseries++;
out:
    pthread_mutex_unlock(&reg->lock);
    return s;
}

void upm_prom_series_remove(struct upm_prom_metric *m, const char *const *values)
{
    if (!m || !values_ok(m, values))
        return;
    uint64_t hash = values_hash(m->nlabels, values);
    pthread_mutex_lock(&m->reg->lock);
    if (m->ntable) {
        struct upm_prom_series **slot = lookup_slot(m, hash, values);
        struct upm_prom_series *s = *slot;
        if (s) {
            *slot = s->hnext;
            if (s->prev)
                s->prev->next = s->next;
            else
                m->first = s->next;
            if (s->next)
                s->next->prev = s->prev;
            else
                m->last = s->prev;
            m->nseries--;
            series_free(s);
        }
    }
    pthread_mutex_unlock(&m->reg->lock);
}

void upm_prom_metric_clear(struct upm_prom_metric *m)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->reg->lock);
    metric_clear_locked(m);
    pthread_mutex_unlock(&m->reg->lock);
}

/* ---- updates -------------------------------------------------------------------------------- */

void upm_prom_inc(struct upm_prom_series *s, double v)
{
    /* !(v > 0) also drops NaN, which would poison the counter for good. */
    if (!s || !(v > 0))
        return;
    bits_add(&s->value, v);
}

void upm_prom_set(struct upm_prom_series *s, double v)
{
    if (!s)
        return;
    atomic_store_explicit(&s->value, dbl_to_bits(v), memory_order_relaxed);
}

void upm_prom_add(struct upm_prom_series *s, double v)
{
    if (!s)
        return;
    bits_add(&s->value, v);
}

void upm_prom_observe(struct upm_prom_series *s, double v)
{
    if (!s || !s->counts)
        return;
    const struct upm_prom_metric *m = s->metric;
    /* First bound >= v: an observation equal to a bound belongs to it (le
     * means "less or equal"). NaN compares false everywhere: +Inf bucket. */
    size_t lo = 0, hi = m->nbuckets;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v <= m->buckets[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    if (isnan(v))
        lo = m->nbuckets;
    atomic_fetch_add_explicit(&s->counts[lo], 1, memory_order_relaxed);
    bits_add(&s->value, v);
}

double upm_prom_value(const struct upm_prom_series *s)
{
    if (!s)
        return 0.0;
    if (s->counts) {
        uint64_t n = 0;
        for (size_t i = 0; i <= s->metric->nbuckets; i++)
            n += atomic_load_explicit(&s->counts[i], memory_order_relaxed);
        return (double)n;
    }
    return bits_to_dbl(
        atomic_load_explicit(&((struct upm_prom_series *)s)->value, memory_order_relaxed));
}

/* ---- rendering ------------------------------------------------------------------------------ */

/* Sample values: integral values exactly (1e15 as 1000000000000000, not
 * 1e+15), others with round-trip precision, specials as Prometheus spells
 * them. */
static int put_value(struct upm_buf *out, double v)
{
    if (isnan(v))
        return upm_buf_puts(out, "NaN");
    if (isinf(v))
        return upm_buf_puts(out, v > 0 ? "+Inf" : "-Inf");
    if (v == floor(v) && v >= -9223372036854775808.0 && v < 9223372036854775808.0)
        return upm_buf_printf(out, "%" PRId64, (int64_t)v);
    return upm_buf_printf(out, "%.17g", v);
}

/* Bucket bounds the way Prometheus' Go client writes them (strconv 'g',
 * shortest round-trip digits, exponent form below 1e-4 and from 1e6), so
 * le="0.005" and le="1" match what dashboards and recording rules expect. */
static void format_le(double v, char *out, size_t size)
{
    if (isinf(v)) {
        snprintf(out, size, "%s", v > 0 ? "+Inf" : "-Inf");
        return;
    }
    int prec = 1;
    char tmp[64];
    for (; prec < 17; prec++) {
        snprintf(tmp, sizeof(tmp), "%.*e", prec - 1, v);
        if (strtod(tmp, NULL) == v)
            break;
    }
    snprintf(tmp, sizeof(tmp), "%.*e", prec - 1, v);
    const char *e = strchr(tmp, 'e');
    long exp = e ? strtol(e + 1, NULL, 10) : 0;
    if (exp < -4 || exp >= 6) {
        snprintf(out, size, "%s", tmp);
        return;
    }
    int decimals = prec - 1 - (int)exp;
    snprintf(out, size, "%.*f", decimals > 0 ? decimals : 0, v);
}

static int put_sample(struct upm_buf *out, const char *name, const char *suffix, const char *labels,
                      const char *le, double v)
{
    bool any = labels[0] || le;
    if (upm_buf_puts(out, name) || upm_buf_puts(out, suffix))
        return -1;
    if (any) {
        if (upm_buf_putc(out, '{') || upm_buf_puts(out, labels))
            return -1;
        if (le && upm_buf_printf(out, "%sle=\"%s\"", labels[0] ? "," : "", le))
            return -1;
        if (upm_buf_putc(out, '}'))
            return -1;
    }
    if (upm_buf_putc(out, ' ') || put_value(out, v) || upm_buf_putc(out, '\n'))
        return -1;
    return 0;
}

static int render_histogram(struct upm_buf *out, const struct upm_prom_metric *m,
                            const struct upm_prom_series *s)
{
    char le[64];
    uint64_t cum = 0;
    /* _count is the sum of the buckets read here, so the +Inf bucket and
     * _count always agree even while observations race with rendering. */
    for (size_t i = 0; i <= m->nbuckets; i++) {
        cum += atomic_load_explicit(&s->counts[i], memory_order_relaxed);
        format_le(i < m->nbuckets ? m->buckets[i] : INFINITY, le, sizeof(le));
        if (put_sample(out, m->name, "_bucket", s->labels, le, (double)cum))
            return -1;
    }
    double sum = bits_to_dbl(
        atomic_load_explicit(&((struct upm_prom_series *)s)->value, memory_order_relaxed));
    if (put_sample(out, m->name, "_sum", s->labels, NULL, sum) ||
        put_sample(out, m->name, "_count", s->labels, NULL, (double)cum))
        return -1;
    return 0;
}

static int render_metric(struct upm_buf *out, const struct upm_prom_metric *m)
{
    /* A family without series says nothing: no stale HELP/TYPE headers for
     * a standby that cleared its statistics. */
    if (!m->first)
        return 0;
    if (m->help) {
        if (upm_buf_printf(out, "# HELP %s ", m->name) || put_escaped(out, m->help, false) ||
            upm_buf_putc(out, '\n'))
            return -1;
    }
    if (upm_buf_printf(out, "# TYPE %s %s\n", m->name, type_name(m->type)))
        return -1;
    for (const struct upm_prom_series *s = m->first; s; s = s->next) {
        if (m->type == UPM_PROM_HISTOGRAM) {
            if (render_histogram(out, m, s))
                return -1;
        } else if (put_sample(out, m->name, "", s->labels, NULL, upm_prom_value(s))) {
            return -1;
        }
    }
    return 0;
}

int upm_prom_render(struct upm_prom_registry *reg, struct upm_buf *out)
{
    if (!reg)
        return 0;
    int rc = 0;
    pthread_mutex_lock(&reg->lock);
    for (size_t i = 0; i < reg->nmetrics && rc == 0; i++)
        rc = render_metric(out, reg->metrics[i]);
    pthread_mutex_unlock(&reg->lock);
    return rc;
}
