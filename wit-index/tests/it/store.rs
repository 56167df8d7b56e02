//! Index blobs published to a real store (a local directory, an S3 server on 127.0.0.1), and
//! the searcher's bounded cache of them.

use std::sync::Arc;
use std::time::Duration;

use wit_batch::{PayloadFormat, Signal};
use wit_index::{Error, Indexer, SearchedBy, Searcher, index_path};
use wit_store::{Destination, FileCatalog, InMemoryFileCatalog, ParquetSink};

use crate::moto::{Moto, options};
use crate::{Rec, Store, bodies, decode, logs_json, matched, query, sink_config, tenant};

fn numbered(n: usize, tag: &str) -> String {
    let rows: Vec<(String, Vec<(String, String)>)> = (0..n)
        .map(|i| {
            (
                format!("request {i} of {tag} served from 10.1.{}.{}:443", i % 7, i % 250),
                vec![("user.id".to_owned(), format!("u-{}", i % 10))],
            )
        })
        .collect();
    let attrs: Vec<Vec<(&str, &str)>> = rows
        .iter()
        .map(|(_, a)| a.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect())
        .collect();
    let records: Vec<Rec<'_>> = rows
        .iter()
        .zip(&attrs)
        .map(|((body, _), a)| ("web", body.as_str(), "INFO", a.as_slice()))
        .collect();
    logs_json(&records)
}

#[test]
fn a_local_index_is_published_beside_its_file_and_found_again_by_a_new_searcher() {
    let store = Store::new();
    let batch = decode(Signal::Logs, numbered(500, "alpha").as_bytes(), PayloadFormat::OtlpJson);
    let file = store.write(Signal::Logs, &[batch]);
    assert!(file.index.is_none());
    let recorded = Indexer::new(store.destination.clone())
        .index_and_record(store.catalog.as_ref(), &file)
        .expect("index");
    assert_eq!(recorded.path, index_path(&file.path));
    assert_eq!(recorded.docs, 500);
    let blob = store.destination.read(&recorded.path).expect("the blob is published");
    assert_eq!(blob.len() as u64, recorded.bytes);
    let file = store.get(&file.path);
    assert_eq!(file.index.as_ref(), Some(&recorded), "the catalog records the index");
    assert_eq!(store.catalog.unindexed(10).expect("unindexed"), vec![]);

    // Indexing again leaves the recorded index as it is.
    let again = Indexer::new(store.destination.clone())
        .index_and_record(store.catalog.as_ref(), &file)
        .expect("again");
    assert_eq!(again, recorded);

    let bodies = bodies(&store.destination, &file);
    let searcher = Searcher::new(Destination::local(store._dir.path()).expect("another handle"));
    let hits = searcher.search(&file, &query("user.id:u-3 10.1.3.*")).expect("search");
    assert!(matches!(hits.by, SearchedBy::Index), "{:?}", hits.by);
    let want: Vec<String> = {
        let mut w: Vec<String> = (0..500)
            .filter(|i| i % 10 == 3 && i % 7 == 3)
            .map(|i| format!("request {i} of alpha served from 10.1.{}.{}:443", i % 7, i % 250))
            .collect();
        w.sort();
        w
    };
    assert!(!want.is_empty());
    assert_eq!(matched(&bodies, &hits.rows), want);
    // The row set is a Parquet row selection of the same rows.
    let selection = hits.rows.to_row_selection();
    assert_eq!(selection.row_count() as u64, hits.rows.count());
    assert_eq!(searcher.cached_bytes(), recorded.bytes);
}

#[test]
fn indexes_round_trip_through_s3() {
    if !Moto::available() {
        return;
    }
    let moto = Moto::start();
    let staging = tempfile::tempdir().expect("staging");
    let destination = Destination::from_url("s3://wit/data")
        .with_options(options(moto.port))
        .with_retries(2, Duration::from_secs(10))
        .build()
        .expect("destination");
    let catalog = Arc::new(InMemoryFileCatalog::default());
    let mut sink = ParquetSink::open(
        destination.clone(),
        sink_config().with_staging_dir(staging.path()).with_keep_staged(false),
    )
    .expect("sink")
    .with_catalog(catalog.clone());
    for tag in ["alpha", "beta"] {
        let batch = decode(Signal::Logs, numbered(300, tag).as_bytes(), PayloadFormat::OtlpJson);
        sink.write(&tenant(), Signal::Logs, &batch, &[wit_batch::BatchId::new()])
            .expect("write");
    }
    let file = sink.flush().expect("flush").remove(0);
    assert_eq!(file.rows, 600);

    let indexer = Indexer::new(destination.clone());
    let recorded = indexer.index_and_record(catalog.as_ref(), &file).expect("index on S3");
    let file = catalog.get(&file.path).expect("catalogued");
    assert_eq!(file.index.as_ref(), Some(&recorded));

    // A searcher with its own client finds the rows through the blob it reads from S3.
    let other = Destination::from_url("s3://wit/data")
        .with_options(options(moto.port))
        .with_retries(2, Duration::from_secs(10))
        .build()
        .expect("destination");
    let searcher = Searcher::new(other.clone());
    let bodies = bodies(&other, &file);
    for (text, want) in [
        ("beta user.id:u-7", 30u64),
        ("\"of alpha served\"", 300),
        ("10.1.6.*", 84),
    ] {
        let q = query(text);
        let hits = searcher.search(&file, &q).expect("search");
        assert!(matches!(hits.by, SearchedBy::Index), "{:?}", hits.by);
        assert_eq!(hits.rows.count(), want, "`{text}`");
        assert_eq!(
            matched(&bodies, &hits.rows),
            matched(&bodies, &searcher.scan(&file, &q).expect("scan")),
            "`{text}`"
        );
    }

    // Without the blob the searcher scans; a fresh searcher (nothing cached) shows it.
    other.delete(&recorded.path).expect("delete the blob");
    let fresh = Searcher::new(other);
    let hits = fresh.search(&file, &query("beta user.id:u-7")).expect("search");
    match &hits.by {
        SearchedBy::Scan { unusable: Some(e) } => assert!(e.index_unusable(), "{e}"),
        other => panic!("expected a scan, got {other:?}"),
    }
    assert_eq!(hits.rows.count(), 30);
}

#[test]
fn the_cache_keeps_the_most_recently_used_blobs_within_its_bound() {
    let store = Store::new();
    let indexer = Indexer::new(store.destination.clone());
    let mut files = Vec::new();
    for tag in ["a", "b", "c"] {
        let batch = decode(Signal::Logs, numbered(200, tag).as_bytes(), PayloadFormat::OtlpJson);
        let file = store.write(Signal::Logs, &[batch]);
        indexer.index_and_record(store.catalog.as_ref(), &file).expect("index");
        files.push(store.get(&file.path));
    }
    let sizes: Vec<u64> = files.iter().map(|f| f.index.as_ref().expect("indexed").bytes).collect();
    // Room for the two largest blobs, not for all three.
    let mut sorted = sizes.clone();
    sorted.sort();
    let capacity = sorted[1] + sorted[2];
    assert!(capacity < sizes.iter().sum::<u64>());
    let searcher = Searcher::new(store.destination.clone()).with_cache_bytes(capacity);
    let q = query("request");
    for file in &files {
        let hits = searcher.search(file, &q).expect("search");
        assert!(matches!(hits.by, SearchedBy::Index));
        assert!(searcher.cached_bytes() <= capacity);
    }
    // `a` was least recently used and is out: with its blob gone it can only be scanned.
    // `c` is cached: it is still answered by its index although its blob is gone too.
    for file in [&files[0], &files[2]] {
        let blob = &file.index.as_ref().expect("indexed").path;
        store.destination.delete(blob).expect("delete");
    }
    let a = searcher.search(&files[0], &q).expect("search a");
    assert!(
        matches!(
            &a.by,
            SearchedBy::Scan {
                unusable: Some(Error::Store { .. })
            }
        ),
        "{:?}",
        a.by
    );
    let c = searcher.search(&files[2], &q).expect("search c");
    assert!(matches!(c.by, SearchedBy::Index), "{:?}", c.by);
    assert_eq!(a.rows.count(), 200);
    assert_eq!(c.rows.count(), 200);

    // A blob larger than the whole cache is read for each search and never kept.
    let tiny = Searcher::new(store.destination.clone()).with_cache_bytes(sizes[1] - 1);
    let b = tiny.search(&files[1], &q).expect("search b");
    assert!(matches!(b.by, SearchedBy::Index));
    assert_eq!(tiny.cached_bytes(), 0);
}
