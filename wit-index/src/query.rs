//! The query language, parsed once and evaluated by the index and by the scan alike.

use crate::analyzer::{Kind, analyze, is_chunk_char};
use crate::{Error, Result};

/// A field of the index a query can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Field {
    /// The free text, analyzed.
    Text,
    /// Every attribute of the record, its resource and its scope, as exact `key=value` terms.
    Attr,
    /// `service_name`, exact.
    Service,
    /// The severity text and the severity number's name, lower-cased.
    Severity,
    /// The trace id, lower-case hex.
    TraceId,
    /// The span id, lower-case hex.
    SpanId,
}

/// One term-level test of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Leaf {
    /// A token of `field` equals the term.
    Term(Field, String),
    /// Text tokens at `start + offset` for some `start`, for each `(offset, token)`.
    Phrase(Vec<(u32, String)>),
    /// A token of `field` starts with the prefix.
    Prefix(Field, String),
}

/// A node of a parsed query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    Leaf(Leaf),
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
}

/// A parsed search query, in Wit's query language.
///
/// - `timeout` — rows whose text holds the word (text is the log body, the span name and
///   status message, event names and exception messages; case does not matter).
/// - `10.0.0.7`, `/api/v2/users`, `550e8400-e29b-41d4-a716-446655440000` — ids, addresses
///   and paths are found whole; their parts (`api`, `v2`) are words too, and so are the
///   pieces between `:`, `/` and `@` (`10.0.0.7` in `10.0.0.7:5432`, `app.log` in
///   `/var/log/app.log`). A term with `:` in it is a field (`name:value`): quote it
///   (`"10.0.0.7:5432"`, `"https://example.com/a"`) to search the text.
/// - `"connection reset by peer"` — a phrase: the words in this order, side by side.
/// - `time*` — a prefix of a word.
/// - `http.method:GET`, `user.id:"a b"`, `http.route:/api/*` — an attribute of the record,
///   its resource or its scope, exactly (case matters), or by prefix with a trailing `*`.
/// - `service_name:checkout`, `severity:error`, `trace_id:5b8efff7…`, `span_id:…` — the
///   service, the severity (text or the severity number's name: `trace`, `debug`, `info`,
///   `warn`, `error`, `fatal`), the trace or span id (hex).
/// - `a b` and `a AND b` — both; `a OR b` — either; `NOT a` and `-a` — not; parentheses
///   group. `NOT` binds tightest, then `AND`, then `OR`.
///
/// ```
/// use wit_index::Query;
///
/// let q = Query::parse(r#"(timeout OR "connection reset") service_name:checkout -severity:debug"#)?;
/// assert_eq!(q.text(), r#"(timeout OR "connection reset") service_name:checkout -severity:debug"#);
/// let err = Query::parse("error AND (timeout").unwrap_err();
/// assert!(err.to_string().contains("byte 10"), "{err}");
/// # Ok::<_, wit_index::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    text: String,
    pub(crate) root: Node,
}

impl Query {
    /// Parses `text`.
    ///
    /// # Errors
    ///
    /// [`Error::Query`] naming the byte position and what was wrong: an unbalanced
    /// parenthesis or quote, an operator with nothing to apply to, an empty query, a term with
    /// nothing searchable in it.
    pub fn parse(text: &str) -> Result<Query> {
        let tokens = lex(text)?;
        let mut parser = Parser {
            tokens,
            next: 0,
            end: text.len(),
        };
        if parser.tokens.is_empty() {
            return Err(query_error(0, "the query is empty"));
        }
        let root = parser.or()?;
        if let Some(tok) = parser.tokens.get(parser.next) {
            return Err(query_error(tok.at, "unexpected `)`"));
        }
        Ok(Query {
            text: text.to_owned(),
            root,
        })
    }

    /// The text this query was parsed from.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether every term of the query searches the free text (no `name:value` terms), so
    /// it can be evaluated over one text alone ([`matches_texts`](Self::matches_texts)).
    ///
    /// ```
    /// use wit_index::Query;
    ///
    /// assert!(Query::parse(r#"timeout OR "connection reset" -debug"#)?.is_text_only());
    /// assert!(!Query::parse("timeout service_name:checkout")?.is_text_only());
    /// # Ok::<_, wit_index::Error>(())
    /// ```
    pub fn is_text_only(&self) -> bool {
        fn text_only(node: &Node) -> bool {
            match node {
                Node::Leaf(Leaf::Term(f, _) | Leaf::Prefix(f, _)) => *f == Field::Text,
                Node::Leaf(Leaf::Phrase(_)) => true,
                Node::And(c) | Node::Or(c) => c.iter().all(text_only),
                Node::Not(c) => text_only(c),
            }
        }
        text_only(&self.root)
    }

    /// Whether the query has no `NOT`: then a row that matches keeps matching when text is
    /// added to it, so the rows it finds in a whole row's text include those it finds in any
    /// one of the row's texts.
    ///
    /// ```
    /// use wit_index::Query;
    ///
    /// assert!(Query::parse("timeout OR (disk AND full)")?.is_monotone());
    /// assert!(!Query::parse("timeout -debug")?.is_monotone());
    /// # Ok::<_, wit_index::Error>(())
    /// ```
    pub fn is_monotone(&self) -> bool {
        fn monotone(node: &Node) -> bool {
            match node {
                Node::Leaf(_) => true,
                Node::And(c) | Node::Or(c) => c.iter().all(monotone),
                Node::Not(_) => false,
            }
        }
        monotone(&self.root)
    }

    /// Whether each text matches the query on its own, analyzed as the free text of a row
    /// is (`None` for a missing text, which matches nothing: not even `NOT x`). Terms that
    /// name a field match no text.
    ///
    /// ```
    /// use wit_index::Query;
    ///
    /// let q = Query::parse(r#""disk full" OR timeout*"#)?;
    /// let got = q.matches_texts([Some("Disk full on /dev/sda1"), Some("timeouts: 3"), Some("ok"), None]);
    /// assert_eq!(got, [Some(true), Some(true), Some(false), None]);
    /// # Ok::<_, wit_index::Error>(())
    /// ```
    pub fn matches_texts<'a>(&self, texts: impl IntoIterator<Item = Option<&'a str>>) -> Vec<Option<bool>> {
        let mut scanner = crate::engine::Scanner::default();
        texts
            .into_iter()
            .map(|text| text.map(|t| scanner.matches_text(t, self)))
            .collect()
    }

    /// The rows of `batch` (rows of `signal`, with the columns of its Parquet files; columns
    /// it lacks are treated as empty) that match the query, evaluated as a file scan does:
    /// the same extraction, analyzer and semantics as the index.
    ///
    /// ```
    /// use wit_batch::{Compression, PayloadFormat, Signal, otlp::logs};
    /// use wit_index::Query;
    ///
    /// let json = br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[
    ///     {"body":{"stringValue":"card declined"},"severityText":"ERROR"},
    ///     {"body":{"stringValue":"paid"}}]}]}]}"#;
    /// let rows = logs::decode(json, PayloadFormat::OtlpJson, Compression::None)?;
    /// let hits = Query::parse("severity:error declined")?.matching_rows(Signal::Logs, &rows);
    /// assert_eq!(hits.iter().collect::<Vec<_>>(), [0]);
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    pub fn matching_rows(&self, signal: wit_batch::Signal, batch: &arrow::array::RecordBatch) -> crate::RowSet {
        let mut rows = crate::RowSet::empty(batch.num_rows() as u64);
        crate::engine::Scanner::default().scan(signal, batch, 0, self, &mut rows);
        rows
    }
}

impl std::str::FromStr for Query {
    type Err = Error;

    fn from_str(s: &str) -> Result<Query> {
        Query::parse(s)
    }
}

fn query_error(position: usize, reason: impl Into<String>) -> Error {
    Error::Query {
        position,
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Open,
    Close,
    /// A bare word, possibly `name:value`.
    Bare(String),
    /// A quoted string.
    Quoted(String),
    /// `name:` directly followed by a quoted string.
    FieldQuoted(String, String),
    /// A leading `-` on the next token.
    Minus,
}

#[derive(Debug)]
struct Lexed {
    tok: Tok,
    at: usize,
}

fn lex(text: &str) -> Result<Vec<Lexed>> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(at, c)) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' => {
                chars.next();
                out.push(Lexed { tok: Tok::Open, at });
            }
            ')' => {
                chars.next();
                out.push(Lexed { tok: Tok::Close, at });
            }
            '"' => {
                chars.next();
                let s = quoted(text, at, &mut chars)?;
                out.push(Lexed {
                    tok: Tok::Quoted(s),
                    at,
                });
            }
            '-' if chars
                .clone()
                .nth(1)
                .is_some_and(|(_, n)| !n.is_whitespace() && n != ')') =>
            {
                chars.next();
                out.push(Lexed { tok: Tok::Minus, at });
            }
            _ => {
                let mut word = String::new();
                while let Some(&(i, c)) = chars.peek() {
                    if c.is_whitespace() || c == '(' || c == ')' {
                        break;
                    }
                    if c == '"' {
                        // `name:"quoted value"`
                        if let Some(name) = word.strip_suffix(':').filter(|n| !n.is_empty()) {
                            chars.next();
                            let value = quoted(text, i, &mut chars)?;
                            out.push(Lexed {
                                tok: Tok::FieldQuoted(name.to_owned(), value),
                                at,
                            });
                            word.clear();
                            break;
                        }
                        return Err(query_error(i, "a quote inside a word; quote the whole phrase"));
                    }
                    word.push(c);
                    chars.next();
                }
                if !word.is_empty() {
                    out.push(Lexed {
                        tok: Tok::Bare(word),
                        at,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// Reads a quoted string whose opening quote at `open` was just consumed.
fn quoted(text: &str, open: usize, chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>) -> Result<String> {
    let mut s = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok(s),
            '\\' => match chars.next() {
                Some((_, e)) => s.push(e),
                None => return Err(query_error(i, "a backslash at the end of the query")),
            },
            c => s.push(c),
        }
    }
    let _ = text;
    Err(query_error(open, "this quote is never closed"))
}

struct Parser {
    tokens: Vec<Lexed>,
    next: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Lexed> {
        self.tokens.get(self.next)
    }

    fn is_keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Lexed { tok: Tok::Bare(w), .. }) if w == word)
    }

    fn here(&self) -> usize {
        self.peek().map_or(self.end, |t| t.at)
    }

    fn or(&mut self) -> Result<Node> {
        let mut any = vec![self.and()?];
        while self.is_keyword("OR") {
            self.next += 1;
            any.push(self.and()?);
        }
        Ok(if any.len() == 1 { any.remove(0) } else { Node::Or(any) })
    }

    fn and(&mut self) -> Result<Node> {
        let mut all = vec![self.unary()?];
        loop {
            if self.is_keyword("AND") {
                self.next += 1;
                all.push(self.unary()?);
                continue;
            }
            match self.peek() {
                None | Some(Lexed { tok: Tok::Close, .. }) => break,
                _ if self.is_keyword("OR") => break,
                _ => all.push(self.unary()?),
            }
        }
        Ok(if all.len() == 1 { all.remove(0) } else { Node::And(all) })
    }

    fn unary(&mut self) -> Result<Node> {
        if self.is_keyword("NOT") || matches!(self.peek(), Some(Lexed { tok: Tok::Minus, .. })) {
            self.next += 1;
            return Ok(Node::Not(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Node> {
        let at = self.here();
        let Some(lexed) = self.tokens.get(self.next) else {
            return Err(query_error(at, "the query ends where a term was expected"));
        };
        self.next += 1;
        match &lexed.tok {
            Tok::Open => {
                if matches!(self.peek(), Some(Lexed { tok: Tok::Close, .. })) {
                    return Err(query_error(at, "empty parentheses"));
                }
                let inner = self.or()?;
                match self.peek() {
                    Some(Lexed { tok: Tok::Close, .. }) => {
                        self.next += 1;
                        Ok(inner)
                    }
                    _ => Err(query_error(at, "this parenthesis is never closed")),
                }
            }
            Tok::Close => Err(query_error(at, "unexpected `)`")),
            Tok::Minus => Err(query_error(at, "`-` with nothing to negate")),
            Tok::Quoted(s) => text_phrase(s, at).map(Node::Leaf),
            Tok::FieldQuoted(name, value) => field_leaf(name, value, false, at).map(Node::Leaf),
            Tok::Bare(word) => {
                if matches!(word.as_str(), "AND" | "OR" | "NOT") {
                    return Err(query_error(at, format!("`{word}` with nothing before it")));
                }
                match word.split_once(':') {
                    Some((name, value)) if !name.is_empty() && !value.is_empty() && !name.starts_with('*') => {
                        let (value, prefix) = strip_star(value);
                        if value.contains('*') {
                            return Err(query_error(at, "`*` may only end a term"));
                        }
                        field_leaf(name, value, prefix, at).map(Node::Leaf)
                    }
                    Some((name, "")) if !name.is_empty() => {
                        Err(query_error(at + word.len(), format!("`{name}:` has no value")))
                    }
                    _ => {
                        let (value, prefix) = strip_star(word);
                        if value.contains('*') {
                            return Err(query_error(at, "`*` may only end a term"));
                        }
                        if prefix {
                            text_prefix(value, at).map(Node::Leaf)
                        } else {
                            text_phrase(value, at).map(Node::Leaf)
                        }
                    }
                }
            }
        }
    }
}

fn strip_star(value: &str) -> (&str, bool) {
    match value.strip_suffix('*') {
        Some(v) => (v, true),
        None => (value, false),
    }
}

/// A bare word or a quoted phrase over the text: one token, or the words and parts in order.
fn text_phrase(text: &str, at: usize) -> Result<Leaf> {
    let mut whole = Vec::new();
    let mut seq: Vec<(u32, String)> = Vec::new();
    let mut chunks = 0;
    analyze(text, &mut String::new(), &mut |t, p, kind| match kind {
        Kind::Whole => {
            chunks += 1;
            whole.push(t.to_owned());
        }
        Kind::Word => {
            chunks += 1;
            seq.push((p, t.to_owned()));
        }
        Kind::Part => seq.push((p, t.to_owned())),
        Kind::Segment => {}
    });
    if chunks == 1 && whole.len() == 1 {
        return Ok(Leaf::Term(Field::Text, whole.remove(0)));
    }
    match seq.len() {
        0 => Err(query_error(
            at,
            "nothing searchable in this term (only punctuation, or too long)",
        )),
        1 => Ok(Leaf::Term(Field::Text, seq.remove(0).1)),
        _ => {
            let first = seq[0].0;
            Ok(Leaf::Phrase(seq.into_iter().map(|(p, t)| (p - first, t)).collect()))
        }
    }
}

fn text_prefix(prefix: &str, at: usize) -> Result<Leaf> {
    if prefix.is_empty() {
        return Err(query_error(at, "`*` needs a prefix before it"));
    }
    if let Some((i, c)) = prefix.char_indices().find(|(_, c)| !is_chunk_char(*c)) {
        return Err(query_error(at + i, format!("a prefix cannot hold `{c}`")));
    }
    Ok(Leaf::Prefix(Field::Text, prefix.to_lowercase()))
}

fn field_leaf(name: &str, value: &str, prefix: bool, at: usize) -> Result<Leaf> {
    let (field, term) = match name {
        "service_name" => (Field::Service, value.to_owned()),
        "severity" => (Field::Severity, value.to_lowercase()),
        "trace_id" => (Field::TraceId, value.to_ascii_lowercase()),
        "span_id" => (Field::SpanId, value.to_ascii_lowercase()),
        "text" => {
            return if prefix {
                text_prefix(value, at)
            } else {
                text_phrase(value, at)
            };
        }
        key => (Field::Attr, format!("{key}={value}")),
    };
    if term.len() > crate::document::MAX_TERM_BYTES {
        return Err(query_error(at, "this value is longer than any indexed value"));
    }
    Ok(if prefix {
        Leaf::Prefix(field, term)
    } else {
        Leaf::Term(field, term)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(q: &str) -> Node {
        Query::parse(q).unwrap_or_else(|e| panic!("{q}: {e}")).root
    }

    fn term(t: &str) -> Node {
        Node::Leaf(Leaf::Term(Field::Text, t.into()))
    }

    #[test]
    fn precedence_is_not_and_or() {
        assert_eq!(
            root("a b OR NOT c AND -d"),
            Node::Or(vec![
                Node::And(vec![term("a"), term("b")]),
                Node::And(vec![Node::Not(Box::new(term("c"))), Node::Not(Box::new(term("d")))]),
            ])
        );
        assert_eq!(
            root("(a OR b) c"),
            Node::And(vec![Node::Or(vec![term("a"), term("b")]), term("c")])
        );
    }

    #[test]
    fn fields_phrases_and_prefixes() {
        assert_eq!(
            root("http.method:GET"),
            Node::Leaf(Leaf::Term(Field::Attr, "http.method=GET".into()))
        );
        assert_eq!(
            root(r#"user.name:"Ann Lee""#),
            Node::Leaf(Leaf::Term(Field::Attr, "user.name=Ann Lee".into()))
        );
        assert_eq!(
            root("http.route:/api*"),
            Node::Leaf(Leaf::Prefix(Field::Attr, "http.route=/api".into()))
        );
        assert_eq!(root("Time*"), Node::Leaf(Leaf::Prefix(Field::Text, "time".into())));
        assert_eq!(
            root("severity:ERROR"),
            Node::Leaf(Leaf::Term(Field::Severity, "error".into()))
        );
        assert_eq!(root("10.0.0.1"), term("10.0.0.1"));
        assert_eq!(
            root(r#""GET /api/users""#),
            Node::Leaf(Leaf::Phrase(vec![
                (0, "get".into()),
                (1, "api".into()),
                (2, "users".into())
            ]))
        );
        assert_eq!(
            root("user=alice"),
            Node::Leaf(Leaf::Phrase(vec![(0, "user".into()), (1, "alice".into())]))
        );
    }

    #[test]
    fn errors_name_the_position() {
        let cases = [
            ("", 0),
            ("a AND", 5),
            ("(a", 0),
            ("a)", 1),
            ("\"open", 0),
            ("OR a", 0),
            ("()", 0),
            ("!!!", 0),
            ("a*b", 0),
            ("key:", 4),
            ("a -", 2),
            ("pre\"x\"", 3),
        ];
        for (q, at) in cases {
            match Query::parse(q) {
                Err(Error::Query { position, .. }) => assert_eq!(position, at, "{q}"),
                other => panic!("{q}: {other:?}"),
            }
        }
    }
}
