//! Group commit: appenders and the commit thread gather queued records into groups, lead
//! their write and sync, and wake waiters; [`Commit`] is the handle a submitter waits on.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard, RwLock};

use crate::config::{Config, SyncMode};
use crate::format::{GROUP_HEADER_LEN, HEADER_LEN, TRAILER_LEN, finish_record_crc, record_frame_len, record_header};
use crate::io::{Chunk, GroupBuf, Io, Spares};
use crate::recovery::Recovery;
use crate::segment::{BLOCK, Segment};
use crate::{Error, Lsn, LsnRange, Result};

pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) config: Config,
    pub(crate) state: Mutex<State>,
    /// Blocking waiters wait here for their LSNs to become durable or to lead.
    pub(crate) waiters: Condvar,
    /// The committer thread waits here for groups that only async waiters wait for.
    pub(crate) committer: Condvar,
    pub(crate) io: Mutex<Io>,
    pub(crate) view: RwLock<View>,
    pub(crate) spares: Mutex<Spares>,
    pub(crate) recovery: Recovery,
    /// Whether the tail is being written with direct I/O (for
    /// [`Stats::direct_io`](crate::Stats::direct_io)).
    pub(crate) direct_io: Arc<AtomicBool>,
}

/// What readers see: the segments and how far the log is durable.
pub(crate) struct View {
    /// Oldest first; the last one is the tail.
    pub(crate) segments: Vec<Arc<Segment>>,
    /// The LSN after the last durable record.
    pub(crate) durable_next: u64,
    /// Offset after the last durable group in the tail.
    pub(crate) tail_end: u64,
}

pub(crate) struct State {
    pub(crate) next_lsn: u64,
    pub(crate) durable_next: u64,
    /// Framed groups waiting for a leader, in LSN order.
    pub(crate) pending: Vec<Chunk>,
    pub(crate) leader_active: bool,
    /// The committer leads until `durable_next` reaches this.
    pub(crate) flush_request: u64,
    pub(crate) wakers: Vec<(u64, Waker)>,
    pub(crate) poisoned: Option<Poison>,
    pub(crate) closed: bool,
    pub(crate) plan: Plan,
    /// Whether a new group keeps room in front for the earlier bytes of its first block,
    /// so that it can be written directly as whole blocks.
    pub(crate) block_leads: bool,
    pub(crate) free_buffers: Vec<GroupBuf>,
    /// Submissions (append calls) queued since a leader last took the pending groups.
    pub(crate) submissions: u64,
    /// How many submissions the next group should hold: those that arrived during the last
    /// round plus those the last round acknowledged (their writers are likely coming back).
    pub(crate) gather_target: u64,
    /// How long the last round's sync took; a leader gathers for at most as long.
    pub(crate) last_sync: Duration,
}

/// Where the next framed byte will go.
pub(crate) struct Plan {
    pub(crate) generation: u64,
    pub(crate) next_generation: u64,
    pub(crate) offset: u64,
    pub(crate) limit: u64,
}

#[derive(Clone)]
pub(crate) struct Poison {
    pub(crate) op: &'static str,
    pub(crate) path: PathBuf,
    pub(crate) cause: Arc<std::io::Error>,
}

impl Poison {
    pub(crate) fn error(&self) -> Error {
        Error::Poisoned {
            op: self.op,
            path: self.path.clone(),
            cause: Arc::clone(&self.cause),
        }
    }

    fn from_error(e: Error) -> Self {
        match e {
            Error::Io { op, path, source } => Poison {
                op,
                path,
                cause: Arc::new(source),
            },
            other => Poison {
                op: "write",
                path: PathBuf::new(),
                cause: Arc::new(std::io::Error::other(other.to_string())),
            },
        }
    }
}

const MAX_POOLED_BUFFERS: usize = 8;
/// The longest a leader waits for returning writers before it writes.
const MAX_GATHER: Duration = Duration::from_millis(1);
/// The most buffer capacity kept for reuse, all pooled buffers together: room for a few
/// groups of the largest records (16 MiB by default). A buffer that is not reused is
/// allocated again, and its pages faulted in and zeroed again by the kernel, per group.
const MAX_POOLED_BYTES: usize = 64 << 20;

impl State {
    pub(crate) fn check_open(&self) -> Result<()> {
        if let Some(p) = &self.poisoned {
            return Err(p.error());
        }
        if self.closed {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Frames one record into the pending groups, planning where it will land. A `detached`
    /// payload is not copied: only its header is, into a group of its own, which the caller
    /// takes out of the pending groups and writes itself.
    pub(crate) fn push_record(&mut self, payload: &[u8], crc: u32, segment_size: u64, detached: bool) {
        let frame = record_frame_len(payload.len()) as u64;
        let lsn = self.next_lsn;
        let plan = &mut self.plan;
        let extend = matches!(self.pending.last(), Some(c) if c.generation == plan.generation)
            && plan.offset + frame <= plan.limit
            && !detached;
        if !extend {
            let rotate = plan.offset + GROUP_HEADER_LEN as u64 + frame > plan.limit;
            if rotate {
                plan.generation = plan.next_generation;
                plan.next_generation += 1;
                plan.offset = HEADER_LEN;
                plan.limit = segment_size - TRAILER_LEN;
            }
            let lead = if self.block_leads {
                (plan.offset % BLOCK as u64) as usize
            } else {
                0
            };
            let mut buf = self.free_buffers.pop().unwrap_or_else(|| GroupBuf::new(BLOCK));
            buf.resize(lead + GROUP_HEADER_LEN, 0);
            self.pending.push(Chunk {
                rotate_before: rotate,
                generation: plan.generation,
                offset: plan.offset,
                first_lsn: lsn,
                count: 0,
                lead,
                buf,
                detached: 0,
            });
            plan.offset += GROUP_HEADER_LEN as u64;
        }
        let chunk = self.pending.last_mut().expect("a pending group");
        let crc = finish_record_crc(crc, lsn, chunk.generation);
        if detached {
            chunk.buf.extend_from_slice(&record_header(payload.len(), crc));
            chunk.detached = payload.len();
        } else {
            // Reserved at once (and padding for a direct write too): a large record then
            // costs one allocation at most, not a doubling copy per power of two.
            let need = chunk.buf.len() + frame as usize;
            chunk.buf.reserve(need.next_multiple_of(BLOCK) - chunk.buf.len());
            chunk.buf.extend_from_slice(&record_header(payload.len(), crc));
            chunk.buf.extend_from_slice(payload);
        }
        chunk.count += 1;
        plan.offset += frame;
        self.next_lsn += 1;
    }
}

impl Shared {
    /// Blocks until every LSN below `end` is durable, leading groups when nobody else is.
    pub(crate) fn wait_durable(&self, end: u64) -> Result<()> {
        let mut st = self.state.lock();
        loop {
            if st.durable_next >= end {
                return Ok(());
            }
            if let Some(p) = &st.poisoned {
                return Err(p.error());
            }
            if !st.leader_active && !st.pending.is_empty() {
                st = self.lead(st);
                continue;
            }
            self.waiters.wait(&mut st);
        }
    }

    /// Writes and syncs everything pending as leader. Called with the state lock held and
    /// no leader active; returns with the lock held again.
    fn lead<'a>(&'a self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        st.leader_active = true;
        // Gather: writers the last round acknowledged are about to submit again. Starting the
        // sync without them would split the writers into two alternating half-size groups.
        // A lone writer's target is met by its own record, so it never waits here.
        if st.submissions < st.gather_target && !st.closed {
            let limit = st.last_sync.min(MAX_GATHER);
            let started = Instant::now();
            while st.submissions < st.gather_target && started.elapsed() < limit {
                MutexGuard::unlocked(&mut st, std::thread::yield_now);
            }
        }
        let mut chunks = std::mem::take(&mut st.pending);
        let taken = std::mem::take(&mut st.submissions);
        let end = st.next_lsn;
        drop(st);

        let result = self.io.lock().write_groups(&mut chunks, &[], &self.view, &self.spares);
        self.finish_round(result, chunks, taken, end)
    }

    /// Appends one large record as a group of its own, written from `payload` itself rather
    /// than copied into a group buffer, if the caller can lead at once: no leader is active,
    /// nothing is pending and no returning writers are expected. The slice never leaves this
    /// call: no other thread sees it. `None` if the caller cannot lead at once; it then
    /// queues the record as usual.
    pub(crate) fn append_inline(&self, payload: &[u8], crc: u32) -> Result<Option<Lsn>> {
        let mut st = self.state.lock();
        st.check_open()?;
        if st.leader_active || !st.pending.is_empty() || st.submissions + 1 < st.gather_target {
            return Ok(None);
        }
        let lsn = st.next_lsn;
        st.push_record(payload, crc, self.config.segment_size, true);
        st.submissions += 1;
        st.leader_active = true;
        let mut chunks = std::mem::take(&mut st.pending);
        let taken = std::mem::take(&mut st.submissions);
        let end = st.next_lsn;
        drop(st);

        let result = self
            .io
            .lock()
            .write_groups(&mut chunks, payload, &self.view, &self.spares);
        let st = self.finish_round(result, chunks, taken, end);
        if st.durable_next > lsn {
            return Ok(Some(Lsn(lsn)));
        }
        Err(st.poisoned.as_ref().map_or(Error::Closed, Poison::error))
    }

    /// One real `fdatasync` of the tail, for [`Wal::sync`](crate::Wal::sync) in [`SyncMode::Buffer`],
    /// made as a leader's round: no group is written while it runs, and a failure poisons the
    /// log through `end_round`, as a failed group sync does.
    pub(crate) fn sync_as_leader(&self) -> Result<()> {
        let mut st = self.state.lock();
        while st.leader_active && st.poisoned.is_none() {
            self.waiters.wait(&mut st);
        }
        if let Some(p) = &st.poisoned {
            return Err(p.error());
        }
        st.leader_active = true;
        let end = st.durable_next;
        drop(st);

        let result = self.io.lock().sync(SyncMode::SyncData);
        let failed = result.is_err();
        let st = self.end_round(self.state.lock(), result.map(|()| end));
        match &st.poisoned {
            Some(p) if failed => Err(p.error()),
            _ => Ok(()),
        }
    }

    /// The end of a leader's round: publishes how far the log is durable (or poisons it),
    /// recycles the group buffers and wakes everyone waiting. Returns with the lock held.
    fn finish_round(
        &self,
        result: Result<Duration>,
        chunks: Vec<Chunk>,
        taken: u64,
        end: u64,
    ) -> MutexGuard<'_, State> {
        if let Ok(sync_time) = &result {
            metrics::histogram!("wit_wal_sync_seconds").record(sync_time.as_secs_f64());
            metrics::counter!("wit_wal_records_total").increment(taken);
        }
        let mut st = self.state.lock();
        if let Ok(sync_time) = &result {
            st.last_sync = *sync_time;
        }
        st.gather_target = st.submissions + taken;
        for mut c in chunks {
            let pooled: usize = st.free_buffers.iter().map(GroupBuf::capacity).sum();
            if st.free_buffers.len() < MAX_POOLED_BUFFERS && pooled + c.buf.capacity() <= MAX_POOLED_BYTES {
                c.buf.clear();
                st.free_buffers.push(c.buf);
            }
        }
        self.end_round(st, result.map(|_| end))
    }

    /// Ends any leader's round: publishes `end` as durable, or poisons the log with the
    /// round's error (for good: a failed write or sync is never retried), then wakes every
    /// waiter concerned (all of them once poisoned) and whoever leads next. Returns with the
    /// lock held.
    fn end_round<'a>(&'a self, mut st: MutexGuard<'a, State>, result: Result<u64>) -> MutexGuard<'a, State> {
        st.leader_active = false;
        match result {
            Ok(end) => st.durable_next = end,
            Err(e) => {
                st.poisoned.get_or_insert(Poison::from_error(e));
            }
        }
        let durable = st.durable_next;
        let all = st.poisoned.is_some();
        let mut ready = Vec::new();
        st.wakers.retain(|(lsn_end, w)| {
            let wake = all || *lsn_end <= durable;
            if wake {
                ready.push(w.clone());
            }
            !wake
        });
        self.waiters.notify_all();
        if !st.pending.is_empty() && (st.flush_request > durable || st.closed) {
            self.committer.notify_one();
        }
        if ready.is_empty() {
            return st;
        }
        drop(st);
        ready.into_iter().for_each(Waker::wake);
        self.state.lock()
    }

    /// The committer thread: leads groups that async waiters (or dropped handles) wait for,
    /// so no task ever blocks its runtime thread on a sync.
    pub(crate) fn run_committer(&self) {
        let mut st = self.state.lock();
        loop {
            let work = !st.leader_active
                && !st.pending.is_empty()
                && st.poisoned.is_none()
                && (st.durable_next < st.flush_request || st.closed);
            if work {
                st = self.lead(st);
            } else if st.closed && (st.pending.is_empty() || st.poisoned.is_some()) {
                return;
            } else {
                self.committer.wait(&mut st);
            }
        }
    }
}

/// A queued record or batch; tells when it is durable.
///
/// Wait for it with [`Commit::wait`] from a thread, or `.await` it from a task: both return
/// the LSNs once the records are durable. Awaiting never blocks the runtime's thread; a
/// dedicated commit thread writes and syncs for async waiters.
///
/// # Cancel safety
///
/// Dropping the handle (or the future) does not withdraw the records: they are written with
/// the next group. Only the acknowledgement is lost.
#[must_use = "a record is acknowledged only once its Commit says it is durable"]
pub struct Commit {
    pub(crate) shared: Arc<Shared>,
    pub(crate) range: LsnRange,
    pub(crate) done: bool,
}

impl Commit {
    /// The LSNs the records received.
    pub fn lsns(&self) -> LsnRange {
        self.range
    }

    /// Whether the records are durable already.
    pub fn is_durable(&self) -> bool {
        self.shared.state.lock().durable_next >= self.range.end.0
    }

    /// Blocks until the records are durable and returns their LSNs.
    ///
    /// # Errors
    ///
    /// [`Error::Poisoned`] if the write or sync that should have covered them failed.
    pub fn wait(mut self) -> Result<LsnRange> {
        self.done = true;
        self.shared.wait_durable(self.range.end.0)?;
        Ok(self.range)
    }
}

impl Future for Commit {
    type Output = Result<LsnRange>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let end = self.range.end.0;
        let mut st = self.shared.state.lock();
        if st.durable_next >= end {
            drop(st);
            self.done = true;
            return Poll::Ready(Ok(self.range));
        }
        if let Some(p) = &st.poisoned {
            let e = p.error();
            drop(st);
            self.done = true;
            return Poll::Ready(Err(e));
        }
        if !st.wakers.iter().any(|(e, w)| *e == end && w.will_wake(cx.waker())) {
            st.wakers.push((end, cx.waker().clone()));
        }
        st.flush_request = st.flush_request.max(end);
        if !st.leader_active {
            self.shared.committer.notify_one();
        }
        Poll::Pending
    }
}

impl Drop for Commit {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let end = self.range.end.0;
        let mut st = self.shared.state.lock();
        if st.durable_next < end && st.poisoned.is_none() {
            st.flush_request = st.flush_request.max(end);
            if !st.leader_active {
                self.shared.committer.notify_one();
            }
        }
    }
}

impl std::fmt::Debug for Commit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Commit").field("lsns", &self.range).finish()
    }
}
