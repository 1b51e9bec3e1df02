//! Frames on the wire: a big-endian `u32` length, then the bincode encoding
//! (fixed-width integers) of a [`crate::wire`] frame. Decoding is bounded
//! and never panics on bad input.

use bytes::Bytes;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::wire::{Call, MAX_FRAME};

fn options() -> impl bincode::Options + Copy {
    use bincode::Options;
    bincode::options()
        .with_fixint_encoding()
        .allow_trailing_bytes()
}

/// Decodes a value from the wire, bounded (never panics on bad input).
pub fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T> {
    use bincode::Options;
    options()
        .with_limit(MAX_FRAME as u64 * 2)
        .deserialize(b)
        .map_err(|e| Error::Protocol(format!("decode: {e}")))
}

/// Encodes a value without a length prefix (the body of a
/// [`Call::Raft`], for example).
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    use bincode::Options;
    options()
        .serialize(v)
        .map_err(|e| Error::Protocol(format!("encode: {e}")))
}

/// Encodes `v` as one length-prefixed frame, ready for the wire.
pub fn encode_framed<T: Serialize>(v: &T) -> Result<Bytes> {
    use bincode::Options;
    let opts = options();
    let len = opts
        .serialized_size(v)
        .map_err(|e| Error::Protocol(format!("encode: {e}")))?;
    if len > MAX_FRAME as u64 {
        return Err(Error::Protocol(format!(
            "frame of {len} bytes exceeds the {MAX_FRAME}-byte limit"
        )));
    }
    let mut out = Vec::with_capacity(4 + len as usize);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    opts.serialize_into(&mut out, v)
        .map_err(|e| Error::Protocol(format!("encode: {e}")))?;
    Ok(Bytes::from(out))
}

/// Serialises exactly like [`crate::wire::RequestFrame`], borrowing the call.
#[derive(Serialize)]
pub(crate) struct RequestFrameRef<'a> {
    pub version: u16,
    pub id: u64,
    pub call: &'a Call,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{FrameHead, RaftKind, RequestFrame, PROTOCOL_VERSION};
    use proptest::prelude::*;

    proptest! {
        /// A request frame round-trips, its head decodes alone, and every
        /// cut of it is an error, never a panic.
        #[test]
        fn request_frames_round_trip(id in any::<u64>(), body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let call = Call::Raft { kind: RaftKind::AppendEntries, body: body.clone() };
            let framed = encode_framed(&RequestFrameRef { version: PROTOCOL_VERSION, id, call: &call }).unwrap();
            prop_assert_eq!(u32::from_be_bytes(framed[..4].try_into().unwrap()) as usize, framed.len() - 4);
            let head: FrameHead = decode(&framed[4..]).unwrap();
            prop_assert_eq!((head.version, head.id), (PROTOCOL_VERSION, id));
            match decode::<RequestFrame>(&framed[4..]).unwrap().call {
                Call::Raft { kind: RaftKind::AppendEntries, body: b } => prop_assert_eq!(b, body),
                other => prop_assert!(false, "decoded {}", other.name()),
            }
            for cut in 4..framed.len() - 1 {
                prop_assert!(decode::<RequestFrame>(&framed[4..cut]).is_err());
            }
        }
    }
}
