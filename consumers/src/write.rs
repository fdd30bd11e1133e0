//! Stage 4, write: one transaction per batch, retried with backoff while the
//! fault is transient. A batch that fails permanently is split into single
//! messages so only the bad one becomes a dead letter.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use palisade_core::graph::Topology;
use palisade_core::model::{Connection, Decoded};
use palisade_core::store::{row_id, Batch, DeadLetter, Store, StoreError, WriteSummary};
use palisade_core::vectors::BatchVectors;
use tracing::instrument;

use crate::correlation::{self, Correlator};
use crate::vectors::VectorStage;
use crate::{ack, decode::DecodedBatch, dlq, IngestConfig, IngestMetrics, Projection};

/// Writes batches of one projection.
#[derive(Debug, Clone)]
pub struct Writer {
    /// JetStream context, for dead letters.
    pub js: jetstream::Context,
    /// The store.
    pub store: Arc<Store>,
    /// The projection written.
    pub projection: Projection,
    /// Settings.
    pub config: IngestConfig,
    /// Metrics.
    pub metrics: Arc<IngestMetrics>,
    /// False during a replay (its dead letters were published the first time) and
    /// for the vectors projection (the events projection publishes them).
    pub publish_dead_letters: bool,
    /// The vectors projection's embed stage: when set, batches are embedded and
    /// written to `embedding_texts` and `event_vectors` instead of the projection
    /// tables.
    pub vectors: Option<Arc<VectorStage>>,
    /// The connection graph, for the connections projection: its batches are
    /// added once written.
    pub topology: Option<Arc<Topology>>,
    /// The correlation stage, for the processes and vulns projections: run for
    /// the hosts of each written batch.
    pub correlator: Option<Arc<Correlator>>,
}

/// Exponential backoff from 100 ms to a ceiling.
#[derive(Debug)]
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(max: Duration) -> Self {
        Backoff {
            next: Duration::from_millis(100),
            max,
        }
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(self.max);
    }
}

impl Writer {
    /// Writes `decoded` (dead letters first, then the records) and returns once
    /// everything is durable. Never gives up on a transient fault; the ack
    /// deadline is extended while it waits.
    #[instrument(skip_all, fields(projection = self.projection.name(), slot = slot, messages = decoded.batch.messages()))]
    pub async fn write(&self, slot: i32, decoded: &mut DecodedBatch) -> WriteSummary {
        let started = Instant::now();
        self.dead_letter(&decoded.batch.dead_letters, &decoded.ackers)
            .await;
        let vectors = match &self.vectors {
            Some(stage) => Some(self.embed_with_retry(stage, decoded).await),
            None => None,
        };
        let vectors = vectors.as_ref();
        // Taken before the write: a batch that fails is written again one message
        // at a time, out of `decoded`.
        let connections: Vec<Connection> = match &self.topology {
            Some(_) => connections(&decoded.batch),
            None => Vec::new(),
        };
        let hosts = match &self.correlator {
            Some(_) => correlation::hosts_of(&decoded.batch),
            None => Vec::new(),
        };

        let summary = match self
            .write_with_retry(slot, &decoded.batch, vectors, &decoded.ackers)
            .await
        {
            Ok(summary) => summary,
            Err(err) => self.write_one_by_one(slot, decoded, vectors, &err).await,
        };
        if let Some(topology) = &self.topology {
            topology.observe(connections.iter().map(Into::into));
        }
        if let Some(correlator) = &self.correlator {
            correlator.after_write(&hosts).await;
        }
        let labels = IngestMetrics::labels(self.projection.name());
        self.metrics
            .rows_written
            .get_or_create(&labels)
            .inc_by(summary.rows_inserted);
        self.metrics
            .records
            .get_or_create(&labels)
            .inc_by(summary.records);
        self.metrics
            .batch_seconds
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        summary
    }

    /// Embeds the batch's selected events. The model or the lookup of stored
    /// texts failing is not the messages' fault, so it is retried like a transient
    /// fault, never dropped.
    async fn embed_with_retry(&self, stage: &VectorStage, decoded: &DecodedBatch) -> BatchVectors {
        let mut backoff = Backoff::new(self.config.max_backoff);
        loop {
            match stage.embed(&decoded.batch, &self.store).await {
                Ok(embedded) => {
                    tracing::debug!(
                        events = embedded.vectors.events.len(),
                        embedded = embedded.vectors.texts.len(),
                        reused = embedded.reused,
                        skipped = embedded.skipped,
                        "batch embedded"
                    );
                    return embedded.vectors;
                }
                Err(err) => {
                    tracing::error!(error = %err, "embedding failed; retrying");
                    ack::in_progress(&decoded.ackers).await;
                    backoff.wait().await;
                }
            }
        }
    }

    /// One attempt at the write: the projection's tables, or the batch's vectors.
    async fn write_once(
        &self,
        slot: i32,
        batch: &Batch,
        vectors: Option<&BatchVectors>,
    ) -> Result<WriteSummary, StoreError> {
        let name = self.projection.name();
        match (&self.vectors, vectors) {
            (Some(stage), Some(vectors)) => {
                self.store
                    .write_vectors(
                        name,
                        slot,
                        batch,
                        stage.provenance(),
                        vectors,
                        stage.grouping(),
                    )
                    .await
            }
            _ => self.store.write_batch(name, slot, batch).await,
        }
    }

    /// Retries transient faults forever; returns a permanent error.
    async fn write_with_retry(
        &self,
        slot: i32,
        batch: &Batch,
        vectors: Option<&BatchVectors>,
        ackers: &[async_nats::jetstream::message::Acker],
    ) -> Result<WriteSummary, StoreError> {
        let mut backoff = Backoff::new(self.config.max_backoff);
        let mut last_progress = Instant::now();
        loop {
            match self.write_once(slot, batch, vectors).await {
                Ok(summary) => return Ok(summary),
                Err(err) if err.is_transient() => {
                    tracing::warn!(error = %err, "transient write fault; retrying");
                    self.metrics
                        .write_retries
                        .get_or_create(&IngestMetrics::labels(self.projection.name()))
                        .inc();
                    if last_progress.elapsed() > self.config.ack_wait / 3 {
                        ack::in_progress(ackers).await;
                        last_progress = Instant::now();
                    }
                    backoff.wait().await;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// After a permanent failure: each message alone; the ones that still fail are
    /// dead-lettered with the database's reason. The dead letters (the decoder's
    /// and these) are then recorded together.
    async fn write_one_by_one(
        &self,
        slot: i32,
        decoded: &mut DecodedBatch,
        vectors: Option<&BatchVectors>,
        first: &StoreError,
    ) -> WriteSummary {
        tracing::warn!(error = %first, "batch failed permanently; writing its messages one by one");
        let mut total = WriteSummary::default();
        let mut unstorable = Vec::new();
        let records = std::mem::take(&mut decoded.batch.records);
        for (index, record) in records.into_iter().enumerate() {
            // The vectors of this message's events (ids are stream/seq/index).
            let own: Option<BatchVectors> = vectors.map(|all| {
                let (position, decoded) = &record;
                let ids: Vec<_> = (0..decoded.len())
                    .map(|i| row_id(&position.stream, position.seq, i))
                    .collect();
                all.for_events(&ids)
            });
            let single = Batch {
                records: vec![record],
                dead_letters: Vec::new(),
            };
            match self
                .write_with_retry(slot, &single, own.as_ref(), &decoded.ackers)
                .await
            {
                Ok(s) => {
                    total.rows_inserted += s.rows_inserted;
                    total.records += s.records;
                }
                Err(err) => {
                    let Some((position, _)) = single.records.into_iter().next() else {
                        continue;
                    };
                    tracing::error!(error = %err, stream = %position.stream, seq = position.seq,
                        "message cannot be stored; dead-lettering it");
                    unstorable.push(DeadLetter {
                        position,
                        reason: format!("write failed: {err}"),
                        payload: decoded
                            .payloads
                            .get(index)
                            .map(|p| p.to_vec())
                            .unwrap_or_default(),
                    });
                }
            }
        }
        self.dead_letter(&unstorable, &decoded.ackers).await;
        decoded.batch.dead_letters.append(&mut unstorable);
        let dead_only = Batch {
            records: Vec::new(),
            dead_letters: std::mem::take(&mut decoded.batch.dead_letters),
        };
        // A batch of dead-letter rows and offsets can only fail transiently.
        let none = BatchVectors::default();
        let no_vectors = vectors.map(|_| &none);
        if let Err(err) = self
            .write_with_retry(slot, &dead_only, no_vectors, &decoded.ackers)
            .await
        {
            tracing::error!(error = %err, "dead letters could not be recorded");
        }
        total
    }

    /// Publishes dead letters to their DLQ subjects, retrying until JetStream has them.
    async fn dead_letter(
        &self,
        dead: &[DeadLetter],
        ackers: &[async_nats::jetstream::message::Acker],
    ) {
        if dead.is_empty() {
            return;
        }
        self.metrics
            .dead_letters
            .get_or_create(&IngestMetrics::labels(self.projection.name()))
            .inc_by(dead.len() as u64);
        if !self.publish_dead_letters {
            return;
        }
        tracing::warn!(count = dead.len(), first_reason = %dead[0].reason, "dead-lettering messages");
        for letter in dead {
            tracing::debug!(subject = %letter.position.subject, seq = letter.position.seq,
                reason = %letter.reason, "dead-lettering message");
            let mut backoff = Backoff::new(self.config.max_backoff);
            while let Err(e) = dlq::publish(&self.js, &self.config.namespace, letter).await {
                tracing::warn!(error = %e, "dead-letter publish failed; retrying");
                ack::in_progress(ackers).await;
                backoff.wait().await;
            }
        }
    }
}

/// The connection records of `batch`.
fn connections(batch: &Batch) -> Vec<Connection> {
    batch
        .records
        .iter()
        .filter_map(|(_, decoded)| match decoded {
            Decoded::Connections(records) => Some(records.iter().cloned()),
            _ => None,
        })
        .flatten()
        .collect()
}
