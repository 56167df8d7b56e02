//! OTLP → Arrow: `wit-batch`'s direct decoders beside the prost path, in the same run.
//!
//! Workloads, as the issue sets them: one request of 10 resources × 10 scopes × 100 records
//! (10,000 spans, or 10,000 log records), each record with 10 attributes, each resource with
//! 3 (`service.name` among them). Spans have a parent, a status and realistic names; log
//! records a string body, a severity and trace context.
//!
//! Contenders, single thread, one request per iteration:
//!
//! - `prost_decode`: `ExportTraceServiceRequest::decode` alone (prost into owned structs);
//! - `prost_decode+convert`: the same, then `otlp::*::from_prost` to the same Arrow batch:
//!   the path the direct decoder must beat;
//! - `wit_direct`: `otlp::*::decode`, protobuf bytes straight into Arrow builders;
//! - for OTLP/JSON, `serde_json+convert` (serde_json into opentelemetry-proto's structs, then
//!   `from_prost`) beside `wit_direct_json`.
//!
//! Throughput is in elements (spans or log records); criterion's report gives elements/s.
//! Ratios are taken between the medians criterion writes to
//! `target/criterion/otlp_*/*/new/estimates.json`. Row counts are asserted once per
//! contender, never timings.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use wit_batch::otlp::{logs, traces};
use wit_batch::{Compression, PayloadFormat};

const RESOURCES: usize = 10;
const SCOPES: usize = 10;
const RECORDS: usize = 100;
const N: usize = RESOURCES * SCOPES * RECORDS;

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

const T0: u64 = 1_700_000_000_000_000_000;

fn trace_request() -> ExportTraceServiceRequest {
    let mut n = 0u64;
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

fn logs_request() -> ExportLogsServiceRequest {
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

fn otlp_traces(c: &mut Criterion) {
    let request = trace_request();
    let pb = request.encode_to_vec();
    let json = serde_json::to_vec(&request).expect("serializable");
    let prost_path = |bytes: &[u8]| {
        let r = ExportTraceServiceRequest::decode(bytes).expect("valid");
        traces::from_prost(&r).expect("valid")
    };
    assert_eq!(prost_path(&pb).num_rows(), N);
    assert_eq!(
        traces::decode(&pb, PayloadFormat::OtlpProtobuf, Compression::None).unwrap(),
        prost_path(&pb)
    );

    let mut g = c.benchmark_group("otlp_traces_protobuf");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("prost_decode", |b| {
        b.iter(|| ExportTraceServiceRequest::decode(black_box(&pb[..])).unwrap())
    });
    g.bench_function("prost_decode+convert", |b| b.iter(|| prost_path(black_box(&pb))));
    g.bench_function("wit_direct", |b| {
        b.iter(|| traces::decode(black_box(&pb), PayloadFormat::OtlpProtobuf, Compression::None).unwrap())
    });
    g.finish();

    let serde_path = |bytes: &[u8]| {
        let r: ExportTraceServiceRequest = serde_json::from_slice(bytes).expect("valid");
        traces::from_prost(&r).expect("valid")
    };
    assert_eq!(
        traces::decode(&json, PayloadFormat::OtlpJson, Compression::None).unwrap(),
        serde_path(&json)
    );
    let mut g = c.benchmark_group("otlp_traces_json");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("serde_json+convert", |b| b.iter(|| serde_path(black_box(&json))));
    g.bench_function("wit_direct_json", |b| {
        b.iter(|| traces::decode(black_box(&json), PayloadFormat::OtlpJson, Compression::None).unwrap())
    });
    g.finish();
    println!(
        "traces payload: {} bytes protobuf, {} bytes OTLP/JSON, {N} spans",
        pb.len(),
        json.len()
    );
}

fn otlp_logs(c: &mut Criterion) {
    let request = logs_request();
    let pb = request.encode_to_vec();
    let json = serde_json::to_vec(&request).expect("serializable");
    let prost_path = |bytes: &[u8]| {
        let r = ExportLogsServiceRequest::decode(bytes).expect("valid");
        logs::from_prost(&r).expect("valid")
    };
    assert_eq!(prost_path(&pb).num_rows(), N);
    assert_eq!(
        logs::decode(&pb, PayloadFormat::OtlpProtobuf, Compression::None).unwrap(),
        prost_path(&pb)
    );

    let mut g = c.benchmark_group("otlp_logs_protobuf");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("prost_decode", |b| {
        b.iter(|| ExportLogsServiceRequest::decode(black_box(&pb[..])).unwrap())
    });
    g.bench_function("prost_decode+convert", |b| b.iter(|| prost_path(black_box(&pb))));
    g.bench_function("wit_direct", |b| {
        b.iter(|| logs::decode(black_box(&pb), PayloadFormat::OtlpProtobuf, Compression::None).unwrap())
    });
    g.finish();

    let serde_path = |bytes: &[u8]| {
        let r: ExportLogsServiceRequest = serde_json::from_slice(bytes).expect("valid");
        logs::from_prost(&r).expect("valid")
    };
    assert_eq!(
        logs::decode(&json, PayloadFormat::OtlpJson, Compression::None).unwrap(),
        serde_path(&json)
    );
    let mut g = c.benchmark_group("otlp_logs_json");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("serde_json+convert", |b| b.iter(|| serde_path(black_box(&json))));
    g.bench_function("wit_direct_json", |b| {
        b.iter(|| logs::decode(black_box(&json), PayloadFormat::OtlpJson, Compression::None).unwrap())
    });
    g.finish();
    println!(
        "logs payload: {} bytes protobuf, {} bytes OTLP/JSON, {N} records",
        pb.len(),
        json.len()
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = otlp_traces, otlp_logs
}
criterion_main!(benches);
