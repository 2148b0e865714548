/*
 * Arbitrary bytes into the librdkafka statistics parser. The input is copied
 * into an exactly-sized heap block (not NUL-terminated) so that ASan catches
 * any read past len. Beyond "no crash, leak or UB" it checks the parser's
 * promises: a rejected document leaves the registry's rendering unchanged,
 * validation without a registry agrees with the real application, and the
 * registry still renders afterwards.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "upmon/buf.h"
#include "upmon/kafka.h"
#include "upmon/prom.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *render(struct upm_prom_registry *reg)
{
    struct upm_buf out;
    upm_buf_init(&out, 0);
    if (upm_prom_render(reg, &out) != 0)
        __builtin_trap();
    return upm_buf_steal(&out, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *json = malloc(size ? size : 1);
    if (size)
        memcpy(json, data, size);

    struct upm_prom_registry *reg = upm_prom_registry_create();
    /* A known series first, so "unchanged" covers existing state too. */
    static const char seed[] = "{\"name\":\"seed\",\"msg_cnt\":1,\"txmsgs\":2}";
    if (upm_kafka_stats_apply(reg, seed, sizeof(seed) - 1) != 0)
        __builtin_trap();
    char *before = render(reg);

    int rc = upm_kafka_stats_apply(reg, json, size);
    if (rc != 0 && rc != -1)
        __builtin_trap();
    if (upm_kafka_stats_apply(NULL, json, size) != rc)
        __builtin_trap();
    char *after = render(reg);
    if (rc == -1 && strcmp(before, after) != 0)
        __builtin_trap();
    /* Applying the same document again must be harmless too. */
    if (upm_kafka_stats_apply(reg, json, size) != rc)
        __builtin_trap();

    free(before);
    free(after);
    upm_prom_registry_destroy(reg);
    free(json);
    return 0;
}
