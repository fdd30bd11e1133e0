//! The header every envelope of ours shares: `v`, `ts`, `host`, `agent_id`.
//!
//! Each envelope module declares these four fields on its own raw struct (so serde
//! reads the payload in one pass, without `flatten`) and hands them to
//! [`Header::check`].

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::{invalid, non_empty, parse_time, DecodeError};

/// The only envelope version there is.
pub(super) const VERSION: u64 = 1;

/// A checked envelope header.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Header {
    /// The envelope's time: the default for every record without its own `ts`.
    pub(super) ts: DateTime<Utc>,
    /// The host the records are from (never empty).
    pub(super) host: String,
    /// The publishing agent, when it said (never empty).
    pub(super) agent_id: Option<String>,
}

impl Header {
    /// Checks the raw header fields of a `contract` envelope: `v` absent, `null`
    /// or the integer 1; `ts` an RFC 3339 time; `host` a non-empty string.
    pub(super) fn check(
        contract: &'static str,
        v: Option<Value>,
        ts: Option<String>,
        host: Option<String>,
        agent_id: Option<String>,
    ) -> Result<Header, DecodeError> {
        if let Some(v) = v.filter(|v| !v.is_null()) {
            if v.as_u64() != Some(VERSION) {
                return Err(invalid(
                    contract,
                    format!("unsupported envelope version {v} (this decoder reads {VERSION})"),
                ));
            }
        }
        let ts = ts.ok_or_else(|| invalid(contract, "missing ts"))?;
        let ts = parse_time(contract, "ts", &ts)?;
        let host = host.ok_or_else(|| invalid(contract, "missing host"))?;
        if host.is_empty() {
            return Err(invalid(contract, "host is empty"));
        }
        Ok(Header {
            ts,
            host,
            agent_id: non_empty(agent_id),
        })
    }

    /// A record's time: its own `ts` when it has one (`at` names the record in
    /// errors, e.g. `metrics[3]`), else the envelope's.
    pub(super) fn record_ts(
        &self,
        contract: &'static str,
        at: &str,
        ts: Option<&str>,
    ) -> Result<DateTime<Utc>, DecodeError> {
        match ts {
            Some(ts) => parse_time(contract, &format!("{at}.ts"), ts),
            None => Ok(self.ts),
        }
    }

    /// Adds `agent_id` to an event's attributes when the envelope gave one.
    pub(super) fn put_agent_id(&self, attributes: &mut Map<String, Value>) {
        if let Some(agent_id) = &self.agent_id {
            attributes.insert("agent_id".into(), Value::String(agent_id.clone()));
        }
    }
}

/// The record array of an envelope: required, possibly empty.
pub(super) fn records<T>(
    contract: &'static str,
    field: &str,
    records: Option<Vec<T>>,
) -> Result<Vec<T>, DecodeError> {
    records.ok_or_else(|| {
        invalid(
            contract,
            format!("missing {field} (send [] when there is nothing)"),
        )
    })
}

/// A required field of record `at`.
pub(super) fn required<T>(
    contract: &'static str,
    at: &str,
    field: &str,
    value: Option<T>,
) -> Result<T, DecodeError> {
    value.ok_or_else(|| invalid(contract, format!("{at}: missing {field}")))
}

/// A required, non-empty text field of record `at`.
pub(super) fn required_text(
    contract: &'static str,
    at: &str,
    field: &str,
    value: Option<String>,
) -> Result<String, DecodeError> {
    let value = required(contract, at, field, value)?;
    if value.is_empty() {
        return Err(invalid(contract, format!("{at}: {field} is empty")));
    }
    Ok(value)
}

/// Inserts `key` into `attributes` when `value` is present.
pub(super) fn put<V: Into<Value>>(
    attributes: &mut Map<String, Value>,
    key: &str,
    value: Option<V>,
) {
    if let Some(value) = value {
        attributes.insert(key.to_owned(), value.into());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn check(
        v: Option<Value>,
        ts: Option<&str>,
        host: Option<&str>,
    ) -> Result<Header, DecodeError> {
        let (ts, host) = (ts.map(str::to_owned), host.map(str::to_owned));
        Header::check("test envelope", v, ts, host, Some(String::new()))
    }

    #[test]
    fn version_defaults_to_one() {
        let ts = Some("2026-01-01T00:00:00Z");
        let header = check(None, ts, Some("node-01")).unwrap();
        assert_eq!(header.host, "node-01");
        assert_eq!(header.agent_id, None, "an empty agent_id counts as absent");
        assert!(check(Some(Value::Null), ts, Some("n")).is_ok());
        assert!(check(Some(1.into()), ts, Some("n")).is_ok());
        for v in [
            Value::from(2),
            Value::from(0),
            Value::from(1.0),
            Value::from("1"),
            Value::from(-1),
        ] {
            let err = check(Some(v.clone()), ts, Some("n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("unsupported envelope version"), "{v}: {err}");
        }
    }

    #[test]
    fn ts_and_host_are_required() {
        let ts = Some("2026-01-01T00:00:00Z");
        let err = |r: Result<Header, DecodeError>| r.unwrap_err().to_string();
        assert_eq!(
            err(check(None, None, Some("n"))),
            "invalid test envelope: missing ts"
        );
        assert_eq!(
            err(check(None, ts, None)),
            "invalid test envelope: missing host"
        );
        assert_eq!(
            err(check(None, ts, Some(""))),
            "invalid test envelope: host is empty"
        );
        assert!(err(check(None, Some("yesterday"), Some("n"))).contains("ts: \"yesterday\" is not"));
    }
}
