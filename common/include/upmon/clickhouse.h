/*
 * clickhouse — an HTTP client for ClickHouse over libcurl.
 *
 * Works with ClickHouse 18.16 (what Debian packages) and current releases:
 * it only uses what both understand — POST with the statement in the body
 * (queries) or in the `query` URL parameter (inserts, data in the body),
 * settings and `database` as URL parameters, credentials in the
 * X-ClickHouse-User / X-ClickHouse-Key headers (never in the URL, never
 * logged), and exceptions recognised both from the X-ClickHouse-Exception-Code
 * header (newer servers) and from the "Code: NNN" text of the body (18.16).
 *
 * Retries. A request that fails with a retriable error (connection refused
 * or reset, curl timeouts, HTTP 5xx without an exception code, or one of the
 * transient exception codes listed in clickhouse.c) is retried up to
 * `retries` times after the first attempt, with exponential backoff and full
 * jitter (a uniform sleep in [0, min(backoff_max, backoff_initial * 2^n)]),
 * moving to the next configured URL after each retriable failure; the client
 * stays on the URL that last worked. Every retry of one call sends a
 * byte-identical request: the same query string, the same settings, the same
 * body pointer and length. That is what makes an insert into a
 * ReplicatedMergeTree table idempotent: the server hashes each inserted block
 * and drops a block it has already seen (on any replica), so a retry after
 * "the insert may or may not have happened" (timeout, reset,
 * UNKNOWN_STATUS_OF_INSERT) cannot double-count. Callers keep that property
 * by retrying a failed batch with the same bytes too.
 *
 * Exceptions after a 200. ClickHouse streams results, so an exception raised
 * after the headers were sent is appended as text to a 200 body. The client
 * looks for it at the end of every body and reports it as an error. Queries
 * that must not be misled by a result that itself ends with exception text
 * (e.g. reading system.query_log) should pass the setting
 * wait_end_of_query=1, which makes the server buffer the result and send a
 * real error status.
 *
 * Thread-safety: a client owns one CURL easy handle (keep-alive connections
 * are reused across calls) and must be used by one thread at a time. Different
 * clients may be used from different threads. upm_ch_client_create calls
 * curl_global_init once per process (guarded); services that also use curl
 * elsewhere should call curl_global_init themselves in main() before threads.
 */
#ifndef UPMON_CLICKHOUSE_H
#define UPMON_CLICKHOUSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "upmon/buf.h"
#include "upmon/config.h"

struct upm_prom_registry;
struct upm_ch_client;

/* The `clickhouse` configuration section; see upm_ch_config_keys for the
 * defaults. Tests may fill it directly: NULL user/password/database/cluster
 * mean "default", "", "upmon", "upmon"; numeric fields must be set. */
struct upm_ch_config {
    struct upm_strlist urls;    /* http://host:port endpoints (replicas to fail over between) */
    char *user;                 /* sent as X-ClickHouse-User */
    char *password;             /* sent as X-ClickHouse-Key; secret */
    char *database;             /* `database` URL parameter */
    char *cluster;              /* for callers' ON CLUSTER DDL; not used by the client */
    int64_t connect_timeout_ms; /* TCP connect, per attempt */
    int64_t query_timeout_ms;   /* whole HTTP exchange, per attempt */
    int64_t retries;            /* retries after the first attempt */
    int64_t backoff_initial_ms; /* upper bound of the first backoff sleep */
    int64_t backoff_max_ms;     /* upper bound of any backoff sleep */
    int64_t max_response_bytes; /* larger responses fail, non-retriable */
};

/* Key table for upm_config_load (section struct: struct upm_ch_config). */
extern const struct upm_config_key upm_ch_config_keys[];
extern const size_t upm_ch_config_nkeys;

/*
 * Outcome of a call. On success every field is zero except attempts.
 * http_status is 0 when no response arrived; code is the ClickHouse
 * exception code or 0; curl_code is a CURLcode (0 = the transfer worked).
 * message is NUL-terminated, printable, truncated to fit, and never holds
 * credentials. For the final error after retries, all fields describe the
 * last failed attempt and attempts counts every attempt made.
 */
struct upm_ch_error {
    int http_status;
    int code;
    int curl_code;
    bool retriable;
    int attempts;
    char message[512];
};

/* One ClickHouse setting sent as a URL parameter (e.g. insert_quorum=2,
 * max_execution_time=30). Both strings are borrowed for the call. */
struct upm_ch_setting {
    const char *name;  /* [A-Za-z0-9_]+; not user, password, query or database */
    const char *value; /* any text; percent-encoded by the client */
};

/*
 * Create a client. cfg is copied (the caller may free it afterwards). reg
 * may be NULL (no metrics); otherwise the client registers
 *   upmon_clickhouse_requests_total{kind,result}  calls by kind (query, exec,
 *                                                  insert) and result (ok, error)
 *   upmon_clickhouse_retries_total                 attempts after the first
 *   upmon_clickhouse_request_seconds{kind}         duration of each HTTP attempt
 *   upmon_clickhouse_insert_bytes_total            body bytes of successful inserts
 * and reg must outlive the client. Returns NULL with a message in errstr for
 * an invalid configuration (no URLs, a URL that is not http(s):// or carries
 * credentials, non-positive timeouts, negative retries, backoff_max <
 * backoff_initial, non-positive max_response_bytes) or a curl failure.
 */
struct upm_ch_client *upm_ch_client_create(const struct upm_ch_config *cfg,
                                           struct upm_prom_registry *reg, char *errstr,
                                           size_t errstr_size);
/* Close connections and free the client. NULL-safe. */
void upm_ch_client_destroy(struct upm_ch_client *client);

/*
 * Abort backoff sleeps when *stop becomes non-zero (a service's shutdown
 * flag; NULL = never). Once *stop is set a call makes at most one attempt and
 * no retries, so a final flush at shutdown still gets one try; an attempt in
 * flight is not interrupted (query_timeout bounds it). stop is borrowed.
 */
void upm_ch_client_set_stop(struct upm_ch_client *client, const volatile int *stop);

/*
 * Set a setting sent with every request of this client (value NULL removes
 * it). Per-call settings with the same name take precedence. 0, or -1 for an
 * invalid or reserved name. Copies both strings.
 */
int upm_ch_client_set_setting(struct upm_ch_client *client, const char *name, const char *value);

/* The configured database and cluster names (owned by the client). */
const char *upm_ch_client_database(const struct upm_ch_client *client);
const char *upm_ch_client_cluster(const struct upm_ch_client *client);

/*
 * Run a statement that returns data; sql goes in the POST body and its
 * FORMAT clause decides the body's format (TabSeparated by default). out is
 * reset, then receives the response body (NUL-terminated; out's own limit
 * also applies and counts as "too large"). 0 on success; -1 with err filled
 * (out then empty). out and err may not be NULL.
 */
int upm_ch_query(struct upm_ch_client *client, const char *sql, struct upm_buf *out,
                 struct upm_ch_error *err);
/* Same with per-call settings (nsettings may be 0). -1 with err->code 0 and
 * no request made for an invalid setting name. */
int upm_ch_query_ex(struct upm_ch_client *client, const char *sql,
                    const struct upm_ch_setting *settings, size_t nsettings, struct upm_buf *out,
                    struct upm_ch_error *err);

/* Run a statement without a result (DDL, ALTER, INSERT ... SELECT). */
int upm_ch_exec(struct upm_ch_client *client, const char *sql, struct upm_ch_error *err);
int upm_ch_exec_ex(struct upm_ch_client *client, const char *sql,
                   const struct upm_ch_setting *settings, size_t nsettings,
                   struct upm_ch_error *err);

/*
 * Insert len bytes of data in format ("RowBinary", "JSONEachRow", ...) into
 * table, sending "INSERT INTO table (columns) FORMAT format" (columns NULL =
 * all) as the `query` URL parameter and data, unchanged and uncopied, as the
 * POST body. table, columns and format are pasted into SQL as given: they
 * must come from code, never from input. data is borrowed for the call.
 */
int upm_ch_insert(struct upm_ch_client *client, const char *table, const char *columns,
                  const char *format, const void *data, size_t len, struct upm_ch_error *err);
int upm_ch_insert_ex(struct upm_ch_client *client, const char *table, const char *columns,
                     const char *format, const void *data, size_t len,
                     const struct upm_ch_setting *settings, size_t nsettings,
                     struct upm_ch_error *err);

/*
 * Response parsing, exposed for tests and fuzzing; pure functions.
 *
 * upm_ch_parse_exception finds a ClickHouse exception in a body. With
 * trailing = false (an error status: the body is the exception) it accepts
 * "Code: NNN" at the start ("Code: 62, e.displayText() = ..." on 18.16,
 * "Code: 62. DB::Exception: ..." later). In both modes it then looks in the
 * last 64 KiB for the last exception in the exact form the server writes
 * when it appends one to streamed data after a 200 ("Code: NNN" followed by
 * ", e.displayText() = " or ". DB::Exception:"), so that data merely
 * containing "Code: 1" is not mistaken for one. Returns the code (> 0) and
 * copies the exception text into message (NUL-terminated, control bytes
 * turned into spaces, truncated on a UTF-8 boundary); 0 when there is none.
 *
 * upm_ch_error_classify fills err from one finished attempt: the CURLcode,
 * the HTTP status (0 if none), the X-ClickHouse-Exception-Code header value
 * (0 if absent) and the body, and decides retriable. Returns 0 when the
 * attempt succeeded (err zeroed), -1 otherwise. curl_message may be NULL.
 *
 * upm_ch_code_retriable / upm_ch_code_name: the classification table
 * (unknown codes are non-retriable: a deterministic server exception is the
 * common case, and retrying it only delays the report); name NULL if unknown.
 */
int upm_ch_parse_exception(const char *body, size_t len, bool trailing, char *message,
                           size_t message_size);
int upm_ch_error_classify(struct upm_ch_error *err, int curl_code, const char *curl_message,
                          int http_status, int header_code, const char *body, size_t len);
bool upm_ch_code_retriable(int code);
const char *upm_ch_code_name(int code);

/*
 * RowBinary encoders: append one value in ClickHouse's RowBinary encoding
 * (little-endian fixed width; String = LEB128 length + bytes; Date = days
 * since 1970-01-01 as UInt16; DateTime = seconds since epoch as UInt32;
 * Float64 = IEEE 754 bits). 0, or -1 if b's limit would be passed (b then
 * unchanged).
 */
int upm_ch_rb_u8(struct upm_buf *b, uint8_t v);
int upm_ch_rb_u16(struct upm_buf *b, uint16_t v);
int upm_ch_rb_u32(struct upm_buf *b, uint32_t v);
int upm_ch_rb_u64(struct upm_buf *b, uint64_t v);
int upm_ch_rb_i64(struct upm_buf *b, int64_t v);
int upm_ch_rb_f64(struct upm_buf *b, double v);
int upm_ch_rb_string(struct upm_buf *b, const char *s, size_t len);
int upm_ch_rb_datetime(struct upm_buf *b, uint32_t epoch_seconds);
int upm_ch_rb_date(struct upm_buf *b, uint16_t days_since_epoch);

#endif
