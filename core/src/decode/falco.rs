//! Falco alerts: the JSON Falco writes with `json_output: true`, and the same alert
//! as Falcosidekick re-marshals it for NATS (`uuid` added, `source` defaulted to
//! `"syscalls"`, keys re-ordered, HTML-safe escapes). One alert per message.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{invalid, non_empty, parse_json, parse_time, DecodeError};
use crate::model::{Decoded, Event, EventKind, Severity};

/// Contract name in errors.
pub(super) const CONTRACT: &str = "falco alert";

/// Falco's `source` when the alert names none (older Falco) or Falcosidekick's
/// `"syscalls"` stand-in for that.
const DEFAULT_SOURCE: &str = "syscall";

/// An alert as it comes. Every field is optional here so that a missing one gets a
/// precise error; numbers inside `output_fields` stay as serde_json parsed them
/// (integers exact as `u64`/`i64`, never through `f64`).
#[derive(Debug, Deserialize)]
#[serde(expecting = "a Falco alert object")]
struct RawAlert {
    uuid: Option<String>,
    output: Option<String>,
    priority: Option<String>,
    rule: Option<String>,
    time: Option<String>,
    output_fields: Option<Map<String, Value>>,
    source: Option<String>,
    tags: Option<Vec<String>>,
    hostname: Option<String>,
}

/// Decodes one Falco alert into one [`EventKind::FalcoAlert`] event.
pub(super) fn decode(payload: &[u8]) -> Result<Decoded, DecodeError> {
    let raw: RawAlert = parse_json(CONTRACT, payload)?;
    Ok(Decoded::Events(vec![event(raw)?]))
}

/// Checks and normalises one alert.
fn event(raw: RawAlert) -> Result<Event, DecodeError> {
    let rule = raw.rule.ok_or_else(|| invalid(CONTRACT, "missing rule"))?;
    let priority = raw
        .priority
        .ok_or_else(|| invalid(CONTRACT, "missing priority"))?;
    let severity = Severity::from_falco_priority(&priority)
        .ok_or_else(|| invalid(CONTRACT, format!("unknown priority {priority:?}")))?;
    let message = raw
        .output
        .ok_or_else(|| invalid(CONTRACT, "missing output"))?;
    let output_fields = raw.output_fields.unwrap_or_default();
    let ts = match raw.time.as_deref() {
        Some(time) => parse_time(CONTRACT, "time", time)?,
        None => evt_time(&output_fields)?,
    };
    let source = match non_empty(raw.source) {
        Some(source) if source != "syscalls" => source,
        _ => DEFAULT_SOURCE.to_owned(),
    };

    let mut attributes = Map::new();
    attributes.insert("priority".into(), Value::String(priority));
    attributes.insert("output_fields".into(), Value::Object(output_fields));
    if let Some(tags) = raw.tags {
        attributes.insert("tags".into(), tags.into());
    }
    if let Some(uuid) = non_empty(raw.uuid) {
        attributes.insert("uuid".into(), Value::String(uuid));
    }

    Ok(Event {
        ts,
        host: non_empty(raw.hostname),
        source,
        kind: EventKind::FalcoAlert,
        severity,
        rule: Some(rule),
        message,
        attributes,
    })
}

/// The alert's time from `output_fields["evt.time"]` (integer nanoseconds since
/// the epoch), for alerts without `time`.
fn evt_time(output_fields: &Map<String, Value>) -> Result<DateTime<Utc>, DecodeError> {
    let Some(evt_time) = output_fields.get("evt.time") else {
        return Err(invalid(
            CONTRACT,
            "missing time (and no output_fields[\"evt.time\"])",
        ));
    };
    evt_time
        .as_i64()
        .map(DateTime::from_timestamp_nanos)
        .ok_or_else(|| {
            invalid(
                CONTRACT,
                format!(
                    "output_fields[\"evt.time\"] {evt_time} is not integer nanoseconds since 1970"
                ),
            )
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::decode::{decode as decode_subject, test_support::*};

    fn one(subject: &str, line: &str) -> Event {
        match decode_subject(subject, line.as_bytes()) {
            Ok(Decoded::Events(mut events)) if events.len() == 1 => events.remove(0),
            other => panic!("{subject}: {line}\n  gave {other:?}"),
        }
    }

    fn alerts() -> Vec<Event> {
        FALCO_ALERTS
            .lines()
            .map(|l| one("security.falco.alerts", l))
            .collect()
    }

    #[test]
    fn every_real_alert_decodes_with_the_documented_counts() {
        let events = alerts();
        assert_eq!(events.len(), 25);
        let mut by_severity = BTreeMap::new();
        let mut by_priority = BTreeMap::new();
        for e in &events {
            assert_eq!(e.kind, EventKind::FalcoAlert);
            *by_severity.entry(e.severity).or_insert(0) += 1;
            *by_priority
                .entry(e.attributes["priority"].as_str().unwrap().to_owned())
                .or_insert(0) += 1;
        }
        let want = [
            (Severity::Info, 4),
            (Severity::Low, 8),
            (Severity::Medium, 5),
            (Severity::High, 7),
            (Severity::Critical, 1),
        ];
        assert_eq!(by_severity, BTreeMap::from(want));
        assert_eq!(by_priority["Notice"], 8);
        assert_eq!(by_priority["Error"], 7);
        assert_eq!(by_priority["Warning"], 5);
        assert_eq!(by_priority["Informational"], 4);
        assert_eq!(by_priority["Critical"], 1);
        assert_eq!(events.iter().filter(|e| e.host.is_some()).count(), 8);
        let sources = |s: &str| events.iter().filter(|e| e.source == s).count();
        assert_eq!(
            (sources("syscall"), sources("k8s_audit")),
            (19, 6),
            "absent source is syscall"
        );
        let rules: std::collections::BTreeSet<_> = events.iter().map(|e| e.rule.clone()).collect();
        assert_eq!(rules.len(), 11);
    }

    #[test]
    fn values_are_kept_exactly() {
        let events = alerts();
        // Line 1: the 19-digit evt.time stays an exact integer.
        let first = &events[0];
        let fields = first.attributes["output_fields"].as_object().unwrap();
        assert!(fields["evt.time"].is_u64());
        assert_eq!(fields["evt.time"].as_u64(), Some(1_651_447_772_918_828_894));
        assert_eq!(
            first.ts.timestamp_nanos_opt(),
            Some(1_651_447_772_918_828_894)
        );
        assert_eq!(first.rule.as_deref(), Some("Launch Privileged Container"));
        assert_eq!(first.severity, Severity::Info);
        assert_eq!(first.source, "syscall");
        assert_eq!(first.host, None);
        assert_eq!(
            first.attributes["tags"],
            serde_json::json!([
                "cis",
                "container",
                "mitre_lateral_movement",
                "mitre_privilege_escalation"
            ])
        );
        assert!(!first.attributes.contains_key("uuid"));
        assert!(first
            .message
            .starts_with("19:29:32.918828894: Informational Privileged container"));

        // Line 4: null kept, bracketed key kept.
        let fields = events[3].attributes["output_fields"].as_object().unwrap();
        assert_eq!(fields["container.image.repository"], Value::Null);
        assert_eq!(fields["proc.aname[2]"], "sudo");
        assert_eq!(events[3].severity, Severity::High);

        // Line 14: k8s audit, newer Falco's alphabetical keys, hostname, string code.
        let k8s = &events[13];
        assert_eq!(k8s.source, "k8s_audit");
        assert_eq!(k8s.host.as_deref(), Some("my-pool-1-node-921b61"));
        assert_eq!(k8s.attributes["output_fields"]["ka.response.code"], "200");
        assert_eq!(k8s.ts.to_rfc3339(), "2025-02-10T09:15:40.698757+00:00");

        // Line 20: 2021-era alert without source, hostname or tags; negative loginuid.
        let old = &events[19];
        assert_eq!(old.source, "syscall");
        assert!(!old.attributes.contains_key("tags"));
        assert_eq!(
            old.attributes["output_fields"]["user.loginuid"].as_i64(),
            Some(-1)
        );
        assert_eq!(old.attributes["output_fields"]["proc.pname"], Value::Null);

        let bracketed = events.iter().filter(|e| {
            e.attributes["output_fields"]
                .as_object()
                .unwrap()
                .keys()
                .any(|k| k.contains('['))
        });
        assert!(bracketed.count() >= 2);
        assert!(events.iter().any(|e| e.attributes["output_fields"]
            .as_object()
            .unwrap()
            .contains_key("ka.uri.param[command]")));
    }

    #[test]
    fn falcosidekick_republished_alerts_equal_the_originals_but_for_uuid() {
        let subjects: Vec<_> = FALCO_DERIVED_SUBJECTS.lines().collect();
        let derived: Vec<_> = FALCO_DERIVED.lines().collect();
        assert_eq!(subjects.len(), 25);
        assert_eq!(derived.len(), 25);
        for (n, ((original, line), subject)) in
            alerts().into_iter().zip(derived).zip(subjects).enumerate()
        {
            let mut event = one(subject, line);
            let uuid = event.attributes.remove("uuid").unwrap();
            assert_eq!(uuid, format!("00000000-0000-4000-8000-{:012}", n + 1));
            assert_eq!(event, original, "line {}", n + 1);
        }
    }

    #[test]
    fn wire_example_decodes() {
        let subject = "falco.notice.terminal_shell_in_container";
        let e = one(subject, wire_example(subject));
        assert_eq!(e.kind, EventKind::FalcoAlert);
        assert_eq!(e.severity, Severity::Low);
        assert_eq!(e.rule.as_deref(), Some("Terminal shell in container"));
        assert_eq!(e.host.as_deref(), Some("node-01"));
        assert_eq!(e.source, "syscall");
        assert_eq!(e.ts.timestamp_nanos_opt(), Some(1_795_528_800_123_456_789));
        assert_eq!(e.attributes["uuid"], "6a1f1e2c-8f43-4c1e-9d0b-3c2f8e1a7b55");
        assert_eq!(e.attributes["priority"], "Notice");
        assert_eq!(
            e.attributes["tags"],
            serde_json::json!(["container", "mitre_execution", "shell"])
        );
        let fields = e.attributes["output_fields"].as_object().unwrap();
        assert_eq!(fields["evt.time"].as_u64(), Some(1_795_528_800_123_456_789));
        assert_eq!(fields["container.image.tag"], Value::Null);
        assert_eq!(fields["proc.aname[2]"], "containerd-shim");
        assert_eq!(e.attributes.len(), 4);
    }

    #[test]
    fn internal_metrics_snapshot_decodes() {
        let e = one(
            "falco.informational.falco_internal_metrics_snapshot",
            FALCO_METRICS_SNAPSHOT,
        );
        assert_eq!(e.source, "internal");
        assert_eq!(e.host.as_deref(), Some("test"));
        assert_eq!(e.rule.as_deref(), Some("Falco internal: metrics snapshot"));
        let fields = e.attributes["output_fields"].as_object().unwrap();
        assert_eq!(
            fields["falco.host_boot_ts"].as_u64(),
            Some(1_748_555_738_000_000_000)
        );
        assert_eq!(fields["falco.evts_rate_sec"].as_f64(), Some(567.4));
        assert_eq!(e.ts.timestamp_nanos_opt(), Some(1_748_557_398_341_035_770));
    }

    #[test]
    fn journal_capture_decodes_json_lines_and_rejects_text_lines() {
        let (mut alerts, mut text) = (0, 0);
        for line in FALCO_JOURNAL.lines() {
            match decode_subject("security.falco.alerts", line.as_bytes()) {
                Ok(Decoded::Events(events)) => {
                    assert_eq!(events.len(), 1);
                    alerts += 1;
                }
                Err(DecodeError::Json { contract, .. }) => {
                    assert_eq!(contract, CONTRACT);
                    assert!(!line.starts_with('{'), "{line}");
                    text += 1;
                }
                other => panic!("{line}: {other:?}"),
            }
        }
        assert_eq!((alerts, text), (215, 22));
        let err = decode_subject(
            "security.falco.alerts",
            b"Starting Falco: Container Native Runtime Security...",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid JSON for falco alert: expected value at line 1 column 1"
        );
    }

    #[test]
    fn time_falls_back_to_evt_time() {
        let e = one(
            "falco.notice.x",
            r#"{"output":"o","priority":"notice","rule":"r","output_fields":{"evt.time":1651447772918828894}}"#,
        );
        assert_eq!(e.ts.timestamp_nanos_opt(), Some(1_651_447_772_918_828_894));
        assert_eq!(e.severity, Severity::Low);
    }

    #[test]
    fn sidekick_source_stand_in_is_normalised() {
        for source in [r#""syscalls""#, r#""""#, "null"] {
            let line = format!(
                r#"{{"output":"o","priority":"Debug","rule":"r","time":"2021-01-14T23:39:44Z","source":{source}}}"#
            );
            let e = one("falco.debug.r", &line);
            assert_eq!(e.source, "syscall", "{source}");
            assert_eq!(e.attributes["output_fields"], serde_json::json!({}));
        }
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let err = |payload: &str| {
            decode_subject("security.falco.alerts", payload.as_bytes())
                .unwrap_err()
                .to_string()
        };
        let base = r#""output":"o","time":"2021-01-14T23:39:44Z""#;
        assert_eq!(
            err(&format!(r#"{{{base},"priority":"Loud","rule":"r"}}"#)),
            "invalid falco alert: unknown priority \"Loud\""
        );
        assert_eq!(
            err(&format!(r#"{{{base},"rule":"r"}}"#)),
            "invalid falco alert: missing priority"
        );
        assert_eq!(
            err(&format!(r#"{{{base},"priority":"Notice"}}"#)),
            "invalid falco alert: missing rule"
        );
        assert_eq!(
            err(r#"{"priority":"Notice","rule":"r","time":"2021-01-14T23:39:44Z"}"#),
            "invalid falco alert: missing output"
        );
        assert_eq!(
            err(r#"{"output":"o","priority":"Notice","rule":"r"}"#),
            "invalid falco alert: missing time (and no output_fields[\"evt.time\"])"
        );
        assert!(err(r#"{"output":"o","priority":"Notice","rule":"r","output_fields":{"evt.time":18446744073709551615}}"#)
            .contains("is not integer nanoseconds"));
        assert!(
            err(r#"{"output":"o","priority":"Notice","rule":"r","time":"May 1"}"#)
                .contains("time: \"May 1\" is not an RFC 3339 time")
        );
        assert_eq!(
            err(r#""alert""#),
            "invalid JSON for falco alert: invalid type: string \"alert\", expected a Falco alert object at line 1 column 7"
        );
        assert!(
            err("[]").ends_with("expected a Falco alert object at line 1 column 2"),
            "{}",
            err("[]")
        );
        assert!(err(r#"{"output":"o","priority":"Notice","rule":"r","time":"2021-01-14T23:39:44Z","tags":"x"}"#)
            .starts_with("invalid JSON for falco alert"));
    }
}
