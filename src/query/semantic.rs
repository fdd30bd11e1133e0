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
//!      newest events (each text an even share of [`MAX_RECHECKED`], at least `k`)
//!      re-checked against the filter; the neighbourhood grows by the pass rate
//!      (at least doubling) until `k` survive or it reaches `max_neighbourhood`.
//!      Fewer than `k` survived (the matches lie far from the text): some
//!      matches are ranked exactly as well (a full-text filter's newest embedded
//!      ones up to the newest vector, or a SQL filter's first rows, up to
//!      [`SAMPLE_PAGES`] times `exact_max`), and the answer is the most
//!      similar of both. That ranking starts on a second connection as soon as a
//!      round comes back short, beside the rounds left.
//! 3. Rows by `(ts, id)` from PostgreSQL, most similar first, with `similarity`.
//!
//! The answer's `semantic` part says which path ran and why.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use palisade_core::clumps::ClumpCache;
use palisade_core::search::{SearchHit, SearchIndex};
use palisade_core::vectors::{self, CandidateEvents, Neighbour, TextKey};
use palisade_embeddings::Embedder;
use palisade_srql::{Candidates, Compiled, SimilarTo};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use serde::Serialize;
use serde_json::Value;
use tantivy::query::Query;
use uuid::Uuid;

use super::{arguments, db_error, fetch_json, read_index, KeyArray, QueryEngine, QueryError};

/// The most events of those texts one re-check looks at (a text such as one alert
/// fired on every host can have thousands).
pub const MAX_RECHECKED: u32 = 20_000;

/// How many times the exact-scan threshold of matches are ranked exactly when the
/// HNSW rounds come back short (a SQL filter's first rows), and how many pages of
/// that many a full-text filter's newest matches are read for embedded ones.
pub const SAMPLE_PAGES: usize = 5;

/// What `SIMILAR_TO` runs with.
#[derive(Debug, Clone)]
pub struct SemanticSearch {
    /// Embeds the query text; the same model as the stored vectors.
    pub embedder: Embedder,
    /// Candidates up to which the ranking is an exact scan.
    pub exact_max: u32,
    /// The most texts one HNSW search with a filter fetches for re-checking.
    pub max_neighbourhood: u32,
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
    /// When fewer than k of those passed: how many embedded events among the
    /// filter's matches were ranked exactly as well (of a full-text filter's newest
    /// up to the newest vector's time, of the first a SQL filter read), the answer
    /// being the most similar of both.
    pub sampled: Option<u64>,
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
        let started = std::time::Instant::now();
        let query_vector = tokio::task::spawn_blocking(move || embedder.embed(&text))
            .await
            .map_err(|e| QueryError::Internal(format!("embedding task: {e}")))?
            .map_err(|e| QueryError::Internal(format!("embedding the query text: {e}")))?;
        tracing::debug!(took_ms = ms_since(started), "similar_to: text embedded");
        let model = semantic.embedder.model_id();
        let k = similar.k;
        let exact_max = semantic.exact_max;

        let mut tx = self.read_only().await?;
        let (neighbours, report) = match &similar.candidates {
            Candidates::All => {
                let ef = semantic.ef_search.max(k);
                let found = vectors::nearest(
                    &mut tx,
                    semantic.clumps.as_deref(),
                    &query_vector,
                    k,
                    ef,
                    k,
                    k,
                )
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
                    sampled: None,
                    model,
                };
                (found, report)
            }
            candidates => {
                let started = std::time::Instant::now();
                let matches = match candidates {
                    Candidates::Search => {
                        let query = self.search_query(compiled)?;
                        self.search_candidates(query, exact_max).await?
                    }
                    Candidates::Sql { sql, params, .. } => {
                        let keyed =
                            sql_candidates(&mut tx, sql, params, u64::from(exact_max) + 1).await?;
                        if keyed.len() > exact_max as usize {
                            Matches::Many
                        } else {
                            Matches::FewWithTexts(keyed)
                        }
                    }
                    Candidates::All => unreachable!("handled above"),
                };
                tracing::debug!(
                    took_ms = ms_since(started),
                    few = !matches!(matches, Matches::Many),
                    "similar_to: filter's candidates counted"
                );
                let few = match &matches {
                    Matches::Few(ids) => Some(CandidateEvents::Ids(ids)),
                    Matches::FewWithTexts(events) => Some(CandidateEvents::Keyed(events)),
                    Matches::Many => None,
                };
                if let Some(few) = few {
                    let count = few.len() as u64;
                    let found = vectors::nearest_among(
                        &mut tx,
                        semantic.clumps.as_deref(),
                        &query_vector,
                        few,
                        k,
                    )
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
                        sampled: None,
                        model,
                    };
                    (found, report)
                } else {
                    // The sample that a short answer is filled from is ranked on its
                    // own connection beside the HNSW rounds, once the first round
                    // comes back short (it then usually stays short).
                    let (short, first_short) = tokio::sync::oneshot::channel();
                    let mut sample = {
                        let engine = self.clone();
                        let compiled = compiled.clone();
                        let query_vector = query_vector.clone();
                        AbortOnDrop(tokio::spawn(async move {
                            if first_short.await.is_err() {
                                return Ok::<_, QueryError>(SampleTask::NotWanted);
                            }
                            let Some(mut side) = engine.read_only_if_free().await? else {
                                return Ok(SampleTask::NoConnection);
                            };
                            let ranked = engine
                                .ranked_sample(&mut side, &compiled, &query_vector, k)
                                .await?;
                            side.commit().await.map_err(db_error)?;
                            Ok(SampleTask::Ranked(ranked))
                        }))
                    };
                    let Rechecked {
                        kept: mut found,
                        neighbourhood,
                        rechecked,
                        exhaustive,
                    } = self
                        .hnsw_rechecked(&mut tx, compiled, similar, &query_vector, semantic, short)
                        .await?;
                    let mut reason = format!(
                        "more than {exact_max} candidates: the {neighbourhood} nearest texts \
                         by HNSW, their {rechecked} events re-checked against the filter"
                    );
                    let mut sampled = None;
                    if found.len() < k as usize && !exhaustive {
                        // The filter's matches lie far from the text: some of them,
                        // ranked exactly, so that the answer is the nearest known, not
                        // short.
                        let passed = found.len();
                        let task = (&mut sample.0).await.map_err(|e| {
                            QueryError::Internal(format!("ranking a sample: {e}"))
                        })??;
                        let ranked = match task {
                            SampleTask::Ranked(ranked) => ranked,
                            SampleTask::NoConnection => {
                                tracing::debug!(
                                    "similar_to: no connection to spare, the sample is ranked \
                                     after the rounds"
                                );
                                self.ranked_sample(&mut tx, compiled, &query_vector, k)
                                    .await?
                            }
                            SampleTask::NotWanted => {
                                return Err(QueryError::Internal(
                                    "a short answer started no sample".into(),
                                ))
                            }
                        };
                        found = most_similar(found, ranked.neighbours, k);
                        let which = match similar.candidates {
                            Candidates::Search => "of the newest matches up to the newest vector",
                            _ => "of the first matches read",
                        };
                        reason.push_str(&format!(
                            "; {passed} passed, fewer than {k}, so the {} embedded events \
                             {which} were ranked exactly too",
                            ranked.events
                        ));
                        sampled = Some(ranked.events as u64);
                    }
                    let report = SemanticReport {
                        ranking: "hnsw",
                        reason,
                        candidates: Some(u64::from(exact_max) + 1),
                        neighbourhood: Some(neighbourhood),
                        rechecked: Some(rechecked),
                        sampled,
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

    /// Starts filling the clump cache in the background, the largest clumps
    /// first ([`vectors::warm_clump_cache`]), so that the first searches after a
    /// start score their members in memory too; searches meanwhile are answered
    /// as before. Nothing without a cache.
    pub fn warm_clump_cache(&self) {
        let Some(cache) = self.semantic.as_ref().and_then(|s| s.clumps.clone()) else {
            return;
        };
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            match vectors::warm_clump_cache(&pool, &cache).await {
                Ok(read) => {
                    let held = cache.stats();
                    tracing::info!(
                        read,
                        members = held.members,
                        bytes = held.bytes,
                        took_ms = started.elapsed().as_millis() as u64,
                        scan_level = palisade_core::clumps::scan_level(),
                        "clump cache warmed"
                    );
                }
                Err(error) => tracing::warn!(%error, "warming the clump cache"),
            }
        });
    }

    /// The clump cache's figures for `/metrics`, when there is a cache.
    pub fn clump_cache_metrics(&self) -> Option<ClumpCacheMetrics> {
        self.semantic
            .as_ref()
            .and_then(|s| s.clumps.clone())
            .map(ClumpCacheMetrics)
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
        read_index(move || {
            let (_, few) = index.count_up_to(query.as_ref(), cap)?;
            if !few {
                return Ok::<_, palisade_core::search::SearchError>(Matches::Many);
            }
            let page = index.collect_keys(query.as_ref(), cap)?;
            Ok(Matches::Few(page.hits.into_iter().map(|h| h.id).collect()))
        })
        .await
    }

    /// Of the newest `cap` events a full-text filter matches up to the newest
    /// vector's time, those that have a vector, with their text keys. Fewer than
    /// `k` of them: the next `cap` older matches too, and so on up to
    /// [`SAMPLE_PAGES`] pages (the newest matches of a common word can all be
    /// routine events the policy did not embed).
    async fn newest_search_candidates(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        compiled: &Compiled,
        cap: u32,
        k: u32,
    ) -> Result<Vec<KeyedEvent>, QueryError> {
        let newest_vector: Option<DateTime<Utc>> =
            sqlx::query_scalar("SELECT max(ts) FROM event_vectors")
                .fetch_one(&mut **tx)
                .await
                .map_err(db_error)?;
        let Some(mut until) = newest_vector else {
            return Ok(Vec::new());
        };
        let cap = cap.max(1) as usize;
        let mut sample = Vec::new();
        let mut seen: HashSet<Uuid> = HashSet::new();
        let (mut matches, mut pages, mut search_ms, mut lookup_ms) = (0, 0, 0.0, 0.0);
        while pages < SAMPLE_PAGES && sample.len() < k as usize {
            pages += 1;
            let query = self.search_query(compiled)?;
            let index = Arc::clone(&self.index);
            let started = std::time::Instant::now();
            let hits = read_index(move || index.newest_until(query, until, cap)).await?;
            search_ms += ms_since(started);
            let last_page = hits.len() < cap;
            let oldest = hits.last().map(|h| h.ts);
            // A page ends at the previous one's oldest time, so matches at that
            // very time come again.
            let fresh: Vec<&SearchHit> = hits.iter().filter(|h| seen.insert(h.id)).collect();
            matches += fresh.len();
            let started = std::time::Instant::now();
            sample.extend(embedded_matches(tx, fresh).await?);
            lookup_ms += ms_since(started);
            match oldest {
                _ if last_page => break,
                Some(oldest) if oldest < until => until = oldest,
                // A page of matches all at one time: step past it.
                _ => until -= chrono::Duration::microseconds(1),
            }
        }
        tracing::debug!(
            matches,
            pages,
            embedded = sample.len(),
            search_ms,
            lookup_ms,
            "similar_to: newest matches read"
        );
        Ok(sample)
    }

    /// Some of the filter's matches ranked exactly: a SQL filter's first
    /// [`SAMPLE_PAGES`] times `exact_max` (at least `k`) rows, or a full-text
    /// filter's newest embedded ones ([`Self::newest_search_candidates`]).
    async fn ranked_sample(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        compiled: &Compiled,
        query_vector: &[f32],
        k: u32,
    ) -> Result<RankedSample, QueryError> {
        let semantic = self.semantic.as_ref().ok_or_else(|| {
            QueryError::Internal("a sample ranked without the embedding model".into())
        })?;
        let cap = semantic.exact_max.max(k);
        let started = std::time::Instant::now();
        let sample = match compiled.similar.as_ref().map(|s| &s.candidates) {
            Some(Candidates::Sql { sql, params, .. }) => {
                let rows = SAMPLE_PAGES as u64 * u64::from(cap);
                sql_candidates(tx, sql, params, rows).await?
            }
            _ => self.newest_search_candidates(tx, compiled, cap, k).await?,
        };
        let neighbours = vectors::nearest_among(
            tx,
            semantic.clumps.as_deref(),
            query_vector,
            CandidateEvents::Keyed(&sample),
            k,
        )
        .await
        .map_err(store_error)?;
        tracing::debug!(
            sampled = sample.len(),
            took_ms = ms_since(started),
            "similar_to: matches ranked exactly"
        );
        Ok(RankedSample {
            events: sample.len(),
            neighbours,
        })
    }

    /// HNSW over every text, the nearest texts' newest events re-checked against
    /// the filter; the neighbourhood grows ([`next_neighbourhood`]) until `k` pass
    /// or it reaches `max_neighbourhood`.
    ///
    /// Each text gives at most its fair share of [`MAX_RECHECKED`] (never fewer
    /// than `k`, which alone can fill the answer), so that one alert fired on every
    /// host cannot spend the budget before the next texts are looked at; an event
    /// re-checked in one round is not re-checked in the next. `short` is told when
    /// a round first comes back with fewer than `k`.
    async fn hnsw_rechecked(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        compiled: &Compiled,
        similar: &SimilarTo,
        query_vector: &[f32],
        semantic: &SemanticSearch,
        short: tokio::sync::oneshot::Sender<()>,
    ) -> Result<Rechecked, QueryError> {
        let mut short = Some(short);
        let k = similar.k;
        let most = semantic.max_neighbourhood;
        let mut neighbourhood = (k * 4).max(semantic.ef_search).min(most);
        let mut checked: HashSet<Uuid> = HashSet::new();
        let mut passing: HashSet<Uuid> = HashSet::new();
        loop {
            let started = std::time::Instant::now();
            let per_text = events_per_text(k, neighbourhood);
            let found = vectors::nearest(
                tx,
                semantic.clumps.as_deref(),
                query_vector,
                neighbourhood,
                neighbourhood,
                per_text,
                MAX_RECHECKED,
            )
            .await
            .map_err(store_error)?;
            let unchecked: Vec<&Neighbour> =
                found.iter().filter(|n| !checked.contains(&n.id)).collect();
            let nearest_ms = ms_since(started);
            passing.extend(self.recheck(tx, compiled, similar, &unchecked).await?);
            tracing::debug!(
                neighbourhood,
                events = found.len(),
                unchecked = unchecked.len(),
                nearest_ms,
                recheck_ms = ms_since(started) - nearest_ms,
                "similar_to: HNSW round re-checked"
            );
            checked.extend(unchecked.iter().map(|n| n.id));
            let fetched = found.len() as u64;
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
            // No text can have had more events than its share.
            let exhaustive = all_texts_seen && fetched < u64::from(per_text);
            if kept.len() < k as usize && !exhaustive {
                if let Some(short) = short.take() {
                    // Its receiver lives until these rounds are over.
                    let _ = short.send(());
                }
            }
            if kept.len() >= k as usize || budget_spent || all_texts_seen || neighbourhood >= most {
                return Ok(Rechecked {
                    kept,
                    neighbourhood,
                    rechecked: checked.len() as u64,
                    exhaustive,
                });
            }
            neighbourhood = next_neighbourhood(neighbourhood, k, passing.len()).min(most);
        }
    }

    /// The ids among `found` that match the query's filter.
    async fn recheck(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        compiled: &Compiled,
        similar: &SimilarTo,
        found: &[&Neighbour],
    ) -> Result<HashSet<Uuid>, QueryError> {
        if found.is_empty() {
            return Ok(HashSet::new());
        }
        match &similar.candidates {
            Candidates::Search => {
                let query = self.search_query(compiled)?;
                let index = Arc::clone(&self.index);
                let events: Vec<(DateTime<Utc>, Uuid)> =
                    found.iter().map(|n| (n.ts, n.id)).collect();
                read_index(move || index.filter_events(query.as_ref(), &events)).await
            }
            Candidates::Sql {
                recheck_sql,
                recheck_params,
                ..
            } => {
                let times: Vec<DateTime<Utc>> = found.iter().map(|n| n.ts).collect();
                let ids: Vec<Uuid> = found.iter().map(|n| n.id).collect();
                let args = arguments(&[KeyArray::Ts(times), KeyArray::Id(ids)], recheck_params)?;
                let rows = sqlx::query_as_with::<_, (DateTime<Utc>, Uuid), _>(recheck_sql, args)
                    .fetch_all(&mut **tx)
                    .await
                    .map_err(db_error)?;
                Ok(rows.into_iter().map(|(_, id)| id).collect())
            }
            Candidates::All => Ok(found.iter().map(|n| n.id).collect()),
        }
    }
}

/// An embedded event as a candidate: its time, id and text's key.
pub type KeyedEvent = (DateTime<Utc>, Uuid, TextKey);

/// The first `rows` embedded events a SQL filter (a [`Candidates::Sql`]
/// statement and its values) selects, with their text keys.
pub async fn sql_candidates(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    sql: &str,
    params: &[palisade_srql::Param],
    rows: u64,
) -> Result<Vec<KeyedEvent>, QueryError> {
    let mut args = arguments(&[], params)?;
    sqlx::Arguments::add(&mut args, i64::try_from(rows).unwrap_or(i64::MAX))
        .map_err(|e| QueryError::Internal(e.to_string()))?;
    let read = sqlx::query_as_with::<_, (DateTime<Utc>, Uuid, Vec<u8>), _>(sql, args)
        .fetch_all(&mut **tx)
        .await
        .map_err(db_error)?;
    Ok(keyed(read))
}

/// Those of the search index's `matches` that have a vector, with their text keys.
pub async fn embedded_matches<'a>(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    matches: impl IntoIterator<Item = &'a SearchHit>,
) -> Result<Vec<KeyedEvent>, QueryError> {
    let (times, ids): (Vec<DateTime<Utc>>, Vec<Uuid>) =
        matches.into_iter().map(|h| (h.ts, h.id)).unzip();
    // By time first: the matches come newest first, so the probes walk the `ts`
    // index in order (~15 ms for 20,000, against ~35 ms by id alone).
    let read: Vec<(DateTime<Utc>, Uuid, Vec<u8>)> = sqlx::query_as(
        "SELECT v.ts, v.event_id, v.text_key FROM unnest($1::timestamptz[], $2::uuid[]) \
         AS k(ts, id) JOIN event_vectors v ON v.ts = k.ts AND v.event_id = k.id",
    )
    .bind(&times)
    .bind(&ids)
    .fetch_all(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(keyed(read))
}

/// Rows of `(ts, id, text_key)` with their keys parsed (a stored key is 32 bytes).
fn keyed(rows: Vec<(DateTime<Utc>, Uuid, Vec<u8>)>) -> Vec<KeyedEvent> {
    rows.into_iter()
        .filter_map(|(ts, id, key)| TextKey::from_stored(&key).map(|key| (ts, id, key)))
        .collect()
}

/// Milliseconds since `started`, for the stage timings logged at debug level.
fn ms_since(started: std::time::Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1e3
}

/// The clump cache on `/metrics`, read at each scrape:
/// `palisade_similar_clump_cache_{hits,misses}_total` (clumps a search found held
/// at the revision it needed, or not) and `…_{clumps,members,bytes}` (held now).
#[derive(Debug)]
pub struct ClumpCacheMetrics(Arc<ClumpCache>);

impl Collector for ClumpCacheMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.0.stats();
        for (name, help, value) in [
            (
                "palisade_similar_clump_cache_hits",
                "Clumps a SIMILAR_TO search scored from memory",
                stats.hits,
            ),
            (
                "palisade_similar_clump_cache_misses",
                "Clumps a SIMILAR_TO search had PostgreSQL score (not held, or changed)",
                stats.misses,
            ),
        ] {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        for (name, help, value) in [
            (
                "palisade_similar_clump_cache_clumps",
                "Clumps held in memory",
                stats.clumps,
            ),
            (
                "palisade_similar_clump_cache_members",
                "Member vectors held in memory",
                stats.members,
            ),
            (
                "palisade_similar_clump_cache_bytes",
                "Bytes the held clumps take",
                stats.bytes,
            ),
        ] {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

/// How many of each text's newest events a re-check round looks at: an even share
/// of [`MAX_RECHECKED`] over the `neighbourhood`, at least `k`.
fn events_per_text(k: u32, neighbourhood: u32) -> u32 {
    (MAX_RECHECKED / neighbourhood.max(1)).max(k)
}

/// The neighbourhood of the next re-check round, after `passed` of the events of
/// `neighbourhood` texts matched the filter: as many texts as that pass rate says
/// `k` need, with half again for luck, and at least twice as many. A filter
/// that none of the nearest texts' events match goes straight to the largest
/// neighbourhood, instead of paying for each doubling on the way.
fn next_neighbourhood(neighbourhood: u32, k: u32, passed: usize) -> u32 {
    let passed = u64::try_from(passed).unwrap_or(u64::MAX).max(1);
    let wanted = u64::from(neighbourhood) * u64::from(k) * 3 / (2 * passed);
    u32::try_from(wanted)
        .unwrap_or(u32::MAX)
        .max(neighbourhood.saturating_mul(2))
}

/// What [`QueryEngine::hnsw_rechecked`] found.
struct Rechecked {
    /// The events that passed, most similar first, at most k.
    kept: Vec<Neighbour>,
    /// The last neighbourhood, in texts.
    neighbourhood: u32,
    /// Events re-checked in all.
    rechecked: u64,
    /// Whether every embedded event was looked at (few texts): nothing passed
    /// that was not kept.
    exhaustive: bool,
}

/// How the task that ranks a sample beside the HNSW rounds ended.
enum SampleTask {
    /// The rounds never came back short.
    NotWanted,
    /// The pool had no connection to spare: the sample is ranked after the
    /// rounds, in the query's own transaction.
    NoConnection,
    /// Ranked.
    Ranked(RankedSample),
}

/// Aborts its task when dropped: when the answer needs no sample, or the query
/// ends early (an error, a client gone).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What [`QueryEngine::ranked_sample`] found.
struct RankedSample {
    /// Events in the sample.
    events: usize,
    /// Its `k` most similar.
    neighbours: Vec<Neighbour>,
}

/// The candidates a filter matched: few enough to scan exactly, or more.
enum Matches {
    /// At most the exact-scan threshold: their ids.
    Few(Vec<Uuid>),
    /// At most the threshold, with the keys of the texts they were embedded by.
    FewWithTexts(Vec<KeyedEvent>),
    /// More than the threshold.
    Many,
}

/// The `k` most similar of `a` and `b` (events ranked by two routes), each event
/// once, most similar first, then newest.
fn most_similar(a: Vec<Neighbour>, b: Vec<Neighbour>, k: u32) -> Vec<Neighbour> {
    let mut seen = HashSet::new();
    let mut all: Vec<Neighbour> = a
        .into_iter()
        .chain(b)
        .filter(|n| seen.insert(n.id))
        .collect();
    all.sort_by(|x, y| {
        y.similarity
            .total_cmp(&x.similarity)
            .then(y.ts.cmp(&x.ts))
            .then(x.id.cmp(&y.id))
    });
    all.truncate(k as usize);
    all
}

pub(super) fn store_error(e: palisade_core::store::StoreError) -> QueryError {
    match e {
        palisade_core::store::StoreError::Database(e) => db_error(e),
        other => QueryError::Internal(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn neighbour(id: u128, minute: u32, similarity: f64) -> Neighbour {
        Neighbour {
            id: Uuid::from_u128(id),
            ts: Utc.with_ymd_and_hms(2026, 11, 20, 10, minute, 0).unwrap(),
            similarity,
        }
    }

    #[test]
    fn two_routes_merge_into_the_k_most_similar_each_once() {
        let hnsw = vec![neighbour(1, 0, 0.9), neighbour(2, 0, 0.5)];
        let exact = vec![
            neighbour(3, 0, 0.7),
            neighbour(2, 0, 0.5),
            neighbour(4, 5, 0.5),
            neighbour(5, 0, 0.1),
        ];
        let merged: Vec<u128> = most_similar(hnsw, exact, 4)
            .iter()
            .map(|n| n.id.as_u128())
            .collect();
        // Equal similarity: the newer first.
        assert_eq!(merged, vec![1, 3, 4, 2]);
    }

    #[test]
    fn the_neighbourhood_grows_by_the_pass_rate_and_at_least_doubles() {
        // None passed: k times as far, and half again (the caller caps it at
        // the largest neighbourhood).
        assert_eq!(next_neighbourhood(200, 50, 0), 15_000);
        // 10 events of 200 texts passed: 1,000 texts for 50 at that rate, and
        // half again.
        assert_eq!(next_neighbourhood(200, 50, 10), 1_500);
        // Nearly there: doubling is the least step.
        assert_eq!(next_neighbourhood(200, 50, 45), 400);
        assert_eq!(next_neighbourhood(u32::MAX / 2 + 1, 50, 0), u32::MAX);
    }

    #[test]
    fn each_text_gets_an_even_share_of_the_recheck_but_never_less_than_k() {
        assert_eq!(events_per_text(50, 200), MAX_RECHECKED / 200);
        assert_eq!(events_per_text(50, 1000), 50);
        assert_eq!(events_per_text(3, 0), MAX_RECHECKED);
    }
}
