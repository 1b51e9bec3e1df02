//! Transport key files: the X25519 WireGuard key and the ML-KEM-768 key.
//!
//! A key file is TOML, mode 0600, and looks like this (the public keys are
//! informational and are checked against the private ones on load):
//!
//! ```toml
//! # DLog transport keys (WireGuard X25519 + ML-KEM-768). SECRET: keep mode 0600.
//! private_key = "<base64, 32 bytes>"
//! kem_seed = "<base64, 64 bytes>"
//! public_key = "<base64, 32 bytes>"
//! kem_public_key = "<base64, 1184 bytes>"
//! ```
//!
//! The CLI (`dlog keys gen`) calls [`generate`], then [`write_key_file`], and
//! prints [`KeyFile::public_key_b64`] and [`KeyFile::kem_public_key_b64`] for
//! the peer table. Processes call [`load_key_file`] at startup; it refuses
//! files that group or others can read.

use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use boringtun::x25519::{PublicKey, StaticSecret};
use dlog_crypto::kem::{KemPublicKey, KemSecretKey, SEED_LEN};

use crate::error::{Error, Result};

/// A peer's X25519 WireGuard public key (32 bytes), the identity of a peer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerKey(pub [u8; 32]);

impl PeerKey {
    /// Parses a standard-base64 encoded 32-byte key.
    pub fn from_b64(s: &str) -> Result<Self> {
        let bytes = B64.decode(s.trim()).map_err(|e| Error::InvalidKey {
            what: "X25519 public key".into(),
            reason: e.to_string(),
        })?;
        let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| Error::InvalidKey {
            what: "X25519 public key".into(),
            reason: format!("expected 32 bytes, got {}", bytes.len()),
        })?;
        Ok(PeerKey(arr))
    }

    /// Standard base64 (the usual WireGuard text form).
    pub fn to_b64(&self) -> String {
        B64.encode(self.0)
    }
}

impl std::fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PeerKey({})", self.to_b64())
    }
}

impl std::fmt::Display for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_b64())
    }
}

/// The secret keys of one process.
#[derive(Clone)]
pub struct KeyFile {
    private: [u8; 32],
    kem: KemSecretKey,
}

impl std::fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyFile")
            .field("public_key", &self.public_key())
            .finish_non_exhaustive()
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFileToml {
    private_key: String,
    kem_seed: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    public_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kem_public_key: Option<String>,
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| Error::InvalidKey {
        what: "key generation".into(),
        reason: format!("operating system RNG failed: {e}"),
    })?;
    Ok(b)
}

/// Generates a fresh key file (X25519 + ML-KEM-768) from OS randomness.
///
/// Pure apart from reading the OS RNG; nothing is written.
pub fn generate() -> Result<KeyFile> {
    Ok(KeyFile::from_secret_bytes(
        random::<32>()?,
        random::<SEED_LEN>()?,
    ))
}

impl KeyFile {
    /// Builds a key file from raw secrets (X25519 private key, ML-KEM seed).
    /// Deterministic; useful for tests.
    pub fn from_secret_bytes(private: [u8; 32], kem_seed: [u8; SEED_LEN]) -> Self {
        // Clamp like WireGuard does so the stored form is canonical.
        let mut p = private;
        p[0] &= 248;
        p[31] &= 127;
        p[31] |= 64;
        KeyFile {
            private: p,
            kem: KemSecretKey::from_seed(kem_seed),
        }
    }

    /// The X25519 public key (this process's identity on the tunnel).
    pub fn public_key(&self) -> PeerKey {
        PeerKey(PublicKey::from(&StaticSecret::from(self.private)).to_bytes())
    }

    /// The X25519 public key in base64, as written in peer tables.
    pub fn public_key_b64(&self) -> String {
        self.public_key().to_b64()
    }

    /// The ML-KEM-768 public (encapsulation) key.
    pub fn kem_public_key(&self) -> KemPublicKey {
        self.kem.public_key()
    }

    /// The ML-KEM-768 public key in base64, as written in peer tables.
    pub fn kem_public_key_b64(&self) -> String {
        B64.encode(self.kem.public_key().as_bytes())
    }

    pub(crate) fn static_secret(&self) -> StaticSecret {
        StaticSecret::from(self.private)
    }

    pub(crate) fn kem_secret(&self) -> &KemSecretKey {
        &self.kem
    }

    /// Serialises to the TOML key-file text (contains secrets).
    pub fn to_toml_string(&self) -> String {
        let t = KeyFileToml {
            private_key: B64.encode(self.private),
            kem_seed: B64.encode(self.kem.seed()),
            public_key: Some(self.public_key_b64()),
            kem_public_key: Some(self.kem_public_key_b64()),
        };
        let body = toml::to_string(&t).unwrap_or_default();
        format!(
            "# DLog transport keys (WireGuard X25519 + ML-KEM-768). SECRET: keep mode 0600.\n{body}"
        )
    }

    /// Parses key-file TOML. Malformed or inconsistent keys are clear errors.
    pub fn from_toml_str(s: &str) -> Result<Self> {
        let t: KeyFileToml = toml::from_str(s).map_err(|e| Error::InvalidKey {
            what: "key file".into(),
            reason: e.to_string(),
        })?;
        let private = decode_fixed::<32>("private_key", &t.private_key)?;
        let seed = decode_fixed::<SEED_LEN>("kem_seed", &t.kem_seed)?;
        let kf = KeyFile::from_secret_bytes(private, seed);
        if kf.private != private {
            return Err(Error::InvalidKey {
                what: "private_key".into(),
                reason: "not a clamped X25519 private key".into(),
            });
        }
        if let Some(p) = &t.public_key {
            if PeerKey::from_b64(p)? != kf.public_key() {
                return Err(Error::InvalidKey {
                    what: "public_key".into(),
                    reason: "does not match private_key".into(),
                });
            }
        }
        if let Some(p) = &t.kem_public_key {
            if p.trim() != kf.kem_public_key_b64() {
                return Err(Error::InvalidKey {
                    what: "kem_public_key".into(),
                    reason: "does not match kem_seed".into(),
                });
            }
        }
        Ok(kf)
    }
}

fn decode_fixed<const N: usize>(what: &str, s: &str) -> Result<[u8; N]> {
    let bytes = B64.decode(s.trim()).map_err(|e| Error::InvalidKey {
        what: what.into(),
        reason: e.to_string(),
    })?;
    bytes.as_slice().try_into().map_err(|_| Error::InvalidKey {
        what: what.into(),
        reason: format!("expected {N} bytes, got {}", bytes.len()),
    })
}

/// Writes `key` to `path` with mode 0600, refusing to overwrite an existing file.
pub fn write_key_file(path: &Path, key: &KeyFile) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| Error::io(format!("creating key file {}", path.display()), e))?;
    f.write_all(key.to_toml_string().as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(format!("writing key file {}", path.display()), e))?;
    Ok(())
}

/// Loads a key file, rejecting it if group or others may read it
/// (any of the bits `0o077`) or if any key in it is malformed.
pub fn load_key_file(path: &Path) -> Result<KeyFile> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::io(format!("reading key file {}", path.display()), e))?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading key file {}", path.display()), e))?;
    // Not a key at all: say so, rather than advise a chmod of some file.
    let key = KeyFile::from_toml_str(&text).map_err(|e| match e {
        Error::InvalidKey { what, reason } => Error::InvalidKey {
            what: format!("{what} {} (not a DLog transport key file?)", path.display()),
            reason,
        },
        e => e,
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Error::KeyFilePermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_roundtrip() {
        let k = generate().unwrap();
        let s = k.to_toml_string();
        let k2 = KeyFile::from_toml_str(&s).unwrap();
        assert_eq!(k.public_key(), k2.public_key());
        assert_eq!(k.kem_public_key(), k2.kem_public_key());
    }

    #[test]
    fn mismatched_public_key_is_rejected() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        let s = a
            .to_toml_string()
            .replace(&a.public_key_b64(), &b.public_key_b64());
        let err = KeyFile::from_toml_str(&s).unwrap_err().to_string();
        assert!(err.contains("does not match"), "{err}");
        assert!(KeyFile::from_toml_str("private_key = \"xx\"\nkem_seed = \"\"").is_err());
    }

    #[test]
    fn write_and_load_with_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wg.key");
        let k = generate().unwrap();
        write_key_file(&path, &k).unwrap();
        assert!(write_key_file(&path, &k).is_err(), "must not overwrite");
        let k2 = load_key_file(&path).unwrap();
        assert_eq!(k.public_key(), k2.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = load_key_file(&path).unwrap_err();
            assert!(matches!(err, Error::KeyFilePermissions { mode: 0o644, .. }));
            assert!(err.to_string().contains("chmod 600"));
        }
    }
}
