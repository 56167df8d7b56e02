//! The WAL envelope: a versioned, self-describing binary form of a batch.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::meta::Tenant;
use crate::{BatchId, BatchMeta, Compression, Error, PayloadFormat, Result, Signal, SourceKind};

const MAGIC: [u8; 4] = *b"WBAT";
/// Magic, version and header length.
const PREFIX_LEN: usize = 4 + 2 + 4;
/// The smallest encoded part: format, compression, message count, absent offset, payload length.
const MIN_PART_LEN: usize = 1 + 1 + 4 + 1 + 8;
/// The smallest encoded topic: its length.
const MIN_TOPIC_LEN: usize = 4;
/// The longest idempotency key, in bytes.
const MAX_KEY_LEN: usize = 255;
/// The largest receipt, in bytes.
const MAX_RECEIPT_LEN: usize = 64 << 10;

/// The idempotency key a part was submitted under, with the host's receipt: its answer to
/// the request, given again to a repeat of it. Both travel in the WAL with the part, so a
/// key taken before a crash is still known after it.
///
/// ```
/// use wit_batch::Idempotency;
///
/// let idem = Idempotency::try_new("order-7f3a", &b"{\"accepted\":3}"[..])?;
/// assert_eq!(idem.key(), "order-7f3a");
/// assert!(Idempotency::try_new("", &b""[..]).is_err());
/// assert!(Idempotency::try_new("two words", &b""[..]).is_err());
/// # Ok::<_, wit_batch::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Idempotency {
    key: String,
    receipt: Bytes,
}

impl Idempotency {
    /// The key and receipt, checked: a key is 1 to 255 bytes of visible ASCII (`!` to `~`,
    /// as an HTTP header value without spaces), a receipt at most 64 KiB.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidIdempotencyKey`], saying what is wrong.
    pub fn try_new(key: impl Into<String>, receipt: impl Into<Bytes>) -> Result<Idempotency> {
        let key = key.into();
        let receipt = receipt.into();
        Self::check(&key, receipt.len()).map_err(|reason| Error::InvalidIdempotencyKey {
            key: key.chars().take(64).collect(),
            reason,
        })?;
        Ok(Idempotency { key, receipt })
    }

    /// Why `key` (with a receipt of `receipt_len` bytes) is not valid, if it is not: the
    /// rule [`try_new`](Self::try_new) applies, for those who keep keys elsewhere (a tracker).
    ///
    /// ```
    /// use wit_batch::Idempotency;
    ///
    /// assert!(Idempotency::check("req-1", 10).is_ok());
    /// assert!(Idempotency::check("req 1", 10).unwrap_err().contains("visible ASCII"));
    /// ```
    ///
    /// # Errors
    ///
    /// The reason, as [`Error::InvalidIdempotencyKey`] words it.
    pub fn check(key: &str, receipt_len: usize) -> std::result::Result<(), String> {
        if key.is_empty() {
            return Err("an idempotency key is not empty".to_owned());
        }
        if key.len() > MAX_KEY_LEN {
            return Err(format!(
                "an idempotency key has at most {MAX_KEY_LEN} bytes, this one {}",
                key.len()
            ));
        }
        if let Some((at, c)) = key.char_indices().find(|(_, c)| !('!'..='~').contains(c)) {
            return Err(format!(
                "an idempotency key is visible ASCII ('!' to '~'); byte {at} is {c:?}"
            ));
        }
        if receipt_len > MAX_RECEIPT_LEN {
            return Err(format!(
                "a receipt has at most {MAX_RECEIPT_LEN} bytes, this one {receipt_len}"
            ));
        }
        Ok(())
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The receipt.
    pub fn receipt(&self) -> &Bytes {
        &self.receipt
    }

    fn encoded_len(&self) -> usize {
        1 + self.key.len() + 4 + self.receipt.len()
    }
}

/// One payload as received, with what is needed to convert it again.
///
/// ```
/// use wit_batch::{Compression, Part, PayloadFormat};
///
/// let part = Part::new(PayloadFormat::OtlpProtobuf, Compression::Gzip, 1, vec![0x1f, 0x8b])
///     .with_source_offset(42);
/// assert_eq!(part.source_offset, Some(42));
/// assert_eq!(part.payload.len(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// How the payload is encoded.
    pub format: PayloadFormat,
    /// How the payload is compressed.
    pub compression: Compression,
    /// How many messages the payload counts as (1 for one OTLP request or one Kafka message).
    pub message_count: u32,
    /// The source's offset of the payload (Kafka), if it has one.
    pub source_offset: Option<i64>,
    /// The payload bytes exactly as received (still compressed, if they arrived compressed).
    pub payload: Bytes,
    /// The idempotency key the part was submitted under, if any.
    pub idempotency: Option<Idempotency>,
}

impl Part {
    /// A part without a source offset.
    pub fn new(format: PayloadFormat, compression: Compression, message_count: u32, payload: impl Into<Bytes>) -> Part {
        Part {
            format,
            compression,
            message_count,
            source_offset: None,
            payload: payload.into(),
            idempotency: None,
        }
    }

    /// The part with this source offset.
    pub fn with_source_offset(mut self, offset: i64) -> Part {
        self.source_offset = Some(offset);
        self
    }

    /// The part submitted under this idempotency key.
    pub fn with_idempotency(mut self, idempotency: Idempotency) -> Part {
        self.idempotency = Some(idempotency);
        self
    }

    /// The bytes the part weighs in a batch: its payload's, and its idempotency key's and
    /// receipt's if it has them (a batcher counts these against its `max_bytes`).
    pub fn size(&self) -> u64 {
        let key = self.idempotency.as_ref().map_or(0, Idempotency::encoded_len);
        (self.payload.len() + key) as u64
    }

    /// The part's encoded length in an envelope of `version`.
    fn encoded_len(&self, version: u16) -> usize {
        let idempotency = match (version, &self.idempotency) {
            (1, _) => 0,
            (_, None) => 1,
            (_, Some(idem)) => 1 + idem.encoded_len(),
        };
        1 + 1 + 4 + offset_len(self.source_offset) + idempotency + 8 + self.payload.len()
    }
}

/// A batch as it is written to the WAL: its [`BatchMeta`] and its [`Part`]s, with each
/// payload exactly as it was received, so a replay reconverts exactly what arrived.
///
/// # Format (versions 1 and 2)
///
/// All integers are little-endian; strings are UTF-8.
///
/// ```text
/// envelope = magic "WBAT" | version u16 (1, 2 or 3) | header_len u32 | header | part_count u32 | part*
/// header   = batch id (16 B, UUID byte order) | created_at: secs i64, nanos u32
///          | tenant: len u8, bytes | signal code u8 | source kind code u8
///          | message_count u64 | byte_size u64
///          | first_offset: flag u8 (0 or 1), i64 if 1 | last_offset: flag u8, i64 if 1
///          | topic_count u32 | topic*: len u32, bytes
///          | (version 3 only) partition i32, not negative
/// part     = format code u8 | compression code u8 | message_count u32
///          | source_offset: flag u8, i64 if 1
///          | (versions 2 and 3) idempotency: flag u8, if 1: key_len u8, key, receipt_len u32, receipt
///          | payload_len u64 | payload
/// ```
///
/// Version 2 added the parts' [`Idempotency`] keys. An envelope is written in version 1
/// when none of its parts has a key (so such envelopes are byte for byte what earlier builds
/// wrote, and those builds read them), in version 2 otherwise. Version 3 added the source
/// partition of a batch of one partition (Kafka); it is written only for such a batch. All
/// three are read.
///
/// `header_len` counts the header's bytes exactly, so [`decode_header`](Self::decode_header)
/// reads a batch's metadata without touching its payloads. The encoding is canonical: bytes
/// that decode encode back to themselves (so a version 2 envelope without any key is
/// refused: it is written as version 1). It carries no checksum; the WAL checksums records.
///
/// # Invariants
///
/// The header's `message_count` is the sum of the parts' message counts and its `byte_size`
/// the sum of their payload lengths. [`Envelope::new`] sets both; decoding checks them.
///
/// ```
/// use bytes::Bytes;
/// use wit_batch::{BatchId, BatchMeta, Compression, Envelope, Part, PayloadFormat, Signal, SourceKind, Tenant};
///
/// let id = BatchId::new();
/// let meta = BatchMeta {
///     id,
///     tenant: Tenant::try_new("acme")?,
///     signal: Signal::Traces,
///     source: SourceKind::Http,
///     message_count: 0, // set by `Envelope::new`
///     byte_size: 0,     // likewise
///     first_offset: None,
///     last_offset: None,
///     topics: Vec::new(),
///     partition: None,
///     created_at: id.created_at(),
/// };
/// let parts = vec![
///     Part::new(PayloadFormat::OtlpProtobuf, Compression::None, 1, &b"\x0a\x00"[..]),
///     Part::new(PayloadFormat::OtlpJson, Compression::None, 1, &b"{}"[..]),
/// ];
/// let envelope = Envelope::new(meta, parts);
/// assert_eq!(envelope.meta().message_count, 2);
/// assert_eq!(envelope.meta().byte_size, 4);
///
/// let bytes = Bytes::from(envelope.encode()); // what the WAL stores
/// assert_eq!(Envelope::decode_header(&bytes)?, *envelope.meta());
/// let decoded = Envelope::decode(&bytes)?; // payloads share `bytes`, no copy
/// assert_eq!(decoded, envelope);
/// # Ok::<_, wit_batch::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    meta: BatchMeta,
    parts: Vec<Part>,
}

/// The decoded header and where some of its fields are, for later checks.
struct Header {
    meta: BatchMeta,
    version: u16,
    /// Offset of the first byte after the header.
    end: usize,
    message_count_at: usize,
    byte_size_at: usize,
}

impl Envelope {
    /// The newest envelope format version: this build reads versions 1 to `VERSION`.
    pub const VERSION: u16 = 3;

    /// The version [`encode`](Self::encode) writes: 3 for a batch of one source partition
    /// ([`BatchMeta::partition`]), else 2 when a part has an idempotency key, else 1.
    pub fn version(&self) -> u16 {
        if self.meta.partition.is_some() {
            3
        } else if self.parts.iter().any(|p| p.idempotency.is_some()) {
            2
        } else {
            1
        }
    }

    /// The envelope of `meta` and `parts`.
    ///
    /// `meta.message_count` and `meta.byte_size` are set from the parts (the sum of their
    /// message counts and of their payload lengths); the rest of `meta` is kept as given.
    pub fn new(mut meta: BatchMeta, parts: Vec<Part>) -> Envelope {
        meta.message_count = parts.iter().map(|p| u64::from(p.message_count)).sum();
        meta.byte_size = parts.iter().map(|p| p.payload.len() as u64).sum();
        Envelope { meta, parts }
    }

    /// The batch's metadata: the envelope's header.
    pub fn meta(&self) -> &BatchMeta {
        &self.meta
    }

    /// The parts, in the order they were received.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// The metadata and the parts.
    pub fn into_inner(self) -> (BatchMeta, Vec<Part>) {
        (self.meta, self.parts)
    }

    /// The length of [`encode`](Self::encode)'s output.
    pub fn encoded_len(&self) -> usize {
        let version = self.version();
        let parts: usize = self.parts.iter().map(|p| p.encoded_len(version)).sum();
        PREFIX_LEN + self.header_len() + 4 + parts
    }

    /// The envelope's bytes.
    ///
    /// # Panics
    ///
    /// If there are 2³² or more parts or topics, or a topic of 4 GiB or more.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// Appends the envelope's bytes to `out`.
    ///
    /// # Panics
    ///
    /// As [`encode`](Self::encode).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        let start = out.len();
        let header_len = self.header_len();
        let version = self.version();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&version.to_le_bytes());
        out.extend_from_slice(&len_u32(header_len, "header").to_le_bytes());

        let meta = &self.meta;
        out.extend_from_slice(&meta.id.to_bytes());
        let (secs, nanos) = unix_parts(meta.created_at);
        out.extend_from_slice(&secs.to_le_bytes());
        out.extend_from_slice(&nanos.to_le_bytes());
        let tenant = meta.tenant.as_str().as_bytes();
        out.push(u8::try_from(tenant.len()).expect("tenants are at most 128 bytes"));
        out.extend_from_slice(tenant);
        out.push(meta.signal.code());
        out.push(meta.source.code());
        out.extend_from_slice(&meta.message_count.to_le_bytes());
        out.extend_from_slice(&meta.byte_size.to_le_bytes());
        put_offset(out, meta.first_offset);
        put_offset(out, meta.last_offset);
        out.extend_from_slice(&len_u32(meta.topics.len(), "topic count").to_le_bytes());
        for topic in &meta.topics {
            out.extend_from_slice(&len_u32(topic.len(), "topic").to_le_bytes());
            out.extend_from_slice(topic.as_bytes());
        }
        if let Some(partition) = meta.partition {
            out.extend_from_slice(&partition.to_le_bytes());
        }
        debug_assert_eq!(out.len() - start, PREFIX_LEN + header_len);

        out.extend_from_slice(&len_u32(self.parts.len(), "part count").to_le_bytes());
        for part in &self.parts {
            out.push(part.format.code());
            out.push(part.compression.code());
            out.extend_from_slice(&part.message_count.to_le_bytes());
            put_offset(out, part.source_offset);
            if version >= 2 {
                match &part.idempotency {
                    None => out.push(0),
                    Some(idem) => {
                        out.push(1);
                        out.push(u8::try_from(idem.key.len()).expect("keys are checked to 255 bytes"));
                        out.extend_from_slice(idem.key.as_bytes());
                        out.extend_from_slice(&len_u32(idem.receipt.len(), "receipt").to_le_bytes());
                        out.extend_from_slice(&idem.receipt);
                    }
                }
            }
            out.extend_from_slice(&(part.payload.len() as u64).to_le_bytes());
            out.extend_from_slice(&part.payload);
        }
        debug_assert_eq!(out.len() - start, self.encoded_len());
    }

    /// Decodes an envelope. The payloads are slices of `bytes`, not copies.
    ///
    /// The whole of `bytes` must be one envelope: nothing may follow the last part.
    ///
    /// # Errors
    ///
    /// - [`Error::UnsupportedEnvelopeVersion`] for a version other than 1 to [`Envelope::VERSION`];
    /// - [`Error::Envelope`], naming the byte offset, for anything else that is wrong: a wrong
    ///   magic, truncation (with how many bytes were needed and how many were there), a header
    ///   length that does not match its fields, a payload that runs past the end, trailing
    ///   bytes, counts in the header that do not match the parts, an unknown signal, source
    ///   kind, format or compression code, a string that is not UTF-8, an invalid tenant, an
    ///   invalid idempotency key, a version 2 envelope without any key, a negative partition.
    pub fn decode(bytes: &Bytes) -> Result<Envelope> {
        let header = read_header(bytes)?;
        let meta = header.meta;
        let mut cur = Cursor::new(bytes, header.end, bytes.len());
        let n_parts = cur.u32("part count")?;
        let mut parts = Vec::with_capacity((n_parts as usize).min(cur.remaining() / MIN_PART_LEN));
        let (mut n_messages, mut n_bytes) = (0u64, 0u64);
        for idx in 0..n_parts {
            cur.part = Some(idx);
            let at = cur.pos;
            let code = cur.u8("payload format")?;
            let format = PayloadFormat::from_code(code)
                .ok_or_else(|| cur.error(at, format!("unknown payload format code {code}")))?;
            let at = cur.pos;
            let code = cur.u8("compression")?;
            let compression = Compression::from_code(code)
                .ok_or_else(|| cur.error(at, format!("unknown compression code {code}")))?;
            let message_count = cur.u32("message count")?;
            let source_offset = cur.offset("source offset")?;
            let idempotency = if header.version >= 2 {
                read_idempotency(&mut cur, bytes)?
            } else {
                None
            };
            let len = cur.u64("payload length")?;
            let start = cur.pos;
            cur.take(len, "payload")?;
            let payload = bytes.slice(start..cur.pos);
            n_messages += u64::from(message_count);
            n_bytes += len;
            parts.push(Part {
                format,
                compression,
                message_count,
                source_offset,
                payload,
                idempotency,
            });
        }
        cur.part = None;
        if header.version == 2 && parts.iter().all(|p| p.idempotency.is_none()) {
            return Err(Error::Envelope {
                offset: 4,
                reason: "a version 2 envelope without idempotency keys (it is written as version 1)".to_owned(),
            });
        }
        if cur.remaining() > 0 {
            return Err(cur.error(
                cur.pos,
                format!("{} trailing bytes after the last part", cur.remaining()),
            ));
        }
        if n_messages != meta.message_count {
            return Err(Error::Envelope {
                offset: header.message_count_at,
                reason: format!(
                    "the header counts {} messages but the parts hold {n_messages}",
                    meta.message_count
                ),
            });
        }
        if n_bytes != meta.byte_size {
            return Err(Error::Envelope {
                offset: header.byte_size_at,
                reason: format!(
                    "the header counts {} payload bytes but the parts hold {n_bytes}",
                    meta.byte_size
                ),
            });
        }
        Ok(Envelope { meta, parts })
    }

    /// Decodes only the header of an envelope: the batch's metadata.
    ///
    /// `bytes` may be just a prefix of the envelope, as long as it holds the whole header.
    /// The parts are neither read nor checked, so the header's counts are taken on trust.
    ///
    /// # Errors
    ///
    /// As [`decode`](Self::decode), for the bytes up to the end of the header.
    pub fn decode_header(bytes: &[u8]) -> Result<BatchMeta> {
        read_header(bytes).map(|h| h.meta)
    }

    fn header_len(&self) -> usize {
        let meta = &self.meta;
        let topics: usize = meta.topics.iter().map(|t| 4 + t.len()).sum();
        16 + 8
            + 4
            + 1
            + meta.tenant.as_str().len()
            + 1
            + 1
            + 8
            + 8
            + offset_len(meta.first_offset)
            + offset_len(meta.last_offset)
            + 4
            + topics
            + if meta.partition.is_some() { 4 } else { 0 }
    }
}

fn len_u32(len: usize, what: &str) -> u32 {
    u32::try_from(len).unwrap_or_else(|_| panic!("envelope {what} of {len} does not fit in 32 bits"))
}

fn offset_len(offset: Option<i64>) -> usize {
    if offset.is_some() { 9 } else { 1 }
}

fn put_offset(out: &mut Vec<u8>, offset: Option<i64>) {
    match offset {
        Some(v) => {
            out.push(1);
            out.extend_from_slice(&v.to_le_bytes());
        }
        None => out.push(0),
    }
}

/// `t` as whole seconds since the Unix epoch (negative before it) and nanoseconds after those.
fn unix_parts(t: SystemTime) -> (i64, u32) {
    let (secs, nanos) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (i128::from(d.as_secs()), d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            match d.subsec_nanos() {
                0 => (-i128::from(d.as_secs()), 0),
                n => (-i128::from(d.as_secs()) - 1, 1_000_000_000 - n),
            }
        }
    };
    // A `SystemTime` holds at most an i64 of seconds on every platform Rust supports.
    (secs.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64, nanos)
}

/// The inverse of [`unix_parts`], if the platform's `SystemTime` can hold it.
fn from_unix_parts(secs: i64, nanos: u32) -> Option<SystemTime> {
    let whole = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    };
    whole?.checked_add(Duration::from_nanos(u64::from(nanos)))
}

fn read_header(bytes: &[u8]) -> Result<Header> {
    let mut cur = Cursor::new(bytes, 0, bytes.len());
    let magic = cur.take(MAGIC.len() as u64, "magic")?;
    if magic != MAGIC {
        return Err(cur.error(
            0,
            format!("not a batch envelope: magic is {magic:02x?}, expected {MAGIC:02x?} (\"WBAT\")"),
        ));
    }
    let version = cur.u16("version")?;
    if !(1..=Envelope::VERSION).contains(&version) {
        return Err(Error::UnsupportedEnvelopeVersion {
            found: version,
            supported: Envelope::VERSION,
        });
    }
    let header_len = cur.u32("header length")?;
    let header_at = cur.pos;
    cur.take(u64::from(header_len), "header")?;

    // Fields are read within the header: running past its end is an inconsistency, not a
    // truncation.
    let mut cur = Cursor::new(bytes, header_at, cur.pos);
    cur.header_len = Some(header_len);
    let id = BatchId::from_bytes(cur.take(16, "batch id")?.try_into().expect("16 bytes"));
    let at = cur.pos;
    let secs = cur.i64("created_at seconds")?;
    let nanos = cur.u32("created_at nanoseconds")?;
    if nanos >= 1_000_000_000 {
        return Err(cur.error(
            at + 8,
            format!("created_at nanoseconds {nanos} are not below 1000000000"),
        ));
    }
    let created_at = from_unix_parts(secs, nanos).ok_or_else(|| {
        cur.error(
            at,
            format!("created_at {secs}.{nanos:09} s is out of range for this platform"),
        )
    })?;
    let len = cur.u8("tenant length")?;
    let at = cur.pos;
    let tenant = cur.take(u64::from(len), "tenant")?;
    let tenant = std::str::from_utf8(tenant).map_err(|e| cur.error(at, format!("tenant is not UTF-8: {e}")))?;
    Tenant::check(tenant).map_err(|reason| cur.error(at, format!("invalid tenant: {reason}")))?;
    let tenant = Tenant::try_new(tenant).expect("checked");
    let at = cur.pos;
    let code = cur.u8("signal")?;
    let signal = Signal::from_code(code).ok_or_else(|| cur.error(at, format!("unknown signal code {code}")))?;
    let at = cur.pos;
    let code = cur.u8("source kind")?;
    let source =
        SourceKind::from_code(code).ok_or_else(|| cur.error(at, format!("unknown source kind code {code}")))?;
    let message_count_at = cur.pos;
    let message_count = cur.u64("message count")?;
    let byte_size_at = cur.pos;
    let byte_size = cur.u64("byte size")?;
    let first_offset = cur.offset("first offset")?;
    let last_offset = cur.offset("last offset")?;
    let n_topics = cur.u32("topic count")?;
    let mut topics = Vec::with_capacity((n_topics as usize).min(cur.remaining() / MIN_TOPIC_LEN));
    for idx in 0..n_topics {
        let len = cur.u32("topic length")?;
        let at = cur.pos;
        let topic = cur.take(u64::from(len), "topic")?;
        let topic = std::str::from_utf8(topic).map_err(|e| cur.error(at, format!("topic {idx} is not UTF-8: {e}")))?;
        topics.push(topic.to_owned());
    }
    let partition = if version >= 3 {
        let at = cur.pos;
        let partition = cur.u32("partition")? as i32;
        if partition < 0 {
            return Err(cur.error(at, format!("partition {partition} is negative")));
        }
        Some(partition)
    } else {
        None
    };
    if cur.remaining() > 0 {
        return Err(cur.error(
            cur.pos,
            format!(
                "the header length is {header_len} bytes but its fields end {} bytes earlier",
                cur.remaining()
            ),
        ));
    }
    let meta = BatchMeta {
        id,
        tenant,
        signal,
        source,
        message_count,
        byte_size,
        first_offset,
        last_offset,
        topics,
        partition,
        created_at,
    };
    Ok(Header {
        meta,
        version,
        end: cur.pos,
        message_count_at,
        byte_size_at,
    })
}

/// A part's idempotency flag and, if 1, its key and receipt (sharing `bytes`).
fn read_idempotency(cur: &mut Cursor<'_>, bytes: &Bytes) -> Result<Option<Idempotency>> {
    let at = cur.pos;
    match cur.u8("idempotency flag")? {
        0 => return Ok(None),
        1 => {}
        flag => return Err(cur.error(at, format!("idempotency presence flag is {flag}, expected 0 or 1"))),
    }
    let len = cur.u8("idempotency key length")?;
    let at = cur.pos;
    let key = cur.take(u64::from(len), "idempotency key")?;
    let key = std::str::from_utf8(key).map_err(|e| cur.error(at, format!("idempotency key is not UTF-8: {e}")))?;
    let receipt_len = cur.u32("receipt length")?;
    Idempotency::check(key, receipt_len as usize).map_err(|reason| cur.error(at, reason))?;
    let start = cur.pos;
    cur.take(u64::from(receipt_len), "receipt")?;
    Ok(Some(Idempotency {
        key: key.to_owned(),
        receipt: bytes.slice(start..cur.pos),
    }))
}

/// Reads little-endian fields from `buf[pos..end]`, with errors that name the offset.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
    /// Set while reading within the header, whose length this is.
    header_len: Option<u32>,
    /// Set while reading a part: its index.
    part: Option<u32>,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8], pos: usize, end: usize) -> Self {
        Cursor {
            buf,
            pos,
            end,
            header_len: None,
            part: None,
        }
    }

    fn remaining(&self) -> usize {
        self.end - self.pos
    }

    fn error(&self, offset: usize, reason: String) -> Error {
        let reason = match self.part {
            Some(idx) => format!("part {idx}: {reason}"),
            None => reason,
        };
        Error::Envelope { offset, reason }
    }

    /// The next `n` bytes.
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        let available = self.remaining();
        if n > available as u64 {
            let reason = match self.header_len {
                Some(header_len) => format!(
                    "{what} needs {n} bytes but only {available} are left in the header (header length {header_len})"
                ),
                None => format!("truncated: {what} needs {n} bytes, only {available} available"),
            };
            return Err(self.error(self.pos, reason));
        }
        let n = n as usize;
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        Ok(self.take(N as u64, what)?.try_into().expect("N bytes"))
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16> {
        self.array(what).map(u16::from_le_bytes)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    fn i64(&mut self, what: &str) -> Result<i64> {
        self.array(what).map(i64::from_le_bytes)
    }

    /// A presence flag (0 or 1) and, if 1, an i64.
    fn offset(&mut self, what: &str) -> Result<Option<i64>> {
        let at = self.pos;
        match self.u8(what)? {
            0 => Ok(None),
            1 => self.i64(what).map(Some),
            flag => Err(self.error(at, format!("{what} presence flag is {flag}, expected 0 or 1"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        let id = BatchId::from_u128(0x0190_b4c2_6c1e_7d40_9f3a_5b2c_8e1d_4f60);
        let meta = BatchMeta {
            id,
            tenant: Tenant::try_new("acme").unwrap(),
            signal: Signal::Logs,
            source: SourceKind::Kafka,
            message_count: 0,
            byte_size: 0,
            first_offset: Some(10),
            last_offset: Some(11),
            topics: vec!["logs".to_owned()],
            partition: None,
            created_at: UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789),
        };
        Envelope::new(
            meta,
            vec![
                Part::new(PayloadFormat::OtlpProtobuf, Compression::None, 2, &b"abc"[..]).with_source_offset(10),
                Part::new(PayloadFormat::Ndjson, Compression::Gzip, 3, &b"de"[..]).with_source_offset(11),
            ],
        )
    }

    /// Byte offsets in `sample()`'s encoding.
    const TENANT_LEN_AT: usize = PREFIX_LEN + 16 + 12;
    const SIGNAL_AT: usize = TENANT_LEN_AT + 1 + 4;
    const MESSAGE_COUNT_AT: usize = SIGNAL_AT + 2;
    const FIRST_OFFSET_AT: usize = MESSAGE_COUNT_AT + 16;
    const PARTS_AT: usize = FIRST_OFFSET_AT + 9 + 9 + 4 + 4 + 4;

    fn decode(bytes: Vec<u8>) -> Result<Envelope> {
        Envelope::decode(&Bytes::from(bytes))
    }

    fn envelope_error(result: Result<Envelope>) -> (usize, String) {
        match result {
            Err(Error::Envelope { offset, reason }) => (offset, reason),
            other => panic!("expected an envelope error, got {other:?}"),
        }
    }

    #[test]
    fn layout_is_as_documented() {
        let env = sample();
        let bytes = env.encode();
        assert_eq!(bytes.len(), env.encoded_len());
        assert_eq!(&bytes[0..4], b"WBAT");
        assert_eq!(&bytes[4..6], &[1, 0]);
        let header_len = u32::from_le_bytes(bytes[6..10].try_into().unwrap()) as usize;
        assert_eq!(PREFIX_LEN + header_len, PARTS_AT);
        assert_eq!(&bytes[10..26], &env.meta().id.to_bytes());
        assert_eq!(&bytes[26..34], &1_700_000_000i64.to_le_bytes());
        assert_eq!(&bytes[34..38], &123_456_789u32.to_le_bytes());
        assert_eq!(&bytes[TENANT_LEN_AT..SIGNAL_AT], b"\x04acme");
        assert_eq!(
            &bytes[SIGNAL_AT..MESSAGE_COUNT_AT],
            &[Signal::Logs.code(), SourceKind::Kafka.code()]
        );
        assert_eq!(&bytes[MESSAGE_COUNT_AT..MESSAGE_COUNT_AT + 8], &5u64.to_le_bytes());
        assert_eq!(&bytes[MESSAGE_COUNT_AT + 8..FIRST_OFFSET_AT], &5u64.to_le_bytes());
        assert_eq!(bytes[FIRST_OFFSET_AT], 1);
        assert_eq!(&bytes[PARTS_AT..PARTS_AT + 4], &2u32.to_le_bytes());
        assert!(bytes.ends_with(b"de"));
        assert_eq!(decode(bytes).unwrap(), env);
    }

    #[test]
    fn payloads_are_slices_of_the_input() {
        let bytes = Bytes::from(sample().encode());
        let env = Envelope::decode(&bytes).unwrap();
        let range = bytes.as_ptr_range();
        for part in env.parts() {
            assert!(range.contains(&part.payload.as_ptr()));
        }
    }

    #[test]
    fn created_at_round_trips_before_the_epoch_and_at_the_nanosecond() {
        for t in [
            UNIX_EPOCH,
            UNIX_EPOCH - Duration::new(0, 1),
            UNIX_EPOCH - Duration::new(1, 0),
            UNIX_EPOCH - Duration::new(86_400 * 365 * 100, 999_999_999),
            UNIX_EPOCH + Duration::new(1, 999_999_999),
        ] {
            let (secs, nanos) = unix_parts(t);
            assert!(nanos < 1_000_000_000);
            assert_eq!(from_unix_parts(secs, nanos), Some(t), "{t:?}");
        }
        assert_eq!(unix_parts(UNIX_EPOCH - Duration::new(0, 1)), (-1, 999_999_999));
    }

    #[test]
    fn wrong_magic_and_versions_are_refused() {
        let mut bytes = sample().encode();
        bytes[0] = b'X';
        let (offset, reason) = envelope_error(decode(bytes));
        assert_eq!(offset, 0);
        assert!(reason.contains("not a batch envelope"), "{reason}");

        for version in [0u16, 4] {
            let mut bytes = sample().encode();
            bytes[4..6].copy_from_slice(&version.to_le_bytes());
            assert!(matches!(
                decode(bytes.clone()),
                Err(Error::UnsupportedEnvelopeVersion { found, supported: 3 }) if found == version
            ));
            assert!(matches!(
                Envelope::decode_header(&bytes),
                Err(Error::UnsupportedEnvelopeVersion { found, supported: 3 }) if found == version
            ));
        }
    }

    fn keyed() -> Envelope {
        let (meta, mut parts) = sample().into_inner();
        parts[1].idempotency = Some(Idempotency::try_new("req-1", &b"{\"ok\":1}"[..]).unwrap());
        Envelope::new(meta, parts)
    }

    #[test]
    fn without_keys_version_1_is_written_and_with_a_key_version_2() {
        let plain = sample();
        assert_eq!(plain.version(), 1);
        assert_eq!(&plain.encode()[4..6], &[1, 0]);

        let env = keyed();
        assert_eq!(env.version(), 2);
        let bytes = env.encode();
        assert_eq!(bytes.len(), env.encoded_len());
        assert_eq!(&bytes[4..6], &[2, 0]);
        // The header is the same in both versions.
        assert_eq!(&bytes[6..PARTS_AT], &plain.encode()[6..PARTS_AT]);
        // Part 0: format, compression, count, offset (flag and i64), then no key.
        let flag0 = PARTS_AT + 4 + 1 + 1 + 4 + 9;
        assert_eq!(bytes[flag0], 0);
        let bytes = Bytes::from(bytes);
        let decoded = Envelope::decode(&bytes).unwrap();
        assert_eq!(decoded, env);
        let idem = decoded.parts()[1].idempotency.as_ref().unwrap();
        assert_eq!((idem.key(), &idem.receipt()[..]), ("req-1", &b"{\"ok\":1}"[..]));
        // The receipt is a slice of the input, as payloads are.
        assert!(bytes.as_ptr_range().contains(&idem.receipt().as_ptr()));
    }

    #[test]
    fn a_batch_of_one_partition_is_written_as_version_3_with_its_partition() {
        let (mut meta, mut parts) = sample().into_inner();
        meta.partition = Some(7);
        let env = Envelope::new(meta.clone(), parts.clone());
        assert_eq!(env.version(), 3);
        let bytes = env.encode();
        assert_eq!((bytes.len(), &bytes[4..6]), (env.encoded_len(), &[3u8, 0][..]));
        // The partition ends the header: i32, little-endian.
        assert_eq!(&bytes[PARTS_AT..PARTS_AT + 4], &7i32.to_le_bytes());
        let decoded = decode(bytes.clone()).unwrap();
        assert_eq!(decoded, env);
        assert_eq!(Envelope::decode_header(&bytes).unwrap().partition, Some(7));
        // Parts carry their idempotency flag in version 3 as in version 2, keyed or not.
        parts[1].idempotency = Some(Idempotency::try_new("req-1", &b"r"[..]).unwrap());
        let keyed = Envelope::new(meta, parts);
        assert_eq!(keyed.version(), 3);
        assert_eq!(decode(keyed.encode()).unwrap(), keyed);
        // A negative partition is refused, naming where it is.
        let mut bytes = bytes;
        bytes[PARTS_AT..PARTS_AT + 4].copy_from_slice(&(-1i32).to_le_bytes());
        let (offset, reason) = envelope_error(decode(bytes));
        assert_eq!(offset, PARTS_AT);
        assert!(reason.contains("partition -1 is negative"), "{reason}");
    }

    #[test]
    fn a_version_2_envelope_without_a_key_or_with_a_bad_key_is_refused() {
        // Version 2 with every flag 0: not canonical.
        let env = keyed();
        let mut bytes = env.encode();
        let flag0 = PARTS_AT + 4 + 1 + 1 + 4 + 9;
        let flag1 = flag0 + 1 + 8 + 3 + 1 + 1 + 4 + 9;
        assert_eq!(bytes[flag1], 1);
        let mut unkeyed = bytes[..flag1].to_vec();
        unkeyed.push(0);
        unkeyed.extend_from_slice(&bytes[flag1 + 1 + 1 + 5 + 4 + 8..]);
        let (offset, reason) = envelope_error(decode(unkeyed));
        assert_eq!(offset, 4);
        assert!(reason.contains("without idempotency keys"), "{reason}");
        // A flag other than 0 or 1.
        bytes[flag0] = 7;
        let (offset, reason) = envelope_error(decode(bytes.clone()));
        assert_eq!(offset, flag0);
        assert!(reason.contains("idempotency presence flag is 7"), "{reason}");
        // A key with a space in it.
        let mut bytes = env.encode();
        bytes[flag1 + 2 + 2] = b' ';
        let (offset, reason) = envelope_error(decode(bytes));
        assert_eq!(offset, flag1 + 2);
        assert!(reason.contains("visible ASCII"), "{reason}");
    }

    #[test]
    fn keys_are_checked_when_made() {
        assert!(Idempotency::try_new("a".repeat(255), Bytes::new()).is_ok());
        for (key, receipt, says) in [
            ("".to_owned(), 0, "not empty"),
            ("a".repeat(256), 0, "at most 255 bytes"),
            ("tab\there".to_owned(), 0, "visible ASCII"),
            ("caf\u{e9}".to_owned(), 0, "visible ASCII"),
            ("ok".to_owned(), (64 << 10) + 1, "at most 65536 bytes"),
        ] {
            match Idempotency::try_new(key.clone(), vec![0u8; receipt]) {
                Err(Error::InvalidIdempotencyKey { reason, .. }) => assert!(reason.contains(says), "{key:?}: {reason}"),
                other => panic!("{key:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn truncation_says_what_was_needed() {
        let bytes = sample().encode();
        let (offset, reason) = envelope_error(decode(bytes[..2].to_vec()));
        assert_eq!(
            (offset, reason.as_str()),
            (0, "truncated: magic needs 4 bytes, only 2 available")
        );
        let (offset, reason) = envelope_error(decode(bytes[..20].to_vec()));
        assert_eq!(offset, 10);
        assert!(reason.starts_with("truncated: header needs"), "{reason}");
        let (offset, reason) = envelope_error(decode(bytes[..bytes.len() - 1].to_vec()));
        assert_eq!(offset, bytes.len() - 2);
        assert_eq!(reason, "part 1: truncated: payload needs 2 bytes, only 1 available");
        // The header alone still decodes as a header.
        assert_eq!(Envelope::decode_header(&bytes[..PARTS_AT]).unwrap(), *sample().meta());
        assert!(Envelope::decode_header(&bytes[..PARTS_AT - 1]).is_err());
    }

    #[test]
    fn inconsistent_lengths_are_refused() {
        // Trailing bytes.
        let mut bytes = sample().encode();
        let end = bytes.len();
        bytes.push(0);
        assert_eq!(
            envelope_error(decode(bytes)),
            (end, "1 trailing bytes after the last part".to_owned())
        );

        // A header length longer than its fields.
        let mut bytes = sample().encode();
        let header_len = u32::from_le_bytes(bytes[6..10].try_into().unwrap());
        bytes[6..10].copy_from_slice(&(header_len + 1).to_le_bytes());
        bytes.insert(PARTS_AT, 0);
        let (offset, reason) = envelope_error(decode(bytes));
        assert_eq!(offset, PARTS_AT);
        assert!(reason.contains("its fields end 1 bytes earlier"), "{reason}");

        // A header length shorter than its fields.
        let mut bytes = sample().encode();
        bytes[6..10].copy_from_slice(&(header_len - 2).to_le_bytes());
        let (offset, reason) = envelope_error(decode(bytes));
        assert_eq!(offset, PARTS_AT - 4);
        assert!(reason.contains("only 2 are left in the header"), "{reason}");

        // A payload length past the end.
        let mut bytes = sample().encode();
        let len_at = bytes.len() - 2 - 8;
        bytes[len_at..len_at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        let (offset, reason) = envelope_error(decode(bytes));
        assert_eq!(offset, len_at + 8);
        assert!(
            reason.starts_with("part 1: truncated: payload needs 18446744073709551615 bytes"),
            "{reason}"
        );

        // Counts that do not add up.
        let mut bytes = sample().encode();
        bytes[MESSAGE_COUNT_AT] = 6;
        let (offset, reason) = envelope_error(decode(bytes.clone()));
        assert_eq!(offset, MESSAGE_COUNT_AT);
        assert_eq!(reason, "the header counts 6 messages but the parts hold 5");
        assert_eq!(
            Envelope::decode_header(&bytes).unwrap().message_count,
            6,
            "the header alone is taken on trust"
        );
        let mut bytes = sample().encode();
        bytes[MESSAGE_COUNT_AT + 8] = 4;
        let (offset, reason) = envelope_error(decode(bytes));
        assert_eq!(offset, MESSAGE_COUNT_AT + 8);
        assert_eq!(reason, "the header counts 4 payload bytes but the parts hold 5");

        // A huge part count in a short input neither allocates nor panics.
        let mut bytes = sample().encode();
        bytes[PARTS_AT..PARTS_AT + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let (_, reason) = envelope_error(decode(bytes));
        assert!(
            reason.starts_with("part 2: truncated: payload format needs 1 bytes"),
            "{reason}"
        );
    }

    #[test]
    fn bad_codes_strings_and_flags_are_refused() {
        let cases: Vec<(usize, u8, &str)> = vec![
            (SIGNAL_AT, 9, "unknown signal code 9"),
            (SIGNAL_AT + 1, 0, "unknown source kind code 0"),
            (FIRST_OFFSET_AT, 2, "first offset presence flag is 2, expected 0 or 1"),
            (TENANT_LEN_AT + 1, b'/', "invalid tenant: only ASCII letters"),
            (TENANT_LEN_AT + 1, 0xff, "tenant is not UTF-8"),
            (PARTS_AT - 4, 0xfe, "topic 0 is not UTF-8"),
            (PARTS_AT + 4, 0, "part 0: unknown payload format code 0"),
            (PARTS_AT + 5, 7, "part 0: unknown compression code 7"),
            (PARTS_AT + 10, 3, "part 0: source offset presence flag is 3"),
        ];
        for (at, byte, expected) in cases {
            let mut bytes = sample().encode();
            bytes[at] = byte;
            let (offset, reason) = envelope_error(decode(bytes));
            assert!(reason.starts_with(expected), "byte {at} = {byte}: {reason}");
            // Each of these bytes is the first of its field (strings are reported at their start).
            assert_eq!(offset, at, "{reason}");
        }

        let mut bytes = sample().encode();
        bytes[34..38].copy_from_slice(&1_000_000_000u32.to_le_bytes());
        let (offset, reason) = envelope_error(decode(bytes));
        assert_eq!(offset, 34);
        assert!(reason.contains("nanoseconds"), "{reason}");

        let mut bytes = sample().encode();
        bytes[TENANT_LEN_AT] = 0;
        bytes.drain(TENANT_LEN_AT + 1..TENANT_LEN_AT + 5);
        let header_len = u32::from_le_bytes(bytes[6..10].try_into().unwrap());
        bytes[6..10].copy_from_slice(&(header_len - 4).to_le_bytes());
        let (offset, reason) = envelope_error(decode(bytes));
        assert_eq!(
            (offset, reason.as_str()),
            (TENANT_LEN_AT + 1, "invalid tenant: it is empty")
        );
    }

    #[test]
    fn error_messages_name_the_offset() {
        let mut bytes = sample().encode();
        bytes[SIGNAL_AT] = 9;
        let err = decode(bytes).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("invalid batch envelope at byte {SIGNAL_AT}: unknown signal code 9")
        );
    }

    #[test]
    fn an_envelope_without_parts_or_offsets_round_trips() {
        let (mut meta, _) = sample().into_inner();
        meta.first_offset = None;
        meta.last_offset = None;
        meta.topics.clear();
        let env = Envelope::new(meta, Vec::new());
        assert_eq!(env.meta().message_count, 0);
        let bytes = env.encode();
        assert_eq!(bytes.len(), env.encoded_len());
        assert_eq!(decode(bytes).unwrap(), env);
    }

    #[test]
    fn encode_into_appends() {
        let env = sample();
        let mut out = b"prefix".to_vec();
        env.encode_into(&mut out);
        assert_eq!(&out[..6], b"prefix");
        assert_eq!(out[6..], env.encode());
    }
}
