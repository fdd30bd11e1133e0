//! Search benchmark (issue 3).
//!
//! Generates N realistic events (default 10,000,000) from real fixture lines used as
//! templates — Falco alerts (tests/fixtures/falco), sshd/sudo auth-log lines
//! (tests/fixtures/logs) — plus system-log lines and XDP drops written here, with
//! randomised hosts, IPs, users, container ids and paths, and a few planted rare IOCs
//! (IPs, sha256 hashes, CVE ids). Events come in time order over 30 days, as live agents
//! send them. Every message goes through the real decoders, then into
//! PostgreSQL through the events store (the projection's own COPY path) and into the
//! tantivy index through the search projection's own document builder.
//!
//! Then it runs a fixed set of ≥50 queries in six classes (rare IOC, common word, phrase,
//! field filter + text, time-bounded text, stats) through Palisade's query engine (SRQL →
//! tantivy → rows from PostgreSQL) and, in the same run, the baseline: PostgreSQL
//! full-text search on the same rows (a generated `tsvector` column with a GIN index,
//! `websearch_to_tsquery`, `ts_rank`, top 50). Reports p50/p99 per class for both, the
//! index size and the PostgreSQL table and GIN sizes.
//!
//! Needs the dev stack (`scripts/stack.sh up`), then
//! `cargo bench --bench search` (BENCH_EVENTS=N to change the size, BENCH_REPEAT=R
//! rounds per query, default 5; BENCH_KEEP=1 keeps the database and index and reuses
//! them on the next run with the same size).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use palisade_core::model::Decoded;
use palisade_core::search::{IndexOptions, SearchIndex};
use palisade_core::store::{Batch, Position, Store};
use serde_json::json;

mod support;

use support::{auth_messages, falco_alerts, fresh_database, percentile, with_database, Rng};

const HOSTS: u64 = 500;
const USERS: [&str; 12] = [
    "root", "admin", "ubuntu", "deploy", "postgres", "www-data", "git", "test", "oracle",
    "jenkins", "ansible", "backup",
];
const SECURITY: &str = "PALISADE_SECURITY";
const LOGS: &str = "PALISADE_LOGS";
/// Events per generated message (the store keys rows by stream, seq and index).
const PER_MESSAGE: usize = 100;
/// The corpus spans this many days back from `BASE`.
const DAYS: i64 = 30;

/// Rare indicators planted in a few events each, and how many events carry each.
const RARE_IPS: [&str; 10] = [
    "203.0.113.66",
    "203.0.113.67",
    "198.51.100.23",
    "198.51.100.99",
    "192.0.2.150",
    "192.0.2.151",
    "203.0.113.201",
    "198.51.100.144",
    "192.0.2.33",
    "203.0.113.9",
];
const RARE_HASHES: [&str; 10] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
    "fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9",
    "ef2d127de37b942baad06145e54b0c619a1f22327b2ebbcfbec78f5564afe39d",
    "3fdba35f04dc8c462986c992bcf875546257113072a909c162f7e470e581e278",
    "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb",
    "3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d",
    "2e7d2c03a9507ae265ecf5b5356885a53393a2029d241394997265a1a25aefc6",
    "18ac3e7343f016890c510e93f935261169d9e3f565436429830faf0934f4f8e4",
];
const RARE_CVES: [&str; 10] = [
    "CVE-2024-3094",
    "CVE-2023-44487",
    "CVE-2021-44228",
    "CVE-2024-6387",
    "CVE-2023-4863",
    "CVE-2022-0847",
    "CVE-2021-4034",
    "CVE-2023-38545",
    "CVE-2024-21626",
    "CVE-2021-3156",
];

fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
}

/// System-log lines written for this benchmark (no public fixture has them): kernel,
/// systemd, cron and package-manager messages of the kind every Linux host logs.
const SYSLOG: [(&str, &str); 10] = [
    ("kernel", "TCP: request_sock_TCP: Possible SYN flooding on port 443. Sending cookies."),
    ("kernel", "audit: type=1400 audit(1700000000.123:456): apparmor=\"DENIED\" operation=\"open\" profile=\"/usr/sbin/nginx\" name=\"/etc/shadow\" pid={pid} comm=\"nginx\""),
    ("systemd", "Started Session {pid} of user {user}."),
    ("systemd", "nginx.service: Main process exited, code=killed, status=9/KILL"),
    ("CRON", "({user}) CMD (/usr/local/bin/backup.sh --target {ip})"),
    ("unattended-upgrade", "Packages that will be upgraded: openssl libssl3 openssh-server"),
    ("dockerd", "level=warning msg=\"container {cid} exited with code 137\""),
    ("kubelet", "Failed to pull image \"registry.internal/app:{cid}\": rpc error: code = NotFound"),
    ("sshd", "Connection closed by authenticating user {user} {ip} port {port} [preauth]"),
    ("kernel", "[UFW BLOCK] IN=eth0 OUT= SRC={ip} DST=10.0.0.5 PROTO=TCP SPT={port} DPT=22"),
];

/// One generated message: its subject, stream and payload.
struct Message {
    subject: &'static str,
    stream: &'static str,
    payload: String,
}

/// Builds the corpus chunk by chunk (10M events do not fit in memory as JSON).
struct Generator {
    rng: Rng,
    total: usize,
    made: usize,
    falco: Vec<serde_json::Value>,
    auth: Vec<String>,
    /// (event number, indicator), sorted.
    planted: Vec<(usize, String)>,
    next_plant: usize,
    /// How many events carry each planted indicator.
    counts: Vec<(String, usize)>,
}

impl Generator {
    fn new(total: usize) -> Self {
        let falco = falco_alerts();
        let auth = auth_messages();
        let mut planted = Vec::new();
        let iocs = RARE_IPS
            .iter()
            .chain(RARE_HASHES.iter())
            .chain(RARE_CVES.iter());
        for (k, ioc) in iocs.enumerate() {
            for j in 0..(3 + k % 10) {
                planted.push((
                    (k * 7919 + j * 1_047_293 + 13) % total.max(1),
                    (*ioc).to_owned(),
                ));
            }
        }
        planted.sort();
        Generator {
            rng: Rng(0x5EED_0F5E_A2C4_0001),
            total,
            made: 0,
            falco,
            auth,
            planted,
            next_plant: 0,
            counts: Vec::new(),
        }
    }

    /// Events arrive in time order, as they do from live agents: the n-th of N events
    /// happened n/N of the way through the 30 days, give or take a minute (agents'
    /// clocks and batching), so index segments, like the daily partitions, each hold
    /// a stretch of time.
    fn ts(&mut self) -> DateTime<Utc> {
        let span_ms = DAYS * 24 * 3600 * 1000;
        let at = (span_ms as f64 * self.made as f64 / self.total.max(1) as f64) as i64;
        let jitter = self.rng.below(120_000) as i64 - 60_000;
        base() - chrono::Duration::milliseconds(span_ms - at - jitter)
    }

    fn host(&mut self) -> String {
        let n = self.rng.below(HOSTS);
        match n % 3 {
            0 => format!("proxmox-node-{n:03}"),
            1 => format!("k8s-worker-{n:03}"),
            _ => format!("bastion-{n:03}"),
        }
    }

    fn ip(&mut self) -> String {
        format!(
            "{}.{}.{}.{}",
            [10, 172, 192, 45, 91, 185][self.rng.below(6) as usize],
            self.rng.below(256),
            self.rng.below(256),
            1 + self.rng.below(254)
        )
    }

    /// The next messages, about `events` events in all; empty when the corpus is done.
    fn chunk(&mut self, events: usize) -> Vec<Message> {
        let mut messages = Vec::new();
        let stop = (self.made + events).min(self.total);
        while self.made < stop {
            let size = PER_MESSAGE.min(stop - self.made);
            let mut iocs = Vec::new();
            while self.next_plant < self.planted.len()
                && self.planted[self.next_plant].0 < self.made + size
            {
                iocs.push(self.planted[self.next_plant].1.clone());
                self.next_plant += 1;
            }
            for ioc in &iocs {
                match self.counts.iter_mut().find(|(i, _)| i == ioc) {
                    Some((_, c)) => *c += 1,
                    None => self.counts.push((ioc.clone(), 1)),
                }
            }
            let mut kind = self.rng.below(100);
            if kind >= 90 && iocs.iter().any(|s| !is_ip(s)) {
                kind = 80; // drops carry only IPs: put hashes and CVE ids in a system log
            }
            if kind < 55 {
                for i in 0..size {
                    messages.push(self.falco_alert(iocs.get(i)));
                }
            } else if kind < 90 {
                messages.push(self.log_lines(size, &iocs, kind < 75));
            } else {
                messages.push(self.xdp_drops(size, &iocs));
            }
            self.made += size;
        }
        messages
    }

    /// A Falco alert as Falcosidekick publishes it, one per message.
    fn falco_alert(&mut self, ioc: Option<&String>) -> Message {
        let mut alert = self.rng.pick(&self.falco).clone();
        let t = self.ts();
        let user = *self.rng.pick(&USERS);
        let cid = format!("{:012x}", self.rng.next() & 0xffff_ffff_ffff);
        let ip = match ioc.filter(|s| is_ip(s)) {
            Some(ioc) => ioc.clone(),
            None => self.ip(),
        };
        let mut output = alert["output"]
            .as_str()
            .unwrap_or("")
            .replace("user=root", &format!("user={user}"))
            .replace("bfb9637a47a6", &cid);
        let port = 1024 + self.rng.below(60000);
        output.push_str(&format!(" connection={ip}:{port}->10.0.0.5:22"));
        if let Some(other) = ioc.filter(|s| !is_ip(s)) {
            output.push_str(&format!(" indicator={other}"));
        }
        alert["output"] = output.into();
        alert["time"] = t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true).into();
        alert["hostname"] = self.host().into();
        let fields = &mut alert["output_fields"];
        fields["evt.time"] = t.timestamp_nanos_opt().unwrap_or(0).into();
        fields["container.id"] = cid.into();
        fields["user.name"] = user.into();
        Message {
            subject: "security.falco.alerts",
            stream: SECURITY,
            payload: alert.to_string(),
        }
    }

    /// A log envelope of `size` auth-log (fixture templates) or system-log lines.
    fn log_lines(&mut self, size: usize, iocs: &[String], auth: bool) -> Message {
        let lines: Vec<_> = (0..size)
            .map(|i| {
                let user = *self.rng.pick(&USERS);
                let ip = self.ip();
                let pid = 1000 + self.rng.below(60000);
                let (program, mut message) = if auth {
                    let t = self.rng.pick(&self.auth).clone();
                    let (program, rest) = t.split_once(": ").unwrap_or(("sshd", t.as_str()));
                    let program = program.split('[').next().unwrap_or("sshd").to_owned();
                    let rest = rest
                        .replace("10.0.2.2", &ip)
                        .replace("216.160.83.57", &ip)
                        .replace("vagrant", user);
                    (program, rest)
                } else {
                    let (program, t) = *self.rng.pick(&SYSLOG);
                    let port = (1024 + self.rng.below(60000)).to_string();
                    let cid = format!("{:012x}", self.rng.next() & 0xffff_ffff_ffff);
                    let text = t
                        .replace("{user}", user)
                        .replace("{ip}", &ip)
                        .replace("{pid}", &pid.to_string())
                        .replace("{port}", &port)
                        .replace("{cid}", &cid);
                    (program.to_owned(), text)
                };
                if let Some(ioc) = iocs.get(i) {
                    message = if ioc.starts_with("CVE") {
                        format!("{message} (security update for {ioc})")
                    } else if is_ip(ioc) {
                        format!("{message} from {ioc}")
                    } else {
                        format!("{message} sha256={ioc}")
                    };
                }
                json!({"ts": self.ts().to_rfc3339(), "message": message, "program": program,
                       "pid": pid})
            })
            .collect();
        let source = if auth { "auth" } else { "syslog" };
        let env = json!({"v": 1, "ts": base().to_rfc3339(), "host": self.host(),
                         "agent_id": "bench", "source": source, "lines": lines});
        Message {
            subject: if auth { "logs.auth" } else { "logs.syslog" },
            stream: LOGS,
            payload: env.to_string(),
        }
    }

    /// An XDP drop envelope of `size` drops.
    fn xdp_drops(&mut self, size: usize, iocs: &[String]) -> Message {
        let drops: Vec<_> = (0..size)
            .map(|i| {
                let src = match iocs.get(i).filter(|s| is_ip(s)) {
                    Some(ioc) => ioc.clone(),
                    None => self.ip(),
                };
                let dst_port = [22, 443, 3389, 6443][self.rng.below(4) as usize];
                let rule = ["deny-tor-exit", "deny-scanner", "rate-limit"][self.rng.below(3) as usize];
                json!({"src_ip": src, "dst_ip": "10.0.0.5", "src_port": 1024 + self.rng.below(60000),
                       "dst_port": dst_port, "protocol": "tcp", "iface": "eth0", "reason": "blocklist",
                       "rule": rule, "packets": 1 + self.rng.below(50), "bytes": 60 + self.rng.below(5000)})
            })
            .collect();
        let env =
            json!({"v": 1, "ts": self.ts().to_rfc3339(), "host": self.host(), "drops": drops});
        Message {
            subject: "security.xdp.drops",
            stream: SECURITY,
            payload: env.to_string(),
        }
    }
}

fn is_ip(s: &str) -> bool {
    s.parse::<std::net::IpAddr>().is_ok()
}

/// One benchmark query: its class, the SRQL text, and the baseline's SQL and text.
struct BenchQuery {
    class: &'static str,
    srql: String,
    fts_sql: &'static str,
    fts_text: String,
    /// Extra baseline parameters after the text: a host, or a time window.
    fts_host: Option<String>,
    fts_window: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

const FTS_TOP50: &str = "SELECT id, ts, host, message, ts_rank(fts, q) AS rank \
    FROM events, websearch_to_tsquery('simple', $1) q WHERE fts @@ q \
    ORDER BY rank DESC LIMIT 50";
const FTS_HOST_TOP50: &str = "SELECT id, ts, host, message, ts_rank(fts, q) AS rank \
    FROM events, websearch_to_tsquery('simple', $1) q WHERE fts @@ q AND host = $2 \
    ORDER BY rank DESC LIMIT 50";
const FTS_WINDOW_TOP50: &str = "SELECT id, ts, host, message, ts_rank(fts, q) AS rank \
    FROM events, websearch_to_tsquery('simple', $1) q WHERE fts @@ q AND ts >= $2 AND ts < $3 \
    ORDER BY rank DESC LIMIT 50";
const FTS_STATS: &str = "SELECT host, count(*) AS count FROM events \
    WHERE fts @@ websearch_to_tsquery('simple', $1) GROUP BY host ORDER BY count DESC LIMIT 50";

/// Words of the field-filtered and time-bounded classes.
const FILTERED_WORDS: [&str; 10] = [
    "password",
    "shell",
    "root",
    "session",
    "container",
    "sudo",
    "denied",
    "kernel",
    "sshd",
    "user",
];

/// The fixed query set: 10 rare IOCs, 10 common words, 10 phrases, 10 field+text,
/// 10 time-bounded, 6 stats.
fn query_set() -> Vec<BenchQuery> {
    let mut set = Vec::new();
    let text = |class, srql: String, fts_text: &str| BenchQuery {
        class,
        srql,
        fts_sql: FTS_TOP50,
        fts_text: fts_text.to_owned(),
        fts_host: None,
        fts_window: None,
    };
    for ioc in RARE_IPS
        .iter()
        .take(4)
        .chain(RARE_HASHES.iter().take(3))
        .chain(RARE_CVES.iter().take(3))
    {
        set.push(text("rare IOC", format!("\"{ioc}\" | limit:50"), ioc));
    }
    for word in [
        "password",
        "container",
        "shell",
        "sshd",
        "root",
        "session",
        "denied",
        "privileged",
        "kernel",
        "sudo",
    ] {
        set.push(text("common word", format!("{word} | limit:50"), word));
    }
    for phrase in [
        "failed password",
        "accepted publickey",
        "invalid user",
        "privileged container started",
        "sensitive mount",
        "user not in sudoers",
        "possible syn flooding",
        "main process exited",
        "connection closed",
        "new group",
    ] {
        set.push(text(
            "phrase",
            format!("\"{phrase}\" | limit:50"),
            &format!("\"{phrase}\""),
        ));
    }
    for (i, word) in FILTERED_WORDS.iter().enumerate() {
        let host = match i % 3 {
            0 => format!("proxmox-node-{:03}", 3 * i),
            1 => format!("k8s-worker-{:03}", 3 * i + 1),
            _ => format!("bastion-{:03}", 3 * i + 2),
        };
        set.push(BenchQuery {
            class: "field + text",
            srql: format!("host:{host} {word} | limit:50"),
            fts_sql: FTS_HOST_TOP50,
            fts_text: (*word).to_owned(),
            fts_host: Some(host),
            fts_window: None,
        });
    }
    for (i, word) in FILTERED_WORDS.iter().enumerate() {
        let from = base() - chrono::Duration::hours(6 * (i as i64 + 1) * 11);
        let to = from + chrono::Duration::hours(6);
        set.push(BenchQuery {
            class: "time-bounded text",
            srql: format!(
                "time:[{},{}] {word} | limit:50",
                from.format("%Y-%m-%dT%H:%M:%SZ"),
                to.format("%Y-%m-%dT%H:%M:%SZ")
            ),
            fts_sql: FTS_WINDOW_TOP50,
            fts_text: (*word).to_owned(),
            fts_host: None,
            fts_window: Some((from, to)),
        });
    }
    for word in [
        "password",
        "shell",
        "denied",
        "\"failed password\"",
        "sudo",
        "CVE-2021-44228",
    ] {
        set.push(BenchQuery {
            class: "stats",
            srql: format!("{word} | stats count() by host | sort:count:desc | limit:50"),
            fts_sql: FTS_STATS,
            fts_text: word.to_owned(),
            fts_host: None,
            fts_window: None,
        });
    }
    set
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Decodes a chunk into a store batch, numbering messages per stream.
fn to_batch(messages: Vec<Message>, seqs: &mut [(&'static str, u64); 2]) -> Batch {
    let mut batch = Batch::default();
    for m in messages {
        let slot = seqs
            .iter_mut()
            .find(|(s, _)| *s == m.stream)
            .expect("known stream");
        slot.1 += 1;
        let decoded = palisade_core::decode::decode(m.subject, m.payload.as_bytes())
            .unwrap_or_else(|e| panic!("generated message does not decode: {e}: {}", m.payload));
        let position = Position {
            stream: m.stream.to_owned(),
            seq: slot.1,
            subject: m.subject.to_owned(),
        };
        batch.records.push((position, decoded));
    }
    batch
}

/// Loads the corpus into PostgreSQL (events store, COPY) and the search index.
async fn load(pool: &sqlx::PgPool, index: &Arc<SearchIndex>, total: usize) -> Vec<(String, usize)> {
    let mut generator = Generator::new(total);
    let mut seqs = [(SECURITY, 0u64), (LOGS, 0u64)];
    let (tx, rx) = std::sync::mpsc::sync_channel::<Arc<Batch>>(4);
    let indexer = {
        let index = Arc::clone(index);
        std::thread::spawn(move || {
            let mut since_commit = 0usize;
            for batch in rx {
                index.add_batch(&batch).expect("index batch");
                since_commit += batch.records.len();
                if since_commit > 200_000 {
                    index.commit().expect("index commit");
                    since_commit = 0;
                }
            }
            index.commit().expect("final index commit");
        })
    };
    let store = Arc::new(Store::new(pool.clone()));
    let mut writers = tokio::task::JoinSet::new();
    let started = Instant::now();
    let mut slot = 0;
    let mut loaded = 0usize;
    loop {
        let messages = generator.chunk(5_000);
        if messages.is_empty() {
            break;
        }
        let batch = Arc::new(to_batch(messages, &mut seqs));
        loaded += batch
            .records
            .iter()
            .map(|(_, d)| match d {
                Decoded::Events(e) => e.len(),
                _ => 0,
            })
            .sum::<usize>();
        tx.send(Arc::clone(&batch)).expect("indexer alive");
        while writers.len() >= 3 {
            writers
                .join_next()
                .await
                .expect("writer")
                .expect("writer task");
        }
        let store = Arc::clone(&store);
        slot = (slot + 1) % 3;
        let s = slot;
        writers.spawn(async move {
            store
                .write_batch("events", s, &batch)
                .await
                .expect("write batch");
        });
        if loaded % 500_000 < 5_000 {
            eprintln!(
                "  loaded {loaded} events ({:.0}/s)",
                loaded as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    while let Some(done) = writers.join_next().await {
        done.expect("writer task");
    }
    drop(tx);
    indexer.join().expect("indexer thread");
    eprintln!(
        "  loaded {loaded} events in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    generator.counts
}

struct Timings {
    class: &'static str,
    palisade: Vec<f64>,
    postgres: Vec<f64>,
}

#[tokio::main]
async fn main() {
    let total: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let repeat: usize = std::env::var("BENCH_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let keep = std::env::var("BENCH_KEEP").is_ok_and(|v| v == "1");
    let admin_url = std::env::var("DATABASE_URL")
        .expect("DATABASE_URL: run `eval \"$(scripts/stack.sh env)\"` first");
    let name = "palisade_bench_search";
    let index_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-search-index");
    let options = IndexOptions {
        heap_bytes: 512 * 1024 * 1024,
        threads: 2,
        ..Default::default()
    };

    // Reuse a kept corpus of the same size, else build it.
    let url = with_database(&admin_url, name);
    let reuse = if keep {
        match sqlx::PgPool::connect(&url).await {
            Ok(pool) => {
                let n: Option<i64> = sqlx::query_scalar("SELECT count(*) FROM events")
                    .fetch_one(&pool)
                    .await
                    .ok();
                let fts: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM pg_indexes WHERE indexname = 'events_fts')",
                )
                .fetch_one(&pool)
                .await
                .unwrap_or(false);
                n == Some(total as i64) && fts
            }
            Err(_) => false,
        }
    } else {
        false
    };
    let (pool, index, counts, setup) = if reuse {
        eprintln!("reusing the kept corpus of {total} events");
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        let index = Arc::new(SearchIndex::open(&index_dir, options).expect("open index"));
        (pool, index, Vec::new(), None)
    } else {
        eprintln!("building a corpus of {total} events");
        let (_, pool) = fresh_database(&admin_url, name).await;
        let index = Arc::new(SearchIndex::recreate(&index_dir, options).expect("create index"));
        let started = Instant::now();
        let counts = load(&pool, &index, total).await;
        let load_s = started.elapsed().as_secs_f64();
        sqlx::query("VACUUM ANALYZE events")
            .execute(&pool)
            .await
            .unwrap();
        eprintln!("baseline: adding the generated tsvector column and its GIN index");
        let started = Instant::now();
        sqlx::query(
            "ALTER TABLE events ADD COLUMN fts tsvector \
             GENERATED ALWAYS AS (to_tsvector('simple', message)) STORED",
        )
        .execute(&pool)
        .await
        .unwrap();
        let column_s = started.elapsed().as_secs_f64();
        let started = Instant::now();
        sqlx::query("SET maintenance_work_mem = '1GB'")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("CREATE INDEX events_fts ON events USING gin (fts)")
            .execute(&pool)
            .await
            .unwrap();
        let gin_s = started.elapsed().as_secs_f64();
        sqlx::query("VACUUM ANALYZE events")
            .execute(&pool)
            .await
            .unwrap();
        (pool, index, counts, Some((load_s, column_s, gin_s)))
    };
    let docs = index.doc_count();
    assert_eq!(docs, total as u64, "the index holds every event");

    let engine = palisade::query::QueryEngine::new(
        pool.clone(),
        Arc::clone(&index),
        palisade::query::QueryLimits {
            timeout: Duration::from_secs(120),
            ..Default::default()
        },
    );
    let queries = query_set();
    let mut timings: Vec<Timings> = Vec::new();
    let mut found = Vec::new();
    for (round, q) in (0..=repeat).flat_map(|r| queries.iter().map(move |q| (r, q))) {
        // Round 0 warms both sides' caches and records the answers' sizes.
        let started = Instant::now();
        let answer = engine
            .run(&q.srql, None, None)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", q.srql));
        let palisade_ms = started.elapsed().as_secs_f64() * 1000.0;
        let started = Instant::now();
        let mut sql = sqlx::query(q.fts_sql).bind(&q.fts_text);
        if let Some(host) = &q.fts_host {
            sql = sql.bind(host);
        }
        if let Some((from, to)) = q.fts_window {
            sql = sql.bind(from).bind(to);
        }
        let rows = sql
            .fetch_all(&pool)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", q.fts_sql));
        let postgres_ms = started.elapsed().as_secs_f64() * 1000.0;
        if round == 0 {
            found.push((
                q.class,
                q.srql.clone(),
                answer.total.value,
                answer.rows.len(),
                rows.len(),
            ));
            continue;
        }
        match timings.iter_mut().find(|t| t.class == q.class) {
            Some(t) => {
                t.palisade.push(palisade_ms);
                t.postgres.push(postgres_ms);
            }
            None => timings.push(Timings {
                class: q.class,
                palisade: vec![palisade_ms],
                postgres: vec![postgres_ms],
            }),
        }
    }

    let table_bytes: i64 = sqlx::query_scalar(
        "SELECT sum(pg_table_size(inhrelid))::bigint FROM pg_inherits WHERE inhparent = 'events'::regclass",
    )
    .fetch_one(&pool)
    .await
    .unwrap_or(0);
    let gin_bytes: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(pg_relation_size(i.indexrelid)), 0)::bigint FROM pg_index i \
         JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_inherits h ON h.inhrelid = i.indrelid \
         WHERE h.inhparent = 'events'::regclass AND c.relname LIKE '%fts%'",
    )
    .fetch_one(&pool)
    .await
    .unwrap_or(0);

    println!(
        "\n## Search benchmark: {total} events, {} queries × {repeat} rounds",
        queries.len()
    );
    println!(
        "- tantivy index: {} documents, {} on disk",
        docs,
        mib(dir_size(&index_dir))
    );
    println!(
        "- PostgreSQL events table: {} (with the baseline's tsvector column); GIN index: {}",
        mib(table_bytes as u64),
        mib(gin_bytes as u64)
    );
    if let Some((load_s, column_s, gin_s)) = setup {
        println!(
            "- corpus load (PostgreSQL COPY + tantivy, concurrently): {load_s:.0} s; baseline \
             tsvector column: {column_s:.0} s; GIN build: {gin_s:.0} s"
        );
    }
    if !counts.is_empty() {
        let planted: Vec<String> = counts.iter().map(|(i, c)| format!("{i}×{c}")).collect();
        println!("- planted indicators: {}", planted.join(", "));
    }
    println!("\n| class | queries | palisade p50 | palisade p99 | PostgreSQL FTS p50 | PostgreSQL FTS p99 | p50 speed-up |");
    println!("|---|---|---|---|---|---|---|");
    let mut all_p = Vec::new();
    let mut all_q = Vec::new();
    for t in &mut timings {
        t.palisade.sort_by(f64::total_cmp);
        t.postgres.sort_by(f64::total_cmp);
        all_p.extend_from_slice(&t.palisade);
        all_q.extend_from_slice(&t.postgres);
        let (p50, q50) = (percentile(&t.palisade, 50.0), percentile(&t.postgres, 50.0));
        println!(
            "| {} | {} | {p50:.2} ms | {:.2} ms | {q50:.2} ms | {:.2} ms | {:.1}× |",
            t.class,
            t.palisade.len() / repeat.max(1),
            percentile(&t.palisade, 99.0),
            percentile(&t.postgres, 99.0),
            q50 / p50
        );
    }
    all_p.sort_by(f64::total_cmp);
    all_q.sort_by(f64::total_cmp);
    let (p50, q50) = (percentile(&all_p, 50.0), percentile(&all_q, 50.0));
    println!(
        "| **all** | {} | {p50:.2} ms | {:.2} ms | {q50:.2} ms | {:.2} ms | {:.1}× |",
        queries.len(),
        percentile(&all_p, 99.0),
        percentile(&all_q, 99.0),
        q50 / p50
    );
    println!(
        "\nAnswers (first round): class | SRQL | palisade total | palisade rows | PostgreSQL rows"
    );
    for (class, srql, total, rows, pg_rows) in found {
        println!("- {class} | `{srql}` | {total} | {rows} | {pg_rows}");
    }
}
