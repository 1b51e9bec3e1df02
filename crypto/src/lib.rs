//! Cryptography for DLog, free of IO: no files, no sockets, no clock.
//!
//! * [`hash`]: the tree hash functions (BLAKE3 in production, SHA-256 for RFC 6962 checks).
//! * [`tree`]: RFC 9162 Merkle tree math — roots, inclusion and consistency proofs,
//!   generic over the hash.
//! * [`note`]: C2SP signed notes — checkpoints, signatures, witness cosignatures, vkeys.
//! * [`keys`]: Ed25519 signing keys and their on-disk encoding.
//! * [`trust`]: the verifier's trust file (who must sign, how many).
//! * [`kem`]: ML-KEM-768 for the post-quantum pre-shared key.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod hash;
pub mod kem;
pub mod keys;
pub mod note;
pub mod tree;
pub mod trust;

pub use hash::{Blake3Hasher, Hash, HashAlg, Sha256Hasher, TreeHasher};
pub use keys::{KeyError, NodeKey};
pub use note::{
    Checkpoint, CosignatureVerifier, Cosigner, NoteError, NoteSignature, NoteSigner, NoteVerifier,
    SignedNote,
};
pub use trust::{TrustError, TrustPolicy, VerifiedCheckpoint};
