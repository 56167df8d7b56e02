//! The `wit` command-line tool.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::{SEGMENT_SIZE, append, assert_exit, segment_files, stderr, stdout, wal, wit};

/// Offset of the first record's payload in a segment: segment header (64), group header
/// (24), record header (8).
const FIRST_PAYLOAD_OFFSET: u64 = 64 + 24 + 8;

/// `key   value` lines of `wit wal stats`, as a map.
fn stats_map(output: &str) -> BTreeMap<String, String> {
    output
        .lines()
        .filter_map(|line| {
            let (key, value) = line.split_once("  ")?;
            Some((key.trim().to_owned(), value.trim().to_owned()))
        })
        .collect()
}

#[test]
fn append_prints_lsns_and_dump_shows_the_records() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");

    let out = append(
        &dir,
        b"alpha\n{\"service\":\"checkout\"}\n\n\xff\x00bin\nno newline at the end",
    );
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "1\n2\n3\n4\n5\n");

    let out = wal("dump", &dir, &["--payload"]);
    assert_exit(&out, 0);
    let lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 5, "{lines:#?}");
    let expected = [
        (1, 5, r#""alpha""#),
        (2, 22, r#""{\"service\":\"checkout\"}""#),
        (3, 0, r#""""#),
        (4, 5, r#""\xff\x00bin""#),
        (5, 21, r#""no newline at the end""#),
    ];
    for (line, (lsn, len, payload)) in lines.iter().zip(expected) {
        assert!(line.starts_with(&format!("lsn={lsn} len={len} crc=ok file=")), "{line}");
        assert!(line.ends_with(&format!(" payload={payload}")), "{line}");
    }

    // Without --payload, no payload; --from skips what is below.
    let out = wal("dump", &dir, &["--from", "4"]);
    assert_exit(&out, 0);
    let dump = stdout(&out);
    let lsns: Vec<&str> = dump.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(lsns, ["lsn=4", "lsn=5"]);
    assert!(!dump.contains("payload="), "{dump}");
}

#[test]
fn append_acknowledges_each_line_before_stdin_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let mut child = Command::new(env!("CARGO_BIN_EXE_wit"))
        .args(["wal", "append"])
        .arg(&dir)
        .args(["--segment-size", SEGMENT_SIZE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    for (i, record) in ["first", "second", "third"].iter().enumerate() {
        writeln!(stdin, "{record}").unwrap();
        stdin.flush().unwrap();
        // The LSN arrives while stdin is still open: the record is durable already.
        let lsn = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("an LSN before stdin is closed");
        assert_eq!(lsn, (i + 1).to_string());
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
    lines.join().unwrap();
    assert!(rx.try_recv().is_err(), "no more output");
    assert_eq!(wit_wal::Inspector::open(&dir).unwrap().verify().records, 3);
}

#[test]
fn append_continues_an_existing_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    assert_eq!(stdout(&append(&dir, b"a\nb\n")), "1\n2\n");
    assert_eq!(stdout(&append(&dir, b"c\n")), "3\n");
    // No input is fine too.
    let out = append(&dir, b"");
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "");
}

#[test]
fn verify_passes_an_intact_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    assert_exit(&append(&dir, b"one\ntwo\nthree\n"), 0);

    let out = wal("verify", &dir, &[]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "ok: 1 segment, 3 records, LSNs 1..=3, next LSN 4\n");
}

#[test]
fn verify_names_the_file_and_lsn_of_a_flipped_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    // Two runs, so the damaged group is followed by an intact one: damage in the very last
    // group of a log cannot be told from a torn write (see the torn tail test).
    assert_exit(&append(&dir, b"payload one\n"), 0);
    assert_exit(&append(&dir, b"payload two\n"), 0);
    let segment = segment_files(&dir).into_iter().next().expect("a segment");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&segment)
        .unwrap();
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, FIRST_PAYLOAD_OFFSET).unwrap();
    assert_eq!(&byte, b"p", "the first record's payload starts here");
    file.write_all_at(&[byte[0] ^ 0x01], FIRST_PAYLOAD_OFFSET).unwrap();
    drop(file);

    let out = wal("verify", &dir, &[]);
    assert_exit(&out, 1);
    let report = stdout(&out);
    let first = report.lines().next().unwrap();
    assert!(first.starts_with("DAMAGED: "), "{report}");
    assert!(first.contains(&format!("file={}", segment.display())), "{report}");
    assert!(first.contains("lsn=1"), "{report}");
    assert!(first.contains("checksum mismatch"), "{report}");

    // dump shows the bad record and the damage, and fails too.
    let out = wal("dump", &dir, &["--payload"]);
    assert_exit(&out, 1);
    let dump = stdout(&out);
    assert!(
        dump.lines().next().unwrap().starts_with("lsn=1 len=11 crc=BAD "),
        "{dump}"
    );
    assert!(dump.contains("payload=\"qayload one\""), "{dump}");
    assert!(
        dump.lines().any(|l| l.starts_with("PROBLEM ") && l.contains("lsn=1")),
        "{dump}"
    );

    // stats cannot count past the damage.
    let out = wal("stats", &dir, &[]);
    assert_exit(&out, 1);
    assert!(stats_map(&stdout(&out))["damage"].contains("lsn=1"), "{}", stdout(&out));
}

#[test]
fn a_torn_tail_is_reported_but_is_not_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    assert_exit(&append(&dir, b"kept\n"), 0);
    assert_exit(&append(&dir, b"torn record\n"), 0);
    // Simulate a crash while the second group was written: its header reached the disk, the
    // sector with its payload did not. The second group starts after the first (64 + 24 +
    // 8 + 4), its payload after its own headers (24 + 8).
    let segment = segment_files(&dir).into_iter().next().unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&segment).unwrap();
    file.write_all_at(&[0; 11], FIRST_PAYLOAD_OFFSET + 4 + 24 + 8).unwrap();
    // And the process died before its clean close: no checkpoint in the trailer slot.
    let len = file.metadata().unwrap().len();
    file.write_all_at(&[0; 64], len - 64).unwrap();
    drop(file);

    let out = wal("verify", &dir, &[]);
    assert_exit(&out, 0);
    let report = stdout(&out);
    assert!(
        report.starts_with("ok: 1 segment, 1 record, LSNs 1..=1, next LSN 2\n"),
        "{report}"
    );
    assert!(
        report.contains("torn tail file=") && report.contains("lsn=2"),
        "{report}"
    );

    let out = wal("dump", &dir, &[]);
    assert_exit(&out, 0);
    let dump = stdout(&out);
    assert_eq!(dump.lines().count(), 2, "{dump}");
    assert!(dump.lines().nth(1).unwrap().starts_with("torn-tail "), "{dump}");

    // The next append cuts the torn tail off and continues at LSN 2.
    let out = append(&dir, b"next\n");
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "2\n");
    assert!(stderr(&out).contains("torn tail"), "{}", stderr(&out));
    assert_exit(&wal("verify", &dir, &[]), 0);
}

#[test]
fn stats_counts_the_records() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    assert_exit(&append(&dir, b"1\n2\n3\n4\n5\n6\n7\n"), 0);

    let out = wal("stats", &dir, &[]);
    assert_exit(&out, 0);
    let stats = stats_map(&stdout(&out));
    assert_eq!(stats["segments"], "1");
    assert_eq!(stats["records"], "7");
    assert_eq!(stats["first LSN"], "1");
    assert_eq!(stats["last LSN"], "7");
    assert_eq!(stats["next LSN"], "8");
    assert_eq!(stats["damage"], "none");
    // One 64 KiB segment, plus spare segments preallocated for the next rotation.
    let bytes: u64 = stats["bytes on disk"].split(' ').next().unwrap().parse().unwrap();
    let spares: u64 = stats["spare segments"].parse().unwrap();
    assert_eq!(bytes, (1 + spares) * 64 * 1024);
}

#[test]
fn read_only_commands_work_on_a_live_log() {
    let tmp = tempfile::tempdir().unwrap();
    let live = wit_wal::Wal::open(tmp.path(), wit_wal::Config::default().with_segment_size(1 << 20)).unwrap();
    live.append_batch(&[b"a".as_slice(), b"b"]).unwrap();

    let out = wal("stats", tmp.path(), &[]);
    assert_exit(&out, 0);
    assert_eq!(stats_map(&stdout(&out))["records"], "2");
    assert_exit(&wal("verify", tmp.path(), &[]), 0);

    // append needs the lock, which the live log holds.
    let out = append(tmp.path(), b"c\n");
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("already opened"), "{}", stderr(&out));
    live.close().unwrap();
}

#[test]
fn usage_errors_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    for args in [
        &["frobnicate"][..],
        &[],
        &["wal"],
        &["wal", "frobnicate"],
        &["wal", "dump"],
        &["wal", "dump", "a", "b"],
        &["wal", "dump", "dir", "--bogus"],
        &["wal", "dump", "dir", "--from", "x"],
        &["wal", "dump", "dir", "--from"],
        &["wal", "verify", "dir", "--payload"],
        &["wal", "append", "dir", "--segment-size", "12X"],
    ] {
        let out = wit(args);
        assert_exit(&out, 2);
        assert!(stdout(&out).is_empty(), "{args:?}: {}", stdout(&out));
        assert!(stderr(&out).contains("Usage:"), "{args:?}: {}", stderr(&out));
    }
    assert!(stderr(&wit(&["frobnicate"])).starts_with("wit: unknown command `frobnicate`\n"));

    // Directories that are not logs: the error names them, without usage text.
    let missing = tmp.path().join("missing");
    let out = wal("verify", &missing, &[]);
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains(&missing.display().to_string()),
        "{}",
        stderr(&out)
    );
    std::fs::write(tmp.path().join("notes.txt"), "not a segment").unwrap();
    for sub in ["verify", "dump", "stats"] {
        let out = wal(sub, tmp.path(), &[]);
        assert_exit(&out, 2);
        assert!(stderr(&out).contains("is not a WAL directory"), "{}", stderr(&out));
    }
}

#[test]
fn help_goes_to_stdout() {
    for args in [&["--help"][..], &["-h"], &["help"]] {
        let out = wit(args);
        assert_exit(&out, 0);
        assert!(stdout(&out).contains("wit <command>"), "{}", stdout(&out));
    }
    for args in [&["wal", "--help"][..], &["wal", "help"], &["wal", "dump", "--help"]] {
        let out = wit(args);
        assert_exit(&out, 0);
        for sub in ["dump", "verify", "stats", "append"] {
            assert!(
                stdout(&out).contains(&format!("wit wal {sub} <dir>")),
                "{}",
                stdout(&out)
            );
        }
    }
}
