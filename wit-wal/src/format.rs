//! The on-disk format: segment header and trailer, group headers, record frames, and the
//! scanner that recovery, verification and the read-only inspector share.
//!
//! ```text
//! segment file  = header (64 B) | group* | (unused: zeros or stale bytes) | trailer (64 B)
//! header        = magic "WITWAL\r\n" | version u32 | flags u32 | generation u64
//!                 | first_lsn u64 | segment_len u64 | reserved (20 B) | crc32 of bytes 0..60
//! group         = group header (24 B) | record frame * count
//! group header  = magic "WgRp" | count u32 | first_lsn u64 | bytes u32
//!                 | crc32(bytes 0..20) ^ key(generation)
//! record frame  = crc32(len ++ payload) ^ key(lsn, generation) u32 | len u32 | payload
//! trailer       = magic "WITSEAL\n" | generation u64 | first_lsn u64 | next_lsn u64
//!                 | data_end u64 | flags u32 | reserved (16 B) | crc32 of bytes 0..60
//! ```
//!
//! The trailer has two uses, told apart by flag bit 0. Sealed: the segment's data ends
//! exactly at `data_end`, and `open` trusts it without reading. Checkpoint (written by a clean
//! close): the data through `data_end` is durable, so a scan that stops short of it has found
//! damage, not a torn tail. A checkpoint stays true however much is appended after it.
//!
//! All integers are little-endian. A group is what one leader writes in one `pwrite`; it
//! never spans two segments. Group and record checksums are keyed: the CRC32 of the bytes is
//! XORed with a 32-bit mix of the record's LSN and the segment's generation. Damage to the bytes
//! is caught exactly as by the plain CRC32; a record read at another LSN, or bytes left in a
//! recycled file by an earlier generation, fail unless two 32-bit keys collide. (Keying by XOR
//! rather than hashing LSN and generation along saves a second CRC call per record, which
//! costs as much as a third of a 1 KiB record's checksum.)

pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"WITWAL\r\n";
pub(crate) const TRAILER_MAGIC: [u8; 8] = *b"WITSEAL\n";
pub(crate) const GROUP_MAGIC: [u8; 4] = *b"WgRp";
pub(crate) const FORMAT_VERSION: u32 = 1;

pub(crate) const HEADER_LEN: u64 = 64;
pub(crate) const TRAILER_LEN: u64 = 64;
pub(crate) const GROUP_HEADER_LEN: usize = 24;
pub(crate) const RECORD_HEADER_LEN: usize = 8;

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

/// The fixed header at offset 0 of every segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub(crate) generation: u64,
    pub(crate) first_lsn: u64,
    pub(crate) segment_len: u64,
}

/// Why a segment header could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderError {
    TooShort(usize),
    BadMagic,
    UnknownVersion(u32),
    Checksum { stored: u32, computed: u32 },
}

impl SegmentHeader {
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN as usize] {
        let mut b = [0u8; HEADER_LEN as usize];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        // 12..16: flags, none defined in version 1.
        b[16..24].copy_from_slice(&self.generation.to_le_bytes());
        b[24..32].copy_from_slice(&self.first_lsn.to_le_bytes());
        b[32..40].copy_from_slice(&self.segment_len.to_le_bytes());
        let crc = crc32fast::hash(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub(crate) fn decode(buf: &[u8]) -> Result<Self, HeaderError> {
        if buf.len() < HEADER_LEN as usize {
            return Err(HeaderError::TooShort(buf.len()));
        }
        if buf[0..8] != SEGMENT_MAGIC {
            return Err(HeaderError::BadMagic);
        }
        let version = u32_at(buf, 8);
        if version != FORMAT_VERSION {
            return Err(HeaderError::UnknownVersion(version));
        }
        let stored = u32_at(buf, 60);
        let computed = crc32fast::hash(&buf[0..60]);
        if stored != computed {
            return Err(HeaderError::Checksum { stored, computed });
        }
        Ok(Self {
            generation: u64_at(buf, 16),
            first_lsn: u64_at(buf, 24),
            segment_len: u64_at(buf, 32),
        })
    }

    /// First byte past the region groups may occupy.
    pub(crate) fn data_limit(&self) -> u64 {
        self.segment_len - TRAILER_LEN
    }
}

/// The trailer: a seal (the segment ends at `data_end`; `open` trusts it unread) or a
/// checkpoint of a clean close (the data through `data_end` is durable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentTrailer {
    pub(crate) generation: u64,
    pub(crate) first_lsn: u64,
    pub(crate) next_lsn: u64,
    pub(crate) data_end: u64,
    pub(crate) sealed: bool,
}

const TRAILER_SEALED: u32 = 1;

impl SegmentTrailer {
    pub(crate) fn encode(&self) -> [u8; TRAILER_LEN as usize] {
        let mut b = [0u8; TRAILER_LEN as usize];
        b[0..8].copy_from_slice(&TRAILER_MAGIC);
        b[8..16].copy_from_slice(&self.generation.to_le_bytes());
        b[16..24].copy_from_slice(&self.first_lsn.to_le_bytes());
        b[24..32].copy_from_slice(&self.next_lsn.to_le_bytes());
        b[32..40].copy_from_slice(&self.data_end.to_le_bytes());
        let flags = if self.sealed { TRAILER_SEALED } else { 0 };
        b[40..44].copy_from_slice(&flags.to_le_bytes());
        let crc = crc32fast::hash(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes a trailer that belongs to `header`'s generation; anything else (zeros, a
    /// stale trailer of an earlier use of a recycled file, a torn write) is `None`.
    pub(crate) fn decode(buf: &[u8], header: &SegmentHeader) -> Option<Self> {
        if buf.len() < TRAILER_LEN as usize || buf[0..8] != TRAILER_MAGIC {
            return None;
        }
        if u32_at(buf, 60) != crc32fast::hash(&buf[0..60]) {
            return None;
        }
        let t = Self {
            generation: u64_at(buf, 8),
            first_lsn: u64_at(buf, 16),
            next_lsn: u64_at(buf, 24),
            data_end: u64_at(buf, 32),
            sealed: u32_at(buf, 40) & TRAILER_SEALED != 0,
        };
        let sane = t.generation == header.generation
            && t.first_lsn == header.first_lsn
            && t.next_lsn >= t.first_lsn
            && t.data_end >= HEADER_LEN
            && t.data_end <= header.data_limit();
        sane.then_some(t)
    }
}

/// A decoded, checksum-verified group header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GroupHeader {
    pub(crate) count: u32,
    pub(crate) first_lsn: u64,
    pub(crate) bytes: u32,
}

/// The splitmix64 finalizer: a bijective 64-bit mix.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The key of a group header: its segment's generation.
fn generation_key(generation: u64) -> u32 {
    mix64(generation ^ 0x5767_5270_6b65_7921) as u32
}

/// The generation's share of record keys; readers compute it once per segment.
pub(crate) fn generation_mix(generation: u64) -> u64 {
    mix64(generation)
}

/// The key of a record: its LSN and its segment's generation (as [`generation_mix`]).
fn record_key(lsn: u64, generation_mix: u64) -> u32 {
    mix64(lsn ^ generation_mix) as u32
}

fn group_crc(head: &[u8], generation: u64) -> u32 {
    crc32fast::hash(&head[0..20]) ^ generation_key(generation)
}

impl GroupHeader {
    pub(crate) fn encode(&self, generation: u64) -> [u8; GROUP_HEADER_LEN] {
        let mut b = [0u8; GROUP_HEADER_LEN];
        b[0..4].copy_from_slice(&GROUP_MAGIC);
        b[4..8].copy_from_slice(&self.count.to_le_bytes());
        b[8..16].copy_from_slice(&self.first_lsn.to_le_bytes());
        b[16..20].copy_from_slice(&self.bytes.to_le_bytes());
        let crc = group_crc(&b, generation);
        b[20..24].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes the group header at the start of `buf` for `generation`.
    pub(crate) fn decode(buf: &[u8], generation: u64) -> Result<Self, &'static str> {
        if buf.len() < GROUP_HEADER_LEN {
            return Err("group header runs past the end of the segment data");
        }
        if buf[0..4] != GROUP_MAGIC {
            return Err("no group header magic");
        }
        if u32_at(buf, 20) != group_crc(buf, generation) {
            return Err("group header checksum mismatch");
        }
        Ok(Self {
            count: u32_at(buf, 4),
            first_lsn: u64_at(buf, 8),
            bytes: u32_at(buf, 16),
        })
    }
}

/// The unkeyed part of a record checksum, over the length and payload: computed before the
/// LSN is known, so it runs outside the WAL's lock.
pub(crate) fn start_record_crc(payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&(payload.len() as u32).to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Keys a record checksum with its LSN and generation.
pub(crate) fn finish_record_crc(crc: u32, lsn: u64, generation: u64) -> u32 {
    crc ^ record_key(lsn, generation_mix(generation))
}

/// `crc32fast::hash` without detecting the CPU's features on every call.
fn crc32(bytes: &[u8]) -> u32 {
    static PROTOTYPE: std::sync::OnceLock<crc32fast::Hasher> = std::sync::OnceLock::new();
    let mut h = PROTOTYPE.get_or_init(crc32fast::Hasher::new).clone();
    h.update(bytes);
    h.finalize()
}

/// The header of one record frame; the payload follows it.
pub(crate) fn record_header(payload_len: usize, crc: u32) -> [u8; RECORD_HEADER_LEN] {
    let mut h = [0u8; RECORD_HEADER_LEN];
    h[..4].copy_from_slice(&crc.to_le_bytes());
    h[4..].copy_from_slice(&(payload_len as u32).to_le_bytes());
    h
}

/// Bytes a record of `len` payload bytes takes on disk, without its group header.
pub(crate) fn record_frame_len(len: usize) -> usize {
    RECORD_HEADER_LEN + len
}

/// A record frame inside a group, located and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordFrame {
    /// Offset of the payload in the segment.
    pub(crate) payload_at: usize,
    pub(crate) len: usize,
    pub(crate) crc_ok: bool,
    pub(crate) stored_crc: u32,
    pub(crate) computed_crc: u32,
}

/// Reads the record frame at `at`, which must end by `group_end`. `Err` means the frame's
/// length itself does not fit; a checksum mismatch is reported through `crc_ok`.
#[inline]
pub(crate) fn read_record(
    data: &[u8],
    at: usize,
    group_end: usize,
    lsn: u64,
    generation_mix: u64,
) -> Result<RecordFrame, &'static str> {
    if at + RECORD_HEADER_LEN > group_end {
        return Err("record header runs past the end of its group");
    }
    let stored_crc = u32_at(data, at);
    let len = u32_at(data, at + 4) as usize;
    let payload_at = at + RECORD_HEADER_LEN;
    if len > group_end - payload_at {
        return Err("record length runs past the end of its group");
    }
    // The length sits right before the payload: one pass over both.
    let computed_crc = crc32(&data[at + 4..payload_at + len]) ^ record_key(lsn, generation_mix);
    Ok(RecordFrame {
        payload_at,
        len,
        crc_ok: computed_crc == stored_crc,
        stored_crc,
        computed_crc,
    })
}

/// Why a scan of a segment's groups stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stop {
    /// No group header of this generation where the next group would be: bytes never written
    /// (zeros), left by an earlier use of a recycled file, or a group whose header did not
    /// reach the disk. Nothing of this generation that is intact can be there.
    End,
    /// A group header of this generation, but the group does not check out: a group that was
    /// being written when the process or machine died (or damage, if an intact group follows:
    /// see [`find_later_group`]).
    Torn(String),
}

/// The result of scanning the groups of one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScanEnd {
    /// Offset just past the last intact group.
    pub(crate) data_end: u64,
    /// LSN after the last record of the last intact group.
    pub(crate) next_lsn: u64,
    pub(crate) stop: Stop,
}

/// Checks the group at `at` completely (header, every record length and checksum). Returns
/// the header, or why the group is not intact.
pub(crate) fn check_group(
    data: &[u8],
    at: usize,
    limit: usize,
    generation: u64,
    expected_lsn: u64,
) -> Result<GroupHeader, String> {
    let g = GroupHeader::decode(&data[at..limit], generation)?;
    if g.first_lsn != expected_lsn {
        return Err(format!(
            "group header names LSN {}, expected LSN {expected_lsn}",
            g.first_lsn
        ));
    }
    let body = at + GROUP_HEADER_LEN;
    let end = body
        .checked_add(g.bytes as usize)
        .filter(|&e| e <= limit)
        .ok_or("group runs past the end of the segment data")?;
    if g.count == 0 {
        return Err("group holds no records".into());
    }
    let mut pos = body;
    let mix = generation_mix(generation);
    for i in 0..g.count as u64 {
        let lsn = g.first_lsn + i;
        let rec = read_record(data, pos, end, lsn, mix).map_err(|e| format!("LSN {lsn}: {e}"))?;
        if !rec.crc_ok {
            return Err(format!(
                "LSN {lsn}: record checksum mismatch (stored {:#010x}, computed {:#010x})",
                rec.stored_crc, rec.computed_crc
            ));
        }
        pos = rec.payload_at + rec.len;
    }
    if pos != end {
        return Err(format!(
            "group of {} records ends at offset {pos}, its header says {end}",
            g.count
        ));
    }
    Ok(g)
}

/// Scans the intact groups of a segment from `start` up to `limit`, calling `on_group` with
/// each group's offset and header after it has been checked completely.
pub(crate) fn scan_groups(
    data: &[u8],
    start: u64,
    limit: u64,
    generation: u64,
    first_lsn: u64,
    mut on_group: impl FnMut(usize, &GroupHeader),
) -> ScanEnd {
    let limit = (limit as usize).min(data.len());
    let mut at = start as usize;
    let mut lsn = first_lsn;
    loop {
        if at + GROUP_HEADER_LEN > limit {
            return ScanEnd {
                data_end: at as u64,
                next_lsn: lsn,
                stop: Stop::End,
            };
        }
        match check_group(data, at, limit, generation, lsn) {
            Ok(g) => {
                on_group(at, &g);
                at += GROUP_HEADER_LEN + g.bytes as usize;
                lsn += g.count as u64;
            }
            Err(reason) => {
                let stop = match GroupHeader::decode(&data[at..limit], generation) {
                    Ok(_) => Stop::Torn(reason),
                    Err(_) => Stop::End,
                };
                return ScanEnd {
                    data_end: at as u64,
                    next_lsn: lsn,
                    stop,
                };
            }
        }
    }
}

/// Looks, after a scan that stopped at `end`, for an intact group header of `generation`
/// that only a later write of this log can have left there. Finding one means the bad group
/// at `end` was once followed by a durable write: corruption, not a torn tail.
///
/// Rounds are written one after another, each synced before the next begins, and groups are
/// written at increasing offsets, each where the one before ends. What the search may trust:
///
/// - The bad group's header checks out (its checksum is keyed by the generation: this log
///   wrote it there) and is plausible (it names the expected LSN, holds records, and ends
///   within the segment's data): its length is the writer's, so the next group would have
///   started where the header says the group ends. Everything before that is the group's own
///   payload, which may hold any bytes, a valid group header of this generation included (a
///   record carrying another log's group): it is no evidence. The search starts at the
///   group's declared end, for a header naming an LSN at or past the group's last.
/// - The header is damaged or implausible: the group's extent is unknown. The search starts
///   right after the bad group's first byte, for a header naming any LSN past the expected
///   one: starting later could pass over the groups that followed a rotted header, and
///   appending in place would then overwrite acknowledged records. (A false alarm remains
///   possible only where a torn group's header missed the disk while a later part of its
///   payload, holding such a header, reached it; salvage resolves it.)
pub(crate) fn find_later_group(data: &[u8], end: &ScanEnd, limit: u64, generation: u64) -> Option<(u64, GroupHeader)> {
    let limit = (limit as usize).min(data.len());
    let at = end.data_end as usize;
    let declared = data
        .get(at..limit)
        .and_then(|head| GroupHeader::decode(head, generation).ok())
        .filter(|g| g.first_lsn == end.next_lsn && g.count > 0)
        .and_then(|g| {
            let group_end = (at + GROUP_HEADER_LEN).checked_add(g.bytes as usize)?;
            (group_end <= limit).then_some((group_end, end.next_lsn + g.count as u64))
        });
    let (from, min_lsn) = declared.unwrap_or((at + 1, end.next_lsn + 1));
    find_intact_group_header(data, from as u64, limit as u64, generation, min_lsn)
}

/// Looks for an intact group header of `generation` naming an LSN of at least `min_lsn`
/// anywhere in `data[from..limit]`.
pub(crate) fn find_intact_group_header(
    data: &[u8],
    from: u64,
    limit: u64,
    generation: u64,
    min_lsn: u64,
) -> Option<(u64, GroupHeader)> {
    let limit = (limit as usize).min(data.len());
    let mut at = from as usize;
    while at < limit {
        let hit = memchr::memmem::find(&data[at..limit], &GROUP_MAGIC)?;
        let pos = at + hit;
        if let Ok(g) = GroupHeader::decode(&data[pos..limit], generation)
            && g.first_lsn >= min_lsn
        {
            return Some((pos as u64, g));
        }
        at = pos + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment_with(records: &[&[u8]], generation: u64, first_lsn: u64) -> (Vec<u8>, SegmentHeader) {
        let header = SegmentHeader {
            generation,
            first_lsn,
            segment_len: 4096,
        };
        let mut data = vec![0u8; 4096];
        data[..64].copy_from_slice(&header.encode());
        let mut body = Vec::new();
        for (i, r) in records.iter().enumerate() {
            let crc = finish_record_crc(start_record_crc(r), first_lsn + i as u64, generation);
            body.extend_from_slice(&record_header(r.len(), crc));
            body.extend_from_slice(r);
        }
        let g = GroupHeader {
            count: records.len() as u32,
            first_lsn,
            bytes: body.len() as u32,
        };
        let at = HEADER_LEN as usize;
        data[at..at + GROUP_HEADER_LEN].copy_from_slice(&g.encode(generation));
        data[at + GROUP_HEADER_LEN..at + GROUP_HEADER_LEN + body.len()].copy_from_slice(&body);
        (data, header)
    }

    /// A segment of `groups` (each a list of records) from `first_lsn`, and each group's offset.
    fn segment_of(groups: &[Vec<Vec<u8>>], generation: u64, first_lsn: u64) -> (Vec<u8>, SegmentHeader, Vec<usize>) {
        let header = SegmentHeader {
            generation,
            first_lsn,
            segment_len: 4096,
        };
        let mut data = header.encode().to_vec();
        let mut offsets = Vec::new();
        let mut lsn = first_lsn;
        for records in groups {
            offsets.push(data.len());
            data.extend(group_of(records, generation, lsn));
            lsn += records.len() as u64;
        }
        data.resize(4096, 0);
        (data, header, offsets)
    }

    /// One group as the log writes it.
    fn group_of(records: &[Vec<u8>], generation: u64, first_lsn: u64) -> Vec<u8> {
        let mut body = Vec::new();
        for (i, r) in records.iter().enumerate() {
            let crc = finish_record_crc(start_record_crc(r), first_lsn + i as u64, generation);
            body.extend_from_slice(&record_header(r.len(), crc));
            body.extend_from_slice(r);
        }
        let g = GroupHeader {
            count: records.len() as u32,
            first_lsn,
            bytes: body.len() as u32,
        };
        let mut b = g.encode(generation).to_vec();
        b.extend(body);
        b
    }

    /// A record whose bytes hold a whole group of generation 9 at `lsn`.
    fn carrier(lsn: u64) -> Vec<u8> {
        let mut r = vec![0xab; 40];
        r.extend(group_of(&[b"inner".to_vec()], 9, lsn));
        r.extend([0xcd; 40]);
        r
    }

    fn stop_and_later(data: &[u8], h: &SegmentHeader) -> (ScanEnd, Option<(u64, GroupHeader)>) {
        let end = scan_groups(data, HEADER_LEN, h.data_limit(), h.generation, h.first_lsn, |_, _| {});
        let later = find_later_group(data, &end, h.data_limit(), h.generation);
        (end, later)
    }

    #[test]
    fn a_later_group_is_searched_past_a_trusted_header_extent() {
        // LSN 2's record carries a group that names LSN 3, as the next group would.
        let groups = [vec![b"one".to_vec()], vec![carrier(3)], vec![b"three".to_vec()]];
        let (mut data, h, at) = segment_of(&groups, 9, 1);
        // Torn: the carrier's last bytes are lost. Its header is intact, so its extent is
        // trusted: the embedded group is no evidence, and nothing follows the extent.
        let mut torn = data.clone();
        torn[at[2] - 10..].fill(0);
        let (end, later) = stop_and_later(&torn, &h);
        assert!(matches!(end.stop, Stop::Torn(_)), "{:?}", end.stop);
        assert_eq!((end.data_end, end.next_lsn), (at[1] as u64, 2));
        assert_eq!(later, None);
        // Damaged with an intact group after it: corruption, found where that group really is.
        data[at[2] - 10] ^= 1;
        let (_, later) = stop_and_later(&data, &h);
        assert_eq!(later.map(|(off, g)| (off, g.first_lsn)), Some((at[2] as u64, 3)));
    }

    #[test]
    fn a_later_group_behind_a_damaged_header_names_a_later_lsn() {
        // LSN 2's record carries a group naming LSN 1, an LSN this log had used already.
        let groups = [vec![b"one".to_vec()], vec![carrier(1)], vec![b"three".to_vec()]];
        let (mut data, h, at) = segment_of(&groups, 9, 1);
        // The carrier's header never reached the disk: its extent is unknown, so the search
        // goes on right after it, and an embedded header naming an earlier LSN is no evidence.
        data[at[1]..at[1] + GROUP_HEADER_LEN].fill(0);
        let mut torn = data.clone();
        torn[at[2]..].fill(0);
        let (end, later) = stop_and_later(&torn, &h);
        assert_eq!((end.stop, end.data_end, end.next_lsn), (Stop::End, at[1] as u64, 2));
        assert_eq!(later, None);
        // A rotted header with an intact group after it: corruption.
        let (end, later) = stop_and_later(&data, &h);
        assert_eq!(end.stop, Stop::End);
        assert_eq!(later.map(|(off, g)| (off, g.first_lsn)), Some((at[2] as u64, 3)));
    }

    #[test]
    fn header_round_trip_and_rejections() {
        let h = SegmentHeader {
            generation: 7,
            first_lsn: 42,
            segment_len: 1 << 20,
        };
        let mut b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        b[8] = 9;
        assert_eq!(SegmentHeader::decode(&b), Err(HeaderError::UnknownVersion(9)));
        let mut b = h.encode();
        b[20] ^= 1;
        assert!(matches!(SegmentHeader::decode(&b), Err(HeaderError::Checksum { .. })));
        assert_eq!(SegmentHeader::decode(&[0u8; 64]), Err(HeaderError::BadMagic));
        assert_eq!(SegmentHeader::decode(&[0u8; 10]), Err(HeaderError::TooShort(10)));
    }

    #[test]
    fn trailer_of_another_generation_is_ignored() {
        let h = SegmentHeader {
            generation: 3,
            first_lsn: 10,
            segment_len: 4096,
        };
        let t = SegmentTrailer {
            generation: 3,
            first_lsn: 10,
            next_lsn: 12,
            data_end: 200,
            sealed: true,
        };
        assert_eq!(SegmentTrailer::decode(&t.encode(), &h), Some(t));
        let checkpoint = SegmentTrailer { sealed: false, ..t };
        assert_eq!(SegmentTrailer::decode(&checkpoint.encode(), &h), Some(checkpoint));
        let other = SegmentHeader { generation: 4, ..h };
        assert_eq!(SegmentTrailer::decode(&t.encode(), &other), None);
    }

    #[test]
    fn scan_finds_records_and_stops_at_blank() {
        let (data, h) = segment_with(&[b"a", b"bc", b""], 5, 100);
        let mut groups = Vec::new();
        let end = scan_groups(&data, HEADER_LEN, h.data_limit(), 5, 100, |at, g| groups.push((at, *g)));
        assert_eq!(groups.len(), 1);
        assert_eq!(end.next_lsn, 103);
        assert_eq!(end.stop, Stop::End);
    }

    #[test]
    fn scan_of_another_generation_reads_nothing() {
        let (data, h) = segment_with(&[b"a"], 5, 100);
        let end = scan_groups(&data, HEADER_LEN, h.data_limit(), 6, 100, |_, _| {});
        assert_eq!(end.next_lsn, 100);
        assert_eq!(end.stop, Stop::End);
        assert_eq!(find_intact_group_header(&data, HEADER_LEN, h.data_limit(), 6, 0), None);
        assert!(find_intact_group_header(&data, HEADER_LEN, h.data_limit(), 5, 0).is_some());
    }

    #[test]
    fn every_single_bit_flip_in_a_group_is_detected() {
        let (data, h) = segment_with(&[b"hello", b"world!"], 1, 1);
        let group_len = GROUP_HEADER_LEN + 2 * RECORD_HEADER_LEN + 11;
        for byte in HEADER_LEN as usize..HEADER_LEN as usize + group_len {
            for bit in 0..8 {
                let mut d = data.clone();
                d[byte] ^= 1 << bit;
                let end = scan_groups(&d, HEADER_LEN, h.data_limit(), 1, 1, |_, _| {});
                assert_eq!(end.next_lsn, 1, "flip at byte {byte} bit {bit} went unnoticed");
            }
        }
    }
}
