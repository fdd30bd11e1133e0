//! Page cursors: opaque to clients, bound to the query they came from.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Where the next page starts, and which query it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Rows already returned.
    #[serde(rename = "o")]
    pub offset: u64,
    /// First 8 bytes of the SHA-256 of the query text.
    #[serde(rename = "q")]
    query: u64,
}

/// A cursor that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    /// Not one of ours.
    #[error("the cursor is not valid; pass back next_cursor exactly as it was returned")]
    Malformed,
    /// Deeper than paging goes.
    #[error("paging stops after {0} rows; narrow the query (a time range, a host) to see further")]
    TooDeep(u32),
    /// One of ours, for a different query.
    #[error("the cursor belongs to a different query; page with the query that returned it")]
    OtherQuery,
}

impl Cursor {
    /// The cursor of the page that starts at `offset` of `query`.
    pub fn new(query: &str, offset: u64) -> Self {
        Cursor {
            offset,
            query: fingerprint(query),
        }
    }

    /// The opaque text handed to clients.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(json)
    }

    /// Reads a client's cursor back and checks it belongs to `query`.
    pub fn decode(text: &str, query: &str) -> Result<Self, CursorError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text.trim())
            .map_err(|_| CursorError::Malformed)?;
        let cursor: Cursor = serde_json::from_slice(&bytes).map_err(|_| CursorError::Malformed)?;
        if cursor.query != fingerprint(query) {
            return Err(CursorError::OtherQuery);
        }
        Ok(cursor)
    }
}

fn fingerprint(query: &str) -> u64 {
    let digest = Sha256::digest(query.trim().as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_for_its_own_query_only() {
        let text = Cursor::new("host:a", 200).encode();
        assert_eq!(Cursor::decode(&text, "host:a").map(|c| c.offset), Ok(200));
        assert_eq!(
            Cursor::decode(&text, "host:b"),
            Err(CursorError::OtherQuery)
        );
        assert_eq!(
            Cursor::decode("not a cursor", "host:a"),
            Err(CursorError::Malformed)
        );
        assert_eq!(
            Cursor::decode(&URL_SAFE_NO_PAD.encode("{}"), "host:a"),
            Err(CursorError::Malformed)
        );
    }
}
