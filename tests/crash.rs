//! `kill -9` of `palisade` mid-batch and a restart leave every event exactly once;
//! two `palisade` processes sharing the durable consumers write each event once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{fixture, TestEnv};

const EVENTS: usize = 20_000;

/// `n` distinct Falco alerts made from a real fixture line (distinct by container id).
fn alerts(n: usize) -> Vec<String> {
    let template: serde_json::Value =
        serde_json::from_str(fixture("falco/alerts.jsonl").lines().next().unwrap()).unwrap();
    (0..n)
        .map(|i| {
            let mut alert = template.clone();
            alert["output_fields"]["container.id"] = format!("{i:012x}").into();
            alert.to_string()
        })
        .collect()
}

async fn publish_all(env: &TestEnv, alerts: Vec<String>) {
    let subject = env.subject("security.falco.alerts");
    let messages = alerts.into_iter().map(|a| (subject.clone(), a.into()));
    palisade::fixtures::publish_windowed(&env.js, messages, 1024)
        .await
        .unwrap();
}

fn spawn_palisade(env: &TestEnv, http_port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(env.cli_args())
        .args([
            "up",
            &format!("--http-addr=127.0.0.1:{http_port}"),
            "--batch-max-wait-ms=100",
            "--ack-wait-secs=3",
        ])
        .env("RUST_LOG", "warn")
        .env("PALISADE_VECTORS", "false")
        // Each process is a node with its own search index (one writer per index).
        .env(
            "PALISADE_SEARCH_INDEX_DIR",
            env.search_dir.join(http_port.to_string()),
        )
        .env("PALISADE_SEARCH_NODE", format!("node-{http_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn palisade")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn scrape(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out
}

/// The value of a counter line `name{labels} value` in a scrape.
fn counter(scrape: &str, line_prefix: &str) -> u64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_batch_and_restart_leaves_every_event_once() {
    let env = TestEnv::new("kill9").await;
    palisade_schema::migrate(&env.pool).await.unwrap();
    let mut first = spawn_palisade(&env, free_port());
    publish_all(&env, alerts(EVENTS)).await;

    // Kill as soon as rows are landing, while batches are in flight.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = env.count("SELECT count(*) FROM events").await;
        if n > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no rows landed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let at_kill = env.count("SELECT count(*) FROM events").await;
    assert!(
        at_kill < EVENTS as i64,
        "the kill came too late to test anything ({at_kill})"
    );

    let mut second = spawn_palisade(&env, free_port());
    env.wait_for_count(
        "SELECT count(*) FROM events",
        EVENTS as i64,
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(
        env.count(
            "SELECT count(DISTINCT attributes->'output_fields'->>'container.id') FROM events"
        )
        .await,
        EVENTS as i64
    );
    second.kill().unwrap();
    second.wait().unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_the_durable_consumers() {
    let env = TestEnv::new("shared").await;
    palisade_schema::migrate(&env.pool).await.unwrap();
    let ports = [free_port(), free_port()];
    let mut children: Vec<Child> = ports.iter().map(|p| spawn_palisade(&env, *p)).collect();
    // Let both bind their consumers before the load arrives.
    tokio::time::sleep(Duration::from_secs(2)).await;
    publish_all(&env, alerts(EVENTS)).await;
    env.wait_for_count(
        "SELECT count(*) FROM events",
        EVENTS as i64,
        Duration::from_secs(120),
    )
    .await;

    let prefix = "palisade_ingest_records_total{projection=\"events\"} ";
    let mut records = Vec::new();
    for port in ports {
        records.push(counter(&scrape(port).await, prefix));
    }
    for child in &mut children {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    assert!(
        records.iter().all(|&n| n > 0),
        "both processes took work: {records:?}"
    );
    assert_eq!(
        records.iter().sum::<u64>(),
        EVENTS as u64,
        "each event written once: {records:?}"
    );
    env.cleanup().await;
}
