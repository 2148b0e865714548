/*
 * fuzz_ingest_meta — the offset-commit metadata parser of upmon-ingest.
 *
 * The metadata comes back from the broker, so it is input: any bytes must
 * parse to "ours", "not ours" or "malformed" without crashing, and whatever
 * parses as ours must be a well-formed group that includes the partition at
 * its committed offset and formats back to text parsing to the same group.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "group.h"
#include "upmon/alloc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The first bytes choose the partition and committed offset asked for. */
    int32_t partition = size > 0 ? data[0] % 8 : 0;
    int64_t committed = size > 1 ? data[1] : 0;
    char *s = upm_strndup(size > 2 ? (const char *)data + 2 : "", size > 2 ? size - 2 : 0);
    struct ing_group g;
    int rc = ing_group_parse(s, partition, committed, &g);
    if (rc != 0 && rc != 1 && rc != -1)
        abort();
    if (rc == 0) {
        const struct ing_member *me = ing_group_member(&g, partition);
        if (!me || me->start != committed || g.n == 0 || g.n > ING_GROUP_MAX || g.nshards == 0)
            abort();
        for (size_t i = 0; i < g.n; i++) {
            if (g.m[i].start > g.m[i].end || (i && g.m[i].partition <= g.m[i - 1].partition))
                abort();
        }
        char again[ING_GROUP_META_MAX];
        struct ing_group g2;
        if (ing_group_format(again, sizeof(again), &g) != 0 ||
            ing_group_parse(again, partition, committed, &g2) != 0 || g2.n != g.n ||
            g2.nshards != g.nshards || memcmp(g2.m, g.m, g.n * sizeof(g.m[0])) != 0)
            abort();
    }
    free(s);
    return 0;
}
