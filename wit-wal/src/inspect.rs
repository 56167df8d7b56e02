//! Read-only inspection of a WAL directory, for `dump`- and `verify`-style tools.
//!
//! Nothing here takes the directory's lock or changes a file, so it can look at a log that
//! another process has open; the tail of such a live log may then show as torn.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use memmap2::Mmap;

use crate::format::{
    GROUP_HEADER_LEN, GroupHeader, HEADER_LEN, SegmentHeader, SegmentTrailer, Stop, find_later_group, generation_mix,
    read_record, scan_groups,
};
use crate::recovery::Damage;
use crate::segment::{self, MapOwner};
use crate::{Error, Lsn, Result};

/// A record found by [`Inspector::scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScannedRecord {
    /// Its LSN.
    pub lsn: Lsn,
    /// The segment file holding it.
    pub path: PathBuf,
    /// Offset of its frame in the file.
    pub offset: u64,
    /// Whether its checksum matches.
    pub crc_ok: bool,
    /// Its bytes.
    pub payload: Bytes,
}

/// What [`Inspector::scan`] yields, in log order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Item {
    /// A record, intact or not (see `crc_ok`).
    Record(ScannedRecord),
    /// A partly written last group: never acknowledged, cut off by the next `open`.
    TornTail(Damage),
    /// Damage to bytes that were durable: `open` refuses the log (or salvages, if asked).
    Problem(Damage),
}

/// The outcome of [`Inspector::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Segment files examined.
    pub segments: usize,
    /// Intact records found.
    pub records: u64,
    /// The first record's LSN, if any.
    pub first_lsn: Option<Lsn>,
    /// The LSN after the last intact record.
    pub next_lsn: Lsn,
    /// A torn tail, which `open` would cut off.
    pub torn_tail: Option<Damage>,
    /// The first damage found, if any.
    pub problem: Option<Damage>,
}

impl VerifyReport {
    /// Whether every durable byte checked out (a torn tail is not damage).
    pub fn is_intact(&self) -> bool {
        self.problem.is_none()
    }
}

struct SegmentFile {
    path: PathBuf,
    header: Result<SegmentHeader, String>,
    /// A sealing trailer.
    trailer: Option<SegmentTrailer>,
    /// A clean close's checkpoint.
    checkpoint: Option<SegmentTrailer>,
    map: Option<Arc<Mmap>>,
}

/// A read-only view of the segments of a WAL directory.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// # let wal = wit_wal::Wal::open(dir.path(), wit_wal::Config::default())?;
/// # wal.append(b"x")?;
/// # drop(wal);
/// let report = wit_wal::Inspector::open(dir.path())?.verify();
/// assert!(report.is_intact());
/// assert_eq!(report.records, 1);
/// # Ok::<_, wit_wal::Error>(())
/// ```
pub struct Inspector {
    segments: Vec<SegmentFile>,
}

impl Inspector {
    /// Lists and maps the segments of `dir` without locking or changing anything.
    ///
    /// # Errors
    ///
    /// [`Error::NotAWal`] if `dir` holds other files; [`Error::Io`] if it cannot be read.
    /// Damaged segments are reported by [`scan`](Self::scan) and [`verify`](Self::verify).
    pub fn open(dir: &Path) -> Result<Self> {
        let listing = segment::list_dir(dir)?;
        let mut segments = Vec::new();
        for (_, path) in listing.segments {
            let file = std::fs::File::open(&path).map_err(|e| Error::io("open segment", &path, e))?;
            let header = segment::read_header(&file, &path).map_err(|e| e.to_string());
            let len = file.metadata().map_err(|e| Error::io("stat segment", &path, e))?.len();
            let any_trailer = match &header {
                Ok(h) if len == h.segment_len => segment::read_trailer(&file, &path, h)?,
                _ => None,
            };
            let (trailer, checkpoint) = match any_trailer {
                Some(t) if t.sealed => (Some(t), None),
                other => (None, other),
            };
            let map = if header.is_ok() {
                Some(segment::map(&file, &path)?)
            } else {
                None
            };
            segments.push(SegmentFile {
                path,
                header,
                trailer,
                checkpoint,
                map,
            });
        }
        Ok(Self { segments })
    }

    /// Everything in the log in order: records with their checksum status, a torn tail,
    /// damage, and the intact records after damage. Records below `from` are passed over.
    pub fn scan(&self, from: Lsn) -> impl Iterator<Item = Item> + '_ {
        let mut expected: Option<u64> = None;
        let count = self.segments.len();
        self.segments.iter().enumerate().flat_map(move |(i, seg)| {
            let items = scan_segment(seg, i + 1 == count, &mut expected);
            items.into_iter().filter(move |item| match item {
                Item::Record(r) => r.lsn >= from,
                _ => true,
            })
        })
    }

    /// Checks every segment and record; stops at the first damage.
    pub fn verify(&self) -> VerifyReport {
        let mut report = VerifyReport {
            segments: self.segments.len(),
            records: 0,
            first_lsn: None,
            next_lsn: Lsn::FIRST,
            torn_tail: None,
            problem: None,
        };
        for item in self.scan(Lsn(0)) {
            match item {
                Item::Record(r) if r.crc_ok => {
                    report.first_lsn.get_or_insert(r.lsn);
                    report.records += 1;
                    report.next_lsn = r.lsn.next();
                }
                Item::Record(r) => {
                    report.problem = Some(Damage {
                        path: r.path,
                        offset: r.offset,
                        lsn: r.lsn,
                        reason: "record checksum mismatch".into(),
                    });
                    break;
                }
                Item::TornTail(d) => report.torn_tail = Some(d),
                Item::Problem(d) => {
                    report.problem = Some(d);
                    break;
                }
            }
        }
        if let (None, Some(Ok(h))) = (report.first_lsn, self.segments.first().map(|s| &s.header)) {
            report.next_lsn = Lsn(h.first_lsn);
        }
        report
    }
}

fn scan_segment(seg: &SegmentFile, last: bool, expected: &mut Option<u64>) -> Vec<Item> {
    let damage = |offset: u64, lsn: u64, reason: String| Damage {
        path: seg.path.clone(),
        offset,
        lsn: Lsn(lsn),
        reason,
    };
    let (h, map) = match (&seg.header, &seg.map) {
        (Ok(h), Some(m)) => (*h, m),
        _ => {
            let reason = seg
                .header
                .as_ref()
                .err()
                .cloned()
                .unwrap_or_else(|| "segment could not be mapped".into());
            return vec![Item::Problem(damage(0, expected.unwrap_or(0), reason))];
        }
    };
    let mut items = Vec::new();
    if let Some(exp) = *expected
        && exp != h.first_lsn
    {
        items.push(Item::Problem(damage(
            24,
            exp,
            format!("segment starts at LSN {} instead of {exp}", h.first_lsn),
        )));
        return items;
    }
    let bytes = Bytes::from_owner(MapOwner(Arc::clone(map)));
    let limit = seg.trailer.map_or(h.data_limit(), |t| t.data_end).min(map.len() as u64);
    // Pushes a group's records; stops at a frame whose length does not fit.
    let push_group = |items: &mut Vec<Item>, at: usize, g: &GroupHeader, group_end: usize| {
        let mut pos = at + GROUP_HEADER_LEN;
        for i in 0..g.count as u64 {
            let lsn = g.first_lsn + i;
            match read_record(&bytes, pos, group_end, lsn, generation_mix(h.generation)) {
                Ok(f) => {
                    items.push(Item::Record(ScannedRecord {
                        lsn: Lsn(lsn),
                        path: seg.path.clone(),
                        offset: pos as u64,
                        crc_ok: f.crc_ok,
                        payload: bytes.slice(f.payload_at..f.payload_at + f.len),
                    }));
                    pos = f.payload_at + f.len;
                }
                Err(reason) => {
                    items.push(Item::Problem(damage(pos as u64, lsn, reason.into())));
                    return;
                }
            }
        }
    };
    let sealed_end = seg.trailer.map(|t| (t.data_end, t.next_lsn));
    let (mut start, mut start_lsn) = (HEADER_LEN, h.first_lsn);
    loop {
        let end = scan_groups(&bytes, start, limit, h.generation, start_lsn, |at, g| {
            push_group(&mut items, at, g, at + GROUP_HEADER_LEN + g.bytes as usize);
        });
        *expected = Some(end.next_lsn);
        if sealed_end == Some((end.data_end, end.next_lsn)) {
            return items;
        }
        // The scan stopped early: a torn tail, or damage.
        let reason = match &end.stop {
            Stop::Torn(r) => r.clone(),
            Stop::End => "no intact group where data was expected".into(),
        };
        let intact_later = find_later_group(&bytes, &end, limit, h.generation);
        let checkpoint = seg
            .checkpoint
            .filter(|cp| end.data_end < cp.data_end || end.next_lsn < cp.next_lsn);
        if last && seg.trailer.is_none() && intact_later.is_none() && checkpoint.is_none() {
            // A torn group was never acknowledged: its records are not shown.
            if let Stop::Torn(reason) = end.stop {
                items.push(Item::TornTail(damage(end.data_end, end.next_lsn, reason)));
            }
            return items;
        }
        // Damage. Show the records of a group whose header is intact, with their checksum status.
        let at = end.data_end as usize;
        if let Ok(g) = GroupHeader::decode(&bytes[at..limit as usize], h.generation)
            && g.first_lsn == end.next_lsn
        {
            let group_end = (at + GROUP_HEADER_LEN)
                .saturating_add(g.bytes as usize)
                .min(limit as usize);
            push_group(&mut items, at, &g, group_end);
        }
        let reason = match (intact_later, checkpoint, seg.trailer) {
            (Some((off, g)), _, _) => {
                format!(
                    "{reason}; yet an intact group (LSN {}) follows at offset {off}",
                    g.first_lsn
                )
            }
            (None, Some(cp), _) => format!(
                "{reason}; yet the log was closed cleanly with its data through offset {} durable",
                cp.data_end
            ),
            (None, None, None) => format!("{reason}; segment has no valid trailer, yet a later segment exists"),
            (None, None, Some(t)) => {
                format!(
                    "{reason}; the trailer says data runs to offset {} (LSN {})",
                    t.data_end, t.next_lsn
                )
            }
        };
        items.push(Item::Problem(damage(end.data_end, end.next_lsn, reason)));
        // Go on with the intact data after the damage, so a dump shows it; but only forward,
        // past every LSN shown already: an intact copy of an earlier group is part of the
        // damage, not more of the log.
        let shown = items.iter().rev().find_map(|i| match i {
            Item::Record(r) => Some(r.lsn.0 + 1),
            _ => None,
        });
        let forward = shown.unwrap_or(0).max(end.next_lsn + 1);
        let Some((off, g)) = intact_later.filter(|(_, g)| g.first_lsn >= forward) else {
            return items;
        };
        (start, start_lsn) = (off, g.first_lsn);
    }
}
