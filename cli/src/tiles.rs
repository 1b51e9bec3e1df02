//! `dlog tiles`: publish a log as C2SP tlog-tiles (from a local data
//! directory or from a cluster), check published tiles, and open them as a
//! source of proofs.

use crate::backend::{self, LocalLog, Remote, Target};
use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use dlog_crypto::tree::AlgTree;
use dlog_crypto::{Hash, HashAlg};
use dlog_ledger::tiles::{self, ExportReport, TreeSource, TILE_WIDTH};
use dlog_ledger::{LedgerError, OpenMode};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `dlog tiles ...`.
#[derive(Subcommand)]
pub enum TilesCmd {
    /// Write the log, up to its latest checkpoint, as tiles into --out:
    /// new full tiles, every partial one, then the checkpoint. A second run
    /// writes only what changed. With --cluster, the log is fetched from
    /// the cluster's nodes and checked against the signed checkpoint (under
    /// the trust file client.toml names) before anything is written.
    Export {
        /// The tiles directory.
        #[arg(long)]
        out: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild the tree from the tiles alone and check it against their
    /// signed checkpoint; names the first bad tile. Exit 1 on damage.
    Verify {
        /// The tiles directory.
        dir: PathBuf,
        /// The log's trust file.
        #[arg(long)]
        trust: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `dlog tiles` command.
pub fn run(target: &Target, cmd: TilesCmd) -> Result<ExitCode> {
    match cmd {
        TilesCmd::Export { out, json } => export(target, &out, json),
        TilesCmd::Verify { dir, trust, json } => verify(&dir, &trust, json),
    }
}

fn export(target: &Target, out: &Path, json: bool) -> Result<ExitCode> {
    let started = std::time::Instant::now();
    let r = match target.cluster {
        Some(c) => export_cluster(&Remote::open(c)?, out)?,
        None => {
            let log = LocalLog::open(target.dir, OpenMode::ReadOnly)?;
            tiles::export(&log.ledger, out)?
        }
    };
    let secs = started.elapsed().as_secs_f64();
    if json {
        println!(
            "{}",
            serde_json::json!({"size": r.size, "written": r.written, "kept": r.kept, "bytes": r.bytes, "seconds": secs})
        );
    } else {
        println!(
            "exported tree size {} to {}: {} tiles written ({} bytes), {} full tiles kept, in {secs:.2} s",
            r.size,
            out.display(),
            r.written,
            r.bytes,
            r.kept
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A log read from a cluster (and from the full entry bundles already
/// published in the tiles directory), whose tree was checked against the
/// signed checkpoint before the export reads it.
struct Fetched {
    origin: String,
    tree: AlgTree,
    /// Entries `first..` as the cluster served them (those before `first`
    /// came from published bundles and are never rewritten).
    first: u64,
    entries: Vec<Vec<u8>>,
}

impl TreeSource for Fetched {
    fn origin(&self) -> &str {
        &self.origin
    }

    fn node(&mut self, level: u32, index: u64) -> dlog_ledger::Result<Hash> {
        let size = self.tree.len();
        self.tree
            .node(level, index)
            .ok_or(LedgerError::NoSuchEntry { index, size })
    }

    fn entry(&mut self, index: u64) -> dlog_ledger::Result<Vec<u8>> {
        index
            .checked_sub(self.first)
            .and_then(|k| self.entries.get(k as usize))
            .cloned()
            .ok_or(LedgerError::NoSuchEntry {
                index,
                size: self.tree.len(),
            })
    }
}

/// Entries fetched per call (a node caps a reply in bytes as well).
const FETCH_BATCH: u32 = 4096;

/// `tiles export --cluster`: the cluster's latest checkpoint that meets
/// the client's trust file (cosigned, when it requires cosignatures); the entries (published full bundles
/// reused, the rest fetched); the tree rebuilt and its root compared with
/// the checkpoint's; then the export.
fn export_cluster(remote: &Remote, out: &Path) -> Result<ExportReport> {
    let Some(trust) = remote.trust() else {
        bail!("`tiles export --cluster` publishes only what it has checked: client.toml must name the log's trust file (trust = \"trust.toml\")");
    };
    let alg = trust.hash;
    // What is published must meet the trust file: with cosignatures
    // required, the latest checkpoint the auditors cosigned.
    let served = if trust.cosignatures > 0 {
        remote.witnessed()?
    } else {
        remote.checkpoint(true)?
    };
    let Some(v) = served.verified else {
        bail!(
            "the cluster holds no checkpoint that meets the trust file yet{}",
            if trust.cosignatures > 0 {
                " (none with its auditors' cosignatures)"
            } else {
                "; append an entry first"
            }
        );
    };
    let cp = v.checkpoint();
    let size = cp.size;
    let mut tree = AlgTree::new(alg);
    // Full entry bundles already published: read back, not fetched again.
    // Should one be damaged, the root below will not match.
    while tree.len() + TILE_WIDTH <= size {
        let t = tiles::TilePath {
            kind: tiles::TileKind::Entries,
            index: tree.len() / TILE_WIDTH,
            width: TILE_WIDTH as u16,
        };
        let Ok(bytes) = std::fs::read(out.join(t.path())) else {
            break;
        };
        let bundle = tiles::parse_bundle(&bytes, t.width)
            .map_err(|e| anyhow!("{}: {e}", out.join(t.path()).display()))?;
        for e in bundle {
            tree.push(alg.hash_leaf(e));
        }
    }
    let first = tree.len();
    let mut entries = Vec::with_capacity((size - first) as usize);
    while tree.len() < size {
        let start = tree.len();
        let max = (size - start).min(u64::from(FETCH_BATCH)) as u32;
        let got = remote
            .entries(start, max)
            .with_context(|| format!("fetching entries from {start}"))?;
        for e in got.into_iter().take((size - start) as usize) {
            tree.push(alg.hash_leaf(&e));
            entries.push(e);
        }
    }
    if tree.root() != cp.root {
        bail!(
            "the entries (the cluster's{}) do not hash to the signed checkpoint's root at size {size}; nothing was written{}",
            if first > 0 { ", and the bundles already in the directory" } else { "" },
            if first > 0 {
                format!("; run `dlog tiles verify {}`", out.display())
            } else {
                String::new()
            }
        );
    }
    let mut src = Fetched {
        origin: cp.origin.clone(),
        tree,
        first,
        entries,
    };
    Ok(tiles::export_from(&mut src, out, size, &served.note)?)
}

fn verify(dir: &Path, trust: &Path, json: bool) -> Result<ExitCode> {
    let policy = backend::load_trust(trust)?;
    let cp_path = tiles::checkpoint_path(dir);
    let note = std::fs::read_to_string(&cp_path)
        .with_context(|| format!("cannot read {}", cp_path.display()))?;
    let cp = policy
        .verify_checkpoint(&note)
        .map_err(|e| anyhow!("{}: {e}", cp_path.display()))?;
    let c = cp.checkpoint();
    match tiles::verify(dir, policy.hash, c.size, &c.root) {
        Ok(v) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"verified": true, "size": v.size, "files": v.files})
                );
            } else {
                println!(
                    "verified: {} tiles of {} rebuild its tree of size {} (signed by {})",
                    v.files,
                    c.origin,
                    v.size,
                    cp.signers().join(", ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"verified": false, "error": e.to_string()})
                );
            }
            eprintln!("dlog: DAMAGED: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// Published tiles opened for proofs: their checkpoint verified against
/// the trust file and their hash tiles checked against its root.
pub struct OpenTiles<F> {
    /// Reads nodes, entries and proofs from the tiles.
    pub reader: tiles::TileReader<F>,
    /// The tiles' checkpoint note, as published.
    pub note: String,
    /// Its tree size.
    pub size: u64,
    /// The log's tree hash (from the trust file).
    pub alg: HashAlg,
}

/// Opens published tiles (a directory, or an http(s) URL prefix).
pub fn open(
    tiles: &str,
    trust: &Path,
) -> Result<OpenTiles<impl FnMut(&str) -> std::io::Result<Vec<u8>>>> {
    let policy = backend::load_trust(trust)?;
    let base = tiles.trim_end_matches('/').to_string();
    let remote = base.starts_with("http://") || base.starts_with("https://");
    let fetch = move |path: &str| -> std::io::Result<Vec<u8>> {
        if remote {
            ureq::get(format!("{base}/{path}"))
                .call()
                .map_err(std::io::Error::other)?
                .body_mut()
                .read_to_vec()
                .map_err(std::io::Error::other)
        } else {
            std::fs::read(Path::new(&base).join(path))
        }
    };
    let note =
        String::from_utf8(fetch("checkpoint").with_context(|| format!("{tiles}: checkpoint"))?)
            .map_err(|_| anyhow!("{tiles}: the checkpoint is not UTF-8"))?;
    let v = policy
        .verify_checkpoint(&note)
        .map_err(|e| anyhow!("{tiles}: checkpoint: {e}"))?;
    let size = v.checkpoint().size;
    let mut reader = tiles::TileReader::new(policy.hash, size, fetch);
    // The tiles must hash to the signed root, or nothing they give counts.
    if reader.root_at(size)? != v.checkpoint().root {
        bail!("{tiles}: the hash tiles do not lead to the checkpoint's root");
    }
    Ok(OpenTiles {
        reader,
        note,
        size,
        alg: policy.hash,
    })
}
