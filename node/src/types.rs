//! Raft type configuration and the application data carried by Raft entries.

use serde::{Deserialize, Serialize};

/// A Raft node id (`node-N` has id `N`).
pub type NodeId = u64;

/// Application requests replicated through Raft (the `D` of the type config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Request {
    /// A group-committed batch of client entries with the leader-assigned timestamp.
    Append {
        /// Unix nanoseconds assigned by the leader; replicas append with it.
        timestamp_ns: u64,
        /// `(kind byte, payload)` per entry.
        items: Vec<(u8, Vec<u8>)>,
    },
    /// A checkpoint note signed by a majority of voters; every replica checks
    /// it against its own root before storing it.
    Checkpoint {
        /// The signed note, verbatim.
        note: String,
    },
    /// A sealed segment's root and chain hash, as the leader computed them;
    /// every replica compares its own.
    Seal {
        /// Segment number.
        segment: u64,
        /// Merkle root of the segment.
        root: [u8; 32],
        /// Chain hash after the segment.
        chain: [u8; 32],
    },
}

/// What applying a [`Request`] produced (the `R` of the type config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Response {
    /// Index of the first appended entry (appends only).
    pub first: u64,
    /// Number of appended entries (0 for non-append records).
    pub count: u64,
    /// Timestamp the entries got.
    pub timestamp_ns: u64,
    /// Ledger size after applying.
    pub size: u64,
}

openraft::declare_raft_types!(
    /// DLog's Raft type configuration.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = crate::snapshot::SnapshotData,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle type.
pub type Raft = openraft::Raft<TypeConfig>;
/// A Raft log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A Raft log id.
pub type LogId = openraft::LogId<NodeId>;
/// A Raft storage error.
pub type StorageError = openraft::StorageError<NodeId>;
