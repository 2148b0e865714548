/*
 * evrow — one upload event as a RowBinary row of `events_local`.
 *
 * The column list and types are the schema contract between upmon-ingest
 * and sql/ (issue 4): UPM_EVROW_COLUMNS names them in the order the row
 * encoder writes them, and inserts send that list explicitly, so a column
 * the schema adds later (with a default) does not break ingestion.
 *
 * Encoding is a pure function of (event, source partition, source offset):
 * the same message always yields the same bytes. That is what lets a batch
 * that is rebuilt after a crash be recognised by ReplicatedMergeTree block
 * deduplication. The Kafka coordinates are part of the row, so two blocks of
 * different messages can never be byte-identical (an event sent twice to
 * Kafka is two rows, as it was two messages).
 *
 * Thread-safety: reentrant, no state.
 */
#ifndef UPMON_EVROW_H
#define UPMON_EVROW_H

#include <stdint.h>

#include "upmon/buf.h"
#include "upmon/event.h"

#define UPM_EVROW_COLUMNS                                                                          \
    "event_date, ts_ns, item_id, attempt_id, request_id, event, is_created, up_ts, origin, "       \
    "origin_id, country, company_id, category_id, media, media_own, media_external, media_bad, "   \
    "data, kafka_partition, kafka_offset"

/* The UTC day of ts_ns as days since 1970-01-01, clamped to a Date's range
 * (0..65535): ClickHouse's Date is a UInt16. */
uint16_t upm_evrow_day(int64_t ts_ns);

/*
 * Append ev as one RowBinary row (columns as UPM_EVROW_COLUMNS) to b:
 * event_date (Date), ts_ns (Int64), item_id (UInt64), attempt_id,
 * request_id (String), event (Enum8: SAVE=1 UPDATE=2 ERROR=3), is_created
 * (UInt8), up_ts (Int64, 0 unless is_created), origin, origin_id (String),
 * country (FixedString(2)), company_id, category_id (UInt64), media
 * (Array(String); a non-string entry is ''), media_own, media_external,
 * media_bad (UInt16, saturating), data (String), kafka_partition (UInt32),
 * kafka_offset (UInt64).
 * 0, or -1 if b's limit was reached (b then keeps its previous length).
 * ev must come from a successful upm_event_parse.
 */
int upm_evrow_encode(struct upm_buf *b, const struct upm_event *ev, int32_t partition,
                     int64_t offset);

#endif
