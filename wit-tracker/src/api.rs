//! The tracker contract: [`Tracker`] (blocking), [`AsyncTracker`] (its async twin),
//! [`DynAsyncTracker`] (the async twin as a trait object) and [`TrackerExt`] (one-batch
//! conveniences over `Tracker`).

use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use futures::future::BoxFuture;
use wit_batch::{BatchId, BatchMeta, Stage, Tenant, Transition};

use crate::Result;
use crate::model::{
    Advance, BatchPage, BatchQuery, BatchRecord, ClaimRequest, ClientThroughput, ErrorOutcome, RangeClaim,
    RangeOutcome, Registration, RememberedKey, SourceOffset, StageCounts, Window,
};

/// Follows batches through their lifecycle. Every method is one transaction: it applies
/// completely or not at all. Times are the caller's, kept to the microsecond.
///
/// Implemented by [`InMemoryTracker`](crate::InMemoryTracker),
/// [`SqliteTracker`](crate::SqliteTracker) and [`PostgresTracker`](crate::PostgresTracker),
/// which also implement [`FileCatalog`](wit_store::FileCatalog) (publishing a file marks its
/// batches `STORED` in the same transaction) and [`AsyncTracker`]. One conformance suite runs
/// against all three (the module `conformance`, with the feature of that name; a host's own
/// backend runs it too).
pub trait Tracker: Send + Sync {
    /// Registers batches as `CREATED` (at their `created_at`).
    ///
    /// A batch already registered is left as it was and reported
    /// [`Registration::AlreadyRegistered`], so a replay may register again.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for counts beyond `i64`;
    /// backend errors.
    fn register(&self, batches: &[BatchMeta]) -> Result<Vec<Registration>>;

    /// Moves batches on, in order, storing each step's WAL position and source offsets in the
    /// same transaction. Returns one outcome per step: [`Transition::AlreadyApplied`] when the
    /// batch is already in that stage. A step out of `FAILED` into the stage the batch failed
    /// in is a retry by hand (with a fresh retry budget). Completing a step drops the batch's
    /// lease.
    ///
    /// A step that names its worker ([`Advance::with_worker`]) is fenced: if it would apply,
    /// the worker must hold the batch's lease, and the lease must not have run out at the
    /// step's [`at`](Advance::at). Leases are checked as the call found them, so one call may
    /// carry several steps of a worker's batch. A fenced step that is
    /// [`Transition::AlreadyApplied`] changes nothing and needs no lease (a worker repeating a
    /// call whose answer it lost gets the same outcome). A retry by hand out of `FAILED` is no
    /// worker's: a `FAILED` batch has no lease, so fenced it is refused. Steps without a worker
    /// are not fenced.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownBatch`](crate::Error::UnknownBatch);
    /// [`Error::InvalidTransition`](crate::Error::InvalidTransition) for a skipped stage, a step
    /// backwards, or any other step the lifecycle forbids;
    /// [`Error::LeaseLost`](crate::Error::LeaseLost) for a fenced step whose worker does not
    /// hold the lease;
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a step into `FAILED`
    /// (use [`record_error`](Self::record_error)) or an empty worker name. On any error no
    /// step is applied.
    fn advance(&self, steps: &[Advance]) -> Result<Vec<Transition>>;

    /// Registers batches of a partitioned source (a Kafka partition), each with the offset range
    /// `[from, to)` it holds, moving the partition's stored offset by compare-and-set: each
    /// offset of a partition is stored by exactly one batch, even when two readers read it (a
    /// consumer group's rebalance) or a reader replays after a crash. A reader takes `from`
    /// from [`source_offsets`](Self::source_offsets) when it starts reading a partition, then
    /// from its own last claim's `to`.
    ///
    /// One transaction for the whole call. Claims are applied in order, one [`RangeOutcome`]
    /// each, and a claim sees the stored offsets the call's earlier claims moved: a chain
    /// `[a, b)`, `[b, c)` in one call claims both, and if the first conflicts the second does
    /// too (unless the offset stored is `b` itself: each claim is judged by itself). For each
    /// claim:
    ///
    /// - a batch with its id is registered already (a replay, or a batch registered by
    ///   [`register`](Self::register)): [`RangeOutcome::AlreadyRegistered`] with the batch's
    ///   stage now; nothing changes, the stored offset neither, whatever the claim's range;
    /// - else, if the stored offset of (`source`, `topic`, `partition`) is `from` (both absent,
    ///   or equal): [`RangeOutcome::Claimed`]. The batch is registered as
    ///   [`register`](Self::register) does (`CREATED` at its `created_at`), then moved to
    ///   `WAL_WRITTEN` (with its [`wal_position`](RangeClaim::wal_position), if any, as
    ///   [`Advance::with_wal_position`] records it) and `SOURCE_COMMITTED`, both at
    ///   [`at`](RangeClaim::at), and the stored offset becomes `to` (its row is created when
    ///   there was none);
    /// - else: [`RangeOutcome::Conflict`] with the stored offset found (`None`: none stored);
    ///   nothing is written for this claim. The caller drops the batch: another claim holds
    ///   its range, or some of it.
    ///
    /// A conflict is an outcome, not an error: the call's other claims stand. A claimed batch
    /// is an ordinary `SOURCE_COMMITTED` batch from then on: it holds its WAL position
    /// ([`oldest_unstored_wal_position`](Self::oldest_unstored_wal_position)) until it is
    /// `STORED`, and [`source_offsets`](Self::source_offsets) reports the claimed offsets.
    /// These are the rows [`Advance::with_offsets`] writes too (the highest wins there); a
    /// claim starts from whatever is stored, but a partition should be written one way only.
    ///
    /// Readers on several nodes may claim at once: of two claims of a partition with the same
    /// `from`, exactly one is `Claimed`. PostgreSQL takes a transaction-scoped advisory lock
    /// per partition of the call (in key order) and moves the offset with a compare-and-set
    /// statement (`UPDATE ... WHERE offset = from`, or `INSERT ... ON CONFLICT DO NOTHING` for
    /// `from: None`); SQLite runs the call in one `BEGIN IMMEDIATE` transaction. An empty slice
    /// does nothing.
    ///
    /// ```
    /// use std::time::{Instant, SystemTime};
    /// use wit_batch::{
    ///     BatchKey, BatchMeta, Batcher, BatcherConfig, Compression, Part, PayloadFormat, Signal, SourceKind, Stage,
    ///     Tenant,
    /// };
    /// use wit_tracker::{InMemoryTracker, RangeClaim, RangeOutcome, SourceOffset, Tracker};
    ///
    /// let tracker = InMemoryTracker::default();
    /// // Batches of messages of `logs.acme`, as a Kafka source forms them.
    /// let mut batcher = Batcher::try_new(BatcherConfig::default())?;
    /// let key = BatchKey::new(Tenant::try_new("acme")?, Signal::Logs, SourceKind::Kafka).with_topic("logs.acme");
    /// let mut batch = |last_offset: i64| -> BatchMeta {
    ///     let part = Part::new(PayloadFormat::Ndjson, Compression::None, 1, "{}\n");
    ///     let part = part.with_source_offset(last_offset);
    ///     batcher.push(&key, part, Instant::now());
    ///     batcher.flush_all().remove(0).into_inner().0
    /// };
    /// let now = SystemTime::now();
    /// // Offsets 0..100, then 100..250 of partition 0: a chain, here in one call.
    /// let first = RangeClaim::new(batch(99), "ingest", "logs.acme", 0, None, 100, now)
    ///     .with_wal_position("node-a", 7);
    /// let second = RangeClaim::new(batch(249), "ingest", "logs.acme", 0, Some(100), 250, now);
    /// let outcomes = tracker.claim_ranges(&[first.clone(), second])?;
    /// assert_eq!(outcomes, [RangeOutcome::Claimed, RangeOutcome::Claimed]);
    /// assert_eq!(tracker.batch(first.meta.id)?.stage, Stage::SourceCommitted);
    /// let stored = tracker.source_offsets("ingest")?;
    /// assert_eq!(stored, [SourceOffset::new("ingest", "logs.acme", 0, 250)]);
    /// assert_eq!(tracker.oldest_unstored_wal_position("node-a")?, Some(7));
    ///
    /// // Another consumer of the group read 100..250 too, during a rebalance: its batch is
    /// // dropped.
    /// let late = RangeClaim::new(batch(249), "ingest", "logs.acme", 0, Some(100), 250, now);
    /// let outcomes = tracker.claim_ranges(&[late.clone()])?;
    /// assert_eq!(outcomes, [RangeOutcome::Conflict { stored: Some(250) }]);
    /// assert!(tracker.batch(late.meta.id).is_err(), "never registered");
    ///
    /// // The first claim again, replayed after a crash: its batch is registered already.
    /// let stage = Stage::SourceCommitted;
    /// assert_eq!(tracker.claim_ranges(&[first])?, [RangeOutcome::AlreadyRegistered { stage }]);
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument), before anything is written,
    /// for: an empty source or topic name, a negative partition, a negative `to` or `from`,
    /// `to <= from`, the same batch id in two claims of the call, counts beyond `i64` (as
    /// [`register`](Self::register)), a WAL position beyond `i64` or without its node's name
    /// (as [`advance`](Self::advance)). Nothing of the call is written then. Backend errors.
    fn claim_ranges(&self, claims: &[RangeClaim]) -> Result<Vec<RangeOutcome>>;

    /// Records that moving `batch` into `stage` failed with `message`: the retry count goes up
    /// and the lease is dropped; once the retry policy gives up the batch is `FAILED`.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownBatch`](crate::Error::UnknownBatch);
    /// [`Error::InvalidTransition`](crate::Error::InvalidTransition) when `stage` is not a
    /// step the batch could be attempting (it is already `FAILED` or `COMPLETED`, or `stage`
    /// is not next).
    fn record_error(&self, batch: BatchId, stage: Stage, message: &str, at: SystemTime) -> Result<ErrorOutcome>;

    /// [`record_error`](Self::record_error), fenced by `worker`'s lease as a step with
    /// [`Advance::with_worker`] is: the error is recorded only if `worker` holds the batch's
    /// lease and the lease has not run out at `at`, so a worker that lost its batch to another
    /// cannot spend the batch's retries. [`record_error`](Self::record_error) is not fenced.
    ///
    /// # Errors
    ///
    /// As [`record_error`](Self::record_error) (checked first), and
    /// [`Error::LeaseLost`](crate::Error::LeaseLost) when `worker` does not hold the lease;
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for an empty worker name.
    /// Nothing is recorded then.
    fn record_error_by(
        &self,
        batch: BatchId,
        stage: Stage,
        message: &str,
        at: SystemTime,
        worker: &str,
    ) -> Result<ErrorOutcome>;

    /// Claims up to `request.max` batches ready to move into `request.stage` (oldest first)
    /// whose lease is free or ran out, leasing them to `request.worker`. Two workers never hold
    /// the same batch at once; a batch whose worker died is claimable once its lease ends.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a claim into `CREATED` or
    /// `FAILED`, or an empty worker name.
    fn claim(&self, request: &ClaimRequest) -> Result<Vec<BatchRecord>>;

    /// The record of one batch.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownBatch`](crate::Error::UnknownBatch) when it is not registered.
    fn batch(&self, batch: BatchId) -> Result<BatchRecord>;

    /// One page of the batches `query` selects, oldest first (by creation time, then id):
    /// stuck ones ([`BatchQuery::stuck`]), failed ones ([`BatchQuery::failed`]) or those in a
    /// stage ([`BatchQuery::in_stage`]), of one tenant or all, at most
    /// [`limit`](BatchQuery::limit), starting after [`after`](BatchQuery::after).
    ///
    /// The page's [`next`](crate::BatchPage::next) is `Some` when more batches follow it: pass
    /// it to [`BatchQuery::after`] for the next page. Pages are keyset pages (the next one
    /// starts after the last batch's (creation time, id)), so a walk over all pages lists each
    /// batch that stays selected exactly once, in order, while batches are registered (a batch
    /// registered behind the walk's position is not listed by it). Each page is read at once;
    /// a walk is not one snapshot.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a limit of 0; backend
    /// errors.
    fn list_batches(&self, query: &BatchQuery) -> Result<BatchPage>;

    /// How many batches created in `window` are in each stage now; only `tenant`'s when
    /// given.
    fn stage_counts(&self, window: Window, tenant: Option<&Tenant>) -> Result<StageCounts>;

    /// Batches, messages, bytes and messages per second per client (tenant) for batches
    /// created in `window`, busiest first.
    fn client_throughput(&self, window: Window) -> Result<Vec<ClientThroughput>>;

    /// The lowest LSN in `node`'s write-ahead log of a batch that is not yet `STORED`
    /// (`CREATED`, `WAL_WRITTEN`, `SOURCE_COMMITTED` or `INGESTED`): `node`'s janitor may
    /// truncate its WAL below it, and must keep every record from there on. `None` when no
    /// such batch has a position in that log. Positions in other nodes' logs
    /// ([`Advance::with_wal_position`]) never count.
    ///
    /// A `STORED` batch's rows are in a durable Parquet file, so its envelope is no longer
    /// needed: `STORED`, `INDEXED` and `COMPLETED` batches do not hold the position. Nor do
    /// `FAILED` ones, so that a batch that failed for good cannot pin the log for ever. A host
    /// that keeps a `FAILED` batch (for a retry by hand) must therefore set its envelope aside
    /// (wit-pipeline will write it to a dead-letter directory) *before* it records the error
    /// that fails it ([`ErrorOutcome::Failed`]): once that error is committed, the janitor may
    /// release the envelope. A batch retried by hand out of `FAILED` holds the position
    /// again, but its envelope may be gone from the log by then; the retry reads the copy set
    /// aside.
    ///
    /// A position recorded before tracker schema version 2, which did not name its log
    /// ([`WalPosition::node`](crate::WalPosition::node) empty), holds back every node's log.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for an empty node name;
    /// backend errors.
    fn oldest_unstored_wal_position(&self, node: &str) -> Result<Option<u64>>;

    /// The stored positions of `source`, by topic and partition.
    fn source_offsets(&self, source: &str) -> Result<Vec<SourceOffset>>;

    /// Deletes the records of batches `COMPLETED` before `completed_before` and returns how
    /// many it deleted (retention). Stored-file entries are kept, and so are remembered
    /// idempotency keys (they go by time only: [`forget_keys_before`](Self::forget_keys_before)).
    fn purge_completed(&self, completed_before: SystemTime) -> Result<u64>;

    /// Remembers idempotency keys: for each, the batch that holds the request's part and the
    /// host's receipt (its answer to the request). The first one remembered for a
    /// (tenant, key) wins: a key already remembered is left as it is (no error), so calling
    /// again after a crash is harmless. Within one call too, the first of a (tenant, key)
    /// wins. Times are kept to the microsecond. An empty slice does nothing.
    ///
    /// Keys are checked before anything is written; the host should have checked them (and
    /// refused the request) already.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidIdempotencyKey`](crate::Error::InvalidIdempotencyKey) for an empty key,
    /// one longer than [`RememberedKey::MAX_KEY_LEN`] bytes or not visible ASCII (`!` to
    /// `~`), or a receipt larger than [`RememberedKey::MAX_RECEIPT_LEN`]: none of the call's
    /// keys is remembered then. Backend errors.
    fn remember_keys(&self, keys: &[RememberedKey]) -> Result<()>;

    /// The key remembered for `tenant`, if any (whatever its age: purging is
    /// [`forget_keys_before`](Self::forget_keys_before)). `None` for a key never remembered,
    /// one forgotten since, a key another tenant remembered, and a key no call could remember
    /// (empty, too long, not visible ASCII: not an error here).
    ///
    /// # Errors
    ///
    /// Backend errors; [`Error::Corrupt`](crate::Error::Corrupt) for a row the tracker did not
    /// write.
    fn recall_key(&self, tenant: &Tenant, key: &str) -> Result<Option<RememberedKey>>;

    /// Forgets the keys remembered for requests taken before `before` (their
    /// [`at`](RememberedKey::at), strictly before, to the microsecond), of every tenant, and
    /// returns how many it forgot. The only way keys go: batches purged by
    /// [`purge_completed`](Self::purge_completed) leave theirs.
    ///
    /// # Errors
    ///
    /// Backend errors.
    fn forget_keys_before(&self, before: SystemTime) -> Result<u64>;
}

/// The async twin of [`Tracker`]: the same methods and meanings, awaiting the database
/// instead of blocking a runtime thread.
///
/// # Cancel safety
///
/// Dropping a future does not cancel its transaction, which runs to its end on the tracker's
/// side: the call either happened or not, as if it had been awaited.
///
/// # Trait objects
///
/// The methods return `impl Future` (return-position `impl Trait` in a trait), which keeps the
/// futures' `Send` bound in the contract and costs no allocation per call, but makes the trait
/// not dyn-compatible: there is no `dyn AsyncTracker`. A host that chooses its backend at run
/// time holds an `Arc<dyn DynAsyncTracker>` instead ([`DynAsyncTracker`]: the same methods
/// with boxed futures), which is an `AsyncTracker` itself.
pub trait AsyncTracker: Send + Sync {
    /// [`Tracker::register`].
    fn register(&self, batches: &[BatchMeta]) -> impl Future<Output = Result<Vec<Registration>>> + Send;
    /// [`Tracker::advance`].
    fn advance(&self, steps: &[Advance]) -> impl Future<Output = Result<Vec<Transition>>> + Send;
    /// [`Tracker::claim_ranges`].
    fn claim_ranges(&self, claims: &[RangeClaim]) -> impl Future<Output = Result<Vec<RangeOutcome>>> + Send;
    /// [`Tracker::record_error`].
    fn record_error(
        &self,
        batch: BatchId,
        stage: Stage,
        message: &str,
        at: SystemTime,
    ) -> impl Future<Output = Result<ErrorOutcome>> + Send;
    /// [`Tracker::record_error_by`].
    fn record_error_by(
        &self,
        batch: BatchId,
        stage: Stage,
        message: &str,
        at: SystemTime,
        worker: &str,
    ) -> impl Future<Output = Result<ErrorOutcome>> + Send;
    /// [`Tracker::claim`].
    fn claim(&self, request: &ClaimRequest) -> impl Future<Output = Result<Vec<BatchRecord>>> + Send;
    /// [`Tracker::batch`].
    fn batch(&self, batch: BatchId) -> impl Future<Output = Result<BatchRecord>> + Send;
    /// [`Tracker::list_batches`].
    fn list_batches(&self, query: &BatchQuery) -> impl Future<Output = Result<BatchPage>> + Send;
    /// [`Tracker::stage_counts`].
    fn stage_counts(&self, window: Window, tenant: Option<&Tenant>)
    -> impl Future<Output = Result<StageCounts>> + Send;
    /// [`Tracker::client_throughput`].
    fn client_throughput(&self, window: Window) -> impl Future<Output = Result<Vec<ClientThroughput>>> + Send;
    /// [`Tracker::oldest_unstored_wal_position`].
    fn oldest_unstored_wal_position(&self, node: &str) -> impl Future<Output = Result<Option<u64>>> + Send;
    /// [`Tracker::source_offsets`].
    fn source_offsets(&self, source: &str) -> impl Future<Output = Result<Vec<SourceOffset>>> + Send;
    /// [`Tracker::purge_completed`].
    fn purge_completed(&self, completed_before: SystemTime) -> impl Future<Output = Result<u64>> + Send;
    /// [`Tracker::remember_keys`].
    fn remember_keys(&self, keys: &[RememberedKey]) -> impl Future<Output = Result<()>> + Send;
    /// [`Tracker::recall_key`].
    fn recall_key(&self, tenant: &Tenant, key: &str) -> impl Future<Output = Result<Option<RememberedKey>>> + Send;
    /// [`Tracker::forget_keys_before`].
    fn forget_keys_before(&self, before: SystemTime) -> impl Future<Output = Result<u64>> + Send;
}

/// The dyn-compatible twin of [`AsyncTracker`], for a host that picks its backend at run time
/// and holds it as `Arc<dyn DynAsyncTracker>`: the same methods, each returning a boxed future.
///
/// Every [`AsyncTracker`] is one (a blanket implementation boxes its futures), and
/// `dyn DynAsyncTracker` and `Arc<dyn DynAsyncTracker>` are [`AsyncTracker`]s again, so code
/// written against `impl AsyncTracker` takes the trait object as it is. Call it through
/// [`AsyncTracker`]: import that trait and name this one by its path, since with both traits in
/// scope a method call is ambiguous.
///
/// ```
/// use std::sync::Arc;
/// use wit_batch::BatchId;
/// use wit_tracker::{AsyncTracker, Error, InMemoryTracker};
///
/// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
/// // Chosen at run time: SQLite, PostgreSQL or, here, memory.
/// let tracker: Arc<dyn wit_tracker::DynAsyncTracker> = Arc::new(InMemoryTracker::default());
/// let unknown = tracker.batch(BatchId::new()).await;
/// assert!(matches!(unknown, Err(Error::UnknownBatch { .. })));
/// # Ok::<_, Error>(())
/// # })?;
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
///
/// # Cancel safety
///
/// As [`AsyncTracker`]'s.
pub trait DynAsyncTracker: Send + Sync {
    /// [`AsyncTracker::register`].
    fn register<'a>(&'a self, batches: &'a [BatchMeta]) -> BoxFuture<'a, Result<Vec<Registration>>>;
    /// [`AsyncTracker::advance`].
    fn advance<'a>(&'a self, steps: &'a [Advance]) -> BoxFuture<'a, Result<Vec<Transition>>>;
    /// [`AsyncTracker::claim_ranges`].
    fn claim_ranges<'a>(&'a self, claims: &'a [RangeClaim]) -> BoxFuture<'a, Result<Vec<RangeOutcome>>>;
    /// [`AsyncTracker::record_error`].
    fn record_error<'a>(
        &'a self,
        batch: BatchId,
        stage: Stage,
        message: &'a str,
        at: SystemTime,
    ) -> BoxFuture<'a, Result<ErrorOutcome>>;
    /// [`AsyncTracker::record_error_by`].
    fn record_error_by<'a>(
        &'a self,
        batch: BatchId,
        stage: Stage,
        message: &'a str,
        at: SystemTime,
        worker: &'a str,
    ) -> BoxFuture<'a, Result<ErrorOutcome>>;
    /// [`AsyncTracker::claim`].
    fn claim<'a>(&'a self, request: &'a ClaimRequest) -> BoxFuture<'a, Result<Vec<BatchRecord>>>;
    /// [`AsyncTracker::batch`].
    fn batch<'a>(&'a self, batch: BatchId) -> BoxFuture<'a, Result<BatchRecord>>;
    /// [`AsyncTracker::list_batches`].
    fn list_batches<'a>(&'a self, query: &'a BatchQuery) -> BoxFuture<'a, Result<BatchPage>>;
    /// [`AsyncTracker::stage_counts`].
    fn stage_counts<'a>(&'a self, window: Window, tenant: Option<&'a Tenant>) -> BoxFuture<'a, Result<StageCounts>>;
    /// [`AsyncTracker::client_throughput`].
    fn client_throughput<'a>(&'a self, window: Window) -> BoxFuture<'a, Result<Vec<ClientThroughput>>>;
    /// [`AsyncTracker::oldest_unstored_wal_position`].
    fn oldest_unstored_wal_position<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<Option<u64>>>;
    /// [`AsyncTracker::source_offsets`].
    fn source_offsets<'a>(&'a self, source: &'a str) -> BoxFuture<'a, Result<Vec<SourceOffset>>>;
    /// [`AsyncTracker::purge_completed`].
    fn purge_completed<'a>(&'a self, completed_before: SystemTime) -> BoxFuture<'a, Result<u64>>;
    /// [`AsyncTracker::remember_keys`].
    fn remember_keys<'a>(&'a self, keys: &'a [RememberedKey]) -> BoxFuture<'a, Result<()>>;
    /// [`AsyncTracker::recall_key`].
    fn recall_key<'a>(&'a self, tenant: &'a Tenant, key: &'a str) -> BoxFuture<'a, Result<Option<RememberedKey>>>;
    /// [`AsyncTracker::forget_keys_before`].
    fn forget_keys_before<'a>(&'a self, before: SystemTime) -> BoxFuture<'a, Result<u64>>;
}

impl<T: AsyncTracker> DynAsyncTracker for T {
    fn register<'a>(&'a self, batches: &'a [BatchMeta]) -> BoxFuture<'a, Result<Vec<Registration>>> {
        Box::pin(AsyncTracker::register(self, batches))
    }
    fn advance<'a>(&'a self, steps: &'a [Advance]) -> BoxFuture<'a, Result<Vec<Transition>>> {
        Box::pin(AsyncTracker::advance(self, steps))
    }
    fn claim_ranges<'a>(&'a self, claims: &'a [RangeClaim]) -> BoxFuture<'a, Result<Vec<RangeOutcome>>> {
        Box::pin(AsyncTracker::claim_ranges(self, claims))
    }
    fn record_error<'a>(
        &'a self,
        batch: BatchId,
        stage: Stage,
        message: &'a str,
        at: SystemTime,
    ) -> BoxFuture<'a, Result<ErrorOutcome>> {
        Box::pin(AsyncTracker::record_error(self, batch, stage, message, at))
    }
    fn record_error_by<'a>(
        &'a self,
        batch: BatchId,
        stage: Stage,
        message: &'a str,
        at: SystemTime,
        worker: &'a str,
    ) -> BoxFuture<'a, Result<ErrorOutcome>> {
        Box::pin(AsyncTracker::record_error_by(self, batch, stage, message, at, worker))
    }
    fn claim<'a>(&'a self, request: &'a ClaimRequest) -> BoxFuture<'a, Result<Vec<BatchRecord>>> {
        Box::pin(AsyncTracker::claim(self, request))
    }
    fn batch<'a>(&'a self, batch: BatchId) -> BoxFuture<'a, Result<BatchRecord>> {
        Box::pin(AsyncTracker::batch(self, batch))
    }
    fn list_batches<'a>(&'a self, query: &'a BatchQuery) -> BoxFuture<'a, Result<BatchPage>> {
        Box::pin(AsyncTracker::list_batches(self, query))
    }
    fn stage_counts<'a>(&'a self, window: Window, tenant: Option<&'a Tenant>) -> BoxFuture<'a, Result<StageCounts>> {
        Box::pin(AsyncTracker::stage_counts(self, window, tenant))
    }
    fn client_throughput<'a>(&'a self, window: Window) -> BoxFuture<'a, Result<Vec<ClientThroughput>>> {
        Box::pin(AsyncTracker::client_throughput(self, window))
    }
    fn oldest_unstored_wal_position<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<Option<u64>>> {
        Box::pin(AsyncTracker::oldest_unstored_wal_position(self, node))
    }
    fn source_offsets<'a>(&'a self, source: &'a str) -> BoxFuture<'a, Result<Vec<SourceOffset>>> {
        Box::pin(AsyncTracker::source_offsets(self, source))
    }
    fn purge_completed<'a>(&'a self, completed_before: SystemTime) -> BoxFuture<'a, Result<u64>> {
        Box::pin(AsyncTracker::purge_completed(self, completed_before))
    }
    fn remember_keys<'a>(&'a self, keys: &'a [RememberedKey]) -> BoxFuture<'a, Result<()>> {
        Box::pin(AsyncTracker::remember_keys(self, keys))
    }
    fn recall_key<'a>(&'a self, tenant: &'a Tenant, key: &'a str) -> BoxFuture<'a, Result<Option<RememberedKey>>> {
        Box::pin(AsyncTracker::recall_key(self, tenant, key))
    }
    fn forget_keys_before<'a>(&'a self, before: SystemTime) -> BoxFuture<'a, Result<u64>> {
        Box::pin(AsyncTracker::forget_keys_before(self, before))
    }
}

// `async fn`s, not the boxed futures themselves: a boxed future lives as long as the shortest
// of the arguments' lifetimes, which the trait's `impl Future` cannot name.
impl AsyncTracker for dyn DynAsyncTracker {
    async fn register(&self, batches: &[BatchMeta]) -> Result<Vec<Registration>> {
        DynAsyncTracker::register(self, batches).await
    }
    async fn advance(&self, steps: &[Advance]) -> Result<Vec<Transition>> {
        DynAsyncTracker::advance(self, steps).await
    }
    async fn claim_ranges(&self, claims: &[RangeClaim]) -> Result<Vec<RangeOutcome>> {
        DynAsyncTracker::claim_ranges(self, claims).await
    }
    async fn record_error(&self, batch: BatchId, stage: Stage, message: &str, at: SystemTime) -> Result<ErrorOutcome> {
        DynAsyncTracker::record_error(self, batch, stage, message, at).await
    }
    async fn record_error_by(
        &self,
        batch: BatchId,
        stage: Stage,
        message: &str,
        at: SystemTime,
        worker: &str,
    ) -> Result<ErrorOutcome> {
        DynAsyncTracker::record_error_by(self, batch, stage, message, at, worker).await
    }
    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<BatchRecord>> {
        DynAsyncTracker::claim(self, request).await
    }
    async fn batch(&self, batch: BatchId) -> Result<BatchRecord> {
        DynAsyncTracker::batch(self, batch).await
    }
    async fn list_batches(&self, query: &BatchQuery) -> Result<BatchPage> {
        DynAsyncTracker::list_batches(self, query).await
    }
    async fn stage_counts(&self, window: Window, tenant: Option<&Tenant>) -> Result<StageCounts> {
        DynAsyncTracker::stage_counts(self, window, tenant).await
    }
    async fn client_throughput(&self, window: Window) -> Result<Vec<ClientThroughput>> {
        DynAsyncTracker::client_throughput(self, window).await
    }
    async fn oldest_unstored_wal_position(&self, node: &str) -> Result<Option<u64>> {
        DynAsyncTracker::oldest_unstored_wal_position(self, node).await
    }
    async fn source_offsets(&self, source: &str) -> Result<Vec<SourceOffset>> {
        DynAsyncTracker::source_offsets(self, source).await
    }
    async fn purge_completed(&self, completed_before: SystemTime) -> Result<u64> {
        DynAsyncTracker::purge_completed(self, completed_before).await
    }
    async fn remember_keys(&self, keys: &[RememberedKey]) -> Result<()> {
        DynAsyncTracker::remember_keys(self, keys).await
    }
    async fn recall_key(&self, tenant: &Tenant, key: &str) -> Result<Option<RememberedKey>> {
        DynAsyncTracker::recall_key(self, tenant, key).await
    }
    async fn forget_keys_before(&self, before: SystemTime) -> Result<u64> {
        DynAsyncTracker::forget_keys_before(self, before).await
    }
}

/// A shared tracker is a tracker: `Arc<SqliteTracker>`, `Arc<dyn DynAsyncTracker>`.
impl<T: AsyncTracker + ?Sized> AsyncTracker for Arc<T> {
    fn register(&self, batches: &[BatchMeta]) -> impl Future<Output = Result<Vec<Registration>>> + Send {
        T::register(&**self, batches)
    }
    fn advance(&self, steps: &[Advance]) -> impl Future<Output = Result<Vec<Transition>>> + Send {
        T::advance(&**self, steps)
    }
    fn claim_ranges(&self, claims: &[RangeClaim]) -> impl Future<Output = Result<Vec<RangeOutcome>>> + Send {
        T::claim_ranges(&**self, claims)
    }
    fn record_error(
        &self,
        batch: BatchId,
        stage: Stage,
        message: &str,
        at: SystemTime,
    ) -> impl Future<Output = Result<ErrorOutcome>> + Send {
        T::record_error(&**self, batch, stage, message, at)
    }
    fn record_error_by(
        &self,
        batch: BatchId,
        stage: Stage,
        message: &str,
        at: SystemTime,
        worker: &str,
    ) -> impl Future<Output = Result<ErrorOutcome>> + Send {
        T::record_error_by(&**self, batch, stage, message, at, worker)
    }
    fn claim(&self, request: &ClaimRequest) -> impl Future<Output = Result<Vec<BatchRecord>>> + Send {
        T::claim(&**self, request)
    }
    fn batch(&self, batch: BatchId) -> impl Future<Output = Result<BatchRecord>> + Send {
        T::batch(&**self, batch)
    }
    fn list_batches(&self, query: &BatchQuery) -> impl Future<Output = Result<BatchPage>> + Send {
        T::list_batches(&**self, query)
    }
    fn stage_counts(
        &self,
        window: Window,
        tenant: Option<&Tenant>,
    ) -> impl Future<Output = Result<StageCounts>> + Send {
        T::stage_counts(&**self, window, tenant)
    }
    fn client_throughput(&self, window: Window) -> impl Future<Output = Result<Vec<ClientThroughput>>> + Send {
        T::client_throughput(&**self, window)
    }
    fn oldest_unstored_wal_position(&self, node: &str) -> impl Future<Output = Result<Option<u64>>> + Send {
        T::oldest_unstored_wal_position(&**self, node)
    }
    fn source_offsets(&self, source: &str) -> impl Future<Output = Result<Vec<SourceOffset>>> + Send {
        T::source_offsets(&**self, source)
    }
    fn purge_completed(&self, completed_before: SystemTime) -> impl Future<Output = Result<u64>> + Send {
        T::purge_completed(&**self, completed_before)
    }
    fn remember_keys(&self, keys: &[RememberedKey]) -> impl Future<Output = Result<()>> + Send {
        T::remember_keys(&**self, keys)
    }
    fn recall_key(&self, tenant: &Tenant, key: &str) -> impl Future<Output = Result<Option<RememberedKey>>> + Send {
        T::recall_key(&**self, tenant, key)
    }
    fn forget_keys_before(&self, before: SystemTime) -> impl Future<Output = Result<u64>> + Send {
        T::forget_keys_before(&**self, before)
    }
}

/// One-batch conveniences for every [`Tracker`].
pub trait TrackerExt: Tracker {
    /// Registers one batch.
    ///
    /// # Errors
    ///
    /// As [`Tracker::register`].
    fn register_one(&self, meta: &BatchMeta) -> Result<Registration> {
        Ok(self.register(std::slice::from_ref(meta))?[0])
    }

    /// Moves one batch into `stage` at `at`.
    ///
    /// # Errors
    ///
    /// As [`Tracker::advance`].
    fn mark(&self, batch: BatchId, stage: Stage, at: SystemTime) -> Result<Transition> {
        Ok(self.advance(&[Advance::new(batch, stage, at)])?[0])
    }
}

impl<T: Tracker + ?Sized> TrackerExt for T {}

/// Implements [`AsyncTracker`] for a cheaply cloned [`Tracker`] by running each call through
/// `$run`, a function that takes a `FnOnce() -> R + Send + 'static` and returns a future of `R`.
macro_rules! async_from_sync {
    ($ty:ty, $run:path) => {
        impl $crate::AsyncTracker for $ty {
            async fn register(&self, batches: &[wit_batch::BatchMeta]) -> $crate::Result<Vec<$crate::Registration>> {
                let (this, batches) = (self.clone(), batches.to_vec());
                $run(move || $crate::Tracker::register(&this, &batches)).await
            }
            async fn advance(&self, steps: &[$crate::Advance]) -> $crate::Result<Vec<wit_batch::Transition>> {
                let (this, steps) = (self.clone(), steps.to_vec());
                $run(move || $crate::Tracker::advance(&this, &steps)).await
            }
            async fn claim_ranges(&self, claims: &[$crate::RangeClaim]) -> $crate::Result<Vec<$crate::RangeOutcome>> {
                if claims.is_empty() {
                    return Ok(Vec::new());
                }
                let (this, claims) = (self.clone(), claims.to_vec());
                $run(move || $crate::Tracker::claim_ranges(&this, &claims)).await
            }
            async fn record_error(
                &self,
                batch: wit_batch::BatchId,
                stage: wit_batch::Stage,
                message: &str,
                at: std::time::SystemTime,
            ) -> $crate::Result<$crate::ErrorOutcome> {
                let (this, message) = (self.clone(), message.to_owned());
                $run(move || $crate::Tracker::record_error(&this, batch, stage, &message, at)).await
            }
            async fn record_error_by(
                &self,
                batch: wit_batch::BatchId,
                stage: wit_batch::Stage,
                message: &str,
                at: std::time::SystemTime,
                worker: &str,
            ) -> $crate::Result<$crate::ErrorOutcome> {
                let (this, message, worker) = (self.clone(), message.to_owned(), worker.to_owned());
                $run(move || $crate::Tracker::record_error_by(&this, batch, stage, &message, at, &worker)).await
            }
            async fn claim(&self, request: &$crate::ClaimRequest) -> $crate::Result<Vec<$crate::BatchRecord>> {
                let (this, request) = (self.clone(), request.clone());
                $run(move || $crate::Tracker::claim(&this, &request)).await
            }
            async fn batch(&self, batch: wit_batch::BatchId) -> $crate::Result<$crate::BatchRecord> {
                let this = self.clone();
                $run(move || $crate::Tracker::batch(&this, batch)).await
            }
            async fn list_batches(&self, query: &$crate::BatchQuery) -> $crate::Result<$crate::BatchPage> {
                let (this, query) = (self.clone(), query.clone());
                $run(move || $crate::Tracker::list_batches(&this, &query)).await
            }
            async fn stage_counts(
                &self,
                window: $crate::Window,
                tenant: Option<&wit_batch::Tenant>,
            ) -> $crate::Result<$crate::StageCounts> {
                let (this, tenant) = (self.clone(), tenant.cloned());
                $run(move || $crate::Tracker::stage_counts(&this, window, tenant.as_ref())).await
            }
            async fn client_throughput(&self, window: $crate::Window) -> $crate::Result<Vec<$crate::ClientThroughput>> {
                let this = self.clone();
                $run(move || $crate::Tracker::client_throughput(&this, window)).await
            }
            async fn oldest_unstored_wal_position(&self, node: &str) -> $crate::Result<Option<u64>> {
                let (this, node) = (self.clone(), node.to_owned());
                $run(move || $crate::Tracker::oldest_unstored_wal_position(&this, &node)).await
            }
            async fn source_offsets(&self, source: &str) -> $crate::Result<Vec<$crate::SourceOffset>> {
                let (this, source) = (self.clone(), source.to_owned());
                $run(move || $crate::Tracker::source_offsets(&this, &source)).await
            }
            async fn purge_completed(&self, completed_before: std::time::SystemTime) -> $crate::Result<u64> {
                let this = self.clone();
                $run(move || $crate::Tracker::purge_completed(&this, completed_before)).await
            }
            async fn remember_keys(&self, keys: &[$crate::RememberedKey]) -> $crate::Result<()> {
                if keys.is_empty() {
                    return Ok(());
                }
                let (this, keys) = (self.clone(), keys.to_vec());
                $run(move || $crate::Tracker::remember_keys(&this, &keys)).await
            }
            async fn recall_key(
                &self,
                tenant: &wit_batch::Tenant,
                key: &str,
            ) -> $crate::Result<Option<$crate::RememberedKey>> {
                let (this, tenant, key) = (self.clone(), tenant.clone(), key.to_owned());
                $run(move || $crate::Tracker::recall_key(&this, &tenant, &key)).await
            }
            async fn forget_keys_before(&self, before: std::time::SystemTime) -> $crate::Result<u64> {
                let this = self.clone();
                $run(move || $crate::Tracker::forget_keys_before(&this, before)).await
            }
        }
    };
}
pub(crate) use async_from_sync;
