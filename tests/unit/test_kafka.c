/*
 * kafka module tests against librdkafka's built-in mock cluster (3 brokers,
 * in-process). The cluster belongs to a helper handle created once per run;
 * the module's clients reach it through its bootstrap list like any broker.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "upmon/buf.h"
#include "upmon/clock.h"
#include "upmon/kafka.h"
#include "upmon/log.h"
#include "upmon/prom.h"

static rd_kafka_t *mock_rk;
static rd_kafka_mock_cluster_t *mock;
static char bootstraps[512];

static int group_setup(void **state)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "test.mock.num.brokers", "3", errstr, sizeof(errstr)) !=
            RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "mock conf: %s\n", errstr);
        return -1;
    }
    mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!mock_rk) {
        fprintf(stderr, "mock handle: %s\n", errstr);
        return -1;
    }
    mock = rd_kafka_handle_mock_cluster(mock_rk);
    if (!mock)
        return -1;
    snprintf(bootstraps, sizeof(bootstraps), "%s", rd_kafka_mock_cluster_bootstraps(mock));
    return 0;
}

static int group_teardown(void **state)
{
    rd_kafka_destroy(mock_rk);
    return 0;
}

static struct upm_kafka_config base_config(const char *topic, const char *group)
{
    return (struct upm_kafka_config){
        .brokers = bootstraps,
        .client_id = "upmon-test",
        .group_id = (char *)group,
        .topic = (char *)topic,
        .compression = "lz4",
        .acks = "all",
        .enable_idempotence = true,
        .auto_offset_reset = "earliest",
        /* The mock cluster holds a rebalance until a departed member's
         * session expires: keep that short. */
        .session_timeout_ms = 6000,
    };
}

/* Value of the first sample of metric whose label set contains every string
 * in `want` (e.g. `client="x"`); NAN when there is none. */
static double sample(struct upm_prom_registry *reg, const char *metric, const char *want1,
                     const char *want2)
{
    struct upm_buf out;
    double v = NAN;
    upm_buf_init(&out, 0);
    assert_int_equal(upm_prom_render(reg, &out), 0);
    size_t mlen = strlen(metric);
    for (char *line = out.data; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        if (strncmp(line, metric, mlen) == 0 && line[mlen] == '{' &&
            (!want1 || strstr(line, want1)) && (!want2 || strstr(line, want2))) {
            char *sp = strrchr(line, ' ');
            v = strtod(sp + 1, NULL);
            break;
        }
        line = nl ? nl + 1 : NULL;
    }
    upm_buf_free(&out);
    return v;
}

static char *render(struct upm_prom_registry *reg)
{
    struct upm_buf out;
    upm_buf_init(&out, 0);
    assert_int_equal(upm_prom_render(reg, &out), 0);
    return upm_buf_steal(&out, NULL);
}

/* ---- log capture: a FILE whose writes record the writing thread ---------- */

struct capture {
    struct upm_buf text;
    pthread_t owner;
    atomic_int foreign_writes;
};

static ssize_t capture_write(void *cookie, const char *data, size_t size)
{
    struct capture *c = cookie;
    if (!pthread_equal(pthread_self(), c->owner))
        atomic_fetch_add(&c->foreign_writes, 1);
    upm_buf_append(&c->text, data, size);
    return (ssize_t)size;
}

static FILE *capture_open(struct capture *c)
{
    upm_buf_init(&c->text, 0);
    c->owner = pthread_self();
    atomic_init(&c->foreign_writes, 0);
    FILE *f = fopencookie(c, "w", (cookie_io_functions_t){.write = capture_write});
    assert_non_null(f);
    setvbuf(f, NULL, _IONBF, 0);
    upm_log_set_sink(f);
    return f;
}

static void capture_close(struct capture *c, FILE *f)
{
    upm_log_set_sink(NULL);
    fclose(f);
    upm_buf_free(&c->text);
}

/* A line of the capture holding every needle, or NULL. */
static const char *captured_line(const struct capture *c, const char *n1, const char *n2)
{
    const char *line = c->text.data;
    while (line && *line) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        char *copy = strndup(line, len);
        int hit = strstr(copy, n1) && (!n2 || strstr(copy, n2));
        free(copy);
        if (hit)
            return line;
        line = nl ? nl + 1 : NULL;
    }
    return NULL;
}

/* ---- config and argument errors ------------------------------------------ */

static void test_destroy_null_is_safe(void **state)
{
    upm_kafka_producer_destroy(NULL);
    upm_kafka_consumer_destroy(NULL);
    upm_kafka_batch_destroy(NULL);
    assert_int_equal(upm_kafka_consumer_close(NULL), 0);
    assert_int_equal(upm_kafka_batch_count(NULL), 0);
    assert_null(upm_kafka_batch_message(NULL, 0));
}

static const struct upm_config_key *find_key(const char *name)
{
    for (size_t i = 0; i < upm_kafka_config_nkeys; i++)
        if (strcmp(upm_kafka_config_keys[i].name, name) == 0)
            return &upm_kafka_config_keys[i];
    return NULL;
}

static void expect_key(const char *name, enum upm_config_type type, size_t offset, const char *def)
{
    const struct upm_config_key *k = find_key(name);
    if (!k)
        fail_msg("key %s missing from the table", name);
    assert_int_equal(k->type, type);
    assert_int_equal(k->offset, offset);
    if (def)
        assert_string_equal(k->def, def);
}

static void test_config_table(void **state)
{
    typedef struct upm_kafka_config C;
    expect_key("brokers", UPM_CFG_STRING, offsetof(C, brokers), "127.0.0.1:9092");
    expect_key("client_id", UPM_CFG_STRING, offsetof(C, client_id), NULL);
    expect_key("group_id", UPM_CFG_STRING, offsetof(C, group_id), NULL);
    expect_key("topic", UPM_CFG_STRING, offsetof(C, topic), NULL);
    expect_key("dlq_topic", UPM_CFG_STRING, offsetof(C, dlq_topic), "upmon.events.dlq");
    expect_key("statistics_interval", UPM_CFG_DURATION_MS, offsetof(C, statistics_interval_ms),
               "15s");
    expect_key("compression", UPM_CFG_ENUM, offsetof(C, compression), "lz4");
    expect_key("linger", UPM_CFG_DURATION_MS, offsetof(C, linger_ms), NULL);
    expect_key("batch_size", UPM_CFG_INT, offsetof(C, batch_size), NULL);
    expect_key("acks", UPM_CFG_ENUM, offsetof(C, acks), "all");
    expect_key("enable_idempotence", UPM_CFG_BOOL, offsetof(C, enable_idempotence), "true");
    expect_key("session_timeout", UPM_CFG_DURATION_MS, offsetof(C, session_timeout_ms), NULL);
    expect_key("max_poll_interval", UPM_CFG_DURATION_MS, offsetof(C, max_poll_interval_ms), NULL);
    expect_key("auto_offset_reset", UPM_CFG_ENUM, offsetof(C, auto_offset_reset), NULL);
    expect_key("security_protocol", UPM_CFG_ENUM, offsetof(C, security_protocol), NULL);
    expect_key("sasl_mechanism", UPM_CFG_STRING, offsetof(C, sasl_mechanism), NULL);
    expect_key("sasl_username", UPM_CFG_STRING, offsetof(C, sasl_username), NULL);
    expect_key("sasl_password", UPM_CFG_STRING, offsetof(C, sasl_password), NULL);
    expect_key("ssl_ca_location", UPM_CFG_STRING, offsetof(C, ssl_ca_location), NULL);
    expect_key("properties", UPM_CFG_STRING_LIST, offsetof(C, properties), NULL);
    assert_true(find_key("sasl_password")->flags & UPM_CFG_SECRET);

    for (size_t i = 0; i < upm_kafka_config_nkeys; i++) {
        const struct upm_config_key *k = &upm_kafka_config_keys[i];
        assert_true(strspn(k->name, "abcdefghijklmnopqrstuvwxyz0123456789_") == strlen(k->name));
        assert_non_null(k->def); /* nothing in this section is required */
        assert_non_null(k->description);
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(k->name, upm_kafka_config_keys[j].name);
        if (k->type == UPM_CFG_ENUM) {
            /* The default must be one of the choices, and every choice must
             * be a value librdkafka accepts for the property it feeds. */
            int found = 0;
            for (const char *const *c = k->choices; *c; c++)
                found |= strcmp(*c, k->def) == 0;
            assert_true(found);
        }
    }
    /* Each choice of each enum reaches librdkafka and is accepted. */
    static const struct {
        const char *key;
        const char *prop;
    } enums[] = {{"compression", "compression.type"},
                 {"acks", "acks"},
                 {"auto_offset_reset", "auto.offset.reset"},
                 {"security_protocol", "security.protocol"}};
    for (size_t i = 0; i < sizeof(enums) / sizeof(enums[0]); i++) {
        for (const char *const *c = find_key(enums[i].key)->choices; *c; c++) {
            rd_kafka_conf_t *conf = rd_kafka_conf_new();
            char err[256];
            if (rd_kafka_conf_set(conf, enums[i].prop, *c, err, sizeof(err)) != RD_KAFKA_CONF_OK)
                fail_msg("%s=%s rejected: %s", enums[i].key, *c, err);
            rd_kafka_conf_destroy(conf);
        }
    }
}

/* The table's defaults go through the real loader, and what it produces
 * creates working clients. */
static void test_config_loads_defaults_and_yaml(void **state)
{
    struct upm_kafka_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    const struct upm_config_section sec = {"kafka", upm_kafka_config_keys, upm_kafka_config_nkeys,
                                           &cfg};
    char errstr[512] = "";
    static const char yaml[] =
        "kafka:\n"
        "  compression: zstd\n"
        "  linger: 20ms\n"
        "  properties: [\"socket.timeout.ms=5000\", \"fetch.wait.max.ms=50\"]\n";
    if (upm_config_load_string(&sec, 1, yaml, strlen(yaml), "test.yaml", errstr, sizeof(errstr)) !=
        0)
        fail_msg("load: %s", errstr);
    assert_string_equal(cfg.brokers, "127.0.0.1:9092");
    assert_string_equal(cfg.dlq_topic, "upmon.events.dlq");
    assert_int_equal(cfg.statistics_interval_ms, 15000);
    assert_string_equal(cfg.compression, "zstd");
    assert_int_equal(cfg.linger_ms, 20);
    assert_string_equal(cfg.acks, "all");
    assert_true(cfg.enable_idempotence);
    assert_int_equal(cfg.properties.count, 2);
    assert_string_equal(cfg.properties.items[1], "fetch.wait.max.ms=50");

    /* Pointed at the mock cluster, the loaded configuration is accepted. */
    free(cfg.brokers);
    cfg.brokers = strdup(bootstraps);
    struct upm_kafka_producer *p = upm_kafka_producer_create(&cfg, NULL, errstr, sizeof(errstr));
    if (!p)
        fail_msg("producer from loaded config: %s", errstr);
    upm_kafka_producer_destroy(p);
    struct upm_kafka_consumer *c =
        upm_kafka_consumer_create(&cfg, NULL, NULL, 0, errstr, sizeof(errstr));
    if (!c)
        fail_msg("consumer from loaded config: %s", errstr);
    upm_kafka_consumer_destroy(c);
    upm_config_free(&sec, 1);

    /* An enum value outside the table is refused by the loader, naming it. */
    static const char bad[] = "kafka:\n  acks: some\n";
    memset(&cfg, 0, sizeof(cfg));
    assert_int_equal(
        upm_config_load_string(&sec, 1, bad, strlen(bad), "bad.yaml", errstr, sizeof(errstr)), -1);
    assert_non_null(strstr(errstr, "acks"));
    upm_config_free(&sec, 1);
}

static void expect_create_fails(struct upm_kafka_config *cfg, int consumer, const char *needle)
{
    char errstr[512] = "";
    if (consumer) {
        struct upm_kafka_consumer *c =
            upm_kafka_consumer_create(cfg, NULL, NULL, 0, errstr, sizeof(errstr));
        if (c) {
            upm_kafka_consumer_destroy(c);
            fail_msg("consumer created; expected an error naming %s", needle);
        }
    } else {
        struct upm_kafka_producer *p = upm_kafka_producer_create(cfg, NULL, errstr, sizeof(errstr));
        if (p) {
            upm_kafka_producer_destroy(p);
            fail_msg("producer created; expected an error naming %s", needle);
        }
    }
    if (!strstr(errstr, needle))
        fail_msg("errstr \"%s\" does not name \"%s\"", errstr, needle);
}

static void test_invalid_settings_fail_naming_the_key(void **state)
{
    struct upm_kafka_config cfg = base_config("t", "g");
    char *props[2];
    cfg.properties.items = props;
    cfg.properties.count = 1;

    props[0] = "linger.ms=soon";
    expect_create_fails(&cfg, 0, "kafka.properties: linger.ms:");
    expect_create_fails(&cfg, 1, "linger.ms");
    props[0] = "no.such.property=1";
    expect_create_fails(&cfg, 0, "no.such.property");
    props[0] = "fetch.min.bytes";
    expect_create_fails(&cfg, 1, "not name=value");
    props[0] = "=1";
    expect_create_fails(&cfg, 0, "not name=value");
    /* Settings the at-least-once guarantee rests on cannot be overridden. */
    props[0] = "enable.auto.commit=true";
    expect_create_fails(&cfg, 1, "enable.auto.commit");
    props[0] = "enable.auto.offset.store=true";
    expect_create_fails(&cfg, 1, "enable.auto.offset.store");
    props[0] = "log.queue=false";
    expect_create_fails(&cfg, 0, "log.queue");
    /* The last of several properties is applied too. */
    props[0] = "socket.timeout.ms=5000";
    props[1] = "queue.buffering.max.messages=-5";
    cfg.properties.count = 2;
    expect_create_fails(&cfg, 0, "queue.buffering.max.messages");
    cfg.properties.count = 0;

    cfg.compression = "brotli";
    expect_create_fails(&cfg, 0, "kafka.compression");
    cfg.compression = "lz4";
    cfg.batch_size = -3;
    expect_create_fails(&cfg, 0, "kafka.batch_size");
    cfg.batch_size = 0;
    /* librdkafka refuses idempotence without acks=all at rd_kafka_new. */
    cfg.acks = "1";
    expect_create_fails(&cfg, 0, "acks");
    cfg.acks = "all";
    cfg.session_timeout_ms = 10 * 3600 * 1000; /* beyond librdkafka's 1 h */
    expect_create_fails(&cfg, 1, "kafka.session_timeout");
    cfg.session_timeout_ms = 0;
    cfg.group_id = NULL;
    expect_create_fails(&cfg, 1, "kafka.group_id");
    cfg.group_id = "g";
    cfg.topic = NULL;
    expect_create_fails(&cfg, 1, "kafka.topic");
    cfg.brokers = NULL;
    expect_create_fails(&cfg, 0, "kafka.brokers");

    /* Control: the same struct with valid values creates both clients. */
    cfg = base_config("t", "g");
    props[0] = "socket.timeout.ms=5000";
    cfg.properties.items = props;
    cfg.properties.count = 1;
    char errstr[256] = "";
    struct upm_kafka_producer *p = upm_kafka_producer_create(&cfg, NULL, errstr, sizeof(errstr));
    if (!p)
        fail_msg("valid config rejected: %s", errstr);
    assert_non_null(strstr(upm_kafka_producer_name(p), "upmon-test#producer-"));
    upm_kafka_producer_destroy(p);
}

/* ---- produce and consume ------------------------------------------------- */

struct reports {
    int ok;
    int failed;
    int last_err;
    int opaque_mismatch;
    int offsets_bad;
};

static void record_delivery(void *opaque, const struct upm_kafka_delivery *d)
{
    struct reports *r = opaque;
    if (d->err == 0) {
        r->ok++;
        if (d->offset < 0 || d->partition < 0)
            r->offsets_bad++;
    } else {
        r->failed++;
        r->last_err = d->err;
        if (d->offset != -1)
            r->offsets_bad++;
    }
    /* msg_opaque carries the sequence number; the value is "v<seq>". */
    char want[32];
    snprintf(want, sizeof(want), "v%d", (int)(intptr_t)d->msg_opaque);
    if (d->len != strlen(want) || memcmp(d->value, want, d->len) != 0)
        r->opaque_mismatch++;
}

#define NMSG  40
#define NKEYS 5

static void produce_seq(struct upm_kafka_producer *p, const char *topic, int from, int to)
{
    for (int i = from; i < to; i++) {
        char key[16], value[16], seq[16], reason[32];
        snprintf(key, sizeof(key), "k%d", i % NKEYS);
        snprintf(value, sizeof(value), "v%d", i);
        snprintf(seq, sizeof(seq), "%d", i);
        snprintf(reason, sizeof(reason), "reason-%d", i);
        struct upm_kafka_header hdrs[] = {
            {"seq", seq, strlen(seq)},
            {"reason", reason, strlen(reason)},
            {"empty", NULL, 0},
        };
        int retriable = -1;
        assert_int_equal(upm_kafka_produce(p, topic, key, strlen(key), value, strlen(value), hdrs,
                                           3, (void *)(intptr_t)i, &retriable),
                         0);
        assert_int_equal(retriable, 0);
    }
}

/* Poll until `want` messages are in hand or 30 s pass; returns them as one
 * array of batches. */
struct collected {
    struct upm_kafka_batch *batches[256];
    size_t nbatches;
    size_t count;
};

static void collect(struct upm_kafka_consumer *c, size_t want, size_t max_per_batch,
                    struct collected *out)
{
    int64_t deadline = upm_clock_mono_ns() + 30 * UPM_NS_PER_S;
    while (out->count < want && upm_clock_mono_ns() < deadline) {
        struct upm_kafka_batch *b = NULL;
        int retriable = -1;
        int n = upm_kafka_consumer_poll_batch(c, max_per_batch, 200, &b, &retriable);
        assert_true(n >= 0);
        if (n == 0) {
            assert_null(b);
            continue;
        }
        assert_int_equal((size_t)n, upm_kafka_batch_count(b));
        assert_true((size_t)n <= max_per_batch);
        assert_true(out->nbatches < 256);
        out->batches[out->nbatches++] = b;
        out->count += (size_t)n;
    }
}

static void collected_free(struct collected *c)
{
    for (size_t i = 0; i < c->nbatches; i++)
        upm_kafka_batch_destroy(c->batches[i]);
    memset(c, 0, sizeof(*c));
}

static void test_produce_consume_roundtrip(void **state)
{
    const char *topic = "roundtrip";
    assert_int_equal(rd_kafka_mock_topic_create(mock, topic, 3, 3), 0);
    struct upm_prom_registry *reg = upm_prom_registry_create();
    struct upm_kafka_config cfg = base_config(topic, "g-roundtrip");
    char errstr[512] = "";

    struct upm_kafka_producer *p = upm_kafka_producer_create(&cfg, reg, errstr, sizeof(errstr));
    if (!p)
        fail_msg("producer: %s", errstr);
    struct reports r = {0};
    upm_kafka_producer_set_delivery_cb(p, record_delivery, &r);
    /* NULL topic = the configured one. */
    produce_seq(p, NULL, 0, NMSG);
    assert_int_equal(upm_kafka_producer_flush(p, 10000), 0);
    assert_int_equal(r.ok, NMSG);
    assert_int_equal(r.failed, 0);
    assert_int_equal(r.opaque_mismatch, 0);
    assert_int_equal(r.offsets_bad, 0);
    assert_true(sample(reg, "upmon_kafka_delivered_total", "topic=\"roundtrip\"", NULL) == NMSG);
    /* The failure series exists from the first report on, at 0. */
    assert_true(sample(reg, "upmon_kafka_delivery_failed_total", "topic=\"roundtrip\"", NULL) == 0);
    upm_kafka_producer_destroy(p);

    struct upm_kafka_consumer *c =
        upm_kafka_consumer_create(&cfg, reg, NULL, 0, errstr, sizeof(errstr));
    if (!c)
        fail_msg("consumer: %s", errstr);
    struct collected got = {0};
    collect(c, NMSG, 16, &got);
    assert_int_equal(got.count, NMSG);
    assert_int_equal(upm_kafka_consumer_assigned(c), 3);

    int seen[NMSG] = {0};
    int32_t key_partition[NKEYS] = {-1, -1, -1, -1, -1};
    int last_seq_of_key[NKEYS] = {-1, -1, -1, -1, -1};
    int64_t last_offset[3] = {-1, -1, -1};
    for (size_t bi = 0; bi < got.nbatches; bi++) {
        for (size_t i = 0; i < upm_kafka_batch_count(got.batches[bi]); i++) {
            const struct upm_kafka_message *m = upm_kafka_batch_message(got.batches[bi], i);
            assert_non_null(m);
            assert_string_equal(m->topic, topic);
            assert_true(m->partition >= 0 && m->partition < 3);
            assert_true(m->timestamp_ms > 0);
            char value[16];
            assert_true(m->len > 1 && m->len < sizeof(value));
            memcpy(value, m->value, m->len);
            value[m->len] = '\0';
            int seq = (int)strtol(value + 1, NULL, 10);
            assert_true(value[0] == 'v' && seq >= 0 && seq < NMSG);
            seen[seq]++;

            char key[16];
            snprintf(key, sizeof(key), "k%d", seq % NKEYS);
            assert_int_equal(m->key_len, strlen(key));
            assert_memory_equal(m->key, key, m->key_len);
            /* Same key, same partition; within it, production order. */
            int k = seq % NKEYS;
            if (key_partition[k] < 0)
                key_partition[k] = m->partition;
            assert_int_equal(m->partition, key_partition[k]);
            assert_true(seq > last_seq_of_key[k]);
            last_seq_of_key[k] = seq;
            assert_true(m->offset > last_offset[m->partition]);
            last_offset[m->partition] = m->offset;

            assert_int_equal(upm_kafka_message_header_count(m), 3);
            const char *name;
            const void *hv;
            size_t hsize;
            char want[32];
            assert_int_equal(upm_kafka_message_header(m, 0, &name, &hv, &hsize), 0);
            snprintf(want, sizeof(want), "%d", seq);
            assert_string_equal(name, "seq");
            assert_int_equal(hsize, strlen(want));
            assert_memory_equal(hv, want, hsize);
            assert_int_equal(upm_kafka_message_header_find(m, "reason", &hv, &hsize), 0);
            snprintf(want, sizeof(want), "reason-%d", seq);
            assert_int_equal(hsize, strlen(want));
            assert_memory_equal(hv, want, hsize);
            assert_int_equal(upm_kafka_message_header_find(m, "empty", &hv, &hsize), 0);
            assert_null(hv);
            assert_int_equal(upm_kafka_message_header_find(m, "absent", &hv, &hsize), -1);
            assert_int_equal(upm_kafka_message_header(m, 3, &name, &hv, &hsize), -1);
        }
    }
    for (int i = 0; i < NMSG; i++)
        if (seen[i] != 1)
            fail_msg("message v%d consumed %d times", i, seen[i]);
    assert_null(upm_kafka_batch_message(got.batches[0], upm_kafka_batch_count(got.batches[0])));

    /* Nothing more arrives: no duplicates from the consumer itself. */
    struct upm_kafka_batch *b = NULL;
    assert_int_equal(upm_kafka_consumer_poll_batch(c, 16, 500, &b, NULL), 0);
    assert_null(b);
    /* Everything fetched: the position equals the high watermark. */
    assert_int_equal(upm_kafka_consumer_lag(c), 0);

    /* A caught-up consumer hands over a partial batch when a partition
     * reaches its end instead of sitting out the whole timeout. */
    p = upm_kafka_producer_create(&cfg, reg, errstr, sizeof(errstr));
    assert_non_null(p);
    produce_seq(p, topic, NMSG, NMSG + 3);
    assert_int_equal(upm_kafka_producer_flush(p, 10000), 0);
    upm_kafka_producer_destroy(p);
    int64_t t0 = upm_clock_mono_ns();
    int n = upm_kafka_consumer_poll_batch(c, 1000, 60000, &b, NULL);
    int64_t waited_s = (upm_clock_mono_ns() - t0) / UPM_NS_PER_S;
    assert_true(n >= 1 && n <= 3);
    assert_non_null(b);
    if (waited_s >= 30)
        fail_msg("poll_batch waited %" PRId64 " s for a drained partition", waited_s);
    upm_kafka_batch_destroy(b);
    b = NULL;

    collected_free(&got);
    assert_int_equal(upm_kafka_consumer_close(c), 0);
    assert_int_equal(upm_kafka_consumer_close(c), 0);
    int retriable = -1;
    assert_int_equal(upm_kafka_consumer_poll_batch(c, 16, 0, &b, &retriable), -1);
    assert_int_equal(retriable, 0);
    upm_kafka_consumer_destroy(c);
    upm_prom_registry_destroy(reg);
}

/* First message a new member of group gets from the one-partition topic. */
static int64_t first_offset_for_group(struct upm_kafka_config *cfg)
{
    char errstr[512] = "";
    struct upm_kafka_consumer *c =
        upm_kafka_consumer_create(cfg, NULL, NULL, 0, errstr, sizeof(errstr));
    if (!c)
        fail_msg("consumer: %s", errstr);
    struct collected got = {0};
    collect(c, 1, 1, &got);
    assert_int_equal(got.count, 1);
    const struct upm_kafka_message *m = upm_kafka_batch_message(got.batches[0], 0);
    int64_t offset = m->offset;
    char want[16];
    snprintf(want, sizeof(want), "v%d", (int)offset); /* offset i holds v<i> */
    assert_int_equal(m->len, strlen(want));
    assert_memory_equal(m->value, want, m->len);
    collected_free(&got);
    upm_kafka_consumer_destroy(c); /* closes first */
    return offset;
}

static void test_commit_then_new_member_resumes(void **state)
{
    const char *topic = "resume";
    assert_int_equal(rd_kafka_mock_topic_create(mock, topic, 1, 3), 0);
    struct upm_kafka_config cfg = base_config(topic, "g-resume");
    char errstr[512] = "";
    struct upm_kafka_producer *p = upm_kafka_producer_create(&cfg, NULL, errstr, sizeof(errstr));
    assert_non_null(p);
    produce_seq(p, topic, 0, 10);
    assert_int_equal(upm_kafka_producer_flush(p, 10000), 0);
    upm_kafka_producer_destroy(p);

    /* Member A takes 4 messages, commits them, and leaves. */
    struct upm_prom_registry *reg = upm_prom_registry_create();
    struct upm_kafka_config acfg = cfg;
    acfg.statistics_interval_ms = 100;
    struct upm_kafka_consumer *a =
        upm_kafka_consumer_create(&acfg, reg, NULL, 0, errstr, sizeof(errstr));
    assert_non_null(a);
    struct collected got = {0};
    collect(a, 4, 4, &got);
    assert_int_equal(got.count, 4);
    int64_t last = -1;
    for (size_t i = 0; i < got.nbatches; i++) {
        size_t n = upm_kafka_batch_count(got.batches[i]);
        last = upm_kafka_batch_message(got.batches[i], n - 1)->offset;
    }
    assert_int_equal(last, 3);
    /* 10 in the partition, position after offset 3. */
    assert_int_equal(upm_kafka_consumer_lag(a), 6);
    int retriable = -1;
    for (size_t i = 0; i < got.nbatches; i++)
        assert_int_equal(upm_kafka_consumer_commit(a, got.batches[i], &retriable), 0);
    assert_int_equal(upm_kafka_consumer_commit(a, NULL, &retriable), 0);

    /* The statistics (served by the consumer's own polls) report the lag
     * behind the committed offset: 10 - 4. Messages polled meanwhile are
     * not committed, so they do not move it. */
    char client[160];
    snprintf(client, sizeof(client), "client=\"%s\"", upm_kafka_consumer_name(a));
    int64_t deadline = upm_clock_mono_ns() + 15 * UPM_NS_PER_S;
    double lag = NAN, rx = NAN;
    while (upm_clock_mono_ns() < deadline) {
        struct upm_kafka_batch *more = NULL;
        assert_true(upm_kafka_consumer_poll_batch(a, 100, 100, &more, NULL) >= 0);
        upm_kafka_batch_destroy(more);
        lag = sample(reg, "upmon_kafka_consumer_lag", "topic=\"resume\"", "partition=\"0\"");
        rx = sample(reg, "upmon_kafka_rx_messages_total", client, NULL);
        if (lag == 6 && rx >= 4)
            break;
    }
    if (!(lag == 6 && rx >= 4))
        fail_msg("consumer statistics not exported: lag=%g rx=%g", lag, rx);

    assert_int_equal(upm_kafka_consumer_close(a), 0);
    /* Committing after close is refused, not crashed. */
    assert_int_equal(upm_kafka_consumer_commit(a, got.batches[0], &retriable), -1);
    assert_int_equal(retriable, 0);
    collected_free(&got);
    upm_kafka_consumer_destroy(a);
    upm_prom_registry_destroy(reg);

    /* Member B resumes right after the committed offset. */
    assert_int_equal(first_offset_for_group(&cfg), 4);

    /* Without a commit nothing advances (auto-commit is off): a group whose
     * member read without committing restarts from the beginning. */
    cfg.group_id = "g-nocommit";
    assert_int_equal(first_offset_for_group(&cfg), 0);
    assert_int_equal(first_offset_for_group(&cfg), 0);
}

/* Commit metadata survives to the next member; rewind re-delivers what was
 * polled but not committed; the rebalance counter moves on assignment. */
static void test_commit_offset_metadata_and_rewind(void **state)
{
    (void)state;
    const char *topic = "meta";
    assert_int_equal(rd_kafka_mock_topic_create(mock, topic, 1, 3), 0);
    struct upm_kafka_config cfg = base_config(topic, "g-meta");
    char errstr[512] = "";
    struct upm_kafka_producer *p = upm_kafka_producer_create(&cfg, NULL, errstr, sizeof(errstr));
    assert_non_null(p);
    produce_seq(p, topic, 0, 10);
    assert_int_equal(upm_kafka_producer_flush(p, 10000), 0);
    upm_kafka_producer_destroy(p);

    struct upm_kafka_consumer *a =
        upm_kafka_consumer_create(&cfg, NULL, NULL, 0, errstr, sizeof(errstr));
    assert_non_null(a);
    uint64_t before = upm_kafka_consumer_rebalances(a);
    struct collected got = {0};
    collect(a, 6, 6, &got);
    assert_int_equal(got.count, 6);
    assert_true(upm_kafka_consumer_rebalances(a) > before); /* the assignment */

    int retriable = -1;
    int64_t off = -5;
    char meta[64] = "junk";
    /* Nothing committed yet: -1 and no metadata. */
    assert_int_equal(
        upm_kafka_consumer_committed(a, topic, 0, 5000, &off, meta, sizeof(meta), &retriable), 0);
    assert_int_equal(off, -1);
    assert_string_equal(meta, "");

    assert_int_equal(upm_kafka_consumer_commit_offset(a, topic, 0, 2, "cut end=6", &retriable), 0);
    assert_int_equal(
        upm_kafka_consumer_committed(a, topic, 0, 5000, &off, meta, sizeof(meta), &retriable), 0);
    assert_int_equal(off, 2);
    assert_string_equal(meta, "cut end=6");
    /* Truncated to the caller's buffer. */
    char small[4];
    assert_int_equal(
        upm_kafka_consumer_committed(a, topic, 0, 5000, &off, small, sizeof(small), &retriable), 0);
    assert_string_equal(small, "cut");
    /* A partition that is not ours is refused without a request. */
    assert_int_equal(upm_kafka_consumer_commit_offset(a, topic, 7, 1, NULL, &retriable), -1);
    assert_int_equal(retriable, 0);

    /* Rewind: the 4 messages after the committed offset 2 that were already
     * polled (2..5) come again, from offset 2. */
    collected_free(&got);
    assert_int_equal(upm_kafka_consumer_rewind(a, 5000, &retriable), 0);
    collect(a, 1, 1, &got);
    assert_int_equal(got.count, 1);
    assert_int_equal(upm_kafka_batch_message(got.batches[0], 0)->offset, 2);
    collected_free(&got);
    assert_int_equal(upm_kafka_consumer_close(a), 0);
    assert_int_equal(upm_kafka_consumer_rewind(a, 5000, &retriable), -1);
    assert_int_equal(upm_kafka_consumer_commit_offset(a, topic, 0, 3, NULL, &retriable), -1);
    upm_kafka_consumer_destroy(a);

    /* The next member sees offset and metadata; committing without metadata
     * clears it. */
    struct upm_kafka_consumer *b =
        upm_kafka_consumer_create(&cfg, NULL, NULL, 0, errstr, sizeof(errstr));
    assert_non_null(b);
    collect(b, 1, 1, &got);
    assert_int_equal(upm_kafka_batch_message(got.batches[0], 0)->offset, 2);
    assert_int_equal(
        upm_kafka_consumer_committed(b, topic, 0, 5000, &off, meta, sizeof(meta), &retriable), 0);
    assert_string_equal(meta, "cut end=6");
    assert_int_equal(upm_kafka_consumer_commit_offset(b, topic, 0, 6, NULL, &retriable), 0);
    assert_int_equal(
        upm_kafka_consumer_committed(b, topic, 0, 5000, &off, meta, sizeof(meta), &retriable), 0);
    assert_int_equal(off, 6);
    assert_string_equal(meta, "");
    collected_free(&got);
    upm_kafka_consumer_destroy(b);
}

static void test_delivery_failure_counted(void **state)
{
    const char *topic = "failing";
    assert_int_equal(rd_kafka_mock_topic_create(mock, topic, 1, 3), 0);
    struct upm_prom_registry *reg = upm_prom_registry_create();
    struct upm_kafka_config cfg = base_config(topic, NULL);
    /* One message per request so every request meets an injected error. */
    char *props[] = {"batch.num.messages=1", "retries=0"};
    cfg.properties.items = props;
    cfg.properties.count = 2;
    cfg.enable_idempotence = false;
    char errstr[512] = "";
    struct upm_kafka_producer *p = upm_kafka_producer_create(&cfg, reg, errstr, sizeof(errstr));
    if (!p)
        fail_msg("producer: %s", errstr);
    struct reports r = {0};
    upm_kafka_producer_set_delivery_cb(p, record_delivery, &r);

    /* Produce one that succeeds first, so metadata and connections are up. */
    produce_seq(p, topic, 0, 1);
    assert_int_equal(upm_kafka_producer_flush(p, 10000), 0);
    assert_int_equal(r.ok, 1);

    rd_kafka_mock_push_request_errors(
        mock, 0 /* Produce */, 3, RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED, RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
    /* Once a delivery has failed with an authorization error, librdkafka
     * may refuse later messages of the topic at once (a loaded machine
     * lets the first response in before the next produce call): such a
     * message is refused to the caller, never lost, and is counted here. */
    int refused = 0;
    for (int i = 1; i < 4; i++) {
        char value[16];
        snprintf(value, sizeof(value), "v%d", i);
        int retriable = -1;
        if (upm_kafka_produce(p, topic, "k", 1, value, strlen(value), NULL, 0, (void *)(intptr_t)i,
                              &retriable) != 0) {
            assert_int_equal(retriable, 0);
            refused++;
        }
    }
    int left = upm_kafka_producer_flush(p, 10000);
    /* Before any assertion: injected errors left over would fail the next
     * test's requests. */
    rd_kafka_mock_clear_request_errors(mock, 0);
    assert_int_equal(left, 0);

    assert_int_equal(r.failed + refused, 3);
    assert_true(r.failed >= 1);
    assert_int_equal(r.last_err, RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
    assert_int_equal(r.offsets_bad, 0);
    assert_int_equal(r.opaque_mismatch, 0);
    assert_true(sample(reg, "upmon_kafka_delivery_failed_total", "topic=\"failing\"", NULL) ==
                r.failed);
    assert_true(sample(reg, "upmon_kafka_delivered_total", "topic=\"failing\"", NULL) == 1);
    upm_kafka_producer_destroy(p);
    upm_prom_registry_destroy(reg);
}

static void test_produce_without_topic_fails(void **state)
{
    struct upm_kafka_config cfg = base_config(NULL, NULL);
    char errstr[512] = "";
    struct upm_kafka_producer *p = upm_kafka_producer_create(&cfg, NULL, errstr, sizeof(errstr));
    assert_non_null(p);
    int retriable = -1;
    assert_int_equal(upm_kafka_produce(p, NULL, "k", 1, "v", 1, NULL, 0, NULL, &retriable), -1);
    assert_int_equal(retriable, 0);
    /* An oversize message is refused locally and is not worth retrying. */
    size_t big = 2 * 1024 * 1024;
    char *value = calloc(1, big);
    assert_int_equal(upm_kafka_produce(p, "t", NULL, 0, value, big, NULL, 0, NULL, &retriable), -1);
    assert_int_equal(retriable, 0);
    free(value);
    assert_int_equal(upm_kafka_producer_fatal(p, errstr, sizeof(errstr)), 0);
    upm_kafka_producer_destroy(p);
}

static void test_queue_full_is_retriable(void **state)
{
    /* No broker at all, a one-message queue: the second produce waits the
     * bounded time for space and then reports a retriable failure. */
    struct upm_kafka_config cfg = base_config("t", NULL);
    cfg.brokers = "127.0.0.1:1";
    char *props[] = {"queue.buffering.max.messages=1", "message.timeout.ms=60000"};
    cfg.properties.items = props;
    cfg.properties.count = 2;
    char errstr[512] = "";
    struct upm_kafka_producer *p = upm_kafka_producer_create(&cfg, NULL, errstr, sizeof(errstr));
    if (!p)
        fail_msg("producer: %s", errstr);
    struct reports r = {0};
    upm_kafka_producer_set_delivery_cb(p, record_delivery, &r);
    int retriable = -1;
    assert_int_equal(upm_kafka_produce(p, NULL, NULL, 0, "v0", 2, NULL, 0, (void *)0, &retriable),
                     0);
    int64_t t0 = upm_clock_mono_ns();
    assert_int_equal(upm_kafka_produce(p, NULL, NULL, 0, "v1", 2, NULL, 0, (void *)1, &retriable),
                     -1);
    int64_t waited_ms = (upm_clock_mono_ns() - t0) / UPM_NS_PER_MS;
    assert_int_equal(retriable, 1);
    assert_true(waited_ms >= UPM_KAFKA_QUEUE_FULL_WAIT_MS - 50);
    assert_int_equal(upm_kafka_producer_flush(p, 0), 1);
    /* Destroy purges the stuck message and reports it as failed. */
    upm_kafka_producer_destroy(p);
    assert_int_equal(r.failed, 1);
    assert_int_equal(r.ok, 0);
}

/* ---- logs, errors and statistics ----------------------------------------- */

static void test_logs_and_errors_routed(void **state)
{
    struct capture cap;
    FILE *sink = capture_open(&cap);
    struct upm_prom_registry *reg = upm_prom_registry_create();
    /* Nothing listens on port 1: librdkafka logs the refused connection and
     * reports transport errors. */
    struct upm_kafka_config cfg = base_config("t", NULL);
    cfg.brokers = "127.0.0.1:1";
    char errstr[512] = "";
    struct upm_kafka_producer *p = upm_kafka_producer_create(&cfg, reg, errstr, sizeof(errstr));
    if (!p)
        fail_msg("producer: %s", errstr);
    char client[160];
    snprintf(client, sizeof(client), "client=\"%s\"", upm_kafka_producer_name(p));

    int64_t deadline = upm_clock_mono_ns() + 15 * UPM_NS_PER_S;
    double errors = NAN;
    while (upm_clock_mono_ns() < deadline) {
        upm_kafka_producer_poll(p, 100);
        errors = sample(reg, "upmon_kafka_errors_total", client, NULL);
        if (errors > 0 && captured_line(&cap, "mod=kafka", "fac="))
            break;
    }
    if (!(errors > 0))
        fail_msg("no error counted for %s", client);
    const char *line = captured_line(&cap, "mod=kafka", "fac=");
    if (!line)
        fail_msg("no librdkafka log line arrived:\n%s", cap.text.data ? cap.text.data : "");
    /* The refused connection is an error-level line naming the client. */
    assert_non_null(captured_line(&cap, "level=error mod=kafka", "127.0.0.1:1"));
    assert_non_null(captured_line(&cap, "fac=", upm_kafka_producer_name(p)));
    /* error_cb's report is logged as transient, with the code. */
    assert_non_null(captured_line(&cap, "transient", "err=_"));
    /* log.queue: every line was written on this (the polling) thread. */
    assert_int_equal(atomic_load(&cap.foreign_writes), 0);

    upm_kafka_producer_destroy(p);
    upm_prom_registry_destroy(reg);
    capture_close(&cap, sink);
}

static void test_stats_reach_prom(void **state)
{
    const char *topic = "roundtrip";
    struct upm_prom_registry *reg = upm_prom_registry_create();
    struct upm_kafka_config cfg = base_config(topic, NULL);
    cfg.statistics_interval_ms = 100;
    char errstr[512] = "";
    struct upm_kafka_producer *p = upm_kafka_producer_create(&cfg, reg, errstr, sizeof(errstr));
    assert_non_null(p);
    produce_seq(p, topic, 0, 5);
    assert_int_equal(upm_kafka_producer_flush(p, 10000), 0);
    char client[160];
    snprintf(client, sizeof(client), "client=\"%s\"", upm_kafka_producer_name(p));

    int64_t deadline = upm_clock_mono_ns() + 15 * UPM_NS_PER_S;
    double queued = NAN, tx = NAN;
    while (upm_clock_mono_ns() < deadline) {
        upm_kafka_producer_poll(p, 100);
        queued = sample(reg, "upmon_kafka_msg_queue", client, NULL);
        tx = sample(reg, "upmon_kafka_tx_messages_total", client, NULL);
        if (queued == 0 && tx >= 5)
            break;
    }
    if (!(queued == 0 && tx >= 5))
        fail_msg("statistics not exported: msg_queue=%g tx=%g", queued, tx);
    upm_kafka_producer_destroy(p);
    upm_prom_registry_destroy(reg);
}

static const char stats_doc[] =
    "{\"name\":\"c1#consumer-1\",\"type\":\"consumer\",\"msg_cnt\":7,\"txmsgs\":100,"
    "\"rxmsgs\":40,\"brokers\":{"
    "\"h:1/1\":{\"name\":\"h:1/1\",\"source\":\"learned\",\"rtt\":{\"avg\":2500,\"cnt\":3}},"
    "\"GroupCoordinator\":{\"name\":\"GroupCoordinator\",\"source\":\"logical\","
    "\"rtt\":{\"avg\":600000,\"cnt\":2}},"
    "\"h:2/2\":{\"name\":\"h:2/2\",\"source\":\"configured\",\"rtt\":{\"avg\":0,\"cnt\":0}}},"
    "\"topics\":{\"t\":{\"topic\":\"t\",\"partitions\":{"
    "\"0\":{\"partition\":0,\"consumer_lag\":12},"
    "\"1\":{\"partition\":1,\"consumer_lag\":-1},"
    "\"-1\":{\"partition\":-1,\"consumer_lag\":5}}}}}";

static void test_stats_apply_maps_fields(void **state)
{
    struct upm_prom_registry *reg = upm_prom_registry_create();
    assert_int_equal(upm_kafka_stats_apply(reg, stats_doc, strlen(stats_doc)), 0);
    const char *client = "client=\"c1#consumer-1\"";
    assert_true(sample(reg, "upmon_kafka_msg_queue", client, NULL) == 7);
    assert_true(sample(reg, "upmon_kafka_tx_messages_total", client, NULL) == 100);
    assert_true(sample(reg, "upmon_kafka_rx_messages_total", client, NULL) == 40);
    assert_true(fabs(sample(reg, "upmon_kafka_broker_rtt_seconds", "broker=\"h:1/1\"", NULL) -
                     0.0025) < 1e-12);
    assert_true(sample(reg, "upmon_kafka_consumer_lag", "topic=\"t\"", "partition=\"0\"") == 12);
    /* Skipped: logical brokers, empty rtt windows, unknown lag, the
     * unassigned-partition queue. */
    char *text = render(reg);
    assert_null(strstr(text, "GroupCoordinator"));
    assert_null(strstr(text, "h:2/2"));
    assert_null(strstr(text, "partition=\"1\""));
    assert_null(strstr(text, "partition=\"-1\""));
    free(text);

    /* Counters follow librdkafka's cumulative totals up, never down. */
    static const char up[] = "{\"name\":\"c1#consumer-1\",\"txmsgs\":150,\"msg_cnt\":0}";
    static const char down[] = "{\"name\":\"c1#consumer-1\",\"txmsgs\":120}";
    assert_int_equal(upm_kafka_stats_apply(reg, up, strlen(up)), 0);
    assert_true(sample(reg, "upmon_kafka_tx_messages_total", client, NULL) == 150);
    assert_true(sample(reg, "upmon_kafka_msg_queue", client, NULL) == 0);
    assert_int_equal(upm_kafka_stats_apply(reg, down, strlen(down)), 0);
    assert_true(sample(reg, "upmon_kafka_tx_messages_total", client, NULL) == 150);

    /* Fields of the wrong type are skipped; the rest still applies. */
    static const char odd[] = "{\"name\":\"c2\",\"msg_cnt\":\"7\",\"rxmsgs\":3,\"brokers\":[1],"
                              "\"topics\":{\"t\":5,\"u\":{\"topic\":\"u\",\"partitions\":{"
                              "\"0\":{\"partition\":0.5,\"consumer_lag\":1},"
                              "\"1\":{\"partition\":1,\"consumer_lag\":\"x\"}}}}}";
    assert_int_equal(upm_kafka_stats_apply(reg, odd, strlen(odd)), 0);
    assert_true(sample(reg, "upmon_kafka_rx_messages_total", "client=\"c2\"", NULL) == 3);
    assert_true(isnan(sample(reg, "upmon_kafka_msg_queue", "client=\"c2\"", NULL)));
    assert_true(isnan(sample(reg, "upmon_kafka_consumer_lag", "topic=\"u\"", NULL)));
    upm_prom_registry_destroy(reg);
}

static void test_stats_apply_malformed_changes_nothing(void **state)
{
    struct upm_prom_registry *reg = upm_prom_registry_create();
    /* Empty registry first: a rejected document must not even register the
     * families. */
    char *before = render(reg);
    assert_int_equal(upm_kafka_stats_apply(reg, "{", 1), -1);
    char *after = render(reg);
    assert_string_equal(before, after);
    free(before);
    free(after);

    assert_int_equal(upm_kafka_stats_apply(reg, stats_doc, strlen(stats_doc)), 0);
    before = render(reg);
    static const char *const bad[] = {
        "",
        "not json",
        "null",
        "[]",
        "42",
        "\"name\"",
        "{\"name\":5}",
        "{}",
        "{\"name\":null,\"txmsgs\":1}",
        "{\"name\":\"x\"",
        "{\"name\":\"x\",}",
        "\xff\xfe{",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(upm_kafka_stats_apply(reg, bad[i], strlen(bad[i])), -1);
    assert_int_equal(upm_kafka_stats_apply(reg, NULL, 10), -1);
    /* Every truncation of a valid document. */
    for (size_t len = 0; len < strlen(stats_doc); len++)
        if (upm_kafka_stats_apply(reg, stats_doc, len) != -1)
            fail_msg("prefix of %zu bytes accepted", len);
    /* The length bounds the parse: bytes beyond it are not read. */
    char padded[sizeof(stats_doc) + 8];
    memcpy(padded, stats_doc, sizeof(stats_doc) - 1);
    memcpy(padded + sizeof(stats_doc) - 1, "garbage!", 8);
    assert_int_equal(upm_kafka_stats_apply(reg, padded, sizeof(stats_doc) - 1), 0);
    after = render(reg);
    assert_string_equal(before, after);
    free(before);
    free(after);

    /* Without a registry it only validates. */
    assert_int_equal(upm_kafka_stats_apply(NULL, stats_doc, strlen(stats_doc)), 0);
    assert_int_equal(upm_kafka_stats_apply(NULL, "{", 1), -1);
    upm_prom_registry_destroy(reg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_destroy_null_is_safe),
        cmocka_unit_test(test_config_table),
        cmocka_unit_test(test_config_loads_defaults_and_yaml),
        cmocka_unit_test(test_invalid_settings_fail_naming_the_key),
        cmocka_unit_test(test_stats_apply_maps_fields),
        cmocka_unit_test(test_stats_apply_malformed_changes_nothing),
        cmocka_unit_test(test_produce_consume_roundtrip),
        cmocka_unit_test(test_commit_then_new_member_resumes),
        cmocka_unit_test(test_commit_offset_metadata_and_rewind),
        cmocka_unit_test(test_delivery_failure_counted),
        cmocka_unit_test(test_produce_without_topic_fails),
        cmocka_unit_test(test_queue_full_is_retriable),
        cmocka_unit_test(test_logs_and_errors_routed),
        cmocka_unit_test(test_stats_reach_prom),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
