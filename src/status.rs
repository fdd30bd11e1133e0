//! What has been ingested: stream and consumer state from NATS, row counts and
//! the latest events from PostgreSQL. Served as JSON and as the status page.

use std::collections::BTreeMap;

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use palisade_consumers::streams::StreamFamily;
use palisade_consumers::{Namespace, Projection};
use serde::Serialize;
use sqlx::PgPool;

/// The whole status document.
#[derive(Debug, Serialize)]
pub struct Status {
    /// NATS server and streams.
    pub nats: NatsStatus,
    /// Per projection: its consumers' progress.
    pub projections: Vec<ProjectionStatus>,
    /// Row counts in PostgreSQL.
    pub ingested: Ingested,
    /// The ten newest events.
    pub latest_events: Vec<EventSummary>,
}

/// NATS server and stream state.
#[derive(Debug, Serialize)]
pub struct NatsStatus {
    /// Server version.
    pub server_version: String,
    /// One entry per stream.
    pub streams: Vec<StreamStatus>,
}

/// One stream's state.
#[derive(Debug, Serialize)]
pub struct StreamStatus {
    /// Stream name.
    pub name: String,
    /// Subjects it captures.
    pub subjects: Vec<String>,
    /// Messages stored.
    pub messages: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// Last sequence number.
    pub last_seq: u64,
}

/// One projection's consumers.
#[derive(Debug, Serialize)]
pub struct ProjectionStatus {
    /// Projection name.
    pub name: &'static str,
    /// One per stream it reads.
    pub consumers: Vec<ConsumerStatus>,
}

/// A durable consumer's progress.
#[derive(Debug, Serialize)]
pub struct ConsumerStatus {
    /// Stream read.
    pub stream: String,
    /// Messages not yet delivered.
    pub pending: u64,
    /// Delivered, not yet acknowledged.
    pub ack_pending: usize,
    /// Highest stream sequence acknowledged in order.
    pub ack_floor_stream_seq: u64,
}

/// Row counts.
#[derive(Debug, Default, Serialize)]
pub struct Ingested {
    /// Events by type.
    pub events_by_type: BTreeMap<String, i64>,
    /// Events by severity.
    pub events_by_severity: BTreeMap<String, i64>,
    /// Known hosts.
    pub hosts: i64,
    /// Raw metric samples.
    pub metrics: i64,
    /// Hourly rollup rows.
    pub metrics_hourly: i64,
    /// Processes running now.
    pub processes_running: i64,
    /// Observed connections.
    pub connections: i64,
    /// Scan reports.
    pub scans: i64,
    /// Events embedded for semantic hunting.
    pub event_vectors: i64,
    /// Distinct embedding texts, one vector each.
    pub embedding_texts: i64,
    /// Open vulnerability findings by severity.
    pub open_vulnerabilities: BTreeMap<String, i64>,
    /// Dead-lettered messages.
    pub dead_letters: i64,
}

/// A short view of one event.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct EventSummary {
    /// When it happened.
    pub ts: DateTime<Utc>,
    /// Host.
    pub host: Option<String>,
    /// Event type.
    #[sqlx(rename = "type")]
    #[serde(rename = "type")]
    pub kind: String,
    /// Severity.
    pub severity: String,
    /// Rule.
    pub rule: Option<String>,
    /// Message.
    pub message: String,
}

/// Errors collecting the status.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// PostgreSQL could not answer.
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    /// JetStream could not answer.
    #[error("jetstream: {0}")]
    JetStream(String),
}

/// Collects the status.
pub async fn collect(
    pool: &PgPool,
    client: &async_nats::Client,
    namespace: &Namespace,
) -> Result<Status, StatusError> {
    let js = jetstream::new(client.clone());
    let mut streams = Vec::new();
    for family in StreamFamily::ALL {
        let name = family.name(namespace);
        let mut stream = match js.get_stream(&name).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(stream = %name, error = %e, "stream missing");
                continue;
            }
        };
        let info = stream
            .info()
            .await
            .map_err(|e| StatusError::JetStream(e.to_string()))?;
        streams.push(StreamStatus {
            name,
            subjects: info.config.subjects.clone(),
            messages: info.state.messages,
            bytes: info.state.bytes,
            last_seq: info.state.last_sequence,
        });
    }
    let mut projections = Vec::new();
    for projection in Projection::ALL {
        let mut consumers = Vec::new();
        for binding in projection.bindings() {
            let stream = binding.family.name(namespace);
            let Ok(mut consumer) = js
                .get_consumer_from_stream::<jetstream::consumer::pull::Config, _, _>(
                    projection.durable_name(),
                    &stream,
                )
                .await
            else {
                continue;
            };
            if let Ok(info) = consumer.info().await {
                consumers.push(ConsumerStatus {
                    stream,
                    pending: info.num_pending,
                    ack_pending: info.num_ack_pending,
                    ack_floor_stream_seq: info.ack_floor.stream_sequence,
                });
            }
        }
        projections.push(ProjectionStatus {
            name: projection.name(),
            consumers,
        });
    }
    Ok(Status {
        nats: NatsStatus {
            server_version: client.server_info().version,
            streams,
        },
        projections,
        ingested: ingested(pool).await?,
        latest_events: sqlx::query_as(
            "SELECT ts, host, type, severity, rule, message FROM events ORDER BY ts DESC LIMIT 10",
        )
        .fetch_all(pool)
        .await?,
    })
}

async fn ingested(pool: &PgPool) -> Result<Ingested, sqlx::Error> {
    let grouped = |sql: &'static str| async move {
        let rows: Vec<(String, i64)> = sqlx::query_as(sql).fetch_all(pool).await?;
        Ok::<_, sqlx::Error>(rows.into_iter().collect::<BTreeMap<_, _>>())
    };
    let count =
        |sql: &'static str| async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await };
    Ok(Ingested {
        events_by_type: grouped("SELECT type, count(*) FROM events GROUP BY type").await?,
        events_by_severity: grouped("SELECT severity, count(*) FROM events GROUP BY severity").await?,
        hosts: count("SELECT count(*) FROM hosts").await?,
        metrics: count("SELECT count(*) FROM metrics").await?,
        metrics_hourly: count("SELECT count(*) FROM metrics_hourly").await?,
        processes_running: count("SELECT count(*) FROM processes WHERE stopped_at IS NULL").await?,
        connections: count("SELECT count(*) FROM connections").await?,
        scans: count("SELECT count(*) FROM scans").await?,
        event_vectors: count("SELECT count(*) FROM event_vectors").await?,
        embedding_texts: count("SELECT count(*) FROM embedding_texts").await?,
        open_vulnerabilities: grouped(
            "SELECT severity, count(*) FROM host_vulnerabilities WHERE resolved_at IS NULL GROUP BY severity",
        )
        .await?,
        dead_letters: count("SELECT count(*) FROM dead_letters").await?,
    })
}
