//! openraft's network over the node RPC service (dlog-wg streams).

use std::sync::Arc;
use std::time::Duration;

use dlog_wg::config::PeerTable;
use dlog_wg::keys::PeerKey;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;

use crate::error::NodeError;
use crate::rpc::{ErrorCode, Pool, RaftCall, RaftReply, Reply};
use crate::types::{NodeId, TypeConfig};

/// Builds one [`NetClient`] per Raft target; a node's `addr` is its peer-table name.
#[derive(Clone, Debug)]
pub struct Network {
    pool: Arc<Pool>,
    peers: Arc<PeerTable>,
}

impl Network {
    /// A network over `pool`, resolving names in `peers`.
    pub fn new(pool: Arc<Pool>, peers: Arc<PeerTable>) -> Network {
        Network { pool, peers }
    }
}

/// The client side of Raft RPCs to one target.
#[derive(Debug)]
pub struct NetClient {
    pool: Arc<Pool>,
    target: NodeId,
    peer: Option<PeerKey>,
    name: String,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = NetClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        NetClient {
            pool: self.pool.clone(),
            target,
            peer: self.peers.by_name(&node.addr).map(|p| p.public_key),
            name: node.addr.clone(),
        }
    }
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

impl NetClient {
    async fn send(&self, call: RaftCall, ttl: Duration) -> Result<RaftReply, dlog_client::Error> {
        let peer = self.peer.ok_or_else(|| {
            dlog_client::Error::Protocol(format!(
                "raft member {} ({}) is not in the peer table",
                self.target, self.name
            ))
        })?;
        let kind = call.kind();
        let wire = call
            .to_call()
            .map_err(|e| dlog_client::Error::Protocol(e.to_string()))?;
        drop(call);
        match self.pool.call(&peer, &wire, ttl).await? {
            Reply::Raft(body) => RaftReply::decode(kind, &body)
                .map_err(|e| dlog_client::Error::Protocol(e.to_string())),
            _ => Err(dlog_client::Error::Protocol(format!(
                "node {} answered {} with another reply",
                self.target,
                kind.name()
            ))),
        }
    }

    fn map_err<E: std::error::Error>(&self, e: dlog_client::Error) -> RpcErr<E> {
        let e = NodeError::from(e);
        match &e {
            // A diverged peer has left Raft: like a down one, openraft backs
            // off instead of resending at once.
            NodeError::Remote { code, .. } if code == &format!("{:?}", ErrorCode::Diverged) => {
                RPCError::Unreachable(Unreachable::new(&e))
            }
            NodeError::Remote { .. } => RPCError::Network(NetworkError::new(&e)),
            _ => RPCError::Unreachable(Unreachable::new(&e)),
        }
    }
}

fn unexpected<E: std::error::Error>(target: NodeId, what: &str) -> RpcErr<E> {
    let e = NodeError::Protocol(format!("node {target} answered {what} with another reply"));
    RPCError::Network(NetworkError::new(&e))
}

impl RaftNetwork<TypeConfig> for NetClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        match self
            .send(RaftCall::AppendEntries(rpc), option.hard_ttl())
            .await
        {
            Ok(RaftReply::AppendEntries(r)) => Ok(r),
            Ok(_) => Err(unexpected(self.target, "AppendEntries")),
            Err(e) => Err(self.map_err(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        match self
            .send(RaftCall::InstallSnapshot(rpc), option.hard_ttl())
            .await
        {
            Ok(RaftReply::InstallSnapshot(r)) => Ok(r),
            Ok(_) => Err(unexpected(self.target, "InstallSnapshot")),
            Err(e) => Err(self.map_err(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        match self.send(RaftCall::Vote(rpc), option.hard_ttl()).await {
            Ok(RaftReply::Vote(r)) => Ok(r),
            Ok(_) => Err(unexpected(self.target, "Vote")),
            Err(e) => Err(self.map_err(e)),
        }
    }
}
