//! Compaction, retention and deletion of retired files, through the catalog.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use wit_batch::{BatchId, Signal, Tenant};
use wit_store::{Destination, FileCatalog, InMemoryFileCatalog, Maintenance, ParquetSink};

use crate::data::spans;
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
    assert_eq!(maintenance.apply_retention(&acme(), 30, now).expect("retention"), 1);
    let live = catalog.list(&acme(), Signal::Traces, None).expect("list");
    assert_eq!(live.len(), 1);
    assert!(live[0].time_range.min >= ((now_secs - 2 * day) * 1_000_000_000) as i64);
    assert_eq!(maintenance.apply_retention(&acme(), 30, now).expect("again"), 0);
    assert_eq!(
        maintenance
            .delete_retired(now + Duration::from_secs(61))
            .expect("delete"),
        1
    );
}
