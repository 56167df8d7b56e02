//! The log-friendly analyzer shared by the index, the query parser and the scan.
//!
//! Text is cut into *chunks*: maximal runs of letters, digits and joiners (`. - _ / : @ + % ~ #`),
//! with joiners trimmed from both ends; every other character separates chunks. A chunk of
//! one run of letters and digits is a *word*. A chunk with joiners inside (an id, an IP
//! address, a path, a UUID, `user@host`) gives its *whole* token, then one *part* per run of
//! letters and digits: `GET /api/v2/users` is `get`, whole `api/v2/users`, parts `api`, `v2`,
//! `users`. A chunk cut by `:`, `/` or `@` also gives each of its *segments* that still has
//! joiners inside as a token of its own: `10.0.0.7:5432` gives `10.0.0.7`, `/var/log/app.log`
//! gives `app.log`, `alice@example.com` gives `example.com`. Everything is lower-cased. Whole
//! and segment tokens sit at the position of their first part, so a phrase matches parts and
//! words in order. Tokens longer than [`MAX_TOKEN_BYTES`]
//! are dropped (their position is still counted, so a phrase never bridges one).
//! [`VALUE_SEPARATOR`] between two texts of one row adds a position, so no phrase spans two
//! texts.

use tantivy::tokenizer::{Token, TokenStream, Tokenizer};

/// Tokens longer than this many bytes (after lower-casing) are not indexed.
pub(crate) const MAX_TOKEN_BYTES: usize = 255;

/// Separates the texts of one row in the text field (ASCII record separator).
pub(crate) const VALUE_SEPARATOR: char = '\u{1e}';

/// What a token is within its chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A chunk of a single run of letters and digits.
    Word,
    /// A whole chunk with joiners inside.
    Whole,
    /// A piece of a chunk between `:`, `/` or `@`, with joiners inside.
    Segment,
    /// One run of letters and digits of a chunk with joiners.
    Part,
}

fn is_joiner(c: char) -> bool {
    matches!(c, '.' | '-' | '_' | '/' | ':' | '@' | '+' | '%' | '~' | '#')
}

/// The joiners that cut a chunk into segments.
fn is_strong_joiner(c: char) -> bool {
    matches!(c, ':' | '/' | '@')
}

/// Whether `c` can be part of a chunk.
pub(crate) fn is_chunk_char(c: char) -> bool {
    c.is_alphanumeric() || is_joiner(c)
}

fn lower_into(text: &str, out: &mut String) {
    out.clear();
    if text.is_ascii() {
        out.push_str(text);
        out.make_ascii_lowercase();
    } else {
        out.extend(text.chars().flat_map(char::to_lowercase));
    }
}

/// Calls `emit(token, position, kind)` for every token of `text`, in position order (a whole
/// token before its parts). `scratch` is reused for lower-casing.
pub(crate) fn analyze(text: &str, scratch: &mut String, emit: &mut dyn FnMut(&str, u32, Kind)) {
    let mut position: u32 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        // Skip separators, counting value separators as position gaps.
        let start = match rest.char_indices().find(|(_, c)| is_chunk_char(*c)) {
            Some((i, _)) => i,
            None => return,
        };
        let gaps = rest[..start].chars().filter(|c| *c == VALUE_SEPARATOR).count() as u32;
        position = position.saturating_add(gaps);
        rest = &rest[start..];
        let end = rest
            .char_indices()
            .find(|(_, c)| !is_chunk_char(*c))
            .map_or(rest.len(), |(i, _)| i);
        let chunk = rest[..end].trim_matches(is_joiner);
        rest = &rest[end..];
        if chunk.is_empty() {
            continue;
        }
        if chunk.chars().all(char::is_alphanumeric) {
            lower_into(chunk, scratch);
            if scratch.len() <= MAX_TOKEN_BYTES {
                emit(scratch, position, Kind::Word);
            }
            position = position.saturating_add(1);
            continue;
        }
        lower_into(chunk, scratch);
        if scratch.len() <= MAX_TOKEN_BYTES {
            emit(scratch, position, Kind::Whole);
        }
        let segmented = chunk.contains(is_strong_joiner);
        for segment in chunk.split(is_strong_joiner) {
            let segment = segment.trim_matches(is_joiner);
            if segmented && segment.contains(is_joiner) {
                lower_into(segment, scratch);
                if scratch.len() <= MAX_TOKEN_BYTES {
                    emit(scratch, position, Kind::Segment);
                }
            }
            for part in segment.split(is_joiner).filter(|p| !p.is_empty()) {
                lower_into(part, scratch);
                if scratch.len() <= MAX_TOKEN_BYTES {
                    emit(scratch, position, Kind::Part);
                }
                position = position.saturating_add(1);
            }
        }
    }
}

/// The analyzer as a Tantivy tokenizer (registered as [`TOKENIZER`]).
#[derive(Clone, Default)]
pub(crate) struct LogTokenizer {
    tokens: Vec<Token>,
    scratch: String,
}

/// The name the text field's tokenizer is registered under.
pub(crate) const TOKENIZER: &str = "wit_log";

/// The tokens of one text, handed to Tantivy one by one.
pub(crate) struct LogTokenStream<'a> {
    tokens: &'a mut [Token],
    next: usize,
}

impl Tokenizer for LogTokenizer {
    type TokenStream<'a> = LogTokenStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> LogTokenStream<'a> {
        let mut len = 0;
        let tokens = &mut self.tokens;
        analyze(text, &mut self.scratch, &mut |t, position, _| {
            if len == tokens.len() {
                tokens.push(Token::default());
            }
            let token = &mut tokens[len];
            token.text.clear();
            token.text.push_str(t);
            token.position = position as usize;
            token.position_length = 1;
            len += 1;
        });
        LogTokenStream {
            tokens: &mut self.tokens[..len],
            next: 0,
        }
    }
}

impl TokenStream for LogTokenStream<'_> {
    fn advance(&mut self) -> bool {
        if self.next < self.tokens.len() {
            self.next += 1;
            true
        } else {
            false
        }
    }

    fn token(&self) -> &Token {
        &self.tokens[self.next - 1]
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.tokens[self.next - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(text: &str) -> Vec<(String, u32, Kind)> {
        let mut out = Vec::new();
        analyze(text, &mut String::new(), &mut |t, p, k| out.push((t.to_owned(), p, k)));
        out
    }

    #[test]
    fn words_are_lower_cased_and_split_on_punctuation() {
        let got: Vec<_> = tokens("Payment FAILED, retry=3!")
            .into_iter()
            .map(|(t, p, _)| (t, p))
            .collect();
        assert_eq!(
            got,
            [("payment", 0), ("failed", 1), ("retry", 2), ("3", 3)].map(|(t, p)| (t.to_owned(), p))
        );
    }

    #[test]
    fn ids_paths_and_addresses_are_whole_and_in_parts() {
        let got = tokens("GET /api/v2/users from 10.0.0.1");
        assert_eq!(got[0], ("get".into(), 0, Kind::Word));
        assert_eq!(got[1], ("api/v2/users".into(), 1, Kind::Whole));
        assert_eq!(got[2], ("api".into(), 1, Kind::Part));
        assert_eq!(got[4], ("users".into(), 3, Kind::Part));
        assert_eq!(got[5], ("from".into(), 4, Kind::Word));
        assert_eq!(got[6], ("10.0.0.1".into(), 5, Kind::Whole));
        assert_eq!(got.last().map(|t| t.1), Some(8));
        let uuid = tokens("id 550E8400-e29b-41d4-a716-446655440000.");
        assert_eq!(uuid[1].0, "550e8400-e29b-41d4-a716-446655440000");
        assert_eq!(uuid.len(), 7);
    }

    #[test]
    fn addresses_with_ports_paths_and_mailboxes_give_their_segments() {
        let got = tokens("to 10.0.0.7:5432 via /var/log/app.log for Alice@Example.com");
        let by_kind =
            |kind| -> Vec<(String, u32)> { got.iter().filter(|t| t.2 == kind).map(|t| (t.0.clone(), t.1)).collect() };
        assert_eq!(
            by_kind(Kind::Whole),
            [("10.0.0.7:5432", 1), ("var/log/app.log", 7), ("alice@example.com", 12)].map(|(t, p)| (t.to_owned(), p))
        );
        assert_eq!(
            by_kind(Kind::Segment),
            [("10.0.0.7", 1), ("app.log", 9), ("example.com", 13)].map(|(t, p)| (t.to_owned(), p))
        );
        // Parts and words are unchanged: positions advance by parts only.
        assert_eq!(got.last(), Some(&("com".to_owned(), 14, Kind::Part)));
        // A chunk without `:`, `/` or `@` has no segments.
        assert!(tokens("10.0.0.1 a-b_c").iter().all(|t| t.2 != Kind::Segment));
    }

    #[test]
    fn long_tokens_are_dropped_but_counted() {
        let long = "x".repeat(MAX_TOKEN_BYTES + 1);
        let got = tokens(&format!("a {long} b"));
        assert_eq!(
            got.iter().map(|t| (t.0.as_str(), t.1)).collect::<Vec<_>>(),
            [("a", 0), ("b", 2)]
        );
    }

    #[test]
    fn value_separators_open_a_gap() {
        let got = tokens(&format!("a{VALUE_SEPARATOR}b"));
        assert_eq!(got.iter().map(|t| t.1).collect::<Vec<_>>(), [0, 2]);
    }

    #[test]
    fn the_tantivy_stream_yields_the_same_tokens() {
        let text = "Disk /dev/sda1 at 97% — user=Zoë";
        let mut tokenizer = LogTokenizer::default();
        let mut stream = tokenizer.token_stream(text);
        let mut got = Vec::new();
        while stream.advance() {
            got.push((stream.token().text.clone(), stream.token().position as u32));
        }
        let want: Vec<_> = tokens(text).into_iter().map(|(t, p, _)| (t, p)).collect();
        assert_eq!(got, want);
        assert!(got.iter().any(|(t, _)| t == "zoë"));
    }
}
