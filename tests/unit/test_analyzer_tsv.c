/*
 * Unit tests for the analyzer's TabSeparated reading and writing
 * (services/analyzer/tsv.c). The fuzz target checks that no input crashes;
 * these check that well-formed and a few malformed inputs give exactly the
 * values ClickHouse meant.
 */
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "tsv.h"
#include "upmon/buf.h"

static void expect_num(const char *what, double got, double want)
{
    /* Exact, and -0 is not 0: the writer must give back the same double. */
    if (isnan(want) ? !isnan(got) : (got != want || signbit(got) != signbit(want)))
        fail_msg("%s: got %.17g, want %.17g", what, got, want);
}

/* Lines of body, joined with '|' (an empty line shows as nothing between
 * two bars), and their count, for one comparison per body. */
static void expect_lines(const char *body, size_t nlines, const char *want)
{
    char copy[64], got[64] = "";
    size_t glen = 0, n = 0;
    snprintf(copy, sizeof(copy), "%s", body);
    char *p = copy, *line;
    while ((line = an_tsv_next_line(&p)))
        glen += (size_t)snprintf(got + glen, sizeof(got) - glen, "%s%s", n++ ? "|" : "", line);
    if (n != nlines || strcmp(got, want) != 0)
        fail_msg("lines of \"%s\": got %zu \"%s\", want %zu \"%s\"", body, n, got, nlines, want);
    /* Past the end it stays at the end. */
    assert_null(an_tsv_next_line(&p));
}

static void test_next_line(void **state)
{
    (void)state;
    expect_lines("a\tb\nc\n", 2, "a\tb|c");
    expect_lines("a\tb\nc", 2, "a\tb|c");
    expect_lines("a\n\nb\n", 3, "a||b");
    expect_lines("\nx", 2, "|x");
    expect_lines("a\n\n", 2, "a|");
    expect_lines("\n", 1, "");
    expect_lines("\n\n", 2, "|");
    expect_lines("one", 1, "one");
    expect_lines("", 0, "");
    /* No response body at all. */
    char *p = NULL;
    assert_null(an_tsv_next_line(&p));
}

static void test_split_fields(void **state)
{
    (void)state;
    char *f[8];

    char l1[] = "a\tbc\td";
    assert_int_equal(an_tsv_split(l1, f, 8), 3);
    assert_string_equal(f[0], "a");
    assert_string_equal(f[1], "bc");
    assert_string_equal(f[2], "d");

    /* Empty fields, at either end and between tabs. */
    char l2[] = "";
    assert_int_equal(an_tsv_split(l2, f, 8), 1);
    assert_string_equal(f[0], "");
    char l3[] = "\t";
    assert_int_equal(an_tsv_split(l3, f, 8), 2);
    assert_string_equal(f[0], "");
    assert_string_equal(f[1], "");
    char l4[] = "\ta\t\tb\t";
    assert_int_equal(an_tsv_split(l4, f, 8), 5);
    assert_string_equal(f[0], "");
    assert_string_equal(f[1], "a");
    assert_string_equal(f[2], "");
    assert_string_equal(f[3], "b");
    assert_string_equal(f[4], "");

    /* Exactly max fields. */
    char l5[] = "a\tb";
    assert_int_equal(an_tsv_split(l5, f, 2), 2);
    assert_string_equal(f[0], "a");
    assert_string_equal(f[1], "b");

    /* More than max: max fields, the rest left unparsed after the last. */
    char l6[] = "a\tb\tc\\t\td";
    assert_int_equal(an_tsv_split(l6, f, 2), 2);
    assert_string_equal(f[0], "a");
    assert_string_equal(f[1], "b");
    assert_string_equal(f[1] + 2, "c\\t\td");
    char l7[] = "x\ty";
    assert_int_equal(an_tsv_split(l7, f, 1), 1);
    assert_string_equal(f[0], "x");
    /* The analyzer asks for more fields than it expects, so a longer line
     * is told apart from a right one by the count. */
    char l8[] = "1\t2\t3\t4";
    assert_int_equal(an_tsv_split(l8, f, 4), 4);
    char l9[] = "1\t2\t3\t4\t5";
    assert_int_equal(an_tsv_split(l9, f, 5), 5);
    assert_int_equal(an_tsv_split((char[]){"1\t2\t3\t4\t5"}, f, 4), 4);
}

static void test_split_escapes(void **state)
{
    (void)state;
    char *f[4];

    /* \t \n \r \\ inside a field; an escaped tab does not split. */
    char l1[] = "x\\ty\\nz\\r\\\\w\tnext";
    assert_int_equal(an_tsv_split(l1, f, 4), 2);
    assert_string_equal(f[0], "x\ty\nz\r\\w");
    assert_string_equal(f[1], "next");

    /* \0 is a NUL byte: the field's C string ends there, the bytes after it
     * are still written and the next field is still found. */
    char l2[] = "a\\0b\tc";
    assert_int_equal(an_tsv_split(l2, f, 4), 2);
    assert_memory_equal(f[0], "a\0b", 4);
    assert_string_equal(f[1], "c");

    /* Backslash before any other byte stands for that byte. */
    char l3[] = "\\q\\'\\\"\\a\\b";
    assert_int_equal(an_tsv_split(l3, f, 4), 1);
    assert_string_equal(f[0], "q'\"ab");
    /* Before a raw tab it keeps the tab in the field. */
    char l4[] = "a\\\tb\tc";
    assert_int_equal(an_tsv_split(l4, f, 4), 2);
    assert_string_equal(f[0], "a\tb");
    assert_string_equal(f[1], "c");

    /* An escaped backslash followed by a tab ends the field. */
    char l5[] = "a\\\\\tb";
    assert_int_equal(an_tsv_split(l5, f, 4), 2);
    assert_string_equal(f[0], "a\\");
    assert_string_equal(f[1], "b");

    /* A trailing backslash has nothing to escape and is kept. */
    char l6[] = "ab\\";
    assert_int_equal(an_tsv_split(l6, f, 4), 1);
    assert_string_equal(f[0], "ab\\");
    char l7[] = "a\t\\";
    assert_int_equal(an_tsv_split(l7, f, 4), 2);
    assert_string_equal(f[0], "a");
    assert_string_equal(f[1], "\\");
    char l8[] = "\\\\\\";
    assert_int_equal(an_tsv_split(l8, f, 4), 1);
    assert_string_equal(f[0], "\\\\");
}

static void test_num(void **state)
{
    (void)state;
    expect_num("nan", an_tsv_num("nan"), NAN);
    expect_num("-nan", an_tsv_num("-nan"), NAN);
    expect_num("inf", an_tsv_num("inf"), INFINITY);
    expect_num("-inf", an_tsv_num("-inf"), -INFINITY);
    expect_num("1e300", an_tsv_num("1e300"), 1e300);
    expect_num("empty", an_tsv_num(""), NAN);
    expect_num("abc", an_tsv_num("abc"), NAN);
    expect_num("-", an_tsv_num("-"), NAN);
    expect_num("42", an_tsv_num("42"), 42);
    expect_num("-0", an_tsv_num("-0"), -0.0);
    expect_num("0.1", an_tsv_num("0.1"), 0.1);
    expect_num("UInt64 max", an_tsv_num("18446744073709551615"), 18446744073709551615.0);
    /* A number followed by anything is that number. */
    expect_num("12abc", an_tsv_num("12abc"), 12);
    expect_num("2.5]", an_tsv_num("2.5]"), 2.5);
}

static void expect_array(const char *s, size_t n, const double *want)
{
    double out[8];
    /* Sentinels past n catch a write beyond the caller's array. */
    for (size_t i = 0; i < 8; i++)
        out[i] = 42;
    an_tsv_array(s, out, n);
    for (size_t i = 0; i < n; i++) {
        if (isnan(want[i]) ? !isnan(out[i]) : out[i] != want[i])
            fail_msg("\"%s\"[%zu]: got %.17g, want %.17g", s, i, out[i], want[i]);
    }
    for (size_t i = n; i < 8; i++) {
        if (out[i] != 42)
            fail_msg("\"%s\" with n=%zu wrote out[%zu]", s, n, i);
    }
}

static void test_array(void **state)
{
    (void)state;
    expect_array("[1,2.5,nan]", 3, (const double[]){1, 2.5, NAN});
    /* Shorter than n: the rest is NaN. */
    expect_array("[1,2.5,nan]", 5, (const double[]){1, 2.5, NAN, NAN, NAN});
    expect_array("[3,4]", 4, (const double[]){3, 4, NAN, NAN});
    /* Longer than n: the first n, nothing written past them. */
    expect_array("[1,2,3,4]", 2, (const double[]){1, 2});
    expect_array("[]", 2, (const double[]){NAN, NAN});
    /* Cut short or malformed: what parsed before the fault, NaN after. */
    expect_array("[1,", 3, (const double[]){1, NAN, NAN});
    expect_array("[1", 2, (const double[]){1, NAN});
    expect_array("[", 2, (const double[]){NAN, NAN});
    expect_array("[1,x,3]", 3, (const double[]){1, NAN, NAN});
    expect_array("[,1]", 2, (const double[]){NAN, NAN});
    expect_array("x", 2, (const double[]){NAN, NAN});
    expect_array("", 2, (const double[]){NAN, NAN});
    expect_array("1,2", 2, (const double[]){NAN, NAN});
    expect_array("[inf,-inf,-0,1e-300]", 4, (const double[]){INFINITY, -INFINITY, -0.0, 1e-300});
    expect_array("[1]", 0, (const double[]){0});
}

/* put(a) TAB put(b) … must split back into a, b, … exactly. */
static void test_put_round_trip(void **state)
{
    (void)state;
    char every[256];
    for (int i = 1; i < 256; i++)
        every[i - 1] = (char)i;
    every[255] = '\0';
    const char *strs[] = {
        "plain", "",    "tab\there", "nl\nx",    "cr\rx",    "back\\slash", "\\",
        "\\t",   "\\n", "end\\",     "\t\n\r\\", "\\\\\t\\", every,
    };
    enum { N = sizeof(strs) / sizeof(strs[0]) };

    struct upm_buf b;
    upm_buf_init(&b, 0);
    for (size_t i = 0; i < N; i++) {
        if (i)
            upm_buf_putc(&b, '\t');
        an_tsv_put(&b, strs[i]);
    }
    /* Escaping leaves exactly the N - 1 separators as raw tabs and no raw
     * newline, so the line survives an_tsv_next_line. */
    size_t tabs = 0;
    for (size_t i = 0; i < b.len; i++) {
        tabs += b.data[i] == '\t';
        assert_true(b.data[i] != '\n' && b.data[i] != '\r');
    }
    assert_int_equal(tabs, N - 1);

    char *p = b.data, *line = an_tsv_next_line(&p);
    assert_non_null(line);
    assert_null(an_tsv_next_line(&p));
    char *f[N + 1];
    assert_int_equal(an_tsv_split(line, f, N + 1), N);
    for (size_t i = 0; i < N; i++) {
        if (strcmp(f[i], strs[i]) != 0)
            fail_msg("field %zu did not round-trip (%zu bytes, got %zu)", i, strlen(strs[i]),
                     strlen(f[i]));
    }
    upm_buf_free(&b);

    /* The exact bytes, as ClickHouse reads them. */
    upm_buf_init(&b, 0);
    an_tsv_put(&b, "a\tb\nc\rd\\e'f");
    assert_string_equal(b.data, "a\\tb\\nc\\rd\\\\e'f");
    upm_buf_free(&b);
}

static void test_put_num(void **state)
{
    (void)state;
    static const struct {
        double v;
        const char *text;
    } exact[] = {
        {0, "0"},
        {-0.0, "-0"},
        {1.5, "1.5"},
        {42, "42"},
        {0.1, "0.10000000000000001"},
        {1e300, "1.0000000000000001e+300"},
        {NAN, "nan"},
        {-NAN, "nan"},
        {INFINITY, "inf"},
        {-INFINITY, "-inf"},
    };
    struct upm_buf b;
    upm_buf_init(&b, 0);
    for (size_t i = 0; i < sizeof(exact) / sizeof(exact[0]); i++) {
        upm_buf_reset(&b);
        an_tsv_put_num(&b, exact[i].v);
        assert_string_equal(b.data, exact[i].text);
    }

    /* %.17g is enough digits for every double to read back bit for bit. */
    static const double vals[] = {
        0,
        -0.0,
        0.1,
        1.0 / 3,
        -2.0 / 3,
        1e300,
        -1e-300,
        DBL_MAX,
        -DBL_MAX,
        DBL_MIN,
        4.9406564584124654e-324,
        123456789012345678.0,
        0.30000000000000004,
        1e21,
        1e-7,
        NAN,
        INFINITY,
        -INFINITY,
    };
    enum { N = sizeof(vals) / sizeof(vals[0]) };
    upm_buf_reset(&b);
    for (size_t i = 0; i < N; i++) {
        if (i)
            upm_buf_putc(&b, '\t');
        an_tsv_put_num(&b, vals[i]);
    }
    char *f[N + 1];
    assert_int_equal(an_tsv_split(b.data, f, N + 1), N);
    for (size_t i = 0; i < N; i++) {
        char what[32];
        snprintf(what, sizeof(what), "value %zu (%s)", i, f[i]);
        expect_num(what, an_tsv_num(f[i]), vals[i]);
    }
    upm_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_next_line),     cmocka_unit_test(test_split_fields),
        cmocka_unit_test(test_split_escapes), cmocka_unit_test(test_num),
        cmocka_unit_test(test_array),         cmocka_unit_test(test_put_round_trip),
        cmocka_unit_test(test_put_num),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
