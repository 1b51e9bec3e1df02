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
use crate::rpc::{parse_code, Call, ErrorCode, Pool, Reply};
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
    async fn send(&self, call: Call, ttl: Duration) -> Result<Reply, NodeError> {
        let peer = self.peer.ok_or_else(|| {
            NodeError::Protocol(format!(
                "raft member {} ({}) is not in the peer table",
                self.target, self.name
            ))
        })?;
        match self.pool.call_raw(&peer, &call, ttl).await? {
            Ok(r) => Ok(r),
            Err(e) => Err(NodeError::Remote {
                code: format!("{:?}", e.code),
                message: e.message,
            }),
        }
    }

    fn map_err<E: std::error::Error>(&self, e: NodeError) -> RpcErr<E> {
        match &e {
            // A diverged peer has left Raft: like a down one, openraft backs
            // off instead of resending at once.
            NodeError::Remote { code, .. } if parse_code(code) == ErrorCode::Diverged => {
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
        match self.send(Call::AppendEntries(rpc), option.hard_ttl()).await {
            Ok(Reply::AppendEntries(r)) => Ok(r),
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
            .send(Call::InstallSnapshot(rpc), option.hard_ttl())
            .await
        {
            Ok(Reply::InstallSnapshot(r)) => Ok(r),
            Ok(_) => Err(unexpected(self.target, "InstallSnapshot")),
            Err(e) => Err(self.map_err(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        match self.send(Call::Vote(rpc), option.hard_ttl()).await {
            Ok(Reply::Vote(r)) => Ok(r),
            Ok(_) => Err(unexpected(self.target, "Vote")),
            Err(e) => Err(self.map_err(e)),
        }
    }
}
