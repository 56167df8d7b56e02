//! The one error type of wit-query.

use datafusion::error::DataFusionError;

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong with a query.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The SQL text does not parse. `line` and `column` are 1-based and point at the token
    /// the parser stopped at.
    #[error("SQL syntax error at line {line}, column {column}: {message}")]
    Syntax {
        /// What the parser expected or found.
        message: String,
        /// 1-based line of the offending token.
        line: u64,
        /// 1-based column of the offending token.
        column: u64,
    },
    /// The SQL parses but is not a query: DDL, DML, `COPY`, `SET`, transactions and every
    /// other statement that would change state or reach past the tenant's tables.
    #[error("only queries are allowed (SELECT, WITH, VALUES, EXPLAIN): `{statement}` is not")]
    NotAllowed {
        /// The kind of statement refused, as SQL names it.
        statement: String,
    },
    /// The query names something the session does not have (a table of another tenant, a
    /// path, a column) or is otherwise invalid; `line`/`column` point at the offending name
    /// when DataFusion knows it.
    #[error("invalid query{}: {message}", at(*line, *column))]
    Plan {
        /// DataFusion's explanation.
        message: String,
        /// 1-based line, when known.
        line: Option<u64>,
        /// 1-based column, when known.
        column: Option<u64>,
    },
    /// A full-text query (the literal of `matches` or `search`) does not parse, or asks
    /// what its form cannot answer.
    #[error("invalid search query at byte {position}: {reason}")]
    Search {
        /// The byte offset in the query literal.
        position: usize,
        /// What is wrong there.
        reason: String,
    },
    /// A lookup's arguments are invalid: a cursor token that is not one, a trace id that is
    /// not hex, a filter that is not one SQL expression, a page of no rows.
    #[error("invalid request: {reason}")]
    InvalidRequest {
        /// What is wrong.
        reason: String,
    },
    /// The tenant's file catalog could not list the files of a table.
    #[error("failed to list the `{table}` files of the tenant from the catalog")]
    Catalog {
        /// The table being scanned.
        table: String,
        /// The catalog's error.
        #[source]
        source: Box<wit_store::Error>,
    },
    /// The query failed while it ran (a file unreadable, a value out of range, ...).
    #[error("query failed: {message}")]
    Execution {
        /// DataFusion's explanation.
        message: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The engine's own runtime could not start.
    #[error("failed to start the query runtime")]
    Runtime {
        /// The I/O error from tokio.
        #[source]
        source: std::io::Error,
    },
    /// The result could not be rendered (JSON rows, table).
    #[error("failed to render the result as {format}")]
    Render {
        /// `JSON` or `table`.
        format: &'static str,
        /// Arrow's error.
        #[source]
        source: Box<arrow::error::ArrowError>,
    },
}

fn at(line: Option<u64>, column: Option<u64>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" at line {l}, column {c}"),
        _ => String::new(),
    }
}

/// A catalog failure inside a table scan, carried through DataFusion as an external error.
#[derive(Debug, thiserror::Error)]
#[error("failed to list the `{table}` files of the tenant from the catalog")]
pub(crate) struct CatalogFailed {
    pub(crate) table: String,
    #[source]
    pub(crate) source: wit_store::Error,
}

impl From<DataFusionError> for Error {
    fn from(e: DataFusionError) -> Self {
        let position = e
            .diagnostic()
            .and_then(|d| d.span)
            .map(|s| (s.start.line, s.start.column));
        let (line, column) = (position.map(|p| p.0), position.map(|p| p.1));
        let mut e = e;
        // Unwrap the layers DataFusion adds (context, diagnostics) down to the cause.
        while let DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) = e {
            e = *inner;
        }
        match e {
            DataFusionError::SQL(parser, _) => syntax(&parser.to_string()),
            DataFusionError::External(inner) => match inner.downcast::<CatalogFailed>() {
                Ok(failed) => Error::Catalog {
                    table: failed.table,
                    source: Box::new(failed.source),
                },
                Err(other) => match other.downcast::<wit_index::Error>() {
                    Ok(e) => match *e {
                        wit_index::Error::Query { position, reason } => Error::Search { position, reason },
                        other => Error::Execution {
                            message: other.to_string(),
                            source: Some(Box::new(other)),
                        },
                    },
                    Err(other) => Error::Execution {
                        message: other.to_string(),
                        source: Some(other),
                    },
                },
            },
            DataFusionError::Plan(_) | DataFusionError::SchemaError(..) | DataFusionError::NotImplemented(_) => {
                Error::Plan {
                    message: e.message().to_string(),
                    line,
                    column,
                }
            }
            other => Error::Execution {
                message: other.message().to_string(),
                source: Some(Box::new(other)),
            },
        }
    }
}

/// A parser message ("Expected: …, found: x at Line: 1, Column: 8") as [`Error::Syntax`].
pub(crate) fn syntax(message: &str) -> Error {
    let (text, line, column) = match message.rfind(" at Line: ") {
        Some(i) => {
            let tail = &message[i + " at Line: ".len()..];
            let mut parts = tail.split(", Column: ");
            let line = parts.next().and_then(|l| l.trim().parse().ok());
            let column = parts.next().and_then(|c| c.trim().parse().ok());
            (&message[..i], line, column)
        }
        None => (message, None, None),
    };
    let text = text.strip_prefix("sql parser error: ").unwrap_or(text);
    Error::Syntax {
        message: text.to_string(),
        line: line.unwrap_or(1),
        column: column.unwrap_or(1),
    }
}
