//! The batch lifecycle: its stages, the transitions allowed between them, and retries.
//!
//! This is the one place that defines which transitions are allowed; trackers and pipelines
//! ask here rather than keeping their own rules.

use std::fmt;
use std::str::FromStr;

use crate::meta::named_codes;
use crate::{BatchId, Error, Result};

/// Where a batch is in its lifecycle.
///
/// ```text
/// CREATED -> WAL_WRITTEN -> (SOURCE_COMMITTED) -> INGESTED -> STORED -> (INDEXED) -> COMPLETED
///    \            \                 \                \          \          \
///     `------------`-----------------`----------------`----------`----------`--> FAILED
/// ```
///
/// `INDEXED` is only for pipelines that index what they store: a pipeline without a
/// full-text index completes a batch straight from `STORED`.
///
/// `SOURCE_COMMITTED` is only for sources with offsets (Kafka): the source's offsets were
/// committed once the batch was durable in the WAL. Other batches go from `WAL_WRITTEN`
/// straight to `INGESTED`. Any stage but `COMPLETED` can fail. A failed batch is retried from
/// the stage it had reached when it failed ([`Stage::can_retry_into`]), as often as a
/// [`RetryPolicy`] allows. [`Transition::check`] turns the rules into an outcome or an error.
///
/// ```
/// use wit_batch::Stage;
///
/// assert!(Stage::Created.can_transition_to(Stage::WalWritten));
/// assert!(Stage::WalWritten.can_transition_to(Stage::Ingested)); // no offsets to commit
/// assert!(!Stage::Ingested.can_transition_to(Stage::Indexed)); // no skipping storage
/// assert_eq!(Stage::Stored.next_stages(), &[Stage::Indexed, Stage::Completed, Stage::Failed]);
/// assert_eq!(Stage::WalWritten.as_str(), "WAL_WRITTEN");
/// assert_eq!("COMPLETED".parse::<Stage>()?, Stage::Completed);
/// assert!(Stage::Completed.is_terminal());
/// # Ok::<_, wit_batch::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The batch was formed (by a batcher) and has an id.
    Created,
    /// The batch's envelope is durable in the write-ahead log; its source may be acknowledged.
    WalWritten,
    /// The source's offsets (e.g. Kafka) were committed after the WAL write.
    SourceCommitted,
    /// The payloads were converted to Arrow.
    Ingested,
    /// The batch is in a Parquet file that is closed and durable.
    Stored,
    /// The stored data is indexed for full-text search.
    Indexed,
    /// Done: the WAL space the batch used may be released.
    Completed,
    /// A stage failed; the batch waits for a retry (or stays here once retries are used up).
    Failed,
}

named_codes!(
    Stage,
    "stage",
    [
        Created = (1, "CREATED"),
        WalWritten = (2, "WAL_WRITTEN"),
        SourceCommitted = (3, "SOURCE_COMMITTED"),
        Ingested = (4, "INGESTED"),
        Stored = (5, "STORED"),
        Indexed = (6, "INDEXED"),
        Completed = (7, "COMPLETED"),
        Failed = (8, "FAILED"),
    ]
);

impl Stage {
    /// The stages a batch in this stage may move to next, the happy path first.
    ///
    /// `FAILED` lists none: where a failed batch may go depends on the stage it failed in,
    /// which [`Stage::can_retry_into`] decides.
    pub const fn next_stages(self) -> &'static [Stage] {
        use Stage::*;
        match self {
            Created => &[WalWritten, Failed],
            WalWritten => &[SourceCommitted, Ingested, Failed],
            SourceCommitted => &[Ingested, Failed],
            Ingested => &[Stored, Failed],
            Stored => &[Indexed, Completed, Failed],
            Indexed => &[Completed, Failed],
            Completed => &[],
            Failed => &[],
        }
    }

    /// Whether a batch in this stage may move to `next` (one of [`next_stages`](Self::next_stages)).
    ///
    /// Staying in the same stage is not a transition; [`Transition::check`] reports it as
    /// [`Transition::AlreadyApplied`].
    pub fn can_transition_to(self, next: Stage) -> bool {
        self.next_stages().contains(&next)
    }

    /// Whether no transition ever leaves this stage: only `COMPLETED`.
    ///
    /// `FAILED` is not terminal: a retry leaves it.
    pub const fn is_terminal(self) -> bool {
        matches!(self, Stage::Completed)
    }

    /// Whether a batch that failed while in stage `self` may be retried by moving it from
    /// `FAILED` to `to`.
    ///
    /// A failed batch is retried from the stage it had reached: `to` must be `self`, the last
    /// stage it completed, and the pipeline then runs the step after it again. For example a
    /// batch that failed while `INGESTED` (its Parquet write failed) goes back to `INGESTED`
    /// and is stored again. `self` cannot be `FAILED` or `COMPLETED` (a completed batch never
    /// fails).
    ///
    /// ```
    /// use wit_batch::Stage;
    ///
    /// assert!(Stage::Ingested.can_retry_into(Stage::Ingested));
    /// assert!(!Stage::Ingested.can_retry_into(Stage::Stored)); // the store step runs again
    /// assert!(!Stage::Ingested.can_retry_into(Stage::Created)); // work is not redone
    /// ```
    pub fn can_retry_into(self, to: Stage) -> bool {
        self == to && self.can_transition_to(Stage::Failed)
    }
}

/// The outcome of a lifecycle transition that is allowed.
///
/// ```
/// use wit_batch::{BatchId, Error, Stage, Transition};
///
/// let batch = BatchId::new();
/// assert_eq!(Transition::check(batch, Stage::Ingested, Stage::Stored)?, Transition::Applied);
/// // Replaying a step that already happened is fine, and says so:
/// assert_eq!(Transition::check(batch, Stage::Stored, Stage::Stored)?, Transition::AlreadyApplied);
/// // Skipping a step is not:
/// assert!(matches!(
///     Transition::check(batch, Stage::Ingested, Stage::Completed),
///     Err(Error::InvalidTransition { .. })
/// ));
/// // A batch that failed while STORED is retried from STORED:
/// assert_eq!(Transition::check_retry(batch, Stage::Stored, Stage::Stored)?, Transition::Applied);
/// # Ok::<_, wit_batch::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transition {
    /// The batch moves to the new stage.
    Applied,
    /// The batch is already in that stage (a replayed or duplicated step); nothing changes.
    AlreadyApplied,
}

impl Transition {
    /// Checks moving `batch` from stage `from` to stage `to`.
    ///
    /// `to == from` is [`Transition::AlreadyApplied`] for every stage; a transition that
    /// [`Stage::can_transition_to`] allows is [`Transition::Applied`]. Leaving `FAILED` is a
    /// retry: use [`Transition::check_retry`], which knows the stage the batch failed in.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTransition`] for every other pair.
    pub fn check(batch: BatchId, from: Stage, to: Stage) -> Result<Transition> {
        if from == to {
            Ok(Transition::AlreadyApplied)
        } else if from.can_transition_to(to) {
            Ok(Transition::Applied)
        } else {
            Err(Error::InvalidTransition { batch, from, to })
        }
    }

    /// Checks moving `batch`, which is `FAILED` after failing in stage `failed_from`, to `to`.
    ///
    /// `to == FAILED` is [`Transition::AlreadyApplied`]; a retry that
    /// [`Stage::can_retry_into`] allows is [`Transition::Applied`]. Whether to retry at all is
    /// the [`RetryPolicy`]'s call.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTransition`] (from `FAILED`) for every other `to`.
    pub fn check_retry(batch: BatchId, failed_from: Stage, to: Stage) -> Result<Transition> {
        if to == Stage::Failed {
            Ok(Transition::AlreadyApplied)
        } else if failed_from.can_retry_into(to) {
            Ok(Transition::Applied)
        } else {
            Err(Error::InvalidTransition {
                batch,
                from: Stage::Failed,
                to,
            })
        }
    }
}

/// How often a failed batch is retried.
///
/// ```
/// use wit_batch::{RetryDecision, RetryPolicy};
///
/// let policy = RetryPolicy::default().with_max_retries(2);
/// assert_eq!(policy.after_failure(0), RetryDecision::Retry); // first failure
/// assert_eq!(policy.after_failure(1), RetryDecision::Retry);
/// assert_eq!(policy.after_failure(2), RetryDecision::GiveUp); // third failure: stays FAILED
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    max_retries: u32,
}

impl Default for RetryPolicy {
    /// Five retries: six attempts in all.
    fn default() -> Self {
        RetryPolicy { max_retries: 5 }
    }
}

impl RetryPolicy {
    /// Retries at most `n` times after the first attempt (default 5; 0 never retries).
    pub fn with_max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// The most retries made after the first attempt.
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// What to do after a batch failed, given how many times it was retried before this
    /// failure (0 after the first attempt failed).
    pub fn after_failure(&self, retries_so_far: u32) -> RetryDecision {
        if retries_so_far < self.max_retries {
            RetryDecision::Retry
        } else {
            RetryDecision::GiveUp
        }
    }
}

/// What a [`RetryPolicy`] says about a failed batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryDecision {
    /// Retry it from the stage it failed in ([`Transition::check_retry`]).
    Retry,
    /// Retries are used up: it stays `FAILED`, for an operator to look at.
    GiveUp,
}

#[cfg(test)]
mod tests {
    use super::*;
    use Stage::*;

    /// Every allowed transition, written out by hand; anything not here is refused.
    const ALLOWED: &[(Stage, Stage)] = &[
        (Created, WalWritten),
        (Created, Failed),
        (WalWritten, SourceCommitted),
        (WalWritten, Ingested),
        (WalWritten, Failed),
        (SourceCommitted, Ingested),
        (SourceCommitted, Failed),
        (Ingested, Stored),
        (Ingested, Failed),
        (Stored, Indexed),
        // A pipeline without a full-text index completes a batch once stored.
        (Stored, Completed),
        (Stored, Failed),
        (Indexed, Completed),
        (Indexed, Failed),
    ];

    /// The stages a failed batch may be retried into, by the stage it failed in.
    const RETRIES: &[(Stage, Stage)] = &[
        (Created, Created),
        (WalWritten, WalWritten),
        (SourceCommitted, SourceCommitted),
        (Ingested, Ingested),
        (Stored, Stored),
        (Indexed, Indexed),
    ];

    #[test]
    fn every_pair_matches_the_table() {
        let batch = BatchId::from_u128(7);
        for from in Stage::ALL {
            for to in Stage::ALL {
                let allowed = ALLOWED.contains(&(from, to));
                assert_eq!(from.can_transition_to(to), allowed, "{from} -> {to}");
                assert_eq!(from.next_stages().contains(&to), allowed, "{from} -> {to}");
                match Transition::check(batch, from, to) {
                    Ok(Transition::AlreadyApplied) => assert_eq!(from, to),
                    Ok(Transition::Applied) => assert!(allowed, "{from} -> {to} applied"),
                    Err(Error::InvalidTransition {
                        batch: b,
                        from: f,
                        to: t,
                    }) => {
                        assert!(!allowed && from != to, "{from} -> {to} refused");
                        assert_eq!((b, f, t), (batch, from, to));
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
    }

    #[test]
    fn every_retry_pair_matches_the_table() {
        let batch = BatchId::from_u128(7);
        for failed_from in Stage::ALL {
            for to in Stage::ALL {
                let allowed = RETRIES.contains(&(failed_from, to));
                assert_eq!(
                    failed_from.can_retry_into(to),
                    allowed,
                    "{failed_from} retried into {to}"
                );
                match Transition::check_retry(batch, failed_from, to) {
                    Ok(Transition::AlreadyApplied) => assert_eq!(to, Failed),
                    Ok(Transition::Applied) => assert!(allowed),
                    Err(Error::InvalidTransition {
                        from: Failed, to: t, ..
                    }) => {
                        assert!(!allowed && to != Failed);
                        assert_eq!(t, to);
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
    }

    #[test]
    fn only_completed_is_terminal_and_every_other_stage_can_fail() {
        for stage in Stage::ALL {
            assert_eq!(stage.is_terminal(), stage == Completed);
            assert_eq!(stage.is_terminal(), stage.next_stages().is_empty() && stage != Failed);
            if !stage.is_terminal() && stage != Failed {
                assert!(stage.can_transition_to(Failed));
            }
        }
    }

    #[test]
    fn next_stages_list_the_happy_path_first() {
        let mut stage = Created;
        let mut path = vec![stage];
        while let Some(&next) = stage.next_stages().first() {
            stage = next;
            path.push(stage);
        }
        assert_eq!(
            path,
            [
                Created,
                WalWritten,
                SourceCommitted,
                Ingested,
                Stored,
                Indexed,
                Completed
            ]
        );
    }

    #[test]
    fn names_and_codes_are_stable() {
        let table: Vec<_> = Stage::ALL.iter().map(|s| (s.code(), s.as_str())).collect();
        assert_eq!(
            table,
            [
                (1, "CREATED"),
                (2, "WAL_WRITTEN"),
                (3, "SOURCE_COMMITTED"),
                (4, "INGESTED"),
                (5, "STORED"),
                (6, "INDEXED"),
                (7, "COMPLETED"),
                (8, "FAILED"),
            ]
        );
        for s in Stage::ALL {
            assert_eq!(s.to_string().parse::<Stage>().unwrap(), s);
            assert_eq!(Stage::from_code(s.code()), Some(s));
        }
        assert_eq!(Stage::from_code(0), None);
        assert!(matches!(
            "stored".parse::<Stage>(),
            Err(Error::Unknown { kind: "stage", .. })
        ));
    }

    #[test]
    fn the_invalid_transition_message_names_batch_and_stages() {
        let batch = BatchId::from_u128(0x0190_b4c2_6c1e_7d40_9f3a_5b2c_8e1d_4f60);
        let err = Transition::check(batch, Ingested, Completed).unwrap_err();
        assert_eq!(
            err.to_string(),
            "batch 0190b4c2-6c1e-7d40-9f3a-5b2c8e1d4f60: transition from INGESTED to COMPLETED is not allowed"
        );
    }

    #[test]
    fn retry_policy_counts_retries_not_attempts() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.max_retries(), 5);
        let decisions: Vec<_> = (0..7).map(|n| policy.after_failure(n)).collect();
        assert_eq!(decisions[..5], [RetryDecision::Retry; 5]);
        assert_eq!(decisions[5..], [RetryDecision::GiveUp; 2]);
        assert_eq!(
            RetryPolicy::default().with_max_retries(0).after_failure(0),
            RetryDecision::GiveUp
        );
        assert_eq!(
            RetryPolicy::default()
                .with_max_retries(u32::MAX)
                .after_failure(u32::MAX - 1),
            RetryDecision::Retry
        );
    }
}
