//! The log envelope (`logs.<source>`): log lines shipped by an edge agent, one event
//! per line.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::envelope::{put, records, required, Header};
use super::{non_empty, parse_json, DecodeError};
use crate::model::{Decoded, Event, EventKind, Severity};

/// Contract name in errors.
pub(super) const CONTRACT: &str = "logs envelope";

/// The envelope as it comes; every field optional so a missing one gets a precise error.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a logs envelope object")]
struct RawEnvelope {
    v: Option<Value>,
    ts: Option<String>,
    host: Option<String>,
    agent_id: Option<String>,
    source: Option<String>,
    lines: Option<Vec<RawLine>>,
}

/// One `lines[]` record as it comes.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a log line object")]
struct RawLine {
    ts: Option<String>,
    message: Option<String>,
    level: Option<String>,
    program: Option<String>,
    pid: Option<i64>,
}

/// Decodes a log envelope into one [`EventKind::Log`] event per line. The source is
/// the envelope's `source`, else `subject_source` (the subject token after `logs.`).
pub(super) fn decode(payload: &[u8], subject_source: &str) -> Result<Decoded, DecodeError> {
    let raw: RawEnvelope = parse_json(CONTRACT, payload)?;
    let header = Header::check(CONTRACT, raw.v, raw.ts, raw.host, raw.agent_id)?;
    let source = non_empty(raw.source).unwrap_or_else(|| subject_source.to_owned());
    let events = records(CONTRACT, "lines", raw.lines)?
        .into_iter()
        .enumerate()
        .map(|(i, line)| event(&header, &source, &format!("lines[{i}]"), line))
        .collect::<Result<_, _>>()?;
    Ok(Decoded::Events(events))
}

/// Checks one record and builds its event.
fn event(header: &Header, source: &str, at: &str, raw: RawLine) -> Result<Event, DecodeError> {
    let ts = header.record_ts(CONTRACT, at, raw.ts.as_deref())?;
    let message = required(CONTRACT, at, "message", raw.message)?;
    let level = non_empty(raw.level);
    let severity = level
        .as_deref()
        .and_then(Severity::from_log_level)
        .unwrap_or_else(|| classify_message(&message));

    let mut attributes = Map::new();
    put(&mut attributes, "program", non_empty(raw.program));
    put(&mut attributes, "pid", raw.pid);
    put(&mut attributes, "level", level);
    header.put_agent_id(&mut attributes);

    Ok(Event {
        ts,
        host: Some(header.host.clone()),
        source: source.to_owned(),
        kind: EventKind::Log,
        severity,
        rule: None,
        message,
        attributes,
    })
}

/// Phrases of failed authentication or refused privilege (matched case-insensitively
/// anywhere in the message).
const AUTH_FAILURES: [&str; 4] = [
    "failed password",
    "invalid user",
    "authentication failure",
    "not in sudoers",
];

/// Words that mark a failure (matched case-insensitively as whole words).
const FAILURE_WORDS: [&str; 3] = ["error", "fatal", "panic"];

/// Severity of a log line that carries no usable `level`:
///
/// 1. [`Severity::Medium`] when it contains an auth failure phrase: `Failed password`,
///    `Invalid user`, `authentication failure`, `NOT in sudoers` (any case);
/// 2. else [`Severity::High`] when it contains the word `error`, `fatal` or `panic`
///    (any case, as a whole word: `error:` counts, `errors` and `terror` do not);
/// 3. else [`Severity::Info`].
pub(super) fn classify_message(message: &str) -> Severity {
    let lower = message.to_ascii_lowercase();
    if AUTH_FAILURES.iter().any(|phrase| lower.contains(phrase)) {
        return Severity::Medium;
    }
    let is_failure_word = |word: &str| FAILURE_WORDS.contains(&word);
    if lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(is_failure_word)
    {
        return Severity::High;
    }
    Severity::Info
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::decode::test_support::*;

    fn decode_str(subject: &str, payload: &str) -> Result<Vec<Event>, String> {
        decode_events(subject, payload)
    }

    #[test]
    fn wire_example_decodes() {
        let events = decode_str("logs.auth", wire_example("logs.auth")).unwrap();
        assert_eq!(events.len(), 3);
        let failed = &events[0];
        assert_eq!(failed.kind, EventKind::Log);
        assert_eq!(failed.source, "auth");
        assert_eq!(failed.host.as_deref(), Some("node-01"));
        assert_eq!(
            failed.severity,
            Severity::Medium,
            "classified: Failed password"
        );
        assert_eq!(failed.rule, None);
        assert_eq!(
            failed.message,
            "Failed password for root from 216.160.83.57 port 29160 ssh2"
        );
        assert_eq!(failed.ts.to_rfc3339(), "2026-11-24T13:59:41+00:00");
        assert_eq!(
            Value::Object(failed.attributes.clone()),
            serde_json::json!({"program": "sshd", "pid": 5774, "agent_id": "agent-1"})
        );
        assert_eq!(events[1].severity, Severity::High, "level err");
        assert_eq!(events[1].attributes["level"], "err");
        assert_eq!(events[2].severity, Severity::Info);
        assert_eq!(events[2].ts.to_rfc3339(), "2026-11-24T14:00:00+00:00");
    }

    #[test]
    fn source_comes_from_the_envelope_else_the_subject() {
        let payload = r#"{"ts":"2026-11-24T14:00:00Z","host":"n","lines":[{"message":"m"}]}"#;
        assert_eq!(
            decode_str("logs.syslog.node-01", payload).unwrap()[0].source,
            "syslog"
        );
        let payload =
            r#"{"ts":"2026-11-24T14:00:00Z","host":"n","source":"kern","lines":[{"message":"m"}]}"#;
        assert_eq!(
            decode_str("logs.syslog", payload).unwrap()[0].source,
            "kern"
        );
    }

    #[test]
    fn unknown_levels_fall_back_to_the_classifier() {
        let payload = r#"{"ts":"2026-11-24T14:00:00Z","host":"n","lines":[{"message":"fatal: no disk","level":"loud"},{"message":"Invalid user x","level":"info"}]}"#;
        let events = decode_str("logs.app", payload).unwrap();
        assert_eq!(events[0].severity, Severity::High);
        assert_eq!(events[0].attributes["level"], "loud");
        assert_eq!(
            events[1].severity,
            Severity::Info,
            "a known level wins over the classifier"
        );
    }

    #[test]
    fn classifier_rules() {
        let cases = [
            (
                "Failed password for root from 1.2.3.4 port 22 ssh2",
                Severity::Medium,
            ),
            ("Invalid user test from 10.0.2.2", Severity::Medium),
            (
                "pam_unix(sshd:auth): authentication failure; logname= uid=0",
                Severity::Medium,
            ),
            ("tsg : user NOT in sudoers ; TTY=pts/1", Severity::Medium),
            (
                "error: kex_exchange_identification: Connection closed",
                Severity::High,
            ),
            ("FATAL: database is gone", Severity::High),
            ("kernel panic - not syncing", Severity::High),
            ("Error during login", Severity::High),
            ("no errors found", Severity::Info),
            ("terror alert", Severity::Info),
            ("Accepted publickey for vagrant", Severity::Info),
            ("", Severity::Info),
        ];
        for (message, want) in cases {
            assert_eq!(classify_message(message), want, "{message}");
        }
    }

    #[test]
    fn real_auth_log_lines_classify() {
        // The auth.log fixture, one line per record, as an agent that does not parse
        // syslog headers would ship it.
        let lines: Vec<_> = AUTH_LOG
            .lines()
            .map(|l| serde_json::json!({ "message": l }))
            .collect();
        let payload =
            serde_json::json!({"ts": "2026-11-24T14:00:00Z", "host": "n", "lines": lines});
        let events = decode_str("logs.auth", &payload.to_string()).unwrap();
        let severities: Vec<_> = events.iter().map(|e| e.severity).collect();
        use Severity::{Info, Medium};
        assert_eq!(
            severities,
            [Info, Info, Medium, Medium, Info, Info, Info, Medium, Info, Info]
        );
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let cases = [
            (
                r#"{"ts":"2026-11-24T14:00:00Z","host":"n","lines":[{"message":"a"},{"level":"err"}]}"#,
                "invalid logs envelope: lines[1]: missing message",
            ),
            (
                r#"{"ts":"2026-11-24T14:00:00Z","host":"n"}"#,
                "invalid logs envelope: missing lines (send [] when there is nothing)",
            ),
            (
                r#"{"v":2,"ts":"2026-11-24T14:00:00Z","host":"n","lines":[]}"#,
                "invalid logs envelope: unsupported envelope version 2 (this decoder reads 1)",
            ),
            (
                r#"{"ts":"2026-11-24T14:00:00Z","lines":[]}"#,
                "invalid logs envelope: missing host",
            ),
            (
                r#"{"host":"n","lines":[]}"#,
                "invalid logs envelope: missing ts",
            ),
        ];
        for (payload, want) in cases {
            assert_eq!(
                decode_str("logs.auth", payload).unwrap_err(),
                want,
                "{payload}"
            );
        }
        let err = decode_str(
            "logs.auth",
            "{\"ts\":\"2026-11-24T14:00:00Z\",\"host\":\"n\",\"lines\":[{\"message\":\"a\"}]",
        )
        .unwrap_err();
        assert!(
            err.starts_with("invalid JSON for logs envelope: EOF while parsing"),
            "{err}"
        );
        assert!(decode_str(
            "logs.auth",
            r#"{"ts":"2026-11-24T14:00:00Z","host":"n","lines":[]}"#
        )
        .unwrap()
        .is_empty());
    }
}
