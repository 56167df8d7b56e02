//! Segment files on disk: naming, listing, preallocation, header/trailer I/O, and the
//! memory-mapped view readers share.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use aligned_vec::{AVec, ConstAlign};
use memmap2::Mmap;

use crate::format::{HEADER_LEN, SegmentHeader, SegmentTrailer, TRAILER_LEN};
use crate::{Error, Result};

/// The unit of direct I/O: offsets, lengths and buffer addresses are multiples of it.
pub(crate) const BLOCK: usize = 4096;

pub(crate) const LOCK_FILE: &str = "wit-wal.lock";
const SEGMENT_EXT: &str = ".wal";
const SPARE_EXT: &str = ".spare";
const TMP_EXT: &str = ".tmp";
pub(crate) const CORRUPT_EXT: &str = ".wal.corrupt";

pub(crate) fn segment_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("{generation:020}{SEGMENT_EXT}"))
}

pub(crate) fn spare_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:020}{SPARE_EXT}"))
}

/// What a WAL directory holds.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// Segments by generation, ascending.
    pub(crate) segments: Vec<(u64, PathBuf)>,
    pub(crate) spares: Vec<PathBuf>,
    pub(crate) temporaries: Vec<PathBuf>,
    pub(crate) set_aside: Vec<PathBuf>,
}

fn parse_generation(name: &str, ext: &str) -> Option<u64> {
    let digits = name.strip_suffix(ext)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Lists `dir`, refusing anything that is not part of a WAL.
pub(crate) fn list_dir(dir: &Path) -> Result<Listing> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("read WAL directory", dir, e))?;
    let mut listing = Listing::default();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read WAL directory", dir, e))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            return Err(Error::NotAWal {
                path: dir.into(),
                reason: format!("unexpected file {path:?}"),
            });
        };
        if name == LOCK_FILE {
            continue;
        } else if let Some(g) = parse_generation(&name, SEGMENT_EXT) {
            listing.segments.push((g, path));
        } else if parse_generation(&name, SPARE_EXT).is_some() {
            listing.spares.push(path);
        } else if name.ends_with(TMP_EXT) && parse_generation(name.trim_end_matches(TMP_EXT), SPARE_EXT).is_some() {
            listing.temporaries.push(path);
        } else if parse_generation(&name, CORRUPT_EXT).is_some() {
            listing.set_aside.push(path);
        } else {
            return Err(Error::NotAWal {
                path: dir.into(),
                reason: format!("unexpected file `{name}`"),
            });
        }
    }
    listing.segments.sort();
    listing.spares.sort();
    Ok(listing)
}

/// Makes renames, creations and deletions in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("sync directory", dir, e))
}

/// How many zeros a preallocation writes at a time with direct I/O.
const PREALLOCATION_STEP: usize = 256 << 10;
/// How many zeros a buffered preallocation (where direct I/O is refused) writes between syncs.
const BUFFERED_PREALLOCATION_STEP: usize = 4 << 20;

/// How a new segment file's blocks are reserved before the log writes into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reserve {
    /// Zeros written over the whole file: the log's later `fdatasync`s never change its
    /// extents, so each sync flushes data only. Right for small groups, whose syncs would
    /// otherwise each commit an extent change as well; but the file is written twice.
    Zeros,
    /// The blocks allocated with `fallocate` and left unwritten (they read as zeros): the
    /// file is written once, and the first sync over each unwritten range also commits its
    /// conversion to written. Right for large groups, where that commit is small beside the
    /// megabytes the sync flushes, and where writing zeros first would halve the log's rate
    /// while it grows. Zeros where the file system has no `fallocate`.
    Allocate,
}

/// Creates a file of `len` bytes reading as zeros, reserved as `reserve` says, under a
/// temporary name; syncs it and renames it to `path`. Returns the file and how it was
/// reserved in the end ([`Reserve::Zeros`] where allocation is refused).
///
/// Zeros are written with direct I/O where the file system takes it, 256 KiB at a time:
/// each write reaches the device before the next one starts, so the log's own syncs never
/// queue behind more than one step of zeros, and the file leaves no dirty pages behind that
/// a journal commit (any directory sync) would first have to write out. Elsewhere they go
/// through the page cache, synced every 4 MiB.
pub(crate) fn create_preallocated(path: &Path, len: u64, reserve: Reserve) -> Result<(File, Reserve)> {
    let tmp = path.with_extension(format!(
        "{}{TMP_EXT}",
        path.extension().and_then(|e| e.to_str()).unwrap_or_default()
    ));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| Error::io("create segment", &tmp, e))?;
    let allocated = reserve == Reserve::Allocate && allocate(&file, &tmp, len)?;
    if !allocated {
        let direct_end = match open_direct(&tmp)? {
            Some(direct) => zero_fill_direct(&direct, &tmp, len)?,
            None => 0,
        };
        zero_fill_buffered(&file, &tmp, direct_end, len)?;
    }
    file.sync_all().map_err(|e| Error::io("sync segment", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("rename segment", &tmp, e))?;
    Ok((file, if allocated { Reserve::Allocate } else { Reserve::Zeros }))
}

/// Allocates the first `len` bytes of an empty file without writing them. `false` where the
/// file system (or the system) does not allocate that way.
fn allocate(file: &File, path: &Path, len: u64) -> Result<bool> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use rustix::fs::{FallocateFlags, fallocate};
        use rustix::io::Errno;
        match fallocate(file, FallocateFlags::empty(), 0, len) {
            Ok(()) => Ok(true),
            Err(e) if e == Errno::OPNOTSUPP || e == Errno::NOSYS || e == Errno::INVAL => {
                // Nothing was allocated (EINVAL: a file system that takes no such request);
                // the caller writes zeros instead.
                Ok(false)
            }
            Err(e) => Err(Error::io("allocate segment", path, e.into())),
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = (file, path, len);
        Ok(false)
    }
}

/// Writes zeros over the whole blocks of the first `len` bytes through `direct`, a
/// descriptor opened with `O_DIRECT`. Returns how far it got: short of `len` by the last
/// partial block, or at the first write the file system refuses (`EINVAL`).
fn zero_fill_direct(direct: &File, path: &Path, len: u64) -> Result<u64> {
    let mut zeros: AVec<u8, ConstAlign<BLOCK>> = AVec::new(BLOCK);
    zeros.resize(PREALLOCATION_STEP, 0);
    let whole = len / BLOCK as u64 * BLOCK as u64;
    let mut offset = 0;
    while offset < whole {
        let n = (whole - offset).min(PREALLOCATION_STEP as u64) as usize;
        match direct.write_all_at(&zeros[..n], offset) {
            Ok(()) => offset += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
            Err(e) => return Err(Error::io("preallocate segment", path, e)),
        }
    }
    Ok(offset)
}

/// Writes zeros from `from` up to `len` through the page cache, syncing every few MiB.
fn zero_fill_buffered(file: &File, path: &Path, from: u64, len: u64) -> Result<()> {
    let zeros = vec![0u8; 1 << 20];
    let mut offset = from;
    let mut unsynced = 0;
    while offset < len {
        let n = (len - offset).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], offset)
            .map_err(|e| Error::io("preallocate segment", path, e))?;
        offset += n as u64;
        // Written back a few MiB at a time: a sync of the whole file at the end would queue
        // all of it on the device at once, ahead of the log's own (small, waited-for) writes.
        unsynced += n;
        if unsynced >= BUFFERED_PREALLOCATION_STEP && offset < len {
            file.sync_data().map_err(|e| Error::io("sync segment", path, e))?;
            unsynced = 0;
        }
    }
    Ok(())
}

pub(crate) fn open_rw(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io("open segment", path, e))
}

/// Opens `path` a second time for direct I/O (`O_DIRECT`), or `None` where the file system
/// (or the system) does not offer it.
pub(crate) fn open_direct(path: &Path) -> Result<Option<File>> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        match OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(path) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
            Err(e) => Err(Error::io("open segment for direct I/O", path, e)),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        Ok(None)
    }
}

/// Maps a whole file read-only.
pub(crate) fn map(file: &File, path: &Path) -> Result<Arc<Mmap>> {
    // SAFETY: segment files are private to the WAL directory, which the lock file reserves for
    // one `Wal`. Bytes are only read below the durable end, and bytes there never change
    // while a map of the file exists: a released segment is reused only once no map of it is
    // alive (see `Segment::is_unreferenced`), and a direct write of the tail's partly filled
    // block rewrites the durable bytes at its start with the very same bytes. Read-only
    // inspection of a live log is documented as racy, like any reader of another process's
    // files.
    #[allow(unsafe_code)]
    let map = unsafe { Mmap::map(file) }.map_err(|e| Error::io("map segment", path, e))?;
    Ok(Arc::new(map))
}

/// Reads and checks the header of a segment file.
pub(crate) fn read_header(file: &File, path: &Path) -> Result<SegmentHeader> {
    use crate::format::HeaderError;
    let mut buf = [0u8; HEADER_LEN as usize];
    let n = read_up_to(file, &mut buf, 0).map_err(|e| Error::io("read segment header", path, e))?;
    let header = SegmentHeader::decode(&buf[..n]).map_err(|e| match e {
        HeaderError::TooShort(n) => Error::corruption(
            path,
            0,
            None,
            format!("file of {n} bytes is too short for a segment header"),
        ),
        HeaderError::BadMagic => Error::NotAWal {
            path: path.into(),
            reason: "no WAL segment header (bad magic)".into(),
        },
        HeaderError::UnknownVersion(found) => Error::UnsupportedVersion {
            path: path.into(),
            found,
            supported: crate::format::FORMAT_VERSION,
        },
        HeaderError::Checksum { stored, computed } => Error::corruption(
            path,
            0,
            None,
            format!("segment header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"),
        ),
    })?;
    if !(crate::config::MIN_SEGMENT_SIZE..=crate::config::MAX_SEGMENT_SIZE).contains(&header.segment_len) {
        return Err(Error::corruption(
            path,
            32,
            None,
            format!("implausible segment length {}", header.segment_len),
        ));
    }
    Ok(header)
}

/// Reads the trailer of a segment, if it carries a valid one for its header.
pub(crate) fn read_trailer(file: &File, path: &Path, header: &SegmentHeader) -> Result<Option<SegmentTrailer>> {
    let mut buf = [0u8; TRAILER_LEN as usize];
    let n = read_up_to(file, &mut buf, header.segment_len - TRAILER_LEN)
        .map_err(|e| Error::io("read segment trailer", path, e))?;
    Ok(SegmentTrailer::decode(&buf[..n], header))
}

fn read_up_to(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Where a sealed segment's data ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sealed {
    pub(crate) next_lsn: u64,
    pub(crate) data_end: u64,
}

/// One segment as readers see it.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) path: PathBuf,
    pub(crate) header: SegmentHeader,
    pub(crate) map: Arc<Mmap>,
    /// Set once the segment is sealed; the tail's extent lives in the WAL's view instead.
    pub(crate) sealed: OnceLock<Sealed>,
}

impl Segment {
    pub(crate) fn new(path: PathBuf, header: SegmentHeader, map: Arc<Mmap>, sealed: Option<Sealed>) -> Arc<Self> {
        let cell = OnceLock::new();
        if let Some(s) = sealed {
            let _ = cell.set(s);
        }
        Arc::new(Self {
            path,
            header,
            map,
            sealed: cell,
        })
    }

    pub(crate) fn generation(&self) -> u64 {
        self.header.generation
    }

    pub(crate) fn first_lsn(&self) -> u64 {
        self.header.first_lsn
    }

    /// Whether nothing but the caller's `Arc` refers to this segment or its map, so its file
    /// may be reused without changing bytes under a reader.
    pub(crate) fn is_unreferenced(this: &Arc<Self>) -> bool {
        Arc::strong_count(this) == 1 && Arc::strong_count(&this.map) == 1
    }
}

/// A map shared with `Bytes` payloads, so a record outlives its reader without a copy.
pub(crate) struct MapOwner(pub(crate) Arc<Mmap>);

impl AsRef<[u8]> for MapOwner {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preallocation_makes_exactly_len_zeros_either_way_and_renames() {
        let dir = tempfile::tempdir().unwrap();
        let mut n = 0;
        for reserve in [Reserve::Zeros, Reserve::Allocate] {
            // Whole steps, a part of a step, and a last block only partly covered (written
            // through the page cache, since direct writes take whole blocks).
            for len in [2 * PREALLOCATION_STEP as u64, 3 * BLOCK as u64 + 100, 4096, 4097] {
                let path = spare_path(dir.path(), n);
                n += 1;
                std::fs::write(path.with_extension("spare.tmp"), [1u8; 10]).unwrap(); // a leftover of a crash
                let (file, made) = create_preallocated(&path, len, reserve).unwrap();
                assert_eq!(file.metadata().unwrap().len(), len);
                let bytes = std::fs::read(&path).unwrap();
                assert_eq!(bytes.len() as u64, len);
                assert!(bytes.iter().all(|&b| b == 0), "len {len}, {reserve:?}");
                if reserve == Reserve::Zeros {
                    assert_eq!(made, Reserve::Zeros);
                }
            }
        }
        let listing = list_dir(dir.path()).unwrap();
        assert_eq!((listing.spares.len(), listing.temporaries.len()), (8, 0));
    }
}
