//! Compaction, retention and deletion of retired files, through the catalog.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use wit_batch::{BatchId, Signal, Tenant};
use wit_store::{
    Destination, Error, FileCatalog, FileIndex, FileIndexer, InMemoryFileCatalog, Maintenance, ParquetSink, StoredFile,
};

use crate::data::spans;
use crate::destination::files_under;
use crate::sink::{config, read_back};

fn acme() -> Tenant {
    Tenant::try_new("acme").expect("tenant")
}

#[test]
fn compaction_into_several_files_keeps_each_batch_in_one_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = Arc::new(InMemoryFileCatalog::default());
    let mut sink = ParquetSink::open(Destination::local(dir.path()).expect("dest"), config())
        .expect("open")
        .with_catalog(catalog.clone());
    let mut ids = Vec::new();
    for seed in 0..6 {
        let id = BatchId::new();
        ids.push(id);
        sink.write(&acme(), Signal::Traces, &spans(100, 1_700_000_000 + seed, seed), &[id])
            .expect("write");
        sink.flush().expect("flush");
    }
    let before = catalog.list(&acme(), Signal::Traces, None).expect("list");
    assert_eq!(before.len(), 6);
    // A target that takes about two of these files at a time (and under which each is small).
    let largest = before.iter().map(|f| f.bytes).max().expect("files");
    let target = largest * 2 + largest / 2;
    let maintenance = Maintenance::new(Destination::local(dir.path()).expect("dest"), catalog.clone(), config());
    let report = maintenance
        .compact(&acme(), Signal::Traces, target, SystemTime::now())
        .expect("the catalog accepts every new file");
    assert!(report.published.len() >= 2, "{report:?}");
    assert_eq!(report.retired.len(), 6);
    // Each batch is in exactly one live file, which holds all of its rows.
    let after = catalog.list(&acme(), Signal::Traces, None).expect("list");
    for id in &ids {
        let holding: Vec<_> = after.iter().filter(|f| f.batch_ids.contains(id)).collect();
        assert_eq!(holding.len(), 1, "batch {id}");
        assert_eq!(catalog.files_holding(*id).expect("look-up").len(), 1);
    }
    for file in &report.published {
        assert_eq!(file.rows, 100 * file.batch_ids.len() as u64, "{file:?}");
        assert_eq!(read_back(&dir.path().join(&file.path)).num_rows() as u64, file.rows);
    }
}

#[test]
fn compaction_merges_small_files_in_time_order_and_retires_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = Arc::new(InMemoryFileCatalog::default());
    let mut sink = ParquetSink::open(Destination::local(dir.path()).expect("dest"), config())
        .expect("open")
        .with_catalog(catalog.clone());
    // Four small files in the same hour (one partition), one in another hour.
    let mut ids = Vec::new();
    for seed in 0..4 {
        let id = BatchId::new();
        ids.push(id);
        sink.write(&acme(), Signal::Traces, &spans(100, 1_700_000_000, seed), &[id])
            .expect("write");
        sink.flush().expect("flush");
    }
    sink.write(
        &acme(),
        Signal::Traces,
        &spans(100, 1_700_100_000, 9),
        &[BatchId::new()],
    )
    .expect("write");
    sink.flush().expect("flush");
    let before = catalog.list(&acme(), Signal::Traces, None).expect("list");
    assert_eq!(before.len(), 5);

    let now = SystemTime::now();
    let maintenance = Maintenance::new(Destination::local(dir.path()).expect("dest"), catalog.clone(), config())
        .with_grace(Duration::from_secs(600));
    let report = maintenance
        .compact(&acme(), Signal::Traces, 64 << 20, now)
        .expect("compact");
    assert_eq!(report.retired.len(), 4);
    assert_eq!(report.published.len(), 1);
    let merged = &report.published[0];
    assert_eq!(merged.rows, 400);
    ids.sort();
    assert_eq!(merged.batch_ids, ids);

    // Readers now see the merged file and the untouched one; the merged rows are in order.
    let after = catalog.list(&acme(), Signal::Traces, None).expect("list");
    assert_eq!(after.len(), 2);
    assert!(after.contains(merged));
    let rows = read_back(&dir.path().join(&merged.path));
    assert_eq!(rows.num_rows(), 400);
    let times = rows
        .column(rows.schema().index_of("timestamp").expect("ts"))
        .as_any()
        .downcast_ref::<arrow::array::TimestampNanosecondArray>()
        .expect("ns")
        .values()
        .to_vec();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "merged file is in time order");

    // The old files stay readable during the grace period, then go.
    for old in &report.retired {
        assert!(dir.path().join(old).exists());
    }
    assert_eq!(maintenance.delete_retired(now).expect("too early"), 0);
    assert_eq!(
        maintenance
            .delete_retired(now + Duration::from_secs(601))
            .expect("delete"),
        4
    );
    for old in &report.retired {
        assert!(!dir.path().join(old).exists(), "{old} deleted");
    }
    assert_eq!(
        maintenance
            .delete_retired(now + Duration::from_secs(601))
            .expect("again"),
        0
    );

    // Nothing left to merge.
    assert!(
        maintenance
            .compact(&acme(), Signal::Traces, 64 << 20, now)
            .expect("compact")
            .published
            .is_empty()
    );
}

#[test]
fn retention_retires_old_files_for_later_deletion() {
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = Arc::new(InMemoryFileCatalog::default());
    let mut sink = ParquetSink::open(Destination::local(dir.path()).expect("dest"), config())
        .expect("open")
        .with_catalog(catalog.clone());
    let day = 86_400;
    let now_secs = 1_700_000_000 + 40 * day;
    sink.write(&acme(), Signal::Traces, &spans(10, now_secs - 31 * day, 1), &[])
        .expect("old");
    sink.flush().expect("flush");
    sink.write(&acme(), Signal::Traces, &spans(10, now_secs - day, 2), &[])
        .expect("recent");
    sink.flush().expect("flush");
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now_secs);
    let maintenance = Maintenance::new(Destination::local(dir.path()).expect("dest"), catalog.clone(), config())
        .with_grace(Duration::from_secs(60));
    assert_eq!(
        maintenance
            .apply_retention(&acme(), Duration::from_secs(30 * 86_400), now)
            .expect("retention"),
        1
    );
    let live = catalog.list(&acme(), Signal::Traces, None).expect("list");
    assert_eq!(live.len(), 1);
    assert!(live[0].time_range.min >= ((now_secs - 2 * day) * 1_000_000_000) as i64);
    assert_eq!(
        maintenance
            .apply_retention(&acme(), Duration::from_secs(30 * 86_400), now)
            .expect("again"),
        0
    );
    assert_eq!(
        maintenance
            .delete_retired(now + Duration::from_secs(61))
            .expect("delete"),
        1
    );
}

/// A stand-in for wit-index: reads the published file, writes a blob naming its rows beside
/// it (`….parquet` → `….index`) with `Destination::put`, and returns what to record. From
/// call `fail_from` on (counting from 0), it fails instead, before writing anything.
struct TestIndexer {
    destination: Destination,
    calls: AtomicUsize,
    fail_from: usize,
}

impl TestIndexer {
    fn new(destination: Destination) -> Self {
        TestIndexer::failing_from(destination, usize::MAX)
    }

    fn failing_from(destination: Destination, fail_from: usize) -> Self {
        TestIndexer {
            destination,
            calls: AtomicUsize::new(0),
            fail_from,
        }
    }

    /// The blob this indexer writes for `file`.
    fn blob(file: &StoredFile) -> Bytes {
        Bytes::from(format!("{} documents of {}", file.rows, file.path))
    }
}

impl FileIndexer for TestIndexer {
    fn index_file(&self, file: &StoredFile) -> Result<FileIndex, Box<dyn std::error::Error + Send + Sync>> {
        if self.calls.fetch_add(1, Ordering::SeqCst) >= self.fail_from {
            return Err("the index writer ran out of memory".into());
        }
        let rows = read_back_bytes(&self.destination.read(&file.path)?);
        assert_eq!(rows, file.rows, "the file is published before it is indexed");
        let blob = TestIndexer::blob(file);
        let index = FileIndex {
            path: file.path.replace(".parquet", ".index"),
            bytes: blob.len() as u64,
            docs: file.rows,
            checksum: crc32fast::hash(&blob),
        };
        self.destination.put(&index.path, blob)?;
        Ok(index)
    }
}

fn read_back_bytes(bytes: &Bytes) -> u64 {
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
        .expect("parquet")
        .build()
        .expect("reader")
        .map(|b| b.expect("batch").num_rows() as u64)
        .sum()
}

/// The files under `root` outside the staging directory, relative to `root`.
fn stored_under(root: &Path) -> Vec<PathBuf> {
    files_under(root)
        .into_iter()
        .filter_map(|p| p.strip_prefix(root).ok().map(Path::to_owned))
        .filter(|p| !p.starts_with(".staging"))
        .collect()
}

/// Four small files of one partition, published through the sink into `catalog`; their ids.
fn four_small_files(root: &Path, catalog: Arc<dyn FileCatalog>) -> Vec<BatchId> {
    let mut sink = ParquetSink::open(Destination::local(root).expect("dest"), config())
        .expect("open")
        .with_catalog(catalog);
    let mut ids = Vec::new();
    for seed in 0..4 {
        let id = BatchId::new();
        ids.push(id);
        sink.write(&acme(), Signal::Traces, &spans(100, 1_700_000_000, seed), &[id])
            .expect("write");
        sink.flush().expect("flush");
    }
    ids
}

#[test]
fn compaction_with_an_indexer_catalogues_the_index_and_deletion_takes_the_old_blobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let destination = Destination::local(dir.path()).expect("dest");
    let catalog = Arc::new(InMemoryFileCatalog::default());
    four_small_files(dir.path(), catalog.clone());
    // wit-index catches up with the sink's files.
    let indexer = Arc::new(TestIndexer::new(destination.clone()));
    let before = catalog.unindexed(100).expect("unindexed");
    assert_eq!(before.len(), 4);
    for file in &before {
        let index = indexer.index_file(file).expect("index");
        catalog.record_index(&file.path, &index).expect("record_index");
    }
    let before = catalog.list(&acme(), Signal::Traces, None).expect("list");
    let old_blobs: Vec<String> = before
        .iter()
        .map(|f| f.index.as_ref().expect("indexed").path.clone())
        .collect();

    let now = SystemTime::now();
    let maintenance = Maintenance::new(destination.clone(), catalog.clone(), config())
        .with_grace(Duration::from_secs(600))
        .with_indexer(indexer.clone());
    let report = maintenance
        .compact(&acme(), Signal::Traces, 64 << 20, now)
        .expect("compact");
    assert_eq!((report.retired.len(), report.published.len()), (4, 1));
    let merged = &report.published[0];
    let index = merged.index.clone().expect("the new file comes with its index");
    assert_eq!((index.docs, merged.rows), (400, 400));
    assert_eq!(
        catalog.list(&acme(), Signal::Traces, None).expect("list"),
        std::slice::from_ref(merged)
    );
    assert!(catalog.unindexed(100).expect("unindexed").is_empty());
    let blob = destination.read(&index.path).expect("the blob is published");
    assert_eq!(blob, TestIndexer::blob(merged));
    assert_eq!(
        (blob.len() as u64, crc32fast::hash(&blob)),
        (index.bytes, index.checksum)
    );

    // The old files' blobs go with them, after the grace period.
    assert_eq!(maintenance.delete_retired(now).expect("too early"), 0);
    assert!(old_blobs.iter().all(|b| dir.path().join(b).exists()));
    assert_eq!(
        maintenance
            .delete_retired(now + Duration::from_secs(601))
            .expect("delete"),
        4
    );
    let mut left = vec![PathBuf::from(&index.path), PathBuf::from(&merged.path)];
    left.sort();
    assert_eq!(
        stored_under(dir.path()),
        left,
        "only the new file and its blob are left"
    );
    assert!(
        catalog
            .deletable(now + Duration::from_secs(601))
            .expect("deletable")
            .is_empty()
    );
}

#[test]
fn compaction_whose_indexer_fails_catalogues_nothing_and_leaves_the_old_files_live() {
    let dir = tempfile::tempdir().expect("tempdir");
    let destination = Destination::local(dir.path()).expect("dest");
    let catalog = Arc::new(InMemoryFileCatalog::default());
    let mut ids = four_small_files(dir.path(), catalog.clone());
    let before = catalog.list(&acme(), Signal::Traces, None).expect("list");
    let on_disk = stored_under(dir.path());
    assert_eq!(on_disk.len(), 4);

    // Two groups of two files: the first new file is indexed, the second's indexing fails.
    let largest = before.iter().map(|f| f.bytes).max().expect("files");
    let target = largest * 2 + largest / 2;
    let indexer = Arc::new(TestIndexer::failing_from(destination.clone(), 1));
    let maintenance = Maintenance::new(destination.clone(), catalog.clone(), config()).with_indexer(indexer.clone());
    let err = maintenance
        .compact(&acme(), Signal::Traces, target, SystemTime::now())
        .expect_err("the indexer fails");
    let Error::Index { path, source } = &err else {
        panic!("{err}")
    };
    assert!(
        path.ends_with(".parquet") && !before.iter().any(|f| f.path == *path),
        "{path}"
    );
    assert!(source.to_string().contains("out of memory"), "{source}");
    assert_eq!(indexer.calls.load(Ordering::SeqCst), 2);

    // Nothing changed in the catalog, and what the partition made is gone again.
    assert_eq!(catalog.list(&acme(), Signal::Traces, None).expect("list"), before);
    assert!(
        catalog
            .deletable(SystemTime::now() + Duration::from_secs(3_600))
            .expect("deletable")
            .is_empty()
    );
    assert_eq!(
        stored_under(dir.path()),
        on_disk,
        "the new files and the first one's blob are deleted"
    );

    // Once the indexer works, the same compaction goes through.
    let maintenance = Maintenance::new(destination.clone(), catalog.clone(), config())
        .with_indexer(Arc::new(TestIndexer::new(destination)));
    let report = maintenance
        .compact(&acme(), Signal::Traces, target, SystemTime::now())
        .expect("compact");
    assert_eq!((report.retired.len(), report.published.len()), (4, 2));
    assert!(report.published.iter().all(|f| f.index.is_some()));
    let mut held: Vec<BatchId> = report.published.iter().flat_map(|f| f.batch_ids.clone()).collect();
    held.sort();
    ids.sort();
    assert_eq!(held, ids);
}

/// Dead letters are a signal like the others: stored under `{tenant}/dead_letters/`, each
/// file's time range that of its refusal times, merged by compaction (in time order) and
/// retired by retention.
#[test]
fn dead_letters_are_stored_compacted_and_retired_like_every_signal() {
    use wit_batch::dead_letters::{self, DeadLetter};

    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = Arc::new(InMemoryFileCatalog::default());
    let mut sink = ParquetSink::open(Destination::local(dir.path()).expect("dest"), config())
        .expect("open")
        .with_catalog(catalog.clone());
    let base = 1_700_000_000u64;
    let at = |secs: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(base + secs);
    let nanos = |secs: u64| ((base + secs) * 1_000_000_000) as i64;
    // Two files in the same hour, their letters out of time order within each.
    for (file, secs) in [[30u64, 10], [20, 40]].into_iter().enumerate() {
        let letters: Vec<DeadLetter> = secs
            .iter()
            .map(|&s| DeadLetter::new(at(s), Signal::Events, format!("refused at {s}"), "{}").with_stream("signups"))
            .collect();
        let rows = dead_letters::decode(
            &dead_letters::encode(&letters),
            wit_batch::PayloadFormat::Ndjson,
            wit_batch::Compression::None,
        )
        .expect("decode");
        sink.write(&acme(), Signal::DeadLetters, &rows, &[BatchId::new()])
            .expect("write");
        let published = sink.flush().expect("flush");
        assert_eq!(published.len(), 1, "file {file}");
        let stored = &published[0];
        assert!(stored.path.starts_with("acme/dead_letters/"), "{}", stored.path);
        let (min, max) = (secs.iter().min().expect("min"), secs.iter().max().expect("max"));
        assert_eq!(
            (stored.time_range.min, stored.time_range.max),
            (nanos(*min), nanos(*max))
        );
    }
    assert!(catalog.list(&acme(), Signal::Events, None).expect("list").is_empty());

    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(base + 40 * 86_400);
    let maintenance = Maintenance::new(Destination::local(dir.path()).expect("dest"), catalog.clone(), config())
        .with_grace(Duration::from_secs(60));
    let report = maintenance
        .compact(&acme(), Signal::DeadLetters, 64 << 20, now)
        .expect("compact");
    assert_eq!((report.retired.len(), report.published.len()), (2, 1));
    let merged = read_back(&dir.path().join(&report.published[0].path));
    assert_eq!(merged.schema().fields(), dead_letters::schema().fields());
    let reasons: Vec<_> = merged
        .column_by_name("reason")
        .expect("reason")
        .as_any()
        .downcast_ref::<arrow::array::StringArray>()
        .expect("utf8")
        .iter()
        .map(|r| r.expect("not null").to_owned())
        .collect();
    assert_eq!(
        reasons,
        ["refused at 10", "refused at 20", "refused at 30", "refused at 40"]
    );

    // Forty days on, a 30-day retention retires them.
    assert_eq!(
        maintenance
            .apply_retention(&acme(), Duration::from_secs(30 * 86_400), now)
            .expect("retention"),
        1
    );
    assert!(
        catalog
            .list(&acme(), Signal::DeadLetters, None)
            .expect("list")
            .is_empty()
    );
}
