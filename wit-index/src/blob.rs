//! One index as one immutable blob, and the read-only Tantivy directory over it.
//!
//! Layout (integers little-endian):
//!
//! ```text
//! "WITIDX\x00\x01"  magic and format version            8 bytes
//! docs              the index's document count           u64
//! files             how many files follow                u32
//! per file:         name length u16, name (UTF-8), offset u64, length u64
//!                   (offsets from the start of the data)
//! data              the files' bytes, one after another
//! crc               CRC-32 of everything before it      u32
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use tantivy::Directory;
use tantivy::directory::error::{DeleteError, LockError, OpenReadError, OpenWriteError};
use tantivy::directory::{DirectoryLock, FileHandle, OwnedBytes, WatchCallback, WatchHandle, WritePtr};

const MAGIC: &[u8; 8] = b"WITIDX\x00\x01";

/// Packs `files` into one blob.
pub(crate) fn pack(docs: u64, files: &BTreeMap<PathBuf, Vec<u8>>) -> Bytes {
    let table: usize = files.keys().map(|p| 2 + p.as_os_str().len() + 16).sum();
    let data: usize = files.values().map(Vec::len).sum();
    let mut out = BytesMut::with_capacity(8 + 8 + 4 + table + data + 4);
    out.put_slice(MAGIC);
    out.put_u64_le(docs);
    out.put_u32_le(files.len() as u32);
    let mut offset = 0u64;
    for (path, bytes) in files {
        let name = path.to_string_lossy();
        out.put_u16_le(name.len() as u16);
        out.put_slice(name.as_bytes());
        out.put_u64_le(offset);
        out.put_u64_le(bytes.len() as u64);
        offset += bytes.len() as u64;
    }
    for bytes in files.values() {
        out.put_slice(bytes);
    }
    let crc = crc32fast::hash(&out);
    out.put_u32_le(crc);
    out.freeze()
}

/// A blob's contents: its document count and its files, each a slice of the one buffer.
#[derive(Debug, Clone)]
pub(crate) struct Unpacked {
    pub(crate) docs: u64,
    pub(crate) files: Arc<BTreeMap<PathBuf, OwnedBytes>>,
}

/// Reads a blob's table. `Err(reason)` when it is not a whole, intact blob.
pub(crate) fn unpack(blob: Bytes) -> Result<Unpacked, String> {
    if blob.len() < MAGIC.len() + 8 + 4 + 4 {
        return Err(format!("{} bytes is too short for an index blob", blob.len()));
    }
    if &blob[..8] != MAGIC {
        return Err("not an index blob of a version this build reads (bad magic)".into());
    }
    let (body, crc) = blob.split_at(blob.len() - 4);
    let stored = u32::from_le_bytes(crc.try_into().map_err(|_| "short crc")?);
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(format!(
            "checksum mismatch: stored {stored:#010x}, computed {computed:#010x} (truncated or corrupt)"
        ));
    }
    let mut at = 8;
    let mut take = |n: usize| -> Result<&[u8], String> {
        let s = body.get(at..at + n).ok_or("the file table runs past the end")?;
        at += n;
        Ok(s)
    };
    let docs = u64::from_le_bytes(take(8)?.try_into().map_err(|_| "short")?);
    let count = u32::from_le_bytes(take(4)?.try_into().map_err(|_| "short")?);
    let mut table = Vec::with_capacity(count.min(1024) as usize);
    for _ in 0..count {
        let len = u16::from_le_bytes(take(2)?.try_into().map_err(|_| "short")?) as usize;
        let name = std::str::from_utf8(take(len)?)
            .map_err(|_| "a file name is not UTF-8")?
            .to_owned();
        let offset = u64::from_le_bytes(take(8)?.try_into().map_err(|_| "short")?);
        let length = u64::from_le_bytes(take(8)?.try_into().map_err(|_| "short")?);
        table.push((name, offset, length));
    }
    let data_start = at;
    let body_len = body.len();
    // Zero-copy when the blob owns its buffer alone (a fresh read); a copy otherwise.
    let mut whole = Vec::<u8>::from(blob);
    whole.truncate(body_len);
    let whole = OwnedBytes::new(whole);
    let body = whole.as_slice();
    let mut files = BTreeMap::new();
    for (name, offset, length) in table {
        let start = usize::try_from(offset).ok().and_then(|o| o.checked_add(data_start));
        let end = start.and_then(|s| usize::try_from(length).ok().and_then(|l| s.checked_add(l)));
        match (start, end) {
            (Some(s), Some(e)) if e <= body.len() => {
                files.insert(PathBuf::from(name), whole.slice(s..e));
            }
            _ => return Err(format!("file `{name}` lies outside the blob")),
        }
    }
    Ok(Unpacked {
        docs,
        files: Arc::new(files),
    })
}

/// A read-only Tantivy directory over an unpacked blob: reads are slices of the blob in memory,
/// writes are refused.
#[derive(Debug, Clone)]
pub(crate) struct BlobDirectory {
    files: Arc<BTreeMap<PathBuf, OwnedBytes>>,
}

impl BlobDirectory {
    pub(crate) fn new(unpacked: &Unpacked) -> Self {
        BlobDirectory {
            files: unpacked.files.clone(),
        }
    }

    fn get(&self, path: &Path) -> Result<&OwnedBytes, OpenReadError> {
        self.files
            .get(path)
            .ok_or_else(|| OpenReadError::FileDoesNotExist(path.to_owned()))
    }
}

fn read_only() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::PermissionDenied, "an index blob is read-only")
}

impl Directory for BlobDirectory {
    fn get_file_handle(&self, path: &Path) -> Result<Arc<dyn FileHandle>, OpenReadError> {
        Ok(Arc::new(self.get(path)?.clone()))
    }

    fn delete(&self, path: &Path) -> Result<(), DeleteError> {
        Err(DeleteError::IoError {
            io_error: Arc::new(read_only()),
            filepath: path.to_owned(),
        })
    }

    fn exists(&self, path: &Path) -> Result<bool, OpenReadError> {
        Ok(self.files.contains_key(path))
    }

    fn open_write(&self, path: &Path) -> Result<WritePtr, OpenWriteError> {
        Err(OpenWriteError::IoError {
            io_error: Arc::new(read_only()),
            filepath: path.to_owned(),
        })
    }

    fn atomic_read(&self, path: &Path) -> Result<Vec<u8>, OpenReadError> {
        Ok(self.get(path)?.as_slice().to_vec())
    }

    fn atomic_write(&self, _path: &Path, _data: &[u8]) -> std::io::Result<()> {
        Err(read_only())
    }

    fn sync_directory(&self) -> std::io::Result<()> {
        Ok(())
    }

    /// Nothing changes in a blob, so readers need no lock: the lock is a no-op. (Writers,
    /// which would need one, are refused by `open_write`.)
    fn acquire_lock(&self, _lock: &tantivy::directory::Lock) -> Result<DirectoryLock, LockError> {
        Ok(DirectoryLock::from(Box::new(())))
    }

    fn watch(&self, _callback: WatchCallback) -> tantivy::Result<WatchHandle> {
        Ok(WatchHandle::empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_round_trips_and_any_damage_is_refused() {
        let mut files = BTreeMap::new();
        files.insert(PathBuf::from("meta.json"), b"{}".to_vec());
        files.insert(PathBuf::from("a.idx"), vec![7; 1000]);
        let blob = pack(42, &files);
        let got = unpack(blob.clone()).expect("intact");
        assert_eq!(got.docs, 42);
        assert_eq!(got.files[Path::new("a.idx")].as_slice(), &[7; 1000][..]);
        for cut in [0, 5, 20, blob.len() - 1] {
            assert!(unpack(blob.slice(..cut)).is_err(), "truncated at {cut}");
        }
        for at in [0, 9, 30, blob.len() / 2, blob.len() - 1] {
            let mut bad = blob.to_vec();
            bad[at] ^= 0x40;
            assert!(unpack(Bytes::from(bad)).is_err(), "flipped byte {at}");
        }
    }
}
