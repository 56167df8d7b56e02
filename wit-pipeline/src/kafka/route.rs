//! Which tenant and signal a topic's messages belong to.

use std::str::FromStr;

use regex::Regex;
use wit_batch::{PayloadFormat, Signal, Tenant};

use crate::{Error, Result};

/// A rule for the topics it subscribes to: which topics (a name, or a pattern), how their
/// names map to a tenant and a signal, and how their messages are encoded.
///
/// A topic's tenant and signal are fixed by the rule ([`with_tenant`](Self::with_tenant),
/// [`with_signal`](Self::with_signal)) or read from the topic's name by a template
/// ([`with_template`](Self::with_template)) such as `{prefix}.{signal}.{tenant}.{n}`, which
/// reads `v6.qtw.traces.client1.0` as tenant `client1`'s traces. In a template, `{tenant}`
/// and `{signal}` are read; any other `{name}` stands for one or more characters other than
/// `.`; the rest must match as written.
///
/// ```
/// use wit_batch::{PayloadFormat, Signal, Tenant};
/// use wit_pipeline::kafka::TopicRule;
///
/// let rule = TopicRule::new("^v6\\.qtw\\..*", PayloadFormat::OtlpProtobuf)
///     .with_template("{prefix}.{app}.{signal}.{tenant}.{n}")?;
/// assert_eq!(
///     rule.route("v6.qtw.traces.client1.0")?,
///     Some((Tenant::try_new("client1")?, Signal::Traces))
/// );
/// assert_eq!(rule.route("other.topic")?, None); // not this rule's
/// assert!(rule.route("v6.qtw.spans.client1.0").is_err()); // no such signal
///
/// let fixed = TopicRule::new("billing-events", PayloadFormat::Ndjson)
///     .with_tenant(Tenant::try_new("acme")?)
///     .with_signal(Signal::Events);
/// assert_eq!(fixed.route("billing-events")?, Some((Tenant::try_new("acme")?, Signal::Events)));
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct TopicRule {
    subscription: String,
    pattern: Option<Regex>,
    format: PayloadFormat,
    tenant: Option<Tenant>,
    signal: Option<Signal>,
    template: Option<Template>,
}

impl TopicRule {
    /// The rule for the topic named `subscription`, or for every topic matching it when it
    /// starts with `^` (a regular expression, as Kafka clients take it), whose messages are
    /// encoded as `format`: an OTLP export request (protobuf or JSON) per message, or NDJSON
    /// events.
    pub fn new(subscription: impl Into<String>, format: PayloadFormat) -> Self {
        TopicRule {
            subscription: subscription.into(),
            pattern: None,
            format,
            tenant: None,
            signal: None,
            template: None,
        }
    }

    /// Every topic of this rule is `tenant`'s (else the template reads it).
    pub fn with_tenant(mut self, tenant: Tenant) -> Self {
        self.tenant = Some(tenant);
        self
    }

    /// Every topic of this rule holds `signal` (else the template reads it).
    pub fn with_signal(mut self, signal: Signal) -> Self {
        self.signal = Some(signal);
        self
    }

    /// Reads the tenant and the signal a rule does not fix from each topic's name.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for an empty template, an unclosed `{`, a placeholder named
    /// twice or an empty one.
    pub fn with_template(mut self, template: &str) -> Result<Self> {
        self.template = Some(Template::parse(template)?);
        Ok(self)
    }

    /// The subscription: a topic's name, or a pattern starting with `^`.
    pub fn subscription(&self) -> &str {
        &self.subscription
    }

    /// How the messages are encoded.
    pub fn format(&self) -> PayloadFormat {
        self.format
    }

    /// Checks the rule and compiles its pattern.
    pub(crate) fn validate(mut self) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidConfig {
            reason: format!("Kafka topic rule `{}`: {reason}", self.subscription),
        };
        if self.subscription.is_empty() {
            return Err(invalid("the subscription is empty".to_owned()));
        }
        if let Some(pattern) = self.subscription.strip_prefix('^') {
            let regex = Regex::new(&format!("^(?:{pattern})"))
                .map_err(|e| invalid(format!("not a regular expression: {e}")))?;
            self.pattern = Some(regex);
        }
        let reads = |name: &str| {
            self.template
                .as_ref()
                .is_some_and(|t| t.names.iter().any(|n| n == name))
        };
        if self.tenant.is_none() && !reads("tenant") {
            return Err(invalid(
                "no tenant: fix one, or read it with a template's {tenant}".to_owned(),
            ));
        }
        if self.signal.is_none() && !reads("signal") {
            return Err(invalid(
                "no signal: fix one, or read it with a template's {signal}".to_owned(),
            ));
        }
        if let Some(signal) = self.signal {
            check_format(signal, self.format).map_err(invalid)?;
        }
        Ok(self)
    }

    /// Whether `topic` is one of this rule's.
    fn covers(&self, topic: &str) -> bool {
        match &self.pattern {
            Some(regex) => regex.find(topic).is_some_and(|m| m.end() == topic.len()),
            None if self.subscription.starts_with('^') => {
                Regex::new(&format!("^(?:{})$", &self.subscription[1..])).is_ok_and(|r| r.is_match(topic))
            }
            None => self.subscription == topic,
        }
    }

    /// The tenant and signal of `topic`: `None` when the topic is not this rule's.
    ///
    /// # Errors
    ///
    /// [`Error::UnroutableTopic`] when the topic is this rule's but its name does not fit the
    /// template, or names an invalid tenant or an unknown signal, or a signal the rule's
    /// format cannot carry.
    pub fn route(&self, topic: &str) -> Result<Option<(Tenant, Signal)>> {
        if !self.covers(topic) {
            return Ok(None);
        }
        let unroutable = |reason: String| Error::UnroutableTopic {
            topic: topic.to_owned(),
            reason,
        };
        let read = match &self.template {
            Some(template) => Some(
                template
                    .read(topic)
                    .ok_or_else(|| unroutable(format!("the name does not fit the template `{}`", template.text)))?,
            ),
            None => None,
        };
        let field = |name: &str| {
            read.as_ref()
                .and_then(|r| r.iter().find(|(n, _)| n == name))
                .map(|(_, v)| v.as_str())
        };
        let tenant = match (&self.tenant, field("tenant")) {
            (Some(tenant), _) => tenant.clone(),
            (None, Some(name)) => Tenant::try_new(name).map_err(|e| unroutable(e.to_string()))?,
            (None, None) => return Err(unroutable("no tenant".to_owned())),
        };
        let signal = match (self.signal, field("signal")) {
            (Some(signal), _) => signal,
            (None, Some(name)) => Signal::from_str(name).map_err(|e| unroutable(e.to_string()))?,
            (None, None) => return Err(unroutable("no signal".to_owned())),
        };
        check_format(signal, self.format).map_err(unroutable)?;
        Ok(Some((tenant, signal)))
    }
}

/// Whether messages of `format` can carry `signal`.
fn check_format(signal: Signal, format: PayloadFormat) -> std::result::Result<(), String> {
    let fits = match signal {
        Signal::Traces | Signal::Logs | Signal::Metrics => {
            matches!(format, PayloadFormat::OtlpProtobuf | PayloadFormat::OtlpJson)
        }
        Signal::Events => format == PayloadFormat::Ndjson,
        _ => false,
    };
    if fits {
        Ok(())
    } else {
        Err(format!("{signal} cannot be read from {format} messages"))
    }
}

/// A topic-name template: literal text and `{name}` placeholders.
#[derive(Debug, Clone)]
struct Template {
    text: String,
    regex: Regex,
    names: Vec<String>,
}

impl Template {
    fn parse(text: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidConfig {
            reason: format!("Kafka topic template `{text}`: {reason}"),
        };
        if text.is_empty() {
            return Err(invalid("it is empty"));
        }
        let mut pattern = String::from("^");
        let mut names: Vec<String> = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            pattern.push_str(&regex::escape(&rest[..open]));
            let close = rest[open..].find('}').ok_or_else(|| invalid("a `{` is not closed"))? + open;
            let name = &rest[open + 1..close];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(invalid("a placeholder is empty or not made of letters, digits and `_`"));
            }
            if names.iter().any(|n| n == name) {
                return Err(invalid("a placeholder is named twice"));
            }
            pattern.push_str(&format!("(?P<{name}>[^.]+)"));
            names.push(name.to_owned());
            rest = &rest[close + 1..];
        }
        pattern.push_str(&regex::escape(rest));
        pattern.push('$');
        let regex = Regex::new(&pattern).map_err(|e| invalid(&e.to_string()))?;
        Ok(Template {
            text: text.to_owned(),
            regex,
            names,
        })
    }

    /// The placeholders' values in `topic`, if it fits.
    fn read(&self, topic: &str) -> Option<Vec<(String, String)>> {
        let captures = self.regex.captures(topic)?;
        Some(
            self.names
                .iter()
                .map(|name| (name.clone(), captures[name.as_str()].to_owned()))
                .collect(),
        )
    }
}

/// The first rule of `rules` that covers `topic`, with the topic's tenant and signal.
pub(crate) fn route<'a>(rules: &'a [TopicRule], topic: &str) -> Result<Option<(&'a TopicRule, Tenant, Signal)>> {
    for rule in rules {
        if let Some((tenant, signal)) = rule.route(topic)? {
            return Ok(Some((rule, tenant, signal)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(template: &str) -> TopicRule {
        TopicRule::new("^.*", PayloadFormat::OtlpJson)
            .with_template(template)
            .unwrap()
            .validate()
            .unwrap()
    }

    #[test]
    fn a_template_reads_tenant_and_signal_and_nothing_else() {
        let r = rule("{prefix}.{signal}.{tenant}.{n}");
        assert_eq!(
            r.route("v6.logs.acme.3").unwrap(),
            Some((Tenant::try_new("acme").unwrap(), Signal::Logs))
        );
        for bad in ["v6.logs.acme", "v6.logs.acme.3.4", "v6..acme.3", "v6.logs.a/b.3"] {
            let err = r.route(bad).unwrap_err();
            assert!(
                matches!(err, Error::UnroutableTopic { ref topic, .. } if topic == bad),
                "{bad}: {err}"
            );
        }
        // Literal text must match as written (a `.` is not any character).
        let r = rule("tel-{signal}_{tenant}");
        assert_eq!(
            r.route("tel-metrics_acme").unwrap(),
            Some((Tenant::try_new("acme").unwrap(), Signal::Metrics))
        );
        assert!(r.route("telxmetrics_acme").is_err());
    }

    #[test]
    fn a_format_that_cannot_carry_the_signal_is_refused() {
        let r = TopicRule::new("^t\\..*", PayloadFormat::Ndjson)
            .with_template("t.{signal}.{tenant}")
            .unwrap()
            .validate()
            .unwrap();
        assert!(r.route("t.events.acme").unwrap().is_some());
        let err = r.route("t.traces.acme").unwrap_err().to_string();
        assert!(err.contains("traces cannot be read from"), "{err}");
        let fixed = TopicRule::new("x", PayloadFormat::OtlpProtobuf)
            .with_tenant(Tenant::try_new("a").unwrap())
            .with_signal(Signal::Events)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(fixed.contains("events cannot be read from"), "{fixed}");
    }

    #[test]
    fn rules_without_tenant_or_signal_or_with_bad_templates_are_refused() {
        let no_tenant = TopicRule::new("x", PayloadFormat::OtlpJson).with_signal(Signal::Logs);
        assert!(no_tenant.validate().unwrap_err().to_string().contains("no tenant"));
        let no_signal = TopicRule::new("x", PayloadFormat::OtlpJson).with_tenant(Tenant::try_new("a").unwrap());
        assert!(no_signal.validate().unwrap_err().to_string().contains("no signal"));
        for bad in ["", "{a", "{a}.{a}", "{}", "{a-b}"] {
            assert!(
                TopicRule::new("x", PayloadFormat::OtlpJson).with_template(bad).is_err(),
                "{bad}"
            );
        }
        let bad_regex = TopicRule::new("^(", PayloadFormat::OtlpJson)
            .with_template("{signal}.{tenant}")
            .unwrap();
        assert!(
            bad_regex
                .validate()
                .unwrap_err()
                .to_string()
                .contains("not a regular expression")
        );
    }

    #[test]
    fn the_first_rule_that_covers_a_topic_routes_it() {
        let acme = Tenant::try_new("acme").unwrap();
        let rules = vec![
            TopicRule::new("orders", PayloadFormat::Ndjson)
                .with_tenant(acme.clone())
                .with_signal(Signal::Events)
                .validate()
                .unwrap(),
            rule("{signal}.{tenant}"),
        ];
        let (first, tenant, signal) = route(&rules, "orders").unwrap().unwrap();
        assert_eq!((first.subscription(), tenant, signal), ("orders", acme, Signal::Events));
        let (second, tenant, _) = route(&rules, "logs.beta").unwrap().unwrap();
        assert_eq!((second.subscription(), tenant.as_str()), ("^.*", "beta"));
        // A pattern must cover the whole name.
        let anchored = TopicRule::new("^logs", PayloadFormat::OtlpJson)
            .with_tenant(Tenant::try_new("a").unwrap())
            .with_signal(Signal::Logs)
            .validate()
            .unwrap();
        assert!(anchored.route("logs").unwrap().is_some());
        assert!(anchored.route("logs-2").unwrap().is_none());
    }
}
