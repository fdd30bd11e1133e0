//! `SIMILAR_TO`: rank events by the meaning of a text.
//!
//! 1. Embed the text with the same model the vectors projection used.
//! 2. Candidates: none given (no filter) → the HNSW index over every distinct
//!    embedding text, the nearest texts' events newest first (clump members scored
//!    from the server's [`ClumpCache`], which a task fills after the search with
//!    the clumps it missed).
//!    Otherwise the filter's matches (from the search index, or the embedded ones
//!    from SQL), counted up to `exact_max + 1`:
//!    - at most `exact_max` → an exact cosine scan over their texts' vectors: no
//!      candidate is ever lost to the approximate index;
//!    - more → HNSW over every text with a raised `ef_search`, the nearest texts'
//!      events (up to [`MAX_RECHECKED`]) re-checked against the filter; the
//!      neighbourhood doubles until `k` survive or it reaches [`MAX_NEIGHBOURHOOD`].
//! 3. Rows by `(ts, id)` from PostgreSQL, most similar first, with `similarity`.
//!
//! The answer's `semantic` part says which path ran and why.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use palisade_core::clumps::ClumpCache;
use palisade_core::search::SearchIndex;
use palisade_core::vectors::{self, CandidateEvents, Neighbour, TextKey};
use palisade_embeddings::Embedder;
use palisade_srql::{Candidates, Compiled, SimilarTo};
use serde::Serialize;
use serde_json::Value;
use tantivy::query::Query;
use uuid::Uuid;

use super::{arguments, db_error, fetch_json, KeyArray, QueryEngine, QueryError};

/// The most texts one HNSW search fetches for re-checking.
pub const MAX_NEIGHBOURHOOD: u32 = 1000;

/// The most events of those texts one re-check looks at (a text such as one alert
/// fired on every host can have thousands).
pub const MAX_RECHECKED: u32 = 20_000;

/// What `SIMILAR_TO` runs with.
#[derive(Debug, Clone)]
pub struct SemanticSearch {
    /// Embeds the query text; the same model as the stored vectors.
    pub embedder: Embedder,
    /// Candidates up to which the ranking is an exact scan.
    pub exact_max: u32,
    /// `hnsw.ef_search` of an unfiltered search (at least `k`).
    pub ef_search: u32,
    /// Clumps' member vectors kept in memory between searches; `None`: PostgreSQL
    /// scores the members.
    pub clumps: Option<Arc<ClumpCache>>,
}

/// How a `SIMILAR_TO` answer was ranked.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SemanticReport {
    /// `hnsw` or `exact`.
    pub ranking: &'static str,
    /// Why that ranking.
    pub reason: String,
    /// Candidates the filter matched (a SQL filter counts only the events that
    /// have a vector; the search index counts every match), counted up to
    /// `exact_max + 1` (so that value means "more than the threshold"); absent
    /// without a filter.
    pub candidates: Option<u64>,
    /// Nearest texts the HNSW search fetched (HNSW only).
    pub neighbourhood: Option<u32>,
    /// Events of those texts re-checked against the filter (HNSW with a filter
    /// only).
    pub rechecked: Option<u64>,
    /// The model the query text was embedded with.
    pub model: String,
}

impl QueryEngine {
    /// Runs a `SIMILAR_TO` query.
    pub(super) async fn execute_semantic(
        &self,
        compiled: &Compiled,
        similar: &SimilarTo,
    ) -> Result<(Vec<Value>, SemanticReport), QueryError> {
        let semantic = self.semantic.as_ref().ok_or_else(|| {
            QueryError::NotYetExecutable(
                "SIMILAR_TO needs the embedding model, and this server runs without it \
                 (start it with the model converted: `scripts/stack.sh model`, and without \
                 `--vectors=false`)"
                    .into(),
            )
        })?;
        let embedder = semantic.embedder.clone();
        let text = similar.text.clone();
        let query_vector = tokio::task::spawn_blocking(move || embedder.embed(&text))
            .await
            .map_err(|e| QueryError::Internal(format!("embedding task: {e}")))?
            .map_err(|e| QueryError::Internal(format!("embedding the query text: {e}")))?;
        let model = semantic.embedder.model_id();
        let k = similar.k;
        let exact_max = semantic.exact_max;

        let mut tx = self.read_only().await?;
        let (neighbours, report) = match &similar.candidates {
            Candidates::All => {
                let ef = semantic.ef_search.max(k);
                let found =
                    vectors::nearest(&mut tx, semantic.clumps.as_deref(), &query_vector, k, ef, k)
                        .await
                        .map_err(store_error)?;
                let report = SemanticReport {
                    ranking: "hnsw",
                    reason: "no filter: HNSW over every embedded text, the nearest \
                             texts' events newest first"
                        .into(),
                    candidates: None,
                    neighbourhood: Some(ef),
                    rechecked: None,
                    model,
                };
                (found, report)
            }
            candidates => {
                let matches = match candidates {
                    Candidates::Search => {
                        let query = self.search_query(compiled)?;
                        self.search_candidates(query, exact_max).await?
                    }
                    Candidates::Sql { sql, params, .. } => {
                        let mut args = arguments(&[], params)?;
                        sqlx::Arguments::add(&mut args, i64::from(exact_max) + 1)
                            .map_err(|e| QueryError::Internal(e.to_string()))?;
                        let rows =
                            sqlx::query_as_with::<_, (DateTime<Utc>, Uuid, Vec<u8>), _>(sql, args)
                                .fetch_all(&mut *tx)
                                .await
                                .map_err(db_error)?;
                        if rows.len() > exact_max as usize {
                            Matches::Many
                        } else {
                            Matches::FewWithTexts(
                                rows.into_iter()
                                    .filter_map(|(ts, id, key)| {
                                        TextKey::from_stored(&key).map(|key| (ts, id, key))
                                    })
                                    .collect(),
                            )
                        }
                    }
                    Candidates::All => unreachable!("handled above"),
                };
                let few = match &matches {
                    Matches::Few(ids) => Some(CandidateEvents::Ids(ids)),
                    Matches::FewWithTexts(events) => Some(CandidateEvents::Keyed(events)),
                    Matches::Many => None,
                };
                if let Some(few) = few {
                    let count = few.len() as u64;
                    let found = vectors::nearest_among(&mut tx, &query_vector, few, k)
                        .await
                        .map_err(store_error)?;
                    let report = SemanticReport {
                        ranking: "exact",
                        reason: format!(
                            "{count} candidates ≤ {exact_max}: exact cosine scan over their \
                             texts' vectors"
                        ),
                        candidates: Some(count),
                        neighbourhood: None,
                        rechecked: None,
                        model,
                    };
                    (found, report)
                } else {
                    let (found, neighbourhood, rechecked) = self
                        .hnsw_rechecked(&mut tx, compiled, similar, &query_vector, semantic)
                        .await?;
                    let report = SemanticReport {
                        ranking: "hnsw",
                        reason: format!(
                            "more than {exact_max} candidates: the {neighbourhood} nearest \
                             texts by HNSW, their {rechecked} events re-checked against the \
                             filter"
                        ),
                        candidates: Some(u64::from(exact_max) + 1),
                        neighbourhood: Some(neighbourhood),
                        rechecked: Some(rechecked),
                        model,
                    };
                    (found, report)
                }
            }
        };

        let times: Vec<DateTime<Utc>> = neighbours.iter().map(|n| n.ts).collect();
        let ids: Vec<Uuid> = neighbours.iter().map(|n| n.id).collect();
        let mut rows = fetch_json(
            &mut tx,
            &similar.rows_sql,
            &[KeyArray::Ts(times), KeyArray::Id(ids)],
            &[],
            &compiled.columns,
        )
        .await?;
        tx.commit().await.map_err(db_error)?;
        if let Some(cache) = semantic.clumps.as_ref().filter(|c| c.has_wanted()) {
            self.fill_clump_cache(Arc::clone(cache));
        }
        // A vector whose event row is not committed yet has no row: drop it.
        let similarity: std::collections::HashMap<String, f64> = neighbours
            .iter()
            .map(|n| (n.id.to_string(), n.similarity))
            .collect();
        for row in &mut rows {
            let id = row.get("id").and_then(Value::as_str).map(str::to_owned);
            if let (Some(id), Value::Object(map)) = (id, row) {
                if let Some(s) = similarity.get(&id) {
                    map.insert("similarity".into(), Value::from(*s));
                }
            }
        }
        Ok((rows, report))
    }

    /// Reads the clumps this search scored in PostgreSQL into `cache`, off the
    /// search path, so the next searches score them in memory.
    fn fill_clump_cache(&self, cache: Arc<ClumpCache>) {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            match vectors::fill_clump_cache(&pool, &cache).await {
                Ok(read) if read > 0 => {
                    let held = cache.stats();
                    tracing::debug!(
                        read,
                        clumps = held.clumps,
                        members = held.members,
                        bytes = held.bytes,
                        "clump cache filled"
                    );
                }
                Ok(_) => {}
                // The searches go on scoring those clumps in PostgreSQL.
                Err(error) => tracing::warn!(%error, "filling the clump cache"),
            }
        });
    }

    /// The tantivy query of a search-path compile.
    fn search_query(&self, compiled: &Compiled) -> Result<Box<dyn Query>, QueryError> {
        let tree = compiled.search.as_ref().ok_or_else(|| {
            QueryError::Internal("search candidates without a search query".into())
        })?;
        self.translate(tree)
    }

    /// The events the index matches: their keys when there are at most `cap`
    /// (counting first is cheaper than reading keys the HNSW path does not need).
    async fn search_candidates(
        &self,
        query: Box<dyn Query>,
        cap: u32,
    ) -> Result<Matches, QueryError> {
        let index: Arc<SearchIndex> = Arc::clone(&self.index);
        let cap = cap as usize;
        tokio::task::spawn_blocking(move || {
            let (_, few) = index.count_up_to(query.as_ref(), cap)?;
            if !few {
                return Ok(Matches::Many);
            }
            let page = index.collect_keys(query.as_ref(), cap)?;
            Ok(Matches::Few(page.hits.into_iter().map(|h| h.id).collect()))
        })
        .await
        .map_err(|e| QueryError::Internal(format!("search task: {e}")))?
        .map_err(|e: palisade_core::search::SearchError| {
            QueryError::Internal(format!("search: {e}"))
        })
    }

    /// HNSW over every text, the nearest texts' events (newest first, at most
    /// [`MAX_RECHECKED`]) re-checked against the filter; the neighbourhood doubles until
    /// `k` pass or it reaches [`MAX_NEIGHBOURHOOD`]. Returns the kept events, the
    /// last neighbourhood and how many events it re-checked.
    async fn hnsw_rechecked(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        compiled: &Compiled,
        similar: &SimilarTo,
        query_vector: &[f32],
        semantic: &SemanticSearch,
    ) -> Result<(Vec<Neighbour>, u32, u64), QueryError> {
        let k = similar.k;
        let mut neighbourhood = (k * 4).max(semantic.ef_search).min(MAX_NEIGHBOURHOOD);
        loop {
            let found = vectors::nearest(
                tx,
                semantic.clumps.as_deref(),
                query_vector,
                neighbourhood,
                neighbourhood,
                MAX_RECHECKED,
            )
            .await
            .map_err(store_error)?;
            let fetched = found.len() as u64;
            let passing = self.recheck(tx, compiled, similar, &found).await?;
            let kept: Vec<Neighbour> = found
                .into_iter()
                .filter(|n| passing.contains(&n.id))
                .take(k as usize)
                .collect();
            // Every text has at least one event, so fewer events than texts asked
            // for means every text was seen; a spent event budget means a larger
            // neighbourhood would re-check no more.
            let all_texts_seen = fetched < u64::from(neighbourhood);
            let budget_spent = fetched >= u64::from(MAX_RECHECKED);
            if kept.len() >= k as usize
                || budget_spent
                || all_texts_seen
                || neighbourhood >= MAX_NEIGHBOURHOOD
            {
                return Ok((kept, neighbourhood, fetched));
            }
            neighbourhood = (neighbourhood * 2).min(MAX_NEIGHBOURHOOD);
        }
    }

    /// The ids among `found` that match the query's filter.
    async fn recheck(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        compiled: &Compiled,
        similar: &SimilarTo,
        found: &[Neighbour],
    ) -> Result<HashSet<Uuid>, QueryError> {
        let ids: Vec<Uuid> = found.iter().map(|n| n.id).collect();
        match &similar.candidates {
            Candidates::Search => {
                let query = self.search_query(compiled)?;
                let index = Arc::clone(&self.index);
                let matched = tokio::task::spawn_blocking(move || index.filter_ids(query, &ids))
                    .await
                    .map_err(|e| QueryError::Internal(format!("search task: {e}")))?
                    .map_err(|e| QueryError::Internal(format!("search: {e}")))?;
                Ok(matched)
            }
            Candidates::Sql {
                recheck_sql,
                recheck_params,
                ..
            } => {
                let times: Vec<DateTime<Utc>> = found.iter().map(|n| n.ts).collect();
                let args = arguments(&[KeyArray::Ts(times), KeyArray::Id(ids)], recheck_params)?;
                let rows = sqlx::query_as_with::<_, (DateTime<Utc>, Uuid), _>(recheck_sql, args)
                    .fetch_all(&mut **tx)
                    .await
                    .map_err(db_error)?;
                Ok(rows.into_iter().map(|(_, id)| id).collect())
            }
            Candidates::All => Ok(ids.into_iter().collect()),
        }
    }
}

/// The candidates a filter matched: few enough to scan exactly, or more.
enum Matches {
    /// At most the exact-scan threshold: their ids.
    Few(Vec<Uuid>),
    /// At most the threshold, with the keys of the texts they were embedded by.
    FewWithTexts(Vec<(DateTime<Utc>, Uuid, TextKey)>),
    /// More than the threshold.
    Many,
}

pub(super) fn store_error(e: palisade_core::store::StoreError) -> QueryError {
    match e {
        palisade_core::store::StoreError::Database(e) => db_error(e),
        other => QueryError::Internal(other.to_string()),
    }
}
