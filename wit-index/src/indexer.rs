//! Indexing stored files: read the Parquet file, build its index, publish the blob beside it.

use arrow::array::RecordBatch;
use bytes::Bytes;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReaderBuilder, RowSelection};
use wit_batch::Signal;
use wit_store::{Destination, FileCatalog, FileIndex, StoredFile};

use crate::engine::{self, Built};
use crate::{Error, Result};

/// Rows decoded per record batch when a file is read.
const READ_BATCH_ROWS: usize = 8192;

/// The path of a file's index blob: the file's path with `.parquet` replaced by `.index`
/// (`.index` appended to any other name).
///
/// ```
/// assert_eq!(wit_index::index_path("acme/logs/2026/11/22/09/node-a/0193.parquet"), "acme/logs/2026/11/22/09/node-a/0193.index");
/// ```
pub fn index_path(file: &str) -> String {
    match file.strip_suffix(".parquet") {
        Some(stem) => format!("{stem}.index"),
        None => format!("{file}.index"),
    }
}

/// An index built in memory, before it is published.
#[derive(Debug, Clone)]
pub struct IndexBlob {
    /// The blob, as it is published.
    pub bytes: Bytes,
    /// Its documents: the rows it was built from.
    pub docs: u64,
    /// The bytes of text the rows gave the index (free text, `key=value` terms, ids): what
    /// the blob's size compares with.
    pub text_bytes: u64,
}

impl IndexBlob {
    fn from_built(built: Built) -> Self {
        IndexBlob {
            bytes: built.blob,
            docs: built.docs,
            text_bytes: built.text_bytes,
        }
    }

    /// What the catalog records for this blob published at `path`.
    pub fn file_index(&self, path: &str) -> FileIndex {
        FileIndex {
            path: path.to_owned(),
            bytes: self.bytes.len() as u64,
            docs: self.docs,
            checksum: crc32fast::hash(&self.bytes),
        }
    }
}

/// Builds the index of rows held in memory, in the order given (row `i` of the rows, all
/// batches one after another, is document `i`): what a host that has just written a file's
/// rows, in file order, uses instead of reading the file back.
///
/// ```
/// use wit_batch::{PayloadFormat, Compression, Signal, otlp::logs};
///
/// let json = br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"disk full on /dev/sda1"}}]}]}]}"#;
/// let rows = logs::decode(json, PayloadFormat::OtlpJson, Compression::None)?;
/// let blob = wit_index::build_index(Signal::Logs, &[rows])?;
/// assert_eq!(blob.docs, 1);
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`Error::Tantivy`] when Tantivy fails; [`Error::TooManyRows`] past `u32::MAX - 1` rows.
pub fn build_index(signal: Signal, batches: &[RecordBatch]) -> Result<IndexBlob> {
    let mut rows = batches.iter().cloned().map(Ok);
    engine::build("(in memory)", signal, &mut rows, DEFAULT_HEAP_BYTES).map(IndexBlob::from_built)
}

const DEFAULT_HEAP_BYTES: usize = 64 << 20;

/// Reads the rows of a stored Parquet file, in file order: all of them or only `selection`,
/// and all columns or only those named in `columns`.
pub(crate) fn read_rows(
    destination: &Destination,
    path: &str,
    columns: Option<&[&str]>,
    selection: Option<RowSelection>,
) -> Result<Box<dyn Iterator<Item = Result<RecordBatch>> + Send>> {
    let bytes = destination.read(path).map_err(|source| Error::Store {
        operation: "read file",
        path: path.to_owned(),
        source: Box::new(source),
    })?;
    let parquet_err = |e: parquet::errors::ParquetError| Error::Parquet {
        path: path.to_owned(),
        source: Box::new(e),
    };
    let mut builder = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(parquet_err)?
        .with_batch_size(READ_BATCH_ROWS);
    if let Some(columns) = columns {
        let roots: Vec<usize> = builder
            .schema()
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| columns.contains(&f.name().as_str()))
            .map(|(i, _)| i)
            .collect();
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        builder = builder.with_projection(mask);
    }
    if let Some(selection) = selection {
        builder = builder.with_row_selection(selection);
    }
    let reader = builder.build().map_err(parquet_err)?;
    let path = path.to_owned();
    Ok(Box::new(reader.map(move |b| {
        b.map_err(|e| Error::Parquet {
            path: path.clone(),
            source: Box::new(e),
        })
    })))
}

/// Builds the index of each stored file and publishes it beside the file.
///
/// ```
/// use std::sync::Arc;
/// use wit_batch::{BatchId, Compression, PayloadFormat, Signal, Tenant, otlp::logs};
/// use wit_store::{Destination, FileCatalog, InMemoryFileCatalog, NodeName, ParquetSink, SinkConfig};
/// use wit_index::{Indexer, Query, Searcher, SearchedBy};
///
/// let dir = tempfile::tempdir()?;
/// let destination = Destination::local(dir.path())?;
/// let catalog = Arc::new(InMemoryFileCatalog::default());
/// let mut sink = ParquetSink::open(destination.clone(), SinkConfig::new(NodeName::try_new("node-a")?))?
///     .with_catalog(catalog.clone());
/// let json = br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[
///     {"timeUnixNano":"1700000000000000000","body":{"stringValue":"disk full on /dev/sda1"}},
///     {"timeUnixNano":"1700000001000000000","body":{"stringValue":"all good"},
///      "attributes":[{"key":"user.id","value":{"stringValue":"u-42"}}]}]}]}]}"#;
/// let rows = logs::decode(json, PayloadFormat::OtlpJson, Compression::None)?;
/// let acme = Tenant::try_new("acme")?;
/// sink.write(&acme, Signal::Logs, &rows, &[BatchId::new()])?;
/// let file = sink.flush()?.remove(0);
///
/// let indexer = Indexer::new(destination.clone());
/// indexer.index_and_record(catalog.as_ref(), &file)?;
/// let file = catalog.list(&acme, Signal::Logs, None)?.remove(0);
/// assert!(file.index.is_some());
///
/// let searcher = Searcher::new(destination);
/// let hits = searcher.search(&file, &Query::parse("/dev/sda1")?)?;
/// assert_eq!(hits.rows.iter().collect::<Vec<_>>(), vec![0]);
/// assert!(matches!(hits.by, SearchedBy::Index), "{:?}", hits.by);
/// assert_eq!(searcher.search(&file, &Query::parse("user.id:u-42")?)?.rows.count(), 1);
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Indexer {
    destination: Destination,
    heap_bytes: usize,
}

impl Indexer {
    /// Indexes files of `destination` and publishes the blobs there.
    pub fn new(destination: Destination) -> Self {
        Indexer {
            destination,
            heap_bytes: DEFAULT_HEAP_BYTES,
        }
    }

    /// The memory the index writer starts with (default 64 MiB); it grows past it for a
    /// large file rather than cut the index in two segments.
    pub fn with_heap_bytes(mut self, bytes: usize) -> Self {
        self.heap_bytes = bytes.max(1 << 20);
        self
    }

    /// Builds the index of a published file, reading it from the destination.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] or [`Error::Parquet`] when the file cannot be read; [`Error::Tantivy`];
    /// [`Error::DocCountMismatch`] when the file holds another number of rows than the catalog
    /// says.
    pub fn build(&self, file: &StoredFile) -> Result<IndexBlob> {
        let mut rows = read_rows(&self.destination, &file.path, engine_columns(file.signal), None)?;
        self.build_from(file, &mut rows)
    }

    /// Builds the index of a published file from its rows held in memory: all of them, in
    /// file order (row `i` of the batches, one after another, is the file's row `i`), as
    /// `ParquetSink::take_rows` gives them. Rows in another order would index the wrong
    /// rows: only the row count is checked.
    ///
    /// # Errors
    ///
    /// [`Error::Tantivy`]; [`Error::DocCountMismatch`] when the rows are not as many as the
    /// file's.
    pub fn build_from_rows(&self, file: &StoredFile, rows: &[RecordBatch]) -> Result<IndexBlob> {
        self.build_from(file, &mut rows.iter().cloned().map(Ok))
    }

    fn build_from(&self, file: &StoredFile, rows: &mut dyn Iterator<Item = Result<RecordBatch>>) -> Result<IndexBlob> {
        let built = engine::build(&file.path, file.signal, rows, self.heap_bytes)?;
        if built.docs != file.rows {
            return Err(Error::DocCountMismatch {
                path: index_path(&file.path),
                file: file.path.clone(),
                docs: built.docs,
                rows: file.rows,
            });
        }
        Ok(IndexBlob::from_built(built))
    }

    /// Builds the index of a published file and publishes the blob at [`index_path`] (whole,
    /// durable, replacing a blob a crash left there), returning what the catalog records.
    /// The blob is not catalogued: see [`index_and_record`](Self::index_and_record).
    ///
    /// # Errors
    ///
    /// Those of [`build`](Self::build); [`Error::Store`] when the blob cannot be published.
    pub fn index_file(&self, file: &StoredFile) -> Result<FileIndex> {
        let blob = self.build(file)?;
        self.publish(file, blob)
    }

    fn publish(&self, file: &StoredFile, blob: IndexBlob) -> Result<FileIndex> {
        let path = index_path(&file.path);
        let record = blob.file_index(&path);
        self.destination.put(&path, blob.bytes).map_err(|source| Error::Store {
            operation: "publish index",
            path: path.clone(),
            source: Box::new(source),
        })?;
        Ok(record)
    }

    /// Indexes a file, publishes the blob, and records it beside the file in `catalog` (a
    /// tracker marks the file's batches `INDEXED` then). A file indexed already is left as it
    /// is; its recorded index is returned.
    ///
    /// # Errors
    ///
    /// Those of [`index_file`](Self::index_file); [`Error::Store`] with the catalog's error
    /// when it refuses (the file was retired meanwhile, say).
    pub fn index_and_record(&self, catalog: &dyn FileCatalog, file: &StoredFile) -> Result<FileIndex> {
        if let Some(index) = &file.index {
            return Ok(index.clone());
        }
        let index = self.index_file(file)?;
        record(catalog, file, index)
    }

    /// [`index_and_record`](Self::index_and_record) with the file's rows held in memory (see
    /// [`build_from_rows`](Self::build_from_rows)) rather than read back from the destination.
    ///
    /// # Errors
    ///
    /// Those of [`build_from_rows`](Self::build_from_rows) and
    /// [`index_and_record`](Self::index_and_record).
    pub fn index_and_record_rows(
        &self,
        catalog: &dyn FileCatalog,
        file: &StoredFile,
        rows: &[RecordBatch],
    ) -> Result<FileIndex> {
        if let Some(index) = &file.index {
            return Ok(index.clone());
        }
        let index = self.publish(file, self.build_from_rows(file, rows)?)?;
        record(catalog, file, index)
    }
}

/// Records a published blob beside its file in the catalog.
fn record(catalog: &dyn FileCatalog, file: &StoredFile, index: FileIndex) -> Result<FileIndex> {
    match catalog.record_index(&file.path, &index) {
        Ok(()) => Ok(index),
        Err(source) => Err(Error::Store {
            operation: "record index",
            path: file.path.clone(),
            source: Box::new(source),
        }),
    }
}

/// The columns of a signal's rows that the index (and the scan with its semantics) reads:
/// for spans, logs and metrics a fixed list; for dead letters their `reason` and `record`,
/// as free text; for events (`None`) every column but the time. A query engine evaluating
/// wit-index queries over rows hands it these columns.
///
/// ```
/// use wit_batch::Signal;
///
/// let logs = wit_index::indexed_columns(Signal::Logs).expect("a fixed list");
/// assert!(logs.contains(&"body") && logs.contains(&"attributes") && !logs.contains(&"timestamp"));
/// assert_eq!(wit_index::indexed_columns(Signal::DeadLetters), Some(&["reason", "record"][..]));
/// assert!(wit_index::indexed_columns(Signal::Events).is_none());
/// ```
pub fn indexed_columns(signal: Signal) -> Option<&'static [&'static str]> {
    crate::document::columns(signal)
}

pub(crate) fn engine_columns(signal: Signal) -> Option<&'static [&'static str]> {
    indexed_columns(signal)
}

impl wit_store::FileIndexer for Indexer {
    fn index_file(
        &self,
        file: &StoredFile,
    ) -> std::result::Result<FileIndex, Box<dyn std::error::Error + Send + Sync>> {
        Indexer::index_file(self, file).map_err(Into::into)
    }
}
