//! The public handle: [`Wal`] opens, appends, reads, truncates, reports and closes the log.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use crate::config::{Config, SyncMode};
use crate::format::{HEADER_LEN, start_record_crc};
use crate::group::{Commit, Plan, Poison, Shared, State, View};
use crate::io::{Io, LARGE_GROUP, Spares, start_segment, take_spare};
use crate::reader::Reader;
use crate::recovery::{Recovery, recover};
use crate::segment::{self, BLOCK, Reserve, Segment};
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

/// Records at least this large are written from the appender's own slice, without a copy,
/// when the appender can write and sync at once (see `Shared::append_inline`).
const INLINE_MIN: usize = 16 << 10;

/// How long `open` retries a lock held elsewhere (see there) before reporting it.
const LOCK_PATIENCE: Duration = Duration::from_millis(500);

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
        let mut spares = Spares::new(rec.spares, rec.spare_counter);
        let (tail_file, tail, written_end, next_lsn, mut segments) = match rec.tail {
            Some(t) => {
                let mut segs = rec.sealed;
                segs.push(Arc::clone(&t.segment));
                (t.file, t.segment, t.data_end, t.next_lsn, segs)
            }
            None => {
                let generation = rec.max_generation + 1;
                let path = take_spare(dir, config.segment_size, &mut spares, None, Reserve::Zeros)?;
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
            tail_groups: 0,
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
        // A large record goes directly to the device where direct I/O is in use, from an
        // aligned group buffer: not from the caller's slice, which only the page cache takes.
        let large = record.len() as u64 >= LARGE_GROUP && self.shared.direct_io.load(Ordering::Relaxed);
        if record.len() >= INLINE_MIN && record.len() <= self.shared.config.max_record_size() && !large {
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
        let (spares, zero_filled, allocated) = {
            let s = self.shared.spares.lock();
            (s.ready.len(), s.zero_filled, s.allocated)
        };
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
            zero_filled_segments: zero_filled,
            allocated_segments: allocated,
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
            && let Ok(Ok((path, made))) = handle.join()
        {
            let mut spares = self.shared.spares.lock();
            spares.made(made);
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
    /// New segment files made since open with zeros written over them: the log's groups
    /// were small (under 1 MiB on average in the segment before), and later syncs into such
    /// a file flush data only.
    pub zero_filled_segments: u64,
    /// New segment files made since open by allocating their blocks without writing them:
    /// the groups were large, and zeros would have doubled what a growing log writes.
    /// Released segments reused as spares count in neither.
    pub allocated_segments: u64,
}
