#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "upmon/buf.h"
#include "upmon/clock.h"
#include "upmon/httpd.h"
#include "upmon/log.h"
#include "upmon/prom.h"

#define L(...) ((const char *const[]){__VA_ARGS__})

/* ---- fixture -------------------------------------------------------------------------------- */

struct fixture {
    struct upm_prom_registry *reg;
    struct upm_httpd *h;
    int port;
};

static char *log_text;
static size_t log_len;
static FILE *log_sink;

static struct upm_httpd *start_server(struct upm_prom_registry *reg, const char *bind, int port)
{
    char err[256] = "";
    struct upm_httpd_config cfg = {.bind = (char *)bind, .port = port};
    struct upm_httpd *h = upm_httpd_create(&cfg, reg, err, sizeof(err));
    if (!h)
        fail_msg("create: %s", err);
    if (upm_httpd_start(h, err, sizeof(err)) != 0) {
        upm_httpd_destroy(h);
        fail_msg("start: %s", err);
    }
    return h;
}

static int setup(void **state)
{
    log_sink = open_memstream(&log_text, &log_len);
    upm_log_set_sink(log_sink);
    struct fixture *f = calloc(1, sizeof(*f));
    f->reg = upm_prom_registry_create();
    f->h = start_server(f->reg, "127.0.0.1", 0);
    f->port = upm_httpd_port(f->h);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    upm_httpd_destroy(f->h);
    upm_prom_registry_destroy(f->reg);
    free(f);
    upm_log_set_sink(NULL);
    fclose(log_sink);
    free(log_text);
    log_text = NULL;
    return 0;
}

static const char *logged(void)
{
    fflush(log_sink);
    return log_text ? log_text : "";
}

/* ---- client --------------------------------------------------------------------------------- */

struct resp {
    long code;
    struct upm_buf body;
    char ctype[128];
    char allow[64];
    long long content_length;
};

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    struct resp *r = arg;
    if (upm_buf_append(&r->body, data, size * n) != 0)
        return 0;
    return size * n;
}

static void header_value(const char *line, size_t n, const char *name, char *out, size_t size)
{
    size_t nl = strlen(name);
    if (n <= nl || strncasecmp(line, name, nl) != 0)
        return;
    const char *v = line + nl;
    size_t vn = n - nl;
    while (vn && (*v == ' '))
        v++, vn--;
    while (vn && (v[vn - 1] == '\r' || v[vn - 1] == '\n'))
        vn--;
    snprintf(out, size, "%.*s", (int)vn, v);
}

static size_t on_header(char *data, size_t size, size_t n, void *arg)
{
    struct resp *r = arg;
    char cl[32] = "";
    header_value(data, size * n, "content-type:", r->ctype, sizeof(r->ctype));
    header_value(data, size * n, "allow:", r->allow, sizeof(r->allow));
    header_value(data, size * n, "content-length:", cl, sizeof(cl));
    if (cl[0])
        r->content_length = strtoll(cl, NULL, 10);
    return size * n;
}

/* One request on handle c (reused by callers that want keep-alive). */
static CURLcode request_on(CURL *c, int port, const char *method, const char *path, struct resp *r)
{
    char url[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    memset(r, 0, sizeof(*r));
    r->content_length = -1;
    upm_buf_init(&r->body, 0);
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 20000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, "a=1&b=2");
    } else if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    }
    CURLcode rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->code);
    return rc;
}

static void request(int port, const char *method, const char *path, struct resp *r)
{
    CURL *c = curl_easy_init();
    assert_non_null(c);
    CURLcode rc = request_on(c, port, method, path, r);
    curl_easy_cleanup(c);
    if (rc != CURLE_OK)
        fail_msg("%s %s: %s", method, path, curl_easy_strerror(rc));
}

static const char *body_of(const struct resp *r)
{
    return r->body.data ? r->body.data : "";
}

static char *render(struct upm_prom_registry *reg)
{
    struct upm_buf b;
    upm_buf_init(&b, 0);
    assert_int_equal(upm_prom_render(reg, &b), 0);
    return upm_buf_steal(&b, NULL);
}

static double requests_counted(struct upm_prom_registry *reg, const char *path, const char *code)
{
    struct upm_prom_metric *m =
        upm_prom_counter(reg, "upmon_http_requests_total", NULL, 2, L("path", "code"));
    assert_non_null(m);
    return upm_prom_value(upm_prom_series_get(m, L(path, code)));
}

/* ---- tests ---------------------------------------------------------------------------------- */

static void test_config_table(void **state)
{
    assert_int_equal(upm_httpd_config_nkeys, 2);
    const struct upm_config_key *bind = &upm_httpd_config_keys[0];
    const struct upm_config_key *port = &upm_httpd_config_keys[1];
    assert_string_equal(bind->name, "bind");
    assert_int_equal(bind->type, UPM_CFG_STRING);
    assert_int_equal(bind->offset, offsetof(struct upm_httpd_config, bind));
    assert_string_equal(bind->def, "0.0.0.0");
    assert_string_equal(port->name, "port");
    assert_int_equal(port->type, UPM_CFG_INT);
    assert_int_equal(port->offset, offsetof(struct upm_httpd_config, port));
    assert_non_null(port->def);
    assert_true(port->min == 0 && port->max == 65535);
    char *end;
    long long def = strtoll(port->def, &end, 10);
    assert_true(*end == '\0' && def >= 0 && def <= 65535);
    for (size_t i = 0; i < upm_httpd_config_nkeys; i++) {
        assert_non_null(upm_httpd_config_keys[i].description);
        assert_int_equal(upm_httpd_config_keys[i].flags, 0);
    }
}

/* The table composes as the `http` section of a service's configuration. */
static void test_config_section_loads(void **state)
{
    char err[256] = "";
    struct upm_httpd_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    const struct upm_config_section sec[] = {
        {"http", upm_httpd_config_keys, upm_httpd_config_nkeys, &cfg}};
    const char *yaml = "http:\n  bind: 127.0.0.1\n  port: 0\n";
    assert_int_equal(upm_config_load_string(sec, 1, yaml, strlen(yaml), "t.yaml", err, sizeof(err)),
                     0);
    assert_string_equal(cfg.bind, "127.0.0.1");
    assert_int_equal(cfg.port, 0);
    struct upm_prom_registry *reg = upm_prom_registry_create();
    struct upm_httpd *h = upm_httpd_create(&cfg, reg, err, sizeof(err));
    assert_non_null(h);
    upm_config_free(sec, 1); /* the server keeps its own copy */
    assert_int_equal(upm_httpd_start(h, err, sizeof(err)), 0);
    struct resp r;
    request(upm_httpd_port(h), "GET", "/healthz", &r);
    assert_int_equal(r.code, 200);
    upm_buf_free(&r.body);
    upm_httpd_destroy(h);
    upm_prom_registry_destroy(reg);

    memset(&cfg, 0, sizeof(cfg));
    yaml = "http:\n  port: 65536\n";
    assert_int_equal(upm_config_load_string(sec, 1, yaml, strlen(yaml), "t.yaml", err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "http.port"));
    upm_config_free(sec, 1);
}

static void test_create_rejects_bad_config(void **state)
{
    struct upm_prom_registry *reg = upm_prom_registry_create();
    char err[256];
    struct upm_httpd_config cfg = {.bind = "127.0.0.1", .port = 65536};
    assert_null(upm_httpd_create(&cfg, reg, err, sizeof(err)));
    assert_non_null(strstr(err, "http.port"));
    assert_non_null(strstr(err, "65536"));
    cfg.port = -1;
    assert_null(upm_httpd_create(&cfg, reg, err, sizeof(err)));
    assert_non_null(strstr(err, "http.port"));
    cfg.port = 0;
    cfg.bind = "";
    assert_null(upm_httpd_create(&cfg, reg, err, sizeof(err)));
    assert_non_null(strstr(err, "http.bind"));
    cfg.bind = NULL;
    assert_null(upm_httpd_create(&cfg, reg, err, sizeof(err)));
    cfg.bind = "127.0.0.1";
    assert_null(upm_httpd_create(&cfg, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "registry"));
    /* The request counter's name taken with another shape is refused. */
    struct upm_prom_registry *clash = upm_prom_registry_create();
    assert_non_null(upm_prom_gauge(clash, "upmon_http_requests_total", NULL, 0, NULL));
    assert_null(upm_httpd_create(&cfg, clash, err, sizeof(err)));
    assert_non_null(strstr(err, "upmon_http_requests_total"));
    upm_prom_registry_destroy(clash);

    /* Lifecycle edges: stop before start, stop twice, NULL everywhere. */
    struct upm_httpd *h = upm_httpd_create(&cfg, reg, err, sizeof(err));
    assert_non_null(h);
    assert_int_equal(upm_httpd_port(h), 0);
    upm_httpd_stop(h);
    upm_httpd_stop(h);
    upm_httpd_destroy(h);
    upm_httpd_destroy(NULL);
    upm_httpd_stop(NULL);
    upm_httpd_set_ready(NULL, true, NULL);
    assert_int_equal(upm_httpd_port(NULL), 0);
    upm_prom_registry_destroy(reg);
}

static void test_metrics_equals_registry(void **state)
{
    struct fixture *f = *state;
    assert_true(f->port > 0 && f->port <= 65535);
    struct upm_prom_metric *c =
        upm_prom_counter(f->reg, "upmon_events_total", "Events.", 1, L("type"));
    upm_prom_inc(upm_prom_series_get(c, L("SAVE")), 42);
    struct resp r;
    request(f->port, "GET", "/metrics", &r);
    assert_int_equal(r.code, 200);
    assert_string_equal(r.ctype, "text/plain; version=0.0.4; charset=utf-8");
    char *now = render(f->reg);
    /* The request counts itself before rendering, so the body is the
     * registry as it stands after the request. */
    assert_string_equal(body_of(&r), now);
    assert_non_null(strstr(body_of(&r), "upmon_events_total{type=\"SAVE\"} 42\n"));
    assert_non_null(
        strstr(body_of(&r), "upmon_http_requests_total{path=\"/metrics\",code=\"200\"} 1\n"));
    assert_int_equal(r.content_length, (long long)strlen(now));
    free(now);
    upm_buf_free(&r.body);

    /* Rendered per request: a change shows in the next scrape. */
    upm_prom_inc(upm_prom_series_get(c, L("SAVE")), 1);
    request(f->port, "GET", "/metrics?debug=1", &r);
    assert_int_equal(r.code, 200);
    assert_non_null(strstr(body_of(&r), "upmon_events_total{type=\"SAVE\"} 43\n"));
    assert_non_null(
        strstr(body_of(&r), "upmon_http_requests_total{path=\"/metrics\",code=\"200\"} 2\n"));
    upm_buf_free(&r.body);
}

static void test_large_metrics_body(void **state)
{
    struct fixture *f = *state;
    struct upm_prom_metric *g =
        upm_prom_gauge(f->reg, "upmon_big", "A big family.", 2, L("company", "pad"));
    char company[32];
    char pad[80];
    memset(pad, 'x', sizeof(pad) - 1);
    pad[sizeof(pad) - 1] = '\0';
    for (int i = 0; i < 40000; i++) {
        snprintf(company, sizeof(company), "%d", i);
        upm_prom_set(upm_prom_series_get(g, L(company, pad)), i * 0.5);
    }
    struct resp r;
    request(f->port, "GET", "/metrics", &r);
    assert_int_equal(r.code, 200);
    char *now = render(f->reg);
    size_t now_len = strlen(now);
    assert_true(now_len > 4 * 1024 * 1024);
    assert_int_equal(r.body.len, now_len);
    assert_memory_equal(r.body.data, now, now_len);
    free(now);
    upm_buf_free(&r.body);
}

static void test_healthz_and_readyz(void **state)
{
    struct fixture *f = *state;
    struct resp r;
    request(f->port, "GET", "/healthz", &r);
    assert_int_equal(r.code, 200);
    assert_string_equal(body_of(&r), "ok");
    assert_string_equal(r.ctype, "text/plain; charset=utf-8");
    upm_buf_free(&r.body);

    /* Not ready until the service says so. */
    request(f->port, "GET", "/readyz", &r);
    assert_int_equal(r.code, 503);
    assert_string_equal(body_of(&r), "not ready: starting");
    upm_buf_free(&r.body);

    upm_httpd_set_ready(f->h, true, NULL);
    request(f->port, "GET", "/readyz", &r);
    assert_int_equal(r.code, 200);
    assert_string_equal(body_of(&r), "ready");
    upm_buf_free(&r.body);

    upm_httpd_set_ready(f->h, false, "kafka unreachable");
    request(f->port, "GET", "/readyz", &r);
    assert_int_equal(r.code, 503);
    assert_string_equal(body_of(&r), "not ready: kafka unreachable");
    upm_buf_free(&r.body);

    /* Long reasons are cut, not overflowed. */
    char longr[1000];
    memset(longr, 'r', sizeof(longr) - 1);
    longr[sizeof(longr) - 1] = '\0';
    upm_httpd_set_ready(f->h, false, longr);
    request(f->port, "GET", "/readyz", &r);
    assert_int_equal(r.code, 503);
    assert_int_equal(r.body.len, strlen("not ready: ") + 200);
    upm_buf_free(&r.body);

    assert_true(requests_counted(f->reg, "/healthz", "200") == 1);
    assert_true(requests_counted(f->reg, "/readyz", "503") == 3);
    assert_true(requests_counted(f->reg, "/readyz", "200") == 1);
}

static void test_not_found_method_and_head(void **state)
{
    struct fixture *f = *state;
    struct resp r;
    request(f->port, "GET", "/nope", &r);
    assert_int_equal(r.code, 404);
    upm_buf_free(&r.body);
    request(f->port, "GET", "/metrics/extra", &r);
    assert_int_equal(r.code, 404);
    upm_buf_free(&r.body);
    request(f->port, "GET", "/", &r);
    assert_int_equal(r.code, 404);
    upm_buf_free(&r.body);

    request(f->port, "POST", "/metrics", &r);
    assert_int_equal(r.code, 405);
    assert_string_equal(r.allow, "GET, HEAD");
    upm_buf_free(&r.body);
    request(f->port, "PUT", "/healthz", &r);
    assert_int_equal(r.code, 405);
    upm_buf_free(&r.body);
    request(f->port, "DELETE", "/readyz", &r);
    assert_int_equal(r.code, 405);
    upm_buf_free(&r.body);

    /* HEAD: the GET's headers, no body. */
    request(f->port, "HEAD", "/healthz", &r);
    assert_int_equal(r.code, 200);
    assert_int_equal(r.body.len, 0);
    assert_int_equal(r.content_length, 2);
    upm_buf_free(&r.body);
    request(f->port, "HEAD", "/nope", &r);
    assert_int_equal(r.code, 404);
    assert_int_equal(r.body.len, 0);
    upm_buf_free(&r.body);

    /* Unknown paths share one label value: scanners cannot add series. */
    assert_true(requests_counted(f->reg, "other", "404") == 4);
    assert_true(requests_counted(f->reg, "/metrics", "405") == 1);
    assert_true(requests_counted(f->reg, "/healthz", "405") == 1);
    assert_true(requests_counted(f->reg, "/readyz", "405") == 1);
    assert_true(requests_counted(f->reg, "/healthz", "200") == 1);
    char *out = render(f->reg);
    assert_null(strstr(out, "/nope"));
    free(out);

    /* The server still serves after the refused requests. */
    request(f->port, "GET", "/healthz", &r);
    assert_int_equal(r.code, 200);
    upm_buf_free(&r.body);
}

static void test_keepalive_reuses_connection(void **state)
{
    struct fixture *f = *state;
    CURL *c = curl_easy_init();
    struct resp r;
    /* A HEAD in the middle must leave the connection usable (no body owed). */
    const char *methods[] = {"GET", "HEAD", "GET", "GET", "GET"};
    const char *paths[] = {"/healthz", "/metrics", "/nope", "/readyz", "/metrics"};
    const long codes[] = {200, 200, 404, 503, 200};
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(request_on(c, f->port, methods[i], paths[i], &r), CURLE_OK);
        assert_int_equal(r.code, codes[i]);
        if (i > 0) {
            long reused = 0;
            curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &reused);
            assert_int_equal(reused, 0); /* no new connection was needed */
        }
        if (i == 1) {
            assert_int_equal(r.body.len, 0);
            assert_true(r.content_length > 0);
        }
        upm_buf_free(&r.body);
    }
    curl_easy_cleanup(c);
    /* The HEAD and the GET of /metrics were both counted as 200s. */
    assert_true(requests_counted(f->reg, "/metrics", "200") == 2);
}

enum { CLIENTS = 8, PER_CLIENT = 25 };

struct client_arg {
    int port;
    atomic_int *ok;
};

static void *client_main(void *arg)
{
    struct client_arg *ca = arg;
    CURL *c = curl_easy_init();
    for (int i = 0; i < PER_CLIENT; i++) {
        struct resp r;
        const char *path = i % 2 ? "/metrics" : "/healthz";
        /* No cmocka asserts off the main thread: count successes. */
        if (request_on(c, ca->port, "GET", path, &r) == CURLE_OK && r.code == 200 &&
            (i % 2 ? strstr(body_of(&r), "# TYPE upmon_http_requests_total counter") != NULL
                   : strcmp(body_of(&r), "ok") == 0))
            atomic_fetch_add(ca->ok, 1);
        upm_buf_free(&r.body);
    }
    curl_easy_cleanup(c);
    return NULL;
}

static void test_concurrent_clients(void **state)
{
    struct fixture *f = *state;
    atomic_int ok;
    atomic_init(&ok, 0);
    struct client_arg ca = {.port = f->port, .ok = &ok};
    pthread_t t[CLIENTS];
    for (int i = 0; i < CLIENTS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, client_main, &ca), 0);
    for (int i = 0; i < CLIENTS; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(atomic_load(&ok), CLIENTS * PER_CLIENT);
    /* Odd i asked for /metrics, even i for /healthz. */
    assert_true(requests_counted(f->reg, "/metrics", "200") == CLIENTS * (PER_CLIENT / 2));
    assert_true(requests_counted(f->reg, "/healthz", "200") ==
                CLIENTS * (PER_CLIENT - PER_CLIENT / 2));
}

static int connect_raw(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

/* True when the peer closed fd within ms. */
static int closed_within(int fd, int ms)
{
    int64_t deadline = upm_clock_mono_ns() + ms * UPM_NS_PER_MS;
    char buf[4096];
    while (upm_clock_mono_ns() < deadline) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 50) > 0) {
            ssize_t n = recv(fd, buf, sizeof(buf), 0);
            if (n <= 0)
                return 1;
        }
    }
    return 0;
}

static void test_stop_with_connected_clients(void **state)
{
    struct fixture *f = *state;
    /* One client mid-request, one idle on a kept-alive connection. */
    int partial = connect_raw(f->port);
    const char *half = "GET /metrics HTTP/1.1\r\nHost: x\r\n";
    assert_int_equal(send(partial, half, strlen(half), 0), (ssize_t)strlen(half));
    int idle = connect_raw(f->port);
    const char *full = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(send(idle, full, strlen(full), 0), (ssize_t)strlen(full));
    /* Wait for the answer so the connection is known to be established and idle. */
    char buf[1024];
    struct pollfd p = {.fd = idle, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 5000), 1);
    ssize_t n = recv(idle, buf, sizeof(buf) - 1, 0);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_non_null(strstr(buf, "HTTP/1.1 200"));

    int64_t t0 = upm_clock_mono_ns();
    upm_httpd_stop(f->h);
    int64_t took_ms = (upm_clock_mono_ns() - t0) / UPM_NS_PER_MS;
    assert_true(took_ms < 2000);
    assert_int_equal(upm_httpd_port(f->h), 0);
    /* Both clients see the connection closed, and nobody listens any more. */
    assert_true(closed_within(partial, 2000));
    assert_true(closed_within(idle, 2000));
    close(partial);
    close(idle);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)f->port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_not_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(fd);
    upm_httpd_stop(f->h); /* twice is fine */
}

static void test_start_stop_cycles(void **state)
{
    struct upm_prom_registry *reg = upm_prom_registry_create();
    for (int i = 0; i < 5; i++) {
        struct upm_httpd *h = start_server(reg, "127.0.0.1", 0);
        int port = upm_httpd_port(h);
        assert_true(port > 0);
        struct resp r;
        request(port, "GET", "/healthz", &r);
        assert_int_equal(r.code, 200);
        upm_buf_free(&r.body);
        upm_httpd_stop(h);
        upm_httpd_stop(h);
        upm_httpd_destroy(h);
    }
    /* Registration on a shared registry is idempotent across servers. */
    assert_true(requests_counted(reg, "/healthz", "200") == 5);

    /* The same object restarts after a stop; starting twice is refused. */
    char err[256];
    struct upm_httpd *h = start_server(reg, "127.0.0.1", 0);
    assert_int_equal(upm_httpd_start(h, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "already running"));
    upm_httpd_stop(h);
    assert_int_equal(upm_httpd_start(h, err, sizeof(err)), 0);
    struct resp r;
    request(upm_httpd_port(h), "GET", "/healthz", &r);
    assert_int_equal(r.code, 200);
    upm_buf_free(&r.body);
    /* Destroy without an explicit stop stops first. */
    upm_httpd_destroy(h);
    upm_prom_registry_destroy(reg);
}

static void test_port_in_use(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";
    char port_s[32];
    snprintf(port_s, sizeof(port_s), "port %d", f->port);
    struct upm_httpd_config cfg = {.bind = "127.0.0.1", .port = f->port};
    struct upm_httpd *h2 = upm_httpd_create(&cfg, f->reg, err, sizeof(err));
    assert_non_null(h2);
    assert_int_equal(upm_httpd_start(h2, err, sizeof(err)), -1);
    assert_non_null(strstr(err, port_s));
    assert_non_null(strstr(err, "Address already in use"));
    assert_int_equal(upm_httpd_port(h2), 0);
    upm_httpd_stop(h2);
    upm_httpd_destroy(h2);

    /* The same port on all addresses is taken too. */
    cfg.bind = "0.0.0.0";
    h2 = upm_httpd_create(&cfg, f->reg, err, sizeof(err));
    assert_int_equal(upm_httpd_start(h2, err, sizeof(err)), -1);
    assert_non_null(strstr(err, port_s));
    upm_httpd_destroy(h2);

    /* The first server is unaffected. */
    struct resp r;
    request(f->port, "GET", "/healthz", &r);
    assert_int_equal(r.code, 200);
    upm_buf_free(&r.body);
}

static void test_lws_logs_routed(void **state)
{
    log_sink = open_memstream(&log_text, &log_len);
    upm_log_set_sink(log_sink);
    struct upm_prom_registry *reg = upm_prom_registry_create();
    /* At info, lws' start-up notices stay quiet... */
    upm_log_set_level(UPM_LOG_INFO);
    struct upm_httpd *h = start_server(reg, "127.0.0.1", 0);
    upm_httpd_destroy(h);
    assert_null(strstr(logged(), "mod=lws"));
    assert_non_null(strstr(logged(), "level=info mod=httpd msg=\"listening\""));
    /* ...at debug they come through our logger, as debug lines. */
    upm_log_set_level(UPM_LOG_DEBUG);
    h = start_server(reg, "127.0.0.1", 0);
    upm_httpd_destroy(h);
    upm_log_set_level(UPM_LOG_INFO);
    const char *text = logged();
    assert_non_null(strstr(text, "level=debug mod=lws msg=\""));
    /* One record per line: lws' trailing newline was stripped. */
    assert_null(strstr(text, "\n\n"));
    assert_null(strstr(text, "\\n\""));
    upm_prom_registry_destroy(reg);
    upm_log_set_sink(NULL);
    fclose(log_sink);
    free(log_text);
    log_text = NULL;
}

static void test_bad_bind_address(void **state)
{
    struct upm_prom_registry *reg = upm_prom_registry_create();
    char err[256] = "";
    /* TEST-NET-1 is never a local address. */
    struct upm_httpd_config cfg = {.bind = "192.0.2.1", .port = 0};
    struct upm_httpd *h = upm_httpd_create(&cfg, reg, err, sizeof(err));
    assert_non_null(h);
    assert_int_equal(upm_httpd_start(h, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "192.0.2.1"));
    assert_non_null(strstr(err, "port 0"));
    assert_int_equal(upm_httpd_port(h), 0);
    upm_httpd_destroy(h);
    /* Names are not addresses: refused at create with the key named. */
    cfg.bind = "localhost";
    assert_null(upm_httpd_create(&cfg, reg, err, sizeof(err)));
    assert_non_null(strstr(err, "http.bind"));
    assert_non_null(strstr(err, "localhost"));
    upm_prom_registry_destroy(reg);
}

/* ---- static files and the live channel ------------------------------------------------------- */

static const char PAGE[] = "<!doctype html><title>upmon</title>";

static struct upm_httpd *live_server(struct upm_prom_registry *reg, int max_clients)
{
    char err[256] = "";
    struct upm_httpd_config cfg = {.bind = "127.0.0.1", .port = 0};
    struct upm_httpd *h = upm_httpd_create(&cfg, reg, err, sizeof(err));
    assert_non_null(h);
    assert_int_equal(upm_httpd_add_static(h, "/", "text/html; charset=utf-8", PAGE,
                                          sizeof(PAGE) - 1, err, sizeof(err)),
                     0);
    assert_int_equal(upm_httpd_enable_live(h, max_clients, err, sizeof(err)), 0);
    if (upm_httpd_start(h, err, sizeof(err)) != 0)
        fail_msg("start: %s", err);
    return h;
}

/* A minimal WebSocket client: enough to check what the server sends. */
#define WSC_BUF (1 << 20)
struct wsc {
    int fd;
    char *buf; /* WSC_BUF bytes */
    size_t len;
};

static int wsc_fill(struct wsc *c, int ms)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    if (poll(&p, 1, ms) <= 0)
        return 0;
    ssize_t n = recv(c->fd, c->buf + c->len, WSC_BUF - c->len, 0);
    if (n <= 0)
        return -1;
    c->len += (size_t)n;
    return 1;
}

/* Handshake; returns the HTTP status line's code. */
static int wsc_open(struct wsc *c, int port, const char *path, const char *protocol)
{
    memset(c, 0, sizeof(*c));
    c->buf = malloc(WSC_BUF);
    c->fd = connect_raw(port);
    char req[512];
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n%s%s%s\r\n",
                     path, protocol ? "Sec-WebSocket-Protocol: " : "", protocol ? protocol : "",
                     protocol ? "\r\n" : "");
    assert_int_equal(send(c->fd, req, (size_t)n, 0), n);
    int64_t deadline = upm_clock_mono_ns() + 3000 * UPM_NS_PER_MS;
    char *end;
    while (!(end = memmem(c->buf, c->len, "\r\n\r\n", 4))) {
        if (upm_clock_mono_ns() > deadline || wsc_fill(c, 100) < 0)
            return c->len >= 12 ? atoi(c->buf + 9) : -1;
    }
    int code = atoi(c->buf + 9);
    size_t hl = (size_t)(end + 4 - c->buf);
    memmove(c->buf, c->buf + hl, c->len - hl);
    c->len -= hl;
    return code;
}

static void wsc_close(struct wsc *c)
{
    close(c->fd);
    free(c->buf);
    c->buf = NULL;
}

/* The next text frame's payload (NUL-terminated, malloc'd), or NULL within ms. */
static char *wsc_next(struct wsc *c, int ms, int *opcode)
{
    int64_t deadline = upm_clock_mono_ns() + ms * UPM_NS_PER_MS;
    for (;;) {
        if (c->len >= 2) {
            size_t n = c->buf[1] & 0x7f, hdr = 2;
            if (n == 126 && c->len >= 4) {
                n = ((size_t)(unsigned char)c->buf[2] << 8) | (unsigned char)c->buf[3];
                hdr = 4;
            } else if (n == 127 && c->len >= 10) {
                n = 0;
                for (int i = 2; i < 10; i++)
                    n = (n << 8) | (unsigned char)c->buf[i];
                hdr = 10;
            }
            if ((n < 126 || hdr > 2) && c->len >= hdr + n) {
                *opcode = c->buf[0] & 0x0f;
                char *out = malloc(n + 1);
                memcpy(out, c->buf + hdr, n);
                out[n] = 0;
                memmove(c->buf, c->buf + hdr + n, c->len - hdr - n);
                c->len -= hdr + n;
                return out;
            }
        }
        if (upm_clock_mono_ns() > deadline || wsc_fill(c, 50) < 0)
            return NULL;
    }
}

static char *wsc_text(struct wsc *c, int ms)
{
    int op = 0;
    char *m = wsc_next(c, ms, &op);
    if (m && op != 1) {
        free(m);
        return NULL;
    }
    return m;
}

static double live_count(struct upm_prom_registry *reg, const char *metric, const char *label,
                         const char *value)
{
    char *text = render(reg);
    char want[160];
    snprintf(want, sizeof(want), "%s{%s=\"%s\"} ", metric, label, value);
    char *at = strstr(text, want);
    double v = at ? atof(at + strlen(want)) : 0;
    free(text);
    return v;
}

static void test_static_file_and_live_over_plain_http(void **state)
{
    (void)state;
    struct upm_prom_registry *reg = upm_prom_registry_create();
    struct upm_httpd *h = live_server(reg, 4);
    int port = upm_httpd_port(h);
    struct resp r;
    request(port, "GET", "/", &r);
    assert_int_equal(r.code, 200);
    assert_string_equal(body_of(&r), PAGE);
    assert_string_equal(r.ctype, "text/html; charset=utf-8");
    upm_buf_free(&r.body);
    request(port, "GET", "/live", &r);
    assert_int_equal(r.code, 400);
    upm_buf_free(&r.body);
    assert_true(requests_counted(reg, "/", "200") == 1);
    assert_true(requests_counted(reg, "/live", "400") == 1);

    char err[128];
    assert_int_equal(upm_httpd_add_static(h, "/late", "text/plain", "x", 1, err, sizeof(err)), -1);
    upm_httpd_destroy(h);
    upm_prom_registry_destroy(reg);
}

static void test_add_static_refuses_bad_paths(void **state)
{
    (void)state;
    struct upm_prom_registry *reg = upm_prom_registry_create();
    char err[256] = "";
    struct upm_httpd_config cfg = {.bind = "127.0.0.1", .port = 0};
    struct upm_httpd *h = upm_httpd_create(&cfg, reg, err, sizeof(err));
    assert_int_equal(upm_httpd_add_static(h, "page", "text/html", "x", 1, err, sizeof(err)), -1);
    assert_int_equal(upm_httpd_add_static(h, "/metrics", "text/html", "x", 1, err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "built-in"));
    assert_int_equal(upm_httpd_add_static(h, "/a", "text/html", "x", 1, err, sizeof(err)), 0);
    assert_int_equal(upm_httpd_add_static(h, "/a", "text/html", "y", 1, err, sizeof(err)), -1);
    assert_int_equal(upm_httpd_enable_live(h, 0, err, sizeof(err)), -1);
    upm_httpd_destroy(h);
    upm_prom_registry_destroy(reg);
}

static void test_live_snapshot_then_updates_in_order(void **state)
{
    (void)state;
    struct upm_prom_registry *reg = upm_prom_registry_create();
    struct upm_httpd *h = live_server(reg, 4);
    int port = upm_httpd_port(h);
    upm_httpd_live_publish(h, "{\"snap\":1}", 10, "{\"upd\":1}", 9);

    struct wsc c;
    assert_int_equal(wsc_open(&c, port, "/live", "upmon-live"), 101);
    char *m = wsc_text(&c, 3000);
    assert_non_null(m);
    assert_string_equal(m, "{\"snap\":1}"); /* a new client starts from the snapshot */
    free(m);
    for (int i = 2; i <= 4; i++) {
        char snap[32], upd[32];
        int sl = snprintf(snap, sizeof(snap), "{\"snap\":%d}", i);
        int ul = snprintf(upd, sizeof(upd), "{\"upd\":%d}", i);
        upm_httpd_live_publish(h, snap, (size_t)sl, upd, (size_t)ul);
        m = wsc_text(&c, 3000);
        assert_non_null(m);
        assert_string_equal(m, upd);
        free(m);
    }
    /* A big snapshot crosses several socket writes and arrives whole. */
    size_t big = 300000;
    char *text = malloc(big);
    memset(text, 'x', big);
    text[0] = '"';
    text[big - 1] = '"';
    upm_httpd_live_publish(h, text, big, NULL, 0);
    m = wsc_text(&c, 5000);
    assert_non_null(m);
    assert_int_equal(strlen(m), big);
    free(m);
    free(text);
    assert_int_equal(upm_httpd_live_clients(h), 1);
    assert_true(live_count(reg, "upmon_http_live_messages_total", "kind", "update") == 3);
    assert_true(live_count(reg, "upmon_http_live_messages_total", "kind", "snapshot") == 2);
    wsc_close(&c);
    upm_httpd_destroy(h);
    upm_prom_registry_destroy(reg);
}

static void test_live_state_kept_across_a_restart(void **state)
{
    (void)state;
    struct upm_prom_registry *reg = upm_prom_registry_create();
    struct upm_httpd *h = live_server(reg, 4);
    struct wsc c;
    assert_int_equal(wsc_open(&c, upm_httpd_port(h), "/live", "upmon-live"), 101);
    upm_httpd_live_publish(h, "S1", 2, "U1", 2);
    char *m = wsc_text(&c, 3000);
    assert_string_equal(m, "S1");
    free(m);
    /* Published while stopped: a client of the restarted server starts from the latest
     * snapshot, never from an update it cannot apply. */
    upm_httpd_stop(h);
    char err[128];
    upm_httpd_live_publish(h, "S2", 2, "U2", 2);
    upm_httpd_live_publish(h, "S3", 2, "U3", 2);
    wsc_close(&c);
    assert_int_equal(upm_httpd_start(h, err, sizeof(err)), 0);
    assert_int_equal(wsc_open(&c, upm_httpd_port(h), "/live", "upmon-live"), 101);
    m = wsc_text(&c, 3000);
    assert_string_equal(m, "S3");
    free(m);
    wsc_close(&c);
    upm_httpd_destroy(h);
    upm_prom_registry_destroy(reg);
}

static void test_live_refuses_input_wrong_path_no_protocol_and_too_many(void **state)
{
    (void)state;
    struct upm_prom_registry *reg = upm_prom_registry_create();
    struct upm_httpd *h = live_server(reg, 2);
    int port = upm_httpd_port(h);
    upm_httpd_live_publish(h, "S", 1, NULL, 0);

    struct wsc a, b, x;
    assert_int_equal(wsc_open(&a, port, "/live", "upmon-live"), 101);
    assert_int_equal(wsc_open(&b, port, "/live", "upmon-live"), 101);
    free(wsc_text(&a, 3000));
    free(wsc_text(&b, 3000));
    /* Full: a third client is refused at the handshake. */
    assert_true(wsc_open(&x, port, "/live", "upmon-live") != 101);
    wsc_close(&x);
    assert_true(live_count(reg, "upmon_http_live_refused_total", "reason", "full") == 1);

    /* A client that sends anything is closed (1008) and counted. */
    unsigned char frame[] = {0x81, 0x85, 1, 2, 3, 4, 'h' ^ 1, 'e' ^ 2, 'l' ^ 3, 'l' ^ 4, 'o' ^ 1};
    assert_int_equal(send(a.fd, frame, sizeof(frame), 0), (ssize_t)sizeof(frame));
    int op = 0;
    char *m = wsc_next(&a, 3000, &op);
    assert_int_equal(op, 8); /* close */
    free(m);
    unsigned char ack[] = {0x88, 0x80, 0, 0, 0, 0};
    send(a.fd, ack, sizeof(ack), MSG_NOSIGNAL);
    assert_true(closed_within(a.fd, 3000));
    wsc_close(&a);
    assert_true(live_count(reg, "upmon_http_live_refused_total", "reason", "input") == 1);
    /* Its place is free again; the other client was not harmed. */
    for (int i = 0; i < 500 && upm_httpd_live_clients(h) != 1; i++)
        usleep(10000);
    assert_int_equal(upm_httpd_live_clients(h), 1);
    upm_httpd_live_publish(h, "S2", 2, "U2", 2);
    m = wsc_text(&b, 3000);
    assert_string_equal(m, "U2");
    free(m);

    assert_true(wsc_open(&x, port, "/elsewhere", "upmon-live") != 101);
    wsc_close(&x);
    assert_true(live_count(reg, "upmon_http_live_refused_total", "reason", "path") == 1);
    assert_true(wsc_open(&x, port, "/live", NULL) != 101);
    wsc_close(&x);
    assert_true(wsc_open(&x, port, "/live", "chat") != 101);
    wsc_close(&x);
    /* The plain HTTP side still answers. */
    struct resp r;
    request(port, "GET", "/healthz", &r);
    assert_int_equal(r.code, 200);
    upm_buf_free(&r.body);
    wsc_close(&b);
    upm_httpd_destroy(h);
    upm_prom_registry_destroy(reg);
}

static void test_live_off_by_default(void **state)
{
    struct fixture *f = *state;
    struct wsc c;
    assert_true(wsc_open(&c, f->port, "/live", "upmon-live") != 101);
    wsc_close(&c);
    upm_httpd_live_publish(f->h, "S", 1, NULL, 0); /* a no-op, not a crash */
    assert_int_equal(upm_httpd_live_clients(f->h), 0);
    struct resp r;
    request(f->port, "GET", "/live", &r);
    assert_int_equal(r.code, 404);
    upm_buf_free(&r.body);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_table),
        cmocka_unit_test(test_config_section_loads),
        cmocka_unit_test(test_create_rejects_bad_config),
        cmocka_unit_test_setup_teardown(test_metrics_equals_registry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_metrics_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_healthz_and_readyz, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_found_method_and_head, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keepalive_reuses_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_clients, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_with_connected_clients, setup, teardown),
        cmocka_unit_test(test_start_stop_cycles),
        cmocka_unit_test_setup_teardown(test_port_in_use, setup, teardown),
        cmocka_unit_test(test_lws_logs_routed),
        cmocka_unit_test(test_bad_bind_address),
        cmocka_unit_test(test_static_file_and_live_over_plain_http),
        cmocka_unit_test(test_add_static_refuses_bad_paths),
        cmocka_unit_test(test_live_snapshot_then_updates_in_order),
        cmocka_unit_test(test_live_state_kept_across_a_restart),
        cmocka_unit_test(test_live_refuses_input_wrong_path_no_protocol_and_too_many),
        cmocka_unit_test_setup_teardown(test_live_off_by_default, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
