//! Offline receipt verification: no server, no network, only a trust policy.
//!
//! [`verify_receipt`] checks, in order: the entry bytes are a canonical entry;
//! the checkpoint verifies under the [`TrustPolicy`] (origin, voter quorum,
//! auditor cosignatures); the index is inside the checkpoint's tree; and
//! `BLAKE3(0x00 || entry)` is included under the checkpoint's root.
//! [`verify_notarized_file`] then checks that the entry is a notarization
//! whose digest matches the file.
//!
//! Errors separate input that could not be read ([`VerifyError::is_malformed`],
//! exit code 2) from input that was read and found false (exit code 1).

use crate::payload::{DigestAlg, NotaryPayload, PayloadError};
use crate::receipt::Receipt;
use dlog_crypto::tree::{verify_inclusion_with, ProofError};
use dlog_crypto::trust::{TrustError, TrustPolicy, VerifiedCheckpoint};
use dlog_ledger::entry::{Entry, EntryError, EntryKind};
use std::path::Path;

/// Why a receipt or a notarized file did not verify.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The receipt's entry bytes are not a canonical entry.
    #[error("receipt entry is not a canonical entry: {0}")]
    Entry(EntryError),
    /// The checkpoint failed under the trust policy (or did not parse).
    #[error("{0}")]
    Checkpoint(TrustError),
    /// The index is not inside the checkpoint's tree.
    #[error("entry index {index} is outside the checkpoint's tree of size {size}")]
    IndexOutOfRange {
        /// The receipt's index.
        index: u64,
        /// The checkpoint's tree size.
        size: u64,
    },
    /// The inclusion proof does not lead from the entry to the checkpoint root.
    #[error("inclusion proof of entry {index} does not match the checkpoint root at tree size {size}: {source}")]
    Inclusion {
        /// The receipt's index.
        index: u64,
        /// The checkpoint's tree size.
        size: u64,
        /// What the proof check found.
        source: ProofError,
    },
    /// The proof verifies, but under another tree hash than the trust
    /// file's: the receipt is of a log made with the other hash.
    #[error("the receipt's inclusion proof is for a {receipt} tree; the trust file says the log hashes with {trust} (`hash` in the trust file)")]
    HashMismatch {
        /// The trust file's hash.
        trust: dlog_crypto::HashAlg,
        /// The hash the proof verifies under.
        receipt: dlog_crypto::HashAlg,
    },
    /// The entry is not a notarization entry.
    #[error("receipt entry {index} is a {kind:?} entry, not a notarization")]
    NotNotarization {
        /// The entry's index.
        index: u64,
        /// Its kind.
        kind: EntryKind,
    },
    /// The notarization payload is malformed.
    #[error("receipt entry {index} has a malformed notarization payload: {source}")]
    Payload {
        /// The entry's index.
        index: u64,
        /// What is wrong with the payload.
        source: PayloadError,
    },
    /// The file could not be read.
    #[error("cannot read the file to check: {0}")]
    Io(String),
    /// The file's digest differs from the notarized one.
    #[error(
        "file {alg} digest {actual} does not match the notarized digest {expected} (entry {index})"
    )]
    DigestMismatch {
        /// The entry's index.
        index: u64,
        /// The digest algorithm.
        alg: DigestAlg,
        /// The notarized digest, hex.
        expected: String,
        /// The file's digest, hex.
        actual: String,
    },
}

impl VerifyError {
    /// True when the input could not be read or is not the right kind of
    /// input (command-line exit code 2); false when it was read and failed
    /// verification (exit code 1).
    pub fn is_malformed(&self) -> bool {
        match self {
            VerifyError::Entry(_)
            | VerifyError::NotNotarization { .. }
            | VerifyError::Payload { .. }
            | VerifyError::Io(_) => true,
            VerifyError::Checkpoint(e) => e.is_malformed(),
            VerifyError::IndexOutOfRange { .. }
            | VerifyError::Inclusion { .. }
            | VerifyError::HashMismatch { .. }
            | VerifyError::DigestMismatch { .. } => false,
        }
    }
}

/// A receipt that passed [`verify_receipt`]; only verification constructs one.
#[derive(Debug, Clone)]
pub struct VerifiedReceipt {
    index: u64,
    entry: Entry,
    checkpoint: VerifiedCheckpoint,
}

impl VerifiedReceipt {
    /// The entry's leaf index.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The decoded entry.
    pub fn entry(&self) -> &Entry {
        &self.entry
    }

    /// The verified checkpoint the entry is included under.
    pub fn checkpoint(&self) -> &VerifiedCheckpoint {
        &self.checkpoint
    }
}

/// Verifies a receipt under a trust policy (see the module docs).
pub fn verify_receipt(trust: &TrustPolicy, r: &Receipt) -> Result<VerifiedReceipt, VerifyError> {
    let entry = Entry::decode(&r.entry).map_err(VerifyError::Entry)?;
    let checkpoint = trust
        .verify_checkpoint(&r.checkpoint)
        .map_err(VerifyError::Checkpoint)?;
    let cp = checkpoint.checkpoint();
    if r.index >= cp.size {
        return Err(VerifyError::IndexOutOfRange {
            index: r.index,
            size: cp.size,
        });
    }
    // The tree hash is the trust file's: a receipt of a sha256 log checks
    // only under a trust file that says so.
    let leaf = trust.hash.hash_leaf(&r.entry);
    if let Err(source) =
        verify_inclusion_with(trust.hash, &leaf, r.index, cp.size, &r.inclusion, &cp.root)
    {
        use dlog_crypto::HashAlg;
        let other = match trust.hash {
            HashAlg::Blake3 => HashAlg::Sha256,
            HashAlg::Sha256 => HashAlg::Blake3,
        };
        let leaf = other.hash_leaf(&r.entry);
        if verify_inclusion_with(other, &leaf, r.index, cp.size, &r.inclusion, &cp.root).is_ok() {
            return Err(VerifyError::HashMismatch {
                trust: trust.hash,
                receipt: other,
            });
        }
        return Err(VerifyError::Inclusion {
            index: r.index,
            size: cp.size,
            source,
        });
    }
    Ok(VerifiedReceipt {
        index: r.index,
        entry,
        checkpoint,
    })
}

/// A notarization receipt verified against a document.
#[derive(Debug, Clone)]
pub struct VerifiedNotarization {
    receipt: VerifiedReceipt,
    payload: NotaryPayload,
}

impl VerifiedNotarization {
    /// The verified receipt.
    pub fn receipt(&self) -> &VerifiedReceipt {
        &self.receipt
    }

    /// The notarization payload (algorithm, digest, label).
    pub fn payload(&self) -> &NotaryPayload {
        &self.payload
    }

    /// The entry's leaf index.
    pub fn index(&self) -> u64 {
        self.receipt.index
    }

    /// The decoded entry (its `timestamp_ns` is when the log accepted it).
    pub fn entry(&self) -> &Entry {
        &self.receipt.entry
    }

    /// The verified checkpoint.
    pub fn checkpoint(&self) -> &VerifiedCheckpoint {
        &self.receipt.checkpoint
    }
}

/// Verifies a notarization receipt against a document digest computed by
/// `digest_of` for the payload's algorithm (sans-IO core of
/// [`verify_notarized_file`]).
pub fn verify_notarized_digest(
    trust: &TrustPolicy,
    r: &Receipt,
    digest_of: impl FnOnce(DigestAlg) -> std::io::Result<Vec<u8>>,
) -> Result<VerifiedNotarization, VerifyError> {
    let receipt = verify_receipt(trust, r)?;
    let index = receipt.index;
    if receipt.entry.kind != EntryKind::Notarization {
        return Err(VerifyError::NotNotarization {
            index,
            kind: receipt.entry.kind,
        });
    }
    let payload = NotaryPayload::parse(&receipt.entry.payload)
        .map_err(|source| VerifyError::Payload { index, source })?;
    let actual = digest_of(payload.alg).map_err(|e| VerifyError::Io(e.to_string()))?;
    if actual != payload.digest {
        return Err(VerifyError::DigestMismatch {
            index,
            alg: payload.alg,
            expected: hex::encode(&payload.digest),
            actual: hex::encode(&actual),
        });
    }
    Ok(VerifiedNotarization { receipt, payload })
}

/// `dlog notary verify FILE RECEIPT`: verifies the receipt, then re-hashes
/// the file (streamed) and compares it with the notarized digest.
pub fn verify_notarized_file(
    trust: &TrustPolicy,
    r: &Receipt,
    file: &Path,
) -> Result<VerifiedNotarization, VerifyError> {
    verify_notarized_digest(trust, r, |alg| crate::payload::hash_file(file, alg)).map_err(|e| {
        match e {
            VerifyError::Io(msg) => VerifyError::Io(format!("{}: {msg}", file.display())),
            other => other,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dlog_crypto::note::{Checkpoint, Cosigner, NoteSigner, SignedNote};
    use dlog_crypto::tree::MemoryTree;
    use dlog_crypto::{Blake3Hasher, TreeHasher};
    use ed25519_dalek::SigningKey;
    use proptest::prelude::*;

    fn signer(i: u8) -> NoteSigner {
        NoteSigner::new(format!("node-{i}"), SigningKey::from_bytes(&[i; 32])).unwrap()
    }

    fn auditor() -> Cosigner {
        Cosigner::new("auditor-1", SigningKey::from_bytes(&[77; 32])).unwrap()
    }

    fn policy(quorum: usize, cos: usize) -> TrustPolicy {
        TrustPolicy::new(
            "dlog/demo",
            (1..=3).map(|i| signer(i).verifier()).collect(),
            quorum,
            vec![auditor().verifier()],
            cos,
        )
        .unwrap()
    }

    fn doc(i: u64) -> Vec<u8> {
        format!("document number {i}").into_bytes()
    }

    /// A log of `n` entries; even ones are notarizations of `doc(i)`.
    fn log(n: u64) -> (Vec<Vec<u8>>, MemoryTree<Blake3Hasher>) {
        let entries: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                if i % 2 == 0 {
                    let p = NotaryPayload::new(
                        DigestAlg::Blake3,
                        DigestAlg::Blake3.digest(&doc(i)),
                        Some(format!("doc {i}")),
                    )
                    .unwrap();
                    Entry {
                        kind: EntryKind::Notarization,
                        timestamp_ns: 1000 + i,
                        payload: p.encode().unwrap(),
                    }
                    .encode()
                } else {
                    Entry {
                        kind: EntryKind::Data,
                        timestamp_ns: 1000 + i,
                        payload: vec![i as u8; 10],
                    }
                    .encode()
                }
            })
            .collect();
        let tree = MemoryTree::from_leaves(entries.iter().map(|e| Blake3Hasher::hash_leaf(e)));
        (entries, tree)
    }

    fn note(tree: &MemoryTree<Blake3Hasher>, voters: &[u8], cosign: bool) -> String {
        let body = Checkpoint::new("dlog/demo", tree.len(), tree.root())
            .unwrap()
            .to_body();
        let mut n = SignedNote::new(body.clone()).unwrap();
        for &v in voters {
            n.add_signature(signer(v).sign(&body));
        }
        if cosign {
            n.add_signature(auditor().cosign(&body, 1_700_000_000));
        }
        n.to_string()
    }

    fn receipt(
        entries: &[Vec<u8>],
        tree: &MemoryTree<Blake3Hasher>,
        index: u64,
        note: String,
    ) -> Receipt {
        Receipt {
            entry: entries[index as usize].clone(),
            index,
            inclusion: tree.inclusion_proof(index, tree.len()).unwrap(),
            checkpoint: note,
        }
    }

    #[test]
    fn every_receipt_verifies() {
        let (entries, tree) = log(13);
        let n = note(&tree, &[1, 2], true);
        for i in 0..13 {
            let r = receipt(&entries, &tree, i, n.clone());
            let text = r.to_tlog_proof();
            let parsed = Receipt::parse_tlog_proof(&text).unwrap();
            let v = verify_receipt(&policy(2, 1), &parsed).unwrap();
            assert_eq!(v.index(), i);
            assert_eq!(v.entry().timestamp_ns, 1000 + i);
            assert_eq!(v.checkpoint().signers(), ["node-1", "node-2"]);
            assert_eq!(v.checkpoint().cosignatures()[0].1, 1_700_000_000);
            let from_json = Receipt::from_json(&r.to_json()).unwrap();
            assert!(verify_receipt(&policy(2, 1), &from_json).is_ok());
        }
    }

    #[test]
    fn failures_are_named() {
        let (entries, tree) = log(13);
        let good = receipt(&entries, &tree, 6, note(&tree, &[1, 2], false));
        let p = policy(2, 0);
        verify_receipt(&p, &good).unwrap();

        let e = verify_receipt(&policy(3, 0), &good).unwrap_err();
        assert_eq!(
            e.to_string(),
            "checkpoint has 2 valid voter signatures (node-1, node-2), quorum is 3"
        );
        assert!(!e.is_malformed());
        let e = verify_receipt(&policy(2, 1), &good).unwrap_err();
        assert!(
            e.to_string().contains("0 valid auditor cosignatures"),
            "{e}"
        );

        let mut r = good.clone();
        r.index = 7;
        let e = verify_receipt(&p, &r).unwrap_err();
        assert!(matches!(e, VerifyError::Inclusion { .. }), "{e}");
        assert!(!e.is_malformed());
        r.index = 13;
        let e = verify_receipt(&p, &r).unwrap_err();
        assert_eq!(
            e.to_string(),
            "entry index 13 is outside the checkpoint's tree of size 13"
        );

        let mut r = good.clone();
        r.inclusion[1][3] ^= 1;
        assert!(matches!(
            verify_receipt(&p, &r),
            Err(VerifyError::Inclusion { .. })
        ));
        let mut r = good.clone();
        r.inclusion.pop();
        assert!(matches!(
            verify_receipt(&p, &r),
            Err(VerifyError::Inclusion {
                source: ProofError::WrongLength { .. },
                ..
            })
        ));
        // Another entry (same length) in place of the real one.
        let mut r = good.clone();
        let last = r.entry.len() - 1;
        r.entry[last] ^= 1;
        let e = verify_receipt(&p, &r).unwrap_err();
        assert!(
            matches!(e, VerifyError::Inclusion { .. }) || e.is_malformed(),
            "{e}"
        );
        // Non-canonical entry bytes.
        let mut r = good.clone();
        r.entry[1] = 9;
        let e = verify_receipt(&p, &r).unwrap_err();
        assert!(matches!(e, VerifyError::Entry(_)));
        assert!(e.is_malformed());
        // A checkpoint of another (smaller) tree with the same signers.
        let small = MemoryTree::<Blake3Hasher>::from_leaves(tree.leaves()[..8].iter().copied());
        let mut r = good.clone();
        r.checkpoint = note(&small, &[1, 2], false);
        assert!(matches!(
            verify_receipt(&p, &r),
            Err(VerifyError::Inclusion { .. })
        ));
        // Tampered checkpoint.
        let mut r = good.clone();
        r.checkpoint = r.checkpoint.replacen("\n13\n", "\n14\n", 1);
        let e = verify_receipt(&p, &r).unwrap_err();
        assert_eq!(
            e.to_string(),
            "checkpoint signature by voter node-1 does not verify"
        );
        assert!(!e.is_malformed());
    }

    #[test]
    fn notarized_files() {
        let (entries, tree) = log(9);
        let n = note(&tree, &[3], false);
        let p = policy(1, 0);
        let r = receipt(&entries, &tree, 4, n.clone());
        let v = verify_notarized_digest(&p, &r, |alg| Ok(alg.digest(&doc(4)))).unwrap();
        assert_eq!(v.index(), 4);
        assert_eq!(v.payload().label.as_deref(), Some("doc 4"));
        assert_eq!(v.checkpoint().signers(), ["node-3"]);

        let e =
            verify_notarized_digest(&p, &r, |alg| Ok(alg.digest(b"another document"))).unwrap_err();
        assert!(matches!(e, VerifyError::DigestMismatch { .. }));
        assert!(!e.is_malformed());
        assert!(e.to_string().starts_with("file blake3 digest "), "{e}");

        let data = receipt(&entries, &tree, 3, n.clone());
        let e = verify_notarized_digest(&p, &data, |alg| Ok(alg.digest(&doc(3)))).unwrap_err();
        assert!(matches!(e, VerifyError::NotNotarization { .. }));
        assert!(e.is_malformed());

        // Real files.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("doc4");
        std::fs::write(&path, doc(4)).unwrap();
        assert!(verify_notarized_file(&p, &r, &path).is_ok());
        std::fs::write(&path, b"changed").unwrap();
        assert!(matches!(
            verify_notarized_file(&p, &r, &path),
            Err(VerifyError::DigestMismatch { .. })
        ));
        let e = verify_notarized_file(&p, &r, &dir.path().join("missing")).unwrap_err();
        assert!(matches!(e, VerifyError::Io(_)));
        assert!(e.is_malformed());
    }

    #[test]
    fn sha256_notarization() {
        let d = DigestAlg::Sha256.digest(b"hello");
        let payload = NotaryPayload::new(DigestAlg::Sha256, d, None).unwrap();
        let entry = Entry {
            kind: EntryKind::Notarization,
            timestamp_ns: 1,
            payload: payload.encode().unwrap(),
        }
        .encode();
        let tree = MemoryTree::<Blake3Hasher>::from_leaves([Blake3Hasher::hash_leaf(&entry)]);
        let r = receipt(&[entry], &tree, 0, note(&tree, &[1], false));
        let v = verify_notarized_digest(&policy(1, 0), &r, |alg| {
            assert_eq!(alg, DigestAlg::Sha256);
            Ok(alg.digest(b"hello"))
        })
        .unwrap();
        assert_eq!(v.payload().alg, DigestAlg::Sha256);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn random_logs_verify_and_tampering_fails(n in 1u64..200, pick: u64, flip: usize) {
            let (entries, tree) = log(n);
            let index = pick % n;
            let r = receipt(&entries, &tree, index, note(&tree, &[2], false));
            let p = policy(1, 0);
            prop_assert!(verify_receipt(&p, &r).is_ok());
            if !r.inclusion.is_empty() {
                let mut bad = r.clone();
                let k = flip % bad.inclusion.len();
                bad.inclusion[k][flip % 32] ^= 1 << (flip % 8);
                prop_assert!(verify_receipt(&p, &bad).is_err());
            }
            let mut bad = r.clone();
            bad.index = (index + 1 + flip as u64 % n) % n;
            if bad.index != index {
                prop_assert!(verify_receipt(&p, &bad).is_err());
            }
        }

        #[test]
        fn verify_garbage_never_panics(entry in proptest::collection::vec(any::<u8>(), 0..40),
                                       index: u64,
                                       inclusion in proptest::collection::vec(any::<[u8; 32]>(), 0..70),
                                       size in 0u64..1000) {
            let body = Checkpoint::new("dlog/demo", size, [5; 32]).unwrap().to_body();
            let mut n = SignedNote::new(body.clone()).unwrap();
            n.add_signature(signer(1).sign(&body));
            let cp = n.to_string();
            let r = Receipt { entry, index, inclusion, checkpoint: cp };
            let _ = verify_receipt(&policy(1, 0), &r);
            let _ = verify_notarized_digest(&policy(1, 0), &r, |_| Ok(vec![]));
        }
    }
}
