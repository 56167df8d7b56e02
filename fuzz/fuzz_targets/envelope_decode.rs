//! Envelope decoding fuzz target: the input is decoded as a WAL batch envelope. Decoding must
//! never panic; bytes that decode must encode back to themselves (the encoding is canonical),
//! their header must decode alone to the same metadata, and no strict prefix of them decodes.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use wit_batch::Envelope;

fuzz_target!(|data: &[u8]| {
    let header = Envelope::decode_header(data);
    let Ok(envelope) = Envelope::decode(&Bytes::copy_from_slice(data)) else {
        return;
    };
    assert_eq!(envelope.encode(), data, "decoded bytes must encode back to themselves");
    assert_eq!(header.ok().as_ref(), Some(envelope.meta()), "the header alone must decode alike");
    let prefix = Bytes::copy_from_slice(&data[..data.len() - 1]);
    assert!(Envelope::decode(&prefix).is_err(), "a strict prefix of an envelope must not decode");
});
