//! The node's configuration file (TOML). Relative paths are relative
//! to the directory of the file that names them. Errors name the file and
//! the field.
//!
//! `node.toml`:
//!
//! ```toml
//! name = "node-1"                 # this node's entry in the peer table
//! id = 1                          # Raft id
//! data_dir = "data"
//! listen = "127.0.0.1:51821"      # the one UDP socket (WireGuard)
//! wg_key = "wg.key"               # dlog-wg key file (0600)
//! node_key = "node.key"           # dlog-crypto ed25519 key file (0600)
//! peers = "../peers.toml"         # dlog-wg peer table (names, keys, roles)
//! rpc_port = 7000                 # tunnel port of the node service (optional)
//! # metrics = "127.0.0.1:9101"    # optional, loopback only
//! # workers = 1                    # async worker threads (default: one per core)
//! # mtu = 1420                     # tunnel MTU (default 65000: loopback, LAN; see `NodeConfig::mtu`)
//! trust = "../trust.toml"         # optional: check voter signatures before committing a checkpoint
//!
//! [log]                           # identical on every node of the cluster
//! origin = "dlog/demo"
//! log_id = "00112233445566778899aabbccddeeff"
//! segment_bits = 16
//! max_payload = 1048576
//! # hash = "sha256"             # tree hash: blake3 (default) or sha256 (RFC 6962)
//!
//! [cluster]
//! bootstrap = true                # initialise Raft with `members` on first start
//! members = [{ id = 1, name = "node-1" }, { id = 2, name = "node-2" }, { id = 3, name = "node-3" }]
//!
//! [raft]                          # optional; defaults chosen for WireGuard
//! heartbeat_ms = 200            # also openraft's AppendEntries timeout
//! election_min_ms = 750         # a follower calls an election after
//! election_max_ms = 1500        #   max + random(min..max) ms of silence (openraft's leader lease)
//! snapshot_every = 20000
//! log_file_mb = 64              # Raft log file size
//! preallocate = true            # fallocate log files (an append's fsync commits no size change)
//! log_cache_mb = 64             # newest Raft log records kept decoded in memory
//!
//! [batch]                         # optional leader group commit bounds
//! max_entries = 8192
//! max_bytes = 1048576           # also the largest payload total of one Append call
//! in_flight = 8                 # Raft entries proposed and not yet applied
//! ```
//!
//! `client.toml` is `dlog-client`'s ([`dlog_client::config`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{NodeError, Result};
use crate::state_machine::LogShape;
use crate::types::NodeId;
pub use dlog_client::config::{load_peers, load_trust, load_wg_key, ClientConfig, DEFAULT_MTU};
use dlog_client::config::{read, rel, toml_err};
use dlog_client::RPC_PORT;
use dlog_crypto::keys::NodeKey;
use dlog_crypto::note::NoteSigner;
use dlog_crypto::trust::TrustPolicy;
use dlog_wg::config::{PeerTable, Role};
use dlog_wg::keys::KeyFile;

/// One initial cluster member.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Raft id.
    pub id: NodeId,
    /// Name in the peer table.
    pub name: String,
}

/// The `[log]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// Checkpoint origin.
    pub origin: String,
    /// Log id (32 hex digits), shared by every replica.
    pub log_id: String,
    /// Segment bits.
    #[serde(default = "default_bits")]
    pub segment_bits: u8,
    /// Payload limit.
    #[serde(default = "default_max_payload")]
    pub max_payload: u32,
    /// The Merkle tree's hash, `"blake3"` (default) or `"sha256"` (RFC 6962).
    #[serde(default)]
    pub hash: dlog_crypto::HashAlg,
}

fn default_bits() -> u8 {
    16
}
fn default_max_payload() -> u32 {
    dlog_ledger::entry::DEFAULT_MAX_PAYLOAD
}

/// The `[cluster]` table.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// Initialise Raft with `members` when this node has no Raft state.
    #[serde(default)]
    pub bootstrap: bool,
    /// Initial voters.
    #[serde(default)]
    pub members: Vec<Member>,
}

/// The `[raft]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftSection {
    /// Heartbeat interval.
    pub heartbeat_ms: u64,
    /// Election timeout, lower bound.
    pub election_min_ms: u64,
    /// Election timeout, upper bound.
    pub election_max_ms: u64,
    /// Build a snapshot after this many log entries.
    pub snapshot_every: u64,
    /// Size of one Raft log file, in MiB.
    pub log_file_mb: u64,
    /// Allocate each Raft log file at its full size when it is made, so an
    /// append's fsync commits no size change (see `log_store`).
    pub preallocate: bool,
    /// MiB of the newest Raft log records kept decoded in memory; older
    /// ones are read back from their file (see `log_store`).
    pub log_cache_mb: u64,
}

impl Default for RaftSection {
    fn default() -> Self {
        RaftSection {
            heartbeat_ms: 200,
            election_min_ms: 750,
            election_max_ms: 1500,
            snapshot_every: 20_000,
            log_file_mb: 64,
            preallocate: true,
            log_cache_mb: 64,
        }
    }
}

/// The `[batch]` table: group commit bounds on the leader.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchSection {
    /// Most client entries per Raft entry.
    pub max_entries: usize,
    /// Most payload bytes per Raft entry.
    pub max_bytes: usize,
    /// Raft entries proposed and not yet applied, at most.
    pub in_flight: usize,
    /// Checkpoint signing interval.
    pub checkpoint_ms: u64,
}

impl Default for BatchSection {
    fn default() -> Self {
        BatchSection {
            max_entries: 8192,
            max_bytes: 1 << 20,
            in_flight: 8,
            checkpoint_ms: 100,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeToml {
    name: String,
    id: NodeId,
    data_dir: PathBuf,
    listen: String,
    wg_key: PathBuf,
    node_key: PathBuf,
    peers: PathBuf,
    rpc_port: Option<u16>,
    metrics: Option<String>,
    workers: Option<usize>,
    mtu: Option<usize>,
    trust: Option<PathBuf>,
    log: LogSection,
    #[serde(default)]
    cluster: ClusterSection,
    #[serde(default)]
    raft: RaftSection,
    #[serde(default)]
    batch: BatchSection,
}

/// A parsed and checked `node.toml`.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The file it came from.
    pub file: PathBuf,
    /// Peer-table name.
    pub name: String,
    /// Raft id.
    pub id: NodeId,
    /// Data directory (absolute or relative to the cwd).
    pub data_dir: PathBuf,
    /// UDP listen address.
    pub listen: SocketAddr,
    /// WireGuard key file.
    pub wg_key: PathBuf,
    /// Signing key file.
    pub node_key: PathBuf,
    /// Peer table file.
    pub peers: PathBuf,
    /// Node service tunnel port.
    pub rpc_port: u16,
    /// Metrics address (loopback), if any.
    pub metrics: Option<SocketAddr>,
    /// Async worker threads; `None` is one per core. Nodes that share a
    /// machine (`dlog cluster up`) get that machine's cores divided among them.
    pub workers: Option<usize>,
    /// The tunnel's MTU (inner packet size). 65000 by default: on loopback
    /// or a LAN, the kernel fragments the large datagrams and one packet
    /// carries a whole frame. Across a WAN, a link with a smaller path MTU
    /// or a traffic shaper (which drops datagrams larger than its burst),
    /// set 1420, WireGuard's usual value.
    pub mtu: usize,
    /// Trust file: with it, the leader checks each voter signature before
    /// it puts a checkpoint through Raft.
    pub trust: Option<PathBuf>,
    /// Shared log shape.
    pub log: LogSection,
    /// Bootstrap settings.
    pub cluster: ClusterSection,
    /// Raft timing.
    pub raft: RaftSection,
    /// Group commit.
    pub batch: BatchSection,
}

impl NodeConfig {
    /// Reads and checks a node config file.
    pub fn load(file: &Path) -> Result<NodeConfig> {
        let text = read(file)?;
        let t: NodeToml = toml::from_str(&text).map_err(|e| toml_err(file, e))?;
        let base = file.parent().unwrap_or(Path::new("."));
        let listen: SocketAddr = t
            .listen
            .parse()
            .map_err(|e| NodeError::config(file, "listen", format!("{:?}: {e}", t.listen)))?;
        let metrics = match &t.metrics {
            None => None,
            Some(m) => {
                let a: SocketAddr = m
                    .parse()
                    .map_err(|e| NodeError::config(file, "metrics", format!("{m:?}: {e}")))?;
                if !a.ip().is_loopback() {
                    return Err(NodeError::config(
                        file,
                        "metrics",
                        "must be a loopback address",
                    ));
                }
                Some(a)
            }
        };
        if t.log.log_id.len() != 32 || !t.log.log_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(NodeError::config(
                file,
                "log.log_id",
                "must be 32 hexadecimal digits",
            ));
        }
        if !(1..=30).contains(&t.log.segment_bits) {
            return Err(NodeError::config(
                file,
                "log.segment_bits",
                "must be in 1..=30",
            ));
        }
        if t.log.origin.is_empty() || t.log.origin.contains('\n') {
            return Err(NodeError::config(
                file,
                "log.origin",
                "must be one non-empty line",
            ));
        }
        if t.raft.election_min_ms <= t.raft.heartbeat_ms * 2
            || t.raft.election_max_ms <= t.raft.election_min_ms
        {
            return Err(NodeError::config(
                file,
                "raft.election_min_ms",
                "need heartbeat_ms * 2 < election_min_ms < election_max_ms",
            ));
        }
        if !(1..=4096).contains(&t.raft.log_file_mb) {
            return Err(NodeError::config(
                file,
                "raft.log_file_mb",
                "must be between 1 and 4096",
            ));
        }
        if !(1..=65536).contains(&t.raft.log_cache_mb) {
            return Err(NodeError::config(
                file,
                "raft.log_cache_mb",
                "must be between 1 and 65536",
            ));
        }
        if t.batch.max_entries == 0 || t.batch.in_flight == 0 {
            return Err(NodeError::config(
                file,
                "batch",
                "max_entries and in_flight must be > 0",
            ));
        }
        let mtu = dlog_client::config::mtu(t.mtu).map_err(|e| NodeError::config(file, "mtu", e))?;
        if t.workers == Some(0) {
            return Err(NodeError::config(file, "workers", "must be at least 1"));
        }
        if t.cluster.bootstrap && !t.cluster.members.iter().any(|m| m.id == t.id) {
            return Err(NodeError::config(
                file,
                "cluster.members",
                "a bootstrapping node must list itself",
            ));
        }
        Ok(NodeConfig {
            file: file.to_path_buf(),
            name: t.name,
            id: t.id,
            data_dir: rel(base, &t.data_dir),
            listen,
            wg_key: rel(base, &t.wg_key),
            node_key: rel(base, &t.node_key),
            peers: rel(base, &t.peers),
            rpc_port: t.rpc_port.unwrap_or(RPC_PORT),
            metrics,
            workers: t.workers,
            mtu,
            trust: t.trust.map(|p| rel(base, &p)),
            log: t.log,
            cluster: t.cluster,
            raft: t.raft,
            batch: t.batch,
        })
    }

    /// The shared log shape.
    pub fn shape(&self) -> LogShape {
        LogShape {
            origin: self.log.origin.clone(),
            log_id: self.log.log_id.clone(),
            segment_bits: self.log.segment_bits,
            max_payload: self.log.max_payload,
            hash: self.log.hash,
        }
    }
}

/// The files a node config names, loaded and checked against the config
/// and each other (see [`NodeConfig::validate`]).
#[derive(Debug)]
pub struct NodeFiles {
    /// The peer table.
    pub peers: PeerTable,
    /// This node's WireGuard key (its public key is this node's entry).
    pub wg_key: KeyFile,
    /// This node's checkpoint signer (named as this node).
    pub signer: NoteSigner,
    /// The trust file, if the config names one (for this log's origin).
    pub trust: Option<TrustPolicy>,
}

impl NodeConfig {
    /// Loads the files the config names and checks them: this node is a
    /// voter or learner of the peer table under its WireGuard key, every
    /// initial member is in the peer table, the signing key is this node's
    /// and readable by its owner only, and the trust file is this log's.
    /// Errors name the config file and the field to fix.
    pub fn validate(&self) -> Result<NodeFiles> {
        let cfg = self;
        let peers = load_peers(&cfg.peers, &cfg.file, "peers")?;
        let wg = load_wg_key(&cfg.wg_key, &cfg.file, "wg_key")?;
        let me = peers.by_name(&cfg.name).ok_or_else(|| {
            NodeError::config(
                &cfg.file,
                "name",
                format!(
                    "{:?} is not in the peer table {}",
                    cfg.name,
                    cfg.peers.display()
                ),
            )
        })?;
        if me.public_key != wg.public_key() {
            return Err(NodeError::config(
                &cfg.file,
                "wg_key",
                format!(
                    "public key does not match the peer table entry {:?}",
                    cfg.name
                ),
            ));
        }
        if !matches!(me.role, Role::Voter | Role::Learner) {
            return Err(NodeError::config(
                &cfg.file,
                "name",
                format!(
                    "peer {:?} has role {:?}, not voter or learner",
                    cfg.name, me.role
                ),
            ));
        }
        for m in &cfg.cluster.members {
            if peers.by_name(&m.name).is_none() {
                return Err(NodeError::config(
                    &cfg.file,
                    "cluster.members",
                    format!("unknown peer {:?}", m.name),
                ));
            }
        }
        let signer = load_node_key(cfg)?.note_signer();
        let trust = match &cfg.trust {
            None => None,
            Some(p) => {
                let t = load_trust(p, &cfg.file, "trust")?;
                if t.hash != cfg.log.hash {
                    return Err(NodeError::config(
                        &cfg.file,
                        "trust",
                        format!(
                            "the trust file's tree hash is {}, log.hash is {}",
                            t.hash, cfg.log.hash
                        ),
                    ));
                }
                if t.origin != cfg.log.origin {
                    return Err(NodeError::config(
                        &cfg.file,
                        "trust",
                        format!(
                            "trust origin {:?} is not log.origin {:?}",
                            t.origin, cfg.log.origin
                        ),
                    ));
                }
                Some(t)
            }
        };
        Ok(NodeFiles {
            peers,
            wg_key: wg,
            signer,
            trust,
        })
    }
}

fn load_node_key(cfg: &NodeConfig) -> Result<NodeKey> {
    use std::os::unix::fs::PermissionsExt;
    let p = &cfg.node_key;
    let meta = std::fs::metadata(p)
        .map_err(|e| NodeError::config(&cfg.file, "node_key", format!("{}: {e}", p.display())))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(NodeError::config(
            &cfg.file,
            "node_key",
            format!("{} is readable by group or others (chmod 600)", p.display()),
        ));
    }
    let text = std::fs::read_to_string(p)
        .map_err(|e| NodeError::config(&cfg.file, "node_key", format!("{}: {e}", p.display())))?;
    let key = NodeKey::from_toml_str(&text)
        .map_err(|e| NodeError::config(&cfg.file, "node_key", format!("{}: {e}", p.display())))?;
    // Signatures are matched to the voter whose tunnel carried them by name.
    let signer = key.note_signer();
    if signer.name() != cfg.name {
        return Err(NodeError::config(
            &cfg.file,
            "node_key",
            format!(
                "{} is the key of {:?}, not of this node {:?}",
                p.display(),
                signer.name(),
                cfg.name
            ),
        ));
    }
    Ok(key)
}
