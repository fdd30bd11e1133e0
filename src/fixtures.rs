//! `palisade load-fixtures`: publishes the bundled public sample data (real Falco
//! alerts, Trivy reports and an auth log; see tests/fixtures/README.md) the way
//! their producers would, so a fresh install has something real to look at.
//!
//! Falco alerts go out twice over, as Falco's own JSON on `security.falco.alerts`
//! and as Falcosidekick's re-marshalled JSON on `falco.<priority>.<rule>`; Trivy
//! reports as bare SchemaVersion 2 JSON on `scan.trivy.results`; auth log lines in
//! the log envelope on `logs.auth`, tagged `agent_id: palisade-fixtures`. Every
//! message carries a `Nats-Msg-Id`, so loading twice within the streams'
//! duplicate window stores each message once.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use async_nats::{jetstream, HeaderMap};
use chrono::{Datelike, NaiveDateTime, Utc};
use palisade_consumers::Namespace;
use serde::Serialize;
use serde_json::json;

/// Agent id on the log envelopes the loader builds.
pub const FIXTURE_AGENT: &str = "palisade-fixtures";

/// Messages published, by kind.
#[derive(Debug, Default, Serialize)]
pub struct LoadReport {
    /// Falco alerts on `security.falco.alerts`.
    pub falco_security_subject: usize,
    /// Falco alerts on `falco.<priority>.<rule>`.
    pub falco_sidekick_subjects: usize,
    /// Trivy reports.
    pub trivy_reports: usize,
    /// Log envelopes (one per host) and the lines inside them.
    pub log_envelopes: usize,
    /// Log lines.
    pub log_lines: usize,
}

/// Publishes everything under `dir` and waits until JetStream has stored it.
pub async fn load(
    js: &jetstream::Context,
    namespace: &Namespace,
    dir: &Path,
) -> anyhow::Result<LoadReport> {
    let mut report = LoadReport::default();
    let read = |rel: &str| {
        let path = dir.join(rel);
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };

    for (n, line) in read("falco/alerts.jsonl")?.lines().enumerate() {
        publish(
            js,
            namespace,
            "security.falco.alerts",
            &format!("fixture/falco/{n}"),
            line,
        )
        .await?;
        report.falco_security_subject += 1;
    }
    let derived = read("falco/alerts_nats_derived.jsonl")?;
    let subjects = read("falco/alerts_nats_derived.subjects.txt")?;
    for (n, (line, subject)) in derived.lines().zip(subjects.lines()).enumerate() {
        publish(
            js,
            namespace,
            subject.trim(),
            &format!("fixture/sidekick/{n}"),
            line,
        )
        .await?;
        report.falco_sidekick_subjects += 1;
    }

    let mut trivy: Vec<_> = std::fs::read_dir(dir.join("trivy"))
        .with_context(|| format!("reading {}", dir.join("trivy").display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    trivy.sort();
    for path in trivy {
        let body = std::fs::read_to_string(&path)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        publish(
            js,
            namespace,
            "scan.trivy.results",
            &format!("fixture/trivy/{name}"),
            &body,
        )
        .await?;
        report.trivy_reports += 1;
    }

    let year = Utc::now().year();
    let mut by_host: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for line in read("logs/beats_system_auth_test.log")?.lines() {
        if let Some(entry) = parse_syslog(line, year) {
            by_host.entry(entry.host.clone()).or_default().push(json!({
                "ts": entry.ts.and_utc().to_rfc3339(),
                "program": entry.program,
                "pid": entry.pid,
                "message": entry.message,
            }));
        }
    }
    for (host, lines) in by_host {
        let Some(first_ts) = lines
            .first()
            .and_then(|l| l["ts"].as_str())
            .map(str::to_owned)
        else {
            continue;
        };
        report.log_lines += lines.len();
        let envelope = json!({
            "v": 1, "ts": first_ts, "host": host, "agent_id": FIXTURE_AGENT, "source": "auth",
            "lines": lines,
        });
        publish(
            js,
            namespace,
            "logs.auth",
            &format!("fixture/auth/{host}"),
            &envelope.to_string(),
        )
        .await?;
        report.log_envelopes += 1;
    }
    Ok(report)
}

/// Publishes `messages` (subject, payload) through JetStream with up to `window`
/// publishes awaiting their acks at once, and returns when every one is stored.
pub async fn publish_windowed(
    js: &jetstream::Context,
    messages: impl IntoIterator<Item = (String, bytes::Bytes)>,
    window: usize,
) -> anyhow::Result<usize> {
    let mut acks = Vec::with_capacity(window.max(1));
    let mut published = 0;
    for (subject, payload) in messages {
        acks.push(js.publish(subject, payload).await.context("publishing")?);
        published += 1;
        if acks.len() >= window.max(1) {
            for ack in acks.drain(..) {
                ack.await.context("jetstream did not store a message")?;
            }
        }
    }
    for ack in acks {
        ack.await.context("jetstream did not store a message")?;
    }
    Ok(published)
}

async fn publish(
    js: &jetstream::Context,
    namespace: &Namespace,
    subject: &str,
    msg_id: &str,
    body: &str,
) -> anyhow::Result<()> {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", msg_id);
    js.publish_with_headers(namespace.subject(subject), headers, body.to_owned().into())
        .await
        .with_context(|| format!("publishing to {subject}"))?
        .await
        .with_context(|| format!("jetstream did not store the message on {subject}"))?;
    Ok(())
}

/// One RFC 3164 syslog line.
#[derive(Debug, PartialEq)]
pub struct SyslogLine {
    /// Timestamp (the line has no year; the caller supplies it).
    pub ts: NaiveDateTime,
    /// Host name.
    pub host: String,
    /// Program name.
    pub program: String,
    /// Process id when present.
    pub pid: Option<i64>,
    /// The message after `program[pid]: `.
    pub message: String,
}

/// Parses `Mon DD HH:MM:SS host program[pid]: message`.
pub fn parse_syslog(line: &str, year: i32) -> Option<SyslogLine> {
    let stamp = line.get(..15)?;
    let ts = NaiveDateTime::parse_from_str(&format!("{year} {stamp}"), "%Y %b %e %H:%M:%S").ok()?;
    let rest = line.get(16..)?;
    let (host, rest) = rest.split_once(' ')?;
    let (tag, message) = rest.split_once(": ")?;
    let (program, pid) = match tag.split_once('[') {
        Some((p, pid)) => (p, pid.trim_end_matches(']').parse().ok()),
        None => (tag, None),
    };
    Some(SyslogLine {
        ts,
        host: host.to_owned(),
        program: program.to_owned(),
        pid,
        message: message.trim_start().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syslog_lines_parse() {
        let line = "Feb 20 08:35:22 slave22 sshd[5774]: Failed password for root from 216.160.83.57 port 29160 ssh2";
        let parsed = parse_syslog(line, 2026).expect("parses");
        assert_eq!(parsed.host, "slave22");
        assert_eq!(parsed.program, "sshd");
        assert_eq!(parsed.pid, Some(5774));
        assert!(parsed.message.starts_with("Failed password for root"));
        assert_eq!(parsed.ts.to_string(), "2026-02-20 08:35:22");
        let sudo = "Feb 24 00:13:02 precise32 sudo:      tsg : user NOT in sudoers ; TTY=pts/1";
        let parsed = parse_syslog(sudo, 2026).expect("parses");
        assert_eq!((parsed.program.as_str(), parsed.pid), ("sudo", None));
        assert!(parsed.message.starts_with("tsg : user NOT in sudoers"));
        assert_eq!(parse_syslog("not a syslog line", 2026), None);
    }
}
