//! One interface for the everyday verbs, over the embedded local log or a
//! cluster reached through the WireGuard tunnel.

mod local;
mod remote;

pub use local::{load_trust, LocalLog, TRUST_FILE};
pub use remote::Remote;

use anyhow::{bail, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use dlog_crypto::{Hash, HashAlg, TrustPolicy};
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
    /// A receipt for `index` under a voter-signed checkpoint, without
    /// waiting for auditors' cosignatures (`None` where [`Log::receipt`]
    /// never waits for them).
    fn voter_receipt(&self, _index: u64) -> Result<Option<Receipt>> {
        Ok(None)
    }
    /// Consistency proof from `from` to `to` (default: the latest
    /// checkpoint), with the signed checkpoints the log holds for either.
    fn consistency(&self, from: u64, to: Option<u64>) -> Result<Consistency>;
    /// The log's trust file, where the log knows one (a local log's own
    /// `trust.toml`, or the one `client.toml` names).
    fn trust(&self) -> Result<Option<TrustPolicy>>;
}

/// A consistency proof between two trees of one log: sizes, roots, the
/// proof, and the signed checkpoint notes of both trees where known.
#[derive(Debug, Clone)]
pub struct Consistency {
    /// The log's tree hash.
    pub alg: HashAlg,
    /// Old tree size.
    pub old_size: u64,
    /// New tree size.
    pub new_size: u64,
    /// Root of the old tree.
    pub old_root: Hash,
    /// Root of the new tree.
    pub new_root: Hash,
    /// The proof hashes.
    pub proof: Vec<Hash>,
    /// A signed checkpoint of the old tree, when known.
    pub old_checkpoint: Option<String>,
    /// A signed checkpoint of the new tree, when known.
    pub new_checkpoint: Option<String>,
}

impl Consistency {
    /// Checks the proof against both roots (no source is trusted to send
    /// a good one).
    pub fn check(&self) -> std::result::Result<(), dlog_crypto::tree::ProofError> {
        dlog_crypto::tree::verify_consistency_with(
            self.alg,
            self.old_size,
            self.new_size,
            &self.old_root,
            &self.new_root,
            &self.proof,
        )
    }

    /// The JSON of DESIGN §5, plus `old_checkpoint` and `new_checkpoint`:
    /// the two signed notes (null where not known), so a verifier checks
    /// the proof between two signed checkpoints, not bare roots.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "old_size": self.old_size,
            "new_size": self.new_size,
            "old_root": B64.encode(self.old_root),
            "new_root": B64.encode(self.new_root),
            "proof": self.proof.iter().map(|h| B64.encode(h)).collect::<Vec<_>>(),
            "old_checkpoint": self.old_checkpoint,
            "new_checkpoint": self.new_checkpoint,
        })
    }
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
