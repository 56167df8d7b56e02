//! Direct I/O: groups written as whole blocks with `O_DIRECT` leave exactly the files that
//! writes through the page cache leave, and a refusal of direct I/O falls back without losing
//! or changing anything. The logs are written under the target directory (a real disk
//! where `/tmp` is a tmpfs); a file system that refuses `O_DIRECT` is reported loudly, since
//! only the fallback can be tested on it.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use wit_wal::{Config, IoFaults, Lsn, Wal};

/// Whether the file system under `dir` takes `O_DIRECT` (what the log finds out for itself).
/// Elsewhere than on Linux the log never writes directly.
fn takes_direct_io(dir: &Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let probe = dir.join("probe");
        std::fs::write(&probe, [0u8; 4096]).unwrap();
        let opened = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&probe);
        std::fs::remove_file(&probe).unwrap();
        opened.is_ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        false
    }
}

/// A temporary directory in the target directory, on the disk the build uses: `/tmp` is
/// often a tmpfs, which refuses `O_DIRECT`.
fn on_disk() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// Whether `dir` takes `O_DIRECT`; when it does not, says loudly that direct writes go
/// untested here (only the fallback through the page cache runs).
fn direct_io_here(dir: &Path) -> bool {
    let supported = takes_direct_io(dir);
    if !supported {
        eprintln!(
            "WARNING: the file system under {} refuses O_DIRECT: direct writes are NOT tested here, only the fallback",
            dir.display()
        );
    }
    supported
}

/// Records of awkward sizes: empty, odd, exactly a block, across several blocks, large.
fn records() -> Vec<Vec<u8>> {
    // 16 KiB and more: written from the appender's slice, through the page cache.
    let sizes = [
        0usize, 1, 7, 100, 1000, 4064, 4096, 4097, 5000, 12_000, 33, 2048, 8192, 3, 16_384, 20_001, 40_000,
    ];
    (0..60)
        .map(|i| {
            let len = sizes[i % sizes.len()];
            (0..len).map(|j| (i * 31 + j * 7) as u8).collect()
        })
        .collect()
}

fn config(direct: bool, faults: &Arc<IoFaults>) -> Config {
    Config::default()
        .with_segment_size(64 << 10)
        .with_direct_io(direct)
        .with_io_faults(Arc::clone(faults))
}

/// The segment files' bytes by name.
fn segment_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".wal") {
            files.insert(name, std::fs::read(entry.path()).unwrap());
        }
    }
    files
}

/// The same appends (singles and batches, a clean reopen in the middle of a block, several
/// rotations); returns the segment files' bytes by name.
fn write_log(dir: &Path, direct: bool, refuse_after: Option<usize>) -> (BTreeMap<String, Vec<u8>>, Vec<bool>) {
    let faults = Arc::new(IoFaults::default());
    let recs = records();
    let mut seen_direct = Vec::new();
    let mut wal = Wal::open(dir, config(direct, &faults)).unwrap();
    let mut next = 1u64;
    for round in 0..3 {
        for (i, r) in recs.iter().enumerate() {
            if refuse_after == Some(round * recs.len() + i) {
                faults.refuse_direct_io(true);
            }
            assert_eq!(wal.append(r).unwrap(), Lsn(next));
            next += 1;
            if i % 9 == 0 {
                let batch = &recs[i..(i + 4).min(recs.len())];
                let range = wal.append_batch(batch).unwrap();
                assert_eq!(range.start, Lsn(next));
                next = range.end.0;
            }
            seen_direct.push(wal.stats().direct_io);
        }
        // Reopen with the tail's end in the middle of a block.
        wal.close().unwrap();
        wal = Wal::open(dir, config(direct, &faults)).unwrap();
        assert_eq!(wal.stats().next_lsn, Lsn(next));
    }
    let all: Vec<_> = wal.read_from(Lsn::FIRST).unwrap().map(|r| r.unwrap()).collect();
    assert_eq!(all.len() as u64, next - 1);
    wal.close().unwrap();
    (segment_files(dir), seen_direct)
}

#[test]
fn direct_writes_leave_the_same_files_as_buffered_writes() {
    let base = on_disk();
    let supported = direct_io_here(base.path());
    let (direct_files, direct_seen) = write_log(&base.path().join("direct"), true, None);
    let (buffered_files, buffered_seen) = write_log(&base.path().join("buffered"), false, None);

    // Direct I/O is really in use where the file system takes it, and never when turned off.
    assert!(direct_seen.iter().all(|&d| d == supported));
    assert!(buffered_seen.iter().all(|&d| !d));
    assert!(direct_files.len() > 3, "the log rotated: {:?}", direct_files.keys());
    assert_eq!(
        direct_files.keys().collect::<Vec<_>>(),
        buffered_files.keys().collect::<Vec<_>>()
    );
    for (name, bytes) in &direct_files {
        let other = &buffered_files[name];
        let first_difference = bytes.iter().zip(other).position(|(a, b)| a != b);
        assert_eq!(first_difference, None, "{name} differs");
        assert_eq!(bytes.len(), other.len());
    }
}

#[test]
fn refused_direct_io_falls_back_to_the_page_cache() {
    let base = on_disk();
    let supported = direct_io_here(base.path());
    // Refused in the middle of the first segment, after some direct writes.
    let (files, seen) = write_log(&base.path().join("refused"), true, Some(25));
    let (buffered, _) = write_log(&base.path().join("buffered"), false, None);
    assert!(seen[..25].iter().all(|&d| d == supported));
    assert!(seen[25..].iter().all(|&d| !d), "direct I/O stays off once refused");
    assert_eq!(files, buffered);
}

#[test]
fn buffer_mode_never_writes_directly() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(
        dir.path(),
        Config::default()
            .with_segment_size(64 << 10)
            .with_sync_mode(wit_wal::SyncMode::Buffer),
    )
    .unwrap();
    wal.append(b"through the page cache").unwrap();
    assert!(!wal.stats().direct_io);
}

#[test]
fn a_group_through_the_page_cache_pads_its_last_block_but_never_the_trailer_slot() {
    // Four blocks; the trailer slot is the last 64 bytes of the last one.
    const SEGMENT: u64 = 16 << 10;
    const SLOT: u64 = SEGMENT - 64;
    for direct in [true, false] {
        let dir = on_disk();
        if direct {
            direct_io_here(dir.path());
        }
        let config = || Config::default().with_segment_size(SEGMENT).with_direct_io(direct);
        let wal = Wal::open(dir.path(), config()).unwrap();
        wal.append(&[7u8; 10_000]).unwrap();
        let (path, _, _) = wal.tail_extent();
        wal.close().unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let mut checkpoint = [0u8; 64];
        file.read_exact_at(&mut checkpoint, SLOT).unwrap();
        assert_ne!(checkpoint, [0u8; 64], "a clean close leaves a checkpoint");

        // A group that ends in the last block: written through the page cache either way,
        // since direct writes never touch the block holding the trailer slot.
        let wal = Wal::open(dir.path(), config()).unwrap();
        wal.append(&[9u8; 4000]).unwrap();
        let (_, durable_end, _) = wal.tail_extent();
        assert!(durable_end > SEGMENT - 4096 && durable_end < SLOT, "{durable_end}");
        wal.crash();
        let mut rest = vec![1u8; (SEGMENT - durable_end) as usize];
        file.read_exact_at(&mut rest, durable_end).unwrap();
        let (padding, slot) = rest.split_at((SLOT - durable_end) as usize);
        assert!(padding.iter().all(|&b| b == 0), "the block is padded with zeros");
        assert_eq!(slot, checkpoint, "the checkpoint is untouched");

        let wal = Wal::open(dir.path(), config()).unwrap();
        assert!(wal.recovery().torn_tail.is_none() && wal.recovery().cut.is_none());
        let lens: Vec<usize> = wal
            .read_from(Lsn::FIRST)
            .unwrap()
            .map(|r| r.unwrap().payload.len())
            .collect();
        assert_eq!(lens, [10_000, 4000]);
    }
}

/// Groups of 1 MiB and more go to the device directly too (those between 16 KiB and 1 MiB
/// through the page cache), whether appended alone or in a batch, and leave exactly the
/// files that writes through the page cache leave.
#[test]
fn large_groups_are_written_directly_and_leave_the_same_files() {
    let base = on_disk();
    let supported = direct_io_here(base.path());
    let sizes = [
        2 << 20,
        64 << 10,
        (1 << 20) + 7,
        (3 << 20) + 4095,
        100,
        5 << 20,
        1 << 20,
    ];
    let records: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| (0..len).map(|j| (i * 131 + j * 7) as u8).collect())
        .collect();
    let write = |dir: &Path, direct: bool| {
        let faults = Arc::new(IoFaults::default());
        let config = Config::default()
            .with_segment_size(8 << 20)
            .with_direct_io(direct)
            .with_io_faults(Arc::clone(&faults));
        let wal = Wal::open(dir, config).unwrap();
        let mut large_direct = 0;
        for round in 0..3 {
            for r in &records {
                let before = faults.direct_writes();
                wal.append(r).unwrap();
                if r.len() >= 1 << 20 && faults.direct_writes() > before {
                    large_direct += 1;
                }
                if r.len() > 16 << 10 && r.len() < 1 << 20 {
                    assert_eq!(faults.direct_writes(), before, "a 64 KiB group went directly");
                }
            }
            // Two large records in one group.
            wal.append_batch(&records[round..round + 2]).unwrap();
        }
        let all: Vec<_> = wal.read_from(Lsn::FIRST).unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(all.len(), 3 * (records.len() + 2));
        assert!(
            all.iter()
                .take(records.len())
                .zip(&records)
                .all(|(a, r)| a.payload[..] == r[..])
        );
        wal.close().unwrap();
        (segment_files(dir), large_direct)
    };
    let (direct_files, large_direct) = write(&base.path().join("direct"), true);
    let (buffered_files, buffered_large_direct) = write(&base.path().join("buffered"), false);
    assert_eq!(buffered_large_direct, 0);
    if supported {
        // Every large record but those whose group reaches the segment's last block (the
        // trailer slot's, only ever written through the page cache).
        assert!(large_direct >= 3 * 4 - 3, "{large_direct} large records went directly");
    }
    assert!(direct_files.len() > 3, "the log rotated: {:?}", direct_files.keys());
    assert_eq!(direct_files, buffered_files);
}
