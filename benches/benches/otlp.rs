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
use prost::Message;
use wit_batch::otlp::{logs, traces};
use wit_batch::{Compression, PayloadFormat};
use wit_benches::telemetry::{N, logs_request, trace_request};

fn otlp_traces(c: &mut Criterion) {
    let request = trace_request(0);
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
