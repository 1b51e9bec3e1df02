//! `client.toml`, and the loaders of the files a client and a node both
//! read (peer table, WireGuard key, trust file). Relative paths are
//! relative to the directory of the file that names them. Errors name the
//! file and the field.
//!
//! ```toml
//! wg_key = "client.key"
//! peers = "peers.toml"
//! nodes = ["node-1", "node-2", "node-3"]
//! trust = "trust.toml"            # optional: verify checkpoints
//! rpc_port = 7000                 # optional
//! timeout_ms = 15000              # optional, per operation (all retries)
//! attempt_ms = 1500               # optional, one attempt on one node
//! unreachable_ms = 3000           # optional: no node answering this long is an error
//! # listen = "127.0.0.1:0"        # optional UDP bind address
//! # mtu = 1420                     # optional tunnel MTU (default 65000; see `ClientConfig::mtu`)
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::wire::RPC_PORT;

/// `p`, relative to `base` unless it is absolute.
pub fn rel(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Reads a config file, naming it on error.
pub fn read(file: &Path) -> Result<String> {
    std::fs::read_to_string(file).map_err(|e| Error::config(file, "-", format!("cannot read: {e}")))
}

/// Extracts the field name from a toml error message when it names one.
pub fn toml_err(file: &Path, e: toml::de::Error) -> Error {
    let msg = e.message().to_string();
    let field = msg
        .split('`')
        .nth(1)
        .map(str::to_string)
        .unwrap_or_else(|| "-".into());
    Error::config(file, &field, e.to_string().trim())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientToml {
    wg_key: PathBuf,
    peers: PathBuf,
    nodes: Vec<String>,
    trust: Option<PathBuf>,
    rpc_port: Option<u16>,
    timeout_ms: Option<u64>,
    attempt_ms: Option<u64>,
    unreachable_ms: Option<u64>,
    listen: Option<String>,
    mtu: Option<usize>,
}

/// A parsed `client.toml`.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The file.
    pub file: PathBuf,
    /// WireGuard key file of the client.
    pub wg_key: PathBuf,
    /// Peer table.
    pub peers: PathBuf,
    /// Node names to call, in order of preference.
    pub nodes: Vec<String>,
    /// Trust file, to verify checkpoints.
    pub trust: Option<PathBuf>,
    /// Node service port.
    pub rpc_port: u16,
    /// Per-operation deadline.
    pub timeout: std::time::Duration,
    /// Longest single attempt on one node before trying the next.
    pub attempt: std::time::Duration,
    /// When no node has answered (not even with a handshake or a refusal)
    /// for this long, a call fails with [`Error::Unreachable`] instead of
    /// waiting out `timeout`. `DLOG_UNREACHABLE_MS` overrides the file.
    pub unreachable: std::time::Duration,
    /// UDP bind address.
    pub listen: SocketAddr,
    /// The tunnel's MTU: [`DEFAULT_MTU`] (loopback, LAN), or 1420 across a
    /// WAN, a smaller path MTU or a traffic shaper (as the nodes' own).
    pub mtu: usize,
}

/// The tunnel MTU nodes and clients use unless their config says
/// otherwise: one datagram carries a whole frame on loopback or a LAN.
pub const DEFAULT_MTU: usize = 65_000;

/// A config's `mtu` (or the default), checked: the range the tunnel takes.
pub fn mtu(configured: Option<usize>) -> std::result::Result<usize, &'static str> {
    match configured.unwrap_or(DEFAULT_MTU) {
        m @ 576..=65_000 => Ok(m),
        _ => Err("must be in 576..=65000"),
    }
}

/// The client's "no node answered" bound in milliseconds: the
/// `DLOG_UNREACHABLE_MS` environment variable, else the file's value, else
/// 3,000.
fn unreachable_ms(configured: Option<u64>) -> std::result::Result<u64, String> {
    let ms = match std::env::var("DLOG_UNREACHABLE_MS") {
        Ok(v) => v
            .parse::<u64>()
            .map_err(|_| format!("DLOG_UNREACHABLE_MS={v:?} is not a number of milliseconds"))?,
        Err(_) => configured.unwrap_or(3_000),
    };
    if ms < 100 {
        return Err(format!(
            "{ms} ms is too short for a WireGuard handshake (at least 100)"
        ));
    }
    Ok(ms)
}

impl ClientConfig {
    /// Reads and checks a client config file.
    pub fn load(file: &Path) -> Result<ClientConfig> {
        let text = read(file)?;
        let t: ClientToml = toml::from_str(&text).map_err(|e| toml_err(file, e))?;
        let base = file.parent().unwrap_or(Path::new("."));
        if t.nodes.is_empty() {
            return Err(Error::config(file, "nodes", "lists no node"));
        }
        let listen_s = t.listen.unwrap_or_else(|| "127.0.0.1:0".into());
        let listen = listen_s
            .parse()
            .map_err(|e| Error::config(file, "listen", format!("{listen_s:?}: {e}")))?;
        Ok(ClientConfig {
            file: file.to_path_buf(),
            wg_key: rel(base, &t.wg_key),
            peers: rel(base, &t.peers),
            nodes: t.nodes,
            trust: t.trust.map(|p| rel(base, &p)),
            rpc_port: t.rpc_port.unwrap_or(RPC_PORT),
            timeout: std::time::Duration::from_millis(t.timeout_ms.unwrap_or(15_000)),
            attempt: std::time::Duration::from_millis(t.attempt_ms.unwrap_or(1_500)),
            unreachable: std::time::Duration::from_millis(
                unreachable_ms(t.unreachable_ms)
                    .map_err(|e| Error::config(file, "unreachable_ms", e))?,
            ),
            listen,
            mtu: mtu(t.mtu).map_err(|e| Error::config(file, "mtu", e))?,
        })
    }
}

/// Loads a dlog-wg peer table, naming the file on error.
pub fn load_peers(file: &Path, from: &Path, field: &str) -> Result<dlog_wg::config::PeerTable> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Error::config(from, field, format!("cannot read {}: {e}", file.display())))?;
    dlog_wg::config::PeerTable::from_toml_str(&text).map_err(|e| Error::config(file, "peer", e))
}

/// Loads a dlog-wg key file, naming the config field on error.
pub fn load_wg_key(file: &Path, from: &Path, field: &str) -> Result<dlog_wg::keys::KeyFile> {
    dlog_wg::keys::load_key_file(file)
        .map_err(|e| Error::config(from, field, format!("{}: {e}", file.display())))
}

/// Why a trust file could not be loaded: reading it, or what it says.
#[derive(Debug, thiserror::Error)]
pub enum TrustFileError {
    /// The file could not be read.
    #[error("{0}")]
    Read(#[source] std::io::Error),
    /// The file is not a valid trust file.
    #[error("{0}")]
    Parse(#[source] dlog_crypto::trust::TrustError),
}

/// Reads and parses a trust file: the one loader every DLog program uses
/// (each wraps the error in its own terms).
pub fn read_trust(
    file: &Path,
) -> std::result::Result<dlog_crypto::trust::TrustPolicy, TrustFileError> {
    let text = std::fs::read_to_string(file).map_err(TrustFileError::Read)?;
    dlog_crypto::trust::TrustPolicy::from_toml_str(&text).map_err(TrustFileError::Parse)
}

/// Loads a trust file, naming the config file and field on error.
pub fn load_trust(
    file: &Path,
    from: &Path,
    field: &str,
) -> Result<dlog_crypto::trust::TrustPolicy> {
    read_trust(file).map_err(|e| match e {
        TrustFileError::Read(e) => Error::config(from, field, format!("{}: {e}", file.display())),
        TrustFileError::Parse(e) => Error::config(file, "-", e),
    })
}
