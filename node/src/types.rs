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
        items: Items,
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
    /// [`Request::Append`] with the client calls it joins kept apart, so
    /// that a call carrying a session tag is applied at most once (see
    /// [`crate::session`]). New entries use this; `Append` stays readable
    /// in logs written before it.
    AppendCalls {
        /// Unix nanoseconds assigned by the leader; replicas append with it.
        timestamp_ns: u64,
        /// `(kind byte, payload)` per entry, call after call.
        items: Items,
        /// The calls, in order: how many of `items` each has, and its tag.
        calls: Vec<CallTag>,
    },
    /// The witnessed checkpoint: a committed checkpoint with the auditors'
    /// cosignatures the leader checked and merged. Every replica checks the
    /// root against its own and keeps the newest.
    Witness {
        /// The note, with voter signatures and auditor cosignatures.
        note: String,
    },
}

impl Request {
    /// The client entries of an append request.
    pub fn items(&self) -> Option<&Items> {
        match self {
            Request::Append { items, .. } | Request::AppendCalls { items, .. } => Some(items),
            _ => None,
        }
    }
}

/// One client call inside a [`Request::AppendCalls`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallTag {
    /// Entries of the call.
    pub count: u32,
    /// Its session tag, when the client sent one.
    pub tag: Option<crate::session::SessionTag>,
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
    /// Per call of a [`Request::AppendCalls`], in order: where its entries
    /// are (a duplicate's: where its first copy went), or `None` for a copy
    /// of a call already acknowledged and forgotten (refused).
    #[serde(default)]
    pub calls: Vec<Option<crate::session::Placed>>,
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

pub use dlog_client::Items;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The same shape with serde's default encoding.
    #[derive(Serialize, Deserialize)]
    enum Plain {
        Append {
            timestamp_ns: u64,
            items: Vec<(u8, Vec<u8>)>,
        },
    }

    proptest! {
        /// Byte-identical to serde's default, in bincode and JSON, and it
        /// round-trips; so logs written before the change still read.
        #[test]
        fn items_encoding_is_serdes_default(
            ts in any::<u64>(),
            items in proptest::collection::vec((0u8..2, proptest::collection::vec(any::<u8>(), 0..300)), 0..20),
        ) {
            let typed: Vec<(dlog_ledger::EntryKind, Vec<u8>)> = items.iter().map(|(k, p)| (dlog_ledger::EntryKind::from_byte(*k).unwrap(), p.clone())).collect();
            let fast = Request::Append { timestamp_ns: ts, items: typed.into() };
            let plain = Plain::Append { timestamp_ns: ts, items };
            let b = bincode::serialize(&fast).unwrap();
            prop_assert_eq!(&b, &bincode::serialize(&plain).unwrap());
            prop_assert_eq!(
                serde_json::to_string(&fast).unwrap(),
                serde_json::to_string(&plain).unwrap()
            );
            let back: Request = bincode::deserialize(&b).unwrap();
            prop_assert_eq!(&back, &fast);
            // From a reader (no borrowing) and from JSON as well.
            let read: Request = bincode::deserialize_from(&b[..]).unwrap();
            prop_assert_eq!(&read, &fast);
            let json: Request = serde_json::from_str(&serde_json::to_string(&fast).unwrap()).unwrap();
            prop_assert_eq!(&json, &fast);
            // Every cut of the bytes is an error, never a panic.
            for cut in 0..b.len() {
                prop_assert!(bincode::deserialize::<Request>(&b[..cut]).is_err());
            }
        }
    }
}
