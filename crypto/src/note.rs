//! C2SP signed notes, tlog checkpoints and tlog cosignatures (DESIGN §5).
//!
//! * [`SignedNote`]: the [signed-note] container — a text, a blank line, and
//!   one `— <name> <base64(key id || signature)>` line per signature.
//! * [`Checkpoint`]: the [tlog-checkpoint] body — origin, tree size, root.
//! * [`NoteSigner`] / [`NoteVerifier`]: Ed25519 note signatures (key type `0x01`).
//! * [`Cosigner`] / [`CosignatureVerifier`]: [tlog-cosignature] witness
//!   cosignatures (key type `0x04`), which sign
//!   `"cosignature/v1\ntime <unix seconds>\n" || note text` and carry the
//!   timestamp in the signature field.
//!
//! Everything here is pure: no clock (time is an argument), no IO. Parsing is
//! bounded ([`MAX_NOTE_LEN`], [`MAX_SIGNATURES`]) and never panics.
//!
//! [signed-note]: https://c2sp.org/signed-note
//! [tlog-checkpoint]: https://c2sp.org/tlog-checkpoint
//! [tlog-cosignature]: https://c2sp.org/tlog-cosignature

use crate::hash::Hash;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};
use std::fmt;

/// Largest note (text plus signature lines) that [`SignedNote::parse`] and
/// [`Checkpoint::parse_body`] accept, in bytes.
pub const MAX_NOTE_LEN: usize = 64 * 1024;
/// Most signature lines [`SignedNote::parse`] accepts (the Go reference
/// implementation uses the same bound).
pub const MAX_SIGNATURES: usize = 100;
/// Longest key name accepted, in bytes.
pub const MAX_KEY_NAME_LEN: usize = 256;

/// Signature type byte of an Ed25519 signed-note key.
pub const ALG_ED25519: u8 = 0x01;
/// Signature type byte of a tlog-cosignature/v1 (Ed25519) witness key.
pub const ALG_COSIGNATURE_V1: u8 = 0x04;

/// The em dash (U+2014) and space that open a signature line.
const SIG_PREFIX: &str = "\u{2014} ";
/// The header of the message a cosignature signs.
const COSIGNATURE_HEADER: &str = "cosignature/v1\ntime ";

/// Why a note, checkpoint, key name or verifier key is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoteError {
    /// The input is larger than [`MAX_NOTE_LEN`].
    #[error("note is {len} bytes, larger than the limit of {max} bytes")]
    TooLarge {
        /// Input length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The note text is not acceptable signed-note text.
    #[error("malformed note text: {0}")]
    Text(&'static str),
    /// The note has no blank line followed by signature lines.
    #[error("note has no signature block (a blank line followed by signature lines)")]
    NoSignatureBlock,
    /// A signature line is malformed.
    #[error("malformed signature line {line}: {reason}")]
    SignatureLine {
        /// 1-based number of the signature line.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// More than [`MAX_SIGNATURES`] signature lines.
    #[error("note has more than {max} signature lines")]
    TooManySignatures {
        /// The limit.
        max: usize,
    },
    /// A key name is empty, too long, or contains whitespace or `+`.
    #[error("invalid key name {0:?}: must be 1-256 bytes with no whitespace and no '+'")]
    KeyName(String),
    /// A verifier key (vkey) string is malformed.
    #[error("malformed verifier key: {0}")]
    Vkey(&'static str),
    /// A verifier key has the wrong signature type byte.
    #[error("verifier key has type byte 0x{got:02x}, expected 0x{expected:02x}")]
    KeyType {
        /// The type byte this verifier needs.
        expected: u8,
        /// The type byte found.
        got: u8,
    },
    /// A verifier key's key id does not match its name and public key.
    #[error("verifier key id {got} does not match its name and public key (expected {expected})")]
    KeyIdMismatch {
        /// Hex key id computed from the name and key.
        expected: String,
        /// Hex key id written in the vkey.
        got: String,
    },
    /// A checkpoint body is malformed.
    #[error("malformed checkpoint line {line}: {reason}")]
    Checkpoint {
        /// 1-based line number in the body.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Checks a key name: 1..=[`MAX_KEY_NAME_LEN`] bytes, no Unicode whitespace, no `+`.
pub fn check_key_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty()
        || name.len() > MAX_KEY_NAME_LEN
        || name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
    {
        return Err(NoteError::KeyName(name.to_string()));
    }
    Ok(())
}

/// Checks signed-note text: non-empty, ends in a newline, and contains no
/// ASCII control character other than newline.
pub fn check_note_text(text: &str) -> Result<(), NoteError> {
    if text.len() > MAX_NOTE_LEN {
        return Err(NoteError::TooLarge {
            len: text.len(),
            max: MAX_NOTE_LEN,
        });
    }
    if text.is_empty() {
        return Err(NoteError::Text("text is empty"));
    }
    if !text.ends_with('\n') {
        return Err(NoteError::Text("text does not end with a newline"));
    }
    if text.bytes().any(|b| b < 0x20 && b != b'\n') {
        return Err(NoteError::Text("text contains a control character"));
    }
    Ok(())
}

/// Key id of a signed-note key: the first 4 bytes of
/// `SHA-256(name || 0x0A || type || public key)`.
pub fn key_id(name: &str, alg: u8, public_key: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', alg]);
    h.update(public_key);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

fn hex4(id: &[u8; 4]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// `<name>+<hex key id>+<base64(type || public key)>`.
fn format_vkey(name: &str, alg: u8, public_key: &[u8; 32]) -> String {
    let mut raw = [0u8; 33];
    raw[0] = alg;
    raw[1..].copy_from_slice(public_key);
    format!(
        "{name}+{}+{}",
        hex4(&key_id(name, alg, public_key)),
        B64.encode(raw)
    )
}

/// Parses a vkey of type `alg`; returns `(name, key id, public key)`.
fn parse_vkey(vkey: &str, alg: u8) -> Result<(String, [u8; 4], VerifyingKey), NoteError> {
    if vkey.len() > MAX_KEY_NAME_LEN + 64 {
        return Err(NoteError::Vkey("too long"));
    }
    let mut parts = vkey.splitn(3, '+');
    let (Some(name), Some(id_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(NoteError::Vkey("expected <name>+<key id>+<base64 key>"));
    };
    check_key_name(name)?;
    if id_hex.len() != 8 || !id_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(NoteError::Vkey("key id is not 8 hex digits"));
    }
    let mut id = [0u8; 4];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&id_hex[2 * i..2 * i + 2], 16)
            .map_err(|_| NoteError::Vkey("key id is not 8 hex digits"))?;
    }
    let raw = B64
        .decode(key_b64)
        .map_err(|_| NoteError::Vkey("key is not valid standard base64"))?;
    let Some((&got_alg, key)) = raw.split_first() else {
        return Err(NoteError::Vkey("key is empty"));
    };
    if got_alg != alg {
        return Err(NoteError::KeyType {
            expected: alg,
            got: got_alg,
        });
    }
    let key: [u8; 32] = key
        .try_into()
        .map_err(|_| NoteError::Vkey("public key is not 32 bytes"))?;
    let expected = key_id(name, alg, &key);
    if expected != id {
        return Err(NoteError::KeyIdMismatch {
            expected: hex4(&expected),
            got: hex4(&id),
        });
    }
    let vk = VerifyingKey::from_bytes(&key)
        .map_err(|_| NoteError::Vkey("public key is not a valid Ed25519 point"))?;
    if vk.is_weak() {
        return Err(NoteError::Vkey("public key is a small-order Ed25519 point"));
    }
    Ok((name.to_string(), id, vk))
}

/// A tlog checkpoint body (C2SP tlog-checkpoint).
///
/// ```text
/// <origin>\n
/// <tree size, decimal>\n
/// <root hash, base64 std>\n
/// [<extension line>\n]...
/// ```
///
/// Extension lines are allowed by the spec; they are kept verbatim in
/// [`Checkpoint::extensions`] (and signed like the rest of the body) so a
/// checkpoint round-trips byte for byte. DLog itself writes none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin line, e.g. `dlog/demo`: non-empty, no newline.
    pub origin: String,
    /// Number of leaves in the tree.
    pub size: u64,
    /// Root hash of the tree of `size` leaves.
    pub root: Hash,
    /// Extension lines after the root (each non-empty, without its newline).
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// A checkpoint without extension lines; checks the origin.
    pub fn new(origin: impl Into<String>, size: u64, root: Hash) -> Result<Self, NoteError> {
        let origin = origin.into();
        check_line(&origin, 1)?;
        Ok(Checkpoint {
            origin,
            size,
            root,
            extensions: Vec::new(),
        })
    }

    /// The body text: `origin\nsize\nbase64(root)\n` plus any extension lines.
    ///
    /// Use [`Checkpoint::new`] or [`Checkpoint::parse_body`] to build a valid
    /// checkpoint; a hand-built one with a newline in its origin produces a
    /// body that [`Checkpoint::parse_body`] rejects.
    pub fn to_body(&self) -> String {
        let mut s = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        );
        for ext in &self.extensions {
            s.push_str(ext);
            s.push('\n');
        }
        s
    }

    /// Parses the checkpoint body of a note, signed (the text before the
    /// blank line) or bare, with the strict [`Checkpoint::parse_body`].
    /// Signatures are not looked at: verify them with a trust policy.
    pub fn from_note(note: &str) -> Result<Self, NoteError> {
        let body = note.find("\n\n").map_or(note, |i| &note[..=i]);
        Checkpoint::parse_body(body)
    }

    /// Parses a checkpoint body strictly: every line ends in a newline, the
    /// size is decimal with no sign and no leading zero (except `0`), the root
    /// is canonical standard base64 of exactly 32 bytes, extension lines are
    /// non-empty.
    pub fn parse_body(text: &str) -> Result<Self, NoteError> {
        if text.len() > MAX_NOTE_LEN {
            return Err(NoteError::TooLarge {
                len: text.len(),
                max: MAX_NOTE_LEN,
            });
        }
        let Some(body) = text.strip_suffix('\n') else {
            return Err(NoteError::Checkpoint {
                line: text.split('\n').count(),
                reason: "body does not end with a newline",
            });
        };
        let mut lines = body.split('\n');
        let origin = lines.next().unwrap_or("");
        check_line(origin, 1)?;
        let size = parse_decimal(lines.next().ok_or(NoteError::Checkpoint {
            line: 2,
            reason: "missing tree size",
        })?)?;
        let root_line = lines.next().ok_or(NoteError::Checkpoint {
            line: 3,
            reason: "missing root hash",
        })?;
        let root = decode_hash(root_line).ok_or(NoteError::Checkpoint {
            line: 3,
            reason: "root hash is not canonical base64 of 32 bytes",
        })?;
        let mut extensions = Vec::new();
        for (i, ext) in lines.enumerate() {
            check_line(ext, i + 4)?;
            extensions.push(ext.to_string());
        }
        Ok(Checkpoint {
            origin: origin.to_string(),
            size,
            root,
            extensions,
        })
    }
}

/// A checkpoint line must be non-empty and free of control characters.
fn check_line(line: &str, number: usize) -> Result<(), NoteError> {
    if line.is_empty() {
        return Err(NoteError::Checkpoint {
            line: number,
            reason: "line is empty",
        });
    }
    if line.chars().any(|c| c.is_control()) {
        return Err(NoteError::Checkpoint {
            line: number,
            reason: "line contains a control character",
        });
    }
    Ok(())
}

fn parse_decimal(s: &str) -> Result<u64, NoteError> {
    let bad = |reason| NoteError::Checkpoint { line: 2, reason };
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("tree size is not a decimal number"));
    }
    if s.len() > 1 && s.starts_with('0') {
        return Err(bad("tree size has a leading zero"));
    }
    s.parse::<u64>()
        .map_err(|_| bad("tree size does not fit in 64 bits"))
}

/// Decodes canonical standard base64 of exactly 32 bytes.
pub fn decode_hash(s: &str) -> Option<Hash> {
    if s.len() != 44 {
        return None;
    }
    let mut out = [0u8; 33];
    match B64.decode_slice(s, &mut out) {
        Ok(32) => {
            let mut h = [0u8; 32];
            h.copy_from_slice(&out[..32]);
            Some(h)
        }
        _ => None,
    }
}

/// One signature line of a signed note.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NoteSignature {
    /// The key name.
    pub name: String,
    /// The key id: first 4 bytes of `SHA-256(name || 0x0A || type || key)`.
    pub key_id: [u8; 4],
    /// The signature bytes after the key id (64 for Ed25519; timestamp and
    /// signature, 72 bytes, for a cosignature).
    pub signature: Vec<u8>,
}

impl NoteSignature {
    /// The signature line without its trailing newline:
    /// `— <name> <base64(key id || signature)>`.
    pub fn to_line(&self) -> String {
        let mut raw = Vec::with_capacity(4 + self.signature.len());
        raw.extend_from_slice(&self.key_id);
        raw.extend_from_slice(&self.signature);
        format!("{SIG_PREFIX}{} {}", self.name, B64.encode(raw))
    }

    fn parse_line(line: &str, number: usize) -> Result<Self, NoteError> {
        let bad = |reason| NoteError::SignatureLine {
            line: number,
            reason,
        };
        let rest = line
            .strip_prefix(SIG_PREFIX)
            .ok_or(bad("does not start with an em dash and a space"))?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or(bad("no space between key name and signature"))?;
        check_key_name(name).map_err(|_| bad("invalid key name"))?;
        let raw = B64
            .decode(b64)
            .map_err(|_| bad("signature is not valid standard base64"))?;
        if raw.len() < 5 {
            return Err(bad("signature is shorter than a key id and one byte"));
        }
        let key_id = [raw[0], raw[1], raw[2], raw[3]];
        Ok(NoteSignature {
            name: name.to_string(),
            key_id,
            signature: raw[4..].to_vec(),
        })
    }
}

/// A C2SP signed note: text plus signature lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedNote {
    /// The signed text; ends with a newline.
    pub text: String,
    /// The signatures, in note order.
    pub signatures: Vec<NoteSignature>,
}

impl SignedNote {
    /// A note with no signatures yet; checks the text.
    pub fn new(text: impl Into<String>) -> Result<Self, NoteError> {
        let text = text.into();
        check_note_text(&text)?;
        Ok(SignedNote {
            text,
            signatures: Vec::new(),
        })
    }

    /// Parses a signed note. The text ends at the last blank line; at least
    /// one signature line must follow it. Signatures are not verified here
    /// (see [`NoteVerifier`], [`CosignatureVerifier`] and the trust policy).
    pub fn parse(note: &str) -> Result<Self, NoteError> {
        if note.len() > MAX_NOTE_LEN {
            return Err(NoteError::TooLarge {
                len: note.len(),
                max: MAX_NOTE_LEN,
            });
        }
        if note.bytes().any(|b| b < 0x20 && b != b'\n') {
            return Err(NoteError::Text("note contains a control character"));
        }
        let split = note.rfind("\n\n").ok_or(NoteError::NoSignatureBlock)?;
        let text = &note[..split + 1];
        let sigs = &note[split + 2..];
        check_note_text(text)?;
        let Some(sigs) = sigs.strip_suffix('\n') else {
            return Err(NoteError::NoSignatureBlock);
        };
        let mut signatures = Vec::new();
        for (i, line) in sigs.split('\n').enumerate() {
            if i >= MAX_SIGNATURES {
                return Err(NoteError::TooManySignatures {
                    max: MAX_SIGNATURES,
                });
            }
            signatures.push(NoteSignature::parse_line(line, i + 1)?);
        }
        Ok(SignedNote {
            text: text.to_string(),
            signatures,
        })
    }

    /// Appends a signature line.
    pub fn add_signature(&mut self, sig: NoteSignature) {
        self.signatures.push(sig);
    }
}

/// The exact C2SP bytes: text, a blank line, one line per signature. (A note
/// with no signature renders as text plus a blank line, which
/// [`SignedNote::parse`] rejects: add a signature first.)
impl fmt::Display for SignedNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)?;
        f.write_str("\n")?;
        for s in &self.signatures {
            f.write_str(&s.to_line())?;
            f.write_str("\n")?;
        }
        Ok(())
    }
}

/// What [`NoteSigner`] and [`Cosigner`] share: a checked key name, an
/// Ed25519 key and its key id for one signed-note key type. Only the
/// message signed and the signature field differ between the two.
#[derive(Clone)]
struct KeyCore {
    name: String,
    key: SigningKey,
    alg: u8,
    key_id: [u8; 4],
}

impl KeyCore {
    fn new(name: String, key: SigningKey, alg: u8) -> Self {
        let key_id = key_id(&name, alg, key.verifying_key().as_bytes());
        KeyCore {
            name,
            key,
            alg,
            key_id,
        }
    }

    fn vkey(&self) -> String {
        format_vkey(&self.name, self.alg, self.key.verifying_key().as_bytes())
    }

    fn public(&self) -> PublicCore {
        PublicCore {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }

    /// A signature line whose field is `prefix || Ed25519(message)`.
    fn sign(&self, prefix: &[u8], message: &[u8]) -> NoteSignature {
        let mut signature = Vec::with_capacity(prefix.len() + 64);
        signature.extend_from_slice(prefix);
        signature.extend_from_slice(&self.key.sign(message).to_bytes());
        NoteSignature {
            name: self.name.clone(),
            key_id: self.key_id,
            signature,
        }
    }

    fn debug(&self, f: &mut fmt::Formatter<'_>, what: &str) -> fmt::Result {
        f.debug_struct(what)
            .field("name", &self.name)
            .field("key_id", &hex4(&self.key_id))
            .finish_non_exhaustive()
    }
}

/// What [`NoteVerifier`] and [`CosignatureVerifier`] share: a key name, its
/// key id and the Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PublicCore {
    name: String,
    key_id: [u8; 4],
    key: VerifyingKey,
}

impl PublicCore {
    fn from_vkey(vkey: &str, alg: u8) -> Result<Self, NoteError> {
        let (name, key_id, key) = parse_vkey(vkey, alg)?;
        Ok(PublicCore { name, key_id, key })
    }

    /// The 64-byte Ed25519 signature of `sig` after `prefix_len` bytes, when
    /// `sig` is of this key (same name and key id) and of that exact length.
    fn signature_of<'a>(
        &self,
        sig: &'a NoteSignature,
        prefix_len: usize,
    ) -> Option<(&'a [u8], Signature)> {
        if sig.name != self.name
            || sig.key_id != self.key_id
            || sig.signature.len() != prefix_len + 64
        {
            return None;
        }
        let (prefix, bytes) = sig.signature.split_at(prefix_len);
        let bytes: [u8; 64] = bytes.try_into().ok()?;
        Some((prefix, Signature::from_bytes(&bytes)))
    }

    fn verifies(&self, message: &[u8], sig: &Signature) -> bool {
        self.key.verify_strict(message, sig).is_ok()
    }
}

/// Signs notes with an Ed25519 key (signed-note key type `0x01`).
#[derive(Clone)]
pub struct NoteSigner(KeyCore);

impl fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.debug(f, "NoteSigner")
    }
}

impl NoteSigner {
    /// A signer named `name`; the name must pass [`check_key_name`].
    pub fn new(name: impl Into<String>, key: SigningKey) -> Result<Self, NoteError> {
        let name = name.into();
        check_key_name(&name)?;
        Ok(Self::new_checked(name, key))
    }

    /// A signer whose name was already checked.
    pub(crate) fn new_checked(name: String, key: SigningKey) -> Self {
        NoteSigner(KeyCore::new(name, key, ALG_ED25519))
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// First 4 bytes of `SHA-256(name || 0x0A || 0x01 || public key)`.
    pub fn key_id(&self) -> [u8; 4] {
        self.0.key_id
    }

    /// The matching verifier.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier(self.0.public())
    }

    /// The C2SP verifier key: `<name>+<hex key id>+<base64(0x01 || public key)>`.
    pub fn vkey(&self) -> String {
        self.0.vkey()
    }

    /// Signs the note text (the bytes before the blank line).
    pub fn sign(&self, text: &str) -> NoteSignature {
        self.0.sign(&[], text.as_bytes())
    }
}

/// Verifies Ed25519 signed-note signatures of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier(PublicCore);

impl NoteVerifier {
    /// Parses a C2SP vkey of type `0x01`, checking its key id.
    pub fn from_vkey(vkey: &str) -> Result<Self, NoteError> {
        PublicCore::from_vkey(vkey, ALG_ED25519).map(NoteVerifier)
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The key id.
    pub fn key_id(&self) -> [u8; 4] {
        self.0.key_id
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.0.key.to_bytes()
    }

    /// The vkey string this verifier was built from (canonical form).
    pub fn to_vkey(&self) -> String {
        format_vkey(&self.0.name, ALG_ED25519, self.0.key.as_bytes())
    }

    /// True when `sig` is this key's valid signature over `text`. A signature
    /// of another key (name or key id differs) is `false`.
    pub fn verify(&self, text: &str, sig: &NoteSignature) -> bool {
        self.0
            .signature_of(sig, 0)
            .is_some_and(|(_, s)| self.0.verifies(text.as_bytes(), &s))
    }
}

/// The message a cosignature signs: `"cosignature/v1\ntime <secs>\n" || text`.
fn cosigned_message(text: &str, time: u64) -> Vec<u8> {
    let mut msg = Vec::with_capacity(COSIGNATURE_HEADER.len() + 21 + text.len());
    msg.extend_from_slice(COSIGNATURE_HEADER.as_bytes());
    msg.extend_from_slice(time.to_string().as_bytes());
    msg.push(b'\n');
    msg.extend_from_slice(text.as_bytes());
    msg
}

/// Adds witness cosignatures (C2SP tlog-cosignature/v1, key type `0x04`).
#[derive(Clone)]
pub struct Cosigner(KeyCore);

impl fmt::Debug for Cosigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.debug(f, "Cosigner")
    }
}

impl Cosigner {
    /// A cosigner named `name`; the name must pass [`check_key_name`].
    pub fn new(name: impl Into<String>, key: SigningKey) -> Result<Self, NoteError> {
        let name = name.into();
        check_key_name(&name)?;
        Ok(Self::new_checked(name, key))
    }

    /// A cosigner whose name was already checked.
    pub(crate) fn new_checked(name: String, key: SigningKey) -> Self {
        Cosigner(KeyCore::new(name, key, ALG_COSIGNATURE_V1))
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// First 4 bytes of `SHA-256(name || 0x0A || 0x04 || public key)`.
    pub fn key_id(&self) -> [u8; 4] {
        self.0.key_id
    }

    /// The matching verifier.
    pub fn verifier(&self) -> CosignatureVerifier {
        CosignatureVerifier(self.0.public())
    }

    /// The C2SP verifier key: `<name>+<hex key id>+<base64(0x04 || public key)>`.
    pub fn vkey(&self) -> String {
        self.0.vkey()
    }

    /// Cosigns the note text at `unix_seconds`. The signature field is
    /// `timestamp:u64 big-endian || Ed25519 signature` over
    /// `"cosignature/v1\ntime <unix_seconds>\n" || text`.
    pub fn cosign(&self, text: &str, unix_seconds: u64) -> NoteSignature {
        self.0.sign(
            &unix_seconds.to_be_bytes(),
            &cosigned_message(text, unix_seconds),
        )
    }
}

/// Verifies tlog-cosignature/v1 cosignatures of one witness key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosignatureVerifier(PublicCore);

impl CosignatureVerifier {
    /// Parses a C2SP vkey of type `0x04`, checking its key id.
    pub fn from_vkey(vkey: &str) -> Result<Self, NoteError> {
        PublicCore::from_vkey(vkey, ALG_COSIGNATURE_V1).map(CosignatureVerifier)
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The key id.
    pub fn key_id(&self) -> [u8; 4] {
        self.0.key_id
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.0.key.to_bytes()
    }

    /// The canonical vkey string.
    pub fn to_vkey(&self) -> String {
        format_vkey(&self.0.name, ALG_COSIGNATURE_V1, self.0.key.as_bytes())
    }

    /// The cosignature's timestamp (Unix seconds) when `sig` is this key's
    /// valid cosignature over `text`; `None` otherwise.
    pub fn verify(&self, text: &str, sig: &NoteSignature) -> Option<u64> {
        let (prefix, s) = self.0.signature_of(sig, 8)?;
        let time = u64::from_be_bytes(prefix.try_into().ok()?);
        self.0
            .verifies(&cosigned_message(text, time), &s)
            .then_some(time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn signer(name: &str, seed: u8) -> NoteSigner {
        NoteSigner::new(name, key(seed)).unwrap()
    }

    #[test]
    fn checkpoint_body_layout() {
        let c = Checkpoint::new("dlog/demo", 42, [7u8; 32]).unwrap();
        assert_eq!(
            c.to_body(),
            "dlog/demo\n42\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n"
        );
        assert_eq!(Checkpoint::parse_body(&c.to_body()).unwrap(), c);
    }

    #[test]
    fn checkpoint_parse_is_strict() {
        let root = B64.encode([1u8; 32]);
        let ok = |s: &str| Checkpoint::parse_body(s).is_ok();
        assert!(ok(&format!("o\n0\n{root}\n")));
        assert!(ok(&format!("o\n18446744073709551615\n{root}\n")));
        assert!(!ok(&format!("o\n18446744073709551616\n{root}\n")));
        assert!(!ok(&format!("o\n01\n{root}\n")));
        assert!(!ok(&format!("o\n+1\n{root}\n")));
        assert!(!ok(&format!("o\n-1\n{root}\n")));
        assert!(!ok(&format!("o\n 1\n{root}\n")));
        assert!(!ok(&format!("o\n\n{root}\n")));
        assert!(!ok(&format!("\n1\n{root}\n")));
        assert!(!ok(&format!("o\n1\n{root}")));
        assert!(!ok("o\n1\n"));
        assert!(!ok("o\n1\nAAAA\n"));
        assert!(!ok(&format!("o\n1\n{}\n", B64.encode([1u8; 31]))));
        assert!(!ok(&format!("o\n1\n{}\n", B64.encode([1u8; 33]))));
        // Non-canonical trailing bits in the last base64 character.
        let mut noncanon = root.clone();
        noncanon.replace_range(42..43, "F");
        assert_ne!(noncanon, root);
        assert!(!ok(&format!("o\n1\n{noncanon}\n")));
        assert!(!ok(&format!("o\n1\n{root}\n\n")));
        assert!(!ok(&format!("o\r\n1\n{root}\n")));
        let with_ext = format!("o\n1\n{root}\next one\nx\n");
        let c = Checkpoint::parse_body(&with_ext).unwrap();
        assert_eq!(c.extensions, vec!["ext one".to_string(), "x".to_string()]);
        assert_eq!(c.to_body(), with_ext);
        assert!(Checkpoint::new("a\nb", 1, [0; 32]).is_err());
        assert!(Checkpoint::new("", 1, [0; 32]).is_err());
    }

    #[test]
    fn key_id_and_vkey_match_go_reference() {
        // Known answer from golang.org/x/mod/sumdb/note (note_test.go):
        // PeterNeumann's key.
        let vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
        let v = NoteVerifier::from_vkey(vkey).unwrap();
        assert_eq!(v.name(), "PeterNeumann");
        assert_eq!(v.key_id(), [0xc7, 0x4f, 0x20, 0xa3]);
        assert_eq!(v.to_vkey(), vkey);
        // And its signature over the example text, from the same test file.
        let text = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n";
        let note = format!(
            "{text}\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
        );
        let n = SignedNote::parse(&note).unwrap();
        assert_eq!(n.text, text);
        assert!(v.verify(&n.text, &n.signatures[0]));
        assert_eq!(n.to_string(), note);
    }

    #[test]
    fn real_world_cosignature_verifies() {
        // A Certificate Transparency staging checkpoint with witness
        // cosignatures, as served in 2025 (vector from a third-party
        // checkpoint library's tests); remora.n621.de is a
        // tlog-cosignature/v1 witness.
        let note = "arche2025h1.staging.ct.transparency.dev\n1432088532\nU7WM79jrzyhGZ5/GUBTpM7NzwdyfFx61t3RovgcC4Ro=\n\n\
\u{2014} arche2025h1.staging.ct.transparency.dev zTM8sQAAAZ5W0WdjBAMARjBEAiBjW5IQf9pvsYLfQFX6hoGREPMHbdQ3urbllzalApkptQIgIpwtEroeW2BXaHAI4kJXFbon5Ch9MNL5zRNZ55lvGt0=\n\
\u{2014} arche2025h1.staging.ct.transparency.dev ui8GwCF1+kWqZrxGdhj4aX3gcw7XUlXQQabg/27lefwhUkzbC3NygNI75MdhL1bfTW9g8Ei59RA23oHP7Ry1k3ZFWwQ=\n\
\u{2014} transparency.dev/DEV:witness-little-garden 2AQqhwAAAABqEiEgzgFIqqhbUoDwjMWE6UP8nd8/KYTzwZ2rhIgcqoXHAwVkjZr4AscylP3v7sEodkRAErumC2q44vdgJY096st5BQ==\n\
\u{2014} witness1.smartit.nu/witness1 pIyCDwAAAABqEiEghIp82KWebrw7/oHQwlTAm3g2RKS4+eebl8eO0WH+/iEcxZ75W3u5hNI7TOQtmJbqmNWVuE0tgh0XwzdZsDsUAQ==\n\
\u{2014} remora.n621.de 2net5wAAAABqEiEgPlfF3V06o0Y+fHM+J5J9s27wgxxcOVSpZ/2g/KSiXCg9DEZI+aVCIobWX9sXTynk5XeU/zZ0WBxtqB0DrAWfBw==\n\
\u{2014} witness.stagemole.eu Z/euoAAAAABqEiEgw0i+7g2ENfDAWHmtRzCfKTHSDwYDJA2NmKeGi9Y8FtEyOUvVr+AJmIY/2TUFucgKi7lI7cUiOvKFYe/TmN9DAg==\n";
        let n = SignedNote::parse(note).unwrap();
        assert_eq!(n.to_string(), note);
        let cp = Checkpoint::parse_body(&n.text).unwrap();
        assert_eq!(cp.size, 1_432_088_532);
        let log = NoteVerifier::from_vkey(
            "arche2025h1.staging.ct.transparency.dev+ba2f06c0+AU0vHmlGCS/PdN8b2OaGmKprLI8HKM+dJ472xgFYh15f",
        )
        .unwrap();
        assert!(n.signatures.iter().any(|s| log.verify(&n.text, s)));
        let remora = CosignatureVerifier::from_vkey(
            "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2",
        )
        .unwrap();
        let times: Vec<u64> = n
            .signatures
            .iter()
            .filter_map(|s| remora.verify(&n.text, s))
            .collect();
        assert_eq!(times.len(), 1);
        assert_eq!(
            times[0],
            u64::from_be_bytes([0, 0, 0, 0, 0x6a, 0x12, 0x21, 0x20])
        );
        // A changed body breaks both.
        let other = n.text.replace("1432088532", "42");
        assert!(!n.signatures.iter().any(|s| log.verify(&other, s)));
        assert!(!n
            .signatures
            .iter()
            .any(|s| remora.verify(&other, s).is_some()));
    }

    #[test]
    fn third_party_vkeys_roundtrip() {
        // transparency-dev/formats: a type 0x01 key whose base64 contains '+'.
        let plus = "TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6";
        assert_eq!(NoteVerifier::from_vkey(plus).unwrap().to_vkey(), plus);
        let example = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
        assert_eq!(NoteVerifier::from_vkey(example).unwrap().to_vkey(), example);
        let enoch = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
        assert_eq!(NoteVerifier::from_vkey(enoch).unwrap().to_vkey(), enoch);
    }

    #[test]
    fn sign_verify_roundtrip() {
        let s = signer("node-1", 1);
        let v = NoteVerifier::from_vkey(&s.vkey()).unwrap();
        assert_eq!(v, s.verifier());
        let body = Checkpoint::new("dlog/demo", 3, [9; 32]).unwrap().to_body();
        let mut note = SignedNote::new(body.clone()).unwrap();
        note.add_signature(s.sign(&body));
        let text = note.to_string();
        assert!(text.starts_with(&format!("{body}\n\u{2014} node-1 ")));
        let parsed = SignedNote::parse(&text).unwrap();
        assert_eq!(parsed, note);
        assert!(v.verify(&parsed.text, &parsed.signatures[0]));
        assert!(!v.verify("other\n", &parsed.signatures[0]));
        let other = signer("node-2", 2).verifier();
        assert!(!other.verify(&parsed.text, &parsed.signatures[0]));
        let mut bad = parsed.signatures[0].clone();
        bad.signature[10] ^= 1;
        assert!(!v.verify(&parsed.text, &bad));
        bad.signature.pop();
        assert!(!v.verify(&parsed.text, &bad));
    }

    #[test]
    fn cosignature_roundtrip() {
        let c = Cosigner::new("witness", key(3)).unwrap();
        let vkey = c.vkey();
        assert!(
            vkey.contains("+B"),
            "type byte 0x04 encodes as B...: {vkey}"
        );
        let v = CosignatureVerifier::from_vkey(&vkey).unwrap();
        assert_eq!(v.to_vkey(), vkey);
        assert!(NoteVerifier::from_vkey(&vkey).is_err());
        assert!(CosignatureVerifier::from_vkey(&signer("n", 1).vkey()).is_err());
        let text = "dlog/x\n1\nAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n";
        let sig = c.cosign(text, 1_700_000_000);
        assert_eq!(sig.signature.len(), 72);
        assert_eq!(&sig.signature[..8], &1_700_000_000u64.to_be_bytes());
        assert_eq!(v.verify(text, &sig), Some(1_700_000_000));
        // The signed message is exactly the C2SP one.
        let msg = format!("cosignature/v1\ntime 1700000000\n{text}");
        let vk = key(3).verifying_key();
        let s: [u8; 64] = sig.signature[8..].try_into().unwrap();
        vk.verify_strict(msg.as_bytes(), &Signature::from_bytes(&s))
            .unwrap();
        // Changing the timestamp breaks it.
        let mut bad = sig.clone();
        bad.signature[7] ^= 1;
        assert_eq!(v.verify(text, &bad), None);
        assert_eq!(v.verify("dlog/y\n", &sig), None);
        // Key ids differ between the note key and the cosigner key of one key.
        let ns = NoteSigner::new("witness", key(3)).unwrap();
        assert_ne!(ns.key_id(), c.key_id());
    }

    #[test]
    fn vkey_errors() {
        let good = signer("node-1", 1).vkey();
        assert!(NoteVerifier::from_vkey(&good).is_ok());
        let e = |s: &str| NoteVerifier::from_vkey(s).unwrap_err();
        assert!(matches!(e("node-1"), NoteError::Vkey(_)));
        let (name_id, key) = good.rsplit_once('+').unwrap();
        let (name, id) = name_id.split_once('+').unwrap();
        assert!(matches!(
            e(&format!("{name}+00000000+{key}")),
            NoteError::KeyIdMismatch { .. }
        ));
        assert!(matches!(
            e(&format!("other+{id}+{key}")),
            NoteError::KeyIdMismatch { .. }
        ));
        assert!(matches!(
            e(&format!("{name}+{id}+!!!!")),
            NoteError::Vkey(_)
        ));
        assert!(matches!(
            e(&format!("{name}+xyz+{key}")),
            NoteError::Vkey(_)
        ));
        assert!(matches!(e(&format!("+{id}+{key}")), NoteError::KeyName(_)));
        let short = B64.encode([1u8; 10]);
        assert!(matches!(
            e(&format!("{name}+{id}+{short}")),
            NoteError::Vkey(_)
        ));
        // Uppercase hex is accepted, as in the Go implementation.
        assert!(NoteVerifier::from_vkey(&format!("{name}+{}+{key}", id.to_uppercase())).is_ok());
    }

    #[test]
    fn note_parse_errors() {
        let s = signer("k", 1);
        let sig = s.sign("hello\n").to_line();
        assert!(SignedNote::parse(&format!("hello\n\n{sig}\n")).is_ok());
        let err = |n: &str| SignedNote::parse(n).unwrap_err();
        assert_eq!(err("hello\n"), NoteError::NoSignatureBlock);
        assert_eq!(err("hello\n\n"), NoteError::NoSignatureBlock);
        assert_eq!(err(&format!("hello\n\n{sig}")), NoteError::NoSignatureBlock);
        assert!(matches!(
            err(&format!("hello\n\n{sig}\n\n")),
            NoteError::Text(_) | NoteError::NoSignatureBlock
        ));
        assert!(matches!(
            err(&format!("he\tllo\n\n{sig}\n")),
            NoteError::Text(_)
        ));
        assert!(matches!(
            err("hello\n\n- k AAAAAAA=\n"),
            NoteError::SignatureLine { line: 1, .. }
        ));
        assert!(matches!(
            err(&format!("hello\n\n{sig}\n\u{2014} k AAAA\n")),
            NoteError::SignatureLine { line: 2, .. }
        ));
        assert!(matches!(
            err("hello\n\n\u{2014} k+x AAAAAAA=\n"),
            NoteError::SignatureLine { .. }
        ));
        assert!(matches!(
            err("hello\n\n\u{2014} k\n"),
            NoteError::SignatureLine { .. }
        ));
        let many: String = std::iter::repeat_n(format!("{sig}\n"), MAX_SIGNATURES + 1).collect();
        assert!(matches!(
            err(&format!("hello\n\n{many}")),
            NoteError::TooManySignatures { .. }
        ));
        let big = "a".repeat(MAX_NOTE_LEN + 1);
        assert!(matches!(err(&big), NoteError::TooLarge { .. }));
        // Text with an inner blank line: the last blank line separates.
        let n = SignedNote::parse(&format!("a\n\nb\n\n{sig}\n")).unwrap();
        assert_eq!(n.text, "a\n\nb\n");
    }

    #[test]
    fn key_names() {
        assert!(check_key_name("node-1").is_ok());
        assert!(check_key_name("dlog.example/node-1").is_ok());
        for bad in ["", "a b", "a+b", "a\nb", "a\u{3000}b"] {
            assert!(check_key_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_key_name(&"x".repeat(MAX_KEY_NAME_LEN + 1)).is_err());
        assert!(NoteSigner::new("a b", key(1)).is_err());
        assert!(Cosigner::new("", key(1)).is_err());
    }

    fn origin() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9./_ -]{1,40}".prop_filter("no blank", |s| !s.is_empty())
    }

    proptest! {
        #[test]
        fn checkpoint_roundtrip(o in origin(), size: u64, root: [u8; 32],
                                exts in proptest::collection::vec("[a-z ]{1,10}", 0..3)) {
            let mut c = Checkpoint::new(o, size, root).unwrap();
            c.extensions = exts;
            let body = c.to_body();
            prop_assert_eq!(Checkpoint::parse_body(&body).unwrap(), c);
        }

        #[test]
        fn note_roundtrip(o in origin(), size: u64, root: [u8; 32], seeds in proptest::collection::vec(any::<u8>(), 1..4), t: u64) {
            let body = Checkpoint::new(o, size, root).unwrap().to_body();
            let mut note = SignedNote::new(body.clone()).unwrap();
            for (i, seed) in seeds.iter().enumerate() {
                note.add_signature(signer(&format!("n{i}"), *seed).sign(&body));
            }
            note.add_signature(Cosigner::new("w", key(9)).unwrap().cosign(&body, t));
            let s = note.to_string();
            let parsed = SignedNote::parse(&s).unwrap();
            prop_assert_eq!(&parsed, &note);
            prop_assert_eq!(parsed.to_string(), s);
            for (i, seed) in seeds.iter().enumerate() {
                let ok = signer(&format!("n{i}"), *seed).verifier().verify(&body, &parsed.signatures[i]);
                prop_assert!(ok);
            }
            let w = Cosigner::new("w", key(9)).unwrap().verifier();
            prop_assert_eq!(w.verify(&body, &parsed.signatures[seeds.len()]), Some(t));
        }

        #[test]
        fn parsers_never_panic(s in "(?s).{0,300}") {
            let _ = SignedNote::parse(&s);
            let _ = Checkpoint::parse_body(&s);
            let _ = NoteVerifier::from_vkey(&s);
            let _ = CosignatureVerifier::from_vkey(&s);
        }

        #[test]
        fn structured_garbage_never_panics(lines in proptest::collection::vec(
            prop_oneof![
                Just(String::new()),
                Just("\u{2014} k AAAAAAAAAAAAAAAAAAAAAAA=".to_string()),
                "\u{2014} [a-z+ ]{0,5} [A-Za-z0-9+/=]{0,12}",
                "[0-9]{0,22}",
                "[A-Za-z0-9+/=]{40,46}",
            ], 0..8)) {
            let s: String = lines.iter().map(|l| format!("{l}\n")).collect();
            if let Ok(n) = SignedNote::parse(&s) {
                prop_assert_eq!(n.to_string(), s.clone());
            }
            if let Ok(c) = Checkpoint::parse_body(&s) {
                prop_assert_eq!(c.to_body(), s);
            }
        }
    }
}
