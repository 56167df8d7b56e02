//! The example pipeline: Wit's main job, end to end, on embedded defaults, checking itself.
//!
//! ```text
//! cargo run -p wit-examples --bin pipeline [-- --dir PATH --records N --producers N]
//! ```
//!
//! Producer threads stand in for OTLP/HTTP receivers. Between them they send `--records`
//! spans, as many log records and as many metric data points, in export requests of 1 to 8
//! records encoded as protobuf, gzip'd protobuf, OTLP/JSON or gzip'd OTLP/JSON, to one
//! [`Pipeline`]: its WAL under `pipeline/`, batches tracked in the embedded [`SqliteTracker`]
//! (`tracker.db`), Parquet files under `data/`. Every record carries its producer and sequence
//! number as attributes. A producer submits each request with [`Pipeline::blocking_submit`] at
//! [`AckLevel::WalDurable`] (its last one of each signal at [`AckLevel::Stored`]), keeps a
//! window of acknowledgments in flight and waits for the oldest.
//!
//! Then the pipeline is closed, which stores everything, and the run checks itself, per
//! signal: every record asked for was acknowledged; the files the tracker's catalog lists,
//! read back with parquet's Arrow reader, hold the rows the catalog says and every record
//! exactly once, and each has its index; every batch holding an acknowledged record is
//! `STORED`, `INDEXED` or `COMPLETED`. Last, the closed WAL is inspected read-only, as
//! `wit wal verify` does.
//!
//! It runs in a fresh temporary directory unless `--dir` names a new or empty one, prints a
//! report, and exits 1 unless the self-check holds, listing the first problems.

use std::collections::{BTreeSet, VecDeque};
use std::fmt::Display;
use std::io::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics};
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point::Value as Number};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use parquet::arrow::{ProjectionMask, arrow_reader::ParquetRecordBatchReaderBuilder};
use wit_batch::{
    BatchId, BatchKey, BatcherConfig, Compression, Part, PayloadFormat, Signal, SourceKind, Stage, Tenant,
};
use wit_pipeline::{Ack, AckLevel, Pipeline, PipelineConfig};
use wit_store::{Destination, FileCatalog as _, NodeName, SinkConfig};
use wit_tracker::{SqliteTracker, Tracker as _, TrackerConfig};

const USAGE: &str = "\
pipeline: Wit's example pipeline (OTLP traces, logs, metrics -> WAL -> Parquet, tracked in SQLite; self-checked)

Usage:
    pipeline [--dir PATH] [--records N] [--producers N]

Options:
    --dir PATH        where the run keeps its pipeline (PATH/pipeline, with the WAL), tracker
                      (PATH/tracker.db) and Parquet files (PATH/data);
                      must be new or empty (default: a temporary directory)
    --records N       records of each signal to send (default 20000)
    --producers N     producer threads (default 4)
";

const TENANT: &str = "demo";
const SIGNALS: [Signal; 3] = [Signal::Traces, Signal::Logs, Signal::Metrics];
/// How producers encode requests, every input path of the conversion: a request takes the
/// first encoding whose bound is above a roll of 0..100 (so 55%, 20%, 20% and 5%).
const ENCODINGS: [(&str, PayloadFormat, Compression, u64); 4] = [
    ("protobuf", PayloadFormat::OtlpProtobuf, Compression::None, 55),
    ("protobuf+gzip", PayloadFormat::OtlpProtobuf, Compression::Gzip, 75),
    ("json", PayloadFormat::OtlpJson, Compression::None, 95),
    ("json+gzip", PayloadFormat::OtlpJson, Compression::Gzip, 100),
];
const MAX_RECORDS_PER_REQUEST: u64 = 8;
/// Acknowledgments a producer has in flight; beyond them it waits for the oldest.
const WINDOW: usize = 64;
const ACK_TIMEOUT: Duration = Duration::from_secs(60);
/// 2026-01-01T00:00:00Z in nanoseconds since the epoch: record `seq` happens `seq` ms later.
const BASE_TIME_NANOS: u64 = 1_767_225_600_000_000_000;
const SERVICES: [&str; 4] = ["checkout", "payments", "search", "inventory"];
const MAX_PROBLEMS_SHOWN: usize = 20;

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
    let problems = match run(&options) {
        Ok(problems) => problems,
        Err(message) => {
            eprintln!("pipeline: {message}");
            return ExitCode::FAILURE;
        }
    };
    if problems.is_empty() {
        println!(
            "ok: every acknowledged record is stored exactly once, indexed, and its batch is STORED, INDEXED or COMPLETED"
        );
        return ExitCode::SUCCESS;
    }
    let mut shown = problems[..problems.len().min(MAX_PROBLEMS_SHOWN)].join("\n  ");
    if problems.len() > MAX_PROBLEMS_SHOWN {
        shown.push_str(&format!("\n  ... and {} more", problems.len() - MAX_PROBLEMS_SHOWN));
    }
    eprintln!("pipeline: FAILED: {} problem(s):\n  {shown}", problems.len());
    ExitCode::FAILURE
}

struct Options {
    dir: Option<PathBuf>,
    records: u64,
    producers: u64,
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
            let value = inline
                .or_else(|| args.next())
                .ok_or(format!("option `{name}` needs a value"))?;
            let number = || {
                value
                    .parse()
                    .map_err(|_| format!("`{name} {value}`: expected a number"))
            };
            match name.as_str() {
                "--dir" => options.dir = Some(PathBuf::from(&value)),
                "--records" => options.records = number()?,
                "--producers" => options.producers = number()?,
                _ => return Err(format!("unexpected argument `{arg}`")),
            }
        }
        if options.producers == 0 {
            return Err("--producers must be at least 1".into());
        }
        Ok(Some(options))
    }
}

/// Runs the pipeline and checks it: the problems found, or why it could not run.
fn run(options: &Options) -> Result<Vec<String>, String> {
    // The temporary directory lives (and is removed) with this guard.
    let temp;
    let root = match &options.dir {
        Some(dir) if std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) => {
            return Err(format!(
                "`{}` is not empty; give a new or empty directory",
                dir.display()
            ));
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(failed(&format!("create `{}`", dir.display())))?;
            dir.clone()
        }
        None => {
            temp = tempfile::tempdir().map_err(failed("create a temporary directory"))?;
            temp.path().to_owned()
        }
    };
    let (n, n_producers) = (options.records, options.producers);
    println!(
        "pipeline: {n_producers} producers send {n} spans, log records and metric data points each to {}",
        root.display()
    );
    let tracker = SqliteTracker::open(&root.join("tracker.db"), TrackerConfig::default());
    let tracker = Arc::new(tracker.map_err(failed("open the tracker"))?);
    let node = NodeName::try_new("local").map_err(failed("name the node"))?;
    // For a demo: batches leave after 20 ms (or at 256 KiB), files are published after
    // 500 ms, and the WAL has segments of 1 MiB (the janitor releases it a whole segment at a
    // time; a batch must fit in one).
    let config = PipelineConfig::new(root.join("pipeline"), node.clone())
        .with_wal(wit_wal::Config::default().with_segment_size(1 << 20))
        .with_batcher(
            BatcherConfig::default()
                .with_max_messages(64)
                .with_max_bytes(256 << 10)
                .with_max_age(Duration::from_millis(20)),
        )
        .with_sink(SinkConfig::new(node).with_max_file_age(Duration::from_millis(500)));
    let (wal_dir, data) = (config.wal_dir(), root.join("data"));
    let tenant = Tenant::try_new(TENANT).map_err(failed("name the tenant"))?;
    let started = Instant::now();
    let destination = Destination::local(&data).map_err(failed("open the store"))?;
    let pipeline = Pipeline::open(config, destination, tracker.clone()).map_err(failed("open the pipeline"))?;
    let r = pipeline.recovery();
    println!(
        "opened:   recovery scanned {} WAL segment(s) (torn tail: {}), published {} staged file(s), replayed {} \
         batch(es), found {} already stored, {} failed, registered {}",
        r.wal.segments_scanned,
        r.wal
            .torn_tail
            .as_ref()
            .map_or("none".into(), |d| format!("LSN {}", d.lsn)),
        r.staged_published,
        r.replayed,
        r.already_stored,
        r.failed,
        r.registered
    );

    let sent: Vec<Sent> = std::thread::scope(|s| {
        let (pipeline, tenant) = (&pipeline, &tenant);
        let producers: Vec<_> = (0..n_producers)
            // Spread the records; the first producers take the remainder.
            .map(|p| (p, n / n_producers + u64::from(p < n % n_producers)))
            .map(|(p, n)| s.spawn(move || produce(pipeline, tenant, p, n)))
            .collect();
        producers
            .into_iter()
            .map(|p| p.join().expect("producers do not panic"))
            .collect()
    });
    let submitted = started.elapsed();
    let mut problems: Vec<String> = sent.iter().flat_map(|s| s.errors.clone()).collect();
    if let Err(e) = pipeline.close() {
        problems.push(format!("closing the pipeline failed: {e}"));
    }
    let elapsed = started.elapsed();
    let encodings: Vec<String> = ENCODINGS
        .iter()
        .enumerate()
        .map(|(e, (name, ..))| format!("{name} {}", sent.iter().map(|s| s.encodings[e]).sum::<u64>()))
        .collect();
    println!("requests: {}", encodings.join(", "));
    let n_acked: u64 = sent.iter().flat_map(|s| s.acked).sum();
    println!(
        "elapsed:  {:.2} s ({:.2} s to the last acknowledgment, {:.2} s closing): {n_acked} records acknowledged, \
         {:.0} records/s",
        elapsed.as_secs_f64(),
        submitted.as_secs_f64(),
        (elapsed - submitted).as_secs_f64(),
        n_acked as f64 / elapsed.as_secs_f64()
    );
    for s in 0..SIGNALS.len() {
        problems.extend(check_signal(s, n, &sent, &tracker, &tenant, &data));
    }
    problems.extend(check_wal(&wal_dir));
    Ok(problems)
}

fn failed<E: Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("cannot {what}: {e}")
}

/// What one producer sent and had acknowledged; per signal, indexed like [`SIGNALS`].
#[derive(Default)]
struct Sent {
    /// Records sent: sequence numbers `0..records[s]`.
    records: [u64; 3],
    requests: [u64; 3],
    acked: [u64; 3],
    /// The batches holding acknowledged records.
    batches: [BTreeSet<BatchId>; 3],
    /// Requests per encoding, indexed like [`ENCODINGS`].
    encodings: [u64; 4],
    errors: Vec<String>,
}

impl Sent {
    fn wait(&mut self, producer: u64, (ack, s, seqs): (Ack, usize, Range<u64>)) {
        let error = match ack.wait_timeout(ACK_TIMEOUT) {
            Some(Ok(acked)) => {
                self.acked[s] += seqs.end - seqs.start;
                self.batches[s].extend(acked.batch);
                return;
            }
            Some(Err(e)) => e.to_string(),
            None => format!("no acknowledgment within {ACK_TIMEOUT:?}"),
        };
        self.errors
            .push(format!("{} {seqs:?} of producer {producer}: {error}", SIGNALS[s]));
    }
}

/// Sends `n` records of each signal, in requests that take turns among the signals.
fn produce(pipeline: &Pipeline, tenant: &Tenant, producer: u64, n: u64) -> Sent {
    let mut requests = Requests {
        producer: producer as i64,
        state: 0x9e37_79b9_7f4a_7c15 ^ producer,
    };
    let keys = SIGNALS.map(|signal| BatchKey::new(tenant.clone(), signal, SourceKind::Http));
    let mut sent = Sent::default();
    let mut in_flight = VecDeque::with_capacity(WINDOW + 1);
    'send: while sent.records.iter().any(|&r| r < n) {
        for (s, key) in keys.iter().enumerate() {
            let seq = sent.records[s];
            if seq == n {
                continue;
            }
            let seqs = seq..n.min(seq + 1 + requests.random() % MAX_RECORDS_PER_REQUEST);
            let (e, part) = requests.part(SIGNALS[s], seqs.clone());
            // The last request of each signal is acknowledged once a published file holds it.
            let level = if seqs.end == n {
                AckLevel::Stored
            } else {
                AckLevel::WalDurable
            };
            sent.records[s] = seqs.end;
            sent.requests[s] += 1;
            sent.encodings[e] += 1;
            match pipeline.blocking_submit(key, part, level) {
                Ok(ack) => in_flight.push_back((ack, s, seqs)),
                Err(e) => {
                    sent.errors
                        .push(format!("{} {seqs:?} of producer {producer}: {e}", SIGNALS[s]));
                    break 'send;
                }
            }
            if in_flight.len() > WINDOW {
                sent.wait(producer, in_flight.pop_front().expect("in flight"));
            }
        }
    }
    in_flight.into_iter().for_each(|oldest| sent.wait(producer, oldest));
    sent
}

/// Generates one producer's OTLP requests, reproducibly (splitmix64; no `rand` needed).
struct Requests {
    producer: i64,
    state: u64,
}

impl Requests {
    fn random(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// The attributes of record `seq`: its producer and sequence number identify it.
    fn ids(&self, seq: u64) -> Vec<KeyValue> {
        vec![
            attribute("producer", Value::IntValue(self.producer)),
            attribute("seq", Value::IntValue(seq as i64)),
        ]
    }

    /// An export request of `signal` from one service with the records `seqs`, as a part
    /// (one message) in an encoding drawn from [`ENCODINGS`], whose index comes first.
    fn part(&mut self, signal: Signal, seqs: Range<u64>) -> (usize, Part) {
        let roll = self.random() % 100;
        let e = ENCODINGS
            .iter()
            .position(|(.., bound)| roll < *bound)
            .expect("the last bound is 100");
        let (_, format, compression, _) = ENCODINGS[e];
        let service = SERVICES[(self.random() % SERVICES.len() as u64) as usize];
        let attributes = vec![attribute("service.name", Value::StringValue(service.into()))];
        let resource = Some(Resource {
            attributes,
            ..Default::default()
        });
        let time = |seq: u64| BASE_TIME_NANOS + seq * 1_000_000;
        let json = format == PayloadFormat::OtlpJson;
        let bytes = match signal {
            Signal::Traces => {
                let spans = seqs
                    .map(|seq| Span {
                        trace_id: [self.random().to_le_bytes(), self.random().to_le_bytes()].concat(),
                        span_id: self.random().to_le_bytes().to_vec(),
                        name: format!("GET /{service}"),
                        start_time_unix_nano: time(seq),
                        end_time_unix_nano: time(seq) + self.random() % 2_000_000_000,
                        attributes: self.ids(seq),
                        ..Default::default()
                    })
                    .collect();
                let scope_spans = vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }];
                let resource_spans = vec![ResourceSpans {
                    resource,
                    scope_spans,
                    ..Default::default()
                }];
                encode(&ExportTraceServiceRequest { resource_spans }, json, serde_json::to_vec)
            }
            Signal::Logs => {
                let log_records = seqs
                    .map(|seq| LogRecord {
                        time_unix_nano: time(seq),
                        severity_number: 9,
                        severity_text: "INFO".into(),
                        body: Some(AnyValue {
                            value: Some(Value::StringValue(format!("{service}: request served"))),
                        }),
                        attributes: self.ids(seq),
                        ..Default::default()
                    })
                    .collect();
                let scope_logs = vec![ScopeLogs {
                    log_records,
                    ..Default::default()
                }];
                let resource_logs = vec![ResourceLogs {
                    resource,
                    scope_logs,
                    ..Default::default()
                }];
                encode(&ExportLogsServiceRequest { resource_logs }, json, serde_json::to_vec)
            }
            _ => {
                let data_points = seqs
                    .map(|seq| NumberDataPoint {
                        time_unix_nano: time(seq),
                        value: Some(Number::AsInt((self.random() % 100) as i64)),
                        attributes: self.ids(seq),
                        ..Default::default()
                    })
                    .collect();
                let data = Some(Data::Gauge(Gauge { data_points }));
                let metrics = vec![Metric {
                    name: "queue.depth".into(),
                    data,
                    ..Default::default()
                }];
                let scope_metrics = vec![ScopeMetrics {
                    metrics,
                    ..Default::default()
                }];
                let resource_metrics = vec![ResourceMetrics {
                    resource,
                    scope_metrics,
                    ..Default::default()
                }];
                encode(
                    &ExportMetricsServiceRequest { resource_metrics },
                    json,
                    serde_json::to_vec,
                )
            }
        };
        let payload = match compression {
            Compression::Gzip => {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(&bytes)
                    .and_then(|()| gz.finish())
                    .expect("writing to memory")
            }
            _ => bytes,
        };
        (e, Part::new(format, compression, 1, payload))
    }
}

/// `request` in OTLP/JSON (`to_json` is `serde_json::to_vec`, here for its `Serialize` bound)
/// or protobuf.
fn encode<R: prost::Message>(request: &R, json: bool, to_json: fn(&R) -> serde_json::Result<Vec<u8>>) -> Vec<u8> {
    if json {
        to_json(request).expect("OTLP requests serialize to JSON")
    } else {
        request.encode_to_vec()
    }
}

fn attribute(key: &str, value: Value) -> KeyValue {
    let value = Some(AnyValue { value: Some(value) });
    KeyValue {
        key: key.into(),
        value,
        ..Default::default()
    }
}

/// Checks one signal: acknowledged as asked, every record once in the files the catalog lists
/// (read back) and indexed, every batch holding an acknowledged record `STORED`, `INDEXED` or
/// `COMPLETED`. Prints its
/// report line; returns the problems.
fn check_signal(
    s: usize,
    asked: u64,
    sent: &[Sent],
    tracker: &SqliteTracker,
    tenant: &Tenant,
    data: &Path,
) -> Vec<String> {
    let (signal, mut problems) = (SIGNALS[s], Vec::new());
    let acked: u64 = sent.iter().map(|p| p.acked[s]).sum();
    if acked != asked {
        problems.push(format!("{signal}: {asked} records asked for, {acked} acknowledged"));
    }
    let files = tracker.list(tenant, signal, None).unwrap_or_else(|e| {
        problems.push(format!("{signal}: cannot list the stored files: {e}"));
        Vec::new()
    });
    // How often each record is stored, by producer and sequence number.
    let mut times: Vec<Vec<u8>> = sent.iter().map(|p| vec![0; p.records[s] as usize]).collect();
    let mut rows = 0;
    for file in &files {
        let ids = read_ids(&data.join(&file.path)).unwrap_or_else(|e| {
            problems.push(format!("{signal}: cannot read `{}`: {e}", file.path));
            Vec::new()
        });
        if ids.len() as u64 != file.rows {
            problems.push(format!(
                "{signal}: `{}` holds {} rows, the catalog says {}",
                file.path,
                ids.len(),
                file.rows
            ));
        }
        if file.index.is_none() {
            // Closing the pipeline drains its indexer: every published file has its index.
            problems.push(format!(
                "{signal}: `{}` has no index after the pipeline closed",
                file.path
            ));
        }
        rows += ids.len() as u64;
        for (producer, seq) in ids {
            match times.get_mut(producer as usize).and_then(|t| t.get_mut(seq as usize)) {
                Some(n) => *n = n.saturating_add(1),
                None => problems.push(format!(
                    "{signal}: `{}` holds record {seq} of producer {producer}, never sent",
                    file.path
                )),
            }
        }
    }
    for (producer, times) in times.iter().enumerate() {
        let mut seq = 0;
        for run in times.chunk_by(|a, b| a == b) {
            if run[0] != 1 {
                let (seqs, n) = (seq..seq + run.len(), run[0]);
                problems.push(format!(
                    "{signal}: records {seqs:?} of producer {producer} are stored {n} times"
                ));
            }
            seq += run.len();
        }
    }
    let batches: BTreeSet<BatchId> = sent.iter().flat_map(|p| &p.batches[s]).copied().collect();
    let mut completed = 0;
    for batch in &batches {
        match tracker.batch(*batch).map(|record| record.stage) {
            Ok(Stage::Stored | Stage::Indexed) => {}
            Ok(Stage::Completed) => completed += 1,
            Ok(stage) => problems.push(format!(
                "{signal}: batch {batch} is {stage}, not STORED, INDEXED or COMPLETED"
            )),
            Err(e) => problems.push(format!("{signal}: batch {batch}: {e}")),
        }
    }
    let requests: u64 = sent.iter().map(|p| p.requests[s]).sum();
    println!(
        "{:<10}{acked} records acknowledged in {requests} requests, {} batches ({completed} COMPLETED); \
         {rows} rows read back from {} Parquet file(s)",
        format!("{signal}:"),
        batches.len(),
        files.len()
    );
    problems
}

/// The `producer` and `seq` attributes of every row of a Parquet file, read with the Arrow reader.
fn read_ids(path: &Path) -> Result<Vec<(u64, u64)>, Box<dyn std::error::Error>> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path)?)?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), [builder.schema().index_of("attributes")?]);
    let mut ids = Vec::new();
    for batch in builder.with_projection(mask).build()? {
        let batch = batch?;
        let map = batch.column(0).as_map_opt().ok_or("`attributes` is not a map")?;
        let keys = map
            .keys()
            .as_string_opt::<i32>()
            .ok_or("attribute keys are not strings")?;
        let ints = map
            .values()
            .as_struct_opt()
            .and_then(|values| values.column_by_name("int"))
            .and_then(|ints| ints.as_primitive_opt::<Int64Type>())
            .ok_or("attribute values have no Int64 `int` child")?;
        for entries in map.value_offsets().windows(2) {
            let (mut producer, mut seq) = (None, None);
            for i in entries[0] as usize..entries[1] as usize {
                let value = ints.is_valid(i).then(|| ints.value(i) as u64);
                match keys.value(i) {
                    "producer" => producer = value,
                    "seq" => seq = value,
                    _ => {}
                }
            }
            ids.push(
                producer
                    .zip(seq)
                    .ok_or("a row has no integer `producer` and `seq` attributes")?,
            );
        }
    }
    Ok(ids)
}

/// Inspects the closed WAL read-only, as `wit wal verify` does.
fn check_wal(dir: &Path) -> Vec<String> {
    let report = match wit_wal::Inspector::open(dir) {
        Ok(inspector) => inspector.verify(),
        Err(e) => return vec![format!("cannot inspect the WAL `{}`: {e}", dir.display())],
    };
    let intact = report.is_intact() && report.torn_tail.is_none();
    let state = if intact { "intact" } else { "DAMAGED" };
    let (segments, records, next) = (report.segments, report.records, report.next_lsn);
    println!("wal:      {segments} segment(s), {records} record(s) retained, next LSN {next}: {state}");
    if intact {
        return Vec::new();
    }
    vec![format!("the WAL `{}` is damaged: {report:?}", dir.display())]
}
