//! Where files go: `{tenant}/{signal}/{yyyy}/{mm}/{dd}/{hh}/{node}/{file}.parquet`.
//!
//! The hour is the UTC hour of the file's earliest event time, so a time-range predicate can
//! skip whole directories; the catalog keeps each file's exact range. File names are UUID v7,
//! so they sort by creation time and never collide between nodes.

use std::fmt;

use wit_batch::{Signal, Tenant};

use crate::{Error, Result};

/// A node's name, as it appears in file paths: 1 to 64 ASCII letters, digits, `-`, `_` or
/// `.`, and not `.` or `..`.
///
/// ```
/// use wit_store::NodeName;
///
/// assert!(NodeName::try_new("ingest-1.eu").is_ok());
/// assert!(NodeName::try_new("../etc").is_err());
/// assert!(NodeName::try_new("").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeName(String);

impl NodeName {
    /// The longest name accepted.
    pub const MAX_LEN: usize = 64;

    /// Validates `name`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] saying what is wrong.
    pub fn try_new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let reason = if name.is_empty() {
            Some("it is empty")
        } else if name.len() > Self::MAX_LEN {
            Some("it is longer than 64 bytes")
        } else if name == "." || name == ".." {
            Some("`.` and `..` are not names")
        } else if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            Some("only ASCII letters, digits, `-`, `_` and `.` are allowed")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidName {
                kind: "node",
                name: name.chars().take(64).collect(),
                reason,
            }),
            None => Ok(NodeName(name)),
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The directory of a tenant's signal: `{tenant}/{signal}`.
pub(crate) fn signal_prefix(tenant: &Tenant, signal: Signal) -> String {
    format!("{}/{}", tenant.as_str(), signal.as_str())
}

/// The path of a file whose earliest event is at `min_time` (ns since the epoch, UTC).
pub(crate) fn file_path(
    tenant: &Tenant,
    signal: Signal,
    min_time: i64,
    node: &NodeName,
    file_id: uuid::Uuid,
) -> String {
    let hour = chrono::DateTime::from_timestamp_nanos(min_time).format("%Y/%m/%d/%H");
    format!("{}/{hour}/{node}/{file_id}.parquet", signal_prefix(tenant, signal))
}

/// The directory (partition) of a file path: everything before its name.
pub(crate) fn partition_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_layout() {
        let tenant = Tenant::try_new("acme").unwrap();
        let node = NodeName::try_new("node-a").unwrap();
        let id = uuid::Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0001);
        // 2023-11-14T22:13:20Z
        let path = file_path(&tenant, Signal::Traces, 1_700_000_000_000_000_000, &node, id);
        assert_eq!(path, format!("acme/traces/2023/11/14/22/node-a/{id}.parquet"));
        assert_eq!(partition_of(&path), "acme/traces/2023/11/14/22/node-a");
        // Before 1970 still names a valid hour.
        let early = file_path(&tenant, Signal::Logs, -1, &node, id);
        assert!(early.starts_with("acme/logs/1969/12/31/23/node-a/"), "{early}");
    }

    #[test]
    fn node_names_are_checked() {
        for bad in ["", ".", "..", "a/b", "a b", "é", "a\nb", &"x".repeat(65)] {
            assert!(
                matches!(NodeName::try_new(bad), Err(Error::InvalidName { kind: "node", .. })),
                "{bad:?}"
            );
        }
        for good in ["a", "node-1", "eu_west.2", &"x".repeat(64)] {
            assert_eq!(NodeName::try_new(good).unwrap().as_str(), good);
        }
    }
}
