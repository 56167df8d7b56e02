//! The body of the recovery fuzz target, shared with the test that replays its corpus.
//! Not part of the supported API.

use std::os::unix::fs::FileExt;

use crate::{Config, Inspector, Item, Lsn, RecoveryMode, Wal};

/// Largest segment a fuzz input may declare; larger ones are skipped (they would only be slow).
const MAX_FUZZ_SEGMENT: u64 = 1 << 16;
const SEGMENT_SIZE: u64 = 4096;

/// Builds a WAL directory from `data` and recovers it, checking that recovery never panics,
/// never hangs, and never yields a record whose checksum does not match.
///
/// The first byte chooses the shape: even, the rest is split into up to three segment files
/// taken verbatim; odd, a real log of a few records is written and the rest of the input is
/// applied to its files as (offset, byte) overwrites and a truncation.
pub fn recover_from_bytes(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let dir = tempfile_dir();
    if mode % 2 == 0 {
        let n = (mode as usize / 2) % 3 + 1;
        let part = rest.len().div_ceil(n).max(1);
        for (i, bytes) in rest.chunks(part).enumerate() {
            if declared_len(bytes).is_some_and(|l| l > MAX_FUZZ_SEGMENT) {
                return;
            }
            std::fs::write(dir.path().join(format!("{:020}.wal", i + 1)), bytes).expect("write fuzz segment");
        }
    } else {
        let n_records = (mode as usize / 2) % 24 + 1;
        let config = Config::default()
            .with_segment_size(SEGMENT_SIZE)
            .with_max_record_size(1000);
        let wal = Wal::open(dir.path(), config).expect("open a fresh log");
        for i in 0..n_records {
            let payload = vec![i as u8; (i * 37) % 300];
            wal.append(&payload).expect("append to a fresh log");
        }
        drop(wal);
        let mut files: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list fuzz dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "wal"))
            .collect();
        files.sort();
        for op in rest.chunks(4) {
            let [f, hi, lo, byte] = [
                op[0],
                *op.get(1).unwrap_or(&0),
                *op.get(2).unwrap_or(&0),
                *op.get(3).unwrap_or(&0),
            ];
            let Some(path) = files.get(f as usize % files.len().max(1)) else {
                break;
            };
            let offset = u16::from_be_bytes([hi, lo]) as u64 % SEGMENT_SIZE;
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .expect("open fuzz segment");
            if f & 0x80 != 0 && byte == 0 {
                file.set_len(offset).expect("truncate fuzz segment");
            } else {
                file.write_all_at(&[byte], offset).expect("mutate fuzz segment");
            }
        }
    }
    check(dir.path());
}

fn declared_len(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(32..40)?.try_into().ok()?))
}

fn tempfile_dir() -> TempDir {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("wit-wal-fuzz-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    std::fs::create_dir_all(&path).expect("create fuzz dir");
    TempDir(path)
}

struct TempDir(std::path::PathBuf);

impl TempDir {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn check(dir: &std::path::Path) {
    // The read-only inspector must cope with anything.
    if let Ok(inspector) = Inspector::open(dir) {
        let _ = inspector.verify();
        for item in inspector.scan(Lsn(0)) {
            if let Item::Record(r) = item {
                let _ = r.payload.len();
            }
        }
    }
    for mode in [RecoveryMode::Strict, RecoveryMode::Salvage] {
        let config = Config::default()
            .with_segment_size(SEGMENT_SIZE)
            .with_max_record_size(1000)
            .with_recovery_mode(mode);
        let Ok(wal) = Wal::open(dir, config) else { continue };
        let first = wal.stats().first_lsn.unwrap_or(wal.stats().next_lsn);
        let mut expected = first;
        if let Ok(reader) = wal.read_from(first) {
            for rec in reader {
                let Ok(rec) = rec else { break };
                assert_eq!(rec.lsn, expected, "records come back in order without gaps");
                expected = rec.lsn.next();
            }
        }
        // Everything the reader yielded is reported intact by the independent scan.
        let inspector = Inspector::open(dir).expect("inspect an opened log");
        for item in inspector.scan(first) {
            if let Item::Record(r) = item
                && r.lsn < expected
            {
                assert!(r.crc_ok, "reader yielded LSN {} whose checksum does not match", r.lsn);
            }
        }
        // The recovered log accepts appends.
        let _ = wal.append(b"after recovery");
    }
}
