/* history — per-minute, per-segment counters; see history.h. */
#include "history.h"

#include <stdlib.h>
#include <string.h>

#include "upmon/alloc.h"

struct minute {
    int64_t m;
    size_t nseg;               /* counters allocated (segments seen so far) */
    struct hist_counters *seg; /* NULL while the minute is empty */
};

struct hist {
    struct hist_segment segs[HIST_MAX_SEGMENTS];
    size_t nsegs;
    uint64_t dropped;
    struct minute *mins; /* sorted by m, unique */
    size_t nmins, cap;
};

struct hist *hist_create(void)
{
    struct hist *h = upm_calloc(1, sizeof(*h));
    h->segs[0].dim = HIST_DIM_ALL;
    strcpy(h->segs[0].value, "all");
    h->nsegs = 1;
    return h;
}

void hist_destroy(struct hist *h)
{
    if (!h)
        return;
    for (size_t i = 0; i < h->nmins; i++)
        free(h->mins[i].seg);
    free(h->mins);
    free(h);
}

const char *hist_dim_name(enum hist_dim dim)
{
    switch (dim) {
    case HIST_DIM_ALL:
        return "all";
    case HIST_DIM_COUNTRY:
        return "country";
    case HIST_DIM_ORIGIN:
        return "origin";
    }
    return "?";
}

int hist_find(const struct hist *h, enum hist_dim dim, const char *value)
{
    if (dim == HIST_DIM_ALL)
        return 0;
    for (size_t i = 1; i < h->nsegs; i++) {
        if (h->segs[i].dim == dim && strcmp(h->segs[i].value, value) == 0)
            return (int)i;
    }
    return -1;
}

int hist_segment(struct hist *h, enum hist_dim dim, const char *value)
{
    int i = hist_find(h, dim, value);
    if (i >= 0)
        return i;
    if (h->nsegs == HIST_MAX_SEGMENTS || strlen(value) >= sizeof(h->segs[0].value)) {
        h->dropped++;
        return -1;
    }
    h->segs[h->nsegs].dim = dim;
    strcpy(h->segs[h->nsegs].value, value);
    return (int)h->nsegs++;
}

size_t hist_nsegments(const struct hist *h)
{
    return h->nsegs;
}

const struct hist_segment *hist_segment_at(const struct hist *h, size_t i)
{
    return i < h->nsegs ? &h->segs[i] : NULL;
}

uint64_t hist_dropped_segments(const struct hist *h)
{
    return h->dropped;
}

size_t hist_nminutes(const struct hist *h)
{
    return h->nmins;
}

/* Index of the first minute >= m. */
static size_t lower_bound(const struct hist *h, int64_t m)
{
    size_t lo = 0, hi = h->nmins;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (h->mins[mid].m < m)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static struct minute *get_minute(struct hist *h, int64_t m)
{
    size_t i = lower_bound(h, m);
    if (i < h->nmins && h->mins[i].m == m)
        return &h->mins[i];
    if (h->nmins == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 256;
        h->mins = upm_realloc(h->mins, h->cap * sizeof(*h->mins));
    }
    memmove(&h->mins[i + 1], &h->mins[i], (h->nmins - i) * sizeof(*h->mins));
    h->nmins++;
    h->mins[i] = (struct minute){.m = m};
    return &h->mins[i];
}

/* Remove minutes with index in [a, b). */
static void remove_span(struct hist *h, size_t a, size_t b)
{
    if (a >= b)
        return;
    for (size_t i = a; i < b; i++)
        free(h->mins[i].seg);
    memmove(&h->mins[a], &h->mins[b], (h->nmins - b) * sizeof(*h->mins));
    h->nmins -= b - a;
}

void hist_clear_range(struct hist *h, int64_t from_min, int64_t to_min)
{
    if (from_min >= to_min)
        return;
    remove_span(h, lower_bound(h, from_min), lower_bound(h, to_min));
}

void hist_evict_before(struct hist *h, int64_t before_min)
{
    remove_span(h, 0, lower_bound(h, before_min));
}

void hist_mark_fetched(struct hist *h, int64_t from_min, int64_t to_min)
{
    for (int64_t m = from_min; m < to_min; m++)
        (void)get_minute(h, m);
}

static void add_to(struct minute *mi, size_t nsegs, int seg, const struct hist_counters *c)
{
    if (seg < 0)
        return;
    if (mi->nseg < nsegs) {
        mi->seg = upm_realloc(mi->seg, nsegs * sizeof(*mi->seg));
        memset(&mi->seg[mi->nseg], 0, (nsegs - mi->nseg) * sizeof(*mi->seg));
        mi->nseg = nsegs;
    }
    for (int k = 0; k < HC_COUNT; k++)
        mi->seg[seg].v[k] += c->v[k];
}

void hist_add_row(struct hist *h, int64_t minute, const char *origin, const char *country,
                  const struct hist_counters *c)
{
    /* Intern first: the minute's counter array is sized to the segments. */
    int sc = hist_segment(h, HIST_DIM_COUNTRY, country);
    int so = hist_segment(h, HIST_DIM_ORIGIN, origin);
    struct minute *mi = get_minute(h, minute);
    add_to(mi, h->nsegs, 0, c);
    add_to(mi, h->nsegs, sc, c);
    add_to(mi, h->nsegs, so, c);
}

size_t hist_sum(const struct hist *h, size_t seg, int64_t from_min, int64_t to_min,
                struct hist_counters *out)
{
    size_t present = 0;
    memset(out, 0, sizeof(*out));
    for (size_t i = lower_bound(h, from_min); i < h->nmins && h->mins[i].m < to_min; i++) {
        const struct minute *mi = &h->mins[i];
        present++;
        if (seg < mi->nseg) {
            for (int k = 0; k < HC_COUNT; k++)
                out->v[k] += mi->seg[seg].v[k];
        }
    }
    return present;
}
