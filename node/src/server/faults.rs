//! Fault injection for tests (feature `test-support`, never in a
//! production build): partitions at the RPC layer, stalled disks, lossy
//! links.

use super::{boot, RunningNode};
use crate::config::NodeConfig;
use crate::error::Result;

/// [`super::start`], with impairments (loss, duplication, reordering)
/// applied to every datagram the node's tunnel sends: for tests of a lossy
/// network (this machine's kernel has no `netem` qdisc).
pub async fn start_with(cfg: NodeConfig, netem: Option<dlog_wg::Netem>) -> Result<RunningNode> {
    boot(cfg, netem).await
}

impl RunningNode {
    /// Fault injection for tests: drops every RPC to and from the named peers
    /// (a partition at the RPC layer; the tunnel itself stays up).
    pub fn partition(&self, peers: &[&str]) {
        let keys: Vec<[u8; 32]> = peers
            .iter()
            .filter_map(|n| self.inner.peers.by_name(n).map(|p| p.public_key.0))
            .collect();
        if let Ok(mut g) = self.inner.blocked.write() {
            g.extend(keys);
        }
        tracing::warn!(?peers, "partition: dropping RPCs to and from peers");
    }

    /// Fault injection for tests: while `on`, this node's Raft log appends
    /// do not become durable (a stalled disk); see
    /// [`LogStore::hold_flushes`](crate::log_store::LogStore::hold_flushes).
    pub fn hold_log_flushes(&self, on: bool) {
        self.log.hold_flushes(on);
        tracing::warn!(on, "fault injection: raft log flushes held");
    }

    /// Ends [`RunningNode::partition`].
    pub fn heal(&self) {
        if let Ok(mut g) = self.inner.blocked.write() {
            g.clear();
        }
        tracing::warn!("partition healed");
    }
}
