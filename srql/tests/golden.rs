//! Golden tests of the compiler: every `tests/golden/NAME.srql` is compiled with fixed
//! options and the result is compared with `tests/golden/NAME.out`.
//!
//! `SRQL_BLESS=1 cargo test -p palisade-srql --test golden` rewrites the `.out` files;
//! review the diff before committing it.
//!
//! The runner also checks, for every case, that no value the user wrote (words, phrases,
//! field values, list items, SIMILAR_TO text) appears in the SQL text: values are bound
//! parameters, never spliced.

mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use common::options;
use palisade_srql::ast::{Expr, Stage, Value};
use palisade_srql::{compile, parse, Compiled};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn pretty<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).expect("compiled values serialise")
}

/// The expected-file text for one compiled query.
fn render(compiled: &Compiled) -> String {
    let mut out = String::new();
    let mut section = |name: &str, body: &str| {
        let _ = write!(out, "## {name}\n{body}\n\n");
    };
    section("ast", &compiled.ast);
    section("entity", compiled.entity.name());
    section("path", &pretty(&compiled.path));
    section("plan", &compiled.plan.steps.join("\n"));
    section("sql", &compiled.sql);
    section("params", &pretty(&compiled.params));
    section(
        "count_sql",
        compiled.count_sql.as_deref().unwrap_or("(none)"),
    );
    section("count_params", &pretty(&compiled.count_params));
    section(
        "search",
        &compiled
            .search
            .as_ref()
            .map_or_else(|| "(none)".to_owned(), pretty),
    );
    section("search_sort", &pretty(&compiled.search_sort));
    section("output", &pretty(&compiled.output));
    section("columns", &compiled.columns.join(", "));
    section("limit", &compiled.limit.to_string());
    section(
        "similar",
        &compiled
            .similar
            .as_ref()
            .map_or_else(|| "(none)".to_owned(), pretty),
    );
    if let Some(groups) = &compiled.group_similar {
        section("group_similar", &pretty(groups));
    }
    out.trim_end().to_owned() + "\n"
}

/// Values the user wrote that must only ever travel as parameters.
fn user_values(source: &str) -> Vec<String> {
    fn walk(expr: &Expr, out: &mut Vec<String>) {
        match expr {
            Expr::And(parts) | Expr::Or(parts) => parts.iter().for_each(|p| walk(p, out)),
            Expr::Not(inner) => walk(inner, out),
            Expr::Text { text, .. } => out.push(text.clone()),
            // Directives choose among constants (entity, window, sort); they are not values.
            Expr::Field { field, .. }
                if matches!(field.as_str(), "in" | "time" | "sort" | "limit" | "stats") => {}
            Expr::Field { value, .. } => match value {
                Value::Word(v) | Value::Phrase(v) | Value::Compare(_, v) => out.push(v.clone()),
                Value::Pattern { pattern, .. } => out.push(pattern.clone()),
                Value::List(items) => out.extend(items.iter().cloned()),
                Value::Range(a, b) => out.extend([a.clone(), b.clone()]),
            },
        }
    }
    let query = parse(source).expect("golden queries parse");
    let mut out = Vec::new();
    if let Some(filter) = &query.filter {
        walk(filter, &mut out);
    }
    for stage in &query.stages {
        if let Stage::SimilarTo { text, .. } = stage {
            out.push(text.clone());
        }
    }
    // Very short values ("0", "22") can occur in SQL by coincidence ("$2", "c0"); every
    // golden case uses values of three characters or more where it matters.
    out.retain(|v| v.chars().count() >= 3);
    out
}

fn first_difference(expected: &str, actual: &str) -> String {
    for (i, (e, a)) in expected.lines().zip(actual.lines()).enumerate() {
        if e != a {
            return format!(
                "first difference at line {}:\n  expected: {e}\n  actual:   {a}",
                i + 1
            );
        }
    }
    format!(
        "the texts differ in length: expected {} lines, got {}",
        expected.lines().count(),
        actual.lines().count()
    )
}

#[test]
fn golden() {
    let bless = std::env::var_os("SRQL_BLESS").is_some_and(|v| v == "1");
    let mut entries: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .expect("tests/golden exists")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "srql"))
        .collect();
    entries.sort();
    assert!(
        entries.len() >= 30,
        "expected at least 30 golden cases, found {}",
        entries.len()
    );

    let options = options();
    let mut failures = Vec::new();
    for path in &entries {
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("?");
        let raw = std::fs::read_to_string(path).expect("readable .srql");
        let source = raw.strip_suffix('\n').unwrap_or(&raw);
        let compiled = match compile(source, &options) {
            Ok(c) => c,
            Err(e) => {
                failures.push(format!("{name}: does not compile: {e}"));
                continue;
            }
        };

        let events_sql = match &compiled.group_similar {
            Some(palisade_srql::GroupSimilar {
                events: palisade_srql::Candidates::Sql { sql, .. },
            }) => Some(sql.as_str()),
            _ => None,
        };
        for value in user_values(source) {
            for (what, text) in [
                ("sql", Some(compiled.sql.as_str())),
                ("count_sql", compiled.count_sql.as_deref()),
                ("group_similar events sql", events_sql),
            ] {
                if text.is_some_and(|t| t.contains(&value)) {
                    failures.push(format!(
                        "{name}: the user value `{value}` appears in the {what} text"
                    ));
                }
            }
        }

        let actual = format!("## query\n{source}\n\n{}", render(&compiled));
        let out_path = path.with_extension("out");
        if bless {
            std::fs::write(&out_path, &actual).expect("writable .out");
            continue;
        }
        match std::fs::read_to_string(&out_path) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures.push(format!(
                "{name}: output differs from {}\n{}\n--- actual ---\n{actual}",
                out_path.display(),
                first_difference(&expected, &actual)
            )),
            Err(_) => failures.push(format!(
                "{name}: {} is missing (run with SRQL_BLESS=1)",
                out_path.display()
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} golden cases failed (SRQL_BLESS=1 rewrites the .out files):\n\n{}",
        failures.len(),
        entries.len(),
        failures.join("\n\n")
    );
}
