/*
 * tsv — ClickHouse TabSeparated text: the analyzer's reading of query results
 * and writing of inserted rows.
 *
 * Reading trusts nothing: a line with the wrong field count, a number that
 * does not parse or an array that is cut short gives NaN or a short count,
 * never a crash or a read past the end (fuzzed: tests/fuzz/fuzz_analyzer_tsv.c).
 * Escapes are ClickHouse's: \t \n \r \0 \\ and backslash before any other
 * byte stands for that byte.
 */
#ifndef UPMON_ANALYZER_TSV_H
#define UPMON_ANALYZER_TSV_H

#include <stddef.h>

#include "upmon/buf.h"

/* Next line of a NUL-terminated body (the '\n' is replaced by NUL and *p
 * advanced past it); NULL at the end. */
char *an_tsv_next_line(char **p);

/* Split one line in place into at most max fields (unescaped). Returns the
 * number of fields; a line with more than max fields returns max with the
 * rest left in the last field's tail unparsed. max >= 1. */
size_t an_tsv_split(char *line, char **fields, size_t max);

/* A number ("nan", "inf" and "-inf" included); NaN when s does not start
 * with one. */
double an_tsv_num(const char *s);

/* "[1.5,2,nan]" → out[0..n) (NaN where the array is shorter or malformed). */
void an_tsv_array(const char *s, double *out, size_t n);

/* Append s escaped for a TabSeparated field. */
void an_tsv_put(struct upm_buf *b, const char *s);

/* Append a Float64 field: %.17g, or nan / inf / -inf. */
void an_tsv_put_num(struct upm_buf *b, double v);

#endif
