//! The `palisade` application: configuration, start-up wiring, the HTTP server
//! (status page, `/healthz`, `/metrics`, JSON status) and the CLI commands.
//!
//! The library crates do the work (`palisade-core`, `palisade-consumers`,
//! `palisade-schema`); this crate only wires them together. Tests drive the HTTP
//! layer through [`api::app`] without a socket.

pub mod api;
pub mod auth;
pub mod bursts;
pub mod client;
pub mod config;
pub mod console;
pub mod fixtures;
pub mod query;
pub mod remediation;
pub mod server;
pub mod status;

/// Connects to NATS and refuses servers that are too old or lack JetStream.
pub async fn connect_nats(url: &str) -> anyhow::Result<async_nats::Client> {
    use anyhow::Context as _;
    let client = async_nats::ConnectOptions::new()
        .name("palisade")
        .connect(url)
        .await
        .with_context(|| {
            format!("cannot reach NATS at {url}: start the dev stack with `scripts/stack.sh up` or set NATS_URL")
        })?;
    palisade_consumers::streams::check_server(&client.server_info())?;
    Ok(client)
}

/// Opens the PostgreSQL pool.
pub async fn connect_postgres(conn: &config::Connections) -> anyhow::Result<sqlx::PgPool> {
    use anyhow::Context as _;
    let url = &conn.database_url;
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(conn.db_max_connections.max(1))
        .acquire_timeout(std::time::Duration::from_secs(conn.db_acquire_timeout_secs.max(1)))
        .connect(url)
        .await
        .with_context(|| {
            format!(
                "cannot reach PostgreSQL at {}: start the dev stack with `scripts/stack.sh up` or set DATABASE_URL",
                redact(url)
            )
        })
}

/// A URL with its password hidden, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            super::redact("postgres://u:secret@h:1/db"),
            "postgres://u:***@h:1/db"
        );
        assert_eq!(super::redact("postgres://u@h:1/db"), "postgres://u@h:1/db");
    }
}
