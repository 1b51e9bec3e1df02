//! dlog-node: the leader's merge of an auditor's cosignature into the
//! witnessed checkpoint takes a note from the network and the stored one;
//! whatever they hold, it answers or refuses, never panics, and anything
//! it accepts passes the trust file's voter quorum.
#![no_main]

use dlog_crypto::note::{Cosigner, NoteSigner};
use dlog_crypto::trust::TrustPolicy;
use dlog_node::witness::{merge, Merge};
use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: (&str, Option<&str>, bool)| {
    let (submitted, current, open) = data;
    let voters = (1..=3u8)
        .map(|i| NoteSigner::new(format!("node-{i}"), SigningKey::from_bytes(&[i; 32])).unwrap())
        .map(|s| s.verifier())
        .collect();
    let auditors = vec![Cosigner::new("auditor-1", SigningKey::from_bytes(&[9; 32]))
        .unwrap()
        .verifier()];
    let trust = TrustPolicy::new("dlog/fuzz", voters, 2, auditors, 0).unwrap();
    if let Ok((Merge::Accept(note), _)) = merge(&trust, "auditor-1", submitted, current, open) {
        trust.verify_checkpoint(&note).expect("an accepted note verifies");
    }
});
