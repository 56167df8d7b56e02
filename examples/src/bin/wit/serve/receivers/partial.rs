//! Partial success: a request whose framing is sound but some of whose records do not
//! convert (an id of the wrong length, an unknown enum value, a string-table reference) is
//! taken without them. The request is parsed record by record with prost (or serde, for
//! OTLP/JSON), each record checked alone by wit-batch's decoder with its resource and scope,
//! and the records that pass are submitted as a new protobuf request; the answer reports the
//! others in `partial_success` (rejected count and the first reason). A request none of
//! whose records is at fault — or all of them — is refused whole, as before.
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
}

/// Splits a request that failed to decode as a whole; `None` when it cannot be taken in
/// part (its framing is broken, no single record is at fault, or every record is).
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
#[derive(Default)]
struct Tally {
    kept: u64,
    rejected: u64,
    first: Option<String>,
}

impl Tally {
    /// Checks one record alone, as the request `probe` (protobuf) holding `rows` rows.
    fn check(&mut self, signal: Signal, probe: &[u8], rows: u64) -> bool {
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
                self.first.get_or_insert_with(|| e.to_string());
                false
            }
        }
    }

    fn finish(self, payload: Vec<u8>, what: &str) -> Option<Split> {
        if self.kept == 0 || self.rejected == 0 {
            return None;
        }
        let first = self.first.unwrap_or_default();
        Some(Split {
            payload: Bytes::from(payload),
            kept: self.kept,
            rejected: self.rejected,
            message: format!(
                "{} of {} {what} rejected; the first: {first}",
                self.rejected,
                self.kept + self.rejected
            ),
        })
    }
}

/// `fn $name(request) -> Option<Split>`: each record checked alone with its resource and
/// scope; the request keeps those that pass.
macro_rules! split_records {
    ($name:ident, $request:ident, $resource:ident . $scopes:ident, $scope:ident . $records:ident,
     $containers:ident, $signal:expr, $what:literal, $rows:expr) => {
        fn $name(mut request: $request) -> Option<Split> {
            let mut tally = Tally::default();
            for resource in &mut request.$containers {
                let resource_shell = resource.clone_empty();
                for scope in &mut resource.$scopes {
                    let scope_shell = scope.clone_empty();
                    for record in std::mem::take(&mut scope.$records) {
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
                        if tally.check($signal, &probe.encode_to_vec(), rows) {
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
    |_: &_| 1
);
split_records!(
    split_logs,
    ExportLogsServiceRequest,
    ResourceLogs.scope_logs,
    ScopeLogs.log_records,
    resource_logs,
    Signal::Logs,
    "log records",
    |_: &_| 1
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
    data_points
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
