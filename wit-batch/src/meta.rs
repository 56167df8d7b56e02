//! What a batch is about: its tenant, signal, source and counts.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use crate::{BatchId, Error};

/// A tenant (client) name, safe to use as one component of a storage path.
///
/// Valid names are 1 to [`Tenant::MAX_LEN`] bytes of ASCII letters, digits, `.`, `_` and `-`,
/// and do not start with `.` (so `.` and `..` are not names).
///
/// ```
/// use wit_batch::Tenant;
///
/// let tenant = Tenant::try_new("acme-prod")?;
/// assert_eq!(tenant.as_str(), "acme-prod");
/// assert!(Tenant::try_new("../etc").is_err());
/// assert!(Tenant::try_new("").is_err());
/// # Ok::<_, wit_batch::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tenant(String);

impl Tenant {
    /// The longest tenant name, in bytes.
    pub const MAX_LEN: usize = 128;

    /// Checks `name` and wraps it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTenant`] when the name is empty, longer than [`Tenant::MAX_LEN`] bytes,
    /// starts with `.`, or holds a character other than ASCII letters, digits, `.`, `_`, `-`.
    pub fn try_new(name: impl Into<String>) -> Result<Self, Error> {
        let name = name.into();
        match Self::check(&name) {
            Ok(()) => Ok(Tenant(name)),
            Err(reason) => Err(Error::InvalidTenant {
                tenant: shorten(&name),
                reason,
            }),
        }
    }

    /// Why `name` is not a valid tenant, if it is not.
    pub(crate) fn check(name: &str) -> Result<(), &'static str> {
        if name.is_empty() {
            Err("it is empty")
        } else if name.len() > Self::MAX_LEN {
            Err("it is longer than 128 bytes")
        } else if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            Err("only ASCII letters, digits, '.', '_' and '-' are allowed")
        } else if name.starts_with('.') {
            Err("it starts with '.'")
        } else {
            Ok(())
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `name`, cut to at most 64 characters for an error message.
fn shorten(name: &str) -> String {
    match name.char_indices().nth(64) {
        Some((at, _)) => format!("{}…", &name[..at]),
        None => name.to_owned(),
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Tenant {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Tenant::try_new(s)
    }
}

impl AsRef<str> for Tenant {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Defines a fieldless enum's stable codes and names, `Display` (the name) and `FromStr`.
macro_rules! named_codes {
    ($ty:ident, $kind:literal, [$($variant:ident = ($code:literal, $name:literal)),+ $(,)?]) => {
        impl $ty {
            /// Every value, in code order.
            pub const ALL: [$ty; [$($code),+].len()] = [$($ty::$variant),+];

            /// The stable one-byte code used in envelopes and catalogs.
            pub const fn code(self) -> u8 {
                match self {
                    $($ty::$variant => $code,)+
                }
            }

            /// The value with this [`code`](Self::code), if any.
            pub fn from_code(code: u8) -> Option<Self> {
                Self::ALL.into_iter().find(|v| v.code() == code)
            }

            /// The stable name, as written in paths, catalogs and configuration.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)+
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = Error;

            /// Parses the name given by [`as_str`](Self::as_str).
            fn from_str(s: &str) -> Result<Self, Error> {
                Self::ALL
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| Error::Unknown { kind: $kind, value: s.to_owned() })
            }
        }
    };
}
pub(crate) use named_codes;

/// The kind of telemetry a batch holds.
///
/// ```
/// use wit_batch::Signal;
///
/// assert_eq!(Signal::Traces.as_str(), "traces");
/// assert_eq!("logs".parse::<Signal>()?, Signal::Logs);
/// assert_eq!(Signal::from_code(Signal::Metrics.code()), Some(Signal::Metrics));
/// # Ok::<_, wit_batch::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Signal {
    /// OTLP spans.
    Traces,
    /// OTLP log records.
    Logs,
    /// OTLP metric data points.
    Metrics,
    /// Plain JSON events from non-OTLP sources.
    Events,
    /// Records refused one by one (an event failing its stream's schema, an OTLP record that
    /// does not convert, a Kafka message that does not decode), kept with why: see
    /// [`dead_letters`](crate::dead_letters).
    DeadLetters,
}

named_codes!(
    Signal,
    "signal",
    [
        Traces = (1, "traces"),
        Logs = (2, "logs"),
        Metrics = (3, "metrics"),
        Events = (4, "events"),
        DeadLetters = (5, "dead_letters"),
    ]
);

/// Where a batch's payloads came from.
///
/// ```
/// use wit_batch::SourceKind;
///
/// assert_eq!(SourceKind::Kafka.to_string(), "kafka");
/// assert_eq!("grpc".parse::<SourceKind>()?, SourceKind::Grpc);
/// # Ok::<_, wit_batch::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SourceKind {
    /// OTLP/HTTP or another HTTP endpoint.
    Http,
    /// OTLP/gRPC.
    Grpc,
    /// A Kafka consumer; parts carry source offsets.
    Kafka,
    /// Files read from disk.
    File,
    /// Anything else a host feeds in.
    Other,
}

named_codes!(
    SourceKind,
    "source kind",
    [
        Http = (1, "http"),
        Grpc = (2, "grpc"),
        Kafka = (3, "kafka"),
        File = (4, "file"),
        Other = (5, "other"),
    ]
);

/// What is known about a batch besides its payloads: the header of its
/// [`Envelope`](crate::Envelope) and the row the tracker keeps.
///
/// ```
/// use std::time::SystemTime;
/// use wit_batch::{BatchId, BatchMeta, Signal, SourceKind, Tenant};
///
/// let id = BatchId::new();
/// let meta = BatchMeta {
///     id,
///     tenant: Tenant::try_new("acme")?,
///     signal: Signal::Logs,
///     source: SourceKind::Kafka,
///     message_count: 120,
///     byte_size: 48_000,
///     first_offset: Some(1_000),
///     last_offset: Some(1_119),
///     topics: vec!["logs.acme".to_owned()],
///     partition: None,
///     created_at: id.created_at(),
/// };
/// assert!(meta.created_at <= SystemTime::now());
/// # Ok::<_, wit_batch::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchMeta {
    /// The batch's id.
    pub id: BatchId,
    /// Whose data it is.
    pub tenant: Tenant,
    /// What kind of telemetry it holds.
    pub signal: Signal,
    /// Where it came from.
    pub source: SourceKind,
    /// Messages (OTLP requests, Kafka messages, NDJSON bodies ...) in the batch: the sum of its
    /// parts' message counts.
    pub message_count: u64,
    /// Payload bytes as received (compressed, if they arrived compressed): the sum of its
    /// parts' payload lengths.
    pub byte_size: u64,
    /// The lowest source offset among its parts (Kafka), if any part has one.
    pub first_offset: Option<i64>,
    /// The highest source offset among its parts (Kafka), if any part has one.
    pub last_offset: Option<i64>,
    /// The source topics its parts came from (Kafka), if any.
    pub topics: Vec<String>,
    /// The source partition, for a batch of one partition of one topic (Kafka): its parts'
    /// offsets are that partition's, and for such a batch `first_offset` is where its range
    /// starts (the partition's position before its first message; see the Kafka source).
    pub partition: Option<i32>,
    /// When the batch was formed.
    pub created_at: SystemTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_accepts_path_safe_names() {
        for ok in ["a", "acme", "ACME_prod-1.eu", "0", "a..b", "-x", &"x".repeat(128)] {
            let tenant = Tenant::try_new(ok).unwrap();
            assert_eq!(tenant.as_str(), ok);
            assert_eq!(tenant.to_string(), ok);
            assert_eq!(ok.parse::<Tenant>().unwrap(), tenant);
        }
    }

    #[test]
    fn tenant_rejects_unsafe_names_with_a_reason() {
        for (bad, reason) in [
            ("", "it is empty"),
            (".", "it starts with '.'"),
            ("..", "it starts with '.'"),
            (".hidden", "it starts with '.'"),
            ("a/b", "only ASCII letters, digits, '.', '_' and '-' are allowed"),
            ("a b", "only ASCII letters, digits, '.', '_' and '-' are allowed"),
            ("é", "only ASCII letters, digits, '.', '_' and '-' are allowed"),
            ("a\\b", "only ASCII letters, digits, '.', '_' and '-' are allowed"),
            ("a\0", "only ASCII letters, digits, '.', '_' and '-' are allowed"),
        ] {
            match Tenant::try_new(bad) {
                Err(Error::InvalidTenant { tenant, reason: r }) => {
                    assert_eq!(tenant, bad);
                    assert_eq!(r, reason, "{bad:?}");
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        let long = "x".repeat(129);
        match Tenant::try_new(long) {
            Err(e @ Error::InvalidTenant { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("longer than 128 bytes"), "{msg}");
                assert!(msg.contains(&format!("{}…", "x".repeat(64))), "{msg}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn signal_and_source_kind_names_and_codes_are_stable() {
        let signals: Vec<_> = Signal::ALL.iter().map(|s| (s.code(), s.as_str())).collect();
        assert_eq!(
            signals,
            [
                (1, "traces"),
                (2, "logs"),
                (3, "metrics"),
                (4, "events"),
                (5, "dead_letters")
            ]
        );
        let sources: Vec<_> = SourceKind::ALL.iter().map(|s| (s.code(), s.as_str())).collect();
        assert_eq!(
            sources,
            [(1, "http"), (2, "grpc"), (3, "kafka"), (4, "file"), (5, "other")]
        );

        for s in Signal::ALL {
            assert_eq!(Signal::from_code(s.code()), Some(s));
            assert_eq!(s.to_string().parse::<Signal>().unwrap(), s);
        }
        for s in SourceKind::ALL {
            assert_eq!(SourceKind::from_code(s.code()), Some(s));
            assert_eq!(s.to_string().parse::<SourceKind>().unwrap(), s);
        }
        assert_eq!(Signal::from_code(0), None);
        assert_eq!(SourceKind::from_code(6), None);
        assert!(matches!(
            "Traces".parse::<Signal>(),
            Err(Error::Unknown { kind: "signal", .. })
        ));
        assert!(matches!(
            "udp".parse::<SourceKind>(),
            Err(Error::Unknown {
                kind: "source kind",
                ..
            })
        ));
    }
}
