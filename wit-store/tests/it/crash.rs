//! A file being written when the process dies is never published as complete: the child
//! below writes and publishes files until it is killed; the parent then checks every
//! published file and what the next open does with the leftovers.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use wit_batch::{BatchId, Signal, Tenant};
use wit_store::{Destination, ParquetSink};

use crate::data::spans;
use crate::sink::{config, read_back};

const DIR: &str = "WIT_STORE_CRASH_DIR";

/// The child: runs only when the parent sets `WIT_STORE_CRASH_DIR`.
#[test]
fn crash_child_writer() {
    let Some(dir) = std::env::var_os(DIR) else { return };
    let mut sink = ParquetSink::open(
        Destination::local(Path::new(&dir)).expect("dest"),
        config().with_row_group_rows(100),
    )
    .expect("open");
    let tenant = Tenant::try_new("acme").expect("tenant");
    for round in 0u64.. {
        sink.write(
            &tenant,
            Signal::Traces,
            &spans(250, 1_700_000_000 + round, round),
            &[BatchId::new()],
        )
        .expect("write");
        if round % 3 == 2 {
            for file in sink.flush().expect("flush") {
                println!("published {} {}", file.path, file.rows);
            }
        }
    }
}

fn parquet_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.file_name().is_some_and(|n| n == ".staging") {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_killed_writer_never_leaves_a_partial_file_published() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut published = Vec::new();
    for (round, delay_ms) in [0u64, 7, 23, 41, 3].into_iter().enumerate() {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash::crash_child_writer",
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
        // Let it publish a file or two, then kill it at some moment of its work.
        let mut seen = 0;
        while seen < 1 + round % 2 {
            let line = lines.next().expect("the child stopped early").expect("line");
            if let Some(rest) = line.strip_prefix("published ") {
                let (path, rows) = rest.split_once(' ').expect("path rows");
                published.push((path.to_owned(), rows.parse::<usize>().expect("rows")));
                seen += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");
        for line in lines.map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("published ") {
                let (path, rows) = rest.split_once(' ').expect("path rows");
                published.push((path.to_owned(), rows.parse().expect("rows")));
            }
        }

        // Every file under its final name is complete: readable to the end, with the rows its
        // metadata names.
        for path in parquet_files(dir.path()) {
            assert!(path.extension().is_some_and(|e| e == "parquet"), "{}", path.display());
            let rows = read_back(&path).num_rows();
            let rel = path
                .strip_prefix(dir.path())
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            if let Some((_, n)) = published.iter().find(|(p, _)| *p == rel) {
                assert_eq!(rows, *n, "{rel}");
            }
        }
    }
    // Everything the child reported is there.
    let on_disk: Vec<String> = parquet_files(dir.path())
        .iter()
        .map(|p| p.strip_prefix(dir.path()).expect("root").to_string_lossy().into_owned())
        .collect();
    for (path, _) in &published {
        assert!(on_disk.contains(path), "{path} was published but is gone");
    }

    // The next open removes half-written files and publishes complete unpublished ones.
    let mut sink = ParquetSink::open(Destination::local(dir.path()).expect("dest"), config()).expect("reopen");
    let staging = sink.staging_dir().to_owned();
    assert!(
        std::fs::read_dir(&staging).expect("staging").all(|e| !e
            .expect("entry")
            .path()
            .to_string_lossy()
            .ends_with(".tmp")),
        "half-written files were removed"
    );
    let late = sink.publish().expect("publish the leftovers");
    for file in &late {
        assert_eq!(read_back(&dir.path().join(&file.path)).num_rows() as u64, file.rows);
    }
    assert_eq!(crate::sink::staged_files(&staging), 0);
}
