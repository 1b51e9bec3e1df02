//! `witness.toml` (or the `[witness]` section of `auditor.toml`, same keys):
//!
//! ```toml
//! name = "witness.example/w1"   # the cosigner key's name
//! key = "witness.key"           # ed25519 key (dlog keys format), mode 0600
//! listen = "127.0.0.1:7380"     # HTTP; loopback unless named otherwise
//! state_dir = "state"           # what was last cosigned, per origin
//!
//! [[log]]
//! origin = "example.com/log"
//! vkey = "example.com/log+abcd1234+AW..."   # or vkeys = [...]
//! # quorum = 1       distinct keys that must have signed (default 1)
//! # hash = "sha256"  RFC 6962 (default); "blake3" for a DLog BLAKE3 log
//! ```
//!
//! Relative paths are relative to the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use dlog_crypto::keys::NodeKey;
use dlog_crypto::note::{Cosigner, NoteVerifier};
use dlog_crypto::HashAlg;
use serde::Deserialize;

use super::protocol::WitnessedLog;
use crate::config::ConfigError;

/// The default listen address (loopback).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7380";

/// The file's keys, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessToml {
    name: String,
    key: PathBuf,
    listen: Option<String>,
    state_dir: PathBuf,
    #[serde(default, rename = "log")]
    logs: Vec<LogToml>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogToml {
    origin: String,
    vkey: Option<String>,
    #[serde(default)]
    vkeys: Vec<String>,
    quorum: Option<usize>,
    hash: Option<String>,
}

/// A parsed and checked witness configuration.
#[derive(Debug, Clone)]
pub struct WitnessConfig {
    /// The file it came from.
    pub file: PathBuf,
    /// The witness's cosigning key.
    pub cosigner: Cosigner,
    /// Its C2SP cosigner vkey (`name+id+base64(0x04 ‖ key)`).
    pub vkey: String,
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Where the per-origin state lives.
    pub state_dir: PathBuf,
    /// The logs it witnesses.
    pub logs: Vec<WitnessedLog>,
}

fn err(file: &Path, field: &str, detail: impl std::fmt::Display) -> ConfigError {
    ConfigError {
        file: file.to_path_buf(),
        field: field.into(),
        detail: detail.to_string(),
    }
}

impl WitnessConfig {
    /// Reads and checks a `witness.toml`, or the `[witness]` section of
    /// an `auditor.toml`.
    pub fn load(file: &Path) -> Result<WitnessConfig, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| err(file, "-", e))?;
        let value: toml::Table = toml::from_str(&text).map_err(|e| err(file, "-", e.message()))?;
        let t: WitnessToml = match value.get("witness") {
            // An auditor.toml (it has a wg_key) with a [witness] section.
            Some(section) if value.contains_key("wg_key") => section
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| err(file, "witness", e.message()))?,
            _ => toml::from_str(&text).map_err(|e| err(file, "-", e.message()))?,
        };
        Self::from_toml(file, t)
    }

    /// Checks the keys of a witness file (or section) read from `file`:
    /// the key loads and is named `name`, every log has a valid origin and
    /// at least `quorum` keys, no origin is listed twice.
    pub fn from_toml(file: &Path, t: WitnessToml) -> Result<WitnessConfig, ConfigError> {
        let base = file.parent().unwrap_or(Path::new("."));
        let rel = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let key_path = rel(&t.key);
        let key_text = dlog_ledger::fsutil::read_secret(&key_path)
            .map_err(|e| err(file, "key", format!("{}: {e}", key_path.display())))?;
        let key = NodeKey::from_toml_str(&key_text)
            .map_err(|e| err(file, "key", format!("{}: {e}", key_path.display())))?;
        if key.name() != t.name {
            return Err(err(
                file,
                "key",
                format!(
                    "the key is named {:?}, the witness {:?}",
                    key.name(),
                    t.name
                ),
            ));
        }
        let listen_s = t.listen.unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen = listen_s
            .parse()
            .map_err(|e| err(file, "listen", format!("{listen_s:?}: {e}")))?;
        let mut logs: Vec<WitnessedLog> = Vec::new();
        for (i, l) in t.logs.into_iter().enumerate() {
            let field = format!("log[{i}]");
            dlog_crypto::note::check_key_name(&l.origin)
                .map_err(|e| err(file, &field, format!("origin {:?}: {e}", l.origin)))?;
            if logs.iter().any(|x| x.origin == l.origin) {
                return Err(err(
                    file,
                    &field,
                    format!("origin {:?} is listed twice", l.origin),
                ));
            }
            let mut keys = Vec::new();
            for v in l.vkey.iter().chain(&l.vkeys) {
                let k = NoteVerifier::from_vkey(v)
                    .map_err(|e| err(file, &field, format!("vkey {v:?}: {e}")))?;
                keys.push(k);
            }
            let quorum = l.quorum.unwrap_or(1);
            if keys.is_empty() || quorum == 0 || quorum > keys.len() {
                return Err(err(
                    file,
                    &field,
                    format!(
                        "needs vkey (or vkeys) and 1 <= quorum <= keys; has {} keys, quorum {quorum}",
                        keys.len()
                    ),
                ));
            }
            let hash = match l.hash.as_deref() {
                None => HashAlg::Sha256,
                Some(h) => h
                    .parse()
                    .map_err(|e| err(file, &field, format!("hash {h:?}: {e}")))?,
            };
            logs.push(WitnessedLog {
                origin: l.origin,
                keys,
                quorum,
                hash,
            });
        }
        Ok(WitnessConfig {
            file: file.to_path_buf(),
            cosigner: key.cosigner(),
            vkey: key.cosigner_vkey(),
            listen,
            state_dir: rel(&t.state_dir),
            logs,
        })
    }
}

/// `dlog witness init`: writes `dir/witness.toml` (no logs yet) and
/// `dir/witness.key` (0600); returns the cosigner vkey. Refuses to
/// overwrite either.
pub fn init(dir: &Path, name: &str, listen: Option<&str>) -> Result<String, ConfigError> {
    let file = dir.join("witness.toml");
    let key_path = dir.join("witness.key");
    for p in [&file, &key_path] {
        if p.exists() {
            return Err(err(p, "-", "exists; not overwritten"));
        }
    }
    let listen = listen.unwrap_or(DEFAULT_LISTEN);
    listen
        .parse::<SocketAddr>()
        .map_err(|e| err(&file, "listen", format!("{listen:?}: {e}")))?;
    let key = NodeKey::generate(name).map_err(|e| err(&file, "name", e))?;
    std::fs::create_dir_all(dir).map_err(|e| err(dir, "-", e))?;
    dlog_ledger::fsutil::write_secret(&key_path, key.to_toml_string().as_bytes())
        .map_err(|e| err(&key_path, "-", e))?;
    let text = format!(
        "# A C2SP tlog-witness (dlog witness run --config {}).\n\
         name = {name:?}\n\
         key = \"witness.key\"\n\
         listen = {listen:?}\n\
         state_dir = \"state\"\n\
         \n\
         # One table per log witnessed:\n\
         # [[log]]\n\
         # origin = \"example.com/log\"\n\
         # vkey = \"example.com/log+abcd1234+AW...\"   # or vkeys = [...]; quorum = 1\n\
         # hash = \"sha256\"                          # default; \"blake3\" for a DLog BLAKE3 log\n",
        file.display()
    );
    dlog_ledger::fsutil::write_atomic(&file, text.as_bytes()).map_err(|e| err(&file, "-", e))?;
    Ok(key.cosigner_vkey())
}
