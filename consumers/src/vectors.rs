//! The vectors projection's extra stage, embed: between decode and write, pick
//! the events worth embedding (the selective-vectorisation policy), make each
//! one's embedding text, embed the distinct texts not stored yet in one call
//! off the async executor, and choose each new text's representative (a near copy
//! stays out of the HNSW graph; see `palisade_core::vectors`).
//!
//! ```text
//! source ──► batch ──► decode ──► embed ──────────► write ──► ack
//!                                 (policy, text,     (embedding_texts +
//!                                  known texts?,      event_vectors +
//!                                  MiniLM,            alert groups +
//!                                  representatives)   offsets, one tx)
//! ```
//!
//! The projection reads the same subjects as the events projection with its own
//! durable consumer (`palisade-vectors`), so embedding never slows the events
//! table down, and `palisade replay vectors` rebuilds it alone.

use std::collections::HashSet;

use palisade_core::grouping::GroupingConfig;
use palisade_core::model::{Decoded, Event};
use palisade_core::store::{row_id, Batch, Store, StoreError};
use palisade_core::vectors::{
    BatchVectors, EventLabels, EventText, Provenance, TextKey, TextVector, REPRESENTATIVE_DISTANCE,
};
use palisade_embeddings::policy::{self, EventView, VectorPolicy};
use palisade_embeddings::{text, EmbedError, Embedder};

/// Embeds the events of a batch that the policy selects.
#[derive(Debug, Clone)]
pub struct VectorStage {
    embedder: Embedder,
    policy: VectorPolicy,
    provenance: Provenance,
    grouping: Option<GroupingConfig>,
    representative_distance: f32,
}

/// What the stage made of one batch.
#[derive(Debug, Default)]
pub struct Embedded {
    /// The selected events' text keys and the new texts' vectors.
    pub vectors: BatchVectors,
    /// Events the policy left out.
    pub skipped: usize,
    /// Selected events whose text was stored already or came earlier in the batch.
    pub reused: usize,
}

/// Why a batch could not be embedded; both are the machine's fault, not the
/// messages', and are retried.
#[derive(Debug, thiserror::Error)]
pub enum VectorStageError {
    /// The model failed.
    #[error(transparent)]
    Embed(#[from] EmbedError),
    /// Looking up the texts already stored, or their representatives, failed.
    #[error("looking up stored texts: {0}")]
    Store(#[from] StoreError),
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
            grouping: None,
            representative_distance: REPRESENTATIVE_DISTANCE,
        }
    }

    /// Cosine distance within which a new text joins the clump of a text in the
    /// HNSW graph instead of the graph (default [`REPRESENTATIVE_DISTANCE`]; 0 keeps
    /// every text in the graph).
    pub fn with_representative_distance(mut self, distance: f32) -> Self {
        self.representative_distance = distance;
        self
    }

    /// Also groups the embedded events into attack patterns as they are written.
    pub fn with_grouping(mut self, grouping: GroupingConfig) -> Self {
        self.grouping = Some(grouping);
        self
    }

    /// How embedded events are grouped, if they are.
    pub fn grouping(&self) -> Option<&GroupingConfig> {
        self.grouping.as_ref()
    }

    /// Which model and text version the vectors come from.
    pub fn provenance(&self) -> &Provenance {
        &self.provenance
    }

    /// The embedder (the query side embeds with the same one).
    pub fn embedder(&self) -> &Embedder {
        &self.embedder
    }

    /// The text keys of `batch`'s selected events, in batch order, and the vectors
    /// of their distinct texts that `store` does not hold yet, each with its
    /// representative chosen.
    pub async fn embed(&self, batch: &Batch, store: &Store) -> Result<Embedded, VectorStageError> {
        let mut events = Vec::new();
        let mut texts: Vec<(TextKey, String)> = Vec::new();
        let mut seen = HashSet::new();
        let mut skipped = 0;
        for (position, decoded) in &batch.records {
            let Decoded::Events(batch_events) = decoded else {
                continue;
            };
            for (index, event) in batch_events.iter().enumerate() {
                let view = view(event);
                if !policy::decide(&self.policy, &view).embed {
                    skipped += 1;
                    continue;
                }
                let text = text::embedding_text(&view);
                let key = TextKey::of(&self.provenance, &text);
                if seen.insert(key) {
                    texts.push((key, text));
                }
                events.push(EventText {
                    id: row_id(&position.stream, position.seq, index),
                    ts: event.ts,
                    key,
                    labels: EventLabels {
                        host: event.host.clone(),
                        kind: event.kind.as_str().to_owned(),
                        severity_level: event.severity.level(),
                    },
                });
            }
        }
        let keys: Vec<TextKey> = texts.iter().map(|(key, _)| *key).collect();
        let known = store.known_texts(&keys).await?;
        texts.retain(|(key, _)| !known.contains(key));
        let reused = events.len() - texts.len();
        if texts.is_empty() {
            return Ok(Embedded {
                vectors: BatchVectors {
                    events,
                    texts: Vec::new(),
                },
                skipped,
                reused,
            });
        }
        let embedder = self.embedder.clone();
        let (texts, embeddings) = tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = texts.iter().map(|(_, t)| t.as_str()).collect();
            let embeddings = embedder.embed_batch(&refs);
            (texts, embeddings)
        })
        .await
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()));
        let mut texts = texts
            .into_iter()
            .zip(embeddings?)
            .map(|((key, text), embedding)| TextVector {
                key,
                text,
                embedding,
                representative: None,
            })
            .collect::<Vec<_>>();
        store
            .choose_representatives(&mut texts, self.representative_distance)
            .await?;
        Ok(Embedded {
            vectors: BatchVectors { events, texts },
            skipped,
            reused,
        })
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
