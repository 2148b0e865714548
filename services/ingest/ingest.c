#include "ingest.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dlq.h"
#include "group.h"
#include "range.h"
#include "upmon/alloc.h"
#include "upmon/clock.h"
#include "upmon/event.h"
#include "upmon/evrow.h"
#include "upmon/log.h"

#include "topology.h"

#define MOD "ingest"

#define IOFF(f) offsetof(struct ing_config, f)
#define NORANGE 1, 0

const struct upm_config_key ing_config_keys[] = {
    {"shards", UPM_CFG_STRING_LIST, IOFF(shards), "", NORANGE, NULL,
     "ClickHouse shards in system.clusters shard_num order; each item is that shard's replica "
     "URLs joined by '|'. Required unless topology_resource is set.",
     0},
    {"topology_resource", UPM_CFG_STRING, IOFF(topology_resource), "", NORANGE, NULL,
     "Name of a ClickHouseCluster (upmon-operator) whose status.writeShards ingest follows "
     "instead of `shards`: it switches at a group boundary, without a restart. \"\" = the "
     "static `shards`.",
     0},
    {"topology_namespace", UPM_CFG_STRING, IOFF(topology_namespace), "", NORANGE, NULL,
     "Namespace of topology_resource; \"\" = $POD_NAMESPACE.", 0},
    {"table", UPM_CFG_STRING, IOFF(table), "events_in", NORANGE, NULL,
     "Table written on every shard: events_in, whose views fill events_local and the rollups "
     "(sql/0008).",
     0},
    {"batch_rows", UPM_CFG_INT, IOFF(batch_rows), "100000", 1, 10000000, NULL,
     "Valid rows (over every partition this replica consumes) that cut a group: one block per "
     "shard.",
     0},
    {"batch_bytes", UPM_CFG_INT, IOFF(batch_bytes), "8388608", 1024, 1073741824, NULL,
     "RowBinary bytes (over every partition this replica consumes) that cut a group.", 0},
    {"batch_age", UPM_CFG_DURATION_MS, IOFF(batch_age_ms), "250ms", 1, 600000, NULL,
     "Age of a group's first message that cuts it (not while catching up a backlog).", 0},
    {"poll_max", UPM_CFG_INT, IOFF(poll_max), "20000", 1, 1000000, NULL,
     "Messages taken from the consumer per poll.", 0},
    {"retry_backoff_max", UPM_CFG_DURATION_MS, IOFF(retry_backoff_max_ms), "5s", 10, 600000, NULL,
     "Upper bound of the wait between two attempts of a failed insert or commit.", 0},
    {"shutdown_timeout", UPM_CFG_DURATION_MS, IOFF(shutdown_timeout_ms), "15s", 0, 600000, NULL,
     "How long a stop may spend flushing and committing.", 0},
    {"parallel_shards", UPM_CFG_BOOL, IOFF(parallel_shards), "true", NORANGE, NULL,
     "Insert a group's blocks into the shards at once (one thread per shard) rather than one "
     "after another.",
     0},
    {"check_topology", UPM_CFG_BOOL, IOFF(check_topology), "true", NORANGE, NULL,
     "Refuse to start unless the shard count matches system.clusters.", 0},
    {"cdn_hosts", UPM_CFG_STRING_LIST, IOFF(cdn_hosts), "", NORANGE, NULL,
     "Own-CDN host suffixes for media classification.", 0},
};
const size_t ing_config_nkeys = sizeof(ing_config_keys) / sizeof(ing_config_keys[0]);

enum step { STEP_OK = 0, STEP_RESTART };

struct ingest {
    const struct ing_config *cfg;
    const struct upm_kafka_config *kcfg;
    struct upm_prom_registry *reg;
    struct upm_httpd *httpd;
    volatile sig_atomic_t *stop;
    /* Set once a stop is seen: the end of the shutdown budget. Atomic: the
     * shard insert threads read and may set it too. */
    _Atomic int64_t deadline_ns;

    struct upm_kafka_consumer *consumer;
    struct upm_kafka_producer *dlq;
    struct upm_ch_client **ch;
    uint32_t nshards;
    const struct upm_ch_config *ccfg;
    /* The write topology followed from a ClickHouseCluster (NULL = static). */
    struct ing_topology *topo;
    uint64_t topo_seen;
    struct upm_prom_series *topo_switches, *topo_shards;

    /* Indexed by partition: the open range (being read), the flushing one
     * (its part of the group in flight), whether the partition was started
     * in this assignment. */
    struct ing_range *ranges;
    struct ing_range *flushing;
    bool *live;
    size_t nranges;
    size_t scan_from;                   /* where the next cut starts looking for members */
    struct ing_totals open;             /* the live ranges' messages not yet stored */
    struct ing_limits lim, lim_backlog; /* lim_backlog: no age cut */
    struct upm_buf *blocks;             /* [nshards] the group in flight's block per shard */
    size_t *block_rows;                 /* [nshards] */
    /* The group in flight: its inserts run on the flusher thread while the
     * loop reads the next group (the guarantee allows one recorded cut per
     * partition at a time, so the next cut waits for this one's end). */
    struct inflight {
        bool active;
        bool threaded;
        pthread_t thread;
        atomic_bool done;
        int rc;
        enum ing_cut cut;
        int64_t started_ns;
        struct ing_group g;
    } fl;
    /* The last poll came back full: a backlog. Age cuts are then off (sizes
     * still cut), so catching up writes big blocks instead of one small
     * block per partition and shard every batch_age — each block costs the
     * cluster a part on every replica of every table its views feed. */
    bool backlog;
    struct upm_event_opts evopts;
    uint64_t rebalances_seen;
    uint64_t dlq_failed, dlq_failed_seen;

    struct upm_prom_series *consumed, *dlq_produced, *dlq_failures, *restarts, *backpressure;
    struct upm_prom_metric *rejected, *inserted, *insert_failures, *batches;
    struct upm_prom_series *batch_rows, *batch_bytes, *insert_seconds, *e2s_seconds;
};

/* ---- helpers --------------------------------------------------------------- */

static bool giving_up(struct ingest *in)
{
    if (!*in->stop)
        return false;
    int64_t now = upm_clock_mono_ns();
    int64_t none = 0;
    (void)atomic_compare_exchange_strong(&in->deadline_ns, &none,
                                         now + in->cfg->shutdown_timeout_ms * UPM_NS_PER_MS);
    return now >= atomic_load(&in->deadline_ns);
}

/* Sleep, cut short by a stop; a stopping service still retries until its
 * deadline, so the wait then is short. */
static void backoff_sleep(struct ingest *in, int64_t *backoff_ms)
{
    int64_t ms = *in->stop ? 100 : *backoff_ms;
    int64_t slept = 0;
    while (slept < ms && (*in->stop == 0 || ms == 100)) {
        int64_t step = ms - slept < 50 ? ms - slept : 50;
        upm_clock_sleep_ms(step, NULL);
        slept += step;
    }
    *backoff_ms *= 2;
    if (*backoff_ms > in->cfg->retry_backoff_max_ms)
        *backoff_ms = in->cfg->retry_backoff_max_ms;
}

static void on_dlq_delivery(void *opaque, const struct upm_kafka_delivery *d)
{
    struct ingest *in = opaque;
    if (d->err == 0) {
        upm_prom_inc(in->dlq_produced, 1);
    } else {
        in->dlq_failed++;
        upm_prom_inc(in->dlq_failures, 1);
        upm_log_warn(MOD, "DLQ delivery failed: %s | topic=%s", d->errstr, d->topic);
    }
}

/* Commit offs in one request (all take effect or none), retrying while the
 * failure is retriable. */
static int commit_retry(struct ingest *in, const struct upm_kafka_offset *offs, size_t n)
{
    int64_t backoff = 100;
    for (;;) {
        int retriable = 0;
        if (upm_kafka_consumer_commit_offsets(in->consumer, in->kcfg->topic, offs, n, &retriable) ==
            0) {
            upm_prom_set(in->backpressure, 0);
            return 0;
        }
        if (!retriable || giving_up(in))
            return -1;
        upm_prom_set(in->backpressure, 1);
        backoff_sleep(in, &backoff);
    }
}

static int insert_retry(struct ingest *in, uint32_t shard, const struct upm_buf *block, size_t rows)
{
    int64_t backoff = 200;
    char shard_label[16];
    snprintf(shard_label, sizeof(shard_label), "%" PRIu32, shard);
    for (;;) {
        struct upm_ch_error err;
        int64_t t0 = upm_clock_mono_ns();
        /* The same bytes every time: a retry of a block that did land is
         * dropped by the server's block deduplication. */
        int rc = upm_ch_insert(in->ch[shard], in->cfg->table, UPM_EVROW_COLUMNS, "RowBinary",
                               block->data, block->len, &err);
        if (rc == 0) {
            upm_prom_observe(in->insert_seconds,
                             (double)(upm_clock_mono_ns() - t0) / (double)UPM_NS_PER_S);
            upm_prom_inc(upm_prom_series_get(in->inserted, (const char *[]){shard_label}),
                         (double)rows);
            upm_httpd_set_ready(in->httpd, true, NULL);
            upm_prom_set(in->backpressure, 0);
            return 0;
        }
        upm_prom_inc(upm_prom_series_get(in->insert_failures, (const char *[]){shard_label}), 1);
        upm_prom_set(in->backpressure, 1);
        upm_httpd_set_ready(in->httpd, false, "ClickHouse inserts failing");
        /* Nothing is skipped, not even on a non-retriable error (a schema
         * mismatch, a missing table): the rows stay uncommitted and the
         * insert is tried again until an operator fixes the cause. */
        upm_log_warn(MOD,
                     "insert failed, retrying | shard=%" PRIu32 " rows=%zu code=%d http=%d "
                     "retriable=%d backoff_ms=%" PRId64 " error=\"%s\"",
                     shard, rows, err.code, err.http_status, err.retriable ? 1 : 0, backoff,
                     err.message);
        if (giving_up(in))
            return -1;
        backoff_sleep(in, &backoff);
    }
}

static int dlq_flush(struct ingest *in)
{
    while (upm_kafka_producer_flush(in->dlq, 1000) > 0) {
        if (giving_up(in))
            return -1;
    }
    if (in->dlq_failed != in->dlq_failed_seen) {
        /* A rejected message may be missing from the DLQ: redo the range. */
        in->dlq_failed_seen = in->dlq_failed;
        return -1;
    }
    return 0;
}

static void produce_dlq(struct ingest *in, const struct upm_kafka_message *m,
                        const struct upm_event_error *err)
{
    struct ing_dlq_headers h;
    memset(&h, 0, sizeof(h));
    size_t nh = ing_dlq_headers(&h, err, m->partition, m->offset);
    const void *value = m->value ? m->value : "";
    size_t len = m->value ? m->len : 0;
    for (;;) {
        int retriable = 0;
        if (upm_kafka_produce(in->dlq, in->kcfg->dlq_topic, m->key, m->key_len, value, len, h.h, nh,
                              NULL, &retriable) == 0)
            return;
        if (retriable && !giving_up(in))
            continue;
        if (len > 65536) {
            /* Too large for the DLQ topic: keep the head, say so. */
            upm_log_warn(MOD,
                         "DLQ message too large, truncating | partition=%" PRId32 " offset=%" PRId64
                         " bytes=%zu",
                         m->partition, m->offset, len);
            len = 65536;
            continue;
        }
        /* Counted as a failed delivery: the range is redone. */
        in->dlq_failed++;
        upm_prom_inc(in->dlq_failures, 1);
        return;
    }
}

/* ---- groups ---------------------------------------------------------------- */

struct shard_insert {
    struct ingest *in;
    uint32_t shard;
    int rc;
};

static void *shard_insert_run(void *arg)
{
    struct shard_insert *j = arg;
    j->rc = insert_retry(j->in, j->shard, &j->in->blocks[j->shard], j->in->block_rows[j->shard]);
    return NULL;
}

/* Build the group block of every shard from members (in the group's order)
 * into in->blocks. */
static void build_blocks(struct ingest *in, struct ing_range *const *members, size_t n)
{
    for (uint32_t s = 0; s < in->nshards; s++) {
        upm_buf_reset(&in->blocks[s]);
        in->block_rows[s] = ing_group_block(members, n, s, &in->blocks[s]);
    }
}

/* Insert in->blocks into every shard that has rows: the shards at once
 * (each has its own client and servers), unless ingest.parallel_shards is
 * off. Runs on the flusher thread while the loop reads on. */
static int insert_blocks(struct ingest *in)
{
    struct shard_insert *jobs = upm_calloc(in->nshards, sizeof(*jobs));
    pthread_t *threads = upm_calloc(in->nshards, sizeof(*threads));
    bool *started = upm_calloc(in->nshards, sizeof(*started));
    int rc = 0;
    uint32_t last = in->nshards;
    for (uint32_t s = 0; s < in->nshards; s++) {
        jobs[s] = (struct shard_insert){in, s, 0};
        if (in->block_rows[s] > 0)
            last = s;
    }
    for (uint32_t s = 0; s < in->nshards; s++) {
        if (in->block_rows[s] == 0)
            continue;
        /* The last one runs here; so does every one when a thread cannot
         * be had. */
        if (s != last && in->cfg->parallel_shards &&
            pthread_create(&threads[s], NULL, shard_insert_run, &jobs[s]) == 0)
            started[s] = true;
        else
            shard_insert_run(&jobs[s]);
    }
    for (uint32_t s = 0; s < in->nshards; s++) {
        if (started[s])
            pthread_join(threads[s], NULL);
        if (jobs[s].rc != 0)
            rc = -1;
    }
    free(started);
    free(threads);
    free(jobs);
    return rc;
}

static void *flusher_run(void *arg)
{
    struct ingest *in = arg;
    in->fl.rc = insert_blocks(in);
    atomic_store(&in->fl.done, true);
    return NULL;
}

static void observe_group(struct ingest *in, struct ing_range *const *members, size_t n,
                          enum ing_cut cut)
{
    int64_t now = upm_clock_real_ns();
    size_t rows = 0, bytes = 0;
    for (size_t i = 0; i < n; i++) {
        const struct ing_range *r = members[i];
        for (size_t j = 0; j < r->nvalid; j++)
            upm_prom_observe(in->e2s_seconds, (double)(now - r->ts_ns[j]) / (double)UPM_NS_PER_S);
        rows += r->nvalid;
        bytes += r->bytes;
    }
    upm_prom_observe(in->batch_rows, (double)rows);
    upm_prom_observe(in->batch_bytes, (double)bytes);
    upm_prom_inc(upm_prom_series_get(in->batches, (const char *[]){ing_cut_name(cut)}), 1);
    upm_log_debug(MOD, "group stored | members=%zu rows=%zu bytes=%zu cut=%s seconds=%.3f", n, rows,
                  bytes, ing_cut_name(cut),
                  (double)(upm_clock_mono_ns() - in->fl.started_ns) / (double)UPM_NS_PER_S);
}

/* The open group's totals, from the live ranges. */
static void recount_open(struct ingest *in)
{
    struct ing_totals t = {0};
    for (size_t p = 0; p < in->nranges; p++) {
        const struct ing_range *r = &in->ranges[p];
        if (!in->live[p] || r->nmsgs == 0)
            continue;
        t.msgs += r->nmsgs;
        t.rows += r->nvalid;
        t.bytes += r->bytes;
        if (t.first_ns == 0 || r->first_ns < t.first_ns)
            t.first_ns = r->first_ns;
    }
    in->open = t;
}

/*
 * Finish the group in flight once its inserts are done (wait: until they
 * are): deliver the DLQ messages, commit every member's end. STEP_OK also
 * when nothing is in flight or (without wait) it is still inserting. A
 * failure leaves the members' committed offsets at their starts, the cut
 * recorded: the caller starts over and the group is finished again.
 */
static enum step finish_group(struct ingest *in, bool wait)
{
    struct inflight *fl = &in->fl;
    if (!fl->active || (!wait && !atomic_load(&fl->done)))
        return STEP_OK;
    if (fl->threaded)
        pthread_join(fl->thread, NULL);
    fl->active = false;
    if (fl->rc != 0 || dlq_flush(in) != 0)
        return STEP_RESTART;
    struct upm_kafka_offset offs[ING_GROUP_MAX];
    struct ing_range *members[ING_GROUP_MAX];
    for (size_t i = 0; i < fl->g.n; i++) {
        offs[i] = (struct upm_kafka_offset){fl->g.m[i].partition, fl->g.m[i].end, NULL};
        members[i] = &in->flushing[fl->g.m[i].partition];
    }
    if (commit_retry(in, offs, fl->g.n) != 0)
        return STEP_RESTART;
    observe_group(in, members, fl->g.n, fl->cut);
    return STEP_OK;
}

static int cmp_partition(const void *a, const void *b)
{
    int32_t x = (*(struct ing_range *const *)a)->partition;
    int32_t y = (*(struct ing_range *const *)b)->partition;
    return (x > y) - (x < y);
}

/*
 * Cut the open group and start storing it; a group still in flight is
 * finished first (waiting for it). Members: the live partitions with
 * messages, at most ING_GROUP_MAX, taken round-robin so that none waits
 * for ever. The cut is recorded in every member's committed offset (start)
 * in one commit before any insert; the members' ranges move to the
 * flushing side and their open ranges begin at the members' ends. Unless
 * wait, the inserts run on the flusher thread while the loop reads on.
 */
static enum step start_group(struct ingest *in, enum ing_cut cut, bool wait)
{
    if (finish_group(in, true) != STEP_OK)
        return STEP_RESTART;
    struct ing_range *members[ING_GROUP_MAX];
    size_t n = 0;
    for (size_t k = 0; k < in->nranges && n < ING_GROUP_MAX; k++) {
        size_t p = (in->scan_from + k) % in->nranges;
        if (in->live[p] && in->ranges[p].nmsgs > 0)
            members[n++] = &in->ranges[p];
    }
    if (n == 0)
        return STEP_OK;
    in->scan_from = ((size_t)members[n - 1]->partition + 1) % in->nranges;
    qsort(members, n, sizeof(members[0]), cmp_partition);

    struct inflight *fl = &in->fl;
    fl->g = (struct ing_group){.nshards = in->nshards, .n = n};
    for (size_t i = 0; i < n; i++)
        fl->g.m[i] =
            (struct ing_member){members[i]->partition, members[i]->start, members[i]->next};
    char meta[ING_GROUP_META_MAX];
    struct upm_kafka_offset offs[ING_GROUP_MAX];
    if (ing_group_format(meta, sizeof(meta), &fl->g) != 0) {
        upm_log_error(MOD, "cannot record a cut of %zu members", n);
        return STEP_RESTART;
    }
    for (size_t i = 0; i < n; i++)
        offs[i] = (struct upm_kafka_offset){fl->g.m[i].partition, fl->g.m[i].start, meta};
    if (commit_retry(in, offs, n) != 0)
        return STEP_RESTART;

    /* Swap each member's open range with its flushing one. */
    struct ing_range *flushing[ING_GROUP_MAX];
    for (size_t i = 0; i < n; i++) {
        int32_t p = fl->g.m[i].partition;
        struct ing_range tmp = in->flushing[p];
        in->flushing[p] = in->ranges[p];
        in->ranges[p] = tmp;
        ing_range_reset(&in->ranges[p], fl->g.m[i].end);
        flushing[i] = &in->flushing[p];
    }
    recount_open(in);
    build_blocks(in, flushing, n);
    fl->cut = cut;
    fl->rc = 0;
    fl->started_ns = upm_clock_mono_ns();
    atomic_store(&fl->done, false);
    fl->active = true;
    fl->threaded = !wait && pthread_create(&fl->thread, NULL, flusher_run, in) == 0;
    if (!fl->threaded)
        flusher_run(in);
    return wait ? finish_group(in, true) : STEP_OK;
}

/* ---- partitions and recorded cuts ------------------------------------------ */

static void ensure_ranges(struct ingest *in, int32_t partition)
{
    if ((size_t)partition < in->nranges)
        return;
    size_t n = (size_t)partition + 1, old = in->nranges;
    in->ranges = upm_realloc(in->ranges, n * sizeof(*in->ranges));
    in->flushing = upm_realloc(in->flushing, n * sizeof(*in->flushing));
    in->live = upm_realloc(in->live, n * sizeof(*in->live));
    memset(in->ranges + old, 0, (n - old) * sizeof(*in->ranges));
    memset(in->flushing + old, 0, (n - old) * sizeof(*in->flushing));
    memset(in->live + old, 0, (n - old) * sizeof(*in->live));
    in->nranges = n;
}

static void set_live(struct ingest *in, int32_t partition, int64_t start)
{
    ensure_ranges(in, partition);
    struct ing_range *r = &in->ranges[partition];
    if (!r->blocks) {
        ing_range_init(r, partition, in->nshards, start);
        ing_range_init(&in->flushing[partition], partition, in->nshards, start);
    } else {
        ing_range_reset(r, start);
    }
    in->live[partition] = true;
}

static int committed(struct ingest *in, int32_t partition, int64_t *offset, char *meta,
                     size_t meta_size)
{
    int64_t backoff = 100;
    for (;;) {
        int retriable = 0;
        if (upm_kafka_consumer_committed(in->consumer, in->kcfg->topic, partition, 10000, offset,
                                         meta, meta_size, &retriable) == 0)
            return 0;
        if (!retriable || giving_up(in))
            return -1;
        backoff_sleep(in, &backoff);
    }
}

/* Validate a message (an absent value is an empty one). */
static bool parse_message(struct ingest *in, const struct upm_kafka_message *m,
                          struct upm_event *ev, struct upm_event_error *err)
{
    const char *value = m->value ? m->value : "";
    return upm_event_parse(value, m->value ? m->len : 0, &in->evopts, ev, err) == 0;
}

struct replay {
    struct ingest *in;
    const struct ing_group *g;
    struct ing_range *ranges; /* [g->n], member order */
    const bool *dlq;          /* [g->n]: deliver this member's rejected messages */
};

static int replay_message(void *opaque, const struct upm_kafka_message *m)
{
    struct replay *rp = opaque;
    size_t i = 0;
    while (i < rp->g->n && rp->g->m[i].partition != m->partition)
        i++;
    if (i == rp->g->n)
        return 0;
    struct upm_event ev;
    struct upm_event_error err;
    bool valid = parse_message(rp->in, m, &ev, &err);
    long added = ing_range_add(&rp->ranges[i], valid ? &ev : NULL, m->offset);
    upm_event_clear(&ev);
    if (added < 0)
        return -1;
    if (!valid && rp->dlq[i])
        produce_dlq(rp->in, m, &err);
    return 0;
}

/*
 * Finish a cut that an earlier owner recorded in partition's committed
 * offset (meta, parsed into g): rebuild the group's blocks from exactly its
 * members' messages, insert them (ClickHouse drops blocks it already has),
 * deliver the DLQ messages, and commit the end of every member this
 * consumer finishes: partition itself and the other members assigned here
 * whose committed offset still carries the same record. When another member
 * already moved past its end, the group was stored (ends are committed only
 * after the inserts): nothing is inserted again. 0 with the finished members
 * live at their ends; -1 to try again later.
 */
static int recover_group(struct ingest *in, int32_t partition, const struct ing_group *g,
                         const char *meta)
{
    bool finish[ING_GROUP_MAX] = {false};
    bool stored = false;
    char *other = upm_malloc(ING_GROUP_META_MAX);
    int rc = -1;
    for (size_t i = 0; i < g->n; i++) {
        const struct ing_member *m = &g->m[i];
        if (m->partition == partition) {
            finish[i] = true;
            continue;
        }
        int64_t off = -1;
        if (committed(in, m->partition, &off, other, ING_GROUP_META_MAX) != 0)
            goto out;
        if (off >= m->end)
            stored = true;
        else if (off == m->start && strcmp(other, meta) == 0 &&
                 !((size_t)m->partition < in->nranges && in->live[m->partition]) &&
                 upm_kafka_consumer_owns(in->consumer, in->kcfg->topic, m->partition))
            finish[i] = true;
    }

    /* Read every member when the blocks must be rebuilt, else only the
     * finished ones (their rejected messages go to the DLQ again). */
    struct upm_kafka_span spans[ING_GROUP_MAX];
    struct ing_range ranges[ING_GROUP_MAX];
    struct ing_range *ptrs[ING_GROUP_MAX];
    size_t nspans = 0;
    for (size_t i = 0; i < g->n; i++) {
        ing_range_init(&ranges[i], g->m[i].partition, in->nshards, g->m[i].start);
        ptrs[i] = &ranges[i];
        if (!stored || finish[i])
            spans[nspans++] =
                (struct upm_kafka_span){g->m[i].partition, g->m[i].start, g->m[i].end};
    }
    struct replay rp = {in, g, ranges, finish};
    char why[512];
    int64_t t0 = upm_clock_mono_ns();
    if (upm_kafka_read_spans(in->kcfg, in->kcfg->topic, spans, nspans, 30000, replay_message, &rp,
                             why, sizeof(why)) != 0) {
        upm_log_warn(MOD,
                     "re-reading a recorded cut failed, will retry | partition=%" PRId32
                     " error=\"%s\"",
                     partition, why);
        goto free_ranges;
    }
    if (!stored) {
        build_blocks(in, ptrs, g->n);
        if (insert_blocks(in) != 0)
            goto free_ranges;
    }
    if (dlq_flush(in) != 0)
        goto free_ranges;
    struct upm_kafka_offset offs[ING_GROUP_MAX];
    size_t noffs = 0;
    for (size_t i = 0; i < g->n; i++) {
        if (finish[i])
            offs[noffs++] = (struct upm_kafka_offset){g->m[i].partition, g->m[i].end, NULL};
    }
    if (commit_retry(in, offs, noffs) != 0)
        goto free_ranges;
    for (size_t i = 0; i < noffs; i++)
        set_live(in, offs[i].partition, offs[i].offset);
    upm_prom_inc(upm_prom_series_get(in->batches, (const char *[]){ing_cut_name(ING_CUT_RECORDED)}),
                 1);
    upm_log_info(MOD,
                 "recorded cut finished | partition=%" PRId32 " members=%zu finished=%zu "
                 "stored_before=%d seconds=%.3f meta=\"%s\"",
                 partition, g->n, noffs, stored ? 1 : 0,
                 (double)(upm_clock_mono_ns() - t0) / (double)UPM_NS_PER_S, meta);
    rc = 0;
free_ranges:
    for (size_t i = 0; i < g->n; i++)
        ing_range_free(&ranges[i]);
out:
    free(other);
    return rc;
}

/* The range of a partition, set up from its committed offset and metadata
 * the first time a message of it arrives in this assignment; a cut recorded
 * there is finished first. NULL to start over (and try again). */
static struct ing_range *range_for(struct ingest *in, int32_t partition, int64_t first_offset)
{
    if (partition < 0)
        return NULL;
    ensure_ranges(in, partition);
    if (in->live[partition])
        return &in->ranges[partition];
    if (*in->stop)
        return NULL; /* nothing new while stopping: the next owner starts it */

    int64_t off = -1;
    char *meta = upm_malloc(ING_GROUP_META_MAX);
    struct ing_group g;
    struct ing_range *r = NULL;
    if (committed(in, partition, &off, meta, ING_GROUP_META_MAX) != 0)
        goto out;
    int prc = off >= 0 ? ing_group_parse(meta, partition, off, &g) : 1;
    if (prc < 0)
        upm_log_warn(MOD, "ignoring malformed commit metadata | partition=%" PRId32 " meta=\"%s\"",
                     partition, meta);
    if (prc == 0) {
        if (g.nshards != in->nshards)
            /* Rows of the recorded cut now hash differently: the replay
             * cannot be deduplicated. Only a topology change does this. */
            upm_log_error(MOD,
                          "recorded cut was made for another shard count; its rows may be "
                          "stored twice | partition=%" PRId32 " recorded=%" PRIu32 " now=%" PRIu32,
                          partition, g.nshards, in->nshards);
        /* The recovery inserts with the blocks of the group in flight. */
        if (finish_group(in, true) != STEP_OK || recover_group(in, partition, &g, meta) != 0) {
            int64_t backoff = 1000;
            backoff_sleep(in, &backoff);
            goto out;
        }
    } else {
        set_live(in, partition, off >= 0 ? off : first_offset);
    }
    r = &in->ranges[partition];
    upm_log_info(MOD,
                 "partition started | partition=%" PRId32 " committed=%" PRId64 " start=%" PRId64
                 " recorded_cut=%d",
                 partition, off, r->start, prc == 0 ? 1 : 0);
out:
    free(meta);
    return r;
}

static enum step restart(struct ingest *in, const char *why)
{
    upm_prom_inc(in->restarts, 1);
    upm_log_info(MOD, "dropping uncommitted work, rewinding to the committed offsets | why=%s",
                 why);
    /* Its inserts read the blocks; their end is not committed (the cut
     * stays recorded and is finished by whoever starts the members). */
    if (in->fl.active && in->fl.threaded)
        pthread_join(in->fl.thread, NULL);
    in->fl.active = false;
    for (size_t p = 0; p < in->nranges; p++)
        in->live[p] = false;
    in->open = (struct ing_totals){0};
    in->rebalances_seen = upm_kafka_consumer_rebalances(in->consumer);
    int64_t backoff = 100;
    for (;;) {
        int retriable = 0;
        if (upm_kafka_consumer_rewind(in->consumer, 10000, &retriable) == 0 || !retriable ||
            *in->stop)
            break;
        backoff_sleep(in, &backoff);
    }
    return STEP_RESTART;
}

/* A backlog is what is left to read, not what one poll returned: the poll
 * is also bounded by librdkafka's prefetch (queued.max.messages.kbytes,
 * 16 MiB here), which holds fewer than poll_max messages of ~850 B, so a
 * full poll never happened while catching up and every range was cut by age
 * (measured: 9k-message ranges, 13x merge write amplification). The lag
 * (cached high watermark - position, no round trip) still says "behind"
 * while the prefetch is full. The threshold is a whole range's rows: a
 * lower one (poll_max) also fired on a live stream that fell a few seconds
 * behind and, by holding back the age cuts, doubled its p50 latency. */
static bool backlogged(struct ingest *in, int polled)
{
    if (polled >= in->cfg->poll_max)
        return true;
    int64_t lag = upm_kafka_consumer_lag(in->consumer);
    return lag >= in->cfg->batch_rows;
}

static const struct ing_limits *limits(struct ingest *in)
{
    return in->backlog ? &in->lim_backlog : &in->lim;
}

/* Cut the open group when its limits say so. An age cut waits for the
 * group in flight to finish (the loop reads on meanwhile); a size cut waits
 * for it here, which bounds memory to two groups. */
static enum step cut_if_due(struct ingest *in, int64_t now)
{
    if (finish_group(in, false) != STEP_OK)
        return restart(in, "storing a group failed");
    enum ing_cut cut = ing_group_cut(&in->open, limits(in), now);
    if (cut == ING_CUT_NONE || (cut == ING_CUT_AGE && in->fl.active))
        return STEP_OK;
    if (start_group(in, cut, false) != STEP_OK)
        return restart(in, "storing a group failed");
    return STEP_OK;
}

static enum step process(struct ingest *in, const struct upm_kafka_message *m)
{
    struct ing_range *r = range_for(in, m->partition, m->offset);
    if (!r)
        return restart(in, "partition could not be started");
    if (m->offset < r->start)
        return STEP_OK; /* below the committed offset: already stored */

    struct upm_event ev;
    struct upm_event_error err;
    bool valid = parse_message(in, m, &ev, &err);
    int64_t now = upm_clock_mono_ns();
    upm_prom_inc(in->consumed, 1);

    if (r->nmsgs == 0)
        r->first_ns = now;
    long added = ing_range_add(r, valid ? &ev : NULL, m->offset);
    upm_event_clear(&ev);
    if (added < 0)
        return restart(in, "offsets went backwards");
    if (in->open.msgs++ == 0)
        in->open.first_ns = now;
    in->open.rows += valid;
    in->open.bytes += (size_t)added;
    if (!valid) {
        upm_prom_inc(
            upm_prom_series_get(in->rejected, (const char *[]){upm_event_reason_name(err.reason)}),
            1);
        produce_dlq(in, m, &err);
    }
    return cut_if_due(in, now);
}

static enum step sweep(struct ingest *in, bool final)
{
    if (!final)
        return cut_if_due(in, upm_clock_mono_ns());
    if (finish_group(in, true) != STEP_OK)
        return restart(in, "final flush failed");
    if (in->open.msgs > 0 && start_group(in, ING_CUT_FINAL, true) != STEP_OK)
        return restart(in, "final flush failed");
    return STEP_OK;
}

/* ---- lifecycle -------------------------------------------------------------- */

/* "a|b|c" → a list of URLs (owned by the caller: upm_free_list). */
static size_t split_urls(const char *spec, char ***out)
{
    size_t n = 1;
    for (const char *p = spec; *p; p++)
        n += *p == '|';
    char **urls = upm_calloc(n, sizeof(*urls));
    size_t k = 0;
    const char *p = spec;
    for (;;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        while (len && (*p == ' ' || *p == '\t'))
            p++, len--;
        while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        if (len)
            urls[k++] = upm_strndup(p, len);
        if (!bar)
            break;
        p = bar + 1;
    }
    *out = urls;
    return k;
}

static int check_topology(struct ingest *in, const struct upm_ch_config *ccfg, char *errstr,
                          size_t errstr_size)
{
    const char *cluster = ccfg->cluster && *ccfg->cluster ? ccfg->cluster : "upmon";
    for (const char *p = cluster; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-')) {
            snprintf(errstr, errstr_size, "clickhouse.cluster: unexpected character in '%s'",
                     cluster);
            return -1;
        }
    }
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT count(DISTINCT shard_num) FROM system.clusters WHERE cluster = '%s'", cluster);
    struct upm_buf out;
    struct upm_ch_error err;
    upm_buf_init(&out, 4096);
    int rc = -1;
    /* On Kubernetes nothing orders the start of ingest and ClickHouse: wait for it
     * (not ready, saying why) rather than exit into a crash loop whose back-off outlasts
     * ClickHouse's own start. Only a refusal that no retry can change is fatal. */
    int64_t backoff = 500;
    while (upm_ch_query(in->ch[0], sql, &out, &err) != 0) {
        if (!err.retriable || *in->stop) {
            snprintf(errstr, errstr_size, "ingest: reading system.clusters on shard 0: %s",
                     err.message);
            goto out;
        }
        upm_httpd_set_ready(in->httpd, false, "waiting for ClickHouse");
        upm_log_warn(MOD, "waiting for ClickHouse before starting | shard=0 error=\"%s\"",
                     err.message);
        backoff_sleep(in, &backoff);
        upm_buf_reset(&out);
    }
    if (!out.data)
        (void)upm_buf_puts(&out, "");
    while (out.len > 0 && (out.data[out.len - 1] == '\n' || out.data[out.len - 1] == ' '))
        out.data[--out.len] = '\0';
    char *endp;
    unsigned long long n = strtoull(out.data, &endp, 10);
    if (endp == out.data || n != in->nshards) {
        snprintf(errstr, errstr_size,
                 "ingest.shards: %" PRIu32 " shards configured, cluster '%s' has %s", in->nshards,
                 cluster, out.data);
        goto out;
    }
    rc = 0;
out:
    upm_buf_free(&out);
    return rc;
}

static void register_metrics(struct ingest *in)
{
    struct upm_prom_registry *reg = in->reg;
    in->topo_switches = upm_prom_series_get(
        upm_prom_counter(reg, "upmon_ingest_topology_switches_total",
                         "Write-topology changes applied (ingest.topology_resource).", 0, NULL),
        NULL);
    in->topo_shards = upm_prom_series_get(
        upm_prom_gauge(reg, "upmon_ingest_shards", "Shards ingest writes to now.", 0, NULL), NULL);
    static const double rows_b[] = {1, 10, 100, 1000, 10000, 100000, 1000000};
    static const double bytes_b[] = {1024, 16384, 131072, 1048576, 8388608, 67108864};
    static const double sec_b[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
    in->consumed = upm_prom_series_get(
        upm_prom_counter(reg, "upmon_ingest_consumed_total", "Messages consumed.", 0, NULL), NULL);
    in->rejected = upm_prom_counter(reg, "upmon_ingest_rejected_total",
                                    "Messages rejected, by reason.", 1, (const char *[]){"reason"});
    in->inserted = upm_prom_counter(reg, "upmon_ingest_inserted_total",
                                    "Rows acknowledged by ClickHouse, by shard (retries of a "
                                    "deduplicated block count again).",
                                    1, (const char *[]){"shard"});
    in->insert_failures =
        upm_prom_counter(reg, "upmon_ingest_insert_failures_total",
                         "Failed insert attempts (after the client's own retries), by shard.", 1,
                         (const char *[]){"shard"});
    in->batches = upm_prom_counter(reg, "upmon_ingest_batches_total",
                                   "Groups stored, by what cut them.", 1, (const char *[]){"cut"});
    in->dlq_produced = upm_prom_series_get(
        upm_prom_counter(reg, "upmon_ingest_dlq_produced_total",
                         "Rejected messages delivered to the DLQ topic.", 0, NULL),
        NULL);
    in->dlq_failures = upm_prom_series_get(
        upm_prom_counter(reg, "upmon_ingest_dlq_failures_total",
                         "Rejected messages whose DLQ delivery failed (their range is redone).", 0,
                         NULL),
        NULL);
    in->restarts = upm_prom_series_get(
        upm_prom_counter(reg, "upmon_ingest_restarts_total",
                         "Times uncommitted work was dropped and re-read from the committed "
                         "offsets (rebalance, failed commit, shutdown deadline).",
                         0, NULL),
        NULL);
    /* Nothing is consumed while a store is retried, so the lag grows: this
     * tells a stalled store apart from an ingest that is merely slow. */
    in->backpressure = upm_prom_series_get(
        upm_prom_gauge(reg, "upmon_ingest_backpressure",
                       "1 while a block insert or an offset commit is retried after a failure, "
                       "0 once it succeeded.",
                       0, NULL),
        NULL);
    in->batch_rows = upm_prom_series_get(
        upm_prom_histogram(reg, "upmon_ingest_batch_rows", "Valid rows per stored group.",
                           sizeof(rows_b) / sizeof(rows_b[0]), rows_b, 0, NULL),
        NULL);
    in->batch_bytes = upm_prom_series_get(
        upm_prom_histogram(reg, "upmon_ingest_batch_bytes", "RowBinary bytes per stored group.",
                           sizeof(bytes_b) / sizeof(bytes_b[0]), bytes_b, 0, NULL),
        NULL);
    in->insert_seconds =
        upm_prom_series_get(upm_prom_histogram(reg, "upmon_ingest_insert_seconds",
                                               "Duration of a successful block insert.",
                                               sizeof(sec_b) / sizeof(sec_b[0]), sec_b, 0, NULL),
                            NULL);
    in->e2s_seconds = upm_prom_series_get(
        upm_prom_histogram(reg, "upmon_ingest_event_to_stored_seconds",
                           "Insert acknowledgement time minus the event's ts_ns.",
                           sizeof(sec_b) / sizeof(sec_b[0]), sec_b, 0, NULL),
        NULL);
}

/* Free the per-shard clients and blocks. */
static void free_shards(struct ingest *in)
{
    for (uint32_t s = 0; in->ch && s < in->nshards; s++)
        upm_ch_client_destroy(in->ch[s]);
    free(in->ch);
    for (uint32_t s = 0; in->blocks && s < in->nshards; s++)
        upm_buf_free(&in->blocks[s]);
    free(in->blocks);
    free(in->block_rows);
    in->ch = NULL;
    in->blocks = NULL;
    in->block_rows = NULL;
    in->nshards = 0;
}

/* One client (failing over between the shard's replicas) and one block
 * buffer per shard. */
static int make_shards(struct ingest *in, const struct upm_strlist *shards, char *errstr,
                       size_t errstr_size)
{
    in->nshards = (uint32_t)shards->count;
    in->ch = upm_calloc(in->nshards, sizeof(*in->ch));
    in->blocks = upm_calloc(in->nshards, sizeof(*in->blocks));
    in->block_rows = upm_calloc(in->nshards, sizeof(*in->block_rows));
    for (uint32_t s = 0; s < in->nshards; s++)
        upm_buf_init(&in->blocks[s], 0);
    for (uint32_t s = 0; s < in->nshards; s++) {
        struct upm_ch_config c = *in->ccfg;
        c.urls.count = split_urls(shards->items[s], &c.urls.items);
        char sub[256];
        in->ch[s] = upm_ch_client_create(&c, in->reg, sub, sizeof(sub));
        upm_strlist_free(&c.urls);
        if (!in->ch[s]) {
            snprintf(errstr, errstr_size, "ingest.shards[%" PRIu32 "]: %s", s, sub);
            return -1;
        }
    }
    return 0;
}

/*
 * Move to a new write topology at a group boundary: the group in flight is
 * finished and what was read so far is cut and stored under the old
 * topology (their rows were routed to its shards), then the clients, blocks
 * and ranges are rebuilt for the new shard count. On failure the old
 * topology stays and the switch is tried again after the next poll.
 */
static enum step switch_topology(struct ingest *in, const struct upm_strlist *shards)
{
    char err[512];
    uint32_t old = in->nshards;
    struct upm_ch_client **old_ch = in->ch;
    struct upm_buf *old_blocks = in->blocks;
    size_t *old_rows = in->block_rows;

    if (shards->count == 0 || shards->count > 1024)
        return STEP_OK;
    if (finish_group(in, true) != STEP_OK)
        return restart(in, "topology switch: the group in flight failed");
    if (in->open.msgs > 0 && start_group(in, ING_CUT_TOPOLOGY, true) != STEP_OK)
        return restart(in, "topology switch: storing the open group failed");
    in->ch = NULL;
    in->blocks = NULL;
    in->block_rows = NULL;
    if (make_shards(in, shards, err, sizeof(err)) != 0) {
        upm_log_error(MOD, "topology switch failed, keeping the old one | error=\"%s\"", err);
        free_shards(in);
        in->ch = old_ch;
        in->blocks = old_blocks;
        in->block_rows = old_rows;
        in->nshards = old;
        in->topo_seen = 0; /* take it again */
        return STEP_OK;
    }
    for (size_t p = 0; p < in->nranges; p++) {
        if (!in->ranges[p].blocks)
            continue;
        int64_t start = in->ranges[p].start;
        ing_range_free(&in->ranges[p]);
        ing_range_free(&in->flushing[p]);
        ing_range_init(&in->ranges[p], (int32_t)p, in->nshards, start);
        ing_range_init(&in->flushing[p], (int32_t)p, in->nshards, start);
    }
    for (uint32_t s = 0; s < old; s++) {
        upm_ch_client_destroy(old_ch[s]);
        upm_buf_free(&old_blocks[s]);
    }
    free(old_ch);
    free(old_blocks);
    free(old_rows);
    upm_prom_inc(in->topo_switches, 1);
    upm_prom_set(in->topo_shards, (double)in->nshards);
    upm_log_info(MOD, "write topology switched | shards=%" PRIu32 " was=%" PRIu32, in->nshards,
                 old);
    return STEP_OK;
}

void ingest_follow_topology(struct ingest *in, struct ing_topology *topo, uint64_t seen)
{
    in->topo = topo;
    in->topo_seen = seen;
}

struct ingest *ingest_create(const struct ing_config *icfg, const struct upm_kafka_config *kcfg,
                             const struct upm_ch_config *ccfg, struct upm_prom_registry *reg,
                             struct upm_httpd *httpd, volatile sig_atomic_t *stop, char *errstr,
                             size_t errstr_size)
{
    struct ingest *in = upm_calloc(1, sizeof(*in));
    in->cfg = icfg;
    in->kcfg = kcfg;
    in->reg = reg;
    in->httpd = httpd;
    in->stop = stop;
    in->lim = (struct ing_limits){(size_t)icfg->batch_rows, (size_t)icfg->batch_bytes,
                                  icfg->batch_age_ms * UPM_NS_PER_MS};
    in->lim_backlog = in->lim;
    in->lim_backlog.max_age_ns = INT64_MAX;
    in->evopts.cdn_hosts = (const char *const *)icfg->cdn_hosts.items;
    in->evopts.n_cdn_hosts = icfg->cdn_hosts.count;
    register_metrics(in);

    if (icfg->shards.count == 0 || icfg->shards.count > 1024) {
        snprintf(errstr, errstr_size,
                 "ingest.shards: between 1 and 1024 shards needed (or set "
                 "ingest.topology_resource to follow a ClickHouseCluster)");
        goto fail;
    }
    if (!kcfg->dlq_topic || !*kcfg->dlq_topic || !kcfg->topic || !*kcfg->topic) {
        snprintf(errstr, errstr_size, "kafka.topic and kafka.dlq_topic must be set");
        goto fail;
    }
    in->ccfg = ccfg;
    if (make_shards(in, &icfg->shards, errstr, errstr_size) != 0)
        goto fail;
    /* A followed topology is the operator's to check: during a drain the
     * cluster still lists the departing shards that ingest no longer writes. */
    if (icfg->check_topology && !icfg->topology_resource[0] &&
        check_topology(in, ccfg, errstr, errstr_size) != 0)
        goto fail;
    in->dlq = upm_kafka_producer_create(kcfg, reg, errstr, errstr_size);
    if (!in->dlq)
        goto fail;
    upm_kafka_producer_set_delivery_cb(in->dlq, on_dlq_delivery, in);
    /* librdkafka prefetches up to 64 MiB by default; the batches already
     * bound what ingest holds, so keep the prefetch small. Listed first so
     * that kafka.properties can still override it. */
    static char prefetch[] = "queued.max.messages.kbytes=16384";
    struct upm_kafka_config ccopy = *kcfg;
    ccopy.properties.count = kcfg->properties.count + 1;
    ccopy.properties.items = upm_calloc(ccopy.properties.count, sizeof(char *));
    ccopy.properties.items[0] = prefetch;
    for (size_t i = 0; i < kcfg->properties.count; i++)
        ccopy.properties.items[i + 1] = kcfg->properties.items[i];
    in->consumer = upm_kafka_consumer_create(&ccopy, reg, NULL, 0, errstr, errstr_size);
    free(ccopy.properties.items);
    if (!in->consumer)
        goto fail;
    in->rebalances_seen = upm_kafka_consumer_rebalances(in->consumer);
    return in;
fail:
    ingest_destroy(in);
    return NULL;
}

int ingest_run(struct ingest *in)
{
    int ret = 0;
    upm_httpd_set_ready(in->httpd, true, NULL);
    while (!*in->stop) {
        struct upm_kafka_batch *b = NULL;
        int retriable = 0;
        /* A group in flight is finished between polls: poll briefly then. */
        int n = upm_kafka_consumer_poll_batch(in->consumer, (size_t)in->cfg->poll_max,
                                              in->fl.active ? 5 : 100, &b, &retriable);
        if (n < 0) {
            char why[256] = "";
            upm_kafka_consumer_fatal(in->consumer, why, sizeof(why));
            upm_log_error(MOD, "consumer failed for good | error=\"%s\"", why);
            ret = -1;
            break;
        }
        if (upm_kafka_consumer_rebalances(in->consumer) != in->rebalances_seen) {
            /* The batch may straddle the assignment change. */
            upm_kafka_batch_destroy(b);
            restart(in, "rebalance");
            continue;
        }
        in->backlog = backlogged(in, n);
        for (int i = 0; i < n; i++) {
            if (process(in, upm_kafka_batch_message(b, (size_t)i)) != STEP_OK)
                break;
        }
        upm_kafka_batch_destroy(b);
        (void)upm_kafka_producer_poll(in->dlq, 0);
        sweep(in, false);
        if (in->topo) {
            struct upm_strlist shards = {0};
            if (ing_topology_take(in->topo, &in->topo_seen, &shards))
                switch_topology(in, &shards);
            upm_strlist_free(&shards);
        }
    }
    if (ret == 0) {
        upm_log_info(MOD, "stopping: storing what was consumed");
        giving_up(in); /* starts the shutdown budget */
        if (upm_kafka_consumer_rebalances(in->consumer) == in->rebalances_seen)
            sweep(in, true);
    }
    if (in->fl.active && in->fl.threaded)
        pthread_join(in->fl.thread,
                     NULL); /* its end stays uncommitted: finished by the next owner */
    in->fl.active = false;
    (void)upm_kafka_producer_flush(in->dlq, 2000);
    upm_kafka_consumer_close(in->consumer);
    return ret;
}

void ingest_destroy(struct ingest *in)
{
    if (!in)
        return;
    upm_kafka_consumer_destroy(in->consumer);
    upm_kafka_producer_destroy(in->dlq);
    for (size_t p = 0; p < in->nranges; p++)
        ing_range_free(&in->ranges[p]);
    for (size_t p = 0; p < in->nranges; p++)
        ing_range_free(&in->flushing[p]);
    free(in->ranges);
    free(in->flushing);
    free(in->live);
    free_shards(in);
    free(in);
}
