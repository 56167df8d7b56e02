//! Several workers claiming the same stage at once never get the same batch.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use wit_batch::{BatchId, Stage, Transition};
use wit_tracker::{Advance, ClaimRequest, Tracker};

use crate::conformance::{at, meta};

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
