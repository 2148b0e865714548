/*
 * dlq — the headers of a dead-letter message.
 *
 * A rejected message goes to the DLQ topic with its original key and bytes
 * and these headers (values are printable ASCII, from upm_event_error and
 * the source coordinates): reason, field, detail, source_partition,
 * source_offset. Consumers of the DLQ rely on these names.
 */
#ifndef UPMON_INGEST_DLQ_H
#define UPMON_INGEST_DLQ_H

#include <stdint.h>

#include "upmon/event.h"
#include "upmon/kafka.h"

#define ING_DLQ_NHEADERS 5

struct ing_dlq_headers {
    struct upm_kafka_header h[ING_DLQ_NHEADERS];
    char partition[16];
    char offset[24];
};

/* Fill out from err and the source coordinates. The headers point into out
 * and err: both must outlive their use. Returns the header count. */
size_t ing_dlq_headers(struct ing_dlq_headers *out, const struct upm_event_error *err,
                       int32_t partition, int64_t offset);

#endif
