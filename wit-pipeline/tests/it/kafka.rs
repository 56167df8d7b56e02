//! The Kafka source against a real Kafka-compatible broker (Tansu on 127.0.0.1): every
//! message stored exactly once, across partitions, restarts and a range claimed elsewhere;
//! poison messages in the dead letters. Results are read back with SQL (wit-query) and with
//! pyarrow.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use wit_batch::{BatchId, BatchMeta, BatcherConfig, PayloadFormat, Signal, SourceKind, Tenant};
use wit_pipeline::kafka::{KafkaConfig, KafkaSource, TopicRule};
use wit_pipeline::{Pipeline, TrackerCatalog};
use wit_query::{QueryEngine, Session};
use wit_store::Destination;
use wit_tracker::{RangeClaim, RangeOutcome, Tracker};

use crate::kafka_broker::{Broker, flush, produce};
use crate::support::{self, config, logs, spans};

const LONG: Duration = Duration::from_secs(60);
const GROUP: &str = "wit-test";

fn acme() -> Tenant {
    Tenant::try_new("acme").expect("tenant")
}

/// The source of these tests: topics `v6.qtw.{signal}.{tenant}.{n}` as OTLP protobuf, small
/// batches, a short session.
fn kafka(broker: &Broker) -> KafkaConfig {
    KafkaConfig::new(&broker.addr, GROUP)
        .with_topic(
            TopicRule::new("^v6\\.qtw\\..*", PayloadFormat::OtlpProtobuf)
                .with_template("{prefix}.{app}.{signal}.{tenant}.{n}")
                .expect("template"),
        )
        .with_batching(
            BatcherConfig::default()
                .with_max_messages(25)
                .with_max_age(Duration::from_millis(50)),
        )
        .with_session_timeout(Duration::from_secs(6))
}

fn open(dir: &Path, tracker: Arc<dyn TrackerCatalog>) -> Pipeline {
    support::open(dir, config(dir), tracker)
}

/// Waits until the tracker's stored offsets of the group sum to `n` messages.
fn wait_for_offsets(
    tracker: &dyn Tracker,
    n: i64,
    source: &KafkaSource,
    broker: &Broker,
) -> BTreeMap<(String, i32), i64> {
    let start = Instant::now();
    loop {
        let offsets: BTreeMap<(String, i32), i64> = tracker
            .source_offsets(GROUP)
            .expect("offsets")
            .into_iter()
            .map(|o| ((o.topic, o.partition), o.offset))
            .collect();
        if offsets.values().sum::<i64>() == n {
            return offsets;
        }
        assert!(
            start.elapsed() < LONG,
            "stored offsets {offsets:?} never reached {n} messages; source: {:?}\nbroker log:\n{}",
            source.status(),
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the source has heard of the claims of `n` messages (a moment after the
/// tracker has them) and seen them durable; returns its status.
fn caught_up(source: &KafkaSource, n: i64) -> wit_pipeline::kafka::KafkaStatus {
    let start = Instant::now();
    loop {
        let status = source.status();
        let stored: i64 = status.partitions.iter().filter_map(|p| p.stored).sum();
        if stored == n && status.durable + status.dead_letters == status.messages {
            return status;
        }
        assert!(start.elapsed() < LONG, "{status:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `(count(*), count(DISTINCT span_id))` of `table`.
fn counts(session: &Session, table: &str) -> (u64, u64) {
    let rows = session
        .blocking_sql(&format!(
            "SELECT count(*) AS n, count(DISTINCT span_id) AS d FROM {table}"
        ))
        .expect("query")
        .to_json_rows()
        .expect("json");
    (rows[0]["n"].as_u64().expect("n"), rows[0]["d"].as_u64().expect("d"))
}

fn session(dir: &Path, tracker: Arc<dyn wit_store::FileCatalog>) -> Session {
    let destination = Destination::local(&dir.join("data")).expect("destination");
    QueryEngine::new(tracker, &destination)
        .expect("engine")
        .session(&acme())
}

/// The group's offsets committed to Kafka, as another client of the group sees them.
fn committed(broker: &Broker, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", GROUP)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed");
    (0..partitions)
        .map(|p| match committed.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => -1,
        })
        .collect()
}

#[test]
fn every_message_of_several_partitions_is_stored_exactly_once_across_a_restart() {
    let Some(broker) = Broker::start() else { return };
    let topic = "v6.qtw.traces.acme.0";
    broker.create_topic(topic, 3);
    let producer = broker.producer();
    // 300 messages of two spans each, span ids 0..600, round robin over the partitions.
    for m in 0..300u64 {
        produce(&producer, topic, (m % 3) as i32, &spans(&[2 * m, 2 * m + 1]));
    }
    flush(&producer);

    let dir = tempfile::tempdir().expect("tempdir");
    let tracker = support::sqlite(dir.path());
    let pipeline = open(dir.path(), tracker.clone());
    let source = pipeline.start_kafka(kafka(&broker)).expect("start");
    let offsets = wait_for_offsets(&*tracker, 300, &source, &broker);
    assert_eq!(offsets.values().copied().collect::<Vec<_>>(), [100, 100, 100]);
    // The source hears of the claims a moment after the tracker has them.
    let start = Instant::now();
    while source.status().partitions.iter().any(|p| p.stored != Some(100)) || source.status().durable != 300 {
        assert!(start.elapsed() < LONG, "{:?}", source.status());
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = source.status();
    assert_eq!(
        (status.messages, status.dead_letters, status.ranges_dropped),
        (300, 0, 0)
    );
    assert!(status.batches_claimed >= 12, "{status:?}"); // at most 25 messages a batch
    assert_eq!(status.partitions.len(), 3, "{status:?}");
    // The offsets go to Kafka too, once claimed.
    let start = Instant::now();
    while committed(&broker, topic, 3) != [100, 100, 100] {
        assert!(start.elapsed() < LONG, "committed {:?}", committed(&broker, topic, 3));
        std::thread::sleep(Duration::from_millis(50));
    }
    source.stop().expect("stop");
    pipeline.flush().expect("flush");
    pipeline.close().expect("close");

    // A restart goes on from the tracker's offsets: nothing is read twice.
    for m in 300..360u64 {
        produce(&producer, topic, (m % 3) as i32, &spans(&[2 * m, 2 * m + 1]));
    }
    flush(&producer);
    let pipeline = open(dir.path(), tracker.clone());
    let source = pipeline.start_kafka(kafka(&broker)).expect("start again");
    let offsets = wait_for_offsets(&*tracker, 360, &source, &broker);
    assert_eq!(offsets.values().copied().collect::<Vec<_>>(), [120, 120, 120]);
    assert_eq!(source.status().messages, 60);
    source.stop().expect("stop");
    pipeline.flush().expect("flush");
    pipeline.close().expect("close");

    assert_eq!(counts(&session(dir.path(), tracker.clone()), "spans"), (720, 720));
    if support::has_pyarrow() {
        let mut ids = support::pyarrow_read(&dir.path().join("data"), "traces").ids;
        ids.sort_unstable();
        assert_eq!(ids, (0..720).collect::<Vec<i64>>());
    }
}

#[test]
fn a_poison_message_is_dead_lettered_with_its_place_and_the_partition_goes_on() {
    let Some(broker) = Broker::start() else { return };
    let topic = "v6.qtw.logs.acme.0";
    broker.create_topic(topic, 1);
    let producer = broker.producer();
    produce(&producer, topic, 0, &logs(&[1, 2]));
    produce(&producer, topic, 0, &[0xff; 8]); // not protobuf
    produce(&producer, topic, 0, &logs(&[3]));
    produce(&producer, topic, 0, b""); // empty
    flush(&producer);

    let dir = tempfile::tempdir().expect("tempdir");
    let tracker = support::sqlite(dir.path());
    let pipeline = open(dir.path(), tracker.clone());
    let source = pipeline.start_kafka(kafka(&broker)).expect("start");
    // The offset goes past the poison messages, the last one included.
    wait_for_offsets(&*tracker, 4, &source, &broker);
    // The empty message is refused as it is read; the one that does not decode is found by
    // the processor converting the claimed batch, a moment after its offset is stored.
    let start = Instant::now();
    while source.status().dead_letters < 2 {
        assert!(start.elapsed() < LONG, "{:?}", source.status());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(source.status().dead_letters, 2);
    source.stop().expect("stop");
    pipeline.flush().expect("flush");
    pipeline.close().expect("close");

    let session = session(dir.path(), tracker.clone());
    assert_eq!(counts(&session, "logs"), (3, 3));
    let rows = session
        .blocking_sql(
            "SELECT signal, topic, \"partition\", \"offset\", reason, record FROM dead_letters ORDER BY \"offset\"",
        )
        .expect("dead letters")
        .to_json_rows()
        .expect("json");
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        (
            rows[0]["signal"].as_str(),
            rows[0]["topic"].as_str(),
            rows[0]["partition"].as_i64(),
            rows[0]["offset"].as_i64()
        ),
        (Some("logs"), Some(topic), Some(0), Some(1))
    );
    let reason = rows[0]["reason"].as_str().expect("reason");
    assert!(!reason.is_empty(), "{rows:?}");
    assert_eq!(rows[0]["record"].as_str(), Some("base64://////////8="));
    assert_eq!(rows[1]["offset"].as_i64(), Some(3));
    assert_eq!(rows[1]["reason"].as_str(), Some("the message is empty"));
}

#[test]
fn otlp_json_and_ndjson_topics_go_by_their_rules() {
    let Some(broker) = Broker::start() else { return };
    broker.create_topic("billing", 1);
    broker.create_topic("json.logs.acme", 1);
    let producer = broker.producer();
    for i in 0..2 {
        let events = format!(
            "{{\"timestamp\":\"2026-01-01T00:00:0{i}Z\",\"id\":{},\"amount\":3}}\n{{\"timestamp\":\"2026-01-01T00:00:0{i}Z\",\"id\":{},\"amount\":4}}\n",
            2 * i,
            2 * i + 1
        );
        produce(&producer, "billing", 0, events.as_bytes());
        let log = format!(
            "{{\"resourceLogs\":[{{\"scopeLogs\":[{{\"logRecords\":[{{\"timeUnixNano\":\"1767225600000000000\",\"body\":{{\"stringValue\":\"hello {i}\"}}}}]}}]}}]}}"
        );
        produce(&producer, "json.logs.acme", 0, log.as_bytes());
    }
    produce(&producer, "billing", 0, b"{\"id\":9}\n"); // no time: the whole message is refused
    flush(&producer);

    let dir = tempfile::tempdir().expect("tempdir");
    let tracker = support::sqlite(dir.path());
    let pipeline = open(dir.path(), tracker.clone());
    let config = KafkaConfig::new(&broker.addr, GROUP)
        .with_topic(
            TopicRule::new("billing", PayloadFormat::Ndjson)
                .with_tenant(acme())
                .with_signal(Signal::Events),
        )
        .with_topic(
            TopicRule::new("^json\\..*", PayloadFormat::OtlpJson)
                .with_template("json.{signal}.{tenant}")
                .expect("template"),
        )
        .with_batching(BatcherConfig::default().with_max_age(Duration::from_millis(50)))
        .with_session_timeout(Duration::from_secs(6));
    let source = pipeline.start_kafka(config).expect("start");
    wait_for_offsets(&*tracker, 5, &source, &broker);
    source.stop().expect("stop");
    pipeline.flush().expect("flush");
    pipeline.close().expect("close");

    let session = session(dir.path(), tracker.clone());
    let rows = |sql: &str| session.blocking_sql(sql).expect(sql).to_json_rows().expect("json");
    let events = rows("SELECT id, amount, _stream FROM events ORDER BY id");
    assert_eq!(events.len(), 4, "{events:?}");
    assert_eq!(
        (events[3]["id"].as_i64(), events[3]["_stream"].as_str()),
        (Some(3), Some("billing"))
    );
    let logs = rows("SELECT body FROM logs ORDER BY body");
    assert_eq!(logs.len(), 2, "{logs:?}");
    let dead = rows("SELECT topic, \"offset\", reason FROM dead_letters");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        (dead[0]["topic"].as_str(), dead[0]["offset"].as_i64()),
        (Some("billing"), Some(2))
    );
}

#[test]
fn batches_fit_in_a_wal_record_and_a_message_too_large_for_one_is_a_dead_letter() {
    let Some(broker) = Broker::start() else { return };
    let topic = "v6.qtw.traces.acme.0";
    broker.create_topic(topic, 1);
    let producer = broker.producer();
    // Six messages of about 70 KB and, fourth, one of about 700 KB; a WAL record holds
    // 256 KiB, the source's batches up to 8 MiB.
    let mut next = 0u64;
    let mut message = |spans_n: u64| {
        let ids: Vec<u64> = (next..next + spans_n).collect();
        next += spans_n;
        spans(&ids)
    };
    let mut sizes = Vec::new();
    for m in 0..7 {
        let payload = if m == 3 { message(10_000) } else { message(1_000) };
        sizes.push(payload.len());
        produce(&producer, topic, 0, &payload);
    }
    flush(&producer);
    assert!(
        sizes[0] > 40_000 && sizes[0] < 100_000 && sizes[3] > 300_000,
        "{sizes:?}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let tracker = support::sqlite(dir.path());
    let config = config(dir.path()).with_wal(wit_wal::Config::default().with_max_record_size(256 << 10));
    let pipeline = support::open(dir.path(), config, tracker.clone());
    let source = pipeline
        .start_kafka(kafka(&broker).with_batching(BatcherConfig::default().with_max_age(Duration::from_millis(200))))
        .expect("start");
    wait_for_offsets(&*tracker, 7, &source, &broker);
    let status = caught_up(&source, 7);
    assert_eq!((status.dead_letters, status.durable), (1, 6), "{status:?}");
    assert!(
        status.batches_claimed >= 2,
        "six messages of 70 KB take two records at least: {status:?}"
    );
    source.stop().expect("stop");
    pipeline.flush().expect("flush");
    pipeline.close().expect("close");

    let session = session(dir.path(), tracker.clone());
    assert_eq!(counts(&session, "spans"), (6_000, 6_000));
    let dead = session
        .blocking_sql("SELECT \"offset\", reason, length(record) AS n FROM dead_letters")
        .expect("dead letters")
        .to_json_rows()
        .expect("json");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["offset"].as_i64(), Some(3));
    let reason = dead[0]["reason"].as_str().expect("reason");
    assert!(
        reason.contains("larger than a WAL record holds") && reason.contains("cut to its first 65536 bytes"),
        "{reason}"
    );
    // The first 64 KiB, in base64.
    assert_eq!(dead[0]["n"].as_i64(), Some(7 + 65_536_u64.div_ceil(3) as i64 * 4));
}

/// A range of a megabyte or more goes on as soon as the source has caught up, long before
/// its age; a small one waits for its age (here an hour), so a trickle makes few batches.
#[test]
fn a_large_range_is_sealed_once_the_source_has_caught_up_and_a_small_one_waits() {
    let Some(broker) = Broker::start() else { return };
    let topic = "v6.qtw.traces.acme.0";
    broker.create_topic(topic, 1);
    let producer = broker.producer();
    let dir = tempfile::tempdir().expect("tempdir");
    let tracker = support::sqlite(dir.path());
    // Segments (and so records) of 8 MiB: the range's megabyte fits one.
    let config = config(dir.path()).with_wal(wit_wal::Config::default().with_segment_size(8 << 20));
    let pipeline = support::open(dir.path(), config, tracker.clone());
    let hour = Duration::from_secs(3600);
    let source = pipeline
        .start_kafka(kafka(&broker).with_batching(BatcherConfig::default().with_max_messages(1_000).with_max_age(hour)))
        .expect("start");

    // Two small messages: read, then held in their open range.
    for first in [0, 10] {
        produce(&producer, topic, 0, &spans(&(first..first + 10).collect::<Vec<_>>()));
    }
    flush(&producer);
    let start = Instant::now();
    while source.status().messages < 2 {
        assert!(start.elapsed() < LONG, "{:?}", source.status());
        std::thread::sleep(Duration::from_millis(20));
    }
    // The source polls many times a second meanwhile, caught up each time.
    std::thread::sleep(Duration::from_secs(2));
    let status = source.status();
    assert_eq!((status.durable, status.batches_claimed), (0, 0), "{status:?}");

    // Eight messages of about 200 KB take the range past a megabyte: it goes on, without
    // waiting for its age. (What is read after it is sealed waits in a range of its own.)
    let mut sizes = Vec::new();
    for m in 0..8u64 {
        let first = 1_000 + m * 5_000;
        let payload = spans(&(first..first + 5_000).collect::<Vec<_>>());
        sizes.push(payload.len());
        produce(&producer, topic, 0, &payload);
    }
    flush(&producer);
    assert!(sizes.iter().sum::<usize>() > 1 << 20, "{sizes:?}");
    let start = Instant::now();
    let status = loop {
        let status = source.status();
        if status.batches_claimed >= 1 {
            break status;
        }
        assert!(start.elapsed() < LONG, "no range went on: {status:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.durable >= 2 + 3, "the range held a megabyte: {status:?}");
    let claimed: i64 = tracker
        .source_offsets(GROUP)
        .expect("offsets")
        .iter()
        .map(|o| o.offset)
        .sum();
    assert!(claimed >= 5, "{claimed}");

    // Stopping sends the rest on; everything is stored once.
    source.stop().expect("stop");
    pipeline.flush().expect("flush");
    pipeline.close().expect("close");
    let session = session(dir.path(), tracker.clone());
    assert_eq!(counts(&session, "spans"), (40_020, 40_020));
}

#[test]
fn a_range_claimed_by_another_consumer_is_dropped_and_read_again_from_the_tracker() {
    let Some(broker) = Broker::start() else { return };
    let topic = "v6.qtw.traces.acme.0";
    broker.create_topic(topic, 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let tracker = support::sqlite(dir.path());
    let pipeline = open(dir.path(), tracker.clone());
    let source = pipeline.start_kafka(kafka(&broker)).expect("start");
    // The partition is ours, with no stored offset: the source reads it from the beginning.
    let start = Instant::now();
    while source.status().partitions.len() != 1 {
        assert!(start.elapsed() < LONG, "never assigned: {:?}", source.status());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(source.status().partitions[0].stored, None);

    // Another consumer of the group claims offsets 0..5 first (as one that read the partition
    // before a rebalance would).
    let id = BatchId::new();
    let other = BatchMeta {
        id,
        tenant: acme(),
        signal: Signal::Traces,
        source: SourceKind::Kafka,
        message_count: 5,
        byte_size: 0,
        first_offset: None,
        last_offset: Some(4),
        topics: vec![topic.to_owned()],
        partition: Some(0),
        created_at: id.created_at(),
    };
    let claimed = tracker
        .claim_ranges(&[RangeClaim::new(other, GROUP, topic, 0, None, 5, SystemTime::now())])
        .expect("claim");
    assert_eq!(claimed, [RangeOutcome::Claimed]);

    let producer = broker.producer();
    for m in 0..10u64 {
        produce(&producer, topic, 0, &spans(&[m]));
    }
    flush(&producer);
    // Our range from the beginning is dropped; the source starts again at 5.
    wait_for_offsets(&*tracker, 10, &source, &broker);
    let status = source.status();
    assert!(status.ranges_dropped >= 1, "{status:?}");
    assert!(pipeline.status().ranges_dropped >= 1);
    source.stop().expect("stop");
    pipeline.flush().expect("flush");
    pipeline.close().expect("close");

    let session = session(dir.path(), tracker.clone());
    let rows = session
        .blocking_sql("SELECT span_id FROM spans ORDER BY span_id")
        .expect("query")
        .to_json_rows()
        .expect("json");
    assert_eq!(rows.len(), 5, "only offsets 5..10 are ours: {rows:?}");
    if support::has_pyarrow() {
        let mut ids = support::pyarrow_read(&dir.path().join("data"), "traces").ids;
        ids.sort_unstable();
        assert_eq!(ids, [5, 6, 7, 8, 9]);
    }
}

#[test]
fn a_broker_that_stops_answering_holds_the_source_up_and_nothing_is_lost() {
    let Some(broker) = Broker::start() else { return };
    let topic = "v6.qtw.traces.acme.0";
    broker.create_topic(topic, 2);
    let producer = broker.producer();
    for m in 0..50u64 {
        produce(&producer, topic, (m % 2) as i32, &spans(&[m]));
    }
    flush(&producer);
    let dir = tempfile::tempdir().expect("tempdir");
    let tracker = support::sqlite(dir.path());
    let pipeline = open(dir.path(), tracker.clone());
    let source = pipeline.start_kafka(kafka(&broker)).expect("start");
    wait_for_offsets(&*tracker, 50, &source, &broker);
    // Down for longer than the session: the client retries with backoff, and the group
    // settles again once the broker answers.
    broker.pause();
    std::thread::sleep(Duration::from_secs(8));
    broker.resume();
    for m in 50..100u64 {
        produce(&producer, topic, (m % 2) as i32, &spans(&[m]));
    }
    flush(&producer);
    wait_for_offsets(&*tracker, 100, &source, &broker);
    let status = source.status();
    assert_eq!((status.messages, status.ranges_dropped), (100, 0), "{status:?}");
    source.stop().expect("stop");
    pipeline.flush().expect("flush");
    pipeline.close().expect("close");
    assert_eq!(counts(&session(dir.path(), tracker.clone()), "spans"), (100, 100));
}

/// Opens a pipeline in `{dir}/{node}` as node `node`, storing to `{dir}/data`.
fn open_node(dir: &Path, node: &str, tracker: Arc<dyn TrackerCatalog>) -> Pipeline {
    let config = support::node_config(&dir.join(node), node);
    let destination = Destination::local(&dir.join("data")).expect("dest");
    Pipeline::open(config, destination, tracker).expect("open")
}

/// Node a reads 10 messages into its WAL and stops before any is claimed (its tracker
/// refuses claims). With `taken`, node b of the same group claims and stores them meanwhile.
/// Then node a opens again: its recovery claims its batches before the consumer reads — or
/// drops them, when b has them. Either way each message is stored once.
fn unclaimed_batches_in_the_wal(taken: bool) {
    let Some(broker) = Broker::start() else { return };
    let topic = "v6.qtw.traces.acme.0";
    broker.create_topic(topic, 1);
    let producer = broker.producer();
    for m in 0..10u64 {
        produce(&producer, topic, 0, &spans(&[m]));
    }
    flush(&producer);
    let dir = tempfile::tempdir().expect("tempdir");
    let tracker = support::sqlite(dir.path());
    let config = kafka(&broker).with_revoke_patience(Duration::from_millis(200));

    let faulty = Arc::new(crate::faulty::Faulty::new(tracker.clone(), None));
    faulty.set_refuse_claims(true);
    let a = open_node(dir.path(), "node-a", faulty.clone());
    let source = a.start_kafka(config.clone()).expect("start a");
    let start = Instant::now();
    while a.wal().stats().next_lsn.0 == 0 || source.status().messages < 10 || a.status().last_error.is_none() {
        assert!(
            start.elapsed() < LONG,
            "a never wrote: {:?} {:?}",
            source.status(),
            a.status()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200)); // every range sealed (50 ms) and durable
    drop(source);
    drop(a);
    assert!(tracker.source_offsets(GROUP).expect("offsets").is_empty());

    if taken {
        let b = open_node(dir.path(), "node-b", tracker.clone());
        let source = b.start_kafka(config.clone()).expect("start b");
        wait_for_offsets(&*tracker, 10, &source, &broker);
        source.stop().expect("stop b");
        b.flush().expect("flush b");
        b.close().expect("close b");
    }

    let a = open_node(dir.path(), "node-a", tracker.clone());
    assert!(a.recovery().ranges_unclaimed >= 1, "{:?}", a.recovery());
    let source = a.start_kafka(config).expect("start a again");
    // The parked batches were claimed (or dropped) before the consumer started.
    let dropped = a.status().ranges_dropped;
    if taken {
        assert_eq!(dropped, a.recovery().ranges_unclaimed, "every batch of a's is b's now");
    } else {
        assert_eq!(dropped, 0);
    }
    wait_for_offsets(&*tracker, 10, &source, &broker);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        source.status().messages,
        0,
        "nothing is read again: {:?}",
        source.status()
    );
    source.stop().expect("stop");
    a.flush().expect("flush");
    a.close().expect("close");

    assert_eq!(counts(&session(dir.path(), tracker.clone()), "spans"), (10, 10));
    if support::has_pyarrow() {
        let mut ids = support::pyarrow_read(&dir.path().join("data"), "traces").ids;
        ids.sort_unstable();
        assert_eq!(ids, (0..10).collect::<Vec<i64>>());
    }
}

#[test]
fn batches_written_but_never_claimed_are_claimed_by_recovery_before_the_consumer_reads() {
    unclaimed_batches_in_the_wal(false);
}

#[test]
fn batches_written_but_claimed_by_another_node_meanwhile_are_dropped_by_recovery() {
    unclaimed_batches_in_the_wal(true);
}
