//! Admin calls: membership changes, on the leader.

use super::leader::{is_leader, leader_barrier, redirect, write_err};
use super::{bad, Inner};
use crate::rpc::{Reply, RpcError};
use crate::types::NodeId;
use dlog_wg::config::Role;
use openraft::error::{ClientWriteError, RaftError};
use openraft::BasicNode;
use std::collections::BTreeSet;
use std::future::Future;
use std::time::{Duration, Instant};

/// How long a membership call waits for an earlier change to commit.
pub(super) const MEMBERSHIP_SETTLE: Duration = Duration::from_secs(10);

/// Runs one membership change on the leader.
///
/// openraft refuses a change while the last membership entry is uncommitted,
/// which is always the case right after an election: the entries of earlier
/// terms count as committed only once the new leader commits one of its own
/// term. So the leader first commits its term (the read-index barrier), then
/// retries for [`MEMBERSHIP_SETTLE`] while an earlier change is in progress.
/// Every other error is returned at once.
pub(super) async fn change_membership<F, Fut>(
    inner: &Inner,
    op: F,
) -> std::result::Result<(), RpcError>
where
    F: Fn() -> Fut,
    Fut: Future<
        Output = std::result::Result<
            openraft::raft::ClientWriteResponse<crate::types::TypeConfig>,
            RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
        >,
    >,
{
    leader_barrier(inner).await?;
    let end = Instant::now() + MEMBERSHIP_SETTLE;
    loop {
        match op().await {
            Ok(_) => return Ok(()),
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                openraft::error::ChangeMembershipError::InProgress(p),
            ))) if Instant::now() < end => {
                tracing::debug!(%p, "membership: waiting for the previous change to commit");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(write_err(inner, e)),
        }
    }
}

/// `Call::AddLearner`.
pub(super) async fn add_learner(
    inner: &Inner,
    id: NodeId,
    name: String,
) -> std::result::Result<Reply, RpcError> {
    let Some(p) = inner.peers.by_name(&name) else {
        return Err(bad(format!("{name} is not in the peer table")));
    };
    if !matches!(p.role, Role::Voter | Role::Learner) {
        return Err(bad(format!("{name} has role {:?}", p.role)));
    }
    if !is_leader(inner) {
        return Err(redirect(inner));
    }
    change_membership(inner, || {
        inner.raft.add_learner(id, BasicNode::new(&name), false)
    })
    .await?;
    tracing::info!(id, %name, "membership: learner added");
    Ok(Reply::Done)
}

/// `Call::ChangeMembership`.
pub(super) async fn set_voters(
    inner: &Inner,
    voters: Vec<NodeId>,
) -> std::result::Result<Reply, RpcError> {
    if !is_leader(inner) {
        return Err(redirect(inner));
    }
    let set: BTreeSet<NodeId> = voters.iter().copied().collect();
    change_membership(inner, || inner.raft.change_membership(set.clone(), false)).await?;
    tracing::info!(?voters, "membership: voters changed");
    Ok(Reply::Done)
}
