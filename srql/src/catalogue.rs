//! The field catalogue: every field SRQL knows, per entity, with its type, its SQL
//! expression and (for events) its search-index field. SQL expressions are constants
//! of this file, never user text.

use serde::Serialize;

/// What a query selects with `in:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Entity {
    /// Every security event: Falco alerts, XDP drops, malware findings, log lines.
    Events,
    /// Events that are alerts: Falco, XDP drops, malware findings.
    Alerts,
    /// Log lines.
    Logs,
    /// Metric samples.
    Metrics,
    /// Vulnerabilities open on hosts (Trivy findings not yet resolved).
    Vulns,
    /// Observed network connections.
    Connections,
    /// Processes (running and stopped).
    Processes,
    /// Incidents of the running-vs-dormant correlation (P0 and scheduled, open and
    /// resolved).
    Incidents,
}

impl Entity {
    /// Every entity.
    pub const ALL: [Entity; 8] = [
        Entity::Events,
        Entity::Alerts,
        Entity::Logs,
        Entity::Metrics,
        Entity::Vulns,
        Entity::Connections,
        Entity::Processes,
        Entity::Incidents,
    ];

    /// The name used in `in:`.
    pub fn name(self) -> &'static str {
        match self {
            Entity::Events => "events",
            Entity::Alerts => "alerts",
            Entity::Logs => "logs",
            Entity::Metrics => "metrics",
            Entity::Vulns => "vulns",
            Entity::Connections => "connections",
            Entity::Processes => "processes",
            Entity::Incidents => "incidents",
        }
    }

    /// The entity named `name` (ServiceRadar's names included: `flows` → connections).
    pub fn parse(name: &str) -> Option<Entity> {
        Some(match name.to_ascii_lowercase().as_str() {
            "events" | "event" => Entity::Events,
            "alerts" | "alert" => Entity::Alerts,
            "logs" | "log" => Entity::Logs,
            "metrics" | "metric" | "timeseries_metrics" => Entity::Metrics,
            "vulns" | "vulnerabilities" | "cves" => Entity::Vulns,
            "connections" | "flows" => Entity::Connections,
            "processes" | "process" => Entity::Processes,
            "incidents" | "incident" => Entity::Incidents,
            _ => return None,
        })
    }

    /// Whether rows are events (searchable in the index).
    pub fn is_event(self) -> bool {
        matches!(self, Entity::Events | Entity::Alerts | Entity::Logs)
    }

    /// The `FROM` clause.
    pub(crate) fn from_sql(self) -> &'static str {
        match self {
            Entity::Events | Entity::Alerts | Entity::Logs => "events e",
            Entity::Metrics => "metrics m",
            Entity::Vulns => {
                "host_vulnerabilities v \
                JOIN vulnerabilities x ON x.id = v.vulnerability_id \
                JOIN packages p ON p.id = v.package_id"
            }
            Entity::Connections => "connections c",
            Entity::Processes => "processes p",
            Entity::Incidents => "incidents i",
        }
    }

    /// A condition every row of the entity meets, beyond the user's filter.
    pub(crate) fn base_condition(self) -> Option<&'static str> {
        match self {
            Entity::Vulns => Some("v.resolved_at IS NULL"),
            _ => None,
        }
    }

    /// The time field (for `time:` and the default sort).
    pub(crate) fn time_field(self) -> &'static str {
        match self {
            Entity::Processes => "started_at",
            Entity::Vulns => "scanned_at",
            Entity::Incidents => "opened_at",
            _ => "ts",
        }
    }

    /// The columns of a row, in order: name and SQL expression.
    pub(crate) fn columns(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Entity::Events | Entity::Alerts | Entity::Logs => &[
                ("id", "e.id"),
                ("ts", "e.ts"),
                ("host", "e.host"),
                ("source", "e.source"),
                ("type", "e.type"),
                ("severity", "e.severity"),
                ("rule", "e.rule"),
                ("message", "e.message"),
                ("attributes", "e.attributes"),
            ],
            Entity::Metrics => &[
                ("ts", "m.ts"),
                ("host", "m.host"),
                ("name", "m.name"),
                ("value", "m.value"),
                ("labels", "m.labels"),
            ],
            Entity::Vulns => &[
                ("host", "v.host"),
                ("cve", "v.vulnerability_id"),
                ("severity", "v.severity"),
                ("package", "p.name"),
                ("version", "p.version"),
                ("fixed_version", "v.fixed_version"),
                ("artifact", "v.artifact_name"),
                ("title", "x.title"),
                ("first_seen", "v.first_seen"),
                ("scanned_at", "v.scanned_at"),
            ],
            Entity::Connections => &[
                ("ts", "c.ts"),
                ("host", "c.host"),
                ("process", "c.process"),
                ("pid", "c.pid"),
                ("protocol", "c.protocol"),
                ("local_ip", "c.local_ip"),
                ("local_port", "c.local_port"),
                ("remote_ip", "c.remote_ip"),
                ("remote_port", "c.remote_port"),
                ("status", "c.status"),
            ],
            Entity::Processes => &[
                ("host", "p.host"),
                ("pid", "p.pid"),
                ("ppid", "p.ppid"),
                ("exe", "p.exe"),
                ("cmdline", "p.cmdline"),
                ("user", "p.user_name"),
                ("container_id", "p.container_id"),
                ("package", "p.package"),
                ("started_at", "p.started_at"),
                ("stopped_at", "p.stopped_at"),
            ],
            Entity::Incidents => &[
                ("id", "i.id"),
                ("host", "i.host"),
                ("cve", "i.vulnerability_id"),
                ("package", "i.package"),
                ("version", "i.version"),
                ("severity", "i.severity"),
                ("state", "i.state"),
                ("priority", "i.priority"),
                ("status", INCIDENT_STATUS),
                ("opened_at", "i.opened_at"),
                ("escalated_at", "i.escalated_at"),
                ("resolved_at", "i.resolved_at"),
                ("remediation_job", "i.remediation_job"),
            ],
        }
    }

    /// The SQL expression that shows `field` (severities as names, not levels).
    pub(crate) fn display_sql(self, field: &Field) -> Option<&'static str> {
        self.columns()
            .iter()
            .find(|(name, _)| *name == field.name)
            .map(|(_, sql)| *sql)
            .or(field.sql)
    }

    /// Columns a bare word is matched against (case-insensitive substring) on entities
    /// without a search index.
    pub(crate) fn text_columns(self) -> &'static [&'static str] {
        match self {
            Entity::Metrics => &["m.name", "m.host"],
            Entity::Vulns => &["v.vulnerability_id", "p.name", "x.title", "v.host"],
            Entity::Connections => &["c.process", "c.host", "c.remote_ip", "c.local_ip"],
            Entity::Processes => &["p.cmdline", "p.exe", "p.host"],
            Entity::Incidents => &["i.vulnerability_id", "i.package", "i.host"],
            _ => &["e.message"],
        }
    }
}

/// What kind of value a field holds, which decides its operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    /// Exact text: equality, lists, wildcards.
    Keyword,
    /// Full text (BM25 on events).
    Text,
    /// Whole number: equality, comparisons, lists.
    Int,
    /// Number: comparisons.
    Float,
    /// Timestamp: comparisons, ranges, `last_24h`, `today`.
    Time,
    /// info < low < medium < high < critical.
    Severity,
    /// IP address: equality and CIDR blocks.
    Ip,
    /// A UUID.
    Uuid,
    /// A JSON object (shown, not filtered).
    Json,
}

/// One field of an entity.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Field {
    /// The name used in queries.
    pub name: &'static str,
    /// Its kind.
    pub kind: FieldKind,
    /// What it is.
    pub description: &'static str,
    /// The SQL expression; `None` when only the search index answers it.
    #[serde(skip)]
    pub(crate) sql: Option<&'static str>,
    /// The search-index field (events only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search: Option<&'static str>,
}

const fn f(
    name: &'static str,
    kind: FieldKind,
    sql: Option<&'static str>,
    search: Option<&'static str>,
    description: &'static str,
) -> Field {
    Field {
        name,
        kind,
        description,
        sql,
        search,
    }
}

use FieldKind::*;

/// Event fields (events, alerts, logs).
pub const EVENT_FIELDS: &[Field] = &[
    f("id", Uuid, Some("e.id"), Some("id"), "event id"),
    f("ts", Time, Some("e.ts"), Some("ts"), "when it happened"),
    f(
        "host",
        Keyword,
        Some("e.host"),
        Some("host"),
        "host (node) it happened on",
    ),
    f(
        "source",
        Keyword,
        Some("e.source"),
        Some("source"),
        "what produced it: syscall, k8s_audit, xdp, auth, syslog, clamav, …",
    ),
    f(
        "type",
        Keyword,
        Some("e.type"),
        Some("type"),
        "falco_alert, xdp_drop, malware_finding or log",
    ),
    f(
        "severity",
        Severity,
        Some("e.severity_level"),
        Some("severity_level"),
        "info, low, medium, high or critical",
    ),
    f(
        "rule",
        Keyword,
        Some("e.rule"),
        Some("rule"),
        "the rule or signature that fired",
    ),
    f(
        "message",
        Text,
        None,
        Some("text"),
        "the text: Falco's output, the log line (full text, with attribute values)",
    ),
    f(
        "namespace",
        Keyword,
        Some("coalesce(e.attributes->>'k8s.ns.name', e.attributes->>'namespace')"),
        Some("namespace"),
        "Kubernetes namespace",
    ),
    f("ip", Ip, None, Some("ip"), "any IP address in the event"),
    f(
        "attributes",
        Json,
        Some("e.attributes"),
        None,
        "every other field, as JSON",
    ),
    f(
        "proc.name",
        Keyword,
        Some("e.attributes->>'proc.name'"),
        Some("attributes.proc.name"),
        "process name (Falco)",
    ),
    f(
        "proc.cmdline",
        Keyword,
        Some("e.attributes->>'proc.cmdline'"),
        Some("attributes.proc.cmdline"),
        "command line (Falco)",
    ),
    f(
        "proc.exepath",
        Keyword,
        Some("e.attributes->>'proc.exepath'"),
        Some("attributes.proc.exepath"),
        "executable path (Falco)",
    ),
    f(
        "proc.pname",
        Keyword,
        Some("e.attributes->>'proc.pname'"),
        Some("attributes.proc.pname"),
        "parent process name (Falco)",
    ),
    f(
        "user.name",
        Keyword,
        Some("e.attributes->>'user.name'"),
        Some("attributes.user.name"),
        "user (Falco)",
    ),
    f(
        "container.id",
        Keyword,
        Some("e.attributes->>'container.id'"),
        Some("attributes.container.id"),
        "container id (Falco)",
    ),
    f(
        "container.name",
        Keyword,
        Some("e.attributes->>'container.name'"),
        Some("attributes.container.name"),
        "container name (Falco)",
    ),
    f(
        "container.image.repository",
        Keyword,
        Some("e.attributes->>'container.image.repository'"),
        Some("attributes.container.image.repository"),
        "image repository (Falco)",
    ),
    f(
        "k8s.ns.name",
        Keyword,
        Some("e.attributes->>'k8s.ns.name'"),
        Some("attributes.k8s.ns.name"),
        "Kubernetes namespace (Falco)",
    ),
    f(
        "k8s.pod.name",
        Keyword,
        Some("e.attributes->>'k8s.pod.name'"),
        Some("attributes.k8s.pod.name"),
        "Kubernetes pod (Falco)",
    ),
    f(
        "fd.name",
        Keyword,
        Some("e.attributes->>'fd.name'"),
        Some("attributes.fd.name"),
        "file or connection (Falco)",
    ),
    f(
        "evt.type",
        Keyword,
        Some("e.attributes->>'evt.type'"),
        Some("attributes.evt.type"),
        "system call (Falco)",
    ),
    f(
        "src_ip",
        Keyword,
        Some("e.attributes->>'src_ip'"),
        Some("attributes.src_ip"),
        "source address (XDP drop)",
    ),
    f(
        "dst_ip",
        Keyword,
        Some("e.attributes->>'dst_ip'"),
        Some("attributes.dst_ip"),
        "destination address (XDP drop)",
    ),
    f(
        "src_port",
        Int,
        Some("(e.attributes->>'src_port')::bigint"),
        Some("attributes.src_port"),
        "source port (XDP drop)",
    ),
    f(
        "dst_port",
        Int,
        Some("(e.attributes->>'dst_port')::bigint"),
        Some("attributes.dst_port"),
        "destination port (XDP drop)",
    ),
    f(
        "signature",
        Keyword,
        Some("e.attributes->>'signature'"),
        Some("attributes.signature"),
        "malware signature",
    ),
    f(
        "file_path",
        Keyword,
        Some("e.attributes->>'file_path'"),
        Some("attributes.file_path"),
        "infected file (malware finding)",
    ),
    f(
        "sha256",
        Keyword,
        Some("e.attributes->>'sha256'"),
        Some("attributes.sha256"),
        "file hash (malware finding)",
    ),
    f(
        "pod",
        Keyword,
        Some("e.attributes->>'pod'"),
        Some("attributes.pod"),
        "pod (malware finding)",
    ),
    f(
        "image",
        Keyword,
        Some("e.attributes->>'image'"),
        Some("attributes.image"),
        "image (malware finding)",
    ),
];

/// Metric fields.
pub const METRIC_FIELDS: &[Field] = &[
    f("ts", Time, Some("m.ts"), None, "sample time"),
    f("host", Keyword, Some("m.host"), None, "host"),
    f(
        "name",
        Keyword,
        Some("m.name"),
        None,
        "metric name, e.g. cpu.usage_percent",
    ),
    f("value", Float, Some("m.value"), None, "sample value"),
    f("labels", Json, Some("m.labels"), None, "labels, as JSON"),
];

/// Vulnerability fields.
pub const VULN_FIELDS: &[Field] = &[
    f("host", Keyword, Some("v.host"), None, "host"),
    f(
        "cve",
        Keyword,
        Some("v.vulnerability_id"),
        None,
        "vulnerability id (CVE, GHSA, …)",
    ),
    f(
        "severity",
        Severity,
        Some("v.severity_level"),
        None,
        "info, low, medium, high or critical",
    ),
    f("package", Keyword, Some("p.name"), None, "package name"),
    f(
        "version",
        Keyword,
        Some("p.version"),
        None,
        "installed version",
    ),
    f(
        "ecosystem",
        Keyword,
        Some("p.ecosystem"),
        None,
        "package ecosystem (debian, alpine, npm, …)",
    ),
    f(
        "fixed_version",
        Keyword,
        Some("v.fixed_version"),
        None,
        "first fixed version",
    ),
    f(
        "artifact",
        Keyword,
        Some("v.artifact_name"),
        None,
        "scanned artifact (image or host)",
    ),
    f(
        "title",
        Text,
        Some("x.title"),
        None,
        "the vulnerability's title",
    ),
    f(
        "first_seen",
        Time,
        Some("v.first_seen"),
        None,
        "first scan that found it",
    ),
    f(
        "scanned_at",
        Time,
        Some("v.scanned_at"),
        None,
        "latest scan that found it",
    ),
];

/// Connection fields.
pub const CONNECTION_FIELDS: &[Field] = &[
    f("ts", Time, Some("c.ts"), None, "when it was observed"),
    f("host", Keyword, Some("c.host"), None, "host"),
    f("process", Keyword, Some("c.process"), None, "process name"),
    f("pid", Int, Some("c.pid"), None, "process id"),
    f("protocol", Keyword, Some("c.protocol"), None, "tcp or udp"),
    f("local_ip", Ip, Some("c.local_ip"), None, "local address"),
    f("local_port", Int, Some("c.local_port"), None, "local port"),
    f("remote_ip", Ip, Some("c.remote_ip"), None, "remote address"),
    f(
        "remote_port",
        Int,
        Some("c.remote_port"),
        None,
        "remote port",
    ),
    f(
        "ip",
        Ip,
        Some("c.remote_ip"),
        None,
        "remote address (alias of remote_ip)",
    ),
    f(
        "status",
        Keyword,
        Some("c.status"),
        None,
        "LISTEN, ESTABLISHED, …",
    ),
];

/// Process fields.
pub const PROCESS_FIELDS: &[Field] = &[
    f("host", Keyword, Some("p.host"), None, "host"),
    f("pid", Int, Some("p.pid"), None, "process id"),
    f("ppid", Int, Some("p.ppid"), None, "parent process id"),
    f("exe", Keyword, Some("p.exe"), None, "executable path"),
    f("cmdline", Keyword, Some("p.cmdline"), None, "command line"),
    f("user", Keyword, Some("p.user_name"), None, "user"),
    f(
        "container_id",
        Keyword,
        Some("p.container_id"),
        None,
        "container id",
    ),
    f(
        "package",
        Keyword,
        Some("p.package"),
        None,
        "package the executable belongs to",
    ),
    f("started_at", Time, Some("p.started_at"), None, "start time"),
    f(
        "stopped_at",
        Time,
        Some("p.stopped_at"),
        None,
        "stop time (empty while running)",
    ),
];

/// `open` or `resolved`.
const INCIDENT_STATUS: &str = "(CASE WHEN i.resolved_at IS NULL THEN 'open' ELSE 'resolved' END)";

/// Incident fields.
pub const INCIDENT_FIELDS: &[Field] = &[
    f("id", Uuid, Some("i.id"), None, "incident id"),
    f("host", Keyword, Some("i.host"), None, "host"),
    f(
        "cve",
        Keyword,
        Some("i.vulnerability_id"),
        None,
        "vulnerability id (CVE, GHSA, …)",
    ),
    f("package", Keyword, Some("i.package"), None, "package name"),
    f(
        "version",
        Keyword,
        Some("i.version"),
        None,
        "installed version",
    ),
    f(
        "ecosystem",
        Keyword,
        Some("i.ecosystem"),
        None,
        "package ecosystem (debian, alpine, npm, …)",
    ),
    f(
        "severity",
        Severity,
        Some("i.severity_level"),
        None,
        "high or critical",
    ),
    f(
        "state",
        Keyword,
        Some("i.state"),
        None,
        "running (a live process belongs to the package) or dormant",
    ),
    f(
        "priority",
        Keyword,
        Some("i.priority"),
        None,
        "P0 (running) or scheduled (dormant)",
    ),
    f(
        "status",
        Keyword,
        Some(INCIDENT_STATUS),
        None,
        "open or resolved",
    ),
    f(
        "opened_at",
        Time,
        Some("i.opened_at"),
        None,
        "when it was opened",
    ),
    f(
        "escalated_at",
        Time,
        Some("i.escalated_at"),
        None,
        "when it last became P0",
    ),
    f(
        "resolved_at",
        Time,
        Some("i.resolved_at"),
        None,
        "when its finding was resolved (empty while open)",
    ),
    f(
        "remediation_job",
        Int,
        Some("i.remediation_job"),
        None,
        "the AWX job launched for it",
    ),
];

/// The fields of `entity`.
pub fn fields(entity: Entity) -> &'static [Field] {
    match entity {
        Entity::Events | Entity::Alerts | Entity::Logs => EVENT_FIELDS,
        Entity::Metrics => METRIC_FIELDS,
        Entity::Vulns => VULN_FIELDS,
        Entity::Connections => CONNECTION_FIELDS,
        Entity::Processes => PROCESS_FIELDS,
        Entity::Incidents => INCIDENT_FIELDS,
    }
}

/// Looks up `name` in `entity` (`time` is every entity's time field).
pub fn field(entity: Entity, name: &str) -> Option<&'static Field> {
    let name = if name == "time" || name == "timestamp" {
        entity.time_field()
    } else {
        name
    };
    fields(entity).iter().find(|f| f.name == name)
}

/// The known names closest to `name`, best first (for "did you mean").
pub fn nearest(entity: Entity, name: &str) -> Vec<&'static str> {
    let mut scored: Vec<(usize, &'static str)> = fields(entity)
        .iter()
        .map(|f| (edit_distance(name, f.name), f.name))
        .filter(|(d, n)| *d <= 2.max(n.len() / 3))
        .collect();
    scored.sort();
    scored.into_iter().take(3).map(|(_, n)| n).collect()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The whole catalogue, as served for autocomplete.
#[derive(Debug, Serialize)]
pub struct Catalogue {
    /// Entities with their fields.
    pub entities: Vec<EntityFields>,
    /// Severity names, least severe first.
    pub severities: [&'static str; 5],
    /// Pipe stages.
    pub stages: [&'static str; 4],
}

/// One entity's fields.
#[derive(Debug, Serialize)]
pub struct EntityFields {
    /// `in:` name.
    pub entity: Entity,
    /// Its fields.
    pub fields: &'static [Field],
}

/// The catalogue.
pub fn catalogue() -> Catalogue {
    Catalogue {
        entities: Entity::ALL
            .iter()
            .map(|&entity| EntityFields {
                entity,
                fields: fields(entity),
            })
            .collect(),
        severities: ["info", "low", "medium", "high", "critical"],
        stages: ["sort:", "limit:", "stats", "SIMILAR_TO("],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_misses_are_suggested() {
        assert_eq!(nearest(Entity::Events, "hots")[0], "host");
        assert!(nearest(Entity::Events, "proc.nme").contains(&"proc.name"));
        assert!(nearest(Entity::Events, "zzzzzzzz").is_empty());
    }

    #[test]
    fn every_event_field_is_searchable_or_sql() {
        for f in EVENT_FIELDS {
            assert!(f.sql.is_some() || f.search.is_some(), "{}", f.name);
            assert!(
                f.kind == FieldKind::Json || f.search.is_some(),
                "{} has no search field",
                f.name
            );
        }
    }
}
