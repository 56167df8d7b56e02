//! The values the tracker takes and returns.

use std::time::{Duration, SystemTime};

use wit_batch::{BatchId, BatchMeta, RetryPolicy, Stage, Tenant};

/// Completion times of a batch's stages.
///
/// `CREATED` is the batch's creation time; `FAILED` is when it last failed for good.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageTimes([Option<SystemTime>; 8]);

impl StageTimes {
    /// When `stage` was completed (reached), if it was.
    pub fn get(&self, stage: Stage) -> Option<SystemTime> {
        self.0[usize::from(stage.code() - 1)]
    }

    /// The stages completed, with when, in lifecycle order (`CREATED` first, `FAILED` last).
    pub fn iter(&self) -> impl Iterator<Item = (Stage, SystemTime)> + '_ {
        Stage::ALL
            .into_iter()
            .filter_map(|stage| Some((stage, self.get(stage)?)))
    }

    pub(crate) fn set(&mut self, stage: Stage, at: Option<SystemTime>) {
        self.0[usize::from(stage.code() - 1)] = at;
    }
}

/// A worker's hold on a batch it claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The worker that claimed the batch.
    pub worker: String,
    /// When the lease ends; after it the batch may be claimed again.
    pub until: SystemTime,
}

/// A position in one node's write-ahead log: whose log, and the LSN there.
///
/// Each node keeps its own WAL, so with several nodes sharing one tracker an LSN alone does
/// not say which log it is in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WalPosition {
    /// The node whose WAL holds the batch's envelope. Empty only for a position recorded
    /// before tracker schema version 2, which did not name the log.
    pub node: String,
    /// The LSN of the batch's envelope in that log.
    pub lsn: u64,
}

impl WalPosition {
    /// LSN `lsn` of `node`'s WAL.
    pub fn new(node: impl Into<String>, lsn: u64) -> Self {
        WalPosition { node: node.into(), lsn }
    }
}

/// Everything the tracker knows about one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchRecord {
    /// What the batch is: id, tenant, signal, source, counts, offsets, topics, creation time.
    pub meta: BatchMeta,
    /// The stage it has reached.
    pub stage: Stage,
    /// When it is `FAILED`: the stage it had reached when it failed, where a retry resumes.
    pub failed_in: Option<Stage>,
    /// When each stage was reached.
    pub completed_at: StageTimes,
    /// Its position in the write-ahead log (the node whose log, and the LSN of its envelope
    /// there), once written there.
    pub wal_position: Option<WalPosition>,
    /// The stage whose step failed last, if any failed.
    pub error_stage: Option<Stage>,
    /// The last error's message.
    pub error_message: Option<String>,
    /// Errors recorded since the batch last moved on (or was retried by hand).
    pub retry_count: u32,
    /// The worker holding it, if claimed (the lease may have run out).
    pub lease: Option<Lease>,
    /// When the record last changed stage or recorded an error.
    pub updated_at: SystemTime,
}

impl BatchRecord {
    /// The record of a newly registered batch: `CREATED` at its creation time.
    pub(crate) fn new(meta: BatchMeta) -> Self {
        let created = crate::plan::micros(meta.created_at);
        let mut meta = meta;
        meta.created_at = created;
        let mut completed_at = StageTimes::default();
        completed_at.set(Stage::Created, Some(created));
        BatchRecord {
            meta,
            stage: Stage::Created,
            failed_in: None,
            completed_at,
            wal_position: None,
            error_stage: None,
            error_message: None,
            retry_count: 0,
            lease: None,
            updated_at: created,
        }
    }
}

/// One step of a batch's lifecycle, for [`Tracker::advance`](crate::Tracker::advance).
///
/// A step that names its worker ([`with_worker`](Self::with_worker)) is *fenced*: it applies
/// only while that worker holds the batch's lease (see [`Tracker::advance`](crate::Tracker::advance)).
/// A step without a worker is not checked against leases at all.
///
/// ```
/// use std::time::SystemTime;
/// use wit_batch::{BatchId, Stage};
/// use wit_tracker::{Advance, SourceOffset};
///
/// let step = Advance::new(BatchId::new(), Stage::WalWritten, SystemTime::now())
///     .with_wal_position("node-a", 4_096)
///     .with_offsets(vec![SourceOffset::new("ingest", "logs.acme", 0, 1_119)]);
/// assert_eq!(step.offsets.len(), 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Advance {
    /// The batch.
    pub batch: BatchId,
    /// The stage it reached.
    pub stage: Stage,
    /// When it reached it.
    pub at: SystemTime,
    /// Its WAL position, recorded when the step applies (usually with `WAL_WRITTEN`).
    pub wal_position: Option<WalPosition>,
    /// Source positions to store in the same transaction (usually with `SOURCE_COMMITTED`).
    pub offsets: Vec<SourceOffset>,
    /// The worker performing the step, if it is fenced by the worker's lease.
    pub worker: Option<String>,
}

impl Advance {
    /// `batch` reached `stage` at `at`.
    pub fn new(batch: BatchId, stage: Stage, at: SystemTime) -> Self {
        Advance {
            batch,
            stage,
            at,
            wal_position: None,
            offsets: Vec::new(),
            worker: None,
        }
    }

    /// Records the batch's WAL position with this step: LSN `lsn` of the WAL of `node` (the
    /// node that wrote the envelope; each node has its own log). See
    /// [`Tracker::oldest_unstored_wal_position`](crate::Tracker::oldest_unstored_wal_position).
    pub fn with_wal_position(mut self, node: impl Into<String>, lsn: u64) -> Self {
        self.wal_position = Some(WalPosition::new(node, lsn));
        self
    }

    /// Stores these source positions in the same transaction as this step.
    pub fn with_offsets(mut self, offsets: Vec<SourceOffset>) -> Self {
        self.offsets = offsets;
        self
    }

    /// Fences the step by `worker`'s lease: it applies only if `worker` holds the batch's
    /// lease (from a [`claim`](crate::Tracker::claim)) and the lease has not run out at the
    /// step's time. Otherwise the whole call fails with
    /// [`Error::LeaseLost`](crate::Error::LeaseLost), so a worker whose lease ran out while it
    /// worked, and whose batch another worker claimed since, cannot complete the step too.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use wit_batch::{BatchId, BatchMeta, Signal, SourceKind, Stage, Tenant};
    /// use wit_tracker::{Advance, ClaimRequest, Error, InMemoryTracker, Tracker, TrackerExt};
    ///
    /// let tracker = InMemoryTracker::default();
    /// let id = BatchId::new();
    /// tracker.register_one(&BatchMeta {
    ///     id,
    ///     tenant: Tenant::try_new("acme")?,
    ///     signal: Signal::Logs,
    ///     source: SourceKind::Http,
    ///     message_count: 1,
    ///     byte_size: 100,
    ///     first_offset: None,
    ///     last_offset: None,
    ///     topics: vec![],
    ///     partition: None,
    ///     created_at: id.created_at(),
    /// })?;
    /// let t0 = SystemTime::now();
    /// tracker.mark(id, Stage::WalWritten, t0)?;
    /// let lease = Duration::from_secs(30);
    /// tracker.claim(&ClaimRequest::new(Stage::Ingested, "node-a/convert", 1).with_lease(lease).at(t0))?;
    /// // node-a stalls past its lease; node-b claims the batch.
    /// let later = t0 + Duration::from_secs(31);
    /// tracker.claim(&ClaimRequest::new(Stage::Ingested, "node-b/convert", 1).with_lease(lease).at(later))?;
    /// let late = Advance::new(id, Stage::Ingested, later).with_worker("node-a/convert");
    /// assert!(matches!(tracker.advance(&[late]), Err(Error::LeaseLost { .. })));
    /// let step = Advance::new(id, Stage::Ingested, later).with_worker("node-b/convert");
    /// tracker.advance(&[step])?;
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_worker(mut self, worker: impl Into<String>) -> Self {
        self.worker = Some(worker.into());
        self
    }
}

/// A position in a partitioned source, such as a Kafka consumer group's offset.
///
/// The tracker keeps the highest offset stored per (source, topic, partition) with a step
/// ([`Advance::with_offsets`]): storing a lower one (a replayed step) never moves it back.
/// [`Tracker::claim_ranges`](crate::Tracker::claim_ranges) moves it by compare-and-set instead,
/// from a claim's `from` to its `to`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceOffset {
    /// Which reader the position belongs to, e.g. a consumer group.
    pub source: String,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The position: by convention the next offset to read.
    pub offset: i64,
}

impl SourceOffset {
    /// A position.
    pub fn new(source: impl Into<String>, topic: impl Into<String>, partition: i32, offset: i64) -> Self {
        SourceOffset {
            source: source.into(),
            topic: topic.into(),
            partition,
            offset,
        }
    }
}

/// A batch of a partitioned source (a Kafka partition) and the offset range it holds, claimed by
/// [`Tracker::claim_ranges`](crate::Tracker::claim_ranges): registered and moved to
/// `SOURCE_COMMITTED` in the same transaction that moves the partition's stored offset from
/// `from` to `to` (compare-and-set).
///
/// The range is `[from, to)`: `to` is the offset after the range's last message, the next one
/// to read, as Kafka commits it. Of two claims of the same `from`, one is
/// [`Claimed`](RangeOutcome::Claimed) and the other a [`Conflict`](RangeOutcome::Conflict), so
/// each offset of a partition is held by one claimed batch.
///
/// ```
/// use std::time::SystemTime;
/// use wit_tracker::RangeClaim;
/// # fn claim(meta: wit_batch::BatchMeta) {
/// // The first batch of partition 3: nothing stored yet; it holds offsets up to 1_499.
/// let first = RangeClaim::new(meta, "ingest", "logs.acme", 3, None, 1_500, SystemTime::now())
///     .with_wal_position("node-a", 42);
/// assert_eq!((first.from, first.to), (None, 1_500));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeClaim {
    /// The batch; registered (`CREATED` at its `created_at`) when the claim succeeds.
    pub meta: BatchMeta,
    /// The reader whose offset it is, e.g. the consumer group.
    pub source: String,
    /// The topic.
    pub topic: String,
    /// The partition (not negative).
    pub partition: i32,
    /// The stored offset this claim expects: `None` when it expects none stored yet for the
    /// partition (its first batch).
    pub from: Option<i64>,
    /// The stored offset after the claim: the offset after the range's last message.
    pub to: i64,
    /// The batch's position in its node's write-ahead log, recorded with `WAL_WRITTEN` as
    /// [`Advance::with_wal_position`] records it.
    pub wal_position: Option<WalPosition>,
    /// When: the `WAL_WRITTEN` and `SOURCE_COMMITTED` stage times (kept to the microsecond).
    pub at: SystemTime,
}

impl RangeClaim {
    /// A claim of `[from, to)` of `topic`'s `partition` for `source`, holding the batch `meta`,
    /// at `at`; `from` is the stored offset the claim expects (`None`: none stored yet). Not
    /// checked here: [`Tracker::claim_ranges`](crate::Tracker::claim_ranges) refuses invalid
    /// claims.
    pub fn new(
        meta: BatchMeta,
        source: impl Into<String>,
        topic: impl Into<String>,
        partition: i32,
        from: Option<i64>,
        to: i64,
        at: SystemTime,
    ) -> Self {
        RangeClaim {
            meta,
            source: source.into(),
            topic: topic.into(),
            partition,
            from,
            to,
            wal_position: None,
            at,
        }
    }

    /// Records the batch's WAL position with the claim: LSN `lsn` of the WAL of `node` (see
    /// [`Advance::with_wal_position`]).
    pub fn with_wal_position(mut self, node: impl Into<String>, lsn: u64) -> Self {
        self.wal_position = Some(WalPosition::new(node, lsn));
        self
    }
}

/// What [`Tracker::claim_ranges`](crate::Tracker::claim_ranges) did with one claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RangeOutcome {
    /// The range was free: the batch is registered, `SOURCE_COMMITTED`, and the stored offset
    /// is `to`.
    Claimed,
    /// A batch with this id was registered already (a replay after a crash): nothing changed;
    /// `stage` is where it is now.
    AlreadyRegistered {
        /// The stage the batch is in.
        stage: Stage,
    },
    /// The stored offset is not `from` (another claim moved it, or it is behind): nothing was
    /// written for this claim.
    Conflict {
        /// The stored offset the claim found (`None`: none stored for the partition).
        stored: Option<i64>,
    },
}

/// An idempotency key a tenant's request was taken under, remembered by
/// [`Tracker::remember_keys`](crate::Tracker::remember_keys): the batch that holds the
/// request's part and the host's receipt (its answer to the request), so that a repeat of the
/// request gets the same answer instead of being taken twice.
///
/// ```
/// use std::time::SystemTime;
/// use wit_batch::{BatchId, Tenant};
/// use wit_tracker::{InMemoryTracker, RememberedKey, Tracker};
///
/// let tracker = InMemoryTracker::default();
/// let tenant = Tenant::try_new("acme")?;
/// let batch = BatchId::new();
/// let first = RememberedKey::new(tenant.clone(), "order-7f3a", batch, &b"accepted 3"[..], SystemTime::now());
/// tracker.remember_keys(std::slice::from_ref(&first))?;
/// // A repeat of the request (or a replay after a crash) leaves the first as it is.
/// let again = RememberedKey::new(tenant.clone(), "order-7f3a", BatchId::new(), &b"other"[..], SystemTime::now());
/// tracker.remember_keys(&[again])?;
/// let recalled = tracker.recall_key(&tenant, "order-7f3a")?.expect("remembered");
/// assert_eq!((recalled.batch, recalled.receipt.as_slice()), (batch, &b"accepted 3"[..]));
/// assert_eq!(tracker.recall_key(&tenant, "order-0000")?, None);
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RememberedKey {
    /// The tenant whose request it was; keys are per tenant.
    pub tenant: Tenant,
    /// The key: 1 to [`MAX_KEY_LEN`](Self::MAX_KEY_LEN) bytes of visible ASCII (`!` to `~`).
    pub key: String,
    /// The batch that holds the request's part.
    pub batch: BatchId,
    /// The host's receipt, opaque to the tracker: at most
    /// [`MAX_RECEIPT_LEN`](Self::MAX_RECEIPT_LEN) bytes.
    pub receipt: Vec<u8>,
    /// When the request was taken (kept to the microsecond).
    pub at: SystemTime,
}

impl RememberedKey {
    /// The longest key, in bytes.
    pub const MAX_KEY_LEN: usize = 255;
    /// The largest receipt, in bytes (64 KiB).
    pub const MAX_RECEIPT_LEN: usize = 64 << 10;

    /// `tenant`'s request taken under `key` at `at`, its part in `batch`, answered with
    /// `receipt`. Not checked here: [`Tracker::remember_keys`](crate::Tracker::remember_keys)
    /// refuses an invalid key or an oversized receipt.
    pub fn new(
        tenant: Tenant,
        key: impl Into<String>,
        batch: BatchId,
        receipt: impl Into<Vec<u8>>,
        at: SystemTime,
    ) -> Self {
        RememberedKey {
            tenant,
            key: key.into(),
            batch,
            receipt: receipt.into(),
            at,
        }
    }
}

/// The outcome of registering a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Registration {
    /// The batch is new and now `CREATED`.
    Registered,
    /// A batch with this id was already registered; it is left as it was.
    AlreadyRegistered,
}

/// The outcome of recording a stage error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorOutcome {
    /// Retries remain: the batch stays in its stage and can be claimed again.
    Retry {
        /// Errors recorded since it last moved on, this one included.
        retry_count: u32,
    },
    /// Retries are used up: the batch is `FAILED`.
    Failed {
        /// Errors recorded since it last moved on, this one included.
        retry_count: u32,
    },
}

/// A stage worker's request for work: [`Tracker::claim`](crate::Tracker::claim).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClaimRequest {
    /// The stage the worker moves batches into, e.g. `STORED` for a storage worker: it gets
    /// batches whose current stage may move there.
    pub stage: Stage,
    /// Who claims (a node and worker name); recorded on the batches.
    pub worker: String,
    /// The most batches to claim.
    pub max: usize,
    /// How long the claim holds; a worker that dies loses its batches when it runs out.
    pub lease: Duration,
    /// The time now.
    pub now: SystemTime,
}

impl ClaimRequest {
    /// Up to `max` batches ready for `stage`, for `worker`, leased for 30 s from now.
    pub fn new(stage: Stage, worker: impl Into<String>, max: usize) -> Self {
        ClaimRequest {
            stage,
            worker: worker.into(),
            max,
            lease: Duration::from_secs(30),
            now: SystemTime::now(),
        }
    }

    /// Sets the lease length.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Sets the time the claim is made at (tests, replays).
    pub fn at(mut self, now: SystemTime) -> Self {
        self.now = now;
        self
    }
}

/// A half-open span of creation times, `from..to`, for the window queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The start, inclusive.
    pub from: SystemTime,
    /// The end, exclusive.
    pub to: SystemTime,
}

impl Window {
    /// `from..to`.
    pub fn new(from: SystemTime, to: SystemTime) -> Self {
        Window { from, to }
    }

    /// The `length` up to `now`: `now - length .. now`.
    pub fn last(length: Duration, now: SystemTime) -> Self {
        Window {
            from: now.checked_sub(length).unwrap_or(SystemTime::UNIX_EPOCH),
            to: now,
        }
    }

    /// Every time a batch can have been created at: from the epoch to the end of the year
    /// 9999 (a time every backend stores). `stage_counts(Window::all(), None)` counts every
    /// batch the tracker holds.
    pub fn all() -> Self {
        Window {
            from: SystemTime::UNIX_EPOCH,
            to: SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_800),
        }
    }

    /// Its length in seconds (0 when it is empty or reversed).
    pub fn seconds(&self) -> f64 {
        self.to.duration_since(self.from).map_or(0.0, |d| d.as_secs_f64())
    }
}

/// How many batches created in a window are in each stage now: where work piles up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageCounts([u64; 8]);

impl StageCounts {
    /// Batches currently in `stage`.
    pub fn get(&self, stage: Stage) -> u64 {
        self.0[usize::from(stage.code() - 1)]
    }

    /// All batches counted.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Every stage with its count (zeros included), in lifecycle order.
    pub fn iter(&self) -> impl Iterator<Item = (Stage, u64)> + '_ {
        Stage::ALL.into_iter().map(|stage| (stage, self.get(stage)))
    }

    pub(crate) fn add(&mut self, stage: Stage, n: u64) {
        self.0[usize::from(stage.code() - 1)] += n;
    }
}

/// What one client (tenant) sent in a window.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientThroughput {
    /// The client.
    pub tenant: Tenant,
    /// Batches created in the window.
    pub batches: u64,
    /// Messages in them.
    pub messages: u64,
    /// Payload bytes in them.
    pub bytes: u64,
    /// `messages` divided by the window's length.
    pub messages_per_second: f64,
}

/// Settings of a tracker backend. One config serves them all; each backend reads the options
/// that concern it and ignores the others:
///
/// | option | in-memory | SQLite | PostgreSQL |
/// |---|---|---|---|
/// | [`with_retry_policy`](Self::with_retry_policy) | yes | yes | yes |
/// | [`with_timeout`](Self::with_timeout) | — | waiting for a locked database file | connecting, and waiting for a pooled connection |
/// | [`with_pool_size`](Self::with_pool_size) | — | — | connections held |
///
/// ```
/// use std::time::Duration;
/// use wit_tracker::TrackerConfig;
///
/// // A PostgreSQL tracker shared by 16 workers, patient with a busy server.
/// let config = TrackerConfig::default()
///     .with_pool_size(16)
///     .with_timeout(Duration::from_secs(10));
/// # let _ = config;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackerConfig {
    pub(crate) retry: RetryPolicy,
    pub(crate) pool_size: usize,
    pub(crate) timeout: Duration,
}

impl Default for TrackerConfig {
    /// Five retries, a pool of 8 connections (PostgreSQL), a 5 s timeout to connect or wait.
    fn default() -> Self {
        TrackerConfig {
            retry: RetryPolicy::default(),
            pool_size: 8,
            timeout: Duration::from_secs(5),
        }
    }
}

impl TrackerConfig {
    /// How many stage errors a batch may have before it is `FAILED` (every backend).
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The most database connections held (PostgreSQL only; at least 1).
    pub fn with_pool_size(mut self, n: usize) -> Self {
        self.pool_size = n.max(1);
        self
    }

    /// How long to wait: PostgreSQL, to connect and for a pooled connection; SQLite, for a
    /// database file another connection has locked. The in-memory tracker never waits.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// Which batches a [`BatchQuery`] lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BatchSelection {
    /// Batches neither `COMPLETED` nor `FAILED`: on their way, or stuck.
    Unfinished,
    /// Batches in this stage now.
    InStage(Stage),
}

/// A listing of batches for [`Tracker::list_batches`](crate::Tracker::list_batches): which
/// batches, created before when, whose, and one page of them at a time.
///
/// Batches are listed oldest first (by creation time, then by id), `limit` to a page (100
/// unless set). A page's [`next`](BatchPage::next) cursor, passed to [`after`](Self::after),
/// gives the page that follows it, so a listing is walked page by page without skipping or
/// repeating a batch, even while batches are registered or move on between pages (a batch
/// that moves into or out of the selection between pages is listed or not depending on where
/// the walk is).
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use wit_batch::Stage;
/// use wit_tracker::{BatchQuery, InMemoryTracker, Tracker};
///
/// let tracker = InMemoryTracker::default();
/// // Batches not finished ten minutes after their creation, 50 at a time.
/// let cut_off = SystemTime::now() - Duration::from_secs(600);
/// let mut query = BatchQuery::stuck(cut_off).with_limit(50);
/// loop {
///     let page = tracker.list_batches(&query)?;
///     for record in &page.batches {
///         println!("{} is stuck in {}", record.meta.id, record.stage);
///     }
///     match page.next {
///         Some(cursor) => query = query.after(cursor),
///         None => break,
///     }
/// }
/// // The failed batches, and the batches in one stage.
/// assert!(tracker.list_batches(&BatchQuery::failed())?.batches.is_empty());
/// assert!(tracker.list_batches(&BatchQuery::in_stage(Stage::Ingested))?.next.is_none());
/// # Ok::<_, wit_tracker::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchQuery {
    /// Which batches.
    pub selection: BatchSelection,
    /// Only batches created strictly before this time (to the microsecond), if set.
    pub created_before: Option<SystemTime>,
    /// Only this tenant's batches, if set; every tenant's otherwise.
    pub tenant: Option<Tenant>,
    /// The most batches on a page (at least 1).
    pub limit: usize,
    /// Where the page starts: just after this position. `None`: at the oldest batch.
    pub after: Option<Cursor>,
}

impl BatchQuery {
    /// The most batches on a page unless [`with_limit`](Self::with_limit) says otherwise.
    pub const DEFAULT_LIMIT: usize = 100;

    fn of(selection: BatchSelection) -> Self {
        BatchQuery {
            selection,
            created_before: None,
            tenant: None,
            limit: Self::DEFAULT_LIMIT,
            after: None,
        }
    }

    /// Stuck batches: neither `COMPLETED` nor `FAILED`, created before `created_before`.
    pub fn stuck(created_before: SystemTime) -> Self {
        Self::of(BatchSelection::Unfinished).with_created_before(created_before)
    }

    /// `FAILED` batches (the same as `in_stage(Stage::Failed)`).
    pub fn failed() -> Self {
        Self::in_stage(Stage::Failed)
    }

    /// Batches in `stage` now.
    pub fn in_stage(stage: Stage) -> Self {
        Self::of(BatchSelection::InStage(stage))
    }

    /// Only batches created strictly before `created_before` (to the microsecond).
    pub fn with_created_before(mut self, created_before: SystemTime) -> Self {
        self.created_before = Some(created_before);
        self
    }

    /// Only `tenant`'s batches (`None`: every tenant's).
    pub fn with_tenant(mut self, tenant: impl Into<Option<Tenant>>) -> Self {
        self.tenant = tenant.into();
        self
    }

    /// At most `limit` batches on a page. A limit of 0 is refused by
    /// [`list_batches`](crate::Tracker::list_batches).
    pub fn with_limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// The page after `cursor`, a previous page's [`next`](BatchPage::next).
    pub fn after(mut self, cursor: impl Into<Option<Cursor>>) -> Self {
        self.after = cursor.into();
        self
    }

    /// Whether `record` is one of the batches the query selects (its selection, creation time
    /// and tenant), wherever the page starts.
    pub fn selects(&self, record: &BatchRecord) -> bool {
        let in_selection = match self.selection {
            BatchSelection::Unfinished => !matches!(record.stage, Stage::Completed | Stage::Failed),
            BatchSelection::InStage(stage) => record.stage == stage,
        };
        in_selection
            && self
                .created_before
                .is_none_or(|t| record.meta.created_at < crate::plan::micros(t))
            && self.tenant.as_ref().is_none_or(|t| record.meta.tenant == *t)
    }
}

/// A position in a listing of batches ([`BatchQuery`]): the creation time and id of the last
/// batch of a page. The next page starts with the batch after it in (creation time, id) order,
/// whether or not that batch is still there, so pages stay put while batches are added.
///
/// Callers take it from [`BatchPage::next`] and pass it back with [`BatchQuery::after`];
/// backends read it with [`created_at`](Self::created_at) and [`batch`](Self::batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cursor {
    created_at: SystemTime,
    batch: BatchId,
}

impl Cursor {
    /// The position of the batch `batch` created at `created_at` (kept to the microsecond).
    pub fn new(created_at: SystemTime, batch: BatchId) -> Self {
        Cursor {
            created_at: crate::plan::micros(created_at),
            batch,
        }
    }

    /// The position of `record`.
    pub fn of(record: &BatchRecord) -> Self {
        Cursor::new(record.meta.created_at, record.meta.id)
    }

    /// The creation time of the batch at the position.
    pub fn created_at(&self) -> SystemTime {
        self.created_at
    }

    /// The id of the batch at the position.
    pub fn batch(&self) -> BatchId {
        self.batch
    }
}

/// One page of a listing: [`Tracker::list_batches`](crate::Tracker::list_batches).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchPage {
    /// The batches, oldest first (by creation time, then id); at most the query's limit.
    pub batches: Vec<BatchRecord>,
    /// Where the next page starts, when there are more batches after this page; `None` when
    /// the listing ended here.
    pub next: Option<Cursor>,
}

impl BatchPage {
    /// The page of `limit` of `rows`, the batches the query selects after its cursor, oldest
    /// first, of which the backend read at most `limit + 1` (one more tells whether the
    /// listing goes on).
    pub(crate) fn of_rows(mut rows: Vec<BatchRecord>, limit: usize) -> Self {
        let next = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(Cursor::of)
        } else {
            None
        };
        BatchPage { batches: rows, next }
    }
}
