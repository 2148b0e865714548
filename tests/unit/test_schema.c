#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "upmon/clickhouse.h"
#include "upmon/log.h"
#include "upmon/schema.h"

#define DAY 86400

/* 2026-11-22T12:00:00Z */
static const int64_t NOW = 1795348800;

/* ------------------------------------------------------------------------ */
/* File names and checksums                                                 */

static void test_filename_good(void **state)
{
    (void)state;
    unsigned v = 0;
    char name[64];
    assert_int_equal(upm_schema_parse_filename("0001_events.sql", &v, name, sizeof(name)), 0);
    assert_int_equal(v, 1);
    assert_string_equal(name, "0001_events");
    assert_int_equal(upm_schema_parse_filename("0123_a_b_9.sql", &v, name, sizeof(name)), 0);
    assert_int_equal(v, 123);
    assert_string_equal(name, "0123_a_b_9");
}

static void test_filename_bad(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "0000_zero.sql",   /* versions start at 1 */
        "001_short.sql",   /* three digits */
        "00001_long.sql",  /* five digits: the name would start with a digit run */
        "0001-dash.sql",   /* separator */
        "0001_.sql",       /* empty name */
        "0001_Upper.sql",  /* upper case */
        "0001_sp ace.sql", /* blank */
        "0001_events.SQL", /* extension */
        "0001_events.sql~", "abcd_events.sql", "README.md", "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        unsigned v = 77;
        char name[64] = "unchanged";
        int rc = upm_schema_parse_filename(bad[i], &v, name, sizeof(name));
        if (rc != -1)
            fail_msg("\"%s\" was accepted", bad[i]);
        assert_int_equal(v, 77);
        assert_string_equal(name, "unchanged");
    }
    /* A name that does not fit the caller's buffer is refused, not cut. */
    unsigned v;
    char small[8];
    assert_int_equal(upm_schema_parse_filename("0001_events.sql", &v, small, sizeof(small)), -1);
}

static void test_checksum(void **state)
{
    (void)state;
    char out[17];
    /* The published FNV-1a 64 test vectors. */
    upm_schema_checksum("", 0, out);
    assert_string_equal(out, "cbf29ce484222325");
    upm_schema_checksum("a", 1, out);
    assert_string_equal(out, "af63dc4c8601ec8c");
    upm_schema_checksum("foobar", 6, out);
    assert_string_equal(out, "85944171f73967e8");
    /* One byte changed anywhere changes it. */
    char a[17], b[17];
    upm_schema_checksum("CREATE TABLE x (a UInt8)", 24, a);
    upm_schema_checksum("CREATE TABLE x (a UInt16", 24, b);
    assert_string_not_equal(a, b);
}

/* ------------------------------------------------------------------------ */
/* Placeholders and splitting                                               */

static void test_substitute(void **state)
{
    (void)state;
    char err[256] = "";
    char *s = upm_schema_substitute("CREATE TABLE {database}.t ENGINE = "
                                    "ReplicatedMergeTree('/ch/{shard}/{database}/t', '{replica}')"
                                    " -- on {cluster}: {} {x1} {DATABASE}",
                                    "db_1", "main", err, sizeof(err));
    assert_non_null(s);
    assert_string_equal(s, "CREATE TABLE db_1.t ENGINE = ReplicatedMergeTree('/ch/{shard}/db_1/t', "
                           "'{replica}') -- on main: {} {x1} {DATABASE}");
    free(s);

    s = upm_schema_substitute("SELECT 1 FROM {databse}.t", "db", "c", err, sizeof(err));
    assert_null(s);
    assert_non_null(strstr(err, "{databse}"));

    /* Names are pasted into SQL: anything but [A-Za-z0-9_] is refused. */
    assert_null(upm_schema_substitute("x", "db; DROP", "c", err, sizeof(err)));
    assert_null(upm_schema_substitute("x", "db", "c'", err, sizeof(err)));
    assert_null(upm_schema_substitute("x", "", "c", err, sizeof(err)));
}

static void free_list(struct upm_strlist *l)
{
    for (size_t i = 0; i < l->count; i++)
        free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->count = 0;
}

static void test_split(void **state)
{
    (void)state;
    char err[256] = "";
    struct upm_strlist l = {0};
    const char *sql = "-- header; with a semicolon\n"
                      "CREATE TABLE a (s String DEFAULT 'x;y') ENGINE = Memory;\n"
                      "/* block; comment */\n"
                      "SELECT 'it''s; fine', 'back\\'slash;', \"q;id\", `b;t`;\n"
                      "  ;\n"
                      "-- only a comment;\n"
                      "SELECT 2 -- no semicolon at the end\n";
    assert_int_equal(upm_schema_split(sql, &l, err, sizeof(err)), 0);
    assert_int_equal(l.count, 3);
    assert_string_equal(l.items[0], "-- header; with a semicolon\n"
                                    "CREATE TABLE a (s String DEFAULT 'x;y') ENGINE = Memory");
    assert_string_equal(l.items[1], "/* block; comment */\n"
                                    "SELECT 'it''s; fine', 'back\\'slash;', \"q;id\", `b;t`");
    assert_string_equal(l.items[2], "-- only a comment;\nSELECT 2 -- no semicolon at the end");
    free_list(&l);

    assert_int_equal(upm_schema_split("   \n-- nothing\n/* */;;", &l, err, sizeof(err)), 0);
    assert_int_equal(l.count, 0);

    static const char *const bad[] = {"SELECT 'open;", "SELECT \"open", "SELECT `open",
                                      "SELECT 1; /* open", "SELECT 'a\\'"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        if (upm_schema_split(bad[i], &l, err, sizeof(err)) != -1)
            fail_msg("\"%s\" split without error", bad[i]);
        assert_int_equal(l.count, 0);
        assert_null(l.items);
        assert_non_null(strstr(err, "unterminated"));
    }
}

/* ------------------------------------------------------------------------ */
/* Sets                                                                     */

#define SRC(f, t)                                                                                  \
    {                                                                                              \
        f, t, sizeof(t) - 1                                                                        \
    }

static void test_set_ordering(void **state)
{
    (void)state;
    char err[256] = "";
    const struct upm_schema_source src[] = {
        SRC("0003_c.sql", "SELECT 3"),
        SRC("0001_a.sql", "SELECT 1; SELECT 11"),
        SRC("0002_b.sql", "SELECT 2"),
    };
    struct upm_schema_set *set = upm_schema_set_from_sources(src, 3, err, sizeof(err));
    assert_non_null(set);
    assert_int_equal(set->count, 3);
    for (unsigned i = 0; i < 3; i++)
        assert_int_equal(set->items[i].version, i + 1);
    assert_string_equal(set->items[0].name, "0001_a");
    assert_string_equal(set->items[0].sql, "SELECT 1; SELECT 11");
    assert_int_equal(set->items[0].len, 19);
    char sum[17];
    upm_schema_checksum("SELECT 2", 8, sum);
    assert_string_equal(set->items[1].checksum, sum);
    assert_string_equal(set->items[2].name, "0003_c");
    upm_schema_set_destroy(set);
    upm_schema_set_destroy(NULL);
}

static void expect_set_error(const struct upm_schema_source *src, size_t n, const char *needle)
{
    char err[256] = "";
    struct upm_schema_set *set = upm_schema_set_from_sources(src, n, err, sizeof(err));
    if (set) {
        upm_schema_set_destroy(set);
        fail_msg("accepted; expected an error containing \"%s\"", needle);
    }
    if (!strstr(err, needle))
        fail_msg("error \"%s\" does not contain \"%s\"", err, needle);
}

static void test_set_errors(void **state)
{
    (void)state;
    const struct upm_schema_source dup[] = {SRC("0001_a.sql", "SELECT 1"),
                                            SRC("0001_b.sql", "SELECT 1")};
    expect_set_error(dup, 2, "duplicate version 1");

    const struct upm_schema_source gap[] = {SRC("0001_a.sql", "SELECT 1"),
                                            SRC("0003_c.sql", "SELECT 3")};
    expect_set_error(gap, 2, "0003_c: expected version 0002");

    const struct upm_schema_source late[] = {SRC("0002_b.sql", "SELECT 2")};
    expect_set_error(late, 1, "expected version 0001");

    const struct upm_schema_source badname[] = {SRC("0001_a.sql", "SELECT 1"),
                                                SRC("2_b.sql", "SELECT 2")};
    expect_set_error(badname, 2, "2_b.sql: migration files are named");

    const struct upm_schema_source placeholder[] = {SRC("0001_a.sql", "SELECT {db}")};
    expect_set_error(placeholder, 1, "0001_a.sql: unknown placeholder {db}");

    const struct upm_schema_source quote[] = {SRC("0001_a.sql", "SELECT 'x")};
    expect_set_error(quote, 1, "0001_a.sql: unterminated");

    const struct upm_schema_source empty[] = {SRC("0001_a.sql", "-- nothing here\n")};
    expect_set_error(empty, 1, "no statements");

    const struct upm_schema_source nul[] = {{"0001_a.sql", "SELECT 1\0x", 10}};
    expect_set_error(nul, 1, "NUL");

    expect_set_error(NULL, 0, "no migrations");
}

static char tmpdir[64];

static void write_file(const char *name, const char *text)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void remove_file(const char *name)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    unlink(path);
}

static void test_set_from_dir(void **state)
{
    (void)state;
    char err[256] = "";
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/upmon-test-schema-XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    write_file("0002_b.sql", "SELECT 2;");
    write_file("0001_a.sql", "SELECT 1;");
    write_file("README.md", "not a migration {nonsense}");
    struct upm_schema_set *set = upm_schema_set_from_dir(tmpdir, err, sizeof(err));
    assert_non_null(set);
    assert_int_equal(set->count, 2);
    assert_string_equal(set->items[0].name, "0001_a");
    assert_string_equal(set->items[1].sql, "SELECT 2;");
    upm_schema_set_destroy(set);

    /* A *.sql file with a bad name is an error, not silently skipped. */
    write_file("3_c.sql", "SELECT 3;");
    set = upm_schema_set_from_dir(tmpdir, err, sizeof(err));
    assert_null(set);
    assert_non_null(strstr(err, "3_c.sql"));
    remove_file("3_c.sql");
    remove_file("0001_a.sql");
    remove_file("0002_b.sql");
    remove_file("README.md");

    set = upm_schema_set_from_dir(tmpdir, err, sizeof(err));
    assert_null(set);
    assert_non_null(strstr(err, "no migrations"));
    rmdir(tmpdir);

    set = upm_schema_set_from_dir(tmpdir, err, sizeof(err));
    assert_null(set);
    assert_non_null(strstr(err, tmpdir));
}

/* The copy built into the library is the sql/ folder of this checkout: same
 * files, same checksums (so the binary applies what the tree says). */
static void test_embedded_matches_tree(void **state)
{
    (void)state;
    char err[256] = "";
    struct upm_schema_set *tree = upm_schema_set_from_dir(UPMON_SQL_DIR, err, sizeof(err));
    if (!tree)
        fail_msg("sql/: %s", err);
    struct upm_schema_set *emb = upm_schema_set_embedded(err, sizeof(err));
    if (!emb)
        fail_msg("embedded: %s", err);
    assert_int_equal(emb->count, tree->count);
    assert_true(emb->count >= 5);
    for (size_t i = 0; i < emb->count; i++) {
        assert_string_equal(emb->items[i].name, tree->items[i].name);
        assert_string_equal(emb->items[i].checksum, tree->items[i].checksum);
    }
    /* The contract's table, with the ZooKeeper path the ingest engineer
     * expects once {database} is upmon. */
    char *s = upm_schema_substitute(emb->items[0].sql, "upmon", "upmon", err, sizeof(err));
    assert_non_null(s);
    assert_non_null(strstr(s, "'/clickhouse/tables/{shard}/upmon/events_local', '{replica}'"));
    assert_non_null(
        strstr(s, "Distributed('upmon', 'upmon', 'events_local', sipHash64(attempt_id))"));
    free(s);
    upm_schema_set_destroy(tree);
    upm_schema_set_destroy(emb);
}

/* ------------------------------------------------------------------------ */
/* Retention selection                                                      */

static void test_partition_days(void **state)
{
    (void)state;
    /* NOW is 2026-11-22; with age 10 the first kept day is 2026-11-12. */
    assert_int_equal(upm_schema_partition_expired("20261122", NOW, 10), 0);
    assert_int_equal(upm_schema_partition_expired("20261112", NOW, 10), 0);
    assert_int_equal(upm_schema_partition_expired("20261111", NOW, 10), 1);
    assert_int_equal(upm_schema_partition_expired("20200101", NOW, 10), 1);
    /* The future is never expired. */
    assert_int_equal(upm_schema_partition_expired("20301231", NOW, 1), 0);
    /* Any time during the day gives the same cut. */
    int64_t midnight = NOW - 12 * 3600, last_second = NOW + 12 * 3600 - 1;
    assert_int_equal(upm_schema_partition_expired("20261111", midnight, 10), 1);
    assert_int_equal(upm_schema_partition_expired("20261112", last_second, 10), 0);
    /* ... and the next day moves it by one. */
    assert_int_equal(upm_schema_partition_expired("20261112", last_second + 1, 10), 1);
    /* A year of 365 days across a leap day: 2024-02-29 exists. */
    assert_int_equal(upm_schema_partition_expired("20240229", 1709251200 /* 2024-03-01 */, 1), 0);
    assert_int_equal(upm_schema_partition_expired("20240228", 1709251200, 1), 1);
}

static void test_partition_months(void **state)
{
    (void)state;
    /* A month goes when its last day does: with age 52, the cut day is
     * 2026-10-01, so September (ends 09-30) goes and October stays. */
    assert_int_equal(upm_schema_partition_expired("202609", NOW, 52), 1);
    assert_int_equal(upm_schema_partition_expired("202610", NOW, 52), 0);
    assert_int_equal(upm_schema_partition_expired("202609", NOW, 53), 0);
    /* February's last day in a leap year is the 29th. */
    int64_t mar1_2024 = 1709251200;
    assert_int_equal(upm_schema_partition_expired("202402", mar1_2024, 1), 0);
    assert_int_equal(upm_schema_partition_expired("202402", mar1_2024 + DAY, 1), 1);
}

static void test_partition_not_dates(void **state)
{
    (void)state;
    static const char *const ids[] = {"all",        "2026",     "2026112", "202611221", "20261131",
                                      "20250229",   "20261322", "202600",  "202613",    "19691231",
                                      "2026-11-22", "2026112a", "",        "-2026112"};
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        int rc = upm_schema_partition_expired(ids[i], NOW, 1);
        if (rc != -1)
            fail_msg("partition id \"%s\" gave %d, expected -1 (never dropped)", ids[i], rc);
    }
}

/* ------------------------------------------------------------------------ */
/* Topology and servers                                                     */

static void test_topology(void **state)
{
    (void)state;
    char err[256] = "";
    char *items[] = {"1:1=http://h:8123", "1:s1r2=http://h:8124", "02:a=https://x:1/"};
    struct upm_strlist l = {items, 3};
    struct upm_schema_targets t = {0};
    assert_int_equal(upm_schema_parse_topology(&l, &t, err, sizeof(err)), 0);
    assert_int_equal(t.count, 3);
    assert_string_equal(t.items[1].shard, "1");
    assert_string_equal(t.items[1].replica, "s1r2");
    assert_string_equal(t.items[1].url, "http://h:8124");
    assert_string_equal(t.items[2].shard, "02");
    assert_string_equal(t.items[2].url, "https://x:1/");
    upm_schema_targets_free(&t);
    assert_int_equal(t.count, 0);
    upm_schema_targets_free(NULL);

    static const char *const bad[] = {"http://h:8123", "1=http://h", ":1=http://h",
                                      "1:=http://h",   "1:1=",       "1=2:http"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *one[] = {(char *)bad[i]};
        struct upm_strlist b = {one, 1};
        if (upm_schema_parse_topology(&b, &t, err, sizeof(err)) != -1)
            fail_msg("topology \"%s\" accepted", bad[i]);
        assert_int_equal(t.count, 0);
    }
    char *twice[] = {"1:1=http://a", "1:1=http://b"};
    struct upm_strlist d = {twice, 2};
    assert_int_equal(upm_schema_parse_topology(&d, &t, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "twice"));
    assert_int_equal(t.count, 0);
    struct upm_strlist none = {NULL, 0};
    assert_int_equal(upm_schema_parse_topology(&none, &t, err, sizeof(err)), -1);
}

/* A port nobody listens on: connection refused at once. */
static struct upm_ch_config dead_config(char **urls)
{
    struct upm_ch_config cfg = {0};
    cfg.urls.items = urls;
    cfg.urls.count = 1;
    cfg.database = "db_test";
    cfg.cluster = "upmon";
    cfg.connect_timeout_ms = 500;
    cfg.query_timeout_ms = 1000;
    cfg.retries = 0;
    cfg.backoff_initial_ms = 1;
    cfg.backoff_max_ms = 1;
    cfg.max_response_bytes = 1 << 20;
    return cfg;
}

static void test_unreachable_servers(void **state)
{
    (void)state;
    char err[512] = "";
    char *urls[] = {"http://127.0.0.1:1"};
    struct upm_ch_config cfg = dead_config(urls);
    struct upm_schema_targets t = {0};
    assert_int_equal(upm_schema_discover(&cfg, &t, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "http://127.0.0.1:1"));
    assert_int_equal(t.count, 0);

    char *items[] = {"1:1=http://127.0.0.1:1", "2:1=http://127.0.0.1:1"};
    struct upm_strlist l = {items, 2};
    assert_int_equal(upm_schema_parse_topology(&l, &t, err, sizeof(err)), 0);
    struct upm_schema_set *set = upm_schema_set_embedded(err, sizeof(err));
    assert_non_null(set);

    char *text = NULL;
    size_t len = 0;
    FILE *report = open_memstream(&text, &len);
    assert_non_null(report);
    err[0] = '\0';
    assert_int_equal(upm_schema_apply(set, &cfg, &t, report, err, sizeof(err)), -1);
    fclose(report);
    /* Both servers are tried and reported; errstr names the first. */
    assert_non_null(strstr(text, "shard=1 replica=1 url=http://127.0.0.1:1 ERROR"));
    assert_non_null(strstr(text, "shard=2 replica=1 url=http://127.0.0.1:1 ERROR"));
    assert_non_null(strstr(err, "shard 1 replica 1"));
    free(text);

    assert_int_equal(upm_schema_verify(set, &cfg, &t, NULL, err, sizeof(err)), -1);
    assert_int_equal(upm_schema_status(set, &cfg, &t, NULL, err, sizeof(err)), -1);

    struct upm_schema_retention ret = {30, 30, 400};
    struct upm_schema_dropped *dropped = (void *)1;
    size_t n = 99;
    assert_int_equal(
        upm_schema_drop_expired(&cfg, &t, &ret, NOW, true, NULL, &dropped, &n, err, sizeof(err)),
        -1);
    assert_non_null(strstr(err, "no replica answered"));
    assert_int_equal(n, 0);
    assert_null(dropped);

    /* Arguments are checked before any request. */
    struct upm_schema_retention zero = {30, 0, 400};
    assert_int_equal(
        upm_schema_drop_expired(&cfg, &t, &zero, NOW, true, NULL, NULL, NULL, err, sizeof(err)),
        -1);
    assert_non_null(strstr(err, "at least 1 day"));
    cfg.database = "db-x";
    assert_int_equal(upm_schema_apply(set, &cfg, &t, NULL, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "[A-Za-z0-9_]"));
    assert_int_equal(
        upm_schema_drop_expired(&cfg, &t, &ret, NOW, true, NULL, NULL, NULL, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "[A-Za-z0-9_]"));

    upm_schema_set_destroy(set);
    upm_schema_targets_free(&t);
}

int main(void)
{
    upm_log_set_level(UPM_LOG_OFF);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_filename_good),
        cmocka_unit_test(test_filename_bad),
        cmocka_unit_test(test_checksum),
        cmocka_unit_test(test_substitute),
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_set_ordering),
        cmocka_unit_test(test_set_errors),
        cmocka_unit_test(test_set_from_dir),
        cmocka_unit_test(test_embedded_matches_tree),
        cmocka_unit_test(test_partition_days),
        cmocka_unit_test(test_partition_months),
        cmocka_unit_test(test_partition_not_dates),
        cmocka_unit_test(test_topology),
        cmocka_unit_test(test_unreachable_servers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
