//! The tracker contract: [`Tracker`] (blocking), [`AsyncTracker`] (its async twin) and
//! [`TrackerExt`] (one-batch conveniences over `Tracker`).

use std::future::Future;
use std::time::SystemTime;

use wit_batch::{BatchId, BatchMeta, Stage, Tenant, Transition};

use crate::Result;
use crate::model::{
    Advance, BatchRecord, ClaimRequest, ClientThroughput, ErrorOutcome, Registration, RememberedKey, SourceOffset,
    StageCounts, Window,
};

/// Follows batches through their lifecycle. Every method is one transaction: it applies
/// completely or not at all. Times are the caller's, kept to the microsecond.
///
/// Implemented by [`InMemoryTracker`](crate::InMemoryTracker),
/// [`SqliteTracker`](crate::SqliteTracker) and [`PostgresTracker`](crate::PostgresTracker),
/// which also implement [`FileCatalog`](wit_store::FileCatalog) (publishing a file marks its
/// batches `STORED` in the same transaction) and [`AsyncTracker`]. One conformance suite runs
/// against all three.
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

    /// Batches created before `created_before` that are neither `COMPLETED` nor `FAILED`:
    /// stuck ones. Oldest first, at most `limit`; only `tenant`'s when given.
    fn stuck(&self, created_before: SystemTime, limit: usize, tenant: Option<&Tenant>) -> Result<Vec<BatchRecord>>;

    /// `FAILED` batches, oldest first, at most `limit`; only `tenant`'s when given.
    fn failed(&self, limit: usize, tenant: Option<&Tenant>) -> Result<Vec<BatchRecord>>;

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
pub trait AsyncTracker: Send + Sync {
    /// [`Tracker::register`].
    fn register(&self, batches: &[BatchMeta]) -> impl Future<Output = Result<Vec<Registration>>> + Send;
    /// [`Tracker::advance`].
    fn advance(&self, steps: &[Advance]) -> impl Future<Output = Result<Vec<Transition>>> + Send;
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
    /// [`Tracker::stuck`].
    fn stuck(
        &self,
        created_before: SystemTime,
        limit: usize,
        tenant: Option<&Tenant>,
    ) -> impl Future<Output = Result<Vec<BatchRecord>>> + Send;
    /// [`Tracker::failed`].
    fn failed(&self, limit: usize, tenant: Option<&Tenant>) -> impl Future<Output = Result<Vec<BatchRecord>>> + Send;
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
            async fn stuck(
                &self,
                created_before: std::time::SystemTime,
                limit: usize,
                tenant: Option<&wit_batch::Tenant>,
            ) -> $crate::Result<Vec<$crate::BatchRecord>> {
                let (this, tenant) = (self.clone(), tenant.cloned());
                $run(move || $crate::Tracker::stuck(&this, created_before, limit, tenant.as_ref())).await
            }
            async fn failed(
                &self,
                limit: usize,
                tenant: Option<&wit_batch::Tenant>,
            ) -> $crate::Result<Vec<$crate::BatchRecord>> {
                let (this, tenant) = (self.clone(), tenant.cloned());
                $run(move || $crate::Tracker::failed(&this, limit, tenant.as_ref())).await
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
