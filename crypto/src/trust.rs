//! The verifier's trust file (DESIGN §6) and checkpoint verification under it.
//!
//! ```toml
//! origin = "dlog/demo"
//! voters = ["node-1+1a2b3c4d+AU...", "node-2+...", "node-3+..."]  # C2SP vkeys (type 0x01)
//! quorum = 2                # voter signatures required on a checkpoint
//! auditors = ["auditor-1+...+BA..."]   # cosigner vkeys (type 0x04)
//! cosignatures = 0          # auditor cosignatures required
//! ```
//!
//! `auditors` and `cosignatures` may be omitted (no auditors, none required).
//! Unknown fields are rejected. The file holds nothing secret.
//!
//! [`TrustPolicy::verify_checkpoint`] returns a [`VerifiedCheckpoint`], which
//! can only be obtained by passing verification: code that needs a trusted
//! checkpoint takes that type, not a bare [`Checkpoint`].

use crate::note::{Checkpoint, CosignatureVerifier, NoteError, NoteVerifier, SignedNote};
use std::collections::HashSet;
use std::fmt::Write as _;

/// Why a trust file is invalid or a checkpoint did not verify under it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// The trust file is not valid TOML or has missing / unknown fields.
    #[error("trust file is not valid: {0}")]
    Toml(String),
    /// A `voters` or `auditors` entry is not a valid vkey of the right type.
    #[error("trust file {field}[{index}] {vkey:?} is not a valid verifier key: {source}")]
    Vkey {
        /// `voters` or `auditors`.
        field: &'static str,
        /// Position in the list.
        index: usize,
        /// The offending string.
        vkey: String,
        /// What is wrong with it.
        source: NoteError,
    },
    /// The same key (same public key, or same name and key id) is listed twice.
    #[error("trust file {field} lists the key {vkey:?} more than once")]
    DuplicateKey {
        /// `voters` or `auditors`.
        field: &'static str,
        /// The repeated key.
        vkey: String,
    },
    /// The origin is empty or has a control character.
    #[error("trust file origin {0:?} is not a valid checkpoint origin")]
    Origin(String),
    /// `quorum` is 0.
    #[error("trust file quorum is 0: at least one voter signature must be required")]
    QuorumZero,
    /// `quorum` exceeds the number of voters.
    #[error("trust file quorum {quorum} is larger than the {voters} listed voters")]
    QuorumTooLarge {
        /// Required signatures.
        quorum: usize,
        /// Listed voters.
        voters: usize,
    },
    /// `cosignatures` exceeds the number of auditors.
    #[error("trust file requires {required} cosignatures but lists only {auditors} auditors")]
    CosignaturesTooLarge {
        /// Required cosignatures.
        required: usize,
        /// Listed auditors.
        auditors: usize,
    },
    /// The checkpoint is not a well-formed signed note.
    #[error("checkpoint is not a valid signed note: {0}")]
    Note(NoteError),
    /// The note's text is not a well-formed checkpoint body.
    #[error("checkpoint body is malformed: {0}")]
    Checkpoint(NoteError),
    /// The checkpoint is for another log.
    #[error("checkpoint origin is {got:?}, the trust file expects {expected:?}")]
    OriginMismatch {
        /// The trust file's origin.
        expected: String,
        /// The checkpoint's origin.
        got: String,
    },
    /// A signature claims a known voter's key but does not verify.
    #[error("checkpoint signature by voter {name} does not verify")]
    BadSignature {
        /// The voter's key name.
        name: String,
    },
    /// A cosignature claims a known auditor's key but does not verify.
    #[error("checkpoint cosignature by auditor {name} does not verify")]
    BadCosignature {
        /// The auditor's key name.
        name: String,
    },
    /// Fewer distinct valid voter signatures than the quorum.
    #[error("checkpoint has {} ({}), quorum is {quorum}{}", count(signers.len(), "valid voter signature"), names(signers), unlisted_hint(unlisted))]
    Quorum {
        /// The voters whose signatures verified.
        signers: Vec<String>,
        /// Required signatures.
        quorum: usize,
        /// Names on signature lines whose key this trust file does not list
        /// (a node added after the trust file was handed out, say).
        unlisted: Vec<String>,
    },
    /// Fewer distinct valid auditor cosignatures than required.
    #[error("checkpoint has {} ({}), {required} required", count(cosigners.len(), "valid auditor cosignature"), names(cosigners))]
    Cosignatures {
        /// The auditors whose cosignatures verified.
        cosigners: Vec<String>,
        /// Required cosignatures.
        required: usize,
    },
}

fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn unlisted_hint(unlisted: &[String]) -> String {
    if unlisted.is_empty() {
        return String::new();
    }
    format!(
        "; also signed by {}, whose key this trust file does not list (is it older than a membership change? get the log's current trust file)",
        unlisted.join(", ")
    )
}

fn names(list: &[String]) -> String {
    if list.is_empty() {
        "none".to_string()
    } else {
        list.join(", ")
    }
}

impl TrustError {
    /// True when the input could not be read at all (bad trust file, a
    /// checkpoint that does not parse) rather than read and found wanting.
    /// Command-line tools exit 2 for these and 1 for verification failures.
    pub fn is_malformed(&self) -> bool {
        matches!(
            self,
            TrustError::Toml(_)
                | TrustError::Vkey { .. }
                | TrustError::DuplicateKey { .. }
                | TrustError::Origin(_)
                | TrustError::QuorumZero
                | TrustError::QuorumTooLarge { .. }
                | TrustError::CosignaturesTooLarge { .. }
                | TrustError::Note(_)
                | TrustError::Checkpoint(_)
        )
    }
}

/// The TOML shape of a trust file.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustFile {
    origin: String,
    voters: Vec<String>,
    quorum: usize,
    #[serde(default)]
    auditors: Vec<String>,
    #[serde(default)]
    cosignatures: usize,
    /// The log's tree hash; absent means BLAKE3 (files written before the
    /// choice existed).
    #[serde(default)]
    hash: crate::hash::HashAlg,
}

/// Who must sign a checkpoint of one log, and how many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustPolicy {
    /// The log's origin line; checkpoints of other origins are rejected.
    pub origin: String,
    /// Keys of the voting nodes.
    pub voters: Vec<NoteVerifier>,
    /// Distinct voter signatures required.
    pub quorum: usize,
    /// Keys of the auditors (witnesses).
    pub auditors: Vec<CosignatureVerifier>,
    /// Distinct auditor cosignatures required.
    pub cosignatures: usize,
    /// The log's Merkle tree hash: what a verifier recomputes roots and
    /// checks proofs with (`hash = "sha256"` in the file; BLAKE3 when absent).
    pub hash: crate::hash::HashAlg,
}

impl TrustPolicy {
    /// The same policy for a log whose tree hashes with `hash`.
    pub fn with_hash(mut self, hash: crate::hash::HashAlg) -> Self {
        self.hash = hash;
        self
    }

    /// A policy, checked like a trust file: origin valid, quorum in
    /// `1..=voters`, cosignatures at most the auditors, no key listed twice.
    pub fn new(
        origin: impl Into<String>,
        voters: Vec<NoteVerifier>,
        quorum: usize,
        auditors: Vec<CosignatureVerifier>,
        cosignatures: usize,
    ) -> Result<Self, TrustError> {
        let policy = TrustPolicy {
            origin: origin.into(),
            voters,
            quorum,
            auditors,
            cosignatures,
            hash: crate::hash::HashAlg::default(),
        };
        policy.check()?;
        Ok(policy)
    }

    fn check(&self) -> Result<(), TrustError> {
        if Checkpoint::new(self.origin.clone(), 0, [0; 32]).is_err() {
            return Err(TrustError::Origin(self.origin.clone()));
        }
        let voter_keys: Vec<_> = self
            .voters
            .iter()
            .map(|v| (v.name(), v.key_id(), v.public_key(), v.to_vkey()))
            .collect();
        check_unique("voters", &voter_keys)?;
        let auditor_keys: Vec<_> = self
            .auditors
            .iter()
            .map(|v| (v.name(), v.key_id(), v.public_key(), v.to_vkey()))
            .collect();
        check_unique("auditors", &auditor_keys)?;
        if self.quorum == 0 {
            return Err(TrustError::QuorumZero);
        }
        if self.quorum > self.voters.len() {
            return Err(TrustError::QuorumTooLarge {
                quorum: self.quorum,
                voters: self.voters.len(),
            });
        }
        if self.cosignatures > self.auditors.len() {
            return Err(TrustError::CosignaturesTooLarge {
                required: self.cosignatures,
                auditors: self.auditors.len(),
            });
        }
        Ok(())
    }

    /// Reads a trust file (see the module docs).
    pub fn from_toml_str(text: &str) -> Result<Self, TrustError> {
        let file: TrustFile = toml::from_str(text).map_err(|e| TrustError::Toml(e.to_string()))?;
        let voters = file
            .voters
            .iter()
            .enumerate()
            .map(|(index, s)| {
                NoteVerifier::from_vkey(s).map_err(|source| TrustError::Vkey {
                    field: "voters",
                    index,
                    vkey: s.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let auditors = file
            .auditors
            .iter()
            .enumerate()
            .map(|(index, s)| {
                CosignatureVerifier::from_vkey(s).map_err(|source| TrustError::Vkey {
                    field: "auditors",
                    index,
                    vkey: s.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustPolicy::new(
            file.origin,
            voters,
            file.quorum,
            auditors,
            file.cosignatures,
        )?
        .with_hash(file.hash))
    }

    /// The trust file text, with the field names of DESIGN §6.
    pub fn to_toml_string(&self) -> String {
        let file = TrustFile {
            origin: self.origin.clone(),
            voters: self.voters.iter().map(|v| v.to_vkey()).collect(),
            quorum: self.quorum,
            auditors: self.auditors.iter().map(|v| v.to_vkey()).collect(),
            cosignatures: self.cosignatures,
            hash: self.hash,
        };
        // Hand-written so that the field order and comments are stable.
        let mut s = String::new();
        let q = |v: &str| toml::Value::String(v.to_string()).to_string();
        let _ = writeln!(s, "origin = {}", q(&file.origin));
        let _ = writeln!(s, "# C2SP vkeys of the voting nodes (checkpoint signers)");
        let _ = writeln!(s, "voters = [");
        for v in &file.voters {
            let _ = writeln!(s, "    {},", q(v));
        }
        let _ = writeln!(s, "]");
        let _ = writeln!(s, "# voter signatures required on a checkpoint");
        let _ = writeln!(s, "quorum = {}", file.quorum);
        let _ = writeln!(s, "# C2SP vkeys of the auditors (witness cosigners)");
        let _ = writeln!(s, "auditors = [");
        for v in &file.auditors {
            let _ = writeln!(s, "    {},", q(v));
        }
        let _ = writeln!(s, "]");
        let _ = writeln!(s, "# auditor cosignatures required");
        let _ = writeln!(s, "cosignatures = {}", file.cosignatures);
        if file.hash != crate::hash::HashAlg::default() {
            // Written only when not the default, so files of BLAKE3 logs
            // stay as they were.
            let _ = writeln!(s, "# the log's Merkle tree hash (RFC 6962 when sha256)");
            let _ = writeln!(s, "hash = {}", q(file.hash.name()));
        }
        s
    }

    /// Verifies a signed checkpoint note under this policy.
    ///
    /// The note must parse, its body must be a checkpoint of this origin, at
    /// least `quorum` distinct voters (by name) must have signed it, and at least
    /// `cosignatures` distinct auditors (by name) must have cosigned it. Signatures by
    /// unknown keys are ignored; a signature that names a known key (name and
    /// key id) but does not verify is an error, as in the Go reference
    /// implementation: it means the note was altered.
    pub fn verify_checkpoint(&self, note: &str) -> Result<VerifiedCheckpoint, TrustError> {
        // The fields are public: never let a hand-built policy with quorum 0
        // accept unsigned checkpoints.
        if self.quorum == 0 {
            return Err(TrustError::QuorumZero);
        }
        let parsed = SignedNote::parse(note).map_err(TrustError::Note)?;
        let checkpoint = Checkpoint::parse_body(&parsed.text).map_err(TrustError::Checkpoint)?;
        if checkpoint.origin != self.origin {
            return Err(TrustError::OriginMismatch {
                expected: self.origin.clone(),
                got: checkpoint.origin,
            });
        }
        // Counted by name: a voter or auditor listed with two keys (a key
        // rotation) still counts once.
        let mut voter_seen = HashSet::new();
        let mut auditor_seen = HashSet::new();
        let mut signers = Vec::new();
        let mut cosignatures = Vec::new();
        let mut unlisted = Vec::new();
        for sig in &parsed.signatures {
            if let Some(i) = self
                .voters
                .iter()
                .position(|v| v.name() == sig.name && v.key_id() == sig.key_id)
            {
                if !self.voters[i].verify(&parsed.text, sig) {
                    return Err(TrustError::BadSignature {
                        name: sig.name.clone(),
                    });
                }
                if voter_seen.insert(sig.name.as_str()) {
                    signers.push(sig.name.clone());
                }
            } else if let Some(i) = self
                .auditors
                .iter()
                .position(|v| v.name() == sig.name && v.key_id() == sig.key_id)
            {
                let Some(time) = self.auditors[i].verify(&parsed.text, sig) else {
                    return Err(TrustError::BadCosignature {
                        name: sig.name.clone(),
                    });
                };
                if auditor_seen.insert(sig.name.as_str()) {
                    cosignatures.push((sig.name.clone(), time));
                }
            } else if !unlisted.contains(&sig.name) {
                unlisted.push(sig.name.clone());
            }
        }
        if signers.len() < self.quorum {
            return Err(TrustError::Quorum {
                signers,
                quorum: self.quorum,
                unlisted,
            });
        }
        if cosignatures.len() < self.cosignatures {
            return Err(TrustError::Cosignatures {
                cosigners: cosignatures.into_iter().map(|(n, _)| n).collect(),
                required: self.cosignatures,
            });
        }
        Ok(VerifiedCheckpoint {
            checkpoint,
            body: parsed.text,
            note: note.to_string(),
            signers,
            cosignatures,
        })
    }
}

type KeyView<'a> = (&'a str, [u8; 4], [u8; 32], String);

fn check_unique(field: &'static str, keys: &[KeyView<'_>]) -> Result<(), TrustError> {
    let mut ids = HashSet::new();
    let mut publics = HashSet::new();
    for (name, id, public, vkey) in keys {
        if !ids.insert((*name, *id)) || !publics.insert(*public) {
            return Err(TrustError::DuplicateKey {
                field,
                vkey: vkey.clone(),
            });
        }
    }
    Ok(())
}

/// A checkpoint that passed [`TrustPolicy::verify_checkpoint`].
///
/// It has no public constructor: holding one proves the check was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCheckpoint {
    checkpoint: Checkpoint,
    body: String,
    note: String,
    signers: Vec<String>,
    cosignatures: Vec<(String, u64)>,
}

impl VerifiedCheckpoint {
    /// The verified checkpoint (origin, size, root).
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// Names of the voters whose signatures verified, in note order.
    pub fn signers(&self) -> &[String] {
        &self.signers
    }

    /// `(auditor name, cosignature time in Unix seconds)` of the auditors
    /// whose cosignatures verified, in note order.
    pub fn cosignatures(&self) -> &[(String, u64)] {
        &self.cosignatures
    }

    /// The whole note as it was verified, verbatim, signatures included.
    pub fn note_text(&self) -> &str {
        &self.note
    }

    /// The signed body (the checkpoint text before the blank line).
    pub fn body(&self) -> &str {
        &self.body
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::note::{Cosigner, NoteSigner};
    use ed25519_dalek::SigningKey;
    use proptest::prelude::*;

    fn signer(i: u8) -> NoteSigner {
        NoteSigner::new(format!("node-{i}"), SigningKey::from_bytes(&[i; 32])).unwrap()
    }

    fn auditor(i: u8) -> Cosigner {
        Cosigner::new(
            format!("auditor-{i}"),
            SigningKey::from_bytes(&[100 + i; 32]),
        )
        .unwrap()
    }

    #[test]
    fn two_keys_of_one_name_count_once() {
        // A rotation lists a voter or an auditor under two keys: still one.
        let old = signer(1);
        let new = NoteSigner::new("node-1", SigningKey::from_bytes(&[201; 32])).unwrap();
        let a_old = auditor(1);
        let a_new = Cosigner::new("auditor-1", SigningKey::from_bytes(&[202; 32])).unwrap();
        let p = TrustPolicy::new(
            "dlog/t",
            vec![old.verifier(), new.verifier(), signer(2).verifier()],
            2,
            vec![a_old.verifier(), a_new.verifier(), auditor(2).verifier()],
            2,
        )
        .unwrap();
        let body = Checkpoint::new("dlog/t", 1, [1; 32]).unwrap().to_body();
        let mut n = SignedNote::new(body.clone()).unwrap();
        n.add_signature(old.sign(&body));
        n.add_signature(new.sign(&body));
        n.add_signature(a_old.cosign(&body, 1));
        n.add_signature(a_new.cosign(&body, 2));
        assert!(matches!(
            p.verify_checkpoint(&n.to_string()),
            Err(TrustError::Quorum { .. })
        ));
        n.add_signature(signer(2).sign(&body));
        assert!(matches!(
            p.verify_checkpoint(&n.to_string()),
            Err(TrustError::Cosignatures { .. })
        ));
        n.add_signature(auditor(2).cosign(&body, 3));
        let v = p.verify_checkpoint(&n.to_string()).unwrap();
        assert_eq!(v.signers(), &["node-1".to_string(), "node-2".to_string()]);
        assert_eq!(v.cosignatures().len(), 2);
    }

    fn policy(quorum: usize, cosignatures: usize) -> TrustPolicy {
        TrustPolicy::new(
            "dlog/demo",
            (1..=3).map(|i| signer(i).verifier()).collect(),
            quorum,
            (1..=2).map(|i| auditor(i).verifier()).collect(),
            cosignatures,
        )
        .unwrap()
    }

    fn body() -> String {
        Checkpoint::new("dlog/demo", 10, [3; 32]).unwrap().to_body()
    }

    fn note(voters: &[u8], auditors: &[u8]) -> String {
        let b = body();
        let mut n = SignedNote::new(b.clone()).unwrap();
        for &v in voters {
            n.add_signature(signer(v).sign(&b));
        }
        for &a in auditors {
            n.add_signature(auditor(a).cosign(&b, 1000 + a as u64));
        }
        n.to_string()
    }

    #[test]
    fn toml_roundtrip_and_format() {
        let p = policy(2, 1);
        let text = p.to_toml_string();
        assert!(text.starts_with("origin = \"dlog/demo\"\n"));
        assert!(text.contains("\nquorum = 2\n"));
        assert!(text.contains("\ncosignatures = 1\n"));
        assert!(text.contains(&format!("    \"{}\",\n", signer(1).vkey())));
        assert_eq!(TrustPolicy::from_toml_str(&text).unwrap(), p);
        // The DESIGN §6 example shape, auditors omitted.
        let minimal = format!(
            "origin = \"dlog/demo\"\nvoters = [\"{}\"]\nquorum = 1\n",
            signer(1).vkey()
        );
        let m = TrustPolicy::from_toml_str(&minimal).unwrap();
        assert!(m.auditors.is_empty());
        assert_eq!(m.cosignatures, 0);
        // No hash line: BLAKE3, and a BLAKE3 policy writes none.
        assert_eq!(m.hash, crate::hash::HashAlg::Blake3);
        assert!(!text.contains("hash ="));
        let sha = p.clone().with_hash(crate::hash::HashAlg::Sha256);
        let text = sha.to_toml_string();
        assert!(text.contains("\nhash = \"sha256\"\n"), "{text}");
        assert_eq!(TrustPolicy::from_toml_str(&text).unwrap(), sha);
        let bad = format!("{minimal}hash = \"md5\"\n");
        assert!(matches!(
            TrustPolicy::from_toml_str(&bad),
            Err(TrustError::Toml(_))
        ));
    }

    #[test]
    fn trust_file_errors() {
        let v1 = signer(1).vkey();
        let v2 = signer(2).vkey();
        let a1 = auditor(1).vkey();
        let e = |s: String| TrustPolicy::from_toml_str(&s).unwrap_err();
        let err = e(format!("origin = \"o\"\nvoters = [\"{v1}\"]\nquorum = 0\n"));
        assert_eq!(err, TrustError::QuorumZero);
        assert!(err.is_malformed());
        let err = e(format!("origin = \"o\"\nvoters = [\"{v1}\"]\nquorum = 2\n"));
        assert_eq!(
            err.to_string(),
            "trust file quorum 2 is larger than the 1 listed voters"
        );
        let err = e(format!(
            "origin = \"o\"\nvoters = [\"{v1}\", \"{v1}\"]\nquorum = 1\n"
        ));
        assert!(matches!(
            err,
            TrustError::DuplicateKey {
                field: "voters",
                ..
            }
        ));
        // Same public key under another name is a duplicate too.
        let renamed = NoteSigner::new("other", SigningKey::from_bytes(&[1; 32]))
            .unwrap()
            .vkey();
        let err = e(format!(
            "origin = \"o\"\nvoters = [\"{v1}\", \"{renamed}\"]\nquorum = 1\n"
        ));
        assert!(matches!(err, TrustError::DuplicateKey { .. }));
        let err = e(format!(
            "origin = \"o\"\nvoters = [\"{v1}\", \"bad\"]\nquorum = 1\n"
        ));
        assert!(
            matches!(
                err,
                TrustError::Vkey {
                    field: "voters",
                    index: 1,
                    ..
                }
            ),
            "{err}"
        );
        // An auditor key among voters has the wrong type byte.
        let err = e(format!("origin = \"o\"\nvoters = [\"{a1}\"]\nquorum = 1\n"));
        assert!(matches!(
            err,
            TrustError::Vkey {
                source: NoteError::KeyType { .. },
                ..
            }
        ));
        let err = e(format!(
            "origin = \"o\"\nvoters = [\"{v1}\", \"{v2}\"]\nquorum = 1\nauditors = [\"{a1}\"]\ncosignatures = 2\n"
        ));
        assert!(matches!(
            err,
            TrustError::CosignaturesTooLarge {
                required: 2,
                auditors: 1
            }
        ));
        let err = e(format!("origin = \"\"\nvoters = [\"{v1}\"]\nquorum = 1\n"));
        assert!(matches!(err, TrustError::Origin(_)));
        let err = e(format!(
            "origin = \"o\"\nvoters = [\"{v1}\"]\nquorum = 1\nquorom = 1\n"
        ));
        assert!(matches!(err, TrustError::Toml(_)));
        assert!(matches!(e("voters = []".to_string()), TrustError::Toml(_)));
    }

    #[test]
    fn verify_quorum_and_cosignatures() {
        let p = policy(2, 1);
        let v = p.verify_checkpoint(&note(&[1, 3], &[2])).unwrap();
        assert_eq!(v.signers(), ["node-1", "node-3"]);
        assert_eq!(v.cosignatures(), [("auditor-2".to_string(), 1002)]);
        assert_eq!(v.checkpoint().size, 10);
        assert_eq!(v.body(), body());
        assert_eq!(v.note_text(), note(&[1, 3], &[2]));

        let err = p.verify_checkpoint(&note(&[1], &[2])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "checkpoint has 1 valid voter signature (node-1), quorum is 2"
        );
        assert!(!err.is_malformed());
        // A signer the trust file does not list (node-4: added after the
        // file was handed out) is named in the refusal.
        let err = p.verify_checkpoint(&note(&[1, 4], &[2])).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("checkpoint has 1 valid voter signature (node-1), quorum is 2; also signed by node-4, whose key this trust file does not list"),
            "{msg}"
        );
        // The same voter twice counts once.
        let err = p.verify_checkpoint(&note(&[1, 1], &[2])).unwrap_err();
        assert!(matches!(err, TrustError::Quorum { .. }));
        let err = p.verify_checkpoint(&note(&[1, 2], &[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "checkpoint has 0 valid auditor cosignatures (none), 1 required"
        );
        let err = p.verify_checkpoint(&note(&[1, 2], &[1, 1])).unwrap();
        assert_eq!(err.cosignatures().len(), 1);
        // Unknown keys are ignored.
        let stranger = NoteSigner::new("node-9", SigningKey::from_bytes(&[9; 32])).unwrap();
        let b = body();
        let mut n = SignedNote::parse(&note(&[1, 2], &[1])).unwrap();
        n.add_signature(stranger.sign(&b));
        n.add_signature(stranger.sign("other\n"));
        assert!(p.verify_checkpoint(&n.to_string()).is_ok());
        // Zero signers.
        let err = p
            .verify_checkpoint(&format!("{}\n{}\n", b, stranger.sign(&b).to_line()))
            .unwrap_err();
        assert!(
            err.to_string().starts_with(
                "checkpoint has 0 valid voter signatures (none), quorum is 2; also signed by node-9,"
            ),
            "{err}"
        );
    }

    #[test]
    fn tampering_is_named() {
        let p = policy(2, 0);
        let good = note(&[1, 2], &[1]);
        // A changed size: every known signature now fails; the first is named.
        let bad = good.replacen("\n10\n", "\n11\n", 1);
        let err = p.verify_checkpoint(&bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            "checkpoint signature by voter node-1 does not verify"
        );
        // A flipped signature byte on one voter.
        let mut n = SignedNote::parse(&good).unwrap();
        n.signatures[1].signature[0] ^= 1;
        let err = p.verify_checkpoint(&n.to_string()).unwrap_err();
        assert_eq!(
            err,
            TrustError::BadSignature {
                name: "node-2".into()
            }
        );
        let mut n = SignedNote::parse(&good).unwrap();
        n.signatures[2].signature[0] ^= 1; // the cosignature's timestamp
        let err = p.verify_checkpoint(&n.to_string()).unwrap_err();
        assert_eq!(
            err,
            TrustError::BadCosignature {
                name: "auditor-1".into()
            }
        );
        // A hand-built policy with quorum 0 accepts nothing.
        let zero = TrustPolicy {
            quorum: 0,
            ..p.clone()
        };
        assert_eq!(zero.verify_checkpoint(&good), Err(TrustError::QuorumZero));
        // Another origin.
        let other = TrustPolicy {
            origin: "dlog/other".into(),
            ..p.clone()
        };
        let err = other.verify_checkpoint(&good).unwrap_err();
        assert!(matches!(err, TrustError::OriginMismatch { .. }));
        // Garbage is malformed.
        let err = p.verify_checkpoint("nonsense").unwrap_err();
        assert!(err.is_malformed());
        let signed_garbage = format!("x\n\n{}\n", signer(1).sign("x\n").to_line());
        let err = p.verify_checkpoint(&signed_garbage).unwrap_err();
        assert!(matches!(err, TrustError::Checkpoint(_)));
        assert!(err.is_malformed());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn quorum_counts_distinct_voters(voters in proptest::collection::vec(1u8..=3, 0..6),
                                         auditors in proptest::collection::vec(1u8..=2, 0..4),
                                         quorum in 1usize..=3, cos in 0usize..=2) {
            let p = policy(quorum, cos);
            let distinct_v: HashSet<u8> = voters.iter().copied().collect();
            let distinct_a: HashSet<u8> = auditors.iter().copied().collect();
            let res = p.verify_checkpoint(&note(&voters, &auditors));
            let should = distinct_v.len() >= quorum && distinct_a.len() >= cos;
            prop_assert_eq!(res.is_ok(), should);
            if let Ok(v) = res {
                prop_assert_eq!(v.signers().len(), distinct_v.len());
                prop_assert_eq!(v.cosignatures().len(), distinct_a.len());
            }
        }

        #[test]
        fn verify_never_panics(s in "(?s).{0,300}") {
            let _ = policy(1, 0).verify_checkpoint(&s);
            let _ = TrustPolicy::from_toml_str(&s);
        }

        #[test]
        fn any_byte_flip_fails(pos in 0usize..400, bit in 0u8..8) {
            let good = note(&[1], &[]);
            let mut bytes = good.clone().into_bytes();
            let pos = pos % bytes.len();
            bytes[pos] ^= 1 << bit;
            if let Ok(s) = String::from_utf8(bytes) {
                if let Ok(v) = policy(1, 0).verify_checkpoint(&s) {
                    // Only a flip that keeps the signed body and the signature
                    // bytes identical can pass, and then nothing trusted changed.
                    prop_assert_eq!(v.body(), body());
                    prop_assert_eq!(v.signers(), ["node-1"]);
                }
            }
        }
    }
}
