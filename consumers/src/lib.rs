//! JetStream ingest for Palisade: the streams, one durable pull consumer per
//! projection, and the stage chain that turns messages into committed rows.
//!
//! ```text
//! source ──► batch ──► decode ──► write ──► ack
//! (durable    (≤256 msgs  (blocking   (one PG      (only after
//!  pull)       or 500 ms)  pool; bad   transaction,  commit; dead
//!                          → DLQ)      retried)      letters too)
//! ```
//!
//! See `consumers/README.md` for the chain drawn with its queues and guarantees.
//! Every message is acknowledged only after the transaction holding its rows has
//! committed; writes are keyed by stream position, so redeliveries and replays
//! never duplicate a row.

pub mod ack;
pub mod batch;
pub mod config;
pub mod correlation;
pub mod decode;
pub mod dlq;
pub mod metrics;
pub mod pipeline;
pub mod projection;
pub mod replay;
pub mod search;
pub mod source;
pub mod streams;
pub mod vectors;
pub mod write;

pub use config::{IngestConfig, Namespace};
pub use metrics::IngestMetrics;
pub use pipeline::{run_projection, Pipeline};
pub use projection::Projection;

/// Errors of the ingest layer that stop a projection or start-up.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The NATS server is too old or lacks JetStream.
    #[error("{0}")]
    UnsupportedServer(String),
    /// A JetStream API call failed.
    #[error("jetstream {action} failed: {reason}")]
    JetStream {
        /// What was being done.
        action: String,
        /// The client's error text.
        reason: String,
    },
    /// The store failed permanently outside any batch (e.g. while truncating for a replay).
    #[error(transparent)]
    Store(#[from] palisade_core::store::StoreError),
    /// The search index failed (disk, lock, corrupt payload).
    #[error(transparent)]
    Search(#[from] palisade_core::search::SearchError),
}

impl IngestError {
    pub(crate) fn jetstream(action: impl Into<String>, err: impl std::fmt::Display) -> Self {
        IngestError::JetStream {
            action: action.into(),
            reason: err.to_string(),
        }
    }
}
