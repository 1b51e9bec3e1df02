//! RFC 9162 Merkle tree math, generic over the hash.
//!
//! Proof *generation* is split in two so that storage never has to rehash old
//! data: [`inclusion_path`] and [`consistency_path`] say *which* subtrees a
//! proof needs (pure index arithmetic), and the caller hashes each one with
//! [`hash_subtree`] from the perfect nodes it stores (a sealed segment's node
//! file, the in-memory tree of the open segment, ...). Proof *verification*
//! ([`verify_inclusion`], [`verify_consistency`]) follows RFC 9162 §2.1.3.2 and
//! §2.1.4.2 step by step.
//!
//! Node coordinates: the perfect node `(level, index)` covers the leaves
//! `[index · 2^level, (index + 1) · 2^level)`.

use crate::hash::{Blake3Hasher, Hash, HashAlg, Sha256Hasher, TreeHasher};
use std::marker::PhantomData;

/// Why a proof could not be built or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange {
        /// The requested leaf index.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// A consistency proof was asked for an old size larger than the new one.
    #[error("old tree size {old} is larger than new tree size {new}")]
    OldLargerThanNew {
        /// The old tree size.
        old: u64,
        /// The new tree size.
        new: u64,
    },
    /// The proof has the wrong number of hashes for this index and size.
    #[error("proof has {got} hashes, expected {expected}")]
    WrongLength {
        /// Hashes the proof should have.
        expected: usize,
        /// Hashes the proof has.
        got: usize,
    },
    /// The proof hashes do not lead to the expected root.
    #[error("computed root does not match the expected root")]
    RootMismatch,
    /// The consistency proof does not reproduce the old root.
    #[error("consistency proof does not reproduce the old root")]
    OldRootMismatch,
    /// The consistency proof does not reproduce the new root.
    #[error("consistency proof does not reproduce the new root")]
    NewRootMismatch,
}

/// A contiguous range of leaves `[start, end)` whose RFC 9162 subtree hash a
/// proof needs. Proof subtrees always start at a multiple of a power of two at
/// least as large as their length, so they decompose into perfect nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subtree {
    /// First leaf of the range.
    pub start: u64,
    /// One past the last leaf of the range.
    pub end: u64,
}

impl Subtree {
    /// Number of leaves in the subtree.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// True when the range holds no leaf (never the case for proof subtrees).
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// If the subtree is one perfect node, its `(level, index)`.
    pub fn as_perfect(&self) -> Option<(u32, u64)> {
        let len = self.len();
        if len.is_power_of_two() && self.start.is_multiple_of(len) {
            let level = len.trailing_zeros();
            Some((level, self.start >> level))
        } else {
            None
        }
    }

    /// The perfect nodes `(level, index)` making up the subtree, left to right,
    /// largest first. The subtree hash is their right fold:
    /// `H(p1, H(p2, … H(p(k-1), pk)))`.
    pub fn perfect_parts(&self) -> impl Iterator<Item = (u32, u64)> {
        let mut start = self.start;
        let mut remaining = self.len();
        std::iter::from_fn(move || {
            if remaining == 0 {
                return None;
            }
            let level = 63 - remaining.leading_zeros();
            let size = 1u64 << level;
            let node = (level, start >> level);
            start += size;
            remaining -= size;
            Some(node)
        })
    }
}

/// Largest power of two strictly smaller than `n` (`n >= 2`).
#[inline]
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The subtrees whose hashes form the inclusion proof of leaf `index` in a
/// tree of `size` leaves (RFC 9162 §2.1.3.1), leaf's sibling first.
pub fn inclusion_path(index: u64, size: u64) -> Result<Vec<Subtree>, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut path = Vec::with_capacity(64);
    let (mut lo, mut hi, m) = (0u64, size, index);
    while hi - lo > 1 {
        let k = split_point(hi - lo);
        if m < lo + k {
            path.push(Subtree {
                start: lo + k,
                end: hi,
            });
            hi = lo + k;
        } else {
            path.push(Subtree {
                start: lo,
                end: lo + k,
            });
            lo += k;
        }
    }
    path.reverse();
    Ok(path)
}

/// The subtrees whose hashes form the consistency proof between tree sizes
/// `old` and `new` (RFC 9162 §2.1.4.1). Empty when `old == 0` or `old == new`.
pub fn consistency_path(old: u64, new: u64) -> Result<Vec<Subtree>, ProofError> {
    if old > new {
        return Err(ProofError::OldLargerThanNew { old, new });
    }
    let mut path = Vec::with_capacity(64);
    if old == 0 || old == new {
        return Ok(path);
    }
    // SUBPROOF(m, D[lo:hi], b), unrolled.
    let (mut lo, mut hi, mut m, mut complete) = (0u64, new, old, true);
    loop {
        let n = hi - lo;
        if m == n {
            if !complete {
                path.push(Subtree { start: lo, end: hi });
            }
            break;
        }
        let k = split_point(n);
        if m <= k {
            path.push(Subtree {
                start: lo + k,
                end: hi,
            });
            hi = lo + k;
        } else {
            path.push(Subtree {
                start: lo,
                end: lo + k,
            });
            lo += k;
            m -= k;
            complete = false;
        }
    }
    path.reverse();
    Ok(path)
}

/// Hash of a proof subtree, folded from the perfect nodes that `node` returns.
pub fn hash_subtree<H: TreeHasher, E>(
    subtree: Subtree,
    mut node: impl FnMut(u32, u64) -> Result<Hash, E>,
) -> Result<Hash, E> {
    if subtree.is_empty() {
        return Ok(H::empty_root());
    }
    let parts: Vec<(u32, u64)> = subtree.perfect_parts().collect();
    let mut iter = parts.iter().rev();
    let &(level, index) = iter.next().expect("non-empty subtree has a part");
    let mut acc = node(level, index)?;
    for &(level, index) in iter {
        acc = H::hash_children(&node(level, index)?, &acc);
    }
    Ok(acc)
}

/// Hashes every subtree of a proof path with [`hash_subtree`].
pub fn hash_path<H: TreeHasher, E>(
    path: &[Subtree],
    mut node: impl FnMut(u32, u64) -> Result<Hash, E>,
) -> Result<Vec<Hash>, E> {
    path.iter()
        .map(|&st| hash_subtree::<H, E>(st, &mut node))
        .collect()
}

/// Verifies an inclusion proof (RFC 9162 §2.1.3.2).
pub fn verify_inclusion<H: TreeHasher>(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let expected = inclusion_proof_len(index, size);
    if proof.len() != expected {
        return Err(ProofError::WrongLength {
            expected,
            got: proof.len(),
        });
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf_hash;
    for p in proof {
        if snode == 0 {
            return Err(ProofError::WrongLength {
                expected,
                got: proof.len(),
            });
        }
        if fnode & 1 == 1 || fnode == snode {
            r = H::hash_children(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = H::hash_children(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongLength {
            expected,
            got: proof.len(),
        });
    }
    if &r == root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// Verifies a consistency proof (RFC 9162 §2.1.4.2).
///
/// `old == new` needs an empty proof and equal roots; `old == 0` needs an
/// empty proof (every tree extends the empty tree).
pub fn verify_consistency<H: TreeHasher>(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old > new {
        return Err(ProofError::OldLargerThanNew { old, new });
    }
    let expected = consistency_proof_len(old, new);
    if proof.len() != expected {
        return Err(ProofError::WrongLength {
            expected,
            got: proof.len(),
        });
    }
    if old == 0 {
        return if *old_root == H::empty_root() {
            Ok(())
        } else {
            Err(ProofError::OldRootMismatch)
        };
    }
    if old == new {
        return if old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::NewRootMismatch)
        };
    }
    // Step 2: prepend the old root when `old` is a power of two.
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let (mut fnode, mut snode) = (old - 1, new - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let mut fr = path[0];
    let mut sr = path[0];
    for c in &path[1..] {
        if snode == 0 {
            return Err(ProofError::WrongLength {
                expected,
                got: proof.len(),
            });
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = H::hash_children(c, &fr);
            sr = H::hash_children(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = H::hash_children(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongLength {
            expected,
            got: proof.len(),
        });
    }
    if &fr != old_root {
        return Err(ProofError::OldRootMismatch);
    }
    if &sr != new_root {
        return Err(ProofError::NewRootMismatch);
    }
    Ok(())
}

/// Number of hashes in the inclusion proof of `index` in a tree of `size`.
pub fn inclusion_proof_len(index: u64, size: u64) -> usize {
    if index >= size {
        return 0;
    }
    // Full levels shared by index and the last leaf, plus the levels below
    // where they diverge, minus the levels skipped on the right edge.
    let (mut lo, mut hi, mut len) = (0u64, size, 0usize);
    while hi - lo > 1 {
        let k = split_point(hi - lo);
        if index < lo + k {
            hi = lo + k;
        } else {
            lo += k;
        }
        len += 1;
    }
    len
}

/// Number of hashes in the consistency proof from `old` to `new`.
pub fn consistency_proof_len(old: u64, new: u64) -> usize {
    consistency_path(old, new).map(|p| p.len()).unwrap_or(0)
}

/// A Merkle tree held in memory as all of its perfect nodes, level by level.
///
/// Appending a leaf costs amortised O(1) hashes; any root, inclusion proof or
/// consistency proof up to the current size is computed from stored nodes.
/// DLog uses it for the open segment and for the tree of sealed segment roots;
/// tests use it as a reference.
#[derive(Debug, Clone)]
pub struct MemoryTree<H> {
    levels: Vec<Vec<Hash>>,
    _hasher: PhantomData<H>,
}

impl<H: TreeHasher> Default for MemoryTree<H> {
    fn default() -> Self {
        Self::new()
    }
}

impl<H: TreeHasher> MemoryTree<H> {
    /// An empty tree.
    pub fn new() -> Self {
        Self {
            levels: vec![Vec::new()],
            _hasher: PhantomData,
        }
    }

    /// A tree over the given leaf hashes.
    pub fn from_leaves(leaves: impl IntoIterator<Item = Hash>) -> Self {
        let mut t = Self::new();
        for l in leaves {
            t.push(l);
        }
        t
    }

    /// Number of leaves.
    pub fn len(&self) -> u64 {
        self.levels[0].len() as u64
    }

    /// True when the tree has no leaves.
    pub fn is_empty(&self) -> bool {
        self.levels[0].is_empty()
    }

    /// Appends a leaf hash, completing every perfect node it closes.
    pub fn push(&mut self, leaf: Hash) {
        self.levels[0].push(leaf);
        let mut level = 0;
        while self.levels[level].len().is_multiple_of(2) {
            let n = self.levels[level].len();
            let parent = H::hash_children(&self.levels[level][n - 2], &self.levels[level][n - 1]);
            if self.levels.len() == level + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[level + 1].push(parent);
            level += 1;
        }
    }

    /// Removes leaves so that `size` remain (used when a torn tail is cut).
    pub fn truncate(&mut self, size: u64) {
        for (level, nodes) in self.levels.iter_mut().enumerate() {
            nodes.truncate((size >> level) as usize);
        }
        while self.levels.len() > 1 && self.levels.last().is_some_and(|l| l.is_empty()) {
            self.levels.pop();
        }
    }

    /// The perfect node `(level, index)`, if it is complete.
    pub fn node(&self, level: u32, index: u64) -> Option<Hash> {
        self.levels
            .get(level as usize)
            .and_then(|l| l.get(usize::try_from(index).ok()?))
            .copied()
    }

    /// The leaf hashes.
    pub fn leaves(&self) -> &[Hash] {
        &self.levels[0]
    }

    /// Every complete perfect node of `level`, left to right (empty past the
    /// top).
    pub fn level(&self, level: u32) -> &[Hash] {
        self.levels.get(level as usize).map_or(&[], Vec::as_slice)
    }

    /// Root of the whole tree.
    pub fn root(&self) -> Hash {
        self.root_at(self.len()).expect("current size is in range")
    }

    /// Root of the tree made of the first `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Hash, ProofError> {
        if size > self.len() {
            return Err(ProofError::IndexOutOfRange {
                index: size,
                size: self.len(),
            });
        }
        hash_subtree::<H, ProofError>(
            Subtree {
                start: 0,
                end: size,
            },
            |l, i| self.must_node(l, i),
        )
    }

    /// Inclusion proof of leaf `index` in the tree of the first `size` leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        self.check_size(size)?;
        let path = inclusion_path(index, size)?;
        hash_path::<H, ProofError>(&path, |l, i| self.must_node(l, i))
    }

    /// Consistency proof between the first `old` and the first `new` leaves.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, ProofError> {
        self.check_size(new)?;
        let path = consistency_path(old, new)?;
        hash_path::<H, ProofError>(&path, |l, i| self.must_node(l, i))
    }

    fn check_size(&self, size: u64) -> Result<(), ProofError> {
        if size > self.len() {
            Err(ProofError::IndexOutOfRange {
                index: size,
                size: self.len(),
            })
        } else {
            Ok(())
        }
    }

    fn must_node(&self, level: u32, index: u64) -> Result<Hash, ProofError> {
        self.node(level, index).ok_or(ProofError::IndexOutOfRange {
            index: index << level,
            size: self.len(),
        })
    }
}

/// Root of the RFC 9162 tree over `leaves`, by the definition (recursive);
/// a reference for tests.
pub fn root_from_leaves<H: TreeHasher>(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => H::empty_root(),
        1 => leaves[0],
        n => {
            let k = split_point(n as u64) as usize;
            H::hash_children(
                &root_from_leaves::<H>(&leaves[..k]),
                &root_from_leaves::<H>(&leaves[k..]),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::{Blake3Hasher, Sha256Hasher};

    fn leaves<H: TreeHasher>(n: u64) -> Vec<Hash> {
        (0..n).map(|i| H::hash_leaf(&i.to_be_bytes())).collect()
    }

    #[test]
    fn rfc6962_reference_roots() {
        // Leaves and roots from RFC 6962 / certificate-transparency test data.
        let data: [&[u8]; 8] = [
            b"",
            &[0x00],
            &[0x10],
            &[0x20, 0x21],
            &[0x30, 0x31],
            &[0x40, 0x41, 0x42, 0x43],
            &[0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57],
            &[
                0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d,
                0x6e, 0x6f,
            ],
        ];
        let roots = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        let hashes: Vec<Hash> = data.iter().map(|d| Sha256Hasher::hash_leaf(d)).collect();
        let mut tree = MemoryTree::<Sha256Hasher>::new();
        for (i, h) in hashes.iter().enumerate() {
            tree.push(*h);
            assert_eq!(hex(&tree.root()), roots[i], "root of size {}", i + 1);
            assert_eq!(tree.root(), root_from_leaves::<Sha256Hasher>(&hashes[..=i]));
        }
    }

    #[test]
    fn every_proof_verifies_small_sizes() {
        for n in 1..=64u64 {
            let ls = leaves::<Blake3Hasher>(n);
            let tree = MemoryTree::<Blake3Hasher>::from_leaves(ls.iter().copied());
            for size in 1..=n {
                let root = tree.root_at(size).unwrap();
                assert_eq!(root, root_from_leaves::<Blake3Hasher>(&ls[..size as usize]));
                for i in 0..size {
                    let p = tree.inclusion_proof(i, size).unwrap();
                    assert_eq!(p.len(), inclusion_proof_len(i, size));
                    verify_inclusion::<Blake3Hasher>(&ls[i as usize], i, size, &p, &root).unwrap();
                }
                for old in 0..=size {
                    let p = tree.consistency_proof(old, size).unwrap();
                    let old_root = tree.root_at(old).unwrap();
                    verify_consistency::<Blake3Hasher>(old, size, &old_root, &root, &p).unwrap();
                }
            }
        }
    }

    #[test]
    fn tampering_fails() {
        let ls = leaves::<Blake3Hasher>(37);
        let tree = MemoryTree::<Blake3Hasher>::from_leaves(ls.iter().copied());
        let root = tree.root();
        let p = tree.inclusion_proof(13, 37).unwrap();
        for j in 0..p.len() {
            let mut bad = p.clone();
            bad[j][0] ^= 1;
            assert!(verify_inclusion::<Blake3Hasher>(&ls[13], 13, 37, &bad, &root).is_err());
        }
        assert!(verify_inclusion::<Blake3Hasher>(&ls[13], 12, 37, &p, &root).is_err());
        // A size whose tree has another shape changes the proof length.
        assert!(verify_inclusion::<Blake3Hasher>(&ls[13], 13, 32, &p, &root).is_err());
        let c = tree.consistency_proof(11, 37).unwrap();
        let old_root = tree.root_at(11).unwrap();
        for j in 0..c.len() {
            let mut bad = c.clone();
            bad[j][31] ^= 0x80;
            assert!(verify_consistency::<Blake3Hasher>(11, 37, &old_root, &root, &bad).is_err());
        }
        assert!(verify_consistency::<Blake3Hasher>(12, 37, &old_root, &root, &c).is_err());
    }

    #[test]
    fn truncate_matches_rebuild() {
        let ls = leaves::<Blake3Hasher>(100);
        let mut tree = MemoryTree::<Blake3Hasher>::from_leaves(ls.iter().copied());
        for size in (0..100).rev() {
            tree.truncate(size);
            let fresh =
                MemoryTree::<Blake3Hasher>::from_leaves(ls[..size as usize].iter().copied());
            assert_eq!(tree.root(), fresh.root());
            assert_eq!(tree.len(), size);
        }
    }

    fn hex(h: &Hash) -> String {
        h.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A [`MemoryTree`] whose hash is chosen at run time ([`HashAlg`]).
#[derive(Debug, Clone)]
pub enum AlgTree {
    /// BLAKE3.
    Blake3(MemoryTree<Blake3Hasher>),
    /// SHA-256.
    Sha256(MemoryTree<Sha256Hasher>),
}

macro_rules! each_tree {
    ($self:expr, $t:ident => $e:expr) => {
        match $self {
            AlgTree::Blake3($t) => $e,
            AlgTree::Sha256($t) => $e,
        }
    };
}

impl AlgTree {
    /// An empty tree hashing with `alg`.
    pub fn new(alg: HashAlg) -> AlgTree {
        match alg {
            HashAlg::Blake3 => AlgTree::Blake3(MemoryTree::new()),
            HashAlg::Sha256 => AlgTree::Sha256(MemoryTree::new()),
        }
    }

    /// A tree over the given leaf hashes.
    pub fn from_leaves(alg: HashAlg, leaves: impl IntoIterator<Item = Hash>) -> AlgTree {
        let mut t = AlgTree::new(alg);
        for l in leaves {
            t.push(l);
        }
        t
    }

    /// The tree's hash.
    pub fn alg(&self) -> HashAlg {
        match self {
            AlgTree::Blake3(_) => HashAlg::Blake3,
            AlgTree::Sha256(_) => HashAlg::Sha256,
        }
    }

    /// Number of leaves.
    pub fn len(&self) -> u64 {
        each_tree!(self, t => t.len())
    }

    /// True when the tree has no leaves.
    pub fn is_empty(&self) -> bool {
        each_tree!(self, t => t.is_empty())
    }

    /// See [`MemoryTree::push`].
    pub fn push(&mut self, leaf: Hash) {
        each_tree!(self, t => t.push(leaf))
    }

    /// See [`MemoryTree::truncate`].
    pub fn truncate(&mut self, size: u64) {
        each_tree!(self, t => t.truncate(size))
    }

    /// See [`MemoryTree::node`].
    pub fn node(&self, level: u32, index: u64) -> Option<Hash> {
        each_tree!(self, t => t.node(level, index))
    }

    /// See [`MemoryTree::leaves`].
    pub fn leaves(&self) -> &[Hash] {
        each_tree!(self, t => t.leaves())
    }

    /// See [`MemoryTree::level`].
    pub fn level(&self, level: u32) -> &[Hash] {
        each_tree!(self, t => t.level(level))
    }

    /// See [`MemoryTree::root`].
    pub fn root(&self) -> Hash {
        each_tree!(self, t => t.root())
    }

    /// See [`MemoryTree::root_at`].
    pub fn root_at(&self, size: u64) -> Result<Hash, ProofError> {
        each_tree!(self, t => t.root_at(size))
    }

    /// See [`MemoryTree::inclusion_proof`].
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        each_tree!(self, t => t.inclusion_proof(index, size))
    }

    /// See [`MemoryTree::consistency_proof`].
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, ProofError> {
        each_tree!(self, t => t.consistency_proof(old, new))
    }
}

/// [`hash_subtree`] with the hash chosen at run time.
pub fn hash_subtree_with<E>(
    alg: HashAlg,
    subtree: Subtree,
    node: impl FnMut(u32, u64) -> Result<Hash, E>,
) -> Result<Hash, E> {
    match alg {
        HashAlg::Blake3 => hash_subtree::<Blake3Hasher, E>(subtree, node),
        HashAlg::Sha256 => hash_subtree::<Sha256Hasher, E>(subtree, node),
    }
}

/// [`hash_path`] with the hash chosen at run time.
pub fn hash_path_with<E>(
    alg: HashAlg,
    path: &[Subtree],
    node: impl FnMut(u32, u64) -> Result<Hash, E>,
) -> Result<Vec<Hash>, E> {
    match alg {
        HashAlg::Blake3 => hash_path::<Blake3Hasher, E>(path, node),
        HashAlg::Sha256 => hash_path::<Sha256Hasher, E>(path, node),
    }
}

/// [`verify_inclusion`] with the hash chosen at run time.
pub fn verify_inclusion_with(
    alg: HashAlg,
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    match alg {
        HashAlg::Blake3 => verify_inclusion::<Blake3Hasher>(leaf_hash, index, size, proof, root),
        HashAlg::Sha256 => verify_inclusion::<Sha256Hasher>(leaf_hash, index, size, proof, root),
    }
}

/// [`verify_consistency`] with the hash chosen at run time.
pub fn verify_consistency_with(
    alg: HashAlg,
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    match alg {
        HashAlg::Blake3 => verify_consistency::<Blake3Hasher>(old, new, old_root, new_root, proof),
        HashAlg::Sha256 => verify_consistency::<Sha256Hasher>(old, new, old_root, new_root, proof),
    }
}
