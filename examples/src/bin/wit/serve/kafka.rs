//! The `kafka` section as the pipeline's Kafka source configuration.

use std::str::FromStr;
use std::time::Duration;

use wit_batch::{BatcherConfig, PayloadFormat, Signal, Tenant};
use wit_pipeline::kafka::{KafkaConfig, TopicRule};

use super::config::{KafkaSection, MessageFormat};

/// The source `section` configures, `None` without brokers, or what is wrong with it.
pub(crate) fn source_config(section: &KafkaSection) -> Result<Option<KafkaConfig>, String> {
    if section.brokers.trim().is_empty() {
        return Ok(None);
    }
    let error = |e: &dyn std::fmt::Display| format!("kafka: {e}");
    let batching = BatcherConfig::default()
        .with_max_messages(section.batch_size)
        .with_max_age(Duration::from_millis(section.batch_timeout_ms))
        .with_max_bytes(section.max_size_bytes)
        .with_max_buffered_bytes(section.max_size_bytes.saturating_mul(8).max(64 << 20));
    let mut config = KafkaConfig::new(&section.brokers, &section.group)
        .with_batching(batching)
        .with_session_timeout(Duration::from_millis(section.session_timeout_ms))
        .with_revoke_patience(Duration::from_millis(section.revoke_patience_ms));
    for (key, value) in &section.options {
        config = config.with_option(key, value);
    }
    for (i, topic) in section.topics.iter().enumerate() {
        let format = match topic.format {
            MessageFormat::OtlpProtobuf => PayloadFormat::OtlpProtobuf,
            MessageFormat::OtlpJson => PayloadFormat::OtlpJson,
            MessageFormat::Ndjson => PayloadFormat::Ndjson,
        };
        let at = |e: &dyn std::fmt::Display| format!("kafka.topics[{i}]: {e}");
        let mut rule = TopicRule::new(&topic.subscription, format);
        if let Some(template) = &topic.template {
            rule = rule.with_template(template).map_err(|e| at(&e))?;
        }
        if let Some(tenant) = &topic.tenant {
            rule = rule.with_tenant(Tenant::try_new(tenant).map_err(|e| at(&e))?);
        }
        if let Some(signal) = &topic.signal {
            rule = rule.with_signal(Signal::from_str(signal).map_err(|e| at(&e))?);
        }
        config = config.with_topic(rule);
    }
    config.check().map_err(|e| error(&e))?;
    Ok(Some(config))
}
