-- Raw events, one row per valid Kafka message (column order is the ingest
-- contract: ingest sends RowBinary with this explicit column list).
-- One partition per UTC day so that retention drops whole days.
-- {database} and {cluster} are substituted by upmon-schema; {shard} and
-- {replica} are the server's own macros and stay as they are.
CREATE TABLE IF NOT EXISTS {database}.events_local
(
    event_date Date,
    ts_ns Int64,
    item_id UInt64,
    attempt_id String,
    request_id String,
    event Enum8('SAVE' = 1, 'UPDATE' = 2, 'ERROR' = 3),
    is_created UInt8,
    up_ts Int64,
    origin String,
    origin_id String,
    country FixedString(2),
    company_id UInt64,
    category_id UInt64,
    media Array(String),
    media_own UInt16,
    media_external UInt16,
    media_bad UInt16,
    data String,
    kafka_partition UInt32,
    kafka_offset UInt64
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/events_local', '{replica}')
PARTITION BY event_date
ORDER BY (origin, country, company_id, ts_ns, attempt_id)
-- Block deduplication is what makes a retried batch harmless; the default
-- window (100 blocks) is minutes at most under load, so keep more.
SETTINGS index_granularity = 8192, replicated_deduplication_window = 10000;

-- Reads see every shard; ingest writes to each shard's events_local directly
-- with the same hash, so the sharding key here must stay sipHash64(attempt_id).
CREATE TABLE IF NOT EXISTS {database}.events AS {database}.events_local
ENGINE = Distributed('{cluster}', '{database}', 'events_local', sipHash64(attempt_id));
