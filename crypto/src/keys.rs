//! A node's Ed25519 signing key and its TOML key file.
//!
//! The key file (written by the caller with mode 0600; this module does no IO):
//!
//! ```toml
//! name = "node-1"
//! ed25519_secret = "<base64 std of the 32-byte Ed25519 secret>"
//! # informative, ignored on read:
//! public = "<base64 std of the 32-byte public key>"
//! vkey = "node-1+1a2b3c4d+AU..."            # checkpoint signer key (type 0x01)
//! cosigner_vkey = "node-1+5e6f7a8b+BA..."   # witness cosigner key (type 0x04)
//! ```
//!
//! Secrets are zeroized on drop: the [`SigningKey`] (ed25519-dalek's
//! `zeroize` feature), the decoded secret bytes and the TOML text returned by
//! [`NodeKey::to_toml_string`].

use crate::note::{check_key_name, Cosigner, NoteError, NoteSigner};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::SigningKey;
use std::fmt;
use zeroize::Zeroizing;

/// Why a key could not be generated, read or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The operating system's random source failed.
    #[error("cannot read the system random source: {0}")]
    Random(String),
    /// The key file is not valid TOML or lacks a field.
    #[error("key file is not valid: {0}")]
    Toml(String),
    /// The key name is not a valid signed-note key name.
    #[error("invalid key name: {0}")]
    Name(#[from] NoteError),
    /// `ed25519_secret` is not standard base64.
    #[error("ed25519_secret is not valid standard base64")]
    SecretBase64,
    /// `ed25519_secret` does not decode to 32 bytes.
    #[error("ed25519_secret decodes to {0} bytes, expected 32")]
    SecretLength(usize),
}

/// A node's (or auditor's) identity: a key name and an Ed25519 signing key.
///
/// The same key signs checkpoints ([`NodeKey::note_signer`], key type `0x01`)
/// and witness cosignatures ([`NodeKey::cosigner`], key type `0x04`); the two
/// have different key ids and vkeys.
#[derive(Clone)]
pub struct NodeKey {
    name: String,
    signing: SigningKey,
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeKey")
            .field("name", &self.name)
            .field("vkey", &self.vkey())
            .finish_non_exhaustive()
    }
}

/// The TOML shape of a key file.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    name: String,
    ed25519_secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    public: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    vkey: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cosigner_vkey: Option<String>,
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.ed25519_secret);
    }
}

impl NodeKey {
    /// A fresh key from the operating system's random source.
    pub fn generate(name: impl Into<String>) -> Result<Self, KeyError> {
        let name = name.into();
        check_key_name(&name)?;
        let mut secret = Zeroizing::new([0u8; 32]);
        getrandom::fill(secret.as_mut()).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(NodeKey {
            name,
            signing: SigningKey::from_bytes(&secret),
        })
    }

    /// A key from its parts; the name must be a valid signed-note key name.
    pub fn from_signing_key(
        name: impl Into<String>,
        signing: SigningKey,
    ) -> Result<Self, KeyError> {
        let name = name.into();
        check_key_name(&name)?;
        Ok(NodeKey { name, signing })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Ed25519 signing key.
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// Checkpoint signer (signed-note key type `0x01`).
    pub fn note_signer(&self) -> NoteSigner {
        NoteSigner::new_checked(self.name.clone(), self.signing.clone())
    }

    /// Witness cosigner (tlog-cosignature/v1, key type `0x04`).
    pub fn cosigner(&self) -> Cosigner {
        Cosigner::new_checked(self.name.clone(), self.signing.clone())
    }

    /// The checkpoint verifier key (`<name>+<key id>+<base64(0x01 || key)>`).
    pub fn vkey(&self) -> String {
        self.note_signer().vkey()
    }

    /// The cosignature verifier key (`<name>+<key id>+<base64(0x04 || key)>`).
    pub fn cosigner_vkey(&self) -> String {
        self.cosigner().vkey()
    }

    /// The key file text (see the module docs). It holds the secret: write it
    /// with mode 0600. The returned string is zeroized when dropped.
    pub fn to_toml_string(&self) -> Zeroizing<String> {
        let file = KeyFile {
            name: self.name.clone(),
            ed25519_secret: B64.encode(self.signing.as_bytes()),
            public: Some(B64.encode(self.public_key())),
            vkey: Some(self.vkey()),
            cosigner_vkey: Some(self.cosigner_vkey()),
        };
        Zeroizing::new(toml::to_string(&file).unwrap_or_default())
    }

    /// Reads a key file. `public`, `vkey` and `cosigner_vkey` are informative
    /// and ignored; any other unknown field is an error (it is likely a typo).
    pub fn from_toml_str(text: &str) -> Result<Self, KeyError> {
        let file: KeyFile = toml::from_str(text).map_err(|e| KeyError::Toml(e.to_string()))?;
        check_key_name(&file.name)?;
        let raw = Zeroizing::new(
            B64.decode(file.ed25519_secret.as_bytes())
                .map_err(|_| KeyError::SecretBase64)?,
        );
        let secret: Zeroizing<[u8; 32]> = Zeroizing::new(
            raw.as_slice()
                .try_into()
                .map_err(|_| KeyError::SecretLength(raw.len()))?,
        );
        Ok(NodeKey {
            name: file.name.clone(),
            signing: SigningKey::from_bytes(&secret),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::note::{CosignatureVerifier, NoteVerifier};
    use proptest::prelude::*;

    #[test]
    fn generate_roundtrip() {
        let k = NodeKey::generate("node-1").unwrap();
        let text = k.to_toml_string();
        assert!(text.contains("name = \"node-1\""), "{}", *text);
        assert!(text.contains("ed25519_secret = \""));
        assert!(text.contains(&format!("vkey = \"{}\"", k.vkey())));
        let back = NodeKey::from_toml_str(&text).unwrap();
        assert_eq!(back.public_key(), k.public_key());
        assert_eq!(back.name(), "node-1");
        assert_eq!(back.vkey(), k.vkey());
        // Two generated keys differ.
        assert_ne!(
            NodeKey::generate("node-1").unwrap().public_key(),
            k.public_key()
        );
    }

    #[test]
    fn signer_and_cosigner_match_vkeys() {
        let k = NodeKey::from_signing_key("n", SigningKey::from_bytes(&[5; 32])).unwrap();
        let v = NoteVerifier::from_vkey(&k.vkey()).unwrap();
        assert!(v.verify("t\n", &k.note_signer().sign("t\n")));
        let c = CosignatureVerifier::from_vkey(&k.cosigner_vkey()).unwrap();
        assert_eq!(c.verify("t\n", &k.cosigner().cosign("t\n", 9)), Some(9));
        assert!(!format!("{k:?}").contains(&B64.encode([5u8; 32])));
    }

    #[test]
    fn minimal_file_and_informative_fields() {
        let secret = B64.encode([1u8; 32]);
        let k = NodeKey::from_toml_str(&format!("name = \"a\"\ned25519_secret = \"{secret}\"\n"))
            .unwrap();
        // Informative fields are ignored even when they are wrong.
        let k2 = NodeKey::from_toml_str(&format!(
            "name = \"a\"\ned25519_secret = \"{secret}\"\npublic = \"x\"\nvkey = \"y\"\n"
        ))
        .unwrap();
        assert_eq!(k.public_key(), k2.public_key());
    }

    #[test]
    fn clear_errors() {
        let secret = B64.encode([1u8; 32]);
        let e = |s: &str| NodeKey::from_toml_str(s).unwrap_err();
        assert!(matches!(e("name = \"a\"\n"), KeyError::Toml(_)));
        assert!(matches!(e("not toml"), KeyError::Toml(_)));
        assert!(matches!(
            e(&format!(
                "name = \"a\"\ned25519_secret = \"{secret}\"\nsecret2 = 1\n"
            )),
            KeyError::Toml(_)
        ));
        assert!(matches!(
            e("name = \"a\"\ned25519_secret = \"!!\"\n"),
            KeyError::SecretBase64
        ));
        let short = B64.encode([1u8; 31]);
        let err = e(&format!("name = \"a\"\ned25519_secret = \"{short}\"\n"));
        assert!(matches!(err, KeyError::SecretLength(31)));
        assert_eq!(
            err.to_string(),
            "ed25519_secret decodes to 31 bytes, expected 32"
        );
        assert!(matches!(
            e(&format!("name = \"a b\"\ned25519_secret = \"{secret}\"\n")),
            KeyError::Name(_)
        ));
        assert!(NodeKey::generate("").is_err());
        assert!(NodeKey::generate("a+b").is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn toml_roundtrip(seed: [u8; 32], name in "[a-zA-Z0-9._/:-]{1,30}") {
            let k = NodeKey::from_signing_key(name, SigningKey::from_bytes(&seed)).unwrap();
            let back = NodeKey::from_toml_str(&k.to_toml_string()).unwrap();
            prop_assert_eq!(back.signing_key().to_bytes(), seed);
            prop_assert_eq!(back.name(), k.name());
        }

        #[test]
        fn from_toml_never_panics(s in "(?s).{0,200}") {
            let _ = NodeKey::from_toml_str(&s);
        }
    }
}
