//! A process killed while indexing never leaves a partial blob catalogued, or a blob under
//! its final name that is not whole: the child below writes files into a real SQLite tracker
//! and indexes them until it is killed; the parent checks every blob and catalogue entry, and
//! a restarted indexer finishes the work.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use wit_batch::{BatchId, BatchMeta, PayloadFormat, Signal, SourceKind, Stage};
use wit_index::{Indexer, SearchedBy, Searcher, index_path};
use wit_store::{Destination, FileCatalog, FileIndex, ParquetSink, StoredFile};
use wit_tracker::{SqliteTracker, Tracker, TrackerConfig, TrackerExt};

use crate::{Rec, decode, logs_json, query, sink_config, tenant};

const DIR: &str = "WIT_INDEX_CRASH_DIR";
const ROWS: usize = 600;

fn open(dir: &Path) -> (Destination, SqliteTracker) {
    let destination = Destination::local(&dir.join("data")).expect("destination");
    let tracker = SqliteTracker::open(&dir.join("tracker.db"), TrackerConfig::default()).expect("tracker");
    (destination, tracker)
}

fn batch_rows(round: u64) -> String {
    let bodies: Vec<String> = (0..ROWS)
        .map(|i| {
            format!(
                "round {round} row {i} {} from 10.9.{}.{}:8080",
                if i % 4 == 0 { "needle" } else { "hay" },
                i % 5,
                i % 200
            )
        })
        .collect();
    let records: Vec<Rec<'_>> = bodies
        .iter()
        .map(|b| ("svc", b.as_str(), "WARN", &[("k", "v")][..]))
        .collect();
    logs_json(&records)
}

/// The child: runs only when the parent sets `WIT_INDEX_CRASH_DIR`.
#[test]
fn crash_child_indexer() {
    let Some(dir) = std::env::var_os(DIR) else { return };
    let (destination, tracker) = open(Path::new(&dir));
    let tracker = std::sync::Arc::new(tracker);
    let mut sink = ParquetSink::open(destination.clone(), sink_config())
        .expect("sink")
        .with_catalog(tracker.clone());
    let indexer = Indexer::new(destination);
    // Files a killed predecessor left unindexed first, as a restarted host does.
    for file in tracker.unindexed(1000).expect("unindexed") {
        indexer.index_and_record(tracker.as_ref(), &file).expect("index");
        println!("indexed {}", file.path);
    }
    for round in 0u64.. {
        let id = BatchId::new();
        tracker
            .register_one(&BatchMeta {
                id,
                tenant: tenant(),
                signal: Signal::Logs,
                source: SourceKind::Http,
                message_count: ROWS as u64,
                byte_size: 1,
                first_offset: None,
                last_offset: None,
                topics: vec![],
                partition: None,
                created_at: id.created_at(),
            })
            .expect("register");
        for stage in [Stage::WalWritten, Stage::Ingested] {
            tracker.mark(id, stage, SystemTime::now()).expect("mark");
        }
        let batch = decode(Signal::Logs, batch_rows(round).as_bytes(), PayloadFormat::OtlpJson);
        sink.write(&tenant(), Signal::Logs, &batch, &[id]).expect("write");
        for file in sink.flush().expect("flush") {
            println!("published {}", file.path);
            indexer.index_and_record(tracker.as_ref(), &file).expect("index");
            println!("indexed {}", file.path);
        }
    }
}

fn blobs(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "index") {
                out.push(path);
            }
        }
    }
    out
}

/// Every catalogued index is the intact blob recorded and answers like a scan; every blob
/// under its final name, catalogued or not, is whole.
fn check(dir: &Path) -> (usize, usize) {
    let (destination, tracker) = open(dir);
    let files: Vec<StoredFile> = tracker.list(&tenant(), Signal::Logs, None).expect("list");
    let searcher = Searcher::new(destination.clone());
    let q = query("needle 10.9.0.*");
    let mut indexed = 0;
    for file in &files {
        if file.index.is_some() {
            indexed += 1;
            let hits = searcher.search(file, &q).expect("search");
            assert!(matches!(hits.by, SearchedBy::Index), "{}: {:?}", file.path, hits.by);
            assert_eq!(hits.rows, searcher.scan(file, &q).expect("scan"), "{}", file.path);
            assert!(hits.rows.count() > 0);
        }
    }
    let data = dir.join("data");
    for blob in blobs(&data) {
        let rel = blob
            .strip_prefix(&data)
            .expect("under data")
            .to_string_lossy()
            .into_owned();
        let file = files
            .iter()
            .find(|f| index_path(&f.path) == rel)
            .unwrap_or_else(|| panic!("{rel} belongs to no catalogued file"));
        let bytes = std::fs::read(&blob).expect("read blob");
        let mut probe = file.clone();
        probe.index = Some(FileIndex {
            path: rel.clone(),
            bytes: bytes.len() as u64,
            docs: file.rows,
            checksum: crc32fast::hash(&bytes),
        });
        searcher
            .search_index(&probe, &q)
            .unwrap_or_else(|e| panic!("{rel} is not whole: {e}"));
    }
    (files.len(), indexed)
}

#[test]
fn a_killed_indexer_never_leaves_a_partial_index_and_a_restart_finishes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    for (round, delay_ms) in [0u64, 13, 37, 5, 61, 90].into_iter().enumerate() {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash::crash_child_indexer",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(DIR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the child");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        // Kill it after it published a file, at some moment of indexing one.
        let mut seen = 0;
        while seen < 1 + round % 2 {
            let line = lines.next().expect("the child stopped early").expect("line");
            if line.starts_with("published ") {
                seen += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");
        check(dir.path());
    }

    // The restart: what the catalog says is unindexed is indexed now, and every batch is
    // INDEXED.
    let (destination, tracker) = open(dir.path());
    let indexer = Indexer::new(destination);
    let pending = tracker.unindexed(1000).expect("unindexed");
    for file in &pending {
        indexer.index_and_record(&tracker, file).expect("index");
    }
    assert!(tracker.unindexed(1000).expect("unindexed").is_empty());
    drop(tracker);
    let (files, indexed) = check(dir.path());
    assert!(files >= 6, "{files} files");
    assert_eq!(indexed, files);
    let (_, tracker) = open(dir.path());
    for file in tracker.list(&tenant(), Signal::Logs, None).expect("list") {
        for id in &file.batch_ids {
            assert_eq!(tracker.batch(*id).expect("batch").stage, Stage::Indexed, "{id}");
        }
    }
}
