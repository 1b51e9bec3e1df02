//! The everyday verbs over a cluster: a [`Client`] through the WireGuard
//! tunnel, driven from the synchronous CLI.

use super::{CheckpointInfo, Log};
use anyhow::{bail, Context, Result};
use dlog_client::{Client, ServedCheckpoint};
use dlog_ledger::{Entry, EntryKind};
use dlog_notary::receipt::Receipt;
use std::path::Path;

/// A cluster client for the everyday verbs.
pub struct Remote {
    rt: tokio::runtime::Runtime,
    client: Client,
}

impl Remote {
    /// Opens the tunnel described by `client.toml`.
    pub fn open(config: &Path) -> Result<Remote> {
        let rt = crate::cluster::runtime()?;
        let client = rt
            .block_on(Client::open(config))
            .with_context(|| format!("cannot open the cluster client {}", config.display()))?;
        Ok(Remote { rt, client })
    }

    /// Appends a batch; returns (first index, timestamp).
    pub fn append(&self, items: &[(EntryKind, &[u8])]) -> Result<(u64, u64)> {
        let a = self.rt.block_on(self.client.append(items))?;
        Ok((a.first, a.timestamp_ns))
    }

    /// Canonical entry bytes.
    pub fn entry(&self, index: u64) -> Result<Vec<u8>> {
        Ok(self.rt.block_on(self.client.get(index))?)
    }

    /// Consecutive canonical entries from `start` (at most `max`, at
    /// least one; a node bounds a reply in bytes too).
    pub fn entries(&self, start: u64, max: u32) -> Result<Vec<Vec<u8>>> {
        Ok(self
            .rt
            .block_on(self.client.entries(None, start, max, false))?)
    }

    /// The latest checkpoint the auditors cosigned, verified against the
    /// whole trust file (an empty note when none is cosigned yet).
    pub fn witnessed(&self) -> Result<ServedCheckpoint> {
        Ok(self.rt.block_on(self.client.witnessed())?)
    }

    /// The client's trust file, when `client.toml` names one.
    pub fn trust(&self) -> Option<&dlog_crypto::trust::TrustPolicy> {
        self.client.trust()
    }

    /// Decoded entry.
    pub fn get(&self, index: u64) -> Result<Entry> {
        Ok(Entry::decode(&self.entry(index)?)?)
    }

    /// Latest majority-signed checkpoint: a linearizable read, or what the
    /// answering node holds.
    pub fn checkpoint(&self, linearizable: bool) -> Result<ServedCheckpoint> {
        Ok(self.rt.block_on(self.client.checkpoint(linearizable))?)
    }

    /// A receipt for `index` under a majority-signed checkpoint covering it
    /// (or the one of `size` when given and available).
    pub fn receipt(&self, index: u64, size: Option<u64>) -> Result<Receipt> {
        let cp = self.rt.block_on(self.client.checkpoint_covering(index))?;
        if let Some(s) = size {
            if s != cp.size {
                bail!(
                    "a cluster serves receipts for its majority-signed checkpoints; the one covering entry {index} has size {} (asked {s})",
                    cp.size
                );
            }
        }
        let inclusion = self
            .rt
            .block_on(self.client.inclusion_proof(index, cp.size))?;
        Ok(Receipt {
            entry: self.entry(index)?,
            index,
            inclusion,
            checkpoint: cp.note,
        })
    }

    /// Consistency proof between two sizes.
    pub fn consistency(&self, old: u64, new: u64) -> Result<Vec<[u8; 32]>> {
        Ok(self.rt.block_on(self.client.consistency_proof(old, new))?)
    }
}

impl Remote {
    /// The cluster's tree hash, as its trust file says (BLAKE3 without one).
    fn hash(&self) -> dlog_crypto::HashAlg {
        self.client.trust().map(|t| t.hash).unwrap_or_default()
    }

    /// Root of the cluster's tree at `size`, folded from entry 0 and its
    /// inclusion proof (the leftmost path touches every right subtree).
    pub fn root_at(&self, size: u64) -> Result<[u8; 32]> {
        let alg = self.hash();
        if size == 0 {
            return Ok(alg.empty_root());
        }
        let mut acc = alg.hash_leaf(&self.entry(0)?);
        for p in self.rt.block_on(self.client.inclusion_proof(0, size))? {
            acc = alg.hash_children(&acc, &p);
        }
        Ok(acc)
    }

    /// Consistency proof from `old` to `new` with both roots; the note of
    /// the latest checkpoint when `new` is its size.
    pub fn consistency_proof(
        &self,
        old: u64,
        new: u64,
        latest: &ServedCheckpoint,
    ) -> Result<super::Consistency> {
        let proof = self.consistency(old, new)?;
        Ok(super::Consistency {
            alg: self.hash(),
            old_size: old,
            new_size: new,
            old_root: self.root_at(old)?,
            new_root: self.root_at(new)?,
            proof,
            old_checkpoint: None,
            new_checkpoint: (latest.size == new && !latest.note.is_empty())
                .then(|| latest.note.clone()),
        })
    }
}

fn served(cp: ServedCheckpoint) -> CheckpointInfo {
    CheckpointInfo {
        size: cp.size,
        note: cp.note,
        log_size: cp.applied,
        behind_ms: cp.behind_ms,
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

    fn voter_receipt(&self, index: u64) -> Result<Option<Receipt>> {
        let cp = self.rt.block_on(
            self.client
                .wait_checkpoint(index, std::time::Duration::from_secs(5)),
        )?;
        if cp.size <= index {
            bail!("no voter-signed checkpoint covers entry {index} yet");
        }
        let inclusion = self
            .rt
            .block_on(self.client.inclusion_proof(index, cp.size))?;
        Ok(Some(Receipt {
            entry: self.entry(index)?,
            index,
            inclusion,
            checkpoint: cp.note,
        }))
    }

    fn consistency(&self, from: u64, to: Option<u64>) -> Result<super::Consistency> {
        let latest = Remote::checkpoint(self, true)?;
        self.consistency_proof(from, to.unwrap_or(latest.size), &latest)
    }

    fn trust(&self) -> Result<Option<dlog_crypto::TrustPolicy>> {
        Ok(self.client.trust().cloned())
    }
}
