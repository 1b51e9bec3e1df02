//! The witnessed checkpoint: how the leader merges auditors' cosignatures
//! (sans-IO).
//!
//! Auditors follow the log on their own schedule, so each would cosign a
//! different checkpoint. A verifier that needs `cosignatures = k` wants *one*
//! checkpoint carrying k of them. The leader therefore keeps one witnessed
//! checkpoint `W` and steers auditors onto it:
//!
//! * a cosignature of `W`'s size is added to `W` (replacing that auditor's
//!   earlier line);
//! * a cosignature of a newer checkpoint replaces `W` once `W` is complete
//!   (every trusted auditor cosigned it) or stopped gathering (no
//!   cosignature joined it within the join window, so a dead auditor cannot
//!   hold `W` back);
//! * otherwise the auditor is told to cosign `W` (it verifies `W` against
//!   its own tree first, as with anything it cosigns).
//!
//! Only one cosignature is taken from a submission (see [`cosigner_of`]):
//! the caller's own, under the trust file's key of the caller's peer name,
//! or, relayed by an auditor from an external C2SP witness, the line of the
//! one trust-file auditor it carries (a cosignature counts because it
//! verifies under a key the trust file lists, whoever relayed it). The
//! voter signatures must meet the trust file's quorum. [`merge`] decides; the server checks the root
//! against its ledger and commits the result through Raft.

use dlog_crypto::note::{Checkpoint, NoteSignature, SignedNote};
use dlog_crypto::trust::TrustPolicy;

/// What to do with a submitted cosignature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merge {
    /// Commit this note as the new witnessed checkpoint.
    Accept(String),
    /// Keep the current one; the caller should cosign it instead.
    Join(String),
    /// The current one already carries the caller's cosignature of this
    /// checkpoint: nothing to commit.
    Already(String),
}

/// A submission that cannot be merged (a bad request).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WitnessError {
    /// The note or its voter signatures do not pass the trust file.
    #[error("not a checkpoint the trust file accepts: {0}")]
    Untrusted(String),
    /// The caller has no key in the trust file's auditors.
    #[error("{0} is not an auditor of the trust file")]
    UnknownAuditor(String),
    /// No valid cosignature by the caller.
    #[error("the note carries no valid cosignature by {0}")]
    NoCosignature(String),
    /// The stored witnessed checkpoint has the same size but another text.
    #[error("a witnessed checkpoint of size {0} with another text is stored")]
    Conflict(u64),
}

/// The parsed parts of a submission that the server needs after [`merge`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    /// The checkpoint (origin, size, root).
    pub checkpoint: Checkpoint,
    /// The caller's cosignature time (Unix seconds).
    pub time: u64,
}

/// Whose cosignature a submission from peer `caller` carries: `caller`'s
/// when the note has a line of that name, else the one trust-file auditor
/// name other than the voters' that has a line in it (a cosignature an
/// auditor relays from an external witness). Anything else is `caller`
/// (and [`merge`] then says what is missing).
pub fn cosigner_of(trust: &TrustPolicy, caller: &str, submitted: &str) -> String {
    let Ok(note) = SignedNote::parse(submitted) else {
        return caller.to_string();
    };
    if note.signatures.iter().any(|s| s.name == caller) {
        return caller.to_string();
    }
    let mut names: Vec<&str> = note
        .signatures
        .iter()
        .map(|s| s.name.as_str())
        .filter(|n| trust.auditors.iter().any(|a| a.name() == *n))
        .collect();
    names.dedup();
    match names.as_slice() {
        [one] => one.to_string(),
        _ => caller.to_string(),
    }
}

/// Checks `submitted` (a voter-signed checkpoint plus `caller`'s
/// cosignature) and decides against the current witnessed checkpoint.
/// `current_open`: whether the current one may still gather cosignatures
/// (it was stored within the join window).
pub fn merge(
    trust: &TrustPolicy,
    caller: &str,
    submitted: &str,
    current: Option<&str>,
    current_open: bool,
) -> Result<(Merge, Submission), WitnessError> {
    let mut voters_only = trust.clone();
    voters_only.cosignatures = 0;
    let verified = voters_only
        .verify_checkpoint(submitted)
        .map_err(|e| WitnessError::Untrusted(e.to_string()))?;
    let checkpoint = verified.checkpoint().clone();
    let text = verified.body().to_string();
    // Every trust-file key of that name (a rotation may list two).
    let keys: Vec<_> = trust
        .auditors
        .iter()
        .filter(|a| a.name() == caller)
        .collect();
    if keys.is_empty() {
        return Err(WitnessError::UnknownAuditor(caller.to_string()));
    }
    let note = SignedNote::parse(submitted).map_err(|e| WitnessError::Untrusted(e.to_string()))?;
    let (line, time) = note
        .signatures
        .iter()
        .filter(|s| s.name == caller)
        .find_map(|s| {
            let key = keys.iter().find(|k| k.key_id() == s.key_id)?;
            key.verify(&text, s).map(|t| (s.clone(), t))
        })
        .ok_or_else(|| WitnessError::NoCosignature(caller.to_string()))?;
    let submission = Submission { checkpoint, time };
    let size = submission.checkpoint.size;

    // A stored note that does not verify (it never should: every merge
    // checks what it adds) is treated as none, so whatever is accepted
    // verifies as a whole.
    let current = current.and_then(|c| {
        voters_only.verify_checkpoint(c).ok()?;
        let n = SignedNote::parse(c).ok()?;
        let cp = Checkpoint::parse_body(&n.text).ok()?;
        Some((c, n, cp))
    });
    // By name: under any of its keys (a rotation), the caller counts once.
    let mine = |s: &NoteSignature| s.name == caller;
    let decision = match current {
        Some((c, w, cp)) if cp.size == size => {
            if w.text != text {
                return Err(WitnessError::Conflict(size));
            }
            if w.signatures.iter().any(mine) {
                // It verified as a whole, so that line is valid: nothing to add.
                Merge::Already(c.to_string())
            } else {
                let mut w = SignedNote {
                    signatures: trusted_lines(trust, &w.text, &w.signatures, true),
                    text: w.text,
                };
                w.add_signature(line);
                Merge::Accept(w.to_string())
            }
        }
        Some((c, _, cp)) if cp.size > size => Merge::Join(c.to_string()),
        Some((c, w, _)) if current_open && !settled(trust, c, w.signatures.iter().any(mine)) => {
            Merge::Join(c.to_string())
        }
        _ => {
            // A new witnessed checkpoint: the trust file's voter signatures
            // as submitted (verified, one per key) and the caller's
            // cosignature; nothing else, so it stays small and verifies.
            let mut w = SignedNote {
                signatures: trusted_lines(trust, &text, &note.signatures, false),
                text,
            };
            w.add_signature(line);
            Merge::Accept(w.to_string())
        }
    };
    Ok((decision, submission))
}

/// The lines of `sigs` that verify under a trust-file voter key (and, with
/// `cosigners`, a trust-file auditor key), one per key, in note order.
fn trusted_lines(
    trust: &TrustPolicy,
    text: &str,
    sigs: &[NoteSignature],
    cosigners: bool,
) -> Vec<NoteSignature> {
    let mut seen = std::collections::HashSet::new();
    sigs.iter()
        .filter(|s| {
            let voter = trust
                .voters
                .iter()
                .any(|v| v.name() == s.name && v.key_id() == s.key_id && v.verify(text, s));
            let auditor = cosigners
                && trust.auditors.iter().any(|a| {
                    a.name() == s.name && a.key_id() == s.key_id && a.verify(text, s).is_some()
                });
            (voter || auditor) && seen.insert((s.name.clone(), s.key_id))
        })
        .cloned()
        .collect()
}

/// Whether a newer cosignature may replace the witnessed checkpoint `note`
/// even within its join window: every auditor cosigned it, or it has the
/// trust file's required cosignatures and the caller's among them (so a
/// dead auditor does not hold every receipt for the whole window).
fn settled(trust: &TrustPolicy, note: &str, caller_in_it: bool) -> bool {
    complete(trust, note)
        || (caller_in_it && trust.cosignatures > 0 && trust.verify_checkpoint(note).is_ok())
}

/// Whether every auditor of the trust file cosigned `note` (validly).
pub fn complete(trust: &TrustPolicy, note: &str) -> bool {
    let mut all = trust.clone();
    all.cosignatures = all.auditors.len();
    all.verify_checkpoint(note).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dlog_crypto::note::{Cosigner, NoteSigner};
    use ed25519_dalek::SigningKey;

    fn voter(i: u8) -> NoteSigner {
        NoteSigner::new(format!("node-{i}"), SigningKey::from_bytes(&[i; 32])).unwrap()
    }
    fn auditor(i: u8) -> Cosigner {
        Cosigner::new(
            format!("auditor-{i}"),
            SigningKey::from_bytes(&[100 + i; 32]),
        )
        .unwrap()
    }
    fn trust() -> TrustPolicy {
        TrustPolicy::new(
            "dlog/t",
            (1..=3).map(|i| voter(i).verifier()).collect(),
            2,
            (1..=2).map(|i| auditor(i).verifier()).collect(),
            0,
        )
        .unwrap()
    }
    /// A checkpoint of `size` signed by voters 1 and 2, cosigned by `by`.
    fn submit(size: u64, by: &[u8], time: u64) -> String {
        let body = Checkpoint::new("dlog/t", size, [size as u8; 32])
            .unwrap()
            .to_body();
        let mut n = SignedNote::new(body.clone()).unwrap();
        n.add_signature(voter(1).sign(&body));
        n.add_signature(voter(2).sign(&body));
        for &a in by {
            n.add_signature(auditor(a).cosign(&body, time));
        }
        n.to_string()
    }
    fn accepted(m: Merge) -> String {
        match m {
            Merge::Accept(n) => n,
            Merge::Join(n) => panic!("told to join {n}"),
            Merge::Already(n) => panic!("already in {n}"),
        }
    }

    #[test]
    fn first_cosignature_starts_and_second_completes() {
        let t = trust();
        let (m, s) = merge(&t, "auditor-1", &submit(10, &[1], 5), None, false).unwrap();
        assert_eq!(s.time, 5);
        let w = accepted(m);
        assert!(!complete(&t, &w));
        // auditor-2 cosigned a newer one; W is open and incomplete: join W.
        let (m, _) = merge(&t, "auditor-2", &submit(20, &[2], 6), Some(&w), true).unwrap();
        assert_eq!(m, Merge::Join(w.clone()));
        let (m, _) = merge(&t, "auditor-2", &submit(10, &[2], 6), Some(&w), true).unwrap();
        let w2 = accepted(m);
        assert!(complete(&t, &w2));
        let mut need2 = t.clone();
        need2.cosignatures = 2;
        assert!(need2.verify_checkpoint(&w2).is_ok());
        // Complete: a newer cosignature starts the next one.
        let (m, _) = merge(&t, "auditor-1", &submit(30, &[1], 7), Some(&w2), true).unwrap();
        let w3 = accepted(m);
        assert_eq!(size_of(&w3), 30);
        assert_eq!(t.verify_checkpoint(&w3).unwrap().cosignatures().len(), 1);
    }

    #[test]
    fn a_relayed_cosignature_counts_as_its_signer() {
        let t = trust();
        // auditor-1 relays auditor-2's cosignature (an external witness).
        let note = submit(10, &[2], 5);
        assert_eq!(cosigner_of(&t, "auditor-1", &note), "auditor-2");
        let (m, s) = merge(&t, &cosigner_of(&t, "auditor-1", &note), &note, None, false).unwrap();
        assert_eq!(s.time, 5);
        let w = accepted(m);
        let got = t.verify_checkpoint(&w).unwrap();
        assert_eq!(got.cosignatures()[0].0, "auditor-2");
        // Its own line wins; two others leave the caller (merge refuses).
        assert_eq!(
            cosigner_of(&t, "auditor-1", &submit(10, &[1, 2], 5)),
            "auditor-1"
        );
        assert_eq!(cosigner_of(&t, "node-1", &submit(10, &[1, 2], 5)), "node-1");
        assert!(merge(&t, "node-1", &submit(10, &[1, 2], 5), None, false).is_err());
        // A forged relayed line does not verify: refused.
        let forged = note.replacen("auditor-2 ", "auditor-2 A", 1);
        assert!(merge(
            &t,
            &cosigner_of(&t, "auditor-1", &forged),
            &forged,
            None,
            false
        )
        .is_err());
    }

    fn size_of(note: &str) -> u64 {
        Checkpoint::parse_body(&SignedNote::parse(note).unwrap().text)
            .unwrap()
            .size
    }

    #[test]
    fn a_closed_incomplete_one_is_replaced_and_older_ones_join() {
        let t = trust();
        let w = accepted(
            merge(&t, "auditor-1", &submit(10, &[1], 5), None, false)
                .unwrap()
                .0,
        );
        let next = accepted(
            merge(&t, "auditor-2", &submit(20, &[2], 6), Some(&w), false)
                .unwrap()
                .0,
        );
        assert_eq!(size_of(&next), 20);
        // The new one carries no cosignature of auditor-1 (it cosigned 10).
        let v = t.verify_checkpoint(&next).unwrap();
        assert_eq!(v.cosignatures().len(), 1);
        assert_eq!(v.cosignatures()[0].0, "auditor-2");
        let (m, _) = merge(&t, "auditor-1", &submit(15, &[1], 7), Some(&next), false).unwrap();
        assert_eq!(m, Merge::Join(next));
    }

    #[test]
    fn a_second_cosignature_by_the_same_auditor_changes_nothing() {
        let t = trust();
        let w = accepted(
            merge(&t, "auditor-1", &submit(10, &[1], 5), None, false)
                .unwrap()
                .0,
        );
        let (m, _) = merge(&t, "auditor-1", &submit(10, &[1], 9), Some(&w), true).unwrap();
        assert_eq!(m, Merge::Already(w));
    }

    #[test]
    fn junk_lines_never_reach_the_witnessed_note() {
        let t = trust();
        let body = Checkpoint::new("dlog/t", 10, [10; 32]).unwrap().to_body();
        let mut n = SignedNote::new(body.clone()).unwrap();
        n.add_signature(voter(1).sign(&body));
        n.add_signature(voter(2).sign(&body));
        n.add_signature(voter(2).sign(&body));
        let stranger = NoteSigner::new("someone", SigningKey::from_bytes(&[55; 32])).unwrap();
        for _ in 0..20 {
            n.add_signature(stranger.sign(&body));
        }
        n.add_signature(auditor(1).cosign(&body, 5));
        let w = accepted(
            merge(&t, "auditor-1", &n.to_string(), None, false)
                .unwrap()
                .0,
        );
        assert_eq!(SignedNote::parse(&w).unwrap().signatures.len(), 3, "{w}");
    }

    #[test]
    fn with_the_required_cosignatures_a_newer_one_may_replace_it_early() {
        let mut t = trust();
        t.cosignatures = 1;
        let w = accepted(
            merge(&t, "auditor-1", &submit(10, &[1], 5), None, false)
                .unwrap()
                .0,
        );
        // auditor-1 moves on although auditor-2 (maybe dead) never joined.
        let next = accepted(
            merge(&t, "auditor-1", &submit(20, &[1], 6), Some(&w), true)
                .unwrap()
                .0,
        );
        assert_eq!(size_of(&next), 20);
        // auditor-2 is still asked to join an open one it is missing.
        let (m, _) = merge(&t, "auditor-2", &submit(30, &[2], 7), Some(&next), true).unwrap();
        assert_eq!(m, Merge::Join(next));
    }

    #[test]
    fn only_the_callers_own_valid_cosignature_counts() {
        let t = trust();
        // auditor-2 presenting auditor-1's cosignature.
        assert_eq!(
            merge(&t, "auditor-2", &submit(10, &[1], 5), None, false).unwrap_err(),
            WitnessError::NoCosignature("auditor-2".into())
        );
        // A caller that is no trusted auditor.
        assert_eq!(
            merge(&t, "auditor-9", &submit(10, &[1], 5), None, false).unwrap_err(),
            WitnessError::UnknownAuditor("auditor-9".into())
        );
        // A submission carrying someone else's line as well: only the
        // caller's is kept.
        let w = accepted(
            merge(&t, "auditor-1", &submit(10, &[1, 2], 5), None, false)
                .unwrap()
                .0,
        );
        assert_eq!(t.verify_checkpoint(&w).unwrap().cosignatures().len(), 1);
    }

    #[test]
    fn voter_quorum_and_origin_are_required() {
        let t = trust();
        let body = Checkpoint::new("dlog/t", 10, [1; 32]).unwrap().to_body();
        let mut n = SignedNote::new(body.clone()).unwrap();
        n.add_signature(voter(1).sign(&body));
        n.add_signature(auditor(1).cosign(&body, 5));
        assert!(matches!(
            merge(&t, "auditor-1", &n.to_string(), None, false),
            Err(WitnessError::Untrusted(_))
        ));
        let body = Checkpoint::new("dlog/other", 10, [1; 32])
            .unwrap()
            .to_body();
        let mut n = SignedNote::new(body.clone()).unwrap();
        n.add_signature(voter(1).sign(&body));
        n.add_signature(voter(2).sign(&body));
        n.add_signature(auditor(1).cosign(&body, 5));
        assert!(matches!(
            merge(&t, "auditor-1", &n.to_string(), None, false),
            Err(WitnessError::Untrusted(_))
        ));
        assert!(matches!(
            merge(&t, "auditor-1", "garbage", None, false),
            Err(WitnessError::Untrusted(_))
        ));
    }

    #[test]
    fn same_size_with_another_text_is_a_conflict() {
        let t = trust();
        let w = accepted(
            merge(&t, "auditor-1", &submit(10, &[1], 5), None, false)
                .unwrap()
                .0,
        );
        let body = Checkpoint::new("dlog/t", 10, [9; 32]).unwrap().to_body();
        let mut n = SignedNote::new(body.clone()).unwrap();
        n.add_signature(voter(1).sign(&body));
        n.add_signature(voter(3).sign(&body));
        n.add_signature(auditor(2).cosign(&body, 5));
        assert_eq!(
            merge(&t, "auditor-2", &n.to_string(), Some(&w), true).unwrap_err(),
            WitnessError::Conflict(10)
        );
    }

    #[test]
    fn a_damaged_stored_note_is_replaced_not_extended() {
        // Found by the witness_merge fuzz target: a stored note with a bad
        // cosignature line was extended, and the result did not verify.
        let t = trust();
        let w = accepted(
            merge(&t, "auditor-2", &submit(10, &[2], 5), None, false)
                .unwrap()
                .0,
        );
        let at = w.rfind("— auditor-2 ").unwrap() + "— auditor-2 ".len() + 20;
        let mut bad = w.into_bytes();
        bad[at] = if bad[at] == b'A' { b'B' } else { b'A' };
        let bad = String::from_utf8(bad).unwrap();
        assert!(t.verify_checkpoint(&bad).is_err());
        let m = accepted(
            merge(&t, "auditor-1", &submit(10, &[1], 6), Some(&bad), true)
                .unwrap()
                .0,
        );
        let v = t.verify_checkpoint(&m).unwrap();
        assert_eq!(v.cosignatures(), &[("auditor-1".to_string(), 6)]);
    }

    proptest::proptest! {
        /// Whatever order and sizes cosignatures arrive in, the witnessed
        /// size never goes backwards and every accepted note verifies.
        #[test]
        fn never_goes_backwards(steps in proptest::collection::vec((1u8..=2, 1u64..6, proptest::bool::ANY), 1..30)) {
            let t = trust();
            let mut w: Option<String> = None;
            for (a, size, open) in steps {
                let (m, _) = merge(&t, &format!("auditor-{a}"), &submit(size * 10, &[a], 1), w.as_deref(), open).unwrap();
                if let Merge::Accept(n) = m {
                    let before = w.as_deref().map_or(0, size_of);
                    proptest::prop_assert!(size_of(&n) >= before);
                    proptest::prop_assert!(t.verify_checkpoint(&n).is_ok());
                    w = Some(n);
                }
            }
        }
    }
}
