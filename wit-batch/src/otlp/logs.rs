//! Log records: `ExportLogsServiceRequest` ⇄ one Arrow row per log record.
//!
//! | column | type | from |
//! |---|---|---|
//! | `timestamp` | Timestamp(ns, UTC) | the event time (derived): `time_unix_nano`, or `observed_time_unix_nano` when that is 0 (unset) |
//! | `time` | Timestamp(ns, UTC), null if 0 | `time_unix_nano` as sent |
//! | `observed_time` | Timestamp(ns, UTC), null if 0 | `observed_time_unix_nano` as sent |
//! | `trace_id` | FixedSizeBinary(16), null if empty | `trace_id` |
//! | `span_id` | FixedSizeBinary(8), null if empty | `span_id` |
//! | `flags` | UInt32 | `flags` |
//! | `severity_number` | Int32 | `severity_number` (0 unspecified, 1–4 trace, 5–8 debug, 9–12 info, 13–16 warn, 17–20 error, 21–24 fatal) |
//! | `severity_text` | Utf8 | `severity_text` |
//! | `body` | the [value struct](super#attribute-values), null when the record has no body | `body` |
//! | `attributes` | Map | `attributes` |
//! | `dropped_attributes_count` | UInt32 | |
//! | `event_name` | Utf8 | `event_name` |
//!
//! followed by the [common resource and scope columns](super#common-columns).
//!
//! `timestamp` is 0 (the Unix epoch) only when both times are unset. `to_prost` reads the two
//! raw columns, so a record keeps exactly the times it was sent with. A `body` that is present
//! but holds no value (OTLP/JSON `"body": {}`) is a non-null struct of type 0, so whether a
//! record had a body survives the round trip too.

use std::borrow::Cow;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, ArrayRef, FixedSizeBinaryArray, Int32Array, StringArray, StringBuilder, TimestampNanosecondArray,
    UInt32Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};

use super::columns::{Columns, IdBuilder, col, id_bytes, optional_timestamps, timestamp_type, timestamps};
use super::common::{Common, CommonReader, common_fields};
use super::source::{EnumValues, Fields, Source};
use super::value::{
    AttrsBuilder, AttrsReader, Value, ValuesBuilder, ValuesReader, attrs_type, push_prost_attrs, read_any_value,
    read_key_value, value_from_prost, value_type,
};
use crate::{Compression, PayloadFormat, Result};

const TABLE: &str = "logs";

static REQUEST: Fields = Fields {
    fields: &[(1, "resourceLogs")],
};
static RESOURCE_LOGS: Fields = Fields {
    fields: &[(1, "resource"), (2, "scopeLogs"), (3, "schemaUrl")],
};
static SCOPE_LOGS: Fields = Fields {
    fields: &[(1, "scope"), (2, "logRecords"), (3, "schemaUrl")],
};
static LOG_RECORD: Fields = Fields {
    fields: &[
        (1, "timeUnixNano"),
        (2, "severityNumber"),
        (3, "severityText"),
        (5, "body"),
        (6, "attributes"),
        (7, "droppedAttributesCount"),
        (8, "flags"),
        (9, "traceId"),
        (10, "spanId"),
        (11, "observedTimeUnixNano"),
        (12, "eventName"),
    ],
};

static SEVERITY_NUMBER: EnumValues = &[
    (0, "SEVERITY_NUMBER_UNSPECIFIED"),
    (1, "SEVERITY_NUMBER_TRACE"),
    (2, "SEVERITY_NUMBER_TRACE2"),
    (3, "SEVERITY_NUMBER_TRACE3"),
    (4, "SEVERITY_NUMBER_TRACE4"),
    (5, "SEVERITY_NUMBER_DEBUG"),
    (6, "SEVERITY_NUMBER_DEBUG2"),
    (7, "SEVERITY_NUMBER_DEBUG3"),
    (8, "SEVERITY_NUMBER_DEBUG4"),
    (9, "SEVERITY_NUMBER_INFO"),
    (10, "SEVERITY_NUMBER_INFO2"),
    (11, "SEVERITY_NUMBER_INFO3"),
    (12, "SEVERITY_NUMBER_INFO4"),
    (13, "SEVERITY_NUMBER_WARN"),
    (14, "SEVERITY_NUMBER_WARN2"),
    (15, "SEVERITY_NUMBER_WARN3"),
    (16, "SEVERITY_NUMBER_WARN4"),
    (17, "SEVERITY_NUMBER_ERROR"),
    (18, "SEVERITY_NUMBER_ERROR2"),
    (19, "SEVERITY_NUMBER_ERROR3"),
    (20, "SEVERITY_NUMBER_ERROR4"),
    (21, "SEVERITY_NUMBER_FATAL"),
    (22, "SEVERITY_NUMBER_FATAL2"),
    (23, "SEVERITY_NUMBER_FATAL3"),
    (24, "SEVERITY_NUMBER_FATAL4"),
];

/// The schema of the logs table.
pub fn schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        let mut fields = vec![
            Field::new("timestamp", timestamp_type(), false),
            Field::new("time", timestamp_type(), true),
            Field::new("observed_time", timestamp_type(), true),
            Field::new("trace_id", DataType::FixedSizeBinary(16), true),
            Field::new("span_id", DataType::FixedSizeBinary(8), true),
            Field::new("flags", DataType::UInt32, false),
            Field::new("severity_number", DataType::Int32, false),
            Field::new("severity_text", DataType::Utf8, false),
            Field::new("body", value_type(), true),
            Field::new("attributes", attrs_type(), false),
            Field::new("dropped_attributes_count", DataType::UInt32, false),
            Field::new("event_name", DataType::Utf8, false),
        ];
        fields.extend(common_fields());
        Arc::new(Schema::new(fields))
    });
    SCHEMA.clone()
}

/// Decodes an `ExportLogsServiceRequest` (protobuf or OTLP/JSON, optionally compressed)
/// straight into one logs batch, without building the request's structs.
///
/// # Errors
///
/// [`Error::Decode`](crate::Error::Decode) naming the field and byte offset for malformed
/// input (the whole request is rejected), [`Error::Decompress`](crate::Error::Decompress) for
/// a corrupt compressed stream, [`Error::PayloadTooLarge`](crate::Error::PayloadTooLarge) over
/// [`MAX_PAYLOAD_LEN`](crate::MAX_PAYLOAD_LEN), and
/// [`Error::InvalidConfig`](crate::Error::InvalidConfig) when `format` is not an OTLP format.
pub fn decode(payload: &[u8], format: PayloadFormat, compression: Compression) -> Result<RecordBatch> {
    super::decode::<LogsBuilder>(payload, format, compression)
}

/// Converts a decoded request (prost structs) into a logs batch: the reference path the
/// direct decoder is tested against, and the way in for hosts that already hold the structs.
///
/// # Errors
///
/// [`Error::Decode`](crate::Error::Decode) for ids of the wrong length, unknown severity
/// numbers or string-table references.
pub fn from_prost(request: &ExportLogsServiceRequest) -> Result<RecordBatch> {
    let mut b = LogsBuilder::default();
    for rl in &request.resource_logs {
        b.common.begin_prost_resource(rl.resource.as_ref(), &rl.schema_url)?;
        for sl in &rl.scope_logs {
            b.common.begin_prost_scope(sl.scope.as_ref(), &sl.schema_url)?;
            for record in &sl.log_records {
                b.push_prost_record(record)?;
            }
            b.common.end_scope();
        }
        b.common.end_resource();
    }
    b.finish()
}

/// Converts a logs batch (as made by [`decode`] or [`from_prost`]) back into a request.
///
/// Rows are grouped into resource and scope containers wherever `resource_index` or
/// `scope_index` changes. See [the round-trip rules](super#lossless).
///
/// # Errors
///
/// [`Error::Schema`](crate::Error::Schema) when the batch lacks a column or has one of
/// another type.
pub fn to_prost(batch: &RecordBatch) -> Result<ExportLogsServiceRequest> {
    let r = LogsReader::new(batch)?;
    let mut request = ExportLogsServiceRequest::default();
    for group in r.common.groups() {
        let mut rl = ResourceLogs {
            resource: Some(r.common.resource(group.row)?),
            scope_logs: Vec::with_capacity(group.scopes.len()),
            schema_url: r.common.resource_schema_url(group.row),
        };
        for rows in group.scopes {
            let first = rows.start;
            let log_records = rows.map(|row| r.record(row)).collect::<Result<Vec<_>>>()?;
            rl.scope_logs.push(ScopeLogs {
                scope: Some(r.common.scope(first)?),
                log_records,
                schema_url: r.common.scope_schema_url(first),
            });
        }
        request.resource_logs.push(rl);
    }
    Ok(request)
}

// --- decoding ---------------------------------------------------------------------------------

/// The scalar fields of a log record and its body, gathered while its attributes go straight
/// to their builder.
#[derive(Default)]
struct LogRow<'a> {
    time: u64,
    observed_time: u64,
    trace_id: Option<[u8; 16]>,
    span_id: Option<[u8; 8]>,
    flags: u32,
    severity_number: i32,
    severity_text: Cow<'a, str>,
    body: Option<Value<'a>>,
    dropped_attributes: u32,
    event_name: Cow<'a, str>,
}

fn read_log_record<'a, S: Source<'a>>(s: &mut S, b: &mut LogsBuilder) -> Result<()> {
    let mut row = LogRow::default();
    while let Some(tag) = s.next_field(&LOG_RECORD)? {
        match tag {
            1 => row.time = s.fixed64()?,
            2 => row.severity_number = s.enumeration(SEVERITY_NUMBER)?,
            3 => row.severity_text = s.string()?,
            5 => {
                let value = read_any_value(s)?;
                match &mut row.body {
                    Some(body) => body.merge(value),
                    None => row.body = Some(value),
                }
            }
            6 => read_key_value(s, &mut b.attrs)?,
            7 => row.dropped_attributes = s.uint32()?,
            8 => row.flags = s.fixed32()?,
            9 => row.trace_id = s.id()?,
            10 => row.span_id = s.id()?,
            11 => row.observed_time = s.fixed64()?,
            12 => row.event_name = s.string()?,
            _ => s.skip()?,
        }
    }
    b.push_row(&row);
    Ok(())
}

// --- building ---------------------------------------------------------------------------------

#[derive(Default)]
struct LogsBuilder {
    common: Common,
    time: Vec<u64>,
    observed_time: Vec<u64>,
    trace_id: IdBuilder<16>,
    span_id: IdBuilder<8>,
    flags: Vec<u32>,
    severity_number: Vec<i32>,
    severity_text: StringBuilder,
    body: ValuesBuilder,
    attrs: AttrsBuilder,
    dropped_attributes: Vec<u32>,
    event_name: StringBuilder,
}

impl LogsBuilder {
    /// A builder with room for what a payload of `len` bytes typically holds (a record with a
    /// body and a dozen attributes is a few hundred bytes), so that the columns rarely
    /// reallocate.
    fn with_capacity_for(len: usize) -> Self {
        let rows = len / 256 + 1;
        let mut b = LogsBuilder::default();
        b.time.reserve(rows);
        b.observed_time.reserve(rows);
        b.flags.reserve(rows);
        b.severity_number.reserve(rows);
        b.dropped_attributes.reserve(rows);
        b.body.reserve(rows, len / 4);
        b.attrs.reserve(rows, rows * 10, len / 2);
        b
    }

    /// Ends a log record: its scalars, its body, and the row of its attribute map.
    fn push_row(&mut self, row: &LogRow<'_>) {
        self.common.push_row();
        self.time.push(row.time);
        self.observed_time.push(row.observed_time);
        self.trace_id.push(row.trace_id);
        self.span_id.push(row.span_id);
        self.flags.push(row.flags);
        self.severity_number.push(row.severity_number);
        self.severity_text.append_value(&row.severity_text);
        match &row.body {
            Some(body) => self.body.push(body),
            None => self.body.push_null(),
        }
        self.attrs.finish_row();
        self.dropped_attributes.push(row.dropped_attributes);
        self.event_name.append_value(&row.event_name);
    }

    fn push_prost_record(&mut self, record: &LogRecord) -> Result<()> {
        use super::prost_id as id;
        super::check_enum(record.severity_number, SEVERITY_NUMBER, "log_record.severity_number")?;
        push_prost_attrs(&mut self.attrs, &record.attributes)?;
        let body = match &record.body {
            Some(body) => Some(value_from_prost(Some(body))?),
            None => None,
        };
        self.push_row(&LogRow {
            time: record.time_unix_nano,
            observed_time: record.observed_time_unix_nano,
            trace_id: id(&record.trace_id, "log_record.trace_id")?,
            span_id: id(&record.span_id, "log_record.span_id")?,
            flags: record.flags,
            severity_number: record.severity_number,
            severity_text: Cow::Borrowed(&record.severity_text),
            body,
            dropped_attributes: record.dropped_attributes_count,
            event_name: Cow::Borrowed(&record.event_name),
        });
        Ok(())
    }

    fn finish(self) -> Result<RecordBatch> {
        let event_time: Vec<u64> = self
            .time
            .iter()
            .zip(&self.observed_time)
            .map(|(&t, &o)| if t != 0 { t } else { o })
            .collect();
        let mut columns: Vec<ArrayRef> = vec![
            timestamps(event_time),
            optional_timestamps(self.time),
            optional_timestamps(self.observed_time),
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(UInt32Array::from(self.flags)),
            Arc::new(Int32Array::from(self.severity_number)),
            Arc::new({ self.severity_text }.finish()),
            Arc::new(self.body.finish()?),
            Arc::new(self.attrs.finish()?),
            Arc::new(UInt32Array::from(self.dropped_attributes)),
            Arc::new({ self.event_name }.finish()),
        ];
        columns.extend(self.common.finish()?);
        Ok(RecordBatch::try_new(schema(), columns)?)
    }
}

impl super::Table for LogsBuilder {
    const REQUEST: &'static Fields = &REQUEST;
    const RESOURCE: &'static Fields = &RESOURCE_LOGS;
    const SCOPE: &'static Fields = &SCOPE_LOGS;

    fn for_payload(len: usize) -> Self {
        LogsBuilder::with_capacity_for(len)
    }

    fn common(&mut self) -> &mut Common {
        &mut self.common
    }

    fn read_record<'a, S: Source<'a>>(&mut self, s: &mut S) -> Result<()> {
        read_log_record(s, self)
    }

    fn into_batch(self) -> Result<RecordBatch> {
        self.finish()
    }
}

// --- Arrow -> prost ---------------------------------------------------------------------------

struct LogsReader<'b> {
    common: CommonReader<'b>,
    time: &'b TimestampNanosecondArray,
    observed_time: &'b TimestampNanosecondArray,
    trace_id: &'b FixedSizeBinaryArray,
    span_id: &'b FixedSizeBinaryArray,
    flags: &'b UInt32Array,
    severity_number: &'b Int32Array,
    severity_text: &'b StringArray,
    body: ValuesReader<'b>,
    attrs: AttrsReader<'b>,
    dropped_attributes: &'b UInt32Array,
    event_name: &'b StringArray,
}

/// The time at `row` of a nullable time column as OTLP nanoseconds (0 when null).
fn optional_time(times: &TimestampNanosecondArray, row: usize) -> u64 {
    if times.is_null(row) { 0 } else { times.value(row) as u64 }
}

impl<'b> LogsReader<'b> {
    fn new(batch: &'b RecordBatch) -> Result<Self> {
        let c = Columns::new(batch, TABLE);
        Ok(LogsReader {
            common: CommonReader::new(batch, TABLE)?,
            time: col(&c, "time")?,
            observed_time: col(&c, "observed_time")?,
            trace_id: col(&c, "trace_id")?,
            span_id: col(&c, "span_id")?,
            flags: col(&c, "flags")?,
            severity_number: col(&c, "severity_number")?,
            severity_text: col(&c, "severity_text")?,
            body: ValuesReader::new(c.get("body")?, TABLE)?,
            attrs: AttrsReader::new(c.get("attributes")?, TABLE)?,
            dropped_attributes: col(&c, "dropped_attributes_count")?,
            event_name: col(&c, "event_name")?,
        })
    }

    fn record(&self, row: usize) -> Result<LogRecord> {
        Ok(LogRecord {
            time_unix_nano: optional_time(self.time, row),
            observed_time_unix_nano: optional_time(self.observed_time, row),
            severity_number: self.severity_number.value(row),
            severity_text: self.severity_text.value(row).to_owned(),
            body: self.body.get(row)?,
            attributes: self.attrs.get(row)?,
            dropped_attributes_count: self.dropped_attributes.value(row),
            flags: self.flags.value(row),
            trace_id: id_bytes(self.trace_id, row),
            span_id: id_bytes(self.span_id, row),
            event_name: self.event_name.value(row).to_owned(),
        })
    }
}
