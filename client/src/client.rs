//! Client library: opens its own tunnel as a `client` (or `admin`) peer and
//! calls the cluster. Writes go to any node (followers forward to the
//! leader); transient failures (no leader yet, a node down) are retried on
//! the next node until the per-operation deadline. Appends carry a session
//! tag, so a retry after a lost answer is stored once (the node's session
//! table, `dlog_node::session`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dlog_crypto::trust::{TrustPolicy, VerifiedCheckpoint};
use dlog_ledger::EntryKind;
use dlog_wg::keys::PeerKey;
use dlog_wg::Endpoint;

use crate::config::{load_peers, load_wg_key, ClientConfig};
use crate::error::{Error, Result};
use crate::pool::Pool;
use crate::wire::{Call, ErrorCode, NodeId, NodeStatus, Reply, SessionTag, MAX_CHECKPOINT_WAIT_MS};

/// How long a node that failed at the transport level is avoided; each
/// further failure in a row doubles it, up to [`SUSPECT_MAX`].
const SUSPECT_FOR: Duration = Duration::from_secs(3);
/// The longest a node is avoided (a dead node costs one attempt this often).
const SUSPECT_MAX: Duration = Duration::from_secs(24);

/// A node that failed at the transport level: avoided until `until`.
#[derive(Debug, Clone, Copy)]
struct Suspect {
    until: Instant,
    /// Failures in a row.
    strikes: u32,
}

/// How a node failed at the transport level, for [`Error::Unreachable`].
#[derive(Debug, Clone)]
enum Failed {
    /// Nothing came back in time (the usual case for a node that is down).
    Silent,
    /// Something else went wrong; its text.
    Said(String),
}

impl Failed {
    fn of(e: &Error) -> Failed {
        match e {
            Error::Transport(dlog_wg::Error::ConnectTimeout { .. }) | Error::Timeout(_) => {
                Failed::Silent
            }
            e => Failed::Said(e.to_string()),
        }
    }
}

/// What an append stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Index of the first entry.
    pub first: u64,
    /// Number of entries.
    pub count: u64,
    /// Leader-assigned timestamp.
    pub timestamp_ns: u64,
}

/// A checkpoint as served by the cluster.
#[derive(Debug, Clone)]
pub struct ServedCheckpoint {
    /// The signed note (empty when the cluster has signed none yet).
    pub note: String,
    /// The note, verified against the client's trust file: `Some` whenever
    /// a trust file is configured and the note is not empty (a note that
    /// fails to verify is an error, never handed out).
    pub verified: Option<VerifiedCheckpoint>,
    /// Its tree size.
    pub size: u64,
    /// Entries the answering replica had applied.
    pub applied: u64,
    /// How stale it may be, in milliseconds (0 for a linearizable read;
    /// `None`: not known). See [`crate::wire::Reply::Checkpoint`].
    pub behind_ms: Option<u64>,
}

/// A cluster client.
pub struct Client {
    pool: Pool,
    nodes: Vec<(String, PeerKey)>,
    /// Each node's UDP address from the peer table (what errors name).
    addrs: Vec<Option<SocketAddr>>,
    /// Every voter/learner of the peer table (for calls to a named node).
    servers: Vec<(String, PeerKey)>,
    next: AtomicUsize,
    suspect: std::sync::Mutex<Vec<Option<Suspect>>>,
    timeout: Duration,
    attempt: Duration,
    /// See [`ClientConfig::unreachable`].
    unreachable: Duration,
    /// Some node has answered since the client opened (a stream opened or
    /// was refused, or a call was answered).
    reached: AtomicBool,
    trust: Option<TrustPolicy>,
    /// `trust` without its cosignature requirement: what every checkpoint
    /// must meet (auditors cosign only the witnessed one).
    voter_trust: Option<TrustPolicy>,
    session: Session,
}

/// This client's session: every append carries a tag from it, so a retry
/// after a lost answer is applied at most once (see [`SessionTag`]).
struct Session {
    id: u64,
    /// The next seq, and the seqs of appends still in flight.
    seqs: std::sync::Mutex<(u64, std::collections::BTreeSet<u64>)>,
}

impl Session {
    fn new() -> Result<Session> {
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(|e| Error::Process(format!("getrandom: {e}")))?;
        Ok(Session {
            id: u64::from_le_bytes(id),
            seqs: std::sync::Mutex::new((1, Default::default())),
        })
    }

    fn seqs(&self) -> std::sync::MutexGuard<'_, (u64, std::collections::BTreeSet<u64>)> {
        self.seqs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A tag for a new append, in flight until the guard drops. Its floor
    /// is the oldest seq still in flight (this one at most): everything
    /// older was answered or given up, never retried.
    fn start(&self) -> InFlight<'_> {
        let mut g = self.seqs();
        let seq = g.0;
        g.0 += 1;
        g.1.insert(seq);
        let floor = g.1.first().copied().expect("seq was just inserted");
        InFlight {
            session: self,
            tag: SessionTag {
                session: self.id,
                seq,
                floor,
            },
        }
    }
}

/// An append's tag, in flight until dropped: when the append is over
/// (answered, or given up, also when its future is dropped half way), its
/// seq is never retried.
struct InFlight<'a> {
    session: &'a Session,
    tag: SessionTag,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.session.seqs().1.remove(&self.tag.seq);
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("nodes", &self.nodes.len())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Opens a client from a `client.toml` (see [`crate::config`]).
    pub async fn open(config: &Path) -> Result<Client> {
        Client::connect(ClientConfig::load(config)?).await
    }

    /// Opens a client from a parsed config (an auditor builds one from its
    /// own file).
    pub async fn connect(cfg: ClientConfig) -> Result<Client> {
        let peers = load_peers(&cfg.peers, &cfg.file, "peers")?;
        let key = load_wg_key(&cfg.wg_key, &cfg.file, "wg_key")?;
        if peers.get(&key.public_key()).is_none() {
            return Err(Error::config(
                &cfg.file,
                "wg_key",
                "this key is not in the peer table",
            ));
        }
        let mut nodes = Vec::new();
        let mut addrs = Vec::new();
        for n in &cfg.nodes {
            let p = peers
                .by_name(n)
                .ok_or_else(|| Error::config(&cfg.file, "nodes", format!("unknown peer {n:?}")))?;
            nodes.push((n.clone(), p.public_key));
            addrs.push(p.endpoint);
        }
        let servers = peers
            .peers()
            .iter()
            .filter(|p| {
                matches!(
                    p.role,
                    dlog_wg::config::Role::Voter | dlog_wg::config::Role::Learner
                )
            })
            .map(|p| (p.name.clone(), p.public_key))
            .collect();
        let trust = match &cfg.trust {
            None => None,
            Some(p) => Some(crate::config::load_trust(p, &cfg.file, "trust")?),
        };
        let mut wcfg = dlog_wg::config::Config::new(key, peers);
        wcfg.mtu = cfg.mtu;
        wcfg.socket_buffer = 1 << 20;
        wcfg.connect_timeout = Duration::from_secs(3).max(cfg.unreachable);
        let endpoint = Endpoint::bind(wcfg, cfg.listen)
            .await
            .map_err(|e| Error::config(&cfg.file, "listen", e))?;
        Ok(Client {
            pool: Pool::new(endpoint, cfg.rpc_port),
            nodes,
            addrs,
            servers,
            suspect: std::sync::Mutex::new(vec![None; cfg.nodes.len()]),
            next: AtomicUsize::new(0),
            timeout: cfg.timeout,
            attempt: cfg.attempt,
            unreachable: cfg.unreachable,
            reached: AtomicBool::new(false),
            voter_trust: trust.clone().map(|mut t| {
                t.cosignatures = 0;
                t
            }),
            trust,
            session: Session::new()?,
        })
    }

    /// The trust policy from the config, if any.
    pub fn trust(&self) -> Option<&TrustPolicy> {
        self.trust.as_ref()
    }

    /// The client's tunnel endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        self.pool.endpoint()
    }

    /// Node names, in config order.
    pub fn node_names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.0.clone()).collect()
    }

    /// One call, retried on other nodes for transient failures until the deadline.
    /// A cluster none of whose nodes answers fails within the client's
    /// `unreachable` bound ([`Error::Unreachable`], naming every node and
    /// its address), not after the whole deadline.
    pub async fn call(&self, call: Call) -> Result<Reply> {
        let started = Instant::now();
        if !self.reached.load(Ordering::Relaxed) {
            self.reach().await?;
        }
        let deadline = started + self.timeout;
        let mut last = Error::NoLeader("no node answered".into());
        let mut backoff = Duration::from_millis(20);
        // Whether any node answered during this call, and what each that
        // failed at the transport level said.
        let mut answered = false;
        let mut failed: Vec<Option<Failed>> = vec![None; self.nodes.len()];
        loop {
            let i = self.pick();
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(last);
            }
            // A dead node must not eat the whole deadline: bound each attempt.
            let attempt = left.min(self.attempt);
            match self.pool.call_raw(&self.nodes[i].1, &call, attempt).await {
                Ok(Ok(r)) => {
                    self.trust_again(i);
                    return Ok(r);
                }
                Ok(Err(e)) => {
                    // It answered: reachable, whatever it said.
                    answered = true;
                    self.trust_again(i);
                    let retry = matches!(
                        e.code,
                        ErrorCode::NotLeader | ErrorCode::NoLeader | ErrorCode::Diverged
                    ) || (e.code == ErrorCode::Internal && is_append(&call));
                    if let Some(l) = e
                        .leader
                        .as_ref()
                        .and_then(|l| self.nodes.iter().position(|n| &n.0 == l))
                    {
                        self.next.store(l, Ordering::Relaxed);
                    } else if retry {
                        self.next.store(i + 1, Ordering::Relaxed);
                    }
                    last = e.into();
                    if !retry {
                        return Err(last);
                    }
                }
                Err(e) => {
                    // Unreachable or silent: avoid this node for a while.
                    self.suspect(i);
                    self.next.store(i + 1, Ordering::Relaxed);
                    let refused = matches!(
                        e,
                        Error::Transport(dlog_wg::Error::ConnectionRefused { .. })
                    );
                    answered |= refused;
                    failed[i] = Some(Failed::of(&e));
                    // Every node tried and silent for the whole bound: the
                    // cluster is down (or elsewhere), say so now.
                    if !answered
                        && started.elapsed() >= self.unreachable
                        && failed.iter().all(Option::is_some)
                    {
                        self.reached.store(false, Ordering::Relaxed);
                        return Err(self.unreachable_error(started, failed).await);
                    }
                    last = e;
                }
            }
            tokio::time::sleep(backoff.min(deadline.saturating_duration_since(Instant::now())))
                .await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }

    /// Opens a stream to every node at once and returns when the first one
    /// answers (a stream, or a refusal: the node is up); when none does
    /// within the `unreachable` bound, [`Error::Unreachable`].
    async fn reach(&self) -> Result<()> {
        use futures::stream::{FuturesUnordered, StreamExt};
        let started = Instant::now();
        let bound = self.unreachable;
        let mut tries: FuturesUnordered<_> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, (_, key))| async move {
                let r = match tokio::time::timeout(bound, self.pool.open(key)).await {
                    Ok(r) => r,
                    Err(_) => Err(Error::Timeout(format!("no stream within {bound:?}"))),
                };
                (i, r)
            })
            .collect();
        let mut failed: Vec<Option<Failed>> = vec![None; self.nodes.len()];
        while let Some((i, r)) = tries.next().await {
            match r {
                Ok(()) | Err(Error::Transport(dlog_wg::Error::ConnectionRefused { .. })) => {
                    self.reached.store(true, Ordering::Relaxed);
                    if self.suspect_now(self.next.load(Ordering::Relaxed)) {
                        self.next.store(i, Ordering::Relaxed);
                    }
                    return Ok(());
                }
                Err(e) => {
                    self.suspect(i);
                    failed[i] = Some(Failed::of(&e));
                }
            }
        }
        Err(self.unreachable_error(started, failed).await)
    }

    /// [`Error::Unreachable`] from what each node's attempt said, with the
    /// node's UDP address and whether its WireGuard session is up.
    async fn unreachable_error(&self, started: Instant, failed: Vec<Option<Failed>>) -> Error {
        let mut tried = Vec::new();
        for (i, f) in failed.into_iter().enumerate() {
            tried.push(self.describe_failure(i, f).await);
        }
        Error::Unreachable {
            waited: started.elapsed(),
            tried,
        }
    }

    /// "node-1 at udp ADDR: what happened", with whether its WireGuard
    /// session is up.
    async fn describe_failure(&self, i: usize, failed: Option<Failed>) -> String {
        let (name, key) = &self.nodes[i];
        let addr = self.addrs[i].map_or("no address in the peer table".into(), |a| {
            format!("udp {a}")
        });
        let session = self
            .pool
            .endpoint()
            .peer_status(key)
            .await
            .ok()
            .flatten()
            .is_some_and(|s| s.established);
        let what = if session {
            "the tunnel is up but the node service did not answer"
        } else {
            "no WireGuard handshake answer"
        };
        match failed {
            Some(Failed::Said(e)) => format!("{name} at {addr}: {what} ({e})"),
            Some(Failed::Silent) | None => format!("{name} at {addr}: {what}"),
        }
    }

    /// Whether node `i` is avoided right now.
    fn suspect_now(&self, i: usize) -> bool {
        let g = self.suspect.lock().unwrap_or_else(|p| p.into_inner());
        g.get(i % self.nodes.len().max(1))
            .copied()
            .flatten()
            .is_some_and(|s| s.until > Instant::now())
    }

    /// The preferred node, skipping nodes that recently failed at the
    /// transport level (unless every node did).
    fn pick(&self) -> usize {
        let n = self.nodes.len();
        let start = self.next.load(Ordering::Relaxed) % n;
        let now = Instant::now();
        let g = self.suspect.lock().unwrap_or_else(|p| p.into_inner());
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&j| g.get(j).copied().flatten().is_none_or(|s| s.until <= now))
            .unwrap_or(start)
    }

    /// Node `i` failed at the transport level: avoid it, longer after each
    /// failure in a row.
    fn suspect(&self, i: usize) {
        let mut g = self.suspect.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(x) = g.get_mut(i) {
            let strikes = x.map_or(0, |s| s.strikes).saturating_add(1);
            let hold = SUSPECT_FOR
                .saturating_mul(1 << (strikes - 1).min(8))
                .min(SUSPECT_MAX);
            *x = Some(Suspect {
                until: Instant::now() + hold,
                strikes,
            });
        }
    }

    /// Node `i` answered: no longer suspect.
    fn trust_again(&self, i: usize) {
        let mut g = self.suspect.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(x) = g.get_mut(i) {
            *x = None;
        }
    }

    /// One call to one named node (any voter or learner of the peer table), no retry.
    pub async fn call_node(&self, name: &str, call: Call) -> Result<Reply> {
        self.call_node_within(name, call, self.timeout).await
    }

    /// [`Client::call_node`] with its own deadline.
    pub async fn call_node_within(
        &self,
        name: &str,
        call: Call,
        timeout: Duration,
    ) -> Result<Reply> {
        let peer = self
            .servers
            .iter()
            .find(|n| n.0 == name)
            .map(|n| n.1)
            .ok_or_else(|| Error::Protocol(format!("unknown node {name}")))?;
        self.pool.call(&peer, &call, timeout).await
    }

    /// Appends entries; returns once a majority has them durably and they are applied.
    pub async fn append(&self, items: &[(EntryKind, &[u8])]) -> Result<Appended> {
        let items = items.iter().map(|(k, p)| (*k, *p)).collect();
        // Retries inside `call` resend the same tag: applied at most once.
        let in_flight = self.session.start();
        match self
            .call(Call::Append {
                items,
                tag: Some(in_flight.tag),
            })
            .await?
        {
            Reply::Appended {
                first,
                count,
                timestamp_ns,
            } => Ok(Appended {
                first,
                count,
                timestamp_ns,
            }),
            r => Err(unexpected(r)),
        }
    }

    /// Canonical bytes of entry `index`.
    pub async fn get(&self, index: u64) -> Result<Vec<u8>> {
        match self.call(Call::Get { index }).await? {
            Reply::Entry(b) => Ok(b),
            r => Err(unexpected(r)),
        }
    }

    /// Inclusion proof of `index` in the tree of `size`.
    pub async fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<[u8; 32]>> {
        match self.call(Call::Inclusion { index, size }).await? {
            Reply::Proof(p) => Ok(p),
            r => Err(unexpected(r)),
        }
    }

    /// Consistency proof between two sizes.
    pub async fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<[u8; 32]>> {
        self.consistency_proof_at(None, old, new).await
    }

    /// Consistency proof between two sizes from `node` (once, within the
    /// attempt time, 3 s at least), or from any node.
    pub async fn consistency_proof_at(
        &self,
        node: Option<&str>,
        old: u64,
        new: u64,
    ) -> Result<Vec<[u8; 32]>> {
        let call = Call::Consistency { old, new };
        let r = match node {
            Some(n) => self.call_node_within(n, call, self.per_node()).await?,
            None => self.call(call).await?,
        };
        match r {
            Reply::Proof(p) => Ok(p),
            r => Err(unexpected(r)),
        }
    }

    /// How long one call to one named node may take before the caller
    /// moves on (a dead node must not hold it for the whole deadline).
    fn per_node(&self) -> Duration {
        self.attempt.max(Duration::from_secs(3)).min(self.timeout)
    }

    /// The latest majority-signed checkpoint; `linearizable` runs ReadIndex on the leader.
    /// With a trust file configured, the note is verified before it is returned.
    pub async fn checkpoint(&self, linearizable: bool) -> Result<ServedCheckpoint> {
        let r = self.call(Call::Checkpoint { linearizable }).await?;
        self.served(r)
    }

    /// A checkpoint reply, verified against the trust policy when there is
    /// one: its voter quorum, and its auditor cosignatures if `witnessed`.
    fn served(&self, r: Reply) -> Result<ServedCheckpoint> {
        self.served_as(r, false)
    }

    fn served_as(&self, r: Reply, witnessed: bool) -> Result<ServedCheckpoint> {
        match r {
            Reply::Checkpoint {
                note,
                size,
                applied,
                behind_ms,
            } => {
                // The size the note says (signed), not the answer's field.
                let policy = if witnessed {
                    &self.trust
                } else {
                    &self.voter_trust
                };
                let (size, verified) = match (policy, note.is_empty()) {
                    (_, true) => (size, None),
                    (Some(policy), false) => {
                        let v = policy
                            .verify_checkpoint(&note)
                            .map_err(|e| Error::Verify(e.to_string()))?;
                        (v.checkpoint().size, Some(v))
                    }
                    (None, false) => {
                        let cp = dlog_crypto::note::Checkpoint::from_note(&note).map_err(|e| {
                            Error::Verify(format!("a checkpoint that does not parse: {e}"))
                        })?;
                        (cp.size, None)
                    }
                };
                Ok(ServedCheckpoint {
                    note,
                    verified,
                    size,
                    applied,
                    behind_ms,
                })
            }
            r => Err(unexpected(r)),
        }
    }

    /// Waits (until the deadline) for a signed checkpoint with size > `index`
    /// that meets the trust file: when it requires auditor cosignatures,
    /// the witnessed checkpoint ([`Client::witnessed_covering`]).
    /// The node holds the call until it stores one (a long poll), so the
    /// answer comes as soon as the checkpoint is there.
    pub async fn checkpoint_covering(&self, index: u64) -> Result<ServedCheckpoint> {
        if self.trust.as_ref().is_some_and(|t| t.cosignatures > 0) {
            return self.witnessed_covering(index).await;
        }
        self.covering(index, false).await
    }

    /// Waits (until the deadline) for a witnessed checkpoint (one the
    /// auditors cosigned) with size > `index`, verified against the whole
    /// trust file, cosignatures included.
    pub async fn witnessed_covering(&self, index: u64) -> Result<ServedCheckpoint> {
        self.covering(index, true).await
    }

    /// The witnessed checkpoint as the answering replica holds it (an empty
    /// note when no auditor has cosigned one yet).
    pub async fn witnessed(&self) -> Result<ServedCheckpoint> {
        let r = self
            .call(Call::Witnessed {
                covering: 0,
                wait_ms: 0,
            })
            .await?;
        self.served_as(r, true)
    }

    async fn covering(&self, index: u64, witnessed: bool) -> Result<ServedCheckpoint> {
        let deadline = Instant::now() + self.timeout;
        loop {
            // Each attempt must end before the client gives up on the node.
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(self.attempt.saturating_sub(Duration::from_millis(250)))
                .max(Duration::from_millis(50));
            let wait_ms = wait.as_millis().min(u32::MAX as u128) as u32;
            let call = if witnessed {
                Call::Witnessed {
                    covering: index,
                    wait_ms,
                }
            } else {
                Call::WaitCheckpoint {
                    covering: index,
                    wait_ms,
                }
            };
            let reply = self.call(call).await?;
            match self.served_as(reply, witnessed) {
                Ok(cp) if cp.size > index => return Ok(cp),
                Ok(_) => {}
                Err(Error::Verify(_)) if witnessed && Instant::now() < deadline => {
                    // It covers the entry but lacks auditors' cosignatures
                    // (they join one at a time): look again shortly. A
                    // forged one fails the same way until the deadline.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e),
            }
            if Instant::now() >= deadline {
                let what = if witnessed {
                    "no checkpoint the auditors cosigned"
                } else {
                    "no checkpoint"
                };
                return Err(Error::Timeout(format!("{what} covers entry {index} yet")));
            }
        }
    }

    /// One long poll: the latest checkpoint of the answering replica, as
    /// soon as it stores one with size > `covering` or after `wait`.
    pub async fn wait_checkpoint(&self, covering: u64, wait: Duration) -> Result<ServedCheckpoint> {
        let wait_ms = wait.as_millis().min(MAX_CHECKPOINT_WAIT_MS as u128) as u32;
        let r = self
            .call(Call::WaitCheckpoint { covering, wait_ms })
            .await?;
        self.served(r)
    }

    /// Canonical bytes of the entries from `start` on, as many as one
    /// answer holds (at most `max`; at least one). `node`: ask that node
    /// only, once, for at most the attempt time (3 s at least); otherwise
    /// any node, retried. `local`: from the answering node's own copy, never
    /// forwarded to the leader.
    pub async fn entries(
        &self,
        node: Option<&str>,
        start: u64,
        max: u32,
        local: bool,
    ) -> Result<Vec<Vec<u8>>> {
        let call = Call::Entries { start, max, local };
        let r = match node {
            Some(n) => self.call_node_within(n, call, self.per_node()).await?,
            None => self.call(call).await?,
        };
        match r {
            Reply::Entries(e) if !e.is_empty() && e.len() <= max.max(1) as usize => {
                Ok(e.into_iter().map(|b| b.into_vec()).collect())
            }
            r => Err(unexpected(r)),
        }
    }

    /// Submits a cosigned checkpoint (auditor key required). Returns the
    /// witnessed checkpoint and whether the cosignature was added to it;
    /// when not, the auditor is asked to cosign the returned one.
    pub async fn cosign(&self, note: &str) -> Result<(String, bool)> {
        match self.call(Call::Cosign { note: note.into() }).await? {
            Reply::Cosigned { note, accepted } => Ok((note, accepted)),
            r => Err(unexpected(r)),
        }
    }

    /// Status of one node.
    pub async fn status(&self, name: &str) -> Result<NodeStatus> {
        match self.call_node(name, Call::Status).await? {
            Reply::Status(s) => Ok(s),
            r => Err(unexpected(r)),
        }
    }

    /// Status of every node (an unreachable node gives its error).
    ///
    /// All nodes are asked at once, each for at most the attempt time (3 s
    /// at least); a node that does not answer is named with its UDP address.
    pub async fn statuses(&self) -> Vec<(String, Result<NodeStatus>)> {
        let asks = self.nodes.iter().enumerate().map(|(i, (n, _))| async move {
            let started = Instant::now();
            let r = match self
                .call_node_within(n, Call::Status, self.per_node())
                .await
            {
                Ok(Reply::Status(s)) => Ok(s),
                Ok(r) => Err(unexpected(r)),
                Err(e @ Error::Remote(_)) => Err(e),
                Err(e @ Error::Transport(dlog_wg::Error::ConnectionRefused { .. })) => Err(e),
                Err(e) => Err(Error::Unreachable {
                    waited: started.elapsed(),
                    tried: vec![self.describe_failure(i, Some(Failed::of(&e))).await],
                }),
            };
            (n.clone(), r)
        });
        futures::future::join_all(asks).await
    }

    /// Adds a learner (admin key required).
    pub async fn add_learner(&self, id: NodeId, name: &str) -> Result<()> {
        match self
            .call(Call::AddLearner {
                id,
                name: name.into(),
            })
            .await?
        {
            Reply::Done => Ok(()),
            r => Err(unexpected(r)),
        }
    }

    /// Sets the voters (admin key required).
    pub async fn change_membership(&self, voters: &[NodeId]) -> Result<()> {
        match self
            .call(Call::ChangeMembership {
                voters: voters.to_vec(),
            })
            .await?
        {
            Reply::Done => Ok(()),
            r => Err(unexpected(r)),
        }
    }

    /// Closes the tunnel.
    pub async fn close(self) {
        self.pool.endpoint().shutdown().await;
    }
}

fn is_append(c: &Call) -> bool {
    matches!(c, Call::Append { .. })
}

fn unexpected(r: Reply) -> Error {
    Error::Protocol(format!("unexpected reply {r:?}"))
}
