//! Property tests: `parse` and `compile` never panic, whatever the text; and when a query
//! compiles, its SQL placeholders and its parameters match one to one, and no value the
//! user wrote is spliced into the SQL text.

mod common;

use std::collections::BTreeSet;

use common::options;
use palisade_srql::{catalogue, compile, parse, Candidates, Compiled, ExecPath, SimilarTo};
use proptest::prelude::*;

/// Every `$n` in `sql`.
fn placeholders(sql: &str) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    let bytes = sql.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' {
            let start = i + 1;
            let mut end = start;
            while end < bytes.len() && bytes[end].is_ascii_digit() {
                end += 1;
            }
            if end > start {
                out.insert(sql[start..end].parse().expect("digits"));
            }
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// Placeholders and parameters agree; on the search path `$1`/`$2` are the hits' keys
/// and the query's own parameters start at `$3`.
fn check_params(source: &str, c: &Compiled) -> Result<(), TestCaseError> {
    let used = placeholders(&c.sql);
    let first = match c.path {
        ExecPath::Sql => 1,
        ExecPath::Graph => {
            // No SQL at all: the walk runs in memory.
            prop_assert!(c.sql.is_empty() && c.params.is_empty(), "`{source}`");
            prop_assert!(c.blast_radius.is_some(), "`{source}`");
            return Ok(());
        }
        ExecPath::Groups => {
            // The events' statement, if any, is checked below like a candidate one.
            prop_assert!(c.sql.is_empty() && c.params.is_empty(), "`{source}`");
            prop_assert!(c.group_similar.is_some(), "`{source}`");
            if let Some(palisade_srql::GroupSimilar {
                events: Candidates::Sql { sql, params, .. },
            }) = &c.group_similar
            {
                let expected: BTreeSet<usize> = (1..=params.len() + 1).collect();
                prop_assert_eq!(placeholders(sql), expected, "`{}`: {}", source, sql);
            }
            return Ok(());
        }
        ExecPath::Search | ExecPath::Semantic => {
            prop_assert!(
                used.contains(&1) && used.contains(&2),
                "`{source}`: keyed SQL must use $1 and $2: {}",
                c.sql
            );
            3
        }
    };
    if let Some(SimilarTo {
        candidates:
            Candidates::Sql {
                sql,
                params,
                recheck_sql,
                recheck_params,
            },
        ..
    }) = &c.similar
    {
        // The candidate statement's last placeholder is the cap the executor binds.
        let expected: BTreeSet<usize> = (1..=params.len() + 1).collect();
        prop_assert_eq!(placeholders(sql), expected, "`{}`: {}", source, sql);
        let expected: BTreeSet<usize> = (1..3 + recheck_params.len()).collect();
        prop_assert_eq!(
            placeholders(recheck_sql),
            expected,
            "`{}`: {}",
            source,
            recheck_sql
        );
    }
    let own: BTreeSet<usize> = used.iter().copied().filter(|n| *n >= first).collect();
    let expected: BTreeSet<usize> = (first..first + c.params.len()).collect();
    prop_assert_eq!(
        &own,
        &expected,
        "`{}`: placeholders of {} vs {} params",
        source,
        c.sql,
        c.params.len()
    );
    match &c.count_sql {
        Some(count) => {
            prop_assert_eq!(c.path, ExecPath::Sql);
            let used: BTreeSet<usize> = placeholders(count);
            let expected: BTreeSet<usize> = (1..=c.count_params.len()).collect();
            prop_assert_eq!(
                &used,
                &expected,
                "`{}`: placeholders of {} vs {} count params",
                source,
                count,
                c.count_params.len()
            );
        }
        None => prop_assert!(c.count_params.is_empty()),
    }
    Ok(())
}

/// The marker that user values carry in the generated queries; no SQL constant has it.
const MARKER: &str = "zq";

fn check(source: &str) -> Result<(), TestCaseError> {
    let _ = parse(source);
    if let Ok(c) = compile(source, &options()) {
        check_params(source, &c)?;
        for text in [Some(c.sql.as_str()), c.count_sql.as_deref()]
            .into_iter()
            .flatten()
        {
            prop_assert!(
                !text.contains(MARKER),
                "`{source}`: a user value reached the SQL text: {text}"
            );
        }
    }
    Ok(())
}

fn field_names() -> Vec<String> {
    let mut names: BTreeSet<String> = catalogue()
        .entities
        .iter()
        .flat_map(|e| e.fields.iter().map(|f| f.name.to_owned()))
        .collect();
    names.extend(
        [
            "in",
            "time",
            "timestamp",
            "sort",
            "limit",
            "stats",
            "attributes.zqkey",
        ]
        .map(str::to_owned),
    );
    names.into_iter().collect()
}

fn values() -> Vec<&'static str> {
    vec![
        // entities, severities, times
        "events",
        "alerts",
        "logs",
        "metrics",
        "vulns",
        "connections",
        "flows",
        "processes",
        "info",
        "high",
        "critical",
        "last_24h",
        "last_15m",
        "last_99999999999999d",
        "last_9223372036854775807m",
        "last_",
        "last_é",
        "today",
        "yesterday",
        "2026-11-01",
        "2026-11-01T10:00:00Z",
        "2026-11-01T10:00:00",
        "+262143-12-31",
        "-262144-01-01",
        "9999-12-31T23:59:59.999999999Z",
        // numbers and addresses
        "0",
        "22",
        "-1",
        "1.5",
        "NaN",
        "inf",
        "18446744073709551616",
        "9223372036854775808",
        "10.0.0.0/8",
        "10.0.0.1",
        "::1",
        "fe80::/129",
        "10.0.0.0/",
        "3f2b8c1e-4d5a-4b6c-9e7f-0123456789ab",
        // stats specs, sort specs
        "\"count() as total by host\"",
        "\"avg(value) by bucket(ts, 1h)\"",
        "\"count(\"",
        "ts:asc",
        "count:desc",
        // user text (marked)
        "zqword",
        "*zq*",
        "%zq%",
        "zq?x",
        "\"zq phrase\"",
        "\"zq \\\" quote\"",
        "(zqa,zqb)",
        "(1,2)",
        "(high,zq)",
        "[zqa,zqb]",
        "[2026-11-01,2026-11-02]",
        "[1,5]",
        ">=zq",
        ">=high",
        ">1024",
        "<=2026-11-01",
    ]
}

fn tokens() -> Vec<String> {
    let mut t: Vec<String> = [
        ":",
        "\"",
        "(",
        ")",
        "[",
        "]",
        ",",
        "|",
        "AND",
        "OR",
        "NOT",
        "-",
        "!",
        "*",
        "%",
        ">=",
        ">",
        "<",
        "<=",
        "\\",
        " ",
        "  ",
        "\t",
        "\n",
        "stats",
        "count()",
        "sum(",
        "avg(value)",
        "max(ts)",
        "min(",
        "as",
        "by",
        "bucket(",
        "bucket(ts, 1h)",
        "bucket(ts, 0h)",
        "bucket(ts, 99999999999d)",
        "15m",
        "1h",
        "1d",
        "SIMILAR_TO(",
        "blast_radius(",
        "group_similar",
        "depth:",
        "direction:inbound",
        "sort:",
        "limit:",
        "stats:",
        "zq",
        "zqword",
        "é",
        "🦀",
        "\u{0}",
        "asc",
        "desc",
        ":asc",
        ":desc",
        "99999999999",
    ]
    .map(str::to_owned)
    .to_vec();
    t.extend(field_names());
    t.extend(values().into_iter().map(str::to_owned));
    t
}

/// Random sequences of SRQL-ish tokens, glued with or without spaces.
fn token_soup() -> impl Strategy<Value = String> {
    let tokens = tokens();
    prop::collection::vec((prop::sample::select(tokens), any::<bool>()), 0..24).prop_map(|parts| {
        let mut s = String::new();
        for (tok, space) in parts {
            s.push_str(&tok);
            if space {
                s.push(' ');
            }
        }
        s
    })
}

/// Mostly well-formed queries: `field:value` terms with operators, then stages.
fn structured() -> impl Strategy<Value = String> {
    let term = (
        prop::sample::select(field_names()),
        prop::sample::select(values()),
        prop::sample::select(vec!["", "", "", "NOT ", "-", "!"]),
    )
        .prop_map(|(f, v, neg)| format!("{neg}{f}:{v}"));
    let word = prop::sample::select(vec!["zqword", "\"zq phrase\"", "today", "zq-1"])
        .prop_map(str::to_owned);
    let atom = prop_oneof![4 => term, 1 => word];
    let filter = prop::collection::vec(
        (atom, prop::sample::select(vec![" ", " AND ", " OR "])),
        0..5,
    )
    .prop_map(|parts| {
        parts
            .into_iter()
            .enumerate()
            .map(|(i, (a, op))| if i == 0 { a } else { format!("{op}{a}") })
            .collect::<String>()
    });
    let fields = field_names();
    let stage = prop_oneof![
        prop::sample::select(fields.clone()).prop_map(|f| format!("sort:{f}")),
        prop::sample::select(fields.clone()).prop_map(|f| format!("sort:{f}:asc")),
        (0u64..20_000).prop_map(|n| format!("limit:{n}")),
        (
            prop::sample::select(vec!["count", "sum", "avg", "min", "max"]),
            prop::sample::select(fields.clone()),
            prop::sample::select(fields.clone()),
            any::<bool>()
        )
            .prop_map(|(func, arg, key, bucket)| if bucket {
                format!("stats {func}({arg}), count() by {key}, bucket(ts, 1h)")
            } else {
                format!("stats {func}({arg}) as zqalias by {key}")
            }),
        Just("stats count() by host".to_owned()),
        Just("sort:count:desc".to_owned()),
        Just("SIMILAR_TO(\"zq text\", 5)".to_owned()),
        Just("blast_radius(depth:2, direction:inbound)".to_owned()),
        Just("group_similar".to_owned()),
    ];
    (
        prop::option::of(prop::sample::select(values()[..8].to_vec())),
        filter,
        prop::collection::vec(stage, 0..4),
    )
        .prop_map(|(entity, filter, stages)| {
            let mut q = String::new();
            if let Some(e) = entity {
                q.push_str(&format!("in:{e} "));
            }
            q.push_str(&filter);
            for s in stages {
                q.push_str(" | ");
                q.push_str(&s);
            }
            q
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(s in any::<String>()) {
        check(&s)?;
    }

    #[test]
    fn printable_text_never_panics(s in "\\PC{0,300}") {
        check(&s)?;
    }

    #[test]
    fn srql_token_soup_never_panics(s in token_soup()) {
        check(&s)?;
    }

    #[test]
    fn structured_queries_bind_every_value(s in structured()) {
        check(&s)?;
    }
}

/// Inputs that once broke an invariant, or sit on a boundary, checked on every run.
#[test]
fn known_edge_cases() {
    let cases = [
        "",
        " ",
        "|",
        "||",
        "time:last_é",
        "time:last_99999999999999d",
        "time:last_9223372036854775807m",
        "time:+262143-12-31",
        "time:>+262143-12-31",
        "time:<=+262143-12-31",
        "time:-262144-01-01",
        "time:[-262144-01-01,+262143-12-31]",
        "ts:+262143-12-31",
        "| stats count() by bucket(ts, 99999999999d)",
        "stats:\"count() by bucket(ts, 4294967295h)\"",
        "stats:\"a\\\"b\"",
        "stats:\"é\\\"\"",
        // Found by cargo fuzz: an error inside a quoted stats spec, multibyte text after it.
        "| stats:\"count() x\" ééé",
        "in\0ms tie:lastn\0\0| stats:\"count() id:3f:even6cn:eventsރin:evenntsventsaw \"hos| limit:2ރߌt0\nAtߌtAtin",
        &"(".repeat(100),
        &"NOT ".repeat(100),
        &"-".repeat(5000),
    ];
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| match std::panic::catch_unwind(|| check(case)) {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("`{case}`: {e}")),
            Err(_) => Some(format!("`{case}`: panicked")),
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every structured query with a known shape compiles (the generators reach the compiler).
#[test]
fn structured_generator_reaches_the_compiler() {
    let ok = [
        "host:zqword",
        "in:connections remote_port:(1,2) | stats count() by host",
        "zqword | sort:ts:asc",
    ];
    for q in ok {
        let c = compile(q, &options()).unwrap_or_else(|e| panic!("{q}: {e}"));
        if let Err(e) = check_params(q, &c) {
            panic!("{q}: {e}");
        }
    }
}
