//! The client's error type.

use std::path::PathBuf;

use crate::wire::RpcError;

/// Everything that can go wrong calling a cluster, or loading what a
/// client (or a node) needs to call one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
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
    /// The transport failed.
    #[error("transport: {0}")]
    Transport(#[from] dlog_wg::Error),
    /// A node answered with an error.
    #[error("remote error ({:?}): {}{}", .0.code, .0.message, leader_hint(.0))]
    Remote(RpcError),
    /// A malformed frame or message.
    #[error("protocol: {0}")]
    Protocol(String),
    /// No leader is known or reachable.
    #[error("no leader available: {0}")]
    NoLeader(String),
    /// A bounded wait ran out.
    #[error("timed out: {0}")]
    Timeout(String),
    /// No node answered at all, not even with a WireGuard handshake or a
    /// refusal, within the client's `unreachable_ms`: the cluster is down
    /// or not where the config says.
    #[error(
        "no node answered within {:.1} s; tried {} (is the cluster running, at these addresses, and does it know this client's key? `dlog cluster status`)",
        .waited.as_secs_f64(),
        .tried.join("; ")
    )]
    Unreachable {
        /// How long the client waited.
        waited: std::time::Duration,
        /// Each node tried: its name, its UDP address and what happened.
        tried: Vec<String>,
    },
    /// A checkpoint or signature did not verify.
    #[error("verification failed: {0}")]
    Verify(String),
    /// The operating system refused something that is not a file (random
    /// numbers, a child process).
    #[error("process: {0}")]
    Process(String),
}

fn leader_hint(e: &RpcError) -> String {
    e.leader
        .as_ref()
        .map(|l| format!(" (leader: {l})"))
        .unwrap_or_default()
}

impl Error {
    /// An [`Error::Io`] maker for `map_err`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }

    /// An [`Error::Config`] naming the file and the field.
    pub fn config(file: &std::path::Path, field: &str, detail: impl std::fmt::Display) -> Error {
        Error::Config {
            file: file.to_path_buf(),
            field: field.to_string(),
            detail: detail.to_string(),
        }
    }

    /// The node's refusal, when this is one.
    pub fn remote(&self) -> Option<&RpcError> {
        match self {
            Error::Remote(e) => Some(e),
            _ => None,
        }
    }
}

impl From<RpcError> for Error {
    fn from(e: RpcError) -> Self {
        Error::Remote(e)
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
