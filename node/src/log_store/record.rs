//! The record format of a Raft log file, and the small side files.

use crate::error::{NodeError, Result};
use crate::types::Entry;
use std::fs::{self};
use std::path::Path;

/// Largest record accepted when reading back (a batch is bounded far below).
pub(super) const MAX_RECORD: u32 = 256 << 20;

pub(super) const RECORD_HEADER: usize = 8;

/// Appends one record to `out` (the entry is encoded in place, after a
/// header filled in once its length is known).
pub(super) fn encode_record(out: &mut Vec<u8>, entry: &Entry) -> Result<()> {
    let at = out.len();
    out.extend_from_slice(&[0; RECORD_HEADER]);
    bincode::serialize_into(&mut *out, entry).map_err(|e| NodeError::Protocol(e.to_string()))?;
    let body = &out[at + RECORD_HEADER..];
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&l| l <= MAX_RECORD)
        .ok_or_else(|| NodeError::Protocol(format!("a {} B Raft entry", body.len())))?;
    let crc = crc32c::crc32c(body);
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    out[at + 4..at + 8].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// A guess at an entry's record length, to size the write buffer.
pub(super) fn approx_record_len(e: &Entry) -> usize {
    const OVERHEAD: usize = 64;
    let items = match &e.payload {
        openraft::EntryPayload::Normal(r) => r.items(),
        _ => None,
    };
    RECORD_HEADER + OVERHEAD + items.map_or(0, |i| i.payload_bytes() + 30 * i.len())
}

/// Scans record bytes; returns the entries with their offsets and record
/// lengths, and the valid length.
pub(super) fn scan_records(bytes: &[u8]) -> (Vec<(u64, u64, Entry)>, u64) {
    let mut out = Vec::new();
    let mut off = 0usize;
    while bytes.len() - off >= RECORD_HEADER {
        let len = u32::from_be_bytes(bytes[off..off + 4].try_into().expect("4 bytes"));
        let crc = u32::from_be_bytes(bytes[off + 4..off + 8].try_into().expect("4 bytes"));
        // A zero length is where a preallocated file's unused zeros begin.
        if len == 0 || len > MAX_RECORD || bytes.len() - off - RECORD_HEADER < len as usize {
            break;
        }
        let body = &bytes[off + RECORD_HEADER..off + RECORD_HEADER + len as usize];
        if crc32c::crc32c(body) != crc {
            break;
        }
        let Ok(entry) = bincode::deserialize::<Entry>(body) else {
            break;
        };
        out.push((off as u64, (RECORD_HEADER + len as usize) as u64, entry));
        off += RECORD_HEADER + len as usize;
    }
    (out, off as u64)
}

pub(super) fn read_small<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| NodeError::RaftStore {
                path: path.to_path_buf(),
                detail: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(NodeError::io("read", path)(e)),
    }
}

pub(super) fn write_small<T: serde::Serialize>(path: &Path, v: &T) -> Result<()> {
    let b = serde_json::to_vec(v).map_err(|e| NodeError::Protocol(e.to_string()))?;
    dlog_ledger::store::write_atomic(path, &b)?;
    Ok(())
}
