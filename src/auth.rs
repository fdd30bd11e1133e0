//! Bearer-token authentication for the HTTP API.
//!
//! Tokens are configured as `name:scopes:sha256` entries (`PALISADE_API_TOKENS`,
//! comma-separated); only the SHA-256 of each secret is kept, so a leaked config does not
//! leak a usable token. `palisade token new <name>` prints a fresh secret and its entry.
//! A request presents `Authorization: Bearer <secret>`; a missing or unknown token is a
//! 401, a known token without the route's scope a 403. `/healthz` is always open.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use sha2::{Digest, Sha256};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Run SRQL queries, explain them, read events and the field catalogue.
    Query,
    /// Read the status page, `/api/v1/status` and the Prometheus `/metrics`.
    Status,
}

impl Scope {
    /// Every scope, for `*` in a token entry.
    pub const ALL: [Scope; 2] = [Scope::Query, Scope::Status];

    /// The name used in token entries.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Query => "query",
            Scope::Status => "status",
        }
    }
}

/// A token entry that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenEntryError {
    /// Not three `:`-separated parts.
    #[error("a token entry is `name:scope+scope:sha256hex`, got {0:?}")]
    Shape(String),
    /// A scope name we do not know.
    #[error("unknown scope {0:?} (known: query, status, *)")]
    Scope(String),
    /// The digest is not 64 hex digits.
    #[error("the token digest must be 64 hex digits (SHA-256), got {0:?}")]
    Digest(String),
}

/// One configured token: who it is, what it may do, and the SHA-256 of its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// Who holds it (shows in logs, never the secret).
    pub name: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    sha256: [u8; 32],
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiToken")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl ApiToken {
    /// The entry for a secret: what goes into `PALISADE_API_TOKENS`.
    pub fn entry(name: &str, scopes: &[Scope], secret: &str) -> String {
        let scopes: Vec<_> = scopes.iter().map(|s| s.as_str()).collect();
        format!("{name}:{}:{}", scopes.join("+"), hex(&digest(secret)))
    }

    /// The entry for a secret with scopes written as in an entry (`query+status`, `*`);
    /// checks the entry parses back.
    pub fn entry_with_scope_text(
        name: &str,
        scopes: &str,
        secret: &str,
    ) -> Result<String, TokenEntryError> {
        let entry = format!("{name}:{scopes}:{}", hex(&digest(secret)));
        entry.parse::<ApiToken>()?;
        Ok(entry)
    }

    fn matches(&self, secret: &str) -> bool {
        // Compare every byte so the time taken says nothing about where they differ.
        digest(secret)
            .iter()
            .zip(self.sha256.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl FromStr for ApiToken {
    type Err = TokenEntryError;

    fn from_str(entry: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = entry.trim().split(':').collect();
        let [name, scopes, digest] = parts.as_slice() else {
            return Err(TokenEntryError::Shape(entry.to_owned()));
        };
        if name.is_empty() || name.contains(',') {
            return Err(TokenEntryError::Shape(entry.to_owned()));
        }
        let mut parsed = Vec::new();
        for scope in scopes.split('+') {
            match scope {
                "*" => parsed.extend(Scope::ALL),
                "query" => parsed.push(Scope::Query),
                "status" => parsed.push(Scope::Status),
                other => return Err(TokenEntryError::Scope(other.to_owned())),
            }
        }
        let sha256 = unhex(digest).ok_or_else(|| TokenEntryError::Digest((*digest).to_owned()))?;
        Ok(ApiToken {
            name: (*name).to_owned(),
            scopes: parsed,
            sha256,
        })
    }
}

/// The configured tokens. Empty means authentication is off (allowed on loopback only).
#[derive(Debug, Clone, Default)]
pub struct Tokens(Arc<Vec<ApiToken>>);

impl Tokens {
    /// Tokens from parsed entries.
    pub fn new(tokens: Vec<ApiToken>) -> Self {
        Tokens(Arc::new(tokens))
    }

    /// Whether any token is configured.
    pub fn enabled(&self) -> bool {
        !self.0.is_empty()
    }

    fn find(&self, secret: &str) -> Option<&ApiToken> {
        self.0.iter().find(|t| t.matches(secret))
    }
}

/// A fresh random secret: 32 bytes from two v4 UUIDs, hex.
pub fn new_secret() -> String {
    let a = uuid::Uuid::new_v4();
    let b = uuid::Uuid::new_v4();
    format!("pal_{}{}", a.simple(), b.simple())
}

/// What the middleware needs: the tokens and the scope of the routes it guards.
#[derive(Debug, Clone)]
pub struct Guard {
    /// Configured tokens.
    pub tokens: Tokens,
    /// The scope the guarded routes require.
    pub scope: Scope,
}

/// Middleware: 401 without a known token, 403 without the scope.
pub async fn require(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    if !guard.tokens.enabled() {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(secret) = presented else {
        return unauthorized("missing bearer token");
    };
    let Some(token) = guard.tokens.find(secret) else {
        tracing::info!(path = %request.uri().path(), "request with an unknown api token");
        return unauthorized("unknown bearer token");
    };
    if !token.scopes.contains(&guard.scope) {
        tracing::info!(token = %token.name, scope = guard.scope.as_str(), path = %request.uri().path(),
            "api token lacks the scope of the route");
        return (
            StatusCode::FORBIDDEN,
            Json(json!({
                "error": format!("this token lacks the `{}` scope", guard.scope.as_str()),
            })),
        )
            .into_response();
    }
    next.run(request).await
}

fn unauthorized(why: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"palisade\"")],
        Json(json!({"error": why})),
    )
        .into_response()
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_round_trips_and_matches_only_its_secret() {
        let entry = ApiToken::entry("analyst", &[Scope::Query], "s3cret");
        let token: ApiToken = entry.parse().expect("entry parses");
        assert_eq!(token.name, "analyst");
        assert_eq!(token.scopes, vec![Scope::Query]);
        assert!(token.matches("s3cret"));
        assert!(!token.matches("s3cret "));
        assert!(!entry.contains("s3cret"));
    }

    #[test]
    fn bad_entries_say_what_is_wrong() {
        assert!(matches!(
            "x".parse::<ApiToken>(),
            Err(TokenEntryError::Shape(_))
        ));
        assert_eq!(
            "a:root:00".parse::<ApiToken>(),
            Err(TokenEntryError::Scope("root".into()))
        );
        assert_eq!(
            "a:query:zz".parse::<ApiToken>(),
            Err(TokenEntryError::Digest("zz".into()))
        );
        let all: ApiToken = format!("ops:*:{}", "ab".repeat(32))
            .parse()
            .expect("parses");
        assert_eq!(all.scopes, Scope::ALL.to_vec());
    }

    #[test]
    fn secrets_are_fresh() {
        assert_ne!(new_secret(), new_secret());
        assert_eq!(new_secret().len(), 4 + 64);
    }
}
