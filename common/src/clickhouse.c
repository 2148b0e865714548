#include "upmon/clickhouse.h"
#include "upmon/errstr.h"

#include "upmon/alloc.h"
#include "upmon/clock.h"
#include "upmon/log.h"
#include "upmon/prom.h"

#include <curl/curl.h>

#include <ctype.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MOD "clickhouse"

/* ------------------------------------------------------------------------ */
/* Configuration                                                            */

#define CH_F(field) offsetof(struct upm_ch_config, field)

const struct upm_config_key upm_ch_config_keys[] = {
    {"urls", UPM_CFG_STRING_LIST, CH_F(urls), "http://127.0.0.1:8123", 1, 0, NULL,
     "ClickHouse HTTP endpoints (replicas of one shard or a load balancer) to fail over between.",
     0},
    {"user", UPM_CFG_STRING, CH_F(user), "default", 1, 0, NULL,
     "ClickHouse user, sent in the X-ClickHouse-User header.", 0},
    {"password", UPM_CFG_STRING, CH_F(password), "", 1, 0, NULL,
     "ClickHouse password, sent in the X-ClickHouse-Key header.", UPM_CFG_SECRET},
    {"database", UPM_CFG_STRING, CH_F(database), "upmon", 1, 0, NULL,
     "Default database for statements.", 0},
    {"cluster", UPM_CFG_STRING, CH_F(cluster), "upmon", 1, 0, NULL,
     "Cluster name used by ON CLUSTER statements.", 0},
    {"connect_timeout", UPM_CFG_DURATION_MS, CH_F(connect_timeout_ms), "2s", 1, 600000, NULL,
     "TCP connect timeout per attempt.", 0},
    {"query_timeout", UPM_CFG_DURATION_MS, CH_F(query_timeout_ms), "30s", 1, 86400000, NULL,
     "Timeout of one whole HTTP request per attempt.", 0},
    {"retries", UPM_CFG_INT, CH_F(retries), "5", 0, 1000, NULL,
     "Retries after the first attempt on retriable failures.", 0},
    {"backoff_initial", UPM_CFG_DURATION_MS, CH_F(backoff_initial_ms), "100ms", 1, 3600000, NULL,
     "Upper bound of the first backoff sleep (full jitter, doubling per retry).", 0},
    {"backoff_max", UPM_CFG_DURATION_MS, CH_F(backoff_max_ms), "5s", 1, 3600000, NULL,
     "Upper bound of any backoff sleep.", 0},
    {"max_response_bytes", UPM_CFG_INT, CH_F(max_response_bytes), "268435456", 1, 17179869184.0,
     NULL, "Largest response body accepted; larger ones fail without retry.", 0},
};
const size_t upm_ch_config_nkeys = sizeof(upm_ch_config_keys) / sizeof(upm_ch_config_keys[0]);

/* ------------------------------------------------------------------------ */
/* Error classification                                                     */

struct ch_code {
    int code;
    const char *name;
    bool retriable;
};

/*
 * Numbers from ClickHouse's src/Common/ErrorCodes.cpp (stable since before
 * 18.16). Retriable means "the same request may succeed later or on another
 * replica"; everything about the request itself (SQL, data, rights) is not.
 * Codes not listed are non-retriable.
 */
static const struct ch_code ch_codes[] = {
    /* Rejected input: resending the same bytes gives the same answer. */
    {6, "CANNOT_PARSE_TEXT", false},
    {16, "NO_SUCH_COLUMN_IN_TABLE", false},             /* insert names a column the table lacks */
    {26, "CANNOT_PARSE_QUOTED_STRING", false},          /* malformed text-format data */
    {27, "CANNOT_PARSE_INPUT_ASSERTION_FAILED", false}, /* row does not match the format */
    {33, "CANNOT_READ_ALL_DATA", false},     /* RowBinary shorter than the columns need */
    {36, "BAD_ARGUMENTS", false},            /* invalid function or setting argument */
    {38, "CANNOT_PARSE_DATE", false},        /* bad Date value */
    {41, "CANNOT_PARSE_DATETIME", false},    /* bad DateTime value */
    {43, "ILLEGAL_TYPE_OF_ARGUMENT", false}, /* query bug */
    {46, "UNKNOWN_FUNCTION", false},         /* function missing on this server version */
    {47, "UNKNOWN_IDENTIFIER", false},       /* column name not in scope */
    {53, "TYPE_MISMATCH", false},            /* value of the wrong type */
    {57, "TABLE_ALREADY_EXISTS", false},     /* DDL without IF NOT EXISTS */
    {60, "UNKNOWN_TABLE", false},            /* schema not applied on this node */
    {62, "SYNTAX_ERROR", false},             /* SQL the server cannot parse */
    {72, "CANNOT_PARSE_NUMBER", false},      /* bad numeric value in data */
    {73, "UNKNOWN_FORMAT", false},           /* FORMAT name not supported */
    {81, "UNKNOWN_DATABASE", false},         /* database not created */
    {115, "UNKNOWN_SETTING", false},         /* setting unknown to this version */
    {117, "INCORRECT_DATA", false},          /* data rejected by the format reader */
    {131, "TOO_LARGE_STRING_SIZE", false},   /* RowBinary string length corrupt */
    {158, "TOO_MANY_ROWS", false},           /* result over max_rows_to_read etc. */
    /* The server ran out of time under load: a later try may fit. */
    {159, "TIMEOUT_EXCEEDED", true},
    {164, "READONLY", false},     /* user is readonly: a grants problem */
    {192, "UNKNOWN_USER", false}, /* credentials: retrying cannot help */
    {193, "WRONG_PASSWORD", false},
    {194, "REQUIRED_PASSWORD", false},
    {195, "IP_ADDRESS_NOT_ALLOWED", false},
    {201, "QUOTA_EXPIRED", false},                /* quota intervals outlast any backoff */
    {202, "TOO_MANY_SIMULTANEOUS_QUERIES", true}, /* max_concurrent_queries: load passes */
    {203, "NO_FREE_CONNECTION", true},            /* Distributed pool to a shard exhausted */
    {209, "SOCKET_TIMEOUT", true},                /* server-to-server or client socket timeout */
    {210, "NETWORK_ERROR", true},                 /* server-to-server connection failed */
    {225, "NO_ZOOKEEPER", true},                  /* replicated table lost its coordinator */
    {234, "NO_REPLICA_HAS_PART", true},           /* a replica is fetching: transient */
    {236, "ABORTED", true},                       /* operation aborted by a concurrent one */
    {241, "MEMORY_LIMIT_EXCEEDED", true},         /* server-wide memory pressure passes */
    {242, "TABLE_IS_READ_ONLY", true},            /* replica without ZooKeeper session for now */
    {244, "UNEXPECTED_ZOOKEEPER_ERROR", true},    /* coordinator hiccup */
    {252, "TOO_MANY_PARTS", true},                /* inserts outran merges: back off */
    {254, "NO_ACTIVE_REPLICAS", true},            /* replicas restarting */
    {265, "NO_AVAILABLE_REPLICA", true},          /* Distributed found no replica right now */
    {279, "ALL_CONNECTION_TRIES_FAILED", true},   /* Distributed could not reach a shard */
    {285, "TOO_FEW_LIVE_REPLICAS", true},         /* insert_quorum not reachable right now */
    {286, "UNSATISFIED_QUORUM_FOR_PREVIOUS_WRITE", true}, /* previous quorum write pending */
    {289, "REPLICA_IS_NOT_IN_QUORUM", true},              /* select_sequential_consistency lag */
    {291, "DATABASE_ACCESS_DENIED", false},               /* grants */
    {307, "TOO_MANY_BYTES", false},                       /* result over a byte limit */
    /* The insert may or may not have landed; block deduplication makes the
     * byte-identical retry safe. */
    {319, "UNKNOWN_STATUS_OF_INSERT", true},
    {364, "RECEIVED_ERROR_TOO_MANY_REQUESTS", true},     /* remote side throttled */
    {373, "SESSION_IS_LOCKED", true},                    /* session busy with another query */
    {394, "QUERY_WAS_CANCELLED", true},                  /* cancelled by shutdown or KILL QUERY */
    {395, "FUNCTION_THROW_IF_VALUE_IS_NON_ZERO", false}, /* throwIf(): deliberate */
    {396, "TOO_MANY_ROWS_OR_BYTES", false},              /* result over a limit */
    {473, "DEADLOCK_AVOIDED", true},                     /* lock ordering conflict, retry later */
    {497, "ACCESS_DENIED", false},                       /* grants (RBAC servers) */
    {516, "AUTHENTICATION_FAILED", false},               /* credentials (RBAC servers) */
    {999, "KEEPER_EXCEPTION", true}, /* ZooKeeper/Keeper error: session loss etc. */
};

static const struct ch_code *code_find(int code)
{
    for (size_t i = 0; i < sizeof(ch_codes) / sizeof(ch_codes[0]); i++) {
        if (ch_codes[i].code == code)
            return &ch_codes[i];
    }
    return NULL;
}

bool upm_ch_code_retriable(int code)
{
    const struct ch_code *c = code_find(code);
    return c && c->retriable;
}

const char *upm_ch_code_name(int code)
{
    const struct ch_code *c = code_find(code);
    return c ? c->name : NULL;
}

/* Transport failures where the server may be fine a moment later or another
 * replica is: worth a retry. Anything else (bad URL, our own write callback
 * refusing data, TLS setup) will not change by itself. */
static bool curl_code_retriable(int rc)
{
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST: /* DNS of a restarting pod or service */
    case CURLE_COULDNT_CONNECT:      /* refused: server down or restarting */
    case CURLE_PARTIAL_FILE:         /* connection closed mid-body */
    case CURLE_OPERATION_TIMEDOUT:   /* connect or query timeout */
    case CURLE_SSL_CONNECT_ERROR:    /* handshake cut short */
    case CURLE_GOT_NOTHING:          /* closed without a response */
    case CURLE_SEND_ERROR:           /* reset while sending */
    case CURLE_RECV_ERROR:           /* reset while receiving */
        return true;
    default:
        return false;
    }
}

/* Copy n bytes of text into dst (NUL-terminated), turning control bytes into
 * spaces and trimming trailing whitespace; a truncated copy does not end in a
 * partial UTF-8 sequence. */
static void copy_text(char *dst, size_t size, const char *src, size_t n)
{
    if (size == 0)
        return;
    while (n > 0 && isspace((unsigned char)src[n - 1]))
        n--;
    bool truncated = n > size - 1;
    if (truncated)
        n = size - 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)src[i];
        dst[i] = (ch < 0x20 || ch == 0x7f) ? ' ' : (char)ch;
    }
    if (truncated && n > 0) {
        /* Walk back to the lead byte of the last character; drop it if the
         * sequence it starts does not fit. */
        size_t i = n;
        size_t back = 0;
        while (i > 0 && back < 4 && ((unsigned char)dst[i - 1] & 0xC0) == 0x80) {
            i--;
            back++;
        }
        if (i > 0) {
            unsigned char lead = (unsigned char)dst[i - 1];
            size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
            if (need > back + 1)
                n = i - 1;
        }
    }
    dst[n] = '\0';
}

/* "Code: <digits>" at p (within end). Returns the code (1..99999) and sets
 * *after past the digits, or 0. */
static int parse_code_at(const char *p, const char *end, const char **after)
{
    static const char prefix[] = "Code: ";
    size_t plen = sizeof(prefix) - 1;
    if ((size_t)(end - p) <= plen || memcmp(p, prefix, plen) != 0)
        return 0;
    p += plen;
    int code = 0;
    int digits = 0;
    while (p < end && *p >= '0' && *p <= '9' && digits < 5) {
        code = code * 10 + (*p - '0');
        p++;
        digits++;
    }
    if (digits == 0 || code == 0 || (p < end && *p >= '0' && *p <= '9'))
        return 0;
    *after = p;
    return code;
}

static bool has_prefix(const char *p, const char *end, const char *s)
{
    size_t n = strlen(s);
    return (size_t)(end - p) >= n && memcmp(p, s, n) == 0;
}

/* What follows the code in an exception ClickHouse wrote itself: 18.x/19.x
 * "Code: 62, e.displayText() = DB::Exception: ...", later
 * "Code: 62. DB::Exception: ..." (or DB::NetException, Coordination::Exception
 * and the like). Requiring it keeps data that merely contains "Code: 1" from
 * being taken for an exception. */
static bool strict_tail(const char *p, const char *end)
{
    if (end - p < 2 || (p[0] != '.' && p[0] != ',') || p[1] != ' ')
        return false;
    p += 2;
    if (has_prefix(p, end, "e.displayText() = "))
        return true;
    /* A qualified exception class name ending in ':', e.g. "DB::NetException:". */
    const char *tok = p;
    while (p < end && p - tok < 64 && (isalnum((unsigned char)*p) || *p == '_' || *p == ':'))
        p++;
    size_t n = (size_t)(p - tok);
    return n > 2 && tok[n - 1] == ':' && memmem(tok, n, "::", 2) && memmem(tok, n, "Exception", 9);
}

/* How far back from the end an exception appended to streamed data is
 * looked for: far more than any exception message. */
#define TRAILING_WINDOW (64 * 1024)

int upm_ch_parse_exception(const char *body, size_t len, bool trailing, char *message,
                           size_t message_size)
{
    if (message && message_size)
        message[0] = '\0';
    if (!body || len == 0)
        return 0;
    const char *end = body + len;
    const char *p = body;
    while (p < end && isspace((unsigned char)*p))
        p++;
    const char *after = NULL;
    const char *found = NULL;
    int code = trailing ? 0 : parse_code_at(p, end, &after);
    if (code) {
        found = p;
    } else {
        const char *scan = len > TRAILING_WINDOW ? end - TRAILING_WINDOW : body;
        while (scan < end) {
            const char *hit = memmem(scan, (size_t)(end - scan), "Code: ", 6);
            if (!hit)
                break;
            int c = parse_code_at(hit, end, &after);
            if (c && strict_tail(after, end)) {
                code = c;
                found = hit; /* keep scanning: the last one is the exception */
            }
            scan = hit + 1;
        }
    }
    if (!code)
        return 0;
    if (message && message_size)
        copy_text(message, message_size, found, (size_t)(end - found));
    return code;
}

int upm_ch_error_classify(struct upm_ch_error *err, int curl_code, const char *curl_message,
                          int http_status, int header_code, const char *body, size_t len)
{
    memset(err, 0, sizeof(*err));
    bool status_ok = http_status >= 200 && http_status < 300;
    char text[sizeof(err->message)];
    /* An error status carries the exception as the whole body; after a 2xx
     * (or no status) it can only follow streamed data. */
    int body_code = upm_ch_parse_exception(body, len, http_status < 300, text, sizeof(text));
    int code = header_code > 0 ? header_code : body_code;
    if (curl_code == 0 && status_ok && code == 0)
        return 0;

    err->http_status = http_status;
    err->curl_code = curl_code;
    err->code = code;
    if (body_code) {
        copy_text(err->message, sizeof(err->message), text, strlen(text));
    } else if (curl_code != 0) {
        snprintf(err->message, sizeof(err->message), "curl: %s",
                 curl_message && curl_message[0] ? curl_message
                                                 : curl_easy_strerror((CURLcode)curl_code));
    } else {
        /* A non-ClickHouse body (proxy page, "There is no handle /x") or a
         * header code without text: keep the first line for the reader. */
        char first[256] = "";
        if (body && len) {
            const char *nl = memchr(body, '\n', len);
            copy_text(first, sizeof(first), body, nl ? (size_t)(nl - body) : len);
        }
        if (code)
            snprintf(err->message, sizeof(err->message), "HTTP %d, exception code %d: %s",
                     http_status, code, first);
        else
            snprintf(err->message, sizeof(err->message), "HTTP %d: %s", http_status, first);
    }

    if (code)
        err->retriable = upm_ch_code_retriable(code);
    else if (curl_code != 0)
        err->retriable = curl_code_retriable(curl_code);
    else if (http_status >= 500)
        err->retriable = true; /* overloaded or restarting server, or a proxy in front */
    else
        /* 408 and 429 say "later"; other 4xx are about the request itself. */
        err->retriable = http_status == 408 || http_status == 429;
    return -1;
}

/* ------------------------------------------------------------------------ */
/* RowBinary                                                                */

int upm_ch_rb_u8(struct upm_buf *b, uint8_t v)
{
    return upm_buf_put_u8(b, v);
}

int upm_ch_rb_u16(struct upm_buf *b, uint16_t v)
{
    return upm_buf_put_u16le(b, v);
}

int upm_ch_rb_u32(struct upm_buf *b, uint32_t v)
{
    return upm_buf_put_u32le(b, v);
}

int upm_ch_rb_u64(struct upm_buf *b, uint64_t v)
{
    return upm_buf_put_u64le(b, v);
}

int upm_ch_rb_i64(struct upm_buf *b, int64_t v)
{
    /* Two's complement little-endian: the unsigned conversion is exact. */
    return upm_buf_put_u64le(b, (uint64_t)v);
}

int upm_ch_rb_f64(struct upm_buf *b, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof(bits));
    return upm_buf_put_u64le(b, bits);
}

int upm_ch_rb_string(struct upm_buf *b, const char *s, size_t len)
{
    size_t hdr = 1;
    for (uint64_t v = len; v >= 0x80; v >>= 7)
        hdr++;
    /* Reserve both parts first so a limit failure leaves b unchanged. */
    if (hdr > SIZE_MAX - len || upm_buf_reserve(b, hdr + len) != 0)
        return -1;
    if (upm_buf_put_varuint(b, len) != 0 || upm_buf_append(b, s, len) != 0)
        return -1; /* cannot happen after the reservation */
    return 0;
}

int upm_ch_rb_datetime(struct upm_buf *b, uint32_t epoch_seconds)
{
    return upm_buf_put_u32le(b, epoch_seconds);
}

int upm_ch_rb_date(struct upm_buf *b, uint16_t days_since_epoch)
{
    return upm_buf_put_u16le(b, days_since_epoch);
}

/* ------------------------------------------------------------------------ */
/* Client                                                                   */

enum ch_kind { CH_QUERY, CH_EXEC, CH_INSERT, CH_NKINDS };
static const char *const ch_kind_names[CH_NKINDS] = {"query", "exec", "insert"};

struct ch_setting {
    char *name;
    char *value;
};

struct upm_ch_client {
    CURL *curl;
    struct curl_slist *headers;
    char **urls; /* base URLs, each ending in a path ("/" at least) */
    size_t nurls;
    size_t cur; /* URL of the next attempt: the last one that worked */
    char *database;
    char *cluster;
    int64_t retries;
    int64_t backoff_initial_ms;
    int64_t backoff_max_ms;
    size_t max_response_bytes;
    struct ch_setting *settings;
    size_t nsettings;
    const volatile int *stop;
    uint64_t rng;
    struct upm_buf qs;      /* query string of the current call */
    struct upm_buf url;     /* URL of the current attempt */
    struct upm_buf scratch; /* response body when the caller wants none */
    /* Per-attempt state written by the curl callbacks. */
    struct upm_buf *sink;
    size_t received;
    bool too_large;
    int header_code;
    char errbuf[CURL_ERROR_SIZE];
    /* Metrics; all NULL without a registry. */
    struct upm_prom_series *m_requests[CH_NKINDS][2];
    struct upm_prom_series *m_seconds[CH_NKINDS];
    struct upm_prom_series *m_retries;
    struct upm_prom_series *m_insert_bytes;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init_once(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct upm_ch_client *client = userdata;
    size_t n = size * nmemb;
    if (n > client->max_response_bytes - client->received ||
        upm_buf_append(client->sink, ptr, n) != 0) {
        client->too_large = true;
        return 0; /* anything but n makes curl fail with CURLE_WRITE_ERROR */
    }
    client->received += n;
    return n;
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *userdata)
{
    struct upm_ch_client *client = userdata;
    size_t n = size * nitems;
    static const char name[] = "X-ClickHouse-Exception-Code:";
    size_t nlen = sizeof(name) - 1;
    if (n >= 5 && memcmp(buf, "HTTP/", 5) == 0) {
        /* A new response (after 100 Continue or a retry on the same handle). */
        client->header_code = 0;
    } else if (n > nlen && strncasecmp(buf, name, nlen) == 0) {
        char value[16];
        size_t i = nlen;
        while (i < n && (buf[i] == ' ' || buf[i] == '\t'))
            i++;
        size_t v = 0;
        while (i < n && v < sizeof(value) - 1 && buf[i] >= '0' && buf[i] <= '9')
            value[v++] = buf[i++];
        value[v] = '\0';
        if (v > 0) {
            char *endp;
            long code = strtol(value, &endp, 10);
            if (*endp == '\0' && code > 0 && code < 100000)
                client->header_code = (int)code;
        }
    }
    return n;
}

/* curl's verbose output, one log line per line, at debug. The credentials
 * header is redacted; bodies are never logged. */
static int on_debug(CURL *handle, curl_infotype type, char *data, size_t size, void *userdata)
{
    const char *dir;
    switch (type) {
    case CURLINFO_TEXT:
        dir = "*";
        break;
    case CURLINFO_HEADER_IN:
        dir = "<";
        break;
    case CURLINFO_HEADER_OUT:
        dir = ">";
        break;
    default:
        return 0;
    }
    static const char key[] = "X-ClickHouse-Key:";
    const char *p = data;
    const char *end = data + size;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        char line[400];
        if (n >= sizeof(key) - 1 && strncasecmp(p, key, sizeof(key) - 1) == 0) {
            snprintf(line, sizeof(line), "%s <redacted>", key);
        } else {
            copy_text(line, sizeof(line), p, n);
            /* " | " would start the structured fields of the log line. */
            for (char *c = line; *c; c++) {
                if (*c == '|')
                    *c = '/';
            }
        }
        if (line[0])
            upm_log_debug(MOD, "curl %s %s", dir, line);
        p = nl ? nl + 1 : end;
    }
    return 0;
}

static bool has_ctl(const char *s)
{
    for (; *s; s++) {
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    }
    return false;
}

/* Validate one endpoint and return the base URL used for requests: the
 * configured one with "/" appended when it has no path. NULL if invalid. */
static char *base_url(const char *url, char *errstr, size_t errstr_size)
{
    const char *rest;
    if (strncmp(url, "http://", 7) == 0)
        rest = url + 7;
    else if (strncmp(url, "https://", 8) == 0)
        rest = url + 8;
    else {
        upm_errstr_set(errstr, errstr_size,
                       "clickhouse.urls: \"%s\" is not an http:// or https:// URL", url);
        return NULL;
    }
    size_t authority = strcspn(rest, "/?#");
    if (authority == 0 || has_ctl(url) || strchr(url, ' ')) {
        upm_errstr_set(errstr, errstr_size, "clickhouse.urls: \"%s\" has no host or bad characters",
                       url);
        return NULL;
    }
    if (memchr(rest, '@', authority)) {
        /* Do not echo the URL: it holds a credential. */
        upm_errstr_set(errstr, errstr_size,
                       "clickhouse.urls: credentials in a URL are refused; use user/password");
        return NULL;
    }
    if (strpbrk(rest, "?#")) {
        upm_errstr_set(errstr, errstr_size,
                       "clickhouse.urls: \"%s\" must not have a query or fragment", url);
        return NULL;
    }
    struct upm_buf b;
    upm_buf_init(&b, 0);
    upm_buf_puts(&b, url);
    if (rest[authority] == '\0')
        upm_buf_putc(&b, '/');
    return upm_buf_steal(&b, NULL);
}

static void metrics_init(struct upm_ch_client *client, struct upm_prom_registry *reg)
{
    static const double buckets[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                     0.5,   1,     2.5,  5,     10,   30,  60};
    static const char *const results[2] = {"ok", "error"};
    struct upm_prom_metric *requests =
        upm_prom_counter(reg, "upmon_clickhouse_requests_total",
                         "ClickHouse calls by kind and final result (after retries).", 2,
                         (const char *[]){"kind", "result"});
    struct upm_prom_metric *seconds = upm_prom_histogram(
        reg, "upmon_clickhouse_request_seconds", "Duration of each ClickHouse HTTP attempt.",
        sizeof(buckets) / sizeof(buckets[0]), buckets, 1, (const char *[]){"kind"});
    struct upm_prom_metric *retries = upm_prom_counter(
        reg, "upmon_clickhouse_retries_total", "ClickHouse attempts after the first.", 0, NULL);
    struct upm_prom_metric *bytes =
        upm_prom_counter(reg, "upmon_clickhouse_insert_bytes_total",
                         "Body bytes of successful ClickHouse inserts.", 0, NULL);
    for (int k = 0; k < CH_NKINDS; k++) {
        for (int r = 0; r < 2; r++) {
            if (requests)
                client->m_requests[k][r] =
                    upm_prom_series_get(requests, (const char *[]){ch_kind_names[k], results[r]});
        }
        if (seconds)
            client->m_seconds[k] = upm_prom_series_get(seconds, (const char *[]){ch_kind_names[k]});
    }
    if (retries)
        client->m_retries = upm_prom_series_get(retries, NULL);
    if (bytes)
        client->m_insert_bytes = upm_prom_series_get(bytes, NULL);
}

struct upm_ch_client *upm_ch_client_create(const struct upm_ch_config *cfg,
                                           struct upm_prom_registry *reg, char *errstr,
                                           size_t errstr_size)
{
    struct upm_ch_client *client = NULL;
    struct upm_buf hdr;
    upm_buf_init(&hdr, 0);

    if (cfg->urls.count == 0) {
        upm_errstr_set(errstr, errstr_size, "clickhouse.urls: at least one URL is required");
        goto fail;
    }
    if (cfg->connect_timeout_ms <= 0 || cfg->query_timeout_ms <= 0) {
        upm_errstr_set(errstr, errstr_size,
                       "clickhouse: connect_timeout and query_timeout must be > 0");
        goto fail;
    }
    if (cfg->retries < 0 || cfg->retries > 1000) {
        upm_errstr_set(errstr, errstr_size, "clickhouse.retries: %lld is outside [0, 1000]",
                       (long long)cfg->retries);
        goto fail;
    }
    if (cfg->backoff_initial_ms <= 0 || cfg->backoff_max_ms < cfg->backoff_initial_ms) {
        upm_errstr_set(errstr, errstr_size,
                       "clickhouse: need 0 < backoff_initial <= backoff_max (got %lld, %lld ms)",
                       (long long)cfg->backoff_initial_ms, (long long)cfg->backoff_max_ms);
        goto fail;
    }
    if (cfg->max_response_bytes <= 0 || (uint64_t)cfg->max_response_bytes > SIZE_MAX / 2) {
        upm_errstr_set(errstr, errstr_size, "clickhouse.max_response_bytes: %lld is out of range",
                       (long long)cfg->max_response_bytes);
        goto fail;
    }
    const char *user = cfg->user ? cfg->user : "default";
    const char *password = cfg->password ? cfg->password : "";
    if (has_ctl(user) || has_ctl(password)) {
        upm_errstr_set(errstr, errstr_size,
                       "clickhouse: user and password must not contain control "
                       "characters");
        goto fail;
    }

    pthread_once(&curl_once, curl_init_once);
    if (curl_init_rc != CURLE_OK) {
        upm_errstr_set(errstr, errstr_size, "clickhouse: curl_global_init: %s",
                       curl_easy_strerror(curl_init_rc));
        goto fail;
    }

    client = upm_calloc(1, sizeof(*client));
    upm_buf_init(&client->qs, 0);
    upm_buf_init(&client->url, 0);
    upm_buf_init(&client->scratch, 0);
    client->urls = upm_calloc(cfg->urls.count, sizeof(char *));
    for (size_t i = 0; i < cfg->urls.count; i++) {
        client->urls[i] = base_url(cfg->urls.items[i], errstr, errstr_size);
        if (!client->urls[i])
            goto fail;
        client->nurls++;
    }
    client->database = upm_strdup(cfg->database ? cfg->database : "upmon");
    client->cluster = upm_strdup(cfg->cluster ? cfg->cluster : "upmon");
    client->retries = cfg->retries;
    client->backoff_initial_ms = cfg->backoff_initial_ms;
    client->backoff_max_ms = cfg->backoff_max_ms;
    client->max_response_bytes = (size_t)cfg->max_response_bytes;
    client->rng = (uint64_t)upm_clock_mono_ns() ^ ((uint64_t)(uintptr_t)client << 16) ^
                  UINT64_C(0x9E3779B97F4A7C15);
    if (client->rng == 0)
        client->rng = 1;

    /* Credentials travel in headers only: URLs end up in proxies' logs. */
    const char *fixed[] = {"Expect:", /* no 100-continue round trip on large inserts */
                           "Content-Type: application/octet-stream"};
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        struct curl_slist *l = curl_slist_append(client->headers, fixed[i]);
        if (!l)
            upm_fatal("curl_slist_append");
        client->headers = l;
    }
    const char *auth[2][2] = {{"X-ClickHouse-User", user}, {"X-ClickHouse-Key", password}};
    for (size_t i = 0; i < 2; i++) {
        upm_buf_reset(&hdr);
        upm_buf_printf(&hdr, "%s: %s", auth[i][0], auth[i][1]);
        struct curl_slist *l = curl_slist_append(client->headers, hdr.data);
        if (!l)
            upm_fatal("curl_slist_append");
        client->headers = l;
    }

    client->curl = curl_easy_init();
    if (!client->curl) {
        upm_errstr_set(errstr, errstr_size, "clickhouse: curl_easy_init failed");
        goto fail;
    }
    CURL *h = client->curl;
    int rc = CURLE_OK;
    /* Accumulate: any failure here is a build or version problem. */
    rc |= curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    rc |= curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)cfg->connect_timeout_ms);
    rc |= curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)cfg->query_timeout_ms);
    rc |= curl_easy_setopt(h, CURLOPT_HTTPHEADER, client->headers);
    rc |= curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    rc |= curl_easy_setopt(h, CURLOPT_WRITEDATA, client);
    rc |= curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    rc |= curl_easy_setopt(h, CURLOPT_HEADERDATA, client);
    rc |= curl_easy_setopt(h, CURLOPT_DEBUGFUNCTION, on_debug);
    rc |= curl_easy_setopt(h, CURLOPT_DEBUGDATA, client);
    rc |= curl_easy_setopt(h, CURLOPT_ERRORBUFFER, client->errbuf);
    rc |= curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)cfg->max_response_bytes);
    rc |= curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    rc |= curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    rc |= curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    rc |= curl_easy_setopt(h, CURLOPT_USERAGENT,
                           "upmon/"
                           "0.1");
    if (rc != CURLE_OK) {
        upm_errstr_set(errstr, errstr_size, "clickhouse: curl_easy_setopt failed");
        goto fail;
    }
    if (reg)
        metrics_init(client, reg);
    upm_buf_free(&hdr);
    return client;

fail:
    upm_buf_free(&hdr);
    upm_ch_client_destroy(client);
    return NULL;
}

void upm_ch_client_destroy(struct upm_ch_client *client)
{
    if (!client)
        return;
    if (client->curl)
        curl_easy_cleanup(client->curl);
    curl_slist_free_all(client->headers);
    for (size_t i = 0; i < client->nurls; i++)
        free(client->urls[i]);
    free(client->urls);
    for (size_t i = 0; i < client->nsettings; i++) {
        free(client->settings[i].name);
        free(client->settings[i].value);
    }
    free(client->settings);
    free(client->database);
    free(client->cluster);
    upm_buf_free(&client->qs);
    upm_buf_free(&client->url);
    upm_buf_free(&client->scratch);
    free(client);
}

void upm_ch_client_set_stop(struct upm_ch_client *client, const volatile int *stop)
{
    client->stop = stop;
}

const char *upm_ch_client_database(const struct upm_ch_client *client)
{
    return client->database;
}

const char *upm_ch_client_cluster(const struct upm_ch_client *client)
{
    return client->cluster;
}

/* Setting names go into the URL unescaped, so they are restricted; the ones
 * that would carry the statement, database or credentials are the client's. */
static bool setting_name_ok(const char *name)
{
    if (!name || !*name)
        return false;
    for (const char *p = name; *p; p++) {
        if (!isalnum((unsigned char)*p) && *p != '_')
            return false;
    }
    static const char *const reserved[] = {"query", "database", "user", "password", "quota_key"};
    for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++) {
        if (strcmp(name, reserved[i]) == 0)
            return false;
    }
    return true;
}

int upm_ch_client_set_setting(struct upm_ch_client *client, const char *name, const char *value)
{
    if (!setting_name_ok(name))
        return -1;
    for (size_t i = 0; i < client->nsettings; i++) {
        if (strcmp(client->settings[i].name, name) != 0)
            continue;
        if (value) {
            free(client->settings[i].value);
            client->settings[i].value = upm_strdup(value);
        } else {
            free(client->settings[i].name);
            free(client->settings[i].value);
            client->settings[i] = client->settings[--client->nsettings];
        }
        return 0;
    }
    if (!value)
        return 0;
    client->settings =
        upm_realloc(client->settings, (client->nsettings + 1) * sizeof(*client->settings));
    client->settings[client->nsettings].name = upm_strdup(name);
    client->settings[client->nsettings].value = upm_strdup(value);
    client->nsettings++;
    return 0;
}

/* Percent-encode everything but RFC 3986 unreserved characters. */
static void put_escaped(struct upm_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~') {
            upm_buf_putc(b, (char)ch);
        } else {
            char e[3] = {'%', hex[ch >> 4], hex[ch & 15]};
            upm_buf_append(b, e, sizeof(e));
        }
    }
}

static void put_param(struct upm_buf *b, const char *name, const char *value, size_t vlen)
{
    if (b->len)
        upm_buf_putc(b, '&');
    upm_buf_puts(b, name);
    upm_buf_putc(b, '=');
    put_escaped(b, value, vlen);
}

/* Build the call's query string into client->qs once, so every attempt of
 * the call sends exactly the same parameters. -1 for a bad setting name. */
static int build_query_string(struct upm_ch_client *client, const struct upm_ch_setting *settings,
                              size_t nsettings, const char *insert_sql, size_t insert_len)
{
    struct upm_buf *b = &client->qs;
    upm_buf_reset(b);
    for (size_t i = 0; i < nsettings; i++) {
        if (!setting_name_ok(settings[i].name) || !settings[i].value)
            return -1;
    }
    put_param(b, "database", client->database, strlen(client->database));
    for (size_t i = 0; i < client->nsettings; i++) {
        bool overridden = false;
        for (size_t j = 0; j < nsettings && !overridden; j++)
            overridden = strcmp(settings[j].name, client->settings[i].name) == 0;
        if (!overridden)
            put_param(b, client->settings[i].name, client->settings[i].value,
                      strlen(client->settings[i].value));
    }
    for (size_t i = 0; i < nsettings; i++)
        put_param(b, settings[i].name, settings[i].value, strlen(settings[i].value));
    if (insert_sql)
        put_param(b, "query", insert_sql, insert_len);
    return 0;
}

static uint64_t rng_next(struct upm_ch_client *client)
{
    /* xorshift64*: jitter needs spread, not cryptographic quality. */
    uint64_t x = client->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    client->rng = x;
    return x * UINT64_C(0x2545F4914F6CDD1D);
}

/* Full jitter: uniform in [0, min(max, initial * 2^(retry-1))]. */
static int64_t backoff_ms(struct upm_ch_client *client, int retry)
{
    int64_t bound = client->backoff_initial_ms;
    for (int i = 1; i < retry && bound < client->backoff_max_ms; i++)
        bound *= 2;
    if (bound > client->backoff_max_ms)
        bound = client->backoff_max_ms;
    return (int64_t)(rng_next(client) % (uint64_t)(bound + 1));
}

static bool stopping(const struct upm_ch_client *client)
{
    return client->stop && *client->stop;
}

static int attempt_once(struct upm_ch_client *client, enum ch_kind kind, const char *base,
                        const void *body, size_t body_len, struct upm_ch_error *err)
{
    upm_buf_reset(&client->url);
    upm_buf_puts(&client->url, base);
    upm_buf_putc(&client->url, '?');
    upm_buf_append(&client->url, client->qs.data, client->qs.len);

    upm_buf_reset(client->sink);
    client->received = 0;
    client->too_large = false;
    client->header_code = 0;
    client->errbuf[0] = '\0';

    CURL *h = client->curl;
    curl_easy_setopt(h, CURLOPT_URL, client->url.data);
    /* The caller's bytes, not a copy: every retry sends the same body. */
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body_len ? body : "");
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    curl_easy_setopt(h, CURLOPT_VERBOSE, upm_log_threshold <= UPM_LOG_DEBUG ? 1L : 0L);

    int64_t t0 = upm_clock_mono_ns();
    CURLcode rc = curl_easy_perform(h);
    double secs = (double)(upm_clock_mono_ns() - t0) / 1e9;
    if (client->m_seconds[kind])
        upm_prom_observe(client->m_seconds[kind], secs);

    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (status < 0 || status > 999)
        status = 0;
    if (client->too_large || rc == CURLE_FILESIZE_EXCEEDED) {
        memset(err, 0, sizeof(*err));
        err->http_status = (int)status;
        err->curl_code = (int)rc;
        err->retriable = false; /* the same query returns the same too-large answer */
        snprintf(err->message, sizeof(err->message),
                 "response body exceeds the limit (max_response_bytes=%zu or the output buffer's)",
                 client->max_response_bytes);
        upm_buf_reset(client->sink);
        return -1;
    }
    int ret = upm_ch_error_classify(err, (int)rc, client->errbuf, (int)status, client->header_code,
                                    client->sink->data, client->sink->len);
    if (ret != 0)
        upm_buf_reset(client->sink);
    return ret;
}

/* Log-safe copy of a message: the log line quotes nothing after " | ". */
static void log_safe(char *dst, size_t size, const char *src)
{
    copy_text(dst, size, src, strlen(src));
    for (char *c = dst; *c; c++) {
        if (*c == '"' || *c == '|')
            *c = '\'';
    }
}

static int ch_request(struct upm_ch_client *client, enum ch_kind kind, const void *body,
                      size_t body_len, struct upm_buf *out, struct upm_ch_error *err)
{
    client->sink = out ? out : &client->scratch;
    int max_attempts = (int)client->retries + 1;
    int attempt = 0;
    int rc;
    for (;;) {
        attempt++;
        size_t idx = client->cur;
        rc = attempt_once(client, kind, client->urls[idx], body, body_len, err);
        err->attempts = attempt;
        if (rc == 0)
            break;
        bool again = err->retriable && attempt < max_attempts && !stopping(client);
        char msg[200];
        log_safe(msg, sizeof(msg), err->message);
        UPM_LOG(err->retriable ? UPM_LOG_WARN : UPM_LOG_INFO, MOD,
                "request failed | kind=%s url=%s attempt=%d status=%d code=%d curl=%d "
                "retriable=%d retry=%d error=\"%s\"",
                ch_kind_names[kind], client->urls[idx], attempt, err->http_status, err->code,
                err->curl_code, err->retriable ? 1 : 0, again ? 1 : 0, msg);
        if (!err->retriable)
            break;
        /* Next attempt (or next call) goes to the next replica. */
        client->cur = (idx + 1) % client->nurls;
        if (!again)
            break;
        upm_clock_sleep_ms(backoff_ms(client, attempt), client->stop);
        if (stopping(client))
            break;
        if (client->m_retries)
            upm_prom_inc(client->m_retries, 1);
    }
    if (client->m_requests[kind][rc == 0 ? 0 : 1])
        upm_prom_inc(client->m_requests[kind][rc == 0 ? 0 : 1], 1);
    if (rc == 0 && kind == CH_INSERT && client->m_insert_bytes)
        upm_prom_inc(client->m_insert_bytes, (double)body_len);
    /* Do not keep a large exec/insert response around between calls. */
    if (client->scratch.cap > 64 * 1024)
        upm_buf_free(&client->scratch);
    client->sink = NULL;
    return rc;
}

static int bad_setting(struct upm_ch_error *err)
{
    memset(err, 0, sizeof(*err));
    snprintf(err->message, sizeof(err->message),
             "invalid or reserved setting name, or a NULL setting value");
    return -1;
}

int upm_ch_query_ex(struct upm_ch_client *client, const char *sql,
                    const struct upm_ch_setting *settings, size_t nsettings, struct upm_buf *out,
                    struct upm_ch_error *err)
{
    upm_buf_reset(out);
    if (build_query_string(client, settings, nsettings, NULL, 0) != 0)
        return bad_setting(err);
    return ch_request(client, CH_QUERY, sql, strlen(sql), out, err);
}

int upm_ch_query(struct upm_ch_client *client, const char *sql, struct upm_buf *out,
                 struct upm_ch_error *err)
{
    return upm_ch_query_ex(client, sql, NULL, 0, out, err);
}

int upm_ch_exec_ex(struct upm_ch_client *client, const char *sql,
                   const struct upm_ch_setting *settings, size_t nsettings,
                   struct upm_ch_error *err)
{
    if (build_query_string(client, settings, nsettings, NULL, 0) != 0)
        return bad_setting(err);
    return ch_request(client, CH_EXEC, sql, strlen(sql), NULL, err);
}

int upm_ch_exec(struct upm_ch_client *client, const char *sql, struct upm_ch_error *err)
{
    return upm_ch_exec_ex(client, sql, NULL, 0, err);
}

int upm_ch_insert_ex(struct upm_ch_client *client, const char *table, const char *columns,
                     const char *format, const void *data, size_t len,
                     const struct upm_ch_setting *settings, size_t nsettings,
                     struct upm_ch_error *err)
{
    struct upm_buf sql;
    upm_buf_init(&sql, 0);
    if (columns)
        upm_buf_printf(&sql, "INSERT INTO %s (%s) FORMAT %s", table, columns, format);
    else
        upm_buf_printf(&sql, "INSERT INTO %s FORMAT %s", table, format);
    int rc = build_query_string(client, settings, nsettings, sql.data, sql.len);
    upm_buf_free(&sql);
    if (rc != 0)
        return bad_setting(err);
    return ch_request(client, CH_INSERT, data, len, NULL, err);
}

int upm_ch_insert(struct upm_ch_client *client, const char *table, const char *columns,
                  const char *format, const void *data, size_t len, struct upm_ch_error *err)
{
    return upm_ch_insert_ex(client, table, columns, format, data, len, NULL, 0, err);
}
