//! SRQL — the search-bar language of Palisade.
//!
//! Pure: text in, a compiled query out (SQL text with bound parameters, plus a query for
//! the search index). No IO, no async. A query passes through
//! parse ([`parse`]) → AST ([`ast::Query`], printed compactly by `Display`) → resolve
//! against the field catalogue ([`catalogue`]) → plan → compile ([`compile`]).
//!
//! ```
//! use palisade_srql::{compile, CompileOptions, ExecPath};
//!
//! let q = compile("host:web-01 AND severity:>=high \"reverse shell\" | limit:20",
//!                 &CompileOptions::default()).unwrap();
//! assert_eq!(q.path, ExecPath::Search);       // full text: the search index answers
//! assert_eq!(q.limit, 20);
//! assert!(!q.sql.contains("web-01"));          // values are bound, never in the SQL
//!
//! let err = compile("hots:web-01", &CompileOptions::default()).unwrap_err();
//! assert_eq!(err.column, 1);
//! assert!(err.found.contains("did you mean `host`"));
//! ```
//!
//! # Grammar
//!
//! ```text
//! query      = filter? ( "|" stage )* EOF
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
//! stage      = sort | limit | stats | similar_to
//! sort       = "sort:" field ( ":" ( "asc" | "desc" ) )?
//! limit      = "limit:" digits
//! stats      = "stats:" phrase | "stats" aggregate ( "," aggregate )* ( "by" key ( "," key )* )?
//! aggregate  = ( "count" | "sum" | "avg" | "min" | "max" ) "(" field? ")" ( "as" name )?
//! key        = "bucket(" field "," width ")" | field                 -- width: 15m, 1h, 1d
//! similar_to = "SIMILAR_TO(" phrase ( "," digits )? ")"
//! phrase     = '"' ( [^"\\] | "\\" any )* '"'
//! word       = [^ whitespace ( ) | "]+
//! atom       = [^ whitespace ( ) [ ] , | "]+
//! ```
//!
//! The full reference, with every field, is `docs/srql.md`.

pub mod ast;
pub mod catalogue;
mod compile;
mod error;
mod parser;

pub use catalogue::{catalogue, Catalogue, Entity, FieldKind};
pub use compile::{
    compile, BlastRadiusQuery, Candidates, CompileOptions, Compiled, ExecPath, GroupSimilar,
    Output, Param, Plan, SearchQuery, SearchSort, SearchValue, SimilarTo, COUNT_CAP, GROUP_COLUMNS,
};
pub use error::{Limits, SrqlError};
pub use parser::MAX_BLAST_DEPTH;

/// Parses `source` into its syntax tree (no catalogue check).
pub fn parse(source: &str) -> Result<ast::Query, SrqlError> {
    parser::parse_with(source, Limits::default())
}

impl std::fmt::Display for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
