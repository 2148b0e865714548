/*
 * fuzz_schema — arbitrary bytes as a migration file: the statement splitter,
 * placeholder substitution, the set loader, file names and partition ids.
 *
 * Beyond "no crash, no leak, no UB" it checks:
 * - every split statement is non-empty, trimmed, and the statements of the
 *   whole text never exceed its length;
 * - substitution that succeeds equals a plain left-to-right replacement of
 *   every {database} and {cluster} (single pass: a replacement that spells a
 *   placeholder together with its neighbours is not expanded again);
 * - a migration the loader accepts splits into at least one statement.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "upmon/log.h"
#include "upmon/schema.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The reference: copy text, replacing each {database} / {cluster} met while
 * scanning left to right. Caller frees. */
static char *reference_substitute(const char *text)
{
    size_t len = strlen(text);
    char *out = malloc(len + 1); /* replacements are shorter than placeholders */
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        if (strncmp(text + i, "{database}", 10) == 0) {
            memcpy(out + o, "db", 2);
            o += 2;
            i += 10;
        } else if (strncmp(text + i, "{cluster}", 9) == 0) {
            memcpy(out + o, "cl", 2);
            o += 2;
            i += 9;
        } else {
            out[o++] = text[i++];
        }
    }
    out[o] = '\0';
    return out;
}

static void check(int ok, const char *what, size_t size)
{
    if (ok)
        return;
    fprintf(stderr, "fuzz_schema: invariant broken: %s (input %zu bytes)\n", what, size);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    size_t len = strlen(text); /* the C-string view the splitter sees */
    upm_log_set_level(UPM_LOG_OFF);

    struct upm_strlist stmts = {0};
    if (upm_schema_split(text, &stmts, err, sizeof(err)) == 0) {
        size_t total = 0;
        for (size_t i = 0; i < stmts.count; i++) {
            size_t n = strlen(stmts.items[i]);
            check(n > 0, "empty statement", size);
            check(!isspace((unsigned char)stmts.items[i][0]) &&
                      !isspace((unsigned char)stmts.items[i][n - 1]),
                  "statement not trimmed", size);
            total += n;
            free(stmts.items[i]);
        }
        check(total <= len, "statements longer than the text", size);
        free(stmts.items);
    } else {
        check(stmts.count == 0 && stmts.items == NULL, "split failure left statements", size);
    }

    char *sub = upm_schema_substitute(text, "db", "cl", err, sizeof(err));
    if (sub) {
        char *want = reference_substitute(text);
        check(strcmp(sub, want) == 0, "substitution differs from the reference", size);
        free(want);
        free(sub);
    }

    struct upm_schema_source src = {"0001_fuzz.sql", (const char *)data, size};
    struct upm_schema_set *set = upm_schema_set_from_sources(&src, 1, err, sizeof(err));
    if (set) {
        check(set->count == 1 && set->items[0].len == size, "set lost the file", size);
        upm_schema_set_destroy(set);
    }

    unsigned version;
    char name[64];
    (void)upm_schema_parse_filename(text, &version, name, sizeof(name));
    int e = upm_schema_partition_expired(text, (int64_t)size * 86400 * 97, (int64_t)(size % 4000));
    check(e >= -1 && e <= 1, "partition_expired out of range", size);
    free(text);
    return 0;
}
