//! Running-vs-dormant correlation benchmark (issue 5): one full pass over a fleet
//! of `BENCH_HOSTS` hosts (default 1,000) × `BENCH_PACKAGES` installed packages each
//! (default 500), `BENCH_VULNERABLE_PERCENT` of them vulnerable (default 5, each
//! with two critical or high CVEs), and 150 live processes per host, ten of them
//! belonging to one of the host's vulnerable packages (by the package the agent
//! reports, by the package's installed files, or by executable name). Every package
//! lists 20 installed files, as Trivy does for OS packages; for every other
//! vulnerable package one of them is its executable, so its processes are found
//! by file, and the others' by name.
//!
//! The fleet is written with `generate_series` straight into the tables the vulns
//! and processes projections keep; then `correlate` runs over every host three
//! times: the first pass opens every incident, the second finds nothing to change,
//! and the third follows a change on 10% of the hosts (their running vulnerable
//! processes stopped). Each pass is timed, with what it changed.
//!
//! `cargo bench --bench correlation` after `scripts/stack.sh up`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use chrono::{SubsecRound, Utc};
use palisade_core::correlation::correlate;

mod support;

use support::fresh_database;

#[tokio::main]
async fn main() {
    let hosts = support::env_or::<i64>("BENCH_HOSTS", 1_000);
    let packages = support::env_or::<i64>("BENCH_PACKAGES", 500);
    let percent = support::env_or::<i64>("BENCH_VULNERABLE_PERCENT", 5);
    let admin_url = std::env::var("DATABASE_URL")
        .expect("DATABASE_URL: run `eval \"$(scripts/stack.sh env)\"` first");
    let (_, pool) = fresh_database(&admin_url, "palisade_bench_correlation").await;
    let started = Instant::now();
    // Package k of the catalogue is vulnerable when k % (100 / percent) = 0; every
    // host installs packages 0..packages (so each has packages × percent% vulnerable).
    let every = (100 / percent.max(1)).max(1);
    for (statement, binds) in [
        (
            "INSERT INTO packages (ecosystem, name, version) \
             SELECT 'debian', 'pkg-' || k, '1.' || k FROM generate_series(0, $1 - 1) k",
            vec![packages],
        ),
        (
            "INSERT INTO package_files (package_id, path) \
             SELECT p.id, CASE WHEN f = 0 AND substr(p.name, 5)::int % $1 = 0 \
                               THEN '/usr/bin/' || p.name \
                               ELSE '/usr/share/doc/' || p.name || '/file-' || f END \
             FROM packages p, generate_series(0, 19) f",
            vec![2 * every],
        ),
        (
            "INSERT INTO vulnerabilities (id, severity, severity_level, title, updated_at) \
             SELECT 'CVE-2026-' || (10000 + k * 3 + c), \
                    CASE WHEN c = 0 THEN 'critical' ELSE 'high' END, \
                    CASE WHEN c = 0 THEN 4 ELSE 3 END, 'generated', now() \
             FROM generate_series(0, $1 - 1) k, generate_series(0, 2) c WHERE k % $2 = 0",
            vec![packages, every],
        ),
        (
            "INSERT INTO host_packages (host, artifact_name, package_id, first_seen, scanned_at) \
             SELECT 'host-' || h, 'host-' || h, p.id, now(), now() \
             FROM generate_series(0, $1 - 1) h, packages p",
            vec![hosts],
        ),
        (
            "INSERT INTO host_vulnerabilities (host, artifact_name, target, vulnerability_id, \
                 package_id, severity, severity_level, first_seen, scanned_at, scan_id) \
             SELECT 'host-' || h, 'host-' || h, 'host-' || h, v.id, p.id, v.severity, \
                    v.severity_level, now(), now(), gen_random_uuid() \
             FROM generate_series(0, $1 - 1) h \
             JOIN packages p ON true \
             JOIN vulnerabilities v ON v.id IN ( \
                 'CVE-2026-' || (10000 + substr(p.name, 5)::int * 3), \
                 'CVE-2026-' || (10000 + substr(p.name, 5)::int * 3 + 1 + (h % 2))) \
             WHERE substr(p.name, 5)::int % $2 = 0",
            vec![hosts, every],
        ),
        // 150 processes per host: 10 of a vulnerable package (half reported by the
        // agent, half found by installed file or executable name), 140 of other packages.
        (
            "INSERT INTO processes (host, pid, started_at, ppid, exe, cmdline, user_name, package) \
             SELECT 'host-' || h, 1000 + n, now() - interval '1 hour', 1, \
                    '/usr/bin/pkg-' || pk, 'pkg-' || pk || ' --serve', 'root', \
                    CASE WHEN n % 2 = 0 THEN 'pkg-' || pk END \
             FROM generate_series(0, $1 - 1) h, generate_series(0, 149) n, \
                  LATERAL (SELECT CASE WHEN n < 10 \
                      THEN ((h + n) * $2) % $3 \
                      ELSE ((h + n) * $2 + 1) % $3 END AS pk) k",
            vec![hosts, every, packages],
        ),
        ("ANALYZE", vec![]),
    ] {
        let mut query = sqlx::query(statement);
        for b in binds {
            query = query.bind(b);
        }
        query.execute(&pool).await.unwrap();
    }
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    println!(
        "## Correlation benchmark: {hosts} hosts × {packages} packages ({} host packages, \
         {} installed files), {} open critical/high findings, {} live processes; \
         generated in {:.1} s",
        count("SELECT count(*) FROM host_packages").await,
        count("SELECT count(*) FROM package_files").await,
        count("SELECT count(*) FROM host_vulnerabilities").await,
        count("SELECT count(*) FROM processes WHERE stopped_at IS NULL").await,
        started.elapsed().as_secs_f64()
    );
    println!("\n| pass | time | findings | opened | became P0 | downgraded | resolved |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for pass in [
        "first (opens every incident)",
        "second (nothing changed)",
        "third (10% of hosts' vulnerable processes stopped)",
    ] {
        if pass.starts_with("third") {
            sqlx::query(
                "UPDATE processes SET stopped_at = now() \
                 WHERE substr(host, 6)::int % 10 = 0 AND pid < 1010",
            )
            .execute(&pool)
            .await
            .unwrap();
        }
        let started = Instant::now();
        let report = correlate(&pool, None, Utc::now().trunc_subsecs(6))
            .await
            .unwrap();
        println!(
            "| {pass} | {:.0} ms | {} | {} | {} | {} | {} |",
            started.elapsed().as_secs_f64() * 1000.0,
            report.findings,
            report.opened,
            report.escalated.len(),
            report.downgraded,
            report.resolved
        );
    }
    println!(
        "\n- open incidents: {} P0 (running), {} scheduled (dormant)",
        count("SELECT count(*) FROM incidents WHERE resolved_at IS NULL AND priority = 'P0'").await,
        count(
            "SELECT count(*) FROM incidents WHERE resolved_at IS NULL AND priority = 'scheduled'"
        )
        .await
    );
    let matched: Vec<(String, i64)> = sqlx::query_as(
        "SELECT e->>'matched_by', count(*) FROM incidents, jsonb_array_elements(evidence) e \
         WHERE resolved_at IS NULL GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    println!("- evidence of running incidents, by how the process was matched: {matched:?}");
}
