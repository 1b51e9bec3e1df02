//! The node's side of the wire protocol.
//!
//! The protocol itself (frames, calls and replies, the codec, the role
//! table, the connection pool) is `dlog-client`'s, re-exported here. What
//! only a node speaks lives here: the Raft messages, which travel inside
//! [`Call::Raft`] and [`Reply::Raft`] as opaque bytes so that clients never
//! link openraft. [`RaftCall`] encodes and decodes them; the body of a
//! `Call::Raft` is the bincode encoding of the openraft request (a snapshot
//! chunk with its data as one byte string, see `snapshot_chunk`), the body
//! of a `Reply::Raft` that of the openraft response.

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

pub use dlog_client::access::authorize;
pub use dlog_client::codec::{decode, encode, encode_framed};
pub use dlog_client::pool::{is_blocked, Blocked, Pool, SharedWriter};
pub use dlog_client::wire::*;

use crate::error::Result;
use crate::types::TypeConfig;

/// A Raft request, as openraft hands it to the network and takes it from
/// the server.
#[derive(Debug)]
pub enum RaftCall {
    /// AppendEntries (also the heartbeat).
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// Vote.
    Vote(VoteRequest<NodeId>),
    /// One InstallSnapshot chunk.
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
}

/// A snapshot chunk as it is encoded (see `snapshot_chunk`).
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
struct Chunk(#[serde(with = "snapshot_chunk")] InstallSnapshotRequest<TypeConfig>);

#[derive(Serialize)]
#[serde(transparent)]
struct ChunkRef<'a>(#[serde(with = "snapshot_chunk")] &'a InstallSnapshotRequest<TypeConfig>);

impl RaftCall {
    /// Which Raft call this is.
    pub fn kind(&self) -> RaftKind {
        match self {
            RaftCall::AppendEntries(_) => RaftKind::AppendEntries,
            RaftCall::Vote(_) => RaftKind::Vote,
            RaftCall::InstallSnapshot(_) => RaftKind::InstallSnapshot,
        }
    }

    /// The wire call carrying this request.
    pub fn to_call(&self) -> Result<Call> {
        let body = match self {
            RaftCall::AppendEntries(r) => encode(r)?,
            RaftCall::Vote(r) => encode(r)?,
            RaftCall::InstallSnapshot(r) => encode(&ChunkRef(r))?,
        };
        Ok(Call::Raft {
            kind: self.kind(),
            body,
        })
    }

    /// Decodes the body of a [`Call::Raft`] (bounded, never panics).
    pub fn decode(kind: RaftKind, body: &[u8]) -> Result<RaftCall> {
        Ok(match kind {
            RaftKind::AppendEntries => RaftCall::AppendEntries(decode(body)?),
            RaftKind::Vote => RaftCall::Vote(decode(body)?),
            RaftKind::InstallSnapshot => RaftCall::InstallSnapshot(decode::<Chunk>(body)?.0),
        })
    }
}

/// The answer to a [`RaftCall`].
#[derive(Debug)]
pub enum RaftReply {
    /// To AppendEntries.
    AppendEntries(AppendEntriesResponse<NodeId>),
    /// To Vote.
    Vote(VoteResponse<NodeId>),
    /// To InstallSnapshot.
    InstallSnapshot(InstallSnapshotResponse<NodeId>),
}

impl RaftReply {
    /// The wire reply carrying this answer.
    pub fn to_reply(&self) -> Result<Reply> {
        Ok(Reply::Raft(match self {
            RaftReply::AppendEntries(r) => encode(r)?,
            RaftReply::Vote(r) => encode(r)?,
            RaftReply::InstallSnapshot(r) => encode(r)?,
        }))
    }

    /// Decodes the body of a [`Reply::Raft`] answering a call of `kind`.
    pub fn decode(kind: RaftKind, body: &[u8]) -> Result<RaftReply> {
        Ok(match kind {
            RaftKind::AppendEntries => RaftReply::AppendEntries(decode(body)?),
            RaftKind::Vote => RaftReply::Vote(decode(body)?),
            RaftKind::InstallSnapshot => RaftReply::InstallSnapshot(decode(body)?),
        })
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{BasicNode, LogId, SnapshotMeta, StoredMembership, Vote};
    use proptest::prelude::*;

    proptest! {
        /// A snapshot chunk encodes exactly as openraft's derived serde does,
        /// and decodes back.
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
            // The body of the Raft call.
            let call = RaftCall::InstallSnapshot(req.clone()).to_call().unwrap();
            let Call::Raft { kind, body } = call else {
                panic!("not a Raft call");
            };
            prop_assert_eq!(kind, RaftKind::InstallSnapshot);
            prop_assert_eq!(&body, &bincode::serialize(&req).unwrap());
            match RaftCall::decode(kind, &body).unwrap() {
                RaftCall::InstallSnapshot(back) => prop_assert_eq!(back, req),
                other => prop_assert!(false, "decoded {:?}", other.kind()),
            }
            // Every cut is an error, never a panic.
            for cut in 0..body.len() {
                prop_assert!(RaftCall::decode(kind, &body[..cut]).is_err());
            }
        }
    }
}
