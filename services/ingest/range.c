#include "range.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "upmon/alloc.h"
#include "upmon/evrow.h"
#include "upmon/siphash.h"

#define META_PREFIX "upmon-ingest/1 "

void ing_range_init(struct ing_range *r, int32_t partition, uint32_t nshards, int64_t start,
                    int64_t recorded_end)
{
    memset(r, 0, sizeof(*r));
    r->partition = partition;
    r->nshards = nshards;
    r->blocks = upm_calloc(nshards, sizeof(*r->blocks));
    r->shard_rows = upm_calloc(nshards, sizeof(*r->shard_rows));
    for (uint32_t s = 0; s < nshards; s++)
        upm_buf_init(&r->blocks[s], 0);
    ing_range_reset(r, start, recorded_end);
}

void ing_range_reset(struct ing_range *r, int64_t start, int64_t recorded_end)
{
    r->start = start;
    r->next = start;
    r->recorded_end = recorded_end;
    r->nmsgs = 0;
    r->nvalid = 0;
    r->bytes = 0;
    r->first_ns = 0;
    for (uint32_t s = 0; s < r->nshards; s++) {
        upm_buf_reset(&r->blocks[s]);
        r->shard_rows[s] = 0;
    }
}

void ing_range_free(struct ing_range *r)
{
    for (uint32_t s = 0; r->blocks && s < r->nshards; s++)
        upm_buf_free(&r->blocks[s]);
    free(r->blocks);
    free(r->shard_rows);
    free(r->ts_ns);
    memset(r, 0, sizeof(*r));
}

int ing_range_add(struct ing_range *r, const struct upm_event *ev, int64_t offset, int64_t now_ns)
{
    if (offset < r->next)
        return -1;
    if (r->recorded_end >= 0 && offset >= r->recorded_end)
        return 1;
    if (ev) {
        uint32_t s = upm_siphash_shard(ev->attempt_id, strlen(ev->attempt_id), r->nshards);
        size_t before = r->blocks[s].len;
        /* Unlimited buffer: the range limits bound it. */
        (void)upm_evrow_encode(&r->blocks[s], ev, r->partition, offset);
        r->bytes += r->blocks[s].len - before;
        r->shard_rows[s]++;
        if (r->nvalid == r->ts_cap) {
            r->ts_cap = r->ts_cap ? r->ts_cap * 2 : 1024;
            r->ts_ns = upm_realloc(r->ts_ns, r->ts_cap * sizeof(*r->ts_ns));
        }
        r->ts_ns[r->nvalid++] = ev->ts_ns;
    }
    if (r->nmsgs == 0)
        r->first_ns = now_ns;
    r->nmsgs++;
    r->next = offset + 1;
    return 0;
}

enum ing_cut ing_range_cut(const struct ing_range *r, const struct ing_limits *lim, int64_t now_ns)
{
    if (r->nmsgs == 0)
        return ING_CUT_NONE;
    if (r->recorded_end >= 0)
        return r->next >= r->recorded_end ? ING_CUT_RECORDED : ING_CUT_NONE;
    if (lim->max_rows && r->nvalid >= lim->max_rows)
        return ING_CUT_ROWS;
    if (lim->max_bytes && r->bytes >= lim->max_bytes)
        return ING_CUT_BYTES;
    if (now_ns - r->first_ns >= lim->max_age_ns)
        return ING_CUT_AGE;
    return ING_CUT_NONE;
}

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
    }
    return "unknown";
}

int ing_meta_format(char *out, size_t size, int64_t end, uint32_t nshards)
{
    int n = snprintf(out, size, META_PREFIX "end=%" PRId64 " shards=%" PRIu32, end, nshards);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

static int parse_num(const char *s, const char *key, long long max, long long *out,
                     const char **rest)
{
    size_t klen = strlen(key);
    if (strncmp(s, key, klen) != 0)
        return -1;
    s += klen;
    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    char *endp;
    long long v = strtoll(s, &endp, 10);
    if (errno || v < 0 || v > max)
        return -1;
    *out = v;
    *rest = endp;
    return 0;
}

int ing_meta_parse(const char *s, int64_t *end, uint32_t *nshards)
{
    long long e, n;
    const char *p;
    if (!s || strncmp(s, META_PREFIX, strlen(META_PREFIX)) != 0)
        return 1;
    p = s + strlen(META_PREFIX);
    if (parse_num(p, "end=", INT64_MAX, &e, &p) != 0 || *p != ' ' ||
        parse_num(p + 1, "shards=", UINT32_MAX, &n, &p) != 0 || *p != '\0' || n == 0)
        return -1;
    *end = e;
    *nshards = (uint32_t)n;
    return 0;
}
