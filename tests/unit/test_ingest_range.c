/* upmon-ingest's ranges and groups: rows land in their shard, groups cut by
 * their totals, a group rebuilt from its recorded record is byte-identical,
 * the metadata round-trips and refuses what is not a well-formed record, and
 * DLQ headers carry the reason and source coordinates. */
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "dlq.h"
#include "group.h"
#include "range.h"
#include "upmon/event.h"
#include "upmon/siphash.h"

#define MS 1000000LL

static void make_event(struct upm_event *ev, int i)
{
    char json[512];
    snprintf(
        json, sizeof(json),
        "{\"item_id\":%d,\"attempt_id\":\"att-%lld\",\"request_id\":\"r\",\"event\":\"UPDATE\","
        "\"ts_ns\":%d000,\"is_created\":false,\"origin\":\"o\",\"origin_id\":\"x\","
        "\"country\":\"FR\","
        "\"company_id\":1,\"category_id\":2}",
        i, (long long)i * 7919, i + 1);
    struct upm_event_error err;
    assert_int_equal(upm_event_parse(json, strlen(json), NULL, ev, &err), 0);
}

static void add(struct ing_range *r, struct ing_totals *t, int64_t off, int64_t now)
{
    struct upm_event ev;
    make_event(&ev, (int)(r->partition * 100000 + off));
    bool valid = off % 5 != 4; /* every 5th message rejected */
    long added = ing_range_add(r, valid ? &ev : NULL, off);
    upm_event_clear(&ev);
    assert_true(added >= 0);
    assert_true(valid ? added > 0 : added == 0);
    if (t) {
        if (t->msgs++ == 0)
            t->first_ns = now;
        t->rows += valid;
        t->bytes += (size_t)added;
    }
}

static void test_range_shards(void **state)
{
    (void)state;
    struct ing_range r;
    ing_range_init(&r, 2, 3, 100);
    for (int64_t off = 100; off < 149; off++)
        add(&r, NULL, off, 0);
    assert_int_equal(r.nvalid, 40);
    assert_int_equal(r.nmsgs, 49); /* the 9 rejected ones move the range on too */
    assert_int_equal(r.next, 149);
    size_t sum = 0, bytes = 0;
    for (uint32_t s = 0; s < 3; s++) {
        sum += r.shard_rows[s];
        bytes += r.blocks[s].len;
    }
    assert_int_equal(sum, 40);
    assert_int_equal(bytes, r.bytes);
    /* Each row sits in the shard of its attempt_id. */
    for (int64_t off = 100; off < 149; off++) {
        if (off % 5 == 4)
            continue;
        char id[32];
        snprintf(id, sizeof(id), "att-%lld", (long long)(2 * 100000 + off) * 7919);
        uint32_t s = upm_siphash_shard(id, strlen(id), 3);
        assert_non_null(memmem(r.blocks[s].data, r.blocks[s].len, id, strlen(id)));
    }
    /* Going backwards means the caller's view is stale; gaps are fine. */
    assert_int_equal(ing_range_add(&r, NULL, 120), -1);
    assert_int_equal(ing_range_add(&r, NULL, 170), 0);
    assert_int_equal(r.next, 171);
    ing_range_reset(&r, 171);
    assert_int_equal(r.nmsgs, 0);
    assert_int_equal(r.bytes, 0);
    ing_range_free(&r);
    ing_range_free(&r); /* twice is harmless */
}

static void test_group_cut(void **state)
{
    (void)state;
    struct ing_limits lim = {.max_rows = 10, .max_bytes = 5000, .max_age_ns = 30 * MS};
    struct ing_totals t = {0};
    assert_int_equal(ing_group_cut(&t, &lim, INT64_MAX), ING_CUT_NONE); /* empty: never */
    t = (struct ing_totals){.msgs = 3, .rows = 2, .bytes = 100, .first_ns = 1000 * MS};
    assert_int_equal(ing_group_cut(&t, &lim, 1029 * MS), ING_CUT_NONE);
    assert_int_equal(ing_group_cut(&t, &lim, 1030 * MS), ING_CUT_AGE);
    t.bytes = 5000;
    assert_int_equal(ing_group_cut(&t, &lim, 1000 * MS), ING_CUT_BYTES);
    t.rows = 10;
    assert_int_equal(ing_group_cut(&t, &lim, 1000 * MS), ING_CUT_ROWS);
    /* A backlog's limits: no age cut. */
    struct ing_limits backlog = {.max_rows = 10, .max_bytes = 5000, .max_age_ns = INT64_MAX};
    t = (struct ing_totals){.msgs = 1, .rows = 1, .bytes = 1, .first_ns = 0};
    assert_int_equal(ing_group_cut(&t, &backlog, INT64_MAX - 1), ING_CUT_NONE);
    assert_string_equal(ing_cut_name(ING_CUT_RECORDED), "recorded");
    assert_string_equal(ing_cut_name(ING_CUT_AGE), "age");
}

/* The first owner reads three partitions interleaved and cuts the group by
 * age; a successor rebuilds it from the recorded record alone, reading the
 * partitions one after another: every shard's block is byte-identical. */
static void test_group_replay_is_identical(void **state)
{
    (void)state;
    const uint32_t nshards = 2;
    const int32_t parts[3] = {1, 4, 7};
    const int64_t starts[3] = {0, 500, 42};
    static int64_t log[3][4096]; /* the offsets each partition's log holds */
    size_t nlog[3] = {0, 0, 0};
    struct ing_range a[3];
    for (int i = 0; i < 3; i++)
        ing_range_init(&a[i], parts[i], nshards, starts[i]);
    struct ing_limits lim = {.max_rows = 100000, .max_bytes = 1 << 30, .max_age_ns = 300 * MS};
    struct ing_totals t = {0};
    int64_t now = 1000 * MS, k = 0;
    enum ing_cut cut = ING_CUT_NONE;
    while (cut == ING_CUT_NONE) {
        int i = (int)(k * 7 % 5 % 3); /* uneven interleaving; partition 7 has gaps */
        int64_t off = a[i].next + (parts[i] == 7 && k % 11 == 0 ? 3 : 0);
        add(&a[i], &t, off, now);
        log[i][nlog[i]++] = off;
        cut = ing_group_cut(&t, &lim, now);
        now += 1 * MS;
        k++;
    }
    assert_int_equal(cut, ING_CUT_AGE);
    assert_int_equal(t.msgs, nlog[0] + nlog[1] + nlog[2]);

    struct ing_group g = {.nshards = nshards, .n = 3};
    for (int i = 0; i < 3; i++)
        g.m[i] = (struct ing_member){a[i].partition, a[i].start, a[i].next};
    char meta[ING_GROUP_META_MAX];
    assert_int_equal(ing_group_format(meta, sizeof(meta), &g), 0);

    /* A successor starts partition 4 from its committed offset (500) and
     * re-reads every member, one partition after another, last first. */
    struct ing_group got;
    assert_int_equal(ing_group_parse(meta, 4, 500, &got), 0);
    assert_int_equal(got.n, 3);
    assert_int_equal(got.nshards, nshards);
    struct ing_range b[3];
    struct ing_range *pa[3], *pb[3];
    for (int i = 2; i >= 0; i--) {
        const struct ing_member *m = &got.m[i];
        assert_int_equal(m->partition, parts[i]);
        ing_range_init(&b[i], m->partition, nshards, m->start);
        for (size_t j = 0; j < nlog[i] && log[i][j] < m->end; j++)
            add(&b[i], NULL, log[i][j], 0);
        assert_int_equal(b[i].next, m->end);
        pa[i] = &a[i];
        pb[i] = &b[i];
    }
    for (uint32_t s = 0; s < nshards; s++) {
        struct upm_buf x, y;
        upm_buf_init(&x, 0);
        upm_buf_init(&y, 0);
        size_t rx = ing_group_block(pa, 3, s, &x);
        size_t ry = ing_group_block(pb, 3, s, &y);
        assert_int_equal(rx, ry);
        assert_true(rx > 0);
        assert_int_equal(x.len, y.len);
        assert_memory_equal(x.data, y.data, x.len);
        /* Members concatenated in partition order. */
        assert_memory_equal(x.data, a[0].blocks[s].data, a[0].blocks[s].len);
        upm_buf_free(&x);
        upm_buf_free(&y);
    }
    for (int i = 0; i < 3; i++) {
        ing_range_free(&a[i]);
        ing_range_free(&b[i]);
    }
}

static void test_group_meta(void **state)
{
    (void)state;
    struct ing_group g;
    char text[ING_GROUP_META_MAX];
    /* Not ours. */
    assert_int_equal(ing_group_parse("", 0, 5, &g), 1);
    assert_int_equal(ing_group_parse(NULL, 0, 5, &g), 1);
    assert_int_equal(ing_group_parse("someone else's", 0, 5, &g), 1);
    /* The single-partition form of earlier versions: a group of one. */
    assert_int_equal(ing_group_parse("upmon-ingest/1 end=20 shards=2", 3, 10, &g), 0);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.nshards, 2);
    assert_int_equal(g.m[0].partition, 3);
    assert_int_equal(g.m[0].start, 10);
    assert_int_equal(g.m[0].end, 20);
    /* Round trip. */
    assert_int_equal(ing_group_parse("upmon-ingest/2 shards=2 p=0:5-9,3:10-20", 3, 10, &g), 0);
    assert_int_equal(ing_group_format(text, sizeof(text), &g), 0);
    assert_string_equal(text, "upmon-ingest/2 shards=2 p=0:5-9,3:10-20");
    assert_non_null(ing_group_member(&g, 0));
    assert_null(ing_group_member(&g, 1));
    /* Malformed. */
    const char *bad[] = {
        "upmon-ingest/1 end=x shards=2",
        "upmon-ingest/1 end=5 shards=0",
        "upmon-ingest/1 end=-5 shards=2",
        "upmon-ingest/1 end=5 shards=2 x",
        "upmon-ingest/1 end=99999999999999999999 shards=2",
        "upmon-ingest/1 end=4 shards=2",             /* end before the committed start */
        "upmon-ingest/2 shards=2 p=",                /* no member */
        "upmon-ingest/2 shards=0 p=3:10-20",         /* no shard */
        "upmon-ingest/2 shards=2 p=3:10-20,",        /* trailing comma */
        "upmon-ingest/2 shards=2 p=3:10-20,3:10-20", /* duplicate */
        "upmon-ingest/2 shards=2 p=4:1-2,3:10-20",   /* not ascending */
        "upmon-ingest/2 shards=2 p=3:20-10",         /* start after end */
        "upmon-ingest/2 shards=2 p=3:11-20",         /* recorded at another start */
        "upmon-ingest/2 shards=2 p=2:10-20",         /* partition absent */
        "upmon-ingest/2 shards=2 p=3:10-20 ",        /* trailing blank */
        "upmon-ingest/2 shards=2 p=3:+10-20",        /* sign */
        "upmon-ingest/2 shards=2 p=-3:10-20",
        "upmon-ingest/2 shards=2  p=3:10-20",
        "upmon-ingest/2 shards=2 p=2147483648:10-20", /* partition overflow */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = ing_group_parse(bad[i], 3, 10, &g);
        if (rc != -1)
            fail_msg("accepted: %s", bad[i]);
    }
    /* Too many members, and a buffer too small. */
    struct ing_group big = {.nshards = 2, .n = ING_GROUP_MAX};
    for (size_t i = 0; i < ING_GROUP_MAX; i++)
        big.m[i] = (struct ing_member){(int32_t)(2000000000 + i), INT64_MAX - 1, INT64_MAX};
    assert_int_equal(ing_group_format(text, sizeof(text), &big), 0); /* the worst case fits */
    assert_true(strlen(text) < 4096);
    assert_int_equal(ing_group_parse(text, 2000000000, INT64_MAX - 1, &g), 0);
    assert_int_equal(g.n, ING_GROUP_MAX);
    char more[ING_GROUP_META_MAX + 64];
    snprintf(more, sizeof(more), "%s,2100000000:1-2", text);
    assert_int_equal(ing_group_parse(more, 2000000000, INT64_MAX - 1, &g), -1);
    char small[16];
    assert_int_equal(ing_group_format(small, sizeof(small), &big), -1);
    big.n = 0;
    assert_int_equal(ing_group_format(text, sizeof(text), &big), -1);
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
        cmocka_unit_test(test_range_shards),
        cmocka_unit_test(test_group_cut),
        cmocka_unit_test(test_group_replay_is_identical),
        cmocka_unit_test(test_group_meta),
        cmocka_unit_test(test_dlq_headers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
