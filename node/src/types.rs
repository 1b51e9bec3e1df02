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

/// The `(kind byte, payload)` client entries of one batch, in one buffer.
///
/// Cloning shares the buffer: openraft clones a Raft entry for every
/// follower's AppendEntries and again for apply, and a batch of 1000
/// entries as a `Vec` of `Vec`s cost 1000 allocations and copies each time.
/// Decoding fills the buffer directly (no allocation per entry).
///
/// The encoding is exactly serde's default for `Vec<(u8, Vec<u8>)>` (in
/// bincode: length, then per item the kind byte, the payload length and the
/// payload; in JSON: an array of `[kind, [bytes..]]`), so stored Raft logs
/// and peers are unaffected by the representation.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Items(std::sync::Arc<ItemsBuf>);

#[derive(Default, PartialEq, Eq)]
struct ItemsBuf {
    kinds: Vec<u8>,
    /// End of each payload in `data`.
    ends: Vec<usize>,
    data: Vec<u8>,
}

impl ItemsBuf {
    fn push(&mut self, kind: u8, payload: &[u8]) {
        self.data.extend_from_slice(payload);
        self.kinds.push(kind);
        self.ends.push(self.data.len());
    }
}

impl Items {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.kinds.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.kinds.is_empty()
    }

    /// Payload bytes of all entries.
    pub fn payload_bytes(&self) -> usize {
        self.0.data.len()
    }

    /// The entries, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (u8, &[u8])> + '_ {
        let b = &*self.0;
        (0..b.kinds.len()).map(move |i| {
            let start = if i == 0 { 0 } else { b.ends[i - 1] };
            (b.kinds[i], &b.data[start..b.ends[i]])
        })
    }

    /// The entries of several batches, in order, in one buffer.
    pub fn concat(parts: &[Items]) -> Items {
        if let [one] = parts {
            return one.clone();
        }
        let n = parts.iter().map(Items::len).sum();
        let bytes = parts.iter().map(Items::payload_bytes).sum();
        let mut b = ItemsBuf {
            kinds: Vec::with_capacity(n),
            ends: Vec::with_capacity(n),
            data: Vec::with_capacity(bytes),
        };
        for (k, p) in parts.iter().flat_map(Items::iter) {
            b.push(k, p);
        }
        Items(b.into())
    }
}

impl<'a> FromIterator<(u8, &'a [u8])> for Items {
    fn from_iter<I: IntoIterator<Item = (u8, &'a [u8])>>(iter: I) -> Items {
        let mut b = ItemsBuf::default();
        for (k, p) in iter {
            b.push(k, p);
        }
        Items(b.into())
    }
}

impl From<Vec<(u8, Vec<u8>)>> for Items {
    fn from(v: Vec<(u8, Vec<u8>)>) -> Items {
        v.iter().map(|(k, p)| (*k, p.as_slice())).collect()
    }
}

impl std::fmt::Debug for Items {
    /// A summary: a batch can hold megabytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Items({} entries, {} B)",
            self.len(),
            self.payload_bytes()
        )
    }
}

impl Serialize for Items {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.len()))?;
        for (k, p) in self.iter() {
            seq.serialize_element(&(k, serde_bytes::Bytes::new(p)))?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Items {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Items, D::Error> {
        d.deserialize_seq(items_de::List)
    }
}

/// Decoding [`Items`] straight into its buffer: the list visitor hands each
/// `(kind, payload)` tuple a seed that appends to the buffer.
mod items_de {
    use super::ItemsBuf;
    use serde::de::{DeserializeSeed, Deserializer, Error, SeqAccess, Visitor};
    use std::fmt;

    /// Upper bound on entries reserved from a length prefix before any is
    /// read (a hostile prefix must not allocate gigabytes).
    const MAX_PREALLOC: usize = 4096;

    pub(super) struct List;

    impl<'de> Visitor<'de> for List {
        type Value = super::Items;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of (kind, payload) entries")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<super::Items, A::Error> {
            let n = seq.size_hint().unwrap_or(0).min(MAX_PREALLOC);
            let mut b = ItemsBuf {
                kinds: Vec::with_capacity(n),
                ends: Vec::with_capacity(n),
                data: Vec::new(),
            };
            while seq.next_element_seed(Item(&mut b))?.is_some() {}
            Ok(super::Items(b.into()))
        }
    }

    /// One `(kind, payload)` tuple, appended to the buffer.
    struct Item<'b>(&'b mut ItemsBuf);

    impl<'de> DeserializeSeed<'de> for Item<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_tuple(2, self)
        }
    }

    impl<'de> Visitor<'de> for Item<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a (kind, payload) pair")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let kind: u8 = seq
                .next_element()?
                .ok_or_else(|| A::Error::invalid_length(0, &self))?;
            let b = self.0;
            seq.next_element_seed(Payload(&mut b.data))?
                .ok_or_else(|| A::Error::invalid_length(1, &"a (kind, payload) pair"))?;
            b.kinds.push(kind);
            b.ends.push(b.data.len());
            Ok(())
        }
    }

    /// A payload's bytes, appended to the data buffer.
    struct Payload<'b>(&'b mut Vec<u8>);

    impl<'de> DeserializeSeed<'de> for Payload<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_bytes(self)
        }
    }

    impl<'de> Visitor<'de> for Payload<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("payload bytes")
        }
        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<(), E> {
            self.0.extend_from_slice(v);
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            // JSON writes bytes as an array of numbers.
            while let Some(x) = seq.next_element::<u8>()? {
                self.0.push(x);
            }
            Ok(())
        }
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
            let fast = Request::Append { timestamp_ns: ts, items: items.clone().into() };
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

        /// `iter` gives back the entries; `concat` joins batches in order.
        #[test]
        fn items_iter_and_concat(
            parts in proptest::collection::vec(
                proptest::collection::vec((any::<u8>(), proptest::collection::vec(any::<u8>(), 0..40)), 0..6),
                0..5,
            ),
        ) {
            let built: Vec<Items> = parts.iter().map(|p| Items::from(p.clone())).collect();
            for (items, plain) in built.iter().zip(&parts) {
                prop_assert_eq!(items.len(), plain.len());
                prop_assert_eq!(items.payload_bytes(), plain.iter().map(|(_, p)| p.len()).sum::<usize>());
                let back: Vec<(u8, Vec<u8>)> = items.iter().map(|(k, p)| (k, p.to_vec())).collect();
                prop_assert_eq!(&back, plain);
            }
            let all: Vec<(u8, Vec<u8>)> = parts.concat();
            prop_assert_eq!(Items::concat(&built), Items::from(all));
        }
    }
}
