#include "upmon/errstr.h"

#include <stdio.h>

void upm_errstr_vset(char *errstr, size_t errstr_size, const char *fmt, va_list ap)
{
    if (!errstr || errstr_size == 0)
        return;
    vsnprintf(errstr, errstr_size, fmt, ap);
}

void upm_errstr_set(char *errstr, size_t errstr_size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    upm_errstr_vset(errstr, errstr_size, fmt, ap);
    va_end(ap);
}
