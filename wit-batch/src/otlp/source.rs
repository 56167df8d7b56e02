//! One decoder body, two wire formats.
//!
//! The OTLP decoders are written once, generic over [`Source`], and read either the protobuf
//! wire format ([`Proto`]) or OTLP/JSON ([`Json`]). A decoder asks for the next field of the
//! current message by its protobuf tag (JSON keys are mapped to tags through the message's
//! [`Fields`] table, and every element of a JSON array is yielded as one occurrence of the
//! field, exactly like a repeated protobuf field), then reads the field's value with the
//! method for its protobuf type. Unknown fields are skipped in both formats.

use std::borrow::Cow;

use crate::{Error, PayloadFormat, Result};

/// The fields of one protobuf message: its name and `(tag, lowerCamelCase JSON name)` pairs.
pub(crate) struct Fields {
    pub(crate) fields: &'static [(u32, &'static str)],
}

impl Fields {
    fn name(&self, tag: u32) -> Option<&'static str> {
        self.fields.iter().find(|(t, _)| *t == tag).map(|(_, n)| *n)
    }

    #[inline]
    fn tag(&self, name: &str) -> Option<u32> {
        let (len, first) = (name.len(), name.as_bytes().first().copied());
        self.fields
            .iter()
            .find(|(_, n)| n.len() == len && n.as_bytes().first().copied() == first && *n == name)
            .map(|(t, _)| *t)
    }
}

/// Known values of a protobuf enum: `(number, JSON name)`.
pub(crate) type EnumValues = &'static [(i32, &'static str)];

/// A reader of OTLP messages in one wire format.
pub(crate) trait Source<'a> {
    /// The next field of the current message, as its tag; `None` at the end of the message.
    /// The caller must then read the value (with the method for its type) or [`skip`](Self::skip) it.
    fn next_field(&mut self, fields: &'static Fields) -> Result<Option<u32>>;
    /// Skips the value of the current field.
    fn skip(&mut self) -> Result<()>;
    /// Reads a message-typed value, running `f` over its fields. Fields `f` leaves unread are skipped.
    fn message<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T>;
    /// A `string` value.
    fn string(&mut self) -> Result<Cow<'a, str>>;
    /// A `string` value whose UTF-8 may be validated later, with the column it goes to (see
    /// [`LATE_UTF8`](super::value::LATE_UTF8)); used for the bulk of strings, attributes.
    fn text(&mut self) -> Result<Cow<'a, [u8]>>;
    /// A `bytes` value (base64 in JSON).
    fn bytes(&mut self) -> Result<Cow<'a, [u8]>>;
    /// A trace or span id (`bytes` in protobuf, hex in JSON): `None` when empty, an error for
    /// any length but `N`.
    fn id<const N: usize>(&mut self) -> Result<Option<[u8; N]>>;
    /// A `fixed64` value.
    fn fixed64(&mut self) -> Result<u64>;
    /// A `fixed32` value.
    fn fixed32(&mut self) -> Result<u32>;
    /// A `uint32` value.
    fn uint32(&mut self) -> Result<u32>;
    /// An `int64` value (varint).
    fn int64(&mut self) -> Result<i64>;
    /// An `sfixed64` value.
    fn sfixed64(&mut self) -> Result<i64>;
    /// An `sint32` value (zigzag varint).
    fn sint32(&mut self) -> Result<i32>;
    /// A `double` value.
    fn double(&mut self) -> Result<f64>;
    /// A `bool` value.
    fn boolean(&mut self) -> Result<bool>;
    /// An enum value, which must be one of `values` (by number, or in JSON also by name).
    fn enumeration(&mut self, values: EnumValues) -> Result<i32>;
    /// One occurrence of a `repeated fixed64` field: packed or not in protobuf, one array element in JSON.
    fn packed_fixed64(&mut self, out: &mut Vec<u64>) -> Result<()>;
    /// One occurrence of a `repeated uint64` field.
    fn packed_uint64(&mut self, out: &mut Vec<u64>) -> Result<()>;
    /// One occurrence of a `repeated double` field.
    fn packed_double(&mut self, out: &mut Vec<f64>) -> Result<()>;
    /// An error at the current position, naming the current field.
    fn error(&self, reason: String) -> Error;
    /// Called at the start of a message, before its first [`next_field`](Self::next_field):
    /// which occurrences of the message-typed oneof whose member tags are `members` make up
    /// the decoded value. Protobuf keeps the last member present, merged over its consecutive
    /// occurrences (a different member in between starts afresh), so the answer is
    /// `Some((tag, n))`: read the occurrences of members from the `n`-th on (0-based, counting
    /// every member occurrence) and skip the earlier ones. `None` when no member is present,
    /// when the message is malformed (reading it reports the error), and always in JSON,
    /// where a oneof holds one member and the decoder rejects a second.
    fn oneof_run(&mut self, members: &[u32]) -> Option<(u32, usize)>;
    /// A value that is well-formed on the wire but not acceptable (a string-table reference):
    /// an error, except while reading a `data` member that a later one replaces, where, as in
    /// prost, only the wire format counts.
    fn invalid(&mut self, reason: &str) -> Result<()> {
        Err(self.error(reason.to_owned()))
    }
    /// A `KeyValue` message in its common shape (a key, then a value holding one scalar
    /// member), read in one go; `None` (and nothing consumed) for any other shape, which the
    /// caller then reads field by field. Only a speed-up: both ways give the same result.
    fn fast_key_value(&mut self) -> Option<(&'a [u8], super::value::Value<'a>)> {
        None
    }
    /// Runs `f` over a value that will be discarded: only wire-format errors count in it.
    fn discarded<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        f(self)
    }
}

/// Prefixes the dotted field path of a decode error with `name` as it bubbles out of a message.
fn within(err: Error, name: Option<&'static str>) -> Error {
    match (err, name) {
        (
            Error::Decode {
                format,
                field,
                offset,
                reason,
            },
            Some(name),
        ) => Error::Decode {
            format,
            field: if field.is_empty() {
                name.to_owned()
            } else {
                format!("{name}.{field}")
            },
            offset,
            reason,
        },
        (err, _) => err,
    }
}

fn check_enum(value: i32, values: EnumValues) -> Option<i32> {
    values.iter().any(|(v, _)| *v == value).then_some(value)
}

// ---------------------------------------------------------------------------------------------
// Protobuf

const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const I32: u8 = 5;
/// How deeply messages may nest: prost's recursion limit, so both paths reject the same inputs.
const MAX_DEPTH: u32 = 100;

/// Reads the protobuf wire format straight out of a byte slice.
pub(crate) struct Proto<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
    wire: u8,
    tag: u32,
    fields: Option<&'static Fields>,
    /// Offset of the current field's key, for errors about its value.
    field_at: usize,
    /// Messages entered and not yet left.
    depth: u32,
    /// An invalid value that a later occurrence of its field may still replace.
    pending: Option<Box<Pending>>,
    /// Inside a value that will be discarded: value errors are ignored.
    discarding: u32,
    /// Validate every string as it is read (the slow path that names a bad string's field).
    strict_utf8: bool,
}

struct Pending {
    depth: u32,
    tag: u32,
    error: Error,
}

impl<'a> Proto<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Proto {
            buf,
            pos: 0,
            end: buf.len(),
            wire: 0,
            tag: 0,
            fields: None,
            field_at: 0,
            depth: 0,
            pending: None,
            discarding: 0,
            strict_utf8: false,
        }
    }

    /// A reader that validates every string as it reads it.
    pub(crate) fn strict(buf: &'a [u8]) -> Self {
        Proto {
            strict_utf8: true,
            ..Proto::new(buf)
        }
    }

    /// Runs `f` over the top-level message, which spans the whole buffer.
    pub(crate) fn top<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let out = f(self)?;
        self.check_pending()?;
        Ok(out)
    }

    /// Records an invalid value (an id of the wrong length, an unknown enum number) of the
    /// current field. Protobuf lets a later occurrence of a singular field replace an earlier
    /// one, so the error is raised only if the message ends without a valid occurrence.
    #[cold]
    fn defer(&mut self, error: Error) {
        if self.discarding > 0 {
            return;
        }
        let same_field = self
            .pending
            .as_ref()
            .is_some_and(|p| p.depth == self.depth && p.tag == self.tag);
        if self.pending.is_none() || same_field {
            self.pending = Some(Box::new(Pending {
                depth: self.depth,
                tag: self.tag,
                error,
            }));
        }
    }

    /// A valid occurrence of the current field replaces an earlier invalid one.
    #[inline]
    fn valid_occurrence(&mut self) {
        if let Some(p) = &self.pending
            && p.depth == self.depth
            && p.tag == self.tag
        {
            self.pending = None;
        }
    }

    /// Raises the invalid value left in the message that is ending, if any.
    #[inline]
    fn check_pending(&mut self) -> Result<()> {
        match &self.pending {
            Some(p) if p.depth == self.depth => Err(self.pending.take().expect("pending").error),
            _ => Ok(()),
        }
    }

    fn err(&self, at: usize, reason: impl Into<String>) -> Error {
        Error::Decode {
            format: PayloadFormat::OtlpProtobuf,
            field: self.field_name().map(str::to_owned).unwrap_or_default(),
            offset: at,
            reason: reason.into(),
        }
    }

    fn field_name(&self) -> Option<&'static str> {
        self.fields.and_then(|f| f.name(self.tag))
    }

    #[inline(always)]
    fn varint(&mut self) -> Result<u64> {
        // Most varints in OTLP (keys, lengths, small counts) are one byte.
        if self.pos < self.end {
            let byte = self.buf[self.pos];
            if byte < 0x80 {
                self.pos += 1;
                return Ok(u64::from(byte));
            }
        }
        self.varint_slow()
    }

    #[inline(never)]
    fn varint_slow(&mut self) -> Result<u64> {
        let start = self.pos;
        let mut value = 0u64;
        let mut shift = 0u32;
        loop {
            let Some(&byte) = self.buf[..self.end].get(self.pos) else {
                return Err(self.err(start, "truncated varint"));
            };
            self.pos += 1;
            if shift == 63 && byte > 1 {
                return Err(self.err(start, "varint overflows 64 bits"));
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(value);
            }
            shift += 7;
            if shift > 63 {
                return Err(self.err(start, "varint longer than 10 bytes"));
            }
        }
    }

    #[inline]
    fn expect(&self, wire: u8) -> Result<()> {
        if self.wire == wire {
            Ok(())
        } else {
            Err(self.err(self.pos, format!("wire type {}, expected {}", self.wire, wire)))
        }
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.end - self.pos < n {
            return Err(self.err(
                self.pos,
                format!("{n} bytes needed, {} left in the message", self.end - self.pos),
            ));
        }
        let slice = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    #[inline(always)]
    fn len_delimited(&mut self) -> Result<&'a [u8]> {
        self.expect(LEN)?;
        let at = self.pos;
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| self.err(at, "length does not fit in memory"))?;
        self.take(len)
    }

    #[inline]
    fn fixed64_raw(&mut self) -> Result<u64> {
        let bytes = self.take(8)?;
        Ok(u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
    }

    /// Runs `each` once per element of a packed field, or once for an unpacked occurrence.
    fn packed<T>(
        &mut self,
        scalar_wire: u8,
        out: &mut Vec<T>,
        mut read: impl FnMut(&mut Self) -> Result<T>,
    ) -> Result<()> {
        if self.wire == LEN {
            let at = self.pos;
            let len = self.varint()?;
            let len = usize::try_from(len).map_err(|_| self.err(at, "length does not fit in memory"))?;
            if self.end - self.pos < len {
                return Err(self.err(at, format!("packed field of {len} bytes overruns its message")));
            }
            let saved_end = self.end;
            self.end = self.pos + len;
            self.wire = scalar_wire;
            while self.pos < self.end {
                out.push(read(self)?);
            }
            self.end = saved_end;
            Ok(())
        } else {
            self.expect(scalar_wire)?;
            out.push(read(self)?);
            Ok(())
        }
    }
}

impl<'a> Source<'a> for Proto<'a> {
    #[inline(always)]
    fn next_field(&mut self, fields: &'static Fields) -> Result<Option<u32>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let at = self.pos;
        let key = self.varint()?;
        let tag = key >> 3;
        if tag == 0 || tag > u64::from(u32::MAX >> 3) {
            return Err(self.err(at, format!("invalid field number {tag}")));
        }
        self.wire = (key & 7) as u8;
        self.tag = tag as u32;
        self.field_at = at;
        self.fields = Some(fields);
        Ok(Some(self.tag))
    }

    fn skip(&mut self) -> Result<()> {
        match self.wire {
            VARINT => self.varint().map(drop),
            I64 => self.take(8).map(drop),
            LEN => self.len_delimited().map(drop),
            I32 => self.take(4).map(drop),
            START_GROUP => {
                // A deprecated group: skip fields up to the matching end-group key, as prost does.
                let tag = self.tag;
                if self.depth >= MAX_DEPTH {
                    return Err(self.err(self.field_at, "messages nested too deeply"));
                }
                self.depth += 1;
                loop {
                    if self.pos >= self.end {
                        return Err(self.err(self.pos, "group without an end"));
                    }
                    let at = self.pos;
                    let key = self.varint()?;
                    if key >> 3 == 0 || key >> 3 > u64::from(u32::MAX >> 3) {
                        return Err(self.err(at, format!("invalid field number {}", key >> 3)));
                    }
                    self.wire = (key & 7) as u8;
                    self.tag = (key >> 3) as u32;
                    self.field_at = at;
                    if self.wire == END_GROUP {
                        if self.tag != tag {
                            return Err(self.err(at, "group ends with the wrong field number"));
                        }
                        break;
                    }
                    self.skip()?;
                }
                self.depth -= 1;
                Ok(())
            }
            other => Err(self.err(self.field_at, format!("unexpected wire type {other}"))),
        }
    }

    #[inline(always)]
    fn message<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.expect(LEN)?;
        let at = self.pos;
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| self.err(at, "length does not fit in memory"))?;
        if self.end - self.pos < len {
            return Err(self.err(
                at,
                format!(
                    "message of {len} bytes overruns its parent ({} left)",
                    self.end - self.pos
                ),
            ));
        }
        if self.depth >= MAX_DEPTH {
            return Err(self.err(self.field_at, format!("messages nested more than {MAX_DEPTH} deep")));
        }
        let saved = (self.end, self.fields, self.tag);
        self.end = self.pos + len;
        self.depth += 1;
        // The field's name is looked up only when an error passes through.
        let out = f(self).and_then(|out| self.check_pending().map(|()| out));
        let out = out.map_err(|e| within(e, saved.1.and_then(|f| f.name(saved.2))))?;
        self.depth -= 1;
        self.pos = self.end;
        (self.end, self.fields, self.tag) = saved;
        Ok(out)
    }

    #[inline(always)]
    fn text(&mut self) -> Result<Cow<'a, [u8]>> {
        // A discarded value is never finished into a column: check it now, as prost would.
        if self.strict_utf8 || self.discarding > 0 {
            return self.string().map(|s| match s {
                Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
                Cow::Owned(s) => Cow::Owned(s.into_bytes()),
            });
        }
        self.len_delimited().map(Cow::Borrowed)
    }

    #[inline(always)]
    fn string(&mut self) -> Result<Cow<'a, str>> {
        let at = self.field_at;
        let bytes = self.len_delimited()?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(Cow::Borrowed(s)),
            Err(e) => Err(self.err(at, format!("string is not valid UTF-8: {e}"))),
        }
    }

    #[inline]
    fn bytes(&mut self) -> Result<Cow<'a, [u8]>> {
        self.len_delimited().map(Cow::Borrowed)
    }

    #[inline]
    fn id<const N: usize>(&mut self) -> Result<Option<[u8; N]>> {
        let at = self.field_at;
        let bytes = self.len_delimited()?;
        if bytes.is_empty() {
            self.valid_occurrence();
            return Ok(None);
        }
        match <[u8; N]>::try_from(bytes) {
            Ok(id) => {
                self.valid_occurrence();
                Ok(Some(id))
            }
            Err(_) => {
                let error = self.err(at, format!("id is {} bytes, expected {N}", bytes.len()));
                self.defer(error);
                Ok(None)
            }
        }
    }

    #[inline]
    fn fixed64(&mut self) -> Result<u64> {
        self.expect(I64)?;
        self.fixed64_raw()
    }

    #[inline]
    fn fixed32(&mut self) -> Result<u32> {
        self.expect(I32)?;
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes(bytes.try_into().expect("4 bytes")))
    }

    #[inline]
    fn uint32(&mut self) -> Result<u32> {
        self.expect(VARINT)?;
        // Protobuf truncates a larger varint to its low 32 bits.
        Ok(self.varint()? as u32)
    }

    #[inline]
    fn int64(&mut self) -> Result<i64> {
        self.expect(VARINT)?;
        Ok(self.varint()? as i64)
    }

    #[inline]
    fn sfixed64(&mut self) -> Result<i64> {
        self.fixed64().map(|v| v as i64)
    }

    #[inline]
    fn sint32(&mut self) -> Result<i32> {
        self.expect(VARINT)?;
        let v = self.varint()? as u32;
        Ok(((v >> 1) as i32) ^ -((v & 1) as i32))
    }

    #[inline]
    fn double(&mut self) -> Result<f64> {
        self.fixed64().map(f64::from_bits)
    }

    #[inline]
    fn boolean(&mut self) -> Result<bool> {
        self.expect(VARINT)?;
        Ok(self.varint()? != 0)
    }

    fn enumeration(&mut self, values: EnumValues) -> Result<i32> {
        self.expect(VARINT)?;
        let at = self.field_at;
        let value = self.varint()? as i32;
        if check_enum(value, values).is_some() {
            self.valid_occurrence();
        } else {
            let error = self.err(at, format!("unknown enum value {value}"));
            self.defer(error);
        }
        Ok(value)
    }

    fn packed_fixed64(&mut self, out: &mut Vec<u64>) -> Result<()> {
        self.packed(I64, out, |s| s.fixed64_raw())
    }

    fn packed_uint64(&mut self, out: &mut Vec<u64>) -> Result<()> {
        self.packed(VARINT, out, |s| s.varint())
    }

    fn packed_double(&mut self, out: &mut Vec<f64>) -> Result<()> {
        self.packed(I64, out, |s| s.fixed64_raw().map(f64::from_bits))
    }

    fn error(&self, reason: String) -> Error {
        self.err(self.field_at, reason)
    }

    fn invalid(&mut self, reason: &str) -> Result<()> {
        if self.discarding > 0 {
            Ok(())
        } else {
            Err(self.error(reason.to_owned()))
        }
    }

    #[inline]
    fn fast_key_value(&mut self) -> Option<(&'a [u8], super::value::Value<'a>)> {
        use super::value::Value;
        // Strict and discarding reads check every string as they go: leave them the slow way.
        if self.wire != LEN || self.strict_utf8 || self.discarding > 0 || self.depth + 2 > MAX_DEPTH {
            return None;
        }
        let buf = &self.buf[..self.end];
        let (len, mut p) = varint_at(buf, self.pos)?;
        let end = p.checked_add(len)?;
        if end > buf.len() || buf.get(p) != Some(&0x0a) {
            return None;
        }
        let (key_len, key_at) = varint_at(buf, p + 1)?;
        p = key_at.checked_add(key_len)?;
        if p > end {
            return None;
        }
        let key = &buf[key_at..p];
        let value = if p == end {
            Value::Empty
        } else {
            if buf[p] != 0x12 {
                return None;
            }
            let (value_len, at) = varint_at(buf, p + 1)?;
            if at.checked_add(value_len)? != end {
                return None;
            }
            if value_len == 0 {
                Value::Empty
            } else {
                let member = buf[at];
                let at = at + 1;
                match member {
                    0x0a | 0x3a => {
                        let (n, at) = varint_at(buf, at)?;
                        if at.checked_add(n)? != end {
                            return None;
                        }
                        if member == 0x0a {
                            Value::Str(Cow::Borrowed(&buf[at..end]))
                        } else {
                            Value::Bytes(Cow::Borrowed(&buf[at..end]))
                        }
                    }
                    0x10 | 0x18 => {
                        let (v, at) = varint_u64_at(buf, at)?;
                        if at != end {
                            return None;
                        }
                        if member == 0x10 {
                            Value::Bool(v != 0)
                        } else {
                            Value::Int(v as i64)
                        }
                    }
                    0x21 if end - at == 8 => {
                        Value::Double(f64::from_bits(u64::from_le_bytes(buf[at..end].try_into().ok()?)))
                    }
                    _ => return None,
                }
            }
        };
        self.pos = end;
        Some((key, value))
    }

    fn discarded<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.discarding += 1;
        let out = f(self);
        self.discarding -= 1;
        out
    }

    fn oneof_run(&mut self, members: &[u32]) -> Option<(u32, usize)> {
        let saved = (self.pos, self.wire, self.tag, self.fields, self.field_at);
        let (mut run, mut seen, mut ok) = (None, 0, true);
        while self.pos < self.end {
            let Ok(key) = self.varint() else {
                ok = false;
                break;
            };
            self.wire = (key & 7) as u8;
            if self.skip().is_err() {
                ok = false;
                break;
            }
            let tag = key >> 3;
            if let Some(&member) = members.iter().find(|&&m| u64::from(m) == tag) {
                if !matches!(run, Some((t, _)) if t == member) {
                    run = Some((member, seen));
                }
                seen += 1;
            }
        }
        (self.pos, self.wire, self.tag, self.fields, self.field_at) = saved;
        run.filter(|_| ok)
    }
}

// ---------------------------------------------------------------------------------------------
// OTLP/JSON

/// How deeply OTLP/JSON objects and skipped values may nest.
const MAX_JSON_DEPTH: usize = 128;

/// Per-object state of the JSON reader.
struct Frame {
    /// No key read yet in this object.
    first: bool,
    /// Inside the array value of this field (its tag), yielding one element per `next_field`.
    array: Option<ArrayState>,
}

struct ArrayState {
    tag: u32,
    first: bool,
}

/// Reads OTLP/JSON as the OTLP specification defines it: lowerCamelCase keys, hex trace and
/// span ids, 64-bit integers as strings (numbers are accepted too), enums by number or name,
/// `bytes` in base64, and `null` for an absent field.
pub(crate) struct Json<'a> {
    text: &'a str,
    buf: &'a [u8],
    pos: usize,
    stack: Vec<Frame>,
    fields: Option<&'static Fields>,
    tag: u32,
    /// Start of the current field's key, for error messages.
    field_at: usize,
}

impl<'a> Json<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Result<Self> {
        let text = std::str::from_utf8(buf).map_err(|e| Error::Decode {
            format: PayloadFormat::OtlpJson,
            field: String::new(),
            offset: e.valid_up_to(),
            reason: "payload is not valid UTF-8".into(),
        })?;
        Ok(Json {
            text,
            buf,
            pos: 0,
            stack: Vec::with_capacity(16),
            fields: None,
            tag: 0,
            field_at: 0,
        })
    }

    /// Runs `f` over the top-level object, and checks that only whitespace follows it.
    pub(crate) fn top<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let out = self.object(f)?;
        self.ws();
        if self.pos != self.buf.len() {
            return Err(self.err(self.pos, "unexpected data after the top-level object"));
        }
        Ok(out)
    }

    fn err(&self, at: usize, reason: impl Into<String>) -> Error {
        Error::Decode {
            format: PayloadFormat::OtlpJson,
            field: self
                .fields
                .and_then(|f| f.name(self.tag))
                .map(str::to_owned)
                .unwrap_or_default(),
            offset: at,
            reason: reason.into(),
        }
    }

    #[inline(always)]
    fn ws(&mut self) {
        // Compact JSON has no whitespace between tokens: check once before looping.
        match self.buf.get(self.pos) {
            Some(b' ' | b'\n' | b'\r' | b'\t') => {}
            _ => return,
        }
        while let Some(&b) = self.buf.get(self.pos) {
            if matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    #[inline(always)]
    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.buf.get(self.pos).copied()
    }

    #[inline(always)]
    fn eat(&mut self, byte: u8) -> Result<()> {
        if self.buf.get(self.pos) == Some(&byte) {
            self.pos += 1;
            return Ok(());
        }
        self.eat_slow(byte)
    }

    #[cold]
    #[inline(never)]
    fn eat_slow(&mut self, byte: u8) -> Result<()> {
        match self.peek() {
            Some(b) if b == byte => {
                self.pos += 1;
                Ok(())
            }
            Some(b) => Err(self.err(self.pos, format!("expected `{}`, found `{}`", byte as char, b as char))),
            None => Err(self.err(
                self.pos,
                format!("expected `{}`, found the end of the payload", byte as char),
            )),
        }
    }

    fn literal(&mut self, word: &str) -> Result<()> {
        if self.buf[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.err(self.pos, "invalid JSON value"))
        }
    }

    fn object<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.eat(b'{')?;
        self.stack.push(Frame {
            first: true,
            array: None,
        });
        let depth = self.stack.len();
        if depth > MAX_JSON_DEPTH {
            return Err(self.err(self.pos, format!("objects nested more than {MAX_JSON_DEPTH} deep")));
        }
        let out = f(self)?;
        // Skip whatever `f` left unread, up to and including the closing brace.
        if self.stack.len() == depth {
            while self.next_field_untyped()? {
                self.skip()?;
            }
        }
        Ok(out)
    }

    /// Advances to the next value of the current object (or array element); false at the end
    /// of the object, whose frame is then popped.
    fn next_field_untyped(&mut self) -> Result<bool> {
        static NONE: Fields = Fields { fields: &[] };
        Ok(self.next_field(&NONE)?.is_some())
    }

    /// Reads a string token; borrowed unless it has escapes.
    fn string_token(&mut self) -> Result<Cow<'a, str>> {
        let start = self.pos;
        self.eat(b'"')?;
        let body = self.pos;
        let Some(n) = find_quote_or_backslash(&self.buf[body..]) else {
            return Err(self.err(start, "unterminated string"));
        };
        if self.buf[body + n] == b'"' {
            self.pos = body + n + 1;
            return Ok(Cow::Borrowed(&self.text[body..body + n]));
        }
        let mut out = String::with_capacity(n + 16);
        out.push_str(&self.text[body..body + n]);
        self.pos = body + n;
        loop {
            let Some(n) = find_quote_or_backslash(&self.buf[self.pos..]) else {
                return Err(self.err(start, "unterminated string"));
            };
            out.push_str(&self.text[self.pos..self.pos + n]);
            self.pos += n;
            if self.buf[self.pos] == b'"' {
                self.pos += 1;
                return Ok(Cow::Owned(out));
            }
            let esc_at = self.pos;
            let Some(&e) = self.buf.get(self.pos + 1) else {
                return Err(self.err(start, "unterminated string"));
            };
            self.pos += 2;
            match e {
                b'"' => out.push('"'),
                b'\\' => out.push('\\'),
                b'/' => out.push('/'),
                b'b' => out.push('\u{8}'),
                b'f' => out.push('\u{c}'),
                b'n' => out.push('\n'),
                b'r' => out.push('\r'),
                b't' => out.push('\t'),
                b'u' => {
                    let hi = self.hex4(esc_at)?;
                    let c = if (0xd800..0xdc00).contains(&hi) {
                        if self.buf.get(self.pos..self.pos + 2) != Some(b"\\u") {
                            return Err(self.err(esc_at, "unpaired surrogate in \\u escape"));
                        }
                        self.pos += 2;
                        let lo = self.hex4(esc_at)?;
                        if !(0xdc00..0xe000).contains(&lo) {
                            return Err(self.err(esc_at, "unpaired surrogate in \\u escape"));
                        }
                        0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00)
                    } else {
                        hi
                    };
                    out.push(char::from_u32(c).ok_or_else(|| self.err(esc_at, "invalid \\u escape"))?);
                }
                _ => return Err(self.err(esc_at, "invalid escape in string")),
            }
        }
    }

    fn hex4(&mut self, at: usize) -> Result<u32> {
        let digits = self
            .buf
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.err(at, "truncated \\u escape"))?;
        let mut v = 0u32;
        for &d in digits {
            v = v * 16 + hex_digit(d).ok_or_else(|| self.err(at, "invalid \\u escape"))? as u32;
        }
        self.pos += 4;
        Ok(v)
    }

    /// The text of a number token, or of a string token when the value is quoted.
    fn number_text(&mut self) -> Result<(Cow<'a, str>, bool)> {
        match self.peek() {
            Some(b'"') => Ok((self.string_token()?, true)),
            Some(b'-' | b'0'..=b'9') => {
                let start = self.pos;
                while let Some(&b) = self.buf.get(self.pos) {
                    if matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
                        self.pos += 1;
                    } else {
                        break;
                    }
                }
                Ok((Cow::Borrowed(&self.text[start..self.pos]), false))
            }
            _ => Err(self.err(self.pos, "expected a number")),
        }
    }

    fn integer<T: std::str::FromStr>(&mut self, what: &str) -> Result<T> {
        let at = self.pos;
        let (text, _) = self.number_text()?;
        if let Ok(v) = text.parse::<T>() {
            return Ok(v);
        }
        // proto3 JSON allows an integral value written with an exponent or fraction, e.g. 1e3 or 5.0.
        match text.parse::<f64>() {
            Ok(f) if f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 => format!("{f:.0}")
                .parse::<T>()
                .map_err(|_| self.err(at, format!("`{text}` is not a valid {what}"))),
            _ => Err(self.err(at, format!("`{text}` is not a valid {what}"))),
        }
    }

    /// Skips any JSON value.
    fn skip_value(&mut self) -> Result<()> {
        self.skip_nested(0)
    }

    /// Skips a value nested `depth` deep in the value being skipped; bounded like `object`,
    /// so hostile nesting is an error rather than a stack overflow.
    fn skip_nested(&mut self, depth: usize) -> Result<()> {
        if self.stack.len() + depth > MAX_JSON_DEPTH {
            return Err(self.err(self.pos, format!("values nested more than {MAX_JSON_DEPTH} deep")));
        }
        match self.peek() {
            Some(b'{') => {
                self.pos += 1;
                let mut first = true;
                loop {
                    if self.peek() == Some(b'}') {
                        self.pos += 1;
                        return Ok(());
                    }
                    if !first {
                        self.eat(b',')?;
                    }
                    first = false;
                    self.ws();
                    self.string_token()?;
                    self.eat(b':')?;
                    self.skip_nested(depth + 1)?;
                }
            }
            Some(b'[') => {
                self.pos += 1;
                let mut first = true;
                loop {
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                        return Ok(());
                    }
                    if !first {
                        self.eat(b',')?;
                    }
                    first = false;
                    self.skip_nested(depth + 1)?;
                }
            }
            Some(b'"') => self.string_token().map(drop),
            Some(b't') => self.literal("true"),
            Some(b'f') => self.literal("false"),
            Some(b'n') => self.literal("null"),
            Some(b'-' | b'0'..=b'9') => {
                let at = self.pos;
                let (text, _) = self.number_text()?;
                text.parse::<f64>()
                    .map(drop)
                    .map_err(|_| self.err(at, format!("`{text}` is not a number")))
            }
            Some(b) => Err(self.err(self.pos, format!("unexpected `{}`", b as char))),
            None => Err(self.err(self.pos, "unexpected end of the payload")),
        }
    }
}

/// The first `"` or `\\` in `s`. Keys and most values are short, so the first 32 bytes are
/// searched eight at a time in a register; longer strings go to `memchr`'s vector search.
#[inline(always)]
fn find_quote_or_backslash(s: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    #[inline(always)]
    fn zero_bytes(x: u64) -> u64 {
        // Exact for the lowest zero byte, which is all we use.
        x.wrapping_sub(ONES) & !x & HIGHS
    }
    let mut i = 0;
    while i + 8 <= s.len() && i < 32 {
        let w = u64::from_le_bytes(s[i..i + 8].try_into().expect("8 bytes"));
        let m = zero_bytes(w ^ (ONES * u64::from(b'"'))) | zero_bytes(w ^ (ONES * u64::from(b'\\')));
        if m != 0 {
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    if i < 32 {
        return s[i..].iter().position(|&b| b == b'"' || b == b'\\').map(|p| p + i);
    }
    memchr::memchr2(b'"', b'\\', &s[i..]).map(|p| p + i)
}

impl<'a> Json<'a> {
    /// `{"key":"k","value":{"<member>":<scalar>}}` (whitespace allowed), with no escapes in the
    /// strings: the common shape of an attribute, read without the object machinery. `None`
    /// for anything else; the caller restores the position and reads it the general way.
    fn fast_key_value_at(&mut self) -> Option<(&'a [u8], super::value::Value<'a>)> {
        use super::value::Value;
        self.fast_token(b"{")?;
        self.fast_token(b"\"key\"")?;
        self.fast_token(b":")?;
        let key = self.fast_plain_string()?;
        self.ws();
        if self.fast_token(b"}").is_some() {
            return Some((key.as_bytes(), Value::Empty));
        }
        self.fast_token(b",")?;
        self.fast_token(b"\"value\"")?;
        self.fast_token(b":")?;
        self.fast_token(b"{")?;
        self.ws();
        if self.fast_token(b"}").is_some() {
            self.fast_token(b"}")?;
            return Some((key.as_bytes(), Value::Empty));
        }
        let member = self.fast_plain_string()?;
        self.fast_token(b":")?;
        self.ws();
        let value = match member {
            "stringValue" => Value::Str(Cow::Borrowed(self.fast_plain_string()?.as_bytes())),
            "boolValue" => {
                if self.fast_token(b"true").is_some() {
                    Value::Bool(true)
                } else {
                    self.fast_token(b"false")?;
                    Value::Bool(false)
                }
            }
            "intValue" => {
                let text = if self.buf.get(self.pos) == Some(&b'"') {
                    self.fast_plain_string()?
                } else {
                    self.fast_number()?
                };
                Value::Int(text.parse().ok()?)
            }
            "doubleValue" => Value::Double(self.fast_number()?.parse().ok()?),
            _ => return None,
        };
        self.fast_token(b"}")?;
        self.fast_token(b"}")?;
        Some((key.as_bytes(), value))
    }

    /// Skips whitespace, then `token`.
    #[inline(always)]
    fn fast_token(&mut self, token: &[u8]) -> Option<()> {
        self.ws();
        if self.buf[self.pos..].starts_with(token) {
            self.pos += token.len();
            Some(())
        } else {
            None
        }
    }

    /// A string without escapes.
    #[inline(always)]
    fn fast_plain_string(&mut self) -> Option<&'a str> {
        self.fast_token(b"\"")?;
        let n = find_quote_or_backslash(&self.buf[self.pos..])?;
        if self.buf[self.pos + n] != b'"' {
            return None;
        }
        let text = &self.text[self.pos..self.pos + n];
        self.pos += n + 1;
        Some(text)
    }

    /// A number token's text (JSON's grammar is checked by the caller's `parse`).
    #[inline(always)]
    fn fast_number(&mut self) -> Option<&'a str> {
        let start = self.pos;
        if !matches!(self.buf.get(start), Some(b'-' | b'0'..=b'9')) {
            return None;
        }
        while let Some(&b) = self.buf.get(self.pos) {
            if matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
                self.pos += 1;
            } else {
                break;
            }
        }
        (self.pos > start).then(|| &self.text[start..self.pos])
    }
}

/// A varint at `at` in `buf` and the position after it; `None` if truncated or over 10 bytes.
#[inline(always)]
fn varint_u64_at(buf: &[u8], at: usize) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for i in 0..10 {
        let byte = *buf.get(at + i)?;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            // A tenth byte may only carry the top bit.
            return (i < 9 || byte <= 1).then_some((value, at + i + 1));
        }
    }
    None
}

/// A length varint: like [`varint_u64_at`], as a `usize`.
#[inline(always)]
fn varint_at(buf: &[u8], at: usize) -> Option<(usize, usize)> {
    varint_u64_at(buf, at).and_then(|(v, p)| Some((usize::try_from(v).ok()?, p)))
}

fn hex_digit(d: u8) -> Option<u8> {
    match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        b'A'..=b'F' => Some(d - b'A' + 10),
        _ => None,
    }
}

impl<'a> Source<'a> for Json<'a> {
    fn next_field(&mut self, fields: &'static Fields) -> Result<Option<u32>> {
        loop {
            let frame = self.stack.last_mut().expect("next_field outside an object");
            if let Some(array) = &mut frame.array {
                let tag = array.tag;
                let first = std::mem::replace(&mut array.first, false);
                match self.peek() {
                    Some(b']') => {
                        self.pos += 1;
                        self.stack.last_mut().expect("frame").array = None;
                        continue;
                    }
                    _ if !first => self.eat(b',')?,
                    _ => {}
                }
                if self.peek() == Some(b'n') {
                    self.literal("null")?;
                    continue;
                }
                self.fields = Some(fields);
                self.tag = tag;
                return Ok(Some(tag));
            }
            let first = std::mem::replace(&mut frame.first, false);
            match self.peek() {
                Some(b'}') => {
                    self.pos += 1;
                    self.stack.pop();
                    return Ok(None);
                }
                _ if !first => self.eat(b',')?,
                _ => {}
            }
            self.ws();
            let key_at = self.pos;
            let key = self.string_token()?;
            self.eat(b':')?;
            let Some(tag) = fields.tag(&key) else {
                // Unknown keys are ignored, as the OTLP specification asks of receivers.
                self.skip_value()?;
                continue;
            };
            self.fields = Some(fields);
            self.tag = tag;
            self.field_at = key_at;
            match self.peek() {
                Some(b'n') => {
                    self.literal("null")?;
                    continue;
                }
                Some(b'[') => {
                    self.pos += 1;
                    self.stack.last_mut().expect("frame").array = Some(ArrayState { tag, first: true });
                    continue;
                }
                _ => return Ok(Some(tag)),
            }
        }
    }

    fn skip(&mut self) -> Result<()> {
        self.skip_value()
    }

    fn message<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let saved = (self.fields, self.tag);
        let out = self
            .object(f)
            .map_err(|e| within(e, saved.0.and_then(|f| f.name(saved.1))))?;
        (self.fields, self.tag) = saved;
        Ok(out)
    }

    fn fast_key_value(&mut self) -> Option<(&'a [u8], super::value::Value<'a>)> {
        let start = self.pos;
        let read = self.fast_key_value_at();
        if read.is_none() {
            self.pos = start;
        }
        read
    }

    fn text(&mut self) -> Result<Cow<'a, [u8]>> {
        // The whole payload was validated up front.
        self.string().map(|s| match s {
            Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
            Cow::Owned(s) => Cow::Owned(s.into_bytes()),
        })
    }

    fn string(&mut self) -> Result<Cow<'a, str>> {
        if self.peek() != Some(b'"') {
            return Err(self.err(self.pos, "expected a string"));
        }
        self.string_token()
    }

    fn bytes(&mut self) -> Result<Cow<'a, [u8]>> {
        use base64::Engine;
        use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
        let at = self.pos;
        let text = self.string()?;
        // proto3 JSON accepts standard or URL-safe base64, with or without padding.
        let alphabet = if text.contains(['-', '_']) {
            &base64::alphabet::URL_SAFE
        } else {
            &base64::alphabet::STANDARD
        };
        let config = GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
        GeneralPurpose::new(alphabet, config)
            .decode(text.as_bytes())
            .map(Cow::Owned)
            .map_err(|e| self.err(at, format!("invalid base64: {e}")))
    }

    fn id<const N: usize>(&mut self) -> Result<Option<[u8; N]>> {
        let at = self.pos;
        let text = self.string()?;
        if text.is_empty() {
            return Ok(None);
        }
        let digits = text.as_bytes();
        if digits.len() != 2 * N {
            return Err(self.err(
                at,
                format!(
                    "id is {} hex digits ({} bytes), expected {} ({N} bytes)",
                    digits.len(),
                    digits.len() / 2,
                    2 * N
                ),
            ));
        }
        let mut id = [0u8; N];
        for (i, pair) in digits.chunks_exact(2).enumerate() {
            match (hex_digit(pair[0]), hex_digit(pair[1])) {
                (Some(h), Some(l)) => id[i] = h << 4 | l,
                _ => return Err(self.err(at, format!("id `{text}` is not hexadecimal"))),
            }
        }
        Ok(Some(id))
    }

    fn fixed64(&mut self) -> Result<u64> {
        self.integer("unsigned 64-bit integer")
    }

    fn fixed32(&mut self) -> Result<u32> {
        self.integer("unsigned 32-bit integer")
    }

    fn uint32(&mut self) -> Result<u32> {
        self.integer("unsigned 32-bit integer")
    }

    fn int64(&mut self) -> Result<i64> {
        self.integer("64-bit integer")
    }

    fn sfixed64(&mut self) -> Result<i64> {
        self.integer("64-bit integer")
    }

    fn sint32(&mut self) -> Result<i32> {
        self.integer("32-bit integer")
    }

    fn double(&mut self) -> Result<f64> {
        let at = self.pos;
        let (text, quoted) = self.number_text()?;
        if quoted {
            match &*text {
                "NaN" => return Ok(f64::NAN),
                "Infinity" => return Ok(f64::INFINITY),
                "-Infinity" => return Ok(f64::NEG_INFINITY),
                _ => {}
            }
        }
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() || !text.bytes().any(|b| b.is_ascii_alphabetic() && b != b'e' && b != b'E') => Ok(v),
            _ => Err(self.err(at, format!("`{text}` is not a valid double"))),
        }
    }

    fn boolean(&mut self) -> Result<bool> {
        match self.peek() {
            Some(b't') => self.literal("true").map(|()| true),
            Some(b'f') => self.literal("false").map(|()| false),
            _ => Err(self.err(self.pos, "expected `true` or `false`")),
        }
    }

    fn enumeration(&mut self, values: EnumValues) -> Result<i32> {
        let at = self.pos;
        if self.peek() == Some(b'"') {
            let text = self.string_token()?;
            if let Some((v, _)) = values.iter().find(|(_, n)| *n == text) {
                return Ok(*v);
            }
            if let Ok(v) = text.parse::<i32>() {
                return check_enum(v, values).ok_or_else(|| self.err(at, format!("unknown enum value {v}")));
            }
            return Err(self.err(at, format!("unknown enum value `{text}`")));
        }
        let v: i32 = self.integer("enum number")?;
        check_enum(v, values).ok_or_else(|| self.err(at, format!("unknown enum value {v}")))
    }

    fn packed_fixed64(&mut self, out: &mut Vec<u64>) -> Result<()> {
        out.push(self.fixed64()?);
        Ok(())
    }

    fn packed_uint64(&mut self, out: &mut Vec<u64>) -> Result<()> {
        out.push(self.fixed64()?);
        Ok(())
    }

    fn packed_double(&mut self, out: &mut Vec<f64>) -> Result<()> {
        out.push(self.double()?);
        Ok(())
    }

    fn error(&self, reason: String) -> Error {
        self.err(self.field_at, reason)
    }

    fn oneof_run(&mut self, _members: &[u32]) -> Option<(u32, usize)> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static POINT: Fields = Fields {
        fields: &[(1, "x"), (2, "tags"), (3, "child"), (4, "id")],
    };

    type Point = (u64, Vec<String>, Vec<u64>, Option<[u8; 2]>);

    fn read_point<'a, S: Source<'a>>(s: &mut S) -> Result<Point> {
        let mut x = 0;
        let mut tags = Vec::new();
        let mut children = Vec::new();
        let mut id = None;
        while let Some(tag) = s.next_field(&POINT)? {
            match tag {
                1 => x = s.fixed64()?,
                2 => tags.push(s.string()?.into_owned()),
                3 => children.push(s.message(|s| read_point(s).map(|p| p.0))?),
                4 => id = s.id::<2>()?,
                _ => s.skip()?,
            }
        }
        Ok((x, tags, children, id))
    }

    #[test]
    fn json_arrays_yield_one_field_per_element_and_unknown_keys_are_skipped() {
        let text = br#" { "x": "7", "zzz": [1, {"a": [null]}], "tags": ["a", "b\u00e9\n"], "child": [{"x": 1}, {"x": 2e0}], "id": "0aFf", "tags": null } "#;
        let mut json = Json::new(text).unwrap();
        let p = json.top(read_point).unwrap();
        assert_eq!(
            p,
            (
                7,
                vec!["a".to_owned(), "bé\n".to_owned()],
                vec![1, 2],
                Some([0x0a, 0xff])
            )
        );
    }

    #[test]
    fn quote_finder_agrees_with_a_plain_scan() {
        let text = b"abcdefgh\\ijklmnopqrstuvwxyz0123456789\"ABCDEFGHIJKLMNOPQRSTUVWXYZ\"\xc3\xa9";
        for start in 0..text.len() {
            for end in start..=text.len() {
                let s = &text[start..end];
                let want = s.iter().position(|&b| b == b'"' || b == b'\\');
                assert_eq!(find_quote_or_backslash(s), want, "{start}..{end}");
            }
        }
    }

    #[test]
    fn json_errors_name_the_field_and_offset() {
        let text = br#"{"child": [{"x": 1}, {"id": "abc"}]}"#;
        let err = Json::new(text).unwrap().top(read_point).unwrap_err();
        match err {
            Error::Decode { field, offset, .. } => {
                assert_eq!(field, "child.id");
                assert_eq!(offset, 28);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn proto_reads_nested_messages_and_reports_overruns() {
        // x = 5 (fixed64), child { x = 1 }, tags "hi"
        let mut buf = vec![0x09, 5, 0, 0, 0, 0, 0, 0, 0];
        buf.extend([0x1a, 9, 0x09, 1, 0, 0, 0, 0, 0, 0, 0]);
        buf.extend([0x12, 2, b'h', b'i']);
        let p = Proto::new(&buf).top(read_point).unwrap();
        assert_eq!(p, (5, vec!["hi".to_owned()], vec![1], None));

        let mut bad = buf.clone();
        bad[10] = 20; // child claims 20 bytes
        let err = Proto::new(&bad).top(read_point).unwrap_err();
        assert!(err.to_string().contains("overruns"), "{err}");
    }
}
