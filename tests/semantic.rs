//! Semantic hunting end to end: real Falco alerts and a real auth log published to
//! JetStream, embedded by the vectors projection with the real MiniLM model (ONNX
//! Runtime), stored in pgvector, then `SIMILAR_TO` and hybrid queries through the API.
//!
//! Needs the converted model: `scripts/stack.sh up` (or `scripts/stack.sh model`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{call, fixture, TestEnv};
use palisade_consumers::Projection;
use palisade_core::model::Decoded;
use palisade_embeddings::policy::{self, VectorPolicy};
use serde_json::{json, Value};

/// A Falco "Read sensitive file untrusted" alert for `tail -n 10 /etc/shadow`, built
/// on the shape of the real alerts in tests/fixtures/falco/alerts.jsonl: the
/// rephrased credential read that a keyword rule for `cat /etc/shadow` misses.
const TAIL_SHADOW: &str = r#"{"output":"10:00:00.000000000: Warning Sensitive file opened for reading by non-trusted program (user=root user_loginuid=1000 program=tail command=tail -n 10 /etc/shadow file=/etc/shadow parent=bash gparent=sudo container_id=host image=<NA>)","priority":"Warning","rule":"Read sensitive file untrusted","source":"syscall","tags":["filesystem","mitre_credential_access"],"time":"2026-11-20T10:00:00.000000000Z","output_fields":{"container.id":"host","container.image.repository":null,"evt.time":1763632800000000000,"fd.name":"/etc/shadow","proc.aname[2]":"sudo","proc.cmdline":"tail -n 10 /etc/shadow","proc.name":"tail","proc.pcmdline":"bash","proc.pname":"bash","user.loginuid":1000,"user.name":"root"}}"#;

fn post(q: &str) -> Request<Body> {
    Request::post("/api/v1/query")
        .header("content-type", "application/json")
        .body(Body::from(json!({ "q": q }).to_string()))
        .unwrap()
}

async fn query(app: &axum::Router, q: &str) -> Value {
    let (status, body) = call(app, post(q)).await;
    assert_eq!(status, StatusCode::OK, "{q}: {body}");
    body
}

fn messages(answer: &Value) -> Vec<String> {
    answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["message"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// How many of the published events there are, how many the default policy
/// selects and how many distinct embedding texts those have, decided here from the
/// decoded messages, independently of the projection.
fn expected_vectors(payloads: &[(&str, String)]) -> (i64, i64, i64) {
    let policy = VectorPolicy::default();
    let (mut events, mut selected) = (0, 0);
    let mut texts = std::collections::HashSet::new();
    for (subject, payload) in payloads {
        let Ok(Decoded::Events(decoded)) =
            palisade_core::decode::decode(subject, payload.as_bytes())
        else {
            continue;
        };
        for event in &decoded {
            events += 1;
            let view = palisade_consumers::vectors::view(event);
            if policy::decide(&policy, &view).embed {
                selected += 1;
                texts.insert(palisade_embeddings::text::embedding_text(&view));
            }
        }
    }
    (events, selected, texts.len() as i64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn similar_to_finds_what_keywords_miss() {
    let env = TestEnv::new("semantic").await;
    let settings = env.serve_settings(&["--vectors=true", "--search-commit-interval-ms=200"]);
    let running = palisade::server::start(env.connections(), settings.clone())
        .await
        .unwrap();

    let mut payloads: Vec<(&str, String)> = fixture("falco/alerts.jsonl")
        .lines()
        .map(|l| ("security.falco.alerts", l.to_owned()))
        .collect();
    payloads.push(("security.falco.alerts", TAIL_SHADOW.to_owned()));
    // The same read an hour later: another event, the same embedding text.
    payloads.push((
        "security.falco.alerts",
        TAIL_SHADOW.replace("2026-11-20T10:", "2026-11-20T11:"),
    ));
    payloads.push(("logs.auth", common::auth_log_envelope().to_string()));
    for (subject, payload) in &payloads {
        env.publish(subject, payload.clone()).await;
    }
    let (events, selected, distinct) = expected_vectors(&payloads);
    assert!(selected > 0 && selected < events, "{selected} of {events}");
    assert!(
        distinct < selected,
        "{distinct} texts for {selected} events"
    );
    env.wait_for_count(
        "SELECT count(*) FROM events",
        events,
        Duration::from_secs(30),
    )
    .await;
    env.wait_for_count(
        "SELECT count(*) FROM event_vectors",
        selected,
        Duration::from_secs(60),
    )
    .await;

    // One vector per distinct text, with its provenance; every event has its text.
    assert_eq!(
        env.count("SELECT count(*) FROM embedding_texts").await,
        distinct
    );
    assert_eq!(
        env.count("SELECT count(DISTINCT text) FROM embedding_texts")
            .await,
        distinct
    );
    assert_eq!(
        env.count("SELECT count(*) FROM event_vectors JOIN embedding_texts USING (text_key)")
            .await,
        selected
    );
    let (model, version): (String, i16) =
        sqlx::query_as("SELECT DISTINCT model, text_version FROM embedding_texts")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!((model.as_str(), version), ("all-MiniLM-L6-v2:int8", 1));
    // Both tail reads point at one text.
    assert_eq!(
        env.count(
            "SELECT count(DISTINCT v.text_key) FROM events e \
             JOIN event_vectors v ON v.event_id = e.id WHERE e.message LIKE '%tail -n 10 /etc/shadow%'"
        )
        .await,
        1
    );

    // The policy's choices on real lines.
    let embedded = |pattern: &'static str| {
        let pool = env.pool.clone();
        async move {
            sqlx::query_as::<_, (i64, i64)>(
                "SELECT count(*), count(v.event_id) FROM events e \
                 LEFT JOIN event_vectors v ON v.event_id = e.id WHERE e.message LIKE $1",
            )
            .bind(pattern)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let (failed, failed_embedded) = embedded("Failed password%").await;
    assert!(failed > 0);
    assert_eq!(failed_embedded, failed, "failed logins are embedded");
    let (accepted, accepted_embedded) = embedded("Accepted %").await;
    assert!(accepted > 0);
    assert_eq!(accepted_embedded, 0, "routine logins are not");

    // The search index must hold everything before hybrid queries are compared.
    let deadline = Instant::now() + Duration::from_secs(30);
    while running.search.doc_count() < events as u64 {
        assert!(Instant::now() < deadline, "search index never caught up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let app = palisade::api::app(palisade::server::app_state(
        &running.pipeline,
        env.connections().namespace(),
        &running.search,
        &settings,
    ));

    let (status, report) = call(
        &app,
        Request::get("/api/v1/status").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["ingested"]["event_vectors"], selected, "{report}");
    assert_eq!(report["ingested"]["embedding_texts"], distinct, "{report}");

    // The keyword search misses the rephrased read; SIMILAR_TO ranks it first.
    let keyword = query(&app, "\"cat /etc/shadow\"").await;
    assert_eq!(keyword["total"]["value"], 0, "{keyword}");
    let similar = query(&app, "SIMILAR_TO(\"cat /etc/shadow\", 5)").await;
    assert_eq!(similar["path"], "semantic");
    assert_eq!(similar["semantic"]["ranking"], "hnsw");
    let found = messages(&similar);
    assert_eq!(found.len(), 5, "{similar}");
    // Both events of the nearest text, the newer first.
    assert!(found[0].contains("tail -n 10 /etc/shadow"), "{found:?}");
    assert!(found[1].contains("tail -n 10 /etc/shadow"), "{found:?}");
    assert!(
        similar["rows"][0]["ts"].as_str() > similar["rows"][1]["ts"].as_str(),
        "{similar}"
    );
    let scores: Vec<f64> = similar["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["similarity"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert!((scores[0] - scores[1]).abs() < 1e-9, "{scores:?}");
    assert!(scores[0] > scores[4] + 0.05, "{scores:?}");
    // A re-check round takes at most a share of each text's newest events: of the
    // two tail reads, one is the newer.
    let (tail_vector,): (String,) = sqlx::query_as(
        "SELECT t.embedding::text FROM embedding_texts t JOIN event_vectors v USING (text_key) \
         JOIN events e ON e.id = v.event_id WHERE e.message LIKE '%tail -n 10 /etc/shadow%' LIMIT 1",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    let tail_vector = palisade_core::vectors::parse_vector(&tail_vector).unwrap();
    for per_text in [1, 2, 10] {
        let mut tx = env.pool.begin().await.unwrap();
        let near =
            palisade_core::vectors::nearest(&mut tx, None, &tail_vector, 1, 40, per_text, 10)
                .await
                .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(near.len(), per_text.min(2) as usize, "{near:?}");
        assert!(
            near[0].ts.to_rfc3339().starts_with("2026-11-20T11:"),
            "{near:?}"
        );
    }

    // Hybrid, few candidates: an exact scan over the filter's matches.
    let alerts = env
        .count("SELECT count(*) FROM events WHERE type = 'falco_alert'")
        .await;
    let hybrid = query(
        &app,
        "type:falco_alert | SIMILAR_TO(\"cat /etc/shadow\", 3)",
    )
    .await;
    assert_eq!(hybrid["semantic"]["ranking"], "exact", "{hybrid}");
    assert_eq!(hybrid["semantic"]["candidates"], alerts);
    assert!(messages(&hybrid)[0].contains("tail -n 10 /etc/shadow"));
    // Only a time range: the embedded events of that range, from `event_vectors`
    // alone, ranked exactly; the later half of the events is not a candidate.
    let (first, last): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("SELECT min(ts), max(ts) FROM event_vectors")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    let middle = first + (last - first) / 2;
    let in_range: i64 =
        sqlx::query_scalar("SELECT count(*) FROM event_vectors WHERE ts >= $1 AND ts <= $2")
            .bind(first)
            .bind(middle)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    let embedded = env.count("SELECT count(*) FROM event_vectors").await;
    assert!(
        0 < in_range && in_range < embedded,
        "{in_range} of {embedded}"
    );
    let micros =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let windowed = query(
        &app,
        &format!(
            "time:[{},{}] | SIMILAR_TO(\"cat /etc/shadow\", 3)",
            micros(first),
            micros(middle)
        ),
    )
    .await;
    assert_eq!(windowed["semantic"]["ranking"], "exact", "{windowed}");
    assert_eq!(windowed["semantic"]["candidates"], in_range, "{windowed}");
    assert!(!messages(&windowed).is_empty(), "{windowed}");
    // Full-text candidates from the index: every row matches the words.
    let brute = query(
        &app,
        "password | SIMILAR_TO(\"ssh brute force login attempt\", 4)",
    )
    .await;
    assert_eq!(brute["semantic"]["ranking"], "exact", "{brute}");
    let rows = messages(&brute);
    assert!(!rows.is_empty());
    assert!(
        rows.iter().all(|m| m.to_lowercase().contains("password")),
        "{rows:?}"
    );
    // The filter keeps events with no vector out; the limit caps k.
    let capped = query(
        &app,
        "host:bastion-01 | SIMILAR_TO(\"failed login\", 50) | limit:2",
    )
    .await;
    assert_eq!(messages(&capped).len(), 2, "{capped}");
    // A SQL filter's candidates are its embedded events: the routine logins on the
    // host have no vector and are not counted.
    let on_host = env
        .count("SELECT count(*) FROM events WHERE host = 'bastion-01'")
        .await;
    let embedded_on_host = env
        .count(
            "SELECT count(*) FROM events e JOIN event_vectors v ON v.event_id = e.id \
             WHERE e.host = 'bastion-01'",
        )
        .await;
    assert!(0 < embedded_on_host && embedded_on_host < on_host);
    assert_eq!(
        capped["semantic"]["candidates"], embedded_on_host,
        "{capped}"
    );
    // Every vector keeps its event's host, type and severity, so a filter over those
    // reads `event_vectors` alone (srql's golden files show which SQL); one over
    // another column joins `events` and counts the same events.
    let labelled = env
        .count(
            "SELECT count(*) FROM event_vectors v JOIN events e \
                 ON e.id = v.event_id AND e.ts = v.ts \
             WHERE v.host IS NOT DISTINCT FROM e.host AND v.type = e.type \
                 AND v.severity_level = e.severity_level",
        )
        .await;
    assert_eq!(labelled, embedded);
    let joined = query(
        &app,
        "host:bastion-01 AND NOT source:nowhere | SIMILAR_TO(\"failed login\", 2)",
    )
    .await;
    assert_eq!(
        joined["semantic"]["candidates"], embedded_on_host,
        "{joined}"
    );

    // Many candidates (threshold 0 here): HNSW, every neighbour re-checked.
    let strict = env.serve_settings(&["--vectors=true", "--similar-exact-max=0"]);
    let hnsw_app = palisade::api::app(palisade::server::app_state(
        &running.pipeline,
        env.connections().namespace(),
        &running.search,
        &strict,
    ));
    let rechecked = query(
        &hnsw_app,
        "type:falco_alert | SIMILAR_TO(\"cat /etc/shadow\", 3)",
    )
    .await;
    assert_eq!(rechecked["semantic"]["ranking"], "hnsw", "{rechecked}");
    assert!(messages(&rechecked)[0].contains("tail -n 10 /etc/shadow"));
    assert!(rechecked["rows"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["type"] == "falco_alert"));
    let sql_rechecked = query(
        &hnsw_app,
        "host:bastion-01 | SIMILAR_TO(\"cat /etc/shadow\", 3)",
    )
    .await;
    assert_eq!(sql_rechecked["semantic"]["ranking"], "hnsw");
    let hosts = sql_rechecked["rows"].as_array().unwrap();
    assert_eq!(hosts.len(), 3, "{sql_rechecked}");
    assert!(hosts.iter().all(|r| r["host"] == "bastion-01"));
    let search_rechecked = query(&hnsw_app, "password | SIMILAR_TO(\"brute force\", 3)").await;
    assert!(messages(&search_rechecked)
        .iter()
        .all(|m| m.to_lowercase().contains("password")));
    assert_eq!(
        search_rechecked["semantic"]["sampled"],
        Value::Null,
        "{search_rechecked}"
    );

    // Matches far from the text: none of the 4 nearest texts' events passes, so the
    // filter's newest embedded matches are ranked exactly too, and the answer is
    // not short.
    let narrow = env.serve_settings(&[
        "--vectors=true",
        "--similar-exact-max=0",
        "--similar-ef-search=1",
        "--similar-max-neighbourhood=4",
    ]);
    let narrow_app = palisade::api::app(palisade::server::app_state(
        &running.pipeline,
        env.connections().namespace(),
        &running.search,
        &narrow,
    ));
    let far_query = "password | SIMILAR_TO(\"cat /etc/shadow\", 3)";
    let far = query(&narrow_app, far_query).await;
    assert_eq!(far["semantic"]["neighbourhood"], 4, "{far}");
    assert!(far["semantic"]["sampled"].as_u64().unwrap() >= 1, "{far}");
    // The same answer as the search that saw every text (these fixtures have few).
    let seen_all = query(&hnsw_app, far_query).await;
    assert_eq!(seen_all["semantic"]["sampled"], Value::Null, "{seen_all}");
    assert!(!common::row_ids(&far).is_empty(), "{far}");
    assert_eq!(
        common::row_ids(&far),
        common::row_ids(&seen_all),
        "{far}\n{seen_all}"
    );
    assert!(messages(&far)
        .iter()
        .all(|m| m.to_lowercase().contains("password")));
    // The newest match of a common word can be a routine event the policy did not
    // embed ("Accepted password", Feb 23, is newer than "Failed password", Feb 20):
    // the sample reads older pages of matches until it holds an embedded one, so
    // one asked for is found, not none.
    let one = query(&narrow_app, "password | SIMILAR_TO(\"cat /etc/shadow\", 1)").await;
    assert_eq!(one["semantic"]["sampled"], 1, "{one}");
    let found = messages(&one);
    assert_eq!(found.len(), 1, "{one}");
    assert!(found[0].contains("Failed password"), "{one}");
    // The sample is ranked on a second connection beside the rounds; with none to
    // spare (a pool of one, which the query holds) it is ranked after them in the
    // query's own transaction, with the same answer.
    let lone = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&env.database_url)
        .await
        .unwrap();
    let stage = running.pipeline.vectors.as_ref().unwrap();
    let lone_engine =
        palisade::query::QueryEngine::new(lone, running.search.clone(), Default::default())
            .with_semantic(narrow.semantic.semantic_search(stage));
    let after =
        serde_json::to_value(lone_engine.run(far_query, None, None).await.unwrap()).unwrap();
    assert_eq!(after["semantic"], far["semantic"], "{after}\n{far}");
    assert_eq!(common::row_ids(&after), common::row_ids(&far), "{after}");

    // The clump cache's figures are on /metrics (these fixtures have no near
    // copies, so no clumps: the warm-up and the cache are tested below).
    let (status, metrics) = common::get_text(&app, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    for name in ["hits_total", "misses_total", "clumps", "members", "bytes"] {
        let name = format!("palisade_similar_clump_cache_{name}");
        let figure = metrics.lines().find_map(|l| {
            l.strip_prefix(&name)?
                .strip_prefix(' ')?
                .parse::<u64>()
                .ok()
        });
        assert!(figure.is_some(), "{name} on /metrics: {metrics}");
    }

    // Explain names the path; mistakes are 400s with a column.
    let (status, explain) = call(
        &app,
        Request::get("/api/v1/query/explain?q=SIMILAR_TO(%22x%22)")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(explain["compiled"]["path"], "semantic", "{explain}");
    for bad in [
        "in:metrics | SIMILAR_TO(\"x\")",
        "SIMILAR_TO(\"x\", 0)",
        "a | SIMILAR_TO(\"x\") | stats count() by host",
        "a | SIMILAR_TO(\"x\") | sort:ts",
    ] {
        let (status, body) = call(&app, post(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(body["srql"]["column"].as_u64().is_some(), "{bad}: {body}");
    }

    // Replaying the projection rebuilds the same vectors, up to the int8 model's
    // batch noise (its activations are quantised per run, so a text's vector moves
    // a little with the other texts of its batch: cosine ≥ 0.96 measured).
    for snapshot in [
        "CREATE TABLE vectors_before AS SELECT * FROM event_vectors",
        "CREATE TABLE texts_before AS SELECT * FROM embedding_texts",
    ] {
        sqlx::query(snapshot).execute(&env.pool).await.unwrap();
    }
    running.stop().await;
    let ingest = env.serve_settings(&[]).ingest;
    let stage = settings.semantic.vector_stage().unwrap();
    let pipeline = palisade::server::pipeline(&env.connections(), &ingest, stage)
        .await
        .unwrap();
    palisade_consumers::replay::replay(&pipeline, Projection::Vectors, |_, _| {})
        .await
        .unwrap();
    assert_eq!(
        env.count("SELECT count(*) FROM event_vectors").await,
        selected
    );
    assert_eq!(
        env.count("SELECT count(*) FROM embedding_texts").await,
        distinct
    );
    let same = env
        .count(
            "SELECT count(*) FROM event_vectors a JOIN vectors_before b USING (event_id, text_key) \
             JOIN embedding_texts ta ON ta.text_key = a.text_key \
             JOIN texts_before tb ON tb.text_key = b.text_key \
             WHERE (ta.embedding <=> tb.embedding) < 0.04",
        )
        .await;
    assert_eq!(same, selected, "the same vectors after a replay");
    env.cleanup().await;
}

/// Near copies of a text (the same failed login from another address)
/// join its clump instead of the HNSW graph; a search still finds them, ranked by
/// their own distance. Real model, real pgvector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_copies_join_a_representative() {
    use palisade_core::clumps::{Clump, ClumpCache};
    use palisade_core::store::Store;
    use palisade_core::vectors::{self, fill_clump_cache, Provenance, TextKey, TextVector};

    let env = TestEnv::new("representatives").await;
    palisade_schema::migrate(&env.pool).await.unwrap();
    let config = palisade_embeddings::EmbedderConfig::from_env().unwrap();
    let embedder = palisade_embeddings::Embedder::load(&config)
        .expect("the converted model: run `scripts/stack.sh model`");
    let provenance = Provenance {
        model: embedder.model_id(),
        text_version: 1,
    };
    // The same failed login from the next address, and the same write with another
    // parent shell: near copies (0.014 and 0.027 apart when this was written).
    let login = "sshd: Failed password for invalid user admin from 203.0.113.7 port 52144 ssh2";
    let login_copy =
        "sshd: Failed password for invalid user admin from 203.0.113.9 port 52144 ssh2";
    let write =
        "Write below binary dir | cp /tmp/payload /usr/bin/sshd | /usr/bin/sshd | parent bash";
    let write_copy =
        "Write below binary dir | cp /tmp/payload /usr/bin/sshd | /usr/bin/sshd | parent sh";
    let texts = [login, login_copy, write, write_copy];
    let embedded = embedder.embed_batch(&texts).unwrap();
    let distance = |a: usize, b: usize| distance_to(&embedded[a], &embedded[b]);
    // The premise, from the vectors themselves: the copies are within the
    // representative distance of their originals, the two kinds far apart.
    let max = vectors::REPRESENTATIVE_DISTANCE;
    assert!(distance(0, 1) <= max, "{}", distance(0, 1));
    assert!(distance(2, 3) <= max, "{}", distance(2, 3));
    assert!(distance(0, 2) > max && distance(1, 3) > max);

    let vector = |i: usize| TextVector {
        key: TextKey::of(&provenance, texts[i]),
        text: texts[i].to_owned(),
        embedding: embedded[i].clone(),
        representative: None,
    };
    let store = Store::new(env.pool.clone());
    // The first login is stored alone; the next batch brings its copy (stored
    // representative) and the write with its copy (a representative in the batch).
    let mut first = vec![vector(0)];
    store.choose_representatives(&mut first, max).await.unwrap();
    assert_eq!(first[0].representative, None);
    write_texts(&store, &provenance, first).await;
    let mut second = vec![vector(1), vector(2), vector(3)];
    store
        .choose_representatives(&mut second, max)
        .await
        .unwrap();
    let key = |i: usize| TextKey::of(&provenance, texts[i]);
    assert_eq!(second[0].representative, Some(key(0)));
    assert_eq!(second[1].representative, None);
    assert_eq!(second[2].representative, Some(key(2)));
    write_texts(&store, &provenance, second).await;
    // Distance 0 keeps every text in the graph.
    let mut own = vec![vector(1)];
    store.choose_representatives(&mut own, 0.0).await.unwrap();
    assert_eq!(own[0].representative, None);

    assert_eq!(
        env.count("SELECT count(*) FROM embedding_texts WHERE representative IS NULL")
            .await,
        2
    );
    // A search returns members beside their representatives, by their own distance.
    let query = embedder
        .embed("failed password for an invalid user")
        .unwrap();
    // PostgreSQL scores the members, or the clump cache does: the same answer
    // before the cache holds the clumps (PostgreSQL scores the missed ones) and
    // after a fill.
    let cache = ClumpCache::new(1 << 20);
    let own_similarity = |v: &[f32]| 1.0 - f64::from(distance_to(&query, v));
    for clumps in [None, Some(&cache), Some(&cache)] {
        let near = top_texts(&env.pool, clumps, &query, 4).await;
        let found: Vec<TextKey> = near.iter().map(|n| n.key).collect();
        let logins = [key(0), key(1)];
        assert!(found[..2].iter().all(|k| logins.contains(k)), "{near:?}");
        assert_eq!(found.len(), 4, "{near:?}");
        assert!(near.windows(2).all(|w| w[0].similarity >= w[1].similarity));
        for n in &near {
            let i = (0..4).find(|&i| key(i) == n.key).unwrap();
            assert!(
                (n.similarity - own_similarity(&embedded[i])).abs() < 1e-4,
                "{near:?}"
            );
        }
        if clumps.is_some() && cache.has_wanted() {
            assert_eq!(fill_clump_cache(&env.pool, &cache).await.unwrap(), 2);
        }
    }
    let stats = cache.stats();
    assert_eq!((stats.clumps, stats.members), (2, 2), "{stats:?}");
    assert_eq!((stats.hits, stats.misses), (2, 2), "{stats:?}");

    // Ranking a filter's candidates exactly: their texts scored from the cache (the
    // members it holds, and the representatives) give what PostgreSQL gives, events
    // ranked nearest, then newest, then by id; a text without a vector drops out.
    let now = chrono::Utc::now();
    let mut candidates: Vec<(chrono::DateTime<chrono::Utc>, uuid::Uuid, TextKey)> = (0..4u32)
        .flat_map(|i| {
            (0..3u32).map(move |j| {
                (
                    now - chrono::Duration::minutes(i64::from(i * 3 + j)),
                    uuid::Uuid::from_u128(u128::from(i * 10 + j)),
                    key(i as usize),
                )
            })
        })
        .collect();
    candidates.push((
        now,
        uuid::Uuid::from_u128(99),
        TextKey::of(&provenance, "no vector"),
    ));
    let by_postgres = ranked_among(&env.pool, None, &query, &candidates).await;
    let by_memory = ranked_among(&env.pool, Some(&cache), &query, &candidates).await;
    assert_eq!(by_postgres.len(), 10);
    let ids = |found: &[vectors::Neighbour]| found.iter().map(|n| n.id).collect::<Vec<_>>();
    assert_eq!(ids(&by_memory), ids(&by_postgres));
    for (m, p) in by_memory.iter().zip(&by_postgres) {
        assert!((m.similarity - p.similarity).abs() < 1e-5, "{m:?} vs {p:?}");
    }

    // A new member changes its clump's revision, so the cache reads the clump again
    // and the search finds it.
    let another = "sshd: Failed password for invalid user admin from 203.0.113.11 port 52144 ssh2";
    let mut third = vec![TextVector {
        key: TextKey::of(&provenance, another),
        text: another.to_owned(),
        embedding: embedder.embed(another).unwrap(),
        representative: None,
    }];
    store.choose_representatives(&mut third, max).await.unwrap();
    assert_eq!(third[0].representative, Some(key(0)));
    let another_vector = third[0].embedding.clone();
    write_texts(&store, &provenance, third).await;
    let misses = cache.stats().misses;
    for filled in [false, true] {
        let near = top_texts(&env.pool, Some(&cache), &query, 5).await;
        assert!(
            near.iter()
                .any(|n| n.key == TextKey::of(&provenance, another)
                    && (n.similarity - own_similarity(&another_vector)).abs() < 1e-4),
            "filled {filled}: {near:?}"
        );
        if !filled {
            assert_eq!(
                cache.stats().misses,
                misses + 1,
                "only the login clump changed"
            );
            assert_eq!(fill_clump_cache(&env.pool, &cache).await.unwrap(), 1);
        }
    }
    assert_eq!(cache.stats().members, 3);
    assert_eq!(cache.stats().misses, misses + 1, "held after the fill");
    // So does a member removed (as retention removes texts no event has).
    sqlx::query("DELETE FROM embedding_texts WHERE text_key = $1")
        .bind(key(1).as_bytes())
        .execute(&env.pool)
        .await
        .unwrap();
    let near = top_texts(&env.pool, Some(&cache), &query, 5).await;
    assert!(near.iter().all(|n| n.key != key(1)), "{near:?}");
    assert_eq!(near.len(), 4, "{near:?}");
    assert_eq!(fill_clump_cache(&env.pool, &cache).await.unwrap(), 1);
    assert_eq!(cache.stats().members, 2);

    // The cache ranks the representatives it read; a new one changes their
    // generation, so the next search reads them again and finds it.
    assert_eq!(cache.stats().representatives, 2);
    let far = "kernel: Out of memory: Killed process 4242 (java) total-vm:8123456kB";
    let far_vector = embedder.embed(far).unwrap();
    let mut fourth = vec![TextVector {
        key: TextKey::of(&provenance, far),
        text: far.to_owned(),
        embedding: far_vector.clone(),
        representative: None,
    }];
    store
        .choose_representatives(&mut fourth, max)
        .await
        .unwrap();
    assert_eq!(fourth[0].representative, None, "a new representative");
    write_texts(&store, &provenance, fourth).await;
    let near = top_texts(&env.pool, Some(&cache), &far_vector, 1).await;
    assert_eq!(near[0].key, TextKey::of(&provenance, far), "{near:?}");
    assert!(near[0].similarity > 0.9999, "{near:?}");
    assert_eq!(cache.stats().representatives, 3);
    // Members joining a clump leave the representatives' generation as it was.
    let generation = || async {
        sqlx::query_scalar::<_, i64>("SELECT representatives FROM embedding_generations")
            .fetch_one(&env.pool)
            .await
            .unwrap()
    };
    let clumps_generation = || async {
        sqlx::query_scalar::<_, i64>("SELECT clumps FROM embedding_generations")
            .fetch_one(&env.pool)
            .await
            .unwrap()
    };
    let before = generation().await;
    let clumps_before = clumps_generation().await;
    let mut rejoined = vector(1);
    rejoined.representative = Some(key(0));
    write_texts(&store, &provenance, vec![rejoined.clone()]).await;
    assert_eq!(generation().await, before);
    let clumps_after = clumps_generation().await;
    assert_ne!(clumps_after, clumps_before, "a clump changed");
    // Writing it again changes no row, and no generation.
    write_texts(&store, &provenance, vec![rejoined]).await;
    assert_eq!(clumps_generation().await, clumps_after);
    sqlx::query("DELETE FROM embedding_texts WHERE text_key = $1")
        .bind(TextKey::of(&provenance, far).as_bytes())
        .execute(&env.pool)
        .await
        .unwrap();
    assert_ne!(generation().await, before, "a representative removed");
    let near = top_texts(&env.pool, Some(&cache), &far_vector, 1).await;
    assert_ne!(near[0].key, TextKey::of(&provenance, far), "{near:?}");
    assert_eq!(cache.stats().representatives, 2);

    // A server's warm-up reads the clumps before any search misses them, as many
    // as fit in 90% of the capacity.
    let warm = ClumpCache::new(1 << 20);
    assert_eq!(
        vectors::warm_clump_cache(&env.pool, &warm).await.unwrap(),
        2
    );
    top_texts(&env.pool, Some(&warm), &query, 4).await;
    let stats = warm.stats();
    assert_eq!(
        (stats.clumps, stats.hits, stats.misses),
        (2, 2, 0),
        "{stats:?}"
    );
    let one_clump = Clump::bytes_of(1, embedded[0].len());
    let small = ClumpCache::new(one_clump * 10 / 9 + 10);
    assert_eq!(
        vectors::warm_clump_cache(&env.pool, &small).await.unwrap(),
        1
    );
    assert_eq!(small.stats().clumps, 1);

    // A clump whose members all went keeps its row (at a new revision): the
    // cache holds it empty after a fill, so searches stop missing it.
    sqlx::query("DELETE FROM embedding_texts WHERE text_key = $1")
        .bind(key(3).as_bytes())
        .execute(&env.pool)
        .await
        .unwrap();
    let write_query = embedder.embed(write).unwrap();
    top_texts(&env.pool, Some(&cache), &write_query, 4).await;
    assert!(cache.has_wanted(), "the emptied clump changed");
    // (The login clump too: it changed when key 1 rejoined it.)
    assert_eq!(fill_clump_cache(&env.pool, &cache).await.unwrap(), 2);
    let misses = cache.stats().misses;
    let near = top_texts(&env.pool, Some(&cache), &write_query, 4).await;
    assert_eq!(near[0].key, key(2), "{near:?}");
    assert!(near.iter().all(|n| n.key != key(3)), "{near:?}");
    assert_eq!(cache.stats().misses, misses, "held, empty");
    env.cleanup().await;
}

/// The `n` texts nearest to `query` (ef_search 40), members scored by `clumps`
/// or by PostgreSQL.
async fn top_texts(
    pool: &sqlx::PgPool,
    clumps: Option<&palisade_core::clumps::ClumpCache>,
    query: &[f32],
    n: u32,
) -> Vec<palisade_core::vectors::NearText> {
    let mut tx = pool.begin().await.unwrap();
    let near = palisade_core::vectors::nearest_texts(&mut tx, clumps, query, n, 40)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    near
}

/// The 10 nearest of `candidates` by `nearest_among`, texts scored by `clumps` or
/// by PostgreSQL.
async fn ranked_among(
    pool: &sqlx::PgPool,
    clumps: Option<&palisade_core::clumps::ClumpCache>,
    query: &[f32],
    candidates: &[(
        chrono::DateTime<chrono::Utc>,
        uuid::Uuid,
        palisade_core::vectors::TextKey,
    )],
) -> Vec<palisade_core::vectors::Neighbour> {
    let mut tx = pool.begin().await.unwrap();
    let found = palisade_core::vectors::nearest_among(
        &mut tx,
        clumps,
        query,
        palisade_core::vectors::CandidateEvents::Keyed(candidates),
        10,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    found
}

/// Stores `texts` as the vectors projection's write does.
async fn write_texts(
    store: &palisade_core::store::Store,
    provenance: &palisade_core::vectors::Provenance,
    texts: Vec<palisade_core::vectors::TextVector>,
) {
    let batch = palisade_core::vectors::BatchVectors {
        events: Vec::new(),
        texts,
    };
    store
        .write_vectors(
            "test",
            0,
            &palisade_core::store::Batch::default(),
            provenance,
            &batch,
            None,
        )
        .await
        .unwrap();
}

/// Cosine distance, computed here apart from the store's code.
fn distance_to(a: &[f32], b: &[f32]) -> f32 {
    1.0 - palisade_embeddings::cosine(a, b) as f32
}
