//! A witness's add-checkpoint body comes from anyone: it must parse to a
//! request or a refusal, never a panic. Structured inputs reach past the
//! signature check (a checkpoint signed by the log's fixed test key, with a
//! fuzzed size, root, proof and stored state), and whatever the witness
//! accepts never goes back in size and never changes the root at a size.
#![no_main]

use dlog_auditor::witness::protocol::{decide, parse_request, AddCheckpoint, Cosigned, WitnessedLog};
use dlog_crypto::keys::NodeKey;
use dlog_crypto::note::{Checkpoint, SignedNote};
use dlog_crypto::HashAlg;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn key() -> &'static NodeKey {
    static KEY: OnceLock<NodeKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let sk = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        NodeKey::from_signing_key("example.com/log", sk).expect("key")
    })
}

fn log() -> WitnessedLog {
    WitnessedLog {
        origin: "example.com/log".into(),
        keys: vec![key().note_signer().verifier()],
        quorum: 1,
        hash: HashAlg::Sha256,
    }
}

fuzz_target!(|data: &[u8]| {
    let log = log();
    if let Ok(req) = parse_request(data) {
        let _ = decide(&log, None, &req);
    }
    // Structured: state (size, root), request (old, size, root, proof).
    if data.len() < 1 + 8 + 8 + 8 + 2 {
        return;
    }
    let u = |i: usize| u64::from_be_bytes(data[i..i + 8].try_into().unwrap()) % 64;
    let (last_size, old, size) = (u(1), u(9), u(17));
    let pick = |b: u8| -> [u8; 32] { [b; 32] };
    let last = (data[0] & 1 == 1).then(|| Cosigned {
        size: last_size,
        root: pick(data[25]),
    });
    let root = pick(data[26]);
    let proof: Vec<[u8; 32]> = data[27..].iter().take(63).map(|&b| pick(b)).collect();
    let Ok(cp) = Checkpoint::new("example.com/log", size, root) else {
        return;
    };
    let Ok(mut note) = SignedNote::new(cp.to_body()) else {
        return;
    };
    note.add_signature(key().note_signer().sign(&note.text));
    let req = AddCheckpoint {
        old,
        proof,
        note: note.to_string(),
    };
    if let Ok(a) = decide(&log, last.as_ref(), &req) {
        if let Some(l) = last {
            assert!(a.state.size >= l.size, "went back");
            if a.state.size == l.size {
                assert_eq!(a.state.root, l.root, "another root at one size");
            }
        }
        assert_eq!(req.old, last.map_or(0, |l| l.size));
    }
});
