//! Segment files from disk are untrusted: scanning arbitrary bytes must never
//! panic, and whatever scans as valid must be self-consistent.
//!
//! Random bytes rarely carry valid CRCs, so the input also drives a builder:
//! valid frames (and maybe a footer) are made from it, then damaged at
//! input-chosen places, which reaches the torn-versus-damaged logic.
#![no_main]

use dlog_ledger::entry::{encode_into, EntryKind};
use dlog_ledger::segment::{self, SegmentFooter, SegmentHeader, Tail};
use libfuzzer_sys::fuzz_target;

const BITS: u8 = 3;

fuzz_target!(|data: &[u8]| {
    scan_checked(data);
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let header = SegmentHeader {
        log_id: [1; 16],
        segment: 0,
        bits: BITS,
        prev_chain: [0; 32],
    };
    let mut seg = header.encode().to_vec();
    if mode & 1 == 0 {
        // Valid header, then the raw input.
        seg.extend_from_slice(rest);
        scan_checked(&seg);
        return;
    }
    // Valid frames built from the input, then damage.
    let n = ((mode >> 1) as usize % 9).min(rest.len());
    let (sizes, tail) = rest.split_at(n);
    let mut at = 0usize;
    for (i, &len) in sizes.iter().enumerate() {
        let len = (len as usize % 32).min(tail.len().saturating_sub(at));
        let mut e = Vec::new();
        encode_into(&mut e, EntryKind::Data, i as u64, &tail[at..at + len]);
        at += len;
        segment::encode_frame(&mut seg, i as u64, &e);
    }
    if n == 1 << BITS && mode & 0x80 != 0 {
        seg.extend_from_slice(
            &SegmentFooter {
                count: 1 << BITS,
                root: [2; 32],
                chain: [3; 32],
            }
            .encode(),
        );
    }
    // Remaining input: (position, xor) pairs, and a final cut.
    let damage = &tail[at..];
    for pair in damage.chunks_exact(3) {
        let pos = u16::from_be_bytes([pair[0], pair[1]]) as usize % seg.len().max(1);
        seg[pos] ^= pair[2];
    }
    if damage.len() % 3 == 1 {
        let cut = damage[damage.len() - 1] as usize;
        seg.truncate(seg.len().saturating_sub(cut));
    }
    scan_checked(&seg);
});

fn scan_checked(bytes: &[u8]) {
    let Ok(scan) = segment::scan(bytes, 1 << 12, 0) else {
        return;
    };
    assert_eq!(scan.offsets.len(), scan.leaves.len());
    assert!(scan.offsets.len() as u64 <= scan.header.capacity());
    assert!(scan.offsets.windows(2).all(|w| w[0] < w[1]));
    if let Tail::Torn { valid_len, .. } = scan.tail {
        assert!(valid_len as usize <= bytes.len());
        // The valid prefix alone scans clean, with the same entries.
        let again = segment::scan(&bytes[..valid_len as usize], 1 << 12, 0).expect("valid prefix scans");
        assert_eq!(again.tail, Tail::Clean);
        assert_eq!(again.leaves, scan.leaves);
    }
}
