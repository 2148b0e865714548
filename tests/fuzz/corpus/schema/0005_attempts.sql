-- One row per upload attempt (after merges; read with GROUP BY attempt_id and
-- the -Merge functions, because an attempt's events arrive in several blocks
-- and an attempt that crosses midnight lives in two daily partitions).
-- attempt time = up_ts - first_ts; full time = up_ts - success_ts;
-- failed = errors > 0 AND created = 0; attempts to success = events.
-- All events of an attempt are on one shard (the sharding hash is on
-- attempt_id), so each shard's view is complete.
CREATE TABLE IF NOT EXISTS {database}.attempts_local
(
    event_date Date,
    origin String,
    country FixedString(2),
    company_id UInt64,
    attempt_id String,
    first_ts AggregateFunction(min, Int64),
    last_ts AggregateFunction(max, Int64),
    success_ts AggregateFunction(minIf, Int64, UInt8),
    up_ts AggregateFunction(max, Int64),
    events AggregateFunction(count),
    errors AggregateFunction(sum, UInt64),
    created AggregateFunction(max, UInt8),
    item_id AggregateFunction(any, UInt64)
)
ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/{database}/attempts_local',
                                        '{replica}')
PARTITION BY event_date
ORDER BY (origin, country, company_id, attempt_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.attempts_mv TO {database}.attempts_local
AS SELECT
    event_date,
    origin,
    country,
    company_id,
    attempt_id,
    minState(ts_ns) AS first_ts,
    maxState(ts_ns) AS last_ts,
    minIfState(ts_ns, is_created = 1) AS success_ts,
    maxState(up_ts) AS up_ts,
    countState() AS events,
    sumState(toUInt64(event = 'ERROR')) AS errors,
    maxState(is_created) AS created,
    anyState(item_id) AS item_id
FROM {database}.events_local
GROUP BY event_date, origin, country, company_id, attempt_id;

CREATE TABLE IF NOT EXISTS {database}.attempts AS {database}.attempts_local
ENGINE = Distributed('{cluster}', '{database}', 'attempts_local');
