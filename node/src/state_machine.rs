//! The state machine: the ledger itself.
//!
//! ```text
//! <data>/ledger/                 a dlog-ledger directory (same log id on every replica)
//! <data>/ledger/raft-applied.json  last applied Raft log id, membership, ledger size after it
//! <data>/ledger.incoming/        a snapshot being installed (renamed over `ledger`)
//! <data>/DIVERGED                the evidence, once this replica found its root differs
//!                                from the cluster's: it serves and signs nothing, also
//!                                after a restart, until an operator removes the file
//! ```
//!
//! Applying does not fsync the ledger: every applied entry is committed, so
//! a majority's Raft logs hold it durably, and an apply is a write into the
//! open segment ([`Ledger::append_unsynced`]). On a follower the entry is
//! also durable in its own Raft log; on the leader, whose log fsync runs
//! beside the followers' (`vendor/openraft/DLOG-PATCH.md`), it may not be
//! yet. If a power cut then keeps a synced ledger ahead of the leader's own
//! log, openraft at startup takes the applied state as the purge point (the
//! log before it counts as purged), and the cluster, which holds the entry,
//! brings the node's log up from there. The ledger is synced at least every
//! [`SYNC_EVERY`] while entries are applied, before every stored checkpoint,
//! and before a snapshot is
//! built (only then may Raft purge the log behind it).
//!
//! Applying is idempotent across crashes: `raft-applied.json` is written only
//! after a ledger sync and describes at most what that sync made durable, so
//! after a crash (or power cut) it may be older than the ledger, never newer.
//! Raft entries applied again are recognised by position (the ledger size each
//! Raft entry starts at is known) and skipped, never appended twice.
//! Replaying the same Raft log gives byte-identical segment files on every
//! replica because the leader assigns the timestamps.
//!
//! A snapshot is the ledger's files (sealed segments with their index and
//! node files, the open segment, the checkpoint) plus `raft-applied.json`:
//! a file transfer, not a replay.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use dlog_crypto::note::{Checkpoint, SignedNote};
use dlog_ledger::{EntryKind, Ledger, OpenMode};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, EntryPayload, RaftSnapshotBuilder, SnapshotMeta, StorageIOError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};

use crate::error::{NodeError, Result};
use crate::session::{Placed, Sessions, Verdict};
use crate::snapshot::{ArchiveBuilder, Parts, SnapshotData};
use crate::types::{Entry, Items, LogId, NodeId, Request, Response, StorageError, TypeConfig};

/// Name of the applied-state file inside the ledger directory.
pub const APPLIED_FILE: &str = "raft-applied.json";
const LEDGER_DIR: &str = "ledger";
const INCOMING_DIR: &str = "ledger.incoming";
const OLD_DIR: &str = "ledger.old";
const COMPLETE_MARK: &str = "snapshot-complete";
/// An incoming snapshot is spooled here before it is unpacked.
const SPOOL_FILE: &str = "snapshot.incoming";
/// Evidence of divergence; while present the replica serves nothing.
pub const DIVERGED_FILE: &str = "DIVERGED";
/// Longest time applied entries stay unsynced in the ledger.
pub const SYNC_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// Shape of the shared log, identical on every replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogShape {
    /// Checkpoint origin line.
    pub origin: String,
    /// Log id, 32 hex digits.
    pub log_id: String,
    /// `k` of the segments.
    pub segment_bits: u8,
    /// Payload limit.
    pub max_payload: u32,
}

/// What the state machine persists beside the ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Last applied Raft log id.
    pub last_applied: Option<LogId>,
    /// Last applied membership.
    pub membership: StoredMembership<NodeId, BasicNode>,
    /// Ledger size after `last_applied`.
    pub ledger_size: u64,
    /// Sealed segments whose root and chain went through Raft as Seal records.
    #[serde(default)]
    pub seals_recorded: u64,
    /// Client sessions: which tagged appends are applied (exactly-once).
    #[serde(default)]
    pub sessions: Sessions,
    /// The witnessed checkpoint: the newest committed checkpoint with the
    /// auditors' cosignatures (see [`Request::Witness`]).
    #[serde(default)]
    pub witnessed: Option<String>,
}

/// The replica's state, shared between Raft and the RPC service.
pub struct SmInner {
    data_dir: PathBuf,
    /// The ledger (`None` only while a snapshot is being swapped in).
    ledger: Option<Ledger>,
    applied: Applied,
    /// Set when this replica's own computation disagrees with the cluster.
    pub diverged: Option<String>,
    /// Copies of tagged appends this replica recognised while applying
    /// (answered with the first copy's place, or refused as stale), since
    /// it started.
    pub duplicates: u64,
    snapshot: Option<(SnapshotMeta<NodeId, BasicNode>, Parts)>,
    snapshot_seq: u64,
    applied_file: Option<AppliedFile>,
    /// When the ledger was last synced and the applied state written.
    last_sync: std::time::Instant,
    /// Size of the latest stored checkpoint, for waiters.
    checkpoint_size: tokio::sync::watch::Sender<u64>,
    /// Size of the witnessed checkpoint, for waiters.
    witnessed_size: tokio::sync::watch::Sender<u64>,
    /// When this replica stored its latest checkpoint (`None`: not since
    /// it started).
    checkpoint_at: Option<std::time::Instant>,
    /// Whether the replica diverged, for the node to leave Raft.
    diverged_tx: tokio::sync::watch::Sender<bool>,
}

impl Drop for SmInner {
    fn drop(&mut self) {
        self.close_ledger();
    }
}

impl SmInner {
    /// Syncs the ledger and the applied state durably, then drops the ledger.
    fn close_ledger(&mut self) {
        if self.ledger.is_some() {
            if let Err(e) = self.sync(true) {
                tracing::warn!(error = %e, "could not sync the ledger at shutdown");
            }
            self.ledger = None;
        }
    }

    /// The ledger.
    pub fn ledger(&self) -> Result<&Ledger> {
        self.ledger
            .as_ref()
            .ok_or_else(|| NodeError::Raft("ledger is being replaced by a snapshot".into()))
    }

    /// Applied state.
    pub fn applied(&self) -> &Applied {
        &self.applied
    }
}

/// The Raft state machine; cheap to clone, all clones share one ledger.
#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<Mutex<SmInner>>,
}

impl std::fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachine").finish_non_exhaustive()
    }
}

fn swrite(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::write_state_machine(AnyError::error(e.to_string())).into()
}

fn sread(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::read_state_machine(AnyError::error(e.to_string())).into()
}

/// Creates an empty ledger with the cluster's log id (every replica shares
/// it, so segment files are byte-identical).
pub fn create_ledger(dir: &Path, shape: &LogShape) -> Result<()> {
    let id = dlog_ledger::store::parse_log_id(&shape.log_id)
        .ok_or_else(|| NodeError::config(dir, "log_id", "log id must be 32 hexadecimal digits"))?;
    let ledger = Ledger::create(
        dir,
        &dlog_ledger::CreateOptions {
            origin: shape.origin.clone(),
            segment_bits: shape.segment_bits,
            max_payload: shape.max_payload,
            log_id: Some(id),
        },
    )?;
    drop(ledger);
    Ok(())
}

/// Size of one slot of the applied file: room for the session table at its
/// bound ([`crate::session::MAX_RESULTS`]). Slots are written in place and
/// the file is sparse, so only the state's own bytes are written.
const SLOT: usize = 4 << 20;
/// The slot size of files written before the session table: their second
/// slot is read there.
const LEGACY_SLOT: usize = 32 << 10;

/// Reads the applied state: two slots `len:u32 | crc32c:u32 | json`, the
/// valid one with the higher last applied index wins (a torn write of one
/// slot leaves the other).
fn read_applied(dir: &Path) -> Result<Applied> {
    let path = dir.join(APPLIED_FILE);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Applied::default()),
        Err(e) => return Err(NodeError::io("open", &path)(e)),
    };
    let file_len = file.metadata().map_err(NodeError::io("read", &path))?.len();
    // Reads exactly `len` bytes at `at`; `None` past the end of the file.
    let read_at = |at: u64, len: usize| -> Result<Option<Vec<u8>>> {
        if at.saturating_add(len as u64) > file_len {
            return Ok(None);
        }
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, at)
            .map_err(NodeError::io("read", &path))?;
        Ok(Some(buf))
    };
    let mut best: Option<Applied> = None;
    // Each slot's header, then its body: the file is sparse and mostly
    // holes, so reading it whole would read megabytes of zeros.
    // A stale legacy second slot is older than anything written since, so
    // it never wins over a valid current slot.
    for at in [0, LEGACY_SLOT, SLOT] {
        let Some(head) = read_at(at as u64, 8)? else {
            continue;
        };
        let len = u32::from_be_bytes(head[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_be_bytes(head[4..8].try_into().expect("4 bytes"));
        if len > SLOT - 8 {
            continue;
        }
        let Some(body) = read_at(at as u64 + 8, len)? else {
            continue;
        };
        if crc32c::crc32c(&body) != crc {
            continue;
        }
        let Ok(a) = serde_json::from_slice::<Applied>(&body) else {
            continue;
        };
        let idx = |x: &Applied| x.last_applied.map(|l| l.index);
        if best.as_ref().is_none_or(|b| idx(&a) > idx(b)) {
            best = Some(a);
        }
    }
    best.ok_or_else(|| NodeError::RaftStore {
        path,
        detail: "no valid slot in the applied-state file".into(),
    })
}

/// The applied-state file, written in place into alternating slots.
///
/// It is fsynced only when it must be durable (snapshot build and install):
/// after a crash it may be older than the ledger, which is safe because
/// applying is idempotent, and it is never newer, because it is written only
/// after a ledger sync, describing what that sync covered.
struct AppliedFile {
    file: fs::File,
    path: PathBuf,
    next_slot: u64,
}

impl AppliedFile {
    fn open(dir: &Path) -> Result<AppliedFile> {
        let path = dir.join(APPLIED_FILE);
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(NodeError::io("open", &path))?;
        Ok(AppliedFile {
            file,
            path,
            next_slot: 0,
        })
    }

    fn write(&mut self, a: &Applied, durable: bool) -> Result<()> {
        // The header is filled in once the state is encoded after it.
        let mut buf = vec![0u8; 8];
        serde_json::to_writer(&mut buf, a).map_err(|e| NodeError::Protocol(e.to_string()))?;
        let len = buf.len() - 8;
        if buf.len() > SLOT {
            return Err(NodeError::RaftStore {
                path: self.path.clone(),
                detail: format!("applied state of {len} bytes does not fit a slot"),
            });
        }
        let crc = crc32c::crc32c(&buf[8..]);
        buf[..4].copy_from_slice(&(len as u32).to_be_bytes());
        buf[4..8].copy_from_slice(&crc.to_be_bytes());
        self.file
            .write_all_at(&buf, self.next_slot * SLOT as u64)
            .map_err(NodeError::io("write", &self.path))?;
        self.next_slot ^= 1;
        if durable {
            self.file
                .sync_data()
                .map_err(NodeError::io("fsync", &self.path))?;
        }
        Ok(())
    }
}

fn write_applied(dir: &Path, a: &Applied) -> Result<()> {
    let mut f = AppliedFile::open(dir)?;
    f.write(a, true)?;
    // Both slots hold the same state: a later torn write cannot fall back
    // to something older than this durable point.
    f.write(a, true)
}

/// A snapshot archive of the ledger directory `dir` as it is now (the caller
/// holds the state lock, so nothing is appended meanwhile): the applied
/// state, the log meta and checkpoint by value, every segment and side file
/// by reference with its current length (no lock or temp files).
fn archive(dir: &Path, applied: &Applied) -> Result<Parts> {
    let json = serde_json::to_vec(applied).map_err(|e| NodeError::Protocol(e.to_string()))?;
    let mut b = ArchiveBuilder::new(&json).map_err(NodeError::io("archive", dir))?;
    for rel in [
        dlog_ledger::store::LOG_FILE,
        dlog_ledger::store::CHECKPOINT_FILE,
    ] {
        let p = dir.join(rel);
        match fs::read(&p) {
            Ok(bytes) => b
                .add_bytes(rel, &bytes)
                .map_err(NodeError::io("archive", &p))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(NodeError::io("read", &p)(e)),
        }
    }
    let segdir = dir.join(dlog_ledger::store::SEGMENT_DIR);
    let mut names = Vec::new();
    for ent in fs::read_dir(&segdir).map_err(NodeError::io("read directory", &segdir))? {
        let ent = ent.map_err(NodeError::io("read directory", &segdir))?;
        let name = ent.file_name().to_string_lossy().to_string();
        if !name.ends_with(".tmp") && !name.starts_with('.') {
            names.push(name);
        }
    }
    names.sort();
    for name in names {
        let p = segdir.join(&name);
        let len = fs::metadata(&p).map_err(NodeError::io("stat", &p))?.len();
        b.add_file(
            &format!("{}/{name}", dlog_ledger::store::SEGMENT_DIR),
            &p,
            len,
        )
        .map_err(NodeError::io("archive", &p))?;
    }
    Ok(b.finish())
}

/// Which relative names a snapshot may write into a ledger directory.
fn allowed_in_snapshot(rel: &str) -> bool {
    rel == dlog_ledger::store::LOG_FILE
        || rel == dlog_ledger::store::CHECKPOINT_FILE
        || rel
            .strip_prefix("segments/")
            .is_some_and(|n| !n.contains('/') && !n.starts_with('.') && !n.is_empty())
}

impl StateMachine {
    /// Opens the replica's ledger in `<data_dir>/ledger`, creating it with `shape`
    /// when absent, and finishing an interrupted snapshot install.
    pub fn open(data_dir: &Path, shape: &LogShape) -> Result<StateMachine> {
        let dir = data_dir.join(LEDGER_DIR);
        let incoming = data_dir.join(INCOMING_DIR);
        let old = data_dir.join(OLD_DIR);
        if incoming.join(COMPLETE_MARK).exists() && !dir.exists() {
            fs::rename(&incoming, &dir).map_err(NodeError::io("rename", &incoming))?;
        }
        for leftover in [&incoming, &old] {
            if leftover.exists() {
                fs::remove_dir_all(leftover).map_err(NodeError::io("remove", leftover))?;
            }
        }
        let spool = data_dir.join(SPOOL_FILE);
        if spool.exists() {
            fs::remove_file(&spool).map_err(NodeError::io("remove", &spool))?;
        }
        if !dir.join(dlog_ledger::store::LOG_FILE).exists() {
            create_ledger(&dir, shape)?;
        }
        let ledger = Ledger::open(&dir, OpenMode::ReadWrite)?;
        let meta = ledger.meta();
        if meta.log_id != shape.log_id || meta.origin != shape.origin {
            return Err(NodeError::ForeignData {
                ledger: dir.join(dlog_ledger::store::LOG_FILE),
                detail: format!(
                    "data directory holds log {} ({}), the config names {} ({}): data dir of another cluster",
                    meta.log_id, meta.origin, shape.log_id, shape.origin
                ),
            });
        }
        let applied = read_applied(&dir)?;
        if ledger.size() < applied.ledger_size {
            return Err(NodeError::RaftStore {
                path: dir.join(APPLIED_FILE),
                detail: format!(
                    "ledger holds {} entries but {} were applied",
                    ledger.size(),
                    applied.ledger_size
                ),
            });
        }
        let marker = data_dir.join(DIVERGED_FILE);
        let diverged = match fs::read_to_string(&marker) {
            Ok(why) => {
                let why = format!(
                    "{} (recorded in {} before this start; remove it once the replica is repaired)",
                    why.trim_end(),
                    marker.display()
                );
                tracing::error!(evidence = %why, "REPLICA DIVERGED: this node stops serving and signing");
                Some(why)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(NodeError::io("read", &marker)(e)),
        };
        let checkpoint_size =
            tokio::sync::watch::Sender::new(ledger.checkpoint().map(|c| c.size).unwrap_or(0));
        let witnessed_size = tokio::sync::watch::Sender::new(witnessed_size(&applied));
        Ok(StateMachine {
            inner: Arc::new(Mutex::new(SmInner {
                data_dir: data_dir.to_path_buf(),
                ledger: Some(ledger),
                applied,
                duplicates: 0,
                snapshot: None,
                snapshot_seq: 0,
                applied_file: None,
                last_sync: std::time::Instant::now(),
                checkpoint_size,
                witnessed_size,
                checkpoint_at: None,
                diverged_tx: tokio::sync::watch::Sender::new(diverged.is_some()),
                diverged,
            })),
        })
    }

    /// Syncs the ledger and records the applied state durably, as a clean
    /// shutdown does.
    pub fn flush(&self) -> Result<()> {
        self.lock().sync(true)
    }

    /// Watches the size of the latest checkpoint this replica stored.
    pub fn watch_checkpoints(&self) -> tokio::sync::watch::Receiver<u64> {
        self.lock().checkpoint_size.subscribe()
    }

    /// Watches the size of the witnessed checkpoint (0: none yet).
    pub fn watch_witnessed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.lock().witnessed_size.subscribe()
    }

    /// Becomes `true` once the replica diverged (at once if it had before
    /// this start).
    pub fn watch_divergence(&self) -> tokio::sync::watch::Receiver<bool> {
        self.lock().diverged_tx.subscribe()
    }

    /// Locks the replica state (never held across an await).
    pub fn lock(&self) -> MutexGuard<'_, SmInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes the ledger once Raft has stopped: waits for an apply still
    /// running on a blocking thread, syncs, and drops the ledger (which
    /// finishes its side-file writes), so a stopped node leaves complete
    /// files behind whoever still holds a clone. Later calls that need the
    /// ledger fail cleanly.
    pub fn close(&self) {
        self.lock().close_ledger();
    }

    /// Applies `entries` in order, then syncs the ledger if [`SYNC_EVERY`]
    /// has passed.
    fn apply_now(&self, entries: Vec<Entry>) -> Result<Vec<Response>> {
        let mut g = self.lock();
        let mut out = Vec::with_capacity(entries.len());
        for e in &entries {
            out.push(g.apply_one(e)?);
        }
        if g.last_sync.elapsed() >= SYNC_EVERY {
            g.sync(false)?;
        }
        Ok(out)
    }
}

/// Batches with at least this many payload bytes are applied on a blocking
/// thread.
const INLINE_APPLY_BYTES: usize = 32 << 10;

/// Client payload bytes in `entries`.
fn payload_bytes(entries: &[Entry]) -> usize {
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
fn append_replayable(
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
    fn apply_one(&mut self, e: &Entry) -> Result<Response> {
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

    fn apply_request(&mut self, req: &Request) -> Result<Response> {
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

    fn apply_checkpoint(&mut self, note: &str) {
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
    fn apply_witness(&mut self, note: &str) {
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
    fn sync(&mut self, durable: bool) -> Result<()> {
        self.ledger
            .as_mut()
            .ok_or_else(|| NodeError::Raft("no ledger".into()))?
            .sync()?;
        self.save_applied(durable)?;
        self.last_sync = std::time::Instant::now();
        Ok(())
    }

    fn save_applied(&mut self, durable: bool) -> Result<()> {
        if self.applied_file.is_none() {
            let dir = self.ledger()?.dir().to_path_buf();
            self.applied_file = Some(AppliedFile::open(&dir)?);
        }
        self.applied_file
            .as_mut()
            .expect("just opened")
            .write(&self.applied, durable)
    }

    fn build_snapshot(&mut self) -> Result<(SnapshotMeta<NodeId, BasicNode>, Parts)> {
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

    fn install(
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

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (meta, parts) = self.lock().build_snapshot().map_err(sread)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(SnapshotData::Parts(parts)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<NodeId, BasicNode>), StorageError> {
        let g = self.lock();
        Ok((g.applied.last_applied, g.applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        // Hashing and writing a big batch, or the periodic fdatasync, would
        // hold this runtime thread (and with it the node's tunnel and Raft
        // tasks) for milliseconds: run those on a blocking thread. Small
        // batches stay inline, where a thread hand-off would cost more.
        let heavy = payload_bytes(&entries) >= INLINE_APPLY_BYTES
            || self.lock().last_sync.elapsed() >= SYNC_EVERY;
        if heavy {
            let sm = self.clone();
            tokio::task::spawn_blocking(move || sm.apply_now(entries))
                .await
                .map_err(swrite)?
                .map_err(swrite)
        } else {
            self.apply_now(entries).map_err(swrite)
        }
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotData>, StorageError> {
        let path = self.lock().data_dir.join(SPOOL_FILE);
        let f = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(|e| swrite(format!("create {}: {e}", path.display())))?;
        Ok(Box::new(SnapshotData::File(f)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<SnapshotData>,
    ) -> Result<(), StorageError> {
        match *snapshot {
            SnapshotData::File(f) => {
                let mut f = f.into_std().await;
                use std::io::Seek;
                f.seek(std::io::SeekFrom::Start(0)).map_err(swrite)?;
                let mut r = std::io::BufReader::with_capacity(1 << 20, f);
                let res = self.lock().install(meta, &mut r).map_err(swrite);
                let spool = self.lock().data_dir.join(SPOOL_FILE);
                let _ = fs::remove_file(spool);
                res
            }
            SnapshotData::Parts(p) => self.lock().install(meta, &mut p.rewound()).map_err(swrite),
        }
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let g = self.lock();
        Ok(g.snapshot.as_ref().map(|(m, p)| Snapshot {
            meta: m.clone(),
            snapshot: Box::new(SnapshotData::Parts(p.rewound())),
        }))
    }
}

/// The size of the witnessed checkpoint in `applied` (0: none).
fn witnessed_size(applied: &Applied) -> u64 {
    applied
        .witnessed
        .as_deref()
        .and_then(|n| Checkpoint::from_note(n).ok())
        .map_or(0, |c| c.size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(index: u64) -> Applied {
        Applied {
            last_applied: Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), index)),
            ledger_size: index * 10,
            ..Applied::default()
        }
    }

    #[test]
    fn the_newest_valid_slot_wins_and_a_torn_one_is_passed_over() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_applied(dir.path()).unwrap(), Applied::default());
        let mut f = AppliedFile::open(dir.path()).unwrap();
        f.write(&applied(5), false).unwrap();
        assert_eq!(read_applied(dir.path()).unwrap(), applied(5));
        f.write(&applied(9), false).unwrap();
        assert_eq!(read_applied(dir.path()).unwrap(), applied(9));
        // Tear the newer slot (the second): the older one is read.
        let path = dir.path().join(APPLIED_FILE);
        let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(b"{torn", SLOT as u64 + 8).unwrap();
        assert_eq!(read_applied(dir.path()).unwrap(), applied(5));
        // A header claiming more than a slot, in both slots: an error
        // naming the file, not a huge read.
        file.write_all_at(&u32::MAX.to_be_bytes(), 0).unwrap();
        file.write_all_at(&u32::MAX.to_be_bytes(), SLOT as u64)
            .unwrap();
        let e = read_applied(dir.path()).unwrap_err().to_string();
        assert!(e.contains(APPLIED_FILE), "{e}");
    }

    #[test]
    fn a_legacy_file_with_its_second_slot_at_32_kib_reads() {
        let dir = tempfile::tempdir().unwrap();
        let a = applied(3);
        let body = serde_json::to_vec(&a).unwrap();
        let mut slot = Vec::new();
        slot.extend_from_slice(&(body.len() as u32).to_be_bytes());
        slot.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        slot.extend_from_slice(&body);
        let file = File::create(dir.path().join(APPLIED_FILE)).unwrap();
        file.write_all_at(&slot, LEGACY_SLOT as u64).unwrap();
        assert_eq!(read_applied(dir.path()).unwrap(), a);
    }
}
