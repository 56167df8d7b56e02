//! fuzz_corpus tests.
