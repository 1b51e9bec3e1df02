//! Calls from peers: Raft messages, and the leader's request to sign a
//! checkpoint.

use super::fail_stop::serving;
use super::leader::{is_leader, leader_of, leader_peer};
use super::{bad, internal, Inner};
use crate::failover::{self};
use crate::rpc::RaftKind;
use crate::rpc::{ErrorCode, RaftCall, RaftReply, Reply, RpcError};
use crate::types::NodeId;
use dlog_crypto::note::Checkpoint;
use dlog_wg::core::PeerInfo;
use openraft::metrics::RaftServerMetrics;
use openraft::BasicNode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One Raft message from a peer, handed to openraft.
pub(super) async fn raft_call(
    inner: &Arc<Inner>,
    call: RaftCall,
) -> std::result::Result<RaftReply, RpcError> {
    match call {
        RaftCall::AppendEntries(r) => {
            // Heard on arrival: a big entry's fsync must not look like silence.
            inner.contact.heard_under(&r.vote);
            let arrived = Instant::now();
            let commit = r.leader_commit.map_or(0, |l| l.index);
            let resp = inner.raft.append_entries(r).await.map_err(internal)?;
            // News of the leader's commit index only from a leader this
            // node accepts (not from a deposed one).
            if resp.is_success() {
                inner.commit_news.heard(commit, arrived);
            }
            Ok(RaftReply::AppendEntries(resp))
        }
        RaftCall::Vote(r) => {
            let resp = inner.raft.vote(r.clone()).await.map_err(internal)?;
            let lease = Duration::from_millis(inner.cfg.raft.election_max_ms);
            if !is_leader(inner)
                && failover::should_campaign(&r, &resp, inner.contact.silent_for(), lease)
            {
                let inner = inner.clone();
                tokio::spawn(async move {
                    let patience = Duration::from_millis(inner.cfg.raft.heartbeat_ms);
                    failover::campaign(inner.raft.clone(), &inner.contact, inner.cfg.id, patience)
                        .await;
                });
            }
            Ok(RaftReply::Vote(resp))
        }
        RaftCall::InstallSnapshot(r) => {
            inner.contact.heard_under(&r.vote);
            inner
                .raft
                .install_snapshot(r)
                .await
                .map(RaftReply::InstallSnapshot)
                .map_err(internal)
        }
    }
}

/// A voter signs for its current Raft leader only, and only after it has
/// recomputed the root at `size` itself and found the same.
pub(super) async fn sign_checkpoint(
    inner: &Inner,
    from: &PeerInfo,
    size: u64,
    root: [u8; 32],
) -> std::result::Result<Reply, RpcError> {
    let end = Instant::now() + Duration::from_secs(3);
    // A leader asks right after it commits in its term, when this node may
    // not have published that leader yet: wait for it a moment.
    let mut rx = inner.raft.server_metrics();
    let follows = |m: &RaftServerMetrics<NodeId, BasicNode>| {
        leader_of(m).is_some_and(|(_, name)| name == from.name)
    };
    let followed = matches!(
        tokio::time::timeout_at(end.into(), rx.wait_for(follows)).await,
        Ok(Ok(_))
    );
    if !followed {
        let leader = leader_peer(inner).map(|l| l.1);
        inner.counters.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(peer = %from.name, ?leader, size, "refused to sign for a node that is not the leader");
        return Err(RpcError::new(
            ErrorCode::Refused,
            format!(
                "{} is not this node's leader ({}): not signing",
                from.name,
                leader.as_deref().unwrap_or("none known")
            ),
        ));
    }
    loop {
        {
            let g = inner.sm.lock();
            serving(&g)?;
            let l = g.ledger().map_err(internal)?;
            if l.size() >= size {
                let ours = l.root_at(size).map_err(internal)?;
                if ours != root {
                    // One of the two has diverged, and a pair cannot tell
                    // which: refuse, loudly. If this replica is the odd one,
                    // the other voters sign, the checkpoint commits through
                    // Raft, and applying it marks this replica diverged; if
                    // the leader is, no majority signs and nobody else
                    // stops serving.
                    let why = format!(
                        "asked to sign size {size}: own root {} differs from the leader's {}",
                        hex(&ours),
                        hex(&root)
                    );
                    tracing::error!(evidence = %why, "refusing to sign a checkpoint");
                    return Err(RpcError::new(
                        ErrorCode::RootDiffers,
                        format!("{why}; not signing"),
                    ));
                }
                break;
            }
        }
        if Instant::now() >= end {
            return Err(RpcError::new(
                ErrorCode::Internal,
                format!("size {size} not applied here yet"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let body = Checkpoint::new(inner.cfg.log.origin.clone(), size, root)
        .map_err(internal)?
        .to_body();
    let sig = inner.signer.sign(&body);
    Ok(Reply::Signature {
        name: sig.name,
        key_id: sig.key_id,
        signature: sig.signature,
        vkey: inner.signer.vkey(),
    })
}

pub(super) fn hex(h: &[u8]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// `Call::Raft`: decodes the opaque body and hands it to openraft.
pub(super) async fn raft(
    inner: &Arc<Inner>,
    kind: RaftKind,
    body: Vec<u8>,
) -> std::result::Result<Reply, RpcError> {
    let call = RaftCall::decode(kind, &body).map_err(bad)?;
    drop(body);
    raft_call(inner, call).await?.to_reply().map_err(internal)
}
