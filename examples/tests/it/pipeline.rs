//! The example pipeline, run as a child process: what it leaves behind, read back by the
//! tracker, pyarrow and `wit query`.

use std::process::Command;

use wit_batch::{Signal, Tenant};
use wit_store::FileCatalog as _;
use wit_tracker::{SqliteTracker, TrackerConfig};

use super::{assert_exit, stderr, stdout, wal, wit};

/// Records of each signal the test run sends.
const RECORDS: u64 = 1_000;

/// Prints `producer seq` for each row of the Parquet files `argv[1:]`, from the integer
/// attributes `producer` and `seq` of its `attributes` map.
const READ_RECORD_IDS: &str = r#"
import sys, pyarrow.parquet as pq
for path in sys.argv[1:]:
    for attributes in pq.read_table(path, columns=["attributes"]).column("attributes").to_pylist():
        ints = {key: value["int"] for key, value in attributes}
        print(ints["producer"], ints["seq"])
"#;

/// Whether pyarrow is here; its absence skips the independent read, unless
/// `WIT_REQUIRE_PYARROW=1` (as `.ci/run` sets) makes it a failure.
fn has_pyarrow() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import pyarrow"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert_ne!(
            std::env::var("WIT_REQUIRE_PYARROW").as_deref(),
            Ok("1"),
            "WIT_REQUIRE_PYARROW=1 but pyarrow is missing: pip install -r .ci/requirements.txt"
        );
        eprintln!("pyarrow is missing: the stored files are not read back independently");
    }
    ok
}

/// The (producer, seq) of every row of `paths`, read by pyarrow.
fn pyarrow_record_ids(paths: &[std::path::PathBuf]) -> Vec<(u64, u64)> {
    let out = Command::new("python3")
        .args(["-c", READ_RECORD_IDS])
        .args(paths)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "pyarrow: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|line| {
            let (producer, seq) = line.split_once(' ').expect("two numbers");
            (producer.parse().expect("producer"), seq.parse().expect("seq"))
        })
        .collect()
}

/// The report line that starts with `prefix`.
#[track_caller]
fn line<'a>(report: &'a str, prefix: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in\n{report}"))
}

/// The number after the first `marker` in `text` (and any spaces).
#[track_caller]
fn number_after(text: &str, marker: &str) -> u64 {
    let (_, rest) = text
        .split_once(marker)
        .unwrap_or_else(|| panic!("no {marker:?} in {text:?}"));
    let digits: String = rest.trim_start().chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number after {marker:?} in {text:?}"))
}

#[test]
fn pipeline_stores_every_signal_exactly_once_as_an_independent_reader_finds() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("run");
    let out = Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .arg("--dir")
        .arg(&root)
        .args(["--records", &RECORDS.to_string(), "--producers", "3"])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let report = stdout(&out);
    // The binary's own report is not evidence: what it left behind is read here. The
    // tracker's catalog lists every record's row per signal, and pyarrow (an independent
    // Parquet reader) finds each record (producer, sequence number) in those files once.
    let tracker = SqliteTracker::open(&root.join("tracker.db"), TrackerConfig::default()).unwrap();
    let demo = Tenant::try_new("demo").unwrap();
    let pyarrow = has_pyarrow();
    for signal in [Signal::Traces, Signal::Logs, Signal::Metrics] {
        let files = tracker.list(&demo, signal, None).unwrap();
        let rows: u64 = files.iter().map(|f| f.rows).sum();
        assert_eq!(rows, RECORDS, "{signal}: {report}");
        if pyarrow {
            let paths: Vec<_> = files.iter().map(|f| root.join("data").join(&f.path)).collect();
            let ids = pyarrow_record_ids(&paths);
            let distinct: std::collections::HashSet<_> = ids.iter().collect();
            assert_eq!(ids.len() as u64, RECORDS, "{signal}: every record's row");
            assert_eq!(distinct.len() as u64, RECORDS, "{signal}: no record twice");
        }
    }
    assert!(line(&report, "wal: ").ends_with(": intact"), "{report}");
    // `wit query` answers SQL over them as the tenant (and sees nothing as another) ...
    let data = root.to_str().unwrap();
    let query = |tenant: &str, json: bool, sql: &str| {
        let mut args = vec!["query", "--data", data, "--tenant", tenant];
        if json {
            args.extend(["--format", "json"]);
        }
        args.push(sql);
        wit(&args)
    };
    for table in ["spans", "logs", "metrics"] {
        // Each record carries its producer and sequence number as attributes.
        let sql = format!(
            "SELECT count(*) AS n, count(DISTINCT attr(attributes, 'producer') || '/' || attr(attributes, 'seq')) AS d FROM {table}"
        );
        let out = query("demo", true, &sql);
        assert_exit(&out, 0);
        assert_eq!(
            stdout(&out).trim(),
            format!(r#"{{"d":{RECORDS},"n":{RECORDS}}}"#),
            "{table}"
        );
        let out = query("other", true, &format!("SELECT count(*) AS n FROM {table}"));
        assert_exit(&out, 0);
        assert_eq!(stdout(&out).trim(), r#"{"n":0}"#, "another tenant has no rows");
    }
    let out = query(
        "demo",
        false,
        "SELECT service_name, count(*) AS n FROM logs GROUP BY service_name ORDER BY service_name",
    );
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("| service_name |") && stdout(&out).contains("checkout"),
        "{}",
        stdout(&out)
    );
    let out = query("demo", false, "SELECT count(* FROM spans");
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("line 1, column 16"), "{}", stderr(&out));
    let out = query("demo", false, "DROP TABLE spans");
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("only queries"), "{}", stderr(&out));
    // ... and the WAL verifies, ending where the report says.
    let out = wal("verify", &root.join("pipeline").join("wal"), &[]);
    assert_exit(&out, 0);
    let next_lsn = number_after(line(&report, "wal: "), "next LSN ");
    assert!(
        stdout(&out).contains(&format!("next LSN {next_lsn}")),
        "{}",
        stdout(&out)
    );
}

#[test]
fn wit_query_needs_a_pipeline_directory_and_its_arguments() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let out = wit(&["query", "--data", dir, "--tenant", "demo", "SELECT 1"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("not a pipeline directory"), "{}", stderr(&out));
    assert!(!tmp.path().join("tracker.db").exists(), "nothing is created");
    for (args, message) in [
        (vec!["query", "--tenant", "demo", "SELECT 1"], "missing --data"),
        (vec!["query", "--data", dir, "SELECT 1"], "missing --tenant"),
        (vec!["query", "--data", dir, "--tenant", "demo"], "missing the SQL"),
        (
            vec!["query", "--data", dir, "--tenant", "no/slash", "SELECT 1"],
            "--tenant",
        ),
        (
            vec![
                "query", "--data", dir, "--tenant", "demo", "--format", "xml", "SELECT 1",
            ],
            "--format",
        ),
        (
            vec!["query", "--data", dir, "--tenant", "demo", "SELECT 1", "SELECT 2"],
            "one SQL query",
        ),
    ] {
        let out = wit(&args);
        assert_exit(&out, 2);
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
    }
    let out = wit(&["query", "--help"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("wit query --data DIR --tenant TENANT"));
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
    assert!(stderr(&out).contains("is not empty"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("precious.txt")).unwrap(),
        "keep me"
    );
}
