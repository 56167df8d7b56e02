//! The catalog of stored files: which Parquet file holds which batches, for which tenant,
//! signal and event-time range, and which files are live or retired.
//!
//! The store publishes a file here once it is complete and durable; queries list the live
//! files of a tenant and signal that overlap a time range; compaction swaps a set of files for
//! another in one step; retired files are deleted only after a grace period, so a query that
//! listed them a moment ago can still read them.
//!
//! Each file may carry its full-text index: one immutable blob beside it in the store
//! ([`FileIndex`]), built by `wit-index` and recorded with [`FileCatalog::record_index`] (or
//! given with the file to [`publish`](FileCatalog::publish) and
//! [`replace`](FileCatalog::replace)). The blob lives and dies with its file: the catalog
//! returns it with the file, and [`deletable`](FileCatalog::deletable) names it so the janitor
//! deletes both.
//!
//! [`FileCatalog`] is the contract. [`InMemoryFileCatalog`] implements it here; `wit-tracker`
//! implements it transactionally in SQLite and PostgreSQL, where publishing a file also marks
//! its batches `STORED`, and recording its index marks them `INDEXED`, in the same transaction.

use std::collections::{BTreeMap, HashSet};
use std::time::SystemTime;

use parking_lot::Mutex;
use wit_batch::{BatchId, Signal, Tenant};

use crate::rules::{check_batches_not_stored, check_new_files, check_record_index, republishes};
use crate::{Error, Result};

/// An inclusive range of event times, in nanoseconds since the Unix epoch (UTC), the unit of
/// Wit's Arrow `timestamp` columns.
///
/// ```
/// use wit_store::TimeRange;
///
/// let hour = TimeRange::new(0, 3_600_000_000_000 - 1);
/// assert!(hour.overlaps(&TimeRange::new(3_599_000_000_000, 4_000_000_000_000)));
/// assert!(!hour.overlaps(&TimeRange::new(3_600_000_000_000, 4_000_000_000_000)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimeRange {
    /// The earliest event time, inclusive.
    pub min: i64,
    /// The latest event time, inclusive.
    pub max: i64,
}

impl TimeRange {
    /// The range `min..=max`.
    pub const fn new(min: i64, max: i64) -> Self {
        TimeRange { min, max }
    }

    /// Whether the two ranges share at least one instant.
    pub const fn overlaps(&self, other: &TimeRange) -> bool {
        self.min <= other.max && other.min <= self.max
    }
}

/// The full-text index of a stored file, as the catalog records it (wit-index builds it).
///
/// One immutable blob per file, published to the same [`Destination`](crate::Destination)
/// beside it, holding one document per row of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileIndex {
    /// The blob's path in the store, relative to its root (validated like a file path).
    pub path: String,
    /// The blob's size in bytes.
    pub bytes: u64,
    /// How many documents it holds: always the file's row count.
    pub docs: u64,
    /// CRC-32 (crc32fast) of the whole blob; readers check it.
    pub checksum: u32,
}

/// A complete, durable file in the store, as the catalog records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    /// The file's path in the store, relative to its root, with `/` separators, e.g.
    /// `acme/logs/2026/11/22/09/node-a/0193….parquet`.
    pub path: String,
    /// Whose data it holds.
    pub tenant: Tenant,
    /// What kind of telemetry it holds.
    pub signal: Signal,
    /// The event times of its rows.
    pub time_range: TimeRange,
    /// Its row count.
    pub rows: u64,
    /// Its size in bytes.
    pub bytes: u64,
    /// The batches whose rows it holds. The catalog keeps them sorted and returns them so.
    pub batch_ids: Vec<BatchId>,
    /// Its full-text index, once one is recorded; `None` for a file not (yet) indexed. A
    /// file is written without one: the sink always publishes `None`.
    pub index: Option<FileIndex>,
}

/// Why `path` cannot be a path in the store, if it cannot: it must be non-empty and relative,
/// of non-empty components without `.`/`..` or control characters.
pub(crate) fn path_problem(path: &str) -> Option<&'static str> {
    if path.is_empty() {
        Some("is empty")
    } else if path.chars().any(char::is_control) {
        Some("holds a control character")
    } else if path.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        Some("must be relative, with no empty, `.` or `..` components")
    } else {
        None
    }
}

impl StoredFile {
    /// Checks what every catalog requires of a file: a non-empty relative path of non-empty
    /// components without `.`/`..` or control characters, `min <= max`, no batch id twice;
    /// and, when it has an [`index`](Self::index), an index path valid by the same rules and
    /// other than the file's own, holding one document per row (`index.docs == rows`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidFile`] naming the file's path and the reason.
    ///
    /// # Examples
    ///
    /// ```
    /// use wit_batch::{BatchId, Signal, Tenant};
    /// use wit_store::{Error, FileIndex, StoredFile, TimeRange};
    ///
    /// let mut file = StoredFile {
    ///     path: "acme/logs/a.parquet".into(),
    ///     tenant: Tenant::try_new("acme")?,
    ///     signal: Signal::Logs,
    ///     time_range: TimeRange::new(0, 99),
    ///     rows: 10,
    ///     bytes: 1_000,
    ///     batch_ids: vec![BatchId::new()],
    ///     index: None,
    /// };
    /// file.validate()?;
    /// file.index = Some(FileIndex { path: "acme/logs/a.index".into(), bytes: 300, docs: 9, checksum: 7 });
    /// assert!(matches!(file.validate(), Err(Error::InvalidFile { .. }))); // 9 documents, 10 rows
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: String| {
            Err(Error::InvalidFile {
                path: self.path.clone(),
                reason,
            })
        };
        if let Some(problem) = path_problem(&self.path) {
            return invalid(format!("the path {problem}"));
        }
        if self.time_range.min > self.time_range.max {
            return invalid("the time range starts after it ends".to_owned());
        }
        let mut ids = self.batch_ids.clone();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return invalid("a batch id is listed twice".to_owned());
        }
        if let Some(index) = &self.index {
            if let Some(problem) = path_problem(&index.path) {
                return invalid(format!("the index path `{}` {problem}", index.path));
            }
            if index.path == self.path {
                return invalid("the index path is the file's own path".to_owned());
            }
            if index.docs != self.rows {
                return invalid(format!(
                    "the index holds {} documents but the file has {} rows",
                    index.docs, self.rows
                ));
            }
        }
        Ok(())
    }

    /// The same file with its batch ids sorted, as every catalog stores and returns it.
    ///
    /// ```
    /// use wit_batch::{BatchId, Signal, Tenant};
    /// use wit_store::{StoredFile, TimeRange};
    ///
    /// let (a, b) = (BatchId::new(), BatchId::new());
    /// let file = StoredFile {
    ///     path: "acme/logs/a.parquet".into(),
    ///     tenant: Tenant::try_new("acme")?,
    ///     signal: Signal::Logs,
    ///     time_range: TimeRange::new(0, 9),
    ///     rows: 1,
    ///     bytes: 1,
    ///     batch_ids: vec![b.max(a), b.min(a)],
    ///     index: None,
    /// };
    /// assert_eq!(file.normalized().batch_ids, [a.min(b), a.max(b)]);
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    pub fn normalized(&self) -> StoredFile {
        let mut file = self.clone();
        file.batch_ids.sort_unstable();
        file
    }
}

/// Whether a catalogued file is served to queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileState {
    /// Listed for queries.
    Live,
    /// Replaced by compaction or dropped by retention: no longer listed, and deleted once
    /// `delete_after` has passed.
    Retired {
        /// When the file may be deleted.
        delete_after: SystemTime,
    },
}

/// The catalog of stored files. Every method is atomic: it applies completely or not at all.
///
/// Implementations: [`InMemoryFileCatalog`]; `wit-tracker`'s SQLite, PostgreSQL and in-memory
/// trackers. All of them apply the same [`rules`](crate::rules), and the
/// [`conformance`](crate::conformance) suite runs against each.
///
/// Methods block; an async host calls them from a blocking thread (the PostgreSQL tracker
/// itself does its I/O on its own runtime).
pub trait FileCatalog: Send + Sync {
    /// Records complete files as live.
    ///
    /// Publishing a file again with identical contents (its index included) is a no-op, so a
    /// publish that is repeated after a crash succeeds; a file given without an index also
    /// matches the same file catalogued since with one. A tracker marks the files' batches
    /// `STORED` in the same transaction, and, for a file given with its
    /// [`index`](StoredFile::index), marks them `INDEXED` too.
    ///
    /// A batch is stored in at most one live file: a file holding a batch that another live
    /// file (under another path) holds is refused, as are two files of one call that share a
    /// batch. Retired files do not count.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidFile`] (see [`StoredFile::validate`], or one path twice in `files`);
    /// [`Error::FileExists`] for a path already catalogued with other contents (another
    /// index included);
    /// [`Error::Catalog`] when the backend refuses, e.g. a tracker that does not know a batch
    /// or whose batch cannot move to `STORED`; [`Error::BatchAlreadyStored`] for a batch
    /// another live file holds. On any error nothing is published.
    fn publish(&self, files: &[StoredFile]) -> Result<()>;

    /// The live files of `tenant` and `signal` whose time range overlaps `time` (all of them
    /// when `None`), ordered by start time, then path.
    ///
    /// # Errors
    ///
    /// [`Error::Catalog`] when the backend fails.
    fn list(&self, tenant: &Tenant, signal: Signal, time: Option<TimeRange>) -> Result<Vec<StoredFile>>;

    /// Publishes `new` and retires `old` (deletable after `delete_after`) in one step, as a
    /// compaction does: a reader lists either all the old files or all the new ones.
    ///
    /// The new files may hold the batches of the files this call retires, but, as in
    /// [`publish`](Self::publish), no batch of any other live file, and no batch twice. A new
    /// file may come with its [`index`](StoredFile::index) (compaction indexes before the
    /// swap); a tracker then marks its batches that are at `STORED` `INDEXED` in the same
    /// transaction. The retired files keep their indexes until they are forgotten.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownFile`] or [`Error::WrongFileState`] when an old file is not live;
    /// the errors of [`publish`](Self::publish) for the new ones. On any error nothing
    /// changes.
    fn replace(&self, old: &[String], new: &[StoredFile], delete_after: SystemTime) -> Result<()>;

    /// Retires live files (retention): no longer listed, deletable after `delete_after`.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownFile`] or [`Error::WrongFileState`] when a file is not live; nothing
    /// changes then.
    fn retire(&self, paths: &[String], delete_after: SystemTime) -> Result<()>;

    /// The live files holding `batch`, ordered by path; empty when no live file holds it
    /// (never stored, or only in files since retired). Recovery asks this to skip a batch that
    /// is already stored. Since [`publish`](Self::publish) and [`replace`](Self::replace) keep
    /// a batch in at most one live file, the list has at most one file, unless the catalog
    /// was written before that rule.
    ///
    /// # Errors
    ///
    /// [`Error::Catalog`] when the backend fails.
    fn files_holding(&self, batch: BatchId) -> Result<Vec<StoredFile>>;

    /// The retired files whose grace period has passed at `now`, ordered by path: the janitor
    /// deletes these objects and their index blobs ([`StoredFile::index`]), then
    /// [`forget`](Self::forget)s them.
    ///
    /// # Errors
    ///
    /// [`Error::Catalog`] when the backend fails.
    fn deletable(&self, now: SystemTime) -> Result<Vec<StoredFile>>;

    /// Removes retired files, with their indexes, from the catalog once their objects are
    /// deleted, and returns how many it removed. Paths the catalog does not hold are skipped,
    /// so a janitor may repeat this after a crash.
    ///
    /// # Errors
    ///
    /// [`Error::WrongFileState`] when a file is still live; nothing changes then.
    fn forget(&self, paths: &[String]) -> Result<u64>;

    /// Records `index` as the full-text index of the live file `file`, whose blob the indexer
    /// has already published beside it. A tracker marks, in the same transaction, each batch
    /// of the file that is at `STORED` as `INDEXED` (batches already `INDEXED`, `COMPLETED` or
    /// `FAILED`, and batches it no longer tracks, are left alone).
    ///
    /// Recording the same index again is a no-op, so an indexer that repeats the call after a
    /// crash succeeds.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownFile`] when `file` is not catalogued; [`Error::WrongFileState`] when it
    /// is retired; [`Error::InvalidFile`] when the index does not fit it (an invalid index
    /// path, the file's own path, or `index.docs` other than the file's rows);
    /// [`Error::IndexExists`] when the file already has a different index; [`Error::Catalog`]
    /// when the backend fails. On any error nothing changes.
    fn record_index(&self, file: &str, index: &FileIndex) -> Result<()>;

    /// Up to `limit` live files without an index, ordered by path: what an indexer (a
    /// restarted one catching up, say) still has to index.
    ///
    /// # Errors
    ///
    /// [`Error::Catalog`] when the backend fails.
    fn unindexed(&self, limit: usize) -> Result<Vec<StoredFile>>;
}

/// A [`FileCatalog`] held in memory: for tests, and for hosts that rebuild it on start.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use wit_batch::{BatchId, Signal, Tenant};
/// use wit_store::{FileCatalog, FileIndex, InMemoryFileCatalog, StoredFile, TimeRange};
///
/// let catalog = InMemoryFileCatalog::default();
/// let acme = Tenant::try_new("acme")?;
/// let file = |path: &str, min, max| StoredFile {
///     path: path.to_owned(),
///     tenant: acme.clone(),
///     signal: Signal::Logs,
///     time_range: TimeRange::new(min, max),
///     rows: 10,
///     bytes: 1_000,
///     batch_ids: vec![BatchId::new()],
///     index: None,
/// };
/// catalog.publish(&[file("acme/logs/a.parquet", 0, 99), file("acme/logs/b.parquet", 100, 199)])?;
///
/// // Compaction: one file replaces both, old ones deletable in ten minutes.
/// let now = SystemTime::now();
/// catalog.replace(
///     &["acme/logs/a.parquet".into(), "acme/logs/b.parquet".into()],
///     &[file("acme/logs/ab.parquet", 0, 199)],
///     now + Duration::from_secs(600),
/// )?;
/// let live = catalog.list(&acme, Signal::Logs, Some(TimeRange::new(150, 160)))?;
/// assert_eq!(live.len(), 1);
/// assert_eq!(live[0].path, "acme/logs/ab.parquet");
/// assert!(catalog.deletable(now)?.is_empty());
/// assert_eq!(catalog.deletable(now + Duration::from_secs(601))?.len(), 2);
///
/// // wit-index indexes the new file; an indexer catching up finds nothing left to do.
/// assert_eq!(catalog.unindexed(100)?.len(), 1);
/// let index = FileIndex { path: "acme/logs/ab.index".into(), bytes: 512, docs: 10, checksum: 0x1234_5678 };
/// catalog.record_index("acme/logs/ab.parquet", &index)?;
/// assert!(catalog.unindexed(100)?.is_empty());
/// assert_eq!(catalog.list(&acme, Signal::Logs, None)?[0].index, Some(index));
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
pub struct InMemoryFileCatalog {
    files: Mutex<BTreeMap<String, (StoredFile, FileState)>>,
}

impl InMemoryFileCatalog {
    /// The file catalogued under `path`, live or retired.
    pub fn get(&self, path: &str) -> Option<StoredFile> {
        self.files.lock().get(path).map(|(file, _)| file.clone())
    }
}

/// The part of publishing shared by `publish` and `replace`: validates `new` against the
/// files held (of which `retiring` are retired by the same call) and returns the ones to
/// insert (identical republished files are skipped).
fn plan_publish(
    held: &BTreeMap<String, (StoredFile, FileState)>,
    new: &[StoredFile],
    retiring: &[String],
) -> Result<Vec<StoredFile>> {
    check_new_files(new)?;
    let mut insert = Vec::with_capacity(new.len());
    for file in new {
        let file = file.normalized();
        match held.get(&file.path) {
            Some((existing, _)) if republishes(&file, existing) => {}
            Some(_) => return Err(Error::FileExists { path: file.path }),
            None => insert.push(file),
        }
    }
    let ids: HashSet<BatchId> = insert.iter().flat_map(|f| f.batch_ids.iter().copied()).collect();
    let holders: Vec<(BatchId, String)> = held
        .values()
        .filter(|(_, state)| *state == FileState::Live)
        .flat_map(|(f, _)| {
            f.batch_ids
                .iter()
                .filter(|id| ids.contains(id))
                .map(|id| (*id, f.path.clone()))
        })
        .collect();
    check_batches_not_stored(&insert, retiring, &holders)?;
    Ok(insert)
}

/// Checks that every path is a live file.
fn check_live(held: &BTreeMap<String, (StoredFile, FileState)>, paths: &[String]) -> Result<()> {
    for path in paths {
        match held.get(path) {
            None => return Err(Error::UnknownFile { path: path.clone() }),
            Some((_, FileState::Retired { .. })) => {
                return Err(Error::WrongFileState {
                    path: path.clone(),
                    state: "retired",
                });
            }
            Some((_, FileState::Live)) => {}
        }
    }
    Ok(())
}

impl FileCatalog for InMemoryFileCatalog {
    fn publish(&self, files: &[StoredFile]) -> Result<()> {
        let mut held = self.files.lock();
        for file in plan_publish(&held, files, &[])? {
            held.insert(file.path.clone(), (file, FileState::Live));
        }
        Ok(())
    }

    fn list(&self, tenant: &Tenant, signal: Signal, time: Option<TimeRange>) -> Result<Vec<StoredFile>> {
        let held = self.files.lock();
        let mut files: Vec<StoredFile> = held
            .values()
            .filter(|(f, state)| {
                *state == FileState::Live
                    && f.tenant == *tenant
                    && f.signal == signal
                    && time.is_none_or(|t| t.overlaps(&f.time_range))
            })
            .map(|(f, _)| f.clone())
            .collect();
        files.sort_by(|a, b| (a.time_range.min, &a.path).cmp(&(b.time_range.min, &b.path)));
        Ok(files)
    }

    fn replace(&self, old: &[String], new: &[StoredFile], delete_after: SystemTime) -> Result<()> {
        let mut held = self.files.lock();
        check_live(&held, old)?;
        let insert = plan_publish(&held, new, old)?;
        for path in old {
            if let Some((_, state)) = held.get_mut(path) {
                *state = FileState::Retired { delete_after };
            }
        }
        for file in insert {
            held.insert(file.path.clone(), (file, FileState::Live));
        }
        Ok(())
    }

    fn retire(&self, paths: &[String], delete_after: SystemTime) -> Result<()> {
        self.replace(paths, &[], delete_after)
    }

    fn files_holding(&self, batch: BatchId) -> Result<Vec<StoredFile>> {
        let held = self.files.lock();
        Ok(held
            .values()
            .filter(|(f, state)| *state == FileState::Live && f.batch_ids.binary_search(&batch).is_ok())
            .map(|(f, _)| f.clone())
            .collect())
    }

    fn deletable(&self, now: SystemTime) -> Result<Vec<StoredFile>> {
        let held = self.files.lock();
        Ok(held
            .values()
            .filter(|(_, state)| matches!(state, FileState::Retired { delete_after } if *delete_after <= now))
            .map(|(f, _)| f.clone())
            .collect())
    }

    fn forget(&self, paths: &[String]) -> Result<u64> {
        let mut held = self.files.lock();
        for path in paths {
            if let Some((_, FileState::Live)) = held.get(path) {
                return Err(Error::WrongFileState {
                    path: path.clone(),
                    state: "live",
                });
            }
        }
        Ok(paths.iter().filter(|p| held.remove(*p).is_some()).count() as u64)
    }

    fn record_index(&self, file: &str, index: &FileIndex) -> Result<()> {
        let mut held = self.files.lock();
        let entry = held.get(file).map(|(f, state)| (f, *state == FileState::Live));
        if check_record_index(file, entry, index)?
            && let Some((f, _)) = held.get_mut(file)
        {
            f.index = Some(index.clone());
        }
        Ok(())
    }

    fn unindexed(&self, limit: usize) -> Result<Vec<StoredFile>> {
        let held = self.files.lock();
        Ok(held
            .values()
            .filter(|(f, state)| *state == FileState::Live && f.index.is_none())
            .take(limit)
            .map(|(f, _)| f.clone())
            .collect())
    }
}
