//! Blast radius end to end: connections published to JetStream, the connections
//! projection feeding the in-memory graph, a real Trivy report as risk evidence,
//! the API, and the graph rebuilt from PostgreSQL after a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{
    call, connections_envelope as envelope, get_text, publish_running_vulnerable_musl, socket,
    wait_until, TestEnv,
};
use serde_json::{json, Value};

async fn radius(app: &axum::Router, query: &str) -> Value {
    let (status, body) = get_text(app, &format!("/api/v1/graph/blast-radius?{query}")).await;
    assert_eq!(status, StatusCode::OK, "{query}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// (node, hops) in the answer's order.
fn reached(answer: &Value) -> Vec<(String, u64)> {
    answer["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["node"].as_str().unwrap().to_owned(),
                n["hops"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blast_radius_follows_connections_and_ranks_by_risk() {
    let env = TestEnv::new("graph").await;
    let settings = env.serve_settings(&[]);
    let running = palisade::server::start(env.connections(), settings.clone())
        .await
        .unwrap();
    let ts = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();

    // web-01 (10.0.0.1) serves 443 and talks to db-01:5432; db-01 (10.0.0.2) backs
    // up to backup-01:22 (10.0.0.3); an outside address reached web-01:443. The
    // server side of each connection is reported too, as agents do.
    let fleet = [
        (
            "web-01",
            vec![
                socket(("0.0.0.0", 443), ("", 0), "LISTEN", "nginx"),
                socket(
                    ("10.0.0.1", 51234),
                    ("10.0.0.2", 5432),
                    "ESTABLISHED",
                    "php-fpm",
                ),
                socket(
                    ("10.0.0.1", 443),
                    ("203.0.113.5", 61000),
                    "ESTABLISHED",
                    "nginx",
                ),
            ],
        ),
        (
            "db-01",
            vec![
                socket(("10.0.0.2", 5432), ("", 0), "LISTEN", "postgres"),
                socket(
                    ("10.0.0.2", 5432),
                    ("10.0.0.1", 51234),
                    "ESTABLISHED",
                    "postgres",
                ),
                socket(
                    ("10.0.0.2", 40112),
                    ("10.0.0.3", 22),
                    "ESTABLISHED",
                    "rsync",
                ),
            ],
        ),
        (
            "backup-01",
            vec![
                socket(("0.0.0.0", 22), ("", 0), "LISTEN", "sshd"),
                socket(("10.0.0.3", 22), ("10.0.0.2", 40112), "ESTABLISHED", "sshd"),
            ],
        ),
    ];
    for (host, sockets) in fleet {
        env.publish("topology.connections", envelope(host, &ts, sockets))
            .await;
    }
    // db-01 runs the vulnerable Alpine image of the real Trivy fixture, and musl
    // runs there, so the correlation pass makes its musl CVE a P0.
    publish_running_vulnerable_musl(&env, "db-01", &ts).await;
    env.wait_for_count(
        "SELECT count(*) FROM connections",
        8,
        Duration::from_secs(30),
    )
    .await;
    // The incident is opened after the scan and the process both landed.
    let p0 = || async {
        env.count("SELECT count(*) FROM incidents WHERE host = 'db-01' AND state = 'running'")
            .await
    };
    wait_until("the scan, the process and the graph", || async {
        running.pipeline.topology.size().edges >= 6 && p0().await > 0
    })
    .await;
    let (critical, high): (i64, i64) = sqlx::query_as(
        "SELECT count(DISTINCT vulnerability_id) FILTER (WHERE severity = 'critical'), \
                count(DISTINCT vulnerability_id) FILTER (WHERE severity = 'high') \
         FROM host_vulnerabilities WHERE host = 'db-01' AND resolved_at IS NULL",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert!(critical + high > 0);

    let app = palisade::api::app(palisade::server::app_state(
        &running.pipeline,
        env.connections().namespace(),
        &running.search,
        &settings,
    ));
    let out = radius(&app, "node=web-01").await;
    assert_eq!(out["from"], "web-01");
    assert_eq!(out["direction"], "outbound");
    assert_eq!(out["depth"], 3);
    // db-01 carries the CVEs, so it and its service rank first.
    assert_eq!(
        reached(&out),
        vec![
            ("db-01".into(), 1),
            ("db-01:5432".into(), 1),
            ("backup-01".into(), 2),
            ("backup-01:22".into(), 2),
        ]
    );
    let db = &out["nodes"][0];
    assert_eq!(db["evidence"]["critical_cves"], critical, "{db}");
    assert_eq!(db["evidence"]["high_cves"], high, "{db}");
    assert_eq!(db["evidence"]["running_vulnerable"], p0().await, "{db}");
    assert!(db["risk"].as_i64().unwrap() > 0);
    assert_eq!(out["nodes"][2]["risk"], 0);
    assert_eq!(
        out["nodes"][2]["path"],
        json!(["web-01", "db-01:5432", "db-01", "backup-01:22", "backup-01"])
    );
    assert_eq!(out["nodes"][3]["process"], "sshd");
    assert_eq!(out["edges"].as_array().unwrap().len(), 4);

    // One hop; what depends on backup-01; the outside address, by IP.
    assert_eq!(reached(&radius(&app, "node=web-01&depth=1").await).len(), 2);
    let inbound = radius(&app, "node=backup-01&direction=inbound&depth=2").await;
    let names: Vec<String> = reached(&inbound).into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"db-01".to_owned()) && names.contains(&"web-01".to_owned()));
    let outside = radius(&app, "node=203.0.113.5&depth=1").await;
    assert!(
        reached(&outside).contains(&("web-01".into(), 1)),
        "{outside}"
    );
    let by_address = radius(&app, "node=10.0.0.2&depth=1").await;
    assert_eq!(by_address["from"], "db-01");

    // Debug exports.
    let (status, dot) = get_text(&app, "/api/v1/graph/blast-radius?node=web-01&format=dot").await;
    assert_eq!(status, StatusCode::OK);
    assert!(dot.contains("\"web-01\" -> \"db-01:5432\""), "{dot}");
    let (_, mermaid) = get_text(
        &app,
        "/api/v1/graph/blast-radius?node=web-01&format=mermaid",
    )
    .await;
    assert!(mermaid.starts_with("flowchart LR"), "{mermaid}");

    // Mistakes are 4xx with a JSON error.
    for (query, expected) in [
        ("node=nowhere-01", StatusCode::NOT_FOUND),
        ("node=web-01&depth=0", StatusCode::BAD_REQUEST),
        ("node=web-01&depth=99", StatusCode::BAD_REQUEST),
        ("node=web-01&direction=sideways", StatusCode::BAD_REQUEST),
        ("node=web-01&format=png", StatusCode::BAD_REQUEST),
        ("depth=2", StatusCode::BAD_REQUEST),
    ] {
        let (status, body) = get_text(&app, &format!("/api/v1/graph/blast-radius?{query}")).await;
        assert_eq!(status, expected, "{query}: {body}");
        let error: Value = serde_json::from_str(&body).unwrap();
        assert!(error["error"].as_str().is_some(), "{query}: {body}");
    }

    // The same walk as an SRQL stage, through the query API.
    let srql = |q: &str| {
        Request::post("/api/v1/query")
            .header("content-type", "application/json")
            .body(Body::from(json!({ "q": q }).to_string()))
            .unwrap()
    };
    let (status, page) = call(&app, srql("host:web-01 | blast_radius(depth:3) | limit:3")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["path"], "graph", "{page}");
    assert_eq!(page["total"]["value"], 4, "{page}");
    let rows = page["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0], out["nodes"][0], "the API's ranking");
    assert!(page["next_cursor"].as_str().is_some(), "{page}");
    let (status, _) = call(&app, srql("host:nowhere-01 | blast_radius()")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A restart rebuilds the same graph from PostgreSQL.
    let before = reached(&out);
    drop(app);
    running.stop().await;
    let running = palisade::server::start(env.connections(), settings.clone())
        .await
        .unwrap();
    let app = palisade::api::app(palisade::server::app_state(
        &running.pipeline,
        env.connections().namespace(),
        &running.search,
        &settings,
    ));
    assert_eq!(reached(&radius(&app, "node=web-01").await), before);
    running.stop().await;
    env.cleanup().await;
}
