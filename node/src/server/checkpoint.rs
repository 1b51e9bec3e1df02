//! Checkpoint rounds on the leader: announce seals, collect a majority of
//! voter signatures on the new tree head, and commit it through Raft.

use super::leader::is_leader;
use super::peer::hex;
use super::Inner;
use crate::error::{NodeError, Result};
use crate::rpc::{Call, ErrorCode, Reply, RpcError};
use crate::types::{NodeId, Request};
use dlog_crypto::note::{Checkpoint, NoteSignature, SignedNote};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Chain hash after segment `s`, recomputed from the sealed roots.
pub(super) fn chain_at(l: &dlog_ledger::Ledger, s: u64) -> Result<[u8; 32]> {
    let bits = l.meta().segment_bits as u32;
    let mut chain = [0u8; 32];
    for i in 0..=s {
        let root = l.node(bits, i)?;
        chain = dlog_crypto::hash::chain_hash(i, &root, &chain);
    }
    Ok(chain)
}

/// Shortest time between two checkpoint rounds.
pub(super) const MIN_ROUND: Duration = Duration::from_millis(10);

/// On the leader: announce seals, and get a majority to sign new checkpoints
/// (one round at a time; appends during a round are covered by the next).
pub(super) async fn run(inner: Arc<Inner>) {
    let every = Duration::from_millis(inner.cfg.batch.checkpoint_ms);
    let mut announced_seals = 0u64;
    let mut last_round = Instant::now();
    loop {
        // Right after appends commit (so receipts come fast), else every `every`.
        tokio::select! {
            _ = inner.appended.notified() => {}
            _ = tokio::time::sleep(every) => {}
        }
        // At most one round per MIN_ROUND: rounds cost a Raft entry and a
        // signature exchange, which single appenders should not pay each time.
        if let Some(wait) = MIN_ROUND.checked_sub(last_round.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        last_round = Instant::now();
        if !is_leader(&inner) {
            continue;
        }
        let job = {
            let g = inner.sm.lock();
            if g.diverged.is_some() {
                continue;
            }
            let Ok(l) = g.ledger() else { continue };
            let mut seals = Vec::new();
            let sealed = l.sealed_segments();
            let bits = l.meta().segment_bits as u32;
            // Start after what already went through Raft (a new leader does
            // not announce every old segment again).
            announced_seals = announced_seals.max(g.applied().seals_recorded);
            for s in announced_seals..sealed {
                if let (Ok(root), Ok(chain)) = (l.node(bits, s), chain_at(l, s)) {
                    seals.push(Request::Seal {
                        segment: s,
                        root,
                        chain,
                    });
                }
            }
            announced_seals = sealed;
            let size = l.size();
            let stored = l.checkpoint().map(|c| c.size).unwrap_or(0);
            let cp = if size > stored || (size == 0 && l.checkpoint().is_none()) {
                l.root_at(size).ok().map(|r| (size, r))
            } else {
                None
            };
            (seals, cp)
        };
        let (seals, cp) = job;
        for s in seals {
            if let Err(e) = inner.raft.client_write(s).await {
                tracing::debug!(%e, "seal record not committed");
            }
        }
        let Some((size, root)) = cp else { continue };
        match collect_signatures(&inner, size, root).await {
            Ok(note) => match inner.raft.client_write(Request::Checkpoint { note }).await {
                Ok(_) => {
                    inner.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        size,
                        "checkpoint committed with a majority of voter signatures"
                    );
                }
                Err(e) => tracing::debug!(%e, "checkpoint not committed"),
            },
            Err(e) => tracing::warn!(size, %e, "no majority signed the checkpoint"),
        }
    }
}

/// Signs the checkpoint of `size` and `root` and gathers the other voters'
/// signatures: enough for a majority of the current voters, and, with a
/// trust file, enough of its keys for offline verifiers (its quorum). A
/// voter's signature counts towards the majority if it verifies under the
/// key that voter presents (its reply came over its own tunnel: a promoted
/// node's key need not be in the trust file) if the key is named after the
/// voter, once per voter; under a name the trust file lists, only the
/// listed key is accepted. Whether the trust file's quorum is met is
/// decided by the same check offline verifiers run.
pub(super) async fn collect_signatures(
    inner: &Arc<Inner>,
    size: u64,
    root: [u8; 32],
) -> Result<String> {
    let body = Checkpoint::new(inner.cfg.log.origin.clone(), size, root)
        .map_err(|e| NodeError::Verify(e.to_string()))?
        .to_body();
    let mut note = SignedNote::new(body).map_err(|e| NodeError::Verify(e.to_string()))?;
    let text = note.text.clone();
    let own = inner.signer.sign(&text);
    // Some(valid) under a name the trust file lists, None otherwise.
    let trusted_key = |sig: &NoteSignature| -> Option<bool> {
        let t = inner.trust.as_ref()?;
        t.voters
            .iter()
            .find(|v| v.name() == sig.name)
            .map(|v| v.verify(&text, sig))
    };
    note.add_signature(own);
    let mut signers = std::collections::HashSet::from([inner.cfg.name.clone()]);
    // Enough for offline verifiers: exactly what they will check.
    let verifies = |note: &SignedNote| {
        inner
            .voter_trust
            .as_ref()
            .is_none_or(|t| t.verify_checkpoint(&note.to_string()).is_ok())
    };
    let mut trusted = verifies(&note);
    let m = inner.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership().clone();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let need = voters.len() / 2 + 1;
    let mut set = tokio::task::JoinSet::new();
    for id in voters.iter().copied().filter(|id| *id != inner.cfg.id) {
        let Some(node) = membership.get_node(&id) else {
            continue;
        };
        let Some(peer) = inner.peers.by_name(&node.addr).map(|p| p.public_key) else {
            continue;
        };
        let (pool, name) = (inner.pool.clone(), node.addr.clone());
        set.spawn(async move {
            let r = pool
                .call_raw(
                    &peer,
                    &Call::SignCheckpoint { size, root },
                    Duration::from_secs(4),
                )
                .await;
            (name, r)
        });
    }
    let mut differ = 0usize;
    while signers.len() < need || !trusted {
        let Some(res) = set.join_next().await else {
            return Err(NodeError::Verify(format!(
                "{} of {need} voter signatures{}",
                signers.len(),
                if trusted {
                    ""
                } else {
                    ", not enough from the trust file's keys"
                }
            )));
        };
        let (voter, name, key_id, signature, vkey) = match res {
            Ok((
                voter,
                Ok(Ok(Reply::Signature {
                    name,
                    key_id,
                    signature,
                    vkey,
                })),
            )) => (voter, name, key_id, signature, vkey),
            Ok((
                voter,
                Ok(Err(RpcError {
                    code: ErrorCode::RootDiffers,
                    message,
                    ..
                })),
            )) => {
                differ += 1;
                tracing::error!(%voter, %message, "a voter computes another root than this leader");
                if differ >= need {
                    // A majority of the voters agree with each other and
                    // not with this replica: it is the odd one.
                    let why = format!(
                        "{differ} of {} voters compute another root at size {size} than this leader's {}",
                        voters.len(),
                        hex(&root)
                    );
                    inner.sm.lock().diverge(why.clone());
                    return Err(NodeError::Verify(why));
                }
                continue;
            }
            _ => continue,
        };
        let sig = NoteSignature {
            name,
            key_id,
            signature,
        };
        // The voter's own signature (its key is named after it), once.
        let presented = sig.name == voter
            && dlog_crypto::note::NoteVerifier::from_vkey(&vkey)
                .is_ok_and(|v| v.verify(&text, &sig));
        if !presented || trusted_key(&sig) == Some(false) || !signers.insert(voter.clone()) {
            tracing::warn!(%voter, signer = %sig.name, size, "ignoring a voter signature that does not verify");
            continue;
        }
        note.add_signature(sig);
        trusted = trusted || verifies(&note);
    }
    Ok(note.to_string())
}
