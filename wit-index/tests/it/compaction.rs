//! Searches while compaction merges indexed files: every answer complete, through an index,
//! during the swap and through the grace period; the old blobs deleted with their files.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use wit_batch::{PayloadFormat, Signal};
use wit_index::{Indexer, SearchedBy, Searcher};
use wit_store::{FileCatalog, Maintenance};

use crate::{Rec, Store, decode, logs_json, query, sink_config, tenant};

/// `n` rows, one in three with `needle` in its body and `user.id=u-7`.
fn rows(n: usize, file: usize) -> String {
    let bodies: Vec<String> = (0..n)
        .map(|i| {
            if i % 3 == 0 {
                format!("file {file} row {i}: needle found at 10.0.{file}.{i}:80")
            } else {
                format!("file {file} row {i}: nothing here")
            }
        })
        .collect();
    let records: Vec<Rec<'_>> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let attrs: &[(&str, &str)] = if i % 3 == 0 { &[("user.id", "u-7")] } else { &[] };
            ("svc", b.as_str(), "INFO", attrs)
        })
        .collect();
    logs_json(&records)
}

#[test]
fn searches_during_compaction_always_see_every_row_through_an_index() {
    let store = Store::new();
    let indexer = Arc::new(Indexer::new(store.destination.clone()));
    let files_before = 6;
    let per_file = 90;
    for f in 0..files_before {
        let batch = decode(Signal::Logs, rows(per_file, f).as_bytes(), PayloadFormat::OtlpJson);
        let file = store.write(Signal::Logs, &[batch]);
        indexer.index_and_record(store.catalog.as_ref(), &file).expect("index");
    }
    let expected = (files_before * per_file / 3) as u64;
    let old: Vec<_> = store.catalog.list(&tenant(), Signal::Logs, None).expect("list");
    assert_eq!(old.len(), files_before);
    assert!(old.iter().all(|f| f.index.is_some()));

    let searcher = Arc::new(Searcher::new(store.destination.clone()).with_cache_bytes(1 << 20));
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (catalog, searcher, done) = (store.catalog.clone(), searcher.clone(), done.clone());
            std::thread::spawn(move || {
                let q = query(if r == 0 { "needle" } else { "user.id:u-7 10.0.*" });
                let mut rounds = 0u64;
                while !done.load(Ordering::Acquire) || rounds < 3 {
                    // A query lists the live files once, then searches each.
                    let files = catalog.list(&tenant(), Signal::Logs, None).expect("list");
                    let mut total = 0;
                    for file in &files {
                        let hits = searcher.search(file, &q).expect("search");
                        assert!(
                            matches!(hits.by, SearchedBy::Index),
                            "{} searched by {:?}",
                            file.path,
                            hits.by
                        );
                        total += hits.rows.count();
                    }
                    assert_eq!(total, expected, "round {rounds} over {} files", files.len());
                    rounds += 1;
                }
                rounds
            })
        })
        .collect();

    let now = SystemTime::now();
    let grace = Duration::from_secs(600);
    let maintenance = Maintenance::new(store.destination.clone(), store.catalog.clone(), sink_config())
        .with_indexer(indexer.clone())
        .with_grace(grace);
    let report = maintenance
        .compact(&tenant(), Signal::Logs, 64 << 20, now)
        .expect("compact");
    assert_eq!(report.retired.len(), files_before);
    assert_eq!(report.published.len(), 1);
    assert!(
        report.published[0].index.is_some(),
        "compaction indexes before the swap"
    );

    // A reader that listed the old files before the swap still searches them by index
    // during the grace period.
    let mut total = 0;
    for file in &old {
        let hits = searcher.search(file, &query("needle")).expect("search a retired file");
        assert!(matches!(hits.by, SearchedBy::Index), "{:?}", hits.by);
        total += hits.rows.count();
    }
    assert_eq!(total, expected);
    done.store(true, Ordering::Release);
    for reader in readers {
        assert!(reader.join().expect("reader") >= 3);
    }

    // Nothing is deleted before the grace period ends; then the files go with their blobs.
    assert_eq!(maintenance.delete_retired(now + grace / 2).expect("early"), 0);
    assert_eq!(
        maintenance
            .delete_retired(now + grace + Duration::from_secs(1))
            .expect("delete"),
        files_before as u64
    );
    for file in &old {
        assert!(store.destination.read(&file.path).is_err(), "{} deleted", file.path);
        let blob = &file.index.as_ref().expect("indexed").path;
        assert!(store.destination.read(blob).is_err(), "{blob} deleted");
    }
    let live = store.catalog.list(&tenant(), Signal::Logs, None).expect("list");
    assert_eq!(live.len(), 1);
    let fresh = Searcher::new(store.destination.clone());
    let hits = fresh.search(&live[0], &query("needle")).expect("search");
    assert!(matches!(hits.by, SearchedBy::Index));
    assert_eq!(hits.rows.count(), expected);
    assert_eq!(
        hits.rows,
        fresh.scan(&live[0], &query("needle")).expect("scan"),
        "the merged file's index agrees with its rows"
    );
}
