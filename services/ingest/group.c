#include "group.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PREFIX_V1 "upmon-ingest/1 "
#define PREFIX_V2 "upmon-ingest/2 "

const char *ing_cut_name(enum ing_cut cut)
{
    switch (cut) {
    case ING_CUT_NONE:
        return "none";
    case ING_CUT_RECORDED:
        return "recorded";
    case ING_CUT_ROWS:
        return "rows";
    case ING_CUT_BYTES:
        return "bytes";
    case ING_CUT_AGE:
        return "age";
    case ING_CUT_FINAL:
        return "final";
    case ING_CUT_TOPOLOGY:
        return "topology";
    }
    return "unknown";
}

enum ing_cut ing_group_cut(const struct ing_totals *t, const struct ing_limits *lim, int64_t now_ns)
{
    if (t->msgs == 0)
        return ING_CUT_NONE;
    if (lim->max_rows && t->rows >= lim->max_rows)
        return ING_CUT_ROWS;
    if (lim->max_bytes && t->bytes >= lim->max_bytes)
        return ING_CUT_BYTES;
    if (now_ns - t->first_ns >= lim->max_age_ns)
        return ING_CUT_AGE;
    return ING_CUT_NONE;
}

static int well_formed(const struct ing_group *g)
{
    if (g->nshards == 0 || g->n == 0 || g->n > ING_GROUP_MAX)
        return 0;
    for (size_t i = 0; i < g->n; i++) {
        const struct ing_member *m = &g->m[i];
        if (m->partition < 0 || m->start < 0 || m->start > m->end)
            return 0;
        if (i > 0 && m->partition <= g->m[i - 1].partition)
            return 0;
    }
    return 1;
}

int ing_group_format(char *out, size_t size, const struct ing_group *g)
{
    if (!well_formed(g) || size == 0)
        return -1;
    size_t len = 0;
    int n = snprintf(out, size, PREFIX_V2 "shards=%" PRIu32 " p=", g->nshards);
    if (n < 0 || (size_t)n >= size)
        return -1;
    len = (size_t)n;
    for (size_t i = 0; i < g->n; i++) {
        n = snprintf(out + len, size - len, "%s%" PRId32 ":%" PRId64 "-%" PRId64, i ? "," : "",
                     g->m[i].partition, g->m[i].start, g->m[i].end);
        if (n < 0 || (size_t)n >= size - len)
            return -1;
        len += (size_t)n;
    }
    return 0;
}

/* A decimal number in [0, max] at *s, no sign, no leading blanks. */
static int number(const char **s, long long max, long long *out)
{
    if (**s < '0' || **s > '9')
        return -1;
    errno = 0;
    char *endp;
    long long v = strtoll(*s, &endp, 10);
    if (errno || v < 0 || v > max)
        return -1;
    *out = v;
    *s = endp;
    return 0;
}

static int expect(const char **s, const char *lit)
{
    size_t n = strlen(lit);
    if (strncmp(*s, lit, n) != 0)
        return -1;
    *s += n;
    return 0;
}

static int parse_v2(const char *p, struct ing_group *g)
{
    long long v;
    if (expect(&p, "shards=") || number(&p, UINT32_MAX, &v) || expect(&p, " p="))
        return -1;
    g->nshards = (uint32_t)v;
    g->n = 0;
    for (;;) {
        if (g->n == ING_GROUP_MAX)
            return -1;
        struct ing_member *m = &g->m[g->n];
        long long part, start, end;
        if (number(&p, INT32_MAX, &part) || expect(&p, ":") || number(&p, INT64_MAX, &start) ||
            expect(&p, "-") || number(&p, INT64_MAX, &end))
            return -1;
        *m = (struct ing_member){(int32_t)part, start, end};
        g->n++;
        if (*p == '\0')
            break;
        if (expect(&p, ","))
            return -1;
    }
    return well_formed(g) ? 0 : -1;
}

static int parse_v1(const char *p, int32_t partition, int64_t committed, struct ing_group *g)
{
    long long end, shards;
    if (expect(&p, "end=") || number(&p, INT64_MAX, &end) || expect(&p, " shards=") ||
        number(&p, UINT32_MAX, &shards) || *p != '\0')
        return -1;
    g->nshards = (uint32_t)shards;
    g->n = 1;
    g->m[0] = (struct ing_member){partition, committed, end};
    return well_formed(g) ? 0 : -1;
}

int ing_group_parse(const char *s, int32_t partition, int64_t committed, struct ing_group *g)
{
    memset(g, 0, sizeof(*g));
    if (!s)
        return 1;
    int rc;
    if (strncmp(s, PREFIX_V2, strlen(PREFIX_V2)) == 0)
        rc = parse_v2(s + strlen(PREFIX_V2), g);
    else if (strncmp(s, PREFIX_V1, strlen(PREFIX_V1)) == 0)
        rc = parse_v1(s + strlen(PREFIX_V1), partition, committed, g);
    else
        return 1;
    if (rc != 0)
        return -1;
    /* The record belongs to the offset it was committed with. */
    const struct ing_member *me = ing_group_member(g, partition);
    if (!me || me->start != committed)
        return -1;
    return 0;
}

const struct ing_member *ing_group_member(const struct ing_group *g, int32_t partition)
{
    for (size_t i = 0; i < g->n; i++) {
        if (g->m[i].partition == partition)
            return &g->m[i];
    }
    return NULL;
}

size_t ing_group_block(struct ing_range *const *members, size_t n, uint32_t shard,
                       struct upm_buf *out)
{
    size_t rows = 0;
    for (size_t i = 0; i < n; i++) {
        const struct ing_range *r = members[i];
        if (shard >= r->nshards || r->shard_rows[shard] == 0)
            continue;
        /* Unlimited buffer: the group limits bound it. */
        (void)upm_buf_append(out, r->blocks[shard].data, r->blocks[shard].len);
        rows += r->shard_rows[shard];
    }
    return rows;
}
