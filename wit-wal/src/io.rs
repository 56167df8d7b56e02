//! Segment file I/O: writing groups to the tail (directly or through the page cache), syncing,
//! sealing and rotating segments, and the spare files new segments are made from.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aligned_vec::{AVec, ConstAlign};
use parking_lot::{Mutex, RwLock};

use crate::config::SyncMode;
use crate::faults::IoFaults;
use crate::format::{GROUP_HEADER_LEN, GroupHeader, HEADER_LEN, SegmentHeader, SegmentTrailer, TRAILER_LEN};
use crate::group::View;
use crate::segment::{self, BLOCK, Reserve, Sealed, Segment};
use crate::{Error, Result};

/// Zeros that pad a write to the end of its last block.
static ZEROS: [u8; BLOCK] = [0; BLOCK];

/// The largest small write (whole blocks) made with direct I/O; groups between it and
/// [`LARGE_GROUP`] go through the page cache. Measured on this project's machine
/// (`benches/benches/wal.rs`, paired workload): a 1 KiB append written directly beats the
/// page cache by 3–9% of the ceiling, while 64 KiB ones were slower directly (0.80–0.91× the
/// ceiling against 0.92–0.96× through the cache).
const MAX_DIRECT_WRITE: usize = 16 << 10;

/// From this size on a group is large: it is written with direct I/O where that is in use
/// (copying megabytes into the page cache was the slow half of a large synced write here:
/// `growing_log` in `benches/benches/wal.rs`), and a tail of such groups on average gets its
/// next spare allocated rather than zero-filled (see [`Reserve`]): below it, the extent change
/// a sync into an allocated block commits costs more than the zeros save; above it, the zeros
/// double what a growing log writes.
pub(crate) const LARGE_GROUP: u64 = 1 << 20;

/// A group's bytes, aligned in memory for direct I/O.
pub(crate) type GroupBuf = AVec<u8, ConstAlign<BLOCK>>;

/// One group: what a leader writes with one `pwrite`.
pub(crate) struct Chunk {
    /// Seal the current tail and start segment `generation` before writing this group.
    pub(crate) rotate_before: bool,
    pub(crate) generation: u64,
    pub(crate) offset: u64,
    pub(crate) first_lsn: u64,
    pub(crate) count: u32,
    /// Bytes kept at the start of `buf` for the earlier bytes of the group's first block
    /// (`offset % BLOCK` when planned for direct I/O, else 0).
    pub(crate) lead: usize,
    /// `lead` bytes, then `GROUP_HEADER_LEN` bytes reserved for the header, then the records.
    pub(crate) buf: GroupBuf,
    /// Bytes of the group's one payload that follow `buf` from the appender's own slice
    /// (see `Shared::append_inline`); 0 when the whole group is in `buf`.
    pub(crate) detached: usize,
}

pub(crate) struct Spares {
    pub(crate) ready: Vec<PathBuf>,
    pub(crate) counter: u64,
    /// New files made since open, zero-filled and allocated.
    pub(crate) zero_filled: u64,
    pub(crate) allocated: u64,
}

impl Spares {
    pub(crate) fn new(ready: Vec<PathBuf>, counter: u64) -> Self {
        Self {
            ready,
            counter,
            zero_filled: 0,
            allocated: 0,
        }
    }

    pub(crate) fn made(&mut self, reserve: Reserve) {
        match reserve {
            Reserve::Zeros => self.zero_filled += 1,
            Reserve::Allocate => self.allocated += 1,
        }
    }
}

/// A spare being made in the background: its path and how it was reserved.
pub(crate) type Making = JoinHandle<Result<(PathBuf, Reserve)>>;

/// The files the leader writes. Only a leader (or rotation during open) holds this lock.
pub(crate) struct Io {
    pub(crate) dir: PathBuf,
    pub(crate) sync_mode: SyncMode,
    pub(crate) segment_size: u64,
    pub(crate) faults: Option<Arc<IoFaults>>,
    pub(crate) tail_file: File,
    pub(crate) tail: Arc<Segment>,
    /// The tail opened a second time with `O_DIRECT`, while direct I/O is in use.
    pub(crate) direct: Option<File>,
    /// Whether new segments are opened for direct I/O (cleared once it is refused).
    pub(crate) direct_wanted: bool,
    pub(crate) direct_io: Arc<AtomicBool>,
    /// The tail's bytes from the start of the block holding `written_end` up to it: what a
    /// direct write of that block starts with.
    pub(crate) block: Box<[u8; BLOCK]>,
    pub(crate) written_end: u64,
    pub(crate) next_lsn: u64,
    pub(crate) preallocating: Option<Making>,
    /// Groups written into the tail since it started (or since open).
    pub(crate) tail_groups: u64,
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

/// A spare for the next segment: the one made in the background (`pre`), else a ready one,
/// else one made now as `reserve` says.
pub(crate) fn take_spare(
    dir: &Path,
    len: u64,
    spares: &mut Spares,
    pre: Option<Making>,
    reserve: Reserve,
) -> Result<PathBuf> {
    if let Some(handle) = pre {
        match handle.join() {
            Ok(Ok((path, made))) => {
                spares.made(made);
                spares.ready.push(path);
            }
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
        let (_, made) = segment::create_preallocated(&path, len, reserve)?;
        spares.made(made);
        return Ok(path);
    }
    Ok(spares.ready.remove(0))
}

/// Turns a spare file into segment `generation`: header, sync, rename, directory sync.
pub(crate) fn start_segment(
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
        let sized = padded <= MAX_DIRECT_WRITE || padded as u64 >= LARGE_GROUP;
        let fits = whole_blocks && detached.is_empty() && sized && start + padded as u64 <= direct_limit;
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
        self.tail_groups += 1;
        Ok(())
    }

    /// Opens the tail for direct I/O if that is wanted; gives it up where it is refused.
    pub(crate) fn open_direct(&mut self) -> Result<()> {
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

    pub(crate) fn sync(&self, mode: SyncMode) -> Result<()> {
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
    pub(crate) fn write_groups(
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
    pub(crate) fn write_checkpoint(&self) -> Result<()> {
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
        let spare = take_spare(&self.dir, self.segment_size, &mut sp, pre, self.next_reserve())?;
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
        self.tail_groups = 0;
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
        let reserve = self.next_reserve();
        self.preallocating = std::thread::Builder::new()
            .name("wit-wal-prealloc".into())
            .spawn(move || segment::create_preallocated(&path, len, reserve).map(|(_, made)| (path, made)))
            .ok();
    }

    /// How the next new spare is reserved: allocated when the tail's groups are large on
    /// average, zero-filled otherwise.
    fn next_reserve(&self) -> Reserve {
        let data = self.written_end.saturating_sub(HEADER_LEN);
        if self.tail_groups > 0 && data / self.tail_groups >= LARGE_GROUP {
            Reserve::Allocate
        } else {
            Reserve::Zeros
        }
    }
}
