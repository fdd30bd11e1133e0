//! The PostgreSQL store: writes decoded records of one batch in one transaction.
//!
//! Every row key is derived from the message's stream position (stream name,
//! sequence, index of the record inside the message), so a redelivered or replayed
//! message writes the same keys and `ON CONFLICT` skips it. Rows go in with one
//! `INSERT … SELECT FROM UNNEST(…)` per table, never row by row.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::model::{Connection, Decoded, Event, Metric, Package, ProcessDelta, ScanReport};

/// Namespace of the v5 UUIDs that key rows by stream position.
const ROW_ID_NAMESPACE: Uuid = Uuid::from_u128(0x5a1c_83f4_6d0e_4c2b_9f6e_0a11_5e55_a11d);

/// How long a host's `last_seen` may lag before a writer refreshes it.
const HOST_REFRESH_SECS: i64 = 60;

/// What a batch saw of one host: first and last time, and the agent that reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HostSighting<'a> {
    first: DateTime<Utc>,
    last: DateTime<Utc>,
    agent_id: Option<&'a str>,
}

/// The `last_seen` and agent last written for a host.
type HostWritten = (DateTime<Utc>, Option<String>);

/// The deterministic id of record `index` of the message at `stream`/`seq`.
pub fn row_id(stream: &str, seq: u64, index: usize) -> Uuid {
    Uuid::new_v5(
        &ROW_ID_NAMESPACE,
        format!("{stream}/{seq}/{index}").as_bytes(),
    )
}

/// Where a message sits in JetStream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// Stream name.
    pub stream: String,
    /// Stream sequence number.
    pub seq: u64,
    /// Subject the message was published on.
    pub subject: String,
}

/// A message that could not be decoded or written, with why.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Where the message sits.
    pub position: Position,
    /// Why it was rejected.
    pub reason: String,
    /// The original payload.
    pub payload: Vec<u8>,
}

/// One batch of a projection: decoded messages and the dead letters among them.
#[derive(Debug, Default)]
pub struct Batch {
    /// Decoded messages, in stream order.
    pub records: Vec<(Position, Decoded)>,
    /// Messages rejected by the decoder (already published to the DLQ subject).
    pub dead_letters: Vec<DeadLetter>,
}

impl Batch {
    /// Number of messages in the batch, dead letters included.
    pub fn messages(&self) -> usize {
        self.records.len() + self.dead_letters.len()
    }
}

/// What a batch wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteSummary {
    /// Rows newly inserted (conflicts skipped are not counted).
    pub rows_inserted: u64,
    /// Records in the batch (inserted or already present).
    pub records: u64,
}

/// Errors from writing a batch.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed. [`StoreError::is_transient`] tells whether retrying may help.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A value cannot be stored (out of range, not representable).
    #[error("cannot store record: {0}")]
    Unstorable(String),
}

impl StoreError {
    /// True when a row of the batch already exists (unique violation): the COPY
    /// fast path met a redelivered or replayed message.
    pub fn is_duplicate(&self) -> bool {
        matches!(self, StoreError::Database(sqlx::Error::Database(db))
            if db.code().as_deref() == Some("23505"))
    }

    /// True for faults that go away by themselves (connection lost, server
    /// restarting, pool exhausted, serialisation failure, deadlock, a partition
    /// dropped under us). Everything else is permanent for the batch.
    pub fn is_transient(&self) -> bool {
        let StoreError::Database(err) = self else {
            return false;
        };
        match err {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_)
            | sqlx::Error::Tls(_) => true,
            sqlx::Error::Database(db) => {
                let code = db.code().unwrap_or_default();
                code.starts_with("08") // connection exception
                    || code.starts_with("57P") // admin shutdown, crash shutdown, cannot connect now
                    || code.starts_with("53") // insufficient resources
                    || code == "40001" // serialization failure
                    || code == "40P01" // deadlock detected
                    || code == "23514" // no partition for row (dropped under us): re-ensured on retry
            }
            _ => false,
        }
    }
}

/// The PostgreSQL store for one projection writer.
#[derive(Debug)]
pub struct Store {
    pool: PgPool,
    /// Partitions this process knows exist, so it asks PostgreSQL only for new days.
    partitions: Mutex<HashSet<(&'static str, NaiveDate)>>,
    /// Last `last_seen` and agent this process wrote per host, to keep hot host rows unlocked.
    hosts_seen: Mutex<HashMap<String, HostWritten>>,
}

impl Store {
    /// A store over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Store {
            pool,
            partitions: Mutex::default(),
            hosts_seen: Mutex::default(),
        }
    }

    /// The pool this store writes through.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Writes `batch` for `projection` in one transaction, records the applied
    /// stream offset for `slot` (a writer's index) in the same transaction, and
    /// commits. Returns only after the commit is durable.
    ///
    /// Time-series rows go in with `COPY` (the fast path); if any of them is
    /// already there (a redelivery or a replay over existing rows), the COPY fails
    /// on the primary key and the batch is written again with
    /// `INSERT … ON CONFLICT DO NOTHING`, which skips the rows already present.
    pub async fn write_batch(
        &self,
        projection: &str,
        slot: i32,
        batch: &Batch,
    ) -> Result<WriteSummary, StoreError> {
        let mut rows = Rows::default();
        for (position, decoded) in &batch.records {
            rows.push(position, decoded);
        }
        let mut result = self
            .try_write_batch(projection, slot, batch, &rows, Insert::Copy)
            .await;
        if matches!(&result, Err(err) if err.is_duplicate()) {
            result = self
                .try_write_batch(projection, slot, batch, &rows, Insert::Upsert)
                .await;
        }
        if let Err(err) = &result {
            if err.is_transient() {
                // A partition may have been dropped by retention: ask again next time.
                lock(&self.partitions).clear();
            }
        }
        result
    }

    async fn try_write_batch(
        &self,
        projection: &str,
        slot: i32,
        batch: &Batch,
        rows: &Rows<'_>,
        insert: Insert,
    ) -> Result<WriteSummary, StoreError> {
        self.ensure_partitions(rows).await?;

        let mut tx = self.pool.begin().await?;
        let mut summary = WriteSummary {
            records: rows.records,
            ..WriteSummary::default()
        };
        summary.rows_inserted += match insert {
            Insert::Copy => copy_events(&mut tx, &rows.events).await?,
            Insert::Upsert => insert_events(&mut tx, &rows.events).await?,
        };
        summary.rows_inserted += match insert {
            Insert::Copy => copy_metrics(&mut tx, &rows.metrics).await?,
            Insert::Upsert => insert_metrics(&mut tx, &rows.metrics).await?,
        };
        mark_rollup_hours(&mut tx, &rows.metrics).await?;
        summary.rows_inserted += apply_processes(&mut tx, &rows.processes).await?;
        summary.rows_inserted += insert_connections(&mut tx, &rows.connections).await?;
        for (position, report) in &rows.scans {
            summary.rows_inserted += apply_scan(&mut tx, position, report).await?;
        }
        self.touch_hosts(&mut tx, &rows.hosts).await?;
        insert_dead_letters(&mut tx, projection, &batch.dead_letters).await?;
        record_offsets(&mut tx, projection, slot, batch).await?;
        tx.commit().await?;
        self.remember_hosts(&rows.hosts);
        Ok(summary)
    }

    async fn ensure_partitions(&self, rows: &Rows<'_>) -> Result<(), StoreError> {
        let wanted: BTreeSet<(&'static str, NaiveDate)> = rows
            .events
            .iter()
            .map(|r| ("events", r.event.ts.date_naive()))
            .chain(
                rows.metrics
                    .iter()
                    .map(|r| ("metrics", r.metric.ts.date_naive())),
            )
            .chain(
                rows.connections
                    .iter()
                    .map(|r| ("connections", r.connection.ts.date_naive())),
            )
            .collect();
        let missing: Vec<_> = {
            let known = lock(&self.partitions);
            wanted.into_iter().filter(|k| !known.contains(k)).collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let mut by_table: BTreeMap<&'static str, Vec<NaiveDate>> = BTreeMap::new();
        for (table, day) in &missing {
            by_table.entry(table).or_default().push(*day);
        }
        for (table, days) in by_table {
            palisade_schema::ensure_partitions(&self.pool, table, &days).await?;
        }
        lock(&self.partitions).extend(missing);
        Ok(())
    }

    async fn touch_hosts(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        hosts: &BTreeMap<&str, HostSighting<'_>>,
    ) -> Result<(), StoreError> {
        let stale: Vec<(&str, &HostSighting<'_>)> = {
            let seen = lock(&self.hosts_seen);
            hosts
                .iter()
                .filter(|(name, s)| match seen.get(**name) {
                    Some((written, agent)) => {
                        (s.last - *written).num_seconds() > HOST_REFRESH_SECS
                            || (s.agent_id.is_some() && s.agent_id != agent.as_deref())
                    }
                    None => true,
                })
                .map(|(name, s)| (*name, s))
                .collect()
        };
        if stale.is_empty() {
            return Ok(());
        }
        // Sorted by name (BTreeMap order), so concurrent writers lock rows in one order.
        sqlx::query(
            "INSERT INTO hosts (name, first_seen, last_seen, agent_id)
             SELECT * FROM UNNEST($1::text[], $2::timestamptz[], $3::timestamptz[], $4::text[])
             ON CONFLICT (name) DO UPDATE
               SET first_seen = LEAST(hosts.first_seen, EXCLUDED.first_seen),
                   last_seen = GREATEST(hosts.last_seen, EXCLUDED.last_seen),
                   agent_id = COALESCE(EXCLUDED.agent_id, hosts.agent_id)",
        )
        .bind(stale.iter().map(|(name, _)| *name).collect::<Vec<_>>())
        .bind(stale.iter().map(|(_, s)| s.first).collect::<Vec<_>>())
        .bind(stale.iter().map(|(_, s)| s.last).collect::<Vec<_>>())
        .bind(stale.iter().map(|(_, s)| s.agent_id).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    fn remember_hosts(&self, hosts: &BTreeMap<&str, HostSighting<'_>>) {
        let mut seen = lock(&self.hosts_seen);
        for (name, s) in hosts {
            let entry = seen.entry((*name).to_owned()).or_insert((s.last, None));
            entry.0 = entry.0.max(s.last);
            if let Some(agent) = s.agent_id {
                entry.1 = Some(agent.to_owned());
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct EventRow<'a> {
    id: Uuid,
    position: &'a Position,
    event: &'a Event,
}

struct MetricRow<'a> {
    id: Uuid,
    metric: &'a Metric,
}

struct ConnectionRow<'a> {
    id: Uuid,
    connection: &'a Connection,
}

/// A batch's records split by table, with their row ids.
#[derive(Default)]
struct Rows<'a> {
    events: Vec<EventRow<'a>>,
    metrics: Vec<MetricRow<'a>>,
    processes: Vec<&'a ProcessDelta>,
    connections: Vec<ConnectionRow<'a>>,
    scans: Vec<(&'a Position, &'a ScanReport)>,
    /// What this batch saw of each host.
    hosts: BTreeMap<&'a str, HostSighting<'a>>,
    records: u64,
}

impl<'a> Rows<'a> {
    fn push(&mut self, position: &'a Position, decoded: &'a Decoded) {
        let id = |index| row_id(&position.stream, position.seq, index);
        self.records += decoded.len() as u64;
        match decoded {
            Decoded::Events(events) => {
                for (index, event) in events.iter().enumerate() {
                    if let Some(host) = &event.host {
                        let agent = event.attributes.get("agent_id").and_then(|a| a.as_str());
                        self.see_host(host, event.ts, agent);
                    }
                    self.events.push(EventRow {
                        id: id(index),
                        position,
                        event,
                    });
                }
            }
            Decoded::Metrics(metrics) => {
                for (index, metric) in metrics.iter().enumerate() {
                    self.see_host(&metric.host, metric.ts, metric.agent_id.as_deref());
                    self.metrics.push(MetricRow {
                        id: id(index),
                        metric,
                    });
                }
            }
            Decoded::Processes(deltas) => {
                for delta in deltas {
                    let (host, ts, agent) = match delta {
                        ProcessDelta::Started(p) => (&p.host, p.ts, p.agent_id.as_deref()),
                        ProcessDelta::Stopped { host, ts, .. } => (host, *ts, None),
                    };
                    self.see_host(host, ts, agent);
                    self.processes.push(delta);
                }
            }
            Decoded::Connections(connections) => {
                for (index, connection) in connections.iter().enumerate() {
                    self.see_host(
                        &connection.host,
                        connection.ts,
                        connection.agent_id.as_deref(),
                    );
                    self.connections.push(ConnectionRow {
                        id: id(index),
                        connection,
                    });
                }
            }
            Decoded::Scan(report) => {
                self.see_host(&report.host, report.scanned_at, report.agent_id.as_deref());
                self.scans.push((position, report));
            }
        }
    }

    fn see_host(&mut self, host: &'a str, ts: DateTime<Utc>, agent_id: Option<&'a str>) {
        let seen = self.hosts.entry(host).or_insert(HostSighting {
            first: ts,
            last: ts,
            agent_id: None,
        });
        seen.first = seen.first.min(ts);
        seen.last = seen.last.max(ts);
        seen.agent_id = agent_id.or(seen.agent_id);
    }
}

/// PostgreSQL text cannot hold NUL; everything else is kept as sent.
fn pg_text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        std::borrow::Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// How time-series rows are inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Insert {
    /// `COPY … FROM STDIN`: fastest; fails if any row already exists.
    Copy,
    /// `INSERT … SELECT FROM UNNEST … ON CONFLICT DO NOTHING`: skips existing rows.
    Upsert,
}

/// Rows in COPY's text format, built as bytes: every escape is ASCII, so text is
/// escaped byte by byte without re-checking UTF-8, and JSON is serialised straight
/// into the buffer through [`EscapeCopyText`].
#[derive(Default)]
struct CopyRows {
    buf: Vec<u8>,
    first: bool,
}

/// Appends bytes to a COPY text buffer, escaping what COPY treats specially.
struct EscapeCopyText<'a>(&'a mut Vec<u8>);

impl EscapeCopyText<'_> {
    fn push(&mut self, bytes: &[u8]) {
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let escaped: &[u8] = match b {
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0 => "\u{FFFD}".as_bytes(),
                _ => continue,
            };
            self.0.extend_from_slice(&bytes[start..i]);
            self.0.extend_from_slice(escaped);
            start = i + 1;
        }
        self.0.extend_from_slice(&bytes[start..]);
    }
}

impl std::io::Write for EscapeCopyText<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.push(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CopyRows {
    fn row(&mut self) -> &mut Self {
        if !self.buf.is_empty() {
            self.buf.push(b'\n');
        }
        self.first = true;
        self
    }

    fn sep(&mut self) {
        if !self.first {
            self.buf.push(b'\t');
        }
        self.first = false;
    }

    fn text(&mut self, s: &str) -> &mut Self {
        self.sep();
        EscapeCopyText(&mut self.buf).push(s.as_bytes());
        self
    }

    fn opt(&mut self, s: Option<&str>) -> &mut Self {
        match s {
            Some(s) => self.text(s),
            None => {
                self.sep();
                self.buf.extend_from_slice(b"\\N");
                self
            }
        }
    }

    fn value(&mut self, v: impl std::fmt::Display) -> &mut Self {
        use std::io::Write as _;
        self.sep();
        let _ = write!(self.buf, "{v}");
        self
    }

    /// Microseconds, truncated like the binary encoding of the upsert path, so
    /// both paths write the same key.
    fn ts(&mut self, ts: DateTime<Utc>) -> &mut Self {
        self.value(ts.format("%Y-%m-%dT%H:%M:%S%.6fZ"))
    }

    fn json(
        &mut self,
        map: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<&mut Self, StoreError> {
        self.sep();
        serde_json::to_writer(EscapeCopyText(&mut self.buf), map)
            .map_err(|e| StoreError::Unstorable(e.to_string()))?;
        Ok(self)
    }

    async fn send(
        self,
        tx: &mut Transaction<'_, Postgres>,
        statement: &str,
    ) -> Result<u64, StoreError> {
        let mut copy = tx.copy_in_raw(statement).await?;
        copy.send(self.buf).await?;
        Ok(copy.finish().await?)
    }
}

async fn copy_events(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[EventRow<'_>],
) -> Result<u64, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let mut copy = CopyRows::default();
    for row in rows {
        let e = row.event;
        copy.row()
            .ts(e.ts)
            .value(row.id)
            .opt(e.host.as_deref())
            .text(&e.source)
            .text(e.kind.as_str())
            .text(e.severity.as_str())
            .value(e.severity.level())
            .opt(e.rule.as_deref())
            .text(&e.message)
            .json(&e.attributes)?
            .text(&row.position.subject)
            .text(&row.position.stream)
            .value(seq_i64(row.position.seq)?);
    }
    copy.send(
        tx,
        "COPY events (ts, id, host, source, type, severity, severity_level, rule, message,
                      attributes, subject, stream, stream_seq) FROM STDIN",
    )
    .await
}

async fn copy_metrics(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[MetricRow<'_>],
) -> Result<u64, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let mut copy = CopyRows::default();
    for row in rows {
        let m = row.metric;
        copy.row()
            .ts(m.ts)
            .value(row.id)
            .text(&m.host)
            .text(&m.name)
            .value(m.value)
            .json(&m.labels)?;
    }
    copy.send(
        tx,
        "COPY metrics (ts, id, host, name, value, labels) FROM STDIN",
    )
    .await
}

async fn insert_events(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[EventRow<'_>],
) -> Result<u64, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let n = rows.len();
    let (mut ts, mut ids, mut hosts, mut sources, mut kinds) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut severities, mut levels, mut rules, mut messages, mut attributes) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut subjects, mut streams, mut seqs) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for row in rows {
        let e = row.event;
        ts.push(e.ts);
        ids.push(row.id);
        hosts.push(e.host.as_deref().map(pg_text));
        sources.push(pg_text(&e.source));
        kinds.push(e.kind.as_str());
        severities.push(e.severity.as_str());
        levels.push(e.severity.level());
        rules.push(e.rule.as_deref().map(pg_text));
        messages.push(pg_text(&e.message));
        attributes.push(Json(&e.attributes));
        subjects.push(row.position.subject.as_str());
        streams.push(row.position.stream.as_str());
        seqs.push(seq_i64(row.position.seq)?);
    }
    let done = sqlx::query(
        "INSERT INTO events (ts, id, host, source, type, severity, severity_level, rule, message,
                             attributes, subject, stream, stream_seq)
         SELECT * FROM UNNEST($1::timestamptz[], $2::uuid[], $3::text[], $4::text[], $5::text[],
                              $6::text[], $7::int2[], $8::text[], $9::text[], $10::jsonb[],
                              $11::text[], $12::text[], $13::int8[])
         ON CONFLICT DO NOTHING",
    )
    .bind(ts)
    .bind(ids)
    .bind(hosts)
    .bind(sources)
    .bind(kinds)
    .bind(severities)
    .bind(levels)
    .bind(rules)
    .bind(messages)
    .bind(attributes)
    .bind(subjects)
    .bind(streams)
    .bind(seqs)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

async fn insert_metrics(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[MetricRow<'_>],
) -> Result<u64, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let ts: Vec<_> = rows.iter().map(|r| r.metric.ts).collect();
    let ids: Vec<_> = rows.iter().map(|r| r.id).collect();
    let hosts: Vec<_> = rows.iter().map(|r| pg_text(&r.metric.host)).collect();
    let names: Vec<_> = rows.iter().map(|r| pg_text(&r.metric.name)).collect();
    let values: Vec<_> = rows.iter().map(|r| r.metric.value).collect();
    let labels: Vec<_> = rows.iter().map(|r| Json(&r.metric.labels)).collect();
    let done = sqlx::query(
        "INSERT INTO metrics (ts, id, host, name, value, labels)
         SELECT * FROM UNNEST($1::timestamptz[], $2::uuid[], $3::text[], $4::text[],
                              $5::float8[], $6::jsonb[])
         ON CONFLICT DO NOTHING",
    )
    .bind(ts)
    .bind(ids)
    .bind(hosts)
    .bind(names)
    .bind(values)
    .bind(labels)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

/// Marks the hours `rows` fall in so the rollup job recomputes them.
async fn mark_rollup_hours(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[MetricRow<'_>],
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let ts: Vec<_> = rows.iter().map(|r| r.metric.ts).collect();
    sqlx::query(
        "INSERT INTO metrics_rollup_pending (bucket)
         SELECT DISTINCT date_trunc('hour', t) FROM UNNEST($1::timestamptz[]) AS t
         ORDER BY 1
         ON CONFLICT DO NOTHING",
    )
    .bind(&ts)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn apply_processes(
    tx: &mut Transaction<'_, Postgres>,
    deltas: &[&ProcessDelta],
) -> Result<u64, StoreError> {
    let started: Vec<_> = deltas
        .iter()
        .filter_map(|d| match d {
            ProcessDelta::Started(p) => Some(p),
            ProcessDelta::Stopped { .. } => None,
        })
        .collect();
    let mut written = 0;
    if !started.is_empty() {
        let opt = |f: fn(&crate::model::ProcessStart) -> &Option<String>| -> Vec<Option<String>> {
            started
                .iter()
                .map(|p| f(p).as_deref().map(|s| pg_text(s).into_owned()))
                .collect()
        };
        written += sqlx::query(
            "INSERT INTO processes (host, pid, started_at, ppid, exe, cmdline, user_name,
                                    container_id, package, agent_id)
             SELECT * FROM UNNEST($1::text[], $2::int8[], $3::timestamptz[], $4::int8[],
                                  $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
                                  $10::text[])
             ON CONFLICT DO NOTHING",
        )
        .bind(
            started
                .iter()
                .map(|p| pg_text(&p.host).into_owned())
                .collect::<Vec<_>>(),
        )
        .bind(started.iter().map(|p| p.pid).collect::<Vec<_>>())
        .bind(started.iter().map(|p| p.ts).collect::<Vec<_>>())
        .bind(started.iter().map(|p| p.ppid).collect::<Vec<_>>())
        .bind(opt(|p| &p.exe))
        .bind(opt(|p| &p.cmdline))
        .bind(opt(|p| &p.user))
        .bind(opt(|p| &p.container_id))
        .bind(opt(|p| &p.package))
        .bind(opt(|p| &p.agent_id))
        .execute(&mut **tx)
        .await?
        .rows_affected();
    }
    let mut hosts = Vec::new();
    let mut pids = Vec::new();
    let mut stops = Vec::new();
    for delta in deltas {
        if let ProcessDelta::Stopped { ts, host, pid } = delta {
            hosts.push(host.as_str());
            pids.push(*pid);
            stops.push(*ts);
        }
    }
    if !stops.is_empty() {
        written += sqlx::query(
            "UPDATE processes p SET stopped_at = s.ts
             FROM UNNEST($1::text[], $2::int8[], $3::timestamptz[]) AS s(host, pid, ts)
             WHERE p.host = s.host AND p.pid = s.pid AND p.stopped_at IS NULL
               AND p.started_at <= s.ts",
        )
        .bind(hosts)
        .bind(pids)
        .bind(stops)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    }
    Ok(written)
}

async fn insert_connections(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[ConnectionRow<'_>],
) -> Result<u64, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let c = |f: fn(&Connection) -> String| rows.iter().map(|r| f(r.connection)).collect::<Vec<_>>();
    let done = sqlx::query(
        "INSERT INTO connections (ts, id, host, pid, process, protocol, local_ip, local_port,
                                  remote_ip, remote_port, status, agent_id)
         SELECT * FROM UNNEST($1::timestamptz[], $2::uuid[], $3::text[], $4::int8[], $5::text[],
                              $6::text[], $7::text[], $8::int4[], $9::text[], $10::int4[],
                              $11::text[], $12::text[])
         ON CONFLICT DO NOTHING",
    )
    .bind(rows.iter().map(|r| r.connection.ts).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.id).collect::<Vec<_>>())
    .bind(c(|c| c.host.clone()))
    .bind(rows.iter().map(|r| r.connection.pid).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|r| r.connection.process.clone())
            .collect::<Vec<_>>(),
    )
    .bind(c(|c| c.protocol.clone()))
    .bind(c(|c| c.local_ip.clone()))
    .bind(
        rows.iter()
            .map(|r| r.connection.local_port)
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|r| r.connection.remote_ip.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|r| r.connection.remote_port)
            .collect::<Vec<_>>(),
    )
    .bind(c(|c| c.status.clone()))
    .bind(
        rows.iter()
            .map(|r| r.connection.agent_id.as_deref())
            .collect::<Vec<_>>(),
    )
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

/// Writes one scan: its row, the packages, the vulnerabilities, the host links;
/// then marks links of the same artifact that this (newer) scan no longer lists
/// as resolved. Every step is an upsert, so applying a scan twice changes nothing.
async fn apply_scan(
    tx: &mut Transaction<'_, Postgres>,
    position: &Position,
    report: &ScanReport,
) -> Result<u64, StoreError> {
    let scan_id = row_id(&position.stream, position.seq, 0);
    let inserted = sqlx::query(
        "INSERT INTO scans (id, host, artifact_name, artifact_type, os, scanned_at, packages,
                            findings, stream, stream_seq, agent_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT DO NOTHING",
    )
    .bind(scan_id)
    .bind(&report.host)
    .bind(&report.artifact_name)
    .bind(&report.artifact_type)
    .bind(&report.os)
    .bind(report.scanned_at)
    .bind(count_i32(report.packages.len())?)
    .bind(count_i32(report.findings.len())?)
    .bind(&position.stream)
    .bind(seq_i64(position.seq)?)
    .bind(&report.agent_id)
    .execute(&mut **tx)
    .await?
    .rows_affected();

    // Packages: the listed ones and those named by findings, deduplicated and sorted.
    let all: BTreeSet<(&str, &str, &str)> = report
        .packages
        .iter()
        .chain(report.findings.iter().map(|f| &f.package))
        .map(|p| (p.ecosystem.as_str(), p.name.as_str(), p.version.as_str()))
        .collect();
    let package_ids = upsert_packages(tx, &all).await?;
    let id_of = |p: &Package| {
        package_ids
            .get(&(p.ecosystem.clone(), p.name.clone(), p.version.clone()))
            .copied()
            .ok_or_else(|| StoreError::Unstorable(format!("package {} vanished", p.name)))
    };

    let mut links: BTreeMap<(i64, String), ()> = BTreeMap::new();
    for p in &report.packages {
        links.insert((id_of(p)?, p.path.clone().unwrap_or_default()), ());
    }
    for f in &report.findings {
        links.insert(
            (
                id_of(&f.package)?,
                f.package.path.clone().unwrap_or_default(),
            ),
            (),
        );
    }
    let (link_ids, link_paths): (Vec<i64>, Vec<String>) = links.into_keys().unzip();
    sqlx::query(
        "INSERT INTO host_packages (host, artifact_name, package_id, path, first_seen, scanned_at)
         SELECT $1, $2, p.id, p.path, $3, $3 FROM UNNEST($4::int8[], $5::text[]) AS p(id, path)
         ON CONFLICT (host, artifact_name, package_id, path) DO UPDATE
           SET first_seen = LEAST(host_packages.first_seen, EXCLUDED.first_seen),
               scanned_at = GREATEST(host_packages.scanned_at, EXCLUDED.scanned_at)",
    )
    .bind(&report.host)
    .bind(&report.artifact_name)
    .bind(report.scanned_at)
    .bind(link_ids)
    .bind(link_paths)
    .execute(&mut **tx)
    .await?;

    // The files of packages that list them, for telling which package runs.
    let mut files: BTreeSet<(i64, &str)> = BTreeSet::new();
    for p in &report.packages {
        let id = id_of(p)?;
        files.extend(p.installed_files.iter().map(|f| (id, f.as_str())));
    }
    if !files.is_empty() {
        let (file_packages, file_paths): (Vec<i64>, Vec<&str>) = files.into_iter().unzip();
        sqlx::query(
            "INSERT INTO package_files (package_id, path)
             SELECT * FROM UNNEST($1::int8[], $2::text[])
             ON CONFLICT DO NOTHING",
        )
        .bind(file_packages)
        .bind(file_paths)
        .execute(&mut **tx)
        .await?;
    }

    // Vulnerability catalogue, one row per id (the first finding's text wins).
    let mut catalogue: BTreeMap<&str, &crate::model::Finding> = BTreeMap::new();
    for f in &report.findings {
        catalogue.entry(f.vulnerability_id.as_str()).or_insert(f);
    }
    if !catalogue.is_empty() {
        let f: Vec<_> = catalogue.values().collect();
        sqlx::query(
            "INSERT INTO vulnerabilities (id, severity, severity_level, title, description,
                                          primary_url, updated_at)
             SELECT v.*, $7 FROM UNNEST($1::text[], $2::text[], $3::int2[], $4::text[],
                                        $5::text[], $6::text[]) AS v
             ON CONFLICT (id) DO UPDATE
               SET severity = EXCLUDED.severity, severity_level = EXCLUDED.severity_level,
                   title = EXCLUDED.title, description = EXCLUDED.description,
                   primary_url = EXCLUDED.primary_url, updated_at = EXCLUDED.updated_at
               WHERE vulnerabilities.updated_at <= EXCLUDED.updated_at",
        )
        .bind(
            f.iter()
                .map(|f| f.vulnerability_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(f.iter().map(|f| f.severity.as_str()).collect::<Vec<_>>())
        .bind(f.iter().map(|f| f.severity.level()).collect::<Vec<_>>())
        .bind(
            f.iter()
                .map(|f| f.title.as_deref().map(pg_text))
                .collect::<Vec<_>>(),
        )
        .bind(
            f.iter()
                .map(|f| f.description.as_deref().map(pg_text))
                .collect::<Vec<_>>(),
        )
        .bind(
            f.iter()
                .map(|f| f.primary_url.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(report.scanned_at)
        .execute(&mut **tx)
        .await?;
    }

    let mut findings: BTreeMap<(String, &str, i64), &crate::model::Finding> = BTreeMap::new();
    for f in &report.findings {
        findings.insert(
            (
                f.target.clone(),
                f.vulnerability_id.as_str(),
                id_of(&f.package)?,
            ),
            f,
        );
    }
    if !findings.is_empty() {
        let keys: Vec<_> = findings.keys().collect();
        let values: Vec<_> = findings.values().collect();
        sqlx::query(
            "INSERT INTO host_vulnerabilities (host, artifact_name, target, vulnerability_id,
                 package_id, fixed_version, severity, severity_level, first_seen, scanned_at, scan_id)
             SELECT $1, $2, v.target, v.vid, v.pid, v.fixed, v.severity, v.level, $3, $3, $4
             FROM UNNEST($5::text[], $6::text[], $7::int8[], $8::text[], $9::text[], $10::int2[])
                  AS v(target, vid, pid, fixed, severity, level)
             ON CONFLICT (host, artifact_name, target, vulnerability_id, package_id) DO UPDATE
               SET fixed_version = EXCLUDED.fixed_version, severity = EXCLUDED.severity,
                   severity_level = EXCLUDED.severity_level, scanned_at = EXCLUDED.scanned_at,
                   scan_id = EXCLUDED.scan_id, resolved_at = NULL,
                   first_seen = LEAST(host_vulnerabilities.first_seen, EXCLUDED.first_seen)
               WHERE host_vulnerabilities.scanned_at <= EXCLUDED.scanned_at",
        )
        .bind(&report.host)
        .bind(&report.artifact_name)
        .bind(report.scanned_at)
        .bind(scan_id)
        .bind(keys.iter().map(|k| k.0.as_str()).collect::<Vec<_>>())
        .bind(keys.iter().map(|k| k.1).collect::<Vec<_>>())
        .bind(keys.iter().map(|k| k.2).collect::<Vec<_>>())
        .bind(values.iter().map(|f| f.fixed_version.as_deref()).collect::<Vec<_>>())
        .bind(values.iter().map(|f| f.severity.as_str()).collect::<Vec<_>>())
        .bind(values.iter().map(|f| f.severity.level()).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    }

    // Findings of this artifact that a newer scan no longer lists are resolved.
    sqlx::query(
        "UPDATE host_vulnerabilities SET resolved_at = $3
         WHERE host = $1 AND artifact_name = $2 AND scanned_at < $3 AND resolved_at IS NULL",
    )
    .bind(&report.host)
    .bind(&report.artifact_name)
    .bind(report.scanned_at)
    .execute(&mut **tx)
    .await?;
    Ok(inserted)
}

async fn upsert_packages(
    tx: &mut Transaction<'_, Postgres>,
    packages: &BTreeSet<(&str, &str, &str)>,
) -> Result<HashMap<(String, String, String), i64>, StoreError> {
    if packages.is_empty() {
        return Ok(HashMap::new());
    }
    let ecosystems: Vec<_> = packages.iter().map(|p| p.0).collect();
    let names: Vec<_> = packages.iter().map(|p| p.1).collect();
    let versions: Vec<_> = packages.iter().map(|p| p.2).collect();
    sqlx::query(
        "INSERT INTO packages (ecosystem, name, version)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[])
         ON CONFLICT DO NOTHING",
    )
    .bind(&ecosystems)
    .bind(&names)
    .bind(&versions)
    .execute(&mut **tx)
    .await?;
    let found: Vec<(i64, String, String, String)> = sqlx::query_as(
        "SELECT p.id, p.ecosystem, p.name, p.version FROM packages p
         JOIN UNNEST($1::text[], $2::text[], $3::text[]) AS k(ecosystem, name, version)
           USING (ecosystem, name, version)",
    )
    .bind(&ecosystems)
    .bind(&names)
    .bind(&versions)
    .fetch_all(&mut **tx)
    .await?;
    Ok(found
        .into_iter()
        .map(|(id, e, n, v)| ((e, n, v), id))
        .collect())
}

async fn insert_dead_letters(
    tx: &mut Transaction<'_, Postgres>,
    projection: &str,
    dead: &[DeadLetter],
) -> Result<(), StoreError> {
    if dead.is_empty() {
        return Ok(());
    }
    let seqs = dead
        .iter()
        .map(|d| seq_i64(d.position.seq))
        .collect::<Result<Vec<_>, _>>()?;
    sqlx::query(
        "INSERT INTO dead_letters (projection, stream, stream_seq, subject, reason, payload)
         SELECT $1, d.* FROM UNNEST($2::text[], $3::int8[], $4::text[], $5::text[], $6::bytea[]) AS d
         ON CONFLICT DO NOTHING",
    )
    .bind(projection)
    .bind(dead.iter().map(|d| d.position.stream.as_str()).collect::<Vec<_>>())
    .bind(seqs)
    .bind(dead.iter().map(|d| d.position.subject.as_str()).collect::<Vec<_>>())
    .bind(dead.iter().map(|d| pg_text(&d.reason)).collect::<Vec<_>>())
    .bind(dead.iter().map(|d| d.payload.as_slice()).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(crate) async fn record_offsets(
    tx: &mut Transaction<'_, Postgres>,
    projection: &str,
    slot: i32,
    batch: &Batch,
) -> Result<(), StoreError> {
    let mut per_stream: BTreeMap<&str, (u64, i64)> = BTreeMap::new();
    let positions = batch
        .records
        .iter()
        .map(|(p, _)| p)
        .chain(batch.dead_letters.iter().map(|d| &d.position));
    for p in positions {
        let entry = per_stream.entry(p.stream.as_str()).or_insert((0, 0));
        entry.0 = entry.0.max(p.seq);
        entry.1 += 1;
    }
    for (stream, (last_seq, messages)) in per_stream {
        sqlx::query(
            "INSERT INTO projection_offsets (projection, stream, slot, last_seq, messages, updated_at)
             VALUES ($1, $2, $3, $4, $5, now())
             ON CONFLICT (projection, stream, slot) DO UPDATE
               SET last_seq = GREATEST(projection_offsets.last_seq, EXCLUDED.last_seq),
                   messages = projection_offsets.messages + EXCLUDED.messages,
                   updated_at = EXCLUDED.updated_at",
        )
        .bind(projection)
        .bind(stream)
        .bind(slot)
        .bind(seq_i64(last_seq)?)
        .bind(messages)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

fn seq_i64(seq: u64) -> Result<i64, StoreError> {
    i64::try_from(seq)
        .map_err(|_| StoreError::Unstorable(format!("stream sequence {seq} too large")))
}

fn count_i32(n: usize) -> Result<i32, StoreError> {
    i32::try_from(n).map_err(|_| StoreError::Unstorable(format!("count {n} too large")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_ids_are_stable_and_distinct() {
        assert_eq!(row_id("SECURITY", 7, 0), row_id("SECURITY", 7, 0));
        assert_ne!(row_id("SECURITY", 7, 0), row_id("SECURITY", 7, 1));
        assert_ne!(row_id("SECURITY", 7, 0), row_id("LOGS", 7, 0));
    }

    #[test]
    fn copy_rows_escape_text_format() {
        let mut copy = CopyRows::default();
        copy.row().text("a\tb\\c\nd").opt(None).value(42);
        copy.row().text("x\0y").ts(
            DateTime::parse_from_rfc3339("2022-05-01T23:29:32.918828894Z")
                .unwrap()
                .into(),
        );
        copy.row()
            .json(
                &serde_json::json!({"k": "tab\there", "n": 1})
                    .as_object()
                    .unwrap()
                    .clone(),
            )
            .unwrap();
        assert_eq!(
            String::from_utf8(copy.buf).unwrap(),
            "a\\tb\\\\c\\nd\t\\N\t42\nx\u{FFFD}y\t2022-05-01T23:29:32.918828Z\n{\"k\":\"tab\\\\there\",\"n\":1}"
        );
    }

    #[test]
    fn nul_is_replaced_for_postgres() {
        assert_eq!(pg_text("a\0b"), "a\u{FFFD}b");
        assert!(matches!(pg_text("plain"), std::borrow::Cow::Borrowed(_)));
    }
}
