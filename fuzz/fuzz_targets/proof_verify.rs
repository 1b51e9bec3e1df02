//! RFC 9162 proof verification on structured input: never panics on any
//! (index, size, proof, root); real proofs from a tree of the chosen size
//! verify, and a proof with a flipped bit does not.
#![no_main]

use dlog_crypto::tree::{verify_consistency, verify_inclusion, MemoryTree};
use dlog_crypto::{Blake3Hasher, Hash, TreeHasher};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    index: u64,
    size: u64,
    old: u64,
    leaf: Hash,
    root: Hash,
    old_root: Hash,
    proof: Vec<Hash>,
    /// Size of a real tree (mod 600), and which index / old size to prove.
    real_size: u16,
    real_pick: u16,
    flip: u16,
}

fuzz_target!(|i: Input| {
    let _ = verify_inclusion::<Blake3Hasher>(&i.leaf, i.index, i.size, &i.proof, &i.root);
    let _ = verify_consistency::<Blake3Hasher>(i.old, i.size, &i.old_root, &i.root, &i.proof);
    // Small sizes reach the loops' edge cases far more often.
    let _ = verify_inclusion::<Blake3Hasher>(&i.leaf, i.index % 64, i.size % 64, &i.proof, &i.root);
    let _ =
        verify_consistency::<Blake3Hasher>(i.old % 64, i.size % 64, &i.old_root, &i.root, &i.proof);

    let n = u64::from(i.real_size % 600) + 1;
    let leaves: Vec<Hash> = (0..n)
        .map(|k| Blake3Hasher::hash_leaf(&k.to_be_bytes()))
        .collect();
    let tree = MemoryTree::<Blake3Hasher>::from_leaves(leaves.iter().copied());
    let root = tree.root();
    let idx = u64::from(i.real_pick) % n;
    let p = tree.inclusion_proof(idx, n).unwrap();
    verify_inclusion::<Blake3Hasher>(&leaves[idx as usize], idx, n, &p, &root).unwrap();
    if !p.is_empty() {
        let mut bad = p.clone();
        let bit = usize::from(i.flip);
        let k = bit % bad.len();
        bad[k][(bit / 8) % 32] ^= 1 << (bit % 8);
        assert!(
            verify_inclusion::<Blake3Hasher>(&leaves[idx as usize], idx, n, &bad, &root).is_err()
        );
    }
    let m = idx + 1;
    let c = tree.consistency_proof(m, n).unwrap();
    let old_root = tree.root_at(m).unwrap();
    verify_consistency::<Blake3Hasher>(m, n, &old_root, &root, &c).unwrap();
    if !c.is_empty() {
        let mut bad = c.clone();
        let bit = usize::from(i.flip);
        let k = bit % bad.len();
        bad[k][(bit / 8) % 32] ^= 1 << (bit % 8);
        assert!(verify_consistency::<Blake3Hasher>(m, n, &old_root, &root, &bad).is_err());
    }
    // Arbitrary proof hashes against the real tree.
    let _ = verify_inclusion::<Blake3Hasher>(&leaves[idx as usize], idx, n, &i.proof, &root);
    let _ = verify_consistency::<Blake3Hasher>(m, n, &old_root, &root, &i.proof);
});
