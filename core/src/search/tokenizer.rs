//! The `palisade` tokenizer: security text cut so that indicators stay whole.
//!
//! A token runs between whitespace and the delimiters `"'()[]{}<>,;|` and backtick,
//! so IPv4 and IPv6 addresses, paths, CVE ids, hashes, Kubernetes names
//! (`web-7d9f`) and `key=value` pairs are one token each. Tokens are lowercased
//! and lose a trailing `.`, `:` or `,`; tokens without a letter or digit are dropped.
//!
//! On the index side every compound token also yields its parts **at the same
//! position**, so a part matches too and phrases still line up:
//!
//! | token | parts |
//! |---|---|
//! | `user=root` | `user`, `root` |
//! | `/etc/shadow` | `etc`, `/etc`, `shadow` |
//! | `fd.name=/etc/shadow` | `fd`, `name`, `fd.name`, `etc`, `/etc`, `shadow`, `/etc/shadow` |
//! | `10.0.2.2:22` | `10`, `0`, `2`, `10.0.2.2`, `22` |
//!
//! First the token is cut at `=`, `@` and `:` into segments, each kept whole (so
//! `/etc/shadow` is found inside `file=/etc/shadow`), with the folders of an
//! absolute path (`/etc` of `/etc/shadow`); then every segment is cut at
//! `.`, `/`, `-` and `_` too into atoms. The query side ([`query_tokens`]) keeps
//! whole tokens only: a query for `user=root` matches that pair, not every `root`.

use tantivy::tokenizer::{Token, TokenStream, Tokenizer};

/// Name under which the index registers [`PalisadeTokenizer`].
pub const TOKENIZER_NAME: &str = "palisade";

/// Name under which the index registers [`WordPairTokenizer`].
pub const PAIRS_TOKENIZER_NAME: &str = "palisade_pairs";

/// Between the two words of a word-pair term; no token holds whitespace.
pub const PAIR_SEPARATOR: char = ' ';

/// Longest token kept, in bytes; longer ones (base64 blobs) keep only their parts.
pub const MAX_TOKEN_BYTES: usize = 255;

/// Characters that end a token.
pub(crate) fn is_delimiter(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '"' | '\'' | '(' | ')' | '[' | ']' | '{' | '}' | '<' | '>' | ',' | ';' | '|' | '`'
        )
}

/// Characters that separate the segments of a compound token (`key=value`,
/// `user@host`, `host:port`).
fn is_segment_separator(c: char) -> bool {
    matches!(c, '=' | '@' | ':')
}

/// Characters that separate the atoms of a segment (paths, dotted names, ids).
fn is_atom_separator(c: char) -> bool {
    is_segment_separator(c) || matches!(c, '.' | '/' | '-' | '_')
}

/// One whole token: its byte range in the text and its slice of it (not yet lowercased).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Whole<'t> {
    from: usize,
    raw: &'t str,
}

/// The whole tokens of `text`, in order.
fn whole_tokens(text: &str) -> impl Iterator<Item = Whole<'_>> + '_ {
    text.split(is_delimiter)
        .filter(|piece| !piece.is_empty())
        .filter_map(move |piece| {
            // `split` yields sub-slices of `text`, so the offset is the pointer distance.
            let from = piece.as_ptr() as usize - text.as_ptr() as usize;
            let raw = piece.trim_end_matches(['.', ':', ',']);
            raw.chars()
                .any(char::is_alphanumeric)
                .then_some(Whole { from, raw })
        })
}

/// The parts of a whole token (never the token itself), each with its byte range
/// relative to the token, lowercased, without duplicates.
fn parts(token: &str) -> Vec<(usize, usize, String)> {
    let mut out: Vec<(usize, usize, String)> = Vec::new();
    let offset_of = |piece: &str| piece.as_ptr() as usize - token.as_ptr() as usize;
    let mut push = |piece: &str| {
        if piece.len() == token.len() || !piece.chars().any(char::is_alphanumeric) {
            return;
        }
        let text = piece.to_lowercase();
        if out.iter().any(|(_, _, p)| *p == text) {
            return;
        }
        let from = offset_of(piece);
        out.push((from, from + piece.len(), text));
    };
    for segment in token.split(is_segment_separator) {
        let segment = segment.trim_end_matches('.');
        push(segment);
        // The folders of an absolute path, so `/etc/falco` finds `/etc/falco/falco.yaml`.
        if segment.starts_with('/') {
            for (at, _) in segment.match_indices('/').skip(1) {
                push(&segment[..at]);
            }
        }
    }
    for atom in token.split(is_atom_separator) {
        push(atom);
    }
    out
}

/// The query-side tokens of `text`: whole tokens only, normalised like the index.
pub fn query_tokens(text: &str) -> Vec<String> {
    whole_tokens(text)
        .filter(|t| t.raw.len() <= MAX_TOKEN_BYTES)
        .map(|t| t.raw.to_lowercase())
        .collect()
}

/// Whether a token is a plain word (letters and digits only). On the index side such a
/// token is a whole token or an atom of one, and never has parts of its own.
pub fn is_word(token: &str) -> bool {
    !token.is_empty() && token.chars().all(char::is_alphanumeric)
}

/// The word-pair term of two adjacent query words (`failed`, `password` → `failed password`).
pub fn word_pair(first: &str, second: &str) -> String {
    let mut pair = String::with_capacity(first.len() + 1 + second.len());
    pair.push_str(first);
    pair.push(PAIR_SEPARATOR);
    pair.push_str(second);
    pair
}

/// The index-side tokenizer registered as `palisade` (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct PalisadeTokenizer;

/// The tokens of one text, computed up front.
#[derive(Debug)]
pub struct PalisadeTokenStream {
    tokens: Vec<Token>,
    /// Index of the current token + 1 (0 before the first `advance`).
    next: usize,
    /// Returned by `token()` when there is no current token.
    none: Token,
}

impl PalisadeTokenStream {
    fn new(tokens: Vec<Token>) -> Self {
        PalisadeTokenStream {
            tokens,
            next: 0,
            none: Token::default(),
        }
    }
}

impl Tokenizer for PalisadeTokenizer {
    type TokenStream<'a> = PalisadeTokenStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> PalisadeTokenStream {
        PalisadeTokenStream::new(index_tokens(text))
    }
}

/// Every index-side token of `text`: for each whole token its parts, then the
/// whole token (last, so a snippet's fragment ends where the token ends), all at
/// the whole token's position.
fn index_tokens(text: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    for (position, whole) in whole_tokens(text).enumerate() {
        // Parts in the order their ends appear (tantivy's snippet fragments need
        // non-decreasing `offset_to`), the whole token last.
        let mut parts = parts(whole.raw);
        parts.sort_by_key(|(from, to, _)| (*to, std::cmp::Reverse(*from)));
        for (from, to, text) in parts {
            if text.len() <= MAX_TOKEN_BYTES {
                tokens.push(Token {
                    offset_from: whole.from + from,
                    offset_to: whole.from + to,
                    position,
                    text,
                    position_length: 1,
                });
            }
        }
        if whole.raw.len() <= MAX_TOKEN_BYTES {
            tokens.push(Token {
                offset_from: whole.from,
                offset_to: whole.from + whole.raw.len(),
                position,
                text: whole.raw.to_lowercase(),
                position_length: 1,
            });
        }
    }
    tokens
}

/// The index-side tokenizer registered as `palisade_pairs`: for every two adjacent
/// positions of the `palisade` tokens, each plain word ([`is_word`]) at the first with
/// each plain word at the second, as one term at the first position.
///
/// A phrase of plain words then needs no position checks: `"failed password"` is the
/// single term `failed password`, and `"user not in sudoers"` a phrase of three pair
/// terms. Every word the `palisade` tokenizer puts at a position takes part, parts of
/// compound tokens included (`user=root password` gives `root password`), so a phrase
/// of plain words matches exactly the documents its positional phrase matches.
#[derive(Debug, Clone, Default)]
pub struct WordPairTokenizer;

impl Tokenizer for WordPairTokenizer {
    type TokenStream<'a> = PalisadeTokenStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> PalisadeTokenStream {
        PalisadeTokenStream::new(pair_tokens(text))
    }
}

/// The word pairs of `text` (see [`WordPairTokenizer`]), in position order.
fn pair_tokens(text: &str) -> Vec<Token> {
    let tokens = index_tokens(text);
    // The distinct plain words at each position that has any.
    let mut words: Vec<(usize, Vec<&Token>)> = Vec::new();
    for token in tokens.iter().filter(|t| is_word(&t.text)) {
        match words.last_mut() {
            Some((position, at)) if *position == token.position => {
                if !at.iter().any(|t| t.text == token.text) {
                    at.push(token);
                }
            }
            _ => words.push((token.position, vec![token])),
        }
    }
    let mut pairs = Vec::new();
    for adjacent in words.windows(2) {
        let [(position, firsts), (next, seconds)] = adjacent else {
            continue;
        };
        if *next != position + 1 {
            continue;
        }
        for first in firsts {
            for second in seconds {
                pairs.push(Token {
                    offset_from: first.offset_from,
                    offset_to: second.offset_to,
                    position: *position,
                    text: word_pair(&first.text, &second.text),
                    position_length: 1,
                });
            }
        }
    }
    pairs
}

impl TokenStream for PalisadeTokenStream {
    fn advance(&mut self) -> bool {
        if self.next < self.tokens.len() {
            self.next += 1;
            true
        } else {
            false
        }
    }

    fn token(&self) -> &Token {
        self.next
            .checked_sub(1)
            .and_then(|at| self.tokens.get(at))
            .unwrap_or(&self.none)
    }

    fn token_mut(&mut self) -> &mut Token {
        match self.next.checked_sub(1) {
            Some(at) if at < self.tokens.len() => &mut self.tokens[at],
            _ => &mut self.none,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (position, text) of every index-side token.
    fn indexed(text: &str) -> Vec<(usize, String)> {
        let mut tokenizer = PalisadeTokenizer;
        let mut stream = tokenizer.token_stream(text);
        let mut out = Vec::new();
        while stream.advance() {
            let t = stream.token();
            assert_eq!(
                text[t.offset_from..t.offset_to].to_lowercase(),
                t.text,
                "offsets of {t:?}"
            );
            out.push((t.position, t.text.clone()));
        }
        out
    }

    fn at(position: usize, tokens: &[(usize, String)]) -> Vec<&str> {
        tokens
            .iter()
            .filter(|(p, _)| *p == position)
            .map(|(_, t)| t.as_str())
            .collect()
    }

    /// (position, pair) of every word pair.
    fn pairs(text: &str) -> Vec<(usize, String)> {
        let mut tokenizer = WordPairTokenizer;
        let mut stream = tokenizer.token_stream(text);
        let mut out = Vec::new();
        while stream.advance() {
            out.push((stream.token().position, stream.token().text.clone()));
        }
        out
    }

    #[test]
    fn word_pairs_join_adjacent_words() {
        assert_eq!(
            pairs("Failed password for root"),
            [
                (0, "failed password".to_owned()),
                (1, "password for".to_owned()),
                (2, "for root".to_owned()),
            ]
        );
    }

    #[test]
    fn word_pairs_take_every_plain_word_of_compound_tokens() {
        let got = pairs("read /etc/shadow by user=root");
        let expected = [
            (0, "read etc"),
            (0, "read shadow"),
            (1, "etc by"),
            (1, "shadow by"),
            (2, "by user"),
            (2, "by root"),
        ];
        assert_eq!(
            got,
            expected.map(|(p, t)| (p, t.to_owned())),
            "`/etc`, `/etc/shadow` and `user=root` are not plain words"
        );
        // An address gives its numbers once each.
        let got = pairs("from 10.0.2.2");
        assert_eq!(
            got.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>(),
            ["from 10", "from 0", "from 2"]
        );
    }

    #[test]
    fn word_pairs_skip_positions_without_a_plain_word() {
        // `a+b` is one token with no parts: no word at its position, so no pair spans it.
        assert!(pairs("x a+b y").is_empty());
        assert!(pairs("single").is_empty());
        assert!(pairs("").is_empty());
        assert!(is_word("sudoers") && is_word("zürich") && !is_word("user=root") && !is_word(""));
    }

    #[test]
    fn ipv4_stays_whole_and_loses_trailing_punctuation() {
        let tokens = indexed("Accepted password from 192.168.33.1. port 58803");
        assert_eq!(at(3, &tokens), ["192", "168", "33", "1", "192.168.33.1"]);
        assert_eq!(query_tokens("from 192.168.33.1."), ["from", "192.168.33.1"]);
    }

    #[test]
    fn ipv6_stays_whole() {
        let tokens = indexed("connect to [2001:db8::8a2e:370:7334]:443");
        assert!(at(2, &tokens).contains(&"2001:db8::8a2e:370:7334"));
        assert!(at(3, &tokens).contains(&"443"));
        assert_eq!(query_tokens("fe80::1"), ["fe80::1"]);
        let tokens = indexed("peer fe80::1ff:fe23:4567:890a");
        assert!(at(1, &tokens).contains(&"fe80::1ff:fe23:4567:890a"));
        assert!(at(1, &tokens).contains(&"fe23"));
    }

    #[test]
    fn paths_give_the_path_and_its_names() {
        let tokens = indexed("open /etc/shadow by cat");
        assert_eq!(at(1, &tokens), ["etc", "/etc", "shadow", "/etc/shadow"]);
        let tokens = indexed("vi /etc/falco/falco.yaml");
        assert_eq!(
            at(1, &tokens),
            [
                "etc",
                "/etc",
                "falco",
                "/etc/falco",
                "yaml",
                "/etc/falco/falco.yaml"
            ]
        );
        assert_eq!(query_tokens("/etc/shadow"), ["/etc/shadow"]);
    }

    #[test]
    fn key_value_pairs_give_key_value_and_atoms() {
        let tokens = indexed("(user=root file=/etc/shadow)");
        assert_eq!(at(0, &tokens), ["user", "root", "user=root"]);
        assert_eq!(
            at(1, &tokens),
            [
                "file",
                "etc",
                "/etc",
                "shadow",
                "/etc/shadow",
                "file=/etc/shadow"
            ]
        );
        assert_eq!(query_tokens("user=root"), ["user=root"]);
    }

    #[test]
    fn cve_ids_hashes_and_k8s_names_stay_whole() {
        let hash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let text = format!("CVE-2023-44487 in pod web-7d9f sha256:{hash}");
        let tokens = indexed(&text);
        assert_eq!(at(0, &tokens), ["cve", "2023", "44487", "cve-2023-44487"]);
        assert_eq!(at(3, &tokens), ["web", "7d9f", "web-7d9f"]);
        assert!(at(4, &tokens).contains(&hash));
        assert_eq!(
            query_tokens(&text),
            [
                "cve-2023-44487",
                "in",
                "pod",
                "web-7d9f",
                &format!("sha256:{hash}")
            ]
        );
    }

    #[test]
    fn mixed_case_is_lowercased_and_delimiters_split() {
        assert_eq!(
            query_tokens("Terminal SHELL in `bash`; sshd[3402]: {ok} a|b <x>"),
            ["terminal", "shell", "in", "bash", "sshd", "3402", "ok", "a", "b", "x"]
        );
    }

    #[test]
    fn punctuation_only_and_empty_text_give_nothing() {
        assert!(indexed("").is_empty());
        assert!(indexed(" -- : = ... ").is_empty());
        assert!(query_tokens("\"\" ()").is_empty());
    }

    #[test]
    fn overlong_tokens_keep_only_their_parts() {
        let blob = format!("{}/{}", "a".repeat(200), "b".repeat(200));
        let tokens = indexed(&blob);
        assert!(tokens.iter().all(|(_, t)| t.len() <= MAX_TOKEN_BYTES));
        assert!(query_tokens(&blob).is_empty());
    }

    #[test]
    fn unicode_offsets_stay_on_char_boundaries() {
        let tokens = indexed("Zürich-Ost user=Jörg");
        assert_eq!(at(0, &tokens), ["zürich", "ost", "zürich-ost"]);
        assert_eq!(at(1, &tokens), ["user", "jörg", "user=jörg"]);
    }
}
