//! Spans: direct decoder against the prost oracle, and the lossless round trip.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use proptest::collection::vec;
use proptest::prelude::*;
use prost::Message;
use wit_batch::otlp::traces;
use wit_batch::{Compression, Error, PayloadFormat};

use crate::otlp_arb::*;

fn span() -> impl Strategy<Value = Span> {
    let event = (any::<u64>(), text(), attributes(), any::<u32>()).prop_map(|(time_unix_nano, name, attributes, d)| {
        span::Event {
            time_unix_nano,
            name,
            attributes,
            dropped_attributes_count: d,
        }
    });
    let link = (id(16), id(8), text(), attributes(), any::<u32>(), any::<u32>()).prop_map(
        |(trace_id, span_id, trace_state, attributes, dropped_attributes_count, flags)| span::Link {
            trace_id,
            span_id,
            trace_state,
            attributes,
            dropped_attributes_count,
            flags,
        },
    );
    let status = proptest::option::of((text(), 0..3i32).prop_map(|(message, code)| Status { message, code }));
    (
        (
            id(16),
            id(8),
            text(),
            id(8),
            any::<u32>(),
            text(),
            0..6i32,
            any::<u64>(),
            any::<u64>(),
        ),
        (
            attributes(),
            any::<u32>(),
            vec(event, 0..3),
            any::<u32>(),
            vec(link, 0..3),
            any::<u32>(),
            status,
        ),
    )
        .prop_map(
            |((trace_id, span_id, trace_state, parent_span_id, flags, name, kind, start, end), rest)| {
                let (
                    attributes,
                    dropped_attributes_count,
                    events,
                    dropped_events_count,
                    links,
                    dropped_links_count,
                    status,
                ) = rest;
                Span {
                    trace_id,
                    span_id,
                    trace_state,
                    parent_span_id,
                    flags,
                    name,
                    kind,
                    start_time_unix_nano: start,
                    end_time_unix_nano: end,
                    attributes,
                    dropped_attributes_count,
                    events,
                    dropped_events_count,
                    links,
                    dropped_links_count,
                    status,
                }
            },
        )
}

pub fn request() -> impl Strategy<Value = ExportTraceServiceRequest> {
    let scope_spans = (scope(), vec(span(), 0..4), text()).prop_map(|(scope, spans, schema_url)| ScopeSpans {
        scope,
        spans,
        schema_url,
    });
    let resource_spans =
        (resource(), vec(scope_spans, 0..3), text()).prop_map(|(resource, scope_spans, schema_url)| ResourceSpans {
            resource,
            scope_spans,
            schema_url,
        });
    vec(resource_spans, 0..3).prop_map(|resource_spans| ExportTraceServiceRequest { resource_spans })
}

/// The request as the round-trip rules say it comes back.
pub fn normalize(mut r: ExportTraceServiceRequest) -> ExportTraceServiceRequest {
    for rs in &mut r.resource_spans {
        rs.scope_spans.retain(|ss| !ss.spans.is_empty());
        norm_resource(&mut rs.resource);
        for ss in &mut rs.scope_spans {
            norm_scope(&mut ss.scope);
            for s in &mut ss.spans {
                s.status.get_or_insert_with(Status::default);
                norm_attrs(&mut s.attributes);
                s.events.iter_mut().for_each(|e| norm_attrs(&mut e.attributes));
                s.links.iter_mut().for_each(|l| norm_attrs(&mut l.attributes));
            }
        }
    }
    r.resource_spans.retain(|rs| !rs.scope_spans.is_empty());
    r
}

fn otlp_json(r: &ExportTraceServiceRequest) -> Vec<u8> {
    serde_json::to_vec(r).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn direct_decoders_agree_with_the_prost_oracle(request in request()) {
        let oracle = traces::from_prost(&request).unwrap();
        let from_proto = traces::decode(&request.encode_to_vec(), PayloadFormat::OtlpProtobuf, Compression::None).unwrap();
        assert_batches_eq(&from_proto, &oracle);
        let json = otlp_json(&request);
        // opentelemetry-proto's serde writes a non-finite double as `null`, not as OTLP/JSON's
        // "Infinity"/"NaN" strings, so such requests cannot be compared through it.
        prop_assume!(!String::from_utf8_lossy(&json).contains("Value\":null"));
        let from_json = traces::decode(&json, PayloadFormat::OtlpJson, Compression::None).unwrap();
        assert_batches_eq(&from_json, &oracle);
        // The prost + serde_json path reads the same JSON to the same batch.
        let parsed: ExportTraceServiceRequest = serde_json::from_slice(&otlp_json(&request)).unwrap();
        assert_batches_eq(&traces::from_prost(&parsed).unwrap(), &oracle);
    }

    #[test]
    fn arrow_converts_back_to_the_same_request(request in request()) {
        let batch = traces::decode(&request.encode_to_vec(), PayloadFormat::OtlpProtobuf, Compression::None).unwrap();
        let back = traces::to_prost(&batch).unwrap();
        prop_assert_eq!(back.encode_to_vec(), normalize(request).encode_to_vec());
    }
}

#[test]
fn wrong_id_length_names_the_field_and_offset() {
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![1; 5],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let err = traces::decode(&request.encode_to_vec(), PayloadFormat::OtlpProtobuf, Compression::None).unwrap_err();
    match &err {
        Error::Decode {
            field, offset, reason, ..
        } => {
            assert_eq!(field, "resourceSpans.scopeSpans.spans.traceId");
            assert_eq!(*offset, 6);
            assert!(reason.contains("5 bytes, expected 16"), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(traces::from_prost(&request).is_err());
}

// --- fixtures made by the OpenTelemetry Python SDK ------------------------------------------

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn expected() -> serde_json::Value {
    serde_json::from_slice(&fixture("expected.json")).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn sdk_fixtures_decode_the_same_from_protobuf_json_and_gzip() {
    let pb = traces::decode(&fixture("traces.pb"), PayloadFormat::OtlpProtobuf, Compression::None).unwrap();
    let json = traces::decode(&fixture("traces.json"), PayloadFormat::OtlpJson, Compression::None).unwrap();
    let gz = traces::decode(&fixture("traces.pb.gz"), PayloadFormat::OtlpProtobuf, Compression::Gzip).unwrap();
    assert_batches_eq(&json, &pb);
    assert_batches_eq(&gz, &pb);
    let request = ExportTraceServiceRequest::decode(&fixture("traces.pb")[..]).unwrap();
    assert_batches_eq(&traces::from_prost(&request).unwrap(), &pb);
    // Lossless: back to the SDK's own request.
    assert_eq!(
        traces::to_prost(&pb).unwrap().encode_to_vec(),
        normalize(request).encode_to_vec()
    );
}

#[test]
fn sdk_fixture_has_the_expected_spans() {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int32Type, TimestampNanosecondType, UInt32Type};

    let want = &expected()["datasets"]["traces"];
    let batch = traces::decode(&fixture("traces.pb"), PayloadFormat::OtlpProtobuf, Compression::None).unwrap();
    let spans = want["span_list"].as_array().unwrap();
    assert_eq!(batch.num_rows(), spans.len());
    assert_eq!(batch.num_rows() as u64, want["spans"].as_u64().unwrap());

    let col = |name: &str| {
        batch
            .column_by_name(name)
            .unwrap_or_else(|| panic!("no column {name}"))
            .clone()
    };
    let (name, trace_id, span_id, parent, state) = (
        col("name"),
        col("trace_id"),
        col("span_id"),
        col("parent_span_id"),
        col("trace_state"),
    );
    let (start, end, kind, status) = (col("timestamp"), col("end_time"), col("kind"), col("status_code"));
    let (flags, events, links, res_idx, scope_idx, service) = (
        col("flags"),
        col("events"),
        col("links"),
        col("resource_index"),
        col("scope_index"),
        col("service_name"),
    );
    let resources = want["resource_list"].as_array().unwrap();
    for (row, span) in spans.iter().enumerate() {
        let ctx = format!("span {row} ({})", span["name"]);
        assert_eq!(
            name.as_string::<i32>().value(row),
            span["name"].as_str().unwrap(),
            "{ctx}"
        );
        assert_eq!(
            hex(trace_id.as_fixed_size_binary().value(row)),
            span["trace_id"].as_str().unwrap(),
            "{ctx}"
        );
        assert_eq!(
            hex(span_id.as_fixed_size_binary().value(row)),
            span["span_id"].as_str().unwrap(),
            "{ctx}"
        );
        let parent_hex = if parent.is_null(row) {
            String::new()
        } else {
            hex(parent.as_fixed_size_binary().value(row))
        };
        assert_eq!(parent_hex, span["parent_span_id"].as_str().unwrap(), "{ctx}");
        assert_eq!(
            state.as_string::<i32>().value(row),
            span["trace_state"].as_str().unwrap(),
            "{ctx}"
        );
        let t = |a: &arrow::array::ArrayRef| a.as_primitive::<TimestampNanosecondType>().value(row) as u64;
        assert_eq!(
            t(&start),
            span["start_time_unix_nano"].as_u64().unwrap(),
            "{ctx}: event time is the span start"
        );
        assert_eq!(t(&end), span["end_time_unix_nano"].as_u64().unwrap(), "{ctx}");
        assert_eq!(
            kind.as_primitive::<Int32Type>().value(row) as i64,
            span["kind"].as_i64().unwrap(),
            "{ctx}"
        );
        assert_eq!(
            status.as_primitive::<Int32Type>().value(row) as i64,
            span["status_code"].as_i64().unwrap(),
            "{ctx}"
        );
        assert_eq!(
            flags.as_primitive::<UInt32Type>().value(row) as u64,
            span["flags"].as_u64().unwrap(),
            "{ctx}"
        );
        assert_eq!(
            events.as_list::<i32>().value(row).len() as u64,
            span["events"].as_u64().unwrap(),
            "{ctx}"
        );
        assert_eq!(
            links.as_list::<i32>().value(row).len() as u64,
            span["links"].as_u64().unwrap(),
            "{ctx}"
        );
        let r = res_idx.as_primitive::<UInt32Type>().value(row) as usize;
        assert_eq!(r as u64, span["resource_index"].as_u64().unwrap(), "{ctx}");
        assert_eq!(
            scope_idx.as_primitive::<UInt32Type>().value(row) as u64,
            span["scope_index"].as_u64().unwrap()
        );
        assert_eq!(
            service.as_string::<i32>().value(row),
            resources[r]["service_name"].as_str().unwrap(),
            "{ctx}"
        );
    }
}

/// Every broken fixture fails with the error `expected.json` names, and never panics.
#[test]
fn sdk_bad_fixtures_are_rejected_with_typed_errors() {
    let files = expected()["files"].as_object().unwrap().clone();
    let mut checked = 0;
    for (name, want) in files.iter().filter(|(_, f)| f["expect"] == "error") {
        let format: PayloadFormat = want["format"].as_str().unwrap().parse().unwrap();
        let compression: Compression = want["compression"].as_str().unwrap().parse().unwrap();
        assert_eq!(want["signal"], "traces", "{name}");
        let err = traces::decode(&fixture(name), format, compression).expect_err(name);
        match (&err, want["error"].as_str().unwrap()) {
            (Error::Decode { field, offset, .. }, "Decode") => {
                if let Some(f) = want.get("field").and_then(|f| f.as_str()) {
                    assert_eq!(field, f, "{name}: {err}");
                }
                if let Some(prefix) = want.get("field_prefix").and_then(|f| f.as_str()) {
                    assert!(field.starts_with(prefix), "{name}: {err}");
                }
                if let Some(at) = want.get("bad_field_tag_offset").and_then(|o| o.as_u64()) {
                    assert_eq!(*offset as u64, at, "{name}: the offset is the bad field's key: {err}");
                }
            }
            (Error::Decompress { .. }, "Decompress") => {}
            (other, kind) => panic!("{name}: expected {kind}, got {other:?}"),
        }
        checked += 1;
    }
    assert!(checked >= 9, "only {checked} bad fixtures");
}

#[test]
fn hostile_nesting_is_an_error_not_a_stack_overflow() {
    // In an unknown field, which the decoder skips, and in attribute values, which it reads.
    let skipped = format!("{{\"unknownField\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
    let err = traces::decode(skipped.as_bytes(), PayloadFormat::OtlpJson, Compression::None).unwrap_err();
    assert!(err.to_string().contains("nested more than 128 deep"), "{err}");

    let mut value = String::from("{\"stringValue\":\"x\"}");
    for _ in 0..10_000 {
        value = format!("{{\"arrayValue\":{{\"values\":[{value}]}}}}");
    }
    let request = format!(
        "{{\"resourceSpans\":[{{\"resource\":{{\"attributes\":[{{\"key\":\"k\",\"value\":{value}}}]}},\"scopeSpans\":[]}}]}}"
    );
    let err = traces::decode(request.as_bytes(), PayloadFormat::OtlpJson, Compression::None).unwrap_err();
    assert!(err.to_string().contains("nested more than 128 deep"), "{err}");
}

#[test]
fn invalid_utf8_in_an_attribute_is_named_by_field_and_offset() {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    let marker = "\u{1}MARK\u{1}";
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    name: "ok".into(),
                    attributes: vec![
                        KeyValue {
                            key: "fine".into(),
                            value: Some(AnyValue {
                                value: Some(any_value::Value::StringValue("é".into())),
                            }),
                            ..Default::default()
                        },
                        KeyValue {
                            key: "bad".into(),
                            value: Some(AnyValue {
                                value: Some(any_value::Value::StringValue(marker.into())),
                            }),
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let mut bytes = request.encode_to_vec();
    // Turn the marker's first byte into a lone continuation byte.
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker.as_bytes())
        .unwrap();
    bytes[at] = 0x80;
    let err = traces::decode(&bytes, PayloadFormat::OtlpProtobuf, Compression::None).unwrap_err();
    match &err {
        Error::Decode {
            field, offset, reason, ..
        } => {
            assert_eq!(
                field, "resourceSpans.scopeSpans.spans.attributes.value.stringValue",
                "{err}"
            );
            assert_eq!(*offset, at - 2, "the offset of the string field's key: {err}");
            assert!(reason.contains("UTF-8"), "{err}");
        }
        other => panic!("unexpected {other:?}"),
    }
    // The same bytes as a key are reported too.
    let mut bytes = request.encode_to_vec();
    let at = bytes.windows(3).position(|w| w == b"bad").unwrap();
    bytes[at] = 0xff;
    let err = traces::decode(&bytes, PayloadFormat::OtlpProtobuf, Compression::None).unwrap_err();
    assert!(err.to_string().contains("attributes.key"), "{err}");
}

#[test]
fn oversized_payloads_and_decompression_bombs_are_refused() {
    use std::io::Write;
    let big = vec![0u8; wit_batch::MAX_PAYLOAD_LEN + 1];
    match traces::decode(&big, PayloadFormat::OtlpProtobuf, Compression::None) {
        Err(Error::PayloadTooLarge { len, limit }) => assert_eq!((len, limit), (big.len(), wit_batch::MAX_PAYLOAD_LEN)),
        other => panic!("unexpected {other:?}"),
    }
    drop(big);
    // One gzip member of 1 MiB of zeros, repeated: a small body that inflates past the limit.
    let mut member = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    member.write_all(&vec![0u8; 1 << 20]).unwrap();
    let member = member.finish().unwrap();
    let n = wit_batch::MAX_PAYLOAD_LEN / (1 << 20) + 1;
    let bomb: Vec<u8> = member.iter().copied().cycle().take(member.len() * n).collect();
    assert!(bomb.len() < 1 << 20, "the bomb is small: {} bytes", bomb.len());
    let err = traces::decode(&bomb, PayloadFormat::OtlpProtobuf, Compression::Gzip).unwrap_err();
    assert!(matches!(err, Error::Decompress { .. }), "{err:?}");
    assert!(err.to_string().contains("decompresses to more than"), "{err}");
}
