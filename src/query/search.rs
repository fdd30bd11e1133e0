//! Turns SRQL's search tree into a tantivy query over the search index's schema.
//!
//! SRQL names fields as the index does (`host`, `text`, `ts`, `ip`, …; attribute paths as
//! `attributes.<path>`); text is cut into terms with the index's own query-side tokenizer,
//! so a term is found exactly when the indexing side produced it.

use std::net::{IpAddr, Ipv6Addr};
use std::ops::Bound;

use palisade_core::search::{document, is_word, names, word_pair};
use palisade_srql::{SearchQuery, SearchValue};
use tantivy::query::{
    AllQuery, BooleanQuery, EmptyQuery, Occur, PhraseQuery, Query, RangeQuery, RegexQuery,
    TermQuery,
};
use tantivy::schema::{Field, FieldType, IndexRecordOption, Schema};
use tantivy::Term;

/// A search tree that does not fit the index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// SRQL named a field the index does not have (a catalogue/index mismatch).
    #[error("the search index has no field `{0}`")]
    UnknownField(String),
    /// A value of the wrong kind for the field, e.g. text for a number.
    #[error("`{value}` is not a valid value for `{field}`")]
    BadValue {
        /// The field.
        field: String,
        /// The value, as given.
        value: String,
    },
    /// Something the index cannot answer (for now).
    #[error("{0}")]
    Unsupported(String),
}

/// What the translator needs of the index: its schema and its query-side tokenizer.
pub struct Translator<'a> {
    schema: &'a Schema,
    tokenize: &'a dyn Fn(&str) -> Vec<String>,
}

impl std::fmt::Debug for Translator<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Translator").finish_non_exhaustive()
    }
}

/// Where a field name points: a schema field, or a path inside the attributes JSON.
enum Target {
    Field(Field, FieldType),
    Json(Field, String),
}

impl<'a> Translator<'a> {
    /// A translator over `schema` that cuts text with `tokenize`.
    pub fn new(schema: &'a Schema, tokenize: &'a dyn Fn(&str) -> Vec<String>) -> Self {
        Translator { schema, tokenize }
    }

    /// The tantivy query for `query`.
    pub fn translate(&self, query: &SearchQuery) -> Result<Box<dyn Query>, TranslateError> {
        Ok(match query {
            SearchQuery::All => Box::new(AllQuery),
            SearchQuery::Text { field, text } => self.text(field, text, false)?,
            SearchQuery::Phrase { field, text } => self.text(field, text, true)?,
            SearchQuery::Term { field, value } => self.term(field, value)?,
            SearchQuery::Wildcard { field, pattern } => self.wildcard(field, pattern)?,
            SearchQuery::Range {
                field,
                lower,
                upper,
            } => self.range(field, lower, upper)?,
            SearchQuery::IpCidr { field, cidr } => self.cidr(field, cidr)?,
            SearchQuery::And(parts) => self.boolean(parts, Occur::Must)?,
            SearchQuery::Or(parts) => self.boolean(parts, Occur::Should)?,
            SearchQuery::Not(inner) => Box::new(BooleanQuery::new(vec![
                (Occur::Must, Box::new(AllQuery) as Box<dyn Query>),
                (Occur::MustNot, self.translate(inner)?),
            ])),
        })
    }

    fn target(&self, name: &str) -> Result<Target, TranslateError> {
        if let Ok(field) = self.schema.get_field(name) {
            let kind = self.schema.get_field_entry(field).field_type().clone();
            return Ok(Target::Field(field, kind));
        }
        if let Some((root, path)) = name.split_once('.') {
            if let Ok(field) = self.schema.get_field(root) {
                if matches!(
                    self.schema.get_field_entry(field).field_type(),
                    FieldType::JsonObject(_)
                ) {
                    return Ok(Target::Json(field, path.to_owned()));
                }
            }
        }
        Err(TranslateError::UnknownField(name.to_owned()))
    }

    fn boolean(
        &self,
        parts: &[SearchQuery],
        occur: Occur,
    ) -> Result<Box<dyn Query>, TranslateError> {
        if parts.is_empty() {
            return Ok(if occur == Occur::Must {
                Box::new(AllQuery)
            } else {
                Box::new(EmptyQuery)
            });
        }
        let clauses = parts
            .iter()
            .map(|p| Ok((occur, self.translate(p)?)))
            .collect::<Result<Vec<_>, TranslateError>>()?;
        Ok(Box::new(BooleanQuery::new(clauses)))
    }

    /// Full text: every token must match (`phrase`: in order, adjacent).
    fn text(&self, name: &str, text: &str, phrase: bool) -> Result<Box<dyn Query>, TranslateError> {
        let (field, kind) = match self.target(name)? {
            Target::Field(field, kind) => (field, kind),
            Target::Json(field, path) => return Ok(json_term(field, &path, text)),
        };
        let tokenized = match &kind {
            FieldType::Str(options) => options
                .get_indexing_options()
                .is_some_and(|o| o.tokenizer() != "raw"),
            _ => false,
        };
        if !tokenized {
            return self.term(name, &SearchValue::Str(text.to_owned()));
        }
        let tokens = (self.tokenize)(text);
        if phrase && tokens.len() >= 2 && tokens.iter().all(|t| is_word(t)) {
            if let Some(pairs) = self.pairs_of(field) {
                return Ok(word_pair_phrase(pairs, &tokens));
            }
        }
        let terms: Vec<Term> = tokens
            .iter()
            .map(|t| Term::from_field_text(field, t))
            .collect();
        Ok(match terms.len() {
            0 => Box::new(EmptyQuery),
            1 => Box::new(TermQuery::new(
                terms
                    .into_iter()
                    .next()
                    .unwrap_or_else(|| Term::from_field_text(field, "")),
                IndexRecordOption::WithFreqs,
            )),
            _ if phrase => Box::new(PhraseQuery::new(terms)),
            _ => Box::new(BooleanQuery::new(
                terms
                    .into_iter()
                    .map(|t| {
                        (
                            Occur::Must,
                            Box::new(TermQuery::new(t, IndexRecordOption::WithFreqs))
                                as Box<dyn Query>,
                        )
                    })
                    .collect(),
            )),
        })
    }

    /// The word-pair field that answers phrases of plain words on `field` (`text` only).
    fn pairs_of(&self, field: Field) -> Option<Field> {
        (self.schema.get_field_name(field) == names::TEXT)
            .then(|| self.schema.get_field(names::TEXT_PAIRS).ok())
            .flatten()
    }

    fn term(&self, name: &str, value: &SearchValue) -> Result<Box<dyn Query>, TranslateError> {
        let (field, kind) = match self.target(name)? {
            Target::Field(field, kind) => (field, kind),
            Target::Json(field, path) => return Ok(json_value(field, &path, value)),
        };
        if let FieldType::Str(options) = &kind {
            let tokenized = options
                .get_indexing_options()
                .is_some_and(|o| o.tokenizer() != "raw");
            if tokenized {
                return self.text(name, &value_text(value), false);
            }
        }
        let term = self.value_term(name, field, &kind, value)?;
        Ok(Box::new(TermQuery::new(term, IndexRecordOption::Basic)))
    }

    fn value_term(
        &self,
        name: &str,
        field: Field,
        kind: &FieldType,
        value: &SearchValue,
    ) -> Result<Term, TranslateError> {
        let bad = || TranslateError::BadValue {
            field: name.to_owned(),
            value: value_text(value),
        };
        Ok(match (kind, value) {
            (FieldType::Str(_), v) => Term::from_field_text(field, &value_text(v)),
            (FieldType::U64(_), SearchValue::U64(n)) => Term::from_field_u64(field, *n),
            (FieldType::U64(_), SearchValue::I64(n)) => {
                Term::from_field_u64(field, u64::try_from(*n).map_err(|_| bad())?)
            }
            (FieldType::I64(_), SearchValue::I64(n)) => Term::from_field_i64(field, *n),
            (FieldType::I64(_), SearchValue::U64(n)) => {
                Term::from_field_i64(field, i64::try_from(*n).map_err(|_| bad())?)
            }
            (FieldType::F64(_), SearchValue::F64(x)) => Term::from_field_f64(field, *x),
            (FieldType::F64(_), SearchValue::I64(n)) => Term::from_field_f64(field, *n as f64),
            (FieldType::Date(_), SearchValue::Date(ts)) => {
                Term::from_field_date_for_search(field, document::index_time(*ts))
            }
            (FieldType::IpAddr(_), SearchValue::Str(s)) => {
                let ip: IpAddr = s.parse().map_err(|_| bad())?;
                Term::from_field_ip_addr(field, to_v6(ip))
            }
            _ => return Err(bad()),
        })
    }

    fn wildcard(&self, name: &str, pattern: &str) -> Result<Box<dyn Query>, TranslateError> {
        let (field, kind) = match self.target(name)? {
            Target::Field(field, kind @ FieldType::Str(_)) => (field, kind),
            _ => {
                return Err(TranslateError::Unsupported(format!(
                    "wildcards on `{name}` cannot be answered by the search index; \
                     drop the full-text part of the query to run it in PostgreSQL"
                )))
            }
        };
        let lowercase = match &kind {
            FieldType::Str(options) => options
                .get_indexing_options()
                .is_some_and(|o| o.tokenizer() != "raw"),
            _ => false,
        };
        let pattern = if lowercase {
            pattern.to_lowercase()
        } else {
            pattern.to_owned()
        };
        let mut regex = String::with_capacity(pattern.len() * 2);
        for c in pattern.chars() {
            match c {
                '*' => regex.push_str(".*"),
                '?' => regex.push('.'),
                c if c.is_alphanumeric() => regex.push(c),
                c => {
                    regex.push('\\');
                    regex.push(c);
                }
            }
        }
        RegexQuery::from_pattern(&regex, field)
            .map(|q| Box::new(q) as Box<dyn Query>)
            .map_err(|e| TranslateError::Unsupported(format!("wildcard `{pattern}`: {e}")))
    }

    fn range(
        &self,
        name: &str,
        lower: &Bound<SearchValue>,
        upper: &Bound<SearchValue>,
    ) -> Result<Box<dyn Query>, TranslateError> {
        let Target::Field(field, kind) = self.target(name)? else {
            return Err(TranslateError::Unsupported(format!(
                "ranges on `{name}` cannot be answered by the search index"
            )));
        };
        let bound = |b: &Bound<SearchValue>| -> Result<Bound<Term>, TranslateError> {
            Ok(match b {
                Bound::Included(v) => Bound::Included(self.value_term(name, field, &kind, v)?),
                Bound::Excluded(v) => Bound::Excluded(self.value_term(name, field, &kind, v)?),
                Bound::Unbounded => Bound::Unbounded,
            })
        };
        let (lower, upper) = (bound(lower)?, bound(upper)?);
        if matches!((&lower, &upper), (Bound::Unbounded, Bound::Unbounded)) {
            // tantivy reads the field from a bound; an open range is every document.
            return Ok(Box::new(AllQuery));
        }
        Ok(Box::new(RangeQuery::new(lower, upper)))
    }

    fn cidr(&self, name: &str, cidr: &str) -> Result<Box<dyn Query>, TranslateError> {
        let Target::Field(field, FieldType::IpAddr(_)) = self.target(name)? else {
            return Err(TranslateError::Unsupported(format!(
                "`{name}` is not an IP field of the search index"
            )));
        };
        let (low, high) = cidr_range(cidr).ok_or_else(|| TranslateError::BadValue {
            field: name.to_owned(),
            value: cidr.to_owned(),
        })?;
        Ok(Box::new(RangeQuery::new(
            Bound::Included(Term::from_field_ip_addr(field, low)),
            Bound::Included(Term::from_field_ip_addr(field, high)),
        )))
    }
}

/// A phrase of two or more plain words as word-pair terms: one term for two words (scored
/// like any term, so top-k search can skip blocks), else a phrase of consecutive pairs.
fn word_pair_phrase(pairs: Field, words: &[String]) -> Box<dyn Query> {
    let mut terms: Vec<Term> = words
        .windows(2)
        .map(|w| Term::from_field_text(pairs, &word_pair(&w[0], &w[1])))
        .collect();
    if terms.len() == 1 {
        let term = terms.remove(0);
        return Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs));
    }
    Box::new(PhraseQuery::new(terms))
}

fn json_term(field: Field, path: &str, value: &str) -> Box<dyn Query> {
    let mut term = Term::from_field_json_path(field, path, true);
    term.append_type_and_str(value);
    Box::new(TermQuery::new(term, IndexRecordOption::Basic))
}

/// A value at a JSON path: text as text; a number as every numeric type tantivy may
/// have indexed it as (JSON integers are `i64`, or `u64` when too large; others `f64`).
fn json_value(field: Field, path: &str, value: &SearchValue) -> Box<dyn Query> {
    let numeric = |append: &dyn Fn(&mut Term)| {
        let mut term = Term::from_field_json_path(field, path, true);
        append(&mut term);
        Box::new(TermQuery::new(term, IndexRecordOption::Basic)) as Box<dyn Query>
    };
    let mut alternatives: Vec<Box<dyn Query>> = Vec::new();
    match value {
        SearchValue::I64(n) => {
            alternatives.push(numeric(&|t| t.append_type_and_fast_value(*n)));
            if let Ok(u) = u64::try_from(*n) {
                alternatives.push(numeric(&|t| t.append_type_and_fast_value(u)));
            }
            alternatives.push(numeric(&|t| t.append_type_and_fast_value(*n as f64)));
        }
        SearchValue::U64(n) => {
            alternatives.push(numeric(&|t| t.append_type_and_fast_value(*n)));
            if let Ok(i) = i64::try_from(*n) {
                alternatives.push(numeric(&|t| t.append_type_and_fast_value(i)));
            }
        }
        SearchValue::F64(x) => alternatives.push(numeric(&|t| t.append_type_and_fast_value(*x))),
        _ => return json_term(field, path, &value_text(value)),
    }
    // Also as text, for agents that send numbers in strings.
    alternatives.push(json_term(field, path, &value_text(value)));
    Box::new(BooleanQuery::new(
        alternatives
            .into_iter()
            .map(|q| (Occur::Should, q))
            .collect(),
    ))
}

fn value_text(value: &SearchValue) -> String {
    match value {
        SearchValue::Str(s) => s.clone(),
        SearchValue::I64(n) => n.to_string(),
        SearchValue::U64(n) => n.to_string(),
        SearchValue::F64(x) => x.to_string(),
        SearchValue::Date(ts) => ts.to_rfc3339(),
    }
}

fn to_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// The first and last address of a CIDR block (a bare address is a /32 or /128), as
/// tantivy stores them (IPv4 mapped into IPv6).
pub fn cidr_range(cidr: &str) -> Option<(Ipv6Addr, Ipv6Addr)> {
    let (addr, prefix) = match cidr.split_once('/') {
        Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u32>().ok()?)),
        None => (cidr.parse::<IpAddr>().ok()?, None),
    };
    let (bits, prefix) = match addr {
        IpAddr::V4(_) => (32, prefix.unwrap_or(32)),
        IpAddr::V6(_) => (128, prefix.unwrap_or(128)),
    };
    if prefix > bits {
        return None;
    }
    let base = u128::from(to_v6(addr));
    // Host bits of the block, counted in the 128-bit mapped form.
    let host_bits = bits - prefix;
    let mask: u128 = if host_bits == 0 {
        0
    } else {
        (1u128 << host_bits) - 1
    };
    Some((Ipv6Addr::from(base & !mask), Ipv6Addr::from(base | mask)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::model::{Decoded, Event, EventKind, Severity};
    use palisade_core::search::{IndexOptions, PalisadeTokenizer, SearchIndex};
    use palisade_core::store::{Batch, Position};
    use tantivy::collector::DocSetCollector;
    use tantivy::tokenizer::{TokenStream, Tokenizer};

    /// Real text: the Falco fixture alerts (output and output fields) and the auth-log lines.
    fn fixture_events() -> Vec<Event> {
        let falco = include_str!("../../tests/fixtures/falco/alerts.jsonl");
        let auth = include_str!("../../tests/fixtures/logs/beats_system_auth_test.log");
        let event = |message: &str, attributes: serde_json::Map<String, serde_json::Value>| Event {
            ts: chrono::Utc::now(),
            host: Some("node-1".into()),
            source: "fixture".into(),
            kind: EventKind::Log,
            severity: Severity::Info,
            rule: None,
            message: message.to_owned(),
            attributes,
        };
        let mut events: Vec<Event> = falco
            .lines()
            .map(|line| {
                let alert: serde_json::Value = serde_json::from_str(line).expect("fixture line");
                let fields = alert["output_fields"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                event(alert["output"].as_str().unwrap_or(""), fields)
            })
            .collect();
        events.extend(auth.lines().map(|l| event(l, serde_json::Map::new())));
        events
    }

    /// Phrases to try on `text`: from each indexed value, every run of 2–4 adjacent
    /// positions with one plain word taken at each (whole tokens and parts alike), plus
    /// the same words out of order.
    fn phrases(text: &str) -> Vec<String> {
        let mut by_position: Vec<Vec<String>> = Vec::new();
        let mut tokenizer = PalisadeTokenizer;
        let mut stream = tokenizer.token_stream(text);
        while stream.advance() {
            let token = stream.token();
            if by_position.len() <= token.position {
                by_position.resize(token.position + 1, Vec::new());
            }
            if is_word(&token.text) {
                by_position[token.position].push(token.text.clone());
            }
        }
        let mut out = Vec::new();
        for start in 0..by_position.len() {
            for len in 2..=4 {
                let Some(run) = by_position.get(start..start + len) else {
                    continue;
                };
                if run.iter().any(Vec::is_empty) {
                    continue;
                }
                // One word at each position, picked so the runs cover parts and whole tokens.
                let words: Vec<&str> = run
                    .iter()
                    .enumerate()
                    .map(|(i, at)| at[(start + i) % at.len()].as_str())
                    .collect();
                out.push(words.join(" "));
                let mut reversed = words.clone();
                reversed.reverse();
                out.push(reversed.join(" "));
            }
        }
        out
    }

    /// Phrases of plain words are answered from the word pairs; on real fixture text they
    /// must match exactly the documents the positional phrase on `text` matches.
    #[test]
    fn word_pair_phrases_match_what_positional_phrases_match() {
        let events = fixture_events();
        let index = SearchIndex::open_in_ram(IndexOptions::for_tests()).expect("index");
        let position = Position {
            stream: "PALISADE_LOGS".into(),
            seq: 1,
            subject: "logs.auth".into(),
        };
        index
            .add_batch(&Batch {
                records: vec![(position, Decoded::Events(events.clone()))],
                dead_letters: Vec::new(),
            })
            .expect("add");
        index.commit().expect("commit");
        let schema = index.schema();
        let tokenize = |text: &str| index.query_tokens(text);
        let translator = Translator::new(&schema, &tokenize);
        let searcher = index.searcher();
        let text = index.fields().text;

        let (mut tried, mut found) = (0, 0);
        for event in &events {
            for phrase in phrases(&event.message) {
                let query = SearchQuery::Phrase {
                    field: names::TEXT.into(),
                    text: phrase.clone(),
                };
                let pairs = translator.translate(&query).expect("translates");
                let mut terms = Vec::new();
                pairs.query_terms(&mut |term, _| terms.push(term.field()));
                assert!(
                    terms.iter().all(|f| *f == index.fields().text_pairs),
                    "`{phrase}` is not answered from the word pairs"
                );
                let positional = PhraseQuery::new(
                    phrase
                        .split(' ')
                        .map(|w| Term::from_field_text(text, w))
                        .collect(),
                );
                let expected = searcher
                    .search(&positional, &DocSetCollector)
                    .expect("search");
                let got = searcher
                    .search(pairs.as_ref(), &DocSetCollector)
                    .expect("search");
                assert_eq!(got, expected, "`{phrase}`");
                tried += 1;
                found += usize::from(!expected.is_empty());
            }
        }
        // Both the matching and the non-matching side were exercised.
        assert!(found > 500 && tried - found > 500, "{found} of {tried}");
    }

    #[test]
    fn phrases_with_compound_tokens_stay_positional() {
        let (schema, fields) = palisade_core::search::schema::build();
        let tokenize = |text: &str| palisade_core::search::query_tokens(text);
        let translator = Translator::new(&schema, &tokenize);
        for (phrase, pairs) in [
            ("failed password", true),
            ("user not in sudoers", true),
            ("cat /etc/shadow", false),
            ("from 10.0.2.2", false),
            ("user=root", false),
        ] {
            let query = translator
                .translate(&SearchQuery::Phrase {
                    field: names::TEXT.into(),
                    text: phrase.into(),
                })
                .expect("translates");
            let mut on = Vec::new();
            query.query_terms(&mut |term, _| on.push(term.field()));
            let expected = if pairs {
                fields.text_pairs
            } else {
                fields.text
            };
            assert!(on.iter().all(|f| *f == expected), "`{phrase}`: {query:?}");
        }
    }

    #[test]
    fn cidr_blocks_cover_exactly_their_addresses() {
        let (lo, hi) = cidr_range("10.0.0.0/8").expect("valid");
        assert_eq!(
            lo,
            "10.0.0.0"
                .parse::<std::net::Ipv4Addr>()
                .expect("ip")
                .to_ipv6_mapped()
        );
        assert_eq!(
            hi,
            "10.255.255.255"
                .parse::<std::net::Ipv4Addr>()
                .expect("ip")
                .to_ipv6_mapped()
        );
        let (lo, hi) = cidr_range("198.51.100.7").expect("valid");
        assert_eq!(lo, hi);
        let (lo, hi) = cidr_range("2001:db8::/32").expect("valid");
        assert_eq!(lo, "2001:db8::".parse::<Ipv6Addr>().expect("ip"));
        assert_eq!(
            hi,
            "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"
                .parse::<Ipv6Addr>()
                .expect("ip")
        );
        assert!(cidr_range("10.0.0.0/33").is_none());
        assert!(cidr_range("not-an-ip/8").is_none());
    }
}
