//! The hot tier: rows acknowledged but not yet in a published file, held in memory so a
//! query sees them at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::RecordBatch;
use parking_lot::Mutex;
use wit_batch::{BatchId, Signal, Tenant};

/// Rows acknowledged but not yet in a published Parquet file, by batch, bounded in memory.
///
/// A pipeline inserts each batch's rows once they are converted (right after its WAL
/// acknowledgment) and removes them once the file holding the batch is published in the
/// catalog. A query takes the tier's batches *before* it lists the catalog's files, and
/// keeps only those batches no listed file holds: a batch published in between is read
/// from its file, one published after from memory, so each is counted exactly once.
///
/// The tier holds at most its byte bound; inserting past it drops the oldest batches (their
/// rows are visible again once their file is published), counted in
/// [`HotStats::dropped_batches`].
///
/// ```
/// use wit_batch::{BatchId, Compression, PayloadFormat, Signal, Tenant, otlp::logs};
/// use wit_query::HotTier;
///
/// let hot = HotTier::new(64 << 20);
/// let json = br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"hi"}}]}]}]}"#;
/// let rows = logs::decode(json, PayloadFormat::OtlpJson, Compression::None)?;
/// let id = BatchId::new();
/// hot.insert(&Tenant::try_new("acme")?, Signal::Logs, id, rows);
/// assert_eq!(hot.stats().rows, 1);
/// hot.remove(&[id]); // its file is published
/// assert_eq!(hot.stats().rows, 0);
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct HotTier {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    max_bytes: usize,
    bytes: usize,
    next_seq: u64,
    entries: HashMap<BatchId, Entry>,
    /// Insertion order, for dropping the oldest first.
    order: BTreeMap<u64, BatchId>,
    dropped_batches: u64,
}

struct Entry {
    tenant: Tenant,
    signal: Signal,
    rows: RecordBatch,
    bytes: usize,
    seq: u64,
}

/// What the hot tier holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct HotStats {
    /// Batches held.
    pub batches: usize,
    /// Rows held.
    pub rows: usize,
    /// Bytes held (Arrow buffers).
    pub bytes: usize,
    /// Batches dropped to stay within the bound, since the tier was made.
    pub dropped_batches: u64,
}

impl std::fmt::Debug for HotTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotTier").field("stats", &self.stats()).finish()
    }
}

impl HotTier {
    /// A tier holding at most `max_bytes` of Arrow buffers.
    pub fn new(max_bytes: usize) -> Self {
        HotTier {
            inner: Arc::new(Mutex::new(Inner {
                max_bytes,
                bytes: 0,
                next_seq: 0,
                entries: HashMap::new(),
                order: BTreeMap::new(),
                dropped_batches: 0,
            })),
        }
    }

    /// Holds `rows` of `batch` (of `tenant` and `signal`) until [`remove`](Self::remove)d,
    /// replacing what the tier held of that batch (a batch replayed after a restart).
    pub fn insert(&self, tenant: &Tenant, signal: Signal, batch: BatchId, rows: RecordBatch) {
        let bytes = rows.get_array_memory_size();
        let mut inner = self.inner.lock();
        inner.take(batch);
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.bytes += bytes;
        inner.order.insert(seq, batch);
        inner.entries.insert(
            batch,
            Entry {
                tenant: tenant.clone(),
                signal,
                rows,
                bytes,
                seq,
            },
        );
        while inner.bytes > inner.max_bytes {
            let Some((_, oldest)) = inner.order.pop_first() else {
                break;
            };
            if let Some(entry) = inner.entries.remove(&oldest) {
                inner.bytes -= entry.bytes;
                inner.dropped_batches += 1;
            }
        }
    }

    /// Forgets `batches` (their files are published, or they will never be).
    pub fn remove(&self, batches: &[BatchId]) {
        let mut inner = self.inner.lock();
        for id in batches {
            inner.take(*id);
        }
    }

    /// What the tier holds now.
    pub fn stats(&self) -> HotStats {
        let inner = self.inner.lock();
        HotStats {
            batches: inner.entries.len(),
            rows: inner.entries.values().map(|e| e.rows.num_rows()).sum(),
            bytes: inner.bytes,
            dropped_batches: inner.dropped_batches,
        }
    }

    /// The batches held for `tenant` and `signal`, oldest first.
    pub(crate) fn snapshot(&self, tenant: &Tenant, signal: Signal) -> Vec<(BatchId, RecordBatch)> {
        let inner = self.inner.lock();
        inner
            .order
            .values()
            .filter_map(|id| inner.entries.get(id).map(|e| (id, e)))
            .filter(|(_, e)| e.signal == signal && &e.tenant == tenant)
            .map(|(id, e)| (*id, e.rows.clone()))
            .collect()
    }
}

impl Inner {
    fn take(&mut self, batch: BatchId) {
        if let Some(entry) = self.entries.remove(&batch) {
            self.order.remove(&entry.seq);
            self.bytes -= entry.bytes;
        }
    }
}
