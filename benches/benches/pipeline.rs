//! `wit-pipeline` end to end, beside each of its stages alone, in the same run.
//!
//! Input: OTLP trace export requests of 1,000 spans each (`wit_benches::telemetry`: about 10
//! attributes per span), encoded as protobuf once, before measuring.
//!
//! - `end_to_end`: two producer threads submit 100 requests each (200,000 spans) at
//!   `AckLevel::WalDurable` through `Pipeline::blocking_submit`, each keeping 16
//!   acknowledgments in flight; then `close()` stores everything (Parquet ZSTD-3 on a local
//!   destination, every batch tracked in SQLite) and the janitor runs. Timed from the first
//!   submit to the end of `close()`: spans acknowledged *and* stored per second.
//! - the stages alone, on the same requests: `decode` (`otlp::traces::decode`, protobuf to
//!   Arrow), `parquet_write` (`ParquetSink::write` of the decoded batches, then `flush`: ZSTD,
//!   fsync, publish), `wal_append` (the requests' envelopes appended one by one with
//!   `Wal::append`, each `fdatasync`ed, as a lone writer: the machine's sync ceiling).
//!
//! Then, outside criterion, `ack_latency_at_half_rate`: one producer paces requests at half
//! the measured end-to-end rate and records each `WalDurable` acknowledgment's latency
//! (submit to `Ack::wait`); p50, p99, p99.9 and max are printed and written to
//! `target/tmp/pipeline-latency.txt`.

use std::collections::VecDeque;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use wit_batch::otlp::traces;
use wit_batch::{
    BatchId, BatchKey, BatcherConfig, Compression, Envelope, Part, PayloadFormat, Signal, SourceKind, Tenant,
};
use wit_benches::telemetry::trace_request;
use wit_pipeline::{AckLevel, Pipeline, PipelineConfig};
use wit_store::{Destination, NodeName, ParquetSink, SinkConfig};
use wit_tracker::{SqliteTracker, TrackerConfig};

const SPANS_PER_REQUEST: u64 = 1_000;
const REQUESTS_PER_PRODUCER: usize = 100;
const PRODUCERS: usize = 2;
const WINDOW: usize = 16;

/// A request of 1,000 spans: the first resource (10 scopes × 100 spans) of the bench shape.
fn request(first: u64) -> Vec<u8> {
    let mut request = trace_request(first);
    request.resource_spans.truncate(1);
    request.encode_to_vec()
}

fn requests(n: usize) -> Vec<Vec<u8>> {
    (0..n as u64).map(|r| request(r * 10_000)).collect()
}

fn key() -> BatchKey {
    BatchKey::new(
        Tenant::try_new("bench").expect("tenant"),
        Signal::Traces,
        SourceKind::Grpc,
    )
}

fn part(payload: &[u8]) -> Part {
    Part::new(PayloadFormat::OtlpProtobuf, Compression::None, 1, payload.to_vec())
}

fn config(dir: &Path) -> PipelineConfig {
    let node = NodeName::try_new("bench").expect("node");
    PipelineConfig::new(dir.join("pipeline"), node.clone())
        .with_batcher(
            BatcherConfig::default()
                .with_max_messages(1)
                .with_max_age(Duration::from_millis(5)),
        )
        .with_sink(SinkConfig::new(node))
}

fn open(dir: &Path) -> Pipeline {
    let tracker = Arc::new(SqliteTracker::open(&dir.join("tracker.db"), TrackerConfig::default()).expect("tracker"));
    Pipeline::open(
        config(dir),
        Destination::local(&dir.join("data")).expect("dest"),
        tracker,
    )
    .expect("open")
}

/// Submits every request of `payloads` from `PRODUCERS` threads and closes: the time from
/// the first submit to the end of `close`.
fn run_end_to_end(payloads: &Arc<Vec<Vec<u8>>>) -> Duration {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let pipeline = Arc::new(open(dir.path()));
    let started = Instant::now();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let (pipeline, payloads) = (pipeline.clone(), payloads.clone());
            std::thread::spawn(move || {
                let mut window = VecDeque::new();
                for payload in payloads.iter().skip(p).step_by(PRODUCERS) {
                    window.push_back(
                        pipeline
                            .blocking_submit(&key(), part(payload), AckLevel::WalDurable)
                            .expect("submit"),
                    );
                    if window.len() >= WINDOW {
                        window.pop_front().expect("ack").wait().expect("durable");
                    }
                }
                for ack in window {
                    ack.wait().expect("durable");
                }
            })
        })
        .collect();
    for producer in producers {
        producer.join().expect("producer");
    }
    let pipeline = Arc::into_inner(pipeline).expect("producers are done");
    pipeline.close().expect("close");
    started.elapsed()
}

fn pipeline(c: &mut Criterion) {
    let n_requests = REQUESTS_PER_PRODUCER * PRODUCERS;
    let payloads = Arc::new(requests(n_requests));
    let spans = SPANS_PER_REQUEST * n_requests as u64;
    let bytes: u64 = payloads.iter().map(|p| p.len() as u64).sum();

    let mut group = c.benchmark_group("pipeline");
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(spans));
    let mut seconds = Vec::new();
    group.bench_function("end_to_end", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let took = run_end_to_end(&payloads);
                seconds.push(took.as_secs_f64());
                total += took;
            }
            total
        });
    });

    group.bench_function("decode", |b| {
        b.iter(|| {
            for payload in payloads.iter() {
                black_box(traces::decode(payload, PayloadFormat::OtlpProtobuf, Compression::None).expect("decode"));
            }
        });
    });

    let decoded: Vec<RecordBatch> = payloads
        .iter()
        .map(|p| traces::decode(p, PayloadFormat::OtlpProtobuf, Compression::None).expect("decode"))
        .collect();
    group.bench_function("parquet_write", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
                let mut sink = ParquetSink::open(
                    Destination::local(dir.path()).expect("dest"),
                    SinkConfig::new(NodeName::try_new("bench").expect("node")),
                )
                .expect("sink");
                let tenant = Tenant::try_new("bench").expect("tenant");
                let started = Instant::now();
                for batch in &decoded {
                    sink.write(&tenant, Signal::Traces, batch, &[BatchId::new()])
                        .expect("write");
                }
                sink.flush().expect("flush");
                total += started.elapsed();
            }
            total
        });
    });

    let envelopes: Vec<Vec<u8>> = payloads
        .iter()
        .map(|p| {
            let id = BatchId::new();
            let meta = wit_batch::BatchMeta {
                id,
                tenant: Tenant::try_new("bench").expect("tenant"),
                signal: Signal::Traces,
                source: SourceKind::Grpc,
                message_count: 0,
                byte_size: 0,
                first_offset: None,
                last_offset: None,
                topics: Vec::new(),
                partition: None,
                created_at: id.created_at(),
            };
            Envelope::new(meta, vec![part(p)]).encode()
        })
        .collect();
    group.bench_function("wal_append", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
                let wal = wit_wal::Wal::open(dir.path(), wit_wal::Config::default()).expect("wal");
                let started = Instant::now();
                for envelope in &envelopes {
                    wal.append(envelope).expect("append");
                }
                total += started.elapsed();
                wal.close().expect("close");
            }
            total
        });
    });
    group.finish();

    // Acknowledgment latency at half the measured end-to-end rate.
    seconds.sort_by(f64::total_cmp);
    let median = seconds.get(seconds.len() / 2).copied().unwrap_or(1.0);
    let rate = spans as f64 / median;
    let report = latency_at(rate / 2.0, &payloads);
    let summary = format!(
        "pipeline: end_to_end median {median:.3} s for {spans} spans ({:.1} MB of OTLP protobuf): {:.0} spans/s, {:.1} MB/s\n{report}",
        bytes as f64 / 1e6,
        rate,
        bytes as f64 / 1e6 / median
    );
    println!("{summary}");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pipeline-latency.txt");
    std::fs::write(&out, summary).expect("write the report");
}

/// One producer paces requests at `spans_per_second`; each `WalDurable` acknowledgment's
/// latency is timed from its submit.
fn latency_at(spans_per_second: f64, payloads: &Arc<Vec<Vec<u8>>>) -> String {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let pipeline = Arc::new(open(dir.path()));
    let interval = Duration::from_secs_f64(SPANS_PER_REQUEST as f64 / spans_per_second);
    let n = (payloads.len() * 5).min(2_000);
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, wit_pipeline::Ack)>();
    let waiter = std::thread::spawn(move || {
        let mut latencies: Vec<Duration> = Vec::new();
        for (submitted, ack) in rx {
            ack.wait().expect("durable");
            latencies.push(submitted.elapsed());
        }
        latencies
    });
    let start = Instant::now();
    for i in 0..n {
        let due = start + interval * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let submitted = Instant::now();
        let ack = pipeline
            .blocking_submit(&key(), part(&payloads[i % payloads.len()]), AckLevel::WalDurable)
            .expect("submit");
        tx.send((submitted, ack)).expect("waiter");
    }
    drop(tx);
    let mut latencies = waiter.join().expect("waiter");
    let achieved = (n as u64 * SPANS_PER_REQUEST) as f64 / start.elapsed().as_secs_f64();
    Arc::into_inner(pipeline).expect("one owner").close().expect("close");
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    format!(
        "ack_latency_at_half_rate: target {spans_per_second:.0} spans/s, achieved {achieved:.0}; {n} requests; \
         p50 {:?}, p99 {:?}, p99.9 {:?}, max {:?}",
        at(0.5),
        at(0.99),
        at(0.999),
        latencies.last().copied().unwrap_or_default()
    )
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
