#include "upmon/buf.h"

#include "upmon/alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void upm_buf_init(struct upm_buf *b, size_t limit)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->limit = limit;
}

void upm_buf_free(struct upm_buf *b)
{
    if (!b)
        return;
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void upm_buf_reset(struct upm_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

int upm_buf_reserve(struct upm_buf *b, size_t n)
{
    if (n > SIZE_MAX / 2 - b->len)
        return -1;
    size_t need = b->len + n;
    if (b->limit && need > b->limit)
        return -1;
    if (need + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need + 1)
        cap *= 2;
    b->data = upm_realloc(b->data, cap);
    b->cap = cap;
    return 0;
}

int upm_buf_append(struct upm_buf *b, const void *data, size_t n)
{
    if (upm_buf_reserve(b, n) != 0)
        return -1;
    if (n)
        memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int upm_buf_puts(struct upm_buf *b, const char *s)
{
    return upm_buf_append(b, s, strlen(s));
}

int upm_buf_putc(struct upm_buf *b, char c)
{
    return upm_buf_append(b, &c, 1);
}

int upm_buf_vprintf(struct upm_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    char small[256];
    int n = vsnprintf(small, sizeof(small), fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return -1;
    if ((size_t)n < sizeof(small))
        return upm_buf_append(b, small, (size_t)n);
    if (upm_buf_reserve(b, (size_t)n) != 0)
        return -1;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int upm_buf_printf(struct upm_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = upm_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

int upm_buf_put_u8(struct upm_buf *b, uint8_t v)
{
    return upm_buf_append(b, &v, 1);
}

int upm_buf_put_u16le(struct upm_buf *b, uint16_t v)
{
    unsigned char le[2] = {(unsigned char)v, (unsigned char)(v >> 8)};
    return upm_buf_append(b, le, sizeof(le));
}

int upm_buf_put_u32le(struct upm_buf *b, uint32_t v)
{
    unsigned char le[4];
    for (int i = 0; i < 4; i++)
        le[i] = (unsigned char)(v >> (8 * i));
    return upm_buf_append(b, le, sizeof(le));
}

int upm_buf_put_u64le(struct upm_buf *b, uint64_t v)
{
    unsigned char le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (unsigned char)(v >> (8 * i));
    return upm_buf_append(b, le, sizeof(le));
}

int upm_buf_put_varuint(struct upm_buf *b, uint64_t v)
{
    unsigned char out[10];
    size_t n = 0;
    do {
        unsigned char byte = v & 0x7f;
        v >>= 7;
        if (v)
            byte |= 0x80;
        out[n++] = byte;
    } while (v);
    return upm_buf_append(b, out, n);
}

char *upm_buf_steal(struct upm_buf *b, size_t *len)
{
    char *p = b->data;
    if (!p) {
        p = upm_malloc(1);
        p[0] = '\0';
    }
    if (len)
        *len = b->len;
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    return p;
}
