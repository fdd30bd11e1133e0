//! Highlighted snippets of a hit's message.
//!
//! tantivy's `SnippetGenerator` assumes one token per position; the `palisade`
//! tokenizer also emits the parts of compound tokens (`user=root` → `user`, `root`) at
//! the same position, which makes its highlight ranges overlap. This highlighter cuts
//! the message with the same index-side tokenizer, marks every token the query asked
//! for, merges overlapping marks and shows a window around the first one.

use std::collections::HashSet;
use std::ops::Range;

use palisade_core::search::{PalisadeTokenizer, PAIR_SEPARATOR};
use tantivy::query::Query;
use tantivy::schema::Field;
use tantivy::tokenizer::{TokenStream, Tokenizer};

/// Longest snippet, in characters.
const MAX_CHARS: usize = 200;

/// The full-text terms of `query` on `text`, lowercased as indexed, with the words of
/// its word-pair terms on `pairs`.
pub fn query_terms(query: &dyn Query, text: Field, pairs: Field) -> HashSet<String> {
    let mut terms = HashSet::new();
    query.query_terms(&mut |term, _| {
        let value = term.value();
        let Some(value) = value.as_str() else {
            return;
        };
        if term.field() == text {
            terms.insert(value.to_owned());
        } else if term.field() == pairs {
            terms.extend(value.split(PAIR_SEPARATOR).map(str::to_owned));
        }
    });
    terms
}

/// `text` around its first match, HTML-escaped, matches in `<b>…</b>`; empty when
/// nothing in `text` matches.
pub fn highlight(text: &str, terms: &HashSet<String>) -> String {
    if terms.is_empty() {
        return String::new();
    }
    let mut marks: Vec<Range<usize>> = Vec::new();
    let mut tokenizer = PalisadeTokenizer;
    let mut stream = tokenizer.token_stream(text);
    while stream.advance() {
        let token = stream.token();
        if terms.contains(&token.text) && text.get(token.offset_from..token.offset_to).is_some() {
            marks.push(token.offset_from..token.offset_to);
        }
    }
    if marks.is_empty() {
        return String::new();
    }
    marks.sort_by_key(|r| (r.start, std::cmp::Reverse(r.end)));
    let mut merged: Vec<Range<usize>> = Vec::new();
    for r in marks {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    // A window of at most MAX_CHARS characters, starting a little before the first mark.
    let first = merged[0].start;
    let lead: usize = text[..first]
        .chars()
        .rev()
        .take(40)
        .map(char::len_utf8)
        .sum();
    let start = first - lead;
    let end = start
        + text[start..]
            .chars()
            .take(MAX_CHARS)
            .map(char::len_utf8)
            .sum::<usize>();
    let mut out = String::new();
    if start > 0 {
        out.push('…');
    }
    let mut at = start;
    for r in merged.iter().filter(|r| r.start >= start && r.start < end) {
        let stop = r.end.min(end);
        out.push_str(&escape(&text[at..r.start]));
        out.push_str("<b>");
        out.push_str(&escape(&text[r.start..stop]));
        out.push_str("</b>");
        at = stop;
    }
    out.push_str(&escape(&text[at..end]));
    if end < text.len() {
        out.push('…');
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(words: &[&str]) -> HashSet<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn matches_are_marked_and_escaped() {
        let text = "Failed password for root from 216.160.83.57 port 29160 <ssh2>";
        assert_eq!(
            highlight(text, &terms(&["216.160.83.57", "password"])),
            "Failed <b>password</b> for root from <b>216.160.83.57</b> port 29160 &lt;ssh2&gt;"
        );
    }

    #[test]
    fn parts_inside_compound_tokens_do_not_overlap() {
        let text = "x connection=198.51.100.99:40174->10.0.0.5:22 user=root";
        let out = highlight(
            text,
            &terms(&["user=root", "user", "root", "198.51.100.99"]),
        );
        assert!(out.contains("<b>user=root</b>"), "{out}");
        assert!(out.contains("<b>198.51.100.99</b>"), "{out}");
        assert!(!out.contains("<b><b>"), "{out}");
    }

    #[test]
    fn long_texts_are_cut_on_char_boundaries() {
        let text = format!("{} needle {}", "é".repeat(300), "ü".repeat(300));
        let out = highlight(&text, &terms(&["needle"]));
        assert!(out.starts_with('…') && out.ends_with('…'), "{out}");
        assert!(out.contains("<b>needle</b>"));
        assert!(highlight("nothing here", &terms(&["needle"])).is_empty());
    }
}
