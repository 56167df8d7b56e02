//! The WAL envelope: round trips of arbitrary envelopes, and decoding of arbitrary, mutated
//! and truncated bytes, which must never panic, never accept a strict prefix of an envelope,
//! and only ever accept bytes that encode back to themselves. The committed fuzz corpus is
//! replayed through the same checks.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use proptest::prelude::*;
use wit_batch::{
    BatchId, BatchMeta, Compression, Envelope, Error, Idempotency, Part, PayloadFormat, Signal, SourceKind, Tenant,
};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/envelope_decode");

fn created_at() -> impl Strategy<Value = SystemTime> {
    (-100_000_000_000i64..100_000_000_000, 0u32..1_000_000_000).prop_map(|(secs, nanos)| {
        let whole = if secs >= 0 {
            UNIX_EPOCH + Duration::from_secs(secs as u64)
        } else {
            UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
        };
        whole + Duration::from_nanos(u64::from(nanos))
    })
}

fn part() -> impl Strategy<Value = Part> {
    (
        proptest::sample::select(PayloadFormat::ALL.to_vec()),
        proptest::sample::select(Compression::ALL.to_vec()),
        any::<u32>(),
        proptest::option::of(any::<i64>()),
        proptest::collection::vec(any::<u8>(), 0..80),
        proptest::option::of(("[!-~]{1,40}", proptest::collection::vec(any::<u8>(), 0..40))),
    )
        .prop_map(
            |(format, compression, message_count, source_offset, payload, idempotency)| Part {
                format,
                compression,
                message_count,
                source_offset,
                payload: Bytes::from(payload),
                idempotency: idempotency
                    .map(|(key, receipt)| Idempotency::try_new(key, receipt).expect("the pattern makes valid keys")),
            },
        )
}

fn envelope() -> impl Strategy<Value = Envelope> {
    let meta = (
        any::<u128>(),
        created_at(),
        "[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}",
        proptest::sample::select(Signal::ALL.to_vec()),
        proptest::sample::select(SourceKind::ALL.to_vec()),
        proptest::option::of(any::<i64>()),
        proptest::option::of(any::<i64>()),
        proptest::collection::vec(".{0,12}", 0..4),
        proptest::option::of(0..=i32::MAX),
    )
        .prop_map(
            |(id, created_at, tenant, signal, source, first_offset, last_offset, topics, partition)| BatchMeta {
                id: BatchId::from_u128(id),
                tenant: Tenant::try_new(tenant).expect("the pattern only makes valid tenants"),
                signal,
                source,
                message_count: 0,
                byte_size: 0,
                first_offset,
                last_offset,
                topics,
                partition,
                created_at,
            },
        );
    (meta, proptest::collection::vec(part(), 0..6)).prop_map(|(meta, parts)| Envelope::new(meta, parts))
}

/// Where the header ends in a valid envelope.
fn header_end(bytes: &[u8]) -> usize {
    10 + u32::from_le_bytes(bytes[6..10].try_into().unwrap()) as usize
}

/// Decodes `data` as the fuzz target does: it must not panic, and whatever decodes must be
/// canonical (encode back to `data`) and have a header that decodes alone to the same meta.
fn check_decode(data: &[u8]) -> Option<Envelope> {
    let bytes = Bytes::copy_from_slice(data);
    let header = Envelope::decode_header(data);
    match Envelope::decode(&bytes) {
        Ok(envelope) => {
            assert_eq!(envelope.encode(), data, "decoded bytes must encode back to themselves");
            assert_eq!(
                header.expect("the header of a valid envelope decodes"),
                *envelope.meta()
            );
            Some(envelope)
        }
        Err(Error::Envelope { offset, .. }) => {
            assert!(
                offset <= data.len(),
                "error offset {offset} past the end ({})",
                data.len()
            );
            None
        }
        Err(Error::UnsupportedEnvelopeVersion { found, supported }) => {
            assert_ne!(found, supported);
            None
        }
        Err(e) => panic!("unexpected error kind: {e}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_envelopes_round_trip(envelope in envelope()) {
        let bytes = Bytes::from(envelope.encode());
        prop_assert_eq!(bytes.len(), envelope.encoded_len());
        let decoded = Envelope::decode(&bytes).unwrap();
        prop_assert_eq!(&decoded, &envelope);
        prop_assert_eq!(Envelope::decode_header(&bytes).unwrap(), envelope.meta().clone());
        let meta = envelope.meta();
        prop_assert_eq!(meta.message_count, envelope.parts().iter().map(|p| u64::from(p.message_count)).sum::<u64>());
        prop_assert_eq!(meta.byte_size, envelope.parts().iter().map(|p| p.payload.len() as u64).sum::<u64>());
    }

    #[test]
    fn a_strict_prefix_never_decodes(envelope in envelope(), cut in any::<prop::sample::Index>()) {
        let bytes = envelope.encode();
        let len = cut.index(bytes.len()); // 0..len: always strictly shorter
        let prefix = &bytes[..len];
        prop_assert!(Envelope::decode(&Bytes::copy_from_slice(prefix)).is_err());
        // The header alone decodes exactly when the prefix holds all of it.
        let header = Envelope::decode_header(prefix);
        if len >= header_end(&bytes) {
            prop_assert_eq!(header.unwrap(), envelope.meta().clone());
        } else {
            prop_assert!(header.is_err());
        }
    }

    #[test]
    fn every_prefix_of_a_small_envelope_is_refused(envelope in envelope()) {
        let bytes = envelope.encode();
        for len in 0..bytes.len() {
            match Envelope::decode(&Bytes::copy_from_slice(&bytes[..len])) {
                Err(Error::Envelope { offset, reason }) => prop_assert!(offset <= len, "{offset} > {len}: {reason}"),
                other => prop_assert!(false, "prefix of {len} of {} bytes: {other:?}", bytes.len()),
            }
        }
    }

    #[test]
    fn mutated_envelopes_never_panic(
        envelope in envelope(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in proptest::option::of(any::<prop::sample::Index>()),
        extra in proptest::collection::vec(any::<u8>(), 0..3),
    ) {
        let mut bytes = envelope.encode();
        for (at, byte) in edits {
            let at = at.index(bytes.len());
            bytes[at] = byte;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        bytes.extend_from_slice(&extra);
        check_decode(&bytes);
    }

    #[test]
    fn arbitrary_bytes_never_panic(mut data in proptest::collection::vec(any::<u8>(), 0..256), magic in any::<bool>()) {
        if magic && data.len() >= 6 {
            // Get past the magic and version checks, to reach the length fields.
            data[..6].copy_from_slice(b"WBAT\x01\x00");
        }
        check_decode(&data);
    }
}

#[test]
fn a_huge_header_length_is_a_truncation_not_an_allocation() {
    let mut data = b"WBAT\x01\x00".to_vec();
    data.extend_from_slice(&u32::MAX.to_le_bytes());
    match Envelope::decode(&Bytes::from(data)) {
        Err(Error::Envelope { offset: 10, reason }) => {
            assert_eq!(reason, "truncated: header needs 4294967295 bytes, only 0 available");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn fuzz_corpus_replays_cleanly() {
    let Ok(entries) = std::fs::read_dir(Path::new(CORPUS)) else {
        panic!("the fuzz corpus at {CORPUS} is missing");
    };
    let mut n_inputs = 0;
    let mut n_valid = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        if !path.is_file() || path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
            continue;
        }
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| check_decode(&data).is_some());
        match outcome {
            Ok(valid) => n_valid += usize::from(valid),
            Err(panic) => {
                eprintln!("fuzz input {} ({} bytes) failed", path.display(), data.len());
                std::panic::resume_unwind(panic);
            }
        }
        n_inputs += 1;
    }
    assert!(n_inputs > 0, "the fuzz corpus at {CORPUS} is empty");
    assert!(n_valid > 0, "the corpus should hold valid envelopes as seeds");
}
