#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "upmon/alloc.h"
#include "upmon/buf.h"
#include "upmon/clock.h"
#include "upmon/k8s.h"
#include "upmon/log.h"

/* A temporary directory per test run for files the code under test reads. */
static char tmpdir[64];

static void write_file(const char *name, const char *text)
{
    char path[256];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void b64(const char *in, char *out, size_t out_size)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = strlen(in), o = 0;

    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)(unsigned char)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)(unsigned char)in[i + 1] << 8;
        if (i + 2 < n)
            v |= (unsigned char)in[i + 2];
        assert_true(o + 4 < out_size);
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = i + 1 < n ? tbl[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? tbl[v & 63] : '=';
    }
    out[o] = '\0';
}

/* ------------------------------------------------------------------------ */
/* base64 and kubeconfig                                                    */

static void test_base64(void **state)
{
    struct upm_buf b;

    upm_buf_init(&b, 0);
    assert_int_equal(upm_k8s_base64_decode("aGVsbG8=", 8, &b), 0);
    assert_int_equal(b.len, 5);
    assert_memory_equal(b.data, "hello", 5);
    assert_int_equal(upm_k8s_base64_decode("aGVs\nbG8", 8, &b), 0); /* no padding, wrapped */
    assert_string_equal(b.data, "hello");
    assert_int_equal(upm_k8s_base64_decode("aGV*bG8=", 8, &b), -1);
    assert_int_equal(upm_k8s_base64_decode("aGVsbG8=x", 9, &b), -1); /* data after padding */
    assert_int_equal(upm_k8s_base64_decode("a", 1, &b), -1);         /* 6 bits: not a byte */
    upm_buf_free(&b);
}

#define KC_TOKEN                                                                                   \
    "apiVersion: v1\n"                                                                             \
    "kind: Config\n"                                                                               \
    "current-context: dev\n"                                                                       \
    "clusters:\n"                                                                                  \
    "- name: other\n"                                                                              \
    "  cluster: {server: \"https://wrong:1\"}\n"                                                   \
    "- name: c1\n"                                                                                 \
    "  cluster:\n"                                                                                 \
    "    server: https://127.0.0.1:6443/\n"                                                        \
    "    certificate-authority-data: %s\n"                                                         \
    "contexts:\n"                                                                                  \
    "- name: prod\n"                                                                               \
    "  context: {cluster: other, user: u2}\n"                                                      \
    "- name: dev\n"                                                                                \
    "  context: {cluster: c1, user: u1, namespace: x}\n"                                           \
    "users:\n"                                                                                     \
    "- name: u2\n"                                                                                 \
    "  user: {token: wrong}\n"                                                                     \
    "- name: u1\n"                                                                                 \
    "  user:\n"                                                                                    \
    "    token: s3cr3t-token\n"

static void test_kubeconfig_token_ca_data(void **state)
{
    char ca64[256], yaml[2048], err[256];
    struct upm_k8s_creds c;

    b64("-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n", ca64, sizeof(ca64));
    snprintf(yaml, sizeof(yaml), KC_TOKEN, ca64);
    assert_int_equal(upm_k8s_kubeconfig_parse(yaml, strlen(yaml), NULL, &c, err, sizeof(err)), 0);
    assert_string_equal(c.server, "https://127.0.0.1:6443"); /* trailing slash dropped */
    assert_string_equal(c.token, "s3cr3t-token");
    assert_null(c.token_path);
    assert_string_equal(c.ca.data, "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n");
    assert_int_equal(c.cert.len, 0);
    upm_k8s_creds_free(&c);
}

static void test_kubeconfig_client_cert_files(void **state)
{
    char yaml[1024], err[256], path[256];
    char cert64[128];
    struct upm_k8s_creds c;

    write_file("ca.pem", "CA-PEM\n");
    write_file("key.pem", "KEY-PEM\n");
    b64("CERT-PEM\n", cert64, sizeof(cert64));
    snprintf(yaml, sizeof(yaml),
             "current-context: a\n"
             "clusters: [{name: c, cluster: {server: 'https://h:1', certificate-authority: "
             "ca.pem}}]\n"
             "contexts: [{name: a, context: {cluster: c, user: u}}]\n"
             "users: [{name: u, user: {client-certificate-data: %s, client-key: %s/key.pem}}]\n",
             cert64, tmpdir);
    snprintf(path, sizeof(path), "%s/kubeconfig", tmpdir);
    write_file("kubeconfig", yaml);
    /* Relative paths resolve against the kubeconfig's directory. */
    assert_int_equal(upm_k8s_kubeconfig_load(path, &c, err, sizeof(err)), 0);
    assert_string_equal(c.ca.data, "CA-PEM\n");
    assert_string_equal(c.cert.data, "CERT-PEM\n");
    assert_string_equal(c.key.data, "KEY-PEM\n");
    assert_null(c.token);
    upm_k8s_creds_free(&c);
    /* With file references disallowed (fuzzing) the same text fails. */
    assert_int_equal(upm_k8s_kubeconfig_parse(yaml, strlen(yaml), "", &c, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "certificate-authority"));
}

static void expect_kc_error(const char *yaml, const char *needle)
{
    struct upm_k8s_creds c;
    char err[256] = "";

    assert_int_equal(upm_k8s_kubeconfig_parse(yaml, strlen(yaml), "", &c, err, sizeof(err)), -1);
    if (!strstr(err, needle))
        fail_msg("error \"%s\" does not mention \"%s\"", err, needle);
    assert_null(c.server);
}

static void test_kubeconfig_errors(void **state)
{
    expect_kc_error("clusters: []\n", "current-context");
    expect_kc_error("current-context: x\ncontexts: []\n", "context \"x\" not found");
    expect_kc_error("current-context: a\ncontexts: [{name: a, context: {cluster: c, user: u}}]\n",
                    "cluster of context");
    expect_kc_error("current-context: a\n"
                    "clusters: [{name: c, cluster: {server: 'ftp://h'}}]\n"
                    "contexts: [{name: a, context: {cluster: c, user: u}}]\n",
                    "server");
    expect_kc_error("current-context: a\n"
                    "clusters: [{name: c, cluster: {server: 'https://h', "
                    "certificate-authority-data: '!!!'}}]\n"
                    "contexts: [{name: a, context: {cluster: c}}]\n",
                    "base64");
    expect_kc_error("current-context: a\n"
                    "clusters: [{name: c, cluster: {server: 'https://h'}}]\n"
                    "contexts: [{name: a, context: {cluster: c, user: u}}]\n"
                    "users: [{name: u, user: {client-certificate-data: QUJD}}]\n",
                    "client-key");
    expect_kc_error("current-context: a\n"
                    "clusters: [{name: c, cluster: {server: 'https://h'}}]\n"
                    "contexts: [{name: a, context: {cluster: c, user: nobody}}]\n",
                    "user \"nobody\" not found");
    expect_kc_error("a: [unclosed\n", "kubeconfig:");
    expect_kc_error("- just\n- a list\n", "mapping");
}

/* ------------------------------------------------------------------------ */
/* A scripted fake transport                                                */

struct reply {
    int status; /* 0 = transport failure */
    bool timed_out;
    int64_t retry_after_ms;
    const char *body;
    const char *chunks[6]; /* for a stream: delivered one by one */
};

struct fake {
    struct reply replies[12];
    int n, next;
    char paths[12][256];
    char tokens[12][64];
    char methods[12][8];
    int stop_after_chunks;
};

static int fake_perform(void *ctx, const struct upm_k8s_request *req, struct upm_k8s_response *resp)
{
    struct fake *f = ctx;
    const struct reply *r;
    int i = f->next;

    assert_true(f->next < f->n);
    r = &f->replies[f->next++];
    snprintf(f->paths[i], sizeof(f->paths[i]), "%s", req->path);
    snprintf(f->tokens[i], sizeof(f->tokens[i]), "%s", req->token ? req->token : "");
    snprintf(f->methods[i], sizeof(f->methods[i]), "%s", req->method);
    memset(resp, 0, sizeof(*resp));
    if (r->status == 0) {
        resp->timed_out = r->timed_out;
        snprintf(resp->transport_error, sizeof(resp->transport_error), "%s",
                 r->timed_out ? "Operation timed out" : "Connection refused");
        return -1;
    }
    resp->status = r->status;
    resp->retry_after_ms = r->retry_after_ms;
    if (r->body && req->on_data(req->opaque, r->body, strlen(r->body)) != 0)
        return 0;
    for (int c = 0; c < 6 && r->chunks[c]; c++)
        if (req->on_data(req->opaque, r->chunks[c], strlen(r->chunks[c])) != 0)
            break;
    return 0;
}

static struct upm_k8s_client *client_with(struct fake *f, const char *token)
{
    struct upm_k8s_creds creds = {0};
    struct upm_k8s_transport tp = {fake_perform, NULL, f};
    struct upm_k8s_client *c;
    char err[256];

    creds.server = upm_strdup("https://fake");
    creds.token = token ? upm_strdup(token) : NULL;
    c = upm_k8s_client_create_creds(&creds, 1000, 60000, &tp, err, sizeof(err));
    assert_non_null(c);
    return c;
}

#define STATUS(code, reason, msg)                                                                  \
    "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"status\":\"Failure\",\"message\":\"" msg         \
    "\",\"reason\":\"" reason "\",\"code\":" #code "}"

static void test_request_ok_and_json(void **state)
{
    struct fake f = {.n = 1, .replies = {{200, false, 0, "{\"a\":1}", {NULL}}}};
    struct upm_k8s_client *c = client_with(&f, "tok");
    struct upm_k8s_error err;
    cJSON *out = NULL;
    cJSON *body = cJSON_CreateObject();

    cJSON_AddStringToObject(body, "x", "y");
    assert_int_equal(
        upm_k8s_request(c, "POST", "/api/v1/namespaces/n/configmaps", body, 0, &out, &err), 0);
    assert_int_equal(cJSON_GetObjectItem(out, "a")->valueint, 1);
    assert_string_equal(f.tokens[0], "tok");
    assert_string_equal(f.methods[0], "POST");
    cJSON_Delete(out);
    cJSON_Delete(body);
    upm_k8s_client_destroy(c);
}

static void test_error_mapping(void **state)
{
    struct fake f = {
        .n = 8,
        .replies =
            {
                {409, false, 0, STATUS(409, "Conflict", "the object has been modified"), {NULL}},
                {429, false, 7000, STATUS(429, "TooManyRequests", "slow down"), {NULL}},
                {503, false, 0, "<html>bad gateway</html>", {NULL}},
                {0, true, 0, NULL, {NULL}},
                {0, false, 0, NULL, {NULL}},
                {404, false, 0, STATUS(404, "NotFound", "leases \\\"x\\\" not found"), {NULL}},
                {403,
                 false,
                 0,
                 STATUS(403, "Forbidden",
                        "leases.coordination.k8s.io \\\"x\\\" is forbidden: User "
                        "\\\"system:serviceaccount:ns:sa\\\" cannot update resource "
                        "\\\"leases\\\" in API group \\\"coordination.k8s.io\\\" in the "
                        "namespace \\\"ns\\\""),
                 {NULL}},
                {200, false, 0, "not json", {NULL}},
            },
    };
    struct upm_k8s_client *c = client_with(&f, "tok");
    struct upm_k8s_error err;
    cJSON *out = (cJSON *)&f; /* must be reset to NULL on failure */
    const char *lease = "/apis/coordination.k8s.io/v1/namespaces/ns/leases/x";

    assert_int_equal(upm_k8s_request(c, "PUT", lease, NULL, 0, &out, &err), -1);
    assert_null(out);
    assert_int_equal(err.kind, UPM_K8S_ERR_CONFLICT);
    assert_false(err.retriable);
    assert_string_equal(err.reason, "Conflict");

    assert_int_equal(upm_k8s_request(c, "GET", lease, NULL, 0, &out, &err), -1);
    assert_int_equal(err.kind, UPM_K8S_ERR_THROTTLED);
    assert_true(err.retriable);
    assert_int_equal(err.retry_after_ms, 7000);

    assert_int_equal(upm_k8s_request(c, "GET", lease, NULL, 0, &out, &err), -1);
    assert_int_equal(err.kind, UPM_K8S_ERR_SERVER);
    assert_true(err.retriable);
    assert_int_equal(err.http_status, 503);

    assert_int_equal(upm_k8s_request(c, "GET", lease, NULL, 0, &out, &err), -1);
    assert_int_equal(err.kind, UPM_K8S_ERR_TIMEOUT);
    assert_true(err.retriable);
    assert_int_equal(err.http_status, 0);

    assert_int_equal(upm_k8s_request(c, "GET", lease, NULL, 0, &out, &err), -1);
    assert_int_equal(err.kind, UPM_K8S_ERR_TRANSPORT);
    assert_true(err.retriable);
    assert_non_null(strstr(err.message, "Connection refused"));

    assert_int_equal(upm_k8s_request(c, "GET", lease, NULL, 0, &out, &err), -1);
    assert_int_equal(err.kind, UPM_K8S_ERR_NOT_FOUND);
    assert_false(err.retriable);

    /* 403: the message names verb, resource, name and namespace, and keeps
     * the server's own explanation. */
    assert_int_equal(upm_k8s_request(c, "PUT", lease, NULL, 0, &out, &err), -1);
    assert_int_equal(err.kind, UPM_K8S_ERR_FORBIDDEN);
    assert_false(err.retriable);
    assert_non_null(strstr(err.message, "verb=update"));
    assert_non_null(strstr(err.message, "resource=leases.coordination.k8s.io"));
    assert_non_null(strstr(err.message, "name=x"));
    assert_non_null(strstr(err.message, "namespace=ns"));
    assert_non_null(strstr(err.message, "cannot update resource"));
    assert_null(strstr(err.message, "tok"));

    assert_int_equal(upm_k8s_request(c, "GET", lease, NULL, 0, &out, &err), -1);
    assert_int_equal(err.kind, UPM_K8S_ERR_INVALID);
    upm_k8s_client_destroy(c);
}

static void test_error_describe_paths(void **state)
{
    struct upm_k8s_response resp = {.status = 403};
    struct upm_k8s_error err;

    upm_k8s_error_from_response(&resp, NULL, 0, "POST",
                                "/apis/coordination.k8s.io/v1/namespaces/ns/leases", &err);
    assert_non_null(strstr(err.message, "verb=create resource=leases.coordination.k8s.io"));
    assert_null(strstr(err.message, "name="));
    upm_k8s_error_from_response(&resp, NULL, 0, "GET", "/api/v1/namespaces/a/pods?limit=5", &err);
    assert_non_null(strstr(err.message, "verb=list resource=pods namespace=a"));
    upm_k8s_error_from_response(&resp, NULL, 0, "GET", "/api/v1/nodes?watch=1", &err);
    assert_non_null(strstr(err.message, "verb=watch resource=nodes"));
    upm_k8s_error_from_response(&resp, NULL, 0, "DELETE", "/api/v1/namespaces/zz", &err);
    assert_non_null(strstr(err.message, "verb=delete resource=namespaces name=zz"));
    resp.status = 204;
    assert_int_equal(upm_k8s_error_from_response(&resp, NULL, 0, "DELETE", "/x", &err), 0);
    assert_int_equal(err.kind, UPM_K8S_OK);
}

/* ------------------------------------------------------------------------ */
/* In-cluster config and token rotation                                      */

static int64_t fake_now;
static int64_t fake_mono(void *o)
{
    return fake_now;
}

static struct upm_k8s_client *incluster_client(struct fake *f)
{
    struct upm_k8s_config cfg = {NULL, tmpdir, 1000, 60000};
    struct upm_k8s_transport tp = {fake_perform, NULL, f};
    struct upm_k8s_client *c;
    char err[256];

    cfg.kubeconfig = (char *)"";
    c = upm_k8s_client_create(&cfg, &tp, err, sizeof(err));
    if (!c)
        fail_msg("create: %s", err);
    return c;
}

static void test_incluster_env_and_files(void **state)
{
    struct upm_k8s_config cfg = {(char *)"", tmpdir, 1000, 60000};
    struct upm_k8s_client *c;
    char err[256];

    unsetenv("KUBERNETES_SERVICE_HOST");
    assert_null(upm_k8s_client_create(&cfg, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "KUBERNETES_SERVICE_HOST"));
    setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
    setenv("KUBERNETES_SERVICE_PORT", "99999", 1);
    assert_null(upm_k8s_client_create(&cfg, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "KUBERNETES_SERVICE_PORT"));
    setenv("KUBERNETES_SERVICE_PORT", "443", 1);
    write_file("token", "");
    assert_null(upm_k8s_client_create(&cfg, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "token"));
    write_file("token", "t1\n");
    write_file("ca.crt", "CA\n");
    c = upm_k8s_client_create(&cfg, NULL, err, sizeof(err)); /* the real curl transport */
    assert_non_null(c);
    assert_string_equal(upm_k8s_client_server(c), "https://10.96.0.1:443");
    upm_k8s_client_destroy(c);
    setenv("KUBERNETES_SERVICE_HOST", "fd00::1", 1);
    c = upm_k8s_client_create(&cfg, NULL, err, sizeof(err));
    assert_string_equal(upm_k8s_client_server(c), "https://[fd00::1]:443");
    upm_k8s_client_destroy(c);
}

static void test_incluster_token_reread_on_401(void **state)
{
    struct fake f = {
        .n = 4,
        .replies =
            {
                {401, false, 0, STATUS(401, "Unauthorized", "Unauthorized"), {NULL}},
                {200, false, 0, "{}", {NULL}},
                {401, false, 0, STATUS(401, "Unauthorized", "Unauthorized"), {NULL}},
                {401, false, 0, STATUS(401, "Unauthorized", "Unauthorized"), {NULL}},
            },
    };
    struct upm_k8s_client *c;
    struct upm_k8s_error err;

    setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1", 1);
    setenv("KUBERNETES_SERVICE_PORT", "6443", 1);
    write_file("token", "old-token\n");
    write_file("ca.crt", "CA\n");
    c = incluster_client(&f);
    write_file("token", "new-token\n"); /* the kubelet rotated it */
    assert_int_equal(upm_k8s_request(c, "GET", "/api/v1/namespaces", NULL, 0, NULL, &err), 0);
    assert_int_equal(f.next, 2);
    assert_string_equal(f.tokens[0], "old-token");
    assert_string_equal(f.tokens[1], "new-token");
    /* Still 401 after one re-read: report it, do not loop. */
    assert_int_equal(upm_k8s_request(c, "GET", "/api/v1/namespaces", NULL, 0, NULL, &err), -1);
    assert_int_equal(err.kind, UPM_K8S_ERR_UNAUTHORIZED);
    assert_int_equal(f.next, 4);
    upm_k8s_client_destroy(c);
}

static void test_incluster_token_reread_periodic(void **state)
{
    struct fake f = {.n = 3,
                     .replies = {{200, false, 0, "{}", {NULL}},
                                 {200, false, 0, "{}", {NULL}},
                                 {200, false, 0, "{}", {NULL}}}};
    struct upm_k8s_client *c;
    struct upm_k8s_error err;

    setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1", 1);
    setenv("KUBERNETES_SERVICE_PORT", "6443", 1);
    write_file("token", "t-a");
    write_file("ca.crt", "CA\n");
    c = incluster_client(&f);
    fake_now = 0;
    upm_k8s_client_set_clock(c, fake_mono, NULL);
    write_file("token", "t-b");
    fake_now = 59 * UPM_NS_PER_S;
    assert_int_equal(upm_k8s_request(c, "GET", "/x", NULL, 0, NULL, &err), 0);
    assert_string_equal(f.tokens[0], "t-a"); /* cached for up to a minute */
    fake_now = 60 * UPM_NS_PER_S;
    assert_int_equal(upm_k8s_request(c, "GET", "/x", NULL, 0, NULL, &err), 0);
    assert_string_equal(f.tokens[1], "t-b");
    /* A failed re-read keeps the old token rather than going anonymous. */
    write_file("token", "");
    fake_now = 200 * UPM_NS_PER_S;
    assert_int_equal(upm_k8s_request(c, "GET", "/x", NULL, 0, NULL, &err), 0);
    assert_string_equal(f.tokens[2], "t-b");
    upm_k8s_client_destroy(c);
}

/* ------------------------------------------------------------------------ */
/* Watch                                                                    */

struct events {
    char log[2048];
    int n;
    int stop_at; /* stop when n reaches this (0 = never) */
};

static int on_event(void *o, const char *type, const cJSON *obj)
{
    struct events *ev = o;
    const cJSON *name =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(obj, "metadata"), "name");
    size_t l = strlen(ev->log);

    snprintf(ev->log + l, sizeof(ev->log) - l, "%s:%s;", type,
             cJSON_IsString(name) ? name->valuestring : "-");
    ev->n++;
    return ev->stop_at && ev->n >= ev->stop_at;
}

static void test_watch_parser_chunks(void **state)
{
    struct upm_k8s_watch_parser p;
    struct events ev = {0};
    const char *stream =
        "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"a\",\"resourceVersion\":\"5\"}}}"
        "\n"
        "{\"type\":\"MODIFIED\",\"object\":{\"metadata\":{\"name\":\"a\",\"resourceVersion\":\"6\"}"
        "}}"
        "\r\n\n"
        "{\"type\":\"BOOKMARK\",\"object\":{\"metadata\":{\"resourceVersion\":\"9\"}}}";

    upm_k8s_watch_parser_init(&p, on_event, &ev);
    /* Byte by byte: lines split anywhere must still parse. */
    for (size_t i = 0; i < strlen(stream); i++)
        assert_int_equal(upm_k8s_watch_parser_feed(&p, stream + i, 1), 0);
    assert_int_equal(ev.n, 2);
    assert_string_equal(p.resource_version, "6");
    assert_int_equal(upm_k8s_watch_parser_finish(&p), 0); /* last line without \n */
    assert_string_equal(ev.log, "ADDED:a;MODIFIED:a;BOOKMARK:-;");
    assert_string_equal(p.resource_version, "9");
    upm_k8s_watch_parser_free(&p);

    upm_k8s_watch_parser_init(&p, on_event, &ev);
    assert_int_equal(upm_k8s_watch_parser_feed(&p, "{\"type\":\"ADDED\"}\n", 17), -1);
    assert_int_equal(p.err.kind, UPM_K8S_ERR_INVALID);
    upm_k8s_watch_parser_free(&p);

    upm_k8s_watch_parser_init(&p, on_event, &ev);
    const char *gone = "{\"type\":\"ERROR\",\"object\":" STATUS(
        410, "Expired", "too old resource version: 5 (12)") "}\n";
    assert_int_equal(upm_k8s_watch_parser_feed(&p, gone, strlen(gone)), -1);
    assert_int_equal(p.err.kind, UPM_K8S_ERR_GONE);
    assert_non_null(strstr(p.err.message, "too old resource version"));
    upm_k8s_watch_parser_free(&p);
}

#define EV(type, name, rv)                                                                         \
    "{\"type\":\"" type "\",\"object\":{\"metadata\":{\"name\":\"" name                            \
    "\",\"resourceVersion\":\"" rv "\"}}}\n"

static void test_list_watch_relists_on_410(void **state)
{
    struct fake f = {
        .n = 6,
        .replies =
            {
                /* list */
                {200,
                 false,
                 0,
                 "{\"kind\":\"LeaseList\",\"metadata\":{\"resourceVersion\":\"10\"},\"items\":["
                 "{\"metadata\":{\"name\":\"x\",\"resourceVersion\":\"8\"}}]}",
                 {NULL}},
                /* watch from 10: one event, then the server ends the stream */
                {200, false, 0, NULL, {EV("MODIFIED", "x", "11"), NULL}},
                /* watch from 11: the history is compacted */
                {200,
                 false,
                 0,
                 NULL,
                 {"{\"type\":\"ERROR\",\"object\":" STATUS(410, "Expired", "too old") "}\n", NULL}},
                /* relist */
                {200,
                 false,
                 0,
                 "{\"metadata\":{\"resourceVersion\":\"40\"},\"items\":["
                 "{\"metadata\":{\"name\":\"x\"}},{\"metadata\":{\"name\":\"y\"}}]}",
                 {NULL}},
                /* watch from 40: HTTP 410 this time */
                {410, false, 0, STATUS(410, "Gone", "gone"), {NULL}},
                /* relist → fn stops at the 6th event */
                {200,
                 false,
                 0,
                 "{\"metadata\":{\"resourceVersion\":\"50\"},\"items\":["
                 "{\"metadata\":{\"name\":\"z\"}}]}",
                 {NULL}},
            },
    };
    struct upm_k8s_client *c = client_with(&f, NULL);
    struct events ev = {.stop_at = 5};
    struct upm_k8s_error err;
    const char *path = "/apis/coordination.k8s.io/v1/namespaces/ns/leases";

    assert_int_equal(upm_k8s_list_watch(c, path, on_event, &ev, NULL, &err), 0);
    assert_string_equal(ev.log, "SYNC:x;MODIFIED:x;SYNC:x;SYNC:y;SYNC:z;");
    assert_int_equal(ev.n, 5);
    assert_int_equal(f.next, 6);
    assert_string_equal(f.paths[0], path);
    assert_non_null(strstr(f.paths[1], "watch=1"));
    assert_non_null(strstr(f.paths[1], "resourceVersion=10"));
    assert_non_null(strstr(f.paths[2], "resourceVersion=11")); /* resumed */
    assert_string_equal(f.paths[3], path);                     /* relisted */
    assert_non_null(strstr(f.paths[4], "resourceVersion=40"));
    upm_k8s_client_destroy(c);
}

/* A watch that meets a 401 re-reads the token and starts its stream afresh:
 * the 401's Status body must not poison the event parser. */
static void test_watch_401_rereads_token(void **state)
{
    struct fake f = {
        .n = 2,
        .replies =
            {
                {401, false, 0, STATUS(401, "Unauthorized", "Unauthorized"), {NULL}},
                {200, false, 0, NULL, {EV("ADDED", "a", "21"), EV("MODIFIED", "a", "22"), NULL}},
            },
    };
    struct upm_k8s_client *c;
    struct upm_k8s_error err;
    struct events ev = {0};
    char rv[64] = "20";

    setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1", 1);
    setenv("KUBERNETES_SERVICE_PORT", "6443", 1);
    write_file("token", "w-old");
    write_file("ca.crt", "CA\n");
    c = incluster_client(&f);
    write_file("token", "w-new");
    assert_int_equal(upm_k8s_watch(c, "/api/v1/pods", rv, sizeof(rv), 5, on_event, &ev, &err), 0);
    assert_string_equal(f.tokens[0], "w-old");
    assert_string_equal(f.tokens[1], "w-new");
    assert_string_equal(ev.log, "ADDED:a;MODIFIED:a;");
    assert_string_equal(rv, "22");
    upm_k8s_client_destroy(c);
}

static void test_list_watch_stops_on_forbidden(void **state)
{
    struct fake f = {.n = 1,
                     .replies = {{403, false, 0, STATUS(403, "Forbidden", "nope"), {NULL}}}};
    struct upm_k8s_client *c = client_with(&f, NULL);
    struct events ev = {0};
    struct upm_k8s_error err;

    assert_int_equal(upm_k8s_list_watch(c, "/api/v1/pods", on_event, &ev, NULL, &err), -1);
    assert_int_equal(err.kind, UPM_K8S_ERR_FORBIDDEN);
    assert_non_null(strstr(err.message, "verb=list resource=pods"));
    upm_k8s_client_destroy(c);
}

static int setup(void **state)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/upmon-k8s-XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    return 0;
}

static int teardown(void **state)
{
    const char *names[] = {"token", "ca.crt", "ca.pem", "key.pem", "kubeconfig"};
    char path[256];

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", tmpdir, names[i]);
        unlink(path);
    }
    rmdir(tmpdir);
    return 0;
}

/* An empty k8s.kubeconfig follows kubectl: $KUBECONFIG, ~/.kube/config, in-cluster. */
static void test_kubeconfig_path_like_kubectl(void **state)
{
    struct upm_k8s_config cfg = {0};
    char path[512], dir[] = "/tmp/upmon-k8s-home-XXXXXX", kube[600], file[700];
    FILE *f;

    (void)state;
    assert_non_null(mkdtemp(dir));
    setenv("HOME", dir, 1);
    unsetenv("KUBECONFIG");
    cfg.kubeconfig = "";
    assert_false(upm_k8s_kubeconfig_path(&cfg, path, sizeof(path)));
    snprintf(kube, sizeof(kube), "%s/.kube", dir);
    assert_int_equal(mkdir(kube, 0700), 0);
    snprintf(file, sizeof(file), "%s/config", kube);
    f = fopen(file, "w");
    assert_non_null(f);
    fclose(f);
    assert_true(upm_k8s_kubeconfig_path(&cfg, path, sizeof(path)));
    assert_string_equal(path, file);
    setenv("KUBECONFIG", "/a/first:/b/second", 1);
    assert_true(upm_k8s_kubeconfig_path(&cfg, path, sizeof(path)));
    assert_string_equal(path, "/a/first");
    cfg.kubeconfig = "/explicit";
    assert_true(upm_k8s_kubeconfig_path(&cfg, path, sizeof(path)));
    assert_string_equal(path, "/explicit");
    unsetenv("KUBECONFIG");
    unlink(file);
    rmdir(kube);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_kubeconfig_token_ca_data),
        cmocka_unit_test(test_kubeconfig_client_cert_files),
        cmocka_unit_test(test_kubeconfig_errors),
        cmocka_unit_test(test_request_ok_and_json),
        cmocka_unit_test(test_error_mapping),
        cmocka_unit_test(test_error_describe_paths),
        cmocka_unit_test(test_incluster_env_and_files),
        cmocka_unit_test(test_incluster_token_reread_on_401),
        cmocka_unit_test(test_incluster_token_reread_periodic),
        cmocka_unit_test(test_watch_parser_chunks),
        cmocka_unit_test(test_list_watch_relists_on_410),
        cmocka_unit_test(test_watch_401_rereads_token),
        cmocka_unit_test(test_list_watch_stops_on_forbidden),
        cmocka_unit_test(test_kubeconfig_path_like_kubectl),
    };

    upm_log_set_level(UPM_LOG_ERROR);
    return cmocka_run_group_tests(tests, setup, teardown);
}
