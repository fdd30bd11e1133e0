//! The search projection end to end: real Falco alerts and auth-log lines land in
//! the tantivy index under their `events` row ids; restarts, a crash before the
//! commit and a replay neither lose nor duplicate a document; acks wait for the commit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{auth_log_envelope, fixture, TestEnv};
use palisade_core::search::SearchIndex;
use tantivy::query::{Query, TermQuery};
use tantivy::schema::IndexRecordOption;
use tantivy::Term;
use uuid::Uuid;

/// 25 Falco alerts and one auth-log envelope of 10 lines.
const EVENTS: u64 = 35;

async fn publish_fixtures(env: &TestEnv) {
    for line in fixture("falco/alerts.jsonl").lines() {
        env.publish("security.falco.alerts", line.to_owned()).await;
    }
    env.publish("logs.auth", auth_log_envelope().to_string())
        .await;
}

async fn wait_for_docs(index: &SearchIndex, expected: u64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if index.doc_count() == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the search index did not reach {expected} documents within {timeout:?}; it holds {}",
        index.doc_count()
    );
}

/// Ids of the documents whose text holds `token` (one query token).
fn text_hits(index: &SearchIndex, token: &str) -> BTreeSet<Uuid> {
    let term = index.text_term(token).expect("a token");
    ids(index, &TermQuery::new(term, IndexRecordOption::WithFreqs))
}

fn ids(index: &SearchIndex, query: &dyn Query) -> BTreeSet<Uuid> {
    let page = index.search(query, 1000, 0, usize::MAX).unwrap();
    assert_eq!(page.total, page.hits.len());
    page.hits.iter().map(|h| h.id).collect()
}

/// Every query the tests ask, with its hits.
fn answers(index: &SearchIndex) -> Vec<(String, BTreeSet<Uuid>)> {
    let mut out: Vec<_> = [
        "10.100.0.1",
        "10.0.2.2",
        "/etc/falco",
        "user=root",
        "/var/log/secure",
        "root",
    ]
    .iter()
    .map(|t| (t.to_string(), text_hits(index, t)))
    .collect();
    let rule = TermQuery::new(
        Term::from_field_text(index.fields().rule, "Write below etc"),
        IndexRecordOption::Basic,
    );
    out.push(("rule".into(), ids(index, &rule)));
    out
}

async fn events_in_postgres(env: &TestEnv) -> BTreeSet<Uuid> {
    sqlx::query_scalar::<_, Uuid>("SELECT id FROM events")
        .fetch_all(&env.pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// Every document of the index, by id.
fn all_ids(index: &SearchIndex) -> BTreeSet<Uuid> {
    let page = index
        .search(&tantivy::query::AllQuery, 10_000, 0, usize::MAX)
        .unwrap();
    let ids: BTreeSet<Uuid> = page.hits.iter().map(|h| h.id).collect();
    assert_eq!(ids.len(), page.total, "one document per id");
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indicators_are_found_and_restarts_and_replays_keep_the_index_exact() {
    let env = TestEnv::new("search").await;
    let running = palisade::server::start(env.connections(), env.serve_settings(&[]))
        .await
        .unwrap();
    publish_fixtures(&env).await;
    wait_for_docs(&running.search, EVENTS, Duration::from_secs(30)).await;
    env.wait_for_count(
        "SELECT count(*) FROM events",
        EVENTS as i64,
        Duration::from_secs(30),
    )
    .await;

    // Every document is an events row, under the same key.
    let index = running.search.clone();
    assert_eq!(all_ids(&index), events_in_postgres(&env).await);
    let hit = index
        .search(
            &TermQuery::new(
                index.text_term("/var/log/secure").unwrap(),
                IndexRecordOption::WithFreqs,
            ),
            1,
            0,
            usize::MAX,
        )
        .unwrap()
        .hits[0];
    let joined: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE ts = $1 AND id = $2 AND message LIKE '%/var/log/secure%'",
    )
    .bind(hit.ts)
    .bind(hit.id)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(joined, 1, "a hit's (ts, id) is its events row");
    assert_eq!(index.lookup_ts(hit.id).unwrap(), Some(hit.ts));

    let before = answers(&index);
    let count = |q: &str| before.iter().find(|(t, _)| t == q).unwrap().1.len();
    assert_eq!(count("10.100.0.1"), 1, "an IP in a Falco alert");
    assert_eq!(count("10.0.2.2"), 2, "an IP in auth-log lines");
    assert_eq!(count("/etc/falco"), 2, "a path");
    assert_eq!(
        count("user=root"),
        18,
        "a pair: 15 alerts and 3 sudo lines (USER=root)"
    );
    assert_eq!(
        count("/var/log/secure"),
        1,
        "a path inside COMMAND=/bin/cat /var/log/secure"
    );
    assert!(
        count("root") > count("user=root"),
        "a part of a pair is found too"
    );
    assert_eq!(count("rule"), 3, "a rule");
    let ip: std::net::Ipv6Addr = "::ffff:10.0.2.2".parse().unwrap();
    let by_ip = TermQuery::new(
        Term::from_field_ip_addr(index.fields().ip, ip),
        IndexRecordOption::Basic,
    );
    assert_eq!(ids(&index, &by_ip), text_hits(&index, "10.0.2.2"));
    let checkpoint = index.checkpoint();
    assert_eq!(checkpoint.streams().len(), 2, "security and logs streams");
    drop(index);
    running.stop().await;

    // Restart on the same index: the durable starts after the checkpoint; nothing
    // is indexed twice, and what arrives meanwhile is indexed once.
    let running = palisade::server::start(env.connections(), env.serve_settings(&[]))
        .await
        .unwrap();
    assert_eq!(running.search.checkpoint(), checkpoint);
    assert_eq!(running.search.doc_count(), EVENTS);
    let extra = fixture("falco/alerts.jsonl")
        .lines()
        .next()
        .unwrap()
        .to_owned();
    env.publish("falco.informational.launch_privileged_container", extra)
        .await;
    wait_for_docs(&running.search, EVENTS + 1, Duration::from_secs(30)).await;
    env.wait_for_count(
        "SELECT count(*) FROM events",
        EVENTS as i64 + 1,
        Duration::from_secs(30),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(running.search.doc_count(), EVENTS + 1);
    assert_eq!(all_ids(&running.search), events_in_postgres(&env).await);
    let with_extra = answers(&running.search);
    running.stop().await;

    // `palisade replay search` rebuilds the same index from the streams.
    let settings = env.serve_settings(&[]);
    let progress = std::sync::Mutex::new(Vec::new());
    let report = palisade::server::replay_search(
        &env.connections(),
        &settings.ingest,
        &settings.search,
        |done, total| progress.lock().unwrap().push((done, total)),
    )
    .await
    .unwrap();
    assert_eq!(report.messages, 27, "26 alerts and 1 log envelope");
    assert_eq!(report.documents, EVENTS + 1);
    assert_eq!(progress.lock().unwrap().last(), Some(&(27, 27)));

    let running = palisade::server::start(env.connections(), env.serve_settings(&[]))
        .await
        .unwrap();
    assert_eq!(running.search.doc_count(), EVENTS + 1);
    assert_eq!(answers(&running.search), with_extra);
    assert_eq!(all_ids(&running.search), events_in_postgres(&env).await);
    // A replay is refused while a server holds the index.
    let refused = palisade::server::replay_search(
        &env.connections(),
        &settings.ingest,
        &settings.search,
        |_, _| {},
    )
    .await
    .unwrap_err();
    assert!(refused.to_string().contains("in use"), "{refused}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(running.search.doc_count(), EVENTS + 1);
    running.stop().await;
    env.cleanup().await;
}

async fn search_consumer(env: &TestEnv, durable: &str) -> async_nats::jetstream::consumer::Info {
    try_search_consumer(env, durable)
        .await
        .unwrap_or_else(|| panic!("no consumer {durable}"))
}

async fn try_search_consumer(
    env: &TestEnv,
    durable: &str,
) -> Option<async_nats::jetstream::consumer::Info> {
    let stream = format!("{}_PALISADE_SECURITY", env.namespace.to_ascii_uppercase());
    let mut consumer = env
        .js
        .get_stream(&stream)
        .await
        .ok()?
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>(durable)
        .await
        .ok()?;
    consumer.info().await.ok().cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_acknowledged_only_after_the_commit() {
    let env = TestEnv::new("search_acks").await;
    // The commit interval is longer than the ack wait (5 s): progress acks must
    // keep JetStream from redelivering while the messages wait for the commit.
    let settings = env.serve_settings(&["--search-commit-interval-ms=7000"]);
    let durable = settings.search.search_config().durable_name();
    let running = palisade::server::start(env.connections(), settings)
        .await
        .unwrap();
    for line in fixture("falco/alerts.jsonl").lines().take(5) {
        env.publish("security.falco.alerts", line.to_owned()).await;
    }
    // The events projection commits and acks at once; search holds its acks.
    env.wait_for_count("SELECT count(*) FROM events", 5, Duration::from_secs(5))
        .await;
    let info = search_consumer(&env, &durable).await;
    assert_eq!(info.num_ack_pending, 5, "{info:?}");
    assert_eq!(running.search.doc_count(), 0, "nothing committed yet");

    wait_for_docs(&running.search, 5, Duration::from_secs(15)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let info = loop {
        let info = search_consumer(&env, &durable).await;
        if info.num_ack_pending == 0 || Instant::now() > deadline {
            break info;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(info.num_ack_pending, 0, "acked after the commit: {info:?}");
    assert_eq!(
        info.num_redelivered, 0,
        "progress acks held the redelivery: {info:?}"
    );
    assert_eq!(info.ack_floor.stream_sequence, 5);
    running.stop().await;
    env.cleanup().await;
}

/// A `palisade up` child, killed with SIGKILL when dropped (also when a test fails).
struct Palisade(Child);

impl Drop for Palisade {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_palisade(env: &TestEnv, commit_interval_ms: u64) -> Palisade {
    let child = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(env.cli_args())
        .args([
            "up",
            "--http-addr=127.0.0.1:0",
            "--batch-max-wait-ms=100",
            "--ack-wait-secs=5",
            &format!("--search-commit-interval-ms={commit_interval_ms}"),
        ])
        .env("PALISADE_SEARCH_INDEX_DIR", &env.search_dir)
        .env("PALISADE_SEARCH_NODE", "crash-node")
        .env("RUST_LOG", "warn")
        .env("PALISADE_VECTORS", "false")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn palisade");
    Palisade(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_the_commit_loses_nothing_and_duplicates_nothing() {
    let env = TestEnv::new("search_crash").await;
    // First a committed part, then a part added but not committed when killed.
    let child = spawn_palisade(&env, 500);
    wait_for_streams(&env).await;
    let alerts: Vec<String> = fixture("falco/alerts.jsonl")
        .lines()
        .map(str::to_owned)
        .collect();
    for line in &alerts[..10] {
        env.publish("security.falco.alerts", line.clone()).await;
    }
    env.wait_for_count("SELECT count(*) FROM events", 10, Duration::from_secs(60))
        .await;
    wait_for_acks(&env, |info| {
        info.ack_floor.stream_sequence == 10 && info.num_ack_pending == 0
    })
    .await;
    drop(child); // SIGKILL: no shutdown, no final commit.

    let child = spawn_palisade(&env, 600_000);
    for line in &alerts[10..] {
        env.publish("security.falco.alerts", line.clone()).await;
    }
    env.wait_for_count("SELECT count(*) FROM events", 25, Duration::from_secs(60))
        .await;
    wait_for_acks(&env, |info| info.num_ack_pending == 15).await;
    drop(child); // SIGKILL: no shutdown, no final commit.

    let settings = env.serve_settings(&["--search-node=crash-node"]);
    let running = palisade::server::start(env.connections(), settings)
        .await
        .unwrap();
    assert_eq!(
        running.search.doc_count(),
        10,
        "only the committed part survived"
    );
    wait_for_docs(&running.search, 25, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(running.search.doc_count(), 25);
    assert_eq!(all_ids(&running.search), events_in_postgres(&env).await);
    running.stop().await;
    env.cleanup().await;
}

/// Waits until the child has created the streams.
async fn wait_for_streams(env: &TestEnv) {
    let stream = format!("{}_PALISADE_SECURITY", env.namespace.to_ascii_uppercase());
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.js.get_stream(&stream).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "palisade up never created {stream}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls the crash node's consumer on the security stream until `done` holds.
async fn wait_for_acks(
    env: &TestEnv,
    done: impl Fn(&async_nats::jetstream::consumer::Info) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = try_search_consumer(env, "palisade-search-crash-node").await;
        if info.as_ref().is_some_and(&done) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "consumer never got there: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
