//! The lifecycle as a tracker uses it: a batch's row moves through the stages with
//! `Transition::check`, fails, is retried by `RetryPolicy` from where it was, and never
//! reaches COMPLETED without passing every stage that makes it durable.

use proptest::prelude::*;
use wit_batch::{BatchId, Error, RetryDecision, RetryPolicy, Stage, Transition};

/// What a tracker keeps for a batch.
#[derive(Debug)]
struct Row {
    batch: BatchId,
    stage: Stage,
    /// The stage it was in when it failed, while `stage` is FAILED.
    failed_from: Option<Stage>,
    retries: u32,
    /// The stages it moved to, in order (not counting FAILED and retries).
    progress: Vec<Stage>,
}

impl Row {
    fn new() -> Row {
        Row {
            batch: BatchId::new(),
            stage: Stage::Created,
            failed_from: None,
            retries: 0,
            progress: vec![Stage::Created],
        }
    }

    fn apply(&mut self, to: Stage) -> Result<Transition, Error> {
        let outcome = match (self.stage, self.failed_from) {
            (Stage::Failed, Some(from)) => Transition::check_retry(self.batch, from, to)?,
            (from, _) => Transition::check(self.batch, from, to)?,
        };
        if outcome == Transition::Applied {
            if to == Stage::Failed {
                self.failed_from = Some(self.stage);
            } else if self.stage == Stage::Failed {
                self.failed_from = None;
                self.retries += 1;
            } else {
                self.progress.push(to);
            }
            self.stage = to;
        }
        Ok(outcome)
    }
}

#[test]
fn an_http_batch_goes_straight_from_wal_to_ingest_and_replays_are_no_ops() {
    let mut row = Row::new();
    for stage in [
        Stage::WalWritten,
        Stage::Ingested,
        Stage::Stored,
        Stage::Indexed,
        Stage::Completed,
    ] {
        assert_eq!(row.apply(stage).unwrap(), Transition::Applied);
        // A replayed step (after a crash, say) changes nothing and is no error.
        assert_eq!(row.apply(stage).unwrap(), Transition::AlreadyApplied);
    }
    assert!(row.stage.is_terminal());
    assert!(matches!(
        row.apply(Stage::Failed),
        Err(Error::InvalidTransition {
            from: Stage::Completed,
            ..
        })
    ));
}

#[test]
fn a_batch_of_a_pipeline_without_an_index_completes_once_stored() {
    let mut row = Row::new();
    for stage in [Stage::WalWritten, Stage::Ingested, Stage::Stored, Stage::Completed] {
        assert_eq!(row.apply(stage).unwrap(), Transition::Applied);
    }
    assert!(row.stage.is_terminal());
    // An index never comes after completion.
    assert!(matches!(
        row.apply(Stage::Indexed),
        Err(Error::InvalidTransition {
            from: Stage::Completed,
            ..
        })
    ));
}

#[test]
fn a_kafka_batch_commits_offsets_after_the_wal_write() {
    let mut row = Row::new();
    assert!(matches!(
        row.apply(Stage::SourceCommitted),
        Err(Error::InvalidTransition { .. })
    ));
    for stage in [Stage::WalWritten, Stage::SourceCommitted, Stage::Ingested] {
        assert_eq!(row.apply(stage).unwrap(), Transition::Applied);
    }
    assert_eq!(row.stage, Stage::Ingested);
}

#[test]
fn a_failed_batch_is_retried_from_where_it_was_until_the_policy_gives_up() {
    let policy = RetryPolicy::default().with_max_retries(3);
    let mut row = Row::new();
    row.apply(Stage::WalWritten).unwrap();
    row.apply(Stage::Ingested).unwrap();
    let mut attempts = 0;
    loop {
        // Storing fails, every time.
        attempts += 1;
        assert_eq!(row.apply(Stage::Failed).unwrap(), Transition::Applied);
        assert_eq!(row.apply(Stage::Failed).unwrap(), Transition::AlreadyApplied);
        assert!(matches!(
            row.apply(Stage::Stored),
            Err(Error::InvalidTransition {
                from: Stage::Failed,
                ..
            })
        ));
        assert!(matches!(
            row.apply(Stage::WalWritten),
            Err(Error::InvalidTransition { .. })
        ));
        match policy.after_failure(row.retries) {
            RetryDecision::Retry => assert_eq!(row.apply(Stage::Ingested).unwrap(), Transition::Applied),
            RetryDecision::GiveUp => break,
        }
    }
    assert_eq!(attempts, 4, "the first attempt and three retries");
    assert_eq!((row.stage, row.failed_from), (Stage::Failed, Some(Stage::Ingested)));
}

/// The stages on the way to COMPLETED, in order; SOURCE_COMMITTED and INDEXED may be skipped.
fn is_a_valid_progress(progress: &[Stage]) -> bool {
    let full = [
        Stage::Created,
        Stage::WalWritten,
        Stage::SourceCommitted,
        Stage::Ingested,
        Stage::Stored,
        Stage::Indexed,
        Stage::Completed,
    ];
    let skipping =
        |skipped: &[Stage]| -> Vec<Stage> { full.iter().copied().filter(|s| !skipped.contains(s)).collect() };
    [
        skipping(&[]),
        skipping(&[Stage::SourceCommitted]),
        skipping(&[Stage::Indexed]),
        skipping(&[Stage::SourceCommitted, Stage::Indexed]),
    ]
    .iter()
    .any(|path| path.starts_with(progress))
}

proptest! {
    #[test]
    fn random_requests_only_ever_move_a_batch_along_the_lifecycle(
        requests in proptest::collection::vec(proptest::sample::select(Stage::ALL.to_vec()), 0..60),
    ) {
        let mut row = Row::new();
        for to in requests {
            let before = row.stage;
            match row.apply(to) {
                Ok(Transition::AlreadyApplied) => prop_assert_eq!(before, to),
                Ok(Transition::Applied) => prop_assert_eq!(row.stage, to),
                Err(Error::InvalidTransition { from, to: refused, .. }) => {
                    prop_assert_eq!((from, refused), (before, to));
                    prop_assert_eq!(row.stage, before, "a refused transition changes nothing");
                }
                Err(e) => return Err(TestCaseError::fail(e.to_string())),
            }
            prop_assert!(is_a_valid_progress(&row.progress), "{:?}", row.progress);
            prop_assert_eq!(row.failed_from.is_some(), row.stage == Stage::Failed);
        }
        if row.stage == Stage::Completed {
            prop_assert_eq!(row.progress.last(), Some(&Stage::Completed));
        }
    }
}
