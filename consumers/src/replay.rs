//! `palisade replay <projection>`: empty the projection's tables and rebuild them
//! from the streams through the same decode and write stages.

use std::sync::atomic::{AtomicU64, Ordering};

use async_nats::jetstream::consumer::PullConsumer;
use futures::StreamExt;

use crate::{pipeline, source, IngestError, Pipeline, Projection};

/// What a replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Messages read back from the streams.
    pub messages: u64,
}

/// Rebuilds `projection`. `progress(done, total)` is called after every batch.
/// Messages published while the replay runs are left to the live consumer.
pub async fn replay(
    pipeline: &Pipeline,
    projection: Projection,
    progress: impl Fn(u64, u64),
) -> Result<ReplayReport, IngestError> {
    truncate(pipeline, projection).await?;
    let writer = pipeline.writer(projection, false);
    let done = AtomicU64::new(0);
    let (consumers, total) = ephemeral_consumers(pipeline, projection).await?;
    progress(0, total);
    for consumer in &consumers {
        let pending = consumer.cached_info().num_pending;
        if pending == 0 {
            continue;
        }
        let deliveries = source::deliveries(consumer, &pipeline.config).await?;
        let limit = usize::try_from(pending).unwrap_or(usize::MAX);
        pipeline::run_chain(deliveries.take(limit), &writer, |n| {
            let now = done.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
            progress(now, total);
        })
        .await;
        let stream = consumer.cached_info().stream_name.clone();
        let name = consumer.cached_info().name.clone();
        if let Ok(stream) = pipeline.js.get_stream(&stream).await {
            let _ = stream.delete_consumer(&name).await;
        }
    }
    Ok(ReplayReport {
        messages: done.load(Ordering::Relaxed),
    })
}

/// An ephemeral consumer from the first message on each stream `projection` reads,
/// and how many messages they hold in all.
pub(crate) async fn ephemeral_consumers(
    pipeline: &Pipeline,
    projection: Projection,
) -> Result<(Vec<PullConsumer>, u64), IngestError> {
    let mut consumers = Vec::new();
    let mut total = 0;
    for binding in projection.bindings() {
        let mut consumer =
            source::open_consumer(&pipeline.js, projection, binding, &pipeline.config, false)
                .await?;
        let info = consumer
            .info()
            .await
            .map_err(|e| IngestError::jetstream("consumer info", e))?;
        total += info.num_pending;
        consumers.push(consumer);
    }
    Ok((consumers, total))
}

async fn truncate(pipeline: &Pipeline, projection: Projection) -> Result<(), IngestError> {
    let pool = pipeline.store.pool();
    let db = |e: sqlx::Error| IngestError::Store(e.into());
    let mut tx = pool.begin().await.map_err(db)?;
    sqlx::query(&format!("TRUNCATE {}", projection.tables().join(", ")))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    for table in ["dead_letters", "projection_offsets"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE projection = $1"))
            .bind(projection.name())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
    }
    tx.commit().await.map_err(db)?;
    Ok(())
}
