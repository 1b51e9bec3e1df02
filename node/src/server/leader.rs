//! Who leads: the node's status, forwarding to the leader, refusals that
//! name it, and the leader's own duties when it is elected.

use super::{internal, Inner};
use crate::failover::{self};
use crate::rpc::{Call, ErrorCode, NodeStatus, Reply, RpcError};
use crate::types::NodeId;
use dlog_wg::config::Role;
use dlog_wg::core::PeerInfo;
use openraft::error::{ClientWriteError, RaftError};
use openraft::metrics::RaftServerMetrics;
use openraft::{BasicNode, ServerState};
use std::sync::Arc;
use std::time::Duration;

pub(super) fn status(inner: &Inner) -> NodeStatus {
    let m = inner.raft.metrics().borrow().clone();
    let g = inner.sm.lock();
    let l = g.ledger().ok();
    NodeStatus {
        id: inner.cfg.id,
        name: inner.cfg.name.clone(),
        state: match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        }
        .into(),
        term: m.current_term,
        leader: m.current_leader,
        applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
        ledger_size: l.map(|l| l.size()).unwrap_or(0),
        checkpoint_size: l.and_then(|l| l.checkpoint().map(|c| c.size)).unwrap_or(0),
        diverged: g.diverged.clone(),
        voters: m.membership_config.membership().voter_ids().collect(),
    }
}

/// The leader this node knows, with its peer-table name.
pub(super) fn leader_peer(inner: &Inner) -> Option<(NodeId, String)> {
    leader_of(&inner.raft.server_metrics().borrow())
}

pub(super) fn leader_of(m: &RaftServerMetrics<NodeId, BasicNode>) -> Option<(NodeId, String)> {
    let id = m.current_leader?;
    let addr = m.membership_config.membership().get_node(&id)?.addr.clone();
    Some((id, addr))
}

pub(super) fn is_leader(inner: &Inner) -> bool {
    let m = inner.raft.server_metrics();
    let m = m.borrow();
    m.current_leader == Some(inner.cfg.id) && m.state == ServerState::Leader
}

/// Waits (bounded) for a known leader.
pub(super) async fn wait_leader(inner: &Inner, within: Duration) -> Option<(NodeId, String)> {
    let mut rx = inner.raft.server_metrics();
    let found = tokio::time::timeout(within, rx.wait_for(|m| leader_of(m).is_some())).await;
    match found {
        Ok(Ok(m)) => leader_of(&m),
        _ => None,
    }
}

/// Forwards a call to the leader (one hop: only for calls from clients/admins).
pub(super) async fn forward(
    inner: &Inner,
    from: &PeerInfo,
    call: &Call,
) -> std::result::Result<Reply, RpcError> {
    if matches!(from.role, Role::Voter | Role::Learner) {
        return Err(RpcError {
            code: ErrorCode::NotLeader,
            message: "not the leader".into(),
            leader: leader_peer(inner).map(|l| l.1),
        });
    }
    let Some((id, name)) = wait_leader(inner, Duration::from_secs(1)).await else {
        return Err(RpcError::new(ErrorCode::NoLeader, "no leader is known"));
    };
    if name == inner.cfg.name {
        return Err(RpcError::new(
            ErrorCode::NoLeader,
            "leadership is changing; retry",
        ));
    }
    let Some(peer) = inner.peers.by_name(&name).map(|p| p.public_key) else {
        return Err(internal(format!("leader {name} is not in the peer table")));
    };
    // Give up on a leader that went silent or was replaced (a retry with
    // the same session tag is stored once): see `failover`.
    let silence = Duration::from_millis(inner.cfg.raft.election_min_ms);
    tokio::select! {
        biased;
        why = failover::leader_lost(&inner.raft, &inner.contact, id, silence) => {
            Err(RpcError::new(
                ErrorCode::NoLeader,
                format!("not forwarded to {name}: {why}; retry"),
            ))
        }
        r = inner.pool.call_raw(&peer, call, Duration::from_secs(15)) => match r {
            Ok(r) => r,
            Err(e) => Err(RpcError::new(
                ErrorCode::NoLeader,
                format!("forwarding to {name}: {e}"),
            )),
        },
    }
}

/// A refusal that names the leader, for calls that are never forwarded
/// (membership: the leader must see the admin's own key).
pub(super) fn redirect(inner: &Inner) -> RpcError {
    RpcError {
        code: ErrorCode::NotLeader,
        message: "not the leader; call the leader".into(),
        leader: leader_peer(inner).map(|l| l.1),
    }
}

pub(super) fn write_err(
    inner: &Inner,
    e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
) -> RpcError {
    match e.forward_to_leader() {
        Some(f) => RpcError {
            code: ErrorCode::NotLeader,
            message: "not the leader".into(),
            leader: f
                .leader_node
                .as_ref()
                .map(|n| n.addr.clone())
                .or_else(|| leader_peer(inner).map(|l| l.1)),
        },
        None => internal(e),
    }
}

/// Leader: a ReadIndex round, after which everything committed before the
/// call is applied here. Not the leader: a refusal that names it.
pub(super) async fn leader_barrier(inner: &Inner) -> std::result::Result<(), RpcError> {
    inner
        .raft
        .ensure_linearizable()
        .await
        .map(|_| ())
        .map_err(|e| match e.forward_to_leader() {
            Some(_) => redirect(inner),
            None => internal(e),
        })
}

/// Opens the tunnel to every other node once, at start. The other nodes
/// still hold a session with this node's previous incarnation; WireGuard
/// gives no answer to their packets under it, so on their own they notice
/// the restart only when a session times out (5 s without an answer). A
/// handshake from here makes them drop that session and their streams at
/// once (invariant 19). Before a restarted leader waited for no one: it
/// resumed its term and sent to every node itself; it now starts as a
/// follower (vendor/openraft/DLOG-PATCH.md) and, without this, heard from
/// the new leader up to seconds late, or campaigned first and disrupted it.
pub(super) async fn announce(inner: Arc<Inner>) {
    let me = inner.pool.endpoint().public_key();
    let mut calls = tokio::task::JoinSet::new();
    for p in inner.peers.peers() {
        if !matches!(p.role, Role::Voter | Role::Learner) || p.public_key == me {
            continue;
        }
        let (pool, key, name) = (inner.pool.clone(), p.public_key, p.name.clone());
        calls.spawn(async move {
            let res = pool.call(&key, &Call::Status, ANNOUNCE_TIMEOUT).await;
            tracing::debug!(peer = %name, ok = res.is_ok(), "announced this node's start");
        });
    }
    while calls.join_next().await.is_some() {}
}

/// How long the start-up announcement waits for a peer's answer.
pub(super) const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) async fn watch_leader(inner: Arc<Inner>) {
    // Server metrics change with the vote, state, leader or membership only
    // (not per applied entry, as the full metrics do).
    let mut rx = inner.raft.server_metrics();
    let mut last_leader = None;
    let mut last_members = None;
    while rx.changed().await.is_ok() {
        let m = rx.borrow_and_update().clone();
        if m.current_leader != last_leader {
            let term = m.vote.leader_id().term;
            tracing::info!(term, leader = ?m.current_leader, "leader change");
            last_leader = m.current_leader;
        }
        if *m.membership_config.log_id() != last_members {
            tracing::info!(membership = ?m.membership_config.membership(), "membership change");
            last_members = *m.membership_config.log_id();
        }
    }
}
