#include "upmon/alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Noreturn void upm_fatal(const char *what)
{
    /* Not through upm_log: it may itself need memory. */
    fprintf(stderr, "level=fatal msg=\"%s\"\n", what);
    fflush(stderr);
    abort();
}

void *upm_malloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (!p)
        upm_fatal("out of memory");
    return p;
}

void *upm_calloc(size_t nmemb, size_t size)
{
    void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);
    if (!p)
        upm_fatal("out of memory");
    return p;
}

void *upm_realloc(void *ptr, size_t size)
{
    void *p = realloc(ptr, size ? size : 1);
    if (!p)
        upm_fatal("out of memory");
    return p;
}

char *upm_strdup(const char *s)
{
    return upm_strndup(s, strlen(s));
}

char *upm_strndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *p = upm_malloc(len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}
