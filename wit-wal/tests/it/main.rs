//! Integration tests of wit-wal: one binary, one module per concern.

mod concurrency;
mod crash;
mod direct;
mod faults;
mod fuzz_corpus;
mod model;
mod recovery;
