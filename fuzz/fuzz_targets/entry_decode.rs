//! Canonical entry decoding: never panics, and whatever decodes re-encodes
//! to the same bytes (the encoding is canonical).
#![no_main]

use dlog_ledger::entry::{decode_ref, Entry};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let decoded = Entry::decode(data);
    assert_eq!(decoded.is_ok(), decode_ref(data).is_ok());
    if let Ok(e) = decoded {
        assert_eq!(e.encode(), data);
    }
});
