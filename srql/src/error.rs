//! What a user sees when a query is wrong: the column, what was expected, and what was
//! found.

use std::fmt;

use serde::Serialize;

/// Bounds on one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most characters.
    pub max_length: usize,
    /// Deepest nesting of parentheses and negations.
    pub max_depth: usize,
    /// Most terms (words, field predicates, list items).
    pub max_terms: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_length: 4096,
            max_depth: 32,
            max_terms: 128,
        }
    }
}

/// A query that cannot run, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SrqlError {
    /// 1-based character column where the problem is.
    pub column: usize,
    /// What would have been valid there.
    pub expected: String,
    /// What was there instead, or more about the problem.
    pub found: String,
}

impl SrqlError {
    /// An error at `column`.
    pub fn new(column: usize, expected: impl Into<String>, found: impl Into<String>) -> Self {
        SrqlError {
            column,
            expected: expected.into(),
            found: found.into(),
        }
    }
}

impl fmt::Display for SrqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "expected {} at column {} ({})",
            self.expected, self.column, self.found
        )
    }
}

impl std::error::Error for SrqlError {}
