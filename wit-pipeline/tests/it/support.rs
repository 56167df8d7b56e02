//! Shared test helpers: OTLP requests with known record ids, the pipeline on SQLite, and the
//! independent Parquet reader (pyarrow).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use wit_batch::{BatcherConfig, Compression, Part, PayloadFormat};
use wit_pipeline::PipelineConfig;
use wit_store::{NodeName, SinkConfig};

/// A fixed base for event times: 2026-01-01T00:00:00Z.
pub(crate) const BASE_NANOS: u64 = 1_767_225_600_000_000_000;

fn service(name: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![KeyValue {
            key: "service.name".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(name.into())),
            }),
            ..Default::default()
        }],
        ..Default::default()
    })
}

/// Spans whose span id is the record id (big-endian), one per id.
pub(crate) fn spans(ids: &[u64]) -> Vec<u8> {
    let spans = ids
        .iter()
        .map(|&id| Span {
            trace_id: [id.to_be_bytes(), id.to_be_bytes()].concat(),
            span_id: id.to_be_bytes().to_vec(),
            name: format!("op-{}", id % 7),
            start_time_unix_nano: BASE_NANOS + id * 1_000,
            end_time_unix_nano: BASE_NANOS + id * 1_000 + 500,
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: service("checkout"),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// Log records whose span id is the record id.
pub(crate) fn logs(ids: &[u64]) -> Vec<u8> {
    let log_records = ids
        .iter()
        .map(|&id| LogRecord {
            time_unix_nano: BASE_NANOS + id * 1_000,
            span_id: id.to_be_bytes().to_vec(),
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(format!("record {id}"))),
            }),
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: service("payments"),
            scope_logs: vec![ScopeLogs {
                log_records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// One gauge with a data point per value.
pub(crate) fn gauge(values: &[u64]) -> Vec<u8> {
    let data_points = values
        .iter()
        .map(|&v| NumberDataPoint {
            time_unix_nano: BASE_NANOS + v,
            value: Some(number_data_point::Value::AsInt(v as i64)),
            ..Default::default()
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: service("inventory"),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "queue.depth".into(),
                    data: Some(metric::Data::Gauge(Gauge { data_points })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

pub(crate) fn proto(payload: Vec<u8>, messages: u32) -> Part {
    Part::new(PayloadFormat::OtlpProtobuf, Compression::None, messages, payload)
}

/// A pipeline configuration for tests: small batches and files, everything quick.
pub(crate) fn config(dir: &Path) -> PipelineConfig {
    node_config(dir, "node-a")
}

/// [`config`] for node `node`.
pub(crate) fn node_config(dir: &Path, node: &str) -> PipelineConfig {
    let node = NodeName::try_new(node).expect("node");
    PipelineConfig::new(dir.join("pipeline"), node.clone())
        .with_batcher(
            BatcherConfig::default()
                .with_max_messages(8)
                .with_max_bytes(32 << 10)
                .with_max_buffered_bytes(1 << 20)
                .with_max_age(Duration::from_millis(5)),
        )
        .with_sink(
            SinkConfig::new(node)
                .with_max_file_age(Duration::from_millis(20))
                .with_row_group_rows(64),
        )
        .with_wal(wit_wal::Config::default().with_segment_size(256 << 10))
        .with_janitor_interval(Duration::from_millis(10))
        .with_retry_backoff(Duration::from_millis(1))
}

pub(crate) fn sqlite(dir: &Path) -> Arc<wit_tracker::SqliteTracker> {
    Arc::new(
        wit_tracker::SqliteTracker::open(&dir.join("tracker.db"), wit_tracker::TrackerConfig::default())
            .expect("tracker"),
    )
}

/// Whether pyarrow is here; without it the independent-reader checks are skipped, unless
/// `WIT_REQUIRE_PYARROW` is set (as `.ci/run` does), which makes its absence a failure.
pub(crate) fn has_pyarrow() -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import pyarrow"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("WIT_REQUIRE_PYARROW").is_none(),
            "pyarrow is required here (pip install pyarrow)"
        );
        eprintln!("pyarrow not installed: the independent-reader checks are skipped");
    }
    ok
}

const READ_IDS: &str = r#"
import sys, os, pyarrow.parquet as pq
root, table = sys.argv[1], sys.argv[2]
for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = [d for d in dirnames if not d.startswith(".")]
    for name in filenames:
        if not name.endswith(".parquet"):
            continue
        path = os.path.join(dirpath, name)
        rel = os.path.relpath(path, root)
        if rel.split(os.sep)[1] != table:
            continue
        t = pq.read_table(path)
        print("FILE", rel.replace(os.sep, "/"), t.num_rows)
        if "span_id" in t.column_names:
            for v in t.column("span_id").to_pylist():
                print("ID", int.from_bytes(v, "big") if v is not None else -1)
"#;

/// What pyarrow finds under a store's root for one table (signal): the files (relative
/// paths, rows) and every record id (span id), staging directories excluded.
pub(crate) struct Found {
    pub(crate) files: Vec<(String, u64)>,
    pub(crate) ids: Vec<i64>,
}

pub(crate) fn pyarrow_read(root: &Path, table: &str) -> Found {
    let out = std::process::Command::new("python3")
        .args(["-c", READ_IDS])
        .arg(root)
        .arg(table)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "pyarrow: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut found = Found {
        files: Vec::new(),
        ids: Vec::new(),
    };
    for line in String::from_utf8(out.stdout).expect("utf-8").lines() {
        let mut words = line.split(' ');
        match words.next() {
            Some("FILE") => {
                let path = words.next().expect("path").to_owned();
                let rows = words.next().expect("rows").parse().expect("rows");
                found.files.push((path, rows));
            }
            Some("ID") => found.ids.push(words.next().expect("id").parse().expect("id")),
            _ => {}
        }
    }
    found.files.sort();
    found
}

/// Runs a future to completion on this thread (the pipeline needs no runtime).
pub(crate) fn block_on<F: std::future::Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

/// The rows of `tenant`'s `signal` in the live files the catalog lists.
pub(crate) fn stored_rows(
    catalog: &dyn wit_store::FileCatalog,
    tenant: &wit_batch::Tenant,
    signal: wit_batch::Signal,
) -> u64 {
    catalog
        .list(tenant, signal, None)
        .expect("list")
        .iter()
        .map(|f| f.rows)
        .sum()
}

/// Opens a pipeline storing to `{dir}/data`.
pub(crate) fn open(
    dir: &Path,
    config: PipelineConfig,
    tracker: Arc<dyn wit_pipeline::TrackerCatalog>,
) -> wit_pipeline::Pipeline {
    let destination = wit_store::Destination::local(&dir.join("data")).expect("dest");
    wit_pipeline::Pipeline::open(config, destination, tracker).expect("open")
}
