//! How the sink writes files.

use std::path::PathBuf;
use std::time::Duration;

use crate::{Error, NodeName, Result};

/// The compression of a file's pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParquetCompression {
    /// ZSTD at a level from 1 to 22 (default 3): the best ratio for telemetry.
    Zstd(i32),
    /// Snappy: fast, a lower ratio.
    Snappy,
    /// LZ4 (the raw block format of Parquet's `LZ4_RAW`).
    Lz4,
    /// No compression.
    None,
}

impl ParquetCompression {
    pub(crate) fn to_parquet(self) -> Result<parquet::basic::Compression> {
        use parquet::basic::{Compression, ZstdLevel};
        Ok(match self {
            ParquetCompression::Zstd(level) => {
                Compression::ZSTD(ZstdLevel::try_new(level).map_err(|_| Error::InvalidConfig {
                    reason: format!("ZSTD level {level} is outside 1..=22"),
                })?)
            }
            ParquetCompression::Snappy => Compression::SNAPPY,
            ParquetCompression::Lz4 => Compression::LZ4_RAW,
            ParquetCompression::None => Compression::UNCOMPRESSED,
        })
    }
}

/// Settings of a [`ParquetSink`](crate::ParquetSink).
///
/// ```
/// use std::time::Duration;
/// use wit_store::{NodeName, ParquetCompression, SinkConfig};
///
/// let config = SinkConfig::new(NodeName::try_new("node-a")?)
///     .with_max_file_bytes(64 << 20)
///     .with_max_file_age(Duration::from_secs(60))
///     .with_compression(ParquetCompression::Zstd(6));
/// assert_eq!(config.max_file_bytes(), 64 << 20);
/// # Ok::<_, wit_store::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct SinkConfig {
    pub(crate) node: NodeName,
    pub(crate) max_file_bytes: u64,
    pub(crate) max_file_age: Duration,
    pub(crate) compression: ParquetCompression,
    pub(crate) row_group_rows: usize,
    pub(crate) page_statistics: bool,
    pub(crate) bloom_filters: bool,
    pub(crate) staging_dir: Option<PathBuf>,
    pub(crate) keep_staged: bool,
    pub(crate) kept_rows_bytes: usize,
    pub(crate) upload_part_bytes: usize,
    pub(crate) faults: FaultHook,
}

/// Test hook: write failures injected into the sink's files (`#[doc(hidden)]`).
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct SinkFaults {
    /// The row group (counted from 1 over every file this hook sees) whose write reports an
    /// error after its rows went into the file; 0 for none.
    fail_row_group: std::sync::atomic::AtomicU64,
    written: std::sync::atomic::AtomicU64,
}

impl SinkFaults {
    /// Makes the `n`th row group written from now on fail (after its rows are in the file).
    pub fn fail_row_group(&self, n: u64) {
        use std::sync::atomic::Ordering;
        self.written.store(0, Ordering::SeqCst);
        self.fail_row_group.store(n, Ordering::SeqCst);
    }

    /// Whether the row group just written is the one to fail.
    pub(crate) fn row_group_written(&self) -> bool {
        use std::sync::atomic::Ordering;
        let n = self.written.fetch_add(1, Ordering::SeqCst) + 1;
        n == self.fail_row_group.load(Ordering::SeqCst)
    }
}

/// The optional fault hook; configurations compare equal whatever their hooks.
#[derive(Debug, Clone, Default)]
pub(crate) struct FaultHook(pub(crate) Option<std::sync::Arc<SinkFaults>>);

impl PartialEq for FaultHook {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl SinkConfig {
    /// The defaults for files written by `node`: files closed at 256 MiB or 10 minutes,
    /// ZSTD level 3, row groups of 131,072 rows, page statistics and page index on, bloom
    /// filters on id-like columns, uploads in 16 MiB parts (retried as the
    /// [`Destination`](crate::Destination)'s object store retries), staged files kept after a
    /// successful upload.
    pub fn new(node: NodeName) -> Self {
        SinkConfig {
            node,
            max_file_bytes: 256 << 20,
            max_file_age: Duration::from_secs(600),
            compression: ParquetCompression::Zstd(3),
            row_group_rows: 128 << 10,
            page_statistics: true,
            bloom_filters: true,
            staging_dir: None,
            keep_staged: true,
            kept_rows_bytes: 0,
            upload_part_bytes: 16 << 20,
            faults: FaultHook::default(),
        }
    }

    /// Test hook: injects write failures into this sink's files.
    #[doc(hidden)]
    pub fn with_faults(mut self, faults: std::sync::Arc<SinkFaults>) -> Self {
        self.faults = FaultHook(Some(faults));
        self
    }

    /// The node named in file paths.
    pub fn node(&self) -> &NodeName {
        &self.node
    }

    /// Closes a file once it holds about this many bytes (checked after each write).
    pub fn with_max_file_bytes(mut self, bytes: u64) -> Self {
        self.max_file_bytes = bytes;
        self
    }

    /// The size at which files are closed.
    pub fn max_file_bytes(&self) -> u64 {
        self.max_file_bytes
    }

    /// Closes a file this long after it was opened (on [`poll`](crate::ParquetSink::poll)).
    pub fn with_max_file_age(mut self, age: Duration) -> Self {
        self.max_file_age = age;
        self
    }

    /// Page compression.
    pub fn with_compression(mut self, compression: ParquetCompression) -> Self {
        self.compression = compression;
        self
    }

    /// Rows per row group; rows are sorted by event time within each.
    pub fn with_row_group_rows(mut self, rows: usize) -> Self {
        self.row_group_rows = rows.max(1);
        self
    }

    /// Page-level statistics and the page index (column and offset indexes), for pruning
    /// inside a file. Row-group statistics are always written.
    pub fn with_page_statistics(mut self, on: bool) -> Self {
        self.page_statistics = on;
        self
    }

    /// Bloom filters on the id-like columns present in a schema: `trace_id`, `span_id`,
    /// `parent_span_id` and `service_name`.
    pub fn with_bloom_filters(mut self, on: bool) -> Self {
        self.bloom_filters = on;
        self
    }

    /// Where files are written before they are published. Default: `.staging/` under a local
    /// destination's root; for object storage, `wit-store-staging/{node}` in the system's
    /// temporary directory. Files still staged (written but not uploaded) are found here again
    /// when a sink opens, so point it at a persistent disk.
    pub fn with_staging_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.staging_dir = Some(dir.into());
        self
    }

    /// Whether the local staged copy stays after a successful upload to object storage
    /// (default true: deleting it is opt-in).
    pub fn with_keep_staged(mut self, keep: bool) -> Self {
        self.keep_staged = keep;
        self
    }

    /// Keeps each file's rows in memory, in file order, until the file is published, for
    /// [`ParquetSink::take_rows`](crate::ParquetSink::take_rows), and closes a file once its
    /// rows hold `bytes` of Arrow memory (after the write that reached it, as
    /// [`with_max_file_bytes`](Self::with_max_file_bytes) does), so that what a file keeps
    /// stays within `bytes` and one write. 0, the default, keeps nothing. A host that
    /// works on each file right after it is published (builds its full-text index, say) then
    /// has its rows without reading the file back. The rows are those the sink was given
    /// (sorted by event time where they arrived out of order), not copies: keeping them holds
    /// their memory until the file is published and its rows taken or dropped.
    pub fn with_kept_rows_bytes(mut self, bytes: usize) -> Self {
        self.kept_rows_bytes = bytes;
        self
    }

    /// Files larger than this are uploaded in parts of this size (at least 5 MiB, S3's
    /// minimum part).
    pub fn with_upload_part_bytes(mut self, bytes: usize) -> Self {
        self.upload_part_bytes = bytes.max(5 << 20);
        self
    }
}
