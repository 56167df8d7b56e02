//! The example pipeline.

use std::process::Command;

use super::{assert_exit, stdout, wal};

#[test]
fn pipeline_runs_to_completion_and_leaves_an_intact_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let out = Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .arg("--dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let report = stdout(&out);
    assert!(report.contains("producers: 20000 records acknowledged"), "{report}");
    assert!(report.contains("consumer:  20000 records"), "{report}");
    assert!(report.contains("torn tail: none"), "{report}");
    assert!(
        report.ends_with("ok: every acknowledged record was consumed exactly once, in order\n"),
        "{report}"
    );

    // The janitor released segments behind the consumer: the log no longer starts at 1.
    let out = wal("verify", &dir, &[]);
    assert_exit(&out, 0);
    let verified = stdout(&out);
    assert!(verified.contains("next LSN 20001"), "{verified}");
    assert!(!verified.contains("LSNs 1..="), "{verified}");
}

#[test]
fn pipeline_refuses_a_directory_in_use() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("precious.txt"), "keep me").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .arg("--dir")
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_exit(&out, 1);
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("precious.txt")).unwrap(),
        "keep me"
    );
}
