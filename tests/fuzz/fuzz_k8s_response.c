/*
 * Arbitrary Kubernetes API responses: the first byte picks an HTTP status
 * and the method, the second a chunk size; the rest is the body. It goes
 * through the error mapper (Status objects) and, cut into chunks, through
 * the watch-stream line parser. Checks: the mapper returns 0 exactly for
 * 2xx, otherwise a printable, NUL-terminated message and a kind consistent
 * with the status (409 conflict and not retriable, 5xx retriable); the
 * parser never reports an event after it stopped or failed, and its
 * resourceVersion stays NUL-terminated.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "upmon/k8s.h"
#include "upmon/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_text(const char *msg, size_t size)
{
    const char *nul = memchr(msg, '\0', size);
    if (!nul)
        __builtin_trap();
    for (const char *p = msg; p < nul; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            __builtin_trap();
}

struct seen {
    int events;
    bool done;
};

static int on_event(void *opaque, const char *type, const cJSON *obj)
{
    struct seen *s = opaque;
    if (s->done || !type || !cJSON_IsObject(obj))
        __builtin_trap();
    s->events++;
    return s->events >= 50; /* exercise the stop path too */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int statuses[] = {0, 200, 201, 400, 401, 403, 404, 409, 410, 422, 429, 500, 503};
    static const char *const methods[] = {"GET", "POST", "PUT", "PATCH", "DELETE"};
    static const char *const paths[] = {
        "/apis/coordination.k8s.io/v1/namespaces/ns/leases/x",
        "/api/v1/namespaces/a/pods?watch=1",
        "/",
        "/apis/x",
    };
    struct upm_k8s_response resp = {0};
    struct upm_k8s_error err;
    struct upm_k8s_watch_parser p;
    struct seen seen = {0};
    char *body;
    size_t chunk;
    int rc;

    if (size < 2)
        return 0;
    upm_log_set_level(UPM_LOG_OFF);
    resp.status = statuses[data[0] % (sizeof(statuses) / sizeof(statuses[0]))];
    resp.timed_out = data[0] & 0x80;
    chunk = (size_t)data[1] + 1;
    body = malloc(size - 2 ? size - 2 : 1);
    memcpy(body, data + 2, size - 2);
    rc = upm_k8s_error_from_response(&resp, body, size - 2, methods[data[1] % 5],
                                     paths[(data[0] >> 4) % 4], &err);
    if ((rc == 0) != (resp.status >= 200 && resp.status < 300))
        __builtin_trap();
    if (rc != 0) {
        check_text(err.message, sizeof(err.message));
        check_text(err.reason, sizeof(err.reason));
        if (err.message[0] == '\0')
            __builtin_trap();
        if (resp.status == 409 && (err.kind != UPM_K8S_ERR_CONFLICT || err.retriable))
            __builtin_trap();
        if (resp.status >= 500 && !err.retriable)
            __builtin_trap();
    }

    upm_k8s_watch_parser_init(&p, on_event, &seen);
    for (size_t off = 0; off < size - 2; off += chunk) {
        size_t n = size - 2 - off < chunk ? size - 2 - off : chunk;
        if (upm_k8s_watch_parser_feed(&p, body + off, n) != 0) {
            seen.done = true;
            break;
        }
    }
    if (upm_k8s_watch_parser_finish(&p) != 0)
        seen.done = true;
    if (!memchr(p.resource_version, '\0', sizeof(p.resource_version)))
        __builtin_trap();
    if (p.state < 0)
        check_text(p.err.message, sizeof(p.err.message));
    upm_k8s_watch_parser_free(&p);
    free(body);
    return 0;
}
