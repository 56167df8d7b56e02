//! Criterion benchmarks of Wit; see `benches/`.
