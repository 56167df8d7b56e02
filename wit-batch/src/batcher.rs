//! The batcher: gathers payloads into batches by tenant, signal and source.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::{BatchId, BatchMeta, Envelope, Error, Part, Result, Signal, SourceKind, Tenant};

#[cfg(feature = "tokio")]
mod async_batcher;
#[cfg(feature = "tokio")]
pub use async_batcher::AsyncBatcher;

/// Which batch a part goes into: parts with equal keys are batched together.
///
/// ```
/// use wit_batch::{BatchKey, Signal, SourceKind, Tenant};
///
/// let key = BatchKey::new(Tenant::try_new("acme")?, Signal::Logs, SourceKind::Kafka).with_topic("logs.acme");
/// assert_eq!(key.topic.as_deref(), Some("logs.acme"));
/// # Ok::<_, wit_batch::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BatchKey {
    /// Whose data it is.
    pub tenant: Tenant,
    /// What kind of telemetry it is.
    pub signal: Signal,
    /// Where it came from.
    pub source: SourceKind,
    /// The source topic (Kafka), if any: it becomes the batch's [`BatchMeta::topics`], and
    /// parts of different topics are not batched together.
    pub topic: Option<String>,
    /// The source partition (Kafka), if any: it becomes the batch's
    /// [`BatchMeta::partition`], and parts of different partitions are not batched together.
    pub partition: Option<i32>,
}

impl BatchKey {
    /// The key of `tenant`'s `signal` from `source`, without a topic.
    pub fn new(tenant: Tenant, signal: Signal, source: SourceKind) -> BatchKey {
        BatchKey {
            tenant,
            signal,
            source,
            topic: None,
            partition: None,
        }
    }

    /// The key with this source topic.
    pub fn with_topic(mut self, topic: impl Into<String>) -> BatchKey {
        self.topic = Some(topic.into());
        self
    }

    /// The key with this source partition.
    pub fn with_partition(mut self, partition: i32) -> BatchKey {
        self.partition = Some(partition);
        self
    }
}

/// Limits of a [`Batcher`]: when a batch is emitted, and how much may be held.
///
/// A batch is emitted once it holds [`max_messages`](Self::with_max_messages) messages or
/// [`max_bytes`](Self::with_max_bytes) bytes of parts ([`Part::size`](crate::Part::size): payloads, and idempotency keys), or once it is
/// [`max_age`](Self::with_max_age) old. All open batches together hold at most
/// [`max_buffered_bytes`](Self::with_max_buffered_bytes).
///
/// ```
/// use std::time::Duration;
/// use wit_batch::{Batcher, BatcherConfig};
///
/// let config = BatcherConfig::default()
///     .with_max_messages(1_000)
///     .with_max_bytes(4 << 20)
///     .with_max_age(Duration::from_millis(200))
///     .with_max_buffered_bytes(32 << 20);
/// let batcher = Batcher::try_new(config)?;
/// assert_eq!(batcher.config().max_age(), Duration::from_millis(200));
///
/// let too_small = BatcherConfig::default().with_max_buffered_bytes(1 << 20); // below max_bytes
/// assert!(Batcher::try_new(too_small).is_err());
/// # Ok::<_, wit_batch::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatcherConfig {
    max_messages: u64,
    max_bytes: u64,
    max_age: Duration,
    max_buffered_bytes: u64,
}

impl Default for BatcherConfig {
    /// 10,000 messages, 8 MiB, 1 s, 64 MiB buffered.
    fn default() -> Self {
        BatcherConfig {
            max_messages: 10_000,
            max_bytes: 8 << 20,
            max_age: Duration::from_secs(1),
            max_buffered_bytes: 64 << 20,
        }
    }
}

impl BatcherConfig {
    /// Emit a batch once it holds this many messages (default 10,000; at least 1).
    pub fn with_max_messages(mut self, n: u64) -> Self {
        self.max_messages = n;
        self
    }

    /// Emit a batch once it holds this many bytes of parts ([`Part::size`](crate::Part::size)) (default 8 MiB; at least 1).
    pub fn with_max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// Emit a batch once its first part is this old (default 1 s; more than zero).
    pub fn with_max_age(mut self, age: Duration) -> Self {
        self.max_age = age;
        self
    }

    /// Hold at most this many payload bytes in open batches, all keys together (default
    /// 64 MiB; at least `max_bytes`). Beyond it, [`Batcher::push`] returns [`Push::Full`].
    pub fn with_max_buffered_bytes(mut self, bytes: u64) -> Self {
        self.max_buffered_bytes = bytes;
        self
    }

    /// Messages per batch.
    pub fn max_messages(&self) -> u64 {
        self.max_messages
    }

    /// Payload bytes per batch.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Age of a batch.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// Payload bytes in open batches.
    pub fn max_buffered_bytes(&self) -> u64 {
        self.max_buffered_bytes
    }

    fn validate(&self) -> Result<()> {
        let reason = if self.max_messages == 0 {
            "max_messages must be at least 1".to_owned()
        } else if self.max_bytes == 0 {
            "max_bytes must be at least 1".to_owned()
        } else if self.max_age.is_zero() {
            "max_age must be more than zero".to_owned()
        } else if self.max_buffered_bytes < self.max_bytes {
            format!(
                "max_buffered_bytes ({}) must be at least max_bytes ({})",
                self.max_buffered_bytes, self.max_bytes
            )
        } else {
            return Ok(());
        };
        Err(Error::InvalidConfig { reason })
    }
}

/// What [`Batcher::push`] did with a part.
#[must_use = "a `Push::Full` hands the part back, and `ready` batches must be passed on"]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Push {
    /// The part was taken. `ready` holds the batches that this push completed (oldest first),
    /// often none.
    Accepted {
        /// Batches that reached a limit, to hand to the WAL.
        ready: Vec<Envelope>,
    },
    /// Taking the part would hold more than `max_buffered_bytes`: here it is back, untouched.
    /// Push it again once batches were emitted ([`Batcher::poll_expired`] at the
    /// [`next_deadline`](Batcher::next_deadline), or [`Batcher::flush_all`]).
    Full(Part),
}

/// Gathers parts into batches, one open batch per [`BatchKey`], and emits each as an
/// [`Envelope`] when it reaches a limit of its [`BatcherConfig`].
///
/// This is the synchronous core: the caller drives time by passing `now` to
/// [`push`](Self::push) and calling [`poll_expired`](Self::poll_expired) (by the
/// [`next_deadline`](Self::next_deadline)), so tests can use a made-up clock.
/// `AsyncBatcher` (feature `tokio`) wraps it with a task that keeps time.
///
/// # Limits
///
/// - A part that would take its batch over `max_messages` or `max_bytes` first emits the
///   batch, then starts the next one, so no batch is over a limit, except a batch of one part
///   that is over a limit by itself: such a part is **accepted and emitted alone** (payloads
///   are not split, and refusing it would lose it).
/// - A batch is emitted once its first part is `max_age` old: by `poll_expired`, or by a later
///   push to its key.
/// - Every emitted batch gets a new [`BatchId`] (so ids increase in emission order), and its
///   `created_at` is its id's time. Its `first_offset` and `last_offset` are the least and
///   greatest source offsets of its parts; its topics are its key's.
///
/// # Backpressure
///
/// The payload bytes held in open batches (all keys together) never exceed
/// `max_buffered_bytes`. A push that would take them over returns [`Push::Full`] with the part.
/// Emitted batches no longer count: once a batch leaves the batcher (returned by `push`,
/// `poll_expired` or `flush_all`), holding it is the caller's business, so there is nothing
/// to release by hand. A push that emits its key's batch and holds nothing more is never
/// refused, and since `max_buffered_bytes >= max_bytes`, a push is only refused while other
/// keys hold bytes, which `poll_expired` releases within `max_age`.
///
/// ```
/// use std::time::{Duration, Instant};
/// use wit_batch::{BatchKey, Batcher, BatcherConfig, Compression, Part, PayloadFormat, Push, Signal, SourceKind, Tenant};
///
/// let config = BatcherConfig::default().with_max_messages(2).with_max_age(Duration::from_secs(1));
/// let mut batcher = Batcher::try_new(config)?;
/// let key = BatchKey::new(Tenant::try_new("acme")?, Signal::Traces, SourceKind::Grpc);
/// let part = || Part::new(PayloadFormat::OtlpProtobuf, Compression::None, 1, &b"..."[..]);
/// let t0 = Instant::now();
///
/// // The second message completes a batch.
/// assert_eq!(batcher.push(&key, part(), t0), Push::Accepted { ready: vec![] });
/// let Push::Accepted { ready } = batcher.push(&key, part(), t0) else { panic!("full") };
/// assert_eq!(ready.len(), 1);
/// assert_eq!(ready[0].meta().message_count, 2);
///
/// // A lone message leaves once it is a second old.
/// let _ = batcher.push(&key, part(), t0);
/// assert_eq!(batcher.next_deadline(), Some(t0 + Duration::from_secs(1)));
/// assert!(batcher.poll_expired(t0 + Duration::from_millis(999)).is_empty());
/// assert_eq!(batcher.poll_expired(t0 + Duration::from_secs(1)).len(), 1);
/// assert_eq!(batcher.buffered_bytes(), 0);
/// # Ok::<_, wit_batch::Error>(())
/// ```
#[derive(Debug)]
pub struct Batcher {
    config: BatcherConfig,
    open: HashMap<BatchKey, OpenBatch>,
    /// Payload bytes in `open`.
    buffered_bytes: u64,
    /// Orders open batches by when they were opened.
    next_seq: u64,
}

#[derive(Debug)]
struct OpenBatch {
    seq: u64,
    opened_at: Instant,
    parts: Vec<Part>,
    messages: u64,
    bytes: u64,
}

impl OpenBatch {
    fn is_expired(&self, now: Instant, max_age: Duration) -> bool {
        now.saturating_duration_since(self.opened_at) >= max_age
    }
}

impl Batcher {
    /// A batcher with no open batches.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] when a limit is zero or `max_buffered_bytes` is below
    /// `max_bytes`.
    pub fn try_new(config: BatcherConfig) -> Result<Batcher> {
        config.validate()?;
        Ok(Batcher {
            config,
            open: HashMap::new(),
            buffered_bytes: 0,
            next_seq: 0,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BatcherConfig {
        &self.config
    }

    /// Adds `part`, received at `now`, to `key`'s open batch, and returns the batches this
    /// completes; or hands the part back if holding it would exceed `max_buffered_bytes`.
    ///
    /// In order, the key's open batch is emitted first if it is `max_age` old at `now`, or if
    /// the part would take it over `max_messages` or `max_bytes`; the part is added (to a new
    /// batch if need be); and that batch is emitted if it has reached a limit. See the type's
    /// docs for the rules. A [`Push::Full`] changes nothing.
    pub fn push(&mut self, key: &BatchKey, part: Part, now: Instant) -> Push {
        let (max_messages, max_bytes) = (self.config.max_messages, self.config.max_bytes);
        let (part_messages, part_bytes) = (u64::from(part.message_count), part.size());
        let reaches_limit = |messages: u64, bytes: u64| messages >= max_messages || bytes >= max_bytes;

        // What the key holds now, and whether that must go first.
        let (held, emit_held) = match self.open.get(key) {
            Some(b) => (
                b.bytes,
                b.is_expired(now, self.config.max_age)
                    || b.messages.saturating_add(part_messages) > max_messages
                    || b.bytes.saturating_add(part_bytes) > max_bytes,
            ),
            None => (0, false),
        };
        // What the key holds afterwards.
        let (messages, bytes) = match self.open.get(key) {
            Some(b) if !emit_held => (
                b.messages.saturating_add(part_messages),
                b.bytes.saturating_add(part_bytes),
            ),
            _ => (part_messages, part_bytes),
        };
        let held_after = if reaches_limit(messages, bytes) { 0 } else { bytes };
        if self.buffered_bytes - held + held_after > self.config.max_buffered_bytes {
            return Push::Full(part);
        }

        let mut ready = Vec::new();
        if emit_held {
            ready.extend(self.take(key));
        }
        let batch = match self.open.get_mut(key) {
            Some(batch) => batch,
            None => {
                let seq = self.next_seq;
                self.next_seq += 1;
                let batch = OpenBatch {
                    seq,
                    opened_at: now,
                    parts: Vec::new(),
                    messages: 0,
                    bytes: 0,
                };
                self.open.entry(key.clone()).or_insert(batch)
            }
        };
        batch.parts.push(part);
        batch.messages = batch.messages.saturating_add(part_messages);
        batch.bytes += part_bytes;
        self.buffered_bytes += part_bytes;
        if reaches_limit(batch.messages, batch.bytes) {
            ready.extend(self.take(key));
        }
        Push::Accepted { ready }
    }

    /// Emits every batch that is `max_age` old at `now`, oldest first.
    pub fn poll_expired(&mut self, now: Instant) -> Vec<Envelope> {
        let max_age = self.config.max_age;
        let expired: Vec<_> = self.open.extract_if(|_, b| b.is_expired(now, max_age)).collect();
        self.seal_all(expired)
    }

    /// Emits every open batch, oldest first, whatever its size and age.
    pub fn flush_all(&mut self) -> Vec<Envelope> {
        let all: Vec<_> = self.open.drain().collect();
        self.seal_all(all)
    }

    /// When the oldest open batch will be `max_age` old: call
    /// [`poll_expired`](Self::poll_expired) then. `None` when no batch is open (or `max_age`
    /// is too long to be reached).
    pub fn next_deadline(&self) -> Option<Instant> {
        // An age too large for an `Instant` is never reached.
        self.open
            .values()
            .map(|b| b.opened_at)
            .min()?
            .checked_add(self.config.max_age)
    }

    /// Payload bytes held in open batches.
    pub fn buffered_bytes(&self) -> u64 {
        self.buffered_bytes
    }

    /// How many batches are open (one at most per key).
    pub fn open_batches(&self) -> usize {
        self.open.len()
    }

    /// Removes `key`'s open batch and seals it.
    fn take(&mut self, key: &BatchKey) -> Option<Envelope> {
        let (key, batch) = self.open.remove_entry(key)?;
        self.buffered_bytes -= batch.bytes;
        Some(seal(key, batch))
    }

    fn seal_all(&mut self, mut batches: Vec<(BatchKey, OpenBatch)>) -> Vec<Envelope> {
        batches.sort_unstable_by_key(|(_, b)| b.seq);
        batches
            .into_iter()
            .map(|(key, batch)| {
                self.buffered_bytes -= batch.bytes;
                seal(key, batch)
            })
            .collect()
    }
}

/// The envelope of an emitted batch, with a new id.
fn seal(key: BatchKey, batch: OpenBatch) -> Envelope {
    let id = BatchId::new();
    let offsets = batch.parts.iter().filter_map(|p| p.source_offset);
    let meta = BatchMeta {
        id,
        tenant: key.tenant,
        signal: key.signal,
        source: key.source,
        message_count: 0,
        byte_size: 0,
        first_offset: offsets.clone().min(),
        last_offset: offsets.max(),
        topics: key.topic.into_iter().collect(),
        partition: key.partition,
        created_at: id.created_at(),
    };
    let envelope = Envelope::new(meta, batch.parts);
    debug_assert_eq!(
        (
            envelope.meta().message_count,
            envelope.parts().iter().map(Part::size).sum::<u64>()
        ),
        (batch.messages, batch.bytes)
    );
    envelope
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Compression, PayloadFormat};

    fn key(tenant: &str) -> BatchKey {
        BatchKey::new(Tenant::try_new(tenant).unwrap(), Signal::Logs, SourceKind::Http)
    }

    fn part(messages: u32, bytes: usize, offset: i64) -> Part {
        Part::new(PayloadFormat::OtlpJson, Compression::None, messages, vec![b'x'; bytes]).with_source_offset(offset)
    }

    fn accepted(push: Push) -> Vec<Envelope> {
        match push {
            Push::Accepted { ready } => ready,
            Push::Full(part) => panic!("refused {part:?}"),
        }
    }

    fn offsets(env: &Envelope) -> Vec<i64> {
        env.parts().iter().map(|p| p.source_offset.unwrap()).collect()
    }

    #[test]
    fn config_is_validated() {
        let ok = BatcherConfig::default();
        assert_eq!(
            (ok.max_messages(), ok.max_bytes(), ok.max_age(), ok.max_buffered_bytes()),
            (10_000, 8 << 20, Duration::from_secs(1), 64 << 20)
        );
        for (config, expected) in [
            (ok.clone().with_max_messages(0), "max_messages must be at least 1"),
            (ok.clone().with_max_bytes(0), "max_bytes must be at least 1"),
            (
                ok.clone().with_max_age(Duration::ZERO),
                "max_age must be more than zero",
            ),
            (
                ok.clone().with_max_buffered_bytes(100),
                "max_buffered_bytes (100) must be at least max_bytes (8388608)",
            ),
        ] {
            match Batcher::try_new(config) {
                Err(Error::InvalidConfig { reason }) => assert_eq!(reason, expected),
                other => panic!("{other:?}"),
            }
        }
        assert!(Batcher::try_new(ok.with_max_bytes(100).with_max_buffered_bytes(100)).is_ok());
    }

    #[test]
    fn a_push_that_would_overflow_a_batch_emits_it_first() {
        let config = BatcherConfig::default().with_max_messages(10).with_max_bytes(100);
        let mut b = Batcher::try_new(config).unwrap();
        let t = Instant::now();
        assert!(accepted(b.push(&key("a"), part(6, 10, 1), t)).is_empty());
        let ready = accepted(b.push(&key("a"), part(6, 10, 2), t));
        assert_eq!(ready.len(), 1);
        assert_eq!(offsets(&ready[0]), [1]);
        assert_eq!(b.buffered_bytes(), 10);

        assert!(accepted(b.push(&key("a"), part(1, 80, 3), t)).is_empty());
        let ready = accepted(b.push(&key("a"), part(1, 11, 4), t));
        assert_eq!(ready.len(), 1);
        assert_eq!(offsets(&ready[0]), [2, 3]);
        assert_eq!(b.buffered_bytes(), 11);
    }

    #[test]
    fn an_oversized_part_is_a_batch_of_its_own() {
        let config = BatcherConfig::default().with_max_messages(10).with_max_bytes(100);
        let mut b = Batcher::try_new(config).unwrap();
        let t = Instant::now();
        assert!(accepted(b.push(&key("a"), part(1, 5, 1), t)).is_empty());
        let ready = accepted(b.push(&key("a"), part(1, 500, 2), t));
        assert_eq!(ready.iter().map(offsets).collect::<Vec<_>>(), [vec![1], vec![2]]);
        let ready = accepted(b.push(&key("a"), part(50, 1, 3), t));
        assert_eq!(ready.iter().map(offsets).collect::<Vec<_>>(), [vec![3]]);
        assert_eq!((b.open_batches(), b.buffered_bytes()), (0, 0));
    }

    #[test]
    fn a_late_push_emits_the_expired_batch_of_its_key_first() {
        let mut b = Batcher::try_new(BatcherConfig::default()).unwrap();
        let t = Instant::now();
        let _ = b.push(&key("a"), part(1, 1, 1), t);
        let ready = accepted(b.push(&key("a"), part(1, 1, 2), t + Duration::from_secs(2)));
        assert_eq!(ready.iter().map(offsets).collect::<Vec<_>>(), [vec![1]]);
        assert_eq!(b.next_deadline(), Some(t + Duration::from_secs(3)));
    }

    #[test]
    fn meta_is_filled_from_key_and_parts() {
        let mut b = Batcher::try_new(BatcherConfig::default()).unwrap();
        let k = key("acme").with_topic("t1");
        let t = Instant::now();
        for (offset, messages) in [(7, 2), (3, 1), (9, 4)] {
            let _ = b.push(&k, part(messages, 10, offset), t);
        }
        let _ = b.push(
            &k,
            Part::new(PayloadFormat::Ndjson, Compression::Gzip, 1, vec![0; 5]),
            t,
        );
        let env = b.flush_all().pop().unwrap();
        let meta = env.meta();
        assert_eq!(meta.tenant.as_str(), "acme");
        assert_eq!((meta.signal, meta.source), (Signal::Logs, SourceKind::Http));
        assert_eq!((meta.message_count, meta.byte_size), (8, 35));
        assert_eq!((meta.first_offset, meta.last_offset), (Some(3), Some(9)));
        assert_eq!(meta.topics, ["t1"]);
        assert_eq!(meta.created_at, meta.id.created_at());
        assert_eq!(env.parts().len(), 4);
    }

    #[test]
    fn partitions_of_a_topic_are_batched_apart() {
        let mut b = Batcher::try_new(BatcherConfig::default()).unwrap();
        let t = Instant::now();
        let p0 = key("acme").with_topic("t1").with_partition(0);
        let p1 = key("acme").with_topic("t1").with_partition(1);
        let _ = b.push(&p0, part(1, 1, 5), t);
        let _ = b.push(&p1, part(1, 1, 5), t);
        let _ = b.push(&p0, part(1, 1, 6), t);
        let mut batches = b.flush_all();
        batches.sort_by_key(|e| e.meta().partition);
        let seen: Vec<_> = batches.iter().map(|e| (e.meta().partition, offsets(e))).collect();
        assert_eq!(seen, [(Some(0), vec![5, 6]), (Some(1), vec![5])]);
        assert_eq!(batches[0].version(), 3);
    }

    #[test]
    fn full_changes_nothing_and_hands_the_part_back() {
        let config = BatcherConfig::default()
            .with_max_bytes(100)
            .with_max_buffered_bytes(150);
        let mut b = Batcher::try_new(config).unwrap();
        let t = Instant::now();
        let _ = b.push(&key("a"), part(1, 90, 1), t);
        let p = part(1, 70, 2);
        assert_eq!(b.push(&key("b"), p.clone(), t), Push::Full(p));
        assert_eq!((b.open_batches(), b.buffered_bytes()), (1, 90));
        // The same part for the full key emits that key's batch, so it fits.
        let ready = accepted(b.push(&key("a"), part(1, 70, 3), t));
        assert_eq!(ready.len(), 1);
        assert_eq!(b.buffered_bytes(), 70);
    }

    #[test]
    fn batches_are_emitted_oldest_first() {
        let mut b = Batcher::try_new(BatcherConfig::default()).unwrap();
        let t = Instant::now();
        let names = ["e", "b", "d", "a", "c"];
        for (i, name) in names.iter().enumerate() {
            let _ = b.push(&key(name), part(1, 1, i as i64), t + Duration::from_millis(i as u64));
        }
        let ready = b.poll_expired(t + Duration::from_millis(1_002));
        let got: Vec<_> = ready.iter().map(|e| e.meta().tenant.to_string()).collect();
        assert_eq!(got, ["e", "b", "d"]);
        assert!(ready.windows(2).all(|w| w[0].meta().id < w[1].meta().id));
        let got: Vec<_> = b.flush_all().iter().map(|e| e.meta().tenant.to_string()).collect();
        assert_eq!(got, ["a", "c"]);
        assert_eq!(b.next_deadline(), None);
    }
}
