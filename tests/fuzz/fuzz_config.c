/*
 * Arbitrary bytes into the YAML configuration loader, with a table that uses
 * every type, a required key and a secret. Beyond "no crash, leak or UB" it
 * checks the loader's own promises: a failure always explains itself, a
 * success satisfies the required key, and the printed configuration of a
 * success loads again.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "upmon/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct log_cfg {
    char *level;
    bool json;
};

struct kafka_cfg {
    struct upm_strlist brokers;
    char *topic;
    int64_t batch;
    double ratio;
    int64_t timeout_ms;
    char *password;
};

struct ch_cfg {
    char *url;
};

static struct log_cfg log_cfg;
static struct kafka_cfg kafka_cfg;
static struct ch_cfg ch_cfg;

static const char *const levels[] = {"debug", "info", "warn", "error", NULL};

static const struct upm_config_key log_keys[] = {
    {"level", UPM_CFG_ENUM, offsetof(struct log_cfg, level), "info", 1, 0, levels, "Level.", 0},
    {"json", UPM_CFG_BOOL, offsetof(struct log_cfg, json), "false", 1, 0, NULL, "JSON.", 0},
};

static const struct upm_config_key kafka_keys[] = {
    {"brokers", UPM_CFG_STRING_LIST, offsetof(struct kafka_cfg, brokers), "a:1,b:2", 1, 0, NULL,
     "Brokers.", 0},
    {"topic", UPM_CFG_STRING, offsetof(struct kafka_cfg, topic), "t", 1, 0, NULL, "Topic.", 0},
    {"batch", UPM_CFG_INT, offsetof(struct kafka_cfg, batch), "1000", 1, 100000, NULL, "Batch.", 0},
    {"ratio", UPM_CFG_DOUBLE, offsetof(struct kafka_cfg, ratio), "0.5", 0, 1, NULL, "Ratio.", 0},
    {"timeout", UPM_CFG_DURATION_MS, offsetof(struct kafka_cfg, timeout_ms), "10s", 1, 86400000,
     NULL, "Timeout.", 0},
    {"password", UPM_CFG_STRING, offsetof(struct kafka_cfg, password), "", 1, 0, NULL, "Password.",
     UPM_CFG_SECRET},
};

static const struct upm_config_key ch_keys[] = {
    {"url", UPM_CFG_STRING, offsetof(struct ch_cfg, url), NULL, 1, 0, NULL, "URL.",
     UPM_CFG_REQUIRED},
};

static const struct upm_config_section sections[] = {
    {"log", log_keys, 2, &log_cfg},
    {"kafka", kafka_keys, 6, &kafka_cfg},
    {"ch", ch_keys, 1, &ch_cfg},
};

#define NSECTIONS (sizeof(sections) / sizeof(sections[0]))

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    err[0] = '\0';
    int rc = upm_config_load_string(sections, NSECTIONS, (const char *)data, size, "fuzz", err,
                                    sizeof(err));
    if (rc != 0 && err[0] == '\0')
        abort(); /* every failure must say why */
    if (rc == 0) {
        if (!ch_cfg.url || !ch_cfg.url[0])
            abort(); /* a success must satisfy the required key */
        if (kafka_cfg.batch < 1 || kafka_cfg.batch > 100000 || !(kafka_cfg.ratio >= 0) ||
            kafka_cfg.ratio > 1)
            abort(); /* ranges hold */
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        if (f) {
            upm_config_print(sections, NSECTIONS, f);
            fclose(f);
            /* The secret prints as "<redacted>", a fine string value, so
             * the printed form must load whenever the input did, unless
             * escaping grew a value or the file past the size limits. */
            if (upm_config_load_string(sections, NSECTIONS, text, len, "printed", err,
                                       sizeof(err)) != 0 &&
                !strstr(err, "longer than") && !strstr(err, "larger than")) {
                fprintf(stderr, "printed config does not load: %s\n%s", err, text);
                abort();
            }
            free(text);
        }
    }
    upm_config_free(sections, NSECTIONS);
    return 0;
}
