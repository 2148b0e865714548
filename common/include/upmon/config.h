/*
 * config — table-driven YAML configuration with environment overrides.
 *
 * A service's configuration is a list of sections. Each section is a YAML
 * top-level mapping key, a table of keys, and the struct the values land in:
 *
 *   log:            { level: info, format: text }
 *   kafka:          { brokers: "127.0.0.1:9092", topic: upmon.events.v1 }
 *
 * Each key has a type, a default (as text, parsed by the same code as YAML
 * and environment values, so defaults cannot drift from the parser), an
 * optional range or choice list, a description (the README's configuration
 * reference is generated from the tables by upm_config_dump_markdown) and
 * the offset of its field in the section struct.
 *
 * Precedence, lowest to highest: default, YAML file, environment variable
 * UPMON_<SECTION>_<KEY> (upper-cased; '.' and '-' become '_').
 *
 * Errors are reported into errstr as "file:line:column: message" for YAML
 * problems and "UPMON_X_Y: message" / "section.key: message" otherwise, and
 * always name the key. Unknown sections and unknown keys are errors: a typo
 * must stop the service at start, not silently use a default.
 *
 * Field types by upm_config_type:
 *   UPM_CFG_STRING      char *        (owned; freed by upm_config_free)
 *   UPM_CFG_INT         int64_t       range [min, max]
 *   UPM_CFG_DOUBLE      double        range [min, max]
 *   UPM_CFG_BOOL        bool          true/false/yes/no/on/off/1/0
 *   UPM_CFG_DURATION_MS int64_t (ms)  "250ms", "10s", "5m", "1h", "7d"; bare number = ms;
 *                                     range in ms
 *   UPM_CFG_ENUM        char *        one of choices (owned)
 *   UPM_CFG_STRING_LIST struct upm_strlist (owned); YAML sequence, or a
 *                                     comma-separated string (env or YAML scalar)
 * Flags: UPM_CFG_REQUIRED (no default; must be set), UPM_CFG_SECRET (value
 * redacted by upm_config_print).
 *
 * Value syntax, the same for defaults, YAML scalars and environment values
 * (spelled out because "an integer" leaves too much to guess):
 *   INT       decimal only, optional sign, no blanks, no "1e3"/"0x10"
 *   DOUBLE    decimal or exponent notation; NaN, infinities, hex floats and
 *             out-of-range values are rejected
 *   BOOL      the spellings above, case-insensitive
 *   DURATION  non-negative integer plus a lower-case unit (ms s m h d), no
 *             blanks, no fractions, no "1h30m"; overflow is an error
 *   ENUM      exact, case-sensitive match of a choice
 *   LIST      comma-separated text: blanks around items are dropped, "" is
 *             the empty list, an empty item ("a,,b") is an error. A YAML
 *             sequence keeps its items whole (commas included); empty items
 *             are an error there too.
 *
 * Accepted YAML: one document whose top level is a mapping of sections, each
 * a mapping of keys (a null section such as "log:" with nothing under it is
 * empty). Rejected with file:line:column: anchors, aliases, tags outside the
 * YAML core schema, more than one document, duplicate sections or keys,
 * scalars over 64 KiB or containing NUL, input over 4 MiB.
 *
 * Environment: a variable that starts with the prefix of a known section
 * (UPMON_<SECTION>_) but names none of its keys is an error (a typo would
 * otherwise be ignored); other UPMON_* variables are left alone. A REQUIRED
 * key set to an empty string or list counts as missing (the usual result of
 * an unset template variable). Problems in the tables themselves (a bad
 * default, a required key with a default, two keys sharing a variable) fail
 * the load with a message that says "programming error".
 *
 * Thread-safety: load at start-up, read-only afterwards. Loading reads the
 * process environment, so it must not race with setenv().
 */
#ifndef UPMON_CONFIG_H
#define UPMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum upm_config_type {
    UPM_CFG_STRING,
    UPM_CFG_INT,
    UPM_CFG_DOUBLE,
    UPM_CFG_BOOL,
    UPM_CFG_DURATION_MS,
    UPM_CFG_ENUM,
    UPM_CFG_STRING_LIST,
};

#define UPM_CFG_REQUIRED 0x1u
#define UPM_CFG_SECRET   0x2u

struct upm_strlist {
    char **items; /* owned, each owned */
    size_t count;
};

/* Append a copy of s[0..n) (n bytes at most, stops at a NUL). */
void upm_strlist_push(struct upm_strlist *l, const char *s, size_t n);
/* Free every item and the array; the list is left empty. */
void upm_strlist_free(struct upm_strlist *l);

struct upm_config_key {
    const char *name; /* key within the section, [a-z0-9_] */
    enum upm_config_type type;
    size_t offset;              /* offsetof(section struct, field) */
    const char *def;            /* default as text; NULL only with UPM_CFG_REQUIRED */
    double min, max;            /* inclusive range for INT/DOUBLE/DURATION_MS; min>max = none */
    const char *const *choices; /* NULL-terminated, for UPM_CFG_ENUM */
    const char *description;    /* one sentence for the reference */
    unsigned flags;             /* UPM_CFG_REQUIRED | UPM_CFG_SECRET */
};

struct upm_config_section {
    const char *name; /* YAML top-level key, [a-z0-9_] */
    const struct upm_config_key *keys;
    size_t nkeys;
    void *target; /* struct the values are written into */
};

/*
 * An external section: { "incidents", UPM_CFG_EXTERNAL, 0, NULL }. The loader
 * accepts that top-level key with a value of any shape (still rejecting
 * anchors, aliases, custom tags, NUL and duplicates, as everywhere) and skips
 * it; it has no keys, no environment variables, and is neither printed nor
 * documented. The service parses that part of the file itself, for values a
 * key table cannot describe (a list of objects, e.g. the simulator's
 * incidents). A marker rather than a new struct field so that existing
 * positional section initialisers stay complete.
 */
extern const struct upm_config_key upm_config_external_keys[1];
#define UPM_CFG_EXTERNAL upm_config_external_keys

/*
 * Fill every section's target: defaults, then the YAML file at path (NULL =
 * no file), then UPMON_* environment variables. Returns 0, or -1 with a
 * message naming the key in errstr (a missing or unreadable file: the path
 * and strerror). On failure the targets hold a mix of defaults and parsed
 * values; nothing needs freeing beyond a call to upm_config_free, which is
 * always safe on the same sections. The targets must be zeroed before the
 * first load; later loads free the owned values they replace.
 */
int upm_config_load(const struct upm_config_section *sections, size_t nsections, const char *path,
                    char *errstr, size_t errstr_size);

/* Same, from len bytes of YAML in memory (tests, fuzzing); need not be
 * NUL-terminated. name (NULL = "<string>") is used in error messages in
 * place of a file name. */
int upm_config_load_string(const struct upm_config_section *sections, size_t nsections,
                           const char *yaml, size_t len, const char *name, char *errstr,
                           size_t errstr_size);

/* Free owned strings and lists in every target and zero those fields.
 * NULL-safe; calling it twice is harmless. */
void upm_config_free(const struct upm_config_section *sections, size_t nsections);

/* Print the effective configuration as YAML that this loader accepts
 * (secrets as "<redacted>", whether set or not). */
void upm_config_print(const struct upm_config_section *sections, size_t nsections, FILE *out);

/* Print a Markdown reference table: key, env variable, type, default,
 * range/choices, description. The README's reference is this output. */
void upm_config_dump_markdown(const struct upm_config_section *sections, size_t nsections,
                              FILE *out);

/* Parse a duration ("250ms", "10s", "5m", "1h", "7d", bare = ms) into ms.
 * 0, or -1 if malformed or overflowing, leaving *out untouched. Exposed for
 * CLI flags. */
int upm_config_parse_duration_ms(const char *s, int64_t *out);

#endif
