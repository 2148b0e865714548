/*
 * httpd — the small HTTP server every upmon service runs for its probes and
 * metrics (libwebsockets, plain HTTP, one service thread).
 *
 *   GET /metrics  200 text/plain; version=0.0.4 — the registry, rendered per request
 *   GET /healthz  200 "ok" while the process is alive
 *   GET /readyz   200 "ready", or 503 "not ready: <reason>" (upm_httpd_set_ready)
 *   GET <static>  the bytes registered with upm_httpd_add_static (a page and its assets)
 *   GET /live     a WebSocket, subprotocol "upmon-live", push only, once upm_httpd_enable_live
 *   other paths   404;  methods other than GET/HEAD: 405 (HEAD: headers only)
 *
 * Each request is counted into the registry as
 * upmon_http_requests_total{path,code}, path being one of the three above or
 * "other" so that scanners cannot blow up the label cardinality. A request
 * is counted before its body is rendered, so a /metrics response includes
 * itself.
 *
 * Lifecycle: create (validates the config, registers the counter) → start
 * (binds and spawns the service thread) → stop (bounded: wakes the loop,
 * joins the thread, closes every connection) → destroy. start after stop
 * binds again. Control calls (start, stop, destroy) belong to one thread;
 * upm_httpd_set_ready and upm_httpd_port may be called from any thread.
 *
 * libwebsockets' own log lines are routed into upm_log (mod=lws): errors and
 * warnings always, its notices and info only when upm_log is at debug. That
 * routing is process-wide, as lws logging is.
 */
#ifndef UPMON_HTTPD_H
#define UPMON_HTTPD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "upmon/config.h"
#include "upmon/prom.h"

/* The `http` section of a service's configuration. */
struct upm_httpd_config {
    char *bind;   /* IPv4/IPv6 address to listen on; "0.0.0.0" = all IPv4 */
    int64_t port; /* 0 = an ephemeral port (tests); see upm_httpd_port */
};

/* Key table for config.h: { "http", upm_httpd_config_keys, upm_httpd_config_nkeys, &cfg }. */
extern const struct upm_config_key upm_httpd_config_keys[];
extern const size_t upm_httpd_config_nkeys;

struct upm_httpd;

/*
 * Create a stopped server. cfg is copied (the caller keeps ownership); reg is
 * borrowed and must outlive the server; it may not be NULL. Starts not ready
 * with reason "starting". NULL with a message in errstr on a bad config
 * (empty bind address, port outside 0..65535).
 */
struct upm_httpd *upm_httpd_create(const struct upm_httpd_config *cfg,
                                   struct upm_prom_registry *reg, char *errstr, size_t errstr_size);

/*
 * Bind and start serving on the service thread. 0, or -1 with errstr naming
 * the address and port (e.g. the port is in use) and the server still
 * stopped. -1 as well if it is already running.
 */
int upm_httpd_start(struct upm_httpd *h, char *errstr, size_t errstr_size);

/*
 * Stop serving: wake the loop, join the service thread, close every
 * connection and the listening socket. Returns within about a second even
 * with clients connected. Safe to call when stopped and to call twice.
 */
void upm_httpd_stop(struct upm_httpd *h);

/* Stop if needed, then free. NULL-safe. */
void upm_httpd_destroy(struct upm_httpd *h);

/* At most this many static paths per server. */
#define UPM_HTTPD_MAX_STATIC 16

/*
 * Serve `data` (len bytes, borrowed: it must outlive the server, e.g. compiled into the
 * binary) at `path` (starting with '/', not one of the built-in paths) with `content_type`,
 * for GET and HEAD. Counted in upmon_http_requests_total under its own path. Before
 * upm_httpd_start only. 0, or -1 with errstr (running, bad path, path taken, table full).
 */
int upm_httpd_add_static(struct upm_httpd *h, const char *path, const char *content_type,
                         const void *data, size_t len, char *errstr, size_t errstr_size);

/*
 * Open the live channel: a WebSocket at /live with the subprotocol "upmon-live", through
 * which the service pushes its state (the analyzer's page). Push only: a client that sends a
 * message is closed with status 1008, and so is one whose frames would exceed the small
 * receive buffer. At most max_clients at once; more, a wrong path or no subprotocol are
 * refused at the handshake. Registers upmon_http_live_clients,
 * upmon_http_live_messages_total{kind} and upmon_http_live_refused_total{reason}. Before
 * upm_httpd_start only. 0, or -1 with errstr.
 */
int upm_httpd_enable_live(struct upm_httpd *h, int max_clients, char *errstr, size_t errstr_size);

/*
 * Publish the live state, from any thread: `snapshot` is what a client receives first (and
 * whenever it has fallen behind), `update` what every connected client receives now (NULL:
 * the snapshot). Both are copied; the service thread is woken and sends them. Each client
 * sees a consistent sequence: its snapshot, then every later update in order, or a fresh
 * snapshot when it missed one. No-op when the live channel is not enabled.
 */
void upm_httpd_live_publish(struct upm_httpd *h, const char *snapshot, size_t snapshot_len,
                            const char *update, size_t update_len);

/* Live clients connected now (0 when not enabled). */
int upm_httpd_live_clients(const struct upm_httpd *h);

/* The port actually bound (useful with port 0), or 0 when not running. */
int upm_httpd_port(const struct upm_httpd *h);

/*
 * Set readiness as /readyz reports it. reason (may be NULL) is copied and
 * only shown while not ready; long reasons are truncated to 200 bytes.
 * Thread-safe.
 */
void upm_httpd_set_ready(struct upm_httpd *h, bool ready, const char *reason);

#endif
