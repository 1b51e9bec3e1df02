//! Canonical entry bytes (DESIGN §2), pure encode/decode.
//!
//! ```text
//! entry := version:u8 (=1) | kind:u8 | timestamp_ns:u64 | payload_len:u32 | payload
//! kind  := 0 data | 1 notarization | 2..=255 reserved (rejected)
//! ```

/// The only entry format version.
pub const ENTRY_VERSION: u8 = 1;
/// Bytes before the payload.
pub const ENTRY_HEADER_LEN: usize = 14;
/// Default payload limit: 1 MiB.
pub const DEFAULT_MAX_PAYLOAD: u32 = 1 << 20;

/// What an entry's payload means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// Opaque application data.
    Data,
    /// A notarization payload (`dlog-notary/v1`).
    Notarization,
}

impl EntryKind {
    /// The kind's byte on the wire.
    pub fn to_byte(self) -> u8 {
        match self {
            EntryKind::Data => 0,
            EntryKind::Notarization => 1,
        }
    }

    /// Parses a kind byte; 2..=255 are reserved.
    pub fn from_byte(b: u8) -> Result<Self, EntryError> {
        match b {
            0 => Ok(EntryKind::Data),
            1 => Ok(EntryKind::Notarization),
            other => Err(EntryError::ReservedKind(other)),
        }
    }
}

/// Why bytes are not a canonical entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// Fewer bytes than the fixed header.
    #[error("entry is {0} bytes, shorter than its 14-byte header")]
    Short(usize),
    /// Unknown format version.
    #[error("entry version {0} is not supported (expected 1)")]
    Version(u8),
    /// Kind byte in the reserved range.
    #[error("entry kind {0} is reserved")]
    ReservedKind(u8),
    /// The length field disagrees with the bytes present.
    #[error("entry declares a {declared}-byte payload but carries {actual} bytes")]
    Length {
        /// Payload length in the header.
        declared: u32,
        /// Payload bytes actually present.
        actual: usize,
    },
    /// Payload larger than the log's limit.
    #[error("payload of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Payload length.
        len: usize,
        /// The limit.
        limit: u32,
    },
}

/// A decoded entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// What the payload means.
    pub kind: EntryKind,
    /// Unix time in nanoseconds, assigned by the leader; never decreasing along the log.
    pub timestamp_ns: u64,
    /// The payload bytes.
    pub payload: Vec<u8>,
}

impl Entry {
    /// Canonical bytes of this entry.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENTRY_HEADER_LEN + self.payload.len());
        encode_into(&mut out, self.kind, self.timestamp_ns, &self.payload);
        out
    }

    /// Decodes canonical entry bytes; the whole slice must be one entry.
    pub fn decode(bytes: &[u8]) -> Result<Self, EntryError> {
        let (kind, timestamp_ns, payload) = decode_ref(bytes)?;
        Ok(Entry {
            kind,
            timestamp_ns,
            payload: payload.to_vec(),
        })
    }
}

/// Appends the canonical bytes of an entry to `out` without an intermediate `Entry`.
pub fn encode_into(out: &mut Vec<u8>, kind: EntryKind, timestamp_ns: u64, payload: &[u8]) {
    out.push(ENTRY_VERSION);
    out.push(kind.to_byte());
    out.extend_from_slice(&timestamp_ns.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

/// Decodes canonical entry bytes into borrowed parts: `(kind, timestamp_ns, payload)`.
pub fn decode_ref(bytes: &[u8]) -> Result<(EntryKind, u64, &[u8]), EntryError> {
    if bytes.len() < ENTRY_HEADER_LEN {
        return Err(EntryError::Short(bytes.len()));
    }
    if bytes[0] != ENTRY_VERSION {
        return Err(EntryError::Version(bytes[0]));
    }
    let kind = EntryKind::from_byte(bytes[1])?;
    let timestamp_ns = u64::from_be_bytes(bytes[2..10].try_into().expect("8 bytes"));
    let declared = u32::from_be_bytes(bytes[10..14].try_into().expect("4 bytes"));
    let payload = &bytes[ENTRY_HEADER_LEN..];
    if payload.len() != declared as usize {
        return Err(EntryError::Length {
            declared,
            actual: payload.len(),
        });
    }
    Ok((kind, timestamp_ns, payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout_is_fixed() {
        let e = Entry {
            kind: EntryKind::Notarization,
            timestamp_ns: 0x0102030405060708,
            payload: b"hi".to_vec(),
        };
        assert_eq!(
            e.encode(),
            [1, 1, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 2, b'h', b'i']
        );
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(Entry::decode(&[1, 0]), Err(EntryError::Short(2)));
        let mut good = Entry {
            kind: EntryKind::Data,
            timestamp_ns: 5,
            payload: vec![9; 3],
        }
        .encode();
        good[0] = 2;
        assert_eq!(Entry::decode(&good), Err(EntryError::Version(2)));
        good[0] = 1;
        good[1] = 7;
        assert_eq!(Entry::decode(&good), Err(EntryError::ReservedKind(7)));
        good[1] = 0;
        good.push(0);
        assert!(matches!(
            Entry::decode(&good),
            Err(EntryError::Length { .. })
        ));
    }

    proptest! {
        #[test]
        fn roundtrip(kind in 0u8..2, ts: u64, payload in proptest::collection::vec(any::<u8>(), 0..300)) {
            let e = Entry { kind: EntryKind::from_byte(kind).unwrap(), timestamp_ns: ts, payload };
            prop_assert_eq!(Entry::decode(&e.encode()).unwrap(), e);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(e) = Entry::decode(&bytes) {
                prop_assert_eq!(e.encode(), bytes);
            }
        }
    }
}
