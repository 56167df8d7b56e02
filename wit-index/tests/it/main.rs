//! `wit-index`'s integration tests: real Parquet files written by `wit-store`'s sink, indexed
//! and searched through the public API, read back with the Parquet crate's own reader.

mod bad_input;
mod compaction;
mod crash;
mod differential;
// Shared by path with `wit-store`'s tests; not every helper is used here.
#[allow(dead_code)]
#[path = "../../../wit-store/tests/it/moto.rs"]
mod moto;
mod store;

use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch, StructArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use wit_batch::{BatchId, Compression, PayloadFormat, Signal, Tenant};
use wit_index::{Query, RowSet};
use wit_store::{Destination, FileCatalog, InMemoryFileCatalog, NodeName, ParquetSink, SinkConfig, StoredFile};

pub(crate) fn tenant() -> Tenant {
    Tenant::try_new("acme").expect("tenant")
}

pub(crate) fn sink_config() -> SinkConfig {
    SinkConfig::new(NodeName::try_new("node-a").expect("node"))
}

/// A local destination in a temporary directory with an in-memory catalog.
pub(crate) struct Store {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) destination: Destination,
    pub(crate) catalog: Arc<InMemoryFileCatalog>,
}

impl Store {
    pub(crate) fn new() -> Store {
        let dir = tempfile::tempdir().expect("tempdir");
        let destination = Destination::local(dir.path()).expect("destination");
        Store {
            _dir: dir,
            destination,
            catalog: Arc::new(InMemoryFileCatalog::default()),
        }
    }

    /// Writes `batches` of `signal` (one batch id each) and publishes them as one file.
    pub(crate) fn write(&self, signal: Signal, batches: &[RecordBatch]) -> StoredFile {
        let mut files = write_files(&self.destination, self.catalog.clone(), signal, batches);
        assert_eq!(files.len(), 1, "one partition, one file");
        files.remove(0)
    }

    /// The catalog's current record of `path`.
    pub(crate) fn get(&self, path: &str) -> StoredFile {
        self.catalog.get(path).expect("catalogued")
    }
}

/// Writes `batches` to `destination` through a sink catalogued in `catalog`, returning the
/// published files.
pub(crate) fn write_files(
    destination: &Destination,
    catalog: Arc<dyn FileCatalog>,
    signal: Signal,
    batches: &[RecordBatch],
) -> Vec<StoredFile> {
    let mut sink = ParquetSink::open(destination.clone(), sink_config())
        .expect("sink")
        .with_catalog(catalog);
    for batch in batches {
        sink.write(&tenant(), signal, batch, &[BatchId::new()]).expect("write");
    }
    sink.flush().expect("flush")
}

pub(crate) fn decode(signal: Signal, payload: &[u8], format: PayloadFormat) -> RecordBatch {
    let decoded = match signal {
        Signal::Logs => wit_batch::otlp::logs::decode(payload, format, Compression::None),
        Signal::Traces => wit_batch::otlp::traces::decode(payload, format, Compression::None),
        Signal::Metrics => wit_batch::otlp::metrics::decode(payload, format, Compression::None),
        other => panic!("no OTLP decoder for {other:?}"),
    };
    decoded.expect("decode")
}

/// One log record of [`logs_json`]: service, body, severity text, attributes.
pub(crate) type Rec<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)]);

/// The OTLP/JSON logs request of `records`, each `(service, body, severity, attributes)`,
/// stamped one millisecond apart within one hour.
pub(crate) fn logs_json(records: &[Rec<'_>]) -> String {
    let mut resources = Vec::new();
    for (i, (service, body, severity, attrs)) in records.iter().enumerate() {
        let attrs: Vec<String> = attrs
            .iter()
            .map(|(k, v)| format!(r#"{{"key":{},"value":{{"stringValue":{}}}}}"#, json(k), json(v)))
            .collect();
        resources.push(format!(
            r#"{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":{}}}}}]}},
            "scopeLogs":[{{"scope":{{"name":"test"}},"logRecords":[{{"timeUnixNano":"{}",
            "severityText":{},"body":{{"stringValue":{}}},"attributes":[{}]}}]}}]}}"#,
            json(service),
            1_764_576_000_000_000_000u64 + i as u64 * 1_000_000,
            json(severity),
            json(body),
            attrs.join(",")
        ));
    }
    format!(r#"{{"resourceLogs":[{}]}}"#, resources.join(","))
}

pub(crate) fn json(s: &str) -> String {
    let mut out = String::from('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The log bodies of a stored file in row order, read with the Parquet crate's own reader.
pub(crate) fn bodies(store: &Destination, file: &StoredFile) -> Vec<String> {
    let bytes = store.read(&file.path).expect("read file");
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .expect("parquet")
        .build()
        .expect("reader");
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.expect("batch");
        let body = batch.column_by_name("body").expect("body column");
        let body: &StructArray = body.as_struct();
        let text = body.column_by_name("str").expect("body.str").as_string::<i32>();
        for i in 0..batch.num_rows() {
            out.push(if text.is_valid(i) {
                text.value(i).to_owned()
            } else {
                String::new()
            });
        }
    }
    assert_eq!(out.len() as u64, file.rows);
    out
}

/// The bodies of the rows of `rows`, sorted.
pub(crate) fn matched(bodies: &[String], rows: &RowSet) -> Vec<String> {
    let mut out: Vec<String> = rows.iter().map(|r| bodies[r as usize].clone()).collect();
    out.sort();
    out
}

pub(crate) fn query(text: &str) -> Query {
    Query::parse(text).unwrap_or_else(|e| panic!("`{text}`: {e}"))
}
