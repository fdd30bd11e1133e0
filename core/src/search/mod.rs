//! The search index: a tantivy index of every event, on local disk, one per node,
//! kept up to date from the streams like any other projection.
//!
//! Documents are keyed by the same id as the `events` row ([`crate::store::row_id`]),
//! so a hit joins back to PostgreSQL on `(ts, id)`. Each commit carries, in tantivy's
//! commit payload, the last stream sequence applied per stream ([`Checkpoint`]);
//! the projection resumes right after it, so restarts and replays neither lose nor
//! duplicate a document.
//!
//! ```
//! use palisade_core::search::{SearchIndex, IndexOptions};
//! use palisade_core::{decode::decode, model::Decoded, store::{Batch, Position}};
//! use tantivy::query::TermQuery;
//!
//! let index = SearchIndex::open_in_ram(IndexOptions::for_tests()).unwrap();
//! let alert = br#"{"output":"Sensitive file opened (user=root file=/etc/shadow)","priority":"Warning",
//!   "rule":"Read sensitive file untrusted","time":"2024-05-01T10:00:00Z","output_fields":{}}"#;
//! let decoded = decode("falco.warning.read_sensitive_file", alert).unwrap();
//! let position = Position { stream: "PALISADE_SECURITY".into(), seq: 1, subject: "falco.warning.x".into() };
//! index.add_batch(&Batch { records: vec![(position, decoded)], dead_letters: vec![] }).unwrap();
//! let checkpoint = index.commit().unwrap();
//! assert_eq!(checkpoint.get("PALISADE_SECURITY"), Some(1));
//!
//! let term = index.text_term("/etc/shadow").unwrap();
//! let page = index
//!     .search(&TermQuery::new(term, Default::default()), 10, 0, 10_000)
//!     .unwrap();
//! assert_eq!(page.total, 1);
//! ```

pub mod document;
pub mod schema;
pub mod tokenizer;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tantivy::collector::{Collector, Count, SegmentCollector, TopDocs};
use tantivy::directory::error::LockError;
use tantivy::directory::MmapDirectory;
use tantivy::query::{BooleanQuery, EnableScoring, Occur, Query, RangeQuery, TermQuery};
use tantivy::schema::{FieldType, IndexRecordOption, Schema};
use tantivy::snippet::SnippetGenerator;
use tantivy::{
    DocAddress, DocId, DocSet, Index, IndexReader, IndexWriter, Order, ReloadPolicy, Score,
    Searcher, SegmentOrdinal, SegmentReader, TantivyError, Term, TERMINATED,
};
use uuid::Uuid;

pub use schema::{names, Fields};
pub use tokenizer::{
    is_word, query_tokens, word_pair, PalisadeTokenizer, WordPairTokenizer, PAIRS_TOKENIZER_NAME,
    PAIR_SEPARATOR, TOKENIZER_NAME,
};

use crate::model::{Decoded, Event};
use crate::store::{row_id, Batch};

/// Why the search index could not do something.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// tantivy failed (I/O on the index files, a corrupt segment, a bad query).
    #[error("search index: {0}")]
    Tantivy(#[from] TantivyError),
    /// The index directory could not be created, read or emptied.
    #[error("search index directory {}: {source}", path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The directory holds an index with another schema (an older Palisade).
    #[error("the search index in {} has another schema; rebuild it with `palisade replay search` (the server does so itself at start)", path.display())]
    SchemaMismatch {
        /// The directory.
        path: PathBuf,
    },
    /// Another process writes this index.
    #[error("the search index in {} is in use by another process (stop `palisade up` first)", path.display())]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// The last commit's payload is not a checkpoint.
    #[error("the search index's commit payload is unreadable ({0}); rebuild it with `palisade replay search`")]
    Payload(String),
    /// Hits cannot be ordered by this field (not a fast date, u64 or keyword field).
    #[error("search hits cannot be sorted by {0:?}")]
    NotSortable(String),
}

/// How the index writer is sized, and how many threads one search may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexOptions {
    /// Memory the writer buffers documents in before it flushes a segment, in
    /// bytes, shared by its threads (at least 15 MB per thread).
    pub heap_bytes: usize,
    /// Indexing threads (default 1: the projection writes batch after batch).
    pub threads: usize,
    /// Threads one search spreads its segments over (default: the machine's cores).
    pub search_threads: usize,
}

impl Default for IndexOptions {
    fn default() -> Self {
        IndexOptions {
            heap_bytes: 64 * 1024 * 1024,
            threads: 1,
            search_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

impl IndexOptions {
    /// A small writer for unit tests and examples.
    pub fn for_tests() -> Self {
        IndexOptions {
            heap_bytes: 15_000_000,
            threads: 1,
            search_threads: 1,
        }
    }
}

/// Version of the payload format.
const PAYLOAD_VERSION: u32 = 1;

/// The last stream sequence applied to the index, per stream: what a commit
/// holds, and where the projection resumes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    streams: BTreeMap<String, u64>,
}

#[derive(Serialize, Deserialize)]
struct Payload {
    v: u32,
    #[serde(flatten)]
    checkpoint: Checkpoint,
}

impl Checkpoint {
    /// The last sequence of `stream` in the index, if any.
    pub fn get(&self, stream: &str) -> Option<u64> {
        self.streams.get(stream).copied()
    }

    /// Every stream and its last applied sequence.
    pub fn streams(&self) -> &BTreeMap<String, u64> {
        &self.streams
    }

    /// True when `seq` of `stream` is already applied.
    pub fn holds(&self, stream: &str, seq: u64) -> bool {
        self.get(stream).is_some_and(|last| seq <= last)
    }

    fn advance(&mut self, stream: &str, seq: u64) {
        match self.streams.get_mut(stream) {
            Some(last) => *last = (*last).max(seq),
            None => {
                self.streams.insert(stream.to_owned(), seq);
            }
        }
    }

    /// The commit payload holding this checkpoint.
    pub fn to_payload(&self) -> String {
        serde_json::to_string(&Payload {
            v: PAYLOAD_VERSION,
            checkpoint: self.clone(),
        })
        .unwrap_or_default()
    }

    /// Reads a commit payload; no payload is the empty checkpoint.
    pub fn from_payload(payload: Option<&str>) -> Result<Checkpoint, SearchError> {
        let Some(text) = payload.filter(|p| !p.is_empty()) else {
            return Ok(Checkpoint::default());
        };
        let payload: Payload =
            serde_json::from_str(text).map_err(|e| SearchError::Payload(e.to_string()))?;
        if payload.v != PAYLOAD_VERSION {
            return Err(SearchError::Payload(format!("version {}", payload.v)));
        }
        Ok(payload.checkpoint)
    }
}

/// What [`SearchIndex::add_batch`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddSummary {
    /// Documents added.
    pub documents: u64,
    /// Messages skipped because the index already holds them (redeliveries).
    pub skipped: u64,
}

/// One search hit: the key of its `events` row and, when ranked by relevance, its score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchHit {
    /// Event id.
    pub id: Uuid,
    /// Event time (microseconds).
    pub ts: DateTime<Utc>,
    /// BM25 score; `None` when the hits are ordered by a field or not at all.
    pub score: Option<Score>,
}

/// A page of hits and how many documents matched in all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchPage {
    /// Every matching document, not only this page; when `total_exact` is false,
    /// counting stopped here and there are more.
    pub total: usize,
    /// Whether `total` is the exact count or a lower bound.
    pub total_exact: bool,
    /// The page.
    pub hits: Vec<SearchHit>,
}

struct WriterState {
    writer: IndexWriter,
    /// What the last commit holds.
    committed: Checkpoint,
    /// What the index holds once the next commit succeeds.
    pending: Checkpoint,
    /// Documents added or deleted since the last commit.
    dirty: bool,
}

/// The search index: its writer (one per process; tantivy locks the directory)
/// and a reader that sees every commit.
pub struct SearchIndex {
    index: Index,
    reader: IndexReader,
    schema: Schema,
    fields: Fields,
    dir: Option<PathBuf>,
    writer: Mutex<WriterState>,
}

impl std::fmt::Debug for SearchIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchIndex")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl SearchIndex {
    /// Opens the index in `dir`, creating the directory and an empty index when
    /// there is none.
    pub fn open(dir: &Path, options: IndexOptions) -> Result<SearchIndex, SearchError> {
        let io = |source| SearchError::Io {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let (schema, _) = schema::build();
        let index = if dir.join("meta.json").exists() {
            let index = Index::open_in_dir(dir)?;
            if index.schema() != schema {
                return Err(SearchError::SchemaMismatch {
                    path: dir.to_owned(),
                });
            }
            index
        } else {
            let directory = MmapDirectory::open(dir).map_err(|e| io(std::io::Error::other(e)))?;
            Index::create(directory, schema, tantivy::IndexSettings::default())?
        };
        Self::with_index(index, Some(dir.to_owned()), options)
    }

    /// Opens the index in `dir` like [`SearchIndex::open`]; when it was written with
    /// another schema (an older Palisade), empties it instead, so the search projection,
    /// finding no checkpoint, rebuilds it from the streams. The flag says it was emptied.
    pub fn open_or_rebuild(
        dir: &Path,
        options: IndexOptions,
    ) -> Result<(SearchIndex, bool), SearchError> {
        match Self::open(dir, options) {
            Err(SearchError::SchemaMismatch { .. }) => Ok((Self::recreate(dir, options)?, true)),
            other => other.map(|index| (index, false)),
        }
    }

    /// Empties `dir` and creates a new index there (for `palisade replay search`).
    /// Fails with [`SearchError::Locked`] while another process writes the index.
    pub fn recreate(dir: &Path, options: IndexOptions) -> Result<SearchIndex, SearchError> {
        let io = |source| SearchError::Io {
            path: dir.to_owned(),
            source,
        };
        if dir.join("meta.json").exists() {
            // Take the writer lock once, so a running server's index is never wiped.
            let existing = Index::open_in_dir(dir)?;
            let probe: Result<IndexWriter, _> = existing.writer_with_num_threads(1, 15_000_000);
            drop(probe.map_err(|e| locked_or(e, dir))?);
        }
        if dir.exists() {
            for entry in std::fs::read_dir(dir).map_err(io)? {
                let path = entry.map_err(io)?.path();
                if path.is_dir() {
                    std::fs::remove_dir_all(&path).map_err(io)?;
                } else {
                    std::fs::remove_file(&path).map_err(io)?;
                }
            }
        }
        Self::open(dir, options)
    }

    /// A new index in memory (tests).
    pub fn open_in_ram(options: IndexOptions) -> Result<SearchIndex, SearchError> {
        let (schema, _) = schema::build();
        Self::with_index(Index::create_in_ram(schema), None, options)
    }

    fn with_index(
        mut index: Index,
        dir: Option<PathBuf>,
        options: IndexOptions,
    ) -> Result<SearchIndex, SearchError> {
        if options.search_threads > 1 {
            index.set_multithread_executor(options.search_threads)?;
        }
        index
            .tokenizers()
            .register(TOKENIZER_NAME, PalisadeTokenizer);
        index
            .tokenizers()
            .register(PAIRS_TOKENIZER_NAME, WordPairTokenizer);
        let (schema, fields) = schema::build();
        let committed = Checkpoint::from_payload(index.load_metas()?.payload.as_deref())?;
        let writer = index
            .writer_with_num_threads(
                options.threads.max(1),
                options.heap_bytes.max(15_000_000 * options.threads.max(1)),
            )
            .map_err(|e| match &dir {
                Some(path) => locked_or(e, path),
                None => SearchError::Tantivy(e),
            })?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        tracing::info!(dir = ?dir, checkpoint = ?committed.streams(), "search index open");
        Ok(SearchIndex {
            index,
            reader,
            schema,
            fields,
            dir,
            writer: Mutex::new(WriterState {
                writer,
                pending: committed.clone(),
                committed,
                dirty: false,
            }),
        })
    }

    fn writer(&self) -> MutexGuard<'_, WriterState> {
        self.writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The tantivy index (its tokenizers include `palisade`).
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Where the index lives (`None` in memory).
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// What the last commit holds: where the projection resumes.
    pub fn checkpoint(&self) -> Checkpoint {
        self.writer().committed.clone()
    }

    // ---- writing ----------------------------------------------------------------

    /// Adds the events of every message of `batch` that the index does not hold
    /// yet (stream sequence above the checkpoint), and moves the checkpoint over
    /// every message of the batch, dead letters and non-event messages included.
    /// Nothing is visible or durable before [`SearchIndex::commit`]. CPU work: call
    /// it off the async executor.
    pub fn add_batch(&self, batch: &Batch) -> Result<AddSummary, SearchError> {
        let mut state = self.writer();
        let mut summary = AddSummary::default();
        for (position, decoded) in &batch.records {
            if state.pending.holds(&position.stream, position.seq) {
                summary.skipped += 1;
                continue;
            }
            if let Decoded::Events(events) = decoded {
                summary.documents +=
                    self.add_events(&state, &position.stream, position.seq, events)?;
            }
            state.pending.advance(&position.stream, position.seq);
            state.dirty = true;
        }
        for dead in &batch.dead_letters {
            if state
                .pending
                .holds(&dead.position.stream, dead.position.seq)
            {
                summary.skipped += 1;
            } else {
                state
                    .pending
                    .advance(&dead.position.stream, dead.position.seq);
                state.dirty = true;
            }
        }
        Ok(summary)
    }

    fn add_events(
        &self,
        state: &WriterState,
        stream: &str,
        seq: u64,
        events: &[Event],
    ) -> Result<u64, SearchError> {
        for (index, event) in events.iter().enumerate() {
            let id = row_id(stream, seq, index);
            state
                .writer
                .add_document(document::event_document(&self.fields, id, event))?;
        }
        Ok(events.len() as u64)
    }

    /// Makes everything added or deleted so far durable and visible, with the
    /// checkpoint in the commit payload; returns that checkpoint. A no-op when
    /// nothing changed. Blocks (fsync): call it off the async executor.
    pub fn commit(&self) -> Result<Checkpoint, SearchError> {
        let mut state = self.writer();
        if !state.dirty {
            return Ok(state.committed.clone());
        }
        let payload = state.pending.to_payload();
        let mut prepared = state.writer.prepare_commit()?;
        prepared.set_payload(&payload);
        prepared.commit()?;
        state.committed = state.pending.clone();
        state.dirty = false;
        let checkpoint = state.committed.clone();
        drop(state);
        self.reader.reload()?;
        Ok(checkpoint)
    }

    /// Drops everything added since the last commit; the checkpoint goes back to
    /// the committed one, which it returns.
    pub fn rollback(&self) -> Result<Checkpoint, SearchError> {
        let mut state = self.writer();
        if state.dirty {
            state.writer.rollback()?;
            state.pending = state.committed.clone();
            state.dirty = false;
        }
        Ok(state.committed.clone())
    }

    /// Deletes every document older than `cutoff` and commits; returns how many
    /// were deleted. Retention: the maintenance loop passes the start of the
    /// oldest day the `events` table keeps.
    pub fn delete_before(&self, cutoff: DateTime<Utc>) -> Result<u64, SearchError> {
        let range = RangeQuery::new(
            Bound::Unbounded,
            Bound::Excluded(Term::from_field_date(
                self.fields.ts,
                document::index_time(cutoff),
            )),
        );
        let doomed = self.searcher().search(&range, &Count)? as u64;
        if doomed == 0 {
            return Ok(0);
        }
        {
            let mut state = self.writer();
            state.writer.delete_query(Box::new(range))?;
            state.dirty = true;
        }
        self.commit()?;
        Ok(doomed)
    }

    // ---- reading ----------------------------------------------------------------

    /// A searcher over the last commit.
    pub fn searcher(&self) -> Searcher {
        self.reader.searcher()
    }

    /// The schema (field names in [`names`]).
    pub fn schema(&self) -> Schema {
        self.schema.clone()
    }

    /// Handles of every field.
    pub fn fields(&self) -> &Fields {
        &self.fields
    }

    /// Query-side tokens of `text` for the `text` field: whole tokens only.
    pub fn query_tokens(&self, text: &str) -> Vec<String> {
        query_tokens(text)
    }

    /// The term of the `text` field for one query token (`None` when `text`
    /// holds no token; its first token when it holds several).
    pub fn text_term(&self, text: &str) -> Option<Term> {
        query_tokens(text)
            .first()
            .map(|t| Term::from_field_text(self.fields.text, t))
    }

    /// Documents in the last commit.
    pub fn doc_count(&self) -> u64 {
        self.searcher().num_docs()
    }

    /// Bytes the index takes: its files on disk, or its segments in memory.
    pub fn size_on_disk(&self) -> Result<u64, SearchError> {
        match &self.dir {
            Some(dir) => dir_size(dir).map_err(|source| SearchError::Io {
                path: dir.clone(),
                source,
            }),
            None => Ok(self
                .searcher()
                .space_usage()
                .map_err(|e| SearchError::Tantivy(e.into()))?
                .total()
                .get_bytes()),
        }
    }

    /// The page `[offset, offset + limit)` of hits, best BM25 score first, and the
    /// number of matches counted up to `count_cap`.
    ///
    /// The page is collected alone, so tantivy can skip blocks that cannot reach
    /// it (block-max WAND); counting every match of a common word would cost more
    /// than finding the best fifty, so the count stops at `count_cap`.
    pub fn search(
        &self,
        query: &dyn Query,
        limit: usize,
        offset: usize,
        count_cap: usize,
    ) -> Result<SearchPage, SearchError> {
        // One searcher for the page and its count, so both see the same commit.
        let searcher = self.searcher();
        let hits = Self::top_in(&searcher, query, limit, offset)?;
        page(&searcher, query, count_cap, hits)
    }

    /// The hits `[offset, offset + limit)`, best BM25 score first, without a count
    /// (see [`SearchIndex::count_up_to`]).
    pub fn top(
        &self,
        query: &dyn Query,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<SearchHit>, SearchError> {
        Self::top_in(&self.searcher(), query, limit, offset)
    }

    fn top_in(
        searcher: &Searcher,
        query: &dyn Query,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<SearchHit>, SearchError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let top = TopDocs::with_limit(limit)
            .and_offset(offset)
            .order_by_score();
        let docs = searcher.search(query, &top)?;
        Ok(hits_at(
            searcher,
            docs.into_iter()
                .map(|(score, address)| (address, Some(score))),
        )?)
    }

    /// The page `[offset, offset + limit)` of hits ordered by the fast field
    /// `field` (`ts`, `severity_level` or a keyword field), and the number of
    /// matches counted up to `count_cap`.
    pub fn search_sorted(
        &self,
        query: &dyn Query,
        sort: (&str, Order),
        limit: usize,
        offset: usize,
        count_cap: usize,
    ) -> Result<SearchPage, SearchError> {
        let searcher = self.searcher();
        let hits = self.top_sorted_in(&searcher, query, sort, limit, offset)?;
        page(&searcher, query, count_cap, hits)
    }

    /// The hits `[offset, offset + limit)` ordered by the fast field `field`, without
    /// a count (see [`SearchIndex::count_up_to`]).
    pub fn top_sorted(
        &self,
        query: &dyn Query,
        sort: (&str, Order),
        limit: usize,
        offset: usize,
    ) -> Result<Vec<SearchHit>, SearchError> {
        self.top_sorted_in(&self.searcher(), query, sort, limit, offset)
    }

    fn top_sorted_in(
        &self,
        searcher: &Searcher,
        query: &dyn Query,
        sort: (&str, Order),
        limit: usize,
        offset: usize,
    ) -> Result<Vec<SearchHit>, SearchError> {
        let (field, order) = sort;
        let entry = self
            .schema
            .get_field(field)
            .map(|f| self.schema.get_field_entry(f))
            .ok()
            .filter(|e| e.is_fast())
            .ok_or_else(|| SearchError::NotSortable(field.to_owned()))?;
        let top = TopDocs::with_limit(limit.max(1)).and_offset(offset);
        let addresses: Vec<DocAddress> = match entry.field_type() {
            _ if limit == 0 => Vec::new(),
            FieldType::Date(_) => {
                let c = top.order_by_fast_field::<tantivy::DateTime>(field, order);
                let docs = searcher.search(query, &c)?;
                docs.into_iter().map(|(_, a)| a).collect()
            }
            FieldType::U64(_) => {
                let c = top.order_by_fast_field::<u64>(field, order);
                let docs = searcher.search(query, &c)?;
                docs.into_iter().map(|(_, a)| a).collect()
            }
            FieldType::Str(_) => {
                let c = top.order_by_string_fast_field(field, order);
                let docs = searcher.search(query, &c)?;
                docs.into_iter().map(|(_, a)| a).collect()
            }
            _ => return Err(SearchError::NotSortable(field.to_owned())),
        };
        Ok(hits_at(searcher, addresses.into_iter().map(|a| (a, None)))?)
    }

    /// The keys of the matching documents, at most `cap` of them, in no
    /// particular order (for stats over full-text matches); `total` counts all.
    pub fn collect_keys(&self, query: &dyn Query, cap: usize) -> Result<SearchPage, SearchError> {
        Ok(self.searcher().search(query, &KeyCollector { cap })?)
    }

    /// A snippet generator for `query` over the `text` field; feed it the
    /// event's message (the index does not store text).
    pub fn snippet_generator(&self, query: &dyn Query) -> Result<SnippetGenerator, SearchError> {
        Ok(SnippetGenerator::create(
            &self.searcher(),
            query,
            self.fields.text,
        )?)
    }

    /// The best fragment of `text` for `query`, matches in `<b>…</b>`, HTML-escaped;
    /// empty when nothing in `text` matches.
    pub fn snippet(&self, query: &dyn Query, text: &str) -> Result<String, SearchError> {
        let snippet = self.snippet_generator(query)?.snippet(text);
        Ok(if snippet.is_empty() {
            String::new()
        } else {
            snippet.to_html()
        })
    }

    /// The number of documents matching `query`, counted up to `cap`: `(count,
    /// exact)`, where `exact` is false when there are more than `cap`.
    pub fn count_up_to(&self, query: &dyn Query, cap: usize) -> Result<(usize, bool), SearchError> {
        count_up_to(&self.searcher(), query, cap)
    }

    /// Which of `events` (time and id) match `query`: the re-check of approximate
    /// neighbours against a full-text filter.
    ///
    /// Each segment looks up only the ids whose time lies within its own (the
    /// index grows in time order, so a few segments hold most times), and the
    /// query's matches are walked once per segment, seeking the looked-up
    /// documents in order. A `TermSetQuery` over all ids would look every id up
    /// in every segment.
    pub fn filter_events(
        &self,
        query: &dyn Query,
        events: &[(DateTime<Utc>, Uuid)],
    ) -> Result<std::collections::HashSet<Uuid>, SearchError> {
        let searcher = self.searcher();
        let weight = query.weight(EnableScoring::disabled_from_searcher(&searcher))?;
        // Each event's time and id term once, whichever segments it is looked up in.
        let events: Vec<(tantivy::DateTime, Term, Uuid)> = events
            .iter()
            .map(|(at, id)| {
                let term = Term::from_field_text(self.fields.id, &id.hyphenated().to_string());
                (document::index_time(*at), term, *id)
            })
            .collect();
        let mut matched = std::collections::HashSet::new();
        for reader in searcher.segment_readers() {
            let ts = reader.fast_fields().date(names::TS)?;
            let (first, last) = (ts.min_value(), ts.max_value());
            let ids = reader.inverted_index(self.fields.id)?;
            let mut docs: Vec<(DocId, Uuid)> = Vec::new();
            for (at, term, id) in &events {
                if *at < first || *at > last {
                    continue;
                }
                let postings = ids
                    .read_postings(term, IndexRecordOption::Basic)
                    .map_err(TantivyError::from)?;
                // Every document of the id: a deleted copy may come first.
                if let Some(mut postings) = postings {
                    while postings.doc() != TERMINATED {
                        docs.push((postings.doc(), *id));
                        postings.advance();
                    }
                }
            }
            if docs.is_empty() {
                continue;
            }
            docs.sort_unstable();
            let alive = reader.alive_bitset();
            let mut scorer = weight.scorer(reader, 1.0)?;
            for (doc, id) in docs {
                if scorer.doc() > doc || !alive.is_none_or(|a| a.is_alive(doc)) {
                    continue;
                }
                if scorer.seek(doc) == doc {
                    matched.insert(id);
                }
            }
        }
        Ok(matched)
    }

    /// The newest `limit` documents matching `query` at or before `until`, newest
    /// first.
    ///
    /// Segments are read newest first (by their latest time), and reading stops
    /// once `limit` are held that are all newer than the next segment's latest:
    /// the index grows in time order, so the older segments' matches are never
    /// looked at.
    pub fn newest_until(
        &self,
        query: Box<dyn Query>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<SearchHit>, SearchError> {
        let until_time = document::index_time(until);
        let until = RangeQuery::new(
            Bound::Unbounded,
            Bound::Included(Term::from_field_date(self.fields.ts, until_time)),
        );
        let both = BooleanQuery::new(vec![(Occur::Must, query), (Occur::Must, Box::new(until))]);
        let searcher = self.searcher();
        let weight = both.weight(EnableScoring::disabled_from_searcher(&searcher))?;
        let mut segments = Vec::new();
        for (ord, reader) in searcher.segment_readers().iter().enumerate() {
            let ts = reader.fast_fields().date(names::TS)?;
            segments.push((ts.max_value().min(until_time), ord as SegmentOrdinal, ts));
        }
        segments.sort_by_key(|s| Reverse(s.0));
        // The newest `limit` held, the oldest of them on top.
        let mut newest: BinaryHeap<Reverse<(tantivy::DateTime, DocAddress)>> = BinaryHeap::new();
        for (latest, ord, ts) in segments {
            if limit == 0
                || (newest.len() >= limit && newest.peek().is_some_and(|o| o.0 .0 > latest))
            {
                break;
            }
            let reader = searcher.segment_reader(ord);
            let alive = reader.alive_bitset();
            let mut scorer = weight.scorer(reader, 1.0)?;
            let mut doc = scorer.doc();
            while doc != TERMINATED {
                if let Some(at) = ts
                    .first(doc)
                    .filter(|_| alive.is_none_or(|a| a.is_alive(doc)))
                {
                    let candidate = Reverse((at, DocAddress::new(ord, doc)));
                    if newest.len() < limit {
                        newest.push(candidate);
                    } else if newest.peek().is_some_and(|oldest| candidate < *oldest) {
                        newest.pop();
                        newest.push(candidate);
                    }
                }
                doc = scorer.advance();
            }
        }
        // Ascending `Reverse` is newest first.
        let addresses = newest
            .into_sorted_vec()
            .into_iter()
            .map(|Reverse((_, a))| (a, None));
        Ok(hits_at(&searcher, addresses)?)
    }

    /// The time of event `id`, if the index holds it (the partition key of its row).
    pub fn lookup_ts(&self, id: Uuid) -> Result<Option<DateTime<Utc>>, SearchError> {
        let term = Term::from_field_text(self.fields.id, &id.hyphenated().to_string());
        let query = TermQuery::new(term, IndexRecordOption::Basic);
        let page = self.search_sorted(&query, (names::TS, Order::Desc), 1, 0, 1)?;
        Ok(page.hits.first().map(|h| h.ts))
    }
}

/// Maps tantivy's lock error to [`SearchError::Locked`].
fn locked_or(error: TantivyError, dir: &Path) -> SearchError {
    match error {
        TantivyError::LockFailure(LockError::LockBusy, _) => SearchError::Locked {
            path: dir.to_owned(),
        },
        other => SearchError::Tantivy(other),
    }
}

fn dir_size(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// Reads a document's key from the `ts` and `id` fast fields.
struct KeyColumns {
    ts: tantivy::columnar::Column<tantivy::DateTime>,
    id: Option<tantivy::columnar::StrColumn>,
    buf: String,
}

impl KeyColumns {
    fn open(segment: &SegmentReader) -> tantivy::Result<KeyColumns> {
        let fast = segment.fast_fields();
        Ok(KeyColumns {
            ts: fast.date(names::TS)?,
            id: fast.str(names::ID)?,
            buf: String::new(),
        })
    }

    fn key(&mut self, doc: DocId, score: Option<Score>) -> tantivy::Result<Option<SearchHit>> {
        let (Some(ts), Some(ids)) = (self.ts.first(doc), &self.id) else {
            return Ok(None);
        };
        let Some(ord) = ids.term_ords(doc).next() else {
            return Ok(None);
        };
        self.buf.clear();
        ids.ord_to_str(ord, &mut self.buf)?;
        let (Ok(id), Some(ts)) = (self.buf.parse::<Uuid>(), document::event_time(ts)) else {
            return Ok(None);
        };
        Ok(Some(SearchHit { id, ts, score }))
    }
}

/// The keys of the documents at `addresses`, in order (documents without a key are
/// left out).
///
/// Each segment's ids are read in one pass over its `id` dictionary, in term order:
/// one lookup an id would decode the dictionary block again for each (20,000
/// newest matches: most of the read).
fn hits_at(
    searcher: &Searcher,
    addresses: impl Iterator<Item = (DocAddress, Option<Score>)>,
) -> tantivy::Result<Vec<SearchHit>> {
    let addresses: Vec<(DocAddress, Option<Score>)> = addresses.collect();
    let mut found: Vec<Option<SearchHit>> = vec![None; addresses.len()];
    let mut by_segment: BTreeMap<SegmentOrdinal, Vec<usize>> = BTreeMap::new();
    for (at, (address, _)) in addresses.iter().enumerate() {
        by_segment.entry(address.segment_ord).or_default().push(at);
    }
    for (segment, places) in by_segment {
        let columns = KeyColumns::open(searcher.segment_reader(segment))?;
        let Some(ids) = &columns.id else {
            continue;
        };
        // (id's term ordinal, place in `addresses`, time), in term order.
        let mut wanted: Vec<(u64, usize, DateTime<Utc>)> = places
            .into_iter()
            .filter_map(|at| {
                let doc = addresses[at].0.doc_id;
                let ts = document::event_time(columns.ts.first(doc)?)?;
                Some((ids.term_ords(doc).next()?, at, ts))
            })
            .collect();
        wanted.sort_unstable();
        let ords: Vec<u64> = wanted.iter().map(|w| w.0).collect();
        let mut next = wanted.iter();
        ids.dictionary().sorted_ords_to_term_cb(&ords, |term| {
            let Some(&(_, at, ts)) = next.next() else {
                return;
            };
            if let Some(id) = std::str::from_utf8(term).ok().and_then(|t| t.parse().ok()) {
                found[at] = Some(SearchHit {
                    id,
                    ts,
                    score: addresses[at].1,
                });
            }
        })?;
    }
    Ok(found.into_iter().flatten().collect())
}

/// A page of `hits` with the matches of `query` counted up to `count_cap`.
fn page(
    searcher: &Searcher,
    query: &dyn Query,
    count_cap: usize,
    hits: Vec<SearchHit>,
) -> Result<SearchPage, SearchError> {
    let (total, total_exact) = count_up_to(searcher, query, count_cap)?;
    Ok(SearchPage {
        total,
        total_exact,
        hits,
    })
}

/// Counts the live documents matching `query`, stopping once there are more than
/// `cap`: `(count, true)` when exact, `(cap, false)` when there are more.
fn count_up_to(
    searcher: &Searcher,
    query: &dyn Query,
    cap: usize,
) -> Result<(usize, bool), SearchError> {
    let weight = query.weight(EnableScoring::disabled_from_searcher(searcher))?;
    let mut count = 0usize;
    for reader in searcher.segment_readers() {
        let alive = reader.alive_bitset();
        let mut scorer = weight.scorer(reader, 1.0)?;
        let mut doc = scorer.doc();
        while doc != TERMINATED {
            if alive.is_none_or(|a| a.is_alive(doc)) {
                count += 1;
                if count > cap {
                    return Ok((cap, false));
                }
            }
            doc = scorer.advance();
        }
    }
    Ok((count, true))
}

/// Collects the keys of up to `cap` matching documents and counts them all.
struct KeyCollector {
    cap: usize,
}

struct KeySegmentCollector {
    columns: KeyColumns,
    cap: usize,
    total: usize,
    hits: Vec<SearchHit>,
    error: Option<TantivyError>,
}

impl Collector for KeyCollector {
    type Fruit = SearchPage;
    type Child = KeySegmentCollector;

    fn for_segment(
        &self,
        _segment_local_id: SegmentOrdinal,
        segment: &SegmentReader,
    ) -> tantivy::Result<KeySegmentCollector> {
        Ok(KeySegmentCollector {
            columns: KeyColumns::open(segment)?,
            cap: self.cap,
            total: 0,
            hits: Vec::new(),
            error: None,
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(
        &self,
        fruits: Vec<tantivy::Result<SearchPage>>,
    ) -> tantivy::Result<SearchPage> {
        let mut page = SearchPage::default();
        for fruit in fruits {
            let fruit = fruit?;
            page.total += fruit.total;
            let room = self.cap.saturating_sub(page.hits.len());
            page.hits.extend(fruit.hits.into_iter().take(room));
        }
        Ok(page)
    }
}

impl SegmentCollector for KeySegmentCollector {
    type Fruit = tantivy::Result<SearchPage>;

    fn collect(&mut self, doc: DocId, _score: Score) {
        self.total += 1;
        if self.hits.len() >= self.cap || self.error.is_some() {
            return;
        }
        match self.columns.key(doc, None) {
            Ok(Some(hit)) => self.hits.push(hit),
            Ok(None) => {}
            Err(e) => self.error = Some(e),
        }
    }

    fn harvest(self) -> tantivy::Result<SearchPage> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(SearchPage {
                total: self.total,
                total_exact: true,
                hits: self.hits,
            }),
        }
    }
}

#[cfg(test)]
mod tests;
