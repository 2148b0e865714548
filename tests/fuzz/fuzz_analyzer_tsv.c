/*
 * Fuzz the analyzer's reading of ClickHouse TabSeparated results
 * (services/analyzer/tsv.c): any body, split into lines and fields, numbers
 * and arrays read from every field. Invariant: a string written with
 * an_tsv_put reads back unchanged through an_tsv_split.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tsv.h"
#include "upmon/buf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *body = malloc(size + 1);
    memcpy(body, data, size);
    body[size] = '\0';

    /* The round trip, on the input as one field (up to its first NUL). */
    struct upm_buf b;
    upm_buf_init(&b, 0);
    an_tsv_put(&b, body);
    upm_buf_putc(&b, '\t');
    upm_buf_puts(&b, "x");
    char *f[3];
    if (an_tsv_split(b.data, f, 3) != 2 || strcmp(f[0], body) != 0 || strcmp(f[1], "x") != 0)
        abort();
    upm_buf_free(&b);

    char *p = body, *line;
    while ((line = an_tsv_next_line(&p))) {
        char *fields[16];
        size_t n = an_tsv_split(line, fields, 16);
        if (n < 1 || n > 16)
            abort();
        for (size_t i = 0; i < n; i++) {
            double q[4];
            (void)an_tsv_num(fields[i]);
            an_tsv_array(fields[i], q, 4);
        }
    }
    free(body);
    return 0;
}
