//! Recovery on open: torn tails are cut, damage is a typed error (or salvaged on request),
//! sealed segments are trusted without a scan, truncation keeps the log contiguous.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use wit_wal::{Config, Error, Inspector, IoFaults, Item, Lsn, RecoveryMode, SyncMode, Wal};

const SEGMENT: u64 = 16 << 10;
/// Segment header, group header, record header.
const HEADER: u64 = 64;
const GROUP: u64 = 24;
const RECORD: u64 = 8;

fn config() -> Config {
    Config::default().with_segment_size(SEGMENT)
}

fn flip(path: &Path, offset: u64) {
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8];
    f.read_at(&mut b, offset).unwrap();
    f.write_all_at(&[b[0] ^ 0x10], offset).unwrap();
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

fn all(wal: &Wal) -> Vec<(u64, Vec<u8>)> {
    let first = wal.stats().first_lsn.unwrap_or(wal.stats().next_lsn);
    wal.read_from(first)
        .unwrap()
        .map(|r| r.map(|r| (r.lsn.0, r.payload.to_vec())))
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn torn_tail_is_cut_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(IoFaults::default());
    let wal = Wal::open(dir.path(), config().with_io_faults(Arc::clone(&faults))).unwrap();
    for i in 0..3u8 {
        wal.append(&[i; 50]).unwrap();
    }
    // The next group is written but its sync fails: never acknowledged.
    faults.fail_sync_after(0);
    assert!(wal.append_batch(&[[7u8; 100], [8u8; 100]]).is_err());
    let (path, durable_end, written_end) = wal.tail_extent();
    assert_eq!(written_end - durable_end, GROUP + 2 * (RECORD + 100));
    wal.crash();
    // Its second record's payload never reached the disk intact; its header did.
    flip(&path, durable_end + GROUP + RECORD + 100 + RECORD + 10);

    let wal = Wal::open(dir.path(), config()).unwrap();
    let torn = wal.recovery().torn_tail.clone().expect("the torn tail is reported");
    assert_eq!(
        (torn.path.as_path(), torn.offset, torn.lsn),
        (path.as_path(), durable_end, Lsn(4))
    );
    assert!(torn.reason.contains("checksum mismatch"), "{}", torn.reason);
    assert_eq!(
        all(&wal),
        (0..3u8).map(|i| (i as u64 + 1, vec![i; 50])).collect::<Vec<_>>()
    );
    assert_eq!(
        wal.append(b"next").unwrap(),
        Lsn(4),
        "appends continue after the last intact record"
    );
    drop(wal);

    let wal = Wal::open(dir.path(), config()).unwrap();
    assert_eq!(wal.recovery().torn_tail, None, "the torn bytes are never scanned again");
    assert_eq!(all(&wal).last().unwrap(), &(4, b"next".to_vec()));
}

#[test]
fn a_bad_record_followed_by_intact_ones_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), config()).unwrap();
    for i in 0..3u8 {
        wal.append(&[i; 40]).unwrap(); // one group each
    }
    let (path, _, _) = wal.tail_extent();
    drop(wal);
    let second_payload = HEADER + (GROUP + RECORD + 40) + GROUP + RECORD;
    flip(&path, second_payload + 5);

    let err = Wal::open(dir.path(), config()).unwrap_err();
    let Error::Corruption {
        path: p,
        offset,
        lsn,
        reason,
    } = &err
    else {
        panic!("expected Corruption, got {err}")
    };
    assert_eq!((p, *offset, *lsn), (&path, HEADER + GROUP + RECORD + 40, Some(Lsn(2))));
    assert!(reason.contains("intact group (LSN 3)"), "{reason}");
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");

    // The read-only verifier names the same place.
    let report = Inspector::open(dir.path()).unwrap().verify();
    let problem = report.problem.expect("verify finds the damage");
    assert_eq!((problem.path, problem.lsn), (path.clone(), Lsn(2)));

    // Salvage is explicit: the log is cut before the damage, and says so.
    let wal = Wal::open(dir.path(), config().with_recovery_mode(RecoveryMode::Salvage)).unwrap();
    let cut = wal.recovery().cut.clone().expect("the cut is reported");
    assert_eq!(cut.lsn, Lsn(2));
    assert_eq!(all(&wal), vec![(1, vec![0u8; 40])]);
    assert_eq!(wal.append(b"new").unwrap(), Lsn(2));
    drop(wal);
    let wal = Wal::open(dir.path(), config()).unwrap();
    assert_eq!(all(&wal), vec![(1, vec![0u8; 40]), (2, b"new".to_vec())]);
}

#[test]
fn damage_in_a_sealed_segment_is_found_by_readers_and_salvage() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), config()).unwrap();
    for i in 0..40u8 {
        wal.append(&[i; 1500]).unwrap();
    }
    assert!(wal.stats().segment_count >= 4);
    drop(wal);
    let segs = segments(dir.path());
    flip(&segs[1], HEADER + GROUP + RECORD + 700);

    // Sealed segments are trusted at open: only the tail is scanned.
    let wal = Wal::open(dir.path(), config()).unwrap();
    assert_eq!(wal.recovery().segments_scanned, 1);
    let results: Vec<_> = wal.read_from(Lsn::FIRST).unwrap().collect();
    let err = results
        .iter()
        .find_map(|r| r.as_ref().err())
        .expect("the reader finds the damage");
    let Error::Corruption { path, .. } = err else {
        panic!("expected Corruption, got {err}")
    };
    assert_eq!(path, &segs[1]);
    assert!(results.last().unwrap().is_err(), "the reader stops at the damage");
    drop(wal);

    let wal = Wal::open(dir.path(), config().with_recovery_mode(RecoveryMode::Salvage)).unwrap();
    let rec = wal.recovery();
    assert_eq!(rec.cut.as_ref().unwrap().path, segs[1]);
    assert_eq!(
        rec.set_aside.len(),
        segs.len() - 2,
        "later segments are kept aside, not deleted"
    );
    assert!(
        rec.set_aside
            .iter()
            .all(|p| p.exists() && p.to_string_lossy().ends_with(".wal.corrupt"))
    );
    let records = all(&wal);
    assert!(records.iter().all(|(lsn, p)| p == &vec![(lsn - 1) as u8; 1500]));
    assert_eq!(records.len() as u64 + 1, rec.cut.as_ref().unwrap().lsn.0);
}

#[test]
fn a_missing_middle_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), config()).unwrap();
    for i in 0..40u8 {
        wal.append(&[i; 1500]).unwrap();
    }
    drop(wal);
    let segs = segments(dir.path());
    std::fs::remove_file(&segs[0]).unwrap();
    // Losing the oldest segment is what a truncation does: still a contiguous log.
    let wal = Wal::open(dir.path(), config()).unwrap();
    assert!(wal.stats().first_lsn.unwrap() > Lsn(1));
    drop(wal);
    std::fs::remove_file(&segs[2]).unwrap();
    let err = Wal::open(dir.path(), config()).unwrap_err();
    assert!(
        matches!(&err, Error::Corruption { reason, .. } if reason.contains("previous segment ends")),
        "{err}"
    );
}

#[test]
fn truncation_releases_whole_segments_and_recycles_them() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), config()).unwrap();
    for i in 0..100u8 {
        wal.append(&[i; 1000]).unwrap();
    }
    let before = wal.stats();
    wal.truncate_before(Lsn(60)).unwrap();
    let after = wal.stats();
    assert!(after.segment_count < before.segment_count);
    assert!(after.first_lsn.unwrap() <= Lsn(60) && after.first_lsn.unwrap() > Lsn(1));
    assert!(after.spare_segments >= 1, "released segments are kept as spares");
    // Recycled files hold old bytes; they must never read back as records.
    for i in 100..200u8 {
        wal.append(&[i; 1000]).unwrap();
    }
    let first = wal.stats().first_lsn.unwrap();
    let records = all(&wal);
    assert_eq!(records.len() as u64, 201 - first.0);
    assert!(records.iter().all(|(lsn, p)| p == &vec![(lsn - 1) as u8; 1000]));
    drop(wal);
    let wal = Wal::open(dir.path(), config()).unwrap();
    assert_eq!(wal.recovery().torn_tail, None);
    assert_eq!(all(&wal), records);
    assert!(matches!(wal.read_from(Lsn(1)), Err(Error::LsnOutOfRange { .. })));
}

#[test]
fn a_reader_keeps_its_segment_while_it_is_released() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), config()).unwrap();
    for i in 0..60u8 {
        wal.append(&[i; 1000]).unwrap();
    }
    let mut reader = wal.read_from(Lsn::FIRST).unwrap();
    let first = reader.next().unwrap().unwrap();
    wal.truncate_before(Lsn(50)).unwrap();
    assert!(
        wal.stats().first_lsn.unwrap() > Lsn(20),
        "several segments were released"
    );
    for i in 60..90u8 {
        wal.append(&[i; 1000]).unwrap(); // may reuse released files
    }
    // The payload already handed out and the segment being read are unchanged.
    assert_eq!(&first.payload[..], &[0u8; 1000][..]);
    let second = reader.next().unwrap().unwrap();
    assert_eq!((second.lsn, &second.payload[..]), (Lsn(2), &[1u8; 1000][..]));
    // Reading on past the released segments is an error, not a silent skip.
    let rest: Vec<_> = reader.collect();
    assert!(
        rest.iter().any(|r| matches!(r, Err(Error::LsnOutOfRange { .. }))),
        "{:?}",
        rest.last()
    );
}

#[test]
fn buffer_mode_appends_become_durable_with_sync() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), config().with_sync_mode(SyncMode::Buffer)).unwrap();
    let lsns: Vec<_> = (0..50u8).map(|i| wal.append(&[i; 300]).unwrap()).collect();
    wal.sync().unwrap();
    wal.close().unwrap();
    let wal = Wal::open(dir.path(), config()).unwrap();
    assert_eq!(all(&wal).len(), lsns.len());
}

#[test]
fn inspector_reports_records_and_torn_tails_without_changing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(IoFaults::default());
    let wal = Wal::open(dir.path(), config().with_io_faults(Arc::clone(&faults))).unwrap();
    wal.append(b"one").unwrap();
    wal.append(b"two").unwrap();
    faults.fail_sync_after(0);
    assert!(wal.append(b"three, never acknowledged").is_err());
    let (path, durable_end, _) = wal.tail_extent();
    wal.crash();
    flip(&path, durable_end + GROUP + RECORD + 3);
    let before = std::fs::read(&path).unwrap();

    let inspector = Inspector::open(dir.path()).unwrap();
    let items: Vec<_> = inspector.scan(Lsn(0)).collect();
    let records: Vec<_> = items
        .iter()
        .filter_map(|i| match i {
            Item::Record(r) => Some((r.lsn, r.crc_ok, r.payload.to_vec())),
            _ => None,
        })
        .collect();
    assert_eq!(
        records,
        vec![(Lsn(1), true, b"one".to_vec()), (Lsn(2), true, b"two".to_vec())]
    );
    assert!(matches!(items.last(), Some(Item::TornTail(d)) if d.lsn == Lsn(3)));
    let report = inspector.verify();
    assert!(report.is_intact());
    assert_eq!((report.records, report.next_lsn), (2, Lsn(3)));
    assert_eq!(std::fs::read(&path).unwrap(), before, "inspection changes nothing");
}

#[test]
fn damage_to_the_last_group_of_a_cleanly_closed_log_is_corruption_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), config()).unwrap();
    wal.append(b"first").unwrap();
    wal.append_batch(&[b"second", b"third!"]).unwrap();
    let (path, _, _) = wal.tail_extent();
    wal.close().unwrap();
    // Bit rot in the payload of LSN 3: its group header is intact, so without the clean
    // close's checkpoint this would look like a torn tail and be cut.
    let third = HEADER + (GROUP + RECORD + 5) + GROUP + (RECORD + 6) + RECORD;
    flip(&path, third + 2);
    let err = Wal::open(dir.path(), config()).unwrap_err();
    let Error::Corruption { lsn, reason, .. } = &err else {
        panic!("expected Corruption, got {err}")
    };
    assert_eq!(*lsn, Some(Lsn(2)));
    assert!(reason.contains("closed cleanly"), "{reason}");
    let report = Inspector::open(dir.path()).unwrap().verify();
    assert!(!report.is_intact(), "verify reports the damage too");

    let wal = Wal::open(dir.path(), config().with_recovery_mode(RecoveryMode::Salvage)).unwrap();
    assert_eq!(wal.recovery().cut.as_ref().unwrap().lsn, Lsn(2));
    assert_eq!(all(&wal), vec![(1, b"first".to_vec())]);
}

#[test]
fn a_checkpoint_stays_true_as_the_log_grows() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..5u8 {
        let wal = Wal::open(dir.path(), config()).unwrap();
        let rec = wal.recovery();
        assert!(
            rec.torn_tail.is_none() && rec.cut.is_none(),
            "round {round}: a clean reopen repairs nothing: {rec:?}"
        );
        for i in 0..7u8 {
            wal.append(&[round * 10 + i; 900]).unwrap();
        }
        wal.close().unwrap();
    }
    let wal = Wal::open(dir.path(), config()).unwrap();
    assert_eq!(all(&wal).len(), 35);
}

#[test]
fn a_dump_goes_on_after_damage() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), config()).unwrap();
    for i in 0..3u8 {
        wal.append(&[i; 40]).unwrap();
    }
    let (path, _, _) = wal.tail_extent();
    drop(wal);
    flip(&path, HEADER + (GROUP + RECORD + 40) + GROUP + RECORD + 5);
    let items: Vec<_> = Inspector::open(dir.path()).unwrap().scan(Lsn(0)).collect();
    let summary: Vec<_> = items
        .iter()
        .map(|i| match i {
            Item::Record(r) => format!("{}:{}", r.lsn, if r.crc_ok { "ok" } else { "BAD" }),
            Item::Problem(d) => format!("problem@{}", d.lsn),
            Item::TornTail(d) => format!("torn@{}", d.lsn),
            _ => "other".into(),
        })
        .collect();
    assert_eq!(summary, ["1:ok", "2:BAD", "problem@2", "3:ok"]);
}

#[test]
fn replay_lends_every_record_then_stops_at_damage() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), config()).unwrap();
    for i in 0..40u8 {
        wal.append(&[i; 1500]).unwrap();
    }
    let mut seen = Vec::new();
    let n = wal
        .read_from(Lsn(3))
        .unwrap()
        .replay(|lsn, p| seen.push((lsn.0, p[0], p.len())))
        .unwrap();
    assert_eq!(n, 38);
    assert_eq!(seen, (3..=40u64).map(|l| (l, (l - 1) as u8, 1500)).collect::<Vec<_>>());
    drop(wal);

    flip(&segments(dir.path())[1], HEADER + GROUP + RECORD + 700);
    let wal = Wal::open(dir.path(), config()).unwrap();
    let mut seen = Vec::new();
    let err = wal
        .read_from(Lsn::FIRST)
        .unwrap()
        .replay(|lsn, _| seen.push(lsn.0))
        .unwrap_err();
    let Error::Corruption { lsn: Some(bad), .. } = err else {
        panic!("expected Corruption, got {err}")
    };
    assert_eq!(
        seen,
        (1..bad.0).collect::<Vec<_>>(),
        "every record before the damage, nothing after"
    );
}

/// A log whose groups are large allocates its new segments instead of writing zeros over
/// them first (they read as zeros all the same), and recovers from them as from any other:
/// every acknowledged record comes back, and a last group whose sync failed is cut.
#[test]
fn large_groups_get_allocated_segments_that_recover_like_any() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(IoFaults::default());
    let config = Config::default().with_segment_size(8 << 20);
    let wal = Wal::open(dir.path(), config.clone().with_io_faults(Arc::clone(&faults))).unwrap();
    // 1.5 MB groups (one record each): five to a segment.
    let record = |i: u64| vec![i as u8; 1_500_000];
    for i in 0..22 {
        wal.append(&record(i)).unwrap();
    }
    let stats = wal.stats();
    assert!(stats.segment_count >= 4, "{stats:?}");
    // The first segment was made at open, before any group was seen: zeros.
    assert_eq!(stats.zero_filled_segments, 1, "{stats:?}");
    assert!(stats.allocated_segments >= 3, "{stats:?}");
    // The next group is written but its sync fails, and its payload is torn.
    faults.fail_sync_after(0);
    assert!(wal.append(&record(99)).is_err());
    let (path, durable_end, _) = wal.tail_extent();
    wal.crash();
    flip(&path, durable_end + GROUP + RECORD + 1_000);

    let wal = Wal::open(dir.path(), config).unwrap();
    assert!(wal.recovery().torn_tail.is_some(), "{:?}", wal.recovery());
    let records = all(&wal);
    assert_eq!(records.len(), 22);
    for (lsn, payload) in &records {
        assert!(*payload == record(lsn - 1), "record {lsn}");
    }
    let next = wal.append(&record(22)).unwrap();
    assert_eq!(next, Lsn(23));
}

/// Small groups keep zero-filled segments, whose syncs flush data only.
#[test]
fn small_groups_keep_zero_filled_segments() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), Config::default().with_segment_size(1 << 20)).unwrap();
    for i in 0..1_200u32 {
        wal.append(&[i as u8; 4096]).unwrap();
    }
    let stats = wal.stats();
    assert!(stats.segment_count >= 4, "{stats:?}");
    assert_eq!(stats.allocated_segments, 0, "{stats:?}");
    assert!(stats.zero_filled_segments >= 4, "{stats:?}");
}
