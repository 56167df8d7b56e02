//! The example pipeline, run as a child process: its report, and what it leaves behind.

use std::process::Command;

use wit_batch::{Signal, Tenant};
use wit_store::FileCatalog as _;
use wit_tracker::{SqliteTracker, TrackerConfig};

use super::{assert_exit, stderr, stdout, wal, wit};

/// Records of each signal the test run sends.
const RECORDS: u64 = 1_000;

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
fn pipeline_stores_every_signal_exactly_once_and_checks_itself() {
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

    // Per signal: every record asked for acknowledged, in batches, and read back from the
    // Parquet files once each.
    let mut n_requests = 0;
    for signal in ["traces", "logs", "metrics"] {
        let l = line(&report, &format!("{signal}: "));
        let acked = number_after(l, ":");
        assert_eq!(acked, RECORDS, "{report}");
        assert_eq!(number_after(l, "; "), acked, "rows read back: {report}");
        let requests = number_after(l, "acknowledged in ");
        assert!((RECORDS / 8..=RECORDS).contains(&requests), "{report}");
        assert!(number_after(l, "requests, ") >= 1, "batches: {report}");
        assert!(number_after(l, "read back from ") >= 1, "files: {report}");
        n_requests += requests;
    }
    // Requests of every encoding, as many as were sent in all.
    let encodings = line(&report, "requests: ").trim_start_matches("requests: ");
    let counts: Vec<(&str, u64)> = encodings
        .split(", ")
        .map(|c| c.split_once(' ').unwrap())
        .map(|(name, n)| (name, n.parse().unwrap()))
        .collect();
    let names: Vec<&str> = counts.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, ["protobuf", "protobuf+gzip", "json", "json+gzip"], "{report}");
    assert!(counts.iter().all(|(_, n)| *n > 0), "{report}");
    assert_eq!(counts.iter().map(|(_, n)| n).sum::<u64>(), n_requests, "{report}");
    assert_eq!(number_after(line(&report, "elapsed: "), "): "), 3 * RECORDS, "{report}");
    assert!(line(&report, "wal: ").ends_with(": intact"), "{report}");
    assert!(
        report
            .ends_with("ok: every acknowledged record is stored exactly once, indexed, and its batch is STORED, INDEXED or COMPLETED\n"),
        "{report}"
    );

    // What the run left behind, checked here rather than by the binary: the tracker's catalog
    // lists every record's row per signal ...
    let tracker = SqliteTracker::open(&root.join("tracker.db"), TrackerConfig::default()).unwrap();
    let demo = Tenant::try_new("demo").unwrap();
    for signal in [Signal::Traces, Signal::Logs, Signal::Metrics] {
        let rows: u64 = tracker.list(&demo, signal, None).unwrap().iter().map(|f| f.rows).sum();
        assert_eq!(rows, RECORDS, "{signal}");
    }
    // ... `wit query` answers SQL over it as the tenant (and sees nothing as another) ...
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
