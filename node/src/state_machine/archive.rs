//! The files of a snapshot: the ledger's immutable files and its open
//! segment, listed for the archive builder.

use super::Applied;
use crate::error::{NodeError, Result};
use crate::snapshot::{ArchiveBuilder, Parts};
use std::fs::{self};
use std::path::Path;

/// A snapshot archive of the ledger directory `dir` as it is now (the caller
/// holds the state lock, so nothing is appended meanwhile): the applied
/// state, the log meta and checkpoint by value, every segment and side file
/// by reference with its current length (no lock or temp files).
pub(super) fn archive(dir: &Path, applied: &Applied) -> Result<Parts> {
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
pub(super) fn allowed_in_snapshot(rel: &str) -> bool {
    rel == dlog_ledger::store::LOG_FILE
        || rel == dlog_ledger::store::CHECKPOINT_FILE
        || rel
            .strip_prefix("segments/")
            .is_some_and(|n| !n.contains('/') && !n.starts_with('.') && !n.is_empty())
}
