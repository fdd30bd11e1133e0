-- Time-series plumbing shared by every partitioned table.
--
-- Palisade runs on PostgreSQL with or without TimescaleDB. With TimescaleDB
-- (available AND preloaded) time-series tables are hypertables; otherwise they
-- are native `PARTITION BY RANGE (ts)` tables with one partition per UTC day,
-- created ahead by the maintenance task and on demand by the writers. The table
-- names and the queries are the same either way.

CREATE TABLE palisade_settings (
    key   text PRIMARY KEY,
    value text NOT NULL
);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')
       AND current_setting('shared_preload_libraries') LIKE '%timescaledb%' THEN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
        INSERT INTO palisade_settings VALUES ('timeseries_mode', 'timescaledb');
    ELSE
        INSERT INTO palisade_settings VALUES ('timeseries_mode', 'native');
    END IF;
END $$;

-- 'timescaledb' or 'native'.
CREATE FUNCTION palisade_timeseries_mode() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT value FROM palisade_settings WHERE key = 'timeseries_mode'
$$;

-- Creates a time-series table from its column list: a hypertable with daily
-- chunks under TimescaleDB, else a table partitioned by range on ts.
CREATE FUNCTION palisade_create_timeseries(tbl text, columns text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF palisade_timeseries_mode() = 'timescaledb' THEN
        EXECUTE format('CREATE TABLE %I (%s)', tbl, columns);
        EXECUTE format('SELECT create_hypertable(%L, %L, chunk_time_interval => interval %L)',
                       tbl, 'ts', '1 day');
    ELSE
        EXECUTE format('CREATE TABLE %I (%s) PARTITION BY RANGE (ts)', tbl, columns);
    END IF;
END $$;

-- Makes sure the partition of `tbl` for the UTC day `day` exists (native mode;
-- a no-op under TimescaleDB, which makes its own chunks). Safe to call from many
-- sessions at once: creation is serialised by an advisory lock per table.
CREATE FUNCTION palisade_ensure_partition(tbl text, day date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    part text := format('%s_p%s', tbl, to_char(day, 'YYYYMMDD'));
BEGIN
    IF palisade_timeseries_mode() = 'timescaledb' OR to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    -- Another session may be creating the same partition: the advisory lock makes
    -- them take turns, and a loser that still saw a stale catalog gets
    -- duplicate_table, which means the partition exists.
    PERFORM pg_advisory_xact_lock(hashtext('palisade.partition.' || tbl));
    BEGIN
        EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                       part, tbl,
                       to_char(day, 'YYYY-MM-DD') || ' 00:00:00+00',
                       to_char(day + 1, 'YYYY-MM-DD') || ' 00:00:00+00');
    EXCEPTION WHEN duplicate_table OR unique_violation THEN
        RETURN false;
    END;
    RETURN true;
END $$;

-- Drops the daily partitions of `tbl` whose whole day lies before `cutoff`
-- (native mode). Returns the names dropped.
CREATE FUNCTION palisade_drop_partitions_before(tbl text, cutoff date) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    child text;
BEGIN
    IF palisade_timeseries_mode() = 'timescaledb' THEN
        RETURN;
    END IF;
    FOR child IN
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = tbl::regclass
          AND c.relname ~ ('^' || tbl || '_p[0-9]{8}$')
          AND to_date(right(c.relname, 8), 'YYYYMMDD') < cutoff
        ORDER BY c.relname
    LOOP
        EXECUTE format('DROP TABLE %I', child);
        RETURN NEXT child;
    END LOOP;
END $$;
