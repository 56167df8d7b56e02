//! `wit-tracker` follows every batch through every stage of Wit's pipeline in a SQL table, so
//! stuck batches, bottlenecks and per-client throughput are one query away. A [`Tracker`]
//! registers batches, moves them through the [`Stage`](wit_batch::Stage)s of the lifecycle
//! (a repeated step is [`Transition::AlreadyApplied`](wit_batch::Transition), a skipped or
//! backward one an error), counts stage errors until a batch is `FAILED`, leases work to stage
//! workers on several nodes, stores source offsets in the same transaction as a step, and
//! answers the operator's questions. It remembers the idempotency keys tenants' requests were
//! taken under ([`RememberedKey`]: the batch and the host's receipt; the first remembered for
//! a key wins, and keys are forgotten by age only). It is also the transactional
//! [`FileCatalog`](wit_store::FileCatalog): publishing a Parquet file marks its batches
//! `STORED` in the same transaction, and recording the file's full-text index marks them
//! `INDEXED`. Backends: [`SqliteTracker`] (embedded, the default),
//! [`PostgresTracker`] (shared by several nodes; the table `batch_tracker` keeps seed 000's
//! columns) and [`InMemoryTracker`]; each is also an [`AsyncTracker`].
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use wit_batch::{BatchId, BatchMeta, Signal, SourceKind, Stage, Tenant, Transition};
//! use wit_tracker::{Advance, ClaimRequest, SourceOffset, SqliteTracker, Tracker, TrackerConfig};
//!
//! let dir = tempfile::tempdir()?;
//! let tracker = SqliteTracker::open(&dir.path().join("tracker.db"), TrackerConfig::default())?;
//! let id = BatchId::new();
//! let meta = BatchMeta {
//!     id,
//!     tenant: Tenant::try_new("acme")?,
//!     signal: Signal::Logs,
//!     source: SourceKind::Kafka,
//!     message_count: 500,
//!     byte_size: 200_000,
//!     first_offset: Some(1_000),
//!     last_offset: Some(1_499),
//!     topics: vec!["logs.acme".into()],
//!     partition: None,
//!     created_at: id.created_at(),
//! };
//! tracker.register(&[meta])?;
//! let now = SystemTime::now();
//! // Durable in node-a's WAL at LSN 42; the Kafka offset is stored in the same transaction.
//! tracker.advance(&[
//!     Advance::new(id, Stage::WalWritten, now).with_wal_position("node-a", 42),
//!     Advance::new(id, Stage::SourceCommitted, now)
//!         .with_offsets(vec![SourceOffset::new("ingest", "logs.acme", 0, 1_500)]),
//! ])?;
//! // node-a's janitor keeps its WAL from LSN 42 until the batch is STORED.
//! assert_eq!(tracker.oldest_unstored_wal_position("node-a")?, Some(42));
//! assert_eq!(tracker.oldest_unstored_wal_position("node-b")?, None);
//!
//! // A conversion worker claims the batch, with a lease, and moves it on.
//! let claimed = tracker.claim(&ClaimRequest::new(Stage::Ingested, "node-a/convert", 10))?;
//! assert_eq!(claimed.len(), 1);
//! let outcome = tracker.advance(&[Advance::new(id, Stage::Ingested, SystemTime::now())])?;
//! assert_eq!(outcome, [Transition::Applied]);
//! assert_eq!(tracker.source_offsets("ingest")?[0].offset, 1_500);
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs, unreachable_pub)]

mod api;
#[cfg(feature = "conformance")]
pub mod conformance;
mod error;
mod memory;
mod model;
mod plan;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use api::{AsyncTracker, DynAsyncTracker, Tracker, TrackerExt};
pub use error::{BoxError, Error, Result};
pub use memory::InMemoryTracker;
pub use model::{
    Advance, BatchPage, BatchQuery, BatchRecord, BatchSelection, ClaimRequest, ClientThroughput, Cursor, ErrorOutcome,
    Lease, RangeClaim, RangeOutcome, Registration, RememberedKey, SourceOffset, StageCounts, StageTimes, TrackerConfig,
    WalPosition, Window,
};
#[cfg(feature = "postgres")]
pub use postgres::PostgresTracker;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteTracker;
