//! The hot tier: acknowledged rows are queryable (wit-query) before their file is published,
//! and counted exactly once before, while and after they move to Parquet.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wit_batch::{BatchKey, Signal, SourceKind, Tenant};
use wit_pipeline::AckLevel;
use wit_query::{HotTier, QueryConfig, QueryEngine, Session};
use wit_store::{Destination, FileCatalog, NodeName, SinkConfig};

use crate::support::{self, config, proto, spans};

const LONG: Duration = Duration::from_secs(30);

fn acme() -> Tenant {
    Tenant::try_new("acme").expect("tenant")
}

/// `(count(*), count(DISTINCT span_id))` of the spans table.
fn counts(session: &Session) -> (u64, u64) {
    let rows = session
        .blocking_sql("SELECT count(*) AS n, count(DISTINCT span_id) AS d FROM spans")
        .expect("query")
        .to_json_rows()
        .expect("json");
    (rows[0]["n"].as_u64().expect("n"), rows[0]["d"].as_u64().expect("d"))
}

#[test]
fn acknowledged_rows_are_queryable_before_they_are_stored_and_counted_once_throughout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tracker = support::sqlite(dir.path());
    let hot = HotTier::new(64 << 20);
    let node = NodeName::try_new("node-a").expect("node");
    // Files stay open for ten minutes: only `flush` publishes them.
    let config = config(dir.path())
        .with_sink(SinkConfig::new(node).with_max_file_age(Duration::from_secs(600)))
        .with_hot_tier(hot.clone());
    let pipeline = support::open(dir.path(), config, tracker.clone());
    let destination = Destination::local(&dir.path().join("data")).expect("destination");
    let engine = QueryEngine::with_config(
        tracker.clone(),
        &destination,
        QueryConfig::default().with_hot_tier(hot.clone()),
    )
    .expect("engine");
    let session = engine.session(&acme());
    let key = BatchKey::new(acme(), Signal::Traces, SourceKind::Http);

    // Acknowledged at WAL durability, nothing published yet: the rows come from memory.
    let mut next = 0u64;
    for _ in 0..5 {
        let ids: Vec<u64> = (next..next + 10).collect();
        next += 10;
        let ack = pipeline
            .blocking_submit(&key, proto(spans(&ids), 1), AckLevel::WalDurable)
            .expect("submit");
        ack.wait_timeout(LONG).expect("in time").expect("durable");
    }
    let acked_at = Instant::now();
    loop {
        let (n, distinct) = counts(&session);
        assert!(n <= 50 && n == distinct, "{n} rows, {distinct} distinct");
        if n == 50 {
            break;
        }
        assert!(
            acked_at.elapsed() < LONG,
            "acknowledged rows never became visible ({n} of 50)"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!(
        "50 acknowledged rows visible {:?} after the last acknowledgment",
        acked_at.elapsed()
    );
    assert!(
        tracker.list(&acme(), Signal::Traces, None).expect("list").is_empty(),
        "no file yet"
    );
    assert_eq!(hot.stats().rows, 50);
    // A search sees them too (by scan: they have no file, no index).
    let found = session
        .blocking_sql("SELECT count(*) AS n FROM spans WHERE search('op-3')")
        .expect("search")
        .to_json_rows()
        .expect("json");
    assert_eq!(found[0]["n"], (0..50).filter(|i| i % 7 == 3).count() as u64);

    // Rows move to Parquet while readers query: never twice, never missing once seen.
    let submitted = Arc::new(AtomicU64::new(50));
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (session, submitted, stop) = (session.clone(), submitted.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut seen, mut queries) = (0u64, 0u64);
                while !stop.load(Ordering::SeqCst) {
                    let upper = submitted.load(Ordering::SeqCst);
                    let (n, distinct) = counts(&session);
                    assert_eq!(n, distinct, "a row counted twice");
                    assert!(n <= upper, "{n} rows of {upper} submitted");
                    assert!(n >= seen, "rows went missing: {seen} seen, then {n}");
                    seen = n;
                    queries += 1;
                }
                queries
            })
        })
        .collect();
    for round in 0..8 {
        let ids: Vec<u64> = (next..next + 10).collect();
        next += 10;
        submitted.store(next, Ordering::SeqCst);
        let ack = pipeline
            .blocking_submit(&key, proto(spans(&ids), 1), AckLevel::WalDurable)
            .expect("submit");
        ack.wait_timeout(LONG).expect("in time").expect("durable");
        if round % 2 == 1 {
            pipeline.flush().expect("flush");
        }
    }
    pipeline.flush().expect("flush");
    // The flush is asynchronous: wait until every row is in a published file.
    let deadline = Instant::now() + LONG;
    let stored = || -> u64 {
        let files = tracker.list(&acme(), Signal::Traces, None).expect("list");
        files.iter().map(|f| f.rows).sum()
    };
    while stored() < next {
        assert!(
            Instant::now() < deadline,
            "everything is stored: {} of {next}",
            stored()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // A stored batch leaves the hot tier once its file is published.
    while hot.stats().rows > 0 {
        assert!(
            Instant::now() < deadline,
            "stored rows leave the hot tier: {:?}",
            hot.stats()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::SeqCst);
    for reader in readers {
        let queries = reader.join().expect("reader");
        assert!(queries > 0);
    }
    // All of it from the files now, exactly once.
    assert_eq!(stored(), next);
    assert_eq!(counts(&session), (next, next));
    assert_eq!(hot.stats().dropped_batches, 0);
    pipeline.close().expect("close");
}

#[test]
fn the_hot_tier_stays_within_its_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tracker = support::sqlite(dir.path());
    let hot = HotTier::new(1);
    let node = NodeName::try_new("node-a").expect("node");
    let config = config(dir.path())
        .with_sink(SinkConfig::new(node).with_max_file_age(Duration::from_secs(600)))
        .with_hot_tier(hot.clone());
    let pipeline = support::open(dir.path(), config, tracker.clone());
    let key = BatchKey::new(acme(), Signal::Traces, SourceKind::Http);
    for i in 0..3u64 {
        let ack = pipeline
            .blocking_submit(&key, proto(spans(&[i]), 1), AckLevel::WalDurable)
            .expect("submit");
        ack.wait_timeout(LONG).expect("in time").expect("durable");
    }
    let deadline = Instant::now() + LONG;
    while hot.stats().dropped_batches < 3 {
        assert!(Instant::now() < deadline, "{:?}", hot.stats());
        std::thread::sleep(Duration::from_millis(5));
    }
    // Over the bound nothing is held, and nothing acknowledged is lost: it is stored.
    assert_eq!(hot.stats().rows, 0);
    pipeline.flush().expect("flush");
    let stored = || -> u64 {
        let files = tracker.list(&acme(), Signal::Traces, None).expect("list");
        files.iter().map(|f| f.rows).sum()
    };
    while stored() < 3 {
        assert!(Instant::now() < deadline, "the rows are stored");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(stored(), 3);
    pipeline.close().expect("close");
}
