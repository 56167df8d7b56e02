//! Random sequences of tracker and file-catalog calls give every backend (in-memory, SQLite,
//! PostgreSQL) the results of the reference model (`reference.rs`), an independent statement
//! of the documented rules: the backends share their rules (`plan.rs`), so comparing them with
//! one another could not show a rule broken there.

use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use wit_batch::{BatchId, BatchMeta, RetryPolicy, Signal, Stage, Tenant, Transition};
use wit_store::{FileCatalog, FileIndex, StoredFile, TimeRange};
use wit_tracker::{
    Advance, BatchQuery, BatchRecord, ClaimRequest, ClientThroughput, Cursor, Error, ErrorOutcome, InMemoryTracker,
    RangeClaim, RangeOutcome, Registration, SourceOffset, Tracker, TrackerConfig, Window,
};

use crate::reference::{Failure, Page, Rec, Reference, Res, Subject, When, epoch};
use wit_tracker::conformance::meta;

/// Retries after a batch's first failed attempt: one, so that batches fail often.
const RETRIES: u32 = 1;

/// The backends' settings.
fn config() -> TrackerConfig {
    TrackerConfig::default().with_retry_policy(RetryPolicy::default().with_max_retries(RETRIES))
}

/// The tests' times: seconds after the reference model's epoch.
fn at(seconds: u64) -> SystemTime {
    epoch() + Duration::from_secs(seconds)
}

/// A step: batch index, stage, time, source offset, worker.
type Step = (usize, Stage, u64, Option<i64>, Option<u8>);

/// A range claim: batch index, partition, `from` (in tens), length (0: an empty range, which
/// is refused unless `from` is absent), time.
type Range = (usize, i32, Option<i64>, i64, u64);

/// A stored file: which of [`PATHS`] it is, the indexes of its batches (one twice: an invalid
/// file), its contents (0 or 1: another row count, so the same path with other contents), and
/// its index if it comes with one ([`index_of`]).
type File = (usize, Vec<usize>, u8, Option<u8>);

/// The paths files are published under; the even ones are acme's, the odd ones umbrella's.
const PATHS: usize = 5;

#[derive(Debug, Clone)]
enum Op {
    Register(Vec<usize>),
    Advance(Vec<Step>),
    /// One step of a batch along the happy path, from where the model says it is (the branch:
    /// via `SOURCE_COMMITTED`, to `STORED` by hand, via `INDEXED`), at a time, by a worker; an
    /// unknown batch is registered.
    Next(usize, bool, u64, Option<u8>),
    /// A stage error: batch, stage (`None`: the step the model says the batch attempts next),
    /// time, worker.
    Error(usize, Option<Stage>, u64, Option<u8>),
    /// A claim: stage, worker, most batches, time, lease length.
    Claim(Stage, u8, usize, u64, u64),
    /// A claim (worker, most batches, lease length) for the stage a leased batch is ready for,
    /// made the moment its lease ends (if no batch is leased, a claim for `INGESTED` at 0).
    Reclaim(u8, usize, u64),
    ClaimRanges(Vec<Range>),
    Purge(u64),
    Publish(Vec<File>),
    /// A file of the batches the model says are `INGESTED` (of the given ones if none is).
    PublishReady(File),
    /// Old paths, new files, `delete_after`.
    Replace(Vec<usize>, Vec<File>, u64),
    Retire(Vec<usize>, u64),
    Forget(Vec<usize>),
    /// The file, the contents the index is made for (it fits the file only if they are the
    /// file's), and which index.
    RecordIndex(usize, u8, u8),
    /// Index `which` ([`index_of`]) of the file `k` if it is live, else of the first live file
    /// (if there is none, of `k`), made for the file's contents.
    IndexLive(usize, u8),
    /// Everything the backend tells, between calls.
    Look,
}

fn stage() -> impl Strategy<Value = Stage> {
    proptest::sample::select(Stage::ALL.to_vec())
}

/// A stage to step into: any, the happy path's more often, so that batches get as far as
/// files.
fn step_stage() -> impl Strategy<Value = Stage> {
    prop_oneof![
        2 => stage(),
        3 => proptest::sample::select(vec![Stage::WalWritten, Stage::Ingested, Stage::Stored]),
    ]
}

fn file(n: usize) -> impl Strategy<Value = File> {
    (
        0..PATHS,
        prop_oneof![
            8 => proptest::sample::subsequence((0..n).collect::<Vec<_>>(), 1..=2),
            1 => (0..n).prop_map(|i| vec![i, i]),
        ],
        0..2u8,
        prop_oneof![8 => Just(None), 4 => Just(Some(0)), 2 => Just(Some(1)), 1 => Just(Some(2))],
    )
}

/// The worker of a fenced step or error, if it is fenced: `w0` to `w2`, or (3) the worker
/// that holds the batch's lease, if one does ([`resolve`]).
fn worker() -> impl Strategy<Value = Option<u8>> {
    prop_oneof![6 => Just(None), 1 => (0..3u8).prop_map(Some), 1 => Just(Some(3))]
}

/// A lease's length, in seconds.
fn lease() -> impl Strategy<Value = u64> {
    (0..=8u64).prop_map(|l| l * 5)
}

/// A time, in seconds: on a coarse grid, so that steps, claims and leases' ends often meet.
fn time() -> impl Strategy<Value = u64> {
    (0..=20u64).prop_map(|t| t * 5)
}

fn paths() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(0..PATHS, 0..3)
}

fn op(n: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => proptest::collection::vec(0..n, 1..4).prop_map(Op::Register),
        2 => proptest::collection::vec(
            (
                0..n,
                step_stage(),
                time(),
                proptest::option::of(0..50i64),
                proptest::option::of(0..3u8)
            ),
            1..4
        )
        .prop_map(Op::Advance),
        16 => (0..n, any::<bool>(), time(), worker()).prop_map(|(i, b, t, w)| Op::Next(i, b, t, w)),
        4 => (0..n, proptest::option::of(stage()), time(), worker())
            .prop_map(|(i, s, t, w)| Op::Error(i, s, t, w)),
        2 => (stage(), 0..3u8, 0..4usize, time(), lease()).prop_map(|(s, w, m, t, l)| Op::Claim(s, w, m, t, l)),
        2 => proptest::collection::vec(
            (
                0..n,
                0..2i32,
                proptest::option::of(0..6i64),
                prop_oneof![Just(10i64), Just(20), 0..12i64],
                time()
            ),
            1..4
        )
        .prop_map(Op::ClaimRanges),
        1 => (0..3u8, 0..4usize, lease()).prop_map(|(w, m, l)| Op::Reclaim(w, m, l)),
        1 => time().prop_map(Op::Purge),
        2 => proptest::collection::vec(file(n), 1..3).prop_map(Op::Publish),
        3 => file(n).prop_map(Op::PublishReady),
        2 => (paths(), proptest::collection::vec(file(n), 0..3), time())
            .prop_map(|(old, new, after)| Op::Replace(old, new, after)),
        1 => (paths(), time()).prop_map(|(paths, after)| Op::Retire(paths, after)),
        1 => paths().prop_map(Op::Forget),
        1 => (0..PATHS, 0..2u8, 0..3u8).prop_map(|(k, c, i)| Op::RecordIndex(k, c, i)),
        2 => (0..PATHS, prop_oneof![3 => 0..2u8, 1 => Just(2u8)]).prop_map(|(k, i)| Op::IndexLive(k, i)),
        1 => Just(Op::Look),
    ]
}

/// The tenant of the files of path `k`.
fn owner(k: usize) -> &'static str {
    if k.is_multiple_of(2) { "acme" } else { "umbrella" }
}

fn path(k: usize) -> String {
    format!("{}/logs/f{k}.parquet", owner(k))
}

/// Index `which` of file `k` with `contents` (0 and 1 fit their file; 2 holds a document
/// too many, so fits no file).
fn index_of(k: usize, contents: u8, which: u8) -> FileIndex {
    FileIndex {
        path: format!("{}/logs/f{k}.{which}.index", owner(k)),
        bytes: 300,
        docs: 10 + u64::from(contents) + u64::from(which == 2),
        checksum: u32::from(which),
    }
}

fn stored_file(metas: &[BatchMeta], (k, batches, contents, index): &File) -> StoredFile {
    StoredFile {
        path: path(*k),
        tenant: Tenant::try_new(owner(*k)).expect("tenant"),
        signal: Signal::Logs,
        time_range: TimeRange::new(*k as i64 * 100, *k as i64 * 100 + 150),
        rows: 10 + u64::from(*contents),
        bytes: 1_000,
        batch_ids: batches.iter().map(|i| metas[*i].id).collect(),
        index: index.map(|which| index_of(*k, *contents, which)),
    }
}

/// What a call gave, as text: the one answer of a backend, or every answer the model accepts.
fn show<T: std::fmt::Debug>(r: Res<T>) -> Vec<String> {
    match r {
        Ok(v) => vec![format!("ok {v:?}")],
        Err(Failure::OneOf(any)) => any.iter().map(|f| format!("error {f:?}")).collect(),
        Err(f) => vec![format!("error {f:?}")],
    }
}

/// Applies `op` and returns what it gave.
fn apply(t: &impl Subject, metas: &[BatchMeta], op: &Op) -> Vec<String> {
    let paths = |ks: &[usize]| ks.iter().map(|k| path(*k)).collect::<Vec<_>>();
    let files = |fs: &[File]| fs.iter().map(|f| stored_file(metas, f)).collect::<Vec<_>>();
    match op {
        Op::Register(ids) => show(t.register(&ids.iter().map(|i| metas[*i].clone()).collect::<Vec<_>>())),
        Op::Advance(steps) => show(
            t.advance(
                &steps
                    .iter()
                    .map(|(i, s, when, offset, worker)| {
                        // Batches 0 and 2 are in node-a's log, 1 and 3 in node-b's.
                        let node = if i % 2 == 0 { "node-a" } else { "node-b" };
                        let mut step =
                            Advance::new(metas[*i].id, *s, at(*when)).with_wal_position(node, *i as u64 * 10);
                        if let Some(o) = offset {
                            step = step.with_offsets(vec![SourceOffset::new("g", "t", (*i % 2) as i32, *o)]);
                        }
                        if let Some(w) = worker {
                            step = step.with_worker(format!("w{w}"));
                        }
                        step
                    })
                    .collect::<Vec<_>>(),
            ),
        ),
        Op::Next(..) => unreachable!("resolved"),
        Op::Error(i, s, when, worker) => {
            let worker = worker.map(|w| format!("w{w}"));
            let stage = s.expect("resolved");
            show(t.record_error(metas[*i].id, stage, "boom", at(*when), worker.as_deref()))
        }
        Op::Claim(s, worker, max, when, lease) => show(
            t.claim(
                &ClaimRequest::new(*s, format!("w{worker}"), *max)
                    .with_lease(Duration::from_secs(*lease))
                    .at(at(*when)),
            ),
        ),
        Op::ClaimRanges(ranges) => show(
            t.claim_ranges(
                &ranges
                    .iter()
                    .map(|(i, partition, from, len, when)| {
                        // Offsets in tens, so that chains meet the offsets `Advance` stores.
                        let from = from.map(|f| f * 10);
                        let to = from.unwrap_or(0) + len;
                        let node = if i % 2 == 0 { "node-a" } else { "node-b" };
                        RangeClaim::new(metas[*i].clone(), "g", "t", *partition, from, to, at(*when))
                            .with_wal_position(node, *i as u64 * 10)
                    })
                    .collect::<Vec<_>>(),
            ),
        ),
        Op::Reclaim(..) => unreachable!("resolved"),
        Op::Purge(before) => show(t.purge_completed(at(*before))),
        Op::Publish(fs) => show(t.publish(&files(fs))),
        Op::PublishReady(..) => unreachable!("resolved"),
        Op::Replace(old, new, after) => show(t.replace(&paths(old), &files(new), at(*after))),
        Op::Retire(old, after) => show(t.retire(&paths(old), at(*after))),
        Op::Forget(old) => show(t.forget(&paths(old))),
        Op::RecordIndex(k, contents, which) => show(t.record_index(&path(*k), &index_of(*k, *contents, *which))),
        Op::IndexLive(..) => unreachable!("resolved"),
        Op::Look => vec![state(t, &metas.iter().map(|m| m.id).collect::<Vec<_>>())],
    }
}

/// The stage after `rec`'s on the happy path (`branch`: via `SOURCE_COMMITTED`, to `STORED`
/// by hand rather than waiting for a file, via `INDEXED`); out of `FAILED`, the retry.
fn next(rec: &Rec, branch: bool) -> Stage {
    match rec.stage {
        Stage::Created => Stage::WalWritten,
        Stage::WalWritten if branch => Stage::SourceCommitted,
        Stage::WalWritten | Stage::SourceCommitted => Stage::Ingested,
        Stage::Ingested if branch => Stage::Stored,
        Stage::Ingested => Stage::Ingested,
        Stage::Stored if branch => Stage::Indexed,
        Stage::Stored | Stage::Indexed | Stage::Completed => Stage::Completed,
        Stage::Failed => rec.failed_in.unwrap_or(Stage::Created),
    }
}

/// `worker`, or for 3 the worker holding `rec`'s lease (`w0` if none does).
fn holder(rec: &Rec, worker: Option<u8>) -> Option<u8> {
    match worker {
        Some(3) => Some(rec.lease.as_ref().map_or(0, |(w, _)| w[1..].parse().expect("w0 to w2"))),
        other => other,
    }
}

/// `op` with what it leaves to the model's state filled in from it ([`Op::Next`], the stage
/// and lease holder of an [`Op::Error`], [`Op::Reclaim`], [`Op::PublishReady`],
/// [`Op::IndexLive`]): the same call then goes to the model and to the backend. So calls reach
/// the states where the rules are (batches as far as files, retries, leases' ends) more often
/// than blind ones would.
fn resolve(model: &Reference, metas: &[BatchMeta], op: &Op) -> Op {
    match op {
        Op::Next(i, branch, when, worker) => match model.batch(metas[*i].id) {
            Ok(rec) => Op::Advance(vec![(*i, next(&rec, *branch), *when, None, holder(&rec, *worker))]),
            Err(_) => Op::Register(vec![*i]),
        },
        Op::Error(i, stage, when, worker) => {
            let rec = model.batch(metas[*i].id).ok();
            let stage = stage.unwrap_or(match &rec {
                // The step it would attempt next, as a worker would.
                Some(rec) if rec.stage == Stage::Ingested => Stage::Stored,
                Some(rec) if rec.stage == Stage::Stored => Stage::Indexed,
                Some(rec) => next(rec, false),
                None => Stage::WalWritten,
            });
            let worker = rec.map_or(*worker, |rec| holder(&rec, *worker));
            Op::Error(*i, Some(stage), *when, worker)
        }
        Op::Reclaim(worker, max, lease) => {
            let leased = metas.iter().find_map(|m| {
                let rec = model.batch(m.id).ok()?;
                let (_, When::At(until)) = rec.lease? else { return None };
                let stage = match rec.stage {
                    Stage::Created => Stage::WalWritten,
                    Stage::WalWritten | Stage::SourceCommitted => Stage::Ingested,
                    Stage::Ingested => Stage::Stored,
                    _ => Stage::Completed,
                };
                Some((stage, until.duration_since(epoch()).expect("after the epoch").as_secs()))
            });
            let (stage, when) = leased.unwrap_or((Stage::Ingested, 0));
            Op::Claim(stage, *worker, *max, when, *lease)
        }
        Op::PublishReady((k, given, contents, index)) => {
            let ready: Vec<usize> = (0..metas.len())
                .filter(|i| model.batch(metas[*i].id).is_ok_and(|r| r.stage == Stage::Ingested))
                .collect();
            let batches = if ready.is_empty() { given.clone() } else { ready };
            Op::Publish(vec![(*k, batches, *contents, *index)])
        }
        Op::IndexLive(k, which) => {
            let live: Vec<StoredFile> = ["acme", "umbrella"]
                .into_iter()
                .flat_map(|t| {
                    model
                        .list(&Tenant::try_new(t).expect("t"), Signal::Logs, None)
                        .unwrap_or_default()
                })
                .collect();
            let file = live.iter().find(|f| f.path == path(*k)).or(live.first());
            let k = file.map_or(*k, |f| (0..PATHS).find(|k| path(*k) == f.path).expect("one of PATHS"));
            let contents = file.map_or(0, |f| (f.rows - 10) as u8);
            Op::RecordIndex(k, contents, *which)
        }
        other => other.clone(),
    }
}

/// Everything the tracker and its catalog can tell about the batches and files, as text.
fn state(t: &impl Subject, ids: &[BatchId]) -> String {
    fn one<T: std::fmt::Debug>(r: Res<T>) -> String {
        show(r).remove(0)
    }
    let window = Window::new(at(0), at(1_000));
    let (acme, umbrella) = (
        Tenant::try_new("acme").expect("t"),
        Tenant::try_new("umbrella").expect("t"),
    );
    let mut out: Vec<String> = ids.iter().map(|id| one(t.batch(*id))).collect();
    for query in [
        BatchQuery::stuck(at(1_000)),
        BatchQuery::stuck(at(2)).with_tenant(umbrella.clone()),
        BatchQuery::failed(),
        BatchQuery::failed().with_tenant(acme.clone()).with_limit(1),
        BatchQuery::in_stage(Stage::Ingested),
        BatchQuery::in_stage(Stage::Stored).with_created_before(at(3)),
        BatchQuery::in_stage(Stage::Completed).with_tenant(acme.clone()),
    ] {
        out.push(one(t.list_batches(&query)));
        out.push(one(pages(t, &query, 2)));
    }
    out.push(one(t.list_batches(&BatchQuery::failed().with_limit(0))));
    out.push(one(t.stage_counts(window, None)));
    out.push(one(t.stage_counts(window, Some(&acme))));
    out.push(one(t.client_throughput(window)));
    for node in ["node-a", "node-b"] {
        out.push(one(t.oldest_unstored_wal_position(node)));
    }
    out.push(one(t.source_offsets("g")));
    for tenant in [&acme, &umbrella] {
        out.push(one(t.list(tenant, Signal::Logs, None)));
    }
    out.push(one(t.list(&acme, Signal::Logs, Some(TimeRange::new(160, 260)))));
    out.push(one(t.list(&acme, Signal::Traces, None)));
    for id in ids {
        out.push(one(t.files_holding(*id)));
    }
    out.push(one(t.deletable(at(30))));
    out.push(one(t.deletable(at(1_000))));
    out.push(one(t.unindexed(1)));
    out.push(one(t.unindexed(100)));
    out.join("\n")
}

/// Every page of `query` with `limit` batches a page, walked from the first by each page's
/// next position; the walk must list exactly what one page holding everything lists.
fn pages(t: &impl Subject, query: &BatchQuery, limit: usize) -> Res<Vec<Page>> {
    let whole = t.list_batches(&query.clone().with_limit(usize::MAX).after(None))?;
    assert_eq!(whole.next, None, "one page holds everything");
    let mut pages: Vec<Page> = Vec::new();
    let mut query = query.clone().with_limit(limit).after(None);
    loop {
        let page = t.list_batches(&query)?;
        let next = page.next;
        pages.push(page);
        match next {
            Some((created_at, batch)) => query = query.after(Cursor::new(created_at, batch)),
            None => break,
        }
        assert!(pages.len() <= whole.batches.len(), "the walk ends");
    }
    let walked: Vec<&Rec> = pages.iter().flat_map(|p| &p.batches).collect();
    assert_eq!(
        walked,
        whole.batches.iter().collect::<Vec<_>>(),
        "pages of {limit} list what one page lists"
    );
    Ok(pages)
}

/// A backend as a [`Subject`]: its answers converted to what the model answers.
struct Backend<'a, T>(&'a T);

fn rec(r: BatchRecord) -> Rec {
    Rec {
        stage: r.stage,
        failed_in: r.failed_in,
        reached: Stage::ALL
            .into_iter()
            .filter_map(|s| Some((s, When::of(r.completed_at.get(s)?))))
            .collect(),
        wal_position: r.wal_position,
        error_stage: r.error_stage,
        error_message: r.error_message,
        retry_count: r.retry_count,
        lease: r.lease.map(|l| (l.worker, When::of(l.until))),
        updated_at: When::of(r.updated_at),
        meta: r.meta,
    }
}

fn recs(records: Vec<BatchRecord>) -> Vec<Rec> {
    records.into_iter().map(rec).collect()
}

fn tracker_failure(e: Error) -> Failure {
    match e {
        Error::UnknownBatch { batch } => Failure::UnknownBatch { batch },
        Error::InvalidTransition { batch, from, to } => Failure::InvalidTransition { batch, from, to },
        Error::LeaseLost { batch, worker, holder } => Failure::LeaseLost { batch, worker, holder },
        Error::InvalidArgument { .. } => Failure::InvalidArgument,
        other => Failure::Other(other.to_string()),
    }
}

fn store_failure(e: wit_store::Error) -> Failure {
    use wit_store::Error as E;
    match e {
        E::InvalidFile { path, .. } => Failure::InvalidFile { path },
        E::FileExists { path } => Failure::FileExists { path },
        E::BatchAlreadyStored { batch, path, stored_in } => Failure::BatchAlreadyStored { batch, path, stored_in },
        E::UnknownFile { path } => Failure::UnknownFile { path },
        E::WrongFileState { path, state } => Failure::WrongFileState {
            path,
            state: state.to_owned(),
        },
        E::IndexExists { path, index } => Failure::IndexExists { path, index },
        E::Catalog { source } => match source.downcast::<Error>() {
            Ok(e) => Failure::Catalog(Box::new(tracker_failure(*e))),
            Err(other) => Failure::Other(format!("catalog: {other}")),
        },
        other => Failure::Other(other.to_string()),
    }
}

impl<T: Tracker + FileCatalog> Subject for Backend<'_, T> {
    fn register(&self, batches: &[BatchMeta]) -> Res<Vec<Registration>> {
        self.0.register(batches).map_err(tracker_failure)
    }
    fn advance(&self, steps: &[Advance]) -> Res<Vec<Transition>> {
        self.0.advance(steps).map_err(tracker_failure)
    }
    fn record_error(
        &self,
        batch: BatchId,
        stage: Stage,
        message: &str,
        at: SystemTime,
        worker: Option<&str>,
    ) -> Res<ErrorOutcome> {
        match worker {
            None => self.0.record_error(batch, stage, message, at),
            Some(worker) => self.0.record_error_by(batch, stage, message, at, worker),
        }
        .map_err(tracker_failure)
    }
    fn claim(&self, request: &ClaimRequest) -> Res<Vec<Rec>> {
        self.0.claim(request).map(recs).map_err(tracker_failure)
    }
    fn claim_ranges(&self, claims: &[RangeClaim]) -> Res<Vec<RangeOutcome>> {
        self.0.claim_ranges(claims).map_err(tracker_failure)
    }
    fn purge_completed(&self, completed_before: SystemTime) -> Res<u64> {
        self.0.purge_completed(completed_before).map_err(tracker_failure)
    }
    fn batch(&self, batch: BatchId) -> Res<Rec> {
        self.0.batch(batch).map(rec).map_err(tracker_failure)
    }
    fn list_batches(&self, query: &BatchQuery) -> Res<Page> {
        let page = self.0.list_batches(query).map_err(tracker_failure)?;
        Ok(Page {
            batches: recs(page.batches),
            next: page.next.map(|c| (c.created_at(), c.batch())),
        })
    }
    fn stage_counts(&self, window: Window, tenant: Option<&Tenant>) -> Res<Vec<(Stage, u64)>> {
        let counts = self.0.stage_counts(window, tenant).map_err(tracker_failure)?;
        Ok(Stage::ALL.into_iter().map(|s| (s, counts.get(s))).collect())
    }
    fn client_throughput(&self, window: Window) -> Res<Vec<ClientThroughput>> {
        self.0.client_throughput(window).map_err(tracker_failure)
    }
    fn oldest_unstored_wal_position(&self, node: &str) -> Res<Option<u64>> {
        self.0.oldest_unstored_wal_position(node).map_err(tracker_failure)
    }
    fn source_offsets(&self, source: &str) -> Res<Vec<SourceOffset>> {
        self.0.source_offsets(source).map_err(tracker_failure)
    }

    fn publish(&self, files: &[StoredFile]) -> Res<()> {
        self.0.publish(files).map_err(store_failure)
    }
    fn list(&self, tenant: &Tenant, signal: Signal, time: Option<TimeRange>) -> Res<Vec<StoredFile>> {
        self.0.list(tenant, signal, time).map_err(store_failure)
    }
    fn replace(&self, old: &[String], new: &[StoredFile], delete_after: SystemTime) -> Res<()> {
        self.0.replace(old, new, delete_after).map_err(store_failure)
    }
    fn retire(&self, paths: &[String], delete_after: SystemTime) -> Res<()> {
        self.0.retire(paths, delete_after).map_err(store_failure)
    }
    fn files_holding(&self, batch: BatchId) -> Res<Vec<StoredFile>> {
        self.0.files_holding(batch).map_err(store_failure)
    }
    fn deletable(&self, now: SystemTime) -> Res<Vec<StoredFile>> {
        self.0.deletable(now).map_err(store_failure)
    }
    fn forget(&self, paths: &[String]) -> Res<u64> {
        self.0.forget(paths).map_err(store_failure)
    }
    fn record_index(&self, file: &str, index: &FileIndex) -> Res<()> {
        self.0.record_index(file, index).map_err(store_failure)
    }
    fn unindexed(&self, limit: usize) -> Res<Vec<StoredFile>> {
        self.0.unindexed(limit).map_err(store_failure)
    }
}

/// Runs `ops` on the reference model and on `backend`, comparing every answer and then
/// everything the two can tell.
fn run_against(backend: &(impl Tracker + FileCatalog), ops: &[Op]) {
    let model = Reference::new(RETRIES);
    let backend = Backend(backend);
    // Batches 1 and 2 carry a source partition (0 and 1): every read gives it back.
    let partitions = [None, Some(0), Some(1), None];
    let metas: Vec<BatchMeta> = (0..4)
        .map(|i| BatchMeta {
            partition: partitions[i as usize],
            ..meta(if i % 2 == 0 { "acme" } else { "umbrella" }, at(i), 10 + i)
        })
        .collect();
    let ids: Vec<BatchId> = metas.iter().map(|m| m.id).collect();
    let mut calls = Vec::new();
    for op in ops {
        let op = resolve(&model, &metas, op);
        calls.push(format!("{:>3}: {op:?}", calls.len()));
        check(&calls, &apply(&backend, &metas, &op), &apply(&model, &metas, &op));
    }
    calls.push("the state at the end".to_owned());
    check(&calls, &[state(&backend, &ids)], &[state(&model, &ids)]);
}

/// Panics, saying after which calls and how, unless `got` (a backend's one answer) is one of
/// `expected` (the model's).
fn check(calls: &[String], got: &[String], expected: &[String]) {
    if got.len() == 1 && expected.contains(&got[0]) {
        return;
    }
    let got = got.join("\n");
    let differences = |want: &String| -> String {
        got.lines()
            .zip(want.lines())
            .enumerate()
            .filter(|(_, (g, w))| g != w)
            .map(|(i, (g, w))| format!("  line {i}\n     got: {g}\n    want: {w}\n"))
            .collect()
    };
    panic!(
        "the backend differs from the reference model at the last of these calls (as resolved):\n{}\n{}",
        calls.join("\n"),
        expected.iter().map(differences).collect::<Vec<_>>().join("  or\n")
    );
}

/// Calls, after registering some of the batches (the others are registered by a call, or
/// claimed with a range, or stay unknown).
fn ops() -> impl Strategy<Value = Vec<Op>> {
    (
        proptest::sample::subsequence((0..4).collect::<Vec<usize>>(), 0..=4),
        proptest::collection::vec(op(4), 10..60),
    )
        .prop_map(|(registered, mut ops)| {
            if !registered.is_empty() {
                ops.insert(0, Op::Register(registered));
            }
            ops
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn memory_behaves_as_the_reference_model(ops in ops()) {
        run_against(&InMemoryTracker::new(config()), &ops);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        // A case takes tens of milliseconds here: shrink for a few seconds, not a minute (the
        // in-memory test shrinks a difference of the shared rules further).
        max_shrink_iters: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn sqlite_behaves_as_the_reference_model(ops in ops()) {
        let dir = tempfile::tempdir().expect("tempdir");
        let sqlite = wit_tracker::SqliteTracker::open(&dir.path().join("t.db"), config()).expect("open");
        run_against(&sqlite, &ops);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        max_shrink_iters: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn postgres_behaves_as_the_reference_model(ops in ops()) {
        if let Some(server) = crate::pg_server::PgServer::shared() {
            let params = server.fresh_schema("differential");
            let pg = wit_tracker::PostgresTracker::connect(&params, config()).expect("connect");
            run_against(&pg, &ops);
        }
    }
}
