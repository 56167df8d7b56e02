//! Several workers claiming the same stage at once never get the same batch; several nodes
//! cataloguing a batch at once store it once; several readers claiming ranges of one partition
//! at once store each offset once.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use wit_batch::{BatchId, Signal, Stage, Tenant, Transition};
use wit_store::{FileCatalog, StoredFile, TimeRange};
use wit_tracker::{Advance, ClaimRequest, RangeClaim, RangeOutcome, SourceOffset, Tracker, TrackerExt};

use wit_tracker::conformance::{at, meta, range};

const BATCHES: usize = 240;

/// Registers batches ready for `INGESTED`, then lets one thread per tracker handle claim and
/// convert them until none are left. Each handle is a separate "node" (its own connection).
pub fn claims_never_overlap<T: Tracker + 'static>(nodes: Vec<T>) {
    let first = &nodes[0];
    let metas: Vec<_> = (0..BATCHES).map(|i| meta("acme", at(i as u64), 1)).collect();
    first.register(&metas).expect("register");
    let steps: Vec<Advance> = metas
        .iter()
        .map(|m| Advance::new(m.id, Stage::WalWritten, at(1_000)))
        .collect();
    first.advance(&steps).expect("advance");

    let start = std::sync::Barrier::new(nodes.len());
    let results: Vec<Vec<BatchId>> = std::thread::scope(|scope| {
        let handles: Vec<_> = nodes
            .iter()
            .enumerate()
            .map(|(n, node)| {
                let start = &start;
                scope.spawn(move || {
                    let worker = format!("node-{n}");
                    let mut mine = Vec::new();
                    start.wait();
                    loop {
                        let request = ClaimRequest::new(Stage::Ingested, worker.clone(), 7)
                            .with_lease(Duration::from_secs(600))
                            .at(SystemTime::now());
                        let claimed = node.claim(&request).expect("claim");
                        if claimed.is_empty() {
                            break mine;
                        }
                        let done: Vec<Advance> = claimed
                            .iter()
                            .map(|r| {
                                assert_eq!(r.lease.as_ref().map(|l| l.worker.as_str()), Some(worker.as_str()));
                                Advance::new(r.meta.id, Stage::Ingested, SystemTime::now())
                            })
                            .collect();
                        // A batch processed twice would show up here as AlreadyApplied.
                        let outcomes = node.advance(&done).expect("advance");
                        assert!(outcomes.iter().all(|o| *o == Transition::Applied), "{outcomes:?}");
                        mine.extend(claimed.iter().map(|r| r.meta.id));
                        // The conversion's own work, during which the others claim.
                        std::thread::sleep(Duration::from_millis(2));
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("worker")).collect()
    });

    let all: Vec<BatchId> = results.iter().flatten().copied().collect();
    let unique: HashSet<BatchId> = all.iter().copied().collect();
    assert_eq!(all.len(), unique.len(), "a batch was claimed twice");
    assert_eq!(
        unique,
        metas.iter().map(|m| m.id).collect::<HashSet<_>>(),
        "every batch was claimed"
    );
    // How the work was shared depends on scheduling (SQLite's busy handler backs off), so it
    // is shown, not asserted.
    eprintln!(
        "batches per node: {:?}",
        results.iter().map(Vec::len).collect::<Vec<_>>()
    );
}

#[test]
fn memory_workers_share_without_overlap() {
    let tracker = wit_tracker::InMemoryTracker::default();
    claims_never_overlap(vec![tracker.clone(), tracker.clone(), tracker.clone(), tracker]);
}

#[test]
fn sqlite_nodes_share_one_file_without_overlap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tracker.db");
    let nodes = (0..4)
        .map(|_| wit_tracker::SqliteTracker::open(&path, Default::default()).expect("open"))
        .collect();
    claims_never_overlap(nodes);
}

#[test]
fn postgres_nodes_share_without_overlap() {
    let Some(server) = crate::pg_server::PgServer::shared() else {
        return;
    };
    let params = server.fresh_schema("concurrency");
    let nodes = (0..4)
        .map(|_| wit_tracker::PostgresTracker::connect(&params, Default::default()).expect("connect"))
        .collect();
    claims_never_overlap(nodes);
}

#[test]
fn postgres_pooled_connections_share_without_overlap() {
    let Some(server) = crate::pg_server::PgServer::shared() else {
        return;
    };
    let params = server.fresh_schema("pooled");
    let tracker =
        wit_tracker::PostgresTracker::connect(&params, wit_tracker::TrackerConfig::default().with_pool_size(6))
            .expect("connect");
    claims_never_overlap(vec![
        tracker.clone(),
        tracker.clone(),
        tracker.clone(),
        tracker.clone(),
        tracker.clone(),
        tracker,
    ]);
}

/// Two nodes at once each compact a file of their own into one that also holds the same
/// fresh batch: every round exactly one replace succeeds, the other is `BatchAlreadyStored`,
/// and one live file holds the batch.
pub fn one_batch_is_catalogued_once<T: Tracker + FileCatalog + 'static>(nodes: [T; 2]) {
    const ROUNDS: u64 = 40;
    let tenant = Tenant::try_new("acme").expect("tenant");
    let file = |path: String, ids: Vec<BatchId>| StoredFile {
        path,
        tenant: tenant.clone(),
        signal: Signal::Logs,
        time_range: TimeRange::new(0, 1),
        rows: 1,
        bytes: 1,
        batch_ids: ids,
        index: None,
    };
    let start = std::sync::Barrier::new(2);
    for round in 0..ROUNDS {
        let metas: Vec<_> = (0..3).map(|_| meta("acme", at(round), 1)).collect();
        nodes[0].register(&metas).expect("register");
        for m in &metas {
            for stage in [Stage::WalWritten, Stage::Ingested] {
                nodes[0].mark(m.id, stage, at(round)).expect("mark");
            }
        }
        let (shared, own) = (metas[0].id, [metas[1].id, metas[2].id]);
        let old: Vec<StoredFile> = (0..2)
            .map(|n| file(format!("acme/logs/{round}/old-{n}.parquet"), vec![own[n]]))
            .collect();
        nodes[0].publish(&old).expect("publish");

        let results: Vec<wit_store::Result<()>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..2)
                .map(|n| {
                    let (node, start, old) = (&nodes[n], &start, &old[n]);
                    let new = file(format!("acme/logs/{round}/new-{n}.parquet"), vec![own[n], shared]);
                    scope.spawn(move || {
                        start.wait();
                        node.replace(std::slice::from_ref(&old.path), &[new], at(round))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("node")).collect()
        });
        let refused: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        assert_eq!(refused.len(), 1, "round {round}: {results:?}");
        assert!(
            matches!(refused[0], wit_store::Error::BatchAlreadyStored { batch, .. } if *batch == shared),
            "round {round}: {}",
            refused[0]
        );
        let holding = nodes[0]
            .list(&tenant, Signal::Logs, None)
            .expect("list")
            .into_iter()
            .filter(|f| f.batch_ids.contains(&shared))
            .count();
        assert_eq!(holding, 1, "round {round}");
    }
}

#[test]
fn memory_nodes_catalogue_a_batch_once() {
    let tracker = wit_tracker::InMemoryTracker::default();
    one_batch_is_catalogued_once([tracker.clone(), tracker]);
}

#[test]
fn sqlite_nodes_catalogue_a_batch_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tracker.db");
    let open = || wit_tracker::SqliteTracker::open(&path, Default::default()).expect("open");
    one_batch_is_catalogued_once([open(), open()]);
}

#[test]
fn postgres_nodes_catalogue_a_batch_once() {
    let Some(server) = crate::pg_server::PgServer::shared() else {
        return;
    };
    let params = server.fresh_schema("catalogue_once");
    let connect = || wit_tracker::PostgresTracker::connect(&params, Default::default()).expect("connect");
    one_batch_is_catalogued_once([connect(), connect()]);
}

/// The offset of partition 0 of `logs` stored for `group`, if any.
fn stored(node: &impl Tracker) -> Option<i64> {
    let offsets = node.source_offsets("group").expect("offsets");
    offsets
        .iter()
        .find(|o| o.topic == "logs" && o.partition == 0)
        .map(|o| o.offset)
}

/// One thread per tracker handle (a "node" of a consumer group, each with its own connection)
/// reads the partition's stored offset and claims a chain of ranges from it, over and over,
/// all at once, until the partition is read up to `END`. The claims race: most find the
/// offset moved and conflict. At the end the claimed ranges tile `[0, stored)` with no gap and
/// no overlap (each offset is held by exactly one claimed batch), every claimed batch is
/// `SOURCE_COMMITTED`, and no conflicting one was registered.
pub fn range_claims_tile_the_partition<T: Tracker + 'static>(nodes: Vec<T>) {
    const END: i64 = 600;
    let start = std::sync::Barrier::new(nodes.len());
    let results: Vec<Vec<(RangeClaim, RangeOutcome)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = nodes
            .iter()
            .enumerate()
            .map(|(n, node)| {
                let start = &start;
                scope.spawn(move || {
                    let mut mine = Vec::new();
                    start.wait();
                    for round in 0.. {
                        let from = stored(node);
                        if from.unwrap_or(0) >= END {
                            break;
                        }
                        // A chain of one to three ranges of one to five offsets, different
                        // per node and round.
                        let mut claims = Vec::new();
                        let mut next = from;
                        for i in 0..1 + (n + round) % 3 {
                            let to = next.unwrap_or(0) + 1 + ((n * 7 + round * 3 + i) % 5) as i64;
                            let claim = range(&meta("acme", at(0), 1), 0, next, to, SystemTime::now())
                                .with_wal_position(format!("node-{n}"), round as u64);
                            claims.push(claim);
                            next = Some(to);
                        }
                        let outcomes = node.claim_ranges(&claims).expect("claim");
                        assert_eq!(outcomes.len(), claims.len());
                        // A conflict found another offset than the claim's `from`. (A claim of
                        // the chain after a conflict may still be claimed: when another node
                        // claimed up to exactly its `from`.)
                        for (claim, outcome) in claims.iter().zip(&outcomes) {
                            if let RangeOutcome::Conflict { stored } = outcome {
                                assert_ne!(*stored, claim.from);
                            }
                        }
                        mine.extend(claims.into_iter().zip(outcomes));
                    }
                    mine
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("node")).collect()
    });

    let first = &nodes[0];
    let mut claimed: Vec<&RangeClaim> = Vec::new();
    let mut conflicts = 0;
    for (claim, outcome) in results.iter().flatten() {
        match outcome {
            RangeOutcome::Claimed => {
                let rec = first.batch(claim.meta.id).expect("a claimed batch is registered");
                assert_eq!(rec.stage, Stage::SourceCommitted);
                claimed.push(claim);
            }
            RangeOutcome::Conflict { .. } => {
                conflicts += 1;
                assert!(
                    first.batch(claim.meta.id).is_err(),
                    "a conflicting batch is not registered"
                );
            }
            RangeOutcome::AlreadyRegistered { .. } => panic!("no batch is claimed twice here"),
        }
    }
    claimed.sort_by_key(|c| c.from);
    assert_eq!(claimed[0].from, None, "the first range starts with nothing stored");
    for pair in claimed.windows(2) {
        assert_eq!(
            pair[1].from,
            Some(pair[0].to),
            "each offset is held by exactly one claimed batch"
        );
    }
    let end = claimed.last().expect("claimed").to;
    assert!(end >= END);
    assert_eq!(
        first.source_offsets("group").expect("offsets"),
        [SourceOffset::new("group", "logs", 0, end)]
    );
    eprintln!(
        "ranges claimed per node: {:?}; {conflicts} conflicts",
        results
            .iter()
            .map(|r| r.iter().filter(|(_, o)| *o == RangeOutcome::Claimed).count())
            .collect::<Vec<_>>()
    );
}

/// Two nodes claim from the same stored offset at the same moment, round after round (the
/// first round with nothing stored yet): exactly one claim is `Claimed`, the other a
/// `Conflict` that finds the winner's offset.
pub fn one_of_two_equal_claims_wins<T: Tracker + 'static>(nodes: [T; 2]) {
    const ROUNDS: usize = 40;
    let start = std::sync::Barrier::new(2);
    let mut wins = [0; 2];
    for round in 0..ROUNDS {
        let from = stored(&nodes[0]);
        assert_eq!(from.is_none(), round == 0);
        let outcomes: Vec<(i64, RangeOutcome)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..2)
                .map(|n| {
                    let (node, start) = (&nodes[n], &start);
                    // The two ranges end apart, so the loser shows whose offset it found.
                    let to = from.unwrap_or(0) + 1 + n as i64;
                    let claim = range(&meta("acme", at(0), 1), 0, from, to, at(1));
                    scope.spawn(move || {
                        start.wait();
                        (to, node.claim_ranges(&[claim]).expect("claim")[0])
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("node")).collect()
        });
        let winners: Vec<usize> = (0..2).filter(|n| outcomes[*n].1 == RangeOutcome::Claimed).collect();
        assert_eq!(winners.len(), 1, "round {round}: {outcomes:?}");
        let (winner, loser) = (winners[0], 1 - winners[0]);
        wins[winner] += 1;
        assert_eq!(
            outcomes[loser].1,
            RangeOutcome::Conflict {
                stored: Some(outcomes[winner].0)
            },
            "round {round}"
        );
        assert_eq!(stored(&nodes[1]), Some(outcomes[winner].0), "round {round}");
    }
    eprintln!("rounds won per node: {wins:?}");
}

#[test]
fn memory_readers_claim_each_offset_once() {
    let tracker = wit_tracker::InMemoryTracker::default();
    range_claims_tile_the_partition(vec![tracker.clone(), tracker.clone(), tracker.clone(), tracker.clone()]);
    let tracker = wit_tracker::InMemoryTracker::default();
    one_of_two_equal_claims_wins([tracker.clone(), tracker]);
}

#[test]
fn sqlite_readers_claim_each_offset_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tracker.db");
    let open = || wit_tracker::SqliteTracker::open(&path, Default::default()).expect("open");
    range_claims_tile_the_partition((0..4).map(|_| open()).collect());
}

#[test]
fn sqlite_one_of_two_equal_claims_wins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tracker.db");
    let open = || wit_tracker::SqliteTracker::open(&path, Default::default()).expect("open");
    one_of_two_equal_claims_wins([open(), open()]);
}

#[test]
fn postgres_readers_claim_each_offset_once() {
    let Some(server) = crate::pg_server::PgServer::shared() else {
        return;
    };
    let params = server.fresh_schema("range_claims");
    let connect = || wit_tracker::PostgresTracker::connect(&params, Default::default()).expect("connect");
    range_claims_tile_the_partition((0..4).map(|_| connect()).collect());
}

#[test]
fn postgres_one_of_two_equal_claims_wins() {
    let Some(server) = crate::pg_server::PgServer::shared() else {
        return;
    };
    let params = server.fresh_schema("equal_claims");
    let connect = || wit_tracker::PostgresTracker::connect(&params, Default::default()).expect("connect");
    one_of_two_equal_claims_wins([connect(), connect()]);
}
