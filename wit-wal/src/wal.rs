//! The log: group commit, rotation, truncation, and the commit handle.

use std::fs::File;
use std::future::Future;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aligned_vec::{AVec, ConstAlign};
use parking_lot::{Condvar, Mutex, MutexGuard, RwLock};

use crate::config::{Config, SyncMode};
use crate::faults::IoFaults;
use crate::format::{
    GROUP_HEADER_LEN, GroupHeader, HEADER_LEN, SegmentHeader, SegmentTrailer, TRAILER_LEN, finish_record_crc,
    record_frame_len, record_header, start_record_crc,
};
use crate::reader::Reader;
use crate::recovery::{Recovery, recover};
use crate::segment::{self, BLOCK, Sealed, Segment};
use crate::{Error, Lsn, LsnRange, Result};

/// A segmented write-ahead log with group commit.
///
/// `Wal` is `Send + Sync`: share it (for example in an `Arc`) between threads and tasks.
/// Appends from all of them are gathered into groups that share one write and one sync.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// use wit_wal::{Config, Lsn, Wal};
///
/// let wal = Wal::open(dir.path(), Config::default())?;
/// let lsn = wal.append(b"first")?; // returns once the record is on disk
/// let batch = wal.append_batch(&[b"second".as_slice(), b"third"])?;
/// assert_eq!(batch.start, lsn.next());
///
/// let records: Vec<_> = wal.read_from(Lsn::FIRST)?.collect::<Result<_, _>>()?;
/// assert_eq!(records.len(), 3);
/// assert_eq!(&records[2].payload[..], b"third");
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
pub struct Wal {
    shared: Arc<Shared>,
    committer: Option<JoinHandle<()>>,
    _lock: File,
}

pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    config: Config,
    state: Mutex<State>,
    /// Blocking waiters wait here for their LSNs to become durable or to lead.
    waiters: Condvar,
    /// The committer thread waits here for groups that only async waiters wait for.
    committer: Condvar,
    io: Mutex<Io>,
    pub(crate) view: RwLock<View>,
    spares: Mutex<Spares>,
    recovery: Recovery,
    /// Whether the tail is being written with direct I/O (for [`Stats::direct_io`]).
    direct_io: Arc<AtomicBool>,
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

struct State {
    next_lsn: u64,
    durable_next: u64,
    /// Framed groups waiting for a leader, in LSN order.
    pending: Vec<Chunk>,
    leader_active: bool,
    /// The committer leads until `durable_next` reaches this.
    flush_request: u64,
    wakers: Vec<(u64, Waker)>,
    poisoned: Option<Poison>,
    closed: bool,
    plan: Plan,
    /// Whether a new group keeps room in front for the earlier bytes of its first block,
    /// so that it can be written directly as whole blocks.
    block_leads: bool,
    free_buffers: Vec<GroupBuf>,
    /// Submissions (append calls) queued since a leader last took the pending groups.
    submissions: u64,
    /// How many submissions the next group should hold: those that arrived during the last
    /// round plus those the last round acknowledged (their writers are likely coming back).
    gather_target: u64,
    /// How long the last round's sync took; a leader gathers for at most as long.
    last_sync: Duration,
}

/// Where the next framed byte will go.
struct Plan {
    generation: u64,
    next_generation: u64,
    offset: u64,
    limit: u64,
}

/// Zeros that pad a write to the end of its last block.
static ZEROS: [u8; BLOCK] = [0; BLOCK];

/// The largest write (whole blocks) made with direct I/O; larger groups go through the page
/// cache. Measured on this project's machine (`benches/benches/wal.rs`, paired workload): a
/// 1 KiB append written directly beats the page cache by 3–9% of the ceiling, while 64 KiB
/// ones were slower directly (0.80–0.91× the ceiling against 0.92–0.96× through the cache).
const MAX_DIRECT_WRITE: usize = 16 << 10;

/// Records at least this large are written from the appender's own slice, without a copy,
/// when the appender can write and sync at once (see `Shared::append_inline`).
const INLINE_MIN: usize = 16 << 10;

/// A group's bytes, aligned in memory for direct I/O.
type GroupBuf = AVec<u8, ConstAlign<BLOCK>>;

/// One group: what a leader writes with one `pwrite`.
struct Chunk {
    /// Seal the current tail and start segment `generation` before writing this group.
    rotate_before: bool,
    generation: u64,
    offset: u64,
    first_lsn: u64,
    count: u32,
    /// Bytes kept at the start of `buf` for the earlier bytes of the group's first block
    /// (`offset % BLOCK` when planned for direct I/O, else 0).
    lead: usize,
    /// `lead` bytes, then `GROUP_HEADER_LEN` bytes reserved for the header, then the records.
    buf: GroupBuf,
    /// Bytes of the group's one payload that follow `buf` from the appender's own slice
    /// (see `Shared::append_inline`); 0 when the whole group is in `buf`.
    detached: usize,
}

#[derive(Clone)]
struct Poison {
    op: &'static str,
    path: PathBuf,
    cause: Arc<std::io::Error>,
}

impl Poison {
    fn error(&self) -> Error {
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

struct Spares {
    ready: Vec<PathBuf>,
    counter: u64,
}

/// The files the leader writes. Only a leader (or rotation during open) holds this lock.
struct Io {
    dir: PathBuf,
    sync_mode: SyncMode,
    segment_size: u64,
    faults: Option<Arc<IoFaults>>,
    tail_file: File,
    tail: Arc<Segment>,
    /// The tail opened a second time with `O_DIRECT`, while direct I/O is in use.
    direct: Option<File>,
    /// Whether new segments are opened for direct I/O (cleared once it is refused).
    direct_wanted: bool,
    direct_io: Arc<AtomicBool>,
    /// The tail's bytes from the start of the block holding `written_end` up to it: what a
    /// direct write of that block starts with.
    block: Box<[u8; BLOCK]>,
    written_end: u64,
    next_lsn: u64,
    preallocating: Option<JoinHandle<Result<PathBuf>>>,
}

const MAX_POOLED_BUFFERS: usize = 8;
/// How long `open` retries a lock held elsewhere (see there) before reporting it.
const LOCK_PATIENCE: Duration = Duration::from_millis(500);
/// The longest a leader waits for returning writers before it writes.
const MAX_GATHER: Duration = Duration::from_millis(1);
const MAX_POOLED_CAPACITY: usize = 8 << 20;

impl Wal {
    /// Opens the log in `dir`, creating the directory and a first segment if needed.
    ///
    /// Sealed segments are trusted through their checksummed trailers; only the tail segment
    /// is scanned. A torn tail (a group that was being written when the process or machine
    /// died, never acknowledged) is cut off: the segment is sealed after its last intact group
    /// and appends continue in a new segment, so the torn bytes are never read again.
    /// What recovery did is reported by [`Wal::recovery`].
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] if another `Wal` has the directory open (after retrying for half a
    /// second: a process forked by the host holds the lock until it execs); [`Error::NotAWal`] if the
    /// directory holds other files; [`Error::UnsupportedVersion`] for segments of an unknown
    /// format; [`Error::Corruption`] for damage that is not a torn tail (unless
    /// [`RecoveryMode::Salvage`](crate::RecoveryMode::Salvage)); [`Error::InvalidConfig`];
    /// [`Error::Io`].
    pub fn open(dir: &Path, config: Config) -> Result<Wal> {
        config.validate()?;
        match std::fs::metadata(dir) {
            Ok(m) if !m.is_dir() => {
                return Err(Error::NotAWal {
                    path: dir.into(),
                    reason: "not a directory".into(),
                });
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir).map_err(|e| Error::io("create WAL directory", dir, e))?;
                if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                    segment::sync_dir(parent)?;
                }
            }
            Err(e) => return Err(Error::io("open WAL directory", dir, e)),
        }
        let lock_path = dir.join(segment::LOCK_FILE);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io("create lock file", &lock_path, e))?;
        // A child process that the host forked holds a copy of every descriptor, this lock
        // file's included, until it execs or exits: a log closed just before may still look
        // locked for a moment. Try again for a short while before calling it held.
        let deadline = Instant::now() + LOCK_PATIENCE;
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(Error::Locked {
                        dir: dir.into(),
                        lock: lock_path,
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("lock", &lock_path, e)),
            }
        }

        let rec = recover(dir, &config)?;
        let mut spares = Spares {
            ready: rec.spares,
            counter: rec.spare_counter,
        };
        let (tail_file, tail, written_end, next_lsn, mut segments) = match rec.tail {
            Some(t) => {
                let mut segs = rec.sealed;
                segs.push(Arc::clone(&t.segment));
                (t.file, t.segment, t.data_end, t.next_lsn, segs)
            }
            None => {
                let generation = rec.max_generation + 1;
                let path = take_spare(dir, config.segment_size, &mut spares, None)?;
                let (file, seg) = start_segment(dir, &path, generation, rec.next_lsn, config.segment_size, None)?;
                let mut segs = rec.sealed;
                segs.push(Arc::clone(&seg));
                (file, seg, HEADER_LEN, rec.next_lsn, segs)
            }
        };
        segments.shrink_to_fit();
        let plan = Plan {
            generation: tail.generation(),
            next_generation: rec.max_generation.max(tail.generation()) + 1,
            offset: written_end,
            limit: tail.header.data_limit(),
        };
        let direct_io = Arc::new(AtomicBool::new(false));
        let mut block = Box::new([0u8; BLOCK]);
        let block_start = written_end / BLOCK as u64 * BLOCK as u64;
        block[..(written_end - block_start) as usize]
            .copy_from_slice(&tail.map[block_start as usize..written_end as usize]);
        let mut io = Io {
            dir: dir.into(),
            sync_mode: config.sync_mode,
            segment_size: config.segment_size,
            faults: config.faults.clone(),
            tail_file,
            tail,
            direct: None,
            direct_wanted: config.direct_io && config.sync_mode != SyncMode::Buffer,
            direct_io: Arc::clone(&direct_io),
            block,
            written_end,
            next_lsn,
            preallocating: None,
        };
        io.open_direct()?;
        let shared = Arc::new(Shared {
            dir: dir.into(),
            state: Mutex::new(State {
                next_lsn,
                durable_next: next_lsn,
                pending: Vec::new(),
                leader_active: false,
                flush_request: 0,
                wakers: Vec::new(),
                poisoned: None,
                closed: false,
                plan,
                block_leads: io.direct.is_some(),
                free_buffers: Vec::new(),
                submissions: 0,
                gather_target: 0,
                last_sync: Duration::ZERO,
            }),
            waiters: Condvar::new(),
            committer: Condvar::new(),
            io: Mutex::new(io),
            view: RwLock::new(View {
                segments,
                durable_next: next_lsn,
                tail_end: written_end,
            }),
            spares: Mutex::new(spares),
            recovery: rec.report,
            direct_io,
            config,
        });
        let committer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("wit-wal-commit".into())
                .spawn(move || shared.run_committer())
                .map_err(|e| Error::io("start commit thread", dir, e))?
        };
        Ok(Wal {
            shared,
            committer: Some(committer),
            _lock: lock,
        })
    }

    /// Appends one record and returns its LSN once it is durable under the configured
    /// [`SyncMode`].
    ///
    /// Concurrent appenders share writes and syncs: the first one to find no sync in progress
    /// writes and syncs everything queued so far; the others wait for it, and the next group
    /// forms while it runs.
    ///
    /// # Errors
    ///
    /// [`Error::RecordTooLarge`]; [`Error::Poisoned`] if a write or sync failed (now or
    /// earlier); [`Error::Closed`].
    pub fn append(&self, record: &[u8]) -> Result<Lsn> {
        if record.len() >= INLINE_MIN && record.len() <= self.shared.config.max_record_size() {
            let crc = start_record_crc(record);
            if let Some(lsn) = self.shared.append_inline(record, crc)? {
                return Ok(lsn);
            }
        }
        Ok(self.submit(record)?.wait()?.start)
    }

    /// Appends records as one group and returns their LSNs once all are durable.
    ///
    /// The records get consecutive LSNs. After a crash before this returns, a prefix of them
    /// may survive; once it returns, all of them do.
    ///
    /// # Errors
    ///
    /// As [`Wal::append`]; a record that is too large fails the whole call before anything
    /// is appended.
    pub fn append_batch<R: AsRef<[u8]>>(&self, records: &[R]) -> Result<LsnRange> {
        self.submit_batch(records)?.wait()
    }

    /// Queues one record and returns a [`Commit`] handle without waiting for durability.
    ///
    /// The record is not acknowledged until the handle says so: `commit.wait()` blocks,
    /// `commit.await` suspends the task without blocking its thread. Dropping the handle
    /// does not cancel the record; it is written with the next group.
    ///
    /// # Errors
    ///
    /// [`Error::RecordTooLarge`], [`Error::Poisoned`], [`Error::Closed`].
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let wal = wit_wal::Wal::open(dir.path(), wit_wal::Config::default())?;
    /// let a = wal.submit(b"a")?;
    /// let b = wal.submit(b"b")?;
    /// assert_eq!(b.wait()?.start, a.lsns().end); // one sync covers both
    /// assert!(a.is_durable());
    /// # Ok::<_, wit_wal::Error>(())
    /// ```
    pub fn submit(&self, record: &[u8]) -> Result<Commit> {
        self.submit_batch(std::slice::from_ref(&record))
    }

    /// Queues records as one group; see [`Wal::submit`].
    ///
    /// # Errors
    ///
    /// As [`Wal::submit`].
    pub fn submit_batch<R: AsRef<[u8]>>(&self, records: &[R]) -> Result<Commit> {
        let max = self.shared.config.max_record_size();
        for r in records {
            let len = r.as_ref().len();
            if len > max {
                return Err(Error::RecordTooLarge { len, max });
            }
        }
        // Checksum the payloads before taking the lock; only LSN and generation are added under it.
        let crcs: Vec<u32> = records.iter().map(|r| start_record_crc(r.as_ref())).collect();
        let mut st = self.shared.state.lock();
        st.check_open()?;
        let start = st.next_lsn;
        for (r, crc) in records.iter().zip(crcs) {
            st.push_record(r.as_ref(), crc, self.shared.config.segment_size, false);
        }
        st.submissions += 1;
        let range = LsnRange {
            start: Lsn(start),
            end: Lsn(st.next_lsn),
        };
        Ok(Commit {
            shared: Arc::clone(&self.shared),
            range,
            done: false,
        })
    }

    /// Makes every record queued so far durable, with a real `fdatasync` even in
    /// [`SyncMode::Buffer`].
    ///
    /// A failed `fdatasync` poisons the log exactly as a failed group sync does: it is never
    /// retried, since a retry can succeed for pages the kernel has already dropped.
    ///
    /// # Errors
    ///
    /// [`Error::Poisoned`] if a write or sync failed (now or earlier).
    pub fn sync(&self) -> Result<()> {
        let end = {
            let st = self.shared.state.lock();
            if let Some(p) = &st.poisoned {
                return Err(p.error());
            }
            st.next_lsn
        };
        self.shared.wait_durable(end)?;
        if self.shared.config.sync_mode == SyncMode::Buffer {
            self.shared.sync_as_leader()?;
        }
        Ok(())
    }

    /// Reads durable records in LSN order, starting at `lsn`.
    ///
    /// The reader yields what is durable when it gets there and returns `None` once it has
    /// caught up; calling `next` again later yields records appended since. Sealed and tail
    /// segments are read through memory maps; payloads are zero-copy slices of them. Every
    /// record's checksum is verified.
    ///
    /// # Errors
    ///
    /// [`Error::LsnOutOfRange`] if `lsn` is below the first retained record or beyond the
    /// next LSN to be written. The reader itself yields [`Error::Corruption`] for a record
    /// that fails its checks, and then stops.
    pub fn read_from(&self, lsn: Lsn) -> Result<Reader> {
        Reader::new(Arc::clone(&self.shared), lsn.0)
    }

    /// Releases every whole segment whose records all lie below `lsn`, durably.
    ///
    /// The tail segment is never released, and records at or above `lsn` never are. Some
    /// records below `lsn` may remain (those sharing a segment with later ones). Released
    /// files are kept for reuse as spare segments when no reader still maps them, and deleted
    /// otherwise. The directory is synced after each file, oldest first, so a crash in the
    /// middle leaves a contiguous log.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if a file cannot be renamed or removed; the log stays usable.
    pub fn truncate_before(&self, lsn: Lsn) -> Result<()> {
        let released: Vec<Arc<Segment>> = {
            let mut view = self.shared.view.write();
            let n = view
                .segments
                .iter()
                .take(view.segments.len().saturating_sub(1))
                .take_while(|s| s.sealed.get().is_some_and(|sealed| sealed.next_lsn <= lsn.0))
                .count();
            view.segments.drain(..n).collect()
        };
        let dir = &self.shared.dir;
        for seg in released {
            let reusable = Segment::is_unreferenced(&seg) && seg.header.segment_len == self.shared.config.segment_size;
            let path = seg.path.clone();
            drop(seg);
            let mut spares = self.shared.spares.lock();
            if reusable && spares.ready.len() < self.shared.config.max_spare_segments {
                let to = segment::spare_path(dir, spares.counter);
                spares.counter += 1;
                std::fs::rename(&path, &to).map_err(|e| Error::io("recycle segment", &path, e))?;
                segment::sync_dir(dir)?;
                spares.ready.push(to);
            } else {
                drop(spares);
                std::fs::remove_file(&path).map_err(|e| Error::io("remove segment", &path, e))?;
                segment::sync_dir(dir)?;
            }
        }
        Ok(())
    }

    /// Current figures of the log.
    pub fn stats(&self) -> Stats {
        // Lock order everywhere: io, then spares, then view.
        let spares = self.shared.spares.lock().ready.len();
        let view = self.shared.view.read();
        let first = view.segments.first().map_or(view.durable_next, |s| s.first_lsn());
        Stats {
            first_lsn: (first < view.durable_next).then_some(Lsn(first)),
            last_lsn: (first < view.durable_next).then(|| Lsn(view.durable_next - 1)),
            next_lsn: Lsn(view.durable_next),
            segment_count: view.segments.len(),
            spare_segments: spares,
            bytes_on_disk: view.segments.iter().map(|s| s.header.segment_len).sum::<u64>()
                + spares as u64 * self.shared.config.segment_size,
            direct_io: self.shared.direct_io.load(Ordering::Relaxed),
        }
    }

    /// What recovery found and did when this log was opened.
    pub fn recovery(&self) -> &Recovery {
        &self.shared.recovery
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Makes everything queued durable, stops the background threads and releases the lock.
    ///
    /// Dropping a `Wal` does the same but cannot report an error.
    ///
    /// # Errors
    ///
    /// [`Error::Poisoned`] if queued records could not be made durable.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        let Some(committer) = self.committer.take() else {
            return Ok(());
        };
        let end = self.shared.state.lock().next_lsn;
        let flushed = self.shared.wait_durable(end);
        {
            let mut st = self.shared.state.lock();
            st.closed = true;
            self.shared.committer.notify_all();
            self.shared.waiters.notify_all();
            drop(st.wakers.drain(..).collect::<Vec<_>>());
        }
        let _ = committer.join();
        let mut io = self.shared.io.lock();
        let checkpoint = match &flushed {
            Ok(()) => io.write_checkpoint(),
            Err(_) => Ok(()),
        };
        if let Some(handle) = io.preallocating.take()
            && let Ok(Ok(path)) = handle.join()
        {
            let mut spares = self.shared.spares.lock();
            if spares.ready.len() < self.shared.config.max_spare_segments {
                spares.ready.push(path);
            } else {
                let _ = std::fs::remove_file(&path);
            }
        }
        flushed.and(checkpoint)
    }

    /// Stops the log as a crash would: nothing queued is written, nothing is synced.
    #[doc(hidden)]
    pub fn crash(mut self) {
        {
            let mut st = self.shared.state.lock();
            st.pending.clear();
            st.closed = true;
            st.poisoned.get_or_insert(Poison {
                op: "crash",
                path: self.shared.dir.clone(),
                cause: Arc::new(std::io::Error::other("simulated crash")),
            });
            self.shared.committer.notify_all();
            self.shared.waiters.notify_all();
        }
        if let Some(c) = self.committer.take() {
            let _ = c.join();
        }
        if let Some(h) = self.shared.io.lock().preallocating.take() {
            let _ = h.join();
        }
    }

    /// The tail segment's path, its durable end and how far it has been written.
    #[doc(hidden)]
    pub fn tail_extent(&self) -> (PathBuf, u64, u64) {
        let io = self.shared.io.lock();
        let view = self.shared.view.read();
        (io.tail.path.clone(), view.tail_end, io.written_end)
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.shared.dir)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Figures of a log, from [`Wal::stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// The first retained record, if any.
    pub first_lsn: Option<Lsn>,
    /// The last durable record, if any.
    pub last_lsn: Option<Lsn>,
    /// The LSN after the last durable record.
    pub next_lsn: Lsn,
    /// Segment files holding the log.
    pub segment_count: usize,
    /// Preallocated files kept for reuse.
    pub spare_segments: usize,
    /// Bytes of segment and spare files (they are preallocated in full).
    pub bytes_on_disk: u64,
    /// Whether groups are being written with direct I/O (see [`Config::with_direct_io`]).
    pub direct_io: bool,
}

impl State {
    fn check_open(&self) -> Result<()> {
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
    fn push_record(&mut self, payload: &[u8], crc: u32, segment_size: u64, detached: bool) {
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
        chunk.buf.extend_from_slice(&record_header(payload.len(), crc));
        if detached {
            chunk.detached = payload.len();
        } else {
            chunk.buf.extend_from_slice(payload);
        }
        chunk.count += 1;
        plan.offset += frame;
        self.next_lsn += 1;
    }
}

impl Shared {
    /// Blocks until every LSN below `end` is durable, leading groups when nobody else is.
    fn wait_durable(&self, end: u64) -> Result<()> {
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
    fn append_inline(&self, payload: &[u8], crc: u32) -> Result<Option<Lsn>> {
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

    /// One real `fdatasync` of the tail, for [`Wal::sync`] in [`SyncMode::Buffer`], made as a
    /// leader's round: no group is written while it runs, and a failure poisons the log
    /// through `end_round`, as a failed group sync does.
    fn sync_as_leader(&self) -> Result<()> {
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
            if st.free_buffers.len() < MAX_POOLED_BUFFERS && c.buf.capacity() <= MAX_POOLED_CAPACITY {
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
    fn run_committer(&self) {
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

/// `pwritev` of all of `parts` at `offset`, checking every write's length: short writes
/// continue where they stopped, a write of zero bytes is an error.
fn write_all_vectored_at(file: &File, parts: &[&[u8]], mut offset: u64) -> std::io::Result<()> {
    if let [one] | [one, []] | [one, [], []] = parts {
        return file.write_all_at(one, offset);
    }
    let mut parts: Vec<&[u8]> = parts.iter().copied().filter(|p| !p.is_empty()).collect();
    let mut first = 0;
    while first < parts.len() {
        let slices: Vec<std::io::IoSlice<'_>> = parts[first..].iter().map(|p| std::io::IoSlice::new(p)).collect();
        let mut n = match rustix::io::pwritev(file, &slices, offset) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e == rustix::io::Errno::INTR => continue,
            Err(e) => return Err(e.into()),
        };
        offset += n as u64;
        while n > 0 {
            let p = &mut parts[first];
            let step = n.min(p.len());
            *p = &p[step..];
            n -= step;
            if p.is_empty() {
                first += 1;
            }
        }
    }
    Ok(())
}

fn take_spare(dir: &Path, len: u64, spares: &mut Spares, pre: Option<JoinHandle<Result<PathBuf>>>) -> Result<PathBuf> {
    if let Some(handle) = pre {
        match handle.join() {
            Ok(Ok(path)) => spares.ready.push(path),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(Error::io(
                    "preallocate segment",
                    dir,
                    std::io::Error::other("preallocation thread panicked"),
                ));
            }
        }
    }
    if spares.ready.is_empty() {
        let path = segment::spare_path(dir, spares.counter);
        spares.counter += 1;
        segment::create_preallocated(&path, len)?;
        return Ok(path);
    }
    Ok(spares.ready.remove(0))
}

/// Turns a spare file into segment `generation`: header, sync, rename, directory sync.
fn start_segment(
    dir: &Path,
    spare: &Path,
    generation: u64,
    first_lsn: u64,
    segment_len: u64,
    faults: Option<&IoFaults>,
) -> Result<(File, Arc<Segment>)> {
    let file = segment::open_rw(spare)?;
    let header = SegmentHeader {
        generation,
        first_lsn,
        segment_len,
    };
    if let Some(f) = faults {
        f.write().map_err(|e| Error::io("write segment header", spare, e))?;
    }
    // The rest of the first block as zeros (short of the trailer slot of a one-block
    // segment), so that the write need not read the block in first (see `Io::write_group`).
    let pad = (BLOCK as u64).min(segment_len - TRAILER_LEN) - HEADER_LEN;
    write_all_vectored_at(&file, &[&header.encode(), &ZEROS[..pad as usize]], 0)
        .map_err(|e| Error::io("write segment header", spare, e))?;
    if let Some(f) = faults {
        f.sync().map_err(|e| Error::io("sync segment header", spare, e))?;
    }
    file.sync_data()
        .map_err(|e| Error::io("sync segment header", spare, e))?;
    let path = segment::segment_path(dir, generation);
    std::fs::rename(spare, &path).map_err(|e| Error::io("rename spare segment", spare, e))?;
    segment::sync_dir(dir)?;
    let map = segment::map(&file, &path)?;
    Ok((file, Segment::new(path, header, map, None)))
}

impl Io {
    /// Writes `parts`, one after another, at `offset` through the page cache.
    fn write_at(&self, parts: &[&[u8]], offset: u64) -> Result<()> {
        if let Some(f) = &self.faults {
            f.write().map_err(|e| Error::io("write", &self.tail.path, e))?;
        }
        write_all_vectored_at(&self.tail_file, parts, offset).map_err(|e| Error::io("write", &self.tail.path, e))
    }

    /// Writes one group at `written_end`: directly as whole blocks where it can, else
    /// through the page cache.
    fn write_group(&mut self, c: &mut Chunk, detached: &[u8]) -> Result<()> {
        let lead = c.lead;
        let len = c.buf.len();
        let header = GroupHeader {
            count: c.count,
            first_lsn: c.first_lsn,
            bytes: (len - lead - GROUP_HEADER_LEN + detached.len()) as u32,
        };
        c.buf[lead..lead + GROUP_HEADER_LEN].copy_from_slice(&header.encode(c.generation));
        // `start` is block-aligned when the group was planned with its block's earlier bytes.
        let start = c.offset - lead as u64;
        let end = start + (len + detached.len()) as u64;
        let whole_blocks = start.is_multiple_of(BLOCK as u64);
        if whole_blocks {
            c.buf[..lead].copy_from_slice(&self.block[..lead]);
        }
        let padded = len.next_multiple_of(BLOCK);
        // The block holding the trailer slot is only ever written through the page cache:
        // zeros written over a clean close's checkpoint would take its evidence away.
        let direct_limit = (self.tail.header.segment_len - TRAILER_LEN) / BLOCK as u64 * BLOCK as u64;
        let mut written = false;
        let fits =
            whole_blocks && detached.is_empty() && padded <= MAX_DIRECT_WRITE && start + padded as u64 <= direct_limit;
        if let Some(direct) = self.direct.as_ref().filter(|_| fits) {
            // The zeros after the group cover only bytes past the log's end: zeros already,
            // or bytes of the file's earlier use, which recovery never takes for records.
            c.buf.resize(padded, 0);
            let r = match &self.faults {
                Some(f) => f.direct_write(),
                None => Ok(()),
            }
            .and_then(|()| direct.write_all_at(&c.buf, start));
            c.buf.truncate(len);
            match r {
                Ok(()) => written = true,
                // Refused (an alignment this device does not take): nothing was written.
                // Carry on through the page cache, now and for good.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.stop_direct(),
                Err(e) => return Err(Error::io("write", &self.tail.path, e)),
            }
        }
        if !written {
            // A block that a write covers only in part must first be read in unless the page
            // cache holds it, and a spare zero-filled with direct I/O (or a recycled one whose
            // pages were evicted) has none of its blocks there. So a group that reaches into a
            // block no earlier write touched fills the rest of that block with zeros (bytes
            // past the log's end), stopping short of the trailer slot.
            let last_block = (end - 1) / BLOCK as u64 * BLOCK as u64;
            let pad = if last_block >= c.offset {
                let slot = self.tail.header.segment_len - TRAILER_LEN;
                (last_block + BLOCK as u64).min(slot).saturating_sub(end) as usize
            } else {
                0
            };
            self.write_at(&[&c.buf[lead..], detached, &ZEROS[..pad]], c.offset)?;
        }
        if whole_blocks {
            // The block holding the end: its bytes from `buf`, then from `detached`.
            let keep = (end % BLOCK as u64) as usize;
            let from_detached = keep.min(detached.len());
            let from_buf = keep - from_detached;
            self.block[..from_buf].copy_from_slice(&c.buf[len - from_buf..]);
            self.block[from_buf..keep].copy_from_slice(&detached[detached.len() - from_detached..]);
        }
        self.written_end = end;
        self.next_lsn = c.first_lsn + c.count as u64;
        Ok(())
    }

    /// Opens the tail for direct I/O if that is wanted; gives it up where it is refused.
    fn open_direct(&mut self) -> Result<()> {
        self.direct = None;
        if self.direct_wanted {
            self.direct = segment::open_direct(&self.tail.path)?;
            if self.direct.is_none() {
                self.stop_direct();
            }
        }
        self.direct_io.store(self.direct.is_some(), Ordering::Relaxed);
        Ok(())
    }

    fn stop_direct(&mut self) {
        self.direct = None;
        self.direct_wanted = false;
        self.direct_io.store(false, Ordering::Relaxed);
    }

    fn sync(&self, mode: SyncMode) -> Result<()> {
        if let Some(f) = &self.faults {
            f.sync().map_err(|e| Error::io("sync", &self.tail.path, e))?;
        }
        let r = match mode {
            SyncMode::SyncData => self.tail_file.sync_data(),
            SyncMode::SyncAll => self.tail_file.sync_all(),
            SyncMode::Buffer => Ok(()),
        };
        r.map_err(|e| Error::io("sync", &self.tail.path, e))
    }

    /// Writes the groups (rotating where planned) and syncs, then publishes the new end.
    /// Returns how long the final sync took.
    /// `detached` is the payload that follows the last group's buffer (see `Chunk::detached`).
    fn write_groups(
        &mut self,
        chunks: &mut [Chunk],
        detached: &[u8],
        view: &RwLock<View>,
        spares: &Mutex<Spares>,
    ) -> Result<Duration> {
        let last = chunks.len().saturating_sub(1);
        for (i, c) in chunks.iter_mut().enumerate() {
            if c.rotate_before {
                self.rotate(c.generation, c.first_lsn, view, spares)?;
            }
            debug_assert_eq!(c.generation, self.tail.generation());
            debug_assert_eq!(c.offset, self.written_end);
            let detached = if i == last { detached } else { &[] };
            debug_assert_eq!(c.detached, detached.len());
            self.write_group(c, detached)?;
        }
        let sync_started = Instant::now();
        self.sync(self.sync_mode)?;
        let sync_time = sync_started.elapsed();
        {
            let mut v = view.write();
            v.durable_next = self.next_lsn;
            v.tail_end = self.written_end;
        }
        // Have the next segment ready before this one fills up.
        if self.preallocating.is_none() && self.written_end > self.tail.header.segment_len / 4 {
            self.ensure_spare(&mut spares.lock());
        }
        Ok(sync_time)
    }

    /// The tail's trailer as of now: a seal, or a clean close's checkpoint.
    fn tail_trailer(&self, sealed: bool) -> SegmentTrailer {
        let h = self.tail.header;
        SegmentTrailer {
            generation: h.generation,
            first_lsn: h.first_lsn,
            next_lsn: self.next_lsn,
            data_end: self.written_end,
            sealed,
        }
    }

    /// Records, in the tail's trailer slot, that its data through the current end is durable
    /// (a clean close): a later scan that stops short of it has found damage, not a torn tail.
    fn write_checkpoint(&self) -> Result<()> {
        self.tail_file
            .write_all_at(
                &self.tail_trailer(false).encode(),
                self.tail.header.segment_len - TRAILER_LEN,
            )
            .and_then(|()| self.tail_file.sync_data())
            .map_err(|e| Error::io("write checkpoint", &self.tail.path, e))
    }

    /// Seals the tail with its trailer and starts segment `generation` at `first_lsn`.
    fn rotate(&mut self, generation: u64, first_lsn: u64, view: &RwLock<View>, spares: &Mutex<Spares>) -> Result<()> {
        let h = self.tail.header;
        let trailer = self.tail_trailer(true);
        // Always real syncs, whatever the mode. First the data: a trailer must never be
        // durable while the groups it vouches for are not. Then the trailer: a later segment
        // must never exist beside an unsealed one.
        let mode = if self.sync_mode == SyncMode::SyncAll {
            SyncMode::SyncAll
        } else {
            SyncMode::SyncData
        };
        self.sync(mode)?;
        self.write_at(&[&trailer.encode()], h.segment_len - TRAILER_LEN)?;
        self.sync(mode)?;

        let mut sp = spares.lock();
        let pre = if sp.ready.is_empty() {
            self.preallocating.take()
        } else {
            None
        };
        let spare = take_spare(&self.dir, self.segment_size, &mut sp, pre)?;
        let (file, seg) = start_segment(
            &self.dir,
            &spare,
            generation,
            first_lsn,
            self.segment_size,
            self.faults.as_deref(),
        )?;
        {
            let mut v = view.write();
            let _ = self.tail.sealed.set(Sealed {
                next_lsn: self.next_lsn,
                data_end: self.written_end,
            });
            v.segments.push(Arc::clone(&seg));
            v.durable_next = self.next_lsn;
            v.tail_end = HEADER_LEN;
        }
        self.tail_file = file;
        self.tail = seg;
        self.written_end = HEADER_LEN;
        self.block[..HEADER_LEN as usize].copy_from_slice(&self.tail.header.encode());
        self.open_direct()
    }

    /// Starts preallocating the next spare in the background if none is ready.
    fn ensure_spare(&mut self, spares: &mut Spares) {
        if !spares.ready.is_empty() || self.preallocating.is_some() {
            return;
        }
        let path = segment::spare_path(&self.dir, spares.counter);
        spares.counter += 1;
        let len = self.segment_size;
        self.preallocating = std::thread::Builder::new()
            .name("wit-wal-prealloc".into())
            .spawn(move || segment::create_preallocated(&path, len).map(|_| path))
            .ok();
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
    shared: Arc<Shared>,
    range: LsnRange,
    done: bool,
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
