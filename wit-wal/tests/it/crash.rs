//! Crash test: a child process appends from several threads in `SyncData` mode and reports
//! every acknowledged LSN with a hash of its payload; the parent kills it with SIGKILL at a
//! random moment, reopens the log, and checks that every acknowledged record is there,
//! byte-exact, in contiguous LSN order, and that appending continues. Then the next child
//! reopens the same directory, so recovery after a kill is exercised round after round.
//!
//! The child is this test binary run again with `--exact crash::child_writer`; that test does
//! nothing unless [`CHILD_ENV`] names the log directory. Set `WIT_WAL_CRASH_SEED` to replay
//! the delays and payloads of a failed run (the kill timing itself cannot be replayed).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wit_wal::{Config, Lsn, SyncMode, Wal};

/// Names the log directory of a child writer; absent in normal test runs.
const CHILD_ENV: &str = "WIT_WAL_CRASH_CHILD";
/// The seed of a child's payloads, or (in the parent) of the whole run.
const SEED_ENV: &str = "WIT_WAL_CRASH_SEED";
const ROUNDS: u64 = 30;
const WRITERS: u64 = 4;
const MAX_PAYLOAD: u64 = 5000;
/// Small segments, so that rotation (sealing, starting a segment from a spare) happens often.
const SEGMENT_SIZE: u64 = 64 << 10;
/// A child never runs longer than this, even if its parent is gone.
const CHILD_LIFETIME: Duration = Duration::from_secs(20);
/// How long the parent waits for a child's first acknowledgement before giving up.
const FIRST_ACK_TIMEOUT: Duration = Duration::from_secs(15);
/// The signal `Child::kill` sends on unix.
const SIGKILL: i32 = 9;

fn config() -> Config {
    Config::default()
        .with_segment_size(SEGMENT_SIZE)
        .with_max_record_size(8 << 10)
        .with_sync_mode(SyncMode::SyncData)
}

/// 64-bit FNV-1a.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// xorshift64*: small, fast, good enough for sizes, bytes and delays.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // Never zero, and neighbouring seeds give unrelated streams.
        Rng((seed ^ 0x9e37_79b9_7f4a_7c15).wrapping_mul(0xbf58_476d_1ce4_e5b9) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn fill(&mut self, buf: &mut Vec<u8>, len: usize) {
        buf.clear();
        while buf.len() < len {
            let word = self.next().to_le_bytes();
            let take = (len - buf.len()).min(word.len());
            buf.extend_from_slice(&word[..take]);
        }
    }
}

/// The child: appends until killed (or until [`CHILD_LIFETIME`] or a closed stdout), and
/// prints `ack <lsn> <hash> <len>` for every append that returned `Ok`.
#[test]
fn child_writer() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let seed: u64 = std::env::var(SEED_ENV).ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let wal = Wal::open(Path::new(&dir), config()).expect("child: open the log after a kill");
    let deadline = Instant::now() + CHILD_LIFETIME;
    std::thread::scope(|s| {
        for writer in 0..WRITERS {
            let wal = &wal;
            s.spawn(move || {
                let mut rng = Rng::new(seed.wrapping_add(writer.wrapping_mul(0x1000_0000_01b3)));
                let mut payload = Vec::new();
                while Instant::now() < deadline {
                    let len = rng.below(MAX_PAYLOAD + 1) as usize;
                    rng.fill(&mut payload, len);
                    let lsn = wal.append(&payload).expect("child: append");
                    let line = format!("ack {} {} {len}\n", lsn.0, fnv1a(&payload));
                    let mut out = std::io::stdout().lock();
                    if out.write_all(line.as_bytes()).and_then(|()| out.flush()).is_err() {
                        return; // the parent is gone
                    }
                }
            });
        }
    });
}

/// A record the parent knows about: acknowledged by a child (or appended by the parent), or
/// only seen after a recovery (written but killed before its acknowledgement).
#[derive(Debug, Clone, Copy)]
struct Known {
    hash: u64,
    len: usize,
    acked: bool,
    round: u64,
}

/// One running child and the threads draining its output.
struct Running {
    child: Child,
    acks: JoinHandle<Vec<(u64, u64, usize)>>,
    stderr: JoinHandle<String>,
    ack_count: Arc<AtomicU64>,
}

fn spawn_child(dir: &Path, seed: u64) -> Running {
    let mut child = Command::new(std::env::current_exe().expect("current test binary"))
        .args(["--exact", "crash::child_writer", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .env(SEED_ENV, seed.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child writer");
    let stdout = child.stdout.take().expect("child stdout");
    let mut stderr = child.stderr.take().expect("child stderr");
    let ack_count = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&ack_count);
    let acks = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut acks = Vec::new();
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return acks,
                Ok(_) => {}
            }
            // A line cut short by the kill was never complete: ignore it. libtest's own
            // "test crash::child_writer ... " may precede the first ack on its line.
            if line.last() != Some(&b'\n') {
                continue;
            }
            let text = String::from_utf8_lossy(&line);
            let Some(at) = text.find("ack ") else {
                continue;
            };
            let mut fields = text[at + 4..].split_whitespace().map(str::parse::<u64>);
            if let (Some(Ok(lsn)), Some(Ok(hash)), Some(Ok(len))) = (fields.next(), fields.next(), fields.next()) {
                acks.push((lsn, hash, len as usize));
                count.fetch_add(1, Ordering::Release);
            }
        }
    });
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    Running {
        child,
        acks,
        stderr,
        ack_count,
    }
}

/// Kills the child with SIGKILL and returns what it acknowledged; panics if it had exited
/// on its own (a panic in the child, such as a failed open or append).
fn kill_child(mut running: Running, ctx: &str) -> Vec<(u64, u64, usize)> {
    let exited_early = running.child.try_wait().expect("poll the child");
    // SIGKILL on unix; an error only means it is already gone, which `wait` shows.
    let _ = running.child.kill();
    let status = running.child.wait().expect("wait for the child");
    let acks = running.acks.join().expect("ack reader thread");
    let stderr = running.stderr.join().expect("stderr reader thread");
    if exited_early.is_some() || status.signal() != Some(SIGKILL) {
        panic!(
            "{ctx}: the child exited on its own ({status}) after {} acks instead of being killed; \
             its stderr:\n{stderr}",
            acks.len()
        );
    }
    acks
}

/// Waits until the child has acknowledged something, or it died, or time ran out.
fn wait_first_ack(running: &mut Running, ctx: &str) {
    let start = Instant::now();
    while running.ack_count.load(Ordering::Acquire) == 0 {
        if running.child.try_wait().expect("poll the child").is_some() {
            return; // `kill_child` reports it with the child's stderr
        }
        assert!(
            start.elapsed() < FIRST_ACK_TIMEOUT,
            "{ctx}: the child acknowledged nothing within {FIRST_ACK_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Reopens the log after a kill and checks it against what is known; returns the open log
/// and its next LSN.
///
/// Every known record at or above `floor` must be present with the same payload hash: an
/// acknowledged one because it was durable, an unacknowledged one because an earlier recovery
/// had already accepted it (a process kill cannot undo what reached the page cache). Records
/// must come back in contiguous LSN order up to `stats().next_lsn`, and the next append must
/// get exactly that LSN.
fn verify(dir: &Path, known: &mut BTreeMap<u64, Known>, floor: u64, round: u64, ctx: &str) -> (Wal, u64) {
    let wal = Wal::open(dir, config()).unwrap_or_else(|e| panic!("{ctx}: open after SIGKILL failed: {e}"));
    let stats = wal.stats();
    let start = stats.first_lsn.unwrap_or(stats.next_lsn);
    assert!(
        start.0 <= floor,
        "{ctx}: first retained LSN {start} is above the truncation point {floor}; {stats:?}"
    );
    let mut expected = start;
    let reader = wal
        .read_from(start)
        .unwrap_or_else(|e| panic!("{ctx}: read_from({start}) failed: {e}"));
    for record in reader {
        let record = record.unwrap_or_else(|e| panic!("{ctx}: reading after LSN {} failed: {e}", expected.0));
        assert_eq!(record.lsn, expected, "{ctx}: LSNs are not contiguous");
        let hash = fnv1a(&record.payload);
        let len = record.payload.len();
        match known.get(&record.lsn.0) {
            Some(k) if k.hash != hash => panic!(
                "{ctx}: LSN {} came back with a different payload ({len} bytes, hash {hash:#x}) than \
                 {} in round {} ({} bytes, hash {:#x})",
                record.lsn,
                if k.acked {
                    "was acknowledged"
                } else {
                    "an earlier recovery returned"
                },
                k.round,
                k.len,
                k.hash,
            ),
            Some(_) => {}
            None => {
                known.insert(
                    record.lsn.0,
                    Known {
                        hash,
                        len,
                        acked: false,
                        round,
                    },
                );
            }
        }
        expected = record.lsn.next();
    }
    assert_eq!(
        expected, stats.next_lsn,
        "{ctx}: the reader stopped before the durable end"
    );
    let missing: Vec<_> = known
        .range(floor..)
        .filter(|&(&lsn, _)| lsn < start.0 || lsn >= expected.0)
        .take(10)
        .collect();
    assert!(
        missing.is_empty(),
        "{ctx}: records lost after the kill (log holds {start}..{expected}, recovery {:?}): {missing:?}",
        wal.recovery()
    );
    (wal, expected.0)
}

#[test]
fn acknowledged_records_survive_sigkill() {
    let seed: u64 = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock after 1970");
            now.as_nanos() as u64 ^ u64::from(std::process::id())
        });
    eprintln!("crash test seed: {seed} (rerun with {SEED_ENV}={seed})");
    let mut rng = Rng::new(seed);
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("wal");
    let started = Instant::now();

    let mut known: BTreeMap<u64, Known> = BTreeMap::new();
    let mut floor = Lsn::FIRST.0;
    let (mut acked_total, mut torn_tails, mut truncations, mut segments_max) = (0usize, 0usize, 0usize, 0usize);
    for round in 0..ROUNDS {
        // Mostly kill while appends run; sometimes right after the start, during open and recovery.
        let after_first_ack = rng.below(4) != 0;
        let delay = Duration::from_millis(5 + rng.below(146));
        let ctx = format!(
            "seed {seed}, round {round} (kill {delay:?} after {})",
            if after_first_ack { "the first ack" } else { "spawning" }
        );
        let mut running = spawn_child(&dir, rng.next());
        if after_first_ack {
            wait_first_ack(&mut running, &ctx);
        }
        std::thread::sleep(delay);
        let acks = kill_child(running, &ctx);
        acked_total += acks.len();
        for (lsn, hash, len) in acks {
            assert!(
                lsn >= floor,
                "{ctx}: the child acknowledged LSN {lsn}, below the truncation point {floor}"
            );
            // The child only appends after everything recovered so far: an LSN already known
            // means the log gave out an LSN twice, so an earlier record was lost.
            if let Some(k) = known.get(&lsn) {
                panic!(
                    "{ctx}: the child acknowledged LSN {lsn} ({len} bytes, hash {hash:#x}), which already held a \
                     record {} in round {}: {k:?}",
                    if k.acked { "acknowledged" } else { "recovered" },
                    k.round
                );
            }
            known.insert(
                lsn,
                Known {
                    hash,
                    len,
                    acked: true,
                    round,
                },
            );
        }

        let (wal, next) = verify(&dir, &mut known, floor, round, &ctx);
        if wal.recovery().torn_tail.is_some() {
            torn_tails += 1;
        }
        segments_max = segments_max.max(wal.stats().segment_count);
        // Appending continues right after the recovered records.
        let payload = format!("parent after round {round}");
        let lsn = wal
            .append(payload.as_bytes())
            .unwrap_or_else(|e| panic!("{ctx}: append after recovery: {e}"));
        assert_eq!(lsn.0, next, "{ctx}: the first append after recovery got the wrong LSN");
        known.insert(
            lsn.0,
            Known {
                hash: fnv1a(payload.as_bytes()),
                len: payload.len(),
                acked: true,
                round,
            },
        );
        // Now and then release old segments below a checked LSN; only LSNs from there on
        // must survive later rounds.
        if round % 4 == 3 {
            let cut = floor + rng.below(lsn.0 - floor + 1);
            wal.truncate_before(Lsn(cut))
                .unwrap_or_else(|e| panic!("{ctx}: truncate_before({cut}): {e}"));
            let first = wal.stats().first_lsn.map_or(cut, |l| l.0);
            assert!(first <= cut, "{ctx}: truncate_before({cut}) released LSN {first}");
            floor = cut;
            known = known.split_off(&floor);
            truncations += 1;
        }
        wal.close().unwrap_or_else(|e| panic!("{ctx}: close: {e}"));
    }
    eprintln!(
        "crash test: {ROUNDS} kills, {acked_total} acknowledged records checked, {torn_tails} torn tails cut, \
         {truncations} truncations, up to {segments_max} segments, {:?}",
        started.elapsed()
    );
    assert!(
        acked_total > 0,
        "no child acknowledged anything: the test checked nothing"
    );
}
