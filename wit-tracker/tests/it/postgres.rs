//! What is particular to the PostgreSQL tracker: seed 000's queries, outages, migrations.

use std::time::{Duration, SystemTime};

use wit_batch::{Stage, Transition};
use wit_tracker::{Advance, AsyncTracker, Error, PostgresTracker, Tracker, TrackerConfig, TrackerExt};

use crate::conformance::meta;
use crate::pg_server::PgServer;

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
    assert_eq!(sql("SELECT version FROM wit_schema_version").trim(), "1");
    PostgresTracker::connect(&params, TrackerConfig::default()).expect("reopen");
    assert_eq!(sql("SELECT count(*) FROM wit_schema_version").trim(), "1");

    sql("INSERT INTO wit_schema_version (version, description) VALUES (99, 'from the future')");
    let err = PostgresTracker::connect(&params, TrackerConfig::default()).expect_err("too new");
    assert!(
        matches!(
            err,
            Error::SchemaTooNew {
                found: 99,
                supported: 1
            }
        ),
        "{err:?}"
    );
}

#[test]
fn bad_connection_parameters_are_a_typed_error() {
    let err = PostgresTracker::connect("host=127.0.0.1 port=notaport", TrackerConfig::default()).expect_err("bad");
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
}
