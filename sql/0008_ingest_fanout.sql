-- 0008: upmon-ingest writes into events_in, a Null table whose materialized
-- views fan every block out to events_local and to each rollup.
--
-- Why: with the views on events_local, a block whose insert was cut short by a
-- server crash after events_local committed it but before its views did is
-- retried (byte-identical) by upmon-ingest: ClickHouse 18.16 then drops the
-- retry as a duplicate of events_local's block and, for a duplicate, skips
-- the views: the rollups lose that block for good (seen in the shard-down
-- fault test). With the views on a Null table every target receives its own
-- block on every try and deduplicates it by itself: a target that committed it
-- drops the retry, one that did not stores it. Current ClickHouse releases
-- have deduplicate_blocks_in_dependent_materialized_views for this: 18.16
-- does not.
--
-- Writers: upmon-ingest (ingest.table = events_in on every shard) and
-- anything else that wants rows counted in the rollups: events_in_all routes
-- by the same sipHash64(attempt_id) as `events`. Rows written straight into
-- events_local are stored but no longer reach the rollups.

CREATE TABLE IF NOT EXISTS {database}.events_in AS {database}.events_local ENGINE = Null;

CREATE TABLE IF NOT EXISTS {database}.events_in_all AS {database}.events_in
ENGINE = Distributed('{cluster}', '{database}', 'events_in', sipHash64(attempt_id));

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.events_in_mv TO {database}.events_local
AS SELECT * FROM {database}.events_in;

-- events_1s_mv, from 0002_rollup_second.sql: now fed by events_in.
DROP TABLE IF EXISTS {database}.events_1s_mv;

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
FROM {database}.events_in
GROUP BY event_date, ts, origin, country;

-- events_1m_company_mv, from 0003_rollup_minute_company.sql: now fed by events_in.
DROP TABLE IF EXISTS {database}.events_1m_company_mv;

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
FROM {database}.events_in
GROUP BY event_date, minute, company_id;

-- events_1d_company_mv, from 0004_rollup_day_company.sql: now fed by events_in.
DROP TABLE IF EXISTS {database}.events_1d_company_mv;

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
FROM {database}.events_in
GROUP BY day, company_id, origin;

-- attempts_mv, from 0005_attempts.sql: now fed by events_in.
DROP TABLE IF EXISTS {database}.attempts_mv;

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
FROM {database}.events_in
GROUP BY event_date, origin, country, company_id, attempt_id;

-- events_1m_mv, from 0007_analyzer_rollups.sql: now fed by events_in.
DROP TABLE IF EXISTS {database}.events_1m_mv;

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
FROM {database}.events_in
GROUP BY event_date, minute, origin, country;

-- attempt_events_mv, from 0007_analyzer_rollups.sql: now fed by events_in.
DROP TABLE IF EXISTS {database}.attempt_events_mv;

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
FROM {database}.events_in;
