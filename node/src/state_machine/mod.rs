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

mod applied;
mod apply;
mod archive;

use crate::error::{NodeError, Result};
use crate::session::Sessions;
use crate::snapshot::{Parts, SnapshotData};
use crate::types::{Entry, LogId, NodeId, Response, StorageError, TypeConfig};
use applied::{read_applied, AppliedFile};
use apply::payload_bytes;
use dlog_crypto::note::Checkpoint;
use dlog_ledger::{Ledger, OpenMode};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, RaftSnapshotBuilder, SnapshotMeta, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use std::fs::{self};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

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
    /// The Merkle tree's hash.
    pub hash: dlog_crypto::HashAlg,
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
    /// auditors' cosignatures (see [`crate::types::Request::Witness`]).
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
            hash: shape.hash,
        },
    )?;
    drop(ledger);
    Ok(())
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
        if meta.hash != shape.hash {
            return Err(NodeError::ForeignData {
                ledger: dir.join(dlog_ledger::store::LOG_FILE),
                detail: format!(
                    "the ledger's tree hashes with {}, the config says {} (`log.hash`)",
                    meta.hash, shape.hash
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
    use super::applied::{LEGACY_SLOT, SLOT};
    use super::*;
    use std::fs::File;
    use std::os::unix::fs::FileExt;

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
