//! `wit-pipeline` wires Wit's crates into a running pipeline that a host links and drives.
//! A [`Pipeline`] takes parts (OTLP requests, NDJSON bodies) through
//! [`try_submit`](Pipeline::try_submit), [`blocking_submit`](Pipeline::blocking_submit) or
//! [`submit`](Pipeline::submit)`.await`, batches them (`wit-batch`), makes each batch durable
//! in the write-ahead log (`wit-wal`) and answers at the [`AckLevel`] asked for through an
//! [`Ack`] (`wait()` or `.await`). Behind the log, a processing thread converts each batch to
//! Arrow by its signal (traces, logs, metrics, events) and writes it whole into one Parquet
//! file (`wit-store`), moving it through its stages in a tracker (`wit-tracker`, any
//! [`TrackerCatalog`]); a janitor truncates the log behind what is stored and marks batches
//! `COMPLETED`. Opening recovers: staged files are published, then every batch in the log
//! that is not stored is stored, exactly once.
//!
//! A request retried after a lost answer is taken once with an idempotency key
//! ([`Pipeline::claim_key`]): the key travels in the WAL envelope with the part and the host's
//! receipt, is taken again on replay, and is remembered in the tracker before the batch is
//! stored, so a repeat within the window ([`PipelineConfig::with_idempotency_window`]) gets
//! the first receipt, across crashes.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use wit_batch::{BatchKey, Compression, Part, PayloadFormat, Signal, SourceKind, Stage, Tenant};
//! use wit_pipeline::{AckLevel, Pipeline, PipelineConfig};
//! use wit_store::{Destination, FileCatalog, NodeName, SinkConfig};
//! use wit_tracker::{SqliteTracker, Tracker, TrackerConfig};
//!
//! let dir = tempfile::tempdir()?;
//! let tracker = Arc::new(SqliteTracker::open(&dir.path().join("tracker.db"), TrackerConfig::default())?);
//! let node = NodeName::try_new("node-a")?;
//! // Files close at 256 MiB or after ten minutes (the sink's defaults), or on `flush`.
//! let sink = SinkConfig::new(node.clone()).with_max_file_age(Duration::from_secs(600));
//! let config = PipelineConfig::new(dir.path().join("pipeline"), node).with_sink(sink);
//! let pipeline = Pipeline::open(config, Destination::local(&dir.path().join("data"))?, tracker.clone())?;
//!
//! // An OTLP/JSON export request, as an HTTP receiver gets it.
//! let body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c",
//!   "spanId":"eee19b7ec3c1b174","name":"GET /cart","startTimeUnixNano":"1700000000000000000",
//!   "endTimeUnixNano":"1700000000250000000"}]}]}]}"#;
//! let key = BatchKey::new(Tenant::try_new("acme")?, Signal::Traces, SourceKind::Http);
//! let part = Part::new(PayloadFormat::OtlpJson, Compression::None, 1, &body[..]);
//! let ack = pipeline.blocking_submit(&key, part, AckLevel::Stored)?;
//! pipeline.flush()?; // store now what was submitted, rather than when batch and file are due
//! let acked = ack.wait()?; // durable in the WAL, then in a published Parquet file
//!
//! let batch = acked.batch.expect("a stored part has a batch");
//! assert_eq!(tracker.batch(batch)?.stage, Stage::Stored);
//! assert_eq!(tracker.files_holding(batch)?.len(), 1);
//! pipeline.close()?;
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```
//!
//! # Metrics
//!
//! Through the [`metrics`](https://docs.rs/metrics) facade (a no-op until the host installs a
//! recorder): `wit_pipeline_batches_stored_total`, `wit_pipeline_batches_failed_total`,
//! `wit_pipeline_files_indexed_total`, `wit_pipeline_records_stored_total`,
//! `wit_pipeline_records_indexed_total`, and `wit_pipeline_errors_total` by `kind` (`store`,
//! `index`, `tracker`, `wal`, `convert`, `other`) for errors the pipeline lived through.
#![warn(missing_docs, unreachable_pub)]

mod ack;
mod config;
mod convert;
mod dead_letter;
mod error;
mod idempotency;
mod index;
mod janitor;
#[cfg(feature = "kafka")]
pub mod kafka;
mod pipeline;
mod process;
mod ranges;

pub use ack::{Ack, AckLevel, Acked};
pub use config::PipelineConfig;
pub use error::{Error, Result};
pub use idempotency::{Claimed, KeyClaim, MAX_RECEIPT_BYTES};
pub use pipeline::{Pipeline, RecoveryReport, Status, Submitted, TrackerCatalog};

/// The examples of the workspace's README, compiled and run as this crate's doc tests (it
/// depends on every other crate).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
