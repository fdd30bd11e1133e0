//! An [`Event`] as a search document.

use std::net::{IpAddr, Ipv6Addr};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use tantivy::TantivyDocument;
use uuid::Uuid;

use super::schema::Fields;
use super::tokenizer::is_delimiter;
use crate::model::Event;

/// Most IP addresses kept per document (a log line listing thousands gives the first ones).
const MAX_IPS: usize = 64;

/// `ts` as the index stores it: microseconds, truncated like the `events` table's key.
pub fn index_time(ts: DateTime<Utc>) -> tantivy::DateTime {
    tantivy::DateTime::from_timestamp_micros(ts.timestamp_micros())
}

/// The event time of a stored `ts` ([`index_time`] back); `None` out of chrono's range.
pub fn event_time(ts: tantivy::DateTime) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_micros(ts.into_timestamp_micros())
}

/// The document of `event`, whose `events` row id is `id`
/// ([`crate::store::row_id`] of its message's stream position and its index in the message).
pub fn event_document(fields: &Fields, id: Uuid, event: &Event) -> TantivyDocument {
    let mut doc = TantivyDocument::new();
    doc.add_text(fields.id, id.hyphenated().to_string());
    doc.add_date(fields.ts, index_time(event.ts));
    if let Some(host) = &event.host {
        doc.add_text(fields.host, host);
    }
    doc.add_text(fields.source, &event.source);
    doc.add_text(fields.kind, event.kind.as_str());
    doc.add_text(fields.severity, event.severity.as_str());
    doc.add_u64(
        fields.severity_level,
        event.severity.level().unsigned_abs().into(),
    );
    if let Some(rule) = &event.rule {
        doc.add_text(fields.rule, rule);
    }
    if let Some(namespace) = namespace(&event.attributes) {
        doc.add_text(fields.namespace, namespace);
    }

    // Every full-text value goes to `text` and, as word pairs, to `text_pairs`.
    let add_text = |doc: &mut TantivyDocument, value: &str| {
        doc.add_text(fields.text, value);
        doc.add_text(fields.text_pairs, value);
    };
    let mut ips = Vec::new();
    add_text(&mut doc, &event.message);
    ips_in(&event.message, &mut ips);
    if let Some(rule) = &event.rule {
        add_text(&mut doc, rule);
    }
    let mut path = String::new();
    each_scalar(&event.attributes, &mut path, &mut |key, value| {
        ips_in(value, &mut ips);
        add_text(&mut doc, &format!("{key}={value}"));
    });
    for ip in ips {
        doc.add_ip_addr(fields.ip, ip);
    }
    if !event.attributes.is_empty() {
        doc.add_object(
            fields.attributes,
            event
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().into()))
                .collect(),
        );
    }
    doc
}

/// The Kubernetes namespace: attribute `k8s.ns.name` (flat, as Falco sends it, or
/// nested), else `namespace`.
fn namespace(attributes: &Map<String, Value>) -> Option<&str> {
    let nested = || attributes.get("k8s")?.get("ns")?.get("name");
    attributes
        .get("k8s.ns.name")
        .or_else(nested)
        .or_else(|| attributes.get("namespace"))
        .and_then(Value::as_str)
        .filter(|ns| !ns.is_empty())
}

/// Calls `f(dotted.key, text)` for every scalar inside `object` (array items under
/// their array's key; nulls skipped).
fn each_scalar(object: &Map<String, Value>, path: &mut String, f: &mut impl FnMut(&str, &str)) {
    for (key, value) in object {
        let len = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
        scalar(value, path, f);
        path.truncate(len);
    }
}

fn scalar(value: &Value, path: &mut String, f: &mut impl FnMut(&str, &str)) {
    match value {
        Value::Null => {}
        Value::String(s) => f(path, s),
        Value::Bool(b) => f(path, if *b { "true" } else { "false" }),
        Value::Number(n) => f(path, &n.to_string()),
        Value::Array(items) => {
            for item in items {
                scalar(item, path, f);
            }
        }
        Value::Object(object) => each_scalar(object, path, f),
    }
}

/// Appends every IP address written in `text` (alone, as `key=ip`, `user@ip`,
/// `ip:port`, `[v6]:port`), IPv4 as IPv4-mapped IPv6, without duplicates.
pub fn ips_in(text: &str, out: &mut Vec<Ipv6Addr>) {
    for token in text.split(is_delimiter) {
        for segment in token.split(['=', '@']) {
            if out.len() >= MAX_IPS {
                return;
            }
            let segment = segment.trim_end_matches(['.', ',']);
            if !segment.contains(['.', ':']) {
                continue;
            }
            let ip = segment
                .trim_end_matches(':')
                .parse::<IpAddr>()
                .ok()
                .or_else(|| {
                    let (host, port) = segment.rsplit_once(':')?;
                    port.chars().all(|c| c.is_ascii_digit()).then_some(())?;
                    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
                });
            if let Some(ip) = ip.map(|ip| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            }) {
                if !out.contains(&ip) {
                    out.push(ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ips(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        ips_in(text, &mut out);
        out.into_iter()
            .map(|ip| ip.to_canonical().to_string())
            .collect()
    }

    #[test]
    fn ips_are_found_in_their_usual_spellings() {
        assert_eq!(
            ips("from 10.0.2.2 port 22, fd.sip=192.168.1.7 root@172.16.0.1 10.0.0.9:8080 [fe80::1]:443 10.0.2.2."),
            ["10.0.2.2", "192.168.1.7", "172.16.0.1", "10.0.0.9", "fe80::1"]
        );
        assert!(ips("version 1.2 at 12:30:01 of 2024-01-01, 999.1.1.1").is_empty());
    }

    #[test]
    fn namespace_prefers_the_falco_field() {
        let attrs = json!({"k8s.ns.name": "prod", "namespace": "other"});
        assert_eq!(namespace(attrs.as_object().unwrap()), Some("prod"));
        let attrs = json!({"k8s": {"ns": {"name": "nested"}}});
        assert_eq!(namespace(attrs.as_object().unwrap()), Some("nested"));
        let attrs = json!({"namespace": "kube-system"});
        assert_eq!(namespace(attrs.as_object().unwrap()), Some("kube-system"));
        assert_eq!(namespace(json!({}).as_object().unwrap()), None);
    }

    #[test]
    fn scalars_are_visited_with_dotted_keys() {
        let attrs = json!({"proc": {"name": "bash", "pid": 7}, "tags": ["a", "b"], "x": null});
        let mut seen = Vec::new();
        each_scalar(
            attrs.as_object().unwrap(),
            &mut String::new(),
            &mut |k, v| {
                seen.push(format!("{k}={v}"));
            },
        );
        assert_eq!(seen, ["proc.name=bash", "proc.pid=7", "tags=a", "tags=b"]);
    }
}
