//! Partial success: a request whose framing is sound but some of whose records do not
//! convert (an id of the wrong length, an unknown enum value, a string-table reference) is
//! taken without them. The request is parsed record by record with prost (or serde, for
//! OTLP/JSON), each record checked alone by wit-batch's decoder with its resource and scope,
//! and the records that pass are submitted as a new protobuf request; the others go to the
//! tenant's `dead_letters` table (as OTLP/JSON with their resource and scope, with where they
//! were in the request and why), and the answer reports them in `partial_success` (rejected
//! count and the first reason). When every record is at fault, they are dead letters too and
//! the request is refused (400). A request none of whose records is at fault (its fault is
//! elsewhere: its framing) is refused whole, nothing kept.
//!
//! This runs only when the whole request failed to decode, so the path taken by valid data
//! costs nothing.

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{ResourceMetrics, ScopeMetrics};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use prost::Message;
use wit_batch::dead_letters::DeadLetter;
use wit_batch::{Compression, PayloadFormat, Signal};

/// The records of a request that convert, re-encoded as protobuf, and what was left out.
#[derive(Debug)]
pub(crate) struct Split {
    /// An `Export*ServiceRequest` of the records that convert.
    pub(crate) payload: Bytes,
    /// Records kept (spans, log records, data points).
    pub(crate) kept: u64,
    /// Records left out.
    pub(crate) rejected: u64,
    /// Why, for the first record left out (and how many others).
    pub(crate) message: String,
    /// The records left out, for the dead-letter table.
    pub(crate) letters: Vec<DeadLetter>,
}

/// Splits a request that failed to decode as a whole; `None` when it cannot be taken in
/// part (its framing is broken, or no single record is at fault).
pub(crate) fn split(signal: Signal, format: PayloadFormat, payload: &[u8]) -> Option<Split> {
    match signal {
        Signal::Traces => split_traces(parse::<ExportTraceServiceRequest>(format, payload)?),
        Signal::Logs => split_logs(parse::<ExportLogsServiceRequest>(format, payload)?),
        Signal::Metrics => split_metrics(parse::<ExportMetricsServiceRequest>(format, payload)?),
        _ => None,
    }
}

fn parse<R: Message + Default + serde::de::DeserializeOwned>(format: PayloadFormat, payload: &[u8]) -> Option<R> {
    match format {
        PayloadFormat::OtlpProtobuf => R::decode(payload).ok(),
        PayloadFormat::OtlpJson => serde_json::from_slice(payload).ok(),
        _ => None,
    }
}

/// What the checks found so far.
struct Tally {
    kept: u64,
    rejected: u64,
    first: Option<String>,
    letters: Vec<DeadLetter>,
    now: std::time::SystemTime,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            kept: 0,
            rejected: 0,
            first: None,
            letters: Vec::new(),
            now: std::time::SystemTime::now(),
        }
    }
}

impl Tally {
    /// Checks one record alone, as the request `probe` (protobuf) holding `rows` rows; a
    /// record at fault is a dead letter of `json` (the probe as OTLP/JSON), at `path`.
    fn check(
        &mut self,
        signal: Signal,
        probe: &[u8],
        rows: u64,
        path: impl FnOnce() -> String,
        json: impl FnOnce() -> String,
    ) -> bool {
        let decoded = match signal {
            Signal::Traces => wit_batch::otlp::traces::decode(probe, PayloadFormat::OtlpProtobuf, Compression::None),
            Signal::Logs => wit_batch::otlp::logs::decode(probe, PayloadFormat::OtlpProtobuf, Compression::None),
            _ => wit_batch::otlp::metrics::decode(probe, PayloadFormat::OtlpProtobuf, Compression::None),
        };
        match decoded {
            Ok(_) => {
                self.kept += rows;
                true
            }
            Err(e) => {
                self.rejected += rows;
                let path = path();
                let reason = format!("{path}: {e}");
                self.first.get_or_insert_with(|| reason.clone());
                self.letters
                    .push(DeadLetter::new(self.now, signal, reason, json()).with_path(path));
                false
            }
        }
    }

    fn finish(self, payload: Vec<u8>, what: &str) -> Option<Split> {
        if self.rejected == 0 {
            return None;
        }
        let first = self.first.unwrap_or_default();
        Some(Split {
            payload: Bytes::from(payload),
            kept: self.kept,
            rejected: self.rejected,
            message: format!(
                "{} of {} {what} rejected (kept in the dead_letters table); the first: {first}",
                self.rejected,
                self.kept + self.rejected
            ),
            letters: self.letters,
        })
    }
}

/// `fn $name(request) -> Option<Split>`: each record checked alone with its resource and
/// scope; the request keeps those that pass.
macro_rules! split_records {
    ($name:ident, $request:ident, $resource:ident . $scopes:ident, $scope:ident . $records:ident,
     $containers:ident, $signal:expr, $what:literal, $rows:expr, $path:literal) => {
        fn $name(mut request: $request) -> Option<Split> {
            let mut tally = Tally::default();
            for (i, resource) in request.$containers.iter_mut().enumerate() {
                let resource_shell = resource.clone_empty();
                for (j, scope) in resource.$scopes.iter_mut().enumerate() {
                    let scope_shell = scope.clone_empty();
                    for (k, record) in std::mem::take(&mut scope.$records).into_iter().enumerate() {
                        let rows = $rows(&record);
                        let mut probe = $request {
                            $containers: vec![$resource {
                                $scopes: vec![$scope {
                                    $records: vec![record],
                                    ..scope_shell.clone()
                                }],
                                ..resource_shell.clone()
                            }],
                        };
                        let path = || format!($path, i, j, k);
                        let json = || serde_json::to_string(&probe).unwrap_or_default();
                        if tally.check($signal, &probe.encode_to_vec(), rows, path, json) {
                            let record = probe
                                .$containers
                                .swap_remove(0)
                                .$scopes
                                .swap_remove(0)
                                .$records
                                .swap_remove(0);
                            scope.$records.push(record);
                        }
                    }
                }
            }
            tally.finish(request.encode_to_vec(), $what)
        }
    };
}

split_records!(
    split_traces,
    ExportTraceServiceRequest,
    ResourceSpans.scope_spans,
    ScopeSpans.spans,
    resource_spans,
    Signal::Traces,
    "spans",
    |_: &_| 1,
    "resourceSpans[{}].scopeSpans[{}].spans[{}]"
);
split_records!(
    split_logs,
    ExportLogsServiceRequest,
    ResourceLogs.scope_logs,
    ScopeLogs.log_records,
    resource_logs,
    Signal::Logs,
    "log records",
    |_: &_| 1,
    "resourceLogs[{}].scopeLogs[{}].logRecords[{}]"
);
// Metrics are checked a metric at a time with its data points: the points share the
// metric's name, type and temporality, so a fault of one is mostly a fault of the metric.
split_records!(
    split_metrics,
    ExportMetricsServiceRequest,
    ResourceMetrics.scope_metrics,
    ScopeMetrics.metrics,
    resource_metrics,
    Signal::Metrics,
    "data points",
    data_points,
    "resourceMetrics[{}].scopeMetrics[{}].metrics[{}]"
);

/// The data points of a metric (the rows it becomes).
fn data_points(metric: &opentelemetry_proto::tonic::metrics::v1::Metric) -> u64 {
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    (match &metric.data {
        Some(Data::Gauge(g)) => g.data_points.len(),
        Some(Data::Sum(s)) => s.data_points.len(),
        Some(Data::Histogram(h)) => h.data_points.len(),
        Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }) as u64
}

/// A container's own fields, without its children: what each one-record probe repeats.
trait CloneEmpty {
    fn clone_empty(&self) -> Self;
}

macro_rules! clone_empty {
    ($($ty:ty { $own:ident, $children:ident }),* $(,)?) => {$(
        impl CloneEmpty for $ty {
            fn clone_empty(&self) -> Self {
                Self {
                    $own: self.$own.clone(),
                    $children: Vec::new(),
                    schema_url: self.schema_url.clone(),
                }
            }
        }
    )*};
}

clone_empty!(
    ResourceSpans { resource, scope_spans },
    ScopeSpans { scope, spans },
    ResourceLogs { resource, scope_logs },
    ScopeLogs { scope, log_records },
    ResourceMetrics {
        resource,
        scope_metrics
    },
    ScopeMetrics { scope, metrics },
);
