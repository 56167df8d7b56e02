//! What `Wal::open` does before the log accepts appends: list the directory, trust sealed
//! segments through their trailers, scan the tail, and decide between a torn tail (cut it)
//! and corruption (refuse, or salvage when asked).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{Config, RecoveryMode};
use crate::format::{HEADER_LEN, SegmentHeader, SegmentTrailer, Stop, TRAILER_LEN, find_later_group, scan_groups};
use crate::segment::{self, CORRUPT_EXT, Sealed, Segment};
use crate::{Error, Lsn, Result};

/// What recovery found and did when the log was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovery {
    /// A partly written last group that was cut off (recognized by its surviving group header).
    /// Its records were never acknowledged.
    pub torn_tail: Option<Damage>,
    /// Only with [`RecoveryMode::Salvage`]: where the log was cut because of damage.
    pub cut: Option<Damage>,
    /// Only with [`RecoveryMode::Salvage`]: segments renamed to `*.wal.corrupt`.
    pub set_aside: Vec<PathBuf>,
    /// Segments whose records were scanned (the others were trusted through their trailers).
    pub segments_scanned: usize,
}

/// A place in a segment where the log stops being intact.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Damage {
    /// The segment file.
    pub path: PathBuf,
    /// Byte offset in it.
    pub offset: u64,
    /// The LSN the first lost or cut record would have had.
    pub lsn: Lsn,
    /// What was found there.
    pub reason: String,
}

/// The tail segment as recovery left it: appends continue at `data_end`.
pub(crate) struct TailState {
    pub(crate) file: File,
    pub(crate) segment: Arc<Segment>,
    pub(crate) data_end: u64,
    pub(crate) next_lsn: u64,
}

pub(crate) struct Recovered {
    /// Sealed segments, oldest first; the tail (if any) is not among them.
    pub(crate) sealed: Vec<Arc<Segment>>,
    /// The tail, or `None` when a new segment must be started at `next_lsn`.
    pub(crate) tail: Option<TailState>,
    pub(crate) next_lsn: u64,
    pub(crate) max_generation: u64,
    pub(crate) spares: Vec<PathBuf>,
    pub(crate) spare_counter: u64,
    pub(crate) report: Recovery,
}

struct Entry {
    path: PathBuf,
    file: File,
    header: SegmentHeader,
    /// A sealing trailer.
    trailer: Option<SegmentTrailer>,
    /// A clean close's checkpoint: data through it is durable.
    checkpoint: Option<SegmentTrailer>,
    file_len: u64,
}

fn name_number(path: &Path) -> Option<u64> {
    path.file_name()?.to_str()?.get(..20)?.parse().ok()
}

pub(crate) fn recover(dir: &Path, config: &Config) -> Result<Recovered> {
    let listing = segment::list_dir(dir)?;
    let mut dir_changed = false;
    for tmp in &listing.temporaries {
        std::fs::remove_file(tmp).map_err(|e| Error::io("remove unfinished spare segment", tmp, e))?;
        dir_changed = true;
    }
    let mut max_generation = 0;
    let mut spares = Vec::new();
    let mut spare_counter = 0;
    for spare in &listing.spares {
        spare_counter = spare_counter.max(name_number(spare).unwrap_or(0) + 1);
        let file = segment::open_rw(spare)?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat spare segment", spare, e))?
            .len();
        if let Ok(h) = segment::read_header(&file, spare) {
            max_generation = max_generation.max(h.generation);
        }
        if len == config.segment_size && spares.len() < config.max_spare_segments {
            spares.push(spare.clone());
        } else {
            std::fs::remove_file(spare).map_err(|e| Error::io("remove spare segment", spare, e))?;
            dir_changed = true;
        }
    }
    for aside in &listing.set_aside {
        max_generation = max_generation.max(name_number(aside).unwrap_or(0));
    }

    let mut entries = Vec::with_capacity(listing.segments.len());
    for (generation, path) in &listing.segments {
        let file = segment::open_rw(path)?;
        let header = segment::read_header(&file, path)?;
        if header.generation != *generation {
            return Err(Error::corruption(
                path,
                16,
                None,
                format!(
                    "header names generation {}, the file name {generation}",
                    header.generation
                ),
            ));
        }
        let file_len = file.metadata().map_err(|e| Error::io("stat segment", path, e))?.len();
        if file_len > header.segment_len {
            return Err(Error::corruption(
                path,
                header.segment_len,
                None,
                format!(
                    "file of {file_len} bytes is longer than its header's segment length {}",
                    header.segment_len
                ),
            ));
        }
        let any_trailer = if file_len == header.segment_len {
            segment::read_trailer(&file, path, &header)?
        } else {
            None
        };
        let (trailer, checkpoint) = match any_trailer {
            Some(t) if t.sealed => (Some(t), None),
            other => (None, other),
        };
        max_generation = max_generation.max(header.generation);
        entries.push(Entry {
            path: path.clone(),
            file,
            header,
            trailer,
            checkpoint,
            file_len,
        });
    }

    let mut report = Recovery::default();
    let outcome = match config.recovery_mode {
        RecoveryMode::Strict => check_strict(&entries, &mut report)?,
        RecoveryMode::Salvage => check_salvage(&entries, &mut report)?,
    };

    // Apply a cut (a torn tail, or damage under salvage): seal the segment where its intact
    // data ends, and set any later ones aside.
    let mut keep = entries.len();
    if let Some(cut) = &outcome.cut {
        let e = &entries[cut.index];
        let trailer = SegmentTrailer {
            generation: e.header.generation,
            first_lsn: e.header.first_lsn,
            next_lsn: cut.next_lsn,
            data_end: cut.data_end,
            sealed: true,
        };
        if e.file_len < e.header.segment_len {
            e.file
                .set_len(e.header.segment_len)
                .map_err(|err| Error::io("extend segment", &e.path, err))?;
        }
        e.file
            .write_all_at(&trailer.encode(), e.header.segment_len - TRAILER_LEN)
            .and_then(|_| e.file.sync_all())
            .map_err(|err| Error::io("seal segment at its last intact group", &e.path, err))?;
        for later in &entries[cut.index + 1..] {
            let name = format!("{:020}{CORRUPT_EXT}", later.header.generation);
            let to = dir.join(name);
            std::fs::rename(&later.path, &to).map_err(|err| Error::io("set aside segment", &later.path, err))?;
            segment::sync_dir(dir)?;
            report.set_aside.push(to);
        }
        keep = cut.index + 1;
    }
    if dir_changed {
        segment::sync_dir(dir)?;
    }

    let mut sealed = Vec::with_capacity(keep);
    let mut tail = None;
    let mut next_lsn = Lsn::FIRST.0;
    for (i, e) in entries.into_iter().take(keep).enumerate() {
        let cut_here = outcome.cut.as_ref().filter(|c| c.index == i);
        let seal = match (cut_here, e.trailer) {
            (Some(c), _) => Some(Sealed {
                next_lsn: c.next_lsn,
                data_end: c.data_end,
            }),
            (None, Some(t)) => Some(Sealed {
                next_lsn: t.next_lsn,
                data_end: t.data_end,
            }),
            (None, None) => None,
        };
        match seal {
            Some(s) => {
                next_lsn = s.next_lsn;
                let map = segment::map(&e.file, &e.path)?;
                sealed.push(Segment::new(e.path, e.header, map, Some(s)));
            }
            None => {
                let (data_end, tail_next) = outcome.tail_end.expect("an unsealed tail was scanned");
                if e.file_len < e.header.segment_len {
                    e.file
                        .set_len(e.header.segment_len)
                        .map_err(|err| Error::io("extend segment", &e.path, err))?;
                    e.file
                        .sync_all()
                        .map_err(|err| Error::io("sync segment", &e.path, err))?;
                }
                let map = segment::map(&e.file, &e.path)?;
                next_lsn = tail_next;
                tail = Some(TailState {
                    segment: Segment::new(e.path, e.header, map, None),
                    file: e.file,
                    data_end,
                    next_lsn: tail_next,
                });
            }
        }
    }
    Ok(Recovered {
        sealed,
        tail,
        next_lsn,
        max_generation,
        spares,
        spare_counter,
        report,
    })
}

struct Cut {
    index: usize,
    data_end: u64,
    next_lsn: u64,
}

#[derive(Default)]
struct Outcome {
    /// Seal this segment at this point; later segments are set aside.
    cut: Option<Cut>,
    /// `(data_end, next_lsn)` of an unsealed tail that stays the tail.
    tail_end: Option<(u64, u64)>,
}

impl Outcome {
    /// Takes a clean or torn tail into account; hands damage back to the caller, which
    /// refuses the log or cuts it there.
    fn tail(&mut self, index: usize, scan: TailScan) -> Option<(u64, u64, String)> {
        match scan {
            TailScan::Clean(data_end, next_lsn) => self.tail_end = Some((data_end, next_lsn)),
            TailScan::Torn(data_end, next_lsn) => {
                self.cut = Some(Cut {
                    index,
                    data_end,
                    next_lsn,
                })
            }
            TailScan::Damaged(offset, lsn, reason) => return Some((offset, lsn, reason)),
        }
        None
    }
}

enum TailScan {
    /// Appends continue in place at `(data_end, next_lsn)`: nothing of this generation that
    /// is intact follows (zeros, a recycled file's old bytes, or a torn group whose header did
    /// not reach the disk; those bytes are never read as records).
    Clean(u64, u64),
    /// A torn group at `(data_end, next_lsn)`: the segment is sealed there and a new one
    /// started, so the torn bytes are never scanned again. Noted in the report.
    Torn(u64, u64),
    /// Damage followed by intact data, as `(data_end, next_lsn, reason)`.
    Damaged(u64, u64, String),
}

/// Scans an unsealed tail segment.
fn scan_tail(e: &Entry, report: &mut Recovery) -> Result<TailScan> {
    let map = segment::map(&e.file, &e.path)?;
    let h = &e.header;
    let limit = h.data_limit().min(map.len() as u64);
    report.segments_scanned += 1;
    let end = scan_groups(&map, HEADER_LEN, limit, h.generation, h.first_lsn, |_, _| {});
    let reason = match &end.stop {
        Stop::Torn(r) => r.clone(),
        Stop::End => "no intact group".into(),
    };
    // Evidence of a later write: a group header of this generation past the bad group's
    // extent when its header checks out (its length is the writer's, and its payload may hold
    // any bytes), else anywhere past its first byte; either way naming a later LSN. See
    // `find_later_group` for why each may be trusted.
    if let Some((off, g)) = find_later_group(&map, &end, limit, h.generation) {
        let reason = format!(
            "{reason}; yet an intact group (LSN {}) follows at offset {off}",
            g.first_lsn
        );
        return Ok(TailScan::Damaged(end.data_end, end.next_lsn, reason));
    }
    if let Some(cp) = e
        .checkpoint
        .filter(|cp| end.data_end < cp.data_end || end.next_lsn < cp.next_lsn)
    {
        let reason = format!(
            "{reason}; yet the log was closed cleanly with its data through offset {} (LSN {}) durable",
            cp.data_end,
            cp.next_lsn.saturating_sub(1)
        );
        return Ok(TailScan::Damaged(end.data_end, end.next_lsn, reason));
    }
    Ok(match end.stop {
        Stop::Torn(reason) => {
            report.torn_tail = Some(Damage {
                path: e.path.clone(),
                offset: end.data_end,
                lsn: Lsn(end.next_lsn),
                reason,
            });
            TailScan::Torn(end.data_end, end.next_lsn)
        }
        Stop::End => TailScan::Clean(end.data_end, end.next_lsn),
    })
}

fn check_strict(entries: &[Entry], report: &mut Recovery) -> Result<Outcome> {
    let mut outcome = Outcome::default();
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            let prev_next = entries[i - 1].trailer.map(|t| t.next_lsn).unwrap_or_default();
            if e.header.first_lsn != prev_next {
                return Err(Error::corruption(
                    &e.path,
                    24,
                    Some(e.header.first_lsn),
                    format!(
                        "segment starts at LSN {} but the previous segment ends before LSN {prev_next}",
                        e.header.first_lsn
                    ),
                ));
            }
        }
        let last = i + 1 == entries.len();
        match (e.trailer, last) {
            (Some(_), _) => {}
            (None, false) => {
                return Err(Error::corruption(
                    &e.path,
                    e.header.segment_len - TRAILER_LEN,
                    Some(e.header.first_lsn),
                    "segment has no valid trailer, yet a later segment exists",
                ));
            }
            (None, true) => {
                if let Some((offset, lsn, reason)) = outcome.tail(i, scan_tail(e, report)?) {
                    return Err(Error::corruption(&e.path, offset, Some(lsn), reason));
                }
            }
        }
    }
    Ok(outcome)
}

fn check_salvage(entries: &[Entry], report: &mut Recovery) -> Result<Outcome> {
    let mut outcome = Outcome::default();
    let mut expected: Option<u64> = None;
    for (i, e) in entries.iter().enumerate() {
        let h = &e.header;
        let damage = |offset: u64, lsn: u64, reason: String| Damage {
            path: e.path.clone(),
            offset,
            lsn: Lsn(lsn),
            reason,
        };
        if let Some(exp) = expected.filter(|&x| x != h.first_lsn) {
            // A gap: keep everything before this segment.
            let prev = &entries[i - 1];
            let t = prev.trailer.expect("earlier segments are sealed or cut");
            report.cut = Some(damage(
                24,
                exp,
                format!("segment starts at LSN {} instead of {exp}", h.first_lsn),
            ));
            outcome.cut = Some(Cut {
                index: i - 1,
                data_end: t.data_end,
                next_lsn: t.next_lsn,
            });
            return Ok(outcome);
        }
        let last = i + 1 == entries.len();
        if e.trailer.is_none() && last {
            if let Some((offset, lsn, reason)) = outcome.tail(i, scan_tail(e, report)?) {
                report.cut = Some(damage(offset, lsn, reason));
                outcome.cut = Some(Cut {
                    index: i,
                    data_end: offset,
                    next_lsn: lsn,
                });
            }
            return Ok(outcome);
        }
        let map = segment::map(&e.file, &e.path)?;
        let limit = e.trailer.map_or(h.data_limit(), |t| t.data_end).min(map.len() as u64);
        report.segments_scanned += 1;
        let end = scan_groups(&map, HEADER_LEN, limit, h.generation, h.first_lsn, |_, _| {});
        match e.trailer {
            Some(t) if end.data_end == t.data_end && end.next_lsn == t.next_lsn => expected = Some(t.next_lsn),
            _ => {
                let reason = match end.stop {
                    Stop::Torn(r) => r,
                    _ if e.trailer.is_none() => "segment has no valid trailer, yet a later segment exists".into(),
                    _ => "segment data ends before its trailer says".into(),
                };
                report.cut = Some(damage(end.data_end, end.next_lsn, reason));
                outcome.cut = Some(Cut {
                    index: i,
                    data_end: end.data_end,
                    next_lsn: end.next_lsn,
                });
                return Ok(outcome);
            }
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::format::{
        GROUP_HEADER_LEN, GroupHeader, RECORD_HEADER_LEN, finish_record_crc, record_header, start_record_crc,
    };
    use crate::{Inspector, IoFaults, Wal};

    fn config() -> Config {
        Config::default().with_segment_size(16 << 10)
    }

    /// One group of `generation` holding `payload` at `lsn`, exactly as the log writes it.
    fn group_bytes(generation: u64, lsn: u64, payload: &[u8]) -> Vec<u8> {
        let crc = finish_record_crc(start_record_crc(payload), lsn, generation);
        let header = GroupHeader {
            count: 1,
            first_lsn: lsn,
            bytes: (RECORD_HEADER_LEN + payload.len()) as u32,
        };
        let mut b = header.encode(generation).to_vec();
        b.extend_from_slice(&record_header(payload.len(), crc));
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn a_torn_group_whose_payload_holds_a_group_header_is_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(IoFaults::default());
        let wal = Wal::open(dir.path(), config().with_io_faults(Arc::clone(&faults))).unwrap();
        for i in 0..3u8 {
            wal.append(&[i; 50]).unwrap();
        }
        let (path, _, _) = wal.tail_extent();
        let generation = segment::read_header(&File::open(&path).unwrap(), &path)
            .unwrap()
            .generation;
        // A record that carries a group of this very generation, at the LSN that would follow
        // it: what a log storing other logs' groups may well hold.
        let mut payload = vec![0xab; 100];
        payload.extend(group_bytes(generation, 5, b"an embedded record"));
        payload.extend([0xcd; 200]);
        // Its group is written, but its sync fails: never acknowledged.
        faults.fail_sync_after(0);
        assert!(wal.append(&payload).is_err());
        let (_, durable_end, written_end) = wal.tail_extent();
        assert_eq!(
            written_end - durable_end,
            (GROUP_HEADER_LEN + RECORD_HEADER_LEN + payload.len()) as u64
        );
        wal.crash();
        // The crash tore the group: its header and the embedded group reached the disk, its
        // last bytes did not.
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&[0; 64], written_end - 64).unwrap();
        drop(f);

        let report = Inspector::open(dir.path()).unwrap().verify();
        let wal = Wal::open(dir.path(), config()).expect("a torn tail, not corruption");
        assert!(report.is_intact(), "verify agrees with open: {:?}", report.problem);
        assert_eq!(report.torn_tail.map(|d| d.lsn), Some(Lsn(4)));
        let torn = wal.recovery().torn_tail.clone().expect("the torn tail is reported");
        assert_eq!((torn.path, torn.offset, torn.lsn), (path, durable_end, Lsn(4)));
        let records: Vec<_> = wal
            .read_from(Lsn::FIRST)
            .unwrap()
            .map(|r| r.map(|r| (r.lsn.0, r.payload.to_vec())))
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(
            records,
            (0..3u8).map(|i| (i as u64 + 1, vec![i; 50])).collect::<Vec<_>>()
        );
        assert_eq!(wal.append(b"next").unwrap(), Lsn(4));
    }
}
