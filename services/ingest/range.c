#include "range.h"

#include <stdlib.h>
#include <string.h>

#include "upmon/alloc.h"
#include "upmon/evrow.h"
#include "upmon/siphash.h"

void ing_range_init(struct ing_range *r, int32_t partition, uint32_t nshards, int64_t start)
{
    memset(r, 0, sizeof(*r));
    r->partition = partition;
    r->nshards = nshards;
    r->blocks = upm_calloc(nshards, sizeof(*r->blocks));
    r->shard_rows = upm_calloc(nshards, sizeof(*r->shard_rows));
    for (uint32_t s = 0; s < nshards; s++)
        upm_buf_init(&r->blocks[s], 0);
    ing_range_reset(r, start);
}

void ing_range_reset(struct ing_range *r, int64_t start)
{
    r->start = start;
    r->next = start;
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

long ing_range_add(struct ing_range *r, const struct upm_event *ev, int64_t offset)
{
    if (offset < r->next)
        return -1;
    size_t added = 0;
    if (ev) {
        uint32_t s = upm_siphash_shard(ev->attempt_id, strlen(ev->attempt_id), r->nshards);
        size_t before = r->blocks[s].len;
        /* Unlimited buffer: the group limits bound it. */
        (void)upm_evrow_encode(&r->blocks[s], ev, r->partition, offset);
        added = r->blocks[s].len - before;
        r->bytes += added;
        r->shard_rows[s]++;
        if (r->nvalid == r->ts_cap) {
            r->ts_cap = r->ts_cap ? r->ts_cap * 2 : 1024;
            r->ts_ns = upm_realloc(r->ts_ns, r->ts_cap * sizeof(*r->ts_ns));
        }
        r->ts_ns[r->nvalid++] = ev->ts_ns;
    }
    r->nmsgs++;
    r->next = offset + 1;
    return (long)added;
}
