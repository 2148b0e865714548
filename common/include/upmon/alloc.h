/*
 * alloc — memory allocation with upmon's out-of-memory policy.
 *
 * Every upmon service runs under a supervisor (Kubernetes, ci/stack) that
 * restarts it, and nothing it holds in memory is the only copy of anything
 * (Kafka offsets are committed only after ClickHouse has the rows). So the
 * policy is: on allocation failure, log one line and abort(). Callers never
 * check these for NULL.
 */
#ifndef UPMON_ALLOC_H
#define UPMON_ALLOC_H

#include <stddef.h>

void *upm_malloc(size_t size);
void *upm_calloc(size_t nmemb, size_t size);
/* Like realloc, but aborts on failure instead of leaking the old block. */
void *upm_realloc(void *ptr, size_t size);
char *upm_strdup(const char *s);
char *upm_strndup(const char *s, size_t n);
/* Aborts the process: out-of-memory or an impossible state. Never returns. */
_Noreturn void upm_fatal(const char *what);

#endif
