//! The vectors projection's extra stage, embed: between decode and write, pick
//! the events worth embedding (the selective-vectorisation policy), make each
//! one's embedding text and embed them in one call off the async executor.
//!
//! ```text
//! source ──► batch ──► decode ──► embed ──► write ──► ack
//!                                 (policy,   (event_vectors +
//!                                  MiniLM)    offsets, one tx)
//! ```
//!
//! The projection reads the same subjects as the events projection with its own
//! durable consumer (`palisade-vectors`), so embedding never slows the events
//! table down, and `palisade replay vectors` rebuilds it alone.

use palisade_core::model::{Decoded, Event};
use palisade_core::store::{row_id, Batch};
use palisade_core::vectors::{EventVector, Provenance};
use palisade_embeddings::policy::{self, EventView, VectorPolicy};
use palisade_embeddings::{text, EmbedError, Embedder};

/// Embeds the events of a batch that the policy selects.
#[derive(Debug, Clone)]
pub struct VectorStage {
    embedder: Embedder,
    policy: VectorPolicy,
    provenance: Provenance,
}

/// What the stage made of one batch.
#[derive(Debug, Default)]
pub struct Embedded {
    /// One per selected event.
    pub vectors: Vec<EventVector>,
    /// Events the policy left out.
    pub skipped: usize,
}

impl VectorStage {
    /// A stage embedding with `embedder` what `policy` selects.
    pub fn new(embedder: Embedder, policy: VectorPolicy) -> Self {
        let provenance = Provenance {
            model: embedder.model_id(),
            text_version: i16::try_from(text::TEXT_VERSION).unwrap_or(i16::MAX),
        };
        VectorStage {
            embedder,
            policy,
            provenance,
        }
    }

    /// Which model and text version the vectors come from.
    pub fn provenance(&self) -> &Provenance {
        &self.provenance
    }

    /// The embedder (the query side embeds with the same one).
    pub fn embedder(&self) -> &Embedder {
        &self.embedder
    }

    /// The vectors of `batch`'s selected events, in batch order.
    pub async fn embed(&self, batch: &Batch) -> Result<Embedded, EmbedError> {
        let mut keys = Vec::new();
        let mut texts = Vec::new();
        let mut skipped = 0;
        for (position, decoded) in &batch.records {
            let Decoded::Events(events) = decoded else {
                continue;
            };
            for (index, event) in events.iter().enumerate() {
                let view = view(event);
                if policy::decide(&self.policy, &view).embed {
                    keys.push((row_id(&position.stream, position.seq, index), event.ts));
                    texts.push(text::embedding_text(&view));
                } else {
                    skipped += 1;
                }
            }
        }
        if texts.is_empty() {
            return Ok(Embedded {
                vectors: Vec::new(),
                skipped,
            });
        }
        let embedder = self.embedder.clone();
        let embeddings = tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            embedder.embed_batch(&refs)
        })
        .await
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()))?;
        let vectors = keys
            .into_iter()
            .zip(embeddings)
            .map(|((id, ts), embedding)| EventVector { id, ts, embedding })
            .collect();
        Ok(Embedded { vectors, skipped })
    }
}

/// The policy's and text function's view of an event.
pub fn view(event: &Event) -> EventView<'_> {
    EventView {
        kind: event.kind.as_str(),
        source: &event.source,
        severity_level: u8::try_from(event.severity.level()).unwrap_or(0),
        rule: event.rule.as_deref(),
        message: &event.message,
        attributes: &event.attributes,
    }
}
