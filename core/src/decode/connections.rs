//! The connections envelope (`topology.connections`): sockets an edge agent saw, each
//! record being gopsutil's `net.ConnectionStat` JSON plus our optional `process` and `ts`.

use serde::Deserialize;
use serde_json::Value;

use super::envelope::{records, required, Header};
use super::{invalid, non_empty, parse_json, DecodeError};
use crate::model::{Connection, Decoded};

/// Contract name in errors.
pub(super) const CONTRACT: &str = "connections envelope";

/// Linux address families and socket types as gopsutil reports them.
const AF_UNIX: u32 = 1;
const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;

/// The envelope as it comes; every field optional so a missing one gets a precise error.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a connections envelope object")]
struct RawEnvelope {
    v: Option<Value>,
    ts: Option<String>,
    host: Option<String>,
    agent_id: Option<String>,
    connections: Option<Vec<RawConnection>>,
}

/// gopsutil's `ConnectionStat` (`fd` and `uids` are not used and not checked).
#[derive(Debug, Deserialize)]
#[serde(expecting = "a connection object")]
struct RawConnection {
    ts: Option<String>,
    family: Option<u32>,
    #[serde(rename = "type")]
    socket_type: Option<u32>,
    localaddr: Option<RawAddr>,
    remoteaddr: Option<RawAddr>,
    status: Option<String>,
    pid: Option<i64>,
    process: Option<String>,
}

/// gopsutil's `Addr`.
#[derive(Debug, Deserialize)]
#[serde(expecting = "an address object")]
struct RawAddr {
    ip: Option<String>,
    port: Option<u16>,
}

/// Decodes a connections envelope into its connections, in array order.
pub(super) fn decode(payload: &[u8]) -> Result<Decoded, DecodeError> {
    let raw: RawEnvelope = parse_json(CONTRACT, payload)?;
    let header = Header::check(CONTRACT, raw.v, raw.ts, raw.host, raw.agent_id)?;
    let connections = records(CONTRACT, "connections", raw.connections)?
        .into_iter()
        .enumerate()
        .map(|(i, c)| connection(&header, &format!("connections[{i}]"), c))
        .collect::<Result<_, _>>()?;
    Ok(Decoded::Connections(connections))
}

/// Checks one `connections[]` record.
fn connection(header: &Header, at: &str, raw: RawConnection) -> Result<Connection, DecodeError> {
    let family = required(CONTRACT, at, "family", raw.family)?;
    let socket_type = required(CONTRACT, at, "type", raw.socket_type)?;
    let protocol = protocol(family, socket_type).ok_or_else(|| {
        invalid(
            CONTRACT,
            format!("{at}: unsupported family {family} with type {socket_type}"),
        )
    })?;
    let local = required(CONTRACT, at, "localaddr", raw.localaddr)?;
    let (remote_ip, remote_port) = match raw.remoteaddr {
        Some(RawAddr { ip: Some(ip), port }) if !ip.is_empty() => {
            (Some(ip), Some(i32::from(port.unwrap_or(0))))
        }
        _ => (None, None),
    };
    Ok(Connection {
        ts: header.record_ts(CONTRACT, at, raw.ts.as_deref())?,
        host: header.host.clone(),
        pid: raw.pid.unwrap_or(0),
        process: non_empty(raw.process),
        protocol: protocol.to_owned(),
        local_ip: local.ip.unwrap_or_default(),
        local_port: i32::from(local.port.unwrap_or(0)),
        remote_ip,
        remote_port,
        status: non_empty(raw.status).unwrap_or_else(|| "NONE".to_owned()),
        agent_id: header.agent_id.clone(),
    })
}

/// `tcp`, `udp`, `tcp6`, `udp6` or `unix` from a socket's family and type.
fn protocol(family: u32, socket_type: u32) -> Option<&'static str> {
    match (family, socket_type) {
        (AF_INET, SOCK_STREAM) => Some("tcp"),
        (AF_INET, SOCK_DGRAM) => Some("udp"),
        (AF_INET6, SOCK_STREAM) => Some("tcp6"),
        (AF_INET6, SOCK_DGRAM) => Some("udp6"),
        (AF_UNIX, _) => Some("unix"),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::decode::test_support::{decode_records, wire_example};

    const SUBJECT: &str = "topology.connections";

    fn decode_str(payload: &str) -> Result<Vec<Connection>, String> {
        decode_records(SUBJECT, payload, |d| match d {
            Decoded::Connections(records) => Some(records),
            _ => None,
        })
    }

    #[test]
    fn wire_example_decodes() {
        let c = decode_str(wire_example(SUBJECT)).unwrap();
        assert_eq!(c.len(), 4);
        let ssh = &c[0];
        assert_eq!(ssh.protocol, "tcp");
        assert_eq!((ssh.local_ip.as_str(), ssh.local_port), ("10.0.0.5", 22));
        assert_eq!(
            (ssh.remote_ip.as_deref(), ssh.remote_port),
            (Some("10.0.0.9"), Some(51514))
        );
        assert_eq!(ssh.status, "ESTABLISHED");
        assert_eq!((ssh.pid, ssh.process.as_deref()), (812, Some("sshd")));
        assert_eq!(ssh.host, "node-01");
        let listen = &c[1];
        assert_eq!(
            (listen.protocol.as_str(), listen.status.as_str()),
            ("tcp6", "LISTEN")
        );
        assert_eq!((listen.remote_ip.clone(), listen.remote_port), (None, None));
        assert_eq!(listen.process, None);
        let dns = &c[2];
        assert_eq!(
            (dns.protocol.as_str(), dns.status.as_str()),
            ("udp", "NONE")
        );
        assert_eq!(dns.ts.to_rfc3339(), "2026-11-24T13:59:59+00:00");
        let unix = &c[3];
        assert_eq!(
            (unix.protocol.as_str(), unix.local_ip.as_str()),
            ("unix", "/run/systemd/journal/stdout")
        );
        assert_eq!((unix.pid, unix.remote_ip.clone()), (0, None));
    }

    #[test]
    fn protocols_follow_family_and_type() {
        assert_eq!(protocol(2, 1), Some("tcp"));
        assert_eq!(protocol(2, 2), Some("udp"));
        assert_eq!(protocol(10, 1), Some("tcp6"));
        assert_eq!(protocol(10, 2), Some("udp6"));
        assert_eq!(protocol(1, 1), Some("unix"));
        assert_eq!(protocol(1, 2), Some("unix"));
        assert_eq!(protocol(2, 3), None);
        assert_eq!(protocol(17, 1), None);
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let env =
            |c: &str| format!(r#"{{"ts":"2026-11-24T14:00:00Z","host":"n","connections":[{c}]}}"#);
        let local = r#""localaddr":{"ip":"10.0.0.5","port":22}"#;
        let cases = [
            (env(&format!(r#"{{"type":1,{local}}}"#)), "invalid connections envelope: connections[0]: missing family"),
            (env(&format!(r#"{{"family":2,{local}}}"#)), "invalid connections envelope: connections[0]: missing type"),
            (env(r#"{"family":2,"type":1}"#), "invalid connections envelope: connections[0]: missing localaddr"),
            (env(&format!(r#"{{"family":2,"type":3,{local}}}"#)), "invalid connections envelope: connections[0]: unsupported family 2 with type 3"),
            (r#"{"ts":"2026-11-24T14:00:00Z","host":"n"}"#.into(), "invalid connections envelope: missing connections (send [] when there is nothing)"),
            (r#"{"v":"1","ts":"2026-11-24T14:00:00Z","host":"n","connections":[]}"#.into(), "invalid connections envelope: unsupported envelope version \"1\" (this decoder reads 1)"),
        ];
        for (payload, want) in cases {
            assert_eq!(decode_str(&payload).unwrap_err(), want, "{payload}");
        }
        let err = decode_str(&env(
            r#"{"family":2,"type":1,"localaddr":{"ip":"a","port":70000}}"#,
        ))
        .unwrap_err();
        assert!(
            err.starts_with(
                "invalid JSON for connections envelope: invalid value: integer `70000`"
            ),
            "{err}"
        );
    }
}
