//! The auditor process: rounds of fetch, verify, cosign, over its own
//! WireGuard tunnel as an `auditor` peer.
//!
//! A round:
//!
//! 1. reads the cluster's latest checkpoint (voter-signed) from any node;
//! 2. reads the entries it has not verified yet, in steps of at most
//!    [`STEP`] entries, from one node (the nodes take turns, round by round,
//!    so every replica's bytes get read), and checks every entry and the
//!    root or a consistency proof against the checkpoint
//!    ([`crate::audit`]). A node that fails to serve, serves bad bytes or
//!    bytes whose root is not the checkpoint's is an *incident*: the step is
//!    read again from the next node. When every node's bytes fail against a
//!    validly signed checkpoint, that is an *alarm*: the evidence is saved
//!    and the auditor stops for good;
//! 3. cosigns the checkpoint it verified and submits it; when the leader
//!    asks it to cosign the witnessed checkpoint instead, it checks that one
//!    against its own tree by a consistency proof and cosigns it;
//! 4. re-reads a slice of one node's whole copy ([`SWEEP_PER_ROUND`]
//!    entries; the nodes take turns, sweep by sweep) and checks it against
//!    the verified tree, so bytes that rot *after* they were verified are
//!    caught too: a failed sweep is an incident naming the node;
//! 5. saves its state and waits for a newer checkpoint (at most the poll
//!    interval).

use std::future::Future;
use std::time::{SystemTime, UNIX_EPOCH};

use dlog_client::Client;
use dlog_crypto::note::Cosigner;

use crate::audit::Frontier;
use crate::audit::{Auditor, Pending, Witnessable};
use crate::config::AuditorConfig;
use crate::state::{Alarm, Cosigned, State, Sweep};

/// Most entries verified per step (one consistency proof each).
pub const STEP: u64 = 1 << 20;
/// How long a node that failed to serve is read last.
pub const SUSPECT_FOR: std::time::Duration = std::time::Duration::from_secs(10);
/// Entries of a node's whole copy re-read per round (at most).
pub const SWEEP_PER_ROUND: u64 = 65_536;
/// Bytes of a node's whole copy re-read per round (about; at least one read).
pub const SWEEP_BYTES_PER_ROUND: usize = 16 << 20;
/// The shortest pause between two rounds.
pub const MIN_GAP: std::time::Duration = std::time::Duration::from_millis(200);

/// Why the auditor stopped.
#[derive(Debug, thiserror::Error)]
pub enum AuditorError {
    /// Bad config, key or state file.
    #[error("{0}")]
    Setup(String),
    /// The log failed verification; the evidence is in the state file.
    #[error("AUDIT FAILED: {0}")]
    Alarm(String),
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Tells the witness to stop when the auditor's run ends.
struct StopOnDrop(tokio::sync::watch::Sender<bool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

/// Aborts a task when dropped (the auditor's heartbeat ends with it).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the auditor until `shutdown` resolves (Ok) or the log fails
/// verification ([`AuditorError::Alarm`]).
pub async fn run(
    cfg: AuditorConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AuditorError> {
    // One auditor per state directory (and so per WireGuard key): a second
    // process would share the state file and fight over the tunnel.
    let _lock = std::fs::create_dir_all(&cfg.state_dir)
        .map_err(|e| AuditorError::Setup(format!("{}: {e}", cfg.state_dir.display())))
        .and_then(|_| {
            dlog_ledger::fsutil::lock_dir(&cfg.state_dir).map_err(|e| match e {
                dlog_ledger::LedgerError::Locked(d) => AuditorError::Setup(format!(
                    "another auditor is running with the state directory {} (its lock is held); stop it first",
                    d.display()
                )),
                e => AuditorError::Setup(e.to_string()),
            })
        })?;
    let mut state = match State::load(&cfg.state_dir) {
        Ok(Some(s)) => s,
        Ok(None) => State::new(&cfg.name, &cfg.trust.origin),
        Err(e) => return Err(AuditorError::Setup(e.to_string())),
    };
    if state.origin != cfg.trust.origin {
        return Err(AuditorError::Setup(format!(
            "{}: the state is of origin {:?}, the trust file's is {:?}",
            State::path(&cfg.state_dir).display(),
            state.origin,
            cfg.trust.origin
        )));
    }
    if let Some(a) = &state.alarm {
        return Err(AuditorError::Alarm(format!(
            "{} (recorded in {} before this start; the auditor does not cosign this log again)",
            a.detail,
            State::path(&cfg.state_dir).display()
        )));
    }
    let tree = state.tree().map_err(|e| {
        AuditorError::Setup(format!("{}: {e}", State::path(&cfg.state_dir).display()))
    })?;
    let auditor = Auditor::new(&cfg.trust, cfg.max_payload, tree, state.last_timestamp_ns);
    let client = Client::connect(cfg.client_config())
        .await
        .map_err(|e| AuditorError::Setup(e.to_string()))?;
    tracing::info!(name = %cfg.name, size = auditor.size(), nodes = ?cfg.nodes, "auditor started");
    // The heartbeat `auditor status` and `cluster status` judge liveness by
    // (with the state-directory lock): a task of its own, so a round that
    // waits on a slow cluster does not look like a dead auditor.
    let heartbeat = {
        let dir = cfg.state_dir.clone();
        tokio::spawn(async move {
            let mut warned = false;
            loop {
                match crate::state::beat(&dir) {
                    Ok(()) => warned = false,
                    Err(e) if !warned => {
                        warned = true;
                        tracing::warn!(%e, "cannot write the heartbeat");
                    }
                    Err(_) => {}
                }
                tokio::time::sleep(crate::state::HEARTBEAT_EVERY).await;
            }
        })
    };
    let _heartbeat = AbortOnDrop(heartbeat);
    // The witness for other logs, if configured: its own HTTP listener,
    // stopped with the auditor.
    let (witness_stop, witness_rx) = tokio::sync::watch::channel(false);
    if let Some(w) = &cfg.witness {
        let w = w.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready_tx = Some(ready_tx);
        tokio::spawn(async move {
            let r = crate::witness::http::run(&w, witness_rx, |addr, wit| {
                tracing::info!(%addr, vkey = %wit.vkey(), "witness listening");
                if let Some(t) = ready_tx.take() {
                    let _ = t.send(Ok(()));
                }
            })
            .await;
            if let (Err(e), Some(t)) = (r, ready_tx.take()) {
                let _ = t.send(Err(e));
            }
        });
        match ready_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(AuditorError::Setup(format!("witness: {e}"))),
            Err(_) => return Err(AuditorError::Setup("witness: did not start".into())),
        }
    }
    let _witness_stop = StopOnDrop(witness_stop);
    let mut r = Rounds {
        cosigner: cfg.key.cosigner(),
        cfg,
        client,
        auditor,
        turn: 0,
        suspect: Default::default(),
        sweep: None,
        sweep_turn: 0,
        bridge: tokio::sync::Mutex::new(Vec::new()),
    };
    *r.bridge.get_mut() = r
        .cfg
        .external_witnesses
        .iter()
        .map(|w| crate::witness::bridge::Peer {
            witness: w.clone(),
            known: 0,
            quiet_until: None,
        })
        .collect();
    tokio::pin!(shutdown);
    let outcome = loop {
        let result = tokio::select! {
            biased;
                        _ = &mut shutdown => {
                if let Err(e) = state.save(&r.cfg.state_dir) {
                    tracing::error!(%e, "cannot save the auditor state");
                }
                break Ok(());
            }
            res = r.round(&mut state) => res,
        };
        state.rounds += 1;
        state.round_at = Some(now_secs());
        if let Err(e) = state.save(&r.cfg.state_dir) {
            tracing::error!(%e, "cannot save the auditor state");
        }
        if let Err(e) = result {
            break Err(e);
        }
        // Rounds are at least MIN_GAP apart (each may commit a Raft entry
        // on the cluster), and start as soon as a newer checkpoint is
        // stored, or after the poll interval.
        let size = r.auditor.size();
        tokio::select! {
            biased;
            _ = &mut shutdown => break Ok(()),
            _ = async {
                tokio::time::sleep(MIN_GAP).await;
                let _ = r.client.wait_checkpoint(size, r.cfg.poll).await;
            } => {}
        }
    };
    r.client.close().await;
    outcome
}

struct Rounds {
    cfg: AuditorConfig,
    client: Client,
    auditor: Auditor,
    cosigner: Cosigner,
    /// Which node reads first this round.
    turn: usize,
    /// Nodes that failed to answer, and until when they are read last.
    suspect: std::collections::HashMap<String, std::time::Instant>,
    /// The re-read of one node's copy in progress.
    sweep: Option<Sweeping>,
    /// Which node is swept next.
    sweep_turn: usize,
    /// External witnesses asked to cosign what this auditor cosigned.
    bridge: tokio::sync::Mutex<Vec<crate::witness::bridge::Peer>>,
}

/// A re-read of one node's whole copy, against the verified root at `target`.
struct Sweeping {
    node: String,
    target: u64,
    root: dlog_crypto::hash::Hash,
    pending: Pending,
}

/// A step's entries from one node, or why that node could not give them
/// (`true`: it served an entry that breaks the entry rules).
enum Fetched {
    Ok(Pending),
    Failed(String, bool),
}

impl Rounds {
    /// One round. Errors other than an alarm are incidents: logged, kept in
    /// the state, and the next round tries again.
    async fn round(&mut self, state: &mut State) -> Result<(), AuditorError> {
        let latest = match self.client.checkpoint(false).await {
            Ok(c) => c,
            Err(e) => {
                self.incident(state, None, format!("no checkpoint: {e}"));
                return Ok(());
            }
        };
        if latest.note.is_empty() {
            return Ok(());
        }
        // The size the voters signed, never the answer's own size field.
        let size = match self.auditor.signed_size(&latest.note) {
            Ok(s) => s,
            Err(e) => {
                let why = format!("a checkpoint the trust file refuses: {e}");
                self.incident(state, None, why);
                return Ok(());
            }
        };
        state.log_size_seen = state.log_size_seen.max(size);
        let mut witnessable = None;
        if size < self.auditor.size() {
            // A replica behind the others: still one tree, or evidence.
            match self.older(&latest.note, size).await {
                Ok(w) => witnessable = Some(w),
                Err(Step::Alarm(a)) => return Err(self.alarm(state, a, &latest.note)),
                Err(Step::Incident(node, why)) => self.incident(state, node.as_deref(), why),
            }
        }
        while self.auditor.size() < size {
            match self.step(state, &latest.note, size).await {
                Ok(w) => witnessable = w.or(witnessable),
                Err(Step::Alarm(a)) => return Err(self.alarm(state, a, &latest.note)),
                Err(Step::Incident(node, why)) => {
                    self.incident(state, node.as_deref(), why);
                    break;
                }
            }
        }
        if self.auditor.size() == size && witnessable.is_none() {
            witnessable = self.auditor.check_older(&latest.note, &[]).ok();
        }
        self.turn = self.turn.wrapping_add(1);
        let target = match witnessable {
            Some(w) if state.cosigned.as_ref().is_none_or(|c| c.size < w.size()) => Some(w),
            _ => None,
        };
        // Nothing is cosigned before the tree it was checked against is on
        // disk: a restarted auditor must never verify (and cosign) a fork of
        // what it cosigned before.
        if let Err(e) = state.save(&self.cfg.state_dir) {
            self.incident(state, None, format!("not cosigning: {e}"));
            return Ok(());
        }
        self.cosign(state, target).await?;
        self.sweep_step(state).await;
        Ok(())
    }

    /// Re-reads the next slice of one node's copy; at the end, compares its
    /// root with the verified root at that size.
    async fn sweep_step(&mut self, state: &mut State) {
        if self.auditor.size() == 0 {
            return;
        }
        let now = std::time::Instant::now();
        if let Some(sw) = &self.sweep {
            if self.suspect.get(&sw.node).is_some_and(|t| *t > now) {
                // Failed lately: its re-read waits for its next turn.
                self.sweep = None;
                self.sweep_turn = self.sweep_turn.wrapping_add(1);
                return;
            }
        }
        if self.sweep.is_none() {
            // The next node in turn that did not fail lately.
            let n = self.cfg.nodes.len();
            let Some(k) = (0..n).find(|k| {
                let node = &self.cfg.nodes[(self.sweep_turn + k) % n];
                self.suspect.get(node).is_none_or(|t| *t <= now)
            }) else {
                return;
            };
            self.sweep_turn = self.sweep_turn.wrapping_add(k);
        }
        let sw = self.sweep.get_or_insert_with(|| {
            let node = self.cfg.nodes[self.sweep_turn % self.cfg.nodes.len()].clone();
            let fresh = Auditor::new(&self.cfg.trust, self.cfg.max_payload, Frontier::new(), 0);
            Sweeping {
                node,
                target: self.auditor.size(),
                root: self.auditor.tree().root(),
                pending: fresh.begin(),
            }
        });
        let end = sw.target.min(sw.pending.size() + SWEEP_PER_ROUND);
        let mut failed = None;
        let mut bytes = 0usize;
        while failed.is_none() && sw.pending.size() < end && bytes < SWEEP_BYTES_PER_ROUND {
            let want = (end - sw.pending.size()).min(self.cfg.batch.into()) as u32;
            match self
                .client
                .entries(Some(&sw.node), sw.pending.size(), want, true)
                .await
            {
                Ok(entries) => {
                    for e in &entries {
                        bytes += e.len();
                        if let Err(e) = sw.pending.push(e) {
                            failed = Some(format!("re-reading its copy: {e}"));
                            break;
                        }
                    }
                }
                Err(e) => {
                    failed = Some(format!(
                        "re-reading its copy from entry {}: {e}",
                        sw.pending.size()
                    ))
                }
            }
        }
        if failed.is_none() && sw.pending.size() < sw.target {
            return;
        }
        let Some(sw) = self.sweep.take() else {
            return;
        };
        self.sweep_turn = self.sweep_turn.wrapping_add(1);
        if failed.is_none() && sw.pending.root() != sw.root {
            failed = Some(format!(
                "its copy of entries 0..{} gives another root than the verified log",
                sw.target
            ));
        }
        let ok = failed.is_none();
        if !ok {
            self.suspect.insert(sw.node.clone(), now + SUSPECT_FOR);
        }
        match failed {
            Some(why) => self.incident(state, Some(&sw.node), why),
            None => {
                tracing::info!(node = %sw.node, size = sw.target, "re-verified the node's whole copy")
            }
        }
        state.sweeps.insert(
            sw.node,
            Sweep {
                size: sw.target,
                time: now_secs(),
                ok,
            },
        );
    }

    /// Verifies the next step of entries against the checkpoint of `size`.
    async fn step(
        &mut self,
        state: &mut State,
        note: &str,
        size: u64,
    ) -> Result<Option<Witnessable>, Step> {
        let from = self.auditor.size();
        let to = size.min(from + STEP);
        let n = self.cfg.nodes.len();
        let mut evidence = Vec::new();
        let mut bad_entries = Vec::new();
        for node in self.order() {
            // Entries and proof from the same node: one bad replica (a
            // rotted entry or proof node) cannot pass for the log's fault.
            let fetched = match self.fetch(&node, to).await {
                Fetched::Ok(p) if to < size => self
                    .client
                    .consistency_proof_at(Some(&node), to, size)
                    .await
                    .map(|proof| (p, proof))
                    .map_err(|e| format!("consistency proof {to} → {size}: {e}")),
                Fetched::Ok(p) => Ok((p, Vec::new())),
                Fetched::Failed(why, rule) => {
                    if rule {
                        bad_entries.push(format!("{node}: {why}"));
                    }
                    Err(why)
                }
            };
            let (pending, proof) = match fetched {
                Ok(x) => x,
                Err(why) => {
                    self.suspect
                        .insert(node.clone(), std::time::Instant::now() + SUSPECT_FOR);
                    self.incident(state, Some(&node), why);
                    continue;
                }
            };
            match self.auditor.commit(pending, note, &proof) {
                Ok(w) => {
                    state.set_tree(self.auditor.tree(), self.auditor.last_timestamp_ns());
                    state.verified_at = Some(now_secs());
                    tracing::info!(size = to, %node, "verified");
                    return Ok(w);
                }
                Err(e) if e.is_evidence() => {
                    // This node's copy, or the log: another node decides.
                    self.incident(state, Some(&node), format!("served entries {from}..{to} that do not match the signed checkpoint: {e}"));
                    evidence.push(e.to_string());
                }
                // Not about this node's copy (a checkpoint the trust file
                // refuses, or one behind the entries).
                Err(e) => return Err(Step::Incident(None, e.to_string())),
            }
        }
        if evidence.len() == n {
            // Every replica serves the same thing, and it is not what the
            // voters signed.
            return Err(Step::Alarm(evidence.swap_remove(0)));
        }
        if bad_entries.len() == n {
            // Every replica holds an entry that breaks the log's rules,
            // under a checkpoint the voters signed.
            return Err(Step::Alarm(format!(
                "every replica serves an entry that breaks the entry rules: {}",
                bad_entries.join("; ")
            )));
        }
        Err(Step::Incident(
            None,
            format!("no node served entries {from}..{to} that verify"),
        ))
    }

    /// The nodes in this round's turn, those that failed lately last.
    fn order(&self) -> Vec<String> {
        let n = self.cfg.nodes.len();
        let now = std::time::Instant::now();
        let mut v: Vec<_> = (0..n)
            .map(|k| self.cfg.nodes[(self.turn + k) % n].clone())
            .collect();
        // Stable: the turn order holds within each group.
        v.sort_by_key(|node| self.suspect.get(node).is_some_and(|t| *t > now));
        v
    }

    /// Reads entries up to `to` from `node` and checks each one.
    async fn fetch(&self, node: &str, to: u64) -> Fetched {
        let mut p = self.auditor.begin();
        while p.size() < to {
            let want = (to - p.size()).min(self.cfg.batch.into()) as u32;
            let entries = match self.client.entries(Some(node), p.size(), want, true).await {
                Ok(e) => e,
                Err(e) => {
                    return Fetched::Failed(
                        format!("reading entries from {}: {e}", p.size()),
                        false,
                    )
                }
            };
            for e in &entries {
                if let Err(e) = p.push(e) {
                    // Over the limit given in auditor.toml: maybe this
                    // auditor's setting, never evidence against the log.
                    let rule = !matches!(e, crate::audit::AuditError::TooLarge { .. });
                    return Fetched::Failed(format!("served a bad entry: {e}"), rule);
                }
            }
        }
        Fetched::Ok(p)
    }

    /// Checks a checkpoint no larger than the verified tree, with a
    /// consistency proof from each node in turn until one proves it; it is
    /// evidence against the log only if every node's proof fails.
    async fn older(&self, note: &str, size: u64) -> Result<Witnessable, Step> {
        let classify = |e: crate::audit::AuditError| {
            if e.is_evidence() {
                Step::Alarm(e.to_string())
            } else {
                Step::Incident(None, e.to_string())
            }
        };
        let have = self.auditor.size();
        if size == have {
            return self.auditor.check_older(note, &[]).map_err(classify);
        }
        let nodes = self.order();
        let mut evidence = Vec::new();
        let mut last = String::new();
        for node in &nodes {
            let proof = match self
                .client
                .consistency_proof_at(Some(node), size, have)
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    last = format!("{node}: consistency proof {size} → {have}: {e}");
                    continue;
                }
            };
            match self.auditor.check_older(note, &proof) {
                Ok(w) => return Ok(w),
                Err(e) if e.is_evidence() => evidence.push(format!("{node}: {e}")),
                Err(e) => return Err(classify(e)),
            }
        }
        if evidence.len() == nodes.len() {
            return Err(Step::Alarm(evidence.join("; ")));
        }
        let why = evidence.first().unwrap_or(&last);
        Err(Step::Incident(
            None,
            format!("no node proved the checkpoint of size {size} consistent: {why}"),
        ))
    }

    /// Submits a cosignature of `target` (if any); joins the witnessed
    /// checkpoint when the leader asks, or when it lacks this auditor's.
    async fn cosign(
        &self,
        state: &mut State,
        target: Option<Witnessable>,
    ) -> Result<(), AuditorError> {
        let mut next = target;
        if next.is_none() {
            // Nothing new of our own: help complete the witnessed checkpoint.
            match self.client.witnessed().await {
                Ok(w) if !w.note.is_empty() && !self.cosigned_by_me(&w.note) => {
                    next = self.joinable(state, &w.note).await?;
                }
                Ok(_) => {}
                Err(e) => self.incident(state, None, format!("no witnessed checkpoint: {e}")),
            }
        }
        // At most: ours, then the one the leader points to.
        for _ in 0..2 {
            let Some(w) = next.take() else {
                return Ok(());
            };
            let time = now_secs();
            let note = w.cosign(&self.cosigner, time);
            match self.client.cosign(&note).await {
                Ok((stored, true)) => {
                    tracing::info!(size = w.size(), "cosigned");
                    state.cosigned = Some(Cosigned {
                        size: w.size(),
                        time,
                        note: stored,
                    });
                    self.forward(&w).await;
                    return Ok(());
                }
                Ok((current, false)) => {
                    tracing::debug!("asked to cosign the witnessed checkpoint");
                    if !self.cosigned_by_me(&current) {
                        next = self.joinable(state, &current).await?;
                    }
                }
                Err(e) => {
                    self.incident(
                        state,
                        None,
                        format!("cosignature of size {} not taken: {e}", w.size()),
                    );
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Asks each external witness to cosign `w` (a checkpoint this auditor
    /// just cosigned), from the size it last cosigned; hands what it gets
    /// to the cluster. Failures are logged and back off; none is fatal.
    async fn forward(&self, w: &Witnessable) {
        use crate::witness::bridge::{post, read_answer, request_body, Outcome, BACKOFF};
        let mut peers = self.bridge.lock().await;
        let (size, note) = (w.size(), w.note());
        for p in peers.iter_mut() {
            if p.quiet_until.is_some_and(|t| std::time::Instant::now() < t) {
                continue;
            }
            let name = p.witness.verifier.name().to_string();
            // At most: a first try, and a retry from the size a 409 names.
            for _ in 0..2 {
                if p.known > size {
                    break;
                }
                let proof = if p.known > 0 && p.known < size {
                    match self.client.consistency_proof(p.known, size).await {
                        Ok(proof) => proof,
                        Err(e) => {
                            tracing::warn!(witness = %name, "no consistency proof {} -> {size}: {e}", p.known);
                            break;
                        }
                    }
                } else {
                    Vec::new()
                };
                let body = request_body(p.known, &proof, &note);
                let url = p.witness.url.clone();
                let answer = tokio::task::spawn_blocking(move || post(&url, body)).await;
                let outcome = match answer {
                    Ok(Ok((status, text))) => {
                        read_answer(&p.witness.verifier, &note, status, &text)
                    }
                    Ok(Err(e)) => Outcome::Failed(e),
                    Err(e) => Outcome::Failed(e.to_string()),
                };
                match outcome {
                    Outcome::Cosigned(cosigned) => {
                        p.known = size;
                        match self.client.cosign(&cosigned).await {
                            Ok((_, true)) => {
                                tracing::info!(witness = %name, size, "external witness cosigned")
                            }
                            Ok((_, false)) => {
                                tracing::debug!(witness = %name, size, "the witnessed checkpoint moved on")
                            }
                            Err(e) => {
                                tracing::warn!(witness = %name, size, "its cosignature was not taken: {e}")
                            }
                        }
                        break;
                    }
                    Outcome::Conflict(at) => p.known = at,
                    Outcome::Failed(why) => {
                        tracing::warn!(witness = %name, size, "external witness: {why}");
                        p.quiet_until = Some(std::time::Instant::now() + BACKOFF);
                        break;
                    }
                }
            }
        }
    }

    /// The witnessed checkpoint `note` of `size`, checked against the
    /// verified tree (`None` if it is ahead of it: a later round).
    async fn joinable(
        &self,
        state: &mut State,
        note: &str,
    ) -> Result<Option<Witnessable>, AuditorError> {
        let size = match self.auditor.signed_size(note) {
            Ok(s) => s,
            Err(e) => {
                let why = format!("a witnessed checkpoint the trust file refuses: {e}");
                self.incident(state, None, why);
                return Ok(None);
            }
        };
        if size > self.auditor.size() {
            return Ok(None);
        }
        match self.older(note, size).await {
            Ok(w) => Ok(Some(w)),
            Err(Step::Alarm(a)) => Err(self.alarm(state, a, note)),
            Err(Step::Incident(node, why)) => {
                self.incident(state, node.as_deref(), why);
                Ok(None)
            }
        }
    }

    /// Whether `note` carries a valid cosignature by this auditor's name
    /// (under any of its trust-file keys).
    fn cosigned_by_me(&self, note: &str) -> bool {
        self.auditor.cosigned_by(note, self.cosigner.name())
    }

    fn incident(&self, state: &mut State, node: Option<&str>, detail: String) {
        tracing::warn!(node = node.unwrap_or("-"), "{detail}");
        state.incident(now_secs(), node, detail);
    }

    fn alarm(&self, state: &mut State, detail: String, checkpoint: &str) -> AuditorError {
        tracing::error!(evidence = %detail, checkpoint, "AUDIT FAILED: the log's signed checkpoint does not match its entries; this auditor stops cosigning");
        state.alarm = Some(Alarm {
            time: now_secs(),
            detail: detail.clone(),
            checkpoint: checkpoint.to_string(),
        });
        AuditorError::Alarm(detail)
    }
}

/// How a step failed.
enum Step {
    /// Evidence against the log.
    Alarm(String),
    /// Not evidence: a node or the network (node name if one).
    Incident(Option<String>, String),
}
