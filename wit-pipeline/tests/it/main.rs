//! wit-pipeline's integration tests: one binary (see STYLE.md).

mod crash;
mod faulty;
mod pipeline;
mod support;
