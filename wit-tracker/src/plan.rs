//! The tracker's rules, written once for every backend: each backend loads the affected
//! records inside its transaction, lets these functions decide, and writes back what changed.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use wit_batch::{BatchId, BatchMeta, RetryDecision, RetryPolicy, Stage, Transition};
use wit_store::StoredFile;

use crate::model::{
    Advance, BatchQuery, BatchRecord, ClaimRequest, ErrorOutcome, Lease, RangeClaim, RangeOutcome, RememberedKey,
    SourceOffset,
};
use crate::{Error, Result};

/// Microseconds since the Unix epoch (negative before it), the resolution every backend keeps.
pub(crate) fn to_micros(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => {
            let d = e.duration();
            // Round towards the past so that truncation is the same on both sides of 1970.
            let us = d.as_micros() + u128::from(d.subsec_nanos() % 1_000 != 0);
            -i64::try_from(us).unwrap_or(i64::MAX)
        }
    }
}

pub(crate) fn from_micros(us: i64) -> SystemTime {
    if us >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_micros(us.unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_micros(us.unsigned_abs())
    }
}

/// `t` truncated to whole microseconds.
pub(crate) fn micros(t: SystemTime) -> SystemTime {
    from_micros(to_micros(t))
}

/// A count or position as the databases store it (signed 64-bit).
pub(crate) fn to_i64(value: u64, what: &str) -> Result<i64> {
    i64::try_from(value).map_err(|_| Error::invalid(format!("{what} {value} is larger than {}", i64::MAX)))
}

pub(crate) fn check_meta(meta: &BatchMeta) -> Result<()> {
    to_i64(meta.message_count, "message count")?;
    to_i64(meta.byte_size, "byte size")?;
    Ok(())
}

pub(crate) fn check_steps(steps: &[Advance]) -> Result<()> {
    for step in steps {
        if step.stage == Stage::Failed {
            return Err(Error::invalid(format!(
                "batch {} cannot be advanced to FAILED: record a stage error instead",
                step.batch
            )));
        }
        if let Some(position) = &step.wal_position {
            to_i64(position.lsn, "WAL position")?;
            check_node(&position.node)?;
        }
        if step.worker.as_deref() == Some("") {
            return Err(Error::invalid(format!(
                "the worker of a step of batch {} needs a name",
                step.batch
            )));
        }
        for offset in &step.offsets {
            if offset.source.is_empty() || offset.topic.is_empty() {
                return Err(Error::invalid(format!(
                    "source offset for batch {} needs a source and a topic name",
                    step.batch
                )));
            }
        }
    }
    Ok(())
}

/// The stages of a batch not yet `STORED`: its envelope is still needed, so its WAL position
/// holds back its node's log. (`FAILED` is not among them: see
/// [`Tracker::oldest_unstored_wal_position`](crate::Tracker::oldest_unstored_wal_position).)
pub(crate) const UNSTORED: [Stage; 4] = [
    Stage::Created,
    Stage::WalWritten,
    Stage::SourceCommitted,
    Stage::Ingested,
];

/// The LSN at which `rec` holds back `node`'s WAL, if it does: it is not yet `STORED` and has
/// a position in that log, or one recorded before the tracker named logs (empty node), which
/// holds back every log.
pub(crate) fn holds_wal(rec: &BatchRecord, node: &str) -> Option<u64> {
    let position = rec.wal_position.as_ref()?;
    (UNSTORED.contains(&rec.stage) && (position.node == node || position.node.is_empty())).then_some(position.lsn)
}

/// A WAL's node name must not be empty (an empty one stands for a position recorded before
/// the tracker named the log).
pub(crate) fn check_node(node: &str) -> Result<()> {
    if node.is_empty() {
        return Err(Error::invalid("a WAL position needs the name of its node"));
    }
    Ok(())
}

/// The ids of `steps`, each once, sorted (the lock order of the SQL backends).
pub(crate) fn step_ids(steps: &[Advance]) -> Vec<BatchId> {
    let mut ids: Vec<BatchId> = steps.iter().map(|s| s.batch).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Applies one step to a record.
pub(crate) fn apply_advance(rec: &mut BatchRecord, step: &Advance) -> Result<Transition> {
    let at = micros(step.at);
    let batch = rec.meta.id;
    if rec.stage == Stage::Failed {
        let failed_in = rec.failed_in.unwrap_or(Stage::Created);
        let outcome = Transition::check_retry(batch, failed_in, step.stage).map_err(Error::from_lifecycle)?;
        if outcome == Transition::Applied {
            // A retry by hand: back to where it failed, with a fresh retry budget.
            rec.stage = step.stage;
            rec.failed_in = None;
            if let Some(position) = &step.wal_position {
                // The retry's envelope may be a new one: it holds its node's log from now.
                rec.wal_position = Some(position.clone());
            }
            rec.retry_count = 0;
            rec.lease = None;
            rec.updated_at = at;
        }
        return Ok(outcome);
    }
    let outcome = Transition::check(batch, rec.stage, step.stage).map_err(Error::from_lifecycle)?;
    if outcome == Transition::Applied {
        rec.stage = step.stage;
        rec.completed_at.set(step.stage, Some(at));
        if let Some(position) = &step.wal_position {
            rec.wal_position = Some(position.clone());
        }
        rec.retry_count = 0;
        rec.lease = None;
        rec.updated_at = at;
    }
    Ok(outcome)
}

/// The fence of a step or error that names its worker: `worker` must hold `lease`, and the
/// lease must not have run out at `at` (a lease is current while `at < until`, as
/// [`claimable`] frees it at `until`). Otherwise [`Error::LeaseLost`], naming the worker whose
/// lease was current at `at`, if any.
pub(crate) fn check_lease(batch: BatchId, lease: Option<&Lease>, worker: &str, at: SystemTime) -> Result<()> {
    let at = micros(at);
    let current = lease.filter(|l| at < l.until);
    match current {
        Some(l) if l.worker == worker => Ok(()),
        _ => Err(Error::LeaseLost {
            batch,
            worker: worker.to_owned(),
            holder: current.map(|l| l.worker.clone()),
        }),
    }
}

/// Applies `steps` in order to `records` (which holds every batch they name, or the batch is
/// unknown). Returns the outcomes and the ids of the records that changed, sorted.
///
/// A step with a worker that applies is fenced ([`check_lease`]) by the lease its batch had
/// when the call began, so that a worker's earlier step of the call, which drops the lease,
/// does not fence out its later ones. A step that is `AlreadyApplied` changes nothing and is
/// not fenced.
pub(crate) fn advance_all(
    records: &mut HashMap<BatchId, BatchRecord>,
    steps: &[Advance],
) -> Result<(Vec<Transition>, Vec<BatchId>)> {
    let leases: HashMap<BatchId, Option<Lease>> = records.iter().map(|(id, rec)| (*id, rec.lease.clone())).collect();
    let mut outcomes = Vec::with_capacity(steps.len());
    let mut changed = Vec::new();
    for step in steps {
        let rec = records
            .get_mut(&step.batch)
            .ok_or(Error::UnknownBatch { batch: step.batch })?;
        let outcome = apply_advance(rec, step)?;
        if outcome == Transition::Applied {
            if let Some(worker) = &step.worker {
                let lease = leases.get(&step.batch).and_then(Option::as_ref);
                check_lease(step.batch, lease, worker, step.at)?;
            }
            changed.push(step.batch);
        }
        outcomes.push(outcome);
    }
    changed.sort_unstable();
    changed.dedup();
    Ok((outcomes, changed))
}

/// Records a failed attempt to move `rec` into `stage`; with a `worker`, fenced by its lease
/// ([`check_lease`]) once the attempt is known to be one the batch could make.
pub(crate) fn apply_error(
    rec: &mut BatchRecord,
    stage: Stage,
    message: &str,
    at: SystemTime,
    worker: Option<&str>,
    policy: &RetryPolicy,
) -> Result<ErrorOutcome> {
    if stage == Stage::Failed || !rec.stage.can_transition_to(stage) {
        return Err(Error::InvalidTransition {
            batch: rec.meta.id,
            from: rec.stage,
            to: stage,
        });
    }
    if let Some(worker) = worker {
        if worker.is_empty() {
            return Err(Error::invalid("the worker recording an error needs a name"));
        }
        check_lease(rec.meta.id, rec.lease.as_ref(), worker, at)?;
    }
    let at = micros(at);
    let before = rec.retry_count;
    rec.retry_count = before.saturating_add(1);
    rec.error_stage = Some(stage);
    rec.error_message = Some(message.to_owned());
    rec.lease = None;
    rec.updated_at = at;
    Ok(match policy.after_failure(before) {
        RetryDecision::Retry => ErrorOutcome::Retry {
            retry_count: rec.retry_count,
        },
        RetryDecision::GiveUp => {
            rec.failed_in = Some(rec.stage);
            rec.stage = Stage::Failed;
            rec.completed_at.set(Stage::Failed, Some(at));
            ErrorOutcome::Failed {
                retry_count: rec.retry_count,
            }
        }
    })
}

/// The stages whose batches a worker moving batches into `request.stage` may claim.
pub(crate) fn claim_sources(request: &ClaimRequest) -> Result<Vec<Stage>> {
    if matches!(request.stage, Stage::Created | Stage::Failed) {
        return Err(Error::invalid(format!(
            "no worker moves batches into {}: claim a stage after CREATED",
            request.stage
        )));
    }
    if request.worker.is_empty() {
        return Err(Error::invalid("the claiming worker needs a name"));
    }
    Ok(Stage::ALL
        .into_iter()
        .filter(|s| *s != Stage::Failed && s.can_transition_to(request.stage))
        .collect())
}

/// The lease a claim gives.
pub(crate) fn lease_for(request: &ClaimRequest) -> Lease {
    Lease {
        worker: request.worker.clone(),
        until: micros(request.now + request.lease),
    }
}

/// Whether a record may be claimed now by a worker for one of `sources`.
pub(crate) fn claimable(rec: &BatchRecord, sources: &[Stage], now: SystemTime) -> bool {
    sources.contains(&rec.stage) && rec.lease.as_ref().is_none_or(|l| l.until <= now)
}

/// The offsets of `steps`, the highest per (source, topic, partition), in key order.
pub(crate) fn merged_offsets(steps: &[Advance]) -> Vec<SourceOffset> {
    let mut merged: BTreeMap<(&str, &str, i32), &SourceOffset> = BTreeMap::new();
    for offset in steps.iter().flat_map(|s| &s.offsets) {
        let key = (offset.source.as_str(), offset.topic.as_str(), offset.partition);
        let entry = merged.entry(key).or_insert(offset);
        if offset.offset > entry.offset {
            *entry = offset;
        }
    }
    merged.into_values().cloned().collect()
}

/// Checks every claim of a [`claim_ranges`](crate::Tracker::claim_ranges) call before
/// anything is written, and returns the record each claim registers if it is claimed:
/// `CREATED` at its creation time, then `WAL_WRITTEN` (with its WAL position) and
/// `SOURCE_COMMITTED` at the claim's time.
pub(crate) fn range_records(claims: &[RangeClaim]) -> Result<Vec<BatchRecord>> {
    let mut ids = std::collections::HashSet::with_capacity(claims.len());
    claims
        .iter()
        .map(|claim| {
            let id = claim.meta.id;
            let range = match claim.from {
                Some(from) => format!("[{from}, {})", claim.to),
                None => format!("[-, {})", claim.to),
            };
            let refuse = |why: &str| {
                Err(Error::invalid(format!(
                    "the claim of batch {id} ({}/{}/{} {range}) {why}",
                    claim.source, claim.topic, claim.partition
                )))
            };
            if claim.source.is_empty() || claim.topic.is_empty() {
                return refuse("needs a source and a topic name");
            }
            if claim.partition < 0 {
                return refuse("names a negative partition");
            }
            if claim.to < 0 || claim.from.is_some_and(|from| from < 0) {
                return refuse("has a negative offset");
            }
            if claim.from.is_some_and(|from| claim.to <= from) {
                return refuse("is empty or reversed: `to` must be after `from`");
            }
            if !ids.insert(id) {
                return refuse("repeats a batch of the same call");
            }
            check_meta(&claim.meta)?;
            let mut wal = Advance::new(id, Stage::WalWritten, claim.at);
            if let Some(position) = &claim.wal_position {
                wal = wal.with_wal_position(position.node.clone(), position.lsn);
            }
            let committed = Advance::new(id, Stage::SourceCommitted, claim.at);
            check_steps(std::slice::from_ref(&wal))?;
            let mut rec = BatchRecord::new(claim.meta.clone());
            apply_advance(&mut rec, &wal)?;
            apply_advance(&mut rec, &committed)?;
            Ok(rec)
        })
        .collect()
}

/// What a claim whose batch is not registered comes to, given the stored offset it finds.
pub(crate) fn range_outcome(claim: &RangeClaim, stored: Option<i64>) -> RangeOutcome {
    if stored == claim.from {
        RangeOutcome::Claimed
    } else {
        RangeOutcome::Conflict { stored }
    }
}

/// Decides which of `files` a publish inserts: an identical file already held is skipped
/// ([`StoredFile::republishes`]), a different one under the same path is `FileExists`.
pub(crate) fn files_to_publish(
    files: &[StoredFile],
    mut existing: impl FnMut(&str) -> Result<Option<StoredFile>>,
) -> Result<Vec<StoredFile>, wit_store::Error> {
    wit_store::rules::check_new_files(files)?;
    let mut insert = Vec::with_capacity(files.len());
    for file in files {
        let file = file.normalized();
        match existing(&file.path)? {
            Some(held) if wit_store::rules::republishes(&file, &held) => {}
            Some(_) => return Err(wit_store::Error::FileExists { path: file.path }),
            None => insert.push(file),
        }
    }
    Ok(insert)
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
/// Checks that every path names a live file; `is_live` says whether a path is held and live.
pub(crate) fn check_live(
    paths: &[String],
    mut is_live: impl FnMut(&str) -> Result<Option<bool>>,
) -> Result<(), wit_store::Error> {
    for path in paths {
        match is_live(path)? {
            None => return Err(wit_store::Error::UnknownFile { path: path.clone() }),
            Some(false) => {
                return Err(wit_store::Error::WrongFileState {
                    path: path.clone(),
                    state: "retired",
                });
            }
            Some(true) => {}
        }
    }
    Ok(())
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
/// Checks that no path names a live file (they may be forgotten).
pub(crate) fn check_not_live(
    paths: &[String],
    mut is_live: impl FnMut(&str) -> Result<Option<bool>>,
) -> Result<(), wit_store::Error> {
    for path in paths {
        if is_live(path)? == Some(true) {
            return Err(wit_store::Error::WrongFileState {
                path: path.clone(),
                state: "live",
            });
        }
    }
    Ok(())
}

/// Orders throughput rows busiest first, then by tenant, and fills in messages per second.
pub(crate) fn throughput_rows(
    rows: impl IntoIterator<Item = (wit_batch::Tenant, u64, u64, u64)>,
    window: &crate::Window,
) -> Vec<crate::ClientThroughput> {
    let seconds = window.seconds();
    let mut rows: Vec<crate::ClientThroughput> = rows
        .into_iter()
        .map(|(tenant, batches, messages, bytes)| crate::ClientThroughput {
            tenant,
            batches,
            messages,
            bytes,
            messages_per_second: if seconds > 0.0 { messages as f64 / seconds } else { 0.0 },
        })
        .collect();
    rows.sort_by(|a, b| b.messages.cmp(&a.messages).then_with(|| a.tenant.cmp(&b.tenant)));
    rows
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
/// A limit as SQL takes it.
pub(crate) fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Checks a listing's query: a page holds at least one batch.
pub(crate) fn check_query(query: &BatchQuery) -> Result<()> {
    if query.limit == 0 {
        return Err(Error::invalid("a page of batches holds at least one: the limit is 0"));
    }
    Ok(())
}

/// How many rows a backend reads for a page of `limit`: one more, to tell whether the
/// listing goes on.
pub(crate) fn page_rows(limit: usize) -> i64 {
    sql_limit(limit.saturating_add(1))
}

/// The batch ids of `files`, each once, sorted.
pub(crate) fn file_batch_ids(files: &[StoredFile]) -> Vec<BatchId> {
    let mut ids: Vec<BatchId> = files.iter().flat_map(|f| f.batch_ids.iter().copied()).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Marks the batches of newly published files `STORED` (those already at or past `STORED`
/// stay as they are). Returns the ids of the records that changed.
pub(crate) fn store_all(
    records: &mut HashMap<BatchId, BatchRecord>,
    ids: &[BatchId],
    at: SystemTime,
) -> Result<Vec<BatchId>> {
    let mut changed = Vec::new();
    for id in ids {
        let rec = records.get_mut(id).ok_or(Error::UnknownBatch { batch: *id })?;
        if matches!(rec.stage, Stage::Stored | Stage::Indexed | Stage::Completed) {
            continue;
        }
        apply_advance(rec, &Advance::new(*id, Stage::Stored, at))?;
        changed.push(*id);
    }
    Ok(changed)
}

/// The batch ids of those of `files` that come with an index, each once, sorted.
pub(crate) fn indexed_batch_ids(files: &[StoredFile]) -> Vec<BatchId> {
    let indexed: Vec<StoredFile> = files.iter().filter(|f| f.index.is_some()).cloned().collect();
    file_batch_ids(&indexed)
}

/// Marks the batches of a file whose index is recorded `INDEXED`: those at `STORED` move on,
/// the rest (`INDEXED`, `COMPLETED`, `FAILED`, earlier stages) stay as they are, as do ids
/// without a record (batches purged since their file was published). Returns the ids of the
/// records that changed.
pub(crate) fn index_all(
    records: &mut HashMap<BatchId, BatchRecord>,
    ids: &[BatchId],
    at: SystemTime,
) -> Result<Vec<BatchId>> {
    let mut changed = Vec::new();
    for id in ids {
        let Some(rec) = records.get_mut(id) else { continue };
        if rec.stage != Stage::Stored {
            continue;
        }
        apply_advance(rec, &Advance::new(*id, Stage::Indexed, at))?;
        changed.push(*id);
    }
    Ok(changed)
}

/// Why `key` (with a receipt of `receipt_len` bytes) cannot be remembered, if it cannot:
/// wit-batch's rule for the keys its envelopes carry.
fn key_problem(key: &str, receipt_len: usize) -> Option<String> {
    wit_batch::Idempotency::check(key, receipt_len).err()
}

/// Checks every key of a [`remember_keys`](crate::Tracker::remember_keys) call before
/// anything is written: the first one that cannot be remembered fails the call.
pub(crate) fn check_keys(keys: &[RememberedKey]) -> Result<()> {
    for k in keys {
        if let Some(reason) = key_problem(&k.key, k.receipt.len()) {
            return Err(Error::InvalidIdempotencyKey {
                tenant: k.tenant.as_str().to_owned(),
                key: k.key.chars().take(64).collect(),
                reason,
            });
        }
    }
    Ok(())
}

/// Whether `key` is one [`remember_keys`](crate::Tracker::remember_keys) could have taken.
/// A recall of any other is `None` without a look at the database (which may not even take
/// it as a parameter: PostgreSQL's text holds no NUL).
pub(crate) fn rememberable(key: &str) -> bool {
    key_problem(key, 0).is_none()
}

/// The keys of a call to remember, each `(tenant, key)` once (the first of the call wins, as
/// against a key remembered before), with their time truncated to the microsecond.
pub(crate) fn keys_to_remember(keys: &[RememberedKey]) -> Vec<RememberedKey> {
    let mut seen = std::collections::HashSet::with_capacity(keys.len());
    keys.iter()
        .filter(|k| seen.insert((&k.tenant, k.key.as_str())))
        .map(|k| RememberedKey {
            at: micros(k.at),
            ..k.clone()
        })
        .collect()
}

/// `a` and `b` together, each id once, sorted.
pub(crate) fn merged_ids(mut a: Vec<BatchId>, b: Vec<BatchId>) -> Vec<BatchId> {
    a.extend(b);
    a.sort_unstable();
    a.dedup();
    a
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
/// Stage names as the SQL backends store them.
pub(crate) fn parse_stage(backend: &'static str, text: &str) -> Result<Stage> {
    text.parse().map_err(|_| Error::Corrupt {
        backend,
        what: "stage",
        value: text.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micros_truncate_the_same_way_on_both_sides_of_the_epoch() {
        let after = SystemTime::UNIX_EPOCH + Duration::new(5, 1_999);
        assert_eq!(to_micros(after), 5_000_001);
        assert_eq!(micros(after), SystemTime::UNIX_EPOCH + Duration::from_micros(5_000_001));
        let before = SystemTime::UNIX_EPOCH - Duration::new(5, 1_001);
        assert_eq!(to_micros(before), -5_000_002);
        assert_eq!(
            from_micros(-5_000_002),
            SystemTime::UNIX_EPOCH - Duration::from_micros(5_000_002)
        );
        assert_eq!(micros(micros(before)), micros(before));
    }

    #[test]
    fn keys_are_checked_and_each_remembered_once() {
        let tenant = wit_batch::Tenant::try_new("acme").expect("tenant");
        let key = |k: &str, receipt: usize| {
            RememberedKey::new(
                tenant.clone(),
                k,
                BatchId::new(),
                vec![0; receipt],
                SystemTime::UNIX_EPOCH + Duration::new(1, 1_999),
            )
        };
        let longest = "k".repeat(RememberedKey::MAX_KEY_LEN);
        check_keys(&[key("!~", 0), key(&longest, RememberedKey::MAX_RECEIPT_LEN)]).expect("valid");
        let long = "k".repeat(RememberedKey::MAX_KEY_LEN + 1);
        for (bad, receipt, reason) in [
            ("", 0, "not empty"),
            (long.as_str(), 0, "at most 255 bytes"),
            ("two words", 0, "byte 3 is ' '"),
            ("caf\u{e9}", 0, "byte 3 is '\u{e9}'"),
            ("tab\t", 0, "byte 3 is '\\t'"),
            (
                "ok",
                RememberedKey::MAX_RECEIPT_LEN + 1,
                "at most 65536 bytes, this one 65537",
            ),
        ] {
            let err = check_keys(&[key("fine", 1), key(bad, receipt)]).expect_err(bad);
            let Error::InvalidIdempotencyKey {
                tenant,
                key,
                reason: why,
            } = &err
            else {
                panic!("{err}")
            };
            assert_eq!(tenant, "acme");
            assert_eq!(key, &bad.chars().take(64).collect::<String>());
            assert!(why.contains(reason), "{why}");
        }

        let (a, b) = (key("a", 1), key("b", 2));
        let mut a_again = key("a", 3);
        a_again.batch = BatchId::new();
        let kept = keys_to_remember(&[a.clone(), b, a_again]);
        assert_eq!(kept.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(
            (kept[0].batch, kept[0].receipt.len()),
            (a.batch, 1),
            "the first of the call"
        );
        assert_eq!(kept[0].at, SystemTime::UNIX_EPOCH + Duration::new(1, 1_000));
    }

    #[test]
    fn offsets_merge_to_the_highest_per_partition() {
        let b = BatchId::new();
        let steps = [
            Advance::new(b, Stage::SourceCommitted, SystemTime::UNIX_EPOCH).with_offsets(vec![
                SourceOffset::new("g", "t", 0, 10),
                SourceOffset::new("g", "t", 1, 5),
            ]),
            Advance::new(b, Stage::SourceCommitted, SystemTime::UNIX_EPOCH).with_offsets(vec![
                SourceOffset::new("g", "t", 0, 7),
                SourceOffset::new("g", "t", 1, 9),
            ]),
        ];
        assert_eq!(
            merged_offsets(&steps),
            [SourceOffset::new("g", "t", 0, 10), SourceOffset::new("g", "t", 1, 9)]
        );
    }
}
