/*
 * drain — move a departing shard's rows, part by part; see drain.h.
 */
#include "drain.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "upmon/alloc.h"
#include "upmon/buf.h"
#include "upmon/log.h"
#include "render.h"

void op_time_format(int64_t epoch_s, char *out, size_t size)
{
    time_t t = (time_t)epoch_s;
    struct tm tm;

    gmtime_r(&t, &tm);
    if (strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0 && size > 0)
        out[0] = '\0';
}

int64_t op_time_parse(const char *s)
{
    struct tm tm;
    char *end;

    memset(&tm, 0, sizeof(tm));
    if (!s || !*s)
        return -1;
    end = strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (!end || *end)
        return -1;
    return (int64_t)timegm(&tm);
}

int op_partition_where(const char *id, char *out, size_t size)
{
    size_t n = strlen(id);

    for (size_t i = 0; i < n; i++)
        if (id[i] < '0' || id[i] > '9')
            return -1;
    if (n == 8) {
        snprintf(out, size, "event_date = toDate('%.4s-%.2s-%.2s')", id, id + 4, id + 6);
        return 0;
    }
    if (n == 6) {
        snprintf(out, size, "toYYYYMM(day) = %s", id);
        return 0;
    }
    return -1;
}

/* Identifiers from system tables are pasted into SQL: allow only names. */
static int ident_ok(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_'))
            return 0;
    return 1;
}

static int part_name_ok(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_' || *s == '-'))
            return 0;
    return 1;
}

/* The first replica of shard s that answers, or -1. */
static int live_replica(const struct op_ch *ch, int shard)
{
    char err[256];

    for (int r = 0; r < ch->c->spec.replicas; r++)
        if (op_ch_run(ch, shard, r, "SELECT 1", NULL, err, sizeof(err)) == 0)
            return r;
    return -1;
}

/* Next (table, partition) with rows on a departing shard → d. 1 found, 0 none, -1 error. */
static int next_partition(const struct op_ch *ch, struct chc_drain *d, int64_t chunk_rows,
                          char *msg, size_t msg_size)
{
    char sql[512];
    struct upm_buf out;

    (void)chunk_rows;
    upm_buf_init(&out, 0);
    for (int s = d->from; s <= d->to; s++) {
        int r = live_replica(ch, s);
        char table[64], pid[32];
        unsigned long long rows;

        if (r < 0) {
            snprintf(msg, msg_size, "shard %d: no replica answers; the drain waits for one", s);
            upm_buf_free(&out);
            return -1;
        }
        snprintf(sql, sizeof(sql),
                 "SELECT table, partition_id, sum(rows) FROM system.parts WHERE database = '%s' "
                 "AND active AND endsWith(table, '_local') GROUP BY table, partition_id "
                 "HAVING sum(rows) > 0 ORDER BY table, partition_id LIMIT 1",
                 ch->c->spec.database);
        if (op_ch_run(ch, s, r, sql, &out, msg, msg_size) != 0) {
            upm_buf_free(&out);
            return -1;
        }
        if (out.len == 0)
            continue;
        if (sscanf(out.data, "%63[^\t]\t%31[^\t]\t%llu", table, pid, &rows) != 3 ||
            !ident_ok(table) || !ident_ok(pid)) {
            snprintf(msg, msg_size, "shard %d: unexpected system.parts row: %.100s", s, out.data);
            upm_buf_free(&out);
            return -1;
        }
        snprintf(d->table, sizeof(d->table), "%s", table);
        snprintf(d->partition, sizeof(d->partition), "%s", pid);
        d->source = s;
        d->part = 0;
        d->sub = 0;
        d->subs = 0;
        d->empty_since[0] = '\0';
        snprintf(msg, msg_size, "shard %d: moving %s partition %s (%llu rows)", s, table, pid,
                 rows);
        upm_buf_free(&out);
        return 1;
    }
    upm_buf_free(&out);
    return 0;
}

struct columns {
    struct upm_buf all; /* "a, b, c" */
    struct upm_buf key; /* the non-aggregate columns */
    int has_attempt;
};

static int load_columns(const struct op_ch *ch, int shard, int replica, const char *table,
                        struct columns *cols, char *msg, size_t msg_size)
{
    char sql[512], *line, *save = NULL;
    struct upm_buf out;

    upm_buf_init(&out, 0);
    snprintf(sql, sizeof(sql),
             "SELECT name, type FROM system.columns WHERE database = '%s' AND table = '%s' "
             "AND default_kind NOT IN ('MATERIALIZED', 'ALIAS')",
             ch->c->spec.database, table);
    if (op_ch_run(ch, shard, replica, sql, &out, msg, msg_size) != 0) {
        upm_buf_free(&out);
        return -1;
    }
    for (line = strtok_r(out.data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *tab = strchr(line, '\t');

        if (!tab)
            continue;
        *tab = '\0';
        if (!ident_ok(line)) {
            snprintf(msg, msg_size, "%s: column name %.64s not supported by the drain", table,
                     line);
            upm_buf_free(&out);
            return -1;
        }
        upm_buf_printf(&cols->all, "%s%s", cols->all.len ? ", " : "", line);
        if (strncmp(tab + 1, "AggregateFunction", 17) != 0)
            upm_buf_printf(&cols->key, "%s%s", cols->key.len ? ", " : "", line);
        if (strcmp(line, "attempt_id") == 0)
            cols->has_attempt = 1;
    }
    upm_buf_free(&out);
    if (cols->all.len == 0 || cols->key.len == 0) {
        snprintf(msg, msg_size, "%s: no columns found", table);
        return -1;
    }
    return 0;
}

static uint32_t fnv32(const char *a, const char *b)
{
    uint32_t h = 2166136261u;

    for (; *a; a++)
        h = (h ^ (unsigned char)*a) * 16777619u;
    for (; *b; b++)
        h = (h ^ (unsigned char)*b) * 16777619u;
    return h;
}

/* The rows of target shard t (1-based) among `staying`, in sub-chunk d->sub. */
static void route(struct upm_buf *sql, const struct columns *cols, int staying, int t,
                  const struct chc_drain *d)
{
    if (cols->has_attempt)
        upm_buf_printf(sql, "sipHash64(attempt_id) %% %d = %d", staying, t - 1);
    else
        upm_buf_puts(sql, "1");
    if (d->subs > 1)
        upm_buf_printf(sql, " AND cityHash64(%s) %% %d = %d", cols->key.data, d->subs, d->sub);
}

/* Move sub-chunk d->sub of part `part` (rows rows) to the staying shards. */
static int move_unit(const struct op_ch *ch, struct chc_drain *d, int replica, const char *part,
                     const struct columns *cols, int64_t *moved, char *msg, size_t msg_size)
{
    const int staying = d->from - 1;
    const char *db = ch->c->spec.database;
    struct upm_buf sql, out;
    char where[128], table[160];
    int rc = 0;

    if (op_partition_where(d->partition, where, sizeof(where)) != 0) {
        snprintf(msg, msg_size, "%s: partition %s is not a day or a month", d->table, d->partition);
        return -1;
    }
    snprintf(table, sizeof(table), "%s.%s", db, d->table);
    upm_buf_init(&sql, 0);
    upm_buf_init(&out, 0);
    for (int t = 1; t <= staying && rc == 0; t++) {
        struct upm_ch_client *cl;
        struct upm_ch_error err;
        unsigned long long n = 0;

        if (!cols->has_attempt && (int)(fnv32(d->table, d->partition) % (uint32_t)staying) != t - 1)
            continue;
        upm_buf_reset(&sql);
        upm_buf_printf(&sql, "SELECT %s FROM %s WHERE _part = '%s' AND %s AND ", cols->all.data,
                       table, part, where);
        route(&sql, cols, staying, t, d);
        upm_buf_puts(&sql, " SETTINGS max_threads = 1 FORMAT RowBinary");
        if (op_ch_run(ch, d->source, replica, sql.data, &out, msg, msg_size) != 0) {
            rc = -1;
            break;
        }
        if (out.len == 0)
            continue;
        cl = op_ch_client(ch, t, -1, msg, msg_size);
        if (!cl) {
            rc = -1;
            break;
        }
        if (upm_ch_insert(cl, table, cols->all.data, "RowBinary", out.data, out.len, &err) != 0) {
            snprintf(msg, msg_size, "insert into shard %d %s: %s", t, d->table, err.message);
            rc = -1;
        }
        upm_ch_client_destroy(cl);
        if (rc == 0) {
            /* The count for the figures only; the bytes above are what moved. */
            upm_buf_reset(&sql);
            upm_buf_printf(&sql, "SELECT count() FROM %s WHERE _part = '%s' AND %s AND ", table,
                           part, where);
            route(&sql, cols, staying, t, d);
            if (op_ch_run(ch, d->source, replica, sql.data, &out, msg, msg_size) == 0 &&
                out.len > 0)
                n = strtoull(out.data, NULL, 10);
            *moved += (int64_t)n;
        }
    }
    upm_buf_free(&sql);
    upm_buf_free(&out);
    return rc;
}

enum op_drain_result op_drain_step(const struct op_ch *ch, struct chc_drain *d, int64_t now_s,
                                   int64_t grace_ms, int64_t chunk_rows, int64_t *wait_ms,
                                   char *msg, size_t msg_size)
{
    int64_t started = op_time_parse(d->started_at);
    const char *db = ch->c->spec.database;
    struct columns cols;
    struct upm_buf out;
    char sql[768], part[128], err[256];
    unsigned long long rows = 0;
    int replica, found;
    enum op_drain_result res = OP_DRAIN_PROGRESS;

    *wait_ms = 0;
    msg[0] = '\0';
    if (d->from < 2 || d->to < d->from) {
        snprintf(msg, msg_size, "drain of shards %d..%d: nothing can stay", d->from, d->to);
        return OP_DRAIN_ERROR;
    }
    if (started < 0) {
        snprintf(msg, msg_size, "drain has no start time");
        return OP_DRAIN_ERROR;
    }
    if ((now_s - started) * 1000 < grace_ms) {
        *wait_ms = grace_ms - (now_s - started) * 1000;
        snprintf(msg, msg_size, "waiting %llds for ingest to leave shards %d..%d",
                 (long long)(*wait_ms / 1000), d->from, d->to);
        return OP_DRAIN_WAIT;
    }
    /* Every call: a server restarted mid-drain starts with merges on. */
    for (int s = d->from; s <= d->to; s++)
        for (int r = 0; r < ch->c->spec.replicas; r++)
            if (op_ch_run(ch, s, r, "SYSTEM STOP MERGES", NULL, err, sizeof(err)) != 0)
                upm_log_warn("drain", "stop merges failed | shard=%d replica=%d error=\"%s\"", s, r,
                             err);
    if (d->table[0] == '\0') {
        found = next_partition(ch, d, chunk_rows, msg, msg_size);
        if (found < 0)
            return OP_DRAIN_ERROR;
        if (found == 1)
            return OP_DRAIN_PROGRESS;
        if (d->empty_since[0] == '\0') {
            op_time_format(now_s, d->empty_since, sizeof(d->empty_since));
            snprintf(msg, msg_size,
                     "shards %d..%d are empty; checking again after the grace for late rows",
                     d->from, d->to);
            return OP_DRAIN_PROGRESS;
        }
        if ((now_s - op_time_parse(d->empty_since)) * 1000 < grace_ms) {
            *wait_ms = grace_ms - (now_s - op_time_parse(d->empty_since)) * 1000;
            snprintf(msg, msg_size, "shards %d..%d empty; quiet period", d->from, d->to);
            return OP_DRAIN_WAIT;
        }
        snprintf(msg, msg_size, "shards %d..%d drained", d->from, d->to);
        return OP_DRAIN_DONE;
    }

    replica = live_replica(ch, d->source);
    if (replica < 0) {
        snprintf(msg, msg_size, "shard %d: no replica answers; the drain waits for one", d->source);
        return OP_DRAIN_ERROR;
    }
    memset(&cols, 0, sizeof(cols));
    upm_buf_init(&cols.all, 0);
    upm_buf_init(&cols.key, 0);
    upm_buf_init(&out, 0);
    {
        /* A replica may lag: the one read must hold every part the shard has.
         * Not SYSTEM SYNC REPLICA: it also waits for the merges in the queue,
         * which STOP MERGES holds for ever. Fetches are what matter (a merge
         * changes no row), and they run with merges stopped. */
        snprintf(sql, sizeof(sql),
                 "SELECT count() FROM system.replication_queue WHERE database = '%s' AND "
                 "table = '%s' AND type = 'GET_PART'",
                 db, d->table);
        if (op_ch_run(ch, d->source, replica, sql, &out, msg, msg_size) != 0) {
            res = OP_DRAIN_ERROR;
            goto out;
        }
        if (out.len > 0 && strtoull(out.data, NULL, 10) > 0) {
            snprintf(msg, msg_size, "shard %d replica %d: fetching %llu part(s) of %s first",
                     d->source, replica, strtoull(out.data, NULL, 10), d->table);
            *wait_ms = 1000;
            res = OP_DRAIN_WAIT;
            goto out;
        }
    }
    /* The part at index d->part in block order; merges are stopped, so the
     * order of the parts already there does not change, and new parts sort
     * after them. */
    snprintf(sql, sizeof(sql),
             "SELECT name, rows FROM system.parts WHERE database = '%s' AND table = '%s' AND "
             "partition_id = '%s' AND active ORDER BY min_block_number, name LIMIT 1 OFFSET %d",
             db, d->table, d->partition, d->part);
    if (op_ch_run(ch, d->source, replica, sql, &out, msg, msg_size) != 0) {
        res = OP_DRAIN_ERROR;
        goto out;
    }
    if (out.len == 0) {
        /* Every part moved: drop the partition on the departing shard (its
         * replication log carries it to the other replicas). */
        snprintf(sql, sizeof(sql), "ALTER TABLE %s.%s DROP PARTITION ID '%s'", db, d->table,
                 d->partition);
        if (op_ch_run(ch, d->source, replica, sql, NULL, msg, msg_size) != 0) {
            res = OP_DRAIN_ERROR;
            goto out;
        }
        snprintf(msg, msg_size, "shard %d: %s partition %s moved (%d parts) and dropped", d->source,
                 d->table, d->partition, d->part);
        d->table[0] = '\0';
        d->partition[0] = '\0';
        d->part = d->sub = d->subs = 0;
        d->step++;
        goto out;
    }
    if (sscanf(out.data, "%127[^\t]\t%llu", part, &rows) != 2 || !part_name_ok(part)) {
        snprintf(msg, msg_size, "unexpected system.parts row: %.100s", out.data);
        res = OP_DRAIN_ERROR;
        goto out;
    }
    if (d->subs == 0) {
        int64_t per = chunk_rows > 0 ? chunk_rows : 100000;

        d->subs = (int)(((int64_t)rows + per - 1) / per);
        if (d->subs < 1)
            d->subs = 1;
        d->sub = 0;
    }
    if (load_columns(ch, d->source, replica, d->table, &cols, msg, msg_size) != 0 ||
        move_unit(ch, d, replica, part, &cols, &d->rows_moved, msg, msg_size) != 0) {
        res = OP_DRAIN_ERROR;
        goto out;
    }
    snprintf(msg, msg_size, "shard %d: %s partition %s part %s (%d/%d) moved", d->source, d->table,
             d->partition, part, d->sub + 1, d->subs);
    if (++d->sub >= d->subs) {
        d->sub = 0;
        d->subs = 0;
        d->part++;
    }
out:
    upm_buf_free(&cols.all);
    upm_buf_free(&cols.key);
    upm_buf_free(&out);
    return res;
}
