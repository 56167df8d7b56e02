//! Idempotency keys: a repeat gets the first answer and stores nothing, from memory, from the
//! WAL after a stop that stored nothing, and from the tracker once the batch is stored; keys
//! are per tenant, claimed one request at a time, and forgotten after the window.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wit_batch::{BatchKey, Signal, SourceKind, Tenant};
use wit_pipeline::{AckLevel, Claimed, Error, Pipeline, Submitted};
use wit_store::FileCatalog;
use wit_tracker::Tracker;

use crate::faulty::Faulty;
use crate::support::{self, proto, spans};

fn acme() -> Tenant {
    Tenant::try_new("acme").expect("tenant")
}

fn traces(tenant: &Tenant) -> BatchKey {
    BatchKey::new(tenant.clone(), Signal::Traces, SourceKind::Http)
}

/// Submits spans `ids` under `key` of `tenant` with `receipt`, as a host does after a
/// `Claimed::New`, and waits for `level`.
fn submit_new(pipeline: &Pipeline, tenant: &Tenant, key: &str, receipt: &str, ids: &[u64], level: AckLevel) {
    let claim = match pipeline.claim_key(tenant, key, level).expect("claim") {
        Claimed::New(claim) => claim,
        other => panic!("`{key}` should be new: {other:?}"),
    };
    let part = proto(spans(ids), 1).with_idempotency(claim.idempotency(receipt.as_bytes().to_vec()).expect("receipt"));
    let Submitted::Accepted(ack) = pipeline.try_submit(&traces(tenant), part, level).expect("submit") else {
        panic!("room")
    };
    pipeline.flush().expect("flush");
    ack.wait().expect("acknowledged");
}

/// The receipt of a key that is taken, once its acknowledgment at `level` holds.
fn taken(pipeline: &Pipeline, tenant: &Tenant, key: &str, level: AckLevel) -> String {
    match pipeline.claim_key(tenant, key, level).expect("claim") {
        Claimed::Taken { receipt, ack } => {
            ack.wait().expect("the first request's acknowledgment");
            String::from_utf8(receipt.to_vec()).expect("utf-8")
        }
        other => panic!("`{key}` should be taken: {other:?}"),
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_repeat_gets_the_first_receipt_and_stores_nothing_from_memory_or_from_the_tracker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tracker = support::sqlite(dir.path());
    let pipeline = support::open(dir.path(), support::config(dir.path()), tracker.clone());
    let tenant = acme();
    submit_new(
        &pipeline,
        &tenant,
        "req-1",
        "first answer",
        &[1, 2, 3],
        AckLevel::Stored,
    );

    // In memory: the first answer, and nothing submitted.
    assert_eq!(taken(&pipeline, &tenant, "req-1", AckLevel::Stored), "first answer");
    // Keys are per tenant.
    let other = Tenant::try_new("other").expect("tenant");
    submit_new(&pipeline, &other, "req-1", "other's answer", &[7], AckLevel::Stored);

    // Once remembered and stored (and indexed), the key leaves memory for the tracker.
    wait_until("the keys to leave memory", || pipeline.status().idempotency_keys == 0);
    assert!(tracker.recall_key(&tenant, "req-1").expect("recall").is_some());
    assert_eq!(taken(&pipeline, &tenant, "req-1", AckLevel::Indexed), "first answer");
    assert_eq!(taken(&pipeline, &other, "req-1", AckLevel::Stored), "other's answer");
    pipeline.close().expect("close");

    // And after a restart.
    let pipeline = support::open(dir.path(), support::config(dir.path()), tracker.clone());
    assert_eq!(taken(&pipeline, &tenant, "req-1", AckLevel::Stored), "first answer");
    pipeline.close().expect("close");
    assert_eq!(
        support::stored_rows(&*tracker, &tenant, Signal::Traces),
        3,
        "stored once"
    );
    assert_eq!(support::stored_rows(&*tracker, &other, Signal::Traces), 1);
}

#[test]
fn a_key_is_claimed_by_one_request_at_a_time_and_released_when_not_submitted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tracker = support::sqlite(dir.path());
    let pipeline = support::open(dir.path(), support::config(dir.path()), tracker.clone());
    let tenant = acme();
    let level = AckLevel::WalDurable;

    let Claimed::New(first) = pipeline.claim_key(&tenant, "req-2", level).expect("claim") else {
        panic!("new")
    };
    assert!(matches!(
        pipeline.claim_key(&tenant, "req-2", level),
        Ok(Claimed::InFlight)
    ));
    // The first request is refused before it submits: the key is free again.
    drop(first);
    submit_new(&pipeline, &tenant, "req-2", "taken", &[10], level);
    assert_eq!(taken(&pipeline, &tenant, "req-2", level), "taken");

    // A part submitted under a taken key without a claim is refused, not stored twice.
    let part = proto(spans(&[11]), 1).with_idempotency(wit_batch::Idempotency::try_new("req-2", "x").expect("key"));
    assert!(matches!(
        pipeline.try_submit(&traces(&tenant), part, level),
        Err(Error::IdempotencyKey { .. })
    ));

    // Bad keys and receipts are typed errors naming what is wrong.
    for key in ["", "two words", &"k".repeat(256)] {
        match pipeline.claim_key(&tenant, key, level) {
            Err(e @ Error::IdempotencyKey { .. }) => assert!(e.to_string().contains("acme"), "{e}"),
            other => panic!("{key:?}: {other:?}"),
        }
    }
    let Claimed::New(claim) = pipeline.claim_key(&tenant, "req-3", level).expect("claim") else {
        panic!("new")
    };
    let too_big = vec![b'x'; wit_pipeline::MAX_RECEIPT_BYTES + 1];
    assert!(matches!(claim.idempotency(too_big), Err(Error::IdempotencyKey { .. })));
    drop(claim);
    pipeline.close().expect("close");
    assert_eq!(support::stored_rows(&*tracker, &tenant, Signal::Traces), 1);
}

#[test]
fn a_key_only_in_the_wal_is_known_after_a_stop_and_stored_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = support::sqlite(dir.path());
    let faulty = Arc::new(Faulty::new(sqlite.clone(), None));
    // The tracker is down: the batch is durable in the WAL, never registered, its key never
    // remembered.
    faulty.set_down(true);
    let pipeline = support::open(dir.path(), support::config(dir.path()), faulty.clone());
    let tenant = acme();
    let level = AckLevel::WalDurable;
    // Claiming asks the tracker about a key not in memory: down, so the claim fails (and
    // the request would be refused, retryably).
    assert!(matches!(
        pipeline.claim_key(&tenant, "req-4", level),
        Err(Error::Tracker { .. })
    ));
    faulty.set_down(false);
    let Claimed::New(claim) = pipeline.claim_key(&tenant, "req-4", level).expect("claim") else {
        panic!("new")
    };
    faulty.set_down(true);
    let part = proto(spans(&[21, 22]), 1).with_idempotency(claim.idempotency(&b"wal answer"[..]).expect("receipt"));
    let Submitted::Accepted(ack) = pipeline.try_submit(&traces(&tenant), part, level).expect("submit") else {
        panic!("room")
    };
    pipeline.flush().expect("flush");
    ack.wait().expect("durable");
    drop(claim);
    drop(pipeline); // stops without draining: nothing stored
    assert!(sqlite.recall_key(&tenant, "req-4").expect("recall").is_none());
    assert_eq!(support::stored_rows(&*sqlite, &tenant, Signal::Traces), 0);

    // Reopened: the replay takes the key again, from the WAL envelope.
    let pipeline = support::open(dir.path(), support::config(dir.path()), sqlite.clone());
    assert_eq!(pipeline.recovery().replayed, 1);
    assert_eq!(taken(&pipeline, &tenant, "req-4", AckLevel::Stored), "wal answer");
    wait_until("the key in the tracker", || {
        sqlite.recall_key(&tenant, "req-4").expect("recall").is_some()
    });
    pipeline.close().expect("close");
    assert_eq!(
        support::stored_rows(&*sqlite, &tenant, Signal::Traces),
        2,
        "stored once"
    );
    let files = sqlite.list(&tenant, Signal::Traces, None).expect("list");
    assert_eq!(files.len(), 1);
}

#[test]
fn after_the_window_a_key_is_new_again_and_forgotten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tracker = support::sqlite(dir.path());
    let window = Duration::from_millis(300);
    let config = support::config(dir.path()).with_idempotency_window(window);
    let pipeline = support::open(dir.path(), config.clone(), tracker.clone());
    let tenant = acme();
    submit_new(&pipeline, &tenant, "req-5", "old", &[31], AckLevel::Stored);
    wait_until("the key to leave memory", || pipeline.status().idempotency_keys == 0);
    assert_eq!(taken(&pipeline, &tenant, "req-5", AckLevel::Stored), "old");
    std::thread::sleep(window + Duration::from_millis(50));
    // Past the window, the same key is a new request.
    submit_new(&pipeline, &tenant, "req-5", "new", &[32], AckLevel::Stored);
    assert_eq!(taken(&pipeline, &tenant, "req-5", AckLevel::Stored), "new");
    pipeline.close().expect("close");
    // The janitor's first pass of a run forgets the tracker's old keys.
    std::thread::sleep(window + Duration::from_millis(50));
    let pipeline = support::open(dir.path(), config, tracker.clone());
    wait_until("the old key to be forgotten", || {
        tracker.recall_key(&tenant, "req-5").expect("recall").is_none()
    });
    pipeline.close().expect("close");
    assert_eq!(support::stored_rows(&*tracker, &tenant, Signal::Traces), 2);
}
