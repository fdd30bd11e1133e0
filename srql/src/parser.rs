//! The SRQL grammar, one function per rule (nom).
//!
//! ```text
//! query      = ( filter | similar_to | "group_similar" )? ( "|" stage )* EOF
//! filter     = or
//! or         = and ( "OR" and )*
//! and        = unary ( "AND"? unary )*                 -- juxtaposition is AND
//! unary      = ( "NOT" | "-" | "!" ) unary | primary
//! primary    = "(" or ")" | field_expr | phrase | word
//! field_expr = field ":" value
//! field      = [A-Za-z_] [A-Za-z0-9_.\-]*
//! value      = compare | list | range | phrase | atom    -- atom with * ? or % is a pattern
//! compare    = ( ">=" | "<=" | ">" | "<" ) ( phrase | atom )
//! list       = "(" item ( "," item )* ")"
//! range      = "[" item "," item "]"
//! item       = phrase | atom
//! stage      = sort | limit | stats | similar_to | "group_similar" | blast_radius
//! sort       = "sort:" field ( ":" ( "asc" | "desc" ) )?
//! limit      = "limit:" digits
//! stats      = "stats:" phrase | "stats" aggregate ( "," aggregate )* ( "by" key ( "," key )* )?
//! aggregate  = ( "count" | "sum" | "avg" | "min" | "max" ) "(" field? ")" ( "as" name )?
//! key        = "bucket(" field "," width ")" | field                 -- width: 15m, 1h, 1d
//! similar_to = "SIMILAR_TO(" phrase ( "," digits )? ")"        -- k from 1 to 1000, default 50
//! blast_radius = "blast_radius(" ( option ( "," option )* )? ")"
//! option     = "depth:" digits | "direction:" ( "outbound" | "inbound" )  -- depth 1 to 10, default 3
//! phrase     = '"' ( [^"\\] | "\\" any )* '"'
//! word       = [^ whitespace ( ) | "]+
//! atom       = [^ whitespace ( ) [ ] , | "]+
//! ```
//!
//! `AND`, `OR` and `NOT` are keywords only in capitals. Whitespace separates tokens.
//! ServiceRadar's forms `in:`, `time:`, `sort:`, `limit:` and `stats:"…"` may also
//! appear as terms of the filter; the compiler lifts them out.

use nom::branch::alt;
use nom::bytes::complete::{tag, take_while, take_while1};
use nom::character::complete::{char, digit1, multispace0, multispace1};
use nom::combinator::{cut, opt};
use nom::error::{ErrorKind, ParseError};
use nom::{IResult, Parser};

use crate::ast::{
    Aggregate, AggregateFn, CompareOp, Expr, GroupKey, PivotDirection, Query, Stage, Value,
};
use crate::error::{Limits, SrqlError};

/// Most hops `blast_radius(depth:N)` may walk.
pub const MAX_BLAST_DEPTH: u32 = 10;

/// Most neighbours `SIMILAR_TO("…", k)` may ask for.
pub const MAX_NEIGHBOURS: u32 = 1000;

/// A parse failure: where (the input left) and what was expected there.
#[derive(Debug, Clone, PartialEq)]
pub struct PErr<'a> {
    at: &'a str,
    expected: String,
}

impl<'a> ParseError<&'a str> for PErr<'a> {
    fn from_error_kind(input: &'a str, kind: ErrorKind) -> Self {
        PErr {
            at: input,
            expected: format!("{kind:?}").to_lowercase(),
        }
    }

    fn append(_: &'a str, _: ErrorKind, other: Self) -> Self {
        other
    }

    fn or(self, other: Self) -> Self {
        // Keep the error that got furthest.
        if other.at.len() < self.at.len() {
            other
        } else {
            self
        }
    }
}

type Res<'a, T> = IResult<&'a str, T, PErr<'a>>;

fn fail<'a, T>(at: &'a str, expected: impl Into<String>) -> Res<'a, T> {
    Err(nom::Err::Error(PErr {
        at,
        expected: expected.into(),
    }))
}

fn failure<'a, T>(at: &'a str, expected: impl Into<String>) -> Res<'a, T> {
    Err(nom::Err::Failure(PErr {
        at,
        expected: expected.into(),
    }))
}

/// The parser's state: the whole input (for columns) and the limits.
struct Grammar<'s> {
    source: &'s str,
    limits: Limits,
    terms: std::cell::Cell<usize>,
}

impl<'s> Grammar<'s> {
    /// The 1-based column (in characters) where `rest` starts. `rest` is a slice of the
    /// source, though not always a suffix (a quoted stats spec is parsed in place), so
    /// its start is its distance from the source's start; anything else is the end.
    fn column(&self, rest: &str) -> usize {
        let start = (rest.as_ptr() as usize)
            .checked_sub(self.source.as_ptr() as usize)
            .filter(|start| *start <= self.source.len())
            .unwrap_or(self.source.len());
        let before = self
            .source
            .get(..start)
            .unwrap_or(self.source)
            .chars()
            .count();
        before + 1
    }

    /// query = filter? ( "|" stage )* EOF
    fn query(&self, input: &'s str) -> Res<'s, Query> {
        let (mut rest, _) = multispace0(input)?;
        let mut stages = Vec::new();
        let filter = if rest.is_empty() || rest.starts_with('|') {
            None
        } else if rest.starts_with("SIMILAR_TO(") || opens_with_group_similar(rest) {
            // A query may open with `SIMILAR_TO(…)` or `group_similar`: over every
            // embedded event.
            let (r, stage) = cut(|i| self.stage(i)).parse(rest)?;
            stages.push(stage);
            rest = r;
            None
        } else {
            let (r, f) = self.or(rest, 0)?;
            rest = r;
            Some(f)
        };
        loop {
            let (r, _) = multispace0(rest)?;
            rest = r;
            if rest.is_empty() {
                break;
            }
            let Some(after) = rest.strip_prefix('|') else {
                return failure(rest, "`|`, an operator, or the end of the query");
            };
            let (r, _) = multispace0(after)?;
            let (r, stage) = cut(|i| self.stage(i)).parse(r)?;
            stages.push(stage);
            rest = r;
        }
        Ok((rest, Query { filter, stages }))
    }

    /// or = and ( "OR" and )*
    fn or(&self, input: &'s str, depth: usize) -> Res<'s, Expr> {
        let (mut rest, first) = self.and(input, depth)?;
        let mut parts = vec![first];
        loop {
            let (r, _) = multispace0(rest)?;
            match keyword("OR")(r) {
                Ok((r, _)) => {
                    let (r, _) = multispace0(r)?;
                    let (r, next) = cut(|i| self.and(i, depth)).parse(r)?;
                    parts.push(next);
                    rest = r;
                }
                Err(_) => break,
            }
        }
        Ok((rest, flatten(parts, Expr::Or)))
    }

    /// and = unary ( "AND"? unary )*
    fn and(&self, input: &'s str, depth: usize) -> Res<'s, Expr> {
        let (mut rest, first) = self.unary(input, depth)?;
        let mut parts = vec![first];
        loop {
            let (r, _) = multispace0(rest)?;
            if r.is_empty() || r.starts_with('|') || r.starts_with(')') || keyword("OR")(r).is_ok()
            {
                break;
            }
            let (r, explicit) = match keyword("AND")(r) {
                Ok((r, _)) => (multispace0(r)?.0, true),
                Err(_) => (r, false),
            };
            let (r, next) = if explicit {
                cut(|i| self.unary(i, depth)).parse(r)?
            } else {
                self.unary(r, depth)?
            };
            parts.push(next);
            rest = r;
        }
        Ok((rest, flatten(parts, Expr::And)))
    }

    /// unary = ( "NOT" | "-" | "!" ) unary | primary
    fn unary(&self, input: &'s str, depth: usize) -> Res<'s, Expr> {
        if depth >= self.limits.max_depth {
            return failure(
                input,
                format!("at most {} nested levels", self.limits.max_depth),
            );
        }
        let negated = if let Ok((r, _)) = keyword("NOT")(input) {
            Some(multispace0(r)?.0)
        } else if let Some(r) = input.strip_prefix('-').or_else(|| input.strip_prefix('!')) {
            Some(r)
        } else {
            None
        };
        if let Some(rest) = negated {
            let (rest, inner) = cut(|i| self.unary(i, depth + 1)).parse(rest)?;
            return Ok((rest, Expr::Not(Box::new(inner))));
        }
        self.primary(input, depth)
    }

    /// primary = "(" or ")" | field_expr | phrase | word
    fn primary(&self, input: &'s str, depth: usize) -> Res<'s, Expr> {
        if let Some(rest) = input.strip_prefix('(') {
            let (rest, _) = multispace0(rest)?;
            let (rest, inner) = cut(|i| self.or(i, depth + 1)).parse(rest)?;
            let (rest, _) = multispace0(rest)?;
            let Some(rest) = rest.strip_prefix(')') else {
                return failure(rest, "`)` to close the `(`");
            };
            return Ok((rest, inner));
        }
        self.count_term(input)?;
        let column = self.column(input);
        if input.starts_with('"') {
            let (rest, text) = phrase(input)?;
            return Ok((
                rest,
                Expr::Text {
                    text,
                    phrase: true,
                    column,
                },
            ));
        }
        if let Ok((rest, field)) = field_name(input) {
            if let Some(rest) = rest.strip_prefix(':') {
                let (rest, value) = cut(|i| self.value(i, field)).parse(rest)?;
                return Ok((
                    rest,
                    Expr::Field {
                        field: field.to_owned(),
                        value,
                        column,
                    },
                ));
            }
        }
        match word(input) {
            Ok((rest, text)) => Ok((
                rest,
                Expr::Text {
                    text: text.to_owned(),
                    phrase: false,
                    column,
                },
            )),
            Err(_) => fail(input, "a word, a \"phrase\", a field:value or `(`"),
        }
    }

    fn count_term(&self, input: &'s str) -> Res<'s, ()> {
        let n = self.terms.get() + 1;
        self.terms.set(n);
        if n > self.limits.max_terms {
            return failure(input, format!("at most {} terms", self.limits.max_terms));
        }
        Ok((input, ()))
    }

    /// value = compare | list | range | phrase | atom
    fn value(&self, input: &'s str, field: &str) -> Res<'s, Value> {
        let expected = format!("a value after `{field}:`");
        if input.is_empty() || input.starts_with(char::is_whitespace) || input.starts_with('|') {
            return failure(input, expected);
        }
        for (op, text) in [
            (CompareOp::Ge, ">="),
            (CompareOp::Le, "<="),
            (CompareOp::Gt, ">"),
            (CompareOp::Lt, "<"),
        ] {
            if let Some(rest) = input.strip_prefix(text) {
                let (rest, v) = item(rest)
                    .or_else(|_| failure(rest, format!("a value after `{field}:{text}`")))?;
                return Ok((rest, Value::Compare(op, v)));
            }
        }
        if let Some(rest) = input.strip_prefix('(') {
            let (rest, items) = self.items(rest, ')', field)?;
            return Ok((rest, Value::List(items)));
        }
        if let Some(rest) = input.strip_prefix('[') {
            let (rest, items) = self.items(rest, ']', field)?;
            if items.len() != 2 {
                return failure(rest, format!("two values in `{field}:[from,to]`"));
            }
            let mut items = items.into_iter();
            let (a, b) = (
                items.next().unwrap_or_default(),
                items.next().unwrap_or_default(),
            );
            return Ok((rest, Value::Range(a, b)));
        }
        if input.starts_with('"') {
            let (rest, p) = phrase(input)?;
            return Ok((rest, Value::Phrase(p)));
        }
        let (rest, a) = atom(input).or_else(|_| failure(input, expected))?;
        let value = if a.contains('*') || a.contains('?') {
            Value::Pattern {
                pattern: a.to_owned(),
                like: false,
            }
        } else if a.contains('%') {
            Value::Pattern {
                pattern: a.to_owned(),
                like: true,
            }
        } else {
            Value::Word(a.to_owned())
        };
        Ok((rest, value))
    }

    /// item ( "," item )* then `close`
    fn items(&self, input: &'s str, close: char, field: &str) -> Res<'s, Vec<String>> {
        let mut items = Vec::new();
        let mut rest = input;
        loop {
            let (r, _) = multispace0(rest)?;
            let (r, v) =
                item(r).or_else(|_| failure(r, format!("a value in the list of `{field}:`")))?;
            self.count_term(r)?;
            items.push(v);
            let (r, _) = multispace0(r)?;
            if let Some(r) = r.strip_prefix(',') {
                rest = r;
                continue;
            }
            if let Some(r) = r.strip_prefix(close) {
                return Ok((r, items));
            }
            return failure(r, format!("`,` or `{close}`"));
        }
    }

    /// stage = sort | limit | stats | similar_to | group_similar | blast_radius
    fn stage(&self, input: &'s str) -> Res<'s, Stage> {
        let column = self.column(input);
        if let Ok((rest, _)) = tag::<_, _, PErr>("sort:").parse(input) {
            let field_column = self.column(rest);
            let (rest, field) =
                field_name(rest).or_else(|_| failure(rest, "a field after `sort:`"))?;
            let (rest, dir) = opt(alt((tag(":asc"), tag(":desc")))).parse(rest)?;
            return Ok((
                rest,
                Stage::Sort {
                    field: field.to_owned(),
                    desc: dir != Some(":asc"),
                    column: field_column,
                },
            ));
        }
        if let Ok((rest, _)) = tag::<_, _, PErr>("limit:").parse(input) {
            let (rest, n) = digit1(rest)
                .or_else(|_: nom::Err<PErr>| failure(rest, "a number after `limit:`"))?;
            let Ok(rows) = n.parse::<u32>() else {
                return failure(input, "a limit below 4294967296");
            };
            return Ok((rest, Stage::Limit { rows }));
        }
        if let Ok((rest, _)) = tag::<_, _, PErr>("stats:").parse(input) {
            let (rest, text) =
                phrase(rest).or_else(|_| failure(rest, "a quoted stats spec after `stats:`"))?;
            // The quoted spec is parsed in place so its errors point into the query.
            let inner_start = &input[6 + 1..];
            let inner = inner_start.get(..text.len()).unwrap_or(inner_start);
            let (left, (aggregates, by)) = self.stats_spec(inner)?;
            let (left, _) = multispace0(left)?;
            if !left.is_empty() {
                return failure(left, "`,`, `by` or the closing `\"` of the stats spec");
            }
            return Ok((
                rest,
                Stage::Stats {
                    aggregates,
                    by,
                    column,
                },
            ));
        }
        if let Ok((rest, _)) = keyword("stats")(input) {
            let (rest, _) = multispace1(rest).or_else(|_: nom::Err<PErr>| {
                failure(
                    rest,
                    "aggregates after `stats`, e.g. `stats count() by host`",
                )
            })?;
            let (rest, (aggregates, by)) = self.stats_spec(rest)?;
            return Ok((
                rest,
                Stage::Stats {
                    aggregates,
                    by,
                    column,
                },
            ));
        }
        if let Ok((rest, _)) = tag::<_, _, PErr>("SIMILAR_TO(").parse(input) {
            let column = self.column(input);
            let (rest, _) = multispace0(rest)?;
            let (rest, text) =
                phrase(rest).or_else(|_| failure(rest, "a quoted text in `SIMILAR_TO(…)`"))?;
            let (rest, _) = multispace0(rest)?;
            let (rest, k) = match rest.strip_prefix(',') {
                Some(r) => {
                    let (number, _) = multispace0(r)?;
                    let (r, n) = digit1(number).or_else(|_: nom::Err<PErr>| {
                        failure(number, "a number of neighbours after `,`")
                    })?;
                    match n.parse::<u32>() {
                        Ok(k @ 1..=MAX_NEIGHBOURS) => (r, k),
                        _ => return failure(number, "a number of neighbours from 1 to 1000"),
                    }
                }
                None => (rest, 50),
            };
            let (rest, _) = multispace0(rest)?;
            let Some(rest) = rest.strip_prefix(')') else {
                return failure(rest, "`)` to close `SIMILAR_TO(`");
            };
            return Ok((rest, Stage::SimilarTo { text, k, column }));
        }
        if let Ok((rest, _)) = tag::<_, _, PErr>("blast_radius(").parse(input) {
            return self.blast_radius(rest, column);
        }
        if let Some(rest) = input.strip_prefix("group_similar") {
            if rest.is_empty() || rest.starts_with(|c: char| c.is_whitespace() || c == '|') {
                return Ok((rest, Stage::GroupSimilar { column }));
            }
            if rest.starts_with('(') {
                return failure(
                    rest,
                    "`|` or the end after `group_similar` (it takes no arguments)",
                );
            }
        }
        failure(
            input,
            "a stage: sort:, limit:, stats, SIMILAR_TO(…), group_similar or blast_radius(…)",
        )
    }

    /// The options of `blast_radius(` up to its `)`.
    fn blast_radius(&self, input: &'s str, column: usize) -> Res<'s, Stage> {
        let (mut rest, _) = multispace0(input)?;
        let (mut depth, mut direction) = (None, None);
        while !rest.starts_with(')') {
            if depth.is_some() || direction.is_some() {
                let Some(r) = rest.strip_prefix(',') else {
                    return failure(rest, "`,` or `)` to close `blast_radius(`");
                };
                (rest, _) = multispace0(r)?;
            }
            if let Some(r) = rest.strip_prefix("depth:") {
                if depth.is_some() {
                    return failure(rest, "each option once");
                }
                let (r, n) = digit1(r)
                    .or_else(|_: nom::Err<PErr>| failure(r, "a number of hops after `depth:`"))?;
                match n.parse::<u32>() {
                    Ok(d @ 1..=MAX_BLAST_DEPTH) => depth = Some(d),
                    _ => return failure(&rest[6..], "a depth from 1 to 10"),
                }
                rest = r;
            } else if let Some(r) = rest.strip_prefix("direction:") {
                if direction.is_some() {
                    return failure(rest, "each option once");
                }
                let (r, way) = alt((tag("outbound"), tag("inbound"))).parse(r).or_else(
                    |_: nom::Err<PErr>| failure(r, "`outbound` or `inbound` after `direction:`"),
                )?;
                direction = Some(if way == "inbound" {
                    PivotDirection::Inbound
                } else {
                    PivotDirection::Outbound
                });
                rest = r;
            } else {
                return failure(rest, "`depth:`, `direction:` or `)` in `blast_radius(…)`");
            }
            (rest, _) = multispace0(rest)?;
        }
        Ok((
            &rest[1..],
            Stage::BlastRadius {
                depth: depth.unwrap_or(3),
                direction: direction.unwrap_or(PivotDirection::Outbound),
                column,
            },
        ))
    }

    /// aggregate ( "," aggregate )* ( "by" key ( "," key )* )?
    fn stats_spec(&self, input: &'s str) -> Res<'s, (Vec<Aggregate>, Vec<GroupKey>)> {
        let mut aggregates = Vec::new();
        let mut rest = input;
        loop {
            let (r, _) = multispace0(rest)?;
            let (r, agg) = self.aggregate(r)?;
            aggregates.push(agg);
            let (r2, _) = multispace0(r)?;
            match r2.strip_prefix(',') {
                Some(r3) => rest = r3,
                None => {
                    rest = r;
                    break;
                }
            }
        }
        let mut by = Vec::new();
        let (r, _) = multispace0(rest)?;
        if let Ok((r, _)) = keyword("by")(r) {
            let mut r = r;
            loop {
                let (r2, _) = multispace0(r)?;
                let column = self.column(r2);
                let (r2, key) = if let Ok((r3, _)) = tag::<_, _, PErr>("bucket(").parse(r2) {
                    let (r3, _) = multispace0(r3)?;
                    let (r3, field) =
                        field_name(r3).or_else(|_| failure(r3, "a time field in `bucket(`"))?;
                    let (r3, _) = multispace0(r3)?;
                    let Some(r3) = r3.strip_prefix(',') else {
                        return failure(r3, "`,` then a width such as 1h");
                    };
                    let (r3, _) = multispace0(r3)?;
                    let (r3, width) = take_while1(|c: char| c.is_ascii_alphanumeric())(r3)
                        .or_else(|_: nom::Err<PErr>| {
                            failure(r3, "a bucket width such as 15m, 1h or 1d")
                        })?;
                    let (r3, _) = multispace0(r3)?;
                    let Some(r3) = r3.strip_prefix(')') else {
                        return failure(r3, "`)` to close `bucket(`");
                    };
                    (
                        r3,
                        GroupKey::Bucket {
                            field: field.to_owned(),
                            width: width.to_owned(),
                            column,
                        },
                    )
                } else {
                    let (r3, field) =
                        field_name(r2).or_else(|_| failure(r2, "a field to group by"))?;
                    (
                        r3,
                        GroupKey::Field {
                            field: field.to_owned(),
                            column,
                        },
                    )
                };
                by.push(key);
                let (r3, _) = multispace0(r2)?;
                match r3.strip_prefix(',') {
                    Some(r4) => r = r4,
                    None => {
                        rest = r2;
                        break;
                    }
                }
            }
        }
        Ok((rest, (aggregates, by)))
    }

    /// aggregate = fn "(" field? ")" ( "as" name )?
    fn aggregate(&self, input: &'s str) -> Res<'s, Aggregate> {
        let column = self.column(input);
        let (rest, name) = take_while1(|c: char| c.is_ascii_alphabetic())(input).or_else(
            |_: nom::Err<PErr>| {
                failure(
                    input,
                    "an aggregate: count(), sum(f), avg(f), min(f) or max(f)",
                )
            },
        )?;
        let function = match name {
            "count" => AggregateFn::Count,
            "sum" => AggregateFn::Sum,
            "avg" => AggregateFn::Avg,
            "min" => AggregateFn::Min,
            "max" => AggregateFn::Max,
            _ => {
                return failure(
                    input,
                    "an aggregate: count(), sum(f), avg(f), min(f) or max(f)",
                )
            }
        };
        let Some(rest) = rest.strip_prefix('(') else {
            return failure(rest, format!("`(` after `{name}`"));
        };
        let (rest, _) = multispace0(rest)?;
        let (rest, field) = opt(field_name).parse(rest)?;
        let (rest, _) = multispace0(rest)?;
        let Some(rest) = rest.strip_prefix(')') else {
            return failure(rest, format!("`)` to close `{name}(`"));
        };
        let (r, _) = multispace0(rest)?;
        let (rest, alias) = match keyword("as")(r) {
            Ok((r, _)) => {
                let (r, _) = multispace0(r)?;
                let (r, alias) = take_while1(|c: char| c.is_ascii_alphanumeric() || c == '_')(r)
                    .or_else(|_: nom::Err<PErr>| failure(r, "a name after `as`"))?;
                (r, Some(alias.to_owned()))
            }
            Err(_) => (rest, None),
        };
        Ok((
            rest,
            Aggregate {
                function,
                field: field.map(str::to_owned),
                alias,
                column,
            },
        ))
    }
}

fn flatten(mut parts: Vec<Expr>, make: fn(Vec<Expr>) -> Expr) -> Expr {
    if parts.len() == 1 {
        parts.remove(0)
    } else {
        make(parts)
    }
}

/// A keyword followed by a non-word character (or the end).
fn keyword<'a>(word: &'static str) -> impl Fn(&'a str) -> Res<'a, &'a str> {
    move |input: &'a str| {
        let (rest, k) = tag(word).parse(input)?;
        match rest.chars().next() {
            None => Ok((rest, k)),
            Some(c) if c.is_whitespace() || c == '(' || c == '"' => Ok((rest, k)),
            Some(_) => fail(input, word),
        }
    }
}

/// `group_similar` alone or before a `|`: the stage, not a search word.
fn opens_with_group_similar(input: &str) -> bool {
    input.strip_prefix("group_similar").is_some_and(|rest| {
        let rest = rest.trim_start();
        rest.is_empty() || rest.starts_with('|')
    })
}

/// field = [A-Za-z_] [A-Za-z0-9_.\-]*
fn field_name(input: &str) -> Res<'_, &str> {
    let (rest, _) = take_while1(|c: char| c.is_ascii_alphabetic() || c == '_')(input)?;
    let (rest2, _) = take_while(|c: char| c.is_ascii_alphanumeric() || "_.-".contains(c))(rest)?;
    let len = input.len() - rest2.len();
    Ok((rest2, &input[..len]))
}

/// phrase = '"' ( [^"\\] | "\\" any )* '"'
fn phrase(input: &str) -> Res<'_, String> {
    let (mut rest, _) = char('"').parse(input)?;
    let mut out = String::new();
    loop {
        let mut chars = rest.chars();
        match chars.next() {
            None => return failure(rest, "`\"` to close the phrase"),
            Some('"') => return Ok((chars.as_str(), out)),
            Some('\\') => match chars.next() {
                Some(c) => {
                    out.push(c);
                    rest = chars.as_str();
                }
                None => return failure(rest, "a character after `\\`"),
            },
            Some(c) => {
                out.push(c);
                rest = chars.as_str();
            }
        }
    }
}

/// word = [^ whitespace ( ) | "]+
fn word(input: &str) -> Res<'_, &str> {
    take_while1(|c: char| !c.is_whitespace() && !"()|\"".contains(c))(input)
}

/// atom = [^ whitespace ( ) [ ] , | "]+
fn atom(input: &str) -> Res<'_, &str> {
    take_while1(|c: char| !c.is_whitespace() && !"()[],|\"".contains(c))(input)
}

/// item = phrase | atom
fn item(input: &str) -> Res<'_, String> {
    if input.starts_with('"') {
        phrase(input)
    } else {
        atom(input).map(|(r, a)| (r, a.to_owned()))
    }
}

/// Parses `source` into a query, within `limits`.
pub fn parse_with(source: &str, limits: Limits) -> Result<Query, SrqlError> {
    if source.chars().count() > limits.max_length {
        return Err(SrqlError::new(
            limits.max_length + 1,
            format!("a query of at most {} characters", limits.max_length),
            "the query is too long",
        ));
    }
    let grammar = Grammar {
        source,
        limits,
        terms: std::cell::Cell::new(0),
    };
    match grammar.query(source) {
        Ok((_, query)) => Ok(query),
        Err(nom::Err::Error(e) | nom::Err::Failure(e)) => {
            let column = grammar.column(e.at);
            let found = match e.at.chars().next() {
                None => "the end of the query".to_owned(),
                Some(_) => {
                    let snippet: String = e.at.chars().take(12).collect();
                    format!("`{snippet}`")
                }
            };
            Err(SrqlError::new(column, e.expected, format!("found {found}")))
        }
        Err(nom::Err::Incomplete(_)) => Err(SrqlError::new(
            grammar.column(""),
            "more input",
            "the query ended early",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> String {
        parse_with(s, Limits::default())
            .map(|q| q.to_string())
            .unwrap_or_else(|e| format!("error: {e}"))
    }

    #[test]
    fn filters_print_compactly() {
        assert_eq!(p("host:web-01 shell"), "(AND host:web-01 shell)");
        assert_eq!(p("a OR b c"), "(OR a (AND b c))");
        assert_eq!(
            p("NOT type:log -host:x !rule:y"),
            "(AND (NOT type:log) (NOT host:x) (NOT rule:y))"
        );
        assert_eq!(p("(a OR b) AND \"c d\""), "(AND (OR a b) \"c d\")");
        assert_eq!(
            p("severity:>=high port:(22,443) time:[2026-11-01,2026-11-02]"),
            "(AND severity:>=high port:(22,443) time:[2026-11-01,2026-11-02])"
        );
        assert_eq!(
            p("proc.name:*ssh* host:%web%"),
            "(AND proc.name:*ssh* host:%web%)"
        );
        assert_eq!(p("ip:10.0.0.0/8"), "ip:10.0.0.0/8");
        assert_eq!(
            p("rule:\"Terminal shell in container\""),
            "rule:\"Terminal shell in container\""
        );
    }

    #[test]
    fn stages_parse() {
        assert_eq!(
            p("in:events | stats count() by host | sort:count:desc | limit:20"),
            "in:events | stats count() by host | sort:count:desc | limit:20"
        );
        assert_eq!(
            p("| stats:\"count() as total by host\""),
            "* | stats count() as total by host"
        );
        assert_eq!(
            p("x | stats avg(value), max(value) by host, bucket(ts, 1h)"),
            "x | stats avg(value), max(value) by host, bucket(ts, 1h)"
        );
        assert_eq!(
            p("host:a | SIMILAR_TO(\"privilege escalation\")"),
            "host:a | SIMILAR_TO(\"privilege escalation\", 50)"
        );
        assert_eq!(p("| SIMILAR_TO(\"x\", 7)"), "* | SIMILAR_TO(\"x\", 7)");
        assert_eq!(p("group_similar"), "* | group_similar");
        assert_eq!(p("group_similar | limit:5"), "* | group_similar | limit:5");
        assert_eq!(p("host:a | group_similar"), "host:a | group_similar");
        // Only alone or before a pipe: otherwise a search word like any other.
        assert_eq!(p("group_similar_x"), "group_similar_x");
        assert_eq!(
            p("SIMILAR_TO(\"x\") | limit:5"),
            "* | SIMILAR_TO(\"x\", 50) | limit:5"
        );
        assert_eq!(
            p("sort:ts:asc limit:5 in:logs"),
            "(AND sort:ts:asc limit:5 in:logs)"
        );
    }

    #[test]
    fn errors_name_the_column_and_what_was_expected() {
        assert_eq!(
            p("host:"),
            "error: expected a value after `host:` at column 6 (found the end of the query)"
        );
        assert_eq!(
            p("(a OR b"),
            "error: expected `)` to close the `(` at column 8 (found the end of the query)"
        );
        assert_eq!(
            p("a | limit:x"),
            "error: expected a number after `limit:` at column 11 (found `x`)"
        );
        assert_eq!(
            p("\"open"),
            "error: expected `\"` to close the phrase at column 6 (found the end of the query)"
        );
        assert!(
            p("a AND").starts_with("error: expected a word"),
            "{}",
            p("a AND")
        );
    }

    #[test]
    fn limits_hold() {
        let deep = "(".repeat(40) + "a" + &")".repeat(40);
        assert!(p(&deep).contains("nested levels"), "{}", p(&deep));
        let many = vec!["a"; 200].join(" ");
        assert!(p(&many).contains("at most 128 terms"));
        let long = "a".repeat(5000);
        assert!(p(&long).contains("too long"));
    }
}
