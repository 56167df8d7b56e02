//! `attr*` and the enum-name functions, on the payloads a real OpenTelemetry SDK produced.

use serde_json::{Value, json};
use wit_query::Error;

use prost::Message;
use wit_batch::Signal;
use wit_query::{QueryConfig, QueryEngine};

use crate::{Store, acme, data, decode, scalar, sql, standard_store};

fn row(session: &wit_query::Session, query: &str) -> Value {
    let rows = sql(session, query).to_json_rows().expect("json");
    assert_eq!(rows.len(), 1, "{query}: {rows:?}");
    Value::Object(rows[0].clone())
}

#[test]
fn attribute_values_by_key_typed_and_as_text() {
    let store = standard_store();
    let session = store.engine().session(&acme());
    let checkout = "FROM spans WHERE name = 'GET /checkout/{cart_id}'";
    assert_eq!(
        row(
            &session,
            &format!(
                "SELECT attr(attributes, 'attr.string') AS s, attr(attributes, 'attr.string.empty') AS empty, \
                 attr(attributes, 'attr.int') AS i, attr_int(attributes, 'attr.int') AS int, \
                 attr_double(attributes, 'attr.int') AS widened, attr(attributes, 'attr.bool') AS b, \
                 attr_bool(attributes, 'attr.bool') AS bool, attr_int(attributes, 'attr.int.max') AS max, \
                 attr_int(attributes, 'attr.string') AS not_an_int, attr(attributes, 'no.such.key') AS missing, \
                 attr(resource_attributes, 'service.name') AS service {checkout}"
            )
        ),
        json!({"s": "hello", "empty": "", "i": "-42", "int": -42, "widened": -42.0, "b": "true", "bool": true,
               "max": i64::MAX, "service": "checkout-service"}),
        "absent keys and values of another type are NULL (no key)"
    );
    // Arrays and key-value lists read as their OTLP/JSON text; doubles keep their precision.
    let labels = scalar(
        &session,
        &format!("SELECT attr(resource_attributes, 'k8s.pod.labels') {checkout}"),
    );
    assert!(
        labels
            .as_str()
            .is_some_and(|t| t.starts_with('[') && t.contains("stringValue")),
        "{labels}"
    );
    assert_eq!(
        scalar(
            &session,
            "SELECT attr_double(attributes, 'double.inf') > 1e308 FROM spans WHERE name LIKE 'render%'"
        ),
        true
    );
    // The function filters like the map lookup it replaces.
    assert_eq!(
        scalar(
            &session,
            "SELECT count(*) FROM spans WHERE attr(attributes, 'http.method') = 'POST'"
        ),
        scalar(
            &session,
            "SELECT count(*) FROM spans WHERE attributes['http.method']['str'] = 'POST'"
        ),
    );
}

#[test]
fn enum_numbers_read_and_filter_by_their_otlp_names() {
    let store = standard_store();
    let session = store.engine().session(&acme());
    assert_eq!(
        row(
            &session,
            "SELECT kind, span_kind(kind) AS kind_name, status_name(status_code) AS status \
             FROM spans WHERE name = 'GET /checkout/{cart_id}'"
        ),
        json!({"kind": 2, "kind_name": "server", "status": "ok"})
    );
    for (n, name) in [
        (0, "unspecified"),
        (1, "internal"),
        (2, "server"),
        (3, "client"),
        (4, "producer"),
        (5, "consumer"),
    ] {
        let by_name = scalar(
            &session,
            &format!("SELECT count(*) FROM spans WHERE span_kind(kind) = '{name}'"),
        );
        let by_number = scalar(&session, &format!("SELECT count(*) FROM spans WHERE kind = {n}"));
        assert_eq!(by_name, by_number, "{name}");
        assert!(by_name.as_u64().unwrap_or(0) > 0, "{name}");
    }
    // The name comparison is rewritten to the number's, so it prunes like one.
    let plan = sql(
        &session,
        "EXPLAIN SELECT count(*) FROM spans WHERE span_kind(kind) = 'server'",
    )
    .to_table()
    .expect("table");
    assert!(plan.contains("kind@") && !plan.contains("span_kind(kind@"), "{plan}");
    assert_eq!(
        scalar(
            &session,
            "SELECT count(*) FROM spans WHERE span_kind(kind) = 'no-such-kind'"
        ),
        0
    );
    let severities = sql(
        &session,
        "SELECT DISTINCT severity_number AS n, severity_name(severity_number) AS name FROM logs ORDER BY n",
    )
    .to_json_rows()
    .expect("json");
    for r in &severities {
        let n = r["n"].as_i64().expect("n");
        let expected = match n {
            0 => "UNSPECIFIED",
            5 => "DEBUG",
            9 => "INFO",
            13 => "WARN",
            17 => "ERROR",
            21 => "FATAL",
            _ => continue,
        };
        assert_eq!(r["name"], expected, "{r:?}");
    }
    assert!(severities.len() >= 4, "{severities:?}");
    let types = sql(
        &session,
        "SELECT DISTINCT metric_type_name(metric_type) AS t FROM metrics ORDER BY t",
    )
    .to_json_rows()
    .expect("json");
    let types: Vec<&str> = types.iter().filter_map(|r| r["t"].as_str()).collect();
    for t in ["gauge", "histogram", "sum"] {
        assert!(types.contains(&t), "{types:?}");
    }
}

#[test]
fn functions_refuse_arguments_of_the_wrong_kind() {
    let store = standard_store();
    let session = store.engine().session(&acme());
    for bad in [
        "SELECT attr(name, 'x') FROM spans",
        "SELECT attr(attributes, 42) FROM spans",
        "SELECT attr(attributes) FROM spans",
        "SELECT span_kind('server') FROM spans",
    ] {
        match session.blocking_sql(bad) {
            Err(Error::Plan { message, .. }) => assert!(!message.is_empty()),
            other => panic!("{bad}: expected a plan error, got {other:?}"),
        }
    }
}

#[test]
fn low_cardinality_text_reads_as_dictionaries_and_like_runs_per_distinct_value() {
    let store = standard_store();
    let session = store.engine().session(&acme());
    let result = sql(&session, "SELECT name, service_name, status_message FROM spans LIMIT 1");
    let schema = result.schema();
    for (column, dictionary) in [("name", true), ("service_name", true), ("status_message", false)] {
        let t = schema.field_with_name(column).expect("column").data_type().clone();
        assert_eq!(
            matches!(t, arrow::datatypes::DataType::Dictionary(_, _)),
            dictionary,
            "{column}: {t}"
        );
    }
    // LIKE on a dictionary column runs on the dictionary itself (no cast expanding it to a
    // string per row), inside the Parquet scan.
    let plan = sql(&session, "EXPLAIN SELECT count(*) FROM spans WHERE name LIKE '%pay%'")
        .to_table()
        .expect("table");
    assert!(
        plan.lines()
            .any(|l| l.contains("DataSourceExec") && l.contains("predicate=name@") && l.contains("LIKE %pay%")),
        "{plan}"
    );
    assert!(!plan.contains("CAST"), "{plan}");
    // Grouping on a dictionary column groups by an id per distinct value (primitive
    // grouping), and gives back the column's name and type.
    let plan = sql(
        &session,
        "EXPLAIN SELECT service_name, count(*) FROM spans GROUP BY service_name",
    )
    .to_table()
    .expect("table");
    assert!(plan.contains("group_id(spans.service_name)"), "{plan}");
    // The physical plan finds a row's group by indexing with its id, not by hashing it.
    assert!(
        plan.lines()
            .any(|l| l.contains("DenseGroupExec") && l.contains("group_id(service_name@")),
        "{plan}"
    );
    // An aggregate that needs its input ordered keeps DataFusion's own operator.
    let ordered = sql(
        &session,
        "EXPLAIN SELECT service_name, array_agg(name ORDER BY timestamp) FROM spans GROUP BY service_name",
    )
    .to_table()
    .expect("table");
    assert!(!ordered.contains("DenseGroupExec"), "{ordered}");
    assert!(ordered.contains("AggregateExec"), "{ordered}");
    let grouped = sql(
        &session,
        "SELECT service_name, count(*) AS n FROM spans GROUP BY service_name ORDER BY service_name",
    );
    assert_eq!(
        grouped.schema().field(0).data_type(),
        schema.field_with_name("service_name").expect("column").data_type()
    );
    assert_eq!(grouped.schema().field(0).name(), "service_name");
    // And answers as LIKE on the text does.
    for pattern in ["%pay%", "GET %", "_OST /api/ca%", "%"] {
        let dictionary = scalar(
            &session,
            &format!("SELECT count(*) FROM spans WHERE name LIKE '{pattern}'"),
        );
        let text = scalar(
            &session,
            &format!("SELECT count(*) FROM spans WHERE CAST(name AS VARCHAR) || '' LIKE '{pattern}'"),
        );
        assert_eq!(dictionary, text, "{pattern}");
        assert!(dictionary.as_u64().unwrap_or(0) > 0, "{pattern}");
    }
}

#[test]
fn grouping_by_a_dictionary_column_keeps_the_null_group() {
    // Spans of a resource without `service.name` have a NULL service: they form one group
    // of their own, beside the named services, whatever the number of partitions.
    let store = Store::new();
    let mut requests = data::spans(1, 30, 1);
    for request in requests.iter_mut().step_by(2) {
        request.resource_spans[0].resource = None;
    }
    let batches: Vec<_> = requests
        .iter()
        .map(|r| decode(Signal::Traces, &r.encode_to_vec()))
        .collect();
    store.write(&acme(), Signal::Traces, &batches);
    for partitions in [1, 3] {
        let config = QueryConfig::default().with_target_partitions(partitions);
        let engine = QueryEngine::with_config(store.catalog.clone(), &store.destination, config).expect("engine");
        let session = engine.session(&acme());
        let grouped = sql(
            &session,
            "SELECT service_name, count(*) AS n FROM spans GROUP BY service_name ORDER BY service_name NULLS FIRST",
        )
        .to_json_rows()
        .expect("json");
        let nulls = scalar(
            &session,
            "SELECT count(*) FILTER (WHERE service_name IS NULL) FROM spans",
        );
        assert!(nulls.as_u64().unwrap_or(0) > 0, "some spans have no service");
        let named = scalar(&session, "SELECT count(*) FROM spans WHERE service_name = 'payments'");
        let expected = vec![
            json!({"service_name": null, "n": nulls}),
            json!({"service_name": "payments", "n": named}),
        ];
        let got: Vec<Value> = grouped
            .into_iter()
            .map(|row| {
                let mut row = Value::Object(row);
                if row.get("service_name").is_none() {
                    row["service_name"] = Value::Null;
                }
                row
            })
            .collect();
        assert_eq!(got, expected, "{partitions} partitions");
    }
}
