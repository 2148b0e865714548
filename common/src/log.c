#include "upmon/log.h"

#include "upmon/config.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int upm_log_threshold = UPM_LOG_INFO;

static enum upm_log_format log_format = UPM_LOG_FMT_TEXT;
static FILE *log_sink;
static atomic_ulong log_counts[UPM_LOG_OFF];

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

void upm_log_set_level(enum upm_log_level level)
{
    upm_log_threshold = (int)level;
}

void upm_log_set_format(enum upm_log_format format)
{
    log_format = format;
}

void upm_log_set_sink(FILE *sink)
{
    log_sink = sink;
}

int upm_log_level_parse(const char *s, enum upm_log_level *out)
{
    for (int i = 0; i <= UPM_LOG_OFF; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum upm_log_level)i;
            return 0;
        }
    }
    if (strcmp(s, "warning") == 0) {
        *out = UPM_LOG_WARN;
        return 0;
    }
    return -1;
}

const char *upm_log_level_name(enum upm_log_level level)
{
    if ((int)level < 0 || level > UPM_LOG_OFF)
        return "?";
    return level_names[level];
}

unsigned long upm_log_count(enum upm_log_level level)
{
    if ((int)level < 0 || level >= UPM_LOG_OFF)
        return 0;
    return atomic_load(&log_counts[level]);
}

/* A fixed-size line writer: truncates rather than allocating, so logging
 * works even when memory is short. */
struct line {
    char buf[4096];
    size_t len;
};

static void line_put(struct line *l, const char *s, size_t n)
{
    size_t room = sizeof(l->buf) - 1 - l->len; /* keep one byte for '\n' */
    if (n > room)
        n = room;
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void line_puts(struct line *l, const char *s)
{
    line_put(l, s, strlen(s));
}

/* Escape for a double-quoted value: the same rules for logfmt and JSON. */
static void line_put_escaped(struct line *l, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        switch (c) {
        case '"':
            line_puts(l, "\\\"");
            break;
        case '\\':
            line_puts(l, "\\\\");
            break;
        case '\n':
            line_puts(l, "\\n");
            break;
        case '\r':
            line_puts(l, "\\r");
            break;
        case '\t':
            line_puts(l, "\\t");
            break;
        default:
            if (c < 0x20 || c == 0x7f) {
                snprintf(esc, sizeof(esc), "\\u%04x", c);
                line_puts(l, esc);
            } else {
                line_put(l, (const char *)&c, 1);
            }
        }
    }
}

static void format_ts(char *out, size_t size)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(out, size, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000);
}

/* In JSON mode the "k=v k2=v2" fields become "k":"v" members. */
static void line_put_json_fields(struct line *l, const char *f)
{
    while (*f) {
        while (*f == ' ')
            f++;
        if (!*f)
            break;
        const char *eq = strchr(f, '=');
        const char *sp = strchr(f, ' ');
        if (!eq || (sp && sp < eq)) { /* a bare word: skip it */
            f = sp ? sp : f + strlen(f);
            continue;
        }
        line_puts(l, ",\"");
        line_put_escaped(l, f, (size_t)(eq - f));
        line_puts(l, "\":\"");
        const char *v = eq + 1;
        const char *end;
        if (*v == '"') {
            v++;
            end = strchr(v, '"');
            if (!end)
                end = v + strlen(v);
            line_put_escaped(l, v, (size_t)(end - v));
            f = *end ? end + 1 : end;
        } else {
            end = strchr(v, ' ');
            if (!end)
                end = v + strlen(v);
            line_put_escaped(l, v, (size_t)(end - v));
            f = end;
        }
        line_puts(l, "\"");
    }
}

void upm_log_vwrite(enum upm_log_level level, const char *mod, const char *fmt, va_list ap)
{
    if ((int)level < 0 || level >= UPM_LOG_OFF)
        return;
    atomic_fetch_add(&log_counts[level], 1);

    char text[3072];
    int n = vsnprintf(text, sizeof(text), fmt, ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof(text))
        n = sizeof(text) - 1;
    const char *fields = strstr(text, " | ");
    size_t msg_len = fields ? (size_t)(fields - text) : (size_t)n;
    if (fields)
        fields += 3;

    char ts[96];
    format_ts(ts, sizeof(ts));
    struct line l = {.len = 0};
    if (log_format == UPM_LOG_FMT_JSON) {
        line_puts(&l, "{\"ts\":\"");
        line_puts(&l, ts);
        line_puts(&l, "\",\"level\":\"");
        line_puts(&l, level_names[level]);
        line_puts(&l, "\",\"mod\":\"");
        line_put_escaped(&l, mod, strlen(mod));
        line_puts(&l, "\",\"msg\":\"");
        line_put_escaped(&l, text, msg_len);
        line_puts(&l, "\"");
        if (fields)
            line_put_json_fields(&l, fields);
        line_puts(&l, "}");
    } else {
        line_puts(&l, "ts=");
        line_puts(&l, ts);
        line_puts(&l, " level=");
        line_puts(&l, level_names[level]);
        line_puts(&l, " mod=");
        line_puts(&l, mod);
        line_puts(&l, " msg=\"");
        line_put_escaped(&l, text, msg_len);
        line_puts(&l, "\"");
        if (fields) {
            line_puts(&l, " ");
            /* Fields are the caller's; still keep the record on one line. */
            for (const char *p = fields; *p; p++)
                line_put(&l, (*p == '\n' || *p == '\r') ? " " : p, 1);
        }
    }
    l.buf[l.len++] = '\n';

    FILE *out = log_sink ? log_sink : stderr;
    if (out == stderr) {
        /* One write(2) per line keeps lines from different threads whole. */
        ssize_t off = 0;
        while ((size_t)off < l.len) {
            ssize_t w = write(STDERR_FILENO, l.buf + off, l.len - (size_t)off);
            if (w <= 0)
                break;
            off += w;
        }
    } else {
        flockfile(out);
        fwrite(l.buf, 1, l.len, out);
        fflush(out);
        funlockfile(out);
    }
}

void upm_log_write(enum upm_log_level level, const char *mod, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    upm_log_vwrite(level, mod, fmt, ap);
    va_end(ap);
}

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const log_formats[] = {"text", "json", NULL};

const struct upm_config_key upm_log_config_keys[] = {
    {"level", UPM_CFG_ENUM, offsetof(struct upm_log_config, level), "info", 1, 0, log_levels,
     "Lowest level written to stderr.", 0},
    {"format", UPM_CFG_ENUM, offsetof(struct upm_log_config, format), "text", 1, 0, log_formats,
     "Log line format: key=value text or one JSON object per line.", 0},
};
const size_t upm_log_config_nkeys = sizeof(upm_log_config_keys) / sizeof(upm_log_config_keys[0]);

void upm_log_apply(const struct upm_log_config *cfg)
{
    enum upm_log_level level;
    if (cfg->level && upm_log_level_parse(cfg->level, &level) == 0)
        upm_log_set_level(level);
    if (cfg->format)
        upm_log_set_format(strcmp(cfg->format, "json") == 0 ? UPM_LOG_FMT_JSON : UPM_LOG_FMT_TEXT);
}
