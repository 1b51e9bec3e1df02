//! Tiles come from any static server: tile paths, hash tiles and entry
//! bundles must parse to a value or an error, never a panic; a path that
//! parses prints back to itself, and a bundle that parses re-encodes to
//! the same bytes.
#![no_main]

use dlog_ledger::tiles::{encode_bundle_entry, parse_bundle, parse_hash_tile, TilePath};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(t) = TilePath::parse(s) {
            assert_eq!(t.path(), s);
        }
    }
    let Some((&w, rest)) = data.split_first() else {
        return;
    };
    let width = u16::from(w).max(1);
    let _ = parse_hash_tile(rest, width);
    if let Ok(entries) = parse_bundle(rest, width) {
        let mut again = Vec::new();
        for e in &entries {
            encode_bundle_entry(&mut again, e).expect("a parsed entry fits");
        }
        assert_eq!(again, rest);
    }
});
