//! Stopping PostgreSQL mid-stream and starting it again loses nothing: batches
//! wait, retry with backoff and land once the database is back.
//!
//! This stops the shared dev-stack PostgreSQL, so it lives in its own test binary
//! (cargo runs test binaries one after another).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{fixture, TestEnv};

fn stack(action: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/stack.sh");
    let status = Command::new("bash")
        .arg(script)
        .arg(action)
        .status()
        .expect("run scripts/stack.sh");
    assert!(status.success(), "scripts/stack.sh {action} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_mid_stream_loses_nothing() {
    let env = TestEnv::new("pg_outage").await;
    let mut connections = env.connections();
    connections.db_acquire_timeout_secs = 1;
    let running = palisade::server::start(connections, env.serve_settings(&[]))
        .await
        .unwrap();
    let template: serde_json::Value =
        serde_json::from_str(fixture("falco/alerts.jsonl").lines().nth(4).unwrap()).unwrap();
    let alert = |i: usize| {
        let mut a = template.clone();
        a["output_fields"]["fd.name"] = format!("/etc/outage-{i}").into();
        a.to_string()
    };

    for i in 0..500 {
        env.publish("security.falco.alerts", alert(i)).await;
    }
    env.wait_for_count("SELECT count(*) FROM events", 500, Duration::from_secs(30))
        .await;
    env.pool.close().await;

    stack("stop-postgres");
    // Published while the database is down: they wait in the stream.
    for i in 500..1500 {
        env.publish("security.falco.alerts", alert(i)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    stack("start-postgres");

    let pool = sqlx::PgPool::connect(&env.database_url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&pool)
            .await
            .unwrap();
        if n == 1500 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} of 1500 events after the restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let distinct: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT attributes->'output_fields'->>'fd.name') FROM events",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(distinct, 1500);
    let retries = running
        .pipeline
        .metrics
        .write_retries
        .get_or_create(&palisade_consumers::IngestMetrics::labels("events"))
        .get();
    assert!(retries > 0, "the outage was seen and retried");
    running.stop().await;
    pool.close().await;
    let mut env = env;
    env.reconnect().await;
    env.cleanup().await;
}
