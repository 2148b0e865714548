/*
 * event — the upload event, wire format v1 (design.md §2): parse, validate,
 * serialize.
 *
 * One JSON object per Kafka message. Parsing is strict and explained: a
 * rejected message yields a stable machine-readable reason, the offending
 * top-level field and a short detail, all bounded and printable ASCII so the
 * DLQ can put them into message headers as they are.
 *
 * Decisions the wire format leaves open, fixed here:
 * - Integers (item_id, company_id, category_id: uint64; ts_ns, up_ts: int64)
 *   must be JSON numbers without fraction or exponent, and are read exactly
 *   from their source text (not through a double). Digits in a JSON string
 *   are wrong_type: the original producers send numbers, and accepting both
 *   would let two spellings of one event hash differently downstream.
 * - null is a type like any other: a field given as null is wrong_type, also
 *   for optional fields (absent is the way to omit one).
 * - is_created with up_ts 0 (or absent) is out_of_range on up_ts: the card
 *   went live at some time, and a 0 would turn into a huge negative attempt
 *   time in the statistics.
 * - attempt_id must be non-empty (it is the Kafka key and the shard key);
 *   the other strings may be empty.
 * - Duplicate keys in the top-level object are rejected (duplicate_field),
 *   known or unknown; inside `data` they are kept as sent.
 * - `v` must be the integer 1 when present; anything else numeric is
 *   unsupported_version, and `v` is checked before any other field because
 *   another version may define them differently.
 * - Nesting deeper than UPM_EVENT_MAX_DEPTH (the top-level object counts as
 *   1) is too_deep; a number literal longer than 63 bytes is too_long
 *   (cJSON cannot read one).
 * - Media links are counted, never a reason to reject: each entry is own
 *   CDN, external or bad (see upm_event_media_classify). Non-string entries
 *   are kept as NULL in media[] and serialize as null.
 *
 * Thread-safety: every function is reentrant; a struct upm_event is owned by
 * one thread at a time. No global state.
 */
#ifndef UPMON_EVENT_H
#define UPMON_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "upmon/buf.h"

#define UPM_EVENT_DEFAULT_MAX_BYTES (1024u * 1024u) /* whole message */
#define UPM_EVENT_STR_MAX           64              /* attempt_id, request_id, origin, origin_id */
#define UPM_EVENT_MEDIA_MAX         64              /* entries in media */
#define UPM_EVENT_URL_MAX           2048            /* longer links count as bad */
#define UPM_EVENT_DATA_MAX          (64u * 1024u)   /* compact serialized data */
#define UPM_EVENT_MAX_DEPTH         64              /* JSON nesting, top-level object = 1 */
#define UPM_EVENT_FIELD_MAX         32              /* bytes of upm_event_error.field */
#define UPM_EVENT_DETAIL_MAX        160             /* bytes of upm_event_error.detail */

enum upm_event_type {
    UPM_EVENT_NONE = 0, /* not parsed */
    UPM_EVENT_SAVE,
    UPM_EVENT_UPDATE,
    UPM_EVENT_ERROR,
};

/* Rejection reasons. The numeric values and the names are stable: new
 * reasons are appended, never renumbered or renamed. */
enum upm_event_reason {
    UPM_EVENT_OK = 0,                /* "ok" */
    UPM_EVENT_INVALID_JSON,          /* "invalid_json": not RFC 8259 JSON */
    UPM_EVENT_NOT_OBJECT,            /* "not_object": valid JSON, not an object */
    UPM_EVENT_OVERSIZE,              /* "oversize": longer than max_message_bytes */
    UPM_EVENT_INVALID_UTF8,          /* "invalid_utf8": bad bytes or a lone surrogate escape */
    UPM_EVENT_MISSING_FIELD,         /* "missing_field" */
    UPM_EVENT_WRONG_TYPE,            /* "wrong_type": incl. null, fractions, string digits */
    UPM_EVENT_OUT_OF_RANGE,          /* "out_of_range": overflow, negative, 0 where >0 needed */
    UPM_EVENT_TOO_LONG,              /* "too_long": string > 64 bytes, number literal > 63 */
    UPM_EVENT_UNKNOWN_EVENT,         /* "unknown_event": event not SAVE/UPDATE/ERROR */
    UPM_EVENT_UP_TS_WITHOUT_CREATED, /* "up_ts_without_created" */
    UPM_EVENT_BAD_COUNTRY,           /* "bad_country": not an assigned ISO 3166-1 alpha-2 */
    UPM_EVENT_BAD_MEDIA,             /* "bad_media": media not an array, or > 64 entries */
    UPM_EVENT_DATA_TOO_LARGE,        /* "data_too_large": compact data > 64 KiB */
    UPM_EVENT_UNSUPPORTED_VERSION,   /* "unsupported_version": v present and not 1 */
    UPM_EVENT_DUPLICATE_FIELD,       /* "duplicate_field": a top-level key twice */
    UPM_EVENT_TOO_DEEP,              /* "too_deep": nesting > UPM_EVENT_MAX_DEPTH */
    UPM_EVENT_NUL_IN_STRING,         /* "nul_in_string": a \u0000 escape */
    UPM_EVENT_REASON_COUNT,
};

struct upm_event_error {
    enum upm_event_reason reason;
    /* Top-level field concerned, "" if none. Printable ASCII (other bytes
     * become '?'), truncated to UPM_EVENT_FIELD_MAX bytes. */
    char field[UPM_EVENT_FIELD_MAX + 1];
    /* Short human explanation, printable ASCII, never more than
     * UPM_EVENT_DETAIL_MAX bytes. */
    char detail[UPM_EVENT_DETAIL_MAX + 1];
    /* Byte offset in the input where a syntax or encoding problem was found;
     * 0 for semantic reasons. */
    size_t offset;
};

struct upm_event_opts {
    size_t max_message_bytes; /* 0 = UPM_EVENT_DEFAULT_MAX_BYTES */
    /* Own-CDN host suffixes ("cdn.example.com" matches itself and any
     * "*.cdn.example.com"), compared case-insensitively. NULL/0 = none:
     * every valid link is then external. Not copied: must outlive the call. */
    const char *const *cdn_hosts;
    size_t n_cdn_hosts;
};

struct upm_event {
    uint64_t item_id;
    uint64_t company_id;
    uint64_t category_id;
    int64_t ts_ns;
    int64_t up_ts; /* 0 unless is_created */
    enum upm_event_type type;
    bool is_created;
    char attempt_id[UPM_EVENT_STR_MAX + 1]; /* UTF-8, no NUL inside */
    char request_id[UPM_EVENT_STR_MAX + 1];
    char origin[UPM_EVENT_STR_MAX + 1];
    char origin_id[UPM_EVENT_STR_MAX + 1];
    char country[3];
    char **media; /* owned array of owned URLs; an entry is NULL if it was not a string */
    size_t n_media;
    unsigned media_own, media_external, media_bad;
    char *data; /* owned compact JSON object text, "{}" by default */
    size_t data_len;
};

enum upm_media_class {
    UPM_MEDIA_BAD = 0,
    UPM_MEDIA_OWN,
    UPM_MEDIA_EXTERNAL,
};

/*
 * Parse and validate one message. buf need not be NUL-terminated and is never
 * read beyond len. opts may be NULL (defaults). ev need not be initialised;
 * its previous contents are overwritten, not freed.
 *
 * Returns 0 with ev filled (caller frees with upm_event_clear), or -1 with ev
 * zeroed (nothing to free) and err filled when err is not NULL. Never
 * aborts on any input (only on out-of-memory, by upmon's policy).
 */
int upm_event_parse(const char *buf, size_t len, const struct upm_event_opts *opts,
                    struct upm_event *ev, struct upm_event_error *err);

/* Free what ev owns and zero it. NULL-safe; safe on a zeroed or cleared
 * event and on one a failed parse left behind. */
void upm_event_clear(struct upm_event *ev);

/*
 * Append ev as canonical compact JSON (fixed key order, all optional fields
 * written, "v":1 first) to out. Parsing the output yields an event equal to
 * ev (upm_event_equal) given the same CDN hosts. The output may be a few
 * bytes longer than the message ev was parsed from (defaults are written
 * out). Returns 0, or -1 if out's limit was reached (out is then left with
 * its previous length).
 */
int upm_event_serialize(const struct upm_event *ev, struct upm_buf *out);

/* Field-by-field equality, media entries and data included. */
bool upm_event_equal(const struct upm_event *a, const struct upm_event *b);

/* Stable names: "ok", "invalid_json", ... (see the enum); "unknown" for a
 * value outside the enum. Static strings. */
const char *upm_event_reason_name(enum upm_event_reason reason);

/* "SAVE", "UPDATE", "ERROR"; "NONE" otherwise. Static strings. */
const char *upm_event_type_name(enum upm_event_type type);

/* true if cc is exactly two upper-case letters forming an assigned ISO
 * 3166-1 alpha-2 code (249 of them). cc is a NUL-terminated string. */
bool upm_event_country_valid(const char *cc);

/*
 * Classify one media link of n bytes (need not be NUL-terminated): own CDN
 * if its scheme is http or https (any case) and its host equals or ends with
 * "." + one of opts' cdn_hosts; external if it is otherwise a well-formed
 * http(s) URL with a non-empty host; bad if it is longer than
 * UPM_EVENT_URL_MAX, has another or no scheme, an empty or malformed host,
 * a bad port, or any space, control or DEL byte. opts may be NULL.
 */
enum upm_media_class upm_event_media_classify(const char *url, size_t n,
                                              const struct upm_event_opts *opts);

#endif
