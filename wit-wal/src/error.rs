use std::path::PathBuf;
use std::sync::Arc;

use crate::Lsn;

/// Everything that can go wrong in `wit-wal`.
///
/// Messages say what failed and where, for example
/// "failed to open segment `/x/00000000000000000042.wal`: permission denied".
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation on a file or directory failed.
    #[error("failed to {op} `{}`: {source}", path.display())]
    Io {
        /// What was being done, e.g. "open segment".
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// Another `Wal` (in this or another process) holds the directory's lock file.
    #[error("WAL directory `{}` is already opened by another WAL (lock file `{}` is held)", dir.display(), lock.display())]
    Locked {
        /// The WAL directory.
        dir: PathBuf,
        /// The lock file that is held.
        lock: PathBuf,
    },

    /// The directory holds something that is not part of a WAL, or a file that claims to be a
    /// segment has no WAL header.
    #[error("`{}` is not a WAL directory: {reason}", path.display())]
    NotAWal {
        /// The offending directory or file.
        path: PathBuf,
        /// What was found.
        reason: String,
    },

    /// A segment was written by a format version this build does not understand.
    #[error("segment `{}` has format version {found}; this build reads version {supported}", path.display())]
    UnsupportedVersion {
        /// The segment file.
        path: PathBuf,
        /// The version in its header.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },

    /// Bytes that were durable once are damaged: a bad record followed by intact ones, a
    /// sealed segment that fails its checks, a gap between segments.
    #[error("corrupt WAL segment `{}` at offset {offset}{}: {reason}", path.display(), lsn.map(|l| format!(" (LSN {l})")).unwrap_or_default())]
    Corruption {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the damage in the file.
        offset: u64,
        /// The LSN of the damaged record, where known.
        lsn: Option<Lsn>,
        /// What is wrong.
        reason: String,
    },

    /// A record is larger than the configured maximum.
    #[error("record of {len} bytes exceeds the configured maximum of {max} bytes")]
    RecordTooLarge {
        /// The record's length.
        len: usize,
        /// The configured maximum ([`Config::with_max_record_size`](crate::Config::with_max_record_size)).
        max: usize,
    },

    /// The configuration is not usable.
    #[error("invalid WAL configuration: {reason}")]
    InvalidConfig {
        /// What is wrong with it.
        reason: String,
    },

    /// A write or sync failed earlier; the log refuses all writes until it is reopened,
    /// because retrying a failed fsync can report success for data the kernel dropped.
    #[error("WAL is poisoned: an earlier {op} of `{}` failed ({cause}); reopen it to recover", path.display())]
    Poisoned {
        /// The operation that failed.
        op: &'static str,
        /// The file it failed on.
        path: PathBuf,
        /// The original error.
        #[source]
        cause: Arc<std::io::Error>,
    },

    /// The requested LSN is not retained by the log.
    #[error("LSN {requested} is outside the log, which holds LSNs {first} up to (not including) {next}")]
    LsnOutOfRange {
        /// The LSN asked for.
        requested: Lsn,
        /// The first LSN the log retains.
        first: Lsn,
        /// The LSN the next append will get.
        next: Lsn,
    },

    /// The log has been closed.
    #[error("the WAL is closed")]
    Closed,
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corruption(
        path: impl Into<PathBuf>,
        offset: u64,
        lsn: Option<u64>,
        reason: impl Into<String>,
    ) -> Self {
        Error::Corruption {
            path: path.into(),
            offset,
            lsn: lsn.map(Lsn),
            reason: reason.into(),
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
