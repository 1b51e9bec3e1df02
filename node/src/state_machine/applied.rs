//! `raft-applied.json`: what the state machine persists beside the
//! ledger, written only after a ledger sync (in fixed slots, so a torn
//! write leaves the previous copy readable).

use super::{Applied, APPLIED_FILE};
use crate::error::{NodeError, Result};
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Size of one slot of the applied file: room for the session table at its
/// bound ([`crate::session::MAX_RESULTS`]). Slots are written in place and
/// the file is sparse, so only the state's own bytes are written.
pub(super) const SLOT: usize = 4 << 20;

/// The slot size of files written before the session table: their second
/// slot is read there.
pub(super) const LEGACY_SLOT: usize = 32 << 10;

/// Reads the applied state: two slots `len:u32 | crc32c:u32 | json`, the
/// valid one with the higher last applied index wins (a torn write of one
/// slot leaves the other).
pub(super) fn read_applied(dir: &Path) -> Result<Applied> {
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
pub(super) struct AppliedFile {
    file: fs::File,
    path: PathBuf,
    next_slot: u64,
}

impl AppliedFile {
    pub(super) fn open(dir: &Path) -> Result<AppliedFile> {
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

    pub(super) fn write(&mut self, a: &Applied, durable: bool) -> Result<()> {
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

pub(super) fn write_applied(dir: &Path, a: &Applied) -> Result<()> {
    let mut f = AppliedFile::open(dir)?;
    f.write(a, true)?;
    // Both slots hold the same state: a later torn write cannot fall back
    // to something older than this durable point.
    f.write(a, true)
}
