//! dlog-client's request and response frames, the Raft messages they carry
//! as opaque bytes (decoded by dlog-node), and Raft log records (which carry
//! a batch's `Items` through its own decoder), must decode to a value or an
//! error, never a panic, whatever the bytes; what decodes re-encodes to a
//! value that decodes the same.
#![no_main]

use dlog_node::rpc::{decode, Call, RaftCall, RaftKind, RaftReply, RequestFrame, ResponseFrame};
use dlog_node::types::Entry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = decode::<RequestFrame>(data) {
        let again = bincode::serialize(&f).expect("a decoded frame encodes");
        let back: RequestFrame = decode(&again).expect("and decodes again");
        assert_eq!(format!("{back:?}"), format!("{f:?}"));
    }
    let _ = decode::<ResponseFrame>(data);
    // The opaque Raft bodies, as the server and the network decode them.
    for kind in [RaftKind::AppendEntries, RaftKind::Vote, RaftKind::InstallSnapshot] {
        if let Ok(call) = RaftCall::decode(kind, data) {
            let Call::Raft { kind: k, body } = call.to_call().expect("a decoded call encodes") else {
                panic!("a Raft call encodes as Call::Raft");
            };
            assert_eq!(k, kind);
            let back = RaftCall::decode(kind, &body).expect("and decodes again");
            assert_eq!(format!("{back:?}"), format!("{call:?}"));
        }
        let _ = RaftReply::decode(kind, data);
    }
    if let Ok(e) = bincode::deserialize::<Entry>(data) {
        let again = bincode::serialize(&e).expect("a decoded entry encodes");
        let back: Entry = bincode::deserialize(&again).expect("and decodes again");
        assert_eq!(back, e);
    }
});
