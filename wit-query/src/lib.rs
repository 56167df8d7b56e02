//! `wit-query` answers SQL over everything one tenant wrote. A [`QueryEngine`] holds the
//! file catalog, the store the Parquet files are read from, and caches shared by its
//! sessions; [`QueryEngine::session`] makes a [`Session`] bound to one tenant, whose only
//! tables are that tenant's `spans`, `logs` and `metrics` (the schemas of wit-batch). A table
//! gets its files from the catalog (never by listing the store), pruned by the query's time
//! predicates before any is opened; DataFusion then prunes by each file's statistics, page
//! indexes and bloom filters. Only queries run: DDL, DML, `COPY`, `SET` and URL tables are
//! refused with typed errors. Results are Arrow record batches ([`QueryResult`]), with JSON
//! rows and a text table as helpers; the API is async ([`Session::sql`]) with a blocking twin
//! ([`Session::blocking_sql`]) that runs on the engine's own runtime.
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
#![warn(missing_docs, unreachable_pub)]

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
