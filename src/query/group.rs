//! `stats count() by <keyword fields>` over full-text matches, counted inside the
//! search index from its fast fields, so a common word's million hits never travel to
//! PostgreSQL.

use std::collections::HashMap;

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::StrColumn;
use tantivy::{DocId, Score, SegmentOrdinal, SegmentReader};

/// Group values (one per field; `None` when the document has no value) → count.
pub type Groups = HashMap<Vec<Option<String>>, u64>;

/// Counts matching documents per combination of the values of `fields` (fast `str`
/// fields of the index).
pub struct GroupCount {
    /// Index field names.
    pub fields: Vec<String>,
}

/// One segment's counts, by term ordinal.
pub struct SegmentGroupCount {
    columns: Vec<Option<StrColumn>>,
    counts: SegmentCounts,
    /// Scratch for a block's ordinals (one field).
    ords: Vec<Option<u64>>,
}

/// Counts keyed by term ordinals.
enum SegmentCounts {
    /// One field (the usual `by host`): no hashing per document.
    One(OrdCounts),
    /// Several fields: a count per combination.
    Many(HashMap<Vec<Option<u64>>, u64>),
}

/// A count per term ordinal of one field, and the documents without a value.
struct OrdCounts {
    by_ord: Vec<u64>,
    missing: u64,
}

impl OrdCounts {
    fn add(&mut self, ord: Option<u64>) {
        match ord.and_then(|o| self.by_ord.get_mut(o as usize)) {
            Some(n) => *n += 1,
            None => self.missing += 1,
        }
    }
}

impl Collector for GroupCount {
    type Fruit = Groups;
    type Child = SegmentGroupCount;

    fn for_segment(
        &self,
        _segment_local_id: SegmentOrdinal,
        segment: &SegmentReader,
    ) -> tantivy::Result<SegmentGroupCount> {
        let fast = segment.fast_fields();
        let columns = self
            .fields
            .iter()
            .map(|f| fast.str(f))
            .collect::<tantivy::Result<Vec<_>>>()?;
        let counts = match columns.as_slice() {
            [column] => SegmentCounts::One(OrdCounts {
                by_ord: vec![0; column.as_ref().map_or(0, |c| c.num_terms())],
                missing: 0,
            }),
            _ => SegmentCounts::Many(HashMap::new()),
        };
        Ok(SegmentGroupCount {
            columns,
            counts,
            ords: Vec::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Groups>) -> tantivy::Result<Groups> {
        let mut all = Groups::new();
        for fruit in fruits {
            for (key, n) in fruit {
                *all.entry(key).or_default() += n;
            }
        }
        Ok(all)
    }
}

impl SegmentGroupCount {
    fn term(&self, field: usize, ord: Option<u64>) -> Option<String> {
        let (Some(ord), Some(Some(column))) = (ord, self.columns.get(field)) else {
            return None;
        };
        let mut text = String::new();
        column.ord_to_str(ord, &mut text).ok()?.then_some(text)
    }
}

impl SegmentCollector for SegmentGroupCount {
    type Fruit = Groups;

    fn collect(&mut self, doc: DocId, _score: Score) {
        match &mut self.counts {
            SegmentCounts::One(counts) => {
                counts.add(self.columns[0].as_ref().and_then(|c| c.ords().first(doc)));
            }
            SegmentCounts::Many(counts) => {
                let key: Vec<Option<u64>> = self
                    .columns
                    .iter()
                    .map(|c| c.as_ref().and_then(|c| c.term_ords(doc).next()))
                    .collect();
                *counts.entry(key).or_default() += 1;
            }
        }
    }

    fn collect_block(&mut self, docs: &[DocId]) {
        let Self {
            columns,
            counts,
            ords,
        } = self;
        let (SegmentCounts::One(counts), [Some(column)]) = (counts, columns.as_slice()) else {
            for doc in docs {
                self.collect(*doc, 0.0);
            }
            return;
        };
        ords.clear();
        ords.resize(docs.len(), None);
        column.ords().first_vals(docs, ords);
        for ord in ords.iter() {
            counts.add(*ord);
        }
    }

    fn harvest(self) -> Groups {
        match &self.counts {
            SegmentCounts::One(counts) => {
                let mut out = Groups::new();
                for (ord, n) in counts.by_ord.iter().enumerate().filter(|(_, n)| **n > 0) {
                    *out.entry(vec![self.term(0, Some(ord as u64))]).or_default() += n;
                }
                if counts.missing > 0 {
                    *out.entry(vec![None]).or_default() += counts.missing;
                }
                out
            }
            SegmentCounts::Many(counts) => {
                let mut out = Groups::with_capacity(counts.len());
                for (ords, n) in counts {
                    let key = ords
                        .iter()
                        .enumerate()
                        .map(|(field, ord)| self.term(field, *ord))
                        .collect();
                    *out.entry(key).or_default() += n;
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::model::{Decoded, Event, EventKind, Severity};
    use palisade_core::search::{IndexOptions, SearchIndex};
    use palisade_core::store::{Batch, Position};
    use tantivy::query::AllQuery;

    fn event(host: Option<&str>, severity: Severity) -> Event {
        Event {
            ts: chrono::Utc::now(),
            host: host.map(str::to_owned),
            source: "auth".into(),
            kind: EventKind::Log,
            severity,
            rule: None,
            message: "Failed password for root".into(),
            attributes: serde_json::Map::new(),
        }
    }

    fn count(index: &SearchIndex, fields: &[&str]) -> Vec<(Vec<Option<String>>, u64)> {
        let collector = GroupCount {
            fields: fields.iter().map(|f| (*f).to_owned()).collect(),
        };
        let mut groups: Vec<_> = index
            .searcher()
            .search(&AllQuery, &collector)
            .expect("search")
            .into_iter()
            .collect();
        groups.sort();
        groups
    }

    #[test]
    fn counts_by_one_field_and_by_several_across_segments() {
        let index = SearchIndex::open_in_ram(IndexOptions::for_tests()).expect("index");
        let batches = [
            vec![
                event(Some("web-01"), Severity::High),
                event(Some("web-02"), Severity::Info),
                event(None, Severity::High),
            ],
            vec![
                event(Some("web-01"), Severity::High),
                event(Some("web-01"), Severity::Info),
            ],
        ];
        for (seq, events) in batches.into_iter().enumerate() {
            let position = Position {
                stream: "PALISADE_LOGS".into(),
                seq: seq as u64 + 1,
                subject: "logs.auth".into(),
            };
            index
                .add_batch(&Batch {
                    records: vec![(position, Decoded::Events(events))],
                    dead_letters: Vec::new(),
                })
                .expect("add");
            // A commit per batch: two segments, with their own term ordinals.
            index.commit().expect("commit");
        }
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(
            count(&index, &["host"]),
            [
                (vec![None], 1),
                (vec![s("web-01")], 3),
                (vec![s("web-02")], 1)
            ]
        );
        assert_eq!(
            count(&index, &["host", "severity"]),
            [
                (vec![None, s("high")], 1),
                (vec![s("web-01"), s("high")], 2),
                (vec![s("web-01"), s("info")], 1),
                (vec![s("web-02"), s("info")], 1),
            ]
        );
    }
}
