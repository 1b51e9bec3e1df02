//! The node process: Raft + ledger + the RPC service on one WireGuard port.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dlog_crypto::keys::NodeKey;
use dlog_crypto::note::{Checkpoint, NoteSignature, NoteSigner, SignedNote};
use dlog_wg::config::{PeerTable, Role};
use dlog_wg::core::PeerInfo;
use dlog_wg::frame::FrameReader;
use dlog_wg::{Endpoint, Stream};
use openraft::error::{ClientWriteError, RaftError};
use openraft::metrics::RaftServerMetrics;
use openraft::{BasicNode, ServerState, SnapshotPolicy};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::config::{load_peers, load_wg_key, NodeConfig};
use crate::error::{NodeError, Result};
use crate::failover::{self, LeaderContact};
use crate::log_store::{LogOptions, LogStore};
use crate::metrics::{Histogram, LATENCY_BUCKETS, SIZE_BUCKETS};
use crate::network::Network;
use crate::rpc::{
    authorize, decode, encode_framed, Call, ErrorCode, FrameHead, NodeStatus, Pool, RaftCall,
    RaftReply, Reply, RequestFrame, ResponseFrame, RpcError, SharedWriter, MAX_CHECKPOINT_WAIT_MS,
    MAX_ENTRIES_BYTES, MAX_ENTRIES_PER_CALL, MAX_FRAME, PROTOCOL_VERSION,
};
use crate::session::{Placed, SessionTag};
use crate::state_machine::StateMachine;
use crate::types::{CallTag, Items, NodeId, Raft, Request};

use dlog_ledger::now_ns;

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

impl Inner {
    /// Tunnel counters in Prometheus text.
    fn endpoint_stats(&self, out: &mut String) {
        let st = self.pool.endpoint().stats();
        for (name, help, v) in [
            (
                "dlog_wg_rx_datagrams_total",
                "UDP datagrams received by the tunnel.",
                st.rx_datagrams,
            ),
            (
                "dlog_wg_tx_datagrams_total",
                "UDP datagrams sent by the tunnel.",
                st.tx_datagrams,
            ),
            (
                "dlog_wg_dropped_unknown_key_total",
                "Handshakes from keys not in the peer table, dropped.",
                st.dropped_unknown_key,
            ),
            (
                "dlog_wg_pq_rotations_total",
                "Post-quantum pre-shared keys installed.",
                st.pq_rotations,
            ),
            (
                "dlog_wg_pq_failures_total",
                "Post-quantum key exchanges that failed.",
                st.pq_failures,
            ),
            (
                "dlog_wg_sessions_restarted_total",
                "Peers seen back with new tunnel state.",
                st.sessions_restarted,
            ),
            (
                "dlog_wg_handshakes_total",
                "WireGuard handshakes completed.",
                st.handshakes,
            ),
        ] {
            crate::metrics::write_one(out, name, "counter", help, v as f64);
        }
    }
}

/// A running node (in this process).
pub struct RunningNode {
    inner: Arc<Inner>,
    endpoint: Endpoint,
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

/// Starts a node: opens storage, binds the tunnel, starts Raft and the service.
pub async fn start(cfg: NodeConfig) -> Result<RunningNode> {
    start_with(cfg, None).await
}

/// [`start`], with impairments (loss, duplication, reordering) applied to
/// every datagram the node's tunnel sends: for tests of a lossy network
/// (this machine's kernel has no `netem` qdisc).
pub async fn start_with(cfg: NodeConfig, netem: Option<dlog_wg::Netem>) -> Result<RunningNode> {
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
    let signer = load_node_key(&cfg)?.note_signer();
    let trust = match &cfg.trust {
        None => None,
        Some(p) => {
            let t = crate::config::load_trust(p, &cfg.file, "trust")?;
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
    wcfg.mtu = 65_000;
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
        // well under the frame limit and the heartbeat-long RPC timeout.
        max_payload_entries: 16,
        ..Default::default()
    }
    .validate()
    .map_err(|e| NodeError::config(&cfg.file, "raft", e))?;
    let raft = Raft::new(
        cfg.id,
        Arc::new(rc),
        Network::new(pool.clone(), peers.clone()),
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
        tokio::spawn(accept_loop(inner.clone(), listener)),
        tokio::spawn(batcher(inner.clone(), batch_rx)),
        tokio::spawn(checkpointer(inner.clone())),
        tokio::spawn(watch_leader(inner.clone())),
        tokio::spawn(announce(inner.clone())),
        tokio::spawn(fail_stop(inner.clone())),
    ];
    if let Some(listener) = metrics {
        tasks.push(tokio::spawn(crate::metrics::serve(
            listener,
            inner_metrics(inner.clone()),
        )));
    }
    Ok(RunningNode {
        inner,
        endpoint,
        log,
        tasks,
    })
}

fn inner_metrics(inner: Arc<Inner>) -> impl Fn() -> String + Send + Sync + 'static {
    use crate::metrics::{write_metric, write_one};
    move || {
        let m = inner.raft.metrics().borrow().clone();
        let (size, cp, age, (sessions, results), duplicates) = {
            let g = inner.sm.lock();
            let l = g.ledger().ok();
            (
                l.map(|l| l.size()).unwrap_or(0),
                l.and_then(|l| l.checkpoint().map(|c| c.size)).unwrap_or(0),
                g.checkpoint_age().unwrap_or(-1.0),
                g.sessions(),
                g.duplicates,
            )
        };
        let c = &inner.counters;
        let mut out = String::new();
        let last = m.last_log_index.unwrap_or(0);
        if let Some(rep) = &m.replication {
            write_metric(
                &mut out,
                "dlog_raft_follower_lag",
                "gauge",
                "Leader: Raft entries a follower's log lacks.",
                rep.iter().map(|(id, matched)| {
                    let matched = matched.map(|l| l.index).unwrap_or(0);
                    (
                        format!("node=\"{id}\""),
                        last.saturating_sub(matched) as f64,
                    )
                }),
            );
        }
        inner.endpoint_stats(&mut out);
        c.commit_seconds.render(
            "dlog_commit_seconds",
            "Leader: Raft append batch submitted to committed and applied.",
            &mut out,
        );
        c.append_seconds.render(
            "dlog_append_seconds",
            "Leader: client append received to acknowledged.",
            &mut out,
        );
        c.batch_entries.render(
            "dlog_batch_entries",
            "Leader: entries per Raft append batch.",
            &mut out,
        );
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        for (name, kind, help, v) in [
            (
                "dlog_sessions",
                "gauge",
                "Client sessions in the replicated session table.",
                sessions as f64,
            ),
            (
                "dlog_session_results",
                "gauge",
                "Append results held for retries.",
                results as f64,
            ),
            (
                "dlog_duplicate_appends_total",
                "counter",
                "Copies of tagged appends recognised and not stored again.",
                duplicates as f64,
            ),
            (
                "dlog_checkpoint_age_seconds",
                "gauge",
                "Seconds since this replica stored its latest checkpoint (-1: none since start).",
                age,
            ),
            (
                "dlog_appends_total",
                "counter",
                "Leader: client entries acknowledged.",
                load(&c.appends),
            ),
            (
                "dlog_batches_total",
                "counter",
                "Leader: Raft append batches committed.",
                load(&c.batches),
            ),
            (
                "dlog_refused_calls_total",
                "counter",
                "Calls refused (role, or not the signer's leader).",
                load(&c.refused),
            ),
            (
                "dlog_checkpoints_total",
                "counter",
                "Leader: checkpoints committed with a majority of signatures.",
                load(&c.checkpoints),
            ),
            (
                "dlog_raft_term",
                "gauge",
                "Current Raft term.",
                m.current_term as f64,
            ),
            (
                "dlog_raft_leader",
                "gauge",
                "Raft id of the known leader (0: none).",
                m.current_leader.unwrap_or(0) as f64,
            ),
            (
                "dlog_raft_applied",
                "gauge",
                "Last applied Raft log index.",
                m.last_applied.map(|l| l.index).unwrap_or(0) as f64,
            ),
            (
                "dlog_ledger_size",
                "gauge",
                "Entries in this replica's ledger.",
                size as f64,
            ),
            (
                "dlog_checkpoint_size",
                "gauge",
                "Tree size of this replica's latest stored checkpoint.",
                cp as f64,
            ),
        ] {
            write_one(&mut out, name, kind, help, v);
        }
        out
    }
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
        status(&self.inner)
    }

    /// The metrics page as the loopback endpoint serves it (Prometheus text).
    pub fn metrics_text(&self) -> String {
        inner_metrics(self.inner.clone())()
    }

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

async fn accept_loop(inner: Arc<Inner>, mut listener: dlog_wg::Listener) {
    let limit = Arc::new(Semaphore::new(1024));
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%e, "listener closed");
                return;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(peer = %stream.peer().name, "connection limit reached; dropping stream");
            continue;
        };
        let inner = inner.clone();
        tokio::spawn(async move {
            let peer = stream.peer().name.clone();
            if let Err(e) = serve_conn(inner, stream).await {
                tracing::debug!(%peer, %e, "connection ended");
            }
            drop(permit);
        });
    }
}

/// Calls of one stream being served at once; the stream is not read further
/// until one finishes (backpressure on a caller that floods).
const MAX_CALLS_PER_STREAM: usize = 4096;

/// Serves one multiplexed stream: reads request frames, runs each call, and
/// answers with the call's id as soon as it finishes. Raft calls run right
/// here, one at a time in arrival order (a leader's AppendEntries must not
/// overtake each other, and a follower has nothing to do meanwhile that a
/// later frame of this stream could need); every other call runs in a task of
/// its own, concurrently.
async fn serve_conn(inner: Arc<Inner>, stream: Stream) -> Result<()> {
    let peer = stream.peer().clone();
    // Only Raft peers may send large frames (AppendEntries, snapshot chunks);
    // a client's frame is bounded by what one Append may carry.
    let max_frame = match peer.role {
        Role::Voter | Role::Learner => MAX_FRAME,
        _ => {
            inner
                .cfg
                .batch
                .max_bytes
                .max(inner.cfg.log.max_payload as usize)
                * 2
                + (64 << 10)
        }
    };
    let (r, w) = stream.into_split();
    let out = SharedWriter::new(w);
    let calls = Arc::new(Semaphore::new(MAX_CALLS_PER_STREAM));
    let mut reader = FrameReader::new(r, max_frame);
    while let Some(bytes) = reader.recv().await? {
        if crate::rpc::is_blocked(&inner.blocked, &peer.public_key) {
            // Partitioned (fault injection): drop the request and the connection.
            return Ok(());
        }
        let head: FrameHead = decode(&bytes)?;
        let refuse = |code, message: String| {
            let frame = ResponseFrame {
                version: PROTOCOL_VERSION,
                id: head.id,
                result: Err(RpcError::new(code, message)),
            };
            let out = &out;
            async move { respond(out, &frame).await }
        };
        if head.version != PROTOCOL_VERSION {
            refuse(
                ErrorCode::Version,
                format!(
                    "protocol version {} is not supported (this node speaks {PROTOCOL_VERSION})",
                    head.version
                ),
            )
            .await;
            // Nothing else this peer sends can be understood.
            return Ok(());
        }
        let call = match decode::<RequestFrame>(&bytes) {
            Err(e) => {
                refuse(ErrorCode::BadRequest, e.to_string()).await;
                continue;
            }
            Ok(fr) => fr.call,
        };
        if !authorize(peer.role, &call) {
            inner.counters.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(peer = %peer.name, role = ?peer.role, call = call.name(), "refused call");
            let msg = format!(
                "peer {} has role {:?}, which may not call {}",
                peer.name,
                peer.role,
                call.name()
            );
            refuse(ErrorCode::Refused, msg).await;
            continue;
        }
        if matches!(call, Call::Raft { .. }) {
            answer(&inner, &peer, &out, head.id, call).await;
        } else {
            let permit = calls
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let (inner, peer, out) = (inner.clone(), peer.clone(), out.clone());
            tokio::spawn(async move {
                answer(&inner, &peer, &out, head.id, call).await;
                drop(permit);
            });
        }
    }
    Ok(())
}

/// Runs one call and queues its answer.
async fn answer(inner: &Arc<Inner>, peer: &PeerInfo, out: &SharedWriter, id: u64, call: Call) {
    let result = dispatch(inner, peer, call).await;
    respond(
        out,
        &ResponseFrame {
            version: PROTOCOL_VERSION,
            id,
            result,
        },
    )
    .await;
}

/// Queues one answer frame (dropped if the stream is gone).
async fn respond(out: &SharedWriter, frame: &ResponseFrame) {
    let bytes = encode_framed(frame).or_else(|e| {
        tracing::error!(id = frame.id, "cannot encode an answer: {e}");
        encode_framed(&ResponseFrame {
            version: PROTOCOL_VERSION,
            id: frame.id,
            result: Err(RpcError::new(ErrorCode::Internal, e.to_string())),
        })
    });
    if let Ok(b) = bytes {
        // Dropped if the stream is gone: the reader sees that too.
        let _ = out.send(b).await;
    }
}

/// The checkpoint this replica stored last (not a linearizable read).
fn stored_checkpoint(inner: &Inner, confirmed: bool) -> std::result::Result<Reply, RpcError> {
    let behind_ms = if confirmed {
        Some(0)
    } else {
        let (leader, quorum_ack, applied) = {
            let m = inner.raft.metrics();
            let m = m.borrow();
            let applied = m.last_applied.map_or(0, |l| l.index);
            (
                m.state == ServerState::Leader,
                m.millis_since_quorum_ack,
                applied,
            )
        };
        if leader {
            // A leader is current as of its last majority acknowledgement.
            quorum_ack
        } else {
            inner
                .commit_news
                .behind(applied, Instant::now())
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        }
    };
    let g = inner.sm.lock();
    serving(&g)?;
    let l = g.ledger().map_err(internal)?;
    let (note, size) = l
        .checkpoint()
        .map(|c| (c.note.clone(), c.size))
        .unwrap_or_default();
    Ok(Reply::Checkpoint {
        note,
        size,
        applied: l.size(),
        behind_ms,
    })
}

fn internal(e: impl std::fmt::Display) -> RpcError {
    RpcError::new(ErrorCode::Internal, e.to_string())
}

fn bad(e: impl std::fmt::Display) -> RpcError {
    RpcError::new(ErrorCode::BadRequest, e.to_string())
}

fn status(inner: &Inner) -> NodeStatus {
    let m = inner.raft.metrics().borrow().clone();
    let g = inner.sm.lock();
    let l = g.ledger().ok();
    NodeStatus {
        id: inner.cfg.id,
        name: inner.cfg.name.clone(),
        state: match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        }
        .into(),
        term: m.current_term,
        leader: m.current_leader,
        applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
        ledger_size: l.map(|l| l.size()).unwrap_or(0),
        checkpoint_size: l.and_then(|l| l.checkpoint().map(|c| c.size)).unwrap_or(0),
        diverged: g.diverged.clone(),
        voters: m.membership_config.membership().voter_ids().collect(),
    }
}

/// The leader this node knows, with its peer-table name.
fn leader_peer(inner: &Inner) -> Option<(NodeId, String)> {
    leader_of(&inner.raft.server_metrics().borrow())
}

fn leader_of(m: &RaftServerMetrics<NodeId, BasicNode>) -> Option<(NodeId, String)> {
    let id = m.current_leader?;
    let addr = m.membership_config.membership().get_node(&id)?.addr.clone();
    Some((id, addr))
}

fn is_leader(inner: &Inner) -> bool {
    let m = inner.raft.server_metrics();
    let m = m.borrow();
    m.current_leader == Some(inner.cfg.id) && m.state == ServerState::Leader
}

/// Waits (bounded) for a known leader.
async fn wait_leader(inner: &Inner, within: Duration) -> Option<(NodeId, String)> {
    let mut rx = inner.raft.server_metrics();
    let found = tokio::time::timeout(within, rx.wait_for(|m| leader_of(m).is_some())).await;
    match found {
        Ok(Ok(m)) => leader_of(&m),
        _ => None,
    }
}

/// Forwards a call to the leader (one hop: only for calls from clients/admins).
async fn forward(
    inner: &Inner,
    from: &PeerInfo,
    call: &Call,
) -> std::result::Result<Reply, RpcError> {
    if matches!(from.role, Role::Voter | Role::Learner) {
        return Err(RpcError {
            code: ErrorCode::NotLeader,
            message: "not the leader".into(),
            leader: leader_peer(inner).map(|l| l.1),
        });
    }
    let Some((id, name)) = wait_leader(inner, Duration::from_secs(1)).await else {
        return Err(RpcError::new(ErrorCode::NoLeader, "no leader is known"));
    };
    if name == inner.cfg.name {
        return Err(RpcError::new(
            ErrorCode::NoLeader,
            "leadership is changing; retry",
        ));
    }
    let Some(peer) = inner.peers.by_name(&name).map(|p| p.public_key) else {
        return Err(internal(format!("leader {name} is not in the peer table")));
    };
    // Give up on a leader that went silent or was replaced (a retry with
    // the same session tag is stored once): see `failover`.
    let silence = Duration::from_millis(inner.cfg.raft.election_min_ms);
    tokio::select! {
        biased;
        why = failover::leader_lost(&inner.raft, &inner.contact, id, silence) => {
            Err(RpcError::new(
                ErrorCode::NoLeader,
                format!("not forwarded to {name}: {why}; retry"),
            ))
        }
        r = inner.pool.call_raw(&peer, call, Duration::from_secs(15)) => match r {
            Ok(r) => r,
            Err(e) => Err(RpcError::new(
                ErrorCode::NoLeader,
                format!("forwarding to {name}: {e}"),
            )),
        },
    }
}

/// Serves a read from this replica's ledger when it holds the `needed`
/// entries the read is about. A follower that does not hold them yet (an
/// append the leader acknowledged may not be applied here) forwards the
/// call to the leader, so a client reads what was acknowledged wherever its
/// call lands; the leader answers a read past its log itself (a bad
/// request). Entries and proofs of a given size never change, so a read
/// served here is never stale.
async fn read(
    inner: &Inner,
    from: &PeerInfo,
    call: Call,
    needed: u64,
    f: impl Fn(&dlog_ledger::Ledger) -> dlog_ledger::Result<Reply>,
) -> std::result::Result<Reply, RpcError> {
    // Answered here if this replica holds the entries (or the leader has
    // confirmed it is current), `None` otherwise.
    let here = |confirmed: bool| -> Option<std::result::Result<Reply, RpcError>> {
        let g = inner.sm.lock();
        if let Err(e) = serving(&g) {
            return Some(Err(e));
        }
        let l = match g.ledger() {
            Ok(l) => l,
            Err(e) => return Some(Err(internal(e))),
        };
        (l.size() >= needed || confirmed).then(|| f(l).map_err(bad))
    };
    if let Some(r) = here(false) {
        return r;
    }
    if !is_leader(inner) {
        return forward(inner, from, &call).await;
    }
    // The leader may not have applied everything committed yet (just
    // elected), or may have been deposed without knowing it: a ReadIndex
    // round settles both before it calls the read out of range.
    inner
        .raft
        .ensure_linearizable()
        .await
        .map_err(|e| match e.forward_to_leader() {
            Some(_) => RpcError::new(ErrorCode::NotLeader, "not the leader"),
            None => internal(e),
        })?;
    here(true).unwrap_or_else(|| Err(internal("unreachable: a confirmed read is answered")))
}

/// A refusal that names the leader, for calls that are never forwarded
/// (membership: the leader must see the admin's own key).
fn redirect(inner: &Inner) -> RpcError {
    RpcError {
        code: ErrorCode::NotLeader,
        message: "not the leader; call the leader".into(),
        leader: leader_peer(inner).map(|l| l.1),
    }
}

fn write_err(inner: &Inner, e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> RpcError {
    match e.forward_to_leader() {
        Some(f) => RpcError {
            code: ErrorCode::NotLeader,
            message: "not the leader".into(),
            leader: f
                .leader_node
                .as_ref()
                .map(|n| n.addr.clone())
                .or_else(|| leader_peer(inner).map(|l| l.1)),
        },
        None => internal(e),
    }
}

/// Leader: a ReadIndex round, after which everything committed before the
/// call is applied here. Not the leader: a refusal that names it.
async fn leader_barrier(inner: &Inner) -> std::result::Result<(), RpcError> {
    inner
        .raft
        .ensure_linearizable()
        .await
        .map(|_| ())
        .map_err(|e| match e.forward_to_leader() {
            Some(_) => redirect(inner),
            None => internal(e),
        })
}

/// How long a membership call waits for an earlier change to commit.
const MEMBERSHIP_SETTLE: Duration = Duration::from_secs(10);

/// Runs one membership change on the leader.
///
/// openraft refuses a change while the last membership entry is uncommitted,
/// which is always the case right after an election: the entries of earlier
/// terms count as committed only once the new leader commits one of its own
/// term. So the leader first commits its term (the read-index barrier), then
/// retries for [`MEMBERSHIP_SETTLE`] while an earlier change is in progress.
/// Every other error is returned at once.
async fn change_membership<F, Fut>(inner: &Inner, op: F) -> std::result::Result<(), RpcError>
where
    F: Fn() -> Fut,
    Fut: Future<
        Output = std::result::Result<
            openraft::raft::ClientWriteResponse<crate::types::TypeConfig>,
            RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
        >,
    >,
{
    leader_barrier(inner).await?;
    let end = Instant::now() + MEMBERSHIP_SETTLE;
    loop {
        match op().await {
            Ok(_) => return Ok(()),
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                openraft::error::ChangeMembershipError::InProgress(p),
            ))) if Instant::now() < end => {
                tracing::debug!(%p, "membership: waiting for the previous change to commit");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(write_err(inner, e)),
        }
    }
}

/// One Raft message from a peer, handed to openraft.
async fn raft_call(inner: &Arc<Inner>, call: RaftCall) -> std::result::Result<RaftReply, RpcError> {
    match call {
        RaftCall::AppendEntries(r) => {
            // Heard on arrival: a big entry's fsync must not look like silence.
            inner.contact.heard_under(&r.vote);
            let arrived = Instant::now();
            let commit = r.leader_commit.map_or(0, |l| l.index);
            let resp = inner.raft.append_entries(r).await.map_err(internal)?;
            // News of the leader's commit index only from a leader this
            // node accepts (not from a deposed one).
            if resp.is_success() {
                inner.commit_news.heard(commit, arrived);
            }
            Ok(RaftReply::AppendEntries(resp))
        }
        RaftCall::Vote(r) => {
            let resp = inner.raft.vote(r.clone()).await.map_err(internal)?;
            let lease = Duration::from_millis(inner.cfg.raft.election_max_ms);
            if !is_leader(inner)
                && failover::should_campaign(&r, &resp, inner.contact.silent_for(), lease)
            {
                let inner = inner.clone();
                tokio::spawn(async move {
                    let patience = Duration::from_millis(inner.cfg.raft.heartbeat_ms);
                    failover::campaign(inner.raft.clone(), &inner.contact, inner.cfg.id, patience)
                        .await;
                });
            }
            Ok(RaftReply::Vote(resp))
        }
        RaftCall::InstallSnapshot(r) => {
            inner.contact.heard_under(&r.vote);
            inner
                .raft
                .install_snapshot(r)
                .await
                .map(RaftReply::InstallSnapshot)
                .map_err(internal)
        }
    }
}

async fn dispatch(
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
        Call::Raft { kind, body } => {
            let call = RaftCall::decode(kind, &body).map_err(bad)?;
            drop(body);
            raft_call(inner, call).await?.to_reply().map_err(internal)
        }
        Call::SignCheckpoint { size, root } => sign_checkpoint(inner, from, size, root).await,
        Call::Append { items, tag } => {
            let max = inner.cfg.log.max_payload as usize;
            if items.is_empty() {
                return Err(bad("an append needs at least one entry"));
            }
            if items.len() > inner.cfg.batch.max_entries {
                return Err(bad(format!(
                    "at most {} entries per call",
                    inner.cfg.batch.max_entries
                )));
            }
            let total = items.payload_bytes();
            let limit = inner.cfg.batch.max_bytes.max(max);
            if total > limit {
                return Err(bad(format!(
                    "{total} payload bytes in one call; at most {limit} (split the batch)"
                )));
            }
            for (_, p) in items.iter() {
                if p.len() > max {
                    return Err(bad(format!(
                        "payload of {} bytes exceeds the limit of {max} bytes",
                        p.len()
                    )));
                }
            }
            if let Some(d) = inner.sm.lock().diverged.clone() {
                return Err(RpcError::new(ErrorCode::Diverged, d));
            }
            if is_leader(inner) {
                let arrived = Instant::now();
                let (tx, rx) = oneshot::channel();
                let n = items.len() as u64;
                inner
                    .batch_tx
                    .send(Job {
                        items,
                        tag,
                        reply: tx,
                    })
                    .await
                    .map_err(|_| internal("batcher stopped"))?;
                let r = rx
                    .await
                    .map_err(|_| internal("batcher dropped the request"))?;
                if r.is_ok() {
                    inner.counters.appends.fetch_add(n, Ordering::Relaxed);
                    inner
                        .counters
                        .append_seconds
                        .observe(arrived.elapsed().as_secs_f64());
                }
                match r {
                    Err(e) if e.code == ErrorCode::NotLeader => Err(e),
                    other => other,
                }
            } else {
                forward(inner, from, &Call::Append { items, tag }).await
            }
        }
        Call::Get { index } => {
            let call = Call::Get { index };
            read(inner, from, call, index.saturating_add(1), |l| {
                l.entry(index).map(Reply::Entry)
            })
            .await
        }
        Call::Inclusion { index, size } => {
            let call = Call::Inclusion { index, size };
            read(inner, from, call, size, |l| {
                l.inclusion_proof(index, size).map(Reply::Proof)
            })
            .await
        }
        Call::Consistency { old, new } => {
            let call = Call::Consistency { old, new };
            read(inner, from, call, new, |l| {
                l.consistency_proof(old, new).map(Reply::Proof)
            })
            .await
        }
        Call::Checkpoint { linearizable } => {
            if linearizable {
                if is_leader(inner) {
                    inner.raft.ensure_linearizable().await.map_err(|e| {
                        match e.forward_to_leader() {
                            Some(_) => RpcError::new(ErrorCode::NotLeader, "not the leader"),
                            None => internal(e),
                        }
                    })?;
                } else {
                    return forward(inner, from, &Call::Checkpoint { linearizable }).await;
                }
            }
            stored_checkpoint(inner, linearizable)
        }
        Call::WaitCheckpoint { covering, wait_ms } => {
            let mut rx = inner.sm.watch_checkpoints();
            let wait = Duration::from_millis(wait_ms.min(MAX_CHECKPOINT_WAIT_MS).into());
            // Either way the answer is what this replica has stored by then.
            let _ = tokio::time::timeout(wait, rx.wait_for(|size| *size > covering)).await;
            stored_checkpoint(inner, false)
        }
        Call::Status => Ok(Reply::Status(status(inner))),
        Call::Entries { start, max, local } => {
            let max = max.clamp(1, MAX_ENTRIES_PER_CALL);
            let range = move |l: &dlog_ledger::Ledger| {
                let end = l.size().min(start.saturating_add(max.into()));
                // Out of range: the ledger's own error says so.
                let mut out = vec![serde_bytes::ByteBuf::from(l.entry(start)?)];
                let mut bytes = out[0].len();
                for i in start + 1..end {
                    let e = l.entry(i)?;
                    bytes += e.len();
                    if bytes > MAX_ENTRIES_BYTES {
                        break;
                    }
                    out.push(serde_bytes::ByteBuf::from(e));
                }
                Ok(Reply::Entries(out))
            };
            if local {
                let g = inner.sm.lock();
                serving(&g)?;
                return range(g.ledger().map_err(internal)?).map_err(bad);
            }
            let call = Call::Entries { start, max, local };
            read(inner, from, call, start.saturating_add(1), range).await
        }
        // Never forwarded: the leader must see the auditor's own key (a
        // forwarded call would come from this node's).
        Call::Cosign { note } => {
            if !is_leader(inner) {
                return Err(redirect(inner));
            }
            // Bounded: a leader cut off from its majority must not hold the
            // merge lock (and every later cosignature) until the partition heals.
            tokio::time::timeout(COSIGN_TIMEOUT, cosign(inner, from, note))
                .await
                .unwrap_or_else(|_| {
                    Err(RpcError::new(
                        ErrorCode::NoLeader,
                        "the cosignature was not committed in time; retry",
                    ))
                })
        }
        Call::Witnessed { covering, wait_ms } => {
            let mut rx = inner.sm.watch_witnessed();
            let wait = Duration::from_millis(wait_ms.min(MAX_CHECKPOINT_WAIT_MS).into());
            let _ = tokio::time::timeout(wait, rx.wait_for(|size| *size > covering)).await;
            let g = inner.sm.lock();
            serving(&g)?;
            let applied = g.ledger().map_err(internal)?.size();
            let note = g.witnessed().unwrap_or_default().to_string();
            let size = Checkpoint::from_note(&note).map_or(0, |c| c.size);
            Ok(Reply::Checkpoint {
                note,
                size,
                applied,
                behind_ms: None,
            })
        }
        Call::AddLearner { id, name } => {
            let Some(p) = inner.peers.by_name(&name) else {
                return Err(bad(format!("{name} is not in the peer table")));
            };
            if !matches!(p.role, Role::Voter | Role::Learner) {
                return Err(bad(format!("{name} has role {:?}", p.role)));
            }
            if !is_leader(inner) {
                return Err(redirect(inner));
            }
            change_membership(inner, || {
                inner.raft.add_learner(id, BasicNode::new(&name), false)
            })
            .await?;
            tracing::info!(id, %name, "membership: learner added");
            Ok(Reply::Done)
        }
        Call::ChangeMembership { voters } => {
            if !is_leader(inner) {
                return Err(redirect(inner));
            }
            let set: BTreeSet<NodeId> = voters.iter().copied().collect();
            change_membership(inner, || inner.raft.change_membership(set.clone(), false)).await?;
            tracing::info!(?voters, "membership: voters changed");
            Ok(Reply::Done)
        }
    }
}

/// How long after its last change a witnessed checkpoint keeps gathering
/// cosignatures before a newer
/// one may replace it while it lacks some auditor's (see [`crate::witness`]).
const JOIN_WINDOW: Duration = Duration::from_secs(10);
/// Longest a cosignature may take on the leader (barrier, merge, commit).
const COSIGN_TIMEOUT: Duration = Duration::from_secs(5);

/// Leader: merges an auditor's cosignature into the witnessed checkpoint
/// and commits the result through Raft, after checking the checkpoint's
/// root against its own ledger.
async fn cosign(
    inner: &Inner,
    from: &PeerInfo,
    note: String,
) -> std::result::Result<Reply, RpcError> {
    let Some(trust) = inner.trust.as_ref() else {
        return Err(bad(
            "this node has no trust file (node.toml: trust), so it cannot check cosignatures",
        ));
    };
    let mut seen = inner.witness_seen.lock().await;
    // A leader just elected may not have applied the witnessed checkpoint
    // its predecessor committed: merge against the latest one.
    leader_barrier(inner).await?;
    let current = inner.sm.lock().witnessed().map(str::to_string);
    let current_size = current
        .as_deref()
        .and_then(|n| Checkpoint::from_note(n).ok())
        .map(|c| c.size);
    if let Some(size) = current_size {
        if seen.map(|(s, _)| s) != Some(size) {
            // Formed under another leader: its window starts now.
            *seen = Some((size, Instant::now()));
        }
    }
    let open = seen.is_some_and(|(_, at)| at.elapsed() < JOIN_WINDOW);
    let (decision, sub) =
        crate::witness::merge(trust, &from.name, &note, current.as_deref(), open).map_err(bad)?;
    let merged = match decision {
        crate::witness::Merge::Join(w) => {
            return Ok(Reply::Cosigned {
                note: w,
                accepted: false,
            })
        }
        crate::witness::Merge::Already(w) => {
            return Ok(Reply::Cosigned {
                note: w,
                accepted: true,
            })
        }
        crate::witness::Merge::Accept(w) => w,
    };
    let size = sub.checkpoint.size;
    {
        let g = inner.sm.lock();
        serving(&g)?;
        let l = g.ledger().map_err(internal)?;
        if size > l.size() {
            return Err(bad(format!(
                "the checkpoint covers {size} entries; this leader applied {}",
                l.size()
            )));
        }
        if l.root_at(size).map_err(internal)? != sub.checkpoint.root {
            return Err(RpcError::new(
                ErrorCode::RootDiffers,
                format!("this log's root at size {size} is not the cosigned checkpoint's"),
            ));
        }
    }
    inner
        .raft
        .client_write(Request::Witness {
            note: merged.clone(),
        })
        .await
        .map_err(|e| write_err(inner, e))?;
    // The join window runs from the last change: while auditors keep
    // joining, the witnessed checkpoint stays open for the rest.
    *seen = Some((size, Instant::now()));
    tracing::info!(auditor = %from.name, size, time = sub.time, "cosignature added to the witnessed checkpoint");
    Ok(Reply::Cosigned {
        note: merged,
        accepted: true,
    })
}

fn serving(g: &crate::state_machine::SmInner) -> std::result::Result<(), RpcError> {
    match &g.diverged {
        Some(d) => Err(RpcError::new(
            ErrorCode::Diverged,
            format!("this replica stopped serving: {d}"),
        )),
        None => Ok(()),
    }
}

/// A voter signs for its current Raft leader only, and only after it has
/// recomputed the root at `size` itself and found the same.
async fn sign_checkpoint(
    inner: &Inner,
    from: &PeerInfo,
    size: u64,
    root: [u8; 32],
) -> std::result::Result<Reply, RpcError> {
    let end = Instant::now() + Duration::from_secs(3);
    // A leader asks right after it commits in its term, when this node may
    // not have published that leader yet: wait for it a moment.
    let mut rx = inner.raft.server_metrics();
    let follows = |m: &RaftServerMetrics<NodeId, BasicNode>| {
        leader_of(m).is_some_and(|(_, name)| name == from.name)
    };
    let followed = matches!(
        tokio::time::timeout_at(end.into(), rx.wait_for(follows)).await,
        Ok(Ok(_))
    );
    if !followed {
        let leader = leader_peer(inner).map(|l| l.1);
        inner.counters.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(peer = %from.name, ?leader, size, "refused to sign for a node that is not the leader");
        return Err(RpcError::new(
            ErrorCode::Refused,
            format!(
                "{} is not this node's leader ({}): not signing",
                from.name,
                leader.as_deref().unwrap_or("none known")
            ),
        ));
    }
    loop {
        {
            let g = inner.sm.lock();
            serving(&g)?;
            let l = g.ledger().map_err(internal)?;
            if l.size() >= size {
                let ours = l.root_at(size).map_err(internal)?;
                if ours != root {
                    // One of the two has diverged, and a pair cannot tell
                    // which: refuse, loudly. If this replica is the odd one,
                    // the other voters sign, the checkpoint commits through
                    // Raft, and applying it marks this replica diverged; if
                    // the leader is, no majority signs and nobody else
                    // stops serving.
                    let why = format!(
                        "asked to sign size {size}: own root {} differs from the leader's {}",
                        hex(&ours),
                        hex(&root)
                    );
                    tracing::error!(evidence = %why, "refusing to sign a checkpoint");
                    return Err(RpcError::new(
                        ErrorCode::RootDiffers,
                        format!("{why}; not signing"),
                    ));
                }
                break;
            }
        }
        if Instant::now() >= end {
            return Err(RpcError::new(
                ErrorCode::Internal,
                format!("size {size} not applied here yet"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let body = Checkpoint::new(inner.cfg.log.origin.clone(), size, root)
        .map_err(internal)?
        .to_body();
    let sig = inner.signer.sign(&body);
    Ok(Reply::Signature {
        name: sig.name,
        key_id: sig.key_id,
        signature: sig.signature,
        vkey: inner.signer.vkey(),
    })
}

fn hex(h: &[u8]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// A batch smaller than this (entries or payload bytes) waits while
/// [`SMALL_IN_FLIGHT`] batches are in flight, and grows meanwhile; larger
/// batches are pipelined up to `batch.in_flight`. Many small appenders thus
/// share few Raft entries, and a bulk loader still keeps several in flight.
const PIPELINE_MIN_ENTRIES: usize = 256;
const PIPELINE_MIN_BYTES: usize = 64 << 10;
/// Small batches in flight at once. Two, not one: openraft 0.9 sends each
/// follower one AppendEntries at a time and, after a commit, a heartbeat
/// carrying the new commit index; a second batch already appended rides in
/// place of that heartbeat instead of waiting for its round trip (64
/// appenders: 24.5k -> 26.2k appends/s, medians of 6 paired runs).
const SMALL_IN_FLIGHT: usize = 2;

/// Client jobs gathered into one Raft entry, within the `[batch]` bounds.
struct Gathered {
    jobs: Vec<Job>,
    n: usize,
    bytes: usize,
    max: (usize, usize),
}

impl Gathered {
    fn new(first: Job, max: (usize, usize)) -> Gathered {
        let mut g = Gathered {
            jobs: Vec::new(),
            n: 0,
            bytes: 0,
            max,
        };
        // A single job is within the bounds (checked at the RPC).
        g.push(first);
        g
    }

    fn push(&mut self, j: Job) {
        self.n += j.items.len();
        self.bytes += j.items.payload_bytes();
        self.jobs.push(j);
    }

    /// Adds `j`, or returns it when it would break a bound (it opens the
    /// next batch), so a Raft entry stays small enough for one frame.
    fn add(&mut self, j: Job) -> Option<Job> {
        if self.n + j.items.len() > self.max.0 || self.bytes + j.items.payload_bytes() > self.max.1
        {
            return Some(j);
        }
        self.push(j);
        None
    }

    /// Adds the jobs already queued in `rx` until one does not fit, which
    /// is left in `carry` (nothing is taken while `carry` holds a job).
    fn take_queued(&mut self, rx: &mut mpsc::Receiver<Job>, carry: &mut Option<Job>) {
        while carry.is_none() {
            match rx.try_recv() {
                Ok(j) => *carry = self.add(j),
                Err(_) => break,
            }
        }
    }
}

async fn batcher(inner: Arc<Inner>, mut rx: mpsc::Receiver<Job>) {
    let sem = Arc::new(Semaphore::new(inner.cfg.batch.in_flight));
    let max = (inner.cfg.batch.max_entries, inner.cfg.batch.max_bytes);
    let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    let mut last_ts = 0u64;
    // A job that did not fit the previous batch opens the next one.
    let mut carry: Option<Job> = None;
    loop {
        let first = match carry.take() {
            Some(j) => j,
            None => match rx.recv().await {
                Some(j) => j,
                None => return,
            },
        };
        let mut batch = Gathered::new(first, max);
        let mut closed = false;
        loop {
            batch.take_queued(&mut rx, &mut carry);
            let big = batch.n >= PIPELINE_MIN_ENTRIES || batch.bytes >= PIPELINE_MIN_BYTES;
            if big
                || carry.is_some()
                || closed
                || in_flight.load(Ordering::Acquire) < SMALL_IN_FLIGHT
            {
                break;
            }
            // Small, and a batch is in flight: wait for it, gathering more.
            tokio::select! {
                _ = done.notified() => {}
                j = rx.recv() => match j {
                    Some(j) => carry = batch.add(j),
                    None => closed = true,
                },
            }
        }
        let Ok(permit) = sem.clone().acquire_owned().await else {
            return;
        };
        // Group commit as late as possible: what queued while every slot
        // was busy joins this entry instead of waiting for the next one.
        batch.take_queued(&mut rx, &mut carry);
        in_flight.fetch_add(1, Ordering::AcqRel);
        let flight = (in_flight.clone(), done.clone());
        let Gathered { jobs, .. } = batch;
        let ts = now_ns().max(last_ts);
        last_ts = ts;
        let mut parts = Vec::with_capacity(jobs.len());
        let mut calls = Vec::with_capacity(jobs.len());
        let mut waiters = Vec::with_capacity(jobs.len());
        for j in jobs {
            waiters.push(j.reply);
            calls.push(CallTag {
                count: j.items.len() as u32,
                tag: j.tag,
            });
            parts.push(j.items);
        }
        let items = Items::concat(&parts);
        let inner2 = inner.clone();
        let submitted = Instant::now();
        tokio::spawn(async move {
            let res = inner2
                .raft
                .client_write(Request::AppendCalls {
                    timestamp_ns: ts,
                    items,
                    calls,
                })
                .await;
            drop(permit);
            flight.0.fetch_sub(1, Ordering::AcqRel);
            flight.1.notify_one();
            match res {
                Ok(r) => {
                    let c = &inner2.counters;
                    c.batches.fetch_add(1, Ordering::Relaxed);
                    c.commit_seconds.observe(submitted.elapsed().as_secs_f64());
                    c.batch_entries.observe(r.data.count as f64);
                    inner2.appended.notify_one();
                    for (tx, placed) in waiters.into_iter().zip(call_results(&r.data)) {
                        let _ = tx.send(placed.map(|p| Reply::Appended {
                            first: p.first,
                            count: p.count,
                            timestamp_ns: p.timestamp_ns,
                        }));
                    }
                }
                Err(e) => {
                    let err = write_err(&inner2, e);
                    for tx in waiters {
                        let _ = tx.send(Err(err.clone()));
                    }
                }
            }
        });
    }
}

/// Each call's answer from an applied [`Request::AppendCalls`].
fn call_results(
    r: &crate::types::Response,
) -> impl Iterator<Item = std::result::Result<Placed, RpcError>> + '_ {
    r.calls.iter().map(|p| {
        p.ok_or_else(|| {
            bad(
                "not appended: this session tag is below the session's floor (the call was \
                 acknowledged already), or the batch was refused",
            )
        })
    })
}

/// Chain hash after segment `s`, recomputed from the sealed roots.
fn chain_at(l: &dlog_ledger::Ledger, s: u64) -> Result<[u8; 32]> {
    let bits = l.meta().segment_bits as u32;
    let mut chain = [0u8; 32];
    for i in 0..=s {
        let root = l.node(bits, i)?;
        chain = dlog_crypto::hash::chain_hash(i, &root, &chain);
    }
    Ok(chain)
}

/// Shortest time between two checkpoint rounds.
const MIN_ROUND: Duration = Duration::from_millis(10);

/// On the leader: announce seals, and get a majority to sign new checkpoints
/// (one round at a time; appends during a round are covered by the next).
async fn checkpointer(inner: Arc<Inner>) {
    let every = Duration::from_millis(inner.cfg.batch.checkpoint_ms);
    let mut announced_seals = 0u64;
    let mut last_round = Instant::now();
    loop {
        // Right after appends commit (so receipts come fast), else every `every`.
        tokio::select! {
            _ = inner.appended.notified() => {}
            _ = tokio::time::sleep(every) => {}
        }
        // At most one round per MIN_ROUND: rounds cost a Raft entry and a
        // signature exchange, which single appenders should not pay each time.
        if let Some(wait) = MIN_ROUND.checked_sub(last_round.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        last_round = Instant::now();
        if !is_leader(&inner) {
            continue;
        }
        let job = {
            let g = inner.sm.lock();
            if g.diverged.is_some() {
                continue;
            }
            let Ok(l) = g.ledger() else { continue };
            let mut seals = Vec::new();
            let sealed = l.sealed_segments();
            let bits = l.meta().segment_bits as u32;
            // Start after what already went through Raft (a new leader does
            // not announce every old segment again).
            announced_seals = announced_seals.max(g.applied().seals_recorded);
            for s in announced_seals..sealed {
                if let (Ok(root), Ok(chain)) = (l.node(bits, s), chain_at(l, s)) {
                    seals.push(Request::Seal {
                        segment: s,
                        root,
                        chain,
                    });
                }
            }
            announced_seals = sealed;
            let size = l.size();
            let stored = l.checkpoint().map(|c| c.size).unwrap_or(0);
            let cp = if size > stored || (size == 0 && l.checkpoint().is_none()) {
                l.root_at(size).ok().map(|r| (size, r))
            } else {
                None
            };
            (seals, cp)
        };
        let (seals, cp) = job;
        for s in seals {
            if let Err(e) = inner.raft.client_write(s).await {
                tracing::debug!(%e, "seal record not committed");
            }
        }
        let Some((size, root)) = cp else { continue };
        match collect_signatures(&inner, size, root).await {
            Ok(note) => match inner.raft.client_write(Request::Checkpoint { note }).await {
                Ok(_) => {
                    inner.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        size,
                        "checkpoint committed with a majority of voter signatures"
                    );
                }
                Err(e) => tracing::debug!(%e, "checkpoint not committed"),
            },
            Err(e) => tracing::warn!(size, %e, "no majority signed the checkpoint"),
        }
    }
}

/// Signs the checkpoint of `size` and `root` and gathers the other voters'
/// signatures: enough for a majority of the current voters, and, with a
/// trust file, enough of its keys for offline verifiers (its quorum). A
/// voter's signature counts towards the majority if it verifies under the
/// key that voter presents (its reply came over its own tunnel: a promoted
/// node's key need not be in the trust file) if the key is named after the
/// voter, once per voter; under a name the trust file lists, only the
/// listed key is accepted. Whether the trust file's quorum is met is
/// decided by the same check offline verifiers run.
async fn collect_signatures(inner: &Arc<Inner>, size: u64, root: [u8; 32]) -> Result<String> {
    let body = Checkpoint::new(inner.cfg.log.origin.clone(), size, root)
        .map_err(|e| NodeError::Verify(e.to_string()))?
        .to_body();
    let mut note = SignedNote::new(body).map_err(|e| NodeError::Verify(e.to_string()))?;
    let text = note.text.clone();
    let own = inner.signer.sign(&text);
    // Some(valid) under a name the trust file lists, None otherwise.
    let trusted_key = |sig: &NoteSignature| -> Option<bool> {
        let t = inner.trust.as_ref()?;
        t.voters
            .iter()
            .find(|v| v.name() == sig.name)
            .map(|v| v.verify(&text, sig))
    };
    note.add_signature(own);
    let mut signers = std::collections::HashSet::from([inner.cfg.name.clone()]);
    // Enough for offline verifiers: exactly what they will check.
    let verifies = |note: &SignedNote| {
        inner
            .voter_trust
            .as_ref()
            .is_none_or(|t| t.verify_checkpoint(&note.to_string()).is_ok())
    };
    let mut trusted = verifies(&note);
    let m = inner.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership().clone();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let need = voters.len() / 2 + 1;
    let mut set = tokio::task::JoinSet::new();
    for id in voters.iter().copied().filter(|id| *id != inner.cfg.id) {
        let Some(node) = membership.get_node(&id) else {
            continue;
        };
        let Some(peer) = inner.peers.by_name(&node.addr).map(|p| p.public_key) else {
            continue;
        };
        let (pool, name) = (inner.pool.clone(), node.addr.clone());
        set.spawn(async move {
            let r = pool
                .call_raw(
                    &peer,
                    &Call::SignCheckpoint { size, root },
                    Duration::from_secs(4),
                )
                .await;
            (name, r)
        });
    }
    let mut differ = 0usize;
    while signers.len() < need || !trusted {
        let Some(res) = set.join_next().await else {
            return Err(NodeError::Verify(format!(
                "{} of {need} voter signatures{}",
                signers.len(),
                if trusted {
                    ""
                } else {
                    ", not enough from the trust file's keys"
                }
            )));
        };
        let (voter, name, key_id, signature, vkey) = match res {
            Ok((
                voter,
                Ok(Ok(Reply::Signature {
                    name,
                    key_id,
                    signature,
                    vkey,
                })),
            )) => (voter, name, key_id, signature, vkey),
            Ok((
                voter,
                Ok(Err(RpcError {
                    code: ErrorCode::RootDiffers,
                    message,
                    ..
                })),
            )) => {
                differ += 1;
                tracing::error!(%voter, %message, "a voter computes another root than this leader");
                if differ >= need {
                    // A majority of the voters agree with each other and
                    // not with this replica: it is the odd one.
                    let why = format!(
                        "{differ} of {} voters compute another root at size {size} than this leader's {}",
                        voters.len(),
                        hex(&root)
                    );
                    inner.sm.lock().diverge(why.clone());
                    return Err(NodeError::Verify(why));
                }
                continue;
            }
            _ => continue,
        };
        let sig = NoteSignature {
            name,
            key_id,
            signature,
        };
        // The voter's own signature (its key is named after it), once.
        let presented = sig.name == voter
            && dlog_crypto::note::NoteVerifier::from_vkey(&vkey)
                .is_ok_and(|v| v.verify(&text, &sig));
        if !presented || trusted_key(&sig) == Some(false) || !signers.insert(voter.clone()) {
            tracing::warn!(%voter, signer = %sig.name, size, "ignoring a voter signature that does not verify");
            continue;
        }
        note.add_signature(sig);
        trusted = trusted || verifies(&note);
    }
    Ok(note.to_string())
}

/// A diverged replica leaves Raft: it no longer votes, so it can neither
/// lead (refusing every append and read) nor hold up an election; the
/// others go on without it. It still answers status calls, which name the
/// evidence.
async fn fail_stop(inner: Arc<Inner>) {
    let mut rx = inner.sm.watch_divergence();
    if rx.wait_for(|d| *d).await.is_err() {
        return;
    }
    tracing::error!("REPLICA DIVERGED: leaving Raft (fail-stop); see <data>/DIVERGED");
    inner.stopped.store(true, Ordering::Release);
    if let Err(e) = inner.raft.shutdown().await {
        tracing::error!(%e, "stopping Raft");
    }
}

/// Opens the tunnel to every other node once, at start. The other nodes
/// still hold a session with this node's previous incarnation; WireGuard
/// gives no answer to their packets under it, so on their own they notice
/// the restart only when a session times out (5 s without an answer). A
/// handshake from here makes them drop that session and their streams at
/// once (invariant 19). Before a restarted leader waited for no one: it
/// resumed its term and sent to every node itself; it now starts as a
/// follower (vendor/openraft/DLOG-PATCH.md) and, without this, heard from
/// the new leader up to seconds late, or campaigned first and disrupted it.
async fn announce(inner: Arc<Inner>) {
    let me = inner.pool.endpoint().public_key();
    let mut calls = tokio::task::JoinSet::new();
    for p in inner.peers.peers() {
        if !matches!(p.role, Role::Voter | Role::Learner) || p.public_key == me {
            continue;
        }
        let (pool, key, name) = (inner.pool.clone(), p.public_key, p.name.clone());
        calls.spawn(async move {
            let res = pool.call(&key, &Call::Status, ANNOUNCE_TIMEOUT).await;
            tracing::debug!(peer = %name, ok = res.is_ok(), "announced this node's start");
        });
    }
    while calls.join_next().await.is_some() {}
}

/// How long the start-up announcement waits for a peer's answer.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(5);

async fn watch_leader(inner: Arc<Inner>) {
    // Server metrics change with the vote, state, leader or membership only
    // (not per applied entry, as the full metrics do).
    let mut rx = inner.raft.server_metrics();
    let mut last_leader = None;
    let mut last_members = None;
    while rx.changed().await.is_ok() {
        let m = rx.borrow_and_update().clone();
        if m.current_leader != last_leader {
            let term = m.vote.leader_id().term;
            tracing::info!(term, leader = ?m.current_leader, "leader change");
            last_leader = m.current_leader;
        }
        if *m.membership_config.log_id() != last_members {
            tracing::info!(membership = ?m.membership_config.membership(), "membership change");
            last_members = *m.membership_config.log_id();
        }
    }
}
