//! Test telemetry: varied OTLP spans and logs (several services, severities, kinds, status
//! codes, attributes present and absent, logs that share trace ids with spans) over three
//! hours, so the sink writes several files per table.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

/// 2025-12-01T00:00:00Z.
pub(crate) const T0: u64 = 1_764_547_200_000_000_000;
pub(crate) const HOUR: u64 = 3_600_000_000_000;
pub(crate) const SERVICES: [&str; 3] = ["checkout", "payments", "search"];

/// A small deterministic generator (xorshift), so every run writes the same rows.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

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

fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![
            kv("service.name", s(service)),
            kv("host.name", s(&format!("{service}-1"))),
        ],
        ..Default::default()
    })
}

fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: "wit-query-tests".into(),
        version: "1.0".into(),
        ..Default::default()
    })
}

/// The trace id of trace `t` (16 bytes) and the span id of span `n` (8 bytes).
pub(crate) fn trace_id(t: u64) -> Vec<u8> {
    (u128::from(t + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
        .to_be_bytes()
        .to_vec()
}

fn span_id(n: u64) -> Vec<u8> {
    (n + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes().to_vec()
}

/// One request per (hour, service): `per` spans each, spread over the hour; spans of
/// traces `hour * 1000 + k`.
pub(crate) fn spans(hours: u64, per: u64, seed: u64) -> Vec<ExportTraceServiceRequest> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    let mut n = 0u64;
    for h in 0..hours {
        for service in SERVICES {
            let spans = (0..per)
                .map(|_| {
                    n += 1;
                    let start = T0 + h * HOUR + rng.below(HOUR - 10_000_000_000);
                    let duration = 1_000 + rng.below(2_000_000_000);
                    let mut attributes = vec![kv("http.method", s(["GET", "POST", "PUT"][rng.below(3) as usize]))];
                    if rng.below(4) != 0 {
                        attributes.push(kv("http.status_code", i([200, 404, 500][rng.below(3) as usize])));
                    }
                    if rng.below(3) == 0 {
                        attributes.push(kv("user.id", s(&format!("u-{}", rng.below(20)))));
                    }
                    Span {
                        trace_id: trace_id(h * 1000 + rng.below(per / 2 + 1)),
                        span_id: span_id(n),
                        parent_span_id: if rng.below(3) == 0 { Vec::new() } else { span_id(n + 7) },
                        name: format!(
                            "{} /api/{}",
                            ["GET", "POST"][rng.below(2) as usize],
                            ["cart", "pay", "find"][rng.below(3) as usize]
                        ),
                        kind: rng.below(6) as i32,
                        start_time_unix_nano: start,
                        end_time_unix_nano: start + duration,
                        attributes,
                        status: Some(Status {
                            code: rng.below(3) as i32,
                            message: if rng.below(5) == 0 {
                                "upstream timeout".into()
                            } else {
                                String::new()
                            },
                        }),
                        ..Default::default()
                    }
                })
                .collect();
            out.push(ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: resource(service),
                    scope_spans: vec![ScopeSpans {
                        scope: scope(),
                        spans,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            });
        }
    }
    out
}

/// Log records shaped as [`spans`]' requests: about half carry a trace id of those traces.
pub(crate) fn logs(hours: u64, per: u64, seed: u64) -> Vec<ExportLogsServiceRequest> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    for h in 0..hours {
        for service in SERVICES {
            let records = (0..per)
                .map(|_| {
                    let severity = rng.below(4) as usize;
                    let linked = rng.below(2) == 0;
                    let mut attributes = Vec::new();
                    if rng.below(2) == 0 {
                        attributes.push(kv("user.id", s(&format!("u-{}", rng.below(20)))));
                    }
                    LogRecord {
                        time_unix_nano: T0 + h * HOUR + rng.below(HOUR - 1),
                        severity_number: [5, 9, 13, 17][severity],
                        severity_text: ["DEBUG", "INFO", "WARN", "ERROR"][severity].into(),
                        body: s(&format!(
                            "{} order {} for user u-{}",
                            ["created", "paid", "failed", "timeout"][rng.below(4) as usize],
                            rng.below(1000),
                            rng.below(20)
                        )),
                        attributes,
                        trace_id: if linked {
                            trace_id(h * 1000 + rng.below(per / 2 + 1))
                        } else {
                            Vec::new()
                        },
                        ..Default::default()
                    }
                })
                .collect();
            out.push(ExportLogsServiceRequest {
                resource_logs: vec![ResourceLogs {
                    resource: resource(service),
                    scope_logs: vec![ScopeLogs {
                        scope: scope(),
                        log_records: records,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            });
        }
    }
    out
}
