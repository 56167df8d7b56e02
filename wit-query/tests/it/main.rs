//! `wit-query`'s integration tests: real Parquet files written by `wit-store`'s sink from
//! OTLP requests (synthetic and a real SDK's), queried through the public API and checked
//! against DuckDB reading the same files.

mod compaction;
mod data;
mod dead_letters;
mod duckdb;
mod events;
mod full_text;
mod functions;
mod isolation;
mod lookup;
mod pruning;

use std::sync::Arc;

use prost::Message;
use wit_batch::{BatchId, Compression, PayloadFormat, Signal, Tenant};
use wit_query::{QueryEngine, QueryResult, Session};
use wit_store::{Destination, FileCatalog, InMemoryFileCatalog, NodeName, ParquetSink, SinkConfig, StoredFile};

pub(crate) fn acme() -> Tenant {
    Tenant::try_new("acme").expect("tenant")
}

/// A local store with a catalog, filled through the sink.
pub(crate) struct Store {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) destination: Destination,
    pub(crate) catalog: Arc<dyn FileCatalog>,
}

impl Store {
    pub(crate) fn new() -> Store {
        Store::with_catalog(Arc::new(InMemoryFileCatalog::default()))
    }

    pub(crate) fn with_catalog(catalog: Arc<dyn FileCatalog>) -> Store {
        let dir = tempfile::tempdir().expect("tempdir");
        let destination = Destination::local(dir.path()).expect("destination");
        Store {
            dir,
            destination,
            catalog,
        }
    }

    /// Writes each batch (one batch id each) for `tenant` and publishes them as one file
    /// (row groups of at most 500 rows).
    pub(crate) fn write(
        &self,
        tenant: &Tenant,
        signal: Signal,
        batches: &[arrow::array::RecordBatch],
    ) -> Vec<StoredFile> {
        let config = SinkConfig::new(NodeName::try_new("node-a").expect("node")).with_row_group_rows(500);
        let mut sink = ParquetSink::open(self.destination.clone(), config)
            .expect("sink")
            .with_catalog(self.catalog.clone());
        for batch in batches {
            sink.write(tenant, signal, batch, &[BatchId::new()]).expect("write");
        }
        sink.flush().expect("flush")
    }

    pub(crate) fn engine(&self) -> QueryEngine {
        QueryEngine::new(self.catalog.clone(), &self.destination).expect("engine")
    }
}

pub(crate) fn decode(signal: Signal, payload: &[u8]) -> arrow::array::RecordBatch {
    let f = PayloadFormat::OtlpProtobuf;
    match signal {
        Signal::Traces => wit_batch::otlp::traces::decode(payload, f, Compression::None),
        Signal::Logs => wit_batch::otlp::logs::decode(payload, f, Compression::None),
        Signal::Metrics => wit_batch::otlp::metrics::decode(payload, f, Compression::None),
        other => panic!("no OTLP decoder for {other:?}"),
    }
    .expect("decode")
}

/// The shared data set: synthetic spans and logs over three hours plus the fixture payloads
/// a real OpenTelemetry SDK produced (spans, logs, metrics).
pub(crate) fn standard_store() -> Store {
    let store = Store::new();
    let tenant = acme();
    // One file per hour and signal: the requests come per (hour, service).
    let spans: Vec<_> = data::spans(3, 400, 1)
        .iter()
        .map(|r| decode(Signal::Traces, &r.encode_to_vec()))
        .collect();
    let logs: Vec<_> = data::logs(3, 300, 2)
        .iter()
        .map(|r| decode(Signal::Logs, &r.encode_to_vec()))
        .collect();
    for hour in spans.chunks(data::SERVICES.len()) {
        store.write(&tenant, Signal::Traces, hour);
    }
    for hour in logs.chunks(data::SERVICES.len()) {
        store.write(&tenant, Signal::Logs, hour);
    }
    for (signal, name) in [
        (Signal::Traces, "traces"),
        (Signal::Logs, "logs"),
        (Signal::Metrics, "metrics"),
    ] {
        let path = format!("{}/../wit-batch/tests/fixtures/{name}.pb", env!("CARGO_MANIFEST_DIR"));
        let payload = std::fs::read(&path).expect("fixture");
        store.write(&tenant, signal, &[decode(signal, &payload)]);
    }
    store
}

pub(crate) fn sql(session: &Session, sql: &str) -> QueryResult {
    session.blocking_sql(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The single value of a one-row, one-column result, as JSON.
pub(crate) fn scalar(session: &Session, query: &str) -> serde_json::Value {
    let rows = sql(session, query).to_json_rows().expect("json");
    assert_eq!(rows.len(), 1, "{query}: {rows:?}");
    rows[0].values().next().cloned().unwrap_or(serde_json::Value::Null)
}
