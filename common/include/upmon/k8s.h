/*
 * k8s — a small Kubernetes API client: credentials, JSON requests, list and
 * watch, and errors mapped to what a caller needs to decide.
 *
 * Credentials come from one of two places (upm_k8s_client_create):
 *   - a kubeconfig file (k8s.kubeconfig, else $KUBECONFIG, else
 *     ~/.kube/config, as kubectl chooses) (the subset local runs need: the current context's
 *     cluster server and certificate-authority(-data), and its user's token,
 *     or client-certificate(-data) + client-key(-data)); relative file paths
 *     are resolved against the kubeconfig's directory;
 *   - in-cluster: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT
 *     with the CA and token of the service-account mount (sa_dir). The token
 *     is re-read at least every token_reread_ms and after a 401, because the
 *     kubelet rotates projected tokens.
 *
 * Errors (struct upm_k8s_error). kind says what happened, retriable whether
 * the same request may succeed later:
 *   conflict (409)       not retriable as is: someone else wrote first; re-read
 *   not_found (404)      not retriable
 *   gone (410)           watch resourceVersion too old: relist
 *   unauthorized (401)   after one token re-read and retry (in-cluster only)
 *   forbidden (403)      not retriable; message names verb, resource, name and
 *                        namespace and carries the server's Status message
 *   throttled (429)      retriable after retry_after_ms (Retry-After header)
 *   server (5xx)         retriable
 *   timeout / transport  retriable (per-request timeout, connection failures)
 *   invalid / other      not retriable (4xx, unparsable JSON)
 *
 * Transport. All HTTP goes through struct upm_k8s_transport; the default is
 * libcurl (HTTPS with the configured CA, client certificate from memory).
 * Tests plug in a fake that answers from a script.
 *
 * Thread-safety: a client serves one thread at a time (it owns one curl
 * handle and the token cache). Use one client per thread.
 */
#ifndef UPMON_K8S_H
#define UPMON_K8S_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "upmon/buf.h"
#include "upmon/config.h"

/* The `k8s` configuration section. */
struct upm_k8s_config {
    char *kubeconfig;        /* path; "" = in-cluster */
    char *sa_dir;            /* service-account mount (token, ca.crt, namespace) */
    int64_t timeout_ms;      /* whole request (a watch: connection + first byte window) */
    int64_t token_reread_ms; /* in-cluster token cache lifetime */
};
extern const struct upm_config_key upm_k8s_config_keys[];
extern const size_t upm_k8s_config_nkeys;

/* Credentials: what a kubeconfig or the service-account mount yields. All
 * strings owned; free with upm_k8s_creds_free. */
struct upm_k8s_creds {
    char *server;        /* https://host:port, no trailing slash */
    struct upm_buf ca;   /* PEM; empty = system trust store */
    struct upm_buf cert; /* client certificate PEM; empty = none */
    struct upm_buf key;  /* client key PEM */
    char *token;         /* bearer token; NULL = none */
    char *token_path;    /* re-read from here (in-cluster); NULL = static token */
};
void upm_k8s_creds_free(struct upm_k8s_creds *c);

/*
 * Parse len bytes of kubeconfig YAML. base_dir resolves relative paths (NULL
 * = current directory; "" = file references are an error, for fuzzing);
 * files named by certificate-authority, client-certificate and client-key
 * are read. 0, or -1 with errstr (the out
 * struct then needs only upm_k8s_creds_free).
 */
int upm_k8s_kubeconfig_parse(const char *yaml, size_t len, const char *base_dir,
                             struct upm_k8s_creds *out, char *errstr, size_t errstr_size);
/* Same, from a file. */
int upm_k8s_kubeconfig_load(const char *path, struct upm_k8s_creds *out, char *errstr,
                            size_t errstr_size);
/* In-cluster credentials from the environment and sa_dir. 0 or -1 + errstr. */
int upm_k8s_incluster_load(const char *sa_dir, struct upm_k8s_creds *out, char *errstr,
                           size_t errstr_size);

/* Standard base64 (padding optional, whitespace ignored). 0 or -1. */
int upm_k8s_base64_decode(const char *in, size_t len, struct upm_buf *out);

enum upm_k8s_errkind {
    UPM_K8S_OK = 0,
    UPM_K8S_ERR_TRANSPORT,
    UPM_K8S_ERR_TIMEOUT,
    UPM_K8S_ERR_CONFLICT,
    UPM_K8S_ERR_NOT_FOUND,
    UPM_K8S_ERR_GONE,
    UPM_K8S_ERR_UNAUTHORIZED,
    UPM_K8S_ERR_FORBIDDEN,
    UPM_K8S_ERR_THROTTLED,
    UPM_K8S_ERR_SERVER,
    UPM_K8S_ERR_INVALID,
    UPM_K8S_ERR_OTHER,
};

struct upm_k8s_error {
    enum upm_k8s_errkind kind;
    int http_status; /* 0 when no response arrived */
    bool retriable;
    int64_t retry_after_ms; /* 429/503 Retry-After, else 0 */
    char reason[64];        /* Status.reason, e.g. "Conflict" */
    char message[512];      /* printable, never holds the token */
};
const char *upm_k8s_errkind_name(enum upm_k8s_errkind kind);

/* One exchange as a transport reports it. */
struct upm_k8s_response {
    int status;             /* HTTP status; 0 = none (see transport_error) */
    int64_t retry_after_ms; /* parsed Retry-After (seconds form), else 0 */
    bool timed_out;         /* transport error was a timeout */
    char transport_error[256];
};

/* Receives body bytes as they arrive; return non-zero to abort the transfer. */
typedef int (*upm_k8s_data_fn)(void *opaque, const char *data, size_t len);

struct upm_k8s_request {
    const char *method; /* GET POST PUT PATCH DELETE */
    const char *path;   /* absolute path with query, e.g. /api/v1/namespaces */
    const char *content_type;
    const char *body; /* NULL = none */
    size_t body_len;
    const char *token; /* bearer token or NULL */
    int64_t timeout_ms;
    upm_k8s_data_fn on_data; /* body sink */
    void *opaque;
};

/*
 * A transport performs one request. 0 when a response arrived (resp->status
 * set; body bytes went to req->on_data), -1 on a transport failure or
 * timeout (resp->transport_error, resp->timed_out). destroy may be NULL.
 */
struct upm_k8s_transport {
    int (*perform)(void *ctx, const struct upm_k8s_request *req, struct upm_k8s_response *resp);
    void (*destroy)(void *ctx);
    void *ctx;
};

struct upm_k8s_client;

/*
 * Create a client from cfg (kubeconfig, or in-cluster when cfg->kubeconfig
 * is empty). transport NULL = libcurl; otherwise it is copied and its
 * destroy called by upm_k8s_client_destroy (also on failure here). NULL
 * with errstr on a bad config or unreadable credentials.
 */
struct upm_k8s_client *upm_k8s_client_create(const struct upm_k8s_config *cfg,
                                             const struct upm_k8s_transport *transport,
                                             char *errstr, size_t errstr_size);
/*
 * The kubeconfig file create uses, as kubectl chooses it: cfg->kubeconfig
 * when set, else the first file of $KUBECONFIG, else ~/.kube/config when it
 * is readable. true with the path in out; false = in-cluster.
 */
bool upm_k8s_kubeconfig_path(const struct upm_k8s_config *cfg, char *out, size_t size);
/* Same with credentials already loaded; takes ownership of *creds (zeroed). */
struct upm_k8s_client *upm_k8s_client_create_creds(struct upm_k8s_creds *creds, int64_t timeout_ms,
                                                   int64_t token_reread_ms,
                                                   const struct upm_k8s_transport *transport,
                                                   char *errstr, size_t errstr_size);
/* NULL-safe. */
void upm_k8s_client_destroy(struct upm_k8s_client *client);
/* The API server URL (owned by the client). */
const char *upm_k8s_client_server(const struct upm_k8s_client *client);
/* Clock for the token cache (tests); NULL = upm_clock_mono_ns. */
void upm_k8s_client_set_clock(struct upm_k8s_client *client, int64_t (*mono_ns)(void *),
                              void *opaque);

/*
 * One JSON request. body may be NULL. timeout_ms <= 0 uses the client's.
 * On success (2xx) returns 0 and *out (if out != NULL) receives the parsed
 * body (caller frees with cJSON_Delete; NULL for an empty body). -1 with err
 * filled otherwise (*out NULL). err may not be NULL.
 */
int upm_k8s_request(struct upm_k8s_client *client, const char *method, const char *path,
                    const cJSON *body, int64_t timeout_ms, cJSON **out, struct upm_k8s_error *err);

/*
 * Map a finished exchange to err: status, the response body (a Status object
 * or anything else; may be NULL), the method and path it was for. Exposed
 * for tests and fuzzing. Returns 0 for 2xx, -1 otherwise.
 */
int upm_k8s_error_from_response(const struct upm_k8s_response *resp, const char *body,
                                size_t body_len, const char *method, const char *path,
                                struct upm_k8s_error *err);

/* ---- watch ------------------------------------------------------------ */

/* Called per watch event: type is ADDED, MODIFIED, DELETED or BOOKMARK (or
 * "SYNC" for each item of a (re)list in upm_k8s_list_watch). Return non-zero
 * to stop. object is borrowed for the call. */
typedef int (*upm_k8s_event_fn)(void *opaque, const char *type, const cJSON *object);

/*
 * The line parser behind watch: feed it body bytes; it splits JSON lines,
 * tracks the newest resourceVersion and calls fn per event. An ERROR event
 * carrying a Status is turned into an error (410 → UPM_K8S_ERR_GONE). Lines
 * over 16 MiB or unparsable are errors. 0 = keep going; 1 = fn asked to stop;
 * -1 = error in *err.
 */
struct upm_k8s_watch_parser {
    struct upm_buf line;
    char resource_version[128];
    upm_k8s_event_fn fn;
    void *opaque;
    struct upm_k8s_error err;
    int state; /* 0 ok, 1 stopped, -1 error */
};
void upm_k8s_watch_parser_init(struct upm_k8s_watch_parser *p, upm_k8s_event_fn fn, void *opaque);
int upm_k8s_watch_parser_feed(struct upm_k8s_watch_parser *p, const char *data, size_t len);
/* Call at end of stream: a final line without '\n' is processed. */
int upm_k8s_watch_parser_finish(struct upm_k8s_watch_parser *p);
void upm_k8s_watch_parser_free(struct upm_k8s_watch_parser *p);

/*
 * One watch request on a collection path (no query string) from
 * resource_version (in/out, size rv_size; updated as events arrive). The
 * server ends the stream after timeout_s. 0 when the stream ended normally
 * (watch again from *resource_version), 1 when fn asked to stop, -1 with err
 * (kind GONE: relist).
 */
int upm_k8s_watch(struct upm_k8s_client *client, const char *path, char *resource_version,
                  size_t rv_size, int timeout_s, upm_k8s_event_fn fn, void *opaque,
                  struct upm_k8s_error *err);

/*
 * List then watch until fn returns non-zero, *stop becomes non-zero or a
 * non-retriable error: each (re)list delivers every item as "SYNC", then
 * watch events follow; a 410 relists. Retriable errors back off (up to 5 s)
 * and resume. Returns 0 when stopped, -1 with err on a non-retriable error.
 */
int upm_k8s_list_watch(struct upm_k8s_client *client, const char *path, upm_k8s_event_fn fn,
                       void *opaque, const volatile int *stop, struct upm_k8s_error *err);

#endif
