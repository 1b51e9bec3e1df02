//! Peer table and endpoint configuration.
//!
//! The peer table is TOML, one `[[peer]]` table per peer. A table may list
//! the local process too (matched by public key): it is skipped as a peer and
//! its `address` becomes the local tunnel address if none was given, so a
//! whole cluster can share one file.
//!
//! ```toml
//! [[peer]]
//! name = "node-1"
//! public_key = "<base64 X25519 public key>"
//! kem_public_key = "<base64 ML-KEM-768 public key>"   # optional; needed for pq
//! endpoint = "127.0.0.1:51820"                         # optional (learned by roaming)
//! address = "10.77.0.1"                                # tunnel address, unique
//! role = "voter"                  # voter | learner | auditor | client | admin
//! keepalive = 25                  # optional persistent keepalive, seconds
//! ```

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use dlog_crypto::kem::KemPublicKey;

use crate::error::{Error, Result};
use crate::keys::{KeyFile, PeerKey};

/// What a peer may do (enforced by the services above, not by the tunnel).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Raft voter.
    Voter,
    /// Raft learner.
    Learner,
    /// Auditor: read and cosign.
    Auditor,
    /// Client: append and read.
    Client,
    /// Administrator.
    Admin,
}

/// Post-quantum pre-shared-key policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PqMode {
    /// No application byte flows to or from a peer before a PQ key is installed.
    Required,
    /// Traffic flows at once over classical WireGuard; a PQ key is installed
    /// as soon as both sides support it.
    #[default]
    Preferred,
    /// Never run the PQ exchange (and ignore the peer's attempts).
    Off,
}

/// One peer of the table, validated.
#[derive(Clone, Debug)]
pub struct PeerEntry {
    /// Human-readable name (used in logs and errors).
    pub name: String,
    /// X25519 public key.
    pub public_key: PeerKey,
    /// ML-KEM-768 public key, if the peer has one.
    pub kem_public_key: Option<KemPublicKey>,
    /// Initial UDP endpoint (may be absent; learned from authenticated packets).
    pub endpoint: Option<SocketAddr>,
    /// The peer's tunnel address: the only source address accepted from it.
    pub address: Ipv4Addr,
    /// Role.
    pub role: Role,
    /// Persistent keepalive interval in seconds.
    pub keepalive: Option<u16>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PeerToml {
    name: Option<String>,
    public_key: String,
    kem_public_key: Option<String>,
    endpoint: Option<String>,
    address: String,
    role: Role,
    keepalive: Option<u16>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TableToml {
    #[serde(default)]
    peer: Vec<PeerToml>,
}

/// A validated peer table: unique keys, unique addresses, well-formed keys.
#[derive(Clone, Debug, Default)]
pub struct PeerTable {
    peers: Vec<PeerEntry>,
}

impl PeerTable {
    /// Parses and validates a TOML peer table (see the module docs).
    ///
    /// Errors: TOML syntax, malformed keys, bad addresses or endpoints,
    /// duplicate public keys, duplicate tunnel addresses.
    pub fn from_toml_str(s: &str) -> Result<Self> {
        let t: TableToml =
            toml::from_str(s).map_err(|e| Error::Config(format!("peer table: {e}")))?;
        let mut peers = Vec::with_capacity(t.peer.len());
        for (i, p) in t.peer.into_iter().enumerate() {
            let name = p.name.unwrap_or_else(|| format!("peer#{i}"));
            let public_key = PeerKey::from_b64(&p.public_key).map_err(|e| Error::InvalidKey {
                what: format!("public_key of {name}"),
                reason: e.to_string(),
            })?;
            let kem_public_key = match p.kem_public_key {
                None => None,
                Some(k) => {
                    let bytes = B64.decode(k.trim()).map_err(|e| Error::InvalidKey {
                        what: format!("kem_public_key of {name}"),
                        reason: e.to_string(),
                    })?;
                    Some(
                        KemPublicKey::from_bytes(&bytes).map_err(|e| Error::InvalidKey {
                            what: format!("kem_public_key of {name}"),
                            reason: e.to_string(),
                        })?,
                    )
                }
            };
            let endpoint = match p.endpoint {
                None => None,
                Some(e) => Some(
                    e.parse::<SocketAddr>()
                        .map_err(|err| Error::Config(format!("endpoint {e:?} of {name}: {err}")))?,
                ),
            };
            let address = p.address.parse::<Ipv4Addr>().map_err(|err| {
                Error::Config(format!("address {:?} of {name}: {err}", p.address))
            })?;
            peers.push(PeerEntry {
                name,
                public_key,
                kem_public_key,
                endpoint,
                address,
                role: p.role,
                keepalive: p.keepalive,
            });
        }
        Self::from_entries(peers)
    }

    /// Builds a table from entries, with the same validation as TOML input.
    pub fn from_entries(peers: Vec<PeerEntry>) -> Result<Self> {
        let mut keys: HashMap<PeerKey, &str> = HashMap::new();
        let mut addrs: HashMap<Ipv4Addr, &str> = HashMap::new();
        for p in &peers {
            if keys.insert(p.public_key, &p.name).is_some() {
                return Err(Error::DuplicatePeer(format!(
                    "{} ({})",
                    p.public_key, p.name
                )));
            }
            if let Some(first) = addrs.insert(p.address, &p.name) {
                return Err(Error::DuplicateAddress {
                    addr: p.address,
                    first: first.to_string(),
                    second: p.name.clone(),
                });
            }
            if p.address.is_unspecified() || p.address.is_broadcast() || p.address.is_multicast() {
                return Err(Error::Config(format!(
                    "address {} of {} is not a unicast address",
                    p.address, p.name
                )));
            }
        }
        Ok(PeerTable { peers })
    }

    /// The peers, in table order.
    pub fn peers(&self) -> &[PeerEntry] {
        &self.peers
    }

    /// Looks a peer up by public key.
    pub fn get(&self, key: &PeerKey) -> Option<&PeerEntry> {
        self.peers.iter().find(|p| p.public_key == *key)
    }

    /// Looks a peer up by name.
    pub fn by_name(&self, name: &str) -> Option<&PeerEntry> {
        self.peers.iter().find(|p| p.name == name)
    }
}

/// Everything an endpoint needs. Build it with [`Config::new`] and adjust fields.
#[derive(Clone, Debug)]
pub struct Config {
    /// This process's keys.
    pub keys: KeyFile,
    /// Local tunnel address; `None` takes it from the table entry with our key.
    pub address: Option<Ipv4Addr>,
    /// The peer table (an entry with our own key is ignored as a peer).
    pub peers: PeerTable,
    /// Post-quantum policy.
    pub pq: PqMode,
    /// How often the PQ pre-shared key is rotated (default 120 s).
    pub rotation_interval: Duration,
    /// Inner MTU given to the TCP stack (default 1420, at most 65,000).
    pub mtu: usize,
    /// TCP socket buffer size per direction per stream (default 256 KiB).
    pub socket_buffer: usize,
    /// Give up a `connect` after this long (default 10 s).
    pub connect_timeout: Duration,
}

impl Config {
    /// A configuration with defaults: `pq = "preferred"`, rotation 120 s,
    /// MTU 1420, 256 KiB socket buffers, 10 s connect timeout.
    pub fn new(keys: KeyFile, peers: PeerTable) -> Self {
        Config {
            keys,
            address: None,
            peers,
            pq: PqMode::Preferred,
            rotation_interval: Duration::from_secs(120),
            mtu: 1420,
            socket_buffer: 256 << 10,
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// Checks the configuration and resolves the local address; returns the
    /// remote peers (the table minus our own entry).
    pub(crate) fn resolve(&self) -> Result<(Ipv4Addr, Vec<PeerEntry>)> {
        let me = self.keys.public_key();
        let own = self.peers.get(&me);
        let address = match (self.address, own) {
            (Some(a), _) => a,
            (None, Some(e)) => e.address,
            (None, None) => return Err(Error::Config(
                "no local tunnel address: set Config::address or list our key in the peer table"
                    .into(),
            )),
        };
        if !(576..=65_000).contains(&self.mtu) {
            return Err(Error::Config(format!(
                "mtu {} outside 576..=65000",
                self.mtu
            )));
        }
        if self.rotation_interval < Duration::from_millis(100) {
            return Err(Error::Config("rotation_interval below 100 ms".into()));
        }
        let peers: Vec<PeerEntry> = self
            .peers
            .peers()
            .iter()
            .filter(|p| p.public_key != me)
            .cloned()
            .collect();
        if let Some(p) = peers.iter().find(|p| p.address == address) {
            return Err(Error::DuplicateAddress {
                addr: address,
                first: "(local endpoint)".into(),
                second: p.name.clone(),
            });
        }
        Ok((address, peers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::generate;

    fn entry(k: &KeyFile, name: &str, addr: &str) -> String {
        format!(
            "[[peer]]\nname = \"{name}\"\npublic_key = \"{}\"\nkem_public_key = \"{}\"\n\
             endpoint = \"127.0.0.1:5000\"\naddress = \"{addr}\"\nrole = \"voter\"\n",
            k.public_key_b64(),
            k.kem_public_key_b64()
        )
    }

    #[test]
    fn parses_a_table() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        let t =
            PeerTable::from_toml_str(&(entry(&a, "a", "10.0.0.1") + &entry(&b, "b", "10.0.0.2")))
                .unwrap();
        assert_eq!(t.peers().len(), 2);
        assert_eq!(t.get(&b.public_key()).unwrap().name, "b");
        let cfg = Config::new(a.clone(), t);
        let (addr, peers) = cfg.resolve().unwrap();
        assert_eq!(addr, "10.0.0.1".parse::<Ipv4Addr>().unwrap());
        assert_eq!(peers.len(), 1);
    }

    #[test]
    fn duplicate_address_and_key_are_errors() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        let e =
            PeerTable::from_toml_str(&(entry(&a, "a", "10.0.0.1") + &entry(&b, "b", "10.0.0.1")))
                .unwrap_err();
        assert!(matches!(e, Error::DuplicateAddress { .. }), "{e}");
        let e =
            PeerTable::from_toml_str(&(entry(&a, "a", "10.0.0.1") + &entry(&a, "b", "10.0.0.2")))
                .unwrap_err();
        assert!(matches!(e, Error::DuplicatePeer(_)), "{e}");
    }

    #[test]
    fn malformed_keys_are_errors() {
        let a = generate().unwrap();
        let bad = entry(&a, "a", "10.0.0.1").replace(&a.public_key_b64(), "AAAA");
        let e = PeerTable::from_toml_str(&bad).unwrap_err().to_string();
        assert!(e.contains("public_key of a"), "{e}");
        let bad = entry(&a, "a", "10.0.0.1").replace(&a.kem_public_key_b64()[..40], "////");
        assert!(PeerTable::from_toml_str(&bad).is_err());
        let bad = entry(&a, "a", "10.0.0.1").replace("voter", "king");
        assert!(PeerTable::from_toml_str(&bad).is_err());
    }
}
