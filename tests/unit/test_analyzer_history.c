/*
 * Unit tests for the analyzer's per-minute history (services/analyzer/history.c).
 *
 * Every row added here has counters v[k] = base * (k + 1), so one number per
 * row (its base) says what all eleven counters of a sum must be: a sum of
 * rows with bases b1, b2, … has v[k] = (b1 + b2 + …) * (k + 1). Bases are
 * small integers, so the sums are exact and compared with ==.
 *
 * Memory errors (a minute's counter array shorter than the segment table)
 * only show under ASan: run these in the sanitizer build too.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "history.h"

/* An epoch minute in 2025; any value works, a realistic one costs nothing. */
#define M0 INT64_C(29000000)

static struct hist_counters row(double base)
{
    struct hist_counters c = {{0}};
    for (int k = 0; k < HC_COUNT; k++)
        c.v[k] = base * (k + 1);
    return c;
}

static void add(struct hist *h, int64_t minute, const char *origin, const char *country,
                double base)
{
    struct hist_counters c = row(base);
    hist_add_row(h, minute, origin, country, &c);
}

/* hist_sum over [from, to) must find `present` minutes and a total base of `base`. */
static void expect_sum(const struct hist *h, size_t seg, int64_t from, int64_t to, size_t present,
                       double base, const char *what)
{
    struct hist_counters t;
    size_t got = hist_sum(h, seg, from, to, &t);
    if (got != present)
        fail_msg("%s: seg %zu [M0%+lld, M0%+lld): %zu minutes present, want %zu", what, seg,
                 (long long)(from - M0), (long long)(to - M0), got, present);
    for (int k = 0; k < HC_COUNT; k++) {
        if (t.v[k] != base * (k + 1))
            fail_msg("%s: seg %zu [M0%+lld, M0%+lld): counter %d = %.17g, want %.17g", what, seg,
                     (long long)(from - M0), (long long)(to - M0), k, t.v[k], base * (k + 1));
    }
}

static void expect_segment(const struct hist *h, size_t i, enum hist_dim dim, const char *value)
{
    const struct hist_segment *s = hist_segment_at(h, i);
    if (!s) {
        fail_msg("segment %zu missing (%zu segments)", i, hist_nsegments(h));
        return;
    }
    if (s->dim != dim || strcmp(s->value, value) != 0)
        fail_msg("segment %zu is %s=%s, want %s=%s", i, hist_dim_name(s->dim), s->value,
                 hist_dim_name(dim), value);
}

/*
 * Two origins × two countries. Per-row weights: ui/RU 1, ui/DE 2, api/RU 4,
 * api/DE 8, scaled by (i + 1) at minute M0 + i. Per minute i that gives
 *   all 15(i+1), RU 5(i+1), DE 10(i+1), ui 3(i+1), api 12(i+1).
 * Minutes 0, 1, 3 and 4 have rows; minute 2 has none (not fetched).
 */
static const int minutes_with_rows[] = {0, 1, 3, 4};

static void fill(struct hist *h)
{
    for (size_t j = 0; j < sizeof(minutes_with_rows) / sizeof(minutes_with_rows[0]); j++) {
        int i = minutes_with_rows[j];
        add(h, M0 + i, "upload/ui", "RU", 1 * (i + 1));
        add(h, M0 + i, "upload/ui", "DE", 2 * (i + 1));
        add(h, M0 + i, "upload/api", "RU", 4 * (i + 1));
        add(h, M0 + i, "upload/api", "DE", 8 * (i + 1));
    }
}

static void test_interning_order(void **state)
{
    (void)state;
    struct hist *h = hist_create();
    /* A new store holds "all" only. */
    assert_int_equal(hist_nsegments(h), 1);
    expect_segment(h, 0, HIST_DIM_ALL, "all");
    fill(h);
    /* hist_add_row interns the country before the origin, in row order. */
    assert_int_equal(hist_nsegments(h), 5);
    expect_segment(h, 1, HIST_DIM_COUNTRY, "RU");
    expect_segment(h, 2, HIST_DIM_ORIGIN, "upload/ui");
    expect_segment(h, 3, HIST_DIM_COUNTRY, "DE");
    expect_segment(h, 4, HIST_DIM_ORIGIN, "upload/api");
    assert_null(hist_segment_at(h, 5));
    assert_int_equal(hist_dropped_segments(h), 0);

    assert_int_equal(hist_find(h, HIST_DIM_COUNTRY, "RU"), 1);
    assert_int_equal(hist_find(h, HIST_DIM_ORIGIN, "upload/api"), 4);
    /* The dimension is part of the key. */
    assert_int_equal(hist_find(h, HIST_DIM_ORIGIN, "RU"), -1);
    assert_int_equal(hist_find(h, HIST_DIM_COUNTRY, "FR"), -1);
    assert_int_equal(hist_find(h, HIST_DIM_ALL, "anything"), 0);
    /* Finding does not intern. */
    assert_int_equal(hist_nsegments(h), 5);

    /* Interning an existing value gives its index; a new one the next index. */
    assert_int_equal(hist_segment(h, HIST_DIM_COUNTRY, "DE"), 3);
    assert_int_equal(hist_segment(h, HIST_DIM_ALL, "whatever"), 0);
    assert_int_equal(hist_segment(h, HIST_DIM_ORIGIN, "RU"), 5);
    assert_int_equal(hist_nsegments(h), 6);
    assert_int_equal(hist_find(h, HIST_DIM_ORIGIN, "RU"), 5);

    assert_string_equal(hist_dim_name(HIST_DIM_ALL), "all");
    assert_string_equal(hist_dim_name(HIST_DIM_COUNTRY), "country");
    assert_string_equal(hist_dim_name(HIST_DIM_ORIGIN), "origin");
    hist_destroy(h);
    hist_destroy(NULL);
}

static void test_sums(void **state)
{
    (void)state;
    struct hist *h = hist_create();
    fill(h);
    int all = 0, ru = hist_find(h, HIST_DIM_COUNTRY, "RU"),
        de = hist_find(h, HIST_DIM_COUNTRY, "DE"), ui = hist_find(h, HIST_DIM_ORIGIN, "upload/ui"),
        api = hist_find(h, HIST_DIM_ORIGIN, "upload/api");
    assert_int_equal(hist_nminutes(h), 4);

    /* Minutes 0,1,3,4: Σ(i+1) = 1+2+4+5 = 12. */
    expect_sum(h, all, M0, M0 + 5, 4, 15 * 12, "all, whole range");
    expect_sum(h, ru, M0, M0 + 5, 4, 5 * 12, "RU, whole range");
    expect_sum(h, de, M0, M0 + 5, 4, 10 * 12, "DE, whole range");
    expect_sum(h, ui, M0, M0 + 5, 4, 3 * 12, "ui, whole range");
    expect_sum(h, api, M0, M0 + 5, 4, 12 * 12, "api, whole range");
    /* A wider range finds nothing more. */
    expect_sum(h, all, M0 - 10, M0 + 10, 4, 15 * 12, "all, wider range");

    /* from is inclusive, to exclusive: [M0, M0+1) is minute 0 alone. */
    expect_sum(h, all, M0, M0 + 1, 1, 15 * 1, "all, minute 0");
    expect_sum(h, all, M0 + 3, M0 + 4, 1, 15 * 4, "all, minute 3");
    expect_sum(h, all, M0 + 4, M0 + 5, 1, 15 * 5, "all, minute 4");
    /* [M0+1, M0+4) holds minutes 1 and 3 (2 is missing): 2 + 4 = 6. */
    expect_sum(h, api, M0 + 1, M0 + 4, 2, 12 * 6, "api, minutes 1..3");
    expect_sum(h, de, M0 + 1, M0 + 4, 2, 10 * 6, "DE, minutes 1..3");
    /* [M0+1, M0+3) stops before minute 3. */
    expect_sum(h, ui, M0 + 1, M0 + 3, 1, 3 * 2, "ui, minutes 1..2");

    /* No data: the missing minute, ranges outside, empty and reversed ranges. */
    expect_sum(h, all, M0 + 2, M0 + 3, 0, 0, "missing minute");
    expect_sum(h, all, M0 - 5, M0, 0, 0, "before");
    expect_sum(h, all, M0 + 5, M0 + 9, 0, 0, "after");
    expect_sum(h, all, M0 + 3, M0 + 3, 0, 0, "empty range");
    expect_sum(h, all, M0 + 4, M0 + 1, 0, 0, "reversed range");

    /* Rows of one minute accumulate. */
    add(h, M0 + 4, "upload/ui", "RU", 7);
    expect_sum(h, all, M0 + 4, M0 + 5, 1, 15 * 5 + 7, "all, minute 4 plus a row");
    expect_sum(h, ru, M0 + 4, M0 + 5, 1, 5 * 5 + 7, "RU, minute 4 plus a row");
    expect_sum(h, api, M0 + 4, M0 + 5, 1, 12 * 5, "api, minute 4 untouched");
    hist_destroy(h);
}

static void test_fetched_empty_minutes(void **state)
{
    (void)state;
    struct hist *h = hist_create();
    fill(h);
    int ru = hist_find(h, HIST_DIM_COUNTRY, "RU");

    /* Marking [M0, M0+6) fetched adds minutes 2 and 5 as zeros and leaves
     * the minutes with rows alone. */
    hist_mark_fetched(h, M0, M0 + 6);
    assert_int_equal(hist_nminutes(h), 6);
    expect_sum(h, 0, M0, M0 + 6, 6, 15 * 12, "all, fetched range");
    expect_sum(h, ru, M0, M0 + 6, 6, 5 * 12, "RU, fetched range");
    expect_sum(h, 0, M0 + 2, M0 + 3, 1, 0, "quiet minute 2");
    expect_sum(h, ru, M0 + 5, M0 + 6, 1, 0, "quiet minute 5");
    /* Still nothing outside what was fetched. */
    expect_sum(h, 0, M0 + 6, M0 + 8, 0, 0, "after the fetched range");

    /* Marking again, or an empty range, changes nothing. */
    hist_mark_fetched(h, M0 + 1, M0 + 5);
    hist_mark_fetched(h, M0 + 9, M0 + 9);
    hist_mark_fetched(h, M0 + 9, M0 + 8);
    assert_int_equal(hist_nminutes(h), 6);
    expect_sum(h, 0, M0, M0 + 6, 6, 15 * 12, "all, after marking again");

    /* A quiet minute that later gets a row. */
    add(h, M0 + 2, "upload/api", "RU", 4);
    expect_sum(h, 0, M0 + 2, M0 + 3, 1, 4, "all, minute 2 with a row");
    expect_sum(h, ru, M0 + 2, M0 + 3, 1, 4, "RU, minute 2 with a row");
    expect_sum(h, hist_find(h, HIST_DIM_COUNTRY, "DE"), M0 + 2, M0 + 3, 1, 0,
               "DE, minute 2 with a row");
    hist_destroy(h);
}

static void test_clear_and_reread(void **state)
{
    (void)state;
    struct hist *h = hist_create();
    fill(h);
    hist_mark_fetched(h, M0, M0 + 6);
    int de = hist_find(h, HIST_DIM_COUNTRY, "DE");

    /* What the analyzer does each cycle: forget the recent minutes, mark
     * them fetched and add the re-read rows. */
    hist_clear_range(h, M0 + 1, M0 + 4);
    assert_int_equal(hist_nminutes(h), 3); /* 0, 4, 5 */
    expect_sum(h, 0, M0, M0 + 6, 3, 15 * (1 + 5), "all, after clearing 1..3");
    expect_sum(h, 0, M0 + 1, M0 + 4, 0, 0, "cleared minutes");

    hist_mark_fetched(h, M0 + 1, M0 + 4);
    for (int i = 1; i <= 3; i++) {
        if (i == 2)
            continue;
        add(h, M0 + i, "upload/ui", "RU", 1 * (i + 1));
        add(h, M0 + i, "upload/ui", "DE", 2 * (i + 1));
        add(h, M0 + i, "upload/api", "RU", 4 * (i + 1));
        add(h, M0 + i, "upload/api", "DE", 8 * (i + 1));
    }
    /* Replaced, not doubled: the same totals as before the clear. */
    assert_int_equal(hist_nminutes(h), 6);
    expect_sum(h, 0, M0, M0 + 6, 6, 15 * 12, "all, re-read");
    expect_sum(h, de, M0, M0 + 6, 6, 10 * 12, "DE, re-read");
    expect_sum(h, 0, M0 + 1, M0 + 2, 1, 15 * 2, "all, minute 1 re-read");

    /* A re-read with different (late) rows gives the new values. */
    hist_clear_range(h, M0 + 4, M0 + 5);
    hist_mark_fetched(h, M0 + 4, M0 + 5);
    add(h, M0 + 4, "upload/ui", "DE", 100);
    expect_sum(h, 0, M0 + 4, M0 + 5, 1, 100, "all, minute 4 replaced");
    expect_sum(h, de, M0 + 4, M0 + 5, 1, 100, "DE, minute 4 replaced");
    expect_sum(h, hist_find(h, HIST_DIM_COUNTRY, "RU"), M0 + 4, M0 + 5, 1, 0,
               "RU, minute 4 replaced");

    /* Empty and reversed ranges and ranges with no minutes clear nothing. */
    hist_clear_range(h, M0 + 3, M0 + 3);
    hist_clear_range(h, M0 + 5, M0 + 1);
    hist_clear_range(h, M0 + 10, M0 + 20);
    hist_clear_range(h, M0 - 20, M0 - 10);
    assert_int_equal(hist_nminutes(h), 6);
    hist_destroy(h);
}

static void test_evict(void **state)
{
    (void)state;
    struct hist *h = hist_create();
    fill(h);
    hist_mark_fetched(h, M0, M0 + 6);

    hist_evict_before(h, M0 - 1);
    assert_int_equal(hist_nminutes(h), 6);
    /* Minute M0+4 itself stays. */
    hist_evict_before(h, M0 + 4);
    assert_int_equal(hist_nminutes(h), 2);
    expect_sum(h, 0, M0, M0 + 6, 2, 15 * 5, "all, after evicting before 4");
    expect_sum(h, 0, M0, M0 + 4, 0, 0, "evicted minutes");
    /* Segments outlive their minutes. */
    assert_int_equal(hist_nsegments(h), 5);

    hist_evict_before(h, M0 + 100);
    assert_int_equal(hist_nminutes(h), 0);
    expect_sum(h, 0, M0, M0 + 6, 0, 0, "all, everything evicted");
    /* Evicting an empty store is fine, and it takes new rows. */
    hist_evict_before(h, M0 + 200);
    add(h, M0 + 300, "upload/ui", "RU", 3);
    expect_sum(h, 1, M0 + 300, M0 + 301, 1, 3, "RU, after emptying");
    hist_destroy(h);
}

static void test_overflow(void **state)
{
    (void)state;
    struct hist *h = hist_create();
    char v[16];
    /* Fill the table: "all" plus HIST_MAX_SEGMENTS - 1 countries. */
    for (int i = 1; i < HIST_MAX_SEGMENTS; i++) {
        snprintf(v, sizeof(v), "C%03d", i);
        assert_int_equal(hist_segment(h, HIST_DIM_COUNTRY, v), i);
    }
    assert_int_equal(hist_nsegments(h), HIST_MAX_SEGMENTS);
    assert_int_equal(hist_dropped_segments(h), 0);

    /* One more value is refused and counted, and stays unknown. */
    assert_int_equal(hist_segment(h, HIST_DIM_COUNTRY, "ZZ"), -1);
    assert_int_equal(hist_dropped_segments(h), 1);
    assert_int_equal(hist_find(h, HIST_DIM_COUNTRY, "ZZ"), -1);
    /* Known values still resolve. */
    assert_int_equal(hist_segment(h, HIST_DIM_COUNTRY, "C255"), 255);
    assert_int_equal(hist_dropped_segments(h), 1);

    /* A row whose country and origin are both new counts in "all" only;
     * each refused value counts as a drop. */
    add(h, M0, "upload/ui", "ZZ", 2);
    assert_int_equal(hist_dropped_segments(h), 3);
    /* A row with a known country and a new origin counts in its country. */
    add(h, M0, "upload/api", "C007", 5);
    assert_int_equal(hist_dropped_segments(h), 4);
    assert_int_equal(hist_nsegments(h), HIST_MAX_SEGMENTS);

    expect_sum(h, 0, M0, M0 + 1, 1, 2 + 5, "all counts every row");
    expect_sum(h, 7, M0, M0 + 1, 1, 5, "C007");
    expect_sum(h, 255, M0, M0 + 1, 1, 0, "C255, no rows");
    hist_destroy(h);
}

static void test_long_value(void **state)
{
    (void)state;
    struct hist *h = hist_create();
    const size_t cap = sizeof(((struct hist_segment *)0)->value);
    char fits[sizeof(((struct hist_segment *)0)->value)];
    char too_long[sizeof(((struct hist_segment *)0)->value) + 1];
    memset(fits, 'f', cap - 1);
    fits[cap - 1] = '\0';
    memset(too_long, 't', cap);
    too_long[cap] = '\0';

    /* cap - 1 bytes and the NUL fit; one more byte does not. */
    assert_int_equal(hist_segment(h, HIST_DIM_ORIGIN, fits), 1);
    expect_segment(h, 1, HIST_DIM_ORIGIN, fits);
    assert_int_equal(hist_segment(h, HIST_DIM_ORIGIN, too_long), -1);
    assert_int_equal(hist_dropped_segments(h), 1);
    assert_int_equal(hist_find(h, HIST_DIM_ORIGIN, too_long), -1);
    assert_int_equal(hist_nsegments(h), 2);

    /* A row with a too-long country counts in "all" and its origin. */
    add(h, M0, fits, too_long, 9);
    assert_int_equal(hist_dropped_segments(h), 2);
    assert_int_equal(hist_nsegments(h), 2);
    expect_sum(h, 0, M0, M0 + 1, 1, 9, "all");
    expect_sum(h, 1, M0, M0 + 1, 1, 9, "origin that fits");
    hist_destroy(h);
}

static void test_out_of_order(void **state)
{
    (void)state;
    struct hist *h = hist_create();
    /* Minute M0+i has base i+1; inserted out of order. */
    static const int order[] = {5, 1, 3, 0, 4, 2};
    for (size_t j = 0; j < sizeof(order) / sizeof(order[0]); j++)
        add(h, M0 + order[j], "upload/ui", "RU", order[j] + 1);
    assert_int_equal(hist_nminutes(h), 6);

    expect_sum(h, 0, M0, M0 + 6, 6, 21, "all minutes");
    for (int i = 0; i < 6; i++)
        expect_sum(h, 1, M0 + i, M0 + i + 1, 1, i + 1, "one minute");
    /* Ranges cut by binary search: right only if the minutes are sorted. */
    expect_sum(h, 2, M0 + 1, M0 + 3, 2, 2 + 3, "minutes 1..2");
    expect_sum(h, 0, M0 + 3, M0 + 6, 3, 4 + 5 + 6, "minutes 3..5");

    /* Enough minutes to grow the array past its first allocation, in
     * descending order so every insert moves the whole array. */
    for (int i = 600; i >= 6; i--)
        add(h, M0 + i, "upload/ui", "RU", 1);
    assert_int_equal(hist_nminutes(h), 601);
    expect_sum(h, 0, M0, M0 + 601, 601, 21 + 595, "all 601 minutes");
    expect_sum(h, 0, M0 + 2, M0 + 8, 6, 3 + 4 + 5 + 6 + 1 + 1, "minutes 2..7");
    hist_destroy(h);
}

static void test_segment_after_older_minutes(void **state)
{
    (void)state;
    struct hist *h = hist_create();
    /* Minutes 0..2 know three segments: all, RU, ui. */
    for (int i = 0; i < 3; i++)
        add(h, M0 + i, "upload/ui", "RU", 1);
    hist_mark_fetched(h, M0 - 2, M0 + 4);
    assert_int_equal(hist_nsegments(h), 3);

    /* Minute 3 brings two more; older minutes have no counters for them. */
    add(h, M0 + 3, "upload/api", "DE", 10);
    int de = hist_find(h, HIST_DIM_COUNTRY, "DE"),
        api = hist_find(h, HIST_DIM_ORIGIN, "upload/api");
    assert_int_equal(de, 3);
    assert_int_equal(api, 4);
    expect_sum(h, (size_t)de, M0 - 2, M0 + 4, 6, 10, "DE over old and new minutes");
    expect_sum(h, (size_t)api, M0, M0 + 3, 3, 0, "api over old minutes only");
    expect_sum(h, 1, M0 - 2, M0 + 4, 6, 3, "RU unchanged");
    expect_sum(h, 0, M0 - 2, M0 + 4, 6, 13, "all");
    /* An index past every table reads as zeros too. */
    expect_sum(h, HIST_MAX_SEGMENTS + 5, M0 - 2, M0 + 4, 6, 0, "index past the table");

    /* A new segment added to an old minute grows that minute's counters and
     * keeps what was there. */
    add(h, M0, "upload/ui", "FR", 20);
    int fr = hist_find(h, HIST_DIM_COUNTRY, "FR");
    assert_int_equal(fr, 5);
    expect_sum(h, (size_t)fr, M0 - 2, M0 + 4, 6, 20, "FR");
    expect_sum(h, 1, M0, M0 + 1, 1, 1, "RU at minute 0 kept");
    expect_sum(h, 2, M0, M0 + 1, 1, 21, "ui at minute 0");
    expect_sum(h, (size_t)de, M0, M0 + 1, 1, 0, "DE at minute 0 (zero-filled)");
    /* And a fetched-empty minute takes a row with a new segment. */
    add(h, M0 - 2, "upload/new", "RU", 4);
    expect_sum(h, 6, M0 - 2, M0 + 4, 6, 4, "origin interned on an empty minute");
    hist_destroy(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_interning_order),
        cmocka_unit_test(test_sums),
        cmocka_unit_test(test_fetched_empty_minutes),
        cmocka_unit_test(test_clear_and_reread),
        cmocka_unit_test(test_evict),
        cmocka_unit_test(test_overflow),
        cmocka_unit_test(test_long_value),
        cmocka_unit_test(test_out_of_order),
        cmocka_unit_test(test_segment_after_older_minutes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
