//! Which events get a vector: the selective-vectorisation policy.
//!
//! Embedding costs about 11 ms of CPU per event (int8, measured on a 2-core box; see
//! BENCHMARKS.md), so only events worth hunting by meaning are embedded: security
//! alerts, logs at warning and above, and failed authentication even when it is
//! logged as routine. Routine telemetry is not.
//! [`decide`] applies the rules in this order; the first that matches decides:
//!
//! | kind | rule | default |
//! |---|---|---|
//! | `falco_alert` | skip Falco's own events (`source` in [`VectorPolicy::falco_skip_sources`]) | `internal` |
//! | `falco_alert` | embed at or above [`VectorPolicy::falco_min_level`] | every alert |
//! | `malware_finding` | embed when [`VectorPolicy::malware_findings`] | yes |
//! | `xdp_drop` | embed at or above [`VectorPolicy::xdp_min_level`] | high |
//! | `log` | embed failed authentication at any level ([`VectorPolicy::auth_failures`]) | yes |
//! | `log` | skip HTTP access lines with a status below 400 ([`VectorPolicy::skip_http_success`]) | yes |
//! | `log` | skip firewall lines below [`VectorPolicy::firewall_min_level`] | high |
//! | `log` | skip flow logs below [`VectorPolicy::flow_min_level`] | high |
//! | `log` | embed at or above [`VectorPolicy::log_min_level`] | medium (warning) |
//! | any other | skip | |
//!
//! Failed authentication is a log message containing one of
//! [`VectorPolicy::auth_failure_phrases`] (any case: sshd's `Failed password` and
//! `Invalid user`, PAM's `authentication failure`, sudo's `NOT in sudoers`, …), or an
//! HTTP access line with status 401 or 403 on a path containing one of
//! [`VectorPolicy::login_paths`].
//!
//! An HTTP access line is a log message in the common or combined log format
//! (`… "POST /login HTTP/1.1" 401 …`, Apache and nginx), or one with `status=NNN` and
//! a `path=`, `uri=`, `url=` or `request=` field.
//!
//! A firewall line is a log whose `source` or `program` attribute is one of
//! [`VectorPolicy::firewall_sources`], or a netfilter packet log (`IN=… OUT=… SRC=…
//! DST=…`, as iptables/nftables/ufw `LOG` rules write them, whatever the program).
//! A flow log is a log whose `source` is one of [`VectorPolicy::flow_sources`].

use serde::Deserialize;
use serde_json::{Map, Value};

/// The fields of an event that the policy and [`crate::text::embedding_text`] read.
/// The vector projection maps core's `Event` to it.
#[derive(Debug, Clone, Copy)]
pub struct EventView<'a> {
    /// `falco_alert`, `xdp_drop`, `malware_finding` or `log`.
    pub kind: &'a str,
    /// Falco's `source` (`syscall`, `k8s_audit`, `internal`, …), `xdp`, the scanner,
    /// or the log's source (`auth`, `syslog`, `nginx`, …).
    pub source: &'a str,
    /// 0 info, 1 low, 2 medium, 3 high, 4 critical.
    pub severity_level: u8,
    /// The rule or signature that fired, when there is one.
    pub rule: Option<&'a str>,
    /// Falco's `output`, a log line's message, a summary otherwise.
    pub message: &'a str,
    /// Everything else: Falco's `output_fields` (under `output_fields`, dotted keys as
    /// they came), a log's `program`/`pid`/`level`, a finding's `signature`/`file_path`.
    pub attributes: &'a Map<String, Value>,
}

impl EventView<'_> {
    /// A string attribute, when present and not empty.
    pub(crate) fn attr(&self, key: &str) -> Option<&str> {
        self.attributes
            .get(key)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|v| !v.is_empty())
    }
}

/// Whether to embed an event, and which rule said so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Embed it.
    pub embed: bool,
    /// The rule that decided, in a few words (for logs and metrics labels).
    pub reason: &'static str,
}

impl Decision {
    fn embed(reason: &'static str) -> Decision {
        Decision {
            embed: true,
            reason,
        }
    }

    fn skip(reason: &'static str) -> Decision {
        Decision {
            embed: false,
            reason,
        }
    }
}

/// The policy's settings; severity levels are 0 info, 1 low, 2 medium, 3 high,
/// 4 critical. Deserialises from a table where every field is optional.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VectorPolicy {
    /// Lowest severity of a Falco alert to embed. Default 0: every alert.
    pub falco_min_level: u8,
    /// Falco sources never embedded. Default `["internal"]`: Falco's own metrics
    /// snapshots and similar events about Falco itself.
    pub falco_skip_sources: Vec<String>,
    /// Embed malware findings. Default true.
    pub malware_findings: bool,
    /// Lowest severity of an XDP drop to embed. Default 3 (high); the decoder marks
    /// drops low, so by default none is embedded.
    pub xdp_min_level: u8,
    /// Lowest severity of a log line to embed. Default 2 (medium: warnings, errors,
    /// critical).
    pub log_min_level: u8,
    /// Embed failed authentication whatever its severity. Default true.
    pub auth_failures: bool,
    /// Phrases (any case) that mark failed authentication in a log message.
    pub auth_failure_phrases: Vec<String>,
    /// Path fragments (any case) of login endpoints: a 401 or 403 on such a path is a
    /// failed login.
    pub login_paths: Vec<String>,
    /// Skip HTTP access lines with a status below 400, whatever their severity.
    /// Default true.
    pub skip_http_success: bool,
    /// Log sources and programs (any case) that are firewalls.
    pub firewall_sources: Vec<String>,
    /// Lowest severity of a firewall line to embed. Default 3 (high): packet logs and
    /// debug output are skipped, firewall errors are not.
    pub firewall_min_level: u8,
    /// Log sources (any case) that carry flow records.
    pub flow_sources: Vec<String>,
    /// Lowest severity of a flow log line to embed. Default 3 (high).
    pub flow_min_level: u8,
}

impl Default for VectorPolicy {
    fn default() -> Self {
        let strings = |items: &[&str]| items.iter().map(|s| s.to_string()).collect();
        VectorPolicy {
            falco_min_level: 0,
            falco_skip_sources: strings(&["internal"]),
            malware_findings: true,
            xdp_min_level: 3,
            log_min_level: 2,
            auth_failures: true,
            auth_failure_phrases: strings(&[
                "failed password",
                "failed publickey",
                "invalid user",
                "authentication failure",
                "not in sudoers",
                "incorrect password attempt",
                "maximum authentication attempts exceeded",
            ]),
            login_paths: strings(&[
                "login", "logon", "signin", "sign-in", "sign_in", "auth", "session", "token",
            ]),
            skip_http_success: true,
            firewall_sources: strings(&[
                "firewall",
                "firewalld",
                "iptables",
                "ip6tables",
                "nftables",
                "ufw",
                "pf",
            ]),
            firewall_min_level: 3,
            flow_sources: strings(&[
                "flow",
                "flows",
                "flowlog",
                "flowlogs",
                "netflow",
                "ipfix",
                "sflow",
                "vpcflow",
                "vpc_flow",
                "conntrack",
            ]),
            flow_min_level: 3,
        }
    }
}

/// Decides whether `event` gets a vector; see the [module docs](self) for the rules.
pub fn decide(policy: &VectorPolicy, event: &EventView) -> Decision {
    let level = event.severity_level;
    match event.kind {
        "falco_alert" => {
            if contains_ci(&policy.falco_skip_sources, event.source) {
                Decision::skip("falco event about falco itself")
            } else if level >= policy.falco_min_level {
                Decision::embed("falco alert")
            } else {
                Decision::skip("falco alert below the falco threshold")
            }
        }
        "malware_finding" if policy.malware_findings => Decision::embed("malware finding"),
        "malware_finding" => Decision::skip("malware findings are off"),
        "xdp_drop" if level >= policy.xdp_min_level => Decision::embed("xdp drop at the threshold"),
        "xdp_drop" => Decision::skip("xdp drop below the xdp threshold"),
        "log" => decide_log(policy, event),
        _ => Decision::skip("unknown event kind"),
    }
}

/// The rules for log lines.
fn decide_log(policy: &VectorPolicy, event: &EventView) -> Decision {
    let level = event.severity_level;
    let http = http_access(event.message);
    if policy.auth_failures && is_auth_failure(policy, event.message, http.as_ref()) {
        return Decision::embed("failed authentication");
    }
    if policy.skip_http_success && http.as_ref().is_some_and(|h| h.status < 400) {
        return Decision::skip("successful http access line");
    }
    if level < policy.firewall_min_level && is_firewall(policy, event) {
        return Decision::skip("routine firewall line");
    }
    if level < policy.flow_min_level && contains_ci(&policy.flow_sources, event.source) {
        return Decision::skip("routine flow log");
    }
    if level >= policy.log_min_level {
        Decision::embed("log at or above the log threshold")
    } else {
        Decision::skip("log below the log threshold")
    }
}

/// Whether `list` holds `value`, ignoring ASCII case.
fn contains_ci(list: &[String], value: &str) -> bool {
    list.iter().any(|item| item.eq_ignore_ascii_case(value))
}

/// A failure phrase in the message, or a 401/403 on a login path.
fn is_auth_failure(policy: &VectorPolicy, message: &str, http: Option<&HttpAccess>) -> bool {
    let lower = message.to_lowercase();
    if policy
        .auth_failure_phrases
        .iter()
        .any(|phrase| !phrase.is_empty() && lower.contains(&phrase.to_lowercase()))
    {
        return true;
    }
    http.is_some_and(|h| {
        let path = h.path.to_lowercase();
        matches!(h.status, 401 | 403)
            && policy
                .login_paths
                .iter()
                .any(|p| !p.is_empty() && path.contains(&p.to_lowercase()))
    })
}

/// A firewall program or source, or a netfilter packet log line.
fn is_firewall(policy: &VectorPolicy, event: &EventView) -> bool {
    let named = |name: Option<&str>| name.is_some_and(|n| contains_ci(&policy.firewall_sources, n));
    if named(Some(event.source)) || named(event.attr("program")) {
        return true;
    }
    let has = |field: &str| {
        event
            .message
            .split_whitespace()
            .any(|word| word.starts_with(field))
    };
    has("IN=") && has("OUT=") && has("SRC=") && has("DST=")
}

/// The parts of an HTTP access line the policy reads.
#[derive(Debug, PartialEq)]
struct HttpAccess<'a> {
    path: &'a str,
    status: u16,
}

/// Reads an HTTP access line: `"METHOD PATH HTTP/x" STATUS` (common and combined log
/// format), else `status=NNN` with `path=`, `uri=`, `url=` or `request=`.
fn http_access(message: &str) -> Option<HttpAccess<'_>> {
    clf_access(message).or_else(|| key_value_access(message))
}

fn clf_access(message: &str) -> Option<HttpAccess<'_>> {
    let proto = message.find(" HTTP/")?;
    let open = message[..proto].rfind('"')?;
    let mut request = message[open + 1..proto].split_whitespace();
    let method = request.next()?;
    let path = request.next()?;
    if request.next().is_some() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let after = &message[proto + 1..];
    let close = after.find('"')?;
    let status = after[close + 1..].split_whitespace().next()?;
    Some(HttpAccess {
        path,
        status: http_status(status)?,
    })
}

fn key_value_access(message: &str) -> Option<HttpAccess<'_>> {
    let mut status = None;
    let mut path = None;
    for word in message.split_whitespace() {
        let word = word.trim_end_matches([',', ';']);
        let Some((key, value)) = word.split_once('=') else {
            continue;
        };
        let value = value.trim_matches('"');
        match key.to_ascii_lowercase().as_str() {
            "status" => status = status.or_else(|| http_status(value)),
            "path" | "uri" | "url" | "request" => path = path.or(Some(value)),
            _ => {}
        }
    }
    Some(HttpAccess {
        path: path?,
        status: status?,
    })
}

/// A three-digit HTTP status, 100 to 599.
fn http_status(text: &str) -> Option<u16> {
    let status: u16 = text.parse().ok()?;
    (text.len() == 3 && (100..600).contains(&status)).then_some(status)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    const AUTH_LOG: &str = include_str!("../../tests/fixtures/logs/beats_system_auth_test.log");

    fn attributes(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    fn view<'a>(
        kind: &'a str,
        source: &'a str,
        level: u8,
        message: &'a str,
        attributes: &'a Map<String, Value>,
    ) -> EventView<'a> {
        EventView {
            kind,
            source,
            severity_level: level,
            rule: None,
            message,
            attributes,
        }
    }

    fn log(level: u8, message: &str) -> Decision {
        let empty = Map::new();
        decide(
            &VectorPolicy::default(),
            &view("log", "syslog", level, message, &empty),
        )
    }

    #[test]
    fn every_falco_alert_is_embedded_but_falco_talking_about_itself() {
        let policy = VectorPolicy::default();
        let empty = Map::new();
        for level in 0..=4 {
            let alert = view("falco_alert", "syscall", level, "shell", &empty);
            assert_eq!(decide(&policy, &alert), Decision::embed("falco alert"));
        }
        let k8s = view("falco_alert", "k8s_audit", 2, "Disallowed K8s User", &empty);
        assert!(decide(&policy, &k8s).embed);
        let snapshot = view(
            "falco_alert",
            "internal",
            0,
            "Falco metrics snapshot",
            &empty,
        );
        assert_eq!(
            decide(&policy, &snapshot),
            Decision::skip("falco event about falco itself")
        );
        let strict = VectorPolicy {
            falco_min_level: 2,
            ..VectorPolicy::default()
        };
        let notice = view("falco_alert", "syscall", 1, "shell", &empty);
        assert!(!decide(&strict, &notice).embed);
    }

    #[test]
    fn malware_findings_are_embedded_unless_turned_off() {
        let empty = Map::new();
        let finding = view(
            "malware_finding",
            "clamav",
            4,
            "malware x in /tmp/x",
            &empty,
        );
        assert_eq!(
            decide(&VectorPolicy::default(), &finding),
            Decision::embed("malware finding")
        );
        let off = VectorPolicy {
            malware_findings: false,
            ..VectorPolicy::default()
        };
        assert!(!decide(&off, &finding).embed);
    }

    #[test]
    fn xdp_drops_below_high_are_skipped_and_the_threshold_is_configurable() {
        let empty = Map::new();
        let drop = |level| {
            view(
                "xdp_drop",
                "xdp",
                level,
                "xdp dropped 12 tcp packets",
                &empty,
            )
        };
        let policy = VectorPolicy::default();
        assert_eq!(
            decide(&policy, &drop(1)),
            Decision::skip("xdp drop below the xdp threshold")
        );
        assert!(!decide(&policy, &drop(2)).embed);
        assert!(decide(&policy, &drop(3)).embed);
        let all = VectorPolicy {
            xdp_min_level: 0,
            ..VectorPolicy::default()
        };
        assert!(decide(&all, &drop(1)).embed);
    }

    #[test]
    fn logs_at_warning_and_above_are_embedded_routine_info_is_not() {
        assert_eq!(
            log(2, "disk almost full on /var"),
            Decision::embed("log at or above the log threshold")
        );
        assert!(
            log(
                3,
                "error: kex_exchange_identification: read: Connection reset"
            )
            .embed
        );
        assert!(log(4, "kernel panic").embed);
        assert_eq!(
            log(0, "Started Session 12 of user vagrant."),
            Decision::skip("log below the log threshold")
        );
        assert!(!log(1, "Server listening on 0.0.0.0 port 22.").embed);
    }

    #[test]
    fn failed_authentication_is_embedded_even_at_info() {
        // The real auth log: Invalid user, Failed password, NOT in sudoers.
        let lines: Vec<&str> = AUTH_LOG.lines().collect();
        let failures: Vec<usize> = (0..lines.len())
            .filter(|&i| log(0, lines[i]).reason == "failed authentication")
            .collect();
        assert_eq!(failures, vec![2, 3, 7], "{lines:#?}");
        // The other lines (accepted logins, sudo commands, useradd) are routine.
        assert!(lines
            .iter()
            .enumerate()
            .filter(|(i, _)| !failures.contains(i))
            .all(|(_, line)| !log(0, line).embed));
        assert!(
            log(
                0,
                "pam_unix(sudo:auth): authentication failure; logname=deploy uid=1000"
            )
            .embed
        );
        assert!(log(0, "sudo: 3 incorrect password attempts ; TTY=pts/0").embed);
        let off = VectorPolicy {
            auth_failures: false,
            ..VectorPolicy::default()
        };
        let empty = Map::new();
        let line = view("log", "auth", 0, "Invalid user test from 10.0.2.2", &empty);
        assert!(!decide(&off, &line).embed);
    }

    #[test]
    fn web_login_failures_are_embedded_other_4xx_follow_the_level() {
        let failed = r#"203.0.113.9 - - [24/Nov/2026:13:59:41 +0000] "POST /wp-login.php HTTP/1.1" 401 512 "-" "curl/8.0""#;
        assert_eq!(log(0, failed), Decision::embed("failed authentication"));
        let forbidden = r#"198.51.100.4 - admin [24/Nov/2026:14:00:02 +0000] "POST /api/v1/auth/token HTTP/2.0" 403 97"#;
        assert!(log(0, forbidden).embed);
        let kv = "method=POST path=/users/sign_in status=401 duration=12ms";
        assert!(log(0, kv).embed);
        let not_found =
            r#"203.0.113.9 - - [24/Nov/2026:13:59:41 +0000] "GET /login.bak HTTP/1.1" 404 0"#;
        assert_eq!(
            log(0, not_found),
            Decision::skip("log below the log threshold")
        );
        let denied_elsewhere =
            r#"10.0.0.1 - - [24/Nov/2026:13:59:41 +0000] "GET /admin HTTP/1.1" 403 0"#;
        assert!(!log(0, denied_elsewhere).embed);
    }

    #[test]
    fn successful_http_access_lines_are_skipped_whatever_their_level() {
        let ok = r#"10.0.0.7 - - [24/Nov/2026:13:59:41 +0000] "GET /error/report.html HTTP/1.1" 200 5120 "-" "Mozilla/5.0""#;
        assert_eq!(log(3, ok), Decision::skip("successful http access line"));
        let redirect = r#"10.0.0.7 - - [24/Nov/2026:13:59:41 +0000] "GET / HTTP/1.1" 302 0"#;
        assert!(!log(2, redirect).embed);
        let server_error = r#"10.0.0.7 - - [24/Nov/2026:13:59:41 +0000] "GET /api HTTP/1.1" 502 0"#;
        assert!(log(3, server_error).embed);
        let kept = VectorPolicy {
            skip_http_success: false,
            ..VectorPolicy::default()
        };
        let empty = Map::new();
        assert!(decide(&kept, &view("log", "nginx", 3, ok, &empty)).embed);
    }

    #[test]
    fn firewall_debug_and_packet_logs_are_skipped_firewall_errors_are_not() {
        let policy = VectorPolicy::default();
        let kernel = attributes(json!({"program": "kernel", "level": "warning"}));
        let packet = "[UFW BLOCK] IN=eth0 OUT= MAC=52:54:00:12:34:56 SRC=203.0.113.5 DST=10.0.0.5 LEN=60 PROTO=TCP SPT=51514 DPT=23";
        assert_eq!(
            decide(&policy, &view("log", "kern", 2, packet, &kernel)),
            Decision::skip("routine firewall line")
        );
        let debug = attributes(json!({"program": "firewalld", "level": "debug"}));
        let line = "DEBUG1: Loading zone 'public'";
        assert!(!decide(&policy, &view("log", "syslog", 0, line, &debug)).embed);
        let warning = "WARNING: ALREADY_ENABLED: 'ssh' already in 'public'";
        assert!(!decide(&policy, &view("log", "firewalld", 2, warning, &Map::new())).embed);
        let error = attributes(json!({"program": "firewalld", "level": "err"}));
        let failed = "ERROR: COMMAND_FAILED: '/usr/sbin/iptables -w10 -t nat -X' failed";
        assert!(decide(&policy, &view("log", "syslog", 3, failed, &error)).embed);
    }

    #[test]
    fn routine_flow_logs_are_skipped() {
        let policy = VectorPolicy::default();
        let empty = Map::new();
        let flow = "2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 REJECT OK";
        assert_eq!(
            decide(&policy, &view("log", "vpcflow", 2, flow, &empty)),
            Decision::skip("routine flow log")
        );
        assert!(decide(&policy, &view("log", "netflow", 3, flow, &empty)).embed);
    }

    #[test]
    fn unknown_kinds_are_skipped() {
        let empty = Map::new();
        let metric = view("metric", "agent", 4, "cpu 99%", &empty);
        assert_eq!(
            decide(&VectorPolicy::default(), &metric),
            Decision::skip("unknown event kind")
        );
    }

    #[test]
    fn policy_deserialises_with_defaults_and_refuses_unknown_fields() {
        let policy: VectorPolicy =
            serde_json::from_value(json!({"log_min_level": 3, "xdp_min_level": 0})).unwrap();
        assert_eq!(policy.log_min_level, 3);
        assert_eq!(policy.xdp_min_level, 0);
        assert_eq!(
            policy.auth_failure_phrases,
            VectorPolicy::default().auth_failure_phrases
        );
        assert!(serde_json::from_value::<VectorPolicy>(json!({"log_level": 3})).is_err());
    }

    #[test]
    fn http_access_lines_parse() {
        let line =
            r#"1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326"#;
        assert_eq!(
            http_access(line),
            Some(HttpAccess {
                path: "/apache_pb.gif",
                status: 200
            })
        );
        assert_eq!(http_access("job done status=200"), None);
        assert_eq!(http_access(r#"said "hello HTTP/1.1" 9999"#), None);
        assert_eq!(http_access("Failed password for root"), None);
    }
}
