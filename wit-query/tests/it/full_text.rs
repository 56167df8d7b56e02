//! `matches` and `search` give the same rows with and without indexes, and the same rows as
//! wit-index's own scan fallback; where an index exists, the files and rows it rules out are
//! never read.

use std::collections::BTreeSet;

use arrow::array::{Array, AsArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use wit_batch::Signal;
use wit_index::{Indexer, Query, Searcher};
use wit_query::{Error, Session};
use wit_store::StoredFile;

use crate::{Store, acme, scalar, sql, standard_store};

/// The standard data twice: without indexes, and with every file indexed.
fn stores() -> (Store, Store) {
    let (plain, indexed) = (standard_store(), standard_store());
    let indexer = Indexer::new(indexed.destination.clone());
    for signal in [Signal::Traces, Signal::Logs, Signal::Metrics] {
        for file in indexed.catalog.list(&acme(), signal, None).expect("list") {
            indexer
                .index_and_record(indexed.catalog.as_ref(), &file)
                .expect("index");
        }
        assert!(
            indexed
                .catalog
                .list(&acme(), signal, None)
                .expect("list")
                .iter()
                .all(|f| f.index.is_some())
        );
    }
    (plain, indexed)
}

/// A row's identity across stores: a span's id; a log's time, severity and body.
fn key_sql(table: &str) -> &'static str {
    match table {
        "spans" => "encode(span_id, 'hex')",
        _ => "CAST(CAST(timestamp AS BIGINT) AS VARCHAR) || ' ' || severity_text || ' ' || coalesce(body['str'], '')",
    }
}

fn keys(session: &Session, table: &str, predicate: &str) -> Vec<String> {
    let query = format!(
        "SELECT {} AS k FROM {table} WHERE {predicate} ORDER BY k",
        key_sql(table)
    );
    let rows = sql(session, &query).to_json_rows().expect("json");
    rows.iter()
        .map(|r| r["k"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The keys of the rows wit-index's scan fallback finds, read with the Parquet crate.
fn fallback_keys(store: &Store, signal: Signal, query: &Query) -> Vec<String> {
    let searcher = Searcher::new(store.destination.clone());
    let mut out = Vec::new();
    for file in store.catalog.list(&acme(), signal, None).expect("list") {
        let rows = searcher.scan(&file, query).expect("scan");
        out.extend(
            file_keys(store, &file)
                .into_iter()
                .enumerate()
                .filter(|(i, _)| rows.contains(*i as u64))
                .map(|(_, k)| k),
        );
    }
    out.sort();
    out
}

fn file_keys(store: &Store, file: &StoredFile) -> Vec<String> {
    let bytes = store.destination.read(&file.path).expect("read");
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .expect("parquet")
        .build()
        .expect("reader");
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.expect("batch");
        for i in 0..batch.num_rows() {
            out.push(match file.signal {
                Signal::Traces => {
                    let ids = batch.column_by_name("span_id").expect("span_id").as_fixed_size_binary();
                    ids.value(i).iter().map(|b| format!("{b:02x}")).collect()
                }
                _ => {
                    let ts = batch.column_by_name("timestamp").expect("timestamp");
                    let ts = ts.as_primitive::<arrow::datatypes::TimestampNanosecondType>().value(i);
                    let sev = batch
                        .column_by_name("severity_text")
                        .expect("severity")
                        .as_string::<i32>()
                        .value(i);
                    let body = batch.column_by_name("body").expect("body").as_struct();
                    let text = body.column_by_name("str").expect("str").as_string::<i32>();
                    let text = if body.is_valid(i) && text.is_valid(i) {
                        text.value(i)
                    } else {
                        ""
                    };
                    format!("{ts} {sev} {text}")
                }
            });
        }
    }
    out
}

fn atom() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "timeout",
        "failed",
        "paid",
        "order",
        "created",
        "upstream",
        "pay",
        "cart",
        "find",
        "u-3",
        "u-1*",
        "fail*",
        "\"order 13\"",
        "\"upstream timeout\"",
        "service_name:checkout",
        "service_name:search",
        "severity:error",
        "severity:warn",
        "user.id:u-3",
        "http.method:POST",
        "http.method:G*",
        "nosuchword",
        "api",
        "/api/pay",
    ])
    .prop_map(str::to_string)
}

fn query() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![atom(), atom().prop_map(|a| format!("-{a}"))];
    leaf.prop_recursive(2, 6, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} OR {b})")),
            inner.prop_map(|a| format!("NOT {a}")),
        ]
    })
}

#[test]
fn search_and_matches_agree_with_and_without_indexes_and_with_the_scan_fallback() {
    let (plain, indexed) = stores();
    let (p, x) = (plain.engine().session(&acme()), indexed.engine().session(&acme()));
    let mut runner = TestRunner::new(Config {
        cases: 24,
        ..Config::default()
    });
    runner
        .run(&query(), |text| {
            let q = Query::parse(&text).expect("generated queries parse");
            for (table, signal) in [("spans", Signal::Traces), ("logs", Signal::Logs)] {
                let predicate = format!("search('{}')", text.replace('\'', "''"));
                let with = keys(&x, table, &predicate);
                prop_assert_eq!(&with, &keys(&p, table, &predicate), "{} {}: index vs none", table, text);
                prop_assert_eq!(
                    &with,
                    &fallback_keys(&plain, signal, &q),
                    "{} {}: vs fallback",
                    table,
                    text
                );
                if q.is_text_only() {
                    let column = if table == "spans" { "name" } else { "body" };
                    let predicate = format!("matches({column}, '{}')", text.replace('\'', "''"));
                    let with = keys(&x, table, &predicate);
                    prop_assert_eq!(&with, &keys(&p, table, &predicate), "{} {}: matches", table, text);
                    // A text column's matches are a subset of the whole row's.
                    let row: BTreeSet<String> = fallback_keys(&plain, signal, &q).into_iter().collect();
                    if q.is_monotone() {
                        prop_assert!(with.iter().all(|k| row.contains(k)), "{} {}", table, text);
                    }
                }
            }
            Ok(())
        })
        .expect("differential");
}

#[test]
fn known_answers() {
    let (_plain, indexed) = stores();
    let s = indexed.engine().session(&acme());
    let count = |q: &str| scalar(&s, q).as_u64().expect("count");
    let all = count("SELECT count(*) FROM logs");
    let failed = count("SELECT count(*) FROM logs WHERE body['str'] LIKE 'failed %'");
    assert!(failed > 0);
    assert_eq!(count("SELECT count(*) FROM logs WHERE matches(body, 'failed')"), failed);
    // A body without text (NULL, or a number) matches nothing, and neither does its NOT:
    // matches() is NULL there, as SQL comparisons with NULL are.
    let textless = count("SELECT count(*) FROM logs WHERE body['str'] IS NULL");
    assert!(textless > 0, "the SDK's logs have bodies without text");
    assert_eq!(
        count("SELECT count(*) FROM logs WHERE matches(body, 'failed') IS NULL"),
        textless
    );
    assert_eq!(
        count("SELECT count(*) FROM logs WHERE NOT matches(body, 'failed')"),
        all - failed - textless
    );
    assert_eq!(count("SELECT count(*) FROM logs WHERE search('-failed')"), all - failed);
    let errors = count("SELECT count(*) FROM logs WHERE severity_text = 'ERROR'");
    assert_eq!(
        count("SELECT count(*) FROM logs WHERE search('severity:error')"),
        errors
    );
    assert_eq!(
        count("SELECT count(*) FROM spans WHERE search('http.method:POST service_name:checkout')"),
        count(
            "SELECT count(*) FROM spans WHERE attr(attributes, 'http.method') = 'POST' AND service_name = 'checkout'"
        )
    );
    // On an expression, and in a projection.
    assert_eq!(
        count("SELECT count(*) FROM spans WHERE matches(attr(attributes, 'user.id'), 'u-3')"),
        count("SELECT count(*) FROM spans WHERE attr(attributes, 'user.id') = 'u-3'")
    );
    assert_eq!(
        count("SELECT sum(CASE WHEN search('timeout') THEN 1 ELSE 0 END) FROM logs"),
        count("SELECT count(*) FROM logs WHERE search('timeout')")
    );
    // In a join, the table is named.
    let joined = count(
        "SELECT count(*) FROM spans s JOIN logs l ON s.trace_id = l.trace_id WHERE search('l', 'failed') AND search('s', 'service_name:payments')",
    );
    let expected = count(
        "SELECT count(*) FROM spans s JOIN logs l ON s.trace_id = l.trace_id WHERE l.body['str'] LIKE 'failed %' AND s.service_name = 'payments'",
    );
    assert_eq!(joined, expected);
    assert!(joined > 0);
}

#[test]
fn files_and_rows_the_index_rules_out_are_never_read() {
    let (_plain, indexed) = stores();
    let session = indexed.engine().session(&acme());
    // Only the SDK's spans file has these words; the other files go from the disk.
    let word = "search('\"résumé\" OR naïve')";
    let before = scalar(&session, &format!("SELECT count(*) FROM spans WHERE {word}"));
    assert!(before.as_u64().unwrap_or(0) > 0, "{before}");
    let files = indexed.catalog.list(&acme(), Signal::Traces, None).expect("list");
    let searcher = Searcher::new(indexed.destination.clone());
    let q = Query::parse("\"résumé\" OR naïve").expect("query");
    let mut removed = 0;
    for file in &files {
        if searcher.search_index(file, &q).expect("search").count() == 0 {
            std::fs::remove_file(indexed.dir.path().join(&file.path)).expect("remove");
            removed += 1;
        }
    }
    assert!(removed >= 3, "{removed} files ruled out");
    assert_eq!(
        scalar(&session, &format!("SELECT count(*) FROM spans WHERE {word}")),
        before
    );
    // A trace id is looked up through the indexes too.
    let trace = scalar(
        &session,
        &format!("SELECT encode(trace_id, 'hex') FROM spans WHERE {word} AND trace_id IS NOT NULL LIMIT 1"),
    );
    let trace = trace.as_str().expect("hex");
    assert!(
        scalar(
            &session,
            &format!("SELECT count(*) FROM spans WHERE trace_id = decode('{trace}', 'hex')")
        )
        .as_u64()
        .unwrap_or(0)
            > 0
    );
    // Without a full-text predicate every file is read, and the missing ones fail the query.
    assert!(matches!(
        session.blocking_sql("SELECT count(*) FROM spans WHERE name <> ''"),
        Err(Error::Execution { .. })
    ));
}

#[test]
fn bad_full_text_queries_are_typed_errors() {
    let store = standard_store();
    let session = store.engine().session(&acme());
    match session.blocking_sql("SELECT count(*) FROM logs WHERE matches(body, 'error AND (timeout')") {
        Err(Error::Search { position, .. }) => assert_eq!(position, 10),
        other => panic!("expected a search error, got {other:?}"),
    }
    match session.blocking_sql("SELECT count(*) FROM logs WHERE search('\"unclosed')") {
        Err(Error::Search { .. }) => {}
        other => panic!("expected a search error, got {other:?}"),
    }
    for bad in [
        "SELECT count(*) FROM logs WHERE matches(body, 'service_name:x')",
        "SELECT count(*) FROM logs WHERE matches(body, body['str'])",
        "SELECT count(*) FROM logs WHERE matches(severity_number, 'x')",
        "SELECT count(*) FROM logs WHERE search('nosuch', 'x')",
        "SELECT count(*) FROM spans s JOIN logs l ON s.trace_id = l.trace_id WHERE search('x')",
        "SELECT search('x')",
    ] {
        match session.blocking_sql(bad) {
            Err(Error::Plan { message, .. }) => assert!(!message.is_empty()),
            other => panic!("{bad}: expected a plan error, got {other:?}"),
        }
    }
}

/// The rows the Parquet scan produced, from an `EXPLAIN ANALYZE` text (`210`, `2.71 K`).
fn rows_scanned(plan: &str) -> f64 {
    let scan = &plan[plan.find("DataSourceExec").expect("a Parquet scan")..];
    let at = scan.find("output_rows=").expect("output_rows") + "output_rows=".len();
    let text = scan[at..].split(',').next().expect("a count");
    let (number, scale) = match text.split_once(' ') {
        Some((n, "K")) => (n, 1e3),
        Some((n, "M")) => (n, 1e6),
        _ => (text, 1.0),
    };
    number.parse::<f64>().expect("a count") * scale
}

#[test]
fn the_scan_reads_only_the_rows_the_index_finds() {
    let (plain, indexed) = stores();
    let query = "SELECT count(*) FROM logs WHERE search('service_name:checkout severity:error')";
    let (p, x) = (plain.engine().session(&acme()), indexed.engine().session(&acme()));
    let hits = scalar(&x, query).as_u64().expect("count");
    assert_eq!(scalar(&p, query).as_u64(), Some(hits));
    let all = scalar(&x, "SELECT count(*) FROM logs").as_u64().expect("count");
    assert!(hits > 0 && hits * 4 < all, "{hits} of {all}");
    let with = sql(&x, &format!("EXPLAIN ANALYZE {query}")).to_table().expect("plan");
    assert_eq!(
        rows_scanned(&with),
        hits as f64,
        "the index's rows and no other: {with}"
    );
    let without = sql(&p, &format!("EXPLAIN ANALYZE {query}")).to_table().expect("plan");
    assert!(
        rows_scanned(&without) > 2.0 * hits as f64,
        "without an index more rows are read: {without}"
    );
}

#[test]
fn search_over_files_with_and_without_usable_indexes_and_hot_rows_is_exact() {
    let (plain, mixed) = (standard_store(), standard_store());
    // Half the files indexed, one of those with its blob corrupted afterwards.
    let indexer = Indexer::new(mixed.destination.clone());
    let mut corrupted = false;
    for signal in [Signal::Traces, Signal::Logs] {
        for (i, file) in mixed
            .catalog
            .list(&acme(), signal, None)
            .expect("list")
            .iter()
            .enumerate()
        {
            if i % 2 == 0 {
                let index = indexer.index_and_record(mixed.catalog.as_ref(), file).expect("index");
                if !corrupted {
                    mixed
                        .destination
                        .put(&index.path, bytes::Bytes::from_static(b"garbage"))
                        .expect("put");
                    corrupted = true;
                }
            }
        }
    }
    // And rows acknowledged but not stored, in both engines.
    let hot = wit_query::HotTier::new(1 << 20);
    let extra = crate::decode(
        Signal::Logs,
        &prost::Message::encode_to_vec(&crate::data::logs(1, 50, 99)[0]),
    );
    hot.insert(&acme(), Signal::Logs, wit_batch::BatchId::new(), extra);
    let engine = |store: &Store| {
        wit_query::QueryEngine::with_config(
            store.catalog.clone(),
            &store.destination,
            wit_query::QueryConfig::default().with_hot_tier(hot.clone()),
        )
        .expect("engine")
        .session(&acme())
    };
    let (p, m) = (engine(&plain), engine(&mixed));
    for query in [
        "failed",
        "severity:error -timeout",
        "service_name:checkout OR user.id:u-3",
        "\"order 13\" OR pay*",
        "NOT created",
    ] {
        for table in ["spans", "logs"] {
            let predicate = format!("search('{}')", query.replace('\'', "''"));
            assert_eq!(
                keys(&m, table, &predicate),
                keys(&p, table, &predicate),
                "{table}: {query}"
            );
            let projected = format!("SELECT count(*) AS n, max(timestamp) AS t FROM {table} WHERE {predicate}");
            assert_eq!(
                sql(&m, &projected).to_json_rows().expect("json"),
                sql(&p, &projected).to_json_rows().expect("json"),
                "{projected}"
            );
        }
    }
}
