//! Log records: direct decoder against the prost oracle, the lossless round trip, bad input,
//! and the fixtures made by the OpenTelemetry Python SDK.

use std::collections::{BTreeMap, BTreeSet};

use arrow::array::{
    Array, FixedSizeBinaryArray, Int32Array, MapArray, StringArray, StructArray, TimestampNanosecondArray, UInt8Array,
    UInt32Array,
};
use arrow::record_batch::RecordBatch;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use proptest::collection::vec;
use proptest::prelude::*;
use prost::Message;
use serde_json::{Value as Json, json};
use wit_batch::otlp::logs;
use wit_batch::{Compression, Error, PayloadFormat};

use crate::otlp_arb::*;

/// A time that is often unset (0), as OTLP allows for both log record times.
fn time() -> impl Strategy<Value = u64> {
    prop_oneof![1 => Just(0u64), 3 => any::<u64>()]
}

/// No body, or any value (including an `AnyValue` with nothing set).
fn body() -> impl Strategy<Value = Option<AnyValue>> {
    prop_oneof![1 => Just(None), 3 => any_value().prop_map(Some)]
}

fn log_record() -> impl Strategy<Value = LogRecord> {
    (
        (time(), time(), 0..25i32, text(), body()),
        (attributes(), any::<u32>(), any::<u32>(), id(16), id(8), text()),
    )
        .prop_map(
            |((time_unix_nano, observed_time_unix_nano, severity_number, severity_text, body), rest)| {
                let (attributes, dropped_attributes_count, flags, trace_id, span_id, event_name) = rest;
                LogRecord {
                    time_unix_nano,
                    observed_time_unix_nano,
                    severity_number,
                    severity_text,
                    body,
                    attributes,
                    dropped_attributes_count,
                    flags,
                    trace_id,
                    span_id,
                    event_name,
                }
            },
        )
}

pub fn request() -> impl Strategy<Value = ExportLogsServiceRequest> {
    let scope_logs =
        (scope(), vec(log_record(), 0..4), text()).prop_map(|(scope, log_records, schema_url)| ScopeLogs {
            scope,
            log_records,
            schema_url,
        });
    let resource_logs =
        (resource(), vec(scope_logs, 0..3), text()).prop_map(|(resource, scope_logs, schema_url)| ResourceLogs {
            resource,
            scope_logs,
            schema_url,
        });
    vec(resource_logs, 0..3).prop_map(|resource_logs| ExportLogsServiceRequest { resource_logs })
}

/// The request as the round-trip rules say it comes back.
pub fn normalize(mut r: ExportLogsServiceRequest) -> ExportLogsServiceRequest {
    for rl in &mut r.resource_logs {
        rl.scope_logs.retain(|sl| !sl.log_records.is_empty());
        norm_resource(&mut rl.resource);
        for sl in &mut rl.scope_logs {
            norm_scope(&mut sl.scope);
            for l in &mut sl.log_records {
                norm_attrs(&mut l.attributes);
                // A body keeps its presence; only nested absent values come back empty.
                if let Some(body) = &mut l.body {
                    norm_value(body);
                }
            }
        }
    }
    r.resource_logs.retain(|rl| !rl.scope_logs.is_empty());
    r
}

fn otlp_json(r: &ExportLogsServiceRequest) -> Vec<u8> {
    serde_json::to_vec(r).unwrap()
}

fn decode_pb(bytes: &[u8]) -> wit_batch::Result<RecordBatch> {
    logs::decode(bytes, PayloadFormat::OtlpProtobuf, Compression::None)
}

fn decode_json(bytes: &[u8]) -> wit_batch::Result<RecordBatch> {
    logs::decode(bytes, PayloadFormat::OtlpJson, Compression::None)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn direct_decoders_agree_with_the_prost_oracle(request in request()) {
        let oracle = logs::from_prost(&request).unwrap();
        assert_eq!(oracle.schema(), logs::schema());
        let from_proto = decode_pb(&request.encode_to_vec()).unwrap();
        assert_batches_eq(&from_proto, &oracle);
        let json = otlp_json(&request);
        // opentelemetry-proto's serde writes a non-finite double as `null`, not as OTLP/JSON's
        // "Infinity"/"NaN" strings, so such requests cannot be compared through it.
        prop_assume!(!String::from_utf8_lossy(&json).contains("Value\":null"));
        let from_json = decode_json(&json).unwrap();
        assert_batches_eq(&from_json, &oracle);
        // The prost + serde_json path reads the same JSON to the same batch.
        let parsed: ExportLogsServiceRequest = serde_json::from_slice(&json).unwrap();
        assert_batches_eq(&logs::from_prost(&parsed).unwrap(), &oracle);
    }

    #[test]
    fn arrow_converts_back_to_the_same_request(request in request()) {
        let batch = decode_pb(&request.encode_to_vec()).unwrap();
        let back = logs::to_prost(&batch).unwrap();
        prop_assert_eq!(back.encode_to_vec(), normalize(request).encode_to_vec());
    }
}

fn one_record(record: LogRecord) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![record],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn column<'b, T: 'static>(batch: &'b RecordBatch, name: &str) -> &'b T {
    batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column `{name}`"))
        .as_any()
        .downcast_ref::<T>()
        .unwrap()
}

#[test]
fn timestamp_is_the_event_time_and_falls_back_to_the_observed_time() {
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![
                    LogRecord {
                        time_unix_nano: 10,
                        observed_time_unix_nano: 20,
                        ..Default::default()
                    },
                    LogRecord {
                        time_unix_nano: 0,
                        observed_time_unix_nano: 20,
                        ..Default::default()
                    },
                    LogRecord {
                        time_unix_nano: 10,
                        observed_time_unix_nano: 0,
                        ..Default::default()
                    },
                    LogRecord::default(),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let batch = decode_pb(&request.encode_to_vec()).unwrap();
    let ts: &TimestampNanosecondArray = column(&batch, "timestamp");
    assert_eq!(ts.values().to_vec(), vec![10, 20, 10, 0]);
    assert_eq!(ts.null_count(), 0);
    let time: &TimestampNanosecondArray = column(&batch, "time");
    assert_eq!(time.iter().collect::<Vec<_>>(), vec![Some(10), None, Some(10), None]);
    let observed: &TimestampNanosecondArray = column(&batch, "observed_time");
    assert_eq!(
        observed.iter().collect::<Vec<_>>(),
        vec![Some(20), Some(20), None, None]
    );
    // No body is a null struct.
    let body: &StructArray = column(&batch, "body");
    assert_eq!(body.null_count(), 4);
    assert_eq!(logs::to_prost(&batch).unwrap(), normalize(request));
}

#[test]
fn body_presence_round_trips() {
    for body in [
        None,
        Some(AnyValue { value: None }),
        Some(AnyValue {
            value: Some(any_value::Value::IntValue(7)),
        }),
    ] {
        let request = one_record(LogRecord {
            body: body.clone(),
            ..Default::default()
        });
        for batch in [
            decode_pb(&request.encode_to_vec()).unwrap(),
            decode_json(&otlp_json(&request)).unwrap(),
        ] {
            let back = logs::to_prost(&batch).unwrap();
            assert_eq!(back.resource_logs[0].scope_logs[0].log_records[0].body, body);
        }
    }
}

#[test]
fn severity_numbers_are_read_by_number_or_name() {
    let json = br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[
        {"severityNumber":"SEVERITY_NUMBER_WARN2"},{"severityNumber":17},{"severityNumber":"24"},{}
    ]}]}]}"#;
    let batch = decode_json(json).unwrap();
    let severity: &Int32Array = column(&batch, "severity_number");
    assert_eq!(severity.values().to_vec(), vec![14, 17, 24, 0]);
}

fn expect_decode_error(err: Error, want_field: &str, want_reason: &str) -> usize {
    match err {
        Error::Decode {
            field, offset, reason, ..
        } => {
            assert_eq!(field, want_field);
            assert!(reason.contains(want_reason), "{reason}");
            offset
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn wrong_span_id_length_names_the_field_and_offset() {
    let request = one_record(LogRecord {
        span_id: vec![1; 5],
        ..Default::default()
    });
    let err = decode_pb(&request.encode_to_vec()).unwrap_err();
    // 0a (resource_logs) len, 12 (scope_logs) len, 12 (log_records) len, then the span id's key.
    let offset = expect_decode_error(err, "resourceLogs.scopeLogs.logRecords.spanId", "5 bytes, expected 8");
    assert_eq!(offset, 6);

    let json = br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"spanId":"0102030405"}]}]}]}"#;
    let err = decode_json(json).unwrap_err();
    let offset = expect_decode_error(err, "resourceLogs.scopeLogs.logRecords.spanId", "expected 16 (8 bytes)");
    assert_eq!(&json[offset..offset + 3], b"\"01");

    assert!(matches!(logs::from_prost(&request), Err(Error::Decode { .. })));
}

#[test]
fn unknown_severity_number_is_rejected() {
    let request = one_record(LogRecord {
        severity_number: 42,
        ..Default::default()
    });
    let err = decode_pb(&request.encode_to_vec()).unwrap_err();
    expect_decode_error(
        err,
        "resourceLogs.scopeLogs.logRecords.severityNumber",
        "unknown enum value 42",
    );

    for json in [
        &br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"severityNumber":42}]}]}]}"#[..],
        br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"severityNumber":"SEVERITY_NUMBER_LOUD"}]}]}]}"#,
    ] {
        let err = decode_json(json).unwrap_err();
        expect_decode_error(
            err,
            "resourceLogs.scopeLogs.logRecords.severityNumber",
            "unknown enum value",
        );
    }

    assert!(matches!(logs::from_prost(&request), Err(Error::Decode { .. })));
}

#[test]
fn truncated_message_is_rejected() {
    let request = one_record(LogRecord {
        severity_text: "INFO".into(),
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue("hello".into())),
        }),
        ..Default::default()
    });
    let bytes = request.encode_to_vec();
    for cut in 1..bytes.len() {
        let err = decode_pb(&bytes[..cut]).unwrap_err();
        match err {
            Error::Decode {
                format, field, offset, ..
            } => {
                assert_eq!(format, PayloadFormat::OtlpProtobuf);
                assert!(field.starts_with("resourceLogs"), "cut at {cut}: field `{field}`");
                assert!(offset <= cut, "cut at {cut}: offset {offset}");
            }
            other => panic!("cut at {cut}: unexpected {other:?}"),
        }
    }
    let json = otlp_json(&request);
    assert!(matches!(
        decode_json(&json[..json.len() - 3]),
        Err(Error::Decode { .. })
    ));
}

#[test]
fn a_partly_bad_request_is_rejected_whole() {
    let good = LogRecord {
        severity_text: "fine".into(),
        ..Default::default()
    };
    let bad = LogRecord {
        trace_id: vec![9; 3],
        ..Default::default()
    };
    let request = ExportLogsServiceRequest {
        resource_logs: vec![
            ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![good.clone(), good],
                    ..Default::default()
                }],
                ..Default::default()
            },
            ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![bad],
                    ..Default::default()
                }],
                ..Default::default()
            },
        ],
    };
    let err = decode_pb(&request.encode_to_vec()).unwrap_err();
    expect_decode_error(err, "resourceLogs.scopeLogs.logRecords.traceId", "3 bytes, expected 16");
    let err = decode_json(&otlp_json(&request)).unwrap_err();
    expect_decode_error(err, "resourceLogs.scopeLogs.logRecords.traceId", "expected 32");
}

// --- fixtures made by the OpenTelemetry Python SDK ------------------------------------------

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn expected() -> Json {
    let all: Json = serde_json::from_slice(&fixture("expected.json")).unwrap();
    all["datasets"]["logs"].clone()
}

/// Decodes a fixture with the format and compression `expected.json` gives for it.
fn decode_fixture(name: &str) -> RecordBatch {
    let all: Json = serde_json::from_slice(&fixture("expected.json")).unwrap();
    let file = &all["files"][name];
    assert_eq!(file["dataset"], "logs", "{name}");
    let format = file["format"].as_str().unwrap().parse::<PayloadFormat>().unwrap();
    let compression = match file["compression"].as_str().unwrap() {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        other => panic!("{name}: unexpected compression {other}"),
    };
    logs::decode(&fixture(name), format, compression).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An `AnyValue` as the plain JSON `expected.json` writes bodies in: scalars as JSON
/// scalars, arrays as arrays, key-value lists as objects, bytes as `{"base64": ...}` and an
/// empty value as `null`.
fn plain(value: &AnyValue) -> Json {
    use any_value::Value as V;
    use base64::Engine;
    match &value.value {
        None => Json::Null,
        Some(V::StringValue(s)) => json!(s),
        Some(V::BoolValue(b)) => json!(b),
        Some(V::IntValue(i)) => json!(i),
        Some(V::DoubleValue(d)) => json!(d),
        Some(V::BytesValue(b)) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) }),
        Some(V::ArrayValue(a)) => Json::Array(a.values.iter().map(plain).collect()),
        Some(V::KvlistValue(l)) => Json::Object(
            l.values
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Json::Null, plain)))
                .collect(),
        ),
        Some(V::StringValueStrindex(_)) => panic!("string table reference in a fixture"),
    }
}

/// `expected.json`'s name for a value type number of the `type` child.
fn body_type_name(ty: u8) -> &'static str {
    match ty {
        0 => "empty",
        1 => "string_value",
        2 => "bool_value",
        3 => "int_value",
        4 => "double_value",
        5 => "array_value",
        6 => "kvlist_value",
        7 => "bytes_value",
        other => panic!("unknown value type {other}"),
    }
}

#[test]
fn sdk_fixtures_decode_the_same_from_protobuf_json_and_gzip() {
    let pb = decode_fixture("logs.pb");
    assert_eq!(pb.schema(), logs::schema());
    assert_batches_eq(&decode_fixture("logs.json"), &pb);
    assert_batches_eq(&decode_fixture("logs.json.gz"), &pb);
}

#[test]
fn sdk_fixture_has_the_expected_counts_and_values() {
    let want = expected();
    let batch = decode_fixture("logs.pb");
    let records = want["log_record_list"].as_array().unwrap();
    assert_eq!(batch.num_rows() as u64, want["log_records"].as_u64().unwrap());
    assert_eq!(records.len(), batch.num_rows());

    let resource_index: &UInt32Array = column(&batch, "resource_index");
    let scope_index: &UInt32Array = column(&batch, "scope_index");
    let resources: BTreeSet<u32> = resource_index.values().iter().copied().collect();
    let scopes: BTreeSet<(u32, u32)> = resource_index
        .values()
        .iter()
        .copied()
        .zip(scope_index.values().iter().copied())
        .collect();
    assert_eq!(resources.len() as u64, want["resources"].as_u64().unwrap());
    assert_eq!(scopes.len() as u64, want["scopes"].as_u64().unwrap());

    // Resources and scopes, through the Arrow -> OTLP reader.
    let back = logs::to_prost(&batch).unwrap();
    let want_resources = want["resource_list"].as_array().unwrap();
    assert_eq!(back.resource_logs.len(), want_resources.len());
    let service_name: &StringArray = column(&batch, "service_name");
    for (r, (rl, wr)) in back.resource_logs.iter().zip(want_resources).enumerate() {
        let resource = rl.resource.as_ref().unwrap();
        assert_eq!(
            resource.attributes.len() as u64,
            wr["attributes"].as_u64().unwrap(),
            "resource {r}"
        );
        assert_eq!(rl.schema_url, wr["schema_url"].as_str().unwrap(), "resource {r}");
        let row = resource_index.values().iter().position(|&i| i as usize == r).unwrap();
        assert_eq!(
            service_name.value(row),
            wr["service_name"].as_str().unwrap(),
            "resource {r}"
        );
        let want_scopes = wr["scopes"].as_array().unwrap();
        assert_eq!(rl.scope_logs.len(), want_scopes.len(), "resource {r}");
        for (sl, ws) in rl.scope_logs.iter().zip(want_scopes) {
            let scope = sl.scope.as_ref().unwrap();
            assert_eq!(scope.name, ws["name"].as_str().unwrap());
            assert_eq!(scope.version, ws["version"].as_str().unwrap(), "{}", scope.name);
            assert_eq!(
                scope.attributes.len() as u64,
                ws["attributes"].as_u64().unwrap(),
                "{}",
                scope.name
            );
            assert_eq!(sl.schema_url, ws["schema_url"].as_str().unwrap(), "{}", scope.name);
        }
    }

    // Every record, column by column.
    let timestamp: &TimestampNanosecondArray = column(&batch, "timestamp");
    let time: &TimestampNanosecondArray = column(&batch, "time");
    let observed: &TimestampNanosecondArray = column(&batch, "observed_time");
    let trace_id: &FixedSizeBinaryArray = column(&batch, "trace_id");
    let span_id: &FixedSizeBinaryArray = column(&batch, "span_id");
    let flags: &UInt32Array = column(&batch, "flags");
    let severity_number: &Int32Array = column(&batch, "severity_number");
    let severity_text: &StringArray = column(&batch, "severity_text");
    let body: &StructArray = column(&batch, "body");
    let body_type = body
        .column_by_name("type")
        .unwrap()
        .as_any()
        .downcast_ref::<UInt8Array>()
        .unwrap();
    let attributes: &MapArray = column(&batch, "attributes");
    let dropped: &UInt32Array = column(&batch, "dropped_attributes_count");
    let event_name: &StringArray = column(&batch, "event_name");
    let back_records: Vec<&LogRecord> = back
        .resource_logs
        .iter()
        .flat_map(|rl| &rl.scope_logs)
        .flat_map(|sl| &sl.log_records)
        .collect();
    let id_hex = |ids: &FixedSizeBinaryArray, row: usize| {
        if ids.is_null(row) {
            String::new()
        } else {
            hex(ids.value(row))
        }
    };
    let time_or_zero = |t: &TimestampNanosecondArray, row: usize| if t.is_null(row) { 0 } else { t.value(row) as u64 };

    let mut by_body_type = BTreeMap::<String, u64>::new();
    let mut by_severity_text = BTreeMap::<String, u64>::new();
    for (row, w) in records.iter().enumerate() {
        let at = format!("record {row}");
        assert_eq!(
            u64::from(resource_index.value(row)),
            w["resource_index"].as_u64().unwrap(),
            "{at}"
        );
        assert_eq!(
            u64::from(scope_index.value(row)),
            w["scope_index"].as_u64().unwrap(),
            "{at}"
        );
        let (t, o) = (
            w["time_unix_nano"].as_u64().unwrap(),
            w["observed_time_unix_nano"].as_u64().unwrap(),
        );
        assert_eq!(time_or_zero(time, row), t, "{at}");
        assert_eq!(time.is_null(row), t == 0, "{at}");
        assert_eq!(time_or_zero(observed, row), o, "{at}");
        assert_eq!(timestamp.value(row) as u64, if t != 0 { t } else { o }, "{at}");
        assert_eq!(
            i64::from(severity_number.value(row)),
            w["severity_number"].as_i64().unwrap(),
            "{at}"
        );
        assert_eq!(severity_text.value(row), w["severity_text"].as_str().unwrap(), "{at}");
        assert!(body.is_valid(row), "{at}: every fixture record has a body");
        let ty = body_type_name(body_type.value(row));
        assert_eq!(ty, w["body_type"].as_str().unwrap(), "{at}");
        let record_body = back_records[row].body.as_ref().unwrap();
        assert_eq!(plain(record_body), w["body"], "{at}");
        assert_eq!(
            attributes.value_length(row) as u64,
            w["attributes"].as_u64().unwrap(),
            "{at}"
        );
        assert_eq!(
            u64::from(dropped.value(row)),
            w["dropped_attributes_count"].as_u64().unwrap(),
            "{at}"
        );
        assert_eq!(u64::from(flags.value(row)), w["flags"].as_u64().unwrap(), "{at}");
        assert_eq!(id_hex(trace_id, row), w["trace_id"].as_str().unwrap(), "{at}");
        assert_eq!(id_hex(span_id, row), w["span_id"].as_str().unwrap(), "{at}");
        assert_eq!(event_name.value(row), w["event_name"].as_str().unwrap(), "{at}");
        *by_body_type.entry(ty.to_owned()).or_default() += 1;
        let text = severity_text.value(row);
        *by_severity_text
            .entry(if text.is_empty() {
                "(none)".to_owned()
            } else {
                text.to_owned()
            })
            .or_default() += 1;
    }
    let counts = |v: &Json| -> BTreeMap<String, u64> {
        v.as_object()
            .unwrap()
            .iter()
            .map(|(k, n)| (k.clone(), n.as_u64().unwrap()))
            .collect()
    };
    assert_eq!(by_body_type, counts(&want["log_records_by_body_type"]));
    assert_eq!(by_severity_text, counts(&want["log_records_by_severity_text"]));
    assert_eq!(
        (trace_id.len() - trace_id.null_count()) as u64,
        want["log_records_with_trace_id"].as_u64().unwrap()
    );
}

#[test]
fn sdk_fixture_converts_back_to_the_same_request() {
    let bytes = fixture("logs.pb");
    let original = ExportLogsServiceRequest::decode(bytes.as_slice()).unwrap();
    let back = logs::to_prost(&decode_fixture("logs.pb")).unwrap();
    let want = normalize(original.clone());
    assert_eq!(back, want);
    assert_eq!(back.encode_to_vec(), want.encode_to_vec());
    // The prost oracle agrees with the direct decoder on the real SDK output too.
    assert_batches_eq(&logs::from_prost(&original).unwrap(), &decode_fixture("logs.pb"));
}
