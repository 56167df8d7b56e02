//! The index and the scan agree on every query: random rows and random queries, rows the
//! OpenTelemetry SDK made, and a known-answer table written by hand.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use wit_batch::{PayloadFormat, Signal};
use wit_index::{Indexer, Query, SearchedBy, Searcher};
use wit_store::StoredFile;

use crate::{Rec, Store, bodies, decode, logs_json, matched, query};

/// Indexes `file`, then checks that the index and the scan give the same rows for `queries`.
fn agree(store: &Store, searcher: &Searcher, file: &StoredFile, queries: &[String]) -> Result<(), TestCaseError> {
    let file = store.get(&file.path);
    prop_assert!(file.index.is_some(), "{} is indexed", file.path);
    for text in queries {
        let Ok(q) = Query::parse(text) else {
            // Only queries the generator may make unparseable by chance (all punctuation).
            continue;
        };
        let hits = searcher.search(&file, &q).expect("search");
        prop_assert!(matches!(hits.by, SearchedBy::Index), "`{text}`: {:?}", hits.by);
        let scanned = searcher.scan(&file, &q).expect("scan");
        prop_assert_eq!(
            hits.rows.iter().collect::<Vec<_>>(),
            scanned.iter().collect::<Vec<_>>(),
            "`{}` over {}",
            text,
            file.path
        );
    }
    Ok(())
}

fn index(store: &Store, file: &StoredFile) {
    Indexer::new(store.destination.clone())
        .index_and_record(store.catalog.as_ref(), file)
        .expect("index");
}

/// Words, ids, addresses and paths rows and queries are made of; mixed case on purpose.
const WORDS: &[&str] = &[
    "error",
    "Error",
    "timeout",
    "timed",
    "out",
    "connection",
    "reset",
    "by",
    "peer",
    "GET",
    "POST",
    "/api/v2/users",
    "/api/v2/orders/17",
    "10.0.0.7",
    "10.0.0.7:5432",
    "192.168.1.20:8080",
    "550e8400-e29b-41d4-a716-446655440000",
    "user@example.com",
    "/var/log/app.log",
    "Zoë",
    "straße",
    "disk",
    "full",
    "97%",
    "retry=3",
    "a_b-c",
    "payment",
    "declined",
    "card",
    "u-42",
    "x",
];

const KEYS: &[&str] = &["user.id", "http.method", "http.route", "db.system", "note"];
const VALUES: &[&str] = &["u-42", "U-42", "GET", "post", "/api/{id}", "postgresql", "a b", "", "x"];
const SERVICES: &[&str] = &["checkout", "payments", "frontend"];
const SEVERITIES: &[&str] = &["INFO", "WARN", "ERROR", "DEBUG", "fatal", ""];

type Record = (usize, Vec<usize>, Vec<char>, usize, Vec<(usize, usize)>);

fn record() -> impl Strategy<Value = Record> {
    (
        0..SERVICES.len(),
        prop::collection::vec(0..WORDS.len(), 0..12),
        prop::collection::vec(
            prop::sample::select(vec![' ', ' ', ' ', ',', ':', '"', '(', '\n', '.']),
            12,
        ),
        0..SEVERITIES.len(),
        prop::collection::vec((0..KEYS.len(), 0..VALUES.len()), 0..3),
    )
}

fn body(words: &[usize], seps: &[char]) -> String {
    let mut out = String::new();
    for (i, w) in words.iter().enumerate() {
        if i > 0 {
            out.push(seps[i % seps.len()]);
        }
        out.push_str(WORDS[*w]);
    }
    out
}

fn leaf() -> impl Strategy<Value = String> {
    prop_oneof![
        (0..WORDS.len()).prop_map(|w| {
            let w = WORDS[w];
            if w.contains(':') {
                format!("\"{w}\"")
            } else {
                w.to_owned()
            }
        }),
        (0..WORDS.len(), 0..WORDS.len()).prop_map(|(a, b)| format!("\"{} {}\"", WORDS[a], WORDS[b])),
        (0..WORDS.len(), 1usize..5).prop_filter_map("a prefix of letters", |(w, n)| {
            let w: String = WORDS[w].chars().filter(|c| c.is_alphanumeric()).take(n).collect();
            (!w.is_empty()).then(|| format!("{w}*"))
        }),
        (0..KEYS.len(), 0..VALUES.len()).prop_filter_map("a non-empty value", |(k, v)| {
            let v = VALUES[v];
            if v.is_empty() {
                None
            } else if v.contains(' ') || v.contains('(') || v.contains(')') {
                Some(format!("{}:\"{v}\"", KEYS[k]))
            } else {
                Some(format!("{}:{v}", KEYS[k]))
            }
        }),
        (0..KEYS.len()).prop_map(|k| format!("{}:u*", KEYS[k])),
        (0..SERVICES.len()).prop_map(|s| format!("service_name:{}", SERVICES[s])),
        (0..SEVERITIES.len() - 1).prop_map(|s| format!("severity:{}", SEVERITIES[s])),
    ]
}

fn query_text() -> impl Strategy<Value = String> {
    leaf().prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} {b}")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} OR {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} AND NOT {b}")),
            inner.prop_map(|a| format!("-({a})")),
        ]
    })
}

#[test]
fn index_and_scan_agree_on_random_rows_and_queries() {
    let mut runner = TestRunner::new(Config {
        cases: 24,
        ..Config::default()
    });
    runner
        .run(
            &(
                prop::collection::vec(record(), 1..80),
                prop::collection::vec(query_text(), 24),
            ),
            |(records, queries)| {
                let texts: Vec<(String, Vec<(&str, &str)>)> = records
                    .iter()
                    .map(|(_, words, seps, _, attrs)| {
                        (
                            body(words, seps),
                            attrs.iter().map(|(k, v)| (KEYS[*k], VALUES[*v])).collect(),
                        )
                    })
                    .collect();
                let rows: Vec<Rec<'_>> = records
                    .iter()
                    .zip(&texts)
                    .map(|((s, _, _, sev, _), (body, attrs))| {
                        (SERVICES[*s], body.as_str(), SEVERITIES[*sev], attrs.as_slice())
                    })
                    .collect();
                let store = Store::new();
                let batch = decode(Signal::Logs, logs_json(&rows).as_bytes(), PayloadFormat::OtlpJson);
                let file = store.write(Signal::Logs, &[batch]);
                index(&store, &file);
                let searcher = Searcher::new(store.destination.clone());
                agree(&store, &searcher, &file, &queries)
            },
        )
        .expect("index and scan agree");
}

/// The words of every string of an OTLP/JSON fixture, split on anything but letters and
/// digits (a tokenizer of the test's own, not the analyzer's).
fn fixture_words(json: &str) -> Vec<String> {
    let mut words: Vec<String> = json
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| (2..24).contains(&w.len()))
        .map(str::to_owned)
        .collect();
    words.sort();
    words.dedup();
    words
}

/// Two words side by side in a string of the fixture, as a quoted phrase.
fn fixture_phrases(json: &str) -> Vec<String> {
    let mut phrases: Vec<String> = json
        .split('"')
        .flat_map(|s| {
            let words: Vec<&str> = s.split_whitespace().collect();
            words
                .windows(2)
                .map(|w| format!("\"{} {}\"", w[0], w[1]).replace('\\', ""))
                .collect::<Vec<_>>()
        })
        .collect();
    phrases.sort();
    phrases.dedup();
    phrases
}

#[test]
fn index_and_scan_agree_on_the_sdk_fixtures() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../wit-batch/tests/fixtures");
    let store = Store::new();
    let mut files = Vec::new();
    let mut words = Vec::new();
    let mut phrases = Vec::new();
    for (signal, name) in [
        (Signal::Logs, "logs"),
        (Signal::Traces, "traces"),
        (Signal::Metrics, "metrics"),
    ] {
        let pb = std::fs::read(format!("{dir}/{name}.pb")).expect("fixture");
        let json = std::fs::read_to_string(format!("{dir}/{name}.json")).expect("fixture json");
        words.extend(fixture_words(&json));
        phrases.extend(fixture_phrases(&json));
        let batch = decode(signal, &pb, PayloadFormat::OtlpProtobuf);
        let file = store.write(signal, &[batch]);
        index(&store, &file);
        files.push(file);
    }
    words.sort();
    words.dedup();
    let searcher = Searcher::new(store.destination.clone());
    // Every word alone, then random combinations with attributes of the fixtures.
    let singles: Vec<String> = words.clone();
    for file in &files {
        agree(&store, &searcher, file, &singles).expect("single words");
    }
    let attrs = vec![
        "service.name:checkout-service".to_owned(),
        "host.name:checkout-7f9c".to_owned(),
        "telemetry.sdk.language:python".to_owned(),
        "host.cpu.count:8".to_owned(),
        "host.arm64:false".to_owned(),
        "service.version:1.4.*".to_owned(),
        "deployment.environment.name:\"prod \\\"eu-west\\\"\"".to_owned(),
        "severity:error".to_owned(),
        "severity:info".to_owned(),
        "service_name:checkout-service".to_owned(),
    ];
    let prefixes: Vec<String> = words
        .iter()
        .filter(|w| w.len() > 3)
        .map(|w| format!("{}*", w.chars().take(3).collect::<String>()))
        .collect();
    let mut leaves = words;
    leaves.extend(attrs);
    leaves.extend(prefixes);
    leaves.extend(phrases);
    let leaf = prop::sample::select(leaves);
    let text = leaf.prop_recursive(3, 10, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} {b}")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} OR {b})")),
            inner.prop_map(|a| format!("NOT ({a})")),
        ]
    });
    let mut runner = TestRunner::new(Config {
        cases: 64,
        ..Config::default()
    });
    runner
        .run(&prop::collection::vec(text, 8), |queries| {
            for file in &files {
                agree(&store, &searcher, file, &queries)?;
            }
            Ok(())
        })
        .expect("index and scan agree on the fixtures");
}

#[test]
fn known_answers() {
    let records: &[Rec<'_>] = &[
        (
            "checkout",
            "GET /api/v2/users/42 took 3012ms",
            "INFO",
            &[("user.id", "u-42"), ("http.method", "GET")],
        ),
        (
            "checkout",
            "payment failed: card declined for user u-42",
            "ERROR",
            &[("user.id", "u-42")],
        ),
        (
            "payments",
            "connection reset by peer 10.0.0.7:5432",
            "WARN",
            &[("db.system", "postgresql")],
        ),
        (
            "payments",
            "Connection to 10.0.0.8 reset",
            "ERROR",
            &[("db.system", "postgresql")],
        ),
        (
            "frontend",
            "request 550e8400-e29b-41d4-a716-446655440000 timed out",
            "ERROR",
            &[("http.route", "/api/v2/users/{id}")],
        ),
        (
            "frontend",
            "Timeout while reading /var/log/app.log",
            "WARN",
            &[("user.id", "U-42")],
        ),
        ("checkout", "cache hit ratio 0.93 for alice@example.com", "DEBUG", &[]),
        ("checkout", "", "INFO", &[("note", "empty body")]),
    ];
    let store = Store::new();
    let batch = decode(Signal::Logs, logs_json(records).as_bytes(), PayloadFormat::OtlpJson);
    let file = store.write(Signal::Logs, &[batch]);
    index(&store, &file);
    let file = store.get(&file.path);
    let bodies = bodies(&store.destination, &file);
    let searcher = Searcher::new(store.destination.clone());
    let body = |i: usize| records[i].1.to_owned();
    let table: &[(&str, &[usize])] = &[
        ("timeout", &[5]),
        ("TIMEOUT", &[5]),
        ("time*", &[4, 5]),
        ("\"connection reset\"", &[2]),
        ("connection reset", &[2, 3]),
        ("connection AND NOT \"connection reset\"", &[3]),
        ("10.0.0.7", &[2]),
        ("\"10.0.0.7:5432\"", &[2]),
        ("10.0.0.*", &[2, 3]),
        ("5432", &[2]),
        ("550e8400-e29b-41d4-a716-446655440000", &[4]),
        ("a716", &[4]),
        ("/api/v2/users/42", &[0]),
        ("api", &[0]),
        ("app.log", &[5]),
        ("example.com", &[6]),
        ("alice@example.com", &[6]),
        ("\"peer 10.0.0.7\"", &[2]),
        ("user.id:u-42", &[0, 1]),
        ("user.id:U-42", &[5]),
        ("user.id:u*", &[0, 1]),
        ("http.route:/api/v2/users/{id}", &[4]),
        ("note:\"empty body\"", &[7]),
        ("db.system:postgresql -severity:warn", &[3]),
        ("service_name:checkout", &[0, 1, 6, 7]),
        ("service_name:checkout (severity:error OR severity:debug)", &[1, 6]),
        ("severity:error", &[1, 3, 4]),
        ("u-42", &[1]),
        ("-service_name:checkout -service_name:payments", &[4, 5]),
        ("declined OR timed", &[1, 4]),
        ("nothing-like-this", &[]),
    ];
    for (text, want) in table {
        let q = query(text);
        let hits = searcher.search(&file, &q).expect("search");
        assert!(matches!(hits.by, SearchedBy::Index), "{:?}", hits.by);
        let mut want: Vec<String> = want.iter().map(|&i| body(i)).collect();
        want.sort();
        assert_eq!(matched(&bodies, &hits.rows), want, "`{text}` through the index");
        let scanned = searcher.scan(&file, &q).expect("scan");
        assert_eq!(matched(&bodies, &scanned), want, "`{text}` by scanning");
    }
}

/// The index built from the rows the sink kept (sorted by event time across batches that
/// arrived out of order, over several row groups) finds each row where the scan of the file
/// finds it: the kept rows are in file order.
#[test]
fn an_index_built_from_the_rows_the_sink_kept_agrees_with_the_scan() {
    let store = Store::new();
    // Three batches stamped over the same milliseconds: their rows interleave in time.
    let batches: Vec<_> = (0..3)
        .map(|b| {
            let texts: Vec<String> = (0..50).map(|r| format!("token{b}x{r} shared words")).collect();
            let rows: Vec<Rec<'_>> = texts.iter().map(|t| ("svc", t.as_str(), "INFO", &[][..])).collect();
            decode(Signal::Logs, logs_json(&rows).as_bytes(), PayloadFormat::OtlpJson)
        })
        .collect();
    let config = crate::sink_config()
        .with_kept_rows_bytes(64 << 20)
        .with_row_group_rows(40);
    let mut sink = wit_store::ParquetSink::open(store.destination.clone(), config)
        .expect("sink")
        .with_catalog(store.catalog.clone());
    for batch in &batches {
        sink.write(&crate::tenant(), Signal::Logs, batch, &[wit_batch::BatchId::new()])
            .expect("write");
    }
    let file = sink.flush().expect("flush").remove(0);
    let kept = sink.take_rows(&file.path).expect("the sink kept the rows");
    Indexer::new(store.destination.clone())
        .index_and_record_rows(store.catalog.as_ref(), &file, &kept)
        .expect("index from the kept rows");
    let searcher = Searcher::new(store.destination.clone());
    let queries: Vec<String> = (0..3)
        .flat_map(|b| (0..50).map(move |r| format!("token{b}x{r}")))
        .chain(["shared".to_owned()])
        .collect();
    agree(&store, &searcher, &file, &queries).expect("index and scan agree");
    // Each token is one row, and not the row it was in its batch (the rows were reordered).
    let hits = searcher
        .search(&store.get(&file.path), &Query::parse("token2x0").expect("query"))
        .expect("search");
    assert_eq!(hits.rows.count(), 1);
    assert_ne!(
        hits.rows.iter().next(),
        Some(100),
        "batch 2's first row moved when the rows were sorted"
    );
}

/// Dead letters: their `reason` and `record` are free text, found through the index and by
/// scanning alike; their other columns (signal, stream, path ...) are not indexed.
#[test]
fn dead_letters_are_found_by_their_reason_and_record() {
    use std::time::{Duration, UNIX_EPOCH};
    use wit_batch::dead_letters::{self, DeadLetter};

    let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(1_764_576_000_000 + ms);
    let letters = [
        DeadLetter::new(
            at(0),
            Signal::Events,
            "/user/age: \"old\" is not of type integer",
            r#"{"user":{"age":"old"}}"#,
        )
        .with_stream("signups")
        .with_path("/user/age"),
        DeadLetter::new(
            at(1),
            Signal::Traces,
            "traceId: id is 5 bytes, expected 16",
            r#"{"traceId":"0102030405","name":"checkout"}"#,
        )
        .with_path("resourceSpans[0].scopeSpans[0].spans[0].traceId"),
        DeadLetter::new(at(2), Signal::Logs, "not valid UTF-8", "q83v").with_topic("logs.acme"),
    ];
    let batch = dead_letters::decode(
        &dead_letters::encode(&letters),
        PayloadFormat::Ndjson,
        wit_batch::Compression::None,
    )
    .expect("decode");
    let store = Store::new();
    let file = store.write(Signal::DeadLetters, &[batch]);
    assert!(file.path.starts_with("acme/dead_letters/"), "{}", file.path);
    index(&store, &file);
    let file = store.get(&file.path);
    let searcher = Searcher::new(store.destination.clone());
    let table: &[(&str, &[u64])] = &[
        ("integer", &[0]),
        ("old", &[0]),
        ("checkout", &[1]),
        ("\"5 bytes\"", &[1]),
        ("utf-8 OR q83v", &[2]),
        ("age", &[0]),
        // Columns that are not indexed: the stream, the signal, the topic.
        ("signups", &[]),
        ("logs.acme", &[]),
        ("traces", &[]),
    ];
    for (text, want) in table {
        let q = query(text);
        let hits = searcher.search(&file, &q).expect("search");
        assert!(matches!(hits.by, SearchedBy::Index), "{:?}", hits.by);
        assert_eq!(
            hits.rows.iter().collect::<Vec<_>>(),
            *want,
            "`{text}` through the index"
        );
        let scanned = searcher.scan(&file, &q).expect("scan");
        assert_eq!(scanned.iter().collect::<Vec<_>>(), *want, "`{text}` by scanning");
    }
}
