//! The one error type of `wit-index`.

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `wit-index`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A query does not parse.
    #[error("invalid query at byte {position}: {reason}")]
    Query {
        /// The byte offset in the query text where the problem is.
        position: usize,
        /// What is wrong there.
        reason: String,
    },

    /// An index blob is truncated, corrupt, of another format version, or not the blob the
    /// catalog recorded. A search falls back to scanning the file.
    #[error("index `{path}` is unusable: {reason}")]
    Corrupt {
        /// The blob's path in the store.
        path: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An index's document count differs from its file's row count: its document ids cannot
    /// be the file's row ordinals. A search falls back to scanning the file.
    #[error("index `{path}` holds {docs} documents but its file `{file}` has {rows} rows")]
    DocCountMismatch {
        /// The blob's path.
        path: String,
        /// The Parquet file's path.
        file: String,
        /// Documents in the index.
        docs: u64,
        /// Rows in the file.
        rows: u64,
    },

    /// The file has no index recorded in the catalog.
    #[error("file `{path}` has no index")]
    NotIndexed {
        /// The Parquet file's path.
        path: String,
    },

    /// The file is too large for one index (Tantivy's document ids are 32-bit).
    #[error("file `{path}` has {rows} rows; one index holds at most {max}")]
    TooManyRows {
        /// The Parquet file's path.
        path: String,
        /// Its row count.
        rows: u64,
        /// The most rows one index holds.
        max: u64,
    },

    /// Reading the file or the blob from the store, or publishing the blob, failed.
    #[error("store: {operation} `{path}` failed")]
    Store {
        /// What was being done.
        operation: &'static str,
        /// The file or blob.
        path: String,
        /// The store's error.
        #[source]
        source: Box<wit_store::Error>,
    },

    /// The Parquet file could not be decoded.
    #[error("reading Parquet file `{path}` failed")]
    Parquet {
        /// The file.
        path: String,
        /// The decoder's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// Tantivy failed to build or to search an index.
    #[error("tantivy: {operation} failed for `{path}`")]
    Tantivy {
        /// What was being done.
        operation: &'static str,
        /// The file or blob.
        path: String,
        /// Tantivy's error.
        #[source]
        source: Box<tantivy::TantivyError>,
    },
}

impl Error {
    /// Whether the error is about the index only, so scanning the file still answers the
    /// query: [`Corrupt`](Error::Corrupt), [`DocCountMismatch`](Error::DocCountMismatch),
    /// [`NotIndexed`](Error::NotIndexed), a blob that cannot be read, or Tantivy refusing it.
    pub fn index_unusable(&self) -> bool {
        matches!(
            self,
            Error::Corrupt { .. }
                | Error::DocCountMismatch { .. }
                | Error::NotIndexed { .. }
                | Error::Tantivy { .. }
                | Error::Store {
                    operation: "read index",
                    ..
                }
        )
    }
}
