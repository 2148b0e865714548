#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "upmon/buf.h"
#include "upmon/event.h"

/* ---------------------------------------------------------------- helpers */

static const char *const cdn_hosts[] = {"cdn.example.com", ".static.example.net."};
static const struct upm_event_opts cdn_opts = {0, cdn_hosts, 2};

/* Marks a base field to drop in build(). */
static const char REMOVE[] = "<remove>";

/* The base event, field by field, in the order build() writes them. */
static const char *const base_keys[] = {
    "item_id", "attempt_id", "request_id", "event",      "ts_ns",       "is_created", "up_ts",
    "origin",  "origin_id",  "country",    "company_id", "category_id", "media",      "data"};
static const char *const base_vals[] = {
    "123456789",
    "\"att-1\"",
    "\"req-1\"",
    "\"SAVE\"",
    "1763800000123456789",
    "true",
    "1763800000223456789",
    "\"upload/ui\"",
    "\"ui-7\"",
    "\"DE\"",
    "42",
    "7",
    "[\"https://img.cdn.example.com/a.jpg\",\"http://other.example.org/b.png\",\"ftp://x/y\"]",
    "{ \"k\" : \"v\", \"n\" : [1, 2] }",
};
#define NBASE (sizeof(base_keys) / sizeof(base_keys[0]))

/*
 * The base event with overrides: pairs of (key, raw JSON value) ending with
 * NULL. A key of the base replaces its value (REMOVE drops it); any other key
 * is appended. Returns a malloc'd NUL-terminated string.
 */
static char *build(const char *key, ...)
{
    const char *okeys[16], *ovals[16];
    size_t nover = 0;
    va_list ap;
    va_start(ap, key);
    for (const char *k = key; k; k = va_arg(ap, const char *)) {
        assert_true(nover < 16);
        okeys[nover] = k;
        ovals[nover] = va_arg(ap, const char *);
        nover++;
    }
    va_end(ap);

    struct upm_buf b;
    upm_buf_init(&b, 0);
    bool used[16] = {false};
    upm_buf_putc(&b, '{');
    bool first = true;
    for (size_t i = 0; i < NBASE; i++) {
        const char *v = base_vals[i];
        for (size_t j = 0; j < nover; j++) {
            if (strcmp(okeys[j], base_keys[i]) == 0) {
                v = ovals[j];
                used[j] = true;
            }
        }
        if (v == REMOVE)
            continue;
        upm_buf_printf(&b, "%s\"%s\":%s", first ? "" : ",", base_keys[i], v);
        first = false;
    }
    for (size_t j = 0; j < nover; j++)
        if (!used[j] && ovals[j] != REMOVE)
            upm_buf_printf(&b, ",\"%s\":%s", okeys[j], ovals[j]);
    upm_buf_putc(&b, '}');
    return upm_buf_steal(&b, NULL);
}

/* Parse len bytes from an exactly-sized heap copy with no terminating NUL, so
 * ASan catches any read past len. */
static int parse_n(const char *text, size_t len, const struct upm_event_opts *opts,
                   struct upm_event *ev, struct upm_event_error *err)
{
    char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, text, len);
    int rc = upm_event_parse(copy, len, opts, ev, err);
    free(copy);
    return rc;
}

static int parse(const char *text, struct upm_event *ev, struct upm_event_error *err)
{
    return parse_n(text, strlen(text), &cdn_opts, ev, err);
}

/* Expect a rejection with this reason and field, and an event left empty. */
static void expect_reject_n(const char *what, const char *text, size_t len,
                            enum upm_event_reason reason, const char *field)
{
    struct upm_event ev;
    struct upm_event_error err;
    int rc = parse_n(text, len, &cdn_opts, &ev, &err);
    if (rc != -1 || err.reason != reason || strcmp(err.field, field) != 0) {
        print_error("case %s: got rc=%d %s field=\"%s\" (%s), want %s field=\"%s\"\n", what, rc,
                    upm_event_reason_name(err.reason), err.field, err.detail,
                    upm_event_reason_name(reason), field);
        if (rc == 0)
            upm_event_clear(&ev);
        fail();
    }
    /* a failed parse owns nothing */
    assert_null(ev.data);
    assert_null(ev.media);
    assert_true(strlen(err.detail) > 0);
    assert_true(strlen(err.detail) <= UPM_EVENT_DETAIL_MAX);
}

static void expect_reject(const char *what, const char *text, enum upm_event_reason reason,
                          const char *field)
{
    expect_reject_n(what, text, strlen(text), reason, field);
}

/* One override of the base, expected to be rejected. */
static void reject1(const char *key, const char *val, enum upm_event_reason reason,
                    const char *field)
{
    char *json = build(key, val, (char *)NULL);
    char what[200];
    snprintf(what, sizeof(what), "%s=%.60s", key, val == REMOVE ? "<removed>" : val);
    expect_reject(what, json, reason, field);
    free(json);
}

static void expect_ok(const char *what, const char *text, struct upm_event *ev)
{
    struct upm_event_error err;
    if (parse(text, ev, &err) != 0) {
        print_error("case %s: rejected %s field=\"%s\" (%s)\n", what,
                    upm_event_reason_name(err.reason), err.field, err.detail);
        fail();
    }
    assert_int_equal(err.reason, UPM_EVENT_OK);
}

static char *repeat(const char *unit, size_t times)
{
    struct upm_buf b;
    upm_buf_init(&b, 0);
    for (size_t i = 0; i < times; i++)
        upm_buf_puts(&b, unit);
    return upm_buf_steal(&b, NULL);
}

/* ------------------------------------------------------------------ valid */

static void test_valid_save_all_fields(void **state)
{
    char *json = build(NULL);
    struct upm_event ev;
    expect_ok("base", json, &ev);
    assert_int_equal(ev.type, UPM_EVENT_SAVE);
    assert_true(ev.item_id == 123456789u);
    assert_string_equal(ev.attempt_id, "att-1");
    assert_string_equal(ev.request_id, "req-1");
    /* exact: a double would give ...123456768 */
    assert_true(ev.ts_ns == INT64_C(1763800000123456789));
    assert_true(ev.is_created);
    assert_true(ev.up_ts == INT64_C(1763800000223456789));
    assert_string_equal(ev.origin, "upload/ui");
    assert_string_equal(ev.origin_id, "ui-7");
    assert_string_equal(ev.country, "DE");
    assert_true(ev.company_id == 42u);
    assert_true(ev.category_id == 7u);
    assert_int_equal(ev.n_media, 3);
    assert_string_equal(ev.media[0], "https://img.cdn.example.com/a.jpg");
    assert_string_equal(ev.media[2], "ftp://x/y");
    assert_int_equal(ev.media_own, 1);
    assert_int_equal(ev.media_external, 1);
    assert_int_equal(ev.media_bad, 1);
    /* whitespace outside strings removed, nothing else touched */
    assert_string_equal(ev.data, "{\"k\":\"v\",\"n\":[1,2]}");
    assert_int_equal(ev.data_len, strlen(ev.data));
    upm_event_clear(&ev);
    assert_null(ev.data);
    upm_event_clear(&ev); /* clearing twice is harmless */
    free(json);
}

static void test_valid_update_and_error(void **state)
{
    struct upm_event ev;
    char *json = build("event", "\"UPDATE\"", "is_created", "false", "up_ts", REMOVE, (char *)NULL);
    expect_ok("update", json, &ev);
    assert_int_equal(ev.type, UPM_EVENT_UPDATE);
    assert_false(ev.is_created);
    assert_true(ev.up_ts == 0);
    upm_event_clear(&ev);
    free(json);

    json = build("event", "\"ERROR\"", "is_created", "false", "up_ts", "0", (char *)NULL);
    expect_ok("error", json, &ev);
    assert_int_equal(ev.type, UPM_EVENT_ERROR);
    assert_string_equal(upm_event_type_name(ev.type), "ERROR");
    upm_event_clear(&ev);
    free(json);
}

static void test_optional_defaults(void **state)
{
    struct upm_event ev;
    char *json = build("is_created", "false", "up_ts", REMOVE, "origin_id", REMOVE, "media", REMOVE,
                       "data", REMOVE, (char *)NULL);
    expect_ok("defaults", json, &ev);
    assert_true(ev.up_ts == 0);
    assert_string_equal(ev.origin_id, "");
    assert_int_equal(ev.n_media, 0);
    assert_null(ev.media);
    assert_int_equal(ev.media_own + ev.media_external + ev.media_bad, 0);
    assert_string_equal(ev.data, "{}");
    assert_int_equal(ev.data_len, 2);
    upm_event_clear(&ev);
    free(json);

    json = build("v", "1", "media", "[]", "data", "{}", (char *)NULL);
    expect_ok("v=1", json, &ev);
    upm_event_clear(&ev);
    free(json);
}

static void test_exact_64bit_limits(void **state)
{
    struct upm_event ev;
    char *json = build("item_id", "18446744073709551615", "company_id", "18446744073709551614",
                       "category_id", "0", "ts_ns", "9223372036854775807", "up_ts",
                       "9223372036854775806", (char *)NULL);
    expect_ok("limits", json, &ev);
    assert_true(ev.item_id == UINT64_MAX);
    assert_true(ev.company_id == UINT64_MAX - 1);
    assert_true(ev.category_id == 0);
    assert_true(ev.ts_ns == INT64_MAX);
    assert_true(ev.up_ts == INT64_MAX - 1);
    upm_event_clear(&ev);
    free(json);

    /* neighbours that a double cannot tell apart stay distinct */
    struct upm_event a, b;
    char *ja = build("ts_ns", "1763800000123456789", (char *)NULL);
    char *jb = build("ts_ns", "1763800000123456790", (char *)NULL);
    expect_ok("a", ja, &a);
    expect_ok("b", jb, &b);
    assert_true(b.ts_ns - a.ts_ns == 1);
    assert_false(upm_event_equal(&a, &b));
    upm_event_clear(&a);
    upm_event_clear(&b);
    free(ja);
    free(jb);
}

static void test_unknown_fields_ignored(void **state)
{
    struct upm_event a, b;
    char *plain = build(NULL);
    char *extra = build("extra", "{\"nested\":[1,{\"x\":null}],\"big\":1e400}", "zzz", "null", "",
                        "\"empty key\"", "item", "\"not item_id\"", (char *)NULL);
    expect_ok("plain", plain, &a);
    expect_ok("extra", extra, &b);
    assert_true(upm_event_equal(&a, &b));
    upm_event_clear(&a);
    upm_event_clear(&b);
    free(plain);
    free(extra);
}

static void test_escapes_decoded(void **state)
{
    struct upm_event ev;
    /* escaped key names the same field; a surrogate pair decodes to U+1F600 */
    const char *json =
        "{\"item\\u005fid\":1,\"attempt_id\":\"a\\\"b\\\\c\\/d\\n\\t\\u00e9\","
        "\"request_id\":\"\\ud83d\\ude00\",\"event\":\"SAVE\",\"ts_ns\":1,"
        "\"is_created\":false,\"origin\":\"o\",\"country\":\"\\u0055S\",\"company_id\":2,"
        "\"category_id\":3}";
    expect_ok("escapes", json, &ev);
    assert_true(ev.item_id == 1);
    assert_string_equal(ev.attempt_id, "a\"b\\c/d\n\t\xc3\xa9");
    assert_string_equal(ev.request_id, "\xf0\x9f\x98\x80");
    assert_string_equal(ev.country, "US");
    upm_event_clear(&ev);
}

static void test_string_limits_count_bytes(void **state)
{
    struct upm_event ev;
    char *s64 = repeat("x", 64);
    char *v = NULL;
    assert_true(asprintf(&v, "\"%s\"", s64) > 0);
    char *json = build("attempt_id", v, "request_id", v, "origin", v, "origin_id", v, (char *)NULL);
    expect_ok("64 bytes", json, &ev);
    assert_string_equal(ev.attempt_id, s64);
    assert_string_equal(ev.origin_id, s64);
    upm_event_clear(&ev);
    free(json);
    free(v);
    free(s64);

    /* 32 two-byte characters fit, 33 do not: the limit is bytes */
    char *e32 = repeat("\xc3\xa9", 32), *e33 = repeat("\xc3\xa9", 33);
    char *v32 = NULL, *v33 = NULL;
    assert_true(asprintf(&v32, "\"%s\"", e32) > 0);
    assert_true(asprintf(&v33, "\"%s\"", e33) > 0);
    json = build("origin", v32, (char *)NULL);
    expect_ok("32 x e-acute", json, &ev);
    assert_string_equal(ev.origin, e32);
    upm_event_clear(&ev);
    free(json);
    reject1("origin", v33, UPM_EVENT_TOO_LONG, "origin");
    /* an escape counts as the byte it decodes to */
    char *esc = repeat("\\u0041", 64);
    char *vesc = NULL;
    assert_true(asprintf(&vesc, "\"%s\"", esc) > 0);
    json = build("request_id", vesc, (char *)NULL);
    expect_ok("64 escaped", json, &ev);
    assert_int_equal(strlen(ev.request_id), 64);
    upm_event_clear(&ev);
    free(json);
    free(esc);
    free(vesc);
    free(e32);
    free(e33);
    free(v32);
    free(v33);
}

/* ------------------------------------------------------------- rejections */

static void test_missing_each_required_field(void **state)
{
    static const char *const required[] = {"item_id",    "attempt_id", "request_id", "event",
                                           "ts_ns",      "is_created", "origin",     "country",
                                           "company_id", "category_id"};
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++)
        reject1(required[i], REMOVE, UPM_EVENT_MISSING_FIELD, required[i]);
}

static void test_integer_fields(void **state)
{
    static const char *const u64f[] = {"item_id", "company_id", "category_id"};
    char *long_num = repeat("9", 64);
    for (size_t i = 0; i < 3; i++) {
        const char *f = u64f[i];
        reject1(f, "1.5", UPM_EVENT_WRONG_TYPE, f);
        reject1(f, "1.0", UPM_EVENT_WRONG_TYPE, f);
        reject1(f, "1e3", UPM_EVENT_WRONG_TYPE, f);
        reject1(f, "10E-1", UPM_EVENT_WRONG_TYPE, f);
        reject1(f, "-1", UPM_EVENT_OUT_OF_RANGE, f);
        reject1(f, "-0", UPM_EVENT_OUT_OF_RANGE, f);
        reject1(f, "18446744073709551616", UPM_EVENT_OUT_OF_RANGE, f);
        reject1(f, "99999999999999999999999", UPM_EVENT_OUT_OF_RANGE, f);
        reject1(f, "\"123\"", UPM_EVENT_WRONG_TYPE, f); /* digits as a string: strict */
        reject1(f, "null", UPM_EVENT_WRONG_TYPE, f);
        reject1(f, "true", UPM_EVENT_WRONG_TYPE, f);
        reject1(f, "[1]", UPM_EVENT_WRONG_TYPE, f);
        reject1(f, long_num, UPM_EVENT_TOO_LONG, f);
        /* not JSON at all, so the syntax check answers first */
        reject1(f, "+1", UPM_EVENT_INVALID_JSON, f);
        reject1(f, "01", UPM_EVENT_INVALID_JSON, f);
        reject1(f, "0x10", UPM_EVENT_INVALID_JSON, f);
        reject1(f, "1.", UPM_EVENT_INVALID_JSON, f);
        reject1(f, "NaN", UPM_EVENT_INVALID_JSON, f);
    }
    reject1("ts_ns", "0", UPM_EVENT_OUT_OF_RANGE, "ts_ns");
    reject1("ts_ns", "-5", UPM_EVENT_OUT_OF_RANGE, "ts_ns");
    reject1("ts_ns", "9223372036854775808", UPM_EVENT_OUT_OF_RANGE, "ts_ns");
    reject1("ts_ns", "-9223372036854775809", UPM_EVENT_OUT_OF_RANGE, "ts_ns");
    reject1("ts_ns", "1.7638e18", UPM_EVENT_WRONG_TYPE, "ts_ns");
    reject1("ts_ns", "\"1763800000123456789\"", UPM_EVENT_WRONG_TYPE, "ts_ns");
    reject1("up_ts", "-1", UPM_EVENT_OUT_OF_RANGE, "up_ts");
    reject1("up_ts", "9223372036854775808", UPM_EVENT_OUT_OF_RANGE, "up_ts");
    reject1("up_ts", "null", UPM_EVENT_WRONG_TYPE, "up_ts");
    free(long_num);
}

static void test_created_and_up_ts(void **state)
{
    char *json = build("is_created", "false", "up_ts", "5", (char *)NULL);
    expect_reject("up_ts without created", json, UPM_EVENT_UP_TS_WITHOUT_CREATED, "up_ts");
    free(json);
    /* is_created needs the time it went live: 0 or absent is rejected */
    reject1("up_ts", "0", UPM_EVENT_OUT_OF_RANGE, "up_ts");
    reject1("up_ts", REMOVE, UPM_EVENT_OUT_OF_RANGE, "up_ts");
    reject1("is_created", "1", UPM_EVENT_WRONG_TYPE, "is_created");
    reject1("is_created", "\"true\"", UPM_EVENT_WRONG_TYPE, "is_created");
    reject1("is_created", "null", UPM_EVENT_WRONG_TYPE, "is_created");
}

static void test_string_fields(void **state)
{
    char *s65 = repeat("y", 65);
    char *v65 = NULL;
    assert_true(asprintf(&v65, "\"%s\"", s65) > 0);
    static const char *const sf[] = {"attempt_id", "request_id", "origin", "origin_id"};
    for (size_t i = 0; i < 4; i++) {
        reject1(sf[i], v65, UPM_EVENT_TOO_LONG, sf[i]);
        reject1(sf[i], "42", UPM_EVENT_WRONG_TYPE, sf[i]);
        reject1(sf[i], "null", UPM_EVENT_WRONG_TYPE, sf[i]);
        reject1(sf[i], "[\"a\"]", UPM_EVENT_WRONG_TYPE, sf[i]);
    }
    reject1("attempt_id", "\"\"", UPM_EVENT_OUT_OF_RANGE, "attempt_id");
    free(s65);
    free(v65);

    reject1("event", "\"save\"", UPM_EVENT_UNKNOWN_EVENT, "event");
    reject1("event", "\"DELETE\"", UPM_EVENT_UNKNOWN_EVENT, "event");
    reject1("event", "\"SAVE \"", UPM_EVENT_UNKNOWN_EVENT, "event");
    reject1("event", "\"\"", UPM_EVENT_UNKNOWN_EVENT, "event");
    reject1("event", "1", UPM_EVENT_WRONG_TYPE, "event");
}

static void test_country(void **state)
{
    reject1("country", "\"de\"", UPM_EVENT_BAD_COUNTRY, "country");
    reject1("country", "\"UK\"", UPM_EVENT_BAD_COUNTRY, "country"); /* GB is assigned */
    reject1("country", "\"EU\"", UPM_EVENT_BAD_COUNTRY, "country");
    reject1("country", "\"XK\"", UPM_EVENT_BAD_COUNTRY, "country");
    reject1("country", "\"DEU\"", UPM_EVENT_BAD_COUNTRY, "country");
    reject1("country", "\"D\"", UPM_EVENT_BAD_COUNTRY, "country");
    reject1("country", "\"\"", UPM_EVENT_BAD_COUNTRY, "country");
    reject1("country", "\"\\u00c4E\"", UPM_EVENT_BAD_COUNTRY, "country");
    reject1("country", "49", UPM_EVENT_WRONG_TYPE, "country");

    size_t assigned = 0;
    char cc[3] = {0};
    for (cc[0] = 'A'; cc[0] <= 'Z'; cc[0]++)
        for (cc[1] = 'A'; cc[1] <= 'Z'; cc[1]++)
            assigned += upm_event_country_valid(cc);
    assert_int_equal(assigned, 249);
    assert_true(upm_event_country_valid("AD")); /* first */
    assert_true(upm_event_country_valid("ZW")); /* last */
    assert_true(upm_event_country_valid("SS"));
    assert_true(upm_event_country_valid("RU"));
    assert_false(upm_event_country_valid("AA"));
    assert_false(upm_event_country_valid("Ru"));
    assert_false(upm_event_country_valid(""));
    assert_false(upm_event_country_valid(NULL));
}

static void test_media_and_data_shape(void **state)
{
    reject1("media", "\"http://a.example.com/x\"", UPM_EVENT_BAD_MEDIA, "media");
    reject1("media", "{}", UPM_EVENT_BAD_MEDIA, "media");
    reject1("media", "null", UPM_EVENT_BAD_MEDIA, "media");
    struct upm_buf b;
    upm_buf_init(&b, 0);
    upm_buf_putc(&b, '[');
    for (int i = 0; i < 65; i++)
        upm_buf_printf(&b, "%s\"https://e.example.com/%d\"", i ? "," : "", i);
    upm_buf_putc(&b, ']');
    reject1("media", b.data, UPM_EVENT_BAD_MEDIA, "media");
    /* 64 is fine */
    upm_buf_reset(&b);
    upm_buf_putc(&b, '[');
    for (int i = 0; i < 64; i++)
        upm_buf_printf(&b, "%s\"https://e.example.com/%d\"", i ? "," : "", i);
    upm_buf_putc(&b, ']');
    char *json = build("media", b.data, (char *)NULL);
    struct upm_event ev;
    expect_ok("64 media", json, &ev);
    assert_int_equal(ev.n_media, 64);
    assert_int_equal(ev.media_external, 64);
    upm_event_clear(&ev);
    free(json);
    upm_buf_free(&b);

    reject1("data", "[]", UPM_EVENT_WRONG_TYPE, "data");
    reject1("data", "\"{}\"", UPM_EVENT_WRONG_TYPE, "data");
    reject1("data", "null", UPM_EVENT_WRONG_TYPE, "data");
}

static char *data_of_size(size_t compact_len, const char *pad)
{
    /* {"a":"xxx"} is 8 bytes plus the x's; pad goes between tokens */
    char *xs = repeat("x", compact_len - 8);
    char *v = NULL;
    assert_true(asprintf(&v, "{%s\"a\"%s:%s\"%s\"%s}", pad, pad, pad, xs, pad) > 0);
    free(xs);
    return v;
}

static void test_data_limit(void **state)
{
    struct upm_event ev;
    char *d = data_of_size(UPM_EVENT_DATA_MAX, "   \n\t ");
    char *json = build("data", d, (char *)NULL);
    expect_ok("data at limit, padded", json, &ev);
    assert_int_equal(ev.data_len, UPM_EVENT_DATA_MAX);
    assert_int_equal(ev.data[0], '{');
    assert_int_equal(ev.data[1], '"');
    upm_event_clear(&ev);
    free(json);
    free(d);

    d = data_of_size(UPM_EVENT_DATA_MAX + 1, "");
    reject1("data", d, UPM_EVENT_DATA_TOO_LARGE, "data");
    free(d);

    /* numbers inside data keep every digit */
    json = build("data", "{\"big\": 1763800000123456789, \"f\": 1.50e+3, \"s\": \"a b\"}",
                 (char *)NULL);
    expect_ok("data numbers", json, &ev);
    assert_string_equal(ev.data, "{\"big\":1763800000123456789,\"f\":1.50e+3,\"s\":\"a b\"}");
    upm_event_clear(&ev);
    free(json);
}

static void test_version(void **state)
{
    reject1("v", "2", UPM_EVENT_UNSUPPORTED_VERSION, "v");
    reject1("v", "0", UPM_EVENT_UNSUPPORTED_VERSION, "v");
    reject1("v", "1.0", UPM_EVENT_UNSUPPORTED_VERSION, "v");
    reject1("v", "-1", UPM_EVENT_UNSUPPORTED_VERSION, "v");
    reject1("v", "\"1\"", UPM_EVENT_WRONG_TYPE, "v");
    reject1("v", "null", UPM_EVENT_WRONG_TYPE, "v");
    /* a v2 message is reported as such even when v1 fields are missing */
    char *json = build("v", "2", "item_id", REMOVE, "country", "\"??\"", (char *)NULL);
    expect_reject("v2 without v1 fields", json, UPM_EVENT_UNSUPPORTED_VERSION, "v");
    free(json);
}

static void test_duplicate_keys(void **state)
{
    char *json = build("x", "1", (char *)NULL);
    size_t n = strlen(json);
    /* append a second item_id: cJSON alone would silently keep the first */
    char *dup = NULL;
    assert_true(asprintf(&dup, "%.*s,\"item_id\":99}", (int)(n - 1), json) > 0);
    expect_reject("dup item_id", dup, UPM_EVENT_DUPLICATE_FIELD, "item_id");
    free(dup);
    assert_true(asprintf(&dup, "%.*s,\"item\\u005fid\":99}", (int)(n - 1), json) > 0);
    expect_reject("dup escaped", dup, UPM_EVENT_DUPLICATE_FIELD, "item_id");
    free(dup);
    assert_true(asprintf(&dup, "%.*s,\"x\":2}", (int)(n - 1), json) > 0);
    expect_reject("dup unknown", dup, UPM_EVENT_DUPLICATE_FIELD, "x");
    free(dup);
    assert_true(asprintf(&dup, "%.*s,\"\":1,\"\":2}", (int)(n - 1), json) > 0);
    expect_reject("dup empty key", dup, UPM_EVENT_DUPLICATE_FIELD, "");
    free(dup);
    /* keys equal up to a prefix are not duplicates */
    assert_true(asprintf(&dup, "%.*s,\"xy\":2,\"x\\u0079z\":3}", (int)(n - 1), json) > 0);
    struct upm_event ev;
    expect_ok("prefix keys", dup, &ev);
    upm_event_clear(&ev);
    free(dup);
    free(json);

    /* inside data, duplicates are kept as sent */
    json = build("data", "{\"a\":1,\"a\":2}", (char *)NULL);
    expect_ok("dup in data", json, &ev);
    assert_string_equal(ev.data, "{\"a\":1,\"a\":2}");
    upm_event_clear(&ev);
    free(json);
}

static void test_structure(void **state)
{
    expect_reject_n("empty", "", 0, UPM_EVENT_INVALID_JSON, "");
    expect_reject("spaces", "   ", UPM_EVENT_INVALID_JSON, "");
    expect_reject("array", "[1,2]", UPM_EVENT_NOT_OBJECT, "");
    expect_reject("string", "\"x\"", UPM_EVENT_NOT_OBJECT, "");
    expect_reject("number", "12", UPM_EVENT_NOT_OBJECT, "");
    expect_reject("null", "null", UPM_EVENT_NOT_OBJECT, "");
    expect_reject("broken array", "[1,", UPM_EVENT_INVALID_JSON, "");
    expect_reject("unclosed", "{\"item_id\":1", UPM_EVENT_INVALID_JSON, "item_id");
    expect_reject("trailing comma", "{\"a\":1,}", UPM_EVENT_INVALID_JSON, "");
    expect_reject("single quotes", "{'a':1}", UPM_EVENT_INVALID_JSON, "");
    expect_reject("two objects", "{} {}", UPM_EVENT_INVALID_JSON, "");
    expect_reject("bom", "\xef\xbb\xbf{}", UPM_EVENT_INVALID_JSON, "");
    expect_reject("raw newline in string", "{\"a\":\"x\ny\"}", UPM_EVENT_INVALID_JSON, "a");
    expect_reject("bad escape", "{\"a\":\"\\x\"}", UPM_EVENT_INVALID_JSON, "a");
    expect_reject("short \\u", "{\"a\":\"\\u12\"}", UPM_EVENT_INVALID_JSON, "a");
    expect_reject("tru", "{\"a\":tru}", UPM_EVENT_INVALID_JSON, "a");
    expect_reject("comment", "{/* */}", UPM_EVENT_INVALID_JSON, "");
    expect_reject_n("NUL byte", "{\"a\":1}\0 ", 9, UPM_EVENT_INVALID_JSON, "");

    /* a valid event with a stray byte after it, and trailing whitespace */
    char *json = build(NULL), *t = NULL;
    assert_true(asprintf(&t, "%s x", json) > 0);
    expect_reject("trailing x", t, UPM_EVENT_INVALID_JSON, "");
    free(t);
    assert_true(asprintf(&t, " \r\n\t%s \r\n\t", json) > 0);
    struct upm_event ev;
    expect_ok("surrounding whitespace", t, &ev);
    upm_event_clear(&ev);
    free(t);
    free(json);
}

static void test_not_nul_terminated(void **state)
{
    char *json = build(NULL);
    size_t n = strlen(json);
    /* the bytes after len look like more JSON; they must not be read */
    char *big = malloc(n + 16);
    memcpy(big, json, n);
    memcpy(big + n, ",\"x\":1}garbage", 15);
    struct upm_event ev;
    struct upm_event_error err;
    assert_int_equal(upm_event_parse(big, n, NULL, &ev, &err), 0);
    upm_event_clear(&ev);
    /* every proper prefix is rejected, each from an exact-size copy */
    for (size_t cut = 0; cut < n; cut++) {
        struct upm_event e2;
        assert_int_equal(parse_n(json, cut, NULL, &e2, &err), -1);
        assert_true(err.reason == UPM_EVENT_INVALID_JSON || err.reason == UPM_EVENT_TOO_LONG ||
                    err.reason == UPM_EVENT_INVALID_UTF8);
    }
    free(big);
    free(json);
}

static void test_oversize(void **state)
{
    char *json = build(NULL);
    size_t n = strlen(json);
    struct upm_event_opts opts = {n, NULL, 0};
    struct upm_event ev;
    struct upm_event_error err;
    assert_int_equal(parse_n(json, n, &opts, &ev, &err), 0);
    upm_event_clear(&ev);
    opts.max_message_bytes = n - 1;
    assert_int_equal(parse_n(json, n, &opts, &ev, &err), -1);
    assert_int_equal(err.reason, UPM_EVENT_OVERSIZE);
    assert_string_equal(upm_event_reason_name(err.reason), "oversize");
    free(json);

    /* default limit: 1 MiB, checked before anything is read */
    size_t big = UPM_EVENT_DEFAULT_MAX_BYTES + 1;
    char *blob = malloc(big);
    memset(blob, 0xff, big); /* invalid UTF-8 too: oversize must win */
    assert_int_equal(upm_event_parse(blob, big, NULL, &ev, &err), -1);
    assert_int_equal(err.reason, UPM_EVENT_OVERSIZE);
    free(blob);
}

static void test_invalid_utf8(void **state)
{
    static const struct {
        const char *what;
        const char *bytes;
    } bad[] = {
        {"overlong slash", "\xc0\xaf"},
        {"overlong 2-byte", "\xc1\xbf"},
        {"overlong 3-byte", "\xe0\x80\xaf"},
        {"overlong 4-byte", "\xf0\x80\x80\xaf"},
        {"surrogate D800", "\xed\xa0\x80"},
        {"surrogate DFFF", "\xed\xbf\xbf"},
        {"above U+10FFFF", "\xf4\x90\x80\x80"},
        {"F5 lead", "\xf5\x80\x80\x80"},
        {"FF", "\xff"},
        {"lone continuation", "\x80"},
        {"truncated 3-byte", "\xe2\x82"},
        {"truncated 4-byte", "\xf0\x9f\x98"},
        {"lead then ASCII", "\xc3"
                            "A"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *v = NULL;
        assert_true(asprintf(&v, "\"ab%s\"", bad[i].bytes) > 0);
        char *json = build("origin", v, (char *)NULL);
        struct upm_event ev;
        struct upm_event_error err;
        assert_int_equal(parse(json, &ev, &err), -1);
        if (err.reason != UPM_EVENT_INVALID_UTF8) {
            print_error("case %s: got %s\n", bad[i].what, upm_event_reason_name(err.reason));
            fail();
        }
        /* the offset points at the first bad byte, right after "ab */
        const char *at = strstr(json, "\"ab") + 3;
        assert_int_equal(err.offset, (size_t)(at - json));
        free(json);
        free(v);
    }
    /* truncated sequence at the very end of the buffer */
    char *json = build(NULL), *t = NULL;
    assert_true(asprintf(&t, "%s\xe2\x82", json) > 0);
    expect_reject("truncated at end", t, UPM_EVENT_INVALID_UTF8, "");
    free(t);
    free(json);
    /* the boundaries that are valid */
    json = build("origin", "\"\xf4\x8f\xbf\xbf \xee\x80\x80 \xed\x9f\xbf \xc2\x80\"", (char *)NULL);
    struct upm_event ev;
    expect_ok("valid boundaries", json, &ev);
    upm_event_clear(&ev);
    free(json);
}

static void test_bad_escapes(void **state)
{
    reject1("origin", "\"a\\ud800\"", UPM_EVENT_INVALID_UTF8, "origin");
    reject1("origin", "\"a\\udc00b\"", UPM_EVENT_INVALID_UTF8, "origin");
    reject1("origin", "\"\\ud800\\u0041\"", UPM_EVENT_INVALID_UTF8, "origin");
    reject1("origin", "\"\\ud800\\ud800\"", UPM_EVENT_INVALID_UTF8, "origin");
    reject1("origin", "\"\\ude00\\ud83d\"", UPM_EVENT_INVALID_UTF8, "origin");
    reject1("origin", "\"a\\u0000b\"", UPM_EVENT_NUL_IN_STRING, "origin");
    /* anywhere: in data, in unknown fields, in keys */
    reject1("data", "{\"k\":[\"\\ud800\"]}", UPM_EVENT_INVALID_UTF8, "data");
    reject1("extra", "\"\\u0000\"", UPM_EVENT_NUL_IN_STRING, "extra");
    expect_reject("NUL in key", "{\"a\\u0000\":1}", UPM_EVENT_NUL_IN_STRING, "");
}

static void test_nesting(void **state)
{
    /* top object = 1, data = 2, so 62 more levels reach the limit exactly */
    char *open = repeat("[", UPM_EVENT_MAX_DEPTH - 2),
         *close = repeat("]", UPM_EVENT_MAX_DEPTH - 2);
    char *d = NULL;
    assert_true(asprintf(&d, "{\"a\":%s%s}", open, close) > 0);
    char *json = build("data", d, (char *)NULL);
    struct upm_event ev;
    expect_ok("depth 64", json, &ev);
    upm_event_clear(&ev);
    free(json);
    free(d);
    assert_true(asprintf(&d, "{\"a\":[%s%s]}", open, close) > 0);
    reject1("data", d, UPM_EVENT_TOO_DEEP, "data");
    free(d);
    free(open);
    free(close);

    /* a bomb: 500k open brackets, at the top level and inside a field */
    size_t deep = 500000;
    char *bomb = repeat("[", deep);
    expect_reject("bomb", bomb, UPM_EVENT_TOO_DEEP, "");
    char *b2 = NULL;
    assert_true(asprintf(&b2, "{\"zz\":%s", bomb) > 0);
    expect_reject("bomb in field", b2, UPM_EVENT_TOO_DEEP, "zz");
    free(b2);
    free(bomb);
    bomb = repeat("{\"a\":", deep / 5); /* 500 kB, under the size limit */
    expect_reject("object bomb", bomb, UPM_EVENT_TOO_DEEP, "a");
    free(bomb);
}

/* ------------------------------------------------------ errors and names */

static void test_reason_names(void **state)
{
    static const char *const want[] = {
        "ok",
        "invalid_json",
        "not_object",
        "oversize",
        "invalid_utf8",
        "missing_field",
        "wrong_type",
        "out_of_range",
        "too_long",
        "unknown_event",
        "up_ts_without_created",
        "bad_country",
        "bad_media",
        "data_too_large",
        "unsupported_version",
        "duplicate_field",
        "too_deep",
        "nul_in_string",
    };
    /* stable: a renamed or renumbered reason breaks DLQ consumers */
    assert_int_equal(sizeof(want) / sizeof(want[0]), UPM_EVENT_REASON_COUNT);
    for (int r = 0; r < UPM_EVENT_REASON_COUNT; r++)
        assert_string_equal(upm_event_reason_name((enum upm_event_reason)r), want[r]);
    assert_string_equal(upm_event_reason_name(UPM_EVENT_REASON_COUNT), "unknown");
    assert_string_equal(upm_event_reason_name((enum upm_event_reason) - 1), "unknown");
    assert_string_equal(upm_event_type_name(UPM_EVENT_SAVE), "SAVE");
    assert_string_equal(upm_event_type_name(UPM_EVENT_UPDATE), "UPDATE");
    assert_string_equal(upm_event_type_name(UPM_EVENT_NONE), "NONE");
}

static bool printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
            return false;
    return true;
}

static void test_error_text_bounded_and_printable(void **state)
{
    struct upm_event ev;
    struct upm_event_error err;
    /* a 100-byte non-ASCII key duplicated: the field is truncated and cleaned */
    char *key = repeat("\xc3\xa9", 50);
    char *json = NULL;
    assert_true(asprintf(&json, "{\"%s\":1,\"%s\":2}", key, key) > 0);
    assert_int_equal(parse(json, &ev, &err), -1);
    assert_int_equal(err.reason, UPM_EVENT_DUPLICATE_FIELD);
    assert_int_equal(strlen(err.field), UPM_EVENT_FIELD_MAX);
    assert_true(printable(err.field));
    free(json);
    free(key);

    /* an unknown event value with control characters and length */
    char *junk = repeat("\\n\\u0001\xe2\x82\xac", 40);
    char *v = NULL;
    assert_true(asprintf(&v, "\"%s\"", junk) > 0);
    json = build("event", v, (char *)NULL);
    assert_int_equal(parse(json, &ev, &err), -1);
    assert_int_equal(err.reason, UPM_EVENT_UNKNOWN_EVENT);
    assert_true(strlen(err.detail) <= UPM_EVENT_DETAIL_MAX);
    assert_true(printable(err.detail));
    assert_string_equal(err.field, "event");
    free(json);
    free(v);
    free(junk);

    /* err may be NULL */
    assert_int_equal(upm_event_parse("[]", 2, NULL, &ev, NULL), -1);
}

/* ----------------------------------------------------------------- media */

static void test_media_classification(void **state)
{
    static const struct {
        const char *url;
        enum upm_media_class want;
    } cases[] = {
        {"https://cdn.example.com/a.jpg", UPM_MEDIA_OWN},
        {"http://img1.cdn.example.com/a.jpg", UPM_MEDIA_OWN},
        {"HTTPS://IMG.CDN.EXAMPLE.COM/A.JPG", UPM_MEDIA_OWN},
        {"https://cdn.example.com.:8443/a?x=1#f", UPM_MEDIA_OWN},
        {"https://user:pw@cdn.example.com/a", UPM_MEDIA_OWN},
        {"https://x.static.example.net", UPM_MEDIA_OWN}, /* config had dots around */
        {"https://static.example.net/p", UPM_MEDIA_OWN},
        {"https://evilcdn.example.com/a", UPM_MEDIA_EXTERNAL}, /* suffix, not a label */
        {"https://cdn.example.com.evil.org/a", UPM_MEDIA_EXTERNAL},
        {"https://cdn.example.com@evil.org/a", UPM_MEDIA_EXTERNAL},
        {"http://other.example.org/b.png", UPM_MEDIA_EXTERNAL},
        {"http://localhost", UPM_MEDIA_EXTERNAL},
        {"http://192.0.2.1:80/x", UPM_MEDIA_EXTERNAL},
        {"http://[2001:db8::1]:8080/x", UPM_MEDIA_EXTERNAL},
        {"http://[::1]", UPM_MEDIA_EXTERNAL},
        {"https://a.example.com/\xc3\xa9", UPM_MEDIA_EXTERNAL},
        {"ftp://cdn.example.com/a", UPM_MEDIA_BAD},
        {"cdn.example.com/a.jpg", UPM_MEDIA_BAD},
        {"//cdn.example.com/a.jpg", UPM_MEDIA_BAD},
        {"https:/cdn.example.com/a", UPM_MEDIA_BAD},
        {"https://", UPM_MEDIA_BAD}, /* found by fuzzing: read past n */
        {"http://?x", UPM_MEDIA_BAD},
        {"http://#", UPM_MEDIA_BAD},
        {"https:///a", UPM_MEDIA_BAD},
        {"https://:80/a", UPM_MEDIA_BAD},
        {"https://user@/a", UPM_MEDIA_BAD},
        {"https://a b.com/", UPM_MEDIA_BAD},
        {"https://a.com/x y", UPM_MEDIA_BAD},
        {"https://a.com/\tx", UPM_MEDIA_BAD},
        {"https://a.com/\x7f", UPM_MEDIA_BAD},
        {"https://a..com/", UPM_MEDIA_BAD},
        {"https://.a.com/", UPM_MEDIA_BAD},
        {"https://-a.com/", UPM_MEDIA_BAD},
        {"https://a-.com/", UPM_MEDIA_BAD},
        {"https://a.com:/", UPM_MEDIA_BAD},
        {"https://a.com:0/", UPM_MEDIA_BAD},
        {"https://a.com:65536/", UPM_MEDIA_BAD},
        {"https://a.com:8o/", UPM_MEDIA_BAD},
        {"https://[::1/", UPM_MEDIA_BAD},
        {"https://[::1]x/", UPM_MEDIA_BAD},
        {"https://\xc3\xa9.com/", UPM_MEDIA_BAD}, /* IDN must come as punycode */
        {"javascript:alert(1)", UPM_MEDIA_BAD},
        {"", UPM_MEDIA_BAD},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        /* exact-size copy: a read past n would be caught by ASan */
        size_t n = strlen(cases[i].url);
        char *copy = malloc(n ? n : 1);
        memcpy(copy, cases[i].url, n);
        enum upm_media_class got = upm_event_media_classify(copy, n, &cdn_opts);
        free(copy);
        if (got != cases[i].want) {
            print_error("url \"%s\": got %d, want %d\n", cases[i].url, got, cases[i].want);
            fail();
        }
    }
    /* without CDN hosts nothing is own */
    assert_int_equal(upm_event_media_classify("https://cdn.example.com/a", 25, NULL),
                     UPM_MEDIA_EXTERNAL);
    /* length counts, not the NUL: only the first 8 bytes are the URL */
    assert_int_equal(upm_event_media_classify("https://cdn.example.com", 8, &cdn_opts),
                     UPM_MEDIA_BAD);
    char *longurl = repeat("a", UPM_EVENT_URL_MAX);
    memcpy(longurl, "https://x.com/", 14);
    assert_int_equal(upm_event_media_classify(longurl, strlen(longurl), NULL), UPM_MEDIA_EXTERNAL);
    free(longurl);
    longurl = repeat("a", UPM_EVENT_URL_MAX + 1);
    memcpy(longurl, "https://x.com/", 14);
    assert_int_equal(upm_event_media_classify(longurl, strlen(longurl), NULL), UPM_MEDIA_BAD);
    free(longurl);

    /* in an event: non-strings are counted bad and kept as NULL */
    char *json = build("media",
                       "[\"https://cdn.example.com/1\", 5, null, {\"u\":1}, \"https://x.org/\","
                       " \"bad url\", \"https://a.static.example.net/2\"]",
                       (char *)NULL);
    struct upm_event ev;
    expect_ok("mixed media", json, &ev);
    assert_int_equal(ev.n_media, 7);
    assert_int_equal(ev.media_own, 2);
    assert_int_equal(ev.media_external, 1);
    assert_int_equal(ev.media_bad, 4);
    assert_null(ev.media[1]);
    assert_null(ev.media[3]);
    assert_string_equal(ev.media[5], "bad url");
    upm_event_clear(&ev);
    free(json);
}

/* --------------------------------------------------------- serialization */

static void roundtrip(const char *what, const char *json)
{
    struct upm_event a, b;
    struct upm_event_error err;
    struct upm_buf out, out2;
    expect_ok(what, json, &a);
    upm_buf_init(&out, 0);
    upm_buf_init(&out2, 0);
    assert_int_equal(upm_event_serialize(&a, &out), 0);
    if (parse_n(out.data, out.len, &cdn_opts, &b, &err) != 0) {
        print_error("case %s: serialized form rejected: %s field=%s (%s)\n%s\n", what,
                    upm_event_reason_name(err.reason), err.field, err.detail, out.data);
        fail();
    }
    if (!upm_event_equal(&a, &b)) {
        print_error("case %s: round trip differs:\n%s\n", what, out.data);
        fail();
    }
    /* canonical: serializing the copy gives the same bytes */
    assert_int_equal(upm_event_serialize(&b, &out2), 0);
    assert_int_equal(out.len, out2.len);
    assert_memory_equal(out.data, out2.data, out.len);
    upm_event_clear(&a);
    upm_event_clear(&b);
    upm_buf_free(&out);
    upm_buf_free(&out2);
}

static void test_roundtrip(void **state)
{
    char *j[6];
    j[0] = build(NULL);
    j[1] = build("item_id", "18446744073709551615", "ts_ns", "9223372036854775807", "up_ts", "1",
                 "company_id", "0", (char *)NULL);
    j[2] = build("attempt_id", "\"q\\\"b\\\\s\\/\\b\\f\\n\\r\\t\\u0001\\u001f\\u007f\"", "origin",
                 "\"\\u00e9\\u20ac\\ud83d\\ude00 \xe2\x82\xac\"", (char *)NULL);
    j[3] = build("media", "[null, 1, \"https://cdn.example.com/x\\ny\", \"\"]", "data",
                 "{ \"a\" : { \"b\" : [ 1 , 2.5e-3 , \"x y\\\" z\" ] } }", (char *)NULL);
    j[4] = build("event", "\"ERROR\"", "is_created", "false", "up_ts", REMOVE, "origin_id", REMOVE,
                 "media", REMOVE, "data", REMOVE, "v", "1", (char *)NULL);
    j[5] = build("request_id", "\"\"", "origin", "\"\"", (char *)NULL);
    for (size_t i = 0; i < 6; i++) {
        char what[16];
        snprintf(what, sizeof(what), "rt%zu", i);
        roundtrip(what, j[i]);
        free(j[i]);
    }

    /* the exact canonical text of one event */
    struct upm_event ev;
    char *json = build("media", "[\"https://cdn.example.com/a\", 5]", "data", "{ }", (char *)NULL);
    expect_ok("canonical", json, &ev);
    struct upm_buf out;
    upm_buf_init(&out, 0);
    assert_int_equal(upm_event_serialize(&ev, &out), 0);
    assert_string_equal(
        out.data,
        "{\"v\":1,\"item_id\":123456789,\"attempt_id\":\"att-1\",\"request_id\":\"req-1\","
        "\"event\":\"SAVE\",\"ts_ns\":1763800000123456789,\"is_created\":true,"
        "\"up_ts\":1763800000223456789,\"origin\":\"upload/ui\",\"origin_id\":\"ui-7\","
        "\"country\":\"DE\",\"company_id\":42,\"category_id\":7,"
        "\"media\":[\"https://cdn.example.com/a\",null],\"data\":{}}");

    /* appends after existing content; a too-small limit fails cleanly */
    size_t full = out.len;
    struct upm_buf small;
    upm_buf_init(&small, full - 1);
    upm_buf_puts(&small, "prefix");
    assert_int_equal(upm_event_serialize(&ev, &small), -1);
    assert_int_equal(small.len, 6);
    assert_string_equal(small.data, "prefix");
    upm_buf_free(&small);
    upm_buf_init(&small, full + 6);
    upm_buf_puts(&small, "prefix");
    assert_int_equal(upm_event_serialize(&ev, &small), 0);
    assert_string_equal(small.data + 6, out.data);
    upm_buf_free(&small);

    upm_buf_free(&out);
    upm_event_clear(&ev);
    free(json);
}

static void test_equal_detects_each_difference(void **state)
{
    char *json = build(NULL);
    struct upm_event a, b;
    expect_ok("a", json, &a);
    expect_ok("b", json, &b);
    assert_true(upm_event_equal(&a, &b));
    b.category_id++;
    assert_false(upm_event_equal(&a, &b));
    b.category_id--;
    b.origin_id[0] = 'U';
    assert_false(upm_event_equal(&a, &b));
    b.origin_id[0] = 'u';
    b.media[1][0] = 'H';
    assert_false(upm_event_equal(&a, &b));
    b.media[1][0] = 'h';
    b.data[b.data_len - 2] = '}';
    assert_false(upm_event_equal(&a, &b));
    b.data[b.data_len - 2] = ']';
    assert_true(upm_event_equal(&a, &b));
    free(b.media[2]);
    b.media[2] = NULL;
    assert_false(upm_event_equal(&a, &b));
    upm_event_clear(&a);
    upm_event_clear(&b);
    upm_event_clear(NULL);
    free(json);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_save_all_fields),
        cmocka_unit_test(test_valid_update_and_error),
        cmocka_unit_test(test_optional_defaults),
        cmocka_unit_test(test_exact_64bit_limits),
        cmocka_unit_test(test_unknown_fields_ignored),
        cmocka_unit_test(test_escapes_decoded),
        cmocka_unit_test(test_string_limits_count_bytes),
        cmocka_unit_test(test_missing_each_required_field),
        cmocka_unit_test(test_integer_fields),
        cmocka_unit_test(test_created_and_up_ts),
        cmocka_unit_test(test_string_fields),
        cmocka_unit_test(test_country),
        cmocka_unit_test(test_media_and_data_shape),
        cmocka_unit_test(test_data_limit),
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_duplicate_keys),
        cmocka_unit_test(test_structure),
        cmocka_unit_test(test_not_nul_terminated),
        cmocka_unit_test(test_oversize),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_bad_escapes),
        cmocka_unit_test(test_nesting),
        cmocka_unit_test(test_reason_names),
        cmocka_unit_test(test_error_text_bounded_and_printable),
        cmocka_unit_test(test_media_classification),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_equal_detects_each_difference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
