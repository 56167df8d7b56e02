use crate::format::{GROUP_HEADER_LEN, HEADER_LEN, RECORD_HEADER_LEN, TRAILER_LEN};
use crate::{Error, Result};

/// What "durable" means before an append returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SyncMode {
    /// `fdatasync` after each group of records (the default). Segments are preallocated, so
    /// this syncs data without having to sync file-size metadata (into a segment allocated
    /// for large groups, the first sync over each range also commits its extent change).
    #[default]
    SyncData,
    /// `fsync` after each group: data and all metadata.
    SyncAll,
    /// No sync: an append returns once its bytes are handed to the kernel. A process crash
    /// loses nothing, but a power loss or kernel crash can lose or tear acknowledged records,
    /// and recovery may then report [`Error::Corruption`](crate::Error::Corruption).
    /// **Unsafe for acknowledging sources**; call [`Wal::sync`](crate::Wal::sync) yourself.
    Buffer,
}

/// How `open` treats damage it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RecoveryMode {
    /// A torn tail (a partly written last group) is cut off; anything else that is damaged is
    /// an [`Error::Corruption`](crate::Error::Corruption) and the log does not open.
    #[default]
    Strict,
    /// Every segment is scanned. The log is cut before the first damaged record: the segment
    /// holding it is sealed there, and every later segment is renamed to `*.wal.corrupt`
    /// (kept, never deleted). What was set aside is listed in
    /// [`Wal::recovery`](crate::Wal::recovery). Records after the damage are **not** part of
    /// the log afterwards; their LSNs are given to new records.
    Salvage,
}

/// Configuration of a [`Wal`](crate::Wal).
///
/// ```
/// use wit_wal::{Config, SyncMode};
/// let config = Config::default()
///     .with_segment_size(16 << 20)
///     .with_sync_mode(SyncMode::SyncAll);
/// assert_eq!(config.segment_size(), 16 << 20);
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) segment_size: u64,
    pub(crate) max_record_size: Option<usize>,
    pub(crate) sync_mode: SyncMode,
    pub(crate) recovery_mode: RecoveryMode,
    pub(crate) max_spare_segments: usize,
    pub(crate) direct_io: bool,
    pub(crate) faults: Option<std::sync::Arc<crate::faults::IoFaults>>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            segment_size: 64 << 20,
            max_record_size: None,
            sync_mode: SyncMode::default(),
            recovery_mode: RecoveryMode::default(),
            max_spare_segments: 2,
            direct_io: true,
            faults: None,
        }
    }
}

const DEFAULT_MAX_RECORD: usize = 16 << 20;

/// The smallest segment size accepted.
pub const MIN_SEGMENT_SIZE: u64 = 4096;
/// The largest segment size accepted (group lengths are 32-bit).
pub const MAX_SEGMENT_SIZE: u64 = 1 << 31;

impl Config {
    /// Size of each segment file, preallocated in full (default 64 MiB).
    pub fn with_segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = bytes;
        self
    }

    /// Largest record accepted. By default 16 MiB, or what fits into one segment if that is
    /// less; a maximum set here must fit into one segment.
    pub fn with_max_record_size(mut self, bytes: usize) -> Self {
        self.max_record_size = Some(bytes);
        self
    }

    /// What an append waits for before it returns (default [`SyncMode::SyncData`]).
    pub fn with_sync_mode(mut self, mode: SyncMode) -> Self {
        self.sync_mode = mode;
        self
    }

    /// How damage found at open is handled (default [`RecoveryMode::Strict`]).
    pub fn with_recovery_mode(mut self, mode: RecoveryMode) -> Self {
        self.recovery_mode = mode;
        self
    }

    /// How many released segments are kept, preallocated, for reuse (default 2).
    ///
    /// A new segment is made from a spare: a released segment when there is one, else a
    /// new file prepared in the background. While the log's groups are small, the new file
    /// is zero-filled, so that syncs never change its extents; while they average 1 MiB or
    /// more, its blocks are allocated without being written (`fallocate`, where the file
    /// system has it), so that a log growing by large groups writes its bytes once, not
    /// zeros first ([`Stats`](crate::Stats) counts both kinds). A log that is truncated as
    /// it goes ([`Wal::truncate_before`](crate::Wal::truncate_before)) reuses its segments.
    pub fn with_max_spare_segments(mut self, n: usize) -> Self {
        self.max_spare_segments = n;
        self
    }

    /// Whether groups are written with direct I/O (`O_DIRECT`, Linux; default on).
    ///
    /// A small group (up to 16 KiB of whole blocks) then skips the page cache: it goes
    /// straight to the device as the 4 KiB blocks it touches, and the sync only has to flush
    /// the device's cache, which makes a lone writer's synced append a few per cent faster.
    /// So does a large group (1 MiB and more): copying megabytes into the page cache was
    /// measured to be the slow half of such a write on this project's machine (see
    /// `growing_log` in `benches/benches/wal.rs`). The groups in between are written through
    /// the page cache, where they were measured faster.
    /// The log falls back to buffered writes by itself where the file system refuses direct
    /// I/O, and always writes through the page cache in [`SyncMode::Buffer`] and on other
    /// systems; [`Stats::direct_io`](crate::Stats::direct_io) tells which is in use. The
    /// files are the same either way.
    ///
    /// This concerns the groups only: spare segments are zero-filled with direct I/O
    /// wherever the file system takes it, so that the fill leaves no dirty pages to compete
    /// with the log's syncs.
    pub fn with_direct_io(mut self, on: bool) -> Self {
        self.direct_io = on;
        self
    }

    /// Segment size in bytes.
    pub fn segment_size(&self) -> u64 {
        self.segment_size
    }

    /// Largest record in bytes.
    pub fn max_record_size(&self) -> usize {
        self.max_record_size
            .unwrap_or_else(|| (DEFAULT_MAX_RECORD as u64).min(Self::record_capacity(self.segment_size)) as usize)
    }

    /// The sync mode.
    pub fn sync_mode(&self) -> SyncMode {
        self.sync_mode
    }

    /// The recovery mode.
    pub fn recovery_mode(&self) -> RecoveryMode {
        self.recovery_mode
    }

    /// Whether direct I/O is asked for (see [`Config::with_direct_io`]).
    pub fn direct_io(&self) -> bool {
        self.direct_io
    }

    /// Injects I/O failures, for tests of the poisoning behaviour.
    #[doc(hidden)]
    pub fn with_io_faults(mut self, faults: std::sync::Arc<crate::faults::IoFaults>) -> Self {
        self.faults = Some(faults);
        self
    }

    /// The largest record that fits into one segment of `segment_size`.
    pub(crate) fn record_capacity(segment_size: u64) -> u64 {
        segment_size.saturating_sub(HEADER_LEN + TRAILER_LEN + (GROUP_HEADER_LEN + RECORD_HEADER_LEN) as u64)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&self.segment_size) {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "segment size {} is outside {MIN_SEGMENT_SIZE}..={MAX_SEGMENT_SIZE}",
                    self.segment_size
                ),
            });
        }
        let capacity = Self::record_capacity(self.segment_size);
        if let Some(max) = self.max_record_size.filter(|&m| m as u64 > capacity) {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "max record size {max} does not fit into a segment of {} bytes (at most {capacity})",
                    self.segment_size
                ),
            });
        }
        Ok(())
    }
}
