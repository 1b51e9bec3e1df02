//! Signed-note and checkpoint parsing, and checkpoint verification under a
//! fixed trust policy: never panics; whatever parses prints back to the same
//! bytes. Two inputs per run: the raw bytes, and a valid signed, cosigned
//! checkpoint with bytes overwritten as the input says (deep coverage
//! without a seed corpus).
#![no_main]

use dlog_crypto::note::{Checkpoint, Cosigner, NoteSigner, SignedNote};
use dlog_crypto::trust::TrustPolicy;
use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

struct Fixture {
    policy: TrustPolicy,
    note: String,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let voters: Vec<NoteSigner> = (1..=3u8)
            .map(|i| {
                NoteSigner::new(format!("node-{i}"), SigningKey::from_bytes(&[i; 32])).unwrap()
            })
            .collect();
        let auditor = Cosigner::new("auditor-1", SigningKey::from_bytes(&[9; 32])).unwrap();
        let policy = TrustPolicy::new(
            "dlog/fuzz",
            voters.iter().map(|v| v.verifier()).collect(),
            2,
            vec![auditor.verifier()],
            1,
        )
        .unwrap();
        let body = Checkpoint::new("dlog/fuzz", 1234, [7; 32])
            .unwrap()
            .to_body();
        let mut note = SignedNote::new(body.clone()).unwrap();
        for v in &voters[..2] {
            note.add_signature(v.sign(&body));
        }
        note.add_signature(auditor.cosign(&body, 1_700_000_000));
        let note = note.to_string();
        policy.verify_checkpoint(&note).expect("fixture verifies");
        Fixture { policy, note }
    })
}

fn check(s: &str) {
    let f = fixture();
    if let Ok(n) = SignedNote::parse(s) {
        assert_eq!(n.to_string(), s);
        if let Ok(c) = Checkpoint::parse_body(&n.text) {
            assert_eq!(c.to_body(), n.text);
        }
    }
    if let Ok(c) = Checkpoint::parse_body(s) {
        assert_eq!(c.to_body(), s);
    }
    if let Ok(v) = f.policy.verify_checkpoint(s) {
        // Only a note whose signed body is unchanged can verify.
        assert_eq!(v.checkpoint().size, 1234);
        assert_eq!(v.checkpoint().root, [7; 32]);
        assert!(v.signers().len() >= 2);
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        check(s);
    }
    let mut note = fixture().note.clone().into_bytes();
    for op in data.chunks_exact(3) {
        let pos = u16::from_le_bytes([op[0], op[1]]) as usize % note.len();
        note[pos] = op[2];
    }
    if let Ok(s) = String::from_utf8(note) {
        check(&s);
    }
});
