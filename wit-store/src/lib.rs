//! `wit-store` keeps Wit's stored data: Arrow batches streamed into Parquet files per tenant
//! and signal, on a local disk or any object store, published only once complete, and the
//! [`FileCatalog`] that says which file holds which batches for which event-time range. The
//! [`ParquetSink`] writes (sorted by event time within each row group, ZSTD by default,
//! statistics, page index and bloom filters for pruning), rotates by size and age, and
//! publishes through a [`Destination`]; [`Maintenance`] compacts small files, applies
//! retention and deletes retired files after a grace period, always through the catalog.
//! [`InMemoryFileCatalog`] implements the catalog here; `wit-tracker` implements it in SQLite
//! and PostgreSQL, in the same transaction as the batches' `STORED` mark. The catalog also
//! records each file's full-text index blob ([`FileIndex`], built by `wit-index` through a
//! [`FileIndexer`] or on its own), published beside the file with [`Destination::put`].
//!
//! Layout: `{tenant}/{signal}/{yyyy}/{mm}/{dd}/{hh}/{node}/{file}.parquet`, the hour being
//! the UTC hour of the file's earliest event, the file name a UUID v7. Each file's key-value
//! metadata holds `wit.schema_version`, `wit.path`, `wit.tenant`, `wit.signal`, `wit.node`,
//! `wit.batch_ids` (comma-separated), `wit.rows`, `wit.min_time` and `wit.max_time`
//! (nanoseconds since the epoch, UTC).
//!
//! ```
//! use std::sync::Arc;
//! use arrow::array::{RecordBatch, TimestampNanosecondArray};
//! use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
//! use wit_batch::{BatchId, Signal, Tenant};
//! use wit_store::{Destination, FileCatalog, InMemoryFileCatalog, NodeName, ParquetSink, SinkConfig, TimeRange};
//!
//! let schema = Arc::new(Schema::new(vec![Field::new(
//!     "timestamp",
//!     DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
//!     false,
//! )]));
//! let times = TimestampNanosecondArray::from(vec![1_700_000_030_000_000_000]).with_timezone("UTC");
//! let batch = RecordBatch::try_new(schema, vec![Arc::new(times)])?;
//!
//! let dir = tempfile::tempdir()?;
//! let catalog = Arc::new(InMemoryFileCatalog::default());
//! let mut sink = ParquetSink::open(Destination::local(dir.path())?, SinkConfig::new(NodeName::try_new("node-a")?))?
//!     .with_catalog(catalog.clone());
//! let acme = Tenant::try_new("acme")?;
//! sink.write(&acme, Signal::Traces, &batch, &[BatchId::new()])?;
//! sink.flush()?;
//! let hits = catalog.list(&acme, Signal::Traces, Some(TimeRange::new(1_700_000_000_000_000_000, i64::MAX)))?;
//! assert_eq!(hits.len(), 1);
//! assert!(hits[0].path.starts_with("acme/traces/2023/11/14/22/node-a/"));
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs, unreachable_pub)]

mod catalog;
mod config;
mod destination;
mod error;
mod layout;
mod maintenance;
mod runtime;
mod sink;
mod writer;

pub mod conformance;
pub mod rules;

pub use catalog::{FileCatalog, FileIndex, InMemoryFileCatalog, StoredFile, TimeRange};
#[doc(hidden)]
pub use config::SinkFaults;
pub use config::{ParquetCompression, SinkConfig};
pub use destination::{Destination, DestinationBuilder};
pub use error::{Error, Result};
pub use layout::NodeName;
pub use maintenance::{CompactionReport, FileIndexer, Maintenance};
pub use sink::{AsyncParquetSink, ParquetSink};
