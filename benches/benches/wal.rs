//! `wit-wal` beside the machine's own ceilings and two other Rust WALs.
//!
//! Four workloads, each measured for every contender in the same run:
//!
//! 1. `append_1_writer/*`: one thread, one durable append per iteration, records of 128 B,
//!    1 KiB and 64 KiB.
//! 2. `append_8_writers/*`: eight threads append concurrently; one criterion iteration is one
//!    record, so the throughput is records/s over all threads.
//! 3. `replay_1GiB/*`: read back 1 GiB of 1 KiB records (2^20 of them) from the page cache,
//!    checksums verified. okaywal and mrecordlog replay only by reopening (`*_reopen`, open
//!    included in the time); wit-wal is measured both reading from an open log and reopening.
//! 4. `paired_1_writer`: workload 1 again (1 KiB and 64 KiB), with the contenders taking
//!    turns. Criterion measures one contender after another, and on a shared machine the disk's
//!    speed drifts between them by more than the differences being measured (the same raw
//!    loop was seen at 119 µs and 231 µs mean a minute apart). Here every contender appends
//!    a block of records in each round, in an order that rotates from round to round, and
//!    every append is timed on its own. Printed (and written to
//!    `$CARGO_TARGET_TMPDIR/wal-bench-paired.txt`): per contender records/s, p50, p99, p99.9
//!    and max, and against the raw ceiling the ratio of the overall means and the median of
//!    the per-round ratios. Not a criterion benchmark, so it runs unless a filter that does
//!    not match its name is given.
//! 5. `growing_log`: 8 MiB records (the groups a Kafka burst or a large batch makes) appended
//!    to a log that only grows, 512 MiB per turn, the contenders taking turns as in 4:
//!    `raw_growing`, the ceiling, appends to files extended by the writes themselves (nothing
//!    reserved ahead, one `fdatasync` per record, a new file every 64 MiB);
//!    `raw_zeros_ahead` does the same into files zero-filled by a background thread while the
//!    one before fills (what wit-wal did for every new segment until large groups got
//!    allocated ones); `raw_direct_growing` is `raw_growing` through an `O_DIRECT`
//!    descriptor (no copy into the page cache, as wit-wal writes large groups);
//!    `wit-wal` is a fresh log with the default configuration. Printed (and
//!    written to `$CARGO_TARGET_TMPDIR/wal-bench-growing.txt`): MB/s per contender, median of
//!    the turns, and the median of the per-round ratios to the ceiling.
//!
//! The contenders, and what "durable" means for each:
//!
//! - `raw_*`, the ceiling: a preallocated, zero-filled file; records are written with
//!   `pwrite` (`FileExt::write_all_at`) at the next offset, followed by `fdatasync`
//!   (`File::sync_data`): one per record for one writer, one per group of pending records
//!   for eight (a mutex-protected buffer; whoever finds no sync running writes and syncs
//!   everything pending; the simplest correct group commit, so a log that waits briefly to
//!   gather more writers into a group can beat it). For replay: `File::read` into a 1 MiB
//!   buffer of the first 1 GiB of wit-wal's segment files (the same files wit-wal replays,
//!   already in the page cache).
//! - `raw_direct_fdatasync` (paired workload only), for reference: the same loop through an
//!   `O_DIRECT` descriptor, the way wit-wal writes by default: each record is written as the
//!   whole 4 KiB blocks it touches (the earlier bytes of its first block in front, zeros
//!   after), then `fdatasync` flushes the device's cache. No page-cache writeback is left to
//!   the sync, which on this machine's disk makes it a few per cent faster than the ceiling.
//! - `wit-wal`: `Config::default()` (64 MiB segments, `SyncMode::SyncData`: `fdatasync` per
//!   group before `append` returns; groups written with direct I/O). `wit-wal_buffered`
//!   (paired workload only): the same with `with_direct_io(false)`, through the page cache
//!   as the ceiling writes. Never truncated, except `wit-wal_truncating` (64 KiB
//!   records, one writer): `truncate_before` every 256 appends, so sealed segments are
//!   recycled as spares as okaywal recycles its checkpointed ones.
//! - `okaywal` 0.3.1: `begin_entry` + `write_chunk` + `commit` per record. `commit` always
//!   returns after `File::sync_data` of the active segment (and a directory fsync when the
//!   segment is new); there is nothing to configure. Segments preallocated to 64 MiB,
//!   checkpointed (and recycled, with a no-op `LogManager`) after 48 MiB, the crate's default
//!   3:4 ratio.
//! - `mrecordlog` 0.4.0: `append_record` on one queue with `SyncPolicy::OnAppend`. **That
//!   policy only flushes mrecordlog's userspace buffer to the kernel (`BufWriter::flush`);
//!   0.4.0 never calls `fsync`/`fdatasync`.** To make every append durable, the bench opens
//!   the current log file itself and calls `File::sync_data` on it after every append (an
//!   fdatasync of the same inode); when mrecordlog rolls to a new file, the previous file
//!   and the directory are synced too. mrecordlog is single-writer (`&mut self`): with eight
//!   writers it sits behind a `Mutex`, hence the id `mrecordlog_mutex`.
//!
//! All logs live under `$CARGO_TARGET_TMPDIR/wal-bench/` (one file system for all), in fresh
//! temporary directories removed afterwards. Each contender's setup is let settle before it
//! is measured (see `settle`): no background preallocation running, setup data on disk.
//! Timings are never asserted; record counts and byte sums of replays are.

use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::time::{Duration, Instant};

use aligned_vec::{AVec, ConstAlign};
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use mrecordlog::{MultiRecordLog, SyncPolicy};
use okaywal::{Configuration, Entry, EntryId, LogManager, ReadChunkResult, SegmentReader, WriteAheadLog};
use wit_wal::{Config, Lsn, SyncMode, Wal};

/// Segment size of wit-wal (its default), of okaywal's preallocation and of the raw file.
const SEGMENT_SIZE: u64 = 64 << 20;
/// Concurrent writers in workload 2.
const WRITERS: usize = 8;
/// Replay workload: 2^20 records of 1 KiB = 1 GiB of payload.
const REPLAY_RECORD: usize = 1024;
const REPLAY_RECORDS: u64 = 1 << 20;
const REPLAY_BYTES: u64 = REPLAY_RECORDS * REPLAY_RECORD as u64;
/// The one queue mrecordlog is given.
const QUEUE: &str = "bench";

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .without_plots();
    targets = append_1_writer, paired_1_writer, append_8_writers, replay, growing_log
}
criterion_main!(benches);

// ---------------------------------------------------------------------------------------------
// Workload 1: one writer, one durable append per iteration.

fn append_1_writer(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_1_writer");
    group.throughput(Throughput::Elements(1));
    for size in [128, 1024, 64 << 10] {
        let rec = record(size, 1);
        let label = size_label(size);

        let mut raw = None;
        group.bench_function(BenchmarkId::new("raw_pwrite_fdatasync", &label), |b| {
            let (_dir, raw) = raw.get_or_insert_with(|| {
                let dir = scratch();
                let raw = RawLog::create(&dir.path().join("raw.log"), SEGMENT_SIZE);
                settle(dir.path());
                (dir, raw)
            });
            b.iter_custom(|iters| timed_loop(iters, || raw.append(&rec)));
        });
        drop(raw);

        let mut wal = None;
        group.bench_function(BenchmarkId::new("wit-wal", &label), |b| {
            let (_dir, wal) = wal.get_or_insert_with(fresh_wit_wal);
            b.iter_custom(|iters| timed_loop(iters, || black_box_append(wal, &rec)));
        });
        drop(wal);

        if size == 64 << 10 {
            // Large records fill a segment a second; without truncation every new segment is
            // a fresh 64 MiB zero-filled file. Here the log is truncated as it goes (what
            // okaywal's checkpoints do with a no-op checkpointer), so sealed segments are
            // recycled as spares instead.
            let mut wal = None;
            group.bench_function(BenchmarkId::new("wit-wal_truncating", &label), |b| {
                let (_dir, wal) = wal.get_or_insert_with(fresh_wit_wal);
                b.iter_custom(|iters| timed_loop(iters, || append_truncating(wal, &rec)));
            });
            drop(wal);
        }

        let mut okay = None;
        group.bench_function(BenchmarkId::new("okaywal", &label), |b| {
            let (_dir, log) = okay.get_or_insert_with(|| {
                let dir = scratch();
                let log = open_okaywal(dir.path());
                settle(dir.path());
                (dir, log)
            });
            b.iter_custom(|iters| timed_loop(iters, || okaywal_append(log, &rec)));
        });
        shutdown_okaywal(okay);

        let mut mrl = None;
        group.bench_function(BenchmarkId::new("mrecordlog", &label), |b| {
            let (_dir, log) = mrl.get_or_insert_with(|| {
                let dir = scratch();
                let log = DurableMrecordlog::open(dir.path());
                settle(dir.path());
                (dir, log)
            });
            b.iter_custom(|iters| timed_loop(iters, || log.append(&rec)));
        });
        drop(mrl);
    }
    group.finish();
}

fn black_box_append(wal: &Wal, rec: &[u8]) {
    black_box(wal.append(rec).expect("wit-wal append"));
}

/// An append to a log that is truncated every 256 records, so sealed segments are recycled.
fn append_truncating(wal: &Wal, rec: &[u8]) {
    let lsn = wal.append(rec).expect("wit-wal append");
    if lsn.0.is_multiple_of(256) {
        wal.truncate_before(lsn).expect("wit-wal truncate_before");
    }
}

/// Runs `op` `iters` times and returns how long that took.
fn timed_loop(iters: u64, mut op: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        op();
    }
    start.elapsed()
}

// ---------------------------------------------------------------------------------------------
// Workload 4: workload 1 with the contenders taking turns.

/// Rounds of the paired workload, and records per contender per round, by record size.
const PAIRED: [(usize, usize, usize); 2] = [(1024, 100, 200), (64 << 10, 100, 50)];

/// One contender of the paired workload: its name and one durable append.
type Contender<'a> = (&'static str, Box<dyn FnMut() + 'a>);

fn paired_1_writer(_: &mut Criterion) {
    // Criterion's filter is the one argument that is not an option.
    let name = "paired_1_writer";
    if let Some(filter) = std::env::args().skip(1).rfind(|a| !a.starts_with('-'))
        && !name.contains(&filter)
    {
        return;
    }
    let mut out = String::new();
    for (size, rounds, block) in PAIRED {
        let rec = record(size, 4);
        let dirs: Vec<tempfile::TempDir> = (0..7).map(|_| scratch()).collect();
        let mut raw = RawLog::create(&dirs[0].path().join("raw.log"), SEGMENT_SIZE);
        let mut raw_direct = RawDirectLog::create(&dirs[1].path().join("raw.log"), SEGMENT_SIZE);
        let wal = open_wit_wal(dirs[2].path(), SyncMode::SyncData);
        let buffered = Wal::open(
            dirs[3].path(),
            Config::default().with_segment_size(SEGMENT_SIZE).with_direct_io(false),
        )
        .expect("wit-wal open");
        let truncating = open_wit_wal(dirs[4].path(), SyncMode::SyncData);
        let okay = open_okaywal(dirs[5].path());
        let mut mrl = DurableMrecordlog::open(dirs[6].path());
        dirs.iter().for_each(|d| settle(d.path()));
        assert!(wal.stats().direct_io, "the bench's file system takes direct I/O");
        let mut contenders: Vec<Contender<'_>> = vec![
            ("raw_pwrite_fdatasync", Box::new(|| raw.append(&rec))),
            ("raw_direct_fdatasync", Box::new(|| raw_direct.append(&rec))),
            ("wit-wal", Box::new(|| black_box_append(&wal, &rec))),
            ("wit-wal_buffered", Box::new(|| black_box_append(&buffered, &rec))),
            ("wit-wal_truncating", Box::new(|| append_truncating(&truncating, &rec))),
            ("okaywal", Box::new(|| okaywal_append(&okay, &rec))),
            ("mrecordlog", Box::new(|| mrl.append(&rec))),
        ];
        if size < 64 << 10 {
            // Truncation only matters once segments fill up within the run.
            drop(contenders.remove(4));
        }
        // Warm-up, then the rounds: blocks[c][r] holds contender c's appends of round r.
        for (_, append) in &mut contenders {
            (0..block).for_each(|_| append());
        }
        let k = contenders.len();
        let mut blocks: Vec<Vec<Vec<Duration>>> = vec![Vec::with_capacity(rounds); k];
        for r in 0..rounds {
            for c in (0..k).map(|i| (i + r) % k) {
                let append = &mut contenders[c].1;
                let timed = (0..block).map(|_| {
                    let t = Instant::now();
                    append();
                    t.elapsed()
                });
                blocks[c].push(timed.collect());
            }
        }
        let names: Vec<&str> = contenders.iter().map(|(n, _)| *n).collect();
        drop(contenders);
        drop((raw, raw_direct, wal, buffered, truncating, mrl));
        okay.shutdown().expect("okaywal shutdown");
        drop(dirs);
        out.push_str(&paired_report(&size_label(size), &names, &blocks));
    }
    eprintln!("\n{out}");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wal-bench-paired.txt");
    if let Err(e) = std::fs::write(&path, &out) {
        eprintln!("could not write {}: {e}", path.display());
    }
}

// ---------------------------------------------------------------------------------------------
// Workload 5: large records into a log that only grows.

/// Record size, bytes per turn and rounds of the growing-log workload.
const GROWING_RECORD: usize = 8 << 20;
const GROWING_TURN: u64 = 512 << 20;
const GROWING_ROUNDS: usize = 5;

fn growing_log(_: &mut Criterion) {
    let name = "growing_log";
    if let Some(filter) = std::env::args().skip(1).rfind(|a| !a.starts_with('-'))
        && !name.contains(&filter)
    {
        return;
    }
    let rec = record(GROWING_RECORD, 9);
    let records = (GROWING_TURN / GROWING_RECORD as u64) as usize;
    let names = ["raw_growing", "raw_zeros_ahead", "raw_direct_growing", "wit-wal"];
    let k = names.len();
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); k];
    let mut made = (0, 0);
    for r in 0..GROWING_ROUNDS {
        for c in (0..k).map(|i| (i + r) % k) {
            let dir = scratch();
            // Set up first (the first file or segment made, then settled), then timed.
            let elapsed = match c {
                0 | 1 => {
                    let zeros_ahead = c == 1;
                    let first = raw_file(dir.path(), 0, zeros_ahead);
                    settle(dir.path());
                    let t = Instant::now();
                    raw_growing(dir.path(), first, &rec, records, zeros_ahead);
                    t.elapsed()
                }
                2 => {
                    settle(dir.path());
                    let t = Instant::now();
                    raw_direct_growing(dir.path(), &rec, records);
                    t.elapsed()
                }
                _ => {
                    let wal = open_wit_wal(dir.path(), SyncMode::SyncData);
                    settle(dir.path());
                    let t = Instant::now();
                    for _ in 0..records {
                        black_box_append(&wal, &rec);
                    }
                    let elapsed = t.elapsed();
                    let stats = wal.stats();
                    made = (stats.allocated_segments, stats.zero_filled_segments);
                    wal.close().expect("close");
                    elapsed
                }
            };
            rates[c].push(GROWING_TURN as f64 / elapsed.as_secs_f64() / 1e6);
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut out = format!(
        "growing_log: {} MiB records, {} MiB per turn, {GROWING_ROUNDS} rounds\n{:<18} {:>8} {:>14}\n",
        GROWING_RECORD >> 20,
        GROWING_TURN >> 20,
        "",
        "MB/s",
        "vs ceiling"
    );
    for (c, name) in names.iter().enumerate() {
        let ratios: Vec<f64> = rates[c].iter().zip(&rates[0]).map(|(x, ceiling)| x / ceiling).collect();
        out.push_str(&format!(
            "{name:<18} {:>8.0} {:>13.2}x\n",
            median(rates[c].clone()),
            median(ratios)
        ));
    }
    out.push_str(&format!(
        "wit-wal's new segments in its last turn: {} allocated, {} zero-filled (the first, at open)\n",
        made.0, made.1
    ));
    eprintln!("\n{out}");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wal-bench-growing.txt");
    if let Err(e) = std::fs::write(&path, &out) {
        eprintln!("could not write {}: {e}", path.display());
    }
}

/// File `n` of a raw growing log: empty, or (`zeros_ahead`) zero-filled.
fn raw_file(dir: &Path, n: usize, zeros_ahead: bool) -> File {
    let path = dir.join(format!("{n:04}.log"));
    if zeros_ahead {
        create_zeroed(&path, SEGMENT_SIZE)
    } else {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .expect("create")
    }
}

/// Appends `records` copies of `rec` with one `fdatasync` each, starting in `file` (file 0,
/// from `raw_file`), to files of `SEGMENT_SIZE` made as they fill up: extended by the
/// writes, or (`zeros_ahead`) zero-filled by a background thread while the file before
/// fills.
fn raw_growing(dir: &Path, mut file: File, rec: &[u8], records: usize, zeros_ahead: bool) {
    let mut n = 0;
    let mut ahead: Option<std::thread::JoinHandle<File>> = None;
    let mut offset = 0u64;
    for _ in 0..records {
        if offset + rec.len() as u64 > SEGMENT_SIZE {
            n += 1;
            file = match ahead.take() {
                Some(handle) => handle.join().expect("zero-fill thread"),
                None => raw_file(dir, n, zeros_ahead),
            };
            sync_dir(dir);
            offset = 0;
        }
        if zeros_ahead && ahead.is_none() && offset >= SEGMENT_SIZE / 4 {
            let path = dir.join(format!("{:04}.log", n + 1));
            ahead = Some(std::thread::spawn(move || create_zeroed(&path, SEGMENT_SIZE)));
        }
        file.write_all_at(rec, offset).expect("write");
        file.sync_data().expect("fdatasync");
        offset += rec.len() as u64;
    }
    if let Some(handle) = ahead {
        drop(handle.join());
    }
}

/// Appends `records` copies of `rec` (a multiple of 4 KiB) with `O_DIRECT` and one
/// `fdatasync` each, to files of `SEGMENT_SIZE` extended by the writes themselves.
fn raw_direct_growing(dir: &Path, rec: &[u8], records: usize) {
    use std::os::unix::fs::OpenOptionsExt;
    assert!(rec.len().is_multiple_of(BLOCK));
    let mut buf: AVec<u8, ConstAlign<BLOCK>> = AVec::new(BLOCK);
    buf.extend_from_slice(rec);
    let open = |n: usize| {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_DIRECT)
            .open(dir.join(format!("{n:04}.log")))
            .expect("create with O_DIRECT")
    };
    let (mut n, mut offset) = (0, 0u64);
    let mut file = open(n);
    for _ in 0..records {
        if offset + rec.len() as u64 > SEGMENT_SIZE {
            n += 1;
            file = open(n);
            sync_dir(dir);
            offset = 0;
        }
        file.write_all_at(&buf, offset).expect("pwrite O_DIRECT");
        file.sync_data().expect("fdatasync");
        offset += rec.len() as u64;
    }
}

/// The paired workload's table for one record size; contender 0 is the ceiling.
fn paired_report(label: &str, names: &[&str], blocks: &[Vec<Vec<Duration>>]) -> String {
    let mean = |d: &[Duration]| d.iter().sum::<Duration>().as_secs_f64() / d.len() as f64;
    let ceiling: Vec<f64> = blocks[0].iter().map(|b| mean(b)).collect();
    let mut out = format!(
        "paired_1_writer/{label}: {} rounds of {} appends each, order rotating\n",
        blocks[0].len(),
        blocks[0][0].len()
    );
    for (name, rounds) in names.iter().zip(blocks) {
        let mut all: Vec<Duration> = rounds.concat();
        let overall = mean(&all);
        all.sort_unstable();
        let q = |p: f64| all[((all.len() - 1) as f64 * p).round() as usize];
        let mut per_round: Vec<f64> = rounds.iter().zip(&ceiling).map(|(b, c)| c / mean(b)).collect();
        per_round.sort_unstable_by(f64::total_cmp);
        out.push_str(&format!(
            "  {name:<22} {:>8.0} rec/s  p50={:>8.1?}  p99={:>8.1?}  p99.9={:>8.1?}  max={:>8.1?}  \
             vs ceiling: {:.2}x (means), {:.2}x (median round)\n",
            1.0 / overall,
            q(0.50),
            q(0.99),
            q(0.999),
            all[all.len() - 1],
            mean(&blocks[0].concat()) / overall,
            per_round[per_round.len() / 2],
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Workload 2: eight writers.

fn append_8_writers(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_8_writers");
    // One iteration is one record; each sample spreads its records over the eight threads.
    group.throughput(Throughput::Elements(1));
    for size in [128, 1024] {
        let rec = record(size, 2);
        let label = size_label(size);

        let mut raw = None;
        group.bench_function(BenchmarkId::new("raw_group_commit", &label), |b| {
            let (_dir, raw) = raw.get_or_insert_with(|| {
                let dir = scratch();
                let raw = RawGroupLog::create(&dir.path().join("raw.log"), SEGMENT_SIZE);
                settle(dir.path());
                (dir, raw)
            });
            b.iter_custom(|iters| spread_over_writers(iters, || raw.append(&rec)));
        });
        drop(raw);

        let mut wal = None;
        group.bench_function(BenchmarkId::new("wit-wal", &label), |b| {
            let (_dir, wal) = wal.get_or_insert_with(fresh_wit_wal);
            b.iter_custom(|iters| {
                spread_over_writers(iters, || {
                    black_box(wal.append(&rec).expect("wit-wal append"));
                })
            });
        });
        drop(wal);

        let mut okay = None;
        group.bench_function(BenchmarkId::new("okaywal", &label), |b| {
            let (_dir, log) = okay.get_or_insert_with(|| {
                let dir = scratch();
                let log = open_okaywal(dir.path());
                settle(dir.path());
                (dir, log)
            });
            b.iter_custom(|iters| spread_over_writers(iters, || okaywal_append(log, &rec)));
        });
        shutdown_okaywal(okay);

        let mut mrl = None;
        group.bench_function(BenchmarkId::new("mrecordlog_mutex", &label), |b| {
            let (_dir, log) = &*mrl.get_or_insert_with(|| {
                let dir = scratch();
                let log = Mutex::new(DurableMrecordlog::open(dir.path()));
                settle(dir.path());
                (dir, log)
            });
            b.iter_custom(|iters| spread_over_writers(iters, || log.lock().expect("not poisoned").append(&rec)));
        });
        drop(mrl);
    }
    group.finish();
}

/// Calls `append` `iters` times in all, spread evenly over [`WRITERS`] threads that start
/// together; returns the time from the start until the last thread is done.
fn spread_over_writers(iters: u64, append: impl Fn() + Sync) -> Duration {
    let barrier = Barrier::new(WRITERS + 1);
    std::thread::scope(|s| {
        let (barrier, append) = (&barrier, &append);
        let handles: Vec<_> = (0..WRITERS as u64)
            .map(|t| {
                let n = iters / WRITERS as u64 + u64::from(t < iters % WRITERS as u64);
                s.spawn(move || {
                    barrier.wait();
                    for _ in 0..n {
                        append();
                    }
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for h in handles {
            h.join().expect("writer thread");
        }
        start.elapsed()
    })
}

// ---------------------------------------------------------------------------------------------
// Workload 3: replay of 1 GiB from the page cache.

fn replay(c: &mut Criterion) {
    let mut group = c.benchmark_group("replay_1GiB");
    group
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(8));

    // wit-wal's segments, written once, serve the raw ceiling and both wit-wal readers.
    let mut wit: Option<(tempfile::TempDir, Option<Wal>)> = None;
    let mut setup_wit = || {
        let dir = scratch();
        let wal = open_wit_wal(dir.path(), SyncMode::Buffer);
        let rec = record(REPLAY_RECORD, 3);
        let batch = vec![rec.as_slice(); 1024];
        for _ in 0..REPLAY_RECORDS / batch.len() as u64 {
            wal.append_batch(&batch).expect("wit-wal append_batch");
        }
        wal.sync().expect("wit-wal sync");
        settle(dir.path());
        (dir, Some(wal))
    };

    group.throughput(Throughput::Bytes(REPLAY_BYTES));
    group.bench_function("raw_read", |b| {
        let (dir, _) = wit.get_or_insert_with(&mut setup_wit);
        let segments = wit_wal_segments(dir.path());
        let mut buf = vec![0u8; 1 << 20];
        b.iter(|| black_box(read_prefix(&segments, REPLAY_BYTES, &mut buf)));
    });

    group.bench_function("wit-wal", |b| {
        let (_, wal) = wit.get_or_insert_with(&mut setup_wit);
        let wal = wal.as_ref().expect("open");
        b.iter(|| black_box(read_all_wit_wal(wal)));
    });

    group.bench_function("wit-wal_replay_lent", |b| {
        let (_, wal) = wit.get_or_insert_with(&mut setup_wit);
        let wal = wal.as_ref().expect("open");
        b.iter(|| black_box(replay_wit_wal(wal)));
    });

    // The two other logs can only replay by reopening; this is wit-wal doing the same.
    group.bench_function("wit-wal_reopen", |b| {
        let (dir, wal) = wit.get_or_insert_with(&mut setup_wit);
        drop(wal.take());
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let wal = open_wit_wal(dir.path(), SyncMode::SyncData);
                black_box(read_all_wit_wal(&wal));
                elapsed += start.elapsed();
                drop(wal);
            }
            elapsed
        });
    });
    // Opening trusts sealed segments through their trailers and scans only the tail.
    group.bench_function("wit-wal_open_only", |b| {
        let (dir, wal) = wit.get_or_insert_with(&mut setup_wit);
        drop(wal.take());
        b.iter(|| black_box(open_wit_wal(dir.path(), SyncMode::SyncData).stats()));
    });
    drop(wit);

    let mut okay = None;
    group.bench_function("okaywal_reopen", |b| {
        let (dir, counts) = okay.get_or_insert_with(|| {
            let dir = scratch();
            let counts = Arc::new(ReplayCounts::default());
            write_okaywal_replay_set(dir.path(), &counts);
            settle(dir.path());
            (dir, counts)
        });
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                counts.reset();
                let start = Instant::now();
                let log = replay_okaywal_config(dir.path())
                    .open(BenchLogManager::new(counts))
                    .expect("okaywal reopen");
                elapsed += start.elapsed();
                assert_eq!(counts.get(), (REPLAY_RECORDS, REPLAY_BYTES), "okaywal replay");
                log.shutdown().expect("okaywal shutdown");
            }
            elapsed
        });
    });
    drop(okay);

    let mut mrl = None;
    group.bench_function("mrecordlog_reopen", |b| {
        let (dir, rt) = mrl.get_or_insert_with(|| {
            let dir = scratch();
            let rt = runtime();
            write_mrecordlog_replay_set(&rt, dir.path());
            settle(dir.path());
            (dir, rt)
        });
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let log = rt
                    .block_on(MultiRecordLog::open(dir.path()))
                    .expect("mrecordlog reopen");
                let (mut n, mut bytes) = (0u64, 0u64);
                for (_, payload) in log.range(QUEUE, ..).expect("queue") {
                    n += 1;
                    bytes += payload.len() as u64;
                }
                elapsed += start.elapsed();
                assert_eq!((n, bytes), (REPLAY_RECORDS, REPLAY_BYTES), "mrecordlog replay");
                drop(log);
            }
            elapsed
        });
    });
    drop(mrl);
    group.finish();
}

/// The raw ceiling: reads the first `n` bytes of `files`, in order, with `File::read` into
/// `buf`; returns the bytes read.
fn read_prefix(files: &[PathBuf], n: u64, buf: &mut [u8]) -> u64 {
    let mut total = 0u64;
    for path in files {
        let mut f = File::open(path).expect("open segment");
        while total < n {
            let want = buf.len().min((n - total) as usize);
            let got = f.read(&mut buf[..want]).expect("read segment");
            if got == 0 {
                break;
            }
            total += got as u64;
        }
    }
    assert_eq!(total, n, "raw read");
    total
}

/// Reads every record (checksums are verified by the reader); returns the payload bytes.
fn read_all_wit_wal(wal: &Wal) -> u64 {
    let (mut n, mut bytes) = (0u64, 0u64);
    for r in wal.read_from(Lsn::FIRST).expect("wit-wal read_from") {
        let r = r.expect("wit-wal record");
        n += 1;
        bytes += r.payload.len() as u64;
    }
    assert_eq!((n, bytes), (REPLAY_RECORDS, REPLAY_BYTES), "wit-wal replay");
    bytes
}

/// Replays with `Reader::replay`, which lends each payload instead of making a `Bytes`.
fn replay_wit_wal(wal: &Wal) -> u64 {
    let mut bytes = 0u64;
    let mut reader = wal.read_from(Lsn::FIRST).expect("wit-wal read_from");
    let n = reader
        .replay(|_, payload| bytes += payload.len() as u64)
        .expect("wit-wal replay");
    assert_eq!((n, bytes), (REPLAY_RECORDS, REPLAY_BYTES), "wit-wal replay");
    bytes
}

/// The segment files (`*.wal`, not spares) of a wit-wal directory, in order.
fn wit_wal_segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read WAL directory")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

/// Writes the replay set into okaywal: one entry of one chunk per record, like the other
/// logs. okaywal has no unsynced mode, so 64 threads commit concurrently to share fsyncs.
/// All of it goes into one segment (preallocated to 1.25 GiB, never checkpointed): okaywal
/// hands recovered segments other than the newest to its checkpointer on open, after which
/// they would not be replayed again.
fn write_okaywal_replay_set(dir: &Path, counts: &Arc<ReplayCounts>) {
    const THREADS: u64 = 64;
    let log = replay_okaywal_config(dir)
        .open(BenchLogManager::new(counts))
        .expect("okaywal open");
    let rec = record(REPLAY_RECORD, 3);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                for _ in 0..REPLAY_RECORDS / THREADS {
                    okaywal_append(&log, &rec);
                }
            });
        }
    });
    log.shutdown().expect("okaywal shutdown");
}

fn replay_okaywal_config(dir: &Path) -> Configuration {
    Configuration::default_for(dir)
        .preallocate_bytes(1280 << 20)
        .checkpoint_after_bytes(u64::MAX)
}

/// Writes the replay set into mrecordlog, one `append_record` per record, synced at the end.
fn write_mrecordlog_replay_set(rt: &tokio::runtime::Runtime, dir: &Path) {
    let rec = record(REPLAY_RECORD, 3);
    rt.block_on(async {
        let mut log = MultiRecordLog::open_with_prefs(dir, SyncPolicy::OnDelay(Duration::from_secs(3600)))
            .await
            .expect("mrecordlog open");
        log.create_queue(QUEUE).await.expect("mrecordlog create_queue");
        for _ in 0..REPLAY_RECORDS {
            log.append_record(QUEUE, None, rec.as_slice())
                .await
                .expect("mrecordlog append");
        }
        log.sync().await.expect("mrecordlog flush");
    });
}

// ---------------------------------------------------------------------------------------------
// The raw ceilings.

/// One writer's ceiling: `pwrite` of each record at the next offset of a preallocated,
/// zero-filled file, then `fdatasync`. Wraps to the start at the end of the file.
struct RawLog {
    file: File,
    len: u64,
    offset: u64,
}

impl RawLog {
    fn create(path: &Path, len: u64) -> RawLog {
        RawLog {
            file: create_zeroed(path, len),
            len,
            offset: 0,
        }
    }

    fn append(&mut self, rec: &[u8]) {
        if self.offset + rec.len() as u64 > self.len {
            self.offset = 0;
        }
        self.file.write_all_at(rec, self.offset).expect("pwrite");
        self.file.sync_data().expect("fdatasync");
        self.offset += rec.len() as u64;
    }
}

/// For reference beside the ceiling: the same loop with direct I/O, as wit-wal writes by
/// default. The file is opened with `O_DIRECT`; each record is copied behind the bytes
/// already in its first 4 KiB block, and the whole blocks it touches are written with one
/// `pwrite` (zeros after it), then `fdatasync` flushes the device's cache.
struct RawDirectLog {
    file: File,
    len: u64,
    offset: u64,
    /// The block-aligned buffer; starts with the bytes of the block holding `offset`.
    buf: AVec<u8, ConstAlign<BLOCK>>,
}

const BLOCK: usize = 4096;

impl RawDirectLog {
    fn create(path: &Path, len: u64) -> RawDirectLog {
        use std::os::unix::fs::OpenOptionsExt;
        drop(create_zeroed(path, len));
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .expect("open raw file with O_DIRECT");
        RawDirectLog {
            file,
            len,
            offset: 0,
            buf: AVec::new(BLOCK),
        }
    }

    fn append(&mut self, rec: &[u8]) {
        if self.offset + rec.len() as u64 > self.len {
            self.offset = 0;
            self.buf.clear();
        }
        let start = self.offset / BLOCK as u64 * BLOCK as u64;
        let lead = (self.offset - start) as usize;
        self.buf.truncate(lead);
        self.buf.extend_from_slice(rec);
        let end = self.buf.len();
        self.buf.resize(end.next_multiple_of(BLOCK), 0);
        self.file.write_all_at(&self.buf, start).expect("pwrite O_DIRECT");
        self.file.sync_data().expect("fdatasync");
        // Keep the bytes of the block that now holds the end.
        let last = end / BLOCK * BLOCK;
        self.buf.copy_within(last..end, 0);
        self.buf.truncate(end - last);
        self.offset += rec.len() as u64;
    }
}

/// Concurrent writers' ceiling: the simplest correct group commit. Records are appended to a
/// mutex-protected buffer; a writer whose record is not yet durable and finds no sync running
/// writes everything pending with one `pwrite` and one `fdatasync`, then wakes the others.
struct RawGroupLog {
    file: File,
    len: u64,
    state: Mutex<GroupState>,
    synced: Condvar,
}

#[derive(Default)]
struct GroupState {
    pending: Vec<u8>,
    spare: Vec<u8>,
    /// Records queued so far, and how many of them are durable.
    queued: u64,
    durable: u64,
    syncing: bool,
    offset: u64,
}

impl RawGroupLog {
    fn create(path: &Path, len: u64) -> RawGroupLog {
        RawGroupLog {
            file: create_zeroed(path, len),
            len,
            state: Mutex::new(GroupState::default()),
            synced: Condvar::new(),
        }
    }

    fn append(&self, rec: &[u8]) {
        let mut st = self.state.lock().expect("not poisoned");
        st.pending.extend_from_slice(rec);
        st.queued += 1;
        let me = st.queued;
        while st.durable < me {
            if st.syncing {
                st = self.synced.wait(st).expect("not poisoned");
                continue;
            }
            st.syncing = true;
            let fresh = std::mem::take(&mut st.spare);
            let mut group = std::mem::replace(&mut st.pending, fresh);
            let upto = st.queued;
            if st.offset + group.len() as u64 > self.len {
                st.offset = 0;
            }
            let at = st.offset;
            st.offset += group.len() as u64;
            drop(st);

            self.file.write_all_at(&group, at).expect("pwrite");
            self.file.sync_data().expect("fdatasync");
            group.clear();

            st = self.state.lock().expect("not poisoned");
            st.spare = group;
            st.durable = upto;
            st.syncing = false;
            self.synced.notify_all();
        }
    }
}

/// Creates a zero-filled file of `len` bytes, synced, and syncs its directory.
fn create_zeroed(path: &Path, len: u64) -> File {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .expect("create raw file");
    let zeros = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..n]).expect("preallocate raw file");
        left -= n as u64;
    }
    file.sync_all().expect("sync raw file");
    sync_dir(path.parent().expect("parent"));
    file
}

// ---------------------------------------------------------------------------------------------
// The contenders' setup.

/// A new, empty wit-wal in a scratch directory, in `SyncMode::SyncData`, settled.
fn fresh_wit_wal() -> (tempfile::TempDir, Wal) {
    let dir = scratch();
    let wal = open_wit_wal(dir.path(), SyncMode::SyncData);
    settle(dir.path());
    (dir, wal)
}

fn open_wit_wal(dir: &Path, mode: SyncMode) -> Wal {
    let config = Config::default().with_segment_size(SEGMENT_SIZE).with_sync_mode(mode);
    Wal::open(dir, config).expect("wit-wal open")
}

/// okaywal for the append workloads: 64 MiB preallocated segments, checkpointed after 48 MiB.
fn open_okaywal(dir: &Path) -> WriteAheadLog {
    Configuration::default_for(dir)
        .preallocate_bytes(SEGMENT_SIZE as u32)
        .checkpoint_after_bytes(SEGMENT_SIZE / 4 * 3)
        .open(BenchLogManager::new(&Arc::default()))
        .expect("okaywal open")
}

/// Stops okaywal's checkpoint thread before its directory is removed.
fn shutdown_okaywal(log: Option<(tempfile::TempDir, WriteAheadLog)>) {
    if let Some((dir, log)) = log {
        log.shutdown().expect("okaywal shutdown");
        drop(dir);
    }
}

/// One okaywal entry of one chunk; `commit` returns after `fdatasync`.
fn okaywal_append(log: &WriteAheadLog, rec: &[u8]) {
    let mut entry = log.begin_entry().expect("okaywal begin_entry");
    entry.write_chunk(rec).expect("okaywal write_chunk");
    black_box(entry.commit().expect("okaywal commit"));
}

/// Records and payload bytes an okaywal recovery saw.
#[derive(Debug, Default)]
struct ReplayCounts {
    records: AtomicU64,
    bytes: AtomicU64,
}

impl ReplayCounts {
    fn reset(&self) {
        self.records.store(0, Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
    }

    fn get(&self) -> (u64, u64) {
        (self.records.load(Ordering::Relaxed), self.bytes.load(Ordering::Relaxed))
    }
}

/// okaywal's `LogManager`: recovery reads every chunk (into one reused buffer) and checks
/// its CRC; checkpoints do nothing, so checkpointed segments are simply recycled.
#[derive(Debug)]
struct BenchLogManager {
    counts: Arc<ReplayCounts>,
    buf: Vec<u8>,
}

impl BenchLogManager {
    fn new(counts: &Arc<ReplayCounts>) -> Self {
        BenchLogManager {
            counts: Arc::clone(counts),
            buf: Vec::new(),
        }
    }
}

impl LogManager for BenchLogManager {
    fn recover(&mut self, entry: &mut Entry<'_>) -> std::io::Result<()> {
        let mut bytes = 0u64;
        loop {
            match entry.read_chunk()? {
                ReadChunkResult::Chunk(mut chunk) => {
                    self.buf.resize(chunk.bytes_remaining() as usize, 0);
                    chunk.read_exact(&mut self.buf)?;
                    if !chunk.check_crc()? {
                        return Err(std::io::Error::other("okaywal chunk CRC mismatch"));
                    }
                    bytes += self.buf.len() as u64;
                }
                ReadChunkResult::EndOfEntry => break,
                ReadChunkResult::AbortedEntry => return Ok(()),
            }
        }
        self.counts.records.fetch_add(1, Ordering::Relaxed);
        self.counts.bytes.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    fn checkpoint_to(
        &mut self,
        _last: EntryId,
        _entries: &mut SegmentReader,
        _wal: &WriteAheadLog,
    ) -> std::io::Result<()> {
        Ok(())
    }
}

/// mrecordlog 0.4.0 made durable per append. Its `SyncPolicy::OnAppend` only flushes its
/// userspace `BufWriter` into the kernel (0.4.0 never calls fsync), so after every append this
/// wrapper calls `fdatasync` on its own handle to mrecordlog's current file. When mrecordlog
/// has rolled to a new file (its on-disk size grew), the previous file is synced too (a
/// record may straddle both) and so is the directory (mrecordlog created the new file).
struct DurableMrecordlog {
    rt: tokio::runtime::Runtime,
    log: MultiRecordLog,
    dir: PathBuf,
    file: File,
    on_disk: usize,
}

impl DurableMrecordlog {
    fn open(dir: &Path) -> Self {
        let rt = runtime();
        let log = rt.block_on(async {
            let mut log = MultiRecordLog::open_with_prefs(dir, SyncPolicy::OnAppend)
                .await
                .expect("mrecordlog open");
            log.create_queue(QUEUE).await.expect("mrecordlog create_queue");
            log
        });
        let file = newest_mrecordlog_file(dir);
        file.sync_data().expect("fdatasync");
        sync_dir(dir);
        let on_disk = log.on_disk_size();
        DurableMrecordlog {
            rt,
            log,
            dir: dir.into(),
            file,
            on_disk,
        }
    }

    fn append(&mut self, rec: &[u8]) {
        black_box(
            self.rt
                .block_on(self.log.append_record(QUEUE, None, rec))
                .expect("mrecordlog append"),
        );
        let on_disk = self.log.on_disk_size();
        if on_disk != self.on_disk {
            self.file.sync_data().expect("fdatasync");
            self.file = newest_mrecordlog_file(&self.dir);
            sync_dir(&self.dir);
            self.on_disk = on_disk;
        }
        self.file.sync_data().expect("fdatasync");
    }
}

/// mrecordlog's newest file (`wal-{n:020}`).
fn newest_mrecordlog_file(dir: &Path) -> File {
    let newest = std::fs::read_dir(dir)
        .expect("read mrecordlog directory")
        .map(|e| {
            e.expect("directory entry")
                .file_name()
                .into_string()
                .expect("UTF-8 name")
        })
        .filter(|name| {
            name.strip_prefix("wal-")
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .max()
        .expect("an mrecordlog file");
    File::open(dir.join(newest)).expect("open mrecordlog file")
}

/// A runtime for mrecordlog's async API (its file I/O runs on tokio's blocking pool).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// Lets a contender's setup reach the disk before it is measured: waits (up to a minute)
/// while a background preallocation of a wit-wal spare segment is in progress (a `*.tmp`
/// file exists), then flushes the file system (`sync -f`) so that no writeback of setup data
/// (okaywal's zero-filled segments are not synced when created) overlaps the measurement.
fn settle(dir: &Path) {
    let preallocating = || {
        std::fs::read_dir(dir).expect("read scratch directory").any(|e| {
            e.expect("directory entry")
                .file_name()
                .to_string_lossy()
                .ends_with(".tmp")
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while preallocating() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    match std::process::Command::new("sync").arg("-f").arg(dir).status() {
        Ok(s) if s.success() => {}
        other => eprintln!("`sync -f {}` failed: {other:?}", dir.display()),
    }
}

/// A fresh directory under `$CARGO_TARGET_TMPDIR/wal-bench`, removed when dropped.
fn scratch() -> tempfile::TempDir {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wal-bench");
    std::fs::create_dir_all(&root).expect("create scratch root");
    tempfile::tempdir_in(&root).expect("create scratch directory")
}

fn sync_dir(dir: &Path) {
    File::open(dir).and_then(|d| d.sync_all()).expect("sync directory");
}

/// A record of `len` bytes that is not all zeros.
fn record(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn size_label(size: usize) -> String {
    if size >= 1024 {
        format!("{}KiB", size / 1024)
    } else {
        format!("{size}B")
    }
}
