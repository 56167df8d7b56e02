//! The Kafka source in `wit serve`, against a real Kafka-compatible broker (Tansu on
//! 127.0.0.1): every message stored exactly once while the consumer is killed with SIGKILL,
//! and while two servers of one group share the partitions and one of them is killed. An
//! independent reader (parquet's own) counts every record in the files the catalog lists.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prost::Message as _;

use super::kafka_broker::{Broker, flush, produce};
use super::{Server, metric, spans, stored_names};

const TOPIC: &str = "v6.qtw.traces.default.0";
const PARTITIONS: i32 = 4;

/// `wit serve`'s configuration for the broker at `addr`: seed 000's topic names.
fn kafka_yaml(addr: &str, node: &str) -> String {
    kafka_yaml_with(addr, node, 20)
}

/// [`kafka_yaml`], the processor starting a round at most every `interval_ms` (claims wait
/// that long in the WAL).
fn kafka_yaml_with(addr: &str, node: &str, interval_ms: u64) -> String {
    format!(
        "node: {node}
pipeline:
  batch_max_age_ms: 5
  file_max_age_ms: 200
  processing_interval_ms: {interval_ms}
shutdown_grace_ms: 2000
kafka:
  brokers: {addr}
  group: wit-test
  session_timeout_ms: 3000
  revoke_patience_ms: 500
  batch_size: 50
  batch_timeout_ms: 20
  topics:
    - subscription: ^v6\\.qtw\\..*
      template: \"{{prefix}}.{{app}}.{{signal}}.{{tenant}}.{{n}}\"
      format: otlp_protobuf
"
    )
}

/// Produces `n` messages (message `i`: spans `k{i}-0` and `k{i}-1`) round robin over the
/// partitions, about one every `pace`, on a thread; `sent` counts them.
fn producer(broker: &Broker, n: u64, pace: Duration, sent: Arc<AtomicU64>) -> std::thread::JoinHandle<()> {
    let producer = broker.producer();
    std::thread::spawn(move || {
        for i in 0..n {
            produce(
                &producer,
                TOPIC,
                (i % PARTITIONS as u64) as i32,
                &spans(&format!("k{i}"), 2).encode_to_vec(),
            );
            sent.fetch_add(1, Ordering::Release);
            std::thread::sleep(pace);
        }
        flush(&producer);
    })
}

/// Every message's two spans exactly once in `counts`.
fn assert_exactly_once(counts: &HashMap<String, usize>, n: u64) {
    for i in 0..n {
        for j in 0..2 {
            let got = counts.get(&format!("k{i}-{j}")).copied().unwrap_or(0);
            assert_eq!(got, 1, "span k{i}-{j} is stored {got} times");
        }
    }
    assert_eq!(counts.values().sum::<usize>() as u64, 2 * n, "nothing else is stored");
}

/// A xorshift step: the kills' moments.
fn next(rng: &mut u64) -> u64 {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    *rng
}

fn kill(server: &mut Server) {
    let mut child = server.child.take().expect("running");
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
}

#[test]
fn kafka_messages_survive_sigkills_of_the_consumer_and_are_stored_exactly_once() {
    const MESSAGES: u64 = 3_000;
    let Some(broker) = Broker::start() else { return };
    broker.create_topic(TOPIC, PARTITIONS);
    let tmp = tempfile::tempdir().expect("tmp");
    let mut server = Server::start(tmp.path(), &kafka_yaml(&broker.addr, "node-1"));
    let sent = Arc::new(AtomicU64::new(0));
    let producing = producer(&broker, MESSAGES, Duration::from_millis(3), sent.clone());
    // Killed at random moments while the producer goes on, and started again.
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(300 + next(&mut rng) % 900));
        kill(&mut server);
        server.spawn();
    }
    producing.join().expect("producer");
    assert_eq!(sent.load(Ordering::Acquire), MESSAGES);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = server.sql(None, "SELECT count(*) AS n FROM spans")["rows"][0]["n"].as_u64();
        if n == Some(2 * MESSAGES) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{n:?} of {} spans: {}",
            2 * MESSAGES,
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Lag per partition, against the tracker's offsets and the group's committed ones (the
    // statistics come every 5 s; Tansu's high watermark is not trusted here, only reported).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut metrics = server.metrics();
    while ["by=\"tracker\"", "by=\"broker\""]
        .iter()
        .any(|by| metric(&metrics, "wit_kafka_consumer_lag", &[by, "partition=\"3\""]).is_none())
    {
        assert!(Instant::now() < deadline, "no lag per partition: {metrics}");
        std::thread::sleep(Duration::from_millis(200));
        metrics = server.metrics();
    }
    assert!(
        metric(&metrics, "wit_kafka_messages_total", &[]).is_some_and(|n| n > 0.0),
        "{metrics}"
    );
    assert!(
        metric(&metrics, "wit_kafka_bytes_total", &[]).is_some_and(|n| n > 0.0),
        "{metrics}"
    );
    assert!(
        metric(&metrics, "wit_kafka_rebalances_total", &[]).is_some_and(|n| n > 0.0),
        "{metrics}"
    );
    assert_eq!(server.stop(), Some(0), "{}", server.log());
    assert_exactly_once(&stored_names(&server.dir.join("data")), MESSAGES);
}

#[test]
fn two_servers_of_one_group_on_postgresql_store_each_message_once_when_one_is_killed() {
    const MESSAGES: u64 = 4_000;
    let Some(pg) = super::pg_server::PgServer::shared() else {
        return;
    };
    if !super::moto::Moto::available() {
        return;
    }
    let Some(broker) = Broker::start() else { return };
    broker.create_topic(TOPIC, PARTITIONS);
    // Two nodes as deployed: one PostgreSQL tracker, one bucket (moto), a WAL each.
    let s3 = super::moto::Moto::start();
    let tracker = pg.fresh_schema("kafka");
    let tmp = tempfile::tempdir().expect("tmp");
    let options: String = super::moto::options(s3.port)
        .into_iter()
        .map(|(k, v)| format!("    {k}: \"{v}\"\n"))
        .collect();
    let shared = format!(
        "tracker:\n  kind: postgres\n  url: \"{tracker}\"\nstorage:\n  url: s3://wit/kafka\n  options:\n{options}"
    );
    let start = |node: &str| {
        let dir = tmp.path().join(node);
        std::fs::create_dir_all(&dir).expect("dir");
        // Claims wait up to 300 ms in the WAL: a kill often finds batches not yet claimed.
        Server::start(&dir, &format!("{}{shared}", kafka_yaml_with(&broker.addr, node, 300)))
    };
    let mut a = start("node-a");
    let mut b = start("node-b");
    let sent = Arc::new(AtomicU64::new(0));
    let producing = producer(&broker, MESSAGES, Duration::from_millis(10), sent.clone());
    // Node a is killed while both read (SIGKILL), or frozen past its session (SIGSTOP, then
    // SIGCONT: a zombie that wakes up with batches in hand); either way its partitions move
    // to node b. A killed node's recovery claims the batches it wrote and never claimed, or
    // drops them where b claimed their range meanwhile; a zombie's batches are dropped when
    // their claims find b's. Rounds go on until both happened and a drop was seen.
    let done = AtomicBool::new(false);
    let mut dropped = 0.0;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let read = |server: &Server| metric(&server.metrics(), "wit_kafka_messages_total", &[]).unwrap_or(0.0);
    for round in 0..8 {
        // Node a reads its share first (a group takes a few seconds to settle).
        let deadline = Instant::now() + Duration::from_secs(30);
        let before = read(&a);
        while read(&a) <= before && sent.load(Ordering::Acquire) < MESSAGES {
            assert!(Instant::now() < deadline, "node a never read: {}", a.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(200 + next(&mut rng) % 600));
        if round % 2 == 0 {
            kill(&mut a);
            // Node b takes every partition once a's session runs out (3 s), and claims what
            // a had written and not claimed.
            std::thread::sleep(Duration::from_millis(6_000));
            a.spawn();
        } else {
            let pid = a.child.as_ref().expect("running").id().to_string();
            let signal = |name: &str| {
                let status = std::process::Command::new("kill").args([name, &pid]).status();
                assert!(status.expect("kill").success());
            };
            signal("-STOP");
            std::thread::sleep(Duration::from_millis(4_000));
            signal("-CONT");
        }
        std::thread::sleep(Duration::from_millis(1_000));
        for (name, server) in [("a", &a), ("b", &b)] {
            let text = server.metrics();
            let read = |m: &str| metric(&text, m, &[]).unwrap_or(0.0);
            println!(
                "round {round}: node {name} read {} messages, {} rebalances, {} ranges dropped",
                read("wit_kafka_messages_total"),
                read("wit_kafka_rebalances_total"),
                read("wit_pipeline_ranges_dropped_total")
            );
        }
        dropped = [&a, &b]
            .iter()
            .filter_map(|s| metric(&s.metrics(), "wit_pipeline_ranges_dropped_total", &[]))
            .sum::<f64>();
        if dropped > 0.0 && round >= 1 {
            done.store(true, Ordering::Release);
            break;
        }
    }
    producing.join().expect("producer");
    assert_eq!(sent.load(Ordering::Acquire), MESSAGES);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = b.sql(None, "SELECT count(*) AS n FROM spans")["rows"][0]["n"].as_u64();
        if n == Some(2 * MESSAGES) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{n:?} of {} spans:\nnode a: {}\nnode b: {}",
            2 * MESSAGES,
            a.log(),
            b.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        done.load(Ordering::Acquire),
        "a batch whose range the other node claimed was dropped ({dropped} so far)\nnode a: {}",
        a.log()
    );
    println!("batches dropped because the other node had claimed their range: {dropped}");
    assert_eq!(a.stop(), Some(0), "{}", a.log());
    assert_eq!(b.stop(), Some(0), "{}", b.log());
    // The files the catalog lists, read from the bucket by boto3 and pyarrow.
    let catalog = wit_tracker::PostgresTracker::connect(&tracker, Default::default()).expect("tracker");
    let tenant = wit_batch::Tenant::try_new("default").expect("tenant");
    let files = wit_store::FileCatalog::list(&catalog, &tenant, wit_batch::Signal::Traces, None).expect("list");
    let out = std::process::Command::new("python3")
        .args(["-c", super::READ_BUCKET, &s3.port.to_string()])
        .args(files.iter().map(|f| format!("kafka/{}", f.path)))
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut counts = HashMap::new();
    for name in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        *counts.entry(name.to_owned()).or_default() += 1;
    }
    assert_exactly_once(&counts, MESSAGES);
}
