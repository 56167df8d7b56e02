//! What is indexed of a row: one extraction, used by the index builder and by the scan, so
//! both see exactly the same terms.

use std::fmt::Write as _;

use arrow::array::{
    Array, AsArray, BinaryArray, BooleanArray, FixedSizeBinaryArray, Float64Array, Int32Array, Int64Array, ListArray,
    MapArray, RecordBatch, StringArray, StructArray, UInt8Array,
};
use arrow::datatypes::{DataType, Float64Type, Int64Type, UInt64Type};
use wit_batch::Signal;

use crate::analyzer::VALUE_SEPARATOR;

/// `key=value` terms (and service names, ids) longer than this are not indexed.
pub(crate) const MAX_TERM_BYTES: usize = 4096;

/// The indexed fields of one row.
#[derive(Debug, Default, Clone)]
pub(crate) struct RowDoc {
    /// The free texts, joined by [`VALUE_SEPARATOR`].
    pub(crate) text: String,
    /// `key=value` of every attribute of the record, its resource and its scope.
    pub(crate) attrs: Vec<String>,
    pub(crate) service: Option<String>,
    pub(crate) severity: Vec<String>,
    pub(crate) trace_id: Option<String>,
    pub(crate) span_id: Option<String>,
}

impl RowDoc {
    pub(crate) fn clear(&mut self) {
        self.text.clear();
        self.attrs.clear();
        self.service = None;
        self.severity.clear();
        self.trace_id = None;
        self.span_id = None;
    }

    fn push_text(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        if !self.text.is_empty() {
            self.text.push(VALUE_SEPARATOR);
        }
        self.text.push_str(text);
    }

    fn push_attr(&mut self, key: &str, value: std::fmt::Arguments<'_>) {
        let mut term = String::with_capacity(key.len() + 16);
        term.push_str(key);
        term.push('=');
        let _ = term.write_fmt(value);
        if term.len() <= MAX_TERM_BYTES {
            self.attrs.push(term);
        }
    }
}

/// A value struct column (`{type, str, int, double, bool, bytes}`), as wit-batch writes it.
struct Values<'a> {
    ty: &'a UInt8Array,
    str: &'a StringArray,
    int: &'a Int64Array,
    double: &'a Float64Array,
    bool: &'a BooleanArray,
    bytes: &'a BinaryArray,
}

impl<'a> Values<'a> {
    fn new(array: &'a StructArray) -> Option<Self> {
        Some(Values {
            ty: array.column_by_name("type")?.as_any().downcast_ref()?,
            str: array.column_by_name("str")?.as_any().downcast_ref()?,
            int: array.column_by_name("int")?.as_any().downcast_ref()?,
            double: array.column_by_name("double")?.as_any().downcast_ref()?,
            bool: array.column_by_name("bool")?.as_any().downcast_ref()?,
            bytes: array.column_by_name("bytes")?.as_any().downcast_ref()?,
        })
    }

    /// Writes value `i` as text: strings (and arrays and key-value lists, which are kept as
    /// OTLP/JSON) as they are, numbers and booleans as Rust prints them, bytes in lower-case hex.
    fn write(&self, i: usize, out: &mut String) {
        match self.ty.value(i) {
            1 | 5 | 6 if self.str.is_valid(i) => out.push_str(self.str.value(i)),
            2 if self.bool.is_valid(i) => {
                let _ = write!(out, "{}", self.bool.value(i));
            }
            3 if self.int.is_valid(i) => {
                let _ = write!(out, "{}", self.int.value(i));
            }
            4 if self.double.is_valid(i) => {
                let _ = write!(out, "{}", self.double.value(i));
            }
            7 if self.bytes.is_valid(i) => hex(self.bytes.value(i), out),
            _ => {}
        }
    }

    fn string(&self, i: usize) -> Option<&'a str> {
        (self.ty.value(i) == 1 && self.str.is_valid(i)).then(|| self.str.value(i))
    }
}

fn hex(bytes: &[u8], out: &mut String) {
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

/// An attributes column: `Map<Utf8, value>`.
struct Attrs<'a> {
    map: &'a MapArray,
    keys: &'a StringArray,
    values: Values<'a>,
}

impl<'a> Attrs<'a> {
    fn new(array: &'a dyn Array) -> Option<Self> {
        let map = array.as_any().downcast_ref::<MapArray>()?;
        Some(Attrs {
            map,
            keys: map.keys().as_any().downcast_ref()?,
            values: Values::new(map.values().as_any().downcast_ref()?)?,
        })
    }

    fn each(&self, row: usize, f: &mut dyn FnMut(&str, usize)) {
        if self.map.is_null(row) {
            return;
        }
        let offsets = self.map.value_offsets();
        for i in offsets[row] as usize..offsets[row + 1] as usize {
            f(self.keys.value(i), i);
        }
    }

    fn push_all(&self, row: usize, doc: &mut RowDoc) {
        let mut value = String::new();
        self.each(row, &mut |key, i| {
            value.clear();
            self.values.write(i, &mut value);
            doc.push_attr(key, format_args!("{value}"));
        });
    }
}

/// The span events column: each event's name, and its `exception.message`.
struct Events<'a> {
    list: &'a ListArray,
    names: &'a StringArray,
    attrs: Attrs<'a>,
}

/// A top-level column of an events (NDJSON) table.
enum EventColumn<'a> {
    Text(&'a str, &'a StringArray),
    Other(&'a str, &'a dyn Array),
}

/// Reads the indexed fields of each row of one record batch of one signal.
pub(crate) struct Extractor<'a> {
    texts: Vec<&'a StringArray>,
    body: Option<(&'a StructArray, Values<'a>)>,
    events: Option<Events<'a>>,
    attrs: Vec<Attrs<'a>>,
    event_columns: Vec<EventColumn<'a>>,
    service: Option<&'a StringArray>,
    severity_text: Option<&'a StringArray>,
    severity_number: Option<&'a Int32Array>,
    trace_id: Option<&'a FixedSizeBinaryArray>,
    span_id: Option<&'a FixedSizeBinaryArray>,
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Option<&'a T> {
    batch.column_by_name(name)?.as_any().downcast_ref::<T>()
}

/// The free-text columns of a dead letter: why it was refused, and the record itself.
const DEAD_LETTER_TEXTS: &[&str] = &["reason", "record"];

/// The columns the extractor reads for `signal`, so a scan reads only those. `None` for all.
pub(crate) fn columns(signal: Signal) -> Option<&'static [&'static str]> {
    const COMMON: [&str; 3] = ["service_name", "resource_attributes", "scope_attributes"];
    match signal {
        Signal::Traces => Some(&[
            "name",
            "status_message",
            "events",
            "attributes",
            "trace_id",
            "span_id",
            COMMON[0],
            COMMON[1],
            COMMON[2],
        ]),
        Signal::Logs => Some(&[
            "body",
            "event_name",
            "attributes",
            "severity_text",
            "severity_number",
            "trace_id",
            "span_id",
            COMMON[0],
            COMMON[1],
            COMMON[2],
        ]),
        Signal::Metrics => Some(&[
            "metric_name",
            "metric_description",
            "attributes",
            COMMON[0],
            COMMON[1],
            COMMON[2],
        ]),
        Signal::DeadLetters => Some(DEAD_LETTER_TEXTS),
        _ => None,
    }
}

impl<'a> Extractor<'a> {
    /// The extractor of `batch`, whose rows are of `signal`. Columns a signal's schema lacks
    /// are skipped (files of older schemas index what they have).
    pub(crate) fn new(signal: Signal, batch: &'a RecordBatch) -> Self {
        let mut x = Extractor {
            texts: Vec::new(),
            body: None,
            events: None,
            attrs: Vec::new(),
            event_columns: Vec::new(),
            service: column(batch, "service_name"),
            severity_text: None,
            severity_number: None,
            trace_id: column(batch, "trace_id"),
            span_id: column(batch, "span_id"),
        };
        let text = |names: &[&str]| names.iter().filter_map(|n| column::<StringArray>(batch, n)).collect();
        match signal {
            Signal::Traces => {
                x.texts = text(&["name", "status_message"]);
                x.events = column::<ListArray>(batch, "events").and_then(|list| {
                    let items = list.values().as_any().downcast_ref::<StructArray>()?;
                    Some(Events {
                        list,
                        names: items.column_by_name("name")?.as_any().downcast_ref()?,
                        attrs: Attrs::new(items.column_by_name("attributes")?.as_ref())?,
                    })
                });
            }
            Signal::Logs => {
                x.texts = text(&["event_name"]);
                x.body = column::<StructArray>(batch, "body").and_then(|b| Some((b, Values::new(b)?)));
                x.severity_text = column(batch, "severity_text");
                x.severity_number = column(batch, "severity_number");
            }
            Signal::Metrics => x.texts = text(&["metric_name", "metric_description"]),
            Signal::DeadLetters => x.texts = text(DEAD_LETTER_TEXTS),
            _ => {
                for (field, array) in batch.schema_ref().fields().iter().zip(batch.columns()) {
                    let name = field.name().as_str();
                    if name == "timestamp" {
                        continue;
                    }
                    match array.data_type() {
                        DataType::Utf8 => {
                            if let Some(s) = array.as_any().downcast_ref::<StringArray>() {
                                x.event_columns.push(EventColumn::Text(name, s));
                            }
                        }
                        DataType::Int64 | DataType::UInt64 | DataType::Float64 | DataType::Boolean => {
                            x.event_columns.push(EventColumn::Other(name, array.as_ref()));
                        }
                        _ => {}
                    }
                }
            }
        }
        for name in ["attributes", "resource_attributes", "scope_attributes"] {
            if signal != Signal::Events
                && let Some(a) = batch.column_by_name(name).and_then(|c| Attrs::new(c.as_ref()))
            {
                x.attrs.push(a);
            }
        }
        x
    }

    /// Fills `doc` with row `row`'s fields.
    pub(crate) fn fill(&self, row: usize, doc: &mut RowDoc) {
        doc.clear();
        for texts in &self.texts {
            if texts.is_valid(row) {
                doc.push_text(texts.value(row));
            }
        }
        if let Some((body, values)) = &self.body
            && body.is_valid(row)
        {
            let mut s = String::new();
            values.write(row, &mut s);
            doc.push_text(&s);
        }
        if let Some(events) = &self.events
            && events.list.is_valid(row)
        {
            let offsets = events.list.value_offsets();
            for e in offsets[row] as usize..offsets[row + 1] as usize {
                doc.push_text(events.names.value(e));
                events.attrs.each(e, &mut |key, i| {
                    if key == "exception.message"
                        && let Some(message) = events.attrs.values.string(i)
                    {
                        doc.push_text(message);
                    }
                });
            }
        }
        for attrs in &self.attrs {
            attrs.push_all(row, doc);
        }
        for column in &self.event_columns {
            match column {
                EventColumn::Text(name, values) => {
                    if values.is_valid(row) {
                        let v = values.value(row);
                        doc.push_text(v);
                        doc.push_attr(name, format_args!("{v}"));
                    }
                }
                EventColumn::Other(name, array) => {
                    if array.is_valid(row) {
                        match array.data_type() {
                            DataType::Int64 => {
                                doc.push_attr(name, format_args!("{}", array.as_primitive::<Int64Type>().value(row)))
                            }
                            DataType::UInt64 => {
                                doc.push_attr(name, format_args!("{}", array.as_primitive::<UInt64Type>().value(row)))
                            }
                            DataType::Float64 => {
                                doc.push_attr(name, format_args!("{}", array.as_primitive::<Float64Type>().value(row)))
                            }
                            _ => doc.push_attr(name, format_args!("{}", array.as_boolean().value(row))),
                        }
                    }
                }
            }
        }
        if let Some(service) = self.service
            && service.is_valid(row)
            && service.value(row).len() <= MAX_TERM_BYTES
        {
            doc.service = Some(service.value(row).to_owned());
        }
        if let Some(text) = self.severity_text
            && text.is_valid(row)
            && !text.value(row).is_empty()
            && text.value(row).len() <= MAX_TERM_BYTES
        {
            doc.severity.push(text.value(row).to_lowercase());
        }
        if let Some(number) = self.severity_number
            && number.is_valid(row)
            && let Some(name) = severity_name(number.value(row))
            && !doc.severity.iter().any(|s| s == name)
        {
            doc.severity.push(name.to_owned());
        }
        let id = |ids: Option<&FixedSizeBinaryArray>| {
            ids.filter(|a| a.is_valid(row) && a.value(row).iter().any(|b| *b != 0))
                .map(|a| {
                    let mut s = String::with_capacity(32);
                    hex(a.value(row), &mut s);
                    s
                })
        };
        doc.trace_id = id(self.trace_id);
        doc.span_id = id(self.span_id);
    }
}

/// The OTLP severity number's short name (`SEVERITY_NUMBER_ERROR2` is `error`).
fn severity_name(number: i32) -> Option<&'static str> {
    Some(match number {
        1..=4 => "trace",
        5..=8 => "debug",
        9..=12 => "info",
        13..=16 => "warn",
        17..=20 => "error",
        21..=24 => "fatal",
        _ => return None,
    })
}
