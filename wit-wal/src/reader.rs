//! Reading records in LSN order through memory maps.

use std::sync::Arc;

use bytes::Bytes;

use crate::format::{GROUP_HEADER_LEN, GroupHeader, HEADER_LEN, RECORD_HEADER_LEN, generation_mix, read_record};
use crate::group::Shared;
use crate::segment::{MapOwner, Segment};
use crate::{Error, Lsn, Result};

/// One record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its LSN.
    pub lsn: Lsn,
    /// Its bytes, exactly as appended (a zero-copy slice of the segment's map).
    pub payload: Bytes,
}

/// Iterates durable records in LSN order; see [`Wal::read_from`](crate::Wal::read_from).
///
/// `next` returns `None` once the reader has caught up with the durable end of the log, and
/// yields more records when called again after further appends. After an error it returns
/// `None` for good.
pub struct Reader {
    shared: Arc<Shared>,
    segment: Arc<Segment>,
    bytes: Bytes,
    /// Offset of the next group header or record frame.
    pos: usize,
    /// Records left in the current group, and where it ends.
    group_left: u32,
    group_end: usize,
    next_lsn: u64,
    /// How far the current segment may be read, in bytes and LSNs.
    limit: usize,
    limit_lsn: u64,
    /// The current segment's share of record checksum keys.
    generation_mix: u64,
    failed: bool,
}

impl Reader {
    pub(crate) fn new(shared: Arc<Shared>, lsn: u64) -> Result<Self> {
        let (segment, limit, limit_lsn) = {
            let view = shared.view.read();
            let first = view.segments.first().map_or(view.durable_next, |s| s.first_lsn());
            if lsn < first || lsn > view.durable_next {
                return Err(Error::LsnOutOfRange {
                    requested: Lsn(lsn),
                    first: Lsn(first),
                    next: Lsn(view.durable_next),
                });
            }
            let idx = view
                .segments
                .partition_point(|s| s.first_lsn() <= lsn)
                .saturating_sub(1);
            // The last segment starting at or before `lsn`: empty sealed segments that start
            // at the same LSN as the next one are passed over.
            let seg = Arc::clone(&view.segments[idx]);
            let (limit, limit_lsn) = match seg.sealed.get() {
                Some(s) => (s.data_end, s.next_lsn),
                None => (view.tail_end, view.durable_next),
            };
            (seg, limit as usize, limit_lsn)
        };
        let bytes = Bytes::from_owner(MapOwner(Arc::clone(&segment.map)));
        let mut reader = Reader {
            shared,
            next_lsn: segment.first_lsn(),
            segment,
            bytes,
            pos: HEADER_LEN as usize,
            group_left: 0,
            group_end: 0,
            limit,
            limit_lsn,
            generation_mix: 0,
            failed: false,
        };
        reader.generation_mix = generation_mix(reader.segment.generation());
        reader.skip_to(lsn)?;
        Ok(reader)
    }

    fn corruption(&mut self, offset: usize, reason: impl Into<String>) -> Error {
        self.failed = true;
        Error::corruption(&self.segment.path, offset as u64, Some(self.next_lsn), reason)
    }

    /// Moves to the group holding `lsn` using group headers only, then to the record.
    fn skip_to(&mut self, lsn: u64) -> Result<()> {
        while self.next_lsn < lsn.min(self.limit_lsn) {
            if self.group_left == 0 {
                let g = self.open_group()?;
                if g.first_lsn + g.count as u64 <= lsn {
                    self.pos = self.group_end;
                    self.group_left = 0;
                    self.next_lsn += g.count as u64;
                    continue;
                }
            }
            if self.pos + RECORD_HEADER_LEN > self.group_end {
                return Err(self.corruption(self.pos, "record header runs past the end of its group"));
            }
            let len = u32::from_le_bytes(self.bytes[self.pos + 4..self.pos + 8].try_into().expect("4 bytes")) as usize;
            self.pos += RECORD_HEADER_LEN + len;
            if self.pos > self.group_end {
                return Err(self.corruption(self.pos, "record length runs past the end of its group"));
            }
            self.group_left -= 1;
            self.next_lsn += 1;
        }
        Ok(())
    }

    /// Decodes the group header at `pos`.
    fn open_group(&mut self) -> Result<GroupHeader> {
        let at = self.pos;
        let generation = self.segment.generation();
        let g = match GroupHeader::decode(&self.bytes[at..self.limit], generation) {
            Ok(g) => g,
            Err(reason) => return Err(self.corruption(at, reason)),
        };
        if g.first_lsn != self.next_lsn || g.count == 0 {
            let reason = format!(
                "group header names LSN {} ({} records), expected LSN {}",
                g.first_lsn, g.count, self.next_lsn
            );
            return Err(self.corruption(at, reason));
        }
        let end = at + GROUP_HEADER_LEN + g.bytes as usize;
        if end > self.limit {
            return Err(self.corruption(at, "group runs past the durable end of the segment"));
        }
        self.pos = at + GROUP_HEADER_LEN;
        self.group_end = end;
        self.group_left = g.count;
        Ok(g)
    }

    /// Refreshes the readable extent, moving to the next segment when this one is done.
    /// Returns whether there is something new to read; an error if the log was truncated
    /// past the reader.
    fn refresh(&mut self) -> Result<bool> {
        let view = self.shared.view.read();
        loop {
            match self.segment.sealed.get() {
                Some(s) if self.next_lsn < s.next_lsn => {
                    self.limit = s.data_end as usize;
                    self.limit_lsn = s.next_lsn;
                    return Ok(true);
                }
                Some(_) => {
                    let Some(next) = view
                        .segments
                        .iter()
                        .find(|s| s.generation() > self.segment.generation())
                    else {
                        return Ok(false);
                    };
                    if next.first_lsn() != self.next_lsn {
                        return Err(Error::LsnOutOfRange {
                            requested: Lsn(self.next_lsn),
                            first: Lsn(view.segments[0].first_lsn()),
                            next: Lsn(view.durable_next),
                        });
                    }
                    self.segment = Arc::clone(next);
                    self.generation_mix = generation_mix(self.segment.generation());
                    self.bytes = Bytes::from_owner(MapOwner(Arc::clone(&self.segment.map)));
                    self.pos = HEADER_LEN as usize;
                    self.group_left = 0;
                    self.limit = HEADER_LEN as usize;
                    self.limit_lsn = self.next_lsn;
                }
                None => {
                    self.limit = view.tail_end as usize;
                    self.limit_lsn = view.durable_next;
                    return Ok(self.next_lsn < self.limit_lsn);
                }
            }
        }
    }
}

impl Reader {
    /// Calls `f` with every durable record from the reader's position on, in LSN order, and
    /// returns how many there were once the reader has caught up.
    ///
    /// The payload is lent from the segment's map: no `Bytes` is made per record (its
    /// reference count costs two atomic operations a record), which makes this the fastest
    /// way to replay a log. Checksums are verified as by the iterator.
    ///
    /// # Errors
    ///
    /// As the iterator: [`Error::Corruption`] for a record that fails its checks (the records
    /// before it have been passed to `f`), [`Error::LsnOutOfRange`] if the log was truncated
    /// past the reader.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let wal = wit_wal::Wal::open(dir.path(), wit_wal::Config::default())?;
    /// wal.append_batch(&[b"a".as_slice(), b"bc"])?;
    /// let mut bytes = 0;
    /// let n = wal.read_from(wit_wal::Lsn::FIRST)?.replay(|_lsn, payload| bytes += payload.len())?;
    /// assert_eq!((n, bytes), (2, 3));
    /// # Ok::<_, wit_wal::Error>(())
    /// ```
    pub fn replay(&mut self, mut f: impl FnMut(Lsn, &[u8])) -> Result<u64> {
        let mut n = 0;
        while let Some(frame) = self.next_frame() {
            let (lsn, start, end) = frame?;
            f(Lsn(lsn), &self.bytes[start..end]);
            n += 1;
        }
        Ok(n)
    }

    /// Checks the next durable record and returns its LSN and where its payload lies in
    /// `self.bytes`.
    #[inline]
    fn next_frame(&mut self) -> Option<Result<(u64, usize, usize)>> {
        if self.failed {
            return None;
        }
        if self.next_lsn >= self.limit_lsn {
            match self.refresh() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
        if self.group_left == 0
            && let Err(e) = self.open_group()
        {
            return Some(Err(e));
        }
        let lsn = self.next_lsn;
        let frame = match read_record(&self.bytes, self.pos, self.group_end, lsn, self.generation_mix) {
            Ok(f) => f,
            Err(reason) => return Some(Err(self.corruption(self.pos, reason))),
        };
        if !frame.crc_ok {
            let reason = format!(
                "record checksum mismatch (stored {:#010x}, computed {:#010x})",
                frame.stored_crc, frame.computed_crc
            );
            return Some(Err(self.corruption(self.pos, reason)));
        }
        let end = frame.payload_at + frame.len;
        self.pos = end;
        self.group_left -= 1;
        self.next_lsn += 1;
        Some(Ok((lsn, frame.payload_at, end)))
    }
}

impl Iterator for Reader {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.next_frame()?.map(|(lsn, start, end)| Record {
            lsn: Lsn(lsn),
            payload: self.bytes.slice(start..end),
        }))
    }
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("segment", &self.segment.path)
            .field("next_lsn", &self.next_lsn)
            .finish()
    }
}
