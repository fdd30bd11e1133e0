//! Wire decoders: one function per contract in docs/wire.md, chosen by NATS subject.

use crate::model::Decoded;

/// Why a message could not be decoded. The text goes into the dead letter's
/// `Palisade-Error` header, so it says what was wrong in the payload.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The payload is not the JSON the contract describes.
    #[error("invalid JSON for {contract}: {source}")]
    Json {
        /// Contract name, e.g. `falco alert`.
        contract: &'static str,
        /// The parser's error, with line and column.
        source: serde_json::Error,
    },
    /// The JSON parsed but a value is out of contract.
    #[error("invalid {contract}: {reason}")]
    Invalid {
        /// Contract name.
        contract: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// No contract is bound to this subject.
    #[error("no decoder for subject {0:?}")]
    UnknownSubject(String),
}

/// Decodes one message by its subject.
pub fn decode(subject: &str, _payload: &[u8]) -> Result<Decoded, DecodeError> {
    Err(DecodeError::UnknownSubject(subject.to_owned()))
}
