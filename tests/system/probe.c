/*
 * system_probe — drives libupmon's public API against the real local stack
 * (ci/stack) so that tests/system/test_libupmon.py can check the results
 * from the servers' side.
 *
 * Configuration comes only from UPMON_* environment variables (the output
 * of `ci/stack env` matches the config keys): sections log, http, kafka and
 * clickhouse, no file. Each subcommand does one thing and prints its results
 * on stdout as key=value lines, one per line, so that a value may contain
 * spaces. Logs go to stderr. Exit status: 0 success, 1 the operation failed
 * (a "result=error" or "error=" line says why), 2 usage or configuration.
 *
 * Data is derived from --seed only, so two runs with the same arguments send
 * byte-identical ClickHouse batches (the retry that block deduplication
 * must absorb) and Kafka payloads that a consumer can rebuild and compare.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "upmon/alloc.h"
#include "upmon/buf.h"
#include "upmon/clickhouse.h"
#include "upmon/clock.h"
#include "upmon/config.h"
#include "upmon/event.h"
#include "upmon/httpd.h"
#include "upmon/kafka.h"
#include "upmon/log.h"
#include "upmon/prom.h"

#define EXIT_FAIL  1
#define EXIT_USAGE 2

#define PROBE_HEADER "upmon-probe"
/* Event i's item_id is ITEM_TOP - i: the values sit at the top of UInt64,
 * where any detour through a double or a signed type would show. */
#define ITEM_TOP UINT64_MAX
/* A fixed base time keeps the payloads a pure function of (seed, i). */
#define TS_BASE INT64_C(1700000000000000000)

struct probe_config {
    struct upm_log_config log;
    struct upm_httpd_config http;
    struct upm_kafka_config kafka;
    struct upm_ch_config ch;
};

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static void usage(FILE *out)
{
    fputs("usage: system_probe <command> [options]\n"
          "  ch-insert --table T --rows N [--seed S]\n"
          "  ch-query --sql SQL\n"
          "  ch-error --sql SQL\n"
          "  kafka-produce --topic T --count N [--seed S]\n"
          "  kafka-consume --topic T --group G --max N [--seed S] [--commit]\n"
          "                [--timeout-ms MS] [--idle-ms MS]\n"
          "  kafka-commit --topic T --group G --offsets P=OFF[,P=OFF...] [--metadata M]\n"
          "  serve --seconds S [--label VALUE]\n"
          "Configuration: UPMON_LOG_*, UPMON_HTTP_*, UPMON_KAFKA_*, UPMON_CLICKHOUSE_*.\n",
          out);
}

/* ---- argument parsing ---------------------------------------------------- */

struct opts {
    const char *table;
    const char *sql;
    const char *topic;
    const char *group;
    const char *label;
    const char *offsets;
    const char *metadata;
    int64_t rows;
    int64_t seed;
    int64_t count;
    int64_t max;
    int64_t seconds;
    int64_t timeout_ms;
    int64_t idle_ms;
    bool commit;
};

static int parse_i64(const char *flag, const char *s, int64_t min, int64_t max, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max) {
        fprintf(stderr,
                "system_probe: %s: expected an integer in [%" PRId64 ", %" PRId64 "], got \"%s\"\n",
                flag, min, max, s);
        return -1;
    }
    *out = v;
    return 0;
}

/* Fill o from argv[first..argc); -1 (message printed) on an unknown flag, a
 * missing value or a bad number. */
static int parse_opts(int argc, char **argv, int first, struct opts *o)
{
    for (int i = first; i < argc; i++) {
        const char *f = argv[i];
        if (strcmp(f, "--commit") == 0) {
            o->commit = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "system_probe: %s needs a value\n", f);
            return -1;
        }
        const char *v = argv[++i];
        int rc = 0;
        if (strcmp(f, "--table") == 0)
            o->table = v;
        else if (strcmp(f, "--sql") == 0)
            o->sql = v;
        else if (strcmp(f, "--topic") == 0)
            o->topic = v;
        else if (strcmp(f, "--group") == 0)
            o->group = v;
        else if (strcmp(f, "--label") == 0)
            o->label = v;
        else if (strcmp(f, "--offsets") == 0)
            o->offsets = v;
        else if (strcmp(f, "--metadata") == 0)
            o->metadata = v;
        else if (strcmp(f, "--rows") == 0)
            rc = parse_i64(f, v, 1, 10000000, &o->rows);
        else if (strcmp(f, "--seed") == 0)
            rc = parse_i64(f, v, 0, INT32_MAX, &o->seed);
        else if (strcmp(f, "--count") == 0)
            rc = parse_i64(f, v, 1, 10000000, &o->count);
        else if (strcmp(f, "--max") == 0)
            rc = parse_i64(f, v, 1, 10000000, &o->max);
        else if (strcmp(f, "--seconds") == 0)
            rc = parse_i64(f, v, 1, 86400, &o->seconds);
        else if (strcmp(f, "--timeout-ms") == 0)
            rc = parse_i64(f, v, 1, 3600000, &o->timeout_ms);
        else if (strcmp(f, "--idle-ms") == 0)
            rc = parse_i64(f, v, 1, 3600000, &o->idle_ms);
        else {
            fprintf(stderr, "system_probe: unknown option %s\n", f);
            return -1;
        }
        if (rc != 0)
            return -1;
    }
    return 0;
}

static int need(const char *what, bool present)
{
    if (!present)
        fprintf(stderr, "system_probe: %s is required\n", what);
    return present ? 0 : -1;
}

/* Table names are pasted into SQL by upm_ch_insert: accept db.table only. */
static bool table_name_ok(const char *s)
{
    if (!s[0])
        return false;
    for (const char *c = s; *c; c++) {
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '_' || *c == '.'))
            return false;
    }
    return true;
}

/* ---- shared helpers ------------------------------------------------------ */

/* splitmix64's finaliser: a bijective mix, so sums of mixed distinct values
 * are good order-independent checksums of a set. */
static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= UINT64_C(0xbf58476d1ce4e5b9);
    x ^= x >> 27;
    x *= UINT64_C(0x94d049bb133111eb);
    x ^= x >> 31;
    return x;
}

static uint64_t offset_hash(int32_t partition, int64_t offset)
{
    return mix64(((uint64_t)(uint32_t)partition << 48) ^ (uint64_t)offset);
}

/* Print a ClickHouse error as key=value lines; message last (free text). */
static void print_ch_error(const struct upm_ch_error *err)
{
    const char *name = upm_ch_code_name(err->code);
    printf("code=%d\nname=%s\nretriable=%d\nhttp_status=%d\ncurl_code=%d\nattempts=%d\n"
           "message=%s\n",
           err->code, name ? name : "-", err->retriable ? 1 : 0, err->http_status, err->curl_code,
           err->attempts, err->message);
}

/* ---- ClickHouse ---------------------------------------------------------- */

/*
 * Row i of a batch: id UInt64, ts Int64, s String. id starts at 2^64-1; ts
 * alternates sign and reaches INT64_MIN at row 1 so both ends of Int64 are
 * exercised; s carries bytes that a text format would have to escape (tab,
 * newline, quote, backslash) and multi-byte UTF-8. tests/system computes
 * the same values.
 */
static int ch_row(struct upm_buf *b, int64_t seed, int64_t i)
{
    uint64_t id = UINT64_MAX - (uint64_t)i;
    int64_t ts;
    if (i == 1)
        ts = INT64_MIN;
    else if (i % 2)
        ts = -(seed * 1000000 + i);
    else
        ts = seed * 1000000 + i;
    char s[96];
    int n = snprintf(s, sizeof(s), "seed=%" PRId64 " row=%" PRId64 " \xc3\xa9\t\"q\"\\\n", seed, i);
    if (n < 0 || (size_t)n >= sizeof(s))
        return -1;
    if (upm_ch_rb_u64(b, id) != 0 || upm_ch_rb_i64(b, ts) != 0 ||
        upm_ch_rb_string(b, s, (size_t)n) != 0)
        return -1;
    return 0;
}

static struct upm_ch_client *ch_client(const struct probe_config *cfg)
{
    char errstr[512];
    struct upm_ch_client *client = upm_ch_client_create(&cfg->ch, NULL, errstr, sizeof(errstr));
    if (!client) {
        printf("result=error\nerror=%s\n", errstr);
        fprintf(stderr, "system_probe: clickhouse client: %s\n", errstr);
    }
    return client;
}

static int cmd_ch_insert(const struct probe_config *cfg, const struct opts *o)
{
    if (need("--table", o->table) || need("--rows", o->rows > 0))
        return EXIT_USAGE;
    if (!table_name_ok(o->table)) {
        fprintf(stderr, "system_probe: --table: only [A-Za-z0-9_.] allowed\n");
        return EXIT_USAGE;
    }
    int ret = EXIT_FAIL;
    struct upm_buf batch;
    upm_buf_init(&batch, 0);
    struct upm_ch_client *client = ch_client(cfg);
    if (!client)
        goto out;
    for (int64_t i = 0; i < o->rows; i++) {
        if (ch_row(&batch, o->seed, i) != 0) {
            printf("result=error\nerror=encoding row %" PRId64 " failed\n", i);
            goto out;
        }
    }
    struct upm_ch_error err;
    int rc = upm_ch_insert(client, o->table, "id, ts, s", "RowBinary", batch.data, batch.len, &err);
    printf("rows=%" PRId64 "\nbytes=%zu\nattempts=%d\n", o->rows, batch.len, err.attempts);
    if (rc != 0) {
        printf("result=error\n");
        print_ch_error(&err);
        fprintf(stderr, "system_probe: insert into %s failed: %s\n", o->table, err.message);
        goto out;
    }
    printf("result=ok\n");
    ret = 0;
out:
    upm_ch_client_destroy(client);
    upm_buf_free(&batch);
    return ret;
}

static int cmd_ch_query(const struct probe_config *cfg, const struct opts *o)
{
    if (need("--sql", o->sql))
        return EXIT_USAGE;
    int ret = EXIT_FAIL;
    struct upm_buf body;
    upm_buf_init(&body, 0);
    struct upm_ch_client *client = ch_client(cfg);
    if (!client)
        goto out;
    struct upm_ch_error err;
    if (upm_ch_query(client, o->sql, &body, &err) != 0) {
        printf("result=error\n");
        print_ch_error(&err);
        fprintf(stderr, "system_probe: query failed: %s\n", err.message);
        goto out;
    }
    /* The body exactly as the server sent it: pytest parses it. */
    fwrite(body.data ? body.data : "", 1, body.len, stdout);
    ret = 0;
out:
    upm_ch_client_destroy(client);
    upm_buf_free(&body);
    return ret;
}

static int cmd_ch_error(const struct probe_config *cfg, const struct opts *o)
{
    if (need("--sql", o->sql))
        return EXIT_USAGE;
    int ret = EXIT_FAIL;
    struct upm_buf body;
    upm_buf_init(&body, 0);
    struct upm_ch_client *client = ch_client(cfg);
    if (!client)
        goto out;
    struct upm_ch_error err;
    if (upm_ch_query(client, o->sql, &body, &err) == 0) {
        printf("result=ok\n");
        fprintf(stderr, "system_probe: the statement was expected to fail but succeeded\n");
        goto out;
    }
    printf("result=error\n");
    print_ch_error(&err);
    ret = 0;
out:
    upm_ch_client_destroy(client);
    upm_buf_free(&body);
    return ret;
}

/* ---- Kafka --------------------------------------------------------------- */

static const char *const ORIGINS[] = {"upload/ui", "upload/api", "update/manual", "update/xlsx"};
static const char *const COUNTRIES[] = {"DE", "FR", "KZ", "US", "BR"};

/* Event i of a seed, serialized canonically into out (reset first); its
 * attempt_id (the message key) is copied into key when key is not NULL. */
static int build_event(int64_t seed, int64_t i, struct upm_buf *out,
                       char key[UPM_EVENT_STR_MAX + 1])
{
    struct upm_event ev;
    memset(&ev, 0, sizeof(ev));
    char media0[96], media1[96], data[64];
    char *media[2] = {media0, media1};

    ev.item_id = ITEM_TOP - (uint64_t)i;
    ev.company_id = 1000 + (uint64_t)(i % 97);
    ev.category_id = UINT64_MAX - (uint64_t)(i % 7);
    ev.ts_ns = TS_BASE + i * 1000;
    ev.type = (enum upm_event_type)(UPM_EVENT_SAVE + i % 3);
    ev.is_created = ev.type == UPM_EVENT_SAVE;
    ev.up_ts = ev.is_created ? ev.ts_ns + 500 : 0;
    /* Three events per attempt: the key groups them on one partition. */
    snprintf(ev.attempt_id, sizeof(ev.attempt_id), "probe-%" PRId64 "-%" PRId64, seed, i / 3);
    snprintf(ev.request_id, sizeof(ev.request_id), "req-%" PRId64 "-%" PRId64, seed, i);
    snprintf(ev.origin, sizeof(ev.origin), "%s", ORIGINS[i % 4]);
    snprintf(ev.origin_id, sizeof(ev.origin_id), "o-%" PRId64, i);
    snprintf(ev.country, sizeof(ev.country), "%s", COUNTRIES[i % 5]);
    snprintf(media0, sizeof(media0), "https://cdn.example.com/i/%" PRId64 ".jpg", i);
    snprintf(media1, sizeof(media1), "http://images.example.org/p?q=%" PRId64, i);
    ev.media = media;
    ev.n_media = 2;
    int n = snprintf(data, sizeof(data), "{\"seq\":%" PRId64 ",\"src\":\"probe\"}", i);
    ev.data = data;
    ev.data_len = (size_t)n;
    if (key)
        memcpy(key, ev.attempt_id, sizeof(ev.attempt_id));
    upm_buf_reset(out);
    return upm_event_serialize(&ev, out);
}

struct produce_state {
    uint64_t delivered, failed;
    uint64_t id_sum, offset_sum;
};

static void on_delivery(void *opaque, const struct upm_kafka_delivery *d)
{
    struct produce_state *st = opaque;
    if (d->err != 0) {
        st->failed++;
        fprintf(stderr, "system_probe: delivery failed: %s\n", d->errstr);
        return;
    }
    st->delivered++;
    uint64_t i = (uint64_t)(uintptr_t)d->msg_opaque;
    st->id_sum += mix64(ITEM_TOP - i);
    st->offset_sum += offset_hash(d->partition, d->offset);
}

static int cmd_kafka_produce(const struct probe_config *cfg, const struct opts *o)
{
    if (need("--topic", o->topic) || need("--count", o->count > 0))
        return EXIT_USAGE;
    int ret = EXIT_FAIL;
    char errstr[512];
    char header[32];
    char key[UPM_EVENT_STR_MAX + 1];
    struct produce_state st = {0};
    struct upm_buf value;
    upm_buf_init(&value, UPM_EVENT_DEFAULT_MAX_BYTES);
    uint64_t bytes = 0;
    int64_t produced = 0;

    struct upm_kafka_producer *p =
        upm_kafka_producer_create(&cfg->kafka, NULL, errstr, sizeof(errstr));
    if (!p) {
        printf("error=%s\n", errstr);
        goto out;
    }
    upm_kafka_producer_set_delivery_cb(p, on_delivery, &st);
    int hlen = snprintf(header, sizeof(header), "seed=%" PRId64, o->seed);
    struct upm_kafka_header hdr = {PROBE_HEADER, header, (size_t)hlen};

    for (int64_t i = 0; i < o->count; i++) {
        if (build_event(o->seed, i, &value, key) != 0) {
            printf("error=serializing event %" PRId64 " failed\n", i);
            goto out;
        }
        size_t key_len = strlen(key);
        int retriable = 0;
        int tries = 0;
        /* A full queue drains as deliveries complete: retry a bounded number
         * of times, each produce call waiting up to a second. */
        while (upm_kafka_produce(p, o->topic, key, key_len, value.data, value.len, &hdr, 1,
                                 (void *)(uintptr_t)i, &retriable) != 0) {
            if (!retriable || ++tries > 30) {
                printf("error=produce of event %" PRId64 " failed (retriable=%d)\n", i, retriable);
                goto out;
            }
        }
        produced++;
        bytes += value.len;
        if (i % 1000 == 999)
            upm_kafka_producer_poll(p, 0);
    }
    int in_flight = upm_kafka_producer_flush(p, 60000);
    printf("produced=%" PRId64 "\ndelivered=%" PRIu64 "\nfailed=%" PRIu64 "\nin_flight=%d\n"
           "bytes=%" PRIu64 "\nid_checksum=%016" PRIx64 "\noffset_checksum=%016" PRIx64 "\n",
           produced, st.delivered, st.failed, in_flight, bytes, st.id_sum, st.offset_sum);
    if (in_flight != 0 || st.failed != 0 || st.delivered != (uint64_t)o->count) {
        fprintf(stderr, "system_probe: not every message was delivered\n");
        goto out;
    }
    ret = 0;
out:
    upm_kafka_producer_destroy(p);
    upm_buf_free(&value);
    return ret;
}

struct consume_state {
    uint64_t consumed, parse_failed, mismatched, bad_header;
    uint64_t id_sum, offset_sum;
};

/* Check one message: it parses, carries the header, and equals (byte for
 * byte) the event the producer built for its item_id; re-serializing the
 * parsed event gives the same bytes (canonical round trip). */
static void check_message(const struct upm_kafka_message *m, int64_t seed, const char *header,
                          struct upm_buf *want, struct upm_buf *again, struct consume_state *st)
{
    st->consumed++;
    st->offset_sum += offset_hash(m->partition, m->offset);

    const void *hv = NULL;
    size_t hsize = 0;
    if (upm_kafka_message_header_find(m, PROBE_HEADER, &hv, &hsize) != 0 || !hv ||
        hsize != strlen(header) || memcmp(hv, header, hsize) != 0)
        st->bad_header++;

    struct upm_event ev;
    struct upm_event_error err;
    memset(&err, 0, sizeof(err));
    if (!m->value || upm_event_parse(m->value, m->len, NULL, &ev, &err) != 0) {
        st->parse_failed++;
        if (st->parse_failed <= 5)
            fprintf(stderr,
                    "system_probe: partition %" PRId32 " offset %" PRId64
                    " does not parse: %s field=%s %s\n",
                    m->partition, m->offset, upm_event_reason_name(err.reason), err.field,
                    err.detail);
        return;
    }
    st->id_sum += mix64(ev.item_id);
    uint64_t i = ITEM_TOP - ev.item_id;
    bool same = i < 10000000 && build_event(seed, (int64_t)i, want, NULL) == 0 &&
                want->len == m->len && memcmp(want->data, m->value, m->len) == 0;
    upm_buf_reset(again);
    same = same && upm_event_serialize(&ev, again) == 0 && again->len == m->len &&
           memcmp(again->data, m->value, m->len) == 0;
    same = same && m->key && m->key_len == strlen(ev.attempt_id) &&
           memcmp(m->key, ev.attempt_id, m->key_len) == 0;
    if (!same)
        st->mismatched++;
    upm_event_clear(&ev);
}

static int cmd_kafka_consume(const struct probe_config *cfg, const struct opts *o)
{
    if (need("--topic", o->topic) || need("--group", o->group) || need("--max", o->max > 0))
        return EXIT_USAGE;
    int ret = EXIT_FAIL;
    char errstr[512];
    char header[32];
    struct consume_state st = {0};
    struct upm_buf want, again;
    upm_buf_init(&want, UPM_EVENT_DEFAULT_MAX_BYTES);
    upm_buf_init(&again, UPM_EVENT_DEFAULT_MAX_BYTES);
    int64_t timeout_ms = o->timeout_ms ? o->timeout_ms : 60000;
    int64_t idle_ms = o->idle_ms ? o->idle_ms : 5000;
    uint64_t commits = 0, commit_failed = 0;
    const char *stop_reason = "timeout";
    snprintf(header, sizeof(header), "seed=%" PRId64, o->seed);

    /* cfg is not referenced after create: borrow the group name. */
    struct upm_kafka_config kc = cfg->kafka;
    kc.group_id = (char *)o->group;
    const char *topics[] = {o->topic};
    struct upm_kafka_consumer *c =
        upm_kafka_consumer_create(&kc, NULL, topics, 1, errstr, sizeof(errstr));
    if (!c) {
        printf("error=%s\n", errstr);
        goto out;
    }

    int64_t now = upm_clock_mono_ns();
    int64_t deadline = now + timeout_ms * UPM_NS_PER_MS;
    /* Idle time counts only once partitions are assigned: before that, no
     * message could have arrived whatever the backlog. */
    int64_t idle_since = 0;
    while (st.consumed < (uint64_t)o->max) {
        now = upm_clock_mono_ns();
        if (now >= deadline)
            break;
        if (upm_kafka_consumer_assigned(c) > 0) {
            if (!idle_since)
                idle_since = now;
            if (now - idle_since >= idle_ms * UPM_NS_PER_MS) {
                stop_reason = "idle";
                break;
            }
        }
        struct upm_kafka_batch *b = NULL;
        int retriable = 0;
        int n = upm_kafka_consumer_poll_batch(c, (size_t)o->max - st.consumed, 500, &b, &retriable);
        if (n < 0) {
            upm_kafka_consumer_fatal(c, errstr, sizeof(errstr));
            printf("error=consumer failed: %s\n", errstr);
            goto out;
        }
        if (n == 0)
            continue;
        idle_since = upm_clock_mono_ns();
        for (size_t k = 0; k < upm_kafka_batch_count(b); k++)
            check_message(upm_kafka_batch_message(b, k), o->seed, header, &want, &again, &st);
        if (o->commit) {
            int tries = 0;
            int rc;
            while ((rc = upm_kafka_consumer_commit(c, b, &retriable)) != 0 && retriable &&
                   ++tries <= 10)
                upm_clock_sleep_ms(200, NULL);
            if (rc == 0)
                commits++;
            else
                commit_failed++;
        }
        upm_kafka_batch_destroy(b);
    }
    if (st.consumed >= (uint64_t)o->max)
        stop_reason = "max";
    upm_kafka_consumer_close(c);

    printf("consumed=%" PRIu64 "\nparse_failed=%" PRIu64 "\nmismatched=%" PRIu64
           "\nbad_header=%" PRIu64 "\ncommits=%" PRIu64 "\ncommit_failed=%" PRIu64
           "\nstop=%s\nid_checksum=%016" PRIx64 "\noffset_checksum=%016" PRIx64 "\n",
           st.consumed, st.parse_failed, st.mismatched, st.bad_header, commits, commit_failed,
           stop_reason, st.id_sum, st.offset_sum);
    if (st.parse_failed || st.mismatched || st.bad_header || commit_failed) {
        fprintf(stderr, "system_probe: some messages failed the checks\n");
        goto out;
    }
    ret = 0;
out:
    upm_kafka_consumer_destroy(c);
    upm_buf_free(&want);
    upm_buf_free(&again);
    return ret;
}

/* ---- metrics server ------------------------------------------------------ */

static int cmd_serve(const struct probe_config *cfg, const struct opts *o)
{
    if (need("--seconds", o->seconds > 0))
        return EXIT_USAGE;
    /* Every character the exposition format must escape, plus UTF-8. */
    const char *label = o->label ? o->label : "q\"b\\n\nu\xc3\xa9\xe6\x97\xa5";
    int ret = EXIT_FAIL;
    char errstr[512];
    struct upm_httpd *h = NULL;
    struct upm_prom_registry *reg = upm_prom_registry_create();

    struct upm_prom_metric *counter = upm_prom_counter(
        reg, "upmon_probe_events_total", "Events the probe pretends to count.", 0, NULL);
    struct upm_prom_metric *gauge =
        upm_prom_gauge(reg, "upmon_probe_label_gauge", "A gauge whose label needs escaping.", 2,
                       (const char *[]){"value", "plain"});
    static const double buckets[] = {0.005, 0.1, 1, 10};
    struct upm_prom_metric *hist =
        upm_prom_histogram(reg, "upmon_probe_latency_seconds", "Observations at known places.",
                           sizeof(buckets) / sizeof(buckets[0]), buckets, 0, NULL);
    if (!counter || !gauge || !hist) {
        printf("error=metric registration failed\n");
        goto out;
    }
    upm_prom_inc(upm_prom_series_get(counter, NULL), 12345);
    upm_prom_set(upm_prom_series_get(gauge, (const char *[]){label, "x"}), 2.5);
    /* One observation per bucket and one beyond: 1, 2, 3, 4, 5 cumulative. */
    static const double seen[] = {0.001, 0.05, 0.5, 5, 50};
    struct upm_prom_series *hs = upm_prom_series_get(hist, NULL);
    for (size_t i = 0; i < sizeof(seen) / sizeof(seen[0]); i++)
        upm_prom_observe(hs, seen[i]);

    h = upm_httpd_create(&cfg->http, reg, errstr, sizeof(errstr));
    if (!h || upm_httpd_start(h, errstr, sizeof(errstr)) != 0) {
        printf("error=%s\n", errstr);
        goto out;
    }
    upm_httpd_set_ready(h, true, NULL);
    printf("port=%d\nready=1\n", upm_httpd_port(h));
    fflush(stdout);

    int64_t deadline = upm_clock_mono_ns() + o->seconds * UPM_NS_PER_S;
    while (!g_stop && upm_clock_mono_ns() < deadline)
        upm_clock_sleep_ms(100, NULL);
    printf("stopped=%s\n", g_stop ? "signal" : "timeout");
    ret = 0;
out:
    upm_httpd_destroy(h);
    upm_prom_registry_destroy(reg);
    return ret;
}

/* ---- kafka-commit -------------------------------------------------------- */

/* Join G as its only member (so every partition is assigned here) and
 * commit the listed offsets, all with --metadata, in one commit: how a test
 * leaves the state a crashed consumer would have left. */
static int cmd_kafka_commit(const struct probe_config *cfg, const struct opts *o)
{
    if (need("--topic", o->topic) || need("--group", o->group) || need("--offsets", o->offsets))
        return EXIT_USAGE;
    struct upm_kafka_offset offs[256];
    size_t n = 0;
    const char *p = o->offsets;
    while (*p && n < sizeof(offs) / sizeof(offs[0])) {
        char *end = NULL;
        long part = strtol(p, &end, 10);
        if (end == p || *end != '=')
            return EXIT_USAGE;
        p = end + 1;
        long long off = strtoll(p, &end, 10);
        if (end == p || (*end != ',' && *end != '\0'))
            return EXIT_USAGE;
        offs[n++] = (struct upm_kafka_offset){(int32_t)part, off, o->metadata};
        p = *end ? end + 1 : end;
    }
    char errstr[512];
    struct upm_kafka_config kc = cfg->kafka;
    kc.group_id = (char *)o->group;
    const char *topics[] = {o->topic};
    struct upm_kafka_consumer *c =
        upm_kafka_consumer_create(&kc, NULL, topics, 1, errstr, sizeof(errstr));
    if (!c) {
        printf("error=%s\n", errstr);
        return EXIT_FAIL;
    }
    int ret = EXIT_FAIL;
    int64_t deadline = upm_clock_mono_ns() + 60 * UPM_NS_PER_S;
    while (upm_kafka_consumer_assigned(c) <= 0 && upm_clock_mono_ns() < deadline) {
        struct upm_kafka_batch *b = NULL;
        int retriable = 0;
        /* Joining happens in polls; what they return is not consumed. */
        if (upm_kafka_consumer_poll_batch(c, 1, 200, &b, &retriable) < 0)
            break;
        upm_kafka_batch_destroy(b);
    }
    int retriable = 0;
    if (upm_kafka_consumer_commit_offsets(c, o->topic, offs, n, &retriable) == 0) {
        printf("result=ok\ncommitted=%zu\n", n);
        ret = 0;
    } else {
        printf("result=error\nretriable=%d\n", retriable);
    }
    upm_kafka_consumer_close(c);
    upm_kafka_consumer_destroy(c);
    return ret;
}

/* ---- main ---------------------------------------------------------------- */

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : 0;
    }
    struct opts o = {0};
    o.seed = 1;
    if (parse_opts(argc, argv, 2, &o) != 0) {
        usage(stderr);
        return EXIT_USAGE;
    }

    struct probe_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    const struct upm_config_section sections[] = {
        {"log", upm_log_config_keys, upm_log_config_nkeys, &cfg.log},
        {"http", upm_httpd_config_keys, upm_httpd_config_nkeys, &cfg.http},
        {"kafka", upm_kafka_config_keys, upm_kafka_config_nkeys, &cfg.kafka},
        {"clickhouse", upm_ch_config_keys, upm_ch_config_nkeys, &cfg.ch},
    };
    const size_t nsections = sizeof(sections) / sizeof(sections[0]);
    char errstr[512];
    if (upm_config_load(sections, nsections, NULL, errstr, sizeof(errstr)) != 0) {
        fprintf(stderr, "system_probe: configuration: %s\n", errstr);
        upm_config_free(sections, nsections);
        return EXIT_USAGE;
    }
    upm_log_apply(&cfg.log);

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    const char *cmd = argv[1];
    int ret;
    if (strcmp(cmd, "ch-insert") == 0)
        ret = cmd_ch_insert(&cfg, &o);
    else if (strcmp(cmd, "ch-query") == 0)
        ret = cmd_ch_query(&cfg, &o);
    else if (strcmp(cmd, "ch-error") == 0)
        ret = cmd_ch_error(&cfg, &o);
    else if (strcmp(cmd, "kafka-produce") == 0)
        ret = cmd_kafka_produce(&cfg, &o);
    else if (strcmp(cmd, "kafka-consume") == 0)
        ret = cmd_kafka_consume(&cfg, &o);
    else if (strcmp(cmd, "kafka-commit") == 0)
        ret = cmd_kafka_commit(&cfg, &o);
    else if (strcmp(cmd, "serve") == 0)
        ret = cmd_serve(&cfg, &o);
    else {
        fprintf(stderr, "system_probe: unknown command %s\n", cmd);
        usage(stderr);
        ret = EXIT_USAGE;
    }
    fflush(stdout);
    upm_config_free(sections, nsections);
    return ret;
}
