//! The reference model of the differential tests: the tracker's rules stated once more, plainly,
//! from its public documentation alone (the docs of `Tracker`, `FileCatalog`, `wit_batch::Stage`
//! and the model types, ARCHITECTURE.md's wit-tracker section, and the conformance suite), so
//! that a rule broken in the code every backend shares (`plan.rs`) shows as a difference.
//!
//! It holds batches, stored source offsets and stored files in ordered maps, and has its own
//! transition table ([`forward`], [`step`]); it calls nothing of `plan.rs` or of
//! `InMemoryTracker`. Where the documentation is silent, it does what the backends do, and says
//! so where it does.
//!
//! `BatchRecord` cannot be built outside the crate, and the text of an
//! `Error::InvalidArgument` is no rule, so the model answers through [`Subject`], whose results
//! the backends' answers are converted to: records as [`Rec`], errors as [`Failure`] (kind and
//! the fields the documentation names).

use std::cell::RefCell;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, SystemTime};

use wit_batch::{BatchId, BatchMeta, Signal, Stage, Tenant, Transition};
use wit_store::{FileIndex, StoredFile, TimeRange};
use wit_tracker::{
    Advance, BatchQuery, BatchSelection, ClaimRequest, ClientThroughput, ErrorOutcome, RangeClaim, RangeOutcome,
    Registration, SourceOffset, WalPosition, Window,
};

/// The start of the differential tests' times: every time a test chooses is after it, and the
/// wall clock a catalog call reads (it takes no time: `STORED` and `INDEXED` by a file are
/// "now") is long before it.
pub fn epoch() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(4_000_000_000)
}

/// A time as compared: one the test chose, or the wall clock of a catalog call.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum When {
    Clock,
    At(SystemTime),
}

impl When {
    pub fn of(t: SystemTime) -> When {
        if t >= epoch() { When::At(t) } else { When::Clock }
    }
}

impl fmt::Debug for When {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            When::Clock => f.write_str("clock"),
            When::At(t) => {
                let since = t.duration_since(epoch()).unwrap_or_default();
                write!(f, "+{}us", since.as_micros())
            }
        }
    }
}

/// A batch's record, as compared (every field of `BatchRecord`).
#[derive(Debug, Clone, PartialEq)]
pub struct Rec {
    pub meta: BatchMeta,
    pub stage: Stage,
    pub failed_in: Option<Stage>,
    /// The stages reached, with when, in lifecycle order.
    pub reached: Vec<(Stage, When)>,
    pub wal_position: Option<WalPosition>,
    pub error_stage: Option<Stage>,
    pub error_message: Option<String>,
    pub retry_count: u32,
    /// The lease: worker and end.
    pub lease: Option<(String, When)>,
    pub updated_at: When,
}

/// A page of a listing, as compared: the records, and where the next page starts (the
/// creation time and id of the page's last batch), if the listing goes on.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub batches: Vec<Rec>,
    pub next: Option<(SystemTime, BatchId)>,
}

/// An error as compared: its kind and the fields the documentation names. (The text of an
/// `InvalidArgument` or the reason of an `InvalidFile` is not compared.)
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    UnknownBatch {
        batch: BatchId,
    },
    InvalidTransition {
        batch: BatchId,
        from: Stage,
        to: Stage,
    },
    LeaseLost {
        batch: BatchId,
        worker: String,
        holder: Option<String>,
    },
    InvalidArgument,
    InvalidFile {
        path: String,
    },
    FileExists {
        path: String,
    },
    BatchAlreadyStored {
        batch: BatchId,
        path: String,
        stored_in: String,
    },
    UnknownFile {
        path: String,
    },
    WrongFileState {
        path: String,
        state: String,
    },
    IndexExists {
        path: String,
        index: String,
    },
    /// `wit_store::Error::Catalog` holding a tracker error.
    Catalog(Box<Failure>),
    /// Anything else, by its message.
    Other(String),
    /// Any one of these (the model only, where the documentation does not say which of a
    /// call's several faults is reported).
    OneOf(Vec<Failure>),
}

pub type Res<T> = Result<T, Failure>;

/// The calls the differential tests make, on the model or on a backend (`Tracker` and
/// `FileCatalog`, answers converted).
pub trait Subject {
    fn register(&self, batches: &[BatchMeta]) -> Res<Vec<Registration>>;
    fn advance(&self, steps: &[Advance]) -> Res<Vec<Transition>>;
    /// `record_error`, or `record_error_by` with a worker.
    fn record_error(
        &self,
        batch: BatchId,
        stage: Stage,
        message: &str,
        at: SystemTime,
        worker: Option<&str>,
    ) -> Res<ErrorOutcome>;
    fn claim(&self, request: &ClaimRequest) -> Res<Vec<Rec>>;
    fn claim_ranges(&self, claims: &[RangeClaim]) -> Res<Vec<RangeOutcome>>;
    fn purge_completed(&self, completed_before: SystemTime) -> Res<u64>;
    fn batch(&self, batch: BatchId) -> Res<Rec>;
    fn list_batches(&self, query: &BatchQuery) -> Res<Page>;
    /// Every stage with its count, zeros included, in lifecycle order.
    fn stage_counts(&self, window: Window, tenant: Option<&Tenant>) -> Res<Vec<(Stage, u64)>>;
    fn client_throughput(&self, window: Window) -> Res<Vec<ClientThroughput>>;
    fn oldest_unstored_wal_position(&self, node: &str) -> Res<Option<u64>>;
    fn source_offsets(&self, source: &str) -> Res<Vec<SourceOffset>>;

    fn publish(&self, files: &[StoredFile]) -> Res<()>;
    fn list(&self, tenant: &Tenant, signal: Signal, time: Option<TimeRange>) -> Res<Vec<StoredFile>>;
    fn replace(&self, old: &[String], new: &[StoredFile], delete_after: SystemTime) -> Res<()>;
    fn retire(&self, paths: &[String], delete_after: SystemTime) -> Res<()>;
    fn files_holding(&self, batch: BatchId) -> Res<Vec<StoredFile>>;
    fn deletable(&self, now: SystemTime) -> Res<Vec<StoredFile>>;
    fn forget(&self, paths: &[String]) -> Res<u64>;
    fn record_index(&self, file: &str, index: &FileIndex) -> Res<()>;
    fn unindexed(&self, limit: usize) -> Res<Vec<StoredFile>>;
}

// ---------------------------------------------------------------------------------------------
// The lifecycle.

/// The lifecycle's forward steps, written out from the diagram in `wit_batch::Stage`'s docs:
///
/// ```text
/// CREATED -> WAL_WRITTEN -> (SOURCE_COMMITTED) -> INGESTED -> STORED -> (INDEXED) -> COMPLETED
/// ```
///
/// `SOURCE_COMMITTED` only for sources with offsets, `INDEXED` only for pipelines that index.
/// `FAILED` is not here: a batch gets there by `record_error` only (a step into it is an
/// `InvalidArgument`), and leaves it only by a retry into the stage it failed in. Nothing
/// leaves `COMPLETED`.
fn forward(from: Stage, to: Stage) -> bool {
    use Stage::*;
    matches!(
        (from, to),
        (Created, WalWritten)
            | (WalWritten, SourceCommitted)
            | (WalWritten, Ingested)
            | (SourceCommitted, Ingested)
            | (Ingested, Stored)
            | (Stored, Indexed)
            | (Stored, Completed)
            | (Indexed, Completed)
    )
}

/// What a step into `to` is for a batch in `stage` (that failed in `failed_in`, if `FAILED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Move {
    /// The batch is in that stage already: `AlreadyApplied`, nothing changes.
    Repeat,
    /// A step of the lifecycle.
    Forward,
    /// A retry by hand: out of `FAILED` into the stage the batch failed in.
    Retry,
    /// Anything else: `InvalidTransition`.
    Refused,
}

fn step(stage: Stage, failed_in: Option<Stage>, to: Stage) -> Move {
    match (stage, to) {
        (Stage::Failed, Stage::Failed) => Move::Repeat,
        (Stage::Failed, to) if Some(to) == failed_in => Move::Retry,
        (Stage::Failed, _) => Move::Refused,
        (stage, to) if stage == to => Move::Repeat,
        (stage, to) if forward(stage, to) => Move::Forward,
        _ => Move::Refused,
    }
}

/// The stages whose batches hold back their node's WAL: those not yet `STORED` (`FAILED` does
/// not, `Tracker::oldest_unstored_wal_position`).
fn holds_wal(stage: Stage) -> bool {
    matches!(
        stage,
        Stage::Created | Stage::WalWritten | Stage::SourceCommitted | Stage::Ingested
    )
}

/// Whole microseconds: every backend keeps times so (ARCHITECTURE.md). Times here are after
/// 1970.
fn micros(t: SystemTime) -> SystemTime {
    let us = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_micros();
    SystemTime::UNIX_EPOCH + Duration::from_micros(u64::try_from(us).unwrap_or(u64::MAX))
}

fn fits_i64(n: u64) -> bool {
    i64::try_from(n).is_ok()
}

// ---------------------------------------------------------------------------------------------
// The model.

#[derive(Debug, Clone)]
struct Batch {
    meta: BatchMeta,
    stage: Stage,
    failed_in: Option<Stage>,
    /// When each stage was reached, by stage code.
    reached: BTreeMap<u8, When>,
    wal_position: Option<WalPosition>,
    error_stage: Option<Stage>,
    error_message: Option<String>,
    retry_count: u32,
    lease: Option<(String, SystemTime)>,
    updated_at: When,
}

impl Batch {
    /// Registered: `CREATED` at its creation time (to the microsecond).
    fn new(meta: &BatchMeta) -> Batch {
        let mut meta = meta.clone();
        meta.created_at = micros(meta.created_at);
        let created = When::At(meta.created_at);
        Batch {
            meta,
            stage: Stage::Created,
            failed_in: None,
            reached: BTreeMap::from([(Stage::Created.code(), created)]),
            wal_position: None,
            error_stage: None,
            error_message: None,
            retry_count: 0,
            lease: None,
            updated_at: created,
        }
    }

    /// Applies a step that is a [`Move::Forward`] or a [`Move::Retry`]: the stage changes,
    /// the step's WAL position is recorded, errors since the batch last moved are forgotten
    /// and the lease is dropped. A retry keeps the stage's first time ("the original time
    /// stays", conformance) and clears `failed_in`; the last error's stage and message stay.
    ///
    /// A retry records its step's WAL position too: `Advance::wal_position` is "recorded when
    /// the step applies", and `Tracker::advance` stores "each step's WAL position". (The
    /// backends drop a retry's position, so a batch retried with a new one does not hold its
    /// node's WAL: a difference this model reports.)
    fn enter(&mut self, how: Move, to: Stage, at: When, wal_position: Option<&WalPosition>) {
        match how {
            Move::Forward => {
                self.reached.insert(to.code(), at);
            }
            Move::Retry => self.failed_in = None,
            Move::Repeat | Move::Refused => unreachable!("{how:?} changes nothing"),
        }
        self.stage = to;
        if let Some(position) = wal_position {
            self.wal_position = Some(position.clone());
        }
        self.retry_count = 0;
        self.lease = None;
        self.updated_at = at;
    }

    fn rec(&self) -> Rec {
        Rec {
            meta: self.meta.clone(),
            stage: self.stage,
            failed_in: self.failed_in,
            reached: Stage::ALL
                .into_iter()
                .filter_map(|s| Some((s, *self.reached.get(&s.code())?)))
                .collect(),
            wal_position: self.wal_position.clone(),
            error_stage: self.error_stage,
            error_message: self.error_message.clone(),
            retry_count: self.retry_count,
            lease: self.lease.clone().map(|(w, until)| (w, When::At(until))),
            updated_at: self.updated_at,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileState {
    Live,
    Retired { delete_after: SystemTime },
}

#[derive(Debug, Clone, Default)]
struct State {
    batches: BTreeMap<BatchId, Batch>,
    /// Stored offsets by (source, topic, partition).
    offsets: BTreeMap<(String, String, i32), i64>,
    /// Catalogued files by path, their batch ids sorted.
    files: BTreeMap<String, (StoredFile, FileState)>,
}

/// The reference model. Every call works on a copy of the state and keeps it only when the
/// call succeeds: one transaction per call.
#[derive(Debug)]
pub struct Reference {
    /// Retries after the first failed attempt (`RetryPolicy::with_max_retries`).
    max_retries: u32,
    state: RefCell<State>,
}

impl Reference {
    pub fn new(max_retries: u32) -> Reference {
        Reference {
            max_retries,
            state: RefCell::default(),
        }
    }

    /// Runs `call` on a copy of the state, kept if it succeeds.
    fn transaction<T>(&self, call: impl FnOnce(&mut State) -> Res<T>) -> Res<T> {
        let mut copy = self.state.borrow().clone();
        let out = call(&mut copy)?;
        *self.state.borrow_mut() = copy;
        Ok(out)
    }

    fn read<T>(&self, query: impl FnOnce(&State) -> T) -> Res<T> {
        Ok(query(&self.state.borrow()))
    }
}

/// A fenced step's or error's check: `worker` must hold `lease` and the lease must not have
/// run out at `at` (it runs out at its end: conformance `fenced_steps_need_the_lease`).
/// `LeaseLost` names the worker whose lease was current at `at`, if any.
fn fence(batch: BatchId, lease: Option<&(String, SystemTime)>, worker: &str, at: SystemTime) -> Res<()> {
    let at = micros(at);
    let current = lease.filter(|(_, until)| at < *until);
    match current {
        Some((holder, _)) if holder == worker => Ok(()),
        _ => Err(Failure::LeaseLost {
            batch,
            worker: worker.to_owned(),
            holder: current.map(|(w, _)| w.clone()),
        }),
    }
}

/// Records, oldest first (ties by id: undocumented, as the backends do), at most `limit`.
fn in_window(window: &Window, t: SystemTime) -> bool {
    window.from <= t && t < window.to
}

fn of_tenant(tenant: Option<&Tenant>, b: &Batch) -> bool {
    tenant.is_none_or(|t| b.meta.tenant == *t)
}

// ---------------------------------------------------------------------------------------------
// Stored files.

/// A path in the store: non-empty, relative, of non-empty components other than `.` and `..`,
/// without control characters (`StoredFile::validate`).
fn path_ok(path: &str) -> bool {
    !path.is_empty()
        && !path.chars().any(char::is_control)
        && path.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Whether `index` fits `file`: a valid path other than the file's, a document per row.
fn index_fits(file: &StoredFile, index: &FileIndex) -> bool {
    path_ok(&index.path) && index.path != file.path && index.docs == file.rows
}

/// What every catalog requires of a file (`StoredFile::validate`).
fn file_ok(file: &StoredFile) -> bool {
    let ids: BTreeSet<BatchId> = file.batch_ids.iter().copied().collect();
    path_ok(&file.path)
        && file.time_range.min <= file.time_range.max
        && ids.len() == file.batch_ids.len()
        && file.index.as_ref().is_none_or(|index| index_fits(file, index))
}

/// The file as catalogues keep it: its batch ids sorted.
fn sorted(file: &StoredFile) -> StoredFile {
    let mut file = file.clone();
    file.batch_ids.sort();
    file
}

/// Whether publishing `given` over `held` (the file catalogued under its path) is publishing
/// it again: identical, or identical but for an index recorded since (`FileCatalog::publish`).
fn republishes(given: &StoredFile, held: &StoredFile) -> bool {
    given == held
        || (given.index.is_none()
            && *given
                == StoredFile {
                    index: None,
                    ..held.clone()
                })
}

impl State {
    /// The files of a `publish` or `replace` to insert (those published again are not), after
    /// checking each (`InvalidFile`, also for a path given twice) and their paths
    /// (`FileExists`).
    fn files_to_insert(&self, files: &[StoredFile]) -> Res<Vec<StoredFile>> {
        let mut seen = BTreeSet::new();
        for file in files {
            if !file_ok(file) || !seen.insert(file.path.as_str()) {
                return Err(Failure::InvalidFile {
                    path: file.path.clone(),
                });
            }
        }
        let mut insert = Vec::new();
        for file in files.iter().map(sorted) {
            match self.files.get(&file.path) {
                Some((held, _)) if republishes(&file, held) => {}
                Some(_) => return Err(Failure::FileExists { path: file.path }),
                None => insert.push(file),
            }
        }
        Ok(insert)
    }

    /// A batch is in at most one live file: `BatchAlreadyStored` for the first file of
    /// `insert` holding a batch that a live file not in `retiring`, or an earlier file of
    /// `insert`, holds (its smallest such batch, in the live file of the smallest path:
    /// `wit_store::rules::check_batches_not_stored`'s docs).
    fn check_not_stored(&self, insert: &[StoredFile], retiring: &[String]) -> Res<()> {
        let mut holder: BTreeMap<BatchId, String> = BTreeMap::new();
        for (path, (file, state)) in &self.files {
            if *state == FileState::Live && !retiring.contains(path) {
                for id in &file.batch_ids {
                    holder.entry(*id).or_insert_with(|| path.clone());
                }
            }
        }
        for file in insert {
            if let Some((batch, stored_in)) = file
                .batch_ids
                .iter()
                .find_map(|id| holder.get(id).map(|p| (*id, p.clone())))
            {
                return Err(Failure::BatchAlreadyStored {
                    batch,
                    path: file.path.clone(),
                    stored_in,
                });
            }
            for id in &file.batch_ids {
                holder.insert(*id, file.path.clone());
            }
        }
        Ok(())
    }

    /// Marks the batches of `ids` that are at `STORED` `INDEXED`, now; the others (earlier
    /// stages, `INDEXED`, `COMPLETED`, `FAILED`, purged) are left alone.
    fn index(&mut self, ids: &[BatchId]) {
        for id in ids {
            if let Some(b) = self.batches.get_mut(id)
                && b.stage == Stage::Stored
            {
                b.enter(Move::Forward, Stage::Indexed, When::Clock, None);
            }
        }
    }

    fn live(&self) -> impl Iterator<Item = &StoredFile> {
        self.files
            .values()
            .filter(|(_, state)| *state == FileState::Live)
            .map(|(f, _)| f)
    }
}

impl Subject for Reference {
    fn register(&self, batches: &[BatchMeta]) -> Res<Vec<Registration>> {
        if batches
            .iter()
            .any(|m| !fits_i64(m.message_count) || !fits_i64(m.byte_size))
        {
            return Err(Failure::InvalidArgument);
        }
        self.transaction(|st| {
            Ok(batches
                .iter()
                .map(|meta| match st.batches.entry(meta.id) {
                    Entry::Occupied(_) => Registration::AlreadyRegistered,
                    Entry::Vacant(slot) => {
                        slot.insert(Batch::new(meta));
                        Registration::Registered
                    }
                })
                .collect())
        })
    }

    fn advance(&self, steps: &[Advance]) -> Res<Vec<Transition>> {
        // Arguments first, whatever the steps before them (the docs do not say; the backends
        // check them before any step).
        for s in steps {
            let bad_position = s
                .wal_position
                .as_ref()
                .is_some_and(|p| p.node.is_empty() || !fits_i64(p.lsn));
            let bad_offset = s.offsets.iter().any(|o| o.source.is_empty() || o.topic.is_empty());
            if s.stage == Stage::Failed || bad_position || s.worker.as_deref() == Some("") || bad_offset {
                return Err(Failure::InvalidArgument);
            }
        }
        self.transaction(|st| {
            // Fenced steps are checked against the leases as the call found them.
            let leases: BTreeMap<BatchId, Option<(String, SystemTime)>> =
                st.batches.iter().map(|(id, b)| (*id, b.lease.clone())).collect();
            let mut outcomes = Vec::with_capacity(steps.len());
            for s in steps {
                let b = st
                    .batches
                    .get_mut(&s.batch)
                    .ok_or(Failure::UnknownBatch { batch: s.batch })?;
                let how = step(b.stage, b.failed_in, s.stage);
                match how {
                    Move::Refused => {
                        return Err(Failure::InvalidTransition {
                            batch: s.batch,
                            from: b.stage,
                            to: s.stage,
                        });
                    }
                    Move::Repeat => outcomes.push(Transition::AlreadyApplied),
                    Move::Forward | Move::Retry => {
                        if let Some(worker) = &s.worker {
                            let lease = leases.get(&s.batch).and_then(Option::as_ref);
                            fence(s.batch, lease, worker, s.at)?;
                        }
                        b.enter(how, s.stage, When::At(micros(s.at)), s.wal_position.as_ref());
                        outcomes.push(Transition::Applied);
                    }
                }
            }
            // The highest offset per partition is kept. Every step of the call stores its
            // offsets, a repeated one too (`SourceOffset`: "storing a lower one (a replayed
            // step) never moves it back"; the backends do so).
            for o in steps.iter().flat_map(|s| &s.offsets) {
                let key = (o.source.clone(), o.topic.clone(), o.partition);
                let stored = st.offsets.entry(key).or_insert(o.offset);
                *stored = (*stored).max(o.offset);
            }
            Ok(outcomes)
        })
    }

    fn record_error(
        &self,
        batch: BatchId,
        stage: Stage,
        message: &str,
        at: SystemTime,
        worker: Option<&str>,
    ) -> Res<ErrorOutcome> {
        let max_retries = self.max_retries;
        self.transaction(|st| {
            let b = st.batches.get_mut(&batch).ok_or(Failure::UnknownBatch { batch })?;
            // The batch can be attempting only a step of the lifecycle out of its stage (none
            // out of FAILED or COMPLETED; FAILED is no attempt).
            if !forward(b.stage, stage) {
                return Err(Failure::InvalidTransition {
                    batch,
                    from: b.stage,
                    to: stage,
                });
            }
            if let Some(worker) = worker {
                if worker.is_empty() {
                    return Err(Failure::InvalidArgument);
                }
                fence(batch, b.lease.as_ref(), worker, at)?;
            }
            let at = When::At(micros(at));
            let retries_before = b.retry_count;
            b.retry_count += 1;
            b.error_stage = Some(stage);
            b.error_message = Some(message.to_owned());
            b.lease = None;
            b.updated_at = at;
            if retries_before < max_retries {
                Ok(ErrorOutcome::Retry {
                    retry_count: b.retry_count,
                })
            } else {
                b.failed_in = Some(b.stage);
                b.stage = Stage::Failed;
                b.reached.insert(Stage::Failed.code(), at);
                Ok(ErrorOutcome::Failed {
                    retry_count: b.retry_count,
                })
            }
        })
    }

    fn claim(&self, request: &ClaimRequest) -> Res<Vec<Rec>> {
        if matches!(request.stage, Stage::Created | Stage::Failed) || request.worker.is_empty() {
            return Err(Failure::InvalidArgument);
        }
        let now = micros(request.now);
        let until = micros(request.now + request.lease);
        self.transaction(|st| {
            let mut ready: Vec<&mut Batch> = st
                .batches
                .values_mut()
                .filter(|b| forward(b.stage, request.stage))
                .filter(|b| b.lease.as_ref().is_none_or(|(_, end)| *end <= now))
                .collect();
            ready.sort_by_key(|b| (b.meta.created_at, b.meta.id));
            Ok(ready
                .into_iter()
                .take(request.max)
                .map(|b| {
                    b.lease = Some((request.worker.clone(), until));
                    b.rec()
                })
                .collect())
        })
    }

    fn claim_ranges(&self, claims: &[RangeClaim]) -> Res<Vec<RangeOutcome>> {
        let mut ids = BTreeSet::new();
        for c in claims {
            let invalid = c.source.is_empty()
                || c.topic.is_empty()
                || c.partition < 0
                || c.to < 0
                || c.from.is_some_and(|from| from < 0 || c.to <= from)
                || !ids.insert(c.meta.id)
                || !fits_i64(c.meta.message_count)
                || !fits_i64(c.meta.byte_size)
                || c.wal_position
                    .as_ref()
                    .is_some_and(|p| p.node.is_empty() || !fits_i64(p.lsn));
            if invalid {
                return Err(Failure::InvalidArgument);
            }
        }
        self.transaction(|st| {
            let mut outcomes = Vec::with_capacity(claims.len());
            for c in claims {
                if let Some(b) = st.batches.get(&c.meta.id) {
                    outcomes.push(RangeOutcome::AlreadyRegistered { stage: b.stage });
                    continue;
                }
                let key = (c.source.clone(), c.topic.clone(), c.partition);
                let stored = st.offsets.get(&key).copied();
                if stored != c.from {
                    outcomes.push(RangeOutcome::Conflict { stored });
                    continue;
                }
                let mut b = Batch::new(&c.meta);
                let at = When::At(micros(c.at));
                b.enter(Move::Forward, Stage::WalWritten, at, c.wal_position.as_ref());
                b.enter(Move::Forward, Stage::SourceCommitted, at, None);
                st.batches.insert(c.meta.id, b);
                st.offsets.insert(key, c.to);
                outcomes.push(RangeOutcome::Claimed);
            }
            Ok(outcomes)
        })
    }

    fn purge_completed(&self, completed_before: SystemTime) -> Res<u64> {
        self.transaction(|st| {
            let before = st.batches.len();
            st.batches.retain(|_, b| {
                let done = b.reached.get(&Stage::Completed.code());
                !(b.stage == Stage::Completed && done.is_some_and(|t| *t < When::At(completed_before)))
            });
            Ok((before - st.batches.len()) as u64)
        })
    }

    fn batch(&self, batch: BatchId) -> Res<Rec> {
        self.read(|st| st.batches.get(&batch).map(Batch::rec))?
            .ok_or(Failure::UnknownBatch { batch })
    }

    /// The batches the query selects after its cursor, sorted by (creation time, id); the
    /// first `limit` of them, and a next position when any is left over. A limit of 0 is an
    /// `InvalidArgument` (the `Tracker::list_batches` docs).
    fn list_batches(&self, query: &BatchQuery) -> Res<Page> {
        if query.limit == 0 {
            return Err(Failure::InvalidArgument);
        }
        self.read(|st| {
            let mut selected: Vec<&Batch> = Vec::new();
            for b in st.batches.values() {
                let in_selection = match query.selection {
                    BatchSelection::Unfinished => b.stage != Stage::Completed && b.stage != Stage::Failed,
                    BatchSelection::InStage(stage) => b.stage == stage,
                };
                let created_in_time = match query.created_before {
                    Some(before) => b.meta.created_at < micros(before),
                    None => true,
                };
                let after_cursor = match query.after {
                    Some(c) => (b.meta.created_at, b.meta.id) > (c.created_at(), c.batch()),
                    None => true,
                };
                if in_selection && created_in_time && of_tenant(query.tenant.as_ref(), b) && after_cursor {
                    selected.push(b);
                }
            }
            selected.sort_by_key(|b| (b.meta.created_at, b.meta.id));
            let more = selected.len() > query.limit;
            selected.truncate(query.limit);
            let next = match selected.last() {
                Some(last) if more => Some((last.meta.created_at, last.meta.id)),
                _ => None,
            };
            Page {
                batches: selected.into_iter().map(Batch::rec).collect(),
                next,
            }
        })
    }

    fn stage_counts(&self, window: Window, tenant: Option<&Tenant>) -> Res<Vec<(Stage, u64)>> {
        self.read(|st| {
            Stage::ALL
                .into_iter()
                .map(|stage| {
                    let n = st
                        .batches
                        .values()
                        .filter(|b| b.stage == stage && in_window(&window, b.meta.created_at) && of_tenant(tenant, b))
                        .count();
                    (stage, n as u64)
                })
                .collect()
        })
    }

    fn client_throughput(&self, window: Window) -> Res<Vec<ClientThroughput>> {
        self.read(|st| {
            let mut per_tenant: BTreeMap<Tenant, (u64, u64, u64)> = BTreeMap::new();
            for b in st.batches.values().filter(|b| in_window(&window, b.meta.created_at)) {
                let sums = per_tenant.entry(b.meta.tenant.clone()).or_default();
                sums.0 += 1;
                sums.1 += b.meta.message_count;
                sums.2 += b.meta.byte_size;
            }
            let seconds = window.to.duration_since(window.from).map_or(0.0, |d| d.as_secs_f64());
            let mut rows: Vec<ClientThroughput> = per_tenant
                .into_iter()
                .map(|(tenant, (batches, messages, bytes))| ClientThroughput {
                    tenant,
                    batches,
                    messages,
                    bytes,
                    messages_per_second: if seconds > 0.0 { messages as f64 / seconds } else { 0.0 },
                })
                .collect();
            // Busiest first; ties by tenant (undocumented, as the backends do; the tests make none).
            rows.sort_by(|a, b| b.messages.cmp(&a.messages).then_with(|| a.tenant.cmp(&b.tenant)));
            rows
        })
    }

    fn oldest_unstored_wal_position(&self, node: &str) -> Res<Option<u64>> {
        if node.is_empty() {
            return Err(Failure::InvalidArgument);
        }
        self.read(|st| {
            st.batches
                .values()
                .filter(|b| holds_wal(b.stage))
                .filter_map(|b| b.wal_position.as_ref())
                .filter(|p| p.node == node || p.node.is_empty())
                .map(|p| p.lsn)
                .min()
        })
    }

    fn source_offsets(&self, source: &str) -> Res<Vec<SourceOffset>> {
        self.read(|st| {
            st.offsets
                .iter()
                .filter(|((s, _, _), _)| s == source)
                .map(|((s, topic, partition), offset)| SourceOffset::new(s.clone(), topic.clone(), *partition, *offset))
                .collect()
        })
    }

    fn publish(&self, files: &[StoredFile]) -> Res<()> {
        self.transaction(|st| {
            let insert = st.files_to_insert(files)?;
            // Their batches move to STORED, now: refused for a batch the tracker does not
            // know or that cannot move there (a step the lifecycle forbids; out of FAILED, a
            // retry into STORED). Batches at STORED or after it are left alone (the docs are
            // silent: the backends do so). Which of several such batches is reported the docs
            // do not say, nor do the backends agree: any of them.
            let ids: BTreeSet<BatchId> = insert.iter().flat_map(|f| f.batch_ids.iter().copied()).collect();
            let mut refused = Vec::new();
            for id in &ids {
                match st.batches.get(id) {
                    None => refused.push(Failure::UnknownBatch { batch: *id }),
                    Some(b) if matches!(b.stage, Stage::Stored | Stage::Indexed | Stage::Completed) => {}
                    Some(b) if step(b.stage, b.failed_in, Stage::Stored) == Move::Refused => {
                        refused.push(Failure::InvalidTransition {
                            batch: *id,
                            from: b.stage,
                            to: Stage::Stored,
                        });
                    }
                    Some(_) => {}
                }
            }
            let mut refused: Vec<Failure> = refused.into_iter().map(|f| Failure::Catalog(Box::new(f))).collect();
            match refused.len() {
                0 => {}
                1 => return Err(refused.remove(0)),
                _ => return Err(Failure::OneOf(refused)),
            }
            for id in &ids {
                let b = st.batches.get_mut(id).expect("checked above");
                let how = step(b.stage, b.failed_in, Stage::Stored);
                if matches!(how, Move::Forward | Move::Retry) {
                    b.enter(how, Stage::Stored, When::Clock, None);
                }
            }
            // A file given with its index (published again or not): its batches at STORED
            // are INDEXED too.
            let indexed: Vec<BatchId> = files
                .iter()
                .filter(|f| f.index.is_some())
                .flat_map(|f| f.batch_ids.iter().copied())
                .collect();
            st.index(&indexed);
            // The docs do not order this check with the batches' (the backends check it
            // after them).
            st.check_not_stored(&insert, &[])?;
            for file in insert {
                st.files.insert(file.path.clone(), (file, FileState::Live));
            }
            Ok(())
        })
    }

    fn list(&self, tenant: &Tenant, signal: Signal, time: Option<TimeRange>) -> Res<Vec<StoredFile>> {
        self.read(|st| {
            let mut files: Vec<StoredFile> = st
                .live()
                .filter(|f| f.tenant == *tenant && f.signal == signal)
                .filter(|f| time.is_none_or(|t| t.min <= f.time_range.max && f.time_range.min <= t.max))
                .cloned()
                .collect();
            files.sort_by(|a, b| (a.time_range.min, &a.path).cmp(&(b.time_range.min, &b.path)));
            files
        })
    }

    fn replace(&self, old: &[String], new: &[StoredFile], delete_after: SystemTime) -> Res<()> {
        self.transaction(|st| {
            for path in old {
                match st.files.get(path) {
                    None => return Err(Failure::UnknownFile { path: path.clone() }),
                    Some((_, FileState::Retired { .. })) => {
                        return Err(Failure::WrongFileState {
                            path: path.clone(),
                            state: "retired".to_owned(),
                        });
                    }
                    Some((_, FileState::Live)) => {}
                }
            }
            let insert = st.files_to_insert(new)?;
            st.check_not_stored(&insert, old)?;
            // A compaction's new files hold batches stored already: `replace` marks none
            // STORED and checks none (the docs say only that it marks those at STORED of a file
            // given with its index INDEXED; the backends do no more).
            let indexed: Vec<BatchId> = new
                .iter()
                .filter(|f| f.index.is_some())
                .flat_map(|f| f.batch_ids.iter().copied())
                .collect();
            st.index(&indexed);
            let delete_after = micros(delete_after);
            for path in old {
                if let Some((_, state)) = st.files.get_mut(path) {
                    *state = FileState::Retired { delete_after };
                }
            }
            for file in insert {
                st.files.insert(file.path.clone(), (file, FileState::Live));
            }
            Ok(())
        })
    }

    fn retire(&self, paths: &[String], delete_after: SystemTime) -> Res<()> {
        self.replace(paths, &[], delete_after)
    }

    fn files_holding(&self, batch: BatchId) -> Res<Vec<StoredFile>> {
        self.read(|st| st.live().filter(|f| f.batch_ids.contains(&batch)).cloned().collect())
    }

    fn deletable(&self, now: SystemTime) -> Res<Vec<StoredFile>> {
        self.read(|st| {
            st.files
                .values()
                .filter(|(_, state)| matches!(state, FileState::Retired { delete_after } if *delete_after <= now))
                .map(|(f, _)| f.clone())
                .collect()
        })
    }

    fn forget(&self, paths: &[String]) -> Res<u64> {
        self.transaction(|st| {
            if let Some(path) = paths
                .iter()
                .find(|p| st.files.get(*p).is_some_and(|(_, state)| *state == FileState::Live))
            {
                return Err(Failure::WrongFileState {
                    path: path.clone(),
                    state: "live".to_owned(),
                });
            }
            Ok(paths.iter().filter(|p| st.files.remove(*p).is_some()).count() as u64)
        })
    }

    fn record_index(&self, file: &str, index: &FileIndex) -> Res<()> {
        self.transaction(|st| {
            let Some((held, state)) = st.files.get_mut(file) else {
                return Err(Failure::UnknownFile { path: file.to_owned() });
            };
            if *state != FileState::Live {
                return Err(Failure::WrongFileState {
                    path: file.to_owned(),
                    state: "retired".to_owned(),
                });
            }
            if !index_fits(held, index) {
                return Err(Failure::InvalidFile { path: file.to_owned() });
            }
            match &held.index {
                None => held.index = Some(index.clone()),
                Some(existing) if existing == index => {}
                Some(existing) => {
                    return Err(Failure::IndexExists {
                        path: file.to_owned(),
                        index: existing.path.clone(),
                    });
                }
            }
            // The file's batches at STORED move on, the same index recorded again or not
            // (ARCHITECTURE.md).
            let ids = held.batch_ids.clone();
            st.index(&ids);
            Ok(())
        })
    }

    fn unindexed(&self, limit: usize) -> Res<Vec<StoredFile>> {
        self.read(|st| st.live().filter(|f| f.index.is_none()).take(limit).cloned().collect())
    }
}
