//! Bad queries and bad index blobs: a typed error naming what is wrong, and a search that still
//! answers by scanning, never with wrong rows.

use bytes::Bytes;
use wit_batch::{PayloadFormat, Signal};
use wit_index::{Error, Indexer, Query, SearchedBy, Searcher, index_path};
use wit_store::{FileIndex, StoredFile};

use crate::{Rec, Store, decode, logs_json, query};

#[test]
fn a_bad_query_is_refused_at_the_byte_where_it_goes_wrong() {
    let cases: &[(&str, usize, &str)] = &[
        ("", 0, "empty"),
        ("   ", 0, "empty"),
        ("error AND (timeout", 10, "never closed"),
        ("error)", 5, "unexpected `)`"),
        ("()", 0, "empty parentheses"),
        ("\"connection reset", 0, "never closed"),
        ("error AND", 9, "ends where a term was expected"),
        ("OR error", 0, "`OR` with nothing before it"),
        ("error NOT", 9, "ends where a term was expected"),
        ("user.id:", 8, "`user.id:` has no value"),
        ("ti*me", 0, "`*` may only end a term"),
        ("*", 0, "needs a prefix"),
        ("!!!", 0, "nothing searchable"),
        ("ab\"cd\"", 2, "a quote inside a word"),
        ("\"a\\", 2, "backslash at the end"),
    ];
    for (text, position, reason) in cases {
        match Query::parse(text) {
            Err(Error::Query { position: p, reason: r }) => {
                assert_eq!(p, *position, "`{text}`: {r}");
                assert!(r.contains(reason), "`{text}`: {r}");
            }
            other => panic!("`{text}` gave {other:?}"),
        }
    }
    let long = format!("user.id:{}", "x".repeat(5000));
    assert!(matches!(Query::parse(&long), Err(Error::Query { position: 0, .. })));
}

/// A file of 50 rows, indexed, and the searcher's answer to `q` by scanning.
fn indexed_file() -> (Store, StoredFile) {
    let bodies: Vec<String> = (0..50).map(|i| format!("event {i} kind-{}", i % 3)).collect();
    let records: Vec<Rec<'_>> = bodies.iter().map(|b| ("svc", b.as_str(), "INFO", &[][..])).collect();
    let store = Store::new();
    let batch = decode(Signal::Logs, logs_json(&records).as_bytes(), PayloadFormat::OtlpJson);
    let file = store.write(Signal::Logs, &[batch]);
    Indexer::new(store.destination.clone())
        .index_and_record(store.catalog.as_ref(), &file)
        .expect("index");
    let file = store.get(&file.path);
    (store, file)
}

/// Searches `file` with a fresh searcher: the answer must come from a scan, for `why`.
fn scanned_because(store: &Store, file: &StoredFile, why: impl Fn(&Error) -> bool) {
    let searcher = Searcher::new(store.destination.clone());
    let q = query("kind-1");
    let unusable = searcher.search_index(file, &q).expect_err("the index is unusable");
    assert!(why(&unusable), "{unusable}");
    assert!(unusable.index_unusable(), "{unusable}");
    let hits = searcher.search(file, &q).expect("search");
    match &hits.by {
        SearchedBy::Scan { unusable: Some(e) } => assert!(why(e), "{e}"),
        other => panic!("expected a scan, got {other:?}"),
    }
    // The right rows all the same: 1, 4, 7, ... 49.
    assert_eq!(hits.rows.count(), 17);
    assert_eq!(hits.rows, searcher.scan(file, &q).expect("scan"));
    assert_eq!(searcher.cached_bytes(), 0, "an unusable index is not cached");
}

#[test]
fn a_corrupt_blob_is_refused_and_the_file_scanned() {
    let (store, file) = indexed_file();
    let index = file.index.clone().expect("indexed");
    let mut blob = store.destination.read(&index.path).expect("blob").to_vec();
    let middle = blob.len() / 2;
    blob[middle] ^= 0x5a;
    store.destination.put(&index.path, Bytes::from(blob)).expect("put");
    scanned_because(
        &store,
        &file,
        |e| matches!(e, Error::Corrupt { reason, .. } if reason.contains("checksum")),
    );
}

#[test]
fn a_truncated_blob_is_refused_and_the_file_scanned() {
    let (store, file) = indexed_file();
    let index = file.index.clone().expect("indexed");
    let blob = store.destination.read(&index.path).expect("blob");
    store
        .destination
        .put(&index.path, blob.slice(..blob.len() - 100))
        .expect("put");
    scanned_because(
        &store,
        &file,
        |e| matches!(e, Error::Corrupt { reason, .. } if reason.contains("bytes")),
    );
}

#[test]
fn a_deleted_blob_is_refused_and_the_file_scanned() {
    let (store, file) = indexed_file();
    store
        .destination
        .delete(&file.index.as_ref().expect("indexed").path)
        .expect("delete");
    scanned_because(&store, &file, |e| {
        matches!(
            e,
            Error::Store {
                operation: "read index",
                ..
            }
        )
    });
}

#[test]
fn a_blob_that_is_not_an_index_is_refused_even_with_a_matching_checksum() {
    let (store, file) = indexed_file();
    let garbage = Bytes::from(vec![0x42u8; 4096]);
    let path = index_path(&file.path);
    store.destination.put(&path, garbage.clone()).expect("put");
    let mut file = file;
    file.index = Some(FileIndex {
        path,
        bytes: garbage.len() as u64,
        docs: file.rows,
        checksum: crc32fast::hash(&garbage),
    });
    scanned_because(&store, &file, |e| matches!(e, Error::Corrupt { .. }));
}

#[test]
fn another_files_index_is_refused_by_its_document_count() {
    let (store, file) = indexed_file();
    // A second file of 20 rows, indexed: its blob is intact but not this file's.
    let records: Vec<Rec<'_>> = (0..20).map(|_| ("svc", "kind-1", "INFO", &[][..])).collect();
    let other = store.write(
        Signal::Logs,
        &[decode(
            Signal::Logs,
            logs_json(&records).as_bytes(),
            PayloadFormat::OtlpJson,
        )],
    );
    let other_index = Indexer::new(store.destination.clone())
        .index_and_record(store.catalog.as_ref(), &other)
        .expect("index");
    let mut wrong = file.clone();
    wrong.index = Some(FileIndex {
        docs: file.rows,
        ..other_index.clone()
    });
    scanned_because(&store, &wrong, |e| {
        matches!(e, Error::DocCountMismatch { docs: 20, rows: 50, .. })
    });
    // The catalog's own record of the count is checked too.
    let mut wrong = file.clone();
    wrong.index = Some(FileIndex {
        docs: 20,
        ..file.index.clone().expect("indexed")
    });
    scanned_because(&store, &wrong, |e| matches!(e, Error::DocCountMismatch { .. }));
}

#[test]
fn a_catalog_row_count_that_is_not_the_files_is_refused_by_the_indexer() {
    let (store, file) = indexed_file();
    let mut wrong = file.clone();
    wrong.rows = 49;
    wrong.index = None;
    let err = Indexer::new(store.destination.clone())
        .build(&wrong)
        .expect_err("the file has 50 rows");
    assert!(
        matches!(err, Error::DocCountMismatch { docs: 50, rows: 49, .. }),
        "{err}"
    );
    // Nothing was published for it, and the recorded index is untouched.
    assert_eq!(store.get(&file.path).index, file.index);
}

#[test]
fn a_file_that_cannot_be_read_is_an_error_not_an_empty_answer() {
    let (store, file) = indexed_file();
    store.destination.delete(&file.path).expect("delete the file");
    let mut unindexed = file.clone();
    unindexed.index = None;
    let searcher = Searcher::new(store.destination.clone());
    let err = searcher
        .search(&unindexed, &query("kind-1"))
        .expect_err("no file to scan");
    assert!(
        matches!(
            err,
            Error::Store {
                operation: "read file",
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.index_unusable());
    // A Parquet file that is not one is a Parquet error.
    store
        .destination
        .put(&file.path, Bytes::from_static(b"not parquet at all"))
        .expect("put");
    let err = searcher.scan(&unindexed, &query("kind-1")).expect_err("not parquet");
    assert!(matches!(err, Error::Parquet { .. }), "{err}");
    let err = Indexer::new(store.destination.clone())
        .build(&unindexed)
        .expect_err("not parquet");
    assert!(matches!(err, Error::Parquet { .. }), "{err}");
}
