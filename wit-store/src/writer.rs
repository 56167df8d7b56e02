//! One Parquet file being written: rows buffered per row group, sorted by event time, encoded
//! into a staging file, finished with Wit's key-value metadata and made durable.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, RecordBatch, TimestampNanosecondArray};
use arrow::compute::{SortOptions, concat_batches, sort_to_indices, take_record_batch};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowColumnWriter, ArrowLeafColumn, ArrowRowGroupWriterFactory, compute_leaves,
};
use parquet::arrow::{ArrowSchemaConverter, ArrowWriter};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;
use wit_batch::{BatchId, Signal, Tenant};

use crate::error::{arrow_error, io, parquet_error};
use crate::layout::file_path;
use crate::{Error, NodeName, Result, SinkConfig, StoredFile, TimeRange};

/// The event-time column every Wit table has.
pub(crate) const TIME_COLUMN: &str = "timestamp";

/// The version of the key-value metadata below.
pub(crate) const SCHEMA_VERSION: &str = "1";

/// Key-value metadata keys written into every file.
pub(crate) mod keys {
    pub(crate) const SCHEMA_VERSION: &str = "wit.schema_version";
    pub(crate) const PATH: &str = "wit.path";
    pub(crate) const TENANT: &str = "wit.tenant";
    pub(crate) const SIGNAL: &str = "wit.signal";
    pub(crate) const NODE: &str = "wit.node";
    pub(crate) const BATCH_IDS: &str = "wit.batch_ids";
    pub(crate) const ROWS: &str = "wit.rows";
    pub(crate) const MIN_TIME: &str = "wit.min_time";
    pub(crate) const MAX_TIME: &str = "wit.max_time";
}

/// Columns that get bloom filters when present.
const BLOOM_COLUMNS: [&str; 4] = ["trace_id", "span_id", "parent_span_id", "service_name"];

/// A complete file in the staging directory, with what the catalog will record.
#[derive(Debug, Clone)]
pub(crate) struct Staged {
    pub(crate) local: PathBuf,
    pub(crate) file: StoredFile,
    /// Its rows in file order, when the sink keeps them ([`SinkConfig::with_kept_rows_bytes`]).
    pub(crate) rows: Vec<RecordBatch>,
}

/// Finds the event-time column and checks its type.
pub(crate) fn time_column(schema: &SchemaRef) -> Result<usize> {
    let (idx, field) = schema.column_with_name(TIME_COLUMN).ok_or_else(|| Error::Schema {
        reason: format!("no `{TIME_COLUMN}` column: every stored table needs its event time"),
    })?;
    match field.data_type() {
        DataType::Timestamp(TimeUnit::Nanosecond, _) => Ok(idx),
        other => Err(Error::Schema {
            reason: format!("`{TIME_COLUMN}` is {other}, not a nanosecond timestamp"),
        }),
    }
}

/// The smallest and largest event time of a batch.
///
/// # Errors
///
/// [`Error::Schema`] when a time is null.
pub(crate) fn time_bounds(batch: &RecordBatch, idx: usize) -> Result<Option<(i64, i64)>> {
    let times = batch
        .column(idx)
        .as_any()
        .downcast_ref::<TimestampNanosecondArray>()
        .ok_or_else(|| Error::Schema {
            reason: format!("`{TIME_COLUMN}` is not a nanosecond timestamp array"),
        })?;
    if times.null_count() > 0 {
        return Err(Error::Schema {
            reason: format!(
                "`{TIME_COLUMN}` holds {} null(s): every row needs an event time",
                times.null_count()
            ),
        });
    }
    Ok(arrow::compute::min(times).zip(arrow::compute::max(times)))
}

pub(crate) struct FileWriter {
    tenant: Tenant,
    signal: Signal,
    node: NodeName,
    file_id: uuid::Uuid,
    staging: PathBuf,
    /// The file, written a row group at a time; the row group's columns are encoded by
    /// `factory`'s column writers, on two threads.
    writer: SerializedFileWriter<File>,
    factory: ArrowRowGroupWriterFactory,
    row_groups: usize,
    /// A second handle on the staging file, to sync it once the writer is done.
    handle: File,
    schema: SchemaRef,
    time_idx: usize,
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    row_group_rows: usize,
    batch_ids: BTreeSet<BatchId>,
    rows: u64,
    bounds: Option<(i64, i64)>,
    /// The row groups' rows, in file order, while kept.
    kept: Option<Vec<RecordBatch>>,
    /// The memory of every row given to this file while rows are kept, and the memory at
    /// which the file is full ([`SinkConfig::with_kept_rows_bytes`]).
    kept_bytes: usize,
    kept_max: usize,
    opened: Instant,
    faults: Option<Arc<crate::config::SinkFaults>>,
}

/// How long a held lock is retried before it counts as another sink's.
const LOCK_PATIENCE: Duration = Duration::from_millis(500);

/// Takes the lock file `.lock` in `dir`, held while the returned file is open: one sink (or
/// one compaction) per staging directory.
///
/// A child process that the host forks shares the locked descriptor until it execs (and
/// closes it), so a lock that this process has just released can look held for a moment:
/// a held lock is retried for [`LOCK_PATIENCE`] before it is [`Error::Locked`].
pub(crate) fn lock_dir(dir: &Path) -> Result<File> {
    lock_dir_within(dir, LOCK_PATIENCE, || std::thread::sleep(Duration::from_millis(2)))
}

/// [`lock_dir`] with its patience and its pause between tries given: `pause` runs after each
/// try that finds the lock held, while `patience` has not run out.
fn lock_dir_within(dir: &Path, patience: Duration, mut pause: impl FnMut()) -> Result<File> {
    let path = dir.join(".lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io("open the lock file", &path))?;
    let deadline = Instant::now() + patience;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => pause(),
            Err(std::fs::TryLockError::WouldBlock) => return Err(Error::Locked { dir: dir.to_owned() }),
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(Error::Io {
                    op: "lock",
                    path,
                    source,
                });
            }
        }
    }
}

/// Syncs a directory, so that a rename or a new entry in it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync the directory", dir))
}

fn properties(config: &SinkConfig, schema: &SchemaRef, file: &Path) -> Result<WriterProperties> {
    let statistics = if config.page_statistics {
        EnabledStatistics::Page
    } else {
        EnabledStatistics::Chunk
    };
    let parquet_schema = ArrowSchemaConverter::new()
        .convert(schema)
        .map_err(parquet_error("convert the schema of", file))?;
    let time_leaf = parquet_schema
        .columns()
        .iter()
        .position(|c| c.path().string() == TIME_COLUMN)
        .ok_or_else(|| Error::Schema {
            reason: format!("`{TIME_COLUMN}` is not a leaf column"),
        })?;
    let mut builder = WriterProperties::builder()
        .set_compression(config.compression.to_parquet()?)
        .set_max_row_group_row_count(Some(config.row_group_rows))
        .set_statistics_enabled(statistics)
        .set_offset_index_disabled(!config.page_statistics)
        .set_sorting_columns(Some(vec![SortingColumn {
            column_idx: i32::try_from(time_leaf).unwrap_or(i32::MAX),
            descending: false,
            nulls_first: true,
        }]));
    if config.bloom_filters {
        for name in BLOOM_COLUMNS {
            if schema.column_with_name(name).is_some() {
                builder = builder.set_column_bloom_filter_enabled(ColumnPath::from(name), true);
            }
        }
    }
    Ok(builder.build())
}

impl FileWriter {
    /// Starts a file for `schema` in `staging` (as `{id}.parquet.tmp`).
    pub(crate) fn create(
        staging: &Path,
        tenant: &Tenant,
        signal: Signal,
        schema: SchemaRef,
        config: &SinkConfig,
    ) -> Result<Self> {
        let time_idx = time_column(&schema)?;
        let file_id = uuid::Uuid::now_v7();
        let tmp = staging.join(format!("{file_id}.parquet.tmp"));
        let props = properties(config, &schema, &tmp)?;
        let file = File::create(&tmp).map_err(io("create the staged file", &tmp))?;
        let handle = file.try_clone().map_err(io("open the staged file", &tmp))?;
        // `ArrowWriter` sets the file up (the Arrow schema in the metadata, the Parquet
        // schema); its lower-level parts then encode columns in parallel.
        let (writer, factory) = ArrowWriter::try_new(file, schema.clone(), Some(props))
            .and_then(ArrowWriter::into_serialized_writer)
            .map_err(parquet_error("start", &tmp))?;
        Ok(FileWriter {
            tenant: tenant.clone(),
            signal,
            node: config.node.clone(),
            file_id,
            staging: staging.to_owned(),
            writer,
            factory,
            row_groups: 0,
            handle,
            schema,
            time_idx,
            pending: Vec::new(),
            pending_rows: 0,
            row_group_rows: config.row_group_rows,
            batch_ids: BTreeSet::new(),
            rows: 0,
            bounds: None,
            kept: (config.kept_rows_bytes > 0).then(Vec::new),
            kept_bytes: 0,
            kept_max: config.kept_rows_bytes,
            opened: Instant::now(),
            faults: config.faults.0.clone(),
        })
    }

    pub(crate) fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    pub(crate) fn opened(&self) -> Instant {
        self.opened
    }

    pub(crate) fn rows(&self) -> u64 {
        self.rows
    }

    /// The batches written into this file so far.
    pub(crate) fn batch_ids(&self) -> Vec<BatchId> {
        self.batch_ids.iter().copied().collect()
    }

    /// Gives the file up after an error: it is deleted (as `{id}.parquet.tmp`, or as
    /// `{id}.parquet` if the error came after the rename) and never published.
    pub(crate) fn abandon(staging: &Path, file_id: uuid::Uuid) -> Result<()> {
        let mut removed = false;
        for name in [format!("{file_id}.parquet.tmp"), format!("{file_id}.parquet")] {
            let path = staging.join(name);
            match std::fs::remove_file(&path) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("delete the abandoned file", &path)(e)),
            }
        }
        if removed {
            sync_dir(staging)?;
        }
        Ok(())
    }

    pub(crate) fn file_id(&self) -> uuid::Uuid {
        self.file_id
    }

    /// The file being written: `{id}.parquet.tmp` in the staging directory.
    fn tmp_path(&self) -> PathBuf {
        self.staging.join(format!("{}.parquet.tmp", self.file_id))
    }

    /// Whether the rows kept for this file reached their bound.
    pub(crate) fn kept_full(&self) -> bool {
        self.kept.is_some() && self.kept_bytes >= self.kept_max
    }

    /// Bytes encoded so far: the row groups written (rows still buffered for sorting are
    /// not counted).
    pub(crate) fn encoded_bytes(&self) -> u64 {
        self.writer.bytes_written() as u64
    }

    /// Adds a batch (of this file's schema, with valid times: the sink checks both first).
    pub(crate) fn write(&mut self, batch: RecordBatch, bounds: Option<(i64, i64)>, ids: &[BatchId]) -> Result<()> {
        self.batch_ids.extend(ids.iter().copied());
        if let Some((lo, hi)) = bounds {
            self.bounds = Some(match self.bounds {
                Some((min, max)) => (min.min(lo), max.max(hi)),
                None => (lo, hi),
            });
        }
        self.rows += batch.num_rows() as u64;
        self.pending_rows += batch.num_rows();
        if self.kept.is_some() {
            self.kept_bytes += batch.get_array_memory_size();
        }
        self.pending.push(batch);
        while self.pending_rows >= self.row_group_rows {
            self.write_row_group(self.row_group_rows)?;
        }
        Ok(())
    }

    /// Sorts the buffered rows by event time and writes the first `n` of them as one row
    /// group, keeping the rest buffered. Rows that arrived in time order (the common case),
    /// or in batches that are each in order, are written as they are, without copying them.
    fn write_row_group(&mut self, n: usize) -> Result<()> {
        if self.pending_rows == 0 {
            return Ok(());
        }
        if !in_time_order(&self.pending, self.time_idx) {
            // Batches that are each in order and merely arrive out of turn (a late batch)
            // only need reordering, not a row-by-row sort.
            let mut reordered = self.pending.clone();
            reordered.sort_by_key(|b| first_time(b, self.time_idx));
            if in_time_order(&reordered, self.time_idx) {
                self.pending = reordered;
            } else {
                let tmp = self.tmp_path();
                let all = concat_batches(&self.schema, &self.pending).map_err(arrow_error("concatenate", &tmp))?;
                let order = sort_to_indices(
                    all.column(self.time_idx),
                    Some(SortOptions {
                        descending: false,
                        nulls_first: true,
                    }),
                    None,
                )
                .map_err(arrow_error("sort", &tmp))?;
                self.pending = vec![take_record_batch(&all, &order).map_err(arrow_error("sort", &tmp))?];
            }
        }
        let mut left = n.min(self.pending_rows);
        let mut rest = Vec::new();
        let mut pieces = Vec::new();
        for batch in std::mem::take(&mut self.pending) {
            if left == 0 {
                rest.push(batch);
            } else if batch.num_rows() <= left {
                left -= batch.num_rows();
                pieces.push(batch);
            } else {
                pieces.push(batch.slice(0, left));
                rest.push(batch.slice(left, batch.num_rows() - left));
                left = 0;
            }
        }
        self.encode_row_group(&pieces)?;
        if let Some(kept) = &mut self.kept {
            kept.extend(pieces);
        }
        self.pending_rows = rest.iter().map(RecordBatch::num_rows).sum();
        self.pending = rest;
        if self.faults.as_ref().is_some_and(|f| f.row_group_written()) {
            return Err(Error::Io {
                op: "write a row group to",
                path: self.tmp_path(),
                source: std::io::Error::other("injected write failure (test)"),
            });
        }
        Ok(())
    }

    /// Encodes `pieces` (in order) as one row group: every leaf column by its own column
    /// writer, the writers shared out between this thread and one more, then the chunks
    /// appended to the file in schema order.
    fn encode_row_group(&mut self, pieces: &[RecordBatch]) -> Result<()> {
        let tmp = self.tmp_path();
        let encoding = || parquet_error("encode a row group of", &tmp);
        let writers = self
            .factory
            .create_column_writers(self.row_groups)
            .map_err(encoding())?;
        let mut leaves: Vec<Vec<ArrowLeafColumn>> = (0..writers.len()).map(|_| Vec::new()).collect();
        for piece in pieces {
            let mut leaf = 0;
            for (field, column) in self.schema.fields().iter().zip(piece.columns()) {
                for computed in compute_leaves(field, column).map_err(encoding())? {
                    leaves[leaf].push(computed);
                    leaf += 1;
                }
            }
        }
        // Alternate columns between the two threads (neighbouring columns differ most in
        // cost, so this shares the work out fairly evenly).
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        for (i, job) in writers.into_iter().zip(leaves).enumerate() {
            if i % 2 == 0 {
                ours.push((i, job))
            } else {
                theirs.push((i, job))
            }
        }
        let encode = |jobs: Vec<(usize, (ArrowColumnWriter, Vec<ArrowLeafColumn>))>| {
            jobs.into_iter()
                .map(|(i, (mut writer, leaves))| {
                    for leaf in &leaves {
                        writer.write(leaf).map_err(encoding())?;
                    }
                    Ok((i, writer.close().map_err(encoding())?))
                })
                .collect::<Result<Vec<(usize, ArrowColumnChunk)>>>()
        };
        let mut chunks = std::thread::scope(|scope| {
            let other = scope.spawn(|| encode(theirs));
            let mut chunks = encode(ours)?;
            match other.join() {
                Ok(rest) => chunks.extend(rest?),
                Err(panic) => std::panic::resume_unwind(panic),
            }
            Ok::<_, Error>(chunks)
        })?;
        chunks.sort_by_key(|(i, _)| *i);
        let mut row_group = self.writer.next_row_group().map_err(encoding())?;
        for (_, chunk) in chunks {
            chunk.append_to_row_group(&mut row_group).map_err(encoding())?;
        }
        row_group.close().map_err(encoding())?;
        self.row_groups += 1;
        Ok(())
    }

    /// Writes what is buffered, the metadata and the footer, syncs the file and renames it to
    /// `{id}.parquet` in the staging directory (synced too): from then on it is complete and
    /// durable. A file without rows is removed instead and `None` returned.
    pub(crate) fn finish(mut self) -> Result<Option<Staged>> {
        let tmp = self.tmp_path();
        let Some((min, max)) = self.bounds.filter(|_| self.rows > 0) else {
            drop(self.writer);
            std::fs::remove_file(&tmp).map_err(io("delete the empty staged file", &tmp))?;
            return Ok(None);
        };
        while self.pending_rows > 0 {
            self.write_row_group(self.row_group_rows)?;
        }
        let path = file_path(&self.tenant, self.signal, min, &self.node, self.file_id);
        let ids: Vec<String> = self.batch_ids.iter().map(ToString::to_string).collect();
        for (key, value) in [
            (keys::SCHEMA_VERSION, SCHEMA_VERSION.to_owned()),
            (keys::PATH, path.clone()),
            (keys::TENANT, self.tenant.as_str().to_owned()),
            (keys::SIGNAL, self.signal.as_str().to_owned()),
            (keys::NODE, self.node.as_str().to_owned()),
            (keys::BATCH_IDS, ids.join(",")),
            (keys::ROWS, self.rows.to_string()),
            (keys::MIN_TIME, min.to_string()),
            (keys::MAX_TIME, max.to_string()),
        ] {
            self.writer
                .append_key_value_metadata(KeyValue::new(key.to_owned(), value));
        }
        self.writer.close().map_err(parquet_error("finish", &tmp))?;
        self.handle.sync_all().map_err(io("sync the staged file", &tmp))?;
        let bytes = self.handle.metadata().map_err(io("read the size of", &tmp))?.len();
        let local = self.staging.join(format!("{}.parquet", self.file_id));
        std::fs::rename(&tmp, &local).map_err(io("rename the staged file to", &local))?;
        sync_dir(&self.staging)?;
        Ok(Some(Staged {
            local,
            file: StoredFile {
                path,
                tenant: self.tenant,
                signal: self.signal,
                time_range: TimeRange::new(min, max),
                rows: self.rows,
                bytes,
                batch_ids: self.batch_ids.into_iter().collect(),
                index: None,
            },
            rows: self.kept.unwrap_or_default(),
        }))
    }
}

fn times(batch: &RecordBatch, idx: usize) -> &[i64] {
    batch
        .column(idx)
        .as_any()
        .downcast_ref::<TimestampNanosecondArray>()
        .map_or(&[], |t| t.values())
}

fn first_time(batch: &RecordBatch, idx: usize) -> i64 {
    times(batch, idx).first().copied().unwrap_or(i64::MIN)
}

/// Whether `batches`, one after the other, are in time order.
fn in_time_order(batches: &[RecordBatch], idx: usize) -> bool {
    let mut last = i64::MIN;
    for batch in batches {
        for &t in times(batch, idx) {
            if t < last {
                return false;
            }
            last = t;
        }
    }
    true
}

/// Reads a complete staged file's description back from its key-value metadata (a file
/// written before a crash and not yet published).
pub(crate) fn read_staged(local: &Path) -> Result<Staged> {
    let file = File::open(local).map_err(io("open the staged file", local))?;
    let bytes = file.metadata().map_err(io("read the size of", local))?.len();
    let reader =
        parquet::file::reader::SerializedFileReader::new(file).map_err(parquet_error("read the footer of", local))?;
    let meta = parquet::file::reader::FileReader::metadata(&reader);
    let kv = meta.file_metadata().key_value_metadata().cloned().unwrap_or_default();
    let get = |key: &str| -> Result<String> {
        kv.iter()
            .find(|e| e.key == key)
            .and_then(|e| e.value.clone())
            .ok_or_else(|| Error::Schema {
                reason: format!("staged file `{}` has no `{key}` metadata", local.display()),
            })
    };
    let bad = |what: &str| Error::Schema {
        reason: format!("staged file `{}` has an invalid `{what}`", local.display()),
    };
    let ids = get(keys::BATCH_IDS)?;
    let batch_ids = if ids.is_empty() {
        Vec::new()
    } else {
        ids.split(',')
            .map(|s| s.parse::<BatchId>().map_err(|_| bad(keys::BATCH_IDS)))
            .collect::<Result<_>>()?
    };
    Ok(Staged {
        local: local.to_owned(),
        file: StoredFile {
            path: get(keys::PATH)?,
            tenant: Tenant::try_new(get(keys::TENANT)?).map_err(|_| bad(keys::TENANT))?,
            signal: get(keys::SIGNAL)?.parse().map_err(|_| bad(keys::SIGNAL))?,
            time_range: TimeRange::new(
                get(keys::MIN_TIME)?.parse().map_err(|_| bad(keys::MIN_TIME))?,
                get(keys::MAX_TIME)?.parse().map_err(|_| bad(keys::MAX_TIME))?,
            ),
            rows: get(keys::ROWS)?.parse().map_err(|_| bad(keys::ROWS))?,
            bytes,
            batch_ids,
            index: None,
        },
        rows: Vec::new(),
    })
}

/// A schema as shared by every batch written to one file.
pub(crate) fn same_schema(a: &SchemaRef, b: &SchemaRef) -> bool {
    Arc::ptr_eq(a, b) || a.fields() == b.fields()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lock released while the opener waits is taken, however long the wait before it:
    /// here it is released at the opener's first pause, so no timing is involved.
    #[test]
    fn a_lock_released_while_waited_for_is_taken() {
        let dir = tempfile::tempdir().expect("tempdir");
        let holder = lock_dir(dir.path()).expect("first lock");
        let mut holder = Some(holder);
        let mut pauses = 0;
        let taken = lock_dir_within(dir.path(), Duration::from_secs(3600), || {
            pauses += 1;
            if let Some(file) = holder.take() {
                file.unlock().expect("unlock");
            }
        })
        .expect("taken once released");
        assert_eq!(pauses, 1, "the first try found it held, the second took it");
        // Now held by `taken`: an opener without patience is refused at once.
        let err =
            lock_dir_within(dir.path(), Duration::ZERO, || panic!("no pause without patience")).expect_err("held");
        assert!(matches!(err, Error::Locked { .. }), "{err}");
        drop(taken);
        lock_dir_within(dir.path(), Duration::ZERO, || panic!("free")).expect("free again");
    }
}
