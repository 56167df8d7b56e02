//! Dead letters: records refused one by one, kept as rows of a tenant's `dead_letters` table.
//!
//! A record that cannot be stored as what it claims to be — a JSON event that fails its
//! stream's JSON Schema, an OTLP record that fails conversion, a Kafka message that does not
//! decode — is not dropped: the host describes it as a [`DeadLetter`] (when, which signal,
//! where in the record and why, and the record itself), [`encode`]s the letters as an NDJSON
//! payload and submits that as a [`Part`](crate::Part) of signal
//! [`Signal::DeadLetters`] with [`PayloadFormat::Ndjson`]. From there the letters take the path
//! of every other signal (WAL, Parquet, catalog) and [`decode`] turns the payload into rows of
//! [`schema`], on first conversion and on every replay alike.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use arrow::array::AsArray;
//! use wit_batch::dead_letters::{self, DeadLetter};
//! use wit_batch::{Compression, Part, PayloadFormat, Signal};
//!
//! let refused_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_714_564_800);
//! let letter = DeadLetter::new(
//!     refused_at,
//!     Signal::Events,
//!     "/user/age: \"old\" is not of type \"integer\"",
//!     r#"{"user": {"age": "old"}}"#,
//! )
//! .with_stream("signups")
//! .with_schema_version(3)
//! .with_path("/user/age");
//!
//! let payload = dead_letters::encode(&[letter]);
//! let part = Part::new(PayloadFormat::Ndjson, Compression::None, 1, payload.clone());
//! // ... submitted with a `BatchKey` of signal `Signal::DeadLetters`; stored, the payload becomes:
//! let rows = dead_letters::decode(&payload, part.format, part.compression)?;
//! assert_eq!(rows.schema(), dead_letters::schema());
//! assert_eq!(rows.num_rows(), 1);
//! assert_eq!(rows.column_by_name("path").unwrap().as_string::<i32>().value(0), "/user/age");
//! assert!(rows.column_by_name("topic").unwrap().is_null(0));
//! # Ok::<_, wit_batch::Error>(())
//! ```
//!
//! # The table
//!
//! | column | type | |
//! |---|---|---|
//! | `timestamp` | Timestamp(ns, UTC) | when the record was refused ([`DeadLetter::time`]) |
//! | `signal` | Utf8 | the signal the record was sent as: `events`, `traces`, `logs`, `metrics` |
//! | `stream` | Utf8, nullable | the event stream, for events |
//! | `schema_version` | UInt32, nullable | the version of the stream's schema the record failed |
//! | `path` | Utf8, nullable | where in the record it failed: a JSON Pointer (`/user/age`) or an OTLP field path (`resourceSpans[0].scopeSpans[0].spans[1].traceId`) |
//! | `reason` | Utf8 | why it was refused |
//! | `record` | Utf8 | the record as received (the JSON line; for OTLP protobuf, a text form the host chose) |
//! | `topic` | Utf8, nullable | the Kafka topic it came from |
//! | `partition` | Int32, nullable | its Kafka partition |
//! | `offset` | Int64, nullable | its Kafka offset |
//!
//! The refusal time is the table's `timestamp` column, the event-time column that every Wit
//! table has and that the store sorts files by, bounds their time ranges with, and prunes
//! queries on; `time` is its name in [`DeadLetter`] only.
//!
//! # The payload
//!
//! One JSON object per line, its keys the column names, `timestamp` an integer of nanoseconds
//! since the Unix epoch; a null column's key is left out (or is `null`). [`encode`] writes the
//! keys in column order, but [`decode`] takes them in any order. Lines end in `\n` or `\r\n`;
//! blank lines are skipped, and line numbers in errors count every line from 1.
//!
//! A payload converts whole or not at all: its first bad line (not a JSON object, a missing
//! required field, a value of the wrong type or out of range, an unknown `signal`, a field that
//! is not a column) rejects it with [`Error::DeadLetter`] naming the line and the field.

use std::io::Write;
use std::sync::{Arc, LazyLock};
use std::time::{SystemTime, UNIX_EPOCH};

use arrow::array::{
    ArrayRef, Int32Builder, Int64Builder, RecordBatch, StringBuilder, TimestampNanosecondBuilder, UInt32Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde_json::{Map, Value};

use crate::{Compression, Error, PayloadFormat, Result, Signal};

/// The columns, in order.
const TIMESTAMP: &str = "timestamp";
const SIGNAL: &str = "signal";
const STREAM: &str = "stream";
const SCHEMA_VERSION: &str = "schema_version";
const PATH: &str = "path";
const REASON: &str = "reason";
const RECORD: &str = "record";
const TOPIC: &str = "topic";
const PARTITION: &str = "partition";
const OFFSET: &str = "offset";

const COLUMNS: [&str; 10] = [
    TIMESTAMP,
    SIGNAL,
    STREAM,
    SCHEMA_VERSION,
    PATH,
    REASON,
    RECORD,
    TOPIC,
    PARTITION,
    OFFSET,
];

/// The schema of the `dead_letters` table (see the [module docs](self)).
///
/// ```
/// let schema = wit_batch::dead_letters::schema();
/// let names: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
/// assert_eq!(names, ["timestamp", "signal", "stream", "schema_version", "path", "reason", "record", "topic", "partition", "offset"]);
/// ```
pub fn schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            Field::new(
                TIMESTAMP,
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                false,
            ),
            Field::new(SIGNAL, DataType::Utf8, false),
            Field::new(STREAM, DataType::Utf8, true),
            Field::new(SCHEMA_VERSION, DataType::UInt32, true),
            Field::new(PATH, DataType::Utf8, true),
            Field::new(REASON, DataType::Utf8, false),
            Field::new(RECORD, DataType::Utf8, false),
            Field::new(TOPIC, DataType::Utf8, true),
            Field::new(PARTITION, DataType::Int32, true),
            Field::new(OFFSET, DataType::Int64, true),
        ]))
    });
    SCHEMA.clone()
}

/// One refused record: a row of the `dead_letters` table.
///
/// ```
/// use std::time::SystemTime;
/// use wit_batch::Signal;
/// use wit_batch::dead_letters::DeadLetter;
///
/// let letter = DeadLetter::new(SystemTime::now(), Signal::Logs, "not valid UTF-8", "<base64 of the message>")
///     .with_topic("logs.acme")
///     .with_partition(2)
///     .with_offset(41_000);
/// assert_eq!(letter.offset, Some(41_000));
/// assert_eq!(letter.stream, None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// When the record was refused: the `timestamp` column. [`encode`] saturates a time outside
    /// what nanoseconds since the epoch in an `i64` hold (before 1677 or after 2262).
    pub time: SystemTime,
    /// The signal the record was sent as.
    pub signal: Signal,
    /// The event stream it was sent to, for events.
    pub stream: Option<String>,
    /// The version of the stream's schema it failed.
    pub schema_version: Option<u32>,
    /// Where in the record it failed: a JSON Pointer, or an OTLP field path.
    pub path: Option<String>,
    /// Why it was refused.
    pub reason: String,
    /// The record as received, or a text form of it.
    pub record: String,
    /// The Kafka topic it came from.
    pub topic: Option<String>,
    /// Its Kafka partition.
    pub partition: Option<i32>,
    /// Its Kafka offset.
    pub offset: Option<i64>,
}

impl DeadLetter {
    /// A letter for `record`, of `signal`, refused at `time` for `reason`; every optional column
    /// is null until set.
    pub fn new(time: SystemTime, signal: Signal, reason: impl Into<String>, record: impl Into<String>) -> Self {
        Self {
            time,
            signal,
            stream: None,
            schema_version: None,
            path: None,
            reason: reason.into(),
            record: record.into(),
            topic: None,
            partition: None,
            offset: None,
        }
    }

    /// Sets the event stream.
    pub fn with_stream(mut self, stream: impl Into<String>) -> Self {
        self.stream = Some(stream.into());
        self
    }

    /// Sets the schema version.
    pub fn with_schema_version(mut self, version: u32) -> Self {
        self.schema_version = Some(version);
        self
    }

    /// Sets where in the record it failed.
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// Sets the Kafka topic.
    pub fn with_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// Sets the Kafka partition.
    pub fn with_partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Sets the Kafka offset.
    pub fn with_offset(mut self, offset: i64) -> Self {
        self.offset = Some(offset);
        self
    }
}

/// The payload of `letters`: NDJSON, one object per letter, in order (see the
/// [module docs](self#the-payload)). [`decode`] gives them back as rows.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use wit_batch::Signal;
/// use wit_batch::dead_letters::{self, DeadLetter};
///
/// let time = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_500);
/// let payload = dead_letters::encode(&[DeadLetter::new(time, Signal::Traces, "bad id", "{}").with_path("traceId")]);
/// assert_eq!(
///     String::from_utf8(payload).unwrap(),
///     "{\"timestamp\":1500,\"signal\":\"traces\",\"path\":\"traceId\",\"reason\":\"bad id\",\"record\":\"{}\"}\n"
/// );
/// ```
pub fn encode(letters: &[DeadLetter]) -> Vec<u8> {
    let capacity = letters.iter().map(|l| l.record.len() + l.reason.len() + 128).sum();
    let mut out = Object {
        out: Vec::with_capacity(capacity),
        first: true,
    };
    for letter in letters {
        out.first = true;
        out.int(TIMESTAMP, Some(time_nanos(letter.time)));
        out.text(SIGNAL, Some(letter.signal.as_str()));
        out.text(STREAM, letter.stream.as_deref());
        out.int(SCHEMA_VERSION, letter.schema_version);
        out.text(PATH, letter.path.as_deref());
        out.text(REASON, Some(&letter.reason));
        out.text(RECORD, Some(&letter.record));
        out.text(TOPIC, letter.topic.as_deref());
        out.int(PARTITION, letter.partition);
        out.int(OFFSET, letter.offset);
        out.out.extend_from_slice(b"}\n");
    }
    out.out
}

/// One JSON object being written: its keys, in order, with their values.
struct Object {
    out: Vec<u8>,
    /// Whether no key of the current object has been written yet.
    first: bool,
}

impl Object {
    fn key(&mut self, name: &str) {
        self.out.extend_from_slice(if self.first { b"{\"" } else { b",\"" });
        self.first = false;
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    /// A string value; nothing when `None`.
    fn text(&mut self, name: &str, value: Option<&str>) {
        if let Some(value) = value {
            self.key(name);
            // Writing JSON into a Vec does not fail.
            serde_json::to_writer(&mut self.out, value).expect("a string serializes into a Vec");
        }
    }

    /// An integer value; nothing when `None`.
    fn int(&mut self, name: &str, value: Option<impl std::fmt::Display>) {
        if let Some(value) = value {
            self.key(name);
            // Writing into a Vec does not fail.
            let _ = write!(self.out, "{value}");
        }
    }
}

/// Nanoseconds since the Unix epoch of `time`, saturated to the `i64` range.
fn time_nanos(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_nanos()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_nanos()).map_or(i64::MIN, |n| -n),
    }
}

/// Converts a payload made by [`encode`] to one [`RecordBatch`] of [`schema`], a row per
/// non-blank line, in order. The signature is that of the `otlp` decoders
/// ([`otlp::traces::decode`](crate::otlp::traces::decode)), so a host can hold them all in one
/// table.
///
/// # Errors
///
/// - [`Error::DeadLetter`] naming the line and the field of the first bad line (see the
///   [module docs](self#the-payload)); no rows are returned;
/// - [`Error::InvalidConfig`] when `format` is not [`PayloadFormat::Ndjson`];
/// - [`Error::Decompress`] when the payload does not decompress;
/// - [`Error::PayloadTooLarge`] over [`MAX_PAYLOAD_LEN`](crate::MAX_PAYLOAD_LEN).
///
/// ```
/// use wit_batch::{Compression, Error, PayloadFormat};
/// use wit_batch::dead_letters;
///
/// let payload = b"{\"timestamp\": 1, \"signal\": \"logs\", \"reason\": \"r\", \"record\": \"x\"}\n\n{\"timestamp\": \"soon\"}\n";
/// match dead_letters::decode(payload, PayloadFormat::Ndjson, Compression::None) {
///     Err(Error::DeadLetter { line: 3, field, .. }) => assert_eq!(field, "timestamp"),
///     other => panic!("{other:?}"),
/// }
/// assert!(matches!(
///     dead_letters::decode(payload, PayloadFormat::OtlpJson, Compression::None),
///     Err(Error::InvalidConfig { .. })
/// ));
/// ```
pub fn decode(payload: &[u8], format: PayloadFormat, compression: Compression) -> Result<RecordBatch> {
    if format != PayloadFormat::Ndjson {
        return Err(Error::InvalidConfig {
            reason: format!("{format} is not the dead-letter payload format: dead letters are NDJSON"),
        });
    }
    let payload = compression.decompress(payload)?;
    if payload.len() > crate::MAX_PAYLOAD_LEN {
        return Err(Error::PayloadTooLarge {
            len: payload.len(),
            limit: crate::MAX_PAYLOAD_LEN,
        });
    }
    let mut rows = Rows::with_capacity(payload.len());
    for (line, text) in records(&payload) {
        rows.push(line, text)?;
    }
    rows.finish()
}

/// The column builders.
struct Rows {
    timestamp: TimestampNanosecondBuilder,
    signal: StringBuilder,
    stream: StringBuilder,
    schema_version: UInt32Builder,
    path: StringBuilder,
    reason: StringBuilder,
    record: StringBuilder,
    topic: StringBuilder,
    partition: Int32Builder,
    offset: Int64Builder,
}

impl Rows {
    /// Builders for a payload of `len` bytes: the records take most of it.
    fn with_capacity(len: usize) -> Self {
        let rows = (len / 256).max(1);
        Self {
            timestamp: TimestampNanosecondBuilder::with_capacity(rows).with_timezone("UTC"),
            signal: StringBuilder::with_capacity(rows, rows * 8),
            stream: StringBuilder::new(),
            schema_version: UInt32Builder::new(),
            path: StringBuilder::new(),
            reason: StringBuilder::with_capacity(rows, len / 4),
            record: StringBuilder::with_capacity(rows, len / 2),
            topic: StringBuilder::new(),
            partition: Int32Builder::new(),
            offset: Int64Builder::new(),
        }
    }

    /// Reads one line into the builders, or says what is wrong with it (then nothing was pushed).
    fn push(&mut self, line: usize, text: &[u8]) -> Result<()> {
        let bad = |field: &str, reason: String| Error::DeadLetter {
            line,
            field: field.to_owned(),
            reason,
        };
        let object = match serde_json::from_slice::<Value>(text) {
            Ok(Value::Object(object)) => object,
            Ok(other) => return Err(bad("", format!("expected a JSON object, found {}", kind(&other)))),
            Err(e) => {
                // serde_json says "... at line 1 column 9"; the line is ours to name.
                let message = e.to_string();
                let position = format!(" at line {} column {}", e.line(), e.column());
                let message = message.strip_suffix(&position).unwrap_or(&message);
                return Err(bad("", format!("not valid JSON at column {}: {message}", e.column())));
            }
        };
        if let Some(unknown) = object.keys().find(|k| !COLUMNS.contains(&k.as_str())) {
            return Err(bad(unknown, "not a dead-letter column".to_owned()));
        }
        let fields = Fields { object: &object, bad };

        // Read every value before pushing any, so a bad line leaves the builders as they were.
        let timestamp = fields.required(TIMESTAMP, |v| v.as_i64(), "an integer of nanoseconds since the epoch")?;
        let signal = fields.required(SIGNAL, Value::as_str, "a string")?;
        if signal.parse::<Signal>().is_err() {
            return Err(bad(SIGNAL, format!("unknown signal {signal:?}")));
        }
        let stream = fields.optional(STREAM, Value::as_str, "a string")?;
        let schema_version = fields.optional(
            SCHEMA_VERSION,
            |v| v.as_u64().and_then(|n| u32::try_from(n).ok()),
            "an integer from 0 to 4294967295",
        )?;
        let path = fields.optional(PATH, Value::as_str, "a string")?;
        let reason = fields.required(REASON, Value::as_str, "a string")?;
        let record = fields.required(RECORD, Value::as_str, "a string")?;
        let topic = fields.optional(TOPIC, Value::as_str, "a string")?;
        let partition = fields.optional(
            PARTITION,
            |v| v.as_i64().and_then(|n| i32::try_from(n).ok()),
            "a 32-bit integer",
        )?;
        let offset = fields.optional(OFFSET, Value::as_i64, "a 64-bit integer")?;

        self.timestamp.append_value(timestamp);
        self.signal.append_value(signal);
        self.stream.append_option(stream);
        self.schema_version.append_option(schema_version);
        self.path.append_option(path);
        self.reason.append_value(reason);
        self.record.append_value(record);
        self.topic.append_option(topic);
        self.partition.append_option(partition);
        self.offset.append_option(offset);
        Ok(())
    }

    fn finish(mut self) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.timestamp.finish()),
            Arc::new(self.signal.finish()),
            Arc::new(self.stream.finish()),
            Arc::new(self.schema_version.finish()),
            Arc::new(self.path.finish()),
            Arc::new(self.reason.finish()),
            Arc::new(self.record.finish()),
            Arc::new(self.topic.finish()),
            Arc::new(self.partition.finish()),
            Arc::new(self.offset.finish()),
        ];
        Ok(RecordBatch::try_new(schema(), columns)?)
    }
}

/// The fields of one line's object, read with errors naming the line and field.
struct Fields<'a, B> {
    object: &'a Map<String, Value>,
    bad: B,
}

impl<'a, B: Fn(&str, String) -> Error> Fields<'a, B> {
    /// The value of `name`, which must be present and not null.
    fn required<T>(&self, name: &str, read: impl Fn(&'a Value) -> Option<T>, expected: &str) -> Result<T> {
        self.optional(name, read, expected)?
            .ok_or_else(|| (self.bad)(name, "missing: the column is required".to_owned()))
    }

    /// The value of `name`, `None` when it is missing or null.
    fn optional<T>(&self, name: &str, read: impl Fn(&'a Value) -> Option<T>, expected: &str) -> Result<Option<T>> {
        match self.object.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => read(value)
                .map(Some)
                .ok_or_else(|| (self.bad)(name, format!("expected {expected}, found {}", shown(value)))),
        }
    }
}

/// What kind of JSON value `value` is.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `value` for an error message: a scalar as its JSON text (cut short), else its kind.
fn shown(value: &Value) -> String {
    match value {
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::String(s) if s.chars().count() <= 64 => format!("{s:?}"),
        Value::String(_) => "a long string".to_owned(),
        other => kind(other).to_owned(),
    }
}

/// The non-blank lines of `payload` as (1-based line number, text from the first non-blank byte).
fn records(payload: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    payload.split(|&b| b == b'\n').enumerate().filter_map(|(idx, line)| {
        let start = line.iter().position(|&b| !matches!(b, b' ' | b'\t' | b'\r'))?;
        Some((idx + 1, &line[start..]))
    })
}
