#include "upmon/kafka.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <limits.h>
#include <librdkafka/rdkafka.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "upmon/alloc.h"
#include "upmon/clock.h"
#include "upmon/log.h"
#include "upmon/prom.h"

#define MOD "kafka"

/* ---- configuration table ------------------------------------------------- */

static const char *const compression_choices[] = {"none", "lz4", "zstd", "snappy", "gzip", NULL};
static const char *const acks_choices[] = {"all", "1", "0", NULL};
static const char *const offset_reset_choices[] = {"earliest", "latest", NULL};
static const char *const security_choices[] = {"plaintext", "ssl", "sasl_plaintext", "sasl_ssl",
                                               NULL};

#define KOFF(field) offsetof(struct upm_kafka_config, field)
#define NORANGE     1, 0

const struct upm_config_key upm_kafka_config_keys[] = {
    {"brokers", UPM_CFG_STRING, KOFF(brokers), "127.0.0.1:9092", NORANGE, NULL,
     "Bootstrap brokers, host:port[,host:port...].", 0},
    {"client_id", UPM_CFG_STRING, KOFF(client_id), "upmon", NORANGE, NULL,
     "Client id sent to the brokers (the prefix of the client metric label).", 0},
    {"group_id", UPM_CFG_STRING, KOFF(group_id), "upmon-ingest", NORANGE, NULL,
     "Consumer group of the ingest service.", 0},
    {"topic", UPM_CFG_STRING, KOFF(topic), "upmon.events.v1", NORANGE, NULL,
     "Topic the events are produced to and consumed from.", 0},
    {"dlq_topic", UPM_CFG_STRING, KOFF(dlq_topic), "upmon.events.dlq", NORANGE, NULL,
     "Dead-letter topic for events that fail validation (original bytes plus a reason header).", 0},
    {"statistics_interval", UPM_CFG_DURATION_MS, KOFF(statistics_interval_ms), "15s", 0, 86400000,
     NULL, "How often librdkafka statistics are exported to /metrics; 0 disables.", 0},
    {"compression", UPM_CFG_ENUM, KOFF(compression), "lz4", NORANGE, compression_choices,
     "Producer compression codec.", 0},
    {"linger", UPM_CFG_DURATION_MS, KOFF(linger_ms), "5ms", 0, 900000, NULL,
     "How long the producer waits to fill a batch.", 0},
    {"batch_size", UPM_CFG_INT, KOFF(batch_size), "1000000", 1, 2147483647, NULL,
     "Maximum producer batch size in bytes.", 0},
    {"acks", UPM_CFG_ENUM, KOFF(acks), "all", NORANGE, acks_choices,
     "Broker acknowledgements a produce waits for (all is required with idempotence).", 0},
    {"enable_idempotence", UPM_CFG_BOOL, KOFF(enable_idempotence), "true", NORANGE, NULL,
     "Idempotent producer: no duplicates or reordering from the producer's own retries.", 0},
    {"session_timeout", UPM_CFG_DURATION_MS, KOFF(session_timeout_ms), "45s", 1000, 3600000, NULL,
     "Consumer group session timeout.", 0},
    {"max_poll_interval", UPM_CFG_DURATION_MS, KOFF(max_poll_interval_ms), "5m", 1000, 86400000,
     NULL, "Longest allowed gap between consumer polls before the member is evicted.", 0},
    {"auto_offset_reset", UPM_CFG_ENUM, KOFF(auto_offset_reset), "earliest", NORANGE,
     offset_reset_choices, "Where a group without a committed offset starts.", 0},
    {"security_protocol", UPM_CFG_ENUM, KOFF(security_protocol), "plaintext", NORANGE,
     security_choices, "Broker security protocol.", 0},
    {"sasl_mechanism", UPM_CFG_STRING, KOFF(sasl_mechanism), "", NORANGE, NULL,
     "SASL mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512); empty = librdkafka's default.", 0},
    {"sasl_username", UPM_CFG_STRING, KOFF(sasl_username), "", NORANGE, NULL, "SASL user name.", 0},
    {"sasl_password", UPM_CFG_STRING, KOFF(sasl_password), "", NORANGE, NULL, "SASL password.",
     UPM_CFG_SECRET},
    {"ssl_ca_location", UPM_CFG_STRING, KOFF(ssl_ca_location), "", NORANGE, NULL,
     "CA certificate file for verifying the brokers; empty = system default.", 0},
    {"properties", UPM_CFG_STRING_LIST, KOFF(properties), "", NORANGE, NULL,
     "Raw librdkafka name=value properties, applied last.", 0},
};
const size_t upm_kafka_config_nkeys =
    sizeof(upm_kafka_config_keys) / sizeof(upm_kafka_config_keys[0]);

enum role { ROLE_PRODUCER, ROLE_CONSUMER };

static int set_prop(rd_kafka_conf_t *conf, const char *key, const char *prop, const char *value,
                    char *errstr, size_t errstr_size)
{
    char rderr[512];
    if (rd_kafka_conf_set(conf, prop, value, rderr, sizeof(rderr)) != RD_KAFKA_CONF_OK) {
        snprintf(errstr, errstr_size, "kafka.%s: %s", key, rderr);
        return -1;
    }
    return 0;
}

/* Optional string: NULL or "" keeps librdkafka's default. */
static int set_str(rd_kafka_conf_t *conf, const char *key, const char *prop, const char *value,
                   char *errstr, size_t errstr_size)
{
    if (!value || !*value)
        return 0;
    return set_prop(conf, key, prop, value, errstr, errstr_size);
}

/* Optional number: 0 keeps librdkafka's default. */
static int set_int(rd_kafka_conf_t *conf, const char *key, const char *prop, int64_t value,
                   char *errstr, size_t errstr_size)
{
    char text[32];
    if (value == 0)
        return 0;
    snprintf(text, sizeof(text), "%" PRId64, value);
    return set_prop(conf, key, prop, text, errstr, errstr_size);
}

/* Settings the module's guarantees rest on; `properties` may not change them. */
static int reserved_prop(enum role role, const char *name)
{
    if (strcmp(name, "log.queue") == 0)
        return 1;
    return role == ROLE_CONSUMER && (strcmp(name, "enable.auto.commit") == 0 ||
                                     strcmp(name, "enable.auto.offset.store") == 0);
}

static int apply_properties(rd_kafka_conf_t *conf, enum role role, const struct upm_strlist *props,
                            char *errstr, size_t errstr_size)
{
    for (size_t i = 0; props->items && i < props->count; i++) {
        const char *item = props->items[i];
        const char *eq = item ? strchr(item, '=') : NULL;
        if (!eq || eq == item) {
            snprintf(errstr, errstr_size, "kafka.properties: \"%s\" is not name=value",
                     item ? item : "");
            return -1;
        }
        char *name = upm_strndup(item, (size_t)(eq - item));
        char rderr[512];
        int rc = 0;
        if (reserved_prop(role, name)) {
            snprintf(errstr, errstr_size,
                     "kafka.properties: %s is managed by upmon and cannot be overridden", name);
            rc = -1;
        } else if (rd_kafka_conf_set(conf, name, eq + 1, rderr, sizeof(rderr)) !=
                   RD_KAFKA_CONF_OK) {
            /* Name the property as the user wrote it: librdkafka names the
             * canonical one, which differs for aliases (linger.ms). */
            snprintf(errstr, errstr_size, "kafka.properties: %s: %s", name, rderr);
            rc = -1;
        }
        free(name);
        if (rc != 0)
            return -1;
    }
    return 0;
}

static int build_conf(rd_kafka_conf_t *conf, const struct upm_kafka_config *cfg, enum role role,
                      char *errstr, size_t errstr_size)
{
    char *e = errstr;
    size_t n = errstr_size;

    if (!cfg->brokers || !*cfg->brokers) {
        snprintf(e, n, "kafka.brokers: must be set");
        return -1;
    }
    if (set_prop(conf, "brokers", "bootstrap.servers", cfg->brokers, e, n) ||
        set_str(conf, "client_id", "client.id", cfg->client_id, e, n) ||
        set_str(conf, "security_protocol", "security.protocol", cfg->security_protocol, e, n) ||
        set_str(conf, "sasl_mechanism", "sasl.mechanisms", cfg->sasl_mechanism, e, n) ||
        set_str(conf, "sasl_username", "sasl.username", cfg->sasl_username, e, n) ||
        set_str(conf, "sasl_password", "sasl.password", cfg->sasl_password, e, n) ||
        set_str(conf, "ssl_ca_location", "ssl.ca.location", cfg->ssl_ca_location, e, n) ||
        set_int(conf, "statistics_interval", "statistics.interval.ms", cfg->statistics_interval_ms,
                e, n) ||
        set_prop(conf, "log.queue", "log.queue", "true", e, n))
        return -1;

    if (role == ROLE_PRODUCER) {
        if (set_str(conf, "compression", "compression.type", cfg->compression, e, n) ||
            set_prop(conf, "linger", "linger.ms", "0", e, n) ||
            set_int(conf, "linger", "linger.ms", cfg->linger_ms, e, n) ||
            set_int(conf, "batch_size", "batch.size", cfg->batch_size, e, n) ||
            set_str(conf, "acks", "acks", cfg->acks, e, n) ||
            set_prop(conf, "enable_idempotence", "enable.idempotence",
                     cfg->enable_idempotence ? "true" : "false", e, n))
            return -1;
    } else {
        if (!cfg->group_id || !*cfg->group_id) {
            snprintf(e, n, "kafka.group_id: must be set for a consumer");
            return -1;
        }
        if (set_prop(conf, "group_id", "group.id", cfg->group_id, e, n) ||
            set_int(conf, "session_timeout", "session.timeout.ms", cfg->session_timeout_ms, e, n) ||
            set_int(conf, "max_poll_interval", "max.poll.interval.ms", cfg->max_poll_interval_ms, e,
                    n) ||
            set_str(conf, "auto_offset_reset", "auto.offset.reset", cfg->auto_offset_reset, e, n) ||
            /* At-least-once: an offset is committed only by
             * upm_kafka_consumer_commit, after the rows are stored. */
            set_prop(conf, "enable.auto.commit", "enable.auto.commit", "false", e, n) ||
            set_prop(conf, "enable.auto.offset.store", "enable.auto.offset.store", "false", e, n) ||
            set_prop(conf, "enable.partition.eof", "enable.partition.eof", "true", e, n))
            return -1;
    }
    return apply_properties(conf, role, &cfg->properties, e, n);
}

/* ---- shared client plumbing ---------------------------------------------- */

/* The first member of both handles, so the conf opaque points at either. */
struct client {
    rd_kafka_t *rk;
    struct upm_prom_registry *reg;
    struct upm_prom_metric *m_errors;
    atomic_int fatal;
    char name[128];
};

/* Log and error text goes into our message part; " | " there would start
 * the structured fields, so '|' is replaced. */
static void copy_text(char *dst, size_t size, const char *src)
{
    size_t i = 0;
    for (; src && src[i] && i + 1 < size; i++)
        dst[i] = src[i] == '|' ? '/' : src[i];
    dst[i] = '\0';
}

static enum upm_log_level map_syslog_level(int level)
{
    if (level <= 3) /* emerg, alert, crit, err */
        return UPM_LOG_ERROR;
    if (level == 4)
        return UPM_LOG_WARN;
    if (level <= 6) /* notice, info */
        return UPM_LOG_INFO;
    return UPM_LOG_DEBUG;
}

static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    enum upm_log_level l = map_syslog_level(level);
    if ((int)l < upm_log_threshold)
        return;
    char text[1024];
    copy_text(text, sizeof(text), buf);
    upm_log_write(l, MOD, "%s | fac=%s client=%s", text, fac ? fac : "-",
                  rk ? rd_kafka_name(rk) : "-");
}

static void count_error(struct client *cl, rd_kafka_resp_err_t err)
{
    if (!cl->m_errors)
        return;
    const char *values[] = {cl->name, rd_kafka_err2name(err)};
    upm_prom_inc(upm_prom_series_get(cl->m_errors, values), 1);
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    struct client *cl = opaque;
    char text[512];

    count_error(cl, (rd_kafka_resp_err_t)err);
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char fatal[512];
        rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, fatal, sizeof(fatal));
        atomic_store(&cl->fatal, 1);
        copy_text(text, sizeof(text), fatal);
        upm_log_error(MOD,
                      "fatal client error, the handle must be recreated: %s | client=%s err=%s",
                      text, cl->name, rd_kafka_err2name(orig));
        return;
    }
    /* Anything else (broker down, transport, timeouts) librdkafka recovers
     * from by itself; say so once per event and carry on. */
    copy_text(text, sizeof(text), reason);
    upm_log_warn(MOD, "client error (transient, librdkafka retries): %s | client=%s err=%s", text,
                 cl->name, rd_kafka_err2name((rd_kafka_resp_err_t)err));
}

static int on_stats(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
    struct client *cl = opaque;
    if (cl->reg && upm_kafka_stats_apply(cl->reg, json, len) != 0)
        upm_log_warn(MOD, "unparsable statistics from librdkafka | client=%s bytes=%zu", cl->name,
                     len);
    return 0; /* librdkafka frees json */
}

static void client_init(struct client *cl, struct upm_prom_registry *reg, rd_kafka_conf_t *conf)
{
    cl->reg = reg;
    atomic_init(&cl->fatal, 0);
    if (reg)
        cl->m_errors = upm_prom_counter(reg, "upmon_kafka_errors_total",
                                        "Kafka client and consume errors by code.", 2,
                                        (const char *[]){"client", "err"});
    rd_kafka_conf_set_opaque(conf, cl);
    rd_kafka_conf_set_log_cb(conf, on_log);
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_stats_cb(conf, on_stats);
}

/* After rd_kafka_new: route the queued logs to the main queue, which the
 * polling thread serves. */
static int client_started(struct client *cl, char *errstr, size_t errstr_size)
{
    snprintf(cl->name, sizeof(cl->name), "%s", rd_kafka_name(cl->rk));
    rd_kafka_resp_err_t err = rd_kafka_set_log_queue(cl->rk, NULL);
    if (err) {
        snprintf(errstr, errstr_size, "kafka: routing logs: %s", rd_kafka_err2str(err));
        return -1;
    }
    return 0;
}

static int client_fatal(struct client *cl, char *errstr, size_t errstr_size)
{
    if (!atomic_load(&cl->fatal))
        return 0;
    if (errstr && errstr_size) {
        char reason[512];
        rd_kafka_resp_err_t err = rd_kafka_fatal_error(cl->rk, reason, sizeof(reason));
        snprintf(errstr, errstr_size, "%s: %s", rd_kafka_err2name(err), reason);
    }
    return 1;
}

static int remaining_ms(int64_t deadline_ns)
{
    int64_t left = deadline_ns - upm_clock_mono_ns();
    if (left <= 0)
        return 0;
    return (int)((left + UPM_NS_PER_MS - 1) / UPM_NS_PER_MS);
}

/* ---- statistics ---------------------------------------------------------- */

#define STATS_MAX_BROKERS    64
#define STATS_MAX_PARTITIONS 4096

static int json_number(const cJSON *obj, const char *key, double *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return 0;
    *out = v->valuedouble;
    return 1;
}

static const char *json_string(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* librdkafka reports cumulative totals; a counter follows them upwards. */
static void counter_follow(struct upm_prom_metric *m, const char *const *values, double total)
{
    if (!m || total < 0)
        return;
    struct upm_prom_series *s = upm_prom_series_get(m, values);
    double cur = upm_prom_value(s);
    if (total > cur)
        upm_prom_inc(s, total - cur);
}

static void stats_brokers(struct upm_prom_registry *reg, const cJSON *brokers)
{
    if (!cJSON_IsObject(brokers))
        return;
    struct upm_prom_metric *rtt =
        upm_prom_gauge(reg, "upmon_kafka_broker_rtt_seconds",
                       "Average broker round-trip time over librdkafka's statistics window.", 1,
                       (const char *[]){"broker"});
    if (!rtt)
        return;
    int n = 0;
    const cJSON *b;
    cJSON_ArrayForEach(b, brokers)
    {
        if (n++ >= STATS_MAX_BROKERS)
            break;
        const char *name = json_string(b, "name");
        const char *source = json_string(b, "source");
        const cJSON *window = cJSON_GetObjectItemCaseSensitive(b, "rtt");
        double avg, cnt;
        /* Internal and logical brokers (GroupCoordinator) are aliases of a
         * real one, and the coordinator's window holds long-polling joins. */
        if (!name ||
            (source && (strcmp(source, "internal") == 0 || strcmp(source, "logical") == 0)) ||
            !json_number(window, "avg", &avg))
            continue;
        /* An empty window reports avg 0: no sample, not a 0 s round-trip. */
        if ((json_number(window, "cnt", &cnt) && cnt <= 0) || avg < 0)
            continue;
        upm_prom_set(upm_prom_series_get(rtt, (const char *[]){name}), avg / 1e6);
    }
}

/* Registered by the statistics parser, pruned by the rebalance callback. */
static struct upm_prom_metric *lag_family(struct upm_prom_registry *reg)
{
    return upm_prom_gauge(reg, "upmon_kafka_consumer_lag",
                          "Messages between the committed offset and the partition's high "
                          "watermark.",
                          2, (const char *[]){"topic", "partition"});
}

static void stats_topics(struct upm_prom_registry *reg, const cJSON *topics)
{
    if (!cJSON_IsObject(topics))
        return;
    struct upm_prom_metric *lag = NULL;
    int n = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, topics)
    {
        const char *topic = json_string(t, "topic");
        const cJSON *parts = cJSON_GetObjectItemCaseSensitive(t, "partitions");
        if (!topic || !cJSON_IsObject(parts))
            continue;
        const cJSON *p;
        cJSON_ArrayForEach(p, parts)
        {
            if (n++ >= STATS_MAX_PARTITIONS)
                return;
            double part, value;
            /* Partition -1 is librdkafka's unassigned-messages queue; lag -1
             * means unknown (not consuming that partition). */
            if (!json_number(p, "partition", &part) || part < 0 || part > INT32_MAX ||
                part != floor(part) || !json_number(p, "consumer_lag", &value) || value < 0)
                continue;
            if (!lag)
                lag = lag_family(reg);
            if (!lag)
                return;
            char label[16];
            snprintf(label, sizeof(label), "%d", (int)part);
            upm_prom_set(upm_prom_series_get(lag, (const char *[]){topic, label}), value);
        }
    }
}

int upm_kafka_stats_apply(struct upm_prom_registry *reg, const char *json, size_t len)
{
    int ret = -1;
    if (!json)
        return -1;
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root)
        return -1;
    const char *client = json_string(root, "name");
    if (!cJSON_IsObject(root) || !client)
        goto out;
    ret = 0;
    if (!reg)
        goto out;

    const char *values[] = {client};
    double v;
    if (json_number(root, "msg_cnt", &v)) {
        struct upm_prom_metric *q = upm_prom_gauge(
            reg, "upmon_kafka_msg_queue", "Messages waiting in the client's producer queues.", 1,
            (const char *[]){"client"});
        if (q)
            upm_prom_set(upm_prom_series_get(q, values), v);
    }
    if (json_number(root, "txmsgs", &v))
        counter_follow(upm_prom_counter(reg, "upmon_kafka_tx_messages_total",
                                        "Messages sent to the brokers.", 1,
                                        (const char *[]){"client"}),
                       values, v);
    if (json_number(root, "rxmsgs", &v))
        counter_follow(upm_prom_counter(reg, "upmon_kafka_rx_messages_total",
                                        "Messages fetched from the brokers.", 1,
                                        (const char *[]){"client"}),
                       values, v);
    stats_brokers(reg, cJSON_GetObjectItemCaseSensitive(root, "brokers"));
    stats_topics(reg, cJSON_GetObjectItemCaseSensitive(root, "topics"));
out:
    cJSON_Delete(root);
    return ret;
}

/* ---- producer ------------------------------------------------------------ */

#define TOPIC_CACHE 16

/* Series looked up once per topic, so a delivery report costs no lock. */
struct topic_series {
    char *topic;
    struct upm_prom_series *delivered;
    struct upm_prom_series *failed;
};

struct upm_kafka_producer {
    struct client cl; /* first: the conf opaque */
    char *default_topic;
    upm_kafka_delivery_fn *cb;
    void *cb_opaque;
    struct upm_prom_metric *m_delivered;
    struct upm_prom_metric *m_failed;
    struct topic_series topics[TOPIC_CACHE];
    size_t ntopics;
    int64_t fail_logged_ns; /* last "delivery failed" line */
    unsigned long fail_unlogged;
};

static void count_delivery(struct upm_kafka_producer *p, const char *topic, int ok)
{
    if (!p->m_delivered || !p->m_failed)
        return;
    const char *values[] = {topic};
    for (size_t i = 0; i < p->ntopics; i++) {
        if (strcmp(p->topics[i].topic, topic) == 0) {
            upm_prom_inc(ok ? p->topics[i].delivered : p->topics[i].failed, 1);
            return;
        }
    }
    struct upm_prom_series *d = upm_prom_series_get(p->m_delivered, values);
    struct upm_prom_series *f = upm_prom_series_get(p->m_failed, values);
    if (p->ntopics < TOPIC_CACHE)
        p->topics[p->ntopics++] = (struct topic_series){upm_strdup(topic), d, f};
    upm_prom_inc(ok ? d : f, 1);
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct upm_kafka_producer *p = opaque;
    const char *topic = m->rkt ? rd_kafka_topic_name(m->rkt) : "";

    count_delivery(p, topic, m->err == RD_KAFKA_RESP_ERR_NO_ERROR);
    if (m->err) {
        /* A broker outage fails messages by the thousand: one line a second. */
        int64_t now = upm_clock_mono_ns();
        p->fail_unlogged++;
        if (now - p->fail_logged_ns >= UPM_NS_PER_S) {
            upm_log_warn(MOD, "delivery failed: %s | client=%s topic=%s err=%s failures=%lu",
                         rd_kafka_err2str(m->err), p->cl.name, topic, rd_kafka_err2name(m->err),
                         p->fail_unlogged);
            p->fail_logged_ns = now;
            p->fail_unlogged = 0;
        }
    }
    if (!p->cb)
        return;
    struct upm_kafka_delivery d = {
        .topic = topic,
        .partition = m->partition,
        .offset = m->err ? -1 : m->offset,
        .err = (int)m->err,
        .errstr = rd_kafka_err2str(m->err),
        .possibly_persisted =
            m->err && rd_kafka_message_status(m) != RD_KAFKA_MSG_STATUS_NOT_PERSISTED,
        .key = m->key,
        .key_len = m->key_len,
        .value = m->payload,
        .len = m->len,
        .msg_opaque = m->_private,
    };
    p->cb(p->cb_opaque, &d);
}

struct upm_kafka_producer *upm_kafka_producer_create(const struct upm_kafka_config *cfg,
                                                     struct upm_prom_registry *reg, char *errstr,
                                                     size_t errstr_size)
{
    struct upm_kafka_producer *p = upm_calloc(1, sizeof(*p));
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char rderr[512];

    if (build_conf(conf, cfg, ROLE_PRODUCER, errstr, errstr_size) != 0)
        goto fail;
    client_init(&p->cl, reg, conf);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    if (reg) {
        const char *labels[] = {"topic"};
        p->m_delivered = upm_prom_counter(reg, "upmon_kafka_delivered_total",
                                          "Messages the brokers acknowledged.", 1, labels);
        p->m_failed = upm_prom_counter(reg, "upmon_kafka_delivery_failed_total",
                                       "Messages that could not be delivered.", 1, labels);
    }
    if (cfg->topic && *cfg->topic)
        p->default_topic = upm_strdup(cfg->topic);

    p->cl.rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, rderr, sizeof(rderr));
    if (!p->cl.rk) {
        snprintf(errstr, errstr_size, "kafka: creating producer: %s", rderr);
        goto fail;
    }
    conf = NULL; /* owned by the handle now */
    if (client_started(&p->cl, errstr, errstr_size) != 0)
        goto fail;
    upm_log_info(MOD, "producer created | client=%s brokers=%s", p->cl.name, cfg->brokers);
    return p;

fail:
    if (conf)
        rd_kafka_conf_destroy(conf);
    upm_kafka_producer_destroy(p);
    return NULL;
}

void upm_kafka_producer_set_delivery_cb(struct upm_kafka_producer *p, upm_kafka_delivery_fn *cb,
                                        void *opaque)
{
    p->cb = cb;
    p->cb_opaque = opaque;
}

int upm_kafka_produce(struct upm_kafka_producer *p, const char *topic, const void *key,
                      size_t key_len, const void *value, size_t len,
                      const struct upm_kafka_header *headers, size_t nheaders, void *msg_opaque,
                      int *retriable)
{
    int dummy;
    if (!retriable)
        retriable = &dummy;
    *retriable = 0;
    if (!topic)
        topic = p->default_topic;
    if (!topic || !*topic) {
        upm_log_error(MOD, "produce without a topic | client=%s", p->cl.name);
        return -1;
    }
    if (atomic_load(&p->cl.fatal))
        return -1;

    rd_kafka_headers_t *hdrs = NULL;
    if (nheaders > 0) {
        hdrs = rd_kafka_headers_new(nheaders);
        for (size_t i = 0; i < nheaders; i++)
            rd_kafka_header_add(hdrs, headers[i].name, -1, headers[i].value,
                                headers[i].value ? (ssize_t)headers[i].size : 0);
    }

    int64_t deadline = upm_clock_mono_ns() + UPM_KAFKA_QUEUE_FULL_WAIT_MS * UPM_NS_PER_MS;
    rd_kafka_resp_err_t err;
    for (;;) {
        err = rd_kafka_producev(
            p->cl.rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_KEY(key, key_len), RD_KAFKA_V_VALUE((void *)value, len),
            RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(msg_opaque), RD_KAFKA_V_END);
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
            break;
        int left = remaining_ms(deadline);
        if (left == 0)
            break;
        /* Serving delivery reports is what frees queue space. */
        rd_kafka_poll(p->cl.rk, left < 100 ? left : 100);
    }
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
        return 0; /* the message owns hdrs */

    if (hdrs)
        rd_kafka_headers_destroy(hdrs);
    if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
        *retriable = 1;
        upm_log_debug(MOD, "produce queue full | client=%s topic=%s", p->cl.name, topic);
    } else {
        upm_log_warn(MOD, "produce failed: %s | client=%s topic=%s err=%s", rd_kafka_err2str(err),
                     p->cl.name, topic, rd_kafka_err2name(err));
    }
    return -1;
}

int upm_kafka_producer_poll(struct upm_kafka_producer *p, int timeout_ms)
{
    return rd_kafka_poll(p->cl.rk, timeout_ms);
}

int upm_kafka_producer_flush(struct upm_kafka_producer *p, int timeout_ms)
{
    rd_kafka_flush(p->cl.rk, timeout_ms);
    return rd_kafka_outq_len(p->cl.rk);
}

int upm_kafka_producer_fatal(struct upm_kafka_producer *p, char *errstr, size_t errstr_size)
{
    return client_fatal(&p->cl, errstr, errstr_size);
}

const char *upm_kafka_producer_name(const struct upm_kafka_producer *p)
{
    return p->cl.name;
}

void upm_kafka_producer_destroy(struct upm_kafka_producer *p)
{
    if (!p)
        return;
    if (p->cl.rk) {
        int left = upm_kafka_producer_flush(p, UPM_KAFKA_DESTROY_FLUSH_MS);
        if (left > 0) {
            upm_log_warn(MOD,
                         "producer closing with messages in flight, purging | client=%s "
                         "in_flight=%d",
                         p->cl.name, left);
            /* Purged messages fail with a report each, served by this
             * flush, so the failure counters stay exact. */
            rd_kafka_purge(p->cl.rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
            rd_kafka_flush(p->cl.rk, 1000);
        }
        rd_kafka_destroy(p->cl.rk);
        upm_log_info(MOD, "producer destroyed | client=%s", p->cl.name);
    }
    for (size_t i = 0; i < p->ntopics; i++)
        free(p->topics[i].topic);
    free(p->default_topic);
    free(p);
}

/* ---- consumer ------------------------------------------------------------ */

struct upm_kafka_consumer {
    struct client cl; /* first: the conf opaque */
    int closed;
    int stats;           /* statistics on: lag series exist and need pruning */
    int reset_latest;    /* auto.offset.reset is latest (rewind without a commit) */
    uint64_t rebalances; /* assignment changes served; read by the polling thread */
};

struct upm_kafka_batch {
    struct upm_kafka_message *msgs;
    size_t count;
    size_t cap;
};

/* "topic:0,topic:1,..." truncated to fit, for log lines. */
static void format_partitions(const rd_kafka_topic_partition_list_t *parts, char *out, size_t size)
{
    size_t len = 0;
    out[0] = '\0';
    for (int i = 0; parts && i < parts->cnt; i++) {
        int n = snprintf(out + len, size - len, "%s%s:%" PRId32, i ? "," : "",
                         parts->elems[i].topic, parts->elems[i].partition);
        if (n < 0 || (size_t)n >= size - len) {
            /* Keep room for the marker; the count is logged separately. */
            if (size > 4)
                snprintf(out + size - 4, 4, "...");
            return;
        }
        len += (size_t)n;
    }
}

/* Revoked partitions are no longer ours to report on. */
static void forget_lag(struct upm_kafka_consumer *c, const rd_kafka_topic_partition_list_t *parts)
{
    if (!c->cl.reg || !c->stats)
        return;
    struct upm_prom_metric *lag = lag_family(c->cl.reg);
    if (!lag)
        return;
    for (int i = 0; i < parts->cnt; i++) {
        char label[16];
        snprintf(label, sizeof(label), "%" PRId32, parts->elems[i].partition);
        upm_prom_series_remove(lag, (const char *[]){parts->elems[i].topic, label});
    }
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    struct upm_kafka_consumer *c = opaque;
    const char *proto = rd_kafka_rebalance_protocol(rk);
    /* Cooperative (incremental) rebalancing hands over only the delta;
     * eager rebalancing replaces the whole assignment. */
    int coop = proto && strcmp(proto, "COOPERATIVE") == 0;
    rd_kafka_error_t *error = NULL;
    rd_kafka_resp_err_t aerr = RD_KAFKA_RESP_ERR_NO_ERROR;
    char list[512];

    format_partitions(parts, list, sizeof(list));
    c->rebalances++;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        upm_log_info(MOD, "partitions assigned | client=%s protocol=%s count=%d partitions=%s",
                     c->cl.name, coop ? "cooperative" : "eager", parts->cnt, list);
        if (coop)
            error = rd_kafka_incremental_assign(rk, parts);
        else
            aerr = rd_kafka_assign(rk, parts);
    } else {
        if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS && rd_kafka_assignment_lost(rk))
            /* The group moved on without us (session timeout): someone else
             * may already consume these; uncommitted work will be redone. */
            upm_log_warn(MOD, "partitions lost | client=%s count=%d partitions=%s", c->cl.name,
                         parts->cnt, list);
        else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS)
            upm_log_info(MOD, "partitions revoked | client=%s protocol=%s count=%d partitions=%s",
                         c->cl.name, coop ? "cooperative" : "eager", parts->cnt, list);
        else
            upm_log_error(MOD, "rebalance failed, dropping assignment: %s | client=%s",
                          rd_kafka_err2str(err), c->cl.name);
        /* Uncommitted batches of these partitions are not committed later
         * (upm_kafka_consumer_commit skips partitions no longer assigned);
         * the next owner starts from the last committed offset. */
        if (coop && err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS)
            error = rd_kafka_incremental_unassign(rk, parts);
        else
            aerr = rd_kafka_assign(rk, NULL);
        forget_lag(c, parts);
    }
    if (error) {
        upm_log_error(MOD, "applying the assignment failed: %s | client=%s",
                      rd_kafka_error_string(error), c->cl.name);
        rd_kafka_error_destroy(error);
    } else if (aerr) {
        upm_log_error(MOD, "applying the assignment failed: %s | client=%s", rd_kafka_err2str(aerr),
                      c->cl.name);
    }
}

struct upm_kafka_consumer *upm_kafka_consumer_create(const struct upm_kafka_config *cfg,
                                                     struct upm_prom_registry *reg,
                                                     const char *const *topics, size_t ntopics,
                                                     char *errstr, size_t errstr_size)
{
    struct upm_kafka_consumer *c = upm_calloc(1, sizeof(*c));
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_topic_partition_list_t *subs = NULL;
    char rderr[512];
    const char *only[1] = {cfg->topic};

    if (!topics || ntopics == 0) {
        if (!cfg->topic || !*cfg->topic) {
            snprintf(errstr, errstr_size, "kafka.topic: must be set for a consumer");
            goto fail;
        }
        topics = only;
        ntopics = 1;
    }
    if (build_conf(conf, cfg, ROLE_CONSUMER, errstr, errstr_size) != 0)
        goto fail;
    client_init(&c->cl, reg, conf);
    c->stats = cfg->statistics_interval_ms > 0;
    c->reset_latest = cfg->auto_offset_reset && strcmp(cfg->auto_offset_reset, "latest") == 0;
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);

    c->cl.rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, rderr, sizeof(rderr));
    if (!c->cl.rk) {
        snprintf(errstr, errstr_size, "kafka: creating consumer: %s", rderr);
        goto fail;
    }
    conf = NULL;
    if (client_started(&c->cl, errstr, errstr_size) != 0)
        goto fail;
    /* One queue for everything: messages, rebalances, logs, statistics and
     * errors are all served by rd_kafka_consumer_poll on the caller's thread. */
    rd_kafka_poll_set_consumer(c->cl.rk);

    subs = rd_kafka_topic_partition_list_new((int)ntopics);
    for (size_t i = 0; i < ntopics; i++)
        rd_kafka_topic_partition_list_add(subs, topics[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(c->cl.rk, subs);
    if (err) {
        snprintf(errstr, errstr_size, "kafka: subscribing: %s", rd_kafka_err2str(err));
        goto fail;
    }
    rd_kafka_topic_partition_list_destroy(subs);
    upm_log_info(MOD, "consumer created | client=%s group=%s topics=%zu", c->cl.name, cfg->group_id,
                 ntopics);
    return c;

fail:
    if (subs)
        rd_kafka_topic_partition_list_destroy(subs);
    if (conf)
        rd_kafka_conf_destroy(conf);
    upm_kafka_consumer_destroy(c);
    return NULL;
}

/* Our view of a librdkafka message; its pointers live as long as rkm. */
static struct upm_kafka_message message_of(rd_kafka_message_t *rkm)
{
    return (struct upm_kafka_message){
        .topic = rd_kafka_topic_name(rkm->rkt),
        .partition = rkm->partition,
        .offset = rkm->offset,
        .timestamp_ms = rd_kafka_message_timestamp(rkm, NULL),
        .key = rkm->key,
        .key_len = rkm->key_len,
        .value = rkm->payload,
        .len = rkm->len,
        .impl = rkm,
    };
}

static void batch_add(struct upm_kafka_batch *b, rd_kafka_message_t *rkm)
{
    if (b->count == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 64;
        b->msgs = upm_realloc(b->msgs, b->cap * sizeof(*b->msgs));
    }
    b->msgs[b->count++] = message_of(rkm);
}

int upm_kafka_consumer_poll_batch(struct upm_kafka_consumer *c, size_t max, int timeout_ms,
                                  struct upm_kafka_batch **out, int *retriable)
{
    int dummy;
    if (!retriable)
        retriable = &dummy;
    *retriable = 0;
    *out = NULL;
    if (c->closed || atomic_load(&c->cl.fatal))
        return -1;
    if (max == 0)
        return 0;
    if (max > INT_MAX) /* the count is returned as an int */
        max = INT_MAX;

    struct upm_kafka_batch *b = upm_calloc(1, sizeof(*b));
    int64_t deadline =
        upm_clock_mono_ns() + (int64_t)(timeout_ms > 0 ? timeout_ms : 0) * UPM_NS_PER_MS;
    int left;
    do {
        left = remaining_ms(deadline);
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(c->cl.rk, left);
        if (atomic_load(&c->cl.fatal)) {
            /* Nothing of this batch is committed: it is redelivered to
             * whoever consumes next. */
            if (rkm)
                rd_kafka_message_destroy(rkm);
            upm_kafka_batch_destroy(b);
            return -1;
        }
        if (!rkm)
            continue;
        if (rkm->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            rd_kafka_message_destroy(rkm);
            if (b->count > 0)
                break;
            continue;
        }
        if (rkm->err) {
            count_error(&c->cl, rkm->err);
            upm_log_warn(MOD, "consume error: %s | client=%s topic=%s partition=%" PRId32 " err=%s",
                         rd_kafka_message_errstr(rkm), c->cl.name,
                         rkm->rkt ? rd_kafka_topic_name(rkm->rkt) : "-", rkm->partition,
                         rd_kafka_err2name(rkm->err));
            rd_kafka_message_destroy(rkm);
            continue;
        }
        batch_add(b, rkm);
    } while (left > 0 && b->count < max);

    if (b->count == 0) {
        upm_kafka_batch_destroy(b);
        return 0;
    }
    *out = b;
    return (int)b->count;
}

static int commit_retriable(rd_kafka_resp_err_t err)
{
    switch (err) {
    case RD_KAFKA_RESP_ERR__TRANSPORT:
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
    case RD_KAFKA_RESP_ERR__WAIT_COORD:
    case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
    case RD_KAFKA_RESP_ERR_NETWORK_EXCEPTION:
    case RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS:
    case RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_NOT_COORDINATOR:
    /* After the rebalance the partitions that stay ours commit fine, and the
     * ones that moved are skipped. */
    case RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS:
        return 1;
    default:
        return 0;
    }
}

/* Commit synchronously; the first error of the call or of any partition. */
static rd_kafka_resp_err_t commit_sync(struct upm_kafka_consumer *c,
                                       rd_kafka_topic_partition_list_t *offsets)
{
    rd_kafka_resp_err_t err = rd_kafka_commit(c->cl.rk, offsets, 0 /* synchronous */);
    for (int i = 0; !err && i < offsets->cnt; i++)
        err = offsets->elems[i].err;
    return err;
}

static void commit_failed(struct upm_kafka_consumer *c, rd_kafka_resp_err_t err, int *retriable)
{
    *retriable = commit_retriable(err);
    upm_log_warn(MOD, "commit failed: %s | client=%s err=%s retriable=%d", rd_kafka_err2str(err),
                 c->cl.name, rd_kafka_err2name(err), *retriable);
}

int upm_kafka_consumer_commit(struct upm_kafka_consumer *c, const struct upm_kafka_batch *b,
                              int *retriable)
{
    int dummy;
    int ret = -1;
    size_t skipped = 0;
    rd_kafka_topic_partition_list_t *assigned = NULL;
    rd_kafka_topic_partition_list_t *offsets = NULL;

    if (!retriable)
        retriable = &dummy;
    *retriable = 0;
    if (!b || b->count == 0)
        return 0;
    if (c->closed)
        return -1;

    rd_kafka_resp_err_t err = rd_kafka_assignment(c->cl.rk, &assigned);
    if (err)
        goto fail;
    offsets = rd_kafka_topic_partition_list_new(8);
    for (size_t i = 0; i < b->count; i++) {
        const struct upm_kafka_message *m = &b->msgs[i];
        if (!rd_kafka_topic_partition_list_find(assigned, m->topic, m->partition)) {
            skipped++;
            continue;
        }
        rd_kafka_topic_partition_t *tp =
            rd_kafka_topic_partition_list_find(offsets, m->topic, m->partition);
        if (!tp)
            tp = rd_kafka_topic_partition_list_add(offsets, m->topic, m->partition);
        /* The committed offset is the next one to read. */
        if (m->offset + 1 > tp->offset)
            tp->offset = m->offset + 1;
    }
    if (skipped > 0)
        upm_log_info(MOD, "not committing messages of revoked partitions | client=%s messages=%zu",
                     c->cl.name, skipped);
    if (offsets->cnt == 0) {
        ret = 0;
        goto out;
    }
    err = commit_sync(c, offsets);
    if (err)
        goto fail;
    ret = 0;
    goto out;

fail:
    commit_failed(c, err, retriable);
out:
    if (offsets)
        rd_kafka_topic_partition_list_destroy(offsets);
    if (assigned)
        rd_kafka_topic_partition_list_destroy(assigned);
    return ret;
}

uint64_t upm_kafka_consumer_rebalances(const struct upm_kafka_consumer *c)
{
    return c->rebalances;
}

static int is_assigned(struct upm_kafka_consumer *c, const char *topic, int32_t partition,
                       rd_kafka_resp_err_t *err)
{
    rd_kafka_topic_partition_list_t *assigned = NULL;
    *err = rd_kafka_assignment(c->cl.rk, &assigned);
    if (*err)
        return 0;
    int found = rd_kafka_topic_partition_list_find(assigned, topic, partition) != NULL;
    rd_kafka_topic_partition_list_destroy(assigned);
    return found;
}

int upm_kafka_consumer_owns(struct upm_kafka_consumer *c, const char *topic, int32_t partition)
{
    rd_kafka_resp_err_t err;
    return !c->closed && is_assigned(c, topic, partition, &err) && !err;
}

int upm_kafka_consumer_commit_offsets(struct upm_kafka_consumer *c, const char *topic,
                                      const struct upm_kafka_offset *offs, size_t n, int *retriable)
{
    int dummy;
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
    rd_kafka_topic_partition_list_t *offsets = NULL;
    rd_kafka_topic_partition_list_t *assigned = NULL;
    int ret = -1;

    if (!retriable)
        retriable = &dummy;
    *retriable = 0;
    if (c->closed || n == 0 || n > INT_MAX)
        return -1;
    err = rd_kafka_assignment(c->cl.rk, &assigned);
    if (err)
        goto fail;
    offsets = rd_kafka_topic_partition_list_new((int)n);
    for (size_t i = 0; i < n; i++) {
        if (offs[i].offset < 0)
            goto out;
        if (!rd_kafka_topic_partition_list_find(assigned, topic, offs[i].partition)) {
            upm_log_info(MOD,
                         "not committing a revoked partition | client=%s topic=%s "
                         "partition=%" PRId32,
                         c->cl.name, topic, offs[i].partition);
            goto out;
        }
        rd_kafka_topic_partition_t *tp =
            rd_kafka_topic_partition_list_add(offsets, topic, offs[i].partition);
        tp->offset = offs[i].offset;
        if (offs[i].metadata && *offs[i].metadata) {
            /* The list owns (and frees) its elements' metadata. */
            tp->metadata_size = strlen(offs[i].metadata);
            tp->metadata = upm_malloc(tp->metadata_size);
            memcpy(tp->metadata, offs[i].metadata, tp->metadata_size);
        }
    }
    err = commit_sync(c, offsets);
    if (err)
        goto fail;
    ret = 0;
    goto out;

fail:
    commit_failed(c, err, retriable);
out:
    if (offsets)
        rd_kafka_topic_partition_list_destroy(offsets);
    if (assigned)
        rd_kafka_topic_partition_list_destroy(assigned);
    return ret;
}

int upm_kafka_consumer_commit_offset(struct upm_kafka_consumer *c, const char *topic,
                                     int32_t partition, int64_t offset, const char *metadata,
                                     int *retriable)
{
    const struct upm_kafka_offset one = {partition, offset, metadata};
    return upm_kafka_consumer_commit_offsets(c, topic, &one, 1, retriable);
}

int upm_kafka_consumer_committed(struct upm_kafka_consumer *c, const char *topic, int32_t partition,
                                 int timeout_ms, int64_t *offset, char *metadata,
                                 size_t metadata_size, int *retriable)
{
    int dummy;
    if (!retriable)
        retriable = &dummy;
    *retriable = 0;
    if (c->closed)
        return -1;
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(parts, topic, partition);
    rd_kafka_resp_err_t err = rd_kafka_committed(c->cl.rk, parts, timeout_ms);
    if (!err)
        err = parts->elems[0].err;
    if (err) {
        /* Fetching is read-only: any failure may pass on a later try unless
         * the client itself is dead. */
        *retriable = !atomic_load(&c->cl.fatal);
        upm_log_warn(MOD,
                     "fetching the committed offset failed: %s | client=%s topic=%s "
                     "partition=%" PRId32,
                     rd_kafka_err2str(err), c->cl.name, topic, partition);
        rd_kafka_topic_partition_list_destroy(parts);
        return -1;
    }
    const rd_kafka_topic_partition_t *tp = &parts->elems[0];
    *offset = tp->offset >= 0 ? tp->offset : -1;
    if (metadata && metadata_size > 0) {
        size_t n = tp->metadata ? tp->metadata_size : 0;
        if (n >= metadata_size)
            n = metadata_size - 1;
        if (n)
            memcpy(metadata, tp->metadata, n);
        metadata[n] = '\0';
    }
    rd_kafka_topic_partition_list_destroy(parts);
    return 0;
}

int upm_kafka_consumer_rewind(struct upm_kafka_consumer *c, int timeout_ms, int *retriable)
{
    int dummy;
    int ret = -1;
    rd_kafka_topic_partition_list_t *parts = NULL;
    rd_kafka_error_t *error = NULL;

    if (!retriable)
        retriable = &dummy;
    *retriable = 0;
    if (c->closed)
        return -1;
    rd_kafka_resp_err_t err = rd_kafka_assignment(c->cl.rk, &parts);
    if (!err && parts->cnt > 0)
        err = rd_kafka_committed(c->cl.rk, parts, timeout_ms);
    if (err)
        goto fail;
    for (int i = 0; i < parts->cnt; i++) {
        if (parts->elems[i].err) {
            err = parts->elems[i].err;
            goto fail;
        }
        /* No commit yet: where a fresh member would start. */
        if (parts->elems[i].offset < 0)
            parts->elems[i].offset =
                c->reset_latest ? RD_KAFKA_OFFSET_END : RD_KAFKA_OFFSET_BEGINNING;
    }
    if (parts->cnt > 0) {
        error = rd_kafka_seek_partitions(c->cl.rk, parts, timeout_ms);
        if (error) {
            err = rd_kafka_error_code(error);
            goto fail;
        }
        for (int i = 0; i < parts->cnt; i++) {
            if (parts->elems[i].err) {
                err = parts->elems[i].err;
                goto fail;
            }
        }
    }
    upm_log_info(MOD, "rewound to the committed offsets | client=%s partitions=%d", c->cl.name,
                 parts->cnt);
    ret = 0;
    goto out;

fail:
    *retriable = !atomic_load(&c->cl.fatal);
    upm_log_warn(MOD, "rewinding failed: %s | client=%s", rd_kafka_err2str(err), c->cl.name);
out:
    if (error)
        rd_kafka_error_destroy(error);
    if (parts)
        rd_kafka_topic_partition_list_destroy(parts);
    return ret;
}

int64_t upm_kafka_consumer_lag(struct upm_kafka_consumer *c)
{
    rd_kafka_topic_partition_list_t *parts = NULL;
    int64_t sum = 0;
    int known = 0;

    if (c->closed || rd_kafka_assignment(c->cl.rk, &parts) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return -1;
    if (rd_kafka_position(c->cl.rk, parts) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        for (int i = 0; i < parts->cnt; i++) {
            const rd_kafka_topic_partition_t *tp = &parts->elems[i];
            int64_t lo, hi;
            /* A negative position means nothing consumed yet: unknown. */
            if (tp->offset < 0 ||
                rd_kafka_get_watermark_offsets(c->cl.rk, tp->topic, tp->partition, &lo, &hi) !=
                    RD_KAFKA_RESP_ERR_NO_ERROR ||
                hi < 0)
                continue;
            sum += hi > tp->offset ? hi - tp->offset : 0;
            known++;
        }
    }
    rd_kafka_topic_partition_list_destroy(parts);
    return known > 0 ? sum : -1;
}

int upm_kafka_consumer_assigned(struct upm_kafka_consumer *c)
{
    rd_kafka_topic_partition_list_t *parts = NULL;
    if (c->closed || rd_kafka_assignment(c->cl.rk, &parts) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return 0;
    int n = parts->cnt;
    rd_kafka_topic_partition_list_destroy(parts);
    return n;
}

int upm_kafka_consumer_fatal(struct upm_kafka_consumer *c, char *errstr, size_t errstr_size)
{
    return client_fatal(&c->cl, errstr, errstr_size);
}

const char *upm_kafka_consumer_name(const struct upm_kafka_consumer *c)
{
    return c->cl.name;
}

int upm_kafka_consumer_close(struct upm_kafka_consumer *c)
{
    if (!c || !c->cl.rk || c->closed)
        return 0;
    c->closed = 1;
    rd_kafka_resp_err_t err = rd_kafka_consumer_close(c->cl.rk);
    if (err) {
        upm_log_warn(MOD, "leaving the group failed: %s | client=%s", rd_kafka_err2str(err),
                     c->cl.name);
        return -1;
    }
    upm_log_info(MOD, "consumer closed, left the group | client=%s", c->cl.name);
    return 0;
}

void upm_kafka_consumer_destroy(struct upm_kafka_consumer *c)
{
    if (!c)
        return;
    if (c->cl.rk) {
        upm_kafka_consumer_close(c);
        rd_kafka_destroy(c->cl.rk);
    }
    free(c);
}

/* ---- span reader --------------------------------------------------------- */

struct span_state {
    const struct upm_kafka_span *span;
    int done;
};

static struct span_state *span_of(struct span_state *st, size_t n, int32_t partition)
{
    for (size_t i = 0; i < n; i++) {
        if (st[i].span->partition == partition)
            return &st[i];
    }
    return NULL;
}

int upm_kafka_read_spans(const struct upm_kafka_config *cfg, const char *topic,
                         const struct upm_kafka_span *spans, size_t n, int timeout_ms,
                         upm_kafka_message_fn *fn, void *opaque, char *errstr, size_t errstr_size)
{
    struct client cl;
    memset(&cl, 0, sizeof(cl));
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_topic_partition_list_t *parts = NULL;
    struct span_state *st = upm_calloc(n ? n : 1, sizeof(*st));
    size_t left = 0;
    char rderr[512];
    int ret = -1;

    for (size_t i = 0; i < n; i++) {
        st[i].span = &spans[i];
        st[i].done = spans[i].start >= spans[i].end;
        left += !st[i].done;
    }
    if (left == 0) {
        ret = 0;
        goto out;
    }
    if (build_conf(conf, cfg, ROLE_CONSUMER, errstr, errstr_size) != 0)
        goto out;
    /* Its own group name (never joined: partitions are assigned by hand,
     * nothing is committed), no statistics (they would report lag series
     * of the service's consumer), and an error rather than a jump when a
     * start offset has left the log. */
    char group[512];
    snprintf(group, sizeof(group), "%s.reader", cfg->group_id);
    if (set_prop(conf, "group_id", "group.id", group, errstr, errstr_size) ||
        set_prop(conf, "statistics_interval", "statistics.interval.ms", "0", errstr, errstr_size) ||
        set_prop(conf, "auto_offset_reset", "auto.offset.reset", "error", errstr, errstr_size))
        goto out;
    client_init(&cl, NULL, conf);
    cl.rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, rderr, sizeof(rderr));
    if (!cl.rk) {
        snprintf(errstr, errstr_size, "kafka: creating a reader: %s", rderr);
        goto out;
    }
    conf = NULL;
    if (client_started(&cl, errstr, errstr_size) != 0)
        goto out;
    rd_kafka_poll_set_consumer(cl.rk);
    parts = rd_kafka_topic_partition_list_new((int)n);
    for (size_t i = 0; i < n; i++) {
        if (!st[i].done)
            rd_kafka_topic_partition_list_add(parts, topic, spans[i].partition)->offset =
                spans[i].start;
    }
    rd_kafka_resp_err_t err = rd_kafka_assign(cl.rk, parts);
    if (err) {
        snprintf(errstr, errstr_size, "kafka: assigning the reader: %s", rd_kafka_err2str(err));
        goto out;
    }
    int64_t deadline = upm_clock_mono_ns() + (int64_t)timeout_ms * UPM_NS_PER_MS;
    while (left > 0) {
        int wait = remaining_ms(deadline);
        if (wait == 0) {
            snprintf(errstr, errstr_size, "kafka: reading %zu span(s) timed out (%zu unfinished)",
                     n, left);
            goto out;
        }
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(cl.rk, wait < 200 ? wait : 200);
        if (client_fatal(&cl, errstr, errstr_size)) {
            if (rkm)
                rd_kafka_message_destroy(rkm);
            goto out;
        }
        if (!rkm)
            continue;
        struct span_state *sp = span_of(st, n, rkm->partition);
        if (rkm->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            /* rkm->offset is the partition's end: nothing at or beyond the
             * span's end is missing any more. */
            if (sp && !sp->done && rkm->offset >= sp->span->end) {
                sp->done = 1;
                left--;
            }
            rd_kafka_message_destroy(rkm);
            continue;
        }
        if (rkm->err) {
            snprintf(errstr, errstr_size, "kafka: reading partition %" PRId32 ": %s",
                     rkm->partition, rd_kafka_message_errstr(rkm));
            /* Transient fetch errors are retried by librdkafka; these are not. */
            if (rkm->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET ||
                rkm->err == RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE ||
                rkm->err == RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION ||
                rkm->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
                rd_kafka_message_destroy(rkm);
                goto out;
            }
            upm_log_warn(MOD, "reader: %s | client=%s", errstr, cl.name);
            rd_kafka_message_destroy(rkm);
            continue;
        }
        if (!sp || sp->done || rkm->offset < sp->span->start || rkm->offset >= sp->span->end) {
            if (sp && !sp->done && rkm->offset >= sp->span->end) {
                sp->done = 1;
                left--;
            }
            rd_kafka_message_destroy(rkm);
            continue;
        }
        const struct upm_kafka_message m = message_of(rkm);
        if (fn(opaque, &m) != 0) {
            snprintf(errstr, errstr_size,
                     "kafka: the reader's caller stopped at partition %" PRId32 " offset %" PRId64,
                     rkm->partition, rkm->offset);
            rd_kafka_message_destroy(rkm);
            goto out;
        }
        if (rkm->offset + 1 >= sp->span->end) {
            sp->done = 1;
            left--;
        }
        rd_kafka_message_destroy(rkm);
    }
    ret = 0;
    goto out;

out:
    if (parts)
        rd_kafka_topic_partition_list_destroy(parts);
    if (cl.rk) {
        rd_kafka_consumer_close(cl.rk);
        rd_kafka_destroy(cl.rk);
    }
    if (conf)
        rd_kafka_conf_destroy(conf);
    free(st);
    return ret;
}

size_t upm_kafka_batch_count(const struct upm_kafka_batch *b)
{
    return b ? b->count : 0;
}

const struct upm_kafka_message *upm_kafka_batch_message(const struct upm_kafka_batch *b, size_t i)
{
    if (!b || i >= b->count)
        return NULL;
    return &b->msgs[i];
}

void upm_kafka_batch_destroy(struct upm_kafka_batch *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->count; i++)
        rd_kafka_message_destroy((rd_kafka_message_t *)b->msgs[i].impl);
    free(b->msgs);
    free(b);
}

static rd_kafka_headers_t *message_headers(const struct upm_kafka_message *m)
{
    rd_kafka_headers_t *hdrs = NULL;
    /* Parsed lazily and cached inside the message, hence the cast. */
    if (rd_kafka_message_headers((rd_kafka_message_t *)m->impl, &hdrs) !=
        RD_KAFKA_RESP_ERR_NO_ERROR)
        return NULL;
    return hdrs;
}

size_t upm_kafka_message_header_count(const struct upm_kafka_message *m)
{
    rd_kafka_headers_t *hdrs = message_headers(m);
    return hdrs ? rd_kafka_header_cnt(hdrs) : 0;
}

int upm_kafka_message_header(const struct upm_kafka_message *m, size_t idx, const char **name,
                             const void **value, size_t *size)
{
    rd_kafka_headers_t *hdrs = message_headers(m);
    if (!hdrs ||
        rd_kafka_header_get_all(hdrs, idx, name, value, size) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return -1;
    return 0;
}

int upm_kafka_message_header_find(const struct upm_kafka_message *m, const char *name,
                                  const void **value, size_t *size)
{
    rd_kafka_headers_t *hdrs = message_headers(m);
    if (!hdrs || rd_kafka_header_get_last(hdrs, name, value, size) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return -1;
    return 0;
}
