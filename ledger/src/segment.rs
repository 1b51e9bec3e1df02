//! Segment file format (DESIGN §4): pure encoders and a scanner over bytes.
//!
//! ```text
//! segment := header | frame* | [footer]
//! header  := magic "DLOGSEG1" | version:u16 | bits:u8 | 0:u8 | segment:u64
//!            | log_id[16] | prev_chain[32] | crc32c(previous bytes):u32        (72 bytes)
//! frame   := len:u32 | crc32c(index:u64 | len:u32 | entry):u32 | entry[len]
//! footer  := 0xFFFFFFFF:u32 | magic "DLOGEND1" | count:u64 | root[32] | chain[32]
//!            | crc32c(previous footer bytes):u32                               (88 bytes)
//! ```
//!
//! All integers are big-endian. The frame CRC covers the entry's global index,
//! so a frame read from the wrong place (a damaged offset index) never passes
//! as the requested entry. Nothing here touches a file: [`scan`] takes the
//! segment's bytes and reports what it holds, where the valid prefix ends and
//! whether the tail is torn (cut by a crash) or damaged in the middle.

use dlog_crypto::Hash;

/// Segment header magic.
pub const HEADER_MAGIC: &[u8; 8] = b"DLOGSEG1";
/// Footer magic.
pub const FOOTER_MAGIC: &[u8; 8] = b"DLOGEND1";
/// Segment format version.
pub const FORMAT_VERSION: u16 = 1;
/// Header length in bytes.
pub const HEADER_LEN: usize = 72;
/// Footer length in bytes.
pub const FOOTER_LEN: usize = 88;
/// Frame header length (len + crc).
pub const FRAME_HEADER_LEN: usize = 8;
/// The `len` value that introduces a footer instead of a frame.
pub const FOOTER_SENTINEL: u32 = u32::MAX;

/// Damage or misuse found in segment bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SegmentError {
    /// The header is short, has the wrong magic or version, or fails its CRC.
    #[error("bad segment header: {0}")]
    Header(&'static str),
    /// The header belongs to another log, segment or tree shape.
    #[error("segment header mismatch: {0}")]
    HeaderMismatch(String),
    /// A frame in the middle of the segment is damaged: valid frames follow it.
    #[error("entry {index} at byte {offset} is damaged: {detail}")]
    Damaged {
        /// Global index of the damaged entry.
        index: u64,
        /// Byte offset of its frame in the segment file.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
    /// The footer fails its CRC or disagrees with the frames before it.
    #[error("bad segment footer: {0}")]
    Footer(String),
    /// Bytes follow the footer.
    #[error("{0} unexpected bytes after the segment footer")]
    TrailingBytes(usize),
    /// More frames than a segment may hold.
    #[error("segment holds more than {0} entries")]
    Overfull(u64),
}

/// The fixed header at the start of every segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Log identity (random, fixed at `init`).
    pub log_id: [u8; 16],
    /// Segment number `s`; it holds leaves `[s·2^bits, (s+1)·2^bits)`.
    pub segment: u64,
    /// `k`: a sealed segment holds exactly `2^k` leaves.
    pub bits: u8,
    /// Chain hash of segment `s - 1` (zeros for segment 0).
    pub prev_chain: Hash,
}

impl SegmentHeader {
    /// Header bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(HEADER_MAGIC);
        b[8..10].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
        b[10] = self.bits;
        b[11] = 0;
        b[12..20].copy_from_slice(&self.segment.to_be_bytes());
        b[20..36].copy_from_slice(&self.log_id);
        b[36..68].copy_from_slice(&self.prev_chain);
        let crc = crc32c::crc32c(&b[..68]);
        b[68..72].copy_from_slice(&crc.to_be_bytes());
        b
    }

    /// Parses and checks a header.
    pub fn decode(b: &[u8]) -> Result<Self, SegmentError> {
        if b.len() < HEADER_LEN {
            return Err(SegmentError::Header("shorter than 72 bytes"));
        }
        if &b[0..8] != HEADER_MAGIC {
            return Err(SegmentError::Header("wrong magic (not a DLog segment)"));
        }
        if crc32c::crc32c(&b[..68]) != be32(&b[68..72]) {
            return Err(SegmentError::Header("checksum mismatch"));
        }
        if u16::from_be_bytes([b[8], b[9]]) != FORMAT_VERSION {
            return Err(SegmentError::Header("unsupported format version"));
        }
        let bits = b[10];
        if bits > 40 {
            return Err(SegmentError::Header("segment bits out of range"));
        }
        Ok(SegmentHeader {
            bits,
            segment: be64(&b[12..20]),
            log_id: b[20..36].try_into().expect("16 bytes"),
            prev_chain: b[36..68].try_into().expect("32 bytes"),
        })
    }

    /// Global index of the first leaf of this segment.
    pub fn first_index(&self) -> u64 {
        self.segment << self.bits
    }

    /// Leaves in a sealed segment.
    pub fn capacity(&self) -> u64 {
        1u64 << self.bits
    }
}

/// The footer that seals a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentFooter {
    /// Number of entries (always `2^bits`).
    pub count: u64,
    /// Merkle root of the segment's leaves.
    pub root: Hash,
    /// `chain(s) = H(0x02 || s || root || chain(s-1))`.
    pub chain: Hash,
}

impl SegmentFooter {
    /// Footer bytes, sentinel included.
    pub fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut b = [0u8; FOOTER_LEN];
        b[0..4].copy_from_slice(&FOOTER_SENTINEL.to_be_bytes());
        b[4..12].copy_from_slice(FOOTER_MAGIC);
        b[12..20].copy_from_slice(&self.count.to_be_bytes());
        b[20..52].copy_from_slice(&self.root);
        b[52..84].copy_from_slice(&self.chain);
        let crc = crc32c::crc32c(&b[..84]);
        b[84..88].copy_from_slice(&crc.to_be_bytes());
        b
    }

    /// Parses a footer (starting at its sentinel).
    pub fn decode(b: &[u8]) -> Result<Self, SegmentError> {
        if b.len() < FOOTER_LEN {
            return Err(SegmentError::Footer("shorter than 88 bytes".into()));
        }
        if be32(&b[0..4]) != FOOTER_SENTINEL || &b[4..12] != FOOTER_MAGIC {
            return Err(SegmentError::Footer("wrong magic".into()));
        }
        if crc32c::crc32c(&b[..84]) != be32(&b[84..88]) {
            return Err(SegmentError::Footer("checksum mismatch".into()));
        }
        Ok(SegmentFooter {
            count: be64(&b[12..20]),
            root: b[20..52].try_into().expect("32 bytes"),
            chain: b[52..84].try_into().expect("32 bytes"),
        })
    }
}

/// CRC of a frame: covers the global index, the length and the entry.
pub fn frame_crc(index: u64, entry: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&index.to_be_bytes());
    let crc = crc32c::crc32c_append(crc, &(entry.len() as u32).to_be_bytes());
    crc32c::crc32c_append(crc, entry)
}

/// Appends the frame of entry `index` to `out`.
pub fn encode_frame(out: &mut Vec<u8>, index: u64, entry: &[u8]) {
    out.extend_from_slice(&(entry.len() as u32).to_be_bytes());
    out.extend_from_slice(&frame_crc(index, entry).to_be_bytes());
    out.extend_from_slice(entry);
}

/// One step of reading frames.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A valid frame holding `entry`; the next frame starts at `next`.
    Entry {
        /// Canonical entry bytes.
        entry: &'a [u8],
        /// Offset just past this frame.
        next: usize,
    },
    /// The footer sentinel starts here.
    Footer,
    /// The bytes end here exactly.
    End,
    /// The frame is cut short by the end of the bytes.
    Short,
    /// The frame is complete but invalid (bad CRC or not a canonical entry).
    Invalid {
        /// What is wrong.
        detail: String,
        /// Offset just past the frame as its length field declares it.
        declared_next: usize,
    },
}

/// Reads the frame of entry `index` at `off`. Never panics.
pub fn read_frame(bytes: &[u8], off: usize, index: u64, max_entry: u32) -> Frame<'_> {
    let rest = match bytes.get(off..) {
        Some(r) => r,
        None => return Frame::Short,
    };
    if rest.is_empty() {
        return Frame::End;
    }
    if rest.len() < FRAME_HEADER_LEN {
        return Frame::Short;
    }
    let len = be32(&rest[0..4]);
    if len == FOOTER_SENTINEL {
        return Frame::Footer;
    }
    let crc = be32(&rest[4..8]);
    let declared_next = off
        .saturating_add(FRAME_HEADER_LEN)
        .saturating_add(len as usize);
    if len > max_entry {
        return Frame::Invalid {
            detail: format!("frame length {len} exceeds the entry limit {max_entry}"),
            declared_next,
        };
    }
    let Some(entry) = rest.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len as usize) else {
        return Frame::Short;
    };
    if frame_crc(index, entry) != crc {
        return Frame::Invalid {
            detail: "frame checksum mismatch".into(),
            declared_next,
        };
    }
    if let Err(e) = crate::entry::decode_ref(entry) {
        return Frame::Invalid {
            detail: format!("not a canonical entry: {e}"),
            declared_next,
        };
    }
    Frame::Entry {
        entry,
        next: declared_next,
    }
}

/// How the valid part of a segment ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    /// The bytes end right after the last valid frame.
    Clean,
    /// A valid footer seals the segment.
    Sealed(SegmentFooter),
    /// Bytes after the last valid frame do not form a frame: a write cut by a
    /// crash. `valid_len` is where the segment should be truncated.
    Torn {
        /// Length of the valid prefix.
        valid_len: u64,
        /// Why the tail is not a frame.
        detail: String,
    },
}

/// What [`scan`] found in a segment.
#[derive(Debug, Clone)]
pub struct Scan {
    /// The parsed header.
    pub header: SegmentHeader,
    /// Byte offset of every valid frame, in order.
    pub offsets: Vec<u64>,
    /// Leaf hash of every valid entry, in order.
    pub leaves: Vec<Hash>,
    /// Timestamp of the last valid entry, if any.
    pub last_timestamp: Option<u64>,
    /// How the segment ends.
    pub tail: Tail,
}

/// Scans a whole segment: header, every frame (CRC, canonical entry, index
/// continuity, non-decreasing timestamps), and the footer if present.
///
/// A bad frame with no valid frame after it is a torn tail (a crash cut the
/// write); a bad frame followed by the next valid frame is damage and an error.
/// `min_timestamp` is the last timestamp of the previous segment.
pub fn scan(bytes: &[u8], max_entry: u32, min_timestamp: u64) -> Result<Scan, SegmentError> {
    scan_with(
        dlog_crypto::HashAlg::Blake3,
        bytes,
        max_entry,
        min_timestamp,
    )
}

/// [`scan`] for a log whose tree hashes with `alg` (the leaf hashes in
/// [`Scan::leaves`] are its).
pub fn scan_with(
    alg: dlog_crypto::HashAlg,
    bytes: &[u8],
    max_entry: u32,
    min_timestamp: u64,
) -> Result<Scan, SegmentError> {
    let header = SegmentHeader::decode(bytes)?;
    let capacity = header.capacity();
    let first = header.first_index();
    let mut offsets = Vec::new();
    let mut leaves = Vec::new();
    let mut last_ts = min_timestamp;
    let mut last_timestamp = None;
    let mut off = HEADER_LEN;
    let tail = loop {
        let index = first + offsets.len() as u64;
        match read_frame(bytes, off, index, max_entry) {
            Frame::Entry { entry, next } => {
                let ts = u64::from_be_bytes(entry[2..10].try_into().expect("8 bytes"));
                if ts < last_ts {
                    return Err(SegmentError::Damaged {
                        index,
                        offset: off as u64,
                        detail: format!("timestamp {ts} is earlier than the previous {last_ts}"),
                    });
                }
                if offsets.len() as u64 == capacity {
                    return Err(SegmentError::Overfull(capacity));
                }
                last_ts = ts;
                last_timestamp = Some(ts);
                offsets.push(off as u64);
                leaves.push(alg.hash_leaf(entry));
                off = next;
            }
            Frame::End => break Tail::Clean,
            Frame::Footer => {
                let footer = SegmentFooter::decode(&bytes[off..]);
                match footer {
                    Ok(f) => {
                        if f.count != offsets.len() as u64 || f.count != capacity {
                            return Err(SegmentError::Footer(format!(
                                "footer counts {} entries, segment holds {} of {}",
                                f.count,
                                offsets.len(),
                                capacity
                            )));
                        }
                        let trailing = bytes.len() - off - FOOTER_LEN;
                        if trailing != 0 {
                            return Err(SegmentError::TrailingBytes(trailing));
                        }
                        break Tail::Sealed(f);
                    }
                    Err(e) if bytes.len() - off < FOOTER_LEN => {
                        break Tail::Torn {
                            valid_len: off as u64,
                            detail: e.to_string(),
                        }
                    }
                    Err(e) => {
                        return Err(SegmentError::Footer(e.to_string()));
                    }
                }
            }
            Frame::Short => {
                break Tail::Torn {
                    valid_len: off as u64,
                    detail: "frame cut short by the end of the file".into(),
                }
            }
            Frame::Invalid {
                detail,
                declared_next,
            } => {
                // Damage in the middle if the next entry is intact right after.
                if matches!(
                    read_frame(bytes, declared_next, index + 1, max_entry),
                    Frame::Entry { .. }
                ) {
                    return Err(SegmentError::Damaged {
                        index,
                        offset: off as u64,
                        detail,
                    });
                }
                break Tail::Torn {
                    valid_len: off as u64,
                    detail,
                };
            }
        }
    };
    Ok(Scan {
        header,
        offsets,
        leaves,
        last_timestamp,
        tail,
    })
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().expect("4 bytes"))
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{encode_into, EntryKind};
    use proptest::prelude::*;

    fn segment(n: u64, bits: u8) -> Vec<u8> {
        let h = SegmentHeader {
            log_id: [7; 16],
            segment: 0,
            bits,
            prev_chain: [0; 32],
        };
        let mut out = h.encode().to_vec();
        for i in 0..n {
            let mut e = Vec::new();
            encode_into(&mut e, EntryKind::Data, i, format!("entry {i}").as_bytes());
            encode_frame(&mut out, i, &e);
        }
        out
    }

    #[test]
    fn clean_scan() {
        let s = scan(&segment(5, 4), 1 << 20, 0).unwrap();
        assert_eq!(s.offsets.len(), 5);
        assert_eq!(s.tail, Tail::Clean);
        assert_eq!(s.last_timestamp, Some(4));
    }

    #[test]
    fn torn_tail_is_cut() {
        let full = segment(5, 4);
        let clean = scan(&full, 1 << 20, 0).unwrap();
        // Frame i ends where frame i+1 starts; the last one ends at the file end.
        let mut ends: Vec<usize> = clean.offsets[1..].iter().map(|&o| o as usize).collect();
        ends.push(full.len());
        for cut in HEADER_LEN..full.len() {
            let s = scan(&full[..cut], 1 << 20, 0).unwrap();
            let whole = ends.iter().filter(|&&e| e <= cut).count();
            assert_eq!(s.offsets.len(), whole, "cut at {cut}");
            let valid_len = if whole == 0 {
                HEADER_LEN
            } else {
                ends[whole - 1]
            };
            if valid_len == cut {
                assert_eq!(s.tail, Tail::Clean);
            } else {
                assert!(
                    matches!(s.tail, Tail::Torn { valid_len: v, .. } if v as usize == valid_len),
                    "cut at {cut}: {:?}",
                    s.tail
                );
            }
        }
    }

    #[test]
    fn damage_in_the_middle_is_an_error() {
        let mut seg = segment(5, 4);
        let s = scan(&seg, 1 << 20, 0).unwrap();
        let at = s.offsets[2] as usize + FRAME_HEADER_LEN + 3;
        seg[at] ^= 0x40;
        match scan(&seg, 1 << 20, 0) {
            Err(SegmentError::Damaged { index: 2, .. }) => {}
            other => panic!("expected damage at entry 2, got {other:?}"),
        }
        // Damage to the last frame looks like a torn write and is cut.
        let mut seg = segment(5, 4);
        let last = *scan(&seg, 1 << 20, 0).unwrap().offsets.last().unwrap() as usize;
        seg[last + 9] ^= 1;
        let s = scan(&seg, 1 << 20, 0).unwrap();
        assert_eq!(s.offsets.len(), 4);
        assert!(matches!(s.tail, Tail::Torn { valid_len, .. } if valid_len == last as u64));
    }

    #[test]
    fn footer_roundtrip_and_checks() {
        let mut seg = segment(16, 4);
        let f = SegmentFooter {
            count: 16,
            root: [1; 32],
            chain: [2; 32],
        };
        seg.extend_from_slice(&f.encode());
        assert_eq!(scan(&seg, 1 << 20, 0).unwrap().tail, Tail::Sealed(f));
        seg.push(0);
        assert_eq!(
            scan(&seg, 1 << 20, 0).unwrap_err(),
            SegmentError::TrailingBytes(1)
        );
        let mut short = segment(15, 4);
        short.extend_from_slice(&SegmentFooter { count: 15, ..f }.encode());
        assert!(matches!(
            scan(&short, 1 << 20, 0),
            Err(SegmentError::Footer(_))
        ));
    }

    #[test]
    fn header_checks() {
        let mut seg = segment(1, 4);
        seg[21] ^= 1;
        assert_eq!(
            scan(&seg, 1 << 20, 0).unwrap_err(),
            SegmentError::Header("checksum mismatch")
        );
        assert!(scan(b"DLOGSEG1", 1 << 20, 0).is_err());
    }

    #[test]
    fn frame_crc_binds_the_index() {
        let seg = segment(2, 4);
        let s = scan(&seg, 1 << 20, 0).unwrap();
        assert!(matches!(
            read_frame(&seg, s.offsets[1] as usize, 0, 1 << 20),
            Frame::Invalid { .. }
        ));
    }

    proptest! {
        #[test]
        fn scan_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = scan(&bytes, 1 << 20, 0);
        }

        #[test]
        fn scan_with_valid_header_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut seg = segment(3, 2);
            seg.extend_from_slice(&tail);
            if let Ok(s) = scan(&seg, 1 << 20, 0) {
                prop_assert!(s.offsets.len() >= 3);
            }
        }

        #[test]
        fn any_single_bit_flip_is_noticed(n in 1u64..8, pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let seg = segment(n, 4);
            let clean = scan(&seg, 1 << 20, 0).unwrap();
            let mut bad = seg.clone();
            let at = pos.index(bad.len());
            bad[at] ^= 1 << bit;
            match scan(&bad, 1 << 20, 0) {
                Err(_) => {}
                Ok(s) => {
                    // Either a shorter valid prefix (torn-looking tail) or different leaves.
                    prop_assert!(s.offsets.len() < clean.offsets.len() || s.leaves != clean.leaves);
                }
            }
        }
    }
}
