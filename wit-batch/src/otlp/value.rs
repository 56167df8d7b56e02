//! Typed attribute values: OTLP `AnyValue` and `KeyValue` lists as Arrow columns, both ways.
//!
//! A value is a struct `{type, str, int, double, bool, bytes}` where `type` is the OTLP
//! `AnyValue` oneof number (0 = empty, 1 = string, 2 = bool, 3 = int, 4 = double, 5 = array,
//! 6 = key-value list, 7 = bytes) and exactly the child named by the type is set. Arrays and
//! key-value lists are kept in `str` as their OTLP/JSON text (a JSON array of `AnyValue`
//! objects, or of `{"key", "value"}` objects), which is lossless and still searchable.
//! Attributes are a `Map<Utf8, value>` column in the order received.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Float64Array, Int64Array, MapArray, StringArray, StructArray,
    UInt8Array,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, Field, Fields as ArrowFields};
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, KeyValueList, any_value};

use super::source::{Fields, Proto, Source};
use crate::{Error, Result};

/// `AnyValue` oneof numbers, as stored in the `type` child.
pub(crate) const EMPTY: u8 = 0;
pub(crate) const STRING: u8 = 1;
pub(crate) const BOOL: u8 = 2;
pub(crate) const INT: u8 = 3;
pub(crate) const DOUBLE: u8 = 4;
pub(crate) const ARRAY: u8 = 5;
pub(crate) const KVLIST: u8 = 6;
pub(crate) const BYTES: u8 = 7;

static ANY_VALUE: Fields = Fields {
    fields: &[
        (1, "stringValue"),
        (2, "boolValue"),
        (3, "intValue"),
        (4, "doubleValue"),
        (5, "arrayValue"),
        (6, "kvlistValue"),
        (7, "bytesValue"),
        (8, "stringValueStrindex"),
    ],
};
static KEY_VALUE: Fields = Fields {
    fields: &[(1, "key"), (2, "value"), (3, "keyStrindex")],
};
static VALUES: Fields = Fields {
    fields: &[(1, "values")],
};

/// One decoded `AnyValue`, borrowing from the payload where it can.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value<'a> {
    Empty,
    /// UTF-8 text; from protobuf it is validated with its column when the batch is finished.
    Str(Cow<'a, [u8]>),
    Bool(bool),
    Int(i64),
    Double(f64),
    /// OTLP/JSON text of the array's values.
    Array(String),
    /// OTLP/JSON text of the list's key-values.
    KvList(String),
    Bytes(Cow<'a, [u8]>),
}

impl<'a> Value<'a> {
    /// Merges a later occurrence of the same message into this one, as protobuf does: a set
    /// member replaces, an empty message changes nothing, and two arrays (or two key-value
    /// lists) concatenate.
    pub(crate) fn merge(&mut self, later: Value<'a>) {
        match (&mut *self, later) {
            (_, Value::Empty) => {}
            (Value::Array(a), Value::Array(b)) | (Value::KvList(a), Value::KvList(b)) => {
                if a.len() <= 2 {
                    *a = b;
                } else if b.len() > 2 {
                    a.pop();
                    a.push(',');
                    a.push_str(&b[1..]);
                }
            }
            (this, later) => *this = later,
        }
    }
}

const STRINDEX: &str = "string table indexes (`*Strindex` fields) are only valid in OTLP profiles";

/// Reads an `AnyValue` message.
pub(crate) fn read_any_value<'a, S: Source<'a>>(s: &mut S) -> Result<Value<'a>> {
    s.message(|s| {
        let mut value = Value::Empty;
        // A string-table reference is an error only if no later member replaces it.
        let mut strindex = false;
        while let Some(tag) = s.next_field(&ANY_VALUE)? {
            let member = match tag {
                1 => Value::Str(s.text()?),
                2 => Value::Bool(s.boolean()?),
                3 => Value::Int(s.int64()?),
                4 => Value::Double(s.double()?),
                5 => {
                    let mut out = String::new();
                    s.message(|s| write_values_json(s, &mut out))?;
                    Value::Array(out)
                }
                6 => {
                    let mut out = String::new();
                    s.message(|s| write_kvlist_json(s, &mut out))?;
                    Value::KvList(out)
                }
                7 => Value::Bytes(s.bytes()?),
                8 => {
                    s.uint32()?;
                    strindex = true;
                    replaced(s, &value)?;
                    value = Value::Empty;
                    continue;
                }
                _ => {
                    s.skip()?;
                    continue;
                }
            };
            strindex = false;
            // Only message members merge with an earlier occurrence; scalars replace.
            if matches!(
                (&value, &member),
                (Value::Array(_), Value::Array(_)) | (Value::KvList(_), Value::KvList(_))
            ) {
                value.merge(member);
            } else {
                replaced(s, &value)?;
                value = member;
            }
        }
        if strindex {
            s.invalid(STRINDEX)?;
        }
        Ok(value)
    })
}

/// Reads a `KeyValue` message into `attrs` (one map entry).
pub(crate) fn read_key_value<'a, S: Source<'a>>(s: &mut S, attrs: &mut AttrsBuilder) -> Result<()> {
    if let Some((key, value)) = s.fast_key_value() {
        attrs.push(key, &value);
        return Ok(());
    }
    let (key, value) = read_key_value_parts(s)?;
    attrs.push(&key, &value);
    Ok(())
}

/// Reads a `KeyValue` message.
pub(crate) fn read_key_value_parts<'a, S: Source<'a>>(s: &mut S) -> Result<(Cow<'a, [u8]>, Value<'a>)> {
    s.message(|s| {
        let mut key = Cow::Borrowed(&b""[..]);
        let mut value = Value::Empty;
        let mut key_strindex = 0;
        while let Some(tag) = s.next_field(&KEY_VALUE)? {
            match tag {
                1 => {
                    let later = s.text()?;
                    checked_utf8(s, &key)?; // replaced, so never checked with its column
                    key = later;
                }
                2 => {
                    let later = read_any_value(s)?;
                    if matches!(value, Value::Empty) {
                        value = later;
                    } else {
                        if !matches!(later, Value::Empty) {
                            replaced(s, &value)?;
                        }
                        value.merge(later);
                    }
                }
                3 => key_strindex = s.uint32()?,
                _ => s.skip()?,
            }
        }
        if key_strindex != 0 {
            s.invalid(STRINDEX)?;
        }
        Ok((key, value))
    })
}

// --- nested values as OTLP/JSON text --------------------------------------------------------

fn write_json_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let esc = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if (c as u32) < 0x20 => {
                out.push_str(&s[start..i]);
                let _ = write!(out, "\\u{:04x}", c as u32);
                start = i + c.len_utf8();
                continue;
            }
            _ => continue,
        };
        out.push_str(&s[start..i]);
        out.push_str(esc);
        start = i + c.len_utf8();
    }
    out.push_str(&s[start..]);
    out.push('"');
}

fn write_value_json(out: &mut String, value: &Value<'_>) {
    use base64::Engine;
    match value {
        Value::Empty => out.push_str("{}"),
        Value::Str(s) => {
            out.push_str("{\"stringValue\":");
            write_json_str(out, &String::from_utf8_lossy(s));
            out.push('}');
        }
        Value::Bool(b) => {
            let _ = write!(out, "{{\"boolValue\":{b}}}");
        }
        Value::Int(i) => {
            let _ = write!(out, "{{\"intValue\":\"{i}\"}}");
        }
        Value::Double(d) => {
            if d.is_finite() {
                let _ = write!(out, "{{\"doubleValue\":{d:?}}}");
            } else if d.is_nan() {
                out.push_str("{\"doubleValue\":\"NaN\"}");
            } else if *d > 0.0 {
                out.push_str("{\"doubleValue\":\"Infinity\"}");
            } else {
                out.push_str("{\"doubleValue\":\"-Infinity\"}");
            }
        }
        Value::Array(json) => {
            let _ = write!(out, "{{\"arrayValue\":{{\"values\":{json}}}}}");
        }
        Value::KvList(json) => {
            let _ = write!(out, "{{\"kvlistValue\":{{\"values\":{json}}}}}");
        }
        Value::Bytes(b) => {
            out.push_str("{\"bytesValue\":\"");
            base64::engine::general_purpose::STANDARD.encode_string(b, out);
            out.push_str("\"}");
        }
    }
}

/// A string value that a later one replaces is never checked with its column: check it now,
/// as prost, which validates every string it decodes, would.
fn replaced<'a, S: Source<'a>>(s: &S, old: &Value<'_>) -> Result<()> {
    match old {
        Value::Str(text) => checked_utf8(s, text).map(drop),
        _ => Ok(()),
    }
}

/// `text` as a `str`: nested values are validated as they are written out.
fn checked_utf8<'t, 'a, S: Source<'a>>(s: &S, text: &'t [u8]) -> Result<&'t str> {
    std::str::from_utf8(text).map_err(|e| s.error(format!("string is not valid UTF-8: {e}")))
}

/// Writes the `values` of an `ArrayValue` as a JSON array of OTLP/JSON `AnyValue` objects.
fn write_values_json<'a, S: Source<'a>>(s: &mut S, out: &mut String) -> Result<()> {
    write_json_list(s, out, |s, out| {
        let value = read_any_value(s)?;
        write_checked_value(s, out, &value)
    })
}

/// Writes the `values` of a `KeyValueList` as a JSON array of `{"key", "value"}` objects.
fn write_kvlist_json<'a, S: Source<'a>>(s: &mut S, out: &mut String) -> Result<()> {
    write_json_list(s, out, |s, out| {
        let (key, value) = read_key_value_parts(s)?;
        out.push_str("{\"key\":");
        write_json_str(out, checked_utf8(s, &key)?);
        out.push_str(",\"value\":");
        write_checked_value(s, out, &value)?;
        out.push('}');
        Ok(())
    })
}

/// Writes each occurrence of field 1 (`values`) of the current message with `item`, as a JSON
/// array.
fn write_json_list<'a, S: Source<'a>>(
    s: &mut S,
    out: &mut String,
    mut item: impl FnMut(&mut S, &mut String) -> Result<()>,
) -> Result<()> {
    out.push('[');
    let mut first = true;
    while let Some(tag) = s.next_field(&VALUES)? {
        if tag != 1 {
            s.skip()?;
            continue;
        }
        if !std::mem::replace(&mut first, false) {
            out.push(',');
        }
        item(s, out)?;
    }
    out.push(']');
    Ok(())
}

/// Writes a nested value, whose strings are never checked with a column: check them here.
fn write_checked_value<'a, S: Source<'a>>(s: &S, out: &mut String, value: &Value<'_>) -> Result<()> {
    if let Value::Str(text) = value {
        checked_utf8(s, text)?;
    }
    write_value_json(out, value);
    Ok(())
}

// --- prost structs -> Value -------------------------------------------------------------------

/// Converts a prost `AnyValue` (the oracle path) into a [`Value`].
pub(crate) fn value_from_prost(value: Option<&AnyValue>) -> Result<Value<'_>> {
    use any_value::Value as V;
    use prost::Message;
    let Some(value) = value.and_then(|v| v.value.as_ref()) else {
        return Ok(Value::Empty);
    };
    Ok(match value {
        V::StringValue(s) => Value::Str(Cow::Borrowed(s.as_bytes())),
        V::BoolValue(b) => Value::Bool(*b),
        V::IntValue(i) => Value::Int(*i),
        V::DoubleValue(d) => Value::Double(*d),
        V::BytesValue(b) => Value::Bytes(Cow::Borrowed(b)),
        V::ArrayValue(a) => {
            let bytes = a.encode_to_vec();
            let mut out = String::new();
            Proto::new(&bytes).top(|s| write_values_json(s, &mut out))?;
            Value::Array(out)
        }
        V::KvlistValue(l) => {
            let bytes = l.encode_to_vec();
            let mut out = String::new();
            Proto::new(&bytes).top(|s| write_kvlist_json(s, &mut out))?;
            Value::KvList(out)
        }
        V::StringValueStrindex(_) => return Err(prost_error(STRINDEX)),
    })
}

/// Appends prost `KeyValue`s to `attrs` as one map row's entries.
pub(crate) fn push_prost_attrs(attrs: &mut AttrsBuilder, kvs: &[KeyValue]) -> Result<()> {
    for kv in kvs {
        if kv.key_strindex != 0 {
            return Err(prost_error(STRINDEX));
        }
        attrs.push(kv.key.as_bytes(), &value_from_prost(kv.value.as_ref())?);
    }
    Ok(())
}

pub(crate) fn prost_error(reason: &str) -> Error {
    Error::Decode {
        format: crate::PayloadFormat::OtlpProtobuf,
        field: String::new(),
        offset: 0,
        reason: reason.to_owned(),
    }
}

// --- Arrow builders ---------------------------------------------------------------------------

/// The struct type of one value.
pub(crate) fn value_type() -> DataType {
    DataType::Struct(value_fields().clone())
}

fn value_fields() -> &'static ArrowFields {
    static FIELDS: LazyLock<ArrowFields> = LazyLock::new(|| {
        ArrowFields::from(vec![
            Field::new("type", DataType::UInt8, false),
            Field::new("str", DataType::Utf8, true),
            Field::new("int", DataType::Int64, true),
            Field::new("double", DataType::Float64, true),
            Field::new("bool", DataType::Boolean, true),
            Field::new("bytes", DataType::Binary, true),
        ])
    });
    &FIELDS
}

/// The `Map<Utf8, value>` type of an attributes column.
pub(crate) fn attrs_type() -> DataType {
    DataType::Map(map_entries_field(), false)
}

fn map_entries_field() -> Arc<Field> {
    static FIELD: LazyLock<Arc<Field>> = LazyLock::new(|| {
        Arc::new(Field::new(
            "entries",
            DataType::Struct(ArrowFields::from(vec![
                Field::new("key", DataType::Utf8, false),
                Field::new("value", value_type(), false),
            ])),
            false,
        ))
    });
    FIELD.clone()
}

/// Builds a column of values (a struct per row, optionally null).
///
/// Children are plain vectors; each child's validity is derived from the type tags at the end,
/// so an append touches only the child it sets.
#[derive(Default)]
pub(crate) struct ValuesBuilder {
    ty: Vec<u8>,
    str_offsets: Vec<i32>,
    str_data: Vec<u8>,
    int: Vec<i64>,
    double: Vec<f64>,
    boolean: Vec<bool>,
    bytes_offsets: Vec<i32>,
    bytes_data: Vec<u8>,
    nulls: Vec<bool>,
    any_null: bool,
}

impl ValuesBuilder {
    /// Reserves room for `n` more values holding about `text` bytes of strings.
    pub(crate) fn reserve(&mut self, n: usize, text: usize) {
        self.ty.reserve(n);
        self.str_offsets.reserve(n + 1);
        self.str_data.reserve(text);
        self.int.reserve(n);
        self.double.reserve(n);
        self.boolean.reserve(n);
        self.bytes_offsets.reserve(n + 1);
    }

    #[inline]
    pub(crate) fn push(&mut self, value: &Value<'_>) {
        if self.str_offsets.is_empty() {
            self.str_offsets.push(0);
            self.bytes_offsets.push(0);
        }
        let (ty, int, double, boolean) = match value {
            Value::Empty => (EMPTY, 0, 0.0, false),
            Value::Str(s) => {
                self.str_data.extend_from_slice(s);
                (STRING, 0, 0.0, false)
            }
            Value::Bool(b) => (BOOL, 0, 0.0, *b),
            Value::Int(i) => (INT, *i, 0.0, false),
            Value::Double(d) => (DOUBLE, 0, *d, false),
            Value::Array(s) => {
                self.str_data.extend_from_slice(s.as_bytes());
                (ARRAY, 0, 0.0, false)
            }
            Value::KvList(s) => {
                self.str_data.extend_from_slice(s.as_bytes());
                (KVLIST, 0, 0.0, false)
            }
            Value::Bytes(b) => {
                self.bytes_data.extend_from_slice(b);
                (BYTES, 0, 0.0, false)
            }
        };
        self.ty.push(ty);
        self.str_offsets.push(offset32(self.str_data.len()));
        self.bytes_offsets.push(offset32(self.bytes_data.len()));
        self.int.push(int);
        self.double.push(double);
        self.boolean.push(boolean);
        if self.any_null {
            self.nulls.push(true);
        }
    }

    /// Appends a null (an absent value, e.g. a log record without a body).
    pub(crate) fn push_null(&mut self) {
        if !self.any_null {
            self.any_null = true;
            self.nulls = vec![true; self.ty.len()];
        }
        self.push(&Value::Empty);
        *self.nulls.last_mut().expect("just pushed") = false;
    }

    pub(crate) fn len(&self) -> usize {
        self.ty.len()
    }

    /// The column; [`Error::Decode`] with offset [`LATE_UTF8`] if a string is not UTF-8.
    pub(crate) fn finish(mut self) -> Result<StructArray> {
        use arrow::buffer::{BooleanBuffer, ScalarBuffer};
        if self.str_offsets.is_empty() {
            self.str_offsets.push(0);
            self.bytes_offsets.push(0);
        }
        let ty = &self.ty;
        let n = ty.len();
        let valid = |b: BooleanBuffer| NullBuffer::new(b);
        let str_valid = valid(BooleanBuffer::collect_bool(n, |i| {
            matches!(ty[i], STRING | ARRAY | KVLIST)
        }));
        let int_valid = valid(BooleanBuffer::collect_bool(n, |i| ty[i] == INT));
        let double_valid = valid(BooleanBuffer::collect_bool(n, |i| ty[i] == DOUBLE));
        let bool_valid = valid(BooleanBuffer::collect_bool(n, |i| ty[i] == BOOL));
        let bytes_valid = valid(BooleanBuffer::collect_bool(n, |i| ty[i] == BYTES));
        let nulls = self.any_null.then(|| NullBuffer::from(std::mem::take(&mut self.nulls)));
        let strings = utf8_column(self.str_offsets, self.str_data, Some(str_valid))?;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(UInt8Array::from(self.ty)),
            Arc::new(strings),
            Arc::new(Int64Array::new(self.int.into(), Some(int_valid))),
            Arc::new(Float64Array::new(self.double.into(), Some(double_valid))),
            Arc::new(BooleanArray::new(BooleanBuffer::from(self.boolean), Some(bool_valid))),
            Arc::new(BinaryArray::new(
                OffsetBuffer::new(ScalarBuffer::from(self.bytes_offsets)),
                self.bytes_data.into(),
                Some(bytes_valid),
            )),
        ];
        Ok(StructArray::new(value_fields().clone(), columns, nulls))
    }
}

/// The offset a decode error carries when invalid UTF-8 is found only as a column is
/// finished: the decoder then reads the payload again, validating each string as it goes, to
/// name the field and offset.
pub(crate) const LATE_UTF8: usize = usize::MAX;

/// A Utf8 column from raw parts, validated in one pass (and at every offset).
pub(crate) fn utf8_column(offsets: Vec<i32>, data: Vec<u8>, nulls: Option<NullBuffer>) -> Result<StringArray> {
    use arrow::buffer::ScalarBuffer;
    StringArray::try_new(OffsetBuffer::new(ScalarBuffer::from(offsets)), data.into(), nulls).map_err(|e| {
        Error::Decode {
            format: crate::PayloadFormat::OtlpProtobuf,
            field: String::new(),
            offset: LATE_UTF8,
            reason: format!("a string is not valid UTF-8 ({e})"),
        }
    })
}

#[inline]
fn offset32(n: usize) -> i32 {
    i32::try_from(n).expect("less than 2 GiB of attribute text in one batch")
}

/// Builds an attributes column: one map per row.
pub(crate) struct AttrsBuilder {
    offsets: Vec<i32>,
    key_offsets: Vec<i32>,
    key_data: Vec<u8>,
    values: ValuesBuilder,
}

impl Default for AttrsBuilder {
    fn default() -> Self {
        AttrsBuilder {
            offsets: vec![0],
            key_offsets: vec![0],
            key_data: Vec::new(),
            values: ValuesBuilder::default(),
        }
    }
}

impl AttrsBuilder {
    /// Reserves room for `rows` more rows holding `entries` entries in all, with about
    /// `text` bytes of keys and string values.
    pub(crate) fn reserve(&mut self, rows: usize, entries: usize, text: usize) {
        self.offsets.reserve(rows);
        self.key_offsets.reserve(entries);
        self.key_data.reserve(text / 2);
        self.values.reserve(entries, text);
    }

    /// Adds an entry to the current row.
    #[inline]
    pub(crate) fn push(&mut self, key: &[u8], value: &Value<'_>) {
        self.key_data.extend_from_slice(key);
        self.key_offsets.push(offset32(self.key_data.len()));
        self.values.push(value);
    }

    /// Ends the current row.
    #[inline]
    pub(crate) fn finish_row(&mut self) {
        self.offsets
            .push(i32::try_from(self.values.len()).expect("fewer than 2^31 attributes in one batch"));
    }

    /// The column; [`Error::Decode`] with offset [`LATE_UTF8`] if a string is not UTF-8.
    pub(crate) fn finish(self) -> Result<MapArray> {
        let keys = utf8_column(self.key_offsets, self.key_data, None)?;
        let entries = StructArray::new(
            match map_entries_field().data_type() {
                DataType::Struct(f) => f.clone(),
                _ => unreachable!("entries is a struct"),
            },
            vec![Arc::new(keys), Arc::new(self.values.finish()?)],
            None,
        );
        Ok(MapArray::new(
            map_entries_field(),
            OffsetBuffer::new(self.offsets.into()),
            entries,
            None,
            false,
        ))
    }
}

// --- Arrow -> prost ---------------------------------------------------------------------------

/// Reads value structs back into prost `AnyValue`s.
pub(crate) struct ValuesReader<'b> {
    nulls: Option<&'b NullBuffer>,
    ty: &'b UInt8Array,
    str: &'b StringArray,
    int: &'b Int64Array,
    double: &'b Float64Array,
    boolean: &'b BooleanArray,
    bytes: &'b BinaryArray,
}

impl<'b> ValuesReader<'b> {
    pub(crate) fn new(array: &'b dyn Array, table: &'static str) -> Result<Self> {
        let bad = |reason: &str| Error::Schema {
            table,
            reason: reason.to_owned(),
        };
        let s = array
            .as_any()
            .downcast_ref::<StructArray>()
            .ok_or_else(|| bad("a value column is not a struct"))?;
        fn child<'c, T: 'static>(s: &'c StructArray, name: &str, table: &'static str) -> Result<&'c T> {
            s.column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<T>())
                .ok_or_else(|| Error::Schema {
                    table,
                    reason: format!("value struct lacks a `{name}` child of the expected type"),
                })
        }
        Ok(ValuesReader {
            nulls: s.nulls(),
            ty: child(s, "type", table)?,
            str: child(s, "str", table)?,
            int: child(s, "int", table)?,
            double: child(s, "double", table)?,
            boolean: child(s, "bool", table)?,
            bytes: child(s, "bytes", table)?,
        })
    }

    /// The value at `i`; `None` when the struct itself is null.
    pub(crate) fn get(&self, i: usize) -> Result<Option<AnyValue>> {
        use any_value::Value as V;
        if self.nulls.is_some_and(|n| n.is_null(i)) {
            return Ok(None);
        }
        let value = match self.ty.value(i) {
            EMPTY => None,
            STRING => Some(V::StringValue(self.str.value(i).to_owned())),
            BOOL => Some(V::BoolValue(self.boolean.value(i))),
            INT => Some(V::IntValue(self.int.value(i))),
            DOUBLE => Some(V::DoubleValue(self.double.value(i))),
            BYTES => Some(V::BytesValue(self.bytes.value(i).to_vec())),
            ARRAY => Some(V::ArrayValue(ArrayValue {
                values: json_values(self.str.value(i))?,
            })),
            KVLIST => Some(V::KvlistValue(KeyValueList {
                values: json_kvlist(self.str.value(i))?,
            })),
            other => {
                return Err(Error::Schema {
                    table: "attributes",
                    reason: format!("unknown value type {other}"),
                });
            }
        };
        Ok(Some(AnyValue { value }))
    }
}

/// Reads an attributes column back into prost `KeyValue` lists.
pub(crate) struct AttrsReader<'b> {
    offsets: &'b [i32],
    keys: &'b StringArray,
    values: ValuesReader<'b>,
}

impl<'b> AttrsReader<'b> {
    pub(crate) fn new(array: &'b dyn Array, table: &'static str) -> Result<Self> {
        let bad = |reason: String| Error::Schema { table, reason };
        let map = array
            .as_any()
            .downcast_ref::<MapArray>()
            .ok_or_else(|| bad("attributes are not a map".into()))?;
        let keys = map
            .keys()
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| bad("attribute keys are not Utf8".into()))?;
        Ok(AttrsReader {
            offsets: map.value_offsets(),
            keys,
            values: ValuesReader::new(map.values().as_ref(), table)?,
        })
    }

    pub(crate) fn get(&self, row: usize) -> Result<Vec<KeyValue>> {
        let (start, end) = (self.offsets[row] as usize, self.offsets[row + 1] as usize);
        (start..end)
            .map(|i| {
                Ok(KeyValue {
                    key: self.keys.value(i).to_owned(),
                    value: Some(self.values.get(i)?.unwrap_or_default()),
                    ..Default::default()
                })
            })
            .collect()
    }
}

fn json_error(reason: String) -> Error {
    Error::Schema {
        table: "attributes",
        reason: format!("nested value is not valid OTLP/JSON: {reason}"),
    }
}

fn json_values(text: &str) -> Result<Vec<AnyValue>> {
    let parsed: serde_json::Value = serde_json::from_str(text).map_err(|e| json_error(e.to_string()))?;
    let items = parsed.as_array().ok_or_else(|| json_error("not an array".into()))?;
    items.iter().map(any_value_from_json).collect()
}

fn json_kvlist(text: &str) -> Result<Vec<KeyValue>> {
    let parsed: serde_json::Value = serde_json::from_str(text).map_err(|e| json_error(e.to_string()))?;
    let items = parsed.as_array().ok_or_else(|| json_error("not an array".into()))?;
    items.iter().map(key_value_from_json).collect()
}

fn key_value_from_json(item: &serde_json::Value) -> Result<KeyValue> {
    let key = item
        .get("key")
        .and_then(|k| k.as_str())
        .ok_or_else(|| json_error("key-value without a key".into()))?;
    let value = match item.get("value") {
        Some(v) => any_value_from_json(v)?,
        None => AnyValue::default(),
    };
    Ok(KeyValue {
        key: key.to_owned(),
        value: Some(value),
        ..Default::default()
    })
}

fn any_value_from_json(item: &serde_json::Value) -> Result<AnyValue> {
    use any_value::Value as V;
    use base64::Engine;
    let obj = item
        .as_object()
        .ok_or_else(|| json_error("value is not an object".into()))?;
    let Some((kind, v)) = obj.iter().next() else {
        return Ok(AnyValue { value: None });
    };
    let value = match (kind.as_str(), v) {
        ("stringValue", serde_json::Value::String(s)) => V::StringValue(s.clone()),
        ("boolValue", serde_json::Value::Bool(b)) => V::BoolValue(*b),
        ("intValue", serde_json::Value::String(s)) => V::IntValue(s.parse().map_err(|_| json_error(s.clone()))?),
        ("doubleValue", serde_json::Value::Number(n)) => {
            V::DoubleValue(n.as_f64().ok_or_else(|| json_error(n.to_string()))?)
        }
        ("doubleValue", serde_json::Value::String(s)) => V::DoubleValue(match s.as_str() {
            "NaN" => f64::NAN,
            "Infinity" => f64::INFINITY,
            "-Infinity" => f64::NEG_INFINITY,
            _ => return Err(json_error(s.clone())),
        }),
        ("bytesValue", serde_json::Value::String(s)) => V::BytesValue(
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| json_error(e.to_string()))?,
        ),
        ("arrayValue", serde_json::Value::Object(o)) => V::ArrayValue(ArrayValue {
            values: match o.get("values").and_then(|v| v.as_array()) {
                Some(items) => items.iter().map(any_value_from_json).collect::<Result<_>>()?,
                None => Vec::new(),
            },
        }),
        ("kvlistValue", serde_json::Value::Object(o)) => V::KvlistValue(KeyValueList {
            values: match o.get("values").and_then(|v| v.as_array()) {
                Some(items) => items.iter().map(key_value_from_json).collect::<Result<_>>()?,
                None => Vec::new(),
            },
        }),
        (other, _) => return Err(json_error(format!("unexpected `{other}`"))),
    };
    Ok(AnyValue { value: Some(value) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use any_value::Value as V;

    fn s(v: &str) -> AnyValue {
        AnyValue {
            value: Some(V::StringValue(v.into())),
        }
    }

    #[test]
    fn nested_values_survive_json_text_exactly() {
        let nested = AnyValue {
            value: Some(V::ArrayValue(ArrayValue {
                values: vec![
                    s("a \"quoted\"\n\u{1}é"),
                    AnyValue {
                        value: Some(V::IntValue(i64::MIN)),
                    },
                    AnyValue {
                        value: Some(V::DoubleValue(0.1)),
                    },
                    AnyValue {
                        value: Some(V::DoubleValue(f64::INFINITY)),
                    },
                    AnyValue {
                        value: Some(V::DoubleValue(-0.0)),
                    },
                    AnyValue {
                        value: Some(V::BoolValue(false)),
                    },
                    AnyValue {
                        value: Some(V::BytesValue(vec![0, 255, 7])),
                    },
                    AnyValue { value: None },
                    AnyValue {
                        value: Some(V::KvlistValue(KeyValueList {
                            values: vec![KeyValue {
                                key: "k".into(),
                                value: Some(s("v")),
                                ..Default::default()
                            }],
                        })),
                    },
                ],
            })),
        };
        let value = value_from_prost(Some(&nested)).unwrap();
        let mut b = ValuesBuilder::default();
        b.push(&value);
        let array = b.finish().unwrap();
        let back = ValuesReader::new(&array, "test").unwrap().get(0).unwrap().unwrap();
        assert_eq!(back, nested);
        // -0.0 == 0.0 under PartialEq; check the sign survived too.
        let Some(V::ArrayValue(a)) = back.value else { panic!() };
        let Some(V::DoubleValue(z)) = a.values[4].value else {
            panic!()
        };
        assert!(z.is_sign_negative());
    }
}
