//! Embeddings for semantic hunting (all-MiniLM-L6-v2 through ONNX Runtime).
//!
//! The model runtime arrives with the semantic-hunting issue. This crate already
//! states the model's shape so callers can size their storage.

/// Name of the sentence-embedding model Palisade uses.
pub const MODEL_NAME: &str = "all-MiniLM-L6-v2";

/// Dimension of one embedding vector.
pub const DIMENSIONS: usize = 384;

#[cfg(test)]
mod tests {
    #[test]
    fn minilm_is_384_wide() {
        assert_eq!(super::DIMENSIONS, 384);
    }
}
