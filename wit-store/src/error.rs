//! The one error type of `wit-store`.

use std::path::PathBuf;

use wit_batch::BatchId;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `wit-store`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file description is not acceptable: an empty or non-relative path, a time range whose
    /// start is after its end, a file listed twice in one call, an index that does not fit its
    /// file; or a path given to a [`Destination`](crate::Destination) that is not relative.
    #[error("invalid stored file `{path}`: {reason}")]
    InvalidFile {
        /// The file's path in the store.
        path: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A file was published under a path the catalog already holds with different contents
    /// (tenant, signal, time range, rows, bytes, batch ids or index).
    #[error("stored file `{path}` is already in the catalog with different contents")]
    FileExists {
        /// The file's path in the store.
        path: String,
    },

    /// A file holds a batch that another live file already holds, so publishing it would
    /// store the batch's rows twice (a batch replayed after a crash and written again, say).
    /// Retired files do not count, nor, in [`replace`](crate::FileCatalog::replace), the
    /// files that call retires.
    #[error("stored file `{path}` holds batch {batch}, which live file `{stored_in}` already holds")]
    BatchAlreadyStored {
        /// The batch.
        batch: BatchId,
        /// The file refused.
        path: String,
        /// The live file holding the batch; for two new files of one call that share it, the
        /// one listed first.
        stored_in: String,
    },

    /// Writing to an open file failed, so the sink abandoned that file (deleted it, never to
    /// be published): the rows of every batch it held must be written again.
    #[error("an open file was abandoned after a write error; its {} batch(es) must be written again", batches.len())]
    FileAbandoned {
        /// The batches the file held (the one being written included).
        batches: Vec<BatchId>,
        /// What failed.
        #[source]
        source: Box<Error>,
    },

    /// An index was recorded for a file that already has a different one. A file has one
    /// immutable index; the same one again is accepted (a repeat after a crash).
    #[error("stored file `{path}` already has a different index, `{index}`")]
    IndexExists {
        /// The file's path in the store.
        path: String,
        /// The path of the index blob recorded for it.
        index: String,
    },

    /// Indexing a new file failed (the [`FileIndexer`](crate::FileIndexer)'s error), so the
    /// file was not catalogued.
    #[error("indexing stored file `{path}` failed")]
    Index {
        /// The file's path in the store.
        path: String,
        /// The indexer's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A path the catalog does not hold.
    #[error("stored file `{path}` is not in the catalog")]
    UnknownFile {
        /// The file's path in the store.
        path: String,
    },

    /// A file that was already retired (replaced or marked for deletion) was asked to be
    /// retired or replaced again, or a live file was asked to be forgotten.
    #[error("stored file `{path}` is {state}, which this operation does not accept")]
    WrongFileState {
        /// The file's path in the store.
        path: String,
        /// The state it is in: "live" or "retired".
        state: &'static str,
    },

    /// The catalog's backend (a tracker database, say) failed; the source says how.
    #[error("file catalog backend failed")]
    Catalog {
        /// The backend's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A name that cannot be a path component (a node name; tenants are checked by
    /// `wit_batch::Tenant`).
    #[error("invalid {kind} name `{name}`: {reason}")]
    InvalidName {
        /// What was named, e.g. "node".
        kind: &'static str,
        /// The name given (cut to 64 characters).
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// A setting out of range.
    #[error("invalid store configuration: {reason}")]
    InvalidConfig {
        /// What was wrong.
        reason: String,
    },

    /// A batch or file does not fit what the store requires (its `timestamp` column, Wit's
    /// file metadata).
    #[error("schema not accepted: {reason}")]
    Schema {
        /// What was wrong.
        reason: String,
    },

    /// Another sink (or compaction) is using this staging directory.
    #[error("staging directory `{dir}` is in use by another sink or compaction")]
    Locked {
        /// The staging directory.
        dir: PathBuf,
    },

    /// A local file operation failed.
    #[error("failed to {op} `{path}`")]
    Io {
        /// What was being done, as a verb phrase: "rename a staged file to", "sync".
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },

    /// Uploading a file failed, after the object store client's retries. The file stays
    /// staged at `local` and is uploaded again by the next publish.
    #[error("failed to upload `{path}` to {destination}; kept at `{local}`")]
    Upload {
        /// The object's path.
        path: String,
        /// The destination, as a URL.
        destination: String,
        /// The staged file kept.
        local: PathBuf,
        /// The last attempt's error.
        #[source]
        source: Box<object_store::Error>,
    },

    /// Reading, writing or deleting an object failed.
    #[error("failed to {op} object `{path}`")]
    ObjectStore {
        /// What was being done: "read", "put", "delete".
        op: &'static str,
        /// The object's path, under the destination's prefix.
        path: String,
        /// The store's error.
        #[source]
        source: Box<object_store::Error>,
    },

    /// Encoding or decoding Parquet failed.
    #[error("failed to {op} Parquet file `{path}`")]
    Parquet {
        /// What was being done: "write", "read", "close".
        op: &'static str,
        /// The file: the staged copy being written, or the stored one being read.
        path: String,
        /// Parquet's error.
        #[source]
        source: parquet::errors::ParquetError,
    },

    /// An Arrow kernel failed (concatenating, sorting) on the rows of a file.
    #[error("failed to {op} the rows of `{path}`")]
    Arrow {
        /// What was being done: "sort", "concatenate".
        op: &'static str,
        /// The file the rows are for (the staged file) or come from.
        path: String,
        /// Arrow's error.
        #[source]
        source: arrow::error::ArrowError,
    },
}

/// An [`Error::Io`] of `op` on `path`, for `map_err`.
pub(crate) fn io<'a>(op: &'static str, path: &'a std::path::Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// An [`Error::Parquet`] of `op` on the file `path`, for `map_err`.
pub(crate) fn parquet_error(
    op: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(parquet::errors::ParquetError) -> Error + use<> {
    let path = path.display().to_string();
    move |source| Error::Parquet { op, path, source }
}

/// An [`Error::Arrow`] of `op` on the rows of the file `path`, for `map_err`.
pub(crate) fn arrow_error(
    op: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(arrow::error::ArrowError) -> Error + use<> {
    let path = path.display().to_string();
    move |source| Error::Arrow { op, path, source }
}
