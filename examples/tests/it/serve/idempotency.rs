//! Idempotency keys: a request repeated under its `Idempotency-Key` (HTTP) or
//! `idempotency-key` metadata (gRPC) is answered as the first one was, partial success
//! included, and stored once; keys are per tenant; concurrent repeats are stored once; a bad
//! key is a 400. The SIGKILL test with keys is `with_idempotency_keys_every_span_survives_…`.

use super::*;

/// POSTs `body` to `path` with `headers`: the status and the body.
fn send(server: &Server, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Vec<u8>) {
    let mut request = agent().post(&server.otlp_url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut response = request.send(body).expect("post");
    let mut bytes = Vec::new();
    response.body_mut().as_reader().read_to_end(&mut bytes).expect("body");
    (response.status().as_u16(), bytes)
}

const PROTOBUF: (&str, &str) = ("content-type", "application/x-protobuf");

#[test]
fn a_repeated_request_is_answered_as_the_first_and_stored_once() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
    let tmp = tempfile::tempdir().expect("tmp");
    let server = Server::start(tmp.path(), "pipeline:\n  batch_max_age_ms: 5\n  file_max_age_ms: 100\n");

    // A whole request, sent three times (the key bare, then quoted as the IETF draft writes it).
    let body = spans("whole", 3).encode_to_vec();
    let first = send(&server, "/v1/traces", &[PROTOBUF, ("idempotency-key", "k-1")], &body);
    assert_eq!(first.0, 200);
    assert_eq!(
        send(&server, "/v1/traces", &[PROTOBUF, ("idempotency-key", "k-1")], &body),
        first
    );
    assert_eq!(
        send(
            &server,
            "/v1/traces",
            &[PROTOBUF, ("idempotency-key", "\"k-1\"")],
            &body
        ),
        first
    );

    // A partial success is answered again as it was: one span refused, and why.
    let mut partly = spans("partly", 3);
    partly.resource_spans[0].scope_spans[0].spans[1].trace_id = vec![1, 2, 3];
    let partly = partly.encode_to_vec();
    let first_partial = send(&server, "/v1/traces", &[PROTOBUF, ("idempotency-key", "k-2")], &partly);
    let answer = ExportTraceServiceResponse::decode(&first_partial.1[..]).expect("response");
    let partial = answer.partial_success.expect("partial_success");
    assert_eq!(partial.rejected_spans, 1);
    assert!(partial.error_message.contains("traceId"), "{}", partial.error_message);
    assert_eq!(
        send(&server, "/v1/traces", &[PROTOBUF, ("idempotency-key", "k-2")], &partly),
        first_partial
    );

    // The key is the tenant's: another tenant's request under it is its own.
    let other = [PROTOBUF, ("idempotency-key", "k-1"), ("x-wit-tenant", "other")];
    assert_eq!(send(&server, "/v1/traces", &other, &body).0, 200);
    assert_eq!(send(&server, "/v1/traces", &other, &body).0, 200);

    // Events, answered `{"accepted": n}` both times.
    let events = b"{\"timestamp\": 1700000000000, \"msg\": \"a\"}\n{\"timestamp\": 1700000000001, \"msg\": \"b\"}\n";
    let event_headers = [("content-type", "application/x-ndjson"), ("idempotency-key", "e-1")];
    let first_events = send(&server, "/v1/events/audit", &event_headers, events);
    assert_eq!(first_events, (200, br#"{"accepted":2}"#.to_vec()));
    assert_eq!(send(&server, "/v1/events/audit", &event_headers, events), first_events);

    // Eight repeats at once: one is taken, the others wait for it and get its answer.
    let concurrent = spans("concurrent", 2).encode_to_vec();
    let answers: Vec<(u16, Vec<u8>)> = std::thread::scope(|scope| {
        let sends: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    send(
                        &server,
                        "/v1/traces",
                        &[PROTOBUF, ("idempotency-key", "k-3")],
                        &concurrent,
                    )
                })
            })
            .collect();
        sends.into_iter().map(|s| s.join().expect("send")).collect()
    });
    assert!(answers.iter().all(|a| a.0 == 200), "{answers:?}");

    // gRPC, with the key in the metadata.
    runtime().block_on(async {
        let mut client = server.trace_client().await;
        for _ in 0..2 {
            let mut request = tonic::Request::new(spans("grpc", 2));
            request
                .metadata_mut()
                .insert("idempotency-key", "g-1".parse().expect("metadata"));
            client.export(request).await.expect("export");
        }
        // A key that is not visible ASCII is refused, naming it.
        let mut request = tonic::Request::new(spans("grpc-bad", 1));
        request
            .metadata_mut()
            .insert("idempotency-key", "two words".parse().expect("metadata"));
        let status = client.export(request).await.expect_err("bad key");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("visible ASCII"), "{}", status.message());
    });

    // A bad key over HTTP: 400, naming what is wrong; nothing taken.
    let (status, bad) = send(
        &server,
        "/v1/traces",
        &[PROTOBUF, ("idempotency-key", "two words")],
        &body,
    );
    assert_eq!(status, 400);
    let rpc = RpcStatus::decode(&bad[..]).expect("google.rpc.Status");
    assert!(
        rpc.message.contains("idempotency key") && rpc.message.contains("visible ASCII"),
        "{}",
        rpc.message
    );

    // Stored once each, read back with SQL.
    let count = |tenant: Option<&str>, prefix: &str, n: u64| {
        server.wait_count(
            tenant,
            &format!("SELECT count(*) AS n FROM spans WHERE name LIKE '{prefix}-%'"),
            n,
        );
    };
    count(None, "whole", 3);
    count(None, "partly", 2);
    count(None, "concurrent", 2);
    count(None, "grpc", 2);
    count(Some("other"), "whole", 3);
    server.wait_count(None, "SELECT count(*) AS n FROM events WHERE _stream = 'audit'", 2);
    // And counted: 2 + 1 + 1 + 7 + 1 repeats of the default tenant, 1 of the other.
    let metrics = server.metrics();
    let deduplicated = |tenant: &str| {
        metric(
            &metrics,
            "wit_tenant_requests_total",
            &[&format!("tenant=\"{tenant}\""), "outcome=\"deduplicated\""],
        )
    };
    assert_eq!(deduplicated("default"), Some(12.0), "{metrics}");
    assert_eq!(deduplicated("other"), Some(1.0));
}
