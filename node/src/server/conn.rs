//! Connection serving: accept tunnel streams, read request frames, check
//! the caller's role, run each call ([`super::route`]) and answer it.

use super::Inner;
use crate::error::Result;
use crate::rpc::{
    authorize, decode, encode_framed, Call, ErrorCode, FrameHead, RequestFrame, ResponseFrame,
    RpcError, SharedWriter, MAX_FRAME, PROTOCOL_VERSION,
};
use dlog_wg::config::Role;
use dlog_wg::core::PeerInfo;
use dlog_wg::frame::FrameReader;
use dlog_wg::Stream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::Semaphore;

pub(super) async fn accept_loop(inner: Arc<Inner>, mut listener: dlog_wg::Listener) {
    let limit = Arc::new(Semaphore::new(1024));
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%e, "listener closed");
                return;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(peer = %stream.peer().name, "connection limit reached; dropping stream");
            continue;
        };
        let inner = inner.clone();
        tokio::spawn(async move {
            let peer = stream.peer().name.clone();
            if let Err(e) = serve_conn(inner, stream).await {
                tracing::debug!(%peer, %e, "connection ended");
            }
            drop(permit);
        });
    }
}

/// Calls of one stream being served at once; the stream is not read further
/// until one finishes (backpressure on a caller that floods).
pub(super) const MAX_CALLS_PER_STREAM: usize = 4096;

/// Serves one multiplexed stream: reads request frames, runs each call, and
/// answers with the call's id as soon as it finishes. Raft calls run right
/// here, one at a time in arrival order (a leader's AppendEntries must not
/// overtake each other, and a follower has nothing to do meanwhile that a
/// later frame of this stream could need); every other call runs in a task of
/// its own, concurrently.
pub(super) async fn serve_conn(inner: Arc<Inner>, stream: Stream) -> Result<()> {
    let peer = stream.peer().clone();
    // Only Raft peers may send large frames (AppendEntries, snapshot chunks);
    // a client's frame is bounded by what one Append may carry.
    let max_frame = match peer.role {
        Role::Voter | Role::Learner => MAX_FRAME,
        _ => {
            inner
                .cfg
                .batch
                .max_bytes
                .max(inner.cfg.log.max_payload as usize)
                * 2
                + (64 << 10)
        }
    };
    let (r, w) = stream.into_split();
    let out = SharedWriter::new(w);
    let calls = Arc::new(Semaphore::new(MAX_CALLS_PER_STREAM));
    let mut reader = FrameReader::new(r, max_frame);
    while let Some(bytes) = reader.recv().await? {
        if crate::rpc::is_blocked(&inner.blocked, &peer.public_key) {
            // Partitioned (fault injection): drop the request and the connection.
            return Ok(());
        }
        let head: FrameHead = decode(&bytes)?;
        let refuse = |code, message: String| {
            let frame = ResponseFrame {
                version: PROTOCOL_VERSION,
                id: head.id,
                result: Err(RpcError::new(code, message)),
            };
            let out = &out;
            async move { respond(out, &frame).await }
        };
        if head.version != PROTOCOL_VERSION {
            refuse(
                ErrorCode::Version,
                format!(
                    "protocol version {} is not supported (this node speaks {PROTOCOL_VERSION})",
                    head.version
                ),
            )
            .await;
            // Nothing else this peer sends can be understood.
            return Ok(());
        }
        let call = match decode::<RequestFrame>(&bytes) {
            Err(e) => {
                refuse(ErrorCode::BadRequest, e.to_string()).await;
                continue;
            }
            Ok(fr) => fr.call,
        };
        if !authorize(peer.role, &call) {
            inner.counters.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(peer = %peer.name, role = ?peer.role, call = call.name(), "refused call");
            let msg = format!(
                "peer {} has role {:?}, which may not call {}",
                peer.name,
                peer.role,
                call.name()
            );
            refuse(ErrorCode::Refused, msg).await;
            continue;
        }
        if matches!(call, Call::Raft { .. }) {
            answer(&inner, &peer, &out, head.id, call).await;
        } else {
            let permit = calls
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let (inner, peer, out) = (inner.clone(), peer.clone(), out.clone());
            tokio::spawn(async move {
                answer(&inner, &peer, &out, head.id, call).await;
                drop(permit);
            });
        }
    }
    Ok(())
}

/// Runs one call and queues its answer.
pub(super) async fn answer(
    inner: &Arc<Inner>,
    peer: &PeerInfo,
    out: &SharedWriter,
    id: u64,
    call: Call,
) {
    let result = super::route(inner, peer, call).await;
    respond(
        out,
        &ResponseFrame {
            version: PROTOCOL_VERSION,
            id,
            result,
        },
    )
    .await;
}

/// Queues one answer frame (dropped if the stream is gone).
pub(super) async fn respond(out: &SharedWriter, frame: &ResponseFrame) {
    let bytes = encode_framed(frame).or_else(|e| {
        tracing::error!(id = frame.id, "cannot encode an answer: {e}");
        encode_framed(&ResponseFrame {
            version: PROTOCOL_VERSION,
            id: frame.id,
            result: Err(RpcError::new(ErrorCode::Internal, e.to_string())),
        })
    });
    if let Ok(b) = bytes {
        // Dropped if the stream is gone: the reader sees that too.
        let _ = out.send(b).await;
    }
}
