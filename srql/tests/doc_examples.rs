//! Every example in `docs/srql.md` that is meant to compile does, and every example of an
//! error gives that error: the reference cannot drift from the code.

mod common;

use common::options;
use palisade_srql::compile;

fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/srql.md");
    std::fs::read_to_string(path).expect("docs/srql.md exists")
}

/// The lines of the fenced ```text blocks that follow `heading`, up to the next heading.
fn blocks_after(doc: &str, heading: &str) -> Vec<String> {
    let start = doc.find(heading).expect("heading present");
    let section = &doc[start + heading.len()..];
    let end = section.find("\n#").unwrap_or(section.len());
    let mut out = Vec::new();
    let mut inside = false;
    for line in section[..end].lines() {
        if line.starts_with("```") {
            inside = !inside && line == "```text";
            continue;
        }
        if inside && !line.trim().is_empty() {
            out.push(line.to_owned());
        }
    }
    out
}

#[test]
fn form_table_examples_compile() {
    let doc = doc();
    let start = doc.find("## Forms, with examples").expect("forms section");
    let end = start
        + doc[start..]
            .find("The three examples")
            .expect("end of table");
    let mut examples = Vec::new();
    for row in doc[start..end].lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<&str> = row.split(" | ").collect();
        let Some(cell) = cells.get(1) else { continue };
        for (i, part) in cell.split('`').enumerate() {
            if i % 2 == 1 {
                examples.push(part.replace("\\|", "|"));
            }
        }
    }
    assert!(examples.len() > 25, "{examples:?}");
    let failures: Vec<String> = examples
        .iter()
        .filter_map(|q| compile(q, &options()).err().map(|e| format!("`{q}`: {e}")))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn query_blocks_compile() {
    let doc = doc();
    let mut queries = blocks_after(&doc, "# SRQL — the search-bar language");
    queries.extend(blocks_after(
        &doc,
        "The three examples of the design document:",
    ));
    queries.extend(blocks_after(&doc, "### Directives in the filter"));
    queries.extend(blocks_after(&doc, "## Stats"));
    assert!(queries.len() >= 8, "{queries:?}");
    for q in queries {
        let q = q.split("  --").next().unwrap_or(&q).trim_end();
        if let Err(e) = compile(q, &options()) {
            panic!("`{q}`: {e}");
        }
    }
}

#[test]
fn error_examples_match() {
    let doc = doc();
    let lines = blocks_after(&doc, "Examples (every message has a snapshot");
    assert_eq!(
        lines.len() % 3,
        0,
        "query, caret, message triples: {lines:?}"
    );
    for triple in lines.chunks(3) {
        let (query, caret, message) = (&triple[0], &triple[1], &triple[2]);
        let err = compile(query, &options()).expect_err(query);
        assert_eq!(&err.to_string(), message, "{query}");
        assert_eq!(
            caret.len(),
            err.column,
            "caret under column {} for {query}",
            err.column
        );
    }
}
