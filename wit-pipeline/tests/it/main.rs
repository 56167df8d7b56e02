//! wit-pipeline's integration tests: one binary (see STYLE.md).

mod crash;
mod pipeline;
mod support;
