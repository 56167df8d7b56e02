//! What is particular to the PostgreSQL tracker: seed 000's queries, outages, migrations.

use std::time::{Duration, SystemTime};

use wit_batch::{Stage, Transition};
use wit_tracker::{Advance, AsyncTracker, Error, PostgresTracker, Tracker, TrackerConfig, TrackerExt, WalPosition};

use crate::pg_server::PgServer;
use wit_tracker::conformance::meta;

/// The schema named in connection parameters made by `PgServer::fresh_schema`.
fn schema_of(params: &str) -> String {
    params
        .rsplit("search_path=")
        .next()
        .expect("schema")
        .trim_end_matches('\'')
        .to_owned()
}

/// Seed 000's monitoring queries, as written there, against the table the tracker keeps.
#[test]
fn seed_monitoring_queries_run_unchanged() {
    let Some(server) = PgServer::shared() else { return };
    let params = server.fresh_schema("seed");
    let schema = schema_of(&params);
    let tracker = PostgresTracker::connect(&params, TrackerConfig::default()).expect("connect");
    let now = SystemTime::now();
    let stuck = meta("acme", now - Duration::from_secs(2 * 3600), 40);
    let fresh = meta("acme", now - Duration::from_secs(60), 60);
    let other = meta("umbrella", now - Duration::from_secs(30), 7);
    Tracker::register(&tracker, &[stuck.clone(), fresh.clone(), other.clone()]).expect("register");
    tracker.mark(stuck.id, Stage::WalWritten, now).expect("mark");
    for stage in [
        Stage::WalWritten,
        Stage::Ingested,
        Stage::Stored,
        Stage::Indexed,
        Stage::Completed,
    ] {
        tracker.mark(fresh.id, stage, now).expect("mark");
    }

    let sql = |query: &str| server.psql("wit", &format!("SET search_path = {schema}; {query}"));
    let incomplete = sql("SELECT batch_id, client_id, created_at, message_count,
       kafka_pip, wal_pip, ingestion_pip, storage_pip, index_pip
FROM batch_tracker
WHERE NOT janitor_pip
  AND created_at < NOW() - INTERVAL '60 minutes';");
    let lines: Vec<&str> = incomplete.lines().collect();
    assert_eq!(lines.len(), 1, "{incomplete}");
    assert!(lines[0].starts_with(&format!("{}|acme|", stuck.id)), "{incomplete}");
    assert!(lines[0].ends_with("|40|f|t|f|f|f"), "{incomplete}");

    let stages = sql("SELECT
  COUNT(*) as total_batches,
  SUM(CASE WHEN kafka_pip THEN 1 ELSE 0 END) as kafka_complete,
  SUM(CASE WHEN wal_pip THEN 1 ELSE 0 END) as wal_complete,
  SUM(CASE WHEN ingestion_pip THEN 1 ELSE 0 END) as ingestion_complete,
  SUM(CASE WHEN storage_pip THEN 1 ELSE 0 END) as storage_complete,
  SUM(CASE WHEN index_pip THEN 1 ELSE 0 END) as index_complete,
  SUM(CASE WHEN janitor_pip THEN 1 ELSE 0 END) as janitor_complete
FROM batch_tracker
WHERE created_at > NOW() - INTERVAL '1 hour';");
    assert_eq!(stages.trim(), "2|0|1|1|1|1|1");

    let clients = sql("SELECT
  client_id,
  COUNT(*) as batches,
  SUM(message_count) as total_messages,
  SUM(message_count) / 3600.0 as messages_per_second
FROM batch_tracker
WHERE created_at > NOW() - INTERVAL '1 hour'
GROUP BY client_id
ORDER BY messages_per_second DESC;");
    let lines: Vec<&str> = clients.lines().collect();
    assert_eq!(lines.len(), 2, "{clients}");
    assert!(lines[0].starts_with("acme|1|60|0.0166"), "{clients}");
    assert!(lines[1].starts_with("umbrella|1|7|"), "{clients}");

    // The stored files are in SQL too.
    assert_eq!(sql("SELECT count(*) FROM stored_files").trim(), "0");
}

/// The server stops in the middle of work: typed errors, nothing half-applied, and the same
/// tracker works again once the server is back.
#[test]
fn database_outage_gives_typed_errors_and_recovers() {
    let Some(server) = PgServer::start(false) else { return };
    let params = format!("{} connect_timeout=2", server.schema("outage"));
    let config = TrackerConfig::default().with_timeout(Duration::from_secs(2));
    let tracker = PostgresTracker::connect(&params, config).expect("connect");
    let before = meta("acme", SystemTime::now(), 1);
    tracker.register_one(&before).expect("register");

    server.stop();
    Tracker::remember_keys(&tracker, &[]).expect("remembering no keys touches no database");
    let during = meta("acme", SystemTime::now(), 1);
    let err = tracker.register_one(&during).expect_err("server is down");
    assert!(err.is_unavailable(), "{err:?}");
    let err = tracker
        .mark(before.id, Stage::WalWritten, SystemTime::now())
        .expect_err("down");
    assert!(
        matches!(
            err,
            Error::Unavailable {
                backend: "postgres",
                operation: "advance",
                ..
            }
        ),
        "{err:?}"
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let err = runtime
        .block_on(AsyncTracker::batch(&tracker, before.id))
        .expect_err("down, async too");
    assert!(err.is_unavailable(), "{err:?}");
    let err = PostgresTracker::connect(&params, TrackerConfig::default().with_timeout(Duration::from_secs(2)))
        .expect_err("cannot connect");
    assert!(err.is_unavailable(), "{err:?}");

    server.start_again();
    // The same tracker, without a restart: the broken connections are replaced.
    let rec = Tracker::batch(&tracker, before.id).expect("back");
    assert_eq!(
        rec.stage,
        Stage::Created,
        "the step tried during the outage was not applied"
    );
    assert!(matches!(
        Tracker::batch(&tracker, during.id),
        Err(Error::UnknownBatch { .. })
    ));
    assert_eq!(
        tracker
            .mark(before.id, Stage::WalWritten, SystemTime::now())
            .expect("mark"),
        Transition::Applied
    );
    assert_eq!(
        runtime
            .block_on(AsyncTracker::advance(
                &tracker,
                &[Advance::new(before.id, Stage::Ingested, SystemTime::now())]
            ))
            .expect("async"),
        [Transition::Applied]
    );
}

#[test]
fn migrations_apply_once_and_refuse_a_newer_schema() {
    let Some(server) = PgServer::shared() else { return };
    let params = server.fresh_schema("migrations");
    let schema = schema_of(&params);
    // Two nodes opening the same fresh database at once: the advisory lock serializes them.
    std::thread::scope(|s| {
        let a = s.spawn(|| PostgresTracker::connect(&params, TrackerConfig::default()).map(drop));
        let b = s.spawn(|| PostgresTracker::connect(&params, TrackerConfig::default()).map(drop));
        a.join().expect("a").expect("node a");
        b.join().expect("b").expect("node b");
    });
    let sql = |q: &str| server.psql("wit", &format!("SET search_path = {schema}; {q}"));
    assert_eq!(
        sql("SELECT version FROM wit_schema_version ORDER BY version").trim(),
        "1\n2\n3\n4\n5"
    );
    PostgresTracker::connect(&params, TrackerConfig::default()).expect("reopen");
    assert_eq!(sql("SELECT count(*) FROM wit_schema_version").trim(), "5");

    sql("INSERT INTO wit_schema_version (version, description) VALUES (99, 'from the future')");
    let err = PostgresTracker::connect(&params, TrackerConfig::default()).expect_err("too new");
    assert!(
        matches!(
            err,
            Error::SchemaTooNew {
                found: 99,
                supported: 5
            }
        ),
        "{err:?}"
    );
}

/// A schema left at version 1 (WAL positions without their node) is migrated on connect:
/// its positions read back with an empty node and hold back every node's log until their
/// batches are stored. The watermark query reads the partial index.
#[test]
fn version_1_positions_hold_every_log_after_the_migration() {
    let Some(server) = PgServer::shared() else { return };
    let params = server.fresh_schema("migrate_v1");
    let schema = schema_of(&params);
    let sql = |q: &str| server.psql("wit", &format!("SET search_path = {schema}; {q}"));
    let old = meta("acme", SystemTime::now(), 1);
    {
        let tracker = PostgresTracker::connect(&params, TrackerConfig::default()).expect("connect");
        tracker.register_one(&old).expect("register");
        Tracker::advance(
            &tracker,
            &[Advance::new(old.id, Stage::WalWritten, SystemTime::now()).with_wal_position("x", 7)],
        )
        .expect("advance");
    }
    sql(&format!(
        "{DOWNGRADE_TO_4}{DOWNGRADE_TO_3}{DOWNGRADE_TO_2}
         DROP INDEX batch_tracker_wal;
         ALTER TABLE batch_tracker DROP COLUMN wal_node;
         CREATE INDEX batch_tracker_wal ON batch_tracker (wal_position) WHERE stage <> 'COMPLETED';
         DELETE FROM wit_schema_version WHERE version = 2;"
    ));

    let tracker = PostgresTracker::connect(&params, TrackerConfig::default()).expect("migrate");
    assert_eq!(
        sql("SELECT version FROM wit_schema_version ORDER BY version").trim(),
        "1\n2\n3\n4\n5"
    );
    assert_eq!(
        Tracker::batch(&tracker, old.id).expect("batch").wal_position,
        Some(WalPosition::new("", 7))
    );
    let new = meta("acme", SystemTime::now(), 1);
    tracker.register_one(&new).expect("register");
    Tracker::advance(
        &tracker,
        &[Advance::new(new.id, Stage::WalWritten, SystemTime::now()).with_wal_position("node-a", 3)],
    )
    .expect("advance");
    let oldest = |node: &str| Tracker::oldest_unstored_wal_position(&tracker, node).expect("oldest");
    assert_eq!((oldest("node-a"), oldest("node-b")), (Some(3), Some(7)));
    tracker.mark(old.id, Stage::Ingested, SystemTime::now()).expect("mark");
    assert_eq!(
        sql(&format!(
            "SELECT wal_node IS NULL FROM batch_tracker WHERE batch_id = '{}'",
            old.id
        ))
        .trim(),
        "t"
    );
    tracker.mark(old.id, Stage::Stored, SystemTime::now()).expect("mark");
    assert_eq!((oldest("node-a"), oldest("node-b")), (Some(3), None));

    // With sequential scans priced out, the watermark's query is answered from the partial
    // index: its conditions imply the index's.
    let plan = sql("SET enable_seqscan = off; EXPLAIN SELECT min(lsn) FROM (\
         SELECT min(wal_position) AS lsn FROM batch_tracker \
         WHERE wal_node = 'node-a' AND wal_position IS NOT NULL \
         AND stage IN ('CREATED', 'WAL_WRITTEN', 'SOURCE_COMMITTED', 'INGESTED') \
         UNION ALL SELECT min(wal_position) FROM batch_tracker \
         WHERE wal_node IS NULL AND wal_position IS NOT NULL \
         AND stage IN ('CREATED', 'WAL_WRITTEN', 'SOURCE_COMMITTED', 'INGESTED')) AS oldest");
    assert_eq!(plan.matches("batch_tracker_wal").count(), 2, "{plan}");
    assert!(!plan.contains("Seq Scan"), "{plan}");
}

/// Undoes schema version 5: the batches' source partition.
const DOWNGRADE_TO_4: &str = "ALTER TABLE batch_tracker DROP COLUMN \"partition\";
     DELETE FROM wit_schema_version WHERE version = 5;";

/// Undoes schema version 4: the idempotency keys' table (its index goes with it).
const DOWNGRADE_TO_3: &str = "DROP TABLE idempotency_keys;
     DELETE FROM wit_schema_version WHERE version = 4;";

/// Undoes schema version 3: the files' index columns and their partial index.
const DOWNGRADE_TO_2: &str = "DROP INDEX stored_files_unindexed;
     ALTER TABLE stored_files DROP COLUMN index_path, DROP COLUMN index_bytes, DROP COLUMN index_docs,
         DROP COLUMN index_checksum;
     DELETE FROM wit_schema_version WHERE version = 3;";

/// A schema left at version 2 (files without index columns) is migrated in place on connect:
/// its files read back with no index, are listed as unindexed, and can be indexed, which
/// marks their stored batches `INDEXED`. The unindexed files are read from their partial index.
#[test]
fn version_2_files_have_no_index_after_the_migration() {
    use wit_batch::{Signal, Tenant};
    use wit_store::{FileCatalog, FileIndex, StoredFile, TimeRange};

    let Some(server) = PgServer::shared() else { return };
    let params = server.fresh_schema("migrate_v2");
    let schema = schema_of(&params);
    let sql = |q: &str| server.psql("wit", &format!("SET search_path = {schema}; {q}"));
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
        let tracker = PostgresTracker::connect(&params, TrackerConfig::default()).expect("connect");
        tracker.register_one(&m).expect("register");
        for stage in [Stage::WalWritten, Stage::Ingested] {
            tracker.mark(m.id, stage, SystemTime::now()).expect("mark");
        }
        tracker.publish(std::slice::from_ref(&file)).expect("publish");
    }
    sql(&format!("{DOWNGRADE_TO_4}{DOWNGRADE_TO_3}{DOWNGRADE_TO_2}"));
    assert_eq!(
        sql("SELECT count(*) FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = 'stored_files' AND column_name LIKE 'index_%'")
        .trim(),
        "0",
        "back at version 2"
    );

    let tracker = PostgresTracker::connect(&params, TrackerConfig::default()).expect("migrate");
    assert_eq!(
        sql("SELECT version FROM wit_schema_version ORDER BY version").trim(),
        "1\n2\n3\n4\n5"
    );
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
    assert_eq!(Tracker::batch(&tracker, m.id).expect("batch").stage, Stage::Indexed);
    assert!(tracker.unindexed(10).expect("unindexed").is_empty());
    let listed = tracker.list(&tenant, Signal::Logs, None).expect("list");
    assert_eq!(
        listed[0].index.as_ref(),
        Some(&index),
        "a checksum above i32::MAX reads back"
    );
    assert_eq!(
        sql(&format!(
            "SELECT index_pip, stage FROM batch_tracker WHERE batch_id = '{}'",
            m.id
        ))
        .trim(),
        "t|INDEXED"
    );

    // With sequential scans priced out, the unindexed files come from the partial index.
    let plan = sql("SET enable_seqscan = off; EXPLAIN SELECT path FROM stored_files \
         WHERE state = 'live' AND index_path IS NULL ORDER BY path LIMIT 10");
    assert!(plan.contains("stored_files_unindexed"), "{plan}");
}

/// A schema left at version 3 (no idempotency keys) is migrated in place on connect: its
/// batches are as they were, and keys are remembered (plain SQL rows), recalled and forgotten.
/// A recall reads the primary key, a purge the index on `created_at`.
#[test]
fn version_3_schemas_remember_keys_after_the_migration() {
    use wit_batch::Tenant;
    use wit_tracker::RememberedKey;

    let Some(server) = PgServer::shared() else { return };
    let params = server.fresh_schema("migrate_v3");
    let schema = schema_of(&params);
    let sql = |q: &str| server.psql("wit", &format!("SET search_path = {schema}; {q}"));
    let m = meta("acme", SystemTime::now(), 1);
    {
        let tracker = PostgresTracker::connect(&params, TrackerConfig::default()).expect("connect");
        tracker.register_one(&m).expect("register");
        tracker.mark(m.id, Stage::WalWritten, SystemTime::now()).expect("mark");
    }
    sql(&format!("{DOWNGRADE_TO_4}{DOWNGRADE_TO_3}"));
    let tables = || {
        sql(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = current_schema() AND c.relname IN ('idempotency_keys', 'idempotency_keys_created')",
        )
    };
    assert_eq!(tables().trim(), "0", "back at version 3");

    let tracker = PostgresTracker::connect(&params, TrackerConfig::default()).expect("migrate");
    assert_eq!(
        sql("SELECT version FROM wit_schema_version ORDER BY version").trim(),
        "1\n2\n3\n4\n5"
    );
    assert_eq!(tables().trim(), "2", "the table and its index on created_at");
    assert_eq!(Tracker::batch(&tracker, m.id).expect("batch").stage, Stage::WalWritten);

    let tenant = Tenant::try_new("acme").expect("tenant");
    let when = SystemTime::UNIX_EPOCH + Duration::new(1_800_000_000, 123_456_789);
    let key = RememberedKey::new(tenant.clone(), "order-1", m.id, &b"\x00receipt\xff"[..], when);
    Tracker::remember_keys(&tracker, std::slice::from_ref(&key)).expect("remember");
    assert_eq!(
        sql("SELECT tenant, idem_key, batch_id, encode(receipt, 'hex'), \
             (extract(epoch FROM created_at) * 1000000)::int8 FROM idempotency_keys")
        .trim(),
        format!("acme|order-1|{}|0072656365697074ff|1800000000123456", m.id)
    );
    let recalled = Tracker::recall_key(&tracker, &tenant, "order-1")
        .expect("recall")
        .expect("remembered");
    assert_eq!((recalled.batch, recalled.receipt), (m.id, key.receipt));

    // With sequential scans priced out, a recall reads the primary key and a purge the index
    // on created_at.
    let plan = sql(
        "SET enable_seqscan = off; EXPLAIN SELECT batch_id, receipt, created_at FROM idempotency_keys \
         WHERE tenant = 'acme' AND idem_key = 'order-1'",
    );
    assert!(plan.contains("idempotency_keys_pkey"), "{plan}");
    let plan = sql("SET enable_seqscan = off; EXPLAIN DELETE FROM idempotency_keys WHERE created_at < now()");
    assert!(plan.contains("idempotency_keys_created"), "{plan}");

    let far = SystemTime::now() + Duration::from_secs(1 << 30);
    assert_eq!(Tracker::forget_keys_before(&tracker, far).expect("forget"), 1);
    assert_eq!(sql("SELECT count(*) FROM idempotency_keys").trim(), "0");
}

/// A schema left at version 4 (batches without their source partition) is migrated in place
/// on connect: its batches read back with no partition, and batches registered or claimed
/// since with theirs, a plain SQL column.
#[test]
fn version_4_batches_have_no_partition_after_the_migration() {
    use wit_batch::SourceKind;
    use wit_tracker::{RangeClaim, RangeOutcome};

    let Some(server) = PgServer::shared() else { return };
    let params = server.fresh_schema("migrate_v4");
    let schema = schema_of(&params);
    let sql = |q: &str| server.psql("wit", &format!("SET search_path = {schema}; {q}"));
    let old = meta("acme", SystemTime::now(), 1);
    {
        let tracker = PostgresTracker::connect(&params, TrackerConfig::default()).expect("connect");
        tracker.register_one(&old).expect("register");
        tracker
            .mark(old.id, Stage::WalWritten, SystemTime::now())
            .expect("mark");
    }
    sql(DOWNGRADE_TO_4);
    let columns = || {
        sql("SELECT count(*) FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = 'batch_tracker' AND column_name = 'partition'")
    };
    assert_eq!(columns().trim(), "0", "back at version 4");

    let tracker = PostgresTracker::connect(&params, TrackerConfig::default()).expect("migrate");
    assert_eq!(
        sql("SELECT version FROM wit_schema_version ORDER BY version").trim(),
        "1\n2\n3\n4\n5"
    );
    assert_eq!(columns().trim(), "1");
    let rec = Tracker::batch(&tracker, old.id).expect("batch");
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
    assert_eq!(
        Tracker::claim_ranges(&tracker, &[claim]).expect("claim"),
        [RangeOutcome::Claimed]
    );
    assert_eq!(Tracker::batch(&tracker, new.id).expect("batch").meta.partition, Some(7));
    assert_eq!(
        Tracker::batch(&tracker, claimed.id).expect("batch").meta.partition,
        Some(2)
    );
    let partition = |id: wit_batch::BatchId| {
        sql(&format!(
            "SELECT coalesce(\"partition\"::text, 'NULL') FROM batch_tracker WHERE batch_id = '{id}'"
        ))
        .trim()
        .to_owned()
    };
    assert_eq!(
        (partition(old.id), partition(new.id), partition(claimed.id)),
        ("NULL".to_owned(), "7".to_owned(), "2".to_owned())
    );
}

#[test]
fn bad_connection_parameters_are_a_typed_error() {
    let err = PostgresTracker::connect("host=127.0.0.1 port=notaport", TrackerConfig::default()).expect_err("bad");
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
}

/// Connected on the host's runtime, the tracker does its I/O there: both sides work, and with
/// that runtime shut down its calls are refused as unavailable (a tracker with a runtime of
/// its own would go on).
#[test]
fn a_tracker_connected_on_the_hosts_runtime_does_its_io_there() {
    let Some(server) = PgServer::shared() else { return };
    let params = server.fresh_schema("hosted");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let tracker = runtime
        .block_on(PostgresTracker::connect_on(
            runtime.handle().clone(),
            &params,
            TrackerConfig::default(),
        ))
        .expect("connect");
    let batch = meta("acme", SystemTime::now(), 3);
    Tracker::register(&tracker, std::slice::from_ref(&batch)).expect("blocking side, from a thread of ours");
    let record = runtime
        .block_on(AsyncTracker::batch(&tracker, batch.id))
        .expect("async side");
    assert_eq!((record.meta.id, record.stage), (batch.id, Stage::Created));

    runtime.shutdown_timeout(Duration::from_secs(5));
    let err = Tracker::batch(&tracker, batch.id).expect_err("the host's runtime is gone");
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
}
