//! The Parquet sink on a local destination: round trips, layout, metadata, rotation, bad input.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{Array, RecordBatch, TimestampNanosecondArray};
use arrow::compute::{SortOptions, concat_batches, sort_to_indices, take_record_batch};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::basic::Compression;
use parquet::file::metadata::PageIndexPolicy;
use parquet::file::reader::{FileReader, SerializedFileReader};
use wit_batch::{BatchId, Signal, Tenant};
use wit_store::{
    Destination, Error, FileCatalog, InMemoryFileCatalog, NodeName, ParquetCompression, ParquetSink, SinkConfig,
    StoredFile,
};

use crate::data::spans;

pub fn config() -> SinkConfig {
    SinkConfig::new(NodeName::try_new("node-a").expect("node"))
}

fn acme() -> Tenant {
    Tenant::try_new("acme").expect("tenant")
}

/// Files in a staging directory, its lock file aside.
pub fn staged_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .expect("staging")
        .filter(|e| e.as_ref().is_ok_and(|e| e.file_name() != ".lock"))
        .count()
}

/// Every row of a Parquet file.
pub fn read_back(path: &Path) -> RecordBatch {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).expect("open"))
        .expect("parquet")
        .build()
        .expect("reader");
    let batches: Vec<RecordBatch> = reader.map(|b| b.expect("batch")).collect();
    concat_batches(&batches[0].schema(), &batches).expect("concat")
}

fn sorted_by_time(batch: &RecordBatch) -> RecordBatch {
    let idx = batch.schema().index_of("timestamp").expect("timestamp");
    let order = sort_to_indices(batch.column(idx), Some(SortOptions::default()), None).expect("sort");
    take_record_batch(batch, &order).expect("take")
}

fn times(batch: &RecordBatch) -> Vec<i64> {
    let idx = batch.schema().index_of("timestamp").expect("timestamp");
    let col = batch
        .column(idx)
        .as_any()
        .downcast_ref::<TimestampNanosecondArray>()
        .expect("ns");
    col.values().to_vec()
}

fn key_values(path: &Path) -> Vec<(String, String)> {
    let reader = SerializedFileReader::new(File::open(path).expect("open")).expect("reader");
    reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .expect("kv")
        .iter()
        .filter(|kv| kv.key.starts_with("wit."))
        .map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default()))
        .collect()
}

#[test]
fn round_trip_sorted_with_metadata_and_pruning_structures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = Arc::new(InMemoryFileCatalog::default());
    let mut sink = ParquetSink::open(
        Destination::local(dir.path()).expect("dest"),
        config().with_row_group_rows(500),
    )
    .expect("open")
    .with_catalog(catalog.clone());
    let inputs = [spans(700, 1_700_000_000, 1), spans(600, 1_700_000_000, 2)];
    let ids = [BatchId::new(), BatchId::new()];
    for (batch, id) in inputs.iter().zip(ids) {
        sink.write(&acme(), Signal::Traces, batch, &[id]).expect("write");
    }
    assert_eq!(sink.open_rows(), 1_300);
    assert!(sink.publish().expect("nothing closed yet").is_empty());
    let files = sink.flush().expect("flush");
    assert_eq!(files.len(), 1);
    let file = &files[0];
    let local = dir.path().join(&file.path);

    // Layout and catalog.
    assert!(
        file.path.starts_with("acme/traces/2023/11/14/22/node-a/"),
        "{}",
        file.path
    );
    assert!(file.path.ends_with(".parquet"));
    assert_eq!(catalog.list(&acme(), Signal::Traces, None).expect("list"), files);
    let mut sorted_ids = ids.to_vec();
    sorted_ids.sort();
    assert_eq!(file.batch_ids, sorted_ids);
    assert_eq!(
        (file.rows, file.bytes),
        (1_300, std::fs::metadata(&local).expect("meta").len())
    );

    // Contents: every row, in time order within each row group (here: the whole file, since
    // the buffer is sorted before each group).
    let input = concat_batches(&inputs[0].schema(), &inputs).expect("concat");
    let back = read_back(&local);
    assert_eq!(back.schema().fields(), input.schema().fields());
    assert_eq!(back.num_rows(), 1_300);
    let back_times = times(&back);
    let groups = [&back_times[..500], &back_times[500..1_000], &back_times[1_000..]];
    assert!(
        groups.iter().all(|g| g.windows(2).all(|w| w[0] <= w[1])),
        "row groups are sorted"
    );
    assert_eq!(sorted_by_time(&back), sorted_by_time(&input), "the same rows");
    let all = times(&input);
    assert_eq!(file.time_range.min, *all.iter().min().expect("min"));
    assert_eq!(file.time_range.max, *all.iter().max().expect("max"));

    // Metadata: key-values, compression, statistics, page index, bloom filters, sort order.
    let kv = key_values(&local);
    let get = |k: &str| kv.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str()).expect(k);
    assert_eq!(get("wit.schema_version"), "1");
    assert_eq!(get("wit.path"), file.path);
    assert_eq!(
        (get("wit.tenant"), get("wit.signal"), get("wit.node")),
        ("acme", "traces", "node-a")
    );
    assert_eq!(get("wit.rows"), "1300");
    assert_eq!(get("wit.min_time"), file.time_range.min.to_string());
    assert_eq!(get("wit.max_time"), file.time_range.max.to_string());
    let listed: Vec<String> = sorted_ids.iter().map(ToString::to_string).collect();
    assert_eq!(get("wit.batch_ids"), listed.join(","));

    let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
    let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(File::open(&local).expect("open"), options)
        .expect("reader");
    let meta = builder.metadata();
    assert_eq!(meta.num_row_groups(), 3);
    assert!(
        meta.column_index().is_some() && meta.offset_index().is_some(),
        "page index written"
    );
    let parquet_schema = meta.file_metadata().schema_descr();
    let column =
        |name: &str| (0..parquet_schema.num_columns()).find(|i| parquet_schema.column(*i).path().string() == name);
    let trace_id = column("trace_id").expect("trace_id column");
    let timestamp = column("timestamp").expect("timestamp column");
    for rg in meta.row_groups() {
        assert!(matches!(rg.column(trace_id).compression(), Compression::ZSTD(_)));
        assert!(
            rg.column(trace_id).bloom_filter_offset().is_some(),
            "bloom filter on trace_id"
        );
        assert!(
            rg.column(column("service_name").expect("service_name"))
                .bloom_filter_offset()
                .is_some()
        );
        assert!(rg.column(timestamp).bloom_filter_offset().is_none());
        assert!(rg.column(timestamp).statistics().is_some());
        let sorting = rg.sorting_columns().expect("sorting columns");
        assert_eq!(sorting[0].column_idx as usize, timestamp);
    }

    // The staging directory is empty again, and it is this sink's alone.
    assert_eq!(staged_files(sink.staging_dir()), 0);
    let err = ParquetSink::open(Destination::local(dir.path()).expect("dest"), config()).expect_err("in use");
    assert!(matches!(err, Error::Locked { .. }), "{err}");
}

#[test]
fn other_compressions_and_settings_are_honoured() {
    for (compression, expected) in [
        (ParquetCompression::Snappy, Compression::SNAPPY),
        (ParquetCompression::Lz4, Compression::LZ4_RAW),
        (ParquetCompression::None, Compression::UNCOMPRESSED),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config()
            .with_compression(compression)
            .with_page_statistics(false)
            .with_bloom_filters(false);
        let mut sink = ParquetSink::open(Destination::local(dir.path()).expect("dest"), config).expect("open");
        sink.write(&acme(), Signal::Traces, &spans(50, 1_700_000_000, 3), &[BatchId::new()])
            .expect("write");
        let file = sink.flush().expect("flush").remove(0);
        let local = dir.path().join(&file.path);
        let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(
            File::open(&local).expect("open"),
            ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional),
        )
        .expect("reader");
        let rg = &builder.metadata().row_groups()[0];
        assert_eq!(rg.column(0).compression(), expected);
        assert!(rg.columns().iter().all(|c| c.bloom_filter_offset().is_none()));
        assert!(builder.metadata().offset_index().is_none(), "no page index");
        assert_eq!(read_back(&local).num_rows(), 50);
    }
    let err = ParquetSink::open(
        Destination::local(tempfile::tempdir().expect("dir").path()).expect("dest"),
        config().with_compression(ParquetCompression::Zstd(99)),
    )
    .expect("open")
    .write(&acme(), Signal::Traces, &spans(1, 0, 0), &[])
    .expect_err("level 99");
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
}

#[test]
fn files_rotate_by_size_age_and_schema() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config()
        .with_row_group_rows(200)
        .with_max_file_bytes(1)
        .with_max_file_age(Duration::from_secs(60));
    let mut sink = ParquetSink::open(Destination::local(dir.path()).expect("dest"), config).expect("open");
    // Size: every write reaches a 1-byte limit, so each closes its file after it.
    for seed in 0..5 {
        sink.write(
            &acme(),
            Signal::Traces,
            &spans(200, 1_700_000_000, 40 + seed),
            &[BatchId::new()],
        )
        .expect("write");
        assert_eq!(sink.open_rows(), 0, "closed after the write");
    }
    let by_size = sink.publish().expect("publish");
    assert_eq!(by_size.len(), 5);
    assert!(by_size.iter().all(|f| f.rows == 200 && f.batch_ids.len() == 1));
    assert!(by_size.windows(2).all(|w| w[0].path != w[1].path));

    // Age: nothing is due before the deadline, the open file is after it.
    drop(sink);
    let mut sink = ParquetSink::open(
        Destination::local(dir.path()).expect("dest"),
        super::sink::config().with_max_file_age(Duration::from_secs(60)),
    )
    .expect("open");
    assert_eq!(sink.next_deadline(), None);
    sink.write(&acme(), Signal::Traces, &spans(10, 1_700_000_000, 11), &[])
        .expect("write");
    let deadline = sink.next_deadline().expect("a file is open");
    assert!(sink.poll(deadline - Duration::from_secs(1)).expect("poll").is_empty());
    assert_eq!(sink.poll(deadline).expect("poll").len(), 1);
    assert_eq!(sink.next_deadline(), None);

    // Schema: another schema closes the open file and starts a new one.
    let schema = Arc::new(Schema::new(vec![Field::new(
        "timestamp",
        DataType::Timestamp(arrow::datatypes::TimeUnit::Nanosecond, Some("UTC".into())),
        false,
    )]));
    let plain = RecordBatch::try_new(
        schema,
        vec![Arc::new(TimestampNanosecondArray::from(vec![5]).with_timezone("UTC"))],
    )
    .expect("batch");
    sink.write(&acme(), Signal::Traces, &spans(10, 1_700_000_000, 5), &[BatchId::new()])
        .expect("write");
    sink.write(&acme(), Signal::Traces, &plain, &[BatchId::new()])
        .expect("write");
    let files = sink.publish().expect("publish");
    assert_eq!(files.len(), 1, "the spans' file closed when the schema changed");
    assert_eq!(files[0].rows, 10);
    let rest = sink.flush().expect("flush");
    assert_eq!((rest.len(), rest[0].rows), (1, 1));
    assert!(rest[0].path.starts_with("acme/traces/1970/01/01/00/node-a/"));

    // Tenants and signals get files of their own.
    let other = Tenant::try_new("umbrella").expect("tenant");
    sink.write(&other, Signal::Traces, &spans(5, 1_700_000_000, 6), &[])
        .expect("write");
    sink.write(&acme(), Signal::Logs, &plain, &[]).expect("write");
    let mut files: Vec<String> = sink.flush().expect("flush").into_iter().map(|f| f.path).collect();
    files.sort();
    assert!(
        files[0].starts_with("acme/logs/") && files[1].starts_with("umbrella/traces/"),
        "{files:?}"
    );
}

/// The published Parquet files under a local destination's root (its staging directory
/// aside), read with the `parquet` crate: each file's path under the root, its rows, and the
/// batch ids its metadata lists.
fn published_files(root: &Path) -> Vec<(String, usize, String)> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                if path.file_name() != Some(".staging".as_ref()) {
                    dirs.push(path);
                }
            } else if path.extension() == Some("parquet".as_ref()) {
                let ids = key_values(&path)
                    .into_iter()
                    .find(|(key, _)| key == "wit.batch_ids")
                    .map(|(_, ids)| ids)
                    .expect("wit.batch_ids");
                let relative = path.strip_prefix(root).expect("under the root");
                found.push((relative.display().to_string(), read_back(&path).num_rows(), ids));
            }
        }
    }
    found.sort();
    found
}

/// A file over its size limit is closed after the write that took it there, never in the
/// middle of one: a batch lands whole in one file, so it is never marked stored while part of
/// it waits in another, unpublished file.
#[test]
fn a_batch_larger_than_a_file_is_written_whole_into_one() {
    const MAX_FILE_BYTES: u64 = 4 << 10;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sink = ParquetSink::open(
        Destination::local(dir.path()).expect("dest"),
        config()
            .with_row_group_rows(100)
            .with_max_file_bytes(MAX_FILE_BYTES)
            .with_bloom_filters(false),
    )
    .expect("open");
    let (input, id) = (spans(1_000, 1_700_000_000, 14), BatchId::new());
    sink.write(&acme(), Signal::Traces, &input, &[id]).expect("write");
    let open_after_write = sink.open_rows();
    let files = sink.flush().expect("flush");
    assert_eq!(files.len(), 1, "one batch, one file: {files:#?}");
    let file = files[0].clone();
    assert_eq!((file.rows, file.batch_ids.as_slice()), (1_000, [id].as_slice()));
    assert!(
        file.bytes > 4 * MAX_FILE_BYTES,
        "the batch is several files' worth: {} bytes",
        file.bytes
    );
    assert_eq!(
        open_after_write, 0,
        "over its limit, the file was closed after the write"
    );

    // Read back without the sink: the one file on disk holds every row, in 10 row groups.
    let local = dir.path().join(&file.path);
    assert_eq!(
        published_files(dir.path()),
        [(file.path.clone(), 1_000, id.to_string())]
    );
    assert_eq!(
        sorted_by_time(&read_back(&local)),
        sorted_by_time(&input),
        "the same rows"
    );
    let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(&local).expect("open")).expect("reader");
    assert_eq!(builder.metadata().num_row_groups(), 10);

    // The next batch goes into a new file, and the first is unchanged.
    let (second, other) = (spans(50, 1_700_000_000, 15), BatchId::new());
    sink.write(&acme(), Signal::Traces, &second, &[other]).expect("write");
    let next = sink.flush().expect("flush").remove(0);
    assert_ne!(next.path, file.path, "a new file");
    assert_eq!((next.rows, next.batch_ids.as_slice()), (50, [other].as_slice()));
    let mut expected = vec![(file.path, 1_000, id.to_string()), (next.path, 50, other.to_string())];
    expected.sort();
    assert_eq!(published_files(dir.path()), expected);
}

#[test]
fn bad_batches_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sink = ParquetSink::open(Destination::local(dir.path()).expect("dest"), config()).expect("open");
    let no_time = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("body", DataType::Utf8, true)])),
        vec![Arc::new(arrow::array::StringArray::from(vec!["x"]))],
    )
    .expect("batch");
    let err = sink
        .write(&acme(), Signal::Logs, &no_time, &[])
        .expect_err("no timestamp");
    assert!(
        matches!(&err, Error::Schema { reason } if reason.contains("timestamp")),
        "{err}"
    );

    let wrong_unit = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new(
            "timestamp",
            DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None),
            false,
        )])),
        vec![Arc::new(arrow::array::TimestampMillisecondArray::from(vec![1]))],
    )
    .expect("batch");
    assert!(matches!(
        sink.write(&acme(), Signal::Logs, &wrong_unit, &[]),
        Err(Error::Schema { .. })
    ));

    let with_null = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new(
            "timestamp",
            DataType::Timestamp(arrow::datatypes::TimeUnit::Nanosecond, None),
            true,
        )])),
        vec![Arc::new(TimestampNanosecondArray::from(vec![Some(1), None]))],
    )
    .expect("batch");
    let err = sink
        .write(&acme(), Signal::Logs, &with_null, &[])
        .expect_err("null time");
    assert!(
        matches!(&err, Error::Schema { reason } if reason.contains("null")),
        "{err}"
    );

    // A good batch after the bad ones is stored alone.
    sink.write(&acme(), Signal::Traces, &spans(3, 1_700_000_000, 7), &[])
        .expect("write");
    let files = sink.flush().expect("flush");
    assert_eq!((files.len(), files[0].rows), (1, 3));
    assert!(matches!(
        NodeName::try_new("a/b"),
        Err(Error::InvalidName { kind: "node", .. })
    ));
    assert!(Tenant::try_new("../etc").is_err(), "tenants are validated by wit-batch");
}

#[test]
fn a_catalog_refusal_keeps_the_file_for_a_later_publish() {
    // A catalog that refuses until told otherwise, standing in for a tracker that is down.
    struct Flaky {
        inner: InMemoryFileCatalog,
        down: std::sync::atomic::AtomicBool,
    }
    impl FileCatalog for Flaky {
        fn publish(&self, files: &[StoredFile]) -> wit_store::Result<()> {
            if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(Error::Catalog {
                    source: "tracker unavailable".into(),
                });
            }
            self.inner.publish(files)
        }
        fn list(&self, t: &Tenant, s: Signal, r: Option<wit_store::TimeRange>) -> wit_store::Result<Vec<StoredFile>> {
            self.inner.list(t, s, r)
        }
        fn replace(&self, o: &[String], n: &[StoredFile], d: std::time::SystemTime) -> wit_store::Result<()> {
            self.inner.replace(o, n, d)
        }
        fn retire(&self, p: &[String], d: std::time::SystemTime) -> wit_store::Result<()> {
            self.inner.retire(p, d)
        }
        fn files_holding(&self, batch: BatchId) -> wit_store::Result<Vec<StoredFile>> {
            self.inner.files_holding(batch)
        }
        fn deletable(&self, now: std::time::SystemTime) -> wit_store::Result<Vec<StoredFile>> {
            self.inner.deletable(now)
        }
        fn forget(&self, p: &[String]) -> wit_store::Result<u64> {
            self.inner.forget(p)
        }
        fn record_index(&self, file: &str, index: &wit_store::FileIndex) -> wit_store::Result<()> {
            self.inner.record_index(file, index)
        }
        fn unindexed(&self, limit: usize) -> wit_store::Result<Vec<StoredFile>> {
            self.inner.unindexed(limit)
        }
    }
    let catalog = Arc::new(Flaky {
        inner: InMemoryFileCatalog::default(),
        down: true.into(),
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sink = ParquetSink::open(Destination::local(dir.path()).expect("dest"), config())
        .expect("open")
        .with_catalog(catalog.clone());
    sink.write(&acme(), Signal::Traces, &spans(20, 1_700_000_000, 8), &[BatchId::new()])
        .expect("write");
    let err = sink.flush().expect_err("catalog down");
    assert!(matches!(err, Error::Catalog { .. }), "{err}");
    let pending = sink.pending();
    assert_eq!(pending.len(), 1);
    catalog.down.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(sink.publish().expect("publish"), pending);
    assert_eq!(catalog.list(&acme(), Signal::Traces, None).expect("list"), pending);
    assert!(sink.pending().is_empty());
    assert_eq!(read_back(&dir.path().join(&pending[0].path)).num_rows(), 20);
}

/// How a [`Scripted`] catalog answers a `publish` call: with an error, or `None` to publish.
type Answer = Box<dyn Fn(usize, &[StoredFile]) -> Option<Error> + Send + Sync>;

/// A catalog whose `publish` gives `answer(call, files)`'s error when there is one (`call`
/// counts the calls from 0) and otherwise publishes into `inner`.
struct Scripted {
    inner: InMemoryFileCatalog,
    calls: AtomicUsize,
    answer: Answer,
}

impl Scripted {
    fn new(answer: impl Fn(usize, &[StoredFile]) -> Option<Error> + Send + Sync + 'static) -> Self {
        Scripted {
            inner: InMemoryFileCatalog::default(),
            calls: AtomicUsize::new(0),
            answer: Box::new(answer),
        }
    }
}

impl FileCatalog for Scripted {
    fn publish(&self, files: &[StoredFile]) -> wit_store::Result<()> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        match (self.answer)(call, files) {
            Some(error) => Err(error),
            None => self.inner.publish(files),
        }
    }
    fn list(&self, t: &Tenant, s: Signal, r: Option<wit_store::TimeRange>) -> wit_store::Result<Vec<StoredFile>> {
        self.inner.list(t, s, r)
    }
    fn replace(&self, o: &[String], n: &[StoredFile], d: std::time::SystemTime) -> wit_store::Result<()> {
        self.inner.replace(o, n, d)
    }
    fn retire(&self, p: &[String], d: std::time::SystemTime) -> wit_store::Result<()> {
        self.inner.retire(p, d)
    }
    fn deletable(&self, now: std::time::SystemTime) -> wit_store::Result<Vec<StoredFile>> {
        self.inner.deletable(now)
    }
    fn forget(&self, p: &[String]) -> wit_store::Result<u64> {
        self.inner.forget(p)
    }
    fn files_holding(&self, batch: BatchId) -> wit_store::Result<Vec<StoredFile>> {
        self.inner.files_holding(batch)
    }
    fn record_index(&self, file: &str, index: &wit_store::FileIndex) -> wit_store::Result<()> {
        self.inner.record_index(file, index)
    }
    fn unindexed(&self, limit: usize) -> wit_store::Result<Vec<StoredFile>> {
        self.inner.unindexed(limit)
    }
}

/// A publish call that fails part way keeps the files it did publish: the next successful
/// call returns them with its own, so a caller that acts on the files returned misses none.
#[test]
fn a_publish_that_fails_part_way_returns_its_published_files_on_the_next_call() {
    let catalog = Arc::new(Scripted::new(|call, _| {
        (call == 1).then(|| Error::Catalog {
            source: "tracker unavailable".into(),
        })
    }));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sink = ParquetSink::open(Destination::local(dir.path()).expect("dest"), config())
        .expect("open")
        .with_catalog(catalog.clone());
    let umbrella = Tenant::try_new("umbrella").expect("tenant");
    let catalogued = || {
        let mut files = catalog.list(&acme(), Signal::Traces, None).expect("list");
        files.extend(catalog.list(&umbrella, Signal::Traces, None).expect("list"));
        files
    };
    sink.write(
        &acme(),
        Signal::Traces,
        &spans(20, 1_700_000_000, 16),
        &[BatchId::new()],
    )
    .expect("write");
    sink.write(
        &umbrella,
        Signal::Traces,
        &spans(30, 1_700_000_000, 17),
        &[BatchId::new()],
    )
    .expect("write");

    // Two files closed: the first is published, the second's catalog call fails.
    let err = sink.flush().expect_err("the second file's publish fails");
    assert!(matches!(err, Error::Catalog { .. }), "{err}");
    let first = catalogued();
    let pending = sink.pending();
    assert_eq!((first.len(), pending.len()), (1, 1));
    assert_ne!(first[0].path, pending[0].path);

    // The next call publishes the second and returns both, each once.
    let published = sink.publish().expect("publish");
    assert_eq!(published, [first[0].clone(), pending[0].clone()]);
    assert!(sink.pending().is_empty());
    let mut all = catalogued();
    all.sort_by(|a, b| a.path.cmp(&b.path));
    let mut expected = published.clone();
    expected.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(all, expected, "both are in the catalog");
    for file in &published {
        assert_eq!(read_back(&dir.path().join(&file.path)).num_rows() as u64, file.rows);
    }
    assert!(sink.publish().expect("publish").is_empty(), "returned once");
}

/// A file the catalog refuses for good does not block the files behind it: it is set aside
/// in staging as `{id}.parquet.refused` (never queued again, not even on reopen), its
/// published copy is deleted again (but for `FileExists`, where the object at that path is
/// the catalogued file's), and `take_refused` reports it once.
#[test]
fn a_file_the_catalog_refuses_is_set_aside_and_the_next_is_published() {
    type Refusal = fn(&StoredFile) -> Error;
    let refusals: [(Refusal, bool); 3] = [
        (
            |f| Error::BatchAlreadyStored {
                batch: f.batch_ids[0],
                path: f.path.clone(),
                stored_in: "x".into(),
            },
            true,
        ),
        (
            |f| Error::InvalidFile {
                path: f.path.clone(),
                reason: "refused".into(),
            },
            true,
        ),
        (|f| Error::FileExists { path: f.path.clone() }, false),
    ];
    for (refusal, copy_deleted) in refusals {
        let refused_id = BatchId::new();
        let catalog = Arc::new(Scripted::new(move |_, files| {
            files.iter().find(|f| f.batch_ids.contains(&refused_id)).map(refusal)
        }));
        let dir = tempfile::tempdir().expect("tempdir");
        let open = || {
            ParquetSink::open(
                Destination::local(dir.path()).expect("dest"),
                config().with_max_file_bytes(1),
            )
            .expect("open")
            .with_catalog(catalog.clone())
        };
        let mut sink = open();
        sink.write(&acme(), Signal::Traces, &spans(20, 1_700_000_000, 18), &[refused_id])
            .expect("write");
        sink.write(
            &acme(),
            Signal::Traces,
            &spans(30, 1_700_000_000, 19),
            &[BatchId::new()],
        )
        .expect("write");
        let pending = sink.pending();
        assert_eq!(pending.len(), 2, "each write closed its file");
        let (refused, kept) = (pending[0].clone(), pending[1].clone());

        let published = sink.flush().expect("a refusal does not fail the call");
        assert_eq!(published, std::slice::from_ref(&kept));
        let taken = sink.take_refused();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].0, refused);
        assert_eq!(taken[0].1.to_string(), refusal(&refused).to_string());
        assert!(sink.take_refused().is_empty(), "reported once");
        assert_eq!(
            catalog.list(&acme(), Signal::Traces, None).expect("list"),
            std::slice::from_ref(&kept)
        );
        assert!(dir.path().join(&kept.path).exists());
        assert_eq!(dir.path().join(&refused.path).exists(), !copy_deleted, "{}", taken[0].1);

        // Set aside whole in staging, and left there by a reopened sink.
        let staging = sink.staging_dir().to_owned();
        let set_aside: Vec<_> = std::fs::read_dir(&staging)
            .expect("staging")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.to_string_lossy().ends_with(".parquet.refused"))
            .collect();
        assert_eq!((set_aside.len(), staged_files(&staging)), (1, 1));
        assert_eq!(read_back(&set_aside[0]).num_rows(), 20);
        drop(sink);
        let mut sink = open();
        assert!(sink.pending().is_empty(), "a refused file is not queued again");
        assert!(sink.flush().expect("flush").is_empty());
        assert!(sink.take_refused().is_empty());
        assert!(set_aside[0].exists());
    }
}

#[test]
fn the_async_sink_writes_and_flushes() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = ParquetSink::open(Destination::local(dir.path()).expect("dest"), config()).expect("open");
    let sink = wit_store::AsyncParquetSink::new(sink);
    let files = runtime.block_on(async {
        let ids = [BatchId::new()];
        sink.write(&acme(), Signal::Traces, &spans(30, 1_700_000_000, 9), &ids)
            .await
            .expect("write");
        assert_eq!(sink.open_rows(), 30);
        assert!(sink.next_deadline().is_some());
        assert!(sink.poll(Instant::now()).await.expect("poll").is_empty());
        sink.flush().await.expect("flush")
    });
    assert_eq!(files[0].rows, 30);
    assert_eq!((sink.open_rows(), sink.pending().len()), (0, 0));
    assert_eq!(read_back(&dir.path().join(&files[0].path)).num_rows(), 30);
}

/// A catalog whose `publish` waits at a gate: a publish under way, for as long as the test
/// wants.
struct GatedCatalog {
    inner: wit_store::InMemoryFileCatalog,
    entered: parking_lot::Mutex<Option<std::sync::mpsc::Sender<()>>>,
    gate: parking_lot::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl wit_store::FileCatalog for GatedCatalog {
    fn publish(&self, files: &[wit_store::StoredFile]) -> wit_store::Result<()> {
        if let Some(entered) = self.entered.lock().take() {
            entered.send(()).expect("test waits");
            self.gate.lock().recv().expect("test opens the gate");
        }
        self.inner.publish(files)
    }
    fn list(
        &self,
        tenant: &Tenant,
        signal: Signal,
        time: Option<wit_store::TimeRange>,
    ) -> wit_store::Result<Vec<wit_store::StoredFile>> {
        self.inner.list(tenant, signal, time)
    }
    fn replace(
        &self,
        old: &[String],
        new: &[wit_store::StoredFile],
        delete_after: std::time::SystemTime,
    ) -> wit_store::Result<()> {
        self.inner.replace(old, new, delete_after)
    }
    fn retire(&self, paths: &[String], delete_after: std::time::SystemTime) -> wit_store::Result<()> {
        self.inner.retire(paths, delete_after)
    }
    fn files_holding(&self, batch: BatchId) -> wit_store::Result<Vec<wit_store::StoredFile>> {
        self.inner.files_holding(batch)
    }
    fn deletable(&self, now: std::time::SystemTime) -> wit_store::Result<Vec<wit_store::StoredFile>> {
        self.inner.deletable(now)
    }
    fn forget(&self, paths: &[String]) -> wit_store::Result<u64> {
        self.inner.forget(paths)
    }
    fn record_index(&self, file: &str, index: &wit_store::FileIndex) -> wit_store::Result<()> {
        self.inner.record_index(file, index)
    }
    fn unindexed(&self, limit: usize) -> wit_store::Result<Vec<wit_store::StoredFile>> {
        self.inner.unindexed(limit)
    }
}

#[test]
fn the_async_sinks_pending_answers_while_a_publish_is_under_way() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (open_gate, gate) = std::sync::mpsc::channel();
    let catalog = Arc::new(GatedCatalog {
        inner: wit_store::InMemoryFileCatalog::default(),
        entered: parking_lot::Mutex::new(Some(entered_tx)),
        gate: parking_lot::Mutex::new(gate),
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = ParquetSink::open(Destination::local(dir.path()).expect("dest"), config())
        .expect("open")
        .with_catalog(catalog);
    let sink = wit_store::AsyncParquetSink::new(sink);
    runtime
        .block_on(sink.write(&acme(), Signal::Traces, &spans(10, 1_700_000_000, 9), &[BatchId::new()]))
        .expect("write");
    let flushing = runtime.spawn({
        let sink = sink.clone();
        async move { sink.flush().await }
    });
    entered.recv().expect("the flush reaches the catalog");
    // The sink is busy publishing; its view answers at once with what the write left. (A
    // deadlock here would hang the thread: the channel's timeout reports it instead.)
    let (answer_tx, answer) = std::sync::mpsc::channel();
    let probe = sink.clone();
    std::thread::spawn(move || {
        let _ = answer_tx.send((probe.pending().len(), probe.open_rows()));
    });
    let seen = answer.recv_timeout(Duration::from_secs(60));
    open_gate.send(()).expect("flush waits");
    assert_eq!(seen, Ok((0, 10)), "pending() waited for the publish");
    let files = runtime.block_on(flushing).expect("join").expect("flush");
    assert_eq!(files.len(), 1);
    assert_eq!((sink.pending().len(), sink.open_rows()), (0, 0));
}

/// The files are read by an independent Parquet implementation (pyarrow).
#[test]
fn pyarrow_reads_the_files() {
    let has_pyarrow = std::process::Command::new("python3")
        .args(["-c", "import pyarrow"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_pyarrow {
        assert!(
            std::env::var_os("WIT_REQUIRE_PYARROW").is_none(),
            "pyarrow is required here (pip install pyarrow)"
        );
        eprintln!(
            "pyarrow not installed: the independent-reader test is skipped (pip install pyarrow; .ci/run requires it)"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sink = ParquetSink::open(
        Destination::local(dir.path()).expect("dest"),
        config().with_row_group_rows(300),
    )
    .expect("open");
    let input = spans(1_000, 1_700_000_000, 10);
    let id = BatchId::new();
    sink.write(&acme(), Signal::Traces, &input, &[id]).expect("write");
    let file = sink.flush().expect("flush").remove(0);
    let local = dir.path().join(&file.path);
    let script = r#"
import json, sys
import pyarrow.parquet as pq
f = pq.ParquetFile(sys.argv[1])
t = f.read()
ts = [v.value for v in t.column("timestamp")]
meta = {k.decode(): v.decode() for k, v in f.metadata.metadata.items() if k.decode().startswith("wit.")}
print(json.dumps({
    "rows": t.num_rows,
    "row_groups": f.num_row_groups,
    "codec": f.metadata.row_group(0).column(0).compression,
    "first_trace": t.column("trace_id")[0].as_py().hex(),
    "services": sorted(set(t.column("service_name").to_pylist())),
    "min": min(ts), "max": max(ts),
    "sorted_groups": all(
        all(a <= b for a, b in zip(g, g[1:]))
        for g in [[v.value for v in f.read_row_group(i).column("timestamp")] for i in range(f.num_row_groups)]
    ),
    "meta": meta,
}))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&local)
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(got["rows"], 1_000);
    assert_eq!(got["row_groups"], 4);
    assert_eq!(got["codec"], "ZSTD");
    assert_eq!(got["sorted_groups"], true);
    assert_eq!(got["min"], file.time_range.min);
    assert_eq!(got["max"], file.time_range.max);
    assert_eq!(got["services"], serde_json::json!(["svc-0", "svc-1", "svc-2"]));
    assert_eq!(got["meta"]["wit.batch_ids"], id.to_string());
    assert_eq!(got["meta"]["wit.path"], file.path);
    // The first row pyarrow sees is the earliest span, with the trace id the Rust side wrote.
    let back = read_back(&local);
    let ids = back
        .column(back.schema().index_of("trace_id").expect("trace_id"))
        .as_any()
        .downcast_ref::<arrow::array::FixedSizeBinaryArray>()
        .expect("fixed size binary");
    let hex: String = ids.value(0).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(got["first_trace"], hex);
}

#[test]
fn batches_out_of_turn_or_overlapping_are_still_sorted() {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "timestamp",
        DataType::Timestamp(arrow::datatypes::TimeUnit::Nanosecond, Some("UTC".into())),
        false,
    )]));
    let batch = |t: Vec<i64>| {
        RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(TimestampNanosecondArray::from(t).with_timezone("UTC"))],
        )
        .expect("batch")
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sink = ParquetSink::open(Destination::local(dir.path()).expect("dest"), config()).expect("open");
    for (input, expected) in [
        (vec![vec![10, 20, 30], vec![15, 25]], vec![10, 15, 20, 25, 30]),
        (vec![vec![1, 2], vec![2, 3], vec![4]], vec![1, 2, 2, 3, 4]),
        (vec![vec![50, 60], vec![7, 8], vec![30]], vec![7, 8, 30, 50, 60]),
        (vec![vec![9, 3], vec![1]], vec![1, 3, 9]),
    ] {
        for times in input {
            sink.write(&acme(), Signal::Events, &batch(times), &[]).expect("write");
        }
        let file = sink.flush().expect("flush").remove(0);
        assert_eq!(times(&read_back(&dir.path().join(&file.path))), expected);
    }
}

/// Any `object_store` works as a destination, object_store's own local file system included
/// (the default `Destination::local` adds the fsyncs that one lacks).
#[test]
fn object_store_local_file_system_as_a_destination() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = object_store::local::LocalFileSystem::new_with_prefix(dir.path()).expect("local store");
    let destination = Destination::object_store(Arc::new(store), "prefix").expect("destination");
    let staging = tempfile::tempdir().expect("staging");
    let mut sink = ParquetSink::open(destination, config().with_staging_dir(staging.path())).expect("open");
    sink.write(&acme(), Signal::Logs, &spans(40, 1_700_000_000, 12), &[BatchId::new()])
        .expect("write");
    let file = sink.flush().expect("flush").remove(0);
    let uploaded = dir.path().join("prefix").join(&file.path);
    assert_eq!(read_back(&uploaded).num_rows(), 40);
    assert_eq!(std::fs::metadata(&uploaded).expect("meta").len(), file.bytes);
}

/// Staging on another file system than the destination (here tmpfs): the file is copied,
/// synced and renamed into place instead of linked.
#[test]
fn staging_on_another_file_system_is_copied_into_place() {
    let Ok(staging) = tempfile::tempdir_in("/dev/shm") else {
        eprintln!("no /dev/shm: nothing to test");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sink = ParquetSink::open(
        Destination::local(dir.path()).expect("dest"),
        config().with_staging_dir(staging.path()),
    )
    .expect("open");
    sink.write(
        &acme(),
        Signal::Traces,
        &spans(25, 1_700_000_000, 13),
        &[BatchId::new()],
    )
    .expect("write");
    let file = sink.flush().expect("flush").remove(0);
    let local = dir.path().join(&file.path);
    assert_eq!(read_back(&local).num_rows(), 25);
    assert_eq!(std::fs::metadata(&local).expect("meta").len(), file.bytes);
    assert_eq!(staged_files(staging.path()), 0);
    assert!(!local.with_extension("parquet.tmp").exists());
}

#[test]
fn a_file_that_fails_to_write_is_abandoned_and_names_its_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let faults = Arc::new(wit_store::SinkFaults::default());
    let mut sink = ParquetSink::open(
        Destination::local(dir.path()).expect("dest"),
        config().with_row_group_rows(50).with_faults(faults.clone()),
    )
    .expect("open");
    let (first, second, third) = (BatchId::new(), BatchId::new(), BatchId::new());
    sink.write(&acme(), Signal::Traces, &spans(40, 1_700_000_000, 1), &[first])
        .expect("no row group yet");
    // The next row group written reports an error after its rows went into the file.
    faults.fail_row_group(1);
    match sink.write(&acme(), Signal::Traces, &spans(40, 1_700_000_000, 2), &[second]) {
        Err(Error::FileAbandoned { mut batches, .. }) => {
            batches.sort_unstable();
            let mut want = vec![first, second];
            want.sort_unstable();
            assert_eq!(batches, want, "every batch of the file, this one included");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sink.open_rows(), 0, "the file is no longer open");
    let leftovers: Vec<_> = std::fs::read_dir(sink.staging_dir())
        .expect("staging")
        .map(|e| e.expect("entry").file_name())
        .filter(|n| n.to_string_lossy().contains(".parquet"))
        .collect();
    assert!(leftovers.is_empty(), "the abandoned file is deleted: {leftovers:?}");
    // The sink goes on: the next batch gets a file of its own, and only it is published.
    sink.write(&acme(), Signal::Traces, &spans(10, 1_700_000_000, 3), &[third])
        .expect("write");
    let files = sink.flush().expect("flush");
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].batch_ids, [third]);
    assert_eq!(files[0].rows, 10);
}

#[test]
fn kept_rows_are_the_files_rows_in_order_and_bound_its_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let batch = spans(300, 1_700_000_000, 7);
    let one = batch.get_array_memory_size();
    // A file holds two writes' rows and a half: the third write closes it.
    let config = config()
        .with_row_group_rows(100)
        .with_kept_rows_bytes(2 * one + one / 2);
    let mut sink = ParquetSink::open(Destination::local(dir.path()).expect("dest"), config).expect("open");
    sink.write(&acme(), Signal::Traces, &batch, &[BatchId::new()])
        .expect("write");
    let first = sink.flush().expect("flush").remove(0);
    let kept = sink.take_rows(&first.path).expect("kept");
    let kept = concat_batches(&kept[0].schema(), &kept).expect("concat");
    // In file order (sorted by time): what a reader reads from the file, row for row.
    assert_eq!(times(&kept), times(&read_back(&dir.path().join(&first.path))));
    assert!(sink.take_rows(&first.path).is_none(), "taken once");

    for n in 1..=3 {
        sink.write(&acme(), Signal::Traces, &batch, &[BatchId::new()])
            .expect("write");
        assert_eq!(
            sink.open_rows() == 0,
            n == 3,
            "closed by the write that reached the bound"
        );
    }
    let full = sink.publish().expect("publish").remove(0);
    assert_eq!(full.rows, 900);
    let kept = sink.take_rows(&full.path).expect("kept");
    let kept = concat_batches(&kept[0].schema(), &kept).expect("concat");
    assert_eq!(times(&kept), times(&read_back(&dir.path().join(&full.path))));

    // Off by default.
    drop(sink);
    let mut sink =
        ParquetSink::open(Destination::local(dir.path()).expect("dest"), super::sink::config()).expect("open");
    sink.write(&acme(), Signal::Traces, &batch, &[BatchId::new()])
        .expect("write");
    let file = sink.flush().expect("flush").remove(0);
    assert!(sink.take_rows(&file.path).is_none());
}
