//! The pipeline end to end on SQLite and a local store, read back with pyarrow.

use std::collections::BTreeMap;
use std::time::Duration;

use wit_batch::{BatchKey, Compression, Part, PayloadFormat, RetryPolicy, Signal, SourceKind, Stage, Tenant};
use wit_pipeline::{AckLevel, Error, Pipeline, Submitted};
use wit_store::{Destination, FileCatalog};
use wit_tracker::{SqliteTracker, Tracker, TrackerConfig};

use crate::support::{self, config, gauge, logs, proto, spans};

const LONG: Duration = Duration::from_secs(30);

fn key(tenant: &str, signal: Signal) -> BatchKey {
    BatchKey::new(Tenant::try_new(tenant).expect("tenant"), signal, SourceKind::Http)
}

/// Spans `0..n` of tenant `acme` are stored, each once: the catalog's row count, and the
/// span ids pyarrow reads from the files.
fn assert_spans_stored_once(catalog: &dyn FileCatalog, data: &std::path::Path, n: i64) {
    let acme = Tenant::try_new("acme").expect("tenant");
    assert_eq!(
        support::stored_rows(catalog, &acme, Signal::Traces),
        n as u64,
        "every span once"
    );
    if support::has_pyarrow() {
        let mut ids = support::pyarrow_read(data, "traces").ids;
        ids.sort_unstable();
        assert_eq!(ids, (0..n).collect::<Vec<i64>>());
    }
}

fn stored_or_later(stage: Stage) -> bool {
    matches!(stage, Stage::Stored | Stage::Indexed | Stage::Completed)
}

#[test]
fn every_signal_is_stored_and_acknowledged_at_the_level_asked_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tracker = support::sqlite(dir.path());
    let data = dir.path().join("data");
    let pipeline = support::open(dir.path(), config(dir.path()), tracker.clone());

    let mut acks = Vec::new();
    for i in 0..20u64 {
        let ids: Vec<u64> = (i * 3..i * 3 + 3).collect();
        acks.push(
            pipeline
                .blocking_submit(&key("acme", Signal::Traces), proto(spans(&ids), 1), AckLevel::Stored)
                .expect("traces"),
        );
        acks.push(
            pipeline
                .blocking_submit(&key("acme", Signal::Logs), proto(logs(&ids), 1), AckLevel::WalDurable)
                .expect("logs"),
        );
        acks.push(
            pipeline
                .blocking_submit(&key("acme", Signal::Metrics), proto(gauge(&ids), 1), AckLevel::Stored)
                .expect("metrics"),
        );
        let events = format!("{{\"timestamp\": \"2026-01-01T00:00:{:02}Z\", \"n\": {i}}}\n", i % 60);
        acks.push(
            pipeline
                .blocking_submit(
                    &key("acme", Signal::Events),
                    Part::new(PayloadFormat::Ndjson, Compression::None, 1, events.into_bytes()),
                    AckLevel::Stored,
                )
                .expect("events"),
        );
    }
    let received = pipeline
        .blocking_submit(&key("acme", Signal::Traces), proto(spans(&[60]), 1), AckLevel::Received)
        .expect("received");
    let at_once = received.try_get().expect("resolved at once").expect("ok");
    assert_eq!((at_once.level, at_once.batch), (AckLevel::Received, None));

    let mut batches = Vec::new();
    for ack in acks {
        let level = ack.level();
        let acked = ack
            .wait_timeout(LONG)
            .expect("acknowledged in time")
            .expect("acknowledged");
        assert_eq!(acked.level, level);
        let batch = acked.batch.expect("a batch");
        assert!(acked.lsn.is_some());
        if level == AckLevel::Stored {
            assert!(stored_or_later(tracker.batch(batch).expect("record").stage));
            assert_eq!(
                tracker.files_holding(batch).expect("files").len(),
                1,
                "one file holds a batch"
            );
        }
        batches.push(batch);
    }
    pipeline.close().expect("close");

    // Everything is stored once closed, and the WAL released what it held.
    for batch in &batches {
        let record = tracker.batch(*batch).expect("record");
        assert!(stored_or_later(record.stage), "{batch}: {}", record.stage);
        assert_eq!(record.wal_position.expect("position").node, "node-a");
    }
    let acme = Tenant::try_new("acme").expect("tenant");
    let rows = |signal| -> u64 {
        tracker
            .list(&acme, signal, None)
            .expect("list")
            .iter()
            .map(|f| f.rows)
            .sum()
    };
    assert_eq!(rows(Signal::Traces), 61);
    assert_eq!(rows(Signal::Logs), 60);
    assert_eq!(rows(Signal::Metrics), 60);
    assert_eq!(rows(Signal::Events), 20);

    if support::has_pyarrow() {
        for (table, expected) in [("traces", 61), ("logs", 60)] {
            let found = support::pyarrow_read(&data, table);
            let mut ids = found.ids.clone();
            ids.sort_unstable();
            let want: Vec<i64> = (0..expected).collect();
            assert_eq!(ids, want, "{table}: every record once");
            let catalogued: Vec<(String, u64)> = {
                let signal: Signal = table.parse().expect("signal");
                let mut files: Vec<_> = tracker
                    .list(&acme, signal, None)
                    .expect("list")
                    .into_iter()
                    .map(|f| (f.path, f.rows))
                    .collect();
                files.sort();
                files
            };
            assert_eq!(
                found.files, catalogued,
                "{table}: the files on disk are the catalogued ones"
            );
        }
    }
}

#[test]
fn an_empty_export_is_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tracker = support::sqlite(dir.path());
    let pipeline = support::open(dir.path(), config(dir.path()), tracker.clone());
    // A legal OTLP export with no spans at all.
    let ack = pipeline
        .blocking_submit(&key("acme", Signal::Traces), proto(spans(&[]), 1), AckLevel::Stored)
        .expect("submit");
    let acked = ack.wait_timeout(LONG).expect("stored in time").expect("stored");
    let record = tracker.batch(acked.batch.expect("batch")).expect("record");
    assert!(stored_or_later(record.stage), "{}", record.stage);
    assert!(
        tracker.files_holding(record.meta.id).expect("files").is_empty(),
        "no rows, no file"
    );
    pipeline.close().expect("close");
}

#[test]
fn a_malformed_batch_fails_after_its_retries_without_holding_back_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tracker = std::sync::Arc::new(
        SqliteTracker::open(
            &dir.path().join("tracker.db"),
            TrackerConfig::default().with_retry_policy(RetryPolicy::default().with_max_retries(2)),
        )
        .expect("tracker"),
    );
    let config = config(dir.path());
    let dead_letters = config.dead_letter_dir();
    let pipeline = support::open(dir.path(), config, tracker.clone());
    let bad = pipeline
        .blocking_submit(
            &key("bad", Signal::Traces),
            proto(vec![0xff, 0xff, 0xff], 1),
            AckLevel::Stored,
        )
        .expect("submit");
    let good: Vec<_> = (0..10u64)
        .map(|i| {
            pipeline
                .blocking_submit(&key("acme", Signal::Traces), proto(spans(&[i]), 1), AckLevel::Stored)
                .expect("submit")
        })
        .collect();
    for ack in good {
        ack.wait_timeout(LONG).expect("in time").expect("the rest is stored");
    }
    let failed = match bad.wait_timeout(LONG).expect("in time") {
        Err(Error::BatchFailed { batch, reason }) => {
            assert!(reason.contains("conversion"), "{reason}");
            batch
        }
        other => panic!("{other:?}"),
    };
    let record = tracker.batch(failed).expect("record");
    assert_eq!(record.stage, Stage::Failed);
    assert_eq!(record.retry_count, 3, "the first attempt and two retries");
    let kept = dead_letters.join(format!("{failed}.envelope"));
    assert!(kept.exists(), "the envelope is kept in the dead-letter directory");

    // The failed batch no longer holds the WAL: the janitor's point passes it.
    let position = record.wal_position.expect("position").lsn;
    let deadline = std::time::Instant::now() + LONG;
    while pipeline.status().safe_lsn <= position {
        assert!(std::time::Instant::now() < deadline, "{:?}", pipeline.status());
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(pipeline.status().batches_failed, 1);
    // Nor does the tracker hold the log for it.
    let floor = tracker.oldest_unstored_wal_position("node-a").expect("floor");
    assert!(floor.is_none_or(|lsn| lsn > position), "{floor:?} holds {position}");

    // An operator may send it again; it fails again, as its payload is still malformed.
    let again = pipeline.resubmit_failed(failed).expect("resubmitted");
    assert_eq!(again.len(), 1);
    assert!(!kept.exists(), "the kept copy is removed once the new batch is durable");
    assert!(matches!(
        pipeline.resubmit_failed(failed),
        Err(Error::NotDeadLettered { .. })
    ));
    pipeline.close().expect("close");
}

#[test]
fn a_reopened_pipeline_stores_what_was_durable_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tracker = support::sqlite(dir.path());
    let data = dir.path().join("data");
    let mut acked = BTreeMap::new();
    {
        // Files are closed by size only here, so most batches are not stored when the
        // pipeline is dropped without draining.
        let config = config(dir.path()).with_sink(
            wit_store::SinkConfig::new(wit_store::NodeName::try_new("node-a").expect("node"))
                .with_max_file_age(Duration::from_secs(3600))
                .with_max_file_bytes(20_000),
        );
        let pipeline = support::open(dir.path(), config, tracker.clone());
        for i in 0..200u64 {
            let ack = pipeline
                .blocking_submit(
                    &key("acme", Signal::Traces),
                    proto(spans(&[i]), 1),
                    AckLevel::WalDurable,
                )
                .expect("submit");
            acked.insert(i, ack);
        }
        // No flush: the batcher emits by age, and files are left open for the drop.
        let acked: Vec<_> = std::mem::take(&mut acked).into_values().collect();
        for ack in acked {
            ack.wait_timeout(LONG).expect("in time").expect("durable");
        }
        drop(pipeline); // stops without draining: open files are lost, the WAL has them
    }
    let pipeline = Pipeline::open(
        config(dir.path()),
        Destination::local(&data).expect("dest"),
        tracker.clone(),
    )
    .expect("reopen");
    let report = pipeline.recovery().clone();
    assert!(report.replayed > 0, "{report:?}");
    pipeline.close().expect("close");
    assert_spans_stored_once(&*tracker, &data, 200);
}

#[test]
fn submitting_pushes_back_at_the_unstored_bound_and_nothing_is_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tracker = support::sqlite(dir.path());
    let node = wit_store::NodeName::try_new("node-a").expect("node");
    // Nothing is stored until close: files never reach their size or age.
    let config = config(dir.path())
        .with_sink(wit_store::SinkConfig::new(node).with_max_file_age(Duration::from_secs(3600)))
        .with_batcher(
            wit_batch::BatcherConfig::default()
                .with_max_messages(1)
                .with_max_bytes(4096),
        )
        .with_max_unstored_bytes(16 << 10);
    let pipeline = support::open(dir.path(), config, tracker.clone());
    let mut acks = Vec::new();
    let mut full = None;
    for i in 0..10_000u64 {
        match pipeline
            .try_submit(
                &key("acme", Signal::Traces),
                proto(spans(&[i]), 1),
                AckLevel::WalDurable,
            )
            .expect("submit")
        {
            Submitted::Accepted(ack) => acks.push(ack),
            Submitted::Full(part) => {
                full = Some((i, part));
                break;
            }
        }
    }
    let (refused_at, part) = full.expect("the bound is reached");
    // Asked first, the pipeline says the same: no room for the refused part.
    assert!(!pipeline.has_room_for(part.payload.len() as u64));
    assert!(pipeline.has_room_for(0), "a part of nothing always fits");
    assert_eq!(
        part.payload.as_ref(),
        spans(&[refused_at]).as_slice(),
        "the part comes back untouched"
    );
    assert!(pipeline.status().unstored_bytes <= 16 << 10);
    for ack in acks {
        ack.wait_timeout(LONG).expect("in time").expect("durable");
    }
    pipeline.close().expect("close");
    let rows = support::stored_rows(&*tracker, &Tenant::try_new("acme").expect("tenant"), Signal::Traces);
    assert_eq!(rows, refused_at, "every accepted record is stored");
}

#[test]
fn async_submit_waits_for_room_and_the_ack_is_a_future() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tracker = support::sqlite(dir.path());
    let pipeline = support::open(dir.path(), config(dir.path()), tracker.clone());
    let acked = support::block_on(async {
        let ack = pipeline
            .submit(&key("acme", Signal::Logs), proto(logs(&[1, 2, 3]), 1), AckLevel::Stored)
            .await
            .expect("submit");
        ack.await.expect("stored")
    });
    assert!(stored_or_later(
        tracker.batch(acked.batch.expect("batch")).expect("record").stage
    ));
    pipeline.close().expect("close");
}

#[test]
fn acknowledgments_at_wal_durable_do_not_wait_for_the_tracker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = support::sqlite(dir.path());
    let tracker = std::sync::Arc::new(crate::faulty::Faulty::new(sqlite.clone(), None));
    let pipeline = support::open(dir.path(), config(dir.path()), tracker.clone());
    // The tracker's database goes away.
    tracker.set_down(true);
    let durable: Vec<_> = (0..20u64)
        .map(|i| {
            pipeline
                .blocking_submit(
                    &key("acme", Signal::Traces),
                    proto(spans(&[i]), 1),
                    AckLevel::WalDurable,
                )
                .expect("submit")
        })
        .collect();
    let stored = pipeline
        .blocking_submit(&key("acme", Signal::Traces), proto(spans(&[20]), 1), AckLevel::Stored)
        .expect("submit");
    for ack in durable {
        ack.wait_timeout(LONG)
            .expect("durable without the tracker")
            .expect("durable");
    }
    // Nothing is stored while the tracker is down (it is the catalog), and it is reported.
    assert!(stored.wait_timeout(Duration::from_millis(300)).is_none());
    let deadline = std::time::Instant::now() + LONG;
    while !pipeline.status().last_error.is_some_and(|e| e.contains("down")) {
        assert!(std::time::Instant::now() < deadline, "{:?}", pipeline.status());
        std::thread::sleep(Duration::from_millis(5));
    }
    // It comes back: everything is stored, once.
    tracker.set_down(false);
    stored.wait_timeout(LONG).expect("stored in time").expect("stored");
    pipeline.close().expect("close");
    let rows = support::stored_rows(&*sqlite, &Tenant::try_new("acme").expect("tenant"), Signal::Traces);
    assert_eq!(rows, 21);
}

#[test]
fn a_part_no_wal_record_can_hold_is_refused_and_the_pipeline_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tracker = support::sqlite(dir.path());
    let config = config(dir.path()).with_wal(
        wit_wal::Config::default()
            .with_segment_size(4 << 20)
            .with_max_record_size(1 << 20),
    );
    let pipeline = support::open(dir.path(), config, tracker.clone());
    let huge = Part::new(PayloadFormat::OtlpProtobuf, Compression::None, 1, vec![0u8; 2 << 20]);
    match pipeline.try_submit(&key("acme", Signal::Traces), huge, AckLevel::WalDurable) {
        Err(Error::PartTooLarge { len, max }) => assert!(len > max && max < 1 << 20, "{len} {max}"),
        other => panic!("{other:?}"),
    }
    // The pipeline is unharmed.
    pipeline
        .blocking_submit(&key("acme", Signal::Traces), proto(spans(&[1]), 1), AckLevel::Stored)
        .expect("submit")
        .wait_timeout(LONG)
        .expect("in time")
        .expect("stored");
    pipeline.close().expect("close");

    // A batcher whose full batch cannot fit in a WAL record is refused up front.
    let too_big = support::config(dir.path())
        .with_wal(wit_wal::Config::default().with_max_record_size(1 << 20))
        .with_batcher(
            wit_batch::BatcherConfig::default()
                .with_max_bytes(4 << 20)
                .with_max_buffered_bytes(8 << 20),
        );
    let err = Pipeline::open(
        too_big,
        Destination::local(&dir.path().join("data")).expect("dest"),
        tracker,
    )
    .expect_err("refused");
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
}

#[test]
fn a_file_abandoned_after_a_write_error_has_its_batches_written_again_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tracker = support::sqlite(dir.path());
    let data = dir.path().join("data");
    let faults = std::sync::Arc::new(wit_store::SinkFaults::default());
    // The third row group written fails after its rows went into the file: that file, and
    // every batch in it, is given up and written again.
    faults.fail_row_group(3);
    let node = wit_store::NodeName::try_new("node-a").expect("node");
    let config = config(dir.path()).with_sink(
        wit_store::SinkConfig::new(node)
            .with_max_file_age(Duration::from_millis(200))
            .with_row_group_rows(16)
            .with_faults(faults),
    );
    let pipeline = support::open(dir.path(), config, tracker.clone());
    let acks: Vec<_> = (0..40u64)
        .map(|i| {
            let ids: Vec<u64> = (i * 5..i * 5 + 5).collect();
            pipeline
                .blocking_submit(&key("acme", Signal::Traces), proto(spans(&ids), 1), AckLevel::Stored)
                .expect("submit")
        })
        .collect();
    let mut batches = Vec::new();
    for ack in acks {
        batches.push(
            ack.wait_timeout(LONG)
                .expect("in time")
                .expect("stored")
                .batch
                .expect("batch"),
        );
    }
    pipeline.close().expect("close");
    batches.sort_unstable();
    batches.dedup();
    let retried = batches
        .iter()
        .filter(|b| tracker.batch(**b).expect("record").error_stage == Some(Stage::Stored))
        .count();
    assert!(retried > 0, "a write failed and its batches were written again");
    assert_spans_stored_once(&*tracker, &data, 200);
}

#[test]
fn flush_stores_what_was_submitted_before_it_without_waiting_for_file_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tracker = support::sqlite(dir.path());
    let node = wit_store::NodeName::try_new("node-a").expect("node");
    // Files would stay open for ten minutes.
    let config = config(dir.path()).with_sink(wit_store::SinkConfig::new(node));
    let pipeline = support::open(dir.path(), config, tracker.clone());
    let ack = pipeline
        .blocking_submit(&key("acme", Signal::Logs), proto(logs(&[1, 2]), 1), AckLevel::Stored)
        .expect("submit");
    let durable = pipeline
        .blocking_submit(&key("acme", Signal::Logs), proto(logs(&[3]), 1), AckLevel::WalDurable)
        .expect("submit");
    durable.wait_timeout(LONG).expect("in time").expect("durable");
    assert!(
        ack.wait_timeout(Duration::from_millis(300)).is_none(),
        "the file is still open"
    );
    pipeline.flush().expect("flush");
    let acked = ack.wait_timeout(LONG).expect("stored after the flush").expect("stored");
    assert_eq!(
        tracker.files_holding(acked.batch.expect("batch")).expect("files").len(),
        1
    );
    pipeline.close().expect("close");
}

#[test]
fn indexed_acknowledgments_wait_for_the_index_and_the_index_finds_the_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tracker = support::sqlite(dir.path());
    let pipeline = support::open(dir.path(), config(dir.path()), tracker.clone());
    let mut acks = Vec::new();
    for i in 0..10u64 {
        let ids: Vec<u64> = (i * 4..i * 4 + 4).collect();
        acks.push(
            pipeline
                .blocking_submit(&key("acme", Signal::Logs), proto(logs(&ids), 1), AckLevel::Indexed)
                .expect("logs"),
        );
    }
    let mut batches = Vec::new();
    for ack in acks {
        let acked = ack.wait_timeout(LONG).expect("in time").expect("indexed");
        assert_eq!(acked.level, AckLevel::Indexed);
        let batch = acked.batch.expect("a batch");
        // Indexed means: every file holding the batch has its index recorded.
        let files = tracker.files_holding(batch).expect("files");
        assert_eq!(files.len(), 1);
        assert!(
            files[0].index.is_some(),
            "{batch}: acknowledged Indexed without an index"
        );
        let stage = tracker.batch(batch).expect("record").stage;
        assert!(matches!(stage, Stage::Indexed | Stage::Completed), "{batch}: {stage}");
        batches.push(batch);
    }
    let status = pipeline.status();
    assert!(status.files_indexed >= 1);
    // Every record acknowledged Indexed was counted stored and indexed, once.
    assert_eq!((status.records_stored, status.records_indexed), (40, 40));

    // The indexes answer, through the index, the rows a scan finds.
    let acme = Tenant::try_new("acme").expect("tenant");
    let searcher = wit_index::Searcher::new(Destination::local(&dir.path().join("data")).expect("dest"));
    let query = wit_index::Query::parse("\"record 17\" OR \"record 23\"").expect("query");
    let mut found = 0;
    for file in tracker.list(&acme, Signal::Logs, None).expect("list") {
        let hits = searcher.search(&file, &query).expect("search");
        assert!(matches!(hits.by, wit_index::SearchedBy::Index), "{:?}", hits.by);
        assert_eq!(hits.rows, searcher.scan(&file, &query).expect("scan"));
        found += hits.rows.count();
    }
    assert_eq!(found, 2);
    pipeline.close().expect("close");
    // COMPLETED follows INDEXED once the WAL releases the record (a whole segment at a time).
    for batch in &batches {
        let stage = tracker.batch(*batch).expect("record").stage;
        assert!(matches!(stage, Stage::Indexed | Stage::Completed), "{batch}: {stage}");
    }
    assert!(tracker.unindexed(100).expect("unindexed").is_empty());
}

#[test]
fn files_stored_without_an_index_are_indexed_after_the_next_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tracker = support::sqlite(dir.path());
    let acme = Tenant::try_new("acme").expect("tenant");
    {
        let pipeline = support::open(dir.path(), config(dir.path()).with_indexing(false), tracker.clone());
        let refused = pipeline.blocking_submit(&key("acme", Signal::Logs), proto(logs(&[0]), 1), AckLevel::Indexed);
        assert!(matches!(refused, Err(Error::InvalidConfig { .. })), "{refused:?}");
        for i in 0..5u64 {
            pipeline
                .blocking_submit(&key("acme", Signal::Logs), proto(logs(&[i]), 1), AckLevel::Stored)
                .expect("submit")
                .wait_timeout(LONG)
                .expect("in time")
                .expect("stored");
        }
        pipeline.close().expect("close");
    }
    let files = tracker.list(&acme, Signal::Logs, None).expect("list");
    assert!(!files.is_empty());
    assert!(files.iter().all(|f| f.index.is_none()), "indexing was off");
    assert_eq!(tracker.unindexed(100).expect("unindexed").len(), files.len());

    // Reopened with indexing on: the files are found and indexed.
    let pipeline = support::open(dir.path(), config(dir.path()), tracker.clone());
    let deadline = std::time::Instant::now() + LONG;
    while !tracker.unindexed(100).expect("unindexed").is_empty() {
        assert!(std::time::Instant::now() < deadline, "files left unindexed");
        std::thread::sleep(Duration::from_millis(20));
    }
    pipeline.close().expect("close");
    for file in tracker.list(&acme, Signal::Logs, None).expect("list") {
        let index = file.index.expect("indexed");
        assert_eq!(index.docs, file.rows);
        for batch in &file.batch_ids {
            let stage = tracker.batch(*batch).expect("record").stage;
            assert!(matches!(stage, Stage::Indexed | Stage::Completed), "{stage}");
        }
    }
}

#[test]
fn a_batch_is_completed_only_once_indexed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = support::sqlite(dir.path());
    let faulty = std::sync::Arc::new(crate::faulty::Faulty::new(sqlite.clone(), None));
    faulty.set_refuse_index(true);
    let submit_all = |pipeline: &Pipeline, first: u64| -> Vec<wit_batch::BatchId> {
        // Enough to fill several WAL segments, so the janitor releases records.
        let acks: Vec<_> = (first..first + 150)
            .map(|i| {
                let ids: Vec<u64> = (i * 100..i * 100 + 100).collect();
                pipeline
                    .blocking_submit(&key("acme", Signal::Logs), proto(logs(&ids), 1), AckLevel::Stored)
                    .expect("submit")
            })
            .collect();
        acks.into_iter()
            .map(|a| {
                a.wait_timeout(LONG)
                    .expect("in time")
                    .expect("stored")
                    .batch
                    .expect("batch")
            })
            .collect()
    };
    let pipeline = support::open(dir.path(), config(dir.path()), faulty.clone());
    let first = submit_all(&pipeline, 0);
    // The janitor had time to release segments and complete what it may.
    std::thread::sleep(Duration::from_millis(300));
    pipeline.close().expect("close");
    let stages: Vec<Stage> = first.iter().map(|b| sqlite.batch(*b).expect("record").stage).collect();
    assert!(
        stages.iter().all(|s| *s == Stage::Stored),
        "no index was recorded, so nothing may be INDEXED or COMPLETED: {stages:?}"
    );

    // The catalog takes indexes again: everything gets indexed, then completed as the WAL
    // releases it.
    faulty.set_refuse_index(false);
    let pipeline = support::open(dir.path(), config(dir.path()), faulty.clone());
    let second = submit_all(&pipeline, 1_000);
    let deadline = std::time::Instant::now() + LONG;
    while !sqlite.unindexed(1_000).expect("unindexed").is_empty() {
        assert!(std::time::Instant::now() < deadline, "files left unindexed");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    pipeline.close().expect("close");
    let stages: Vec<Stage> = first
        .iter()
        .chain(&second)
        .map(|b| sqlite.batch(*b).expect("record").stage)
        .collect();
    assert!(
        stages.iter().all(|s| matches!(s, Stage::Indexed | Stage::Completed)),
        "{stages:?}"
    );
    assert!(
        stages.contains(&Stage::Completed),
        "some records were released: {stages:?}"
    );
}

#[test]
fn an_index_that_falls_behind_pushes_back_at_the_unindexed_bound_and_catches_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = support::sqlite(dir.path());
    let faulty = std::sync::Arc::new(crate::faulty::Faulty::new(sqlite.clone(), None));
    // The catalog takes no index: every stored file stays unindexed.
    faulty.set_refuse_index(true);
    let bound = 16 << 10;
    let config = config(dir.path())
        .with_max_unindexed_bytes(bound)
        .with_retry_backoff(Duration::from_millis(10));
    let pipeline = support::open(dir.path(), config, faulty.clone());
    let mut stored = 0u64;
    let mut refused = None;
    for i in 0..10_000u64 {
        let ids: Vec<u64> = (i * 10..i * 10 + 10).collect();
        match pipeline
            .try_submit(&key("acme", Signal::Logs), proto(logs(&ids), 1), AckLevel::Stored)
            .expect("submit")
        {
            Submitted::Accepted(ack) => {
                ack.wait_timeout(LONG).expect("in time").expect("stored");
                stored += 10;
            }
            Submitted::Full(part) => {
                refused = Some(part);
                break;
            }
        }
    }
    let part = refused.expect("intake stops once the unindexed bytes reach the bound");
    let status = pipeline.status();
    assert!(status.unindexed_bytes >= bound, "{status:?}");
    assert_eq!(
        status.unstored_bytes, 0,
        "everything taken is stored: only the index is behind"
    );
    assert!(!pipeline.has_room_for(part.payload.len() as u64));

    // The catalog takes indexes again: the indexer's retries catch up and intake resumes.
    faulty.set_refuse_index(false);
    let deadline = std::time::Instant::now() + LONG;
    while !pipeline.has_room_for(part.payload.len() as u64) {
        assert!(std::time::Instant::now() < deadline, "{:?}", pipeline.status());
        std::thread::sleep(Duration::from_millis(20));
    }
    let ack = pipeline
        .blocking_submit(&key("acme", Signal::Logs), part, AckLevel::Indexed)
        .expect("submit");
    pipeline.flush().expect("flush");
    ack.wait_timeout(LONG).expect("in time").expect("indexed");
    // The indexer releases a file's bytes just after the catalog took its index.
    let deadline = std::time::Instant::now() + LONG;
    while pipeline.status().unindexed_bytes != 0 {
        assert!(std::time::Instant::now() < deadline, "{:?}", pipeline.status());
        std::thread::sleep(Duration::from_millis(20));
    }
    pipeline.close().expect("close");
    let acme = Tenant::try_new("acme").expect("tenant");
    assert_eq!(support::stored_rows(&*sqlite, &acme, Signal::Logs), stored + 10);
    assert!(sqlite.unindexed(1_000).expect("unindexed").is_empty());
}

#[test]
fn a_tenant_at_its_own_unstored_bound_is_refused_and_others_are_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = support::sqlite(dir.path());
    let node = wit_store::NodeName::try_new("node-a").expect("node");
    // Files are published only on flush: whatever is taken stays unstored until then.
    let config = config(dir.path())
        .with_sink(wit_store::SinkConfig::new(node).with_max_file_age(Duration::from_secs(600)))
        .with_max_unstored_bytes_per_tenant(16 << 10);
    let pipeline = support::open(dir.path(), config, sqlite.clone());
    let (acme, globex) = (
        Tenant::try_new("acme").expect("t"),
        Tenant::try_new("globex").expect("t"),
    );
    let mut taken = 0u64;
    let refused = loop {
        let ids: Vec<u64> = (taken * 10..taken * 10 + 10).collect();
        match pipeline
            .try_submit(&key("acme", Signal::Logs), proto(logs(&ids), 1), AckLevel::WalDurable)
            .expect("submit")
        {
            Submitted::Accepted(ack) => {
                ack.wait_timeout(LONG).expect("in time").expect("durable");
                taken += 1;
                assert!(taken < 1_000, "acme is never refused");
            }
            Submitted::Full(part) => break part,
        }
    };
    assert!(taken > 1, "{taken}");
    let len = refused.payload.len() as u64;
    assert!(!pipeline.tenant_has_room_for(&acme, len));
    // Another tenant is taken meanwhile, and the pipeline as a whole has room.
    assert!(pipeline.tenant_has_room_for(&globex, len) && pipeline.has_room_for(len));
    match pipeline
        .try_submit(
            &key("globex", Signal::Logs),
            proto(logs(&[1, 2, 3]), 1),
            AckLevel::WalDurable,
        )
        .expect("submit")
    {
        Submitted::Accepted(ack) => {
            ack.wait_timeout(LONG).expect("in time").expect("durable");
        }
        Submitted::Full(_) => panic!("globex refused for acme's backlog"),
    }
    // Once acme's data is stored, acme is taken again.
    pipeline.flush().expect("flush");
    let deadline = std::time::Instant::now() + LONG;
    while !pipeline.tenant_has_room_for(&acme, len) {
        assert!(std::time::Instant::now() < deadline, "{:?}", pipeline.status());
        std::thread::sleep(Duration::from_millis(20));
    }
    let ack = pipeline
        .blocking_submit(&key("acme", Signal::Logs), refused, AckLevel::Stored)
        .expect("submit");
    pipeline.flush().expect("flush");
    ack.wait_timeout(LONG).expect("in time").expect("stored");
    pipeline.close().expect("close");
    assert_eq!(support::stored_rows(&*sqlite, &acme, Signal::Logs), (taken + 1) * 10);
    assert_eq!(support::stored_rows(&*sqlite, &globex, Signal::Logs), 3);
}

/// The rows of `tenant`'s `signal` in the files the catalog lists, read with the parquet
/// crate's Arrow reader (not the store's), in one batch.
fn read_catalogued(
    catalog: &dyn FileCatalog,
    data: &std::path::Path,
    tenant: &str,
    signal: Signal,
) -> arrow::array::RecordBatch {
    let tenant = Tenant::try_new(tenant).expect("tenant");
    let mut batches = Vec::new();
    for file in catalog.list(&tenant, signal, None).expect("list") {
        let path = data.join(&file.path);
        assert!(file.path.starts_with(&format!("{tenant}/{signal}/")), "{}", file.path);
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&path).expect("open a catalogued file"),
        )
        .expect("a parquet file")
        .build()
        .expect("reader");
        let file_batches = reader.collect::<Result<Vec<_>, _>>().expect("read");
        assert_eq!(file_batches.iter().map(|b| b.num_rows() as u64).sum::<u64>(), file.rows);
        batches.extend(file_batches);
    }
    let schema = wit_batch::dead_letters::schema();
    for batch in &batches {
        let fields = |s: &arrow::datatypes::Schema| -> Vec<(String, arrow::datatypes::DataType, bool)> {
            s.fields()
                .iter()
                .map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable()))
                .collect()
        };
        assert_eq!(
            fields(&batch.schema()),
            fields(&schema),
            "the stored schema is the table's"
        );
    }
    match batches.first() {
        Some(first) => arrow::compute::concat_batches(&first.schema(), &batches).expect("concat"),
        None => arrow::array::RecordBatch::new_empty(schema),
    }
}

#[test]
fn dead_letters_are_stored_for_their_tenant_and_read_back_independently() {
    use std::time::UNIX_EPOCH;
    use wit_batch::dead_letters::{self, DeadLetter};

    let dir = tempfile::tempdir().expect("tempdir");
    let tracker = support::sqlite(dir.path());
    let data = dir.path().join("data");
    let pipeline = support::open(dir.path(), config(dir.path()), tracker.clone());

    let at = |s: u64| UNIX_EPOCH + Duration::from_secs(1_767_225_600 + s); // 2026-01-01 +s
    let first = vec![
        DeadLetter::new(
            at(1),
            Signal::Events,
            "/user/age: \"old\" is not an integer",
            r#"{"user":{"age":"old"}}"#,
        )
        .with_stream("signups")
        .with_schema_version(2)
        .with_path("/user/age"),
        DeadLetter::new(
            at(2),
            Signal::Traces,
            "resourceSpans[0].scopeSpans[0].spans[1].traceId: id is 5 bytes, expected 16",
            r#"{"traceId":"0102030405"}"#,
        )
        .with_path("resourceSpans[0].scopeSpans[0].spans[1].traceId"),
    ];
    let second = vec![
        DeadLetter::new(at(3), Signal::Logs, "does not decode", "q83v")
            .with_topic("logs.acme")
            .with_partition(1)
            .with_offset(9),
    ];
    let part = |letters: &[DeadLetter]| {
        Part::new(
            PayloadFormat::Ndjson,
            Compression::None,
            letters.len() as u32,
            dead_letters::encode(letters),
        )
    };

    let key = key("acme", Signal::DeadLetters);
    let ack = pipeline
        .blocking_submit(&key, part(&first), AckLevel::Stored)
        .expect("submit");
    // A part the host converted already is stored from its rows.
    let payload = part(&second);
    let rows = dead_letters::decode(&payload.payload, payload.format, payload.compression).expect("decode");
    let Submitted::Accepted(converted) = pipeline
        .try_submit_converted(&key, payload, rows, AckLevel::Stored)
        .expect("submit converted")
    else {
        panic!("an empty pipeline has room");
    };
    // Another tenant's letter, and another signal of the same tenant, stay apart.
    let other = pipeline
        .blocking_submit(
            &self::key("umbrella", Signal::DeadLetters),
            part(&second),
            AckLevel::Stored,
        )
        .expect("other tenant");
    pipeline.flush().expect("flush");
    for ack in [ack, converted, other] {
        let acked = ack.wait_timeout(LONG).expect("in time").expect("stored");
        assert!(stored_or_later(
            tracker.batch(acked.batch.expect("batch")).expect("record").stage
        ));
    }
    pipeline.close().expect("close");

    let all: Vec<DeadLetter> = first.iter().chain(&second).cloned().collect();
    let expected =
        dead_letters::decode(&dead_letters::encode(&all), PayloadFormat::Ndjson, Compression::None).expect("decode");
    let mut stored = read_catalogued(tracker.as_ref(), &data, "acme", Signal::DeadLetters);
    // Files are sorted by time; the batches may be in one file or two, in either order.
    let order = arrow::compute::sort_to_indices(stored.column(0), None, None).expect("sort");
    stored = arrow::compute::take_record_batch(&stored, &order).expect("take");
    assert_eq!(stored.columns(), expected.columns(), "the rows submitted, as submitted");
    assert_eq!(
        support::stored_rows(tracker.as_ref(), &Tenant::try_new("acme").expect("t"), Signal::Events),
        0
    );

    let umbrella = read_catalogued(tracker.as_ref(), &data, "umbrella", Signal::DeadLetters);
    let expected =
        dead_letters::decode(&dead_letters::encode(&second), PayloadFormat::Ndjson, Compression::None).expect("decode");
    assert_eq!(umbrella.columns(), expected.columns());
}
