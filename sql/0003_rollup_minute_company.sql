-- Per minute x company: each seller's volume, failures and latency now, for
-- the seller scores (against its own 30-day baseline and its peers).
CREATE TABLE IF NOT EXISTS {database}.events_1m_company_local
(
    event_date Date,
    minute DateTime('UTC'),
    company_id UInt64,
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
    '/clickhouse/tables/{shard}/{database}/events_1m_company_local', '{replica}')
PARTITION BY event_date
ORDER BY (company_id, minute)
-- A retried insert into events_local reaches this view again with the same
-- block; deduplication here keeps the rollup exactly-once too.
SETTINGS replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.events_1m_company_mv
TO {database}.events_1m_company_local
AS SELECT
    event_date,
    toStartOfMinute(toDateTime(intDiv(ts_ns, 1000000000), 'UTC')) AS minute,
    company_id,
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
GROUP BY event_date, minute, company_id;

CREATE TABLE IF NOT EXISTS {database}.events_1m_company AS {database}.events_1m_company_local
ENGINE = Distributed('{cluster}', '{database}', 'events_1m_company_local');
