//! The syntax tree of an SRQL query, with a compact printed form used in tests and
//! `explain`.

use std::fmt;

use serde::Serialize;

/// A whole query: a filter, then pipe stages.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Query {
    /// The filter before the first `|`; `None` selects everything.
    pub filter: Option<Expr>,
    /// The stages after it, in order.
    pub stages: Vec<Stage>,
}

/// A boolean filter expression.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Expr {
    /// Every part must hold.
    And(Vec<Expr>),
    /// At least one part must hold.
    Or(Vec<Expr>),
    /// The part must not hold.
    Not(Box<Expr>),
    /// A bare word (`phrase: false`) or a "quoted phrase": full-text search.
    Text {
        /// The word or phrase.
        text: String,
        /// Whether it was quoted.
        phrase: bool,
        /// 1-based column where it starts.
        column: usize,
    },
    /// `field:value` in one of its forms.
    Field {
        /// The field name as written.
        field: String,
        /// What it is compared with.
        value: Value,
        /// 1-based column where the field name starts.
        column: usize,
    },
}

/// The right-hand side of `field:`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Value {
    /// A bare value: `host:web-01`.
    Word(String),
    /// A quoted value: `rule:"Terminal shell in container"`.
    Phrase(String),
    /// A wildcard with `*` / `?` (`proc.name:*ssh*`) or a LIKE pattern with `%` / `_`
    /// (`host:%web%`, ServiceRadar's form).
    Pattern {
        /// The pattern as written.
        pattern: String,
        /// `true` for the `%` form.
        like: bool,
    },
    /// `field:>N`, `field:>=N`, `field:<N`, `field:<=N`.
    Compare(CompareOp, String),
    /// `field:(a,b,c)`: any of them.
    List(Vec<String>),
    /// `field:[a,b]`: from a to b, both included.
    Range(String, String),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CompareOp {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
}

impl CompareOp {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
        }
    }
}

/// A pipe stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "stage", rename_all = "snake_case")]
pub enum Stage {
    /// `sort:field[:asc|:desc]`.
    Sort {
        /// Field or stats column.
        field: String,
        /// Descending when true.
        desc: bool,
        /// 1-based column of the field.
        column: usize,
    },
    /// `limit:N`.
    Limit {
        /// Rows.
        rows: u32,
    },
    /// `stats count() by host` or `stats:"count() as total by host"`.
    Stats {
        /// Aggregates, in order.
        aggregates: Vec<Aggregate>,
        /// Grouping keys, in order.
        by: Vec<GroupKey>,
        /// 1-based column of the stage.
        column: usize,
    },
    /// `SIMILAR_TO("text"[, k])`.
    SimilarTo {
        /// The text to compare with.
        text: String,
        /// How many nearest events (default 50).
        k: u32,
        /// 1-based column of the stage.
        column: usize,
    },
    /// `group_similar`: the filter's embedded events as attack patterns (groups of
    /// similar events), largest first.
    GroupSimilar {
        /// 1-based column of the stage.
        column: usize,
    },
    /// `blast_radius(depth:N, direction:outbound|inbound)`: what the node the
    /// filter names can reach over observed connections (or what reaches it).
    BlastRadius {
        /// Most connections to follow (default 3).
        depth: u32,
        /// `outbound` (default) or `inbound`.
        direction: PivotDirection,
        /// 1-based column of the stage.
        column: usize,
    },
}

/// Which way `blast_radius` walks the connection graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PivotDirection {
    /// Where an attacker on the node could pivot to.
    Outbound,
    /// What depends on the node.
    Inbound,
}

impl PivotDirection {
    /// `outbound` or `inbound`.
    pub fn as_str(self) -> &'static str {
        match self {
            PivotDirection::Outbound => "outbound",
            PivotDirection::Inbound => "inbound",
        }
    }
}

/// An aggregate of a stats stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Aggregate {
    /// count, sum, avg, min or max.
    pub function: AggregateFn,
    /// Its argument; `None` for `count()`.
    pub field: Option<String>,
    /// `as name`, when given.
    pub alias: Option<String>,
    /// 1-based column.
    pub column: usize,
}

/// Aggregate functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AggregateFn {
    /// Rows.
    Count,
    /// Sum of a number.
    Sum,
    /// Mean of a number.
    Avg,
    /// Smallest.
    Min,
    /// Largest.
    Max,
}

impl AggregateFn {
    /// The function's name.
    pub fn as_str(self) -> &'static str {
        match self {
            AggregateFn::Count => "count",
            AggregateFn::Sum => "sum",
            AggregateFn::Avg => "avg",
            AggregateFn::Min => "min",
            AggregateFn::Max => "max",
        }
    }
}

/// A grouping key: a field, or a time bucket of a field.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GroupKey {
    /// Group by a field's value.
    Field {
        /// The field.
        field: String,
        /// 1-based column.
        column: usize,
    },
    /// `bucket(ts, 1h)`: group by time buckets.
    Bucket {
        /// The time field.
        field: String,
        /// Bucket width as written (`15m`, `1h`, `1d`).
        width: String,
        /// 1-based column.
        column: usize,
    },
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Word(w) => write!(f, "{w}"),
            Value::Phrase(p) => write!(f, "{}", quote(p)),
            Value::Pattern { pattern, .. } => write!(f, "{pattern}"),
            Value::Compare(op, v) => write!(f, "{}{v}", op.as_str()),
            Value::List(items) => write!(f, "({})", items.join(",")),
            Value::Range(a, b) => write!(f, "[{a},{b}]"),
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |f: &mut fmt::Formatter<'_>, op: &str, parts: &[Expr]| {
            write!(f, "({op}")?;
            for p in parts {
                write!(f, " {p}")?;
            }
            write!(f, ")")
        };
        match self {
            Expr::And(parts) => list(f, "AND", parts),
            Expr::Or(parts) => list(f, "OR", parts),
            Expr::Not(inner) => write!(f, "(NOT {inner})"),
            Expr::Text {
                text, phrase: true, ..
            } => write!(f, "{}", quote(text)),
            Expr::Text { text, .. } => write!(f, "{text}"),
            Expr::Field { field, value, .. } => write!(f, "{field}:{value}"),
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stage::Sort { field, desc, .. } => {
                write!(f, "sort:{field}:{}", if *desc { "desc" } else { "asc" })
            }
            Stage::Limit { rows } => write!(f, "limit:{rows}"),
            Stage::Stats { aggregates, by, .. } => {
                let aggs: Vec<String> = aggregates
                    .iter()
                    .map(|a| {
                        let mut s = format!(
                            "{}({})",
                            a.function.as_str(),
                            a.field.as_deref().unwrap_or("")
                        );
                        if let Some(alias) = &a.alias {
                            s.push_str(&format!(" as {alias}"));
                        }
                        s
                    })
                    .collect();
                write!(f, "stats {}", aggs.join(", "))?;
                if !by.is_empty() {
                    let keys: Vec<String> = by
                        .iter()
                        .map(|k| match k {
                            GroupKey::Field { field, .. } => field.clone(),
                            GroupKey::Bucket { field, width, .. } => {
                                format!("bucket({field}, {width})")
                            }
                        })
                        .collect();
                    write!(f, " by {}", keys.join(", "))?;
                }
                Ok(())
            }
            Stage::SimilarTo { text, k, .. } => write!(f, "SIMILAR_TO({}, {k})", quote(text)),
            Stage::GroupSimilar { .. } => write!(f, "group_similar"),
            Stage::BlastRadius {
                depth, direction, ..
            } => write!(
                f,
                "blast_radius(depth:{depth}, direction:{})",
                direction.as_str()
            ),
        }
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.filter {
            Some(filter) => write!(f, "{filter}")?,
            None => write!(f, "*")?,
        }
        for stage in &self.stages {
            write!(f, " | {stage}")?;
        }
        Ok(())
    }
}
