//! Blast radius benchmark (issue 5): the in-memory connection graph against a
//! recursive CTE in PostgreSQL, same start nodes, same run.
//!
//! Generates a fleet of `BENCH_HOSTS` hosts (default 40,000) with one or two
//! listening services each (60,000 services: 100,000 nodes) in clusters of 50
//! hosts, and `BENCH_CONNECTIONS` distinct host → service connections (default
//! 940,000; with the 60,000 runs-on edges, 1,000,000 edges): 95% within the
//! host's cluster, 5% to any cluster, as tiers of one application talk mostly to
//! each other. Every socket goes through the connections projection's store path
//! into PostgreSQL as the agent would report it (a LISTEN row per service, an
//! ESTABLISHED row per connection), then:
//!
//! 1. the graph is loaded from PostgreSQL with `Topology::load` (timed, with the
//!    process's resident memory before and after);
//! 2. blast radius, depth `BENCH_DEPTH` (default 3), outbound, from
//!    `BENCH_QUERIES` random hosts (default 200): p50/p99;
//! 3. the baseline: the hosts reachable within the same depth by a recursive CTE
//!    over a host → host edge table derived from the same connections table
//!    (indexed on the source: the CTE's best case), p50/p99, and a check that
//!    both reach the same hosts.
//!
//! `cargo bench --bench graph` after `scripts/stack.sh up`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Instant;

use chrono::{Duration, Utc};
use palisade_core::graph::{Direction, Topology};
use palisade_core::model::{Connection, Decoded};
use palisade_core::store::{Batch, Position, Store};

mod support;

use support::{fresh_database, percentile, Rng};

const CLUSTER: usize = 50;

fn host_name(i: usize) -> String {
    format!("node-{i:05}")
}

fn host_ip(i: usize) -> String {
    format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256)
}

/// The resident set of this process, in MiB.
fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / 1048576.0
}

fn summary(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    (percentile(&samples, 50.0), percentile(&samples, 99.0))
}

#[tokio::main]
async fn main() {
    let hosts = support::env_or::<usize>("BENCH_HOSTS", 40_000);
    let wanted = support::env_or::<usize>("BENCH_CONNECTIONS", 940_000);
    let depth = u32::try_from(support::env_or::<usize>("BENCH_DEPTH", 3)).unwrap_or(3);
    let queries = support::env_or::<usize>("BENCH_QUERIES", 200);
    let admin_url = std::env::var("DATABASE_URL")
        .expect("DATABASE_URL: run `eval \"$(scripts/stack.sh env)\"` first");
    let (_, pool) = fresh_database(&admin_url, "palisade_bench_graph").await;
    let store = Store::new(pool.clone());
    let now = Utc::now();
    let ts = now - Duration::hours(1);
    let mut rng = Rng(0x5eed);

    // Services: port 443 on every host, port 5432 on every other host.
    let services: Vec<(usize, i32)> = (0..hosts)
        .map(|h| (h, 443))
        .chain((0..hosts).step_by(2).map(|h| (h, 5432)))
        .collect();
    let socket =
        |host: usize, local: (String, i32), remote: Option<(String, i32)>, status: &str| {
            Connection {
                ts,
                host: host_name(host),
                pid: 100,
                process: Some(if status == "LISTEN" { "nginx" } else { "app" }.into()),
                protocol: "tcp".into(),
                local_ip: local.0,
                local_port: local.1,
                remote_ip: remote.as_ref().map(|r| r.0.clone()),
                remote_port: remote.map(|r| r.1),
                status: status.into(),
                agent_id: None,
            }
        };
    let mut rows: Vec<Connection> = services
        .iter()
        .map(|(h, port)| socket(*h, (host_ip(*h), *port), None, "LISTEN"))
        .collect();
    let mut pairs = std::collections::HashSet::new();
    while pairs.len() < wanted {
        let from = rng.below(hosts as u64) as usize;
        let cluster = from / CLUSTER;
        let to_host = if rng.below(100) < 95 {
            (cluster * CLUSTER + rng.below(CLUSTER as u64) as usize).min(hosts - 1)
        } else {
            rng.below(hosts as u64) as usize
        };
        let port = if to_host % 2 == 0 && rng.below(2) == 0 {
            5432
        } else {
            443
        };
        if to_host == from || !pairs.insert((from, to_host, port)) {
            continue;
        }
        let ephemeral = 32768 + (pairs.len() % 28000) as i32;
        rows.push(socket(
            from,
            (host_ip(from), ephemeral),
            Some((host_ip(to_host), port)),
            "ESTABLISHED",
        ));
    }
    let started = Instant::now();
    for (seq, chunk) in rows.chunks(10_000).enumerate() {
        let batch = Batch {
            records: vec![(
                Position {
                    stream: "BENCH".into(),
                    seq: seq as u64 + 1,
                    subject: "topology.connections".into(),
                },
                Decoded::Connections(chunk.to_vec()),
            )],
            dead_letters: Vec::new(),
        };
        store.write_batch("bench", 0, &batch).await.unwrap();
    }
    sqlx::query("VACUUM ANALYZE connections")
        .execute(&pool)
        .await
        .unwrap();
    println!(
        "## Blast radius benchmark: {hosts} hosts, {} services, {} connection rows written in {:.1} s",
        services.len(),
        rows.len(),
        started.elapsed().as_secs_f64()
    );
    drop(rows);

    let rss_before = rss_mib();
    let started = Instant::now();
    let topology = Topology::load(&pool, Duration::days(7), now).await.unwrap();
    let load_s = started.elapsed().as_secs_f64();
    let size = topology.size();
    let rss_after = rss_mib();
    println!(
        "- graph: {} nodes, {} edges, loaded from PostgreSQL in {load_s:.1} s; resident memory \
         {rss_before:.0} → {rss_after:.0} MiB (+{:.0} MiB)",
        size.nodes,
        size.edges,
        rss_after - rss_before
    );

    // The baseline's edge table: host → host, from the same connections rows.
    let started = Instant::now();
    for statement in [
        "CREATE TABLE bench_host_edges AS \
         SELECT DISTINCT c.host AS src, l.host AS dst FROM connections c \
         JOIN (SELECT DISTINCT host, local_ip, local_port FROM connections WHERE status = 'LISTEN') l \
           ON l.local_ip = c.remote_ip AND l.local_port = c.remote_port \
         WHERE c.status <> 'LISTEN'",
        "CREATE INDEX ON bench_host_edges (src)",
        "VACUUM ANALYZE bench_host_edges",
    ] {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    let edges: i64 = sqlx::query_scalar("SELECT count(*) FROM bench_host_edges")
        .fetch_one(&pool)
        .await
        .unwrap();
    println!(
        "- baseline edge table: {edges} host → host edges, built in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let starts: Vec<String> = (0..queries)
        .map(|_| host_name(rng.below(hosts as u64) as usize))
        .collect();
    let (mut graph_ms, mut cte_ms, mut reached) = (Vec::new(), Vec::new(), Vec::new());
    let mut mismatches = 0;
    for (round, from) in starts.iter().enumerate() {
        let started = Instant::now();
        let radius = topology
            .blast_radius(from, depth, Direction::Outbound, now)
            .unwrap();
        graph_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        reached.push(radius.nodes.len() as f64);
        let started = Instant::now();
        let cte: Vec<(String, i32)> = sqlx::query_as(
            "WITH RECURSIVE reach(host, hops) AS ( \
                 SELECT $1::text, 0 \
                 UNION \
                 SELECT e.dst, r.hops + 1 FROM reach r JOIN bench_host_edges e ON e.src = r.host \
                 WHERE r.hops < $2) \
             SELECT host, min(hops) FROM reach WHERE host <> $1 GROUP BY host",
        )
        .bind(from)
        .bind(i32::try_from(depth).unwrap_or(3))
        .fetch_all(&pool)
        .await
        .unwrap();
        cte_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        if round < 20 {
            let ours: BTreeSet<(String, u32)> = radius
                .nodes
                .iter()
                .filter(|n| n.kind == "host")
                .map(|n| (n.node.clone(), n.hops))
                .collect();
            let theirs: BTreeSet<(String, u32)> = cte
                .into_iter()
                .map(|(h, hops)| (h, u32::try_from(hops).unwrap_or(0)))
                .collect();
            mismatches += usize::from(ours != theirs);
        }
    }
    let (g50, g99) = summary(graph_ms);
    let (c50, c99) = summary(cte_ms);
    let (r50, r99) = summary(reached);
    println!(
        "- {queries} start hosts, depth {depth}, outbound; nodes reached p50 {r50:.0}, p99 {r99:.0}; \
         the first 20 answers compared host by host with the CTE's: {mismatches} differ\n"
    );
    println!("| blast radius, depth {depth} | p50 | p99 |");
    println!("|---|---:|---:|");
    println!("| Palisade (petgraph, in memory) | {g50:.2} ms | {g99:.2} ms |");
    println!("| baseline: recursive CTE in PostgreSQL | {c50:.2} ms | {c99:.2} ms |");
    println!("| speed-up at p50 | {:.1}× | |", c50 / g50);
}
