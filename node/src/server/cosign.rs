//! Auditors' cosignatures: merged into the witnessed checkpoint on the
//! leader, one at a time, and committed through Raft.

use super::fail_stop::serving;
use super::leader::{is_leader, leader_barrier, redirect, write_err};
use super::{bad, internal, Inner};
use crate::rpc::{ErrorCode, Reply, RpcError};
use crate::types::Request;
use dlog_crypto::note::Checkpoint;
use dlog_wg::core::PeerInfo;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long after its last change a witnessed checkpoint keeps gathering
/// cosignatures before a newer
/// one may replace it while it lacks some auditor's (see [`crate::witness`]).
pub(super) const JOIN_WINDOW: Duration = Duration::from_secs(10);

/// Longest a cosignature may take on the leader (barrier, merge, commit).
pub(super) const COSIGN_TIMEOUT: Duration = Duration::from_secs(5);

/// Leader: merges an auditor's cosignature into the witnessed checkpoint
/// and commits the result through Raft, after checking the checkpoint's
/// root against its own ledger.
pub(super) async fn cosign(
    inner: &Inner,
    from: &PeerInfo,
    note: String,
) -> std::result::Result<Reply, RpcError> {
    let Some(trust) = inner.trust.as_ref() else {
        return Err(bad(
            "this node has no trust file (node.toml: trust), so it cannot check cosignatures",
        ));
    };
    let mut seen = inner.witness_seen.lock().await;
    // A leader just elected may not have applied the witnessed checkpoint
    // its predecessor committed: merge against the latest one.
    leader_barrier(inner).await?;
    let current = inner.sm.lock().witnessed().map(str::to_string);
    let current_size = current
        .as_deref()
        .and_then(|n| Checkpoint::from_note(n).ok())
        .map(|c| c.size);
    if let Some(size) = current_size {
        if seen.map(|(s, _)| s) != Some(size) {
            // Formed under another leader: its window starts now.
            *seen = Some((size, Instant::now()));
        }
    }
    let open = seen.is_some_and(|(_, at)| at.elapsed() < JOIN_WINDOW);
    let cosigner = crate::witness::cosigner_of(trust, &from.name, &note);
    let (decision, sub) =
        crate::witness::merge(trust, &cosigner, &note, current.as_deref(), open).map_err(bad)?;
    let merged = match decision {
        crate::witness::Merge::Join(w) => {
            return Ok(Reply::Cosigned {
                note: w,
                accepted: false,
            })
        }
        crate::witness::Merge::Already(w) => {
            return Ok(Reply::Cosigned {
                note: w,
                accepted: true,
            })
        }
        crate::witness::Merge::Accept(w) => w,
    };
    let size = sub.checkpoint.size;
    {
        let g = inner.sm.lock();
        serving(&g)?;
        let l = g.ledger().map_err(internal)?;
        if size > l.size() {
            return Err(bad(format!(
                "the checkpoint covers {size} entries; this leader applied {}",
                l.size()
            )));
        }
        if l.root_at(size).map_err(internal)? != sub.checkpoint.root {
            return Err(RpcError::new(
                ErrorCode::RootDiffers,
                format!("this log's root at size {size} is not the cosigned checkpoint's"),
            ));
        }
    }
    inner
        .raft
        .client_write(Request::Witness {
            note: merged.clone(),
        })
        .await
        .map_err(|e| write_err(inner, e))?;
    // The join window runs from the last change: while auditors keep
    // joining, the witnessed checkpoint stays open for the rest.
    *seen = Some((size, Instant::now()));
    tracing::info!(auditor = %cosigner, via = %from.name, size, time = sub.time, "cosignature added to the witnessed checkpoint");
    Ok(Reply::Cosigned {
        note: merged,
        accepted: true,
    })
}

/// `Call::Cosign`. Never forwarded: the leader must see the auditor's own
/// key (a forwarded call would come from this node's).
pub(super) async fn submit(
    inner: &Arc<Inner>,
    from: &PeerInfo,
    note: String,
) -> std::result::Result<Reply, RpcError> {
    if !is_leader(inner) {
        return Err(redirect(inner));
    }
    // Bounded: a leader cut off from its majority must not hold the merge
    // lock (and every later cosignature) until the partition heals.
    tokio::time::timeout(COSIGN_TIMEOUT, cosign(inner, from, note))
        .await
        .unwrap_or_else(|_| {
            Err(RpcError::new(
                ErrorCode::NoLeader,
                "the cosignature was not committed in time; retry",
            ))
        })
}
