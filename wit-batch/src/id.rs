//! Batch ids: time-ordered UUID v7 values.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use crate::Error;

/// The id of a batch: a time-ordered 128-bit UUID (version 7), shown as UUID text.
///
/// The top 48 bits hold the Unix time in milliseconds at which the id was made, so ids sort
/// by creation time, and [`created_at`](Self::created_at) recovers that time. Ids made by
/// [`BatchId::new`] in one process are strictly increasing, even within one millisecond (a
/// counter below the timestamp keeps them ordered), so `Ord` is creation order.
///
/// ```
/// use wit_batch::BatchId;
///
/// let first = BatchId::new();
/// let second = BatchId::new();
/// assert!(first < second);
///
/// let text = first.to_string(); // e.g. "0198a3b2-6c1e-7d40-9f3a-5b2c8e1d4f60"
/// assert_eq!(text.parse::<BatchId>()?, first);
/// assert_eq!(BatchId::from_bytes(first.to_bytes()), first);
/// assert!(first.created_at() <= std::time::SystemTime::now());
/// # Ok::<_, wit_batch::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BatchId(u128);

impl BatchId {
    /// A new id for the current time, greater than every id this process made before.
    #[expect(
        clippy::new_without_default,
        reason = "a `Default` that mints a fresh time-based id would be surprising"
    )]
    pub fn new() -> Self {
        BatchId(Uuid::now_v7().as_u128())
    }

    /// The id with this 128-bit value (the UUID's bytes read big-endian).
    ///
    /// Any value is accepted; one that is not a UUID v7 still orders and prints, but its
    /// [`created_at`](Self::created_at) is meaningless.
    pub const fn from_u128(value: u128) -> Self {
        BatchId(value)
    }

    /// The id's 128-bit value.
    pub const fn as_u128(self) -> u128 {
        self.0
    }

    /// The id's 16 bytes, in UUID (big-endian) order; byte order is time order.
    pub const fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// The id with these 16 bytes (as returned by [`to_bytes`](Self::to_bytes)).
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        BatchId(u128::from_be_bytes(bytes))
    }

    /// When the id was made: the Unix time in milliseconds held in its top 48 bits.
    pub fn created_at(self) -> SystemTime {
        let millis = (self.0 >> 80) as u64;
        UNIX_EPOCH + Duration::from_millis(millis)
    }
}

impl fmt::Display for BatchId {
    /// The canonical hyphenated, lowercase UUID text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&Uuid::from_u128(self.0).hyphenated(), f)
    }
}

impl fmt::Debug for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BatchId({self})")
    }
}

impl FromStr for BatchId {
    type Err = Error;

    /// Parses hyphenated UUID text (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, either case), the
    /// form [`Display`](fmt::Display) writes and databases store.
    ///
    /// # Errors
    ///
    /// [`Error::Unknown`] with kind `"batch id"` for anything else.
    fn from_str(s: &str) -> Result<Self, Error> {
        let unknown = || Error::Unknown {
            kind: "batch id",
            value: s.to_owned(),
        };
        if s.len() != 36 {
            return Err(unknown());
        }
        Uuid::try_parse(s).map(|u| BatchId(u.as_u128())).map_err(|_| unknown())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_made_in_a_tight_loop_are_strictly_increasing() {
        let ids: Vec<BatchId> = (0..10_000).map(|_| BatchId::new()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        // Many of them share a millisecond, so the order comes from the counter, not the clock.
        let same_ms = ids
            .windows(2)
            .filter(|w| w[0].created_at() == w[1].created_at())
            .count();
        assert!(same_ms > 0);
    }

    #[test]
    fn ids_from_several_threads_are_unique() {
        let threads: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| (0..2_000).map(|_| BatchId::new()).collect::<Vec<_>>()))
            .collect();
        let mut all: Vec<BatchId> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
    }

    #[test]
    fn created_at_is_the_embedded_millisecond() {
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis();
        let id = BatchId::new();
        let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis();
        let at = id.created_at().duration_since(UNIX_EPOCH).unwrap().as_millis();
        // The counter may push the timestamp one millisecond ahead when it overflows.
        assert!(before <= at && at <= after + 1, "{before} <= {at} <= {after}");

        let fixed = BatchId::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000);
        assert_eq!(fixed.created_at(), UNIX_EPOCH + Duration::from_millis(0x0190_0000_0000));
    }

    #[test]
    fn text_and_bytes_round_trip() {
        let id = BatchId::from_u128(0x0190_b4c2_6c1e_7d40_9f3a_5b2c_8e1d_4f60);
        assert_eq!(id.to_string(), "0190b4c2-6c1e-7d40-9f3a-5b2c8e1d4f60");
        assert_eq!(format!("{id:?}"), "BatchId(0190b4c2-6c1e-7d40-9f3a-5b2c8e1d4f60)");
        assert_eq!("0190B4C2-6C1E-7D40-9F3A-5B2C8E1D4F60".parse::<BatchId>().unwrap(), id);
        assert_eq!(id.to_bytes()[0], 0x01);
        assert_eq!(BatchId::from_bytes(id.to_bytes()), id);
        assert_eq!(BatchId::from_u128(id.as_u128()), id);
    }

    #[test]
    fn malformed_text_is_an_unknown_batch_id() {
        for bad in [
            "",
            "0190b4c26c1e7d409f3a5b2c8e1d4f60",
            "{0190b4c2-6c1e-7d40-9f3a-5b2c8e1d4f60}",
            "0190b4c2-6c1e-7d40-9f3a-5b2c8e1d4f6g",
            "0190b4c2-6c1e-7d40-9f3a-5b2c8e1d4f6",
        ] {
            match bad.parse::<BatchId>() {
                Err(Error::Unknown {
                    kind: "batch id",
                    value,
                }) => assert_eq!(value, bad),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn byte_order_is_numeric_order() {
        let a = BatchId::from_u128(1 << 80);
        let b = BatchId::from_u128((1 << 80) + 1);
        let c = BatchId::from_u128(2 << 80);
        assert!(a < b && b < c);
        assert!(a.to_bytes() < b.to_bytes() && b.to_bytes() < c.to_bytes());
    }
}
