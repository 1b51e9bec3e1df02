//! C2SP tlog-witness v1.0.0 `add-checkpoint`, sans-IO: the request body
//! parser and the decision whether to cosign, given what this witness last
//! cosigned for the origin. No clock, no files, no sockets: the caller
//! passes the state in and persists the new state before it answers.

use dlog_crypto::note::{decode_hash, Checkpoint, NoteVerifier, SignedNote, MAX_NOTE_LEN};
use dlog_crypto::{Hash, HashAlg};

/// Most consistency-proof lines a request may carry (the spec's bound).
pub const MAX_PROOF_LINES: usize = 63;

/// Largest request body: the old-size line, 63 proof lines and a note.
pub const MAX_BODY: usize = 32 + MAX_PROOF_LINES * 45 + 1 + MAX_NOTE_LEN;

/// A parsed `add-checkpoint` request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint {
    /// The `old` size: the size the client believes this witness last
    /// cosigned for the origin.
    pub old: u64,
    /// Consistency proof from `old` to the checkpoint's size.
    pub proof: Vec<Hash>,
    /// The checkpoint note, as sent (with its signatures).
    pub note: String,
}

/// Why a request is refused, with the status code the spec assigns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// 400: a malformed body, or an old size above the checkpoint's.
    #[error("400 bad request: {0}")]
    BadRequest(String),
    /// 403: no signature verifies under a key this witness trusts for the
    /// origin.
    #[error("403 forbidden: no valid signature from the log's key")]
    Forbidden,
    /// 404: an origin this witness does not witness.
    #[error("404 not found: unknown origin")]
    UnknownOrigin,
    /// 409: `old` is not the size last cosigned (which is `size`), or the
    /// same size with another root.
    #[error("409 conflict: the witness last cosigned size {size}")]
    Conflict {
        /// The size this witness last cosigned for the origin.
        size: u64,
    },
    /// 422: the consistency proof does not verify.
    #[error("422 unprocessable: {0}")]
    BadProof(String),
}

impl Refusal {
    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::BadRequest(_) => 400,
            Refusal::Forbidden => 403,
            Refusal::UnknownOrigin => 404,
            Refusal::Conflict { .. } => 409,
            Refusal::BadProof(_) => 422,
        }
    }
}

fn bad(detail: impl Into<String>) -> Refusal {
    Refusal::BadRequest(detail.into())
}

/// Parses a request body: `old <size>`, up to 63 base64 hash lines, an
/// empty line, the checkpoint note. Every line ends in a newline; sizes
/// have no leading zeros. Never panics on any input.
pub fn parse_request(body: &[u8]) -> Result<AddCheckpoint, Refusal> {
    if body.len() > MAX_BODY {
        return Err(bad(format!("the body is over {MAX_BODY} bytes")));
    }
    let text = std::str::from_utf8(body).map_err(|_| bad("the body is not UTF-8"))?;
    let (first, mut rest) = text
        .split_once('\n')
        .ok_or_else(|| bad("no old size line"))?;
    let size = first
        .strip_prefix("old ")
        .ok_or_else(|| bad("the first line is not `old <size>`"))?;
    let old = parse_size(size).ok_or_else(|| bad("the old size is not a canonical decimal"))?;
    let mut proof = Vec::new();
    loop {
        let (line, after) = rest
            .split_once('\n')
            .ok_or_else(|| bad("no empty line before the checkpoint"))?;
        rest = after;
        if line.is_empty() {
            break;
        }
        if proof.len() == MAX_PROOF_LINES {
            return Err(bad(format!(
                "more than {MAX_PROOF_LINES} consistency proof lines"
            )));
        }
        proof.push(decode_hash(line).ok_or_else(|| bad("a proof line is not a base64 hash"))?);
    }
    if rest.is_empty() {
        return Err(bad("no checkpoint after the empty line"));
    }
    Ok(AddCheckpoint {
        old,
        proof,
        note: rest.to_string(),
    })
}

/// A canonical decimal u64: digits only, no leading zero unless `0`.
fn parse_size(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

/// A log this witness witnesses.
#[derive(Debug, Clone)]
pub struct WitnessedLog {
    /// Its origin line.
    pub origin: String,
    /// The keys its checkpoints may be signed with (one valid signature
    /// from any of them suffices, unless `quorum` says more).
    pub keys: Vec<NoteVerifier>,
    /// Distinct keys (by name) that must have signed; at least 1.
    pub quorum: usize,
    /// Its tree hash: RFC 6962 SHA-256 for every C2SP log; BLAKE3 for a
    /// DLog log created that way.
    pub hash: HashAlg,
}

/// What this witness last cosigned for an origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cosigned {
    /// Tree size.
    pub size: u64,
    /// Root hash.
    pub root: Hash,
}

/// A checkpoint that passed every check: cosign `text`, after persisting
/// `state` as the origin's new state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// The note text (the body) the cosignature signs.
    pub text: String,
    /// The origin's state once cosigned.
    pub state: Cosigned,
}

/// The origin of a request's checkpoint, read without verifying anything
/// (to find the log and its state before [`decide`]).
pub fn origin_of(req: &AddCheckpoint) -> Result<&str, Refusal> {
    let line = req.note.split('\n').next().unwrap_or_default();
    if line.is_empty() {
        return Err(bad("the checkpoint has no origin line"));
    }
    Ok(line)
}

/// Decides a request for `log`, whose last cosigned state is `last`
/// (`None`: never cosigned). In the order the spec gives: the signature
/// (403), old ≤ size (400), old = the last cosigned size (409), the same
/// root at the same size (409), then the proof (422).
pub fn decide(
    log: &WitnessedLog,
    last: Option<&Cosigned>,
    req: &AddCheckpoint,
) -> Result<Accepted, Refusal> {
    let note = SignedNote::parse(&req.note).map_err(|e| bad(format!("checkpoint: {e}")))?;
    let checkpoint =
        Checkpoint::parse_body(&note.text).map_err(|e| bad(format!("checkpoint: {e}")))?;
    if checkpoint.origin != log.origin {
        return Err(Refusal::UnknownOrigin);
    }
    // Signatures from unknown keys are ignored; a known key's signature
    // that does not verify counts as none.
    let mut signed: Vec<&str> = Vec::new();
    for sig in &note.signatures {
        let ok = log
            .keys
            .iter()
            .any(|k| k.name() == sig.name && k.key_id() == sig.key_id && k.verify(&note.text, sig));
        if ok && !signed.contains(&sig.name.as_str()) {
            signed.push(&sig.name);
        }
    }
    if signed.len() < log.quorum.max(1) {
        return Err(Refusal::Forbidden);
    }
    let size = checkpoint.size;
    if req.old > size {
        return Err(bad(format!(
            "old size {} is larger than the checkpoint's {size}",
            req.old
        )));
    }
    let last_size = last.map_or(0, |l| l.size);
    if req.old != last_size {
        return Err(Refusal::Conflict { size: last_size });
    }
    match last {
        None => {
            if !req.proof.is_empty() {
                return Err(Refusal::BadProof(
                    "the proof must be empty when the old size is 0".into(),
                ));
            }
            if size == 0 && checkpoint.root != log.hash.empty_root() {
                return Err(Refusal::BadProof(
                    "a tree of size 0 has the empty tree's root".into(),
                ));
            }
        }
        Some(l) if l.size == size => {
            if l.root != checkpoint.root {
                return Err(Refusal::Conflict { size: l.size });
            }
            if !req.proof.is_empty() {
                return Err(Refusal::BadProof(
                    "the proof must be empty between equal sizes".into(),
                ));
            }
        }
        Some(l) => {
            if l.size == 0 {
                // From the empty tree every tree is consistent; the proof
                // is empty.
                if !req.proof.is_empty() {
                    return Err(Refusal::BadProof(
                        "the proof must be empty when the old size is 0".into(),
                    ));
                }
            } else {
                dlog_crypto::tree::verify_consistency_with(
                    log.hash,
                    l.size,
                    size,
                    &l.root,
                    &checkpoint.root,
                    &req.proof,
                )
                .map_err(|e| Refusal::BadProof(e.to_string()))?;
            }
        }
    }
    let state = Cosigned {
        size,
        root: checkpoint.root,
    };
    Ok(Accepted {
        checkpoint,
        text: note.text,
        state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dlog_crypto::keys::NodeKey;
    use dlog_crypto::tree::AlgTree;
    use proptest::prelude::*;

    fn body(old: u64, proof: &[Hash], note: &str) -> Vec<u8> {
        use base64::Engine;
        let mut s = format!("old {old}\n");
        for h in proof {
            s.push_str(&base64::engine::general_purpose::STANDARD.encode(h));
            s.push('\n');
        }
        s.push('\n');
        s.push_str(note);
        s.into_bytes()
    }

    struct Log {
        key: NodeKey,
        tree: AlgTree,
        log: WitnessedLog,
    }

    fn log() -> Log {
        let key = NodeKey::generate("example.com/log").unwrap();
        let log = WitnessedLog {
            origin: "example.com/log".into(),
            keys: vec![key.note_signer().verifier()],
            quorum: 1,
            hash: HashAlg::Sha256,
        };
        let mut tree = AlgTree::new(HashAlg::Sha256);
        for i in 0..40u32 {
            tree.push(HashAlg::Sha256.hash_leaf(&i.to_be_bytes()));
        }
        Log { key, tree, log }
    }

    impl Log {
        fn note(&self, size: u64) -> String {
            let cp =
                Checkpoint::new(&self.log.origin, size, self.tree.root_at(size).unwrap()).unwrap();
            let mut n = SignedNote::new(cp.to_body()).unwrap();
            n.add_signature(self.key.note_signer().sign(&n.text));
            n.to_string()
        }

        fn req(&self, old: u64, new: u64) -> AddCheckpoint {
            let proof = if old == 0 {
                vec![]
            } else {
                self.tree.consistency_proof(old, new).unwrap()
            };
            parse_request(&body(old, &proof, &self.note(new))).unwrap()
        }

        fn state(&self, size: u64) -> Cosigned {
            Cosigned {
                size,
                root: self.tree.root_at(size).unwrap(),
            }
        }
    }

    #[test]
    fn parses_the_spec_shape_and_refuses_the_rest() {
        let l = log();
        let r = l.req(3, 17);
        assert_eq!(
            (r.old, r.proof.len()),
            (3, l.tree.consistency_proof(3, 17).unwrap().len())
        );
        let note = l.note(5);
        for (b, why) in [
            (format!("old 03\n\n{note}"), "leading zero"),
            (format!("old -1\n\n{note}"), "sign"),
            (format!("old 1\nnot-a-hash\n\n{note}"), "proof line"),
            (format!("old 1\n{note}"), "no empty line"),
            (format!("older 1\n\n{note}"), "keyword"),
            ("old 1\n\n".to_string(), "no note"),
            ("old 1".to_string(), "no newline"),
        ] {
            assert!(
                matches!(parse_request(b.as_bytes()), Err(Refusal::BadRequest(_))),
                "{why}"
            );
        }
        let too_many = body(1, &[[7u8; 32]; 64], &note);
        assert!(matches!(
            parse_request(&too_many),
            Err(Refusal::BadRequest(_))
        ));
        assert!(parse_request(&body(1, &[[7u8; 32]; 63], &note)).is_ok());
        assert!(matches!(
            parse_request(&vec![b'a'; MAX_BODY + 1]),
            Err(Refusal::BadRequest(_))
        ));
    }

    #[test]
    fn every_status_code() {
        let l = log();
        // First contact: old 0, empty proof.
        let a = decide(&l.log, None, &l.req(0, 10)).unwrap();
        assert_eq!(a.state, l.state(10));
        // Consistent growth.
        let s = l.state(10);
        assert_eq!(
            decide(&l.log, Some(&s), &l.req(10, 25)).unwrap().state,
            l.state(25)
        );
        // The same checkpoint again: cosigned again.
        assert!(decide(&l.log, Some(&s), &l.req(10, 10)).is_ok());
        // 409: stale old, and the witness's size in the answer.
        assert_eq!(
            decide(&l.log, Some(&l.state(25)), &l.req(10, 30)),
            Err(Refusal::Conflict { size: 25 })
        );
        assert_eq!(
            decide(&l.log, None, &l.req(10, 30)),
            Err(Refusal::Conflict { size: 0 })
        );
        // 409: same size, another root.
        let forked = Cosigned {
            size: 10,
            root: [9; 32],
        };
        assert_eq!(
            decide(&l.log, Some(&forked), &l.req(10, 10)),
            Err(Refusal::Conflict { size: 10 })
        );
        // 422: a proof from another tree.
        assert!(matches!(
            decide(&l.log, Some(&forked), &l.req(10, 20)),
            Err(Refusal::BadProof(_))
        ));
        // 400: old above the checkpoint.
        let mut r = l.req(0, 10);
        r.old = 11;
        assert!(matches!(
            decide(&l.log, Some(&l.state(11)), &r),
            Err(Refusal::BadRequest(_))
        ));
        // 403: another key; 404: another origin.
        let other = log();
        assert_eq!(
            decide(&l.log, None, &other.req(0, 5)),
            Err(Refusal::Forbidden)
        );
        let mut stranger = l.log.clone();
        stranger.origin = "example.com/other".into();
        assert_eq!(
            decide(&stranger, None, &l.req(0, 5)),
            Err(Refusal::UnknownOrigin)
        );
        // 422: a proof where none may be.
        let mut r = l.req(0, 10);
        r.proof.push([1; 32]);
        assert!(matches!(
            decide(&l.log, None, &r),
            Err(Refusal::BadProof(_))
        ));
        assert_eq!(Refusal::Conflict { size: 1 }.status(), 409);
    }

    #[test]
    fn a_known_key_with_a_bad_signature_counts_as_none() {
        let l = log();
        let note = l.note(5);
        // Flip a byte of the signature (the last base64 character group).
        let i = note.len() - 4;
        let mut b = note.into_bytes();
        b[i] = if b[i] == b'A' { b'B' } else { b'A' };
        let r = parse_request(&body(0, &[], &String::from_utf8(b).unwrap())).unwrap();
        assert!(matches!(
            decide(&l.log, None, &r),
            Err(Refusal::Forbidden) | Err(Refusal::BadRequest(_))
        ));
    }

    proptest! {
        #[test]
        fn the_parser_never_panics(b in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_request(&b);
        }

        /// A witness fed any sequence of (old, new) requests never goes
        /// back in size and only ever moves along one tree.
        #[test]
        fn state_only_grows_along_the_tree(steps in proptest::collection::vec((0u64..41, 0u64..41), 1..30)) {
            let l = log();
            let mut last: Option<Cosigned> = None;
            for (old, new) in steps {
                let (old, new) = (old.min(new), old.max(new));
                let r = l.req(old, new);
                if let Ok(a) = decide(&l.log, last.as_ref(), &r) {
                    prop_assert!(last.is_none_or(|s| a.state.size >= s.size));
                    prop_assert_eq!(a.state, l.state(new));
                    last = Some(a.state);
                }
            }
        }
    }
}
