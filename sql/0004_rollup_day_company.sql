-- Per UTC day x company x origin: the long history (seller baselines, new
-- sellers, year-long dashboards). Monthly partitions: a day per partition
-- would mean thousands of partitions over the longer retention this table has.
CREATE TABLE IF NOT EXISTS {database}.events_1d_company_local
(
    day Date,
    company_id UInt64,
    origin String,
    events AggregateFunction(count),
    saves AggregateFunction(sum, UInt64),
    updates AggregateFunction(sum, UInt64),
    errors AggregateFunction(sum, UInt64),
    created AggregateFunction(sum, UInt64),
    media_own AggregateFunction(sum, UInt64),
    media_external AggregateFunction(sum, UInt64),
    media_bad AggregateFunction(sum, UInt64),
    attempts AggregateFunction(uniq, String),
    full_time_n AggregateFunction(sum, UInt64),
    full_time_sum_ms AggregateFunction(sum, Float64),
    full_time_sumsq_ms AggregateFunction(sum, Float64),
    full_time_q_ms AggregateFunction(quantilesTDigestIf(0.5, 0.9, 0.95, 0.99), Float64, UInt8)
)
ENGINE = ReplicatedAggregatingMergeTree(
    '/clickhouse/tables/{shard}/{database}/events_1d_company_local', '{replica}')
PARTITION BY toYYYYMM(day)
ORDER BY (company_id, origin, day)
-- A retried insert into events_local reaches this view again with the same
-- block; deduplication here keeps the rollup exactly-once too.
SETTINGS replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.events_1d_company_mv
TO {database}.events_1d_company_local
AS SELECT
    event_date AS day,
    company_id,
    origin,
    countState() AS events,
    sumState(toUInt64(event = 'SAVE')) AS saves,
    sumState(toUInt64(event = 'UPDATE')) AS updates,
    sumState(toUInt64(event = 'ERROR')) AS errors,
    sumState(toUInt64(is_created)) AS created,
    sumState(toUInt64(media_own)) AS media_own,
    sumState(toUInt64(media_external)) AS media_external,
    sumState(toUInt64(media_bad)) AS media_bad,
    uniqState(attempt_id) AS attempts,
    sumState(toUInt64(is_created = 1 AND up_ts >= ts_ns)) AS full_time_n,
    sumState(if(is_created = 1 AND up_ts >= ts_ns, (up_ts - ts_ns) / 1000000, 0))
        AS full_time_sum_ms,
    sumState(if(is_created = 1 AND up_ts >= ts_ns, pow((up_ts - ts_ns) / 1000000, 2), 0))
        AS full_time_sumsq_ms,
    quantilesTDigestIfState(0.5, 0.9, 0.95, 0.99)(toFloat64((up_ts - ts_ns) / 1000000),
                                                  is_created = 1 AND up_ts >= ts_ns)
        AS full_time_q_ms
FROM {database}.events_local
GROUP BY day, company_id, origin;

CREATE TABLE IF NOT EXISTS {database}.events_1d_company AS {database}.events_1d_company_local
ENGINE = Distributed('{cluster}', '{database}', 'events_1d_company_local');
