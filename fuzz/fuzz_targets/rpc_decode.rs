//! dlog-node: request and response frames, and Raft log records (which
//! carry a batch's `Items` through its own decoder), must decode to a value
//! or an error, never a panic, whatever the bytes; what decodes re-encodes
//! to a value that decodes the same.
#![no_main]

use dlog_node::rpc::{decode, RequestFrame, ResponseFrame};
use dlog_node::types::Entry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = decode::<RequestFrame>(data) {
        let again = bincode::serialize(&f).expect("a decoded frame encodes");
        let back: RequestFrame = decode(&again).expect("and decodes again");
        assert_eq!(format!("{back:?}"), format!("{f:?}"));
    }
    let _ = decode::<ResponseFrame>(data);
    if let Ok(e) = bincode::deserialize::<Entry>(data) {
        let again = bincode::serialize(&e).expect("a decoded entry encodes");
        let back: Entry = bincode::deserialize(&again).expect("and decodes again");
        assert_eq!(back, e);
    }
});
