/* tsv — ClickHouse TabSeparated reading and writing; see tsv.h. */
#include "tsv.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

char *an_tsv_next_line(char **p)
{
    char *s = *p;
    if (!s || !*s)
        return NULL;
    char *nl = strchr(s, '\n');
    if (nl) {
        *nl = '\0';
        *p = nl + 1;
    } else {
        *p = s + strlen(s);
    }
    return s;
}

size_t an_tsv_split(char *line, char **fields, size_t max)
{
    size_t n = 0;
    char *r = line, *w = line;
    fields[n++] = w;
    for (; *r; r++) {
        if (*r == '\t') {
            *w++ = '\0';
            if (n == max)
                return n;
            fields[n++] = w;
        } else if (*r == '\\' && r[1]) {
            /* w never passes r: an escape writes one byte for two. */
            r++;
            switch (*r) {
            case 't':
                *w++ = '\t';
                break;
            case 'n':
                *w++ = '\n';
                break;
            case 'r':
                *w++ = '\r';
                break;
            case '0':
                *w++ = '\0';
                break;
            default:
                *w++ = *r;
            }
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
    return n;
}

double an_tsv_num(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    return end == s ? NAN : v;
}

void an_tsv_array(const char *s, double *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = NAN;
    if (*s != '[')
        return;
    s++;
    for (size_t i = 0; i < n && *s && *s != ']'; i++) {
        char *end;
        double v = strtod(s, &end);
        if (end == s)
            return;
        out[i] = v;
        s = end;
        if (*s == ',')
            s++;
    }
}

void an_tsv_put(struct upm_buf *b, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '\t':
            upm_buf_puts(b, "\\t");
            break;
        case '\n':
            upm_buf_puts(b, "\\n");
            break;
        case '\r':
            upm_buf_puts(b, "\\r");
            break;
        case '\\':
            upm_buf_puts(b, "\\\\");
            break;
        default:
            upm_buf_putc(b, *s);
        }
    }
}

void an_tsv_put_num(struct upm_buf *b, double v)
{
    if (isnan(v))
        upm_buf_puts(b, "nan");
    else if (isinf(v))
        upm_buf_puts(b, v > 0 ? "inf" : "-inf");
    else
        upm_buf_printf(b, "%.17g", v);
}
