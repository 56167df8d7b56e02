//! The whole pipeline killed at random moments: a child process (this test binary, run again
//! as `crash_child_entry_point`) runs it on a real WAL, a real tracker and a local store,
//! with producers that report every acknowledged record id on stdout; the parent kills it
//! with SIGKILL, restarts it, and at the end checks with pyarrow that every acknowledged id
//! is in the published files exactly once, and with the tracker that their batches are
//! `STORED` (or later).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use wit_batch::{BatchId, BatchKey, Signal, SourceKind, Stage, Tenant};
use wit_pipeline::{AckLevel, Pipeline, TrackerCatalog};
use wit_store::{Destination, NodeName, SinkConfig};
use wit_tracker::{PostgresTracker, SqliteTracker, TrackerConfig};

use crate::faulty::{AbortAt, Faulty};
use crate::support::{self, logs, proto, spans};

#[path = "../../../wit-tracker/tests/it/pg_server.rs"]
#[allow(dead_code, unreachable_pub)]
mod pg_server;

const CHILD: &str = "WIT_PIPELINE_CRASH_CHILD";

/// The child's side. Not a test of its own: it does nothing unless the parent below started
/// this binary with `WIT_PIPELINE_CRASH_CHILD` set.
#[test]
fn crash_child_entry_point() {
    let Some(dir) = std::env::var_os(CHILD) else {
        return;
    };
    let dir = Path::new(&dir);
    let base: u64 = std::env::var("WIT_CHILD_BASE").expect("base").parse().expect("base");
    let drain = std::env::var_os("WIT_CHILD_DRAIN").is_some();
    let abort = std::env::var("WIT_CHILD_ABORT").ok().map(|spec| {
        let (point, n) = spec.split_once(':').expect("point:n");
        let n = n.parse().expect("n");
        match point {
            "before-publish" => AbortAt::BeforePublish(n),
            "after-publish" => AbortAt::AfterPublish(n),
            "before-truncate" => AbortAt::BeforeTruncate(n),
            other => panic!("unknown abort point {other}"),
        }
    });
    let tracker: Arc<dyn TrackerCatalog> = Arc::new(Faulty::new(
        tracker(dir, std::env::var("WIT_CHILD_PG").ok().as_deref()),
        abort,
    ));
    let pipeline = Pipeline::open(
        config(dir),
        Destination::local(&dir.join("data")).expect("dest"),
        tracker,
    )
    .expect("open the pipeline");
    let report = pipeline.recovery();
    println!(
        "OPEN replayed={} already_stored={} registered={}",
        report.replayed, report.already_stored, report.registered
    );
    std::io::stdout().flush().expect("stdout");
    if drain {
        pipeline.close().expect("close");
        println!("CLOSED");
        return;
    }
    let pipeline = Arc::new(pipeline);
    let producers: Vec<_> = (0..2u64)
        .map(|p| {
            let pipeline = pipeline.clone();
            std::thread::spawn(move || produce(&pipeline, base + p * 100_000_000))
        })
        .collect();
    for producer in producers {
        producer.join().expect("producer");
    }
}

fn config(dir: &Path) -> wit_pipeline::PipelineConfig {
    let node = NodeName::try_new("node-a").expect("node");
    support::config(dir)
        .with_sink(
            SinkConfig::new(node)
                .with_max_file_age(Duration::from_millis(15))
                .with_max_file_bytes(64 << 10)
                .with_row_group_rows(64),
        )
        .with_wal(wit_wal::Config::default().with_segment_size(64 << 10))
        .with_janitor_interval(Duration::from_millis(5))
}

fn tracker(dir: &Path, pg: Option<&str>) -> Arc<dyn TrackerCatalog> {
    match pg {
        Some(params) => Arc::new(PostgresTracker::connect(params, TrackerConfig::default()).expect("postgres")),
        None => Arc::new(SqliteTracker::open(&dir.join("tracker.db"), TrackerConfig::default()).expect("sqlite")),
    }
}

/// Submits records with unique ids forever (until killed), a window of acknowledgments in
/// flight, and prints each acknowledged part: `ACK {signal} {batch} {id},{id},...`.
fn produce(pipeline: &Pipeline, first: u64) {
    let mut window = std::collections::VecDeque::new();
    let mut next = first;
    let mut n = 0u64;
    loop {
        let ids: Vec<u64> = (next..next + 3).collect();
        next += 3;
        n += 1;
        let (signal, payload) = if n.is_multiple_of(2) {
            (Signal::Traces, spans(&ids))
        } else {
            (Signal::Logs, logs(&ids))
        };
        let level = if n.is_multiple_of(5) {
            AckLevel::Stored
        } else {
            AckLevel::WalDurable
        };
        let key = BatchKey::new(Tenant::try_new("acme").expect("tenant"), signal, SourceKind::Http);
        let ack = pipeline
            .blocking_submit(&key, proto(payload, 1), level)
            .expect("submit");
        window.push_back((signal, ids, ack));
        if window.len() >= 16 {
            let (signal, ids, ack) = window.pop_front().expect("window");
            let acked = ack.wait().expect("acknowledged");
            let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
            let mut out = std::io::stdout().lock();
            writeln!(out, "ACK {signal} {} {}", acked.batch.expect("batch"), ids.join(",")).expect("stdout");
            out.flush().expect("stdout");
        }
    }
}

/// A small random number generator (xorshift), seeded from the clock; the seed is printed so
/// a failing run can be repeated with `WIT_CRASH_SEED`.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let seed = std::env::var("WIT_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .expect("clock")
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("crash test seed: {seed} (WIT_CRASH_SEED)");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

struct Acked {
    signal: Signal,
    batch: BatchId,
}

/// Runs the child once; kills it after `kill_after` (or lets a drain run finish), unless it
/// aborted itself at `abort` first. Returns the acknowledged ids it printed, and whether it
/// aborted.
fn run_child(
    dir: &Path,
    base: u64,
    kill_after: Option<Duration>,
    abort: Option<&str>,
    pg: Option<&str>,
) -> (HashMap<u64, Acked>, bool) {
    let mut command = Command::new(std::env::current_exe().expect("test binary"));
    command
        .args([
            "crash::crash_child_entry_point",
            "--exact",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD, dir)
        .env("WIT_CHILD_BASE", base.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if kill_after.is_none() {
        command.env("WIT_CHILD_DRAIN", "1");
    }
    if let Some(pg) = pg {
        command.env("WIT_CHILD_PG", pg);
    }
    if let Some(abort) = abort {
        command.env("WIT_CHILD_ABORT", abort);
    }
    let mut child = command.spawn().expect("spawn the child");
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut acked = HashMap::new();
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let mut words = line.split(' ');
            if words.next() == Some("ACK") {
                let signal: Signal = words.next().expect("signal").parse().expect("signal");
                let batch: BatchId = words.next().expect("batch").parse().expect("batch");
                for id in words.next().expect("ids").split(',') {
                    acked.insert(id.parse().expect("id"), Acked { signal, batch });
                }
            } else {
                lines.push(line);
            }
        }
        (acked, lines)
    });
    match kill_after {
        Some(after) => {
            let deadline = Instant::now() + after;
            while Instant::now() < deadline && child.try_wait().expect("wait").is_none() {
                std::thread::sleep(Duration::from_millis(2));
            }
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
        None => {
            let status = child.wait().expect("wait");
            assert!(status.success(), "the drain run failed: {status}");
        }
    }
    let (acked, lines) = reader.join().expect("reader");
    if kill_after.is_none() {
        assert!(lines.iter().any(|l| l == "CLOSED"), "{lines:?}");
    }
    let aborted = lines.iter().any(|l| l.starts_with("ABORT "));
    (acked, aborted)
}

fn crash_and_check(runs: u64, pg: Option<&str>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = Rng::new();
    let mut acked: BTreeMap<u64, Acked> = BTreeMap::new();
    let started = Instant::now();
    let mut aborts = [0; 3];
    for run in 0..runs {
        // Every fifth run from the second on dies in the middle of a publish (before the
        // catalog commits, or after it and before staging is cleaned) or just before a
        // truncation; the others are killed at random: mostly while producing, now and then
        // during the recovery of the last kill.
        let abort = match run % 5 {
            1 => Some(("before-publish", 0)),
            2 => Some(("after-publish", 1)),
            3 => Some(("before-truncate", 2)),
            _ => None,
        };
        let (kill_after, spec) = match abort {
            Some((point, _)) => (Duration::from_secs(10), Some(format!("{point}:{}", 5 + rng.below(40)))),
            None => (
                Duration::from_millis(if rng.below(6) == 0 {
                    rng.below(40)
                } else {
                    60 + rng.below(400)
                }),
                None,
            ),
        };
        let (run_acked, aborted) = run_child(
            dir.path(),
            (run + 1) * 1_000_000_000,
            Some(kill_after),
            spec.as_deref(),
            pg,
        );
        if let (Some((_, kind)), true) = (abort, aborted) {
            aborts[kind] += 1;
        }
        acked.extend(run_acked);
    }
    run_child(dir.path(), 0, None, None, pg);
    eprintln!(
        "{runs} kills ({aborts:?} at before-publish / after-publish / before-truncate) in {:.1} s, {} acknowledged records",
        started.elapsed().as_secs_f64(),
        acked.len()
    );
    if runs >= 4 {
        assert!(aborts.iter().all(|n| *n > 0), "every abort point was hit: {aborts:?}");
    }
    assert!(
        acked.len() as u64 > 50 * runs,
        "the producers got going: {}",
        acked.len()
    );

    // The tracker: every acknowledged record's batch is STORED or later.
    let tracker = tracker(dir.path(), pg);
    let mut batches: Vec<BatchId> = acked.values().map(|a| a.batch).collect();
    batches.sort_unstable();
    batches.dedup();
    let mut completed = 0;
    for batch in &batches {
        let stage = tracker
            .batch(*batch)
            .expect("the tracker knows every acknowledged batch")
            .stage;
        assert!(
            matches!(stage, Stage::Stored | Stage::Indexed | Stage::Completed),
            "{batch} is {stage}"
        );
        completed += usize::from(stage == Stage::Completed);
    }
    // The janitor released the WAL behind what was stored: those batches are complete.
    assert!(completed > 0, "no batch was completed out of {}", batches.len());

    // The files, read by pyarrow: every acknowledged id exactly once; no id ever twice.
    let acme = Tenant::try_new("acme").expect("tenant");
    for signal in [Signal::Traces, Signal::Logs] {
        let mut catalogued: Vec<(String, u64)> = tracker
            .list(&acme, signal, None)
            .expect("list")
            .into_iter()
            .map(|f| (f.path, f.rows))
            .collect();
        catalogued.sort();
        let rows: u64 = catalogued.iter().map(|(_, rows)| rows).sum();
        let want = acked.values().filter(|a| a.signal == signal).count() as u64;
        assert!(rows >= want, "{signal}: {rows} rows stored, {want} acknowledged");
        if !support::has_pyarrow() {
            continue;
        }
        let found = support::pyarrow_read(&dir.path().join("data"), signal.as_str());
        assert_eq!(
            found.files, catalogued,
            "{signal}: the files on disk are the catalogued ones"
        );
        let mut counts: HashMap<i64, u32> = HashMap::new();
        for id in found.ids {
            *counts.entry(id).or_default() += 1;
        }
        let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(10).collect();
        assert!(twice.is_empty(), "{signal}: stored twice: {twice:?}");
        let missing: Vec<_> = acked
            .iter()
            .filter(|(id, a)| a.signal == signal && !counts.contains_key(&(**id as i64)))
            .take(10)
            .map(|(id, _)| id)
            .collect();
        assert!(missing.is_empty(), "{signal}: acknowledged but not stored: {missing:?}");
    }
}

#[test]
fn every_acknowledged_record_is_stored_exactly_once_across_sigkills_sqlite() {
    crash_and_check(25, None);
}

#[test]
fn every_acknowledged_record_is_stored_exactly_once_across_sigkills_postgres() {
    let Some(server) = pg_server::PgServer::shared() else {
        return;
    };
    let params = server.fresh_schema("crash");
    crash_and_check(8, Some(&params));
}
