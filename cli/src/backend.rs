//! One interface for the everyday verbs, over the embedded local log or a
//! cluster reached through the WireGuard tunnel.

use crate::cluster::Remote;
use crate::local::{self, LocalLog};
use anyhow::{anyhow, bail, Result};
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

fn served(cp: dlog_node::client::ServedCheckpoint) -> CheckpointInfo {
    CheckpointInfo {
        size: cp.size,
        note: cp.note,
        log_size: cp.applied,
        behind_ms: cp.behind_ms,
    }
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

/// The embedded local log.
impl Log for LocalLog {
    fn append(&mut self, items: &[(EntryKind, &[u8])]) -> Result<(u64, u64)> {
        let a = LocalLog::append(self, items)?;
        self.sign_checkpoint()?;
        Ok((a.first, a.timestamp_ns))
    }

    fn entry(&self, index: u64) -> Result<Entry> {
        Ok(Entry::decode(&self.ledger.entry(index)?)?)
    }

    fn checkpoint(&self) -> Result<CheckpointInfo> {
        let cp = self
            .ledger
            .checkpoint()
            .ok_or_else(|| anyhow!("the log has no checkpoint yet"))?;
        Ok(CheckpointInfo {
            size: cp.size,
            note: cp.note.clone(),
            log_size: self.ledger.size(),
            behind_ms: Some(0),
        })
    }

    fn size(&self) -> Result<u64> {
        Ok(self.ledger.size())
    }

    fn receipt(&self, index: u64, size: Option<u64>) -> Result<Receipt> {
        let size = match size {
            Some(s) => s,
            None => self
                .ledger
                .checkpoint()
                .map(|c| c.size)
                .filter(|&s| s > index)
                .unwrap_or(self.ledger.size()),
        };
        if index >= size {
            bail!("entry {index} is not in a tree of size {size}");
        }
        Ok(Receipt {
            entry: self.ledger.entry(index)?,
            index,
            inclusion: self.ledger.inclusion_proof(index, size)?,
            checkpoint: self.note_for_size(size)?,
        })
    }

    fn consistency(&self, from: u64, to: Option<u64>) -> Result<serde_json::Value> {
        let to = to
            .or(self.ledger.checkpoint().map(|c| c.size))
            .unwrap_or(self.ledger.size());
        let proof = self.ledger.consistency_proof(from, to)?;
        Ok(consistency_json(
            from,
            to,
            &self.ledger.root_at(from)?,
            &self.ledger.root_at(to)?,
            &proof,
        ))
    }
}

/// A cluster.
impl Log for Remote {
    fn append(&mut self, items: &[(EntryKind, &[u8])]) -> Result<(u64, u64)> {
        Remote::append(self, items)
    }

    fn entry(&self, index: u64) -> Result<Entry> {
        self.get(index)
    }

    fn checkpoint(&self) -> Result<CheckpointInfo> {
        Ok(served(Remote::checkpoint(self, true)?))
    }

    fn checkpoint_any_node(&self) -> Result<CheckpointInfo> {
        Ok(served(Remote::checkpoint(self, false)?))
    }

    fn size(&self) -> Result<u64> {
        Ok(Remote::checkpoint(self, true)?.size)
    }

    fn receipt(&self, index: u64, size: Option<u64>) -> Result<Receipt> {
        Remote::receipt(self, index, size)
    }

    fn consistency(&self, from: u64, to: Option<u64>) -> Result<serde_json::Value> {
        let to = match to {
            Some(t) => t,
            None => Remote::checkpoint(self, true)?.size,
        };
        self.consistency_json(from, to)
    }
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
            None => Ok(Box::new(open_or_init(self.dir)?)),
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

/// The embedded default: writing to a directory with no log creates one.
fn open_or_init(dir: &Path) -> Result<LocalLog> {
    if !dir.join(dlog_ledger::store::LOG_FILE).exists() && !dir.join(local::KEY_FILE).exists() {
        LocalLog::init(
            dir,
            "dlog/local",
            16,
            dlog_ledger::entry::DEFAULT_MAX_PAYLOAD,
            "node-1",
        )?;
        eprintln!(
            "dlog: created a new log in {} (trust file: {})",
            dir.display(),
            dir.join(local::TRUST_FILE).display()
        );
    }
    LocalLog::open(dir, OpenMode::ReadWrite)
}
