//! Model-based property test: random operations on a real log, checked against a plain
//! in-memory model. Every acknowledged, untruncated record must come back byte for byte, in
//! order, and nothing else may.

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use proptest::prelude::*;
use wit_wal::{Config, Error, IoFaults, Lsn, Wal};

#[derive(Debug, Clone)]
enum Damage {
    /// Leave the unsynced group as the page cache has it.
    None,
    /// Cut the file at a byte inside the unsynced group (the rest never reached the disk).
    Truncate(u32),
    /// Zero the bytes from there on (pages that were never written back).
    Zero(u32),
    /// Flip one bit inside the unsynced group.
    Flip(u32, u8),
}

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<u8>),
    AppendBatch(Vec<Vec<u8>>),
    ReadFrom(u16),
    TruncateBefore(u16),
    Reopen,
    /// Direct writes fail with `EINVAL` from here on (until the next crash): the log carries
    /// on through the page cache.
    RefuseDirect,
    /// A sync fails while `records` are being appended (so they are written, never
    /// acknowledged); the process then dies and the unsynced bytes are damaged.
    Crash {
        records: Vec<Vec<u8>>,
        damage: Damage,
    },
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => proptest::collection::vec(any::<u8>(), 0..64),
        2 => proptest::collection::vec(any::<u8>(), 64..700),
        // Large enough to be written from the appender's slice (cut to what fits where the
        // segments are small).
        1 => proptest::collection::vec(any::<u8>(), 16_384..20_000),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let damage = prop_oneof![
        Just(Damage::None),
        any::<u32>().prop_map(Damage::Truncate),
        any::<u32>().prop_map(Damage::Zero),
        (any::<u32>(), 0u8..8).prop_map(|(at, bit)| Damage::Flip(at, bit)),
    ];
    prop_oneof![
        8 => payload().prop_map(Op::Append),
        3 => proptest::collection::vec(payload(), 1..12).prop_map(Op::AppendBatch),
        3 => any::<u16>().prop_map(Op::ReadFrom),
        2 => any::<u16>().prop_map(Op::TruncateBefore),
        1 => Just(Op::Reopen),
        1 => Just(Op::RefuseDirect),
        2 => (proptest::collection::vec(payload(), 1..6), damage)
            .prop_map(|(records, damage)| Op::Crash { records, damage }),
    ]
}

/// How a run's log is laid out and written.
#[derive(Debug, Clone, Copy)]
struct Layout {
    /// Small segments, so rotation, sealing and truncation happen all the time. At 4 KiB no
    /// group is written directly (the trailer's block never is); at 16 KiB the first three
    /// blocks are; 64 KiB ones take records of up to 20 KB.
    segment_size: u64,
    direct_io: bool,
}

fn layout() -> impl Strategy<Value = Layout> {
    (prop_oneof![Just(4096u64), Just(16384), Just(65536)], any::<bool>()).prop_map(|(segment_size, direct_io)| Layout {
        segment_size,
        direct_io,
    })
}

impl Layout {
    fn max_record(&self) -> usize {
        if self.segment_size >= 65536 { 20_000 } else { 1000 }
    }

    fn fit(&self, mut payload: Vec<u8>) -> Vec<u8> {
        payload.truncate(self.max_record());
        payload
    }
}

fn config(layout: Layout, faults: &Arc<IoFaults>) -> Config {
    Config::default()
        .with_segment_size(layout.segment_size)
        .with_max_record_size(layout.max_record())
        .with_direct_io(layout.direct_io)
        .with_io_faults(Arc::clone(faults))
}

/// Opens the log; on failure, says why and what the directory held.
fn reopen(dir: &std::path::Path, layout: Layout, faults: &Arc<IoFaults>) -> Wal {
    Wal::open(dir, config(layout, faults)).unwrap_or_else(|e| {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|f| {
                let f = f.unwrap();
                format!(
                    "{} ({} bytes)",
                    f.file_name().to_string_lossy(),
                    f.metadata().unwrap().len()
                )
            })
            .collect();
        files.sort();
        panic!("opening the log failed: {e:?}\ndirectory: {files:#?}")
    })
}

struct Model {
    /// Every record the log must hold from `floor` on; below `floor` it may hold a suffix.
    records: Vec<Vec<u8>>,
    floor: u64,
}

impl Model {
    fn next_lsn(&self) -> u64 {
        self.records.len() as u64 + 1
    }

    fn get(&self, lsn: u64) -> &[u8] {
        &self.records[(lsn - 1) as usize]
    }
}

fn check_read(wal: &Wal, model: &Model, from: u64) -> Result<(), TestCaseError> {
    let mut expected = from;
    for rec in wal
        .read_from(Lsn(from))
        .map_err(|e| TestCaseError::fail(e.to_string()))?
    {
        let rec = rec.map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(rec.lsn, Lsn(expected), "records in order, without gaps");
        prop_assert!(expected < model.next_lsn(), "LSN {} was never appended", expected);
        prop_assert_eq!(&rec.payload[..], model.get(expected), "payload of LSN {}", expected);
        expected += 1;
    }
    prop_assert_eq!(expected, model.next_lsn(), "the reader stopped early");
    Ok(())
}

fn check_all(wal: &Wal, model: &Model) -> Result<(), TestCaseError> {
    let stats = wal.stats();
    prop_assert_eq!(stats.next_lsn, Lsn(model.next_lsn()));
    let first = stats.first_lsn.unwrap_or(stats.next_lsn).0;
    prop_assert!(
        first <= model.floor.max(1),
        "LSN {} at or above the truncation point {} was released",
        first,
        model.floor
    );
    check_read(wal, model, first)
}

fn run(layout: Layout, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(IoFaults::default());
    let mut wal = reopen(dir.path(), layout, &faults);
    let mut model = Model {
        records: Vec::new(),
        floor: 0,
    };
    for op in ops {
        let op = match op {
            Op::Append(p) => Op::Append(layout.fit(p)),
            Op::AppendBatch(ps) => Op::AppendBatch(ps.into_iter().map(|p| layout.fit(p)).collect()),
            Op::Crash { records, damage } => Op::Crash {
                records: records.into_iter().map(|p| layout.fit(p)).collect(),
                damage,
            },
            other => other,
        };
        match op {
            Op::Append(p) => {
                let lsn = wal.append(&p).unwrap();
                prop_assert_eq!(lsn, Lsn(model.next_lsn()));
                model.records.push(p);
            }
            Op::AppendBatch(ps) => {
                let range = wal.append_batch(&ps).unwrap();
                prop_assert_eq!(range.start, Lsn(model.next_lsn()));
                prop_assert_eq!(range.len(), ps.len() as u64);
                model.records.extend(ps);
            }
            Op::ReadFrom(sel) => {
                let stats = wal.stats();
                let first = stats.first_lsn.unwrap_or(stats.next_lsn).0;
                let span = stats.next_lsn.0 - first + 1;
                check_read(&wal, &model, first + sel as u64 % span)?;
                let below = wal.read_from(Lsn(first - 1));
                prop_assert!(
                    first == 1 || matches!(below, Err(Error::LsnOutOfRange { .. })),
                    "reading below the log fails"
                );
                let beyond = wal.read_from(stats.next_lsn.next());
                prop_assert!(
                    matches!(beyond, Err(Error::LsnOutOfRange { .. })),
                    "reading beyond the log fails"
                );
            }
            Op::TruncateBefore(sel) => {
                let at = sel as u64 % (model.next_lsn() + 1);
                wal.truncate_before(Lsn(at)).unwrap();
                model.floor = model.floor.max(at);
                check_all(&wal, &model)?;
            }
            Op::Reopen => {
                wal.close().unwrap();
                wal = reopen(dir.path(), layout, &faults);
                prop_assert!(wal.recovery().torn_tail.is_none(), "a clean close leaves no torn tail");
                check_all(&wal, &model)?;
            }
            Op::RefuseDirect => faults.refuse_direct_io(true),
            Op::Crash { records, damage } => {
                faults.fail_sync_after(0);
                let result = wal.append_batch(&records);
                prop_assert!(
                    matches!(result, Err(Error::Poisoned { .. })),
                    "a failed sync is reported: {:?}",
                    result
                );
                prop_assert!(
                    matches!(wal.append(b"x"), Err(Error::Poisoned { .. })),
                    "a poisoned log refuses writes"
                );
                let (path, durable_end, written_end) = wal.tail_extent();
                wal.crash();
                faults.clear();
                let unsynced = written_end - durable_end;
                // What the unsynced bytes look like on disk (past the end of the file, zeros:
                // recovery extends a cut file with zeros).
                let region = |path: &std::path::Path| {
                    let file = std::fs::File::open(path).unwrap();
                    let mut buf = vec![0u8; unsynced as usize];
                    let len = file.metadata().unwrap().len();
                    let readable = len.saturating_sub(durable_end).min(unsynced) as usize;
                    file.read_exact_at(&mut buf[..readable], durable_end).unwrap();
                    buf
                };
                let before = region(&path);
                if unsynced > 0 {
                    let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
                    match damage {
                        Damage::None => {}
                        Damage::Truncate(at) => file.set_len(durable_end + at as u64 % unsynced).unwrap(),
                        Damage::Zero(at) => {
                            let from = durable_end + at as u64 % unsynced;
                            file.write_all_at(&vec![0; (written_end - from) as usize], from)
                                .unwrap();
                        }
                        Damage::Flip(at, bit) => {
                            let at = durable_end + at as u64 % unsynced;
                            let mut b = [0u8];
                            file.read_at(&mut b, at).unwrap();
                            file.write_all_at(&[b[0] ^ (1 << bit)], at).unwrap();
                        }
                    }
                }
                // Damage that rewrote bytes with what they held (zeros over zeros) is none.
                let damaged = region(&path) != before;
                wal = reopen(dir.path(), layout, &faults);
                // Unacknowledged records may survive as a prefix of the batch (its groups
                // before a rotation were synced by the seal), never in part of a group: the
                // damaged last group is always lost.
                let survived = wal.stats().next_lsn.0 - model.next_lsn();
                prop_assert!(
                    survived <= records.len() as u64,
                    "records that were never appended came back"
                );
                prop_assert!(
                    !damaged || survived < records.len() as u64,
                    "a damaged unsynced group came back"
                );
                model.records.extend(records.into_iter().take(survived as usize));
                check_all(&wal, &model)?;
            }
        }
    }
    wal.close().unwrap();
    let wal = reopen(dir.path(), layout, &faults);
    check_all(&wal, &model)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(layout in layout(), ops in proptest::collection::vec(op(), 1..60)) {
        run(layout, ops)?;
    }
}
