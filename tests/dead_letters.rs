//! A malformed message goes to `dlq.<subject>` with its reason and is acked; its
//! neighbours in the same batch still land.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use async_nats::jetstream::consumer;
use common::{fixture, TestEnv};
use futures::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_go_to_the_dlq_and_neighbours_land() {
    let env = TestEnv::new("dlq").await;
    let running = palisade::server::start(env.connections(), env.serve_settings(&[]))
        .await
        .unwrap();

    let alerts = fixture("falco/alerts.jsonl");
    let mut lines = alerts.lines();
    env.publish("security.falco.alerts", lines.next().unwrap().to_owned())
        .await;
    env.publish(
        "security.falco.alerts",
        "{\"output\": \"truncated".to_owned(),
    )
    .await;
    env.publish("security.falco.alerts", lines.next().unwrap().to_owned())
        .await;
    env.publish(
        "logs.auth",
        r#"{"v": 9, "ts": "2026-11-20T10:00:00Z", "host": "h", "lines": []}"#.to_owned(),
    )
    .await;
    env.publish("security.falco.alerts", lines.next().unwrap().to_owned())
        .await;

    env.wait_for_count("SELECT count(*) FROM events", 3, Duration::from_secs(30))
        .await;
    env.wait_for_count(
        "SELECT count(*) FROM dead_letters",
        2,
        Duration::from_secs(30),
    )
    .await;

    let reasons: Vec<(String, String)> =
        sqlx::query_as("SELECT subject, reason FROM dead_letters ORDER BY subject")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert!(reasons[0].0.ends_with("logs.auth"), "{reasons:?}");
    assert!(reasons[0].1.contains("version"), "{reasons:?}");
    assert!(
        reasons[1].0.ends_with("security.falco.alerts"),
        "{reasons:?}"
    );
    assert!(reasons[1].1.contains("JSON"), "{reasons:?}");

    // The dead letters are on dlq.<original subject> with the reason in a header.
    let stream =
        palisade_consumers::streams::StreamFamily::DeadLetters.name(&env.connections().namespace());
    let dlq = env
        .js
        .create_consumer_on_stream(consumer::pull::Config::default(), &stream)
        .await
        .unwrap();
    let mut messages = dlq
        .fetch()
        .max_messages(10)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .unwrap();
    let mut seen = Vec::new();
    while let Some(message) = messages.next().await {
        let message = message.unwrap();
        let reason = message
            .headers
            .as_ref()
            .and_then(|h| h.get(palisade_consumers::dlq::ERROR_HEADER))
            .map(|v| v.to_string())
            .unwrap_or_default();
        seen.push((message.subject.to_string(), reason, message.payload.clone()));
        message.ack().await.unwrap();
    }
    // The two streams are consumed side by side: their dead letters come in either order.
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].0, env.subject("dlq.logs.auth"));
    assert_eq!(seen[1].0, env.subject("dlq.security.falco.alerts"));
    assert!(seen[1].1.contains("JSON"), "{seen:?}");
    assert_eq!(&seen[1].2[..], b"{\"output\": \"truncated");

    // Nothing is left unacknowledged: the pipeline moved on.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = palisade::status::collect(&env.pool, &env.client, &env.connections().namespace())
        .await
        .unwrap();
    for projection in &status.projections {
        for c in &projection.consumers {
            assert_eq!(
                (c.pending, c.ack_pending),
                (0, 0),
                "{}: {c:?}",
                projection.name
            );
        }
    }
    running.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_postgres_rejects_is_dead_lettered_alone() {
    let env = TestEnv::new("unstorable").await;
    let running = palisade::server::start(env.connections(), env.serve_settings(&["--writers=1"]))
        .await
        .unwrap();
    let alerts = fixture("falco/alerts.jsonl");
    let lines: Vec<&str> = alerts.lines().collect();
    // A host name too large for the (host, ts) btree even after compression.
    let mut huge: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    let noise: String = (0..600)
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect();
    huge["hostname"] = noise.into();
    let messages = [
        lines[1].to_owned(),
        "{\"output\": \"truncated".to_owned(),
        huge.to_string(),
        lines[2].to_owned(),
    ];
    let subject = env.subject("security.falco.alerts");
    let batch = messages.iter().map(|m| (subject.clone(), m.clone().into()));
    palisade::fixtures::publish_windowed(&env.js, batch, 16)
        .await
        .unwrap();

    env.wait_for_count("SELECT count(*) FROM events", 2, Duration::from_secs(30))
        .await;
    env.wait_for_count(
        "SELECT count(*) FROM dead_letters",
        2,
        Duration::from_secs(30),
    )
    .await;
    let reasons: Vec<String> =
        sqlx::query_scalar("SELECT reason FROM dead_letters ORDER BY stream_seq")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert!(reasons[0].contains("JSON"), "{reasons:?}");
    assert!(reasons[1].starts_with("write failed"), "{reasons:?}");
    assert!(reasons[1].contains("index row"), "{reasons:?}");
    running.stop().await;
    env.cleanup().await;
}
