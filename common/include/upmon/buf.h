/*
 * buf — a growable byte buffer with an optional hard limit.
 *
 * Used for everything upmon assembles before sending: metric exposition,
 * serialized events, RowBinary batches, HTTP bodies. The limit makes "bounded
 * dynamic buffer" a property of the type: an append that would exceed it
 * fails with -1 and leaves the buffer unchanged, so a caller can reject the
 * oversize input instead of growing without bound.
 *
 * data is always NUL-terminated (one byte beyond len), so text users may
 * treat it as a C string; binary users use len.
 */
#ifndef UPMON_BUF_H
#define UPMON_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

struct upm_buf {
    char *data;   /* owned; NULL until the first append */
    size_t len;   /* bytes used, excluding the terminating NUL */
    size_t cap;   /* bytes allocated */
    size_t limit; /* maximum len; 0 = unlimited */
};

/* Initialise an empty buffer; limit 0 means no limit. Allocates nothing. */
void upm_buf_init(struct upm_buf *b, size_t limit);
/* Free the storage; the buffer may be reused after upm_buf_init. NULL-safe. */
void upm_buf_free(struct upm_buf *b);
/* Set len to 0, keeping the storage. */
void upm_buf_reset(struct upm_buf *b);
/* Make room for n more bytes. 0, or -1 if that would pass the limit. */
int upm_buf_reserve(struct upm_buf *b, size_t n);
/* Append bytes / a C string / one byte. 0, or -1 (limit) with b unchanged. */
int upm_buf_append(struct upm_buf *b, const void *data, size_t n);
int upm_buf_puts(struct upm_buf *b, const char *s);
int upm_buf_putc(struct upm_buf *b, char c);
/* printf-style append. 0, or -1 (limit or encoding error) with b unchanged. */
int upm_buf_printf(struct upm_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int upm_buf_vprintf(struct upm_buf *b, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
/* Little-endian fixed-width appends (RowBinary). 0 or -1 (limit). */
int upm_buf_put_u8(struct upm_buf *b, uint8_t v);
int upm_buf_put_u16le(struct upm_buf *b, uint16_t v);
int upm_buf_put_u32le(struct upm_buf *b, uint32_t v);
int upm_buf_put_u64le(struct upm_buf *b, uint64_t v);
/* Unsigned LEB128, as ClickHouse uses for string lengths. 0 or -1 (limit). */
int upm_buf_put_varuint(struct upm_buf *b, uint64_t v);
/* Take the storage out of the buffer; caller frees with free(). The buffer is
 * left empty. Never NULL (an empty buffer yields an empty string). */
char *upm_buf_steal(struct upm_buf *b, size_t *len);

#endif
