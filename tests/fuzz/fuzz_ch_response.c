/*
 * Arbitrary ClickHouse HTTP responses into the exception parser and the
 * error classifier. The first 4 bytes choose the transfer outcome (CURLcode,
 * HTTP status, X-ClickHouse-Exception-Code header) and the message buffer
 * size; the rest is the body, copied into an exactly-sized heap block so
 * that ASan catches any read past len (the body is not NUL-terminated).
 * Beyond "no crash, leak or UB" it checks the parser's promises: messages
 * are NUL-terminated and free of control bytes, a found exception's text
 * starts with "Code: ", a success leaves the error zeroed, and a failure
 * always explains itself.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "upmon/clickhouse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_text(const char *msg, size_t size)
{
    const char *nul = memchr(msg, '\0', size);
    if (!nul)
        __builtin_trap();
    for (const char *p = msg; p < nul; p++) {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20 || c == 0x7f)
            __builtin_trap();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    static const int curl_codes[] = {0, 0, 0, 0, 6, 7, 18, 23, 28, 52, 56, 63};
    static const int statuses[] = {0, 200, 200, 200, 400, 404, 408, 429, 500, 502, 503};
    int curl_code = curl_codes[data[0] % (sizeof(curl_codes) / sizeof(curl_codes[0]))];
    int status = statuses[data[1] % (sizeof(statuses) / sizeof(statuses[0]))];
    int header_code = data[2] < 128 ? 0 : (data[2] - 127) * 7;
    size_t msg_size = (size_t)(data[3] % 80) + 1;
    size_t len = size - 4;
    char *body = malloc(len ? len : 1);
    if (!body)
        return 0;
    memcpy(body, data + 4, len);

    char small[81];
    for (int trailing = 0; trailing < 2; trailing++) {
        memset(small, 'Z', sizeof(small));
        int code = upm_ch_parse_exception(body, len, trailing != 0, small, msg_size);
        check_text(small, msg_size);
        if (code < 0 || code > 99999)
            __builtin_trap();
        if (code > 0 && msg_size > 6 && strncmp(small, "Code: ", 6) != 0)
            __builtin_trap();
        if (code == 0 && small[0] != '\0')
            __builtin_trap();
    }

    struct upm_ch_error err;
    memset(&err, 0x5A, sizeof(err));
    int rc = upm_ch_error_classify(&err, curl_code, NULL, status, header_code, body, len);
    check_text(err.message, sizeof(err.message));
    if (rc == 0) {
        if (err.code != 0 || err.http_status != 0 || err.retriable || err.message[0] != '\0')
            __builtin_trap();
        if (curl_code != 0 || status < 200 || status >= 300 || header_code != 0)
            __builtin_trap();
    } else {
        if (rc != -1 || err.message[0] == '\0')
            __builtin_trap();
        if (header_code && err.code != header_code)
            __builtin_trap();
        if (err.code && err.retriable != upm_ch_code_retriable(err.code))
            __builtin_trap();
    }
    free(body);
    return 0;
}
