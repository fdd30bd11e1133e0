//! The one error type of this crate.

use std::path::PathBuf;

/// What can go wrong loading the model or embedding text.
///
/// Every message says what to do about it; the missing-files ones name the command
/// that installs the model.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// A file of the converted model is not where the configuration says.
    #[error(
        "model file {} is missing: run `scripts/stack.sh model` \
         (or point PALISADE_MODEL_DIR at a converted all-MiniLM-L6-v2)",
        path.display()
    )]
    ModelMissing {
        /// The file that was looked for.
        path: PathBuf,
    },

    /// The ONNX Runtime shared library could not be loaded.
    #[error(
        "cannot load ONNX Runtime from {}: {message}; run `scripts/stack.sh model` and set \
         ORT_DYLIB_PATH to the libonnxruntime.so it prints",
        path.display()
    )]
    Runtime {
        /// The library that was tried.
        path: PathBuf,
        /// Why it failed.
        message: String,
    },

    /// The model's tokenizer.json could not be read or configured.
    #[error("cannot use the tokenizer {}: {message}", path.display())]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// Why it failed.
        message: String,
    },

    /// Tokenising a text failed.
    #[error("tokenising text {index} failed: {message}")]
    Tokenize {
        /// Position of the text in the caller's batch.
        index: usize,
        /// Why it failed.
        message: String,
    },

    /// The ONNX file loads but is not the graph Palisade expects (inputs, outputs, width).
    #[error("{} is not the expected MiniLM graph: {message}; rerun `scripts/stack.sh model`", path.display())]
    UnexpectedModel {
        /// The ONNX file.
        path: PathBuf,
        /// What differs.
        message: String,
    },

    /// ONNX Runtime refused to create the session or to run it.
    #[error("ONNX Runtime: {0}")]
    Ort(#[from] ort::Error),

    /// An environment variable holds a value that cannot be used.
    #[error("{var}={value:?} is not valid: expected {expected}")]
    Config {
        /// The variable.
        var: &'static str,
        /// What it holds.
        value: String,
        /// What it should hold.
        expected: &'static str,
    },
}
