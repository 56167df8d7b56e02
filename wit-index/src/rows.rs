//! The rows of one file a search matched.

use std::ops::Range;

use parquet::arrow::arrow_reader::{RowSelection, RowSelector};

/// A set of row ordinals of one file (`0..len`), as a search returns them.
///
/// ```
/// use wit_index::RowSet;
///
/// let rows = RowSet::from_rows(10, [2, 3, 4, 8]);
/// assert_eq!(rows.count(), 4);
/// assert_eq!(rows.ranges(), vec![2..5, 8..9]);
/// assert_eq!(rows.iter().collect::<Vec<_>>(), vec![2, 3, 4, 8]);
/// // What the Parquet reader takes: skip 2, select 3, skip 3, select 1, skip 1.
/// assert_eq!(rows.to_row_selection().row_count(), 4);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct RowSet {
    len: u64,
    words: Vec<u64>,
}

impl std::fmt::Debug for RowSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowSet")
            .field("len", &self.len)
            .field("ranges", &self.ranges())
            .finish()
    }
}

impl RowSet {
    /// No row of a file of `len` rows.
    pub fn empty(len: u64) -> Self {
        RowSet {
            len,
            words: vec![0; len.div_ceil(64) as usize],
        }
    }

    /// Every row of a file of `len` rows.
    pub fn all(len: u64) -> Self {
        let mut set = RowSet::empty(len);
        set.words.fill(u64::MAX);
        set.trim();
        set
    }

    /// The given rows of a file of `len` rows.
    ///
    /// # Panics
    ///
    /// When a row is not below `len`.
    pub fn from_rows(len: u64, rows: impl IntoIterator<Item = u64>) -> Self {
        let mut set = RowSet::empty(len);
        for row in rows {
            set.insert(row);
        }
        set
    }

    pub(crate) fn insert(&mut self, row: u64) {
        assert!(row < self.len, "row {row} of a file of {} rows", self.len);
        self.words[(row / 64) as usize] |= 1 << (row % 64);
    }

    fn trim(&mut self) {
        if !self.len.is_multiple_of(64)
            && let Some(last) = self.words.last_mut()
        {
            *last &= (1u64 << (self.len % 64)) - 1;
        }
    }

    /// The file's row count.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file has no rows.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many rows are in the set.
    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Whether `row` is in the set.
    pub fn contains(&self, row: u64) -> bool {
        row < self.len && self.words[(row / 64) as usize] & (1 << (row % 64)) != 0
    }

    /// The rows in the set, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &word)| {
            let mut w = word;
            std::iter::from_fn(move || {
                (w != 0).then(|| {
                    let bit = u64::from(w.trailing_zeros());
                    w &= w - 1;
                    i as u64 * 64 + bit
                })
            })
        })
    }

    /// The set as ascending, disjoint, non-adjacent ranges.
    pub fn ranges(&self) -> Vec<Range<u64>> {
        let mut out: Vec<Range<u64>> = Vec::new();
        for row in self.iter() {
            match out.last_mut() {
                Some(r) if r.end == row => r.end += 1,
                _ => out.push(row..row + 1),
            }
        }
        out
    }

    /// The set as a Parquet row selection over the whole file, for
    /// `ParquetRecordBatchReaderBuilder::with_row_selection`.
    pub fn to_row_selection(&self) -> RowSelection {
        let mut selectors = Vec::new();
        let mut at = 0;
        for r in self.ranges() {
            if r.start > at {
                selectors.push(RowSelector::skip((r.start - at) as usize));
            }
            selectors.push(RowSelector::select((r.end - r.start) as usize));
            at = r.end;
        }
        if at < self.len {
            selectors.push(RowSelector::skip((self.len - at) as usize));
        }
        RowSelection::from(selectors)
    }

    /// Keeps only the rows `other` holds too (both sets are of the same file: rows beyond
    /// the shorter one's length are dropped).
    ///
    /// ```
    /// use wit_index::RowSet;
    ///
    /// let mut a = RowSet::from_rows(10, [1, 2, 3]);
    /// a.and(&RowSet::from_rows(10, [2, 3, 4]));
    /// assert_eq!(a.iter().collect::<Vec<_>>(), [2, 3]);
    /// ```
    pub fn and(&mut self, other: &RowSet) {
        let shared = self.words.len().min(other.words.len());
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a &= b;
        }
        for w in &mut self.words[shared..] {
            *w = 0;
        }
    }

    pub(crate) fn or(&mut self, other: &RowSet) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= b;
        }
    }

    pub(crate) fn not(&mut self) {
        for w in &mut self.words {
            *w = !*w;
        }
        self.trim();
    }
}
