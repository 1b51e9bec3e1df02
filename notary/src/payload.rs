//! The notarization payload (DESIGN §6) and streaming file digests.
//!
//! ```text
//! dlog-notary/v1\n
//! <alg> <lowercase hex digest>\n
//! [<label>\n]
//! ```
//!
//! `alg` is `blake3` or `sha256` (32-byte digests). The label is optional,
//! 1..=[`MAX_LABEL_LEN`] bytes of UTF-8 without control characters. Parsing is
//! strict: the bytes must be exactly what [`NotaryPayload::encode`] writes.
//! Only the digest is logged; the document never leaves the client.

use sha2::Digest as _;
use std::fmt;
use std::io::Read;
use std::path::Path;

/// First line of every payload.
pub const MAGIC: &str = "dlog-notary/v1";
/// Longest label, in bytes.
pub const MAX_LABEL_LEN: usize = 1024;
/// Longest well-formed payload, in bytes.
pub const MAX_PAYLOAD_LEN: usize = MAGIC.len() + 1 + 7 + 64 + 1 + MAX_LABEL_LEN + 1;

/// Why a payload is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// The payload does not start with `dlog-notary/v1\n`.
    #[error("notarization payload does not start with \"dlog-notary/v1\\n\"")]
    Magic,
    /// The payload is longer than any well-formed payload.
    #[error("notarization payload is {len} bytes, longer than the {max}-byte maximum")]
    TooLarge {
        /// Payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The payload is not UTF-8 or its lines are not as specified.
    #[error("notarization payload is malformed: {0}")]
    Syntax(&'static str),
    /// The digest algorithm is neither `blake3` nor `sha256`.
    #[error("unknown digest algorithm {0:?} (expected blake3 or sha256)")]
    UnknownAlg(String),
    /// The digest has the wrong length for its algorithm.
    #[error("{alg} digest is {got} bytes, expected {expected}")]
    DigestLength {
        /// The algorithm.
        alg: DigestAlg,
        /// Its digest length.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// The digest is not lowercase hex.
    #[error("digest is not lowercase hexadecimal")]
    DigestHex,
    /// The label is empty, too long, or contains a control character.
    #[error("label must be 1-{MAX_LABEL_LEN} bytes with no newline or control character")]
    Label,
}

/// A file digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DigestAlg {
    /// BLAKE3-256 (the default).
    Blake3,
    /// SHA-256.
    Sha256,
}

impl DigestAlg {
    /// The name in the payload: `blake3` or `sha256`.
    pub fn name(self) -> &'static str {
        match self {
            DigestAlg::Blake3 => "blake3",
            DigestAlg::Sha256 => "sha256",
        }
    }

    /// Parses `blake3` or `sha256` (exact, lowercase).
    pub fn from_name(name: &str) -> Result<Self, PayloadError> {
        match name {
            "blake3" => Ok(DigestAlg::Blake3),
            "sha256" => Ok(DigestAlg::Sha256),
            other => Err(PayloadError::UnknownAlg(
                other.chars().take(32).collect::<String>(),
            )),
        }
    }

    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        32
    }

    /// Digest of an in-memory byte string.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            DigestAlg::Blake3 => blake3::hash(data).as_bytes().to_vec(),
            DigestAlg::Sha256 => sha2::Sha256::digest(data).to_vec(),
        }
    }
}

impl fmt::Display for DigestAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Streams `reader` through the digest `alg` (64 KiB at a time).
pub fn hash_reader(mut reader: impl Read, alg: DigestAlg) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 64 * 1024];
    enum State {
        Blake3(Box<blake3::Hasher>),
        Sha256(sha2::Sha256),
    }
    let mut state = match alg {
        DigestAlg::Blake3 => State::Blake3(Box::new(blake3::Hasher::new())),
        DigestAlg::Sha256 => State::Sha256(sha2::Sha256::new()),
    };
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        match &mut state {
            State::Blake3(h) => {
                h.update(&buf[..n]);
            }
            State::Sha256(h) => h.update(&buf[..n]),
        }
    }
    Ok(match state {
        State::Blake3(h) => h.finalize().as_bytes().to_vec(),
        State::Sha256(h) => h.finalize().to_vec(),
    })
}

/// Digest of the file at `path`, streamed.
pub fn hash_file(path: impl AsRef<Path>, alg: DigestAlg) -> std::io::Result<Vec<u8>> {
    hash_reader(std::fs::File::open(path)?, alg)
}

/// A notarization: the digest of a document, and an optional label.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NotaryPayload {
    /// The digest algorithm.
    pub alg: DigestAlg,
    /// The document's digest (32 bytes).
    pub digest: Vec<u8>,
    /// An optional label (no newline or control character, at most
    /// [`MAX_LABEL_LEN`] bytes).
    pub label: Option<String>,
}

fn check_label(label: &str) -> Result<(), PayloadError> {
    if label.is_empty() || label.len() > MAX_LABEL_LEN || label.chars().any(char::is_control) {
        Err(PayloadError::Label)
    } else {
        Ok(())
    }
}

impl NotaryPayload {
    /// A checked payload.
    pub fn new(
        alg: DigestAlg,
        digest: Vec<u8>,
        label: Option<String>,
    ) -> Result<Self, PayloadError> {
        let p = NotaryPayload { alg, digest, label };
        p.check()?;
        Ok(p)
    }

    fn check(&self) -> Result<(), PayloadError> {
        if self.digest.len() != self.alg.digest_len() {
            return Err(PayloadError::DigestLength {
                alg: self.alg,
                expected: self.alg.digest_len(),
                got: self.digest.len(),
            });
        }
        if let Some(l) = &self.label {
            check_label(l)?;
        }
        Ok(())
    }

    /// The payload bytes: `dlog-notary/v1\n<alg> <hex>\n[<label>\n]`.
    pub fn encode(&self) -> Result<Vec<u8>, PayloadError> {
        self.check()?;
        let mut s = format!(
            "{MAGIC}\n{} {}\n",
            self.alg.name(),
            hex::encode(&self.digest)
        );
        if let Some(l) = &self.label {
            s.push_str(l);
            s.push('\n');
        }
        Ok(s.into_bytes())
    }

    /// Parses payload bytes strictly (the exact output of [`encode`](Self::encode)).
    pub fn parse(bytes: &[u8]) -> Result<Self, PayloadError> {
        if bytes.len() > MAX_PAYLOAD_LEN {
            return Err(PayloadError::TooLarge {
                len: bytes.len(),
                max: MAX_PAYLOAD_LEN,
            });
        }
        let rest = bytes
            .strip_prefix(MAGIC.as_bytes())
            .and_then(|r| r.strip_prefix(b"\n"))
            .ok_or(PayloadError::Magic)?;
        let rest = std::str::from_utf8(rest).map_err(|_| PayloadError::Syntax("not UTF-8"))?;
        let rest = rest
            .strip_suffix('\n')
            .ok_or(PayloadError::Syntax("does not end with a newline"))?;
        let mut lines = rest.split('\n');
        let digest_line = lines.next().unwrap_or("");
        let label = lines.next();
        if lines.next().is_some() {
            return Err(PayloadError::Syntax("more than one label line"));
        }
        let (alg, hex_digest) = digest_line
            .split_once(' ')
            .ok_or(PayloadError::Syntax("digest line is not \"<alg> <hex>\""))?;
        let alg = DigestAlg::from_name(alg)?;
        if !hex_digest
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(PayloadError::DigestHex);
        }
        let digest = hex::decode(hex_digest).map_err(|_| PayloadError::DigestHex)?;
        let p = NotaryPayload {
            alg,
            digest,
            label: label.map(str::to_string),
        };
        p.check()?;
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn exact_bytes() {
        let p = NotaryPayload::new(
            DigestAlg::Blake3,
            vec![0xab; 32],
            Some("contract v2".into()),
        )
        .unwrap();
        let want = format!("dlog-notary/v1\nblake3 {}\ncontract v2\n", "ab".repeat(32));
        assert_eq!(p.encode().unwrap(), want.as_bytes());
        assert_eq!(NotaryPayload::parse(want.as_bytes()).unwrap(), p);
        let q = NotaryPayload::new(DigestAlg::Sha256, vec![1; 32], None).unwrap();
        let want = format!("dlog-notary/v1\nsha256 {}\n", "01".repeat(32));
        assert_eq!(q.encode().unwrap(), want.as_bytes());
    }

    #[test]
    fn strict_parse() {
        let h = "ab".repeat(32);
        let bad = |s: String| NotaryPayload::parse(s.as_bytes()).unwrap_err();
        assert_eq!(
            bad(format!("dlog-notary/v2\nblake3 {h}\n")),
            PayloadError::Magic
        );
        assert_eq!(
            bad(format!("dlog-notary/v1\nblake3 {}\n", h.to_uppercase())),
            PayloadError::DigestHex
        );
        assert!(matches!(
            bad(format!("dlog-notary/v1\nmd5 {h}\n")),
            PayloadError::UnknownAlg(_)
        ));
        assert!(matches!(
            bad(format!("dlog-notary/v1\nblake3 {}\n", &h[2..])),
            PayloadError::DigestLength { .. }
        ));
        assert!(matches!(
            bad(format!("dlog-notary/v1\nblake3 {h}")),
            PayloadError::Syntax(_)
        ));
        assert!(matches!(
            bad(format!("dlog-notary/v1\nblake3  {h}\n")),
            PayloadError::DigestHex
        ));
        assert!(matches!(
            bad(format!("dlog-notary/v1\nblake3 {h}\n\n")),
            PayloadError::Label
        ));
        assert!(matches!(
            bad(format!("dlog-notary/v1\nblake3 {h}\na\nb\n")),
            PayloadError::Syntax(_)
        ));
        assert!(matches!(
            bad(format!("dlog-notary/v1\nblake3 {h}\na\tb\n")),
            PayloadError::Label
        ));
        assert!(matches!(
            bad(format!(
                "dlog-notary/v1\nblake3 {h}\n{}\n",
                "x".repeat(MAX_LABEL_LEN + 1)
            )),
            PayloadError::Label | PayloadError::TooLarge { .. }
        ));
        assert!(NotaryPayload::parse(
            format!(
                "dlog-notary/v1\nblake3 {h}\n{}\n",
                "x".repeat(MAX_LABEL_LEN)
            )
            .as_bytes()
        )
        .is_ok());
        assert!(matches!(
            NotaryPayload::parse(&[0xff; 40]),
            Err(PayloadError::Magic)
        ));
        let p = NotaryPayload {
            alg: DigestAlg::Blake3,
            digest: vec![1; 32],
            label: Some("a\nb".into()),
        };
        assert_eq!(p.encode(), Err(PayloadError::Label));
    }

    #[test]
    fn streaming_digest_matches_one_shot() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
        for alg in [DigestAlg::Blake3, DigestAlg::Sha256] {
            assert_eq!(hash_reader(&data[..], alg).unwrap(), alg.digest(&data));
        }
        // Known answers for the empty input.
        assert_eq!(
            hex::encode(hash_reader(&b""[..], DigestAlg::Sha256).unwrap()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex::encode(hash_reader(&b""[..], DigestAlg::Blake3).unwrap()),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("doc");
        std::fs::write(&path, &data).unwrap();
        assert_eq!(
            hash_file(&path, DigestAlg::Blake3).unwrap(),
            DigestAlg::Blake3.digest(&data)
        );
        assert!(hash_file(dir.path().join("missing"), DigestAlg::Blake3).is_err());
    }

    proptest! {
        #[test]
        fn roundtrip(sha in any::<bool>(), digest: [u8; 32], label in proptest::option::of("[^\\p{Cc}]{1,40}")) {
            let alg = if sha { DigestAlg::Sha256 } else { DigestAlg::Blake3 };
            let p = NotaryPayload::new(alg, digest.to_vec(), label).unwrap();
            let bytes = p.encode().unwrap();
            prop_assert_eq!(NotaryPayload::parse(&bytes).unwrap(), p);
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(p) = NotaryPayload::parse(&bytes) {
                prop_assert_eq!(p.encode().unwrap(), bytes);
            }
        }

        #[test]
        fn parse_near_valid_never_panics(tail in "(?s).{0,120}") {
            let s = format!("dlog-notary/v1\n{tail}");
            if let Ok(p) = NotaryPayload::parse(s.as_bytes()) {
                prop_assert_eq!(p.encode().unwrap(), s.into_bytes());
            }
        }
    }
}
