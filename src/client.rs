//! The CLI's side of the HTTP API, also used to call AWX: `palisade query` asks a
//! running Palisade and prints the answer as a table.
//!
//! HTTP/1.1 over plain TCP (`http://host:port`, for loopback or a trusted network) or over
//! TLS (`https://host:port`), verified against the system's root certificates plus an
//! optional CA file of the operator's.

use std::path::Path;
use std::sync::Arc;

use comfy_table::{presets::UTF8_FULL_CONDENSED, ContentArrangement, Table};
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsConnector;

/// Why a request to the server failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server address is not `http://host:port` or `https://host:port`.
    #[error(
        "the server address must look like http://127.0.0.1:7311 or https://host:port, got {0:?}"
    )]
    Address(String),
    /// The TLS set-up failed: no usable root certificates, or a bad CA file.
    #[error("TLS set-up: {0}")]
    Tls(String),
    /// Could not connect or talk to the server.
    #[error("cannot reach {addr} ({source}); is the server running?")]
    Io {
        /// Where we tried.
        addr: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The reply is not HTTP with a JSON body.
    #[error("the server's reply is not understood: {0}")]
    Reply(String),
    /// The server answered with an error.
    #[error("{status}: {message}")]
    Status {
        /// HTTP status code.
        status: u16,
        /// The JSON error's text (and, for SRQL errors, the column).
        message: String,
    },
}

/// A client of one server.
#[derive(Clone)]
pub struct ApiClient {
    addr: String,
    token: Option<String>,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("addr", &self.addr)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    /// A client of the server at `url` (`http://host:port` or `https://host:port`),
    /// presenting `token` when given; TLS servers are verified against the system's roots.
    pub fn new(url: &str, token: Option<String>) -> Result<Self, ClientError> {
        Self::with_ca_file(url, token, None)
    }

    /// As [`ApiClient::new`], also trusting the PEM certificates in `ca_file` (a private CA,
    /// or a self-signed server certificate) for `https://` addresses.
    pub fn with_ca_file(
        url: &str,
        token: Option<String>,
        ca_file: Option<&Path>,
    ) -> Result<Self, ClientError> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| ClientError::Address(url.to_owned()))?;
        let addr = rest.trim_end_matches('/');
        let host = addr.rsplit_once(':').map(|(host, _)| host);
        let (Some(host), false) = (host, addr.contains('/')) else {
            return Err(ClientError::Address(url.to_owned()));
        };
        let tls = match scheme {
            "http" => None,
            "https" => {
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let name = ServerName::try_from(host.to_owned())
                    .map_err(|_| ClientError::Address(url.to_owned()))?;
                Some((tls_connector(ca_file)?, name))
            }
            _ => return Err(ClientError::Address(url.to_owned())),
        };
        Ok(ApiClient {
            addr: addr.to_owned(),
            token: token.filter(|t| !t.is_empty()),
            tls,
        })
    }

    /// `POST path` with a JSON body; the JSON answer of a 2xx, else the server's error.
    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.request("POST", path, Some(body)).await
    }

    /// `GET path`; the JSON answer of a 2xx, else the server's error.
    pub async fn get_json(&self, path: &str) -> Result<Value, ClientError> {
        self.request("GET", path, None).await
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let io = |source| ClientError::Io {
            addr: self.addr.clone(),
            source,
        };
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/json\r\n",
            self.addr
        );
        if let Some(token) = &self.token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        if method == "POST" {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        let request = [head.as_bytes(), body.as_bytes()].concat();
        let tcp = tokio::net::TcpStream::connect(&self.addr)
            .await
            .map_err(io)?;
        let reply = match &self.tls {
            None => exchange(tcp, &request).await,
            Some((connector, name)) => {
                let stream = connector.connect(name.clone(), tcp).await.map_err(io)?;
                exchange(stream, &request).await
            }
        }
        .map_err(io)?;
        let (status, json) = parse_reply(&reply)?;
        if (200..300).contains(&status) {
            return Ok(json);
        }
        let mut message = json["error"].as_str().unwrap_or("error").to_owned();
        if let Some(column) = json["srql"]["column"].as_u64() {
            message.push_str(&format!(" (column {column})"));
        }
        Err(ClientError::Status { status, message })
    }
}

/// Sends `request` and reads the reply until the server closes the connection. A TLS
/// peer that closes without `close_notify` after a complete reply is not an error: the
/// reply's own framing (length or chunks) is checked by [`parse_reply`].
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
) -> std::io::Result<Vec<u8>> {
    stream.write_all(request).await?;
    stream.flush().await?;
    let mut reply = Vec::new();
    match stream.read_to_end(&mut reply).await {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !reply.is_empty() => Ok(reply),
        other => other.map(|_| reply),
    }
}

/// A TLS connector trusting the system's roots and the certificates in `ca_file`.
fn tls_connector(ca_file: Option<&Path>) -> Result<TlsConnector, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| ClientError::Tls(format!("CA file {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(ClientError::Tls(format!(
                "CA file {} holds no certificates",
                path.display()
            )));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| ClientError::Tls(format!("CA file {}: {e}", path.display())))?;
        }
    }
    if roots.is_empty() {
        return Err(ClientError::Tls(
            "no root certificates: install ca-certificates or give a CA file".into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Status code and JSON body of an HTTP/1.1 reply (content-length or chunked).
fn parse_reply(reply: &[u8]) -> Result<(u16, Value), ClientError> {
    let split = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| ClientError::Reply("no end of headers".into()))?;
    let head = String::from_utf8_lossy(&reply[..split]);
    let mut body = reply[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ClientError::Reply("no status line".into()))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        body = dechunk(&body).ok_or_else(|| ClientError::Reply("bad chunked body".into()))?;
    }
    let json = serde_json::from_slice(&body)
        .map_err(|e| ClientError::Reply(format!("body is not JSON ({e})")))?;
    Ok((status, json))
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

/// An answer of `POST /api/v1/query` as a terminal table, with a summary line.
pub fn render_table(answer: &Value, width: usize) -> String {
    let mut columns: Vec<String> = answer["columns"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    // Wide columns that the terminal table leaves out: their content is in --json.
    columns.retain(|c| c != "attributes");
    let search = answer["path"] == "search";
    if search {
        columns.push("score".to_owned());
    }
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(u16::try_from(width).unwrap_or(u16::MAX))
        .set_header(columns.clone());
    let rows = answer["rows"].as_array().cloned().unwrap_or_default();
    for row in &rows {
        table.add_row(columns.iter().map(|c| cell(&row[c.as_str()])));
    }
    let total = &answer["total"];
    let more = if total["relation"] == "gte" {
        "at least "
    } else {
        ""
    };
    format!(
        "{table}\n{} rows of {more}{} · {} path · {:.1} ms{}",
        rows.len(),
        total["value"],
        answer["path"].as_str().unwrap_or("?"),
        answer["took_ms"].as_f64().unwrap_or(0.0),
        if answer["next_cursor"].is_string() {
            " · more: --limit or --json for next_cursor"
        } else {
            ""
        }
    )
}

fn cell(value: &Value) -> String {
    let text = match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(x) if n.is_f64() => format!("{x:.3}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    };
    if text.chars().count() > 160 {
        let cut: String = text.chars().take(157).collect();
        format!("{cut}...")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn replies_parse_with_length_or_chunks() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\n{\"a\":1}";
        assert_eq!(parse_reply(plain).unwrap().1, json!({"a": 1}));
        let chunked =
            b"HTTP/1.1 400 Bad Request\r\ntransfer-encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:2}\r\n0\r\n\r\n";
        let (status, body) = parse_reply(chunked).unwrap();
        assert_eq!((status, body), (400, json!({"a": 2})));
        assert!(parse_reply(b"garbage").is_err());
    }

    #[test]
    fn addresses_are_http_or_https_with_a_port() {
        assert!(ApiClient::new("http://127.0.0.1:7311", None).is_ok());
        assert!(ApiClient::new("http://127.0.0.1:7311/", None).is_ok());
        assert!(ApiClient::new("ftp://x:1", None).is_err());
        assert!(ApiClient::new("http://x:1/api", None).is_err());
        assert!(ApiClient::new("http://x", None).is_err());
        assert!(ApiClient::new("127.0.0.1:7311", None).is_err());
        let missing =
            ApiClient::with_ca_file("https://x:1", None, Some(Path::new("/nonexistent.pem")));
        assert!(matches!(missing, Err(ClientError::Tls(_))), "{missing:?}");
    }

    #[test]
    fn a_table_shows_columns_scores_and_the_summary() {
        let answer = json!({"columns": ["ts", "host", "message", "attributes"], "path": "search",
            "rows": [{"ts": "2026-11-20T10:00:00Z", "host": "bastion-01", "message": "Failed password",
                      "attributes": {}, "score": 2.5}],
            "total": {"value": 1, "relation": "eq"}, "took_ms": 1.25, "next_cursor": null});
        let text = render_table(&answer, 120);
        assert!(
            text.contains("bastion-01") && text.contains("2.500"),
            "{text}"
        );
        assert!(!text.contains("attributes"), "{text}");
        assert!(
            text.ends_with("1 rows of 1 · search path · 1.2 ms")
                || text.contains("1 rows of 1 · search path"),
            "{text}"
        );
    }
}
