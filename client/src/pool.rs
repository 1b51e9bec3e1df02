//! The caller's side of the wire protocol: one multiplexed stream per peer.
//!
//! Each frame is handed to the tunnel whole by the task that made it
//! ([`SharedWriter`]); frames queued while the tunnel is busy share TCP
//! segments and WireGuard packets. Answers are matched to calls by id, so
//! many calls share one stream and come back in completion order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dlog_wg::frame::FrameReader;
use dlog_wg::keys::PeerKey;
use dlog_wg::{Endpoint, Stream, WriteHalf};
use tokio::sync::oneshot;

use crate::codec::{decode, encode_framed, RequestFrameRef};
use crate::error::{Error, Result};
use crate::wire::{Call, Reply, ResponseFrame, RpcError, MAX_FRAME, PROTOCOL_VERSION};

/// The sending half of a stream, shared by the tasks that answer or call on
/// it. Each frame is handed to the tunnel whole, under the lock, by the task
/// that made it (no writer task in between); frames queued while the tunnel
/// is busy leave together, in as few TCP segments as fit.
#[derive(Debug, Clone)]
pub struct SharedWriter(Arc<tokio::sync::Mutex<WriteHalf>>);

/// Frames up to this size reach the tunnel in one step, which cannot be cut
/// in half by a cancelled caller.
const ONE_STEP: usize = 64 << 10;

impl SharedWriter {
    /// Wraps the sending half of a stream.
    pub fn new(w: WriteHalf) -> Self {
        SharedWriter(Arc::new(tokio::sync::Mutex::new(w)))
    }

    /// Queues one encoded frame (see [`encode_framed`]). A frame is never
    /// half sent: a larger one is written by a task of its own, which
    /// finishes even if the caller gives up.
    pub async fn send(&self, frame: Bytes) -> Result<()> {
        let io = |e| Error::Transport(dlog_wg::Error::io("writing a frame", e));
        if frame.len() <= ONE_STEP {
            return self.0.lock().await.send_bytes(frame).await.map_err(io);
        }
        let w = self.0.clone();
        tokio::spawn(async move { w.lock().await.send_bytes(frame).await })
            .await
            .map_err(|e| Error::Protocol(format!("frame writer: {e}")))?
            .map_err(io)
    }
}

/// Calls in flight on one multiplexed stream, waiting for their answers.
/// `None` once the stream failed: every waiting call was told.
type Waiting = std::sync::Mutex<Option<HashMap<u64, oneshot::Sender<ResponseFrame>>>>;

/// One multiplexed stream to a peer's node service.
struct Mux {
    writer: SharedWriter,
    waiting: Arc<Waiting>,
    next_id: AtomicU64,
}

impl Mux {
    fn open(stream: Stream) -> Arc<Mux> {
        let (r, w) = stream.into_split();
        let waiting: Arc<Waiting> = Arc::new(std::sync::Mutex::new(Some(HashMap::new())));
        let w2 = waiting.clone();
        tokio::spawn(async move {
            let mut reader = FrameReader::new(r, MAX_FRAME);
            let end = loop {
                match reader.recv().await {
                    Ok(Some(bytes)) => match decode::<ResponseFrame>(&bytes) {
                        Ok(resp) if resp.version == PROTOCOL_VERSION => {
                            let to = lock(&w2).as_mut().and_then(|m| m.remove(&resp.id));
                            // A caller that gave up has no receiver any more.
                            if let Some(to) = to {
                                let _ = to.send(resp);
                            }
                        }
                        Ok(resp) => break format!("peer speaks protocol version {}", resp.version),
                        Err(e) => break e.to_string(),
                    },
                    Ok(None) => break "closed by the peer".to_string(),
                    Err(e) => break e.to_string(),
                }
            };
            tracing::debug!("rpc stream ended: {end}");
            fail_all(&w2);
        });
        Arc::new(Mux {
            writer: SharedWriter::new(w),
            waiting,
            next_id: AtomicU64::new(1),
        })
    }

    fn is_open(&self) -> bool {
        lock(&self.waiting).is_some()
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Marks the stream failed; dropping the senders wakes every waiting call.
fn fail_all(w: &Waiting) {
    lock(w).take();
}

/// Removes a call's waiter when the call ends, answered or not (timeout,
/// cancellation), so an abandoned call leaves nothing behind.
struct WaitGuard<'a> {
    waiting: &'a Waiting,
    id: u64,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        if let Some(m) = lock(self.waiting).as_mut() {
            m.remove(&self.id);
        }
    }
}

/// Where a peer's stream lives; its lock serialises opening one.
type Slot = Arc<tokio::sync::Mutex<Option<Arc<Mux>>>>;

/// Client side of the node service: one multiplexed stream per peer, opened
/// on first use and reopened after it fails.
pub struct Pool {
    endpoint: Endpoint,
    port: u16,
    /// Per peer, the slot of its stream.
    conns: std::sync::Mutex<HashMap<[u8; 32], Slot>>,
    blocked: Blocked,
}

/// A fault-injection drop switch: peers whose calls are cut (both ways) at
/// the RPC layer, as if the network dropped everything. Empty in production.
pub type Blocked = std::sync::Arc<std::sync::RwLock<std::collections::HashSet<[u8; 32]>>>;

/// Whether `peer` is cut off by the drop switch.
pub fn is_blocked(b: &Blocked, peer: &PeerKey) -> bool {
    b.read().map(|g| g.contains(&peer.0)).unwrap_or(false)
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool over `endpoint`, calling `port` on peers.
    pub fn new(endpoint: Endpoint, port: u16) -> Pool {
        Pool::with_switch(endpoint, port, Blocked::default())
    }

    /// A pool sharing a drop switch with the server.
    pub fn with_switch(endpoint: Endpoint, port: u16, blocked: Blocked) -> Pool {
        Pool {
            endpoint,
            port,
            conns: std::sync::Mutex::new(HashMap::new()),
            blocked,
        }
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn slot(&self, peer: &PeerKey) -> Slot {
        lock(&self.conns).entry(peer.0).or_default().clone()
    }

    /// The open stream to `peer`; opens one when there is none or the one
    /// there failed.
    async fn mux(&self, peer: &PeerKey) -> Result<Arc<Mux>> {
        let slot = self.slot(peer);
        let mut g = slot.lock().await;
        if let Some(m) = g.as_ref().filter(|m| m.is_open()) {
            return Ok(m.clone());
        }
        *g = None;
        let m = Mux::open(self.endpoint.connect(peer, self.port).await?);
        *g = Some(m.clone());
        Ok(m)
    }

    /// Opens (or reuses) the stream to `peer` without calling anything:
    /// whether the node is there at all.
    pub async fn open(&self, peer: &PeerKey) -> Result<()> {
        self.mux(peer).await.map(|_| ())
    }

    /// One call to `peer`, bounded by `timeout`. If the pooled stream turns
    /// out to be closed before the call was queued on it, the call goes once
    /// on a fresh stream (nothing was delivered); a failure after queueing
    /// is returned as is.
    pub async fn call(&self, peer: &PeerKey, call: &Call, timeout: Duration) -> Result<Reply> {
        if is_blocked(&self.blocked, peer) {
            lock(&self.conns).remove(&peer.0);
            // Behave like a network that drops everything: the caller waits out its timeout.
            tokio::time::sleep(timeout).await;
            return Err(Error::Timeout(format!(
                "{} after {timeout:?} (partitioned)",
                call.name()
            )));
        }
        let fut = async {
            for _attempt in 0..2 {
                let m = self.mux(peer).await?;
                let id = m.next_id.fetch_add(1, Ordering::Relaxed);
                let frame = encode_framed(&RequestFrameRef {
                    version: PROTOCOL_VERSION,
                    id,
                    call,
                })?;
                let (tx, rx) = oneshot::channel();
                let registered = match lock(&m.waiting).as_mut() {
                    Some(w) => {
                        w.insert(id, tx);
                        true
                    }
                    None => false,
                };
                let _guard = WaitGuard {
                    waiting: &m.waiting,
                    id,
                };
                let sent = registered && m.writer.send(frame).await.is_ok();
                if !sent {
                    // Nothing of this call reached the peer: try a new stream once.
                    fail_all(&m.waiting);
                    continue;
                }
                let resp = rx
                    .await
                    .map_err(|_| Error::Protocol("connection closed before the answer".into()))?;
                return Ok(resp.result);
            }
            Err(Error::Protocol(
                "connection closed before the call (twice)".into(),
            ))
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(Ok(Ok(reply))) => Ok(reply),
            Ok(Ok(Err(e))) => Err(Error::Remote(e)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Timeout(format!("{} after {timeout:?}", call.name()))),
        }
    }

    /// Like [`Pool::call`] but returns the remote error structured.
    pub async fn call_raw(
        &self,
        peer: &PeerKey,
        call: &Call,
        timeout: Duration,
    ) -> Result<std::result::Result<Reply, RpcError>> {
        match self.call(peer, call, timeout).await {
            Ok(r) => Ok(Ok(r)),
            Err(Error::Remote(e)) => Ok(Err(e)),
            Err(e) => Err(e),
        }
    }
}
