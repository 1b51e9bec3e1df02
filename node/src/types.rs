//! Raft type configuration and the application data carried by Raft entries.

use serde::{Deserialize, Serialize};

/// A Raft node id (`node-N` has id `N`).
pub type NodeId = u64;

/// Payload bytes of `(kind byte, payload)` items.
pub fn items_bytes(items: &[(u8, Vec<u8>)]) -> usize {
    items.iter().map(|(_, p)| p.len()).sum()
}

/// Application requests replicated through Raft (the `D` of the type config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Request {
    /// A group-committed batch of client entries with the leader-assigned timestamp.
    Append {
        /// Unix nanoseconds assigned by the leader; replicas append with it.
        timestamp_ns: u64,
        /// `(kind byte, payload)` per entry.
        #[serde(with = "items")]
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

/// Serde for `(kind, payload)` lists with each payload as one byte string.
///
/// The encoding is exactly serde's default for `Vec<(u8, Vec<u8>)>` in
/// bincode (length, then per item the kind byte, the payload length and the
/// payload), so stored Raft logs and peers are unaffected. What changes is
/// speed: serde's default visits a `Vec<u8>` one byte at a time, which was
/// most of the (de)serialisation cost of a batch.
pub mod items {
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises `items`.
    pub fn serialize<S: Serializer>(items: &[(u8, Vec<u8>)], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(items.len()))?;
        for (k, p) in items {
            seq.serialize_element(&(k, serde_bytes::Bytes::new(p)))?;
        }
        seq.end()
    }

    /// Deserialises what [`serialize`] wrote.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(u8, Vec<u8>)>, D::Error> {
        let v: Vec<(u8, serde_bytes::ByteBuf)> = Deserialize::deserialize(d)?;
        Ok(v.into_iter().map(|(k, b)| (k, b.into_vec())).collect())
    }
}

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
            items in proptest::collection::vec((any::<u8>(), proptest::collection::vec(any::<u8>(), 0..300)), 0..20),
        ) {
            let fast = Request::Append { timestamp_ns: ts, items: items.clone() };
            let plain = Plain::Append { timestamp_ns: ts, items };
            let b = bincode::serialize(&fast).unwrap();
            prop_assert_eq!(&b, &bincode::serialize(&plain).unwrap());
            prop_assert_eq!(
                serde_json::to_string(&fast).unwrap(),
                serde_json::to_string(&plain).unwrap()
            );
            let back: Request = bincode::deserialize(&b).unwrap();
            prop_assert_eq!(back, fast);
        }
    }
}
