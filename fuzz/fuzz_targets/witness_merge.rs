//! dlog-node: the leader's merge of an auditor's cosignature into the
//! witnessed checkpoint. Notes are built from fuzzer-chosen checkpoints,
//! signed by a fuzzer-chosen set of the fixed voters and cosigned (or not)
//! by a fixed auditor at a fuzzer-chosen time, then optionally cut or
//! overwritten, so the merge logic past signature checks is reached too.
//! Whatever comes in, `merge` answers or refuses, never panics; anything it
//! accepts verifies under the trust file's voter quorum, is never smaller
//! than the current one, and carries the caller's cosignature.
#![no_main]

use dlog_crypto::note::{Checkpoint, Cosigner, NoteSigner, SignedNote};
use dlog_crypto::trust::TrustPolicy;
use dlog_node::witness::{merge, Merge};
use ed25519_dalek::SigningKey;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct NoteSpec {
    size: u8,
    root: u8,
    voters: u8,
    cosigners: u8,
    time: u64,
    /// Overwrite one byte at this offset with `byte` (if Some).
    damage: Option<(u16, u8)>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    caller: u8,
    submitted: NoteSpec,
    current: Option<NoteSpec>,
    open: bool,
}

fn voters() -> Vec<NoteSigner> {
    (1..=3u8)
        .map(|i| NoteSigner::new(format!("node-{i}"), SigningKey::from_bytes(&[i; 32])).unwrap())
        .collect()
}

fn auditors() -> Vec<Cosigner> {
    (1..=2u8)
        .map(|i| Cosigner::new(format!("auditor-{i}"), SigningKey::from_bytes(&[100 + i; 32])).unwrap())
        .collect()
}

fn build(spec: &NoteSpec) -> String {
    // Few distinct sizes and roots, so equal sizes (and conflicts) happen.
    let size = u64::from(spec.size % 8);
    let body = Checkpoint::new("dlog/fuzz", size, [spec.root % 3; 32])
        .unwrap()
        .to_body();
    let mut n = SignedNote::new(body.clone()).unwrap();
    for (i, v) in voters().iter().enumerate() {
        if spec.voters & (1 << i) != 0 {
            n.add_signature(v.sign(&body));
        }
    }
    for (i, a) in auditors().iter().enumerate() {
        if spec.cosigners & (1 << i) != 0 {
            n.add_signature(a.cosign(&body, spec.time));
        }
    }
    let mut text = n.to_string().into_bytes();
    if let Some((at, byte)) = spec.damage {
        if !text.is_empty() {
            let i = at as usize % text.len();
            text[i] = byte;
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

fn size_of(note: &str) -> u64 {
    let n = SignedNote::parse(note).expect("a verified note parses");
    Checkpoint::parse_body(&n.text).expect("and has a body").size
}

fuzz_target!(|input: Input| {
    let trust = TrustPolicy::new(
        "dlog/fuzz",
        voters().iter().map(|v| v.verifier()).collect(),
        2,
        auditors().iter().map(|a| a.verifier()).collect(),
        0,
    )
    .unwrap();
    let caller = format!("auditor-{}", 1 + input.caller % 3);
    let submitted = build(&input.submitted);
    let current = input.current.as_ref().map(build);
    if let Ok((Merge::Accept(note), _)) =
        merge(&trust, &caller, &submitted, current.as_deref(), input.open)
    {
        let v = trust.verify_checkpoint(&note).expect("an accepted note verifies");
        assert!(v.cosignatures().iter().any(|(n, _)| n == &caller));
        if let Some(c) = current.as_deref() {
            if trust.verify_checkpoint(c).is_ok() {
                assert!(size_of(&note) >= size_of(c), "went backwards");
            }
        }
    }
});
