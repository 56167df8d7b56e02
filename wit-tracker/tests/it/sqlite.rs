//! What is particular to the SQLite tracker: durability across reopen, migrations, SQL access.

use std::time::SystemTime;

use wit_batch::Stage;
use wit_tracker::{Advance, Error, SqliteTracker, Tracker, TrackerConfig, TrackerExt, WalPosition};

use wit_tracker::conformance::meta;

#[test]
fn records_survive_reopen_and_are_plain_sql() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tracker.db");
    let m = meta("acme", SystemTime::now(), 12);
    {
        let tracker = SqliteTracker::open(&path, TrackerConfig::default()).expect("open");
        tracker.register_one(&m).expect("register");
        tracker.mark(m.id, Stage::WalWritten, SystemTime::now()).expect("mark");
    }
    let tracker = SqliteTracker::open(&path, TrackerConfig::default()).expect("reopen");
    assert_eq!(tracker.batch(m.id).expect("batch").stage, Stage::WalWritten);

    let conn = rusqlite::Connection::open(&path).expect("sqlite");
    let (id, pip, messages): (String, bool, i64) = conn
        .query_row(
            "SELECT batch_id, wal_pip, message_count FROM batch_tracker WHERE NOT janitor_pip",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("query");
    assert_eq!((id, pip, messages), (m.id.to_string(), true, 12));
    let versions: i64 = conn
        .query_row("SELECT count(*) FROM wit_schema_version", [], |r| r.get(0))
        .expect("versions");
    assert_eq!(versions, 5, "reopening applies no migration twice");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tracker.db");
    drop(SqliteTracker::open(&path, TrackerConfig::default()).expect("open"));
    let conn = rusqlite::Connection::open(&path).expect("sqlite");
    conn.execute("INSERT INTO wit_schema_version VALUES (7, 'from the future', 0)", [])
        .expect("insert");
    let err = SqliteTracker::open(&path, TrackerConfig::default()).expect_err("too new");
    assert!(matches!(err, Error::SchemaTooNew { found: 7, supported: 5 }), "{err:?}");
}

/// A database left at schema version 1 (WAL positions without their node) is migrated on
/// open: its positions read back with an empty node and hold back every node's log until
/// their batches are stored; positions recorded since name their node.
#[test]
fn version_1_positions_hold_every_log_after_the_migration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tracker.db");
    let old = meta("acme", SystemTime::now(), 1);
    {
        let tracker = SqliteTracker::open(&path, TrackerConfig::default()).expect("open");
        tracker.register_one(&old).expect("register");
        tracker
            .advance(&[Advance::new(old.id, Stage::WalWritten, SystemTime::now()).with_wal_position("x", 7)])
            .expect("advance");
    }
    // Back to what version 1 left: no `wal_node`, the old index, no version 2 (nor 3, 4, 5).
    let conn = rusqlite::Connection::open(&path).expect("sqlite");
    conn.execute_batch(&format!(
        "{DOWNGRADE_TO_4}{DOWNGRADE_TO_3}{DOWNGRADE_TO_2}
         DROP INDEX batch_tracker_wal;
         ALTER TABLE batch_tracker DROP COLUMN wal_node;
         CREATE INDEX batch_tracker_wal ON batch_tracker (wal_position) WHERE stage <> 'COMPLETED';
         DELETE FROM wit_schema_version WHERE version = 2;"
    ))
    .expect("downgrade");

    let tracker = SqliteTracker::open(&path, TrackerConfig::default()).expect("migrate");
    let versions: Vec<i64> = conn
        .prepare("SELECT version FROM wit_schema_version ORDER BY version")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("versions");
    assert_eq!(versions, [1, 2, 3, 4, 5]);
    assert_eq!(
        tracker.batch(old.id).expect("batch").wal_position,
        Some(WalPosition::new("", 7))
    );
    let new = meta("acme", SystemTime::now(), 1);
    tracker.register_one(&new).expect("register");
    tracker
        .advance(&[Advance::new(new.id, Stage::WalWritten, SystemTime::now()).with_wal_position("node-a", 3)])
        .expect("advance");
    let oldest = |node: &str| tracker.oldest_unstored_wal_position(node).expect("oldest");
    assert_eq!((oldest("node-a"), oldest("node-b")), (Some(3), Some(7)));

    // A later step keeps the old position's node unknown, until the batch is stored.
    tracker.mark(old.id, Stage::Ingested, SystemTime::now()).expect("mark");
    let unknown: bool = conn
        .query_row(
            "SELECT wal_node IS NULL FROM batch_tracker WHERE batch_id = ?1",
            [old.id.to_string()],
            |r| r.get(0),
        )
        .expect("query");
    assert!(unknown);
    assert_eq!(oldest("node-b"), Some(7));
    tracker.mark(old.id, Stage::Stored, SystemTime::now()).expect("mark");
    assert_eq!((oldest("node-a"), oldest("node-b")), (Some(3), None));
}

/// Undoes schema version 5: the batches' source partition.
const DOWNGRADE_TO_4: &str = "ALTER TABLE batch_tracker DROP COLUMN \"partition\";
     DELETE FROM wit_schema_version WHERE version = 5;";

/// Undoes schema version 4: the idempotency keys' table (its index goes with it).
const DOWNGRADE_TO_3: &str = "DROP TABLE idempotency_keys;
     DELETE FROM wit_schema_version WHERE version = 4;";

/// Undoes schema version 3: the files' index columns and their partial index.
const DOWNGRADE_TO_2: &str = "DROP INDEX stored_files_unindexed;
     ALTER TABLE stored_files DROP COLUMN index_path;
     ALTER TABLE stored_files DROP COLUMN index_bytes;
     ALTER TABLE stored_files DROP COLUMN index_docs;
     ALTER TABLE stored_files DROP COLUMN index_checksum;
     DELETE FROM wit_schema_version WHERE version = 3;";

/// A database left at schema version 2 (files without index columns) is migrated in place on
/// open: its files read back with no index, are listed as unindexed, and can be indexed,
/// which marks their stored batches `INDEXED`.
#[test]
fn version_2_files_have_no_index_after_the_migration() {
    use wit_batch::{Signal, Tenant};
    use wit_store::{FileCatalog, FileIndex, StoredFile, TimeRange};

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tracker.db");
    let m = meta("acme", SystemTime::now(), 1);
    let file = StoredFile {
        path: "acme/logs/a.parquet".into(),
        tenant: Tenant::try_new("acme").expect("tenant"),
        signal: Signal::Logs,
        time_range: TimeRange::new(0, 99),
        rows: 10,
        bytes: 1_000,
        batch_ids: vec![m.id],
        index: None,
    };
    {
        let tracker = SqliteTracker::open(&path, TrackerConfig::default()).expect("open");
        tracker.register_one(&m).expect("register");
        for stage in [Stage::WalWritten, Stage::Ingested] {
            tracker.mark(m.id, stage, SystemTime::now()).expect("mark");
        }
        tracker.publish(std::slice::from_ref(&file)).expect("publish");
    }
    let conn = rusqlite::Connection::open(&path).expect("sqlite");
    conn.execute_batch(&format!("{DOWNGRADE_TO_4}{DOWNGRADE_TO_3}{DOWNGRADE_TO_2}"))
        .expect("downgrade");
    let columns: i64 = conn
        .query_row(
            "SELECT count(*) FROM pragma_table_info('stored_files') WHERE name LIKE 'index_%'",
            [],
            |r| r.get(0),
        )
        .expect("columns");
    assert_eq!(columns, 0, "back at version 2");

    let tracker = SqliteTracker::open(&path, TrackerConfig::default()).expect("migrate");
    let versions: Vec<i64> = conn
        .prepare("SELECT version FROM wit_schema_version ORDER BY version")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("versions");
    assert_eq!(versions, [1, 2, 3, 4, 5]);
    let tenant = Tenant::try_new("acme").expect("tenant");
    assert_eq!(
        tracker.list(&tenant, Signal::Logs, None).expect("list"),
        std::slice::from_ref(&file)
    );
    assert_eq!(tracker.unindexed(10).expect("unindexed"), std::slice::from_ref(&file));

    let index = FileIndex {
        path: "acme/logs/a.index".into(),
        bytes: 64,
        docs: 10,
        checksum: u32::MAX,
    };
    tracker.record_index(&file.path, &index).expect("record_index");
    assert_eq!(tracker.batch(m.id).expect("batch").stage, Stage::Indexed);
    assert!(tracker.unindexed(10).expect("unindexed").is_empty());
    let listed = tracker.list(&tenant, Signal::Logs, None).expect("list");
    assert_eq!(
        listed[0].index.as_ref(),
        Some(&index),
        "a checksum above i32::MAX reads back"
    );
    let (index_pip, stage): (bool, String) = conn
        .query_row(
            "SELECT index_pip, stage FROM batch_tracker WHERE batch_id = ?1",
            [m.id.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("query");
    assert_eq!((index_pip, stage.as_str()), (true, "INDEXED"));
}

/// A database left at schema version 3 (no idempotency keys) is migrated in place on open:
/// its batches are as they were, and keys are remembered (as plain SQL rows: times in
/// microseconds), recalled and forgotten.
#[test]
fn version_3_databases_remember_keys_after_the_migration() {
    use wit_batch::Tenant;
    use wit_tracker::RememberedKey;

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tracker.db");
    let m = meta("acme", SystemTime::now(), 1);
    {
        let tracker = SqliteTracker::open(&path, TrackerConfig::default()).expect("open");
        tracker.register_one(&m).expect("register");
        tracker.mark(m.id, Stage::WalWritten, SystemTime::now()).expect("mark");
    }
    let conn = rusqlite::Connection::open(&path).expect("sqlite");
    conn.execute_batch(&format!("{DOWNGRADE_TO_4}{DOWNGRADE_TO_3}"))
        .expect("downgrade");
    let tables = |conn: &rusqlite::Connection| -> i64 {
        conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE name IN ('idempotency_keys', 'idempotency_keys_created')",
            [],
            |r| r.get(0),
        )
        .expect("tables")
    };
    assert_eq!(tables(&conn), 0, "back at version 3");

    let tracker = SqliteTracker::open(&path, TrackerConfig::default()).expect("migrate");
    let versions: Vec<i64> = conn
        .prepare("SELECT version FROM wit_schema_version ORDER BY version")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("versions");
    assert_eq!(versions, [1, 2, 3, 4, 5]);
    assert_eq!(tables(&conn), 2, "the table and its index on created_at");
    assert_eq!(tracker.batch(m.id).expect("batch").stage, Stage::WalWritten);

    let tenant = Tenant::try_new("acme").expect("tenant");
    let when = SystemTime::UNIX_EPOCH + std::time::Duration::new(1_800_000_000, 123_456_789);
    let key = RememberedKey::new(tenant.clone(), "order-1", m.id, &b"\x00receipt\xff"[..], when);
    tracker.remember_keys(std::slice::from_ref(&key)).expect("remember");
    let row: (String, String, String, Vec<u8>, i64) = conn
        .query_row(
            "SELECT tenant, idem_key, batch_id, receipt, created_at FROM idempotency_keys",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .expect("row");
    assert_eq!(
        row,
        (
            "acme".to_owned(),
            "order-1".to_owned(),
            m.id.to_string(),
            b"\x00receipt\xff".to_vec(),
            1_800_000_000_123_456
        )
    );
    let recalled = tracker
        .recall_key(&tenant, "order-1")
        .expect("recall")
        .expect("remembered");
    assert_eq!((recalled.batch, recalled.receipt), (m.id, key.receipt));
    assert_eq!(
        tracker
            .forget_keys_before(SystemTime::now() + std::time::Duration::from_secs(1 << 30))
            .expect("forget"),
        1
    );
}

/// A database left at schema version 4 (batches without their source partition) is migrated
/// in place on open: its batches read back with no partition, and batches registered or
/// claimed since with theirs, a plain SQL column.
#[test]
fn version_4_batches_have_no_partition_after_the_migration() {
    use wit_batch::SourceKind;
    use wit_tracker::{RangeClaim, RangeOutcome};

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tracker.db");
    let old = meta("acme", SystemTime::now(), 1);
    {
        let tracker = SqliteTracker::open(&path, TrackerConfig::default()).expect("open");
        tracker.register_one(&old).expect("register");
        tracker
            .mark(old.id, Stage::WalWritten, SystemTime::now())
            .expect("mark");
    }
    let conn = rusqlite::Connection::open(&path).expect("sqlite");
    conn.execute_batch(DOWNGRADE_TO_4).expect("downgrade");
    let columns = |conn: &rusqlite::Connection| -> i64 {
        conn.query_row(
            "SELECT count(*) FROM pragma_table_info('batch_tracker') WHERE name = 'partition'",
            [],
            |r| r.get(0),
        )
        .expect("columns")
    };
    assert_eq!(columns(&conn), 0, "back at version 4");

    let tracker = SqliteTracker::open(&path, TrackerConfig::default()).expect("migrate");
    let versions: Vec<i64> = conn
        .prepare("SELECT version FROM wit_schema_version ORDER BY version")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("versions");
    assert_eq!(versions, [1, 2, 3, 4, 5]);
    assert_eq!(columns(&conn), 1);
    let rec = tracker.batch(old.id).expect("batch");
    assert_eq!((rec.stage, rec.meta.partition), (Stage::WalWritten, None));

    let kafka = |partition| {
        let mut m = meta("acme", SystemTime::now(), 1);
        m.source = SourceKind::Kafka;
        m.topics = vec!["logs".into()];
        m.partition = Some(partition);
        m
    };
    let (new, claimed) = (kafka(7), kafka(2));
    tracker.register_one(&new).expect("register");
    let claim = RangeClaim::new(claimed.clone(), "group", "logs", 2, None, 10, SystemTime::now());
    assert_eq!(tracker.claim_ranges(&[claim]).expect("claim"), [RangeOutcome::Claimed]);
    assert_eq!(tracker.batch(new.id).expect("batch").meta.partition, Some(7));
    assert_eq!(tracker.batch(claimed.id).expect("batch").meta.partition, Some(2));
    let partition = |id: wit_batch::BatchId| -> Option<i64> {
        conn.query_row(
            "SELECT \"partition\" FROM batch_tracker WHERE batch_id = ?1",
            [id.to_string()],
            |r| r.get(0),
        )
        .expect("query")
    };
    assert_eq!(
        (partition(old.id), partition(new.id), partition(claimed.id)),
        (None, Some(7), Some(2))
    );
}

/// A key that was not written by the tracker (a hand-edited batch id) is reported as corrupt.
#[test]
fn a_hand_edited_key_is_reported_as_corrupt() {
    use wit_batch::{BatchId, Tenant};
    use wit_tracker::RememberedKey;

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tracker.db");
    let tracker = SqliteTracker::open(&path, TrackerConfig::default()).expect("open");
    let tenant = Tenant::try_new("acme").expect("tenant");
    let key = RememberedKey::new(tenant.clone(), "k", BatchId::new(), vec![1], SystemTime::now());
    tracker.remember_keys(&[key]).expect("remember");
    let conn = rusqlite::Connection::open(&path).expect("sqlite");
    conn.execute("UPDATE idempotency_keys SET batch_id = 'not-a-batch'", [])
        .expect("edit");
    let err = tracker.recall_key(&tenant, "k").expect_err("corrupt");
    assert!(
        matches!(&err, Error::Corrupt { what: "batch id", value, .. } if value == "not-a-batch"),
        "{err:?}"
    );
}

/// Remembering no keys needs no transaction: it succeeds while another connection holds the
/// database's write lock, which a call with a key waits for (up to the timeout).
#[test]
fn an_empty_remember_keys_touches_no_database() {
    use wit_batch::{BatchId, Tenant};
    use wit_tracker::RememberedKey;

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tracker.db");
    let config = TrackerConfig::default().with_timeout(std::time::Duration::from_millis(50));
    let tracker = SqliteTracker::open(&path, config).expect("open");
    let key = RememberedKey::new(
        Tenant::try_new("acme").expect("tenant"),
        "k",
        BatchId::new(),
        vec![],
        SystemTime::now(),
    );
    let conn = rusqlite::Connection::open(&path).expect("sqlite");
    conn.execute_batch("BEGIN EXCLUSIVE").expect("lock");
    tracker.remember_keys(&[]).expect("nothing to write");
    let err = tracker.remember_keys(std::slice::from_ref(&key)).expect_err("locked");
    assert!(
        matches!(
            err,
            Error::Database {
                backend: "sqlite",
                operation: "remember_keys",
                ..
            }
        ),
        "{err:?}"
    );
    conn.execute_batch("ROLLBACK").expect("unlock");
    tracker.remember_keys(std::slice::from_ref(&key)).expect("unlocked");
}

#[test]
fn an_unopenable_path_is_a_typed_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = SqliteTracker::open(&dir.path().join("missing/dir/tracker.db"), TrackerConfig::default())
        .expect_err("no such directory");
    assert!(
        matches!(
            err,
            Error::Database {
                backend: "sqlite",
                operation: "open",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_hand_edited_stage_is_reported_as_corrupt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tracker.db");
    let tracker = SqliteTracker::open(&path, TrackerConfig::default()).expect("open");
    let m = meta("acme", SystemTime::now(), 1);
    tracker.register_one(&m).expect("register");
    let conn = rusqlite::Connection::open(&path).expect("sqlite");
    conn.execute("UPDATE batch_tracker SET stage = 'HALF_DONE'", [])
        .expect("edit");
    let err = tracker.batch(m.id).expect_err("corrupt");
    assert!(
        matches!(&err, Error::Corrupt { what: "stage", value, .. } if value == "HALF_DONE"),
        "{err:?}"
    );
}

/// The Parquet sink publishing into the tracker: the file is catalogued and its batches are
/// `STORED` in the same transaction.
#[test]
fn a_parquet_sink_publishes_into_the_tracker() {
    use std::sync::Arc;
    use wit_batch::otlp::logs;
    use wit_batch::{Compression, PayloadFormat, Signal, Tenant};
    use wit_store::{Destination, FileCatalog, NodeName, ParquetSink, SinkConfig};

    let dir = tempfile::tempdir().expect("tempdir");
    let tracker = SqliteTracker::open(&dir.path().join("tracker.db"), TrackerConfig::default()).expect("open");
    let m = meta("acme", SystemTime::now(), 1);
    tracker.register_one(&m).expect("register");
    for stage in [Stage::WalWritten, Stage::Ingested] {
        tracker.mark(m.id, stage, SystemTime::now()).expect("mark");
    }
    let body = br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":"1700000000000000000","body":{"stringValue":"hello"}}]}]}]}"#;
    let rows = logs::decode(body, PayloadFormat::OtlpJson, Compression::None).expect("decode");

    let mut sink = ParquetSink::open(
        Destination::local(&dir.path().join("data")).expect("dest"),
        SinkConfig::new(NodeName::try_new("node-a").expect("node")),
    )
    .expect("sink")
    .with_catalog(Arc::new(tracker.clone()));
    let tenant = Tenant::try_new("acme").expect("tenant");
    sink.write(&tenant, Signal::Logs, &rows, &[m.id]).expect("write");
    let files = sink.flush().expect("flush");
    assert_eq!(tracker.batch(m.id).expect("batch").stage, Stage::Stored);
    assert_eq!(tracker.list(&tenant, Signal::Logs, None).expect("list"), files);
    assert!(dir.path().join("data").join(&files[0].path).exists());

    // A batch the tracker does not know: the file stays staged, nothing is catalogued.
    let ghost = wit_batch::BatchId::new();
    sink.write(&tenant, Signal::Logs, &rows, &[ghost]).expect("write");
    let err = sink.flush().expect_err("unknown batch");
    assert!(matches!(err, wit_store::Error::Catalog { .. }), "{err}");
    assert_eq!(sink.pending().len(), 1);
    assert_eq!(tracker.list(&tenant, Signal::Logs, None).expect("list").len(), 1);
}

/// Compaction through the tracker's catalog: the merged file replaces the small ones in one
/// transaction, and they are deleted only after the grace period.
#[test]
fn compaction_swaps_files_through_the_tracker() {
    use std::sync::Arc;
    use std::time::Duration;
    use wit_batch::otlp::logs;
    use wit_batch::{Compression, PayloadFormat, Signal, Tenant};
    use wit_store::{Destination, FileCatalog, Maintenance, NodeName, ParquetSink, SinkConfig};

    let dir = tempfile::tempdir().expect("tempdir");
    let tracker = SqliteTracker::open(&dir.path().join("tracker.db"), TrackerConfig::default()).expect("open");
    let data = dir.path().join("data");
    let config = SinkConfig::new(NodeName::try_new("node-a").expect("node"));
    let mut sink = ParquetSink::open(Destination::local(&data).expect("dest"), config.clone())
        .expect("sink")
        .with_catalog(Arc::new(tracker.clone()));
    let tenant = Tenant::try_new("acme").expect("tenant");
    let mut ids = Vec::new();
    for second in 0..3 {
        let m = meta("acme", SystemTime::now(), 1);
        tracker.register_one(&m).expect("register");
        for stage in [Stage::WalWritten, Stage::Ingested] {
            tracker.mark(m.id, stage, SystemTime::now()).expect("mark");
        }
        let body = format!(
            r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{{"timeUnixNano":"17000000{second}0000000000","body":{{"stringValue":"x"}}}}]}}]}}]}}"#
        );
        let rows = logs::decode(body.as_bytes(), PayloadFormat::OtlpJson, Compression::None).expect("decode");
        sink.write(&tenant, Signal::Logs, &rows, &[m.id]).expect("write");
        sink.flush().expect("flush");
        ids.push(m.id);
    }
    let before = tracker.list(&tenant, Signal::Logs, None).expect("list");
    assert_eq!(before.len(), 3);

    let now = SystemTime::now();
    let maintenance = Maintenance::new(
        Destination::local(&data).expect("dest"),
        Arc::new(tracker.clone()),
        config,
    )
    .with_grace(Duration::from_secs(300));
    let report = maintenance
        .compact(&tenant, Signal::Logs, 64 << 20, now)
        .expect("compact");
    assert_eq!((report.retired.len(), report.published.len()), (3, 1));
    let after = tracker.list(&tenant, Signal::Logs, None).expect("list");
    assert_eq!(after, report.published);
    ids.sort();
    assert_eq!(after[0].batch_ids, ids);
    assert_eq!(after[0].rows, 3);
    assert!(
        ids.iter()
            .all(|id| tracker.batch(*id).expect("batch").stage == Stage::Stored)
    );
    assert_eq!(maintenance.delete_retired(now).expect("too early"), 0);
    assert!(before.iter().all(|f| data.join(&f.path).exists()));
    assert_eq!(
        maintenance
            .delete_retired(now + Duration::from_secs(301))
            .expect("delete"),
        3
    );
    assert!(before.iter().all(|f| !data.join(&f.path).exists()));
}
