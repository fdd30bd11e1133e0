//! The web console end to end in headless Chromium: a real Palisade (HTTP server,
//! JetStream, PostgreSQL, the model) with ingested fixtures (real Falco alerts, a
//! real auth log, a real Trivy report) and generated attack bursts and connections,
//! driven by web/e2e/console.mjs through playwright-core: sign in with a token, type
//! a query and see rows, a syntax error at its position, an event's drawer and "find
//! similar", the alert groups dashboard and a group's events, a blast radius with a
//! P0 host, vulnerabilities and ingest status. Screenshots of each page are saved
//! under target/console-screenshots.
//!
//! Needs Debian's chromium and the npm packages: `scripts/stack.sh console` installs
//! both (scripts/test.sh runs it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use common::{
    auth_log_envelope, connections_envelope, fixture, publish_running_vulnerable_musl, socket,
    wait_until, TestEnv,
};
use palisade::auth::{ApiToken, Scope};
use palisade::bursts;

const SECRET: &str = "console-e2e-secret";
const CHROMIUM: &str = "/usr/bin/chromium";
const HINT: &str =
    "run `scripts/stack.sh console` (installs Debian's chromium and web/e2e's npm packages)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_a_real_browser() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let e2e = root.join("web/e2e");
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: {HINT}"
    );
    assert!(
        e2e.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed in web/e2e: {HINT}"
    );

    let env = TestEnv::new("console").await;
    let token = format!(
        "--api-token={}",
        ApiToken::entry("analyst", &Scope::ALL, SECRET)
    );
    let settings = env.serve_settings(&["--vectors=true", &token]);
    let running = palisade::server::start(env.connections(), settings)
        .await
        .unwrap();

    // Real fixtures.
    for line in fixture("falco/alerts.jsonl").lines() {
        env.publish("security.falco.alerts", line.to_owned()).await;
    }
    env.publish("logs.auth", auth_log_envelope().to_string())
        .await;
    // Generated bursts of known attack patterns on one day, for the groups dashboard.
    let day = Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0).unwrap();
    let generated = bursts::attack_bursts(day, 12);
    for message in &generated {
        env.publish(message.subject, message.payload.clone()).await;
    }
    // A small fleet: web-01 → db-01:5432; db-01 runs the vulnerable Alpine image of
    // the real Trivy fixture, and musl runs there: a P0.
    let ts = (Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
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
            ],
        ),
    ];
    for (host, sockets) in fleet {
        env.publish(
            "topology.connections",
            connections_envelope(host, &ts, sockets),
        )
        .await;
    }
    publish_running_vulnerable_musl(&env, "db-01", &ts).await;

    let embedded = bursts::embedded(&generated).len() as i64;
    env.wait_for_count(
        "SELECT count(*) FROM event_vectors WHERE ts >= '2026-11-20' AND ts < '2026-11-21'",
        embedded,
        Duration::from_secs(120),
    )
    .await;
    env.wait_for_count(
        "SELECT count(*) FROM events WHERE type = 'log' AND ts < '2026-03-01'",
        10,
        Duration::from_secs(60),
    )
    .await;
    env.wait_for_count(
        "SELECT count(*) FROM incidents WHERE host = 'db-01' AND state = 'running'",
        1,
        Duration::from_secs(60),
    )
    .await;
    wait_until("the connection graph", || async {
        running.pipeline.topology.size().edges >= 2
    })
    .await;
    // The search index commits on its own interval: wait until it holds every event.
    wait_until("the search index", || async {
        running.search.doc_count() >= 35
    })
    .await;

    let shots = root.join("target/console-screenshots");
    let output = Command::new("node")
        .arg("console.mjs")
        .current_dir(&e2e)
        .env("PALISADE_URL", format!("http://{}", running.http_addr))
        .env("PALISADE_TOKEN", SECRET)
        .env("E2E_QUERY", "password")
        .env("E2E_RANGE_FROM", "2026-11-20T00:00:00Z")
        .env("E2E_RANGE_TO", "2026-11-21T00:00:00Z")
        .env("E2E_BLAST_NODE", "web-01")
        .env("SCREENSHOTS", &shots)
        .env("CHROMIUM", CHROMIUM)
        .output()
        .unwrap_or_else(|e| panic!("node could not run ({e}): {HINT}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the console's browser checks failed:\n{stdout}\n{stderr}\nscreenshots: {}",
        shots.display()
    );
    for page in [
        "login",
        "search",
        "search-autocomplete",
        "event-drawer",
        "find-similar",
        "syntax-error",
        "alert-groups",
        "blast-radius",
        "vulnerabilities",
        "ingest-status",
    ] {
        assert!(
            shots.join(format!("{page}.png")).exists(),
            "no screenshot of {page}"
        );
    }

    running.stop().await;
    env.cleanup().await;
}
