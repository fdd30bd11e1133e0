//! Redelivery and replay never create a second row; a rebuilt projection holds
//! exactly the rows it held before.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{fixture, TestEnv};
use palisade_consumers::Projection;
use palisade_core::store::{Batch, Position, Store};

const EVENTS_DIGEST: &str =
    "SELECT md5(string_agg(concat_ws('|', ts, id, host, source, type, severity,
    rule, message, attributes::text, stream_seq), ',' ORDER BY id)) FROM events";
const VULNS_DIGEST: &str =
    "SELECT md5(string_agg(concat_ws('|', hv.host, hv.artifact_name, hv.target,
    hv.vulnerability_id, p.name, p.version, hv.severity, hv.scanned_at, hv.resolved_at), ','
    ORDER BY hv.host, hv.vulnerability_id, p.name, hv.target))
    FROM host_vulnerabilities hv JOIN packages p ON p.id = hv.package_id";

async fn digest(env: &TestEnv, sql: &str) -> String {
    sqlx::query_scalar::<_, Option<String>>(sql)
        .fetch_one(&env.pool)
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_rebuilds_the_same_rows() {
    let env = TestEnv::new("replay").await;
    let running = palisade::server::start(env.connections(), env.serve_settings(&[]))
        .await
        .unwrap();
    for line in fixture("falco/alerts.jsonl").lines() {
        env.publish("security.falco.alerts", line.to_owned()).await;
    }
    env.publish("security.falco.alerts", "not json".to_owned())
        .await;
    for file in ["alpine-39", "debian-stretch"] {
        env.publish("scan.trivy.results", fixture(&format!("trivy/{file}.json")))
            .await;
    }
    env.wait_for_count("SELECT count(*) FROM events", 25, Duration::from_secs(30))
        .await;
    env.wait_for_count(
        "SELECT count(*) FROM host_vulnerabilities",
        11,
        Duration::from_secs(30),
    )
    .await;
    env.wait_for_count(
        "SELECT count(*) FROM dead_letters",
        1,
        Duration::from_secs(30),
    )
    .await;
    let events_before = digest(&env, EVENTS_DIGEST).await;
    let vulns_before = digest(&env, VULNS_DIGEST).await;
    running.stop().await;

    let ingest = env.serve_settings(&[]).ingest;
    let pipeline = palisade::server::pipeline(&env.connections(), &ingest, None)
        .await
        .unwrap();
    let progress = std::sync::Mutex::new(Vec::new());
    let report =
        palisade_consumers::replay::replay(&pipeline, Projection::Events, |done, total| {
            progress.lock().unwrap().push((done, total));
        })
        .await
        .unwrap();
    assert_eq!(report.messages, 26);
    assert_eq!(progress.lock().unwrap().last(), Some(&(26, 26)));
    assert_eq!(env.count("SELECT count(*) FROM events").await, 25);
    assert_eq!(digest(&env, EVENTS_DIGEST).await, events_before);
    assert_eq!(env.count("SELECT count(*) FROM dead_letters").await, 1);

    palisade_consumers::replay::replay(&pipeline, Projection::Vulns, |_, _| {})
        .await
        .unwrap();
    assert_eq!(digest(&env, VULNS_DIGEST).await, vulns_before);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_batch_writes_nothing_new() {
    let env = TestEnv::new("redeliver").await;
    palisade_schema::migrate(&env.pool).await.unwrap();
    let store = Store::new(env.pool.clone());
    let mut batch = Batch::default();
    for (seq, line) in fixture("falco/alerts.jsonl").lines().enumerate() {
        let decoded =
            palisade_core::decode::decode("security.falco.alerts", line.as_bytes()).unwrap();
        let position = Position {
            stream: "PALISADE_SECURITY".into(),
            seq: seq as u64 + 1,
            subject: "security.falco.alerts".into(),
        };
        batch.records.push((position, decoded));
    }
    let first = store.write_batch("events", 0, &batch).await.unwrap();
    assert_eq!((first.records, first.rows_inserted), (25, 25));
    let again = store.write_batch("events", 1, &batch).await.unwrap();
    assert_eq!((again.records, again.rows_inserted), (25, 0));
    assert_eq!(env.count("SELECT count(*) FROM events").await, 25);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awkward_text_survives_copy_and_upsert_alike() {
    use palisade_core::model::{Decoded, Event, EventKind, Severity};
    let env = TestEnv::new("copy_text").await;
    palisade_schema::migrate(&env.pool).await.unwrap();
    let store = Store::new(env.pool.clone());
    let message = "tab\there back\\slash\nnewline\r\0nul ünïcödé \\N";
    let attributes = serde_json::json!({"cmd": "a\tb\\c\n", "n": 1651447772918828894_u64});
    let event = Event {
        ts: chrono::DateTime::parse_from_rfc3339("2026-11-24T10:00:00.123456789Z")
            .unwrap()
            .into(),
        host: Some("web\t01".into()),
        source: "auth".into(),
        kind: EventKind::Log,
        severity: Severity::Medium,
        rule: None,
        message: message.into(),
        attributes: attributes.as_object().unwrap().clone(),
    };
    let batch = |seq: u64| Batch {
        records: vec![(
            Position {
                stream: "PALISADE_LOGS".into(),
                seq,
                subject: "logs.auth".into(),
            },
            Decoded::Events(vec![event.clone()]),
        )],
        dead_letters: vec![],
    };
    assert_eq!(
        store
            .write_batch("events", 0, &batch(1))
            .await
            .unwrap()
            .rows_inserted,
        1
    );
    assert_eq!(
        store
            .write_batch("events", 0, &batch(1))
            .await
            .unwrap()
            .rows_inserted,
        0
    );
    let (host, stored, attrs, ts): (
        String,
        String,
        serde_json::Value,
        chrono::DateTime<chrono::Utc>,
    ) = sqlx::query_as("SELECT host, message, attributes, ts FROM events")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(host, "web\t01");
    assert_eq!(stored, message.replace('\0', "\u{FFFD}"));
    assert_eq!(attrs, attributes);
    assert_eq!(ts.to_rfc3339(), "2026-11-24T10:00:00.123456+00:00");
    env.cleanup().await;
}
