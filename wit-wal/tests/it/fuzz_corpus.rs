//! Replays the committed fuzz corpus (`fuzz/corpus/wal_recovery/`) and any saved crash inputs
//! (`fuzz/regressions/`) through the body of the recovery fuzz target, so every input the
//! fuzzer found interesting stays a test without needing cargo-fuzz or nightly.

use std::path::{Path, PathBuf};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/wal_recovery");
const REGRESSIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/regressions");

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("list fuzz inputs").path())
        .filter(|p| p.is_file() && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .collect();
    files.sort();
    files
}

fn replay(files: &[PathBuf]) {
    for path in files {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let outcome = std::panic::catch_unwind(|| wit_wal::fuzz::recover_from_bytes(&data));
        if let Err(panic) = outcome {
            eprintln!("fuzz input {} ({} bytes) failed", path.display(), data.len());
            std::panic::resume_unwind(panic);
        }
    }
}

#[test]
fn corpus_replays_cleanly() {
    let files = inputs(Path::new(CORPUS));
    assert!(!files.is_empty(), "the fuzz corpus at {CORPUS} is empty or missing");
    replay(&files);
}

#[test]
fn regressions_replay_cleanly() {
    // The folder only exists once the fuzzer has found something worth keeping.
    replay(&inputs(Path::new(REGRESSIONS)));
}
