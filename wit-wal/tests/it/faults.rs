//! Injected I/O failures poison the log: every waiter is woken with an error, later writes are
//! refused, and nothing acknowledged is lost. Plus the typed errors for bad input.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use wit_wal::{Config, Error, IoFaults, Lsn, SyncMode, Wal};

fn open_with_faults(dir: &std::path::Path) -> (Wal, Arc<IoFaults>) {
    let faults = Arc::new(IoFaults::default());
    let wal = Wal::open(
        dir,
        Config::default()
            .with_segment_size(64 << 10)
            .with_io_faults(Arc::clone(&faults)),
    )
    .unwrap();
    (wal, faults)
}

fn poisons_every_waiter(fail: impl Fn(&IoFaults)) {
    let dir = tempfile::tempdir().unwrap();
    let (wal, faults) = open_with_faults(dir.path());
    let acked = wal.append(b"before the failure").unwrap();
    fail(&faults);
    let wal = Arc::new(wal);
    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::new();
    for t in 0..8u8 {
        let wal = Arc::clone(&wal);
        let tx = tx.clone();
        handles.push(std::thread::spawn(move || {
            let results: Vec<_> = (0..20).map(|_| wal.append(&[t; 100])).collect();
            tx.send(results).unwrap();
        }));
    }
    // An async waiter, driven by a runtime of its own.
    {
        let wal = Arc::clone(&wal);
        let tx = tx.clone();
        handles.push(std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let r = rt.block_on(async {
                match wal.submit(b"async") {
                    Ok(commit) => commit.await.map(|r| r.start),
                    Err(e) => Err(e),
                }
            });
            tx.send(vec![r]).unwrap();
        }));
    }
    drop(tx);
    let mut poisoned = 0;
    for _ in 0..9 {
        // No waiter may hang.
        let results = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("a waiter hung after an I/O failure");
        for r in results {
            match r {
                Ok(_) => {}
                Err(Error::Poisoned { .. }) => poisoned += 1,
                Err(other) => panic!("expected Poisoned, got {other}"),
            }
        }
    }
    assert!(poisoned > 0, "the failure was reported");
    let err = wal.append(b"after").unwrap_err();
    assert!(matches!(err, Error::Poisoned { .. }), "{err}");
    assert!(err.to_string().contains("injected"), "the cause is named: {err}");
    assert!(matches!(wal.submit(b"after"), Err(Error::Poisoned { .. })));
    handles.into_iter().for_each(|h| h.join().unwrap());
    drop(wal);

    // Reopened, the log holds what was acknowledged and accepts appends again.
    let wal = Wal::open(dir.path(), Config::default().with_segment_size(64 << 10)).unwrap();
    let first = wal.read_from(acked).unwrap().next().unwrap().unwrap();
    assert_eq!(&first.payload[..], b"before the failure");
    let next = wal.append(b"recovered").unwrap();
    assert!(next > acked);
}

#[test]
fn failed_sync_poisons_and_wakes_all_waiters() {
    poisons_every_waiter(|f| f.fail_sync_after(0));
}

#[test]
fn failed_write_poisons_and_wakes_all_waiters() {
    poisons_every_waiter(|f| f.fail_write_after(0));
}

#[test]
fn failure_during_rotation_poisons() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, faults) = open_with_faults(dir.path());
    let mut acked = Vec::new();
    // Fail the third sync from now; with 60 KiB records every append rotates.
    faults.fail_sync_after(3);
    let mut result = Ok(Lsn(0));
    for i in 0..10u8 {
        result = wal.append(&vec![i; 60 << 10]);
        match &result {
            Ok(lsn) => acked.push((*lsn, i)),
            Err(_) => break,
        }
    }
    assert!(matches!(result, Err(Error::Poisoned { .. })), "{result:?}");
    drop(wal);
    let wal = Wal::open(dir.path(), Config::default().with_segment_size(64 << 10)).unwrap();
    for (lsn, i) in acked {
        let rec = wal.read_from(lsn).unwrap().next().unwrap().unwrap();
        assert_eq!(rec.payload.len(), 60 << 10);
        assert!(rec.payload.iter().all(|&b| b == i));
    }
}

#[test]
fn failed_sync_in_buffer_mode_poisons_and_is_never_retried() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(IoFaults::default());
    let config = || {
        Config::default()
            .with_segment_size(64 << 10)
            .with_sync_mode(SyncMode::Buffer)
    };
    let wal = Wal::open(dir.path(), config().with_io_faults(Arc::clone(&faults))).unwrap();
    let synced: Vec<Lsn> = (0..5u8).map(|i| wal.append(&[i; 100]).unwrap()).collect();
    wal.sync().unwrap();
    wal.append(b"written, never synced").unwrap();

    faults.fail_sync_after(0);
    let first = wal.sync().expect_err("the failed fdatasync is reported");
    assert!(first.to_string().contains("injected"), "the cause is named: {first}");
    faults.clear();
    // The kernel may have dropped the dirty pages the failed fdatasync was about; a retry
    // would succeed and vouch for data that is gone. The log refuses instead, for good.
    let err = wal.sync().expect_err("a failed fdatasync is not retried");
    assert!(matches!(err, Error::Poisoned { .. }), "{err}");
    let err = wal.append(b"after").unwrap_err();
    assert!(matches!(err, Error::Poisoned { .. }), "{err}");
    assert!(matches!(wal.submit(b"after"), Err(Error::Poisoned { .. })));
    assert!(
        matches!(first, Error::Poisoned { .. }),
        "the failing call reports what a failed group sync reports: {first}"
    );
    drop(wal);

    // Reopened, the log holds every record the successful sync covered, and accepts appends.
    let wal = Wal::open(dir.path(), config()).unwrap();
    let records: Vec<_> = wal
        .read_from(synced[0])
        .unwrap()
        .take(synced.len())
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        records.iter().map(|r| (r.lsn, r.payload.to_vec())).collect::<Vec<_>>(),
        (0..5u8).map(|i| (synced[i as usize], vec![i; 100])).collect::<Vec<_>>()
    );
    assert!(wal.append(b"recovered").unwrap() > synced[4]);
}

#[test]
fn oversized_record_is_refused_and_nothing_is_appended() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), Config::default().with_max_record_size(1000)).unwrap();
    wal.append(b"ok").unwrap();
    let err = wal.append_batch(&[vec![1u8; 10], vec![2u8; 1001]]).unwrap_err();
    assert!(matches!(err, Error::RecordTooLarge { len: 1001, max: 1000 }), "{err}");
    assert_eq!(
        err.to_string(),
        "record of 1001 bytes exceeds the configured maximum of 1000 bytes"
    );
    assert_eq!(wal.stats().next_lsn, Lsn(2), "no part of the batch was appended");
    assert_eq!(wal.append(b"still fine").unwrap(), Lsn(2));
}

#[test]
fn a_directory_opens_once() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), Config::default()).unwrap();
    let err = Wal::open(dir.path(), Config::default()).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert!(err.to_string().contains("already opened by another WAL"), "{err}");
    drop(wal);
    Wal::open(dir.path(), Config::default()).unwrap();
}

#[test]
fn foreign_files_are_not_a_wal() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let err = Wal::open(dir.path(), Config::default()).unwrap_err();
    assert!(matches!(err, Error::NotAWal { .. }), "{err}");
    assert!(err.to_string().contains("notes.txt"), "the file is named: {err}");

    let file = dir.path().join("notes.txt");
    let err = Wal::open(&file, Config::default()).unwrap_err();
    assert!(matches!(err, Error::NotAWal { .. }), "{err}");

    let fake = tempfile::tempdir().unwrap();
    std::fs::write(fake.path().join("00000000000000000001.wal"), vec![7u8; 4096]).unwrap();
    let err = Wal::open(fake.path(), Config::default()).unwrap_err();
    assert!(matches!(err, Error::NotAWal { .. }), "{err}");
    assert!(err.to_string().contains("bad magic"), "{err}");
}

#[test]
fn unknown_format_version_is_refused() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), Config::default().with_segment_size(8192)).unwrap();
    wal.append(b"x").unwrap();
    let (path, _, _) = wal.tail_extent();
    drop(wal);
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&99u32.to_le_bytes(), 8).unwrap();
    let err = Wal::open(dir.path(), Config::default()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnsupportedVersion {
                found: 99,
                supported: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "the segment is named: {err}"
    );
}

#[test]
fn unusable_configurations_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = Wal::open(dir.path(), Config::default().with_segment_size(100)).unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
    let err = Wal::open(
        dir.path(),
        Config::default().with_segment_size(8192).with_max_record_size(9000),
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
    assert!(err.to_string().contains("does not fit into a segment"), "{err}");
}
