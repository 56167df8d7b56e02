//! `wit-store` keeps Wit's stored data: complete Parquet files per tenant and signal, and the
//! [`FileCatalog`] that says which file holds which batches, for which event-time range, and
//! which files are live or retired. Queries read the catalog to find files; compaction swaps
//! files through it in one step; retired files are deleted only after a grace period.
//! [`InMemoryFileCatalog`] implements the catalog here; `wit-tracker` implements it in SQLite
//! and PostgreSQL, in the same transaction as the batches' `STORED` mark.
//!
//! ```
//! use wit_batch::{BatchId, Signal, Tenant};
//! use wit_store::{FileCatalog, InMemoryFileCatalog, StoredFile, TimeRange};
//!
//! let catalog = InMemoryFileCatalog::default();
//! let acme = Tenant::try_new("acme")?;
//! catalog.publish(&[StoredFile {
//!     path: "acme/traces/2026/11/22/09/node-a/01.parquet".to_owned(),
//!     tenant: acme.clone(),
//!     signal: Signal::Traces,
//!     time_range: TimeRange::new(1_700_000_000_000_000_000, 1_700_000_060_000_000_000),
//!     rows: 5_000,
//!     bytes: 180_000,
//!     batch_ids: vec![BatchId::new(), BatchId::new()],
//! }])?;
//! let hits = catalog.list(&acme, Signal::Traces, Some(TimeRange::new(1_700_000_030_000_000_000, i64::MAX)))?;
//! assert_eq!(hits.len(), 1);
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs, unreachable_pub)]

mod error;

pub mod catalog;

pub use catalog::{FileCatalog, InMemoryFileCatalog, StoredFile, TimeRange};
pub use error::{Error, Result};
