//! Shared harness of the end-to-end tests: the real NATS and PostgreSQL started
//! by `scripts/stack.sh up`, a fresh namespace (subjects, streams) and a fresh
//! database per test, so tests run side by side without seeing each other.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use async_nats::jetstream;
use clap::Parser;
use palisade::config::{Connections, ServeSettings};
use sqlx::PgPool;

/// How a test that cannot reach a service fails.
pub const START_HINT: &str = "start the dev stack with `scripts/stack.sh up` \
    (or point NATS_URL / DATABASE_URL at running servers)";

#[derive(Debug, Parser)]
struct Settings {
    #[command(flatten)]
    connections: Connections,
    #[command(flatten)]
    serve: ServeSettings,
}

/// One test's isolated slice of the real stack.
pub struct TestEnv {
    /// Namespace of this test's subjects and streams.
    pub namespace: String,
    /// URL of this test's database.
    pub database_url: String,
    /// NATS URL.
    pub nats_url: String,
    /// Pool on this test's database.
    pub pool: PgPool,
    /// NATS client.
    pub client: async_nats::Client,
    /// JetStream context.
    pub js: jetstream::Context,
    /// This test's search index folder (removed by `cleanup`).
    pub search_dir: std::path::PathBuf,
    admin_url: String,
    database: String,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// The URL `url` with its database replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let (host, _) = base.rsplit_once('/').expect("database URL has a path");
    match query {
        Some(q) => format!("{host}/{database}?{q}"),
        None => format!("{host}/{database}"),
    }
}

impl TestEnv {
    /// A fresh namespace and database named after `test`.
    pub async fn new(test: &str) -> TestEnv {
        let nats_url = env_or("NATS_URL", "nats://127.0.0.1:4222");
        let admin_url = env_or(
            "DATABASE_URL",
            "postgres://palisade@127.0.0.1:55432/palisade?sslmode=disable",
        );
        let client = async_nats::connect(&nats_url)
            .await
            .unwrap_or_else(|e| panic!("NATS at {nats_url} is unreachable ({e}): {START_HINT}"));
        let admin = sqlx::PgPool::connect(&admin_url).await.unwrap_or_else(|e| {
            panic!("PostgreSQL at {admin_url} is unreachable ({e}): {START_HINT}")
        });
        let suffix = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        let namespace = format!("t{suffix}");
        let database = format!("palisade_test_{}_{suffix}", test.replace('-', "_"));
        sqlx::query(&format!("CREATE DATABASE {database}"))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let database_url = with_database(&admin_url, &database);
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect(&database_url)
            .await
            .unwrap();
        let js = jetstream::new(client.clone());
        let search_dir = std::env::temp_dir().join(format!("palisade-search-{namespace}"));
        TestEnv {
            namespace,
            database_url,
            nats_url,
            pool,
            client,
            js,
            search_dir,
            admin_url,
            database,
        }
    }

    /// Connection settings of a Palisade in this test's slice.
    pub fn connections(&self) -> Connections {
        self.settings(&[]).connections
    }

    /// Serve settings for tests: any free port, short batch wait, short ack wait.
    pub fn serve_settings(&self, extra: &[&str]) -> ServeSettings {
        self.settings(extra).serve
    }

    fn settings(&self, extra: &[&str]) -> Settings {
        let mut args = vec![
            "palisade".to_owned(),
            format!("--nats-url={}", self.nats_url),
            format!("--database-url={}", self.database_url),
            format!("--namespace={}", self.namespace),
            "--http-addr=127.0.0.1:0".to_owned(),
            "--batch-max-wait-ms=100".to_owned(),
            "--ack-wait-secs=5".to_owned(),
            format!("--search-index-dir={}", self.search_dir.display()),
        ];
        // Semantic hunting (model load, embedding) only where a test asks for it.
        if !extra.iter().any(|a| a.starts_with("--vectors")) {
            args.push("--vectors=false".to_owned());
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        Settings::try_parse_from(args).expect("test settings parse")
    }

    /// Arguments that point a `palisade` process at this slice.
    pub fn cli_args(&self) -> Vec<String> {
        vec![
            format!("--nats-url={}", self.nats_url),
            format!("--database-url={}", self.database_url),
            format!("--namespace={}", self.namespace),
        ]
    }

    /// `subject` in this test's namespace.
    pub fn subject(&self, subject: &str) -> String {
        format!("{}.{subject}", self.namespace)
    }

    /// Publishes like Falcosidekick: core NATS, no headers.
    pub async fn publish_core(&self, subject: &str, payload: impl Into<bytes::Bytes>) {
        self.client
            .publish(self.subject(subject), payload.into())
            .await
            .unwrap();
    }

    /// Publishes through JetStream and waits for the stream to store it.
    pub async fn publish(&self, subject: &str, payload: impl Into<bytes::Bytes>) {
        self.js
            .publish(self.subject(subject), payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    /// Waits until every core publish so far has reached the server.
    pub async fn flush(&self) {
        self.client.flush().await.unwrap();
    }

    /// Polls `sql` (one bigint) until it equals `expected`; panics after `timeout`
    /// with the last value seen.
    pub async fn wait_for_count(&self, sql: &str, expected: i64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        while Instant::now() < deadline {
            match sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&self.pool)
                .await
            {
                Ok(n) if n == expected => return,
                Ok(n) => last = Some(Ok(n)),
                Err(e) => last = Some(Err(e.to_string())),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("`{sql}` did not reach {expected} within {timeout:?}; last: {last:?}");
    }

    /// One bigint.
    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Opens a new pool on this test's database (after the old one was closed).
    pub async fn reconnect(&mut self) {
        self.pool = sqlx::PgPool::connect(&self.database_url).await.unwrap();
    }

    /// Deletes this test's streams and database.
    pub async fn cleanup(self) {
        let prefix = format!("{}_", self.namespace.to_ascii_uppercase());
        for family in palisade_consumers::streams::StreamFamily::ALL {
            let _ = self
                .js
                .delete_stream(format!("{prefix}{}", family.base_name()))
                .await;
        }
        self.pool.close().await;
        let _ = std::fs::remove_dir_all(&self.search_dir);
        if let Ok(admin) = sqlx::PgPool::connect(&self.admin_url).await {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.database
            ))
            .execute(&admin)
            .await;
        }
    }
}

/// A fixture file from tests/fixtures.
pub fn fixture(path: &str) -> String {
    let full = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/").to_owned() + path;
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("fixture {full}: {e}"))
}

/// The `id` of each row of a query answer, in order.
pub fn row_ids(answer: &serde_json::Value) -> Vec<String> {
    answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The real auth log of tests/fixtures/logs as one log envelope (10 lines, host
/// bastion-01, agent edge-7).
pub fn auth_log_envelope() -> serde_json::Value {
    let lines: Vec<_> = fixture("logs/beats_system_auth_test.log")
        .lines()
        .filter_map(|l| palisade::fixtures::parse_syslog(l, 2026))
        .map(|l| {
            serde_json::json!({"ts": l.ts.and_utc().to_rfc3339(), "message": l.message,
                               "program": l.program, "pid": l.pid})
        })
        .collect();
    assert_eq!(lines.len(), 10);
    serde_json::json!({"v": 1, "ts": "2026-02-20T08:35:22Z", "host": "bastion-01",
                       "agent_id": "edge-7", "source": "auth", "lines": lines})
}

/// `GET uri` on `app`: the status and the body as text.
pub async fn get_text(app: &axum::Router, uri: &str) -> (axum::http::StatusCode, String) {
    use tower::ServiceExt;
    let response = app
        .clone()
        .oneshot(
            axum::http::Request::get(uri)
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 16 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Sends `request` to `app`: the status and the body as JSON (`null` when it is not).
pub async fn call(
    app: &axum::Router,
    request: axum::http::Request<axum::body::Body>,
) -> (axum::http::StatusCode, serde_json::Value) {
    use tower::ServiceExt;
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 16 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// A gopsutil `net.Connections()` record, as the edge agent sends it.
pub fn socket(
    local: (&str, u16),
    remote: (&str, u16),
    status: &str,
    process: &str,
) -> serde_json::Value {
    serde_json::json!({"fd": 3, "family": 2, "type": 1,
        "localaddr": {"ip": local.0, "port": local.1},
        "remoteaddr": {"ip": remote.0, "port": remote.1},
        "status": status, "uids": [0, 0, 0, 0], "pid": 812, "process": process})
}

/// A connections envelope of `host` at `ts`.
pub fn connections_envelope(host: &str, ts: &str, sockets: Vec<serde_json::Value>) -> String {
    serde_json::json!({"v": 1, "ts": ts, "host": host, "agent_id": format!("edge-{host}"),
        "connections": sockets})
    .to_string()
}

/// Makes `host` a P0 host: the vulnerable Alpine image of the real Trivy fixture is
/// scanned there at `ts`, and a process of its musl package runs.
pub async fn publish_running_vulnerable_musl(env: &TestEnv, host: &str, ts: &str) {
    let report: serde_json::Value = serde_json::from_str(&fixture("trivy/alpine-39.json")).unwrap();
    let agent = format!("edge-{host}");
    let scan = serde_json::json!({"v": 1, "ts": ts, "host": host, "agent_id": agent,
        "target_kind": "host", "report": report});
    env.publish("scan.trivy.results", scan.to_string()).await;
    let processes = serde_json::json!({"v": 1, "ts": ts, "host": host, "agent_id": agent,
        "started": [{"pid": 4100, "ppid": 1, "exe": "/usr/lib/postgresql/bin/postgres",
                     "cmdline": "postgres", "user": "postgres", "package": "musl"}],
        "stopped": []});
    env.publish("telemetry.processes.edge", processes.to_string())
        .await;
}

/// Polls `check` every 100 ms until it holds; fails the test after 30 s, naming `what`.
pub async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
