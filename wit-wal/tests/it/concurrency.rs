//! Many threads and async tasks appending at once: LSNs unique and gap-free, every record
//! readable, a reader following the log while appends continue.

use std::collections::BTreeMap;
use std::sync::Arc;

use wit_wal::{Config, Lsn, Wal};

const THREADS: usize = 8;
const TASKS: usize = 8;
const PER_WRITER: usize = 300;

/// Mostly small records; every seventh one large enough that a thread appending it alone
/// writes it from its own slice (racing the queued groups of the others).
fn payload(writer: usize, seq: usize) -> Vec<u8> {
    let mut p = format!("writer {writer} record {seq} ").into_bytes();
    let base = if seq % 7 == 3 { 16 << 10 } else { 20 };
    p.resize(base + (writer * 131 + seq * 17) % 900, b'a' + (seq % 26) as u8);
    p
}

#[test]
fn threads_and_tasks_get_unique_gap_free_lsns() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Arc::new(Wal::open(dir.path(), Config::default().with_segment_size(64 << 10)).unwrap());
    let total = (THREADS + TASKS) * PER_WRITER;

    // A reader follows the log from the start while the writers run.
    let follower = {
        let wal = Arc::clone(&wal);
        std::thread::spawn(move || {
            let mut reader = wal.read_from(Lsn::FIRST).unwrap();
            let mut seen = 0u64;
            while seen < total as u64 {
                match reader.next() {
                    Some(rec) => {
                        let rec = rec.unwrap();
                        assert_eq!(rec.lsn, Lsn(seen + 1), "the follower sees records in order");
                        seen += 1;
                    }
                    None => std::thread::yield_now(),
                }
            }
            seen
        })
    };

    let mut written: BTreeMap<Lsn, Vec<u8>> = BTreeMap::new();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    std::thread::scope(|s| {
        let threads: Vec<_> = (0..THREADS)
            .map(|w| {
                let wal = &wal;
                s.spawn(move || {
                    (0..PER_WRITER)
                        .map(|i| (wal.append(&payload(w, i)).unwrap(), payload(w, i)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let wal = Arc::clone(&wal);
                let w = THREADS + t;
                runtime.spawn(async move {
                    let mut out = Vec::new();
                    for i in 0..PER_WRITER {
                        let p = payload(w, i);
                        let lsns = wal.submit(&p).unwrap().await.unwrap();
                        out.push((lsns.start, p));
                    }
                    out
                })
            })
            .collect();
        for t in threads {
            for (lsn, p) in t.join().unwrap() {
                assert!(written.insert(lsn, p).is_none(), "LSN {lsn} handed out twice");
            }
        }
        for t in tasks {
            for (lsn, p) in runtime.block_on(t).unwrap() {
                assert!(written.insert(lsn, p).is_none(), "LSN {lsn} handed out twice");
            }
        }
    });
    assert_eq!(written.len(), total);
    assert_eq!(*written.keys().next().unwrap(), Lsn(1));
    assert_eq!(*written.keys().last().unwrap(), Lsn(total as u64), "LSNs are gap-free");

    let read: Vec<_> = wal.read_from(Lsn::FIRST).unwrap().map(Result::unwrap).collect();
    assert_eq!(read.len(), total);
    for rec in &read {
        assert_eq!(&rec.payload[..], &written[&rec.lsn][..], "payload of LSN {}", rec.lsn);
    }
    assert_eq!(follower.join().unwrap(), total as u64);
    assert!(wal.stats().segment_count > 1, "the test spans several segments");
}

/// On a single-threaded runtime, a task that awaited a blocking sync would stall every other
/// task: completing proves the commit thread does the waiting.
#[test]
fn awaiting_commits_never_blocks_the_runtime_thread() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Arc::new(Wal::open(dir.path(), Config::default()).unwrap());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let n = runtime.block_on(async {
        let ticks = tokio::spawn(async {
            let mut ticks = 0;
            for _ in 0..5 {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                ticks += 1;
            }
            ticks
        });
        let mut handles = Vec::new();
        for i in 0..200u32 {
            let wal = Arc::clone(&wal);
            handles.push(tokio::spawn(async move {
                wal.submit(&i.to_le_bytes()).unwrap().await.unwrap().start
            }));
        }
        let mut lsns = Vec::new();
        for h in handles {
            lsns.push(h.await.unwrap());
        }
        assert_eq!(ticks.await.unwrap(), 5);
        lsns.sort();
        lsns.dedup();
        lsns.len()
    });
    assert_eq!(n, 200);
    assert_eq!(wal.stats().next_lsn, Lsn(201));
}

#[test]
fn dropped_commit_handles_still_get_written() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), Config::default()).unwrap();
    let range = wal.submit(b"fire and forget").unwrap().lsns();
    // Nobody waits: the commit thread writes it anyway.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while wal.stats().next_lsn <= range.start {
        assert!(
            std::time::Instant::now() < deadline,
            "a dropped commit was never written"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let rec = wal.read_from(range.start).unwrap().next().unwrap().unwrap();
    assert_eq!(&rec.payload[..], b"fire and forget");
}

/// Stats and truncation from other threads while appenders rotate segments all the time
/// (this once deadlocked on lock order).
#[test]
fn stats_and_truncation_run_beside_constant_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), Config::default().with_segment_size(8 << 10)).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        for w in 0..4u8 {
            let (wal, tx) = (&wal, tx.clone());
            s.spawn(move || {
                for i in 0..400u32 {
                    wal.append(&vec![w; 700 + (i % 300) as usize]).unwrap();
                }
                tx.send(()).unwrap();
            });
        }
        s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let stats = wal.stats();
                if let Some(last) = stats.last_lsn {
                    wal.truncate_before(Lsn(last.0.saturating_sub(20))).unwrap();
                }
            }
        });
        for _ in 0..4 {
            rx.recv_timeout(std::time::Duration::from_secs(60))
                .expect("appenders stalled beside stats/truncation");
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    assert_eq!(wal.stats().next_lsn, Lsn(1601));
}
