//! `group_similar` and the alert groups dashboard: the filter's embedded events,
//! aggregated by the alert group of each (core/src/grouping.rs), as attack patterns
//! with most events first.
//!
//! The events come from the same place as `SIMILAR_TO`'s candidates: all of them
//! (no filter), the search index's matches (full-text terms) or a SQL filter over
//! `event_vectors`, at most [`MAX_GROUPED_EVENTS`] of them (the answer then says
//! `partial`).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use palisade_core::grouping::{self, EventKey, GroupSummary, GroupedEvents};
use palisade_core::search::SearchIndex;
use palisade_srql::{Candidates, Compiled};
use serde::Serialize;
use uuid::Uuid;

use super::semantic::store_error;
use super::{arguments, db_error, read_index, QueryAnswer, QueryEngine, QueryError};

/// Most events one `group_similar` answer aggregates.
pub const MAX_GROUPED_EVENTS: u32 = 200_000;

/// The totals of a `group_similar` answer: "N events, K patterns".
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GroupsReport {
    /// Embedded events the filter selected (up to [`MAX_GROUPED_EVENTS`]).
    pub events: u64,
    /// Attack patterns among them.
    pub patterns: u64,
    /// Events in no group yet (embedded while grouping was off).
    pub ungrouped: u64,
    /// The span each pattern's `sparkline` covers.
    pub timeline: Option<grouping::Timeline>,
}

impl QueryEngine {
    /// Runs a `group_similar` query: one row per pattern, a page of them.
    pub(super) async fn execute_groups(
        &self,
        compiled: &Compiled,
    ) -> Result<QueryAnswer, QueryError> {
        let (summary, partial) = self.group_summary(compiled).await?;
        let mut answer = QueryAnswer::page_of(
            compiled.entity.to_string(),
            "groups",
            compiled,
            &summary.patterns,
        );
        answer.partial = partial;
        answer.groups = Some(GroupsReport {
            events: summary.events,
            patterns: answer.total.value,
            ungrouped: summary.ungrouped,
            timeline: summary.timeline,
        });
        Ok(answer)
    }

    /// The alert groups dashboard: `q`'s embedded events within `window` as
    /// patterns (`q | group_similar`), the first `limit`.
    pub async fn alert_groups(
        &self,
        q: &str,
        window: (DateTime<Utc>, DateTime<Utc>),
        limit: Option<u32>,
    ) -> Result<QueryAnswer, QueryError> {
        let started = std::time::Instant::now();
        let source = format!("{q} | group_similar");
        let compiled = self.compile_in(&source, limit, 0, Some(window))?;
        let timeout = self.limits.timeout;
        let mut answer = tokio::time::timeout(timeout, self.execute_groups(&compiled))
            .await
            .map_err(|_| QueryError::Timeout(timeout))??;
        answer.took_ms = started.elapsed().as_secs_f64() * 1000.0;
        Ok(answer)
    }

    /// Every pattern of the compiled `group_similar` query's events, and whether
    /// the events were cut at [`MAX_GROUPED_EVENTS`].
    async fn group_summary(&self, compiled: &Compiled) -> Result<(GroupSummary, bool), QueryError> {
        let stage = compiled
            .group_similar
            .as_ref()
            .ok_or_else(|| QueryError::Internal("groups path without group_similar".into()))?;
        let cap = MAX_GROUPED_EVENTS;
        let mut tx = self.read_only().await?;
        let (keys, partial) = match &stage.events {
            Candidates::All => (None, false),
            Candidates::Search => {
                let tree = compiled.search.as_ref().ok_or_else(|| {
                    QueryError::Internal("search events without a search query".into())
                })?;
                let query = self.translate(tree)?;
                let index: Arc<SearchIndex> = Arc::clone(&self.index);
                let keys = read_index(move || {
                    index
                        .collect_keys(query.as_ref(), cap as usize + 1)
                        .map(|page| page.hits.into_iter().map(|h| (h.ts, h.id)).collect())
                })
                .await?;
                cut(keys, cap)
            }
            Candidates::Sql { sql, params, .. } => {
                let mut args = arguments(&[], params)?;
                sqlx::Arguments::add(&mut args, i64::from(cap) + 1)
                    .map_err(|e| QueryError::Internal(e.to_string()))?;
                let keys = sqlx::query_as_with::<_, (DateTime<Utc>, Uuid), _>(sql, args)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db_error)?;
                cut(keys, cap)
            }
        };
        let events = match &keys {
            None => GroupedEvents::All,
            Some(keys) => GroupedEvents::Keys(keys),
        };
        let summary = grouping::summarise(&mut tx, events, self.grouping_threshold)
            .await
            .map_err(store_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok((summary, partial))
    }
}

/// The first `cap` keys, and whether there were more.
fn cut(mut keys: Vec<EventKey>, cap: u32) -> (Option<Vec<EventKey>>, bool) {
    let partial = keys.len() > cap as usize;
    keys.truncate(cap as usize);
    (Some(keys), partial)
}
