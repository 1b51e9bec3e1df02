//! The node's error type.

use std::path::PathBuf;

/// Everything that can go wrong in a node, its client or the cluster helpers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// A configuration file is missing, unreadable or malformed.
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
    /// The ledger refused or failed.
    #[error(transparent)]
    Ledger(#[from] dlog_ledger::LedgerError),
    /// The transport failed.
    #[error("transport: {0}")]
    Transport(#[from] dlog_wg::Error),
    /// A stored Raft file is damaged.
    #[error("raft storage {}: {detail}", path.display())]
    RaftStore {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// Raft refused or failed.
    #[error("raft: {0}")]
    Raft(String),
    /// The caller's role does not allow the call.
    #[error("refused: peer {peer} has role {role}, which may not call {call}")]
    Refused {
        /// The peer's name.
        peer: String,
        /// Its role.
        role: String,
        /// The call.
        call: &'static str,
    },
    /// The data directory holds the ledger of another log (`log.toml` names
    /// another log id or origin than the config).
    #[error("{}: {detail}", ledger.display())]
    ForeignData {
        /// The ledger's `log.toml`.
        ledger: PathBuf,
        /// Both logs.
        detail: String,
    },
    /// A call to another node (or a file a client shares with the node)
    /// failed: the client library's error, as it is.
    #[error(transparent)]
    Client(#[from] dlog_client::Error),
    /// A malformed frame or message.
    #[error("protocol: {0}")]
    Protocol(String),
    /// No leader is known or reachable.
    #[error("no leader available: {0}")]
    NoLeader(String),
    /// This replica computed a different root from the cluster and stopped serving.
    #[error("replica diverged: {0}")]
    Diverged(String),
    /// A bounded wait ran out.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A checkpoint or signature did not verify.
    #[error("verification failed: {0}")]
    Verify(String),
    /// A child process could not be started or stopped.
    #[error("process: {0}")]
    Process(String),
}

impl NodeError {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> NodeError {
        let path = path.into();
        move |source| NodeError::Io { op, path, source }
    }

    pub(crate) fn config(
        file: &std::path::Path,
        field: &str,
        detail: impl std::fmt::Display,
    ) -> NodeError {
        NodeError::Config {
            file: file.to_path_buf(),
            field: field.to_string(),
            detail: detail.to_string(),
        }
    }
}

/// Result with [`NodeError`].
pub type Result<T, E = NodeError> = std::result::Result<T, E>;
