//! The consumer: one thread that polls, gathers each partition's messages into ranges, hands
//! sealed ranges to the pipeline, and commits what the processor claimed.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use wit_batch::{BatchId, BatchMeta, Compression, Envelope, Part, PayloadFormat, Signal, SourceKind, Tenant};
use wit_tracker::RangeOutcome;

use super::{KafkaConfig, KafkaStatus, PartitionStatus, route};
use crate::pipeline::Shared;
use crate::ranges::{RangeReport, RangeSource};
use crate::{Ack, Error, Pipeline, Result};

type Tp = (String, i32);

/// What an envelope's header may take (tenant, topic: a few hundred bytes), as the pipeline
/// allows for it.
const ENVELOPE_HEADER: u64 = 4 << 10;
/// A part's frame in an envelope: format, compression, message count, source offset,
/// idempotency flag, payload length.
const PART_FRAME: u64 = 1 + 1 + 4 + 9 + 1 + 8;
/// An open range of this many payload bytes is sealed as soon as the consumer has nothing
/// more to read at once, without waiting for its age: from a megabyte on, a batch is worth a
/// WAL write and a tracker transaction of its own (the WAL's large groups start there too).
const CAUGHT_UP_SEAL_BYTES: u64 = 1 << 20;

/// The range of a partition being gathered: its messages since the last sealed range.
#[derive(Default)]
struct Open {
    parts: Vec<Part>,
    bytes: u64,
    /// When its first message (poison ones included) was read.
    since: Option<Instant>,
    /// Dead letters of its poison messages: durable before the range is sent.
    dead: Vec<Ack>,
}

struct Partition {
    /// Tenant, signal and format, or why the topic cannot be routed (then it is paused).
    route: std::result::Result<(Tenant, Signal, PayloadFormat), String>,
    /// The tracker's stored offset, as known (read at assignment, then claims).
    stored: Option<i64>,
    /// Where the open range starts: the end of the last range sent (`None`: the partition
    /// had no stored offset when it was assigned, and nothing was sent since).
    start: Option<i64>,
    /// The offset after the last message read.
    position: Option<i64>,
    open: Open,
    /// Batches sent to the pipeline and not yet claimed (or dropped).
    in_flight: VecDeque<BatchId>,
    high: Option<i64>,
    committed: Option<i64>,
}

/// A sealed range waiting for room in the pipeline.
struct Sealed {
    tp: Tp,
    envelope: Envelope,
}

#[derive(Default)]
struct State {
    partitions: HashMap<Tp, Partition>,
    pending: VecDeque<Sealed>,
    /// Batches sent, with their message counts, until durable in the WAL.
    writing: VecDeque<(Ack, u64)>,
    /// Whether the assignment is paused because the pipeline has no room.
    paused: bool,
    status: KafkaStatus,
}

impl State {
    /// Counts the batches sent that are durable now (they become durable in the order they
    /// were sent).
    fn drain_durable(&mut self) {
        while let Some((ack, messages)) = self.writing.front() {
            let Some(result) = ack.try_get() else { break };
            let messages = *messages;
            if result.is_ok() {
                self.status.durable += messages;
            }
            self.writing.pop_front();
        }
    }
}

struct Inner {
    shared: Arc<Shared>,
    config: KafkaConfig,
    state: Mutex<State>,
    reports: Mutex<mpsc::Receiver<RangeReport>>,
    stop: AtomicBool,
}

/// The consumer's context: rebalances and statistics, on the polling thread.
struct Context {
    inner: Arc<Inner>,
}

/// A running Kafka source: see the [module docs](crate::kafka). Started by
/// [`Pipeline::start_kafka`]; stops with [`stop`](Self::stop) (or when dropped).
pub struct KafkaSource {
    inner: Arc<Inner>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("group", &self.inner.config.group)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Starts a Kafka source that feeds this pipeline: a member of `config`'s consumer group,
    /// subscribed to its topics. One source runs per pipeline.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a configuration that cannot work, or when a source runs
    /// already; [`Error::Kafka`] when the client cannot be created or subscribe;
    /// [`Error::Closed`].
    pub fn start_kafka(&self, config: KafkaConfig) -> Result<KafkaSource> {
        let config = config.validate()?;
        let shared = self.shared().clone();
        shared.check_open()?;
        let (tx, rx) = mpsc::channel();
        {
            let mut ranges = shared.ranges.lock();
            if ranges.as_ref().is_some_and(|r| r.active) {
                return Err(Error::InvalidConfig {
                    reason: "a Kafka source runs already on this pipeline".to_owned(),
                });
            }
            *ranges = Some(RangeSource {
                source: config.group.clone(),
                reports: tx,
                active: true,
            });
        }
        // Recovery, last step: the batches the last run wrote to the WAL and did not claim
        // are claimed (or dropped) before the consumer reads anything.
        shared.wake_all();
        while shared.parked.load(Ordering::Acquire) > 0 {
            if let Err(e) = shared.check_open() {
                if let Some(ranges) = shared.ranges.lock().as_mut() {
                    ranges.active = false;
                }
                return Err(e);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let inner = Arc::new(Inner {
            shared,
            config,
            state: Mutex::new(State::default()),
            reports: Mutex::new(rx),
            stop: AtomicBool::new(false),
        });
        let consumer = match inner.consumer() {
            Ok(consumer) => consumer,
            Err(e) => {
                inner.release();
                return Err(e);
            }
        };
        let thread = std::thread::Builder::new().name("wit-kafka".to_owned()).spawn({
            let inner = inner.clone();
            move || {
                let result = inner.run(&consumer);
                inner.finish(&consumer);
                drop(consumer);
                inner.release();
                result
            }
        });
        match thread {
            Ok(thread) => Ok(KafkaSource {
                inner,
                thread: Some(thread),
            }),
            Err(e) => {
                inner.release();
                Err(Error::Kafka {
                    operation: "start the consumer thread",
                    reason: e.to_string(),
                })
            }
        }
    }
}

impl KafkaSource {
    /// The source's progress.
    pub fn status(&self) -> KafkaStatus {
        let mut state = self.inner.state.lock();
        state.drain_durable();
        let mut status = state.status.clone();
        // Poison messages the processor found (converting the claimed batches) count too.
        status.dead_letters += self.inner.shared.status.lock().dead_letters;
        status.partitions = state
            .partitions
            .iter()
            .map(|((topic, partition), p)| PartitionStatus {
                topic: topic.clone(),
                partition: *partition,
                stored: p.stored,
                position: p.position,
                high_watermark: p.high,
                paused: p.route.as_ref().err().cloned(),
            })
            .collect();
        status
            .partitions
            .sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        status
    }

    /// Stops reading: the open ranges are sent, the source waits (up to the revoke patience)
    /// for their claims and commits them, and leaves the group.
    ///
    /// # Errors
    ///
    /// The error that stopped the source earlier, if one did.
    pub fn stop(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        self.inner.stop.store(true, Ordering::Release);
        match self.thread.take() {
            Some(thread) => thread.join().unwrap_or_else(|_| {
                Err(Error::Kafka {
                    operation: "run the consumer",
                    reason: "the consumer thread panicked".to_owned(),
                })
            }),
            None => Ok(()),
        }
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

impl ClientContext for Context {
    fn error(&self, error: KafkaError, reason: &str) {
        self.inner.note(&format!("{error}: {reason}"));
    }

    fn stats(&self, statistics: Statistics) {
        let mut state = self.inner.state.lock();
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                let Some(part) = state.partitions.get_mut(&(topic.clone(), *partition)) else {
                    continue;
                };
                if p.hi_offset >= 0 {
                    part.high = Some(p.hi_offset);
                }
                if p.committed_offset >= 0 {
                    part.committed = Some(p.committed_offset);
                }
                let labels = [
                    ("topic", topic.clone()),
                    ("partition", partition.to_string()),
                    ("by", "tracker".to_owned()),
                ];
                if let (Some(high), Some(stored)) = (part.high, part.stored) {
                    metrics::gauge!("wit_kafka_consumer_lag", &labels).set((high - stored).max(0) as f64);
                }
                if let (Some(high), Some(committed)) = (part.high, part.committed) {
                    let labels = [labels[0].clone(), labels[1].clone(), ("by", "broker".to_owned())];
                    metrics::gauge!("wit_kafka_consumer_lag", &labels).set((high - committed).max(0) as f64);
                }
            }
        }
    }
}

impl ConsumerContext for Context {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let inner = &self.inner;
        inner.state.lock().status.rebalances += 1;
        metrics::counter!("wit_kafka_rebalances_total").increment(1);
        let tps: Vec<Tp> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let stored = inner.stored_offsets();
                for (topic, partition) in &tps {
                    let offset = match stored.get(&(topic.clone(), *partition)) {
                        Some(&offset) => Offset::Offset(offset),
                        None => Offset::Beginning,
                    };
                    if let Err(e) = tpl.set_partition_offset(topic, *partition, offset) {
                        inner.note(&format!("cannot start {topic}/{partition} at {offset:?}: {e}"));
                    }
                }
                let unroutable = inner.assign(&tps, &stored);
                if let Err(e) = consumer.assign(tpl) {
                    inner.note(&format!("cannot take the assignment: {e}"));
                }
                if unroutable.count() > 0
                    && let Err(e) = consumer.pause(&unroutable)
                {
                    inner.note(&format!("cannot pause topics without a route: {e}"));
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                inner.revoke(consumer, &tps);
                if let Err(e) = consumer.unassign() {
                    inner.note(&format!("cannot give the partitions up: {e}"));
                }
            }
            other => {
                inner.note(&format!("rebalance failed: {other:?}"));
                inner.revoke(consumer, &tps);
                let _ = consumer.unassign();
            }
        }
    }
}

impl Inner {
    fn consumer(self: &Arc<Self>) -> Result<BaseConsumer<Context>> {
        let config = &self.config;
        let mut client = ClientConfig::new();
        for (key, value) in &config.options {
            client.set(key, value);
        }
        let session_ms = config.session_timeout.as_millis().max(1);
        client
            .set("bootstrap.servers", &config.brokers)
            .set("group.id", &config.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // Never used: every partition starts at the tracker's offset or its beginning.
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "range")
            .set("session.timeout.ms", session_ms.to_string())
            .set("heartbeat.interval.ms", (session_ms / 3).max(1).to_string())
            .set("statistics.interval.ms", "5000");
        let consumer: BaseConsumer<Context> =
            client
                .create_with_context(Context { inner: self.clone() })
                .map_err(|e| Error::Kafka {
                    operation: "create the consumer",
                    reason: e.to_string(),
                })?;
        let topics: Vec<&str> = config.topics.iter().map(|r| r.subscription()).collect();
        consumer.subscribe(&topics).map_err(|e| Error::Kafka {
            operation: "subscribe",
            reason: e.to_string(),
        })?;
        Ok(consumer)
    }

    /// Lets other sources run on the pipeline; the claims of batches still in it go on.
    fn release(&self) {
        if let Some(ranges) = self.shared.ranges.lock().as_mut() {
            ranges.active = false;
        }
    }

    fn note(&self, error: &str) {
        self.state.lock().status.last_error = Some(error.to_owned());
        metrics::counter!("wit_kafka_errors_total").increment(1);
    }

    /// The tracker's stored offsets of the group, retried while the tracker is down.
    fn stored_offsets(&self) -> HashMap<Tp, i64> {
        let mut wait = Duration::from_millis(50);
        loop {
            match self.shared.tracker.source_offsets(&self.config.group) {
                Ok(offsets) => {
                    return offsets
                        .into_iter()
                        .map(|o| ((o.topic, o.partition), o.offset))
                        .collect();
                }
                Err(e) => {
                    self.note(&format!("cannot read the stored offsets: {e}"));
                    if self.stop.load(Ordering::Acquire) {
                        return HashMap::new();
                    }
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Takes partitions on; returns those whose topic cannot be routed (to pause).
    fn assign(&self, tps: &[Tp], stored: &HashMap<Tp, i64>) -> TopicPartitionList {
        let mut unroutable = TopicPartitionList::new();
        let mut state = self.state.lock();
        for tp in tps {
            let route = match route::route(&self.config.topics, &tp.0) {
                Ok(Some((rule, tenant, signal))) => Ok((tenant, signal, rule.format())),
                Ok(None) => Err(format!("no rule routes topic `{}`", tp.0)),
                Err(e) => Err(e.to_string()),
            };
            if let Err(reason) = &route {
                unroutable.add_partition(&tp.0, tp.1);
                state.status.last_error = Some(reason.clone());
            }
            let offset = stored.get(tp).copied();
            state.partitions.insert(
                tp.clone(),
                Partition {
                    route,
                    stored: offset,
                    start: offset,
                    position: offset,
                    open: Open::default(),
                    in_flight: VecDeque::new(),
                    high: None,
                    committed: None,
                },
            );
        }
        unroutable
    }

    /// Gives partitions up: waits (up to the revoke patience) for the claims of the batches
    /// sent, then lets the rest go (whoever gets the partitions reads them again).
    fn revoke(&self, consumer: &BaseConsumer<Context>, tps: &[Tp]) {
        let deadline = Instant::now() + self.config.revoke_patience;
        loop {
            self.handle_reports(consumer);
            let waiting = {
                let state = self.state.lock();
                tps.iter()
                    .any(|tp| state.partitions.get(tp).is_some_and(|p| !p.in_flight.is_empty()))
            };
            if !waiting || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut state = self.state.lock();
        for tp in tps {
            state.partitions.remove(tp);
        }
        state.pending.retain(|s| !tps.contains(&s.tp));
    }

    /// Polls until stopped.
    fn run(&self, consumer: &BaseConsumer<Context>) -> Result<()> {
        while !self.stop.load(Ordering::Acquire) {
            self.shared.check_open()?;
            self.handle_reports(consumer);
            self.send_pending(consumer);
            let timeout = self.next_deadline().map_or(Duration::from_millis(100), |d| {
                d.saturating_duration_since(Instant::now())
                    .clamp(Duration::from_millis(1), Duration::from_millis(100))
            });
            let polled = match consumer.poll(Duration::ZERO) {
                Some(polled) => Some(polled),
                None => {
                    // Nothing to read at once: large ranges go on now.
                    self.seal_caught_up()?;
                    self.send_pending(consumer);
                    consumer.poll(timeout)
                }
            };
            match polled {
                None => {}
                Some(Ok(message)) => self.take(&message)?,
                Some(Err(e)) => self.note(&format!("consume: {e}")),
            }
            self.seal_due(false)?;
        }
        Ok(())
    }

    /// On stop: sends the open ranges and waits for their claims.
    fn finish(&self, consumer: &BaseConsumer<Context>) {
        if self.seal_due(true).is_err() {
            return;
        }
        let deadline = Instant::now() + self.config.revoke_patience;
        loop {
            self.send_pending(consumer);
            self.handle_reports(consumer);
            let waiting = {
                let state = self.state.lock();
                !state.pending.is_empty() || state.partitions.values().any(|p| !p.in_flight.is_empty())
            };
            if !waiting || Instant::now() >= deadline || self.shared.check_open().is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// When the oldest open range is due.
    fn next_deadline(&self) -> Option<Instant> {
        let state = self.state.lock();
        let oldest = state.partitions.values().filter_map(|p| p.open.since).min()?;
        Some(oldest + self.config.batching.max_age())
    }

    /// Reads one message into its partition's open range.
    fn take(&self, message: &BorrowedMessage<'_>) -> Result<()> {
        let tp = (message.topic().to_owned(), message.partition());
        let offset = message.offset();
        let payload = message.payload().unwrap_or_default();
        let len = payload.len() as u64;
        let cap = self.record_payload_cap();
        let ((tenant, signal, format), full) = {
            let mut state = self.state.lock();
            let Some(part) = state.partitions.get_mut(&tp) else {
                return Ok(()); // not ours (any more)
            };
            if part.position.is_some_and(|p| offset < p) {
                return Ok(()); // read already, before a seek back
            }
            let Ok(route) = part.route.clone() else {
                return Ok(());
            };
            let open = &part.open;
            let framed = open.bytes + PART_FRAME * (open.parts.len() as u64 + 1) + len;
            (route, !open.parts.is_empty() && framed > cap)
        };
        // A batch is sealed before a message it could not hold in one WAL record.
        if full {
            self.seal(&tp)?;
        }
        // Messages are converted behind the claim, by the processor (which sends those that
        // do not convert to the dead letters); only what cannot go into a batch at all is
        // refused here.
        let refused = if payload.is_empty() {
            Some("the message is empty".to_owned())
        } else if len + PART_FRAME > cap {
            Some(format!(
                "the message of {len} bytes is larger than a WAL record holds ({cap} bytes of payload)"
            ))
        } else {
            None
        };
        let mut state = self.state.lock();
        let Some(part) = state.partitions.get_mut(&tp) else {
            return Ok(());
        };
        part.position = Some(offset + 1);
        let open = &mut part.open;
        open.since.get_or_insert_with(Instant::now);
        match refused {
            None => {
                let part =
                    Part::new(format, Compression::None, 1, Bytes::copy_from_slice(payload)).with_source_offset(offset);
                open.bytes += part.size();
                open.parts.push(part);
            }
            Some(reason) => {
                let ack = self.dead_letter(&tenant, signal, &tp, offset, payload, &reason)?;
                let open = &mut state.partitions.get_mut(&tp).expect("held").open;
                open.dead.extend(ack);
                state.status.dead_letters += 1;
                metrics::counter!("wit_kafka_dead_letters_total").increment(1);
            }
        }
        state.status.messages += 1;
        state.status.bytes += len;
        metrics::counter!("wit_kafka_messages_total").increment(1);
        metrics::counter!("wit_kafka_bytes_total").increment(len);
        Ok(())
    }

    /// The payload bytes (with their frames) a batch may hold: its envelope must fit in one
    /// WAL record.
    fn record_payload_cap(&self) -> u64 {
        (self.shared.config.wal.max_record_size() as u64).saturating_sub(ENVELOPE_HEADER)
    }

    /// Submits a poison message to its tenant's dead letters, once per offset within the
    /// idempotency window. `None` when it was taken before (a range read again).
    fn dead_letter(
        &self,
        tenant: &Tenant,
        signal: Signal,
        tp: &Tp,
        offset: i64,
        payload: &[u8],
        reason: &str,
    ) -> Result<Option<Ack>> {
        let letter = crate::ranges::dead_letter(signal, &tp.0, tp.1, offset, payload, reason);
        let key = format!("kafka:{}:{}:{}:{offset}", self.config.group, tp.0, tp.1);
        self.shared.submit_dead_letter(tenant, &key, letter)
    }

    /// Seals the ranges that are due (all of them with `all`): full, old enough, or past the
    /// buffered bound together.
    fn seal_due(&self, all: bool) -> Result<()> {
        let batching = &self.config.batching;
        let now = Instant::now();
        let due: Vec<Tp> = {
            let state = self.state.lock();
            let buffered: u64 = state.partitions.values().map(|p| p.open.bytes).sum();
            let everything = all || buffered >= batching.max_buffered_bytes();
            state
                .partitions
                .iter()
                .filter(|(_, p)| {
                    p.open.since.is_some_and(|since| {
                        everything
                            || p.open.parts.len() as u64 >= batching.max_messages()
                            || p.open.bytes >= batching.max_bytes()
                            || now.duration_since(since) >= batching.max_age()
                    })
                })
                .map(|(tp, _)| tp.clone())
                .collect()
        };
        for tp in due {
            self.seal(&tp)?;
        }
        Ok(())
    }

    /// Seals the ranges of [`CAUGHT_UP_SEAL_BYTES`] or more, once the consumer has nothing
    /// more to read at once (see [`KafkaConfig::with_batching`]).
    fn seal_caught_up(&self) -> Result<()> {
        let due: Vec<Tp> = {
            let state = self.state.lock();
            state
                .partitions
                .iter()
                .filter(|(_, p)| p.open.since.is_some() && p.open.bytes >= CAUGHT_UP_SEAL_BYTES)
                .map(|(tp, _)| tp.clone())
                .collect()
        };
        for tp in due {
            self.seal(&tp)?;
        }
        Ok(())
    }

    /// Seals a partition's open range into a batch, once its dead letters are durable.
    fn seal(&self, tp: &Tp) -> Result<()> {
        let (open, meta) = {
            let mut state = self.state.lock();
            let Some(part) = state.partitions.get_mut(tp) else {
                return Ok(());
            };
            let Ok((tenant, signal, _)) = &part.route else {
                return Ok(());
            };
            let Some(position) = part.position else {
                return Ok(());
            };
            let id = BatchId::new();
            let meta = BatchMeta {
                id,
                tenant: tenant.clone(),
                signal: *signal,
                source: SourceKind::Kafka,
                message_count: 0,
                byte_size: 0,
                first_offset: part.start,
                last_offset: Some(position - 1),
                topics: vec![tp.0.clone()],
                partition: Some(tp.1),
                created_at: id.created_at(),
            };
            part.start = Some(position);
            part.in_flight.push_back(id);
            (std::mem::take(&mut part.open), meta)
        };
        // A poison message's dead letter is durable before the range that covers it can be
        // claimed: a crash in between cannot lose it.
        if !open.dead.is_empty() {
            self.shared.flush_batcher()?;
            for ack in open.dead {
                ack.wait()?;
            }
        }
        let envelope = Envelope::new(meta, open.parts);
        self.state.lock().pending.push_back(Sealed {
            tp: tp.clone(),
            envelope,
        });
        Ok(())
    }

    /// Hands sealed ranges to the pipeline while it has room; pauses reading while it has
    /// none.
    fn send_pending(&self, consumer: &BaseConsumer<Context>) {
        let mut state = self.state.lock();
        while let Some(sealed) = state.pending.front() {
            let meta = sealed.envelope.meta();
            if !self.shared.has_room_for_sealed(&meta.tenant, meta.byte_size) {
                break;
            }
            let sealed = state.pending.pop_front().expect("front");
            let messages = sealed.envelope.meta().message_count;
            match self.shared.submit_sealed(sealed.envelope, None) {
                Ok(ack) => state.writing.push_back((ack, messages)),
                Err(e) => {
                    state.status.last_error = Some(format!("cannot send a batch to the pipeline: {e}"));
                    break;
                }
            }
        }
        state.drain_durable();
        let full = !state.pending.is_empty();
        if full != state.paused {
            let assignment = consumer.assignment().unwrap_or_default();
            let result = if full {
                consumer.pause(&assignment)
            } else {
                consumer.resume(&assignment)
            };
            match result {
                Ok(()) => state.paused = full,
                Err(e) => state.status.last_error = Some(format!("cannot pause or resume: {e}")),
            }
        }
    }

    /// Acts on what the processor did with the batches sent: commits claimed ranges to Kafka,
    /// and after a dropped one starts the partition again at the tracker's offset.
    fn handle_reports(&self, consumer: &BaseConsumer<Context>) {
        let reports: Vec<RangeReport> = self.reports.lock().try_iter().collect();
        if reports.is_empty() {
            return;
        }
        let mut commits = TopicPartitionList::new();
        let mut seeks = Vec::new();
        {
            let mut state = self.state.lock();
            let State {
                partitions,
                pending,
                status,
                ..
            } = &mut *state;
            for report in reports {
                let tp = (report.topic, report.partition);
                match report.outcome {
                    RangeOutcome::Claimed | RangeOutcome::AlreadyRegistered { .. } => {
                        status.batches_claimed += 1;
                        metrics::counter!("wit_kafka_batches_claimed_total").increment(1);
                    }
                    RangeOutcome::Conflict { .. } => status.ranges_dropped += 1,
                }
                let Some(part) = partitions.get_mut(&tp) else {
                    continue;
                };
                let ours = part.in_flight.iter().position(|id| *id == report.batch);
                if let Some(at) = ours {
                    part.in_flight.remove(at);
                }
                match report.outcome {
                    RangeOutcome::Claimed | RangeOutcome::AlreadyRegistered { .. } => {
                        if part.stored.is_none_or(|s| s < report.to) {
                            part.stored = Some(report.to);
                            let _ = commits.add_partition_offset(&tp.0, tp.1, Offset::Offset(report.to));
                        }
                    }
                    RangeOutcome::Conflict { stored } if ours.is_some() => {
                        // Every later range of the partition conflicts too: start again where
                        // the tracker is.
                        part.stored = stored;
                        part.start = stored;
                        part.position = stored;
                        part.open = Open::default();
                        part.in_flight.clear();
                        pending.retain(|s| s.tp != tp);
                        seeks.push((tp, stored));
                    }
                    RangeOutcome::Conflict { .. } => {}
                }
            }
        }
        if commits.count() > 0
            && let Err(e) = consumer.commit(&commits, CommitMode::Async)
        {
            self.note(&format!("commit: {e}"));
        }
        for ((topic, partition), stored) in seeks {
            let offset = stored.map_or(Offset::Beginning, Offset::Offset);
            if let Err(e) = consumer.seek(&topic, partition, offset, Duration::from_secs(5)) {
                self.note(&format!("cannot seek {topic}/{partition} to {offset:?}: {e}"));
            }
        }
    }
}
