#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "upmon/alloc.h"
#include "upmon/buf.h"

static void test_append_grows_and_terminates(void **state)
{
    struct upm_buf b;
    upm_buf_init(&b, 0);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(upm_buf_printf(&b, "%d,", i), 0);
    assert_true(b.len > 1000);
    assert_int_equal(b.data[b.len], '\0');
    assert_memory_equal(b.data, "0,1,2,", 6);
    upm_buf_free(&b);
    upm_buf_free(&b); /* double free of an emptied buffer is harmless */
}

static void test_limit_rejects_and_leaves_buffer_unchanged(void **state)
{
    struct upm_buf b;
    upm_buf_init(&b, 8);
    assert_int_equal(upm_buf_puts(&b, "12345"), 0);
    assert_int_equal(upm_buf_puts(&b, "6789"), -1);
    assert_int_equal(b.len, 5);
    assert_string_equal(b.data, "12345");
    assert_int_equal(upm_buf_printf(&b, "%s", "abcd"), -1);
    assert_string_equal(b.data, "12345");
    assert_int_equal(upm_buf_puts(&b, "678"), 0);
    assert_int_equal(b.len, 8);
    upm_buf_free(&b);
}

static void test_long_printf(void **state)
{
    struct upm_buf b;
    upm_buf_init(&b, 0);
    char big[1000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(upm_buf_printf(&b, "<%s>", big), 0);
    assert_int_equal(b.len, 1001);
    assert_int_equal(b.data[0], '<');
    assert_int_equal(b.data[1000], '>');
    upm_buf_free(&b);
}

static void test_little_endian_and_varuint(void **state)
{
    struct upm_buf b;
    upm_buf_init(&b, 0);
    upm_buf_put_u16le(&b, 0x0102);
    upm_buf_put_u32le(&b, 0x03040506);
    upm_buf_put_u64le(&b, 0x0708090a0b0c0d0eULL);
    const unsigned char want[] = {0x02, 0x01, 0x06, 0x05, 0x04, 0x03, 0x0e,
                                  0x0d, 0x0c, 0x0b, 0x0a, 0x09, 0x08, 0x07};
    assert_int_equal(b.len, sizeof(want));
    assert_memory_equal(b.data, want, sizeof(want));

    upm_buf_reset(&b);
    upm_buf_put_varuint(&b, 0);
    upm_buf_put_varuint(&b, 127);
    upm_buf_put_varuint(&b, 128);
    upm_buf_put_varuint(&b, 300);
    const unsigned char leb[] = {0x00, 0x7f, 0x80, 0x01, 0xac, 0x02};
    assert_int_equal(b.len, sizeof(leb));
    assert_memory_equal(b.data, leb, sizeof(leb));
    upm_buf_free(&b);
}

static void test_steal(void **state)
{
    struct upm_buf b;
    upm_buf_init(&b, 0);
    size_t n = 99;
    char *empty = upm_buf_steal(&b, &n);
    assert_int_equal(n, 0);
    assert_string_equal(empty, "");
    free(empty);
    upm_buf_puts(&b, "abc");
    char *s = upm_buf_steal(&b, &n);
    assert_int_equal(n, 3);
    assert_string_equal(s, "abc");
    assert_null(b.data);
    free(s);
}

static void test_strndup(void **state)
{
    char *s = upm_strndup("abcdef", 3);
    assert_string_equal(s, "abc");
    free(s);
    s = upm_strndup("ab", 10);
    assert_string_equal(s, "ab");
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_grows_and_terminates),
        cmocka_unit_test(test_limit_rejects_and_leaves_buffer_unchanged),
        cmocka_unit_test(test_long_printf),
        cmocka_unit_test(test_little_endian_and_varuint),
        cmocka_unit_test(test_steal),
        cmocka_unit_test(test_strndup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
