#include "upmon/k8s.h"
#include "upmon/errstr.h"

#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#include "upmon/alloc.h"
#include "upmon/clock.h"
#include "upmon/log.h"

#define K8S_F(field) offsetof(struct upm_k8s_config, field)

const struct upm_config_key upm_k8s_config_keys[] = {
    {"kubeconfig", UPM_CFG_STRING, K8S_F(kubeconfig), "", 1, 0, NULL,
     "Kubeconfig file; empty = as kubectl: $KUBECONFIG (its first file), else ~/.kube/config "
     "when it exists, else the in-cluster service account.",
     0},
    {"sa_dir", UPM_CFG_STRING, K8S_F(sa_dir), "/var/run/secrets/kubernetes.io/serviceaccount", 1, 0,
     NULL, "Service-account mount holding token and ca.crt (in-cluster).", 0},
    {"timeout", UPM_CFG_DURATION_MS, K8S_F(timeout_ms), "5s", 1, 600000, NULL,
     "Timeout of one API request.", 0},
    {"token_reread", UPM_CFG_DURATION_MS, K8S_F(token_reread_ms), "1m", 1, 60000, NULL,
     "Re-read the in-cluster token at least this often (and after a 401).", 0},
};
const size_t upm_k8s_config_nkeys = sizeof(upm_k8s_config_keys) / sizeof(upm_k8s_config_keys[0]);

/* A kubeconfig or watch line larger than this is not something we talk to. */
#define K8S_MAX_DOC   (4u << 20)
#define K8S_MAX_LINE  (16u << 20)
#define K8S_MAX_BODY  (64u << 20)
#define K8S_MAX_TOKEN (64u << 10)

void upm_k8s_creds_free(struct upm_k8s_creds *c)
{
    if (!c)
        return;
    free(c->server);
    upm_buf_free(&c->ca);
    upm_buf_free(&c->cert);
    upm_buf_free(&c->key);
    free(c->token);
    free(c->token_path);
    memset(c, 0, sizeof(*c));
}

/* ------------------------------------------------------------------------ */
/* Files and base64                                                         */

static int read_file(const char *path, size_t limit, struct upm_buf *out, char *errstr,
                     size_t errstr_size)
{
    FILE *f = fopen(path, "rb");
    char chunk[4096];
    size_t n;
    int rc = -1;

    upm_buf_reset(out);
    if (!f) {
        upm_errstr_set(errstr, errstr_size, "%s: %s", path, strerror(errno));
        return -1;
    }
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (out->len + n > limit || upm_buf_append(out, chunk, n) != 0) {
            upm_errstr_set(errstr, errstr_size, "%s: larger than %zu bytes", path, limit);
            goto out;
        }
    }
    if (ferror(f)) {
        upm_errstr_set(errstr, errstr_size, "%s: read error", path);
        goto out;
    }
    if (upm_buf_reserve(out, 1) != 0) /* data non-NULL even when empty */
        goto out;
    rc = 0;
out:
    fclose(f);
    return rc;
}

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

int upm_k8s_base64_decode(const char *in, size_t len, struct upm_buf *out)
{
    uint32_t acc = 0;
    int bits = 0;
    bool padded = false;

    upm_buf_reset(out);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        int v;

        if (c == ' ' || c == '\n' || c == '\r' || c == '\t')
            continue;
        if (c == '=') {
            padded = true;
            continue;
        }
        if (padded)
            return -1; /* data after padding */
        v = b64_value(c);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (upm_buf_putc(out, (char)((acc >> bits) & 0xff)) != 0)
                return -1;
        }
    }
    /* Six leftover bits cannot come from whole bytes. */
    if (bits >= 6)
        return -1;
    return upm_buf_reserve(out, 1);
}

/* ------------------------------------------------------------------------ */
/* kubeconfig (libyaml document API: the file is small)                     */

static yaml_node_t *map_get(yaml_document_t *doc, yaml_node_t *map, const char *key)
{
    if (!map || map->type != YAML_MAPPING_NODE)
        return NULL;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = yaml_document_get_node(doc, p->key);
        if (k && k->type == YAML_SCALAR_NODE && strlen(key) == k->data.scalar.length &&
            memcmp(k->data.scalar.value, key, k->data.scalar.length) == 0)
            return yaml_document_get_node(doc, p->value);
    }
    return NULL;
}

/* A scalar's text as a new string (NULL if node is not a non-empty scalar
 * or holds a NUL). */
static char *scalar_dup(yaml_node_t *n)
{
    if (!n || n->type != YAML_SCALAR_NODE || n->data.scalar.length == 0)
        return NULL;
    if (memchr(n->data.scalar.value, 0, n->data.scalar.length))
        return NULL;
    return upm_strndup((const char *)n->data.scalar.value, n->data.scalar.length);
}

static bool scalar_eq(yaml_node_t *n, const char *s)
{
    return n && n->type == YAML_SCALAR_NODE && n->data.scalar.length == strlen(s) &&
           memcmp(n->data.scalar.value, s, n->data.scalar.length) == 0;
}

/* In a sequence of {name: X, <field>: {...}}, the <field> mapping named name. */
static yaml_node_t *named_entry(yaml_document_t *doc, yaml_node_t *root, const char *list,
                                const char *field, const char *name)
{
    yaml_node_t *seq = map_get(doc, root, list);

    if (!seq || seq->type != YAML_SEQUENCE_NODE)
        return NULL;
    for (yaml_node_item_t *it = seq->data.sequence.items.start; it < seq->data.sequence.items.top;
         it++) {
        yaml_node_t *e = yaml_document_get_node(doc, *it);
        if (scalar_eq(map_get(doc, e, "name"), name))
            return map_get(doc, e, field);
    }
    return NULL;
}

/* Fill dst from "<key>-data" (base64) or "<key>" (a file path). 0 when
 * neither is present or it loaded; -1 + errstr. */
static int load_pem(yaml_document_t *doc, yaml_node_t *m, const char *key, const char *base_dir,
                    struct upm_buf *dst, char *errstr, size_t errstr_size)
{
    char data_key[64];
    yaml_node_t *n;
    char *path = NULL;
    char *full = NULL;
    int rc = -1;

    snprintf(data_key, sizeof(data_key), "%s-data", key);
    n = map_get(doc, m, data_key);
    if (n) {
        if (n->type != YAML_SCALAR_NODE ||
            upm_k8s_base64_decode((const char *)n->data.scalar.value, n->data.scalar.length, dst) !=
                0 ||
            dst->len == 0) {
            upm_errstr_set(errstr, errstr_size, "kubeconfig: %s is not valid base64", data_key);
            return -1;
        }
        return 0;
    }
    n = map_get(doc, m, key);
    if (!n)
        return 0;
    path = scalar_dup(n);
    if (!path) {
        upm_errstr_set(errstr, errstr_size, "kubeconfig: %s must be a file path", key);
        goto out;
    }
    if (base_dir && !base_dir[0]) {
        upm_errstr_set(errstr, errstr_size, "kubeconfig: %s: file references are not allowed here",
                       key);
        goto out;
    }
    if (path[0] != '/' && base_dir && base_dir[0]) {
        struct upm_buf b;
        upm_buf_init(&b, 0);
        upm_buf_printf(&b, "%s/%s", base_dir, path);
        full = upm_buf_steal(&b, NULL);
    }
    if (read_file(full ? full : path, K8S_MAX_DOC, dst, errstr, errstr_size) != 0)
        goto out;
    rc = 0;
out:
    free(path);
    free(full);
    return rc;
}

int upm_k8s_kubeconfig_parse(const char *yaml, size_t len, const char *base_dir,
                             struct upm_k8s_creds *out, char *errstr, size_t errstr_size)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    bool have_doc = false;
    yaml_node_t *root, *ctx, *cluster, *user, *n;
    char *cur = NULL;
    char *cname = NULL;
    char *uname = NULL;
    int rc = -1;

    memset(out, 0, sizeof(*out));
    upm_buf_init(&out->ca, K8S_MAX_DOC);
    upm_buf_init(&out->cert, K8S_MAX_DOC);
    upm_buf_init(&out->key, K8S_MAX_DOC);
    if (len > K8S_MAX_DOC) {
        upm_errstr_set(errstr, errstr_size, "kubeconfig: larger than %u bytes", K8S_MAX_DOC);
        return -1;
    }
    if (!yaml_parser_initialize(&parser))
        upm_fatal("yaml_parser_initialize");
    yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
    if (!yaml_parser_load(&parser, &doc)) {
        upm_errstr_set(errstr, errstr_size, "kubeconfig:%zu:%zu: %s", parser.problem_mark.line + 1,
                       parser.problem_mark.column + 1,
                       parser.problem ? parser.problem : "YAML error");
        goto out;
    }
    have_doc = true;
    root = yaml_document_get_root_node(&doc);
    if (!root || root->type != YAML_MAPPING_NODE) {
        upm_errstr_set(errstr, errstr_size, "kubeconfig: top level is not a mapping");
        goto out;
    }
    cur = scalar_dup(map_get(&doc, root, "current-context"));
    if (!cur) {
        upm_errstr_set(errstr, errstr_size, "kubeconfig: no current-context");
        goto out;
    }
    ctx = named_entry(&doc, root, "contexts", "context", cur);
    if (!ctx) {
        upm_errstr_set(errstr, errstr_size, "kubeconfig: context \"%s\" not found", cur);
        goto out;
    }
    cname = scalar_dup(map_get(&doc, ctx, "cluster"));
    uname = scalar_dup(map_get(&doc, ctx, "user"));
    cluster = cname ? named_entry(&doc, root, "clusters", "cluster", cname) : NULL;
    if (!cluster) {
        upm_errstr_set(errstr, errstr_size, "kubeconfig: cluster of context \"%s\" not found", cur);
        goto out;
    }
    out->server = scalar_dup(map_get(&doc, cluster, "server"));
    if (out->server) {
        for (size_t l = strlen(out->server); l > 0 && out->server[l - 1] == '/'; l--)
            out->server[l - 1] = '\0';
    }
    /* Scheme plus a non-empty host part; paths are appended to it as is. */
    if (!out->server ||
        !((strncmp(out->server, "https://", 8) == 0 && out->server[8]) ||
          (strncmp(out->server, "http://", 7) == 0 && out->server[7])) ||
        strpbrk(out->server, " \t\r\n?#")) {
        upm_errstr_set(errstr, errstr_size,
                       "kubeconfig: cluster \"%s\" has no valid http(s) server", cname);
        goto out;
    }
    if (load_pem(&doc, cluster, "certificate-authority", base_dir, &out->ca, errstr, errstr_size) !=
        0)
        goto out;
    /* A context without a user is legal (anonymous). */
    user = uname ? named_entry(&doc, root, "users", "user", uname) : NULL;
    if (uname && !user) {
        upm_errstr_set(errstr, errstr_size, "kubeconfig: user \"%s\" not found", uname);
        goto out;
    }
    if (user) {
        n = map_get(&doc, user, "token");
        if (n) {
            out->token = scalar_dup(n);
            if (!out->token) {
                upm_errstr_set(errstr, errstr_size, "kubeconfig: user \"%s\" has an empty token",
                               uname);
                goto out;
            }
        }
        if (load_pem(&doc, user, "client-certificate", base_dir, &out->cert, errstr, errstr_size) !=
                0 ||
            load_pem(&doc, user, "client-key", base_dir, &out->key, errstr, errstr_size) != 0)
            goto out;
        if ((out->cert.len == 0) != (out->key.len == 0)) {
            upm_errstr_set(errstr, errstr_size,
                           "kubeconfig: user \"%s\" needs both client-certificate and client-key",
                           uname);
            goto out;
        }
    }
    rc = 0;
out:
    if (have_doc)
        yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    free(cur);
    free(cname);
    free(uname);
    if (rc != 0)
        upm_k8s_creds_free(out);
    return rc;
}

static char *dirname_dup(const char *path)
{
    const char *slash = strrchr(path, '/');

    if (!slash)
        return upm_strdup(".");
    if (slash == path)
        return upm_strdup("/");
    return upm_strndup(path, (size_t)(slash - path));
}

int upm_k8s_kubeconfig_load(const char *path, struct upm_k8s_creds *out, char *errstr,
                            size_t errstr_size)
{
    struct upm_buf b;
    char *dir;
    int rc;

    memset(out, 0, sizeof(*out));
    upm_buf_init(&b, 0);
    if (read_file(path, K8S_MAX_DOC, &b, errstr, errstr_size) != 0) {
        upm_buf_free(&b);
        return -1;
    }
    dir = dirname_dup(path);
    rc = upm_k8s_kubeconfig_parse(b.data, b.len, dir, out, errstr, errstr_size);
    free(dir);
    upm_buf_free(&b);
    return rc;
}

/* Read a token file, dropping trailing whitespace. NULL + errstr. */
static char *read_token(const char *path, char *errstr, size_t errstr_size)
{
    struct upm_buf b;
    size_t l;

    upm_buf_init(&b, 0);
    if (read_file(path, K8S_MAX_TOKEN, &b, errstr, errstr_size) != 0) {
        upm_buf_free(&b);
        return NULL;
    }
    l = b.len;
    while (l > 0 && (b.data[l - 1] == '\n' || b.data[l - 1] == '\r' || b.data[l - 1] == ' '))
        l--;
    /* A token with embedded line breaks would split the Authorization header. */
    if (l == 0 || memchr(b.data, 0, l) || strcspn(b.data, "\r\n") < l) {
        upm_errstr_set(errstr, errstr_size, "%s: empty or malformed token", path);
        upm_buf_free(&b);
        return NULL;
    }
    b.data[l] = '\0';
    b.len = l;
    return upm_buf_steal(&b, NULL);
}

int upm_k8s_incluster_load(const char *sa_dir, struct upm_k8s_creds *out, char *errstr,
                           size_t errstr_size)
{
    const char *host = getenv("KUBERNETES_SERVICE_HOST");
    const char *port = getenv("KUBERNETES_SERVICE_PORT");
    struct upm_buf b;
    char *ca_path = NULL;
    char *end = NULL;
    long p;
    int rc = -1;

    memset(out, 0, sizeof(*out));
    upm_buf_init(&out->ca, K8S_MAX_DOC);
    upm_buf_init(&out->cert, 0);
    upm_buf_init(&out->key, 0);
    upm_buf_init(&b, 0);
    if (!host || !host[0] || !port || !port[0]) {
        upm_errstr_set(errstr, errstr_size,
                       "in-cluster: KUBERNETES_SERVICE_HOST/PORT not set (set k8s.kubeconfig for a "
                       "local run)");
        goto out;
    }
    errno = 0;
    p = strtol(port, &end, 10);
    if (errno || *end || p < 1 || p > 65535) {
        upm_errstr_set(errstr, errstr_size, "in-cluster: bad KUBERNETES_SERVICE_PORT \"%s\"", port);
        goto out;
    }
    /* An IPv6 service address needs brackets in a URL. */
    if (strchr(host, ':'))
        upm_buf_printf(&b, "https://[%s]:%ld", host, p);
    else
        upm_buf_printf(&b, "https://%s:%ld", host, p);
    out->server = upm_buf_steal(&b, NULL);
    upm_buf_printf(&b, "%s/token", sa_dir);
    out->token_path = upm_buf_steal(&b, NULL);
    out->token = read_token(out->token_path, errstr, errstr_size);
    if (!out->token)
        goto out;
    upm_buf_printf(&b, "%s/ca.crt", sa_dir);
    ca_path = upm_buf_steal(&b, NULL);
    if (read_file(ca_path, K8S_MAX_DOC, &out->ca, errstr, errstr_size) != 0)
        goto out;
    rc = 0;
out:
    free(ca_path);
    upm_buf_free(&b);
    if (rc != 0)
        upm_k8s_creds_free(out);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */

const char *upm_k8s_errkind_name(enum upm_k8s_errkind kind)
{
    switch (kind) {
    case UPM_K8S_OK:
        return "ok";
    case UPM_K8S_ERR_TRANSPORT:
        return "transport";
    case UPM_K8S_ERR_TIMEOUT:
        return "timeout";
    case UPM_K8S_ERR_CONFLICT:
        return "conflict";
    case UPM_K8S_ERR_NOT_FOUND:
        return "not_found";
    case UPM_K8S_ERR_GONE:
        return "gone";
    case UPM_K8S_ERR_UNAUTHORIZED:
        return "unauthorized";
    case UPM_K8S_ERR_FORBIDDEN:
        return "forbidden";
    case UPM_K8S_ERR_THROTTLED:
        return "throttled";
    case UPM_K8S_ERR_SERVER:
        return "server";
    case UPM_K8S_ERR_INVALID:
        return "invalid";
    case UPM_K8S_ERR_OTHER:
        break;
    }
    return "other";
}

static const char *method_verb(const char *method, const char *path)
{
    if (strcmp(method, "GET") == 0) {
        if (strstr(path, "watch=1") || strstr(path, "watch=true"))
            return "watch";
        return NULL; /* get or list: decided by the path */
    }
    if (strcmp(method, "POST") == 0)
        return "create";
    if (strcmp(method, "PUT") == 0)
        return "update";
    if (strcmp(method, "PATCH") == 0)
        return "patch";
    if (strcmp(method, "DELETE") == 0)
        return "delete";
    return method;
}

/*
 * Describe what a path addresses: /api/v1/namespaces/NS/RES[/NAME] or
 * /apis/GROUP/VERSION/namespaces/NS/RES[/NAME] (and the cluster-scoped forms).
 */
static void describe_path(const char *method, const char *path, struct upm_buf *out)
{
    char segs[8][128];
    size_t n = 0;
    const char *p = path;
    const char *group = "";
    const char *ns = NULL;
    const char *res = NULL;
    const char *name = NULL;
    const char *verb;
    size_t i = 0;

    while (*p && *p != '?' && n < 8) {
        size_t l;
        while (*p == '/')
            p++;
        l = strcspn(p, "/?");
        if (l == 0)
            break;
        snprintf(segs[n++], sizeof(segs[0]), "%.*s", (int)(l < 127 ? l : 127), p);
        p += l;
    }
    if (n > 0 && strcmp(segs[0], "api") == 0)
        i = 2; /* api/v1 */
    else if (n > 0 && strcmp(segs[0], "apis") == 0 && n > 1) {
        group = segs[1];
        i = 3; /* apis/group/version */
    }
    if (i + 1 < n && strcmp(segs[i], "namespaces") == 0 && i + 2 < n) {
        ns = segs[i + 1];
        i += 2;
    }
    if (i < n)
        res = segs[i];
    if (i + 1 < n)
        name = segs[i + 1];
    verb = method_verb(method, path);
    if (!verb)
        verb = name ? "get" : "list";
    upm_buf_printf(out, "verb=%s resource=%s%s%s%s%s%s%s", verb, res ? res : "?",
                   group[0] ? "." : "", group, name ? " name=" : "", name ? name : "",
                   ns ? " namespace=" : "", ns ? ns : "");
}

/* Copy with truncation (snprintf would make the compiler warn about the
 * truncation we intend). */
static void copy_trunc(char *dst, size_t size, const char *src)
{
    size_t l = strlen(src);

    if (l >= size)
        l = size - 1;
    memcpy(dst, src, l);
    dst[l] = '\0';
}

/* Printable copy: control bytes become '?'. */
static void printable(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            *s = '?';
}

int upm_k8s_error_from_response(const struct upm_k8s_response *resp, const char *body,
                                size_t body_len, const char *method, const char *path,
                                struct upm_k8s_error *err)
{
    struct upm_buf what, msg;
    const char *smsg = NULL;
    cJSON *st = NULL;
    int status = resp->status;

    memset(err, 0, sizeof(*err));
    err->http_status = status;
    if (status >= 200 && status < 300)
        return 0;
    upm_buf_init(&what, 0);
    upm_buf_init(&msg, 0);
    describe_path(method, path, &what);
    if (status == 0) {
        err->kind = resp->timed_out ? UPM_K8S_ERR_TIMEOUT : UPM_K8S_ERR_TRANSPORT;
        err->retriable = true;
        upm_buf_printf(&msg, "%s %s %s: %s", upm_k8s_errkind_name(err->kind), method, what.data,
                       resp->transport_error[0] ? resp->transport_error : "no response");
        goto out;
    }
    if (body && body_len > 0)
        st = cJSON_ParseWithLength(body, body_len);
    if (st && cJSON_IsObject(st)) {
        const cJSON *kind = cJSON_GetObjectItemCaseSensitive(st, "kind");
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(st, "message");
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(st, "reason");
        if (cJSON_IsString(kind) && strcmp(kind->valuestring, "Status") == 0) {
            if (cJSON_IsString(m))
                smsg = m->valuestring;
            if (cJSON_IsString(r))
                snprintf(err->reason, sizeof(err->reason), "%s", r->valuestring);
        }
    }
    switch (status) {
    case 401:
        err->kind = UPM_K8S_ERR_UNAUTHORIZED;
        break;
    case 403:
        err->kind = UPM_K8S_ERR_FORBIDDEN;
        break;
    case 404:
        err->kind = UPM_K8S_ERR_NOT_FOUND;
        break;
    case 409:
        err->kind = UPM_K8S_ERR_CONFLICT;
        break;
    case 410:
        err->kind = UPM_K8S_ERR_GONE;
        break;
    case 429:
        err->kind = UPM_K8S_ERR_THROTTLED;
        err->retriable = true;
        err->retry_after_ms = resp->retry_after_ms > 0 ? resp->retry_after_ms : 1000;
        break;
    default:
        if (status >= 500) {
            err->kind = UPM_K8S_ERR_SERVER;
            err->retriable = true;
            err->retry_after_ms = resp->retry_after_ms;
        } else if (status == 400 || status == 422) {
            err->kind = UPM_K8S_ERR_INVALID;
        } else if (status == 408) {
            err->kind = UPM_K8S_ERR_TIMEOUT;
            err->retriable = true;
        } else {
            err->kind = UPM_K8S_ERR_OTHER;
        }
    }
    upm_buf_printf(&msg, "%s %d (%s): %s %s%s%s", upm_k8s_errkind_name(err->kind), status,
                   err->reason[0] ? err->reason : "no Status", method, what.data, smsg ? ": " : "",
                   smsg ? smsg : "");
    printable(err->reason);
out:
    copy_trunc(err->message, sizeof(err->message), msg.data ? msg.data : "");
    printable(err->message);
    cJSON_Delete(st);
    upm_buf_free(&what);
    upm_buf_free(&msg);
    return -1;
}

/* ------------------------------------------------------------------------ */
/* libcurl transport                                                        */

struct curl_tp {
    CURL *curl;
    struct upm_k8s_creds *creds; /* borrowed from the client */
    int64_t retry_after_ms;
    const struct upm_k8s_request *req;
    char errbuf[CURL_ERROR_SIZE];
};

static pthread_once_t k8s_curl_once = PTHREAD_ONCE_INIT;
static CURLcode k8s_curl_rc;

static void k8s_curl_init(void)
{
    k8s_curl_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static size_t curl_on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct curl_tp *t = ud;
    size_t n = size * nmemb;

    if (t->req->on_data && t->req->on_data(t->req->opaque, ptr, n) != 0)
        return 0; /* aborts the transfer */
    return n;
}

static size_t curl_on_header(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct curl_tp *t = ud;
    size_t n = size * nmemb;
    static const char name[] = "retry-after:";

    if (n > sizeof(name) - 1 && strncasecmp(ptr, name, sizeof(name) - 1) == 0) {
        char v[32];
        size_t l = n - (sizeof(name) - 1);
        char *end;
        long long secs;

        snprintf(v, sizeof(v), "%.*s", (int)(l < 31 ? l : 31), ptr + sizeof(name) - 1);
        errno = 0;
        secs = strtoll(v, &end, 10);
        while (*end == ' ' || *end == '\r' || *end == '\n')
            end++;
        /* The HTTP-date form is not used by the API server; ignore it. */
        if (errno == 0 && *end == '\0' && secs >= 0 && secs <= 3600)
            t->retry_after_ms = secs * 1000;
    }
    return n;
}

static int curl_perform(void *ctx, const struct upm_k8s_request *req, struct upm_k8s_response *resp)
{
    struct curl_tp *t = ctx;
    CURL *h = t->curl;
    struct curl_slist *headers = NULL;
    struct upm_buf url, hdr;
    CURLcode rc;
    long status = 0;
    int ret = -1;

    upm_buf_init(&url, 0);
    upm_buf_init(&hdr, 0);
    memset(resp, 0, sizeof(*resp));
    t->req = req;
    t->retry_after_ms = 0;
    t->errbuf[0] = '\0';
    upm_buf_printf(&url, "%s%s", t->creds->server, req->path);
    headers = curl_slist_append(headers, "Accept: application/json");
    if (req->body) {
        upm_buf_printf(&hdr, "Content-Type: %s",
                       req->content_type ? req->content_type : "application/json");
        headers = curl_slist_append(headers, hdr.data);
        upm_buf_reset(&hdr);
    }
    if (req->token) {
        upm_buf_printf(&hdr, "Authorization: Bearer %s", req->token);
        headers = curl_slist_append(headers, hdr.data);
        /* Do not leave the token in freed heap memory longer than needed. */
        memset(hdr.data, 0, hdr.len);
    }
    if (!headers)
        upm_fatal("curl_slist_append");
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_URL, url.data);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, req->method);
    if (strcmp(req->method, "GET") == 0)
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    if (req->body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, req->body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)req->timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(req->timeout_ms < 5000 ? req->timeout_ms : 5000));
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, curl_on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, curl_on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, t);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, t->errbuf);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    if (t->creds->ca.len > 0) {
        struct curl_blob blob = {t->creds->ca.data, t->creds->ca.len, CURL_BLOB_NOCOPY};
        curl_easy_setopt(h, CURLOPT_CAINFO_BLOB, &blob);
    }
    if (t->creds->cert.len > 0) {
        struct curl_blob cb = {t->creds->cert.data, t->creds->cert.len, CURL_BLOB_NOCOPY};
        struct curl_blob kb = {t->creds->key.data, t->creds->key.len, CURL_BLOB_NOCOPY};
        curl_easy_setopt(h, CURLOPT_SSLCERT_BLOB, &cb);
        curl_easy_setopt(h, CURLOPT_SSLCERTTYPE, "PEM");
        curl_easy_setopt(h, CURLOPT_SSLKEY_BLOB, &kb);
        curl_easy_setopt(h, CURLOPT_SSLKEYTYPE, "PEM");
    }
    rc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    resp->retry_after_ms = t->retry_after_ms;
    if (rc != CURLE_OK && !(rc == CURLE_WRITE_ERROR && status > 0)) {
        resp->timed_out = rc == CURLE_OPERATION_TIMEDOUT;
        snprintf(resp->transport_error, sizeof(resp->transport_error), "%s",
                 t->errbuf[0] ? t->errbuf : curl_easy_strerror(rc));
        /* A watch that timed out after a 200 simply ended. */
        if (resp->timed_out && status >= 200 && status < 300) {
            resp->status = (int)status;
            ret = 0;
        }
        goto out;
    }
    resp->status = (int)status;
    ret = 0;
out:
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(headers);
    if (hdr.data)
        memset(hdr.data, 0, hdr.cap);
    upm_buf_free(&hdr);
    upm_buf_free(&url);
    t->req = NULL;
    return ret;
}

static void curl_destroy(void *ctx)
{
    struct curl_tp *t = ctx;

    if (!t)
        return;
    if (t->curl)
        curl_easy_cleanup(t->curl);
    free(t);
}

/* ------------------------------------------------------------------------ */
/* Client                                                                   */

struct upm_k8s_client {
    struct upm_k8s_creds creds;
    struct upm_k8s_transport tp;
    int64_t timeout_ms;
    int64_t token_reread_ns;
    int64_t token_read_ns; /* mono time of the last token read */
    int64_t (*mono_ns)(void *);
    void *clock_opaque;
};

static int64_t default_mono(void *opaque)
{
    (void)opaque;
    return upm_clock_mono_ns();
}

void upm_k8s_client_destroy(struct upm_k8s_client *client)
{
    if (!client)
        return;
    if (client->tp.destroy)
        client->tp.destroy(client->tp.ctx);
    if (client->creds.token)
        memset(client->creds.token, 0, strlen(client->creds.token));
    upm_k8s_creds_free(&client->creds);
    free(client);
}

struct upm_k8s_client *upm_k8s_client_create_creds(struct upm_k8s_creds *creds, int64_t timeout_ms,
                                                   int64_t token_reread_ms,
                                                   const struct upm_k8s_transport *transport,
                                                   char *errstr, size_t errstr_size)
{
    struct upm_k8s_client *c = upm_calloc(1, sizeof(*c));

    c->creds = *creds;
    memset(creds, 0, sizeof(*creds));
    c->timeout_ms = timeout_ms;
    c->token_reread_ns = token_reread_ms * UPM_NS_PER_MS;
    c->mono_ns = default_mono;
    c->token_read_ns = c->mono_ns(NULL);
    if (transport) {
        c->tp = *transport;
    } else {
        struct curl_tp *t;
        pthread_once(&k8s_curl_once, k8s_curl_init);
        if (k8s_curl_rc != CURLE_OK) {
            upm_errstr_set(errstr, errstr_size, "k8s: curl_global_init: %s",
                           curl_easy_strerror(k8s_curl_rc));
            goto fail;
        }
        t = upm_calloc(1, sizeof(*t));
        c->tp.perform = curl_perform;
        c->tp.destroy = curl_destroy;
        c->tp.ctx = t;
        t->creds = &c->creds;
        t->curl = curl_easy_init();
        if (!t->curl) {
            upm_errstr_set(errstr, errstr_size, "k8s: curl_easy_init failed");
            goto fail;
        }
    }
    if (!c->creds.server || timeout_ms <= 0 || token_reread_ms <= 0) {
        upm_errstr_set(errstr, errstr_size, "k8s: no server, or non-positive timeout/token_reread");
        goto fail;
    }
    return c;
fail:
    upm_k8s_client_destroy(c);
    return NULL;
}

bool upm_k8s_kubeconfig_path(const struct upm_k8s_config *cfg, char *out, size_t size)
{
    const char *env = getenv("KUBECONFIG"), *home = getenv("HOME");

    if (cfg->kubeconfig && cfg->kubeconfig[0]) {
        snprintf(out, size, "%s", cfg->kubeconfig);
        return true;
    }
    /* kubectl merges a list; the first file names the context we use. */
    if (env && env[0]) {
        size_t n = strcspn(env, ":");

        if (n > 0 && n < size) {
            memcpy(out, env, n);
            out[n] = '\0';
            return true;
        }
    }
    if (home && home[0]) {
        snprintf(out, size, "%s/.kube/config", home);
        if (access(out, R_OK) == 0)
            return true;
    }
    out[0] = '\0';
    return false;
}

struct upm_k8s_client *upm_k8s_client_create(const struct upm_k8s_config *cfg,
                                             const struct upm_k8s_transport *transport,
                                             char *errstr, size_t errstr_size)
{
    struct upm_k8s_creds creds;
    char path[4096];
    int rc;

    if (upm_k8s_kubeconfig_path(cfg, path, sizeof(path)))
        rc = upm_k8s_kubeconfig_load(path, &creds, errstr, errstr_size);
    else
        rc = upm_k8s_incluster_load(cfg->sa_dir ? cfg->sa_dir : "", &creds, errstr, errstr_size);
    if (rc != 0) {
        if (transport && transport->destroy)
            transport->destroy(transport->ctx);
        return NULL;
    }
    return upm_k8s_client_create_creds(&creds, cfg->timeout_ms, cfg->token_reread_ms, transport,
                                       errstr, errstr_size);
}

const char *upm_k8s_client_server(const struct upm_k8s_client *client)
{
    return client->creds.server;
}

void upm_k8s_client_set_clock(struct upm_k8s_client *client, int64_t (*mono_ns)(void *),
                              void *opaque)
{
    client->mono_ns = mono_ns ? mono_ns : default_mono;
    client->clock_opaque = opaque;
    client->token_read_ns = client->mono_ns(opaque);
}

/* Re-read the token file; keep the old token when the read fails (a
 * rotation in progress must not turn into an outage). */
static void token_refresh(struct upm_k8s_client *c)
{
    char errstr[256];
    char *t;

    if (!c->creds.token_path)
        return;
    c->token_read_ns = c->mono_ns(c->clock_opaque);
    t = read_token(c->creds.token_path, errstr, sizeof(errstr));
    if (!t) {
        upm_log_warn("k8s", "token re-read failed, keeping the old one | error=\"%s\"", errstr);
        return;
    }
    memset(c->creds.token, 0, strlen(c->creds.token));
    free(c->creds.token);
    c->creds.token = t;
}

static int collect_body(void *opaque, const char *data, size_t len)
{
    return upm_buf_append(opaque, data, len);
}

static void reset_body(void *opaque)
{
    upm_buf_reset(opaque);
}

/* Perform with token handling: periodic re-read, and on 401 one re-read and
 * one retry. Returns the transport's result; resp describes the last try. */
static int perform_authed(struct upm_k8s_client *c, struct upm_k8s_request *req,
                          struct upm_k8s_response *resp, void (*reset)(void *), void *reset_arg)
{
    int rc;

    if (c->creds.token_path && c->mono_ns(c->clock_opaque) - c->token_read_ns >= c->token_reread_ns)
        token_refresh(c);
    for (int attempt = 0;; attempt++) {
        req->token = c->creds.token;
        /* The sink starts afresh: a 401's Status body is not part of the answer. */
        reset(reset_arg);
        rc = c->tp.perform(c->tp.ctx, req, resp);
        if (rc != 0 || resp->status != 401 || attempt > 0 || !c->creds.token_path)
            return rc;
        upm_log_info("k8s", "401 from the API server: re-reading the token and retrying once");
        token_refresh(c);
    }
}

int upm_k8s_request(struct upm_k8s_client *client, const char *method, const char *path,
                    const cJSON *body, int64_t timeout_ms, cJSON **out, struct upm_k8s_error *err)
{
    struct upm_k8s_request req;
    struct upm_k8s_response resp;
    struct upm_buf rbody;
    char *text = NULL;
    int rc = -1;

    if (out)
        *out = NULL;
    memset(err, 0, sizeof(*err));
    upm_buf_init(&rbody, K8S_MAX_BODY);
    memset(&req, 0, sizeof(req));
    req.method = method;
    req.path = path;
    if (body) {
        text = cJSON_PrintUnformatted(body);
        if (!text)
            upm_fatal("cJSON_PrintUnformatted");
        req.body = text;
        req.body_len = text ? strlen(text) : 0;
        req.content_type =
            strcmp(method, "PATCH") == 0 ? "application/merge-patch+json" : "application/json";
    }
    req.timeout_ms = timeout_ms > 0 ? timeout_ms : client->timeout_ms;
    req.on_data = collect_body;
    req.opaque = &rbody;
    if (perform_authed(client, &req, &resp, reset_body, &rbody) != 0) {
        if (resp.status == 0 && !resp.transport_error[0] && rbody.limit && rbody.len >= rbody.limit)
            snprintf(resp.transport_error, sizeof(resp.transport_error), "response too large");
        resp.status = 0;
        upm_k8s_error_from_response(&resp, NULL, 0, method, path, err);
        goto out;
    }
    if (upm_k8s_error_from_response(&resp, rbody.data, rbody.len, method, path, err) != 0)
        goto out;
    if (out && rbody.len > 0) {
        *out = cJSON_ParseWithLength(rbody.data, rbody.len);
        if (!*out) {
            err->kind = UPM_K8S_ERR_INVALID;
            err->http_status = resp.status;
            snprintf(err->message, sizeof(err->message), "%s %s: response is not JSON", method,
                     path);
            goto out;
        }
    }
    rc = 0;
out:
    free(text);
    upm_buf_free(&rbody);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Watch                                                                    */

void upm_k8s_watch_parser_init(struct upm_k8s_watch_parser *p, upm_k8s_event_fn fn, void *opaque)
{
    memset(p, 0, sizeof(*p));
    upm_buf_init(&p->line, K8S_MAX_LINE);
    p->fn = fn;
    p->opaque = opaque;
}

void upm_k8s_watch_parser_free(struct upm_k8s_watch_parser *p)
{
    upm_buf_free(&p->line);
}

static void parser_fail(struct upm_k8s_watch_parser *p, enum upm_k8s_errkind kind, int status,
                        const char *msg)
{
    p->state = -1;
    p->err.kind = kind;
    p->err.http_status = status;
    p->err.retriable =
        kind != UPM_K8S_ERR_GONE && kind != UPM_K8S_ERR_INVALID && kind != UPM_K8S_ERR_FORBIDDEN;
    snprintf(p->err.message, sizeof(p->err.message), "watch: %s", msg);
    printable(p->err.message);
}

static void parser_line(struct upm_k8s_watch_parser *p, const char *s, size_t len)
{
    cJSON *ev;
    const cJSON *type, *obj, *md, *rv;

    while (len > 0 && (s[len - 1] == '\r' || s[len - 1] == ' '))
        len--;
    if (len == 0)
        return;
    ev = cJSON_ParseWithLength(s, len);
    type = cJSON_GetObjectItemCaseSensitive(ev, "type");
    obj = cJSON_GetObjectItemCaseSensitive(ev, "object");
    if (!cJSON_IsString(type) || !cJSON_IsObject(obj)) {
        parser_fail(p, UPM_K8S_ERR_INVALID, 0, "malformed event line");
        goto out;
    }
    if (strcmp(type->valuestring, "ERROR") == 0) {
        const cJSON *code = cJSON_GetObjectItemCaseSensitive(obj, "code");
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(obj, "message");
        int c = cJSON_IsNumber(code) && code->valuedouble >= 0 && code->valuedouble < 1000
                    ? (int)code->valuedouble
                    : 0;
        char msg[400];
        snprintf(msg, sizeof(msg), "ERROR event %d: %s", c,
                 cJSON_IsString(m) ? m->valuestring : "(no message)");
        parser_fail(p,
                    c == 410   ? UPM_K8S_ERR_GONE
                    : c == 403 ? UPM_K8S_ERR_FORBIDDEN
                    : c >= 500 ? UPM_K8S_ERR_SERVER
                               : UPM_K8S_ERR_OTHER,
                    c, msg);
        goto out;
    }
    md = cJSON_GetObjectItemCaseSensitive(obj, "metadata");
    rv = cJSON_GetObjectItemCaseSensitive(md, "resourceVersion");
    if (cJSON_IsString(rv) && strlen(rv->valuestring) < sizeof(p->resource_version))
        snprintf(p->resource_version, sizeof(p->resource_version), "%s", rv->valuestring);
    if (p->fn && p->fn(p->opaque, type->valuestring, obj) != 0)
        p->state = 1;
out:
    cJSON_Delete(ev);
}

int upm_k8s_watch_parser_feed(struct upm_k8s_watch_parser *p, const char *data, size_t len)
{
    while (len > 0 && p->state == 0) {
        const char *nl = memchr(data, '\n', len);
        size_t take = nl ? (size_t)(nl - data) : len;

        if (upm_buf_append(&p->line, data, take) != 0) {
            parser_fail(p, UPM_K8S_ERR_INVALID, 0, "event line too long");
            break;
        }
        data += take;
        len -= take;
        if (!nl)
            break;
        data++;
        len--;
        parser_line(p, p->line.data, p->line.len);
        upm_buf_reset(&p->line);
    }
    return p->state;
}

int upm_k8s_watch_parser_finish(struct upm_k8s_watch_parser *p)
{
    if (p->state == 0 && p->line.len > 0) {
        parser_line(p, p->line.data, p->line.len);
        upm_buf_reset(&p->line);
    }
    return p->state;
}

/* Back to a fresh stream, keeping the resourceVersion to resume from. */
static void reset_parser(void *opaque)
{
    struct upm_k8s_watch_parser *p = opaque;

    upm_buf_reset(&p->line);
    memset(&p->err, 0, sizeof(p->err));
    p->state = 0;
}

static int watch_on_data(void *opaque, const char *data, size_t len)
{
    struct upm_k8s_watch_parser *p = opaque;

    return upm_k8s_watch_parser_feed(p, data, len) != 0;
}

int upm_k8s_watch(struct upm_k8s_client *client, const char *path, char *resource_version,
                  size_t rv_size, int timeout_s, upm_k8s_event_fn fn, void *opaque,
                  struct upm_k8s_error *err)
{
    struct upm_k8s_watch_parser p;
    struct upm_k8s_request req;
    struct upm_k8s_response resp;
    struct upm_buf url;
    int rc = -1;

    memset(err, 0, sizeof(*err));
    upm_k8s_watch_parser_init(&p, fn, opaque);
    upm_buf_init(&url, 0);
    snprintf(p.resource_version, sizeof(p.resource_version), "%s", resource_version);
    upm_buf_printf(&url, "%s?watch=1&allowWatchBookmarks=true&timeoutSeconds=%d", path,
                   timeout_s > 0 ? timeout_s : 300);
    if (resource_version[0])
        upm_buf_printf(&url, "&resourceVersion=%s", resource_version);
    memset(&req, 0, sizeof(req));
    req.method = "GET";
    req.path = url.data;
    /* The server closes the stream after timeoutSeconds; allow a margin. */
    req.timeout_ms = (int64_t)(timeout_s > 0 ? timeout_s : 300) * 1000 + client->timeout_ms;
    /* Events are parsed as they arrive. A non-2xx answer is a Status
     * object, which the line parser rejects; the status code decides then. */
    req.on_data = watch_on_data;
    req.opaque = &p;
    if (perform_authed(client, &req, &resp, reset_parser, &p) != 0 && resp.status == 0) {
        upm_k8s_error_from_response(&resp, NULL, 0, "GET", url.data, err);
        goto out;
    }
    if (resp.status < 200 || resp.status >= 300) {
        /* The body was a Status object, which the line parser treated as a
         * malformed event; map the status code instead. */
        upm_k8s_error_from_response(&resp, NULL, 0, "GET", url.data, err);
        goto out;
    }
    upm_k8s_watch_parser_finish(&p);
    snprintf(resource_version, rv_size, "%s", p.resource_version);
    if (p.state < 0) {
        *err = p.err;
        goto out;
    }
    rc = p.state;
out:
    upm_k8s_watch_parser_free(&p);
    upm_buf_free(&url);
    return rc;
}

int upm_k8s_list_watch(struct upm_k8s_client *client, const char *path, upm_k8s_event_fn fn,
                       void *opaque, const volatile int *stop, struct upm_k8s_error *err)
{
    char rv[128] = "";
    bool need_list = true;
    int64_t backoff_ms = 200;

    memset(err, 0, sizeof(*err));
    while (!(stop && *stop)) {
        int rc;

        if (need_list) {
            cJSON *list = NULL;
            const cJSON *items, *item, *lrv;
            if (upm_k8s_request(client, "GET", path, NULL, 0, &list, err) != 0)
                goto failed;
            lrv = cJSON_GetObjectItemCaseSensitive(
                cJSON_GetObjectItemCaseSensitive(list, "metadata"), "resourceVersion");
            snprintf(rv, sizeof(rv), "%s", cJSON_IsString(lrv) ? lrv->valuestring : "");
            items = cJSON_GetObjectItemCaseSensitive(list, "items");
            rc = 0;
            cJSON_ArrayForEach(item, items)
            {
                if (fn(opaque, "SYNC", item) != 0) {
                    rc = 1;
                    break;
                }
            }
            cJSON_Delete(list);
            if (rc == 1)
                return 0;
            need_list = false;
        }
        rc = upm_k8s_watch(client, path, rv, sizeof(rv), 300, fn, opaque, err);
        if (rc == 1)
            return 0;
        if (rc == 0) {
            backoff_ms = 200;
            continue;
        }
        if (err->kind == UPM_K8S_ERR_GONE) {
            upm_log_info("k8s", "watch resourceVersion expired: relisting | path=%s", path);
            need_list = true;
            continue;
        }
    failed:
        if (!err->retriable)
            return -1;
        upm_log_warn("k8s", "list/watch failed, retrying | error=\"%s\"", err->message);
        upm_clock_sleep_ms(err->retry_after_ms > backoff_ms ? err->retry_after_ms : backoff_ms,
                           (const volatile int *)stop);
        backoff_ms = backoff_ms * 2 > 5000 ? 5000 : backoff_ms * 2;
    }
    return 0;
}
