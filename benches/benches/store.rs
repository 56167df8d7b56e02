//! `wit-store`'s Parquet sink beside the parquet crate's own `ArrowWriter`, on the same spans.
//!
//! Input: 10 OTLP trace export requests of 10,000 spans each (`wit_benches::telemetry`),
//! converted to Arrow by `wit-batch` once, before measuring: 100,000 spans.
//!
//! - `arrow_writer` (the reference): `parquet::arrow::ArrowWriter` on one thread, with the same properties
//!   (ZSTD level 3, row groups of 131,072 rows, page statistics and page index, bloom filters
//!   on `trace_id`, `span_id`, `parent_span_id`, `service_name`) writing the 10 batches into a
//!   file, then `sync_all`.
//! - `wit_sink`: `ParquetSink` on a local destination with its defaults: the same batches
//!   (rows checked for time order, sorted when needed), the key-value metadata, `fsync` of the
//!   file and its directories, publication under the final path by hard link; each row
//!   group's columns encoded on two threads. The requests
//!   arrive in time order, as from one exporter, so the sort is skipped.
//! - `wit_sink_out_of_order`: the same, with the 10 batches given newest first (each in order
//!   itself), so the sink must put the row group back in time order before encoding (it
//!   reorders whole batches when that suffices, as here; rows out of order within batches
//!   need a full sort: concatenate, sort, gather).
//!
//! Throughput is in bytes of Arrow input (`RecordBatch::get_array_memory_size`). Printed too:
//! spans per second of each, and the size of the Parquet file beside the OTLP protobuf size
//! of the same spans (the compression ratio). Files go under `$CARGO_TARGET_TMPDIR`.

use std::fs::File;
use std::hint::black_box;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use prost::Message;
use wit_batch::otlp::traces;
use wit_batch::{BatchId, PayloadFormat, Signal, Tenant};
use wit_benches::telemetry::{N, trace_request};
use wit_store::{Destination, NodeName, ParquetSink, SinkConfig};

const REQUESTS: u64 = 10;

fn raw_properties() -> WriterProperties {
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("level")))
        .set_max_row_group_row_count(Some(128 << 10))
        .set_statistics_enabled(EnabledStatistics::Page);
    for column in ["trace_id", "span_id", "parent_span_id", "service_name"] {
        builder = builder.set_column_bloom_filter_enabled(ColumnPath::from(column), true);
    }
    builder.build()
}

fn store(c: &mut Criterion) {
    let mut protobuf_bytes = 0;
    let batches: Vec<RecordBatch> = (0..REQUESTS)
        .map(|r| {
            let pb = trace_request(r * N as u64).encode_to_vec();
            protobuf_bytes += pb.len();
            traces::decode(&pb, PayloadFormat::OtlpProtobuf, wit_batch::Compression::None).expect("decode")
        })
        .collect();
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let arrow_bytes: usize = batches.iter().map(RecordBatch::get_array_memory_size).sum();
    let ids: Vec<BatchId> = batches.iter().map(|_| BatchId::new()).collect();
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let tenant = Tenant::try_new("acme").expect("tenant");

    let raw = |path: &std::path::Path| -> u64 {
        let file = File::create(path).expect("create");
        let mut writer = ArrowWriter::try_new(
            file.try_clone().expect("clone"),
            batches[0].schema(),
            Some(raw_properties()),
        )
        .expect("writer");
        for batch in &batches {
            writer.write(batch).expect("write");
        }
        writer.close().expect("close");
        file.sync_all().expect("sync");
        file.metadata().expect("meta").len()
    };
    let mut sink = ParquetSink::open(
        Destination::local(&base.path().join("store")).expect("destination"),
        SinkConfig::new(NodeName::try_new("bench").expect("node")),
    )
    .expect("sink");
    let mut wit = |newest_first: bool| -> u64 {
        let order: Vec<usize> = if newest_first {
            (0..batches.len()).rev().collect()
        } else {
            (0..batches.len()).collect()
        };
        for i in order {
            sink.write(&tenant, Signal::Traces, &batches[i], std::slice::from_ref(&ids[i]))
                .expect("write");
        }
        let files = sink.flush().expect("flush");
        assert_eq!(files.len(), 1);
        files[0].bytes
    };

    // Sizes, outside the timings.
    let raw_size = raw(&base.path().join("raw.parquet"));
    let wit_size = wit(false);
    let sorted_size = wit(true);
    let mut group = c.benchmark_group("store_spans_zstd3");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Bytes(arrow_bytes as u64));
    let mut times = Vec::new();
    group.bench_function("arrow_writer", |b| {
        let path = base.path().join("raw.parquet");
        b.iter(|| black_box(raw(&path)))
    });
    group.bench_function("wit_sink", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(wit(false));
            }
            let took = start.elapsed();
            times.push(took / iters as u32);
            took
        })
    });
    group.bench_function("wit_sink_out_of_order", |b| b.iter(|| black_box(wit(true))));
    group.finish();
    let per_run = times.iter().copied().min().unwrap_or_default();
    println!(
        "store: {rows} spans, {:.1} MiB of Arrow, {:.1} MiB of OTLP protobuf -> wit_sink file {:.2} MiB \
         (ratio {:.1}:1 against protobuf, {:.1}:1 against Arrow), arrow_writer file {:.2} MiB, out-of-order file {:.2} MiB; \
         wit_sink best run {:.1} ms = {:.0} spans/s",
        arrow_bytes as f64 / 1_048_576.0,
        protobuf_bytes as f64 / 1_048_576.0,
        wit_size as f64 / 1_048_576.0,
        protobuf_bytes as f64 / wit_size as f64,
        arrow_bytes as f64 / wit_size as f64,
        raw_size as f64 / 1_048_576.0,
        sorted_size as f64 / 1_048_576.0,
        per_run.as_secs_f64() * 1e3,
        rows as f64 / per_run.as_secs_f64(),
    );
}

criterion_group!(benches, store);
criterion_main!(benches);
