//! The search projection: every event into this node's tantivy index.
//!
//! ```text
//!  PALISADE_SECURITY ─┐ durable palisade-search-<node>, recreated at start from
//!  PALISADE_LOGS ─────┤ the index's checkpoint (last applied seq per stream + 1)
//!                     ▼
//!        source ──► batch ──► decode ──► add (blocking pool) ──► commit ≤ 1/s ──► ack
//!                                        skips seq ≤ checkpoint   (payload =     every message
//!                                                                  checkpoint)    since the last
//!                                                                                 commit
//! ```
//!
//! Differences from the PostgreSQL projections, and why:
//! - **One index per node**, so the durable consumer is per node
//!   (`palisade-search-<node>`), not shared: two nodes each index every event.
//! - **The index is the source of truth for its position.** At every (re)start the
//!   projection rolls the writer back to its last commit, deletes its durable consumer
//!   and creates it again to deliver from the checkpoint's sequence + 1. Redeliveries of
//!   messages in flight before a crash therefore never arrive out of order after newer
//!   ones, so "skip what the checkpoint holds" is exact: nothing is indexed twice,
//!   nothing is skipped that the index lacks.
//! - **Commits are rare** (tantivy makes a segment per commit): documents are added
//!   batch by batch, committed at most every `commit_interval`, and only then are the
//!   messages of every batch since the previous commit acknowledged. Messages that wait
//!   longer than a third of the ack wait get `+WPI` progress acks.
//! - **No dead letters of its own.** The events projection reads the same subjects and
//!   already publishes undecodable messages to `dlq.<subject>` and records them; the
//!   search projection moves its checkpoint over them and acknowledges them after the
//!   next commit, so one bad message gives one dead letter, not two.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, message::Acker};
use futures::{Stream, StreamExt};
use palisade_core::search::{Checkpoint, SearchError, SearchIndex};
use tokio_util::sync::CancellationToken;

use crate::projection::Binding;
use crate::source::{self, Delivery};
use crate::{ack, batch, decode, IngestError, IngestMetrics, Pipeline, Projection};

/// Name of the projection in metrics and logs.
pub const NAME: &str = "search";

/// Fewest acknowledgements a search consumer may leave pending: everything that
/// arrives between two commits waits for its ack.
const MIN_ACK_PENDING: usize = 65_536;

/// Settings of the search projection.
#[derive(Debug, Clone)]
pub struct SearchConfig {
    /// This node's name: its durable consumers are `palisade-search-<node>`.
    pub node: String,
    /// Shortest time between two commits (default 1 s).
    pub commit_interval: Duration,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            node: "local".into(),
            commit_interval: Duration::from_secs(1),
        }
    }
}

impl SearchConfig {
    /// The durable consumer name of this node's search projection (the node name
    /// with every character NATS refuses in a name replaced by `-`).
    pub fn durable_name(&self) -> String {
        let node: String = self
            .node
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        format!("palisade-search-{node}")
    }
}

/// The streams and subjects the search projection reads: those of the events projection.
pub fn bindings() -> &'static [Binding] {
    Projection::Events.bindings()
}

/// What a replay of the search index did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SearchReplayReport {
    /// Messages read back from the streams.
    pub messages: u64,
    /// Documents in the index afterwards.
    pub documents: u64,
}

/// Runs the search projection until `shutdown` is cancelled; what was added is
/// committed and acknowledged before it returns.
pub async fn run_search(
    pipeline: Arc<Pipeline>,
    index: Arc<SearchIndex>,
    config: SearchConfig,
    shutdown: CancellationToken,
) {
    pipeline.metrics.init_projection(NAME);
    let mut pause = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        match consume(&pipeline, &index, &config, &shutdown).await {
            Ok(()) => pause = Duration::from_millis(200),
            Err(err) => {
                tracing::warn!(projection = NAME, error = %err, "search projection stopped; resuming from the last commit");
                pipeline
                    .metrics
                    .write_retries
                    .get_or_create(&IngestMetrics::labels(NAME))
                    .inc();
                pause = (pause * 2).min(pipeline.config.max_backoff);
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
    index: &Arc<SearchIndex>,
    config: &SearchConfig,
    shutdown: &CancellationToken,
) -> Result<(), IngestError> {
    let checkpoint = blocking(index, |index| index.rollback()).await?;
    // Cancelled on shutdown, and when any stream's deliveries end (consumer deleted,
    // pull refused): then the whole chain stops, commits, and resumes from the checkpoint.
    let stop = shutdown.child_token();
    let mut streams = Vec::new();
    for binding in bindings() {
        let consumer =
            recreate_durable(&pipeline.js, binding, pipeline, config, &checkpoint).await?;
        let info = consumer.cached_info();
        tracing::info!(projection = NAME, stream = %info.stream_name, consumer = %info.name,
            resume_after = ?checkpoint.get(&info.stream_name), "consuming");
        crate::pipeline::watch_lag(pipeline, NAME, consumer.clone(), stop.clone());
        let ended = stop.clone();
        let deliveries = source::deliveries(&consumer, &pipeline.config).await?;
        streams.push(
            deliveries
                .chain(
                    futures::stream::once(async move { ended.cancel() })
                        .filter_map(|()| std::future::ready(None::<Delivery>)),
                )
                .boxed(),
        );
    }
    let deliveries =
        futures::stream::select_all(streams).take_until(stop.clone().cancelled_owned());
    let result =
        index_deliveries(pipeline, index, config.commit_interval, deliveries, |_| {}).await;
    stop.cancel();
    result.map(|_| ())
}

/// The consumer settings of the search projection on `binding`'s stream: the
/// events projection's filters, delivering from just after `checkpoint`.
pub fn consumer_config(
    binding: &Binding,
    pipeline: &Pipeline,
    config: &SearchConfig,
    checkpoint: &Checkpoint,
) -> consumer::pull::Config {
    let stream = binding.family.name(&pipeline.config.namespace);
    let mut c = source::consumer_config(Projection::Events, binding, &pipeline.config, true);
    c.durable_name = Some(config.durable_name());
    c.description = Some(format!(
        "palisade search projection of node {}",
        config.node
    ));
    c.deliver_policy = match checkpoint.get(&stream) {
        Some(seq) => consumer::DeliverPolicy::ByStartSequence {
            start_sequence: seq + 1,
        },
        None => consumer::DeliverPolicy::All,
    };
    c.max_ack_pending = c.max_ack_pending.max(MIN_ACK_PENDING as i64);
    // The durable holds no state the index lacks; one left by a departed node goes away.
    c.inactive_threshold = Duration::from_secs(24 * 3600);
    c
}

/// Deletes this node's durable consumer on `binding`'s stream and creates it
/// again, delivering from just after the checkpoint.
async fn recreate_durable(
    js: &jetstream::Context,
    binding: &Binding,
    pipeline: &Pipeline,
    config: &SearchConfig,
    checkpoint: &Checkpoint,
) -> Result<consumer::PullConsumer, IngestError> {
    let stream_name = binding.family.name(&pipeline.config.namespace);
    let stream = js
        .get_stream(&stream_name)
        .await
        .map_err(|e| IngestError::jetstream(format!("get stream {stream_name}"), e))?;
    let durable = config.durable_name();
    // Absent the first time; any other failure shows up as a refused create below.
    let _ = stream.delete_consumer(&durable).await;
    stream
        .create_consumer(consumer_config(binding, pipeline, config, checkpoint))
        .await
        .map_err(|e| {
            IngestError::jetstream(format!("create consumer {durable} on {stream_name}"), e)
        })
}

/// Runs `f` on the blocking pool.
async fn blocking<T: Send + 'static>(
    index: &Arc<SearchIndex>,
    f: impl FnOnce(&SearchIndex) -> Result<T, SearchError> + Send + 'static,
) -> Result<T, IngestError> {
    let index = Arc::clone(index);
    tokio::task::spawn_blocking(move || f(&index))
        .await
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()))
        .map_err(IngestError::from)
}

/// Acknowledgements waiting for the next commit.
#[derive(Default)]
struct Pending {
    ackers: Vec<Acker>,
    since: Option<Instant>,
    last_progress: Option<Instant>,
}

/// Indexes `deliveries` until the stream ends: batch, decode, add on the blocking
/// pool, commit at most every `commit_interval`, then ack. Commits and acks what
/// is pending when the stream ends. `on_batch(messages)` is told of every batch
/// added. Returns the number of messages read.
pub async fn index_deliveries(
    pipeline: &Pipeline,
    index: &Arc<SearchIndex>,
    commit_interval: Duration,
    deliveries: impl Stream<Item = Delivery>,
    on_batch: impl Fn(u64),
) -> Result<u64, IngestError> {
    let labels = IngestMetrics::labels(NAME);
    let metrics = &pipeline.metrics;
    let namespace = pipeline.config.namespace.clone();
    let batches = batch::batches(deliveries, &pipeline.config)
        .map(|deliveries| {
            metrics
                .messages_in
                .get_or_create(&labels)
                .inc_by(deliveries.len() as u64);
            decode::decode_off_executor(namespace.clone(), deliveries)
        })
        .buffered(2);
    let mut batches = std::pin::pin!(batches);
    let progress_after = pipeline.config.ack_wait / 3;
    let mut ticker = tokio::time::interval(
        commit_interval
            .min(progress_after)
            .max(Duration::from_millis(10)),
    );
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending = Pending::default();
    let mut last_commit = Instant::now();
    let mut messages = 0u64;
    loop {
        tokio::select! {
            next = batches.next() => {
                let Some(decoded) = next else {
                    commit_and_ack(pipeline, index, &mut pending).await?;
                    return Ok(messages);
                };
                let count = decoded.ackers.len() as u64;
                let batch = decoded.batch;
                let summary = blocking(index, move |index| index.add_batch(&batch)).await?;
                metrics.records.get_or_create(&labels).inc_by(summary.documents);
                metrics.rows_written.get_or_create(&labels).inc_by(summary.documents);
                pending.since.get_or_insert_with(Instant::now);
                pending.ackers.extend(decoded.ackers);
                messages += count;
                on_batch(count);
                if last_commit.elapsed() >= commit_interval {
                    commit_and_ack(pipeline, index, &mut pending).await?;
                    last_commit = Instant::now();
                }
            }
            _ = ticker.tick() => {
                if pending.ackers.is_empty() {
                    continue;
                }
                if last_commit.elapsed() >= commit_interval {
                    commit_and_ack(pipeline, index, &mut pending).await?;
                    last_commit = Instant::now();
                } else if pending.last_progress.or(pending.since).is_some_and(|t| t.elapsed() >= progress_after) {
                    ack::in_progress(&pending.ackers).await;
                    pending.last_progress = Some(Instant::now());
                }
            }
        }
    }
}

/// Commits the index, then acknowledges every message pending.
async fn commit_and_ack(
    pipeline: &Pipeline,
    index: &Arc<SearchIndex>,
    pending: &mut Pending,
) -> Result<(), IngestError> {
    if pending.ackers.is_empty() {
        return Ok(());
    }
    blocking(index, |index| index.commit()).await?;
    ack::ack_all(&pending.ackers).await;
    if let Some(since) = pending.since {
        pipeline
            .metrics
            .batch_seconds
            .get_or_create(&IngestMetrics::labels(NAME))
            .observe(since.elapsed().as_secs_f64());
    }
    *pending = Pending::default();
    Ok(())
}

/// Rebuilds the search index from the streams: `index` must be empty (see
/// [`SearchIndex::recreate`]). Reads every message of the bound streams through
/// ephemeral consumers, commits at most every `commit_interval` and at the end.
/// `progress(done, total)` is called after every batch.
pub async fn replay_search(
    pipeline: &Pipeline,
    index: &Arc<SearchIndex>,
    commit_interval: Duration,
    progress: impl Fn(u64, u64),
) -> Result<SearchReplayReport, IngestError> {
    // The search index reads what the events projection reads.
    let (consumers, total) =
        crate::replay::ephemeral_consumers(pipeline, Projection::Events).await?;
    progress(0, total);
    let done = std::sync::atomic::AtomicU64::new(0);
    for consumer in &consumers {
        let pending = consumer.cached_info().num_pending;
        if pending > 0 {
            let deliveries = source::deliveries(consumer, &pipeline.config).await?;
            let limit = usize::try_from(pending).unwrap_or(usize::MAX);
            index_deliveries(
                pipeline,
                index,
                commit_interval,
                deliveries.take(limit),
                |n| {
                    let now = done.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
                    progress(now, total);
                },
            )
            .await?;
        }
        let info = consumer.cached_info();
        if let Ok(stream) = pipeline.js.get_stream(&info.stream_name).await {
            let _ = stream.delete_consumer(&info.name).await;
        }
    }
    blocking(index, |index| index.commit()).await?;
    Ok(SearchReplayReport {
        messages: done.load(std::sync::atomic::Ordering::Relaxed),
        documents: index.doc_count(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durable_names_are_per_node_and_nats_safe() {
        let config = SearchConfig {
            node: "web-01.prod eu".into(),
            ..SearchConfig::default()
        };
        assert_eq!(config.durable_name(), "palisade-search-web-01-prod-eu");
        assert_ne!(
            config.durable_name(),
            Projection::Events.durable_name(),
            "never the shared events durable"
        );
    }

    #[test]
    fn search_reads_what_the_events_projection_reads() {
        let events: Vec<_> = Projection::Events
            .bindings()
            .iter()
            .map(|b| (b.family, b.filters))
            .collect();
        let search: Vec<_> = bindings().iter().map(|b| (b.family, b.filters)).collect();
        assert_eq!(events, search);
    }
}
