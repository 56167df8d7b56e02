//! The lookups people do every day, over a session's tables: a trace by id, a time range
//! newest first in pages that resume exactly where the last one ended, and a live tail.

use std::fmt;
use std::str::FromStr;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int64Type, SchemaRef};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use wit_batch::Signal;

use crate::{Error, QueryResult, Result, Session};

const TIME: &str = "__wit_time";
const KEY: &str = "__wit_key";

/// A position in a table's time order: the time and tie-break key of the last row a page or
/// tail returned. Its [`token`](Self::token) is an opaque string a client hands back.
///
/// Rows are ordered by `timestamp`, then by a key of the row's content (for spans the span
/// and trace ids; for logs, metrics and dead letters a digest of their identifying columns;
/// for a dead letter, the whole row), so the order
/// is the same wherever a row is (in memory or in any file) and resuming after a row never
/// repeats or skips one, whatever arrived since. Rows equal in time and key are
/// indistinguishable to a cursor: a page that ends among them resumes after all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    signal: Signal,
    time: i64,
    key: String,
}

impl Cursor {
    /// The opaque token of this cursor (`v1.{table}.{time}.{key in hex}`).
    pub fn token(&self) -> String {
        let key: String = self.key.bytes().map(|b| format!("{b:02x}")).collect();
        format!("v1.{}.{}.{key}", table_name(self.signal), self.time)
    }

    /// The table the cursor is a position in.
    pub fn signal(&self) -> Signal {
        self.signal
    }

    /// The event time (nanoseconds since the epoch) of the row the cursor is at.
    pub fn time(&self) -> i64 {
        self.time
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.token())
    }
}

impl FromStr for Cursor {
    type Err = Error;

    /// Parses a [`token`](Cursor::token).
    fn from_str(token: &str) -> Result<Cursor> {
        let bad = |why: &str| Error::InvalidRequest {
            reason: format!("cursor `{token}`: {why}"),
        };
        let mut parts = token.splitn(4, '.');
        let (Some("v1"), Some(table), Some(time), Some(key)) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("not a cursor token"));
        };
        let signal = crate::engine::TABLES
            .iter()
            .find(|(name, _)| *name == table)
            .map(|(_, s)| *s)
            .ok_or_else(|| bad("unknown table"))?;
        let time = time.parse().map_err(|_| bad("bad time"))?;
        if key.len() % 2 != 0 {
            return Err(bad("bad key"));
        }
        let bytes = (0..key.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&key[i..i + 2], 16))
            .collect::<std::result::Result<Vec<u8>, _>>()
            .map_err(|_| bad("bad key"))?;
        let key = String::from_utf8(bytes).map_err(|_| bad("bad key"))?;
        Ok(Cursor { signal, time, key })
    }
}

/// One page of rows and the cursor to resume after it (`None` when this page was the last).
#[derive(Debug, Clone)]
pub struct Page {
    /// The rows, with the table's columns.
    pub rows: QueryResult,
    /// Where the next page starts; for a tail, always set (call again with it).
    pub next: Option<Cursor>,
}

/// A request for rows of one table in time order: a time range, an SQL predicate, a page
/// size, and the cursor of the previous page.
///
/// ```
/// use wit_batch::Signal;
/// use wit_query::PageRequest;
///
/// let first = PageRequest::new(Signal::Logs, 100)
///     .with_range(Some(1_700_000_000_000_000_000), None)
///     .with_filter("severity_text = 'ERROR' AND search('timeout')");
/// # let _ = first;
/// ```
#[derive(Debug, Clone)]
pub struct PageRequest {
    signal: Signal,
    limit: usize,
    from: Option<i64>,
    to: Option<i64>,
    filter: Option<String>,
    after: Option<Cursor>,
}

impl PageRequest {
    /// At most `limit` rows of `signal`'s table.
    pub fn new(signal: Signal, limit: usize) -> Self {
        PageRequest {
            signal,
            limit,
            from: None,
            to: None,
            filter: None,
            after: None,
        }
    }

    /// Only rows with `from <= timestamp < to` (nanoseconds since the epoch; `None` is open).
    pub fn with_range(mut self, from: Option<i64>, to: Option<i64>) -> Self {
        self.from = from;
        self.to = to;
        self
    }

    /// Only rows for which `predicate` (an SQL boolean expression over the table's columns,
    /// as in a `WHERE` clause) holds.
    pub fn with_filter(mut self, predicate: &str) -> Self {
        self.filter = Some(predicate.to_owned());
        self
    }

    /// Resume after `cursor` (from the previous page).
    pub fn after(mut self, cursor: Option<Cursor>) -> Self {
        self.after = cursor;
        self
    }
}

pub(crate) fn table_name(signal: Signal) -> &'static str {
    crate::engine::TABLES
        .iter()
        .find(|(_, s)| *s == signal)
        .map_or("events", |(name, _)| name)
}

/// The tie-break key of a table's rows, as SQL.
fn key_sql(signal: Signal) -> &'static str {
    match signal {
        Signal::Traces => "coalesce(encode(span_id, 'hex'), '') || '/' || coalesce(encode(trace_id, 'hex'), '')",
        Signal::Logs => {
            "md5(concat_ws('|', CAST(CAST(observed_time AS BIGINT) AS VARCHAR), CAST(severity_number AS VARCHAR), \
             coalesce(encode(trace_id, 'hex'), ''), coalesce(encode(span_id, 'hex'), ''), coalesce(service_name, ''), \
             coalesce(body['str'], ''), event_name))"
        }
        Signal::DeadLetters => {
            // Every column: letters refused at the same time differ at least by their record,
            // or by where it came from.
            "md5(concat_ws('|', record, reason, signal, coalesce(stream, ''), \
             coalesce(CAST(schema_version AS VARCHAR), ''), coalesce(path, ''), coalesce(topic, ''), \
             coalesce(CAST(\"partition\" AS VARCHAR), ''), coalesce(CAST(\"offset\" AS VARCHAR), '')))"
        }
        _ => {
            "md5(concat_ws('|', metric_name, coalesce(service_name, ''), CAST(metric_type AS VARCHAR), \
             coalesce(CAST(CAST(start_timestamp AS BIGINT) AS VARCHAR), ''), coalesce(CAST(value_double AS VARCHAR), ''), \
             coalesce(CAST(value_int AS VARCHAR), ''), coalesce(CAST(count AS VARCHAR), ''), coalesce(CAST(sum AS VARCHAR), '')))"
        }
    }
}

fn time_sql(ns: i64) -> String {
    format!("arrow_cast({ns}, 'Timestamp(Nanosecond, Some(\"UTC\"))')")
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `predicate` parsed as one SQL expression (nothing before or after it), re-rendered.
fn checked_predicate(predicate: &str) -> Result<String> {
    let invalid = |reason: String| Error::InvalidRequest {
        reason: format!("filter `{predicate}`: {reason}"),
    };
    let mut parser = Parser::new(&GenericDialect {})
        .try_with_sql(predicate)
        .map_err(|e| invalid(e.to_string()))?;
    let expr = parser.parse_expr().map_err(|e| invalid(e.to_string()))?;
    let rest = parser.peek_token();
    if rest.token != datafusion::sql::sqlparser::tokenizer::Token::EOF {
        return Err(invalid(format!("unexpected `{}` after the expression", rest.token)));
    }
    Ok(expr.to_string())
}

impl Session {
    /// The spans of one trace (`trace_id` in hex), oldest first.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] when `trace_id` is not 32 hex digits; as [`sql`](Self::sql).
    pub async fn trace(&self, trace_id: &str) -> Result<QueryResult> {
        if trace_id.len() != 32 || !trace_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::InvalidRequest {
                reason: format!("trace id `{trace_id}`: expected 32 hex digits"),
            });
        }
        let id = trace_id.to_ascii_lowercase();
        self.sql(&format!(
            "SELECT * FROM spans WHERE trace_id = decode('{id}', 'hex') ORDER BY timestamp, span_id"
        ))
        .await
    }

    /// [`trace`](Self::trace) on the engine's runtime.
    ///
    /// # Errors
    ///
    /// As [`trace`](Self::trace).
    pub fn blocking_trace(&self, trace_id: &str) -> Result<QueryResult> {
        let (session, id) = (self.clone(), trace_id.to_owned());
        self.engine.run(async move { session.trace(&id).await })
    }

    /// One page of the request's rows, newest first, after its cursor.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] for a zero limit, a cursor of another table or a filter
    /// that is not one SQL expression; as [`sql`](Self::sql) for the rest.
    pub async fn page(&self, request: &PageRequest) -> Result<Page> {
        self.ordered(request, false).await
    }

    /// [`page`](Self::page) on the engine's runtime.
    ///
    /// # Errors
    ///
    /// As [`page`](Self::page).
    pub fn blocking_page(&self, request: &PageRequest) -> Result<Page> {
        let (session, request) = (self.clone(), request.clone());
        self.engine.run(async move { session.page(&request).await })
    }

    /// A live tail: the request's rows newer than its cursor, oldest first. Without a
    /// cursor it starts at the newest row now (returning none). The returned cursor is
    /// always set: call again with it to get what arrived since.
    ///
    /// # Errors
    ///
    /// As [`page`](Self::page).
    pub async fn tail(&self, request: &PageRequest) -> Result<Page> {
        if request.after.is_none() {
            let newest = self
                .ordered(
                    &PageRequest {
                        limit: 1,
                        ..request.clone()
                    },
                    false,
                )
                .await?;
            // An empty table: the tail starts before any row.
            let next = newest.next.unwrap_or(Cursor {
                signal: request.signal,
                time: i64::MIN,
                key: String::new(),
            });
            let rows = QueryResult::new(newest.rows.schema().clone(), Vec::new());
            return Ok(Page { rows, next: Some(next) });
        }
        let page = self.ordered(request, true).await?;
        let next = page.next.clone().or_else(|| request.after.clone());
        Ok(Page { rows: page.rows, next })
    }

    /// [`tail`](Self::tail) on the engine's runtime.
    ///
    /// # Errors
    ///
    /// As [`tail`](Self::tail).
    pub fn blocking_tail(&self, request: &PageRequest) -> Result<Page> {
        let (session, request) = (self.clone(), request.clone());
        self.engine.run(async move { session.tail(&request).await })
    }

    async fn ordered(&self, request: &PageRequest, ascending: bool) -> Result<Page> {
        if request.limit == 0 {
            return Err(Error::InvalidRequest {
                reason: "a page holds at least one row".into(),
            });
        }
        let table = match request.signal {
            Signal::Traces | Signal::Logs | Signal::Metrics | Signal::DeadLetters => table_name(request.signal),
            other => {
                return Err(Error::InvalidRequest {
                    reason: format!("no table of {other} to page through"),
                });
            }
        };
        let key = key_sql(request.signal);
        let mut conditions = Vec::new();
        if let Some(filter) = &request.filter {
            conditions.push(format!("({})", checked_predicate(filter)?));
        }
        if let Some(from) = request.from {
            conditions.push(format!("timestamp >= {}", time_sql(from)));
        }
        if let Some(to) = request.to {
            conditions.push(format!("timestamp < {}", time_sql(to)));
        }
        if let Some(after) = &request.after {
            if after.signal != request.signal {
                return Err(Error::InvalidRequest {
                    reason: format!("the cursor is of `{}`, not `{table}`", table_name(after.signal)),
                });
            } else if after.time == i64::MIN {
                // Before every row (the tail of a table that was empty): all rows are after
                // it, none before.
                if !ascending {
                    conditions.push("FALSE".to_string());
                }
            } else {
                let (op, t, k) = (
                    if ascending { ">" } else { "<" },
                    time_sql(after.time),
                    quote(&after.key),
                );
                conditions.push(format!("(timestamp {op} {t} OR (timestamp = {t} AND {key} {op} {k}))"));
            }
        }
        let order = if ascending { "ASC" } else { "DESC" };
        let sql = format!(
            "SELECT *, CAST(timestamp AS BIGINT) AS {TIME}, {key} AS {KEY} FROM {table}{} \
             ORDER BY timestamp {order}, {KEY} {order} LIMIT {}",
            if conditions.is_empty() {
                String::new()
            } else {
                format!(" WHERE {}", conditions.join(" AND "))
            },
            request.limit
        );
        let result = self.sql(&sql).await?;
        let last = last_position(request.signal, &result);
        let rows = strip(&result)?;
        let next = if result.num_rows() == request.limit || ascending {
            last
        } else {
            None
        };
        Ok(Page { rows, next })
    }
}

/// The cursor at the last row of a result that has the position columns.
fn last_position(signal: Signal, result: &QueryResult) -> Option<Cursor> {
    let batch = result.batches().iter().rev().find(|b| b.num_rows() > 0)?;
    let i = batch.num_rows() - 1;
    let time = batch.column_by_name(TIME)?.as_primitive::<Int64Type>();
    let key = batch.column_by_name(KEY)?;
    let key = arrow::compute::cast(key, &arrow::datatypes::DataType::Utf8).ok()?;
    let key = key.as_string::<i32>();
    (time.is_valid(i) && key.is_valid(i)).then(|| Cursor {
        signal,
        time: time.value(i),
        key: key.value(i).to_string(),
    })
}

/// The result without the position columns.
fn strip(result: &QueryResult) -> Result<QueryResult> {
    let keep: Vec<usize> = result
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| f.name() != TIME && f.name() != KEY)
        .map(|(i, _)| i)
        .collect();
    let schema: SchemaRef = std::sync::Arc::new(result.schema().project(&keep).map_err(|e| Error::Execution {
        message: e.to_string(),
        source: Some(Box::new(e)),
    })?);
    let batches = result
        .batches()
        .iter()
        .map(|b| b.project(&keep))
        .collect::<std::result::Result<Vec<RecordBatch>, _>>()
        .map_err(|e| Error::Execution {
            message: e.to_string(),
            source: Some(Box::new(e)),
        })?;
    Ok(QueryResult::new(schema, batches))
}
