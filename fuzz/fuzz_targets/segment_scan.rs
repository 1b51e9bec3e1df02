//! Segment files from disk are untrusted: scanning arbitrary bytes must never
//! panic, and whatever scans as valid must be self-consistent.
#![no_main]

use dlog_ledger::segment::{self, Tail};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Raw bytes, and the same bytes behind a valid header (to reach frames).
    scan_checked(data);
    let header = segment::SegmentHeader {
        log_id: [1; 16],
        segment: 0,
        bits: 3,
        prev_chain: [0; 32],
    };
    let mut with_header = header.encode().to_vec();
    with_header.extend_from_slice(data);
    scan_checked(&with_header);
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
