//! `wit query`: SQL over a pipeline directory's stored data, as one tenant.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use wit_batch::Tenant;
use wit_query::QueryEngine;
use wit_store::Destination;
use wit_tracker::{SqliteTracker, TrackerConfig};

use super::{CmdResult, Failure, print_usage};

pub(super) const QUERY_USAGE: &str = "\
Usage:
    wit query --data DIR --tenant TENANT [--format table|json] SQL

Run `wit query --help` for details.
";

pub(super) const QUERY_HELP: &str = "\
wit query: run one SQL query over a pipeline directory's data, as one tenant

Usage:
    wit query --data DIR --tenant TENANT [--format table|json] SQL

DIR is a pipeline directory (as `pipeline --dir` or `wit serve` leave it): its SQLite
tracker DIR/tracker.db is the file catalog and DIR/data holds the Parquet files and their
indexes. The tenant's tables are spans, logs and metrics; only queries run (SELECT, WITH,
VALUES, EXPLAIN). Functions: attr(attributes, 'key') and attr_int/attr_double/attr_bool;
span_kind(kind), status_name(status_code), severity_name(severity_number),
metric_type_name(metric_type), temporality_name(aggregation_temporality);
matches(text, 'query') and search('query') in wit-index's query language.

    --format table   a text table (default)
    --format json    one JSON object per row, per line

Exit status: 0 success; 1 the query failed (the error says where); 2 usage error, or DIR
is not a pipeline directory.

Example:
    wit query --data ./wit-data --tenant acme \\
        \"SELECT service_name, count(*) FROM spans WHERE span_kind(kind) = 'server' GROUP BY 1\"
";

struct QueryArgs {
    data: PathBuf,
    tenant: Tenant,
    json: bool,
    sql: String,
}

fn parse(args: &[OsString]) -> Result<Option<QueryArgs>, Failure> {
    let usage = |m: String| Failure::usage(m, QUERY_USAGE);
    let (mut data, mut tenant, mut json, mut sql) = (None, None, false, None);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let text = arg
            .to_str()
            .ok_or_else(|| usage(format!("argument `{}` is not UTF-8", arg.to_string_lossy())))?;
        let mut value = |name: &str| {
            it.next()
                .map(|v| v.to_string_lossy().into_owned())
                .ok_or_else(|| usage(format!("{name} needs a value")))
        };
        match text {
            "-h" | "--help" => return Ok(None),
            "--data" => data = Some(PathBuf::from(value("--data")?)),
            "--tenant" => {
                let name = value("--tenant")?;
                tenant = Some(Tenant::try_new(&name).map_err(|e| usage(format!("--tenant: {e}")))?);
            }
            "--format" => match value("--format")?.as_str() {
                "table" => json = false,
                "json" => json = true,
                other => return Err(usage(format!("--format `{other}`: expected table or json"))),
            },
            flag if flag.starts_with("--") => return Err(usage(format!("unknown option `{flag}`"))),
            query if sql.is_none() => sql = Some(query.to_string()),
            _ => return Err(usage("one SQL query at most".into())),
        }
    }
    Ok(Some(QueryArgs {
        data: data.ok_or_else(|| usage("missing --data DIR".into()))?,
        tenant: tenant.ok_or_else(|| usage("missing --tenant TENANT".into()))?,
        json,
        sql: sql.ok_or_else(|| usage("missing the SQL query".into()))?,
    }))
}

pub(super) fn run_query(args: &[OsString]) -> CmdResult {
    let Some(args) = parse(args)? else {
        return print_usage(QUERY_HELP);
    };
    let not_a_pipeline = |why: String| Failure {
        code: 2,
        message: format!("`{}` is not a pipeline directory: {why}", args.data.display()),
        usage: None,
    };
    let db = args.data.join("tracker.db");
    if !db.is_file() {
        return Err(not_a_pipeline(format!("no tracker at `{}`", db.display())));
    }
    let tracker = SqliteTracker::open(&db, TrackerConfig::default()).map_err(|e| not_a_pipeline(e.to_string()))?;
    let destination = Destination::local(&args.data.join("data")).map_err(|e| not_a_pipeline(e.to_string()))?;
    let engine = QueryEngine::new(Arc::new(tracker), &destination).map_err(|e| Failure::failed(e.to_string()))?;
    let result = engine
        .session(&args.tenant)
        .blocking_sql(&args.sql)
        .map_err(|e| Failure::failed(e.to_string()))?;
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        result
            .to_json_rows()
            .map_err(|e| Failure::failed(e.to_string()))?
            .into_iter()
            .try_for_each(|row| writeln!(out, "{}", serde_json::Value::Object(row)))
    } else {
        let table = result.to_table().map_err(|e| Failure::failed(e.to_string()))?;
        writeln!(out, "{table}")
    };
    match written {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // A closed pipe (`| head`) is not a failure of the query.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(Failure::failed(format!("failed to write the result: {e}"))),
    }
}
