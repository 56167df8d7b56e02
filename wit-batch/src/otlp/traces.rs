//! Spans: `ExportTraceServiceRequest` ⇄ one Arrow row per span.
//!
//! | column | type | from |
//! |---|---|---|
//! | `timestamp` | Timestamp(ns, UTC) | `start_time_unix_nano` (the event time) |
//! | `end_time` | Timestamp(ns, UTC) | `end_time_unix_nano` |
//! | `duration` | Duration(ns) | end − start (derived) |
//! | `trace_id` | FixedSizeBinary(16), null if empty | `trace_id` |
//! | `span_id` | FixedSizeBinary(8), null if empty | `span_id` |
//! | `parent_span_id` | FixedSizeBinary(8), null for a root span | `parent_span_id` |
//! | `trace_state` | Utf8 | `trace_state` |
//! | `flags` | UInt32 | `flags` |
//! | `name` | Utf8 | `name` |
//! | `kind` | Int32 | `kind` (0 unspecified, 1 internal, 2 server, 3 client, 4 producer, 5 consumer) |
//! | `status_code` | Int32 | `status.code` (0 unset, 1 ok, 2 error) |
//! | `status_message` | Utf8 | `status.message` |
//! | `attributes` | Map | `attributes` |
//! | `dropped_attributes_count` | UInt32 | |
//! | `events` | List<Struct{`time`, `name`, `attributes`, `dropped_attributes_count`}> | `events` |
//! | `dropped_events_count` | UInt32 | |
//! | `links` | List<Struct{`trace_id`, `span_id`, `trace_state`, `attributes`, `dropped_attributes_count`, `flags`}> | `links` |
//! | `dropped_links_count` | UInt32 | |
//!
//! followed by the [common resource and scope columns](super#common-columns).

use std::borrow::Cow;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, ArrayRef, DurationNanosecondArray, FixedSizeBinaryArray, Int32Array, ListArray, StringArray, StringBuilder,
    StructArray, TimestampNanosecondArray, UInt32Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Fields as ArrowFields, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};

use super::columns::{Columns, IdBuilder, col, id_bytes, timestamp_type, timestamps};
use super::common::{Common, CommonReader, common_fields, offset};
use super::source::{EnumValues, Fields, Source};
use super::value::{AttrsBuilder, AttrsReader, attrs_type, push_prost_attrs, read_key_value};
use crate::{Compression, Error, PayloadFormat, Result};

const TABLE: &str = "spans";

static REQUEST: Fields = Fields {
    fields: &[(1, "resourceSpans")],
};
static RESOURCE_SPANS: Fields = Fields {
    fields: &[(1, "resource"), (2, "scopeSpans"), (3, "schemaUrl")],
};
static SCOPE_SPANS: Fields = Fields {
    fields: &[(1, "scope"), (2, "spans"), (3, "schemaUrl")],
};
static SPAN: Fields = Fields {
    fields: &[
        (1, "traceId"),
        (2, "spanId"),
        (3, "traceState"),
        (4, "parentSpanId"),
        (5, "name"),
        (6, "kind"),
        (7, "startTimeUnixNano"),
        (8, "endTimeUnixNano"),
        (9, "attributes"),
        (10, "droppedAttributesCount"),
        (11, "events"),
        (12, "droppedEventsCount"),
        (13, "links"),
        (14, "droppedLinksCount"),
        (15, "status"),
        (16, "flags"),
    ],
};
static EVENT: Fields = Fields {
    fields: &[
        (1, "timeUnixNano"),
        (2, "name"),
        (3, "attributes"),
        (4, "droppedAttributesCount"),
    ],
};
static LINK: Fields = Fields {
    fields: &[
        (1, "traceId"),
        (2, "spanId"),
        (3, "traceState"),
        (4, "attributes"),
        (5, "droppedAttributesCount"),
        (6, "flags"),
    ],
};
static STATUS: Fields = Fields {
    fields: &[(2, "message"), (3, "code")],
};

static SPAN_KIND: EnumValues = &[
    (0, "SPAN_KIND_UNSPECIFIED"),
    (1, "SPAN_KIND_INTERNAL"),
    (2, "SPAN_KIND_SERVER"),
    (3, "SPAN_KIND_CLIENT"),
    (4, "SPAN_KIND_PRODUCER"),
    (5, "SPAN_KIND_CONSUMER"),
];
static STATUS_CODE: EnumValues = &[
    (0, "STATUS_CODE_UNSET"),
    (1, "STATUS_CODE_OK"),
    (2, "STATUS_CODE_ERROR"),
];

fn event_fields() -> ArrowFields {
    ArrowFields::from(vec![
        Field::new("time", timestamp_type(), false),
        Field::new("name", DataType::Utf8, false),
        Field::new("attributes", attrs_type(), false),
        Field::new("dropped_attributes_count", DataType::UInt32, false),
    ])
}

fn link_fields() -> ArrowFields {
    ArrowFields::from(vec![
        Field::new("trace_id", DataType::FixedSizeBinary(16), true),
        Field::new("span_id", DataType::FixedSizeBinary(8), true),
        Field::new("trace_state", DataType::Utf8, false),
        Field::new("attributes", attrs_type(), false),
        Field::new("dropped_attributes_count", DataType::UInt32, false),
        Field::new("flags", DataType::UInt32, false),
    ])
}

fn list_of(fields: ArrowFields) -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Struct(fields), false)))
}

/// The schema of the spans table.
pub fn schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        let mut fields = vec![
            Field::new("timestamp", timestamp_type(), false),
            Field::new("end_time", timestamp_type(), false),
            Field::new("duration", DataType::Duration(TimeUnit::Nanosecond), false),
            Field::new("trace_id", DataType::FixedSizeBinary(16), true),
            Field::new("span_id", DataType::FixedSizeBinary(8), true),
            Field::new("parent_span_id", DataType::FixedSizeBinary(8), true),
            Field::new("trace_state", DataType::Utf8, false),
            Field::new("flags", DataType::UInt32, false),
            Field::new("name", DataType::Utf8, false),
            Field::new("kind", DataType::Int32, false),
            Field::new("status_code", DataType::Int32, false),
            Field::new("status_message", DataType::Utf8, false),
            Field::new("attributes", attrs_type(), false),
            Field::new("dropped_attributes_count", DataType::UInt32, false),
            Field::new("events", list_of(event_fields()), false),
            Field::new("dropped_events_count", DataType::UInt32, false),
            Field::new("links", list_of(link_fields()), false),
            Field::new("dropped_links_count", DataType::UInt32, false),
        ];
        fields.extend(common_fields());
        Arc::new(Schema::new(fields))
    });
    SCHEMA.clone()
}

/// Decodes an `ExportTraceServiceRequest` (protobuf or OTLP/JSON, optionally compressed)
/// straight into one spans batch, without building the request's structs.
///
/// # Errors
///
/// [`Error::Decode`] naming the field and byte offset for malformed input (the whole request
/// is rejected), [`Error::Decompress`] for a corrupt compressed stream,
/// [`Error::PayloadTooLarge`] over [`MAX_PAYLOAD_LEN`](crate::MAX_PAYLOAD_LEN), and
/// [`Error::InvalidConfig`] when `format` is not an OTLP format.
pub fn decode(payload: &[u8], format: PayloadFormat, compression: Compression) -> Result<RecordBatch> {
    super::decode::<SpansBuilder>(payload, format, compression)
}

/// Converts a decoded request (prost structs) into a spans batch: the reference path the
/// direct decoder is tested against, and the way in for hosts that already hold the structs.
///
/// # Errors
///
/// [`Error::Decode`] for ids of the wrong length or string-table references.
pub fn from_prost(request: &ExportTraceServiceRequest) -> Result<RecordBatch> {
    let mut b = SpansBuilder::default();
    for rs in &request.resource_spans {
        b.common.begin_prost_resource(rs.resource.as_ref(), &rs.schema_url)?;
        for ss in &rs.scope_spans {
            b.common.begin_prost_scope(ss.scope.as_ref(), &ss.schema_url)?;
            for span in &ss.spans {
                b.push_prost_span(span)?;
            }
            b.common.end_scope();
        }
        b.common.end_resource();
    }
    b.finish()
}

/// Converts a spans batch (as made by [`decode`] or [`from_prost`]) back into a request.
///
/// Rows are grouped into resource and scope containers wherever `resource_index` or
/// `scope_index` changes. See [the round-trip rules](super#lossless).
///
/// # Errors
///
/// [`Error::Schema`] when the batch lacks a column or has one of another type.
pub fn to_prost(batch: &RecordBatch) -> Result<ExportTraceServiceRequest> {
    let r = SpansReader::new(batch)?;
    let mut request = ExportTraceServiceRequest::default();
    for group in r.common.groups() {
        let mut rs = ResourceSpans {
            resource: Some(r.common.resource(group.row)?),
            scope_spans: Vec::with_capacity(group.scopes.len()),
            schema_url: r.common.resource_schema_url(group.row),
        };
        for rows in group.scopes {
            let first = rows.start;
            let spans = rows.map(|row| r.span(row)).collect::<Result<Vec<_>>>()?;
            rs.scope_spans.push(ScopeSpans {
                scope: Some(r.common.scope(first)?),
                spans,
                schema_url: r.common.scope_schema_url(first),
            });
        }
        request.resource_spans.push(rs);
    }
    Ok(request)
}

// --- decoding ---------------------------------------------------------------------------------

/// The scalar fields of a span, gathered while its repeated fields go straight to builders.
#[derive(Default)]
struct SpanRow<'a> {
    trace_id: Option<[u8; 16]>,
    span_id: Option<[u8; 8]>,
    parent_span_id: Option<[u8; 8]>,
    trace_state: Cow<'a, str>,
    flags: u32,
    name: Cow<'a, str>,
    kind: i32,
    start: u64,
    end: u64,
    dropped_attributes: u32,
    dropped_events: u32,
    dropped_links: u32,
    status_code: i32,
    status_message: Cow<'a, str>,
}

fn read_span<'a, S: Source<'a>>(s: &mut S, b: &mut SpansBuilder) -> Result<()> {
    let mut row = SpanRow::default();
    while let Some(tag) = s.next_field(&SPAN)? {
        match tag {
            1 => row.trace_id = s.id()?,
            2 => row.span_id = s.id()?,
            3 => row.trace_state = s.string()?,
            4 => row.parent_span_id = s.id()?,
            5 => row.name = s.string()?,
            6 => row.kind = s.enumeration(SPAN_KIND)?,
            7 => row.start = s.fixed64()?,
            8 => row.end = s.fixed64()?,
            9 => read_key_value(s, &mut b.attrs)?,
            10 => row.dropped_attributes = s.uint32()?,
            11 => s.message(|s| read_event(s, &mut b.events))?,
            12 => row.dropped_events = s.uint32()?,
            13 => s.message(|s| read_link(s, &mut b.links))?,
            14 => row.dropped_links = s.uint32()?,
            15 => s.message(|s| {
                while let Some(tag) = s.next_field(&STATUS)? {
                    match tag {
                        2 => row.status_message = s.string()?,
                        3 => row.status_code = s.enumeration(STATUS_CODE)?,
                        _ => s.skip()?,
                    }
                }
                Ok(())
            })?,
            16 => row.flags = s.fixed32()?,
            _ => s.skip()?,
        }
    }
    b.push_row(&row);
    Ok(())
}

fn read_event<'a, S: Source<'a>>(s: &mut S, e: &mut EventsBuilder) -> Result<()> {
    let (mut time, mut name, mut dropped) = (0, Cow::Borrowed(""), 0);
    while let Some(tag) = s.next_field(&EVENT)? {
        match tag {
            1 => time = s.fixed64()?,
            2 => name = s.string()?,
            3 => read_key_value(s, &mut e.attrs)?,
            4 => dropped = s.uint32()?,
            _ => s.skip()?,
        }
    }
    e.push(time, &name, dropped);
    Ok(())
}

fn read_link<'a, S: Source<'a>>(s: &mut S, l: &mut LinksBuilder) -> Result<()> {
    let (mut trace_id, mut span_id, mut state, mut dropped, mut flags) = (None, None, Cow::Borrowed(""), 0, 0);
    while let Some(tag) = s.next_field(&LINK)? {
        match tag {
            1 => trace_id = s.id()?,
            2 => span_id = s.id()?,
            3 => state = s.string()?,
            4 => read_key_value(s, &mut l.attrs)?,
            5 => dropped = s.uint32()?,
            6 => flags = s.fixed32()?,
            _ => s.skip()?,
        }
    }
    l.push(trace_id, span_id, &state, dropped, flags);
    Ok(())
}

// --- building ---------------------------------------------------------------------------------

#[derive(Default)]
struct EventsBuilder {
    time: Vec<u64>,
    name: StringBuilder,
    attrs: AttrsBuilder,
    dropped: Vec<u32>,
    offsets: Vec<i32>,
}

impl EventsBuilder {
    fn push(&mut self, time: u64, name: &str, dropped: u32) {
        self.time.push(time);
        self.name.append_value(name);
        self.attrs.finish_row();
        self.dropped.push(dropped);
    }

    fn finish_row(&mut self) {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        self.offsets.push(offset(self.time.len()));
    }

    fn finish(mut self) -> Result<ListArray> {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        let values = StructArray::new(
            event_fields(),
            vec![
                timestamps(self.time),
                Arc::new(self.name.finish()),
                Arc::new(self.attrs.finish()?),
                Arc::new(UInt32Array::from(self.dropped)),
            ],
            None,
        );
        Ok(ListArray::new(
            Arc::new(Field::new_list_field(DataType::Struct(event_fields()), false)),
            OffsetBuffer::new(self.offsets.into()),
            Arc::new(values),
            None,
        ))
    }
}

#[derive(Default)]
struct LinksBuilder {
    trace_id: IdBuilder<16>,
    span_id: IdBuilder<8>,
    state: StringBuilder,
    attrs: AttrsBuilder,
    dropped: Vec<u32>,
    flags: Vec<u32>,
    offsets: Vec<i32>,
}

impl LinksBuilder {
    fn push(&mut self, trace_id: Option<[u8; 16]>, span_id: Option<[u8; 8]>, state: &str, dropped: u32, flags: u32) {
        self.trace_id.push(trace_id);
        self.span_id.push(span_id);
        self.state.append_value(state);
        self.attrs.finish_row();
        self.dropped.push(dropped);
        self.flags.push(flags);
    }

    fn finish_row(&mut self) {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        self.offsets.push(offset(self.flags.len()));
    }

    fn finish(mut self) -> Result<ListArray> {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        let values = StructArray::new(
            link_fields(),
            vec![
                Arc::new(self.trace_id.finish()),
                Arc::new(self.span_id.finish()),
                Arc::new(self.state.finish()),
                Arc::new(self.attrs.finish()?),
                Arc::new(UInt32Array::from(self.dropped)),
                Arc::new(UInt32Array::from(self.flags)),
            ],
            None,
        );
        Ok(ListArray::new(
            Arc::new(Field::new_list_field(DataType::Struct(link_fields()), false)),
            OffsetBuffer::new(self.offsets.into()),
            Arc::new(values),
            None,
        ))
    }
}

#[derive(Default)]
struct SpansBuilder {
    common: Common,
    start: Vec<u64>,
    end: Vec<u64>,
    trace_id: IdBuilder<16>,
    span_id: IdBuilder<8>,
    parent_span_id: IdBuilder<8>,
    trace_state: StringBuilder,
    flags: Vec<u32>,
    name: StringBuilder,
    kind: Vec<i32>,
    status_code: Vec<i32>,
    status_message: StringBuilder,
    attrs: AttrsBuilder,
    dropped_attributes: Vec<u32>,
    events: EventsBuilder,
    dropped_events: Vec<u32>,
    links: LinksBuilder,
    dropped_links: Vec<u32>,
}

impl SpansBuilder {
    /// A builder with room for what a payload of `len` bytes typically holds (a span with a
    /// dozen attributes is a few hundred bytes), so that the columns rarely reallocate.
    fn with_capacity_for(len: usize) -> Self {
        let rows = len / 256 + 1;
        let mut b = SpansBuilder::default();
        b.start.reserve(rows);
        b.end.reserve(rows);
        b.flags.reserve(rows);
        b.kind.reserve(rows);
        b.status_code.reserve(rows);
        b.dropped_attributes.reserve(rows);
        b.dropped_events.reserve(rows);
        b.dropped_links.reserve(rows);
        b.attrs.reserve(rows, rows * 10, len / 2);
        b
    }

    /// Ends a span: its scalars, and the rows of its attribute, event and link lists.
    fn push_row(&mut self, row: &SpanRow<'_>) {
        self.common.push_row();
        self.start.push(row.start);
        self.end.push(row.end);
        self.trace_id.push(row.trace_id);
        self.span_id.push(row.span_id);
        self.parent_span_id.push(row.parent_span_id);
        self.trace_state.append_value(&row.trace_state);
        self.flags.push(row.flags);
        self.name.append_value(&row.name);
        self.kind.push(row.kind);
        self.status_code.push(row.status_code);
        self.status_message.append_value(&row.status_message);
        self.attrs.finish_row();
        self.dropped_attributes.push(row.dropped_attributes);
        self.events.finish_row();
        self.dropped_events.push(row.dropped_events);
        self.links.finish_row();
        self.dropped_links.push(row.dropped_links);
    }

    fn push_prost_span(&mut self, span: &Span) -> Result<()> {
        use super::prost_id as id;
        let status = span.status.clone().unwrap_or_default();
        super::check_enum(span.kind, SPAN_KIND, "span.kind")?;
        super::check_enum(status.code, STATUS_CODE, "span.status.code")?;
        push_prost_attrs(&mut self.attrs, &span.attributes)?;
        for e in &span.events {
            push_prost_attrs(&mut self.events.attrs, &e.attributes)?;
            self.events.push(e.time_unix_nano, &e.name, e.dropped_attributes_count);
        }
        for l in &span.links {
            push_prost_attrs(&mut self.links.attrs, &l.attributes)?;
            self.links.push(
                id(&l.trace_id, "link.trace_id")?,
                id(&l.span_id, "link.span_id")?,
                &l.trace_state,
                l.dropped_attributes_count,
                l.flags,
            );
        }
        self.push_row(&SpanRow {
            trace_id: id(&span.trace_id, "trace_id")?,
            span_id: id(&span.span_id, "span_id")?,
            parent_span_id: id(&span.parent_span_id, "parent_span_id")?,
            trace_state: Cow::Borrowed(&span.trace_state),
            flags: span.flags,
            name: Cow::Borrowed(&span.name),
            kind: span.kind,
            start: span.start_time_unix_nano,
            end: span.end_time_unix_nano,
            dropped_attributes: span.dropped_attributes_count,
            dropped_events: span.dropped_events_count,
            dropped_links: span.dropped_links_count,
            status_code: status.code,
            status_message: Cow::Owned(status.message),
        });
        Ok(())
    }

    fn finish(self) -> Result<RecordBatch> {
        let duration: Vec<i64> = self
            .start
            .iter()
            .zip(&self.end)
            .map(|(s, e)| (*e as i64).wrapping_sub(*s as i64))
            .collect();
        let mut columns: Vec<ArrayRef> = vec![
            timestamps(self.start),
            timestamps(self.end),
            Arc::new(DurationNanosecondArray::from(duration)),
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.parent_span_id.finish()),
            Arc::new({ self.trace_state }.finish()),
            Arc::new(UInt32Array::from(self.flags)),
            Arc::new({ self.name }.finish()),
            Arc::new(Int32Array::from(self.kind)),
            Arc::new(Int32Array::from(self.status_code)),
            Arc::new({ self.status_message }.finish()),
            Arc::new(self.attrs.finish()?),
            Arc::new(UInt32Array::from(self.dropped_attributes)),
            Arc::new(self.events.finish()?),
            Arc::new(UInt32Array::from(self.dropped_events)),
            Arc::new(self.links.finish()?),
            Arc::new(UInt32Array::from(self.dropped_links)),
        ];
        columns.extend(self.common.finish()?);
        Ok(RecordBatch::try_new(schema(), columns)?)
    }
}

impl super::Table for SpansBuilder {
    const REQUEST: &'static Fields = &REQUEST;
    const RESOURCE: &'static Fields = &RESOURCE_SPANS;
    const SCOPE: &'static Fields = &SCOPE_SPANS;

    fn for_payload(len: usize) -> Self {
        SpansBuilder::with_capacity_for(len)
    }

    fn common(&mut self) -> &mut Common {
        &mut self.common
    }

    fn read_record<'a, S: Source<'a>>(&mut self, s: &mut S) -> Result<()> {
        read_span(s, self)
    }

    fn into_batch(self) -> Result<RecordBatch> {
        self.finish()
    }
}

// --- Arrow -> prost ---------------------------------------------------------------------------

struct SpansReader<'b> {
    common: CommonReader<'b>,
    start: &'b TimestampNanosecondArray,
    end: &'b TimestampNanosecondArray,
    trace_id: &'b FixedSizeBinaryArray,
    span_id: &'b FixedSizeBinaryArray,
    parent_span_id: &'b FixedSizeBinaryArray,
    trace_state: &'b StringArray,
    flags: &'b UInt32Array,
    name: &'b StringArray,
    kind: &'b Int32Array,
    status_code: &'b Int32Array,
    status_message: &'b StringArray,
    attrs: AttrsReader<'b>,
    dropped_attributes: &'b UInt32Array,
    events: &'b ListArray,
    event_time: &'b TimestampNanosecondArray,
    event_name: &'b StringArray,
    event_attrs: AttrsReader<'b>,
    event_dropped: &'b UInt32Array,
    dropped_events: &'b UInt32Array,
    links: &'b ListArray,
    link_trace_id: &'b FixedSizeBinaryArray,
    link_span_id: &'b FixedSizeBinaryArray,
    link_state: &'b StringArray,
    link_attrs: AttrsReader<'b>,
    link_dropped: &'b UInt32Array,
    link_flags: &'b UInt32Array,
    dropped_links: &'b UInt32Array,
}

fn child<'b, T: 'static>(s: &'b StructArray, name: &str) -> Result<&'b T> {
    s.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| Error::Schema {
            table: TABLE,
            reason: format!("nested field `{name}` is missing or mistyped"),
        })
}

impl<'b> SpansReader<'b> {
    fn new(batch: &'b RecordBatch) -> Result<Self> {
        let c = Columns::new(batch, TABLE);
        let events: &ListArray = col(&c, "events")?;
        let links: &ListArray = col(&c, "links")?;
        let bad = |what: &str| Error::Schema {
            table: TABLE,
            reason: format!("`{what}` is not a list of structs"),
        };
        let ev = events
            .values()
            .as_any()
            .downcast_ref::<StructArray>()
            .ok_or_else(|| bad("events"))?;
        let lk = links
            .values()
            .as_any()
            .downcast_ref::<StructArray>()
            .ok_or_else(|| bad("links"))?;
        Ok(SpansReader {
            common: CommonReader::new(batch, TABLE)?,
            start: col(&c, "timestamp")?,
            end: col(&c, "end_time")?,
            trace_id: col(&c, "trace_id")?,
            span_id: col(&c, "span_id")?,
            parent_span_id: col(&c, "parent_span_id")?,
            trace_state: col(&c, "trace_state")?,
            flags: col(&c, "flags")?,
            name: col(&c, "name")?,
            kind: col(&c, "kind")?,
            status_code: col(&c, "status_code")?,
            status_message: col(&c, "status_message")?,
            attrs: AttrsReader::new(c.get("attributes")?, TABLE)?,
            dropped_attributes: col(&c, "dropped_attributes_count")?,
            events,
            event_time: child(ev, "time")?,
            event_name: child(ev, "name")?,
            event_attrs: AttrsReader::new(ev.column_by_name("attributes").ok_or_else(|| bad("events"))?, TABLE)?,
            event_dropped: child(ev, "dropped_attributes_count")?,
            dropped_events: col(&c, "dropped_events_count")?,
            links,
            link_trace_id: child(lk, "trace_id")?,
            link_span_id: child(lk, "span_id")?,
            link_state: child(lk, "trace_state")?,
            link_attrs: AttrsReader::new(lk.column_by_name("attributes").ok_or_else(|| bad("links"))?, TABLE)?,
            link_dropped: child(lk, "dropped_attributes_count")?,
            link_flags: child(lk, "flags")?,
            dropped_links: col(&c, "dropped_links_count")?,
        })
    }

    fn span(&self, row: usize) -> Result<Span> {
        let range = |l: &ListArray| {
            let o = l.value_offsets();
            o[row] as usize..o[row + 1] as usize
        };
        let events = range(self.events)
            .map(|i| {
                Ok(span::Event {
                    time_unix_nano: self.event_time.value(i) as u64,
                    name: self.event_name.value(i).to_owned(),
                    attributes: self.event_attrs.get(i)?,
                    dropped_attributes_count: self.event_dropped.value(i),
                })
            })
            .collect::<Result<_>>()?;
        let links = range(self.links)
            .map(|i| {
                Ok(span::Link {
                    trace_id: id_bytes(self.link_trace_id, i),
                    span_id: id_bytes(self.link_span_id, i),
                    trace_state: self.link_state.value(i).to_owned(),
                    attributes: self.link_attrs.get(i)?,
                    dropped_attributes_count: self.link_dropped.value(i),
                    flags: self.link_flags.value(i),
                })
            })
            .collect::<Result<_>>()?;
        Ok(Span {
            trace_id: id_bytes(self.trace_id, row),
            span_id: id_bytes(self.span_id, row),
            trace_state: self.trace_state.value(row).to_owned(),
            parent_span_id: id_bytes(self.parent_span_id, row),
            flags: self.flags.value(row),
            name: self.name.value(row).to_owned(),
            kind: self.kind.value(row),
            start_time_unix_nano: self.start.value(row) as u64,
            end_time_unix_nano: self.end.value(row) as u64,
            attributes: self.attrs.get(row)?,
            dropped_attributes_count: self.dropped_attributes.value(row),
            events,
            dropped_events_count: self.dropped_events.value(row),
            links,
            dropped_links_count: self.dropped_links.value(row),
            status: Some(Status {
                message: self.status_message.value(row).to_owned(),
                code: self.status_code.value(row),
            }),
        })
    }
}
