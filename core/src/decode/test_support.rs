//! Shared test inputs: the fixtures under `tests/fixtures/` and the example payloads
//! of `docs/wire.md`, read from the document itself so that it cannot drift from
//! what the decoders accept.

use crate::model::Decoded;

/// Decodes `payload` on `subject` and takes the records out with `pick` (a
/// `Decoded` variant); a decode error comes back as its message.
pub(crate) fn decode_records<T>(
    subject: &str,
    payload: &str,
    pick: fn(Decoded) -> Option<Vec<T>>,
) -> Result<Vec<T>, String> {
    match crate::decode::decode(subject, payload.as_bytes()) {
        Ok(decoded) => {
            let shown = format!("{decoded:?}");
            Ok(pick(decoded).unwrap_or_else(|| panic!("wrong record kind on {subject}: {shown}")))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Decodes a payload that must carry security events.
pub(crate) fn decode_events(
    subject: &str,
    payload: &str,
) -> Result<Vec<crate::model::Event>, String> {
    decode_records(subject, payload, |d| match d {
        Decoded::Events(events) => Some(events),
        _ => None,
    })
}

/// `docs/wire.md`, whose fences tagged ```` ```json decode=<subject> ```` are examples.
pub(crate) const WIRE_MD: &str = include_str!("../../../docs/wire.md");

/// Every example of `docs/wire.md` as (subject, payload), in document order.
pub(crate) fn wire_examples() -> Vec<(&'static str, &'static str)> {
    let mut examples = Vec::new();
    let mut rest = WIRE_MD;
    // A fence opens at the start of a line; the prose's mentions of it do not.
    const FENCE: &str = "\n```json decode=";
    while let Some(start) = rest.find(FENCE) {
        let after = &rest[start + FENCE.len()..];
        let Some(eol) = after.find('\n') else { break };
        let subject = after[..eol].trim();
        let body = &after[eol + 1..];
        let Some(end) = body.find("\n```") else { break };
        examples.push((subject, &body[..end + 1]));
        rest = &body[end + 4..];
    }
    examples
}

/// The one example of `docs/wire.md` published on `subject`.
pub(crate) fn wire_example(subject: &str) -> &'static str {
    let found: Vec<_> = wire_examples()
        .into_iter()
        .filter(|(s, _)| *s == subject)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "docs/wire.md needs exactly one example for {subject}"
    );
    found[0].1
}

/// `tests/fixtures/falco/alerts.jsonl`: 25 real alerts.
pub(crate) const FALCO_ALERTS: &str = include_str!("../../../tests/fixtures/falco/alerts.jsonl");
/// The same alerts as Falcosidekick re-publishes them (DERIVED).
pub(crate) const FALCO_DERIVED: &str =
    include_str!("../../../tests/fixtures/falco/alerts_nats_derived.jsonl");
/// The NATS subject of each line of [`FALCO_DERIVED`] (DERIVED).
pub(crate) const FALCO_DERIVED_SUBJECTS: &str =
    include_str!("../../../tests/fixtures/falco/alerts_nats_derived.subjects.txt");
/// A pretty-printed "Falco internal: metrics snapshot" event.
pub(crate) const FALCO_METRICS_SNAPSHOT: &str =
    include_str!("../../../tests/fixtures/falco/internal_metrics_snapshot.json");
/// A whole `journalctl -u falco` capture: JSON alerts mixed with text lines.
pub(crate) const FALCO_JOURNAL: &str =
    include_str!("../../../tests/fixtures/falco/sources/josevnz_falco_json_lines.txt");
/// Trivy: alpine 3.9.4 image, 6 vulnerabilities.
pub(crate) const TRIVY_ALPINE: &str = include_str!("../../../tests/fixtures/trivy/alpine-39.json");
/// Trivy: debian 9.9 image, 5 vulnerabilities.
pub(crate) const TRIVY_DEBIAN: &str =
    include_str!("../../../tests/fixtures/trivy/debian-stretch.json");
/// Trivy: a real user's debian 10.13 image report, 13 vulnerabilities, no `ArtifactName`.
pub(crate) const TRIVY_DEFECTDOJO: &str =
    include_str!("../../../tests/fixtures/trivy/defectdojo-issue_9333-debian.json");
/// Trivy: npm repository scan with 12 packages and 1 vulnerability.
pub(crate) const TRIVY_NPM: &str =
    include_str!("../../../tests/fixtures/trivy/npm-list-all-pkgs.json");
/// Ten auth.log lines (sshd, sudo, useradd, …).
pub(crate) const AUTH_LOG: &str =
    include_str!("../../../tests/fixtures/logs/beats_system_auth_test.log");
