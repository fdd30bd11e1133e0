//! Semantic alert grouping benchmark (issue 5).
//!
//! 1. Quality: `BENCH_PER_PATTERN` events (default 200) of each generated attack
//!    pattern (src/bursts.rs: credential reads, reverse shells, cryptominers,
//!    network scans, SSH brute force, each written many ways) plus the real Falco
//!    fixture alerts (one pattern per rule), embedded with the real model, grouped
//!    in one window at each threshold: purity, groups, and groups against the known
//!    patterns.
//! 2. Throughput: `BENCH_EVENTS` events (default 100,000) over `BENCH_DAYS` days
//!    (default 1; more days, more windows, so more texts new to their window) drawn from
//!    those texts go through `grouping::assign` in batches of 256, each in its own
//!    transaction, against PostgreSQL (alerts assigned per second), at the default
//!    threshold. The vectors were stored first, as the projection does.
//!
//! `cargo bench --bench grouping` after `scripts/stack.sh up` and
//! `eval "$(scripts/stack.sh env)"`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use chrono::{Duration, TimeZone, Utc};
use palisade::bursts::{self, LabelledText};
use palisade_core::grouping::{self, GroupingConfig, WindowGroups, DEFAULT_THRESHOLD};
use palisade_core::vectors::{vector_literal, EventLabels, EventText, Provenance, TextKey};
use palisade_embeddings::{Embedder, EmbedderConfig};
use uuid::Uuid;

mod support;

#[tokio::main]
async fn main() {
    let per_pattern = support::env_or::<usize>("BENCH_PER_PATTERN", 200);
    let events_total = support::env_or::<usize>("BENCH_EVENTS", 100_000);
    let days = support::env_or::<usize>("BENCH_DAYS", 1).max(1) as i64;
    let start = Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0).unwrap();
    let mut messages = bursts::attack_bursts(start, per_pattern);
    messages.extend(bursts::falco_by_rule(&support::fixture(
        "falco/alerts.jsonl",
    )));
    let events: Vec<LabelledText> = bursts::embedded(&messages);
    let known: HashSet<&str> = events.iter().map(|e| e.pattern.as_str()).collect();

    let embedder = Embedder::load(&EmbedderConfig::from_env().expect("embedder config"))
        .expect("the model: scripts/stack.sh model");
    let provenance = Provenance {
        model: embedder.model_id(),
        text_version: 1,
    };
    let mut distinct: Vec<&str> = Vec::new();
    let mut seen = HashSet::new();
    for e in &events {
        if seen.insert(e.text.as_str()) {
            distinct.push(&e.text);
        }
    }
    let started = Instant::now();
    let vectors = embedder.embed_batch(&distinct).expect("embedding");
    println!(
        "corpus: {} events ({} per generated pattern + {} fixture alerts), {} known patterns, \
         {} distinct texts embedded in {:.1} s",
        events.len(),
        per_pattern,
        messages.len() - per_pattern * bursts::PATTERNS.len(),
        known.len(),
        distinct.len(),
        started.elapsed().as_secs_f64()
    );
    let vector_of: HashMap<&str, &Vec<f32>> =
        distinct.iter().copied().zip(vectors.iter()).collect();

    // 1. Quality, one window.
    println!("threshold | groups | groups / known patterns | purity");
    let window = GroupingConfig {
        threshold: 0.0,
        window: Duration::days(3650),
    }
    .window_of(start);
    let mut ordered: Vec<&LabelledText> = events.iter().collect();
    ordered.sort_by_key(|e| e.ts);
    for threshold in [0.5_f32, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9] {
        let mut groups = WindowGroups::default();
        let mut group_of: HashMap<&str, Uuid> = HashMap::new();
        for e in &ordered {
            if !group_of.contains_key(e.text.as_str()) {
                let key = TextKey::of(&provenance, &e.text);
                let assignment = groups.assign(&window, key, vector_of[e.text.as_str()], threshold);
                group_of.insert(&e.text, assignment.group);
            }
        }
        let purity = bursts::purity(
            ordered
                .iter()
                .map(|e| (group_of[e.text.as_str()], &e.pattern)),
        );
        println!(
            "{threshold:.2} | {} | {:.2} | {purity:.3}",
            groups.groups().len(),
            groups.groups().len() as f64 / known.len() as f64
        );
    }

    // 2. Throughput through PostgreSQL.
    let admin_url = std::env::var("DATABASE_URL")
        .expect("DATABASE_URL: run `eval \"$(scripts/stack.sh env)\"` first");
    let (_, pool) = support::fresh_database(&admin_url, "palisade_bench_grouping").await;
    let keys: Vec<TextKey> = distinct
        .iter()
        .map(|t| TextKey::of(&provenance, t))
        .collect();
    sqlx::query(
        "INSERT INTO embedding_texts (text_key, model, text_version, text, embedding) \
         SELECT k, 'bench', 1, t, e::vector FROM unnest($1::bytea[], $2::text[], $3::text[]) AS x(k, t, e)",
    )
    .bind(keys.iter().map(|k| k.as_bytes().to_vec()).collect::<Vec<_>>())
    .bind(&distinct)
    .bind(vectors.iter().map(|v| vector_literal(v)).collect::<Vec<_>>())
    .execute(&pool)
    .await
    .unwrap();
    let config = GroupingConfig::default();
    let mut rng = support::Rng(7);
    let day = start - Duration::hours(10);
    let stream: Vec<EventText> = (0..events_total)
        .map(|i| EventText {
            id: Uuid::from_u128(i as u128 + 1),
            ts: day + Duration::milliseconds((i as i64) * days * 86_400_000 / events_total as i64),
            key: keys[rng.below(keys.len() as u64) as usize],
            labels: EventLabels::default(),
        })
        .collect();
    let mut batch_ms = Vec::new();
    let started = Instant::now();
    let mut assigned = 0;
    let mut opened = 0;
    for batch in stream.chunks(256) {
        let t = Instant::now();
        let mut tx = pool.begin().await.unwrap();
        let summary = grouping::assign(&mut tx, &config, batch, &[])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        batch_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assigned += summary.texts_assigned;
        opened += summary.groups_opened;
    }
    let seconds = started.elapsed().as_secs_f64();
    batch_ms.sort_by(f64::total_cmp);
    println!(
        "throughput: {events_total} events in batches of 256 in {seconds:.2} s = {:.0} alerts/s \
         over {days} day(s) (threshold {DEFAULT_THRESHOLD}, window 24 h; {assigned} new (window, text) pairs, \
         {opened} groups opened); batch p50 {:.1} ms, p99 {:.1} ms",
        events_total as f64 / seconds,
        support::percentile(&batch_ms, 50.0),
        support::percentile(&batch_ms, 99.0),
    );
    pool.close().await;
}
