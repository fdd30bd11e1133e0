//! The XDP drops envelope (`security.xdp.drops`): packets the XDP firewall dropped,
//! aggregated per flow by the agent.

use std::net::IpAddr;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::envelope::{put, records, required_text, Header};
use super::{invalid, non_empty, parse_json, DecodeError};
use crate::model::{Decoded, Event, EventKind, Severity};

/// Contract name in errors.
pub(super) const CONTRACT: &str = "xdp drops envelope";

/// The envelope as it comes; every field optional so a missing one gets a precise error.
#[derive(Debug, Deserialize)]
#[serde(expecting = "an XDP drops envelope object")]
struct RawEnvelope {
    v: Option<Value>,
    ts: Option<String>,
    host: Option<String>,
    agent_id: Option<String>,
    drops: Option<Vec<RawDrop>>,
}

/// One `drops[]` record as it comes.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a drop object")]
struct RawDrop {
    ts: Option<String>,
    src_ip: Option<String>,
    dst_ip: Option<String>,
    src_port: Option<u16>,
    dst_port: Option<u16>,
    protocol: Option<String>,
    iface: Option<String>,
    reason: Option<String>,
    rule: Option<String>,
    packets: Option<u64>,
    bytes: Option<u64>,
}

/// Decodes an XDP drops envelope into one [`EventKind::XdpDrop`] event per record.
pub(super) fn decode(payload: &[u8]) -> Result<Decoded, DecodeError> {
    let raw: RawEnvelope = parse_json(CONTRACT, payload)?;
    let header = Header::check(CONTRACT, raw.v, raw.ts, raw.host, raw.agent_id)?;
    let events = records(CONTRACT, "drops", raw.drops)?
        .into_iter()
        .enumerate()
        .map(|(i, d)| event(&header, &format!("drops[{i}]"), d))
        .collect::<Result<_, _>>()?;
    Ok(Decoded::Events(events))
}

/// Checks one record and builds its event.
fn event(header: &Header, at: &str, raw: RawDrop) -> Result<Event, DecodeError> {
    let ts = header.record_ts(CONTRACT, at, raw.ts.as_deref())?;
    let src_ip = ip(at, "src_ip", raw.src_ip)?;
    let dst_ip = ip(at, "dst_ip", raw.dst_ip)?;
    let protocol = non_empty(raw.protocol);
    let iface = non_empty(raw.iface);
    let reason = non_empty(raw.reason);
    let rule = non_empty(raw.rule);
    let packets = raw.packets.unwrap_or(1);

    let mut message = format!("xdp dropped {packets}");
    if let Some(protocol) = &protocol {
        message.push(' ');
        message.push_str(protocol);
    }
    message.push_str(if packets == 1 {
        " packet "
    } else {
        " packets "
    });
    message.push_str(&endpoint(&src_ip, raw.src_port));
    message.push_str(" -> ");
    message.push_str(&endpoint(&dst_ip, raw.dst_port));
    if let Some(iface) = &iface {
        message.push_str(" on ");
        message.push_str(iface);
    }
    if let Some(reason) = &reason {
        message.push_str(" (");
        message.push_str(reason);
        message.push(')');
    }

    let mut attributes = Map::new();
    attributes.insert("src_ip".into(), src_ip.to_string().into());
    attributes.insert("dst_ip".into(), dst_ip.to_string().into());
    put(&mut attributes, "src_port", raw.src_port);
    put(&mut attributes, "dst_port", raw.dst_port);
    put(&mut attributes, "protocol", protocol);
    put(&mut attributes, "iface", iface);
    put(&mut attributes, "reason", reason.clone());
    put(&mut attributes, "rule", rule.clone());
    attributes.insert("packets".into(), packets.into());
    put(&mut attributes, "bytes", raw.bytes);
    header.put_agent_id(&mut attributes);

    Ok(Event {
        ts,
        host: Some(header.host.clone()),
        source: "xdp".into(),
        kind: EventKind::XdpDrop,
        severity: Severity::Low,
        rule: rule.or(reason),
        message,
        attributes,
    })
}

/// A required IP address field of record `at`.
fn ip(at: &str, field: &str, value: Option<String>) -> Result<IpAddr, DecodeError> {
    let text = required_text(CONTRACT, at, field, value)?;
    text.parse().map_err(|_| {
        invalid(
            CONTRACT,
            format!("{at}: {field} {text:?} is not an IP address"),
        )
    })
}

/// `ip:port`, `[ip6]:port`, or the bare address without a port.
fn endpoint(ip: &IpAddr, port: Option<u16>) -> String {
    match (ip, port) {
        (IpAddr::V6(v6), Some(port)) => format!("[{v6}]:{port}"),
        (ip, Some(port)) => format!("{ip}:{port}"),
        (ip, None) => ip.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::decode::test_support::{decode_events, wire_example};

    const SUBJECT: &str = "security.xdp.drops";

    fn decode_str(payload: &str) -> Result<Vec<Event>, String> {
        decode_events(SUBJECT, payload)
    }

    #[test]
    fn wire_example_decodes() {
        let events = decode_str(wire_example(SUBJECT)).unwrap();
        assert_eq!(events.len(), 2);
        let tor = &events[0];
        assert_eq!(tor.kind, EventKind::XdpDrop);
        assert_eq!((tor.source.as_str(), tor.severity), ("xdp", Severity::Low));
        assert_eq!(tor.host.as_deref(), Some("node-01"));
        assert_eq!(tor.rule.as_deref(), Some("deny-tor-exit"));
        assert_eq!(
            tor.message,
            "xdp dropped 12 tcp packets 198.51.100.7:4444 -> 10.0.0.5:22 on eth0 (blocklist)"
        );
        assert_eq!(tor.ts.to_rfc3339(), "2026-11-24T13:59:57.500+00:00");
        assert_eq!(
            Value::Object(tor.attributes.clone()),
            serde_json::json!({
                "src_ip": "198.51.100.7", "dst_ip": "10.0.0.5", "src_port": 4444, "dst_port": 22,
                "protocol": "tcp", "iface": "eth0", "reason": "blocklist", "rule": "deny-tor-exit",
                "packets": 12, "bytes": 840, "agent_id": "agent-1"
            })
        );
        let icmp = &events[1];
        assert_eq!(
            icmp.message,
            "xdp dropped 1 icmp6 packet 2001:db8::7 -> 2001:db8::5 on eth0 (rate_limit)"
        );
        assert_eq!(
            icmp.rule.as_deref(),
            Some("rate_limit"),
            "no rule: the reason"
        );
        assert_eq!(icmp.ts.to_rfc3339(), "2026-11-24T14:00:00+00:00");
        assert!(!icmp.attributes.contains_key("src_port"));
    }

    #[test]
    fn endpoints_bracket_ipv6() {
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(endpoint(&v6, Some(443)), "[2001:db8::1]:443");
        assert_eq!(endpoint(&v6, None), "2001:db8::1");
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(endpoint(&v4, Some(53)), "192.0.2.1:53");
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let env = |d: &str| format!(r#"{{"ts":"2026-11-24T14:00:00Z","host":"n","drops":[{d}]}}"#);
        let cases = [
            (
                env(r#"{"dst_ip":"10.0.0.5"}"#),
                "invalid xdp drops envelope: drops[0]: missing src_ip",
            ),
            (
                env(r#"{"src_ip":"10.0.0.5"}"#),
                "invalid xdp drops envelope: drops[0]: missing dst_ip",
            ),
            (
                env(r#"{"src_ip":"10.0.0.500","dst_ip":"10.0.0.5"}"#),
                "invalid xdp drops envelope: drops[0]: src_ip \"10.0.0.500\" is not an IP address",
            ),
            (
                r#"{"ts":"2026-11-24T14:00:00Z","host":"n"}"#.into(),
                "invalid xdp drops envelope: missing drops (send [] when there is nothing)",
            ),
            (
                r#"{"v":2,"ts":"2026-11-24T14:00:00Z","host":"n","drops":[]}"#.into(),
                "invalid xdp drops envelope: unsupported envelope version 2 (this decoder reads 1)",
            ),
            (
                r#"{"ts":"2026-11-24T14:00:00Z","drops":[]}"#.into(),
                "invalid xdp drops envelope: missing host",
            ),
        ];
        for (payload, want) in cases {
            assert_eq!(decode_str(&payload).unwrap_err(), want, "{payload}");
        }
        assert!(
            decode_str(r#"{"ts":"2026-11-24T14:00:00Z","host":"n","drops":[]}"#)
                .unwrap()
                .is_empty()
        );
    }
}
