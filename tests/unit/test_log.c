#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "upmon/log.h"

static char *captured;
static size_t captured_len;
static FILE *sink;

static int setup(void **state)
{
    sink = open_memstream(&captured, &captured_len);
    upm_log_set_sink(sink);
    upm_log_set_level(UPM_LOG_INFO);
    upm_log_set_format(UPM_LOG_FMT_TEXT);
    return 0;
}

static int teardown(void **state)
{
    upm_log_set_sink(NULL);
    fclose(sink);
    free(captured);
    captured = NULL;
    return 0;
}

static int evaluated;
static int side_effect(void)
{
    evaluated++;
    return 1;
}

static void test_level_filter_skips_argument_evaluation(void **state)
{
    evaluated = 0;
    upm_log_debug("t", "hidden %d", side_effect());
    fflush(sink);
    assert_int_equal(evaluated, 0);
    assert_int_equal(captured_len, 0);
    upm_log_warn("t", "shown %d", side_effect());
    fflush(sink);
    assert_int_equal(evaluated, 1);
    assert_non_null(strstr(captured, "level=warn mod=t msg=\"shown 1\"\n"));
}

static void test_message_escaped_fields_verbatim(void **state)
{
    upm_log_info("kafka", "bad \"quote\"\nnewline | brokers=%d topic=%s", 3, "ev");
    fflush(sink);
    assert_non_null(strstr(captured, "msg=\"bad \\\"quote\\\"\\nnewline\" brokers=3 topic=ev\n"));
    assert_non_null(strstr(captured, "ts=20"));
    /* exactly one line */
    assert_ptr_equal(strchr(captured, '\n'), captured + captured_len - 1);
}

static void test_json_format(void **state)
{
    upm_log_set_format(UPM_LOG_FMT_JSON);
    upm_log_error("ch", "insert failed | status=500 reason=\"too many parts\"");
    fflush(sink);
    assert_non_null(strstr(captured, "\"level\":\"error\",\"mod\":\"ch\",\"msg\":\"insert failed\","
                                     "\"status\":\"500\",\"reason\":\"too many parts\"}\n"));
}

static void test_truncates_long_lines(void **state)
{
    char *big = malloc(10000);
    memset(big, 'a', 9999);
    big[9999] = '\0';
    upm_log_info("t", "%s", big);
    fflush(sink);
    assert_true(captured_len <= 4096);
    assert_int_equal(captured[captured_len - 1], '\n');
    free(big);
}

static void test_level_parse(void **state)
{
    enum upm_log_level l;
    assert_int_equal(upm_log_level_parse("debug", &l), 0);
    assert_int_equal(l, UPM_LOG_DEBUG);
    assert_int_equal(upm_log_level_parse("warning", &l), 0);
    assert_int_equal(l, UPM_LOG_WARN);
    assert_int_equal(upm_log_level_parse("loud", &l), -1);
    unsigned long before = upm_log_count(UPM_LOG_ERROR);
    upm_log_error("t", "x");
    assert_int_equal(upm_log_count(UPM_LOG_ERROR), before + 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_level_filter_skips_argument_evaluation, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_message_escaped_fields_verbatim, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_format, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncates_long_lines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_level_parse, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
