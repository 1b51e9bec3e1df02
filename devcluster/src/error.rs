//! The developer cluster's error type.

use std::path::{Path, PathBuf};

/// Everything that can go wrong generating, starting or changing a
/// developer cluster. Messages read like the node's own.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file of the cluster is missing, malformed, or in the way.
    #[error("config {}: field `{field}`: {detail}", file.display())]
    Config {
        /// The file.
        file: PathBuf,
        /// The field (or `-` for the whole file).
        field: String,
        /// What is wrong.
        detail: String,
    },
    /// A file operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A node process could not be started, signalled or stopped.
    #[error("process: {0}")]
    Process(String),
    /// A bounded wait ran out.
    #[error("timed out: {0}")]
    Timeout(String),
    /// No leader was elected in time.
    #[error("no leader available: {0}")]
    NoLeader(String),
    /// Calling the cluster failed.
    #[error(transparent)]
    Client(#[from] dlog_client::Error),
    /// Making or writing a WireGuard key failed.
    #[error("transport: {0}")]
    Transport(#[from] dlog_wg::Error),
    /// Writing a file through the ledger's helpers failed.
    #[error(transparent)]
    Ledger(#[from] dlog_ledger::LedgerError),
}

impl Error {
    /// An [`Error::Io`] maker for `map_err`.
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }

    /// An [`Error::Config`] naming the file and the field.
    pub(crate) fn config(file: &Path, field: &str, detail: impl std::fmt::Display) -> Error {
        Error::Config {
            file: file.to_path_buf(),
            field: field.to_string(),
            detail: detail.to_string(),
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
