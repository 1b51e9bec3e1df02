//! Applying Raft entries to the ledger: idempotent across crashes,
//! byte-identical on every replica.

use super::applied::{read_applied, write_applied, AppliedFile};
use super::archive::{allowed_in_snapshot, archive};
use super::{
    witnessed_size, Applied, SmInner, COMPLETE_MARK, DIVERGED_FILE, INCOMING_DIR, LEDGER_DIR,
    OLD_DIR,
};
use crate::error::{NodeError, Result};
use crate::session::{Placed, Verdict};
use crate::snapshot::Parts;
use crate::types::{Entry, Items, NodeId, Request, Response};
use dlog_crypto::note::{Checkpoint, SignedNote};
use dlog_ledger::{EntryKind, Ledger, OpenMode};
use openraft::{BasicNode, EntryPayload, SnapshotMeta, StoredMembership};
use std::fs::{self};

/// Client payload bytes in `entries`.
pub(super) fn payload_bytes(entries: &[Entry]) -> usize {
    entries
        .iter()
        .map(|e| match &e.payload {
            EntryPayload::Normal(r) => r.items().map_or(0, Items::payload_bytes),
            _ => 0,
        })
        .sum()
}

/// Appends `batch` as the entries `[expected, expected + len)`, skipping
/// those the ledger already holds (a replay after a crash: the applied
/// state is written only after a ledger sync, so it may lag the ledger).
/// Returns the ledger's last timestamp after it, or `None` when the ledger
/// refused the batch as oversized: a deterministic refusal on every
/// replica, so the batch is skipped.
pub(super) fn append_replayable(
    ledger: &mut dlog_ledger::Ledger,
    expected: u64,
    ts: u64,
    batch: &[(EntryKind, &[u8])],
) -> Result<Option<u64>> {
    let have = ledger.size();
    if have < expected {
        return Err(NodeError::RaftStore {
            path: ledger.dir().to_path_buf(),
            detail: format!("ledger lost entries: holds {have}, {expected} applied"),
        });
    }
    let done = ((have - expected) as usize).min(batch.len());
    if done < batch.len() {
        if let Err(err) = ledger.append_unsynced(ts, &batch[done..]) {
            if matches!(err, dlog_ledger::LedgerError::PayloadTooLarge { .. }) {
                tracing::warn!(%err, "refusing an oversized batch");
                return Ok(None);
            }
            return Err(err.into());
        }
    }
    Ok(Some(ledger.last_timestamp()))
}

impl SmInner {
    pub(super) fn apply_one(&mut self, e: &Entry) -> Result<Response> {
        let log_id = e.log_id;
        let mut resp = Response::default();
        match &e.payload {
            EntryPayload::Blank => {}
            EntryPayload::Membership(m) => {
                self.applied.membership = StoredMembership::new(Some(log_id), m.clone());
            }
            EntryPayload::Normal(req) => resp = self.apply_request(req)?,
        }
        self.applied.last_applied = Some(log_id);
        resp.size = self.applied.ledger_size;
        Ok(resp)
    }

    pub(super) fn apply_request(&mut self, req: &Request) -> Result<Response> {
        let expected = self.applied.ledger_size;
        let ledger = self
            .ledger
            .as_mut()
            .ok_or_else(|| NodeError::Raft("no ledger".into()))?;
        match req {
            Request::Append {
                timestamp_ns,
                items,
            } => {
                let batch: Vec<(EntryKind, &[u8])> = items.iter().collect();
                Ok(
                    match append_replayable(ledger, expected, *timestamp_ns, &batch)? {
                        Some(ts) => {
                            self.applied.ledger_size = expected + batch.len() as u64;
                            Response {
                                first: expected,
                                count: batch.len() as u64,
                                timestamp_ns: ts,
                                ..Response::default()
                            }
                        }
                        None => Response::default(),
                    },
                )
            }
            Request::AppendCalls {
                timestamp_ns,
                items,
                calls,
            } => {
                let ts = *timestamp_ns;
                let max = ledger.meta().max_payload as usize;
                if let Some((_, p)) = items.iter().find(|(_, p)| p.len() > max) {
                    // Deterministic on every replica, and decided before the
                    // session table changes: the whole batch is skipped.
                    tracing::warn!(
                        len = p.len(),
                        max,
                        "refusing a batch with an oversized payload"
                    );
                    return Ok(Response {
                        calls: vec![None; calls.len()],
                        ..Response::default()
                    });
                }
                // The ledger never lets timestamps go back; the entries get this.
                let stamp = ts.max(ledger.last_timestamp());
                let sessions = &mut self.applied.sessions;
                sessions.expire(ts);
                // A copy of a tagged call already applied (in an earlier
                // entry or earlier in this one) appends nothing and answers
                // with where the first copy went.
                let mut entries = items.iter();
                let mut batch = Vec::with_capacity(items.len());
                let mut placed = Vec::with_capacity(calls.len());
                for c in calls {
                    let mut part = entries.by_ref().take(c.count as usize);
                    let verdict = match &c.tag {
                        Some(t) => sessions.check(t, ts),
                        None => Verdict::New,
                    };
                    if verdict != Verdict::New {
                        // Step over the call's entries (`take` is lazy).
                        part.by_ref().for_each(drop);
                    }
                    placed.push(match verdict {
                        Verdict::New => {
                            let at = batch.len() as u64;
                            batch.extend(part);
                            let p = Placed {
                                first: expected + at,
                                count: batch.len() as u64 - at,
                                timestamp_ns: stamp,
                            };
                            if let Some(t) = &c.tag {
                                sessions.record(t, p);
                            }
                            Some(p)
                        }
                        Verdict::Duplicate(p) => {
                            self.duplicates += 1;
                            Some(p)
                        }
                        Verdict::Stale => {
                            self.duplicates += 1;
                            None
                        }
                    });
                }
                append_replayable(ledger, expected, ts, &batch)?;
                self.applied.ledger_size = expected + batch.len() as u64;
                Ok(Response {
                    first: expected,
                    count: batch.len() as u64,
                    timestamp_ns: stamp,
                    size: 0,
                    calls: placed,
                })
            }
            Request::Checkpoint { note } => {
                self.apply_checkpoint(note);
                Ok(Response::default())
            }
            Request::Witness { note } => {
                self.apply_witness(note);
                Ok(Response::default())
            }
            Request::Seal {
                segment,
                root,
                chain,
            } => {
                self.applied.seals_recorded =
                    self.applied.seals_recorded.max(segment.saturating_add(1));
                let ledger = self.ledger()?;
                if ledger.sealed_segments() > *segment {
                    let bits = ledger.meta().segment_bits as u32;
                    let ours = ledger.node(bits, *segment)?;
                    let chain_ok = ledger.sealed_segments() != segment.saturating_add(1)
                        || ledger.chain_head() == *chain;
                    if ours != *root || !chain_ok {
                        self.diverge(format!(
                            "segment {segment}: own root/chain differ from the leader's seal record"
                        ));
                    }
                }
                Ok(Response::default())
            }
        }
    }

    pub(super) fn apply_checkpoint(&mut self, note: &str) {
        let parsed = SignedNote::parse(note)
            .ok()
            .and_then(|n| Checkpoint::parse_body(&n.text).ok());
        let Some(cp) = parsed else {
            tracing::warn!("ignoring a malformed checkpoint record");
            return;
        };
        let verdict = match self.ledger.as_ref() {
            None => return,
            Some(ledger) if cp.size > ledger.size() => Err(format!(
                "checkpoint covers {} entries but this replica applied only {}",
                cp.size,
                ledger.size()
            )),
            Some(ledger) => match ledger.root_at(cp.size) {
                Ok(r) if r == cp.root => Ok(()),
                Ok(_) => Err(format!(
                    "checkpoint root at size {} differs from this replica's own root",
                    cp.size
                )),
                Err(e) => {
                    // Not evidence of divergence: an I/O failure. Not stored;
                    // the next checkpoint tries again.
                    tracing::error!(size = cp.size, %e, "cannot compute the root to check a checkpoint; not storing it");
                    return;
                }
            },
        };
        if let Err(why) = verdict {
            self.diverge(why);
            return;
        }
        let Some(ledger) = self.ledger.as_mut() else {
            return;
        };
        if ledger.checkpoint().is_some_and(|c| c.size >= cp.size) {
            return;
        }
        // Written with the next ledger sync: the Raft log holds the note.
        if let Err(e) = ledger.store_checkpoint_deferred(cp.size, cp.root, note) {
            tracing::error!(%e, "cannot store checkpoint");
        } else {
            self.checkpoint_size.send_replace(cp.size);
            self.checkpoint_at = Some(std::time::Instant::now());
            tracing::info!(size = cp.size, "checkpoint stored");
        }
    }

    /// Keeps a witnessed checkpoint the leader checked and merged, once this
    /// replica found its own root at that size to be the same, and only if
    /// it is not older than the one kept.
    pub(super) fn apply_witness(&mut self, note: &str) {
        let Ok(Checkpoint { size, root, .. }) = Checkpoint::from_note(note) else {
            tracing::warn!("ignoring a malformed witnessed checkpoint record");
            return;
        };
        if size < witnessed_size(&self.applied) {
            return;
        }
        let Some(ledger) = self.ledger.as_ref() else {
            return;
        };
        match ledger.root_at(size) {
            Ok(r) if r == root => {}
            Ok(_) => {
                self.diverge(format!(
                    "witnessed checkpoint root at size {size} differs from this replica's own root"
                ));
                return;
            }
            Err(e) => {
                // Not evidence of divergence (an I/O failure, or entries
                // not applied here): the next witnessed checkpoint replaces it.
                tracing::error!(size, %e, "cannot check a witnessed checkpoint; not keeping it");
                return;
            }
        }
        self.applied.witnessed = Some(note.to_string());
        self.witnessed_size.send_replace(size);
        tracing::info!(size, "witnessed checkpoint stored");
    }

    /// The witnessed checkpoint note, if auditors cosigned one.
    pub fn witnessed(&self) -> Option<&str> {
        self.applied.witnessed.as_deref()
    }

    /// Seconds since this replica stored its latest checkpoint (`None`: not
    /// since it started).
    pub fn checkpoint_age(&self) -> Option<f64> {
        self.checkpoint_at.map(|t| t.elapsed().as_secs_f64())
    }

    /// Client sessions and stored results in the replicated session table.
    pub fn sessions(&self) -> (usize, usize) {
        (self.applied.sessions.len(), self.applied.sessions.results())
    }

    /// Marks the replica diverged: it stops serving and signing, and
    /// records the evidence in `<data>/DIVERGED`, so that it stays stopped
    /// across restarts until an operator repairs the replica and removes
    /// the file.
    pub fn diverge(&mut self, why: String) {
        tracing::error!(evidence = %why, "REPLICA DIVERGED: this node stops serving and signing");
        if self.diverged.is_none() {
            let marker = self.data_dir.join(DIVERGED_FILE);
            if let Err(e) = dlog_ledger::store::write_atomic(&marker, format!("{why}\n").as_bytes())
            {
                tracing::error!(%e, file = %marker.display(), "cannot record the divergence");
            }
            self.diverged = Some(why);
            self.diverged_tx.send_replace(true);
        }
    }

    /// Syncs the ledger, then records the applied state it now holds
    /// durably (the file itself is fsynced when `durable`).
    pub(super) fn sync(&mut self, durable: bool) -> Result<()> {
        self.ledger
            .as_mut()
            .ok_or_else(|| NodeError::Raft("no ledger".into()))?
            .sync()?;
        self.save_applied(durable)?;
        self.last_sync = std::time::Instant::now();
        Ok(())
    }

    pub(super) fn save_applied(&mut self, durable: bool) -> Result<()> {
        if self.applied_file.is_none() {
            let dir = self.ledger()?.dir().to_path_buf();
            self.applied_file = Some(AppliedFile::open(&dir)?);
        }
        self.applied_file
            .as_mut()
            .expect("just opened")
            .write(&self.applied, durable)
    }

    pub(super) fn build_snapshot(&mut self) -> Result<(SnapshotMeta<NodeId, BasicNode>, Parts)> {
        // The log is purged behind snapshots: the ledger and the applied
        // state must be durable at least this far first.
        self.sync(true)?;
        let parts = archive(self.ledger()?.dir(), &self.applied)?;
        self.snapshot_seq += 1;
        let meta = SnapshotMeta {
            last_log_id: self.applied.last_applied,
            last_membership: self.applied.membership.clone(),
            snapshot_id: format!(
                "{}-{}",
                self.applied.last_applied.map(|l| l.index).unwrap_or(0),
                self.snapshot_seq
            ),
        };
        tracing::info!(
            id = %meta.snapshot_id,
            bytes = parts.len(),
            size = self.applied.ledger_size,
            "built snapshot (files by reference)"
        );
        self.snapshot = Some((meta.clone(), parts.clone()));
        Ok((meta, parts))
    }

    pub(super) fn install(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        data: &mut dyn std::io::Read,
    ) -> Result<()> {
        let incoming = self.data_dir.join(INCOMING_DIR);
        if incoming.exists() {
            fs::remove_dir_all(&incoming).map_err(NodeError::io("remove", &incoming))?;
        }
        let segdir = incoming.join(dlog_ledger::store::SEGMENT_DIR);
        fs::create_dir_all(&segdir).map_err(NodeError::io("create directory", &segdir))?;
        let applied =
            crate::snapshot::extract(data, &incoming, allowed_in_snapshot).map_err(|e| match e
                .kind()
            {
                std::io::ErrorKind::InvalidData => NodeError::Protocol(e.to_string()),
                _ => NodeError::io("unpack snapshot into", &incoming)(e),
            })?;
        let mut applied: Applied = serde_json::from_slice(&applied)
            .map_err(|e| NodeError::Protocol(format!("snapshot applied state: {e}")))?;
        applied.last_applied = meta.last_log_id;
        applied.membership = meta.last_membership.clone();
        write_applied(&incoming, &applied)?;
        // Check it opens, and that it is the same log, before swapping.
        {
            let l = Ledger::open(&incoming, OpenMode::ReadWrite)?;
            if l.meta().log_id != self.ledger()?.meta().log_id {
                return Err(NodeError::Protocol("snapshot of another log".into()));
            }
            if l.size() < applied.ledger_size {
                return Err(NodeError::Protocol("snapshot ledger is short".into()));
            }
        }
        dlog_ledger::store::write_atomic(&incoming.join(COMPLETE_MARK), b"ok")?;
        let dir = self.data_dir.join(LEDGER_DIR);
        let old = self.data_dir.join(OLD_DIR);
        self.ledger = None;
        self.applied_file = None;
        let swapped = (|| -> Result<Ledger> {
            fs::rename(&dir, &old).map_err(NodeError::io("rename", &dir))?;
            if let Err(e) = fs::rename(&incoming, &dir) {
                // Put the old ledger back before reporting.
                let _ = fs::rename(&old, &dir);
                return Err(NodeError::io("rename", &incoming)(e));
            }
            fs::File::open(&self.data_dir)
                .and_then(|d| d.sync_all())
                .map_err(NodeError::io("fsync directory", &self.data_dir))?;
            let _ = fs::remove_file(dir.join(COMPLETE_MARK));
            let _ = fs::remove_dir_all(&old);
            Ok(Ledger::open(&dir, OpenMode::ReadWrite)?)
        })();
        let ledger = match swapped {
            Ok(l) => l,
            Err(e) => {
                // Keep serving what is on disk (old or new ledger) rather than nothing.
                if let (Ok(l), Ok(a)) =
                    (Ledger::open(&dir, OpenMode::ReadWrite), read_applied(&dir))
                {
                    self.applied = a;
                    self.ledger = Some(l);
                }
                return Err(e);
            }
        };
        let cp = ledger.checkpoint().map(|c| c.size).unwrap_or(0);
        self.checkpoint_size.send_if_modified(|s| {
            let newer = cp > *s;
            *s = (*s).max(cp);
            newer
        });
        self.ledger = Some(ledger);
        self.applied = applied;
        self.witnessed_size
            .send_replace(witnessed_size(&self.applied));
        let parts = archive(&dir, &self.applied)?;
        self.snapshot = Some((meta.clone(), parts));
        tracing::info!(
            last = ?meta.last_log_id,
            size = self.applied.ledger_size,
            "installed snapshot (segment transfer)"
        );
        Ok(())
    }
}
