//! Every source, published as its producer publishes it, lands in PostgreSQL with
//! the right rows, fields and counts. Real NATS JetStream, real PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{auth_log_envelope, call, fixture, get_text, TestEnv};
use serde_json::json;
use tower::ServiceExt;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_source_lands_in_postgres() {
    let env = TestEnv::new("ingest").await;
    // Yesterday, so raw metrics and connections stay inside their 30-day retention
    // whenever this runs.
    let day = (chrono::Utc::now() - chrono::Days::new(1)).format("%Y-%m-%d");
    let running = palisade::server::start(env.connections(), env.serve_settings(&[]))
        .await
        .unwrap();

    // Falco exactly as Falcosidekick sends it: core NATS publish, no headers, both subject schemes.
    let alerts = fixture("falco/alerts.jsonl");
    for line in alerts.lines() {
        env.publish_core("security.falco.alerts", line.to_owned())
            .await;
    }
    let derived = fixture("falco/alerts_nats_derived.jsonl");
    let subjects = fixture("falco/alerts_nats_derived.subjects.txt");
    for (line, subject) in derived.lines().zip(subjects.lines()) {
        env.publish_core(subject, line.to_owned()).await;
    }
    env.publish_core(
        "security.falco.alerts",
        fixture("falco/internal_metrics_snapshot.json"),
    )
    .await;
    env.flush().await;

    // Trivy: four bare reports and one in our envelope.
    for file in [
        "alpine-39",
        "debian-stretch",
        "defectdojo-issue_9333-debian",
        "npm-list-all-pkgs",
    ] {
        env.publish("scan.trivy.results", fixture(&format!("trivy/{file}.json")))
            .await;
    }
    let report: serde_json::Value = serde_json::from_str(&fixture("trivy/alpine-39.json")).unwrap();
    let enveloped = json!({"v": 1, "ts": format!("{day}T10:00:00Z"), "host": "proxmox-node-01",
        "agent_id": "edge-1", "target_kind": "host", "report": report});
    env.publish("scan.trivy.results", enveloped.to_string())
        .await;

    env.publish("logs.auth", auth_log_envelope().to_string())
        .await;
    let metrics = json!({"v": 1, "ts": format!("{day}T10:15:00Z"), "host": "proxmox-node-01",
        "agent_id": "edge-1", "metrics": [
            {"name": "cpu.usage_percent", "value": 12.5, "labels": {"cpu": "total"}},
            {"name": "cpu.usage_percent", "value": 37.5, "labels": {"cpu": "total"}, "ts": format!("{day}T10:45:00Z")},
            {"name": "mem.used_bytes", "value": 8.0e9, "ts": format!("{day}T11:05:00Z")}]});
    env.publish("telemetry.metrics.edge", metrics.to_string())
        .await;
    let processes = json!({"v": 1, "ts": format!("{day}T10:00:00Z"), "host": "proxmox-node-01",
        "agent_id": "edge-1",
        "started": [
            {"pid": 812, "ppid": 1, "exe": "/usr/sbin/sshd", "cmdline": "sshd: /usr/sbin/sshd -D",
             "user": "root", "package": "openssh-server"},
            {"pid": 4242, "ppid": 812, "exe": "/bin/bash", "cmdline": "bash -i", "user": "root",
             "ts": format!("{day}T10:01:00Z")}],
        "stopped": [{"pid": 4242, "ts": format!("{day}T10:05:00Z")}]});
    env.publish("telemetry.processes.edge", processes.to_string())
        .await;
    let connections = json!({"v": 1, "ts": format!("{day}T10:00:00Z"), "host": "proxmox-node-01",
        "agent_id": "edge-1", "connections": [
            {"fd": 3, "family": 2, "type": 1, "localaddr": {"ip": "0.0.0.0", "port": 22},
             "remoteaddr": {"ip": "", "port": 0}, "status": "LISTEN", "uids": [0, 0, 0, 0], "pid": 812},
            {"fd": 4, "family": 2, "type": 1, "localaddr": {"ip": "10.0.0.5", "port": 22},
             "remoteaddr": {"ip": "10.0.0.9", "port": 51514}, "status": "ESTABLISHED",
             "uids": [0, 0, 0, 0], "pid": 812, "process": "sshd"}]});
    env.publish("topology.connections", connections.to_string())
        .await;
    let drops = json!({"v": 1, "ts": format!("{day}T10:00:00Z"), "host": "proxmox-node-01",
        "drops": [{"src_ip": "198.51.100.7", "dst_ip": "10.0.0.5", "src_port": 4444, "dst_port": 22,
                   "protocol": "tcp", "iface": "eth0", "reason": "blocklist", "rule": "deny-tor-exit",
                   "packets": 12, "bytes": 840}]});
    env.publish("security.xdp.drops", drops.to_string()).await;
    let malware = json!({"v": 1, "ts": format!("{day}T10:00:00Z"), "host": "k8s-worker-3",
        "scanner": "clamav", "findings": [{"signature": "Unix.Trojan.Mirai-7100807-0",
            "file_path": "/var/lib/containerd/rootfs/tmp/.x/mirai", "scan_source": "clamav",
            "pod": "web-7d9f", "namespace": "production", "image": "nginx:1.25",
            "container_id": "3f2a9c", "node": "k8s-worker-3"}]});
    env.publish("security.malware.findings", malware.to_string())
        .await;

    // 25 + 25 + 1 Falco, 10 log lines, 1 drop, 1 malware finding.
    env.wait_for_count("SELECT count(*) FROM events", 63, WAIT)
        .await;
    env.wait_for_count("SELECT count(*) FROM scans", 5, WAIT)
        .await;
    env.wait_for_count("SELECT count(*) FROM metrics", 3, WAIT)
        .await;
    env.wait_for_count("SELECT count(*) FROM connections", 2, WAIT)
        .await;
    env.wait_for_count(
        "SELECT count(*) FROM processes WHERE stopped_at IS NOT NULL",
        1,
        WAIT,
    )
    .await;

    // Falco: both subject schemes, severities mapped from priorities (fixture totals ×2 + the snapshot).
    assert_eq!(
        env.count("SELECT count(*) FROM events WHERE type = 'falco_alert'")
            .await,
        51
    );
    let by_severity: Vec<(String, i64)> = sqlx::query_as(
        "SELECT severity, count(*) FROM events WHERE type = 'falco_alert' GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let expected: Vec<(String, i64)> = [
        ("critical", 2),
        ("high", 14),
        ("info", 9),
        ("low", 16),
        ("medium", 10),
    ]
    .into_iter()
    .map(|(s, n)| (s.to_owned(), n))
    .collect();
    assert_eq!(by_severity, expected);
    assert_eq!(
        env.count("SELECT count(*) FROM events WHERE type = 'falco_alert' AND subject NOT LIKE '%security.falco.alerts'")
            .await,
        25
    );
    // 19-digit evt.time survives exactly (it is above 2^53), from both publishers.
    assert_eq!(
        env.count(
            "SELECT count(*) FROM events WHERE attributes->'output_fields'->>'evt.time' = '1651447772918828894'"
        )
        .await,
        2
    );
    // Falco's null values and bracketed keys are kept.
    assert!(
        env.count(
            "SELECT count(*) FROM events WHERE attributes->'output_fields' ? 'proc.aname[2]'"
        )
        .await
            > 0
    );
    assert!(
        env.count(
            "SELECT count(*) FROM events WHERE jsonb_typeof(attributes->'output_fields'->'proc.pname') = 'null'"
        )
        .await
            > 0
    );
    let (rule, message, ts): (String, String, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
        "SELECT rule, message, ts FROM events WHERE subject LIKE '%security.falco.alerts'
         ORDER BY stream_seq LIMIT 1",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(rule, "Launch Privileged Container");
    assert!(message.contains("Privileged container started"));
    assert_eq!(ts.to_rfc3339(), "2022-05-01T23:29:32.918828+00:00");

    // Logs: auth failures are classified above routine lines.
    assert_eq!(
        env.count("SELECT count(*) FROM events WHERE type = 'log' AND host = 'bastion-01'")
            .await,
        10
    );
    assert!(
        env.count(
            "SELECT count(*) FROM events WHERE type = 'log' AND severity = 'medium'
               AND message LIKE 'Failed password%'"
        )
        .await
            == 1
    );
    assert_eq!(
        env.count("SELECT count(*) FROM events WHERE type = 'xdp_drop' AND rule = 'deny-tor-exit'")
            .await,
        1
    );
    assert_eq!(
        env.count(
            "SELECT count(*) FROM events WHERE type = 'malware_finding' AND severity = 'critical'
               AND host = 'k8s-worker-3' AND rule = 'Unix.Trojan.Mirai-7100807-0'"
        )
        .await,
        1
    );

    // Trivy: findings linked to hosts and packages with their scan time.
    assert_eq!(
        env.count("SELECT count(*) FROM host_vulnerabilities WHERE host = 'proxmox-node-01'")
            .await,
        6
    );
    assert_eq!(
        env.count("SELECT count(*) FROM host_vulnerabilities").await,
        6 + 6 + 5 + 13 + 1
    );
    assert_eq!(
        env.count(
            "SELECT count(*) FROM host_vulnerabilities
             WHERE host = 'proxmox-node-01' AND severity = 'critical'"
        )
        .await,
        2
    );
    assert!(env.count("SELECT count(*) FROM host_packages hp JOIN packages p ON p.id = hp.package_id WHERE p.ecosystem = 'npm'").await >= 12);

    // Metrics, processes, connections, hosts.
    // The two touched hours get rolled up, whether the server's own maintenance pass
    // got there first or this one does.
    palisade_schema::Maintenance::new(palisade_schema::Retention::default())
        .run_once(&env.pool, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(
        env.count("SELECT count(*) FROM metrics_rollup_pending")
            .await,
        0
    );
    assert_eq!(
        env.count(&format!(
            "SELECT count(*) FROM metrics_hourly WHERE host = 'proxmox-node-01'
               AND ((bucket = '{day} 10:00:00+00' AND name = 'cpu.usage_percent'
                     AND samples = 2 AND avg_value = 25)
                 OR (bucket = '{day} 11:00:00+00' AND name = 'mem.used_bytes'))"
        ))
        .await,
        2
    );
    assert_eq!(
        env.count("SELECT count(*) FROM processes WHERE stopped_at IS NULL")
            .await,
        1
    );
    assert_eq!(
        env.count("SELECT count(*) FROM connections WHERE status = 'LISTEN' AND remote_ip IS NULL")
            .await,
        1
    );
    assert_eq!(
        env.count(
            "SELECT count(*) FROM connections WHERE protocol = 'tcp' AND remote_port = 51514"
        )
        .await,
        1
    );
    assert!(env.count("SELECT count(*) FROM hosts WHERE name IN ('proxmox-node-01','bastion-01','k8s-worker-3')").await == 3);
    assert_eq!(env.count("SELECT count(*) FROM dead_letters").await, 0);
    // The publishing agent is kept: the host's latest agent, on scans, processes, connections.
    assert_eq!(
        env.count(
            "SELECT count(*) FROM hosts WHERE name = 'proxmox-node-01' AND agent_id = 'edge-1'"
        )
        .await,
        1
    );
    assert_eq!(
        env.count("SELECT count(*) FROM hosts WHERE name = 'bastion-01' AND agent_id = 'edge-7'")
            .await,
        1
    );
    assert_eq!(
        env.count("SELECT count(*) FROM scans WHERE agent_id = 'edge-1'")
            .await,
        1
    );
    assert_eq!(
        env.count("SELECT count(*) FROM processes WHERE agent_id = 'edge-1'")
            .await,
        2
    );
    assert_eq!(
        env.count("SELECT count(*) FROM connections WHERE agent_id = 'edge-1'")
            .await,
        2
    );

    // The HTTP face, in-process through the router.
    let state =
        palisade::api::AppState::new(running.pipeline.clone(), env.connections().namespace());
    let app = palisade::api::app(state);
    let (code, status) = call(
        &app,
        Request::get("/api/v1/status").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(status["ingested"]["events_by_type"]["falco_alert"], 51);
    assert_eq!(status["ingested"]["scans"], 5);
    let (_, text) = get_text(&app, "/metrics").await;
    assert!(
        text.contains("palisade_ingest_messages_total{projection=\"events\"} 54"),
        "{text}"
    );
    for metric in [
        "palisade_ingest_rows_written_total{projection=\"events\"} 63",
        "palisade_ingest_dead_letters_total",
        "palisade_ingest_batch_seconds_bucket{",
        "palisade_ingest_consumer_lag{",
    ] {
        assert!(
            text.contains(metric),
            "{metric} missing from /metrics:\n{text}"
        );
    }

    // Streams keep their messages on disk, by age, with a duplicate window.
    let security =
        palisade_consumers::streams::StreamFamily::Security.name(&env.connections().namespace());
    let mut stream = env.js.get_stream(&security).await.unwrap();
    let config = stream.info().await.unwrap().config.clone();
    assert_eq!(
        config.storage,
        async_nats::jetstream::stream::StorageType::File
    );
    assert_eq!(config.max_age, Duration::from_secs(30 * 24 * 3600));
    assert_eq!(config.duplicate_window, Duration::from_secs(120));
    assert_eq!(
        config.subjects,
        vec![env.subject("falco.>"), env.subject("security.>")]
    );
    let response = app
        .oneshot(Request::get("/nope").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // And over a real socket.
    let health = http_get(running.http_addr, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains("\"status\":\"ok\""), "{health}");
    let page = http_get(running.http_addr, "/status").await;
    assert!(
        page.contains("Unix.Trojan.Mirai-7100807-0")
            && page.contains("events: falco_alert</th><td>51"),
        "{page}"
    );

    running.stop().await;
    env.cleanup().await;
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out
}
