//! The one error type of `wit-store`.

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `wit-store`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file description is not acceptable: an empty or non-relative path, a time range whose
    /// start is after its end, a file listed twice in one call.
    #[error("invalid stored file `{path}`: {reason}")]
    InvalidFile {
        /// The file's path in the store.
        path: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A file was published under a path the catalog already holds with different contents
    /// (tenant, signal, time range, rows, bytes or batch ids).
    #[error("stored file `{path}` is already in the catalog with different contents")]
    FileExists {
        /// The file's path in the store.
        path: String,
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
}
