-- Per second x origin x country: what the analyzer's throughput, failure-rate
-- and latency charts read. Aggregate states (not plain sums) because rows of
-- one key arrive in many insert blocks and on merges must combine exactly.
-- full_time = up_ts - ts_ns of the event that made the card live, in ms.
CREATE TABLE IF NOT EXISTS {database}.events_1s_local
(
    event_date Date,
    ts DateTime('UTC'),
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
    attempts AggregateFunction(uniq, String),
    sellers AggregateFunction(uniq, UInt64),
    full_time_n AggregateFunction(sum, UInt64),
    full_time_sum_ms AggregateFunction(sum, Float64),
    full_time_sumsq_ms AggregateFunction(sum, Float64),
    full_time_q_ms AggregateFunction(quantilesTDigestIf(0.5, 0.9, 0.95, 0.99), Float64, UInt8)
)
ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/{database}/events_1s_local',
                                        '{replica}')
PARTITION BY event_date
ORDER BY (origin, country, ts)
-- A retried insert into events_local reaches this view again with the same
-- block; deduplication here keeps the rollup exactly-once too.
SETTINGS replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.events_1s_mv TO {database}.events_1s_local
AS SELECT
    event_date,
    toDateTime(intDiv(ts_ns, 1000000000), 'UTC') AS ts,
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
    uniqState(attempt_id) AS attempts,
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
GROUP BY event_date, ts, origin, country;

CREATE TABLE IF NOT EXISTS {database}.events_1s AS {database}.events_1s_local
ENGINE = Distributed('{cluster}', '{database}', 'events_1s_local');
