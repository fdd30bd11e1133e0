-- Host metrics: raw samples (kept 30 days by default) and hourly rollups (kept longer).

SELECT palisade_create_timeseries('metrics', $cols$
    ts         timestamptz      NOT NULL,
    id         uuid             NOT NULL,
    host       text             NOT NULL,
    name       text             NOT NULL,
    value      double precision NOT NULL,
    labels     jsonb            NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (ts, id)
$cols$);

CREATE INDEX metrics_host_name_ts ON metrics (host, name, ts);

-- Native mode: a plain table filled by the rollup job from the hours the metrics
-- writer marks as pending (late samples re-mark their hour, so it is recomputed).
-- TimescaleDB mode: the schema crate creates a continuous aggregate of the same
-- name and columns instead.
DO $$
BEGIN
    IF palisade_timeseries_mode() = 'native' THEN
        CREATE TABLE metrics_hourly (
            bucket    timestamptz      NOT NULL,
            host      text             NOT NULL,
            name      text             NOT NULL,
            labels    jsonb            NOT NULL,
            samples   bigint           NOT NULL,
            sum_value double precision NOT NULL,
            min_value double precision NOT NULL,
            max_value double precision NOT NULL,
            avg_value double precision NOT NULL,
            PRIMARY KEY (bucket, host, name, labels)
        );
    END IF;
END $$;

CREATE TABLE metrics_rollup_pending (
    bucket timestamptz PRIMARY KEY
);

-- Recomputes the hourly rollup of every pending hour. Returns the number of
-- hours rolled up. Idempotent: an hour is recomputed from the raw samples.
CREATE FUNCTION palisade_rollup_metrics() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    hour timestamptz;
    n integer := 0;
BEGIN
    IF palisade_timeseries_mode() = 'timescaledb' THEN
        -- The continuous aggregate refreshes itself; only drop the marks.
        DELETE FROM metrics_rollup_pending;
        RETURN 0;
    END IF;
    FOR hour IN DELETE FROM metrics_rollup_pending RETURNING bucket LOOP
        DELETE FROM metrics_hourly WHERE bucket = hour;
        INSERT INTO metrics_hourly
        SELECT hour, host, name, labels, count(*), sum(value), min(value), max(value), avg(value)
        FROM metrics
        WHERE ts >= hour AND ts < hour + interval '1 hour'
        GROUP BY host, name, labels;
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;
