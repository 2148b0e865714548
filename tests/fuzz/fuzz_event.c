/*
 * fuzz_event — arbitrary bytes into upm_event_parse.
 *
 * Beyond "no crash, no leak, no UB" (the sanitizers' job) it checks:
 * - a rejection has a named reason and bounded, printable field and detail;
 * - an accepted event satisfies the documented limits;
 * - parse(serialize(parse(x))) == parse(x), and serialization is canonical
 *   (serializing the re-parsed event gives the same bytes).
 * The input is also fed to the media classifier directly.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "upmon/buf.h"
#include "upmon/event.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const cdn_hosts[] = {"cdn.example.com", "static.example.net"};

static void check(int ok, const char *what, const uint8_t *data, size_t size)
{
    if (ok)
        return;
    fprintf(stderr, "fuzz_event: invariant broken: %s (input %zu bytes)\n", what, size);
    abort();
}

static int printable(const char *s, size_t max)
{
    size_t n = strnlen(s, max + 1);
    if (n > max)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7f)
            return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const struct upm_event_opts opts = {0, cdn_hosts, 2};
    /* the canonical form may be a little longer than the input */
    const struct upm_event_opts reopts = {SIZE_MAX, cdn_hosts, 2};
    const char *buf = (const char *)data;
    struct upm_event ev, ev2;
    struct upm_event_error err;

    (void)upm_event_media_classify(buf, size, &opts);

    if (upm_event_parse(buf, size, &opts, &ev, &err) != 0) {
        check(err.reason != UPM_EVENT_OK && err.reason < UPM_EVENT_REASON_COUNT, "reason set", data,
              size);
        check(strcmp(upm_event_reason_name(err.reason), "unknown") != 0, "reason named", data,
              size);
        check(printable(err.field, UPM_EVENT_FIELD_MAX), "field bounded", data, size);
        check(printable(err.detail, UPM_EVENT_DETAIL_MAX), "detail bounded", data, size);
        check(err.detail[0] != '\0', "detail present", data, size);
        check(err.offset <= size, "offset inside input", data, size);
        check(ev.data == NULL && ev.media == NULL, "failed parse owns nothing", data, size);
        return 0;
    }

    check(ev.type != UPM_EVENT_NONE, "type set", data, size);
    check(ev.attempt_id[0] != '\0', "attempt_id non-empty", data, size);
    check(upm_event_country_valid(ev.country), "country valid", data, size);
    check(ev.ts_ns > 0 && ev.up_ts >= 0, "times in range", data, size);
    check(ev.is_created == (ev.up_ts != 0), "up_ts iff is_created", data, size);
    check(ev.n_media <= UPM_EVENT_MEDIA_MAX, "media bounded", data, size);
    check(ev.media_own + ev.media_external + ev.media_bad == ev.n_media, "media counted", data,
          size);
    check(ev.data && ev.data_len <= UPM_EVENT_DATA_MAX && strlen(ev.data) == ev.data_len &&
              ev.data[0] == '{',
          "data bounded", data, size);

    struct upm_buf out, out2;
    upm_buf_init(&out, 0);
    upm_buf_init(&out2, 0);
    check(upm_event_serialize(&ev, &out) == 0, "serialize", data, size);
    if (upm_event_parse(out.data, out.len, &reopts, &ev2, &err) != 0) {
        fprintf(stderr, "re-parse failed: %s field=%s (%s)\n%s\n",
                upm_event_reason_name(err.reason), err.field, err.detail, out.data);
        abort();
    }
    check(upm_event_equal(&ev, &ev2), "round trip equal", data, size);
    check(upm_event_serialize(&ev2, &out2) == 0, "serialize again", data, size);
    check(out.len == out2.len && memcmp(out.data, out2.data, out.len) == 0, "canonical", data,
          size);

    upm_buf_free(&out);
    upm_buf_free(&out2);
    upm_event_clear(&ev);
    upm_event_clear(&ev2);
    return 0;
}
