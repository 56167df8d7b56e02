//! OTLP → Arrow, directly from the wire, and back.
//!
//! Each signal has a module with the same four functions: `schema()`, `decode()` (protobuf or
//! OTLP/JSON bytes, gzip or not, straight into Arrow builders: no intermediate structs),
//! `from_prost()` (the same conversion from `opentelemetry-proto`'s prost structs, the oracle
//! the direct decoder is tested against) and `to_prost()` (Arrow back to the request).
//!
//! ```
//! use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
//! use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
//! use prost::Message;
//! use wit_batch::{Compression, PayloadFormat, otlp};
//!
//! let request = ExportTraceServiceRequest {
//!     resource_spans: vec![ResourceSpans {
//!         scope_spans: vec![ScopeSpans {
//!             spans: vec![Span { trace_id: vec![1; 16], span_id: vec![2; 8], name: "GET /".into(), ..Default::default() }],
//!             ..Default::default()
//!         }],
//!         ..Default::default()
//!     }],
//! };
//! let bytes = request.encode_to_vec();
//! let spans = otlp::traces::decode(&bytes, PayloadFormat::OtlpProtobuf, Compression::None)?;
//! assert_eq!(spans.num_rows(), 1);
//! assert_eq!(spans.schema(), otlp::traces::schema());
//! let back = otlp::traces::to_prost(&spans)?;
//! assert_eq!(back.resource_spans[0].scope_spans[0].spans[0].name, "GET /");
//! # Ok::<_, wit_batch::Error>(())
//! ```
//!
//! # Tables
//!
//! One row per span ([`traces`]), log record ([`logs`]) or metric data point ([`metrics`]).
//! Times are `Timestamp(Nanosecond, "UTC")` and the `timestamp` column of every table is the
//! event's own time (never the ingest time). Trace ids are `FixedSizeBinary(16)` and span ids
//! `FixedSizeBinary(8)`, null when the request leaves them empty. Enums keep their OTLP numbers.
//!
//! ## Attribute values
//!
//! Attributes are `Map<Utf8, Struct{type: UInt8, str: Utf8, int: Int64, double: Float64,
//! bool: Boolean, bytes: Binary}>`, in the order received (duplicate keys are kept). `type` is
//! the `AnyValue` field number: 0 empty, 1 string, 2 bool, 3 int, 4 double, 5 array,
//! 6 key-value list, 7 bytes, and only the child it names is set. Arrays and key-value lists
//! are stored in `str` as OTLP/JSON text (`[{"stringValue":"a"},{"intValue":"1"}]`,
//! `[{"key":"k","value":{"boolValue":true}}]`), which keeps every type and stays searchable.
//!
//! ## Common columns
//!
//! After its own columns every table carries its resource and scope, denormalized onto each row:
//!
//! | column | type | |
//! |---|---|---|
//! | `service_name` | Utf8, nullable | the resource's `service.name` string attribute, promoted for filtering |
//! | `resource_index` | UInt32 | position of the resource container among the request's containers that have rows |
//! | `resource_attributes` | Map | |
//! | `resource_dropped_attributes_count` | UInt32 | |
//! | `resource_entity_refs` | List<Struct{`schema_url`, `type`, `id_keys`, `description_keys`}> | |
//! | `resource_schema_url` | Utf8 | the container's `schema_url` |
//! | `scope_index` | UInt32 | position of the scope container among its resource container's scope containers that have rows |
//! | `scope_name`, `scope_version` | Utf8 | |
//! | `scope_attributes` | Map | |
//! | `scope_dropped_attributes_count` | UInt32 | |
//! | `scope_schema_url` | Utf8 | the container's `schema_url` |
//!
//! # Lossless
//!
//! `to_prost(decode(x))` equals `x` field for field, with these rules, all about containers
//! and presence rather than data:
//!
//! - a resource or scope container with no records, and a metric with no data points (or no
//!   data), has no row, so it does not come back;
//! - an absent `resource`, `scope`, span `status`, attribute `value` or exponential-histogram
//!   bucket set comes back present and empty (proto3 gives both the same meaning);
//! - unknown fields are skipped, as proto3 receivers do.
//!
//! The `*_strindex` fields, which only OTLP profiles use, are rejected.
//!
//! # Bad input
//!
//! A malformed request — bad protobuf framing, invalid JSON, an id of the wrong length, an
//! unknown enum value, invalid UTF-8, a truncated gzip stream — is rejected whole with an
//! [`Error::Decode`] that names the field path and byte offset (or
//! [`Error::Decompress`]). A payload over [`MAX_PAYLOAD_LEN`](crate::MAX_PAYLOAD_LEN) after
//! decompression is refused with [`Error::PayloadTooLarge`] (or, when compressed,
//! [`Error::Decompress`], before the bomb is inflated). No partial batch is returned: the
//! payload as received stays in the WAL envelope, so nothing already accepted is lost.

mod columns;
mod common;
mod source;
mod value;

pub mod logs;
pub mod metrics;
pub mod traces;

use crate::{Error, PayloadFormat, Result};

/// A table builder: what [`decode`] needs of each signal.
trait Table: Sized {
    /// The fields of `Export*ServiceRequest`, of its resource container and of its scope
    /// container. Every signal numbers them alike: the request's containers are field 1; a
    /// resource container holds its resource (1), scope containers (2) and schema URL (3); a
    /// scope container its scope (1), records (2) and schema URL (3).
    const REQUEST: &'static source::Fields;
    const RESOURCE: &'static source::Fields;
    const SCOPE: &'static source::Fields;
    /// An empty builder sized for a payload of `len` bytes.
    fn for_payload(len: usize) -> Self;
    /// The resource and scope side tables.
    fn common(&mut self) -> &mut common::Common;
    /// Reads the fields of one record (span, log record, metric).
    fn read_record<'a, S: source::Source<'a>>(&mut self, s: &mut S) -> Result<()>;
    /// The finished batch.
    fn into_batch(self) -> Result<arrow::record_batch::RecordBatch>;
}

/// Reads one export request into `table`: its resource and scope containers here, records
/// through [`Table::read_record`].
fn read_request<'a, T: Table, S: source::Source<'a>>(s: &mut S, table: &mut T) -> Result<()> {
    while let Some(tag) = s.next_field(T::REQUEST)? {
        match tag {
            1 => s.message(|s| read_resource_container(s, table))?,
            _ => s.skip()?,
        }
    }
    Ok(())
}

fn read_resource_container<'a, T: Table, S: source::Source<'a>>(s: &mut S, table: &mut T) -> Result<()> {
    table.common().begin_resource();
    while let Some(tag) = s.next_field(T::RESOURCE)? {
        match tag {
            1 => table.common().read_resource(s)?,
            2 => s.message(|s| read_scope_container(s, table))?,
            3 => table.common().set_resource_schema_url(&s.string()?),
            _ => s.skip()?,
        }
    }
    table.common().end_resource();
    Ok(())
}

fn read_scope_container<'a, T: Table, S: source::Source<'a>>(s: &mut S, table: &mut T) -> Result<()> {
    table.common().begin_scope();
    while let Some(tag) = s.next_field(T::SCOPE)? {
        match tag {
            1 => table.common().read_scope(s)?,
            2 => s.message(|s| table.read_record(s))?,
            3 => table.common().set_scope_schema_url(&s.string()?),
            _ => s.skip()?,
        }
    }
    table.common().end_scope();
    Ok(())
}

/// Decompresses, checks and decodes one export request into a `T` table.
///
/// Strings bound for attribute columns are validated as UTF-8 once per column, when it is
/// finished, rather than one by one; if that check fails, a protobuf payload is read again with
/// every string checked as it is read, so that the error names the field and offset (OTLP/JSON
/// was validated whole before reading).
fn decode<T: Table>(
    payload: &[u8],
    format: PayloadFormat,
    compression: crate::Compression,
) -> Result<arrow::record_batch::RecordBatch> {
    let payload = compression.decompress(payload)?;
    check_len(&payload)?;
    let mut table = T::for_payload(payload.len());
    match format {
        PayloadFormat::OtlpProtobuf => {
            source::Proto::new(&payload).top(|s| read_request(s, &mut table))?;
            match table.into_batch() {
                Err(Error::Decode {
                    offset: value::LATE_UTF8,
                    ..
                }) => {
                    let mut table = T::for_payload(payload.len());
                    source::Proto::strict(&payload).top(|s| read_request(s, &mut table))?;
                    table.into_batch()
                }
                done => done,
            }
        }
        PayloadFormat::OtlpJson => {
            source::Json::new(&payload)?.top(|s| read_request(s, &mut table))?;
            table.into_batch()
        }
        other => Err(not_otlp(other)),
    }
}

/// Refuses a payload over [`MAX_PAYLOAD_LEN`](crate::MAX_PAYLOAD_LEN).
fn check_len(payload: &[u8]) -> Result<()> {
    if payload.len() > crate::MAX_PAYLOAD_LEN {
        return Err(Error::PayloadTooLarge {
            len: payload.len(),
            limit: crate::MAX_PAYLOAD_LEN,
        });
    }
    Ok(())
}

fn not_otlp(format: PayloadFormat) -> Error {
    Error::InvalidConfig {
        reason: format!("{format} is not an OTLP payload format"),
    }
}

/// An id from a prost struct: `None` when empty, an error for any length but `N`.
fn prost_id<const N: usize>(bytes: &[u8], what: &str) -> Result<Option<[u8; N]>> {
    if bytes.is_empty() {
        return Ok(None);
    }
    <[u8; N]>::try_from(bytes)
        .map(Some)
        .map_err(|_| value::prost_error(&format!("{what} is {} bytes, expected {N}", bytes.len())))
}

/// Checks a prost enum field against its known values.
fn check_enum(value: i32, values: source::EnumValues, what: &str) -> Result<()> {
    if values.iter().any(|(v, _)| *v == value) {
        Ok(())
    } else {
        Err(value::prost_error(&format!("{what}: unknown enum value {value}")))
    }
}
