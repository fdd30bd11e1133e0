//! The stage chain wired together: source → batch → decode → write → ack, for
//! each stream a projection reads, until shutdown.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use futures::{Stream, StreamExt};
use palisade_core::graph::Topology;
use palisade_core::store::Store;
use tokio_util::sync::CancellationToken;

use crate::correlation::Correlator;
use crate::metrics::ConsumerLabels;
use crate::projection::Binding;
use crate::vectors::VectorStage;
use crate::write::Writer;
use crate::{ack, batch, decode, source, IngestConfig, IngestError, IngestMetrics, Projection};

/// What the projections share: the JetStream context, the store, settings, metrics.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// JetStream context.
    pub js: jetstream::Context,
    /// PostgreSQL store.
    pub store: Arc<Store>,
    /// Settings.
    pub config: IngestConfig,
    /// Metrics.
    pub metrics: Arc<IngestMetrics>,
    /// The vectors projection's embed stage; `None` when semantic hunting is off.
    pub vectors: Option<Arc<VectorStage>>,
    /// The connection graph the connections projection keeps up to date.
    pub topology: Arc<Topology>,
    /// The running-vs-dormant pass after process and scan batches.
    pub correlator: Arc<Correlator>,
}

impl Pipeline {
    /// A writer for `projection`; `publish_dead_letters` is false for a replay,
    /// which also runs no correlation passes.
    pub fn writer(&self, projection: Projection, publish_dead_letters: bool) -> Writer {
        self.metrics.init_projection(projection.name());
        let vectors = projection == Projection::Vectors;
        Writer {
            js: self.js.clone(),
            store: self.store.clone(),
            projection,
            config: self.config.clone(),
            metrics: self.metrics.clone(),
            publish_dead_letters: publish_dead_letters && !vectors,
            vectors: if vectors { self.vectors.clone() } else { None },
            topology: (projection == Projection::Connections).then(|| self.topology.clone()),
            // Not during a replay: replayed history would flip incidents back and
            // forth and announce old P0s again; the next full pass reconciles.
            correlator: (publish_dead_letters
                && matches!(projection, Projection::Processes | Projection::Vulns))
            .then(|| self.correlator.clone()),
        }
    }

    /// The projections this pipeline runs: all of them, less the vectors
    /// projection when semantic hunting is off.
    pub fn projections(&self) -> Vec<Projection> {
        Projection::ALL
            .into_iter()
            .filter(|p| *p != Projection::Vectors || self.vectors.is_some())
            .collect()
    }
}

/// Runs `projection` on every stream it reads until `shutdown` is cancelled;
/// batches in flight are finished (written and acked) before it returns.
pub async fn run_projection(
    pipeline: Arc<Pipeline>,
    projection: Projection,
    shutdown: CancellationToken,
) {
    let tasks = projection
        .bindings()
        .iter()
        .map(|binding| run_binding(pipeline.clone(), projection, binding, shutdown.clone()));
    futures::future::join_all(tasks).await;
}

async fn run_binding(
    pipeline: Arc<Pipeline>,
    projection: Projection,
    binding: &'static Binding,
    shutdown: CancellationToken,
) {
    let mut pause = Duration::from_millis(200);
    let writer = pipeline.writer(projection, true);
    while !shutdown.is_cancelled() {
        match consume(&pipeline, projection, binding, &writer, &shutdown).await {
            Ok(()) => pause = Duration::from_millis(200),
            Err(err) => {
                tracing::warn!(projection = projection.name(), error = %err, "consumer stopped; reopening");
                pause = (pause * 2).min(Duration::from_secs(10));
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

async fn consume(
    pipeline: &Pipeline,
    projection: Projection,
    binding: &Binding,
    writer: &Writer,
    shutdown: &CancellationToken,
) -> Result<(), IngestError> {
    let consumer =
        source::open_consumer(&pipeline.js, projection, binding, &pipeline.config, true).await?;
    tracing::info!(projection = projection.name(), stream = %consumer.cached_info().stream_name, "consuming");
    let lag = watch_lag(
        pipeline,
        projection.name(),
        consumer.clone(),
        shutdown.child_token(),
    );
    let deliveries = source::deliveries(&consumer, &pipeline.config).await?;
    run_chain(
        deliveries.take_until(shutdown.clone().cancelled_owned()),
        writer,
        |_| {},
    )
    .await;
    lag.cancel();
    Ok(())
}

/// Runs the chain over `deliveries` until the stream ends. `on_batch` is told the
/// number of messages of every batch once it has been written and acked.
pub async fn run_chain(
    deliveries: impl Stream<Item = source::Delivery>,
    writer: &Writer,
    on_batch: impl Fn(usize),
) {
    let config = &writer.config;
    let labels = IngestMetrics::labels(writer.projection.name());
    let slots: Mutex<Vec<i32>> = Mutex::new((0..config.writers.max(1) as i32).rev().collect());
    batch::batches(deliveries, config)
        .map(|deliveries| {
            writer
                .metrics
                .messages_in
                .get_or_create(&labels)
                .inc_by(deliveries.len() as u64);
            decode::decode_off_executor(config.namespace.clone(), deliveries)
        })
        .buffered(2)
        .map(|mut decoded| {
            let slots = &slots;
            async move {
                let slot = take_slot(slots);
                writer.write(slot, &mut decoded).await;
                ack::ack_all(&decoded.ackers).await;
                give_slot(slots, slot);
                decoded.ackers.len()
            }
        })
        .buffer_unordered(config.writers.max(1))
        .for_each(|messages| {
            on_batch(messages);
            std::future::ready(())
        })
        .await;
}

fn take_slot(slots: &Mutex<Vec<i32>>) -> i32 {
    slots
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .pop()
        .unwrap_or(0)
}

fn give_slot(slots: &Mutex<Vec<i32>>, slot: i32) {
    slots
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(slot);
}

/// Samples the consumer's lag (pending + unacknowledged) every 5 s into the metrics.
pub(crate) fn watch_lag(
    pipeline: &Pipeline,
    projection: &'static str,
    mut consumer: jetstream::consumer::PullConsumer,
    stop: CancellationToken,
) -> CancellationToken {
    let metrics = pipeline.metrics.clone();
    let token = stop.clone();
    tokio::spawn(async move {
        loop {
            if let Ok(info) = consumer.info().await {
                let labels = ConsumerLabels {
                    projection: projection.to_owned(),
                    stream: info.stream_name.clone(),
                };
                let lag = info.num_pending as i64 + info.num_ack_pending as i64;
                metrics.consumer_lag.get_or_create(&labels).set(lag);
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    });
    token
}
