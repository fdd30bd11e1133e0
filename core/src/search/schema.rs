//! The index's schema: one document per event, field names shared with SRQL and
//! the query executor.
//!
//! | name | type | content |
//! |---|---|---|
//! | `id` | str, raw, indexed, FAST, stored | event id (the `events` row id, hyphenated lowercase) |
//! | `ts` | date, indexed, FAST, stored, µs | event time |
//! | `host` `source` `type` `severity` `rule` `namespace` | str, raw, indexed, FAST | exact keywords |
//! | `severity_level` | u64, indexed, FAST | 0 (info) ..= 4 (critical) |
//! | `text` | text, `palisade` tokenizer, positions | message, rule, every attribute as `key=value` |
//! | `text_pairs` | text, `palisade_pairs` tokenizer, positions | the same values as adjacent word pairs (phrases) |
//! | `ip` | ip, multi-valued, indexed, FAST | every IP address in the message and attributes |
//! | `attributes` | json, raw, expand dots | the attributes object (`proc.name`, `k8s.ns.name`, …) |

use tantivy::schema::{
    DateOptions, DateTimePrecision, Field, IndexRecordOption, IpAddrOptions, JsonObjectOptions,
    NumericOptions, Schema, TextFieldIndexing, TextOptions, FAST, INDEXED, STORED, STRING,
};

use super::tokenizer::{PAIRS_TOKENIZER_NAME, TOKENIZER_NAME};

/// Field names, as SRQL and the executor use them.
pub mod names {
    /// Event id.
    pub const ID: &str = "id";
    /// Event time.
    pub const TS: &str = "ts";
    /// Host.
    pub const HOST: &str = "host";
    /// Source.
    pub const SOURCE: &str = "source";
    /// Event kind (`falco_alert`, `log`, …).
    pub const TYPE: &str = "type";
    /// Severity name.
    pub const SEVERITY: &str = "severity";
    /// Severity ordinal.
    pub const SEVERITY_LEVEL: &str = "severity_level";
    /// Rule or signature.
    pub const RULE: &str = "rule";
    /// Kubernetes namespace.
    pub const NAMESPACE: &str = "namespace";
    /// Full text.
    pub const TEXT: &str = "text";
    /// Adjacent word pairs of the full text, which answer phrases of plain words.
    pub const TEXT_PAIRS: &str = "text_pairs";
    /// IP addresses.
    pub const IP: &str = "ip";
    /// Attributes object.
    pub const ATTRIBUTES: &str = "attributes";
}

/// Handles of every field of the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fields {
    /// `id`.
    pub id: Field,
    /// `ts`.
    pub ts: Field,
    /// `host`.
    pub host: Field,
    /// `source`.
    pub source: Field,
    /// `type`.
    pub kind: Field,
    /// `severity`.
    pub severity: Field,
    /// `severity_level`.
    pub severity_level: Field,
    /// `rule`.
    pub rule: Field,
    /// `namespace`.
    pub namespace: Field,
    /// `text`.
    pub text: Field,
    /// `text_pairs`.
    pub text_pairs: Field,
    /// `ip`.
    pub ip: Field,
    /// `attributes`.
    pub attributes: Field,
}

/// Builds the schema and its field handles.
pub fn build() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let keyword = STRING | FAST;
    let id = b.add_text_field(names::ID, STRING | FAST | STORED);
    let ts = b.add_date_field(
        names::TS,
        DateOptions::from(INDEXED | STORED | FAST).set_precision(DateTimePrecision::Microseconds),
    );
    let host = b.add_text_field(names::HOST, keyword.clone());
    let source = b.add_text_field(names::SOURCE, keyword.clone());
    let kind = b.add_text_field(names::TYPE, keyword.clone());
    let severity = b.add_text_field(names::SEVERITY, keyword.clone());
    let severity_level = b.add_u64_field(
        names::SEVERITY_LEVEL,
        NumericOptions::default() | INDEXED | FAST,
    );
    let rule = b.add_text_field(names::RULE, keyword.clone());
    let namespace = b.add_text_field(names::NAMESPACE, keyword);
    let text = b.add_text_field(
        names::TEXT,
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(TOKENIZER_NAME)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        ),
    );
    let text_pairs = b.add_text_field(
        names::TEXT_PAIRS,
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(PAIRS_TOKENIZER_NAME)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        ),
    );
    let ip = b.add_ip_addr_field(names::IP, IpAddrOptions::default().set_indexed().set_fast());
    let attributes = b.add_json_field(
        names::ATTRIBUTES,
        JsonObjectOptions::default()
            .set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer("raw")
                    .set_index_option(IndexRecordOption::Basic),
            )
            .set_expand_dots_enabled(),
    );
    let fields = Fields {
        id,
        ts,
        host,
        source,
        kind,
        severity,
        severity_level,
        rule,
        namespace,
        text,
        text_pairs,
        ip,
        attributes,
    };
    (b.build(), fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contract_name_is_a_field() {
        let (schema, fields) = build();
        let by_name = |n: &str| schema.get_field(n).ok();
        assert_eq!(by_name(names::ID), Some(fields.id));
        assert_eq!(by_name(names::TS), Some(fields.ts));
        assert_eq!(by_name(names::TYPE), Some(fields.kind));
        assert_eq!(by_name(names::SEVERITY_LEVEL), Some(fields.severity_level));
        assert_eq!(by_name(names::TEXT), Some(fields.text));
        assert_eq!(by_name(names::TEXT_PAIRS), Some(fields.text_pairs));
        assert_eq!(by_name(names::IP), Some(fields.ip));
        assert_eq!(by_name(names::ATTRIBUTES), Some(fields.attributes));
        for n in [
            names::HOST,
            names::SOURCE,
            names::SEVERITY,
            names::RULE,
            names::NAMESPACE,
        ] {
            let entry = schema.get_field_entry(by_name(n).expect(n));
            assert!(entry.is_fast() && entry.is_indexed(), "{n}");
        }
    }
}
