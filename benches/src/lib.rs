//! Criterion benchmarks of Wit; see `benches/`. This library holds what several benches share.

/// Synthetic OTLP requests shaped like a real service's telemetry: 10 resources (services) ×
/// 10 scopes × 100 records, HTTP-server attributes, trace ids shared by 8 spans.
pub mod telemetry {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

    /// Resources per request.
    pub const RESOURCES: usize = 10;
    /// Scopes per resource.
    pub const SCOPES: usize = 10;
    /// Records per scope.
    pub const RECORDS: usize = 100;
    /// Records per request.
    pub const N: usize = RESOURCES * SCOPES * RECORDS;

    fn s(v: &str) -> Option<AnyValue> {
        Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        })
    }

    fn i(v: i64) -> Option<AnyValue> {
        Some(AnyValue {
            value: Some(any_value::Value::IntValue(v)),
        })
    }

    fn kv(k: &str, v: Option<AnyValue>) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: v,
            ..Default::default()
        }
    }

    fn resource(r: usize) -> Option<Resource> {
        Some(Resource {
            attributes: vec![
                kv("service.name", s(&format!("checkout-{r}"))),
                kv("host.name", s(&format!("node-{}", r % 3))),
                kv("k8s.pod.name", s(&format!("checkout-7d9f8-{r:05}"))),
            ],
            ..Default::default()
        })
    }

    fn scope(sc: usize) -> Option<InstrumentationScope> {
        Some(InstrumentationScope {
            name: format!("io.opentelemetry.http-{sc}"),
            version: "1.32.0".into(),
            ..Default::default()
        })
    }

    fn span_attributes(n: u64) -> Vec<KeyValue> {
        vec![
            kv(
                "http.request.method",
                s(if n.is_multiple_of(5) { "POST" } else { "GET" }),
            ),
            kv("http.route", s("/api/v1/items/{id}")),
            kv(
                "http.response.status_code",
                i(if n.is_multiple_of(50) { 500 } else { 200 }),
            ),
            kv("network.peer.address", s(&format!("10.1.{}.{}", n % 7, n % 250))),
            kv(
                "user_agent.original",
                s("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"),
            ),
            kv("http.request.body.size", i((n % 4096) as i64)),
            kv("server.address", s("api.example.com")),
            kv("server.port", i(443)),
            kv("url.scheme", s("https")),
            kv("thread.id", i((n % 64) as i64)),
        ]
    }

    fn ids(n: u64) -> (Vec<u8>, Vec<u8>) {
        let trace = (u128::from(n / 8).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
            .to_be_bytes()
            .to_vec();
        (trace, n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes().to_vec())
    }

    /// The first record's time (ns since the epoch).
    pub const T0: u64 = 1_700_000_000_000_000_000;

    /// A traces request of [`N`] spans numbered from `first + 1` (ids and start times follow
    /// the number, so requests with different `first` do not overlap).
    pub fn trace_request(first: u64) -> ExportTraceServiceRequest {
        let mut n = first;
        let resource_spans = (0..RESOURCES)
            .map(|r| ResourceSpans {
                resource: resource(r),
                scope_spans: (0..SCOPES)
                    .map(|sc| ScopeSpans {
                        scope: scope(sc),
                        spans: (0..RECORDS)
                            .map(|_| {
                                n += 1;
                                let (trace_id, span_id) = ids(n);
                                Span {
                                    trace_id,
                                    span_id,
                                    parent_span_id: if n.is_multiple_of(8) { Vec::new() } else { ids(n - 1).1 },
                                    name: format!("GET /api/v1/items/{}", n % 17),
                                    kind: 2,
                                    start_time_unix_nano: T0 + n * 1_000,
                                    end_time_unix_nano: T0 + n * 1_000 + 250_000,
                                    attributes: span_attributes(n),
                                    status: Some(Status {
                                        code: if n.is_multiple_of(50) { 2 } else { 1 },
                                        message: String::new(),
                                    }),
                                    flags: 0x100,
                                    ..Default::default()
                                }
                            })
                            .collect(),
                        schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
                    })
                    .collect(),
                schema_url: String::new(),
            })
            .collect();
        ExportTraceServiceRequest { resource_spans }
    }

    /// A logs request of [`N`] records.
    pub fn logs_request() -> ExportLogsServiceRequest {
        let mut n = 0u64;
        let resource_logs = (0..RESOURCES)
            .map(|r| ResourceLogs {
                resource: resource(r),
                scope_logs: (0..SCOPES)
                    .map(|sc| ScopeLogs {
                        scope: scope(sc),
                        log_records: (0..RECORDS)
                            .map(|_| {
                                n += 1;
                                let (trace_id, span_id) = ids(n);
                                LogRecord {
                                    time_unix_nano: T0 + n * 1_000,
                                    observed_time_unix_nano: T0 + n * 1_000 + 5_000,
                                    severity_number: 9,
                                    severity_text: "INFO".into(),
                                    body: s(&format!(
                                        "served GET /api/v1/items/{} in {} ms for user {}",
                                        n % 17,
                                        n % 90,
                                        n % 1000
                                    )),
                                    attributes: span_attributes(n),
                                    trace_id,
                                    span_id,
                                    flags: 1,
                                    ..Default::default()
                                }
                            })
                            .collect(),
                        schema_url: String::new(),
                    })
                    .collect(),
                schema_url: String::new(),
            })
            .collect();
        ExportLogsServiceRequest { resource_logs }
    }
}
