//! Wire decoders: one module per contract in `docs/wire.md`, chosen by NATS subject.
//!
//! [`decode`] is the only entry point. It is a pure function of the subject and the
//! payload bytes: it never reads the clock, so a replayed message decodes to exactly
//! the records it decoded to the first time.
//!
//! | subject | contract | module |
//! |---|---|---|
//! | `falco.>`, `security.falco.alerts` | Falco alert JSON (as Falco or Falcosidekick writes it) | `falco` |
//! | `scan.trivy.>` | Trivy report, SchemaVersion 2, bare or in our envelope | `trivy` |
//! | `telemetry.metrics.>` | metrics envelope | `metrics` |
//! | `telemetry.processes.>` | process delta envelope | `processes` |
//! | `topology.connections` | connections envelope | `connections` |
//! | `security.xdp.drops` | XDP drops envelope | `xdp` |
//! | `security.malware.findings` | malware findings envelope | `malware` |
//! | `logs.>` | log envelope | `logs` |

mod connections;
mod envelope;
mod falco;
mod logs;
mod malware;
mod metrics;
mod processes;
mod trivy;
mod xdp;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;

use crate::model::Decoded;

/// Why a message could not be decoded. The text goes into the dead letter's
/// `Palisade-Error` header, so it says what was wrong in the payload.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The payload is not the JSON the contract describes.
    #[error("invalid JSON for {contract}: {source}")]
    Json {
        /// Contract name, e.g. `falco alert`.
        contract: &'static str,
        /// The parser's error, with line and column.
        source: serde_json::Error,
    },
    /// The JSON parsed but a value is out of contract.
    #[error("invalid {contract}: {reason}")]
    Invalid {
        /// Contract name.
        contract: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// No contract is bound to this subject.
    #[error("no decoder for subject {0:?}")]
    UnknownSubject(String),
}

/// The wire contracts of `docs/wire.md`, one per decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Contract {
    /// A Falco alert, one per message (`falco.<priority>.<rule>`, `security.falco.alerts`).
    FalcoAlert,
    /// A Trivy SchemaVersion 2 report, bare or in our envelope (`scan.trivy.>`).
    TrivyReport,
    /// Metric samples (`telemetry.metrics.>`).
    Metrics,
    /// Process starts and stops (`telemetry.processes.>`).
    Processes,
    /// Network connections (`topology.connections`).
    Connections,
    /// XDP firewall drops (`security.xdp.drops`).
    XdpDrops,
    /// Malware scanner findings (`security.malware.findings`).
    MalwareFindings,
    /// Log lines (`logs.<source>`).
    Logs,
}

impl Contract {
    /// Every contract, in the order of `docs/wire.md`.
    pub const ALL: [Contract; 8] = [
        Contract::FalcoAlert,
        Contract::TrivyReport,
        Contract::Metrics,
        Contract::Processes,
        Contract::Connections,
        Contract::XdpDrops,
        Contract::MalwareFindings,
        Contract::Logs,
    ];

    /// The contract bound to a subject, if any.
    ///
    /// A subject `a.b` written `a.b` below matches itself and any subject under it
    /// (`a.b.<partition>`, see DESIGN §8); one written `a.b.>` needs at least one
    /// more token. `falco.>`, `logs.>`, `telemetry.metrics.>`,
    /// `telemetry.processes.>` and `scan.trivy.>` are of the second kind;
    /// `security.falco.alerts`, `security.xdp.drops`, `security.malware.findings`
    /// and `topology.connections` of the first. Empty tokens never match.
    pub fn for_subject(subject: &str) -> Option<Contract> {
        let routes: [(&str, bool, Contract); 9] = [
            ("falco", true, Contract::FalcoAlert),
            ("security.falco.alerts", false, Contract::FalcoAlert),
            ("security.xdp.drops", false, Contract::XdpDrops),
            (
                "security.malware.findings",
                false,
                Contract::MalwareFindings,
            ),
            ("logs", true, Contract::Logs),
            ("telemetry.metrics", true, Contract::Metrics),
            ("telemetry.processes", true, Contract::Processes),
            ("scan.trivy", true, Contract::TrivyReport),
            ("topology.connections", false, Contract::Connections),
        ];
        routes
            .into_iter()
            .find(|(base, deeper_only, _)| subject_matches(subject, base, *deeper_only))
            .map(|(_, _, contract)| contract)
    }

    /// Name used in error messages (`falco alert`, `metrics envelope`, …).
    pub fn name(self) -> &'static str {
        match self {
            Contract::FalcoAlert => falco::CONTRACT,
            Contract::TrivyReport => trivy::CONTRACT,
            Contract::Metrics => metrics::CONTRACT,
            Contract::Processes => processes::CONTRACT,
            Contract::Connections => connections::CONTRACT,
            Contract::XdpDrops => xdp::CONTRACT,
            Contract::MalwareFindings => malware::CONTRACT,
            Contract::Logs => logs::CONTRACT,
        }
    }
}

/// True when `subject` is `base` followed by zero (unless `deeper_only`) or more
/// non-empty tokens.
fn subject_matches(subject: &str, base: &str, deeper_only: bool) -> bool {
    let Some(rest) = subject.strip_prefix(base) else {
        return false;
    };
    if rest.is_empty() {
        return !deeper_only;
    }
    match rest.strip_prefix('.') {
        Some(tokens) => tokens.split('.').all(|t| !t.is_empty()),
        None => false,
    }
}

/// Decodes one message by its subject (see [`Contract::for_subject`]).
///
/// Never panics and never reads the clock: the same subject and bytes always give
/// the same records or the same error.
pub fn decode(subject: &str, payload: &[u8]) -> Result<Decoded, DecodeError> {
    let contract = Contract::for_subject(subject)
        .ok_or_else(|| DecodeError::UnknownSubject(subject.to_owned()))?;
    match contract {
        Contract::FalcoAlert => falco::decode(payload),
        Contract::TrivyReport => trivy::decode(payload),
        Contract::Metrics => metrics::decode(payload),
        Contract::Processes => processes::decode(payload),
        Contract::Connections => connections::decode(payload),
        Contract::XdpDrops => xdp::decode(payload),
        Contract::MalwareFindings => malware::decode(payload),
        Contract::Logs => logs::decode(payload, log_source(subject)),
    }
}

/// The token after `logs.`: the log source when the envelope names none.
fn log_source(subject: &str) -> &str {
    let rest = subject.strip_prefix("logs.").unwrap_or(subject);
    rest.split('.').next().unwrap_or(rest)
}

/// Parses `payload` as `T`, naming `contract` in the error.
fn parse_json<T: DeserializeOwned>(
    contract: &'static str,
    payload: &[u8],
) -> Result<T, DecodeError> {
    serde_json::from_slice(payload).map_err(|source| DecodeError::Json { contract, source })
}

/// An out-of-contract error for `contract`.
fn invalid(contract: &'static str, reason: impl Into<String>) -> DecodeError {
    DecodeError::Invalid {
        contract,
        reason: reason.into(),
    }
}

/// Parses an RFC 3339 time (any offset, any fraction up to nanoseconds) into UTC.
fn parse_time(
    contract: &'static str,
    field: &str,
    text: &str,
) -> Result<DateTime<Utc>, DecodeError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            invalid(
                contract,
                format!("{field}: {text:?} is not an RFC 3339 time ({e})"),
            )
        })
}

/// `None` for a missing or empty string.
fn non_empty(text: Option<String>) -> Option<String> {
    text.filter(|t| !t.is_empty())
}

#[cfg(test)]
pub(crate) mod test_support;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn subjects_route_to_their_contract() {
        let cases = [
            (
                "falco.notice.terminal_shell_in_container",
                Some(Contract::FalcoAlert),
            ),
            ("falco.critical.x", Some(Contract::FalcoAlert)),
            ("security.falco.alerts", Some(Contract::FalcoAlert)),
            ("security.xdp.drops", Some(Contract::XdpDrops)),
            ("security.xdp.drops.p3", Some(Contract::XdpDrops)),
            ("security.malware.findings", Some(Contract::MalwareFindings)),
            ("logs.auth", Some(Contract::Logs)),
            ("logs.k8s.audit.node1", Some(Contract::Logs)),
            ("telemetry.metrics.edge", Some(Contract::Metrics)),
            ("telemetry.processes.edge", Some(Contract::Processes)),
            ("scan.trivy.results", Some(Contract::TrivyReport)),
            ("topology.connections", Some(Contract::Connections)),
            ("topology.connections.p0", Some(Contract::Connections)),
            // Not ours.
            ("falco", None),
            ("falco.", None),
            ("falcon.notice.x", None),
            ("logs", None),
            ("logs..auth", None),
            ("telemetry.metrics", None),
            ("telemetry.metricsx.edge", None),
            ("scan.trivy", None),
            ("topology.services", None),
            ("security.falco.alertsx", None),
            ("incidents.p0", None),
            ("dlq.logs.auth", None),
            ("", None),
        ];
        for (subject, want) in cases {
            assert_eq!(Contract::for_subject(subject), want, "{subject}");
        }
    }

    #[test]
    fn unknown_subject_is_an_error() {
        let err = decode("incidents.p0", b"{}").unwrap_err();
        assert!(matches!(&err, DecodeError::UnknownSubject(s) if s == "incidents.p0"));
        assert_eq!(err.to_string(), r#"no decoder for subject "incidents.p0""#);
    }

    #[test]
    fn log_source_is_the_token_after_logs() {
        assert_eq!(log_source("logs.auth"), "auth");
        assert_eq!(log_source("logs.k8s.audit"), "k8s");
    }

    #[test]
    fn contract_names_are_distinct() {
        let names: std::collections::BTreeSet<_> = Contract::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names.len(), Contract::ALL.len());
    }

    #[test]
    fn every_wire_example_decodes_to_records() {
        use std::collections::HashSet;
        let examples = test_support::wire_examples();
        let covered: HashSet<_> = examples
            .iter()
            .filter_map(|(s, _)| Contract::for_subject(s))
            .collect();
        assert_eq!(
            covered.len(),
            Contract::ALL.len(),
            "docs/wire.md needs an example per contract"
        );
        for (subject, payload) in examples {
            let decoded = decode(subject, payload.as_bytes())
                .unwrap_or_else(|e| panic!("docs/wire.md example on {subject}: {e}"));
            assert!(!decoded.is_empty(), "{subject}");
            assert_eq!(
                decode(subject, payload.as_bytes()).unwrap(),
                decoded,
                "deterministic"
            );
        }
    }

    /// One subject per contract, to feed everything to everyone.
    const SUBJECTS: [&str; 9] = [
        "falco.notice.terminal_shell_in_container",
        "security.falco.alerts",
        "security.xdp.drops",
        "security.malware.findings",
        "logs.auth",
        "telemetry.metrics.edge",
        "telemetry.processes.edge",
        "scan.trivy.results",
        "topology.connections",
    ];

    /// Every fixture and example, as (subject it belongs to, payload).
    fn corpus() -> Vec<(&'static str, &'static str)> {
        use test_support::*;
        let mut corpus = test_support::wire_examples();
        corpus.extend(FALCO_ALERTS.lines().map(|l| ("security.falco.alerts", l)));
        let derived = FALCO_DERIVED.lines().zip(FALCO_DERIVED_SUBJECTS.lines());
        corpus.extend(derived.map(|(l, s)| (s, l)));
        corpus.extend(
            FALCO_JOURNAL
                .lines()
                .take(40)
                .map(|l| ("security.falco.alerts", l)),
        );
        corpus.push(("falco.informational.x", FALCO_METRICS_SNAPSHOT));
        for trivy in [TRIVY_ALPINE, TRIVY_DEBIAN, TRIVY_DEFECTDOJO, TRIVY_NPM] {
            corpus.push(("scan.trivy.results", trivy));
        }
        corpus.extend(AUTH_LOG.lines().map(|l| ("logs.auth", l)));
        corpus
    }

    /// Decodes and drops the result: the point is that it returns.
    fn feed(subject: &str, payload: &[u8]) {
        let _ = decode(subject, payload);
    }

    #[test]
    fn truncated_input_never_panics() {
        for (_, payload) in corpus() {
            let bytes = payload.as_bytes();
            let step = (bytes.len() / 256).max(1);
            for cut in (0..bytes.len()).step_by(step) {
                for subject in SUBJECTS {
                    feed(subject, &bytes[..cut]);
                }
            }
        }
    }

    #[test]
    fn mutated_input_never_panics() {
        // A fixed linear congruential sequence: the same positions on every run.
        let mut state: u64 = 0x5eed;
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as usize
        };
        let replacements = [
            b'"', b'{', b'}', b'[', b']', b'0', b'-', b'9', b'\\', b',', b':', b'n', 0xff, 0,
        ];
        for (subject, payload) in corpus() {
            let mut bytes = payload.as_bytes().to_vec();
            if bytes.is_empty() {
                continue;
            }
            for _ in 0..48 {
                let at = next() % bytes.len();
                let old = bytes[at];
                for r in replacements {
                    bytes[at] = r;
                    feed(subject, &bytes);
                }
                bytes[at] = old;
            }
        }
    }

    #[test]
    fn hostile_shapes_never_panic() {
        let deep_array = "[".repeat(100_000);
        let deep_object = r#"{"a":"#.repeat(100_000);
        let deep_fields = format!(
            r#"{{"output":"o","priority":"Notice","rule":"r","time":"2021-01-14T23:39:44Z","output_fields":{{"x":{}}}}}"#,
            deep_array
        );
        let shapes: Vec<&[u8]> = vec![
            b"", b" ", b"null", b"0", b"-1", b"1e999", b"\"x\"", b"[]", b"{}", b"\xff\xfe", b"{\"v\":1e999}",
            b"{\"ts\":\"9999-12-31T23:59:59.999999999+23:59\",\"host\":\"h\",\"lines\":[]}",
            b"{\"ts\":\"+275760-09-13T00:00:00Z\",\"host\":\"h\",\"lines\":[]}",
            b"{\"output\":\"o\",\"priority\":\"Notice\",\"rule\":\"r\",\"output_fields\":{\"evt.time\":-9223372036854775808}}",
            deep_array.as_bytes(), deep_object.as_bytes(), deep_fields.as_bytes(),
        ];
        for shape in shapes {
            for subject in SUBJECTS {
                feed(subject, shape);
            }
        }
        let err = decode("logs.auth", deep_array.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("recursion limit exceeded"), "{err}");
    }

    #[test]
    fn times_keep_nanoseconds_and_offsets() {
        let t = parse_time("t", "ts", "2022-05-01T19:29:32.918828894-04:00").unwrap();
        assert_eq!(t.timestamp_nanos_opt(), Some(1_651_447_772_918_828_894));
        let err = parse_time("t", "ts", "2022-05-01 19:29:32").unwrap_err();
        assert!(err
            .to_string()
            .starts_with("invalid t: ts: \"2022-05-01 19:29:32\" is not an RFC 3339 time"));
    }
}
