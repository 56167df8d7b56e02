//! Metric data points: `ExportMetricsServiceRequest` ⇄ one Arrow row per data point.
//!
//! | column | type | from |
//! |---|---|---|
//! | `timestamp` | Timestamp(ns, UTC) | `time_unix_nano` (the event time) |
//! | `start_timestamp` | Timestamp(ns, UTC), null when 0 | `start_time_unix_nano` |
//! | `metric_index` | UInt32 | position of the metric among its scope container's metrics that have data points; the rows of one metric are consecutive |
//! | `metric_name` | Utf8 | metric `name` |
//! | `metric_description` | Utf8 | metric `description` |
//! | `metric_unit` | Utf8 | metric `unit` |
//! | `metric_metadata` | Map | metric `metadata` |
//! | `metric_type` | UInt8 | the metric's `data` oneof field number: 5 gauge, 7 sum, 9 histogram, 10 exponential histogram, 11 summary |
//! | `aggregation_temporality` | Int32, null for gauge and summary | `aggregation_temporality` (0 unspecified, 1 delta, 2 cumulative) |
//! | `is_monotonic` | Boolean, null but for sum | `is_monotonic` |
//! | `attributes` | Map | data point `attributes` |
//! | `flags` | UInt32 | data point `flags` |
//! | `value_double` | Float64, null | number data point `as_double` |
//! | `value_int` | Int64, null | number data point `as_int` (both null when neither is set) |
//! | `count` | UInt64, null | histogram, exponential histogram and summary `count` |
//! | `sum` | Float64, null | histogram and exponential histogram `sum` (optional there), summary `sum` |
//! | `min`, `max` | Float64, null | histogram and exponential histogram `min`, `max` (optional) |
//! | `bucket_counts` | `List<UInt64>`, null but for histogram | histogram `bucket_counts` |
//! | `explicit_bounds` | `List<Float64>`, null but for histogram | histogram `explicit_bounds` |
//! | `scale` | Int32, null | exponential histogram `scale` |
//! | `zero_count` | UInt64, null | exponential histogram `zero_count` |
//! | `zero_threshold` | Float64, null | exponential histogram `zero_threshold` |
//! | `positive_offset` | Int32, null | exponential histogram `positive.offset` |
//! | `positive_bucket_counts` | `List<UInt64>`, null | exponential histogram `positive.bucket_counts` |
//! | `negative_offset` | Int32, null | exponential histogram `negative.offset` |
//! | `negative_bucket_counts` | `List<UInt64>`, null | exponential histogram `negative.bucket_counts` |
//! | `quantile_values` | List<Struct{`quantile`, `value`}>, null but for summary | summary `quantile_values` |
//! | `exemplars` | List<Struct{`time`, `value_double`, `value_int`, `span_id`, `trace_id`, `filtered_attributes`}> | `exemplars` (empty for summary) |
//!
//! followed by the [common resource and scope columns](super#common-columns).
//!
//! A column that does not apply to a row's metric type is null. In `exemplars`, `time` is a
//! Timestamp(ns, UTC), `value_double`/`value_int` are the `value` oneof (both null when unset),
//! `span_id`/`trace_id` are FixedSizeBinary(8)/(16), null when empty, and
//! `filtered_attributes` is a Map.
//!
//! A metric's `data` oneof decodes as protobuf defines it: the last member present wins, and
//! repeated occurrences of that member merge. OTLP/JSON, where a oneof holds one member, rejects
//! a second one.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, BooleanArray, FixedSizeBinaryArray, Float64Array, Float64Builder, Int32Array,
    Int32Builder, Int64Array, Int64Builder, ListArray, PrimitiveArray, StringArray, StringBuilder, StructArray,
    TimestampNanosecondArray, UInt8Array, UInt32Array, UInt64Array, UInt64Builder,
};
use arrow::buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::compute::take;
use arrow::datatypes::{DataType, Field, Fields as ArrowFields, Float64Type, Schema, SchemaRef, UInt64Type};
use arrow::record_batch::RecordBatch;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{
    Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric,
    NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint, exemplar,
    exponential_histogram_data_point::Buckets, metric, number_data_point, summary_data_point::ValueAtQuantile,
};

use super::columns::{Columns, IdBuilder, col, id_bytes, optional_timestamps, timestamp_type, timestamps};
use super::common::{Common, CommonReader, common_fields, dense_positions, offset};
use super::source::{EnumValues, Fields, Source};
use super::value::{AttrsBuilder, AttrsReader, attrs_type, push_prost_attrs, read_key_value};
use crate::{Compression, Error, PayloadFormat, Result};

const TABLE: &str = "metrics";

/// `metric_type` values: the field numbers of the `Metric.data` oneof.
const GAUGE: u8 = 5;
const SUM: u8 = 7;
const HISTOGRAM: u8 = 9;
const EXPONENTIAL_HISTOGRAM: u8 = 10;
const SUMMARY: u8 = 11;
const DATA_TAGS: &[u32] = &[5, 7, 9, 10, 11];

static REQUEST: Fields = Fields {
    fields: &[(1, "resourceMetrics")],
};
static RESOURCE_METRICS: Fields = Fields {
    fields: &[(1, "resource"), (2, "scopeMetrics"), (3, "schemaUrl")],
};
static SCOPE_METRICS: Fields = Fields {
    fields: &[(1, "scope"), (2, "metrics"), (3, "schemaUrl")],
};
static METRIC: Fields = Fields {
    fields: &[
        (1, "name"),
        (2, "description"),
        (3, "unit"),
        (5, "gauge"),
        (7, "sum"),
        (9, "histogram"),
        (10, "exponentialHistogram"),
        (11, "summary"),
        (12, "metadata"),
    ],
};
/// `Gauge`, `Sum`, `Histogram`, `ExponentialHistogram` and `Summary` (each uses a prefix of these).
static DATA: Fields = Fields {
    fields: &[(1, "dataPoints"), (2, "aggregationTemporality"), (3, "isMonotonic")],
};
static NUMBER_POINT: Fields = Fields {
    fields: &[
        (2, "startTimeUnixNano"),
        (3, "timeUnixNano"),
        (4, "asDouble"),
        (5, "exemplars"),
        (6, "asInt"),
        (7, "attributes"),
        (8, "flags"),
    ],
};
static HISTOGRAM_POINT: Fields = Fields {
    fields: &[
        (2, "startTimeUnixNano"),
        (3, "timeUnixNano"),
        (4, "count"),
        (5, "sum"),
        (6, "bucketCounts"),
        (7, "explicitBounds"),
        (8, "exemplars"),
        (9, "attributes"),
        (10, "flags"),
        (11, "min"),
        (12, "max"),
    ],
};
static EXPONENTIAL_POINT: Fields = Fields {
    fields: &[
        (1, "attributes"),
        (2, "startTimeUnixNano"),
        (3, "timeUnixNano"),
        (4, "count"),
        (5, "sum"),
        (6, "scale"),
        (7, "zeroCount"),
        (8, "positive"),
        (9, "negative"),
        (10, "flags"),
        (11, "exemplars"),
        (12, "min"),
        (13, "max"),
        (14, "zeroThreshold"),
    ],
};
static BUCKETS: Fields = Fields {
    fields: &[(1, "offset"), (2, "bucketCounts")],
};
static SUMMARY_POINT: Fields = Fields {
    fields: &[
        (2, "startTimeUnixNano"),
        (3, "timeUnixNano"),
        (4, "count"),
        (5, "sum"),
        (6, "quantileValues"),
        (7, "attributes"),
        (8, "flags"),
    ],
};
static VALUE_AT_QUANTILE: Fields = Fields {
    fields: &[(1, "quantile"), (2, "value")],
};
static EXEMPLAR: Fields = Fields {
    fields: &[
        (2, "timeUnixNano"),
        (3, "asDouble"),
        (4, "spanId"),
        (5, "traceId"),
        (6, "asInt"),
        (7, "filteredAttributes"),
    ],
};

static AGGREGATION_TEMPORALITY: EnumValues = &[
    (0, "AGGREGATION_TEMPORALITY_UNSPECIFIED"),
    (1, "AGGREGATION_TEMPORALITY_DELTA"),
    (2, "AGGREGATION_TEMPORALITY_CUMULATIVE"),
];

fn quantile_fields() -> ArrowFields {
    ArrowFields::from(vec![
        Field::new("quantile", DataType::Float64, false),
        Field::new("value", DataType::Float64, false),
    ])
}

fn exemplar_fields() -> ArrowFields {
    ArrowFields::from(vec![
        Field::new("time", timestamp_type(), false),
        Field::new("value_double", DataType::Float64, true),
        Field::new("value_int", DataType::Int64, true),
        Field::new("span_id", DataType::FixedSizeBinary(8), true),
        Field::new("trace_id", DataType::FixedSizeBinary(16), true),
        Field::new("filtered_attributes", attrs_type(), false),
    ])
}

fn item_field(item: DataType) -> Arc<Field> {
    Arc::new(Field::new_list_field(item, false))
}

fn list_of(item: DataType) -> DataType {
    DataType::List(item_field(item))
}

/// The schema of the metrics table.
pub fn schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        let mut fields = vec![
            Field::new("timestamp", timestamp_type(), false),
            Field::new("start_timestamp", timestamp_type(), true),
            Field::new("metric_index", DataType::UInt32, false),
            Field::new("metric_name", DataType::Utf8, false),
            Field::new("metric_description", DataType::Utf8, false),
            Field::new("metric_unit", DataType::Utf8, false),
            Field::new("metric_metadata", attrs_type(), false),
            Field::new("metric_type", DataType::UInt8, false),
            Field::new("aggregation_temporality", DataType::Int32, true),
            Field::new("is_monotonic", DataType::Boolean, true),
            Field::new("attributes", attrs_type(), false),
            Field::new("flags", DataType::UInt32, false),
            Field::new("value_double", DataType::Float64, true),
            Field::new("value_int", DataType::Int64, true),
            Field::new("count", DataType::UInt64, true),
            Field::new("sum", DataType::Float64, true),
            Field::new("min", DataType::Float64, true),
            Field::new("max", DataType::Float64, true),
            Field::new("bucket_counts", list_of(DataType::UInt64), true),
            Field::new("explicit_bounds", list_of(DataType::Float64), true),
            Field::new("scale", DataType::Int32, true),
            Field::new("zero_count", DataType::UInt64, true),
            Field::new("zero_threshold", DataType::Float64, true),
            Field::new("positive_offset", DataType::Int32, true),
            Field::new("positive_bucket_counts", list_of(DataType::UInt64), true),
            Field::new("negative_offset", DataType::Int32, true),
            Field::new("negative_bucket_counts", list_of(DataType::UInt64), true),
            Field::new("quantile_values", list_of(DataType::Struct(quantile_fields())), true),
            Field::new("exemplars", list_of(DataType::Struct(exemplar_fields())), false),
        ];
        fields.extend(common_fields());
        Arc::new(Schema::new(fields))
    });
    SCHEMA.clone()
}

/// Decodes an `ExportMetricsServiceRequest` (protobuf or OTLP/JSON, optionally compressed)
/// straight into one metrics batch, one row per data point, without building the request's
/// structs.
///
/// # Errors
///
/// [`Error::Decode`] naming the field and byte offset for malformed input (the whole request
/// is rejected), [`Error::Decompress`] for a corrupt compressed stream,
/// [`Error::PayloadTooLarge`] over [`MAX_PAYLOAD_LEN`](crate::MAX_PAYLOAD_LEN), and
/// [`Error::InvalidConfig`] when `format` is not an OTLP format.
pub fn decode(payload: &[u8], format: PayloadFormat, compression: Compression) -> Result<RecordBatch> {
    super::decode::<MetricsBuilder>(payload, format, compression)
}

/// Converts a decoded request (prost structs) into a metrics batch: the reference path the
/// direct decoder is tested against, and the way in for hosts that already hold the structs.
///
/// # Errors
///
/// [`Error::Decode`] for ids of the wrong length, unknown aggregation temporalities or
/// string-table references.
pub fn from_prost(request: &ExportMetricsServiceRequest) -> Result<RecordBatch> {
    let mut b = MetricsBuilder::default();
    for rm in &request.resource_metrics {
        b.common.begin_prost_resource(rm.resource.as_ref(), &rm.schema_url)?;
        for sm in &rm.scope_metrics {
            b.common.begin_prost_scope(sm.scope.as_ref(), &sm.schema_url)?;
            for m in &sm.metrics {
                b.push_prost_metric(m)?;
            }
            b.common.end_scope();
        }
        b.common.end_resource();
    }
    b.finish()
}

/// Converts a metrics batch (as made by [`decode`] or [`from_prost`]) back into a request.
///
/// Rows are grouped into resource and scope containers wherever `resource_index` or
/// `scope_index` changes, and into metrics wherever `metric_index` changes; a metric's name,
/// description, unit, metadata, type, temporality and monotonicity come from its first row.
/// See [the round-trip rules](super#lossless).
///
/// # Errors
///
/// [`Error::Schema`] when the batch lacks a column, has one of another type, or has a
/// `metric_type` that is not one of the five.
pub fn to_prost(batch: &RecordBatch) -> Result<ExportMetricsServiceRequest> {
    let r = MetricsReader::new(batch)?;
    let mut request = ExportMetricsServiceRequest::default();
    for group in r.common.groups() {
        let mut rm = ResourceMetrics {
            resource: Some(r.common.resource(group.row)?),
            scope_metrics: Vec::with_capacity(group.scopes.len()),
            schema_url: r.common.resource_schema_url(group.row),
        };
        for rows in group.scopes {
            let first = rows.start;
            let metrics = r
                .metric_groups(rows)
                .map(|rows| r.metric(rows))
                .collect::<Result<Vec<_>>>()?;
            rm.scope_metrics.push(ScopeMetrics {
                scope: Some(r.common.scope(first)?),
                metrics,
                schema_url: r.common.scope_schema_url(first),
            });
        }
        request.resource_metrics.push(rm);
    }
    Ok(request)
}

// --- decoding ---------------------------------------------------------------------------------

/// The fields of a metric, held until its end because protobuf may send them after the data.
#[derive(Default)]
struct MetricRow<'a> {
    name: Cow<'a, str>,
    description: Cow<'a, str>,
    unit: Cow<'a, str>,
    /// The `data` oneof member read, 0 while none.
    ty: u8,
    temporality: i32,
    is_monotonic: bool,
}

fn read_metric<'a, S: Source<'a>>(s: &mut S, b: &mut MetricsBuilder) -> Result<()> {
    let mut m = MetricRow::default();
    // Protobuf keeps the last `data` member present: read only its final run of occurrences.
    let run = s.oneof_run(DATA_TAGS);
    let mut n_data = 0;
    while let Some(tag) = s.next_field(&METRIC)? {
        match tag {
            1 => m.name = s.string()?,
            2 => m.description = s.string()?,
            3 => m.unit = s.string()?,
            5 | 7 | 9 | 10 | 11 => {
                let ordinal = n_data;
                n_data += 1;
                if let Some((member, from)) = run
                    && (tag != member || ordinal < from)
                {
                    // A member a later one replaces: prost decodes it all the same, so its
                    // wire format must be valid, but its values are dropped.
                    let mut scratch = MetricsBuilder::default();
                    scratch.common.begin_resource();
                    scratch.common.begin_scope();
                    let mut scratch_row = MetricRow {
                        ty: tag as u8,
                        ..MetricRow::default()
                    };
                    s.discarded(|s| s.message(|s| read_data(s, &mut scratch, &mut scratch_row)))?;
                    continue;
                }
                let ty = tag as u8;
                if m.ty != 0 && m.ty != ty {
                    return Err(s.error(format!(
                        "a metric has one kind of data; `{}` came first",
                        type_name(m.ty)
                    )));
                }
                m.ty = ty;
                s.message(|s| read_data(s, b, &mut m))?;
            }
            12 => read_key_value(s, &mut b.metric_metadata)?,
            _ => s.skip()?,
        }
    }
    b.end_metric(&m);
    Ok(())
}

fn type_name(ty: u8) -> &'static str {
    match ty {
        GAUGE => "gauge",
        SUM => "sum",
        HISTOGRAM => "histogram",
        EXPONENTIAL_HISTOGRAM => "exponentialHistogram",
        _ => "summary",
    }
}

/// Reads a `Gauge`, `Sum`, `Histogram`, `ExponentialHistogram` or `Summary` (per `m.ty`).
fn read_data<'a, S: Source<'a>>(s: &mut S, b: &mut MetricsBuilder, m: &mut MetricRow<'a>) -> Result<()> {
    let ty = m.ty;
    while let Some(tag) = s.next_field(&DATA)? {
        match (tag, ty) {
            (1, GAUGE | SUM) => s.message(|s| read_number_point(s, b, ty))?,
            (1, HISTOGRAM) => s.message(|s| read_histogram_point(s, b))?,
            (1, EXPONENTIAL_HISTOGRAM) => s.message(|s| read_exponential_point(s, b))?,
            (1, SUMMARY) => s.message(|s| read_summary_point(s, b))?,
            (2, SUM | HISTOGRAM | EXPONENTIAL_HISTOGRAM) => m.temporality = s.enumeration(AGGREGATION_TEMPORALITY)?,
            (3, SUM) => m.is_monotonic = s.boolean()?,
            _ => s.skip()?,
        }
    }
    Ok(())
}

/// The scalar fields of a data point; its lists go straight to the builders.
#[derive(Default)]
struct PointRow {
    start: u64,
    time: u64,
    flags: u32,
    value: Option<Number>,
    count: u64,
    sum: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    scale: i32,
    zero_count: u64,
    zero_threshold: f64,
    positive_offset: i32,
    negative_offset: i32,
}

/// The `value` oneof of number data points and exemplars.
#[derive(Clone, Copy)]
enum Number {
    Double(f64),
    Int(i64),
}

fn read_number_point<'a, S: Source<'a>>(s: &mut S, b: &mut MetricsBuilder, ty: u8) -> Result<()> {
    let mut p = PointRow::default();
    while let Some(tag) = s.next_field(&NUMBER_POINT)? {
        match tag {
            2 => p.start = s.fixed64()?,
            3 => p.time = s.fixed64()?,
            4 => p.value = Some(Number::Double(s.double()?)),
            5 => s.message(|s| read_exemplar(s, &mut b.exemplars))?,
            6 => p.value = Some(Number::Int(s.sfixed64()?)),
            7 => read_key_value(s, &mut b.attrs)?,
            8 => p.flags = s.uint32()?,
            _ => s.skip()?,
        }
    }
    b.push_row(ty, &p);
    Ok(())
}

fn read_histogram_point<'a, S: Source<'a>>(s: &mut S, b: &mut MetricsBuilder) -> Result<()> {
    let mut p = PointRow::default();
    while let Some(tag) = s.next_field(&HISTOGRAM_POINT)? {
        match tag {
            2 => p.start = s.fixed64()?,
            3 => p.time = s.fixed64()?,
            4 => p.count = s.fixed64()?,
            5 => p.sum = Some(s.double()?),
            6 => s.packed_fixed64(&mut b.bucket_counts.values)?,
            7 => s.packed_double(&mut b.explicit_bounds.values)?,
            8 => s.message(|s| read_exemplar(s, &mut b.exemplars))?,
            9 => read_key_value(s, &mut b.attrs)?,
            10 => p.flags = s.uint32()?,
            11 => p.min = Some(s.double()?),
            12 => p.max = Some(s.double()?),
            _ => s.skip()?,
        }
    }
    b.push_row(HISTOGRAM, &p);
    Ok(())
}

fn read_exponential_point<'a, S: Source<'a>>(s: &mut S, b: &mut MetricsBuilder) -> Result<()> {
    let mut p = PointRow::default();
    while let Some(tag) = s.next_field(&EXPONENTIAL_POINT)? {
        match tag {
            1 => read_key_value(s, &mut b.attrs)?,
            2 => p.start = s.fixed64()?,
            3 => p.time = s.fixed64()?,
            4 => p.count = s.fixed64()?,
            5 => p.sum = Some(s.double()?),
            6 => p.scale = s.sint32()?,
            7 => p.zero_count = s.fixed64()?,
            8 => s.message(|s| read_buckets(s, &mut p.positive_offset, &mut b.positive_bucket_counts.values))?,
            9 => s.message(|s| read_buckets(s, &mut p.negative_offset, &mut b.negative_bucket_counts.values))?,
            10 => p.flags = s.uint32()?,
            11 => s.message(|s| read_exemplar(s, &mut b.exemplars))?,
            12 => p.min = Some(s.double()?),
            13 => p.max = Some(s.double()?),
            14 => p.zero_threshold = s.double()?,
            _ => s.skip()?,
        }
    }
    b.push_row(EXPONENTIAL_HISTOGRAM, &p);
    Ok(())
}

fn read_buckets<'a, S: Source<'a>>(s: &mut S, offset: &mut i32, counts: &mut Vec<u64>) -> Result<()> {
    while let Some(tag) = s.next_field(&BUCKETS)? {
        match tag {
            1 => *offset = s.sint32()?,
            2 => s.packed_uint64(counts)?,
            _ => s.skip()?,
        }
    }
    Ok(())
}

fn read_summary_point<'a, S: Source<'a>>(s: &mut S, b: &mut MetricsBuilder) -> Result<()> {
    let mut p = PointRow::default();
    while let Some(tag) = s.next_field(&SUMMARY_POINT)? {
        match tag {
            2 => p.start = s.fixed64()?,
            3 => p.time = s.fixed64()?,
            4 => p.count = s.fixed64()?,
            5 => p.sum = Some(s.double()?),
            6 => s.message(|s| {
                let (mut quantile, mut value) = (0.0, 0.0);
                while let Some(tag) = s.next_field(&VALUE_AT_QUANTILE)? {
                    match tag {
                        1 => quantile = s.double()?,
                        2 => value = s.double()?,
                        _ => s.skip()?,
                    }
                }
                b.quantiles.push(quantile, value);
                Ok(())
            })?,
            7 => read_key_value(s, &mut b.attrs)?,
            8 => p.flags = s.uint32()?,
            _ => s.skip()?,
        }
    }
    b.push_row(SUMMARY, &p);
    Ok(())
}

fn read_exemplar<'a, S: Source<'a>>(s: &mut S, e: &mut ExemplarsBuilder) -> Result<()> {
    let (mut time, mut value, mut span_id, mut trace_id) = (0, None, None, None);
    while let Some(tag) = s.next_field(&EXEMPLAR)? {
        match tag {
            2 => time = s.fixed64()?,
            3 => value = Some(Number::Double(s.double()?)),
            4 => span_id = s.id()?,
            5 => trace_id = s.id()?,
            6 => value = Some(Number::Int(s.sfixed64()?)),
            7 => read_key_value(s, &mut e.attrs)?,
            _ => s.skip()?,
        }
    }
    e.push(time, value, span_id, trace_id);
    Ok(())
}

// --- building ---------------------------------------------------------------------------------

/// A nullable `List<primitive>` column whose current row's items are pushed onto `values`.
struct ListsBuilder<T: ArrowPrimitiveType> {
    values: Vec<T::Native>,
    offsets: Vec<i32>,
    valid: Vec<bool>,
}

impl<T: ArrowPrimitiveType> Default for ListsBuilder<T> {
    fn default() -> Self {
        ListsBuilder {
            values: Vec::new(),
            offsets: vec![0],
            valid: Vec::new(),
        }
    }
}

impl<T: ArrowPrimitiveType> ListsBuilder<T> {
    /// Ends the current row: a list of the items pushed since the last row, or null.
    #[inline]
    fn finish_row(&mut self, valid: bool) {
        self.offsets.push(offset(self.values.len()));
        self.valid.push(valid);
    }

    fn finish(self) -> ListArray {
        let values = PrimitiveArray::<T>::new(ScalarBuffer::from(self.values), None);
        ListArray::new(
            item_field(T::DATA_TYPE),
            OffsetBuffer::new(self.offsets.into()),
            Arc::new(values),
            nulls(self.valid),
        )
    }
}

/// The `quantile_values` column.
struct QuantilesBuilder {
    quantile: Vec<f64>,
    value: Vec<f64>,
    offsets: Vec<i32>,
    valid: Vec<bool>,
}

impl Default for QuantilesBuilder {
    fn default() -> Self {
        QuantilesBuilder {
            quantile: Vec::new(),
            value: Vec::new(),
            offsets: vec![0],
            valid: Vec::new(),
        }
    }
}

impl QuantilesBuilder {
    fn push(&mut self, quantile: f64, value: f64) {
        self.quantile.push(quantile);
        self.value.push(value);
    }

    fn finish_row(&mut self, valid: bool) {
        self.offsets.push(offset(self.value.len()));
        self.valid.push(valid);
    }

    fn finish(self) -> ListArray {
        let values = StructArray::new(
            quantile_fields(),
            vec![
                Arc::new(Float64Array::from(self.quantile)),
                Arc::new(Float64Array::from(self.value)),
            ],
            None,
        );
        ListArray::new(
            item_field(DataType::Struct(quantile_fields())),
            OffsetBuffer::new(self.offsets.into()),
            Arc::new(values),
            nulls(self.valid),
        )
    }
}

/// The `exemplars` column.
struct ExemplarsBuilder {
    time: Vec<u64>,
    value_double: Float64Builder,
    value_int: Int64Builder,
    span_id: IdBuilder<8>,
    trace_id: IdBuilder<16>,
    attrs: AttrsBuilder,
    offsets: Vec<i32>,
}

impl Default for ExemplarsBuilder {
    fn default() -> Self {
        ExemplarsBuilder {
            time: Vec::new(),
            value_double: Float64Builder::new(),
            value_int: Int64Builder::new(),
            span_id: IdBuilder::default(),
            trace_id: IdBuilder::default(),
            attrs: AttrsBuilder::default(),
            offsets: vec![0],
        }
    }
}

impl ExemplarsBuilder {
    /// Ends an exemplar whose filtered attributes were pushed onto `attrs`.
    fn push(&mut self, time: u64, value: Option<Number>, span_id: Option<[u8; 8]>, trace_id: Option<[u8; 16]>) {
        self.time.push(time);
        push_number(&mut self.value_double, &mut self.value_int, value);
        self.span_id.push(span_id);
        self.trace_id.push(trace_id);
        self.attrs.finish_row();
    }

    fn finish_row(&mut self) {
        self.offsets.push(offset(self.time.len()));
    }

    fn finish(mut self) -> Result<ListArray> {
        let values = StructArray::new(
            exemplar_fields(),
            vec![
                timestamps(self.time),
                Arc::new(self.value_double.finish()),
                Arc::new(self.value_int.finish()),
                Arc::new(self.span_id.finish()),
                Arc::new(self.trace_id.finish()),
                Arc::new(self.attrs.finish()?),
            ],
            None,
        );
        Ok(ListArray::new(
            item_field(DataType::Struct(exemplar_fields())),
            OffsetBuffer::new(self.offsets.into()),
            Arc::new(values),
            None,
        ))
    }
}

/// A validity buffer, or none when every entry is valid.
fn nulls(valid: Vec<bool>) -> Option<NullBuffer> {
    let nulls = NullBuffer::from(valid);
    (nulls.null_count() > 0).then_some(nulls)
}

fn push_number(double: &mut Float64Builder, int: &mut Int64Builder, value: Option<Number>) {
    match value {
        Some(Number::Double(d)) => {
            double.append_value(d);
            int.append_null();
        }
        Some(Number::Int(i)) => {
            double.append_null();
            int.append_value(i);
        }
        None => {
            double.append_null();
            int.append_null();
        }
    }
}

#[derive(Default)]
struct MetricsBuilder {
    common: Common,
    // One entry per metric, in request order; expanded onto the rows at the end.
    metric_name: StringBuilder,
    metric_description: StringBuilder,
    metric_unit: StringBuilder,
    metric_metadata: AttrsBuilder,
    metric_type: Vec<u8>,
    metric_temporality: Vec<Option<i32>>,
    metric_monotonic: Vec<Option<bool>>,
    // One entry per row (data point).
    row_metric: Vec<u32>,
    start: Vec<u64>,
    time: Vec<u64>,
    attrs: AttrsBuilder,
    flags: Vec<u32>,
    value_double: Float64Builder,
    value_int: Int64Builder,
    count: UInt64Builder,
    sum: Float64Builder,
    min: Float64Builder,
    max: Float64Builder,
    bucket_counts: ListsBuilder<UInt64Type>,
    explicit_bounds: ListsBuilder<Float64Type>,
    scale: Int32Builder,
    zero_count: UInt64Builder,
    zero_threshold: Float64Builder,
    positive_offset: Int32Builder,
    positive_bucket_counts: ListsBuilder<UInt64Type>,
    negative_offset: Int32Builder,
    negative_bucket_counts: ListsBuilder<UInt64Type>,
    quantiles: QuantilesBuilder,
    exemplars: ExemplarsBuilder,
}

impl MetricsBuilder {
    /// Ends a data point of the current metric (of type `ty`): its scalars, and the rows of
    /// the lists whose items were pushed while reading it. Columns other types use are null.
    fn push_row(&mut self, ty: u8, p: &PointRow) {
        self.common.push_row();
        self.row_metric.push(self.metric_type.len() as u32);
        self.start.push(p.start);
        self.time.push(p.time);
        self.attrs.finish_row();
        self.flags.push(p.flags);
        let number = matches!(ty, GAUGE | SUM);
        let histogram = ty == HISTOGRAM;
        let exponential = ty == EXPONENTIAL_HISTOGRAM;
        push_number(
            &mut self.value_double,
            &mut self.value_int,
            if number { p.value } else { None },
        );
        self.count.append_option((!number).then_some(p.count));
        self.sum.append_option(match ty {
            HISTOGRAM | EXPONENTIAL_HISTOGRAM => p.sum,
            SUMMARY => Some(p.sum.unwrap_or(0.0)),
            _ => None,
        });
        self.min
            .append_option(if histogram || exponential { p.min } else { None });
        self.max
            .append_option(if histogram || exponential { p.max } else { None });
        self.bucket_counts.finish_row(histogram);
        self.explicit_bounds.finish_row(histogram);
        self.scale.append_option(exponential.then_some(p.scale));
        self.zero_count.append_option(exponential.then_some(p.zero_count));
        self.zero_threshold
            .append_option(exponential.then_some(p.zero_threshold));
        self.positive_offset
            .append_option(exponential.then_some(p.positive_offset));
        self.positive_bucket_counts.finish_row(exponential);
        self.negative_offset
            .append_option(exponential.then_some(p.negative_offset));
        self.negative_bucket_counts.finish_row(exponential);
        self.quantiles.finish_row(ty == SUMMARY);
        self.exemplars.finish_row();
    }

    /// Ends a metric (the rows of its data points are already pushed) and its metadata.
    fn end_metric(&mut self, m: &MetricRow<'_>) {
        self.metric_name.append_value(&m.name);
        self.metric_description.append_value(&m.description);
        self.metric_unit.append_value(&m.unit);
        self.metric_metadata.finish_row();
        self.metric_type.push(m.ty);
        self.metric_temporality
            .push(matches!(m.ty, SUM | HISTOGRAM | EXPONENTIAL_HISTOGRAM).then_some(m.temporality));
        self.metric_monotonic.push((m.ty == SUM).then_some(m.is_monotonic));
    }

    fn push_prost_exemplars(&mut self, exemplars: &[Exemplar]) -> Result<()> {
        use super::prost_id as id;
        for e in exemplars {
            push_prost_attrs(&mut self.exemplars.attrs, &e.filtered_attributes)?;
            let value = e.value.map(|v| match v {
                exemplar::Value::AsDouble(d) => Number::Double(d),
                exemplar::Value::AsInt(i) => Number::Int(i),
            });
            self.exemplars.push(
                e.time_unix_nano,
                value,
                id(&e.span_id, "exemplar.span_id")?,
                id(&e.trace_id, "exemplar.trace_id")?,
            );
        }
        Ok(())
    }

    fn push_prost_metric(&mut self, metric: &Metric) -> Result<()> {
        use metric::Data;
        let mut m = MetricRow {
            name: Cow::Borrowed(&metric.name),
            description: Cow::Borrowed(&metric.description),
            unit: Cow::Borrowed(&metric.unit),
            ..Default::default()
        };
        push_prost_attrs(&mut self.metric_metadata, &metric.metadata)?;
        let temporality = |t: i32| super::check_enum(t, AGGREGATION_TEMPORALITY, "metric.aggregation_temporality");
        match &metric.data {
            None => {}
            Some(Data::Gauge(Gauge { data_points })) => {
                m.ty = GAUGE;
                self.push_prost_number_points(GAUGE, data_points)?;
            }
            Some(Data::Sum(sum)) => {
                temporality(sum.aggregation_temporality)?;
                (m.ty, m.temporality, m.is_monotonic) = (SUM, sum.aggregation_temporality, sum.is_monotonic);
                self.push_prost_number_points(SUM, &sum.data_points)?;
            }
            Some(Data::Histogram(h)) => {
                temporality(h.aggregation_temporality)?;
                (m.ty, m.temporality) = (HISTOGRAM, h.aggregation_temporality);
                for p in &h.data_points {
                    self.push_prost_histogram_point(p)?;
                }
            }
            Some(Data::ExponentialHistogram(h)) => {
                temporality(h.aggregation_temporality)?;
                (m.ty, m.temporality) = (EXPONENTIAL_HISTOGRAM, h.aggregation_temporality);
                for p in &h.data_points {
                    self.push_prost_exponential_point(p)?;
                }
            }
            Some(Data::Summary(Summary { data_points })) => {
                m.ty = SUMMARY;
                for p in data_points {
                    self.push_prost_summary_point(p)?;
                }
            }
        }
        self.end_metric(&m);
        Ok(())
    }

    fn push_prost_number_points(&mut self, ty: u8, points: &[NumberDataPoint]) -> Result<()> {
        for p in points {
            push_prost_attrs(&mut self.attrs, &p.attributes)?;
            self.push_prost_exemplars(&p.exemplars)?;
            let value = p.value.map(|v| match v {
                number_data_point::Value::AsDouble(d) => Number::Double(d),
                number_data_point::Value::AsInt(i) => Number::Int(i),
            });
            let row = PointRow {
                start: p.start_time_unix_nano,
                time: p.time_unix_nano,
                flags: p.flags,
                value,
                ..Default::default()
            };
            self.push_row(ty, &row);
        }
        Ok(())
    }

    fn push_prost_histogram_point(&mut self, p: &HistogramDataPoint) -> Result<()> {
        push_prost_attrs(&mut self.attrs, &p.attributes)?;
        self.push_prost_exemplars(&p.exemplars)?;
        self.bucket_counts.values.extend_from_slice(&p.bucket_counts);
        self.explicit_bounds.values.extend_from_slice(&p.explicit_bounds);
        let row = PointRow {
            start: p.start_time_unix_nano,
            time: p.time_unix_nano,
            flags: p.flags,
            count: p.count,
            sum: p.sum,
            min: p.min,
            max: p.max,
            ..Default::default()
        };
        self.push_row(HISTOGRAM, &row);
        Ok(())
    }

    fn push_prost_exponential_point(&mut self, p: &ExponentialHistogramDataPoint) -> Result<()> {
        push_prost_attrs(&mut self.attrs, &p.attributes)?;
        self.push_prost_exemplars(&p.exemplars)?;
        fn buckets(b: &Option<Buckets>) -> (i32, &[u64]) {
            b.as_ref().map_or((0, &[]), |b| (b.offset, &b.bucket_counts))
        }
        let ((positive_offset, positive), (negative_offset, negative)) = (buckets(&p.positive), buckets(&p.negative));
        self.positive_bucket_counts.values.extend_from_slice(positive);
        self.negative_bucket_counts.values.extend_from_slice(negative);
        let row = PointRow {
            start: p.start_time_unix_nano,
            time: p.time_unix_nano,
            flags: p.flags,
            count: p.count,
            sum: p.sum,
            min: p.min,
            max: p.max,
            scale: p.scale,
            zero_count: p.zero_count,
            zero_threshold: p.zero_threshold,
            positive_offset,
            negative_offset,
            ..Default::default()
        };
        self.push_row(EXPONENTIAL_HISTOGRAM, &row);
        Ok(())
    }

    fn push_prost_summary_point(&mut self, p: &SummaryDataPoint) -> Result<()> {
        push_prost_attrs(&mut self.attrs, &p.attributes)?;
        for q in &p.quantile_values {
            self.quantiles.push(q.quantile, q.value);
        }
        let row = PointRow {
            start: p.start_time_unix_nano,
            time: p.time_unix_nano,
            flags: p.flags,
            count: p.count,
            sum: Some(p.sum),
            ..Default::default()
        };
        self.push_row(SUMMARY, &row);
        Ok(())
    }

    fn finish(mut self) -> Result<RecordBatch> {
        let row_metric = UInt32Array::from(self.row_metric);
        let by_metric = |a: ArrayRef| take(a.as_ref(), &row_metric, None);
        let mut columns: Vec<ArrayRef> = vec![
            timestamps(self.time),
            optional_timestamps(self.start),
            Arc::new(dense_positions(Some(self.common.row_scopes()), row_metric.values())),
            by_metric(Arc::new(self.metric_name.finish()))?,
            by_metric(Arc::new(self.metric_description.finish()))?,
            by_metric(Arc::new(self.metric_unit.finish()))?,
            by_metric(Arc::new(self.metric_metadata.finish()?))?,
            by_metric(Arc::new(UInt8Array::from(self.metric_type)))?,
            by_metric(Arc::new(Int32Array::from(self.metric_temporality)))?,
            by_metric(Arc::new(BooleanArray::from(self.metric_monotonic)))?,
            Arc::new(self.attrs.finish()?),
            Arc::new(UInt32Array::from(self.flags)),
            Arc::new(self.value_double.finish()),
            Arc::new(self.value_int.finish()),
            Arc::new(self.count.finish()),
            Arc::new(self.sum.finish()),
            Arc::new(self.min.finish()),
            Arc::new(self.max.finish()),
            Arc::new(self.bucket_counts.finish()),
            Arc::new(self.explicit_bounds.finish()),
            Arc::new(self.scale.finish()),
            Arc::new(self.zero_count.finish()),
            Arc::new(self.zero_threshold.finish()),
            Arc::new(self.positive_offset.finish()),
            Arc::new(self.positive_bucket_counts.finish()),
            Arc::new(self.negative_offset.finish()),
            Arc::new(self.negative_bucket_counts.finish()),
            Arc::new(self.quantiles.finish()),
            Arc::new(self.exemplars.finish()?),
        ];
        columns.extend(self.common.finish()?);
        Ok(RecordBatch::try_new(schema(), columns)?)
    }
}

impl super::Table for MetricsBuilder {
    const REQUEST: &'static Fields = &REQUEST;
    const RESOURCE: &'static Fields = &RESOURCE_METRICS;
    const SCOPE: &'static Fields = &SCOPE_METRICS;

    fn for_payload(_len: usize) -> Self {
        MetricsBuilder::default()
    }

    fn common(&mut self) -> &mut Common {
        &mut self.common
    }

    fn read_record<'a, S: Source<'a>>(&mut self, s: &mut S) -> Result<()> {
        read_metric(s, self)
    }

    fn into_batch(self) -> Result<RecordBatch> {
        self.finish()
    }
}

// --- Arrow -> prost ---------------------------------------------------------------------------

/// A `List<primitive>` column with its values downcast.
struct ListReader<'b, T: ArrowPrimitiveType> {
    list: &'b ListArray,
    values: &'b [T::Native],
}

impl<'b, T: ArrowPrimitiveType> ListReader<'b, T> {
    fn new(c: &Columns<'b>, name: &str) -> Result<Self> {
        let list: &ListArray = col(c, name)?;
        let values = list
            .values()
            .as_any()
            .downcast_ref::<PrimitiveArray<T>>()
            .ok_or_else(|| Error::Schema {
                table: TABLE,
                reason: format!("`{name}` is not a list of {}", T::DATA_TYPE),
            })?;
        // List offsets index the child array, whose `values()` start at its own offset.
        Ok(ListReader {
            list,
            values: values.values(),
        })
    }

    fn get(&self, row: usize) -> Vec<T::Native> {
        let o = self.list.value_offsets();
        self.values[o[row] as usize..o[row + 1] as usize].to_vec()
    }
}

fn range(l: &ListArray, row: usize) -> Range<usize> {
    let o = l.value_offsets();
    o[row] as usize..o[row + 1] as usize
}

fn child<'b, T: 'static>(s: &'b StructArray, name: &str) -> Result<&'b T> {
    s.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| Error::Schema {
            table: TABLE,
            reason: format!("nested field `{name}` is missing or mistyped"),
        })
}

fn structs<'b>(l: &'b ListArray, name: &str) -> Result<&'b StructArray> {
    l.values()
        .as_any()
        .downcast_ref::<StructArray>()
        .ok_or_else(|| Error::Schema {
            table: TABLE,
            reason: format!("`{name}` is not a list of structs"),
        })
}

fn opt<T: ArrowPrimitiveType>(a: &PrimitiveArray<T>, row: usize) -> Option<T::Native> {
    a.is_valid(row).then(|| a.value(row))
}

struct MetricsReader<'b> {
    common: CommonReader<'b>,
    time: &'b TimestampNanosecondArray,
    start: &'b TimestampNanosecondArray,
    metric_index: &'b UInt32Array,
    name: &'b StringArray,
    description: &'b StringArray,
    unit: &'b StringArray,
    metadata: AttrsReader<'b>,
    ty: &'b UInt8Array,
    temporality: &'b Int32Array,
    monotonic: &'b BooleanArray,
    attrs: AttrsReader<'b>,
    flags: &'b UInt32Array,
    value_double: &'b Float64Array,
    value_int: &'b Int64Array,
    count: &'b UInt64Array,
    sum: &'b Float64Array,
    min: &'b Float64Array,
    max: &'b Float64Array,
    bucket_counts: ListReader<'b, UInt64Type>,
    explicit_bounds: ListReader<'b, Float64Type>,
    scale: &'b Int32Array,
    zero_count: &'b UInt64Array,
    zero_threshold: &'b Float64Array,
    positive_offset: &'b Int32Array,
    positive_bucket_counts: ListReader<'b, UInt64Type>,
    negative_offset: &'b Int32Array,
    negative_bucket_counts: ListReader<'b, UInt64Type>,
    quantiles: &'b ListArray,
    quantile: &'b Float64Array,
    quantile_value: &'b Float64Array,
    exemplars: &'b ListArray,
    ex_time: &'b TimestampNanosecondArray,
    ex_double: &'b Float64Array,
    ex_int: &'b Int64Array,
    ex_span_id: &'b FixedSizeBinaryArray,
    ex_trace_id: &'b FixedSizeBinaryArray,
    ex_attrs: AttrsReader<'b>,
}

impl<'b> MetricsReader<'b> {
    fn new(batch: &'b RecordBatch) -> Result<Self> {
        let c = Columns::new(batch, TABLE);
        let quantiles: &ListArray = col(&c, "quantile_values")?;
        let exemplars: &ListArray = col(&c, "exemplars")?;
        let q = structs(quantiles, "quantile_values")?;
        let ex = structs(exemplars, "exemplars")?;
        Ok(MetricsReader {
            common: CommonReader::new(batch, TABLE)?,
            time: col(&c, "timestamp")?,
            start: col(&c, "start_timestamp")?,
            metric_index: col(&c, "metric_index")?,
            name: col(&c, "metric_name")?,
            description: col(&c, "metric_description")?,
            unit: col(&c, "metric_unit")?,
            metadata: AttrsReader::new(c.get("metric_metadata")?, TABLE)?,
            ty: col(&c, "metric_type")?,
            temporality: col(&c, "aggregation_temporality")?,
            monotonic: col(&c, "is_monotonic")?,
            attrs: AttrsReader::new(c.get("attributes")?, TABLE)?,
            flags: col(&c, "flags")?,
            value_double: col(&c, "value_double")?,
            value_int: col(&c, "value_int")?,
            count: col(&c, "count")?,
            sum: col(&c, "sum")?,
            min: col(&c, "min")?,
            max: col(&c, "max")?,
            bucket_counts: ListReader::new(&c, "bucket_counts")?,
            explicit_bounds: ListReader::new(&c, "explicit_bounds")?,
            scale: col(&c, "scale")?,
            zero_count: col(&c, "zero_count")?,
            zero_threshold: col(&c, "zero_threshold")?,
            positive_offset: col(&c, "positive_offset")?,
            positive_bucket_counts: ListReader::new(&c, "positive_bucket_counts")?,
            negative_offset: col(&c, "negative_offset")?,
            negative_bucket_counts: ListReader::new(&c, "negative_bucket_counts")?,
            quantiles,
            quantile: child(q, "quantile")?,
            quantile_value: child(q, "value")?,
            exemplars,
            ex_time: child(ex, "time")?,
            ex_double: child(ex, "value_double")?,
            ex_int: child(ex, "value_int")?,
            ex_span_id: child(ex, "span_id")?,
            ex_trace_id: child(ex, "trace_id")?,
            ex_attrs: AttrsReader::new(
                ex.column_by_name("filtered_attributes").ok_or_else(|| Error::Schema {
                    table: TABLE,
                    reason: "`exemplars` lack `filtered_attributes`".into(),
                })?,
                TABLE,
            )?,
        })
    }

    /// Splits a scope's rows into metrics wherever `metric_index` changes.
    fn metric_groups(&self, rows: Range<usize>) -> impl Iterator<Item = Range<usize>> + '_ {
        let mut start = rows.start;
        let end = rows.end;
        std::iter::from_fn(move || {
            if start >= end {
                return None;
            }
            let index = self.metric_index.value(start);
            let stop = (start + 1..end)
                .find(|&row| self.metric_index.value(row) != index)
                .unwrap_or(end);
            let group = start..stop;
            start = stop;
            Some(group)
        })
    }

    fn metric(&self, rows: Range<usize>) -> Result<Metric> {
        use metric::Data;
        let first = rows.start;
        let temporality = opt(self.temporality, first).unwrap_or_default();
        let data = match self.ty.value(first) {
            GAUGE => Data::Gauge(Gauge {
                data_points: rows.map(|row| self.number_point(row)).collect::<Result<_>>()?,
            }),
            SUM => Data::Sum(Sum {
                data_points: rows.map(|row| self.number_point(row)).collect::<Result<_>>()?,
                aggregation_temporality: temporality,
                is_monotonic: self.monotonic.is_valid(first) && self.monotonic.value(first),
            }),
            HISTOGRAM => Data::Histogram(Histogram {
                data_points: rows.map(|row| self.histogram_point(row)).collect::<Result<_>>()?,
                aggregation_temporality: temporality,
            }),
            EXPONENTIAL_HISTOGRAM => Data::ExponentialHistogram(ExponentialHistogram {
                data_points: rows.map(|row| self.exponential_point(row)).collect::<Result<_>>()?,
                aggregation_temporality: temporality,
            }),
            SUMMARY => Data::Summary(Summary {
                data_points: rows.map(|row| self.summary_point(row)).collect::<Result<_>>()?,
            }),
            other => {
                return Err(Error::Schema {
                    table: TABLE,
                    reason: format!("unknown metric_type {other} in row {first}"),
                });
            }
        };
        Ok(Metric {
            name: self.name.value(first).to_owned(),
            description: self.description.value(first).to_owned(),
            unit: self.unit.value(first).to_owned(),
            metadata: self.metadata.get(first)?,
            data: Some(data),
        })
    }

    fn start(&self, row: usize) -> u64 {
        if self.start.is_null(row) {
            0
        } else {
            self.start.value(row) as u64
        }
    }

    fn exemplars(&self, row: usize) -> Result<Vec<Exemplar>> {
        range(self.exemplars, row)
            .map(|i| {
                let value = match (opt(self.ex_double, i), opt(self.ex_int, i)) {
                    (Some(d), _) => Some(exemplar::Value::AsDouble(d)),
                    (None, Some(v)) => Some(exemplar::Value::AsInt(v)),
                    (None, None) => None,
                };
                Ok(Exemplar {
                    filtered_attributes: self.ex_attrs.get(i)?,
                    time_unix_nano: self.ex_time.value(i) as u64,
                    span_id: id_bytes(self.ex_span_id, i),
                    trace_id: id_bytes(self.ex_trace_id, i),
                    value,
                })
            })
            .collect()
    }

    fn number_point(&self, row: usize) -> Result<NumberDataPoint> {
        let value = match (opt(self.value_double, row), opt(self.value_int, row)) {
            (Some(d), _) => Some(number_data_point::Value::AsDouble(d)),
            (None, Some(v)) => Some(number_data_point::Value::AsInt(v)),
            (None, None) => None,
        };
        Ok(NumberDataPoint {
            attributes: self.attrs.get(row)?,
            start_time_unix_nano: self.start(row),
            time_unix_nano: self.time.value(row) as u64,
            exemplars: self.exemplars(row)?,
            flags: self.flags.value(row),
            value,
        })
    }

    fn histogram_point(&self, row: usize) -> Result<HistogramDataPoint> {
        Ok(HistogramDataPoint {
            attributes: self.attrs.get(row)?,
            start_time_unix_nano: self.start(row),
            time_unix_nano: self.time.value(row) as u64,
            count: opt(self.count, row).unwrap_or_default(),
            sum: opt(self.sum, row),
            bucket_counts: self.bucket_counts.get(row),
            explicit_bounds: self.explicit_bounds.get(row),
            exemplars: self.exemplars(row)?,
            flags: self.flags.value(row),
            min: opt(self.min, row),
            max: opt(self.max, row),
        })
    }

    fn exponential_point(&self, row: usize) -> Result<ExponentialHistogramDataPoint> {
        Ok(ExponentialHistogramDataPoint {
            attributes: self.attrs.get(row)?,
            start_time_unix_nano: self.start(row),
            time_unix_nano: self.time.value(row) as u64,
            count: opt(self.count, row).unwrap_or_default(),
            sum: opt(self.sum, row),
            scale: opt(self.scale, row).unwrap_or_default(),
            zero_count: opt(self.zero_count, row).unwrap_or_default(),
            positive: Some(Buckets {
                offset: opt(self.positive_offset, row).unwrap_or_default(),
                bucket_counts: self.positive_bucket_counts.get(row),
            }),
            negative: Some(Buckets {
                offset: opt(self.negative_offset, row).unwrap_or_default(),
                bucket_counts: self.negative_bucket_counts.get(row),
            }),
            flags: self.flags.value(row),
            exemplars: self.exemplars(row)?,
            min: opt(self.min, row),
            max: opt(self.max, row),
            zero_threshold: opt(self.zero_threshold, row).unwrap_or_default(),
        })
    }

    fn summary_point(&self, row: usize) -> Result<SummaryDataPoint> {
        let quantile_values = range(self.quantiles, row)
            .map(|i| ValueAtQuantile {
                quantile: self.quantile.value(i),
                value: self.quantile_value.value(i),
            })
            .collect();
        Ok(SummaryDataPoint {
            attributes: self.attrs.get(row)?,
            start_time_unix_nano: self.start(row),
            time_unix_nano: self.time.value(row) as u64,
            count: opt(self.count, row).unwrap_or_default(),
            sum: opt(self.sum, row).unwrap_or_default(),
            quantile_values,
            flags: self.flags.value(row),
        })
    }
}
