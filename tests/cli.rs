//! The `palisade` binary's own commands against the real stack: load the bundled
//! fixtures, replay a projection (same rows), print the status.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::TestEnv;

fn palisade(env: &TestEnv, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(env.cli_args())
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run palisade");
    assert!(
        output.status.success(),
        "palisade {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

const DIGEST: &str =
    "SELECT md5(string_agg(concat_ws('|', ts, id, host, type, severity, rule, message,
    attributes::text), ',' ORDER BY id)) FROM events";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_fixtures_replay_and_status() {
    let env = TestEnv::new("cli").await;
    let loaded: serde_json::Value =
        serde_json::from_str(&palisade(&env, &["load-fixtures"])).unwrap();
    assert_eq!(loaded["falco_security_subject"], 25);
    assert_eq!(loaded["falco_sidekick_subjects"], 25);
    assert_eq!(loaded["trivy_reports"], 4);
    assert_eq!(loaded["log_lines"], 10);
    // Loading again inside the duplicate window stores nothing new.
    palisade(&env, &["load-fixtures"]);

    let running = palisade::server::start(env.connections(), env.serve_settings(&[]))
        .await
        .unwrap();
    env.wait_for_count("SELECT count(*) FROM events", 60, Duration::from_secs(30))
        .await;
    env.wait_for_count("SELECT count(*) FROM scans", 4, Duration::from_secs(30))
        .await;
    running.stop().await;
    let before: String = sqlx::query_scalar(DIGEST)
        .fetch_one(&env.pool)
        .await
        .unwrap();

    let out = palisade(&env, &["replay", "events"]);
    let messages = 50 + loaded["log_envelopes"].as_u64().unwrap();
    assert!(
        out.contains(&format!("replayed {messages} messages into events")),
        "{out}"
    );
    let after: String = sqlx::query_scalar(DIGEST)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(before, after);

    let status: serde_json::Value = serde_json::from_str(&palisade(&env, &["status"])).unwrap();
    assert_eq!(status["ingested"]["events_by_type"]["falco_alert"], 50);
    assert_eq!(status["ingested"]["events_by_type"]["log"], 10);
    assert_eq!(status["ingested"]["scans"], 4);

    let err = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(env.cli_args())
        .args(["replay", "nonsense"])
        .output()
        .unwrap();
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("unknown projection \"nonsense\""));
    env.cleanup().await;
}
