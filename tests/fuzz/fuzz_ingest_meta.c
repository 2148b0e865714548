/*
 * fuzz_ingest_meta — the offset-commit metadata parser of upmon-ingest.
 *
 * The metadata comes back from the broker, so it is input: any bytes must
 * parse to "ours", "not ours" or "malformed" without crashing, and whatever
 * parses as ours must format back to text that parses to the same cut.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "range.h"
#include "upmon/alloc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = upm_strndup((const char *)data, size);
    int64_t end = 0;
    uint32_t nshards = 0;
    int rc = ing_meta_parse(s, &end, &nshards);
    if (rc != 0 && rc != 1 && rc != -1)
        abort();
    if (rc == 0) {
        char again[128];
        int64_t end2 = 0;
        uint32_t nshards2 = 0;
        if (ing_meta_format(again, sizeof(again), end, nshards) != 0 ||
            ing_meta_parse(again, &end2, &nshards2) != 0 || end2 != end || nshards2 != nshards)
            abort();
    }
    free(s);
    return 0;
}
