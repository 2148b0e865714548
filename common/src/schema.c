/* schema — migrations and retention over every server; see schema.h. */
#include "upmon/schema.h"
#include "upmon/errstr.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "upmon/alloc.h"
#include "upmon/buf.h"
#include "upmon/log.h"

#define MOD "schema"
/* Migration files are small; anything bigger is a mistake, not a schema. */
#define MAX_SQL_BYTES (1u << 20)
#define MAX_RESPONSE  (16u << 20)

static void report_line(FILE *report, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report_line(FILE *report, const char *fmt, ...)
{
    if (!report)
        return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(report, fmt, ap);
    va_end(ap);
    fputc('\n', report);
    fflush(report);
}

static bool is_ident(const char *s)
{
    if (!s || !*s)
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_')
            return false;
    return true;
}

/* ------------------------------------------------------------------------ */
/* Pure helpers                                                             */

int upm_schema_parse_filename(const char *filename, unsigned *version, char *name, size_t name_size)
{
    size_t len = strlen(filename);
    /* "NNNN_" + at least one character + ".sql" */
    if (len < 10 || strcmp(filename + len - 4, ".sql") != 0)
        return -1;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        if (!isdigit((unsigned char)filename[i]))
            return -1;
        v = v * 10 + (unsigned)(filename[i] - '0');
    }
    if (filename[4] != '_' || v == 0)
        return -1;
    for (size_t i = 5; i < len - 4; i++) {
        char c = filename[i];
        if (!(c >= 'a' && c <= 'z') && !(c >= '0' && c <= '9') && c != '_')
            return -1;
    }
    if (len - 4 + 1 > name_size)
        return -1;
    memcpy(name, filename, len - 4);
    name[len - 4] = '\0';
    *version = v;
    return 0;
}

void upm_schema_checksum(const char *text, size_t len, char out[17])
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)text[i];
        h *= 0x100000001b3ull;
    }
    snprintf(out, 17, "%016llx", (unsigned long long)h);
}

char *upm_schema_substitute(const char *sql, const char *database, const char *cluster,
                            char *errstr, size_t errstr_size)
{
    if (!is_ident(database) || !is_ident(cluster)) {
        upm_errstr_set(errstr, errstr_size, "database and cluster names must match [A-Za-z0-9_]+");
        return NULL;
    }
    struct upm_buf b;
    upm_buf_init(&b, 0);
    upm_buf_puts(&b, "");
    const char *p = sql;
    while (*p) {
        if (*p == '{') {
            const char *q = p + 1;
            while ((*q >= 'a' && *q <= 'z') || *q == '_')
                q++;
            if (*q == '}' && q > p + 1) {
                size_t n = (size_t)(q - p - 1);
                if (n == 8 && strncmp(p + 1, "database", 8) == 0) {
                    upm_buf_puts(&b, database);
                } else if (n == 7 && strncmp(p + 1, "cluster", 7) == 0) {
                    upm_buf_puts(&b, cluster);
                } else if ((n == 5 && strncmp(p + 1, "shard", 5) == 0) ||
                           (n == 7 && strncmp(p + 1, "replica", 7) == 0)) {
                    upm_buf_append(&b, p, n + 2); /* the server's own macros */
                } else {
                    upm_errstr_set(errstr, errstr_size, "unknown placeholder {%.*s}", (int)n,
                                   p + 1);
                    upm_buf_free(&b);
                    return NULL;
                }
                p = q + 1;
                continue;
            }
        }
        upm_buf_putc(&b, *p++);
    }
    return upm_buf_steal(&b, NULL);
}

/* Append the statement in [a, z) to out unless it is only blanks and
 * comments. */
static void push_statement(struct upm_strlist *out, const char *a, const char *z)
{
    bool content = false;
    const char *p = a;
    while (p < z) {
        if (p + 1 < z && p[0] == '-' && p[1] == '-') {
            while (p < z && *p != '\n')
                p++;
        } else if (p + 1 < z && p[0] == '/' && p[1] == '*') {
            p += 2;
            while (p + 1 < z && !(p[0] == '*' && p[1] == '/'))
                p++;
            p += 2;
        } else if (isspace((unsigned char)*p)) {
            p++;
        } else {
            content = true;
            break;
        }
    }
    if (!content)
        return;
    while (a < z && isspace((unsigned char)*a))
        a++;
    while (z > a && isspace((unsigned char)z[-1]))
        z--;
    upm_strlist_push(out, a, (size_t)(z - a));
}

int upm_schema_split(const char *sql, struct upm_strlist *out, char *errstr, size_t errstr_size)
{
    const char *start = sql, *p = sql;
    while (*p) {
        if (*p == '\'' || *p == '"' || *p == '`') {
            char quote = *p++;
            for (;;) {
                if (!*p) {
                    upm_errstr_set(errstr, errstr_size, "unterminated %c quote", quote);
                    goto fail;
                }
                if (*p == '\\' && p[1]) {
                    p += 2;
                } else if (*p == quote && p[1] == quote) {
                    p += 2; /* doubled quote inside the literal */
                } else if (*p == quote) {
                    p++;
                    break;
                } else {
                    p++;
                }
            }
        } else if (p[0] == '-' && p[1] == '-') {
            while (*p && *p != '\n')
                p++;
        } else if (p[0] == '/' && p[1] == '*') {
            const char *end = strstr(p + 2, "*/");
            if (!end) {
                upm_errstr_set(errstr, errstr_size, "unterminated block comment");
                goto fail;
            }
            p = end + 2;
        } else if (*p == ';') {
            push_statement(out, start, p);
            start = ++p;
        } else {
            p++;
        }
    }
    push_statement(out, start, p);
    return 0;
fail:
    upm_strlist_free(out);
    return -1;
}

static bool is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int64_t y, int64_t m)
{
    static const int d[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : d[m - 1];
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
 * days_from_civil). */
static int64_t days_from_civil(int64_t y, int64_t m, int64_t d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int64_t digits(const char *s, int n)
{
    int64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v * 10 + (s[i] - '0');
    return v;
}

int upm_schema_partition_expired(const char *partition_id, int64_t now_s, int64_t age_days)
{
    size_t len = strlen(partition_id);
    if (len != 8 && len != 6)
        return -1;
    for (size_t i = 0; i < len; i++)
        if (!isdigit((unsigned char)partition_id[i]))
            return -1;
    int64_t y = digits(partition_id, 4), m = digits(partition_id + 4, 2);
    if (y < 1970 || m < 1 || m > 12)
        return -1;
    int64_t last_day;
    if (len == 8) {
        int64_t d = digits(partition_id + 6, 2);
        if (d < 1 || d > days_in_month(y, m))
            return -1;
        last_day = days_from_civil(y, m, d);
    } else {
        last_day = days_from_civil(y, m, days_in_month(y, m));
    }
    /* Floor division: a negative now (before 1970) must not round up. */
    int64_t today = now_s >= 0 ? now_s / 86400 : -((-now_s + 86399) / 86400);
    return last_day < today - age_days ? 1 : 0;
}

/* ------------------------------------------------------------------------ */
/* Migration sets                                                           */

static int cmp_migration(const void *a, const void *b)
{
    const struct upm_schema_migration *x = a, *y = b;
    return x->version < y->version ? -1 : x->version > y->version;
}

void upm_schema_set_destroy(struct upm_schema_set *set)
{
    if (!set)
        return;
    for (size_t i = 0; i < set->count; i++) {
        free(set->items[i].name);
        free(set->items[i].sql);
    }
    free(set->items);
    free(set);
}

/* Substituting and splitting once at load time finds quoting mistakes and
 * unknown placeholders before anything touches a server. */
static int check_migration(const struct upm_schema_migration *m, char *errstr, size_t errstr_size)
{
    char why[256] = "";
    struct upm_strlist stmts = {0};
    char *text = upm_schema_substitute(m->sql, "upmon", "upmon", why, sizeof(why));
    int rc = -1;
    if (!text)
        goto out;
    if (upm_schema_split(text, &stmts, why, sizeof(why)) != 0)
        goto out;
    if (stmts.count == 0) {
        snprintf(why, sizeof(why), "no statements");
        goto out;
    }
    rc = 0;
out:
    if (rc != 0)
        upm_errstr_set(errstr, errstr_size, "%s.sql: %s", m->name, why);
    upm_strlist_free(&stmts);
    free(text);
    return rc;
}

struct upm_schema_set *upm_schema_set_from_sources(const struct upm_schema_source *src, size_t n,
                                                   char *errstr, size_t errstr_size)
{
    struct upm_schema_set *set = upm_calloc(1, sizeof(*set));
    if (n == 0) {
        upm_errstr_set(errstr, errstr_size, "no migrations");
        goto fail;
    }
    set->items = upm_calloc(n, sizeof(*set->items));
    for (size_t i = 0; i < n; i++) {
        struct upm_schema_migration *m = &set->items[i];
        char name[256];
        if (upm_schema_parse_filename(src[i].filename, &m->version, name, sizeof(name)) != 0) {
            upm_errstr_set(errstr, errstr_size,
                           "%s: migration files are named NNNN_name.sql (NNNN >= 0001, name in "
                           "[a-z0-9_])",
                           src[i].filename);
            goto fail;
        }
        if (src[i].len > MAX_SQL_BYTES || memchr(src[i].text, '\0', src[i].len)) {
            upm_errstr_set(errstr, errstr_size, "%s: larger than 1 MiB or holds a NUL byte",
                           src[i].filename);
            goto fail;
        }
        m->name = upm_strdup(name);
        m->sql = upm_strndup(src[i].text, src[i].len);
        m->len = src[i].len;
        upm_schema_checksum(m->sql, m->len, m->checksum);
        set->count++;
    }
    qsort(set->items, set->count, sizeof(*set->items), cmp_migration);
    for (size_t i = 0; i < set->count; i++) {
        const struct upm_schema_migration *m = &set->items[i];
        if (i > 0 && m->version == set->items[i - 1].version) {
            upm_errstr_set(errstr, errstr_size, "%s and %s: duplicate version %u",
                           set->items[i - 1].name, m->name, m->version);
            goto fail;
        }
        if (m->version != i + 1) {
            upm_errstr_set(errstr, errstr_size,
                           "%s: expected version %04zu (versions start at 1 "
                           "and have no gaps)",
                           m->name, i + 1);
            goto fail;
        }
        if (check_migration(m, errstr, errstr_size) != 0)
            goto fail;
    }
    return set;
fail:
    upm_schema_set_destroy(set);
    return NULL;
}

struct upm_schema_set *upm_schema_set_embedded(char *errstr, size_t errstr_size)
{
    return upm_schema_set_from_sources(upm_schema_embedded, upm_schema_embedded_count, errstr,
                                       errstr_size);
}

static int read_file(const char *path, struct upm_buf *b, char *errstr, size_t errstr_size)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        upm_errstr_set(errstr, errstr_size, "%s: %s", path, strerror(errno));
        return -1;
    }
    char chunk[8192];
    size_t n;
    int rc = 0;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (upm_buf_append(b, chunk, n) != 0) {
            upm_errstr_set(errstr, errstr_size, "%s: larger than 1 MiB", path);
            rc = -1;
            break;
        }
    }
    if (rc == 0 && ferror(f)) {
        upm_errstr_set(errstr, errstr_size, "%s: read error", path);
        rc = -1;
    }
    fclose(f);
    return rc;
}

struct upm_schema_set *upm_schema_set_from_dir(const char *dir, char *errstr, size_t errstr_size)
{
    struct upm_schema_set *set = NULL;
    struct upm_schema_source *src = NULL;
    struct upm_buf *bufs = NULL;
    char **names = NULL;
    size_t n = 0;
    DIR *d = opendir(dir);
    if (!d) {
        upm_errstr_set(errstr, errstr_size, "%s: %s", dir, strerror(errno));
        return NULL;
    }
    struct dirent *de;
    bool failed = false;
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        if (len < 4 || strcmp(de->d_name + len - 4, ".sql") != 0)
            continue;
        src = upm_realloc(src, (n + 1) * sizeof(*src));
        bufs = upm_realloc(bufs, (n + 1) * sizeof(*bufs));
        names = upm_realloc(names, (n + 1) * sizeof(*names));
        upm_buf_init(&bufs[n], MAX_SQL_BYTES);
        names[n] = upm_strdup(de->d_name);
        n++;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        if (read_file(path, &bufs[n - 1], errstr, errstr_size) != 0) {
            failed = true;
            break;
        }
    }
    closedir(d);
    if (failed)
        goto out;
    for (size_t i = 0; i < n; i++) {
        src[i].filename = names[i];
        src[i].text = bufs[i].data ? bufs[i].data : "";
        src[i].len = bufs[i].len;
    }
    set = upm_schema_set_from_sources(src, n, errstr, errstr_size);
out:
    for (size_t i = 0; i < n; i++) {
        upm_buf_free(&bufs[i]);
        free(names[i]);
    }
    free(bufs);
    free(names);
    free(src);
    return set;
}

/* ------------------------------------------------------------------------ */
/* Targets                                                                  */

void upm_schema_targets_free(struct upm_schema_targets *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->count; i++) {
        free(t->items[i].shard);
        free(t->items[i].replica);
        free(t->items[i].url);
    }
    free(t->items);
    t->items = NULL;
    t->count = 0;
}

static void targets_push(struct upm_schema_targets *t, const char *shard, size_t shard_len,
                         const char *replica, size_t replica_len, const char *url)
{
    t->items = upm_realloc(t->items, (t->count + 1) * sizeof(*t->items));
    struct upm_schema_target *x = &t->items[t->count++];
    x->shard = upm_strndup(shard, shard_len);
    x->replica = upm_strndup(replica, replica_len);
    x->url = upm_strdup(url);
}

int upm_schema_parse_topology(const struct upm_strlist *items, struct upm_schema_targets *out,
                              char *errstr, size_t errstr_size)
{
    for (size_t i = 0; i < items->count; i++) {
        const char *s = items->items[i];
        const char *colon = strchr(s, ':');
        const char *eq = strchr(s, '=');
        if (!colon || !eq || colon > eq || colon == s || eq == colon + 1 || !eq[1]) {
            upm_errstr_set(errstr, errstr_size, "topology item \"%s\": expected shard:replica=url",
                           s);
            goto fail;
        }
        for (size_t j = 0; j < out->count; j++) {
            const struct upm_schema_target *t = &out->items[j];
            if (strlen(t->shard) == (size_t)(colon - s) && !strncmp(t->shard, s, colon - s) &&
                strlen(t->replica) == (size_t)(eq - colon - 1) &&
                !strncmp(t->replica, colon + 1, eq - colon - 1)) {
                upm_errstr_set(errstr, errstr_size,
                               "topology item \"%s\": shard:replica listed twice", s);
                goto fail;
            }
        }
        targets_push(out, s, (size_t)(colon - s), colon + 1, (size_t)(eq - colon - 1), eq + 1);
    }
    if (out->count == 0) {
        upm_errstr_set(errstr, errstr_size, "empty topology");
        goto fail;
    }
    return 0;
fail:
    upm_schema_targets_free(out);
    return -1;
}

static struct upm_ch_client *client_for(const struct upm_ch_config *base, const char *url,
                                        char *errstr, size_t errstr_size)
{
    struct upm_ch_config cfg = *base;
    char *urls[1] = {(char *)url};
    cfg.urls.items = urls;
    cfg.urls.count = 1;
    /* The target database may not exist yet; every statement names it. */
    cfg.database = "system";
    char why[256] = "";
    struct upm_ch_client *client = upm_ch_client_create(&cfg, NULL, why, sizeof(why));
    if (!client)
        upm_errstr_set(errstr, errstr_size, "%s: %s", url, why);
    return client;
}

int upm_schema_discover(const struct upm_ch_config *base, struct upm_schema_targets *out,
                        char *errstr, size_t errstr_size)
{
    struct upm_buf resp;
    upm_buf_init(&resp, MAX_RESPONSE);
    int rc = -1;
    for (size_t i = 0; i < base->urls.count; i++) {
        const char *url = base->urls.items[i];
        struct upm_ch_error err;
        struct upm_ch_client *client = client_for(base, url, errstr, errstr_size);
        if (!client)
            goto out;
        int q = upm_ch_query(client,
                             "SELECT macro, substitution FROM system.macros WHERE macro IN "
                             "('shard', 'replica') ORDER BY macro FORMAT TabSeparated",
                             &resp, &err);
        upm_ch_client_destroy(client);
        if (q != 0) {
            upm_errstr_set(errstr, errstr_size, "%s: reading system.macros: %s", url, err.message);
            goto out;
        }
        /* Sorted: "replica\t…\nshard\t…\n". */
        const char *r = resp.data, *nl1 = r ? strchr(r, '\n') : NULL;
        const char *s = nl1 ? nl1 + 1 : NULL, *nl2 = s ? strchr(s, '\n') : NULL;
        if (!nl2 || strncmp(r, "replica\t", 8) != 0 || strncmp(s, "shard\t", 6) != 0) {
            upm_errstr_set(errstr, errstr_size, "%s: the server has no shard and replica macros",
                           url);
            goto out;
        }
        targets_push(out, s + 6, (size_t)(nl2 - s - 6), r + 8, (size_t)(nl1 - r - 8), url);
    }
    if (out->count == 0) {
        upm_errstr_set(errstr, errstr_size, "no ClickHouse URLs configured");
        goto out;
    }
    rc = 0;
out:
    upm_buf_free(&resp);
    if (rc != 0)
        upm_schema_targets_free(out);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Migrations on servers                                                    */

static const char *base_database(const struct upm_ch_config *base)
{
    return base->database ? base->database : "upmon";
}

static const char *base_cluster(const struct upm_ch_config *base)
{
    return base->cluster ? base->cluster : "upmon";
}

struct applied {
    unsigned version;
    char name[128];
    char checksum[17];
};

enum op { OP_APPLY, OP_STATUS, OP_VERIFY };

/* Read the server's records into *out (sorted by version, duplicates from
 * concurrent applies collapsed). A missing table reads as nothing applied. */
static int read_applied(struct upm_ch_client *client, const char *db, struct applied **out,
                        size_t *n, char *why, size_t why_size)
{
    struct upm_buf sql, resp;
    struct upm_ch_error err;
    int rc = -1;
    upm_buf_init(&sql, 0);
    upm_buf_init(&resp, MAX_RESPONSE);
    *out = NULL;
    *n = 0;
    upm_buf_printf(&sql,
                   "SELECT count() FROM system.tables WHERE database = '%s' AND name = "
                   "'schema_migrations' FORMAT TabSeparated",
                   db);
    if (upm_ch_query(client, sql.data, &resp, &err) != 0) {
        snprintf(why, why_size, "%s", err.message);
        goto out;
    }
    if (!resp.data || resp.data[0] == '0') {
        rc = 0;
        goto out;
    }
    upm_buf_reset(&sql);
    upm_buf_printf(&sql,
                   "SELECT version, name, checksum FROM %s.schema_migrations ORDER BY version "
                   "FORMAT TabSeparated",
                   db);
    if (upm_ch_query(client, sql.data, &resp, &err) != 0) {
        snprintf(why, why_size, "%s", err.message);
        goto out;
    }
    char *line = resp.data;
    while (line && *line) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        struct applied a = {0};
        char *t1 = strchr(line, '\t'), *t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
        char *end = NULL;
        errno = 0;
        unsigned long v = strtoul(line, &end, 10);
        if (!t2 || end != t1 || errno || v == 0 || v > 9999 ||
            (size_t)(t2 - t1 - 1) >= sizeof(a.name) || strlen(t2 + 1) != 16) {
            snprintf(why, why_size, "unreadable schema_migrations row \"%.80s\"", line);
            goto out;
        }
        a.version = (unsigned)v;
        memcpy(a.name, t1 + 1, (size_t)(t2 - t1 - 1));
        memcpy(a.checksum, t2 + 1, 17);
        if (*n > 0 && (*out)[*n - 1].version == a.version &&
            strcmp((*out)[*n - 1].checksum, a.checksum) == 0 &&
            strcmp((*out)[*n - 1].name, a.name) == 0) {
            /* The same record twice: two applies raced; harmless. */
        } else {
            *out = upm_realloc(*out, (*n + 1) * sizeof(**out));
            (*out)[(*n)++] = a;
        }
        line = nl ? nl + 1 : NULL;
    }
    rc = 0;
out:
    if (rc != 0) {
        free(*out);
        *out = NULL;
        *n = 0;
    }
    upm_buf_free(&sql);
    upm_buf_free(&resp);
    return rc;
}

/* Compare records with the set: -1 (why filled) when the server disagrees.
 * done[i] tells whether set->items[i] is recorded. */
static int compare_applied(const struct upm_schema_set *set, const struct applied *a, size_t n,
                           bool *done, char *why, size_t why_size)
{
    for (size_t i = 0; i < n; i++) {
        if (a[i].version > set->count) {
            snprintf(why, why_size,
                     "records migration %s that this schema lacks (the server's schema is newer)",
                     a[i].name);
            return -1;
        }
        if (i > 0 && a[i].version == a[i - 1].version) {
            snprintf(why, why_size, "records version %u twice with different contents",
                     a[i].version);
            return -1;
        }
        const struct upm_schema_migration *m = &set->items[a[i].version - 1];
        if (strcmp(m->name, a[i].name) != 0 || strcmp(m->checksum, a[i].checksum) != 0) {
            snprintf(why, why_size,
                     "migration %s was applied with checksum %s as %s; the file now has %s "
                     "(applied migrations must not change: add a new one)",
                     m->name, a[i].checksum, a[i].name, m->checksum);
            return -1;
        }
        done[a[i].version - 1] = true;
    }
    return 0;
}

static int run_migration(struct upm_ch_client *client, const struct upm_schema_migration *m,
                         const char *db, const char *cluster, char *why, size_t why_size)
{
    struct upm_strlist stmts = {0};
    struct upm_buf rec;
    struct upm_ch_error err;
    int rc = -1;
    upm_buf_init(&rec, 0);
    char *text = upm_schema_substitute(m->sql, db, cluster, why, why_size);
    if (!text || upm_schema_split(text, &stmts, why, why_size) != 0)
        goto out;
    for (size_t i = 0; i < stmts.count; i++) {
        if (upm_ch_exec(client, stmts.items[i], &err) != 0) {
            snprintf(why, why_size, "%s statement %zu: %s", m->name, i + 1, err.message);
            goto out;
        }
    }
    /* Recorded only after every statement succeeded; a rerun repeats the
     * idempotent statements of a half-applied migration. */
    upm_buf_printf(&rec,
                   "INSERT INTO %s.schema_migrations (version, name, checksum, applied_at) "
                   "VALUES (%u, '%s', '%s', now())",
                   db, m->version, m->name, m->checksum);
    if (upm_ch_exec(client, rec.data, &err) != 0) {
        snprintf(why, why_size, "recording %s: %s", m->name, err.message);
        goto out;
    }
    rc = 0;
out:
    free(text);
    upm_strlist_free(&stmts);
    upm_buf_free(&rec);
    return rc;
}

/* Names of the tables and views a set creates ("CREATE … IF NOT EXISTS
 * {database}.name"). */
static void created_objects(const struct upm_schema_set *set, struct upm_strlist *names)
{
    static const char marker[] = "IF NOT EXISTS {database}.";
    for (size_t i = 0; i < set->count; i++) {
        const char *p = set->items[i].sql;
        while ((p = strstr(p, marker)) != NULL) {
            p += sizeof(marker) - 1;
            size_t n = 0;
            while (isalnum((unsigned char)p[n]) || p[n] == '_')
                n++;
            if (n > 0)
                upm_strlist_push(names, p, n);
            p += n;
        }
    }
}

static int check_objects(struct upm_ch_client *client, const struct upm_schema_set *set,
                         const char *db, char *why, size_t why_size)
{
    struct upm_strlist names = {0};
    struct upm_buf sql, resp;
    struct upm_ch_error err;
    int rc = -1;
    upm_buf_init(&sql, 0);
    upm_buf_init(&resp, MAX_RESPONSE);
    created_objects(set, &names);
    upm_buf_printf(&sql,
                   "SELECT name FROM system.tables WHERE database = '%s' ORDER BY name "
                   "FORMAT TabSeparated",
                   db);
    if (upm_ch_query(client, sql.data, &resp, &err) != 0) {
        snprintf(why, why_size, "reading system.tables: %s", err.message);
        goto out;
    }
    for (size_t i = 0; i < names.count; i++) {
        bool found = false;
        const char *line = resp.data;
        size_t n = strlen(names.items[i]);
        while (line && *line && !found) {
            const char *nl = strchr(line, '\n');
            size_t len = nl ? (size_t)(nl - line) : strlen(line);
            found = len == n && memcmp(line, names.items[i], n) == 0;
            line = nl ? nl + 1 : NULL;
        }
        if (!found) {
            snprintf(why, why_size, "table %s.%s is missing", db, names.items[i]);
            goto out;
        }
    }
    rc = 0;
out:
    upm_strlist_free(&names);
    upm_buf_free(&sql);
    upm_buf_free(&resp);
    return rc;
}

/* verify: the cluster definition must not list servers the caller left out
 * (a forgotten replica would otherwise pass unchecked). */
static int check_cluster_size(struct upm_ch_client *client, const char *cluster, size_t ntargets,
                              char *why, size_t why_size)
{
    struct upm_buf sql, resp;
    struct upm_ch_error err;
    int rc = -1;
    upm_buf_init(&sql, 0);
    upm_buf_init(&resp, MAX_RESPONSE);
    upm_buf_printf(&sql,
                   "SELECT count() FROM system.clusters WHERE cluster = '%s' FORMAT TabSeparated",
                   cluster);
    if (upm_ch_query(client, sql.data, &resp, &err) != 0) {
        snprintf(why, why_size, "reading system.clusters: %.400s", err.message);
        goto out;
    }
    char *end = NULL;
    errno = 0;
    unsigned long long n = strtoull(resp.data ? resp.data : "", &end, 10);
    if (errno || !end || (*end && *end != '\n')) {
        snprintf(why, why_size, "unreadable system.clusters count");
        goto out;
    }
    if (n == 0) {
        snprintf(why, why_size, "cluster %s is not defined on this server", cluster);
        goto out;
    }
    if (n > ntargets) {
        snprintf(why, why_size, "cluster %s has %llu servers but only %zu were checked", cluster, n,
                 ntargets);
        goto out;
    }
    rc = 0;
out:
    upm_buf_free(&sql);
    upm_buf_free(&resp);
    return rc;
}

/* One server: apply, status or verify. 0, or -1 with why. */
static int one_server(enum op op, const struct upm_schema_set *set,
                      const struct upm_ch_config *base, const struct upm_schema_target *t,
                      size_t ntargets, FILE *report, char *why, size_t why_size)
{
    const char *db = base_database(base), *cluster = base_cluster(base);
    struct applied *a = NULL;
    size_t na = 0;
    bool *done = upm_calloc(set->count, sizeof(*done));
    struct upm_buf sql;
    struct upm_ch_error err;
    int rc = -1;
    upm_buf_init(&sql, 0);
    struct upm_ch_client *client = client_for(base, t->url, why, why_size);
    if (!client)
        goto out;
    if (op == OP_APPLY) {
        upm_buf_printf(&sql, "CREATE DATABASE IF NOT EXISTS %s", db);
        if (upm_ch_exec(client, sql.data, &err) != 0) {
            snprintf(why, why_size, "creating database %s: %s", db, err.message);
            goto out;
        }
        upm_buf_reset(&sql);
        /* Per server on purpose (not replicated): it records what this
         * server has, which is what a new or rebuilt replica must know. */
        upm_buf_printf(&sql,
                       "CREATE TABLE IF NOT EXISTS %s.schema_migrations (version UInt32, name "
                       "String, checksum String, applied_at DateTime) ENGINE = MergeTree() "
                       "ORDER BY version",
                       db);
        if (upm_ch_exec(client, sql.data, &err) != 0) {
            snprintf(why, why_size, "creating %s.schema_migrations: %s", db, err.message);
            goto out;
        }
    }
    if (read_applied(client, db, &a, &na, why, why_size) != 0)
        goto out;
    if (compare_applied(set, a, na, done, why, why_size) != 0)
        goto out;
    size_t pending = 0, applied_now = 0;
    for (size_t i = 0; i < set->count; i++) {
        if (done[i])
            continue;
        if (op == OP_APPLY) {
            if (run_migration(client, &set->items[i], db, cluster, why, why_size) != 0)
                goto out;
            report_line(report, "shard=%s replica=%s url=%s applied %s", t->shard, t->replica,
                        t->url, set->items[i].name);
            upm_log_info(MOD, "migration applied | shard=%s replica=%s migration=%s", t->shard,
                         t->replica, set->items[i].name);
            applied_now++;
        } else {
            report_line(report, "shard=%s replica=%s url=%s pending %s", t->shard, t->replica,
                        t->url, set->items[i].name);
            pending++;
        }
    }
    if (op == OP_VERIFY && pending > 0) {
        snprintf(why, why_size, "%zu migration(s) not applied", pending);
        goto out;
    }
    if (op != OP_STATUS && check_objects(client, set, db, why, why_size) != 0)
        goto out;
    if (op == OP_VERIFY && check_cluster_size(client, cluster, ntargets, why, why_size) != 0)
        goto out;
    report_line(report, "shard=%s replica=%s url=%s database=%s applied=%zu/%zu%s", t->shard,
                t->replica, t->url, db, set->count - pending, set->count,
                op == OP_APPLY ? (applied_now ? "" : " (up to date)")
                               : (op == OP_VERIFY ? " verified" : ""));
    rc = 0;
out:
    upm_ch_client_destroy(client);
    upm_buf_free(&sql);
    free(done);
    free(a);
    return rc;
}

static int each_server(enum op op, const struct upm_schema_set *set,
                       const struct upm_ch_config *base, const struct upm_schema_targets *targets,
                       FILE *report, char *errstr, size_t errstr_size)
{
    int rc = 0;
    if (!is_ident(base_database(base)) || !is_ident(base_cluster(base))) {
        upm_errstr_set(errstr, errstr_size, "database and cluster names must match [A-Za-z0-9_]+");
        return -1;
    }
    for (size_t i = 0; i < targets->count; i++) {
        const struct upm_schema_target *t = &targets->items[i];
        char why[768] = "";
        if (one_server(op, set, base, t, targets->count, report, why, sizeof(why)) != 0) {
            report_line(report, "shard=%s replica=%s url=%s ERROR %s", t->shard, t->replica, t->url,
                        why);
            upm_log_error(MOD, "schema operation failed | shard=%s replica=%s url=%s error=\"%s\"",
                          t->shard, t->replica, t->url, why);
            if (rc == 0)
                upm_errstr_set(errstr, errstr_size, "shard %s replica %s (%s): %s", t->shard,
                               t->replica, t->url, why);
            rc = -1;
        }
    }
    return rc;
}

int upm_schema_apply(const struct upm_schema_set *set, const struct upm_ch_config *base,
                     const struct upm_schema_targets *targets, FILE *report, char *errstr,
                     size_t errstr_size)
{
    return each_server(OP_APPLY, set, base, targets, report, errstr, errstr_size);
}

int upm_schema_status(const struct upm_schema_set *set, const struct upm_ch_config *base,
                      const struct upm_schema_targets *targets, FILE *report, char *errstr,
                      size_t errstr_size)
{
    return each_server(OP_STATUS, set, base, targets, report, errstr, errstr_size);
}

int upm_schema_verify(const struct upm_schema_set *set, const struct upm_ch_config *base,
                      const struct upm_schema_targets *targets, FILE *report, char *errstr,
                      size_t errstr_size)
{
    return each_server(OP_VERIFY, set, base, targets, report, errstr, errstr_size);
}

/* ------------------------------------------------------------------------ */
/* Retention                                                                */

enum age_class { AGE_RAW, AGE_FINE, AGE_DAILY };

static const struct {
    const char *table;
    enum age_class age;
} retention_tables[] = {
    {"events_local", AGE_RAW},
    {"events_1s_local", AGE_FINE},
    {"events_1m_company_local", AGE_FINE},
    {"events_1m_local", AGE_FINE},
    {"attempts_local", AGE_FINE},
    {"attempt_events_local", AGE_FINE},
    {"events_1d_company_local", AGE_DAILY},
    {"analyzer_stats_local", AGE_FINE},
    {"seller_scores_local", AGE_FINE},
};
#define N_RETENTION (sizeof(retention_tables) / sizeof(retention_tables[0]))

static int64_t age_for(const struct upm_schema_retention *ret, const char *table)
{
    for (size_t i = 0; i < N_RETENTION; i++) {
        if (strcmp(retention_tables[i].table, table) == 0) {
            switch (retention_tables[i].age) {
            case AGE_RAW:
                return ret->raw_days;
            case AGE_FINE:
                return ret->fine_days;
            case AGE_DAILY:
                return ret->daily_days;
            }
        }
    }
    return -1;
}

/* Add (table, partition, rows) to the shard's candidate list, keeping the
 * largest row count seen on any replica. */
static void candidate_add(struct upm_schema_dropped **c, size_t *n, const char *shard,
                          const char *table, const char *pid, uint64_t rows)
{
    for (size_t i = 0; i < *n; i++) {
        if (!strcmp((*c)[i].shard, shard) && !strcmp((*c)[i].table, table) &&
            !strcmp((*c)[i].partition_id, pid)) {
            if (rows > (*c)[i].rows)
                (*c)[i].rows = rows;
            return;
        }
    }
    *c = upm_realloc(*c, (*n + 1) * sizeof(**c));
    struct upm_schema_dropped *d = &(*c)[(*n)++];
    memset(d, 0, sizeof(*d));
    snprintf(d->shard, sizeof(d->shard), "%s", shard);
    snprintf(d->table, sizeof(d->table), "%s", table);
    snprintf(d->partition_id, sizeof(d->partition_id), "%s", pid);
    d->rows = rows;
}

/* Read one replica's active partitions of the retention tables and add the
 * expired ones. 0, or -1 with why. */
static int collect_expired(struct upm_ch_client *client, const char *db, const char *shard,
                           const struct upm_schema_retention *ret, int64_t now_s,
                           struct upm_schema_dropped **c, size_t *n, char *why, size_t why_size)
{
    struct upm_buf sql, resp;
    struct upm_ch_error err;
    int rc = -1;
    upm_buf_init(&sql, 0);
    upm_buf_init(&resp, MAX_RESPONSE);
    upm_buf_printf(&sql,
                   "SELECT table, partition_id, sum(rows) FROM system.parts WHERE active AND "
                   "database = '%s' AND table IN (",
                   db);
    for (size_t i = 0; i < N_RETENTION; i++)
        upm_buf_printf(&sql, "%s'%s'", i ? ", " : "", retention_tables[i].table);
    upm_buf_puts(&sql, ") GROUP BY table, partition_id ORDER BY table, partition_id "
                       "FORMAT TabSeparated");
    if (upm_ch_query(client, sql.data, &resp, &err) != 0) {
        snprintf(why, why_size, "reading system.parts: %.400s", err.message);
        goto out;
    }
    char *line = resp.data;
    while (line && *line) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        char *t1 = strchr(line, '\t'), *t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
        if (!t2) {
            snprintf(why, why_size, "unreadable system.parts row \"%.80s\"", line);
            goto out;
        }
        *t1 = '\0';
        *t2 = '\0';
        char *end = NULL;
        errno = 0;
        unsigned long long rows = strtoull(t2 + 1, &end, 10);
        if (errno || !end || *end) {
            snprintf(why, why_size, "unreadable row count \"%.40s\"", t2 + 1);
            goto out;
        }
        int64_t age = age_for(ret, line);
        if (age >= 0 && upm_schema_partition_expired(t1 + 1, now_s, age) == 1)
            candidate_add(c, n, shard, line, t1 + 1, rows);
        line = nl ? nl + 1 : NULL;
    }
    rc = 0;
out:
    upm_buf_free(&sql);
    upm_buf_free(&resp);
    return rc;
}

int upm_schema_drop_expired(const struct upm_ch_config *base,
                            const struct upm_schema_targets *targets,
                            const struct upm_schema_retention *ret, int64_t now_s, bool dry_run,
                            FILE *report, struct upm_schema_dropped **dropped_out, size_t *ndropped,
                            char *errstr, size_t errstr_size)
{
    const char *db = base_database(base);
    struct upm_schema_dropped *done = NULL;
    size_t ndone = 0;
    bool *seen = upm_calloc(targets->count + 1, sizeof(*seen));
    int rc = 0;
    if (!is_ident(db)) {
        upm_errstr_set(errstr, errstr_size, "database names must match [A-Za-z0-9_]+");
        rc = -1;
        goto out;
    }
    if (ret->raw_days < 1 || ret->fine_days < 1 || ret->daily_days < 1) {
        upm_errstr_set(errstr, errstr_size, "retention ages must be at least 1 day");
        rc = -1;
        goto out;
    }
    for (size_t s = 0; s < targets->count; s++) {
        if (seen[s])
            continue;
        const char *shard = targets->items[s].shard;
        struct upm_schema_dropped *cand = NULL;
        size_t ncand = 0;
        struct upm_ch_client *first = NULL; /* first replica of the shard that answered */
        char why[768] = "";
        size_t reachable = 0;
        for (size_t r = s; r < targets->count; r++) {
            const struct upm_schema_target *t = &targets->items[r];
            if (strcmp(t->shard, shard) != 0)
                continue;
            seen[r] = true;
            char rwhy[512] = "";
            struct upm_ch_client *client = client_for(base, t->url, rwhy, sizeof(rwhy));
            if (client && collect_expired(client, db, shard, ret, now_s, &cand, &ncand, rwhy,
                                          sizeof(rwhy)) == 0) {
                reachable++;
                if (!first) {
                    first = client;
                    client = NULL;
                }
            } else {
                /* A replica that is down catches up from the replication
                 * log; the shard only fails if none answers. */
                report_line(report, "shard=%s replica=%s url=%s unreachable: %s", shard, t->replica,
                            t->url, rwhy);
                upm_log_warn(MOD,
                             "replica skipped for retention | shard=%s replica=%s error=\"%s\"",
                             shard, t->replica, rwhy);
                snprintf(why, sizeof(why), "%s", rwhy);
            }
            upm_ch_client_destroy(client);
        }
        if (reachable == 0) {
            report_line(report, "shard=%s ERROR no replica answered: %s", shard, why);
            if (rc == 0)
                upm_errstr_set(errstr, errstr_size, "shard %s: no replica answered: %s", shard,
                               why);
            rc = -1;
        }
        for (size_t i = 0; first && i < ncand; i++) {
            const struct upm_schema_dropped *d = &cand[i];
            if (!dry_run) {
                struct upm_buf sql;
                struct upm_ch_error err;
                upm_buf_init(&sql, 0);
                upm_buf_printf(&sql, "ALTER TABLE %s.%s DROP PARTITION ID '%s'", db, d->table,
                               d->partition_id);
                int e = upm_ch_exec(first, sql.data, &err);
                upm_buf_free(&sql);
                if (e != 0) {
                    report_line(report, "shard=%s table=%s partition=%s ERROR %s", shard, d->table,
                                d->partition_id, err.message);
                    if (rc == 0)
                        upm_errstr_set(errstr, errstr_size,
                                       "shard %s: dropping %s partition %s: %s", shard, d->table,
                                       d->partition_id, err.message);
                    rc = -1;
                    continue;
                }
                upm_log_info(MOD, "partition dropped | shard=%s table=%s partition=%s rows=%llu",
                             shard, d->table, d->partition_id, (unsigned long long)d->rows);
            }
            report_line(report, "%s shard=%s table=%s partition=%s rows=%llu",
                        dry_run ? "would-drop" : "drop", shard, d->table, d->partition_id,
                        (unsigned long long)d->rows);
            done = upm_realloc(done, (ndone + 1) * sizeof(*done));
            done[ndone++] = *d;
        }
        upm_ch_client_destroy(first);
        free(cand);
    }
out:
    free(seen);
    if (dropped_out) {
        *dropped_out = done;
        *ndropped = ndone;
    } else {
        free(done);
    }
    return rc;
}
