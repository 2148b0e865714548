#include "upmon/config.h"
#include "upmon/errstr.h"

#include "upmon/alloc.h"
#include "upmon/buf.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <yaml.h>

#define MAX_SCALAR  (64u * 1024u)
#define MAX_FILE    (4u * 1024u * 1024u)
#define MAX_NAME    64u /* section and key names; bounds env names and edit distance */
#define ENV_NAME_SZ (sizeof("UPMON_") + 2 * MAX_NAME + 2)
#define MSG_VALUE   60u /* bytes of an offending value quoted in a message */

#define CORE_TAG_PREFIX "tag:yaml.org,2002:"

union cfg_value {
    char *s;
    int64_t i;
    double d;
    bool b;
    struct upm_strlist l;
};

/* Per key, for one load: where the YAML set it (duplicates) and whether
 * anything but the default set it (required keys). */
struct key_state {
    size_t yaml_line; /* 1-based; 0 = not in the YAML */
    bool set;
};

struct loader {
    const struct upm_config_section *sections;
    size_t nsections;
    const char *name;  /* file name or caller's label, for messages */
    const char *input; /* raw YAML, to locate reader errors */
    size_t input_len;
    struct key_state **keys; /* [section][key] */
    size_t *section_line;    /* 1-based line a section was seen at; 0 = not seen */
    yaml_parser_t parser;
    bool parser_ready;
    yaml_event_t ev;
    char where[2 * MAX_NAME + 8]; /* "section" or "section.key" being parsed */
    char *errstr;
    size_t errstr_size;
};

/* ---- small helpers ---------------------------------------------------- */

/* A value as it may appear in a message: truncated, control bytes shown as
 * '?', so a 64 KiB scalar or an escape sequence cannot flood the log. */
static const char *msg_value(const char *s, char *buf, size_t size)
{
    size_t n = 0, i = 0;
    for (; s[i] && n + 4 < size && i < MSG_VALUE; i++) {
        unsigned char c = (unsigned char)s[i];
        buf[n++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    if (s[i]) {
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n] = '\0';
    return buf;
}

static bool valid_name(const char *s)
{
    size_t n = 0;
    if (!s || !*s)
        return false;
    for (; s[n]; n++) {
        char c = s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'))
            return false;
    }
    return n <= MAX_NAME;
}

/* Names are validated to fit, so this never truncates. */
static void env_name(const char *section, const char *key, char *out, size_t size)
{
    size_t n = 0;
    const char *parts[3] = {"UPMON_", section, key};
    for (int p = 0; p < 3; p++) {
        if (p == 2 && n + 1 < size)
            out[n++] = '_';
        for (const char *c = parts[p]; *c && n + 1 < size; c++) {
            char ch = *c;
            if (ch == '.' || ch == '-')
                ch = '_';
            else if (ch >= 'a' && ch <= 'z')
                ch = (char)(ch - 'a' + 'A');
            out[n++] = ch;
        }
    }
    out[n] = '\0';
}

static size_t min3(size_t a, size_t b, size_t c)
{
    size_t m = a < b ? a : b;
    return m < c ? m : c;
}

/* Optimal string alignment distance (Levenshtein plus adjacent swaps, the
 * commonest typo). Callers bound lb by ENV_NAME_SZ. */
static size_t edit_distance(const char *a, size_t la, const char *b, size_t lb)
{
    size_t rows[3][ENV_NAME_SZ + 1];
    size_t *pp = rows[0], *prev = rows[1], *cur = rows[2];
    for (size_t j = 0; j <= lb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            cur[j] = min3(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost);
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                pp[j - 2] + 1 < cur[j])
                cur[j] = pp[j - 2] + 1;
        }
        size_t *t = pp;
        pp = prev;
        prev = cur;
        cur = t;
    }
    return prev[lb];
}

/* Track the closest candidate within distance 2 (and closer than the word is
 * long, so "x" does not suggest "y"). */
struct suggestion {
    const char *best;
    size_t dist;
};

static void suggest_consider(struct suggestion *sg, const char *word, size_t wlen, const char *cand)
{
    size_t clen = strlen(cand);
    if (clen > ENV_NAME_SZ || (wlen > clen ? wlen - clen : clen - wlen) > 2)
        return;
    size_t d = edit_distance(word, wlen, cand, clen);
    if (d <= 2 && d < wlen && (!sg->best || d < sg->dist)) {
        sg->best = cand;
        sg->dist = d;
    }
}

/* ---- value parsing ---------------------------------------------------- */

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static int parse_int(const char *s, int64_t *out)
{
    /* strtoll skips leading blanks and accepts an empty string as 0; we want
     * neither, so check the first character ourselves. */
    if (!((s[0] >= '0' && s[0] <= '9') || s[0] == '-' || s[0] == '+'))
        return -1;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0')
        return -1;
    *out = (int64_t)v;
    return 0;
}

static int parse_double(const char *s, double *out)
{
    /* Plain decimal notation only: strtod would also take hex floats,
     * "nan", "inf" and leading blanks. */
    if (!*s)
        return -1;
    for (const char *p = s; *p; p++)
        if (!((*p >= '0' && *p <= '9') || *p == '.' || *p == 'e' || *p == 'E' || *p == '+' ||
              *p == '-'))
            return -1;
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

static int parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

int upm_config_parse_duration_ms(const char *s, int64_t *out)
{
    static const struct {
        const char *suffix;
        int64_t ms;
    } units[] = {{"", 1}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
    if (!s || !(s[0] >= '0' && s[0] <= '9'))
        return -1;
    int64_t v = 0;
    const char *p = s;
    for (; *p >= '0' && *p <= '9'; p++) {
        int d = *p - '0';
        if (v > (INT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(p, units[i].suffix) != 0)
            continue;
        if (v > INT64_MAX / units[i].ms)
            return -1;
        *out = v * units[i].ms;
        return 0;
    }
    return -1;
}

/* Largest unit that divides the value exactly, so the text parses back to
 * the same number. */
static void format_duration(int64_t ms, char *buf, size_t size)
{
    static const struct {
        const char *suffix;
        int64_t ms;
    } units[] = {{"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}};
    if (ms > 0) {
        for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
            if (ms % units[i].ms == 0) {
                snprintf(buf, size, "%" PRId64 "%s", ms / units[i].ms, units[i].suffix);
                return;
            }
        }
    }
    snprintf(buf, size, "%" PRId64 "ms", ms);
}

/* Shortest %g form that reads back as the same double. */
static void format_double(double v, char *buf, size_t size)
{
    for (int prec = 6; prec <= 17; prec++) {
        snprintf(buf, size, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

static bool has_range(const struct upm_config_key *key)
{
    return key->min <= key->max;
}

/* The table's double bounds as integers, clamped to int64 (a bound like
 * 1e300 means "no upper limit" for an integer). */
static int64_t bound_lo(double v)
{
    if (!(v > -9223372036854775808.0))
        return INT64_MIN;
    if (v >= 9223372036854775808.0)
        return INT64_MAX;
    return (int64_t)ceil(v);
}

static int64_t bound_hi(double v)
{
    if (!(v < 9223372036854775808.0))
        return INT64_MAX;
    if (v <= -9223372036854775808.0)
        return INT64_MIN;
    return (int64_t)floor(v);
}

static void format_range(const struct upm_config_key *key, char *buf, size_t size)
{
    char lo[48], hi[48];
    if (key->type == UPM_CFG_DOUBLE) {
        format_double(key->min, lo, sizeof(lo));
        format_double(key->max, hi, sizeof(hi));
    } else if (key->type == UPM_CFG_DURATION_MS) {
        format_duration(bound_lo(key->min), lo, sizeof(lo));
        format_duration(bound_hi(key->max), hi, sizeof(hi));
    } else {
        snprintf(lo, sizeof(lo), "%" PRId64, bound_lo(key->min));
        snprintf(hi, sizeof(hi), "%" PRId64, bound_hi(key->max));
    }
    if (isinf(key->max))
        snprintf(buf, size, ">= %s", lo);
    else if (isinf(key->min))
        snprintf(buf, size, "<= %s", hi);
    else
        snprintf(buf, size, "[%s, %s]", lo, hi);
}

static void format_choices(const struct upm_config_key *key, struct upm_buf *b)
{
    for (const char *const *c = key->choices; c && *c; c++)
        upm_buf_printf(b, "%s%s", c == key->choices ? "" : ", ", *c);
}

void upm_strlist_free(struct upm_strlist *l)
{
    for (size_t i = 0; i < l->count; i++)
        free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->count = 0;
}

void upm_strlist_push(struct upm_strlist *l, const char *s, size_t n)
{
    l->items = upm_realloc(l->items, (l->count + 1) * sizeof(*l->items));
    l->items[l->count++] = upm_strndup(s, n);
}

/* "a, b,c" -> {a, b, c}; blanks around items are dropped; "" is the empty
 * list; an empty item ("a,,b", "a,") is an error, as it is almost always a
 * templating mistake. */
static int parse_list(const char *s, struct upm_strlist *out, char *why, size_t why_size)
{
    struct upm_strlist l = {0};
    const char *p = s;
    while (is_space(*p))
        p++;
    if (*p == '\0') {
        *out = l;
        return 0;
    }
    for (;;) {
        const char *comma = strchr(p, ',');
        const char *end = comma ? comma : p + strlen(p);
        const char *a = p, *z = end;
        while (a < z && is_space(*a))
            a++;
        while (z > a && is_space(z[-1]))
            z--;
        if (a == z) {
            upm_strlist_free(&l);
            snprintf(why, why_size, "empty item in list");
            return -1;
        }
        upm_strlist_push(&l, a, (size_t)(z - a));
        if (!comma)
            break;
        p = comma + 1;
    }
    *out = l;
    return 0;
}

static const char *type_name(enum upm_config_type t)
{
    switch (t) {
    case UPM_CFG_STRING:
        return "string";
    case UPM_CFG_INT:
        return "int";
    case UPM_CFG_DOUBLE:
        return "double";
    case UPM_CFG_BOOL:
        return "bool";
    case UPM_CFG_DURATION_MS:
        return "duration";
    case UPM_CFG_ENUM:
        return "enum";
    case UPM_CFG_STRING_LIST:
        return "string list";
    }
    return "?";
}

static bool is_owned(enum upm_config_type t)
{
    return t == UPM_CFG_STRING || t == UPM_CFG_ENUM || t == UPM_CFG_STRING_LIST;
}

/* Parse text as the key's type into *out (owned parts allocated). 0, or -1
 * with the reason in why (the caller adds where and which key). */
static int parse_value(const struct upm_config_key *key, const char *s, union cfg_value *out,
                       char *why, size_t why_size)
{
    char v[MSG_VALUE + 8], range[128];
    switch (key->type) {
    case UPM_CFG_STRING:
        out->s = upm_strdup(s);
        return 0;
    case UPM_CFG_ENUM:
        for (const char *const *c = key->choices; c && *c; c++) {
            if (strcmp(s, *c) == 0) {
                out->s = upm_strdup(s);
                return 0;
            }
        }
        {
            struct upm_buf b;
            upm_buf_init(&b, 0);
            format_choices(key, &b);
            snprintf(why, why_size, "invalid value \"%s\": must be one of: %s",
                     msg_value(s, v, sizeof(v)), b.data ? b.data : "");
            upm_buf_free(&b);
        }
        return -1;
    case UPM_CFG_STRING_LIST:
        return parse_list(s, &out->l, why, why_size);
    case UPM_CFG_BOOL:
        if (parse_bool(s, &out->b) == 0)
            return 0;
        snprintf(why, why_size,
                 "invalid value \"%s\": expected a bool (true/false/yes/no/on/off/1/0)",
                 msg_value(s, v, sizeof(v)));
        return -1;
    case UPM_CFG_DOUBLE:
        if (parse_double(s, &out->d) != 0) {
            snprintf(why, why_size, "invalid value \"%s\": expected a finite decimal number",
                     msg_value(s, v, sizeof(v)));
            return -1;
        }
        if (has_range(key) && !(out->d >= key->min && out->d <= key->max)) {
            format_range(key, range, sizeof(range));
            snprintf(why, why_size, "value %s is out of range %s", msg_value(s, v, sizeof(v)),
                     range);
            return -1;
        }
        return 0;
    case UPM_CFG_INT:
    case UPM_CFG_DURATION_MS:
        if (key->type == UPM_CFG_INT ? parse_int(s, &out->i) != 0
                                     : upm_config_parse_duration_ms(s, &out->i) != 0) {
            snprintf(why, why_size,
                     key->type == UPM_CFG_INT
                         ? "invalid value \"%s\": expected a decimal 64-bit integer"
                         : "invalid value \"%s\": expected a duration such as 250ms, 10s, 5m, "
                           "1h, 7d (bare number = ms)",
                     msg_value(s, v, sizeof(v)));
            return -1;
        }
        if (has_range(key) && (out->i < bound_lo(key->min) || out->i > bound_hi(key->max))) {
            format_range(key, range, sizeof(range));
            snprintf(why, why_size, "value %s is out of range %s", msg_value(s, v, sizeof(v)),
                     range);
            return -1;
        }
        return 0;
    }
    snprintf(why, why_size, "unknown type %d", (int)key->type);
    return -1;
}

/* Replace the target field, freeing what it owned: loading twice into the
 * same targets must not leak. Takes ownership of val's allocations. */
static void commit(const struct upm_config_section *sec, const struct upm_config_key *key,
                   union cfg_value *val)
{
    char *field = (char *)sec->target + key->offset;
    switch (key->type) {
    case UPM_CFG_STRING:
    case UPM_CFG_ENUM: {
        char **p = (char **)(void *)field;
        free(*p);
        *p = val->s;
        break;
    }
    case UPM_CFG_STRING_LIST: {
        struct upm_strlist *l = (struct upm_strlist *)(void *)field;
        upm_strlist_free(l);
        *l = val->l;
        break;
    }
    case UPM_CFG_INT:
    case UPM_CFG_DURATION_MS:
        memcpy(field, &val->i, sizeof(val->i));
        break;
    case UPM_CFG_DOUBLE:
        memcpy(field, &val->d, sizeof(val->d));
        break;
    case UPM_CFG_BOOL:
        memcpy(field, &val->b, sizeof(val->b));
        break;
    }
    memset(val, 0, sizeof(*val));
}

static void clear_field(const struct upm_config_section *sec, const struct upm_config_key *key)
{
    union cfg_value zero;
    memset(&zero, 0, sizeof(zero));
    commit(sec, key, &zero);
}

/* ---- tables and defaults ---------------------------------------------- */

/* Only its address matters (see UPM_CFG_EXTERNAL). */
const struct upm_config_key upm_config_external_keys[1];

static bool is_external(const struct upm_config_section *sec)
{
    return sec->keys == upm_config_external_keys;
}

/* A bad table is a bug in the service, not in the user's file; say so, so
 * nobody goes looking for the problem in their YAML. */
static int check_tables(const struct upm_config_section *sections, size_t nsections, char *errstr,
                        size_t errstr_size)
{
    char ea[ENV_NAME_SZ], eb[ENV_NAME_SZ];
    for (size_t s = 0; s < nsections; s++) {
        const struct upm_config_section *sec = &sections[s];
        if (!valid_name(sec->name) || (!is_external(sec) && !sec->target) ||
            (sec->nkeys && !sec->keys) || (is_external(sec) && sec->nkeys)) {
            upm_errstr_set(errstr, errstr_size,
                           "section #%zu \"%s\": bad name, target or keys in the config table "
                           "(programming error)",
                           s, sec->name ? sec->name : "(null)");
            return -1;
        }
        for (size_t k = 0; k < sec->nkeys; k++) {
            const struct upm_config_key *key = &sec->keys[k];
            const char *what = NULL;
            if (!valid_name(key->name))
                what = "bad key name";
            else if ((unsigned)key->type > UPM_CFG_STRING_LIST)
                what = "bad type";
            else if (key->type == UPM_CFG_ENUM && (!key->choices || !key->choices[0]))
                what = "enum without choices";
            else if ((key->flags & UPM_CFG_REQUIRED) && key->def)
                what = "required key with a default";
            else if (!(key->flags & UPM_CFG_REQUIRED) && !key->def)
                what = "key without a default that is not required";
            else if (isnan(key->min) || isnan(key->max))
                what = "NaN in range";
            if (what) {
                upm_errstr_set(errstr, errstr_size,
                               "%s.%s: %s in the config table (programming error)", sec->name,
                               key->name ? key->name : "(null)", what);
                return -1;
            }
        }
    }
    /* Two keys with one environment variable (section "a_b" key "c" and
     * section "a" key "b_c", or a duplicated key) could not both be set. */
    for (size_t s = 0; s < nsections; s++) {
        for (size_t k = 0; k < sections[s].nkeys; k++) {
            env_name(sections[s].name, sections[s].keys[k].name, ea, sizeof(ea));
            for (size_t t = s; t < nsections; t++) {
                for (size_t j = (t == s ? k + 1 : 0); j < sections[t].nkeys; j++) {
                    env_name(sections[t].name, sections[t].keys[j].name, eb, sizeof(eb));
                    if (strcmp(ea, eb) == 0) {
                        upm_errstr_set(errstr, errstr_size,
                                       "%s.%s and %s.%s share the variable %s in the config table "
                                       "(programming error)",
                                       sections[s].name, sections[s].keys[k].name, sections[t].name,
                                       sections[t].keys[j].name, ea);
                        return -1;
                    }
                }
            }
        }
        for (size_t t = s + 1; t < nsections; t++) {
            if (strcmp(sections[s].name, sections[t].name) == 0) {
                upm_errstr_set(errstr, errstr_size,
                               "section %s appears twice in the config table (programming error)",
                               sections[s].name);
                return -1;
            }
        }
    }
    return 0;
}

static int apply_defaults(struct loader *ld)
{
    char why[256];
    for (size_t s = 0; s < ld->nsections; s++) {
        const struct upm_config_section *sec = &ld->sections[s];
        for (size_t k = 0; k < sec->nkeys; k++) {
            const struct upm_config_key *key = &sec->keys[k];
            union cfg_value val;
            memset(&val, 0, sizeof(val));
            if (!key->def) {
                /* Required: drop a value from an earlier load so that a
                 * reload cannot silently keep it. */
                clear_field(sec, key);
                continue;
            }
            if (parse_value(key, key->def, &val, why, sizeof(why)) != 0) {
                upm_errstr_set(ld->errstr, ld->errstr_size,
                               "%s.%s: invalid default \"%s\" in the config table (programming "
                               "error): %s",
                               sec->name, key->name, key->def, why);
                return -1;
            }
            commit(sec, key, &val);
        }
    }
    return 0;
}

/* ---- YAML ------------------------------------------------------------- */

static size_t find_section(const struct loader *ld, const char *name)
{
    for (size_t s = 0; s < ld->nsections; s++)
        if (strcmp(ld->sections[s].name, name) == 0)
            return s;
    return SIZE_MAX;
}

static size_t find_key(const struct upm_config_section *sec, const char *name)
{
    for (size_t k = 0; k < sec->nkeys; k++)
        if (strcmp(sec->keys[k].name, name) == 0)
            return k;
    return SIZE_MAX;
}

/* "name:line:col: where: message" with libyaml's 0-based mark made 1-based. */
static void yaml_err(struct loader *ld, yaml_mark_t mark, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void yaml_err(struct loader *ld, yaml_mark_t mark, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    upm_errstr_set(ld->errstr, ld->errstr_size, "%s:%zu:%zu: %s%s%s", ld->name, mark.line + 1,
                   mark.column + 1, ld->where, ld->where[0] ? ": " : "", msg);
}

static void syntax_error(struct loader *ld)
{
    yaml_parser_t *p = &ld->parser;
    if (p->error == YAML_MEMORY_ERROR)
        upm_fatal("config: libyaml out of memory");
    if (p->error == YAML_READER_ERROR) {
        /* The reader reports a byte offset, not a mark: count lines up to it
         * (columns in characters, as libyaml counts them). */
        yaml_mark_t mark = {0, 0, 0};
        size_t end = p->problem_offset < ld->input_len ? p->problem_offset : ld->input_len;
        for (size_t i = 0; i < end; i++) {
            unsigned char c = (unsigned char)ld->input[i];
            if (c == '\n') {
                mark.line++;
                mark.column = 0;
            } else if ((c & 0xc0) != 0x80) {
                mark.column++;
            }
        }
        upm_errstr_set(ld->errstr, ld->errstr_size, "%s:%zu:%zu: invalid input: %s", ld->name,
                       mark.line + 1, mark.column + 1, p->problem ? p->problem : "reader error");
        return;
    }
    char ctx[160] = "";
    if (p->context)
        snprintf(ctx, sizeof(ctx), " (%s at line %zu, column %zu)", p->context,
                 p->context_mark.line + 1, p->context_mark.column + 1);
    upm_errstr_set(ld->errstr, ld->errstr_size, "%s:%zu:%zu: YAML syntax error: %s%s", ld->name,
                   p->problem_mark.line + 1, p->problem_mark.column + 1,
                   p->problem ? p->problem : "unknown problem", ctx);
}

static bool core_tag(const yaml_char_t *tag)
{
    static const char *const core[] = {"str", "int", "float", "bool", "null", "seq", "map"};
    const char *t = (const char *)tag;
    if (!t || strcmp(t, "!") == 0)
        return true;
    if (strncmp(t, CORE_TAG_PREFIX, strlen(CORE_TAG_PREFIX)) != 0)
        return false;
    t += strlen(CORE_TAG_PREFIX);
    for (size_t i = 0; i < sizeof(core) / sizeof(core[0]); i++)
        if (strcmp(t, core[i]) == 0)
            return true;
    return false;
}

/* Next event into ld->ev, rejecting the YAML features a configuration file
 * has no use for: aliases make "where was this set" ambiguous, and custom
 * tags suggest the author expects semantics we do not implement. */
static int next_event(struct loader *ld)
{
    yaml_event_delete(&ld->ev);
    if (!yaml_parser_parse(&ld->parser, &ld->ev)) {
        syntax_error(ld);
        return -1;
    }
    const yaml_char_t *anchor = NULL, *tag = NULL;
    switch (ld->ev.type) {
    case YAML_ALIAS_EVENT:
        yaml_err(ld, ld->ev.start_mark, "aliases are not supported");
        return -1;
    case YAML_SCALAR_EVENT:
        anchor = ld->ev.data.scalar.anchor;
        tag = ld->ev.data.scalar.tag;
        break;
    case YAML_SEQUENCE_START_EVENT:
        anchor = ld->ev.data.sequence_start.anchor;
        tag = ld->ev.data.sequence_start.tag;
        break;
    case YAML_MAPPING_START_EVENT:
        anchor = ld->ev.data.mapping_start.anchor;
        tag = ld->ev.data.mapping_start.tag;
        break;
    default:
        return 0;
    }
    if (anchor) {
        yaml_err(ld, ld->ev.start_mark, "anchors are not supported");
        return -1;
    }
    if (!core_tag(tag)) {
        char v[MSG_VALUE + 8];
        yaml_err(ld, ld->ev.start_mark, "tag %s is not supported",
                 msg_value((const char *)tag, v, sizeof(v)));
        return -1;
    }
    if (ld->ev.type == YAML_SCALAR_EVENT) {
        if (ld->ev.data.scalar.length > MAX_SCALAR) {
            yaml_err(ld, ld->ev.start_mark, "scalar is longer than %u bytes", MAX_SCALAR);
            return -1;
        }
        /* A double-quoted "\0" would silently cut the C string short. */
        if (memchr(ld->ev.data.scalar.value, '\0', ld->ev.data.scalar.length)) {
            yaml_err(ld, ld->ev.start_mark, "scalar contains a NUL character");
            return -1;
        }
    }
    return 0;
}

static bool is_null_scalar(const yaml_event_t *ev)
{
    if (ev->type != YAML_SCALAR_EVENT || ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *v = (const char *)ev->data.scalar.value;
    return !*v || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 || strcmp(v, "Null") == 0 ||
           strcmp(v, "NULL") == 0;
}

static const char *event_kind(yaml_event_type_t t)
{
    switch (t) {
    case YAML_MAPPING_START_EVENT:
        return "a mapping";
    case YAML_SEQUENCE_START_EVENT:
        return "a sequence";
    case YAML_SCALAR_EVENT:
        return "a scalar";
    default:
        return "something else";
    }
}

/* The value of one key: the current event is its first event. */
static int parse_key_value(struct loader *ld, size_t s, size_t k)
{
    const struct upm_config_section *sec = &ld->sections[s];
    const struct upm_config_key *key = &sec->keys[k];
    union cfg_value val;
    char why[512];
    memset(&val, 0, sizeof(val));

    if (ld->ev.type == YAML_SCALAR_EVENT) {
        yaml_mark_t mark = ld->ev.start_mark;
        if (parse_value(key, (const char *)ld->ev.data.scalar.value, &val, why, sizeof(why))) {
            yaml_err(ld, mark, "%s", why);
            return -1;
        }
        commit(sec, key, &val);
        return 0;
    }
    if (ld->ev.type != YAML_SEQUENCE_START_EVENT || key->type != UPM_CFG_STRING_LIST) {
        yaml_err(ld, ld->ev.start_mark, "expected a scalar (%s), got %s", type_name(key->type),
                 event_kind(ld->ev.type));
        return -1;
    }
    for (;;) {
        if (next_event(ld) != 0)
            goto fail;
        if (ld->ev.type == YAML_SEQUENCE_END_EVENT)
            break;
        if (ld->ev.type != YAML_SCALAR_EVENT) {
            yaml_err(ld, ld->ev.start_mark, "list items must be scalars, got %s",
                     event_kind(ld->ev.type));
            goto fail;
        }
        if (ld->ev.data.scalar.length == 0) {
            yaml_err(ld, ld->ev.start_mark, "empty item in list");
            goto fail;
        }
        upm_strlist_push(&val.l, (const char *)ld->ev.data.scalar.value, ld->ev.data.scalar.length);
    }
    commit(sec, key, &val);
    return 0;
fail:
    upm_strlist_free(&val.l);
    return -1;
}

static int parse_section(struct loader *ld, size_t s)
{
    const struct upm_config_section *sec = &ld->sections[s];
    char v[MSG_VALUE + 8];
    for (;;) {
        snprintf(ld->where, sizeof(ld->where), "%s", sec->name);
        if (next_event(ld) != 0)
            return -1;
        if (ld->ev.type == YAML_MAPPING_END_EVENT)
            return 0;
        if (ld->ev.type != YAML_SCALAR_EVENT) {
            yaml_err(ld, ld->ev.start_mark, "keys must be scalars, got %s",
                     event_kind(ld->ev.type));
            return -1;
        }
        const char *name = (const char *)ld->ev.data.scalar.value;
        size_t k = find_key(sec, name);
        if (k == SIZE_MAX) {
            struct suggestion sg = {NULL, 0};
            for (size_t j = 0; j < sec->nkeys; j++)
                suggest_consider(&sg, name, ld->ev.data.scalar.length, sec->keys[j].name);
            if (sg.best)
                yaml_err(ld, ld->ev.start_mark, "unknown key \"%s\" (did you mean \"%s\"?)",
                         msg_value(name, v, sizeof(v)), sg.best);
            else
                yaml_err(ld, ld->ev.start_mark, "unknown key \"%s\"",
                         msg_value(name, v, sizeof(v)));
            return -1;
        }
        snprintf(ld->where, sizeof(ld->where), "%s.%s", sec->name, sec->keys[k].name);
        struct key_state *ks = &ld->keys[s][k];
        if (ks->yaml_line) {
            yaml_err(ld, ld->ev.start_mark, "duplicate key (first set at line %zu)", ks->yaml_line);
            return -1;
        }
        ks->yaml_line = ld->ev.start_mark.line + 1;
        if (next_event(ld) != 0 || parse_key_value(ld, s, k) != 0)
            return -1;
        ks->set = true;
    }
}

/* Consume the node whose first event is in ld->ev, going through
 * next_event so that an external section obeys the same YAML restrictions
 * as the rest of the file. */
static int skip_node(struct loader *ld)
{
    size_t depth = 0;
    for (;;) {
        if (ld->ev.type == YAML_MAPPING_START_EVENT || ld->ev.type == YAML_SEQUENCE_START_EVENT)
            depth++;
        else if (ld->ev.type == YAML_MAPPING_END_EVENT || ld->ev.type == YAML_SEQUENCE_END_EVENT)
            depth--;
        if (depth == 0)
            return 0;
        if (next_event(ld) != 0)
            return -1;
    }
}

static int parse_document(struct loader *ld)
{
    char v[MSG_VALUE + 8];
    if (next_event(ld) != 0)
        return -1;
    if (is_null_scalar(&ld->ev))
        return 0; /* "---" alone, or "~": no settings */
    if (ld->ev.type != YAML_MAPPING_START_EVENT) {
        yaml_err(ld, ld->ev.start_mark, "the top level must be a mapping of sections, got %s",
                 event_kind(ld->ev.type));
        return -1;
    }
    for (;;) {
        ld->where[0] = '\0';
        if (next_event(ld) != 0)
            return -1;
        if (ld->ev.type == YAML_MAPPING_END_EVENT)
            return 0;
        if (ld->ev.type != YAML_SCALAR_EVENT) {
            yaml_err(ld, ld->ev.start_mark, "section names must be scalars, got %s",
                     event_kind(ld->ev.type));
            return -1;
        }
        const char *name = (const char *)ld->ev.data.scalar.value;
        size_t s = find_section(ld, name);
        if (s == SIZE_MAX) {
            struct suggestion sg = {NULL, 0};
            for (size_t j = 0; j < ld->nsections; j++)
                suggest_consider(&sg, name, ld->ev.data.scalar.length, ld->sections[j].name);
            if (sg.best)
                yaml_err(ld, ld->ev.start_mark, "unknown section \"%s\" (did you mean \"%s\"?)",
                         msg_value(name, v, sizeof(v)), sg.best);
            else
                yaml_err(ld, ld->ev.start_mark, "unknown section \"%s\"",
                         msg_value(name, v, sizeof(v)));
            return -1;
        }
        snprintf(ld->where, sizeof(ld->where), "%s", ld->sections[s].name);
        if (ld->section_line[s]) {
            yaml_err(ld, ld->ev.start_mark, "duplicate section (first at line %zu)",
                     ld->section_line[s]);
            return -1;
        }
        ld->section_line[s] = ld->ev.start_mark.line + 1;
        if (next_event(ld) != 0)
            return -1;
        if (is_external(&ld->sections[s])) {
            if (skip_node(ld) != 0)
                return -1;
            continue;
        }
        if (is_null_scalar(&ld->ev))
            continue; /* "log:" with every key commented out */
        if (ld->ev.type != YAML_MAPPING_START_EVENT) {
            yaml_err(ld, ld->ev.start_mark, "expected a mapping of keys, got %s",
                     event_kind(ld->ev.type));
            return -1;
        }
        if (parse_section(ld, s) != 0)
            return -1;
    }
}

static int parse_yaml(struct loader *ld)
{
    if (!yaml_parser_initialize(&ld->parser))
        upm_fatal("config: libyaml out of memory");
    ld->parser_ready = true;
    yaml_parser_set_input_string(&ld->parser, (const unsigned char *)ld->input, ld->input_len);

    if (next_event(ld) != 0) /* STREAM-START */
        return -1;
    if (next_event(ld) != 0)
        return -1;
    if (ld->ev.type == YAML_STREAM_END_EVENT)
        return 0; /* empty file or only comments */
    /* The only other event after STREAM-START is DOCUMENT-START. */
    if (parse_document(ld) != 0)
        return -1;
    ld->where[0] = '\0';
    if (next_event(ld) != 0) /* DOCUMENT-END */
        return -1;
    if (next_event(ld) != 0)
        return -1;
    if (ld->ev.type != YAML_STREAM_END_EVENT) {
        yaml_err(ld, ld->ev.start_mark, "only one YAML document is allowed");
        return -1;
    }
    return 0;
}

/* ---- environment ------------------------------------------------------ */

static int apply_env(struct loader *ld)
{
    char env[ENV_NAME_SZ], why[512];
    for (size_t s = 0; s < ld->nsections; s++) {
        const struct upm_config_section *sec = &ld->sections[s];
        for (size_t k = 0; k < sec->nkeys; k++) {
            const struct upm_config_key *key = &sec->keys[k];
            env_name(sec->name, key->name, env, sizeof(env));
            const char *text = getenv(env);
            if (!text)
                continue;
            union cfg_value val;
            memset(&val, 0, sizeof(val));
            if (strlen(text) > MAX_SCALAR) {
                upm_errstr_set(ld->errstr, ld->errstr_size,
                               "%s: %s.%s: value is longer than %u bytes", env, sec->name,
                               key->name, MAX_SCALAR);
                return -1;
            }
            if (parse_value(key, text, &val, why, sizeof(why)) != 0) {
                upm_errstr_set(ld->errstr, ld->errstr_size, "%s: %s.%s: %s", env, sec->name,
                               key->name, why);
                return -1;
            }
            commit(sec, key, &val);
            ld->keys[s][k].set = true;
        }
    }
    return 0;
}

static bool env_matches_key(const struct loader *ld, const char *var, size_t len)
{
    char env[ENV_NAME_SZ];
    for (size_t s = 0; s < ld->nsections; s++) {
        for (size_t k = 0; k < ld->sections[s].nkeys; k++) {
            env_name(ld->sections[s].name, ld->sections[s].keys[k].name, env, sizeof(env));
            if (strlen(env) == len && memcmp(env, var, len) == 0)
                return true;
        }
    }
    return false;
}

/* A variable in a section's namespace that names no key is a typo: fail, as
 * for an unknown YAML key. Variables outside every section's namespace
 * belong to someone else (scripts, other tools) and are left alone. */
static int check_env_typos(struct loader *ld)
{
    char prefix[ENV_NAME_SZ], env[ENV_NAME_SZ], shown[MSG_VALUE + 8];
    for (char **e = environ; e && *e; e++) {
        const char *var = *e;
        if (strncmp(var, "UPMON_", 6) != 0)
            continue;
        const char *eq = strchr(var, '=');
        size_t len = eq ? (size_t)(eq - var) : strlen(var);
        if (env_matches_key(ld, var, len))
            continue;
        for (size_t s = 0; s < ld->nsections; s++) {
            const struct upm_config_section *sec = &ld->sections[s];
            env_name(sec->name, "", prefix, sizeof(prefix)); /* "UPMON_SECTION_" */
            size_t plen = strlen(prefix);
            if (len < plen || memcmp(var, prefix, plen) != 0)
                continue;
            char *name = upm_strndup(var, len);
            struct suggestion sg = {NULL, 0};
            char best[ENV_NAME_SZ] = "";
            for (size_t k = 0; k < sec->nkeys; k++) {
                env_name(sec->name, sec->keys[k].name, env, sizeof(env));
                suggest_consider(&sg, name, len, env);
                if (sg.best == env) {
                    /* env is reused for the next candidate: keep a copy. */
                    memcpy(best, env, sizeof(best));
                    sg.best = best;
                }
            }
            upm_errstr_set(
                ld->errstr, ld->errstr_size, "%s: no key of section %s has this variable%s%s%s",
                msg_value(name, shown, sizeof(shown)), sec->name, sg.best ? " (did you mean " : "",
                sg.best ? sg.best : "", sg.best ? "?)" : "");
            free(name);
            return -1;
        }
    }
    return 0;
}

static int check_required(struct loader *ld)
{
    char env[ENV_NAME_SZ];
    for (size_t s = 0; s < ld->nsections; s++) {
        const struct upm_config_section *sec = &ld->sections[s];
        for (size_t k = 0; k < sec->nkeys; k++) {
            const struct upm_config_key *key = &sec->keys[k];
            if (!(key->flags & UPM_CFG_REQUIRED))
                continue;
            env_name(sec->name, key->name, env, sizeof(env));
            if (!ld->keys[s][k].set) {
                upm_errstr_set(ld->errstr, ld->errstr_size,
                               "%s.%s: required but not set (set it in the YAML file or %s)",
                               sec->name, key->name, env);
                return -1;
            }
            /* An empty required value is the usual result of an unset
             * template variable: as good as missing. */
            const char *field = (const char *)sec->target + key->offset;
            bool empty = false;
            if (key->type == UPM_CFG_STRING) {
                const char *const *p = (const char *const *)(const void *)field;
                empty = !*p || !**p;
            } else if (key->type == UPM_CFG_STRING_LIST) {
                empty = ((const struct upm_strlist *)(const void *)field)->count == 0;
            }
            if (empty) {
                upm_errstr_set(ld->errstr, ld->errstr_size,
                               "%s.%s: required but empty (set it in the YAML file or %s)",
                               sec->name, key->name, env);
                return -1;
            }
        }
    }
    return 0;
}

/* ---- public ----------------------------------------------------------- */

int upm_config_load_string(const struct upm_config_section *sections, size_t nsections,
                           const char *yaml, size_t len, const char *name, char *errstr,
                           size_t errstr_size)
{
    struct loader ld;
    int rc = -1;
    memset(&ld, 0, sizeof(ld));
    ld.sections = sections;
    ld.nsections = nsections;
    ld.name = name ? name : "<string>";
    ld.input = yaml ? yaml : "";
    ld.input_len = yaml ? len : 0;
    ld.errstr = errstr;
    ld.errstr_size = errstr_size;
    if (errstr && errstr_size)
        errstr[0] = '\0';

    if (check_tables(sections, nsections, errstr, errstr_size) != 0)
        return -1;
    if (ld.input_len > MAX_FILE) {
        upm_errstr_set(errstr, errstr_size, "%s: larger than %u bytes", ld.name, MAX_FILE);
        return -1;
    }
    ld.keys = upm_calloc(nsections, sizeof(*ld.keys));
    for (size_t s = 0; s < nsections; s++)
        ld.keys[s] = upm_calloc(sections[s].nkeys, sizeof(**ld.keys));
    ld.section_line = upm_calloc(nsections, sizeof(*ld.section_line));

    if (apply_defaults(&ld) != 0)
        goto out;
    if (parse_yaml(&ld) != 0)
        goto out;
    if (check_env_typos(&ld) != 0 || apply_env(&ld) != 0)
        goto out;
    if (check_required(&ld) != 0)
        goto out;
    rc = 0;
out:
    yaml_event_delete(&ld.ev);
    if (ld.parser_ready)
        yaml_parser_delete(&ld.parser);
    for (size_t s = 0; s < nsections; s++)
        free(ld.keys[s]);
    free(ld.keys);
    free(ld.section_line);
    return rc;
}

int upm_config_load(const struct upm_config_section *sections, size_t nsections, const char *path,
                    char *errstr, size_t errstr_size)
{
    struct upm_buf b;
    FILE *f = NULL;
    int rc = -1;
    upm_buf_init(&b, MAX_FILE);
    if (!path)
        return upm_config_load_string(sections, nsections, "", 0, "<defaults>", errstr,
                                      errstr_size);
    f = fopen(path, "rb");
    if (!f) {
        upm_errstr_set(errstr, errstr_size, "%s: cannot open: %s", path, strerror(errno));
        goto out;
    }
    for (;;) {
        char chunk[16384];
        size_t n = fread(chunk, 1, sizeof(chunk), f);
        if (n > 0 && upm_buf_append(&b, chunk, n) != 0) {
            upm_errstr_set(errstr, errstr_size, "%s: larger than %u bytes", path, MAX_FILE);
            goto out;
        }
        if (n < sizeof(chunk))
            break;
    }
    if (ferror(f)) {
        upm_errstr_set(errstr, errstr_size, "%s: cannot read: %s", path, strerror(errno));
        goto out;
    }
    rc = upm_config_load_string(sections, nsections, b.data ? b.data : "", b.len, path, errstr,
                                errstr_size);
out:
    if (f)
        fclose(f);
    upm_buf_free(&b);
    return rc;
}

void upm_config_free(const struct upm_config_section *sections, size_t nsections)
{
    if (!sections)
        return;
    for (size_t s = 0; s < nsections; s++) {
        const struct upm_config_section *sec = &sections[s];
        if (!sec->target || !sec->keys)
            continue;
        for (size_t k = 0; k < sec->nkeys; k++)
            if (is_owned(sec->keys[k].type))
                clear_field(sec, &sec->keys[k]);
    }
}

/* Double-quoted YAML scalar, so every printed value loads back as text. */
static void print_quoted(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(out, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(out, "\\x%02x", *p);
        else
            fputc(*p, out);
    }
    fputc('"', out);
}

void upm_config_print(const struct upm_config_section *sections, size_t nsections, FILE *out)
{
    char num[64];
    for (size_t s = 0; s < nsections; s++) {
        const struct upm_config_section *sec = &sections[s];
        if (is_external(sec))
            continue;
        fprintf(out, "%s:\n", sec->name);
        for (size_t k = 0; k < sec->nkeys; k++) {
            const struct upm_config_key *key = &sec->keys[k];
            const char *field = (const char *)sec->target + key->offset;
            fprintf(out, "  %s: ", key->name);
            if (key->flags & UPM_CFG_SECRET) {
                /* Even for an empty secret: "is it set" is for the reader
                 * of the YAML file, not of the logs. */
                fputs("\"<redacted>\"\n", out);
                continue;
            }
            switch (key->type) {
            case UPM_CFG_STRING:
            case UPM_CFG_ENUM: {
                const char *v;
                memcpy(&v, field, sizeof(v));
                print_quoted(out, v);
                break;
            }
            case UPM_CFG_STRING_LIST: {
                const struct upm_strlist *l = (const struct upm_strlist *)(const void *)field;
                fputc('[', out);
                for (size_t i = 0; i < l->count; i++) {
                    if (i)
                        fputs(", ", out);
                    print_quoted(out, l->items[i]);
                }
                fputc(']', out);
                break;
            }
            case UPM_CFG_INT: {
                int64_t v;
                memcpy(&v, field, sizeof(v));
                fprintf(out, "%" PRId64, v);
                break;
            }
            case UPM_CFG_DURATION_MS: {
                int64_t v;
                memcpy(&v, field, sizeof(v));
                format_duration(v, num, sizeof(num));
                fputs(num, out);
                break;
            }
            case UPM_CFG_DOUBLE: {
                double v;
                memcpy(&v, field, sizeof(v));
                format_double(v, num, sizeof(num));
                fputs(num, out);
                break;
            }
            case UPM_CFG_BOOL: {
                bool v;
                memcpy(&v, field, sizeof(v));
                fputs(v ? "true" : "false", out);
                break;
            }
            }
            fputc('\n', out);
        }
    }
}

/* Table cell text: '|' would end the cell and a newline the row. */
static void md_cell(FILE *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '|')
            fputs("\\|", out);
        else if (*s == '\n' || *s == '\r')
            fputc(' ', out);
        else
            fputc(*s, out);
    }
}

void upm_config_dump_markdown(const struct upm_config_section *sections, size_t nsections,
                              FILE *out)
{
    char env[ENV_NAME_SZ], range[128];
    fputs("| Key | Environment variable | Type | Default | Range / choices | Description |\n", out);
    fputs("|---|---|---|---|---|---|\n", out);
    for (size_t s = 0; s < nsections; s++) {
        const struct upm_config_section *sec = &sections[s];
        for (size_t k = 0; k < sec->nkeys; k++) {
            const struct upm_config_key *key = &sec->keys[k];
            env_name(sec->name, key->name, env, sizeof(env));
            fprintf(out, "| `%s.%s` | `%s` | %s | ", sec->name, key->name, env,
                    type_name(key->type));
            if (key->flags & UPM_CFG_REQUIRED) {
                fputs("*required*", out);
            } else if (!key->def || !key->def[0]) {
                fputs("(empty)", out);
            } else {
                fputc('`', out);
                md_cell(out, key->def);
                fputc('`', out);
            }
            fputs(" | ", out);
            if (key->type == UPM_CFG_ENUM) {
                for (const char *const *c = key->choices; c && *c; c++) {
                    fputs(c == key->choices ? "`" : ", `", out);
                    md_cell(out, *c);
                    fputc('`', out);
                }
            } else if ((key->type == UPM_CFG_INT || key->type == UPM_CFG_DOUBLE ||
                        key->type == UPM_CFG_DURATION_MS) &&
                       has_range(key)) {
                format_range(key, range, sizeof(range));
                md_cell(out, range);
            }
            fputs(" | ", out);
            md_cell(out, key->description ? key->description : "");
            if (key->flags & UPM_CFG_SECRET)
                fputs(" (secret)", out);
            fputs(" |\n", out);
        }
    }
}
