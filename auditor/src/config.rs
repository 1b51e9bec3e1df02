//! `auditor.toml`: who the auditor is, which cluster it follows, where it
//! keeps its state.
//!
//! ```toml
//! name = "auditor-1"          # its name in peers.toml and trust.toml
//! wg_key = "wg.key"           # WireGuard + ML-KEM key (role auditor in peers.toml)
//! key = "auditor.key"         # ed25519 cosigning key (dlog keys format), named `name`
//! peers = "../peers.toml"
//! nodes = ["node-1", "node-2", "node-3"]   # every voter: an alarm needs all to fail
//! trust = "../trust.toml"     # must list this auditor's cosigner key
//! state_dir = "state"
//! poll_ms = 1000              # longest wait for a new checkpoint between rounds
//! # listen = "127.0.0.1:0"   max_payload = 1048576   batch = 4096   timeout_ms = 15000
//!
//! # Optional: witness other logs over C2SP tlog-witness, in this process
//! # (the keys of witness.toml; see crate::witness::config).
//! # [witness]
//! # name = "witness.example/w1"   key = "witness.key"   state_dir = "witness"
//! # [[witness.log]]
//! # origin = "example.com/log"    vkey = "example.com/log+abcd1234+AW..."
//!
//! # Optional: external C2SP witnesses asked to cosign what this auditor
//! # cosigned (their vkeys must be auditors in trust.toml).
//! # [[external_witness]]
//! # url = "https://witness.example/w1"   vkey = "witness.example/w1+0123abcd+BA..."
//! ```
//!
//! Relative paths are relative to the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dlog_client::config::TrustFileError;
use dlog_crypto::keys::NodeKey;
use dlog_crypto::trust::TrustPolicy;
use serde::Deserialize;

/// A config error: the file, the field and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{}: {field}: {detail}", file.display())]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// The field (`-` for the whole file).
    pub field: String,
    /// What is wrong.
    pub detail: String,
}

fn err(file: &Path, field: &str, detail: impl std::fmt::Display) -> ConfigError {
    ConfigError {
        file: file.to_path_buf(),
        field: field.into(),
        detail: detail.to_string(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditorToml {
    name: String,
    wg_key: PathBuf,
    key: PathBuf,
    peers: PathBuf,
    nodes: Vec<String>,
    trust: PathBuf,
    state_dir: PathBuf,
    poll_ms: Option<u64>,
    listen: Option<String>,
    rpc_port: Option<u16>,
    max_payload: Option<u32>,
    batch: Option<u32>,
    timeout_ms: Option<u64>,
    witness: Option<crate::witness::config::WitnessToml>,
    #[serde(default)]
    external_witness: Vec<ExternalToml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExternalToml {
    url: String,
    vkey: String,
}

/// A parsed and checked `auditor.toml`.
#[derive(Debug, Clone)]
pub struct AuditorConfig {
    /// The file.
    pub file: PathBuf,
    /// The auditor's name.
    pub name: String,
    /// WireGuard key file.
    pub wg_key: PathBuf,
    /// Cosigning key.
    pub key: NodeKey,
    /// Peer table.
    pub peers: PathBuf,
    /// Nodes to read from, in turn.
    pub nodes: Vec<String>,
    /// The trust file.
    pub trust: TrustPolicy,
    /// Where the state file lives.
    pub state_dir: PathBuf,
    /// Pause between rounds once caught up.
    pub poll: Duration,
    /// UDP bind address.
    pub listen: SocketAddr,
    /// Node service port.
    pub rpc_port: u16,
    /// The log's payload limit.
    pub max_payload: u32,
    /// Entries per read.
    pub batch: u32,
    /// Deadline of one call.
    pub timeout: Duration,
    /// A C2SP tlog-witness for other logs, served by this process (the
    /// `[witness]` section, with the keys of `witness.toml`).
    pub witness: Option<crate::witness::config::WitnessConfig>,
    /// External C2SP witnesses this auditor asks to cosign the checkpoints
    /// it cosigned (`[[external_witness]]`: `url`, `vkey`); each key must
    /// be one of the trust file's auditors, or its cosignatures would not
    /// count.
    pub external_witnesses: Vec<crate::witness::bridge::ExternalWitness>,
}

impl AuditorConfig {
    /// Reads and checks `file`: the keys load, the key is named after the
    /// auditor, and the trust file lists its cosigner key.
    pub fn load(file: &Path) -> Result<AuditorConfig, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| err(file, "-", e))?;
        // toml's message names a missing or unknown field itself.
        let t: AuditorToml = toml::from_str(&text).map_err(|e| err(file, "-", e.message()))?;
        let base = file.parent().unwrap_or(Path::new("."));
        let rel = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        if t.nodes.is_empty() {
            return Err(err(file, "nodes", "lists no node"));
        }
        // An alarm needs every listed node to fail: each must count once.
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = t.nodes.iter().find(|n| !seen.insert(n.as_str())) {
            return Err(err(file, "nodes", format!("lists {dup:?} twice")));
        }
        let key_path = rel(&t.key);
        let key_text = std::fs::read_to_string(&key_path)
            .map_err(|e| err(file, "key", format!("{}: {e}", key_path.display())))?;
        let key = NodeKey::from_toml_str(&key_text)
            .map_err(|e| err(file, "key", format!("{}: {e}", key_path.display())))?;
        if key.name() != t.name {
            return Err(err(
                file,
                "key",
                format!(
                    "the key is named {:?}, the auditor {:?}",
                    key.name(),
                    t.name
                ),
            ));
        }
        let trust_path = rel(&t.trust);
        let trust = dlog_client::config::read_trust(&trust_path).map_err(|e| match e {
            TrustFileError::Read(e) => err(file, "trust", format!("{}: {e}", trust_path.display())),
            TrustFileError::Parse(e) => err(&trust_path, "-", e),
        })?;
        let mine = key.cosigner().verifier();
        if !trust.auditors.iter().any(|a| a == &mine) {
            return Err(err(
                file,
                "key",
                format!(
                    "{} does not list this auditor's cosigner key {} (nodes would refuse its cosignatures)",
                    trust_path.display(),
                    key.cosigner_vkey()
                ),
            ));
        }
        let listen_s = t.listen.unwrap_or_else(|| "127.0.0.1:0".into());
        let listen = listen_s
            .parse()
            .map_err(|e| err(file, "listen", format!("{listen_s:?}: {e}")))?;
        let witness = t
            .witness
            .map(|w| crate::witness::config::WitnessConfig::from_toml(file, w))
            .transpose()?;
        let mut external_witnesses = Vec::new();
        for (i, e) in t.external_witness.into_iter().enumerate() {
            let field = format!("external_witness[{i}]");
            let verifier = dlog_crypto::note::CosignatureVerifier::from_vkey(&e.vkey)
                .map_err(|x| err(file, &field, format!("vkey {:?}: {x}", e.vkey)))?;
            if !trust.auditors.iter().any(|a| a == &verifier) {
                return Err(err(
                    file,
                    &field,
                    format!(
                        "{} does not list {} among its auditors, so its cosignatures would not count",
                        trust_path.display(),
                        e.vkey
                    ),
                ));
            }
            if !(e.url.starts_with("http://") || e.url.starts_with("https://")) {
                return Err(err(file, &field, format!("url {:?} is not http(s)", e.url)));
            }
            external_witnesses.push(crate::witness::bridge::ExternalWitness {
                url: e.url,
                verifier,
            });
        }
        let batch = t.batch.unwrap_or(4096);
        if batch == 0 {
            return Err(err(file, "batch", "must be at least 1"));
        }
        Ok(AuditorConfig {
            file: file.to_path_buf(),
            name: t.name,
            wg_key: rel(&t.wg_key),
            key,
            peers: rel(&t.peers),
            nodes: t.nodes,
            trust,
            state_dir: rel(&t.state_dir),
            poll: Duration::from_millis(t.poll_ms.unwrap_or(1000)),
            listen,
            rpc_port: t.rpc_port.unwrap_or(dlog_client::RPC_PORT),
            max_payload: t
                .max_payload
                .unwrap_or(dlog_ledger::entry::DEFAULT_MAX_PAYLOAD),
            batch,
            timeout: Duration::from_millis(t.timeout_ms.unwrap_or(15_000)),
            witness,
            external_witnesses,
        })
    }

    /// The client config the auditor's tunnel uses.
    pub fn client_config(&self) -> dlog_client::ClientConfig {
        dlog_client::ClientConfig {
            file: self.file.clone(),
            wg_key: self.wg_key.clone(),
            peers: self.peers.clone(),
            nodes: self.nodes.clone(),
            trust: None,
            rpc_port: self.rpc_port,
            timeout: self.timeout,
            attempt: Duration::from_millis(1500).min(self.timeout),
            // A daemon that outlives outages: it waits out its own
            // deadline and tries again, never fails fast.
            unreachable: self.timeout,
            listen: self.listen,
            mtu: dlog_client::config::DEFAULT_MTU,
        }
    }
}
