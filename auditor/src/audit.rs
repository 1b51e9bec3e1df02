//! What an auditor checks, with no IO: entries in, verdicts out.
//!
//! The auditor keeps the *frontier* of the log's Merkle tree: the roots of
//! the perfect subtrees that make up the first `size` leaves (one per set bit
//! of `size`, largest first). That is enough to append leaves and to compute
//! the RFC 9162 root at `size`, so an auditor that has checked a billion
//! entries holds 30 hashes, not the log.
//!
//! A round goes: [`Auditor::begin`] a [`Pending`] extension, [`Pending::push`]
//! every entry as served (each is decoded strictly, its timestamp must not go
//! backwards, its leaf hash is computed here), then [`Auditor::commit`] it
//! against a checkpoint signed by the trust file's voter quorum: either the
//! checkpoint has the pending size and must have the same root, or it is
//! larger and a consistency proof must link the pending root to it. Only a
//! committed extension changes the auditor. A checkpoint the auditor cosigns
//! is one it proved to be a prefix of (or equal to) its own verified tree, so
//! every two checkpoints it cosigns are consistent with each other.

use dlog_crypto::hash::{Hash, HashAlg};
use dlog_crypto::note::{Cosigner, NoteSignature, SignedNote};
use dlog_crypto::tree::verify_consistency_with;
use dlog_crypto::trust::TrustPolicy;

/// The roots of the perfect subtrees covering the first `size` leaves.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
    /// The tree's hash (the trust file's; see [`Auditor::new`]).
    alg: HashAlg,
}

impl Frontier {
    /// The empty tree.
    pub fn new() -> Self {
        Frontier::default()
    }

    /// A frontier from stored parts; `None` unless there is exactly one
    /// node per set bit of `size`.
    pub fn from_parts(size: u64, nodes: Vec<Hash>) -> Option<Self> {
        (nodes.len() == size.count_ones() as usize).then_some(Frontier {
            size,
            nodes,
            alg: HashAlg::default(),
        })
    }

    /// Leaves covered.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The subtree roots, largest (leftmost) first.
    pub fn nodes(&self) -> &[Hash] {
        &self.nodes
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut h = leaf;
        let mut s = self.size;
        // Each trailing one bit of the old size is a subtree of the same
        // height as the one being carried: merge them, as in binary addition.
        while s & 1 == 1 {
            let left = self.nodes.pop().expect("one node per set bit");
            h = self.alg.hash_children(&left, &h);
            s >>= 1;
        }
        self.nodes.push(h);
        self.size += 1;
    }

    /// The RFC 9162 root at `size`: the subtrees folded from the right.
    pub fn root(&self) -> Hash {
        let mut it = self.nodes.iter().rev();
        let Some(last) = it.next() else {
            return self.alg.empty_root();
        };
        it.fold(*last, |acc, left| self.alg.hash_children(left, &acc))
    }
}

/// Why the auditor refused something. The variants marked *evidence* mean
/// the log itself (not one replica's copy or the network) is at fault when
/// every replica serves the same data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// An entry is not canonical entry bytes of this log.
    #[error("entry {index}: {detail}")]
    BadEntry {
        /// Leaf index.
        index: u64,
        /// What is wrong.
        detail: String,
    },
    /// An entry's payload is over the payload limit this auditor was given
    /// (`max_payload` in auditor.toml; it must match the log's).
    #[error("entry {index}: payload of {len} bytes is over the limit of {max} (auditor.toml: max_payload)")]
    TooLarge {
        /// Leaf index.
        index: u64,
        /// Payload length.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// An entry's timestamp is before the previous entry's (DESIGN §2).
    #[error("entry {index}: timestamp {timestamp_ns} ns is before the previous entry's {previous_ns} ns")]
    TimeBackwards {
        /// Leaf index.
        index: u64,
        /// Its timestamp.
        timestamp_ns: u64,
        /// The previous entry's.
        previous_ns: u64,
    },
    /// The checkpoint does not pass the trust file (signatures, origin).
    #[error("checkpoint not accepted by the trust file: {0}")]
    Untrusted(String),
    /// Evidence: a validly signed checkpoint whose root is not the root of
    /// the entries served for it.
    #[error("the checkpoint of size {size} signed by the voters has root {signed}, but the entries give {computed}")]
    RootMismatch {
        /// Tree size.
        size: u64,
        /// Root in the checkpoint (base64).
        signed: String,
        /// Root of the entries (base64).
        computed: String,
    },
    /// Evidence: a validly signed checkpoint that is not consistent with
    /// the tree the auditor verified.
    #[error("the checkpoint of size {size} is not consistent with the verified tree of size {verified}: {detail}")]
    Inconsistent {
        /// Its size.
        size: u64,
        /// The auditor's verified size.
        verified: u64,
        /// What failed.
        detail: String,
    },
    /// The checkpoint is smaller than the pending extension (not a
    /// verdict on the log: ask for a newer checkpoint).
    #[error("the checkpoint covers {size} entries, fewer than the {pending} fetched")]
    Behind {
        /// Its size.
        size: u64,
        /// Entries fetched.
        pending: u64,
    },
    /// The checkpoint is larger than the verified tree (not a verdict:
    /// verify more entries first).
    #[error("the checkpoint covers {size} entries; {verified} are verified")]
    Ahead {
        /// Its size.
        size: u64,
        /// Entries verified.
        verified: u64,
    },
}

impl AuditError {
    /// Whether this is evidence against the log as signed (a root or
    /// consistency failure under valid voter signatures), as opposed to a
    /// bad copy, a bad answer or a stale one.
    pub fn is_evidence(&self) -> bool {
        matches!(
            self,
            AuditError::RootMismatch { .. } | AuditError::Inconsistent { .. }
        )
    }
}

fn b64(h: &Hash) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(h)
}

/// The auditor's verified state: the frontier of every entry it checked and
/// the last entry's timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auditor {
    voters: TrustPolicy,
    max_payload: u32,
    tree: Frontier,
    last_timestamp_ns: u64,
}

/// An extension of the verified tree, not yet checked against a checkpoint.
#[derive(Debug, Clone)]
pub struct Pending {
    tree: Frontier,
    last_timestamp_ns: u64,
    max_payload: u32,
}

/// A checkpoint the auditor proved to be (a prefix of) its verified tree:
/// the only thing it cosigns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witnessable {
    body: String,
    size: u64,
    /// The note's lines that verify under a trust-file key, one per key.
    lines: Vec<NoteSignature>,
}

impl Witnessable {
    /// Its tree size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The checkpoint's body (the text cosignatures sign).
    pub fn body(&self) -> &str {
        &self.body
    }

    /// The checkpoint with the lines that verified under the trust file
    /// (the log's voter signatures, and any valid cosignatures), as an
    /// external witness is sent it.
    pub fn note(&self) -> String {
        SignedNote {
            text: self.body.clone(),
            signatures: self.lines.clone(),
        }
        .to_string()
    }

    /// The checkpoint with the lines that verified under the trust file
    /// (no padding a node may have added) and `cosigner`'s cosignature at
    /// `unix_seconds` (any earlier line of the same name is dropped).
    pub fn cosign(&self, cosigner: &Cosigner, unix_seconds: u64) -> String {
        let mut n = SignedNote {
            text: self.body.clone(),
            signatures: self
                .lines
                .iter()
                .filter(|s| s.name != cosigner.name())
                .cloned()
                .collect(),
        };
        n.add_signature(cosigner.cosign(&self.body, unix_seconds));
        n.to_string()
    }
}

impl Auditor {
    /// An auditor of the log `trust` describes, resuming at `tree` whose last
    /// entry had `last_timestamp_ns`. Only the voter quorum of `trust`
    /// matters here: the auditor is one of the cosigners.
    pub fn new(
        trust: &TrustPolicy,
        max_payload: u32,
        tree: Frontier,
        last_timestamp_ns: u64,
    ) -> Self {
        let mut voters = trust.clone();
        voters.cosignatures = 0;
        // The tree hashes as the trust file says (stored frontiers carry
        // only sizes and hashes).
        let mut tree = tree;
        tree.alg = trust.hash;
        Auditor {
            voters,
            max_payload,
            tree,
            last_timestamp_ns,
        }
    }

    /// The verified tree.
    pub fn tree(&self) -> &Frontier {
        &self.tree
    }

    /// Entries verified.
    pub fn size(&self) -> u64 {
        self.tree.size()
    }

    /// The last verified entry's timestamp (0 for none).
    pub fn last_timestamp_ns(&self) -> u64 {
        self.last_timestamp_ns
    }

    /// Starts an extension at the verified size.
    pub fn begin(&self) -> Pending {
        Pending {
            tree: self.tree.clone(),
            last_timestamp_ns: self.last_timestamp_ns,
            max_payload: self.max_payload,
        }
    }

    /// Whether `note` passes the voter quorum and carries a valid
    /// cosignature under `name` (any of that name's trust-file keys).
    pub fn cosigned_by(&self, note: &str, name: &str) -> bool {
        self.voters
            .verify_checkpoint(note)
            .is_ok_and(|v| v.cosignatures().iter().any(|(n, _)| n == name))
    }

    /// The size of a checkpoint signed by the trust file's voter quorum.
    pub fn signed_size(&self, note: &str) -> Result<u64, AuditError> {
        Ok(self.verify_note(note)?.0.size)
    }

    fn verify_note(
        &self,
        note: &str,
    ) -> Result<(dlog_crypto::note::Checkpoint, String, Vec<NoteSignature>), AuditError> {
        let v = self
            .voters
            .verify_checkpoint(note)
            .map_err(|e| AuditError::Untrusted(e.to_string()))?;
        let body = v.body().to_string();
        let parsed = SignedNote::parse(note).map_err(|e| AuditError::Untrusted(e.to_string()))?;
        // It verified as a whole: every line under a trust-file key is valid.
        let mut seen = std::collections::HashSet::new();
        let lines = parsed
            .signatures
            .into_iter()
            .filter(|s| {
                let known = self
                    .voters
                    .voters
                    .iter()
                    .any(|k| k.name() == s.name && k.key_id() == s.key_id)
                    || self
                        .voters
                        .auditors
                        .iter()
                        .any(|k| k.name() == s.name && k.key_id() == s.key_id);
                known && seen.insert((s.name.clone(), s.key_id))
            })
            .collect();
        Ok((v.checkpoint().clone(), body, lines))
    }

    /// Checks `pending` against a voter-signed checkpoint and, if it holds,
    /// makes it the verified tree. A checkpoint of the pending size must
    /// have its root; a larger one needs `proof`, a consistency proof from
    /// the pending size to its size. Returns the checkpoint when it covers
    /// exactly the new verified tree (it can be cosigned).
    pub fn commit(
        &mut self,
        pending: Pending,
        note: &str,
        proof: &[Hash],
    ) -> Result<Option<Witnessable>, AuditError> {
        let (cp, body, lines) = self.verify_note(note)?;
        let ours = pending.tree.root();
        let size = pending.tree.size();
        if cp.size < size {
            return Err(AuditError::Behind {
                size: cp.size,
                pending: size,
            });
        }
        if cp.size == size {
            if cp.root != ours {
                return Err(AuditError::RootMismatch {
                    size,
                    signed: b64(&cp.root),
                    computed: b64(&ours),
                });
            }
        } else if let Err(e) =
            verify_consistency_with(pending.tree.alg, size, cp.size, &ours, &cp.root, proof)
        {
            // The entries are a prefix of no tree with this root.
            return Err(AuditError::RootMismatch {
                size,
                signed: format!("(size {} root {}: {e})", cp.size, b64(&cp.root)),
                computed: b64(&ours),
            });
        }
        self.tree = pending.tree;
        self.last_timestamp_ns = pending.last_timestamp_ns;
        Ok((cp.size == size).then_some(Witnessable { body, size, lines }))
    }

    /// Checks a voter-signed checkpoint no larger than the verified tree:
    /// `proof` is a consistency proof from its size to the verified size.
    /// This is how a checkpoint others cosigned, or an older one a lagging
    /// replica serves, is checked: a fork shows up here.
    pub fn check_older(&self, note: &str, proof: &[Hash]) -> Result<Witnessable, AuditError> {
        let (cp, body, lines) = self.verify_note(note)?;
        let size = self.tree.size();
        if cp.size > size {
            return Err(AuditError::Ahead {
                size: cp.size,
                verified: size,
            });
        }
        verify_consistency_with(
            self.tree.alg,
            cp.size,
            size,
            &cp.root,
            &self.tree.root(),
            proof,
        )
        .map_err(|e| AuditError::Inconsistent {
            size: cp.size,
            verified: size,
            detail: e.to_string(),
        })?;
        Ok(Witnessable {
            body,
            size: cp.size,
            lines,
        })
    }
}

impl Pending {
    /// Entries covered (verified plus pushed).
    pub fn size(&self) -> u64 {
        self.tree.size()
    }

    /// The root over every entry covered.
    pub fn root(&self) -> Hash {
        self.tree.root()
    }

    /// Checks one entry as served and adds its leaf.
    pub fn push(&mut self, entry: &[u8]) -> Result<(), AuditError> {
        let index = self.tree.size();
        let bad = |detail: String| AuditError::BadEntry { index, detail };
        let (_, timestamp_ns, payload) =
            dlog_ledger::entry::decode_ref(entry).map_err(|e| bad(e.to_string()))?;
        if payload.len() > self.max_payload as usize {
            return Err(AuditError::TooLarge {
                index,
                len: payload.len(),
                max: self.max_payload,
            });
        }
        if timestamp_ns < self.last_timestamp_ns {
            return Err(AuditError::TimeBackwards {
                index,
                timestamp_ns,
                previous_ns: self.last_timestamp_ns,
            });
        }
        self.last_timestamp_ns = timestamp_ns;
        let leaf = self.tree.alg.hash_leaf(entry);
        self.tree.push(leaf);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dlog_crypto::hash::{Blake3Hasher, Sha256Hasher, TreeHasher};
    use dlog_crypto::note::{Checkpoint, NoteSigner};
    use dlog_crypto::tree::MemoryTree;
    use dlog_ledger::{Entry, EntryKind};
    use ed25519_dalek::SigningKey;
    use proptest::prelude::*;

    fn voter(i: u8) -> NoteSigner {
        NoteSigner::new(format!("node-{i}"), SigningKey::from_bytes(&[i; 32])).unwrap()
    }
    fn trust() -> TrustPolicy {
        TrustPolicy::new(
            "dlog/t",
            (1..=3).map(|i| voter(i).verifier()).collect(),
            2,
            vec![],
            0,
        )
        .unwrap()
    }
    fn entry(i: u64) -> Vec<u8> {
        Entry {
            kind: EntryKind::Data,
            timestamp_ns: 1_000 + i,
            payload: format!("entry {i}").into_bytes(),
        }
        .encode()
    }
    fn log(n: u64) -> (Vec<Vec<u8>>, MemoryTree<Blake3Hasher>) {
        let entries: Vec<_> = (0..n).map(entry).collect();
        let tree = MemoryTree::from_leaves(entries.iter().map(|e| Blake3Hasher::hash_leaf(e)));
        (entries, tree)
    }
    fn signed(size: u64, root: Hash, by: &[u8]) -> String {
        let body = Checkpoint::new("dlog/t", size, root).unwrap().to_body();
        let mut n = SignedNote::new(body.clone()).unwrap();
        for &i in by {
            n.add_signature(voter(i).sign(&body));
        }
        n.to_string()
    }

    proptest! {
        /// The frontier's root equals the full tree's at every size.
        #[test]
        fn frontier_matches_the_full_tree(n in 0u64..300) {
            let (_, tree) = log(n);
            let mut f = Frontier::new();
            for (i, leaf) in tree.leaves().iter().enumerate() {
                prop_assert_eq!(f.root(), tree.root_at(i as u64).unwrap());
                f.push(*leaf);
            }
            prop_assert_eq!(f.root(), tree.root());
            prop_assert_eq!(Frontier::from_parts(f.size(), f.nodes().to_vec()), Some(f));
        }

        /// Following a log in steps of any size, against checkpoints of any
        /// later size, verifies it; one flipped bit anywhere is caught.
        #[test]
        fn follows_and_catches_a_flipped_bit(
            n in 1u64..120,
            steps in proptest::collection::vec(1u64..40, 1..8),
            flip in proptest::option::of((0usize..10_000, 0u8..8)),
        ) {
            let (mut entries, tree) = log(n);
            let flipped = flip.map(|(at, bit)| {
                let i = at % entries.len();
                let j = at % entries[i].len();
                entries[i][j] ^= 1 << bit;
                i as u64
            });
            let mut a = Auditor::new(&trust(), 1 << 20, Frontier::new(), 0);
            let mut failed = None;
            for step in steps.iter().copied().cycle() {
                if a.size() == n {
                    break;
                }
                let to = (a.size() + step).min(n);
                let mut p = a.begin();
                let mut bad = None;
                for e in &entries[a.size() as usize..to as usize] {
                    if let Err(e) = p.push(e) {
                        bad = Some(e);
                        break;
                    }
                }
                if let Some(e) = bad {
                    failed = Some(e);
                    break;
                }
                // Checked against the log's latest checkpoint.
                let note = signed(n, tree.root(), &[1, 3]);
                let proof = tree.consistency_proof(to, n).unwrap();
                match a.commit(p, &note, &proof) {
                    Ok(w) => prop_assert_eq!(w.is_some(), to == n),
                    Err(e) => { failed = Some(e); break; }
                }
            }
            match (flipped, failed) {
                (None, None) => prop_assert_eq!(a.tree().root(), tree.root()),
                (Some(i), Some(e)) => prop_assert!(a.size() <= i, "{e}: verified past the flip"),
                (None, Some(e)) => prop_assert!(false, "clean log refused: {e}"),
                (Some(i), None) => prop_assert!(false, "flipped entry {i} accepted"),
            }
        }
    }

    /// Under a trust file that says sha256, the auditor's tree is RFC 6962:
    /// it accepts the SHA-256 root (and consistency proofs to it) and
    /// refuses the BLAKE3 root of the same entries.
    #[test]
    fn a_sha256_trust_file_makes_the_auditor_hash_with_sha256() {
        let trust = trust().with_hash(HashAlg::Sha256);
        let entries: Vec<Vec<u8>> = (0..10).map(entry).collect();
        let sha = MemoryTree::<Sha256Hasher>::from_leaves(
            entries.iter().map(|e| Sha256Hasher::hash_leaf(e)),
        );
        let b3 = MemoryTree::<Blake3Hasher>::from_leaves(
            entries.iter().map(|e| Blake3Hasher::hash_leaf(e)),
        );
        let mut a = Auditor::new(&trust, 1 << 20, Frontier::new(), 0);
        let mut p = a.begin();
        for e in &entries[..6] {
            p.push(e).unwrap();
        }
        let e = a
            .commit(p.clone(), &signed(6, b3.root_at(6).unwrap(), &[1, 2]), &[])
            .unwrap_err();
        assert!(e.is_evidence(), "{e}");
        assert!(a
            .commit(p, &signed(6, sha.root_at(6).unwrap(), &[1, 2]), &[])
            .unwrap()
            .is_some());
        let mut p = a.begin();
        for e in &entries[6..8] {
            p.push(e).unwrap();
        }
        // A checkpoint at 10 covers the pending 8 by a consistency proof.
        let proof = sha.consistency_proof(8, 10).unwrap();
        assert!(a
            .commit(p, &signed(10, sha.root(), &[1, 3]), &proof)
            .unwrap()
            .is_none());
        assert_eq!(a.size(), 8);
    }

    #[test]
    fn checkpoints_need_the_voter_quorum_and_the_right_root() {
        let (entries, tree) = log(10);
        let mut a = Auditor::new(&trust(), 1 << 20, Frontier::new(), 0);
        let mut p = a.begin();
        for e in &entries {
            p.push(e).unwrap();
        }
        let one = signed(10, tree.root(), &[1]);
        assert!(matches!(
            a.commit(p.clone(), &one, &[]),
            Err(AuditError::Untrusted(_))
        ));
        let wrong = signed(10, [7; 32], &[1, 2]);
        let e = a.commit(p.clone(), &wrong, &[]).unwrap_err();
        assert!(e.is_evidence(), "{e}");
        assert_eq!(a.size(), 0, "a refused extension changes nothing");
        let old = signed(9, tree.root_at(9).unwrap(), &[1, 2]);
        assert!(matches!(
            a.commit(p.clone(), &old, &[]),
            Err(AuditError::Behind { .. })
        ));
        let w = a
            .commit(p, &signed(10, tree.root(), &[2, 3]), &[])
            .unwrap()
            .unwrap();
        assert_eq!(w.size(), 10);
        // An older checkpoint is checked by consistency; a forked one fails.
        let proof = tree.consistency_proof(4, 10).unwrap();
        let w4 = a
            .check_older(&signed(4, tree.root_at(4).unwrap(), &[1, 2]), &proof)
            .unwrap();
        assert_eq!(w4.size(), 4);
        let e = a
            .check_older(&signed(4, [1; 32], &[1, 2]), &proof)
            .unwrap_err();
        assert!(e.is_evidence(), "{e}");
    }

    #[test]
    fn entries_must_be_canonical_and_in_time_order() {
        let a = Auditor::new(&trust(), 16, Frontier::new(), 0);
        let mut p = a.begin();
        assert!(matches!(
            p.push(b"\x02junk"),
            Err(AuditError::BadEntry { index: 0, .. })
        ));
        let big = Entry {
            kind: EntryKind::Data,
            timestamp_ns: 5,
            payload: vec![0; 17],
        }
        .encode();
        assert!(matches!(p.push(&big), Err(AuditError::TooLarge { .. })));
        let mut reserved = entry(1);
        reserved[1] = 7;
        assert!(matches!(
            p.push(&reserved),
            Err(AuditError::BadEntry { .. })
        ));
        p.push(
            &Entry {
                kind: EntryKind::Data,
                timestamp_ns: 5,
                payload: vec![],
            }
            .encode(),
        )
        .unwrap();
        let e = p.push(
            &Entry {
                kind: EntryKind::Data,
                timestamp_ns: 4,
                payload: vec![],
            }
            .encode(),
        );
        assert!(matches!(e, Err(AuditError::TimeBackwards { index: 1, .. })));
    }

    #[test]
    fn a_cosignature_carries_only_lines_that_verified() {
        let (entries, tree) = log(2);
        let mut a = Auditor::new(&trust(), 1 << 20, Frontier::new(), 0);
        let mut p = a.begin();
        for e in &entries {
            p.push(e).unwrap();
        }
        let body = Checkpoint::new("dlog/t", 2, tree.root()).unwrap().to_body();
        let mut n = SignedNote::new(body.clone()).unwrap();
        n.add_signature(voter(1).sign(&body));
        let stranger = NoteSigner::new("padding", SigningKey::from_bytes(&[66; 32])).unwrap();
        for _ in 0..50 {
            n.add_signature(stranger.sign(&body));
        }
        n.add_signature(voter(3).sign(&body));
        let w = a.commit(p, &n.to_string(), &[]).unwrap().unwrap();
        let c = Cosigner::new("auditor-1", SigningKey::from_bytes(&[9; 32])).unwrap();
        let out = SignedNote::parse(&w.cosign(&c, 1)).unwrap();
        let names: Vec<_> = out.signatures.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["node-1", "node-3", "auditor-1"]);
    }

    #[test]
    fn a_cosignature_verifies_and_replaces_the_auditors_earlier_line() {
        let (entries, tree) = log(3);
        let mut a = Auditor::new(&trust(), 1 << 20, Frontier::new(), 0);
        let mut p = a.begin();
        for e in &entries {
            p.push(e).unwrap();
        }
        let w = a
            .commit(p, &signed(3, tree.root(), &[1, 2]), &[])
            .unwrap()
            .unwrap();
        let c = Cosigner::new("auditor-1", SigningKey::from_bytes(&[9; 32])).unwrap();
        let once = w.cosign(&c, 100);
        let mut t = trust();
        t.auditors.push(c.verifier());
        t.cosignatures = 1;
        let v = t.verify_checkpoint(&once).unwrap();
        assert_eq!(v.cosignatures(), &[("auditor-1".to_string(), 100)]);
        let again = a.check_older(&once, &[]).unwrap().cosign(&c, 200);
        let v = t.verify_checkpoint(&again).unwrap();
        assert_eq!(v.cosignatures(), &[("auditor-1".to_string(), 200)]);
    }
}
