-- Two rollups that exist for the analyzer's cycle time (issue 6, tests/bench/analyzer).
--
-- events_1m: per minute x origin x country, what events_1s holds per second.
-- The analyzer's windows and history are whole minutes: its per-minute
-- counters and the hour's detail (unique sellers, full-time t-digest) merge
-- 36 rows a minute instead of up to 2,160, and ordered by time first a few
-- minutes of every segment are one short range (in events_1s, ordered by
-- origin and country first, 4 minutes read 13 times the rows they use).
CREATE TABLE IF NOT EXISTS {database}.events_1m_local
(
    event_date Date,
    minute DateTime('UTC'),
    origin String,
    country FixedString(2),
    events AggregateFunction(count),
    saves AggregateFunction(sum, UInt64),
    updates AggregateFunction(sum, UInt64),
    errors AggregateFunction(sum, UInt64),
    created AggregateFunction(sum, UInt64),
    media_own AggregateFunction(sum, UInt64),
    media_external AggregateFunction(sum, UInt64),
    media_bad AggregateFunction(sum, UInt64),
    sellers AggregateFunction(uniq, UInt64),
    full_time_n AggregateFunction(sum, UInt64),
    full_time_sum_ms AggregateFunction(sum, Float64),
    full_time_sumsq_ms AggregateFunction(sum, Float64),
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
    countState() AS events,
    sumState(toUInt64(event = 'SAVE')) AS saves,
    sumState(toUInt64(event = 'UPDATE')) AS updates,
    sumState(toUInt64(event = 'ERROR')) AS errors,
    sumState(toUInt64(is_created)) AS created,
    sumState(toUInt64(media_own)) AS media_own,
    sumState(toUInt64(media_external)) AS media_external,
    sumState(toUInt64(media_bad)) AS media_bad,
    uniqState(company_id) AS sellers,
    sumState(toUInt64(is_created = 1 AND up_ts >= ts_ns)) AS full_time_n,
    sumState(if(is_created = 1 AND up_ts >= ts_ns, (up_ts - ts_ns) / 1000000, 0))
        AS full_time_sum_ms,
    sumState(if(is_created = 1 AND up_ts >= ts_ns, pow((up_ts - ts_ns) / 1000000, 2), 0))
        AS full_time_sumsq_ms,
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
