//! A tracker wrapped with faults: down (every call fails as a database outage would), or
//! killing the process around its Nth file publish (the crash test's child).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::SystemTime;

use wit_batch::{BatchId, BatchMeta, Signal, Stage, Tenant, Transition};
use wit_pipeline::TrackerCatalog;
use wit_store::{FileCatalog, FileIndex, StoredFile, TimeRange};
use wit_tracker::{
    Advance, BatchPage, BatchQuery, BatchRecord, ClaimRequest, ClientThroughput, ErrorOutcome, RangeClaim,
    RangeOutcome, Registration, SourceOffset, StageCounts, Tracker, Window,
};

/// Where the child aborts the process (as SIGKILL would stop it: no destructor, no flush).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AbortAt {
    /// Before the Nth publish reaches the catalog: the file is linked under its final path,
    /// not yet catalogued.
    BeforePublish(u64),
    /// After the Nth publish committed: catalogued and `STORED`, still in staging.
    AfterPublish(u64),
    /// After the janitor's Nth look-up of the truncation point, before it truncates.
    BeforeTruncate(u64),
}

pub(crate) struct Faulty {
    inner: Arc<dyn TrackerCatalog>,
    down: AtomicBool,
    refuse_index: AtomicBool,
    refuse_claims: AtomicBool,
    abort: Option<AbortAt>,
    publishes: AtomicU64,
    floors: AtomicU64,
}

impl Faulty {
    pub(crate) fn new(inner: Arc<dyn TrackerCatalog>, abort: Option<AbortAt>) -> Self {
        Faulty {
            inner,
            down: AtomicBool::new(false),
            refuse_index: AtomicBool::new(false),
            refuse_claims: AtomicBool::new(false),
            abort,
            publishes: AtomicU64::new(0),
            floors: AtomicU64::new(0),
        }
    }

    /// Every call fails (as with the database unreachable) until `set_down(false)`.
    pub(crate) fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// `record_index` fails (as for an index the catalog will not take) until
    /// `set_refuse_index(false)`.
    pub(crate) fn set_refuse_index(&self, refuse: bool) {
        self.refuse_index.store(refuse, Ordering::SeqCst);
    }

    /// `claim_ranges` fails (as with the database unreachable) until `set_refuse_claims(false)`:
    /// a source's batches reach the WAL and are never claimed.
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub(crate) fn set_refuse_claims(&self, refuse: bool) {
        self.refuse_claims.store(refuse, Ordering::SeqCst);
    }

    fn check(&self, operation: &'static str) -> wit_tracker::Result<()> {
        if self.down.load(Ordering::SeqCst) {
            return Err(wit_tracker::Error::Unavailable {
                backend: "faulty",
                operation,
                source: "the tracker is down (test)".into(),
            });
        }
        Ok(())
    }

    fn check_catalog(&self, operation: &'static str) -> wit_store::Result<()> {
        self.check(operation)
            .map_err(|e| wit_store::Error::Catalog { source: Box::new(e) })
    }
}

fn abort_now(what: &str) -> ! {
    println!("ABORT {what}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::process::abort()
}

impl Tracker for Faulty {
    fn register(&self, batches: &[BatchMeta]) -> wit_tracker::Result<Vec<Registration>> {
        self.check("register")?;
        self.inner.register(batches)
    }
    fn advance(&self, steps: &[Advance]) -> wit_tracker::Result<Vec<Transition>> {
        self.check("advance")?;
        self.inner.advance(steps)
    }
    fn record_error(
        &self,
        batch: BatchId,
        stage: Stage,
        message: &str,
        at: SystemTime,
    ) -> wit_tracker::Result<ErrorOutcome> {
        self.check("record_error")?;
        self.inner.record_error(batch, stage, message, at)
    }
    fn record_error_by(
        &self,
        batch: BatchId,
        stage: Stage,
        message: &str,
        at: SystemTime,
        worker: &str,
    ) -> wit_tracker::Result<ErrorOutcome> {
        self.check("record_error")?;
        self.inner.record_error_by(batch, stage, message, at, worker)
    }
    fn claim(&self, request: &ClaimRequest) -> wit_tracker::Result<Vec<BatchRecord>> {
        self.check("claim")?;
        self.inner.claim(request)
    }
    fn claim_ranges(&self, claims: &[RangeClaim]) -> wit_tracker::Result<Vec<RangeOutcome>> {
        self.check("claim_ranges")?;
        if self.refuse_claims.load(Ordering::SeqCst) {
            return Err(wit_tracker::Error::Unavailable {
                backend: "faulty",
                operation: "claim_ranges",
                source: "claims are refused (test)".into(),
            });
        }
        self.inner.claim_ranges(claims)
    }
    fn batch(&self, batch: BatchId) -> wit_tracker::Result<BatchRecord> {
        self.check("batch")?;
        self.inner.batch(batch)
    }
    fn list_batches(&self, query: &BatchQuery) -> wit_tracker::Result<BatchPage> {
        self.check("list_batches")?;
        self.inner.list_batches(query)
    }
    fn stage_counts(&self, window: Window, tenant: Option<&Tenant>) -> wit_tracker::Result<StageCounts> {
        self.check("stage_counts")?;
        self.inner.stage_counts(window, tenant)
    }
    fn client_throughput(&self, window: Window) -> wit_tracker::Result<Vec<ClientThroughput>> {
        self.check("client_throughput")?;
        self.inner.client_throughput(window)
    }
    fn oldest_unstored_wal_position(&self, node: &str) -> wit_tracker::Result<Option<u64>> {
        self.check("oldest_unstored_wal_position")?;
        let floor = self.inner.oldest_unstored_wal_position(node);
        let n = self.floors.fetch_add(1, Ordering::SeqCst) + 1;
        if self.abort == Some(AbortAt::BeforeTruncate(n)) {
            abort_now("before truncate");
        }
        floor
    }
    fn source_offsets(&self, source: &str) -> wit_tracker::Result<Vec<SourceOffset>> {
        self.check("source_offsets")?;
        self.inner.source_offsets(source)
    }
    fn purge_completed(&self, completed_before: SystemTime) -> wit_tracker::Result<u64> {
        self.check("purge_completed")?;
        self.inner.purge_completed(completed_before)
    }
    fn remember_keys(&self, keys: &[wit_tracker::RememberedKey]) -> wit_tracker::Result<()> {
        self.check("remember_keys")?;
        self.inner.remember_keys(keys)
    }
    fn recall_key(&self, tenant: &Tenant, key: &str) -> wit_tracker::Result<Option<wit_tracker::RememberedKey>> {
        self.check("recall_key")?;
        self.inner.recall_key(tenant, key)
    }
    fn forget_keys_before(&self, before: SystemTime) -> wit_tracker::Result<u64> {
        self.check("forget_keys_before")?;
        self.inner.forget_keys_before(before)
    }
}

impl FileCatalog for Faulty {
    fn publish(&self, files: &[StoredFile]) -> wit_store::Result<()> {
        self.check_catalog("publish")?;
        let n = self.publishes.fetch_add(1, Ordering::SeqCst) + 1;
        if self.abort == Some(AbortAt::BeforePublish(n)) {
            abort_now("before publish");
        }
        self.inner.publish(files)?;
        if self.abort == Some(AbortAt::AfterPublish(n)) {
            abort_now("after publish");
        }
        Ok(())
    }
    fn list(&self, tenant: &Tenant, signal: Signal, time: Option<TimeRange>) -> wit_store::Result<Vec<StoredFile>> {
        self.check_catalog("list")?;
        self.inner.list(tenant, signal, time)
    }
    fn replace(&self, old: &[String], new: &[StoredFile], delete_after: SystemTime) -> wit_store::Result<()> {
        self.check_catalog("replace")?;
        self.inner.replace(old, new, delete_after)
    }
    fn retire(&self, paths: &[String], delete_after: SystemTime) -> wit_store::Result<()> {
        self.check_catalog("retire")?;
        self.inner.retire(paths, delete_after)
    }
    fn deletable(&self, now: SystemTime) -> wit_store::Result<Vec<StoredFile>> {
        self.check_catalog("deletable")?;
        self.inner.deletable(now)
    }
    fn forget(&self, paths: &[String]) -> wit_store::Result<u64> {
        self.check_catalog("forget")?;
        self.inner.forget(paths)
    }
    fn files_holding(&self, batch: BatchId) -> wit_store::Result<Vec<StoredFile>> {
        self.check_catalog("files_holding")?;
        self.inner.files_holding(batch)
    }
    fn record_index(&self, file: &str, index: &FileIndex) -> wit_store::Result<()> {
        self.check_catalog("record_index")?;
        if self.refuse_index.load(Ordering::SeqCst) {
            return Err(wit_store::Error::Catalog {
                source: "recording indexes is refused (test)".into(),
            });
        }
        self.inner.record_index(file, index)
    }
    fn unindexed(&self, limit: usize) -> wit_store::Result<Vec<StoredFile>> {
        self.check_catalog("unindexed")?;
        self.inner.unindexed(limit)
    }
}
