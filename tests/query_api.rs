//! The query API end to end: real fixtures published to JetStream, projected into
//! PostgreSQL and the tantivy index, then queried with SRQL through `app()` and over a
//! socket, with bearer tokens.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{fixture, TestEnv};
use palisade::auth::{ApiToken, Scope};
use serde_json::{json, Value};
use tower::ServiceExt;

const ANALYST: &str = "analyst-secret";
const SCRAPER: &str = "prometheus-secret";

async fn call(app: &axum::Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 16 << 20)
        .await
        .unwrap();
    let json = serde_json::from_slice(&body)
        .unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&body)}));
    (status, json)
}

fn post(q: Value, token: Option<&str>) -> Request<Body> {
    let mut r = Request::post("/api/v1/query").header("content-type", "application/json");
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    r.body(Body::from(q.to_string())).unwrap()
}

fn get(path: &str, token: Option<&str>) -> Request<Body> {
    let mut r = Request::get(path);
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    r.body(Body::empty()).unwrap()
}

async fn query(app: &axum::Router, q: &str) -> Value {
    let (status, body) = call(app, post(json!({ "q": q }), Some(ANALYST))).await;
    assert_eq!(status, StatusCode::OK, "{q}: {body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srql_finds_ingested_events_through_the_api() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("palisade=info")
        .try_init();
    let env = TestEnv::new("query_api").await;
    let tokens = format!(
        "--api-token={},{}",
        ApiToken::entry("analyst", &[Scope::Query], ANALYST),
        ApiToken::entry("prometheus", &[Scope::Status], SCRAPER)
    );
    let settings = env.serve_settings(&[&tokens, "--search-commit-interval-ms=200"]);
    let running = palisade::server::start(env.connections(), settings.clone())
        .await
        .unwrap();

    // Real Falco alerts as Falcosidekick sends them, and a real auth log in our envelope.
    for line in fixture("falco/alerts.jsonl").lines() {
        env.publish_core("security.falco.alerts", line.to_owned())
            .await;
    }
    env.publish("logs.auth", common::auth_log_envelope().to_string())
        .await;
    env.publish(
        "security.xdp.drops",
        json!({"v": 1, "ts": "2026-11-20T10:00:00Z", "host": "proxmox-node-01",
               "drops": [{"src_ip": "198.51.100.7", "dst_ip": "10.0.0.5", "src_port": 4444,
                          "dst_port": 22, "protocol": "tcp", "iface": "eth0", "reason": "blocklist",
                          "rule": "deny-tor-exit", "packets": 12, "bytes": 840}]})
        .to_string(),
    )
    .await;
    env.flush().await;
    env.wait_for_count("SELECT count(*) FROM events", 36, Duration::from_secs(30))
        .await;

    let state = palisade::server::app_state(
        &running.pipeline,
        env.connections().namespace(),
        &running.search,
        &settings,
    );
    let app = palisade::api::app(state);

    // The search index catches up (commits at most every 200 ms).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let all = query(&app, "\"Failed password\" OR container").await;
        if all["total"]["value"].as_u64() >= Some(2) && running.search.doc_count() >= 36 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "search index never caught up: {all}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A rare IOC: the attacker's IP from the real auth log.
    let ip = query(&app, "\"216.160.83.57\"").await;
    assert_eq!(ip["path"], "search");
    assert_eq!(ip["total"], json!({"value": 1, "relation": "eq"}), "{ip}");
    let row = &ip["rows"][0];
    assert!(row["message"]
        .as_str()
        .unwrap()
        .contains("Failed password for root from 216.160.83.57"));
    assert_eq!(row["host"], "bastion-01");
    assert!(row["score"].as_f64().unwrap() > 0.0);
    assert!(row["snippet"].as_str().unwrap().contains("<b>"), "{row}");

    // Field filter + text, and a phrase that a keyword split would get wrong.
    let both = query(&app, "host:bastion-01 password").await;
    assert_eq!(both["total"]["value"], 2, "{both}");
    let phrase = query(&app, "\"user NOT in sudoers\"").await;
    assert_eq!(phrase["total"]["value"], 1, "{phrase}");
    let negated = query(&app, "host:bastion-01 password -root").await;
    assert_eq!(negated["total"]["value"], 1, "{negated}");

    // A key=value pair, in Falco output and in sudo lines (USER=root), case-insensitively.
    let pair = query(&app, "user=root | limit:100").await;
    let in_db = env
        .count("SELECT count(*) FROM events WHERE message ~* '(^|[^a-z_])user=root([^a-z0-9_]|$)'")
        .await;
    assert!(in_db > 10);
    assert_eq!(pair["total"]["value"].as_i64(), Some(in_db), "{pair}");

    // A numeric attribute, in the index (with a full-text term) and in PostgreSQL.
    let port = query(&app, "dst_port:22 deny-tor-exit").await;
    assert_eq!(
        (port["path"].as_str(), port["total"]["value"].as_u64()),
        (Some("search"), Some(1)),
        "{port}"
    );
    let port = query(&app, "dst_port:23 deny-tor-exit").await;
    assert_eq!(port["total"]["value"], 0, "{port}");
    let port = query(&app, "dst_port:22 ip:198.51.100.0/24").await;
    assert_eq!(port["total"]["value"], 1, "{port}");
    let port = query(&app, "dst_port:>=22 type:xdp_drop").await;
    assert_eq!(
        (port["path"].as_str(), port["total"]["value"].as_u64()),
        (Some("sql"), Some(1)),
        "{port}"
    );

    // Field-only queries run in PostgreSQL; counts agree with the table.
    let rule = "Launch Privileged Container";
    let by_rule = query(&app, &format!("rule:\"{rule}\"")).await;
    assert_eq!(by_rule["path"], "sql");
    let expected = env
        .count(&format!(
            "SELECT count(*) FROM events WHERE rule = '{rule}'"
        ))
        .await;
    assert!(expected > 0);
    assert_eq!(by_rule["total"]["value"].as_i64(), Some(expected));
    let stats = query(
        &app,
        "in:alerts | stats count() by rule | sort:count:desc | limit:3",
    )
    .await;
    assert_eq!(stats["columns"], json!(["rule", "count"]));
    let top = env
        .count("SELECT count(*) FROM events WHERE type = 'falco_alert' GROUP BY rule ORDER BY 1 DESC LIMIT 1")
        .await;
    assert_eq!(stats["rows"][0]["count"].as_i64(), Some(top), "{stats}");
    // Stats over full-text matches: counted in the index, or over the hits' rows.
    let by_host = query(&app, "password | stats count() by host").await;
    assert_eq!(by_host["path"], "search");
    assert_eq!(
        by_host["rows"],
        json!([{"host": "bastion-01", "count": 2}]),
        "{by_host}"
    );
    let by_day = query(&app, "password | stats count() as n by bucket(ts, 1d)").await;
    let days = by_day["rows"].as_array().unwrap();
    assert_eq!(
        days.iter().map(|r| r["n"].as_i64().unwrap()).sum::<i64>(),
        2,
        "{by_day}"
    );
    let logs = query(&app, "in:logs | stats count() as lines by host").await;
    assert_eq!(logs["rows"], json!([{"host": "bastion-01", "lines": 10}]));

    // Paging: two pages of 4 with no overlap, then the cursor of another query is refused.
    let first = query(&app, "in:logs | sort:ts:asc | limit:4").await;
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let (status, second) = call(
        &app,
        post(
            json!({"q": "in:logs | sort:ts:asc | limit:4", "cursor": cursor}),
            Some(ANALYST),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let ids = common::row_ids;
    assert_eq!(ids(&second).len(), 4);
    assert!(ids(&first).iter().all(|id| !ids(&second).contains(id)));
    let (status, body) = call(
        &app,
        post(json!({"q": "in:logs", "cursor": cursor}), Some(ANALYST)),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let deep = palisade::query::cursor::Cursor::new("in:logs", 1_000_000_000).encode();
    let (status, body) = call(
        &app,
        post(json!({"q": "in:logs", "cursor": deep}), Some(ANALYST)),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // One event by id; a missing one; a malformed id.
    let id = row["id"].as_str().unwrap();
    let (status, event) = call(&app, get(&format!("/api/v1/events/{id}"), Some(ANALYST))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(event["message"], row["message"]);
    assert_eq!(event["stream_seq"].as_i64().is_some(), true);
    let (status, _) = call(
        &app,
        get(
            &format!("/api/v1/events/{}", uuid::Uuid::new_v4()),
            Some(ANALYST),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = call(&app, get("/api/v1/events/not-a-uuid", Some(ANALYST))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // Explain shows the plan, SQL, parameters and the search query; values stay out of SQL.
    let (status, plan) = call(
        &app,
        get(
            "/api/v1/query/explain?q=host%3Abastion-01%20password",
            Some(ANALYST),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(plan["compiled"]["path"], "search");
    assert!(plan["compiled"]["search"]
        .to_string()
        .contains("bastion-01"));
    assert!(!plan["compiled"]["sql"]
        .as_str()
        .unwrap()
        .contains("bastion-01"));
    assert!(plan["tantivy_query"]
        .as_str()
        .unwrap()
        .contains("TermQuery"));

    // The catalogue, for autocomplete.
    let (status, fields) = call(&app, get("/api/v1/fields", Some(ANALYST))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(fields.to_string().contains("\"proc.cmdline\""));
    // And the commonest values of the events' hosts, types, rules and sources.
    let hosts = fields["values"]["host"].as_array().unwrap();
    assert!(hosts.iter().any(|h| h == "bastion-01"), "{fields}");
    assert!(!fields["values"]["type"].as_array().unwrap().is_empty());

    // User mistakes are 4xx JSON, with the SRQL position.
    let (status, body) = call(&app, post(json!({"q": "host:"}), Some(ANALYST))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["srql"]["column"], 6, "{body}");
    let (status, body) = call(&app, post(json!({"q": "hots:bastion-01"}), Some(ANALYST))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("did you mean `host`"),
        "{body}"
    );
    let (status, body) = call(
        &app,
        post(json!({"q": "in:connections ip:10.0.0.300"}), Some(ANALYST)),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let bad_json = Request::post("/api/v1/query")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {ANALYST}"))
        .body(Body::from("{not json"))
        .unwrap();
    let (status, body) = call(&app, bad_json).await;
    assert!(status.is_client_error(), "{status}");
    assert!(body["error"].is_string(), "{body}");
    let huge = json!({"q": "a ".repeat(40_000)});
    let (status, body) = call(&app, post(huge, Some(ANALYST))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(body["error"].is_string());
    let (status, body) = call(
        &app,
        post(json!({"q": "a | SIMILAR_TO(\"x\")"}), Some(ANALYST)),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "{body}");

    // Tokens: none → 401, wrong scope → 403, right scope → 200; /healthz stays open.
    let (status, body) = call(&app, post(json!({"q": "a"}), None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _) = call(&app, post(json!({"q": "a"}), Some("guess"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = call(&app, post(json!({"q": "a"}), Some(SCRAPER))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = call(&app, get("/api/v1/status", Some(SCRAPER))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&app, get("/api/v1/status", Some(ANALYST))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(&app, get("/metrics", None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call(&app, get("/healthz", None)).await;
    assert_eq!(status, StatusCode::OK);

    // The OpenAPI document lists exactly the API's routes, and each one is served.
    let (status, doc) = call(&app, get("/api/v1/openapi.json", None)).await;
    assert_eq!(status, StatusCode::OK);
    let paths = doc["paths"].as_object().unwrap();
    let mut listed: Vec<&str> = paths.keys().map(String::as_str).collect();
    listed.sort_unstable();
    assert_eq!(
        listed,
        [
            "/api/v1/alerts/groups",
            "/api/v1/alerts/groups/events",
            "/api/v1/alerts/groups/regroup",
            "/api/v1/events/{id}",
            "/api/v1/fields",
            "/api/v1/graph/blast-radius",
            "/api/v1/incidents",
            "/api/v1/query",
            "/api/v1/query/explain",
            "/api/v1/status",
            "/api/v1/vulns",
            "/healthz"
        ]
    );
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let concrete = path.replace("{id}", id);
            let uri = if concrete.ends_with("explain") {
                format!("{concrete}?q=a")
            } else {
                concrete
            };
            let request = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&uri)
                .header("authorization", format!("Bearer {ANALYST}"))
                .header("content-type", "application/json")
                .body(Body::from(json!({"q": "a"}).to_string()))
                .unwrap();
            let (status, body) = call(&app, request).await;
            assert!(
                status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {uri} is documented but not served: {status} {body}"
            );
        }
    }
    assert_eq!(palisade::api::openapi().paths.paths.len(), paths.len());

    // Over a real socket, as `palisade query` does it.
    let client = palisade::client::ApiClient::new(
        &format!("http://{}", running.http_addr),
        Some(ANALYST.to_owned()),
    )
    .unwrap();
    let answer = client
        .post_json("/api/v1/query", &json!({"q": "\"216.160.83.57\""}))
        .await
        .unwrap();
    assert_eq!(answer["rows"][0]["id"], row["id"]);
    let table = palisade::client::render_table(&answer, 200);
    assert!(table.contains("bastion-01"), "{table}");
    let refused = palisade::client::ApiClient::new(&format!("http://{}", running.http_addr), None)
        .unwrap()
        .post_json("/api/v1/query", &json!({"q": "a"}))
        .await
        .unwrap_err();
    assert!(refused.to_string().starts_with("401"), "{refused}");

    // The CLI: `palisade query` prints the same rows as a table.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["query", "host:bastion-01 password"])
        .env("PALISADE_SERVER", format!("http://{}", running.http_addr))
        .env("PALISADE_API_TOKEN", ANALYST)
        .env("COLUMNS", "200")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Failed password for root") && stdout.contains("2 rows of 2"),
        "{stdout}"
    );
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["query", "host:"])
        .env("PALISADE_SERVER", format!("http://{}", running.http_addr))
        .env("PALISADE_API_TOKEN", ANALYST)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("400") && stderr.contains("column 6"),
        "{stderr}"
    );

    running.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_to_listen_openly_without_tokens() {
    let env = TestEnv::new("query_api_open").await;
    let mut settings = env.serve_settings(&[]);
    settings.http_addr = "0.0.0.0:0".parse().unwrap();
    let err = palisade::server::start(env.connections(), settings)
        .await
        .err()
        .expect("no tokens on a public address is refused");
    assert!(err.to_string().contains("without tokens"), "{err}");
    env.cleanup().await;
}
