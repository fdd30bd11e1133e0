//! The metrics envelope (`telemetry.metrics.>`): metric samples from an edge agent.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::envelope::{records, required, required_text, Header};
use super::{invalid, parse_json, DecodeError};
use crate::model::{Decoded, Metric};

/// Contract name in errors.
pub(super) const CONTRACT: &str = "metrics envelope";

/// The envelope as it comes; every field optional so a missing one gets a precise error.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a metrics envelope object")]
struct RawEnvelope {
    v: Option<Value>,
    ts: Option<String>,
    host: Option<String>,
    agent_id: Option<String>,
    metrics: Option<Vec<RawMetric>>,
}

/// One `metrics[]` record as it comes.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a metric object")]
struct RawMetric {
    ts: Option<String>,
    name: Option<String>,
    value: Option<f64>,
    labels: Option<Map<String, Value>>,
}

/// Decodes a metrics envelope into its samples, in array order.
pub(super) fn decode(payload: &[u8]) -> Result<Decoded, DecodeError> {
    let raw: RawEnvelope = parse_json(CONTRACT, payload)?;
    let header = Header::check(CONTRACT, raw.v, raw.ts, raw.host, raw.agent_id)?;
    let metrics = records(CONTRACT, "metrics", raw.metrics)?
        .into_iter()
        .enumerate()
        .map(|(i, m)| metric(&header, &format!("metrics[{i}]"), m))
        .collect::<Result<_, _>>()?;
    Ok(Decoded::Metrics(metrics))
}

/// Checks one `metrics[]` record.
fn metric(header: &Header, at: &str, raw: RawMetric) -> Result<Metric, DecodeError> {
    let value = required(CONTRACT, at, "value", raw.value)?;
    if !value.is_finite() {
        return Err(invalid(
            CONTRACT,
            format!("{at}: value {value} is not finite"),
        ));
    }
    Ok(Metric {
        ts: header.record_ts(CONTRACT, at, raw.ts.as_deref())?,
        host: header.host.clone(),
        name: required_text(CONTRACT, at, "name", raw.name)?,
        value,
        labels: raw.labels.unwrap_or_default(),
        agent_id: header.agent_id.clone(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::decode::test_support::{decode_records, wire_example};

    const SUBJECT: &str = "telemetry.metrics.edge";

    fn decode_str(payload: &str) -> Result<Vec<Metric>, String> {
        decode_records(SUBJECT, payload, |d| match d {
            Decoded::Metrics(records) => Some(records),
            _ => None,
        })
    }

    #[test]
    fn wire_example_decodes() {
        let metrics = decode_str(wire_example(SUBJECT)).unwrap();
        assert_eq!(metrics.len(), 3);
        let cpu = &metrics[0];
        assert_eq!(cpu.name, "cpu.usage_percent");
        assert_eq!(cpu.value, 12.5);
        assert_eq!(cpu.host, "node-01");
        assert_eq!(cpu.labels["cpu"], "total");
        assert_eq!(cpu.ts.to_rfc3339(), "2026-11-24T14:00:00+00:00");
        assert_eq!(metrics[1].value, 81_234_567_168.0, "integers are accepted");
        assert_eq!(
            metrics[2].ts.to_rfc3339(),
            "2026-11-24T13:59:55+00:00",
            "own ts wins"
        );
        assert!(metrics[2].labels.is_empty());
    }

    #[test]
    fn empty_batches_are_valid() {
        let m = decode_str(r#"{"ts":"2026-11-24T14:00:00Z","host":"n","metrics":[]}"#).unwrap();
        assert!(m.is_empty());
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let env = |metrics: &str| {
            format!(r#"{{"v":1,"ts":"2026-11-24T14:00:00Z","host":"n","metrics":{metrics}}}"#)
        };
        let cases = [
            (
                env(r#"[{"name":"a","value":1},{"name":"b"}]"#),
                "invalid metrics envelope: metrics[1]: missing value",
            ),
            (
                env(r#"[{"value":1}]"#),
                "invalid metrics envelope: metrics[0]: missing name",
            ),
            (
                env(r#"[{"name":"","value":1}]"#),
                "invalid metrics envelope: metrics[0]: name is empty",
            ),
            (
                r#"{"ts":"2026-11-24T14:00:00Z","host":"n"}"#.into(),
                "invalid metrics envelope: missing metrics (send [] when there is nothing)",
            ),
            (
                r#"{"v":2,"ts":"2026-11-24T14:00:00Z","host":"n","metrics":[]}"#.into(),
                "invalid metrics envelope: unsupported envelope version 2 (this decoder reads 1)",
            ),
            (
                r#"{"ts":"2026-11-24T14:00:00Z","metrics":[]}"#.into(),
                "invalid metrics envelope: missing host",
            ),
        ];
        for (payload, want) in cases {
            assert_eq!(decode_str(&payload).unwrap_err(), want, "{payload}");
        }
        // JSON has no NaN or infinity: an overflowing literal is refused by the parser,
        // and the decoder checks finiteness again behind it.
        let err = decode_str(&env(r#"[{"name":"a","value":1e999}]"#)).unwrap_err();
        assert!(
            err.starts_with("invalid JSON for metrics envelope: number out of range"),
            "{err}"
        );
        for bad in ["NaN", "Infinity", "-Infinity", r#""NaN""#] {
            let err = decode_str(&env(&format!(r#"[{{"name":"a","value":{bad}}}]"#))).unwrap_err();
            assert!(
                err.starts_with("invalid JSON for metrics envelope"),
                "{bad}: {err}"
            );
        }
        let header = Header::check(
            CONTRACT,
            None,
            Some("2026-11-24T14:00:00Z".into()),
            Some("n".into()),
            None,
        )
        .unwrap();
        let raw = RawMetric {
            ts: None,
            name: Some("a".into()),
            value: Some(f64::NAN),
            labels: None,
        };
        assert_eq!(
            metric(&header, "metrics[0]", raw).unwrap_err().to_string(),
            "invalid metrics envelope: metrics[0]: value NaN is not finite"
        );
        let err = decode_str(&env(r#"[{"name":"a","value":1,"ts":"soon"}]"#)).unwrap_err();
        assert!(
            err.contains("metrics[0].ts: \"soon\" is not an RFC 3339 time"),
            "{err}"
        );
        let err = decode_str("{\"ts\":").unwrap_err();
        assert!(
            err.starts_with("invalid JSON for metrics envelope: EOF while parsing"),
            "{err}"
        );
    }
}
