//! The process delta envelope (`telemetry.processes.>`): processes an edge agent saw
//! start and stop since its last message.

use serde::Deserialize;
use serde_json::Value;

use super::envelope::{required, Header};
use super::{invalid, non_empty, parse_json, DecodeError};
use crate::model::{Decoded, ProcessDelta, ProcessStart};

/// Contract name in errors.
pub(super) const CONTRACT: &str = "processes envelope";

/// The envelope as it comes; every field optional so a missing one gets a precise error.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a processes envelope object")]
struct RawEnvelope {
    v: Option<Value>,
    ts: Option<String>,
    host: Option<String>,
    agent_id: Option<String>,
    started: Option<Vec<RawStart>>,
    stopped: Option<Vec<RawStop>>,
}

/// One `started[]` record as it comes.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a started process object")]
struct RawStart {
    ts: Option<String>,
    pid: Option<i64>,
    ppid: Option<i64>,
    exe: Option<String>,
    cmdline: Option<String>,
    user: Option<String>,
    container_id: Option<String>,
    package: Option<String>,
}

/// One `stopped[]` record as it comes.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a stopped process object")]
struct RawStop {
    ts: Option<String>,
    pid: Option<i64>,
}

/// Decodes a process delta envelope: every `started` record (as
/// [`ProcessDelta::Started`]) then every `stopped` one, each in array order.
pub(super) fn decode(payload: &[u8]) -> Result<Decoded, DecodeError> {
    let raw: RawEnvelope = parse_json(CONTRACT, payload)?;
    let header = Header::check(CONTRACT, raw.v, raw.ts, raw.host, raw.agent_id)?;
    if raw.started.is_none() && raw.stopped.is_none() {
        return Err(invalid(
            CONTRACT,
            "missing started and stopped (send [] when there is nothing)",
        ));
    }
    let started = raw.started.unwrap_or_default();
    let stopped = raw.stopped.unwrap_or_default();
    let mut deltas = Vec::with_capacity(started.len() + stopped.len());
    for (i, s) in started.into_iter().enumerate() {
        let at = format!("started[{i}]");
        deltas.push(ProcessDelta::Started(ProcessStart {
            ts: header.record_ts(CONTRACT, &at, s.ts.as_deref())?,
            host: header.host.clone(),
            pid: required(CONTRACT, &at, "pid", s.pid)?,
            ppid: s.ppid,
            exe: non_empty(s.exe),
            cmdline: non_empty(s.cmdline),
            user: non_empty(s.user),
            container_id: non_empty(s.container_id),
            package: non_empty(s.package),
            agent_id: header.agent_id.clone(),
        }));
    }
    for (i, s) in stopped.into_iter().enumerate() {
        let at = format!("stopped[{i}]");
        deltas.push(ProcessDelta::Stopped {
            ts: header.record_ts(CONTRACT, &at, s.ts.as_deref())?,
            host: header.host.clone(),
            pid: required(CONTRACT, &at, "pid", s.pid)?,
        });
    }
    Ok(Decoded::Processes(deltas))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::decode::test_support::{decode_records, wire_example};

    const SUBJECT: &str = "telemetry.processes.edge";

    fn decode_str(payload: &str) -> Result<Vec<ProcessDelta>, String> {
        decode_records(SUBJECT, payload, |d| match d {
            Decoded::Processes(records) => Some(records),
            _ => None,
        })
    }

    #[test]
    fn wire_example_decodes() {
        let deltas = decode_str(wire_example(SUBJECT)).unwrap();
        assert_eq!(deltas.len(), 3);
        let ProcessDelta::Started(nginx) = &deltas[0] else {
            panic!("{:?}", deltas[0])
        };
        assert_eq!(nginx.pid, 1234);
        assert_eq!(nginx.ppid, Some(1));
        assert_eq!(nginx.exe.as_deref(), Some("/usr/sbin/nginx"));
        assert_eq!(nginx.cmdline.as_deref(), Some("nginx -g daemon off;"));
        assert_eq!(nginx.user.as_deref(), Some("www-data"));
        assert_eq!(nginx.container_id, None);
        assert_eq!(nginx.package.as_deref(), Some("nginx"));
        assert_eq!(nginx.host, "node-01");
        assert_eq!(nginx.ts.to_rfc3339(), "2026-11-24T13:59:58.120+00:00");
        let ProcessDelta::Started(kworker) = &deltas[1] else {
            panic!("{:?}", deltas[1])
        };
        assert_eq!(
            (kworker.exe.clone(), kworker.ppid),
            (None, Some(2)),
            "empty exe is absent"
        );
        assert_eq!(
            kworker.ts.to_rfc3339(),
            "2026-11-24T14:00:00+00:00",
            "envelope ts"
        );
        assert_eq!(
            deltas[2],
            ProcessDelta::Stopped {
                ts: kworker.ts,
                host: "node-01".into(),
                pid: 99
            }
        );
    }

    #[test]
    fn either_array_may_be_left_out() {
        let only_stopped = r#"{"ts":"2026-11-24T14:00:00Z","host":"n","stopped":[{"pid":7}]}"#;
        assert_eq!(decode_str(only_stopped).unwrap().len(), 1);
        let empty = r#"{"ts":"2026-11-24T14:00:00Z","host":"n","started":[]}"#;
        assert!(decode_str(empty).unwrap().is_empty());
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let cases = [
            (r#"{"ts":"2026-11-24T14:00:00Z","host":"n"}"#, "invalid processes envelope: missing started and stopped (send [] when there is nothing)"),
            (r#"{"ts":"2026-11-24T14:00:00Z","host":"n","started":[{"pid":1},{"exe":"/bin/sh"}]}"#, "invalid processes envelope: started[1]: missing pid"),
            (r#"{"ts":"2026-11-24T14:00:00Z","host":"n","stopped":[{}]}"#, "invalid processes envelope: stopped[0]: missing pid"),
            (r#"{"v":3,"ts":"2026-11-24T14:00:00Z","host":"n","stopped":[]}"#, "invalid processes envelope: unsupported envelope version 3 (this decoder reads 1)"),
            (r#"{"ts":"2026-11-24T14:00:00Z","host":"","stopped":[]}"#, "invalid processes envelope: host is empty"),
        ];
        for (payload, want) in cases {
            assert_eq!(decode_str(payload).unwrap_err(), want, "{payload}");
        }
        let err = decode_str(r#"{"ts":"2026-11-24T14:00:00Z","host":"n","started":[{"pid":"1"}]}"#)
            .unwrap_err();
        assert!(
            err.starts_with("invalid JSON for processes envelope: invalid type: string \"1\""),
            "{err}"
        );
    }
}
