//! Running vs dormant end to end: process deltas and a real Trivy report published
//! to JetStream, incidents correlated in PostgreSQL, P0s published on
//! `incidents.p0`, and the AWX remediation hook launched against a local HTTP
//! server that speaks AWX's job-template launch contract, over plain HTTP and over
//! TLS with a certificate the launcher must verify.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use common::{fixture, get_text, wait_until, TestEnv};
use futures::StreamExt;
use serde_json::{json, Value};
use tower::ServiceExt;

const AWX_TOKEN: &str = "awx-test-token";
const AWX_JOB: i64 = 4242;

/// Launches the stand-in AWX received: (template id, body).
type Launches = Arc<Mutex<Vec<(u64, Value)>>>;

/// AWX's `POST /api/v2/job_templates/{id}/launch/`: bearer token required, 201
/// with the new job's id.
async fn launch(
    State(launches): State<Launches>,
    Path(template): Path<u64>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if auth != format!("Bearer {AWX_TOKEN}") {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"detail": "Authentication credentials were not provided."})),
        );
    }
    if body["extra_vars"].is_null() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"detail": "extra_vars missing"})),
        );
    }
    launches.lock().unwrap().push((template, body));
    (
        StatusCode::CREATED,
        Json(json!({"job": AWX_JOB, "id": AWX_JOB, "status": "pending", "type": "job"})),
    )
}

fn awx_routes(launches: &Launches) -> Router {
    Router::new()
        .route("/api/v2/job_templates/{id}/launch/", post(launch))
        .with_state(launches.clone())
}

async fn stand_in_awx() -> (String, Launches) {
    let launches: Launches = Arc::default();
    let app = awx_routes(&launches);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), launches)
}

/// The stand-in AWX behind TLS with a fresh self-signed certificate for 127.0.0.1:
/// (https address, the certificate's PEM, launches).
async fn stand_in_awx_over_tls() -> (String, String, Launches) {
    let launches: Launches = Arc::default();
    let app = awx_routes(&launches);
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert_pem = cert.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.key_pair.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                // A client that rejects the certificate ends the handshake here.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (format!("https://{addr}"), cert_pem, launches)
}

fn processes(host: &str, ts: &str, started: Value, stopped: Value) -> String {
    json!({"v": 1, "ts": ts, "host": host, "agent_id": format!("edge-{host}"),
        "started": started, "stopped": stopped})
    .to_string()
}

fn scan(host: &str, ts: &str, report: &Value) -> String {
    json!({"v": 1, "ts": ts, "host": host, "agent_id": format!("edge-{host}"),
        "target_kind": "host", "report": report})
    .to_string()
}

async fn get(app: &axum::Router, uri: &str) -> (StatusCode, Value) {
    let (status, body) = get_text(app, uri).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// (host, package, state, priority) of the open incidents, sorted.
async fn open_incidents(env: &TestEnv) -> Vec<(String, String, String, String)> {
    sqlx::query_as(
        "SELECT host, package, state, priority FROM incidents WHERE resolved_at IS NULL \
         ORDER BY 1, 2",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap()
}

fn row(host: &str, package: &str, state: &str, priority: &str) -> (String, String, String, String) {
    (host.into(), package.into(), state.into(), priority.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_vulnerable_packages_are_p0_and_launch_remediation() {
    let env = TestEnv::new("correlation").await;
    let (awx_url, launches) = stand_in_awx().await;
    let settings = env.serve_settings(&[
        &format!("--awx-url={awx_url}"),
        "--awx-job-template=7",
        &format!("--awx-token={AWX_TOKEN}"),
    ]);
    let running = palisade::server::start(env.connections(), settings.clone())
        .await
        .unwrap();
    let mut p0s = env
        .client
        .subscribe(env.connections().namespace().subject("incidents.p0"))
        .await
        .unwrap();
    let ts =
        |minutes: i64| (chrono::Utc::now() - chrono::Duration::minutes(60 - minutes)).to_rfc3339();

    // db-01 runs musl (the agent names the package) and a binary named after
    // musl-utils (matched by name); web-01 has the same image and runs neither.
    env.publish(
        "telemetry.processes.edge",
        processes(
            "db-01",
            &ts(0),
            json!([
                {"pid": 100, "ppid": 1, "exe": "/usr/lib/postgresql/bin/postgres",
                 "cmdline": "postgres -D /var/lib/postgresql", "user": "postgres", "package": "musl"},
                {"pid": 200, "ppid": 1, "exe": "/usr/bin/musl-utils", "cmdline": "musl-utils --version",
                 "user": "root"},
                {"pid": 300, "ppid": 1, "exe": "/usr/sbin/crond", "cmdline": "crond -f", "user": "root"}]),
            json!([]),
        ),
    )
    .await;
    let report: Value = serde_json::from_str(&fixture("trivy/alpine-39.json")).unwrap();
    for host in ["db-01", "web-01"] {
        env.publish("scan.trivy.results", scan(host, &ts(1), &report))
            .await;
    }
    wait_until("four incidents", || async {
        open_incidents(&env).await.len() == 4
    })
    .await;
    assert_eq!(
        open_incidents(&env).await,
        vec![
            row("db-01", "musl", "running", "P0"),
            row("db-01", "musl-utils", "running", "P0"),
            row("web-01", "musl", "dormant", "scheduled"),
            row("web-01", "musl-utils", "dormant", "scheduled"),
        ]
    );
    let evidence: Vec<Value> =
        sqlx::query_scalar("SELECT evidence FROM incidents WHERE host = 'db-01' ORDER BY package")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(evidence[0][0]["pid"], 100);
    assert_eq!(evidence[0][0]["matched_by"], "package");
    assert_eq!(evidence[1][0]["pid"], 200);
    assert_eq!(evidence[1][0]["matched_by"], "name");

    // Each new P0 is published once and launches the AWX template with the host.
    let mut published = Vec::new();
    for _ in 0..2 {
        let message = tokio::time::timeout(Duration::from_secs(10), p0s.next())
            .await
            .expect("a P0 on incidents.p0")
            .unwrap();
        published.push(serde_json::from_slice::<Value>(&message.payload).unwrap());
    }
    assert!(
        published.iter().all(|p| p["host"] == "db-01"),
        "{published:?}"
    );
    assert!(published
        .iter()
        .all(|p| p["vulnerability_id"] == "CVE-2019-14697"));
    wait_until("two remediation jobs recorded", || async {
        env.count(&format!(
            "SELECT count(*) FROM incidents WHERE remediation_job = {AWX_JOB}"
        ))
        .await
            == 2
    })
    .await;
    {
        let launches = launches.lock().unwrap();
        assert_eq!(launches.len(), 2);
        assert!(launches.iter().all(|(template, body)| *template == 7
            && body["extra_vars"]["palisade_host"] == "db-01"
            && body["extra_vars"]["palisade_cve"] == "CVE-2019-14697"));
    }

    // The API: running and dormant findings, incidents, mistakes.
    let app = palisade::api::app(palisade::server::app_state(
        &running.pipeline,
        env.connections().namespace(),
        &running.search,
        &settings,
    ));
    let (status, body) = get(&app, "/api/v1/vulns?state=running").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["count"], 2);
    assert!(body["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["host"] == "db-01" && i["priority"] == "P0"));
    let (_, dormant) = get(&app, "/api/v1/vulns?state=dormant&host=web-01").await;
    assert_eq!(dormant["count"], 2);
    let (_, all) = get(&app, "/api/v1/incidents").await;
    assert_eq!(all["count"], 4);
    assert_eq!(all["incidents"][0]["priority"], "P0", "P0 first");
    assert_eq!(all["incidents"][0]["remediation_job"], AWX_JOB);
    // SRQL over incidents.
    let response = app
        .clone()
        .oneshot(
            axum::http::Request::post("/api/v1/query")
                .header("content-type", "application/json")
                .body(axum::body::Body::from(
                    json!({"q": "in:incidents priority:P0 status:open severity:critical"})
                        .to_string(),
                ))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let page: Value = serde_json::from_slice(
        &axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(page["entity"], "incidents", "{page}");
    assert_eq!(page["total"]["value"], 2, "{page}");
    assert!(page["rows"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["host"] == "db-01" && r["status"] == "open" && r["state"] == "running"));
    for bad in [
        "/api/v1/vulns?state=sleeping",
        "/api/v1/incidents?status=maybe",
        "/api/v1/incidents?limit=0",
    ] {
        let (status, body) = get(&app, bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(body["error"].as_str().is_some(), "{bad}: {body}");
    }

    // musl stops on db-01: dormant, scheduled. It starts again: P0 again, published
    // and remediated again.
    env.publish(
        "telemetry.processes.edge",
        processes(
            "db-01",
            &ts(2),
            json!([]),
            json!([{"pid": 100, "ts": ts(2)}]),
        ),
    )
    .await;
    wait_until("musl dormant on db-01", || async {
        open_incidents(&env).await[0] == row("db-01", "musl", "dormant", "scheduled")
    })
    .await;
    assert_eq!(
        open_incidents(&env).await[1],
        row("db-01", "musl-utils", "running", "P0")
    );
    env.publish(
        "telemetry.processes.edge",
        processes(
            "db-01",
            &ts(3),
            json!([{"pid": 101, "ppid": 1, "exe": "/usr/lib/postgresql/bin/postgres",
                    "cmdline": "postgres", "user": "postgres", "package": "musl"}]),
            json!([]),
        ),
    )
    .await;
    let again = tokio::time::timeout(Duration::from_secs(10), p0s.next())
        .await
        .expect("the re-escalation on incidents.p0")
        .unwrap();
    let again: Value = serde_json::from_slice(&again.payload).unwrap();
    assert_eq!(
        (again["host"].as_str(), again["package"].as_str()),
        (Some("db-01"), Some("musl"))
    );
    assert_eq!(again["evidence"][0]["pid"], 101);
    wait_until("a third launch", || async {
        launches.lock().unwrap().len() == 3
    })
    .await;

    // web-01 is patched: a later scan without the findings resolves its incidents.
    let mut patched = report.clone();
    for result in patched["Results"].as_array_mut().unwrap() {
        result["Vulnerabilities"] = json!([]);
    }
    env.publish("scan.trivy.results", scan("web-01", &ts(4), &patched))
        .await;
    wait_until("web-01's incidents resolved", || async {
        open_incidents(&env).await.len() == 2
    })
    .await;
    assert_eq!(
        env.count(
            "SELECT count(*) FROM incidents WHERE host = 'web-01' AND resolved_at IS NOT NULL"
        )
        .await,
        2
    );
    drop(app);
    running.stop().await;
    env.cleanup().await;
}

/// Where the scan lists a package's installed files, an executable belongs to the
/// package that installed it: Debian's `nginx` is a metapackage and `/usr/sbin/nginx`
/// comes from `nginx-core`. The report is written for this test in Trivy's schema
/// (`InstalledFiles` as `trivy --list-all-pkgs --format json` writes it for dpkg); the
/// fixtures' real reports list no files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installed_files_tell_which_package_a_process_runs() {
    let env = TestEnv::new("correlation_files").await;
    let running = palisade::server::start(env.connections(), env.serve_settings(&[]))
        .await
        .unwrap();
    let ts =
        |minutes: i64| (chrono::Utc::now() - chrono::Duration::minutes(60 - minutes)).to_rfc3339();
    env.publish(
        "telemetry.processes.edge",
        processes(
            "app-01",
            &ts(0),
            json!([
                {"pid": 10, "ppid": 1, "exe": "/usr/sbin/nginx", "cmdline": "nginx: master process",
                 "user": "root"},
                {"pid": 20, "ppid": 1, "exe": "/usr/sbin/sshd", "cmdline": "sshd: /usr/sbin/sshd -D",
                 "user": "root"}]),
            json!([]),
        ),
    )
    .await;
    let vulnerability = |package: &str, version: &str, severity: &str| {
        json!({"VulnerabilityID": "CVE-2023-44487", "PkgName": package,
               "InstalledVersion": version, "Severity": severity})
    };
    let report = json!({
        "SchemaVersion": 2, "CreatedAt": ts(1), "ArtifactName": "app-01", "ArtifactType": "filesystem",
        "Metadata": {"OS": {"Family": "debian", "Name": "12.7"}},
        "Results": [{"Target": "app-01 (debian 12.7)", "Class": "os-pkgs", "Type": "debian",
            "Packages": [
                {"Name": "nginx", "Version": "1.22.1-9",
                 "InstalledFiles": ["/usr/share/doc/nginx/copyright"]},
                {"Name": "nginx-core", "Version": "1.22.1-9",
                 "InstalledFiles": ["/usr/sbin/nginx", "/usr/share/doc/nginx-core/copyright"]},
                {"Name": "openssh-server", "Version": "1:9.2p1-2+deb12u3",
                 "InstalledFiles": ["/usr/sbin/sshd", "/etc/ssh/moduli"]}],
            "Vulnerabilities": [
                vulnerability("nginx", "1.22.1-9", "HIGH"),
                vulnerability("nginx-core", "1.22.1-9", "HIGH"),
                vulnerability("openssh-server", "1:9.2p1-2+deb12u3", "CRITICAL")]}]
    });
    env.publish("scan.trivy.results", scan("app-01", &ts(1), &report))
        .await;
    wait_until("three incidents", || async {
        open_incidents(&env).await.len() == 3
    })
    .await;
    assert_eq!(
        open_incidents(&env).await,
        vec![
            // /usr/sbin/nginx is nginx-core's file, so no name match for `nginx`.
            row("app-01", "nginx", "dormant", "scheduled"),
            row("app-01", "nginx-core", "running", "P0"),
            row("app-01", "openssh-server", "running", "P0"),
        ]
    );
    let evidence: Vec<Value> = sqlx::query_scalar(
        "SELECT evidence FROM incidents WHERE state = 'running' ORDER BY package",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(
        evidence,
        [
            json!([{"pid": 10, "exe": "/usr/sbin/nginx", "matched_by": "file"}]),
            json!([{"pid": 20, "exe": "/usr/sbin/sshd", "matched_by": "file"}]),
        ]
    );
    running.stop().await;
}

/// AWX is usually reached over HTTPS: the launcher verifies the server's certificate
/// (here against the CA file it is given), refuses an unverified one, and launches the
/// job over TLS like over plain HTTP.
#[tokio::test]
async fn the_awx_launcher_speaks_tls_and_verifies_the_certificate() {
    let (awx_url, cert_pem, launches) = stand_in_awx_over_tls().await;
    let dir = tempfile_dir();
    let ca_file = dir.join("awx-ca.pem");
    std::fs::write(&ca_file, cert_pem).unwrap();
    let incident = palisade_core::correlation::P0 {
        id: uuid::Uuid::new_v4(),
        host: "web-01".into(),
        vulnerability_id: "CVE-2024-6387".into(),
        package: "openssh-server".into(),
        version: "1:9.2p1-2+deb12u2".into(),
        severity: "critical".into(),
        evidence: json!([]),
        escalated_at: chrono::Utc::now(),
    };
    let settings = |ca: Option<std::path::PathBuf>| palisade::remediation::RemediationSettings {
        awx_url: Some(awx_url.clone()),
        awx_job_template: Some(9),
        awx_token: Some(AWX_TOKEN.into()),
        awx_ca_file: ca,
    };

    let trusted = settings(Some(ca_file)).launcher().unwrap().unwrap();
    assert_eq!(trusted.launch(&incident).await, Ok(AWX_JOB));
    {
        let launches = launches.lock().unwrap();
        assert_eq!(launches.len(), 1);
        assert_eq!(launches[0].0, 9);
        assert_eq!(launches[0].1["extra_vars"]["palisade_host"], "web-01");
        assert_eq!(launches[0].1["extra_vars"]["palisade_cve"], "CVE-2024-6387");
    }

    // Without the CA file the self-signed certificate is not trusted: no launch.
    let untrusted = settings(None).launcher().unwrap().unwrap();
    let refused = untrusted.launch(&incident).await.unwrap_err();
    assert!(refused.contains("certificate"), "{refused}");
    assert_eq!(launches.lock().unwrap().len(), 1);
    std::fs::remove_dir_all(dir).ok();
}

/// A fresh directory under the system's temporary directory.
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("palisade-awx-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
