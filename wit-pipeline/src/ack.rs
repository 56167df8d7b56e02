//! Acknowledgment levels and the handle that resolves at the level asked for.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use wit_batch::BatchId;

use crate::{Error, Result};

/// When a submitted part is acknowledged.
///
/// ```
/// use wit_pipeline::AckLevel;
///
/// assert_eq!(AckLevel::default(), AckLevel::WalDurable);
/// assert!(AckLevel::Received < AckLevel::Stored);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum AckLevel {
    /// As soon as the pipeline holds the part in memory. **Unsafe** unless the source can
    /// send again what a crash loses: nothing is durable yet.
    Received,
    /// Once the batch holding the part is `fdatasync`ed in the write-ahead log (the default):
    /// from then on no crash loses it.
    #[default]
    WalDurable,
    /// Once every row of the batch holding the part is in a published Parquet file: as late
    /// as the sink's file age limit (`wit_store::SinkConfig::with_max_file_age`) after the
    /// batch, plus the upload.
    Stored,
    /// Once the batch is stored and every file holding it has its full-text index recorded
    /// in the catalog (`wit-index`): searchable through the index. Needs indexing on
    /// ([`PipelineConfig::with_indexing`](crate::PipelineConfig::with_indexing)).
    Indexed,
}

/// What an acknowledgment says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Acked {
    /// The level reached (the one asked for).
    pub level: AckLevel,
    /// The batch holding the part (`None` at [`AckLevel::Received`]: it has none yet).
    pub batch: Option<BatchId>,
    /// The batch's LSN in the write-ahead log, once durable there.
    pub lsn: Option<u64>,
}

/// Progress of one submitted part, shared by the pipeline's threads and the [`Ack`] handle.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    state: Mutex<SlotState>,
    cond: Condvar,
}

#[derive(Debug, Default)]
struct SlotState {
    batch: Option<BatchId>,
    lsn: Option<u64>,
    durable: bool,
    stored: bool,
    indexed: bool,
    error: Option<ErrorKind>,
    wakers: Vec<Waker>,
}

#[derive(Debug, Clone)]
enum ErrorKind {
    NotAcknowledged(String),
    Failed(String),
}

impl Slot {
    fn update(&self, f: impl FnOnce(&mut SlotState)) {
        let wakers = {
            let mut st = self.state.lock();
            f(&mut st);
            std::mem::take(&mut st.wakers)
        };
        self.cond.notify_all();
        wakers.into_iter().for_each(Waker::wake);
    }

    /// The part is in batch `batch`, emitted by the batcher.
    pub(crate) fn set_batch(&self, batch: BatchId) {
        self.state.lock().batch = Some(batch);
    }

    /// The batch is durable in the WAL at `lsn`.
    pub(crate) fn durable(&self, lsn: u64) {
        self.update(|st| {
            st.durable = true;
            st.lsn = Some(lsn);
        });
    }

    /// Every row of the batch is in a published file.
    pub(crate) fn stored(&self, lsn: u64) {
        self.update(|st| {
            st.durable = true;
            st.stored = true;
            st.lsn = Some(lsn);
        });
    }

    /// Every file holding the batch is indexed.
    pub(crate) fn indexed(&self) {
        self.update(|st| {
            st.durable = true;
            st.stored = true;
            st.indexed = true;
        });
    }

    /// The level will not be reached: the pipeline stopped or failed.
    pub(crate) fn abandon(&self, reason: &str) {
        self.update(|st| {
            if st.error.is_none() {
                st.error = Some(ErrorKind::NotAcknowledged(reason.to_owned()));
            }
        });
    }

    /// The batch was given up.
    pub(crate) fn failed(&self, reason: &str) {
        self.update(|st| st.error = Some(ErrorKind::Failed(reason.to_owned())));
    }

    /// Whether the part's batch was given up (or the pipeline stopped before its level).
    pub(crate) fn has_error(&self) -> bool {
        self.state.lock().error.is_some()
    }

    /// Whether nothing more will happen to the part: stored (and indexed, with `indexing`),
    /// or given up.
    pub(crate) fn settled(&self, indexing: bool) -> bool {
        let st = self.state.lock();
        st.error.is_some() || (st.stored && (st.indexed || !indexing))
    }

    fn outcome(&self, st: &SlotState, level: AckLevel) -> Option<Result<Acked>> {
        let reached = match level {
            AckLevel::Received => true,
            AckLevel::WalDurable => st.durable,
            AckLevel::Stored => st.stored,
            AckLevel::Indexed => st.indexed,
        };
        if reached {
            let batch = if level == AckLevel::Received { None } else { st.batch };
            return Some(Ok(Acked {
                level,
                batch,
                lsn: if level == AckLevel::Received { None } else { st.lsn },
            }));
        }
        st.error.as_ref().map(|e| {
            Err(match e {
                ErrorKind::NotAcknowledged(reason) => Error::NotAcknowledged {
                    batch: st.batch,
                    reason: reason.clone(),
                },
                ErrorKind::Failed(reason) => Error::BatchFailed {
                    batch: st.batch.expect("a failed batch has an id"),
                    reason: reason.clone(),
                },
            })
        })
    }
}

/// The acknowledgment of one submitted part: resolves once the part reached the
/// [`AckLevel`] it was submitted with. Wait with [`wait`](Self::wait) or `.await` it.
///
/// Dropping it does not cancel anything: the part is processed all the same.
#[derive(Debug)]
#[must_use = "an acknowledgment says when the part is safe; drop it only if you do not need to know"]
pub struct Ack {
    slot: Arc<Slot>,
    level: AckLevel,
}

impl Ack {
    pub(crate) fn new(slot: Arc<Slot>, level: AckLevel) -> Self {
        Ack { slot, level }
    }

    /// The level this acknowledgment waits for.
    pub fn level(&self) -> AckLevel {
        self.level
    }

    /// The outcome, if there is one already.
    pub fn try_get(&self) -> Option<Result<Acked>> {
        let st = self.slot.state.lock();
        self.slot.outcome(&st, self.level)
    }

    /// Blocks until the part reached its level.
    ///
    /// # Errors
    ///
    /// [`Error::NotAcknowledged`] when the pipeline stopped or failed first (for
    /// [`AckLevel::Stored`], the part may still be durable in the WAL);
    /// [`Error::BatchFailed`] when its batch was given up.
    pub fn wait(self) -> Result<Acked> {
        let mut st = self.slot.state.lock();
        loop {
            if let Some(outcome) = self.slot.outcome(&st, self.level) {
                return outcome;
            }
            self.slot.cond.wait(&mut st);
        }
    }

    /// [`wait`](Self::wait)s at most `timeout`; `None` when it has not resolved by then.
    ///
    /// # Errors
    ///
    /// As [`wait`](Self::wait).
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Result<Acked>> {
        let deadline = Instant::now() + timeout;
        let mut st = self.slot.state.lock();
        loop {
            if let Some(outcome) = self.slot.outcome(&st, self.level) {
                return Some(outcome);
            }
            if self.slot.cond.wait_until(&mut st, deadline).timed_out() {
                return self.slot.outcome(&st, self.level);
            }
        }
    }
}

impl Future for Ack {
    type Output = Result<Acked>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut st = self.slot.state.lock();
        match self.slot.outcome(&st, self.level) {
            Some(outcome) => Poll::Ready(outcome),
            None => {
                if !st.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    st.wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}
