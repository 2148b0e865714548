/* siphash and evrow: the shard hash equals ClickHouse's sipHash64, and the
 * RowBinary row is byte-exact for the events_local contract. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "upmon/buf.h"
#include "upmon/event.h"
#include "upmon/evrow.h"
#include "upmon/siphash.h"

static void test_reference_vectors(void **state)
{
    (void)state;
    /* The SipHash-2-4 paper's vectors: key 00..0f, message 00..(n-1). */
    unsigned char msg[64];
    for (int i = 0; i < 64; i++)
        msg[i] = (unsigned char)i;
    uint64_t k0 = 0x0706050403020100ULL, k1 = 0x0f0e0d0c0b0a0908ULL;
    assert_int_equal(upm_siphash24(k0, k1, msg, 0), 0x726fdb47dd0e0e31ULL);
    assert_int_equal(upm_siphash24(k0, k1, msg, 1), 0x74f839c593dc67fdULL);
    assert_int_equal(upm_siphash24(k0, k1, msg, 2), 0x0d6c8009d9a94f5aULL);
    assert_int_equal(upm_siphash24(k0, k1, msg, 3), 0x85676696d7fb7e2dULL);
    assert_int_equal(upm_siphash24(k0, k1, msg, 15), 0xa129ca6149be45e5ULL);
    assert_int_equal(upm_siphash24(k0, k1, msg, 63), 0x958a324ceb064572ULL);
}

static void test_clickhouse_values(void **state)
{
    (void)state;
    /* SELECT sipHash64(...) on the ClickHouse 18.16 of the local stack. */
    assert_int_equal(upm_siphash64("", 0), 2202906307356721367ULL);
    assert_int_equal(upm_siphash64("a", 1), 10863254463029944905ULL);
    assert_int_equal(upm_siphash64("att-1-abc", 9), 15105761547269476794ULL);
    assert_int_equal(upm_siphash64("0123456789abcdefXYZ", 19), 3189208797652238260ULL);
    assert_int_equal(upm_siphash_shard("a", 1, 2), 10863254463029944905ULL % 2);
    assert_int_equal(upm_siphash_shard("att-1-abc", 9, 3), 15105761547269476794ULL % 3);
    assert_int_equal(upm_siphash_shard("x", 1, 1), 0);
}

static void test_day(void **state)
{
    (void)state;
    const int64_t day = 86400LL * 1000000000LL;
    assert_int_equal(upm_evrow_day(0), 0);
    assert_int_equal(upm_evrow_day(day - 1), 0);
    assert_int_equal(upm_evrow_day(day), 1);
    assert_int_equal(upm_evrow_day(20000 * day + 5), 20000);
    assert_int_equal(upm_evrow_day(-1), 0);
    assert_int_equal(upm_evrow_day(INT64_MAX), 65535);
}

static const char EVENT[] =
    "{\"item_id\":7,\"attempt_id\":\"ab\",\"request_id\":\"r\",\"event\":\"SAVE\","
    "\"ts_ns\":86400000000001,\"is_created\":true,\"up_ts\":258,\"origin\":\"o\","
    "\"origin_id\":\"\",\"country\":\"DE\",\"company_id\":513,\"category_id\":2,"
    "\"media\":[\"https://a.b/c\",5],\"data\":{\"x\":1}}";

static void test_row_bytes(void **state)
{
    (void)state;
    struct upm_event ev;
    struct upm_event_error err;
    assert_int_equal(upm_event_parse(EVENT, strlen(EVENT), NULL, &ev, &err), 0);
    struct upm_buf b;
    upm_buf_init(&b, 0);
    assert_int_equal(upm_evrow_encode(&b, &ev, 3, 0x0102030405LL), 0);

    /* clang-format off */
    static const unsigned char want[] = {
        0x01, 0x00,                                     /* event_date: day 1 */
        0x01, 0x00, 0x4f, 0x91, 0x94, 0x4e, 0x00, 0x00, /* ts_ns 86400000000001 */
        0x07, 0, 0, 0, 0, 0, 0, 0,                      /* item_id */
        0x02, 'a', 'b',                                 /* attempt_id */
        0x01, 'r',                                      /* request_id */
        0x01,                                           /* event SAVE */
        0x01,                                           /* is_created */
        0x02, 0x01, 0, 0, 0, 0, 0, 0,                   /* up_ts 258 */
        0x01, 'o',                                      /* origin */
        0x00,                                           /* origin_id "" */
        'D', 'E',                                       /* country FixedString(2) */
        0x01, 0x02, 0, 0, 0, 0, 0, 0,                   /* company_id 513 */
        0x02, 0, 0, 0, 0, 0, 0, 0,                      /* category_id */
        0x02, 0x0d, 'h', 't', 't', 'p', 's', ':', '/', '/', 'a', '.', 'b', '/', 'c',
        0x00,                                           /* media: non-string entry -> '' */
        0x00, 0x00,                                     /* media_own */
        0x01, 0x00,                                     /* media_external */
        0x00, 0x00,                                     /* media_bad */
        0x07, '{', '"', 'x', '"', ':', '1', '}',        /* data */
        0x03, 0, 0, 0,                                  /* kafka_partition */
        0x05, 0x04, 0x03, 0x02, 0x01, 0, 0, 0,          /* kafka_offset */
    };
    /* clang-format on */
    /* media_bad follows the event module's classification of the entry. */
    unsigned char expect[sizeof(want)];
    memcpy(expect, want, sizeof(want));
    size_t bad_at = sizeof(want) - 8 - 4 - 8 - 2;
    expect[bad_at] = (unsigned char)ev.media_bad;
    expect[bad_at - 2] = (unsigned char)ev.media_external;
    expect[bad_at - 4] = (unsigned char)ev.media_own;
    assert_int_equal(b.len, sizeof(expect));
    assert_memory_equal(b.data, expect, sizeof(expect));

    /* Deterministic: the same event and coordinates give the same bytes. */
    struct upm_buf b2;
    upm_buf_init(&b2, 0);
    assert_int_equal(upm_evrow_encode(&b2, &ev, 3, 0x0102030405LL), 0);
    assert_int_equal(b2.len, b.len);
    assert_memory_equal(b2.data, b.data, b.len);

    /* A limit that cuts the row leaves the buffer as it was. */
    struct upm_buf small;
    upm_buf_init(&small, 20);
    assert_int_equal(upm_buf_puts(&small, "xy"), 0);
    assert_int_equal(upm_evrow_encode(&small, &ev, 3, 1), -1);
    assert_int_equal(small.len, 2);
    upm_buf_free(&small);
    upm_buf_free(&b);
    upm_buf_free(&b2);
    upm_event_clear(&ev);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_vectors),
        cmocka_unit_test(test_clickhouse_values),
        cmocka_unit_test(test_day),
        cmocka_unit_test(test_row_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
