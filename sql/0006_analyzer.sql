-- upmon-analyzer's results, for Grafana and for anyone asking "what did the
-- analyzer see at 14:05?". One row per statistic per cycle (long format: new
-- statistics need no migration). Written by the leader only, through the
-- Distributed tables (rand() spreads the small volume; reads see all shards).
-- Daily partitions so that retention drops whole days like the fine rollups.
CREATE TABLE IF NOT EXISTS {database}.analyzer_stats_local
(
    event_date Date,
    ts DateTime('UTC'),
    window String,
    dimension String,
    segment String,
    metric String,
    value Float64,
    centre Float64,
    lcl Float64,
    ucl Float64,
    -- Western Electric rules that hold on this point: bit r-1 for rule r.
    rules UInt8,
    baseline UInt8
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/analyzer_stats_local',
                             '{replica}')
PARTITION BY event_date
ORDER BY (metric, window, dimension, segment, ts);

CREATE TABLE IF NOT EXISTS {database}.analyzer_stats AS {database}.analyzer_stats_local
ENGINE = Distributed('{cluster}', '{database}', 'analyzer_stats_local', rand());

-- The seller scores of each cycle (the top K and every seller above the alert
-- score), with the figures behind the score and its reasons.
CREATE TABLE IF NOT EXISTS {database}.seller_scores_local
(
    event_date Date,
    ts DateTime('UTC'),
    company_id UInt64,
    rank UInt16,
    score Float64,
    reasons String,
    events_1h Float64,
    failure_rate_1h Float64,
    failure_rate_own Float64,
    failure_rate_peers Float64,
    latency_1h_ms Float64,
    latency_own_ms Float64,
    events_per_hour_own Float64
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/seller_scores_local',
                             '{replica}')
PARTITION BY event_date
ORDER BY (ts, rank);

CREATE TABLE IF NOT EXISTS {database}.seller_scores AS {database}.seller_scores_local
ENGINE = Distributed('{cluster}', '{database}', 'seller_scores_local', rand());
