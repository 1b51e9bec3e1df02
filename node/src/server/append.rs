//! `Append`: a client's entries, checked against the log's limits, then
//! group-committed by the leader's batcher (or forwarded to the leader).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use dlog_wg::core::PeerInfo;
use tokio::sync::oneshot;

use super::leader::{forward, is_leader};
use super::{bad, internal, Inner, Job};
use crate::rpc::{Call, ErrorCode, Reply, RpcError};
use crate::session::SessionTag;
use crate::types::Items;

/// Why `items` may not be appended by one call, if it may not: no entry,
/// more entries or payload bytes than one call may carry, or one payload
/// over the log's limit.
pub(super) fn check_items(
    items: &Items,
    max_entries: usize,
    max_bytes: usize,
    max_payload: usize,
) -> std::result::Result<(), String> {
    if items.is_empty() {
        return Err("an append needs at least one entry".into());
    }
    if items.len() > max_entries {
        return Err(format!("at most {max_entries} entries per call"));
    }
    let total = items.payload_bytes();
    let limit = max_bytes.max(max_payload);
    if total > limit {
        return Err(format!(
            "{total} payload bytes in one call; at most {limit} (split the batch)"
        ));
    }
    if let Some(p) = items
        .iter()
        .map(|(_, p)| p.len())
        .find(|&l| l > max_payload)
    {
        return Err(format!(
            "payload of {p} bytes exceeds the limit of {max_payload} bytes"
        ));
    }
    Ok(())
}

/// `Call::Append`.
pub(super) async fn append(
    inner: &Arc<Inner>,
    from: &PeerInfo,
    items: Items,
    tag: Option<SessionTag>,
) -> std::result::Result<Reply, RpcError> {
    let b = &inner.cfg.batch;
    check_items(
        &items,
        b.max_entries,
        b.max_bytes,
        inner.cfg.log.max_payload as usize,
    )
    .map_err(bad)?;
    if let Some(d) = inner.sm.lock().diverged.clone() {
        return Err(RpcError::new(ErrorCode::Diverged, d));
    }
    if !is_leader(inner) {
        return forward(inner, from, &Call::Append { items, tag }).await;
    }
    let arrived = Instant::now();
    let (tx, rx) = oneshot::channel();
    let n = items.len() as u64;
    inner
        .batch_tx
        .send(Job {
            items,
            tag,
            reply: tx,
        })
        .await
        .map_err(|_| internal("batcher stopped"))?;
    let r = rx
        .await
        .map_err(|_| internal("batcher dropped the request"))?;
    if r.is_ok() {
        inner.counters.appends.fetch_add(n, Ordering::Relaxed);
        inner
            .counters
            .append_seconds
            .observe(arrived.elapsed().as_secs_f64());
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use dlog_ledger::EntryKind;

    fn items(sizes: &[usize]) -> Items {
        sizes
            .iter()
            .map(|&n| (EntryKind::Data, vec![7u8; n]))
            .collect::<Vec<_>>()
            .into()
    }

    #[test]
    fn limits_of_one_call() {
        assert!(check_items(&items(&[1, 2, 3]), 3, 100, 10).is_ok());
        let e = check_items(&items(&[]), 3, 100, 10).unwrap_err();
        assert!(e.contains("at least one entry"), "{e}");
        let e = check_items(&items(&[1, 1, 1, 1]), 3, 100, 10).unwrap_err();
        assert!(e.contains("at most 3 entries"), "{e}");
        let e = check_items(&items(&[10, 10, 10]), 3, 25, 10).unwrap_err();
        assert!(
            e.contains("30 payload bytes") && e.contains("at most 25"),
            "{e}"
        );
        let e = check_items(&items(&[1, 11]), 3, 100, 10).unwrap_err();
        assert!(e.contains("payload of 11 bytes"), "{e}");
        // One payload at the log's limit always fits, whatever max_bytes says.
        assert!(check_items(&items(&[10]), 3, 4, 10).is_ok());
    }
}
