//! Compaction and retention while queries run: no query fails, none sees a row twice or
//! misses one, and files are deleted only after their grace period.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use prost::Message;
use wit_batch::Signal;
use wit_index::Indexer;
use wit_store::{Maintenance, NodeName, SinkConfig};

use crate::{Store, acme, data, decode, scalar};

#[test]
fn queries_during_compaction_and_retention_never_fail_or_miscount() {
    let store = Store::new();
    let indexer = Arc::new(Indexer::new(store.destination.clone()));
    // Six files of one hour's logs, each indexed.
    for request in data::logs(1, 120, 11).into_iter().take(3) {
        let batch = decode(Signal::Logs, &request.encode_to_vec());
        for part in 0..2 {
            let half = batch.slice(part * 60, 60);
            let file = store.write(&acme(), Signal::Logs, &[half]).remove(0);
            indexer.index_and_record(store.catalog.as_ref(), &file).expect("index");
        }
    }
    let old = store.catalog.list(&acme(), Signal::Logs, None).expect("list");
    assert_eq!(old.len(), 6);
    let engine = store.engine();
    let session = engine.session(&acme());
    let count = "SELECT count(*) FROM logs";
    let distinct = "SELECT count(DISTINCT CAST(CAST(timestamp AS BIGINT) AS VARCHAR) || body['str']) FROM logs";
    let searched = "SELECT count(*) FROM logs WHERE search('failed OR timeout')";
    let expected: Vec<serde_json::Value> = [count, distinct, searched]
        .iter()
        .map(|q| scalar(&session, q))
        .collect();
    assert_eq!(expected[0], 360);

    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (session, done, expected) = (session.clone(), done.clone(), expected.clone());
            std::thread::spawn(move || {
                let mut rounds = 0u64;
                while !done.load(Ordering::Acquire) || rounds < 3 {
                    for (q, want) in [count, distinct, searched].iter().zip(&expected) {
                        let got = session.blocking_sql(q).unwrap_or_else(|e| panic!("{q} failed: {e}"));
                        let got = got.to_json_rows().expect("json")[0].values().next().cloned();
                        assert_eq!(got.as_ref(), Some(want), "{q} in round {rounds}");
                    }
                    rounds += 1;
                }
                rounds
            })
        })
        .collect();

    let now = SystemTime::now();
    let grace = Duration::from_secs(600);
    let node = NodeName::try_new("node-a").expect("node");
    let maintenance = Maintenance::new(store.destination.clone(), store.catalog.clone(), SinkConfig::new(node))
        .with_indexer(indexer.clone())
        .with_grace(grace);
    let report = maintenance
        .compact(&acme(), Signal::Logs, 64 << 20, now)
        .expect("compact");
    assert_eq!((report.retired.len(), report.published.len()), (6, 1));
    // Nothing is deleted within the grace period, whoever asks.
    assert_eq!(maintenance.delete_retired(now + grace / 2).expect("janitor"), 0);
    std::thread::sleep(Duration::from_millis(300));
    done.store(true, Ordering::Release);
    for reader in readers {
        assert!(reader.join().expect("reader") >= 3);
    }
    for file in &old {
        assert!(
            store.destination.read(&file.path).is_ok(),
            "{} kept through grace",
            file.path
        );
    }
    assert_eq!(store.catalog.list(&acme(), Signal::Logs, None).expect("list").len(), 1);
    for (q, want) in [count, distinct, searched].iter().zip(&expected) {
        assert_eq!(&scalar(&session, q), want, "{q} after the swap");
    }

    // Retention retires the (year-old) file; a query then sees no rows, and fails in no way,
    // while the file itself stays until its grace has passed.
    let retired = maintenance
        .apply_retention(&acme(), Duration::from_secs(30 * 86_400), now)
        .expect("retention");
    assert_eq!(retired, 1);
    assert_eq!(scalar(&session, count), 0);
    let merged = &report.published[0];
    assert!(store.destination.read(&merged.path).is_ok());
    assert_eq!(
        maintenance
            .delete_retired(now + grace + Duration::from_secs(1))
            .expect("delete"),
        7
    );
    assert!(store.destination.read(&merged.path).is_err());
    assert_eq!(scalar(&session, count), 0);
}
