//! The pipeline's settings.

use std::path::{Path, PathBuf};
use std::time::Duration;

use wit_batch::BatcherConfig;
use wit_batch::events::EventOptions;
use wit_store::{NodeName, SinkConfig};

use crate::{Error, Result};

/// How a [`Pipeline`](crate::Pipeline) runs.
///
/// Its directory holds the write-ahead log (`wal/`) and the dead-letter envelopes of failed
/// batches (`failed/`); the Parquet files go to the store's destination, and the sink stages
/// them where [`SinkConfig`] says (by default under the destination).
///
/// ```
/// use std::time::Duration;
/// use wit_pipeline::PipelineConfig;
/// use wit_store::NodeName;
///
/// let config = PipelineConfig::new("/var/lib/wit", NodeName::try_new("node-a")?)
///     .with_max_unstored_bytes(256 << 20)
///     .with_janitor_interval(Duration::from_secs(5));
/// assert_eq!(config.wal_dir(), std::path::Path::new("/var/lib/wit/wal"));
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub(crate) dir: PathBuf,
    pub(crate) node: NodeName,
    pub(crate) wal: wit_wal::Config,
    pub(crate) batcher: BatcherConfig,
    pub(crate) sink: SinkConfig,
    pub(crate) events: EventOptions,
    pub(crate) max_unstored_bytes: u64,
    pub(crate) max_unstored_bytes_per_tenant: u64,
    pub(crate) max_unindexed_bytes: u64,
    pub(crate) janitor_interval: Duration,
    pub(crate) retry_backoff: Duration,
    pub(crate) read_batch: usize,
    pub(crate) processing_interval: Duration,
    pub(crate) retention: Option<Duration>,
    pub(crate) compaction_target_bytes: Option<u64>,
    pub(crate) grace: Duration,
    pub(crate) indexing: bool,
    pub(crate) hot: Option<wit_query::HotTier>,
    pub(crate) idempotency_window: Duration,
}

impl PipelineConfig {
    /// A pipeline in `dir` on node `node` (the name its WAL positions carry in the tracker,
    /// and its store's file paths): default WAL, batcher and sink settings, 1 GiB of
    /// unstored data at most, a janitor pass every second.
    pub fn new(dir: impl Into<PathBuf>, node: NodeName) -> Self {
        PipelineConfig {
            dir: dir.into(),
            sink: SinkConfig::new(node.clone()),
            node,
            wal: wit_wal::Config::default(),
            batcher: BatcherConfig::default(),
            events: EventOptions::default(),
            max_unstored_bytes: 1 << 30,
            max_unstored_bytes_per_tenant: u64::MAX,
            max_unindexed_bytes: 1 << 30,
            janitor_interval: Duration::from_secs(1),
            retry_backoff: Duration::from_millis(200),
            read_batch: 256,
            processing_interval: Duration::from_millis(20),
            retention: None,
            compaction_target_bytes: None,
            grace: Duration::from_secs(600),
            indexing: true,
            hot: None,
            idempotency_window: Duration::from_secs(24 * 3600),
        }
    }

    /// Keeps each batch's rows in `hot` from their conversion (right after the batch is
    /// durable in the WAL) until the file holding them is published, so a `wit-query` engine
    /// given the same tier ([`QueryConfig::with_hot_tier`](wit_query::QueryConfig::with_hot_tier))
    /// sees acknowledged rows at once. A batch given up (dead-lettered) leaves the tier too.
    pub fn with_hot_tier(mut self, hot: wit_query::HotTier) -> Self {
        self.hot = Some(hot);
        self
    }

    /// Whether each published file gets its full-text index (`wit-index`), built by an
    /// indexing thread after the file is published and recorded beside it in the catalog
    /// (default on). With it on, [`AckLevel::Indexed`](crate::AckLevel::Indexed) is
    /// available, compaction indexes the files it writes, and a batch is marked `COMPLETED`
    /// only once `INDEXED`. Files left unindexed by a crash are indexed after the next open.
    pub fn with_indexing(mut self, on: bool) -> Self {
        self.indexing = on;
        self
    }

    /// The write-ahead log's settings (segment size, sync mode ...).
    pub fn with_wal(mut self, wal: wit_wal::Config) -> Self {
        self.wal = wal;
        self
    }

    /// How parts are gathered into batches.
    pub fn with_batcher(mut self, batcher: BatcherConfig) -> Self {
        self.batcher = batcher;
        self
    }

    /// How Parquet files are written and published. Its node must be the pipeline's. With
    /// indexing on, the pipeline also closes a file once its rows hold 256 MiB of Arrow
    /// memory, which it keeps to build the file's index without reading it back.
    pub fn with_sink(mut self, sink: SinkConfig) -> Self {
        self.sink = sink;
        self
    }

    /// How NDJSON event payloads are read (time field, units ...).
    pub fn with_event_options(mut self, events: EventOptions) -> Self {
        self.events = events;
        self
    }

    /// With indexing on, the most payload bytes of batches that are stored and not yet
    /// indexed (default 1 GiB). Beyond it, submitting pushes back as at the unstored bound:
    /// an index that falls behind slows intake rather than lag without end. A file whose
    /// indexing keeps failing holds its bytes until it is indexed.
    pub fn with_max_unindexed_bytes(mut self, bytes: u64) -> Self {
        self.max_unindexed_bytes = bytes;
        self
    }

    /// The most payload bytes of batches that are submitted but not yet stored (in the
    /// batcher, in the WAL, in open files). Beyond it, submitting pushes back. This bounds the
    /// WAL too while the store is unreachable.
    pub fn with_max_unstored_bytes(mut self, bytes: u64) -> Self {
        self.max_unstored_bytes = bytes;
        self
    }

    /// The most payload bytes one tenant may hold submitted but not yet stored (default: no
    /// bound but [`with_max_unstored_bytes`](Self::with_max_unstored_bytes)). Beyond it, that
    /// tenant's parts are answered [`Submitted::Full`](crate::Submitted::Full) while other
    /// tenants' are still taken: one tenant's backlog cannot take every tenant's room.
    pub fn with_max_unstored_bytes_per_tenant(mut self, bytes: u64) -> Self {
        self.max_unstored_bytes_per_tenant = bytes;
        self
    }

    /// How often the janitor truncates the WAL, marks batches `COMPLETED` and deletes
    /// retired files.
    pub fn with_janitor_interval(mut self, interval: Duration) -> Self {
        self.janitor_interval = interval;
        self
    }

    /// How often, at most, the processor starts a round when records trickle in (default
    /// 20 ms; a full round of 256 records starts at once): each round is one tracker
    /// transaction per step, so this bounds the tracker's commits (and their syncs, which
    /// share the disk with the WAL's) at the cost of as much latency for `Stored`.
    pub fn with_processing_interval(mut self, interval: Duration) -> Self {
        self.processing_interval = interval;
        self
    }

    /// The wait before a batch whose step failed is tried again (doubled each time).
    pub fn with_retry_backoff(mut self, backoff: Duration) -> Self {
        self.retry_backoff = backoff;
        self
    }

    /// Retires stored files whose newest event is older than this; the janitor applies it to
    /// every tenant this pipeline has seen. Off by default.
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = Some(retention);
        self
    }

    /// Has the janitor merge each partition's small files into files of about this many
    /// bytes (see `wit_store::Maintenance::compact`). Off by default.
    pub fn with_compaction(mut self, target_bytes: u64) -> Self {
        self.compaction_target_bytes = Some(target_bytes);
        self
    }

    /// How long a retired file (compacted or past retention) stays readable before the
    /// janitor deletes it (default 10 minutes).
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The pipeline's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where its write-ahead log is: `{dir}/wal`.
    pub fn wal_dir(&self) -> PathBuf {
        self.dir.join("wal")
    }

    /// Where the envelopes of failed batches are kept: `{dir}/failed`.
    pub fn dead_letter_dir(&self) -> PathBuf {
        self.dir.join("failed")
    }

    /// How long an idempotency key is kept (default 24 hours): within it, a request under a
    /// key already taken gets the first request's receipt and stores nothing
    /// ([`Pipeline::claim_key`](crate::Pipeline::claim_key)); after it, the key is forgotten.
    pub fn with_idempotency_window(mut self, window: Duration) -> Self {
        self.idempotency_window = window;
        self
    }

    /// The node name.
    pub fn node(&self) -> &NodeName {
        &self.node
    }

    /// The most bytes an envelope of `payload_bytes` in a full batch's parts can take: its
    /// header (tenant, topic: a few hundred bytes; 4 KiB allowed), and a small frame per part.
    pub(crate) fn max_envelope_bytes(&self, payload_bytes: u64) -> u64 {
        const HEADER: u64 = 4 << 10;
        // Format, compression, message count, source offset (flag and i64), idempotency flag,
        // payload length; an idempotency key and receipt count as payload (`Part::size`).
        const PER_PART: u64 = 1 + 1 + 4 + 9 + 1 + 8;
        payload_bytes + HEADER + self.batcher.max_messages().saturating_mul(PER_PART)
    }

    /// The largest part a submit accepts: alone in its batch, it must fit in a WAL record.
    pub(crate) fn max_part_bytes(&self) -> u64 {
        (self.wal.max_record_size() as u64).saturating_sub(self.max_envelope_bytes(0))
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let reason = if self.sink.node() != &self.node {
            format!(
                "the sink's node `{}` is not the pipeline's `{}`",
                self.sink.node().as_str(),
                self.node.as_str()
            )
        } else if self.max_unstored_bytes < self.batcher.max_bytes() {
            format!(
                "max_unstored_bytes ({}) is below the batcher's max_bytes ({})",
                self.max_unstored_bytes,
                self.batcher.max_bytes()
            )
        } else if self.max_envelope_bytes(self.batcher.max_bytes()) > self.wal.max_record_size() as u64 {
            format!(
                "a full batch (max_bytes {} in up to {} parts) does not fit in a WAL record of {} bytes",
                self.batcher.max_bytes(),
                self.batcher.max_messages(),
                self.wal.max_record_size()
            )
        } else if self.idempotency_window.is_zero() {
            "the idempotency window must be more than zero".to_owned()
        } else if self.janitor_interval.is_zero() {
            "the janitor interval must be more than zero".to_owned()
        } else {
            return Ok(());
        };
        Err(Error::InvalidConfig { reason })
    }
}
