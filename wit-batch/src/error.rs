use crate::{BatchId, PayloadFormat, Stage};

/// Everything that can go wrong in `wit-batch`.
///
/// Messages say what was wrong and where, for example
/// "invalid OTLP protobuf at byte 1234 in `resourceSpans.scopeSpans.spans.traceId`: id is 5 bytes, expected 16".
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A telemetry payload (OTLP protobuf or OTLP/JSON) is malformed.
    #[error("invalid {format} at byte {offset}{}: {reason}", if field.is_empty() { String::new() } else { format!(" in `{field}`") })]
    Decode {
        /// The payload format being decoded.
        format: PayloadFormat,
        /// Dotted path of the field being read, outermost first (empty at the top level).
        field: String,
        /// Byte offset in the (decompressed) payload where the problem was found.
        offset: usize,
        /// What was wrong.
        reason: String,
    },

    /// A compressed payload could not be decompressed (for example a truncated gzip stream).
    #[error("failed to decompress {compression} payload: {source}")]
    Decompress {
        /// The compression named by the caller.
        compression: crate::Compression,
        /// The decoder's error.
        #[source]
        source: std::io::Error,
    },

    /// A line of NDJSON events could not be converted to Arrow.
    #[error("invalid JSON event on line {line}: {reason}")]
    Event {
        /// 1-based line number in the payload.
        line: usize,
        /// What was wrong.
        reason: String,
    },

    /// A line of a dead-letter payload ([`dead_letters`](crate::dead_letters)) could not be
    /// read.
    #[error("invalid dead letter on line {line}{}: {reason}", if field.is_empty() { String::new() } else { format!(" in `{field}`") })]
    DeadLetter {
        /// 1-based line number in the (decompressed) payload.
        line: usize,
        /// The field (column) that was wrong; empty when the line is not a JSON object.
        field: String,
        /// What was wrong.
        reason: String,
    },

    /// An Arrow batch handed back for conversion to OTLP does not have the schema this crate
    /// produces.
    #[error("record batch does not match the {table} schema: {reason}")]
    Schema {
        /// The table expected (`spans`, `logs`, `metrics`).
        table: &'static str,
        /// What was wrong.
        reason: String,
    },

    /// A WAL envelope could not be decoded.
    #[error("invalid batch envelope at byte {offset}: {reason}")]
    Envelope {
        /// Byte offset in the envelope where the problem was found.
        offset: usize,
        /// What was wrong.
        reason: String,
    },

    /// A WAL envelope was written by an envelope version this build does not read.
    #[error("batch envelope has version {found}; this build reads versions 1 to {supported}")]
    UnsupportedEnvelopeVersion {
        /// The version in the envelope.
        found: u16,
        /// The newest version this build reads.
        supported: u16,
    },

    /// An idempotency key (or its receipt) that cannot be taken.
    #[error("invalid idempotency key {key:?}: {reason}")]
    InvalidIdempotencyKey {
        /// The key (its first 64 characters).
        key: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A lifecycle transition that the batch lifecycle does not allow.
    #[error("batch {batch}: transition from {from} to {to} is not allowed")]
    InvalidTransition {
        /// The batch.
        batch: BatchId,
        /// Its current stage.
        from: Stage,
        /// The requested stage.
        to: Stage,
    },

    /// A name (stage, signal, source kind, payload format, ...) that is not one of the known
    /// ones, or a malformed batch id.
    #[error("unknown {kind} `{value}`")]
    Unknown {
        /// What kind of name it was, e.g. "signal".
        kind: &'static str,
        /// The text that was given.
        value: String,
    },

    /// A configuration value is out of range.
    #[error("invalid configuration: {reason}")]
    InvalidConfig {
        /// What is wrong with it.
        reason: String,
    },

    /// The batcher was closed; nothing more can be pushed.
    #[error("the batcher is closed")]
    Closed,

    /// An Arrow operation failed while building a batch.
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    /// A tenant name that is not safe to use as a storage path component.
    #[error("invalid tenant `{tenant}`: {reason}")]
    InvalidTenant {
        /// The rejected name (cut to 64 characters when longer).
        tenant: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// A payload is larger than [`MAX_PAYLOAD_LEN`](crate::MAX_PAYLOAD_LEN), the most one
    /// conversion accepts.
    #[error("payload of {len} bytes is over the limit of {limit} bytes; split the request")]
    PayloadTooLarge {
        /// The payload's length.
        len: usize,
        /// The limit.
        limit: usize,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
