/* upmon-ingest's ranges: cuts are a pure function of the offsets and the
 * recorded end, the blocks are byte-identical when rebuilt, the metadata
 * round-trips, and DLQ headers carry the reason and source coordinates. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "dlq.h"
#include "range.h"
#include "upmon/event.h"
#include "upmon/siphash.h"

#define MS 1000000LL

static void make_event(struct upm_event *ev, int i)
{
    char json[512];
    snprintf(json, sizeof(json),
             "{\"item_id\":%d,\"attempt_id\":\"att-%d\",\"request_id\":\"r\",\"event\":\"UPDATE\","
             "\"ts_ns\":%d000,\"is_created\":false,\"origin\":\"o\",\"origin_id\":\"x\","
             "\"country\":\"FR\","
             "\"company_id\":1,\"category_id\":2}",
             i, i * 7919, i + 1);
    struct upm_event_error err;
    assert_int_equal(upm_event_parse(json, strlen(json), NULL, ev, &err), 0);
}

/* Feed offsets [from, to) (every 5th one rejected) with a clock step per
 * message; returns where the first cut happened (the range's end). */
static int64_t feed_until_cut(struct ing_range *r, const struct ing_limits *lim, int64_t from,
                              int64_t to, int64_t step_ns, enum ing_cut *cut)
{
    int64_t now = 1000 * MS;
    for (int64_t off = from; off < to; off++) {
        struct upm_event ev;
        make_event(&ev, (int)off);
        int rc = ing_range_add(r, off % 5 == 4 ? NULL : &ev, off, now);
        upm_event_clear(&ev);
        if (rc == 1) {
            *cut = ING_CUT_RECORDED;
            return r->next;
        }
        assert_int_equal(rc, 0);
        *cut = ing_range_cut(r, lim, now);
        if (*cut != ING_CUT_NONE)
            return r->next;
        now += step_ns;
    }
    *cut = ING_CUT_NONE;
    return r->next;
}

static void test_rows_cut_and_shards(void **state)
{
    (void)state;
    struct ing_limits lim = {.max_rows = 40, .max_bytes = 1 << 30, .max_age_ns = 1000 * MS};
    struct ing_range r;
    ing_range_init(&r, 2, 3, 100, -1);
    enum ing_cut cut;
    int64_t end = feed_until_cut(&r, &lim, 100, 1000, 0, &cut);
    assert_int_equal(cut, ING_CUT_ROWS);
    assert_int_equal(r.nvalid, 40);
    assert_int_equal(r.nmsgs, 49); /* the 9 rejected ones move the range on too */
    assert_int_equal(end, 149);
    size_t sum = 0;
    for (uint32_t s = 0; s < 3; s++)
        sum += r.shard_rows[s];
    assert_int_equal(sum, 40);
    /* Each row sits in the shard of its attempt_id. */
    for (int64_t off = 100; off < 149; off++) {
        if (off % 5 == 4)
            continue;
        char id[32];
        snprintf(id, sizeof(id), "att-%d", (int)off * 7919);
        uint32_t s = upm_siphash_shard(id, strlen(id), 3);
        assert_non_null(memmem(r.blocks[s].data, r.blocks[s].len, id, strlen(id)));
    }
    ing_range_free(&r);
    ing_range_free(&r); /* twice is harmless */
}

static void test_age_cut_then_replay_is_identical(void **state)
{
    (void)state;
    /* First owner: a slow stream, cut by age at some offset. */
    struct ing_limits lim = {.max_rows = 1000, .max_bytes = 1 << 30, .max_age_ns = 30 * MS};
    struct ing_range a;
    ing_range_init(&a, 0, 2, 0, -1);
    enum ing_cut cut;
    int64_t end = feed_until_cut(&a, &lim, 0, 500, 7 * MS, &cut);
    assert_int_equal(cut, ING_CUT_AGE);
    assert_true(end > 1 && end < 500);

    char meta[128];
    assert_int_equal(ing_meta_format(meta, sizeof(meta), end, 2), 0);
    int64_t rec_end = -1;
    uint32_t nshards = 0;
    assert_int_equal(ing_meta_parse(meta, &rec_end, &nshards), 0);
    assert_int_equal(rec_end, end);
    assert_int_equal(nshards, 2);

    /* After a crash, a consumer with other limits and another clock (a fast
     * replay) must rebuild exactly the same range from the recorded end. */
    struct ing_limits other = {.max_rows = 3, .max_bytes = 64, .max_age_ns = 0};
    struct ing_range b;
    ing_range_init(&b, 0, 2, 0, rec_end);
    int64_t end2 = feed_until_cut(&b, &other, 0, 500, 0, &cut);
    assert_int_equal(end2, end);
    assert_int_equal(ing_range_cut(&b, &other, 0), ING_CUT_RECORDED);
    for (uint32_t s = 0; s < 2; s++) {
        assert_int_equal(b.blocks[s].len, a.blocks[s].len);
        assert_memory_equal(b.blocks[s].data, a.blocks[s].data, a.blocks[s].len);
    }
    /* The next message belongs to the next range. */
    assert_int_equal(ing_range_add(&b, NULL, end, 0), 1);
    /* Going backwards means the caller's view is stale. */
    assert_int_equal(ing_range_add(&b, NULL, 0, 0), -1);

    ing_range_reset(&b, end, -1);
    assert_int_equal(b.nmsgs, 0);
    assert_int_equal(ing_range_cut(&b, &other, INT64_MAX), ING_CUT_NONE);
    ing_range_free(&a);
    ing_range_free(&b);
}

static void test_recorded_end_with_gap(void **state)
{
    (void)state;
    struct ing_limits lim = {.max_rows = 1, .max_bytes = 1, .max_age_ns = 0};
    struct ing_range r;
    ing_range_init(&r, 1, 2, 10, 20);
    /* Limits do not cut a recorded range early. */
    assert_int_equal(ing_range_add(&r, NULL, 10, 5), 0);
    assert_int_equal(ing_range_cut(&r, &lim, 1000 * MS), ING_CUT_NONE);
    /* A gap over the end: the message is refused so the caller stores first. */
    assert_int_equal(ing_range_add(&r, NULL, 25, 5), 1);
    ing_range_free(&r);
}

static void test_meta_parse_rejects(void **state)
{
    (void)state;
    int64_t end = 42;
    uint32_t n = 9;
    assert_int_equal(ing_meta_parse("", &end, &n), 1);
    assert_int_equal(ing_meta_parse(NULL, &end, &n), 1);
    assert_int_equal(ing_meta_parse("someone else's", &end, &n), 1);
    assert_int_equal(ing_meta_parse("upmon-ingest/1 end=x shards=2", &end, &n), -1);
    assert_int_equal(ing_meta_parse("upmon-ingest/1 end=5 shards=0", &end, &n), -1);
    assert_int_equal(ing_meta_parse("upmon-ingest/1 end=-5 shards=2", &end, &n), -1);
    assert_int_equal(ing_meta_parse("upmon-ingest/1 end=5 shards=2 x", &end, &n), -1);
    assert_int_equal(ing_meta_parse("upmon-ingest/1 end=99999999999999999999 shards=2", &end, &n),
                     -1);
    assert_int_equal(end, 42); /* untouched on failure */
    assert_int_equal(n, 9);
    char small[8];
    assert_int_equal(ing_meta_format(small, sizeof(small), 5, 2), -1);
    assert_string_equal(ing_cut_name(ING_CUT_AGE), "age");
}

static void test_dlq_headers(void **state)
{
    (void)state;
    struct upm_event ev;
    struct upm_event_error err;
    const char *bad = "{\"item_id\":\"1\",\"attempt_id\":\"a\",\"request_id\":\"r\","
                      "\"event\":\"SAVE\",\"ts_ns\":1,\"is_created\":false,\"origin\":\"o\","
                      "\"country\":\"DE\",\"company_id\":1,\"category_id\":1}";
    assert_int_equal(upm_event_parse(bad, strlen(bad), NULL, &ev, &err), -1);
    struct ing_dlq_headers h;
    memset(&h, 0, sizeof(h));
    assert_int_equal(ing_dlq_headers(&h, &err, 4, 123456789012LL), 5);
    const char *names[] = {"reason", "field", "detail", "source_partition", "source_offset"};
    for (int i = 0; i < 5; i++)
        assert_string_equal(h.h[i].name, names[i]);
    assert_int_equal(h.h[0].size, strlen("wrong_type"));
    assert_memory_equal(h.h[0].value, "wrong_type", h.h[0].size);
    assert_memory_equal(h.h[1].value, "item_id", h.h[1].size);
    assert_true(h.h[2].size > 0);
    assert_memory_equal(h.h[3].value, "4", h.h[3].size);
    assert_int_equal(h.h[4].size, 12);
    assert_memory_equal(h.h[4].value, "123456789012", 12);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows_cut_and_shards),
        cmocka_unit_test(test_age_cut_then_replay_is_identical),
        cmocka_unit_test(test_recorded_end_with_gap),
        cmocka_unit_test(test_meta_parse_rejects),
        cmocka_unit_test(test_dlq_headers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
