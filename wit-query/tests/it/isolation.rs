//! A session reads its tenant's tables and nothing else: every attempt to reach another
//! tenant, a path, a URL or the session's own configuration is a typed error, and bad SQL
//! says where it is wrong.

use prost::Message;
use wit_batch::{Signal, Tenant};
use wit_query::Error;

use crate::{Store, acme, data, decode, scalar, sql};

fn spans_named(name_prefix: &str, n: usize) -> arrow::array::RecordBatch {
    let mut request = data::spans(1, n as u64, 7).remove(0);
    for (i, span) in request.resource_spans[0].scope_spans[0].spans.iter_mut().enumerate() {
        span.name = format!("{name_prefix}-{i}");
    }
    decode(Signal::Traces, &request.encode_to_vec())
}

#[test]
fn each_session_sees_only_its_own_tenants_rows() {
    let store = Store::new();
    let globex = Tenant::try_new("globex").expect("tenant");
    store.write(&acme(), Signal::Traces, &[spans_named("acme", 10)]);
    store.write(&globex, Signal::Traces, &[spans_named("globex", 4)]);
    let engine = store.engine();
    let (a, g) = (engine.session(&acme()), engine.session(&globex));
    assert_eq!(scalar(&a, "SELECT count(*) FROM spans"), 10);
    assert_eq!(scalar(&g, "SELECT count(*) FROM spans"), 4);
    assert_eq!(scalar(&a, "SELECT count(*) FROM spans WHERE name LIKE 'globex%'"), 0);
    assert_eq!(scalar(&g, "SELECT count(*) FROM spans WHERE name LIKE 'acme%'"), 0);
    assert_eq!(a.tenant(), &acme());
    // A tenant without data has empty tables, not errors.
    let empty = engine.session(&Tenant::try_new("initech").expect("tenant"));
    for table in ["spans", "logs", "metrics"] {
        assert_eq!(scalar(&empty, &format!("SELECT count(*) FROM {table}")), 0, "{table}");
        let rows = sql(&empty, &format!("SELECT * FROM {table} LIMIT 5"));
        assert_eq!(rows.num_rows(), 0);
        assert!(
            rows.schema().fields().len() > 5,
            "the empty result keeps the table's columns"
        );
    }
}

#[test]
fn every_escape_attempt_is_a_typed_error() {
    let store = Store::new();
    let globex = Tenant::try_new("globex").expect("tenant");
    store.write(&globex, Signal::Traces, &[spans_named("globex", 4)]);
    store.write(&acme(), Signal::Traces, &[spans_named("acme", 3)]);
    let out = tempfile::tempdir().expect("tempdir");
    let target = out.path().join("stolen.parquet");
    let target = target.display();
    let stored = store
        .catalog
        .list(&globex, Signal::Traces, None)
        .expect("list")
        .remove(0);
    let their_file = store.dir.path().join(&stored.path);
    let their_file = their_file.display();
    let session = store.engine().session(&acme());

    let plan_errors = [
        "SELECT * FROM globex.spans".to_string(),
        "SELECT * FROM globex.events".to_string(),
        "SELECT * FROM datafusion.globex.spans".to_string(),
        "SELECT * FROM spans_globex".to_string(),
        "SELECT * FROM \"globex/spans\"".to_string(),
        "SELECT * FROM information_schema.tables".to_string(),
        "SELECT * FROM information_schema.df_settings".to_string(),
        format!("SELECT * FROM '{their_file}'"),
        format!("SELECT * FROM 'file://{their_file}'"),
        format!("SELECT * FROM read_parquet('{their_file}')"),
        "SELECT * FROM read_csv('/etc/passwd')".to_string(),
        "SELECT * FROM 's3://bucket/globex/traces/x.parquet'".to_string(),
        "SELECT * FROM parquet_metadata('/etc/passwd')".to_string(),
    ];
    for attempt in &plan_errors {
        match session.blocking_sql(attempt) {
            Err(Error::Plan { message, .. }) => assert!(!message.is_empty(), "{attempt}"),
            other => panic!("{attempt}: expected a plan error, got {other:?}"),
        }
    }
    let refused = [
        (format!("COPY spans TO '{target}'"), "COPY"),
        (
            format!("COPY (SELECT * FROM spans) TO '{target}' STORED AS PARQUET"),
            "COPY",
        ),
        (
            format!("CREATE EXTERNAL TABLE theirs STORED AS PARQUET LOCATION '{their_file}'"),
            "CREATE EXTERNAL TABLE",
        ),
        ("CREATE TABLE t AS SELECT * FROM spans".to_string(), "CREATE TABLE"),
        ("CREATE VIEW v AS SELECT * FROM spans".to_string(), "CREATE VIEW"),
        ("INSERT INTO spans SELECT * FROM spans".to_string(), "INSERT INTO"),
        ("DELETE FROM spans".to_string(), "DELETE FROM"),
        ("UPDATE spans SET name = 'x'".to_string(), "UPDATE"),
        ("DROP TABLE spans".to_string(), "DROP TABLE"),
        ("SET datafusion.catalog.information_schema = true".to_string(), "SET"),
        ("SHOW TABLES".to_string(), "SHOW TABLES"),
        (format!("EXPLAIN COPY spans TO '{target}'"), "COPY"),
        ("PREPARE q AS SELECT * FROM spans".to_string(), "PREPARE"),
    ];
    for (attempt, kind) in &refused {
        match session.blocking_sql(attempt) {
            Err(Error::NotAllowed { statement }) => assert_eq!(&statement, kind, "{attempt}"),
            other => panic!("{attempt}: expected NotAllowed, got {other:?}"),
        }
    }
    assert!(
        std::fs::read_dir(out.path()).expect("dir").next().is_none(),
        "nothing was written"
    );
    // Two statements at once are refused whole: the second never runs.
    assert!(session.blocking_sql("SELECT 1; DROP TABLE spans").is_err());
    // After all that, the session still reads exactly its own rows.
    assert_eq!(scalar(&session, "SELECT count(*) FROM spans"), 3);
    assert_eq!(
        scalar(&session, "SELECT count(*) FROM spans WHERE name LIKE 'globex%'"),
        0
    );
}

#[test]
fn bad_sql_is_a_typed_error_with_its_position() {
    let store = Store::new();
    let session = store.engine().session(&acme());
    let syntax = [
        ("SELEC * FROM spans", 1, 1),
        ("SELECT count(* FROM spans", 1, 16),
        ("SELECT name\nFROM spans\nWHERE name = = 'x'", 3, 14),
        ("SELECT count(*) FROM spans GROUP", 1, 28),
    ];
    for (text, line, column) in syntax {
        match session.blocking_sql(text) {
            Err(Error::Syntax {
                line: l,
                column: c,
                message,
            }) => {
                assert_eq!((l, c), (line, column), "{text}: {message}");
                assert!(!message.contains("Line:"), "the position is not repeated: {message}");
            }
            other => panic!("{text}: expected a syntax error, got {other:?}"),
        }
    }
    match session.blocking_sql("SELECT name,\n  nosuch_column FROM spans") {
        Err(Error::Plan { message, line, column }) => {
            assert!(message.contains("nosuch_column"), "{message}");
            assert_eq!((line, column), (Some(2), Some(3)), "{message}");
        }
        other => panic!("expected a plan error, got {other:?}"),
    }
    match session.blocking_sql("SELECT * FROM nosuch_table") {
        Err(e @ Error::Plan { .. }) => assert!(e.to_string().contains("nosuch_table"), "{e}"),
        other => panic!("expected a plan error, got {other:?}"),
    }
    match session.blocking_sql("SELECT 1/0") {
        Err(Error::Execution { message, .. }) => assert!(message.to_lowercase().contains("divide"), "{message}"),
        other => panic!("expected an execution error, got {other:?}"),
    }
}
