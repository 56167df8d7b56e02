//! The one error type of `wit-pipeline`.

use std::path::PathBuf;

use wit_batch::BatchId;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `wit-pipeline`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration cannot work.
    #[error("invalid pipeline configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },

    /// An idempotency key that cannot be used: not 1 to 255 bytes of visible ASCII, a
    /// receipt over `MAX_RECEIPT_BYTES`, or a key submitted without a claim while taken.
    #[error("idempotency key {key:?} of tenant `{tenant}`: {reason}")]
    IdempotencyKey {
        /// The tenant.
        tenant: String,
        /// The key (its first 64 characters when it is too long).
        key: String,
        /// What is wrong.
        reason: String,
    },

    /// A part is larger than a WAL record can hold (see `wit_wal::Config::with_max_record_size`):
    /// it was not taken.
    #[error("a part of {len} bytes is larger than the {max} bytes a batch's WAL record can hold")]
    PartTooLarge {
        /// The part's payload length.
        len: u64,
        /// The largest payload accepted.
        max: u64,
    },

    /// The write-ahead log failed (a poisoned log refuses every later write).
    #[error("write-ahead log: {operation} failed")]
    Wal {
        /// What the pipeline was doing.
        operation: &'static str,
        /// The log's error.
        #[source]
        source: wit_wal::Error,
    },

    /// The store failed.
    #[error("store: {operation} failed")]
    Store {
        /// What the pipeline was doing.
        operation: &'static str,
        /// The store's error.
        #[source]
        source: wit_store::Error,
    },

    /// Indexing a file failed (tried again later).
    #[error("indexing file `{path}` failed")]
    Index {
        /// The Parquet file.
        path: String,
        /// The index's error.
        #[source]
        source: wit_index::Error,
    },

    /// The tracker failed.
    #[error("tracker: {operation} failed")]
    Tracker {
        /// What the pipeline was doing.
        operation: &'static str,
        /// The tracker's error.
        #[source]
        source: wit_tracker::Error,
    },

    /// A batch's payloads could not be converted to Arrow.
    #[error("batch {batch}: conversion to Arrow failed")]
    Convert {
        /// The batch.
        batch: BatchId,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A file of the pipeline's own directory (the dead-letter files) failed.
    #[error("I/O error on `{path}`")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },

    /// A submitted part was not acknowledged at the level asked for: the pipeline stopped or
    /// failed before it got there. A part whose batch reached the WAL is still there and is
    /// stored after a restart; the source may also send it again.
    #[error("not acknowledged{}: {reason}", batch.map(|b| format!(" (batch {b})")).unwrap_or_default())]
    NotAcknowledged {
        /// The part's batch, once it had one.
        batch: Option<BatchId>,
        /// Why.
        reason: String,
    },

    /// The batch was given up after its retries ran out: it is `FAILED` in the tracker and its
    /// envelope is kept in the dead-letter directory.
    #[error("batch {batch} failed: {reason}")]
    BatchFailed {
        /// The batch.
        batch: BatchId,
        /// Its last error.
        reason: String,
    },

    /// No dead-letter envelope exists for this batch.
    #[error("batch {batch} has no dead-letter envelope at `{path}`")]
    NotDeadLettered {
        /// The batch.
        batch: BatchId,
        /// Where its envelope would be.
        path: PathBuf,
    },

    /// A Kafka topic matched a rule of the Kafka source but cannot be routed to a tenant and
    /// a signal: its messages are not read (the partitions stay paused) until the
    /// configuration is fixed.
    #[error("Kafka topic `{topic}` cannot be routed: {reason}")]
    UnroutableTopic {
        /// The topic.
        topic: String,
        /// Why.
        reason: String,
    },

    /// The Kafka client failed: creating the consumer, subscribing, committing.
    #[error("Kafka: {operation} failed: {reason}")]
    Kafka {
        /// What was being done.
        operation: &'static str,
        /// The client's error.
        reason: String,
    },

    /// The pipeline was closed, or stopped after a fatal error.
    #[error("the pipeline is closed{}", reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default())]
    Closed {
        /// The fatal error that stopped it, if any.
        reason: Option<String>,
    },
}

impl Error {
    pub(crate) fn wal(operation: &'static str) -> impl FnOnce(wit_wal::Error) -> Error {
        move |source| Error::Wal { operation, source }
    }

    pub(crate) fn store(operation: &'static str) -> impl FnOnce(wit_store::Error) -> Error {
        move |source| Error::Store { operation, source }
    }

    pub(crate) fn tracker(operation: &'static str) -> impl FnOnce(wit_tracker::Error) -> Error {
        move |source| Error::Tracker { operation, source }
    }

    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |source| Error::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// The error and its sources on one line, for the tracker's error column and status reports.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
