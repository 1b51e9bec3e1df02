//! Tree hash functions with RFC 9162 domain separation.
//!
//! A leaf is hashed as `H(0x00 || entry)` and an interior node as
//! `H(0x01 || left || right)`; the empty tree's root is `H("")`. A log's
//! tree hashes with BLAKE3-256 ([`Blake3Hasher`], the default) or with
//! SHA-256 ([`Sha256Hasher`]: RFC 6962 exactly, what C2SP tools and Go's
//! `sumdb/tlog` verify); [`HashAlg`] is that choice at run time. The
//! segment chain hash ([`chain_hash`]) is DLog's own and always BLAKE3.

/// A 32-byte hash: a leaf hash, an interior node or a tree root.
pub type Hash = [u8; 32];

/// Domain-separation prefix of a leaf hash.
pub const LEAF_PREFIX: u8 = 0x00;
/// Domain-separation prefix of an interior node hash.
pub const NODE_PREFIX: u8 = 0x01;
/// Domain-separation prefix of a segment chain hash (DESIGN §4).
pub const CHAIN_PREFIX: u8 = 0x02;

/// The hash function of a Merkle tree, with RFC 9162 domain separation.
pub trait TreeHasher {
    /// Root of the empty tree: `H("")`.
    fn empty_root() -> Hash;
    /// `H(0x00 || data)`.
    fn hash_leaf(data: &[u8]) -> Hash;
    /// `H(0x01 || left || right)`.
    fn hash_children(left: &Hash, right: &Hash) -> Hash;
}

/// BLAKE3-256, DLog's production tree hash.
#[derive(Debug, Clone, Copy, Default)]
pub struct Blake3Hasher;

impl TreeHasher for Blake3Hasher {
    fn empty_root() -> Hash {
        *blake3::hash(b"").as_bytes()
    }

    #[inline]
    fn hash_leaf(data: &[u8]) -> Hash {
        // One-shot hashing of a contiguous buffer skips the incremental
        // hasher's set-up. The stack buffer is small so that clearing it
        // costs little next to the hash itself.
        const SMALL: usize = 255;
        if data.len() <= SMALL {
            let mut buf = [0u8; SMALL + 1];
            buf[0] = LEAF_PREFIX;
            buf[1..=data.len()].copy_from_slice(data);
            return *blake3::hash(&buf[..=data.len()]).as_bytes();
        }
        let mut h = blake3::Hasher::new();
        h.update(&[LEAF_PREFIX]);
        h.update(data);
        *h.finalize().as_bytes()
    }

    #[inline]
    fn hash_children(left: &Hash, right: &Hash) -> Hash {
        let mut buf = [0u8; 65];
        buf[0] = NODE_PREFIX;
        buf[1..33].copy_from_slice(left);
        buf[33..].copy_from_slice(right);
        *blake3::hash(&buf).as_bytes()
    }
}

/// SHA-256, the RFC 6962 tree hash; used to check the tree math against the RFC.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sha256Hasher;

impl TreeHasher for Sha256Hasher {
    fn empty_root() -> Hash {
        use sha2::Digest;
        sha2::Sha256::digest(b"").into()
    }

    fn hash_leaf(data: &[u8]) -> Hash {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update([LEAF_PREFIX]);
        h.update(data);
        h.finalize().into()
    }

    fn hash_children(left: &Hash, right: &Hash) -> Hash {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update([NODE_PREFIX]);
        h.update(left);
        h.update(right);
        h.finalize().into()
    }
}

/// The hash function of a log's Merkle tree, chosen once when the log is
/// created (its metadata and its trust file say which). Spelled
/// `"blake3"` or `"sha256"` in files; absent means BLAKE3.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum HashAlg {
    /// BLAKE3-256 (the default).
    #[default]
    Blake3,
    /// SHA-256, RFC 6962.
    Sha256,
}

impl HashAlg {
    /// The name used in files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            HashAlg::Blake3 => "blake3",
            HashAlg::Sha256 => "sha256",
        }
    }

    /// Root of the empty tree.
    pub fn empty_root(self) -> Hash {
        match self {
            HashAlg::Blake3 => Blake3Hasher::empty_root(),
            HashAlg::Sha256 => Sha256Hasher::empty_root(),
        }
    }

    /// `H(0x00 || data)`.
    #[inline]
    pub fn hash_leaf(self, data: &[u8]) -> Hash {
        match self {
            HashAlg::Blake3 => Blake3Hasher::hash_leaf(data),
            HashAlg::Sha256 => Sha256Hasher::hash_leaf(data),
        }
    }

    /// `H(0x01 || left || right)`.
    #[inline]
    pub fn hash_children(self, left: &Hash, right: &Hash) -> Hash {
        match self {
            HashAlg::Blake3 => Blake3Hasher::hash_children(left, right),
            HashAlg::Sha256 => Sha256Hasher::hash_children(left, right),
        }
    }
}

impl std::fmt::Display for HashAlg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for HashAlg {
    type Err = String;
    fn from_str(s: &str) -> Result<HashAlg, String> {
        match s {
            "blake3" => Ok(HashAlg::Blake3),
            "sha256" => Ok(HashAlg::Sha256),
            other => Err(format!("unknown tree hash {other:?} (blake3 or sha256)")),
        }
    }
}

/// Segment chain hash: `H(0x02 || segment:u64be || root || prev)` (DESIGN §4).
///
/// `prev` is the chain hash of the previous segment, 32 zero bytes for segment 0.
pub fn chain_hash(segment: u64, root: &Hash, prev: &Hash) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[CHAIN_PREFIX]);
    h.update(&segment.to_be_bytes());
    h.update(root);
    h.update(prev);
    *h.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_alg_names_round_trip_and_dispatch() {
        for alg in [HashAlg::Blake3, HashAlg::Sha256] {
            assert_eq!(alg.name().parse::<HashAlg>().unwrap(), alg);
        }
        assert!("sha-256".parse::<HashAlg>().unwrap_err().contains("sha256"));
        assert_eq!(HashAlg::default(), HashAlg::Blake3);
        assert_eq!(
            HashAlg::Sha256.hash_leaf(b"x"),
            Sha256Hasher::hash_leaf(b"x")
        );
        assert_eq!(
            HashAlg::Blake3.hash_leaf(b"x"),
            Blake3Hasher::hash_leaf(b"x")
        );
        let (l, r) = ([1u8; 32], [2u8; 32]);
        assert_eq!(
            HashAlg::Sha256.hash_children(&l, &r),
            Sha256Hasher::hash_children(&l, &r)
        );
        assert_eq!(HashAlg::Sha256.empty_root(), Sha256Hasher::empty_root());
    }

    #[test]
    fn rfc6962_sha256_vectors() {
        // RFC 6962 test vectors (certificate-transparency-go testdata).
        assert_eq!(
            hex(&Sha256Hasher::empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&Sha256Hasher::hash_leaf(b"")),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
    }

    #[test]
    fn leaf_hash_is_the_same_for_every_length() {
        for len in [0usize, 1, 100, 254, 255, 256, 1023, 1024, 5000] {
            let data = vec![0xabu8; len];
            let mut buf = vec![LEAF_PREFIX];
            buf.extend_from_slice(&data);
            assert_eq!(
                Blake3Hasher::hash_leaf(&data),
                *blake3::hash(&buf).as_bytes(),
                "len {len}"
            );
        }
    }

    #[test]
    fn blake3_domain_separation() {
        let leaf = Blake3Hasher::hash_leaf(b"x");
        assert_ne!(leaf, *blake3::hash(b"x").as_bytes());
        let node = Blake3Hasher::hash_children(&leaf, &leaf);
        let mut buf = vec![1u8];
        buf.extend_from_slice(&leaf);
        buf.extend_from_slice(&leaf);
        assert_eq!(node, *blake3::hash(&buf).as_bytes());
    }

    fn hex(h: &Hash) -> String {
        h.iter().map(|b| format!("{b:02x}")).collect()
    }
}
