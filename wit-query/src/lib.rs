//! `wit-query` answers SQL over everything one tenant wrote. A [`QueryEngine`] holds the
//! file catalog, the store the Parquet files are read from, the full-text indexes' cache and
//! (optionally) the [`HotTier`] of acknowledged rows not yet stored; [`QueryEngine::session`]
//! makes a [`Session`] bound to one tenant whose only tables are that tenant's. Files come from
//! the catalog (never by listing the store), pruned by the query's time predicates before any
//! is opened; DataFusion then prunes by each file's statistics, page indexes and bloom
//! filters, and full-text predicates narrow the files and rows read through each file's index.
//! Only queries run: DDL, DML, `COPY`, `SET`, URL tables and file-reading functions are refused
//! with typed errors. Results are Arrow record batches ([`QueryResult`]) with JSON rows and a
//! text table as helpers; the API is async ([`Session::sql`]) with blocking twins
//! ([`Session::blocking_sql`]) that run on the engine's own runtime.
//!
//! ```
//! use std::sync::Arc;
//! use wit_batch::Tenant;
//! use wit_query::{Error, QueryEngine};
//! use wit_store::{Destination, InMemoryFileCatalog};
//!
//! let dir = tempfile::tempdir()?;
//! let engine = QueryEngine::new(Arc::new(InMemoryFileCatalog::default()), &Destination::local(dir.path())?)?;
//! let session = engine.session(&Tenant::try_new("acme")?);
//! // A tenant without data has empty tables.
//! assert_eq!(session.blocking_sql("SELECT count(*) AS n FROM spans")?.to_json_rows()?[0]["n"], 0);
//! // Nothing but queries runs.
//! let refused = session.blocking_sql("CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/etc'");
//! assert!(matches!(refused, Err(Error::NotAllowed { .. })));
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```
//!
//! # Tables
//!
//! | table | one row per | columns |
//! |---|---|---|
//! | `spans` | span | `wit_batch::otlp::traces::schema()` |
//! | `logs` | log record | `wit_batch::otlp::logs::schema()` |
//! | `metrics` | metric data point, of every kind | `wit_batch::otlp::metrics::schema()` |
//! | `events` | JSON event | the union of the columns of the tenant's events (NULL where an event lacks one) |
//! | `dead_letters` | record refused one by one (an event failing its schema, an OTLP record that did not convert, a Kafka message that did not decode) | `wit_batch::dead_letters::schema()`: `timestamp` (when refused), `signal`, `stream`, `schema_version`, `path`, `reason`, `record`, `topic`, `partition`, `offset` |
//!
//! Every table has `timestamp` (the event time, `Timestamp(ns, UTC)`; compare it with RFC 3339
//! text: `timestamp >= '2025-12-01T10:00:00Z'`), and the OTLP tables the resource and scope
//! columns (`service_name`, `resource_attributes`, `scope_name`, ...). Metrics of all five
//! kinds share one table: `metric_type` says which (5 gauge, 7 sum, 9 histogram, 10
//! exponential histogram, 11 summary; `metric_type_name(metric_type)` names it), gauges and
//! sums have `value_double` or `value_int`, histograms `count`, `sum`, `min`, `max`,
//! `bucket_counts` and `explicit_bounds`, exponential histograms their scale and buckets,
//! summaries `count`, `sum` and `quantile_values`; a column that does not apply to a row's kind
//! is NULL.
//!
//! # Functions
//!
//! - `attr(attributes, 'http.method')`: an attribute's value as text (strings as they are,
//!   numbers and booleans written out, bytes in hex, arrays and maps as their OTLP/JSON), NULL
//!   when absent; works on `resource_attributes`, `scope_attributes`, `metric_metadata` too.
//!   `attr_int`, `attr_double` (integers widened) and `attr_bool` return the typed value, NULL
//!   when absent or of another type:
//!   `SELECT attr(attributes, 'http.route'), avg(attr_int(attributes, 'http.response.status_code')) FROM spans GROUP BY 1`.
//! - `span_kind(kind)` (`unspecified`, `internal`, `server`, `client`, `producer`,
//!   `consumer`), `status_name(status_code)` (`unset`, `ok`, `error`),
//!   `severity_name(severity_number)` (`TRACE` … `FATAL4`), `metric_type_name(metric_type)`
//!   (`gauge`, `sum`, `histogram`, `exponential_histogram`, `summary`),
//!   `temporality_name(aggregation_temporality)` (`unspecified`, `delta`, `cumulative`): the
//!   OTLP specification's names; a filter such as `span_kind(kind) = 'server'` is rewritten to
//!   `kind = 2`, so it prunes as the number would.
//! - `matches(text, 'query')`: a text column, a log `body`, or any text expression, searched
//!   in wit-index's query language ([`wit_index::Query`]: words, `"phrases"`, `prefix*`,
//!   `AND`/`OR`/`NOT`) with its analyzer: `WHERE matches(body, '"connection reset" OR timeout')`.
//! - `search('query')`: the same language over everything wit-index indexes of a row: its free
//!   text, every attribute as `key:value`, `service_name:`, `severity:`, `trace_id:`,
//!   `span_id:`: `WHERE search('payment failed service_name:checkout -severity:debug')`; of a
//!   dead letter, its `reason` and `record` as free text. With
//!   several tables in reach, name one: `search('l', 'timeout')`.
//!
//! Where a file has an index, `search`, `matches` on a free-text column, and `trace_id =` /
//! `span_id =` equalities become index searches: a file with no matching row is not read, and
//! of the others only the matching rows are (a Parquet row selection). Where a file has no
//! usable index the same predicate is evaluated on its rows, with the same answer.
//!
//! # Acknowledged, not yet stored
//!
//! Given the [`HotTier`] a `wit-pipeline` fills ([`QueryConfig::with_hot_tier`]), queries also
//! read the rows acknowledged but not yet in a published file, each batch exactly once (by
//! batch id, against the same catalog listing).
//!
//! # Lookups
//!
//! [`Session::trace`] (the spans of a trace), [`Session::page`] (a time range newest first, a
//! page at a time, resumed by a [`Cursor`] token) and [`Session::tail`] (rows newer than a
//! cursor).
#![warn(missing_docs, unreachable_pub)]

mod dense;
mod dictionary;
mod engine;
mod error;
mod full_text;
mod functions;
mod hot;
mod lookup;
mod output;
mod runtime;
mod table;
mod tenant;
mod time;

pub use engine::{QueryConfig, QueryEngine, Session, TABLES};
pub use error::{Error, Result};
pub use hot::{HotStats, HotTier};
pub use lookup::{Cursor, Page, PageRequest};
pub use output::QueryResult;
