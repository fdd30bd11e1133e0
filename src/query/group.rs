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
    counts: HashMap<Vec<Option<u64>>, u64>,
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
        Ok(SegmentGroupCount {
            columns,
            counts: HashMap::new(),
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

impl SegmentCollector for SegmentGroupCount {
    type Fruit = Groups;

    fn collect(&mut self, doc: DocId, _score: Score) {
        let key: Vec<Option<u64>> = self
            .columns
            .iter()
            .map(|c| c.as_ref().and_then(|c| c.term_ords(doc).next()))
            .collect();
        *self.counts.entry(key).or_default() += 1;
    }

    fn harvest(self) -> Groups {
        let mut out = Groups::with_capacity(self.counts.len());
        for (ords, n) in self.counts {
            let key = ords
                .iter()
                .zip(&self.columns)
                .map(|(ord, column)| {
                    let (Some(ord), Some(column)) = (ord, column) else {
                        return None;
                    };
                    let mut text = String::new();
                    column.ord_to_str(*ord, &mut text).ok()?.then_some(text)
                })
                .collect();
            *out.entry(key).or_default() += n;
        }
        out
    }
}
