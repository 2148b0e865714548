#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "upmon/alloc.h"
#include "upmon/buf.h"
#include "upmon/clickhouse.h"
#include "upmon/clock.h"
#include "upmon/log.h"
#include "upmon/prom.h"

/* ------------------------------------------------------------------------ */
/* A scripted HTTP/1.1 server on 127.0.0.1, one connection at a time.       */

struct step {
    int status;          /* 0: close the connection without a response */
    const char *headers; /* extra header lines, each ending in \r\n */
    const char *body;
    size_t fill;    /* > 0: the body is this many 'x' bytes instead */
    int delay_ms;   /* before answering */
    bool no_length; /* no Content-Length: the body ends when the server closes */
    bool hang;      /* never answer; hold the connection until the client goes */
};

struct captured {
    char *head; /* request line and headers */
    char *body;
    size_t body_len;
};

#define MAX_STEPS 16
#define MAX_REQS  32

struct server {
    int fd;
    int port;
    pthread_t thread;
    atomic_int stop;
    pthread_mutex_t mu;
    struct step steps[MAX_STEPS];
    size_t nsteps;
    size_t next;
    struct step fallback; /* once the script is used up */
    struct captured reqs[MAX_REQS];
    size_t nreqs;
    size_t naccepts; /* TCP connections accepted */
};

static bool srv_stopping(struct server *s)
{
    return atomic_load(&s->stop) != 0;
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) {
            if (w < 0 && errno == EINTR)
                continue;
            return; /* the client went away: nothing to do */
        }
        p += w;
        n -= (size_t)w;
    }
}

/* Read one request from conn. 1 = got one, 0 = closed, -1 = a new connection
 * is waiting on the listener (the caller switches to it). */
static int read_request(struct server *s, int conn, struct captured *req)
{
    struct upm_buf in;
    upm_buf_init(&in, 1 << 20);
    size_t head_len = 0;
    size_t content_length = 0;
    int rc = 0;
    while (!srv_stopping(s)) {
        if (head_len && in.len >= head_len + content_length) {
            req->head = upm_strndup(in.data, head_len);
            req->body = upm_malloc(content_length + 1);
            memcpy(req->body, in.data + head_len, content_length);
            req->body[content_length] = '\0';
            req->body_len = content_length;
            rc = 1;
            break;
        }
        struct pollfd pfd[2] = {{.fd = conn, .events = POLLIN}, {.fd = s->fd, .events = POLLIN}};
        int n = poll(pfd, in.len == 0 ? 2 : 1, 50);
        if (n <= 0)
            continue;
        if (in.len == 0 && (pfd[1].revents & POLLIN) && !(pfd[0].revents & POLLIN)) {
            rc = -1;
            break;
        }
        if (!(pfd[0].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        char chunk[4096];
        ssize_t r = recv(conn, chunk, sizeof(chunk), 0);
        if (r <= 0)
            break;
        if (upm_buf_append(&in, chunk, (size_t)r) != 0)
            break;
        if (!head_len) {
            char *end = strstr(in.data, "\r\n\r\n");
            if (end) {
                head_len = (size_t)(end - in.data) + 4;
                char *cl = strcasestr(in.data, "\r\nContent-Length:");
                if (cl && cl < end)
                    content_length = strtoul(cl + 17, NULL, 10);
            }
        }
    }
    upm_buf_free(&in);
    return rc;
}

static void respond(struct server *s, int conn, const struct step *st)
{
    for (int waited = 0; waited < st->delay_ms && !srv_stopping(s); waited += 10)
        upm_clock_sleep_ms(10, NULL);
    struct upm_buf out;
    upm_buf_init(&out, 0);
    size_t blen = st->fill ? st->fill : (st->body ? strlen(st->body) : 0);
    upm_buf_printf(&out, "HTTP/1.1 %d Status\r\n", st->status);
    if (st->headers)
        upm_buf_puts(&out, st->headers);
    if (st->no_length)
        upm_buf_puts(&out, "Connection: close\r\n");
    else
        upm_buf_printf(&out, "Content-Length: %zu\r\n", blen);
    upm_buf_puts(&out, "\r\n");
    if (st->fill) {
        for (size_t i = 0; i < st->fill; i++)
            upm_buf_putc(&out, 'x');
    } else if (st->body) {
        upm_buf_puts(&out, st->body);
    }
    send_all(conn, out.data, out.len);
    upm_buf_free(&out);
}

static void *server_main(void *arg)
{
    struct server *s = arg;
    int conn = -1;
    while (!srv_stopping(s)) {
        if (conn < 0) {
            struct pollfd pfd = {.fd = s->fd, .events = POLLIN};
            if (poll(&pfd, 1, 50) <= 0)
                continue;
            conn = accept(s->fd, NULL, NULL);
            if (conn < 0)
                continue;
            pthread_mutex_lock(&s->mu);
            s->naccepts++;
            pthread_mutex_unlock(&s->mu);
        }
        struct captured req = {0};
        int r = read_request(s, conn, &req);
        if (r <= 0) {
            close(conn);
            conn = -1;
            continue;
        }
        struct step st;
        bool wrong_path = strncmp(req.head, "POST /?", 7) != 0;
        pthread_mutex_lock(&s->mu);
        if (s->nreqs < MAX_REQS)
            s->reqs[s->nreqs++] = req;
        else {
            free(req.head);
            free(req.body);
        }
        if (wrong_path)
            st = (struct step){.status = 404, .body = "There is no handle /wrong\n"};
        else if (s->next < s->nsteps)
            st = s->steps[s->next++];
        else
            st = s->fallback;
        pthread_mutex_unlock(&s->mu);

        if (st.hang) {
            /* Wait for the client to give up (EOF) or the test to end. */
            while (!srv_stopping(s)) {
                struct pollfd pfd = {.fd = conn, .events = POLLIN};
                if (poll(&pfd, 1, 50) > 0) {
                    char c;
                    if (recv(conn, &c, 1, 0) <= 0)
                        break;
                }
            }
            close(conn);
            conn = -1;
            continue;
        }
        if (st.status == 0) {
            close(conn);
            conn = -1;
            continue;
        }
        respond(s, conn, &st);
        if (st.no_length) {
            close(conn);
            conn = -1;
        }
    }
    if (conn >= 0)
        close(conn);
    return NULL;
}

static void server_start(struct server *s)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
    s->fallback = (struct step){.status = 200, .body = "Ok.\n"};
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s->fd >= 0);
    int one = 1;
    setsockopt(s->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(s->fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(s->fd, 16), 0);
    socklen_t alen = sizeof(a);
    assert_int_equal(getsockname(s->fd, (struct sockaddr *)&a, &alen), 0);
    s->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&s->thread, NULL, server_main, s), 0);
}

static void server_stop(struct server *s)
{
    atomic_store(&s->stop, 1);
    pthread_join(s->thread, NULL);
    close(s->fd);
    for (size_t i = 0; i < s->nreqs; i++) {
        free(s->reqs[i].head);
        free(s->reqs[i].body);
    }
    pthread_mutex_destroy(&s->mu);
}

static void server_script(struct server *s, const struct step *steps, size_t n)
{
    assert_true(n <= MAX_STEPS);
    pthread_mutex_lock(&s->mu);
    memcpy(s->steps, steps, n * sizeof(*steps));
    s->nsteps = n;
    s->next = 0;
    pthread_mutex_unlock(&s->mu);
}

static size_t server_nreqs(struct server *s)
{
    pthread_mutex_lock(&s->mu);
    size_t n = s->nreqs;
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* A port on which nothing listens: bind an ephemeral port, then close it. */
static int dead_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t alen = sizeof(a);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* The request line of a captured request (static storage, one at a time). */
static const char *request_line(const struct captured *c)
{
    static char line[4096];
    size_t n = strcspn(c->head, "\r\n");
    assert_true(n < sizeof(line));
    memcpy(line, c->head, n);
    line[n] = '\0';
    return line;
}

/* Percent-decode the value of URL parameter name in a request line. */
static char *url_param(const char *line, const char *name)
{
    char key[64];
    snprintf(key, sizeof(key), "%s=", name);
    const char *q = strchr(line, '?');
    assert_non_null(q);
    const char *p = q + 1;
    while (p && *p) {
        if (strncmp(p, key, strlen(key)) == 0) {
            p += strlen(key);
            struct upm_buf b;
            upm_buf_init(&b, 0);
            while (*p && *p != '&' && *p != ' ') {
                if (*p == '%' && p[1] && p[2]) {
                    char hex[3] = {p[1], p[2], '\0'};
                    upm_buf_putc(&b, (char)strtol(hex, NULL, 16));
                    p += 3;
                } else {
                    upm_buf_putc(&b, *p++);
                }
            }
            return upm_buf_steal(&b, NULL);
        }
        p = strchr(p, '&');
        if (p)
            p++;
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Client helpers                                                           */

struct fixture {
    struct server srv;
    char url[64];
    char *urls[2];
    struct upm_ch_config cfg;
};

static void fixture_init(struct fixture *f)
{
    server_start(&f->srv);
    snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%d", f->srv.port);
    f->urls[0] = f->url;
    f->cfg = (struct upm_ch_config){
        .urls = {.items = f->urls, .count = 1},
        .user = "alice",
        .password = "s3cret",
        .database = "upmon_test",
        .cluster = "c1",
        .connect_timeout_ms = 1000,
        .query_timeout_ms = 5000,
        .retries = 3,
        .backoff_initial_ms = 1,
        .backoff_max_ms = 5,
        .max_response_bytes = 1 << 20,
    };
}

static struct upm_ch_client *client_new(const struct upm_ch_config *cfg,
                                        struct upm_prom_registry *reg)
{
    char errstr[256] = "";
    struct upm_ch_client *c = upm_ch_client_create(cfg, reg, errstr, sizeof(errstr));
    if (!c)
        fail_msg("client_create: %s", errstr);
    return c;
}

static int64_t ms_since(int64_t t0)
{
    return (upm_clock_mono_ns() - t0) / UPM_NS_PER_MS;
}

/* ------------------------------------------------------------------------ */
/* Requests against the scripted server                                     */

static void test_query_returns_body(void **state)
{
    struct fixture f;
    fixture_init(&f);
    server_script(&f.srv, (struct step[]){{.status = 200, .body = "1\t2\n"}}, 1);
    struct upm_ch_client *c = client_new(&f.cfg, NULL);
    struct upm_buf out;
    upm_buf_init(&out, 0);
    struct upm_ch_error err;
    const char *sql = "SELECT 1, 2 FORMAT TabSeparated";
    assert_int_equal(upm_ch_query(c, sql, &out, &err), 0);
    assert_int_equal(out.len, 4);
    assert_string_equal(out.data, "1\t2\n");
    assert_int_equal(err.attempts, 1);
    assert_int_equal(err.code, 0);
    assert_int_equal(err.http_status, 0);
    assert_int_equal(server_nreqs(&f.srv), 1);
    /* The statement travels in the POST body. */
    assert_int_equal(f.srv.reqs[0].body_len, strlen(sql));
    assert_memory_equal(f.srv.reqs[0].body, sql, strlen(sql));
    assert_non_null(strstr(request_line(&f.srv.reqs[0]), "POST /?"));
    /* Keep-alive: the second call reuses the connection. */
    assert_int_equal(upm_ch_query(c, sql, &out, &err), 0);
    assert_string_equal(out.data, "Ok.\n");
    assert_int_equal(server_nreqs(&f.srv), 2);
    pthread_mutex_lock(&f.srv.mu);
    assert_int_equal(f.srv.naccepts, 1);
    pthread_mutex_unlock(&f.srv.mu);
    assert_string_equal(upm_ch_client_database(c), "upmon_test");
    assert_string_equal(upm_ch_client_cluster(c), "c1");
    upm_buf_free(&out);
    upm_ch_client_destroy(c);
    server_stop(&f.srv);
}

static void test_auth_in_headers_never_in_url_or_log(void **state)
{
    struct fixture f;
    fixture_init(&f);
    FILE *logf = tmpfile();
    assert_non_null(logf);
    upm_log_set_sink(logf);
    upm_log_set_level(UPM_LOG_DEBUG);
    struct upm_ch_client *c = client_new(&f.cfg, NULL);
    struct upm_ch_error err;
    int rc = upm_ch_exec(c, "SELECT 1", &err);
    upm_log_set_level(UPM_LOG_ERROR);
    upm_log_set_sink(NULL);
    assert_int_equal(rc, 0);
    assert_int_equal(server_nreqs(&f.srv), 1);
    const char *head = f.srv.reqs[0].head;
    assert_non_null(strstr(head, "\r\nX-ClickHouse-User: alice\r\n"));
    assert_non_null(strstr(head, "\r\nX-ClickHouse-Key: s3cret\r\n"));
    const char *line = request_line(&f.srv.reqs[0]);
    assert_null(strstr(line, "s3cret"));
    assert_null(strstr(line, "password"));
    assert_null(strstr(line, "user="));

    /* curl's verbose output reached our log, with the key redacted. */
    long size = ftell(logf);
    assert_true(size > 0);
    char *text = upm_calloc(1, (size_t)size + 1);
    rewind(logf);
    assert_int_equal(fread(text, 1, (size_t)size, logf), (size_t)size);
    fclose(logf);
    assert_non_null(strstr(text, "X-ClickHouse-Key: <redacted>"));
    assert_non_null(strstr(text, "X-ClickHouse-User: alice"));
    assert_null(strstr(text, "s3cret"));
    free(text);
    upm_ch_client_destroy(c);
    server_stop(&f.srv);
}

static void test_database_and_settings_params(void **state)
{
    struct fixture f;
    fixture_init(&f);
    struct upm_ch_client *c = client_new(&f.cfg, NULL);
    assert_int_equal(upm_ch_client_set_setting(c, "max_execution_time", "7"), 0);
    assert_int_equal(upm_ch_client_set_setting(c, "max_threads", "2"), 0);
    assert_int_equal(upm_ch_client_set_setting(c, "max_threads", NULL), 0); /* removed */
    assert_int_equal(upm_ch_client_set_setting(c, "bad name", "1"), -1);
    assert_int_equal(upm_ch_client_set_setting(c, "password", "x"), -1);

    struct upm_ch_setting s[] = {
        {"insert_quorum", "2"}, {"max_execution_time", "9"}, {"log_comment", "a b&c=d"}};
    struct upm_ch_error err;
    assert_int_equal(upm_ch_exec_ex(c, "SELECT 1", s, 3, &err), 0);
    assert_int_equal(server_nreqs(&f.srv), 1);
    const char *line = request_line(&f.srv.reqs[0]);
    char *db = url_param(line, "database");
    assert_string_equal(db, "upmon_test");
    free(db);
    assert_non_null(strstr(line, "insert_quorum=2"));
    /* The per-call value overrides the client-wide one, which is not sent. */
    assert_non_null(strstr(line, "max_execution_time=9"));
    assert_null(strstr(line, "max_execution_time=7"));
    assert_null(strstr(line, "max_threads"));
    assert_non_null(strstr(line, "log_comment=a%20b%26c%3Dd"));

    /* Without per-call settings the client-wide one is sent. */
    assert_int_equal(upm_ch_exec(c, "SELECT 1", &err), 0);
    assert_non_null(strstr(request_line(&f.srv.reqs[1]), "max_execution_time=7"));

    /* A reserved or invalid per-call name fails before any request. */
    struct upm_ch_setting bad[] = {{"password", "x"}};
    assert_int_equal(upm_ch_exec_ex(c, "SELECT 1", bad, 1, &err), -1);
    assert_int_equal(err.attempts, 0);
    assert_false(err.retriable);
    assert_int_equal(server_nreqs(&f.srv), 2);
    upm_ch_client_destroy(c);
    server_stop(&f.srv);
}

static const unsigned char rowbinary[] = {0x01, 0x00, 0x00, 0x00, 0xff, 0x00, 0x03,
                                          'a',  'b',  'c',  0x00, 0x0d, 0x0a, 0x7f};

static void test_insert_query_param_and_body(void **state)
{
    struct fixture f;
    fixture_init(&f);
    struct upm_ch_client *c = client_new(&f.cfg, NULL);
    struct upm_ch_error err;
    assert_int_equal(upm_ch_insert(c, "events_local", "item_id, attempt_id", "RowBinary", rowbinary,
                                   sizeof(rowbinary), &err),
                     0);
    assert_int_equal(upm_ch_insert(c, "events", NULL, "JSONEachRow", "{\"a\":1}\n", 8, &err), 0);
    assert_int_equal(server_nreqs(&f.srv), 2);
    char *q = url_param(request_line(&f.srv.reqs[0]), "query");
    assert_string_equal(q, "INSERT INTO events_local (item_id, attempt_id) FORMAT RowBinary");
    free(q);
    assert_int_equal(f.srv.reqs[0].body_len, sizeof(rowbinary));
    assert_memory_equal(f.srv.reqs[0].body, rowbinary, sizeof(rowbinary));
    q = url_param(request_line(&f.srv.reqs[1]), "query");
    assert_string_equal(q, "INSERT INTO events FORMAT JSONEachRow");
    free(q);
    assert_string_equal(f.srv.reqs[1].body, "{\"a\":1}\n");
    upm_ch_client_destroy(c);
    server_stop(&f.srv);
}

static void test_retriable_252_then_ok_retry_is_byte_identical(void **state)
{
    struct fixture f;
    fixture_init(&f);
    server_script(&f.srv,
                  (struct step[]){
                      {.status = 500,
                       .body = "Code: 252, e.displayText() = DB::Exception: Too many parts (300). "
                               "Merges are processing significantly slower than inserts., "
                               "e.what() = DB::Exception\n"},
                      {.status = 200, .body = ""}},
                  2);
    struct upm_prom_registry *reg = upm_prom_registry_create();
    struct upm_ch_client *c = client_new(&f.cfg, reg);
    struct upm_ch_setting s[] = {{"insert_quorum", "2"}};
    struct upm_ch_error err;
    assert_int_equal(upm_ch_insert_ex(c, "events_local", NULL, "RowBinary", rowbinary,
                                      sizeof(rowbinary), s, 1, &err),
                     0);
    assert_int_equal(err.attempts, 2);
    assert_int_equal(err.code, 0);
    assert_int_equal(server_nreqs(&f.srv), 2);
    /* Same query string, same settings, same bytes: block deduplication works. */
    assert_string_equal(request_line(&f.srv.reqs[0]), request_line(&f.srv.reqs[1]));
    assert_int_equal(f.srv.reqs[0].body_len, f.srv.reqs[1].body_len);
    assert_memory_equal(f.srv.reqs[0].body, f.srv.reqs[1].body, f.srv.reqs[0].body_len);
    assert_memory_equal(f.srv.reqs[1].body, rowbinary, sizeof(rowbinary));

    struct upm_prom_metric *m = upm_prom_counter(reg, "upmon_clickhouse_requests_total", NULL, 2,
                                                 (const char *[]){"kind", "result"});
    assert_non_null(m);
    assert_true(upm_prom_value(upm_prom_series_get(m, (const char *[]){"insert", "ok"})) == 1.0);
    assert_true(upm_prom_value(upm_prom_series_get(m, (const char *[]){"insert", "error"})) == 0.0);
    m = upm_prom_counter(reg, "upmon_clickhouse_retries_total", NULL, 0, NULL);
    assert_true(upm_prom_value(upm_prom_series_get(m, NULL)) == 1.0);
    m = upm_prom_counter(reg, "upmon_clickhouse_insert_bytes_total", NULL, 0, NULL);
    assert_true(upm_prom_value(upm_prom_series_get(m, NULL)) == (double)sizeof(rowbinary));
    struct upm_buf text;
    upm_buf_init(&text, 0);
    assert_int_equal(upm_prom_render(reg, &text), 0);
    /* Two attempts observed in the duration histogram. */
    assert_non_null(strstr(text.data, "upmon_clickhouse_request_seconds_count{kind=\"insert\"} 2"));
    upm_buf_free(&text);
    upm_ch_client_destroy(c);
    upm_prom_registry_destroy(reg);
    server_stop(&f.srv);
}

static void test_syntax_error_not_retried(void **state)
{
    struct fixture f;
    fixture_init(&f);
    server_script(&f.srv,
                  (struct step[]){{.status = 400,
                                   .headers = "X-ClickHouse-Exception-Code: 62\r\n",
                                   .body = "Code: 62. DB::Exception: Syntax error: failed at "
                                           "position 1 ('SELEC'): SELEC 1. Expected one of: "
                                           "SELECT. (SYNTAX_ERROR) (version 24.3.1.1)\n"}},
                  1);
    struct upm_ch_client *c = client_new(&f.cfg, NULL);
    struct upm_buf out;
    upm_buf_init(&out, 0);
    struct upm_ch_error err;
    assert_int_equal(upm_ch_query(c, "SELEC 1", &out, &err), -1);
    assert_int_equal(err.http_status, 400);
    assert_int_equal(err.code, 62);
    assert_false(err.retriable);
    assert_int_equal(err.attempts, 1);
    assert_int_equal(err.curl_code, 0);
    assert_int_equal(strncmp(err.message, "Code: 62. DB::Exception: Syntax error", 37), 0);
    assert_null(strchr(err.message, '\n'));
    assert_int_equal(out.len, 0);
    assert_int_equal(server_nreqs(&f.srv), 1);
    upm_buf_free(&out);
    upm_ch_client_destroy(c);
    server_stop(&f.srv);
}

static void test_old_server_unknown_table_from_body(void **state)
{
    struct fixture f;
    fixture_init(&f);
    /* 18.16: no exception header, status 500, code only in the body. */
    server_script(&f.srv,
                  (struct step[]){{.status = 500,
                                   .body = "Code: 60, e.displayText() = DB::Exception: Table "
                                           "upmon.nope doesn't exist., e.what() = "
                                           "DB::Exception\n"}},
                  1);
    struct upm_ch_client *c = client_new(&f.cfg, NULL);
    struct upm_ch_error err;
    assert_int_equal(upm_ch_exec(c, "SELECT * FROM nope", &err), -1);
    assert_int_equal(err.http_status, 500);
    assert_int_equal(err.code, 60);
    assert_false(err.retriable);
    assert_int_equal(err.attempts, 1);
    assert_non_null(strstr(err.message, "Table upmon.nope doesn't exist"));
    assert_int_equal(server_nreqs(&f.srv), 1);
    upm_ch_client_destroy(c);
    server_stop(&f.srv);
}

static void test_wrong_path_404(void **state)
{
    struct fixture f;
    fixture_init(&f);
    snprintf(f.url, sizeof(f.url), "http://127.0.0.1:%d/wrong", f.srv.port);
    struct upm_ch_client *c = client_new(&f.cfg, NULL);
    struct upm_ch_error err;
    assert_int_equal(upm_ch_exec(c, "SELECT 1", &err), -1);
    assert_int_equal(err.http_status, 404);
    assert_int_equal(err.code, 0);
    assert_false(err.retriable);
    assert_int_equal(err.attempts, 1);
    assert_non_null(strstr(err.message, "404"));
    assert_non_null(strstr(err.message, "There is no handle /wrong"));
    assert_int_equal(server_nreqs(&f.srv), 1);
    assert_int_equal(strncmp(request_line(&f.srv.reqs[0]), "POST /wrong?", 12), 0);
    upm_ch_client_destroy(c);
    server_stop(&f.srv);
}

static void test_connection_refused_is_retriable(void **state)
{
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", dead_port());
    char *urls[] = {url};
    struct upm_ch_config cfg = {.urls = {.items = urls, .count = 1},
                                .connect_timeout_ms = 1000,
                                .query_timeout_ms = 2000,
                                .retries = 0,
                                .backoff_initial_ms = 1,
                                .backoff_max_ms = 1,
                                .max_response_bytes = 1024};
    struct upm_ch_client *c = client_new(&cfg, NULL);
    struct upm_ch_error err;
    assert_int_equal(upm_ch_exec(c, "SELECT 1", &err), -1);
    assert_int_equal(err.curl_code, CURLE_COULDNT_CONNECT);
    assert_true(err.retriable);
    assert_int_equal(err.http_status, 0);
    assert_int_equal(err.code, 0);
    assert_int_equal(err.attempts, 1);
    assert_int_equal(strncmp(err.message, "curl: ", 6), 0);
    upm_ch_client_destroy(c);
}

static void test_server_never_answers_times_out(void **state)
{
    struct fixture f;
    fixture_init(&f);
    server_script(&f.srv, (struct step[]){{.hang = true}}, 1);
    f.cfg.query_timeout_ms = 300;
    f.cfg.retries = 0;
    struct upm_ch_client *c = client_new(&f.cfg, NULL);
    struct upm_ch_error err;
    int64_t t0 = upm_clock_mono_ns();
    assert_int_equal(upm_ch_exec(c, "SELECT sleep(3)", &err), -1);
    int64_t elapsed = ms_since(t0);
    assert_int_equal(err.curl_code, CURLE_OPERATION_TIMEDOUT);
    assert_true(err.retriable);
    assert_int_equal(err.attempts, 1);
    assert_true(elapsed >= 250);
    assert_true(elapsed < 300 + 1500);
    upm_ch_client_destroy(c);
    server_stop(&f.srv);
}

static void test_failover_to_second_url(void **state)
{
    struct fixture f;
    fixture_init(&f);
    char dead[64];
    snprintf(dead, sizeof(dead), "http://127.0.0.1:%d", dead_port());
    f.urls[0] = dead;
    f.urls[1] = f.url;
    f.cfg.urls.count = 2;
    f.cfg.retries = 1;
    server_script(&f.srv, (struct step[]){{.status = 200, .body = "42\n"}}, 1);
    struct upm_ch_client *c = client_new(&f.cfg, NULL);
    struct upm_buf out;
    upm_buf_init(&out, 0);
    struct upm_ch_error err;
    assert_int_equal(upm_ch_query(c, "SELECT 42", &out, &err), 0);
    assert_string_equal(out.data, "42\n");
    assert_int_equal(err.attempts, 2);
    assert_int_equal(server_nreqs(&f.srv), 1);
    /* The client stays on the replica that worked. */
    assert_int_equal(upm_ch_query(c, "SELECT 42", &out, &err), 0);
    assert_int_equal(err.attempts, 1);
    assert_int_equal(server_nreqs(&f.srv), 2);
    upm_buf_free(&out);
    upm_ch_client_destroy(c);
    server_stop(&f.srv);
}

static void test_response_over_limit(void **state)
{
    struct fixture f;
    fixture_init(&f);
    f.cfg.max_response_bytes = 1024;
    server_script(&f.srv,
                  (struct step[]){{.status = 200, .fill = 4096},
                                  {.status = 200, .fill = 4096, .no_length = true},
                                  {.status = 200, .fill = 1024},
                                  {.status = 200, .fill = 200}},
                  4);
    struct upm_ch_client *c = client_new(&f.cfg, NULL);
    struct upm_buf out;
    upm_buf_init(&out, 0);
    struct upm_ch_error err;
    /* Announced by Content-Length. */
    assert_int_equal(upm_ch_query(c, "SELECT big", &out, &err), -1);
    assert_false(err.retriable);
    assert_int_equal(err.attempts, 1);
    assert_int_equal(out.len, 0);
    assert_non_null(strstr(err.message, "max_response_bytes"));
    /* Discovered while streaming. */
    assert_int_equal(upm_ch_query(c, "SELECT big", &out, &err), -1);
    assert_false(err.retriable);
    assert_int_equal(err.attempts, 1);
    assert_int_equal(out.len, 0);
    assert_int_equal(server_nreqs(&f.srv), 2);
    /* Exactly the limit is fine. */
    assert_int_equal(upm_ch_query(c, "SELECT big", &out, &err), 0);
    assert_int_equal(out.len, 1024);
    /* The output buffer's own limit counts too. */
    struct upm_buf small;
    upm_buf_init(&small, 100);
    assert_int_equal(upm_ch_query(c, "SELECT big", &small, &err), -1);
    assert_false(err.retriable);
    assert_int_equal(small.len, 0);
    upm_buf_free(&small);
    upm_buf_free(&out);
    upm_ch_client_destroy(c);
    server_stop(&f.srv);
}

static void test_retries_exhausted_reports_last_error(void **state)
{
    struct fixture f;
    fixture_init(&f);
    f.cfg.retries = 2;
    server_script(&f.srv,
                  (struct step[]){{.status = 503,
                                   .body = "Code: 242. DB::Exception: Table is in readonly "
                                           "mode: first. (TABLE_IS_READ_ONLY)\n"},
                                  {.status = 503,
                                   .body = "Code: 242. DB::Exception: Table is in readonly "
                                           "mode: second. (TABLE_IS_READ_ONLY)\n"},
                                  {.status = 500,
                                   .body = "Code: 999. DB::Exception: Keeper session "
                                           "expired: third. (KEEPER_EXCEPTION)\n"},
                                  {.status = 200, .body = "never reached\n"}},
                  4);
    struct upm_ch_client *c = client_new(&f.cfg, NULL);
    struct upm_ch_error err;
    assert_int_equal(upm_ch_exec(c, "INSERT INTO t SELECT 1", &err), -1);
    assert_int_equal(err.attempts, 3);
    assert_int_equal(err.code, 999);
    assert_int_equal(err.http_status, 500);
    assert_true(err.retriable);
    assert_non_null(strstr(err.message, "third"));
    assert_int_equal(server_nreqs(&f.srv), 3);
    upm_ch_client_destroy(c);
    server_stop(&f.srv);
}

struct stopper {
    volatile int *flag;
    int after_ms;
};

static void *stop_later(void *arg)
{
    struct stopper *s = arg;
    upm_clock_sleep_ms(s->after_ms, NULL);
    *s->flag = 1;
    return NULL;
}

static void test_stop_flag_interrupts_backoff(void **state)
{
    struct fixture f;
    fixture_init(&f);
    f.srv.fallback = (struct step){.status = 503, .body = "Service Unavailable\n"};
    f.cfg.retries = 5;
    f.cfg.backoff_initial_ms = 3000;
    f.cfg.backoff_max_ms = 5000;
    struct upm_ch_client *c = client_new(&f.cfg, NULL);
    volatile int stop = 0;
    upm_ch_client_set_stop(c, &stop);
    struct stopper st = {.flag = &stop, .after_ms = 150};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, stop_later, &st), 0);
    struct upm_ch_error err;
    int64_t t0 = upm_clock_mono_ns();
    assert_int_equal(upm_ch_exec(c, "SELECT 1", &err), -1);
    int64_t elapsed = ms_since(t0);
    pthread_join(t, NULL);
    /* Five backoffs of up to 3-5 s each would take far longer. */
    assert_true(elapsed < 1000);
    assert_true(err.attempts < 6);
    assert_int_equal(err.http_status, 503);
    assert_true(err.retriable);

    /* Already stopping: one attempt, no sleep. */
    size_t before = server_nreqs(&f.srv);
    t0 = upm_clock_mono_ns();
    assert_int_equal(upm_ch_exec(c, "SELECT 1", &err), -1);
    assert_true(ms_since(t0) < 500);
    assert_int_equal(err.attempts, 1);
    assert_int_equal(server_nreqs(&f.srv), before + 1);
    upm_ch_client_destroy(c);
    server_stop(&f.srv);
}

static void test_exception_after_200(void **state)
{
    struct fixture f;
    fixture_init(&f);
    server_script(
        &f.srv,
        (struct step[]){{.status = 200,
                         .body = "0\n1\nCode: 395, e.displayText() = DB::Exception: Value passed "
                                 "to 'throwIf' function is non-zero, e.what() = DB::Exception\n"},
                        {.status = 200,
                         .body = "0\n1\nCode: 159. DB::Exception: Timeout exceeded: elapsed 5.1 "
                                 "seconds, maximum: 5. (TIMEOUT_EXCEEDED) (version 24.3.1)\n"},
                        {.status = 200, .body = "0\n1\n2\n"}},
        3);
    struct upm_ch_client *c = client_new(&f.cfg, NULL);
    struct upm_buf out;
    upm_buf_init(&out, 0);
    struct upm_ch_error err;
    assert_int_equal(upm_ch_query(c, "SELECT throwIf(number = 2) FROM numbers(3)", &out, &err), -1);
    assert_int_equal(err.http_status, 200);
    assert_int_equal(err.code, 395);
    assert_false(err.retriable);
    assert_int_equal(out.len, 0);
    assert_int_equal(strncmp(err.message, "Code: 395", 9), 0);
    /* A transient mid-stream exception is retried, and the retry's clean
     * result is what the caller sees. */
    assert_int_equal(upm_ch_query(c, "SELECT number FROM numbers(3)", &out, &err), 0);
    assert_int_equal(err.attempts, 2);
    assert_string_equal(out.data, "0\n1\n2\n");
    upm_buf_free(&out);
    upm_ch_client_destroy(c);
    server_stop(&f.srv);
}

static void test_close_without_response_retried(void **state)
{
    struct fixture f;
    fixture_init(&f);
    server_script(&f.srv, (struct step[]){{.status = 0}, {.status = 200, .body = ""}}, 2);
    struct upm_ch_client *c = client_new(&f.cfg, NULL);
    struct upm_ch_error err;
    assert_int_equal(upm_ch_insert(c, "t", NULL, "RowBinary", rowbinary, sizeof(rowbinary), &err),
                     0);
    assert_int_equal(err.attempts, 2);
    assert_int_equal(server_nreqs(&f.srv), 2);
    assert_memory_equal(f.srv.reqs[0].body, f.srv.reqs[1].body, sizeof(rowbinary));
    assert_string_equal(request_line(&f.srv.reqs[0]), request_line(&f.srv.reqs[1]));

    /* With retries off the same failure surfaces as a retriable curl error. */
    server_script(&f.srv, (struct step[]){{.status = 0}}, 1);
    upm_ch_client_destroy(c);
    f.cfg.retries = 0;
    c = client_new(&f.cfg, NULL);
    assert_int_equal(upm_ch_exec(c, "SELECT 1", &err), -1);
    assert_int_equal(err.curl_code, CURLE_GOT_NOTHING);
    assert_true(err.retriable);
    upm_ch_client_destroy(c);
    server_stop(&f.srv);
}

static void test_create_rejects_bad_config(void **state)
{
    char *good[] = {"http://127.0.0.1:8123"};
    struct upm_ch_config base = {.urls = {.items = good, .count = 1},
                                 .connect_timeout_ms = 1000,
                                 .query_timeout_ms = 1000,
                                 .retries = 1,
                                 .backoff_initial_ms = 10,
                                 .backoff_max_ms = 100,
                                 .max_response_bytes = 1024};
    char errstr[256];
    struct upm_ch_client *c = upm_ch_client_create(&base, NULL, errstr, sizeof(errstr));
    assert_non_null(c);
    upm_ch_client_destroy(c);
    upm_ch_client_destroy(NULL);

    struct upm_ch_config cfg = base;
    cfg.urls.count = 0;
    errstr[0] = '\0';
    assert_null(upm_ch_client_create(&cfg, NULL, errstr, sizeof(errstr)));
    assert_non_null(strstr(errstr, "urls"));

    char *ftp[] = {"ftp://127.0.0.1:8123"};
    cfg = base;
    cfg.urls.items = ftp;
    errstr[0] = '\0';
    assert_null(upm_ch_client_create(&cfg, NULL, errstr, sizeof(errstr)));
    assert_non_null(strstr(errstr, "ftp://"));

    /* The second URL is bad: the half-built client is cleaned up (ASan). */
    char *cred[] = {"http://127.0.0.1:8123", "http://bob:hunter2@127.0.0.1:8123"};
    cfg = base;
    cfg.urls.items = cred;
    cfg.urls.count = 2;
    errstr[0] = '\0';
    assert_null(upm_ch_client_create(&cfg, NULL, errstr, sizeof(errstr)));
    assert_true(errstr[0] != '\0');
    assert_null(strstr(errstr, "hunter2"));

    cfg = base;
    cfg.backoff_max_ms = 5;
    errstr[0] = '\0';
    assert_null(upm_ch_client_create(&cfg, NULL, errstr, sizeof(errstr)));
    assert_non_null(strstr(errstr, "backoff"));

    cfg = base;
    cfg.query_timeout_ms = 0;
    assert_null(upm_ch_client_create(&cfg, NULL, errstr, sizeof(errstr)));
    cfg = base;
    cfg.retries = -1;
    assert_null(upm_ch_client_create(&cfg, NULL, errstr, sizeof(errstr)));
    cfg = base;
    cfg.max_response_bytes = 0;
    assert_null(upm_ch_client_create(&cfg, NULL, errstr, sizeof(errstr)));
    cfg = base;
    cfg.password = "a\r\nX-Evil: 1";
    assert_null(upm_ch_client_create(&cfg, NULL, errstr, sizeof(errstr)));
}

/* ------------------------------------------------------------------------ */
/* Parsing and classification, without a server                            */

struct classify_case {
    int curl;
    int status;
    int header_code;
    const char *body;
    int rc;
    int code;
    bool retriable;
};

static void test_classify_table(void **state)
{
    static const struct classify_case cases[] = {
        {0, 200, 0, "1\n", 0, 0, false},
        {0, 200, 0, "Code: 5 items\n", 0, 0, false}, /* data, not an exception */
        {0, 200, 0, "", 0, 0, false},
        {0, 500, 0,
         "Code: 252, e.displayText() = DB::Exception: Too many parts, e.what() = DB::Exception\n",
         -1, 252, true},
        {0, 500, 319, "Code: 319. DB::Exception: Unknown status of insert\n", -1, 319, true},
        {0, 500, 0, "Code: 279. DB::Exception: All connection tries failed\n", -1, 279, true},
        {0, 500, 0, "Code: 289. DB::Exception: Replica is not in quorum\n", -1, 289, true},
        {0, 500, 0, "Code: 209, e.displayText() = DB::NetException: Timeout exceeded\n", -1, 209,
         true},
        {0, 502, 0, "<html>Bad Gateway</html>", -1, 0, true},
        {0, 503, 0, "", -1, 0, true},
        {0, 429, 0, "slow down", -1, 0, true},
        {0, 403, 0, "Forbidden", -1, 0, false},
        {0, 500, 0, "Code: 516. DB::Exception: default: Authentication failed\n", -1, 516, false},
        {0, 500, 0, "Code: 193, e.displayText() = DB::Exception: Wrong password\n", -1, 193, false},
        {0, 500, 0, "Code: 27. DB::Exception: Cannot parse input\n", -1, 27, false},
        {0, 500, 0, "Code: 49. DB::Exception: Logical error\n", -1, 49, false}, /* unknown */
        {0, 500, 999, "", -1, 999, true},
        /* The header wins over the body. */
        {0, 500, 62, "Code: 252. DB::Exception: x\n", -1, 62, false},
        {CURLE_COULDNT_CONNECT, 0, 0, NULL, -1, 0, true},
        {CURLE_OPERATION_TIMEDOUT, 0, 0, NULL, -1, 0, true},
        {CURLE_RECV_ERROR, 0, 0, NULL, -1, 0, true},
        {CURLE_URL_MALFORMAT, 0, 0, NULL, -1, 0, false},
        /* Connection broke after an exception was streamed: the code decides. */
        {CURLE_RECV_ERROR, 200, 0, "row\nCode: 210. DB::NetException: Connection reset\n", -1, 210,
         true},
        {0, 200, 0, "1\nCode: 999. Coordination::Exception: Session expired\n", -1, 999, true},
        /* Looks like one but names no exception class. */
        {0, 200, 0, "1\nCode: 62. Exception: x\n", 0, 0, false},
        {0, 200, 0, "1\nCode: 62. DB::Thing: x\n", 0, 0, false},
        {CURLE_PARTIAL_FILE, 200, 0, "row\nCode: 62. DB::Exception: Syntax error\n", -1, 62, false},
        /* Exception appended to binary data, JSON formats of newer servers. */
        {0, 200, 0,
         "\x01\x02\xff"
         "Code: 241. DB::Exception: Memory limit exceeded\n",
         -1, 241, true},
        {0, 200, 0, "{\"data\":[],\n\"exception\": \"Code: 60. DB::Exception: no table\"}\n", -1,
         60, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct classify_case *k = &cases[i];
        struct upm_ch_error err;
        memset(&err, 0xAA, sizeof(err));
        int rc = upm_ch_error_classify(&err, k->curl, NULL, k->status, k->header_code, k->body,
                                       k->body ? strlen(k->body) : 0);
        if (rc != k->rc || err.code != k->code || err.retriable != k->retriable)
            fail_msg("case %zu: rc=%d code=%d retriable=%d (want %d %d %d) message=%s", i, rc,
                     err.code, err.retriable, k->rc, k->code, k->retriable, err.message);
        if (rc == 0) {
            assert_int_equal(err.http_status, 0);
            assert_int_equal(err.message[0], '\0');
        } else {
            assert_int_equal(err.http_status, k->status);
            assert_int_equal(err.curl_code, k->curl);
            assert_true(err.message[0] != '\0');
            assert_non_null(memchr(err.message, '\0', sizeof(err.message)));
        }
    }
}

static void test_parse_exception_edges(void **state)
{
    char msg[64];
    assert_int_equal(upm_ch_parse_exception(NULL, 0, false, msg, sizeof(msg)), 0);
    assert_string_equal(msg, "");
    assert_int_equal(upm_ch_parse_exception("Code: ", 6, false, msg, sizeof(msg)), 0);
    assert_int_equal(upm_ch_parse_exception("Code: 0. x", 10, false, msg, sizeof(msg)), 0);
    assert_int_equal(upm_ch_parse_exception("Code: 123456. x", 15, false, msg, sizeof(msg)), 0);
    assert_int_equal(upm_ch_parse_exception("Code: x", 7, false, msg, sizeof(msg)), 0);
    /* Leading whitespace is tolerated on an error body. */
    assert_int_equal(upm_ch_parse_exception("\n  Code: 81. x", 14, false, msg, sizeof(msg)), 81);
    assert_string_equal(msg, "Code: 81. x");
    /* Trailing mode ignores loose text and takes the last strict match. */
    const char *two = "Code: 1 row\nCode: 60. DB::Exception: a\nCode: 62. DB::Exception: b\n";
    assert_int_equal(upm_ch_parse_exception(two, strlen(two), true, msg, sizeof(msg)), 62);
    assert_string_equal(msg, "Code: 62. DB::Exception: b");
    /* Not NUL-terminated input: only len bytes are read (ASan checks). */
    char raw[9] = {'C', 'o', 'd', 'e', ':', ' ', '7', '7', '7'};
    assert_int_equal(upm_ch_parse_exception(raw, sizeof(raw), false, msg, sizeof(msg)), 777);

    /* Long messages with control bytes and multi-byte UTF-8 are truncated
     * cleanly. */
    struct upm_buf b;
    upm_buf_init(&b, 0);
    upm_buf_puts(&b, "Code: 62. DB::Exception: \t");
    for (int i = 0; i < 400; i++)
        upm_buf_puts(&b, "\xc3\xa9\n"); /* é and a newline */
    char big[512];
    assert_int_equal(upm_ch_parse_exception(b.data, b.len, false, big, sizeof(big)), 62);
    size_t n = strlen(big);
    assert_true(n <= sizeof(big) - 1);
    assert_true(n > 400);
    assert_null(strchr(big, '\n'));
    assert_null(strchr(big, '\t'));
    /* No partial character at the end: the last byte ends "é" or is ' '. */
    unsigned char last = (unsigned char)big[n - 1];
    assert_true(last == 0xa9 || last == ' ');
    upm_buf_free(&b);
}

static void test_code_table(void **state)
{
    static const int retriable[] = {159, 202, 209, 210, 234, 242, 252,
                                    279, 285, 286, 289, 319, 999};
    static const int permanent[] = {6, 26, 27, 38, 47, 53, 60, 62, 81, 164, 192, 193, 516, 12345};
    for (size_t i = 0; i < sizeof(retriable) / sizeof(retriable[0]); i++) {
        if (!upm_ch_code_retriable(retriable[i]))
            fail_msg("code %d should be retriable", retriable[i]);
        assert_non_null(upm_ch_code_name(retriable[i]));
    }
    for (size_t i = 0; i < sizeof(permanent) / sizeof(permanent[0]); i++) {
        if (upm_ch_code_retriable(permanent[i]))
            fail_msg("code %d should not be retriable", permanent[i]);
    }
    assert_string_equal(upm_ch_code_name(252), "TOO_MANY_PARTS");
    assert_string_equal(upm_ch_code_name(62), "SYNTAX_ERROR");
    assert_string_equal(upm_ch_code_name(319), "UNKNOWN_STATUS_OF_INSERT");
    assert_null(upm_ch_code_name(12345));
}

static void test_config_table(void **state)
{
    static const char *const names[] = {"urls",
                                        "user",
                                        "password",
                                        "database",
                                        "cluster",
                                        "connect_timeout",
                                        "query_timeout",
                                        "retries",
                                        "backoff_initial",
                                        "backoff_max",
                                        "max_response_bytes"};
    assert_int_equal(upm_ch_config_nkeys, sizeof(names) / sizeof(names[0]));
    for (size_t i = 0; i < upm_ch_config_nkeys; i++) {
        const struct upm_config_key *k = &upm_ch_config_keys[i];
        assert_string_equal(k->name, names[i]);
        assert_non_null(k->def);
        assert_non_null(k->description);
        assert_true(k->offset < sizeof(struct upm_ch_config));
        bool secret = (k->flags & UPM_CFG_SECRET) != 0;
        assert_int_equal(secret, strcmp(k->name, "password") == 0);
    }
    assert_int_equal(upm_ch_config_keys[0].type, UPM_CFG_STRING_LIST);
    assert_int_equal(upm_ch_config_keys[5].offset,
                     offsetof(struct upm_ch_config, connect_timeout_ms));
    assert_string_equal(upm_ch_config_keys[5].def, "2s");
    assert_string_equal(upm_ch_config_keys[6].def, "30s");
    assert_string_equal(upm_ch_config_keys[8].def, "100ms");
    assert_string_equal(upm_ch_config_keys[9].def, "5s");
    assert_int_equal(strtoll(upm_ch_config_keys[10].def, NULL, 10), 256LL * 1024 * 1024);
}

/* ------------------------------------------------------------------------ */
/* RowBinary                                                                */

static void expect_bytes(const struct upm_buf *b, const unsigned char *want, size_t n)
{
    assert_int_equal(b->len, n);
    assert_memory_equal(b->data, want, n);
}

static void test_rowbinary_encoders(void **state)
{
    struct upm_buf b;
    upm_buf_init(&b, 0);

    assert_int_equal(upm_ch_rb_u8(&b, 0xAB), 0);
    expect_bytes(&b, (const unsigned char[]){0xAB}, 1);
    upm_buf_reset(&b);
    assert_int_equal(upm_ch_rb_u16(&b, 0x1234), 0);
    expect_bytes(&b, (const unsigned char[]){0x34, 0x12}, 2);
    upm_buf_reset(&b);
    assert_int_equal(upm_ch_rb_u32(&b, 0xDEADBEEF), 0);
    expect_bytes(&b, (const unsigned char[]){0xEF, 0xBE, 0xAD, 0xDE}, 4);
    upm_buf_reset(&b);
    assert_int_equal(upm_ch_rb_u64(&b, UINT64_C(0x0102030405060708)), 0);
    expect_bytes(&b, (const unsigned char[]){8, 7, 6, 5, 4, 3, 2, 1}, 8);
    upm_buf_reset(&b);
    assert_int_equal(upm_ch_rb_i64(&b, -2), 0);
    expect_bytes(&b, (const unsigned char[]){0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}, 8);
    upm_buf_reset(&b);
    assert_int_equal(upm_ch_rb_i64(&b, INT64_MIN), 0);
    expect_bytes(&b, (const unsigned char[]){0, 0, 0, 0, 0, 0, 0, 0x80}, 8);
    upm_buf_reset(&b);
    assert_int_equal(upm_ch_rb_f64(&b, 1.0), 0);
    expect_bytes(&b, (const unsigned char[]){0, 0, 0, 0, 0, 0, 0xF0, 0x3F}, 8);
    upm_buf_reset(&b);
    assert_int_equal(upm_ch_rb_f64(&b, -0.5), 0);
    expect_bytes(&b, (const unsigned char[]){0, 0, 0, 0, 0, 0, 0xE0, 0xBF}, 8);
    upm_buf_reset(&b);
    assert_int_equal(upm_ch_rb_string(&b, "abc", 3), 0);
    expect_bytes(&b, (const unsigned char[]){3, 'a', 'b', 'c'}, 4);
    upm_buf_reset(&b);
    assert_int_equal(upm_ch_rb_string(&b, "", 0), 0);
    expect_bytes(&b, (const unsigned char[]){0}, 1);
    upm_buf_reset(&b);
    /* Embedded NUL is data, not a terminator. */
    assert_int_equal(upm_ch_rb_string(&b, "a\0b", 3), 0);
    expect_bytes(&b, (const unsigned char[]){3, 'a', 0, 'b'}, 4);
    upm_buf_reset(&b);
    char s300[300];
    memset(s300, 'q', sizeof(s300));
    assert_int_equal(upm_ch_rb_string(&b, s300, sizeof(s300)), 0);
    assert_int_equal(b.len, 302);
    assert_int_equal((unsigned char)b.data[0], 0xAC); /* 300 = 0b10_0101100 */
    assert_int_equal((unsigned char)b.data[1], 0x02);
    assert_memory_equal(b.data + 2, s300, sizeof(s300));
    upm_buf_reset(&b);
    assert_int_equal(upm_ch_rb_datetime(&b, 1700000000u), 0); /* 0x6553F100 */
    expect_bytes(&b, (const unsigned char[]){0x00, 0xF1, 0x53, 0x65}, 4);
    upm_buf_reset(&b);
    assert_int_equal(upm_ch_rb_date(&b, 19723), 0); /* 2024-01-01, 0x4D0B */
    expect_bytes(&b, (const unsigned char[]){0x0B, 0x4D}, 2);
    upm_buf_free(&b);

    /* At a limit a string is all or nothing. */
    upm_buf_init(&b, 5);
    assert_int_equal(upm_ch_rb_u8(&b, 1), 0);
    assert_int_equal(upm_ch_rb_string(&b, "abcd", 4), -1);
    assert_int_equal(b.len, 1);
    assert_int_equal(upm_ch_rb_string(&b, "abc", 3), 0);
    assert_int_equal(b.len, 5);
    assert_int_equal(upm_ch_rb_u8(&b, 1), -1);
    upm_buf_free(&b);
}

int main(void)
{
    upm_log_set_level(UPM_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_query_returns_body),
        cmocka_unit_test(test_auth_in_headers_never_in_url_or_log),
        cmocka_unit_test(test_database_and_settings_params),
        cmocka_unit_test(test_insert_query_param_and_body),
        cmocka_unit_test(test_retriable_252_then_ok_retry_is_byte_identical),
        cmocka_unit_test(test_syntax_error_not_retried),
        cmocka_unit_test(test_old_server_unknown_table_from_body),
        cmocka_unit_test(test_wrong_path_404),
        cmocka_unit_test(test_connection_refused_is_retriable),
        cmocka_unit_test(test_server_never_answers_times_out),
        cmocka_unit_test(test_failover_to_second_url),
        cmocka_unit_test(test_response_over_limit),
        cmocka_unit_test(test_retries_exhausted_reports_last_error),
        cmocka_unit_test(test_stop_flag_interrupts_backoff),
        cmocka_unit_test(test_exception_after_200),
        cmocka_unit_test(test_close_without_response_retried),
        cmocka_unit_test(test_create_rejects_bad_config),
        cmocka_unit_test(test_classify_table),
        cmocka_unit_test(test_parse_exception_edges),
        cmocka_unit_test(test_code_table),
        cmocka_unit_test(test_config_table),
        cmocka_unit_test(test_rowbinary_encoders),
    };
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
