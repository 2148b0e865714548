/*
 * log — one line per event, key=value, to stderr (or a sink set by tests).
 *
 *   ts=2026-11-22T10:20:38.123456Z level=info mod=kafka msg="connected" brokers=3
 *
 * The message is escaped into msg="..."; callers add structured fields by
 * passing them in the format after the message text, separated by " | ":
 *   upm_log_info("kafka", "connected | brokers=%d", n)
 * renders as msg="connected" brokers=3. Everything after " | " is copied
 * verbatim, so the caller keeps field values free of spaces or quotes them.
 *
 * The macros test the level before evaluating their arguments. Thread-safe:
 * each line is formatted into a local buffer and written with one write(2).
 * Set-up calls (level, format, sink) are for main() before threads start.
 */
#ifndef UPMON_LOG_H
#define UPMON_LOG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

#include "upmon/config.h"

enum upm_log_level {
    UPM_LOG_DEBUG = 0,
    UPM_LOG_INFO = 1,
    UPM_LOG_WARN = 2,
    UPM_LOG_ERROR = 3,
    UPM_LOG_OFF = 4,
};

enum upm_log_format {
    UPM_LOG_FMT_TEXT = 0, /* key=value */
    UPM_LOG_FMT_JSON = 1, /* one JSON object per line */
};

/* Current threshold; read by the macros. Written only by upm_log_set_level. */
extern int upm_log_threshold;

void upm_log_set_level(enum upm_log_level level);
void upm_log_set_format(enum upm_log_format format);
/* Redirect output (tests). NULL restores stderr. Not owned. */
void upm_log_set_sink(FILE *sink);
/* Parse "debug", "info", "warn", "error", "off". 0, or -1 if unknown. */
int upm_log_level_parse(const char *s, enum upm_log_level *out);
const char *upm_log_level_name(enum upm_log_level level);
/* Lines written at each level since start (for the services' own metrics). */
unsigned long upm_log_count(enum upm_log_level level);

void upm_log_write(enum upm_log_level level, const char *mod, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void upm_log_vwrite(enum upm_log_level level, const char *mod, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

#define UPM_LOG(level, mod, ...)                                                                   \
    do {                                                                                           \
        if ((int)(level) >= upm_log_threshold)                                                     \
            upm_log_write((level), (mod), __VA_ARGS__);                                            \
    } while (0)

#define upm_log_debug(mod, ...) UPM_LOG(UPM_LOG_DEBUG, mod, __VA_ARGS__)
#define upm_log_info(mod, ...)  UPM_LOG(UPM_LOG_INFO, mod, __VA_ARGS__)
#define upm_log_warn(mod, ...)  UPM_LOG(UPM_LOG_WARN, mod, __VA_ARGS__)
#define upm_log_error(mod, ...) UPM_LOG(UPM_LOG_ERROR, mod, __VA_ARGS__)

/* The `log` configuration section, composed into every service's config. */
struct upm_log_config {
    char *level;  /* debug | info | warn | error */
    char *format; /* text | json */
};
extern const struct upm_config_key upm_log_config_keys[];
extern const size_t upm_log_config_nkeys;
/* Apply a loaded section (call from main before starting threads). */
void upm_log_apply(const struct upm_log_config *cfg);

#endif
