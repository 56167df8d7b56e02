//! The tracker's conformance suite: one body of checks that every [`Tracker`] backend passes,
//! the in-memory, SQLite and PostgreSQL trackers here and a host's own backend alike. Built
//! with the `conformance` feature.
//!
//! Each check is a function that takes the backend under test, fresh (empty), and panics
//! when the backend breaks a rule of the contract. [`tracker_conformance!`](crate::tracker_conformance)
//! turns every check into a `#[test]`; a backend must then be a [`Tracker`], an
//! [`AsyncTracker`] and a [`FileCatalog`], as the trackers of this crate are. The checks
//! assume the settings of [`config`] (two retries before a batch is `FAILED`) and times
//! around [`t0`]; the helpers they use ([`meta`], [`registered`], [`walk`], [`range`]) are
//! here for a backend's own tests too.
//!
//! A third-party backend runs the suite from its tests: add `wit-tracker` with the
//! `conformance` feature to its dev-dependencies, write a function that makes a fresh backend
//! (returning `Option` of something that dereferences to it: `None` skips the test, for a
//! backend whose server is not there) and hand it to the macro:
//!
//! ```
//! use wit_tracker::InMemoryTracker;
//! use wit_tracker::conformance::{config, full_lifecycle};
//!
//! /// A fresh backend for each test (a `Box`, so that it dereferences to the tracker).
//! fn make() -> Option<Box<InMemoryTracker>> {
//!     Some(Box::new(InMemoryTracker::new(config())))
//! }
//!
//! // One `#[test]` per check, run by `cargo test`.
//! wit_tracker::tracker_conformance!(make);
//!
//! # fn main() {
//! // A check is a plain function too.
//! full_lifecycle(&InMemoryTracker::new(config()));
//! # }
//! ```
//!
//! The file-catalog side of a tracker has its own suite, in `wit-store`:
//! `wit_store::file_catalog_conformance!`.

use std::time::{Duration, SystemTime};

use crate::{
    Advance, AsyncTracker, BatchPage, BatchQuery, BatchRecord, ClaimRequest, Cursor, Error, ErrorOutcome, RangeClaim,
    RangeOutcome, Registration, RememberedKey, SourceOffset, Tracker, TrackerConfig, TrackerExt, WalPosition, Window,
};
use wit_batch::{BatchId, BatchMeta, RetryPolicy, Signal, SourceKind, Stage, Tenant, Transition};
use wit_store::{FileCatalog, FileIndex, StoredFile, TimeRange};

/// The settings the checks assume: two retries.
pub fn config() -> TrackerConfig {
    TrackerConfig::default().with_retry_policy(RetryPolicy::default().with_max_retries(2))
}

/// A fixed "now" well after every creation time used here.
pub fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// `seconds` after [`t0`].
pub fn at(seconds: u64) -> SystemTime {
    t0() + Duration::from_secs(seconds)
}

/// A new batch of `tenant` with `messages` messages (100 bytes each), created at `created`
/// plus 1.5 µs (a sub-microsecond remainder: backends keep microseconds).
pub fn meta(tenant: &str, created: SystemTime, messages: u64) -> BatchMeta {
    let id = BatchId::new();
    BatchMeta {
        id,
        tenant: Tenant::try_new(tenant).expect("tenant"),
        signal: Signal::Logs,
        source: SourceKind::Http,
        message_count: messages,
        byte_size: messages * 100,
        first_offset: None,
        last_offset: None,
        topics: vec![],
        partition: None,
        // Microseconds with a sub-microsecond remainder: backends keep microseconds.
        created_at: created + Duration::from_nanos(1_500),
    }
}

/// Registers a new batch ([`meta`]) and returns its id; panics unless it is newly registered.
pub fn registered(t: &impl Tracker, tenant: &str, created: SystemTime, messages: u64) -> BatchId {
    let m = meta(tenant, created, messages);
    assert_eq!(t.register_one(&m).expect("register"), Registration::Registered);
    m.id
}

/// Moves `id` through `stages` at `when`.
pub fn walk(t: &impl Tracker, id: BatchId, stages: &[Stage], when: SystemTime) {
    for stage in stages {
        assert_eq!(t.mark(id, *stage, when).expect("mark"), Transition::Applied, "{stage}");
    }
}

/// The first page of the stuck batches (`BatchQuery::stuck`), at most `limit`.
fn stuck_page(
    t: &impl Tracker,
    created_before: SystemTime,
    limit: usize,
    tenant: Option<&Tenant>,
) -> crate::Result<Vec<BatchRecord>> {
    let query = BatchQuery::stuck(created_before)
        .with_limit(limit)
        .with_tenant(tenant.cloned());
    Ok(t.list_batches(&query)?.batches)
}

/// The first page of the failed batches (`BatchQuery::failed`), at most `limit`.
fn failed_page(t: &impl Tracker, limit: usize, tenant: Option<&Tenant>) -> crate::Result<Vec<BatchRecord>> {
    let query = BatchQuery::failed().with_limit(limit).with_tenant(tenant.cloned());
    Ok(t.list_batches(&query)?.batches)
}

const TO_INGESTED: &[Stage] = &[Stage::WalWritten, Stage::Ingested];

fn micros(t: SystemTime) -> SystemTime {
    let us = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_micros();
    SystemTime::UNIX_EPOCH + Duration::from_micros(us as u64)
}

/// A registered batch reads back as given (its creation time to the microsecond), `CREATED`;
/// registering it again changes nothing; a count beyond `i64` fails the whole call.
pub fn register_and_read_back(t: &impl Tracker) {
    let mut kafka = meta("acme", at(0), 500);
    kafka.source = SourceKind::Kafka;
    kafka.signal = Signal::Traces;
    kafka.first_offset = Some(1_000);
    kafka.last_offset = Some(1_499);
    kafka.topics = vec!["spans.acme".into(), "spans.\"quoted\"".into()];
    let plain = meta("umbrella", at(1), 1);
    assert_eq!(
        t.register(&[kafka.clone(), plain.clone(), kafka.clone()])
            .expect("register"),
        [
            Registration::Registered,
            Registration::Registered,
            Registration::AlreadyRegistered
        ]
    );
    let rec = t.batch(kafka.id).expect("batch");
    let mut expected = kafka.clone();
    expected.created_at = micros(kafka.created_at);
    assert_eq!(rec.meta, expected);
    assert_eq!(rec.stage, Stage::Created);
    assert_eq!(rec.completed_at.get(Stage::Created), Some(expected.created_at));
    assert_eq!(rec.completed_at.get(Stage::WalWritten), None);
    assert_eq!((rec.retry_count, rec.wal_position, rec.lease.clone()), (0, None, None));

    // Registering again changes nothing.
    walk(t, kafka.id, &[Stage::WalWritten], at(5));
    let mut changed = kafka.clone();
    changed.message_count = 1;
    assert_eq!(
        t.register_one(&changed).expect("again"),
        Registration::AlreadyRegistered
    );
    let again = t.batch(kafka.id).expect("batch");
    assert_eq!((again.stage, again.meta.message_count), (Stage::WalWritten, 500));

    let mut huge = meta("acme", at(0), 1);
    huge.byte_size = u64::MAX;
    let err = t.register(&[meta("acme", at(0), 1), huge]).expect_err("too large");
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
}

/// An unregistered batch is `UnknownBatch` for `batch`, `advance` (failing the whole call) and
/// `record_error`.
pub fn unknown_batch(t: &impl Tracker) {
    let ghost = BatchId::new();
    assert!(matches!(t.batch(ghost), Err(Error::UnknownBatch { batch }) if batch == ghost));
    let known = registered(t, "acme", at(0), 1);
    // One unknown step fails the whole call.
    let err = t
        .advance(&[
            Advance::new(known, Stage::WalWritten, at(1)),
            Advance::new(ghost, Stage::WalWritten, at(1)),
        ])
        .expect_err("unknown");
    assert!(matches!(err, Error::UnknownBatch { batch } if batch == ghost), "{err}");
    assert_eq!(t.batch(known).expect("batch").stage, Stage::Created);
    let err = t
        .record_error(ghost, Stage::WalWritten, "x", at(1))
        .expect_err("unknown");
    assert!(matches!(err, Error::UnknownBatch { .. }), "{err}");
}

/// A batch walks the whole lifecycle, each stage time kept to the microsecond; a repeated step
/// is `AlreadyApplied` and changes nothing; one call may carry several batches' steps.
pub fn full_lifecycle(t: &impl Tracker) {
    let id = registered(t, "acme", at(0), 10);
    let stages = [
        Stage::WalWritten,
        Stage::SourceCommitted,
        Stage::Ingested,
        Stage::Stored,
        Stage::Indexed,
        Stage::Completed,
    ];
    for (i, stage) in stages.into_iter().enumerate() {
        let when = at(10 * (i as u64 + 1)) + Duration::from_nanos(999);
        let mut step = Advance::new(id, stage, when);
        if stage == Stage::WalWritten {
            step = step.with_wal_position("node-a", 77);
        }
        assert_eq!(t.advance(&[step]).expect("advance"), [Transition::Applied]);
        let rec = t.batch(id).expect("batch");
        assert_eq!(rec.stage, stage);
        assert_eq!(rec.completed_at.get(stage), Some(micros(when)));
        assert_eq!(rec.updated_at, micros(when));
        // Repeating a step is an outcome, not an error, and changes nothing.
        assert_eq!(t.mark(id, stage, at(999)).expect("repeat"), Transition::AlreadyApplied);
        assert_eq!(t.batch(id).expect("batch"), rec);
    }
    let rec = t.batch(id).expect("batch");
    assert_eq!(rec.wal_position, Some(WalPosition::new("node-a", 77)));
    for (i, stage) in stages.into_iter().enumerate() {
        assert_eq!(rec.completed_at.get(stage), Some(micros(at(10 * (i as u64 + 1)))));
    }

    // Several steps of several batches in one call, applied in order.
    let a = registered(t, "acme", at(0), 1);
    let b = registered(t, "acme", at(0), 1);
    let outcomes = t
        .advance(&[
            Advance::new(a, Stage::WalWritten, at(1)),
            Advance::new(b, Stage::WalWritten, at(1)),
            Advance::new(a, Stage::Ingested, at(2)),
            Advance::new(a, Stage::Ingested, at(3)),
        ])
        .expect("advance");
    assert_eq!(
        outcomes,
        [
            Transition::Applied,
            Transition::Applied,
            Transition::Applied,
            Transition::AlreadyApplied
        ]
    );
    assert_eq!(t.batch(a).expect("a").completed_at.get(Stage::Ingested), Some(at(2)));
}

/// Skipped, backward and other forbidden steps are `InvalidTransition` (a step into `FAILED`
/// is `InvalidArgument`), and a bad step anywhere in a call applies none of it; nothing
/// leaves `COMPLETED`.
pub fn invalid_transitions(t: &impl Tracker) {
    let id = registered(t, "acme", at(0), 1);
    walk(t, id, TO_INGESTED, at(1));
    for (to, from) in [
        (Stage::Indexed, Stage::Ingested),
        (Stage::WalWritten, Stage::Ingested),
        (Stage::Created, Stage::Ingested),
    ] {
        let err = t.mark(id, to, at(2)).expect_err("invalid");
        assert!(
            matches!(err, Error::InvalidTransition { batch, from: f, to: t2 } if batch == id && f == from && t2 == to),
            "{err}"
        );
    }
    let err = t.mark(id, Stage::Failed, at(2)).expect_err("failing needs a message");
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");

    // A bad step anywhere in a call applies none of it.
    let other = registered(t, "acme", at(0), 1);
    let err = t
        .advance(&[
            Advance::new(other, Stage::WalWritten, at(3)),
            Advance::new(id, Stage::Completed, at(3)),
        ])
        .expect_err("skip");
    assert!(matches!(err, Error::InvalidTransition { .. }), "{err}");
    assert_eq!(t.batch(other).expect("other").stage, Stage::Created);

    walk(t, id, &[Stage::Stored, Stage::Indexed, Stage::Completed], at(4));
    let err = t.mark(id, Stage::Indexed, at(5)).expect_err("completed is final");
    assert!(
        matches!(
            err,
            Error::InvalidTransition {
                from: Stage::Completed,
                ..
            }
        ),
        "{err}"
    );
    let err = t
        .record_error(id, Stage::Stored, "late", at(5))
        .expect_err("completed never fails");
    assert!(matches!(err, Error::InvalidTransition { .. }), "{err}");
}

/// Stage errors count up to the retry policy's limit, then the batch is `FAILED` where it
/// was; a retry by hand goes into that stage only, with a fresh budget.
pub fn errors_and_retries(t: &impl Tracker) {
    let id = registered(t, "acme", at(0), 1);
    walk(t, id, &[Stage::WalWritten], at(1));
    let err = t
        .record_error(id, Stage::Stored, "not next", at(2))
        .expect_err("not the next step");
    assert!(matches!(err, Error::InvalidTransition { .. }), "{err}");

    assert_eq!(
        t.record_error(id, Stage::Ingested, "bad gzip", at(2)).expect("1"),
        ErrorOutcome::Retry { retry_count: 1 }
    );
    let rec = t.batch(id).expect("batch");
    assert_eq!(
        (rec.stage, rec.error_stage, rec.error_message.as_deref()),
        (Stage::WalWritten, Some(Stage::Ingested), Some("bad gzip"))
    );
    assert_eq!(
        t.record_error(id, Stage::Ingested, "again", at(3)).expect("2"),
        ErrorOutcome::Retry { retry_count: 2 }
    );
    assert!(failed_page(t, 10, None).expect("failed").is_empty());
    assert_eq!(
        t.record_error(id, Stage::Ingested, "give up", at(4)).expect("3"),
        ErrorOutcome::Failed { retry_count: 3 }
    );

    let rec = t.batch(id).expect("batch");
    assert_eq!(rec.stage, Stage::Failed);
    assert_eq!(rec.failed_in, Some(Stage::WalWritten));
    assert_eq!(rec.completed_at.get(Stage::Failed), Some(at(4)));
    assert_eq!((rec.retry_count, rec.error_message.as_deref()), (3, Some("give up")));
    let failed = failed_page(t, 10, None).expect("failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0], rec);
    let err = t
        .record_error(id, Stage::Ingested, "more", at(5))
        .expect_err("already failed");
    assert!(
        matches!(
            err,
            Error::InvalidTransition {
                from: Stage::Failed,
                ..
            }
        ),
        "{err}"
    );
    // A failed batch is not offered to workers.
    assert!(
        t.claim(&ClaimRequest::new(Stage::Ingested, "w", 10).at(at(5)))
            .expect("claim")
            .is_empty()
    );

    // Retry by hand: only into the stage it failed in, with a fresh budget.
    let err = t.mark(id, Stage::Ingested, at(6)).expect_err("not where it failed");
    assert!(
        matches!(
            err,
            Error::InvalidTransition {
                from: Stage::Failed,
                to: Stage::Ingested,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        t.mark(id, Stage::WalWritten, at(6)).expect("retry"),
        Transition::Applied
    );
    let rec = t.batch(id).expect("batch");
    assert_eq!(
        (rec.stage, rec.failed_in, rec.retry_count),
        (Stage::WalWritten, None, 0)
    );
    assert_eq!(
        rec.completed_at.get(Stage::WalWritten),
        Some(at(1)),
        "the original time stays"
    );
    assert!(failed_page(t, 10, None).expect("failed").is_empty());
    walk(t, id, &[Stage::Ingested], at(7));
}

/// Claims hand out ready batches oldest first, never the same batch to two workers while its
/// lease holds; a completed step or an error drops the lease; a lease that ran out frees the
/// batch; invalid claims are `InvalidArgument`.
pub fn claims_and_leases(t: &impl Tracker) {
    let ids: Vec<BatchId> = (0..5).map(|i| registered(t, "acme", at(i), 1)).collect();
    for id in &ids {
        walk(t, *id, &[Stage::WalWritten], at(10));
    }
    let not_ready = registered(t, "acme", at(0), 1); // still CREATED
    let lease = Duration::from_secs(30);
    let request = |worker: &str, max, now| {
        ClaimRequest::new(Stage::Ingested, worker, max)
            .with_lease(lease)
            .at(now)
    };

    let first = t.claim(&request("w1", 3, at(20))).expect("claim");
    assert_eq!(
        first.iter().map(|r| r.meta.id).collect::<Vec<_>>(),
        ids[..3],
        "oldest first"
    );
    assert!(
        first
            .iter()
            .all(|r| r.lease.as_ref().is_some_and(|l| l.worker == "w1" && l.until == at(50)))
    );
    assert_eq!(t.batch(ids[0]).expect("batch").lease, first[0].lease);
    let second = t.claim(&request("w2", 10, at(21))).expect("claim");
    assert_eq!(second.iter().map(|r| r.meta.id).collect::<Vec<_>>(), ids[3..]);
    assert!(t.claim(&request("w3", 10, at(22))).expect("claim").is_empty());
    assert!(!first.iter().chain(&second).any(|r| r.meta.id == not_ready));

    // w1 finishes one batch and fails another; the failed one is free again at once.
    walk(t, ids[0], &[Stage::Ingested], at(23));
    assert_eq!(t.batch(ids[0]).expect("batch").lease, None);
    t.record_error(ids[1], Stage::Ingested, "oops", at(24)).expect("error");
    let again = t.claim(&request("w3", 10, at(25))).expect("claim");
    assert_eq!(again.iter().map(|r| r.meta.id).collect::<Vec<_>>(), [ids[1]]);

    // w1 dies: when its lease runs out, ids[2] is claimable again; w2's runs out later.
    assert!(t.claim(&request("w4", 10, at(49))).expect("claim").is_empty());
    let reclaimed = t.claim(&request("w4", 10, at(50))).expect("claim");
    assert_eq!(reclaimed.iter().map(|r| r.meta.id).collect::<Vec<_>>(), [ids[2]]);
    let reclaimed = t.claim(&request("w5", 10, at(51))).expect("claim");
    assert_eq!(reclaimed.iter().map(|r| r.meta.id).collect::<Vec<_>>(), ids[3..]);

    // The next stage's workers see the batch that moved on.
    let storers = t
        .claim(&ClaimRequest::new(Stage::Stored, "s1", 10).at(at(60)))
        .expect("claim");
    assert_eq!(storers.iter().map(|r| r.meta.id).collect::<Vec<_>>(), [ids[0]]);
    assert!(
        t.claim(&ClaimRequest::new(Stage::Ingested, "w", 0).at(at(999)))
            .expect("max 0")
            .is_empty()
    );

    for bad in [
        ClaimRequest::new(Stage::Created, "w", 1),
        ClaimRequest::new(Stage::Failed, "w", 1),
        ClaimRequest::new(Stage::Stored, "", 1),
    ] {
        let err = t.claim(&bad).expect_err("bad claim");
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    }
}

/// Fenced steps and errors (`Advance::with_worker`, `record_error_by`) apply only while their
/// worker holds the lease at the step's time; a refused call changes nothing.
pub fn fenced_steps_need_the_lease(t: &impl Tracker) {
    let id = registered(t, "acme", at(0), 1);
    walk(t, id, &[Stage::WalWritten], at(1));
    let claim = |stage, worker: &str, now| {
        t.claim(
            &ClaimRequest::new(stage, worker, 1)
                .with_lease(Duration::from_secs(10))
                .at(now),
        )
        .expect("claim")
        .into_iter()
        .map(|r| r.meta.id)
        .collect::<Vec<_>>()
    };
    let lost = |err: &Error, who: &str, held_by: Option<&str>| {
        matches!(err, Error::LeaseLost { batch, worker, holder }
            if *batch == id && worker == who && holder.as_deref() == held_by)
    };

    // a's lease (until 20) runs out while it works; b claims the batch at 25 (until 35).
    assert_eq!(claim(Stage::Ingested, "a", at(10)), [id]);
    assert_eq!(claim(Stage::Ingested, "b", at(25)), [id]);
    let before = t.batch(id).expect("batch");
    let err = t
        .advance(&[Advance::new(id, Stage::Ingested, at(26)).with_worker("a")])
        .expect_err("a lost its lease");
    assert!(lost(&err, "a", Some("b")), "{err}");
    assert_eq!(t.batch(id).expect("batch"), before, "a's step was not applied");
    let err = t
        .record_error_by(id, Stage::Ingested, "a's late error", at(26), "a")
        .expect_err("a lost its lease");
    assert!(lost(&err, "a", Some("b")), "{err}");
    assert_eq!(t.batch(id).expect("batch"), before, "a's error was not recorded");

    // One lost lease fails the whole call, a's other batch (whose lease it holds) included.
    let other = registered(t, "acme", at(1), 1);
    walk(t, other, &[Stage::WalWritten], at(2));
    assert_eq!(claim(Stage::Ingested, "a", at(26)), [other]);
    let err = t
        .advance(&[
            Advance::new(other, Stage::Ingested, at(27)).with_worker("a"),
            Advance::new(id, Stage::Ingested, at(27)).with_worker("a"),
        ])
        .expect_err("a lost id's lease");
    assert!(lost(&err, "a", Some("b")), "{err}");
    assert_eq!(t.batch(other).expect("other").stage, Stage::WalWritten);
    // While it holds the lease, a's error counts (and drops the lease).
    assert_eq!(
        t.record_error_by(other, Stage::Ingested, "bad gzip", at(27), "a")
            .expect("a holds other's lease"),
        ErrorOutcome::Retry { retry_count: 1 }
    );
    // Leases are checked as the call found them: a worker's steps of one batch in one call.
    assert_eq!(claim(Stage::Ingested, "a", at(28)), [other]);
    assert_eq!(
        t.advance(&[
            Advance::new(other, Stage::Ingested, at(29)).with_worker("a"),
            Advance::new(other, Stage::Stored, at(29)).with_worker("a"),
        ])
        .expect("a holds other's lease"),
        [Transition::Applied, Transition::Applied]
    );

    // b, the holder, moves the batch on; a's repeat of that step changes nothing.
    assert_eq!(
        t.advance(&[Advance::new(id, Stage::Ingested, at(30)).with_worker("b")])
            .expect("b holds the lease"),
        [Transition::Applied]
    );
    assert_eq!(
        t.advance(&[Advance::new(id, Stage::Ingested, at(31)).with_worker("a")])
            .expect("already applied"),
        [Transition::AlreadyApplied]
    );
    // b's step dropped its lease: b's next fenced step needs a new claim.
    let err = t
        .advance(&[Advance::new(id, Stage::Stored, at(31)).with_worker("b")])
        .expect_err("no lease");
    assert!(lost(&err, "b", None), "{err}");

    // A lease runs out at its end, whether or not anyone claims the batch after.
    assert_eq!(claim(Stage::Stored, "s", at(40)), [id]);
    let err = t
        .advance(&[Advance::new(id, Stage::Stored, at(50)).with_worker("s")])
        .expect_err("ran out at 50");
    assert!(lost(&err, "s", None), "{err}");
    assert_eq!(t.batch(id).expect("batch").stage, Stage::Ingested);
    assert_eq!(
        t.advance(&[Advance::new(id, Stage::Stored, at(49)).with_worker("s")])
            .expect("s's lease holds at 49"),
        [Transition::Applied]
    );

    // Unfenced steps and errors need no lease, as before.
    assert_eq!(
        t.mark(id, Stage::Indexed, at(51)).expect("unfenced"),
        Transition::Applied
    );
    t.record_error(id, Stage::Completed, "unfenced", at(52))
        .expect("unfenced");
    let err = t
        .advance(&[Advance::new(id, Stage::Completed, at(53)).with_worker("")])
        .expect_err("no name");
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
}

/// The operator's queries: stuck and failed batches (per tenant too), stage counts, client
/// throughput, stage times in lifecycle order, and the oldest unstored WAL position.
pub fn queries(t: &impl Tracker) {
    // acme: 3 batches (30 + 20 + 10 messages), umbrella: 1 (5 messages), one old batch.
    let old = registered(t, "acme", at(0), 1);
    let a1 = registered(t, "acme", at(100), 30);
    let a2 = registered(t, "acme", at(110), 20);
    let a3 = registered(t, "acme", at(120), 10);
    let u1 = registered(t, "umbrella", at(130), 5);
    walk(
        t,
        old,
        &[
            Stage::WalWritten,
            Stage::Ingested,
            Stage::Stored,
            Stage::Indexed,
            Stage::Completed,
        ],
        at(1),
    );
    t.advance(&[
        Advance::new(a1, Stage::WalWritten, at(101)).with_wal_position("node-a", 4_000),
        Advance::new(a2, Stage::WalWritten, at(111)).with_wal_position("node-a", 5_000),
        Advance::new(a3, Stage::WalWritten, at(121)).with_wal_position("node-a", 6_000),
        Advance::new(u1, Stage::WalWritten, at(131)).with_wal_position("node-a", 7_000),
    ])
    .expect("advance");
    walk(t, a1, &[Stage::Ingested], at(102));
    // Its stages, in lifecycle order, with when each was reached.
    let record = t.batch(a1).expect("a1");
    let reached: Vec<(Stage, SystemTime)> = record.completed_at.iter().collect();
    assert_eq!(
        reached,
        [
            (Stage::Created, record.meta.created_at),
            (Stage::WalWritten, at(101)),
            (Stage::Ingested, at(102))
        ]
    );
    for _ in 0..3 {
        t.record_error(a3, Stage::Ingested, "x", at(122)).expect("error");
    }

    // Stuck: incomplete and not failed, created before the cut-off, oldest first.
    let stuck: Vec<BatchId> = stuck_page(t, at(115), 10, None)
        .expect("stuck")
        .into_iter()
        .map(|r| r.meta.id)
        .collect();
    assert_eq!(stuck, [a1, a2]);
    assert_eq!(stuck_page(t, at(1_000), 1, None).expect("stuck")[0].meta.id, a1);
    // One tenant's view: its batches only.
    let (acme, umbrella) = (Tenant::try_new("acme").unwrap(), Tenant::try_new("umbrella").unwrap());
    let ids = |records: Vec<BatchRecord>| records.into_iter().map(|r| r.meta.id).collect::<Vec<_>>();
    assert_eq!(ids(stuck_page(t, at(1_000), 10, Some(&acme)).expect("stuck")), [a1, a2]);
    assert_eq!(ids(stuck_page(t, at(1_000), 10, Some(&umbrella)).expect("stuck")), [u1]);
    assert_eq!(ids(failed_page(t, 10, Some(&acme)).expect("failed")), [a3]);
    assert!(failed_page(t, 10, Some(&umbrella)).expect("failed").is_empty());
    let theirs = t
        .stage_counts(Window::new(at(100), at(200)), Some(&umbrella))
        .expect("counts");
    assert_eq!((theirs.get(Stage::WalWritten), theirs.total()), (1, 1));

    let counts = t.stage_counts(Window::new(at(100), at(200)), None).expect("counts");
    assert_eq!(
        (
            counts.get(Stage::Ingested),
            counts.get(Stage::WalWritten),
            counts.get(Stage::Failed),
            counts.get(Stage::Completed)
        ),
        (1, 2, 1, 0)
    );
    assert_eq!(counts.total(), 4);
    let by_stage: Vec<(Stage, u64)> = counts.iter().filter(|(_, n)| *n > 0).collect();
    assert_eq!(
        by_stage,
        [(Stage::WalWritten, 2), (Stage::Ingested, 1), (Stage::Failed, 1)]
    );
    assert_eq!(counts.iter().count(), Stage::ALL.len(), "zeros included");
    // Every batch, with no window to invent: the four above and the old one, completed.
    let everything = t.stage_counts(Window::all(), None).expect("counts");
    assert_eq!(everything.total(), 5, "{everything:?}");
    assert_eq!(everything.get(Stage::Completed), 1);
    assert_eq!(
        t.stage_counts(Window::new(at(0), at(100)), None)
            .expect("counts")
            .get(Stage::Completed),
        1
    );

    let rows = t.client_throughput(Window::new(at(100), at(200))).expect("throughput");
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (
            rows[0].tenant.as_str(),
            rows[0].batches,
            rows[0].messages,
            rows[0].bytes
        ),
        ("acme", 3, 60, 6_000)
    );
    assert!((rows[0].messages_per_second - 0.6).abs() < 1e-9);
    assert_eq!((rows[1].tenant.as_str(), rows[1].messages), ("umbrella", 5));

    // The WAL must keep everything from the oldest unstored batch's position.
    assert_eq!(t.oldest_unstored_wal_position("node-a").expect("oldest"), Some(4_000));
    walk(t, a1, &[Stage::Stored], at(150));
    assert_eq!(t.oldest_unstored_wal_position("node-a").expect("oldest"), Some(5_000));
}

/// Without any batch holding a position in a node's log there is no oldest position; an
/// empty node name is `InvalidArgument`.
pub fn no_wal_position_yet(t: &impl Tracker) {
    assert_eq!(t.oldest_unstored_wal_position("node-a").expect("empty"), None);
    registered(t, "acme", at(0), 1);
    assert_eq!(t.oldest_unstored_wal_position("node-a").expect("no position"), None);
    let err = t.oldest_unstored_wal_position("").expect_err("no node");
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
}

/// Each node's WAL positions are its own: a batch written to node A's log holds back node A's
/// log only, whatever the LSNs in other logs.
pub fn wal_positions_are_per_node(t: &impl Tracker) {
    let a = registered(t, "acme", at(0), 1);
    let b = registered(t, "acme", at(0), 1);
    let a2 = registered(t, "acme", at(0), 1);
    t.advance(&[
        Advance::new(a, Stage::WalWritten, at(1)).with_wal_position("node-a", 100),
        Advance::new(b, Stage::WalWritten, at(1)).with_wal_position("node-b", 50),
        Advance::new(a2, Stage::WalWritten, at(1)).with_wal_position("node-a", 300),
    ])
    .expect("advance");
    assert_eq!(
        t.batch(a).expect("a").wal_position,
        Some(WalPosition::new("node-a", 100))
    );
    assert_eq!(
        t.batch(b).expect("b").wal_position,
        Some(WalPosition::new("node-b", 50))
    );
    let oldest = |node: &str| t.oldest_unstored_wal_position(node).expect("oldest");
    assert_eq!(oldest("node-a"), Some(100), "b's LSN 50 is in another log");
    assert_eq!(oldest("node-b"), Some(50));
    assert_eq!(oldest("node-c"), None);

    walk(t, a, &[Stage::Ingested, Stage::Stored], at(2));
    assert_eq!(oldest("node-a"), Some(300));
    assert_eq!(oldest("node-b"), Some(50));
    walk(t, b, &[Stage::Ingested, Stage::Stored], at(3));
    assert_eq!((oldest("node-a"), oldest("node-b")), (Some(300), None));

    let fresh = registered(t, "acme", at(0), 1);
    let err = t
        .advance(&[Advance::new(fresh, Stage::WalWritten, at(4)).with_wal_position("", 1)])
        .expect_err("no node");
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    assert_eq!(t.batch(fresh).expect("fresh").stage, Stage::Created);
}

/// Only batches not yet `STORED` hold back their WAL: `STORED`, `INDEXED`, `COMPLETED` and
/// `FAILED` ones do not; a batch retried by hand out of `FAILED` does again.
pub fn failed_and_stored_do_not_hold_the_wal(t: &impl Tracker) {
    let ingested = registered(t, "acme", at(0), 1);
    let committed = registered(t, "acme", at(0), 1);
    let failing = registered(t, "acme", at(0), 1);
    let done = registered(t, "acme", at(0), 1);
    t.advance(&[
        Advance::new(done, Stage::WalWritten, at(1)).with_wal_position("node-a", 1),
        Advance::new(failing, Stage::WalWritten, at(1)).with_wal_position("node-a", 5),
        Advance::new(ingested, Stage::WalWritten, at(1)).with_wal_position("node-a", 10),
        Advance::new(committed, Stage::WalWritten, at(1)).with_wal_position("node-a", 20),
        Advance::new(committed, Stage::SourceCommitted, at(1)),
    ])
    .expect("advance");
    let oldest = || t.oldest_unstored_wal_position("node-a").expect("oldest");
    assert_eq!(oldest(), Some(1));
    walk(
        t,
        done,
        &[Stage::Ingested, Stage::Stored, Stage::Indexed, Stage::Completed],
        at(2),
    );
    assert_eq!(oldest(), Some(5));
    for n in 0..3 {
        t.record_error(failing, Stage::Ingested, "poison", at(3 + n))
            .expect("error");
    }
    assert_eq!(t.batch(failing).expect("failing").stage, Stage::Failed);
    walk(t, ingested, &[Stage::Ingested], at(6));
    assert_eq!(oldest(), Some(10), "FAILED does not hold the log; INGESTED does");
    walk(t, ingested, &[Stage::Stored], at(7));
    assert_eq!(oldest(), Some(20), "STORED does not; SOURCE_COMMITTED does");
    walk(t, committed, &[Stage::Ingested, Stage::Stored], at(8));
    assert_eq!(oldest(), None);
    // A retry by hand: the batch is back in WAL_WRITTEN and holds its position again.
    walk(t, failing, &[Stage::WalWritten], at(9));
    assert_eq!(oldest(), Some(5));
    // A retry whose step carries a new envelope's position holds the log from there (found
    // by the differential test: the retry used to drop it).
    for n in 0..3 {
        t.record_error(failing, Stage::Ingested, "poison", at(10 + n))
            .expect("error");
    }
    assert_eq!(oldest(), None);
    t.advance(&[Advance::new(failing, Stage::WalWritten, at(14)).with_wal_position("node-a", 30)])
        .expect("retry");
    let position = t.batch(failing).expect("failing").wal_position.expect("position");
    assert_eq!((position.node.as_str(), position.lsn), ("node-a", 30));
    assert_eq!(oldest(), Some(30));
}

/// Source offsets stored with steps: per (source, topic, partition), the highest kept, in the
/// step's transaction (none when the step fails); an empty source name is `InvalidArgument`.
pub fn source_offsets(t: &impl Tracker) {
    let a = registered(t, "acme", at(0), 1);
    let b = registered(t, "acme", at(1), 1);
    walk(t, a, &[Stage::WalWritten], at(2));
    walk(t, b, &[Stage::WalWritten], at(2));
    t.advance(&[Advance::new(a, Stage::SourceCommitted, at(3)).with_offsets(vec![
        SourceOffset::new("ingest", "logs", 0, 100),
        SourceOffset::new("ingest", "logs", 1, 50),
        SourceOffset::new("other", "logs", 0, 7),
    ])])
    .expect("advance");
    // A replayed step with lower offsets never moves them back.
    t.advance(&[Advance::new(b, Stage::SourceCommitted, at(4)).with_offsets(vec![
        SourceOffset::new("ingest", "logs", 0, 90),
        SourceOffset::new("ingest", "logs", 1, 60),
    ])])
    .expect("advance");
    assert_eq!(
        t.source_offsets("ingest").expect("offsets"),
        [
            SourceOffset::new("ingest", "logs", 0, 100),
            SourceOffset::new("ingest", "logs", 1, 60)
        ]
    );
    assert_eq!(
        t.source_offsets("other").expect("offsets"),
        [SourceOffset::new("other", "logs", 0, 7)]
    );
    assert!(t.source_offsets("nobody").expect("offsets").is_empty());

    // Offsets are stored only with a step that is applied: a failing call stores none.
    let err = t
        .advance(&[
            Advance::new(a, Stage::Completed, at(5)).with_offsets(vec![SourceOffset::new("ingest", "logs", 0, 999)])
        ])
        .expect_err("skip");
    assert!(matches!(err, Error::InvalidTransition { .. }), "{err}");
    assert_eq!(t.source_offsets("ingest").expect("offsets")[0].offset, 100);
    let err = t
        .advance(&[Advance::new(a, Stage::Ingested, at(5)).with_offsets(vec![SourceOffset::new("", "logs", 0, 1)])])
        .expect_err("no source name");
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
}

/// A claim of `[from, to)` of partition `partition` of topic `logs` for the group `group`.
pub fn range(m: &BatchMeta, partition: i32, from: Option<i64>, to: i64, when: SystemTime) -> RangeClaim {
    RangeClaim::new(m.clone(), "group", "logs", partition, from, to, when)
}

fn group_offsets(t: &impl Tracker) -> Vec<(String, i32, i64)> {
    t.source_offsets("group")
        .expect("offsets")
        .into_iter()
        .map(|o| (o.topic, o.partition, o.offset))
        .collect()
}

fn unknown(t: &impl Tracker, id: BatchId) -> bool {
    matches!(t.batch(id), Err(Error::UnknownBatch { batch }) if batch == id)
}

use RangeOutcome::{AlreadyRegistered, Claimed, Conflict};

/// Chains of ranges, across calls and within one: each claim registers its batch at
/// `SOURCE_COMMITTED` (with its stage times and WAL position) and moves the offset on; the
/// claimed batches hold their WAL positions until they are `STORED`.
pub fn range_claims_chain(t: &impl Tracker) {
    let metas: Vec<BatchMeta> = (0..4).map(|i| meta("acme", at(i), 10 + i)).collect();
    let when = at(10) + Duration::from_nanos(999);
    let first = range(&metas[0], 0, None, 100, when).with_wal_position("node-a", 40);
    assert_eq!(t.claim_ranges(std::slice::from_ref(&first)).expect("claim"), [Claimed]);
    let rec = t.batch(metas[0].id).expect("claimed");
    let mut expected = metas[0].clone();
    expected.created_at = micros(expected.created_at);
    assert_eq!(rec.meta, expected);
    assert_eq!(rec.stage, Stage::SourceCommitted);
    assert_eq!(rec.completed_at.get(Stage::Created), Some(expected.created_at));
    assert_eq!(rec.completed_at.get(Stage::WalWritten), Some(micros(when)));
    assert_eq!(rec.completed_at.get(Stage::SourceCommitted), Some(micros(when)));
    assert_eq!(rec.completed_at.get(Stage::Ingested), None);
    assert_eq!(rec.wal_position, Some(WalPosition::new("node-a", 40)));
    assert_eq!((rec.retry_count, rec.lease.clone(), rec.failed_in), (0, None, None));
    assert_eq!(rec.updated_at, micros(when));
    assert_eq!(group_offsets(t), [("logs".to_owned(), 0, 100)]);
    assert_eq!(t.oldest_unstored_wal_position("node-a").expect("oldest"), Some(40));

    // Two more in one call: the second starts where the first ends.
    let outcomes = t
        .claim_ranges(&[
            range(&metas[1], 0, Some(100), 250, at(11)),
            range(&metas[2], 0, Some(250), 260, at(12)).with_wal_position("node-a", 30),
        ])
        .expect("claim");
    assert_eq!(outcomes, [Claimed, Claimed]);
    assert_eq!(group_offsets(t), [("logs".to_owned(), 0, 260)]);
    let rec = t.batch(metas[1].id).expect("claimed");
    assert_eq!((rec.stage, rec.wal_position), (Stage::SourceCommitted, None));
    assert_eq!(rec.completed_at.get(Stage::SourceCommitted), Some(at(11)));
    assert_eq!(t.oldest_unstored_wal_position("node-a").expect("oldest"), Some(30));
    assert_eq!(t.oldest_unstored_wal_position("node-b").expect("oldest"), None);
    assert_eq!(
        t.stage_counts(Window::new(at(0), at(100)), None)
            .expect("counts")
            .get(Stage::SourceCommitted),
        3
    );

    // A claimed batch goes on through its lifecycle as any other.
    let claimed = t
        .claim(&ClaimRequest::new(Stage::Ingested, "convert", 10).at(at(13)))
        .expect("claim work");
    assert_eq!(claimed.len(), 3);
    walk(t, metas[2].id, &[Stage::Ingested, Stage::Stored], at(14));
    assert_eq!(t.oldest_unstored_wal_position("node-a").expect("oldest"), Some(40));
    walk(t, metas[0].id, &[Stage::Ingested, Stage::Stored], at(14));
    assert_eq!(t.oldest_unstored_wal_position("node-a").expect("oldest"), None);

    // And the chain goes on in a later call.
    assert_eq!(
        t.claim_ranges(&[range(&metas[3], 0, Some(260), 261, at(15))])
            .expect("claim"),
        [Claimed]
    );
    assert_eq!(group_offsets(t), [("logs".to_owned(), 0, 261)]);
}

/// A claim whose `from` is not the stored offset (behind it, ahead of it, `None` when one is
/// stored, a value when none is) is a conflict and writes nothing; within one call, a chain
/// whose first claim conflicts conflicts throughout.
pub fn range_claims_conflict(t: &impl Tracker) {
    let first = meta("acme", at(0), 1);
    assert_eq!(
        t.claim_ranges(&[range(&first, 0, None, 100, at(1))]).expect("claim"),
        [Claimed]
    );
    for (from, to) in [
        (Some(50), 150),
        (Some(0), 100),
        (Some(150), 200),
        (Some(99), 100),
        (None, 100),
        (None, 150),
    ] {
        let m = meta("acme", at(1), 1);
        let claim = range(&m, 0, from, to, at(2)).with_wal_position("node-a", 1);
        assert_eq!(
            t.claim_ranges(&[claim]).expect("claim"),
            [Conflict { stored: Some(100) }],
            "{from:?}..{to}"
        );
        assert!(unknown(t, m.id), "{from:?}..{to}: not registered");
        assert_eq!(group_offsets(t), [("logs".to_owned(), 0, 100)]);
    }
    assert_eq!(t.oldest_unstored_wal_position("node-a").expect("oldest"), None);

    // Nothing stored for partition 1: only `from: None` claims it.
    let m = meta("acme", at(1), 1);
    assert_eq!(
        t.claim_ranges(&[range(&m, 1, Some(0), 10, at(2))]).expect("claim"),
        [Conflict { stored: None }]
    );
    assert!(unknown(t, m.id));
    assert_eq!(group_offsets(t), [("logs".to_owned(), 0, 100)]);

    // In one call: the first conflicts, so the second, chained from it, does too; a third
    // from the stored offset is claimed.
    let (x, y, z) = (meta("acme", at(1), 1), meta("acme", at(1), 1), meta("acme", at(1), 1));
    let outcomes = t
        .claim_ranges(&[
            range(&x, 0, Some(90), 120, at(3)),
            range(&y, 0, Some(120), 130, at(3)),
            range(&z, 0, Some(100), 110, at(3)),
            range(&m, 1, None, 10, at(3)),
        ])
        .expect("claim");
    assert_eq!(
        outcomes,
        [
            Conflict { stored: Some(100) },
            Conflict { stored: Some(100) },
            Claimed,
            Claimed
        ]
    );
    assert!(unknown(t, x.id) && unknown(t, y.id));
    assert_eq!(t.batch(z.id).expect("z").stage, Stage::SourceCommitted);
    assert_eq!(
        group_offsets(t),
        [("logs".to_owned(), 0, 110), ("logs".to_owned(), 1, 10)]
    );
    // The conflicting claims of a call are no error: the claimed ones of the call stand.
    assert_eq!(t.batch(m.id).expect("m").stage, Stage::SourceCommitted);

    // Each claim is judged by itself: after a conflict, a claim of the chain that starts at the
    // stored offset (another reader claimed up to exactly there) is claimed.
    let (u, v) = (meta("acme", at(1), 1), meta("acme", at(1), 1));
    let outcomes = t
        .claim_ranges(&[range(&u, 0, Some(105), 110, at(4)), range(&v, 0, Some(110), 115, at(4))])
        .expect("claim");
    assert_eq!(outcomes, [Conflict { stored: Some(110) }, Claimed]);
    assert!(unknown(t, u.id));
    assert_eq!(
        group_offsets(t),
        [("logs".to_owned(), 0, 115), ("logs".to_owned(), 1, 10)]
    );
}

/// A claim whose batch is registered already (a replay after a crash) changes nothing, the
/// offset neither, whatever its range, and reports where the batch is.
pub fn range_claims_replayed(t: &impl Tracker) {
    let a = meta("acme", at(0), 1);
    let first = range(&a, 0, None, 100, at(1)).with_wal_position("node-a", 5);
    assert_eq!(t.claim_ranges(std::slice::from_ref(&first)).expect("claim"), [Claimed]);
    let before = t.batch(a.id).expect("a");
    let replay = RangeClaim {
        at: at(9),
        ..first.clone()
    };
    assert_eq!(
        t.claim_ranges(std::slice::from_ref(&replay)).expect("replay"),
        [AlreadyRegistered {
            stage: Stage::SourceCommitted
        }]
    );
    assert_eq!(t.batch(a.id).expect("a"), before);
    assert_eq!(group_offsets(t), [("logs".to_owned(), 0, 100)]);

    // The batch moved on since; a replay with another range (from the stored offset, which
    // would be free) changes nothing either.
    walk(t, a.id, &[Stage::Ingested], at(2));
    let before = t.batch(a.id).expect("a");
    let moved = range(&a, 0, Some(100), 200, at(3));
    assert_eq!(
        t.claim_ranges(&[moved]).expect("replay"),
        [AlreadyRegistered { stage: Stage::Ingested }]
    );
    assert_eq!(t.batch(a.id).expect("a"), before);
    assert_eq!(group_offsets(t), [("logs".to_owned(), 0, 100)]);

    // A batch registered by `register` is registered too.
    let b = meta("acme", at(0), 1);
    t.register_one(&b).expect("register");
    assert_eq!(
        t.claim_ranges(&[range(&b, 0, Some(100), 200, at(3))]).expect("claim"),
        [AlreadyRegistered { stage: Stage::Created }]
    );
    assert_eq!(t.batch(b.id).expect("b").stage, Stage::Created);
    assert_eq!(group_offsets(t), [("logs".to_owned(), 0, 100)]);

    // A replay beside new claims in one call.
    let c = meta("acme", at(0), 1);
    let outcomes = t
        .claim_ranges(&[first, range(&c, 0, Some(100), 200, at(4))])
        .expect("claim");
    assert_eq!(outcomes, [AlreadyRegistered { stage: Stage::Ingested }, Claimed]);
    assert_eq!(group_offsets(t), [("logs".to_owned(), 0, 200)]);
}

/// Each invalid claim fails the whole call before anything is written.
pub fn invalid_range_claims_write_nothing(t: &impl Tracker) {
    let a = meta("acme", at(0), 1);
    assert_eq!(
        t.claim_ranges(&[range(&a, 0, None, 100, at(1))]).expect("claim"),
        [Claimed]
    );
    assert_eq!(t.claim_ranges(&[]).expect("an empty call"), []);
    let good = range(&meta("acme", at(0), 1), 0, Some(100), 200, at(2));
    let mut huge = meta("acme", at(0), 1);
    huge.message_count = u64::MAX;
    let invalid: Vec<(&str, RangeClaim)> = vec![
        (
            "empty source",
            RangeClaim {
                source: String::new(),
                ..good.clone()
            },
        ),
        (
            "empty topic",
            RangeClaim {
                topic: String::new(),
                ..good.clone()
            },
        ),
        (
            "negative partition",
            RangeClaim {
                partition: -1,
                from: None,
                ..good.clone()
            },
        ),
        (
            "negative to",
            RangeClaim {
                partition: 5,
                from: None,
                to: -1,
                ..good.clone()
            },
        ),
        (
            "negative from",
            RangeClaim {
                from: Some(-10),
                to: 5,
                ..good.clone()
            },
        ),
        (
            "empty range",
            RangeClaim {
                to: 100,
                ..good.clone()
            },
        ),
        ("reversed range", RangeClaim { to: 50, ..good.clone() }),
        ("count beyond i64", range(&huge, 0, Some(100), 200, at(2))),
        ("LSN beyond i64", good.clone().with_wal_position("node-a", u64::MAX)),
        ("WAL position without its node", good.clone().with_wal_position("", 1)),
    ];
    // Each goes after a valid claim of another partition: that one is not written either.
    let other = meta("acme", at(0), 1);
    for (what, bad) in invalid {
        let err = t
            .claim_ranges(&[range(&other, 7, None, 10, at(2)), bad.clone()])
            .expect_err(what);
        assert!(matches!(err, Error::InvalidArgument { .. }), "{what}: {err}");
        assert!(unknown(t, other.id) && unknown(t, bad.meta.id), "{what}");
        assert_eq!(group_offsets(t), [("logs".to_owned(), 0, 100)], "{what}");
    }
    // The same batch twice in one call, even in claims that could both be claimed.
    let twice = meta("acme", at(0), 1);
    let err = t
        .claim_ranges(&[
            range(&twice, 0, Some(100), 200, at(2)),
            range(&twice, 1, None, 5, at(2)),
        ])
        .expect_err("the same batch twice");
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    assert!(unknown(t, twice.id));
    assert_eq!(group_offsets(t), [("logs".to_owned(), 0, 100)]);
    // Nothing moved: the valid claim is free.
    assert_eq!(t.claim_ranges(&[good]).expect("claim"), [Claimed]);
}

/// The stored offsets are per (source, topic, partition): claims of different readers, topics
/// and partitions never conflict. Offsets stored by `Advance::with_offsets` are where claims
/// continue from.
pub fn range_claim_keys_are_independent(t: &impl Tracker) {
    let claim = |source: &str, topic: &str, partition: i32, from: Option<i64>, to: i64| {
        RangeClaim::new(meta("acme", at(0), 1), source, topic, partition, from, to, at(1))
    };
    let outcomes = t
        .claim_ranges(&[
            claim("group", "logs", 0, None, 100),
            claim("group", "logs", 1, None, 7),
            claim("group", "metrics", 0, None, 5),
            claim("other", "logs", 0, None, 3),
        ])
        .expect("claim");
    assert_eq!(outcomes, [Claimed, Claimed, Claimed, Claimed]);
    let outcomes = t
        .claim_ranges(&[
            claim("other", "logs", 0, Some(3), 9),
            claim("group", "logs", 1, Some(100), 200),
            claim("group", "metrics", 0, Some(5), 6),
        ])
        .expect("claim");
    assert_eq!(outcomes, [Claimed, Conflict { stored: Some(7) }, Claimed]);
    assert_eq!(
        t.source_offsets("group").expect("offsets"),
        [
            SourceOffset::new("group", "logs", 0, 100),
            SourceOffset::new("group", "logs", 1, 7),
            SourceOffset::new("group", "metrics", 0, 6),
        ]
    );
    assert_eq!(
        t.source_offsets("other").expect("offsets"),
        [SourceOffset::new("other", "logs", 0, 9)]
    );

    // An offset stored with a step is the one a claim must start from.
    let stepped = registered(t, "acme", at(0), 1);
    walk(t, stepped, &[Stage::WalWritten], at(1));
    t.advance(&[Advance::new(stepped, Stage::SourceCommitted, at(1))
        .with_offsets(vec![SourceOffset::new("third", "logs", 0, 40)])])
        .expect("advance");
    let outcomes = t
        .claim_ranges(&[
            claim("third", "logs", 0, None, 10),
            claim("third", "logs", 0, Some(40), 50),
        ])
        .expect("claim");
    assert_eq!(outcomes, [Conflict { stored: Some(40) }, Claimed]);
    assert_eq!(
        t.source_offsets("third").expect("offsets"),
        [SourceOffset::new("third", "logs", 0, 50)]
    );
}

/// `AsyncTracker::claim_ranges` is the same call.
pub fn async_range_claims(t: &impl AsyncTracker) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (a, b) = (meta("acme", at(0), 1), meta("acme", at(0), 1));
        let claims = [
            range(&a, 0, None, 10, at(1)).with_wal_position("node-a", 3),
            range(&b, 0, None, 20, at(1)),
        ];
        let outcomes = AsyncTracker::claim_ranges(t, &claims).await.expect("claim");
        assert_eq!(outcomes, [Claimed, Conflict { stored: Some(10) }]);
        let rec = AsyncTracker::batch(t, a.id).await.expect("a");
        assert_eq!(
            (rec.stage, rec.wal_position),
            (Stage::SourceCommitted, Some(WalPosition::new("node-a", 3)))
        );
        assert!(matches!(
            AsyncTracker::batch(t, b.id).await,
            Err(Error::UnknownBatch { .. })
        ));
        let replay = AsyncTracker::claim_ranges(t, &claims[..1]).await.expect("replay");
        assert_eq!(
            replay,
            [AlreadyRegistered {
                stage: Stage::SourceCommitted
            }]
        );
        assert_eq!(AsyncTracker::claim_ranges(t, &[]).await.expect("empty"), []);
        let err = AsyncTracker::claim_ranges(t, &[range(&b, 0, Some(10), 10, at(2))])
            .await
            .expect_err("empty range");
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
        assert_eq!(
            AsyncTracker::source_offsets(t, "group").await.expect("offsets"),
            [SourceOffset::new("group", "logs", 0, 10)]
        );
    });
}

/// A batch's source partition (`BatchMeta::partition`, schema version 5 in the SQL backends)
/// is kept: registered or claimed (`claim_ranges`) with one, a batch reads back with it from
/// every read of its record (`batch`, `claim`, `stuck`, `failed`), through later steps and
/// errors; registered without one, with none. Partition 0 is a partition, not none.
pub fn partitions_read_back(t: &impl Tracker) {
    let kafka = |created, partition| {
        let mut m = meta("acme", created, 5);
        m.source = SourceKind::Kafka;
        m.topics = vec!["logs.acme".into()];
        m.first_offset = Some(100);
        m.last_offset = Some(104);
        m.partition = partition;
        m
    };
    let registered = kafka(at(0), Some(3));
    let zero = kafka(at(1), Some(0));
    let plain = meta("acme", at(2), 1);
    let claimed = kafka(at(3), Some(3));
    assert_eq!(
        t.register(&[registered.clone(), zero.clone(), plain.clone()])
            .expect("register"),
        [Registration::Registered; 3]
    );
    assert_eq!(
        t.claim_ranges(&[range(&claimed, 3, None, 105, at(4))]).expect("claim"),
        [Claimed]
    );
    for m in [&registered, &zero, &plain, &claimed] {
        let mut expected = m.clone();
        expected.created_at = micros(m.created_at);
        assert_eq!(t.batch(m.id).expect("batch").meta, expected);
    }
    let partition = |id| t.batch(id).expect("batch").meta.partition;
    assert_eq!(
        (
            partition(registered.id),
            partition(zero.id),
            partition(plain.id),
            partition(claimed.id)
        ),
        (Some(3), Some(0), None, Some(3))
    );

    // Every other read of a record has it too, and steps and errors leave it as it is.
    let partitions = |records: Vec<BatchRecord>| -> Vec<(BatchId, Option<i32>)> {
        records.into_iter().map(|r| (r.meta.id, r.meta.partition)).collect()
    };
    walk(t, registered.id, &[Stage::WalWritten], at(5));
    walk(t, plain.id, &[Stage::WalWritten], at(5));
    assert_eq!(
        partitions(
            t.claim(&ClaimRequest::new(Stage::Ingested, "w", 10).at(at(6)))
                .expect("claim work")
        ),
        [(registered.id, Some(3)), (plain.id, None), (claimed.id, Some(3))]
    );
    for n in 1..=3 {
        t.record_error(registered.id, Stage::Ingested, "boom", at(6 + n))
            .expect("error");
    }
    assert_eq!(
        partitions(failed_page(t, 10, None).expect("failed")),
        [(registered.id, Some(3))]
    );
    walk(t, claimed.id, &[Stage::Ingested], at(10));
    assert_eq!(
        partitions(stuck_page(t, at(100), 10, None).expect("stuck")),
        [(zero.id, Some(0)), (plain.id, None), (claimed.id, Some(3))]
    );
}

/// Retention deletes the records of batches `COMPLETED` before the bound, and only those.
pub fn purge_completed(t: &impl Tracker) {
    let all = [
        Stage::WalWritten,
        Stage::Ingested,
        Stage::Stored,
        Stage::Indexed,
        Stage::Completed,
    ];
    let early = registered(t, "acme", at(0), 1);
    let late = registered(t, "acme", at(0), 1);
    let open = registered(t, "acme", at(0), 1);
    walk(t, early, &all, at(10));
    walk(t, late, &all, at(20));
    walk(t, open, &all[..2], at(5));
    assert_eq!(t.purge_completed(at(10)).expect("purge"), 0, "strictly before");
    assert_eq!(t.purge_completed(at(15)).expect("purge"), 1);
    assert!(matches!(t.batch(early), Err(Error::UnknownBatch { .. })));
    assert_eq!(t.batch(late).expect("late").stage, Stage::Completed);
    assert_eq!(t.purge_completed(at(1_000)).expect("purge"), 1);
    assert_eq!(t.batch(open).expect("open").stage, Stage::Ingested);
}

fn tenant(name: &str) -> Tenant {
    Tenant::try_new(name).expect("tenant")
}

/// `tenant`'s `key`, taken at `when` plus a sub-microsecond remainder (backends keep
/// microseconds).
fn idem(tenant_name: &str, key: &str, receipt: &[u8], when: SystemTime) -> RememberedKey {
    RememberedKey::new(
        tenant(tenant_name),
        key,
        BatchId::new(),
        receipt,
        when + Duration::from_nanos(1_500),
    )
}

/// What a backend gives back for `key`: the same, its time truncated to the microsecond.
fn as_recalled(key: &RememberedKey) -> RememberedKey {
    let mut key = key.clone();
    key.at = micros(key.at);
    key
}

/// Keys come back as remembered: batch, receipt bytes (empty, binary, the largest) and time
/// to the microsecond; an unknown key is `None`; an empty call does nothing.
pub fn idempotency_keys_remembered_and_recalled(t: &impl Tracker) {
    let binary: Vec<u8> = (0..=255u8).cycle().take(1_000).collect();
    let largest = vec![0xa5; RememberedKey::MAX_RECEIPT_LEN];
    let longest_key = "~".repeat(RememberedKey::MAX_KEY_LEN);
    let keys = [
        idem("acme", "order-7f3a", br#"{"accepted":3}"#, at(1)),
        idem("acme", "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", &[], at(2)),
        idem("acme", "binary", &binary, at(3)),
        idem("acme", &longest_key, &largest, at(4)),
    ];
    t.remember_keys(&keys).expect("remember");
    for key in &keys {
        let recalled = t.recall_key(&key.tenant, &key.key).expect("recall");
        assert_eq!(recalled.as_ref(), Some(&as_recalled(key)), "{}", key.key);
    }
    assert_eq!(t.recall_key(&tenant("acme"), "order-0000").expect("recall"), None);
    assert_eq!(
        t.recall_key(&tenant("acme"), "ORDER-7F3A").expect("recall"),
        None,
        "keys are exact"
    );
    // A key no call could remember is simply not there (not an error, whatever its bytes).
    let too_long = "k".repeat(RememberedKey::MAX_KEY_LEN + 1);
    for never in ["", "nul\0", "two words", "caf\u{e9}", &too_long] {
        assert_eq!(t.recall_key(&tenant("acme"), never).expect("recall"), None, "{never:?}");
    }
    t.remember_keys(&[]).expect("an empty call");
    assert_eq!(t.forget_keys_before(at(1_000)).expect("forget"), 4);
}

/// The first key remembered for a (tenant, key) wins: a second call with another batch,
/// receipt and time leaves it as it is, without an error, and remembers the call's new keys;
/// within one call the first of a key wins too.
pub fn idempotency_first_remembered_wins(t: &impl Tracker) {
    let first = idem("acme", "k1", b"first", at(1));
    t.remember_keys(std::slice::from_ref(&first)).expect("remember");
    let again = idem("acme", "k1", b"second", at(2));
    let new = idem("acme", "k2", b"new", at(2));
    t.remember_keys(&[again.clone(), new.clone()])
        .expect("again is not an error");
    t.remember_keys(std::slice::from_ref(&again)).expect("and again");
    assert_eq!(
        t.recall_key(&tenant("acme"), "k1").expect("recall"),
        Some(as_recalled(&first))
    );
    assert_eq!(
        t.recall_key(&tenant("acme"), "k2").expect("recall"),
        Some(as_recalled(&new))
    );

    let (a, b) = (idem("acme", "k3", b"a", at(3)), idem("acme", "k3", b"b", at(4)));
    t.remember_keys(&[a.clone(), b])
        .expect("the same key twice in one call");
    assert_eq!(
        t.recall_key(&tenant("acme"), "k3").expect("recall"),
        Some(as_recalled(&a))
    );

    // The first stays even after its batch's record is purged (keys go by time only).
    let id = registered(t, "acme", at(0), 1);
    let mut held = idem("acme", "k4", b"held", at(5));
    held.batch = id;
    t.remember_keys(std::slice::from_ref(&held)).expect("remember");
    walk(
        t,
        id,
        &[
            Stage::WalWritten,
            Stage::Ingested,
            Stage::Stored,
            Stage::Indexed,
            Stage::Completed,
        ],
        at(6),
    );
    assert_eq!(t.purge_completed(at(1_000)).expect("purge"), 1);
    assert!(matches!(t.batch(id), Err(Error::UnknownBatch { .. })));
    assert_eq!(
        t.recall_key(&tenant("acme"), "k4").expect("recall"),
        Some(as_recalled(&held))
    );
    let mut replay = idem("acme", "k4", b"replayed", at(7));
    replay.batch = BatchId::new();
    t.remember_keys(&[replay]).expect("replay");
    assert_eq!(
        t.recall_key(&tenant("acme"), "k4").expect("recall"),
        Some(as_recalled(&held))
    );
}

/// Keys are per tenant: the same key of two tenants is two keys, each recalled as its own.
pub fn idempotency_keys_are_per_tenant(t: &impl Tracker) {
    let acme = idem("acme", "order-1", b"acme's", at(1));
    t.remember_keys(std::slice::from_ref(&acme)).expect("remember");
    assert_eq!(t.recall_key(&tenant("umbrella"), "order-1").expect("recall"), None);
    let umbrella = idem("umbrella", "order-1", b"umbrella's", at(2));
    t.remember_keys(std::slice::from_ref(&umbrella))
        .expect("another tenant's is not a conflict");
    assert_eq!(
        t.recall_key(&tenant("acme"), "order-1").expect("recall"),
        Some(as_recalled(&acme))
    );
    assert_eq!(
        t.recall_key(&tenant("umbrella"), "order-1").expect("recall"),
        Some(as_recalled(&umbrella))
    );
    assert_eq!(t.recall_key(&tenant("initech"), "order-1").expect("recall"), None);
}

/// `forget_keys_before` forgets exactly the keys taken strictly before its bound (to the
/// microsecond), of every tenant, and says how many; `purge_completed` leaves keys alone.
pub fn idempotency_keys_forgotten_by_time_only(t: &impl Tracker) {
    let keys = [
        idem("acme", "old-1", b"1", at(10)),
        idem("umbrella", "old-2", b"2", at(20)),
        idem("acme", "edge", b"3", at(30)),
        idem("acme", "new-1", b"4", at(40)),
        idem("umbrella", "new-2", b"5", at(50)),
    ];
    t.remember_keys(&keys).expect("remember");
    assert_eq!(t.forget_keys_before(at(10)).expect("forget"), 0, "strictly before");
    assert_eq!(t.purge_completed(at(1_000)).expect("purge"), 0);
    assert_eq!(t.forget_keys_before(at(25)).expect("forget"), 2);
    // `edge` was taken 1.5 µs past 30 s and is kept as 1 µs past: a bound in that microsecond,
    // however many nanoseconds into it, keeps it; the next microsecond forgets it.
    let edge = micros(keys[2].at);
    assert_eq!(
        t.forget_keys_before(edge + Duration::from_nanos(999)).expect("forget"),
        0
    );
    assert_eq!(
        t.forget_keys_before(edge + Duration::from_micros(1)).expect("forget"),
        1
    );
    let remembered: Vec<bool> = keys
        .iter()
        .map(|k| t.recall_key(&k.tenant, &k.key).expect("recall").is_some())
        .collect();
    assert_eq!(remembered, [false, false, false, true, true]);
    assert_eq!(
        t.forget_keys_before(at(30)).expect("forget"),
        0,
        "nothing left that old"
    );

    // A forgotten key may be remembered again, with a new batch and receipt.
    let reused = idem("acme", "old-1", b"reused", at(60));
    t.remember_keys(std::slice::from_ref(&reused)).expect("remember");
    assert_eq!(
        t.recall_key(&tenant("acme"), "old-1").expect("recall"),
        Some(as_recalled(&reused))
    );
    assert_eq!(t.forget_keys_before(at(1_000)).expect("forget"), 3);
    assert_eq!(t.forget_keys_before(at(1_000)).expect("forget"), 0);
}

/// An invalid key (empty, too long, not visible ASCII) or an oversized receipt fails the
/// whole call with `InvalidIdempotencyKey`, naming the key and its tenant: none of the call's
/// keys is remembered.
pub fn invalid_idempotency_keys_remember_nothing(t: &impl Tracker) {
    let too_long = "k".repeat(RememberedKey::MAX_KEY_LEN + 1);
    let too_large = vec![0; RememberedKey::MAX_RECEIPT_LEN + 1];
    let cases: [(&str, &[u8], &str); 7] = [
        ("", b"r", "not empty"),
        (&too_long, b"r", "at most 255 bytes"),
        ("two words", b"r", "visible ASCII"),
        ("tab\tkey", b"r", "visible ASCII"),
        ("caf\u{e9}", b"r", "visible ASCII"),
        ("nul\0", b"r", "visible ASCII"),
        ("fine-key", &too_large, "a receipt has at most 65536 bytes"),
    ];
    for (n, (bad, receipt, why)) in cases.into_iter().enumerate() {
        let before = format!("before-{n}");
        let after = format!("after-{n}");
        let call = [
            idem("acme", &before, b"ok", at(1)),
            idem("umbrella", bad, receipt, at(1)),
            idem("acme", &after, b"ok", at(1)),
        ];
        let err = t.remember_keys(&call).expect_err(bad);
        let Error::InvalidIdempotencyKey {
            tenant: who,
            key,
            reason,
        } = &err
        else {
            panic!("{bad:?}: {err:?}")
        };
        assert_eq!(who, "umbrella");
        assert_eq!(key, &bad.chars().take(64).collect::<String>());
        assert!(reason.contains(why), "{bad:?}: {reason}");
        assert!(err.to_string().contains("umbrella"), "{err}");
        for k in &call {
            assert_eq!(
                t.recall_key(&k.tenant, &k.key).expect("recall"),
                None,
                "{bad:?}: {}",
                k.key
            );
        }
    }
    assert_eq!(
        t.forget_keys_before(at(1_000)).expect("forget"),
        0,
        "nothing was written"
    );
}

fn stored_file(path: &str, ids: &[BatchId]) -> StoredFile {
    StoredFile {
        path: path.to_owned(),
        tenant: Tenant::try_new("acme").expect("tenant"),
        signal: Signal::Logs,
        time_range: TimeRange::new(0, 1_000),
        rows: 10,
        bytes: 1_000,
        batch_ids: ids.to_vec(),
        index: None,
    }
}

fn file_index(path: &str) -> FileIndex {
    FileIndex {
        path: path.to_owned(),
        bytes: 300,
        docs: 10,
        checksum: 0x0bad_cafe,
    }
}

/// Publishing a file marks its `INGESTED` batches `STORED` in the same transaction; a file of
/// an unknown batch or of one not yet `INGESTED` is refused and marks nothing; publishing it
/// again (after a crash) is fine, even once its batches moved on.
pub fn publish_marks_stored(t: &(impl Tracker + FileCatalog)) {
    let a = registered(t, "acme", at(0), 1);
    let b = registered(t, "acme", at(0), 1);
    walk(t, a, TO_INGESTED, at(1));
    walk(t, b, &[Stage::WalWritten], at(1));

    // b has not been converted yet: the file is refused, and a is not marked either.
    let err = t
        .publish(&[stored_file("acme/logs/f1.parquet", &[a, b])])
        .expect_err("b is not ingested");
    let wit_store::Error::Catalog { source } = &err else {
        panic!("{err}")
    };
    assert!(
        matches!(source.downcast_ref::<Error>(), Some(Error::InvalidTransition { batch, .. }) if *batch == b),
        "{source}"
    );
    assert_eq!(t.batch(a).expect("a").stage, Stage::Ingested);
    assert!(
        t.list(&Tenant::try_new("acme").expect("t"), Signal::Logs, None)
            .expect("list")
            .is_empty()
    );

    let ghost = BatchId::new();
    let err = t
        .publish(&[stored_file("acme/logs/f1.parquet", &[a, ghost])])
        .expect_err("unknown batch");
    let wit_store::Error::Catalog { source } = &err else {
        panic!("{err}")
    };
    assert!(
        matches!(source.downcast_ref::<Error>(), Some(Error::UnknownBatch { batch }) if *batch == ghost),
        "{source}"
    );

    walk(t, b, &[Stage::Ingested], at(2));
    let before = SystemTime::now() - Duration::from_secs(1);
    t.publish(&[stored_file("acme/logs/f1.parquet", &[a, b])])
        .expect("publish");
    for id in [a, b] {
        let rec = t.batch(id).expect("batch");
        assert_eq!(rec.stage, Stage::Stored);
        assert!(rec.completed_at.get(Stage::Stored).is_some_and(|s| s >= before));
    }
    // A repeated publish (after a crash) is fine even once the batches moved on.
    walk(t, a, &[Stage::Indexed], at(3));
    t.publish(&[stored_file("acme/logs/f1.parquet", &[b, a])])
        .expect("republish");
    assert_eq!(t.batch(a).expect("a").stage, Stage::Indexed);
}

/// Recording a file's index marks its batches at `STORED` `INDEXED` in the same transaction,
/// leaving `COMPLETED` and `FAILED` ones (and batches purged since) alone; a refused
/// `record_index` marks nothing. Publishing or swapping in a file with its index does the same.
pub fn record_index_marks_indexed(t: &(impl Tracker + FileCatalog)) {
    let [stored, completed, failed, purged] = [(); 4].map(|()| registered(t, "acme", at(0), 1));
    for id in [stored, completed, failed, purged] {
        walk(t, id, TO_INGESTED, at(1));
    }
    let f1 = stored_file("acme/logs/f1.parquet", &[stored, completed, failed, purged]);
    t.publish(std::slice::from_ref(&f1)).expect("publish");
    walk(t, purged, &[Stage::Completed], at(2));
    assert_eq!(t.purge_completed(at(3)).expect("purge"), 1);
    walk(t, completed, &[Stage::Completed], at(4));
    for _ in 0..10 {
        if t.batch(failed).expect("batch").stage == Stage::Failed {
            break;
        }
        t.record_error(failed, Stage::Indexed, "indexer down", at(3))
            .expect("record_error");
    }
    assert_eq!(t.batch(failed).expect("failed").stage, Stage::Failed);

    // A refused index (the wrong document count) marks nothing.
    let wrong = FileIndex {
        docs: 9,
        ..file_index("acme/logs/f1.index")
    };
    let err = t.record_index(&f1.path, &wrong).expect_err("docs mismatch");
    assert!(matches!(err, wit_store::Error::InvalidFile { .. }), "{err}");
    assert_eq!(t.batch(stored).expect("stored").stage, Stage::Stored);

    let before = SystemTime::now() - Duration::from_secs(1);
    t.record_index(&f1.path, &file_index("acme/logs/f1.index"))
        .expect("record_index");
    let rec = t.batch(stored).expect("stored");
    assert_eq!(rec.stage, Stage::Indexed);
    assert!(rec.completed_at.get(Stage::Indexed).is_some_and(|s| s >= before));
    assert_eq!(
        t.batch(failed).expect("failed").stage,
        Stage::Failed,
        "FAILED is left alone"
    );
    assert!(matches!(t.batch(purged), Err(Error::UnknownBatch { .. })));
    t.record_index(&f1.path, &file_index("acme/logs/f1.index"))
        .expect("the same index again");
    assert_eq!(t.batch(stored).expect("stored").stage, Stage::Indexed);

    assert_eq!(
        t.batch(completed).expect("completed").stage,
        Stage::Completed,
        "COMPLETED is left alone"
    );

    // Published with its index: INGESTED -> STORED -> INDEXED in one call.
    let fresh = registered(t, "acme", at(0), 1);
    walk(t, fresh, TO_INGESTED, at(1));
    let mut f3 = stored_file("acme/logs/f3.parquet", &[fresh]);
    f3.index = Some(file_index("acme/logs/f3.index"));
    t.publish(std::slice::from_ref(&f3)).expect("publish");
    let rec = t.batch(fresh).expect("fresh");
    assert_eq!(rec.stage, Stage::Indexed);
    assert!(rec.completed_at.get(Stage::Stored).is_some());

    // Compaction with an index: the merged file's STORED batches become INDEXED, in the
    // replace's transaction, and the rest stay as they are.
    let [x, y] = [(); 2].map(|()| registered(t, "acme", at(0), 1));
    for id in [x, y] {
        walk(t, id, TO_INGESTED, at(1));
    }
    t.publish(&[
        stored_file("acme/logs/x.parquet", &[x]),
        stored_file("acme/logs/y.parquet", &[y]),
    ])
    .expect("publish");
    walk(t, y, &[Stage::Completed], at(5));
    let mut xy = stored_file("acme/logs/xy.parquet", &[x, y]);
    xy.index = Some(file_index("acme/logs/xy.index"));
    t.replace(
        &["acme/logs/x.parquet".into(), "acme/logs/y.parquet".into()],
        std::slice::from_ref(&xy),
        at(600),
    )
    .expect("replace");
    assert_eq!(t.batch(x).expect("x").stage, Stage::Indexed);
    assert_eq!(t.batch(y).expect("y").stage, Stage::Completed);
    let listed = t
        .list(&Tenant::try_new("acme").expect("tenant"), Signal::Logs, None)
        .expect("list");
    assert_eq!(
        listed.iter().find(|f| f.path == xy.path).and_then(|f| f.index.clone()),
        xy.index
    );
}

/// Walks a listing page by page (`limit` to a page) and returns every page's batch ids,
/// checking that each page but the last is full and has a cursor, and the last has none.
pub fn walk_pages(t: &impl Tracker, query: &BatchQuery, limit: usize) -> Vec<Vec<BatchId>> {
    let mut pages = Vec::new();
    let mut query = query.clone().with_limit(limit).after(None);
    loop {
        let page: BatchPage = t.list_batches(&query).expect("list_batches");
        assert!(page.batches.len() <= limit, "a page holds at most its limit");
        let ids: Vec<BatchId> = page.batches.iter().map(|r| r.meta.id).collect();
        match page.next {
            Some(cursor) => {
                assert_eq!(ids.len(), limit, "a page with a next cursor is full");
                let last = page.batches.last().expect("a page with a cursor has batches");
                assert_eq!(cursor, Cursor::of(last), "the cursor is the last batch's position");
                pages.push(ids);
                query = query.after(cursor);
            }
            None => {
                pages.push(ids);
                return pages;
            }
        }
    }
}

/// A walk over the pages of a listing, whatever their size, lists every selected batch once,
/// oldest first, ties of creation time in id order, as one page holding them all does; the
/// last page says there is no next; a limit of 0 is `InvalidArgument`.
pub fn list_batches_pages_walk_every_batch_once(t: &impl Tracker) {
    // Seven unfinished batches, three created at the same microsecond, registered out of order.
    let created = [at(5), at(1), at(3), at(3), at(3), at(2), at(9)];
    let mut expected: Vec<(SystemTime, BatchId)> = created
        .iter()
        .map(|when| {
            let m = meta("acme", *when, 1);
            t.register_one(&m).expect("register");
            (micros(m.created_at), m.id)
        })
        .collect();
    expected.sort();
    let expected: Vec<BatchId> = expected.into_iter().map(|(_, id)| id).collect();
    let done = registered(t, "acme", at(0), 1);
    walk(
        t,
        done,
        &[Stage::WalWritten, Stage::Ingested, Stage::Stored, Stage::Completed],
        at(10),
    );

    let query = BatchQuery::stuck(at(100));
    let whole = t.list_batches(&query).expect("one page");
    assert_eq!(whole.batches.iter().map(|r| r.meta.id).collect::<Vec<_>>(), expected);
    assert_eq!(whole.next, None, "everything fits the default limit");
    for limit in [1, 2, 3, 6, 7, 8] {
        let pages = walk_pages(t, &query, limit);
        assert_eq!(pages.concat(), expected, "pages of {limit}");
        assert_eq!(pages.len(), expected.len().div_ceil(limit), "pages of {limit}");
    }
    // A page after the last batch is empty and ends the listing.
    let last = t.batch(*expected.last().expect("batches")).expect("last");
    let after_last = t
        .list_batches(&query.clone().after(Cursor::of(&last)))
        .expect("after the last");
    assert_eq!((after_last.batches.len(), after_last.next), (0, None));

    let err = t.list_batches(&query.clone().with_limit(0)).expect_err("limit 0");
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
}

/// Pages are keyset pages: a batch registered during a walk with a creation time behind the
/// walk's position is not listed by the rest of the walk, one ahead of it is, and no batch is
/// skipped or listed twice; a cursor still works once its batch has left the selection.
pub fn list_batches_pages_stay_put_while_batches_are_added(t: &impl Tracker) {
    let first: Vec<BatchId> = (0..4).map(|i| registered(t, "acme", at(10 + i), 1)).collect();
    let query = BatchQuery::stuck(at(1_000)).with_limit(2);
    let page = t.list_batches(&query).expect("first page");
    assert_eq!(page.batches.iter().map(|r| r.meta.id).collect::<Vec<_>>(), first[..2]);
    let cursor = page.next.expect("more");

    // Registered behind the cursor (older), and ahead of it (the newest).
    let behind = registered(t, "acme", at(0), 1);
    let ahead = registered(t, "acme", at(100), 1);
    // The cursor's own batch leaves the selection: the walk goes on from its position.
    walk(
        t,
        first[1],
        &[Stage::WalWritten, Stage::Ingested, Stage::Stored, Stage::Completed],
        at(20),
    );
    let mut rest = Vec::new();
    let mut next = Some(cursor);
    while let Some(cursor) = next {
        let page = t.list_batches(&query.clone().after(cursor)).expect("page");
        rest.extend(page.batches.iter().map(|r| r.meta.id));
        next = page.next;
    }
    assert_eq!(rest, [first[2], first[3], ahead]);
    assert!(!rest.contains(&behind));
    // A new walk lists it, first.
    assert_eq!(
        walk_pages(t, &query, 2).concat(),
        [behind, first[0], first[2], first[3], ahead]
    );
}

/// `in_stage` lists the batches in that stage now, for every stage (`FAILED` as `failed`);
/// `stuck` those in neither `COMPLETED` nor `FAILED`; the creation bound is strict and
/// applies to every selection.
pub fn list_batches_in_each_stage(t: &impl Tracker) {
    let path: [&[Stage]; 8] = [
        &[],
        &[Stage::WalWritten],
        &[Stage::WalWritten, Stage::SourceCommitted],
        TO_INGESTED,
        &[Stage::WalWritten, Stage::Ingested, Stage::Stored],
        &[Stage::WalWritten, Stage::Ingested, Stage::Stored, Stage::Indexed],
        &[Stage::WalWritten, Stage::Ingested, Stage::Stored, Stage::Completed],
        &[Stage::WalWritten],
    ];
    // Two batches per stage, one created at 10 and one at 20.
    let mut by_stage: Vec<(Stage, Vec<BatchId>)> = Vec::new();
    for (stage, steps) in Stage::ALL.into_iter().zip(path) {
        let ids: Vec<BatchId> = [10, 20]
            .into_iter()
            .map(|s| {
                let id = registered(t, "acme", at(s), 1);
                walk(t, id, steps, at(30));
                id
            })
            .collect();
        if stage == Stage::Failed {
            for id in &ids {
                while t.batch(*id).expect("batch").stage != Stage::Failed {
                    t.record_error(*id, Stage::Ingested, "boom", at(31)).expect("error");
                }
            }
        }
        by_stage.push((stage, ids));
    }
    let listed = |query: BatchQuery| -> Vec<BatchId> { walk_pages(t, &query, 3).concat() };
    for (stage, ids) in &by_stage {
        assert_eq!(listed(BatchQuery::in_stage(*stage)), *ids, "{stage}");
        // Created strictly before: the batch created at 20 (plus 1.5 µs) is not before 20.
        let before = BatchQuery::in_stage(*stage).with_created_before(at(20));
        assert_eq!(listed(before), ids[..1], "{stage} before 20");
        let all_but_first =
            BatchQuery::in_stage(*stage).with_created_before(micros(at(20) + Duration::from_nanos(1_500)));
        assert_eq!(listed(all_but_first), ids[..1], "{stage} before the second's creation");
    }
    let failed = &by_stage.iter().find(|(s, _)| *s == Stage::Failed).expect("failed").1;
    assert_eq!(listed(BatchQuery::failed()), *failed);

    // Stuck: every stage but COMPLETED and FAILED, oldest first.
    let mut unfinished: Vec<BatchId> = Vec::new();
    for at_ in [0, 1] {
        for (stage, ids) in &by_stage {
            if !matches!(stage, Stage::Completed | Stage::Failed) {
                unfinished.push(ids[at_]);
            }
        }
    }
    assert_eq!(listed(BatchQuery::stuck(at(1_000))), unfinished);
    assert_eq!(listed(BatchQuery::stuck(at(20))), unfinished[..6]);
    assert!(listed(BatchQuery::stuck(at(10))).is_empty());
}

/// A tenant's listing holds its batches only, paged as any listing; every tenant's holds
/// them all.
pub fn list_batches_of_one_tenant(t: &impl Tracker) {
    let mut acme = Vec::new();
    let mut umbrella = Vec::new();
    for i in 0..5 {
        acme.push(registered(t, "acme", at(2 * i), 1));
        umbrella.push(registered(t, "umbrella", at(2 * i + 1), 1));
    }
    for id in acme[3..].iter().chain(&umbrella[4..]) {
        for _ in 0..3 {
            t.record_error(*id, Stage::WalWritten, "boom", at(20)).expect("error");
        }
    }
    let of = |name: &str| Some(Tenant::try_new(name).expect("tenant"));
    let stuck = BatchQuery::stuck(at(100));
    assert_eq!(
        walk_pages(t, &stuck.clone().with_tenant(of("acme")), 2).concat(),
        acme[..3]
    );
    assert_eq!(
        walk_pages(t, &stuck.clone().with_tenant(of("umbrella")), 2).concat(),
        umbrella[..4]
    );
    assert!(
        walk_pages(t, &stuck.clone().with_tenant(of("nobody")), 2)
            .concat()
            .is_empty()
    );
    let failed = BatchQuery::failed();
    assert_eq!(
        walk_pages(t, &failed.clone().with_tenant(of("acme")), 1).concat(),
        acme[3..]
    );
    assert_eq!(
        walk_pages(t, &failed.clone().with_tenant(of("umbrella")), 1).concat(),
        umbrella[4..]
    );
    assert_eq!(
        walk_pages(t, &failed.with_tenant(None), 2).concat(),
        [acme[3], acme[4], umbrella[4]]
    );
    let everyone = walk_pages(t, &stuck, 4).concat();
    assert_eq!(
        everyone,
        [
            acme[0],
            umbrella[0],
            acme[1],
            umbrella[1],
            acme[2],
            umbrella[2],
            umbrella[3]
        ]
    );
}

/// Every method of [`AsyncTracker`] gives what its [`Tracker`] twin gives, on a multi-threaded
/// runtime the check starts.
pub fn async_twin(t: &impl AsyncTracker) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let m = meta("acme", at(0), 3);
        assert_eq!(
            AsyncTracker::register(t, std::slice::from_ref(&m))
                .await
                .expect("register"),
            [Registration::Registered]
        );
        let steps = [Advance::new(m.id, Stage::WalWritten, at(1)).with_wal_position("node-a", 9)];
        assert_eq!(
            AsyncTracker::advance(t, &steps).await.expect("advance"),
            [Transition::Applied]
        );
        assert_eq!(
            AsyncTracker::advance(t, &steps).await.expect("advance"),
            [Transition::AlreadyApplied]
        );
        let claimed = AsyncTracker::claim(t, &ClaimRequest::new(Stage::Ingested, "async", 5).at(at(2)))
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 1);
        let outcome = AsyncTracker::record_error(t, m.id, Stage::Ingested, "async boom", at(3))
            .await
            .expect("error");
        assert_eq!(outcome, ErrorOutcome::Retry { retry_count: 1 });
        // The error dropped the lease: a fenced error of the same worker is refused.
        let err = AsyncTracker::record_error_by(t, m.id, Stage::Ingested, "late", at(4), "async")
            .await
            .expect_err("no lease");
        assert!(matches!(err, Error::LeaseLost { holder: None, .. }), "{err}");
        let rec = AsyncTracker::batch(t, m.id).await.expect("batch");
        assert_eq!(
            (rec.stage, rec.wal_position, rec.error_message.as_deref()),
            (
                Stage::WalWritten,
                Some(WalPosition::new("node-a", 9)),
                Some("async boom")
            )
        );
        assert_eq!(
            AsyncTracker::oldest_unstored_wal_position(t, "node-a")
                .await
                .expect("oldest"),
            Some(9)
        );
        let stuck = AsyncTracker::list_batches(t, &BatchQuery::stuck(at(10)))
            .await
            .expect("stuck");
        assert_eq!((stuck.batches.len(), stuck.next), (1, None));
        assert!(
            AsyncTracker::list_batches(t, &BatchQuery::failed())
                .await
                .expect("failed")
                .batches
                .is_empty()
        );
        let err = AsyncTracker::list_batches(t, &BatchQuery::failed().with_limit(0))
            .await
            .expect_err("limit 0");
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
        assert_eq!(
            AsyncTracker::stage_counts(t, Window::new(at(0), at(10)), None)
                .await
                .expect("counts")
                .total(),
            1
        );
        assert_eq!(
            AsyncTracker::client_throughput(t, Window::new(at(0), at(10)))
                .await
                .expect("tp")[0]
                .messages,
            3
        );
        assert!(
            AsyncTracker::source_offsets(t, "none")
                .await
                .expect("offsets")
                .is_empty()
        );
        assert_eq!(AsyncTracker::purge_completed(t, at(10)).await.expect("purge"), 0);
        let key = RememberedKey::new(tenant("acme"), "async-key", m.id, &b"receipt"[..], at(1));
        AsyncTracker::remember_keys(t, std::slice::from_ref(&key))
            .await
            .expect("remember");
        AsyncTracker::remember_keys(t, &[]).await.expect("an empty call");
        assert_eq!(
            AsyncTracker::recall_key(t, &tenant("acme"), "async-key")
                .await
                .expect("recall"),
            Some(key)
        );
        let err = AsyncTracker::remember_keys(t, &[RememberedKey::new(tenant("acme"), "", m.id, vec![], at(1))])
            .await
            .expect_err("empty key");
        assert!(matches!(err, Error::InvalidIdempotencyKey { .. }), "{err}");
        assert_eq!(AsyncTracker::forget_keys_before(t, at(2)).await.expect("forget"), 1);
        assert_eq!(
            AsyncTracker::recall_key(t, &tenant("acme"), "async-key")
                .await
                .expect("recall"),
            None
        );
        let err = AsyncTracker::batch(t, BatchId::new()).await.expect_err("unknown");
        assert!(matches!(err, Error::UnknownBatch { .. }));
    });
}

/// Generates one `#[test]` per check of [`conformance`](crate::conformance) for the backend
/// `$make` makes.
///
/// `$make` is the path of a function taking nothing and returning `Option` of something that
/// dereferences to the backend (a `Box`, or a guard that also holds the backend's temporary
/// directory): each test calls it once for a fresh backend, and skips when it returns `None`
/// (a backend whose server is not installed). The backend must implement [`Tracker`],
/// [`AsyncTracker`] and [`FileCatalog`]. Invoke it once per module: the tests are named after
/// the checks.
///
/// See the [module docs](crate::conformance) for an example.
#[macro_export]
macro_rules! tracker_conformance {
    ($make:path) => {
        $crate::tracker_conformance!(@each $make,
            register_and_read_back, unknown_batch, full_lifecycle, invalid_transitions, errors_and_retries,
            claims_and_leases, fenced_steps_need_the_lease, queries, no_wal_position_yet,
            wal_positions_are_per_node, failed_and_stored_do_not_hold_the_wal, source_offsets, purge_completed,
            range_claims_chain, range_claims_conflict, range_claims_replayed, invalid_range_claims_write_nothing,
            range_claim_keys_are_independent, async_range_claims, partitions_read_back,
            publish_marks_stored, record_index_marks_indexed, async_twin,
            list_batches_pages_walk_every_batch_once, list_batches_pages_stay_put_while_batches_are_added,
            list_batches_in_each_stage, list_batches_of_one_tenant,
            idempotency_keys_remembered_and_recalled, idempotency_first_remembered_wins,
            idempotency_keys_are_per_tenant, idempotency_keys_forgotten_by_time_only,
            invalid_idempotency_keys_remember_nothing);
    };
    (@each $make:path, $($check:ident),+) => {
        $(
            #[test]
            fn $check() {
                if let Some(tracker) = $make() {
                    $crate::conformance::$check(&*tracker);
                }
            }
        )+
    };
}
