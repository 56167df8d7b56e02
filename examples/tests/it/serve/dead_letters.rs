//! JSON Schema per event stream and the dead-letter table: valid, invalid and mixed requests;
//! a record that fails (its schema, JSON, its time, or OTLP conversion) is in the tenant's
//! `dead_letters` table with why and where, queryable by that tenant only, and the rest of
//! its request is taken.

use super::*;

const SCHEMAS: &str = "\
events:
  schemas:
    - stream: orders
      version: 3
      schema:
        type: object
        required: [timestamp, order_id]
        properties:
          order_id: {type: string}
          amount: {type: number, minimum: 0}
pipeline:
  batch_max_age_ms: 5
  file_max_age_ms: 100
";

/// POSTs NDJSON `lines` to `stream` as `tenant`: the status and the JSON answer.
fn send_events(server: &Server, tenant: &str, stream: &str, lines: &[&str]) -> (u16, Value) {
    let mut response = agent()
        .post(&server.otlp_url(&format!("/v1/events/{stream}")))
        .header("content-type", "application/x-ndjson")
        .header("x-wit-tenant", tenant)
        .send(lines.join("\n"))
        .expect("post");
    let body = response.body_mut().read_to_string().expect("body");
    (
        response.status().as_u16(),
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

#[test]
fn records_that_fail_go_to_the_tenants_dead_letters_and_the_rest_is_taken() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
    let tmp = tempfile::tempdir().expect("tmp");
    let server = Server::start(tmp.path(), SCHEMAS);
    let t = 1_700_000_000_000u64;

    // Valid: all taken.
    let valid = [
        &format!(r#"{{"timestamp": {t}, "order_id": "o-1", "amount": 5}}"#)[..],
        &format!(r#"{{"timestamp": {}, "order_id": "o-2"}}"#, t + 1),
    ];
    assert_eq!(
        send_events(&server, "acme", "orders", &valid),
        (200, json!({"accepted": 2}))
    );

    // Invalid: nothing taken into `events`, both dead-lettered, and the answer says why.
    let invalid = [
        &format!(r#"{{"timestamp": {t}, "amount": 1}}"#)[..],
        &format!(r#"{{"timestamp": {t}, "order_id": "o-3", "amount": -4}}"#),
    ];
    let (status, answer) = send_events(&server, "acme", "orders", &invalid);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["accepted"].as_u64(), answer["dead_lettered"].as_u64()),
        (Some(0), Some(2))
    );
    assert!(
        answer["message"].as_str().unwrap_or("").contains("order_id"),
        "{answer}"
    );

    // Mixed: one valid line among one failing the schema, one that is not JSON, and one
    // without its time (which the stream's schema requires anyway).
    let mixed = [
        &format!(r#"{{"timestamp": {t}, "order_id": "o-4"}}"#)[..],
        r#"{"timestamp": 1700000000000, "order_id": 42}"#,
        "{not json",
        r#"{"order_id": "o-5"}"#,
    ];
    let (status, answer) = send_events(&server, "acme", "orders", &mixed);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["accepted"].as_u64(), answer["dead_lettered"].as_u64()),
        (Some(1), Some(3))
    );

    // A stream without a schema: a line without its time is a dead letter, the rest taken.
    let unschemed = [r#"{"timestamp": 1700000000000, "x": 1}"#, r#"{"x": 2}"#];
    let (status, answer) = send_events(&server, "acme", "clicks", &unschemed);
    assert_eq!((status, answer["dead_lettered"].as_u64()), (200, Some(1)), "{answer}");

    // OTLP: a span that does not convert is a dead letter too, and partial_success says so.
    let mut partly = spans("partly", 3);
    partly.resource_spans[0].scope_spans[0].spans[1].trace_id = vec![1, 2, 3];
    let mut response = agent()
        .post(&server.otlp_url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .header("x-wit-tenant", "acme")
        .send(&partly.encode_to_vec()[..])
        .expect("post");
    assert_eq!(response.status(), 200);
    let mut body = Vec::new();
    response.body_mut().as_reader().read_to_end(&mut body).expect("body");
    let partial = ExportTraceServiceResponse::decode(&body[..])
        .expect("response")
        .partial_success
        .expect("partial_success");
    assert_eq!(partial.rejected_spans, 1);
    assert!(
        partial.error_message.contains("dead_letters"),
        "{}",
        partial.error_message
    );

    // Read back with SQL: the taken records, and the dead letters with their reasons.
    server.wait_count(
        Some("acme"),
        "SELECT count(*) AS n FROM events WHERE _stream = 'orders'",
        3,
    );
    server.wait_count(Some("acme"), "SELECT count(*) AS n FROM spans", 2);
    server.wait_count(Some("acme"), "SELECT count(*) AS n FROM dead_letters", 7);
    let rows = server.sql(
        Some("acme"),
        "SELECT signal, stream, schema_version, path, reason, record FROM dead_letters \
         WHERE stream = 'orders' ORDER BY reason",
    );
    let rows = rows["rows"].as_array().expect("rows").clone();
    assert_eq!(rows.len(), 5, "{rows:?}");
    for row in &rows {
        assert_eq!(row["signal"], "events");
        assert_eq!(row["schema_version"], 3, "{row}");
    }
    let find = |needle: &str| {
        rows.iter()
            .find(|r| r["record"].as_str().is_some_and(|rec| rec.contains(needle)))
            .unwrap_or_else(|| panic!("no dead letter of {needle}: {rows:?}"))
    };
    // Where each failed: the path into the record, and the reason naming it.
    let negative = find("-4");
    assert_eq!(negative["path"], "/amount");
    assert!(
        negative["reason"].as_str().unwrap_or("").contains("/amount"),
        "{negative}"
    );
    let missing = find(r#""amount": 1"#);
    assert_eq!(missing["path"], "", "the record itself, as a JSON Pointer");
    assert!(
        missing["reason"].as_str().unwrap_or("").contains("order_id"),
        "{missing}"
    );
    let wrong_type = find(r#""order_id": 42"#);
    assert_eq!(wrong_type["path"], "/order_id");
    let not_json = find("{not json");
    assert!(
        not_json["reason"].as_str().unwrap_or("").contains("not JSON"),
        "{not_json}"
    );
    assert_eq!(not_json["record"], "{not json", "the record as received");
    // The OTLP one: where it was in the request, why, and the span itself as OTLP/JSON.
    let span = server.sql(
        Some("acme"),
        "SELECT path, reason, record FROM dead_letters WHERE signal = 'traces'",
    )["rows"][0]
        .clone();
    assert_eq!(span["path"], "resourceSpans[0].scopeSpans[0].spans[1]", "{span}");
    assert!(span["reason"].as_str().unwrap_or("").contains("traceId"), "{span}");
    assert!(span["record"].as_str().unwrap_or("").contains("partly-1"), "{span}");

    // Another tenant sees none of them.
    server.wait_count(Some("other"), "SELECT count(*) AS n FROM dead_letters", 0);

    // And they are counted.
    let metrics = server.metrics();
    assert_eq!(
        metric(
            &metrics,
            "wit_tenant_records_total",
            &["tenant=\"acme\"", "outcome=\"dead_lettered\""]
        ),
        Some(7.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "wit_dead_letters_total", &["signal=\"events\""]),
        Some(6.0)
    );
    assert_eq!(
        metric(&metrics, "wit_dead_letters_total", &["signal=\"traces\""]),
        Some(1.0)
    );
}
