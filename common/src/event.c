/*
 * event — wire format v1. Three passes over a message, each catching what the
 * next cannot:
 *   1. UTF-8 validation of the raw bytes;
 *   2. a strict RFC 8259 scanner (bounded recursion) that also records the
 *      raw text of every known top-level member — cJSON keeps numbers as
 *      double, which cannot hold ts_ns or a uint64 id exactly — rejects
 *      duplicate top-level keys (cJSON keeps both), and rejects \u escapes
 *      decoding to NUL or a lone surrogate;
 *   3. cJSON for strings, booleans and the media array.
 * `data` is kept as the compacted source text of the object (whitespace
 * outside strings removed), not re-printed by cJSON, so its numbers keep
 * every digit.
 */
#include "upmon/event.h"

#include "upmon/alloc.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Longest number literal accepted anywhere: cJSON copies at most 63 bytes of
 * a number before converting it and fails on anything longer. */
#define NUMBER_MAX 63

/* ---------------------------------------------------------------- errors */

/* Copy n bytes as printable ASCII (others become '?'), truncated to fit. */
static void copy_printable(char *dst, size_t dst_size, const char *src, size_t n)
{
    size_t i;
    for (i = 0; i < n && i + 1 < dst_size; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    dst[i] = '\0';
}

static void set_err(struct upm_event_error *err, enum upm_event_reason reason, const char *field,
                    size_t field_len, size_t offset, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static void set_err(struct upm_event_error *err, enum upm_event_reason reason, const char *field,
                    size_t field_len, size_t offset, const char *fmt, ...)
{
    char detail[UPM_EVENT_DETAIL_MAX + 1];
    va_list ap;

    err->reason = reason;
    err->offset = offset;
    copy_printable(err->field, sizeof(err->field), field ? field : "", field ? field_len : 0);
    detail[0] = '\0';
    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap); /* truncation is the point */
    va_end(ap);
    /* Details quote input bytes; sanitize the whole text once. */
    copy_printable(err->detail, sizeof(err->detail), detail, strnlen(detail, sizeof(detail)));
}

static const char *const reason_names[UPM_EVENT_REASON_COUNT] = {
    [UPM_EVENT_OK] = "ok",
    [UPM_EVENT_INVALID_JSON] = "invalid_json",
    [UPM_EVENT_NOT_OBJECT] = "not_object",
    [UPM_EVENT_OVERSIZE] = "oversize",
    [UPM_EVENT_INVALID_UTF8] = "invalid_utf8",
    [UPM_EVENT_MISSING_FIELD] = "missing_field",
    [UPM_EVENT_WRONG_TYPE] = "wrong_type",
    [UPM_EVENT_OUT_OF_RANGE] = "out_of_range",
    [UPM_EVENT_TOO_LONG] = "too_long",
    [UPM_EVENT_UNKNOWN_EVENT] = "unknown_event",
    [UPM_EVENT_UP_TS_WITHOUT_CREATED] = "up_ts_without_created",
    [UPM_EVENT_BAD_COUNTRY] = "bad_country",
    [UPM_EVENT_BAD_MEDIA] = "bad_media",
    [UPM_EVENT_DATA_TOO_LARGE] = "data_too_large",
    [UPM_EVENT_UNSUPPORTED_VERSION] = "unsupported_version",
    [UPM_EVENT_DUPLICATE_FIELD] = "duplicate_field",
    [UPM_EVENT_TOO_DEEP] = "too_deep",
    [UPM_EVENT_NUL_IN_STRING] = "nul_in_string",
};

const char *upm_event_reason_name(enum upm_event_reason reason)
{
    if ((unsigned)reason >= UPM_EVENT_REASON_COUNT || !reason_names[reason])
        return "unknown";
    return reason_names[reason];
}

const char *upm_event_type_name(enum upm_event_type type)
{
    switch (type) {
    case UPM_EVENT_SAVE:
        return "SAVE";
    case UPM_EVENT_UPDATE:
        return "UPDATE";
    case UPM_EVENT_ERROR:
        return "ERROR";
    default:
        return "NONE";
    }
}

/* ------------------------------------------------------------- countries */

/* ISO 3166-1 alpha-2, officially assigned codes, sorted for binary search. */
static const char countries[][3] = {
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
    "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS",
    "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN",
    "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE",
    "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF",
    "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HM",
    "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM",
    "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC",
    "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
    "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA",
    "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG",
    "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW",
    "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS",
    "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO",
    "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI",
    "VN", "VU", "WF", "WS", "YE", "YT", "ZA", "ZM", "ZW",
};

_Static_assert(sizeof(countries) / sizeof(countries[0]) == 249, "ISO 3166-1 has 249 codes");

bool upm_event_country_valid(const char *cc)
{
    if (!cc || cc[0] < 'A' || cc[0] > 'Z' || cc[1] < 'A' || cc[1] > 'Z' || cc[2] != '\0')
        return false;
    size_t lo = 0, hi = sizeof(countries) / sizeof(countries[0]);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = memcmp(cc, countries[mid], 2);
        if (c == 0)
            return true;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return false;
}

/* ----------------------------------------------------------------- media */

static int lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

static bool ieq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
            return false;
    return true;
}

static bool is_alnum(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static bool is_hex(int c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* A DNS-style host name: labels of [A-Za-z0-9_-], 1..63 bytes, not starting
 * or ending with '-'; one trailing dot allowed (already stripped by caller). */
static bool host_name_ok(const char *h, size_t n)
{
    if (n == 0 || n > 253)
        return false;
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)h[i];
        if (c == '.') {
            if (label == 0 || h[i - 1] == '-')
                return false;
            label = 0;
        } else if (is_alnum(c) || c == '_' || c == '-') {
            if (label == 0 && c == '-')
                return false;
            if (++label > 63)
                return false;
        } else {
            return false;
        }
    }
    return label > 0 && h[n - 1] != '-';
}

static bool host_is_cdn(const char *h, size_t n, const struct upm_event_opts *opts)
{
    if (!opts || !opts->cdn_hosts)
        return false;
    for (size_t i = 0; i < opts->n_cdn_hosts; i++) {
        const char *sfx = opts->cdn_hosts[i];
        if (!sfx)
            continue;
        /* Tolerate ".cdn.example.com" and "cdn.example.com." in configs. */
        if (*sfx == '.')
            sfx++;
        size_t sn = strlen(sfx);
        if (sn && sfx[sn - 1] == '.')
            sn--;
        if (sn == 0 || sn > n)
            continue;
        if (!ieq(h + n - sn, sfx, sn))
            continue;
        if (sn == n || h[n - sn - 1] == '.')
            return true;
    }
    return false;
}

enum upm_media_class upm_event_media_classify(const char *url, size_t n,
                                              const struct upm_event_opts *opts)
{
    if (!url || n > UPM_EVENT_URL_MAX)
        return UPM_MEDIA_BAD;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)url[i];
        if (c <= 0x20 || c == 0x7f)
            return UPM_MEDIA_BAD;
    }
    size_t pos;
    if (n >= 7 && ieq(url, "http://", 7))
        pos = 7;
    else if (n >= 8 && ieq(url, "https://", 8))
        pos = 8;
    else
        return UPM_MEDIA_BAD;

    /* authority = up to the first '/', '?' or '#' */
    size_t a0 = pos, a1 = pos;
    while (a1 < n && url[a1] != '/' && url[a1] != '?' && url[a1] != '#')
        a1++;
    /* userinfo ends at the last '@' of the authority */
    for (size_t i = a1; i > a0; i--) {
        if (url[i - 1] == '@') {
            a0 = i;
            break;
        }
    }
    const char *h = url + a0;
    size_t hn = a1 - a0;
    if (hn == 0)
        return UPM_MEDIA_BAD; /* and h[0] below would be past the end */
    size_t port_at = hn;      /* index of ':' before the port, hn if none */
    if (h[0] == '[') {
        /* IPv6 literal: hex digits, ':' and '.', then "]" and an optional port */
        size_t i = 1;
        while (i < hn && (is_hex((unsigned char)h[i]) || h[i] == ':' || h[i] == '.'))
            i++;
        if (i >= hn || h[i] != ']' || i < 3)
            return UPM_MEDIA_BAD;
        if (i + 1 < hn && h[i + 1] != ':')
            return UPM_MEDIA_BAD;
        port_at = i + 1;
        if (port_at == hn)
            return UPM_MEDIA_EXTERNAL;
    } else {
        const char *colon = memchr(h, ':', hn);
        if (colon)
            port_at = (size_t)(colon - h);
    }
    if (port_at < hn) {
        /* ":" then 1..5 digits, 1..65535 */
        size_t pd = hn - port_at - 1;
        if (pd == 0 || pd > 5)
            return UPM_MEDIA_BAD;
        unsigned long port = 0;
        for (size_t i = port_at + 1; i < hn; i++) {
            if (h[i] < '0' || h[i] > '9')
                return UPM_MEDIA_BAD;
            port = port * 10 + (unsigned long)(h[i] - '0');
        }
        if (port == 0 || port > 65535)
            return UPM_MEDIA_BAD;
    }
    if (h[0] == '[')
        return UPM_MEDIA_EXTERNAL; /* never one of our CDN names */
    hn = port_at;
    if (hn > 1 && h[hn - 1] == '.')
        hn--;
    if (!host_name_ok(h, hn))
        return UPM_MEDIA_BAD;
    return host_is_cdn(h, hn, opts) ? UPM_MEDIA_OWN : UPM_MEDIA_EXTERNAL;
}

/* ------------------------------------------------------------------ utf8 */

/* Offset of the first byte of an ill-formed sequence, or len if none.
 * Well-formed per Unicode table 3-7: no overlongs, no surrogates, <= U+10FFFF. */
static size_t utf8_invalid_at(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        unsigned char lo = 0x80, hi = 0xbf;
        if (c >= 0xc2 && c <= 0xdf) {
            need = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2;
            if (c == 0xe0)
                lo = 0xa0;
            else if (c == 0xed)
                hi = 0x9f; /* U+D800..U+DFFF are surrogates */
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3;
            if (c == 0xf0)
                lo = 0x90;
            else if (c == 0xf4)
                hi = 0x8f; /* > U+10FFFF */
        } else {
            return i;
        }
        if (len - i - 1 < need)
            return i;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return i;
        for (size_t k = 2; k <= need; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xbf)
                return i;
        i += need + 1;
    }
    return len;
}

/* --------------------------------------------------------------- scanner */

enum jtype { JT_NONE = 0, JT_OBJECT, JT_ARRAY, JT_STRING, JT_NUMBER, JT_TRUE, JT_FALSE, JT_NULL };

static const char *jtype_name(enum jtype t)
{
    static const char *const names[] = {"nothing", "object", "array", "string",
                                        "number",  "true",   "false", "null"};
    return names[t];
}

enum field {
    F_V,
    F_ITEM_ID,
    F_ATTEMPT_ID,
    F_REQUEST_ID,
    F_EVENT,
    F_TS_NS,
    F_IS_CREATED,
    F_UP_TS,
    F_ORIGIN,
    F_ORIGIN_ID,
    F_COUNTRY,
    F_COMPANY_ID,
    F_CATEGORY_ID,
    F_MEDIA,
    F_DATA,
    F_COUNT,
};

static const char *const field_names[F_COUNT] = {
    [F_V] = "v",
    [F_ITEM_ID] = "item_id",
    [F_ATTEMPT_ID] = "attempt_id",
    [F_REQUEST_ID] = "request_id",
    [F_EVENT] = "event",
    [F_TS_NS] = "ts_ns",
    [F_IS_CREATED] = "is_created",
    [F_UP_TS] = "up_ts",
    [F_ORIGIN] = "origin",
    [F_ORIGIN_ID] = "origin_id",
    [F_COUNTRY] = "country",
    [F_COMPANY_ID] = "company_id",
    [F_CATEGORY_ID] = "category_id",
    [F_MEDIA] = "media",
    [F_DATA] = "data",
};

struct tok {
    enum jtype type; /* JT_NONE = absent */
    const char *s;   /* raw text of the value */
    size_t n;
};

struct keyref {
    size_t pool_off; /* into scan.pool, which may move while it grows */
    size_t len;
    size_t src_off; /* where the key starts in the message */
    const char *p;  /* set from pool_off once the scan is done */
};

struct scan {
    const char *base, *p, *end;
    int depth;
    struct upm_event_error *err;
    struct tok known[F_COUNT];
    struct upm_buf key;  /* the key being decoded */
    struct upm_buf pool; /* unknown top-level keys, decoded, back to back */
    struct keyref *unknown;
    size_t n_unknown, cap_unknown;
    char cur[UPM_EVENT_FIELD_MAX + 1]; /* top-level member being scanned */
    size_t cur_len;
};

static void scan_free(struct scan *s)
{
    upm_buf_free(&s->key);
    upm_buf_free(&s->pool);
    free(s->unknown);
}

static int scan_fail(struct scan *s, enum upm_event_reason reason, const char *what)
{
    set_err(s->err, reason, s->cur, s->cur_len, (size_t)(s->p - s->base), "%s at byte %zu", what,
            (size_t)(s->p - s->base));
    return -1;
}

static void skip_ws(struct scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Read "XXXX" of a \u escape at s->p. */
static int read_hex4(struct scan *s, unsigned *out)
{
    if (s->end - s->p < 4)
        return scan_fail(s, UPM_EVENT_INVALID_JSON, "truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval((unsigned char)s->p[i]);
        if (h < 0)
            return scan_fail(s, UPM_EVENT_INVALID_JSON, "bad hex digit in \\u escape");
        v = v << 4 | (unsigned)h;
    }
    s->p += 4;
    *out = v;
    return 0;
}

static void put_utf8(struct upm_buf *b, unsigned cp)
{
    char o[4];
    size_t n;
    if (cp < 0x80) {
        o[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        o[0] = (char)(0xc0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        o[0] = (char)(0xe0 | cp >> 12);
        o[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        o[0] = (char)(0xf0 | cp >> 18);
        o[1] = (char)(0x80 | (cp >> 12 & 0x3f));
        o[2] = (char)(0x80 | (cp >> 6 & 0x3f));
        o[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    upm_buf_append(b, o, n); /* unlimited buffer: cannot fail */
}

/* A string at s->p (on the opening quote). Validates escapes; decodes into
 * out when out is not NULL. The bytes are known to be valid UTF-8. */
static int scan_string(struct scan *s, struct upm_buf *out)
{
    s->p++;
    const char *run = s->p;
    for (;;) {
        if (s->p >= s->end)
            return scan_fail(s, UPM_EVENT_INVALID_JSON, "unterminated string");
        unsigned char c = (unsigned char)*s->p;
        if (c == '"') {
            if (out)
                upm_buf_append(out, run, (size_t)(s->p - run));
            s->p++;
            return 0;
        }
        if (c < 0x20)
            return scan_fail(s, UPM_EVENT_INVALID_JSON, "control character in string");
        if (c != '\\') {
            s->p++;
            continue;
        }
        if (out)
            upm_buf_append(out, run, (size_t)(s->p - run));
        const char *esc = s->p;
        s->p++;
        if (s->p >= s->end)
            return scan_fail(s, UPM_EVENT_INVALID_JSON, "unterminated string");
        char e = *s->p++;
        char lit = 0;
        switch (e) {
        case '"':
        case '\\':
        case '/':
            lit = e;
            break;
        case 'b':
            lit = '\b';
            break;
        case 'f':
            lit = '\f';
            break;
        case 'n':
            lit = '\n';
            break;
        case 'r':
            lit = '\r';
            break;
        case 't':
            lit = '\t';
            break;
        case 'u': {
            unsigned cp, lo;
            if (read_hex4(s, &cp) != 0)
                return -1;
            if (cp == 0) {
                s->p = esc;
                return scan_fail(s, UPM_EVENT_NUL_IN_STRING, "\\u0000 in string");
            }
            if (cp >= 0xdc00 && cp <= 0xdfff) {
                s->p = esc;
                return scan_fail(s, UPM_EVENT_INVALID_UTF8, "lone low surrogate escape");
            }
            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (s->end - s->p < 6 || s->p[0] != '\\' || s->p[1] != 'u') {
                    s->p = esc;
                    return scan_fail(s, UPM_EVENT_INVALID_UTF8, "lone high surrogate escape");
                }
                s->p += 2;
                if (read_hex4(s, &lo) != 0)
                    return -1;
                if (lo < 0xdc00 || lo > 0xdfff) {
                    s->p = esc;
                    return scan_fail(s, UPM_EVENT_INVALID_UTF8, "lone high surrogate escape");
                }
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            if (out)
                put_utf8(out, cp);
            break;
        }
        default:
            s->p = esc;
            return scan_fail(s, UPM_EVENT_INVALID_JSON, "bad escape in string");
        }
        if (out && lit)
            upm_buf_putc(out, lit);
        run = s->p;
    }
}

static bool is_digit(const char *p, const char *end)
{
    return p < end && *p >= '0' && *p <= '9';
}

static int scan_number(struct scan *s)
{
    const char *start = s->p;
    if (s->p < s->end && *s->p == '-')
        s->p++;
    if (!is_digit(s->p, s->end))
        return scan_fail(s, UPM_EVENT_INVALID_JSON, "bad number");
    if (*s->p == '0') {
        s->p++;
        /* RFC 8259: no leading zeros */
        if (is_digit(s->p, s->end))
            return scan_fail(s, UPM_EVENT_INVALID_JSON, "leading zero in number");
    } else {
        while (is_digit(s->p, s->end))
            s->p++;
    }
    if (s->p < s->end && *s->p == '.') {
        s->p++;
        if (!is_digit(s->p, s->end))
            return scan_fail(s, UPM_EVENT_INVALID_JSON, "bad fraction");
        while (is_digit(s->p, s->end))
            s->p++;
    }
    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
        s->p++;
        if (s->p < s->end && (*s->p == '+' || *s->p == '-'))
            s->p++;
        if (!is_digit(s->p, s->end))
            return scan_fail(s, UPM_EVENT_INVALID_JSON, "bad exponent");
        while (is_digit(s->p, s->end))
            s->p++;
    }
    if (s->p - start > NUMBER_MAX) {
        s->p = start;
        return scan_fail(s, UPM_EVENT_TOO_LONG, "number literal longer than 63 bytes");
    }
    return 0;
}

static int scan_literal(struct scan *s, const char *word, size_t n)
{
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
        return scan_fail(s, UPM_EVENT_INVALID_JSON, "unexpected character");
    s->p += n;
    return 0;
}

static int scan_value(struct scan *s, struct tok *t);

/* Record a top-level member key (decoded in s->key); -1 on a duplicate. */
static int note_key(struct scan *s, const char *keypos, struct tok **slot)
{
    const char *k = s->key.data ? s->key.data : "";
    size_t kn = s->key.len;

    *slot = NULL;
    copy_printable(s->cur, sizeof(s->cur), k, kn);
    s->cur_len = strlen(s->cur);
    for (int f = 0; f < F_COUNT; f++) {
        if (strlen(field_names[f]) == kn && memcmp(field_names[f], k, kn) == 0) {
            if (s->known[f].type != JT_NONE) {
                s->p = keypos;
                return scan_fail(s, UPM_EVENT_DUPLICATE_FIELD, "duplicate key");
            }
            *slot = &s->known[f];
            return 0;
        }
    }
    /* Unknown keys are checked for duplicates after the scan, by sorting. */
    if (s->n_unknown == s->cap_unknown) {
        s->cap_unknown = s->cap_unknown ? s->cap_unknown * 2 : 16;
        s->unknown = upm_realloc(s->unknown, s->cap_unknown * sizeof(*s->unknown));
    }
    s->unknown[s->n_unknown].pool_off = s->pool.len;
    s->unknown[s->n_unknown].len = kn;
    s->unknown[s->n_unknown].src_off = (size_t)(keypos - s->base);
    s->unknown[s->n_unknown].p = NULL;
    s->n_unknown++;
    upm_buf_append(&s->pool, k, kn);
    return 0;
}

static int scan_object(struct scan *s)
{
    bool top = s->depth == 1;
    s->p++; /* '{' */
    skip_ws(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        return 0;
    }
    for (;;) {
        skip_ws(s);
        if (s->p >= s->end || *s->p != '"')
            return scan_fail(s, UPM_EVENT_INVALID_JSON, "expected a key");
        const char *keypos = s->p;
        struct tok *slot = NULL;
        if (top) {
            upm_buf_reset(&s->key);
            if (scan_string(s, &s->key) != 0)
                return -1;
            if (note_key(s, keypos, &slot) != 0)
                return -1;
        } else if (scan_string(s, NULL) != 0) {
            return -1;
        }
        skip_ws(s);
        if (s->p >= s->end || *s->p != ':')
            return scan_fail(s, UPM_EVENT_INVALID_JSON, "expected ':'");
        s->p++;
        struct tok t;
        if (scan_value(s, &t) != 0)
            return -1;
        if (slot)
            *slot = t;
        skip_ws(s);
        /* junk right after a value still names that member */
        if (s->p >= s->end || (*s->p != ',' && *s->p != '}'))
            return scan_fail(s, UPM_EVENT_INVALID_JSON, "expected ',' or '}'");
        if (top) {
            s->cur[0] = '\0';
            s->cur_len = 0;
        }
        if (*s->p++ == '}')
            return 0;
    }
}

static int scan_array(struct scan *s)
{
    s->p++; /* '[' */
    skip_ws(s);
    if (s->p < s->end && *s->p == ']') {
        s->p++;
        return 0;
    }
    for (;;) {
        struct tok t;
        if (scan_value(s, &t) != 0)
            return -1;
        skip_ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            continue;
        }
        if (s->p < s->end && *s->p == ']') {
            s->p++;
            return 0;
        }
        return scan_fail(s, UPM_EVENT_INVALID_JSON, "expected ',' or ']'");
    }
}

/* Recursion depth is bounded by UPM_EVENT_MAX_DEPTH: objects and arrays are
 * the only recursive productions and both go through the check below. */
static int scan_value(struct scan *s, struct tok *t)
{
    int rc;
    skip_ws(s);
    if (s->p >= s->end)
        return scan_fail(s, UPM_EVENT_INVALID_JSON, "unexpected end of input");
    t->s = s->p;
    switch (*s->p) {
    case '{':
    case '[':
        if (s->depth >= UPM_EVENT_MAX_DEPTH)
            return scan_fail(s, UPM_EVENT_TOO_DEEP, "nesting deeper than 64");
        s->depth++;
        if (*s->p == '{') {
            t->type = JT_OBJECT;
            rc = scan_object(s);
        } else {
            t->type = JT_ARRAY;
            rc = scan_array(s);
        }
        s->depth--;
        break;
    case '"':
        t->type = JT_STRING;
        rc = scan_string(s, NULL);
        break;
    case 't':
        t->type = JT_TRUE;
        rc = scan_literal(s, "true", 4);
        break;
    case 'f':
        t->type = JT_FALSE;
        rc = scan_literal(s, "false", 5);
        break;
    case 'n':
        t->type = JT_NULL;
        rc = scan_literal(s, "null", 4);
        break;
    default:
        t->type = JT_NUMBER;
        rc = scan_number(s);
        break;
    }
    t->n = (size_t)(s->p - t->s);
    return rc;
}

static int keyref_cmp(const void *a, const void *b)
{
    const struct keyref *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->p, y->p, n);
    if (c)
        return c;
    return (x->len > y->len) - (x->len < y->len);
}

/* The whole document: one value, then only whitespace. */
static int scan_document(struct scan *s)
{
    struct tok top;
    if (scan_value(s, &top) != 0)
        return -1;
    skip_ws(s);
    if (s->p != s->end)
        return scan_fail(s, UPM_EVENT_INVALID_JSON, "trailing characters after the value");
    if (top.type != JT_OBJECT) {
        set_err(s->err, UPM_EVENT_NOT_OBJECT, NULL, 0, 0, "top-level value is %s, not an object",
                jtype_name(top.type));
        return -1;
    }
    if (s->n_unknown > 1) {
        const char *pool = s->pool.data ? s->pool.data : ""; /* all keys may be "" */
        for (size_t i = 0; i < s->n_unknown; i++)
            s->unknown[i].p = pool + s->unknown[i].pool_off;
        qsort(s->unknown, s->n_unknown, sizeof(*s->unknown), keyref_cmp);
        for (size_t i = 1; i < s->n_unknown; i++) {
            const struct keyref *a = &s->unknown[i - 1], *b = &s->unknown[i];
            if (keyref_cmp(a, b) == 0) {
                /* report the later of the two, as a streaming check would */
                size_t at = a->src_off > b->src_off ? a->src_off : b->src_off;
                set_err(s->err, UPM_EVENT_DUPLICATE_FIELD, b->p, b->len, at,
                        "duplicate key at byte %zu", at);
                return -1;
            }
        }
    }
    return 0;
}

/* ------------------------------------------------------------ extraction */

static int field_fail(struct upm_event_error *err, enum field f, enum upm_event_reason reason,
                      const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int field_fail(struct upm_event_error *err, enum field f, enum upm_event_reason reason,
                      const char *fmt, ...)
{
    char detail[UPM_EVENT_DETAIL_MAX + 1];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    set_err(err, reason, field_names[f], strlen(field_names[f]), 0, "%s", detail);
    return -1;
}

_Static_assert(sizeof(unsigned long long) == sizeof(uint64_t), "strtoull reads 64 bits");
_Static_assert(sizeof(long long) == sizeof(int64_t), "strtoll reads 64 bits");

/* Copy an integer token into tmp after the checks both widths share. */
static int int_token(const struct tok *t, enum field f, char *tmp, struct upm_event_error *err)
{
    if (t->type != JT_NUMBER)
        return field_fail(err, f, UPM_EVENT_WRONG_TYPE, "expected an integer, got %s",
                          jtype_name(t->type));
    /* The scanner let only RFC 8259 numbers of <= 63 bytes through, so no
     * '+', no leading zeros, no spaces: what remains is fraction/exponent. */
    memcpy(tmp, t->s, t->n);
    tmp[t->n] = '\0';
    if (strpbrk(tmp, ".eE"))
        return field_fail(err, f, UPM_EVENT_WRONG_TYPE,
                          "expected an integer, got a fraction or exponent: %.40s", tmp);
    return 0;
}

static int get_u64(const struct tok *t, enum field f, uint64_t *out, struct upm_event_error *err)
{
    char tmp[NUMBER_MAX + 1];
    if (int_token(t, f, tmp, err) != 0)
        return -1;
    /* strtoull would silently negate "-5" */
    if (tmp[0] == '-')
        return field_fail(err, f, UPM_EVENT_OUT_OF_RANGE, "negative value %.40s", tmp);
    char *end;
    errno = 0;
    unsigned long long v = strtoull(tmp, &end, 10);
    if (errno == ERANGE)
        return field_fail(err, f, UPM_EVENT_OUT_OF_RANGE, "%.40s exceeds 18446744073709551615",
                          tmp);
    if (end == tmp || *end != '\0')
        return field_fail(err, f, UPM_EVENT_WRONG_TYPE, "not an integer: %.40s", tmp);
    *out = (uint64_t)v;
    return 0;
}

static int get_i64(const struct tok *t, enum field f, int64_t *out, struct upm_event_error *err)
{
    char tmp[NUMBER_MAX + 1];
    if (int_token(t, f, tmp, err) != 0)
        return -1;
    char *end;
    errno = 0;
    long long v = strtoll(tmp, &end, 10);
    if (errno == ERANGE)
        return field_fail(err, f, UPM_EVENT_OUT_OF_RANGE, "%.40s is outside int64", tmp);
    if (end == tmp || *end != '\0')
        return field_fail(err, f, UPM_EVENT_WRONG_TYPE, "not an integer: %.40s", tmp);
    *out = (int64_t)v;
    return 0;
}

/* A string field of at most UPM_EVENT_STR_MAX bytes into dst. */
static int get_str(const struct scan *s, const cJSON *root, enum field f, char *dst,
                   struct upm_event_error *err)
{
    const struct tok *t = &s->known[f];
    if (t->type != JT_STRING)
        return field_fail(err, f, UPM_EVENT_WRONG_TYPE, "expected a string, got %s",
                          jtype_name(t->type));
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, field_names[f]);
    if (!cJSON_IsString(item) || !item->valuestring)
        return field_fail(err, f, UPM_EVENT_WRONG_TYPE, "expected a string");
    size_t n = strlen(item->valuestring);
    if (n > UPM_EVENT_STR_MAX)
        return field_fail(err, f, UPM_EVENT_TOO_LONG, "%zu bytes, limit %d", n, UPM_EVENT_STR_MAX);
    memcpy(dst, item->valuestring, n + 1);
    return 0;
}

/* Source text of a validated JSON value minus whitespace outside strings. */
static int compact_json(const char *p, size_t n, struct upm_buf *out)
{
    const char *end = p + n, *run = p;
    bool in_str = false;
    for (; p < end; p++) {
        char c = *p;
        if (in_str) {
            if (c == '\\')
                p++; /* the escaped byte cannot end the string */
            else if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            if (upm_buf_append(out, run, (size_t)(p - run)) != 0)
                return -1;
            run = p + 1;
        }
    }
    return upm_buf_append(out, run, (size_t)(end - run));
}

static int get_media(const struct scan *s, const cJSON *root, const struct upm_event_opts *opts,
                     struct upm_event *ev, struct upm_event_error *err)
{
    const struct tok *t = &s->known[F_MEDIA];
    if (t->type == JT_NONE)
        return 0;
    if (t->type != JT_ARRAY)
        return field_fail(err, F_MEDIA, UPM_EVENT_BAD_MEDIA, "media is %s, not an array",
                          jtype_name(t->type));
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "media");
    if (!cJSON_IsArray(arr))
        return field_fail(err, F_MEDIA, UPM_EVENT_BAD_MEDIA, "media is not an array");
    int n = cJSON_GetArraySize(arr);
    if (n > UPM_EVENT_MEDIA_MAX)
        return field_fail(err, F_MEDIA, UPM_EVENT_BAD_MEDIA, "%d entries, limit %d", n,
                          UPM_EVENT_MEDIA_MAX);
    if (n <= 0)
        return 0;
    ev->media = upm_calloc((size_t)n, sizeof(*ev->media));
    const cJSON *it;
    cJSON_ArrayForEach(it, arr)
    {
        char *url = NULL;
        enum upm_media_class cls = UPM_MEDIA_BAD;
        if (cJSON_IsString(it) && it->valuestring) {
            url = upm_strdup(it->valuestring);
            cls = upm_event_media_classify(url, strlen(url), opts);
        }
        ev->media[ev->n_media++] = url;
        if (cls == UPM_MEDIA_OWN)
            ev->media_own++;
        else if (cls == UPM_MEDIA_EXTERNAL)
            ev->media_external++;
        else
            ev->media_bad++;
    }
    return 0;
}

static int extract(const struct scan *s, const cJSON *root, const struct upm_event_opts *opts,
                   struct upm_event *ev, struct upm_event_error *err)
{
    static const enum field required[] = {
        F_ITEM_ID,    F_ATTEMPT_ID, F_REQUEST_ID, F_EVENT,      F_TS_NS,
        F_IS_CREATED, F_ORIGIN,     F_COUNTRY,    F_COMPANY_ID, F_CATEGORY_ID,
    };
    const struct tok *k = s->known;

    /* First: another version may give every other field a new meaning. */
    if (k[F_V].type != JT_NONE) {
        if (k[F_V].type != JT_NUMBER)
            return field_fail(err, F_V, UPM_EVENT_WRONG_TYPE, "expected the number 1, got %s",
                              jtype_name(k[F_V].type));
        if (k[F_V].n != 1 || k[F_V].s[0] != '1')
            return field_fail(err, F_V, UPM_EVENT_UNSUPPORTED_VERSION, "version %.*s, supported: 1",
                              (int)(k[F_V].n > 24 ? 24 : k[F_V].n), k[F_V].s);
    }
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++)
        if (k[required[i]].type == JT_NONE)
            return field_fail(err, required[i], UPM_EVENT_MISSING_FIELD,
                              "required field is missing");

    if (get_u64(&k[F_ITEM_ID], F_ITEM_ID, &ev->item_id, err) != 0 ||
        get_str(s, root, F_ATTEMPT_ID, ev->attempt_id, err) != 0 ||
        get_str(s, root, F_REQUEST_ID, ev->request_id, err) != 0)
        return -1;
    if (ev->attempt_id[0] == '\0')
        return field_fail(err, F_ATTEMPT_ID, UPM_EVENT_OUT_OF_RANGE, "must not be empty");

    if (k[F_EVENT].type != JT_STRING)
        return field_fail(err, F_EVENT, UPM_EVENT_WRONG_TYPE, "expected a string, got %s",
                          jtype_name(k[F_EVENT].type));
    const cJSON *event = cJSON_GetObjectItemCaseSensitive(root, "event");
    const char *ename = cJSON_IsString(event) && event->valuestring ? event->valuestring : "";
    if (strcmp(ename, "SAVE") == 0)
        ev->type = UPM_EVENT_SAVE;
    else if (strcmp(ename, "UPDATE") == 0)
        ev->type = UPM_EVENT_UPDATE;
    else if (strcmp(ename, "ERROR") == 0)
        ev->type = UPM_EVENT_ERROR;
    else
        return field_fail(err, F_EVENT, UPM_EVENT_UNKNOWN_EVENT,
                          "\"%.32s\" is not SAVE, UPDATE or ERROR", ename);

    if (get_i64(&k[F_TS_NS], F_TS_NS, &ev->ts_ns, err) != 0)
        return -1;
    if (ev->ts_ns <= 0)
        return field_fail(err, F_TS_NS, UPM_EVENT_OUT_OF_RANGE, "must be > 0");

    if (k[F_IS_CREATED].type != JT_TRUE && k[F_IS_CREATED].type != JT_FALSE)
        return field_fail(err, F_IS_CREATED, UPM_EVENT_WRONG_TYPE, "expected a boolean, got %s",
                          jtype_name(k[F_IS_CREATED].type));
    ev->is_created = k[F_IS_CREATED].type == JT_TRUE;

    if (k[F_UP_TS].type != JT_NONE) {
        if (get_i64(&k[F_UP_TS], F_UP_TS, &ev->up_ts, err) != 0)
            return -1;
        if (ev->up_ts < 0)
            return field_fail(err, F_UP_TS, UPM_EVENT_OUT_OF_RANGE, "must be >= 0");
    }
    if (ev->up_ts != 0 && !ev->is_created)
        return field_fail(err, F_UP_TS, UPM_EVENT_UP_TS_WITHOUT_CREATED,
                          "up_ts is set but is_created is false");
    if (ev->is_created && ev->up_ts == 0)
        return field_fail(err, F_UP_TS, UPM_EVENT_OUT_OF_RANGE,
                          "is_created is true but up_ts is 0 or absent");

    if (get_str(s, root, F_ORIGIN, ev->origin, err) != 0)
        return -1;
    if (k[F_ORIGIN_ID].type != JT_NONE && get_str(s, root, F_ORIGIN_ID, ev->origin_id, err) != 0)
        return -1;

    if (k[F_COUNTRY].type != JT_STRING)
        return field_fail(err, F_COUNTRY, UPM_EVENT_WRONG_TYPE, "expected a string, got %s",
                          jtype_name(k[F_COUNTRY].type));
    const cJSON *country = cJSON_GetObjectItemCaseSensitive(root, "country");
    const char *cc = cJSON_IsString(country) && country->valuestring ? country->valuestring : "";
    if (!upm_event_country_valid(cc))
        return field_fail(err, F_COUNTRY, UPM_EVENT_BAD_COUNTRY,
                          "\"%.16s\" is not an ISO 3166-1 alpha-2 code", cc);
    memcpy(ev->country, cc, 3);

    if (get_u64(&k[F_COMPANY_ID], F_COMPANY_ID, &ev->company_id, err) != 0 ||
        get_u64(&k[F_CATEGORY_ID], F_CATEGORY_ID, &ev->category_id, err) != 0)
        return -1;

    if (get_media(s, root, opts, ev, err) != 0)
        return -1;

    struct upm_buf data;
    upm_buf_init(&data, UPM_EVENT_DATA_MAX);
    if (k[F_DATA].type == JT_NONE) {
        upm_buf_puts(&data, "{}");
    } else if (k[F_DATA].type != JT_OBJECT) {
        return field_fail(err, F_DATA, UPM_EVENT_WRONG_TYPE, "expected an object, got %s",
                          jtype_name(k[F_DATA].type));
    } else if (compact_json(k[F_DATA].s, k[F_DATA].n, &data) != 0) {
        upm_buf_free(&data);
        return field_fail(err, F_DATA, UPM_EVENT_DATA_TOO_LARGE, "compact data exceeds %u bytes",
                          UPM_EVENT_DATA_MAX);
    }
    ev->data = upm_buf_steal(&data, &ev->data_len);
    return 0;
}

int upm_event_parse(const char *buf, size_t len, const struct upm_event_opts *opts,
                    struct upm_event *ev, struct upm_event_error *err)
{
    struct upm_event_error scratch;
    struct scan s;
    cJSON *root = NULL;
    int rc = -1;

    if (!err)
        err = &scratch;
    memset(err, 0, sizeof(*err));
    memset(ev, 0, sizeof(*ev));
    memset(&s, 0, sizeof(s));
    upm_buf_init(&s.key, 0);
    upm_buf_init(&s.pool, 0);

    size_t max =
        opts && opts->max_message_bytes ? opts->max_message_bytes : UPM_EVENT_DEFAULT_MAX_BYTES;
    if (len > max) {
        set_err(err, UPM_EVENT_OVERSIZE, NULL, 0, 0, "%zu bytes, limit %zu", len, max);
        goto out;
    }
    if (!buf || len == 0) {
        set_err(err, UPM_EVENT_INVALID_JSON, NULL, 0, 0, "empty message");
        goto out;
    }
    size_t bad = utf8_invalid_at((const unsigned char *)buf, len);
    if (bad < len) {
        set_err(err, UPM_EVENT_INVALID_UTF8, NULL, 0, bad, "ill-formed UTF-8 at byte %zu", bad);
        goto out;
    }

    s.base = s.p = buf;
    s.end = buf + len;
    s.err = err;
    if (scan_document(&s) != 0)
        goto out;

    /* The scanner accepted it, so cJSON should too; its verdict still counts. */
    const char *parse_end = NULL;
    root = cJSON_ParseWithLengthOpts(buf, len, &parse_end, 0);
    if (!root || !cJSON_IsObject(root)) {
        size_t at =
            parse_end && parse_end >= buf && parse_end <= buf + len ? (size_t)(parse_end - buf) : 0;
        set_err(err, UPM_EVENT_INVALID_JSON, NULL, 0, at, "cJSON rejected it at byte %zu", at);
        goto out;
    }
    while (parse_end < buf + len &&
           (*parse_end == ' ' || *parse_end == '\t' || *parse_end == '\n' || *parse_end == '\r'))
        parse_end++;
    if (parse_end != buf + len) {
        set_err(err, UPM_EVENT_INVALID_JSON, NULL, 0, (size_t)(parse_end - buf),
                "trailing characters at byte %zu", (size_t)(parse_end - buf));
        goto out;
    }

    if (extract(&s, root, opts, ev, err) != 0)
        goto out;
    rc = 0;
out:
    cJSON_Delete(root);
    scan_free(&s);
    if (rc != 0)
        upm_event_clear(ev);
    return rc;
}

void upm_event_clear(struct upm_event *ev)
{
    if (!ev)
        return;
    for (size_t i = 0; i < ev->n_media; i++)
        free(ev->media[i]);
    free(ev->media);
    free(ev->data);
    memset(ev, 0, sizeof(*ev));
}

/* --------------------------------------------------------- serialization */

/* A JSON string: quotes, backslashes and control bytes escaped; everything
 * else (valid UTF-8 by construction) copied as is. */
static int put_jstr(struct upm_buf *out, const char *str)
{
    static const char hex[] = "0123456789abcdef";
    const char *run = str;
    int rc = upm_buf_putc(out, '"');
    for (const char *p = str; *p; p++) {
        unsigned char c = (unsigned char)*p;
        char esc[7];
        size_t n = 2;
        if (c == '"' || c == '\\') {
            esc[1] = (char)c;
        } else if (c == '\n') {
            esc[1] = 'n';
        } else if (c == '\r') {
            esc[1] = 'r';
        } else if (c == '\t') {
            esc[1] = 't';
        } else if (c == '\b') {
            esc[1] = 'b';
        } else if (c == '\f') {
            esc[1] = 'f';
        } else if (c < 0x20) {
            memcpy(esc + 1, "u00", 3);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 0xf];
            n = 6;
        } else {
            continue;
        }
        esc[0] = '\\';
        rc |= upm_buf_append(out, run, (size_t)(p - run));
        rc |= upm_buf_append(out, esc, n);
        run = p + 1;
    }
    rc |= upm_buf_puts(out, run);
    rc |= upm_buf_putc(out, '"');
    return rc;
}

int upm_event_serialize(const struct upm_event *ev, struct upm_buf *out)
{
    size_t mark = out->len;
    int rc = 0;

    rc |= upm_buf_printf(
        out, "{\"v\":1,\"item_id\":%llu,\"attempt_id\":", (unsigned long long)ev->item_id);
    rc |= put_jstr(out, ev->attempt_id);
    rc |= upm_buf_puts(out, ",\"request_id\":");
    rc |= put_jstr(out, ev->request_id);
    rc |= upm_buf_printf(out, ",\"event\":\"%s\",\"ts_ns\":%lld,\"is_created\":%s,\"up_ts\":%lld",
                         upm_event_type_name(ev->type), (long long)ev->ts_ns,
                         ev->is_created ? "true" : "false", (long long)ev->up_ts);
    rc |= upm_buf_puts(out, ",\"origin\":");
    rc |= put_jstr(out, ev->origin);
    rc |= upm_buf_puts(out, ",\"origin_id\":");
    rc |= put_jstr(out, ev->origin_id);
    rc |= upm_buf_puts(out, ",\"country\":");
    rc |= put_jstr(out, ev->country);
    rc |= upm_buf_printf(out, ",\"company_id\":%llu,\"category_id\":%llu,\"media\":[",
                         (unsigned long long)ev->company_id, (unsigned long long)ev->category_id);
    for (size_t i = 0; i < ev->n_media; i++) {
        if (i)
            rc |= upm_buf_putc(out, ',');
        rc |= ev->media[i] ? put_jstr(out, ev->media[i]) : upm_buf_puts(out, "null");
    }
    rc |= upm_buf_puts(out, "],\"data\":");
    if (ev->data)
        rc |= upm_buf_append(out, ev->data, ev->data_len);
    else
        rc |= upm_buf_puts(out, "{}");
    rc |= upm_buf_putc(out, '}');
    if (rc != 0) {
        /* some appends may have succeeded before the limit hit */
        out->len = mark;
        if (out->data)
            out->data[mark] = '\0';
        return -1;
    }
    return 0;
}

static bool str_eq(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

bool upm_event_equal(const struct upm_event *a, const struct upm_event *b)
{
    if (a->item_id != b->item_id || a->company_id != b->company_id ||
        a->category_id != b->category_id || a->ts_ns != b->ts_ns || a->up_ts != b->up_ts ||
        a->type != b->type || a->is_created != b->is_created)
        return false;
    if (strcmp(a->attempt_id, b->attempt_id) != 0 || strcmp(a->request_id, b->request_id) != 0 ||
        strcmp(a->origin, b->origin) != 0 || strcmp(a->origin_id, b->origin_id) != 0 ||
        strcmp(a->country, b->country) != 0)
        return false;
    if (a->n_media != b->n_media || a->media_own != b->media_own ||
        a->media_external != b->media_external || a->media_bad != b->media_bad)
        return false;
    for (size_t i = 0; i < a->n_media; i++)
        if (!str_eq(a->media[i], b->media[i]))
            return false;
    if (a->data_len != b->data_len)
        return false;
    return a->data_len == 0 || memcmp(a->data, b->data, a->data_len) == 0;
}
