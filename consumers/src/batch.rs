//! Stage 2, batch: at most `batch_max_messages` deliveries, or whatever arrived
//! within `batch_max_wait`.

use futures::Stream;
use tokio_stream::StreamExt;

use crate::{source::Delivery, IngestConfig};

/// Groups deliveries into batches by size or time, whichever comes first.
pub fn batches(
    deliveries: impl Stream<Item = Delivery>,
    config: &IngestConfig,
) -> impl Stream<Item = Vec<Delivery>> {
    deliveries.chunks_timeout(config.batch_max_messages.max(1), config.batch_max_wait)
}
