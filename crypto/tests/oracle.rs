//! Our RFC 9162 tree math against an independent implementation.
//!
//! The oracle is the `ct-merkle` crate (RFC 6962 array-based trees), run with
//! `blake3::Hasher` (production hash) and with SHA-256 (RFC 6962). Both sides
//! hash the same canonical leaf bytes: ct-merkle hashes `0x00 || bytes` for a
//! `Vec<u8>` leaf, exactly like `Blake3Hasher::hash_leaf(bytes)`.
//!
//! * every tree size 1..=300: roots, every inclusion proof byte for byte,
//!   cross-verification both ways;
//! * every pair 1 <= m <= n <= 300: consistency proofs byte for byte,
//!   cross-verification both ways;
//! * random sizes up to 10^6 (proptest): roots recorded from the oracle while
//!   it grows, proofs compared at those sizes, and our proofs accepted by the
//!   oracle's verifier at arbitrary sizes;
//! * SHA-256: the RFC 6962 reference vectors of transparency-dev/merkle, and
//!   oracle agreement for sizes 1..=100;
//! * tampering with any proof hash, the index or the size fails (where the
//!   size changes the computation; see `size_tampering`).

use ct_merkle::mem_backed_tree::MemoryBackedTree;
use ct_merkle::{ConsistencyProof, InclusionProof, RootHash};
use dlog_crypto::tree::{
    inclusion_proof_len, root_from_leaves, verify_consistency, verify_inclusion, MemoryTree,
};
use dlog_crypto::{Blake3Hasher, Hash, Sha256Hasher, TreeHasher};
use proptest::prelude::*;
use std::sync::OnceLock;

type B3 = blake3::Hasher;
type S256 = sha2_oracle::Sha256;

/// Canonical entry bytes (DESIGN §2) for leaf `i`: version 1, kind 0,
/// timestamp `i`, a payload of `i % 7` bytes.
fn entry(i: u64) -> Vec<u8> {
    let payload: Vec<u8> = (0..i % 7)
        .map(|k| (i as u8).wrapping_add(k as u8))
        .collect();
    let mut e = vec![1u8, 0];
    e.extend_from_slice(&i.to_be_bytes());
    e.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    e.extend_from_slice(&payload);
    e
}

fn to_array<H: ct_merkle::digest::Digest>(h: &Hash) -> ct_merkle::digest::Output<H> {
    ct_merkle::digest::Output::<H>::try_from(&h[..]).expect("32-byte digest")
}

fn concat(hashes: &[Hash]) -> Vec<u8> {
    hashes.iter().flatten().copied().collect()
}

fn oracle_root<H: ct_merkle::digest::Digest>(t: &MemoryBackedTree<H, Vec<u8>>) -> Vec<u8> {
    t.root().as_bytes().to_vec()
}

/// Grows both trees to `max` leaves, checking every size and every index.
fn roots_and_inclusion<H, D>(max: u64)
where
    H: TreeHasher,
    D: ct_merkle::digest::Digest,
{
    let mut oracle = MemoryBackedTree::<D, Vec<u8>>::new();
    let mut ours = MemoryTree::<H>::new();
    let mut leaves = Vec::new();
    for n in 1..=max {
        let e = entry(n - 1);
        leaves.push(H::hash_leaf(&e));
        ours.push(H::hash_leaf(&e));
        oracle.push(e);
        let root = ours.root();
        assert_eq!(root.to_vec(), oracle_root(&oracle), "root of size {n}");
        assert_eq!(
            root,
            root_from_leaves::<H>(&leaves),
            "recursive root of size {n}"
        );
        let oracle_root_hash = oracle.root();
        for i in 0..n {
            let proof = ours.inclusion_proof(i, n).unwrap();
            let theirs = oracle.prove_inclusion(i as usize);
            assert_eq!(
                concat(&proof),
                theirs.as_bytes(),
                "inclusion proof ({i}, {n})"
            );
            verify_inclusion::<H>(&leaves[i as usize], i, n, &proof, &root).unwrap();
            let digests: Vec<_> = proof.iter().map(to_array::<D>).collect();
            oracle_root_hash
                .verify_inclusion(&entry(i), i, &InclusionProof::<D>::from_digests(&digests))
                .unwrap_or_else(|e| panic!("oracle rejects our proof ({i}, {n}): {e}"));
        }
    }
}

/// Every pair `1 <= m <= n <= max`.
fn consistency_pairs<H, D>(max: u64)
where
    H: TreeHasher,
    D: ct_merkle::digest::Digest,
{
    let mut oracle = MemoryBackedTree::<D, Vec<u8>>::new();
    let mut ours = MemoryTree::<H>::new();
    let mut roots = vec![H::empty_root()];
    for n in 1..=max {
        let e = entry(n - 1);
        ours.push(H::hash_leaf(&e));
        oracle.push(e);
        roots.push(ours.root());
        let new_root = oracle.root();
        for m in 1..=n {
            let proof = ours.consistency_proof(m, n).unwrap();
            let theirs = oracle.prove_consistency((n - m) as usize);
            assert_eq!(
                concat(&proof),
                theirs.as_bytes(),
                "consistency proof ({m}, {n})"
            );
            verify_consistency::<H>(m, n, &roots[m as usize], &roots[n as usize], &proof)
                .unwrap_or_else(|e| panic!("our verifier rejects ({m}, {n}): {e}"));
            let digests: Vec<_> = proof.iter().map(to_array::<D>).collect();
            let old = RootHash::<D>::new(to_array::<D>(&roots[m as usize]), m);
            new_root
                .verify_consistency(&old, &ConsistencyProof::<D>::from_digests(&digests))
                .unwrap_or_else(|e| panic!("oracle rejects our consistency proof ({m}, {n}): {e}"));
        }
        // m = 0: every tree extends the empty tree, with an empty proof.
        assert!(ours.consistency_proof(0, n).unwrap().is_empty());
        verify_consistency::<H>(0, n, &roots[0], &roots[n as usize], &[]).unwrap();
    }
}

#[test]
fn blake3_roots_and_inclusion_every_size_to_300() {
    roots_and_inclusion::<Blake3Hasher, B3>(300);
}

#[test]
fn blake3_consistency_every_pair_to_300() {
    consistency_pairs::<Blake3Hasher, B3>(300);
}

#[test]
fn sha256_agrees_with_oracle_to_100() {
    roots_and_inclusion::<Sha256Hasher, S256>(100);
    consistency_pairs::<Sha256Hasher, S256>(100);
}

/// RFC 6962 reference vectors (transparency-dev/merkle
/// `testonly/reference_test.go`, as also used by ct-merkle's known-answer tests).
#[test]
fn sha256_rfc6962_reference_vectors() {
    let leaves: Vec<Vec<u8>> = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
    .iter()
    .map(|h| unhex(h))
    .collect();
    let tree =
        MemoryTree::<Sha256Hasher>::from_leaves(leaves.iter().map(|l| Sha256Hasher::hash_leaf(l)));
    let inclusion: &[(u64, u64, &str)] = &[
        (0, 1, ""),
        (
            0,
            2,
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        ),
        (
            1,
            2,
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        ),
        (
            2,
            3,
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        ),
        (
            1,
            5,
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d\
             5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e\
             bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ),
        (
            0,
            8,
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7\
             5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e\
             6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ),
        (
            5,
            8,
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b\
             ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0\
             d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ];
    for &(i, n, want) in inclusion {
        let p = tree.inclusion_proof(i, n).unwrap();
        assert_eq!(concat(&p), unhex(want), "inclusion ({i}, {n})");
        let root = tree.root_at(n).unwrap();
        verify_inclusion::<Sha256Hasher>(
            &Sha256Hasher::hash_leaf(&leaves[i as usize]),
            i,
            n,
            &p,
            &root,
        )
        .unwrap();
    }
    let consistency: &[(u64, u64, &str)] = &[
        (1, 1, ""),
        (
            1,
            8,
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7\
             5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e\
             6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ),
        (
            2,
            5,
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e\
             bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ),
        (
            6,
            8,
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a\
             ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0\
             d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ];
    for &(m, n, want) in consistency {
        let p = tree.consistency_proof(m, n).unwrap();
        assert_eq!(concat(&p), unhex(want), "consistency ({m}, {n})");
        verify_consistency::<Sha256Hasher>(
            m,
            n,
            &tree.root_at(m).unwrap(),
            &tree.root_at(n).unwrap(),
            &p,
        )
        .unwrap();
    }
}

/// Flipping any bit of any proof hash, or changing the index, fails; both
/// verifiers agree.
#[test]
fn tampering_proof_or_index_fails() {
    let max = 70u64;
    let leaves: Vec<Hash> = (0..max)
        .map(|i| Blake3Hasher::hash_leaf(&entry(i)))
        .collect();
    let tree = MemoryTree::<Blake3Hasher>::from_leaves(leaves.iter().copied());
    for n in 1..=max {
        let root = tree.root_at(n).unwrap();
        let oracle_root = RootHash::<B3>::new(to_array::<B3>(&root), n);
        for i in 0..n {
            let p = tree.inclusion_proof(i, n).unwrap();
            for k in 0..p.len() {
                for bit in [0usize, 77, 255] {
                    let mut bad = p.clone();
                    bad[k][bit / 8] ^= 1 << (bit % 8);
                    assert!(verify_inclusion::<Blake3Hasher>(
                        &leaves[i as usize],
                        i,
                        n,
                        &bad,
                        &root
                    )
                    .is_err());
                    let digests: Vec<_> = bad.iter().map(to_array::<B3>).collect();
                    assert!(oracle_root
                        .verify_inclusion(
                            &entry(i),
                            i,
                            &InclusionProof::<B3>::from_digests(&digests)
                        )
                        .is_err());
                }
            }
            for j in 0..n {
                if j != i {
                    assert!(
                        verify_inclusion::<Blake3Hasher>(&leaves[i as usize], j, n, &p, &root)
                            .is_err(),
                        "leaf {i} accepted at index {j} in size {n}"
                    );
                }
            }
            // Another leaf with this proof.
            let other = Blake3Hasher::hash_leaf(b"not in the tree");
            assert!(verify_inclusion::<Blake3Hasher>(&other, i, n, &p, &root).is_err());
        }
        for m in 1..n {
            let p = tree.consistency_proof(m, n).unwrap();
            let old = tree.root_at(m).unwrap();
            for k in 0..p.len() {
                let mut bad = p.clone();
                bad[k][k % 32] ^= 0x10;
                assert!(verify_consistency::<Blake3Hasher>(m, n, &old, &root, &bad).is_err());
            }
            let mut bad_old = old;
            bad_old[0] ^= 1;
            assert!(verify_consistency::<Blake3Hasher>(m, n, &bad_old, &root, &p).is_err());
            let mut bad_new = root;
            bad_new[31] ^= 1;
            assert!(verify_consistency::<Blake3Hasher>(m, n, &old, &bad_new, &p).is_err());
        }
    }
}

/// A changed tree size makes verification fail whenever it changes the
/// verification path. RFC 9162 proofs do not bind the size by themselves
/// (e.g. leaf 0's proof in a tree of 3 folds exactly like one in a tree of 4,
/// so it verifies against the same root under either size):
/// the size is authenticated by the signed checkpoint, which is what DLog
/// receipts verify. Here we check that our verifier accepts a wrong size
/// exactly when the independent oracle does, and never for a size whose
/// proof has another length.
#[test]
fn size_tampering() {
    let max = 80u64;
    let leaves: Vec<Hash> = (0..max)
        .map(|i| Blake3Hasher::hash_leaf(&entry(i)))
        .collect();
    let tree = MemoryTree::<Blake3Hasher>::from_leaves(leaves.iter().copied());
    let mut accepted = 0;
    let mut rejected = 0;
    for n in 1..max {
        let root = tree.root_at(n).unwrap();
        for i in 0..n {
            let p = tree.inclusion_proof(i, n).unwrap();
            let digests: Vec<_> = p.iter().map(to_array::<B3>).collect();
            let oracle_proof = InclusionProof::<B3>::from_digests(&digests);
            for n2 in (i + 1)..=max {
                if n2 == n {
                    continue;
                }
                let ours =
                    verify_inclusion::<Blake3Hasher>(&leaves[i as usize], i, n2, &p, &root).is_ok();
                let theirs = RootHash::<B3>::new(to_array::<B3>(&root), n2)
                    .verify_inclusion(&entry(i), i, &oracle_proof)
                    .is_ok();
                assert_eq!(ours, theirs, "size {n} -> {n2}, index {i}");
                if inclusion_proof_len(i, n2) != p.len() {
                    assert!(!ours);
                }
                if ours {
                    accepted += 1;
                } else {
                    rejected += 1;
                }
            }
        }
        for m in 1..n {
            let p = tree.consistency_proof(m, n).unwrap();
            let old = tree.root_at(m).unwrap();
            for (m2, n2) in [(m + 1, n), (m, n + 1), (m - 1, n)] {
                if m2 == 0 || m2 > n2 || (m2, n2) == (m, n) {
                    continue;
                }
                let ours = verify_consistency::<Blake3Hasher>(m2, n2, &old, &root, &p).is_ok();
                let digests: Vec<_> = p.iter().map(to_array::<B3>).collect();
                let theirs = RootHash::<B3>::new(to_array::<B3>(&root), n2)
                    .verify_consistency(
                        &RootHash::<B3>::new(to_array::<B3>(&old), m2),
                        &ConsistencyProof::<B3>::from_digests(&digests),
                    )
                    .is_ok();
                assert_eq!(ours, theirs, "consistency ({m}, {n}) -> ({m2}, {n2})");
            }
        }
    }
    // About a third of the wrong sizes fold the same way (both verifiers
    // accept them against the original root): the size must come from the
    // signed checkpoint, never from the proof.
    eprintln!("size tampering: {accepted} same-path sizes accepted, {rejected} rejected");
    assert!(rejected > accepted && accepted > 0);
}

const BIG: u64 = 1_000_000;
const RECORDED: usize = 64;

/// One tree of 10^6 leaves (ours), and the oracle's roots at 64 random sizes
/// (plus 1, 2^k and 10^6), recorded while the oracle grew, with the oracle's
/// inclusion and consistency proofs for a few indices at each of those sizes.
struct Big {
    tree: MemoryTree<Blake3Hasher>,
    recorded: Vec<Recorded>,
}

struct Recorded {
    size: u64,
    root: Vec<u8>,
    /// (index, oracle inclusion proof bytes)
    inclusion: Vec<(u64, Vec<u8>)>,
    /// (old size, oracle consistency proof bytes)
    consistency: Vec<(u64, Vec<u8>)>,
}

fn big() -> &'static Big {
    static BIG_TREE: OnceLock<Big> = OnceLock::new();
    BIG_TREE.get_or_init(|| {
        let mut rng = SplitMix(0x646c_6f67);
        let mut sizes: Vec<u64> = (0..RECORDED).map(|_| rng.in_range(1, BIG)).collect();
        sizes.extend([1, 2, 3, 1 << 10, 1 << 19, (1 << 19) + 1, BIG]);
        sizes.sort_unstable();
        sizes.dedup();
        let mut oracle = MemoryBackedTree::<B3, Vec<u8>>::new();
        let mut tree = MemoryTree::<Blake3Hasher>::new();
        let mut recorded = Vec::new();
        let mut next = sizes.iter().peekable();
        for i in 0..BIG {
            let e = entry(i);
            tree.push(Blake3Hasher::hash_leaf(&e));
            oracle.push(e);
            let n = i + 1;
            if next.peek() == Some(&&n) {
                next.next();
                let pick = |rng: &mut SplitMix| rng.in_range(0, n - 1);
                let inclusion = (0..4)
                    .map(|_| {
                        let idx = pick(&mut rng);
                        (
                            idx,
                            oracle.prove_inclusion(idx as usize).as_bytes().to_vec(),
                        )
                    })
                    .chain([(
                        n - 1,
                        oracle.prove_inclusion((n - 1) as usize).as_bytes().to_vec(),
                    )])
                    .collect();
                let consistency = (0..4)
                    .map(|_| {
                        let m = pick(&mut rng) + 1;
                        (
                            m,
                            oracle
                                .prove_consistency((n - m) as usize)
                                .as_bytes()
                                .to_vec(),
                        )
                    })
                    .collect();
                recorded.push(Recorded {
                    size: n,
                    root: oracle_root(&oracle),
                    inclusion,
                    consistency,
                });
            }
        }
        Big { tree, recorded }
    })
}

/// SplitMix64: a tiny deterministic generator for the recorded sizes.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `lo..=hi`.
    fn in_range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

#[test]
fn big_tree_matches_oracle_at_recorded_sizes() {
    let b = big();
    assert!(b.recorded.len() >= RECORDED);
    for r in &b.recorded {
        let root = b.tree.root_at(r.size).unwrap();
        assert_eq!(root.to_vec(), r.root, "root of size {}", r.size);
        for (i, want) in &r.inclusion {
            assert_eq!(
                concat(&b.tree.inclusion_proof(*i, r.size).unwrap()),
                *want,
                "inclusion ({i}, {})",
                r.size
            );
        }
        for (m, want) in &r.consistency {
            assert_eq!(
                concat(&b.tree.consistency_proof(*m, r.size).unwrap()),
                *want,
                "consistency ({m}, {})",
                r.size
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Our proofs at arbitrary (index, size) up to 10^6 are accepted by the
    /// oracle's verifier, and a flipped bit is rejected by both.
    #[test]
    fn random_inclusion_to_a_million(n in 1..=BIG, i_frac in 0.0f64..1.0, bit in 0usize..256) {
        let b = big();
        let i = ((n as f64 * i_frac) as u64).min(n - 1);
        let root = b.tree.root_at(n).unwrap();
        let p = b.tree.inclusion_proof(i, n).unwrap();
        verify_inclusion::<Blake3Hasher>(&Blake3Hasher::hash_leaf(&entry(i)), i, n, &p, &root).unwrap();
        let digests: Vec<_> = p.iter().map(to_array::<B3>).collect();
        let oracle_root = RootHash::<B3>::new(to_array::<B3>(&root), n);
        prop_assert!(oracle_root.verify_inclusion(&entry(i), i, &InclusionProof::<B3>::from_digests(&digests)).is_ok());
        if !p.is_empty() {
            let mut bad = p.clone();
            let k = bit % bad.len();
            bad[k][bit / 8] ^= 1 << (bit % 8);
            prop_assert!(verify_inclusion::<Blake3Hasher>(&Blake3Hasher::hash_leaf(&entry(i)), i, n, &bad, &root).is_err());
            let digests: Vec<_> = bad.iter().map(to_array::<B3>).collect();
            prop_assert!(oracle_root.verify_inclusion(&entry(i), i, &InclusionProof::<B3>::from_digests(&digests)).is_err());
        }
        if n > 1 {
            let j = (i + 1) % n;
            prop_assert!(verify_inclusion::<Blake3Hasher>(&Blake3Hasher::hash_leaf(&entry(i)), j, n, &p, &root).is_err());
        }
    }

    /// Our consistency proofs between arbitrary sizes up to 10^6 are accepted
    /// by the oracle's verifier; a flipped bit is rejected by both.
    #[test]
    fn random_consistency_to_a_million(n in 1..=BIG, m_frac in 0.0f64..1.0, bit in 0usize..256) {
        let b = big();
        let m = ((n as f64 * m_frac) as u64).clamp(1, n);
        let new_root = b.tree.root_at(n).unwrap();
        let old_root = b.tree.root_at(m).unwrap();
        let p = b.tree.consistency_proof(m, n).unwrap();
        verify_consistency::<Blake3Hasher>(m, n, &old_root, &new_root, &p).unwrap();
        let digests: Vec<_> = p.iter().map(to_array::<B3>).collect();
        let new = RootHash::<B3>::new(to_array::<B3>(&new_root), n);
        let old = RootHash::<B3>::new(to_array::<B3>(&old_root), m);
        prop_assert!(new.verify_consistency(&old, &ConsistencyProof::<B3>::from_digests(&digests)).is_ok());
        if !p.is_empty() {
            let mut bad = p.clone();
            let k = bit % bad.len();
            bad[k][bit / 8] ^= 1 << (bit % 8);
            prop_assert!(verify_consistency::<Blake3Hasher>(m, n, &old_root, &new_root, &bad).is_err());
            let digests: Vec<_> = bad.iter().map(to_array::<B3>).collect();
            prop_assert!(new.verify_consistency(&old, &ConsistencyProof::<B3>::from_digests(&digests)).is_err());
        }
    }

    /// The verifiers never panic on arbitrary input.
    #[test]
    fn verifiers_never_panic(index: u64, size: u64, old: u64, proof in proptest::collection::vec(any::<[u8; 32]>(), 0..70), root: [u8; 32]) {
        let _ = verify_inclusion::<Blake3Hasher>(&root, index, size, &proof, &root);
        let _ = verify_consistency::<Blake3Hasher>(old, size, &root, &root, &proof);
        let _ = verify_inclusion::<Blake3Hasher>(&root, index % 1000, size % 1000, &proof, &root);
        let _ = verify_consistency::<Blake3Hasher>(old % 1000, size % 1000, &root, &root, &proof);
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}
