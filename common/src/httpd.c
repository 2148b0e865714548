#include "upmon/httpd.h"

#include "upmon/alloc.h"
#include "upmon/buf.h"
#include "upmon/log.h"

#include <libwebsockets.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Bytes per lws_write: big enough to be cheap, small enough that one slow
 * client holding a megabyte rendering does not stall the other connections
 * served by the same thread. */
#define CHUNK      (32 * 1024)
#define REASON_MAX 200
#define CT_METRICS "text/plain; version=0.0.4; charset=utf-8"
#define CT_TEXT    "text/plain; charset=utf-8"
/* What a live client may send before it is closed: nothing is expected, so a small receive
 * buffer bounds what one frame can make us hold. */
#define LIVE_RX   256
#define LIVE_PATH "/live"

const struct upm_config_key upm_httpd_config_keys[] = {
    {.name = "bind",
     .type = UPM_CFG_STRING,
     .offset = offsetof(struct upm_httpd_config, bind),
     .def = "0.0.0.0",
     .min = 1,
     .max = 0,
     .description = "Address the HTTP server for /metrics, /healthz and /readyz listens on."},
    {.name = "port",
     .type = UPM_CFG_INT,
     .offset = offsetof(struct upm_httpd_config, port),
     .def = "8080",
     .min = 0,
     .max = 65535,
     .description = "TCP port of the HTTP server (0 picks a free port)."},
};
const size_t upm_httpd_config_nkeys =
    sizeof(upm_httpd_config_keys) / sizeof(upm_httpd_config_keys[0]);

struct upm_httpd {
    char *bind;
    int port; /* configured */
    struct upm_prom_registry *reg;
    struct upm_prom_metric *requests;

    pthread_mutex_t ready_lock; /* guards ready and reason */
    bool ready;
    char reason[REASON_MAX + 1];

    /* Control-thread state (start/stop/destroy). */
    struct lws_context *ctx;
    struct lws_vhost *vhost;
    pthread_t thread;
    bool running;
    struct lws_protocols protocols[3]; /* lws keeps a pointer: lives with us */

    /* Static files, set before start and read-only after. */
    struct {
        char *path, *ctype;
        const void *data;
        size_t len;
    } statics[UPM_HTTPD_MAX_STATIC];
    size_t nstatic;

    /* The live channel. */
    bool live;
    int live_max;
    struct upm_prom_metric *live_clients_m, *live_msgs_m, *live_refused_m;
    pthread_mutex_t live_lock; /* guards the fields below */
    uint64_t live_seq;         /* publishes so far */
    char *live_snap, *live_upd;
    size_t live_snap_len, live_upd_len;
    struct lws_context *live_ctx; /* to wake the service thread; NULL when stopped */
    atomic_int live_pending;      /* a publish the service thread has not broadcast yet */
    atomic_int live_nclients;

    atomic_int stop;
    atomic_int bound_port;

    /* Service-thread only: lws_write needs LWS_PRE writable bytes before
     * the payload, so each chunk is staged here. */
    unsigned char wbuf[LWS_PRE + CHUNK];
};

/* Per connection, zeroed by lws. */
struct session {
    char *body; /* response body being sent; owned */
    size_t len, off;
    bool close_after; /* close instead of waiting for the next request */
};

/* Per live connection, zeroed by lws. */
struct live_session {
    uint64_t sent; /* the publish this client has; 0 = none yet */
    bool counted;  /* in live_nclients (established, not yet closed) */
    unsigned char *out;
    size_t cap;
};

/* ---- lws logs ------------------------------------------------------------------------------- */

static void lws_log_emit(int level, const char *line)
{
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    enum upm_log_level ours = UPM_LOG_DEBUG;
    if (level & LLL_ERR)
        ours = UPM_LOG_ERROR;
    else if (level & LLL_WARN)
        ours = UPM_LOG_WARN;
    UPM_LOG(ours, "lws", "%.*s", (int)n, line);
}

static void lws_log_route(void)
{
    /* lws is chatty at notice (banner, vhost set-up) and below: those are
     * our debug, so they are only enabled when we log at debug. */
    int mask = LLL_ERR | LLL_WARN;
    if (upm_log_threshold <= UPM_LOG_DEBUG)
        mask |= LLL_NOTICE | LLL_INFO;
    lws_set_log_level(mask, lws_log_emit);
}

/* ---- requests ------------------------------------------------------------------------------- */

static void session_reset(struct session *ss)
{
    free(ss->body);
    ss->body = NULL;
    ss->len = ss->off = 0;
    ss->close_after = false;
}

static void count_request(struct upm_httpd *h, const char *path, unsigned code)
{
    char code_s[8];
    snprintf(code_s, sizeof(code_s), "%u", code);
    upm_prom_inc(upm_prom_series_get(h->requests, (const char *const[]){path, code_s}), 1);
}

/* Decide the response and build its body (rendered now, at request time). */
static unsigned route(struct upm_httpd *h, int method, const char *uri, const char **ctype,
                      struct upm_buf *body, bool *allow_header)
{
    const char *path = "other";
    if (strcmp(uri, "/metrics") == 0 || strcmp(uri, "/healthz") == 0 || strcmp(uri, "/readyz") == 0)
        path = uri;
    else if (h->live && strcmp(uri, LIVE_PATH) == 0)
        path = LIVE_PATH;
    /* upm_httpd_add_static refuses the built-in paths, so a match here is the only one. */
    size_t st = 0;
    while (st < h->nstatic && strcmp(uri, h->statics[st].path) != 0)
        st++;
    if (st < h->nstatic)
        path = h->statics[st].path;
    unsigned code;
    bool metrics = false;
    *ctype = CT_TEXT;
    *allow_header = false;
    if (method != LWSHUMETH_GET && method != LWSHUMETH_HEAD) {
        code = HTTP_STATUS_METHOD_NOT_ALLOWED;
        *allow_header = true;
        upm_buf_puts(body, "method not allowed");
    } else if (strcmp(path, "/metrics") == 0) {
        code = HTTP_STATUS_OK;
        *ctype = CT_METRICS;
        metrics = true;
    } else if (st < h->nstatic) {
        code = HTTP_STATUS_OK;
        *ctype = h->statics[st].ctype;
        upm_buf_append(body, h->statics[st].data, h->statics[st].len);
    } else if (strcmp(path, LIVE_PATH) == 0) {
        code = HTTP_STATUS_BAD_REQUEST;
        upm_buf_puts(body, "WebSocket only, with the subprotocol upmon-live");
    } else if (strcmp(path, "/healthz") == 0) {
        code = HTTP_STATUS_OK;
        upm_buf_puts(body, "ok");
    } else if (strcmp(path, "/readyz") == 0) {
        pthread_mutex_lock(&h->ready_lock);
        code = h->ready ? HTTP_STATUS_OK : HTTP_STATUS_SERVICE_UNAVAILABLE;
        if (h->ready)
            upm_buf_puts(body, "ready");
        else
            upm_buf_printf(body, "not ready: %s", h->reason);
        pthread_mutex_unlock(&h->ready_lock);
    } else {
        code = HTTP_STATUS_NOT_FOUND;
        upm_buf_puts(body, "not found");
    }
    /* Counted before rendering so that /metrics includes this request and
     * a scrape's body matches the registry as it stands afterwards. */
    count_request(h, path, code);
    if (metrics)
        upm_prom_render(h->reg, body);
    return code;
}

static int on_http(struct upm_httpd *h, struct lws *wsi, struct session *ss, const char *uri)
{
    char *uri_ptr = NULL;
    int uri_len = 0;
    int method = lws_http_get_uri_and_method(wsi, &uri_ptr, &uri_len);
    session_reset(ss);

    struct upm_buf body;
    upm_buf_init(&body, 0);
    const char *ctype;
    bool allow;
    unsigned code = route(h, method, uri ? uri : "", &ctype, &body, &allow);
    ss->body = upm_buf_steal(&body, &ss->len);
    ss->off = 0;
    bool head = method == LWSHUMETH_HEAD;
    bool close_after = code == HTTP_STATUS_METHOD_NOT_ALLOWED;

    unsigned char hdr[LWS_PRE + 512];
    unsigned char *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof(hdr) - 1;
    if (lws_add_http_common_headers(wsi, code, ctype, ss->len, &p, end))
        return -1;
    if (allow && lws_add_http_header_by_name(wsi, (const unsigned char *)"allow:",
                                             (const unsigned char *)"GET, HEAD", 9, &p, end))
        return -1;
    /* A request with a method we refuse may carry a body we never read:
     * close rather than parse that body as the next request. */
    if (close_after && lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION,
                                                    (const unsigned char *)"close", 5, &p, end))
        return -1;
    if (lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    if (head || ss->len == 0) {
        session_reset(ss);
        if (close_after)
            return -1;
        return lws_http_transaction_completed(wsi) ? -1 : 0;
    }
    ss->close_after = close_after;
    lws_callback_on_writable(wsi);
    return 0;
}

static int on_writeable(struct upm_httpd *h, struct lws *wsi, struct session *ss)
{
    if (!ss->body)
        return 0;
    size_t n = ss->len - ss->off;
    if (n > CHUNK)
        n = CHUNK;
    bool last = ss->off + n == ss->len;
    memcpy(h->wbuf + LWS_PRE, ss->body + ss->off, n);
    if (lws_write(wsi, h->wbuf + LWS_PRE, n, last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) !=
        (int)n)
        return -1;
    ss->off += n;
    if (!last) {
        lws_callback_on_writable(wsi);
        return 0;
    }
    bool close_after = ss->close_after;
    session_reset(ss);
    if (close_after)
        return -1;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

static int http_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                         size_t len)
{
    struct session *ss = user;
    struct lws_context *ctx = lws_get_context(wsi);
    struct upm_httpd *h = ctx ? lws_context_user(ctx) : NULL;

    switch (reason) {
    case LWS_CALLBACK_HTTP:
        return (h && ss) ? on_http(h, wsi, ss, in) : -1;
    case LWS_CALLBACK_HTTP_WRITEABLE:
        return (h && ss) ? on_writeable(h, wsi, ss) : 0;
    case LWS_CALLBACK_HTTP_BODY:
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        /* Only refused methods carry a body, and their 405 is already on
         * its way with connection: close. lws' default handler would end
         * the transaction here and cut that response short. */
        return 0;
    case LWS_CALLBACK_CLOSED_HTTP:
        if (ss)
            session_reset(ss);
        return 0;
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        /* A WebSocket upgrade that named no subprotocol lands here: refuse it. */
        if (h && h->live)
            upm_prom_inc(upm_prom_series_get(h->live_refused_m, (const char *const[]){"protocol"}),
                         1);
        return 1;
    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}

/* ---- the live channel ----------------------------------------------------------------------- */

static void live_refused(struct upm_httpd *h, const char *why)
{
    upm_prom_inc(upm_prom_series_get(h->live_refused_m, (const char *const[]){why}), 1);
}

/* Send what this client lacks: the latest snapshot, or the one update that follows its own. */
static int live_write(struct upm_httpd *h, struct lws *wsi, struct live_session *ls)
{
    pthread_mutex_lock(&h->live_lock);
    uint64_t seq = h->live_seq;
    if (seq == 0 || seq == ls->sent) {
        pthread_mutex_unlock(&h->live_lock);
        return 0;
    }
    bool update = ls->sent != 0 && seq == ls->sent + 1 && h->live_upd;
    const char *msg = update ? h->live_upd : h->live_snap;
    size_t n = update ? h->live_upd_len : h->live_snap_len;
    if (ls->cap < LWS_PRE + n) {
        free(ls->out);
        ls->cap = LWS_PRE + n;
        ls->out = upm_malloc(ls->cap);
    }
    memcpy(ls->out + LWS_PRE, msg, n);
    ls->sent = seq;
    pthread_mutex_unlock(&h->live_lock);
    /* lws keeps what the socket does not take now and finishes it before the next
     * writeable callback, so one write per message is enough. */
    if (lws_write(wsi, ls->out + LWS_PRE, n, LWS_WRITE_TEXT) < (int)n)
        return -1;
    upm_prom_inc(
        upm_prom_series_get(h->live_msgs_m, (const char *const[]){update ? "update" : "snapshot"}),
        1);
    pthread_mutex_lock(&h->live_lock);
    bool more = h->live_seq != ls->sent;
    pthread_mutex_unlock(&h->live_lock);
    if (more)
        lws_callback_on_writable(wsi);
    return 0;
}

static int live_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                         size_t len)
{
    (void)in;
    (void)len;
    struct live_session *ls = user;
    struct lws_context *ctx = lws_get_context(wsi);
    struct upm_httpd *h = ctx ? lws_context_user(ctx) : NULL;
    if (!h || !h->live)
        return reason == LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION ? 1 : 0;

    switch (reason) {
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: {
        char uri[64];
        if (lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI) < 0 ||
            strcmp(uri, LIVE_PATH) != 0) {
            live_refused(h, "path");
            return 1;
        }
        if (atomic_load(&h->live_nclients) >= h->live_max) {
            live_refused(h, "full");
            return 1;
        }
        return 0;
    }
    case LWS_CALLBACK_ESTABLISHED:
        if (!ls)
            return -1;
        ls->sent = 0;
        ls->counted = true;
        upm_prom_set(upm_prom_series_get(h->live_clients_m, NULL),
                     atomic_fetch_add(&h->live_nclients, 1) + 1);
        lws_callback_on_writable(wsi);
        return 0;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return ls ? live_write(h, wsi, ls) : -1;
    case LWS_CALLBACK_RECEIVE:
        /* Push only: anything a client sends is refused, and the client with it. */
        live_refused(h, "input");
        lws_close_reason(wsi, LWS_CLOSE_STATUS_POLICY_VIOLATION, (unsigned char *)"push only", 9);
        return -1;
    case LWS_CALLBACK_CLOSED:
    case LWS_CALLBACK_WSI_DESTROY:
        /* Not every way a connection ends reports CLOSED (a close lws starts itself after
         * our -1, the context going away); every one reports WSI_DESTROY. Once each. */
        if (ls && ls->counted) {
            ls->counted = false;
            upm_prom_set(upm_prom_series_get(h->live_clients_m, NULL),
                         atomic_fetch_sub(&h->live_nclients, 1) - 1);
        }
        if (ls) {
            free(ls->out);
            ls->out = NULL;
            ls->cap = 0;
        }
        return 0;
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        if (atomic_exchange(&h->live_pending, 0)) {
            /* The vhost holds its own copy of the protocols: name ours through it. */
            struct lws_vhost *vh = lws_get_vhost(wsi);
            const struct lws_protocols *pr =
                vh ? lws_vhost_name_to_protocol(vh, "upmon-live") : NULL;
            if (pr)
                lws_callback_on_writable_all_protocol_vhost(vh, pr);
        }
        return 0;
    default:
        return 0;
    }
}

int upm_httpd_add_static(struct upm_httpd *h, const char *path, const char *content_type,
                         const void *data, size_t len, char *errstr, size_t errstr_size)
{
    if (!h || h->running) {
        snprintf(errstr, errstr_size, "http: static files are added before the server starts");
        return -1;
    }
    if (!path || path[0] != '/' || strlen(path) > 128 || !content_type || (!data && len)) {
        snprintf(errstr, errstr_size,
                 "http: a static file needs a path starting with '/' "
                 "(at most 128 bytes), a content type and its bytes");
        return -1;
    }
    if (strcmp(path, "/metrics") == 0 || strcmp(path, "/healthz") == 0 ||
        strcmp(path, "/readyz") == 0 || strcmp(path, LIVE_PATH) == 0) {
        snprintf(errstr, errstr_size, "http: %s is a built-in path", path);
        return -1;
    }
    for (size_t i = 0; i < h->nstatic; i++) {
        if (strcmp(h->statics[i].path, path) == 0) {
            snprintf(errstr, errstr_size, "http: %s is already served", path);
            return -1;
        }
    }
    if (h->nstatic == UPM_HTTPD_MAX_STATIC) {
        snprintf(errstr, errstr_size, "http: at most %d static files", UPM_HTTPD_MAX_STATIC);
        return -1;
    }
    h->statics[h->nstatic].path = upm_strdup(path);
    h->statics[h->nstatic].ctype = upm_strdup(content_type);
    h->statics[h->nstatic].data = data;
    h->statics[h->nstatic].len = len;
    h->nstatic++;
    return 0;
}

int upm_httpd_enable_live(struct upm_httpd *h, int max_clients, char *errstr, size_t errstr_size)
{
    if (!h || h->running) {
        snprintf(errstr, errstr_size, "http: the live channel is enabled before the server starts");
        return -1;
    }
    if (max_clients < 1 || max_clients > 10000) {
        snprintf(errstr, errstr_size, "http: live clients must be 1..10000, not %d", max_clients);
        return -1;
    }
    if (h->live) {
        h->live_max = max_clients;
        return 0;
    }
    h->live_clients_m =
        upm_prom_gauge(h->reg, "upmon_http_live_clients",
                       "WebSocket clients of the live page connected now.", 0, NULL);
    h->live_msgs_m = upm_prom_counter(h->reg, "upmon_http_live_messages_total",
                                      "Messages pushed to live clients, by kind (snapshot: the "
                                      "whole state; update: one cycle's change).",
                                      1, (const char *const[]){"kind"});
    h->live_refused_m = upm_prom_counter(
        h->reg, "upmon_http_live_refused_total",
        "Live connections refused or closed, by reason (path, protocol, full, input).", 1,
        (const char *const[]){"reason"});
    if (!h->live_clients_m || !h->live_msgs_m || !h->live_refused_m) {
        snprintf(errstr, errstr_size, "http: the live metrics are registered with another shape");
        return -1;
    }
    h->live = true;
    h->live_max = max_clients;
    return 0;
}

static char *dup_bytes(const char *p, size_t n)
{
    char *out = upm_malloc(n + 1);
    memcpy(out, p, n);
    out[n] = 0;
    return out;
}

void upm_httpd_live_publish(struct upm_httpd *h, const char *snapshot, size_t snapshot_len,
                            const char *update, size_t update_len)
{
    if (!h || !h->live || !snapshot)
        return;
    char *snap = dup_bytes(snapshot, snapshot_len);
    char *upd = update ? dup_bytes(update, update_len) : NULL;
    pthread_mutex_lock(&h->live_lock);
    free(h->live_snap);
    free(h->live_upd);
    h->live_snap = snap;
    h->live_snap_len = snapshot_len;
    h->live_upd = upd;
    h->live_upd_len = upd ? update_len : 0;
    h->live_seq++;
    atomic_store(&h->live_pending, 1);
    if (h->live_ctx)
        lws_cancel_service(h->live_ctx);
    pthread_mutex_unlock(&h->live_lock);
}

int upm_httpd_live_clients(const struct upm_httpd *h)
{
    return h ? atomic_load(&((struct upm_httpd *)h)->live_nclients) : 0;
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

/* bind(2), out of the way of the `bind` parameter names used for the
 * address text below. */
static int bind_addr(int fd, const struct sockaddr_storage *ss, socklen_t sl)
{
    return bind(fd, (const struct sockaddr *)ss, sl);
}

struct upm_httpd *upm_httpd_create(const struct upm_httpd_config *cfg,
                                   struct upm_prom_registry *reg, char *errstr, size_t errstr_size)
{
    if (!cfg || !reg) {
        snprintf(errstr, errstr_size, "http: configuration and registry are required");
        return NULL;
    }
    if (!cfg->bind || !cfg->bind[0]) {
        snprintf(errstr, errstr_size, "http.bind: must not be empty");
        return NULL;
    }
    struct in6_addr addr;
    if (inet_pton(AF_INET, cfg->bind, &addr) != 1 && inet_pton(AF_INET6, cfg->bind, &addr) != 1) {
        snprintf(errstr, errstr_size, "http.bind: \"%s\" is not an IPv4 or IPv6 address",
                 cfg->bind);
        return NULL;
    }
    if (cfg->port < 0 || cfg->port > 65535) {
        snprintf(errstr, errstr_size, "http.port: %lld is outside 0..65535", (long long)cfg->port);
        return NULL;
    }
    struct upm_prom_metric *requests =
        upm_prom_counter(reg, "upmon_http_requests_total",
                         "HTTP requests served, by path (known paths or other) and status code.", 2,
                         (const char *const[]){"path", "code"});
    if (!requests) {
        snprintf(errstr, errstr_size,
                 "http: upmon_http_requests_total is registered with another shape");
        return NULL;
    }

    struct upm_httpd *h = upm_calloc(1, sizeof(*h));
    h->bind = upm_strdup(cfg->bind);
    h->port = (int)cfg->port;
    h->reg = reg;
    h->requests = requests;
    pthread_mutex_init(&h->ready_lock, NULL);
    snprintf(h->reason, sizeof(h->reason), "starting");
    atomic_init(&h->stop, 0);
    atomic_init(&h->bound_port, 0);
    h->protocols[0] = (struct lws_protocols){
        .name = "http",
        .callback = http_callback,
        .per_session_data_size = sizeof(struct session),
    };
    h->protocols[1] = (struct lws_protocols){
        .name = "upmon-live",
        .callback = live_callback,
        .per_session_data_size = sizeof(struct live_session),
        .rx_buffer_size = LIVE_RX,
    };
    pthread_mutex_init(&h->live_lock, NULL);
    atomic_init(&h->live_pending, 0);
    atomic_init(&h->live_nclients, 0);
    return h;
}

/*
 * Try the address first: lws treats an address that is not (yet) local as
 * an interface that may come up later and retries in the background, which
 * would leave a "started" server listening nowhere. A plain bind reports
 * that, and a port in use, with the system's reason. The socket is closed
 * at once; lws then binds for real (and a lost race still fails there).
 */
static int probe_bind(const char *bind, int port, char *errstr, size_t errstr_size)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, bind, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        sl = sizeof(*s4);
    } else if (inet_pton(AF_INET6, bind, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        sl = sizeof(*s6);
    } else {
        snprintf(errstr, errstr_size, "http: cannot listen on %s port %d: not an address", bind,
                 port);
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(errstr, errstr_size, "http: cannot listen on %s port %d: %s", bind, port,
                 strerror(errno));
        return -1;
    }
    /* As lws does: a port left in TIME_WAIT by a previous run is free. */
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    int rc = 0;
    if (bind_addr(fd, &ss, sl) != 0) {
        snprintf(errstr, errstr_size, "http: cannot listen on %s port %d: %s", bind, port,
                 strerror(errno));
        rc = -1;
    }
    close(fd);
    return rc;
}

static void *service_main(void *arg)
{
    struct upm_httpd *h = arg;
    /* lws_service returns after each poll round; lws_cancel_service from
     * upm_httpd_stop ends the current round at once. */
    while (!atomic_load(&h->stop)) {
        if (lws_service(h->ctx, 0) < 0)
            break;
    }
    return NULL;
}

int upm_httpd_start(struct upm_httpd *h, char *errstr, size_t errstr_size)
{
    if (!h || h->running) {
        snprintf(errstr, errstr_size, "http: server already running");
        return -1;
    }
    lws_log_route();
    if (probe_bind(h->bind, h->port, errstr, errstr_size) != 0)
        return -1;

    bool all_v4 = strcmp(h->bind, "0.0.0.0") == 0;
    bool all_v6 = strcmp(h->bind, "::") == 0;
    bool v4 = strchr(h->bind, ':') == NULL;

    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.gid = -1;
    info.uid = -1;
    info.user = h;
    h->ctx = lws_create_context(&info);
    if (!h->ctx) {
        snprintf(errstr, errstr_size, "http: cannot create the libwebsockets context");
        return -1;
    }

    memset(&info, 0, sizeof(info));
    info.vhost_name = "upmon";
    info.port = h->port;
    /* lws takes NULL as "every address"; an IPv4 address keeps lws from
     * opening an IPv6 socket it would then try to bind to it. */
    info.iface = (all_v4 || all_v6) ? NULL : h->bind;
    info.options = v4 ? LWS_SERVER_OPTION_DISABLE_IPV6 : 0;
    info.protocols = h->protocols;
    info.gid = -1;
    info.uid = -1;
    h->vhost = lws_create_vhost(h->ctx, &info);
    if (!h->vhost) {
        snprintf(errstr, errstr_size,
                 "http: cannot listen on %s port %d (port in use or address not available)",
                 h->bind, h->port);
        goto fail;
    }
    atomic_store(&h->bound_port, lws_get_vhost_listen_port(h->vhost));
    atomic_store(&h->stop, 0);
    if (pthread_create(&h->thread, NULL, service_main, h) != 0) {
        snprintf(errstr, errstr_size, "http: cannot start the service thread");
        goto fail;
    }
    h->running = true;
    pthread_mutex_lock(&h->live_lock);
    h->live_ctx = h->ctx;
    pthread_mutex_unlock(&h->live_lock);
    upm_log_info("httpd", "listening | bind=%s port=%d", h->bind, atomic_load(&h->bound_port));
    return 0;
fail:
    lws_context_destroy(h->ctx);
    h->ctx = NULL;
    h->vhost = NULL;
    atomic_store(&h->bound_port, 0);
    return -1;
}

void upm_httpd_stop(struct upm_httpd *h)
{
    if (!h || !h->running)
        return;
    pthread_mutex_lock(&h->live_lock);
    h->live_ctx = NULL;
    pthread_mutex_unlock(&h->live_lock);
    atomic_store(&h->stop, 1);
    lws_cancel_service(h->ctx);
    pthread_join(h->thread, NULL);
    /* The service thread is gone, so destroying here is race-free; it
     * closes every connection (freeing their sessions) and the listener. */
    lws_context_destroy(h->ctx);
    h->ctx = NULL;
    h->vhost = NULL;
    h->running = false;
    atomic_store(&h->bound_port, 0);
    upm_log_info("httpd", "stopped | bind=%s", h->bind);
}

void upm_httpd_destroy(struct upm_httpd *h)
{
    if (!h)
        return;
    upm_httpd_stop(h);
    pthread_mutex_destroy(&h->ready_lock);
    pthread_mutex_destroy(&h->live_lock);
    free(h->live_snap);
    free(h->live_upd);
    for (size_t i = 0; i < h->nstatic; i++) {
        free(h->statics[i].path);
        free(h->statics[i].ctype);
    }
    free(h->bind);
    free(h);
}

int upm_httpd_port(const struct upm_httpd *h)
{
    return h ? atomic_load(&((struct upm_httpd *)h)->bound_port) : 0;
}

void upm_httpd_set_ready(struct upm_httpd *h, bool ready, const char *reason)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->ready_lock);
    h->ready = ready;
    snprintf(h->reason, sizeof(h->reason), "%s", reason ? reason : "");
    pthread_mutex_unlock(&h->ready_lock);
}
