//! Reads for clients and auditors: entries, proofs and checkpoints, served
//! from this replica when it holds what is asked, else forwarded.

use super::fail_stop::serving;
use super::leader::{forward, is_leader};
use super::{bad, internal, Inner};
use crate::rpc::{
    Call, ErrorCode, Reply, RpcError, MAX_CHECKPOINT_WAIT_MS, MAX_ENTRIES_BYTES,
    MAX_ENTRIES_PER_CALL,
};
use dlog_crypto::note::Checkpoint;
use dlog_wg::core::PeerInfo;
use openraft::ServerState;
use std::time::{Duration, Instant};

/// The checkpoint this replica stored last (not a linearizable read).
pub(super) fn stored_checkpoint(
    inner: &Inner,
    confirmed: bool,
) -> std::result::Result<Reply, RpcError> {
    let behind_ms = if confirmed {
        Some(0)
    } else {
        let (leader, quorum_ack, applied) = {
            let m = inner.raft.metrics();
            let m = m.borrow();
            let applied = m.last_applied.map_or(0, |l| l.index);
            (
                m.state == ServerState::Leader,
                m.millis_since_quorum_ack,
                applied,
            )
        };
        if leader {
            // A leader is current as of its last majority acknowledgement.
            quorum_ack
        } else {
            inner
                .commit_news
                .behind(applied, Instant::now())
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        }
    };
    let g = inner.sm.lock();
    serving(&g)?;
    let l = g.ledger().map_err(internal)?;
    let (note, size) = l
        .checkpoint()
        .map(|c| (c.note.clone(), c.size))
        .unwrap_or_default();
    Ok(Reply::Checkpoint {
        note,
        size,
        applied: l.size(),
        behind_ms,
    })
}

/// Serves a read from this replica's ledger when it holds the `needed`
/// entries the read is about. A follower that does not hold them yet (an
/// append the leader acknowledged may not be applied here) forwards the
/// call to the leader, so a client reads what was acknowledged wherever its
/// call lands; the leader answers a read past its log itself (a bad
/// request). Entries and proofs of a given size never change, so a read
/// served here is never stale.
pub(super) async fn read(
    inner: &Inner,
    from: &PeerInfo,
    call: Call,
    needed: u64,
    f: impl Fn(&dlog_ledger::Ledger) -> dlog_ledger::Result<Reply>,
) -> std::result::Result<Reply, RpcError> {
    // Answered here if this replica holds the entries (or the leader has
    // confirmed it is current), `None` otherwise.
    let here = |confirmed: bool| -> Option<std::result::Result<Reply, RpcError>> {
        let g = inner.sm.lock();
        if let Err(e) = serving(&g) {
            return Some(Err(e));
        }
        let l = match g.ledger() {
            Ok(l) => l,
            Err(e) => return Some(Err(internal(e))),
        };
        (l.size() >= needed || confirmed).then(|| f(l).map_err(bad))
    };
    if let Some(r) = here(false) {
        return r;
    }
    if !is_leader(inner) {
        return forward(inner, from, &call).await;
    }
    // The leader may not have applied everything committed yet (just
    // elected), or may have been deposed without knowing it: a ReadIndex
    // round settles both before it calls the read out of range.
    inner
        .raft
        .ensure_linearizable()
        .await
        .map_err(|e| match e.forward_to_leader() {
            Some(_) => RpcError::new(ErrorCode::NotLeader, "not the leader"),
            None => internal(e),
        })?;
    here(true).unwrap_or_else(|| Err(internal("unreachable: a confirmed read is answered")))
}

/// `Call::Get`.
pub(super) async fn get(
    inner: &Inner,
    from: &PeerInfo,
    index: u64,
) -> std::result::Result<Reply, RpcError> {
    let call = Call::Get { index };
    read(inner, from, call, index.saturating_add(1), |l| {
        l.entry(index).map(Reply::Entry)
    })
    .await
}

/// `Call::Inclusion`.
pub(super) async fn inclusion(
    inner: &Inner,
    from: &PeerInfo,
    index: u64,
    size: u64,
) -> std::result::Result<Reply, RpcError> {
    let call = Call::Inclusion { index, size };
    read(inner, from, call, size, |l| {
        l.inclusion_proof(index, size).map(Reply::Proof)
    })
    .await
}

/// `Call::Consistency`.
pub(super) async fn consistency(
    inner: &Inner,
    from: &PeerInfo,
    old: u64,
    new: u64,
) -> std::result::Result<Reply, RpcError> {
    let call = Call::Consistency { old, new };
    read(inner, from, call, new, |l| {
        l.consistency_proof(old, new).map(Reply::Proof)
    })
    .await
}

/// `Call::Checkpoint`: a linearizable read runs ReadIndex on the leader
/// (a follower forwards it).
pub(super) async fn checkpoint(
    inner: &Inner,
    from: &PeerInfo,
    linearizable: bool,
) -> std::result::Result<Reply, RpcError> {
    if linearizable {
        if !is_leader(inner) {
            return forward(inner, from, &Call::Checkpoint { linearizable }).await;
        }
        inner
            .raft
            .ensure_linearizable()
            .await
            .map_err(|e| match e.forward_to_leader() {
                Some(_) => RpcError::new(ErrorCode::NotLeader, "not the leader"),
                None => internal(e),
            })?;
    }
    stored_checkpoint(inner, linearizable)
}

/// `Call::WaitCheckpoint`: what this replica has stored once it covers
/// `covering`, or after the wait.
pub(super) async fn wait_checkpoint(
    inner: &Inner,
    covering: u64,
    wait_ms: u32,
) -> std::result::Result<Reply, RpcError> {
    // Either way the answer is what this replica has stored by then.
    wait_past(inner.sm.watch_checkpoints(), covering, wait_ms).await;
    stored_checkpoint(inner, false)
}

/// `Call::Entries`: consecutive canonical entries, bounded in count and bytes.
pub(super) async fn entries(
    inner: &Inner,
    from: &PeerInfo,
    start: u64,
    max: u32,
    local: bool,
) -> std::result::Result<Reply, RpcError> {
    let max = max.clamp(1, MAX_ENTRIES_PER_CALL);
    let range = move |l: &dlog_ledger::Ledger| {
        let end = l.size().min(start.saturating_add(max.into()));
        // Out of range: the ledger's own error says so.
        let mut out = vec![serde_bytes::ByteBuf::from(l.entry(start)?)];
        let mut bytes = out[0].len();
        for i in start + 1..end {
            let e = l.entry(i)?;
            bytes += e.len();
            if bytes > MAX_ENTRIES_BYTES {
                break;
            }
            out.push(serde_bytes::ByteBuf::from(e));
        }
        Ok(Reply::Entries(out))
    };
    if local {
        let g = inner.sm.lock();
        serving(&g)?;
        return range(g.ledger().map_err(internal)?).map_err(bad);
    }
    let call = Call::Entries { start, max, local };
    read(inner, from, call, start.saturating_add(1), range).await
}

/// `Call::Witnessed`: the witnessed checkpoint this replica holds once it
/// covers `covering`, or after the wait.
pub(super) async fn witnessed(
    inner: &Inner,
    covering: u64,
    wait_ms: u32,
) -> std::result::Result<Reply, RpcError> {
    wait_past(inner.sm.watch_witnessed(), covering, wait_ms).await;
    let g = inner.sm.lock();
    serving(&g)?;
    let applied = g.ledger().map_err(internal)?.size();
    let note = g.witnessed().unwrap_or_default().to_string();
    let size = Checkpoint::from_note(&note).map_or(0, |c| c.size);
    Ok(Reply::Checkpoint {
        note,
        size,
        applied,
        behind_ms: None,
    })
}

/// Waits until the size `rx` watches passes `covering`, or `wait_ms`
/// (at most [`MAX_CHECKPOINT_WAIT_MS`]) ran out.
async fn wait_past(mut rx: tokio::sync::watch::Receiver<u64>, covering: u64, wait_ms: u32) {
    let wait = Duration::from_millis(wait_ms.min(MAX_CHECKPOINT_WAIT_MS).into());
    let _ = tokio::time::timeout(wait, rx.wait_for(|size| *size > covering)).await;
}
