//! `wit-query` beside DuckDB on the same Parquet files, in the same run.
//!
//! Input: 5,000,000 spans of the `otlp` bench shape (`wit_benches::telemetry`), each with one
//! more attribute, `enduser.id = user-{n % 10000}` (each value in 0.01% of the rows), written
//! by `wit-store`'s sink (ZSTD, defaults) into 10 files of 500,000 spans, each indexed by
//! `wit-index`. Files go under `$CARGO_TARGET_TMPDIR`.
//!
//! Each query runs warm with 2 threads on both sides: Wit through `Session::sql` (engine with
//! 2 target partitions), DuckDB from its Python package (`SET threads TO 2`) over a view of
//! `read_parquet` of the same 10 files, timed inside Python (`time.perf_counter`, after one
//! warm-up run). Printed per query: the medians and Wit / DuckDB (≤ 1.0 means Wit is as fast
//! or faster). Results are checked equal before timing.
//!
//! Queries: `count(*)`; a 1% time range; GROUP BY service with avg(duration);
//! `name LIKE '%items/16%'`; an attribute equality on a value in 0.01% of rows (Wit: through
//! the index with `search`, and by scan with `attr`); a trace-id lookup.

use std::hint::black_box;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use criterion::{Criterion, criterion_group, criterion_main};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use wit_batch::otlp::traces;
use wit_batch::{BatchId, Compression, PayloadFormat, Signal, Tenant};
use wit_benches::telemetry::{N, T0, trace_request};
use wit_index::Indexer;
use wit_query::{QueryConfig, QueryEngine, Session};
use wit_store::{Destination, FileCatalog, InMemoryFileCatalog, NodeName, ParquetSink, SinkConfig};

const FILES: usize = 10;
const SPANS: usize = 5_000_000;

fn spans(request: usize) -> RecordBatch {
    let first = request * N;
    let mut r = trace_request(first as u64);
    let mut n = first;
    for rs in &mut r.resource_spans {
        for ss in &mut rs.scope_spans {
            for span in &mut ss.spans {
                n += 1;
                span.attributes.push(KeyValue {
                    key: "enduser.id".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(format!("user-{}", n % 10_000))),
                    }),
                    ..Default::default()
                });
            }
        }
    }
    traces::decode(&r.encode_to_vec(), PayloadFormat::OtlpProtobuf, Compression::None).expect("decode")
}

/// The files, written and indexed once; their local paths.
fn store(dir: &std::path::Path) -> (Destination, Arc<InMemoryFileCatalog>, Vec<String>) {
    let destination = Destination::local(dir).expect("destination");
    let catalog = Arc::new(InMemoryFileCatalog::default());
    let mut sink = ParquetSink::open(
        destination.clone(),
        SinkConfig::new(NodeName::try_new("bench").expect("node")),
    )
    .expect("sink")
    .with_catalog(catalog.clone());
    let tenant = Tenant::try_new("acme").expect("tenant");
    let indexer = Indexer::new(destination.clone());
    let per_file = SPANS / N / FILES;
    for f in 0..FILES {
        for r in 0..per_file {
            sink.write(&tenant, Signal::Traces, &spans(f * per_file + r), &[BatchId::new()])
                .expect("write");
        }
        for file in sink.flush().expect("flush") {
            indexer.index_and_record(catalog.as_ref(), &file).expect("index");
        }
    }
    let files = catalog.list(&tenant, Signal::Traces, None).expect("list");
    assert_eq!(files.len(), FILES);
    assert_eq!(files.iter().map(|f| f.rows).sum::<u64>(), SPANS as u64);
    let paths = files.iter().map(|f| dir.join(&f.path).display().to_string()).collect();
    (destination, catalog, paths)
}

/// DuckDB's median time and result rows for each query (2 threads, warm).
fn duckdb(paths: &[String], queries: &[&str], runs: usize) -> Vec<(Duration, String)> {
    let script = r#"
import json, sys, time, duckdb
req = json.load(sys.stdin)
con = duckdb.connect()
con.execute("SET threads TO 2")
con.execute("SET enable_progress_bar = false")
con.execute(f"CREATE VIEW spans AS SELECT * FROM read_parquet({json.dumps(req['paths'])})")
out = []
for q in req["queries"]:
    rows = con.execute(q).fetchall()
    times = []
    for _ in range(req["runs"]):
        t = time.perf_counter()
        con.execute(q).fetchall()
        times.append(time.perf_counter() - t)
    times.sort()
    out.append({"median": times[len(times) // 2], "rows": json.dumps(rows, default=str)})
print(json.dumps(out))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 with duckdb (pip install duckdb)");
    let request = serde_json::json!({"paths": paths, "queries": queries, "runs": runs});
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(request.to_string().as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("duckdb");
    assert!(out.status.success(), "duckdb failed");
    let results: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
    results
        .iter()
        .map(|r| {
            (
                Duration::from_secs_f64(r["median"].as_f64().expect("median")),
                r["rows"].as_str().expect("rows").to_string(),
            )
        })
        .collect()
}

/// A result's rows as DuckDB's script prints them (JSON arrays of values), for comparison.
fn rows_json(session: &Session, sql: &str) -> String {
    let result = session.blocking_sql(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let names: Vec<String> = result.schema().fields().iter().map(|f| f.name().clone()).collect();
    let rows: Vec<Vec<serde_json::Value>> = result
        .to_json_rows()
        .expect("json")
        .into_iter()
        .map(|r| {
            names
                .iter()
                .map(|n| r.get(n).cloned().unwrap_or(serde_json::Value::Null))
                .collect()
        })
        .collect();
    serde_json::to_string(&rows).expect("json")
}

fn same(a: &str, b: &str) -> bool {
    let (a, b): (serde_json::Value, serde_json::Value) = (
        serde_json::from_str(a).expect("json"),
        serde_json::from_str(b).expect("json"),
    );
    fn eq(a: &serde_json::Value, b: &serde_json::Value) -> bool {
        match (a, b) {
            (serde_json::Value::Array(x), serde_json::Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(a, b)| eq(a, b))
            }
            (serde_json::Value::Number(x), serde_json::Value::Number(y)) => {
                let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
                (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
            }
            _ => a == b,
        }
    }
    eq(&a, &b)
}

fn p50(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

fn query(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let started = Instant::now();
    let (destination, catalog, paths) = store(dir.path());
    println!(
        "query: {SPANS} spans in {FILES} files written and indexed in {:?}",
        started.elapsed()
    );
    let engine = QueryEngine::with_config(catalog, &destination, QueryConfig::default().with_target_partitions(2))
        .expect("engine");
    let session = engine.session(&Tenant::try_new("acme").expect("tenant"));
    let trace: String = session
        .blocking_sql(
            "SELECT encode(trace_id, 'hex') AS t FROM spans WHERE attr(attributes, 'enduser.id') = 'user-77' LIMIT 1",
        )
        .expect("trace")
        .to_json_rows()
        .expect("json")[0]["t"]
        .as_str()
        .expect("hex")
        .to_string();
    // 1% of the time span, in the middle.
    let (lo, hi) = (
        T0 + SPANS as u64 * 1_000 / 2,
        T0 + SPANS as u64 * 1_000 / 2 + SPANS as u64 * 10,
    );
    let ts = |ns: u64| chrono_free_rfc3339(ns);
    let cases: Vec<(&str, String, String)> = vec![
        (
            "count",
            "SELECT count(*) FROM spans".into(),
            "SELECT count(*) FROM spans".into(),
        ),
        (
            "time_range_1pct",
            format!(
                "SELECT count(*), max(CAST(duration AS BIGINT)) FROM spans WHERE timestamp >= '{}' AND timestamp < '{}'",
                ts(lo),
                ts(hi)
            ),
            format!(
                "SELECT count(*), max(duration) FROM spans WHERE timestamp >= '{}' AND timestamp < '{}'",
                ts(lo),
                ts(hi)
            ),
        ),
        (
            "group_by_service",
            "SELECT service_name, avg(CAST(duration AS BIGINT)) FROM spans GROUP BY service_name ORDER BY service_name"
                .into(),
            "SELECT service_name, avg(duration) FROM spans GROUP BY service_name ORDER BY service_name".into(),
        ),
        (
            "name_like",
            "SELECT count(*) FROM spans WHERE name LIKE '%items/16%'".into(),
            "SELECT count(*) FROM spans WHERE name LIKE '%items/16%'".into(),
        ),
        (
            "attr_eq_index",
            "SELECT count(*) FROM spans WHERE search('enduser.id:user-4242')".into(),
            "SELECT count(*) FROM spans WHERE attributes['enduser.id'].str = 'user-4242'".into(),
        ),
        (
            "attr_eq_scan",
            "SELECT count(*) FROM spans WHERE attr(attributes, 'enduser.id') = 'user-4242'".into(),
            "SELECT count(*) FROM spans WHERE attributes['enduser.id'].str = 'user-4242'".into(),
        ),
        (
            "trace_id",
            format!("SELECT count(*), min(name) FROM spans WHERE trace_id = decode('{trace}', 'hex')"),
            format!("SELECT count(*), min(name) FROM spans WHERE trace_id = unhex('{trace}')"),
        ),
    ];
    let duck_sql: Vec<&str> = cases.iter().map(|(_, _, d)| d.as_str()).collect();
    let duck = duckdb(&paths, &duck_sql, 15);
    let mut table = Vec::new();
    let mut group = c.benchmark_group("query_5m_spans");
    group.sample_size(10).measurement_time(Duration::from_secs(8));
    for ((name, wit, _), (duck_median, duck_rows)) in cases.iter().zip(&duck) {
        let ours = rows_json(&session, wit);
        assert!(same(&ours, duck_rows), "{name}: Wit {ours} vs DuckDB {duck_rows}");
        let mut times = Vec::new();
        group.bench_function(*name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    let t = Instant::now();
                    black_box(session.blocking_sql(wit).expect("query"));
                    times.push(t.elapsed());
                }
                start.elapsed()
            })
        });
        table.push((*name, p50(times), *duck_median));
    }
    group.finish();
    println!("\nquery_5m_spans (2 threads each, warm; medians):");
    println!("{:<18} {:>12} {:>12} {:>10}", "query", "wit", "duckdb", "wit/duck");
    for (name, ours, duck) in table {
        println!(
            "{name:<18} {:>10.2}ms {:>10.2}ms {:>10.3}",
            ours.as_secs_f64() * 1e3,
            duck.as_secs_f64() * 1e3,
            ours.as_secs_f64() / duck.as_secs_f64().max(1e-9)
        );
    }
}

/// RFC 3339 (UTC, nanoseconds) of `ns` since the epoch, without a date library.
fn chrono_free_rfc3339(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ns % 1_000_000_000
    )
}

criterion_group!(benches, query);
criterion_main!(benches);
