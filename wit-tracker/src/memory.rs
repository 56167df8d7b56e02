//! The in-memory tracker: the rules of every backend, held in a map.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use wit_batch::{BatchId, BatchMeta, Signal, Stage, Tenant, Transition};
use wit_store::{FileCatalog, FileIndex, InMemoryFileCatalog, StoredFile, TimeRange};

use crate::model::{
    Advance, BatchPage, BatchQuery, BatchRecord, ClaimRequest, ClientThroughput, Cursor, ErrorOutcome, RangeClaim,
    RangeOutcome, Registration, RememberedKey, SourceOffset, StageCounts, TrackerConfig, Window,
};
use crate::{Error, Result, Tracker, plan};

/// A [`Tracker`] and [`FileCatalog`] held in memory, for tests and for hosts that do not need
/// the records to outlive the process. Clones share the same state.
///
/// ```
/// use std::time::SystemTime;
/// use wit_batch::{BatchId, BatchMeta, Signal, SourceKind, Stage, Tenant, Transition};
/// use wit_tracker::{InMemoryTracker, Tracker, TrackerExt};
///
/// let tracker = InMemoryTracker::default();
/// let id = BatchId::new();
/// tracker.register_one(&BatchMeta {
///     id,
///     tenant: Tenant::try_new("acme")?,
///     signal: Signal::Logs,
///     source: SourceKind::Http,
///     message_count: 3,
///     byte_size: 900,
///     first_offset: None,
///     last_offset: None,
///     topics: vec![],
///     partition: None,
///     created_at: id.created_at(),
/// })?;
/// let now = SystemTime::now();
/// assert_eq!(tracker.mark(id, Stage::WalWritten, now)?, Transition::Applied);
/// assert_eq!(tracker.mark(id, Stage::WalWritten, now)?, Transition::AlreadyApplied);
/// assert!(tracker.mark(id, Stage::Stored, now).is_err()); // INGESTED comes first
/// assert_eq!(tracker.batch(id)?.stage, Stage::WalWritten);
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct InMemoryTracker {
    inner: Arc<Mutex<State>>,
    config: TrackerConfig,
}

#[derive(Debug, Default)]
struct State {
    batches: HashMap<BatchId, BatchRecord>,
    offsets: BTreeMap<(String, String, i32), i64>,
    files: InMemoryFileCatalog,
    /// Remembered idempotency keys by (tenant, key).
    keys: HashMap<(Tenant, String), RememberedKey>,
}

impl InMemoryTracker {
    /// An empty tracker with these settings.
    pub fn new(config: TrackerConfig) -> Self {
        InMemoryTracker {
            inner: Arc::default(),
            config,
        }
    }
}

impl InMemoryTracker {
    fn record_error_as(
        &self,
        batch: BatchId,
        stage: Stage,
        message: &str,
        at: SystemTime,
        worker: Option<&str>,
    ) -> Result<ErrorOutcome> {
        let mut state = self.inner.lock();
        let rec = state.batches.get(&batch).ok_or(Error::UnknownBatch { batch })?;
        let mut rec = rec.clone();
        let outcome = plan::apply_error(&mut rec, stage, message, at, worker, &self.config.retry)?;
        state.batches.insert(batch, rec);
        Ok(outcome)
    }
}

fn sorted_by_creation(mut records: Vec<BatchRecord>, limit: usize) -> Vec<BatchRecord> {
    records.sort_by_key(|r| (r.meta.created_at, r.meta.id));
    records.truncate(limit);
    records
}

impl Tracker for InMemoryTracker {
    fn register(&self, batches: &[BatchMeta]) -> Result<Vec<Registration>> {
        batches.iter().try_for_each(plan::check_meta)?;
        let mut state = self.inner.lock();
        Ok(batches
            .iter()
            .map(|meta| match state.batches.entry(meta.id) {
                std::collections::hash_map::Entry::Occupied(_) => Registration::AlreadyRegistered,
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(BatchRecord::new(meta.clone()));
                    Registration::Registered
                }
            })
            .collect())
    }

    fn advance(&self, steps: &[Advance]) -> Result<Vec<Transition>> {
        plan::check_steps(steps)?;
        let mut state = self.inner.lock();
        // Work on copies, so that an error leaves everything as it was.
        let mut records = HashMap::new();
        for id in plan::step_ids(steps) {
            if let Some(rec) = state.batches.get(&id) {
                records.insert(id, rec.clone());
            }
        }
        let (outcomes, changed) = plan::advance_all(&mut records, steps)?;
        for id in changed {
            if let Some(rec) = records.remove(&id) {
                state.batches.insert(id, rec);
            }
        }
        for offset in plan::merged_offsets(steps) {
            let slot = state
                .offsets
                .entry((offset.source, offset.topic, offset.partition))
                .or_insert(offset.offset);
            *slot = (*slot).max(offset.offset);
        }
        Ok(outcomes)
    }

    fn claim_ranges(&self, claims: &[RangeClaim]) -> Result<Vec<RangeOutcome>> {
        let records = plan::range_records(claims)?;
        let mut state = self.inner.lock();
        let mut outcomes = Vec::with_capacity(claims.len());
        for (claim, rec) in claims.iter().zip(records) {
            if let Some(held) = state.batches.get(&claim.meta.id) {
                outcomes.push(RangeOutcome::AlreadyRegistered { stage: held.stage });
                continue;
            }
            let key = (claim.source.clone(), claim.topic.clone(), claim.partition);
            let outcome = plan::range_outcome(claim, state.offsets.get(&key).copied());
            if outcome == RangeOutcome::Claimed {
                state.batches.insert(claim.meta.id, rec);
                state.offsets.insert(key, claim.to);
            }
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    fn record_error(&self, batch: BatchId, stage: Stage, message: &str, at: SystemTime) -> Result<ErrorOutcome> {
        self.record_error_as(batch, stage, message, at, None)
    }

    fn record_error_by(
        &self,
        batch: BatchId,
        stage: Stage,
        message: &str,
        at: SystemTime,
        worker: &str,
    ) -> Result<ErrorOutcome> {
        self.record_error_as(batch, stage, message, at, Some(worker))
    }

    fn claim(&self, request: &ClaimRequest) -> Result<Vec<BatchRecord>> {
        let sources = plan::claim_sources(request)?;
        let now = plan::micros(request.now);
        let lease = plan::lease_for(request);
        let mut state = self.inner.lock();
        let ready: Vec<BatchRecord> = state
            .batches
            .values()
            .filter(|rec| plan::claimable(rec, &sources, now))
            .cloned()
            .collect();
        let mut claimed = sorted_by_creation(ready, request.max);
        for rec in &mut claimed {
            rec.lease = Some(lease.clone());
            state.batches.insert(rec.meta.id, rec.clone());
        }
        Ok(claimed)
    }

    fn batch(&self, batch: BatchId) -> Result<BatchRecord> {
        self.inner
            .lock()
            .batches
            .get(&batch)
            .cloned()
            .ok_or(Error::UnknownBatch { batch })
    }

    fn list_batches(&self, query: &BatchQuery) -> Result<BatchPage> {
        plan::check_query(query)?;
        let state = self.inner.lock();
        let mut rows: Vec<BatchRecord> = state
            .batches
            .values()
            .filter(|r| query.selects(r) && query.after.is_none_or(|c| Cursor::of(r) > c))
            .cloned()
            .collect();
        rows.sort_by_key(|r| (r.meta.created_at, r.meta.id));
        rows.truncate(query.limit.saturating_add(1));
        Ok(BatchPage::of_rows(rows, query.limit))
    }

    fn stage_counts(&self, window: Window, tenant: Option<&Tenant>) -> Result<StageCounts> {
        let mut counts = StageCounts::default();
        for rec in self.inner.lock().batches.values() {
            if window.from <= rec.meta.created_at
                && rec.meta.created_at < window.to
                && tenant.is_none_or(|t| rec.meta.tenant == *t)
            {
                counts.add(rec.stage, 1);
            }
        }
        Ok(counts)
    }

    fn client_throughput(&self, window: Window) -> Result<Vec<ClientThroughput>> {
        let mut per_client: BTreeMap<Tenant, (u64, u64, u64)> = BTreeMap::new();
        for rec in self.inner.lock().batches.values() {
            if window.from <= rec.meta.created_at && rec.meta.created_at < window.to {
                let entry = per_client.entry(rec.meta.tenant.clone()).or_default();
                entry.0 += 1;
                entry.1 += rec.meta.message_count;
                entry.2 += rec.meta.byte_size;
            }
        }
        Ok(plan::throughput_rows(
            per_client.into_iter().map(|(t, (b, m, y))| (t, b, m, y)),
            &window,
        ))
    }

    fn oldest_unstored_wal_position(&self, node: &str) -> Result<Option<u64>> {
        plan::check_node(node)?;
        Ok(self
            .inner
            .lock()
            .batches
            .values()
            .filter_map(|r| plan::holds_wal(r, node))
            .min())
    }

    fn source_offsets(&self, source: &str) -> Result<Vec<SourceOffset>> {
        Ok(self
            .inner
            .lock()
            .offsets
            .iter()
            .filter(|((s, _, _), _)| s == source)
            .map(|((s, topic, partition), offset)| SourceOffset::new(s.clone(), topic.clone(), *partition, *offset))
            .collect())
    }

    fn purge_completed(&self, completed_before: SystemTime) -> Result<u64> {
        let mut state = self.inner.lock();
        let before = state.batches.len();
        state.batches.retain(|_, r| {
            !(r.stage == Stage::Completed
                && r.completed_at
                    .get(Stage::Completed)
                    .is_some_and(|t| t < completed_before))
        });
        Ok((before - state.batches.len()) as u64)
    }

    fn remember_keys(&self, keys: &[RememberedKey]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        plan::check_keys(keys)?;
        let mut state = self.inner.lock();
        for key in plan::keys_to_remember(keys) {
            state.keys.entry((key.tenant.clone(), key.key.clone())).or_insert(key);
        }
        Ok(())
    }

    fn recall_key(&self, tenant: &Tenant, key: &str) -> Result<Option<RememberedKey>> {
        if !plan::rememberable(key) {
            return Ok(None);
        }
        Ok(self.inner.lock().keys.get(&(tenant.clone(), key.to_owned())).cloned())
    }

    fn forget_keys_before(&self, before: SystemTime) -> Result<u64> {
        // Stored times are whole microseconds; so is the bound, as the SQL backends have it.
        let before = plan::micros(before);
        let mut state = self.inner.lock();
        let n = state.keys.len();
        state.keys.retain(|_, k| k.at >= before);
        Ok((n - state.keys.len()) as u64)
    }
}

impl State {
    /// Copies of the records of `ids` that exist (work is done on copies, so that an error
    /// leaves everything as it was).
    fn copies(&self, ids: &[BatchId]) -> HashMap<BatchId, BatchRecord> {
        ids.iter()
            .filter_map(|id| self.batches.get(id).map(|rec| (*id, rec.clone())))
            .collect()
    }

    /// Writes back the records of `changed`.
    fn write_back(&mut self, mut records: HashMap<BatchId, BatchRecord>, changed: Vec<BatchId>) {
        for id in changed {
            if let Some(rec) = records.remove(&id) {
                self.batches.insert(id, rec);
            }
        }
    }
}

impl FileCatalog for InMemoryTracker {
    fn publish(&self, files: &[StoredFile]) -> wit_store::Result<()> {
        let mut state = self.inner.lock();
        let new = plan::files_to_publish(files, |path| Ok(state.files.get(path)))?;
        let ids = plan::file_batch_ids(&new);
        if let Some(batch) = ids.iter().find(|id| !state.batches.contains_key(id)) {
            return Err(Error::UnknownBatch { batch: *batch }.into());
        }
        let indexed = plan::indexed_batch_ids(files);
        let mut records = state.copies(&plan::merged_ids(ids.clone(), indexed.clone()));
        let now = SystemTime::now();
        let stored = plan::store_all(&mut records, &ids, now)?;
        let changed = plan::merged_ids(stored, plan::index_all(&mut records, &indexed, now)?);
        state.files.publish(&new)?;
        state.write_back(records, changed);
        Ok(())
    }

    fn list(&self, tenant: &Tenant, signal: Signal, time: Option<TimeRange>) -> wit_store::Result<Vec<StoredFile>> {
        self.inner.lock().files.list(tenant, signal, time)
    }

    fn replace(&self, old: &[String], new: &[StoredFile], delete_after: SystemTime) -> wit_store::Result<()> {
        let mut state = self.inner.lock();
        let indexed = plan::indexed_batch_ids(new);
        let mut records = state.copies(&indexed);
        let changed = plan::index_all(&mut records, &indexed, SystemTime::now())?;
        state.files.replace(old, new, delete_after)?;
        state.write_back(records, changed);
        Ok(())
    }

    fn retire(&self, paths: &[String], delete_after: SystemTime) -> wit_store::Result<()> {
        self.inner.lock().files.retire(paths, delete_after)
    }

    fn files_holding(&self, batch: BatchId) -> wit_store::Result<Vec<StoredFile>> {
        self.inner.lock().files.files_holding(batch)
    }

    fn deletable(&self, now: SystemTime) -> wit_store::Result<Vec<StoredFile>> {
        self.inner.lock().files.deletable(now)
    }

    fn forget(&self, paths: &[String]) -> wit_store::Result<u64> {
        self.inner.lock().files.forget(paths)
    }

    fn record_index(&self, file: &str, index: &FileIndex) -> wit_store::Result<()> {
        let mut state = self.inner.lock();
        let ids = state.files.get(file).map(|f| f.batch_ids).unwrap_or_default();
        let mut records = state.copies(&ids);
        let changed = plan::index_all(&mut records, &ids, SystemTime::now())?;
        state.files.record_index(file, index)?;
        state.write_back(records, changed);
        Ok(())
    }

    fn unindexed(&self, limit: usize) -> wit_store::Result<Vec<StoredFile>> {
        self.inner.lock().files.unindexed(limit)
    }
}

/// Runs a call at once: nothing in memory waits.
fn run_now<R>(f: impl FnOnce() -> R + Send + 'static) -> impl Future<Output = R> + Send
where
    R: Send + 'static,
{
    std::future::ready(f())
}

crate::api::async_from_sync!(InMemoryTracker, run_now);
