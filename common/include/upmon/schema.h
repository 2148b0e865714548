/*
 * schema — ClickHouse schema migrations and retention for every server of a
 * sharded, replicated cluster.
 *
 * Migrations are files named NNNN_name.sql (four digits, numbered 1, 2, 3 …
 * without gaps; name in [a-z0-9_]), each holding one or more statements
 * separated by ';'. They come either from a folder or from the copy embedded
 * into libupmon at build time (the generated upm_schema_embedded array), so a
 * binary carries its own schema. Statements are written with placeholders:
 *   {database}  the configured database      (substituted here)
 *   {cluster}   the configured cluster name  (substituted here)
 *   {shard}, {replica}  the server's own macros (left for the server)
 * Any other {lowercase} word is an error, so a typo fails at load time.
 *
 * Why per server and not ON CLUSTER: ON CLUSTER DDL goes through the
 * distributed DDL queue and waits for every host of the cluster, so one
 * replica down blocks every migration, and a server added later never sees
 * queries issued before it joined. Applying each (idempotent, IF NOT EXISTS)
 * statement to every server directly works with any subset up, lets the
 * operator bring a new shard up to date with the same call, and records what
 * each server has in its own `schema_migrations` table (plain MergeTree:
 * version, name, checksum, applied_at). The checksum is FNV-1a 64 of the
 * file's bytes before substitution; an applied migration whose file changed
 * is an error (write a new migration instead).
 *
 * Retention drops whole partitions (DROP PARTITION ID; TTL does not exist on
 * 18.16). DROP PARTITION on a Replicated table goes through the shard's
 * replication log, so it is issued once per shard, on the first replica that
 * answers; the others (including replicas that are down) apply it from the
 * log. The partitions to drop are the union of system.parts over every
 * reachable replica of the shard, so a part that only a lagging replica has
 * is not missed.
 *
 * Targets: a server is (shard, replica, url). upm_schema_discover asks each
 * URL for its `shard` and `replica` macros; upm_schema_parse_topology reads
 * "shard:replica=url" items. Every operation makes its own one-URL client per
 * target from a base clickhouse config (credentials, timeouts, retries, the
 * database and cluster names), with "system" as the session database so the
 * target database may not exist yet.
 *
 * Errors: 0 / -1, with a message in errstr. Operations over several servers
 * continue past a failing server, print one line per finding to `report`
 * (NULL = none) and return -1 at the end if any server failed; errstr then
 * names the first failure.
 *
 * Thread-safety: no shared state; separate calls may run in parallel on
 * different data. The retention and migration reports are not atomic across
 * servers (there is no cross-server transaction in ClickHouse).
 */
#ifndef UPMON_SCHEMA_H
#define UPMON_SCHEMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "upmon/clickhouse.h"
#include "upmon/config.h"

/* One migration file as text (borrowed). */
struct upm_schema_source {
    const char *filename; /* base name, e.g. "0001_events.sql" */
    const char *text;
    size_t len;
};

/* The sql/ folder as compiled into libupmon (generated at build time). */
extern const struct upm_schema_source upm_schema_embedded[];
extern const size_t upm_schema_embedded_count;

struct upm_schema_migration {
    unsigned version; /* 1, 2, … */
    char *name;       /* "0001_events" (file name without .sql); owned */
    char *sql;        /* the file's text, NUL-terminated; owned */
    size_t len;
    char checksum[17]; /* FNV-1a 64 of the text, 16 lower-case hex digits */
};

/* Ordered by version, versions 1..count. */
struct upm_schema_set {
    struct upm_schema_migration *items;
    size_t count;
};

/*
 * Build a set from sources in any order (copied). Checks every name
 * (NNNN_name.sql), rejects duplicate versions, gaps, a first version other
 * than 1, an empty set, and statements that do not split or substitute
 * (unterminated quotes or comments, unknown placeholders). NULL with errstr.
 * Free with upm_schema_set_destroy.
 */
struct upm_schema_set *upm_schema_set_from_sources(const struct upm_schema_source *src, size_t n,
                                                   char *errstr, size_t errstr_size);
/* Same from every *.sql file of dir (other files are ignored). */
struct upm_schema_set *upm_schema_set_from_dir(const char *dir, char *errstr, size_t errstr_size);
/* Same from upm_schema_embedded. */
struct upm_schema_set *upm_schema_set_embedded(char *errstr, size_t errstr_size);
/* NULL-safe. */
void upm_schema_set_destroy(struct upm_schema_set *set);

/* Pure helpers, exposed for tests and tools. */

/* "0007_x_y.sql" → version 7, name "0007_x_y" (copied into name, which must
 * hold name_size bytes). 0, or -1 for a bad name. */
int upm_schema_parse_filename(const char *filename, unsigned *version, char *name,
                              size_t name_size);
/* FNV-1a 64 of len bytes as 16 hex digits plus NUL into out. */
void upm_schema_checksum(const char *text, size_t len, char out[17]);
/* Replace {database} and {cluster}; keep {shard}/{replica}. Both names must
 * match [A-Za-z0-9_]+. Returns a malloc'd string (caller frees), or NULL with
 * errstr for an unknown placeholder or a bad name. */
char *upm_schema_substitute(const char *sql, const char *database, const char *cluster,
                            char *errstr, size_t errstr_size);
/* Split sql at ';' outside quotes ('…', "…", `…`) and comments (-- to the
 * end of the line, and block comments), trimming blanks and dropping
 * statements that are only comments. out must be zeroed; on success it holds
 * the statements (owned; free each item and items). 0, or -1 with errstr
 * (out left empty). */
int upm_schema_split(const char *sql, struct upm_strlist *out, char *errstr, size_t errstr_size);

/*
 * Retention selection. A partition id of 8 digits is a day (YYYYMMDD, the
 * raw and fine tables), 6 digits a month (YYYYMM, the daily rollup). It is
 * expired when its last day is before today - age_days (UTC days, today from
 * now_s), i.e. the cut keeps exactly age_days full days before today.
 * Returns 1 expired, 0 kept, -1 not a date partition (never dropped).
 */
int upm_schema_partition_expired(const char *partition_id, int64_t now_s, int64_t age_days);

/* One server of the cluster. */
struct upm_schema_target {
    char *shard;   /* the server's shard macro, e.g. "1"; owned */
    char *replica; /* the server's replica macro; owned */
    char *url;     /* http(s)://host:port; owned */
};
struct upm_schema_targets {
    struct upm_schema_target *items;
    size_t count;
};
/* "1:1=http://h:8123,1:2=http://h:8124" (items of a list). 0 / -1. out
 * must be zeroed; free with upm_schema_targets_free. */
int upm_schema_parse_topology(const struct upm_strlist *items, struct upm_schema_targets *out,
                              char *errstr, size_t errstr_size);
/* One target per base->urls entry, shard and replica read from the server's
 * system.macros. -1 if any URL does not answer or lacks the macros. */
int upm_schema_discover(const struct upm_ch_config *base, struct upm_schema_targets *out,
                        char *errstr, size_t errstr_size);
/* NULL-safe; leaves *t zeroed. */
void upm_schema_targets_free(struct upm_schema_targets *t);

/*
 * Apply every migration a server has not recorded, in order, on every
 * target: CREATE DATABASE IF NOT EXISTS, the schema_migrations table, then
 * each pending migration's statements and its record. A server whose record
 * disagrees with the set (changed checksum or name, or a version the set
 * lacks — a newer schema) is refused and left untouched. Database and
 * cluster come from base (NULL = "upmon").
 */
int upm_schema_apply(const struct upm_schema_set *set, const struct upm_ch_config *base,
                     const struct upm_schema_targets *targets, FILE *report, char *errstr,
                     size_t errstr_size);
/* Report applied / pending migrations per server. -1 if a server cannot be
 * read or disagrees with the set; pending migrations alone are not an
 * error. */
int upm_schema_status(const struct upm_schema_set *set, const struct upm_ch_config *base,
                      const struct upm_schema_targets *targets, FILE *report, char *errstr,
                      size_t errstr_size);
/* Like status, but also -1 unless every server has every migration with its
 * checksum, every table and view the migrations create exists, and the
 * cluster (base->cluster in system.clusters) lists no more servers than
 * targets holds (a forgotten replica fails verify). */
int upm_schema_verify(const struct upm_schema_set *set, const struct upm_ch_config *base,
                      const struct upm_schema_targets *targets, FILE *report, char *errstr,
                      size_t errstr_size);

/* Retention ages in days (each >= 1). */
struct upm_schema_retention {
    int64_t raw_days;   /* events_local */
    int64_t fine_days;  /* events_1s, events_1m, events_1m_company, attempts, attempt_events,
                          analyzer results (all _local) */
    int64_t daily_days; /* events_1d_company_local */
};

/* What drop_expired found; *dropped_out (may be NULL) gets one per partition. */
struct upm_schema_dropped {
    char shard[64];
    char table[64];
    char partition_id[16];
    uint64_t rows; /* the largest active row count seen on a replica */
};

/*
 * Drop the expired partitions of the retention tables of base's database on
 * every shard (see the top of this file for the replication reasoning), now
 * given by now_s (seconds since the epoch, UTC). dry_run lists without
 * dropping. Each finding is reported as
 *   "drop|would-drop shard=S table=T partition=P rows=N". When dropped_out is
 * not NULL it receives a malloc'd array (caller frees) and *ndropped its
 * length, also on -1 (what was done before the failure).
 */
int upm_schema_drop_expired(const struct upm_ch_config *base,
                            const struct upm_schema_targets *targets,
                            const struct upm_schema_retention *ret, int64_t now_s, bool dry_run,
                            FILE *report, struct upm_schema_dropped **dropped_out, size_t *ndropped,
                            char *errstr, size_t errstr_size);

#endif
