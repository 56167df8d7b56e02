//! A Kafka source (feature `kafka`): a consumer group member that stores every message of
//! its topics exactly once, across crashes and rebalances.
//!
//! # The sequence
//!
//! 1. Messages of one partition are gathered into a batch by messages, bytes and age
//!    ([`KafkaConfig::with_batching`]), or until the consumer has caught up once the batch
//!    holds a megabyte; the batch covers the partition's offsets from where the last one
//!    ended to the last message read, poison messages included.
//! 2. The batch is written to the WAL (durable); its envelope records the topic, the partition
//!    and the offset range.
//! 3. The pipeline's processor claims it in the tracker in one transaction: the batch is
//!    registered and moved to `SOURCE_COMMITTED`, and the partition's stored offset moves from
//!    the range's start to its end by compare-and-set ([`wit_tracker::Tracker::claim_ranges`]).
//!    A batch whose range is claimed already (by another consumer of the group that read the
//!    partition before a rebalance, say) is dropped and never stored.
//! 4. Only then is it converted and stored, and the offset committed to Kafka (for lag tools,
//!    and for a consumer without the tracker).
//!
//! On assignment each partition starts at the tracker's stored offset (or at its beginning
//! when it has none), never at `auto.offset.reset`. On revocation the source waits (up to
//! [`KafkaConfig::with_revoke_patience`]) for the claims of the batches it sent and lets the
//! rest go: whoever gets the partition reads them again. After a crash the pipeline's recovery
//! stores the claimed batches found in the WAL and drops the unclaimed ones before the
//! consumer starts. Since every offset of a partition is claimed by exactly one batch, and a
//! batch is claimed only once durable in the WAL, an offset is committed only when every
//! earlier one is durable.
//!
//! A message that does not decode (or is empty) is not skipped silently: it becomes a row of
//! its tenant's `dead_letters` table, with its topic, partition, offset and the reason, and its
//! offset is covered by the next batch's range like any other.
//!
//! # Metrics
//!
//! `wit_kafka_messages_total`, `wit_kafka_bytes_total`, `wit_kafka_dead_letters_total`,
//! `wit_kafka_rebalances_total`, `wit_kafka_batches_claimed_total`,
//! `wit_pipeline_ranges_dropped_total`, `wit_kafka_errors_total`, and the gauge
//! `wit_kafka_consumer_lag` by `topic`, `partition` and `by` (`tracker`: the broker's high
//! watermark less the tracker's stored offset; `broker`: less the group's committed offset).

mod route;
mod source;

use std::time::Duration;

use wit_batch::BatcherConfig;

pub use route::TopicRule;
pub use source::KafkaSource;

use crate::{Error, Result};

/// What a [`KafkaSource`] reads and how.
///
/// ```
/// use std::time::Duration;
/// use wit_batch::{BatcherConfig, PayloadFormat};
/// use wit_pipeline::kafka::{KafkaConfig, TopicRule};
///
/// let config = KafkaConfig::new("127.0.0.1:9092", "wit-ingest")
///     .with_topic(TopicRule::new("^v6\\.qtw\\..*", PayloadFormat::OtlpProtobuf).with_template("{prefix}.{app}.{signal}.{tenant}.{n}")?)
///     .with_batching(BatcherConfig::default().with_max_messages(500).with_max_age(Duration::from_millis(200)))
///     .with_session_timeout(Duration::from_secs(6));
/// assert_eq!(config.group(), "wit-ingest");
/// # Ok::<_, wit_pipeline::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    brokers: String,
    group: String,
    topics: Vec<TopicRule>,
    batching: BatcherConfig,
    session_timeout: Duration,
    revoke_patience: Duration,
    options: Vec<(String, String)>,
}

impl KafkaConfig {
    /// Reads as member of consumer group `group` from `brokers` (`host:port`, comma-separated).
    /// The group is also the source's name in the tracker's stored offsets.
    pub fn new(brokers: impl Into<String>, group: impl Into<String>) -> Self {
        KafkaConfig {
            brokers: brokers.into(),
            group: group.into(),
            topics: Vec::new(),
            batching: BatcherConfig::default(),
            session_timeout: Duration::from_secs(10),
            revoke_patience: Duration::from_secs(5),
            options: Vec::new(),
        }
    }

    /// Subscribes to the topics of `rule` too. A topic goes by the first rule that covers it.
    pub fn with_topic(mut self, rule: TopicRule) -> Self {
        self.topics.push(rule);
        self
    }

    /// When a partition's batch is sent on: at `max_messages` messages, `max_bytes` bytes or
    /// `max_age` after its first message (seed 000's `batch_size`, `max_size_bytes`,
    /// `batch_timeout_ms`); all open batches together hold at most `max_buffered_bytes`.
    /// Default: [`BatcherConfig::default`].
    ///
    /// A batch of 1 MiB or more is also sent on as soon as the consumer has nothing more to
    /// read at once (it has caught up with the broker, or the next fetch is not in yet):
    /// waiting for its age would then add latency, not size, and such a batch is worth a WAL
    /// write and a tracker transaction of its own. Smaller batches wait for their age, so a
    /// trickle of small messages still makes few batches.
    pub fn with_batching(mut self, batching: BatcherConfig) -> Self {
        self.batching = batching;
        self
    }

    /// The group session timeout (default 10 s): how soon the group notices a member died and
    /// gives its partitions to another.
    pub fn with_session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// How long a revocation waits for the claims of the batches sent before it lets the
    /// partitions go (default 5 s).
    pub fn with_revoke_patience(mut self, patience: Duration) -> Self {
        self.revoke_patience = patience;
        self
    }

    /// Sets a librdkafka option (`fetch.max.bytes`, `security.protocol`, ...). The source's own
    /// settings (group, offsets, commits, rebalancing) cannot be changed this way.
    pub fn with_option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.push((key.into(), value.into()));
        self
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The topic rules, in order.
    pub fn topics(&self) -> &[TopicRule] {
        &self.topics
    }

    /// Checks the configuration as [`Pipeline::start_kafka`](crate::Pipeline::start_kafka)
    /// does, without starting anything.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming what cannot work: no brokers, group or topics, a
    /// batching the batcher refuses, an option the source sets itself, a rule without a
    /// tenant or signal, a pattern that is not a regular expression.
    pub fn check(&self) -> Result<()> {
        self.clone().validate().map(drop)
    }

    /// Checks the configuration and compiles its topic rules.
    fn validate(mut self) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidConfig {
            reason: format!("Kafka source: {reason}"),
        };
        if self.brokers.trim().is_empty() {
            return Err(invalid("no brokers"));
        }
        if self.group.is_empty() {
            return Err(invalid("no consumer group"));
        }
        if self.topics.is_empty() {
            return Err(invalid("no topics"));
        }
        wit_batch::Batcher::try_new(self.batching.clone()).map_err(|e| invalid(&e.to_string()))?;
        for (key, _) in &self.options {
            if RESERVED.contains(&key.as_str()) {
                return Err(invalid(&format!("option `{key}` is the source's own")));
            }
        }
        self.topics = self
            .topics
            .into_iter()
            .map(TopicRule::validate)
            .collect::<Result<Vec<_>>>()?;
        Ok(self)
    }
}

/// librdkafka options the source sets itself.
const RESERVED: &[&str] = &[
    "group.id",
    "bootstrap.servers",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "partition.assignment.strategy",
    "group.protocol",
];

/// A snapshot of a [`KafkaSource`]'s progress.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KafkaStatus {
    /// Messages read since the source started (poison ones included).
    pub messages: u64,
    /// Payload bytes read.
    pub bytes: u64,
    /// Messages (poison ones not counted) in batches durable in the WAL, as last seen.
    pub durable: u64,
    /// Messages that did not decode, sent to their tenant's dead letters.
    pub dead_letters: u64,
    /// Batches whose range was claimed in the tracker (and committed to Kafka).
    pub batches_claimed: u64,
    /// Batches dropped because their range was claimed already.
    pub ranges_dropped: u64,
    /// Rebalances (assignments and revocations) the consumer went through.
    pub rebalances: u64,
    /// The partitions assigned now.
    pub partitions: Vec<PartitionStatus>,
    /// The last error the source met and lived through (the broker unreachable, say).
    pub last_error: Option<String>,
}

/// One assigned partition.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionStatus {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The tracker's stored offset, as last claimed or read at assignment.
    pub stored: Option<i64>,
    /// The offset after the last message read.
    pub position: Option<i64>,
    /// The broker's high watermark, as last seen.
    pub high_watermark: Option<i64>,
    /// Why the partition is not read, if it is not (a topic no rule can route).
    pub paused: Option<String>,
}
