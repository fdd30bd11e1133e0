//! Domain records: what every wire format decodes into and what the store writes.
//!
//! A record knows nothing of NATS or SQL. Identity (the row key that makes writes
//! idempotent) is given by the store from the message's stream position, not here.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Severity on Palisade's five-step scale, ordered from least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Routine information, debug output.
    Info,
    /// Worth a look (Falco `Notice`).
    Low,
    /// Suspicious (Falco `Warning`, log warnings).
    Medium,
    /// Likely malicious or broken (Falco `Error`, log errors).
    High,
    /// Act now (Falco `Critical`/`Alert`/`Emergency`, malware).
    Critical,
}

impl Severity {
    /// Every severity, least severe first.
    pub const ALL: [Severity; 5] = [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    /// Lowercase name as stored and queried (`severity:high`).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Ordinal 0 (info) ..= 4 (critical), stored beside the name for range queries.
    pub fn level(self) -> i16 {
        self as i16
    }

    /// Parses Palisade's own names (`info`, `low`, `medium`, `high`, `critical`).
    pub fn parse(name: &str) -> Option<Severity> {
        Severity::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(name))
    }

    /// Maps a Falco priority (`Emergency` … `Debug`, any case; `info` too) to a severity.
    pub fn from_falco_priority(priority: &str) -> Option<Severity> {
        match priority.to_ascii_lowercase().as_str() {
            "emergency" | "alert" | "critical" => Some(Severity::Critical),
            "error" => Some(Severity::High),
            "warning" => Some(Severity::Medium),
            "notice" => Some(Severity::Low),
            "informational" | "info" | "debug" => Some(Severity::Info),
            _ => None,
        }
    }

    /// Maps a syslog-style level name (`emerg`, `err`, `warning`, `info`, …) or one of
    /// Palisade's own names to a severity.
    pub fn from_log_level(level: &str) -> Option<Severity> {
        match level.to_ascii_lowercase().as_str() {
            "emerg" | "emergency" | "alert" | "crit" | "critical" | "fatal" => {
                Some(Severity::Critical)
            }
            "err" | "error" => Some(Severity::High),
            "warn" | "warning" => Some(Severity::Medium),
            "notice" => Some(Severity::Low),
            "info" | "informational" | "debug" | "trace" => Some(Severity::Info),
            other => Severity::parse(other),
        }
    }
}

/// What kind of security event a row in `events` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A Falco rule fired.
    FalcoAlert,
    /// The XDP firewall dropped packets.
    XdpDrop,
    /// A malware scanner matched a signature.
    MalwareFinding,
    /// A log line.
    Log,
}

impl EventKind {
    /// Name as stored in `events.type` and queried (`type:falco_alert`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::FalcoAlert => "falco_alert",
            EventKind::XdpDrop => "xdp_drop",
            EventKind::MalwareFinding => "malware_finding",
            EventKind::Log => "log",
        }
    }
}

/// One security event: a Falco alert, an XDP drop, a malware finding or a log line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// When it happened (from the event itself, not from ingest).
    pub ts: DateTime<Utc>,
    /// Host (node) it happened on, when known.
    pub host: Option<String>,
    /// What produced it: Falco's `source` (`syscall`, `k8s_audit`, …), `xdp`, the malware
    /// scanner, or the log's source (`auth`, `syslog`, …).
    pub source: String,
    /// The event's kind.
    pub kind: EventKind,
    /// Normalised severity.
    pub severity: Severity,
    /// The rule or signature that fired, when there is one.
    pub rule: Option<String>,
    /// Human-readable text: Falco's `output`, a log line's message, a summary otherwise.
    pub message: String,
    /// Everything else, as a JSON object (Falco `output_fields`, tags, ports, …).
    pub attributes: Map<String, Value>,
}

/// One metric sample from an edge agent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metric {
    /// Sample time.
    pub ts: DateTime<Utc>,
    /// Host the sample is from.
    pub host: String,
    /// Metric name, e.g. `cpu.usage_percent`.
    pub name: String,
    /// Sample value.
    pub value: f64,
    /// Labels (device, mount point, …) as a JSON object.
    pub labels: Map<String, Value>,
    /// The agent that published the sample, when the envelope names it.
    pub agent_id: Option<String>,
}

/// A process that an edge agent saw start.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessStart {
    /// When it started.
    pub ts: DateTime<Utc>,
    /// Host it runs on.
    pub host: String,
    /// Process id.
    pub pid: i64,
    /// Parent process id.
    pub ppid: Option<i64>,
    /// Executable path.
    pub exe: Option<String>,
    /// Full command line.
    pub cmdline: Option<String>,
    /// User name (or uid as text).
    pub user: Option<String>,
    /// Container id when the process runs in a container.
    pub container_id: Option<String>,
    /// Package that owns the executable, when the agent knows it.
    pub package: Option<String>,
    /// The agent that reported the start.
    pub agent_id: Option<String>,
}

/// A change in what runs on a host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum ProcessDelta {
    /// A process started.
    Started(ProcessStart),
    /// A process ended.
    Stopped {
        /// When it ended.
        ts: DateTime<Utc>,
        /// Host it ran on.
        host: String,
        /// Process id.
        pid: i64,
    },
}

/// One observed network connection (gopsutil `net.Connections()` record).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Connection {
    /// When it was observed.
    pub ts: DateTime<Utc>,
    /// Host it was observed on.
    pub host: String,
    /// Owning process id (0 when unknown).
    pub pid: i64,
    /// Owning process name when the agent resolved it.
    pub process: Option<String>,
    /// `tcp`, `udp`, `tcp6`, `udp6`, `unix`.
    pub protocol: String,
    /// Local address.
    pub local_ip: String,
    /// Local port.
    pub local_port: i32,
    /// Remote address (empty for listening sockets).
    pub remote_ip: Option<String>,
    /// Remote port (0 for listening sockets).
    pub remote_port: Option<i32>,
    /// TCP state (`ESTABLISHED`, `LISTEN`, …) or `NONE`.
    pub status: String,
    /// The agent that observed it.
    pub agent_id: Option<String>,
}

/// A package found by a scan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Package {
    /// Package name.
    pub name: String,
    /// Installed version.
    pub version: String,
    /// Ecosystem: `alpine`, `debian`, `npm`, … (Trivy's result type).
    pub ecosystem: String,
    /// Path of the manifest or lock file it was found in, for language packages.
    pub path: Option<String>,
    /// The files the package installed, as absolute paths, where the scanner lists
    /// them (Trivy's `InstalledFiles` for OS packages); empty when unknown.
    pub installed_files: Vec<String>,
}

/// A vulnerability found in an installed package.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// CVE or advisory id.
    pub vulnerability_id: String,
    /// The affected package as installed.
    pub package: Package,
    /// First version with the fix, when there is one.
    pub fixed_version: Option<String>,
    /// Severity as the scanner rated it.
    pub severity: Severity,
    /// Short title.
    pub title: Option<String>,
    /// Longer description.
    pub description: Option<String>,
    /// Reference URL.
    pub primary_url: Option<String>,
    /// Scanner target (image layer, lock file, OS) the finding belongs to.
    pub target: String,
}

/// A scan of one artifact (host, image, repository) with its packages and findings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScanReport {
    /// When the scan ran.
    pub scanned_at: DateTime<Utc>,
    /// Host the artifact belongs to: from our envelope, else the artifact name.
    pub host: String,
    /// What was scanned: image reference, path, repository.
    pub artifact_name: String,
    /// `container_image`, `filesystem`, `repository`, `host`, …
    pub artifact_type: String,
    /// OS family and name when the scanner detected one (`alpine 3.9.4`).
    pub os: Option<String>,
    /// Every package the report lists (may be empty when the scan ran without a package list).
    pub packages: Vec<Package>,
    /// Every vulnerability the report lists.
    pub findings: Vec<Finding>,
    /// The agent that ran or forwarded the scan (our envelope only).
    pub agent_id: Option<String>,
}

/// What one NATS message decodes into. Our envelopes batch many records per message.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// Security events (Falco alerts, XDP drops, malware findings, logs).
    Events(Vec<Event>),
    /// Metric samples.
    Metrics(Vec<Metric>),
    /// Process starts and stops.
    Processes(Vec<ProcessDelta>),
    /// Network connections.
    Connections(Vec<Connection>),
    /// A vulnerability scan.
    Scan(ScanReport),
}

impl Decoded {
    /// Number of records inside.
    pub fn len(&self) -> usize {
        match self {
            Decoded::Events(v) => v.len(),
            Decoded::Metrics(v) => v.len(),
            Decoded::Processes(v) => v.len(),
            Decoded::Connections(v) => v.len(),
            Decoded::Scan(r) => r.findings.len().max(1),
        }
    }

    /// True when the message carried no records.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falco_priorities_map_in_order() {
        let order = [
            "debug",
            "Informational",
            "Notice",
            "Warning",
            "Error",
            "Critical",
            "Alert",
        ];
        let levels: Vec<_> = order
            .iter()
            .map(|p| Severity::from_falco_priority(p).map(Severity::level))
            .collect();
        assert_eq!(
            levels,
            [
                Some(0),
                Some(0),
                Some(1),
                Some(2),
                Some(3),
                Some(4),
                Some(4)
            ]
        );
        assert_eq!(Severity::from_falco_priority("loud"), None);
    }

    #[test]
    fn severity_names_round_trip() {
        for s in Severity::ALL {
            assert_eq!(Severity::parse(s.as_str()), Some(s));
        }
    }
}
