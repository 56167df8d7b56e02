//! Records refused one by one: an event that is not JSON, fails its stream's JSON Schema or
//! does not convert; an OTLP record that does not convert (`partial.rs` finds those). They
//! go to the tenant's `dead_letters` table — the record as received, why, where it failed,
//! when, and for events the stream and the schema's version — and the rest of the request
//! is taken.

use bytes::Bytes;
use wit_batch::dead_letters::DeadLetter;
use wit_batch::events::EventOptions;
use wit_batch::{Signal, Tenant};

use crate::serve::schemas::StreamSchema;

/// The events of a request that pass, and the dead letters of those that do not.
#[derive(Debug)]
pub(crate) struct EventSplit {
    /// NDJSON of the events that pass, in order.
    pub(crate) payload: Bytes,
    /// How many pass.
    pub(crate) kept: u64,
    /// One per event that does not.
    pub(crate) letters: Vec<DeadLetter>,
}

/// Checks each non-blank line of `payload` alone: JSON, then `schema` (when the stream has
/// one), then conversion (only when `convert_each`: the caller found that the lines that
/// pass the schema do not convert together).
pub(crate) fn split_events(
    payload: &[u8],
    stream: &str,
    schema: Option<&StreamSchema>,
    convert_each: bool,
) -> EventSplit {
    let now = std::time::SystemTime::now();
    let options = EventOptions::default();
    let mut kept = Vec::with_capacity(payload.len());
    let (mut n_kept, mut letters) = (0u64, Vec::new());
    for (i, line) in payload.split(|b| *b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let letter = |reason: String, path: Option<String>| {
            let mut letter = DeadLetter::new(now, Signal::Events, reason, String::from_utf8_lossy(line).into_owned())
                .with_stream(stream);
            if let Some(schema) = schema {
                letter = letter.with_schema_version(schema.version);
            }
            match path {
                Some(path) => letter.with_path(path),
                None => letter,
            }
        };
        let value: serde_json::Value = match serde_json::from_slice(line) {
            Ok(value) => value,
            Err(e) => {
                letters.push(letter(format!("line {}: not JSON: {e}", i + 1), None));
                continue;
            }
        };
        if let Some(schema) = schema
            && let Err(violation) = schema.check(&value)
        {
            // A JSON Pointer: empty for the record itself.
            let at = match violation.path.as_str() {
                "" => "the record".to_owned(),
                path => format!("`{path}`"),
            };
            letters.push(letter(
                format!(
                    "line {}: fails schema version {} at {at}: {}",
                    i + 1,
                    schema.version,
                    violation.message
                ),
                Some(violation.path),
            ));
            continue;
        }
        if convert_each {
            let converted = wit_batch::events::infer_schema(line, None, &options)
                .and_then(|s| wit_batch::events::decode(line, Some(s), &options));
            if let Err(e) = converted {
                // Converted alone, the line is the payload's first: the number is ours.
                let reason = match e {
                    wit_batch::Error::Event { reason, .. } => reason,
                    other => other.to_string(),
                };
                letters.push(letter(format!("line {}: {reason}", i + 1), None));
                continue;
            }
        }
        kept.extend_from_slice(line);
        kept.push(b'\n');
        n_kept += 1;
    }
    EventSplit {
        payload: Bytes::from(kept),
        kept: n_kept,
        letters,
    }
}

/// The message of a response that left records out: how many and the first reason.
pub(crate) fn summary(letters: &[DeadLetter], total: u64, what: &str) -> String {
    match letters.first() {
        None => String::new(),
        Some(first) => format!(
            "{} of {total} {what} rejected (kept in the dead_letters table); the first: {}",
            letters.len(),
            first.reason
        ),
    }
}

/// The tenant's name, for the counters.
pub(crate) fn count(tenant: &Tenant, signal: Signal, letters: u64) {
    if letters == 0 {
        return;
    }
    metrics::counter!("wit_tenant_records_total", "tenant" => tenant.as_str().to_owned(), "outcome" => "dead_lettered")
        .increment(letters);
    metrics::counter!("wit_dead_letters_total", "signal" => super::signal_name(signal)).increment(letters);
}
