/*
 * kafka — producer and consumer-group clients over librdkafka, with
 * librdkafka's logs routed into upm_log and its statistics into prom.
 *
 * Producer (simulator, ingest's DLQ): produce with key, value and headers;
 * delivery reports are counted per topic and handed to an optional callback.
 *
 * Consumer (ingest): at-least-once. Auto-commit and the automatic offset
 * store are off; the caller commits a batch only after its rows are safe in
 * ClickHouse. A crash before the commit redelivers the batch (ClickHouse
 * deduplicates), never loses it.
 *
 * Threads. librdkafka runs its own broker threads; everything it reports
 * back (delivery reports, logs, statistics, errors, rebalances) is queued
 * and runs on the thread that polls this module:
 *   producer: upm_kafka_produce (only while the queue is full),
 *             upm_kafka_producer_poll, _flush and _destroy;
 *   consumer: upm_kafka_consumer_poll_batch, _close and _destroy.
 * log.queue is set so that even librdkafka's log lines wait for that thread
 * instead of arriving spontaneously from a broker thread. Each handle belongs
 * to one thread at a time (all its calls come from that thread), so the
 * callbacks never race the caller. upm_kafka_stats_apply is thread-safe.
 *
 * Errors: constructors fill errstr and return NULL; other calls return 0 /
 * -1 (or a count) and set *retriable (1 = the same call may succeed later,
 * 0 = it will not: a fatal client error, or a caller bug).
 *
 * Metrics (when a registry is given; label values are bounded: brokers,
 * topics and partitions come from configuration and cluster size, never
 * from message contents):
 *   upmon_kafka_delivered_total{topic}        counter, successful deliveries
 *   upmon_kafka_delivery_failed_total{topic}  counter, failed deliveries
 *   upmon_kafka_errors_total{client,err}      counter, client and consume errors
 *   upmon_kafka_broker_rtt_seconds{broker}    gauge, average broker round-trip
 *   upmon_kafka_msg_queue{client}             gauge, messages in producer queues
 *   upmon_kafka_tx_messages_total{client}     counter, messages sent to brokers
 *   upmon_kafka_rx_messages_total{client}     counter, messages fetched
 *   upmon_kafka_consumer_lag{topic,partition} gauge, high watermark - committed offset
 * client is librdkafka's handle name (client.id plus "#producer-N" or
 * "#consumer-N"), unique within the process. A partition's lag series is
 * removed when it is revoked from this process.
 */
#ifndef UPMON_KAFKA_H
#define UPMON_KAFKA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "upmon/config.h"

struct upm_prom_registry;

/*
 * The `kafka` configuration section. Filled by upm_config_load from
 * upm_kafka_config_keys; tests may fill it directly: a NULL string, an empty
 * string or a 0 number means "librdkafka's default", except enable_idempotence
 * (false = off), linger_ms (0 = send at once) and statistics_interval_ms
 * (0 = no statistics); so a zeroed struct plus brokers (and group_id and
 * topic for a consumer) is a valid configuration.
 */
struct upm_kafka_config {
    char *brokers;                  /* bootstrap.servers */
    char *client_id;                /* client.id */
    char *group_id;                 /* group.id (consumer; required there) */
    char *topic;                    /* events topic (produce/subscribe default) */
    char *dlq_topic;                /* dead-letter topic, used by callers */
    int64_t statistics_interval_ms; /* 0 = no statistics */
    char *compression;              /* none/lz4/zstd/snappy/gzip */
    int64_t linger_ms;              /* producer batching delay */
    int64_t batch_size;             /* producer batch size in bytes */
    char *acks;                     /* all/1/0 */
    bool enable_idempotence;        /* producer */
    int64_t session_timeout_ms;     /* consumer */
    int64_t max_poll_interval_ms;   /* consumer */
    char *auto_offset_reset;        /* earliest/latest */
    char *security_protocol;        /* plaintext/ssl/sasl_plaintext/sasl_ssl */
    char *sasl_mechanism;           /* PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 */
    char *sasl_username;
    char *sasl_password; /* secret */
    char *ssl_ca_location;
    struct upm_strlist properties; /* raw librdkafka "name=value", applied last */
};

/* The key table for the `kafka` section (see config.h). */
extern const struct upm_config_key upm_kafka_config_keys[];
extern const size_t upm_kafka_config_nkeys;

/* Bounds used by the clients (milliseconds). */
#define UPM_KAFKA_QUEUE_FULL_WAIT_MS 1000 /* produce: how long to wait for queue space */
#define UPM_KAFKA_DESTROY_FLUSH_MS   5000 /* producer destroy: flush bound */

/* ---- statistics ---------------------------------------------------------- */

/*
 * Apply one librdkafka statistics JSON document (statistics.interval.ms) to
 * the registry's upmon_kafka_* families listed above. Input is untrusted
 * text: returns 0 when applied, -1 when it is not JSON or not a statistics
 * object (top-level object with a string "name"), in which case the registry
 * is left untouched. Fields of unexpected types are skipped. Counters only
 * advance (a value lower than the exported one is ignored). At most 64
 * brokers and 4096 partitions are exported per document.
 * Thread-safe (the registry is). reg NULL: validate only.
 */
int upm_kafka_stats_apply(struct upm_prom_registry *reg, const char *json, size_t len);

/* ---- producer ------------------------------------------------------------ */

struct upm_kafka_producer;

struct upm_kafka_header {
    const char *name;  /* NUL-terminated */
    const void *value; /* may be NULL (a null header) */
    size_t size;
};

/* One delivery report. Every pointer is valid only during the callback. */
struct upm_kafka_delivery {
    const char *topic;
    int32_t partition;
    int64_t offset;          /* -1 on failure */
    int err;                 /* 0 = delivered, else an rd_kafka_resp_err_t */
    const char *errstr;      /* "Success" or the reason */
    bool possibly_persisted; /* on failure: a retry may duplicate the message */
    const void *key;
    size_t key_len;
    const void *value;
    size_t len;
    void *msg_opaque; /* as passed to upm_kafka_produce */
};

typedef void upm_kafka_delivery_fn(void *opaque, const struct upm_kafka_delivery *d);

/*
 * Create a producer from cfg (not referenced after return). reg may be NULL
 * (no metrics); otherwise it must outlive the producer. Invalid settings fail
 * with errstr naming the key ("kafka.properties: linger.ms=x: ...").
 * Caller destroys with upm_kafka_producer_destroy.
 */
struct upm_kafka_producer *upm_kafka_producer_create(const struct upm_kafka_config *cfg,
                                                     struct upm_prom_registry *reg, char *errstr,
                                                     size_t errstr_size);

/* Set the delivery callback (NULL = count only). Call before the first
 * produce; the callback runs on the polling thread. */
void upm_kafka_producer_set_delivery_cb(struct upm_kafka_producer *p, upm_kafka_delivery_fn *cb,
                                        void *opaque);

/*
 * Queue one message for topic (NULL = cfg->topic); key, value and headers are
 * copied. Exactly one delivery report follows a 0 return. When the local
 * queue is full, serves delivery reports and retries for up to
 * UPM_KAFKA_QUEUE_FULL_WAIT_MS, then returns -1 with *retriable = 1. Other
 * failures (unknown topic name, oversize message, a fatal client error)
 * return -1 with *retriable = 0. retriable may be NULL.
 */
int upm_kafka_produce(struct upm_kafka_producer *p, const char *topic, const void *key,
                      size_t key_len, const void *value, size_t len,
                      const struct upm_kafka_header *headers, size_t nheaders, void *msg_opaque,
                      int *retriable);

/* Serve delivery reports, logs, statistics and errors, waiting up to
 * timeout_ms for the first. Returns the number of events served. Call
 * regularly (every few hundred ms at most) while producing. */
int upm_kafka_producer_poll(struct upm_kafka_producer *p, int timeout_ms);

/* Wait up to timeout_ms for every queued message to be delivered or fail
 * (serving their reports). Returns how many are still in flight: 0 when all
 * are done. */
int upm_kafka_producer_flush(struct upm_kafka_producer *p, int timeout_ms);

/* Non-zero once librdkafka raised a fatal error (idempotence guarantees
 * broken); the producer must then be destroyed and recreated. Fills errstr
 * with the reason when errstr is not NULL. */
int upm_kafka_producer_fatal(struct upm_kafka_producer *p, char *errstr, size_t errstr_size);

/* librdkafka's handle name, e.g. "upmon#producer-1" (the client label). */
const char *upm_kafka_producer_name(const struct upm_kafka_producer *p);

/* Flush for up to UPM_KAFKA_DESTROY_FLUSH_MS, then purge what is left (its
 * reports arrive, as failures, during this call), then free. NULL-safe. */
void upm_kafka_producer_destroy(struct upm_kafka_producer *p);

/* ---- consumer ------------------------------------------------------------ */

struct upm_kafka_consumer;
struct upm_kafka_batch;

/* One consumed message. Pointers stay valid until the batch is destroyed. */
struct upm_kafka_message {
    const char *topic;
    int32_t partition;
    int64_t offset;
    int64_t timestamp_ms; /* -1 if the broker gave none */
    const void *key;      /* NULL if none */
    size_t key_len;
    const void *value; /* NULL if none */
    size_t len;
    const void *impl; /* private */
};

/*
 * Create a consumer in cfg->group_id (required) subscribed to topics
 * (NULL/0 = cfg->topic). cfg is not referenced after return; reg as for the
 * producer. The group join and partition assignment happen in later polls.
 * Caller shuts down with upm_kafka_consumer_close, then _destroy.
 */
struct upm_kafka_consumer *upm_kafka_consumer_create(const struct upm_kafka_config *cfg,
                                                     struct upm_prom_registry *reg,
                                                     const char *const *topics, size_t ntopics,
                                                     char *errstr, size_t errstr_size);

/*
 * Collect up to max messages, waiting at most timeout_ms in total. Returns
 * early when a partition reaches its end with at least one message in hand
 * (the backlog is drained: hand the rows on now rather than wait for more).
 * Rebalances, logs, statistics and errors are served meanwhile. Consume
 * errors are logged and counted, not returned. Returns the message count
 * with *out set to a batch (caller destroys) when it is > 0, or to NULL when
 * 0; -1 with *retriable = 0 on a fatal client error (recreate the consumer).
 */
int upm_kafka_consumer_poll_batch(struct upm_kafka_consumer *c, size_t max, int timeout_ms,
                                  struct upm_kafka_batch **out, int *retriable);

/*
 * Synchronously commit, for every partition in b that is still assigned to
 * this consumer, the offset after its last message in b. Partitions revoked
 * since the batch was polled are skipped: their new owner will get the
 * messages again (at-least-once). 0, or -1 with *retriable set (1: broker or
 * coordinator trouble, commit again; 0: the group moved on, e.g. a rebalance
 * fenced this member — the messages will be redelivered).
 */
int upm_kafka_consumer_commit(struct upm_kafka_consumer *c, const struct upm_kafka_batch *b,
                              int *retriable);

/*
 * Commit one partition's offset (the next offset to read) with metadata
 * (NULL or "" = none; Kafka keeps up to a broker-set size, 4 KiB by
 * default), synchronously. Refuses (-1, *retriable = 0, nothing sent) when
 * the partition is not assigned to this member. Errors as for
 * upm_kafka_consumer_commit. Poll-thread only.
 */
int upm_kafka_consumer_commit_offset(struct upm_kafka_consumer *c, const char *topic,
                                     int32_t partition, int64_t offset, const char *metadata,
                                     int *retriable);

/* One partition's offset for upm_kafka_consumer_commit_offsets. */
struct upm_kafka_offset {
    int32_t partition;
    int64_t offset;       /* the next offset to read */
    const char *metadata; /* NULL or "" = none */
};

/*
 * Commit several partitions' offsets of one topic in a single synchronous
 * request. The group coordinator appends one request's offsets to the
 * group's log as one batch, so they take effect together or not at all;
 * callers that record one fact in several partitions' metadata rely on it.
 * Refuses (-1, *retriable = 0, nothing sent) unless every partition is
 * assigned to this member. Errors as for upm_kafka_consumer_commit (any
 * partition's error fails the call). Poll-thread only.
 */
int upm_kafka_consumer_commit_offsets(struct upm_kafka_consumer *c, const char *topic,
                                      const struct upm_kafka_offset *offsets, size_t n,
                                      int *retriable);

/* 1 when partition of topic is currently assigned to this member, 0 when
 * not or when the assignment cannot be read. Poll-thread only. */
int upm_kafka_consumer_owns(struct upm_kafka_consumer *c, const char *topic, int32_t partition);

/*
 * Fetch the group's committed offset of one partition from the broker,
 * waiting up to timeout_ms: 0 with *offset (-1 when nothing is committed)
 * and its metadata copied into metadata (NUL-terminated, truncated to
 * metadata_size - 1 bytes, "" when none; metadata may be NULL), or -1 with
 * *retriable (1 unless the client hit a fatal error). Poll-thread only.
 */
int upm_kafka_consumer_committed(struct upm_kafka_consumer *c, const char *topic, int32_t partition,
                                 int timeout_ms, int64_t *offset, char *metadata,
                                 size_t metadata_size, int *retriable);

/*
 * Seek every assigned partition back to its committed offset (to the
 * auto_offset_reset end when none), so that messages polled but not
 * committed are delivered again; messages already fetched for those
 * partitions are discarded by librdkafka. Used by a caller that dropped
 * uncommitted work it cannot finish (a rebalance in the middle of it, a
 * commit that failed for good). 0, or -1 with *retriable. Poll-thread only.
 */
int upm_kafka_consumer_rewind(struct upm_kafka_consumer *c, int timeout_ms, int *retriable);

/*
 * How many assignment changes (assign, revoke, lost) this consumer has
 * served so far. A caller that keeps per-partition state compares it before
 * and after each poll: any change means messages of one batch may straddle
 * an assignment, so uncommitted state must be dropped (and the consumer
 * rewound). Poll-thread only.
 */
uint64_t upm_kafka_consumer_rebalances(const struct upm_kafka_consumer *c);

/*
 * Sum over the assigned partitions of (cached high watermark - position), or
 * -1 when nothing is assigned or nothing is known yet. No network round-trip.
 */
int64_t upm_kafka_consumer_lag(struct upm_kafka_consumer *c);

/* Number of partitions currently assigned to this member. */
int upm_kafka_consumer_assigned(struct upm_kafka_consumer *c);

/* As upm_kafka_producer_fatal. */
int upm_kafka_consumer_fatal(struct upm_kafka_consumer *c, char *errstr, size_t errstr_size);

const char *upm_kafka_consumer_name(const struct upm_kafka_consumer *c);

/*
 * Leave the group: revokes the assignment (the rebalance callback runs here)
 * and lets the other members take over without waiting for the session
 * timeout. Does NOT commit. Shutdown order:
 *   1. stop polling;  2. commit the last batch whose rows are stored;
 *   3. destroy every batch;  4. upm_kafka_consumer_close;
 *   5. upm_kafka_consumer_destroy.
 * 0, or -1 (logged) if leaving failed; destroy is still required. Idempotent.
 */
int upm_kafka_consumer_close(struct upm_kafka_consumer *c);

/* Free the consumer; closes it first if the caller did not. Every batch must
 * have been destroyed. NULL-safe. */
void upm_kafka_consumer_destroy(struct upm_kafka_consumer *c);

/* ---- span reader --------------------------------------------------------- */

/* Offsets [start, end) of one partition. */
struct upm_kafka_span {
    int32_t partition;
    int64_t start;
    int64_t end;
};

/* Called for each message of a span, in offset order within a partition
 * (partitions interleave); m is valid during the call only. Non-zero stops
 * the read. */
typedef int upm_kafka_message_fn(void *opaque, const struct upm_kafka_message *m);

/*
 * Read exactly the messages of topic that lie in the spans, with a
 * short-lived consumer of its own (cfg's brokers and security settings,
 * group "<group_id>.reader", partitions assigned by hand, nothing
 * committed), waiting at most timeout_ms in total. Offsets may have gaps
 * (transaction markers, compaction): a span is done at its last message or
 * once the partition's end lies at or beyond the span's end. 0 when every
 * span was read to its end; -1 with errstr on a timeout, a client error, an
 * offset no longer in the log, or fn stopping the read.
 */
int upm_kafka_read_spans(const struct upm_kafka_config *cfg, const char *topic,
                         const struct upm_kafka_span *spans, size_t n, int timeout_ms,
                         upm_kafka_message_fn *fn, void *opaque, char *errstr, size_t errstr_size);

size_t upm_kafka_batch_count(const struct upm_kafka_batch *b);
/* Message i (0 <= i < count), in consumption order: per partition, by
 * offset. */
const struct upm_kafka_message *upm_kafka_batch_message(const struct upm_kafka_batch *b, size_t i);
/* NULL-safe. */
void upm_kafka_batch_destroy(struct upm_kafka_batch *b);

/* Number of headers on m. */
size_t upm_kafka_message_header_count(const struct upm_kafka_message *m);
/* Header idx: 0, or -1 if out of range. value is NULL for a null header. */
int upm_kafka_message_header(const struct upm_kafka_message *m, size_t idx, const char **name,
                             const void **value, size_t *size);
/* The last header called name: 0, or -1 if absent. */
int upm_kafka_message_header_find(const struct upm_kafka_message *m, const char *name,
                                  const void **value, size_t *size);

#endif
