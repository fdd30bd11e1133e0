//! The query executor: runs a compiled SRQL query against the search index and
//! PostgreSQL.
//!
//! ```text
//!  SRQL text ──srql::compile──► Compiled ─┬─ Sql path ───► one SQL statement (rows or stats)
//!                                         └─ Search path ─► tantivy (filter + BM25 order)
//!                                                             │ page of (ts, id, score)
//!                                                             ▼
//!                                            SQL fetch by key, in hit order (+ snippets)
//! ```
//!
//! Every SQL statement runs in a read-only transaction with `statement_timeout`; every
//! value is a bound parameter.

pub mod cursor;
pub mod group;
pub mod groups;
pub mod search;
pub mod semantic;
pub mod snippet;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use palisade_core::graph::{assess, AssessError, Direction, Topology};
use palisade_core::search::{SearchIndex, SearchPage};
use palisade_srql::ast::PivotDirection;
use palisade_srql::{CompileOptions, Compiled, ExecPath, Output, Param, SearchSort, SrqlError};
use serde::Serialize;
use serde_json::Value;
use sqlx::postgres::PgArguments;
use sqlx::{PgPool, Postgres};
use tantivy::query::Query;
use tantivy::Order;
use uuid::Uuid;

use cursor::{Cursor, CursorError};
pub use groups::GroupsReport;
use search::{TranslateError, Translator};
pub use semantic::{ClumpCacheMetrics, SemanticReport, SemanticSearch};

/// Limits one query runs under.
#[derive(Debug, Clone)]
pub struct QueryLimits {
    /// Rows when the query names no limit.
    pub default_limit: u32,
    /// Most rows one page may return; also the deepest a cursor may page.
    pub max_limit: u32,
    /// Longest a query may run (also PostgreSQL's statement_timeout).
    pub timeout: Duration,
    /// Most search hits a stats query over full-text matches aggregates.
    pub max_stats_hits: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            default_limit: 100,
            max_limit: 10_000,
            timeout: Duration::from_secs(10),
            max_stats_hits: 1_000_000,
        }
    }
}

/// Why a query gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The SRQL text is wrong: the position and what was expected.
    #[error("{0}")]
    Srql(#[from] SrqlError),
    /// The cursor cannot be used.
    #[error("{0}")]
    Cursor(#[from] CursorError),
    /// The query asks for something the index cannot answer, or a value the index rejects.
    #[error("{0}")]
    Search(#[from] TranslateError),
    /// A value PostgreSQL rejected, e.g. `ip:10.0.0.300`.
    #[error("invalid value in the query: {0}")]
    BadValue(String),
    /// Parsed, but its execution arrives with a later feature.
    #[error("{0}")]
    NotYetExecutable(String),
    /// The query names something that does not exist, e.g. a node the connection
    /// graph does not hold.
    #[error("{0}")]
    NotFound(String),
    /// The query ran past the time limit.
    #[error("the query ran longer than {0:?}; narrow it (a time range, a host) and try again")]
    Timeout(Duration),
    /// PostgreSQL is unreachable.
    #[error("PostgreSQL is unavailable: {0}")]
    Unavailable(String),
    /// Something failed inside Palisade; the details are logged, not returned.
    #[error("internal error: {0}")]
    Internal(String),
}

/// How many rows match: exact, or a lower bound when counting stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Total {
    /// The count.
    pub value: u64,
    /// `eq` when exact, `gte` when at least this many.
    pub relation: &'static str,
}

/// One page of answers.
#[derive(Debug, Clone, Serialize)]
pub struct QueryAnswer {
    /// The entity the query selected (`events`, `alerts`, `vulns`, …).
    pub entity: String,
    /// `search` (tantivy, then rows by key) or `sql`.
    pub path: &'static str,
    /// Column names of the rows, in order.
    pub columns: Vec<String>,
    /// The rows: the columns, plus `score` and `snippet` for full-text matches.
    pub rows: Vec<Value>,
    /// How many rows match in all.
    pub total: Total,
    /// Wall time spent, in milliseconds.
    pub took_ms: f64,
    /// Pass back as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
    /// True when a stats answer covers only the first `max_stats_hits` search hits.
    pub partial: bool,
    /// `SIMILAR_TO` only: how the rows were ranked and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub semantic: Option<SemanticReport>,
    /// `group_similar` only: events and patterns in all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<GroupsReport>,
}

impl QueryAnswer {
    /// The page `compiled`'s offset and limit cut from an answer held whole in
    /// memory (a blast radius, the patterns of `group_similar`).
    fn page_of<T: Serialize>(
        entity: String,
        path: &'static str,
        compiled: &Compiled,
        all: &[T],
    ) -> QueryAnswer {
        let total = all.len() as u64;
        let rows: Vec<Value> = all
            .iter()
            .skip(usize::try_from(compiled.offset).unwrap_or(usize::MAX))
            .take(compiled.limit as usize)
            .map(|item| serde_json::to_value(item).unwrap_or(Value::Null))
            .collect();
        let more = compiled.offset + u64::from(compiled.limit) < total;
        QueryAnswer {
            entity,
            path,
            columns: compiled.columns.clone(),
            rows,
            total: Total {
                value: total,
                relation: "eq",
            },
            took_ms: 0.0,
            next_cursor: more.then(String::new),
            partial: false,
            semantic: None,
            groups: None,
        }
    }
}

/// What `explain` shows: how the query would run, without running it.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// The compact printed AST.
    pub ast: String,
    /// The compiled query: plan, SQL, parameters and search query.
    pub compiled: Compiled,
    /// The tantivy query as tantivy prints it (search path only).
    pub tantivy_query: Option<String>,
}

/// Runs SRQL queries.
#[derive(Clone)]
pub struct QueryEngine {
    pool: PgPool,
    index: Arc<SearchIndex>,
    limits: QueryLimits,
    semantic: Option<SemanticSearch>,
    topology: Option<Arc<Topology>>,
    /// Groups of different windows at least this similar are one pattern.
    grouping_threshold: f32,
}

impl std::fmt::Debug for QueryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryEngine")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// A search hit: the event's key in PostgreSQL and its BM25 score.
#[derive(Debug, Clone, Copy)]
struct Hit {
    ts: DateTime<Utc>,
    id: Uuid,
    score: Option<f32>,
}

impl QueryEngine {
    /// An engine over PostgreSQL and the search index.
    pub fn new(pool: PgPool, index: Arc<SearchIndex>, limits: QueryLimits) -> Self {
        QueryEngine {
            pool,
            index,
            limits,
            semantic: None,
            topology: None,
            grouping_threshold: palisade_core::grouping::DEFAULT_THRESHOLD,
        }
    }

    /// Merges groups of different windows into one pattern at `threshold` (the
    /// grouping's own).
    pub fn with_grouping_threshold(mut self, threshold: f32) -> Self {
        self.grouping_threshold = threshold;
        self
    }

    /// Lets `blast_radius` run over `topology`.
    pub fn with_topology(mut self, topology: Arc<Topology>) -> Self {
        self.topology = Some(topology);
        self
    }

    /// Lets `SIMILAR_TO` run, embedding its text with `semantic.embedder`.
    pub fn with_semantic(mut self, semantic: SemanticSearch) -> Self {
        self.semantic = Some(semantic);
        self
    }

    /// The limits in force.
    pub fn limits(&self) -> &QueryLimits {
        &self.limits
    }

    fn compile(&self, q: &str, limit: Option<u32>, offset: u64) -> Result<Compiled, QueryError> {
        self.compile_in(q, limit, offset, None)
    }

    fn compile_in(
        &self,
        q: &str,
        limit: Option<u32>,
        offset: u64,
        window: Option<(DateTime<Utc>, DateTime<Utc>)>,
    ) -> Result<Compiled, QueryError> {
        let options = CompileOptions {
            now: Utc::now(),
            limit,
            offset,
            default_limit: self.limits.default_limit,
            max_limit: self.limits.max_limit,
            window,
        };
        Ok(palisade_srql::compile(q, &options)?)
    }

    /// Shows the plan, SQL, parameters and search query of `q`.
    pub fn explain(&self, q: &str) -> Result<Explanation, QueryError> {
        let compiled = self.compile(q, None, 0)?;
        let tantivy_query = match &compiled.search {
            Some(tree) => Some(format!("{:?}", self.translate(tree)?)),
            None => None,
        };
        Ok(Explanation {
            ast: compiled.ast.clone(),
            compiled,
            tantivy_query,
        })
    }

    /// Runs `q`, returning the page that starts at `cursor`.
    pub async fn run(
        &self,
        q: &str,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<QueryAnswer, QueryError> {
        let started = Instant::now();
        let offset = match cursor {
            Some(text) => Cursor::decode(text, q)?.offset,
            None => 0,
        };
        // Cursors are only ever made up to the paging depth; a hand-made deeper one
        // would make the index keep `offset` hits in memory.
        if offset >= u64::from(self.limits.max_limit) {
            return Err(CursorError::TooDeep(self.limits.max_limit).into());
        }
        let compiled = self.compile(q, limit, offset)?;
        let timeout = self.limits.timeout;
        let mut answer = tokio::time::timeout(timeout, self.execute(&compiled))
            .await
            .map_err(|_| QueryError::Timeout(timeout))?
            .map_err(|e| match e {
                // PostgreSQL's statement_timeout fired: the same limit.
                QueryError::Timeout(_) => QueryError::Timeout(timeout),
                other => other,
            })?;
        if answer.next_cursor.is_some() {
            let next = compiled.offset + u64::from(compiled.limit);
            answer.next_cursor =
                (next < u64::from(self.limits.max_limit)).then(|| Cursor::new(q, next).encode());
        }
        answer.took_ms = started.elapsed().as_secs_f64() * 1000.0;
        Ok(answer)
    }

    async fn execute(&self, compiled: &Compiled) -> Result<QueryAnswer, QueryError> {
        match compiled.path {
            ExecPath::Sql => self.execute_sql(compiled).await,
            ExecPath::Search => self.execute_search(compiled).await,
            ExecPath::Semantic => {
                let similar = compiled.similar.as_ref().ok_or_else(|| {
                    QueryError::Internal("semantic path without SIMILAR_TO".into())
                })?;
                let (rows, report) = self.execute_semantic(compiled, similar).await?;
                let mut columns = compiled.columns.clone();
                columns.push("similarity".into());
                Ok(QueryAnswer {
                    entity: compiled.entity.to_string(),
                    path: "semantic",
                    columns,
                    total: Total {
                        value: rows.len() as u64,
                        relation: "eq",
                    },
                    rows,
                    took_ms: 0.0,
                    next_cursor: None,
                    partial: false,
                    semantic: Some(report),
                    groups: None,
                })
            }
            ExecPath::Graph => self.execute_blast_radius(compiled).await,
            ExecPath::Groups => self.execute_groups(compiled).await,
        }
    }

    /// `host:X | blast_radius(…)`: the ranked walk, one row per reached node.
    async fn execute_blast_radius(&self, compiled: &Compiled) -> Result<QueryAnswer, QueryError> {
        let query = compiled
            .blast_radius
            .as_ref()
            .ok_or_else(|| QueryError::Internal("graph path without blast_radius".into()))?;
        let topology = self.topology.as_ref().ok_or_else(|| {
            QueryError::NotYetExecutable("this node keeps no connection graph".into())
        })?;
        let direction = match query.direction {
            PivotDirection::Outbound => Direction::Outbound,
            PivotDirection::Inbound => Direction::Inbound,
        };
        let (_, ranked) = assess(
            topology,
            &self.pool,
            &query.node,
            query.depth,
            direction,
            Utc::now(),
        )
        .await
        .map_err(|e| match e {
            AssessError::Graph(e) => QueryError::NotFound(e.to_string()),
            AssessError::Database(e) => db_error(e),
        })?;
        // The whole walk is at hand: a page is a slice of it.
        Ok(QueryAnswer::page_of(
            "graph".into(),
            "graph",
            compiled,
            &ranked,
        ))
    }

    async fn execute_sql(&self, compiled: &Compiled) -> Result<QueryAnswer, QueryError> {
        let mut tx = self.read_only().await?;
        let rows = fetch_json(
            &mut tx,
            &compiled.sql,
            &[],
            &compiled.params,
            &compiled.columns,
        )
        .await?;
        let stats = matches!(compiled.output, Output::Stats { .. });
        let limit = compiled.limit as usize;
        let more = rows.len() > limit;
        let rows: Vec<Value> = rows.into_iter().take(limit).collect();
        let total = match (&compiled.count_sql, more) {
            (Some(count_sql), _) if !stats => {
                let args = arguments(&[], &compiled.count_params)?;
                let count: i64 = sqlx::query_scalar_with(count_sql, args)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db_error)?;
                let count = u64::try_from(count).unwrap_or(0);
                Total {
                    value: count,
                    relation: if count >= compiled.count_cap {
                        "gte"
                    } else {
                        "eq"
                    },
                }
            }
            _ => Total {
                value: compiled.offset + rows.len() as u64 + u64::from(more),
                relation: if more { "gte" } else { "eq" },
            },
        };
        tx.commit().await.map_err(db_error)?;
        Ok(QueryAnswer {
            entity: compiled.entity.to_string(),
            path: "sql",
            columns: compiled.columns.clone(),
            rows,
            total,
            took_ms: 0.0,
            next_cursor: more.then(String::new),
            partial: false,
            semantic: None,
            groups: None,
        })
    }

    async fn execute_search(&self, compiled: &Compiled) -> Result<QueryAnswer, QueryError> {
        let tree = compiled
            .search
            .as_ref()
            .ok_or_else(|| QueryError::Internal("a search plan without a search query".into()))?;
        let query = self.translate(tree)?;
        if let Output::Stats {
            index_group: Some(fields),
            ..
        } = &compiled.output
        {
            return self.group_in_index(compiled, query, fields.clone()).await;
        }
        let stats = matches!(compiled.output, Output::Stats { .. });
        let index = Arc::clone(&self.index);
        let sort = compiled.search_sort.clone();
        let (offset, limit) = (compiled.offset as usize, compiled.limit as usize);
        let cap = self.limits.max_stats_hits;
        // Count like the SQL path: exactly up to the cap, then "at least".
        let count_cap = usize::try_from(compiled.count_cap).unwrap_or(usize::MAX);
        // The count (up to the cap) runs beside the page's search and its fetch from
        // PostgreSQL; only stats take their count with the keys.
        let count = (!stats).then(|| {
            let index = Arc::clone(&self.index);
            let query = query.box_clone();
            tokio::task::spawn_blocking(move || index.count_up_to(query.as_ref(), count_cap))
        });
        let query_for_search = query.box_clone();
        let page = read_index(move || {
            let query = query_for_search.as_ref();
            match (stats, &sort) {
                (true, _) => index.collect_keys(query, cap),
                (false, SearchSort::Score) => Ok(SearchPage {
                    hits: index.top(query, limit + 1, offset)?,
                    ..SearchPage::default()
                }),
                (false, SearchSort::Field { field, desc }) => {
                    let order = if *desc { Order::Desc } else { Order::Asc };
                    Ok(SearchPage {
                        hits: index.top_sorted(query, (field, order), limit + 1, offset)?,
                        ..SearchPage::default()
                    })
                }
            }
        })
        .await?;
        let hits: Vec<Hit> = page
            .hits
            .into_iter()
            .map(|h| Hit {
                ts: h.ts,
                id: h.id,
                score: h.score,
            })
            .collect();

        let mut more = !stats && hits.len() > limit;
        let hits: Vec<Hit> = if stats {
            hits
        } else {
            hits.into_iter().take(limit).collect()
        };
        let keys_ts: Vec<DateTime<Utc>> = hits.iter().map(|h| h.ts).collect();
        let keys_id: Vec<Uuid> = hits.iter().map(|h| h.id).collect();
        let mut tx = self.read_only().await?;
        let mut rows = fetch_json(
            &mut tx,
            &compiled.sql,
            &[KeyArray::Ts(keys_ts), KeyArray::Id(keys_id)],
            &compiled.params,
            &compiled.columns,
        )
        .await?;
        tx.commit().await.map_err(db_error)?;
        let (total, total_exact) = match count {
            Some(count) => count
                .await
                .map_err(|e| QueryError::Internal(format!("count task: {e}")))?
                .map_err(|e| QueryError::Internal(format!("count: {e}")))?,
            None => (page.total, page.total_exact),
        };

        if stats {
            more = rows.len() > limit;
            rows.truncate(limit);
        } else {
            self.annotate(&mut rows, &hits, query.as_ref());
        }
        Ok(QueryAnswer {
            entity: compiled.entity.to_string(),
            path: "search",
            columns: compiled.columns.clone(),
            rows,
            total: Total {
                value: total as u64,
                relation: if total_exact { "eq" } else { "gte" },
            },
            took_ms: 0.0,
            next_cursor: more.then(String::new),
            partial: stats && total > cap,
            semantic: None,
            groups: None,
        })
    }

    /// `stats count() by <keyword fields>` over full-text matches, counted in the index.
    async fn group_in_index(
        &self,
        compiled: &Compiled,
        query: Box<dyn Query>,
        fields: Vec<String>,
    ) -> Result<QueryAnswer, QueryError> {
        let index = Arc::clone(&self.index);
        let collector = group::GroupCount { fields };
        let groups =
            read_index(move || index.searcher().search(query.as_ref(), &collector)).await?;
        let columns = &compiled.columns;
        let keys = match &compiled.output {
            Output::Stats { group_by, .. } => group_by.len(),
            Output::Rows => 0,
        };
        let mut rows: Vec<(Vec<Option<String>>, u64)> = groups.into_iter().collect();
        let (order_column, desc) = compiled
            .stats_order
            .clone()
            .unwrap_or_else(|| (columns.last().cloned().unwrap_or_default(), true));
        let by = columns
            .iter()
            .position(|c| *c == order_column)
            .unwrap_or(keys);
        rows.sort_by(|(ka, na), (kb, nb)| {
            let ordering = if by >= keys {
                na.cmp(nb)
            } else {
                ka[by].cmp(&kb[by])
            };
            let ordering = if desc { ordering.reverse() } else { ordering };
            // Ties in a stable order: by the keys.
            ordering.then_with(|| ka.cmp(kb))
        });
        let total = rows.len() as u64;
        let (offset, limit) = (compiled.offset as usize, compiled.limit as usize);
        let more = rows.len() > offset + limit;
        let rows = rows
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|(key, n)| {
                let mut row = serde_json::Map::new();
                for (name, value) in columns.iter().zip(key) {
                    row.insert(name.clone(), value.map_or(Value::Null, Value::from));
                }
                for name in columns.iter().skip(keys) {
                    row.insert(name.clone(), Value::from(n));
                }
                Value::Object(row)
            })
            .collect();
        Ok(QueryAnswer {
            entity: compiled.entity.to_string(),
            path: "search",
            columns: columns.clone(),
            rows,
            total: Total {
                value: total,
                relation: "eq",
            },
            took_ms: 0.0,
            next_cursor: more.then(String::new),
            partial: false,
            semantic: None,
            groups: None,
        })
    }

    /// Adds each hit's score and a highlighted snippet of its message.
    fn annotate(&self, rows: &mut [Value], hits: &[Hit], query: &dyn Query) {
        let fields = self.index.fields();
        let terms = snippet::query_terms(query, fields.text, fields.text_pairs);
        for row in rows.iter_mut() {
            let Some(obj) = row.as_object_mut() else {
                continue;
            };
            let id = obj
                .get("id")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<Uuid>().ok());
            let score = id.and_then(|id| hits.iter().find(|h| h.id == id)?.score);
            obj.insert(
                "score".into(),
                score.map_or(Value::Null, |s| Value::from(f64::from(s))),
            );
            if let Some(message) = obj.get("message").and_then(Value::as_str) {
                let html = snippet::highlight(message, &terms);
                obj.insert("snippet".into(), Value::from(html));
            }
        }
    }

    fn translate(&self, tree: &palisade_srql::SearchQuery) -> Result<Box<dyn Query>, QueryError> {
        let index = &self.index;
        let tokenize = |text: &str| index.query_tokens(text);
        let schema = index.schema();
        Ok(Translator::new(&schema, &tokenize).translate(tree)?)
    }

    /// One event by id, with every column; `None` when there is no such event.
    pub async fn event(&self, id: Uuid) -> Result<Option<Value>, QueryError> {
        let index = Arc::clone(&self.index);
        let ts = read_index(move || index.lookup_ts(id)).await?;
        let mut tx = self.read_only().await?;
        // The index gives the partition key; without it (not indexed yet) scan by id.
        let row: Option<String> = match ts {
            Some(ts) => sqlx::query_scalar(
                "SELECT row_to_json(e)::text FROM events e WHERE e.ts = $1 AND e.id = $2",
            )
            .bind(ts)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?,
            None => sqlx::query_scalar("SELECT row_to_json(e)::text FROM events e WHERE e.id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?,
        };
        tx.commit().await.map_err(db_error)?;
        row.map(|text| serde_json::from_str(&text).map_err(|e| QueryError::Internal(e.to_string())))
            .transpose()
    }

    async fn read_only(&self) -> Result<sqlx::Transaction<'static, Postgres>, QueryError> {
        self.pool
            .begin_with(self.read_only_begin())
            .await
            .map_err(db_error)
    }

    /// [`Self::read_only`] on an idle connection, or a new one while the pool may
    /// open more; `None` when it is full. For a query's second connection: one that
    /// waited for it while holding its first could wait on others doing the same.
    async fn read_only_if_free(
        &self,
    ) -> Result<Option<sqlx::Transaction<'static, Postgres>>, QueryError> {
        let idle = self
            .pool
            .try_begin_with(self.read_only_begin())
            .await
            .map_err(db_error)?;
        if idle.is_some() || self.pool.size() >= self.pool.options().get_max_connections() {
            return Ok(idle);
        }
        self.read_only().await.map(Some)
    }

    /// One round trip: BEGIN and the settings go as one simple query (numbers we
    /// format ourselves; SET takes no bound parameters).
    fn read_only_begin(&self) -> String {
        let ms = self.limits.timeout.as_millis().max(1);
        format!("BEGIN READ ONLY; SET LOCAL statement_timeout = {ms}; SET LOCAL TimeZone = 'UTC'")
    }
}

/// The key arrays the search path binds as `$1` and `$2`.
enum KeyArray {
    Ts(Vec<DateTime<Utc>>),
    Id(Vec<Uuid>),
}

/// Runs `sql` and returns its rows as JSON objects keyed by `columns` (the SQL names
/// its output columns `c0, c1, …`).
async fn fetch_json(
    tx: &mut sqlx::Transaction<'static, Postgres>,
    sql: &str,
    keys: &[KeyArray],
    params: &[Param],
    columns: &[String],
) -> Result<Vec<Value>, QueryError> {
    let wrapped = format!("SELECT row_to_json(r)::text FROM ({sql}) r");
    let texts = sqlx::query_scalar_with::<_, String, _>(&wrapped, arguments(keys, params)?)
        .fetch_all(&mut **tx)
        .await
        .map_err(db_error)?;
    texts
        .iter()
        .map(|t| {
            let mut row: serde_json::Map<String, Value> =
                serde_json::from_str(t).map_err(|e| QueryError::Internal(e.to_string()))?;
            let named = columns
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    (
                        name.clone(),
                        row.remove(&format!("c{i}")).unwrap_or(Value::Null),
                    )
                })
                .collect();
            Ok(Value::Object(named))
        })
        .collect()
}

/// The bound values of a statement: the key arrays (`$1`, `$2`, …), then `params`.
fn arguments(keys: &[KeyArray], params: &[Param]) -> Result<PgArguments, QueryError> {
    use sqlx::Arguments;
    let mut args = PgArguments::default();
    let added = keys
        .iter()
        .map(|key| match key {
            KeyArray::Ts(ts) => args.add(ts.clone()),
            KeyArray::Id(ids) => args.add(ids.clone()),
        })
        .collect::<Result<Vec<()>, _>>()
        .and_then(|_| {
            params
                .iter()
                .map(|param| match param {
                    Param::Text(s) => args.add(s.clone()),
                    Param::TextArray(v) => args.add(v.clone()),
                    Param::Int(n) => args.add(*n),
                    Param::Float(x) => args.add(*x),
                    Param::Time(t) => args.add(*t),
                    Param::Bool(b) => args.add(*b),
                })
                .collect::<Result<Vec<()>, _>>()
        });
    added.map_err(|e| QueryError::Internal(format!("binding a value: {e}")))?;
    Ok(args)
}

/// Runs `read` (of the search index) on a blocking thread; its failure, or the
/// thread's, is an internal error.
async fn read_index<T, E>(
    read: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, QueryError>
where
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    tokio::task::spawn_blocking(read)
        .await
        .map_err(|e| QueryError::Internal(format!("search task: {e}")))?
        .map_err(|e| QueryError::Internal(format!("search: {e}")))
}

/// Maps a PostgreSQL failure to what the caller should hear.
fn db_error(e: sqlx::Error) -> QueryError {
    if let sqlx::Error::Database(db) = &e {
        let code = db.code().unwrap_or_default();
        if code == "57014" {
            return QueryError::Timeout(Duration::ZERO);
        }
        // Class 22: data exceptions (a bad inet, uuid or number in the query's values).
        if code.starts_with("22") {
            return QueryError::BadValue(db.message().to_owned());
        }
    }
    let unreachable = match &e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            code.starts_with("08") || code.starts_with("57P")
        }
        _ => false,
    };
    if unreachable {
        QueryError::Unavailable(e.to_string())
    } else {
        QueryError::Internal(e.to_string())
    }
}
