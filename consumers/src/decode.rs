//! Stage 3, decode: payloads into records, on the blocking pool (JSON parsing is
//! CPU work). A payload no decoder accepts becomes a dead letter with the reason.

use async_nats::jetstream::message::Acker;
use palisade_core::store::{Batch, DeadLetter};

use crate::{source::Delivery, Namespace};

/// A batch ready to write, with the ack handles of all its messages.
pub struct DecodedBatch {
    /// Records and dead letters.
    pub batch: Batch,
    /// One per message, dead letters included.
    pub ackers: Vec<Acker>,
    /// The payload of each record (same order as `batch.records`), kept in case a
    /// record must be dead-lettered by the writer.
    pub payloads: Vec<bytes::Bytes>,
}

impl std::fmt::Debug for DecodedBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodedBatch")
            .field("messages", &self.batch.messages())
            .finish()
    }
}

/// Decodes every delivery of a batch.
pub fn decode_batch(namespace: &Namespace, deliveries: Vec<Delivery>) -> DecodedBatch {
    let mut batch = Batch::default();
    let mut ackers = Vec::with_capacity(deliveries.len());
    let mut payloads = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        let subject = namespace.strip(&delivery.position.subject);
        match palisade_core::decode::decode(subject, &delivery.payload) {
            Ok(decoded) => {
                batch.records.push((delivery.position, decoded));
                payloads.push(delivery.payload);
            }
            Err(err) => batch.dead_letters.push(DeadLetter {
                position: delivery.position,
                reason: err.to_string(),
                payload: delivery.payload.to_vec(),
            }),
        }
        ackers.push(delivery.acker);
    }
    DecodedBatch {
        batch,
        ackers,
        payloads,
    }
}

/// [`decode_batch`] on tokio's blocking pool.
pub async fn decode_off_executor(namespace: Namespace, deliveries: Vec<Delivery>) -> DecodedBatch {
    tokio::task::spawn_blocking(move || decode_batch(&namespace, deliveries))
        .await
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()))
}
