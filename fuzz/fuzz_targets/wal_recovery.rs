//! Recovery fuzz target: builds a WAL directory from the input, opens, reads and inspects it.
//! The body lives in `wit_wal::fuzz` so the integration tests can replay the corpus.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wit_wal::fuzz::recover_from_bytes(data);
});
