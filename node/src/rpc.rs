//! Wire protocol: versioned, bincode-encoded request/response frames over
//! length-delimited dlog-wg streams, multiplexed, and the client [`Pool`].
//!
//! One tunnel port ([`RPC_PORT`] by default) carries every call. A caller
//! keeps one stream per peer and sends every call on it: each
//! [`RequestFrame`] carries a call id, which the [`ResponseFrame`] repeats,
//! so many calls are in flight at once and answers come back in any order.
//! Each frame is handed to the tunnel whole by the task that made it
//! ([`SharedWriter`]); frames queued while the tunnel is busy share TCP
//! segments and WireGuard packets. Every request is authorised by the
//! caller's WireGuard key → role ([`authorize`]) before anything else looks
//! at it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use dlog_wg::config::Role;
use dlog_wg::frame::FrameReader;
use dlog_wg::keys::PeerKey;
use dlog_wg::{Endpoint, Stream, WriteHalf};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::error::{NodeError, Result};
use crate::types::{NodeId, TypeConfig};

/// Wire protocol version; a frame with another version gets [`ErrorCode::Version`].
/// Version 2 added call ids (multiplexing); version 4 says how stale a
/// checkpoint answer may be (`Reply::Checkpoint::behind_ms`) and gives a
/// signature's verifier key (`Reply::Signature::vkey`); version 5 added the
/// auditor's calls (`Entries`, `Cosign`, `Witnessed`).
pub const PROTOCOL_VERSION: u16 = 5;
/// Default tunnel port of the node service.
pub const RPC_PORT: u16 = 7000;
/// Largest frame accepted: 16 AppendEntries of at most 1 MiB batches, or a
/// 3 MiB snapshot chunk, fit with room to spare.
pub const MAX_FRAME: usize = 64 << 20;

/// A request frame.
#[derive(Debug, Serialize, Deserialize)]
pub struct RequestFrame {
    /// [`PROTOCOL_VERSION`].
    pub version: u16,
    /// Call id, unique among the caller's calls in flight on this stream.
    pub id: u64,
    /// The call.
    pub call: Call,
}

/// A response frame.
#[derive(Debug, Serialize, Deserialize)]
pub struct ResponseFrame {
    /// [`PROTOCOL_VERSION`].
    pub version: u16,
    /// The id of the call this answers.
    pub id: u64,
    /// The outcome.
    pub result: std::result::Result<Reply, RpcError>,
}

/// Every call a node serves.
#[derive(Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Call {
    /// Raft AppendEntries (voter, learner).
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// Raft Vote (voter, learner).
    Vote(VoteRequest<NodeId>),
    /// Raft InstallSnapshot chunk (voter, learner).
    InstallSnapshot(#[serde(with = "snapshot_chunk")] InstallSnapshotRequest<TypeConfig>),
    /// Leader asks a voter to recompute the root at `size` and sign it (voter).
    SignCheckpoint {
        /// Tree size.
        size: u64,
        /// The leader's root at that size.
        root: [u8; 32],
    },
    /// Append entries (client; voters and learners when forwarding).
    Append {
        /// `(kind byte, payload)` per entry.
        items: crate::types::Items,
        /// Session tag: a retry with the same tag is applied at most once
        /// (see [`crate::session`]).
        tag: Option<crate::session::SessionTag>,
    },
    /// Canonical bytes of one entry (any role).
    Get {
        /// Leaf index.
        index: u64,
    },
    /// Inclusion proof (any role).
    Inclusion {
        /// Leaf index.
        index: u64,
        /// Tree size.
        size: u64,
    },
    /// Consistency proof (any role).
    Consistency {
        /// Old size.
        old: u64,
        /// New size.
        new: u64,
    },
    /// The latest majority-signed checkpoint (any role). `linearizable` runs a
    /// ReadIndex round on the leader first; otherwise the replica answers
    /// from what it has applied (`Reply::Checkpoint::behind_ms` bounds how
    /// stale that may be).
    Checkpoint {
        /// Run ReadIndex first.
        linearizable: bool,
    },
    /// Node status (any role).
    Status,
    /// Add a learner (admin).
    AddLearner {
        /// New node id.
        id: NodeId,
        /// Its name in the peer table.
        name: String,
    },
    /// Set the voter set (admin); members must be learners or voters already.
    ChangeMembership {
        /// The new voter ids.
        voters: Vec<NodeId>,
    },
    /// Long poll: answers like `Checkpoint { linearizable: false }` as soon as
    /// this replica stores a signed checkpoint with size > `covering`, or
    /// after `wait_ms` (at most [`MAX_CHECKPOINT_WAIT_MS`]) with what it has.
    WaitCheckpoint {
        /// Entry index the checkpoint must cover.
        covering: u64,
        /// Longest wait in milliseconds.
        wait_ms: u32,
    },
    /// Canonical bytes of the entries from `start` on (any role): at most
    /// `max` entries (and at most [`MAX_ENTRIES_BYTES`] of them, at least
    /// one), never past what the answering replica applied.
    Entries {
        /// First leaf index.
        start: u64,
        /// Most entries wanted (at most [`MAX_ENTRIES_PER_CALL`]).
        max: u32,
        /// Answer from this replica's own copy only: a replica that does not
        /// hold `start` refuses instead of forwarding to the leader (an
        /// auditor re-reading one node's copy).
        local: bool,
    },
    /// An auditor's witness cosignature (auditor): `note` is a checkpoint
    /// signed by a quorum of voters plus the caller's cosignature line. The
    /// leader adds it to the witnessed checkpoint through Raft, or answers
    /// with the witnessed checkpoint the auditor should cosign instead.
    Cosign {
        /// The checkpoint note with the caller's cosignature.
        note: String,
    },
    /// Long poll for the witnessed checkpoint (any role): the newest
    /// checkpoint auditors cosigned, with their cosignatures. Answers like
    /// [`Call::WaitCheckpoint`], as soon as its size is > `covering`.
    Witnessed {
        /// Entry index the checkpoint must cover.
        covering: u64,
        /// Longest wait in milliseconds.
        wait_ms: u32,
    },
}

/// Most entries one [`Call::Entries`] answers.
pub const MAX_ENTRIES_PER_CALL: u32 = 16_384;
/// Most entry bytes one [`Call::Entries`] answers (one entry always fits).
pub const MAX_ENTRIES_BYTES: usize = 1 << 20;

/// Serde for a snapshot chunk with its data as one byte string: the same
/// bytes as openraft's derived encoding in bincode, without visiting the
/// (megabytes of) data one byte at a time.
mod snapshot_chunk {
    use openraft::raft::InstallSnapshotRequest;
    use openraft::{BasicNode, SnapshotMeta, Vote};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::types::{NodeId, TypeConfig};

    #[derive(Serialize)]
    struct Out<'a> {
        vote: &'a Vote<NodeId>,
        meta: &'a SnapshotMeta<NodeId, BasicNode>,
        offset: u64,
        #[serde(with = "serde_bytes")]
        data: &'a [u8],
        done: bool,
    }

    #[derive(Deserialize)]
    struct In {
        vote: Vote<NodeId>,
        meta: SnapshotMeta<NodeId, BasicNode>,
        offset: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        done: bool,
    }

    pub fn serialize<S: Serializer>(
        r: &InstallSnapshotRequest<TypeConfig>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        Out {
            vote: &r.vote,
            meta: &r.meta,
            offset: r.offset,
            data: &r.data,
            done: r.done,
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<InstallSnapshotRequest<TypeConfig>, D::Error> {
        let i = In::deserialize(d)?;
        Ok(InstallSnapshotRequest {
            vote: i.vote,
            meta: i.meta,
            offset: i.offset,
            data: i.data,
            done: i.done,
        })
    }
}

/// Successful answers.
#[derive(Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Reply {
    /// Raft AppendEntries answer.
    AppendEntries(AppendEntriesResponse<NodeId>),
    /// Raft Vote answer.
    Vote(VoteResponse<NodeId>),
    /// Raft InstallSnapshot answer.
    InstallSnapshot(InstallSnapshotResponse<NodeId>),
    /// A voter's note signature.
    Signature {
        /// Key name.
        name: String,
        /// Key id.
        key_id: [u8; 4],
        /// Signature bytes.
        #[serde(with = "serde_bytes")]
        signature: Vec<u8>,
        /// The signer's C2SP verifier key. The leader counts a signature
        /// that verifies under it towards the voters' majority (the reply
        /// came over that voter's own tunnel); only the trust file's keys
        /// count towards what offline verifiers need.
        vkey: String,
    },
    /// Entries appended, committed by a majority and applied.
    Appended {
        /// Index of the first entry.
        first: u64,
        /// Number of entries.
        count: u64,
        /// Their timestamp.
        timestamp_ns: u64,
    },
    /// Canonical entry bytes.
    Entry(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Proof hashes.
    Proof(Vec<[u8; 32]>),
    /// A checkpoint note (empty when none was signed yet).
    Checkpoint {
        /// The note.
        note: String,
        /// The tree size it covers.
        size: u64,
        /// Entries applied on the answering replica.
        applied: u64,
        /// How stale the answer may be, in milliseconds: it may lack what
        /// the leader committed since. 0 after a ReadIndex round (every
        /// linearizable read); on a leader, the time since a majority last
        /// acknowledged it; on a follower, the time since the newest leader
        /// message whose commit index it has applied. `None` when that is
        /// not known (a follower catching up, or one without a leader).
        behind_ms: Option<u64>,
    },
    /// Node status.
    Status(NodeStatus),
    /// Done (membership calls).
    Done,
    /// Canonical bytes of consecutive entries ([`Call::Entries`]).
    Entries(Vec<serde_bytes::ByteBuf>),
    /// The outcome of a [`Call::Cosign`].
    Cosigned {
        /// The witnessed checkpoint now: with the caller's cosignature when
        /// `accepted`; otherwise the one the caller should cosign (it holds
        /// other auditors' cosignatures and is not complete yet, or it is
        /// newer than the caller's).
        note: String,
        /// Whether the caller's cosignature was added.
        accepted: bool,
    },
}

/// Status of one node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeStatus {
    /// Raft id.
    pub id: NodeId,
    /// Name.
    pub name: String,
    /// `leader`, `follower`, `candidate` or `learner`.
    pub state: String,
    /// Current term.
    pub term: u64,
    /// Known leader id.
    pub leader: Option<NodeId>,
    /// Last applied Raft index.
    pub applied_index: u64,
    /// Entries in the ledger.
    pub ledger_size: u64,
    /// Size of the latest stored checkpoint.
    pub checkpoint_size: u64,
    /// Why the replica stopped serving, if it did.
    pub diverged: Option<String>,
    /// Voter ids of the membership.
    pub voters: Vec<NodeId>,
}

/// Refusal classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The caller's role may not make this call.
    Refused,
    /// Not the leader; `leader` names it when known.
    NotLeader,
    /// No leader is known.
    NoLeader,
    /// A bad argument (index out of range, oversized payload, bad kind).
    BadRequest,
    /// This replica diverged and stopped serving.
    Diverged,
    /// Unsupported protocol version.
    Version,
    /// Anything else.
    Internal,
    /// Asked to sign a checkpoint, this voter computed another root at that
    /// size (the message has both). A leader that a majority of voters
    /// answer so marks itself diverged. (Last: bincode numbers variants.)
    RootDiffers,
}

/// An error answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RpcError {
    /// Class.
    pub code: ErrorCode,
    /// Message for humans.
    pub message: String,
    /// Leader name, with [`ErrorCode::NotLeader`].
    pub leader: Option<String>,
}

impl RpcError {
    /// An error without a leader hint.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
            leader: None,
        }
    }
}

impl From<RpcError> for NodeError {
    fn from(e: RpcError) -> Self {
        NodeError::Remote {
            code: format!("{:?}", e.code),
            message: e.message,
        }
    }
}

impl Call {
    /// Short name for logs and refusals.
    pub fn name(&self) -> &'static str {
        match self {
            Call::AppendEntries(_) => "AppendEntries",
            Call::Vote(_) => "Vote",
            Call::InstallSnapshot(_) => "InstallSnapshot",
            Call::SignCheckpoint { .. } => "SignCheckpoint",
            Call::Append { .. } => "Append",
            Call::Get { .. } => "Get",
            Call::Inclusion { .. } => "Inclusion",
            Call::Consistency { .. } => "Consistency",
            Call::Checkpoint { .. } => "Checkpoint",
            Call::Status => "Status",
            Call::AddLearner { .. } => "AddLearner",
            Call::ChangeMembership { .. } => "ChangeMembership",
            Call::WaitCheckpoint { .. } => "WaitCheckpoint",
            Call::Entries { .. } => "Entries",
            Call::Cosign { .. } => "Cosign",
            Call::Witnessed { .. } => "Witnessed",
        }
    }
}

/// Longest server-side wait of a [`Call::WaitCheckpoint`].
pub const MAX_CHECKPOINT_WAIT_MS: u32 = 10_000;

/// Whether `role` may make `call` (DESIGN §7: voter/learner: Raft; client:
/// append + read; auditor: read + cosign; admin: membership + read).
pub fn authorize(role: Role, call: &Call) -> bool {
    use Role::*;
    match call {
        Call::AppendEntries(_) | Call::Vote(_) | Call::InstallSnapshot(_) => {
            matches!(role, Voter | Learner)
        }
        // Any node key (a learner's may have been promoted since the peer
        // table was written); the signer also checks that the caller is
        // its current Raft leader.
        Call::SignCheckpoint { .. } => matches!(role, Voter | Learner),
        Call::Append { .. } => matches!(role, Client | Voter | Learner),
        Call::Get { .. }
        | Call::Inclusion { .. }
        | Call::Consistency { .. }
        | Call::Checkpoint { .. }
        | Call::WaitCheckpoint { .. }
        | Call::Entries { .. }
        | Call::Witnessed { .. }
        | Call::Status => true,
        Call::Cosign { .. } => role == Auditor,
        Call::AddLearner { .. } | Call::ChangeMembership { .. } => role == Admin,
    }
}

/// Decodes a value from the wire, bounded (never panics on bad input).
pub fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T> {
    use bincode::Options;
    bincode::options()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(MAX_FRAME as u64 * 2)
        .deserialize(b)
        .map_err(|e| NodeError::Protocol(format!("decode: {e}")))
}

/// The fixed-size start of every request frame: version and call id. A
/// server reads it first, so it can answer a frame it cannot decode.
#[derive(Debug, Serialize, Deserialize)]
pub struct FrameHead {
    /// Protocol version.
    pub version: u16,
    /// Call id.
    pub id: u64,
}

/// Encodes `v` as one length-prefixed frame, ready for the wire.
pub fn encode_framed<T: Serialize>(v: &T) -> Result<Bytes> {
    use bincode::Options;
    let opts = bincode::options()
        .with_fixint_encoding()
        .allow_trailing_bytes();
    let len = opts
        .serialized_size(v)
        .map_err(|e| NodeError::Protocol(format!("encode: {e}")))?;
    if len > MAX_FRAME as u64 {
        return Err(NodeError::Protocol(format!(
            "frame of {len} bytes exceeds the {MAX_FRAME}-byte limit"
        )));
    }
    let mut out = Vec::with_capacity(4 + len as usize);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    opts.serialize_into(&mut out, v)
        .map_err(|e| NodeError::Protocol(format!("encode: {e}")))?;
    Ok(Bytes::from(out))
}

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
        let io = |e| NodeError::Transport(dlog_wg::Error::io("writing a frame", e));
        if frame.len() <= ONE_STEP {
            return self.0.lock().await.send_bytes(frame).await.map_err(io);
        }
        let w = self.0.clone();
        tokio::spawn(async move { w.lock().await.send_bytes(frame).await })
            .await
            .map_err(|e| NodeError::Protocol(format!("frame writer: {e}")))?
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

    /// One call to `peer`, bounded by `timeout`. If the pooled stream turns
    /// out to be closed before the call was queued on it, the call goes once
    /// on a fresh stream (nothing was delivered); a failure after queueing
    /// is returned as is.
    pub async fn call(&self, peer: &PeerKey, call: &Call, timeout: Duration) -> Result<Reply> {
        if is_blocked(&self.blocked, peer) {
            lock(&self.conns).remove(&peer.0);
            // Behave like a network that drops everything: the caller waits out its timeout.
            tokio::time::sleep(timeout).await;
            return Err(NodeError::Timeout(format!(
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
                let resp = rx.await.map_err(|_| {
                    NodeError::Protocol("connection closed before the answer".into())
                })?;
                return Ok(resp.result);
            }
            Err(NodeError::Protocol(
                "connection closed before the call (twice)".into(),
            ))
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(Ok(Ok(reply))) => Ok(reply),
            Ok(Ok(Err(e))) => Err(NodeError::Remote {
                code: format!("{:?}", e.code),
                message: match e.leader {
                    Some(l) => format!("{} (leader: {l})", e.message),
                    None => e.message,
                },
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(NodeError::Timeout(format!(
                "{} after {timeout:?}",
                call.name()
            ))),
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
            Err(NodeError::Remote { code, message }) => {
                let (message, leader) = match message.rsplit_once(" (leader: ") {
                    Some((m, l)) => (m.to_string(), Some(l.trim_end_matches(')').to_string())),
                    None => (message, None),
                };
                Ok(Err(RpcError {
                    code: parse_code(&code),
                    message,
                    leader,
                }))
            }
            Err(e) => Err(e),
        }
    }
}

/// The [`ErrorCode`] a [`NodeError::Remote`] names (unknown names are
/// `Internal`).
pub(crate) fn parse_code(s: &str) -> ErrorCode {
    match s {
        "Refused" => ErrorCode::Refused,
        "NotLeader" => ErrorCode::NotLeader,
        "NoLeader" => ErrorCode::NoLeader,
        "BadRequest" => ErrorCode::BadRequest,
        "Diverged" => ErrorCode::Diverged,
        "Version" => ErrorCode::Version,
        "RootDiffers" => ErrorCode::RootDiffers,
        _ => ErrorCode::Internal,
    }
}

/// Serialises exactly like [`RequestFrame`], borrowing the call.
#[derive(Serialize)]
struct RequestFrameRef<'a> {
    version: u16,
    id: u64,
    call: &'a Call,
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{BasicNode, LogId, SnapshotMeta, StoredMembership, Vote};
    use proptest::prelude::*;

    proptest! {
        /// A snapshot chunk encodes exactly as openraft's derived serde does
        /// (after the variant tag), and decodes back.
        #[test]
        fn snapshot_chunk_encoding_is_openrafts(
            data in proptest::collection::vec(any::<u8>(), 0..2000),
            offset in any::<u64>(),
            done in any::<bool>(),
            term in 0u64..100,
        ) {
            let req = InstallSnapshotRequest::<TypeConfig> {
                vote: Vote::new_committed(term, 1),
                meta: SnapshotMeta {
                    last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(term, 1), 42)),
                    last_membership: StoredMembership::<NodeId, BasicNode>::default(),
                    snapshot_id: "s-1".into(),
                },
                offset,
                data,
                done,
            };
            // The wire frame without its length prefix.
            let framed = encode_framed(&Call::InstallSnapshot(req.clone())).unwrap();
            let ours = framed[4..].to_vec();
            let mut theirs = 2u32.to_le_bytes().to_vec();
            theirs.extend(bincode::serialize(&req).unwrap());
            prop_assert_eq!(&ours, &theirs);
            match decode::<Call>(&ours).unwrap() {
                Call::InstallSnapshot(back) => prop_assert_eq!(back, req),
                other => prop_assert!(false, "decoded {:?}", other.name()),
            }
        }
    }
}
