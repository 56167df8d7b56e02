//! The indexing thread: builds the full-text index of each published file, publishes the
//! blob beside it and records it in the catalog (which marks the file's batches `INDEXED`),
//! then resolves the `Indexed` acknowledgments of those batches.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use parking_lot::{Condvar, Mutex};
use wit_batch::BatchId;
use wit_index::Indexer;
use wit_store::{FileCatalog, StoredFile};

use crate::Error;
use crate::ack::Slot;
use crate::pipeline::Shared;

/// How many unindexed files one catch-up asks the catalog for.
const CATCH_UP: usize = 256;

/// The memory the rows of queued files may hold: past it, a file is queued without its rows
/// and the indexer reads them back from the file.
const QUEUED_ROWS_BYTES: usize = 512 << 20;

/// The files waiting for their index, and what waits on them.
#[derive(Default)]
pub(crate) struct Indexing {
    queue: Mutex<Queue>,
    cond: Condvar,
    /// Slots of stored batches, resolved once the batch's file is indexed.
    waiting: Mutex<HashMap<BatchId, Vec<Arc<Slot>>>>,
    /// Batches whose file is indexed, for the janitor to mark `COMPLETED`.
    pub(crate) indexed: Mutex<HashSet<BatchId>>,
}

#[derive(Default)]
struct Queue {
    files: VecDeque<Queued>,
    paths: HashSet<String>,
    /// Memory held by the queued files' rows.
    rows_bytes: usize,
    /// Set once the pipeline stops: drain what is due (when draining), then end.
    closing: Option<bool>,
}

struct Queued {
    file: StoredFile,
    /// The file's rows in file order, as the sink wrote them (empty: read them back).
    rows: Vec<RecordBatch>,
    rows_bytes: usize,
    /// Payload bytes of its batches held against the unindexed bound until it is indexed.
    held: u64,
    due: Instant,
    attempts: u32,
}

impl Indexing {
    /// Queues a published file (once; a file queued already is left where it is), with its
    /// rows in file order when the sink kept them, and the bytes it holds of the unindexed
    /// bound (given back by the caller when the file was queued already).
    #[must_use = "bytes of a file queued already are the caller's to give back"]
    pub(crate) fn push(&self, file: StoredFile, rows: Option<Vec<RecordBatch>>, held: u64) -> bool {
        let mut queue = self.queue.lock();
        if queue.paths.insert(file.path.clone()) {
            let mut rows = rows.unwrap_or_default();
            let mut rows_bytes: usize = rows.iter().map(RecordBatch::get_array_memory_size).sum();
            if queue.rows_bytes + rows_bytes > QUEUED_ROWS_BYTES {
                rows = Vec::new();
                rows_bytes = 0;
            }
            queue.rows_bytes += rows_bytes;
            queue.files.push_back(Queued {
                file,
                rows,
                rows_bytes,
                held,
                due: Instant::now(),
                attempts: 0,
            });
            self.cond.notify_one();
            true
        } else {
            false
        }
    }

    /// The batch is stored: its slots now wait for the index.
    /// When the file was indexed before (a catch-up can see a file as soon as it is
    /// catalogued), they are resolved at once.
    pub(crate) fn wait_for(&self, id: BatchId, slots: Vec<Arc<Slot>>) {
        if slots.is_empty() {
            return;
        }
        let mut waiting = self.waiting.lock();
        if self.indexed.lock().contains(&id) {
            drop(waiting);
            slots.iter().for_each(|s| s.indexed());
        } else {
            waiting.entry(id).or_default().extend(slots);
        }
    }

    /// The batches are indexed (or have nothing to index): resolve what waits on them.
    pub(crate) fn done(&self, ids: &[BatchId]) {
        let mut slots = Vec::new();
        {
            let mut waiting = self.waiting.lock();
            let mut indexed = self.indexed.lock();
            for id in ids {
                indexed.insert(*id);
                slots.extend(waiting.remove(id).into_iter().flatten());
            }
        }
        slots.iter().for_each(|s| s.indexed());
    }

    /// Stops the thread: after the queue's due files when `drain`, at once otherwise.
    pub(crate) fn close(&self, drain: bool) {
        self.queue.lock().closing = Some(drain);
        self.cond.notify_all();
    }

    /// Abandons every acknowledgment still waiting for an index.
    pub(crate) fn abandon(&self, reason: &str) {
        for (_, slots) in self.waiting.lock().drain() {
            slots.iter().for_each(|s| s.abandon(reason));
        }
    }

    /// The next file to index: `None` when the thread is to end. Waits up to `timeout`
    /// (returning `Some(None)` then).
    fn next(&self, timeout: Duration) -> Option<Option<Queued>> {
        let mut queue = self.queue.lock();
        loop {
            let now = Instant::now();
            if let Some(i) = queue.files.iter().position(|q| q.due <= now) {
                if queue.closing == Some(false) {
                    return None;
                }
                let item = queue.files.remove(i)?;
                queue.paths.remove(&item.file.path);
                queue.rows_bytes -= item.rows_bytes;
                return Some(Some(item));
            }
            if queue.closing.is_some() {
                return None;
            }
            let wait = queue
                .files
                .iter()
                .map(|q| q.due.saturating_duration_since(now))
                .min()
                .map_or(timeout, |d| d.min(timeout));
            if self.cond.wait_for(&mut queue, wait).timed_out() {
                return Some(None);
            }
        }
    }

    /// Queues a file again after a failure; returns the bytes it held when it is not queued.
    fn retry(&self, mut item: Queued, backoff: Duration) -> u64 {
        item.attempts += 1;
        // Tried again from the file itself.
        item.rows = Vec::new();
        item.rows_bytes = 0;
        item.due = Instant::now()
            + backoff
                .saturating_mul(2u32.saturating_pow(item.attempts.min(8)))
                .min(Duration::from_secs(60));
        let mut queue = self.queue.lock();
        if queue.closing.is_none() && queue.paths.insert(item.file.path.clone()) {
            queue.files.push_back(item);
        } else {
            drop(queue);
            return item.held;
        }
        0
    }
}

/// The thread's loop.
pub(crate) fn run(shared: &Shared) {
    let Some(indexing) = shared.indexing.as_ref() else {
        return;
    };
    let indexer = Indexer::new(shared.destination.clone());
    let catalog: Arc<dyn FileCatalog> = shared.tracker.clone();
    let mut next_catch_up = Instant::now();
    loop {
        if Instant::now() >= next_catch_up && !shared.stop.load(Ordering::Acquire) {
            catch_up(shared, indexing, catalog.as_ref());
            next_catch_up = Instant::now() + shared.config.janitor_interval.max(Duration::from_millis(100));
        }
        let Some(item) = indexing.next(Duration::from_millis(100)) else {
            return;
        };
        let Some(item) = item else { continue };
        // Given back once the file leaves the queue for good (indexed, or retired meanwhile).
        let held = item.held;
        let indexed = if item.rows.is_empty() {
            indexer.index_and_record(catalog.as_ref(), &item.file)
        } else {
            indexer.index_and_record_rows(catalog.as_ref(), &item.file, &item.rows)
        };
        match indexed {
            Ok(_) => {
                // Counted before the acknowledgments it releases: a host that saw an
                // `Indexed` acknowledgment sees the file counted.
                {
                    let mut status = shared.status.lock();
                    status.files_indexed += 1;
                    status.records_indexed += item.file.rows;
                }
                metrics::counter!("wit_pipeline_files_indexed_total").increment(1);
                metrics::counter!("wit_pipeline_records_indexed_total").increment(item.file.rows);
                indexing.done(&item.file.batch_ids);
                shared.release_unindexed(held);
            }
            Err(wit_index::Error::Store {
                operation: "record index",
                source,
                ..
            }) if matches!(
                *source,
                wit_store::Error::WrongFileState { .. } | wit_store::Error::UnknownFile { .. }
            ) =>
            {
                // Retired meanwhile (compaction indexes the file it writes): the blob is
                // nobody's. Batches now in an indexed file are indexed.
                let _ = shared.destination.delete(&wit_index::index_path(&item.file.path));
                let indexed: Vec<BatchId> = item
                    .file
                    .batch_ids
                    .iter()
                    .copied()
                    .filter(|id| {
                        catalog
                            .files_holding(*id)
                            .is_ok_and(|files| !files.is_empty() && files.iter().all(|f| f.index.is_some()))
                    })
                    .collect();
                indexing.done(&indexed);
                shared.release_unindexed(held);
            }
            Err(wit_index::Error::Store {
                operation: "record index",
                source,
                ..
            }) if matches!(*source, wit_store::Error::IndexExists { .. }) => {
                indexing.done(&item.file.batch_ids);
                shared.release_unindexed(held);
            }
            Err(e) => {
                shared.note_error(&Error::Index {
                    path: item.file.path.clone(),
                    source: e,
                });
                let dropped = indexing.retry(item, shared.config.retry_backoff);
                shared.release_unindexed(dropped);
            }
        }
    }
}

/// Queues this node's live files the catalog has no index for: files published by a run that
/// crashed before indexing them, or whose indexing failed.
fn catch_up(shared: &Shared, indexing: &Indexing, catalog: &dyn FileCatalog) {
    match catalog.unindexed(CATCH_UP) {
        Ok(files) => {
            let node = shared.config.node.as_str();
            for file in files {
                // `{tenant}/{signal}/{yyyy}/{mm}/{dd}/{hh}/{node}/{file}`
                if file.path.split('/').nth(6) == Some(node) {
                    // Files of an earlier run (or already queued) hold nothing of the bound.
                    let _ = indexing.push(file, None, 0);
                }
            }
        }
        Err(e) => shared.note_error(&Error::store("list unindexed files")(e)),
    }
}
