//! wit-pipeline's integration tests: one binary (see STYLE.md).

mod crash;
mod faulty;
mod hot;
mod idempotency;
mod outage;
mod pipeline;
mod support;
