//! wit-pipeline's integration tests: one binary (see STYLE.md).

mod crash;
mod faulty;
mod hot;
mod idempotency;
#[cfg(feature = "kafka")]
mod kafka;
#[cfg(feature = "kafka")]
mod kafka_broker;
mod outage;
mod pipeline;
mod support;
