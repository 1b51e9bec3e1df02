//! Receipt parsing (tlog-proof text and JSON) and verification: never
//! panics; a parsed tlog-proof prints back to the same bytes; a parsed JSON
//! receipt round-trips. Runs on the raw input and on a valid receipt with
//! bytes overwritten as the input says.
#![no_main]

use dlog_crypto::note::{Checkpoint, NoteSigner, SignedNote};
use dlog_crypto::tree::MemoryTree;
use dlog_crypto::trust::TrustPolicy;
use dlog_crypto::{Blake3Hasher, TreeHasher};
use dlog_ledger::entry::{Entry, EntryKind};
use dlog_notary::{verify_notarized_digest, verify_receipt, DigestAlg, NotaryPayload, Receipt};
use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

struct Fixture {
    policy: TrustPolicy,
    proof: String,
    json: String,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let signer = NoteSigner::new("node-1", SigningKey::from_bytes(&[1; 32])).unwrap();
        let policy =
            TrustPolicy::new("dlog/fuzz", vec![signer.verifier()], 1, Vec::new(), 0).unwrap();
        let entries: Vec<Vec<u8>> = (0..11u64)
            .map(|i| {
                let p = NotaryPayload::new(
                    DigestAlg::Blake3,
                    DigestAlg::Blake3.digest(&[i as u8]),
                    Some("doc".into()),
                )
                .unwrap();
                Entry {
                    kind: EntryKind::Notarization,
                    timestamp_ns: i,
                    payload: p.encode().unwrap(),
                }
                .encode()
            })
            .collect();
        let tree = MemoryTree::<Blake3Hasher>::from_leaves(
            entries.iter().map(|e| Blake3Hasher::hash_leaf(e)),
        );
        let body = Checkpoint::new("dlog/fuzz", 11, tree.root())
            .unwrap()
            .to_body();
        let mut note = SignedNote::new(body.clone()).unwrap();
        note.add_signature(signer.sign(&body));
        let r = Receipt {
            entry: entries[6].clone(),
            index: 6,
            inclusion: tree.inclusion_proof(6, 11).unwrap(),
            checkpoint: note.to_string(),
        };
        verify_receipt(&policy, &r).expect("fixture verifies");
        Fixture {
            policy,
            proof: r.to_tlog_proof(),
            json: r.to_json(),
        }
    })
}

fn check(s: &str) {
    let f = fixture();
    if let Ok(r) = Receipt::parse_tlog_proof(s) {
        assert_eq!(r.to_tlog_proof(), s);
        let _ = verify_receipt(&f.policy, &r);
        let _ = verify_notarized_digest(&f.policy, &r, |alg| Ok(alg.digest(&[6])));
    }
    if let Ok(r) = Receipt::from_json(s) {
        assert_eq!(Receipt::from_json(&r.to_json()).as_ref(), Ok(&r));
        if let Ok(v) = verify_receipt(&f.policy, &r) {
            assert_eq!(v.index(), 6);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        check(s);
    }
    let (which, ops) = data.split_first().unwrap_or((&0, &[]));
    let mut text = if which & 1 == 0 {
        fixture().proof.clone()
    } else {
        fixture().json.clone()
    }
    .into_bytes();
    for op in ops.chunks_exact(3) {
        let pos = u16::from_le_bytes([op[0], op[1]]) as usize % text.len();
        text[pos] = op[2];
    }
    if let Ok(s) = String::from_utf8(text) {
        check(&s);
    }
});
