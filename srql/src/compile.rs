//! Resolve, plan and compile: AST → SQL text with bound parameters, plus a search
//! query for the tantivy index.
//!
//! Events queries with a full-text part (a bare word, a phrase, `message:`, `ip:`) take
//! the **search** path: the whole filter goes to the index, and the SQL only fetches
//! the hits' rows by key (`$1` timestamps, `$2` ids, bound by the executor). Everything
//! else takes the **sql** path: one statement. Output columns are aliased `c0, c1, …`;
//! `Compiled::columns` names them, so no user text reaches the SQL.

use std::ops::Bound;

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use serde::Serialize;

use crate::ast::{AggregateFn, CompareOp, Expr, GroupKey, PivotDirection, Query, Stage, Value};
use crate::catalogue::{self, Entity, Field, FieldKind};
use crate::error::{Limits, SrqlError};
use crate::parser::parse_with;

/// What compiling needs besides the text.
#[derive(Debug, Clone)]
pub struct CompileOptions {
    /// "Now", for `time:last_24h` and `today` (fixed in tests).
    pub now: DateTime<Utc>,
    /// Rows per page asked by the caller (overrides `limit:`), capped at `max_limit`.
    pub limit: Option<u32>,
    /// Rows to skip (from a cursor).
    pub offset: u64,
    /// Rows when nothing says otherwise.
    pub default_limit: u32,
    /// Most rows per page.
    pub max_limit: u32,
    /// A time window `[from, to)` the caller imposes on top of the query's own
    /// `time:` (the alert groups API's `window`).
    pub window: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            now: Utc::now(),
            limit: None,
            offset: 0,
            default_limit: 100,
            max_limit: 10_000,
            window: None,
        }
    }
}

/// How a compiled query runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecPath {
    /// One SQL statement.
    Sql,
    /// The search index, then rows by key.
    Search,
    /// `SIMILAR_TO`: embed the text, rank the filter's candidates (or every
    /// embedded event) by cosine similarity, then rows by key.
    Semantic,
    /// `blast_radius`: a walk of the in-memory connection graph.
    Graph,
    /// `group_similar`: the filter's embedded events, aggregated by their alert
    /// groups.
    Groups,
}

/// A `group_similar` stage, compiled.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupSimilar {
    /// The embedded events to aggregate.
    pub events: Candidates,
}

/// A `blast_radius` stage, compiled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlastRadiusQuery {
    /// The start: a host name, an address or `host:port`.
    pub node: String,
    /// Most connections to follow.
    pub depth: u32,
    /// Which way.
    pub direction: PivotDirection,
}

/// A bound SQL parameter.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Param {
    /// Text (cast in SQL where another type is meant: `$3::inet`, `$4::uuid`).
    Text(String),
    /// A text array.
    TextArray(Vec<String>),
    /// A whole number.
    Int(i64),
    /// A number.
    Float(f64),
    /// A timestamp.
    Time(DateTime<Utc>),
    /// A boolean.
    Bool(bool),
}

/// A value in the search query.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchValue {
    /// Text.
    Str(String),
    /// Signed number.
    I64(i64),
    /// Unsigned number.
    U64(u64),
    /// Float.
    F64(f64),
    /// Time.
    Date(DateTime<Utc>),
}

/// The search-index query; field names are the index's.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchQuery {
    /// Every document.
    All,
    /// Every token of `text` in `field`.
    Text {
        /// Index field.
        field: String,
        /// Words.
        text: String,
    },
    /// The tokens of `text`, adjacent and in order.
    Phrase {
        /// Index field.
        field: String,
        /// Phrase.
        text: String,
    },
    /// An exact value.
    Term {
        /// Index field.
        field: String,
        /// Value.
        value: SearchValue,
    },
    /// A `*` / `?` pattern.
    Wildcard {
        /// Index field.
        field: String,
        /// Pattern.
        pattern: String,
    },
    /// A range of values.
    Range {
        /// Index field.
        field: String,
        /// Lower bound.
        lower: Bound<SearchValue>,
        /// Upper bound.
        upper: Bound<SearchValue>,
    },
    /// An IP address or CIDR block.
    IpCidr {
        /// Index field.
        field: String,
        /// `10.0.0.0/8` or an address.
        cidr: String,
    },
    /// All must match.
    And(Vec<SearchQuery>),
    /// One must match.
    Or(Vec<SearchQuery>),
    /// Must not match.
    Not(Box<SearchQuery>),
}

/// How search hits are ordered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchSort {
    /// BM25 score, best first.
    Score,
    /// A fast field.
    Field {
        /// Index field.
        field: String,
        /// Newest/largest first.
        desc: bool,
    },
}

/// What the rows are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Output {
    /// Entity rows.
    Rows,
    /// Aggregates per group.
    Stats {
        /// Group columns.
        group_by: Vec<String>,
        /// Aggregate columns.
        aggregates: Vec<String>,
        /// When every key is a keyword field of the search index and every aggregate is
        /// `count()`: the index fields to count by (the search path then counts in
        /// the index instead of fetching every hit's row).
        index_group: Option<Vec<String>>,
    },
}

/// `SIMILAR_TO`: what the executor needs to rank events by meaning.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimilarTo {
    /// Text to compare with.
    pub text: String,
    /// Events to return: the stage's `k`, or fewer when `limit:` says so.
    pub k: u32,
    /// Where the candidates come from.
    pub candidates: Candidates,
    /// The chosen events' rows by key (`$1` times, `$2` ids), in rank order.
    pub rows_sql: String,
}

/// The events a `SIMILAR_TO` stage may return.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Candidates {
    /// No filter: every embedded event.
    All,
    /// The events matching [`Compiled::search`] in the search index.
    Search,
    /// The events matching a SQL filter.
    Sql {
        /// `(ts, id, text_key)` of the matching events that have a vector (the key
        /// of the text they were embedded by), `LIMIT` the last placeholder (one
        /// past `params`), which the executor binds to its exact-scan threshold + 1.
        sql: String,
        /// Values for `sql`, without the limit.
        params: Vec<Param>,
        /// Which of the given keys (`$1` times, `$2` ids) match the filter: the
        /// re-check after an approximate (HNSW) search.
        recheck_sql: String,
        /// Values for `recheck_sql` (from `$3`).
        recheck_params: Vec<Param>,
    },
}

/// The plan, for `explain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Steps, in order, in words.
    pub steps: Vec<String>,
}

/// A query ready to run.
#[derive(Debug, Clone, Serialize)]
pub struct Compiled {
    /// What it selects.
    pub entity: Entity,
    /// The compact printed AST.
    pub ast: String,
    /// How it runs.
    pub path: ExecPath,
    /// Why, step by step.
    pub plan: Plan,
    /// SQL with `$n` placeholders.
    pub sql: String,
    /// Values for `sql` (on the search path they start at `$3`).
    pub params: Vec<Param>,
    /// A capped count of matching rows (sql path, rows).
    pub count_sql: Option<String>,
    /// Values for `count_sql`.
    pub count_params: Vec<Param>,
    /// The cap of `count_sql`: a count equal to it means "at least".
    pub count_cap: u64,
    /// The search-index query (search path).
    pub search: Option<SearchQuery>,
    /// Order of search hits.
    pub search_sort: SearchSort,
    /// Rows or stats.
    pub output: Output,
    /// Names of the output columns `c0, c1, …`, in order.
    pub columns: Vec<String>,
    /// Stats only: the output column the groups are ordered by, and whether descending.
    pub stats_order: Option<(String, bool)>,
    /// Rows per page.
    pub limit: u32,
    /// Rows skipped.
    pub offset: u64,
    /// `SIMILAR_TO`, when present (the path is then [`ExecPath::Semantic`]).
    pub similar: Option<SimilarTo>,
    /// `blast_radius`, when present (the path is then [`ExecPath::Graph`]).
    pub blast_radius: Option<BlastRadiusQuery>,
    /// `group_similar`, when present (the path is then [`ExecPath::Groups`]).
    pub group_similar: Option<GroupSimilar>,
}

/// `[lower, upper)`, either end open.
type TimeWindow = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// `column >= lower` and `column < upper` for each time window, the bounds bound
/// as parameters of `sql`.
fn time_bounds(column: &str, windows: &[TimeWindow], sql: &mut Sql) -> Vec<String> {
    let mut bounds = Vec::new();
    for (lower, upper) in windows {
        if let Some(l) = lower {
            bounds.push(format!("{column} >= {}", sql.push(Param::Time(*l))));
        }
        if let Some(u) = upper {
            bounds.push(format!("{column} < {}", sql.push(Param::Time(*u))));
        }
    }
    bounds
}

/// The cap of the total count on the sql path.
pub const COUNT_CAP: u64 = 10_000;

/// Parses and compiles `source`.
pub fn compile(source: &str, options: &CompileOptions) -> Result<Compiled, SrqlError> {
    let query = parse_with(source, Limits::default())?;
    Compiler::new(options).compile(&query)
}

/// Directives lifted from the filter and stages.
#[derive(Default)]
struct Directives {
    entity: Option<(Entity, usize)>,
    time: Vec<(Value, usize)>,
    sort: Option<(String, bool, usize)>,
    limit: Option<u32>,
    stats: Option<Stage>,
    /// `SIMILAR_TO`: text, k, column.
    similar: Option<(String, u32, usize)>,
    /// `group_similar`: its column.
    group_similar: Option<usize>,
}

struct Compiler<'o> {
    options: &'o CompileOptions,
}

fn err(column: usize, expected: impl Into<String>, found: impl Into<String>) -> SrqlError {
    SrqlError::new(column, expected, found)
}

impl<'o> Compiler<'o> {
    fn new(options: &'o CompileOptions) -> Self {
        Compiler { options }
    }

    fn compile(&self, query: &Query) -> Result<Compiled, SrqlError> {
        if let Some(stage) = query
            .stages
            .iter()
            .find(|s| matches!(s, Stage::BlastRadius { .. }))
        {
            return self.blast_radius(query, stage);
        }
        let mut d = Directives::default();
        let filter = match &query.filter {
            Some(f) => self.lift(f.clone(), &mut d)?,
            None => None,
        };
        for stage in &query.stages {
            match stage {
                Stage::Sort {
                    field,
                    desc,
                    column,
                } => d.sort = Some((field.clone(), *desc, *column)),
                Stage::Limit { rows } => d.limit = Some(*rows),
                Stage::Stats { .. } => d.stats = Some(stage.clone()),
                Stage::SimilarTo { text, k, column } => {
                    d.similar = Some((text.clone(), *k, *column));
                }
                Stage::GroupSimilar { column } => d.group_similar = Some(*column),
                Stage::BlastRadius { .. } => unreachable!("compiled on its own above"),
            }
        }
        let entity = d.entity.map_or(Entity::Events, |(e, _)| e);
        if let Some(f) = &filter {
            self.check_fields(entity, f)?;
        }
        if let Some((_, _, column)) = &d.similar {
            check_similar(entity, &d, *column)?;
        }
        if let Some(column) = d.group_similar {
            check_group_similar(entity, &d, column)?;
        }
        let limit = self
            .options
            .limit
            .or(d.limit)
            .unwrap_or(self.options.default_limit)
            .clamp(1, self.options.max_limit.max(1));
        let search_path =
            entity.is_event() && filter.as_ref().is_some_and(|f| needs_search(entity, f));
        let mut steps = vec![format!("select {}", entity.name())];
        let mut time_conditions = self.time_conditions(entity, &d.time)?;
        if let Some((from, to)) = self.options.window {
            time_conditions.push((Some(from), Some(to)));
        }

        let (columns, output) = self.output_columns(entity, d.stats.as_ref())?;
        let stats_order = match (&output, &d.sort) {
            (Output::Stats { aggregates, .. }, Some((field, desc, _)))
                if columns.contains(field) || aggregates.is_empty() =>
            {
                Some((field.clone(), *desc))
            }
            (Output::Stats { aggregates, .. }, _) => aggregates.first().map(|a| (a.clone(), true)),
            _ => None,
        };
        let mut compiled = Compiled {
            entity,
            ast: query.to_string(),
            path: if search_path {
                ExecPath::Search
            } else {
                ExecPath::Sql
            },
            plan: Plan { steps: Vec::new() },
            sql: String::new(),
            params: Vec::new(),
            count_sql: None,
            count_params: Vec::new(),
            count_cap: COUNT_CAP,
            search: None,
            search_sort: SearchSort::Score,
            stats_order,
            output,
            columns,
            limit,
            offset: self.options.offset,
            similar: None,
            blast_radius: None,
            group_similar: None,
        };

        if search_path {
            steps.push(
                "full-text terms present: the whole filter runs in the search index (BM25)".into(),
            );
            let mut parts = Vec::new();
            if let Some(f) = &filter {
                parts.push(self.search_expr(entity, f)?);
            }
            if let Some(t) = entity_search(entity) {
                parts.push(t);
            }
            for (lower, upper) in &time_conditions {
                parts.push(SearchQuery::Range {
                    field: "ts".into(),
                    lower: lower
                        .map(SearchValue::Date)
                        .map_or(Bound::Unbounded, Bound::Included),
                    upper: upper
                        .map(SearchValue::Date)
                        .map_or(Bound::Unbounded, Bound::Excluded),
                });
            }
            compiled.search = Some(match parts.len() {
                0 => SearchQuery::All,
                1 => parts.remove(0),
                _ => SearchQuery::And(parts),
            });
            let mut sql = Sql::new(2);
            if d.stats.is_some() {
                let from = "events e JOIN unnest($1::timestamptz[], $2::uuid[]) AS k(ts, id) \
                            ON e.ts = k.ts AND e.id = k.id";
                compiled.sql = self.stats_sql(
                    entity,
                    d.stats.as_ref(),
                    d.sort.as_ref(),
                    from,
                    "",
                    &mut sql,
                    &compiled,
                )?;
                steps.push(
                    "collect every hit's key, then aggregate those rows in PostgreSQL".into(),
                );
            } else {
                if let Some((field, desc, column)) = &d.sort {
                    let f = catalogue::field(entity, field)
                        .ok_or_else(|| unknown(entity, field, *column))?;
                    if f.kind != FieldKind::Time {
                        return Err(err(
                            *column,
                            "sort:ts (search results are ordered by score or time)",
                            format!("`sort:{field}`"),
                        ));
                    }
                    compiled.search_sort = SearchSort::Field {
                        field: "ts".into(),
                        desc: *desc,
                    };
                    steps.push(format!(
                        "order hits by time, {}",
                        if *desc {
                            "newest first"
                        } else {
                            "oldest first"
                        }
                    ));
                } else {
                    steps.push("order hits by BM25 score".into());
                }
                let cols = select_list(entity.columns().iter().map(|(_, s)| *s));
                compiled.sql = format!(
                    "SELECT {cols} FROM events e JOIN unnest($1::timestamptz[], $2::uuid[]) \
                     WITH ORDINALITY AS k(ts, id, ord) ON e.ts = k.ts AND e.id = k.id ORDER BY k.ord"
                );
                steps.push(format!(
                    "fetch the page of {limit} rows by (ts, id) from PostgreSQL, in hit order"
                ));
            }
            compiled.params = sql.params;
        } else {
            steps.push("no full-text terms: one SQL statement".into());
            let mut sql = Sql::new(0);
            let conditions =
                self.sql_conditions(entity, filter.as_ref(), &time_conditions, &mut sql)?;
            let time_sql = catalogue::field(entity, entity.time_field())
                .and_then(|f| f.sql)
                .unwrap_or("ts");
            let where_sql = if conditions.is_empty() {
                String::new()
            } else {
                format!(" WHERE {}", conditions.join(" AND "))
            };
            if d.stats.is_some() {
                compiled.sql = self.stats_sql(
                    entity,
                    d.stats.as_ref(),
                    d.sort.as_ref(),
                    entity.from_sql(),
                    &where_sql,
                    &mut sql,
                    &compiled,
                )?;
                steps.push("aggregate in PostgreSQL".into());
            } else {
                let order = match &d.sort {
                    Some((field, desc, column)) => {
                        let f = catalogue::field(entity, field)
                            .ok_or_else(|| unknown(entity, field, *column))?;
                        let expr = entity.display_sql(f).ok_or_else(|| {
                            err(
                                *column,
                                "a field PostgreSQL can sort by",
                                format!("`{field}`"),
                            )
                        })?;
                        let expr = if f.kind == FieldKind::Severity {
                            f.sql.unwrap_or(expr)
                        } else {
                            expr
                        };
                        format!(
                            "{expr} {} NULLS LAST, {time_sql} DESC",
                            if *desc { "DESC" } else { "ASC" }
                        )
                    }
                    None => format!("{time_sql} DESC"),
                };
                let where_params = sql.params.clone();
                let cols = select_list(entity.columns().iter().map(|(_, s)| *s));
                let lim = sql.push(Param::Int(i64::from(limit) + 1));
                let off = sql.push(Param::Int(
                    i64::try_from(self.options.offset).unwrap_or(i64::MAX),
                ));
                compiled.sql = format!(
                    "SELECT {cols} FROM {}{where_sql} ORDER BY {order} LIMIT {lim} OFFSET {off}",
                    entity.from_sql()
                );
                let mut count = Sql {
                    params: where_params,
                    base: 0,
                };
                let cap = count.push(Param::Int(COUNT_CAP as i64));
                compiled.count_sql = Some(format!(
                    "SELECT count(*) FROM (SELECT 1 FROM {}{where_sql} LIMIT {cap}) s",
                    entity.from_sql()
                ));
                compiled.count_params = count.params;
                steps.push(format!("order by {order}, page of {limit} rows"));
            }
            compiled.params = sql.params;
        }
        if d.group_similar.is_some() {
            steps = self.group_similar(&mut compiled, filter.as_ref(), &time_conditions)?;
        } else if let Some((text, k, _)) = &d.similar {
            steps = self.semantic(
                &mut compiled,
                (text, *k),
                d.limit,
                filter.as_ref(),
                &time_conditions,
            )?;
        }
        compiled.plan = Plan { steps };
        Ok(compiled)
    }

    /// The SQL conditions of an entity, its time windows and its filter, with
    /// their values pushed onto `sql`.
    fn sql_conditions(
        &self,
        entity: Entity,
        filter: Option<&Expr>,
        time_conditions: &[TimeWindow],
        sql: &mut Sql,
    ) -> Result<Vec<String>, SrqlError> {
        let mut conditions: Vec<String> = Vec::new();
        if let Some(c) = entity.base_condition() {
            conditions.push(c.to_owned());
        }
        if let Some(c) = entity_sql(entity, sql) {
            conditions.push(c);
        }
        let time_sql = catalogue::field(entity, entity.time_field())
            .and_then(|f| f.sql)
            .unwrap_or("ts");
        conditions.extend(time_bounds(time_sql, time_conditions, sql));
        if let Some(f) = filter {
            conditions.push(self.sql_expr(entity, f, sql)?);
        }
        Ok(conditions)
    }

    /// Turns `compiled` into a `SIMILAR_TO` query: where its candidates come from
    /// and how its rows are fetched. Returns the plan's steps.
    fn semantic(
        &self,
        compiled: &mut Compiled,
        (text, k): (&str, u32),
        limit: Option<u32>,
        filter: Option<&Expr>,
        time_conditions: &[TimeWindow],
    ) -> Result<Vec<String>, SrqlError> {
        let entity = compiled.entity;
        let k = match self.options.limit.or(limit) {
            Some(limit) => k.min(limit.max(1)),
            None => k,
        };
        let mut steps = vec![
            format!("select {}", entity.name()),
            format!("embed {text:?} with the sentence model"),
        ];
        let candidates = self.embedded_events(compiled, filter, time_conditions, &mut steps)?;
        if candidates == Candidates::All {
            compiled.search = None;
            steps.push(format!("rank: HNSW index (cosine), top {k}"));
        }
        if candidates != Candidates::All {
            steps.push(format!(
                "rank: exact cosine distance over the candidates when they are few, \
                 else HNSW (raised ef_search) and re-check each neighbour against the filter; \
                 top {k}"
            ));
        }
        let cols = select_list(entity.columns().iter().map(|(_, s)| *s));
        let rows_sql = format!(
            "SELECT {cols} FROM events e JOIN unnest($1::timestamptz[], $2::uuid[]) \
             WITH ORDINALITY AS k(ts, id, ord) ON e.ts = k.ts AND e.id = k.id ORDER BY k.ord"
        );
        steps.push(format!(
            "fetch the {k} rows by (ts, id) from PostgreSQL, most similar first"
        ));
        compiled.path = ExecPath::Semantic;
        compiled.sql = rows_sql.clone();
        compiled.params = Vec::new();
        compiled.count_sql = None;
        compiled.count_params = Vec::new();
        compiled.limit = k;
        compiled.similar = Some(SimilarTo {
            text: text.to_owned(),
            k,
            candidates,
            rows_sql,
        });
        Ok(steps)
    }

    /// The statement that says which of the given keys (`$1` times, `$2` ids)
    /// match the filter, and its values (from `$3`).
    fn recheck_sql(
        &self,
        entity: Entity,
        filter: Option<&Expr>,
        time_conditions: &[TimeWindow],
    ) -> Result<(String, Vec<Param>), SrqlError> {
        let mut recheck = Sql::new(2);
        let conditions = self.sql_conditions(entity, filter, time_conditions, &mut recheck)?;
        let sql = format!(
            "SELECT e.ts, e.id FROM {} JOIN unnest($1::timestamptz[], $2::uuid[]) \
             AS k(ts, id) ON e.ts = k.ts AND e.id = k.id WHERE {}",
            entity.from_sql(),
            conditions.join(" AND ")
        );
        Ok((sql, recheck.params))
    }

    /// The embedded events a filter selects: every one (no filter), the search
    /// index's matches (full-text terms), or a SQL statement over `event_vectors`.
    /// Pushes the plan's step.
    fn embedded_events(
        &self,
        compiled: &Compiled,
        filter: Option<&Expr>,
        time_conditions: &[TimeWindow],
        steps: &mut Vec<String>,
    ) -> Result<Candidates, SrqlError> {
        let entity = compiled.entity;
        let candidates = if compiled.path == ExecPath::Search {
            steps.push(
                "candidates: the events the search index matches (full-text terms present)".into(),
            );
            Candidates::Search
        } else {
            let mut select = Sql::new(0);
            let mut conditions =
                self.sql_conditions(entity, filter, time_conditions, &mut select)?;
            // `event_vectors` carries each embedded event's time, host, type and
            // severity under the names they have in `events` (migration 0017): a
            // filter over those alone reads it, as `e`, without a join.
            let vectors_alone =
                entity.is_event() && filter.is_none_or(|f| over_vector_columns(entity, f));
            if conditions.is_empty() {
                steps.push("candidates: every embedded event (no filter)".into());
                Candidates::All
            } else {
                let (sql, params, step) = if vectors_alone {
                    let cap = format!("${}", select.params.len() + 1);
                    (
                        format!(
                            "SELECT e.ts, e.event_id, e.text_key FROM event_vectors e WHERE {} \
                             LIMIT {cap}",
                            conditions.join(" AND ")
                        ),
                        select.params,
                        "candidates: the embedded events the filter selects, from event_vectors \
                         alone (it keeps their time, host, type and severity)",
                    )
                } else {
                    // The time range again on the vectors' own copy of the time, so the
                    // planner can start from the range of `event_vectors` (PostgreSQL
                    // does not carry a range across the join's `v.ts = e.ts`).
                    conditions.extend(time_bounds("v.ts", time_conditions, &mut select));
                    let cap = format!("${}", select.params.len() + 1);
                    // Only embedded events can be ranked, so the threshold counts
                    // those; the join lets the planner start from the smaller side.
                    (
                        format!(
                            "SELECT e.ts, e.id, v.text_key FROM {} JOIN event_vectors v \
                             ON v.event_id = e.id AND v.ts = e.ts WHERE {} LIMIT {cap}",
                            entity.from_sql(),
                            conditions.join(" AND ")
                        ),
                        select.params,
                        "candidates: the embedded events the SQL filter selects",
                    )
                };
                let (recheck_sql, recheck_params) =
                    self.recheck_sql(entity, filter, time_conditions)?;
                steps.push(step.into());
                Candidates::Sql {
                    sql,
                    params,
                    recheck_sql,
                    recheck_params,
                }
            }
        };
        Ok(candidates)
    }

    /// Turns `compiled` into a `group_similar` query: the filter's embedded events,
    /// aggregated by alert group. Returns the plan's steps.
    fn group_similar(
        &self,
        compiled: &mut Compiled,
        filter: Option<&Expr>,
        time_conditions: &[TimeWindow],
    ) -> Result<Vec<String>, SrqlError> {
        let mut steps = vec![format!("select {}", compiled.entity.name())];
        let events = self.embedded_events(compiled, filter, time_conditions, &mut steps)?;
        steps.push(
            "aggregate the events by their alert group (their text's group in the window \
             of their time); groups of one pattern in consecutive windows merge"
                .into(),
        );
        steps.push(format!(
            "patterns with most events first, {} per page",
            compiled.limit
        ));
        compiled.path = ExecPath::Groups;
        compiled.sql = String::new();
        compiled.params = Vec::new();
        compiled.count_sql = None;
        compiled.count_params = Vec::new();
        compiled.columns = GROUP_COLUMNS.iter().map(|c| (*c).to_owned()).collect();
        if events == Candidates::All {
            compiled.search = None;
        }
        compiled.group_similar = Some(GroupSimilar { events });
        Ok(steps)
    }

    /// `host:NAME | blast_radius(…) [| limit:N]`: the node, the walk, the rows.
    fn blast_radius(&self, query: &Query, stage: &Stage) -> Result<Compiled, SrqlError> {
        let Stage::BlastRadius {
            depth,
            direction,
            column,
        } = stage
        else {
            unreachable!("called with the blast_radius stage")
        };
        let start = "one node to start from before `blast_radius`: `host:NAME`, \
                     `host:10.0.0.5` or `host:\"db-01:5432\"`";
        let node = match &query.filter {
            Some(Expr::Field {
                field,
                value: Value::Word(node) | Value::Phrase(node),
                ..
            }) if field == "host" => node.clone(),
            Some(other) => {
                return Err(err(
                    expr_column(other),
                    start,
                    "a filter other than one `host:` term",
                ))
            }
            None => return Err(err(*column, start, "no filter")),
        };
        let mut limit = None;
        for other in &query.stages {
            match other {
                Stage::BlastRadius { column: c, .. } if c == column => {}
                Stage::Limit { rows } => limit = Some(*rows),
                Stage::BlastRadius { column, .. } => {
                    return Err(err(*column, "one `blast_radius` stage", "a second one"))
                }
                Stage::Sort { column, .. }
                | Stage::Stats { column, .. }
                | Stage::SimilarTo { column, .. }
                | Stage::GroupSimilar { column } => {
                    return Err(err(
                        *column,
                        "only `limit:` with `blast_radius` (its rows come most at risk first)",
                        format!("`{other}`"),
                    ))
                }
            }
        }
        let limit = self
            .options
            .limit
            .or(limit)
            .unwrap_or(self.options.default_limit)
            .clamp(1, self.options.max_limit.max(1));
        let columns: Vec<String> = [
            "node", "kind", "host", "process", "hops", "path", "risk", "evidence",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        let steps = vec![
            format!("start at {node:?} in the connection graph (a host, an address or host:port)"),
            format!(
                "walk {} connections up to {depth} hops (a service and the host it runs on \
                 count as one hop), one shortest path per node",
                direction.as_str()
            ),
            "risk evidence per host from PostgreSQL: open critical/high CVEs, running \
             vulnerable packages, alerts of the last 24 hours"
                .into(),
            format!("rank most at risk first, nearer first among equals; first {limit}"),
        ];
        Ok(Compiled {
            entity: Entity::Events,
            ast: query.to_string(),
            path: ExecPath::Graph,
            plan: Plan { steps },
            sql: String::new(),
            params: Vec::new(),
            count_sql: None,
            count_params: Vec::new(),
            count_cap: COUNT_CAP,
            search: None,
            search_sort: SearchSort::Score,
            output: Output::Rows,
            columns,
            stats_order: None,
            limit,
            offset: self.options.offset,
            similar: None,
            blast_radius: Some(BlastRadiusQuery {
                node,
                depth: *depth,
                direction: *direction,
            }),
            group_similar: None,
        })
    }

    /// Lifts `in:`, `time:`, `today`, `sort:`, `limit:` and `stats:` out of the filter.
    fn lift(&self, expr: Expr, d: &mut Directives) -> Result<Option<Expr>, SrqlError> {
        let parts = match expr {
            Expr::And(parts) => parts,
            other => vec![other],
        };
        let mut kept = Vec::new();
        for part in parts {
            match &part {
                Expr::Field {
                    field,
                    value,
                    column,
                } if is_directive(field) => {
                    self.directive(field, value, *column, d)?;
                }
                Expr::Text {
                    text,
                    phrase: false,
                    column,
                } if text == "today" => {
                    d.time.push((Value::Word("today".into()), *column));
                }
                other => {
                    check_no_directive(other)?;
                    kept.push(part);
                }
            }
        }
        Ok(match kept.len() {
            0 => None,
            1 => kept.pop(),
            _ => Some(Expr::And(kept)),
        })
    }

    fn directive(
        &self,
        field: &str,
        value: &Value,
        column: usize,
        d: &mut Directives,
    ) -> Result<(), SrqlError> {
        let word = |v: &Value| match v {
            Value::Word(w) | Value::Phrase(w) => Some(w.clone()),
            _ => None,
        };
        match field {
            "in" => {
                let name = word(value)
                    .ok_or_else(|| err(column + 3, "an entity after `in:`", value.to_string()))?;
                let entity = Entity::parse(&name).ok_or_else(|| {
                    let names: Vec<_> = Entity::ALL.iter().map(|e| e.name()).collect();
                    err(
                        column + 3,
                        format!("one of {}", names.join(", ")),
                        format!("`{name}`"),
                    )
                })?;
                d.entity = Some((entity, column));
            }
            "time" => d.time.push((value.clone(), column)),
            "sort" => {
                let text = word(value)
                    .ok_or_else(|| err(column + 5, "a field after `sort:`", value.to_string()))?;
                let (f, dir) = match text.rsplit_once(':') {
                    Some((f, "desc")) => (f.to_owned(), true),
                    Some((f, "asc")) => (f.to_owned(), false),
                    _ => (text.clone(), true),
                };
                d.sort = Some((f, dir, column + 5));
            }
            "limit" => {
                let n = word(value)
                    .and_then(|w| w.parse::<u32>().ok())
                    .ok_or_else(|| err(column + 6, "a number after `limit:`", value.to_string()))?;
                d.limit = Some(n);
            }
            "stats" => {
                let spec = word(value).ok_or_else(|| {
                    err(
                        column + 6,
                        "a quoted stats spec after `stats:`",
                        value.to_string(),
                    )
                })?;
                let parsed = parse_with(&format!("| stats {spec}"), Limits::default())
                    .map_err(|e| err(column + 6, e.expected, e.found))?;
                d.stats = parsed.stages.into_iter().next();
            }
            _ => {}
        }
        Ok(())
    }

    /// Every field of the filter exists for the entity and suits its value.
    fn check_fields(&self, entity: Entity, expr: &Expr) -> Result<(), SrqlError> {
        match expr {
            Expr::And(parts) | Expr::Or(parts) => {
                parts.iter().try_for_each(|p| self.check_fields(entity, p))
            }
            Expr::Not(inner) => self.check_fields(entity, inner),
            Expr::Text { .. } => Ok(()),
            Expr::Field { field, column, .. } => {
                if dynamic_attribute(entity, field).is_some()
                    || catalogue::field(entity, field).is_some()
                {
                    Ok(())
                } else {
                    Err(unknown(entity, field, *column))
                }
            }
        }
    }

    /// Time windows `[lower, upper)` from `time:` and `today`.
    fn time_conditions(
        &self,
        _entity: Entity,
        times: &[(Value, usize)],
    ) -> Result<Vec<TimeWindow>, SrqlError> {
        times
            .iter()
            .map(|(v, column)| self.time_window(v, *column + 5))
            .collect()
    }

    fn time_window(&self, value: &Value, column: usize) -> Result<TimeWindow, SrqlError> {
        let now = self.options.now;
        match value {
            Value::Word(w) | Value::Phrase(w) => {
                if let Some(start) = relative(w).and_then(|since| now.checked_sub_signed(since)) {
                    return Ok((Some(start), None));
                }
                match w.as_str() {
                    "today" => return Ok((Some(start_of_day(now)), None)),
                    "yesterday" => {
                        return Ok((
                            Some(start_of_day(now) - Duration::days(1)),
                            Some(start_of_day(now)),
                        ))
                    }
                    _ => {}
                }
                let (start, end) = parse_instant(w).ok_or_else(|| time_error(column, w))?;
                Ok((Some(start), Some(end)))
            }
            Value::Range(a, b) => {
                let (start, _) = parse_instant(a).ok_or_else(|| time_error(column + 1, a))?;
                let (_, end) =
                    parse_instant(b).ok_or_else(|| time_error(column + 2 + a.len(), b))?;
                Ok((Some(start), Some(end)))
            }
            Value::Compare(op, w) => {
                let (start, end) =
                    parse_instant(w).ok_or_else(|| time_error(column + op.as_str().len(), w))?;
                Ok(match op {
                    CompareOp::Gt => (Some(end), None),
                    CompareOp::Ge => (Some(start), None),
                    CompareOp::Lt => (None, Some(start)),
                    CompareOp::Le => (None, Some(end)),
                })
            }
            other => Err(time_error(column, &other.to_string())),
        }
    }

    /// The output columns and kind.
    fn output_columns(
        &self,
        entity: Entity,
        stats: Option<&Stage>,
    ) -> Result<(Vec<String>, Output), SrqlError> {
        let Some(Stage::Stats { aggregates, by, .. }) = stats else {
            return Ok((
                entity
                    .columns()
                    .iter()
                    .map(|(n, _)| (*n).to_owned())
                    .collect(),
                Output::Rows,
            ));
        };
        let group_by: Vec<String> = by
            .iter()
            .map(|k| match k {
                GroupKey::Field { field, .. } => field.clone(),
                GroupKey::Bucket { .. } => "bucket".to_owned(),
            })
            .collect();
        let aggs: Vec<String> = aggregates
            .iter()
            .map(|a| match (&a.alias, &a.field) {
                (Some(alias), _) => alias.clone(),
                (None, Some(f)) => format!("{}_{}", a.function.as_str(), f.replace('.', "_")),
                (None, None) => a.function.as_str().to_owned(),
            })
            .collect();
        let count_only = aggregates
            .iter()
            .all(|a| a.function == AggregateFn::Count && a.field.is_none());
        let index_group = by
            .iter()
            .map(|k| match k {
                GroupKey::Field { field, .. } => catalogue::field(entity, field)
                    .filter(|f| matches!(f.kind, FieldKind::Keyword | FieldKind::Severity))
                    .and_then(|f| {
                        if f.kind == FieldKind::Severity {
                            Some("severity")
                        } else {
                            f.search
                        }
                    })
                    .filter(|s| !s.contains('.'))
                    .map(str::to_owned),
                GroupKey::Bucket { .. } => None,
            })
            .collect::<Option<Vec<String>>>()
            .filter(|keys| count_only && !keys.is_empty() && entity.is_event());
        let mut columns = group_by.clone();
        columns.extend(aggs.iter().cloned());
        Ok((
            columns,
            Output::Stats {
                group_by,
                aggregates: aggs,
                index_group,
            },
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn stats_sql(
        &self,
        entity: Entity,
        stats: Option<&Stage>,
        sort: Option<&(String, bool, usize)>,
        from: &str,
        where_sql: &str,
        sql: &mut Sql,
        compiled: &Compiled,
    ) -> Result<String, SrqlError> {
        let Some(Stage::Stats { aggregates, by, .. }) = stats else {
            return Err(err(1, "a stats stage", "none"));
        };
        let mut select = Vec::new();
        for key in by {
            match key {
                GroupKey::Field { field, column } => {
                    let f = catalogue::field(entity, field)
                        .ok_or_else(|| unknown(entity, field, *column))?;
                    let expr = entity.display_sql(f).ok_or_else(|| {
                        err(
                            *column,
                            "a field PostgreSQL can group by",
                            format!("`{field}`"),
                        )
                    })?;
                    select.push(expr.to_owned());
                }
                GroupKey::Bucket {
                    field,
                    width,
                    column,
                } => {
                    let f = catalogue::field(entity, field)
                        .filter(|f| f.kind == FieldKind::Time)
                        .ok_or_else(|| {
                            err(
                                *column + 7,
                                "a time field in `bucket(`",
                                format!("`{field}`"),
                            )
                        })?;
                    let interval = bucket_interval(width).ok_or_else(|| {
                        err(
                            *column,
                            "a bucket width such as 15m, 1h or 1d",
                            format!("`{width}`"),
                        )
                    })?;
                    let p = sql.push(Param::Text(interval));
                    select.push(format!(
                        "date_bin({p}::interval, {}, TIMESTAMPTZ '2000-01-01 00:00:00+00')",
                        f.sql.unwrap_or("ts")
                    ));
                }
            }
        }
        for agg in aggregates {
            let expr = match (agg.function, &agg.field) {
                (AggregateFn::Count, None) => "count(*)".to_owned(),
                (function, Some(field)) => {
                    let f = catalogue::field(entity, field)
                        .ok_or_else(|| unknown(entity, field, agg.column))?;
                    let numeric = matches!(f.kind, FieldKind::Int | FieldKind::Float);
                    let expr = f.sql.ok_or_else(|| {
                        err(
                            agg.column,
                            "a field PostgreSQL can aggregate",
                            format!("`{field}`"),
                        )
                    })?;
                    if function == AggregateFn::Count {
                        format!("count({expr})")
                    } else if numeric
                        || (f.kind == FieldKind::Time
                            && matches!(function, AggregateFn::Min | AggregateFn::Max))
                    {
                        format!("{}({expr})", function.as_str())
                    } else {
                        return Err(err(
                            agg.column,
                            format!("a number field in `{}(…)`", function.as_str()),
                            format!("`{field}` ({:?})", f.kind).to_lowercase(),
                        ));
                    }
                }
                (function, None) => {
                    return Err(err(
                        agg.column,
                        format!("a field in `{}(…)`", function.as_str()),
                        "nothing",
                    ));
                }
            };
            select.push(expr);
        }
        let group = if by.is_empty() {
            String::new()
        } else {
            format!(
                " GROUP BY {}",
                (1..=by.len())
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let order = match sort {
            Some((field, desc, column)) => {
                let pos = compiled
                    .columns
                    .iter()
                    .position(|c| c == field)
                    .ok_or_else(|| {
                        err(
                            *column,
                            format!("a column of the stats: {}", compiled.columns.join(", ")),
                            format!("`{field}`"),
                        )
                    })?;
                format!(
                    "{} {} NULLS LAST",
                    pos + 1,
                    if *desc { "DESC" } else { "ASC" }
                )
            }
            None => format!("{} DESC", by.len() + 1),
        };
        let lim = sql.push(Param::Int(i64::from(compiled.limit) + 1));
        let off = sql.push(Param::Int(
            i64::try_from(self.options.offset).unwrap_or(i64::MAX),
        ));
        Ok(format!(
            "SELECT {} FROM {from}{where_sql}{group} ORDER BY {order} LIMIT {lim} OFFSET {off}",
            select_list(select.iter().map(String::as_str))
        ))
    }

    /// The filter as SQL.
    fn sql_expr(&self, entity: Entity, expr: &Expr, sql: &mut Sql) -> Result<String, SrqlError> {
        Ok(match expr {
            Expr::And(parts) => format!(
                "({})",
                parts
                    .iter()
                    .map(|p| self.sql_expr(entity, p, sql))
                    .collect::<Result<Vec<_>, _>>()?
                    .join(" AND ")
            ),
            Expr::Or(parts) => format!(
                "({})",
                parts
                    .iter()
                    .map(|p| self.sql_expr(entity, p, sql))
                    .collect::<Result<Vec<_>, _>>()?
                    .join(" OR ")
            ),
            Expr::Not(inner) => format!("NOT {}", self.sql_expr(entity, inner, sql)?),
            Expr::Text { text, .. } => {
                let p = sql.push(Param::Text(format!("%{}%", like_escape(text))));
                let cols: Vec<String> = entity
                    .text_columns()
                    .iter()
                    .map(|c| format!("{c} ILIKE {p}"))
                    .collect();
                format!("({})", cols.join(" OR "))
            }
            Expr::Field {
                field,
                value,
                column,
            } => {
                if let Some(key) = dynamic_attribute(entity, field) {
                    let k = sql.push(Param::Text(key.to_owned()));
                    let expr = format!("e.attributes->>{k}");
                    return keyword_sql(&expr, value, sql, *column, field);
                }
                let f = catalogue::field(entity, field)
                    .ok_or_else(|| unknown(entity, field, *column))?;
                let Some(expr) = f.sql else {
                    return Err(err(
                        *column,
                        "a field PostgreSQL holds",
                        format!("`{field}`, which only the search index answers"),
                    ));
                };
                self.field_sql(f, expr, value, sql, *column)?
            }
        })
    }

    fn field_sql(
        &self,
        f: &Field,
        expr: &str,
        value: &Value,
        sql: &mut Sql,
        column: usize,
    ) -> Result<String, SrqlError> {
        let vcol = column + f.name.len() + 1;
        match f.kind {
            FieldKind::Uuid => match value {
                Value::Word(w) | Value::Phrase(w) => {
                    check_uuid(w, vcol)?;
                    Ok(format!(
                        "{expr} = {}::uuid",
                        sql.push(Param::Text(w.clone()))
                    ))
                }
                Value::List(items) => {
                    items.iter().try_for_each(|i| check_uuid(i, vcol))?;
                    Ok(format!(
                        "{expr} = ANY({}::uuid[])",
                        sql.push(Param::TextArray(items.clone()))
                    ))
                }
                other => Err(err(
                    vcol,
                    format!("a UUID or a list of UUIDs for `{}:`", f.name),
                    format!("`{other}`"),
                )),
            },
            FieldKind::Keyword => keyword_sql(expr, value, sql, column, f.name),
            FieldKind::Text => match value {
                Value::Word(w) | Value::Phrase(w) => Ok(format!(
                    "{expr} ILIKE {}",
                    sql.push(Param::Text(format!("%{}%", like_escape(w))))
                )),
                Value::Pattern { .. } => keyword_sql(expr, value, sql, column, f.name),
                other => Err(err(
                    vcol,
                    format!("words or a pattern for `{}:`", f.name),
                    other.to_string(),
                )),
            },
            FieldKind::Int | FieldKind::Float => {
                let num = |s: &str, col: usize| number(f, s, col).map(Number::param);
                match value {
                    Value::Word(w) => Ok(format!("{expr} = {}", sql.push(num(w, vcol)?))),
                    Value::Compare(op, w) => Ok(format!(
                        "{expr} {} {}",
                        op.as_str(),
                        sql.push(num(w, vcol + op.as_str().len())?)
                    )),
                    Value::Range(a, b) => {
                        let (pa, pb) = (num(a, vcol + 1)?, num(b, vcol + 2 + a.len())?);
                        Ok(format!(
                            "{expr} BETWEEN {} AND {}",
                            sql.push(pa),
                            sql.push(pb)
                        ))
                    }
                    Value::List(items) => {
                        let parsed = items
                            .iter()
                            .map(|i| num(i, vcol))
                            .collect::<Result<Vec<_>, _>>()?;
                        let texts = parsed
                            .iter()
                            .map(|p| match p {
                                Param::Int(n) => n.to_string(),
                                Param::Float(x) => x.to_string(),
                                _ => String::new(),
                            })
                            .collect();
                        let cast = if f.kind == FieldKind::Int {
                            "bigint"
                        } else {
                            "double precision"
                        };
                        Ok(format!(
                            "{expr} = ANY({}::{cast}[])",
                            sql.push(Param::TextArray(texts))
                        ))
                    }
                    other => Err(err(
                        vcol,
                        format!("a number for `{}:`", f.name),
                        other.to_string(),
                    )),
                }
            }
            FieldKind::Severity => {
                let level = level_of;
                match value {
                    Value::Word(w) => Ok(format!(
                        "{expr} = {}",
                        sql.push(Param::Int(level(w, vcol)?))
                    )),
                    Value::Compare(op, w) => Ok(format!(
                        "{expr} {} {}",
                        op.as_str(),
                        sql.push(Param::Int(level(w, vcol + op.as_str().len())?))
                    )),
                    Value::List(items) => {
                        let levels = items
                            .iter()
                            .map(|i| level(i, vcol).map(|l| l.to_string()))
                            .collect::<Result<Vec<_>, _>>()?;
                        Ok(format!(
                            "{expr} = ANY({}::smallint[])",
                            sql.push(Param::TextArray(levels))
                        ))
                    }
                    other => Err(err(
                        vcol,
                        "a severity, a comparison or a list",
                        other.to_string(),
                    )),
                }
            }
            FieldKind::Time => {
                let (lower, upper) = self.time_window(value, vcol)?;
                let mut parts = Vec::new();
                if let Some(l) = lower {
                    parts.push(format!("{expr} >= {}", sql.push(Param::Time(l))));
                }
                if let Some(u) = upper {
                    parts.push(format!("{expr} < {}", sql.push(Param::Time(u))));
                }
                Ok(format!("({})", parts.join(" AND ")))
            }
            FieldKind::Ip => match value {
                Value::Word(w) if w.contains('/') => {
                    check_cidr(w, vcol)?;
                    Ok(format!(
                        "({expr})::inet <<= {}::inet",
                        sql.push(Param::Text(w.clone()))
                    ))
                }
                Value::Word(w) | Value::Phrase(w) => {
                    check_cidr(w, vcol)?;
                    Ok(format!("{expr} = {}", sql.push(Param::Text(w.clone()))))
                }
                Value::List(items) => Ok(format!(
                    "{expr} = ANY({})",
                    sql.push(Param::TextArray(items.clone()))
                )),
                other => Err(err(vcol, "an IP address or CIDR block", other.to_string())),
            },
            FieldKind::Json => Err(err(
                column,
                "a field of the entity (keys of event attributes: `attributes.<key>:value`)",
                format!("`{}:` on the whole object", f.name),
            )),
        }
    }

    /// The filter as a search-index query.
    fn search_expr(&self, entity: Entity, expr: &Expr) -> Result<SearchQuery, SrqlError> {
        Ok(match expr {
            Expr::And(parts) => SearchQuery::And(
                parts
                    .iter()
                    .map(|p| self.search_expr(entity, p))
                    .collect::<Result<_, _>>()?,
            ),
            Expr::Or(parts) => SearchQuery::Or(
                parts
                    .iter()
                    .map(|p| self.search_expr(entity, p))
                    .collect::<Result<_, _>>()?,
            ),
            Expr::Not(inner) => SearchQuery::Not(Box::new(self.search_expr(entity, inner)?)),
            Expr::Text {
                text, phrase: true, ..
            } => SearchQuery::Phrase {
                field: "text".into(),
                text: text.clone(),
            },
            Expr::Text { text, .. } => SearchQuery::Text {
                field: "text".into(),
                text: text.clone(),
            },
            Expr::Field {
                field,
                value,
                column,
            } => {
                if let Some(key) = dynamic_attribute(entity, field) {
                    return keyword_search(&format!("attributes.{key}"), value, *column, field);
                }
                let f = catalogue::field(entity, field)
                    .ok_or_else(|| unknown(entity, field, *column))?;
                let Some(target) = f.search else {
                    return Err(err(
                        *column,
                        "a field the search index holds",
                        format!("`{field}`"),
                    ));
                };
                self.field_search(f, target, value, *column)?
            }
        })
    }

    fn field_search(
        &self,
        f: &Field,
        target: &str,
        value: &Value,
        column: usize,
    ) -> Result<SearchQuery, SrqlError> {
        let vcol = column + f.name.len() + 1;
        let field = target.to_owned();
        match f.kind {
            FieldKind::Keyword | FieldKind::Uuid => keyword_search(target, value, column, f.name),
            FieldKind::Text => Ok(match value {
                Value::Word(w) => SearchQuery::Text {
                    field,
                    text: w.clone(),
                },
                Value::Phrase(p) => SearchQuery::Phrase {
                    field,
                    text: p.clone(),
                },
                Value::Pattern { pattern, like } => SearchQuery::Wildcard {
                    field,
                    pattern: if *like {
                        like_to_wildcard(pattern)
                    } else {
                        pattern.clone()
                    },
                },
                Value::List(items) => SearchQuery::Or(
                    items
                        .iter()
                        .map(|i| SearchQuery::Text {
                            field: field.clone(),
                            text: i.clone(),
                        })
                        .collect(),
                ),
                other => {
                    return Err(err(
                        vcol,
                        format!("words or a phrase for `{}:`", f.name),
                        other.to_string(),
                    ))
                }
            }),
            FieldKind::Int | FieldKind::Float => {
                let num = |s: &str, col: usize| number(f, s, col).map(Number::search);
                Ok(match value {
                    Value::Word(w) => SearchQuery::Term {
                        field,
                        value: num(w, vcol)?,
                    },
                    Value::Compare(op, w) => {
                        compare_range(field, *op, num(w, vcol + op.as_str().len())?)
                    }
                    Value::Range(a, b) => SearchQuery::Range {
                        field,
                        lower: Bound::Included(num(a, vcol + 1)?),
                        upper: Bound::Included(num(b, vcol + 2 + a.len())?),
                    },
                    Value::List(items) => any_of(items, |i| {
                        Ok(SearchQuery::Term {
                            field: field.clone(),
                            value: num(i, vcol)?,
                        })
                    })?,
                    other => {
                        return Err(err(
                            vcol,
                            format!("a number for `{}:`", f.name),
                            other.to_string(),
                        ))
                    }
                })
            }
            FieldKind::Severity => {
                let level =
                    |s: &str, col: usize| level_of(s, col).map(|l| SearchValue::U64(l as u64));
                Ok(match value {
                    Value::Word(w) => SearchQuery::Term {
                        field,
                        value: level(w, vcol)?,
                    },
                    Value::Compare(op, w) => {
                        compare_range(field, *op, level(w, vcol + op.as_str().len())?)
                    }
                    Value::List(items) => any_of(items, |i| {
                        Ok(SearchQuery::Term {
                            field: field.clone(),
                            value: level(i, vcol)?,
                        })
                    })?,
                    other => {
                        return Err(err(
                            vcol,
                            "a severity, a comparison or a list",
                            other.to_string(),
                        ))
                    }
                })
            }
            FieldKind::Time => {
                let (lower, upper) = self.time_window(value, vcol)?;
                Ok(SearchQuery::Range {
                    field,
                    lower: lower
                        .map(SearchValue::Date)
                        .map_or(Bound::Unbounded, Bound::Included),
                    upper: upper
                        .map(SearchValue::Date)
                        .map_or(Bound::Unbounded, Bound::Excluded),
                })
            }
            FieldKind::Ip => Ok(match value {
                Value::Word(w) | Value::Phrase(w) => {
                    check_cidr(w, vcol)?;
                    SearchQuery::IpCidr {
                        field,
                        cidr: w.clone(),
                    }
                }
                Value::List(items) => any_of(items, |i| {
                    check_cidr(i, vcol)?;
                    Ok(SearchQuery::IpCidr {
                        field: field.clone(),
                        cidr: i.clone(),
                    })
                })?,
                other => return Err(err(vcol, "an IP address or CIDR block", other.to_string())),
            }),
            FieldKind::Json => Err(err(
                column,
                format!("`{}.<key>:value`", f.name),
                format!("`{}:` on the whole object", f.name),
            )),
        }
    }
}

/// SQL text under construction: its parameters, numbered after `base` fixed ones.
struct Sql {
    params: Vec<Param>,
    base: usize,
}

impl Sql {
    fn new(base: usize) -> Self {
        Sql {
            params: Vec::new(),
            base,
        }
    }

    fn push(&mut self, p: Param) -> String {
        self.params.push(p);
        format!("${}", self.base + self.params.len())
    }
}

fn select_list<'a>(exprs: impl Iterator<Item = &'a str>) -> String {
    exprs
        .enumerate()
        .map(|(i, e)| format!("{e} AS c{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn keyword_sql(
    expr: &str,
    value: &Value,
    sql: &mut Sql,
    column: usize,
    name: &str,
) -> Result<String, SrqlError> {
    match value {
        Value::Word(w) | Value::Phrase(w) => {
            Ok(format!("{expr} = {}", sql.push(Param::Text(w.clone()))))
        }
        Value::Pattern {
            pattern,
            like: false,
        } => Ok(format!(
            "{expr} ILIKE {}",
            sql.push(Param::Text(wildcard_to_like(pattern)))
        )),
        Value::Pattern {
            pattern,
            like: true,
        } => Ok(format!(
            "{expr} ILIKE {}",
            sql.push(Param::Text(pattern.clone()))
        )),
        Value::List(items) => Ok(format!(
            "{expr} = ANY({})",
            sql.push(Param::TextArray(items.clone()))
        )),
        other => Err(err(
            column + name.len() + 1,
            format!("a value, a list or a pattern for `{name}:`"),
            format!("`{other}`"),
        )),
    }
}

fn keyword_search(
    target: &str,
    value: &Value,
    column: usize,
    name: &str,
) -> Result<SearchQuery, SrqlError> {
    let field = target.to_owned();
    Ok(match value {
        Value::Word(w) | Value::Phrase(w) => SearchQuery::Term {
            field,
            value: SearchValue::Str(w.clone()),
        },
        Value::Pattern { pattern, like } => SearchQuery::Wildcard {
            field,
            pattern: if *like {
                like_to_wildcard(pattern)
            } else {
                pattern.clone()
            },
        },
        Value::List(items) => SearchQuery::Or(
            items
                .iter()
                .map(|i| SearchQuery::Term {
                    field: field.clone(),
                    value: SearchValue::Str(i.clone()),
                })
                .collect(),
        ),
        other => {
            return Err(err(
                column + name.len() + 1,
                format!("a value, a list or a pattern for `{name}:`"),
                format!("`{other}`"),
            ))
        }
    })
}

fn compare_range(field: String, op: CompareOp, v: SearchValue) -> SearchQuery {
    let (lower, upper) = match op {
        CompareOp::Gt => (Bound::Excluded(v), Bound::Unbounded),
        CompareOp::Ge => (Bound::Included(v), Bound::Unbounded),
        CompareOp::Lt => (Bound::Unbounded, Bound::Excluded(v)),
        CompareOp::Le => (Bound::Unbounded, Bound::Included(v)),
    };
    SearchQuery::Range {
        field,
        lower,
        upper,
    }
}

/// Events subsets as conditions.
/// `(a, b, …)`: any of the items, each turned into a query by `each`.
fn any_of(
    items: &[String],
    each: impl FnMut(&String) -> Result<SearchQuery, SrqlError>,
) -> Result<SearchQuery, SrqlError> {
    Ok(SearchQuery::Or(
        items.iter().map(each).collect::<Result<_, _>>()?,
    ))
}

fn entity_sql(entity: Entity, sql: &mut Sql) -> Option<String> {
    match entity {
        Entity::Alerts => Some(format!(
            "e.type = ANY({})",
            sql.push(Param::TextArray(alert_types()))
        )),
        Entity::Logs => Some(format!("e.type = {}", sql.push(Param::Text("log".into())))),
        _ => None,
    }
}

fn entity_search(entity: Entity) -> Option<SearchQuery> {
    match entity {
        Entity::Alerts => Some(SearchQuery::Or(
            alert_types()
                .into_iter()
                .map(|t| SearchQuery::Term {
                    field: "type".into(),
                    value: SearchValue::Str(t),
                })
                .collect(),
        )),
        Entity::Logs => Some(SearchQuery::Term {
            field: "type".into(),
            value: SearchValue::Str("log".into()),
        }),
        _ => None,
    }
}

fn alert_types() -> Vec<String> {
    vec![
        "falco_alert".into(),
        "xdp_drop".into(),
        "malware_finding".into(),
    ]
}

fn is_directive(field: &str) -> bool {
    matches!(field, "in" | "time" | "sort" | "limit" | "stats")
}

fn check_no_directive(expr: &Expr) -> Result<(), SrqlError> {
    match expr {
        Expr::And(parts) | Expr::Or(parts) => parts.iter().try_for_each(check_no_directive),
        Expr::Not(inner) => check_no_directive(inner),
        Expr::Field { field, column, .. } if is_directive(field) => Err(err(
            *column,
            format!("`{field}:` as a term of its own, outside OR, NOT and parentheses"),
            format!("`{field}:` inside an expression"),
        )),
        _ => Ok(()),
    }
}

/// Whether the filter has a part only the search index answers.
fn needs_search(entity: Entity, expr: &Expr) -> bool {
    !every_condition(expr, &|condition| match condition {
        Expr::Field { field, .. } => {
            catalogue::field(entity, field).is_none_or(|f| f.sql.is_some())
        }
        _ => false,
    })
}

/// Whether `holds` holds for every condition (a word, a phrase or `field:value`)
/// under the filter's ANDs, ORs and NOTs.
fn every_condition(expr: &Expr, holds: &impl Fn(&Expr) -> bool) -> bool {
    match expr {
        Expr::And(parts) | Expr::Or(parts) => parts.iter().all(|p| every_condition(p, holds)),
        Expr::Not(inner) => every_condition(inner, holds),
        condition => holds(condition),
    }
}

/// `attributes.<key>` on events.
fn dynamic_attribute(entity: Entity, field: &str) -> Option<&str> {
    if !entity.is_event() {
        return None;
    }
    field.strip_prefix("attributes.").filter(|k| !k.is_empty())
}

/// The `events` columns that `event_vectors` keeps too, under the same names.
const VECTOR_COLUMNS: [&str; 4] = ["e.ts", "e.host", "e.type", "e.severity_level"];

/// Whether every condition of `expr` is on a column `event_vectors` keeps, so that
/// its SQL holds there as it is.
fn over_vector_columns(entity: Entity, expr: &Expr) -> bool {
    every_condition(expr, &|condition| match condition {
        Expr::Field { field, .. } => {
            dynamic_attribute(entity, field).is_none()
                && catalogue::field(entity, field)
                    .and_then(|f| f.sql)
                    .is_some_and(|sql| VECTOR_COLUMNS.contains(&sql))
        }
        _ => false,
    })
}

/// The column where `expr` starts.
fn expr_column(expr: &Expr) -> usize {
    match expr {
        Expr::And(parts) | Expr::Or(parts) => parts.first().map_or(1, expr_column),
        Expr::Not(inner) => expr_column(inner).saturating_sub(1).max(1),
        Expr::Text { column, .. } | Expr::Field { column, .. } => *column,
    }
}

fn check_similar(entity: Entity, d: &Directives, column: usize) -> Result<(), SrqlError> {
    check_own_rows(
        entity,
        d,
        column,
        "SIMILAR_TO",
        "either `stats` or `SIMILAR_TO` (stats of similar events come later)",
        "no `sort:` with `SIMILAR_TO` (its rows come most similar first)",
    )
}

/// The rules of a stage that makes its own rows out of events (`SIMILAR_TO`,
/// `group_similar`): over events, alerts or logs, and with neither `stats` nor
/// `sort:`. `with_stats` and `with_sort` say what was expected instead.
fn check_own_rows(
    entity: Entity,
    d: &Directives,
    column: usize,
    stage: &str,
    with_stats: &str,
    with_sort: &str,
) -> Result<(), SrqlError> {
    if !entity.is_event() {
        return Err(err(
            column,
            format!("`{stage}` over events, alerts or logs"),
            format!("`{stage}` over `in:{}`", entity.name()),
        ));
    }
    if let Some(Stage::Stats { column, .. }) = &d.stats {
        return Err(err(*column, with_stats, format!("`stats` with `{stage}`")));
    }
    if let Some((field, _, column)) = &d.sort {
        return Err(err(*column, with_sort, format!("`sort:{field}`")));
    }
    Ok(())
}

/// The columns of a `group_similar` answer, one row per attack pattern.
pub const GROUP_COLUMNS: &[&str] = &[
    "id",
    "groups",
    "events",
    "texts",
    "host_count",
    "hosts",
    "rule_count",
    "rules",
    "first_seen",
    "last_seen",
    "exemplar",
];

/// `SIMILAR_TO`'s own checks run first (the compiler calls [`check_similar`]
/// before this), so with both stages only the pair itself is left to refuse.
fn check_group_similar(entity: Entity, d: &Directives, column: usize) -> Result<(), SrqlError> {
    check_own_rows(
        entity,
        d,
        column,
        "group_similar",
        "either `stats` or `group_similar`",
        "no `sort:` with `group_similar` (patterns come largest first)",
    )?;
    if let Some((_, _, similar)) = &d.similar {
        return Err(err(
            *similar,
            "either `SIMILAR_TO` or `group_similar`",
            "both",
        ));
    }
    Ok(())
}

fn unknown(entity: Entity, field: &str, column: usize) -> SrqlError {
    let near = catalogue::nearest(entity, field);
    let found = if near.is_empty() {
        format!("unknown field `{field}` for {}", entity.name())
    } else {
        format!(
            "unknown field `{field}` for {}; did you mean {}?",
            entity.name(),
            near.iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(" or ")
        )
    };
    err(
        column,
        format!(
            "a field of {} (GET /api/v1/fields lists them)",
            entity.name()
        ),
        found,
    )
}

fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

fn wildcard_to_like(pattern: &str) -> String {
    like_escape(pattern).replace('*', "%").replace('?', "_")
}

fn like_to_wildcard(pattern: &str) -> String {
    pattern.replace('%', "*").replace('_', "?")
}

/// A number typed by its field: whole for `Int` fields, else float.
enum Number {
    Int(i64),
    Float(f64),
}

impl Number {
    fn param(self) -> Param {
        match self {
            Number::Int(n) => Param::Int(n),
            Number::Float(x) => Param::Float(x),
        }
    }

    fn search(self) -> SearchValue {
        match self {
            Number::Int(n) => SearchValue::I64(n),
            Number::Float(x) => SearchValue::F64(x),
        }
    }
}

/// `s` as a number for field `f`, or the error at `column`.
fn number(f: &Field, s: &str, column: usize) -> Result<Number, SrqlError> {
    if f.kind == FieldKind::Int {
        s.parse::<i64>().map(Number::Int).map_err(|_| {
            err(
                column,
                format!("a whole number for `{}:`", f.name),
                format!("`{s}`"),
            )
        })
    } else {
        s.parse::<f64>().map(Number::Float).map_err(|_| {
            err(
                column,
                format!("a number for `{}:`", f.name),
                format!("`{s}`"),
            )
        })
    }
}

/// A severity name (or level 0–4) as its level, or the error at `column`.
fn level_of(s: &str, column: usize) -> Result<i64, SrqlError> {
    severity_level(s).ok_or_else(|| {
        err(
            column,
            "a severity: info, low, medium, high or critical",
            format!("`{s}`"),
        )
    })
}

fn severity_level(s: &str) -> Option<i64> {
    Some(match s.to_ascii_lowercase().as_str() {
        "info" | "informational" | "debug" | "0" => 0,
        "low" | "notice" | "1" => 1,
        "medium" | "warning" | "2" => 2,
        "high" | "error" | "3" => 3,
        "critical" | "alert" | "emergency" | "4" => 4,
        _ => return None,
    })
}

fn check_uuid(text: &str, column: usize) -> Result<(), SrqlError> {
    let hex = text.chars().filter(char::is_ascii_hexdigit).count();
    let shape = text.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    if shape && hex == 32 {
        Ok(())
    } else {
        Err(err(column, "a UUID", format!("`{text}`")))
    }
}

fn check_cidr(text: &str, column: usize) -> Result<(), SrqlError> {
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    let ip: std::net::IpAddr = addr
        .parse()
        .map_err(|_| err(column, "an IP address or CIDR block", format!("`{text}`")))?;
    if let Some(p) = prefix {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        match p.parse::<u8>() {
            Ok(n) if n <= max => {}
            _ => {
                return Err(err(
                    column + addr.len() + 1,
                    format!("a prefix length of 0 to {max}"),
                    format!("`{p}`"),
                ))
            }
        }
    }
    Ok(())
}

/// `last_24h`, `last_15m`, `last_7d`, `last_2w`.
fn relative(word: &str) -> Option<Duration> {
    let spec = word.strip_prefix("last_")?;
    let unit = spec.chars().last()?;
    let n: i64 = spec[..spec.len() - unit.len_utf8()].parse().ok()?;
    match unit {
        'm' => Duration::try_minutes(n),
        'h' => Duration::try_hours(n),
        'd' => Duration::try_days(n),
        'w' => Duration::try_weeks(n),
        _ => None,
    }
}

fn bucket_interval(width: &str) -> Option<String> {
    let unit = width.chars().last()?;
    let n: u32 = width[..width.len() - 1].parse().ok().filter(|n| *n > 0)?;
    Some(match unit {
        'm' => format!("{n} minutes"),
        'h' => format!("{n} hours"),
        'd' => format!("{n} days"),
        _ => return None,
    })
}

fn start_of_day(t: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(t.year(), t.month(), t.day(), 0, 0, 0)
        .single()
        .unwrap_or(t)
}

/// An instant, or a day: `[start, end)` of what the text names.
fn parse_instant(text: &str) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        let t = t.with_timezone(&Utc);
        return Some((t, t + Duration::microseconds(1)));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S") {
        let t = t.and_utc();
        return Some((t, t + Duration::seconds(1)));
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let t = d.and_hms_opt(0, 0, 0)?.and_utc();
        return Some((t, t + Duration::days(1)));
    }
    None
}

fn time_error(column: usize, text: &str) -> SrqlError {
    err(
        column,
        "a time: last_24h, today, 2026-11-01, 2026-11-01T10:00:00Z or [from,to]",
        format!("`{text}`"),
    )
}
