#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "upmon/alloc.h"
#include "upmon/config.h"

/* ---- a representative table ------------------------------------------- */

struct log_cfg {
    char *level;
    bool json;
};

struct kafka_cfg {
    struct upm_strlist brokers;
    char *topic;
    int64_t batch;
    double ratio;
    int64_t timeout_ms;
    char *password;
};

struct ch_cfg {
    char *url;
    struct upm_strlist hosts;
};

static struct log_cfg log_cfg;
static struct kafka_cfg kafka_cfg;
static struct ch_cfg ch_cfg;

static const char *const levels[] = {"debug", "info", "warn", "error", NULL};

static const struct upm_config_key log_keys[] = {
    {"level", UPM_CFG_ENUM, offsetof(struct log_cfg, level), "info", 1, 0, levels,
     "Minimum log level.", 0},
    {"json", UPM_CFG_BOOL, offsetof(struct log_cfg, json), "false", 1, 0, NULL,
     "Write JSON lines instead of key=value.", 0},
};

static const struct upm_config_key kafka_keys[] = {
    {"brokers", UPM_CFG_STRING_LIST, offsetof(struct kafka_cfg, brokers), "127.0.0.1:9092", 1, 0,
     NULL, "Bootstrap brokers.", 0},
    {"topic", UPM_CFG_STRING, offsetof(struct kafka_cfg, topic), "upmon.events.v1", 1, 0, NULL,
     "Event topic.", 0},
    {"batch", UPM_CFG_INT, offsetof(struct kafka_cfg, batch), "1000", 1, 100000, NULL,
     "Messages per batch.", 0},
    {"ratio", UPM_CFG_DOUBLE, offsetof(struct kafka_cfg, ratio), "0.5", 0, 1, NULL,
     "Sampling ratio.", 0},
    {"timeout", UPM_CFG_DURATION_MS, offsetof(struct kafka_cfg, timeout_ms), "10s", 1, 3600000,
     NULL, "Request timeout.", 0},
    {"password", UPM_CFG_STRING, offsetof(struct kafka_cfg, password), "", 1, 0, NULL,
     "SASL password.", UPM_CFG_SECRET},
};

static const struct upm_config_key ch_keys[] = {
    {"url", UPM_CFG_STRING, offsetof(struct ch_cfg, url), NULL, 1, 0, NULL, "ClickHouse URL.",
     UPM_CFG_REQUIRED},
    {"hosts", UPM_CFG_STRING_LIST, offsetof(struct ch_cfg, hosts), "", 1, 0, NULL, "Replica hosts.",
     0},
};

#define NKEYS(a) (sizeof(a) / sizeof((a)[0]))

/* log + kafka: no required key, so most tests need no boilerplate. */
static const struct upm_config_section base[] = {
    {"log", log_keys, NKEYS(log_keys), &log_cfg},
    {"kafka", kafka_keys, NKEYS(kafka_keys), &kafka_cfg},
};

/* base + ch, which has a required key. */
static const struct upm_config_section with_req[] = {
    {"log", log_keys, NKEYS(log_keys), &log_cfg},
    {"kafka", kafka_keys, NKEYS(kafka_keys), &kafka_cfg},
    {"ch", ch_keys, NKEYS(ch_keys), &ch_cfg},
};

static char err[1024];

#define assert_contains(hay, needle)                                                               \
    do {                                                                                           \
        const char *h_ = (hay), *n_ = (needle);                                                    \
        if (!h_ || !strstr(h_, n_))                                                                \
            fail_msg("expected \"%s\" in \"%s\"", n_, h_ ? h_ : "(null)");                         \
    } while (0)

#define assert_not_contains(hay, needle)                                                           \
    do {                                                                                           \
        const char *h_ = (hay), *n_ = (needle);                                                    \
        if (strstr(h_, n_))                                                                        \
            fail_msg("did not expect \"%s\" in \"%s\"", n_, h_);                                   \
    } while (0)

static int load(const char *yaml)
{
    memset(err, 0, sizeof(err));
    return upm_config_load_string(base, NKEYS(base), yaml, strlen(yaml), "t.yaml", err,
                                  sizeof(err));
}

static int load_req(const char *yaml)
{
    memset(err, 0, sizeof(err));
    return upm_config_load_string(with_req, NKEYS(with_req), yaml, strlen(yaml), "t.yaml", err,
                                  sizeof(err));
}

/* Expect the load to fail and the message to hold every needle. */
static void expect_fail(const char *yaml, const char *const *needles)
{
    int rc = load(yaml);
    if (rc != -1)
        fail_msg("load of \"%s\" should fail", yaml);
    for (const char *const *n = needles; *n; n++)
        assert_contains(err, *n);
}

/* Remove every UPMON_* variable but the harness's own, so tests do not
 * leak environment into each other. */
static void clear_upmon_env(void)
{
    extern char **environ;
    for (;;) {
        char name[256] = "";
        for (char **e = environ; *e; e++) {
            if (strncmp(*e, "UPMON_", 6) == 0 && strncmp(*e, "UPMON_TEST_DATA=", 16) != 0) {
                size_t n = strcspn(*e, "=");
                if (n >= sizeof(name))
                    n = sizeof(name) - 1;
                memcpy(name, *e, n);
                name[n] = '\0';
                break;
            }
        }
        if (!name[0])
            return;
        unsetenv(name);
    }
}

static int setup(void **state)
{
    clear_upmon_env();
    return 0;
}

static int teardown(void **state)
{
    upm_config_free(with_req, NKEYS(with_req));
    clear_upmon_env();
    return 0;
}

static char *write_temp(const char *content)
{
    char *path = upm_strdup("/tmp/upmon-test-config-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t len = strlen(content);
    assert_int_equal(write(fd, content, len), (ssize_t)len);
    close(fd);
    return path;
}

static char *capture(void (*fn)(const struct upm_config_section *, size_t, FILE *),
                     const struct upm_config_section *sections, size_t n)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    fn(sections, n, f);
    fclose(f);
    return text;
}

/* ---- tests ------------------------------------------------------------ */

static void test_defaults_only(void **state)
{
    assert_int_equal(load(""), 0);
    assert_string_equal(log_cfg.level, "info");
    assert_false(log_cfg.json);
    assert_int_equal(kafka_cfg.brokers.count, 1);
    assert_string_equal(kafka_cfg.brokers.items[0], "127.0.0.1:9092");
    assert_string_equal(kafka_cfg.topic, "upmon.events.v1");
    assert_int_equal(kafka_cfg.batch, 1000);
    assert_true(kafka_cfg.ratio == 0.5);
    assert_int_equal(kafka_cfg.timeout_ms, 10000);
    assert_string_equal(kafka_cfg.password, "");

    /* Documents that hold no settings are all-defaults too. */
    const char *empties[] = {"# only a comment\n", "---\n", "~\n", "log:\n", "log: ~\nkafka:\n"};
    for (size_t i = 0; i < NKEYS(empties); i++) {
        if (load(empties[i]) != 0)
            fail_msg("\"%s\": %s", empties[i], err);
        assert_int_equal(kafka_cfg.batch, 1000);
    }
    /* No file at all. */
    assert_int_equal(upm_config_load(base, NKEYS(base), NULL, err, sizeof(err)), 0);
    assert_string_equal(log_cfg.level, "info");
}

static void test_file_overrides(void **state)
{
    char *path = write_temp("log:\n"
                            "  level: warn\n"
                            "  json: yes\n"
                            "kafka:\n"
                            "  brokers:\n"
                            "    - k1:9092\n"
                            "    - k2:9092\n"
                            "  topic: \"other\"\n"
                            "  batch: 500\n"
                            "  ratio: 0.25\n"
                            "  timeout: 250ms\n");
    int rc = upm_config_load(base, NKEYS(base), path, err, sizeof(err));
    unlink(path);
    free(path);
    if (rc != 0)
        fail_msg("%s", err);
    assert_string_equal(log_cfg.level, "warn");
    assert_true(log_cfg.json);
    assert_int_equal(kafka_cfg.brokers.count, 2);
    assert_string_equal(kafka_cfg.brokers.items[0], "k1:9092");
    assert_string_equal(kafka_cfg.brokers.items[1], "k2:9092");
    assert_string_equal(kafka_cfg.topic, "other");
    assert_int_equal(kafka_cfg.batch, 500);
    assert_true(kafka_cfg.ratio == 0.25);
    assert_int_equal(kafka_cfg.timeout_ms, 250);
    assert_string_equal(kafka_cfg.password, ""); /* not in the file: default */
}

static void test_env_overrides_file(void **state)
{
    setenv("UPMON_KAFKA_TOPIC", "from-env", 1);
    setenv("UPMON_KAFKA_BATCH", "42", 1);
    setenv("UPMON_LOG_JSON", "On", 1);
    setenv("UPMON_KAFKA_TIMEOUT", "2m", 1);
    setenv("UPMON_KAFKA_BROKERS", " e1:1, e2:2 ,e3:3", 1);
    setenv("UPMON_STATE_DIR", "/whatever", 1); /* no such section: someone else's */
    int rc = load("kafka:\n  topic: from-file\n  batch: 7\n  ratio: 0.75\n");
    if (rc != 0)
        fail_msg("%s", err);
    assert_string_equal(kafka_cfg.topic, "from-env");
    assert_int_equal(kafka_cfg.batch, 42);
    assert_true(log_cfg.json);
    assert_int_equal(kafka_cfg.timeout_ms, 120000);
    assert_true(kafka_cfg.ratio == 0.75); /* file value where no env var is set */
    assert_int_equal(kafka_cfg.brokers.count, 3);
    assert_string_equal(kafka_cfg.brokers.items[0], "e1:1");
    assert_string_equal(kafka_cfg.brokers.items[1], "e2:2");
    assert_string_equal(kafka_cfg.brokers.items[2], "e3:3");
}

static void test_env_bad_value_and_typo(void **state)
{
    setenv("UPMON_KAFKA_BATCH", "12abc", 1);
    assert_int_equal(load(""), -1);
    assert_contains(err, "UPMON_KAFKA_BATCH");
    assert_contains(err, "kafka.batch");
    assert_contains(err, "12abc");
    unsetenv("UPMON_KAFKA_BATCH");

    setenv("UPMON_KAFKA_TOPK", "x", 1);
    assert_int_equal(load(""), -1);
    assert_contains(err, "UPMON_KAFKA_TOPK");
    assert_contains(err, "did you mean UPMON_KAFKA_TOPIC");
    unsetenv("UPMON_KAFKA_TOPK");

    setenv("UPMON_LOG_", "x", 1); /* a section's namespace, but no key at all */
    assert_int_equal(load(""), -1);
    assert_contains(err, "UPMON_LOG_");
    unsetenv("UPMON_LOG_");

    setenv("UPMON_KAFKA_ZZZZZZZZ", "x", 1);
    assert_int_equal(load(""), -1);
    assert_contains(err, "UPMON_KAFKA_ZZZZZZZZ");
    assert_not_contains(err, "did you mean");
    unsetenv("UPMON_KAFKA_ZZZZZZZZ");

    setenv("UPMON_KAFKA_BROKERS", "a,,b", 1);
    assert_int_equal(load(""), -1);
    assert_contains(err, "UPMON_KAFKA_BROKERS");
    assert_contains(err, "empty item");
    unsetenv("UPMON_KAFKA_BROKERS");

    assert_int_equal(load(""), 0);
}

static void check_bad_values(const char *key, const char *const *bad, size_t n, const char *expect)
{
    char yaml[256], needle[128];
    for (size_t i = 0; i < n; i++) {
        /* Quoted, so leading blanks and empty strings reach the parser. */
        snprintf(yaml, sizeof(yaml), "kafka:\n  %s: \"%s\"\n", key, bad[i]);
        snprintf(needle, sizeof(needle), "kafka.%s", key);
        const char *needles[] = {"t.yaml:2:", needle, expect, NULL};
        expect_fail(yaml, needles);
    }
}

static void test_int_errors(void **state)
{
    const char *bad[] = {
        "12abc", "", " 12", "12 ", "1e3", "0x10", "99999999999999999999", "-99999999999999999999",
        "1.0",   "+"};
    check_bad_values("batch", bad, NKEYS(bad), "expected a decimal 64-bit integer");
    /* The accepted forms, for contrast. */
    assert_int_equal(load("kafka:\n  batch: +17\n"), 0);
    assert_int_equal(kafka_cfg.batch, 17);
    assert_int_equal(load("kafka:\n  batch: \"0100\"\n"), 0);
    assert_int_equal(kafka_cfg.batch, 100);
}

static void test_double_errors(void **state)
{
    const char *bad[] = {"nan",   "NaN", "inf",  "-inf", "1e999",   "0x1p-2",
                         "1.2.3", "",    " 0.5", "0.5x", "infinity"};
    check_bad_values("ratio", bad, NKEYS(bad), "expected a finite decimal number");
    assert_int_equal(load("kafka:\n  ratio: 2.5e-1\n"), 0);
    assert_true(kafka_cfg.ratio == 0.25);
    assert_int_equal(load("kafka:\n  ratio: 1\n"), 0);
    assert_true(kafka_cfg.ratio == 1.0);
}

static void test_bool_parsing(void **state)
{
    const char *bad[] = {"maybe", "", "2", "tru", "y", " true"};
    char yaml[128];
    for (size_t i = 0; i < NKEYS(bad); i++) {
        snprintf(yaml, sizeof(yaml), "log:\n  json: \"%s\"\n", bad[i]);
        const char *needles[] = {"t.yaml:2:9", "log.json", "expected a bool", NULL};
        expect_fail(yaml, needles);
    }
    const struct {
        const char *text;
        bool value;
    } good[] = {{"TRUE", true},   {"Yes", true}, {"on", true},   {"1", true},
                {"false", false}, {"NO", false}, {"Off", false}, {"0", false}};
    for (size_t i = 0; i < NKEYS(good); i++) {
        snprintf(yaml, sizeof(yaml), "log:\n  json: %s\n", good[i].text);
        assert_int_equal(load(yaml), 0);
        if (log_cfg.json != good[i].value)
            fail_msg("%s parsed as %d", good[i].text, log_cfg.json);
    }
}

static void test_duration_parsing(void **state)
{
    const struct {
        const char *text;
        int64_t ms;
    } good[] = {
        {"0", 0},       {"42", 42},      {"250ms", 250},    {"10s", 10000},
        {"5m", 300000}, {"1h", 3600000}, {"7d", 604800000}, {"9223372036854775807", INT64_MAX}};
    for (size_t i = 0; i < NKEYS(good); i++) {
        int64_t v = -1;
        if (upm_config_parse_duration_ms(good[i].text, &v) != 0 || v != good[i].ms)
            fail_msg("%s -> %lld", good[i].text, (long long)v);
    }
    const char *bad[] = {"",
                         "s",
                         "10x",
                         "-5s",
                         "1.5s",
                         "10 s",
                         " 10s",
                         "10S",
                         "1h30m",
                         "9223372036854775808",
                         "9223372036854775807s",
                         "106751991167301d",
                         NULL};
    for (size_t i = 0; bad[i]; i++) {
        int64_t v = 12345;
        if (upm_config_parse_duration_ms(bad[i], &v) != -1)
            fail_msg("\"%s\" accepted as %lld", bad[i], (long long)v);
        assert_int_equal(v, 12345); /* untouched on error */
    }
    assert_int_equal(upm_config_parse_duration_ms(NULL, &(int64_t){0}), -1);
    check_bad_values("timeout", bad, NKEYS(bad) - 1, "expected a duration");
}

static void test_enum_errors(void **state)
{
    const char *needles[] = {"t.yaml:2:10", "log.level", "\"INFO\"", "debug, info, warn, error",
                             NULL};
    expect_fail("log:\n  level: INFO\n", needles); /* choices are case-sensitive */
    assert_int_equal(load("log:\n  level: debug\n"), 0);
    assert_string_equal(log_cfg.level, "debug");
}

static void test_out_of_range(void **state)
{
    const char *n1[] = {"t.yaml:2:10", "kafka.batch", "value 0 ", "[1, 100000]", NULL};
    expect_fail("kafka:\n  batch: 0\n", n1);
    const char *n2[] = {"kafka.batch", "value 100001 ", "[1, 100000]", NULL};
    expect_fail("kafka:\n  batch: 100001\n", n2);
    const char *n3[] = {"kafka.ratio", "value 1.5 ", "[0, 1]", NULL};
    expect_fail("kafka:\n  ratio: 1.5\n", n3);
    const char *n4[] = {"kafka.timeout", "value 61m ", "[1ms, 1h]", NULL};
    expect_fail("kafka:\n  timeout: 61m\n", n4);
    const char *n5[] = {"kafka.timeout", "value 0 ", "[1ms, 1h]", NULL};
    expect_fail("kafka:\n  timeout: 0\n", n5);
    /* Both bounds are inclusive. */
    assert_int_equal(load("kafka:\n  batch: 100000\n  ratio: 0\n  timeout: 1h\n"), 0);
    assert_int_equal(kafka_cfg.batch, 100000);
    assert_int_equal(kafka_cfg.timeout_ms, 3600000);
    /* Range applies to env values too. */
    setenv("UPMON_KAFKA_BATCH", "-1", 1);
    assert_int_equal(load(""), -1);
    assert_contains(err, "UPMON_KAFKA_BATCH");
    assert_contains(err, "[1, 100000]");
}

static void test_unknown_section_and_key(void **state)
{
    const char *n1[] = {"t.yaml:1:1", "unknown section \"kafak\"", "did you mean \"kafka\"", NULL};
    expect_fail("kafak:\n  topic: x\n", n1);
    const char *n2[] = {"t.yaml:3:3", "kafka", "unknown key \"topik\"", "did you mean \"topic\"",
                        NULL};
    expect_fail("kafka:\n  batch: 1\n  topik: x\n", n2);
    const char *n3[] = {"unknown key \"tpoic\"", "did you mean \"topic\"", NULL};
    expect_fail("kafka:\n  tpoic: x\n", n3); /* a swap counts as one edit */
    const char *n4[] = {"unknown key \"completely_else\"", NULL};
    expect_fail("kafka:\n  completely_else: x\n", n4);
    assert_not_contains(err, "did you mean");
    const char *n5[] = {"unknown section \"zz\"", NULL};
    expect_fail("zz: {}\n", n5);
    assert_not_contains(err, "did you mean");
}

static void test_yaml_syntax_error_location(void **state)
{
    /* A tab cannot start a token: line 2, column 1. */
    const char *n1[] = {"t.yaml:2:1: YAML syntax error", NULL};
    expect_fail("log:\n\tlevel: info\n", n1);
    /* The second ':' of "  level: info: b" is the 14th character of line 2. */
    const char *n2[] = {"t.yaml:2:14: YAML syntax error", "mapping values are not allowed", NULL};
    expect_fail("log:\n  level: info: b\n", n2);
    /* An unclosed flow sequence is noticed at the end of the input. */
    const char *n3[] = {"t.yaml:", "YAML syntax error", NULL};
    expect_fail("kafka:\n  brokers: [a, b\n", n3);
    /* Invalid UTF-8 is located too: the bad byte is the 9th character of line 3. */
    const char *n4[] = {"t.yaml:3:9: invalid input", NULL};
    expect_fail("log:\n  json: no\n  # bad \xff\n", n4);
}

static void test_structure_errors(void **state)
{
    const char *n1[] = {"t.yaml:3:5", "log.level", "got a mapping", NULL};
    expect_fail("log:\n  level:\n    x: 1\n", n1);
    const char *n2[] = {"t.yaml:1:1", "top level must be a mapping", NULL};
    expect_fail("- log\n- kafka\n", n2);
    const char *n3[] = {"t.yaml:1:6", "log", "expected a mapping of keys", NULL};
    expect_fail("log: [a]\n", n3);
    const char *n4[] = {"kafka.batch", "got a sequence", NULL};
    expect_fail("kafka:\n  batch: [1, 2]\n", n4);
    const char *n5[] = {"kafka.brokers", "list items must be scalars", NULL};
    expect_fail("kafka:\n  brokers:\n    - {a: 1}\n", n5);
    const char *n6[] = {"t.yaml:1:3", "section names must be scalars", NULL};
    expect_fail("? [a]\n: x\n", n6);
    const char *n7[] = {"t.yaml:2:5", "kafka", "keys must be scalars", NULL};
    expect_fail("kafka:\n  ? [a]\n  : x\n", n7);
    const char *n8[] = {"kafka.brokers", "empty item", NULL};
    expect_fail("kafka:\n  brokers: [a, \"\"]\n", n8);
}

static void test_anchors_tags_documents(void **state)
{
    const char *n1[] = {"t.yaml:2:10", "kafka.topic", "anchors are not supported", NULL};
    expect_fail("kafka:\n  topic: &t x\n  password: *t\n", n1);
    const char *n2[] = {"t.yaml:2:12", "kafka.brokers", "aliases are not supported", NULL};
    expect_fail("kafka:\n  brokers: *x\n", n2);
    const char *n3[] = {"t.yaml:2:10", "kafka.topic", "tag !custom is not supported", NULL};
    expect_fail("kafka:\n  topic: !custom x\n", n3);
    const char *n4[] = {"t.yaml:2:1", "only one YAML document", NULL};
    expect_fail("log: {}\n---\nkafka: {}\n", n4); /* at the second "---" */
    /* Core tags carry no surprise and are accepted. */
    assert_int_equal(load("kafka:\n  topic: !!str 12\n  batch: !!int 3\n"), 0);
    assert_string_equal(kafka_cfg.topic, "12");
    assert_int_equal(kafka_cfg.batch, 3);
}

static void test_duplicates(void **state)
{
    const char *n1[] = {"t.yaml:3:3", "log.level", "duplicate key", "line 2", NULL};
    expect_fail("log:\n  level: info\n  level: warn\n", n1);
    const char *n2[] = {"t.yaml:3:1", "log", "duplicate section", "line 1", NULL};
    expect_fail("log:\n  json: true\nlog:\n  level: warn\n", n2);
}

static void test_required(void **state)
{
    memset(err, 0, sizeof(err));
    assert_int_equal(load_req("log: {}\n"), -1);
    assert_contains(err, "ch.url");
    assert_contains(err, "required");
    assert_contains(err, "UPMON_CH_URL");

    assert_int_equal(load_req("ch:\n  url: \"\"\n"), -1);
    assert_contains(err, "ch.url");
    assert_contains(err, "empty");

    assert_int_equal(load_req("ch:\n  url: http://a:8123\n"), 0);
    assert_string_equal(ch_cfg.url, "http://a:8123");

    /* A reload without it must fail rather than keep the previous value. */
    assert_int_equal(load_req(""), -1);
    assert_null(ch_cfg.url);

    setenv("UPMON_CH_URL", "http://env:8123", 1);
    assert_int_equal(load_req(""), 0);
    assert_string_equal(ch_cfg.url, "http://env:8123");
}

static void test_string_lists(void **state)
{
    assert_int_equal(load("kafka:\n  brokers: [a:1, \"b,2\"]\n"), 0);
    assert_int_equal(kafka_cfg.brokers.count, 2);
    assert_string_equal(kafka_cfg.brokers.items[0], "a:1");
    assert_string_equal(kafka_cfg.brokers.items[1], "b,2"); /* sequence items kept whole */

    assert_int_equal(load("kafka:\n  brokers: x:1,y:2\n"), 0);
    assert_int_equal(kafka_cfg.brokers.count, 2);
    assert_string_equal(kafka_cfg.brokers.items[1], "y:2");

    assert_int_equal(load("kafka:\n  brokers: []\n"), 0);
    assert_int_equal(kafka_cfg.brokers.count, 0);
    assert_null(kafka_cfg.brokers.items);

    setenv("UPMON_KAFKA_BROKERS", "p:1,q:2", 1);
    assert_int_equal(load("kafka:\n  brokers: [a, b, c]\n"), 0);
    assert_int_equal(kafka_cfg.brokers.count, 2);
    assert_string_equal(kafka_cfg.brokers.items[0], "p:1");
    assert_string_equal(kafka_cfg.brokers.items[1], "q:2");
}

static void test_reload_without_leaks(void **state)
{
    /* Owned values of every kind replaced several times, successful and
     * failed loads mixed: the leak checker (ASan, valgrind) is the judge,
     * the assertions check the newest load wins. */
    for (int round = 0; round < 3; round++) {
        assert_int_equal(load("log:\n  level: warn\nkafka:\n  topic: t1\n  brokers: [a, b]\n"
                              "  password: s1\n"),
                         0);
        assert_string_equal(kafka_cfg.topic, "t1");
        assert_int_equal(load("kafka:\n  topic: t2\n  brokers: [c]\n"), 0);
        assert_string_equal(kafka_cfg.topic, "t2");
        assert_string_equal(log_cfg.level, "info"); /* back to its default */
        assert_string_equal(kafka_cfg.password, "");
        assert_int_equal(kafka_cfg.brokers.count, 1);
        assert_int_equal(load("kafka:\n  topic: t3\n  brokers: [d, e]\n  batch: 0\n"), -1);
    }
    upm_config_free(base, NKEYS(base));
    assert_null(log_cfg.level);
    assert_null(kafka_cfg.topic);
    assert_null(kafka_cfg.password);
    assert_null(kafka_cfg.brokers.items);
    assert_int_equal(kafka_cfg.brokers.count, 0);
    upm_config_free(base, NKEYS(base)); /* twice is harmless */
    upm_config_free(NULL, 3);
}

static void test_print_redacts_and_round_trips(void **state)
{
    assert_int_equal(load("log:\n  level: warn\n  json: true\n"
                          "kafka:\n  password: hunter2\n  topic: \"we\\\"ird: #x\"\n"
                          "  brokers: [a, b]\n  ratio: 0.1\n  timeout: 90s\n  batch: 77\n"),
                     0);
    char *text = capture(upm_config_print, base, NKEYS(base));
    assert_contains(text, "password: \"<redacted>\"");
    assert_not_contains(text, "hunter2");
    assert_contains(text, "timeout: 90s");

    /* The output is YAML this loader accepts, and gives the same values. */
    upm_config_free(base, NKEYS(base));
    if (load(text) != 0)
        fail_msg("printed config does not load: %s\n%s", err, text);
    assert_string_equal(log_cfg.level, "warn");
    assert_true(log_cfg.json);
    assert_string_equal(kafka_cfg.topic, "we\"ird: #x");
    assert_int_equal(kafka_cfg.brokers.count, 2);
    assert_string_equal(kafka_cfg.brokers.items[1], "b");
    assert_true(kafka_cfg.ratio == 0.1);
    assert_int_equal(kafka_cfg.timeout_ms, 90000);
    assert_int_equal(kafka_cfg.batch, 77);
    assert_string_equal(kafka_cfg.password, "<redacted>");
    free(text);
}

static void test_markdown_lists_every_key(void **state)
{
    char *md = capture(upm_config_dump_markdown, with_req, NKEYS(with_req));
    char needle[256];
    size_t rows = 0;
    for (size_t s = 0; s < NKEYS(with_req); s++) {
        for (size_t k = 0; k < with_req[s].nkeys; k++) {
            const struct upm_config_key *key = &with_req[s].keys[k];
            char env[128];
            snprintf(env, sizeof(env), "UPMON_%s_%s", with_req[s].name, key->name);
            for (char *c = env; *c; c++)
                if (*c >= 'a' && *c <= 'z')
                    *c = (char)(*c - 'a' + 'A');
            snprintf(needle, sizeof(needle), "| `%s.%s` | `%s` |", with_req[s].name, key->name,
                     env);
            assert_contains(md, needle);
            assert_contains(md, key->description);
            rows++;
        }
    }
    size_t lines = 0;
    for (const char *p = md; *p; p++)
        lines += *p == '\n';
    assert_int_equal(lines, rows + 2); /* header, separator, one row per key */
    assert_contains(md, "| Key | Environment variable | Type | Default | Range / choices |");
    assert_contains(md, "`debug`, `info`, `warn`, `error`");
    assert_contains(md, "[1, 100000]");
    assert_contains(md, "[1ms, 1h]");
    assert_contains(md, "*required*");
    assert_contains(md, "| duration | `10s` |");
    free(md);
}

static void test_missing_file(void **state)
{
    const char *path = "/nonexistent-upmon-dir/config.yaml";
    assert_int_equal(upm_config_load(base, NKEYS(base), path, err, sizeof(err)), -1);
    assert_contains(err, path);
    assert_contains(err, strerror(ENOENT));

    /* Opening a directory succeeds; reading it is what fails. */
    assert_int_equal(upm_config_load(base, NKEYS(base), "/tmp", err, sizeof(err)), -1);
    assert_contains(err, "/tmp");
    assert_contains(err, strerror(EISDIR));

    /* No error buffer: still fails cleanly. */
    assert_int_equal(upm_config_load(base, NKEYS(base), path, NULL, 0), -1);
    assert_int_equal(upm_config_load_string(base, NKEYS(base), "x: [", 4, NULL, NULL, 0), -1);
    /* A NULL document is the empty document; an unnamed one is "<string>". */
    assert_int_equal(upm_config_load_string(base, NKEYS(base), NULL, 0, NULL, err, sizeof(err)), 0);
    assert_int_equal(upm_config_load_string(base, NKEYS(base), "q: 1", 4, NULL, err, sizeof(err)),
                     -1);
    assert_contains(err, "<string>:1:1");
}

static void test_file_error_names_file(void **state)
{
    char *path = write_temp("kafka:\n  batch: lots\n");
    assert_int_equal(upm_config_load(base, NKEYS(base), path, err, sizeof(err)), -1);
    char needle[128];
    snprintf(needle, sizeof(needle), "%s:2:10: kafka.batch", path);
    assert_contains(err, needle);
    unlink(path);
    free(path);
}

static void test_limits(void **state)
{
    size_t n = 64 * 1024 + 1;
    char *yaml = upm_malloc(n + 64);
    int len = snprintf(yaml, 64, "kafka:\n  topic: ");
    memset(yaml + len, 'x', n);
    yaml[len + n] = '\n';
    yaml[len + n + 1] = '\0';
    const char *n1[] = {"kafka.topic", "longer than 65536", NULL};
    expect_fail(yaml, n1);
    /* Exactly 64 KiB is fine. */
    yaml[len + n - 1] = '\n';
    yaml[len + n] = '\0';
    assert_int_equal(load(yaml), 0);
    assert_int_equal(strlen(kafka_cfg.topic), n - 1);
    free(yaml);

    size_t big = 4 * 1024 * 1024 + 1;
    char *huge = upm_malloc(big + 1);
    memset(huge, '#', big);
    huge[big] = '\0';
    assert_int_equal(
        upm_config_load_string(base, NKEYS(base), huge, big, "big.yaml", err, sizeof(err)), -1);
    assert_contains(err, "big.yaml");
    assert_contains(err, "larger than");
    char *path = write_temp(huge);
    assert_int_equal(upm_config_load(base, NKEYS(base), path, err, sizeof(err)), -1);
    assert_contains(err, path);
    assert_contains(err, "larger than");
    unlink(path);
    free(path);
    free(huge);

    /* A double-quoted "\0" must not truncate the value silently. */
    const char *n2[] = {"kafka.topic", "NUL", NULL};
    expect_fail("kafka:\n  topic: \"ab\\0cd\"\n", n2);
}

static void test_bad_table_is_programming_error(void **state)
{
    struct {
        int64_t n;
    } t = {0};
    const struct upm_config_key bad_default[] = {
        {"n", UPM_CFG_INT, 0, "ten", 1, 0, NULL, "A number.", 0},
    };
    const struct upm_config_section s1[] = {{"x", bad_default, 1, &t}};
    assert_int_equal(upm_config_load_string(s1, 1, "", 0, "t", err, sizeof(err)), -1);
    assert_contains(err, "x.n");
    assert_contains(err, "programming error");

    const struct upm_config_key out_of_range[] = {
        {"n", UPM_CFG_INT, 0, "0", 1, 10, NULL, "A number.", 0},
    };
    const struct upm_config_section s2[] = {{"x", out_of_range, 1, &t}};
    assert_int_equal(upm_config_load_string(s2, 1, "", 0, "t", err, sizeof(err)), -1);
    assert_contains(err, "programming error");

    const struct upm_config_key no_default[] = {
        {"n", UPM_CFG_INT, 0, NULL, 1, 0, NULL, "A number.", 0},
    };
    const struct upm_config_section s3[] = {{"x", no_default, 1, &t}};
    assert_int_equal(upm_config_load_string(s3, 1, "", 0, "t", err, sizeof(err)), -1);
    assert_contains(err, "programming error");

    const struct upm_config_key clash[] = {
        {"b_c", UPM_CFG_INT, 0, "1", 1, 0, NULL, "A number.", 0},
    };
    const struct upm_config_key clash2[] = {
        {"c", UPM_CFG_INT, 0, "1", 1, 0, NULL, "A number.", 0},
    };
    const struct upm_config_section s4[] = {{"a", clash, 1, &t}, {"a_b", clash2, 1, &t}};
    assert_int_equal(upm_config_load_string(s4, 2, "", 0, "t", err, sizeof(err)), -1);
    assert_contains(err, "UPMON_A_B_C");
    assert_contains(err, "programming error");

    const struct upm_config_key upper[] = {
        {"Bad", UPM_CFG_INT, 0, "1", 1, 0, NULL, "A number.", 0},
    };
    const struct upm_config_section s5[] = {{"x", upper, 1, &t}};
    assert_int_equal(upm_config_load_string(s5, 1, "", 0, "t", err, sizeof(err)), -1);
    assert_contains(err, "programming error");
}

static void test_env_names_map_dots_and_dashes(void **state)
{
    struct {
        char *v;
    } t = {NULL};
    const struct upm_config_key keys[] = {
        {"max-wait.ms", UPM_CFG_STRING, 0, "d", 1, 0, NULL, "Odd name.", 0},
    };
    const struct upm_config_section s[] = {{"my-sec", keys, 1, &t}};
    setenv("UPMON_MY_SEC_MAX_WAIT_MS", "from-env", 1);
    assert_int_equal(upm_config_load_string(s, 1, "", 0, "t", err, sizeof(err)), 0);
    assert_string_equal(t.v, "from-env");
    upm_config_free(s, 1);
    assert_null(t.v);
}

/* An external section is skipped whatever its shape, but still obeys the
 * file-wide YAML rules, and is not printed. */
static void test_external_section(void **state)
{
    const struct upm_config_section s[] = {
        {"log", log_keys, NKEYS(log_keys), &log_cfg},
        {"incidents", UPM_CFG_EXTERNAL, 0, NULL},
    };
    const char *ok = "incidents:\n  - {kind: spike, at: [1, 2]}\n  - x\nlog:\n  level: debug\n";
    assert_int_equal(upm_config_load_string(s, 2, ok, strlen(ok), "t", err, sizeof(err)), 0);
    assert_string_equal(log_cfg.level, "debug");
    const char *scalar = "incidents: 3\n";
    assert_int_equal(upm_config_load_string(s, 2, scalar, strlen(scalar), "t", err, sizeof(err)),
                     0);
    char *out = capture(upm_config_print, s, 2);
    assert_null(strstr(out, "incidents"));
    assert_non_null(strstr(out, "log:"));
    free(out);

    const char *alias = "incidents:\n  - &a {x: 1}\n  - *a\n";
    assert_int_equal(upm_config_load_string(s, 2, alias, strlen(alias), "t", err, sizeof(err)), -1);
    assert_contains(err, "t:2:");
    const char *dup = "incidents: []\nincidents: []\n";
    assert_int_equal(upm_config_load_string(s, 2, dup, strlen(dup), "t", err, sizeof(err)), -1);
    assert_contains(err, "duplicate section");
    /* Keys on an external section are a table bug. */
    const struct upm_config_section bad[] = {{"incidents", UPM_CFG_EXTERNAL, 1, NULL}};
    assert_int_equal(upm_config_load_string(bad, 1, "", 0, "t", err, sizeof(err)), -1);
    assert_contains(err, "programming error");
    upm_config_free(s, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_overrides, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_overrides_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_bad_value_and_typo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_int_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_double_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bool_parsing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duration_parsing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_enum_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_out_of_range, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_section_and_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_yaml_syntax_error_location, setup, teardown),
        cmocka_unit_test_setup_teardown(test_structure_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_anchors_tags_documents, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_required, setup, teardown),
        cmocka_unit_test_setup_teardown(test_string_lists, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload_without_leaks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_print_redacts_and_round_trips, setup, teardown),
        cmocka_unit_test_setup_teardown(test_markdown_lists_every_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_error_names_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_table_is_programming_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_names_map_dots_and_dashes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_external_section, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
