//! JSON events: newline-delimited JSON objects from non-OTLP sources, converted to one Arrow
//! [`RecordBatch`] with a given or inferred schema.
//!
//! [`infer_schema`] reads a payload and returns the schema of its table; [`decode`] converts a
//! payload with a schema, or infers one from that payload when given `None`. A host infers once
//! (or writes the schema down) and passes the same [`SchemaRef`] to every later [`decode`]; the
//! batch it gets back has exactly that schema. [`EventOptions`] names the event-time field, the
//! unit of integer epochs, what to do when an event has no time, whether unknown fields are an
//! error, and the payload's [`Compression`]. The JSON work is done by arrow's own reader
//! ([`arrow::json`]): its schema inference and its byte-level decoder.
//!
//! ```
//! use wit_batch::events::{self, EventOptions};
//!
//! let payload = br#"{"timestamp": "2024-05-01T12:00:00.5Z", "level": "info", "latency_ms": 12}
//! {"timestamp": 1714564801000, "level": "warn", "latency_ms": 30.5, "tags": ["a", "b"]}
//! "#;
//! let options = EventOptions::default();
//! let schema = events::infer_schema(payload, None, &options)?;
//! let batch = events::decode(payload, Some(schema.clone()), &options)?;
//! assert_eq!(batch.schema(), schema);
//! assert_eq!(batch.num_rows(), 2);
//! let names: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
//! assert_eq!(names, ["timestamp", "latency_ms", "level", "tags"]);
//! assert_eq!(schema.field(1).data_type(), &arrow::datatypes::DataType::Float64); // 12 then 30.5
//!
//! // A host reuses the schema for the next payload.
//! let next = events::decode(br#"{"timestamp": "2024-05-01T12:00:02Z", "level": "error"}"#, Some(schema), &options)?;
//! assert_eq!(next.num_rows(), 1);
//! # Ok::<_, wit_batch::Error>(())
//! ```
//!
//! # Lines
//!
//! Each line holds one JSON object. Lines end in `\n` or `\r\n`; blank lines (only spaces, tabs
//! or `\r`) and a trailing newline are skipped. Line numbers in errors are 1-based and count every
//! line of the (decompressed) payload, blank ones included, so they match what an editor shows.
//!
//! # Schema inference
//!
//! [`infer_schema`] (and [`decode`] without a schema) uses arrow-json's inference over the lines:
//!
//! - integers → `Int64`; numbers with a fraction or an exponent → `Float64`; a field that holds
//!   both → `Float64`;
//! - strings → `Utf8`; `true`/`false` → `Boolean`;
//! - objects → `Struct`, with the fields of every line's object merged;
//! - arrays → `List` of the element type (so `[1, 2.5]` → `List<Float64>`, arrays of objects →
//!   `List<Struct>`); a field that is a scalar on one line and an array on another → `List` of
//!   that scalar, but arrow's decoder reads only arrays into a `List` column, so the payload is
//!   then rejected at the first line with the scalar;
//! - any other mixture of scalars (a number and a string, a boolean and a number) → `Utf8`, and
//!   the numbers and booleans decode as their JSON text (`7`, `true`);
//! - a field that is only ever `null` → `Null` (only ever `[]` → `List<Null>`): a later non-null
//!   value for it does not fit, so infer from enough lines, or give the schema;
//! - an object on one line and a scalar or array on another is an error naming the line;
//! - every inferred field is nullable;
//! - fields are sorted by name, at every level, after the `timestamp` column, so the same fields
//!   give the same schema whatever the order of keys and lines.
//!
//! `max_lines` limits inference to the first that many non-blank lines.
//!
//! # Decoding with a schema
//!
//! Values are decoded by arrow-json's decoder with the schema, and these are its rules: a JSON
//! string holding a number is accepted in a numeric column; a number or boolean in a `Utf8`
//! column is kept as its JSON text; a number with a fraction in an integer column is truncated
//! towards zero; a value that does not fit its column (`"abc"` where `Int64` is expected, an
//! object where a string is expected) is an error naming the line. A field missing from an
//! object is null; if the field is not nullable that is an error. A field that is not in the
//! schema, at any depth, is an error when [`EventOptions::strict_schema`] is `true` (the default)
//! and is dropped when it is `false`.
//!
//! # The `timestamp` column
//!
//! Every Wit table has a non-null `timestamp` column of type `Timestamp(Nanosecond, "UTC")`
//! holding the event time, and so does every schema this module returns. It is filled from the
//! field named by [`EventOptions::time_field`] (default `"timestamp"`, top level only):
//!
//! - a string is read as an RFC 3339 timestamp (`2024-05-01T12:00:00.123456789Z`,
//!   `2024-05-01T14:00:00+02:00`) with nanosecond precision. Arrow's parser also accepts a space
//!   instead of `T`, a missing offset (read as UTC) and a bare date (midnight UTC);
//! - an integer is an epoch in [`EventOptions::epoch_unit`], milliseconds by default (what
//!   `Date.now()` and most JSON loggers write). The unit is never guessed from the magnitude; a
//!   value whose nanoseconds do not fit in an `i64` (beyond 1677–2262) is an error. A string of
//!   only digits is read as an epoch too. A number with a fraction or exponent (`1.7e12`) is an
//!   error;
//! - a missing or `null` time field is an error naming the line, unless
//!   [`EventOptions::missing_time`] is [`MissingTime::IngestTime`], whose time (given by the
//!   caller, e.g. the batch's creation time, so a replay gives the same answer) is used instead.
//!   A time field that is present but cannot be parsed is always an error.
//!
//! The time field is consumed: its value moves into `timestamp` and it is not kept under its own
//! name (the original text stays in the payload, which the WAL keeps as received). In a given
//! schema, the field named `timestamp`, or else the one named like the time field, becomes the
//! `timestamp` column in its place, whatever type it was given; if neither is present the column
//! is added first. A schema with both a `timestamp` field and a differently named time field is
//! an [`Error::InvalidConfig`]. So an event field called `timestamp` can only be the event time:
//! next to a differently named time field, inference rejects it on its line, and a given schema
//! treats it as a field not in the schema (an error when strict, dropped otherwise).
//!
//! # Bad input
//!
//! A payload converts whole or not at all: the first bad line rejects the payload with
//! [`Error::Event`] naming that line, and no rows are returned. Bad lines are: text that is not
//! JSON, a JSON array or scalar instead of an object, two objects on one line, a value that does
//! not fit the schema, a field not in the schema (strict mode), and a missing or unparseable
//! event time. A corrupt or truncated compressed payload is [`Error::Decompress`]. An empty
//! payload (or only blank lines) is not an error: it gives an empty batch with the schema.
//!
//! The happy path decodes the payload once with arrow's decoder, fed a line at a time so each row
//! is known to be one line; only when arrow reports an error that it cannot place (a value that
//! does not fit the schema) are the lines decoded again one by one to find the first bad one.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow::array::{Array, AsArray, RecordBatch, TimestampNanosecondArray};
use arrow::compute::kernels::cast_utils::string_to_timestamp_nanos;
use arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::json::ReaderBuilder;
use arrow::json::reader::infer_json_schema_from_iterator;
use serde_json::Value;

use crate::{Compression, Error, Result};

/// The name of the event-time column of every Wit table.
const TIMESTAMP: &str = "timestamp";

/// The time zone of the `timestamp` column.
const UTC: &str = "UTC";

/// What to do with an event whose time field is missing or `null`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MissingTime {
    /// Reject the payload with [`Error::Event`] naming the line (the default).
    #[default]
    Reject,
    /// Use this time, given by the caller (usually the batch's creation time, so that replaying
    /// the WAL gives the same rows). The wall clock is never read.
    IngestTime(SystemTime),
}

/// How to read a payload of JSON events.
///
/// ```
/// use std::time::SystemTime;
/// use arrow::datatypes::TimeUnit;
/// use wit_batch::Compression;
/// use wit_batch::events::{EventOptions, MissingTime};
///
/// let options = EventOptions::default()
///     .with_time_field("@timestamp")
///     .with_epoch_unit(TimeUnit::Second)
///     .with_missing_time(MissingTime::IngestTime(SystemTime::UNIX_EPOCH))
///     .with_strict_schema(false)
///     .with_compression(Compression::Gzip);
/// assert_eq!(options.time_field(), "@timestamp");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventOptions {
    time_field: String,
    epoch_unit: TimeUnit,
    missing_time: MissingTime,
    strict_schema: bool,
    compression: Compression,
}

impl Default for EventOptions {
    fn default() -> Self {
        Self {
            time_field: TIMESTAMP.to_owned(),
            epoch_unit: TimeUnit::Millisecond,
            missing_time: MissingTime::Reject,
            strict_schema: true,
            compression: Compression::None,
        }
    }
}

impl EventOptions {
    /// Sets the top-level field holding the event time (default `"timestamp"`).
    pub fn with_time_field(mut self, name: impl Into<String>) -> Self {
        self.time_field = name.into();
        self
    }

    /// Sets the unit of integer epochs in the time field (default milliseconds).
    pub fn with_epoch_unit(mut self, unit: TimeUnit) -> Self {
        self.epoch_unit = unit;
        self
    }

    /// Sets what to do when an event has no time (default [`MissingTime::Reject`]).
    pub fn with_missing_time(mut self, missing_time: MissingTime) -> Self {
        self.missing_time = missing_time;
        self
    }

    /// Sets whether a field that is not in the schema is an error (`true`, the default) or is
    /// dropped (`false`).
    pub fn with_strict_schema(mut self, strict: bool) -> Self {
        self.strict_schema = strict;
        self
    }

    /// Sets the payload's compression (default [`Compression::None`]).
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// The top-level field holding the event time.
    pub fn time_field(&self) -> &str {
        &self.time_field
    }

    /// The unit of integer epochs in the time field.
    pub fn epoch_unit(&self) -> TimeUnit {
        self.epoch_unit
    }

    /// What to do when an event has no time.
    pub fn missing_time(&self) -> MissingTime {
        self.missing_time
    }

    /// Whether a field that is not in the schema is an error.
    pub fn strict_schema(&self) -> bool {
        self.strict_schema
    }

    /// The payload's compression.
    pub fn compression(&self) -> Compression {
        self.compression
    }
}

/// Infers the schema of a payload of JSON events: the inferred fields, with the time field made
/// the `timestamp` column (see the [module docs](self) for the rules).
///
/// Reads the first `max_lines` non-blank lines, or all of them when `None`. The result can be
/// given to [`decode`] for this and later payloads.
///
/// # Errors
///
/// - [`Error::Decompress`] when the payload does not decompress;
/// - [`Error::Event`] naming the first line that is not a JSON object, or whose fields cannot be
///   merged with earlier lines (an object in one line, a scalar in another).
///
/// # Examples
///
/// ```
/// use arrow::datatypes::DataType;
/// use wit_batch::events::{self, EventOptions};
///
/// let schema = events::infer_schema(b"{\"n\": 1}\n{\"n\": 2.5}\n", None, &EventOptions::default())?;
/// assert_eq!(schema.field(0).name(), "timestamp");
/// assert_eq!(schema.field(1).data_type(), &DataType::Float64);
/// # Ok::<_, wit_batch::Error>(())
/// ```
pub fn infer_schema(payload: &[u8], max_lines: Option<usize>, options: &EventOptions) -> Result<SchemaRef> {
    let payload = options.compression.decompress(payload)?;
    infer(&payload, max_lines, options)
}

/// Converts a payload of JSON events to one [`RecordBatch`], a row per non-blank line.
///
/// With `Some(schema)` the batch has that schema, with the `timestamp` column put in (see the
/// [module docs](self)); a schema from [`infer_schema`] or from an earlier batch comes back
/// unchanged. With `None` the schema is inferred from the whole payload first, which reads it
/// twice. The payload converts whole or not at all.
///
/// # Errors
///
/// - [`Error::Decompress`] when the payload does not decompress;
/// - [`Error::Event`] naming the first bad line: not JSON, not an object, more than one object,
///   a value that does not fit the schema, a field not in the schema (strict mode), a missing or
///   unparseable event time;
/// - [`Error::InvalidConfig`] when the schema has both a `timestamp` field and a differently named
///   time field, or the ingest time does not fit a nanosecond timestamp;
/// - [`Error::Arrow`] when arrow fails in a way no line explains.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use arrow::datatypes::{DataType, Field, Schema};
/// use wit_batch::events::{self, EventOptions};
///
/// let schema = Arc::new(Schema::new(vec![Field::new("user", DataType::Utf8, true)]));
/// let payload = b"{\"ts\": 1714564800, \"user\": \"ana\"}\r\n\r\n{\"ts\": 1714564801, \"user\": 7}\r\n";
/// let options = EventOptions::default().with_time_field("ts").with_epoch_unit(arrow::datatypes::TimeUnit::Second);
/// let batch = events::decode(payload, Some(schema), &options)?;
/// assert_eq!(batch.num_rows(), 2);
/// assert_eq!(batch.schema().field(0).name(), "timestamp");
///
/// let err = events::decode(b"{\"ts\": 1}\n[1, 2]\n", None, &options).unwrap_err();
/// assert!(matches!(err, wit_batch::Error::Event { line: 2, .. }));
/// # Ok::<_, wit_batch::Error>(())
/// ```
pub fn decode(payload: &[u8], schema: Option<SchemaRef>, options: &EventOptions) -> Result<RecordBatch> {
    let payload = options.compression.decompress(payload)?;
    let schema = match schema {
        Some(schema) => with_time_column(&schema, options)?,
        None => infer(&payload, None, options)?,
    };
    decode_with(&payload, schema, options)
}

/// [`infer_schema`] on a decompressed payload.
fn infer(payload: &[u8], max_lines: Option<usize>, options: &EventOptions) -> Result<SchemaRef> {
    let time_field = options.time_field.as_str();
    // The line being read, and the error of a line that arrow must not see: its inference stops
    // at the first `Err` the iterator yields, and its own errors do not name the line.
    let mut line = 0;
    let mut bad_line = None;
    let values = records(payload)
        .take(max_lines.unwrap_or(usize::MAX))
        .map(|(number, text)| {
            line = number;
            let value = parse_object(text).and_then(|value| {
                if time_field != TIMESTAMP && value.get(TIMESTAMP).is_some() {
                    return Err(format!(
                        "field `{TIMESTAMP}` is reserved for the event time, which is read from `{time_field}`"
                    ));
                }
                Ok(value)
            });
            value.map_err(|reason| {
                bad_line = Some(Error::Event { line: number, reason });
                ArrowError::JsonError(String::new())
            })
        });
    let inferred = infer_json_schema_from_iterator(values);
    if let Some(err) = bad_line {
        return Err(err);
    }
    let inferred = inferred.map_err(|err| Error::Event {
        line,
        reason: arrow_message(err),
    })?;
    // The time field's own type does not matter; `timestamp` goes first.
    let fields = sorted_fields(inferred.fields());
    let fields: Fields = fields.iter().filter(|f| f.name() != time_field).cloned().collect();
    with_time_column(&Schema::new(fields), options)
}

/// `fields` sorted by name, and so are the fields of every struct within them.
fn sorted_fields(fields: &Fields) -> Fields {
    let mut fields: Vec<Field> = fields
        .iter()
        .map(|field| field.as_ref().clone().with_data_type(sorted(field.data_type())))
        .collect();
    fields.sort_by(|a, b| a.name().cmp(b.name()));
    fields.into()
}

/// `data_type` with the fields of every struct within it sorted by name.
fn sorted(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Struct(fields) => DataType::Struct(sorted_fields(fields)),
        DataType::List(item) => {
            DataType::List(Arc::new(item.as_ref().clone().with_data_type(sorted(item.data_type()))))
        }
        other => other.clone(),
    }
}

/// Decodes a decompressed payload with a schema that has its `timestamp` column.
fn decode_with(payload: &[u8], schema: SchemaRef, options: &EventOptions) -> Result<RecordBatch> {
    let records: Vec<(usize, &[u8])> = records(payload).collect();
    // Arrow decodes the JSON with the time field as text; the `timestamp` column is made after.
    let time_idx = schema.index_of(TIMESTAMP)?;
    let mut json_fields: Vec<FieldRef> = schema.fields().iter().cloned().collect();
    json_fields[time_idx] = Arc::new(Field::new(options.time_field.as_str(), DataType::Utf8, true));
    let target = Target {
        schema,
        json_schema: Arc::new(Schema::new(json_fields)),
        time_idx,
        options,
    };
    target.convert(&records)
}

/// What [`decode_with`] converts records to.
struct Target<'a> {
    /// The batch's schema.
    schema: SchemaRef,
    /// The schema arrow decodes: `schema` with the time field as `Utf8` in place of `timestamp`.
    json_schema: SchemaRef,
    /// The index of `timestamp` in both.
    time_idx: usize,
    options: &'a EventOptions,
}

impl Target<'_> {
    /// Converts `records` (line number, text) to a batch, or returns the error of the first bad
    /// line.
    fn convert(&self, records: &[(usize, &[u8])]) -> Result<RecordBatch> {
        // Feed the decoder a line at a time, so that row `i` is known to be `records[i]`.
        let mut decoder = self.json_decoder(records.len())?;
        for (row, &(line, text)) in records.iter().enumerate() {
            let whole_object = text.first() == Some(&b'{')
                && match decoder.decode(text) {
                    Ok(n_read) => n_read == text.len() && !decoder.has_partial_record() && decoder.len() == row + 1,
                    Err(_) => false,
                };
            if !whole_object {
                // An earlier line may be bad in a way only converting it shows; it comes first.
                self.convert(&records[..row])?;
                return Err(bad_record(line, text));
            }
        }
        let batch = match decoder.flush() {
            Ok(Some(batch)) => batch,
            Ok(None) => return Ok(RecordBatch::new_empty(self.schema.clone())),
            Err(err) => {
                // Arrow does not say which row failed: convert the lines one by one.
                if let [(line, _)] = records {
                    return Err(Error::Event {
                        line: *line,
                        reason: arrow_message(err),
                    });
                }
                for record in records.chunks(1) {
                    self.convert(record)?;
                }
                return Err(Error::Arrow(err));
            }
        };

        let times = event_times(batch.column(self.time_idx).as_string::<i32>(), records, self.options)?;
        let mut columns = batch.columns().to_vec();
        columns[self.time_idx] = Arc::new(times);
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    /// An arrow JSON decoder for the JSON schema with room for `n_rows` rows.
    fn json_decoder(&self, n_rows: usize) -> Result<arrow::json::reader::Decoder> {
        Ok(ReaderBuilder::new(self.json_schema.clone())
            .with_batch_size(n_rows.max(1))
            .with_strict_mode(self.options.strict_schema)
            // Inference makes mixed scalars `Utf8`; this is what lets those values decode.
            .with_coerce_primitive(true)
            .build_decoder()?)
    }
}

/// The error for a line that is not exactly one JSON object.
fn bad_record(line: usize, text: &[u8]) -> Error {
    let reason = match parse_object(text) {
        Err(reason) => reason,
        Ok(_) => "expected exactly one JSON object on the line".to_owned(),
    };
    Error::Event { line, reason }
}

/// Parses one line as a JSON object, or says why it is not one.
fn parse_object(text: &[u8]) -> Result<Value, String> {
    match serde_json::from_slice::<Value>(text) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(value) => {
            let found = match value {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                _ => "null",
            };
            Err(format!("expected a JSON object, found {found}"))
        }
        Err(e) => {
            // serde_json says "... at line 1 column 9"; the line is ours to name.
            let message = e.to_string();
            let position = format!(" at line {} column {}", e.line(), e.column());
            let message = message.strip_suffix(&position).unwrap_or(&message);
            Err(format!("not valid JSON at column {}: {message}", e.column()))
        }
    }
}

/// Builds the `timestamp` column from the time field's text, one value per record.
fn event_times(
    text: &arrow::array::StringArray,
    records: &[(usize, &[u8])],
    options: &EventOptions,
) -> Result<TimestampNanosecondArray> {
    let ingest_nanos = match options.missing_time {
        MissingTime::Reject => None,
        MissingTime::IngestTime(time) => Some(system_time_nanos(time)?),
    };
    let mut nanos = Vec::with_capacity(text.len());
    for (row, value) in text.iter().enumerate() {
        let line = records[row].0;
        let value = match (value, ingest_nanos) {
            (Some(value), _) => parse_event_time(value, options.epoch_unit).map_err(|reason| Error::Event {
                line,
                reason: format!("time field `{}`: {reason}", options.time_field),
            })?,
            (None, Some(ingest)) => ingest,
            (None, None) => {
                let reason = format!("missing time field `{}`", options.time_field);
                return Err(Error::Event { line, reason });
            }
        };
        nanos.push(value);
    }
    Ok(TimestampNanosecondArray::from(nanos).with_timezone(UTC))
}

/// Parses an event time: an integer epoch in `unit`, or an RFC 3339 timestamp.
fn parse_event_time(text: &str, unit: TimeUnit) -> Result<i64, String> {
    let (nanos_per_unit, unit_name) = match unit {
        TimeUnit::Second => (1_000_000_000, "seconds"),
        TimeUnit::Millisecond => (1_000_000, "milliseconds"),
        TimeUnit::Microsecond => (1_000, "microseconds"),
        TimeUnit::Nanosecond => (1, "nanoseconds"),
    };
    if let Ok(epoch) = text.parse::<i64>() {
        return epoch
            .checked_mul(nanos_per_unit)
            .ok_or_else(|| format!("epoch {epoch} ({unit_name}) is out of range for a nanosecond timestamp"));
    }
    string_to_timestamp_nanos(text).map_err(|e| {
        format!(
            "`{text}` is neither an RFC 3339 timestamp nor an integer epoch in {unit_name} ({})",
            arrow_message(e)
        )
    })
}

/// Nanoseconds since the Unix epoch of `time`.
fn system_time_nanos(time: SystemTime) -> Result<i64> {
    let nanos = match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_nanos()).ok(),
        Err(before) => i64::try_from(before.duration().as_nanos()).ok().map(|n| -n),
    };
    nanos.ok_or_else(|| Error::InvalidConfig {
        reason: format!("ingest time {time:?} does not fit a nanosecond timestamp"),
    })
}

/// `schema` with its time column (the `timestamp` field, or else the time field) replaced by
/// the non-null `Timestamp(Nanosecond, "UTC")` column, or that column added first.
fn with_time_column(schema: &Schema, options: &EventOptions) -> Result<SchemaRef> {
    let time_field = options.time_field.as_str();
    let timestamp_idx = schema.index_of(TIMESTAMP).ok();
    let time_field_idx = schema.index_of(time_field).ok();
    let idx = match (timestamp_idx, time_field_idx) {
        (Some(a), Some(b)) if a != b => {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "the event schema has both `{TIMESTAMP}` and the time field `{time_field}`; \
                     `{TIMESTAMP}` is the event-time column, filled from `{time_field}`"
                ),
            });
        }
        (Some(idx), _) | (None, Some(idx)) => Some(idx),
        (None, None) => None,
    };
    let column = Arc::new(Field::new(
        TIMESTAMP,
        DataType::Timestamp(TimeUnit::Nanosecond, Some(UTC.into())),
        false,
    ));
    let mut fields: Vec<FieldRef> = schema.fields().iter().cloned().collect();
    match idx {
        Some(idx) => fields[idx] = column,
        None => fields.insert(0, column),
    }
    Ok(Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())))
}

/// The non-blank lines of `payload` as (1-based line number, text from the first non-blank byte).
fn records(payload: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    payload.split(|&b| b == b'\n').enumerate().filter_map(|(idx, line)| {
        let start = line.iter().position(|&b| !matches!(b, b' ' | b'\t' | b'\r'))?;
        Some((idx + 1, &line[start..]))
    })
}

/// Arrow's message without the "Json error: " prefix its `Display` adds.
fn arrow_message(err: ArrowError) -> String {
    match err {
        ArrowError::JsonError(message) | ArrowError::ParseError(message) => message,
        other => other.to_string(),
    }
}
