//! openraft's network over the node RPC service (dlog-wg streams).
//!
//! AppendEntries are sized to what each follower's link delivers and get
//! deadlines that grow with their bytes ([`crate::link`]): a request
//! larger than about one heartbeat of link time is answered with
//! `PayloadTooLarge` and an entries hint (openraft sends fewer entries for
//! its next requests), so a follower behind a slow link catches up at the
//! link's rate instead of timing out and being resent the same way.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dlog_wg::config::PeerTable;
use dlog_wg::keys::PeerKey;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;

use crate::error::NodeError;
use crate::link::LinkEstimate;
use crate::rpc::{ErrorCode, Pool, RaftCall, RaftReply, Reply};
use crate::types::{NodeId, TypeConfig};

/// Builds one [`NetClient`] per Raft target; a node's `addr` is its peer-table name.
#[derive(Clone, Debug)]
pub struct Network {
    pool: Arc<Pool>,
    peers: Arc<PeerTable>,
    /// Each target's link, kept across the clients openraft makes for it.
    links: Arc<Mutex<HashMap<NodeId, Arc<Mutex<LinkEstimate>>>>>,
    heartbeat: Duration,
}

impl Network {
    /// A network over `pool`, resolving names in `peers`; `heartbeat` is
    /// Raft's heartbeat interval (the deadline of an empty AppendEntries,
    /// and about the link time one request may take).
    pub fn new(pool: Arc<Pool>, peers: Arc<PeerTable>, heartbeat: Duration) -> Network {
        Network {
            pool,
            peers,
            links: Arc::default(),
            heartbeat,
        }
    }
}

/// The client side of Raft RPCs to one target.
#[derive(Debug)]
pub struct NetClient {
    pool: Arc<Pool>,
    target: NodeId,
    peer: Option<PeerKey>,
    name: String,
    link: Arc<Mutex<LinkEstimate>>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = NetClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        let link = self
            .links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(target)
            .or_insert_with(|| {
                Arc::new(Mutex::new(LinkEstimate::new(
                    self.heartbeat,
                    self.heartbeat,
                )))
            })
            .clone();
        NetClient {
            pool: self.pool.clone(),
            target,
            peer: self.peers.by_name(&node.addr).map(|p| p.public_key),
            name: node.addr.clone(),
            link,
        }
    }
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

impl NetClient {
    fn peer(&self) -> Result<PeerKey, dlog_client::Error> {
        self.peer.ok_or_else(|| {
            dlog_client::Error::Protocol(format!(
                "raft member {} ({}) is not in the peer table",
                self.target, self.name
            ))
        })
    }

    fn link(&self) -> std::sync::MutexGuard<'_, LinkEstimate> {
        self.link.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn send(&self, call: RaftCall, ttl: Duration) -> Result<RaftReply, dlog_client::Error> {
        let peer = self.peer()?;
        let kind = call.kind();
        let wire = call
            .to_call()
            .map_err(|e| dlog_client::Error::Protocol(e.to_string()))?;
        drop(call);
        self.exchange(&peer, kind, &wire, ttl).await
    }

    async fn exchange(
        &self,
        peer: &PeerKey,
        kind: crate::rpc::RaftKind,
        wire: &crate::rpc::Call,
        ttl: Duration,
    ) -> Result<RaftReply, dlog_client::Error> {
        match self.pool.call(peer, wire, ttl).await? {
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
        match e.remote().map(|r| r.code) {
            // A diverged peer has left Raft: like a down one, openraft backs
            // off instead of resending at once.
            Some(ErrorCode::Diverged) | None => RPCError::Unreachable(Unreachable::new(&e)),
            Some(_) => RPCError::Network(NetworkError::new(&e)),
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
        let entries = rpc.entries.len();
        let peer = self.peer().map_err(|e| self.map_err(e))?;
        let wire = RaftCall::AppendEntries(rpc)
            .to_call()
            .map_err(|e| self.map_err(dlog_client::Error::Protocol(e.to_string())))?;
        let bytes = match &wire {
            crate::rpc::Call::Raft { body, .. } => body.len(),
            _ => 0,
        };
        let (fit, ttl) = {
            let link = self.link();
            (link.entries_that_fit(entries, bytes), link.deadline(bytes))
        };
        if let Some(n) = fit {
            // Fewer entries next time (openraft retries at once with the hint).
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(n as u64),
            ));
        }
        // Heartbeats keep openraft's deadline; requests with entries get one
        // that grows with their bytes (within openraft's outer bound).
        let ttl = if entries == 0 {
            option.hard_ttl()
        } else {
            ttl.min(option.hard_ttl())
        };
        let started = Instant::now();
        let res = self
            .exchange(&peer, crate::rpc::RaftKind::AppendEntries, &wire, ttl)
            .await;
        match &res {
            Ok(_) => {
                let elapsed = started.elapsed();
                let pause = {
                    let mut link = self.link();
                    link.delivered(bytes, elapsed);
                    link.pause_after(bytes, elapsed)
                };
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
            }
            Err(dlog_client::Error::Timeout(_)) => self.link().timed_out(bytes, started.elapsed()),
            Err(_) => {}
        }
        match res {
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
