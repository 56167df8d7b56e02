//! `wit_batch::dead_letters`: the dead-letter payload, encoded and decoded to the table.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int32Type, Int64Type, TimeUnit, TimestampNanosecondType, UInt32Type};
use proptest::prelude::*;
use wit_batch::dead_letters::{self, DeadLetter};
use wit_batch::{Compression, Error, PayloadFormat, Signal};

/// 2024-05-01T12:00:00Z in nanoseconds since the Unix epoch.
const NOON: i64 = 1_714_564_800_000_000_000;

fn at(nanos: i64) -> SystemTime {
    if nanos >= 0 {
        UNIX_EPOCH + Duration::from_nanos(nanos as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(nanos.unsigned_abs())
    }
}

fn decode(payload: &[u8]) -> wit_batch::Result<RecordBatch> {
    dead_letters::decode(payload, PayloadFormat::Ndjson, Compression::None)
}

/// The letters a batch of the table holds: the inverse of `decode(encode(..))`.
fn letters(batch: &RecordBatch) -> Vec<DeadLetter> {
    assert_eq!(batch.schema(), dead_letters::schema());
    let text = |name: &str| batch.column_by_name(name).unwrap().as_string::<i32>().clone();
    let time = batch.column(0).as_primitive::<TimestampNanosecondType>().clone();
    let (signal, stream, path, reason, record, topic) = (
        text("signal"),
        text("stream"),
        text("path"),
        text("reason"),
        text("record"),
        text("topic"),
    );
    let version = batch
        .column_by_name("schema_version")
        .unwrap()
        .as_primitive::<UInt32Type>()
        .clone();
    let partition = batch
        .column_by_name("partition")
        .unwrap()
        .as_primitive::<Int32Type>()
        .clone();
    let offset = batch
        .column_by_name("offset")
        .unwrap()
        .as_primitive::<Int64Type>()
        .clone();
    let get = |a: &arrow::array::StringArray, row: usize| a.is_valid(row).then(|| a.value(row).to_owned());
    (0..batch.num_rows())
        .map(|row| {
            let mut letter = DeadLetter::new(
                at(time.value(row)),
                signal.value(row).parse().unwrap(),
                reason.value(row),
                record.value(row),
            );
            letter.stream = get(&stream, row);
            letter.path = get(&path, row);
            letter.topic = get(&topic, row);
            letter.schema_version = version.is_valid(row).then(|| version.value(row));
            letter.partition = partition.is_valid(row).then(|| partition.value(row));
            letter.offset = offset.is_valid(row).then(|| offset.value(row));
            letter
        })
        .collect()
}

/// The line, field and reason of an `Error::DeadLetter`, panicking on any other result.
fn bad_line(result: wit_batch::Result<RecordBatch>) -> (usize, String, String) {
    match result {
        Err(Error::DeadLetter { line, field, reason }) => (line, field, reason),
        other => panic!("expected Error::DeadLetter, got {other:?}"),
    }
}

fn samples() -> Vec<DeadLetter> {
    vec![
        DeadLetter::new(
            at(NOON),
            Signal::Events,
            "/user/age: \"old\" is not an integer",
            r#"{"user":{"age":"old"}}"#,
        )
        .with_stream("signups")
        .with_schema_version(3)
        .with_path("/user/age"),
        DeadLetter::new(
            at(NOON + 1),
            Signal::Traces,
            "resourceSpans[0].scopeSpans[0].spans[1].traceId: id is 5 bytes, expected 16",
            "{\"traceId\":\"0102030405\"}",
        )
        .with_path("resourceSpans[0].scopeSpans[0].spans[1].traceId"),
        DeadLetter::new(at(NOON + 2), Signal::Logs, "not valid UTF-8", "q83v\n\"quoted\"\ttab ✓")
            .with_topic("logs.acme")
            .with_partition(7)
            .with_offset(41_000),
        DeadLetter::new(at(-5), Signal::Metrics, "", ""),
    ]
}

#[test]
fn schema_has_the_columns_in_order() {
    let schema = dead_letters::schema();
    let columns: Vec<_> = schema
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.data_type().clone(), f.is_nullable()))
        .collect();
    assert_eq!(
        columns,
        [
            (
                "timestamp",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                false
            ),
            ("signal", DataType::Utf8, false),
            ("stream", DataType::Utf8, true),
            ("schema_version", DataType::UInt32, true),
            ("path", DataType::Utf8, true),
            ("reason", DataType::Utf8, false),
            ("record", DataType::Utf8, false),
            ("topic", DataType::Utf8, true),
            ("partition", DataType::Int32, true),
            ("offset", DataType::Int64, true),
        ]
    );
}

#[test]
fn round_trip_gives_the_columns_values_and_nulls() {
    let letters_in = samples();
    let payload = dead_letters::encode(&letters_in);
    assert_eq!(
        payload.iter().filter(|&&b| b == b'\n').count(),
        4,
        "one line per letter"
    );
    let batch = decode(&payload).unwrap();
    assert_eq!(batch.num_rows(), 4);
    assert_eq!(batch.schema(), dead_letters::schema());

    // Column by column, nulls included.
    let times = batch.column(0).as_primitive::<TimestampNanosecondType>();
    assert_eq!(times.values().to_vec(), [NOON, NOON + 1, NOON + 2, -5]);
    let text = |name: &str| -> Vec<Option<String>> {
        let column = batch.column_by_name(name).unwrap().as_string::<i32>();
        column.iter().map(|v| v.map(str::to_owned)).collect()
    };
    let s = |v: &str| Some(v.to_owned());
    assert_eq!(text("signal"), [s("events"), s("traces"), s("logs"), s("metrics")]);
    assert_eq!(text("stream"), [s("signups"), None, None, None]);
    assert_eq!(
        text("path"),
        [
            s("/user/age"),
            s("resourceSpans[0].scopeSpans[0].spans[1].traceId"),
            None,
            None
        ]
    );
    assert_eq!(text("record")[2], s("q83v\n\"quoted\"\ttab ✓"));
    assert_eq!(text("reason")[3], s(""));
    assert_eq!(text("topic"), [None, None, s("logs.acme"), None]);
    let version = batch
        .column_by_name("schema_version")
        .unwrap()
        .as_primitive::<UInt32Type>();
    assert_eq!(version.iter().collect::<Vec<_>>(), [Some(3), None, None, None]);
    let partition = batch.column_by_name("partition").unwrap().as_primitive::<Int32Type>();
    assert_eq!(partition.iter().collect::<Vec<_>>(), [None, None, Some(7), None]);
    let offset = batch.column_by_name("offset").unwrap().as_primitive::<Int64Type>();
    assert_eq!(offset.iter().collect::<Vec<_>>(), [None, None, Some(41_000), None]);

    assert_eq!(letters(&batch), letters_in);
}

#[test]
fn decodes_keys_in_any_order_explicit_nulls_blank_lines_and_gzip() {
    let payload = b"\r\n{\"record\": \"r\", \"reason\": \"why\", \"signal\": \"events\", \"timestamp\": 10, \"stream\": null, \"offset\": null}\r\n   \n\t{\"timestamp\": -1, \"signal\": \"dead_letters\", \"reason\": \"x\", \"record\": \"y\", \"partition\": -3}";
    let batch = decode(payload).unwrap();
    let got = letters(&batch);
    assert_eq!(
        got,
        [
            DeadLetter::new(at(10), Signal::Events, "why", "r"),
            DeadLetter::new(at(-1), Signal::DeadLetters, "x", "y").with_partition(-3),
        ]
    );

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&dead_letters::encode(&samples())).unwrap();
    let gz = gz.finish().unwrap();
    let batch = dead_letters::decode(&gz, PayloadFormat::Ndjson, Compression::Gzip).unwrap();
    assert_eq!(letters(&batch), samples());
    assert!(matches!(
        dead_letters::decode(&gz[..gz.len() / 2], PayloadFormat::Ndjson, Compression::Gzip),
        Err(Error::Decompress { .. })
    ));
}

#[test]
fn empty_payload_is_an_empty_batch() {
    for payload in [&b""[..], b"\n\n  \r\n"] {
        let batch = decode(payload).unwrap();
        assert_eq!(batch.num_rows(), 0);
        assert_eq!(batch.schema(), dead_letters::schema());
    }
    assert!(dead_letters::encode(&[]).is_empty());
}

#[test]
fn other_formats_are_refused_naming_them() {
    let payload = dead_letters::encode(&samples());
    for format in [PayloadFormat::OtlpJson, PayloadFormat::OtlpProtobuf] {
        match dead_letters::decode(&payload, format, Compression::None) {
            Err(e @ Error::InvalidConfig { .. }) => {
                assert!(e.to_string().contains(&format.to_string()), "{e}");
            }
            other => panic!("{format}: {other:?}"),
        }
    }
}

#[test]
fn bad_lines_are_errors_naming_the_line_and_field() {
    let good = r#"{"timestamp": 1, "signal": "logs", "reason": "r", "record": "x"}"#;
    let cases: &[(&str, &str, &str)] = &[
        ("not json", "", "not valid JSON"),
        ("[1, 2]", "", "expected a JSON object, found an array"),
        (r#"{"a": 1} {"b": 2}"#, "", "not valid JSON"),
        (
            r#"{"signal": "logs", "reason": "r", "record": "x"}"#,
            "timestamp",
            "missing",
        ),
        (
            r#"{"timestamp": null, "signal": "logs", "reason": "r", "record": "x"}"#,
            "timestamp",
            "missing",
        ),
        (
            r#"{"timestamp": "soon", "signal": "logs", "reason": "r", "record": "x"}"#,
            "timestamp",
            "\"soon\"",
        ),
        (
            r#"{"timestamp": 1.5, "signal": "logs", "reason": "r", "record": "x"}"#,
            "timestamp",
            "1.5",
        ),
        (
            r#"{"timestamp": 9223372036854775808, "signal": "logs", "reason": "r", "record": "x"}"#,
            "timestamp",
            "9223372036854775808",
        ),
        (
            r#"{"timestamp": 1, "signal": "spans", "reason": "r", "record": "x"}"#,
            "signal",
            "unknown signal",
        ),
        (
            r#"{"timestamp": 1, "signal": 2, "reason": "r", "record": "x"}"#,
            "signal",
            "expected a string",
        ),
        (
            r#"{"timestamp": 1, "signal": "logs", "record": "x"}"#,
            "reason",
            "missing",
        ),
        (
            r#"{"timestamp": 1, "signal": "logs", "reason": "r"}"#,
            "record",
            "missing",
        ),
        (
            r#"{"timestamp": 1, "signal": "logs", "reason": "r", "record": {"a": 1}}"#,
            "record",
            "an object",
        ),
        (
            r#"{"timestamp": 1, "signal": "logs", "reason": "r", "record": "x", "stream": 1}"#,
            "stream",
            "a string",
        ),
        (
            r#"{"timestamp": 1, "signal": "logs", "reason": "r", "record": "x", "schema_version": -1}"#,
            "schema_version",
            "-1",
        ),
        (
            r#"{"timestamp": 1, "signal": "logs", "reason": "r", "record": "x", "schema_version": 4294967296}"#,
            "schema_version",
            "4294967296",
        ),
        (
            r#"{"timestamp": 1, "signal": "logs", "reason": "r", "record": "x", "partition": 2147483648}"#,
            "partition",
            "2147483648",
        ),
        (
            r#"{"timestamp": 1, "signal": "logs", "reason": "r", "record": "x", "offset": "7"}"#,
            "offset",
            "\"7\"",
        ),
        (
            r#"{"timestamp": 1, "signal": "logs", "reason": "r", "record": "x", "path": []}"#,
            "path",
            "an array",
        ),
        (
            r#"{"timestamp": 1, "signal": "logs", "reason": "r", "record": "x", "topics": "t"}"#,
            "topics",
            "not a dead-letter column",
        ),
    ];
    for (bad, field, reason) in cases {
        // The bad line is the fourth: after a good line, a blank one and another good one.
        let payload = format!("{good}\n\n{good}\r\n{bad}\n{good}\n");
        let (line, got_field, got_reason) = bad_line(decode(payload.as_bytes()));
        assert_eq!((line, got_field.as_str()), (4, *field), "{bad}: {got_reason}");
        assert!(got_reason.contains(reason), "{bad}: {got_reason:?} lacks {reason:?}");
        let message = decode(payload.as_bytes()).unwrap_err().to_string();
        assert!(message.contains("line 4"), "{message}");
        if !field.is_empty() {
            assert!(message.contains(&format!("`{field}`")), "{message}");
        }
    }
}

#[test]
fn saturates_times_beyond_nanosecond_range() {
    let far = UNIX_EPOCH + Duration::from_secs(400 * 365 * 24 * 3600);
    let batch = decode(&dead_letters::encode(&[DeadLetter::new(far, Signal::Events, "r", "x")])).unwrap();
    assert_eq!(
        batch.column(0).as_primitive::<TimestampNanosecondType>().value(0),
        i64::MAX
    );
}

fn optional<T: std::fmt::Debug + Clone>(value: impl Strategy<Value = T>) -> impl Strategy<Value = Option<T>> {
    prop_oneof![1 => Just(None), 2 => value.prop_map(Some)]
}

fn letter() -> impl Strategy<Value = DeadLetter> {
    (
        (any::<i64>(), prop::sample::select(Signal::ALL.to_vec()), ".*", ".*"),
        (optional(".*"), optional(any::<u32>()), optional(".*")),
        (optional(".*"), optional(any::<i32>()), optional(any::<i64>())),
    )
        .prop_map(
            |((time, signal, reason, record), (stream, schema_version, path), (topic, partition, offset))| {
                let mut letter = DeadLetter::new(at(time), signal, reason, record);
                letter.stream = stream;
                letter.schema_version = schema_version;
                letter.path = path;
                letter.topic = topic;
                letter.partition = partition;
                letter.offset = offset;
                letter
            },
        )
}

proptest! {
    #[test]
    fn any_letters_round_trip(letters_in in prop::collection::vec(letter(), 0..8)) {
        let batch = decode(&dead_letters::encode(&letters_in)).unwrap();
        prop_assert_eq!(letters(&batch), letters_in);
    }
}
