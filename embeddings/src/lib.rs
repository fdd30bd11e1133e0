//! Sentence embeddings for semantic hunting: all-MiniLM-L6-v2 through ONNX Runtime,
//! the selective-vectorisation policy, and the text of an event that gets embedded.
//!
//! - [`Embedder`]: the model's tokenizer and an ONNX Runtime session; text in,
//!   unit-length [`DIMENSIONS`]-wide vectors out, batched by token length.
//! - [`policy`]: which events get a vector ([`policy::decide`]).
//! - [`text`]: what text of an event is embedded ([`text::embedding_text`],
//!   versioned by [`text::TEXT_VERSION`]).
//!
//! The model files come from `scripts/stack.sh model`, which converts the weights to
//! ONNX (fp32 and int8) and prints `PALISADE_MODEL_DIR` and `ORT_DYLIB_PATH`. This
//! crate depends on nothing else of Palisade's.
//!
//! ```no_run
//! use palisade_embeddings::{policy, text, Embedder, EmbedderConfig, EventView};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let embedder = Embedder::load(&EmbedderConfig::from_env()?)?;
//! let attributes = serde_json::Map::new();
//! let event = EventView {
//!     kind: "log",
//!     source: "auth",
//!     severity_level: 0,
//!     rule: None,
//!     message: "Feb 20 08:35:22 node-01 sshd[5774]: Failed password for root from 216.160.83.57",
//!     attributes: &attributes,
//! };
//! if policy::decide(&policy::VectorPolicy::default(), &event).embed {
//!     let line = text::embedding_text(&event); // "sshd: Failed password for root from …"
//!     let vectors = embedder.embed_batch(&[line.as_str()])?;
//!     assert_eq!(vectors[0].len(), palisade_embeddings::DIMENSIONS);
//!     println!("{} v{}", embedder.model_id(), text::TEXT_VERSION);
//! }
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod config;
mod error;
mod model;
pub mod policy;
pub mod text;

pub use config::{
    default_model_dir, default_ort_dylib, palisade_home, EmbedderConfig, ModelVariant,
};
pub use error::EmbedError;
pub use model::{Embedder, Encoded, MAX_TOKENS};
pub use policy::{Decision, EventView, VectorPolicy};

/// Name of the sentence-embedding model Palisade uses.
pub const MODEL_NAME: &str = "all-MiniLM-L6-v2";

/// Dimension of one embedding vector.
pub const DIMENSIONS: usize = 384;

/// Cosine similarity of two vectors (in f64, so the comparison of two nearly equal
/// embeddings is not lost to rounding).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

#[cfg(test)]
mod tests {
    #[test]
    fn minilm_is_384_wide() {
        assert_eq!(super::DIMENSIONS, 384);
    }

    #[test]
    fn the_embedder_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync + Clone>() {}
        shareable::<super::Embedder>();
    }
}
