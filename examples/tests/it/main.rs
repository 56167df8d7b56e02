//! Integration tests of the `wit` CLI, `wit serve` and the example pipeline, run as child
//! processes.

mod cli;
mod pipeline;
mod serve;
mod tidy;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Segments of 64 KiB keep the test directories small.
const SEGMENT_SIZE: &str = "64K";

fn wit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wit"))
        .args(args)
        .output()
        .expect("run wit")
}

/// `wit wal <sub> <dir> [args]`.
fn wal(sub: &str, dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wit"))
        .args(["wal", sub])
        .arg(dir)
        .args(args)
        .output()
        .expect("run wit")
}

/// `wit wal append <dir>` with `input` on stdin.
fn append(dir: &Path, input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wit"))
        .args(["wal", "append"])
        .arg(dir)
        .args(["--segment-size", SEGMENT_SIZE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run wit");
    // A run that exits early (the lock is held, say) closes stdin: a broken pipe is expected
    // then, and the exit status tells the rest.
    if let Err(e) = child.stdin.take().expect("stdin").write_all(input) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "write stdin: {e}");
    }
    child.wait_with_output().expect("wait for wit")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts the exit code, showing the output when it differs.
#[track_caller]
fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "exit status {:?}\n--- stdout\n{}--- stderr\n{}",
        output.status,
        stdout(output),
        stderr(output)
    );
}

/// The segment files (`*.wal`) of a log directory, oldest first.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    files.sort();
    files
}
