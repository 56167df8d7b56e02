//! The processing thread: follows the WAL, converts each batch by its signal, writes it to
//! the sink whole, and moves it through its stages in the tracker.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use arrow::array::RecordBatch;
use bytes::Bytes;
use wit_batch::{BatchId, BatchMeta, Envelope, Stage, Tenant};
use wit_store::{ParquetSink, StoredFile};
use wit_tracker::{Advance, ErrorOutcome, RangeOutcome, RememberedKey};
use wit_wal::{Lsn, Reader};

use crate::convert::{Refused, convert_batch};
use crate::error::chain;
use crate::pipeline::{RecoveryReport, Shared, Waiting};
use crate::{Error, Result};

/// A batch read from the WAL and not yet stored (or given up).
struct Flight {
    id: BatchId,
    /// Its tenant, and the payload bytes it holds of the unstored bounds.
    tenant: Tenant,
    bytes: u64,
}

/// A batch whose step failed and waits to be tried again.
struct Retry {
    lsn: u64,
    due: Instant,
    stage: Stage,
    envelope: Envelope,
}

pub(crate) struct Processor {
    shared: Arc<Shared>,
    reader: Reader,
    sink: ParquetSink,
    /// The LSN after the last record read.
    next_lsn: u64,
    /// Records below this were written before the pipeline was opened: their batches may be
    /// known to the tracker already.
    replay_end: u64,
    /// Batches in complete files still waiting in staging (found on open).
    staged: HashSet<BatchId>,
    flights: BTreeMap<u64, Flight>,
    by_batch: HashMap<BatchId, u64>,
    retries: Vec<Retry>,
    /// Batches of a source partition found in the WAL unclaimed: claimed once their source
    /// runs, before it reads anything.
    parked: Vec<(u64, Bytes)>,
}

/// Whether an error is the tracker's backend failing (down, unreachable, refusing a
/// statement), which passes, rather than a refusal that a retry would meet again.
fn transient(error: &Error) -> bool {
    match error {
        Error::Tracker { source, .. } => matches!(
            source,
            wit_tracker::Error::Unavailable { .. } | wit_tracker::Error::Database { .. }
        ),
        Error::Store {
            source: wit_store::Error::Catalog { .. },
            ..
        } => true,
        _ => false,
    }
}

/// Tracker calls are retried while the tracker's backend fails, until the pipeline stops:
/// the batches are safe in the WAL meanwhile, and acknowledgments at `WalDurable` go on.
fn persist<T>(shared: &Shared, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let mut wait = Duration::from_millis(50);
    loop {
        match f() {
            Ok(value) => return Ok(value),
            Err(e) if shared.stop.load(Ordering::Acquire) => return Err(e),
            Err(e) if transient(&e) => {
                shared.note_error(&e);
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}

impl Processor {
    pub(crate) fn new(shared: Arc<Shared>, sink: ParquetSink) -> Result<Self> {
        let stats = shared.wal.stats();
        let start = stats.first_lsn.map_or(stats.next_lsn, |l| l).0;
        let reader = shared.wal.read_from(Lsn(start)).map_err(Error::wal("read"))?;
        let staged = sink
            .pending()
            .iter()
            .flat_map(|f| f.batch_ids.iter().copied())
            .collect();
        shared.safe_lsn.store(start, Ordering::Release);
        Ok(Processor {
            shared,
            reader,
            sink,
            next_lsn: start,
            replay_end: stats.next_lsn.0,
            staged,
            flights: BTreeMap::new(),
            by_batch: HashMap::new(),
            retries: Vec::new(),
            parked: Vec::new(),
        })
    }

    /// Reads the WAL up to where it ended when the pipeline was opened, storing again what
    /// is not stored yet.
    pub(crate) fn replay(&mut self, report: &mut RecoveryReport) -> Result<()> {
        while self.next_lsn < self.replay_end {
            let records = self.read()?;
            if records.is_empty() {
                break;
            }
            self.handle(records, Some(report))?;
        }
        self.after_round();
        Ok(())
    }

    /// Follows the WAL until the pipeline stops, then stores everything read.
    pub(crate) fn run(mut self) -> Result<()> {
        let mut seen_rounds = 0;
        let interval = self.shared.config.processing_interval;
        let mut last_round = Instant::now();
        let mut last_full = false;
        loop {
            let stopping = self.shared.stop.load(Ordering::Acquire);
            // Rounds that are not full start at most once per interval, so that tracker
            // commits (each one a sync of its database) are batched rather than one per
            // record when records trickle in.
            let since = last_round.elapsed();
            if !stopping && !last_full && since < interval && self.files_not_due() {
                std::thread::sleep(interval - since);
            }
            last_round = Instant::now();
            let records = self.read()?;
            last_full = records.len() >= self.shared.config.read_batch;
            let idle = records.is_empty();
            if !idle {
                self.handle(records, None)?;
            }
            if !self.parked.is_empty() && self.shared.ranges.lock().is_some() {
                let parked = std::mem::take(&mut self.parked);
                let n = parked.len() as u64;
                self.handle(parked, None)?;
                self.shared.parked.fetch_sub(n, Ordering::AcqRel);
            }
            self.retry_due(stopping)?;
            self.after_round();
            if stopping && idle {
                break;
            }
            if idle {
                let wait = self
                    .sink
                    .next_deadline()
                    .map_or(Duration::from_millis(50), |d| {
                        d.saturating_duration_since(Instant::now())
                    })
                    .clamp(Duration::from_millis(1), Duration::from_millis(50));
                self.shared.wait_durable(&mut seen_rounds, wait);
            }
        }
        if !self.shared.drain.load(Ordering::Acquire) {
            return Ok(());
        }
        // Drain: every open file is closed and published; batches whose file was given up on
        // the way are written again at once, until they are stored or given up themselves.
        loop {
            if let Err(e) = self.poll_sink(true) {
                self.after_round();
                return Err(e);
            }
            self.refused()?;
            if self.retries.is_empty() {
                break;
            }
            self.retry_due(true)?;
        }
        self.after_round();
        Ok(())
    }

    /// Starts following a batch read at `lsn` until it is stored (or given up); `hold` when
    /// its bytes are not yet counted against the unstored bound (batches of an earlier run).
    fn take_off(&mut self, lsn: u64, meta: &BatchMeta, hold: bool) {
        self.flights.insert(
            lsn,
            Flight {
                id: meta.id,
                tenant: meta.tenant.clone(),
                bytes: meta.byte_size,
            },
        );
        self.by_batch.insert(meta.id, lsn);
        if hold {
            self.shared.hold(meta.byte_size);
            self.shared.hold_tenant(&meta.tenant, meta.byte_size);
        }
    }

    /// Whether no flush is waiting for this processor to publish its files.
    fn files_not_due(&self) -> bool {
        self.shared.files_due.load(Ordering::Acquire) == 0
    }

    fn read(&mut self) -> Result<Vec<(u64, Bytes)>> {
        let mut records = Vec::new();
        while records.len() < self.shared.config.read_batch {
            match self.reader.next() {
                Some(Ok(record)) => {
                    self.next_lsn = record.lsn.0 + 1;
                    records.push((record.lsn.0, record.payload));
                }
                Some(Err(e)) => return Err(Error::wal("read")(e)),
                None => break,
            }
        }
        Ok(records)
    }

    /// Publishes what is due, and lets the janitor know how far the WAL is stored.
    fn after_round(&mut self) {
        // A flush asked for everything durable up to `due` to be published.
        let due = self.shared.files_due.load(Ordering::Acquire);
        let flush = due > 0
            && self.next_lsn >= due
            && self
                .shared
                .files_due
                .compare_exchange(due, 0, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
        if let Err(e) = self.poll_sink(flush) {
            self.shared.note_error(&e);
        }
        if let Err(e) = self.refused() {
            self.shared.note_error(&e);
        }
        let safe = self.flights.keys().next().copied().unwrap_or(self.next_lsn);
        self.shared.safe_lsn.store(safe, Ordering::Release);
        let mut status = self.shared.status.lock();
        status.batches_in_flight = self.flights.len() as u64;
    }

    /// Handles records read from the WAL: registers their batches, converts and writes them.
    fn handle(&mut self, records: Vec<(u64, Bytes)>, mut report: Option<&mut RecoveryReport>) -> Result<()> {
        let mut fresh: Vec<(u64, Envelope, Option<Stage>)> = Vec::with_capacity(records.len());
        // Batches of a source partition, claimed before anything else happens to them.
        let mut to_claim: Vec<(u64, Envelope)> = Vec::new();
        for (lsn, payload) in records {
            let envelope = match Envelope::decode(&payload) {
                Ok(envelope) => envelope,
                Err(e) => {
                    // Not a batch this pipeline can read: kept aside, never blocks the log.
                    self.shared.dead.keep_record(lsn, &payload)?;
                    self.shared.status.lock().last_error =
                        Some(format!("WAL record {lsn} is not a batch envelope (kept aside): {e}"));
                    continue;
                }
            };
            let known = if lsn < self.replay_end {
                match self.replay_decision(lsn, &envelope, &payload, report.as_deref_mut())? {
                    Some(stage) => stage,
                    None => continue,
                }
            } else {
                None
            };
            if crate::ranges::is_range(envelope.meta()) && known.is_none() {
                let source_runs = self.shared.ranges.lock().is_some();
                if !source_runs && lsn < self.replay_end {
                    // Not claimed when the last run stopped: claimed once its source runs
                    // again, before the source reads anything (or dropped, if another
                    // consumer claimed the range meanwhile). It holds the log until then.
                    if let Some(r) = report.as_deref_mut() {
                        r.replayed -= 1;
                        r.ranges_unclaimed += 1;
                    }
                    self.take_off(lsn, envelope.meta(), true);
                    self.parked.push((lsn, payload));
                    self.shared.parked.fetch_add(1, Ordering::AcqRel);
                    continue;
                }
                to_claim.push((lsn, envelope));
                continue;
            }
            // Batches written before this run hold the bound again until stored.
            self.take_off(lsn, envelope.meta(), lsn < self.replay_end);
            if lsn < self.replay_end {
                self.retake_keys(lsn, &envelope, false);
            }
            fresh.push((lsn, envelope, known));
        }
        for (lsn, envelope, stage) in self.claim(to_claim)? {
            self.take_off(lsn, envelope.meta(), false);
            fresh.push((lsn, envelope, Some(stage)));
        }
        if fresh.is_empty() {
            return Ok(());
        }
        {
            let mut seen = self.shared.seen.lock();
            for (_, envelope, _) in &fresh {
                seen.insert((envelope.meta().tenant.clone(), envelope.meta().signal));
            }
        }

        // Batches of this run whose submitters converted every part need no conversion.
        let mut ready: Vec<Option<Vec<RecordBatch>>> = {
            let mut converted = self.shared.converted.lock();
            fresh
                .iter()
                .map(|(lsn, envelope, _)| (*lsn >= self.replay_end).then(|| converted.take(envelope.meta().id))?)
                .collect()
        };
        let envelopes: Vec<(&Envelope, Option<Vec<RecordBatch>>)> = fresh
            .iter()
            .zip(ready.iter_mut())
            .map(|((_, envelope, _), rows)| (envelope, rows.take()))
            .collect();
        let converted = convert_all(envelopes, &self.shared.config.events);

        // The tracker learns of the batches (one call each for all of them): registered,
        // durable at their WAL position, converted. Steps already taken are skipped.
        let metas: Vec<BatchMeta> = fresh
            .iter()
            .filter(|(_, _, known)| known.is_none())
            .map(|(_, e, _)| e.meta().clone())
            .collect();
        let node = self.shared.config.node.as_str();
        let now = SystemTime::now();
        let mut steps = Vec::with_capacity(fresh.len() * 2);
        for ((lsn, envelope, known), converted) in fresh.iter().zip(&converted) {
            let id = envelope.meta().id;
            let reached = known.map_or(0, |s| s.code());
            if reached < Stage::WalWritten.code() {
                steps.push(Advance::new(id, Stage::WalWritten, now).with_wal_position(node, *lsn));
            }
            if converted.is_ok() && reached < Stage::Ingested.code() {
                steps.push(Advance::new(id, Stage::Ingested, now));
            }
        }
        let tracker = self.shared.tracker.clone();
        let registered = persist(&self.shared, || {
            tracker.register(&metas).map_err(Error::tracker("register batches"))
        })?;
        if let Some(report) = report {
            report.registered += registered
                .iter()
                .filter(|r| **r == wit_tracker::Registration::Registered)
                .count() as u64;
        }
        // Idempotency keys outlive the WAL record in the tracker: written before the batch
        // can be stored (and its record released).
        let keys: Vec<RememberedKey> = fresh
            .iter()
            .flat_map(|(_, envelope, _)| {
                let meta = envelope.meta();
                envelope.parts().iter().filter_map(|part| {
                    let idem = part.idempotency.as_ref()?;
                    Some(RememberedKey::new(
                        meta.tenant.clone(),
                        idem.key(),
                        meta.id,
                        idem.receipt().to_vec(),
                        meta.created_at,
                    ))
                })
            })
            .collect();
        if !keys.is_empty() {
            persist(&self.shared, || {
                tracker
                    .remember_keys(&keys)
                    .map_err(Error::tracker("remember idempotency keys"))
            })?;
            self.shared.keys.remembered(&keys);
        }
        persist(&self.shared, || {
            tracker.advance(&steps).map_err(Error::tracker("advance batches"))
        })?;

        let mut empty = Vec::new();
        for ((lsn, envelope, _), converted) in fresh.into_iter().zip(converted) {
            match converted {
                Err(e) => self.step_failed(lsn, envelope, Stage::Ingested, &e)?,
                Ok((batch, refused)) => {
                    self.dead_letter_parts(&envelope, &refused)?;
                    if batch.num_rows() == 0 {
                        empty.push(envelope.meta().id);
                    } else {
                        self.write(lsn, envelope, &batch)?;
                    }
                }
            }
        }
        self.store_empty(&empty)
    }

    /// Claims the ranges of source-partition batches read in this run (one tracker call, in
    /// WAL order) and returns those to convert and store, with the stage they reached. A
    /// batch whose range is claimed already is dropped; the source hears of every outcome.
    fn claim(&mut self, batches: Vec<(u64, Envelope)>) -> Result<Vec<(u64, Envelope, Stage)>> {
        if batches.is_empty() {
            return Ok(Vec::new());
        }
        let (source, reports) = match &*self.shared.ranges.lock() {
            Some(ranges) => (ranges.source.clone(), Some(ranges.reports.clone())),
            None => (String::new(), None),
        };
        let node = self.shared.config.node.as_str().to_owned();
        let now = SystemTime::now();
        let mut claims = Vec::with_capacity(batches.len());
        let mut claimable = Vec::with_capacity(batches.len());
        for (lsn, envelope) in batches {
            let claim = if source.is_empty() {
                Err("no source of partition batches runs".to_owned())
            } else {
                crate::ranges::claim_of(envelope.meta(), &source, &node, lsn, now)
            };
            match claim {
                Ok(claim) => {
                    claims.push(claim);
                    claimable.push((lsn, envelope));
                }
                Err(reason) => {
                    let reason = format!("batch {} cannot be claimed: {reason}", envelope.meta().id);
                    self.drop_range(envelope.meta(), &reason);
                    self.shared.status.lock().last_error = Some(reason);
                }
            }
        }
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let tracker = self.shared.tracker.clone();
        let outcomes = persist(&self.shared, || {
            tracker
                .claim_ranges(&claims)
                .map_err(Error::tracker("claim source offset ranges"))
        })?;
        let mut out = Vec::with_capacity(claimable.len());
        for ((lsn, envelope), (claim, outcome)) in claimable.into_iter().zip(claims.into_iter().zip(outcomes)) {
            let stage = match outcome {
                RangeOutcome::Claimed => Some(Stage::SourceCommitted),
                RangeOutcome::AlreadyRegistered { stage } if stage.code() <= Stage::Ingested.code() => Some(stage),
                RangeOutcome::AlreadyRegistered { .. } | RangeOutcome::Conflict { .. } => None,
            };
            if let Some(reports) = &reports {
                let _ = reports.send(crate::ranges::RangeReport {
                    batch: envelope.meta().id,
                    topic: claim.topic,
                    partition: claim.partition,
                    to: claim.to,
                    outcome,
                });
            }
            match stage {
                Some(stage) => out.push((lsn, envelope, stage)),
                None => {
                    let reason = match outcome {
                        RangeOutcome::Conflict { stored } => format!(
                            "its offset range was claimed already (the stored offset is {stored:?}, not {:?})",
                            envelope.meta().first_offset
                        ),
                        _ => "it was stored already".to_owned(),
                    };
                    self.drop_range(envelope.meta(), &reason);
                }
            }
        }
        Ok(out)
    }

    /// The parts of a source-partition batch that did not convert (poison messages) become
    /// dead letters of its tenant, with their topic, partition, offset and why, durable in
    /// the WAL before the batch can be stored: a crash before then replays the batch, which
    /// finds them again (each under an idempotency key of its offset, so it is taken once).
    fn dead_letter_parts(&mut self, envelope: &Envelope, refused: &Refused) -> Result<()> {
        if refused.is_empty() {
            return Ok(());
        }
        let meta = envelope.meta();
        let source = self
            .shared
            .ranges
            .lock()
            .as_ref()
            .map(|r| r.source.clone())
            .unwrap_or_default();
        let topic = meta.topics.first().cloned().unwrap_or_default();
        let partition = meta.partition.unwrap_or_default();
        let mut acks = Vec::with_capacity(refused.len());
        for (i, reason) in refused {
            let Some(part) = envelope.parts().get(*i) else { continue };
            let offset = part.source_offset.unwrap_or(-1);
            let key = format!("kafka:{source}:{topic}:{partition}:{offset}");
            let letter = crate::ranges::dead_letter(meta.signal, &topic, partition, offset, &part.payload, reason);
            if let Some(ack) = self.shared.submit_dead_letter(&meta.tenant, &key, letter)? {
                acks.push(ack);
            }
            self.shared.status.lock().dead_letters += 1;
            metrics::counter!("wit_kafka_dead_letters_total").increment(1);
        }
        self.shared.flush_batcher()?;
        for ack in acks {
            ack.wait()?;
        }
        Ok(())
    }

    /// Lets go of a source-partition batch of this run that will not be stored: what it held
    /// is released and its submitter's acknowledgment is refused.
    fn drop_range(&mut self, meta: &BatchMeta, reason: &str) {
        if let Some(lsn) = self.by_batch.remove(&meta.id) {
            self.flights.remove(&lsn);
        }
        self.shared.release(meta.byte_size);
        self.shared.release_tenant(&meta.tenant, meta.byte_size);
        self.shared.converted.lock().take(meta.id);
        if let Some(waiting) = self.shared.acks.lock().remove(&meta.id) {
            let reason = format!("batch {} was dropped: {reason}", meta.id);
            waiting.slots.iter().for_each(|s| s.abandon(&reason));
        }
        self.shared.status.lock().ranges_dropped += 1;
        metrics::counter!("wit_pipeline_ranges_dropped_total").increment(1);
    }

    /// For a record written before this run: `None` when its batch needs nothing more (it is
    /// stored, waiting in a staged file, or failed), else the stage the tracker has it in.
    fn replay_decision(
        &mut self,
        lsn: u64,
        envelope: &Envelope,
        payload: &[u8],
        mut report: Option<&mut RecoveryReport>,
    ) -> Result<Option<Option<Stage>>> {
        let id = envelope.meta().id;
        let tracker = self.shared.tracker.clone();
        let record = persist(&self.shared, || match tracker.batch(id) {
            Ok(record) => Ok(Some(record)),
            Err(wit_tracker::Error::UnknownBatch { .. }) => Ok(None),
            Err(e) => Err(Error::tracker("look up a batch")(e)),
        })?;
        let stage = record.as_ref().map(|r| r.stage);
        match stage {
            Some(stage @ (Stage::Stored | Stage::Indexed)) => {
                self.shared.completable.lock().push((lsn, id));
                if let Some(indexing) = &self.shared.indexing
                    && stage == Stage::Indexed
                {
                    indexing.done(&[id]);
                }
                if let Some(r) = report.as_deref_mut() {
                    r.already_stored += 1;
                }
                return Ok(None);
            }
            Some(Stage::Completed) => return Ok(None),
            Some(Stage::Failed) => {
                if !self.shared.dead.contains(id) {
                    self.shared.dead.keep(id, payload)?;
                }
                if let Some(r) = report.as_deref_mut() {
                    r.failed += 1;
                }
                return Ok(None);
            }
            _ => {}
        }
        // The catalog is the tracker: a batch in a published file is STORED (one transaction),
        // so the look-up above already found it.
        if self.staged.contains(&id) {
            // Its file is complete in staging and is published (marking it STORED) as soon as
            // the destination takes it; until then the batch holds the log. Its keys were
            // remembered before it was written.
            self.take_off(lsn, envelope.meta(), true);
            self.retake_keys(lsn, envelope, true);
            if let Some(r) = report.as_deref_mut() {
                r.already_stored += 1;
            }
            return Ok(None);
        }
        if let Some(r) = report {
            r.replayed += 1;
        }
        Ok(Some(stage))
    }

    /// Recovery: the idempotency keys of a batch written before this run are taken again,
    /// their acknowledgments following the batch.
    fn retake_keys(&self, lsn: u64, envelope: &Envelope, remembered: bool) {
        let meta = envelope.meta();
        for part in envelope.parts() {
            let Some(idem) = &part.idempotency else { continue };
            if let Some(slot) = self.shared.keys.replayed(&meta.tenant, idem, meta.id, lsn, remembered) {
                self.shared
                    .acks
                    .lock()
                    .entry(meta.id)
                    .or_insert_with(|| Waiting { slots: Vec::new() })
                    .slots
                    .push(slot);
            }
        }
    }

    /// Writes a converted batch to the sink, whole, into one file.
    fn write(&mut self, lsn: u64, envelope: Envelope, batch: &RecordBatch) -> Result<()> {
        let meta = envelope.meta();
        match self.sink.write(&meta.tenant, meta.signal, batch, &[meta.id]) {
            Ok(()) => {
                if let Some(hot) = &self.shared.config.hot {
                    hot.insert(&meta.tenant, meta.signal, meta.id, batch.clone());
                }
                Ok(())
            }
            Err(wit_store::Error::FileAbandoned { batches, source }) => {
                self.abandoned(&batches, Error::store("write")(*source))
            }
            Err(e) => self.step_failed(lsn, envelope, Stage::Stored, &Error::store("write")(e)),
        }
    }

    /// An open file was given up after a write error: every batch it held is written again
    /// (read back from the WAL), as a failed `STORED` step.
    fn abandoned(&mut self, batches: &[BatchId], error: Error) -> Result<()> {
        for id in batches {
            let Some(&lsn) = self.by_batch.get(id) else {
                continue;
            };
            let envelope = self.reread(lsn, *id)?;
            self.step_failed(lsn, envelope, Stage::Stored, &error)?;
        }
        Ok(())
    }

    /// A batch's envelope read back from the WAL (which keeps it until it is stored).
    fn reread(&self, lsn: u64, id: BatchId) -> Result<Envelope> {
        let mut reader = self.shared.wal.read_from(Lsn(lsn)).map_err(Error::wal("read"))?;
        let record = reader
            .next()
            .ok_or_else(|| Error::Closed {
                reason: Some(format!("WAL record {lsn} of batch {id} is gone")),
            })?
            .map_err(Error::wal("read"))?;
        Envelope::decode(&record.payload).map_err(|e| Error::Convert {
            batch: id,
            source: Box::new(e),
        })
    }

    /// Publishes what is due; files abandoned on the way are written again.
    fn poll_sink(&mut self, flush: bool) -> Result<()> {
        let polled = if flush {
            self.sink.flush()
        } else {
            self.sink.poll(Instant::now())
        };
        match polled {
            Ok(files) => {
                self.published(&files);
                Ok(())
            }
            Err(wit_store::Error::FileAbandoned { batches, source }) => {
                let error = Error::store("close a file")(*source);
                self.shared.note_error(&error);
                self.abandoned(&batches, error)
            }
            Err(e) => Err(Error::store(if flush { "flush" } else { "publish" })(e)),
        }
    }

    /// Batches without rows have nothing to store: they are `STORED` as they are.
    fn store_empty(&mut self, ids: &[BatchId]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let now = SystemTime::now();
        let steps: Vec<Advance> = ids.iter().map(|id| Advance::new(*id, Stage::Stored, now)).collect();
        let tracker = self.shared.tracker.clone();
        persist(&self.shared, || {
            tracker.advance(&steps).map_err(Error::tracker("store empty batches"))
        })?;
        for id in ids {
            self.stored(*id);
        }
        // No rows, no file, nothing to index.
        if let Some(indexing) = &self.shared.indexing {
            indexing.done(ids);
        }
        Ok(())
    }

    /// Records a failed step: tried again later, or given up (kept in the dead-letter
    /// directory first, so the WAL may release it).
    fn step_failed(&mut self, lsn: u64, envelope: Envelope, stage: Stage, error: &Error) -> Result<()> {
        let id = envelope.meta().id;
        let message = chain(error);
        self.shared.note_error(error);
        let tracker = self.shared.tracker.clone();
        let outcome = persist(&self.shared, || {
            tracker
                .record_error(id, stage, &message, SystemTime::now())
                .map_err(Error::tracker("record an error"))
        })?;
        match outcome {
            ErrorOutcome::Retry { retry_count } => {
                let backoff =
                    self.shared.config.retry_backoff * 2u32.saturating_pow(retry_count.saturating_sub(1).min(10));
                self.retries.push(Retry {
                    lsn,
                    due: Instant::now() + backoff,
                    stage,
                    envelope,
                });
            }
            ErrorOutcome::Failed { .. } => {
                self.shared.dead.keep(id, &envelope.encode())?;
                // Given up: its rows will not reach a file, so queries stop showing them.
                if let Some(hot) = &self.shared.config.hot {
                    hot.remove(&[id]);
                }
                if let Some(flight) = self.flights.remove(&lsn) {
                    self.by_batch.remove(&flight.id);
                    self.shared.release(flight.bytes);
                    self.shared.release_tenant(&flight.tenant, flight.bytes);
                }
                if let Some(waiting) = self.shared.acks.lock().remove(&id) {
                    waiting.slots.iter().for_each(|s| s.failed(&message));
                }
                self.shared.status.lock().batches_failed += 1;
                metrics::counter!("wit_pipeline_batches_failed_total").increment(1);
            }
        }
        Ok(())
    }

    /// Tries again the failed steps that are due (all of them when stopping).
    fn retry_due(&mut self, all: bool) -> Result<()> {
        let now = Instant::now();
        let (due, later): (Vec<Retry>, Vec<Retry>) = std::mem::take(&mut self.retries)
            .into_iter()
            .partition(|r| all || r.due <= now);
        self.retries = later;
        for retry in due {
            let id = retry.envelope.meta().id;
            match convert_batch(&retry.envelope, &self.shared.config.events) {
                Err(e) => self.step_failed(retry.lsn, retry.envelope, retry.stage, &e)?,
                Ok((batch, refused)) => {
                    self.dead_letter_parts(&retry.envelope, &refused)?;
                    if retry.stage == Stage::Ingested {
                        let tracker = self.shared.tracker.clone();
                        let steps = [Advance::new(id, Stage::Ingested, SystemTime::now())];
                        persist(&self.shared, || {
                            tracker
                                .advance(&steps)
                                .map_err(Error::tracker("advance a retried batch"))
                        })?;
                    }
                    if batch.num_rows() == 0 {
                        self.store_empty(&[id])?;
                    } else {
                        self.write(retry.lsn, retry.envelope, &batch)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Files published: their batches are stored.
    fn published(&mut self, files: &[StoredFile]) {
        for file in files {
            // Counted before the acknowledgments `stored` releases.
            self.shared.status.lock().records_stored += file.rows;
            metrics::counter!("wit_pipeline_records_stored_total").increment(file.rows);
            // The bytes its batches held of the unstored bound are held of the unindexed one
            // until the file is indexed (taken before `stored` forgets the batches).
            let held: u64 = file
                .batch_ids
                .iter()
                .filter_map(|id| self.by_batch.get(id))
                .filter_map(|lsn| self.flights.get(lsn))
                .map(|flight| flight.bytes)
                .sum();
            if let Some(indexing) = &self.shared.indexing {
                self.shared.hold_unindexed(held);
                if !indexing.push(file.clone(), self.sink.take_rows(&file.path), held) {
                    self.shared.release_unindexed(held);
                }
            }
            for id in &file.batch_ids {
                self.stored(*id);
            }
        }
    }

    fn stored(&mut self, id: BatchId) {
        // Its file is in the catalog: queries read it from there now.
        if let Some(hot) = &self.shared.config.hot {
            hot.remove(&[id]);
        }
        self.staged.remove(&id);
        let Some(lsn) = self.by_batch.remove(&id) else {
            return;
        };
        if let Some(flight) = self.flights.remove(&lsn) {
            self.shared.release(flight.bytes);
            self.shared.release_tenant(&flight.tenant, flight.bytes);
        }
        // Counted before the acknowledgments it releases (a host that saw `Stored` sees it).
        self.shared.status.lock().batches_stored += 1;
        metrics::counter!("wit_pipeline_batches_stored_total").increment(1);
        if let Some(waiting) = self.shared.acks.lock().remove(&id) {
            waiting.slots.iter().for_each(|s| s.stored(lsn));
            if let Some(indexing) = &self.shared.indexing {
                indexing.wait_for(id, waiting.slots);
            }
        }
        self.shared.completable.lock().push((lsn, id));
    }

    /// Files the catalog refused: batches that are stored elsewhere count as stored; the
    /// others are read again from the WAL and written once more.
    fn refused(&mut self) -> Result<()> {
        for (file, error) in self.sink.take_refused() {
            let error = Error::store("publish")(error);
            self.shared.note_error(&error);
            for id in file.batch_ids {
                let Some(&lsn) = self.by_batch.get(&id) else {
                    continue;
                };
                let tracker = self.shared.tracker.clone();
                let stage = persist(&self.shared, || {
                    tracker
                        .batch(id)
                        .map(|r| r.stage)
                        .map_err(Error::tracker("look up a batch"))
                })?;
                if matches!(stage, Stage::Stored | Stage::Indexed | Stage::Completed) {
                    self.stored(id);
                    continue;
                }
                let envelope = self.reread(lsn, id)?;
                self.step_failed(lsn, envelope, Stage::Stored, &error)?;
            }
        }
        Ok(())
    }
}

/// Converts a round's envelopes, on two threads when there are several (the processor's own
/// and one more): decoding is a fair share of a batch's work, and the Parquet encoding that
/// follows runs on this thread alone.
///
/// A batch given with its parts' rows (converted by its submitters) is only concatenated.
fn convert_all(
    envelopes: Vec<(&Envelope, Option<Vec<RecordBatch>>)>,
    events: &wit_batch::events::EventOptions,
) -> Vec<Result<(RecordBatch, Refused)>> {
    let one = |(envelope, rows): (&Envelope, Option<Vec<RecordBatch>>)| match rows {
        Some(rows) => crate::convert::concat(envelope, rows).map(|rows| (rows, Vec::new())),
        None => convert_batch(envelope, events),
    };
    let work = envelopes.iter().filter(|(_, rows)| rows.is_none()).count();
    if work < 2 {
        return envelopes.into_iter().map(one).collect();
    }
    let mut first = envelopes;
    let second = first.split_off(first.len() / 2);
    std::thread::scope(|scope| {
        let other = scope.spawn(|| second.into_iter().map(one).collect::<Vec<_>>());
        let mut out: Vec<Result<(RecordBatch, Refused)>> = first.into_iter().map(one).collect();
        match other.join() {
            Ok(rest) => out.extend(rest),
            Err(panic) => std::panic::resume_unwind(panic),
        }
        out
    })
}
