//! The wire protocol's types: versioned request and response frames, every
//! call a node serves and its answers.
//!
//! One tunnel port ([`RPC_PORT`] by default) carries every call. A caller
//! keeps one stream per peer and sends every call on it: each
//! [`RequestFrame`] carries a call id, which the [`ResponseFrame`] repeats,
//! so many calls are in flight at once and answers come back in any order
//! (see [`crate::pool`]). Frames are encoded by [`crate::codec`]; every
//! request is authorised by the caller's role ([`crate::access`]) before
//! anything else looks at it.
//!
//! Raft messages are opaque bytes here ([`Call::Raft`]): their types belong
//! to openraft, which only `dlog-node` links.

use serde::{Deserialize, Serialize};

/// A node's Raft id.
pub type NodeId = u64;

/// Wire protocol version; a frame with another version gets [`ErrorCode::Version`].
/// Version 2 added call ids (multiplexing); version 4 says how stale a
/// checkpoint answer may be (`Reply::Checkpoint::behind_ms`) and gives a
/// signature's verifier key (`Reply::Signature::vkey`); version 5 added the
/// auditor's calls (`Entries`, `Cosign`, `Witnessed`); version 6 carries
/// Raft messages as opaque bytes ([`Call::Raft`]) and refuses an entry
/// kind the ledger does not know while decoding (same bytes otherwise).
pub const PROTOCOL_VERSION: u16 = 6;
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

/// Every call a node serves. Exhaustive on purpose: a node must answer
/// every call (a new call is a new protocol version).
#[derive(Debug, Serialize, Deserialize)]
pub enum Call {
    /// A Raft message (voter, learner), opaque here: `body` is the
    /// request as `dlog-node` encodes it, and only the node decodes it.
    Raft {
        /// Which Raft call.
        kind: RaftKind,
        /// The encoded request.
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
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
        items: crate::items::Items,
        /// Session tag: a retry with the same tag is applied at most once.
        tag: Option<SessionTag>,
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

/// Successful answers.
#[derive(Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Reply {
    /// The answer to a [`Call::Raft`], encoded by `dlog-node` (opaque here).
    Raft(#[serde(with = "serde_bytes")] Vec<u8>),
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

impl Call {
    /// Short name for logs and refusals.
    pub fn name(&self) -> &'static str {
        match self {
            Call::Raft { kind, .. } => kind.name(),
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

/// The fixed-size start of every request frame: version and call id. A
/// server reads it first, so it can answer a frame it cannot decode.
#[derive(Debug, Serialize, Deserialize)]
pub struct FrameHead {
    /// Protocol version.
    pub version: u16,
    /// Call id.
    pub id: u64,
}

/// Which Raft call a [`Call::Raft`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaftKind {
    /// AppendEntries (also the heartbeat).
    AppendEntries,
    /// Vote.
    Vote,
    /// One InstallSnapshot chunk.
    InstallSnapshot,
}

impl RaftKind {
    /// The call's name, for logs and refusals.
    pub fn name(self) -> &'static str {
        match self {
            RaftKind::AppendEntries => "AppendEntries",
            RaftKind::Vote => "Vote",
            RaftKind::InstallSnapshot => "InstallSnapshot",
        }
    }
}

/// What an append carries to be applied at most once (see `dlog-node`'s
/// session table): a client numbers its appends within a random session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionTag {
    /// Random id the client chose for its session.
    pub session: u64,
    /// The append's number in the session, from 1.
    pub seq: u64,
    /// Every seq below this was acknowledged to the client.
    pub floor: u64,
}
