-- Two rollups that exist for the analyzer's cycle time (issue 6, tests/bench/analyzer).
--
-- events_1m: per minute x origin x country, the window-detail states (unique
-- sellers, full-time t-digest) that events_1s holds per second. The analyzer's
-- windows are whole minutes, so the hour's detail merges 60 states per segment
-- instead of 3,600. Ordered by time first: the analyzer reads a time range of
-- every segment.
CREATE TABLE IF NOT EXISTS {database}.events_1m_local
(
    event_date Date,
    minute DateTime('UTC'),
    origin String,
    country FixedString(2),
    sellers AggregateFunction(uniq, UInt64),
    full_time_q_ms AggregateFunction(quantilesTDigestIf(0.5, 0.9, 0.95, 0.99), Float64, UInt8)
)
ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/{database}/events_1m_local',
                                        '{replica}')
PARTITION BY event_date
ORDER BY (minute, origin, country)
-- A retried insert into events_local reaches this view again with the same
-- block; deduplication here keeps the rollup exactly-once too.
SETTINGS replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.events_1m_mv TO {database}.events_1m_local
AS SELECT
    event_date,
    toDateTime(intDiv(ts_ns, 60000000000) * 60, 'UTC') AS minute,
    origin,
    country,
    uniqState(company_id) AS sellers,
    quantilesTDigestIfState(0.5, 0.9, 0.95, 0.99)(toFloat64((up_ts - ts_ns) / 1000000),
                                                  is_created = 1 AND up_ts >= ts_ns)
        AS full_time_q_ms
FROM {database}.events_local
GROUP BY event_date, minute, origin, country;

CREATE TABLE IF NOT EXISTS {database}.events_1m AS {database}.events_1m_local
ENGINE = Distributed('{cluster}', '{database}', 'events_1m_local');

-- attempt_events: every event reduced to what attempt time needs, in time
-- order. "Attempts that went live in the last hour, with all their earlier
-- events" is then two range reads (the hour's created events, and the
-- attempt horizon before it filtered by the attempts' hashes), where
-- `attempts` (ordered by seller and attempt id, random within a day) has to
-- be scanned a whole day at a time. attempt_h = sipHash64(attempt_id): 8
-- bytes to read per row instead of up to 64 (a collision among the hour's
-- and horizon's attempts is ~1e-6 likely and would merge two attempts).
CREATE TABLE IF NOT EXISTS {database}.attempt_events_local
(
    event_date Date,
    ts_ns Int64,
    attempt_h UInt64,
    is_error UInt8,
    is_created UInt8,
    up_ts Int64,
    origin String,
    country FixedString(2)
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/attempt_events_local',
                             '{replica}')
PARTITION BY event_date
ORDER BY ts_ns
SETTINGS replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.attempt_events_mv
TO {database}.attempt_events_local
AS SELECT
    event_date,
    ts_ns,
    sipHash64(attempt_id) AS attempt_h,
    toUInt8(event = 'ERROR') AS is_error,
    is_created,
    up_ts,
    origin,
    country
FROM {database}.events_local;

CREATE TABLE IF NOT EXISTS {database}.attempt_events AS {database}.attempt_events_local
ENGINE = Distributed('{cluster}', '{database}', 'attempt_events_local');
