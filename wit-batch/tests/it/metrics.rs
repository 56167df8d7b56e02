//! Metric data points: direct decoder against the prost oracle, the lossless round trip, bad
//! input, and the OpenTelemetry Python SDK fixtures.

use std::collections::{BTreeMap, BTreeSet};

use arrow::array::{
    Array, BooleanArray, FixedSizeBinaryArray, Float64Array, Int32Array, Int64Array, ListArray, StringArray,
    StructArray, TimestampNanosecondArray, UInt8Array, UInt32Array, UInt64Array,
};
use arrow::record_batch::RecordBatch;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric,
    NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint, exemplar,
    exponential_histogram_data_point::Buckets, metric::Data, number_data_point, summary_data_point::ValueAtQuantile,
};
use proptest::collection::vec;
use proptest::prelude::*;
use prost::Message;
use serde_json::Value as Json;
use wit_batch::otlp::metrics;
use wit_batch::{Compression, Error, PayloadFormat};

use crate::otlp_arb::*;

// --- strategies -------------------------------------------------------------------------------

/// A start time, often 0 (unset, which the table keeps as null).
fn start_time() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), any::<u64>()]
}

fn exemplar() -> impl Strategy<Value = Exemplar> {
    let value = prop_oneof![
        Just(None),
        double().prop_map(|d| Some(exemplar::Value::AsDouble(d))),
        any::<i64>().prop_map(|i| Some(exemplar::Value::AsInt(i))),
    ];
    (attributes(), any::<u64>(), value, id(8), id(16)).prop_map(
        |(filtered_attributes, time_unix_nano, value, span_id, trace_id)| Exemplar {
            filtered_attributes,
            time_unix_nano,
            span_id,
            trace_id,
            value,
        },
    )
}

fn number_point() -> impl Strategy<Value = NumberDataPoint> {
    let value = prop_oneof![
        Just(None),
        double().prop_map(|d| Some(number_data_point::Value::AsDouble(d))),
        any::<i64>().prop_map(|i| Some(number_data_point::Value::AsInt(i))),
    ];
    (
        attributes(),
        start_time(),
        any::<u64>(),
        vec(exemplar(), 0..3),
        any::<u32>(),
        value,
    )
        .prop_map(
            |(attributes, start_time_unix_nano, time_unix_nano, exemplars, flags, value)| NumberDataPoint {
                attributes,
                start_time_unix_nano,
                time_unix_nano,
                exemplars,
                flags,
                value,
            },
        )
}

fn histogram_point() -> impl Strategy<Value = HistogramDataPoint> {
    let opt = || proptest::option::of(double());
    (
        (attributes(), start_time(), any::<u64>(), any::<u64>(), opt()),
        (
            vec(any::<u64>(), 0..5),
            vec(double(), 0..4),
            vec(exemplar(), 0..3),
            any::<u32>(),
            opt(),
            opt(),
        ),
    )
        .prop_map(
            |(
                (attributes, start_time_unix_nano, time_unix_nano, count, sum),
                (bucket_counts, explicit_bounds, exemplars, flags, min, max),
            )| HistogramDataPoint {
                attributes,
                start_time_unix_nano,
                time_unix_nano,
                count,
                sum,
                bucket_counts,
                explicit_bounds,
                exemplars,
                flags,
                min,
                max,
            },
        )
}

fn exponential_point() -> impl Strategy<Value = ExponentialHistogramDataPoint> {
    let opt = || proptest::option::of(double());
    let buckets = || {
        proptest::option::of(
            (any::<i32>(), vec(any::<u64>(), 0..5))
                .prop_map(|(offset, bucket_counts)| Buckets { offset, bucket_counts }),
        )
    };
    (
        (
            attributes(),
            start_time(),
            any::<u64>(),
            any::<u64>(),
            opt(),
            any::<i32>(),
            any::<u64>(),
        ),
        (
            buckets(),
            buckets(),
            any::<u32>(),
            vec(exemplar(), 0..3),
            opt(),
            opt(),
            double(),
        ),
    )
        .prop_map(
            |(
                (attributes, start_time_unix_nano, time_unix_nano, count, sum, scale, zero_count),
                (positive, negative, flags, exemplars, min, max, zero_threshold),
            )| ExponentialHistogramDataPoint {
                attributes,
                start_time_unix_nano,
                time_unix_nano,
                count,
                sum,
                scale,
                zero_count,
                positive,
                negative,
                flags,
                exemplars,
                min,
                max,
                zero_threshold,
            },
        )
}

fn summary_point() -> impl Strategy<Value = SummaryDataPoint> {
    let quantile = (double(), double()).prop_map(|(quantile, value)| ValueAtQuantile { quantile, value });
    (
        attributes(),
        start_time(),
        any::<u64>(),
        any::<u64>(),
        double(),
        vec(quantile, 0..4),
        any::<u32>(),
    )
        .prop_map(
            |(attributes, start_time_unix_nano, time_unix_nano, count, sum, quantile_values, flags)| SummaryDataPoint {
                attributes,
                start_time_unix_nano,
                time_unix_nano,
                count,
                sum,
                quantile_values,
                flags,
            },
        )
}

fn data() -> impl Strategy<Value = Option<Data>> {
    prop_oneof![
        1 => Just(None),
        2 => vec(number_point(), 0..3).prop_map(|data_points| Some(Data::Gauge(Gauge { data_points }))),
        2 => (vec(number_point(), 0..3), 0..3i32, any::<bool>()).prop_map(|(data_points, t, is_monotonic)| {
            Some(Data::Sum(Sum { data_points, aggregation_temporality: t, is_monotonic }))
        }),
        2 => (vec(histogram_point(), 0..3), 0..3i32).prop_map(|(data_points, t)| {
            Some(Data::Histogram(Histogram { data_points, aggregation_temporality: t }))
        }),
        2 => (vec(exponential_point(), 0..3), 0..3i32).prop_map(|(data_points, t)| {
            Some(Data::ExponentialHistogram(ExponentialHistogram { data_points, aggregation_temporality: t }))
        }),
        2 => vec(summary_point(), 0..3).prop_map(|data_points| Some(Data::Summary(Summary { data_points }))),
    ]
}

fn metric() -> impl Strategy<Value = Metric> {
    (text(), text(), text(), attributes(), data()).prop_map(|(name, description, unit, metadata, data)| Metric {
        name,
        description,
        unit,
        metadata,
        data,
    })
}

pub fn request() -> impl Strategy<Value = ExportMetricsServiceRequest> {
    let scope_metrics = (scope(), vec(metric(), 0..4), text()).prop_map(|(scope, metrics, schema_url)| ScopeMetrics {
        scope,
        metrics,
        schema_url,
    });
    let resource_metrics =
        (resource(), vec(scope_metrics, 0..3), text()).prop_map(|(resource, scope_metrics, schema_url)| {
            ResourceMetrics {
                resource,
                scope_metrics,
                schema_url,
            }
        });
    vec(resource_metrics, 0..3).prop_map(|resource_metrics| ExportMetricsServiceRequest { resource_metrics })
}

// --- normalization ----------------------------------------------------------------------------

fn n_points(m: &Metric) -> usize {
    match &m.data {
        None => 0,
        Some(Data::Gauge(g)) => g.data_points.len(),
        Some(Data::Sum(s)) => s.data_points.len(),
        Some(Data::Histogram(h)) => h.data_points.len(),
        Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(Data::Summary(s)) => s.data_points.len(),
    }
}

fn norm_exemplars(exemplars: &mut [Exemplar]) {
    exemplars
        .iter_mut()
        .for_each(|e| norm_attrs(&mut e.filtered_attributes));
}

/// The request as the round-trip rules say it comes back.
pub fn normalize(mut r: ExportMetricsServiceRequest) -> ExportMetricsServiceRequest {
    for rm in &mut r.resource_metrics {
        norm_resource(&mut rm.resource);
        for sm in &mut rm.scope_metrics {
            norm_scope(&mut sm.scope);
            sm.metrics.retain(|m| n_points(m) > 0);
            for m in &mut sm.metrics {
                norm_attrs(&mut m.metadata);
                match m.data.as_mut().expect("has points") {
                    Data::Gauge(Gauge { data_points }) | Data::Sum(Sum { data_points, .. }) => {
                        for p in data_points {
                            norm_attrs(&mut p.attributes);
                            norm_exemplars(&mut p.exemplars);
                        }
                    }
                    Data::Histogram(h) => {
                        for p in &mut h.data_points {
                            norm_attrs(&mut p.attributes);
                            norm_exemplars(&mut p.exemplars);
                        }
                    }
                    Data::ExponentialHistogram(h) => {
                        for p in &mut h.data_points {
                            norm_attrs(&mut p.attributes);
                            norm_exemplars(&mut p.exemplars);
                            p.positive.get_or_insert_with(Buckets::default);
                            p.negative.get_or_insert_with(Buckets::default);
                        }
                    }
                    Data::Summary(s) => s.data_points.iter_mut().for_each(|p| norm_attrs(&mut p.attributes)),
                }
            }
        }
        rm.scope_metrics.retain(|sm| !sm.metrics.is_empty());
    }
    r.resource_metrics.retain(|rm| !rm.scope_metrics.is_empty());
    r
}

// --- OTLP/JSON through opentelemetry-proto's serde --------------------------------------------

fn otlp_json(r: &ExportMetricsServiceRequest) -> Vec<u8> {
    serde_json::to_vec(r).unwrap()
}

/// A finite stand-in for a non-finite double.
fn finite(d: &mut f64) {
    if d.is_nan() {
        *d = 0.5;
    } else if d.is_infinite() {
        *d = d.signum() * f64::MAX;
    }
}

fn finite_attrs(kvs: &mut [KeyValue]) {
    fn value(v: &mut AnyValue) {
        match &mut v.value {
            Some(any_value::Value::DoubleValue(d)) => finite(d),
            Some(any_value::Value::ArrayValue(a)) => a.values.iter_mut().for_each(value),
            Some(any_value::Value::KvlistValue(l)) => finite_attrs(&mut l.values),
            _ => {}
        }
    }
    kvs.iter_mut().filter_map(|kv| kv.value.as_mut()).for_each(value);
}

fn finite_exemplars(exemplars: &mut [Exemplar]) {
    for e in exemplars {
        finite_attrs(&mut e.filtered_attributes);
        if let Some(exemplar::Value::AsDouble(d)) = &mut e.value {
            finite(d);
        }
    }
}

/// opentelemetry-proto's serde writes a non-finite double as `null`, where OTLP/JSON wants
/// "NaN", "Infinity" or "-Infinity", in every double field but the two of `ValueAtQuantile`
/// (which it writes correctly); and `null` reads back as absent. This replaces those doubles
/// with finite ones, so that every generated request can still go through its JSON.
fn serde_safe(mut r: ExportMetricsServiceRequest) -> ExportMetricsServiceRequest {
    for rm in &mut r.resource_metrics {
        if let Some(res) = &mut rm.resource {
            finite_attrs(&mut res.attributes);
        }
        for sm in &mut rm.scope_metrics {
            if let Some(scope) = &mut sm.scope {
                finite_attrs(&mut scope.attributes);
            }
            for m in &mut sm.metrics {
                finite_attrs(&mut m.metadata);
                match &mut m.data {
                    None => {}
                    Some(Data::Gauge(Gauge { data_points }) | Data::Sum(Sum { data_points, .. })) => {
                        for p in data_points {
                            finite_attrs(&mut p.attributes);
                            finite_exemplars(&mut p.exemplars);
                            if let Some(number_data_point::Value::AsDouble(d)) = &mut p.value {
                                finite(d);
                            }
                        }
                    }
                    Some(Data::Histogram(h)) => {
                        for p in &mut h.data_points {
                            finite_attrs(&mut p.attributes);
                            finite_exemplars(&mut p.exemplars);
                            [&mut p.sum, &mut p.min, &mut p.max]
                                .into_iter()
                                .flatten()
                                .for_each(finite);
                            p.explicit_bounds.iter_mut().for_each(finite);
                        }
                    }
                    Some(Data::ExponentialHistogram(h)) => {
                        for p in &mut h.data_points {
                            finite_attrs(&mut p.attributes);
                            finite_exemplars(&mut p.exemplars);
                            [&mut p.sum, &mut p.min, &mut p.max]
                                .into_iter()
                                .flatten()
                                .for_each(finite);
                            finite(&mut p.zero_threshold);
                        }
                    }
                    Some(Data::Summary(s)) => {
                        for p in &mut s.data_points {
                            finite_attrs(&mut p.attributes);
                            finite(&mut p.sum);
                        }
                    }
                }
            }
        }
    }
    r
}

fn decode(bytes: &[u8], format: PayloadFormat) -> RecordBatch {
    metrics::decode(bytes, format, Compression::None).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn direct_decoders_agree_with_the_prost_oracle(request in request()) {
        let oracle = metrics::from_prost(&request).unwrap();
        assert_batches_eq(&decode(&request.encode_to_vec(), PayloadFormat::OtlpProtobuf), &oracle);
        // OTLP/JSON, written by opentelemetry-proto's serde (see `serde_safe`).
        let request = serde_safe(request);
        let oracle = metrics::from_prost(&request).unwrap();
        let json = otlp_json(&request);
        assert_batches_eq(&decode(&json, PayloadFormat::OtlpJson), &oracle);
        // The prost + serde_json path reads the same JSON to the same batch.
        let parsed: ExportMetricsServiceRequest = serde_json::from_slice(&json).unwrap();
        assert_batches_eq(&metrics::from_prost(&parsed).unwrap(), &oracle);
    }

    #[test]
    fn arrow_converts_back_to_the_same_request(request in request()) {
        let batch = decode(&request.encode_to_vec(), PayloadFormat::OtlpProtobuf);
        prop_assert_eq!(batch.num_rows(), request.resource_metrics.iter()
            .flat_map(|rm| &rm.scope_metrics).flat_map(|sm| &sm.metrics).map(n_points).sum::<usize>());
        let back = metrics::to_prost(&batch).unwrap();
        prop_assert_eq!(back.encode_to_vec(), normalize(request).encode_to_vec());
    }
}

// --- hand-built cases -------------------------------------------------------------------------

fn one_metric(metric: Metric) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![metric],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn decode_err(bytes: &[u8], format: PayloadFormat) -> (String, usize, String) {
    match metrics::decode(bytes, format, Compression::None).unwrap_err() {
        Error::Decode {
            field, offset, reason, ..
        } => (field, offset, reason),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn an_empty_request_is_an_empty_batch_of_the_schema() {
    let batch = decode(b"", PayloadFormat::OtlpProtobuf);
    assert_eq!(batch.num_rows(), 0);
    assert_eq!(batch.schema(), metrics::schema());
    assert_eq!(decode(b"{}", PayloadFormat::OtlpJson).num_rows(), 0);
    assert_eq!(
        metrics::to_prost(&batch).unwrap(),
        ExportMetricsServiceRequest::default()
    );
}

/// NaN never equals itself, so non-finite doubles are compared as encoded bytes.
#[test]
fn non_finite_doubles_survive_bit_for_bit() {
    let nan = f64::from_bits(0x7ff8_0000_0000_0001); // a NaN with a payload
    let weird = [f64::NAN, nan, f64::INFINITY, f64::NEG_INFINITY, -0.0];
    let exemplars = vec![Exemplar {
        value: Some(exemplar::Value::AsDouble(f64::NAN)),
        time_unix_nano: 1,
        ..Default::default()
    }];
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    Metric {
                        name: "g".into(),
                        data: Some(Data::Gauge(Gauge {
                            data_points: weird
                                .iter()
                                .map(|d| NumberDataPoint {
                                    value: Some(number_data_point::Value::AsDouble(*d)),
                                    exemplars: exemplars.clone(),
                                    ..Default::default()
                                })
                                .collect(),
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "h".into(),
                        data: Some(Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint {
                                count: 1,
                                sum: Some(f64::NAN),
                                min: Some(f64::NEG_INFINITY),
                                max: Some(f64::INFINITY),
                                bucket_counts: vec![0, 1],
                                explicit_bounds: vec![nan],
                                exemplars: exemplars.clone(),
                                ..Default::default()
                            }],
                            aggregation_temporality: 1,
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "e".into(),
                        data: Some(Data::ExponentialHistogram(ExponentialHistogram {
                            data_points: vec![ExponentialHistogramDataPoint {
                                sum: Some(f64::INFINITY),
                                zero_threshold: f64::NAN,
                                min: Some(-0.0),
                                positive: Some(Buckets {
                                    offset: -3,
                                    bucket_counts: vec![u64::MAX],
                                }),
                                ..Default::default()
                            }],
                            aggregation_temporality: 2,
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "s".into(),
                        data: Some(Data::Summary(Summary {
                            data_points: vec![SummaryDataPoint {
                                sum: f64::NAN,
                                quantile_values: weird
                                    .iter()
                                    .map(|d| ValueAtQuantile {
                                        quantile: *d,
                                        value: -*d,
                                    })
                                    .collect(),
                                ..Default::default()
                            }],
                        })),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let bytes = request.encode_to_vec();
    let direct = metrics::to_prost(&decode(&bytes, PayloadFormat::OtlpProtobuf)).unwrap();
    let oracle = metrics::to_prost(&metrics::from_prost(&request).unwrap()).unwrap();
    assert_eq!(direct.encode_to_vec(), normalize(request).encode_to_vec());
    assert_eq!(oracle.encode_to_vec(), direct.encode_to_vec());

    // OTLP/JSON spells them as strings.
    let json = br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"s","summary":{"dataPoints":[
        {"sum":"NaN","quantileValues":[{"quantile":"Infinity","value":"-Infinity"},{"quantile":-0.0,"value":"NaN"}]}]}}]}]}]}"#;
    let back = metrics::to_prost(&decode(json, PayloadFormat::OtlpJson)).unwrap();
    let Some(Data::Summary(s)) = &back.resource_metrics[0].scope_metrics[0].metrics[0].data else {
        panic!()
    };
    let p = &s.data_points[0];
    assert!(p.sum.is_nan());
    assert_eq!(p.quantile_values[0].quantile, f64::INFINITY);
    assert_eq!(p.quantile_values[0].value, f64::NEG_INFINITY);
    assert!(p.quantile_values[1].quantile.is_sign_negative() && p.quantile_values[1].value.is_nan());
}

#[test]
fn unknown_aggregation_temporality_is_rejected() {
    let request = one_metric(Metric {
        name: "m".into(),
        data: Some(Data::Sum(Sum {
            data_points: vec![NumberDataPoint::default()],
            aggregation_temporality: 3,
            is_monotonic: true,
        })),
        ..Default::default()
    });
    let (field, _, reason) = decode_err(&request.encode_to_vec(), PayloadFormat::OtlpProtobuf);
    assert_eq!(field, "resourceMetrics.scopeMetrics.metrics.sum.aggregationTemporality");
    assert!(reason.contains("unknown enum value 3"), "{reason}");
    assert!(metrics::from_prost(&request).is_err());

    let json = br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"histogram":{"aggregationTemporality":"AGGREGATION_TEMPORALITY_SOMETIMES"}}]}]}]}"#;
    let (field, offset, reason) = decode_err(json, PayloadFormat::OtlpJson);
    assert_eq!(
        field,
        "resourceMetrics.scopeMetrics.metrics.histogram.aggregationTemporality"
    );
    assert_eq!(&json[offset..offset + 2], b"\"A");
    assert!(reason.contains("AGGREGATION_TEMPORALITY_SOMETIMES"), "{reason}");
    // By name and by number, as OTLP/JSON allows.
    for ok in [&br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"sum":{"aggregationTemporality":"AGGREGATION_TEMPORALITY_DELTA","dataPoints":[{}]}}]}]}]}"#[..],
        br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"sum":{"aggregationTemporality":1,"dataPoints":[{}]}}]}]}]}"#]
    {
        let back = metrics::to_prost(&decode(ok, PayloadFormat::OtlpJson)).unwrap();
        let Some(Data::Sum(s)) = &back.resource_metrics[0].scope_metrics[0].metrics[0].data else { panic!() };
        assert_eq!(s.aggregation_temporality, 1);
    }
}

#[test]
fn wrong_exemplar_trace_id_length_names_the_field_path() {
    let request = one_metric(Metric {
        data: Some(Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                exemplars: vec![Exemplar {
                    trace_id: vec![7; 5],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            aggregation_temporality: 0,
        })),
        ..Default::default()
    });
    let bytes = request.encode_to_vec();
    let (field, offset, reason) = decode_err(&bytes, PayloadFormat::OtlpProtobuf);
    assert_eq!(
        field,
        "resourceMetrics.scopeMetrics.metrics.histogram.dataPoints.exemplars.traceId"
    );
    assert!(reason.contains("5 bytes, expected 16"), "{reason}");
    // The offset is the field's key: tag 5, wire type 2, then the length 5.
    assert_eq!(&bytes[offset..offset + 3], &[0x2a, 5, 7]);
    assert!(metrics::from_prost(&request).is_err());

    let json = br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"gauge":{"dataPoints":[{"exemplars":[{"spanId":"0102030405060708","traceId":"abcd"}]}]}}]}]}]}"#;
    let (field, offset, reason) = decode_err(json, PayloadFormat::OtlpJson);
    assert_eq!(
        field,
        "resourceMetrics.scopeMetrics.metrics.gauge.dataPoints.exemplars.traceId"
    );
    assert_eq!(&json[offset..offset + 6], b"\"abcd\"");
    assert!(reason.contains("expected 32"), "{reason}");
}

// --- hand-made protobuf -----------------------------------------------------------------------

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field.
fn len_field(tag: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint(u64::from(tag) << 3 | 2, &mut out);
    varint(body.len() as u64, &mut out);
    out.extend_from_slice(body);
    out
}

/// A request holding one metric whose encoded body is `metric`.
fn request_bytes(metric: &[u8]) -> Vec<u8> {
    len_field(1, &len_field(2, &len_field(2, metric)))
}

#[test]
fn a_packed_field_overrunning_its_message_is_rejected() {
    // Histogram { dataPoints { bucketCounts: packed, claiming 64 bytes but holding 16 } }
    let mut point = vec![6 << 3 | 2, 64];
    point.extend_from_slice(&[1; 16]);
    let metric = len_field(9, &len_field(1, &point));
    let bytes = request_bytes(&metric);
    let (field, offset, reason) = decode_err(&bytes, PayloadFormat::OtlpProtobuf);
    assert_eq!(
        field,
        "resourceMetrics.scopeMetrics.metrics.histogram.dataPoints.bucketCounts"
    );
    assert!(reason.contains("overruns"), "{reason}");
    assert_eq!(bytes[offset], 64, "the offset is the packed length");
    assert!(ExportMetricsServiceRequest::decode(&bytes[..]).is_err());

    // A packed run that ends inside an element.
    let mut point = vec![6 << 3 | 2, 12];
    point.extend_from_slice(&[1; 12]);
    let bytes = request_bytes(&len_field(9, &len_field(1, &point)));
    let (field, _, reason) = decode_err(&bytes, PayloadFormat::OtlpProtobuf);
    assert_eq!(
        field,
        "resourceMetrics.scopeMetrics.metrics.histogram.dataPoints.bucketCounts"
    );
    assert!(reason.contains("8 bytes needed"), "{reason}");
    assert!(ExportMetricsServiceRequest::decode(&bytes[..]).is_err());
}

/// Protobuf allows repeated scalars packed or not, fields in any order, and messages split
/// in pieces that merge; the direct decoder must read all of it as prost does.
#[test]
fn wire_variants_decode_like_prost() {
    let mut point = Vec::new();
    // bucketCounts unpacked (fixed64, wire type 1), one packed run, then unpacked again.
    for c in [3u64, 4] {
        point.push(6 << 3 | 1);
        point.extend_from_slice(&c.to_le_bytes());
    }
    point.extend(len_field(
        6,
        &[5u64, 6].iter().flat_map(|c| c.to_le_bytes()).collect::<Vec<_>>(),
    ));
    point.push(6 << 3 | 1);
    point.extend_from_slice(&7u64.to_le_bytes());
    // explicitBounds unpacked (double).
    point.push(7 << 3 | 1);
    point.extend_from_slice(&2.5f64.to_le_bytes());
    // flags 2^32 + 5: a uint32 keeps the low 32 bits.
    point.push(10 << 3);
    varint((1 << 32) + 5, &mut point);
    let mut exp_point = Vec::new();
    // positive buckets in two pieces: offset, then unpacked and packed counts (uint64 varints).
    exp_point.extend(len_field(8, &[1 << 3, 3]));
    let mut counts = vec![2 << 3, 9];
    counts.extend(len_field(2, &[1, 0x80, 1]));
    exp_point.extend(len_field(8, &counts));

    let mut metric = Vec::new();
    metric.extend(len_field(9, &len_field(1, &point)));
    metric.extend(len_field(9, &[2 << 3, 1])); // a second Histogram piece: temporality delta
    metric.extend(len_field(1, b"late name")); // the name after the data
    let mut bytes = request_bytes(&metric);
    bytes.extend(request_bytes(
        &[&len_field(10, &len_field(1, &exp_point))[..], &len_field(3, b"u")[..]].concat(),
    ));

    let oracle = ExportMetricsServiceRequest::decode(&bytes[..]).unwrap();
    let batch = decode(&bytes, PayloadFormat::OtlpProtobuf);
    assert_batches_eq(&batch, &metrics::from_prost(&oracle).unwrap());
    let back = metrics::to_prost(&batch).unwrap();
    let m = &back.resource_metrics[0].scope_metrics[0].metrics[0];
    assert_eq!(m.name, "late name");
    let Some(Data::Histogram(h)) = &m.data else { panic!() };
    assert_eq!(h.aggregation_temporality, 1);
    assert_eq!(h.data_points[0].bucket_counts, [3, 4, 5, 6, 7]);
    assert_eq!(h.data_points[0].explicit_bounds, [2.5]);
    assert_eq!(h.data_points[0].flags, 5);
    let Some(Data::ExponentialHistogram(e)) = &back.resource_metrics[1].scope_metrics[0].metrics[0].data else {
        panic!()
    };
    assert_eq!(
        e.data_points[0].positive,
        Some(Buckets {
            offset: -2,
            bucket_counts: vec![9, 1, 128]
        })
    );
}

/// `Metric.data` is a oneof: in protobuf a later member replaces an earlier one, and
/// occurrences of the same member merge. OTLP/JSON allows one member only.
#[test]
fn the_last_data_member_wins_in_protobuf() {
    let gauge = |v: i64| {
        let point = NumberDataPoint {
            value: Some(number_data_point::Value::AsInt(v)),
            ..Default::default()
        };
        len_field(
            5,
            &Gauge {
                data_points: vec![point],
            }
            .encode_to_vec(),
        )
    };
    let sum = len_field(
        7,
        &Sum {
            data_points: vec![NumberDataPoint::default()],
            ..Default::default()
        }
        .encode_to_vec(),
    );
    let summary = len_field(
        11,
        &Summary {
            data_points: vec![SummaryDataPoint::default()],
        }
        .encode_to_vec(),
    );
    let cases: [(Vec<u8>, u8, usize); 4] = [
        ([gauge(1), gauge(2)].concat(), 5, 2),
        ([gauge(1), sum.clone()].concat(), 7, 1),
        ([gauge(1), sum.clone(), gauge(2), gauge(3)].concat(), 5, 2),
        ([sum, summary, len_field(1, b"n")].concat(), 11, 1),
    ];
    for (metric, ty, rows) in cases {
        let bytes = request_bytes(&metric);
        let oracle = metrics::from_prost(&ExportMetricsServiceRequest::decode(&bytes[..]).unwrap()).unwrap();
        let batch = decode(&bytes, PayloadFormat::OtlpProtobuf);
        assert_batches_eq(&batch, &oracle);
        assert_eq!(batch.num_rows(), rows);
        assert!(col::<UInt8Array>(&batch, "metric_type").iter().all(|t| t == Some(ty)));
    }
    // In the first and third case the gauge points are 1, 2 and 2, 3.
    let bytes = request_bytes(&[gauge(1), gauge(9), len_field(7, &[]), gauge(2), gauge(3)].concat());
    let values = col::<Int64Array>(&decode(&bytes, PayloadFormat::OtlpProtobuf), "value_int")
        .values()
        .to_vec();
    assert_eq!(values, [2, 3]);

    let json = br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"gauge":{},"sum":{}}]}]}]}"#;
    let (field, _, reason) = decode_err(json, PayloadFormat::OtlpJson);
    assert_eq!(field, "resourceMetrics.scopeMetrics.metrics.sum");
    assert!(reason.contains("`gauge` came first"), "{reason}");
}

// --- the OpenTelemetry Python SDK fixtures ----------------------------------------------------

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn expected(dataset: &str) -> Json {
    let all: Json = serde_json::from_slice(&fixture("expected.json")).unwrap();
    all["datasets"][dataset].clone()
}

fn col<'b, T: 'static>(batch: &'b RecordBatch, name: &str) -> &'b T {
    batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .as_any()
        .downcast_ref::<T>()
        .unwrap_or_else(|| panic!("column {name} has another type"))
}

fn type_number(name: &str) -> u8 {
    match name {
        "gauge" => 5,
        "sum" => 7,
        "histogram" => 9,
        "exponential_histogram" => 10,
        "summary" => 11,
        other => panic!("unknown metric type {other}"),
    }
}

/// A JSON number, or "NaN".
fn number(v: &Json) -> f64 {
    match v {
        Json::String(s) if s == "NaN" => f64::NAN,
        v => v.as_f64().unwrap_or_else(|| panic!("not a number: {v}")),
    }
}

fn same(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

fn u64s(v: &Json) -> Vec<u64> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect()
}

fn list_u64(batch: &RecordBatch, name: &str, row: usize) -> Vec<u64> {
    col::<ListArray>(batch, name)
        .value(row)
        .as_any()
        .downcast_ref::<UInt64Array>()
        .unwrap()
        .values()
        .to_vec()
}

fn list_f64(batch: &RecordBatch, name: &str, row: usize) -> Vec<f64> {
    col::<ListArray>(batch, name)
        .value(row)
        .as_any()
        .downcast_ref::<Float64Array>()
        .unwrap()
        .values()
        .to_vec()
}

/// Decodes `<dataset>.pb` and `<dataset>.json`, checks they are the same batch and that it holds
/// what `expected.json` says, and returns it.
fn check_fixture(dataset: &str) -> RecordBatch {
    let pb = decode(&fixture(&format!("{dataset}.pb")), PayloadFormat::OtlpProtobuf);
    let json = decode(&fixture(&format!("{dataset}.json")), PayloadFormat::OtlpJson);
    assert_batches_eq(&pb, &json);
    let batch = pb;
    let exp = expected(dataset);

    // Counts.
    let n = batch.num_rows();
    assert_eq!(n as u64, exp["data_points"].as_u64().unwrap());
    let resource_index = col::<UInt32Array>(&batch, "resource_index");
    let scope_index = col::<UInt32Array>(&batch, "scope_index");
    let metric_index = col::<UInt32Array>(&batch, "metric_index");
    let ty = col::<UInt8Array>(&batch, "metric_type");
    let key = |row: usize| {
        (
            resource_index.value(row),
            scope_index.value(row),
            metric_index.value(row),
        )
    };
    let resources: BTreeSet<_> = (0..n).map(|r| resource_index.value(r)).collect();
    let scopes: BTreeSet<_> = (0..n)
        .map(|r| (resource_index.value(r), scope_index.value(r)))
        .collect();
    let metric_keys: BTreeSet<_> = (0..n).map(key).collect();
    assert_eq!(resources.len() as u64, exp["resources"].as_u64().unwrap());
    assert_eq!(scopes.len() as u64, exp["scopes"].as_u64().unwrap());
    assert_eq!(metric_keys.len() as u64, exp["metrics"].as_u64().unwrap());
    let mut metrics_by_type = BTreeMap::new();
    let mut points_by_type = BTreeMap::new();
    for row in 0..n {
        *points_by_type.entry(ty.value(row)).or_insert(0u64) += 1;
        if row == 0 || key(row) != key(row - 1) {
            *metrics_by_type.entry(ty.value(row)).or_insert(0u64) += 1;
        }
    }
    let by_type = |v: &Json| -> BTreeMap<u8, u64> {
        v.as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (type_number(k), v.as_u64().unwrap()))
            .collect()
    };
    assert_eq!(metrics_by_type, by_type(&exp["metrics_by_type"]));
    assert_eq!(points_by_type, by_type(&exp["data_points_by_type"]));
    let exemplars = col::<ListArray>(&batch, "exemplars");
    let ex = exemplars.values().as_any().downcast_ref::<StructArray>().unwrap();
    let ex_trace = ex
        .column_by_name("trace_id")
        .unwrap()
        .as_any()
        .downcast_ref::<FixedSizeBinaryArray>()
        .unwrap();
    assert_eq!(ex.len() as u64, exp["exemplars"].as_u64().unwrap());
    assert_eq!(
        (ex.len() - ex_trace.null_count()) as u64,
        exp["exemplars_with_trace_id"].as_u64().unwrap()
    );

    // Resources and scopes.
    let service = col::<StringArray>(&batch, "service_name");
    let scope_name = col::<StringArray>(&batch, "scope_name");
    let scope_version = col::<StringArray>(&batch, "scope_version");
    let resource_url = col::<StringArray>(&batch, "resource_schema_url");
    let scope_url = col::<StringArray>(&batch, "scope_schema_url");
    for row in 0..n {
        let r = &exp["resource_list"][resource_index.value(row) as usize];
        assert_eq!(service.value(row), r["service_name"].as_str().unwrap());
        assert_eq!(resource_url.value(row), r["schema_url"].as_str().unwrap());
        let s = &r["scopes"][scope_index.value(row) as usize];
        assert_eq!(scope_name.value(row), s["name"].as_str().unwrap());
        assert_eq!(scope_version.value(row), s["version"].as_str().unwrap());
        assert_eq!(scope_url.value(row), s["schema_url"].as_str().unwrap());
    }

    // Every metric, in order, with its exact values.
    let name = col::<StringArray>(&batch, "metric_name");
    let unit = col::<StringArray>(&batch, "metric_unit");
    let description = col::<StringArray>(&batch, "metric_description");
    let temporality = col::<Int32Array>(&batch, "aggregation_temporality");
    let monotonic = col::<BooleanArray>(&batch, "is_monotonic");
    let value_int = col::<Int64Array>(&batch, "value_int");
    let value_double = col::<Float64Array>(&batch, "value_double");
    let count = col::<UInt64Array>(&batch, "count");
    let sum = col::<Float64Array>(&batch, "sum");
    let min = col::<Float64Array>(&batch, "min");
    let max = col::<Float64Array>(&batch, "max");
    let scale = col::<Int32Array>(&batch, "scale");
    let zero_count = col::<UInt64Array>(&batch, "zero_count");
    let positive_offset = col::<Int32Array>(&batch, "positive_offset");
    let attributes = col::<arrow::array::MapArray>(&batch, "attributes");
    let quantiles = col::<ListArray>(&batch, "quantile_values");
    let mut row = 0;
    let metric_list = exp["metric_list"].as_array().unwrap();
    for m in metric_list {
        let points = m["data_points"].as_u64().unwrap() as usize;
        let rows = row..row + points;
        let what = m["name"].as_str().unwrap();
        for r in rows.clone() {
            assert_eq!(key(r), key(rows.start), "{what}: rows of a metric are consecutive");
            assert_eq!(
                resource_index.value(r) as u64,
                m["resource_index"].as_u64().unwrap(),
                "{what}"
            );
            assert_eq!(
                scope_index.value(r) as u64,
                m["scope_index"].as_u64().unwrap(),
                "{what}"
            );
            assert_eq!(name.value(r), what);
            assert_eq!(unit.value(r), m["unit"].as_str().unwrap(), "{what}");
            assert_eq!(description.value(r), m["description"].as_str().unwrap(), "{what}");
            assert_eq!(ty.value(r), type_number(m["type"].as_str().unwrap()), "{what}");
            match m.get("aggregation_temporality") {
                Some(t) => assert_eq!(temporality.value(r) as u64, t.as_u64().unwrap(), "{what}"),
                None => assert!(temporality.is_null(r), "{what}"),
            }
            match m.get("is_monotonic") {
                Some(b) => assert!(
                    monotonic.is_valid(r) && monotonic.value(r) == b.as_bool().unwrap(),
                    "{what}"
                ),
                None => assert!(monotonic.is_null(r), "{what}"),
            }
        }
        let n_exemplars: usize = rows.clone().map(|r| exemplars.value_length(r) as usize).sum();
        assert_eq!(n_exemplars as u64, m["exemplars"].as_u64().unwrap(), "{what}");
        let with_trace = rows
            .clone()
            .flat_map(|r| exemplars.value_offsets()[r] as usize..exemplars.value_offsets()[r + 1] as usize)
            .filter(|&i| ex_trace.is_valid(i))
            .count();
        assert_eq!(
            with_trace as u64,
            m["exemplars_with_trace_id"].as_u64().unwrap(),
            "{what}"
        );
        if let Some(values) = m.get("values") {
            for (r, v) in rows.clone().zip(values.as_array().unwrap()) {
                match (v.get("as_int"), v.get("as_double")) {
                    (Some(i), None) => {
                        assert_eq!(value_int.value(r), i.as_i64().unwrap(), "{what}");
                        assert!(value_double.is_null(r) && count.is_null(r) && sum.is_null(r), "{what}");
                    }
                    (None, Some(d)) => {
                        assert_eq!(value_double.value(r), number(d), "{what}");
                        assert!(value_int.is_null(r), "{what}");
                    }
                    other => panic!("{what}: {other:?}"),
                }
            }
        }
        for (r, p) in rows
            .clone()
            .zip(m.get("points").and_then(Json::as_array).into_iter().flatten())
        {
            assert!(value_int.is_null(r) && value_double.is_null(r), "{what}");
            assert_eq!(count.value(r), p["count"].as_u64().unwrap(), "{what}");
            assert!(same(sum.value(r), number(&p["sum"])), "{what}");
            for (field, column) in [("min", min), ("max", max)] {
                match p.get(field) {
                    Some(v) => assert_eq!(column.value(r), number(v), "{what} {field}"),
                    None => assert!(column.is_null(r), "{what} {field}"),
                }
            }
            if let Some(b) = p.get("bucket_counts") {
                assert_eq!(list_u64(&batch, "bucket_counts", r), u64s(b), "{what}");
                let bounds: Vec<f64> = p["explicit_bounds"].as_array().unwrap().iter().map(number).collect();
                assert_eq!(list_f64(&batch, "explicit_bounds", r), bounds, "{what}");
                assert_eq!(
                    attributes.value_length(r) as u64,
                    p["attributes"].as_u64().unwrap(),
                    "{what}"
                );
            } else {
                assert!(col::<ListArray>(&batch, "bucket_counts").is_null(r), "{what}");
            }
            if let Some(s) = p.get("scale") {
                assert_eq!(scale.value(r) as i64, s.as_i64().unwrap(), "{what}");
                assert_eq!(zero_count.value(r), p["zero_count"].as_u64().unwrap(), "{what}");
                assert_eq!(
                    positive_offset.value(r) as i64,
                    p["positive_offset"].as_i64().unwrap(),
                    "{what}"
                );
                assert_eq!(
                    list_u64(&batch, "positive_bucket_counts", r),
                    u64s(&p["positive_bucket_counts"])
                );
                assert_eq!(
                    list_u64(&batch, "negative_bucket_counts", r),
                    u64s(&p["negative_bucket_counts"])
                );
            } else {
                assert!(
                    scale.is_null(r) && col::<ListArray>(&batch, "positive_bucket_counts").is_null(r),
                    "{what}"
                );
            }
            if let Some(q) = p.get("quantile_values") {
                let got = quantiles.value(r);
                let got = got.as_any().downcast_ref::<StructArray>().unwrap();
                let qs = got.column(0).as_any().downcast_ref::<Float64Array>().unwrap();
                let vs = got.column(1).as_any().downcast_ref::<Float64Array>().unwrap();
                let want = q.as_array().unwrap();
                assert_eq!(got.len(), want.len(), "{what}");
                for (i, pair) in want.iter().enumerate() {
                    assert!(
                        same(qs.value(i), number(&pair[0])) && same(vs.value(i), number(&pair[1])),
                        "{what}"
                    );
                }
            } else {
                assert!(quantiles.is_null(r), "{what}");
            }
        }
        row += points;
    }
    assert_eq!(row, n, "every row belongs to a listed metric");
    batch
}

const T0: i64 = 1_704_164_645_000_000_000;
const MS: i64 = 1_000_000;

#[test]
fn the_sdk_metrics_fixture_decodes_to_what_expected_json_says() {
    let batch = check_fixture("metrics");
    // Every point was collected at T0 + 210 ms; series started at T0 + 201..=210 ms, and
    // gauges have no start time.
    let time = col::<TimestampNanosecondArray>(&batch, "timestamp");
    let start = col::<TimestampNanosecondArray>(&batch, "start_timestamp");
    let ty = col::<UInt8Array>(&batch, "metric_type");
    for row in 0..batch.num_rows() {
        assert_eq!(time.value(row), T0 + 210 * MS);
        if ty.value(row) == 5 {
            assert!(start.is_null(row));
        } else {
            assert!((T0 + 201 * MS..=T0 + 210 * MS).contains(&start.value(row)), "row {row}");
        }
    }
    // Exemplars with a trace carry the one trace and span of the fixture.
    let exemplars = col::<ListArray>(&batch, "exemplars")
        .values()
        .as_any()
        .downcast_ref::<StructArray>()
        .unwrap();
    let trace = exemplars
        .column_by_name("trace_id")
        .unwrap()
        .as_any()
        .downcast_ref::<FixedSizeBinaryArray>()
        .unwrap();
    let span = exemplars
        .column_by_name("span_id")
        .unwrap()
        .as_any()
        .downcast_ref::<FixedSizeBinaryArray>()
        .unwrap();
    for i in (0..trace.len()).filter(|&i| trace.is_valid(i)) {
        assert_eq!(trace.value(i), hex("6e0c63257de34c92bf9efcd000000001"));
        assert_eq!(span.value(i), hex("d2b2ad1e6a7b0001"));
    }
    // The SDK's JSON writes integral doubles without a decimal point (`"sum": 6126`).
    let text = String::from_utf8(fixture("metrics.json")).unwrap();
    assert!(
        text.contains("\"sum\": 6126,"),
        "the fixture still exercises integral doubles"
    );

    // Back to OTLP: the SDK's request, as the round-trip rules normalize it.
    let bytes = fixture("metrics.pb");
    let sdk = ExportMetricsServiceRequest::decode(&bytes[..]).unwrap();
    let back = metrics::to_prost(&batch).unwrap();
    assert_eq!(back, normalize(sdk.clone()));
    assert_eq!(back, sdk, "the SDK sends nothing the rules normalize");
}

#[test]
fn the_summary_fixture_decodes_to_what_expected_json_says() {
    let batch = check_fixture("summary");
    let bytes = fixture("summary.pb");
    let sdk = ExportMetricsServiceRequest::decode(&bytes[..]).unwrap();
    // NaN quantiles: compare encodings.
    let back = metrics::to_prost(&batch).unwrap();
    assert_eq!(back.encode_to_vec(), normalize(sdk).encode_to_vec());
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}
