//! The ledger's error type.

use std::path::PathBuf;

/// Everything that can go wrong in the ledger.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// An operating-system call failed on a file of the log.
    #[error("{op} {}: {cause}", path.display())]
    Io {
        /// What was being done ("write", "fsync", ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error (part of the message, so not repeated as a source).
        cause: std::io::Error,
    },
    /// No log exists in the directory.
    #[error("no DLog log in {} (run `dlog init` first)", .0.display())]
    NotALog(PathBuf),
    /// `init` on a directory that already holds a log.
    #[error("{} already holds a DLog log", .0.display())]
    AlreadyExists(PathBuf),
    /// Another process holds the writer lock.
    #[error("another process is writing to the log in {} (lock held)", .0.display())]
    Locked(PathBuf),
    /// The log configuration file is malformed.
    #[error("bad log configuration {}: {detail}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A tiles directory (C2SP tlog-tiles) is damaged, or is another log's,
    /// or a log cannot be written as tiles.
    #[error("tiles {}: {detail}", path.display())]
    Tile {
        /// The tile (or the directory).
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A file in the segment directory that the log does not own.
    #[error("unexpected file {} in the segment directory (move it away)", .0.display())]
    ForeignFile(PathBuf),
    /// A segment file that should exist is missing.
    #[error("segment {segment} is missing ({})", path.display())]
    MissingSegment {
        /// The segment number.
        segment: u64,
        /// Where it should be.
        path: PathBuf,
    },
    /// Stored data is damaged; names the segment and, when known, the entry.
    #[error("corruption in segment {segment}{}: {detail}", entry.map(|e| format!(", entry {e}")).unwrap_or_default())]
    Corrupt {
        /// The segment number.
        segment: u64,
        /// The global index of the damaged entry, if one is to blame.
        entry: Option<u64>,
        /// What is wrong.
        detail: String,
    },
    /// An entry index past the end of the log.
    #[error("entry {index} does not exist (the log holds {size} entries)")]
    NoSuchEntry {
        /// The requested index.
        index: u64,
        /// The log size.
        size: u64,
    },
    /// A payload larger than the log's limit.
    #[error("payload of {len} bytes exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// Payload length.
        len: usize,
        /// The limit.
        limit: u32,
    },
    /// A proof request with impossible sizes.
    #[error(transparent)]
    Proof(#[from] dlog_crypto::tree::ProofError),
    /// A checkpoint that disagrees with the log.
    #[error("checkpoint rejected: {0}")]
    Checkpoint(String),
    /// Writes are refused: opened read-only, or an earlier fsync failed.
    #[error("log is not writable: {0}")]
    NotWritable(String),
    /// A repair was refused: what it would have cost, and what to do.
    #[error("repair refused: {0}")]
    RepairRefused(String),
}

impl LedgerError {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |cause| LedgerError::Io { op, path, cause }
    }

    /// True when the error means stored data is damaged.
    pub fn is_corruption(&self) -> bool {
        matches!(self, LedgerError::Corrupt { .. })
    }
}

/// Result alias for the ledger.
pub type Result<T, E = LedgerError> = std::result::Result<T, E>;
