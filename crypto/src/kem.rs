//! ML-KEM-768 (FIPS 203) for the post-quantum pre-shared key of the tunnels.
//!
//! A thin, byte-oriented wrapper around Cryspen's `libcrux-ml-kem` (formally
//! verified; AVX2 code selected at run time, portable code otherwise):
//!
//! * [`KemSecretKey`]: the decapsulation key, stored as its 64-byte FIPS 203
//!   seed `d || z` ([`KemSecretKey::generate`] fills it from the OS with
//!   `getrandom`; [`KemSecretKey::from_seed`] rebuilds it). The expanded
//!   2400-byte key is derived once, when the value is built, so that
//!   [`KemSecretKey::decapsulate`] does no key generation work.
//! * [`KemPublicKey`]: the 1184-byte encapsulation key, validated on decode
//!   (FIPS 203 §7.2 modulus check), so encapsulation does no re-validation.
//! * [`KemPublicKey::encapsulate`] → ([`KemCiphertext`], [`KemSharedSecret`]);
//!   [`KemSecretKey::decapsulate`] recovers the same shared secret.
//!
//! ML-KEM has implicit rejection: decapsulating a tampered or foreign
//! ciphertext does not fail, it yields an unrelated pseudo-random secret.
//! Protocols built on it (the tunnel PSK derivation) must therefore confirm
//! the derived key, which WireGuard's handshake does for us.
//!
//! Interoperability: keys, ciphertexts and secrets are byte-for-byte those of
//! FIPS 203 (checked in the tests against RustCrypto's `ml-kem`, the
//! implementation this module used before), so key files and peer tables
//! written earlier stay valid. `libcrux-ml-kem` is about 6-8x faster here,
//! which matters for the tunnels' PSK rotation (three encapsulations, three
//! decapsulations and a key generation per peer pair).
//!
//! Pure: no IO besides asking the OS for random bytes, no clock.

use libcrux_ml_kem::mlkem768 as backend;

/// Length of an encoded ML-KEM-768 encapsulation (public) key.
pub const PUBLIC_KEY_LEN: usize = 1184;
/// Length of an ML-KEM-768 ciphertext.
pub const CIPHERTEXT_LEN: usize = 1088;
/// Length of the decapsulation key seed (`d || z`).
pub const SEED_LEN: usize = 64;
/// Length of the shared secret.
pub const SHARED_SECRET_LEN: usize = 32;

/// Errors of the ML-KEM wrapper.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KemError {
    /// A byte string had the wrong length for the named object.
    #[error("ML-KEM-768 {what}: expected {expected} bytes, got {got}")]
    BadLength {
        /// What was being decoded.
        what: &'static str,
        /// Expected length in bytes.
        expected: usize,
        /// Actual length in bytes.
        got: usize,
    },
    /// The encapsulation key failed FIPS 203 input validation.
    #[error("ML-KEM-768 public key is malformed (coefficients out of range)")]
    InvalidPublicKey,
    /// The operating system random number generator failed.
    #[error("operating system RNG failed: {0}")]
    Rng(String),
}

/// An ML-KEM-768 decapsulation (secret) key: its 64-byte seed, plus the
/// expanded key and the public key derived from it once.
#[derive(Clone)]
pub struct KemSecretKey {
    seed: [u8; SEED_LEN],
    sk: Box<backend::MlKem768PrivateKey>,
    pk: KemPublicKey,
}

impl std::fmt::Debug for KemSecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KemSecretKey")
            .field("public", &self.public_key())
            .finish_non_exhaustive()
    }
}

/// An ML-KEM-768 encapsulation (public) key, encoded and validated.
#[derive(Clone)]
pub struct KemPublicKey {
    key: Box<backend::MlKem768PublicKey>,
}

impl PartialEq for KemPublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for KemPublicKey {}

impl std::fmt::Debug for KemPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "KemPublicKey({})",
            &blake3::hash(self.as_bytes()).to_hex()[..16]
        )
    }
}

/// An ML-KEM-768 ciphertext.
#[derive(Clone)]
pub struct KemCiphertext {
    ct: Box<backend::MlKem768Ciphertext>,
}

impl PartialEq for KemCiphertext {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for KemCiphertext {}

impl std::fmt::Debug for KemCiphertext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KemCiphertext")
            .field("bytes", &self.as_bytes())
            .finish()
    }
}

/// A 32-byte ML-KEM shared secret.
#[derive(Clone, PartialEq, Eq)]
pub struct KemSharedSecret(pub [u8; SHARED_SECRET_LEN]);

impl std::fmt::Debug for KemSharedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KemSharedSecret(..)")
    }
}

fn random<const N: usize>() -> Result<[u8; N], KemError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| KemError::Rng(e.to_string()))?;
    Ok(b)
}

fn fixed<const N: usize>(what: &'static str, bytes: &[u8]) -> Result<[u8; N], KemError> {
    bytes.try_into().map_err(|_| KemError::BadLength {
        what,
        expected: N,
        got: bytes.len(),
    })
}

impl KemSecretKey {
    /// Generates a fresh key pair from 64 bytes of OS randomness.
    pub fn generate() -> Result<Self, KemError> {
        Ok(Self::from_seed(random::<SEED_LEN>()?))
    }

    /// Rebuilds the key pair deterministically from its 64-byte seed.
    pub fn from_seed(seed: [u8; SEED_LEN]) -> Self {
        // FIPS 203 ML-KEM.KeyGen_internal(d, z) with seed = d || z.
        let pair = backend::generate_key_pair(seed);
        Self {
            seed,
            sk: Box::new(pair.private_key().clone()),
            pk: KemPublicKey {
                key: Box::new(pair.public_key().clone()),
            },
        }
    }

    /// Decodes a key from its seed bytes (must be exactly 64 bytes).
    pub fn from_seed_slice(seed: &[u8]) -> Result<Self, KemError> {
        Ok(Self::from_seed(fixed("seed", seed)?))
    }

    /// The 64-byte seed (secret: store it like a private key).
    pub fn seed(&self) -> &[u8; SEED_LEN] {
        &self.seed
    }

    /// The matching encapsulation (public) key.
    pub fn public_key(&self) -> KemPublicKey {
        self.pk.clone()
    }

    /// Recovers the shared secret from a ciphertext made for this key.
    ///
    /// Never fails: a foreign or tampered ciphertext yields an unrelated
    /// secret (implicit rejection).
    pub fn decapsulate(&self, ct: &KemCiphertext) -> KemSharedSecret {
        KemSharedSecret(backend::decapsulate(&self.sk, &ct.ct))
    }
}

impl KemPublicKey {
    /// Decodes and validates an encoded encapsulation key (1184 bytes).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KemError> {
        let b: [u8; PUBLIC_KEY_LEN] = fixed("public key", bytes)?;
        let key = Box::new(backend::MlKem768PublicKey::from(b));
        if !backend::validate_public_key(&key) {
            return Err(KemError::InvalidPublicKey);
        }
        Ok(Self { key })
    }

    /// The encoded key.
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        self.key.as_slice()
    }

    /// BLAKE3 hash of the encoded key (a short, stable fingerprint).
    pub fn fingerprint(&self) -> [u8; 32] {
        *blake3::hash(self.as_bytes()).as_bytes()
    }

    /// Encapsulates a fresh shared secret to this key, using 32 bytes of OS
    /// randomness. Returns the ciphertext to send and the shared secret.
    pub fn encapsulate(&self) -> Result<(KemCiphertext, KemSharedSecret), KemError> {
        let m = random::<32>()?;
        Ok(self.encapsulate_with(&m))
    }

    /// Deterministic encapsulation with caller-provided randomness `m`.
    ///
    /// Only for test vectors: `m` must be fresh uniform randomness, never
    /// reused, or the shared secret leaks.
    pub fn encapsulate_with(&self, m: &[u8; 32]) -> (KemCiphertext, KemSharedSecret) {
        let (ct, ss) = backend::encapsulate(&self.key, *m);
        (KemCiphertext { ct: Box::new(ct) }, KemSharedSecret(ss))
    }
}

impl KemCiphertext {
    /// Decodes a ciphertext (must be exactly 1088 bytes).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KemError> {
        let b: [u8; CIPHERTEXT_LEN] = fixed("ciphertext", bytes)?;
        Ok(Self {
            ct: Box::new(backend::MlKem768Ciphertext::from(b)),
        })
    }

    /// The encoded ciphertext.
    pub fn as_bytes(&self) -> &[u8; CIPHERTEXT_LEN] {
        self.ct.as_slice()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_shared_secret() {
        let sk = KemSecretKey::generate().unwrap();
        let pk = sk.public_key();
        let (ct, ss) = pk.encapsulate().unwrap();
        assert_eq!(sk.decapsulate(&ct), ss);
    }

    #[test]
    fn seed_is_deterministic_and_encodings_roundtrip() {
        let sk = KemSecretKey::from_seed([7u8; 64]);
        let sk2 = KemSecretKey::from_seed_slice(sk.seed()).unwrap();
        assert_eq!(sk.public_key(), sk2.public_key());
        let pk = KemPublicKey::from_bytes(sk.public_key().as_bytes()).unwrap();
        assert_eq!(pk, sk.public_key());
        let (ct, ss) = pk.encapsulate_with(&[9u8; 32]);
        let ct2 = KemCiphertext::from_bytes(ct.as_bytes()).unwrap();
        assert_eq!(sk2.decapsulate(&ct2), ss);
    }

    /// Same bytes as RustCrypto's `ml-kem` (the previous backend): public
    /// keys from seeds, ciphertexts and secrets from the same randomness,
    /// and decapsulation across the two implementations.
    #[test]
    fn interoperates_with_rustcrypto_ml_kem() {
        use ml_kem::array::Array;
        use ml_kem::kem::{Decapsulate, KeyExport};
        type Dk = ml_kem::DecapsulationKey<ml_kem::MlKem768>;
        for i in 0..8u8 {
            let seed = [i.wrapping_mul(37).wrapping_add(1); SEED_LEN];
            let m = [i ^ 0xA5; 32];
            let ours = KemSecretKey::from_seed(seed);
            let theirs = Dk::from_seed(Array(seed));
            let ek = theirs.encapsulation_key().clone();
            assert_eq!(ours.public_key().as_bytes()[..], ek.to_bytes().0[..]);
            let (ct, ss) = ours.public_key().encapsulate_with(&m);
            let (ct2, ss2) = ek.encapsulate_deterministic(&Array(m));
            assert_eq!(ct.as_bytes()[..], ct2.0[..]);
            assert_eq!(ss.0[..], ss2.0[..]);
            assert_eq!(theirs.decapsulate(&Array(*ct.as_bytes())).0, ss.0);
            assert_eq!(
                ours.decapsulate(&KemCiphertext::from_bytes(&ct2.0).unwrap()),
                ss
            );
        }
    }

    #[test]
    fn wrong_key_gives_different_secret() {
        let a = KemSecretKey::generate().unwrap();
        let b = KemSecretKey::generate().unwrap();
        let (ct, ss) = a.public_key().encapsulate().unwrap();
        assert_ne!(b.decapsulate(&ct), ss);
    }

    #[test]
    fn tampered_ciphertext_gives_different_secret() {
        let sk = KemSecretKey::generate().unwrap();
        let (ct, ss) = sk.public_key().encapsulate().unwrap();
        let mut bytes = *ct.as_bytes();
        bytes[17] ^= 1;
        let bad = KemCiphertext::from_bytes(&bytes).unwrap();
        assert_ne!(sk.decapsulate(&bad), ss);
    }

    #[test]
    fn bad_lengths_and_invalid_keys_are_errors() {
        assert!(matches!(
            KemPublicKey::from_bytes(&[0u8; 10]),
            Err(KemError::BadLength { got: 10, .. })
        ));
        assert!(KemCiphertext::from_bytes(&[0u8; 1087]).is_err());
        assert!(KemSecretKey::from_seed_slice(&[0u8; 63]).is_err());
        // 0xFF bytes decode to coefficients >= q: must be rejected.
        assert_eq!(
            KemPublicKey::from_bytes(&[0xFFu8; PUBLIC_KEY_LEN]),
            Err(KemError::InvalidPublicKey)
        );
    }
}
