//! The janitor: truncates the WAL behind what is stored, marks batches `COMPLETED`, and runs
//! the store's maintenance (compaction, retention, deletion after the grace period).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use wit_batch::Stage;
use wit_store::{FileCatalog, Maintenance};
use wit_tracker::Advance;
use wit_wal::Lsn;

use crate::pipeline::Shared;
use crate::{Error, Result};

/// How often the tracker's idempotency keys older than the window are forgotten.
const FORGET_INTERVAL: Duration = Duration::from_secs(60);

pub(crate) fn run(shared: &Shared) {
    let mut next = Instant::now() + shared.config.janitor_interval;
    let mut next_forget = Instant::now();
    while !shared.stop.load(Ordering::Acquire) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep((next - now).min(Duration::from_millis(20)));
            continue;
        }
        next = now + shared.config.janitor_interval;
        if let Err(e) = pass(shared) {
            shared.note_error(&e);
        }
        if now >= next_forget {
            next_forget = now + FORGET_INTERVAL;
            if let Err(e) = forget_keys(shared, SystemTime::now()) {
                shared.note_error(&e);
            }
        }
    }
}

/// Forgets the idempotency keys taken before the window (as of `now`).
pub(crate) fn forget_keys(shared: &Shared, now: SystemTime) -> Result<u64> {
    let before = now
        .checked_sub(shared.config.idempotency_window)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    shared
        .tracker
        .forget_keys_before(before)
        .map_err(Error::tracker("forget idempotency keys"))
}

/// One pass. The WAL is truncated only below both the processor's safe point (every batch
/// read below it is stored or kept as failed, and nothing below it is unread) and the
/// tracker's oldest unstored position of this node, both taken **before** truncating.
pub(crate) fn pass(shared: &Shared) -> Result<()> {
    let safe = shared.safe_lsn.load(Ordering::Acquire);
    let node = shared.config.node.as_str();
    let floor = shared
        .tracker
        .oldest_unstored_wal_position(node)
        .map_err(Error::tracker("find the oldest unstored batch"))?;
    let point = floor.map_or(safe, |f| f.min(safe));
    shared.wal.truncate_before(Lsn(point)).map_err(Error::wal("truncate"))?;

    // Keys remembered in the tracker whose parts are settled leave memory.
    let held = shared.keys.evict_settled(shared.indexing.is_some());
    shared.status.lock().idempotency_keys = held as u64;

    // Batches whose WAL records are released are complete.
    let stats = shared.wal.stats();
    let first = stats.first_lsn.unwrap_or(stats.next_lsn).0;
    let done: Vec<_> = {
        let mut completable = shared.completable.lock();
        let (done, mut keep): (Vec<_>, Vec<_>) = std::mem::take(&mut *completable)
            .into_iter()
            .partition(|(lsn, _)| *lsn < first);
        // With indexing on, a batch is complete once indexed too.
        let done = match &shared.indexing {
            None => done,
            Some(indexing) => {
                let mut indexed = indexing.indexed.lock();
                let (ready, waiting): (Vec<_>, Vec<_>) = done.into_iter().partition(|(_, id)| indexed.remove(id));
                keep.extend(waiting);
                ready
            }
        };
        *completable = keep;
        done
    };
    if !done.is_empty() {
        let now = SystemTime::now();
        let steps: Vec<Advance> = done
            .iter()
            .map(|(_, id)| Advance::new(*id, Stage::Completed, now))
            .collect();
        if shared.tracker.advance(&steps).is_err() {
            // One batch the tracker will not complete (retried by hand, say) must not hold
            // back the others.
            for step in steps {
                let _ = shared.tracker.advance(std::slice::from_ref(&step));
            }
        }
    }

    let catalog: std::sync::Arc<dyn FileCatalog> = shared.tracker.clone();
    let mut maintenance = Maintenance::new(shared.destination.clone(), catalog, shared.config.sink.clone())
        .with_grace(shared.config.grace);
    if shared.indexing.is_some() {
        maintenance =
            maintenance.with_indexer(std::sync::Arc::new(wit_index::Indexer::new(shared.destination.clone())));
    }
    let now = SystemTime::now();
    let seen: Vec<_> = shared.seen.lock().iter().cloned().collect();
    if let Some(retention) = shared.config.retention {
        let mut tenants: Vec<_> = seen.iter().map(|(t, _)| t.clone()).collect();
        tenants.sort();
        tenants.dedup();
        for tenant in tenants {
            maintenance
                .apply_retention(&tenant, retention, now)
                .map_err(Error::store("apply retention"))?;
        }
    }
    if let Some(target) = shared.config.compaction_target_bytes {
        for (tenant, signal) in &seen {
            maintenance
                .compact(tenant, *signal, target, now)
                .map_err(Error::store("compact"))?;
        }
    }
    maintenance
        .delete_retired(now)
        .map_err(Error::store("delete retired files"))?;
    Ok(())
}
