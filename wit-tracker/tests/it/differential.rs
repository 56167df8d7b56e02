//! Random sequences of tracker calls give the same results on every backend: the in-memory
//! tracker (the plainest statement of the rules) against SQLite and PostgreSQL.

use std::time::Duration;

use proptest::prelude::*;
use wit_batch::{BatchId, BatchMeta, Stage};
use wit_tracker::{Advance, ClaimRequest, InMemoryTracker, RangeClaim, SourceOffset, Tracker, Window};

use crate::conformance::{at, config, meta};

/// A step: batch index, stage, time, source offset, worker.
type Step = (usize, Stage, u64, Option<i64>, Option<u8>);

/// A range claim: batch index, partition, `from` (in tens), length (0: an empty range, which
/// is refused), time.
type Range = (usize, i32, Option<i64>, i64, u64);

#[derive(Debug, Clone)]
enum Op {
    Register(Vec<usize>),
    Advance(Vec<Step>),
    Error(usize, Stage, u64, Option<u8>),
    Claim(Stage, u8, usize, u64, u64),
    ClaimRanges(Vec<Range>),
    Purge(u64),
}

fn stage() -> impl Strategy<Value = Stage> {
    proptest::sample::select(Stage::ALL.to_vec())
}

fn op(n: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        proptest::collection::vec(0..n, 1..4).prop_map(Op::Register),
        proptest::collection::vec(
            (
                0..n,
                stage(),
                0..100u64,
                proptest::option::of(0..50i64),
                proptest::option::of(0..3u8)
            ),
            1..5
        )
        .prop_map(Op::Advance),
        (0..n, stage(), 0..100u64, proptest::option::of(0..3u8)).prop_map(|(i, s, t, w)| Op::Error(i, s, t, w)),
        (stage(), 0..3u8, 0..4usize, 0..100u64, 0..40u64).prop_map(|(s, w, m, t, l)| Op::Claim(s, w, m, t, l)),
        proptest::collection::vec(
            (
                0..n,
                0..2i32,
                proptest::option::of(0..6i64),
                prop_oneof![Just(10i64), Just(20), 0..12i64],
                0..100u64
            ),
            1..4
        )
        .prop_map(Op::ClaimRanges),
        (0..120u64).prop_map(Op::Purge),
    ]
}

/// Applies `op` and returns what it gave, as text (errors by their message).
fn apply(t: &impl Tracker, metas: &[BatchMeta], op: &Op) -> String {
    fn show<T: std::fmt::Debug>(r: wit_tracker::Result<T>) -> String {
        match r {
            Ok(v) => format!("ok {v:?}"),
            Err(e) => format!("error {e}"),
        }
    }
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
        Op::Error(i, s, when, None) => show(t.record_error(metas[*i].id, *s, "boom", at(*when))),
        Op::Error(i, s, when, Some(w)) => {
            show(t.record_error_by(metas[*i].id, *s, "boom", at(*when), &format!("w{w}")))
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
        Op::Purge(before) => show(t.purge_completed(at(*before))),
    }
}

/// Everything the tracker can tell about the batches, as text.
fn state(t: &impl Tracker, ids: &[BatchId]) -> String {
    let mut out: Vec<String> = ids
        .iter()
        .map(|id| format!("{:?}", t.batch(*id).map_err(|e| e.to_string())))
        .collect();
    out.push(format!(
        "{:?}",
        t.stuck(at(1_000), 100, None).map_err(|e| e.to_string())
    ));
    out.push(format!("{:?}", t.failed(100, None).map_err(|e| e.to_string())));
    out.push(format!(
        "{:?}",
        t.stage_counts(Window::new(at(0), at(1_000)), None)
            .map_err(|e| e.to_string())
    ));
    out.push(format!(
        "{:?}",
        t.client_throughput(Window::new(at(0), at(1_000)))
            .map_err(|e| e.to_string())
    ));
    for node in ["node-a", "node-b"] {
        out.push(format!(
            "{:?}",
            t.oldest_unstored_wal_position(node).map_err(|e| e.to_string())
        ));
    }
    out.push(format!("{:?}", t.source_offsets("g").map_err(|e| e.to_string())));
    out.join("\n")
}

fn run_against(other: &impl Tracker, ops: &[Op]) {
    let model = InMemoryTracker::new(config());
    // Batches 1 and 2 carry a source partition (0 and 1): every read gives it back.
    let partitions = [None, Some(0), Some(1), None];
    let metas: Vec<BatchMeta> = (0..4)
        .map(|i| BatchMeta {
            partition: partitions[i as usize],
            ..meta(if i % 2 == 0 { "acme" } else { "umbrella" }, at(i), 10 + i)
        })
        .collect();
    let ids: Vec<BatchId> = metas.iter().map(|m| m.id).collect();
    for (n, op) in ops.iter().enumerate() {
        let expected = apply(&model, &metas, op);
        let got = apply(other, &metas, op);
        assert_eq!(got, expected, "op {n}: {op:?}");
    }
    assert_eq!(state(other, &ids), state(&model, &ids));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn sqlite_behaves_as_the_model(ops in proptest::collection::vec(op(4), 1..30)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let sqlite = wit_tracker::SqliteTracker::open(&dir.path().join("t.db"), config()).expect("open");
        run_against(&sqlite, &ops);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn postgres_behaves_as_the_model(ops in proptest::collection::vec(op(4), 1..30)) {
        if let Some(server) = crate::pg_server::PgServer::shared() {
            let params = server.fresh_schema("differential");
            let pg = wit_tracker::PostgresTracker::connect(&params, config()).expect("connect");
            run_against(&pg, &ops);
        }
    }
}
