//! Compaction, retention and the deletion of retired files (with their index blobs), all
//! through the catalog.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arrow::array::RecordBatch;
use arrow::compute::{SortOptions, concat_batches, sort_to_indices, take_record_batch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use wit_batch::{BatchId, Signal, Tenant};

use crate::error::{arrow_error, io, parquet_error};
use crate::layout::partition_of;
use crate::writer::{FileWriter, Staged, lock_dir, same_schema, time_column};
use crate::{Destination, Error, FileCatalog, FileIndex, Result, SinkConfig, StoredFile};

/// Builds and publishes the index of a stored file; wit-index implements it.
///
/// [`Maintenance::with_indexer`] has compaction index each new file after uploading it and
/// before swapping it into the catalog, so a compacted file is never live without its index.
///
/// ```
/// use std::sync::Arc;
/// use bytes::Bytes;
/// use wit_store::{Destination, FileIndex, FileIndexer, InMemoryFileCatalog, Maintenance, NodeName, SinkConfig, StoredFile};
///
/// /// Indexes nothing but the file's path, into `{file}.index` beside it.
/// struct PathIndexer(Destination);
///
/// impl FileIndexer for PathIndexer {
///     fn index_file(&self, file: &StoredFile) -> Result<FileIndex, Box<dyn std::error::Error + Send + Sync>> {
///         let blob = Bytes::from(file.path.clone());
///         let index = FileIndex {
///             path: format!("{}.index", file.path),
///             bytes: blob.len() as u64,
///             docs: file.rows,
///             checksum: crc32fast::hash(&blob),
///         };
///         self.0.put(&index.path, blob)?;
///         Ok(index)
///     }
/// }
///
/// let dir = tempfile::tempdir()?;
/// let destination = Destination::local(dir.path())?;
/// let maintenance = Maintenance::new(
///     destination.clone(),
///     Arc::new(InMemoryFileCatalog::default()),
///     SinkConfig::new(NodeName::try_new("node-a")?),
/// )
/// .with_indexer(Arc::new(PathIndexer(destination)));
/// # drop(maintenance);
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
pub trait FileIndexer: Send + Sync {
    /// Indexes `file` (already published in the destination, not yet catalogued), publishes
    /// the blob, returns what to record.
    ///
    /// The blob must be durable in the destination before this returns (e.g. through
    /// [`Destination::put`]), and the returned [`FileIndex`] must fit the file (see
    /// [`StoredFile::validate`]: a valid path other than the file's, `docs == file.rows`).
    ///
    /// # Errors
    ///
    /// The indexer's own error; compaction reports it as [`Error::Index`] and catalogues
    /// nothing of that partition.
    fn index_file(&self, file: &StoredFile)
    -> std::result::Result<FileIndex, Box<dyn std::error::Error + Send + Sync>>;
}

/// What a compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// The files replaced (now retired).
    pub retired: Vec<String>,
    /// The files that replaced them.
    pub published: Vec<StoredFile>,
}

/// Keeps a store tidy: merges small files, applies retention, deletes retired files (and
/// their index blobs) once their grace period has passed. Every change goes through the
/// [`FileCatalog`], so a query sees either the old files or the new ones, and a file it listed
/// stays readable for the grace period (default 10 minutes). With a [`FileIndexer`]
/// ([`with_indexer`](Self::with_indexer)), compacted files are indexed before they go live.
///
/// ```
/// use std::sync::Arc;
/// use std::time::{Duration, SystemTime};
/// use wit_store::{Destination, InMemoryFileCatalog, Maintenance, NodeName, SinkConfig};
///
/// let dir = tempfile::tempdir()?;
/// let catalog = Arc::new(InMemoryFileCatalog::default());
/// let maintenance = Maintenance::new(Destination::local(dir.path())?, catalog, SinkConfig::new(NodeName::try_new("node-a")?))
///     .with_grace(Duration::from_secs(60));
/// assert_eq!(maintenance.delete_retired(SystemTime::now())?, 0);
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
pub struct Maintenance {
    destination: Destination,
    catalog: Arc<dyn FileCatalog>,
    config: SinkConfig,
    grace: Duration,
    indexer: Option<Arc<dyn FileIndexer>>,
}

impl std::fmt::Debug for Maintenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maintenance")
            .field("destination", &self.destination)
            .field("grace", &self.grace)
            .field("indexer", &self.indexer.is_some())
            .finish_non_exhaustive()
    }
}

impl Maintenance {
    /// Maintenance of the files in `destination` that `catalog` lists. Compacted files are
    /// written with `config`'s settings, staged in `compaction/` under its staging directory.
    pub fn new(destination: Destination, catalog: Arc<dyn FileCatalog>, config: SinkConfig) -> Self {
        Maintenance {
            destination,
            catalog,
            config,
            grace: Duration::from_secs(600),
            indexer: None,
        }
    }

    /// Has [`compact`](Self::compact) index each new file with `indexer` after uploading it
    /// and before the swap, so the new files are catalogued with their
    /// [`index`](StoredFile::index). Without one (the default), compacted files are catalogued
    /// unindexed.
    pub fn with_indexer(mut self, indexer: Arc<dyn FileIndexer>) -> Self {
        self.indexer = Some(indexer);
        self
    }

    /// How long a retired file stays readable before it may be deleted.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    fn staging(&self) -> PathBuf {
        let base = self
            .config
            .staging_dir
            .clone()
            .unwrap_or_else(|| self.destination.default_staging(&self.config.node));
        base.join("compaction")
    }

    /// Merges the small files (under half of `target_bytes`) of each partition (directory) of
    /// `tenant`'s `signal` into files of at most about `target_bytes`, rows in time order, and
    /// swaps them in through [`FileCatalog::replace`]; the old files are retired until `now`
    /// plus the grace period. A partition with fewer than two small files is left alone, as is
    /// a group whose files have different schemas.
    ///
    /// Files are merged whole: the small files of a partition are grouped in time order (a
    /// group up to `target_bytes` of input; files that share a batch id always in one group),
    /// each group of two or more becomes one new file, and a new file lists exactly the batch
    /// ids of the files it merged. So a batch that was in one file is again in one file, and
    /// no two new files hold the same batch. One group's files are read into memory together.
    ///
    /// With an indexer ([`with_indexer`](Self::with_indexer)), each new file is indexed right
    /// after its upload, and the swap catalogues it with its index (a tracker then marks its
    /// batches at `STORED` `INDEXED` in the same transaction).
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] when another compaction uses the same staging directory; reading,
    /// writing, uploading or catalog errors; [`Error::Index`] when the indexer fails.
    /// Partitions compacted before the error stay compacted; the failing one is unchanged
    /// (its new files, if uploaded, are not catalogued and never listed). After an indexing
    /// failure the partition's new files and the index blobs already made for them are
    /// deleted again, best-effort (after a failed swap they are not: the catalog may have
    /// applied it).
    pub fn compact(
        &self,
        tenant: &Tenant,
        signal: Signal,
        target_bytes: u64,
        now: SystemTime,
    ) -> Result<CompactionReport> {
        let staging = self.staging();
        std::fs::create_dir_all(&staging).map_err(io("create the compaction staging directory", &staging))?;
        let _lock = lock_dir(&staging)?;
        // Leftovers of an interrupted compaction are redone from the catalog's view.
        let listing = io("list the compaction staging directory", &staging);
        for entry in std::fs::read_dir(&staging).map_err(listing)? {
            let path = entry
                .map_err(io("list the compaction staging directory", &staging))?
                .path();
            if path.file_name().is_some_and(|n| n != ".lock") {
                std::fs::remove_file(&path).map_err(io("delete a leftover of compaction", &path))?;
            }
        }
        let mut partitions: BTreeMap<String, Vec<StoredFile>> = BTreeMap::new();
        for file in self.catalog.list(tenant, signal, None)? {
            if file.bytes < target_bytes / 2 {
                partitions
                    .entry(partition_of(&file.path).to_owned())
                    .or_default()
                    .push(file);
            }
        }
        let mut report = CompactionReport::default();
        for (_, files) in partitions.into_iter().filter(|(_, f)| f.len() > 1) {
            let mut old = Vec::new();
            let mut staged = Vec::new();
            for group in group_files(files, target_bytes) {
                let Some(merged) = self.read_sorted(&group)? else {
                    continue;
                };
                let mut ids: Vec<BatchId> = group.iter().flat_map(|f| f.batch_ids.iter().copied()).collect();
                ids.sort_unstable();
                ids.dedup();
                let Some(mut file) = self.write_merged(&staging, tenant, signal, merged, &ids)? else {
                    continue;
                };
                self.destination.publish(&file, &self.config)?;
                if let Some(indexer) = &self.indexer {
                    match indexer.index_file(&file.file) {
                        Ok(index) => file.file.index = Some(index),
                        Err(source) => {
                            let path = file.file.path.clone();
                            staged.push(file);
                            self.abandon(&staged);
                            return Err(Error::Index { path, source });
                        }
                    }
                }
                old.extend(group.into_iter().map(|f| f.path));
                staged.push(file);
            }
            if staged.is_empty() {
                continue;
            }
            let new: Vec<StoredFile> = staged.iter().map(|s| s.file.clone()).collect();
            self.catalog.replace(&old, &new, now + self.grace)?;
            for file in staged {
                std::fs::remove_file(&file.local).map_err(io("delete the published staged file", &file.local))?;
            }
            report.retired.extend(old);
            report.published.extend(new);
        }
        Ok(report)
    }

    /// Deletes, best-effort, what a partition whose indexing failed made before it was
    /// catalogued: the new files (published and staged) and the index blobs made for them.
    /// None of it was ever offered to the catalog, so nothing can list it.
    fn abandon(&self, staged: &[Staged]) {
        for file in staged {
            if let Some(index) = &file.file.index {
                let _ = self.destination.delete(&index.path);
            }
            let _ = self.destination.delete(&file.file.path);
            let _ = std::fs::remove_file(&file.local);
        }
    }

    /// All rows of `files`, sorted by event time; `None` when their schemas differ.
    fn read_sorted(&self, files: &[StoredFile]) -> Result<Option<RecordBatch>> {
        let mut batches = Vec::new();
        for file in files {
            let bytes = self.destination.read(&file.path)?;
            let path = std::path::Path::new(&file.path);
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
                .and_then(|b| b.build())
                .map_err(parquet_error("read", path))?;
            for batch in reader {
                batches.push(batch.map_err(arrow_error("decode", path))?);
            }
        }
        let Some(first) = batches.first() else { return Ok(None) };
        let schema = first.schema();
        if batches.iter().any(|b| !same_schema(&b.schema(), &schema)) {
            return Ok(None);
        }
        // The merged rows are named by the first file they come from.
        let from = std::path::Path::new(files.first().map_or("", |f| f.path.as_str()));
        let all = concat_batches(&schema, &batches).map_err(arrow_error("concatenate", from))?;
        let order = sort_to_indices(all.column(time_column(&schema)?), Some(SortOptions::default()), None)
            .map_err(arrow_error("sort", from))?;
        Ok(Some(
            take_record_batch(&all, &order).map_err(arrow_error("sort", from))?,
        ))
    }

    /// Writes one group's rows (already in time order) as one file listing `ids`.
    fn write_merged(
        &self,
        staging: &std::path::Path,
        tenant: &Tenant,
        signal: Signal,
        rows: RecordBatch,
        ids: &[BatchId],
    ) -> Result<Option<Staged>> {
        let bounds = crate::writer::time_bounds(&rows, time_column(&rows.schema())?)?;
        let mut writer = FileWriter::create(staging, tenant, signal, rows.schema(), &self.config)?;
        writer.write(rows, bounds, ids)?;
        writer.finish()
    }

    /// Retires the files of `tenant` (every signal) whose newest event is older than `keep`
    /// before `now`; they are deleted after the grace period. Returns how many it retired.
    ///
    /// # Errors
    ///
    /// Catalog errors.
    pub fn apply_retention(&self, tenant: &Tenant, keep: Duration, now: SystemTime) -> Result<u64> {
        let cutoff = now
            .checked_sub(keep)
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(i64::MIN, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        let mut retired = 0;
        for signal in Signal::ALL {
            let old: Vec<String> = self
                .catalog
                .list(tenant, signal, None)?
                .into_iter()
                .filter(|f| f.time_range.max < cutoff)
                .map(|f| f.path)
                .collect();
            if !old.is_empty() {
                self.catalog.retire(&old, now + self.grace)?;
                retired += old.len() as u64;
            }
        }
        Ok(retired)
    }

    /// Deletes the retired files whose grace period has passed at `now`, each with its index
    /// blob if it has one, then forgets them in the catalog. Returns how many files it
    /// deleted. Safe to repeat after a crash.
    ///
    /// # Errors
    ///
    /// Deletion or catalog errors; files deleted before the error are forgotten on the next
    /// call.
    pub fn delete_retired(&self, now: SystemTime) -> Result<u64> {
        let due = self.catalog.deletable(now)?;
        for file in &due {
            if let Some(index) = &file.index {
                self.destination.delete(&index.path)?;
            }
            self.destination.delete(&file.path)?;
        }
        let paths: Vec<String> = due.into_iter().map(|f| f.path).collect();
        self.catalog.forget(&paths)
    }
}

/// Groups a partition's small files for merging: in time order, a group holds files until
/// their bytes would pass `target_bytes`; groups that share a batch id are then joined, so a
/// batch never ends up in two new files. Groups of one file are dropped (nothing to merge).
fn group_files(mut files: Vec<StoredFile>, target_bytes: u64) -> Vec<Vec<StoredFile>> {
    files.sort_by(|a, b| (a.time_range.min, &a.path).cmp(&(b.time_range.min, &b.path)));
    let mut groups: Vec<Vec<StoredFile>> = Vec::new();
    let mut bytes = 0;
    for file in files {
        match groups.last_mut() {
            Some(group) if bytes + file.bytes <= target_bytes => {
                bytes += file.bytes;
                group.push(file);
            }
            _ => {
                bytes = file.bytes;
                groups.push(vec![file]);
            }
        }
    }
    let mut joined: Vec<Vec<StoredFile>> = Vec::new();
    for group in groups {
        let ids: std::collections::HashSet<BatchId> = group.iter().flat_map(|f| f.batch_ids.iter().copied()).collect();
        let shares = |g: &Vec<StoredFile>| g.iter().any(|f| f.batch_ids.iter().any(|id| ids.contains(id)));
        let (mut sharing, rest): (Vec<_>, Vec<_>) = joined.into_iter().partition(shares);
        joined = rest;
        let mut merged: Vec<StoredFile> = sharing.drain(..).flatten().collect();
        merged.extend(group);
        joined.push(merged);
    }
    joined.into_iter().filter(|g| g.len() > 1).collect()
}
