//! The embedded single-node log: a ledger directory, its node key and trust file.

use super::{CheckpointInfo, Consistency, Log};
use anyhow::{anyhow, bail, Context, Result};
use dlog_crypto::keys::NodeKey;
use dlog_crypto::note::{Checkpoint, NoteSigner, SignedNote};
use dlog_crypto::trust::TrustPolicy;
use dlog_ledger::{Appended, CreateOptions, Entry, EntryKind, Ledger, OpenMode};
use dlog_notary::receipt::Receipt;
use std::fs;
use std::path::{Path, PathBuf};

/// Node signing key file inside the data directory.
pub const KEY_FILE: &str = "node.key";
/// Trust file inside the data directory.
pub const TRUST_FILE: &str = "trust.toml";

/// A local log opened for use by one CLI command.
pub struct LocalLog {
    /// The ledger.
    pub ledger: Ledger,
    dir: PathBuf,
    /// The node's signer, loaded before any write so a bad key refuses early.
    signer: Option<NoteSigner>,
}

impl LocalLog {
    /// `dlog init`: creates the log, the node key (0600) and `trust.toml`.
    pub fn init(
        dir: &Path,
        origin: &str,
        bits: u8,
        max_payload: u32,
        name: &str,
        hash: dlog_crypto::HashAlg,
    ) -> Result<TrustPolicy> {
        if dir.join(dlog_ledger::store::LOG_FILE).exists() {
            bail!("{} already holds a DLog log", dir.display());
        }
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let key = NodeKey::generate(name).map_err(|e| anyhow!("cannot generate key: {e}"))?;
        let key_path = dir.join(KEY_FILE);
        if key_path.exists() {
            bail!("{} exists; refusing to overwrite a key", key_path.display());
        }
        dlog_ledger::fsutil::write_secret(&key_path, key.to_toml_string().as_bytes())?;
        let signer = key.note_signer();
        let trust = TrustPolicy::new(origin, vec![signer.verifier()], 1, Vec::new(), 0)
            .map_err(|e| anyhow!("bad origin or key name: {e}"))?
            .with_hash(hash);
        let trust_text = format!(
            "# Trust file of the DLog log {origin}: give it to verifiers. It holds no secret.\n{}",
            trust.to_toml_string()
        );
        dlog_ledger::store::write_atomic(&dir.join(TRUST_FILE), trust_text.as_bytes())?;
        let ledger = Ledger::create(
            dir,
            &CreateOptions {
                origin: origin.to_string(),
                segment_bits: bits,
                max_payload,
                log_id: None,
                hash,
            },
        )?;
        let mut log = LocalLog {
            ledger,
            dir: dir.to_path_buf(),
            signer: Some(signer),
        };
        log.sign_checkpoint()?;
        Ok(trust)
    }

    /// Opens the log in `dir`; read-write also loads the signing key first.
    pub fn open(dir: &Path, mode: OpenMode) -> Result<LocalLog> {
        let signer = match mode {
            OpenMode::ReadWrite if dir.join(dlog_ledger::store::LOG_FILE).exists() => {
                Some(load_signer(dir)?)
            }
            _ => None,
        };
        let ledger = Ledger::open(dir, mode)?;
        if let Some(d) = ledger.damage() {
            eprintln!(
                "dlog: warning: the log is damaged at {d}; serving the {} entries before it (read-only). \
                 `dlog scrub` names all the damage; `dlog repair --cut-at {}` cuts it, keeping the cut bytes \
                 (a cluster node's ledger: `dlog repair --from CLIENT.toml` fetches it again)",
                ledger.size(),
                d.entry
            );
        }
        Ok(LocalLog {
            ledger,
            dir: dir.to_path_buf(),
            signer,
        })
    }

    /// The node's note signer.
    pub fn signer(&self) -> Result<NoteSigner> {
        match &self.signer {
            Some(s) => Ok(s.clone()),
            None => load_signer(&self.dir),
        }
    }

    /// Signs a checkpoint at `size` (the log's own root) and returns the note.
    pub fn checkpoint_at(&self, signer: &NoteSigner, size: u64) -> Result<String> {
        let root = self.ledger.root_at(size)?;
        let body = Checkpoint::new(self.ledger.meta().origin.clone(), size, root)
            .map_err(|e| anyhow!("{e}"))?
            .to_body();
        let mut note = SignedNote::new(body).map_err(|e| anyhow!("{e}"))?;
        note.add_signature(signer.sign(&note.text));
        Ok(note.to_string())
    }

    /// Signs and stores a checkpoint at the current size (if it grew), returns it.
    pub fn sign_checkpoint(&mut self) -> Result<String> {
        let size = self.ledger.size();
        if let Some(cp) = self.ledger.checkpoint() {
            if cp.size == size {
                return Ok(cp.note.clone());
            }
        }
        let signer = self.signer()?;
        let note = self.checkpoint_at(&signer, size)?;
        let root = self.ledger.root_at(size)?;
        self.ledger.store_checkpoint(size, root, &note)?;
        Ok(note)
    }

    /// A checkpoint note covering at least `size` entries: the stored one when
    /// it is exactly that size, else a freshly signed one.
    pub fn note_for_size(&self, size: u64) -> Result<String> {
        if let Some(cp) = self.ledger.checkpoint() {
            if cp.size == size {
                return Ok(cp.note.clone());
            }
        }
        self.checkpoint_at(&self.signer()?, size)
    }

    /// Appends a batch durably.
    pub fn append(&mut self, items: &[(dlog_ledger::EntryKind, &[u8])]) -> Result<Appended> {
        Ok(self.ledger.append(dlog_ledger::now_ns(), items)?)
    }
}

fn load_signer(dir: &Path) -> Result<NoteSigner> {
    let path = dir.join(KEY_FILE);
    let text = dlog_ledger::fsutil::read_secret(&path)?;
    let key = NodeKey::from_toml_str(&text)
        .map_err(|e| anyhow!("bad key file {}: {e}", path.display()))?;
    Ok(key.note_signer())
}

/// Reads and parses a trust file.
pub fn load_trust(path: &Path) -> Result<TrustPolicy> {
    use dlog_client::config::{read_trust, TrustFileError};
    read_trust(path).map_err(|e| match e {
        TrustFileError::Read(e) => {
            anyhow::Error::new(e).context(format!("cannot read trust file {}", path.display()))
        }
        TrustFileError::Parse(e) => anyhow!("bad trust file {}: {e}", path.display()),
    })
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
        if size > self.ledger.size() {
            bail!(
                "no tree of size {size}: the log holds {} entries",
                self.ledger.size()
            );
        }
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

    fn consistency(&self, from: u64, to: Option<u64>) -> Result<Consistency> {
        let to = to
            .or(self.ledger.checkpoint().map(|c| c.size))
            .unwrap_or(self.ledger.size());
        let proof = self.ledger.consistency_proof(from, to)?;
        // The log's own key signs a checkpoint of either size (a true
        // statement about its tree), as it does for a receipt.
        let note = |size: u64| (size > 0).then(|| self.note_for_size(size)).transpose();
        Ok(Consistency {
            alg: self.ledger.meta().hash,
            old_size: from,
            new_size: to,
            old_root: self.ledger.root_at(from)?,
            new_root: self.ledger.root_at(to)?,
            proof,
            old_checkpoint: note(from)?,
            new_checkpoint: note(to)?,
        })
    }

    fn trust(&self) -> Result<Option<dlog_crypto::TrustPolicy>> {
        let path = self.dir.join(TRUST_FILE);
        if !path.exists() {
            return Ok(None);
        }
        load_trust(&path).map(Some)
    }
}

/// The embedded default: writing to a directory with no log creates one.
pub(crate) fn open_or_init(dir: &Path) -> Result<LocalLog> {
    if !dir.join(dlog_ledger::store::LOG_FILE).exists() && !dir.join(KEY_FILE).exists() {
        LocalLog::init(
            dir,
            "dlog/local",
            16,
            dlog_ledger::entry::DEFAULT_MAX_PAYLOAD,
            "node-1",
            dlog_crypto::HashAlg::default(),
        )?;
        eprintln!(
            "dlog: created a new log in {} (trust file: {})",
            dir.display(),
            dir.join(TRUST_FILE).display()
        );
    }
    LocalLog::open(dir, OpenMode::ReadWrite)
}
