//! The node process: Raft + ledger + the RPC service on one WireGuard port.

mod admin;
mod append;
mod batcher;
mod checkpoint;
mod conn;
mod cosign;
mod fail_stop;
#[cfg(feature = "test-support")]
pub mod faults;
mod leader;
mod metrics;
mod peer;
mod reads;

use crate::config::{NodeConfig, NodeFiles};
use crate::error::{NodeError, Result};
use crate::failover::{self, LeaderContact};
use crate::log_store::{LogOptions, LogStore};
use crate::metrics::{Histogram, LATENCY_BUCKETS, SIZE_BUCKETS};
use crate::network::Network;
use crate::rpc::{Call, ErrorCode, NodeStatus, Pool, Reply, RpcError};
use crate::session::SessionTag;
use crate::state_machine::StateMachine;
use crate::types::{Items, NodeId, Raft};
use dlog_crypto::note::NoteSigner;
use dlog_wg::config::PeerTable;
use dlog_wg::core::PeerInfo;
use dlog_wg::Endpoint;
use openraft::{BasicNode, SnapshotPolicy};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

struct Job {
    items: Items,
    tag: Option<SessionTag>,
    reply: oneshot::Sender<std::result::Result<Reply, RpcError>>,
}

/// Counters exported on the metrics endpoint.
#[derive(Debug)]
pub struct Counters {
    /// Client entries acknowledged.
    pub appends: AtomicU64,
    /// Raft append batches committed.
    pub batches: AtomicU64,
    /// Calls refused by role.
    pub refused: AtomicU64,
    /// Checkpoints committed.
    pub checkpoints: AtomicU64,
    /// Leader: seconds from a Raft append batch's submission to its commit and apply.
    pub commit_seconds: Histogram,
    /// Leader: seconds from a client append's arrival to its acknowledgement.
    pub append_seconds: Histogram,
    /// Leader: entries per Raft append batch.
    pub batch_entries: Histogram,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            appends: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            checkpoints: AtomicU64::new(0),
            commit_seconds: Histogram::new(LATENCY_BUCKETS),
            append_seconds: Histogram::new(LATENCY_BUCKETS),
            batch_entries: Histogram::new(SIZE_BUCKETS),
        }
    }
}

struct Inner {
    cfg: NodeConfig,
    raft: Raft,
    sm: StateMachine,
    pool: Arc<Pool>,
    peers: Arc<PeerTable>,
    signer: NoteSigner,
    batch_tx: mpsc::Sender<Job>,
    counters: Counters,
    /// Wakes the checkpointer when appends were committed.
    appended: tokio::sync::Notify,
    /// Fault-injection drop switch (see [`RunningNode::partition`]).
    blocked: crate::rpc::Blocked,
    /// The trust file: a checkpoint is committed only with enough of its
    /// voters' signatures for offline verifiers (see [`collect_signatures`]).
    trust: Option<dlog_crypto::trust::TrustPolicy>,
    /// The trust file's voters and quorum only: what a checkpoint needs
    /// when it is committed (auditors cosign it later, see [`cosign`]).
    voter_trust: Option<dlog_crypto::trust::TrustPolicy>,
    /// When a leader last spoke to this node (see [`crate::failover`]).
    contact: LeaderContact,
    /// The leader's commit index as its recent messages announced it.
    commit_news: failover::CommitNews,
    /// Set once a diverged replica has left Raft ([`fail_stop`]): every
    /// call but `Status` is refused with `Diverged` (which peers treat as
    /// unreachable and clients retry elsewhere).
    stopped: std::sync::atomic::AtomicBool,
    /// Leader: the witnessed checkpoint's size and when this node first saw
    /// it; held while a cosignature is merged and committed, so merges on
    /// the leader happen one at a time (see [`cosign`]).
    witness_seen: tokio::sync::Mutex<Option<(u64, Instant)>>,
}

/// A running node (in this process).
pub struct RunningNode {
    inner: Arc<Inner>,
    endpoint: Endpoint,
    /// The Raft log (its flushes can be held, see [`faults`]).
    #[cfg_attr(not(feature = "test-support"), allow(dead_code))]
    log: LogStore,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for RunningNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningNode")
            .field("name", &self.inner.cfg.name)
            .finish_non_exhaustive()
    }
}

/// Runs the node described by `config_path` until SIGINT or SIGTERM.
pub async fn run(config_path: &Path) -> Result<()> {
    run_until(config_path, shutdown_signal()).await
}

/// The async runtime a node process runs on, sized by the config's
/// `workers` (default: one worker thread per core).
pub fn runtime(config_path: &Path) -> Result<tokio::runtime::Runtime> {
    let cfg = NodeConfig::load(config_path)?;
    let workers = cfg
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .map_err(|e| NodeError::Process(format!("cannot start the async runtime: {e}")))
}

/// Runs the node until `shutdown` completes.
pub async fn run_until(config_path: &Path, shutdown: impl Future<Output = ()>) -> Result<()> {
    let cfg = NodeConfig::load(config_path)?;
    let node = start(cfg).await?;
    shutdown.await;
    node.shutdown().await;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Starts a node: opens storage, binds the tunnel, starts Raft and the service.
pub async fn start(cfg: NodeConfig) -> Result<RunningNode> {
    boot(cfg, None).await
}

/// [`start`], with the tunnel's datagrams impaired by `netem` if given
/// (fault injection, see [`faults`]).
async fn boot(cfg: NodeConfig, netem: Option<dlog_wg::Netem>) -> Result<RunningNode> {
    let NodeFiles {
        peers,
        wg_key: wg,
        signer,
        trust,
    } = cfg.validate()?;
    std::fs::create_dir_all(&cfg.data_dir).map_err(|e| {
        NodeError::config(
            &cfg.file,
            "data_dir",
            format!("{}: {e}", cfg.data_dir.display()),
        )
    })?;
    let metrics = match cfg.metrics {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            NodeError::config(
                &cfg.file,
                "metrics",
                format!("cannot listen on {addr}: {e}"),
            )
        })?),
        None => None,
    };
    let sm = StateMachine::open(&cfg.data_dir, &cfg.shape()).map_err(|e| match e {
        // The fix is in this node's config, so the error names it.
        NodeError::ForeignData { ledger, detail } => NodeError::config(
            &cfg.file,
            "data_dir",
            format!(
                "{} ({}): {detail}; check `data_dir` and `log.log_id`",
                cfg.data_dir.display(),
                ledger.display()
            ),
        ),
        e => e,
    })?;
    let log = LogStore::open_with(
        &cfg.data_dir.join("raft"),
        LogOptions {
            file_bytes: cfg.raft.log_file_mb << 20,
            preallocate: cfg.raft.preallocate,
            cache_bytes: cfg.raft.log_cache_mb << 20,
        },
    )?;
    let peers = Arc::new(peers);
    let mut wcfg = dlog_wg::config::Config::new(wg, (*peers).clone());
    wcfg.mtu = cfg.mtu;
    wcfg.socket_buffer = 1 << 20;
    wcfg.connect_timeout = Duration::from_secs(5);
    let endpoint = Endpoint::bind_with(wcfg, cfg.listen, netem)
        .await
        .map_err(|e| NodeError::config(&cfg.file, "listen", format!("{}: {e}", cfg.listen)))?;
    let blocked = crate::rpc::Blocked::default();
    let pool = Arc::new(Pool::with_switch(
        endpoint.clone(),
        cfg.rpc_port,
        blocked.clone(),
    ));
    let rc = openraft::Config {
        cluster_name: cfg.log.origin.clone(),
        heartbeat_interval: cfg.raft.heartbeat_ms,
        election_timeout_min: cfg.raft.election_min_ms,
        election_timeout_max: cfg.raft.election_max_ms,
        install_snapshot_timeout: 20_000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.raft.snapshot_every),
        max_in_snapshot_log_to_keep: 1000,
        // With batches of at most `batch.max_bytes`, one AppendEntries stays
        // well under the frame limit; on a slow link the network sends fewer
        // (`crate::link`), and `install_snapshot_timeout` is the outer bound
        // of one that carries entries (vendor/openraft/DLOG-PATCH.md).
        max_payload_entries: 16,
        ..Default::default()
    }
    .validate()
    .map_err(|e| NodeError::config(&cfg.file, "raft", e))?;
    let raft = Raft::new(
        cfg.id,
        Arc::new(rc),
        Network::new(
            pool.clone(),
            peers.clone(),
            Duration::from_millis(cfg.raft.heartbeat_ms),
        ),
        log.clone(),
        sm.clone(),
    )
    .await
    .map_err(|e| NodeError::Raft(e.to_string()))?;
    if cfg.cluster.bootstrap
        && !raft
            .is_initialized()
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?
    {
        let members: BTreeMap<NodeId, BasicNode> = cfg
            .cluster
            .members
            .iter()
            .map(|m| (m.id, BasicNode::new(&m.name)))
            .collect();
        if let Err(e) = raft.initialize(members).await {
            tracing::warn!(%e, "raft initialize");
        }
    }
    let listener = endpoint.listen(cfg.rpc_port).await?;
    let (batch_tx, batch_rx) = mpsc::channel(4096);
    let inner = Arc::new(Inner {
        cfg,
        raft,
        sm,
        pool,
        peers,
        signer,
        batch_tx,
        counters: Counters::default(),
        appended: tokio::sync::Notify::new(),
        blocked,
        contact: LeaderContact::default(),
        commit_news: failover::CommitNews::default(),
        stopped: std::sync::atomic::AtomicBool::new(false),
        witness_seen: tokio::sync::Mutex::new(None),
        voter_trust: trust.clone().map(|mut t| {
            t.cosignatures = 0;
            t
        }),
        trust,
    });
    tracing::info!(name = %inner.cfg.name, id = inner.cfg.id, listen = %inner.cfg.listen, "node started");
    let mut tasks = vec![
        tokio::spawn(conn::accept_loop(inner.clone(), listener)),
        tokio::spawn(batcher::run(inner.clone(), batch_rx)),
        tokio::spawn(checkpoint::run(inner.clone())),
        tokio::spawn(leader::watch_leader(inner.clone())),
        tokio::spawn(leader::announce(inner.clone())),
        tokio::spawn(fail_stop::run(inner.clone())),
    ];
    if let Some(listener) = metrics {
        tasks.push(tokio::spawn(crate::metrics::serve(
            listener,
            metrics::inner_metrics(inner.clone()),
        )));
    }
    Ok(RunningNode {
        inner,
        endpoint,
        log,
        tasks,
    })
}

impl RunningNode {
    /// The Raft handle (for tests and embedding).
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// The WireGuard endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Status of this node.
    pub fn status(&self) -> NodeStatus {
        leader::status(&self.inner)
    }

    /// The metrics page as the loopback endpoint serves it (Prometheus text).
    pub fn metrics_text(&self) -> String {
        metrics::inner_metrics(self.inner.clone())()
    }

    /// Stops Raft, the service and the tunnel.
    pub async fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
        let _ = self.inner.raft.shutdown().await;
        self.inner.sm.close();
        self.endpoint.shutdown().await;
        tracing::info!(name = %self.inner.cfg.name, "node stopped");
    }
}

fn internal(e: impl std::fmt::Display) -> RpcError {
    RpcError::new(ErrorCode::Internal, e.to_string())
}

fn bad(e: impl std::fmt::Display) -> RpcError {
    RpcError::new(ErrorCode::BadRequest, e.to_string())
}

/// Runs one call: the call table. Every call has its handler; a replica
/// that diverged and left Raft answers only `Status`.
async fn route(
    inner: &Arc<Inner>,
    from: &PeerInfo,
    call: Call,
) -> std::result::Result<Reply, RpcError> {
    if inner.stopped.load(Ordering::Acquire) && !matches!(call, Call::Status) {
        return Err(RpcError::new(
            ErrorCode::Diverged,
            "this replica diverged and left Raft; see its status",
        ));
    }
    match call {
        Call::Raft { kind, body } => peer::raft(inner, kind, body).await,
        Call::SignCheckpoint { size, root } => peer::sign_checkpoint(inner, from, size, root).await,
        Call::Append { items, tag } => append::append(inner, from, items, tag).await,
        Call::Get { index } => reads::get(inner, from, index).await,
        Call::Inclusion { index, size } => reads::inclusion(inner, from, index, size).await,
        Call::Consistency { old, new } => reads::consistency(inner, from, old, new).await,
        Call::Checkpoint { linearizable } => reads::checkpoint(inner, from, linearizable).await,
        Call::WaitCheckpoint { covering, wait_ms } => {
            reads::wait_checkpoint(inner, covering, wait_ms).await
        }
        Call::Entries { start, max, local } => reads::entries(inner, from, start, max, local).await,
        Call::Witnessed { covering, wait_ms } => reads::witnessed(inner, covering, wait_ms).await,
        Call::Status => Ok(Reply::Status(leader::status(inner))),
        Call::Cosign { note } => cosign::submit(inner, from, note).await,
        Call::AddLearner { id, name } => admin::add_learner(inner, id, name).await,
        Call::ChangeMembership { voters } => admin::set_voters(inner, voters).await,
    }
}
