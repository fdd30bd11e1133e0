//! Palisade's PostgreSQL schema: numbered migrations embedded in the binary,
//! partition maintenance, the hourly metrics rollup and retention.
//!
//! Migrations live in `schema/migrations/NNNN_name.sql` and are never edited once
//! applied; a change is a new file. [`migrate`] runs them under sqlx's advisory
//! lock, so several `palisade` processes may start at once.
//!
//! Time-series tables (`events`, `metrics`, `connections`) are TimescaleDB
//! hypertables when the extension is available and preloaded, and native daily
//! range partitions otherwise; [`Maintenance`] does the upkeep either way.
//!
//! ```no_run
//! # async fn run(pool: sqlx::PgPool) -> Result<(), palisade_schema::SchemaError> {
//! palisade_schema::migrate(&pool).await?;
//! let maintenance = palisade_schema::Maintenance::new(palisade_schema::Retention::default());
//! let report = maintenance.run_once(&pool, chrono::Utc::now()).await?;
//! println!("{report:?}");
//! # Ok(()) }
//! ```

use chrono::{DateTime, Days, NaiveDate, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// The embedded migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Tables partitioned by day on `ts`.
pub const TIMESERIES_TABLES: [&str; 3] = ["events", "metrics", "connections"];

/// Errors from migrating or maintaining the schema.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// A migration failed or the database's migration history does not match ours.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A maintenance statement failed.
    #[error("schema maintenance failed: {0}")]
    Database(#[from] sqlx::Error),
}

/// How time-series data is stored in this database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeseriesMode {
    /// TimescaleDB hypertables, continuous aggregate and retention policies.
    Timescaledb,
    /// Native daily range partitions with Palisade's own rollup and retention jobs.
    Native,
}

/// Applies every pending migration (under sqlx's advisory lock) and, under
/// TimescaleDB, the continuous aggregate and policies that cannot run inside a
/// migration's transaction.
pub async fn migrate(pool: &PgPool) -> Result<TimeseriesMode, SchemaError> {
    MIGRATOR.run(pool).await?;
    let mode = timeseries_mode(pool).await?;
    if mode == TimeseriesMode::Timescaledb {
        timescale::install_aggregates(pool).await?;
    }
    Ok(mode)
}

/// Reads which time-series mode the migrations chose for this database.
pub async fn timeseries_mode(pool: &PgPool) -> Result<TimeseriesMode, SchemaError> {
    let mode: String = sqlx::query_scalar("SELECT palisade_timeseries_mode()")
        .fetch_one(pool)
        .await?;
    Ok(if mode == "timescaledb" {
        TimeseriesMode::Timescaledb
    } else {
        TimeseriesMode::Native
    })
}

/// Makes sure the daily partitions of `table` exist for every day in `days`.
/// Writers call this before inserting rows of days they have not seen yet.
pub async fn ensure_partitions<'c, E>(
    executor: E,
    table: &str,
    days: &[NaiveDate],
) -> Result<(), sqlx::Error>
where
    E: sqlx::PgExecutor<'c>,
{
    sqlx::query("SELECT palisade_ensure_partition($1, d) FROM unnest($2::date[]) AS d")
        .bind(table)
        .bind(days)
        .execute(executor)
        .await?;
    Ok(())
}

/// How long data is kept. `None` keeps it forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Retention {
    /// Raw metric samples (default 30 days).
    pub metrics_days: Option<u32>,
    /// Hourly metric rollups (default 400 days).
    pub rollup_days: Option<u32>,
    /// Security events (default: kept; the streams hold the source of truth).
    pub events_days: Option<u32>,
    /// Observed connections (default 30 days).
    pub connections_days: Option<u32>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            metrics_days: Some(30),
            rollup_days: Some(400),
            events_days: None,
            connections_days: Some(30),
        }
    }
}

/// What one maintenance pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MaintenanceReport {
    /// Partitions created ahead of time.
    pub partitions_created: usize,
    /// Partitions dropped by retention.
    pub partitions_dropped: Vec<String>,
    /// Hours rolled up into `metrics_hourly`.
    pub hours_rolled_up: i32,
    /// Rollup rows deleted by retention.
    pub rollup_rows_deleted: u64,
    /// Event vectors deleted with the events' retention.
    pub vectors_deleted: u64,
    /// Embedding texts deleted because no event has them any more.
    pub texts_deleted: u64,
    /// Alert groups whose window ended before the events' cutoff.
    pub alert_groups_deleted: u64,
}

/// The periodic upkeep: partitions ahead, hourly rollup, retention.
#[derive(Debug, Clone)]
pub struct Maintenance {
    retention: Retention,
    days_ahead: u64,
}

impl Maintenance {
    /// Upkeep with the given retention, creating partitions 3 days ahead.
    pub fn new(retention: Retention) -> Self {
        Maintenance {
            retention,
            days_ahead: 3,
        }
    }

    /// Runs one pass as of `now`.
    pub async fn run_once(
        &self,
        pool: &PgPool,
        now: DateTime<Utc>,
    ) -> Result<MaintenanceReport, SchemaError> {
        let mut report = MaintenanceReport::default();
        let today = now.date_naive();
        let days: Vec<NaiveDate> = (0..=self.days_ahead)
            .filter_map(|d| today.checked_add_days(Days::new(d)))
            .collect();
        for table in TIMESERIES_TABLES {
            for day in &days {
                let created: bool = sqlx::query_scalar("SELECT palisade_ensure_partition($1, $2)")
                    .bind(table)
                    .bind(day)
                    .fetch_one(pool)
                    .await?;
                report.partitions_created += usize::from(created);
            }
        }

        report.hours_rolled_up = sqlx::query_scalar("SELECT palisade_rollup_metrics()")
            .fetch_one(pool)
            .await?;

        let keep = [
            ("events", self.retention.events_days),
            ("metrics", self.retention.metrics_days),
            ("connections", self.retention.connections_days),
        ];
        let native = timeseries_mode(pool).await? == TimeseriesMode::Native;
        for (table, days) in keep {
            let Some(cutoff) = days.and_then(|d| today.checked_sub_days(Days::new(d.into())))
            else {
                continue;
            };
            if native {
                let dropped: Vec<String> =
                    sqlx::query_scalar("SELECT palisade_drop_partitions_before($1, $2)")
                        .bind(table)
                        .bind(cutoff)
                        .fetch_all(pool)
                        .await?;
                report.partitions_dropped.extend(dropped);
            }
        }
        if let Some(cutoff) = self
            .retention
            .events_days
            .and_then(|d| today.checked_sub_days(Days::new(d.into())))
        {
            // Not partitioned (one HNSW graph), so rows, not partitions: the old
            // events' vectors, then the texts no event has any more. A text that
            // still represents a clump stays (its members are found through it)
            // until a later run finds its clump gone.
            report.vectors_deleted = sqlx::query("DELETE FROM event_vectors WHERE ts < $1")
                .bind(cutoff)
                .execute(pool)
                .await?
                .rows_affected();
            report.texts_deleted = sqlx::query(
                "DELETE FROM embedding_texts t WHERE NOT EXISTS \
                 (SELECT 1 FROM event_vectors v WHERE v.text_key = t.text_key) \
                 AND NOT EXISTS (SELECT 1 FROM embedding_texts m \
                     WHERE m.representative = t.text_key)",
            )
            .execute(pool)
            .await?
            .rows_affected();
            // Their texts' memberships go with them (ON DELETE CASCADE).
            report.alert_groups_deleted =
                sqlx::query("DELETE FROM alert_groups WHERE window_end <= $1")
                    .bind(cutoff)
                    .execute(pool)
                    .await?
                    .rows_affected();
        }
        if native {
            if let Some(cutoff) = self
                .retention
                .rollup_days
                .and_then(|d| now.checked_sub_days(Days::new(d.into())))
            {
                report.rollup_rows_deleted =
                    sqlx::query("DELETE FROM metrics_hourly WHERE bucket < $1")
                        .bind(cutoff)
                        .execute(pool)
                        .await?
                        .rows_affected();
            }
        } else {
            timescale::apply_retention(pool, &self.retention).await?;
        }
        Ok(report)
    }
}

/// The TimescaleDB path. Written against TimescaleDB 2.x's documented API; it runs
/// only where the extension is preloaded, which no machine in this project's CI has.
mod timescale {
    use super::Retention;
    use sqlx::PgPool;

    pub(super) async fn install_aggregates(pool: &PgPool) -> Result<(), sqlx::Error> {
        // Continuous aggregates cannot be created inside a transaction block, so this
        // runs after the migrations, idempotently.
        sqlx::raw_sql(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS metrics_hourly
               WITH (timescaledb.continuous) AS
             SELECT time_bucket('1 hour', ts) AS bucket, host, name, labels,
                    count(*) AS samples, sum(value) AS sum_value, min(value) AS min_value,
                    max(value) AS max_value, avg(value) AS avg_value
             FROM metrics GROUP BY bucket, host, name, labels
             WITH NO DATA;
             SELECT add_continuous_aggregate_policy('metrics_hourly',
                    start_offset => interval '3 days', end_offset => interval '1 hour',
                    schedule_interval => interval '15 minutes', if_not_exists => true);",
        )
        .execute(pool)
        .await?;
        Ok(())
    }

    pub(super) async fn apply_retention(
        pool: &PgPool,
        retention: &Retention,
    ) -> Result<(), sqlx::Error> {
        let policies = [
            ("events", retention.events_days),
            ("metrics", retention.metrics_days),
            ("connections", retention.connections_days),
            ("metrics_hourly", retention.rollup_days),
        ];
        for (table, days) in policies {
            if let Some(days) = days {
                sqlx::query(
                    "SELECT add_retention_policy($1::regclass, make_interval(days => $2), \
                     if_not_exists => true)",
                )
                .bind(table)
                .bind(i32::try_from(days).unwrap_or(i32::MAX))
                .execute(pool)
                .await?;
            }
        }
        Ok(())
    }
}
