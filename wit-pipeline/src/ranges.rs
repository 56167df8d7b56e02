//! Batches of one partition of a partitioned source (a Kafka topic's partition): each holds a
//! contiguous offset range, and is claimed in the tracker (registered, moved to
//! `SOURCE_COMMITTED` and the partition's stored offset moved from the range's start to its
//! end, one transaction) before it is converted or stored. A batch whose range is claimed
//! already is dropped: never stored.
//!
//! The source that submits such batches sets, in each envelope's header:
//! - [`partition`](BatchMeta::partition) and its one topic ([`topics`](BatchMeta::topics));
//! - [`first_offset`](BatchMeta::first_offset): where the range starts, the stored offset the
//!   claim expects (`None`: the partition has none yet);
//! - [`last_offset`](BatchMeta::last_offset): the range's last offset (the claim stores the one
//!   after it).

use std::sync::mpsc;
use std::time::SystemTime;

use base64::Engine as _;
use wit_batch::{BatchId, BatchMeta, Signal, SourceKind, dead_letters};
use wit_tracker::{RangeClaim, RangeOutcome};

/// Where the processor claims ranges and reports what became of them: set while a source of
/// such batches runs.
#[cfg_attr(not(feature = "kafka"), allow(dead_code))]
pub(crate) struct RangeSource {
    /// The tracker's name of the reader, e.g. the consumer group.
    pub(crate) source: String,
    pub(crate) reports: mpsc::Sender<RangeReport>,
    /// Whether the source still runs: once it stopped, the claims of its batches still in
    /// the pipeline go on (their reports are dropped), and another source may start.
    pub(crate) active: bool,
}

/// What became of one batch's claim.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "kafka"), allow(dead_code))]
pub(crate) struct RangeReport {
    pub(crate) batch: BatchId,
    pub(crate) topic: String,
    pub(crate) partition: i32,
    /// The stored offset the claim would set.
    pub(crate) to: i64,
    pub(crate) outcome: RangeOutcome,
}

/// Whether `meta` is a batch of one source partition, to be claimed before it is stored.
pub(crate) fn is_range(meta: &BatchMeta) -> bool {
    meta.source == SourceKind::Kafka && meta.partition.is_some()
}

/// The claim of a range batch read at `lsn`, or why the header cannot be one.
pub(crate) fn claim_of(
    meta: &BatchMeta,
    source: &str,
    node: &str,
    lsn: u64,
    at: SystemTime,
) -> Result<RangeClaim, String> {
    let partition = meta.partition.ok_or("it has no partition")?;
    let [topic] = meta.topics.as_slice() else {
        return Err(format!("it names {} topics, not one", meta.topics.len()));
    };
    let last = meta.last_offset.ok_or("it has no last offset")?;
    let to = last.checked_add(1).ok_or("its last offset is i64::MAX")?;
    Ok(RangeClaim::new(
        meta.clone(),
        source,
        topic.as_str(),
        partition,
        meta.first_offset,
        to,
        at,
    )
    .with_wal_position(node, lsn))
}

/// The bytes of a message too large for the WAL that its dead letter keeps.
pub(crate) const RECORD_PREFIX: usize = 64 << 10;

/// The dead letter of message `offset` of `topic`'s `partition` (of `signal`'s topic): the
/// record as received (UTF-8 as is, anything else as `base64:` and its base64; a record past
/// [`RECORD_PREFIX`] bytes cut to them, which the reason says) and why it was refused.
#[cfg_attr(not(feature = "kafka"), allow(dead_code))]
pub(crate) fn dead_letter(
    signal: Signal,
    topic: &str,
    partition: i32,
    offset: i64,
    payload: &[u8],
    reason: &str,
) -> dead_letters::DeadLetter {
    let (kept, reason) = match payload.len() > RECORD_PREFIX {
        true => (
            &payload[..RECORD_PREFIX],
            format!("{reason} (the record is cut to its first {RECORD_PREFIX} bytes)"),
        ),
        false => (payload, reason.to_owned()),
    };
    let record = match std::str::from_utf8(kept) {
        Ok(text) => text.to_owned(),
        Err(_) => format!("base64:{}", base64::engine::general_purpose::STANDARD.encode(kept)),
    };
    dead_letters::DeadLetter::new(SystemTime::now(), signal, reason, record)
        .with_topic(topic)
        .with_partition(partition)
        .with_offset(offset)
}
