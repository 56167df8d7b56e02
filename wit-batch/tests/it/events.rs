//! `wit_batch::events`: NDJSON events to Arrow.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Fields, Float64Type, Int64Type, Schema, SchemaRef, TimeUnit};
use wit_batch::events::{self, EventOptions, MissingTime};
use wit_batch::{Compression, Error};

/// 2024-05-01T12:00:00Z in nanoseconds since the Unix epoch.
const NOON: i64 = 1_714_564_800_000_000_000;

fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

fn times(batch: &RecordBatch) -> Vec<i64> {
    let column = batch.column_by_name("timestamp").expect("timestamp column");
    assert_eq!(column.data_type(), &timestamp_type());
    assert_eq!(column.null_count(), 0);
    column
        .as_primitive::<arrow::datatypes::TimestampNanosecondType>()
        .values()
        .to_vec()
}

fn strings(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
    let column = batch.column_by_name(name).unwrap().as_string::<i32>();
    column.iter().map(|v| v.map(str::to_owned)).collect()
}

/// The line and reason of an `Error::Event`, panicking on any other result.
fn event_error(result: Result<impl std::fmt::Debug, Error>) -> (usize, String) {
    match result {
        Err(Error::Event { line, reason }) => (line, reason),
        other => panic!("expected Error::Event, got {other:?}"),
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn schema(fields: Vec<Field>) -> SchemaRef {
    Arc::new(Schema::new(fields))
}

#[test]
fn infers_types_from_mixed_lines() {
    let payload = br#"{"timestamp": "2024-05-01T12:00:00Z", "n": 1, "ok": true, "o": {"x": 1}, "l": [1, 2], "s": "a"}
{"timestamp": "2024-05-01T12:00:01Z", "n": 2.5, "o": {"y": "b"}, "l": [3.5], "mixed": 1}
{"timestamp": "2024-05-01T12:00:02Z", "objs": [{"k": 1, "j": true}], "mixed": "x", "one": [7]}
{"timestamp": "2024-05-01T12:00:03Z", "one": [8]}
"#;
    let schema = events::infer_schema(payload, None, &EventOptions::default()).unwrap();
    // Fields sorted by name at every level, `timestamp` first.
    let expected = Schema::new(vec![
        Field::new("timestamp", timestamp_type(), false),
        Field::new_list("l", Field::new_list_field(DataType::Float64, true), true),
        Field::new("mixed", DataType::Utf8, true),
        Field::new("n", DataType::Float64, true),
        Field::new(
            "o",
            DataType::Struct(Fields::from(vec![
                Field::new("x", DataType::Int64, true),
                Field::new("y", DataType::Utf8, true),
            ])),
            true,
        ),
        Field::new_list(
            "objs",
            Field::new_list_field(
                DataType::Struct(Fields::from(vec![
                    Field::new("j", DataType::Boolean, true),
                    Field::new("k", DataType::Int64, true),
                ])),
                true,
            ),
            true,
        ),
        Field::new("ok", DataType::Boolean, true),
        Field::new_list("one", Field::new_list_field(DataType::Int64, true), true),
        Field::new("s", DataType::Utf8, true),
    ]);
    assert_eq!(*schema, expected);
    // The order of lines does not change the schema.
    let mut reversed: Vec<&[u8]> = payload.split(|&b| b == b'\n').collect();
    reversed.reverse();
    let reversed = events::infer_schema(&reversed.join(&b'\n'), None, &EventOptions::default()).unwrap();
    assert_eq!(reversed, schema);

    // Decoding with the inferred schema gives exactly that schema and the values.
    let batch = events::decode(payload, Some(schema.clone()), &EventOptions::default()).unwrap();
    assert_eq!(batch.schema(), schema);
    assert_eq!(batch.num_rows(), 4);
    let n = batch.column_by_name("n").unwrap().as_primitive::<Float64Type>();
    assert_eq!((n.value(0), n.value(1), n.is_null(2)), (1.0, 2.5, true));
    assert_eq!(
        strings(&batch, "mixed"),
        [None, Some("1".into()), Some("x".into()), None]
    );
    let o = batch.column_by_name("o").unwrap().as_struct();
    assert_eq!(o.column_by_name("x").unwrap().as_primitive::<Int64Type>().value(0), 1);
    let one = batch.column_by_name("one").unwrap().as_list::<i32>();
    assert_eq!(one.value(2).as_primitive::<Int64Type>().values().to_vec(), [7]);
    assert_eq!(one.value(3).as_primitive::<Int64Type>().values().to_vec(), [8]);
}

#[test]
fn scalar_and_array_in_one_field_infer_a_list_that_rejects_the_scalar() {
    // arrow-json infers `List<Int64>` but its decoder reads only arrays into a list column.
    let payload = b"{\"timestamp\": 1, \"v\": [1]}\n{\"timestamp\": 2, \"v\": 2}\n";
    let schema = events::infer_schema(payload, None, &EventOptions::default()).unwrap();
    assert_eq!(schema.field(1).data_type(), &DataType::new_list(DataType::Int64, true));
    let (line, reason) = event_error(events::decode(payload, Some(schema), &EventOptions::default()));
    assert_eq!(line, 2);
    assert!(reason.contains("'v'"), "{reason}");
}

#[test]
fn infers_from_the_first_max_lines_only() {
    let payload = b"{\"timestamp\": 1, \"a\": 1}\n\n{\"timestamp\": 2, \"b\": 1.5}\n{\"timestamp\": 3, \"c\": true}\n";
    let schema = events::infer_schema(payload, Some(2), &EventOptions::default()).unwrap();
    let names: Vec<_> = schema.fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, ["timestamp", "a", "b"]);

    // Strict by default: the field beyond the inferred lines is an error on its line ...
    let (line, reason) = event_error(events::decode(payload, Some(schema.clone()), &EventOptions::default()));
    assert_eq!(line, 4);
    assert!(reason.contains("'c'"), "{reason}");
    // ... and is dropped when not strict.
    let options = EventOptions::default().with_strict_schema(false);
    let batch = events::decode(payload, Some(schema.clone()), &options).unwrap();
    assert_eq!(batch.schema(), schema);
    assert_eq!(batch.num_rows(), 3);
}

#[test]
fn decodes_with_a_given_schema() {
    let given = schema(vec![
        Field::new("user", DataType::Utf8, false),
        Field::new("count", DataType::Int64, true),
        Field::new("timestamp", DataType::Utf8, true), // the time column, whatever its type here
        Field::new("ok", DataType::Boolean, true),
    ]);
    let payload = br#"{"user": "ana", "count": 3, "timestamp": "2024-05-01T12:00:00Z", "ok": true}
{"timestamp": "2024-05-01T12:00:01Z", "user": "bo", "ok": false}
"#;
    let batch = events::decode(payload, Some(given), &EventOptions::default()).unwrap();
    let expected = Schema::new(vec![
        Field::new("user", DataType::Utf8, false),
        Field::new("count", DataType::Int64, true),
        Field::new("timestamp", timestamp_type(), false),
        Field::new("ok", DataType::Boolean, true),
    ]);
    assert_eq!(*batch.schema(), expected);
    assert_eq!(strings(&batch, "user"), [Some("ana".into()), Some("bo".into())]);
    let count = batch.column_by_name("count").unwrap().as_primitive::<Int64Type>();
    assert_eq!((count.value(0), count.is_null(1)), (3, true));
    assert_eq!(times(&batch), [NOON, NOON + 1_000_000_000]);

    // A schema without a time column gets one, first.
    let given = schema(vec![Field::new("user", DataType::Utf8, true)]);
    let batch = events::decode(payload, Some(given), &EventOptions::default().with_strict_schema(false)).unwrap();
    assert_eq!(batch.schema().field(0).name(), "timestamp");
    assert_eq!(batch.num_columns(), 2);
}

#[test]
fn value_of_the_wrong_type_names_its_line() {
    let given = schema(vec![Field::new("count", DataType::Int64, true)]);
    let payload = b"{\"timestamp\": 1, \"count\": 1}\n{\"timestamp\": 2, \"count\": \"many\"}\n";
    let (line, reason) = event_error(events::decode(payload, Some(given.clone()), &EventOptions::default()));
    assert_eq!(line, 2);
    assert!(reason.contains("many") && reason.contains("Int64"), "{reason}");

    // A non-nullable field that is missing.
    let given = schema(vec![Field::new("count", DataType::Int64, false)]);
    let payload = b"{\"timestamp\": 1, \"count\": 1}\n\n{\"timestamp\": 2}\n";
    let (line, _) = event_error(events::decode(payload, Some(given), &EventOptions::default()));
    assert_eq!(line, 3);
}

#[test]
fn unknown_nested_field_is_an_error_when_strict() {
    let given = schema(vec![Field::new(
        "o",
        DataType::Struct(Fields::from(vec![Field::new("x", DataType::Int64, true)])),
        true,
    )]);
    let payload = b"{\"timestamp\": 1, \"o\": {\"x\": 1}}\n{\"timestamp\": 2, \"o\": {\"x\": 2, \"y\": 3}}\n";
    let (line, reason) = event_error(events::decode(payload, Some(given.clone()), &EventOptions::default()));
    assert_eq!(line, 2);
    assert!(reason.contains("'y'"), "{reason}");
    let batch = events::decode(payload, Some(given), &EventOptions::default().with_strict_schema(false)).unwrap();
    assert_eq!(batch.num_rows(), 2);
}

#[test]
fn parses_rfc3339_times() {
    let payload = br#"{"timestamp": "2024-05-01T12:00:00Z"}
{"timestamp": "2024-05-01T12:00:00.123456789Z"}
{"timestamp": "2024-05-01T14:00:00+02:00"}
{"timestamp": "2024-05-01T07:30:00.5-04:30"}
"#;
    let batch = events::decode(payload, None, &EventOptions::default()).unwrap();
    assert_eq!(times(&batch), [NOON, NOON + 123_456_789, NOON, NOON + 500_000_000]);
    // The time field is consumed: `timestamp` is the only column.
    assert_eq!(batch.num_columns(), 1);
}

#[test]
fn parses_epoch_times_in_the_configured_unit() {
    let payload = b"{\"t\": 1714564800000, \"v\": 1}\n{\"t\": \"1714564800001\", \"v\": 2}\n{\"t\": -1000}\n";
    let options = EventOptions::default().with_time_field("t");
    let batch = events::decode(payload, None, &options).unwrap();
    assert_eq!(times(&batch), [NOON, NOON + 1_000_000, -1_000_000_000]);
    // The time field `t` moved into `timestamp` and is not kept.
    let names: Vec<_> = batch.schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, ["timestamp", "v"]);

    let seconds = b"{\"t\": 1714564800}\n";
    let batch = events::decode(seconds, None, &options.clone().with_epoch_unit(TimeUnit::Second)).unwrap();
    assert_eq!(times(&batch), [NOON]);
    let nanos = b"{\"t\": 1714564800000000007}\n";
    let batch = events::decode(nanos, None, &options.clone().with_epoch_unit(TimeUnit::Nanosecond)).unwrap();
    assert_eq!(times(&batch), [NOON + 7]);
    let micros = b"{\"t\": 1714564800000001}\n";
    let batch = events::decode(micros, None, &options.clone().with_epoch_unit(TimeUnit::Microsecond)).unwrap();
    assert_eq!(times(&batch), [NOON + 1_000]);

    // Nanoseconds read as milliseconds overflow: an error, not a wrong date.
    let (line, reason) = event_error(events::decode(nanos, None, &options));
    assert_eq!(line, 1);
    assert!(reason.contains("out of range"), "{reason}");
    // A fractional epoch is not an integer epoch.
    let (line, _) = event_error(events::decode(b"{\"t\": 1}\n{\"t\": 1714564800.5}\n", None, &options));
    assert_eq!(line, 2);
}

#[test]
fn missing_time_names_the_line() {
    let payload = b"{\"timestamp\": 1, \"a\": 1}\n\n{\"a\": 2}\n{\"timestamp\": null}\n";
    let (line, reason) = event_error(events::decode(payload, None, &EventOptions::default()));
    assert_eq!(line, 3);
    assert!(reason.contains("missing time field `timestamp`"), "{reason}");

    let payload = b"{\"timestamp\": 1}\n{\"timestamp\": null}\n";
    let (line, _) = event_error(events::decode(payload, None, &EventOptions::default()));
    assert_eq!(line, 2);

    let custom = EventOptions::default().with_time_field("@ts");
    let (line, reason) = event_error(events::decode(b"{\"@ts\": 1}\n{\"a\": 1}\n", None, &custom));
    assert_eq!(line, 2);
    assert!(reason.contains("`@ts`"), "{reason}");
    // With a renamed time field, an event field `timestamp` cannot be kept: an error on its line.
    let (line, reason) = event_error(events::decode(
        b"{\"@ts\": 1}\n{\"@ts\": 2, \"timestamp\": 1}\n",
        None,
        &custom,
    ));
    assert_eq!(line, 2);
    assert!(reason.contains("reserved"), "{reason}");
}

#[test]
fn unparseable_time_names_the_line_even_with_ingest_time() {
    let payload = b"{\"timestamp\": \"2024-05-01T12:00:00Z\"}\n{\"timestamp\": \"yesterday\"}\n";
    let (line, reason) = event_error(events::decode(payload, None, &EventOptions::default()));
    assert_eq!(line, 2);
    assert!(reason.contains("yesterday"), "{reason}");
    let ingest = EventOptions::default().with_missing_time(MissingTime::IngestTime(SystemTime::UNIX_EPOCH));
    let (line, _) = event_error(events::decode(payload, None, &ingest));
    assert_eq!(line, 2);
}

#[test]
fn ingest_time_fills_missing_times_only() {
    let ingest = SystemTime::UNIX_EPOCH + Duration::from_nanos(NOON as u64 + 42);
    let options = EventOptions::default().with_missing_time(MissingTime::IngestTime(ingest));
    let payload = b"{\"a\": 1}\n{\"timestamp\": \"2024-05-01T12:00:00Z\", \"a\": 2}\n{\"timestamp\": null, \"a\": 3}\n";
    let batch = events::decode(payload, None, &options).unwrap();
    assert_eq!(times(&batch), [NOON + 42, NOON, NOON + 42]);
}

#[test]
fn non_object_lines_name_their_line() {
    for (bad, found) in [
        ("[1, 2]", "an array"),
        ("42", "a number"),
        ("\"text\"", "a string"),
        ("null", "null"),
    ] {
        let payload = format!("{{\"timestamp\": 1}}\n\n{bad}\n{{\"timestamp\": 2}}\n");
        for schema in [None, Some(schema(vec![]))] {
            let (line, reason) = event_error(events::decode(payload.as_bytes(), schema, &EventOptions::default()));
            assert_eq!(line, 3, "{bad}");
            assert_eq!(reason, format!("expected a JSON object, found {found}"));
        }
        let (line, _) = event_error(events::infer_schema(payload.as_bytes(), None, &EventOptions::default()));
        assert_eq!(line, 3);
    }
}

#[test]
fn invalid_json_names_its_line() {
    let given = Some(schema(vec![Field::new("a", DataType::Int64, true)]));
    for bad in [
        "{\"a\": 1",
        "{\"a\": }",
        "{\"a\": 1}}",
        "{\"a\": 1} {\"a\": 2}",
        "{\"a\": 1}, {\"a\": 2}",
        "{a: 1}",
    ] {
        let payload = format!("{{\"timestamp\": 1}}\n{bad}\n{{\"timestamp\": 2}}\n");
        let (line, reason) = event_error(events::decode(
            payload.as_bytes(),
            given.clone(),
            &EventOptions::default(),
        ));
        assert_eq!(line, 2, "{bad}: {reason}");
        assert!(reason.starts_with("not valid JSON at column"), "{bad}: {reason}");
    }
    // An object spread over two lines is not NDJSON.
    let (line, _) = event_error(events::decode(
        b"{\"timestamp\": 1,\n\"a\": 2}\n",
        given,
        &EventOptions::default(),
    ));
    assert_eq!(line, 1);
}

#[test]
fn partly_bad_payload_is_rejected_whole() {
    // Lines 3 and 5 are bad (a type conflict and a non-object); the error names line 3, and
    // there is no partial batch to have: the result is the error alone.
    let given = Some(schema(vec![Field::new("n", DataType::Int64, true)]));
    let payload = b"{\"timestamp\": 1, \"n\": 1}\n{\"timestamp\": 2, \"n\": 2}\n{\"timestamp\": 3, \"n\": \"three\"}\n{\"timestamp\": 4, \"n\": 4}\n[5]\n";
    let result = events::decode(payload, given.clone(), &EventOptions::default());
    let (line, _) = event_error(result);
    assert_eq!(line, 3);

    // The same with the first bad line being the one that is not an object.
    let payload = b"{\"timestamp\": 1, \"n\": 1}\n[2]\n{\"timestamp\": 3, \"n\": \"three\"}\n";
    assert_eq!(
        event_error(events::decode(payload, given.clone(), &EventOptions::default())).0,
        2
    );

    // A missing time (found only after arrow's decoding) before a type conflict ...
    let payload = b"{\"timestamp\": 1, \"n\": 1}\n{\"n\": 2}\n{\"timestamp\": 3, \"n\": \"three\"}\n";
    let (line, reason) = event_error(events::decode(payload, given.clone(), &EventOptions::default()));
    assert_eq!(line, 2, "{reason}");
    // ... and before a line that is not JSON.
    let payload = b"{\"timestamp\": 1, \"n\": 1}\n{\"n\": 2}\n{\"timestamp\": 3,\n";
    let (line, reason) = event_error(events::decode(payload, given, &EventOptions::default()));
    assert_eq!(line, 2, "{reason}");
}

#[test]
fn gzip_payloads_decode() {
    let payload = b"{\"timestamp\": \"2024-05-01T12:00:00Z\", \"msg\": \"hi\"}\n{\"timestamp\": 1714564800000, \"msg\": \"there\"}\n";
    let compressed = gzip(payload);
    let options = EventOptions::default().with_compression(Compression::Gzip);
    let schema = events::infer_schema(&compressed, None, &options).unwrap();
    let batch = events::decode(&compressed, Some(schema.clone()), &options).unwrap();
    assert_eq!(
        batch,
        events::decode(payload, Some(schema), &EventOptions::default()).unwrap()
    );
    assert_eq!(times(&batch), [NOON, NOON]);
    assert_eq!(strings(&batch, "msg"), [Some("hi".into()), Some("there".into())]);
}

#[test]
fn truncated_gzip_is_a_decompress_error() {
    let compressed = gzip(b"{\"timestamp\": 1, \"msg\": \"hello hello hello\"}\n");
    let truncated = &compressed[..compressed.len() - 6];
    let options = EventOptions::default().with_compression(Compression::Gzip);
    let err = events::decode(truncated, None, &options).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Decompress {
                compression: Compression::Gzip,
                ..
            }
        ),
        "{err:?}"
    );
    let err = events::infer_schema(truncated, None, &options).unwrap_err();
    assert!(matches!(err, Error::Decompress { .. }), "{err:?}");
}

#[test]
fn empty_payload_gives_an_empty_batch_with_the_schema() {
    let given = schema(vec![Field::new("a", DataType::Int64, true)]);
    for payload in [&b""[..], b"\n", b"\r\n  \n\t\r\n"] {
        let batch = events::decode(payload, Some(given.clone()), &EventOptions::default()).unwrap();
        assert_eq!(batch.num_rows(), 0);
        let names: Vec<_> = batch.schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, ["timestamp", "a"]);

        let inferred = events::infer_schema(payload, None, &EventOptions::default()).unwrap();
        assert_eq!(
            *inferred,
            Schema::new(vec![Field::new("timestamp", timestamp_type(), false)])
        );
        let batch = events::decode(payload, None, &EventOptions::default()).unwrap();
        assert_eq!((batch.num_rows(), batch.schema()), (0, inferred));
    }
}

#[test]
fn crlf_lines_and_blank_lines() {
    let payload = b"{\"timestamp\": 1, \"a\": \"x\"}\r\n\r\n  \r\n{\"timestamp\": 2, \"a\": \"y\"}\r\n";
    let batch = events::decode(payload, None, &EventOptions::default()).unwrap();
    assert_eq!(strings(&batch, "a"), [Some("x".into()), Some("y".into())]);
    assert_eq!(times(&batch), [1_000_000, 2_000_000]);

    // Line numbers count the blank lines.
    let bad = b"{\"timestamp\": 1}\r\n\r\n\r\n{\"a\": 1}\r\n";
    assert_eq!(event_error(events::decode(bad, None, &EventOptions::default())).0, 4);
}

#[test]
fn unicode_escapes_decode() {
    let payload = r#"{"timestamp": 1, "s": "caf\u00e9 \ud83d\ude00 \"q\" \\ \n", "k\u00e9y": 1}
{"timestamp": 2, "s": "plain ÿ 日本"}
"#;
    let batch = events::decode(payload.as_bytes(), None, &EventOptions::default()).unwrap();
    assert_eq!(
        strings(&batch, "s"),
        [Some("café 😀 \"q\" \\ \n".into()), Some("plain ÿ 日本".into())]
    );
    assert!(batch.column_by_name("kéy").is_some());
}

#[test]
fn timestamp_and_a_renamed_time_field_clash() {
    let given = schema(vec![
        Field::new("ts", DataType::Utf8, true),
        Field::new("timestamp", DataType::Utf8, true),
    ]);
    let options = EventOptions::default().with_time_field("ts");
    let err = events::decode(b"{\"ts\": 1}\n", Some(given), &options).unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");

    // A given schema naming the time field by its JSON name gets `timestamp` in its place.
    let given = schema(vec![
        Field::new("a", DataType::Int64, true),
        Field::new("ts", DataType::Utf8, true),
    ]);
    let batch = events::decode(b"{\"a\": 1, \"ts\": 5}\n", Some(given), &options).unwrap();
    let names: Vec<_> = batch.schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, ["a", "timestamp"]);
    assert_eq!(times(&batch), [5_000_000]);
}

#[test]
fn inferred_schema_round_trips_and_is_reused() {
    let options = EventOptions::default().with_time_field("ts");
    let first = b"{\"ts\": 1, \"a\": 1, \"b\": \"x\"}\n";
    let schema = events::infer_schema(first, None, &options).unwrap();
    // Normalising again changes nothing.
    let again = events::decode(first, Some(schema.clone()), &options).unwrap().schema();
    assert_eq!(again, schema);
    let later = b"{\"ts\": 2, \"b\": \"y\"}\n{\"ts\": 3, \"a\": 5}\n";
    let batch = events::decode(later, Some(schema.clone()), &options).unwrap();
    assert_eq!(batch.schema(), schema);
    assert_eq!(times(&batch), [2_000_000, 3_000_000]);
}
