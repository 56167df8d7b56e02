//! The same queries through Wit and through DuckDB reading the same Parquet files: the
//! results must be equal, row for row.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use wit_batch::Signal;

use wit_query::{QueryConfig, QueryEngine, Session};

use crate::{acme, sql, standard_store};

/// One query, with DuckDB's spelling where the dialects differ.
struct Case {
    name: &'static str,
    wit: &'static str,
    duck: Option<&'static str>,
}

const fn same(name: &'static str, sql: &'static str) -> Case {
    Case {
        name,
        wit: sql,
        duck: None,
    }
}

const fn pair(name: &'static str, wit: &'static str, duck: &'static str) -> Case {
    Case {
        name,
        wit,
        duck: Some(duck),
    }
}

const CASES: &[Case] = &[
    same("count spans", "SELECT count(*) AS n FROM spans"),
    same("count logs", "SELECT count(*) AS n FROM logs"),
    same("count metrics", "SELECT count(*) AS n FROM metrics"),
    same(
        "one hour of spans",
        "SELECT count(*) AS n FROM spans WHERE timestamp >= '2025-12-01T01:00:00Z' AND timestamp < '2025-12-01T02:00:00Z'",
    ),
    same(
        "a narrow window across a file boundary",
        "SELECT count(*) AS n FROM logs WHERE timestamp BETWEEN '2025-12-01T00:50:00Z' AND '2025-12-01T01:10:00Z'",
    ),
    same(
        "nothing in range",
        "SELECT count(*) AS n FROM spans WHERE timestamp > '2030-01-01T00:00:00Z'",
    ),
    pair(
        "group by service with average duration",
        "SELECT service_name, count(*) AS n, avg(CAST(duration AS BIGINT)) AS avg_ns, max(CAST(duration AS BIGINT)) AS max_ns \
         FROM spans GROUP BY service_name ORDER BY service_name",
        "SELECT service_name, count(*) AS n, avg(duration) AS avg_ns, max(duration) AS max_ns \
         FROM spans GROUP BY service_name ORDER BY service_name",
    ),
    same(
        "group by service and severity",
        "SELECT service_name, severity_text, severity_number, count(*) AS n FROM logs \
         GROUP BY service_name, severity_text, severity_number ORDER BY service_name, severity_number",
    ),
    pair(
        "attribute equality",
        "SELECT service_name, count(*) AS n FROM spans WHERE attributes['http.method']['str'] = 'POST' \
         GROUP BY service_name ORDER BY service_name",
        "SELECT service_name, count(*) AS n FROM spans WHERE attributes['http.method'].str = 'POST' \
         GROUP BY service_name ORDER BY service_name",
    ),
    pair(
        "integer attribute range",
        "SELECT count(*) AS n FROM spans WHERE attributes['http.status_code']['int'] >= 500",
        "SELECT count(*) AS n FROM spans WHERE attributes['http.status_code'].int >= 500",
    ),
    pair(
        "absent attributes are NULL",
        "SELECT count(*) AS total, count(attributes['user.id']['str']) AS with_user, \
         sum(CASE WHEN attributes['user.id']['str'] IS NULL THEN 1 ELSE 0 END) AS without_user FROM spans",
        "SELECT count(*) AS total, count(attributes['user.id'].str) AS with_user, \
         sum(CASE WHEN attributes['user.id'].str IS NULL THEN 1 ELSE 0 END) AS without_user FROM spans",
    ),
    pair(
        "attr() against the map lookup",
        "SELECT attr(attributes, 'http.method') AS m, count(*) AS n FROM spans WHERE attr(attributes, 'user.id') = 'u-3' \
         GROUP BY attr(attributes, 'http.method') ORDER BY m",
        "SELECT attributes['http.method'].str AS m, count(*) AS n FROM spans WHERE attributes['user.id'].str = 'u-3' \
         GROUP BY attributes['http.method'].str ORDER BY m",
    ),
    pair(
        "typed attributes",
        "SELECT attr_int(attributes, 'http.status_code') AS code, attr(attributes, 'http.status_code') AS text, count(*) AS n \
         FROM spans GROUP BY 1, 2 ORDER BY 1 NULLS FIRST",
        "SELECT attributes['http.status_code'].int AS code, CAST(attributes['http.status_code'].int AS VARCHAR) AS text, \
         count(*) AS n FROM spans GROUP BY 1, 2 ORDER BY 1 NULLS FIRST",
    ),
    pair(
        "span kinds by name",
        "SELECT span_kind(kind) AS k, count(*) AS n FROM spans WHERE span_kind(kind) IN ('server', 'client') GROUP BY 1 ORDER BY 1",
        "SELECT CASE kind WHEN 2 THEN 'server' ELSE 'client' END AS k, count(*) AS n FROM spans WHERE kind IN (2, 3) \
         GROUP BY 1 ORDER BY 1",
    ),
    same(
        "NULL trace ids and NULL-safe counts",
        "SELECT count(*) AS n, count(trace_id) AS with_trace, count(DISTINCT trace_id) AS traces FROM logs",
    ),
    same(
        "join spans to logs by trace id",
        "SELECT s.service_name, count(*) AS n FROM spans s JOIN logs l ON s.trace_id = l.trace_id \
         GROUP BY s.service_name ORDER BY s.service_name",
    ),
    same(
        "left join keeps spans without logs",
        "SELECT count(*) AS n, count(l.timestamp) AS matched FROM spans s LEFT JOIN logs l ON s.trace_id = l.trace_id",
    ),
    pair(
        "newest ten spans",
        "SELECT name, CAST(timestamp AS BIGINT) AS ts, encode(span_id, 'hex') AS id FROM spans \
         ORDER BY timestamp DESC, span_id LIMIT 10",
        "SELECT name, epoch_ns(timestamp) AS ts, lower(hex(span_id)) AS id FROM spans \
         ORDER BY timestamp DESC, span_id LIMIT 10",
    ),
    same(
        "status codes and kinds",
        "SELECT status_code, kind, count(*) AS n FROM spans GROUP BY status_code, kind ORDER BY status_code, kind",
    ),
    same(
        "LIKE on span names",
        "SELECT name, count(*) AS n FROM spans WHERE name LIKE '%pay%' GROUP BY name ORDER BY name",
    ),
    same(
        "NOT LIKE and ILIKE on a nullable dictionary column",
        "SELECT service_name, count(*) AS n FROM spans WHERE service_name NOT LIKE '%ay%' OR service_name ILIKE 'CHECK%' \
         GROUP BY service_name ORDER BY service_name",
    ),
    same(
        "LIKE with a single-character wildcard, as a value",
        "SELECT name LIKE '_ET %' AS get, name NOT ILIKE '%PAY%' AS not_pay, count(*) AS n FROM spans \
         GROUP BY name LIKE '_ET %', name NOT ILIKE '%PAY%' ORDER BY get, not_pay",
    ),
    same(
        "equality and IN on dictionary columns",
        "SELECT metric_name, count(*) AS n FROM metrics WHERE metric_name IN ('http.server.duration', 'nope') \
         OR (metric_unit = 'ms' AND metric_name LIKE '%.%') GROUP BY metric_name ORDER BY metric_name",
    ),
    same(
        "two dictionary groups, HAVING and ORDER BY on the group",
        "SELECT service_name, name, count(*) AS n FROM spans GROUP BY service_name, name \
         HAVING count(*) > 50 AND name LIKE '%a%' ORDER BY service_name DESC NULLS LAST, name",
    ),
    same(
        "a dictionary group inside a subquery",
        "SELECT count(*) AS n FROM logs WHERE service_name IN \
         (SELECT service_name FROM spans GROUP BY service_name HAVING count(*) > 10)",
    ),
    pair(
        "time bounds per service",
        "SELECT service_name, CAST(min(timestamp) AS BIGINT) AS first, CAST(max(timestamp) AS BIGINT) AS last \
         FROM logs GROUP BY service_name ORDER BY service_name",
        "SELECT service_name, epoch_ns(min(timestamp)) AS first, epoch_ns(max(timestamp)) AS last \
         FROM logs GROUP BY service_name ORDER BY service_name",
    ),
    pair(
        "HAVING on a group count",
        "SELECT body['str'] AS body, count(*) AS n FROM logs GROUP BY body['str'] HAVING count(*) > 1 \
         ORDER BY n DESC, body LIMIT 5",
        "SELECT body.str AS body, count(*) AS n FROM logs GROUP BY body.str HAVING count(*) > 1 \
         ORDER BY n DESC, body LIMIT 5",
    ),
    same(
        "the SDK's metrics by name and type",
        "SELECT metric_name, metric_type, count(*) AS n, sum(value_double) AS d, sum(value_int) AS i \
         FROM metrics GROUP BY metric_name, metric_type ORDER BY metric_name, metric_type",
    ),
    pair(
        "one trace",
        "SELECT count(*) AS n FROM spans WHERE trace_id = (SELECT trace_id FROM spans ORDER BY timestamp, span_id LIMIT 1)",
        "SELECT count(*) AS n FROM spans WHERE trace_id = (SELECT trace_id FROM spans ORDER BY timestamp, span_id LIMIT 1)",
    ),
    same(
        "COALESCE and CASE over nullable columns",
        "SELECT coalesce(service_name, '(none)') AS service, \
         sum(CASE WHEN status_message = '' THEN 0 ELSE 1 END) AS with_message FROM spans \
         GROUP BY coalesce(service_name, '(none)') ORDER BY service",
    ),
    pair(
        "aggregate filters and several accumulators on a dictionary group",
        "SELECT service_name, count(*) FILTER (WHERE status_code = 2) AS errors, \
         sum(CAST(duration AS BIGINT)) AS total_ns, min(name) AS first_name, count(DISTINCT name) AS names \
         FROM spans GROUP BY service_name ORDER BY service_name",
        "SELECT service_name, count(*) FILTER (WHERE status_code = 2) AS errors, \
         sum(duration) AS total_ns, min(name) AS first_name, count(DISTINCT name) AS names \
         FROM spans GROUP BY service_name ORDER BY service_name",
    ),
    same(
        "a grouped NULL on a dictionary group",
        "SELECT scope_version, count(*) AS n, count(scope_version) AS non_null FROM spans \
         GROUP BY scope_version ORDER BY scope_version NULLS FIRST",
    ),
];

fn duckdb_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import duckdb"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("WIT_REQUIRE_DUCKDB").is_none(),
            "DuckDB is required here (pip install duckdb; .ci/run installs it)"
        );
        eprintln!("duckdb not installed: the DuckDB comparison is skipped (pip install duckdb)");
    }
    ok
}

/// Runs `queries` in DuckDB over views of the tables' files; each result as rows of JSON.
fn duckdb(tables: &Value, queries: &[&str]) -> Vec<Vec<Vec<Value>>> {
    let script = r#"
import json, sys, duckdb
req = json.load(sys.stdin)
con = duckdb.connect()
con.execute("SET threads TO 2")
con.execute("SET enable_progress_bar = false")
for name, files in req["tables"].items():
    con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet({json.dumps(files)})")
out = []
for q in req["queries"]:
    try:
        out.append([list(r) for r in con.execute(q).fetchall()])
    except Exception as e:
        out.append({"error": f"{q}: {e}"})
print(json.dumps(out, default=str))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let request = json!({"tables": tables, "queries": queries});
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(request.to_string().as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("duckdb");
    assert!(out.status.success(), "duckdb script failed");
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).expect("json");
    results
        .into_iter()
        .map(|r| match r {
            Value::Array(rows) => rows
                .into_iter()
                .map(|row| match row {
                    Value::Array(values) => values,
                    other => panic!("row {other}"),
                })
                .collect(),
            other => panic!("DuckDB failed: {other}"),
        })
        .collect()
}

/// Values equal as SQL results: numbers within a relative 1e-9 (averages), the rest exactly.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap_or(f64::NAN), y.as_f64().unwrap_or(f64::NAN));
            x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs())
        }
        _ => a == b,
    }
}

#[test]
fn queries_give_duckdbs_results_on_the_same_files() {
    if !duckdb_available() {
        return;
    }
    let store = standard_store();
    let mut tables = serde_json::Map::new();
    for (name, signal) in [
        ("spans", Signal::Traces),
        ("logs", Signal::Logs),
        ("metrics", Signal::Metrics),
    ] {
        let files = store.catalog.list(&acme(), signal, None).expect("list");
        assert!(!files.is_empty(), "{name} has files");
        let paths: Vec<Value> = files
            .iter()
            .map(|f| Value::from(store.dir.path().join(&f.path).to_string_lossy().into_owned()))
            .collect();
        tables.insert(name.to_string(), Value::Array(paths));
    }
    assert!(
        store.catalog.list(&acme(), Signal::Traces, None).expect("list").len() >= 3,
        "spans span several files"
    );
    let duck_sql: Vec<&str> = CASES.iter().map(|c| c.duck.unwrap_or(c.wit)).collect();
    let expected = duckdb(&Value::Object(tables), &duck_sql);
    // One partition (single-stage aggregates) and several (partial, then final stages).
    for partitions in [1, 3] {
        let config = QueryConfig::default().with_target_partitions(partitions);
        let engine = QueryEngine::with_config(store.catalog.clone(), &store.destination, config).expect("engine");
        compare(&engine.session(&acme()), &expected, partitions);
    }
}

/// Each case through `session` against DuckDB's rows.
fn compare(session: &Session, expected: &[Vec<Vec<Value>>], partitions: usize) {
    for (case, expected) in CASES.iter().zip(expected) {
        let result = sql(session, case.wit);
        let names: Vec<String> = result.schema().fields().iter().map(|f| f.name().clone()).collect();
        let got: Vec<Vec<Value>> = result
            .to_json_rows()
            .expect("json")
            .into_iter()
            .map(|row| {
                names
                    .iter()
                    .map(|n| row.get(n).cloned().unwrap_or(Value::Null))
                    .collect()
            })
            .collect();
        assert!(
            !expected.is_empty(),
            "{}: a case that selects no row proves little",
            case.name
        );
        let equal = got.len() == expected.len()
            && got
                .iter()
                .zip(expected)
                .all(|(g, e)| g.len() == e.len() && g.iter().zip(e).all(|(a, b)| same_value(a, b)));
        assert!(
            equal,
            "{} ({partitions} partitions): Wit and DuckDB differ\n  wit:    {got:?}\n  duckdb: {expected:?}\n  sql: {}",
            case.name, case.wit
        );
        assert!(
            !got.is_empty() || case.name == "nothing in range",
            "{}: no rows",
            case.name
        );
    }
}
