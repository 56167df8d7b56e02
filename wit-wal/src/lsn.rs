use std::fmt;

/// A log sequence number: the position of one record in the log.
///
/// LSNs start at 1, grow by one per record and are never reused; `Lsn(0)` precedes every record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The LSN of the first record of a new log.
    pub const FIRST: Lsn = Lsn(1);

    /// The LSN after this one.
    pub fn next(self) -> Lsn {
        Lsn(self.0 + 1)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u64> for Lsn {
    fn from(v: u64) -> Self {
        Lsn(v)
    }
}

impl From<Lsn> for u64 {
    fn from(v: Lsn) -> Self {
        v.0
    }
}

/// A half-open range of LSNs, `start..end`: the records one batch received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LsnRange {
    /// The first LSN in the range.
    pub start: Lsn,
    /// The LSN just past the range.
    pub end: Lsn,
}

impl LsnRange {
    /// Number of LSNs in the range.
    pub fn len(&self) -> u64 {
        self.end.0 - self.start.0
    }

    /// Whether the range holds no LSN.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The LSNs in the range, in order.
    pub fn iter(&self) -> impl Iterator<Item = Lsn> + use<> {
        (self.start.0..self.end.0).map(Lsn)
    }

    /// Whether `lsn` lies in the range.
    pub fn contains(&self, lsn: Lsn) -> bool {
        self.start <= lsn && lsn < self.end
    }
}
