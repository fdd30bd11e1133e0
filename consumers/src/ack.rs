//! Stage 5, ack: acknowledge every message of a batch whose write committed.

use async_nats::jetstream::{message::Acker, AckKind};

/// Acknowledges every message. A lost ack only causes a redelivery, which the
/// idempotent writes absorb, so failures are counted, not retried.
pub async fn ack_all(ackers: &[Acker]) -> usize {
    let mut failed = 0;
    for acker in ackers {
        if let Err(e) = acker.ack().await {
            failed += 1;
            tracing::debug!(error = %e, "ack failed; the message will be redelivered");
        }
    }
    if failed > 0 {
        tracing::warn!(failed, "acks failed; those messages will be redelivered");
    }
    failed
}

/// Tells JetStream the batch is still being worked on (extends the ack wait), so
/// a batch waiting out a database outage is not redelivered meanwhile.
pub async fn in_progress(ackers: &[Acker]) {
    for acker in ackers {
        let _ = acker.ack_with(AckKind::Progress).await;
    }
}
