#include "dlq.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

size_t ing_dlq_headers(struct ing_dlq_headers *out, const struct upm_event_error *err,
                       int32_t partition, int64_t offset)
{
    const char *reason = upm_event_reason_name(err->reason);
    snprintf(out->partition, sizeof(out->partition), "%" PRId32, partition);
    snprintf(out->offset, sizeof(out->offset), "%" PRId64, offset);
    out->h[0] = (struct upm_kafka_header){"reason", reason, strlen(reason)};
    out->h[1] = (struct upm_kafka_header){"field", err->field, strlen(err->field)};
    out->h[2] = (struct upm_kafka_header){"detail", err->detail, strlen(err->detail)};
    out->h[3] =
        (struct upm_kafka_header){"source_partition", out->partition, strlen(out->partition)};
    out->h[4] = (struct upm_kafka_header){"source_offset", out->offset, strlen(out->offset)};
    return ING_DLQ_NHEADERS;
}
