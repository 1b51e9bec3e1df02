//! The crate's single error type.

use std::net::Ipv4Addr;
use std::path::PathBuf;

/// Everything that can go wrong in `dlog-wg`.
///
/// Network input never produces an `Error` that tears down the endpoint: bad
/// datagrams are dropped and counted (see [`crate::core::Stats`]). Errors are
/// returned for local mistakes (configuration, key files), for a single
/// stream (malformed frame, reset) and for a stopped endpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system IO call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A key file is readable by group or others.
    #[error(
        "key file {path} has mode {mode:o}: it must not be readable by group or others \
         (run `chmod 600 {path}`)"
    )]
    KeyFilePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A key (in a key file or peer table) is malformed.
    #[error("malformed key ({what}): {reason}")]
    InvalidKey {
        /// Which key.
        what: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The configuration (peer table, endpoint settings) is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Two peers in the table claim the same tunnel address.
    #[error("duplicate tunnel address {addr} (peers {first:?} and {second:?})")]
    DuplicateAddress {
        /// The address.
        addr: Ipv4Addr,
        /// The first peer's name.
        first: String,
        /// The second peer's name.
        second: String,
    },
    /// Two peers in the table have the same public key.
    #[error("duplicate peer public key {0}")]
    DuplicatePeer(String),
    /// The named peer is not in the peer table.
    #[error("unknown peer {0}")]
    UnknownPeer(String),
    /// A frame's declared length exceeds the maximum; the stream was closed.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes; stream closed")]
    FrameTooLarge {
        /// Declared length.
        len: u64,
        /// Configured maximum.
        max: usize,
    },
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame ({got} of {expected} bytes)")]
    TruncatedFrame {
        /// Bytes received of the frame (header included).
        got: usize,
        /// Bytes expected.
        expected: usize,
    },
    /// The remote end reset the connection or the tunnel dropped it.
    #[error("connection reset by peer")]
    ConnectionReset,
    /// Nobody listens on that port at the peer (or it refused the stream).
    #[error("connection refused by {peer} (nothing listens on tunnel port {port})")]
    ConnectionRefused {
        /// Peer name.
        peer: String,
        /// Port.
        port: u16,
    },
    /// A connect did not complete in time (tunnel down, peer unreachable or
    /// `pq = "required"` without an installed post-quantum key).
    #[error("connect to {peer} (tunnel port {port}) timed out")]
    ConnectTimeout {
        /// Peer name.
        peer: String,
        /// Port.
        port: u16,
    },
    /// Someone already listens on that port.
    #[error("port {0} is already in use")]
    PortInUse(u16),
    /// The endpoint's driver task has stopped.
    #[error("the WireGuard endpoint is closed")]
    EndpointClosed,
    /// An ML-KEM operation failed.
    #[error("ML-KEM: {0}")]
    Kem(#[from] dlog_crypto::kem::KemError),
}

impl Error {
    /// An IO error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        use std::io::ErrorKind as K;
        let kind = match &e {
            Error::Io { source, .. } => source.kind(),
            Error::ConnectionReset => K::ConnectionReset,
            Error::ConnectionRefused { .. } => K::ConnectionRefused,
            Error::ConnectTimeout { .. } => K::TimedOut,
            Error::FrameTooLarge { .. } | Error::TruncatedFrame { .. } => K::InvalidData,
            Error::EndpointClosed => K::NotConnected,
            _ => K::Other,
        };
        std::io::Error::new(kind, e)
    }
}

/// Shorthand for `Result<T, dlog_wg::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
