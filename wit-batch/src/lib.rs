//! `wit-batch` is Wit's unit of work and its hottest conversion. A batch is what
//! the WAL stores and the tracker follows: a [`BatchId`] (UUID v7, time-ordered), its
//! [`BatchMeta`] (tenant, [`Signal`], [`SourceKind`], counts, source offsets) and the
//! [`Part`]s as received, framed by a versioned [`Envelope`]. The [`Batcher`] gathers parts
//! per tenant, signal and source into batches by count, bytes and age, with backpressure
//! (`AsyncBatcher` behind the `tokio` feature). [`Stage`] is the batch
//! lifecycle every crate uses, with its allowed transitions defined once. [`otlp`] converts
//! OTLP traces, logs and metrics (protobuf or OTLP/JSON, gzip or not) straight into typed
//! Arrow batches and back, losslessly; [`events`] converts NDJSON events; [`dead_letters`] encodes
//! records refused one by one, and converts them to rows of a tenant's `dead_letters` table.
//!
//! ```
//! use std::time::Instant;
//! use bytes::Bytes;
//! use wit_batch::{BatchKey, Batcher, BatcherConfig, Compression, Envelope, Part, PayloadFormat, Push};
//! use wit_batch::{Signal, SourceKind, Stage, Tenant, otlp};
//!
//! // An OTLP/JSON export request, as an HTTP receiver gets it.
//! let body = br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"shop"}}]},
//!   "scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
//!   "name":"GET /cart","kind":2,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000250000000"}]}]}]}"#;
//!
//! // Batch it: here one message is enough to complete a batch.
//! let mut batcher = Batcher::try_new(BatcherConfig::default().with_max_messages(1))?;
//! let key = BatchKey::new(Tenant::try_new("acme")?, Signal::Traces, SourceKind::Http);
//! let part = Part::new(PayloadFormat::OtlpJson, Compression::None, 1, &body[..]);
//! let Push::Accepted { ready } = batcher.push(&key, part, Instant::now()) else { unreachable!() };
//!
//! // The envelope is what the WAL stores; replay decodes it and reconverts the parts.
//! let bytes = Bytes::from(ready[0].encode());
//! let batch = Envelope::decode(&bytes)?;
//! assert!(Stage::Created.can_transition_to(Stage::WalWritten));
//! let part = &batch.parts()[0];
//! let spans = otlp::traces::decode(&part.payload, part.format, part.compression)?;
//! assert_eq!(spans.num_rows(), 1);
//! # Ok::<_, wit_batch::Error>(())
//! ```
#![warn(missing_docs, unreachable_pub)]

mod batcher;
mod envelope;
mod error;
mod format;
mod id;
mod lifecycle;
mod meta;

pub mod dead_letters;
pub mod events;
pub mod otlp;

#[doc(hidden)]
pub mod fuzz;

#[cfg(feature = "tokio")]
pub use batcher::AsyncBatcher;
pub use batcher::{BatchKey, Batcher, BatcherConfig, Push};
pub use envelope::{Envelope, Idempotency, Part};
pub use error::{Error, Result};

/// The largest payload (after decompression) that OTLP decoding accepts: 256 MiB. OTLP
/// exporters send a few MiB per request; the bound keeps every column's 32-bit offsets safe
/// and stops decompression bombs.
pub const MAX_PAYLOAD_LEN: usize = 256 << 20;
pub use format::{Compression, PayloadFormat};
pub use id::BatchId;
pub use lifecycle::{RetryDecision, RetryPolicy, Stage, Transition};
pub use meta::{BatchMeta, Signal, SourceKind, Tenant};
