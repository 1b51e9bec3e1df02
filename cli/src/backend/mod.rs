//! One interface for the everyday verbs, over the embedded local log or a
//! cluster reached through the WireGuard tunnel.

mod local;
mod remote;

pub use local::{load_trust, LocalLog, TRUST_FILE};
pub use remote::Remote;

use anyhow::{bail, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use dlog_ledger::{Entry, EntryKind, OpenMode};
use dlog_notary::receipt::Receipt;
use std::path::Path;

/// The latest checkpoint as a verb prints it.
pub struct CheckpointInfo {
    /// Tree size it covers.
    pub size: u64,
    /// The signed note.
    pub note: String,
    /// Entries the serving log holds (at least `size`).
    pub log_size: u64,
    /// How stale it may be, in milliseconds (0: current; `None`: not
    /// known). Only a cluster read from any node can be stale.
    pub behind_ms: Option<u64>,
}

/// What the verbs need from a log.
pub trait Log {
    /// Appends durably; returns (first index, timestamp).
    fn append(&mut self, items: &[(EntryKind, &[u8])]) -> Result<(u64, u64)>;
    /// The decoded entry.
    fn entry(&self, index: u64) -> Result<Entry>;
    /// The latest signed checkpoint.
    fn checkpoint(&self) -> Result<CheckpointInfo>;
    /// The latest signed checkpoint the answering node holds, without a
    /// linearizable round on a cluster (faster; it says how stale it may be).
    fn checkpoint_any_node(&self) -> Result<CheckpointInfo> {
        self.checkpoint()
    }
    /// Entries readable now (a cluster: those under its latest checkpoint).
    fn size(&self) -> Result<u64>;
    /// A receipt for `index`, under the checkpoint of `size` (default: the latest).
    fn receipt(&self, index: u64, size: Option<u64>) -> Result<Receipt>;
    /// Consistency proof JSON (DESIGN §5) from `from` to `to` (default: latest).
    fn consistency(&self, from: u64, to: Option<u64>) -> Result<serde_json::Value>;
}

/// The JSON of DESIGN §5.
pub fn consistency_json(
    old: u64,
    new: u64,
    old_root: &[u8; 32],
    new_root: &[u8; 32],
    proof: &[[u8; 32]],
) -> serde_json::Value {
    serde_json::json!({
        "old_size": old,
        "new_size": new,
        "old_root": B64.encode(old_root),
        "new_root": B64.encode(new_root),
        "proof": proof.iter().map(|h| B64.encode(h)).collect::<Vec<_>>(),
    })
}

/// Where the verbs act: a local data directory or a cluster.
pub struct Target<'a> {
    /// The local data directory.
    pub dir: &'a Path,
    /// `client.toml` of a cluster, when given.
    pub cluster: Option<&'a Path>,
}

impl Target<'_> {
    /// Opens for reading.
    pub fn read(&self) -> Result<Box<dyn Log>> {
        match self.cluster {
            Some(c) => Ok(Box::new(Remote::open(c)?)),
            None => Ok(Box::new(LocalLog::open(self.dir, OpenMode::ReadOnly)?)),
        }
    }

    /// Opens for appending; the embedded default creates a local log on first write.
    pub fn write(&self) -> Result<Box<dyn Log>> {
        match self.cluster {
            Some(c) => Ok(Box::new(Remote::open(c)?)),
            None => Ok(Box::new(local::open_or_init(self.dir)?)),
        }
    }

    /// Refuses a verb that only makes sense on a local data directory.
    pub fn local_only(&self, verb: &str, hint: &str) -> Result<&Path> {
        if self.cluster.is_some() {
            bail!("`dlog {verb}` works on a local data directory, not through --cluster; {hint}");
        }
        Ok(self.dir)
    }
}
