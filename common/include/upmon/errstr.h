/*
 * errstr — the constructors' error convention in one place.
 *
 * A constructor or loader that fails writes one line into the caller's
 * buffer (errstr, errstr_size) naming what failed: the key, file position,
 * host or value. The buffer may be NULL or of size 0 (the caller does not
 * want the text); the result is always NUL-terminated and truncated to fit.
 */
#ifndef UPMON_ERRSTR_H
#define UPMON_ERRSTR_H

#include <stdarg.h>
#include <stddef.h>

void upm_errstr_set(char *errstr, size_t errstr_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void upm_errstr_vset(char *errstr, size_t errstr_size, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

#endif
