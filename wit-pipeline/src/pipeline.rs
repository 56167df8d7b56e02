//! The pipeline: ingest (batcher → WAL, acknowledgments), and the threads behind it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use parking_lot::{Condvar, Mutex};
use wit_batch::{BatchId, BatchKey, Batcher, Envelope, Part, Push, Signal, Tenant};
use wit_store::{Destination, FileCatalog, ParquetSink};
use wit_tracker::Tracker;
use wit_wal::Wal;

use crate::ack::Slot;
use crate::dead_letter::DeadLetters;
use crate::error::chain;
use crate::process::Processor;
use crate::{Ack, AckLevel, Error, PipelineConfig, Result};

/// What the pipeline needs of a tracker: the batch lifecycle and the catalog of stored files
/// in one backend, so that publishing a file marks its batches `STORED` in one transaction.
/// Every `wit-tracker` backend is one.
pub trait TrackerCatalog: Tracker + FileCatalog {}

impl<T: Tracker + FileCatalog + ?Sized> TrackerCatalog for T {}

/// What [`Pipeline::try_submit`] did with a part.
#[derive(Debug)]
#[must_use = "a `Submitted::Full` hands the part back: submit it again later"]
pub enum Submitted {
    /// The part was taken; the handle resolves at the level asked for.
    Accepted(Ack),
    /// The pipeline holds as much unstored data as it may: here is the part back, untouched.
    Full(Part),
}

/// What recovery did when the pipeline was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// What the WAL's own recovery found (a torn tail cut off, say).
    pub wal: wit_wal::Recovery,
    /// Complete files left in staging by the last run, published now.
    pub staged_published: usize,
    /// Batches found in the WAL that were already stored (and so not stored again).
    pub already_stored: u64,
    /// Batches found in the WAL that were not stored yet, and were written again.
    pub replayed: u64,
    /// `FAILED` batches found in the WAL (kept in the dead-letter directory).
    pub failed: u64,
    /// Batches the tracker had not seen, registered now.
    pub registered: u64,
    /// Batches of a source partition (Kafka) found in the WAL whose offset range was not
    /// claimed yet: claimed when their source starts, before it reads anything, or dropped
    /// if another consumer claimed the range meanwhile ([`Status::ranges_dropped`]).
    pub ranges_unclaimed: u64,
}

/// A snapshot of the pipeline's progress.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// Payload bytes of batches submitted and not yet stored (the bound is
    /// [`PipelineConfig::with_max_unstored_bytes`]).
    pub unstored_bytes: u64,
    /// Payload bytes of stored batches whose file is not indexed yet (the bound is
    /// [`PipelineConfig::with_max_unindexed_bytes`]).
    pub unindexed_bytes: u64,
    /// Batches read from the WAL and not yet stored (or given up).
    pub batches_in_flight: u64,
    /// Batches stored since the pipeline was opened.
    pub batches_stored: u64,
    /// Batches given up since the pipeline was opened.
    pub batches_failed: u64,
    /// Files indexed since the pipeline was opened.
    pub files_indexed: u64,
    /// Rows of the files published since the pipeline was opened.
    pub records_stored: u64,
    /// Rows of the files indexed since the pipeline was opened.
    pub records_indexed: u64,
    /// Idempotency keys held in memory, as of the janitor's last pass: claimed, or taken
    /// and not yet both in the tracker and settled.
    pub idempotency_keys: u64,
    /// The WAL is kept from this LSN on: every batch below it is stored (or given up).
    pub safe_lsn: u64,
    /// Batches of a source partition (Kafka) dropped since the pipeline was opened, because
    /// their offset range was claimed by another batch (another consumer's, say).
    pub ranges_dropped: u64,
    /// Messages of source-partition batches that did not convert, sent to their tenant's
    /// dead letters by the processor since the pipeline was opened.
    pub dead_letters: u64,
    /// The last error a background thread met and lived through (a failed upload, say).
    pub last_error: Option<String>,
}

/// A batch the batcher emitted, on its way to the WAL writer, or a barrier: the writer
/// answers it, once everything sent before it is durable, with the WAL's next LSN.
pub(crate) struct Emitted {
    pub(crate) id: BatchId,
    pub(crate) bytes: Vec<u8>,
    pub(crate) barrier: Option<mpsc::Sender<u64>>,
}

/// What is waiting on one emitted batch.
pub(crate) struct Waiting {
    pub(crate) slots: Vec<Arc<Slot>>,
}

/// A part of an open batch: its submitter's slot, with the part's rows when its submitter
/// converted it already.
type Waiter = (Arc<Slot>, Option<RecordBatch>);

struct Ingest {
    batcher: Batcher,
    /// Per key, the parts of its open batch, oldest first.
    parts: HashMap<BatchKey, VecDeque<Waiter>>,
}

/// The memory the rows of one open file may hold for its index: with indexing on, a file is
/// closed once its rows reach it (see `SinkConfig::with_kept_rows_bytes`).
const KEPT_FILE_ROWS_BYTES: usize = 256 << 20;

/// The memory the rows of converted batches waiting for the processor may hold: past it, a
/// batch's rows are dropped and the processor converts it from the WAL record.
const CONVERTED_BYTES: usize = 256 << 20;

/// Batches whose every part was converted by its submitter, until the processor reads them.
#[derive(Default)]
pub(crate) struct Converted {
    rows: HashMap<BatchId, Vec<RecordBatch>>,
    bytes: usize,
}

impl Converted {
    /// The rows of a batch's parts, in order, if its submitters converted them all.
    pub(crate) fn take(&mut self, id: BatchId) -> Option<Vec<RecordBatch>> {
        let rows = self.rows.remove(&id)?;
        self.bytes -= rows.iter().map(RecordBatch::get_array_memory_size).sum::<usize>();
        Some(rows)
    }
}

/// State shared by the pipeline's handle and threads.
pub(crate) struct Shared {
    pub(crate) config: PipelineConfig,
    pub(crate) wal: Wal,
    pub(crate) tracker: Arc<dyn TrackerCatalog>,
    pub(crate) destination: Destination,
    pub(crate) dead: DeadLetters,
    ingest: Mutex<Ingest>,
    tx: Mutex<Option<mpsc::Sender<Emitted>>>,
    pub(crate) acks: Mutex<HashMap<BatchId, Waiting>>,
    unstored: Mutex<u64>,
    /// Per tenant, payload bytes submitted (in the batcher included) and not yet stored.
    tenant_unstored: Mutex<HashMap<Tenant, u64>>,
    /// Payload bytes of stored batches whose file is not indexed yet (with indexing on).
    unindexed: AtomicU64,
    room: Condvar,
    room_generation: AtomicU64,
    room_wakers: Mutex<Vec<Waker>>,
    durable_rounds: Mutex<u64>,
    durable_cond: Condvar,
    pub(crate) safe_lsn: AtomicU64,
    /// When not 0: open files are to be closed and published once the processor has read
    /// the WAL up to this LSN ([`Pipeline::flush`]).
    pub(crate) files_due: AtomicU64,
    pub(crate) stop: AtomicBool,
    /// Whether stopping drains (closes and publishes every open file) or just stops.
    pub(crate) drain: AtomicBool,
    fatal: Mutex<Option<String>>,
    pub(crate) status: Mutex<Status>,
    /// Stored batches (LSN, id) to mark `COMPLETED` once the WAL released them.
    pub(crate) completable: Mutex<Vec<(u64, BatchId)>>,
    /// Tenants and signals seen, for the janitor's retention and compaction.
    pub(crate) seen: Mutex<HashSet<(Tenant, Signal)>>,
    /// The files waiting for their full-text index (`None` with indexing off).
    pub(crate) indexing: Option<crate::index::Indexing>,
    /// Rows of emitted batches converted by their submitters, for the processor.
    pub(crate) converted: Mutex<Converted>,
    /// Idempotency keys claimed, or taken and not yet remembered and settled.
    pub(crate) keys: Arc<crate::idempotency::Keys>,
    /// The running source of partition batches, if any (see `ranges`).
    pub(crate) ranges: Mutex<Option<crate::ranges::RangeSource>>,
    /// Batches of a source partition found unclaimed in the WAL, until their source starts.
    pub(crate) parked: AtomicU64,
}

impl Shared {
    pub(crate) fn check_open(&self) -> Result<()> {
        if let Some(reason) = self.fatal.lock().clone() {
            return Err(Error::Closed { reason: Some(reason) });
        }
        if self.stop.load(Ordering::Acquire) {
            return Err(Error::Closed { reason: None });
        }
        Ok(())
    }

    /// Stops the pipeline for good after an error it cannot live through: every waiting
    /// acknowledgment is abandoned.
    pub(crate) fn fail(&self, error: &Error) {
        let reason = chain(error);
        self.fatal.lock().get_or_insert(reason.clone());
        self.stop.store(true, Ordering::Release);
        for (_, waiting) in self.acks.lock().drain() {
            waiting.slots.iter().for_each(|s| s.abandon(&reason));
        }
        if let Some(indexing) = &self.indexing {
            indexing.abandon(&reason);
            indexing.close(false);
        }
        self.wake_all();
    }

    pub(crate) fn note_error(&self, error: &Error) {
        let kind = match error {
            Error::Store { .. } => "store",
            Error::Index { .. } => "index",
            Error::Tracker { .. } => "tracker",
            Error::Wal { .. } => "wal",
            Error::Convert { .. } => "convert",
            _ => "other",
        };
        metrics::counter!("wit_pipeline_errors_total", "kind" => kind).increment(1);
        self.status.lock().last_error = Some(chain(error));
    }

    pub(crate) fn wake_all(&self) {
        self.durable_cond.notify_all();
        self.bump_room();
    }

    fn bump_room(&self) {
        self.room_generation.fetch_add(1, Ordering::AcqRel);
        self.room.notify_all();
        for waker in std::mem::take(&mut *self.room_wakers.lock()) {
            waker.wake();
        }
    }

    pub(crate) fn hold(&self, bytes: u64) {
        *self.unstored.lock() += bytes;
    }

    pub(crate) fn release(&self, bytes: u64) {
        {
            let mut unstored = self.unstored.lock();
            *unstored = unstored.saturating_sub(bytes);
        }
        self.bump_room();
    }

    /// Bytes `tenant` holds from now on (a part taken, a batch found in the WAL).
    pub(crate) fn hold_tenant(&self, tenant: &Tenant, bytes: u64) {
        *self.tenant_unstored.lock().entry(tenant.clone()).or_default() += bytes;
    }

    /// Bytes `tenant` holds no more (its batch stored or given up).
    pub(crate) fn release_tenant(&self, tenant: &Tenant, bytes: u64) {
        let mut held = self.tenant_unstored.lock();
        if let Some(n) = held.get_mut(tenant) {
            *n = n.saturating_sub(bytes);
            if *n == 0 {
                held.remove(tenant);
            }
        }
    }

    /// Whether `tenant` may submit a part of `len` bytes more under its own bound.
    fn tenant_has_room(&self, tenant: &Tenant, len: u64) -> bool {
        let held = self.tenant_unstored.lock().get(tenant).copied().unwrap_or(0);
        held == 0 || held + len <= self.config.max_unstored_bytes_per_tenant
    }

    pub(crate) fn unstored(&self) -> u64 {
        *self.unstored.lock()
    }

    /// Stored bytes now waiting for their file's index.
    pub(crate) fn hold_unindexed(&self, bytes: u64) {
        self.unindexed.fetch_add(bytes, Ordering::AcqRel);
    }

    pub(crate) fn release_unindexed(&self, bytes: u64) {
        if bytes > 0 {
            self.unindexed.fetch_sub(bytes, Ordering::AcqRel);
            self.bump_room();
        }
    }

    /// Whether a part of `len` bytes fits both bounds, with `buffered` bytes in the batcher.
    fn has_room(&self, buffered: u64, len: u64) -> bool {
        let held = self.unstored() + buffered;
        let unstored_ok = held == 0 || held + len <= self.config.max_unstored_bytes;
        let unindexed = self.unindexed.load(Ordering::Acquire);
        unstored_ok && (unindexed == 0 || unindexed < self.config.max_unindexed_bytes)
    }

    /// Waits until the writer made another round durable, or `timeout`.
    pub(crate) fn wait_durable(&self, seen: &mut u64, timeout: Duration) {
        let mut rounds = self.durable_rounds.lock();
        if *rounds == *seen && !self.stop.load(Ordering::Acquire) {
            let _ = self.durable_cond.wait_for(&mut rounds, timeout);
        }
        *seen = *rounds;
    }

    fn durable_round(&self) {
        *self.durable_rounds.lock() += 1;
        self.durable_cond.notify_all();
    }

    /// Takes the parts' slots for emitted batches and registers them; returns what the
    /// writer gets. Called with the ingest lock held.
    fn emitted(&self, ingest: &mut Ingest, ready: Vec<Envelope>) -> Vec<(BatchId, Envelope)> {
        if ready.is_empty() {
            return Vec::new();
        }
        let mut acks = self.acks.lock();
        let mut out = Vec::with_capacity(ready.len());
        for envelope in ready {
            let meta = envelope.meta();
            let key = key_of(meta);
            let queue = ingest.parts.entry(key.clone()).or_default();
            let n = envelope.parts().len().min(queue.len());
            let (slots, rows): (Vec<Arc<Slot>>, Vec<Option<RecordBatch>>) = queue.drain(..n).unzip();
            if queue.is_empty() {
                ingest.parts.remove(&key);
            }
            // The processor takes the parts' rows rather than convert them again, when every
            // part of the batch came with its rows.
            if n == envelope.parts().len()
                && let Some(rows) = rows.into_iter().collect::<Option<Vec<RecordBatch>>>()
            {
                let bytes: usize = rows.iter().map(RecordBatch::get_array_memory_size).sum();
                let mut converted = self.converted.lock();
                if converted.bytes + bytes <= CONVERTED_BYTES {
                    converted.bytes += bytes;
                    converted.rows.insert(meta.id, rows);
                }
            }
            slots.iter().for_each(|s| s.set_batch(meta.id));
            acks.insert(meta.id, Waiting { slots });
            *self.unstored.lock() += meta.byte_size;
            out.push((meta.id, envelope));
        }
        out
    }

    /// Encodes emitted batches and hands them to the writer (outside the ingest lock).
    fn send(&self, batches: Vec<(BatchId, Envelope)>) -> Result<()> {
        if batches.is_empty() {
            return Ok(());
        }
        self.bump_room();
        let encoded: Vec<Emitted> = batches
            .into_iter()
            .map(|(id, envelope)| Emitted {
                id,
                bytes: envelope.encode(),
                barrier: None,
            })
            .collect();
        let tx = self.tx.lock().clone();
        let Some(tx) = tx else {
            return Err(Error::Closed { reason: None });
        };
        for item in encoded {
            tx.send(item).map_err(|_| Error::Closed { reason: None })?;
        }
        Ok(())
    }

    pub(crate) fn submit_part(
        &self,
        key: &BatchKey,
        part: Part,
        rows: Option<RecordBatch>,
        level: AckLevel,
    ) -> Result<Submitted> {
        self.submit_part_within(key, part, rows, level, true)
    }

    /// Submits a dead letter of `tenant` under idempotency key `key` (taken once within the
    /// window; an invalid key is left off), past the unstored bounds (dead letters are small,
    /// and the processor, which frees room, submits them too). `None` when the key was taken
    /// already: the letter is in, or on its way.
    pub(crate) fn submit_dead_letter(
        self: &Arc<Self>,
        tenant: &Tenant,
        key: &str,
        letter: wit_batch::dead_letters::DeadLetter,
    ) -> Result<Option<Ack>> {
        let mut part = Part::new(
            wit_batch::PayloadFormat::Ndjson,
            wit_batch::Compression::None,
            1,
            wit_batch::dead_letters::encode(&[letter]),
        );
        if wit_batch::Idempotency::check(key, 0).is_ok() {
            match crate::idempotency::claim(self, tenant, key, AckLevel::WalDurable)? {
                crate::Claimed::New(claim) => part = part.with_idempotency(claim.idempotency(bytes::Bytes::new())?),
                crate::Claimed::Taken { .. } | crate::Claimed::InFlight => return Ok(None),
            }
        }
        let batch = BatchKey::new(tenant.clone(), Signal::DeadLetters, wit_batch::SourceKind::Kafka);
        match self.submit_part_within(&batch, part, None, AckLevel::WalDurable, false)? {
            Submitted::Accepted(ack) => Ok(Some(ack)),
            Submitted::Full(_) => unreachable!("an unbounded submit is never full"),
        }
    }

    fn submit_part_within(
        &self,
        key: &BatchKey,
        part: Part,
        rows: Option<RecordBatch>,
        level: AckLevel,
        bounded: bool,
    ) -> Result<Submitted> {
        self.check_open()?;
        let shared = self;
        if level == AckLevel::Indexed && shared.indexing.is_none() {
            return Err(Error::InvalidConfig {
                reason: "AckLevel::Indexed needs indexing on (PipelineConfig::with_indexing)".to_owned(),
            });
        }
        let len = part.payload.len() as u64;
        let max = shared.config.max_part_bytes();
        if part.size() > max {
            return Err(Error::PartTooLarge { len: part.size(), max });
        }
        if let Some(idem) = &part.idempotency
            && idem.receipt().len() > crate::idempotency::MAX_RECEIPT_BYTES
        {
            return Err(Error::IdempotencyKey {
                tenant: key.tenant.to_string(),
                key: idem.key().to_owned(),
                reason: format!(
                    "a receipt has at most {} bytes, this one {}",
                    crate::idempotency::MAX_RECEIPT_BYTES,
                    idem.receipt().len()
                ),
            });
        }
        let slot = Arc::new(Slot::default());
        let batches = {
            let mut ingest = shared.ingest.lock();
            if bounded
                && (!shared.has_room(ingest.batcher.buffered_bytes(), len) || !shared.tenant_has_room(&key.tenant, len))
            {
                return Ok(Submitted::Full(part));
            }
            // The key is taken under the ingest lock, before the part can be emitted.
            let idempotency = part.idempotency.clone();
            let claimed = match &idempotency {
                Some(idem) => shared.keys.take(&key.tenant, idem, &slot)?,
                None => false,
            };
            match ingest.batcher.push(key, part, Instant::now()) {
                Push::Full(part) => {
                    if let Some(idem) = &idempotency {
                        shared.keys.untake(&key.tenant, idem, claimed);
                    }
                    return Ok(Submitted::Full(part));
                }
                Push::Accepted { ready } => {
                    shared.hold_tenant(&key.tenant, len);
                    ingest
                        .parts
                        .entry(key.clone())
                        .or_default()
                        .push_back((slot.clone(), rows));
                    shared.emitted(&mut ingest, ready)
                }
            }
        };
        shared.send(batches)?;
        Ok(Submitted::Accepted(Ack::new(slot, level)))
    }

    /// Whether a sealed batch of `len` payload bytes of `tenant` fits the unstored bounds now.
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub(crate) fn has_room_for_sealed(&self, tenant: &Tenant, len: u64) -> bool {
        self.has_room(0, len) && self.tenant_has_room(tenant, len)
    }

    /// Submits a batch its source sealed itself (a Kafka partition's range, see `ranges`),
    /// with its parts' rows when the source converted them all; the acknowledgment is at
    /// `WalDurable`. The source checks the room first ([`Self::has_room_for_sealed`]).
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub(crate) fn submit_sealed(&self, envelope: Envelope, rows: Option<Vec<RecordBatch>>) -> Result<Ack> {
        let shared = self;
        shared.check_open()?;
        let meta = envelope.meta();
        let (id, len) = (meta.id, meta.byte_size);
        let max = shared.config.wal.max_record_size() as u64;
        if envelope.encoded_len() as u64 > max {
            return Err(Error::PartTooLarge {
                len: envelope.encoded_len() as u64,
                max,
            });
        }
        let slot = Arc::new(Slot::default());
        slot.set_batch(id);
        shared.hold_tenant(&meta.tenant, len);
        shared.hold(len);
        if let Some(rows) = rows {
            let bytes: usize = rows.iter().map(RecordBatch::get_array_memory_size).sum();
            let mut converted = shared.converted.lock();
            if converted.bytes + bytes <= CONVERTED_BYTES {
                converted.bytes += bytes;
                converted.rows.insert(id, rows);
            }
        }
        shared.acks.lock().insert(
            id,
            Waiting {
                slots: vec![slot.clone()],
            },
        );
        shared.send(vec![(id, envelope)])?;
        Ok(Ack::new(slot, AckLevel::WalDurable))
    }

    fn emit_expired(&self, now: Instant) -> Result<Option<Instant>> {
        let (batches, next) = {
            let mut ingest = self.ingest.lock();
            let ready = ingest.batcher.poll_expired(now);
            let batches = self.emitted(&mut ingest, ready);
            (batches, ingest.batcher.next_deadline())
        };
        self.send(batches)?;
        Ok(next)
    }

    pub(crate) fn flush_batcher(&self) -> Result<()> {
        let batches = {
            let mut ingest = self.ingest.lock();
            let ready = ingest.batcher.flush_all();
            self.emitted(&mut ingest, ready)
        };
        self.send(batches)
    }
}

/// Wit's crates wired into one running pipeline: parts are submitted, batched, made durable
/// in the WAL and acknowledged at the level asked for; a processing thread follows the WAL,
/// converts each batch to Arrow by its signal and stores it in Parquet through the store's
/// sink, moving it through its stages in the tracker; a janitor truncates the WAL behind
/// what is stored, marks batches `COMPLETED` and deletes retired files.
///
/// Opening it recovers: staged complete files are published first, then every WAL batch
/// that is not yet stored is written again, skipping batches already in a published or
/// staged file, so no batch is stored twice.
///
/// See the [crate docs](crate) for an example.
pub struct Pipeline {
    shared: Arc<Shared>,
    recovery: RecoveryReport,
    writer: Option<JoinHandle<()>>,
    processor: Option<JoinHandle<Result<()>>>,
    janitor: Option<JoinHandle<()>>,
    indexer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("dir", &self.shared.config.dir)
            .field("destination", &self.shared.destination)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Opens the pipeline in `config`'s directory, storing to `destination` and tracking in
    /// `tracker`, and recovers (see the type's docs) before it returns.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`]; [`Error::Wal`] when the log cannot be opened (another
    /// process holds it, or it is corrupt); [`Error::Store`] when staging cannot be used;
    /// [`Error::Tracker`] when the tracker fails during replay; [`Error::Io`].
    pub fn open(config: PipelineConfig, destination: Destination, tracker: Arc<dyn TrackerCatalog>) -> Result<Self> {
        config.validate()?;
        let config_indexing = config.indexing;
        let dead = DeadLetters::open(config.dead_letter_dir())?;
        let wal = Wal::open(&config.wal_dir(), config.wal.clone()).map_err(Error::wal("open"))?;
        let catalog: Arc<dyn FileCatalog> = tracker.clone();
        // With indexing on, the indexer builds each file's index from the rows the sink wrote
        // rather than reading the file back; a file is closed once its rows reach the bound.
        let kept = if config_indexing { KEPT_FILE_ROWS_BYTES } else { 0 };
        let sink_config = config.sink.clone().with_kept_rows_bytes(kept);
        let mut sink = ParquetSink::open(destination.clone(), sink_config)
            .map_err(Error::store("open the sink"))?
            .with_catalog(catalog);
        let mut recovery = RecoveryReport {
            wal: wal.recovery().clone(),
            ..RecoveryReport::default()
        };
        let (tx, rx) = mpsc::channel();
        let batcher =
            Batcher::try_new(config.batcher.clone()).map_err(|e| Error::InvalidConfig { reason: e.to_string() })?;
        let shared = Arc::new(Shared {
            config,
            wal,
            tracker,
            destination,
            dead,
            ingest: Mutex::new(Ingest {
                batcher,
                parts: HashMap::new(),
            }),
            tx: Mutex::new(Some(tx)),
            acks: Mutex::new(HashMap::new()),
            unstored: Mutex::new(0),
            tenant_unstored: Mutex::new(HashMap::new()),
            unindexed: AtomicU64::new(0),
            room: Condvar::new(),
            room_generation: AtomicU64::new(0),
            room_wakers: Mutex::new(Vec::new()),
            durable_rounds: Mutex::new(0),
            durable_cond: Condvar::new(),
            safe_lsn: AtomicU64::new(0),
            files_due: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            drain: AtomicBool::new(true),
            fatal: Mutex::new(None),
            status: Mutex::new(Status::default()),
            completable: Mutex::new(Vec::new()),
            seen: Mutex::new(HashSet::new()),
            indexing: config_indexing.then(crate::index::Indexing::default),
            converted: Mutex::new(Converted::default()),
            keys: Arc::default(),
            ranges: Mutex::new(None),
            parked: AtomicU64::new(0),
        });

        // Recovery, step 1: complete files the last run staged are published first.
        match sink.publish() {
            Ok(files) => recovery.staged_published = files.len(),
            Err(e) => shared.note_error(&Error::store("publish staged files")(e)),
        }
        // Step 2: the WAL is read from its start; batches not stored yet are written again.
        let mut processor = Processor::new(shared.clone(), sink)?;
        processor.replay(&mut recovery)?;

        let writer = spawn(&shared, "wal", move |shared| writer_loop(&shared, &rx))?;
        let processor = spawn(&shared, "process", move |shared| {
            background_priority();
            let result = processor.run();
            if let Err(e) = &result {
                shared.fail(e);
            }
            result
        })?;
        let janitor = spawn(&shared, "janitor", |shared| {
            background_priority();
            crate::janitor::run(&shared);
        })?;
        let indexer = match shared.indexing {
            Some(_) => Some(spawn(&shared, "index", |shared| {
                background_priority();
                crate::index::run(&shared);
            })?),
            None => None,
        };
        Ok(Pipeline {
            shared,
            recovery,
            writer: Some(writer),
            processor: Some(processor),
            janitor: Some(janitor),
            indexer,
        })
    }

    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// What recovery did when the pipeline was opened.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// Submits `part` for `key` (tenant, signal, source and topic), to be acknowledged at
    /// `level`, without waiting: the part goes into its key's open batch, and the returned
    /// [`Ack`] resolves once the level holds. When the pipeline already holds its bound of
    /// unstored data (or the batcher its bound of open batches), the part comes back as
    /// [`Submitted::Full`], untouched: nothing is ever dropped.
    ///
    /// # Errors
    ///
    /// [`Error::PartTooLarge`] for a part no WAL record can hold (nothing is taken);
    /// [`Error::Closed`] when the pipeline is closed or stopped after a fatal error.
    pub fn try_submit(&self, key: &BatchKey, part: Part, level: AckLevel) -> Result<Submitted> {
        self.shared.submit_part(key, part, None, level)
    }

    /// [`try_submit`](Self::try_submit) for a part the caller has converted already (to check
    /// it before submitting, say): `rows` are the part's rows as the signal's decoder in
    /// `wit_batch::otlp` or `wit_batch::dead_letters` gives them
    /// (`decode(&part.payload, part.format, part.compression)`), and the processor stores them
    /// rather than convert the part again. The WAL still holds the part itself, and recovery
    /// converts it from there; so rows that are not the part's conversion would store other
    /// data than a replay would: the caller vouches for them.
    /// Rows of another schema than the signal's, and rows of event parts (whose conversion
    /// depends on the batch's other parts), are ignored: those parts are converted as usual.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use wit_batch::{BatchKey, Compression, Part, PayloadFormat, Signal, SourceKind, Tenant};
    /// use wit_pipeline::{AckLevel, Pipeline, PipelineConfig, Submitted};
    /// use wit_store::{Destination, NodeName};
    /// use wit_tracker::{SqliteTracker, TrackerConfig};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let tracker = Arc::new(SqliteTracker::open(&dir.path().join("tracker.db"), TrackerConfig::default())?);
    /// let config = PipelineConfig::new(dir.path().join("pipeline"), NodeName::try_new("node-a")?);
    /// let pipeline = Pipeline::open(config, Destination::local(&dir.path().join("data"))?, tracker)?;
    ///
    /// let body = br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"hello"}}]}]}]}"#;
    /// // Checked before it is taken: a request that does not decode is refused here.
    /// let rows = wit_batch::otlp::logs::decode(body, PayloadFormat::OtlpJson, Compression::None)?;
    /// let key = BatchKey::new(Tenant::try_new("acme")?, Signal::Logs, SourceKind::Http);
    /// let part = Part::new(PayloadFormat::OtlpJson, Compression::None, 1, &body[..]);
    /// let Submitted::Accepted(ack) = pipeline.try_submit_converted(&key, part, rows, AckLevel::Stored)? else {
    ///     panic!("an empty pipeline has room");
    /// };
    /// pipeline.flush()?;
    /// assert!(ack.wait()?.batch.is_some());
    /// pipeline.close()?;
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`try_submit`](Self::try_submit).
    pub fn try_submit_converted(
        &self,
        key: &BatchKey,
        part: Part,
        rows: RecordBatch,
        level: AckLevel,
    ) -> Result<Submitted> {
        let expected = match key.signal {
            Signal::Traces => Some(wit_batch::otlp::traces::schema()),
            Signal::Logs => Some(wit_batch::otlp::logs::schema()),
            Signal::Metrics => Some(wit_batch::otlp::metrics::schema()),
            Signal::DeadLetters => Some(wit_batch::dead_letters::schema()),
            _ => None,
        };
        let rows = expected
            .filter(|schema| schema.fields() == rows.schema().fields())
            .map(|_| rows);
        self.shared.submit_part(key, part, rows, level)
    }

    /// Claims idempotency key `key` of `tenant` for one request, or says who has it: a
    /// request under a key taken within the window
    /// ([`PipelineConfig::with_idempotency_window`]) is answered with the first one's
    /// receipt and acknowledgment, and stores nothing. A [`Claimed::New`](crate::Claimed::New)
    /// claim goes with the request's part ([`KeyClaim::idempotency`](crate::KeyClaim::idempotency),
    /// `Part::with_idempotency`) into the WAL envelope, so the key survives a crash: recovery
    /// takes it again as it replays the batch, and the processor writes it to the tracker
    /// before the batch is stored. `level` is the level the answer waits for.
    ///
    /// May ask the tracker (a key no longer in memory): call it where blocking briefly is
    /// fine (`spawn_blocking` in async code).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use wit_batch::{BatchKey, Compression, Part, PayloadFormat, Signal, SourceKind, Tenant};
    /// use wit_pipeline::{AckLevel, Claimed, Pipeline, PipelineConfig, Submitted};
    /// use wit_store::{Destination, NodeName};
    /// use wit_tracker::{SqliteTracker, TrackerConfig};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let tracker = Arc::new(SqliteTracker::open(&dir.path().join("tracker.db"), TrackerConfig::default())?);
    /// let config = PipelineConfig::new(dir.path().join("pipeline"), NodeName::try_new("node-a")?);
    /// let pipeline = Pipeline::open(config, Destination::local(&dir.path().join("data"))?, tracker)?;
    /// let acme = Tenant::try_new("acme")?;
    /// let key = BatchKey::new(acme.clone(), Signal::Logs, SourceKind::Http);
    /// let body = &br#"{"resourceLogs":[]}"#[..];
    ///
    /// let Claimed::New(claim) = pipeline.claim_key(&acme, "req-1", AckLevel::WalDurable)? else { panic!() };
    /// let part = Part::new(PayloadFormat::OtlpJson, Compression::None, 1, body)
    ///     .with_idempotency(claim.idempotency(&b"accepted 0"[..])?);
    /// let Submitted::Accepted(ack) = pipeline.try_submit(&key, part, AckLevel::WalDurable)? else { panic!() };
    /// pipeline.flush()?;
    /// ack.wait()?;
    ///
    /// // The retry: the first answer, nothing submitted.
    /// match pipeline.claim_key(&acme, "req-1", AckLevel::WalDurable)? {
    ///     Claimed::Taken { receipt, ack } => {
    ///         assert_eq!(&receipt[..], b"accepted 0");
    ///         ack.wait()?;
    ///     }
    ///     other => panic!("{other:?}"),
    /// }
    /// pipeline.close()?;
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::IdempotencyKey`] for a key that is not 1 to 255 bytes of visible ASCII;
    /// [`Error::Tracker`] when the tracker cannot be asked; [`Error::Closed`].
    pub fn claim_key(&self, tenant: &Tenant, key: &str, level: AckLevel) -> Result<crate::Claimed> {
        crate::idempotency::claim(&self.shared, tenant, key, level)
    }

    /// Whether a part of `len` payload bytes would be taken now rather than answered
    /// [`Submitted::Full`]: lets a host refuse a request before spending work on it (a
    /// receiver checking that it decodes, say). The answer can be stale by the time the
    /// part is submitted; [`try_submit`](Self::try_submit) decides.
    pub fn has_room_for(&self, len: u64) -> bool {
        let ingest = self.shared.ingest.lock();
        self.shared.has_room(ingest.batcher.buffered_bytes(), len)
    }

    /// Whether `tenant` may submit a part of `len` payload bytes under its own bound
    /// ([`PipelineConfig::with_max_unstored_bytes_per_tenant`]); as stale as
    /// [`has_room_for`](Self::has_room_for). A host tells a tenant over its own bound (a
    /// limit of that tenant's) from a pipeline that is full for everyone with it.
    pub fn tenant_has_room_for(&self, tenant: &Tenant, len: u64) -> bool {
        self.shared.tenant_has_room(tenant, len)
    }

    /// [`try_submit`](Self::try_submit), blocking while the pipeline is full.
    ///
    /// # Errors
    ///
    /// As [`try_submit`](Self::try_submit).
    pub fn blocking_submit(&self, key: &BatchKey, mut part: Part, level: AckLevel) -> Result<Ack> {
        loop {
            let generation = self.shared.room_generation.load(Ordering::Acquire);
            match self.try_submit(key, part, level)? {
                Submitted::Accepted(ack) => return Ok(ack),
                Submitted::Full(back) => {
                    part = back;
                    let mut unstored = self.shared.unstored.lock();
                    if self.shared.room_generation.load(Ordering::Acquire) == generation {
                        let _ = self.shared.room.wait_for(&mut unstored, Duration::from_millis(50));
                    }
                }
            }
        }
    }

    /// [`try_submit`](Self::try_submit), waiting (without blocking a thread) while the
    /// pipeline is full.
    ///
    /// # Errors
    ///
    /// As [`try_submit`](Self::try_submit).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future while it waits drops the part, which was not submitted.
    pub async fn submit(&self, key: &BatchKey, mut part: Part, level: AckLevel) -> Result<Ack> {
        loop {
            let generation = self.shared.room_generation.load(Ordering::Acquire);
            match self.try_submit(key, part, level)? {
                Submitted::Accepted(ack) => return Ok(ack),
                Submitted::Full(back) => {
                    part = back;
                    Room {
                        shared: &self.shared,
                        generation,
                    }
                    .await;
                }
            }
        }
    }

    /// Emits every open batch now, whatever its size and age, waits until they are durable,
    /// and has the processor close and publish its open files as soon as it has read them:
    /// what was submitted before the call is then stored without waiting for file sizes or
    /// ages (acknowledgments follow as usual). Small files are the price; compaction merges
    /// them later.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`].
    pub fn flush(&self) -> Result<()> {
        self.shared.check_open()?;
        self.shared.flush_batcher()?;
        let (tx, rx) = mpsc::channel();
        let sender = self.shared.tx.lock().clone().ok_or(Error::Closed { reason: None })?;
        sender
            .send(Emitted {
                id: BatchId::new(),
                bytes: Vec::new(),
                barrier: Some(tx),
            })
            .map_err(|_| Error::Closed { reason: None })?;
        let durable_end = rx
            .recv()
            .map_err(|_| self.shared.check_open().err().unwrap_or(Error::Closed { reason: None }))?;
        self.shared.files_due.fetch_max(durable_end, Ordering::AcqRel);
        self.shared.wake_all();
        Ok(())
    }

    /// The pipeline's progress.
    pub fn status(&self) -> Status {
        let mut status = self.shared.status.lock().clone();
        status.unstored_bytes = self.shared.unstored();
        status.unindexed_bytes = self.shared.unindexed.load(Ordering::Acquire);
        status.safe_lsn = self.shared.safe_lsn.load(Ordering::Acquire);
        status
    }

    /// The write-ahead log (for its statistics; the pipeline appends and truncates it).
    pub fn wal(&self) -> &Wal {
        &self.shared.wal
    }

    /// Submits a `FAILED` batch's kept envelope again, as a new batch with the same parts,
    /// and returns once that batch is durable in the WAL; the kept copy is then removed. The
    /// failed batch stays `FAILED` in the tracker, as the record of what happened.
    ///
    /// # Errors
    ///
    /// [`Error::NotDeadLettered`] when no envelope is kept for `batch`; [`Error::Convert`]
    /// when the kept bytes are not an envelope; as [`blocking_submit`](Self::blocking_submit)
    /// and [`Ack::wait`].
    pub fn resubmit_failed(&self, batch: BatchId) -> Result<Vec<crate::Acked>> {
        let bytes = bytes::Bytes::from(self.shared.dead.read(batch)?);
        let envelope = Envelope::decode(&bytes).map_err(|e| Error::Convert {
            batch,
            source: Box::new(e),
        })?;
        let (meta, parts) = envelope.into_inner();
        let key = key_of(&meta);
        let acks = parts
            .into_iter()
            .map(|part| self.blocking_submit(&key, part, AckLevel::WalDurable))
            .collect::<Result<Vec<_>>>()?;
        self.flush()?;
        let acked = acks.into_iter().map(Ack::wait).collect::<Result<Vec<_>>>()?;
        self.shared.dead.remove(batch)?;
        Ok(acked)
    }

    /// Closes the pipeline: open batches are emitted and made durable, everything in the WAL
    /// is stored (open files closed and published), the janitor makes a last pass, and the
    /// WAL is closed cleanly.
    ///
    /// # Errors
    ///
    /// The first error met; whatever was not stored stays in the WAL (and staging) and is
    /// stored when the pipeline is opened again.
    pub fn close(mut self) -> Result<()> {
        let drained = self.shutdown(true);
        // A last sync, so that its failure is reported here rather than lost in the drop that
        // writes the log's clean-close checkpoint.
        let synced = self.shared.wal.sync().map_err(Error::wal("sync"));
        drained.and(synced)
    }

    fn shutdown(&mut self, drain: bool) -> Result<()> {
        let mut first = None;
        if drain
            && self.shared.check_open().is_ok()
            && let Err(e) = self.shared.flush_batcher()
        {
            first.get_or_insert(e);
        }
        // The writer ends once its queue is empty and closed.
        self.shared.tx.lock().take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        self.shared.drain.store(drain, Ordering::Release);
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake_all();
        if let Some(processor) = self.processor.take() {
            match processor.join() {
                Ok(Err(e)) => {
                    first.get_or_insert(e);
                }
                Ok(Ok(())) => {}
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        if let Some(janitor) = self.janitor.take() {
            let _ = janitor.join();
        }
        // The indexer indexes what the processor published last (when draining), then ends.
        if let Some(indexing) = &self.shared.indexing {
            indexing.close(drain && first.is_none());
        }
        if let Some(indexer) = self.indexer.take() {
            let _ = indexer.join();
        }
        if drain
            && first.is_none()
            && let Err(e) = crate::janitor::pass(&self.shared)
        {
            first.get_or_insert(e);
        }
        let reason = first
            .as_ref()
            .map_or_else(|| "the pipeline was closed".to_owned(), |e| chain(e));
        for (_, waiting) in self.shared.acks.lock().drain() {
            waiting.slots.iter().for_each(|s| s.abandon(&reason));
        }
        if let Some(indexing) = &self.shared.indexing {
            indexing.abandon(&reason);
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for Pipeline {
    /// Stops the threads without waiting for open batches or files: what is durable in the
    /// WAL is stored on the next open. Use [`Pipeline::close`] to drain.
    fn drop(&mut self) {
        if self.writer.is_some() || self.processor.is_some() || self.indexer.is_some() {
            let _ = self.shutdown(false);
        }
    }
}

/// The batcher key a batch was formed under.
fn key_of(meta: &wit_batch::BatchMeta) -> BatchKey {
    let key = BatchKey::new(meta.tenant.clone(), meta.signal, meta.source);
    match meta.topics.first() {
        Some(topic) => key.with_topic(topic.clone()),
        None => key,
    }
}

/// Starts the pipeline's thread `wit-pipeline-{name}`, giving it the shared state.
fn spawn<T: Send + 'static>(
    shared: &Arc<Shared>,
    name: &str,
    run: impl FnOnce(Arc<Shared>) -> T + Send + 'static,
) -> Result<JoinHandle<T>> {
    let shared = shared.clone();
    std::thread::Builder::new()
        .name(format!("wit-pipeline-{name}"))
        .spawn(move || run(shared))
        .map_err(Error::io(std::path::Path::new("<thread>")))
}

/// Lowers the calling thread's CPU priority (nice 19, the lowest; Linux, best effort):
/// converting and encoding Parquet (and the threads they start, which inherit it) then yield
/// the CPU to the acknowledgment path (submitters, a Kafka source's consumer and the broker
/// it reads from, the WAL writer) when both want it. A burst is taken into the WAL first and
/// stored behind it; the unstored bound holds the sources back once processing falls that
/// far behind. Measured with the `kafka` bench (`benches/benches/kafka.rs`): the source read
/// 0.83× the plain consumer's rate at nice 19 against 0.74× at nice 10, in back-to-back runs.
fn background_priority() {
    #[cfg(target_os = "linux")]
    {
        let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19);
    }
}

/// Resolves when room was made after `generation`.
struct Room<'a> {
    shared: &'a Shared,
    generation: u64,
}

impl Future for Room<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.shared.room_generation.load(Ordering::Acquire) != self.generation {
            return Poll::Ready(());
        }
        self.shared.room_wakers.lock().push(cx.waker().clone());
        if self.shared.room_generation.load(Ordering::Acquire) != self.generation {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// The WAL writer: takes emitted batches, appends each round as one group, waits for it to be
/// durable and acknowledges; emits the batcher's expired batches on time.
fn writer_loop(shared: &Shared, rx: &mpsc::Receiver<Emitted>) {
    const ROUND_BYTES: usize = 8 << 20;
    let mut next_deadline: Option<Instant> = None;
    loop {
        let timeout = next_deadline.map_or(Duration::from_millis(100), |d| {
            d.saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100))
        });
        let mut round = Vec::new();
        let mut disconnected = false;
        match rx.recv_timeout(timeout) {
            Ok(item) => round.push(item),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => disconnected = true,
        }
        if !disconnected {
            match shared.emit_expired(Instant::now()) {
                Ok(next) => next_deadline = next,
                Err(_) => next_deadline = None,
            }
        }
        let mut bytes: usize = round.iter().map(|e| e.bytes.len()).sum();
        // A barrier ends the round: it is answered once what came before it is durable.
        while bytes < ROUND_BYTES && round.last().is_none_or(|e| e.barrier.is_none()) {
            match rx.try_recv() {
                Ok(item) => {
                    bytes += item.bytes.len();
                    round.push(item);
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    disconnected = true;
                    break;
                }
            }
        }
        let barrier = round.pop_if(|e| e.barrier.is_some()).and_then(|e| e.barrier);
        if !round.is_empty() {
            let records: Vec<&[u8]> = round.iter().map(|e| e.bytes.as_slice()).collect();
            let written = shared
                .wal
                .submit_batch(&records)
                .and_then(wit_wal::Commit::wait)
                .map_err(Error::wal("append"));
            match written {
                Ok(range) => {
                    let acks = shared.acks.lock();
                    for (item, lsn) in round.iter().zip(range.start.0..) {
                        if let Some(waiting) = acks.get(&item.id) {
                            waiting.slots.iter().for_each(|s| s.durable(lsn));
                        }
                    }
                    drop(acks);
                    shared.durable_round();
                }
                Err(e) => {
                    shared.fail(&e);
                    return;
                }
            }
        }
        if let Some(barrier) = barrier {
            let _ = barrier.send(shared.wal.stats().next_lsn.0);
        }
        if disconnected {
            shared.durable_round();
            return;
        }
    }
}
