//! The example pipeline: Wit's main job, end to end, on embedded defaults.
//!
//! ```text
//! cargo run -p wit-examples --bin pipeline [-- --dir PATH --records N --producers N]
//! ```
//!
//! Today the pipeline is the write-ahead log and what follows it:
//!
//! 1. **Producers** (threads) generate JSON telemetry lines and append them through group
//!    commit: each keeps a window of submitted records and waits for the oldest, so the
//!    threads share writes and `fdatasync`s.
//! 2. **The consumer** follows the log with a [`wit_wal::Reader`] and hands each record to the
//!    processing [`Stage`]s (for now: counting per service and level). Later stages plug in
//!    here: batching into Arrow, Parquet storage, indexing, SQL.
//! 3. **The janitor** truncates the log behind the point that every stage no longer needs.
//! 4. **Recovery**: the log is closed and reopened, and what recovery found is shown.
//!
//! It runs in a fresh temporary directory unless `--dir` names a new or empty one, and exits
//! 1 unless the consumer saw every acknowledged record exactly once, in LSN order.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use wit_wal::{Commit, Config, Lsn, Record, Wal};

const USAGE: &str = "\
pipeline: Wit's example pipeline (producers -> WAL -> consumer stages, janitor, recovery)

Usage:
    pipeline [--dir PATH] [--records N] [--producers N]

Options:
    --dir PATH        WAL directory; must be new or empty (default: a temporary directory)
    --records N       records to append in all (default 20000)
    --producers N     producer threads (default 4)
";

/// Segment size: small enough that the run fills several segments and truncation visibly
/// releases (and recycles) them. 20k records of ~200 bytes are about 4 MiB.
const SEGMENT_SIZE: u64 = 1 << 20;
/// Records a producer has submitted and not yet seen acknowledged; it waits for the oldest
/// beyond this. Many records per `fdatasync` is what makes group commit fast.
const PRODUCER_WINDOW: usize = 64;
/// How long the consumer may see no new record, with all producers done, before it fails.
const STALL_LIMIT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("pipeline: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(()) => {
            println!("ok: every acknowledged record was consumed exactly once, in order");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("pipeline: FAILED: {message}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug)]
struct Options {
    dir: Option<PathBuf>,
    records: u64,
    producers: usize,
}

impl Options {
    /// Parses the arguments by hand (three options do not justify a parser crate); `None`
    /// when help was asked for.
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Self>, String> {
        let mut options = Options {
            dir: None,
            records: 20_000,
            producers: 4,
        };
        while let Some(arg) = args.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
                None => (arg.clone(), None),
            };
            if name == "-h" || name == "--help" {
                return Ok(None);
            }
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .ok_or(format!("option `{name}` needs a value"))
            };
            let number = |v: String| v.parse::<u64>().map_err(|_| format!("`{name} {v}`: expected a number"));
            match name.as_str() {
                "--dir" => options.dir = Some(PathBuf::from(value()?)),
                "--records" => options.records = number(value()?)?,
                "--producers" => {
                    options.producers = usize::try_from(number(value()?)?).map_err(|e| e.to_string())?;
                }
                _ => return Err(format!("unexpected argument `{arg}`")),
            }
        }
        if options.producers == 0 {
            return Err("--producers must be at least 1".into());
        }
        Ok(Some(options))
    }
}

fn run(options: &Options) -> Result<(), String> {
    // The temporary directory lives (and is removed) with this guard.
    let temp;
    let dir = match &options.dir {
        Some(dir) => {
            let is_empty = std::fs::read_dir(dir).map_or(true, |mut entries| entries.next().is_none());
            if !is_empty {
                return Err(format!(
                    "`{}` is not empty; give a new or empty directory",
                    dir.display()
                ));
            }
            dir.clone()
        }
        None => {
            temp = tempfile::tempdir().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
            temp.path().join("wal")
        }
    };
    let config = Config::default().with_segment_size(SEGMENT_SIZE);
    println!(
        "pipeline: {} producers append {} records to {} ({} KiB segments, fdatasync per group)",
        options.producers,
        options.records,
        dir.display(),
        SEGMENT_SIZE >> 10
    );

    let wal = Wal::open(&dir, config.clone()).map_err(|e| e.to_string())?;
    let run = run_stages(&wal, options)?;
    wal.close().map_err(|e| format!("closing the log failed: {e}"))?;

    let reopened = reopen(&dir, config)?;
    report(&run, &reopened);
    check(&run, &reopened)
}

/// What the stages did while the log was open.
struct RunOutcome {
    /// Per producer, the LSN acknowledged for each of its records, in order.
    acked: Vec<Vec<Lsn>>,
    append_bytes: u64,
    append_time: Duration,
    consumer: Consumer,
    janitor: JanitorReport,
    /// The first error of a producer, if any (the other stages still finish).
    producer_error: Option<String>,
}

impl RunOutcome {
    fn n_acked(&self) -> u64 {
        self.acked.iter().map(|a| a.len() as u64).sum()
    }
}

/// Runs producers, consumer and janitor on threads that share the log, until every
/// acknowledged record has been consumed.
fn run_stages(wal: &Wal, options: &Options) -> Result<RunOutcome, String> {
    let progress = Progress {
        end: AtomicU64::new(u64::MAX),
        retain_from: AtomicU64::new(Lsn::FIRST.0),
        stop: AtomicBool::new(false),
    };
    let first = wal.stats().next_lsn;
    let stages: Vec<Box<dyn Stage + Send>> = vec![Box::new(ServiceCounts::default())];
    std::thread::scope(|s| {
        let progress = &progress;
        let consumer = s.spawn(move || Consumer::new(options.producers, first, stages).run(wal, progress));
        let janitor = s.spawn(move || janitor(wal, progress));

        let started = Instant::now();
        let producers: Vec<_> = (0..options.producers)
            .map(|p| {
                // Spread the records; the first producers take the remainder.
                let n = options.records / options.producers as u64
                    + u64::from((p as u64) < options.records % options.producers as u64);
                s.spawn(move || produce(wal, p, n))
            })
            .collect();
        let mut acked = Vec::new();
        let mut append_bytes = 0;
        let mut producer_error = None;
        for handle in producers {
            let outcome = handle
                .join()
                .unwrap_or_else(|_| ProducerOutcome::failed("producer panicked"));
            acked.push(outcome.acked);
            append_bytes += outcome.bytes;
            if let Some(e) = outcome.error {
                producer_error.get_or_insert(e);
            }
        }
        let append_time = started.elapsed();
        // Everything acknowledged is below this; the consumer stops when it gets there.
        progress.end.store(wal.stats().next_lsn.0, Ordering::Release);

        let consumer = consumer.join().map_err(|_| "the consumer panicked".to_owned())?;
        progress.stop.store(true, Ordering::Release);
        let janitor = janitor.join().map_err(|_| "the janitor panicked".to_owned())??;
        Ok(RunOutcome {
            acked,
            append_bytes,
            append_time,
            consumer: consumer?,
            janitor,
            producer_error,
        })
    })
}

/// What the threads tell each other.
struct Progress {
    /// The LSN after the last acknowledged record, once all producers are done.
    end: AtomicU64,
    /// The LSN below which no stage needs the log any more: the janitor may truncate there.
    retain_from: AtomicU64,
    /// Tells the janitor to stop.
    stop: AtomicBool,
}

// ---------------------------------------------------------------------------------------
// Producers
// ---------------------------------------------------------------------------------------

struct ProducerOutcome {
    acked: Vec<Lsn>,
    bytes: u64,
    error: Option<String>,
}

impl ProducerOutcome {
    fn failed(error: &str) -> Self {
        ProducerOutcome {
            acked: Vec::new(),
            bytes: 0,
            error: Some(error.into()),
        }
    }
}

/// Appends `n` generated records, keeping up to [`PRODUCER_WINDOW`] of them in flight, and
/// returns the LSN of each as it is acknowledged.
fn produce(wal: &Wal, producer: usize, n: u64) -> ProducerOutcome {
    let mut events = EventGenerator::new(producer);
    let mut in_flight: VecDeque<Commit> = VecDeque::with_capacity(PRODUCER_WINDOW);
    let mut outcome = ProducerOutcome {
        acked: Vec::with_capacity(n as usize),
        bytes: 0,
        error: None,
    };
    let wait_oldest = |in_flight: &mut VecDeque<Commit>, outcome: &mut ProducerOutcome| {
        let Some(commit) = in_flight.pop_front() else {
            return true;
        };
        match commit.wait() {
            Ok(lsns) => {
                outcome.acked.extend(lsns.iter());
                true
            }
            Err(e) => {
                outcome.error = Some(format!("producer {producer}: {e}"));
                false
            }
        }
    };
    for seq in 0..n {
        if in_flight.len() == PRODUCER_WINDOW && !wait_oldest(&mut in_flight, &mut outcome) {
            return outcome;
        }
        let line = events.next(seq);
        match wal.submit(&line) {
            Ok(commit) => in_flight.push_back(commit),
            Err(e) => {
                outcome.error = Some(format!("producer {producer}: {e}"));
                return outcome;
            }
        }
        outcome.bytes += line.len() as u64;
    }
    while !in_flight.is_empty() {
        if !wait_oldest(&mut in_flight, &mut outcome) {
            break;
        }
    }
    outcome
}

const SERVICES: [&str; 6] = ["checkout", "payments", "search", "auth", "inventory", "frontend"];
const LEVELS: [&str; 4] = ["debug", "info", "warn", "error"];
const MESSAGES: [&str; 6] = [
    "request completed",
    "cache miss, fetching from upstream",
    "retrying after timeout",
    "user session refreshed",
    "slow query detected",
    "connection pool exhausted, queueing request",
];

/// Generates reproducible telemetry lines for one producer (splitmix64; no `rand` needed).
struct EventGenerator {
    producer: usize,
    state: u64,
}

impl EventGenerator {
    fn new(producer: usize) -> Self {
        EventGenerator {
            producer,
            state: 0x9e37_79b9_7f4a_7c15 ^ producer as u64,
        }
    }

    fn random(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.random() % from.len() as u64) as usize]
    }

    /// One JSON line of about 200 bytes.
    fn next(&mut self, seq: u64) -> Vec<u8> {
        let level = match self.random() % 100 {
            0..=9 => LEVELS[0],
            10..=84 => LEVELS[1],
            85..=96 => LEVELS[2],
            _ => LEVELS[3],
        };
        let event = serde_json::json!({
            "ts": 1_767_225_600_000u64 + seq,
            "service": self.pick(&SERVICES),
            "level": level,
            "msg": self.pick(&MESSAGES),
            "trace_id": format!("{:016x}{:016x}", self.random(), self.random()),
            "duration_ms": self.random() % 2_000,
            "producer": self.producer,
            "seq": seq,
        });
        serde_json::to_vec(&event).expect("a JSON value serializes")
    }
}

// ---------------------------------------------------------------------------------------
// Consumer and stages
// ---------------------------------------------------------------------------------------

/// A record from the log, decoded once for all stages.
#[derive(Debug)]
struct Event {
    /// The record itself (LSN and bytes), for stages that store it.
    record: Record,
    service: String,
    level: String,
    producer: usize,
    seq: u64,
}

impl Event {
    fn lsn(&self) -> Lsn {
        self.record.lsn
    }
}

fn decode(record: &Record) -> Result<Event, String> {
    let bad = |what: &str| format!("record {}: {what}", record.lsn);
    let json: Value = serde_json::from_slice(&record.payload).map_err(|e| bad(&format!("not JSON: {e}")))?;
    let text = |key: &str| {
        json[key]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| bad(&format!("no string `{key}`")))
    };
    let number = |key: &str| json[key].as_u64().ok_or_else(|| bad(&format!("no number `{key}`")));
    Ok(Event {
        service: text("service")?,
        level: text("level")?,
        producer: usize::try_from(number("producer")?).map_err(|e| bad(&e.to_string()))?,
        seq: number("seq")?,
        record: record.clone(),
    })
}

/// One step of processing behind the log. Records arrive in LSN order, each once.
///
/// Later issues add stages here (batching into Arrow, Parquet storage, indexing); a stage
/// that stores records elsewhere reports through [`Stage::retain_from`] how far that storage
/// is durable, and the janitor never truncates the log beyond what every stage has stored.
trait Stage {
    /// Processes one record.
    fn process(&mut self, event: &Event) -> Result<(), String>;

    /// The LSN below which this stage no longer needs the log.
    fn retain_from(&self) -> Lsn;

    /// Lines for the final report.
    fn summary(&self) -> Vec<String>;
}

/// Counts records per service and per level. It keeps nothing durable, so it never needs a
/// record again once counted: a stand-in until a storage stage holds the watermark back.
#[derive(Default)]
struct ServiceCounts {
    per_service: BTreeMap<String, u64>,
    per_level: BTreeMap<String, u64>,
    next: Lsn,
}

impl Stage for ServiceCounts {
    fn process(&mut self, event: &Event) -> Result<(), String> {
        *self.per_service.entry(event.service.clone()).or_default() += 1;
        *self.per_level.entry(event.level.clone()).or_default() += 1;
        self.next = event.lsn().next();
        Ok(())
    }

    fn retain_from(&self) -> Lsn {
        self.next
    }

    fn summary(&self) -> Vec<String> {
        let join = |m: &BTreeMap<String, u64>| m.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ");
        vec![
            format!("per service: {}", join(&self.per_service)),
            format!("per level:   {}", join(&self.per_level)),
        ]
    }
}

/// Follows the log, checks that records arrive in order and exactly once, and feeds the
/// stages.
struct Consumer {
    stages: Vec<Box<dyn Stage + Send>>,
    /// The LSN the next record must have.
    next: Lsn,
    first: Lsn,
    /// Per producer, the LSN of each record seen, indexed by the producer's sequence number.
    seen: Vec<Vec<Lsn>>,
    problems: Vec<String>,
    elapsed: Duration,
}

impl Consumer {
    fn new(n_producers: usize, first: Lsn, stages: Vec<Box<dyn Stage + Send>>) -> Self {
        Consumer {
            stages,
            next: first,
            first,
            seen: vec![Vec::new(); n_producers],
            problems: Vec::new(),
            elapsed: Duration::ZERO,
        }
    }

    fn n_consumed(&self) -> u64 {
        self.next.0 - self.first.0
    }

    fn run(mut self, wal: &Wal, progress: &Progress) -> Result<Self, String> {
        let started = Instant::now();
        let mut reader = wal.read_from(self.next).map_err(|e| format!("consumer: {e}"))?;
        let mut last_progress = Instant::now();
        loop {
            match reader.next() {
                Some(Ok(record)) => {
                    self.take(&record)?;
                    let retain_from = self.stages.iter().map(|s| s.retain_from()).min().unwrap_or(self.next);
                    progress.retain_from.store(retain_from.0, Ordering::Release);
                    last_progress = Instant::now();
                }
                Some(Err(e)) => return Err(format!("consumer: reading the log failed: {e}")),
                // Caught up: the reader yields more once more is durable.
                None => {
                    let end = progress.end.load(Ordering::Acquire);
                    if self.next.0 >= end {
                        break;
                    }
                    if end != u64::MAX && last_progress.elapsed() > STALL_LIMIT {
                        return Err(format!(
                            "consumer: stuck at LSN {} while the log ends at {end}",
                            self.next
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        self.elapsed = started.elapsed();
        Ok(self)
    }

    fn take(&mut self, record: &Record) -> Result<(), String> {
        if record.lsn != self.next {
            self.problems
                .push(format!("expected LSN {}, got {}", self.next, record.lsn));
        }
        self.next = record.lsn.next();
        let event = decode(record)?;
        match self.seen.get_mut(event.producer) {
            Some(seen) if seen.len() as u64 == event.seq => seen.push(event.lsn()),
            Some(seen) => self.problems.push(format!(
                "LSN {}: producer {} record {} arrived after record {}",
                event.lsn(),
                event.producer,
                event.seq,
                seen.len() as i128 - 1
            )),
            None => self
                .problems
                .push(format!("LSN {}: unknown producer {}", event.lsn(), event.producer)),
        }
        for stage in &mut self.stages {
            stage.process(&event)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Janitor
// ---------------------------------------------------------------------------------------

struct JanitorReport {
    truncations: u64,
    peak_segments: usize,
    retain_from: Lsn,
}

/// Releases segments behind the stages' watermark until told to stop, then once more.
fn janitor(wal: &Wal, progress: &Progress) -> Result<JanitorReport, String> {
    let mut report = JanitorReport {
        truncations: 0,
        peak_segments: 0,
        retain_from: Lsn::FIRST,
    };
    loop {
        let stopping = progress.stop.load(Ordering::Acquire);
        report.peak_segments = report.peak_segments.max(wal.stats().segment_count);
        let retain_from = Lsn(progress.retain_from.load(Ordering::Acquire));
        if retain_from > report.retain_from {
            wal.truncate_before(retain_from).map_err(|e| format!("janitor: {e}"))?;
            report.truncations += 1;
            report.retain_from = retain_from;
        }
        if stopping {
            return Ok(report);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------
// Recovery and report
// ---------------------------------------------------------------------------------------

struct Reopened {
    recovery: wit_wal::Recovery,
    stats: wit_wal::Stats,
    /// Records read back after reopening, and whether their LSNs ran without a gap.
    read_back: u64,
    contiguous: bool,
}

/// Reopens the log as a restarted process would and reads back what it retained.
fn reopen(dir: &Path, config: Config) -> Result<Reopened, String> {
    let wal = Wal::open(dir, config).map_err(|e| format!("reopening the log failed: {e}"))?;
    let stats = wal.stats();
    let (mut read_back, mut contiguous) = (0, true);
    let mut expected = stats.first_lsn.unwrap_or(stats.next_lsn);
    for record in wal.read_from(expected).map_err(|e| e.to_string())? {
        let record = record.map_err(|e| format!("reading back after reopening: {e}"))?;
        contiguous &= record.lsn == expected;
        expected = record.lsn.next();
        read_back += 1;
    }
    let recovery = wal.recovery().clone();
    wal.close().map_err(|e| e.to_string())?;
    Ok(Reopened {
        recovery,
        stats,
        read_back,
        contiguous,
    })
}

fn report(run: &RunOutcome, reopened: &Reopened) {
    let secs = run.append_time.as_secs_f64().max(1e-9);
    let n = run.n_acked();
    println!(
        "producers: {n} records acknowledged ({:.1} MiB) in {:.2} s: {:.0} records/s, {:.1} MiB/s",
        run.append_bytes as f64 / (1 << 20) as f64,
        secs,
        n as f64 / secs,
        run.append_bytes as f64 / (1 << 20) as f64 / secs
    );
    let c = &run.consumer;
    println!(
        "consumer:  {} records in {:.2} s",
        c.n_consumed(),
        c.elapsed.as_secs_f64()
    );
    for stage in &c.stages {
        for line in stage.summary() {
            println!("           {line}");
        }
    }
    let j = &run.janitor;
    println!(
        "janitor:   {} truncations; the log now starts at LSN {}, segments peaked at {} while running",
        j.truncations,
        reopened
            .stats
            .first_lsn
            .map_or_else(|| "(empty)".to_owned(), |l| l.to_string()),
        j.peak_segments
    );
    let r = &reopened.recovery;
    let torn = r.torn_tail.as_ref().map_or_else(
        || "none".to_owned(),
        |d| {
            format!(
                "`{}` offset {} (LSN {}): {}",
                d.path.display(),
                d.offset,
                d.lsn,
                d.reason
            )
        },
    );
    println!(
        "reopened:  recovery scanned {} segment(s); torn tail: {torn}",
        r.segments_scanned
    );
    let s = &reopened.stats;
    println!(
        "stats:     {} segment(s) + {} spare, {:.1} MiB on disk; first LSN {}, last LSN {}, next LSN {}; {} records read back",
        s.segment_count,
        s.spare_segments,
        s.bytes_on_disk as f64 / (1 << 20) as f64,
        s.first_lsn.map_or_else(|| "-".to_owned(), |l| l.to_string()),
        s.last_lsn.map_or_else(|| "-".to_owned(), |l| l.to_string()),
        s.next_lsn,
        reopened.read_back
    );
}

/// Checks that the consumer saw every acknowledged record exactly once, in order, and that
/// the reopened log holds what it should.
fn check(run: &RunOutcome, reopened: &Reopened) -> Result<(), String> {
    let c = &run.consumer;
    let mut problems = c.problems.clone();
    if let Some(e) = &run.producer_error {
        problems.push(e.clone());
    }
    for (p, (acked, seen)) in run.acked.iter().zip(&c.seen).enumerate() {
        if acked != seen {
            let first_diff = acked
                .iter()
                .zip(seen)
                .position(|(a, s)| a != s)
                .unwrap_or(acked.len().min(seen.len()));
            problems.push(format!(
                "producer {p}: {} records acknowledged, {} consumed; they differ from record {first_diff}",
                acked.len(),
                seen.len()
            ));
        }
    }
    if c.n_consumed() != run.n_acked() {
        problems.push(format!(
            "{} records acknowledged but {} consumed",
            run.n_acked(),
            c.n_consumed()
        ));
    }
    if reopened.stats.next_lsn != c.next {
        problems.push(format!(
            "reopened log continues at LSN {}, expected {}",
            reopened.stats.next_lsn, c.next
        ));
    }
    if !reopened.contiguous {
        problems.push("records read back after reopening have a gap".into());
    }
    if reopened.recovery.torn_tail.is_some() {
        problems.push("a cleanly closed log had a torn tail".into());
    }
    match problems.len() {
        0 => Ok(()),
        n => Err(format!("{n} problem(s):\n  {}", problems.join("\n  "))),
    }
}
