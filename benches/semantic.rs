//! Semantic hunting benchmark (issue 4): nearest-neighbour search over real MiniLM
//! embeddings in pgvector, and `filter | SIMILAR_TO(…)` on the 10M-event corpus.
//!
//! Runs on the corpus the search benchmark keeps (`BENCH_KEEP=1 cargo bench --bench
//! search`: database `palisade_bench_search`, index `target/bench-search-index`):
//!
//! 1. Migrates that database (adds `embedding_texts` and `event_vectors`).
//! 2. Share embedded: the default selective-vectorisation policy over a fixed random
//!    sample of the corpus's events (`BENCH_SAMPLE_PERCENT` of its pages, default 3).
//! 3. Takes `BENCH_VECTORS` (default 100,000) of the sampled events that the policy
//!    selects (or fewer: as many as bring `BENCH_TEXTS` distinct texts, if set), makes
//!    each one's embedding text with the projection's own function, embeds each
//!    distinct text once with the int8 model, writes texts and events
//!    through the vectors store, then builds the HNSW index (timed). A second run with
//!    `BENCH_KEEP=1` reuses them when the count matches.
//! 4. Top-50 texts for 50 hunting phrases: HNSW (`hnsw.ef_search` = `BENCH_EF`,
//!    default 150) against the exact answer of a sequential scan (the baseline, same
//!    run): p50/p99 latency of both, recall@50 of HNSW; the clump members scored by
//!    PostgreSQL, from a clump cache of `BENCH_CLUMP_CACHE_MB` (default 512) filled
//!    after the first round, and from an empty one.
//! 5. Hybrid through the query engine (SRQL → candidates from SQL or the search index →
//!    exact scan or HNSW + re-check → rows): p50/p99 per class, with the path taken.
//!
//! `cargo bench --bench semantic` after `scripts/stack.sh up` (`BENCH_ANN_ONLY=1` stops
//! after step 4; `BENCH_HNSW_M` and `BENCH_HNSW_EF_CONSTRUCTION` rebuild the index with
//! other options).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use palisade::query::search::Translator;
use palisade::query::{semantic, QueryEngine, QueryLimits, SemanticSearch};
use palisade_core::clumps::ClumpCache;
use palisade_core::search::{IndexOptions, SearchIndex};
use palisade_core::store::{Batch, Store};
use palisade_core::vectors::{
    self, BatchVectors, CandidateEvents, EventLabels, EventText, NearText, Neighbour, Provenance,
    TextKey, TextVector, REPRESENTATIVE_DISTANCE,
};
use palisade_embeddings::policy::{self, EventView, VectorPolicy};
use palisade_embeddings::{text, Embedder, EmbedderConfig};
use palisade_srql::Candidates;
use serde_json::{Map, Value};
use uuid::Uuid;

mod support;

use support::{percentile, with_database};

/// Hunting phrases an analyst types: the ANN and hybrid queries.
const PHRASES: [&str; 50] = [
    "cat /etc/shadow",
    "read password hashes",
    "reverse shell to a remote host",
    "netcat listener spawned",
    "ssh brute force login attempts",
    "privilege escalation via sudo",
    "user not allowed to run sudo",
    "container escape via privileged mount",
    "crypto miner started in a container",
    "download and execute a script with curl",
    "write below a binary directory",
    "modify a system configuration file",
    "terminal shell in a container",
    "kernel out of memory killer",
    "port scan from an external address",
    "disable firewall rules",
    "new user account created",
    "add user to the sudo group",
    "failed login for root",
    "invalid user tried to log in",
    "authentication failure for admin",
    "suspicious outbound connection",
    "dns tunneling",
    "tamper with audit logs",
    "clear bash history",
    "load a kernel module",
    "ptrace attach to a process",
    "read an ssh private key",
    "set the setuid bit on a file",
    "shell spawned by a web server",
    "package manager run in a container",
    "mount the host filesystem",
    "connect to the kubernetes api server",
    "access the cloud metadata service",
    "exfiltrate data over http",
    "ransomware encrypting files",
    "malware detected in a file",
    "eicar test file",
    "packets dropped from a blocklisted ip",
    "syn flood detected",
    "disk full error",
    "service crashed with a segmentation fault",
    "session opened for user root",
    "accepted publickey for deploy",
    "cron job modified",
    "systemd unit created",
    "docker socket mounted in a container",
    "credential dump with mimikatz",
    "lateral movement over ssh",
    "base64 encoded command executed",
];

/// One row of the corpus, as the policy and the text function see it.
struct Row {
    kind: String,
    source: String,
    severity_level: i16,
    rule: Option<String>,
    message: String,
    attributes: Map<String, Value>,
}

impl Row {
    fn view(&self) -> EventView<'_> {
        EventView {
            kind: &self.kind,
            source: &self.source,
            severity_level: u8::try_from(self.severity_level).unwrap_or(0),
            rule: self.rule.as_deref(),
            message: &self.message,
            attributes: &self.attributes,
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    (percentile(&samples, 50.0), percentile(&samples, 99.0))
}

/// id, ts, type, source, severity_level, rule, message, attributes.
type SampleRow = (
    Uuid,
    DateTime<Utc>,
    Option<String>,
    String,
    String,
    i16,
    Option<String>,
    String,
    Value,
);

/// What to take from the sample: events until one of these is reached.
struct Wanted {
    /// Events the policy selects (`BENCH_VECTORS`).
    events: usize,
    /// Distinct embedding texts among them (`BENCH_TEXTS`), if set.
    texts: Option<usize>,
}

/// The events to embed: the policy over a fixed sample of the corpus, read in time
/// order, and each selected event's embedding text, every distinct text once.
struct Selection {
    /// Sampled events read (the policy saw each of them).
    read: usize,
    /// The selected events with their text keys, in time order.
    events: Vec<EventText>,
    /// Each distinct text, in the order its first event came.
    texts: Vec<(TextKey, String)>,
}

/// Reads a fixed sample of the corpus (about `percent`% of its pages) in time order,
/// applies the policy, and stops once `wanted` is reached. Streams, so only the selected
/// events' keys and the distinct texts are held, whatever the sample's size.
async fn select(
    pool: &sqlx::PgPool,
    percent: f64,
    provenance: &Provenance,
    wanted: &Wanted,
) -> Selection {
    let sql = format!(
        "SELECT id, ts, host, type, source, severity_level, rule, message, attributes \
             FROM events TABLESAMPLE SYSTEM ({percent}) REPEATABLE (42) ORDER BY ts, id"
    );
    let mut stream = sqlx::query_as::<_, SampleRow>(&sql).fetch(pool);
    let policy = VectorPolicy::default();
    let mut selection = Selection {
        read: 0,
        events: Vec::new(),
        texts: Vec::new(),
    };
    let mut seen = std::collections::HashSet::new();
    while selection.events.len() < wanted.events
        && wanted
            .texts
            .is_none_or(|texts| selection.texts.len() < texts)
    {
        let Some((id, ts, host, kind, source, severity_level, rule, message, attributes)) =
            stream.try_next().await.unwrap()
        else {
            break;
        };
        selection.read += 1;
        let row = Row {
            kind,
            source,
            severity_level,
            rule,
            message,
            attributes: match attributes {
                Value::Object(map) => map,
                _ => Map::new(),
            },
        };
        if !policy::decide(&policy, &row.view()).embed {
            continue;
        }
        let text = text::embedding_text(&row.view());
        let key = TextKey::of(provenance, &text);
        if seen.insert(key) {
            selection.texts.push((key, text));
        }
        selection.events.push(EventText {
            id,
            ts,
            key,
            labels: EventLabels {
                host,
                kind: row.kind,
                severity_level: row.severity_level,
            },
        });
    }
    selection
}

/// Each distinct text's vector, embedded once, in batches of 256.
async fn embed_all(embedder: &Embedder, distinct: &[(TextKey, String)]) -> Vec<TextVector> {
    let started = Instant::now();
    let mut texts = Vec::with_capacity(distinct.len());
    for chunk in distinct.chunks(256) {
        let batch: Vec<String> = chunk.iter().map(|(_, t)| t.clone()).collect();
        let embedder = embedder.clone();
        let embeddings = tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
            embedder.embed_batch(&refs)
        })
        .await
        .unwrap()
        .expect("embedding");
        texts.extend(
            chunk
                .iter()
                .zip(embeddings)
                .map(|((key, text), embedding)| TextVector {
                    key: *key,
                    text: text.clone(),
                    embedding,
                    representative: None,
                }),
        );
        if texts.len() % 10_240 == 0 {
            eprintln!(
                "  embedded {} of {} texts ({:.0}/s)",
                texts.len(),
                distinct.len(),
                texts.len() as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    texts
}

/// The baseline: the `n` nearest of every stored text, by a sequential scan.
/// Recall of approximate top-50s against the exact ones, over the phrases.
#[derive(Default)]
struct Accuracy {
    /// Share of the exact texts found.
    by_id: Vec<f64>,
    /// Share found at least as near as the exact 50th (texts can tie there).
    by_distance: Vec<f64>,
    /// How much less similar the approximate 50th is than the exact 50th.
    gaps: Vec<f64>,
}

impl Accuracy {
    fn add(&mut self, approximate: &[NearText], exact: &[NearText]) {
        let truth: std::collections::HashSet<TextKey> = exact.iter().map(|n| n.key).collect();
        let same_ids = approximate
            .iter()
            .filter(|n| truth.contains(&n.key))
            .count();
        let kth = exact.last().map_or(1.0, |n| n.similarity);
        let near_enough = approximate
            .iter()
            .filter(|n| n.similarity >= kth - 1e-6)
            .count();
        let wanted = truth.len().max(1) as f64;
        self.by_distance.push(near_enough as f64 / wanted);
        self.by_id.push(same_ids as f64 / wanted);
        self.gaps
            .push(kth - approximate.last().map_or(0.0, |n| n.similarity));
    }

    /// The table's recall and gap cells: mean and worst of each.
    fn row(&self) -> String {
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let least = |v: &[f64]| v.iter().copied().fold(1.0, f64::min);
        let most = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
        format!(
            "{:.3}, {:.2} | {:.3}, {:.2} | {:.4}, {:.4}",
            mean(&self.by_id),
            least(&self.by_id),
            mean(&self.by_distance),
            least(&self.by_distance),
            mean(&self.gaps),
            most(&self.gaps)
        )
    }
}

/// The top-50 texts for `query` in a transaction of its own, and how long it took
/// (ms).
async fn timed_nearest_texts(
    pool: &sqlx::PgPool,
    clumps: Option<&ClumpCache>,
    query: &[f32],
    ef: u32,
) -> (Vec<NearText>, f64) {
    let mut tx = pool.begin().await.unwrap();
    let started = Instant::now();
    let found = vectors::nearest_texts(&mut tx, clumps, query, 50, ef)
        .await
        .unwrap();
    let took = ms(started.elapsed());
    tx.commit().await.unwrap();
    (found, took)
}

async fn exact_nearest_texts(
    conn: &mut sqlx::PgConnection,
    query: &[f32],
    n: i64,
) -> Vec<NearText> {
    let rows: Vec<(Vec<u8>, f64)> = sqlx::query_as(
        "SELECT text_key, 1 - (embedding <=> $1::vector) FROM embedding_texts \
         ORDER BY embedding <=> $1::vector LIMIT $2",
    )
    .bind(vectors::vector_literal(query))
    .bind(n)
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(key, similarity)| NearText {
            key: TextKey::from_stored(&key).expect("a stored text key"),
            similarity,
        })
        .collect()
}

/// The partial HNSW index over the representatives, as migration 0012 makes it,
/// with `options` (e.g. ` WITH (m = 32, ef_construction = 200)`).
fn create_hnsw(options: &str) -> String {
    format!(
        "CREATE INDEX embedding_texts_hnsw ON embedding_texts \
         USING hnsw (embedding vector_cosine_ops){options} WHERE representative IS NULL"
    )
}

/// Chooses every stored text's representative again with `distance`, in the
/// order the texts were written, as the projection would have (BENCH_RECLUSTER=1:
/// tries another distance without embedding again).
async fn recluster(pool: &sqlx::PgPool, store: &Store, distance: f32) {
    let started = Instant::now();
    // Every text out of the graph (its own representative) until its turn.
    let create = create_hnsw(" WITH (m = 32, ef_construction = 200)");
    for statement in [
        "DROP INDEX IF EXISTS embedding_texts_hnsw",
        "UPDATE embedding_texts SET representative = text_key",
        create.as_str(),
    ] {
        sqlx::query(statement).execute(pool).await.unwrap();
    }
    let rows: Vec<(Vec<u8>, String, String)> = sqlx::query_as(
        "SELECT text_key, coalesce(text, ''), embedding::text FROM embedding_texts \
         ORDER BY embedded_at, text_key",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    for chunk in rows.chunks(256) {
        let mut texts: Vec<TextVector> = chunk
            .iter()
            .map(|(key, text, embedding)| TextVector {
                key: TextKey::from_stored(key).expect("a stored text key"),
                text: text.clone(),
                embedding: vectors::parse_vector(embedding).expect("a stored vector"),
                representative: None,
            })
            .collect();
        store
            .choose_representatives(&mut texts, distance)
            .await
            .unwrap();
        let keys: Vec<Vec<u8>> = texts.iter().map(|t| t.key.as_bytes().to_vec()).collect();
        let representatives: Vec<Option<Vec<u8>>> = texts
            .iter()
            .map(|t| t.representative.map(|k| k.as_bytes().to_vec()))
            .collect();
        sqlx::query(
            "UPDATE embedding_texts t SET representative = r.representative \
             FROM unnest($1::bytea[], $2::bytea[]) AS r(key, representative) \
             WHERE t.text_key = r.key",
        )
        .bind(&keys)
        .bind(&representatives)
        .execute(pool)
        .await
        .unwrap();
    }
    // The update left a dead copy of every row behind.
    sqlx::query("VACUUM FULL ANALYZE embedding_texts")
        .execute(pool)
        .await
        .unwrap();
    println!(
        "- chose the representatives of {} texts again (distance {distance}) in {:.1} s",
        rows.len(),
        started.elapsed().as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    // `RUST_LOG=palisade=debug` shows the engine's stage timings for each query.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let sample_percent = support::env_or::<usize>("BENCH_SAMPLE_PERCENT", 3) as f64;
    let repeat = support::env_or::<usize>("BENCH_REPEAT", 3);
    let ef = u32::try_from(support::env_or::<usize>("BENCH_EF", 150)).unwrap_or(150);
    let keep = std::env::var("BENCH_KEEP").is_ok_and(|v| v == "1");
    let representative_distance = std::env::var("BENCH_REPRESENTATIVE_DISTANCE")
        .ok()
        .and_then(|v| v.parse::<f32>().ok())
        .unwrap_or(REPRESENTATIVE_DISTANCE);
    let admin_url = std::env::var("DATABASE_URL")
        .expect("DATABASE_URL: run `eval \"$(scripts/stack.sh env)\"` first");
    let url = with_database(&admin_url, "palisade_bench_search");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect(&url)
        .await
        .expect(
            "the search benchmark's corpus: run `BENCH_KEEP=1 cargo bench --bench search` first",
        );
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    palisade_schema::migrate(&pool).await.unwrap();
    let config = EmbedderConfig::from_env().unwrap();
    let embedder = Embedder::load(&config).expect("the model: run `scripts/stack.sh model`");
    println!(
        "## Semantic benchmark: {events} events, model {}",
        embedder.model_id()
    );

    // Share embedded, and the events to embed.
    let provenance = Provenance {
        model: embedder.model_id(),
        text_version: i16::try_from(text::TEXT_VERSION).unwrap_or(1),
    };
    let wanted = Wanted {
        events: support::env_or::<usize>("BENCH_VECTORS", 100_000),
        texts: std::env::var("BENCH_TEXTS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok()),
    };
    let started = Instant::now();
    let selection = select(&pool, sample_percent, &provenance, &wanted).await;
    println!(
        "- policy: {} of the first {} sampled events embedded ({:.1}%), with {} distinct \
         texts, read in {:.1} s",
        selection.events.len(),
        selection.read,
        100.0 * selection.events.len() as f64 / selection.read.max(1) as f64,
        selection.texts.len(),
        started.elapsed().as_secs_f64()
    );
    let have: i64 = sqlx::query_scalar("SELECT count(*) FROM event_vectors")
        .fetch_one(&pool)
        .await
        .unwrap();
    let selected = selection.events.len();
    if !(keep && have == selected as i64) {
        sqlx::query("TRUNCATE event_vectors, embedding_texts")
            .execute(&pool)
            .await
            .unwrap();
        let started = Instant::now();
        let vectors = BatchVectors {
            texts: embed_all(&embedder, &selection.texts).await,
            events: selection.events,
        };
        let embed_s = started.elapsed().as_secs_f64();
        let store = Store::new(pool.clone());
        let started = Instant::now();
        // In parts of 1,000 events, each with the texts it brings in first, their
        // representatives chosen as the projection does (the HNSW index is kept
        // up to date, as it is live).
        let mut written = std::collections::HashSet::new();
        for chunk in vectors.events.chunks(1000) {
            let ids: Vec<Uuid> = chunk.iter().map(|e| e.id).collect();
            let mut part = vectors.for_events(&ids);
            part.texts.retain(|t| written.insert(t.key));
            store
                .choose_representatives(&mut part.texts, representative_distance)
                .await
                .unwrap();
            store
                .write_vectors("bench", 0, &Batch::default(), &provenance, &part, None)
                .await
                .unwrap();
        }
        let write_s = started.elapsed().as_secs_f64();
        println!(
            "- {} events have {} distinct embedding texts ({:.1}%); embedded those in \
             {embed_s:.0} s ({:.0} texts/s, int8, 2 threads: {:.0} events/s), wrote them in \
             {write_s:.1} s",
            vectors.events.len(),
            vectors.texts.len(),
            100.0 * vectors.texts.len() as f64 / vectors.events.len().max(1) as f64,
            vectors.texts.len() as f64 / embed_s,
            vectors.events.len() as f64 / embed_s,
        );
    } else {
        println!("- reusing the {have} kept event vectors");
        if std::env::var("BENCH_RECLUSTER").is_ok_and(|v| v == "1") {
            recluster(&pool, &Store::new(pool.clone()), representative_distance).await;
        }
    }
    let (representatives, largest_clump): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE representative IS NULL), \
                coalesce((SELECT max(n) FROM (SELECT count(*) + 1 AS n FROM embedding_texts \
                    WHERE representative IS NOT NULL GROUP BY representative) c), 1) \
         FROM embedding_texts",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    println!(
        "- representatives (in the HNSW graph): {representatives}, largest clump {largest_clump} \
         texts (representative distance {representative_distance})"
    );
    // The index as the migrations make it (m 32, ef_construction 200) unless
    // BENCH_HNSW_M / BENCH_HNSW_EF_CONSTRUCTION say otherwise; rebuilt when its
    // options differ from those asked for (16 and 64 are pgvector's defaults).
    let m = support::env_or::<usize>("BENCH_HNSW_M", 32);
    let ef_construction = support::env_or::<usize>("BENCH_HNSW_EF_CONSTRUCTION", 200);
    let options = if (m, ef_construction) == (16, 64) {
        String::new()
    } else {
        format!(" WITH (m = {m}, ef_construction = {ef_construction})")
    };
    let existing: Option<String> = sqlx::query_scalar(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'embedding_texts_hnsw'",
    )
    .fetch_optional(&pool)
    .await
    .unwrap();
    let wanted_options = format!("m='{m}', ef_construction='{ef_construction}'");
    let same = existing.as_deref().is_some_and(|def| {
        if !def.contains("representative IS NULL") {
            false
        } else if options.is_empty() {
            !def.contains("WITH")
        } else {
            def.contains(&wanted_options)
        }
    });
    if !same {
        let mut conn = pool.acquire().await.unwrap();
        let started = Instant::now();
        let create = create_hnsw(&options);
        for statement in [
            "DROP INDEX IF EXISTS embedding_texts_hnsw",
            "SET maintenance_work_mem = '2GB'",
            create.as_str(),
            "VACUUM ANALYZE embedding_texts",
            "VACUUM ANALYZE event_vectors",
        ] {
            sqlx::query(statement).execute(&mut *conn).await.unwrap();
        }
        println!(
            "- built the HNSW index (m {m}, ef_construction {ef_construction}) in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let size = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .unwrap() as f64
                / 1048576.0
        }
    };
    let texts: i64 = sqlx::query_scalar("SELECT count(*) FROM embedding_texts")
        .fetch_one(&pool)
        .await
        .unwrap();
    println!(
        "- embedding_texts: {texts} rows, table {:.0} MiB, HNSW index {:.0} MiB; \
         event_vectors: {} rows, table and indexes {:.0} MiB",
        size("SELECT pg_table_size('embedding_texts')").await,
        size("SELECT pg_relation_size('embedding_texts_hnsw')").await,
        selected,
        size("SELECT pg_total_relation_size('event_vectors')").await,
    );

    // ANN: HNSW vs the exact scan over the distinct texts, same queries, same run;
    // the clump members scored by PostgreSQL and in memory (a cache filled after
    // each search of the first round, as the server does; and an empty one for each
    // phrase: a search right after start, or with clumps that all changed).
    let cache_mb = support::env_or::<usize>("BENCH_CLUMP_CACHE_MB", 512);
    let scan_members = support::env_or::<usize>(
        "BENCH_SCAN_MEMBERS",
        palisade_core::clumps::DEFAULT_SCAN_MEMBERS,
    );
    let new_cache = |capacity: usize| ClumpCache::new(capacity).with_scan_members(scan_members);
    let cache = new_cache(cache_mb * 1024 * 1024);
    let queries: Vec<Vec<f32>> = embedder.embed_batch(&PHRASES).unwrap();
    let (mut in_database_ms, mut in_memory_ms, mut cold_ms, mut exact_ms) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut fill_ms, mut filled) = (Vec::new(), 0);
    let (mut in_database, mut in_memory) = (Accuracy::default(), Accuracy::default());
    for round in 0..=repeat {
        for q in &queries {
            let (by_database, database_took) = timed_nearest_texts(&pool, None, q, ef).await;
            let (by_memory, memory_took) = timed_nearest_texts(&pool, Some(&cache), q, ef).await;
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("SET LOCAL enable_indexscan = off")
                .execute(&mut *tx)
                .await
                .unwrap();
            let started = Instant::now();
            let exact = exact_nearest_texts(&mut tx, q, 50).await;
            let exact_took = ms(started.elapsed());
            tx.commit().await.unwrap();
            if round == 0 {
                // The first round's in-memory answers come partly from PostgreSQL
                // (the clumps not held yet); the next rounds' from the cache alone.
                in_database.add(&by_database, &exact);
                let empty = new_cache(cache.capacity());
                cold_ms.push(timed_nearest_texts(&pool, Some(&empty), q, ef).await.1);
                let started = Instant::now();
                let read = vectors::fill_clump_cache(&pool, &cache).await.unwrap();
                if read > 0 {
                    fill_ms.push(ms(started.elapsed()));
                    filled += read;
                }
                continue;
            }
            if round == 1 {
                in_memory.add(&by_memory, &exact);
            }
            in_database_ms.push(database_took);
            in_memory_ms.push(memory_took);
            exact_ms.push(exact_took);
        }
    }
    let (d50, d99) = summary(in_database_ms);
    let (m50, m99) = summary(in_memory_ms);
    let (c50, c99) = summary(cold_ms);
    let (e50, e99) = summary(exact_ms);
    let held = cache.stats();
    println!(
        "\n| top-50 over {texts} text vectors | p50 | p99 | recall@50 (mean, min) | recall@50 by distance (mean, min) | 50th similarity short of exact (mean, max) |"
    );
    println!("|---|---|---|---|---|---|");
    let hnsw = format!("HNSW (m {m}, ef_construction {ef_construction}), ef_search {ef}");
    println!(
        "| {hnsw}, members scored in PostgreSQL | {d50:.2} ms | {d99:.2} ms | {} |",
        in_database.row()
    );
    println!(
        "| in memory: clumps nearest by centroid until they hold {scan_members} members, scanned by 4-bit codes, the nearest {} of those exactly | {m50:.2} ms | {m99:.2} ms | {} |",
        palisade_core::clumps::members_scored_exactly(50),
        in_memory.row()
    );
    println!(
        "| the same, empty cache (PostgreSQL scores the missed clumps) | {c50:.2} ms | {c99:.2} ms | | | |"
    );
    println!("| baseline: exact scan | {e50:.2} ms | {e99:.2} ms | 1 | 1 | 0 |");
    println!(
        "\n- clump cache after the runs: {} representatives, {} clumps, {} members, {:.0} MiB ({} MiB capacity); {} hits, {} misses; member scan at level {}",
        held.representatives,
        held.clumps,
        held.members,
        held.bytes as f64 / 1048576.0,
        cache_mb,
        held.hits,
        held.misses,
        palisade_core::clumps::scan_level()
    );
    println!(
        "- filling it after the first round's searches read {filled} clumps in {:.0} ms ({} fills)",
        fill_ms.iter().sum::<f64>(),
        fill_ms.len()
    );

    if std::env::var("BENCH_ANN_ONLY").is_ok_and(|v| v == "1") {
        return;
    }

    // Hybrid through the engine on the whole corpus.
    let index_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-search-index");
    let index = Arc::new(
        SearchIndex::open(&index_dir, IndexOptions::default())
            .expect("the search benchmark's index"),
    );
    let hybrid_cache = (cache_mb > 0).then(|| Arc::new(new_cache(cache_mb * 1024 * 1024)));
    let engine = QueryEngine::new(
        pool.clone(),
        index.clone(),
        QueryLimits {
            timeout: Duration::from_secs(120),
            ..Default::default()
        },
    )
    .with_semantic(SemanticSearch {
        embedder: embedder.clone(),
        exact_max: 20_000,
        max_neighbourhood: 1000,
        ef_search: ef,
        clumps: hybrid_cache.clone(),
    });
    let hosts: Vec<String> = sqlx::query_scalar(
        "SELECT host FROM events TABLESAMPLE SYSTEM (0.1) REPEATABLE (7) GROUP BY host ORDER BY host LIMIT 10",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let window: (DateTime<Utc>, DateTime<Utc>) =
        sqlx::query_as("SELECT min(ts), max(ts) FROM event_vectors")
            .fetch_one(&pool)
            .await
            .unwrap();
    let mid = window.0 + (window.1 - window.0) / 2;
    let classes: Vec<(&str, Vec<String>)> = vec![
        (
            "SIMILAR_TO alone",
            PHRASES[..10]
                .iter()
                .map(|p| format!("SIMILAR_TO({p:?})"))
                .collect(),
        ),
        (
            "host filter (SQL)",
            PHRASES[10..20]
                .iter()
                .zip(&hosts)
                .map(|(p, h)| format!("host:{h} | SIMILAR_TO({p:?})"))
                .collect(),
        ),
        (
            "alert type + host (SQL)",
            PHRASES[20..30]
                .iter()
                .zip(&hosts)
                .map(|(p, h)| format!("type:falco_alert AND host:{h} | SIMILAR_TO({p:?})"))
                .collect(),
        ),
        (
            "full-text filter (index)",
            PHRASES[30..40]
                .iter()
                .zip([
                    "password",
                    "sudo",
                    "shell",
                    "container",
                    "root",
                    "denied",
                    "session",
                    "sshd",
                    "privileged",
                    "user",
                ])
                .map(|(p, w)| format!("{w} | SIMILAR_TO({p:?})"))
                .collect(),
        ),
        (
            "time window, 6 h (SQL)",
            PHRASES[40..50]
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let from = mid - chrono::Duration::hours(6 * i as i64);
                    let to = from + chrono::Duration::hours(6);
                    format!(
                        "time:[{},{}] | SIMILAR_TO({p:?})",
                        from.format("%Y-%m-%dT%H:%M:%SZ"),
                        to.format("%Y-%m-%dT%H:%M:%SZ")
                    )
                })
                .collect(),
        ),
    ];
    println!(
        "\n| hybrid class | queries | p50 | p99 | ranking (exact/hnsw) | mean rows | \
         recall@k vs every candidate ranked exactly (mean, min) | by similarity |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut all = Vec::new();
    let mut rechecked = Vec::new();
    // `BENCH_CLASSES=full-text,host` runs only the classes whose names contain one of those.
    let only: Option<Vec<String>> = std::env::var("BENCH_CLASSES")
        .ok()
        .map(|v| v.split(',').map(str::to_owned).collect());
    for (class, srqls) in &classes {
        if only
            .as_ref()
            .is_some_and(|only| !only.iter().any(|o| class.contains(o.as_str())))
        {
            continue;
        }
        let mut took = Vec::new();
        let (mut exact, mut hnsw, mut rows) = (0, 0, 0);
        let (mut by_event, mut by_similarity) = (Vec::new(), Vec::new());
        for round in 0..=repeat {
            for q in srqls {
                let started = Instant::now();
                let answer = engine
                    .run(q, None, None)
                    .await
                    .unwrap_or_else(|e| panic!("{q}: {e}"));
                let elapsed = ms(started.elapsed());
                if round == 0 {
                    match answer.semantic.as_ref().map(|s| s.ranking) {
                        Some("exact") => exact += 1,
                        _ => hnsw += 1,
                    }
                    rows += answer.rows.len();
                    // Against every candidate ranked exactly (after the timed query,
                    // so that it warms nothing the query uses first).
                    if let Some(exact) =
                        exact_hybrid(&pool, &index, hybrid_cache.as_deref(), &embedder, q).await
                    {
                        let (e, s) = hybrid_recall(&answer.rows, &exact);
                        by_event.push(e);
                        by_similarity.push(s);
                    }
                    if let Some(s) = answer.semantic.as_ref().filter(|s| s.rechecked.is_some()) {
                        let least = answer
                            .rows
                            .last()
                            .and_then(|r| r.get("similarity"))
                            .and_then(Value::as_f64);
                        rechecked.push(format!(
                            "| `{q}` | {} | {} | {} | {} | {} | {elapsed:.1} ms |",
                            answer.rows.len(),
                            s.neighbourhood.unwrap_or(0),
                            s.rechecked.unwrap_or(0),
                            s.sampled.map_or("-".into(), |n| n.to_string()),
                            least.map_or("-".into(), |l| format!("{l:.3}")),
                        ));
                    }
                    continue;
                }
                took.push(elapsed);
            }
        }
        all.extend(took.iter().copied());
        let (p50, p99) = summary(took);
        let recall = |v: &[f64]| {
            if v.is_empty() {
                "-".to_owned()
            } else {
                let least = v.iter().copied().fold(f64::MAX, f64::min);
                format!("{:.3}, {least:.2}", v.iter().sum::<f64>() / v.len() as f64)
            }
        };
        println!(
            "| {class} | {} | {p50:.1} ms | {p99:.1} ms | {exact}/{hnsw} | {:.1} | {} | {} |",
            srqls.len(),
            rows as f64 / srqls.len() as f64,
            recall(&by_event),
            recall(&by_similarity)
        );
    }
    let (p50, p99) = summary(all);
    println!(
        "| **all** | {} | {p50:.1} ms | {p99:.1} ms | | | | |",
        PHRASES.len()
    );
    if !rechecked.is_empty() {
        println!("\nHNSW with a re-check (the first, untimed round):\n");
        println!("| query | rows | neighbourhood | events re-checked | matches ranked exactly | least similarity | first run |");
        println!("|---|---:|---:|---:|---:|---:|---:|");
        for line in &rechecked {
            println!("{line}");
        }
    }
    println!(
        "\nExample queries: {:?}",
        classes
            .iter()
            .map(|(_, q)| q[0].clone())
            .collect::<Vec<_>>()
    );
}

/// The exact answer of a filtered `SIMILAR_TO` query, for the hybrid recall: every
/// embedded event its filter selects (no threshold, no HNSW), ranked by its text's
/// vector (held texts from `cache`, the others by PostgreSQL), nearest first, then
/// newest, as the engine ranks. `None` for a query without a filter.
async fn exact_hybrid(
    pool: &sqlx::PgPool,
    index: &SearchIndex,
    cache: Option<&ClumpCache>,
    embedder: &Embedder,
    srql: &str,
) -> Option<Vec<Neighbour>> {
    let compiled = palisade_srql::compile(srql, &palisade_srql::CompileOptions::default())
        .unwrap_or_else(|e| panic!("{srql}: {e}"));
    let similar = compiled.similar.as_ref().expect("a SIMILAR_TO query");
    let mut tx = pool.begin().await.unwrap();
    let keyed = match &similar.candidates {
        Candidates::All => return None,
        Candidates::Sql { sql, params, .. } => {
            semantic::sql_candidates(&mut tx, sql, params, u64::MAX)
                .await
                .unwrap()
        }
        Candidates::Search => {
            let tokenize = |t: &str| index.query_tokens(t);
            let schema = index.schema();
            let tree = compiled.search.as_ref().expect("a search query");
            let query = Translator::new(&schema, &tokenize).translate(tree).unwrap();
            let until: DateTime<Utc> = sqlx::query_scalar("SELECT max(ts) FROM event_vectors")
                .fetch_one(&mut *tx)
                .await
                .unwrap();
            let hits = index
                .newest_until(query, until, index.doc_count() as usize)
                .unwrap();
            semantic::embedded_matches(&mut tx, &hits).await.unwrap()
        }
    };
    let query_vector = embedder.embed(&similar.text).unwrap();
    let ranked = vectors::nearest_among(
        &mut tx,
        cache,
        &query_vector,
        CandidateEvents::Keyed(&keyed),
        similar.k,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    Some(ranked)
}

/// How much of `exact` an engine answer found: by event, and by similarity (an
/// answer row at least as similar as the exact answer's last counts, whichever
/// event of a tie it is).
fn hybrid_recall(answer: &[Value], exact: &[Neighbour]) -> (f64, f64) {
    if exact.is_empty() {
        return (1.0, 1.0);
    }
    let found: Vec<(String, f64)> = answer
        .iter()
        .filter_map(|r| {
            Some((
                r.get("id")?.as_str()?.to_owned(),
                r.get("similarity")?.as_f64()?,
            ))
        })
        .collect();
    let wanted: std::collections::HashSet<String> =
        exact.iter().map(|n| n.id.to_string()).collect();
    let by_event = found.iter().filter(|(id, _)| wanted.contains(id)).count();
    let least = exact.last().map_or(f64::MIN, |n| n.similarity) - 1e-6;
    let by_similarity = found.iter().filter(|(_, s)| *s >= least).count();
    let n = exact.len() as f64;
    (by_event as f64 / n, (by_similarity as f64 / n).min(1.0))
}
