//! The example pipeline: Wit's main job, end to end, on embedded defaults.
//!
//! ```text
//! cargo run -p wit-examples --bin pipeline [-- --dir PATH --records N --producers N]
//! ```
//!
//! Log records arrive as OTLP export requests, are batched into envelopes, made durable in the
//! write-ahead log, converted to Arrow behind it and stored in Parquet, every batch tracked:
//!
//! 1. **Producers** (threads) stand in for OTLP/HTTP clients and the receiver in front of the
//!    log. Each generates `ExportLogsServiceRequest`s of a few log records (the service and
//!    severity vary; every record carries its producer and sequence number as attributes),
//!    encoded as protobuf, gzip'd protobuf, OTLP/JSON or gzip'd OTLP/JSON, and pushes each as
//!    a [`Part`] (one message) into its own [`Batcher`] (tenant `demo`, logs, HTTP). Every
//!    [`Envelope`] the batcher emits is appended through group commit: a producer keeps a
//!    window of envelopes in flight and waits for the oldest, so the threads share writes and
//!    `fdatasync`s, and an envelope is acknowledged only once it is durable. A part refused
//!    with [`Push::Full`] is pushed again after batches were emitted, never dropped, and
//!    `flush_all` sends the last batch.
//! 2. **The consumer** follows the log with a [`wit_wal::Reader`], decodes each record as an
//!    [`Envelope`], converts each part with [`otlp::logs::decode`] straight into an Arrow
//!    [`RecordBatch`] and hands the batches to the [`Processor`]s: one counts per service and
//!    severity from the Arrow columns; the other streams the rows into a [`ParquetSink`]
//!    (files under `data/`, closed every half second), whose catalog is the tracker. Indexing
//!    and SQL plug in here later.
//! 3. **The lifecycle** of every batch is tracked in [`Stage`]s in the embedded
//!    [`SqliteTracker`] (`tracker.db` beside the log), which checks each move against the
//!    lifecycle, so an illegal one (a batch converted twice, say) fails the run:
//!    `CREATED` when the batcher emits it, `WAL_WRITTEN` with its LSN when the consumer reads
//!    it (a reader yields only durable records, often before the producer's acknowledgment
//!    arrives), `INGESTED` once converted, and `STORED` when the Parquet file holding it is
//!    published: the tracker records the file and marks its batches in one transaction.
//!    `INDEXED` and `COMPLETED` come with the index step; the lifecycle allows no shortcut to
//!    them, so batches end here `STORED`.
//! 4. **The janitor** truncates the log behind the point that every processor no longer
//!    needs (the store holds it back until a batch's file is published), and fails the run if
//!    a batch behind that point is not `STORED` in the tracker.
//! 5. **Recovery**: the log is closed and reopened, and what recovery found is shown.
//!
//! It runs in a fresh temporary directory unless `--dir` names a new or empty one, and exits
//! 1 unless every acknowledged log record was converted exactly once, in LSN order: the
//! consumer reads the LSNs without a gap; each producer's envelopes arrive with the LSNs and
//! batch ids they were acknowledged with; each envelope converts to exactly the records its
//! producer batched into it (found by their producer and sequence-number attributes), so
//! rows converted equal records acknowledged; and the requests of each encoding arrive as
//! often as they were sent; and the files the tracker's catalog lists hold as many rows.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{Int32Type, Int64Type};
use arrow::record_batch::RecordBatch;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use wit_batch::{BatchId, BatchKey, Batcher, BatcherConfig, Compression, Envelope, Part, PayloadFormat, Push};
use wit_batch::{BatchMeta, Signal, SourceKind, Stage, Tenant, otlp};
use wit_store::{Destination, FileCatalog, NodeName, ParquetSink, SinkConfig, StoredFile};
use wit_tracker::{Advance, Registration, SqliteTracker, Tracker as _, TrackerConfig, TrackerExt, Window};
use wit_wal::{Commit, Config, Lsn, Record, Wal};

const USAGE: &str = "\
pipeline: Wit's example pipeline (OTLP producers -> batcher -> WAL -> Arrow -> Parquet, tracked in SQLite; janitor, recovery)

Usage:
    pipeline [--dir PATH] [--records N] [--producers N]

Options:
    --dir PATH        where the run keeps its WAL (PATH/wal), tracker (PATH/tracker.db) and
                      Parquet files (PATH/data);
                      must be new or empty (default: a temporary directory)
    --records N       log records to send in all (default 20000)
    --producers N     producer threads (default 4)
";

/// Segment size: small enough that the run fills several segments and truncation visibly
/// releases (and recycles) them. 20k log records make about 4 MiB of envelopes.
const SEGMENT_SIZE: u64 = 1 << 20;
/// The tenant every batch belongs to.
const TENANT: &str = "demo";
/// Requests (messages) per batch. A batch also leaves once [`BATCH_MAX_AGE`] old.
const BATCH_MESSAGES: u64 = 8;
/// How long a producer's open batch may wait for more requests.
const BATCH_MAX_AGE: Duration = Duration::from_millis(50);
/// Log records per request: from 1 to this many.
const MAX_RECORDS_PER_REQUEST: u64 = 8;
/// Envelopes a producer has submitted and not yet seen acknowledged; it waits for the oldest
/// beyond this. Several envelopes per `fdatasync` is what makes group commit fast.
const PRODUCER_WINDOW: usize = 8;
/// How long the consumer may see no new record, with all producers done, before it fails.
const STALL_LIMIT: Duration = Duration::from_secs(10);
/// The Parquet sink closes (and publishes) a file after this long.
const FILE_MAX_AGE: Duration = Duration::from_millis(500);
/// Problems listed in the failure message; the rest are counted.
const MAX_PROBLEMS_SHOWN: usize = 20;

/// How a request is encoded, and how often producers choose it (out of 100).
struct Encoding {
    name: &'static str,
    format: PayloadFormat,
    compression: Compression,
    percent: u64,
}

/// The encodings producers send: every input path of [`otlp::logs::decode`].
const ENCODINGS: [Encoding; 4] = [
    Encoding {
        name: "protobuf",
        format: PayloadFormat::OtlpProtobuf,
        compression: Compression::None,
        percent: 55,
    },
    Encoding {
        name: "protobuf+gzip",
        format: PayloadFormat::OtlpProtobuf,
        compression: Compression::Gzip,
        percent: 20,
    },
    Encoding {
        name: "json",
        format: PayloadFormat::OtlpJson,
        compression: Compression::None,
        percent: 20,
    },
    Encoding {
        name: "json+gzip",
        format: PayloadFormat::OtlpJson,
        compression: Compression::Gzip,
        percent: 5,
    },
];

/// Requests per encoding, indexed like [`ENCODINGS`].
type EncodingCounts = [u64; ENCODINGS.len()];

fn encoding_summary(counts: &EncodingCounts) -> String {
    ENCODINGS
        .iter()
        .zip(counts)
        .map(|(e, n)| format!("{} {n}", e.name))
        .collect::<Vec<_>>()
        .join(", ")
}

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
            println!("ok: every acknowledged log record was converted exactly once, in LSN order");
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
    let root = match &options.dir {
        Some(dir) => {
            let is_empty = std::fs::read_dir(dir).map_or(true, |mut entries| entries.next().is_none());
            if !is_empty {
                return Err(format!(
                    "`{}` is not empty; give a new or empty directory",
                    dir.display()
                ));
            }
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
            dir.clone()
        }
        None => {
            temp = tempfile::tempdir().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
            temp.path().to_owned()
        }
    };
    let dir = root.join("wal");
    let tracker_path = root.join("tracker.db");
    let config = Config::default().with_segment_size(SEGMENT_SIZE);
    println!(
        "pipeline: {} producers send {} log records as OTLP requests, batched into envelopes, to {} \
         ({} KiB segments, fdatasync per group); batches tracked in {}",
        options.producers,
        options.records,
        dir.display(),
        SEGMENT_SIZE >> 10,
        tracker_path.display()
    );

    let wal = Wal::open(&dir, config.clone()).map_err(|e| e.to_string())?;
    let run = run_stages(&wal, &tracker_path, &root.join("data"), options)?;
    wal.close().map_err(|e| format!("closing the log failed: {e}"))?;

    let reopened = reopen(&dir, config)?;
    report(&run, &reopened);
    check(&run, &reopened)
}

/// One envelope as its producer sent it or as the consumer converted it: comparing the two
/// lists checks LSNs, batch ids and contents at once.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BatchLedger {
    lsn: Lsn,
    id: BatchId,
    /// The producer's sequence numbers of the log records in it.
    seqs: Range<u64>,
    /// Log records: as the producer counted them, or rows converted to Arrow.
    records: u64,
}

/// What the stages did while the log was open.
struct RunOutcome {
    /// Log records the producers were to send.
    requested: u64,
    /// Per producer, the envelopes acknowledged, in order.
    acked: Vec<Vec<BatchLedger>>,
    /// Requests sent, per encoding.
    sent: EncodingCounts,
    /// Envelope bytes appended.
    append_bytes: u64,
    append_time: Duration,
    consumer: Consumer,
    janitor: JanitorReport,
    lifecycle: LifecycleReport,
    /// Rows in the Parquet files the tracker's catalog lists.
    stored_rows: u64,
    /// The first error of a producer, if any (the other stages still finish).
    producer_error: Option<String>,
}

impl RunOutcome {
    fn n_batches_acked(&self) -> u64 {
        self.acked.iter().map(|a| a.len() as u64).sum()
    }

    fn n_records_acked(&self) -> u64 {
        self.acked.iter().flatten().map(|b| b.records).sum()
    }
}

/// Runs producers, consumer and janitor on threads that share the log, until every
/// acknowledged envelope has been consumed.
fn run_stages(wal: &Wal, tracker_path: &Path, data_dir: &Path, options: &Options) -> Result<RunOutcome, String> {
    let key = BatchKey::new(
        Tenant::try_new(TENANT).map_err(|e| e.to_string())?,
        Signal::Logs,
        SourceKind::Http,
    );
    let batcher_config = BatcherConfig::default()
        .with_max_messages(BATCH_MESSAGES)
        .with_max_age(BATCH_MAX_AGE);
    let progress = Progress {
        end: AtomicU64::new(u64::MAX),
        retain_from: AtomicU64::new(Lsn::FIRST.0),
        stop: AtomicBool::new(false),
    };
    let tracker = Tracker::open(tracker_path)?;
    let first = wal.stats().next_lsn;
    let store = ParquetStore::open(data_dir, Arc::new(tracker.db.clone()))?;
    let processors: Vec<Box<dyn Processor + Send>> = vec![Box::new(ServiceCounts::default()), Box::new(store)];
    std::thread::scope(|s| {
        let (progress, tracker) = (&progress, &tracker);
        let consumer = s.spawn(move || Consumer::new(options.producers, first, processors).run(wal, tracker, progress));
        let janitor = s.spawn(move || janitor(wal, tracker, progress));

        let started = Instant::now();
        let producers: Vec<_> = (0..options.producers)
            .map(|p| {
                // Spread the records; the first producers take the remainder.
                let n = options.records / options.producers as u64
                    + u64::from((p as u64) < options.records % options.producers as u64);
                let (key, batcher_config) = (key.clone(), batcher_config.clone());
                s.spawn(move || produce(wal, tracker, key, batcher_config, p, n))
            })
            .collect();
        let mut acked = Vec::new();
        let mut sent = EncodingCounts::default();
        let mut append_bytes = 0;
        let mut producer_error = None;
        for handle in producers {
            let outcome = handle
                .join()
                .unwrap_or_else(|_| ProducerOutcome::failed("producer panicked"));
            acked.push(outcome.acked);
            for (total, n) in sent.iter_mut().zip(outcome.sent) {
                *total += n;
            }
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
            requested: options.records,
            acked,
            sent,
            append_bytes,
            append_time,
            consumer: consumer?,
            janitor,
            lifecycle: tracker.report()?,
            stored_rows: tracker.stored_rows()?,
            producer_error,
        })
    })
}

/// What the threads tell each other.
struct Progress {
    /// The LSN after the last acknowledged envelope, once all producers are done.
    end: AtomicU64,
    /// The LSN below which no processor needs the log any more: the janitor may truncate there.
    retain_from: AtomicU64,
    /// Tells the janitor to stop.
    stop: AtomicBool,
}

// ---------------------------------------------------------------------------------------
// Lifecycle
// ---------------------------------------------------------------------------------------

/// The lifecycle [`Stage`] of every batch, kept in the embedded [`SqliteTracker`]
/// (`tracker.db` beside the log), shared by the threads. Every move goes through the tracker,
/// which checks it against the lifecycle; an illegal one is an error that fails the run. The
/// LSN bookkeeping that cross-checks producers, consumer and janitor stays in memory.
struct Tracker {
    db: SqliteTracker,
    state: Mutex<TrackerState>,
}

#[derive(Default)]
struct TrackerState {
    /// The LSN of every batch's envelope.
    lsns: HashMap<BatchId, Lsn>,
    /// Batches by LSN that the janitor's truncation point has not passed yet.
    retained: BTreeMap<Lsn, BatchId>,
    /// Batches behind the janitor's truncation point.
    released: u64,
}

fn stage_index(stage: Stage) -> usize {
    Stage::ALL
        .iter()
        .position(|s| *s == stage)
        .expect("every stage is in Stage::ALL")
}

/// What the tracker saw, for the report and the final check.
struct LifecycleReport {
    n_batches: u64,
    /// Per stage (indexed like [`Stage::ALL`]), how many batches reached it.
    reached: [u64; Stage::ALL.len()],
    /// Per stage, how many batches are in it now.
    current: [u64; Stage::ALL.len()],
    released: u64,
}

impl Tracker {
    fn open(path: &Path) -> Result<Self, String> {
        let db = SqliteTracker::open(path, TrackerConfig::default())
            .map_err(|e| format!("cannot open the tracker `{}`: {e}", path.display()))?;
        Ok(Tracker {
            db,
            state: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, TrackerState> {
        // A thread that panicked while holding the lock fails the run anyway.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a batch the batcher just emitted, as `CREATED`.
    fn created(&self, meta: &BatchMeta) -> Result<(), String> {
        match self.db.register_one(meta).map_err(|e| format!("tracker: {e}"))? {
            Registration::Registered => Ok(()),
            Registration::AlreadyRegistered => Err(format!("batch {} was created twice", meta.id)),
        }
    }

    /// Notes the LSN of a batch's envelope; the producer (at submission) and the consumer
    /// (reading it) both report it, and must agree.
    fn record_lsn(&self, id: BatchId, lsn: Lsn) -> Result<(), String> {
        let mut state = self.lock();
        match state.lsns.get(&id) {
            Some(known) if *known == lsn => return Ok(()),
            Some(known) => return Err(format!("batch {id} is at LSN {known} and at LSN {lsn}")),
            None => {
                state.lsns.insert(id, lsn);
            }
        }
        if let Some(other) = state.retained.insert(lsn, id) {
            return Err(format!("LSN {lsn} holds batch {other} and batch {id}"));
        }
        Ok(())
    }

    /// Moves a batch to stage `to` in the tracker (with its WAL position when that is
    /// `WAL_WRITTEN`): a move already applied changes nothing (`AlreadyApplied`), an illegal
    /// one is an error.
    fn advance(&self, id: BatchId, to: Stage) -> Result<(), String> {
        let mut step = Advance::new(id, to, SystemTime::now());
        if to == Stage::WalWritten {
            let lsn = self.lock().lsns.get(&id).copied();
            let lsn = lsn.ok_or_else(|| format!("batch {id} has no LSN"))?;
            step = step.with_wal_position("pipeline", lsn.0);
        }
        self.db.advance(&[step]).map_err(|e| format!("tracker: {e}"))?;
        Ok(())
    }

    /// Notes that the log was truncated before `lsn`: every batch there must be `STORED` in
    /// the tracker, since nothing else holds its records. Returns how many batches it passed.
    fn release_before(&self, lsn: Lsn) -> Result<u64, String> {
        let released = {
            let mut state = self.lock();
            let retained = state.retained.split_off(&lsn);
            std::mem::replace(&mut state.retained, retained)
        };
        for (at, id) in &released {
            let stage = self.db.batch(*id).map_err(|e| format!("tracker: {e}"))?.stage;
            if stage != Stage::Stored {
                return Err(format!(
                    "janitor: truncated before LSN {lsn}, past batch {id} (LSN {at}), which is {stage}, not STORED"
                ));
            }
        }
        self.lock().released += released.len() as u64;
        Ok(released.len() as u64)
    }

    /// Rows in the files the tracker's catalog lists for the pipeline's tenant.
    fn stored_rows(&self) -> Result<u64, String> {
        let tenant = Tenant::try_new(TENANT).map_err(|e| e.to_string())?;
        let files = self
            .db
            .list(&tenant, Signal::Logs, None)
            .map_err(|e| format!("tracker: {e}"))?;
        Ok(files.iter().map(|f| f.rows).sum())
    }

    fn report(&self) -> Result<LifecycleReport, String> {
        let everything = Window::new(SystemTime::UNIX_EPOCH, SystemTime::now() + Duration::from_secs(86_400));
        let counts = self.db.stage_counts(everything).map_err(|e| format!("tracker: {e}"))?;
        let state = self.lock();
        // The stages reached, as the tracker recorded them (STORED comes through the catalog).
        let mut reached = [0; Stage::ALL.len()];
        for id in state.lsns.keys() {
            let record = self.db.batch(*id).map_err(|e| format!("tracker: {e}"))?;
            for stage in Stage::ALL {
                if record.completed_at.get(stage).is_some() {
                    reached[stage_index(stage)] += 1;
                }
            }
        }
        Ok(LifecycleReport {
            n_batches: counts.total(),
            reached,
            current: Stage::ALL.map(|stage| counts.get(stage)),
            released: state.released,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Producers
// ---------------------------------------------------------------------------------------

struct ProducerOutcome {
    acked: Vec<BatchLedger>,
    sent: EncodingCounts,
    /// Envelope bytes submitted.
    bytes: u64,
    error: Option<String>,
}

impl ProducerOutcome {
    fn failed(error: &str) -> Self {
        ProducerOutcome {
            acked: Vec::new(),
            sent: EncodingCounts::default(),
            bytes: 0,
            error: Some(error.into()),
        }
    }
}

/// Sends `n` log records in generated requests through a batcher into the log, and returns
/// each envelope as it is acknowledged.
fn produce(
    wal: &Wal,
    tracker: &Tracker,
    key: BatchKey,
    config: BatcherConfig,
    producer: usize,
    n: u64,
) -> ProducerOutcome {
    let batcher = match Batcher::try_new(config) {
        Ok(batcher) => batcher,
        Err(e) => return ProducerOutcome::failed(&format!("producer {producer}: {e}")),
    };
    let mut p = Producer {
        wal,
        tracker,
        key,
        batcher,
        pending: VecDeque::new(),
        in_flight: VecDeque::with_capacity(PRODUCER_WINDOW),
        outcome: ProducerOutcome {
            acked: Vec::new(),
            sent: EncodingCounts::default(),
            bytes: 0,
            error: None,
        },
    };
    if let Err(e) = p.run(producer, n) {
        p.outcome.error = Some(format!("producer {producer}: {e}"));
    }
    p.outcome
}

/// A producer's state: its batcher, and the envelopes in flight.
struct Producer<'a> {
    wal: &'a Wal,
    tracker: &'a Tracker,
    key: BatchKey,
    batcher: Batcher,
    /// The sequence numbers of the requests in the batcher, oldest first: an emitted envelope
    /// holds the oldest of them (one key, so the batcher keeps the order).
    pending: VecDeque<Range<u64>>,
    /// Submitted envelopes, oldest first.
    in_flight: VecDeque<(Commit, BatchLedger)>,
    outcome: ProducerOutcome,
}

impl Producer<'_> {
    fn run(&mut self, producer: usize, n: u64) -> Result<(), String> {
        let mut requests = RequestGenerator::new(producer);
        let mut seq = 0;
        while seq < n {
            let n_records = (1 + requests.random() % MAX_RECORDS_PER_REQUEST).min(n - seq);
            let request = requests.next(seq..seq + n_records);
            seq += n_records;
            let encoding = &ENCODINGS[request.encoding];
            self.outcome.sent[request.encoding] += 1;
            self.pending.push_back(request.seqs);
            // One request is one message, whatever it holds.
            let part = Part::new(encoding.format, encoding.compression, 1, request.payload);
            self.push(part)?;
        }
        let last = self.batcher.flush_all();
        self.send(last)?;
        while !self.in_flight.is_empty() {
            self.wait_oldest()?;
        }
        Ok(())
    }

    /// Pushes a part into the batcher and sends the batches it completes.
    fn push(&mut self, mut part: Part) -> Result<(), String> {
        loop {
            let now = Instant::now();
            match self.batcher.push(&self.key, part, now) {
                Push::Accepted { ready } => return self.send(ready),
                // Never drop a part: emit what is old enough (or else everything), push again.
                // With nothing held, the batcher accepts any part.
                Push::Full(refused) => {
                    part = refused;
                    let mut ready = self.batcher.poll_expired(now);
                    if ready.is_empty() {
                        ready = self.batcher.flush_all();
                    }
                    self.send(ready)?;
                }
            }
        }
    }

    /// Appends each envelope through group commit, waiting for the oldest in flight beyond
    /// the window.
    fn send(&mut self, envelopes: Vec<Envelope>) -> Result<(), String> {
        for envelope in envelopes {
            let id = envelope.meta().id;
            let n_parts = envelope.parts().len();
            if n_parts == 0 || n_parts > self.pending.len() {
                return Err(format!(
                    "batch {id} holds {n_parts} requests, {} were pending",
                    self.pending.len()
                ));
            }
            let seqs = self.pending[0].start..self.pending[n_parts - 1].end;
            self.pending.drain(..n_parts);
            if self.in_flight.len() == PRODUCER_WINDOW {
                self.wait_oldest()?;
            }
            self.tracker.created(envelope.meta())?;
            let bytes = envelope.encode();
            let commit = self.wal.submit(&bytes).map_err(|e| e.to_string())?;
            let lsn = commit.lsns().start;
            self.tracker.record_lsn(id, lsn)?;
            self.outcome.bytes += bytes.len() as u64;
            let records = seqs.end - seqs.start;
            self.in_flight
                .push_back((commit, BatchLedger { lsn, id, seqs, records }));
        }
        Ok(())
    }

    /// Waits until the oldest envelope in flight is durable: then it is acknowledged.
    fn wait_oldest(&mut self) -> Result<(), String> {
        let Some((commit, batch)) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let lsns = commit.wait().map_err(|e| e.to_string())?;
        if lsns.start != batch.lsn || lsns.len() != 1 {
            return Err(format!(
                "batch {} submitted as LSN {}, acknowledged as {lsns:?}",
                batch.id, batch.lsn
            ));
        }
        self.outcome.acked.push(batch);
        Ok(())
    }
}

const SERVICES: [&str; 6] = ["checkout", "payments", "search", "auth", "inventory", "frontend"];
const SEVERITIES: [(SeverityNumber, &str); 4] = [
    (SeverityNumber::Debug, "DEBUG"),
    (SeverityNumber::Info, "INFO"),
    (SeverityNumber::Warn, "WARN"),
    (SeverityNumber::Error, "ERROR"),
];
const MESSAGES: [&str; 6] = [
    "request completed",
    "cache miss, fetching from upstream",
    "retrying after timeout",
    "user session refreshed",
    "slow query detected",
    "connection pool exhausted, queueing request",
];
/// 2026-01-01T00:00:00Z, in nanoseconds since the Unix epoch.
const BASE_TIME_NANOS: u64 = 1_767_225_600_000_000_000;

/// A generated request, encoded.
struct Request {
    /// Index into [`ENCODINGS`].
    encoding: usize,
    payload: Vec<u8>,
    /// The sequence numbers of its log records.
    seqs: Range<u64>,
}

/// Generates reproducible OTLP log requests for one producer (splitmix64; no `rand` needed).
struct RequestGenerator {
    producer: usize,
    state: u64,
}

impl RequestGenerator {
    fn new(producer: usize) -> Self {
        RequestGenerator {
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

    fn random_bytes(&mut self, n: usize) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(n + 8);
        while bytes.len() < n {
            bytes.extend_from_slice(&self.random().to_le_bytes());
        }
        bytes.truncate(n);
        bytes
    }

    /// A request from one service with the log records `seqs`, in a random encoding.
    fn next(&mut self, seqs: Range<u64>) -> Request {
        let service = self.pick(&SERVICES);
        let mut log_records = Vec::with_capacity((seqs.end - seqs.start) as usize);
        for seq in seqs.clone() {
            let (severity_number, severity_text) = match self.random() % 100 {
                0..=9 => SEVERITIES[0],
                10..=84 => SEVERITIES[1],
                85..=96 => SEVERITIES[2],
                _ => SEVERITIES[3],
            };
            let time = BASE_TIME_NANOS + seq * 1_000_000;
            log_records.push(LogRecord {
                time_unix_nano: time,
                observed_time_unix_nano: time + self.random() % 1_000_000,
                severity_number: severity_number as i32,
                severity_text: severity_text.to_owned(),
                body: Some(string_value(self.pick(&MESSAGES))),
                attributes: vec![
                    int_attribute("producer", self.producer as i64),
                    int_attribute("seq", seq as i64),
                    int_attribute("duration_ms", (self.random() % 2_000) as i64),
                ],
                trace_id: self.random_bytes(16),
                span_id: self.random_bytes(8),
                ..Default::default()
            });
        }
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".to_owned(),
                        value: Some(string_value(service)),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: "wit.pipeline".to_owned(),
                        ..Default::default()
                    }),
                    log_records,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };

        let mut roll = self.random() % 100;
        let encoding = ENCODINGS
            .iter()
            .position(|e| {
                let hit = roll < e.percent;
                roll = roll.saturating_sub(e.percent);
                hit
            })
            .unwrap_or(0);
        let e = &ENCODINGS[encoding];
        let bytes = match e.format {
            PayloadFormat::OtlpJson => serde_json::to_vec(&request).expect("a request serializes to JSON"),
            _ => request.encode_to_vec(),
        };
        let payload = match e.compression {
            Compression::Gzip => {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(&bytes).expect("writing to memory");
                gz.finish().expect("writing to memory")
            }
            _ => bytes,
        };
        Request {
            encoding,
            payload,
            seqs,
        }
    }
}

fn string_value(s: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s.to_owned())),
    }
}

fn int_attribute(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------
// Consumer and processors
// ---------------------------------------------------------------------------------------

/// An envelope from the log, converted once for all processors.
struct Batch<'a> {
    lsn: Lsn,
    id: BatchId,
    /// One logs table per request.
    logs: &'a [RecordBatch],
}

/// One step of processing behind the log. Batches arrive in LSN order, each once.
///
/// A processor that stores batches elsewhere (the Parquet store; indexing later) reports
/// through [`Processor::retain_from`] how far that storage is durable, and the janitor never
/// truncates the log beyond what every processor has stored.
trait Processor {
    /// Processes one batch.
    fn process(&mut self, batch: &Batch<'_>) -> Result<(), String>;

    /// The LSN below which this processor no longer needs the log.
    fn retain_from(&self) -> Lsn;

    /// Lines for the final report.
    fn summary(&self) -> Vec<String>;

    /// Called once every batch was processed: whatever is still held is made durable.
    fn finish(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// Stores every batch in Parquet through a [`ParquetSink`] (files under `data/`, closed
/// every half second and at the end), with the tracker as the sink's catalog: publishing a
/// file marks its batches `STORED` in the same transaction. It holds the log back until the
/// file holding a batch is published.
struct ParquetStore {
    sink: ParquetSink,
    tenant: Tenant,
    /// Batches written to the sink whose file is not published yet, by LSN.
    unstored: BTreeMap<Lsn, BatchId>,
    next: Lsn,
    files: u64,
    rows: u64,
    bytes: u64,
    dir: PathBuf,
}

impl ParquetStore {
    fn open(dir: &Path, catalog: Arc<dyn FileCatalog>) -> Result<Self, String> {
        let node = NodeName::try_new("pipeline").map_err(|e| e.to_string())?;
        let config = SinkConfig::new(node).with_max_file_age(FILE_MAX_AGE);
        let destination = Destination::local(dir).map_err(|e| format!("store: {e}"))?;
        let sink = ParquetSink::open(destination, config)
            .map_err(|e| format!("store: {e}"))?
            .with_catalog(catalog);
        Ok(ParquetStore {
            sink,
            tenant: Tenant::try_new(TENANT).map_err(|e| e.to_string())?,
            unstored: BTreeMap::new(),
            next: Lsn::FIRST,
            files: 0,
            rows: 0,
            bytes: 0,
            dir: dir.to_owned(),
        })
    }

    fn published(&mut self, files: Vec<StoredFile>) {
        for file in files {
            self.files += 1;
            self.rows += file.rows;
            self.bytes += file.bytes;
            self.unstored.retain(|_, id| !file.batch_ids.contains(id));
        }
    }
}

impl Processor for ParquetStore {
    fn process(&mut self, batch: &Batch<'_>) -> Result<(), String> {
        for logs in batch.logs {
            self.sink
                .write(&self.tenant, Signal::Logs, logs, &[batch.id])
                .map_err(|e| format!("store: {e}"))?;
        }
        self.unstored.insert(batch.lsn, batch.id);
        self.next = batch.lsn.next();
        let files = self.sink.poll(Instant::now()).map_err(|e| format!("store: {e}"))?;
        self.published(files);
        Ok(())
    }

    fn retain_from(&self) -> Lsn {
        self.unstored.keys().next().copied().unwrap_or(self.next)
    }

    fn summary(&self) -> Vec<String> {
        vec![format!(
            "stored:       {} rows in {} Parquet file(s), {:.1} KiB (ZSTD) under {}",
            self.rows,
            self.files,
            self.bytes as f64 / 1024.0,
            self.dir.display()
        )]
    }

    fn finish(&mut self) -> Result<(), String> {
        let files = self.sink.flush().map_err(|e| format!("store: {e}"))?;
        self.published(files);
        if !self.sink.pending().is_empty() {
            return Err(format!(
                "store: {} file(s) could not be published",
                self.sink.pending().len()
            ));
        }
        Ok(())
    }
}

/// Counts log records per service and severity, from the Arrow columns. It keeps nothing
/// durable, so it never needs a batch again once counted: a stand-in until a storage step
/// holds the watermark back.
#[derive(Default)]
struct ServiceCounts {
    per_service: BTreeMap<String, u64>,
    per_severity: BTreeMap<&'static str, u64>,
    next: Lsn,
}

impl Processor for ServiceCounts {
    fn process(&mut self, batch: &Batch<'_>) -> Result<(), String> {
        for logs in batch.logs {
            let services = column(logs, "service_name")?
                .as_string_opt::<i32>()
                .ok_or("`service_name` is not Utf8")?;
            let severities = column(logs, "severity_number")?
                .as_primitive_opt::<Int32Type>()
                .ok_or("`severity_number` is not Int32")?;
            for row in 0..logs.num_rows() {
                let service = if services.is_valid(row) {
                    services.value(row)
                } else {
                    "(none)"
                };
                match self.per_service.get_mut(service) {
                    Some(n) => *n += 1,
                    None => {
                        self.per_service.insert(service.to_owned(), 1);
                    }
                }
                *self
                    .per_severity
                    .entry(severity_name(severities.value(row)))
                    .or_default() += 1;
            }
        }
        self.next = batch.lsn.next();
        Ok(())
    }

    fn retain_from(&self) -> Lsn {
        self.next
    }

    fn summary(&self) -> Vec<String> {
        let join = |m: Vec<(&str, u64)>| m.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ");
        // Severities in order of severity, not of name.
        let mut severities: Vec<_> = self.per_severity.iter().map(|(k, n)| (*k, *n)).collect();
        severities.sort_by_key(|(name, _)| SEVERITY_ORDER.iter().position(|s| s == name));
        vec![
            format!(
                "per service:  {}",
                join(self.per_service.iter().map(|(k, n)| (k.as_str(), *n)).collect())
            ),
            format!("per severity: {}", join(severities)),
        ]
    }
}

const SEVERITY_ORDER: [&str; 8] = [
    "UNSPECIFIED",
    "TRACE",
    "DEBUG",
    "INFO",
    "WARN",
    "ERROR",
    "FATAL",
    "INVALID",
];

/// The severity range of an OTLP severity number (`INFO` for 9 to 12, ...).
fn severity_name(number: i32) -> &'static str {
    match number {
        0 => SEVERITY_ORDER[0],
        1..=24 => SEVERITY_ORDER[1 + (number as usize - 1) / 4],
        _ => SEVERITY_ORDER[7],
    }
}

fn column<'a>(logs: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, String> {
    logs.column_by_name(name)
        .ok_or_else(|| format!("the logs table has no `{name}` column"))
}

/// The `producer` and `seq` attributes of each row.
fn producer_seqs(logs: &RecordBatch) -> Result<Vec<(usize, u64)>, String> {
    let attributes = column(logs, "attributes")?
        .as_map_opt()
        .ok_or("`attributes` is not a map")?;
    let keys = attributes
        .keys()
        .as_string_opt::<i32>()
        .ok_or("attribute keys are not Utf8")?;
    let ints = attributes
        .values()
        .as_struct_opt()
        .and_then(|values| values.column_by_name("int"))
        .and_then(|ints| ints.as_primitive_opt::<Int64Type>())
        .ok_or("attribute values have no Int64 `int` child")?;
    let offsets = attributes.value_offsets();
    (0..logs.num_rows())
        .map(|row| {
            let (mut producer, mut seq) = (None, None);
            for entry in offsets[row] as usize..offsets[row + 1] as usize {
                let slot = match keys.value(entry) {
                    "producer" => &mut producer,
                    "seq" => &mut seq,
                    _ => continue,
                };
                *slot = ints.is_valid(entry).then(|| ints.value(entry));
            }
            match (producer.map(usize::try_from), seq.map(u64::try_from)) {
                (Some(Ok(producer)), Some(Ok(seq))) => Ok((producer, seq)),
                _ => Err(format!(
                    "row {row} has no valid integer `producer` and `seq` attributes"
                )),
            }
        })
        .collect()
}

/// Follows the log, converts each envelope to Arrow, checks that envelopes arrive in LSN
/// order and every log record exactly once, and feeds the processors.
struct Consumer {
    processors: Vec<Box<dyn Processor + Send>>,
    /// The LSN the next envelope must have.
    next: Lsn,
    first: Lsn,
    /// Per producer, the envelopes converted, in order.
    seen: Vec<Vec<BatchLedger>>,
    /// Per producer, the sequence number its next log record must have.
    next_seq: Vec<u64>,
    /// Requests converted, per encoding.
    received: EncodingCounts,
    n_rows: u64,
    problems: Vec<String>,
    elapsed: Duration,
}

impl Consumer {
    fn new(n_producers: usize, first: Lsn, processors: Vec<Box<dyn Processor + Send>>) -> Self {
        Consumer {
            processors,
            next: first,
            first,
            seen: vec![Vec::new(); n_producers],
            next_seq: vec![0; n_producers],
            received: EncodingCounts::default(),
            n_rows: 0,
            problems: Vec::new(),
            elapsed: Duration::ZERO,
        }
    }

    fn n_consumed(&self) -> u64 {
        self.next.0 - self.first.0
    }

    fn n_requests(&self) -> u64 {
        self.received.iter().sum()
    }

    fn run(mut self, wal: &Wal, tracker: &Tracker, progress: &Progress) -> Result<Self, String> {
        let started = Instant::now();
        let mut reader = wal.read_from(self.next).map_err(|e| format!("consumer: {e}"))?;
        let mut last_progress = Instant::now();
        loop {
            match reader.next() {
                Some(Ok(record)) => {
                    self.take(&record, tracker).map_err(|e| format!("consumer: {e}"))?;
                    self.publish_watermark(progress);
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
        for processor in &mut self.processors {
            processor.finish()?;
        }
        self.publish_watermark(progress);
        self.elapsed = started.elapsed();
        Ok(self)
    }

    /// Tells the janitor the LSN below which no processor needs the log any more.
    fn publish_watermark(&self, progress: &Progress) {
        let retain_from = self
            .processors
            .iter()
            .map(|p| p.retain_from())
            .min()
            .unwrap_or(self.next);
        progress.retain_from.store(retain_from.0, Ordering::Release);
    }

    fn take(&mut self, record: &Record, tracker: &Tracker) -> Result<(), String> {
        let lsn = record.lsn;
        if lsn != self.next {
            self.problems.push(format!("expected LSN {}, got {lsn}", self.next));
        }
        self.next = lsn.next();
        let envelope = Envelope::decode(&record.payload).map_err(|e| format!("LSN {lsn}: {e}"))?;
        let meta = envelope.meta();
        let id = meta.id;
        // The reader yields only durable records: reading it shows it is WAL_WRITTEN.
        tracker.record_lsn(id, lsn)?;
        tracker.advance(id, Stage::WalWritten)?;

        let mut logs = Vec::with_capacity(envelope.parts().len());
        for (idx, part) in envelope.parts().iter().enumerate() {
            let table = otlp::logs::decode(&part.payload, part.format, part.compression)
                .map_err(|e| format!("LSN {lsn}, batch {id}, request {idx}: {e}"))?;
            if table.num_rows() == 0 {
                self.problems
                    .push(format!("LSN {lsn}, batch {id}, request {idx}: no log records"));
            }
            match ENCODINGS
                .iter()
                .position(|e| e.format == part.format && e.compression == part.compression)
            {
                Some(encoding) => self.received[encoding] += 1,
                None => self.problems.push(format!(
                    "LSN {lsn}, batch {id}, request {idx}: {} ({}) was never sent",
                    part.format, part.compression
                )),
            }
            logs.push(table);
        }
        if meta.message_count != logs.len() as u64 {
            self.problems.push(format!(
                "LSN {lsn}, batch {id}: {} messages in the header, {} requests converted",
                meta.message_count,
                logs.len()
            ));
        }

        // Every row must be its producer's next record; an envelope holds one producer's.
        let mut ledger: Option<(usize, BatchLedger)> = None;
        for table in &logs {
            for (producer, seq) in producer_seqs(table).map_err(|e| format!("LSN {lsn}, batch {id}: {e}"))? {
                let Some(next_seq) = self.next_seq.get_mut(producer) else {
                    self.problems.push(format!("LSN {lsn}: unknown producer {producer}"));
                    continue;
                };
                if seq == *next_seq {
                    *next_seq += 1;
                } else {
                    self.problems.push(format!(
                        "LSN {lsn}: producer {producer} record {seq} arrived after record {}",
                        *next_seq as i128 - 1
                    ));
                }
                match &mut ledger {
                    None => {
                        let seqs = seq..seq + 1;
                        ledger = Some((
                            producer,
                            BatchLedger {
                                lsn,
                                id,
                                seqs,
                                records: 0,
                            },
                        ));
                    }
                    Some((owner, batch)) if *owner == producer => batch.seqs.end = seq + 1,
                    Some((owner, _)) => self.problems.push(format!(
                        "LSN {lsn}, batch {id}: records of producers {owner} and {producer}"
                    )),
                }
            }
        }
        let n_rows: u64 = logs.iter().map(|t| t.num_rows() as u64).sum();
        self.n_rows += n_rows;
        match ledger {
            Some((producer, mut batch)) => {
                batch.records = n_rows;
                if let Some(seen) = self.seen.get_mut(producer) {
                    seen.push(batch);
                }
            }
            None => self.problems.push(format!("LSN {lsn}, batch {id}: no log records")),
        }

        // Converted: INGESTED, before any processor stores it.
        tracker.advance(id, Stage::Ingested)?;
        let batch = Batch { lsn, id, logs: &logs };
        for processor in &mut self.processors {
            processor.process(&batch)?;
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

/// Releases segments behind the processors' watermark until told to stop, then once more.
fn janitor(wal: &Wal, tracker: &Tracker, progress: &Progress) -> Result<JanitorReport, String> {
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
            tracker.release_before(retain_from)?;
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
    /// Envelopes read back after reopening, and whether their LSNs ran without a gap.
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
    let n = run.n_records_acked();
    let mib = run.append_bytes as f64 / (1 << 20) as f64;
    println!(
        "producers: {n} log records in {} requests ({}) -> {} batches acknowledged ({mib:.1} MiB) in {secs:.2} s: \
         {:.0} records/s, {:.1} MiB/s",
        run.sent.iter().sum::<u64>(),
        encoding_summary(&run.sent),
        run.n_batches_acked(),
        n as f64 / secs,
        mib / secs
    );
    let c = &run.consumer;
    println!(
        "consumer:  {} batches, {} requests, {} rows converted to Arrow in {:.2} s",
        c.n_consumed(),
        c.n_requests(),
        c.n_rows,
        c.elapsed.as_secs_f64()
    );
    for processor in &c.processors {
        for line in processor.summary() {
            println!("           {line}");
        }
    }
    let l = &run.lifecycle;
    let stages = |counts: &[u64], separator: &str| {
        let stages: Vec<_> = Stage::ALL
            .iter()
            .zip(counts)
            .filter(|(_, n)| **n > 0)
            .map(|(stage, n)| format!("{stage} {n}"))
            .collect();
        if stages.is_empty() {
            "-".to_owned()
        } else {
            stages.join(separator)
        }
    };
    println!(
        "lifecycle: {} batches reached {}; now {}, {} of them behind the janitor's truncation point (LSN {})",
        l.n_batches,
        stages(&l.reached, " -> "),
        stages(&l.current, ", "),
        l.released,
        run.janitor.retain_from
    );
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
        "stats:     {} segment(s) + {} spare, {:.1} MiB on disk; first LSN {}, last LSN {}, next LSN {}; {} envelopes read back",
        s.segment_count,
        s.spare_segments,
        s.bytes_on_disk as f64 / (1 << 20) as f64,
        s.first_lsn.map_or_else(|| "-".to_owned(), |l| l.to_string()),
        s.last_lsn.map_or_else(|| "-".to_owned(), |l| l.to_string()),
        s.next_lsn,
        reopened.read_back
    );
}

/// Checks that every log record was sent, acknowledged and converted exactly once, in order,
/// that every batch ended `STORED` with its rows in the catalogued Parquet files, and that the
/// reopened log holds what it should.
fn check(run: &RunOutcome, reopened: &Reopened) -> Result<(), String> {
    let c = &run.consumer;
    let mut problems = c.problems.clone();
    if let Some(e) = &run.producer_error {
        problems.push(e.clone());
    }
    if run.n_records_acked() != run.requested {
        problems.push(format!(
            "{} log records to send but {} acknowledged",
            run.requested,
            run.n_records_acked()
        ));
    }
    for (p, (acked, seen)) in run.acked.iter().zip(&c.seen).enumerate() {
        if acked != seen {
            let first_diff = acked
                .iter()
                .zip(seen)
                .position(|(a, s)| a != s)
                .unwrap_or(acked.len().min(seen.len()));
            problems.push(format!(
                "producer {p}: {} batches acknowledged, {} converted; they differ from batch {first_diff}: \
                 acknowledged {:?}, converted {:?}",
                acked.len(),
                seen.len(),
                acked.get(first_diff),
                seen.get(first_diff)
            ));
        }
    }
    if c.n_consumed() != run.n_batches_acked() {
        problems.push(format!(
            "{} batches acknowledged but {} consumed",
            run.n_batches_acked(),
            c.n_consumed()
        ));
    }
    if c.n_rows != run.n_records_acked() {
        problems.push(format!(
            "{} log records acknowledged but {} rows converted",
            run.n_records_acked(),
            c.n_rows
        ));
    }
    if c.received != run.sent {
        problems.push(format!(
            "requests sent ({}) and converted ({}) differ",
            encoding_summary(&run.sent),
            encoding_summary(&c.received)
        ));
    }
    let l = &run.lifecycle;
    let stored = l.current[stage_index(Stage::Stored)];
    if l.n_batches != run.n_batches_acked() || stored != l.n_batches {
        problems.push(format!(
            "{} batches acknowledged, {} tracked, {stored} of them STORED",
            run.n_batches_acked(),
            l.n_batches
        ));
    }
    if run.stored_rows != run.n_records_acked() {
        problems.push(format!(
            "{} log records acknowledged but {} rows in the stored files",
            run.n_records_acked(),
            run.stored_rows
        ));
    }
    if reopened.stats.next_lsn != c.next {
        problems.push(format!(
            "reopened log continues at LSN {}, expected {}",
            reopened.stats.next_lsn, c.next
        ));
    }
    if !reopened.contiguous {
        problems.push("envelopes read back after reopening have a gap".into());
    }
    if reopened.recovery.torn_tail.is_some() {
        problems.push("a cleanly closed log had a torn tail".into());
    }
    match problems.len() {
        0 => Ok(()),
        n => {
            let mut shown = problems[..n.min(MAX_PROBLEMS_SHOWN)].join("\n  ");
            if n > MAX_PROBLEMS_SHOWN {
                shown.push_str(&format!("\n  ... and {} more", n - MAX_PROBLEMS_SHOWN));
            }
            Err(format!("{n} problem(s):\n  {shown}"))
        }
    }
}
