//! Fail-stop: a replica that diverged leaves Raft and refuses every call
//! but `Status`.

use super::Inner;
use crate::rpc::{ErrorCode, RpcError};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A diverged replica leaves Raft: it no longer votes, so it can neither
/// lead (refusing every append and read) nor hold up an election; the
/// others go on without it. It still answers status calls, which name the
/// evidence.
pub(super) async fn run(inner: Arc<Inner>) {
    let mut rx = inner.sm.watch_divergence();
    if rx.wait_for(|d| *d).await.is_err() {
        return;
    }
    tracing::error!("REPLICA DIVERGED: leaving Raft (fail-stop); see <data>/DIVERGED");
    inner.stopped.store(true, Ordering::Release);
    if let Err(e) = inner.raft.shutdown().await {
        tracing::error!(%e, "stopping Raft");
    }
}

pub(super) fn serving(g: &crate::state_machine::SmInner) -> std::result::Result<(), RpcError> {
    match &g.diverged {
        Some(d) => Err(RpcError::new(
            ErrorCode::Diverged,
            format!("this replica stopped serving: {d}"),
        )),
        None => Ok(()),
    }
}
