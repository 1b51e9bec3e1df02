//! [`Items`]: the client entries of an append, one shared buffer.

use dlog_ledger::EntryKind;
use serde::{Deserialize, Serialize};

/// The `(kind, payload)` client entries of one batch, in one buffer.
///
/// Cloning shares the buffer: openraft clones a Raft entry for every
/// follower's AppendEntries and again for apply, and a batch of 1000
/// entries as a `Vec` of `Vec`s cost 1000 allocations and copies each time.
/// Decoding fills the buffer directly (no allocation per entry).
///
/// Kinds are the ledger's [`EntryKind`]: a reserved kind byte fails to
/// decode (it is refused, never coerced).
///
/// The encoding is exactly serde's default for `Vec<(u8, Vec<u8>)>` (in
/// bincode: length, then per item the kind byte, the payload length and the
/// payload; in JSON: an array of `[kind, [bytes..]]`), so stored Raft logs
/// and peers are unaffected by the representation.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Items(std::sync::Arc<ItemsBuf>);

#[derive(Default, PartialEq, Eq)]
struct ItemsBuf {
    kinds: Vec<EntryKind>,
    /// End of each payload in `data`.
    ends: Vec<usize>,
    data: Vec<u8>,
}

impl ItemsBuf {
    fn push(&mut self, kind: EntryKind, payload: &[u8]) {
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
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (EntryKind, &[u8])> + '_ {
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

impl<'a> FromIterator<(EntryKind, &'a [u8])> for Items {
    fn from_iter<I: IntoIterator<Item = (EntryKind, &'a [u8])>>(iter: I) -> Items {
        let mut b = ItemsBuf::default();
        for (k, p) in iter {
            b.push(k, p);
        }
        Items(b.into())
    }
}

impl From<Vec<(EntryKind, Vec<u8>)>> for Items {
    fn from(v: Vec<(EntryKind, Vec<u8>)>) -> Items {
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
            seq.serialize_element(&(k.to_byte(), serde_bytes::Bytes::new(p)))?;
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
    use dlog_ledger::EntryKind;
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
            let kind = EntryKind::from_byte(kind).map_err(A::Error::custom)?;
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

    fn kind() -> impl Strategy<Value = EntryKind> {
        prop_oneof![Just(EntryKind::Data), Just(EntryKind::Notarization)]
    }

    fn entries() -> impl Strategy<Value = Vec<(EntryKind, Vec<u8>)>> {
        proptest::collection::vec(
            (kind(), proptest::collection::vec(any::<u8>(), 0..300)),
            0..20,
        )
    }

    proptest! {
        /// Byte-identical to serde's default for `Vec<(u8, Vec<u8>)>`, in
        /// bincode and JSON, and it round-trips; every cut is an error.
        #[test]
        fn encoding_is_serdes_default(items in entries()) {
            let plain: Vec<(u8, Vec<u8>)> = items.iter().map(|(k, p)| (k.to_byte(), p.clone())).collect();
            let fast = Items::from(items);
            let b = bincode::serialize(&fast).unwrap();
            prop_assert_eq!(&b, &bincode::serialize(&plain).unwrap());
            prop_assert_eq!(serde_json::to_string(&fast).unwrap(), serde_json::to_string(&plain).unwrap());
            prop_assert_eq!(&bincode::deserialize::<Items>(&b).unwrap(), &fast);
            prop_assert_eq!(&bincode::deserialize_from::<_, Items>(&b[..]).unwrap(), &fast);
            let json: Items = serde_json::from_str(&serde_json::to_string(&fast).unwrap()).unwrap();
            prop_assert_eq!(&json, &fast);
            for cut in 0..b.len() {
                prop_assert!(bincode::deserialize::<Items>(&b[..cut]).is_err());
            }
        }

        /// A reserved kind byte anywhere in the list fails to decode: it is
        /// refused, never coerced into a kind the ledger knows.
        #[test]
        fn reserved_kinds_are_refused(items in entries(), at in any::<prop::sample::Index>(), bad in 2u8..) {
            let mut plain: Vec<(u8, Vec<u8>)> = items.iter().map(|(k, p)| (k.to_byte(), p.clone())).collect();
            plain.push((0, b"x".to_vec()));
            let i = at.index(plain.len());
            plain[i].0 = bad;
            let e = bincode::deserialize::<Items>(&bincode::serialize(&plain).unwrap()).unwrap_err();
            prop_assert!(e.to_string().contains("reserved"), "{}", e);
        }

        /// `iter` gives back the entries; `concat` joins batches in order.
        #[test]
        fn iter_and_concat(parts in proptest::collection::vec(entries(), 0..5)) {
            let built: Vec<Items> = parts.iter().map(|p| Items::from(p.clone())).collect();
            for (items, plain) in built.iter().zip(&parts) {
                prop_assert_eq!(items.len(), plain.len());
                prop_assert_eq!(items.payload_bytes(), plain.iter().map(|(_, p)| p.len()).sum::<usize>());
                let back: Vec<(EntryKind, Vec<u8>)> = items.iter().map(|(k, p)| (k, p.to_vec())).collect();
                prop_assert_eq!(&back, plain);
            }
            let all: Vec<(EntryKind, Vec<u8>)> = parts.concat();
            prop_assert_eq!(Items::concat(&built), Items::from(all));
        }
    }
}
