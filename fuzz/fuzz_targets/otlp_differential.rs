//! OTLP differential target: the direct protobuf → Arrow decoder against prost + `from_prost`.
//! The body lives in `wit_batch::fuzz` so the integration tests can replay the corpus.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wit_batch::fuzz::otlp_differential(data);
});
