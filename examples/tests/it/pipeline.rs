//! The example pipeline.

use std::process::Command;

use wit_batch::{Envelope, Signal, SourceKind, otlp};
use wit_wal::{Config, Wal};

use super::{assert_exit, stdout, wal};

/// The report line that starts with `prefix`.
#[track_caller]
fn line<'a>(report: &'a str, prefix: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in\n{report}"))
}

/// The number right after the first `marker` in `text`.
#[track_caller]
fn number_after(text: &str, marker: &str) -> u64 {
    let (_, rest) = text
        .split_once(marker)
        .unwrap_or_else(|| panic!("no {marker:?} in {text:?}"));
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number after {marker:?} in {text:?}"))
}

/// The sum of the counts in a list like `a 1, b 2`.
#[track_caller]
fn sum_of_counts(list: &str) -> u64 {
    list.split(", ")
        .map(|c| {
            let (_, n) = c
                .trim()
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("no `name count` in {list:?}"));
            n.parse::<u64>().unwrap_or_else(|_| panic!("no count in {c:?}"))
        })
        .sum()
}

/// What follows `label` in `line`.
#[track_caller]
fn after<'a>(line: &'a str, label: &str) -> &'a str {
    line.split_once(label)
        .unwrap_or_else(|| panic!("no {label:?} in {line:?}"))
        .1
}

#[test]
fn pipeline_runs_to_completion_and_leaves_an_intact_log() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("run");
    let dir = root.join("wal");
    let out = Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .arg("--dir")
        .arg(&root)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let report = stdout(&out);

    // Producers: 20000 log records in requests of 1 to 8 records, every encoding used,
    // batched 8 requests (or fewer, when a batch ages out) to an envelope.
    let producers = line(&report, "producers: ");
    assert!(producers.starts_with("producers: 20000 log records in "), "{report}");
    let n_requests = number_after(producers, "log records in ");
    let n_batches = number_after(producers, ") -> ");
    assert!((20_000 / 8..=20_000).contains(&n_requests), "{report}");
    assert!((n_requests / 8..=n_requests).contains(&n_batches), "{report}");
    for encoding in ["(protobuf ", ", protobuf+gzip ", ", json ", ", json+gzip "] {
        assert!(number_after(producers, encoding) > 0, "{report}");
    }
    let encodings = after(producers, " requests (").split_once(')').unwrap().0;
    assert_eq!(sum_of_counts(encodings), n_requests, "{report}");
    assert!(
        producers.contains(&format!(") -> {n_batches} batches acknowledged")),
        "{report}"
    );

    // Consumer: every envelope, every request, and one row per log record.
    let consumer = line(&report, "consumer:  ");
    assert!(
        consumer.starts_with(&format!(
            "consumer:  {n_batches} batches, {n_requests} requests, 20000 rows converted to Arrow in "
        )),
        "{report}"
    );
    let services = after(line(&report, "           per service:"), "per service:");
    assert_eq!(sum_of_counts(services), 20_000, "{report}");
    let severities = after(line(&report, "           per severity:"), "per severity:");
    assert_eq!(sum_of_counts(severities), 20_000, "{report}");
    for severity in ["DEBUG", "INFO", "WARN", "ERROR"] {
        assert!(number_after(severities, &format!("{severity} ")) > 0, "{report}");
    }

    // Storage: every record is in a Parquet file under data/.
    let stored = report
        .lines()
        .map(str::trim_start)
        .find(|l| l.starts_with("stored: "))
        .unwrap_or_else(|| panic!("no stored line in\n{report}"));
    assert!(stored.starts_with("stored:       20000 rows in "), "{report}");
    assert!(number_after(stored, "rows in ") >= 1, "{report}");

    // Lifecycle: every batch went CREATED -> WAL_WRITTEN -> INGESTED -> STORED (through the
    // catalog), and the janitor's final truncation point is past all of them.
    assert!(
        line(&report, "lifecycle: ").starts_with(&format!(
            "lifecycle: {n_batches} batches reached CREATED {n_batches} -> WAL_WRITTEN {n_batches} -> \
             INGESTED {n_batches} -> STORED {n_batches}; now STORED {n_batches}, {n_batches} of them behind \
             the janitor's truncation point (LSN {})",
            n_batches + 1
        )),
        "{report}"
    );
    assert!(report.contains("torn tail: none"), "{report}");
    assert!(
        report.ends_with("ok: every acknowledged log record was converted exactly once, in LSN order\n"),
        "{report}"
    );

    // One envelope per LSN, and the janitor released segments behind the consumer: the log no
    // longer starts at 1.
    let out = wal("verify", &dir, &[]);
    assert_exit(&out, 0);
    let verified = stdout(&out);
    assert!(verified.contains(&format!("next LSN {}", n_batches + 1)), "{verified}");
    assert!(!verified.contains("LSNs 1..="), "{verified}");

    // What the log retains are the last envelopes: demo's logs over HTTP, one request per
    // message, converting to Arrow.
    let log = Wal::open(&dir, Config::default().with_segment_size(1 << 20)).unwrap();
    let mut n_retained = 0;
    let mut expected_lsn = log.stats().first_lsn.expect("the tail segment is never released");
    for record in log.read_from(expected_lsn).unwrap() {
        let record = record.unwrap();
        assert_eq!(record.lsn, expected_lsn);
        expected_lsn = record.lsn.next();
        let envelope = Envelope::decode(&record.payload).unwrap();
        let meta = envelope.meta();
        assert_eq!(
            (meta.tenant.as_str(), meta.signal, meta.source),
            ("demo", Signal::Logs, SourceKind::Http)
        );
        assert_eq!(meta.message_count, envelope.parts().len() as u64);
        for part in envelope.parts() {
            // Producers put 1 to 8 log records in a request.
            let logs = otlp::logs::decode(&part.payload, part.format, part.compression).unwrap();
            assert!((1..=8).contains(&logs.num_rows()), "{} rows", logs.num_rows());
        }
        n_retained += 1;
    }
    assert!(n_retained > 0);
    assert_eq!(expected_lsn.0, n_batches + 1);
    log.close().unwrap();
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
