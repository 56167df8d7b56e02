//! `wit-index` beside Tantivy's own `IndexWriter` and beside a scan of the Parquet column.
//!
//! Input: the spans and logs of the `otlp` bench shape (`wit_benches::telemetry`), each record
//! given one more attribute, `enduser.id = user-{n % 10000}`, so each value is in 0.01% of the
//! rows.
//!
//! Indexing (groups `index_spans`, `index_logs`; 2 × 50,000 rows, converted to Arrow first):
//! - `tantivy_index_writer`: Tantivy's default `IndexWriter` (on this machine two indexing
//!   threads, 128 MiB) given the same documents with the same schema and analyzer, prebuilt
//!   (cloned per run), then `commit`: 100,000 documents.
//! - `wit_two_files`: `wit_index::build_index` of two files' rows at once on two threads, from
//!   Arrow to packed blob (rows read from Arrow, analyzed, one segment each, packed): the same
//!   100,000 documents.
//!
//! Searching (group `search_1m_spans`): 1,000,000 spans in 10 Parquet files on local disk,
//! each indexed; one `enduser.id` value (100 rows in all):
//! - `index`: `Searcher::search_index` over the 10 files, cache warm.
//! - `parquet_scan`: the same search as a scan of the Parquet `attributes` column of the 10
//!   files (read from the page cache, only that column decoded, entries compared in Arrow).
//!
//! Printed: documents per second of each indexing run (best of the sampled runs is in
//! criterion's output), blob size against the indexed text and against the Parquet file, and
//! the search latencies' p50.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, MapArray, RecordBatch, StringArray, StructArray};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use prost::Message;
use tantivy::{Index, IndexWriter, TantivyDocument};
use wit_batch::otlp::{logs, traces};
use wit_batch::{BatchId, Compression, PayloadFormat, Signal, Tenant};
use wit_benches::telemetry::{N, logs_request, trace_request};
use wit_index::{Indexer, Query, Searcher};
use wit_store::{Destination, FileCatalog, InMemoryFileCatalog, NodeName, ParquetSink, SinkConfig, StoredFile};

fn user(n: usize) -> KeyValue {
    KeyValue {
        key: "enduser.id".into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(format!("user-{}", n % 10_000))),
        }),
        ..Default::default()
    }
}

/// `requests` span requests of `N` spans, as Arrow, each span with an `enduser.id`.
fn spans(requests: usize, first: usize) -> Vec<RecordBatch> {
    (0..requests)
        .map(|r| {
            let mut request = trace_request(((first + r) * N) as u64);
            let mut n = (first + r) * N;
            for rs in &mut request.resource_spans {
                for ss in &mut rs.scope_spans {
                    for span in &mut ss.spans {
                        n += 1;
                        span.attributes.push(user(n));
                    }
                }
            }
            let pb = request.encode_to_vec();
            traces::decode(&pb, PayloadFormat::OtlpProtobuf, Compression::None).expect("decode")
        })
        .collect()
}

fn log_records(requests: usize) -> Vec<RecordBatch> {
    (0..requests)
        .map(|r| {
            let mut request = logs_request();
            let mut n = r * N;
            for rl in &mut request.resource_logs {
                for sl in &mut rl.scope_logs {
                    for record in &mut sl.log_records {
                        n += 1;
                        record.attributes.push(user(n));
                    }
                }
            }
            let pb = request.encode_to_vec();
            logs::decode(&pb, PayloadFormat::OtlpProtobuf, Compression::None).expect("decode")
        })
        .collect()
}

fn tantivy_default(docs: &[TantivyDocument]) -> u64 {
    let index = Index::builder()
        .schema(wit_index::bench::schema())
        .tokenizers(wit_index::bench::tokenizers())
        .create_in_ram()
        .expect("index");
    let mut writer: IndexWriter<TantivyDocument> = index.writer(128 << 20).expect("writer");
    for doc in docs {
        writer.add_document(doc.clone()).expect("add");
    }
    writer.commit().expect("commit");
    index.reader().expect("reader").searcher().num_docs()
}

fn indexing(c: &mut Criterion, name: &str, signal: Signal, batches: &[RecordBatch]) {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let docs: Vec<TantivyDocument> = batches
        .iter()
        .flat_map(|b| wit_index::bench::documents(signal, b))
        .collect();
    let (a, b) = batches.split_at(batches.len() / 2);
    let two_files = || {
        std::thread::scope(|s| {
            let first = s.spawn(|| wit_index::build_index(signal, a).expect("index"));
            let second = wit_index::build_index(signal, b).expect("index");
            let first = first.join().expect("thread");
            (first, second)
        })
    };
    let (x, y) = two_files();
    assert_eq!((x.docs + y.docs) as usize, rows);
    assert_eq!(tantivy_default(&docs) as usize, rows);
    let blob = (x.bytes.len() + y.bytes.len()) as f64;
    let text = (x.text_bytes + y.text_bytes) as f64;

    let mut group = c.benchmark_group(name);
    group.sample_size(10).measurement_time(Duration::from_secs(15));
    group.throughput(Throughput::Elements(rows as u64));
    group.bench_function("tantivy_index_writer", |bench| {
        bench.iter(|| black_box(tantivy_default(&docs)))
    });
    group.bench_function("wit_two_files", |bench| bench.iter(|| black_box(two_files())));
    group.finish();
    println!(
        "{name}: {rows} docs; blobs {:.2} MiB for {:.2} MiB of indexed text = {:.3}x",
        blob / 1_048_576.0,
        text / 1_048_576.0,
        blob / text
    );
}

/// Writes `batches` as one file per batch group through the sink and indexes each.
fn store_files(dir: &std::path::Path, files: usize) -> (Destination, Vec<StoredFile>) {
    let destination = Destination::local(dir).expect("destination");
    let catalog = Arc::new(InMemoryFileCatalog::default());
    let mut sink = ParquetSink::open(
        destination.clone(),
        SinkConfig::new(NodeName::try_new("bench").expect("node")),
    )
    .expect("sink")
    .with_catalog(catalog.clone());
    let tenant = Tenant::try_new("acme").expect("tenant");
    let indexer = Indexer::new(destination.clone());
    let per_file = 1_000_000 / N / files;
    for f in 0..files {
        for batch in spans(per_file, f * per_file) {
            sink.write(&tenant, Signal::Traces, &batch, &[BatchId::new()])
                .expect("write");
        }
        for file in sink.flush().expect("flush") {
            indexer.index_and_record(catalog.as_ref(), &file).expect("index");
        }
    }
    let files = catalog.list(&tenant, Signal::Traces, None).expect("list");
    (destination, files)
}

/// The rows of one file whose `attributes` hold `key = value`, by reading that column alone.
fn parquet_scan(destination: &Destination, file: &StoredFile, key: &str, value: &str) -> u64 {
    let bytes = destination.read(&file.path).expect("read");
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).expect("parquet");
    let column = builder
        .schema()
        .fields()
        .iter()
        .position(|f| f.name() == "attributes")
        .expect("attributes");
    let mask = ProjectionMask::roots(builder.parquet_schema(), [column]);
    let mut hits = 0;
    for batch in builder.with_projection(mask).build().expect("reader") {
        let batch = batch.expect("batch");
        let map = batch.column(0).as_any().downcast_ref::<MapArray>().expect("map");
        let keys = map.keys().as_any().downcast_ref::<StringArray>().expect("keys");
        let values = map.values().as_any().downcast_ref::<StructArray>().expect("values");
        let strs = values
            .column_by_name("str")
            .expect("str")
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("str");
        let offsets = map.value_offsets();
        for row in 0..map.len() {
            let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
            if (start..end).any(|i| keys.value(i) == key && strs.is_valid(i) && strs.value(i) == value) {
                hits += 1;
            }
        }
    }
    hits
}

fn p50(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

fn search(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let (destination, files) = store_files(dir.path(), 10);
    let rows: u64 = files.iter().map(|f| f.rows).sum();
    assert_eq!(rows, 1_000_000);
    let parquet: u64 = files.iter().map(|f| f.bytes).sum();
    let blobs: u64 = files.iter().filter_map(|f| f.index.as_ref()).map(|i| i.bytes).sum();
    let searcher = Searcher::new(destination.clone()).with_cache_bytes(4 << 30);
    let query = Query::parse("enduser.id:user-4242").expect("query");
    let by_index = || -> u64 {
        files
            .iter()
            .map(|f| searcher.search_index(f, &query).expect("search").count())
            .sum()
    };
    let by_scan = || -> u64 {
        files
            .iter()
            .map(|f| parquet_scan(&destination, f, "enduser.id", "user-4242"))
            .sum()
    };
    assert_eq!(by_index(), 100);
    assert_eq!(by_scan(), 100);

    let mut index_times = Vec::new();
    let mut scan_times = Vec::new();
    let mut group = c.benchmark_group("search_1m_spans");
    group.sample_size(20).measurement_time(Duration::from_secs(10));
    group.bench_function("index", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let t = Instant::now();
                black_box(by_index());
                index_times.push(t.elapsed());
            }
            start.elapsed()
        })
    });
    group.bench_function("parquet_scan", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let t = Instant::now();
                black_box(by_scan());
                scan_times.push(t.elapsed());
            }
            start.elapsed()
        })
    });
    group.finish();
    let (i, s) = (p50(index_times), p50(scan_times));
    println!(
        "search_1m_spans: 10 files, {:.1} MiB of Parquet, {:.1} MiB of index blobs ({:.3}x the Parquet); \
         p50 index {:.3} ms, parquet scan {:.1} ms: index {:.0}x faster",
        parquet as f64 / 1_048_576.0,
        blobs as f64 / 1_048_576.0,
        blobs as f64 / parquet as f64,
        i.as_secs_f64() * 1e3,
        s.as_secs_f64() * 1e3,
        s.as_secs_f64() / i.as_secs_f64().max(1e-9)
    );
}

fn index(c: &mut Criterion) {
    indexing(c, "index_spans", Signal::Traces, &spans(10, 0));
    indexing(c, "index_logs", Signal::Logs, &log_records(10));
}

criterion_group!(benches, index, search);
criterion_main!(benches);
