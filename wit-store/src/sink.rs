//! The Parquet sink: one open file per (tenant, signal), closed by size, age or on demand,
//! published only once complete.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use parking_lot::Mutex;
use wit_batch::{BatchId, Signal, Tenant};

use crate::error::io;
use crate::writer::{FileWriter, Staged, lock_dir, read_staged, same_schema, sync_dir, time_bounds, time_column};
use crate::{Destination, Error, FileCatalog, Result, SinkConfig, StoredFile};

/// Streams Arrow batches into Parquet files, one open file per tenant and signal.
///
/// A file is written in the staging directory under a temporary name, closed when it reaches
/// [`SinkConfig::with_max_file_bytes`] or, when rows are kept, the bound of
/// [`SinkConfig::with_kept_rows_bytes`] (both checked after each write, so that a write's rows stay
/// in one file), when it is older than
/// [`SinkConfig::with_max_file_age`] ([`poll`](Self::poll)), or on [`flush`](Self::flush). A
/// closed file is complete and durable in staging; [`publish`](Self::publish) (which `poll`
/// and `flush` call) then links or uploads it under its final path and, when the sink has a
/// [`FileCatalog`], records it there (a tracker marks its batches `STORED` in the same
/// transaction). A file that fails to publish stays staged and is tried again on the next
/// publish, and on the next open after a crash; it is never dropped.
///
/// Rows are sorted by event time (`timestamp`) within each row group. A batch whose schema
/// differs from the open file's closes that file and starts a new one.
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::{RecordBatch, StringArray, TimestampNanosecondArray};
/// use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
/// use wit_batch::{BatchId, Signal, Tenant};
/// use wit_store::{Destination, NodeName, ParquetSink, SinkConfig};
///
/// let schema = Arc::new(Schema::new(vec![
///     Field::new("timestamp", DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())), false),
///     Field::new("body", DataType::Utf8, true),
/// ]));
/// let batch = RecordBatch::try_new(schema, vec![
///     Arc::new(TimestampNanosecondArray::from(vec![2_000, 1_000]).with_timezone("UTC")),
///     Arc::new(StringArray::from(vec!["second", "first"])),
/// ])?;
///
/// let dir = tempfile::tempdir()?;
/// let mut sink = ParquetSink::open(Destination::local(dir.path())?, SinkConfig::new(NodeName::try_new("node-a")?))?;
/// sink.write(&Tenant::try_new("acme")?, Signal::Logs, &batch, &[BatchId::new()])?;
/// let files = sink.flush()?;
/// assert_eq!(files[0].rows, 2);
/// assert!(files[0].path.starts_with("acme/logs/1970/01/01/00/node-a/"));
/// assert!(dir.path().join(&files[0].path).exists());
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
pub struct ParquetSink {
    destination: Destination,
    config: SinkConfig,
    staging: PathBuf,
    catalog: Option<Arc<dyn FileCatalog>>,
    open: HashMap<(Tenant, Signal), FileWriter>,
    /// Closed files not yet published, oldest first.
    ready: Vec<Staged>,
    /// Files published by calls that then failed, returned by the next successful call.
    published: Vec<StoredFile>,
    /// The kept rows of the files published (by path), until the call after the one that
    /// returned them ([`SinkConfig::with_kept_rows_bytes`]).
    kept_rows: HashMap<String, Vec<RecordBatch>>,
    /// Whether the last publishing call returned its files.
    returned: bool,
    /// Files the catalog refused, until [`ParquetSink::take_refused`].
    refused: Vec<(StoredFile, Error)>,
    /// Held while the sink is open: one sink per staging directory.
    _lock: std::fs::File,
}

impl std::fmt::Debug for ParquetSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetSink")
            .field("destination", &self.destination)
            .field("staging", &self.staging)
            .field("open", &self.open.len())
            .field("ready", &self.ready.len())
            .finish_non_exhaustive()
    }
}

impl ParquetSink {
    /// Opens a sink writing to `destination`. Its staging directory is created if needed;
    /// files left half-written there by a crash are deleted, and complete files left
    /// unpublished are queued to be published again.
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] when another sink has the staging directory open; [`Error::Io`] when
    /// it cannot be used; [`Error::Schema`] for a complete staged file without Wit's metadata.
    pub fn open(destination: Destination, config: SinkConfig) -> Result<Self> {
        let staging = config
            .staging_dir
            .clone()
            .unwrap_or_else(|| destination.default_staging(&config.node));
        std::fs::create_dir_all(&staging).map_err(io("create the staging directory", &staging))?;
        let lock = lock_dir(&staging)?;
        let mut ready = Vec::new();
        let mut removed = false;
        let mut names: Vec<PathBuf> = std::fs::read_dir(&staging)
            .map_err(io("list the staging directory", &staging))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        names.sort();
        for path in names {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name.ends_with(".parquet.tmp") {
                std::fs::remove_file(&path).map_err(io("delete the half-written file", &path))?;
                removed = true;
            } else if name.ends_with(".parquet") {
                ready.push(read_staged(&path)?);
            }
        }
        if removed {
            sync_dir(&staging)?;
        }
        Ok(ParquetSink {
            destination,
            config,
            staging,
            catalog: None,
            open: HashMap::new(),
            ready,
            published: Vec::new(),
            kept_rows: HashMap::new(),
            returned: false,
            refused: Vec::new(),
            _lock: lock,
        })
    }

    /// Records every published file in `catalog`.
    pub fn with_catalog(mut self, catalog: Arc<dyn FileCatalog>) -> Self {
        self.catalog = Some(catalog);
        self
    }

    /// The staging directory.
    pub fn staging_dir(&self) -> &Path {
        &self.staging
    }

    /// Appends `batch` (rows of `batch_ids`) to the open file of `tenant` and `signal`,
    /// opening one if needed.
    ///
    /// **All the rows of one call land in one file**: a file is closed only between calls
    /// (after this call when it reached [`SinkConfig::with_max_file_bytes`] or the bound of
    /// [`SinkConfig::with_kept_rows_bytes`], before it when
    /// the schema changes, or by [`poll`](Self::poll) and [`flush`](Self::flush)). So a caller
    /// that writes each batch in one call knows that the batch is wholly stored once the one
    /// file holding it is published, and never partly.
    ///
    /// A batch without rows is stored nowhere: nothing is written, and no file records its
    /// ids (its caller decides what such a batch means; `wit-pipeline` marks it `STORED`).
    ///
    /// # Errors
    ///
    /// [`Error::Schema`] when the batch has no non-null nanosecond `timestamp` column: then
    /// nothing of it is written. [`Error::FileAbandoned`] when encoding or writing fails: the
    /// open file is then deleted, never published, and the error lists every batch it held,
    /// this one included, to be written again; [`Error::Io`] when even that cleanup fails.
    pub fn write(&mut self, tenant: &Tenant, signal: Signal, batch: &RecordBatch, batch_ids: &[BatchId]) -> Result<()> {
        let schema = batch.schema();
        let idx = time_column(&schema)?;
        // Checked for the whole batch first, so a bad batch writes nothing.
        let bounds = time_bounds(batch, idx)?;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let key = (tenant.clone(), signal);
        if self.open.get(&key).is_some_and(|w| !same_schema(w.schema(), &schema)) {
            self.close(&key)?;
        }
        if !self.open.contains_key(&key) {
            let writer = FileWriter::create(&self.staging, tenant, signal, schema.clone(), &self.config)?;
            self.open.insert(key.clone(), writer);
        }
        let writer = self.open.get_mut(&key).expect("opened above");
        // The writer encodes a row group at a time as rows arrive; the file is only closed
        // after the whole batch is in it.
        if let Err(error) = writer.write(batch.clone(), bounds, batch_ids) {
            // Part of the batch may be in the file: it is given up whole.
            let writer = self.open.remove(&key).expect("open");
            // The writer took the batch's ids before it failed.
            let batches = writer.batch_ids();
            let file_id = writer.file_id();
            drop(writer);
            FileWriter::abandon(&self.staging, file_id)?;
            return Err(Error::FileAbandoned {
                batches,
                source: Box::new(error),
            });
        }
        if writer.encoded_bytes() >= self.config.max_file_bytes || writer.kept_full() {
            self.close(&key)?;
        }
        Ok(())
    }

    /// Closes the open file of `key` into the publish queue; a file that fails to close is
    /// abandoned ([`Error::FileAbandoned`]).
    fn close(&mut self, key: &(Tenant, Signal)) -> Result<()> {
        let Some(writer) = self.open.remove(key) else {
            return Ok(());
        };
        let (batches, file_id) = (writer.batch_ids(), writer.file_id());
        match writer.finish() {
            Ok(Some(staged)) => self.ready.push(staged),
            Ok(None) => {}
            Err(error) => {
                FileWriter::abandon(&self.staging, file_id)?;
                return Err(Error::FileAbandoned {
                    batches,
                    source: Box::new(error),
                });
            }
        }
        Ok(())
    }

    /// When the oldest open file reaches its age limit.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.open.values().map(|w| w.opened() + self.config.max_file_age).min()
    }

    /// Closes the files older than the age limit at `now`, then [`publish`](Self::publish)es.
    ///
    /// # Errors
    ///
    /// As [`publish`](Self::publish), and encoding errors of the files closed.
    pub fn poll(&mut self, now: Instant) -> Result<Vec<StoredFile>> {
        let due: Vec<(Tenant, Signal)> = self
            .open
            .iter()
            .filter(|(_, w)| now >= w.opened() + self.config.max_file_age)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.close(&key)?;
        }
        self.publish()
    }

    /// Closes every open file (on demand, or at shutdown), then [`publish`](Self::publish)es.
    ///
    /// # Errors
    ///
    /// As [`publish`](Self::publish), and encoding errors of the files closed.
    pub fn flush(&mut self) -> Result<Vec<StoredFile>> {
        let keys: Vec<(Tenant, Signal)> = self.open.keys().cloned().collect();
        for key in keys {
            self.close(&key)?;
        }
        self.publish()
    }

    /// Publishes the closed files, oldest first: under their final path, then in the catalog.
    /// Returns the files published since the last call that returned `Ok` (a call that fails
    /// part way keeps the files it did publish, and the next successful call returns them
    /// too). For object storage the staged copy is then deleted if so configured; for a local
    /// destination it always is (the published file is the same inode).
    ///
    /// A file the catalog **refuses** ([`Error::FileExists`], [`Error::InvalidFile`],
    /// [`Error::BatchAlreadyStored`]: publishing it again could never succeed) does not block
    /// the files behind it: its published copy is deleted again (unless the path is another catalogued file's), its staged copy is kept as
    /// `{id}.parquet.refused` (never published, never queued again on open), and it is
    /// reported by [`take_refused`](Self::take_refused).
    ///
    /// # Errors
    ///
    /// [`Error::Upload`] (the file stays staged and queued; a later call tries it again),
    /// [`Error::Catalog`] and the other catalog errors that may pass (likewise), [`Error::Io`].
    pub fn publish(&mut self) -> Result<Vec<StoredFile>> {
        if std::mem::take(&mut self.returned) {
            self.kept_rows.clear();
        }
        while let Some(staged) = self.ready.first() {
            self.destination.publish(staged, &self.config)?;
            if let Some(catalog) = &self.catalog
                && let Err(error) = catalog.publish(std::slice::from_ref(&staged.file))
            {
                if !is_refusal(&error) {
                    return Err(error);
                }
                // Under a path the catalog holds for another file, the object is that file's.
                if !matches!(error, Error::FileExists { .. }) {
                    self.destination.delete(&staged.file.path)?;
                }
                // Set aside before it leaves the queue: a failure here keeps it queued, and
                // the next call meets the same refusal and tries again.
                let kept = staged.local.with_extension("parquet.refused");
                std::fs::rename(&staged.local, &kept).map_err(io("set a refused file aside as", &kept))?;
                sync_dir(&self.staging)?;
                let staged = self.ready.remove(0);
                self.refused.push((staged.file, error));
                continue;
            }
            let staged = self.ready.remove(0);
            if self.destination.is_local() || !self.config.keep_staged {
                std::fs::remove_file(&staged.local).map_err(io("delete the published staged file", &staged.local))?;
            } else {
                let kept = staged.local.with_extension("parquet.published");
                std::fs::rename(&staged.local, &kept).map_err(io("mark a staged file published as", &kept))?;
            }
            sync_dir(&self.staging)?;
            if !staged.rows.is_empty() {
                self.kept_rows.insert(staged.file.path.clone(), staged.rows);
            }
            self.published.push(staged.file);
        }
        self.returned = true;
        Ok(std::mem::take(&mut self.published))
    }

    /// The rows of a file the last [`publish`](Self::publish) (or [`poll`](Self::poll),
    /// [`flush`](Self::flush)) returned, in file order (row `i` of the batches, one after
    /// another, is the file's row `i`), when the sink keeps rows
    /// ([`SinkConfig::with_kept_rows_bytes`]); each file's rows are taken once. Rows not taken are
    /// dropped by the next publishing call.
    ///
    /// ```
    /// use wit_batch::{BatchId, Compression, PayloadFormat, Signal, Tenant, otlp::logs};
    /// use wit_store::{Destination, NodeName, ParquetSink, SinkConfig};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let config = SinkConfig::new(NodeName::try_new("node-a")?).with_kept_rows_bytes(64 << 20);
    /// let mut sink = ParquetSink::open(Destination::local(dir.path())?, config)?;
    /// let json = br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[
    ///     {"timeUnixNano":"1700000002000000000","body":{"stringValue":"later"}},
    ///     {"timeUnixNano":"1700000001000000000","body":{"stringValue":"earlier"}}]}]}]}"#;
    /// let rows = logs::decode(json, PayloadFormat::OtlpJson, Compression::None)?;
    /// sink.write(&Tenant::try_new("acme")?, Signal::Logs, &rows, &[BatchId::new()])?;
    /// let file = sink.flush()?.remove(0);
    /// let kept = sink.take_rows(&file.path).expect("kept");
    /// // In file order: sorted by event time.
    /// let time = kept[0].column_by_name("timestamp").unwrap();
    /// let time = time.as_any().downcast_ref::<arrow::array::TimestampNanosecondArray>().unwrap();
    /// assert_eq!(time.values().to_vec(), vec![1_700_000_001_000_000_000, 1_700_000_002_000_000_000]);
    /// assert!(sink.take_rows(&file.path).is_none(), "taken once");
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    pub fn take_rows(&mut self, path: &str) -> Option<Vec<RecordBatch>> {
        self.kept_rows.remove(path)
    }

    /// The files the catalog refused since the last call, each with the catalog's error
    /// (see [`publish`](Self::publish)). Their batches are not stored by them.
    pub fn take_refused(&mut self) -> Vec<(StoredFile, Error)> {
        std::mem::take(&mut self.refused)
    }

    /// The closed files waiting to be published (after a failed upload, say).
    pub fn pending(&self) -> Vec<StoredFile> {
        self.ready.iter().map(|s| s.file.clone()).collect()
    }

    /// Rows in open files, not yet closed.
    pub fn open_rows(&self) -> u64 {
        self.open.values().map(FileWriter::rows).sum()
    }
}

/// Whether a catalog error refuses a file for good: publishing it again could not succeed.
fn is_refusal(error: &Error) -> bool {
    matches!(
        error,
        Error::FileExists { .. } | Error::InvalidFile { .. } | Error::BatchAlreadyStored { .. }
    )
}

/// The async twin of a [`ParquetSink`]: the same methods with the same arguments. Each call
/// that encodes or publishes runs the sink's work on the runtime's blocking pool (encoding is
/// CPU work; uploads run on the destination's I/O runtime), so an async host never blocks a
/// worker thread. [`pending`](Self::pending), [`open_rows`](Self::open_rows) and
/// [`next_deadline`](Self::next_deadline) answer from what the last finished call left, at
/// once, even while an upload runs. Clones share the sink.
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::{RecordBatch, TimestampNanosecondArray};
/// use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
/// use wit_batch::{BatchId, Signal, Tenant};
/// use wit_store::{AsyncParquetSink, Destination, NodeName, ParquetSink, SinkConfig};
///
/// # tokio::runtime::Builder::new_multi_thread().build()?.block_on(async {
/// let schema = Arc::new(Schema::new(vec![Field::new(
///     "timestamp",
///     DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
///     false,
/// )]));
/// let times = TimestampNanosecondArray::from(vec![1, 2]).with_timezone("UTC");
/// let batch = RecordBatch::try_new(schema, vec![Arc::new(times)])?;
/// let dir = tempfile::tempdir()?;
/// let config = SinkConfig::new(NodeName::try_new("node-a")?);
/// let sink = AsyncParquetSink::new(ParquetSink::open(Destination::local(dir.path())?, config)?);
/// sink.write(&Tenant::try_new("acme")?, Signal::Logs, &batch, &[BatchId::new()]).await?;
/// assert_eq!(sink.open_rows(), 2);
/// let files = sink.flush().await?;
/// assert_eq!((files[0].rows, sink.open_rows()), (2, 0));
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
///
/// # Cancel safety
///
/// A call whose future is dropped still runs to its end on the blocking pool.
#[derive(Clone, Debug)]
pub struct AsyncParquetSink {
    inner: Arc<Mutex<ParquetSink>>,
    /// What the last finished call left: read without waiting for a call under way.
    view: Arc<Mutex<View>>,
}

/// The sink's state as the last finished call left it.
#[derive(Debug, Default)]
struct View {
    pending: Vec<StoredFile>,
    open_rows: u64,
    next_deadline: Option<Instant>,
}

impl View {
    fn of(sink: &ParquetSink) -> View {
        View {
            pending: sink.pending(),
            open_rows: sink.open_rows(),
            next_deadline: sink.next_deadline(),
        }
    }
}

async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

impl AsyncParquetSink {
    /// Wraps a sink.
    pub fn new(sink: ParquetSink) -> Self {
        let view = View::of(&sink);
        AsyncParquetSink {
            inner: Arc::new(Mutex::new(sink)),
            view: Arc::new(Mutex::new(view)),
        }
    }

    /// Runs `f` on the sink on the blocking pool, then refreshes the view.
    async fn run<R: Send + 'static>(&self, f: impl FnOnce(&mut ParquetSink) -> R + Send + 'static) -> R {
        let (inner, view) = (self.inner.clone(), self.view.clone());
        blocking(move || {
            let mut sink = inner.lock();
            let out = f(&mut sink);
            *view.lock() = View::of(&sink);
            out
        })
        .await
    }

    /// [`ParquetSink::write`]. The batch and ids are cloned (the arrays are shared, not
    /// copied) to go to the blocking pool.
    ///
    /// # Errors
    ///
    /// As [`ParquetSink::write`].
    pub async fn write(
        &self,
        tenant: &Tenant,
        signal: Signal,
        batch: &RecordBatch,
        batch_ids: &[BatchId],
    ) -> Result<()> {
        let (tenant, batch, batch_ids) = (tenant.clone(), batch.clone(), batch_ids.to_vec());
        self.run(move |sink| sink.write(&tenant, signal, &batch, &batch_ids))
            .await
    }

    /// [`ParquetSink::poll`].
    ///
    /// # Errors
    ///
    /// As [`ParquetSink::poll`].
    pub async fn poll(&self, now: Instant) -> Result<Vec<StoredFile>> {
        self.run(move |sink| sink.poll(now)).await
    }

    /// [`ParquetSink::flush`].
    ///
    /// # Errors
    ///
    /// As [`ParquetSink::flush`].
    pub async fn flush(&self) -> Result<Vec<StoredFile>> {
        self.run(ParquetSink::flush).await
    }

    /// [`ParquetSink::publish`].
    ///
    /// # Errors
    ///
    /// As [`ParquetSink::publish`].
    pub async fn publish(&self) -> Result<Vec<StoredFile>> {
        self.run(ParquetSink::publish).await
    }

    /// [`ParquetSink::take_rows`].
    pub async fn take_rows(&self, path: &str) -> Option<Vec<RecordBatch>> {
        let path = path.to_owned();
        self.run(move |sink| sink.take_rows(&path)).await
    }

    /// [`ParquetSink::take_refused`].
    pub async fn take_refused(&self) -> Vec<(StoredFile, Error)> {
        self.run(ParquetSink::take_refused).await
    }

    /// [`ParquetSink::pending`], as the last finished call left it: it does not wait for a
    /// call under way (an upload, say).
    pub fn pending(&self) -> Vec<StoredFile> {
        self.view.lock().pending.clone()
    }

    /// [`ParquetSink::open_rows`], as the last finished call left it.
    pub fn open_rows(&self) -> u64 {
        self.view.lock().open_rows
    }

    /// [`ParquetSink::next_deadline`], as the last finished call left it.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.view.lock().next_deadline
    }
}
