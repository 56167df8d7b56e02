//! The one error type of `wit-tracker`.

use wit_batch::{BatchId, Stage};

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A boxed error from a database driver.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Everything that can go wrong in `wit-tracker`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No batch with this id is registered (or its row was purged by retention).
    #[error("batch {batch} is not registered")]
    UnknownBatch {
        /// The id asked for.
        batch: BatchId,
    },

    /// The lifecycle does not allow this step: a stage skipped, a step backwards, a step out
    /// of `COMPLETED`, or a retry into another stage than the one the batch failed in.
    #[error("batch {batch} cannot go from {from} to {to}")]
    InvalidTransition {
        /// The batch.
        batch: BatchId,
        /// Its current stage.
        from: Stage,
        /// The stage asked for.
        to: Stage,
    },

    /// A fenced step or error ([`Advance::with_worker`](crate::Advance::with_worker),
    /// [`Tracker::record_error_by`](crate::Tracker::record_error_by)) of a worker that does not
    /// hold the batch's lease at the step's time: the lease ran out (and perhaps another worker
    /// claimed the batch), or the worker never held it. Nothing of the call was applied.
    #[error("worker `{worker}` does not hold the lease on batch {batch}{}", holder_note(.holder))]
    LeaseLost {
        /// The batch.
        batch: BatchId,
        /// The worker that performed the step.
        worker: String,
        /// The worker whose lease on the batch was current at the step's time, if any.
        holder: Option<String>,
    },

    /// An argument the tracker cannot take, e.g. a claim for `CREATED`, an empty worker name,
    /// or a number too large for the database.
    #[error("invalid argument: {what}")]
    InvalidArgument {
        /// What was wrong.
        what: String,
    },

    /// An idempotency key [`Tracker::remember_keys`](crate::Tracker::remember_keys) cannot
    /// take: an empty key, one longer than
    /// [`RememberedKey::MAX_KEY_LEN`](crate::RememberedKey::MAX_KEY_LEN) bytes or with a
    /// character other than visible ASCII (`!` to `~`), or a receipt larger than
    /// [`RememberedKey::MAX_RECEIPT_LEN`](crate::RememberedKey::MAX_RECEIPT_LEN). Nothing of
    /// the call was remembered.
    #[error("invalid idempotency key {key:?} of tenant `{tenant}`: {reason}")]
    InvalidIdempotencyKey {
        /// The tenant whose key it is.
        tenant: String,
        /// The key (its first 64 characters).
        key: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The database cannot be reached: the server is down or restarting, the connection
    /// broke, or no connection was free in time. Nothing of the failed call was applied
    /// unless its commit was under way; the tracker reconnects on the next call.
    #[error("{backend} tracker unavailable during {operation}")]
    Unavailable {
        /// "postgres" or "sqlite".
        backend: &'static str,
        /// What the tracker was doing, e.g. "advance".
        operation: &'static str,
        /// The driver's error.
        #[source]
        source: BoxError,
    },

    /// The database refused or failed a statement (a constraint, a full disk, a locked
    /// SQLite file past the timeout, ...).
    #[error("{backend} tracker failed during {operation}")]
    Database {
        /// "postgres" or "sqlite".
        backend: &'static str,
        /// What the tracker was doing, e.g. "advance".
        operation: &'static str,
        /// The driver's error.
        #[source]
        source: BoxError,
    },

    /// The database was migrated by a newer version of this crate than the one running.
    #[error("tracker schema is at version {found}; this build knows versions up to {supported}")]
    SchemaTooNew {
        /// The version found in the database.
        found: i64,
        /// The newest version this build can use.
        supported: i64,
    },

    /// A value read from the database is not one the tracker writes (an unknown stage name,
    /// a negative count, ...): the table was edited by hand or by something else.
    #[error("{backend} tracker holds an unreadable {what}: `{value}`")]
    Corrupt {
        /// "postgres", "sqlite" or "memory".
        backend: &'static str,
        /// What was read, e.g. "stage".
        what: &'static str,
        /// The value found.
        value: String,
    },
}

impl Error {
    /// Whether the error says the database could not be reached, so the call may be repeated
    /// once it is back.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }

    pub(crate) fn invalid(what: impl Into<String>) -> Self {
        Error::InvalidArgument { what: what.into() }
    }

    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn corrupt(backend: &'static str, what: &'static str, value: impl ToString) -> Self {
        Error::Corrupt {
            backend,
            what,
            value: value.to_string(),
        }
    }

    pub(crate) fn from_lifecycle(error: wit_batch::Error) -> Self {
        match error {
            wit_batch::Error::InvalidTransition { batch, from, to } => Error::InvalidTransition { batch, from, to },
            other => Error::invalid(other.to_string()),
        }
    }
}

fn holder_note(holder: &Option<String>) -> String {
    match holder {
        Some(worker) => format!(" (`{worker}` holds it)"),
        None => " (nobody holds it)".to_owned(),
    }
}

/// A tracker error as the [`FileCatalog`](wit_store::FileCatalog) reports it.
impl From<Error> for wit_store::Error {
    fn from(error: Error) -> Self {
        wit_store::Error::Catalog {
            source: Box::new(error),
        }
    }
}
