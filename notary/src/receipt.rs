//! Receipts: C2SP `tlog-proof` files (DESIGN §6) and their JSON form.
//!
//! ```text
//! c2sp.org/tlog-proof@v1
//! extra <base64 canonical entry bytes>
//! index <leaf index>
//! <base64 inclusion hash, leaf's sibling first>
//! ...
//!
//! <checkpoint note, verbatim, with signatures and cosignatures>
//! ```
//!
//! Hashes are BLAKE3 (RFC 9162 shape). The JSON form is
//! `{"version":1,"index":..,"entry":"<b64>","tree_size":..,"inclusion":["<b64>",..],"checkpoint":"<note text>"}`.
//!
//! Parsing checks syntax only (and that the checkpoint is a well-formed
//! signed checkpoint note); [`crate::verify`] checks signatures and proofs.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use dlog_crypto::note::{decode_hash, Checkpoint, NoteError, SignedNote, MAX_NOTE_LEN};
use dlog_crypto::Hash;
use dlog_ledger::entry::{DEFAULT_MAX_PAYLOAD, ENTRY_HEADER_LEN};

/// First line of a tlog-proof.
pub const HEADER: &str = "c2sp.org/tlog-proof@v1";
/// Largest entry a receipt may carry, in bytes.
pub const MAX_ENTRY_LEN: usize = ENTRY_HEADER_LEN + DEFAULT_MAX_PAYLOAD as usize;
/// Most inclusion hashes a receipt may carry (a tree of 2^64 leaves needs 64).
pub const MAX_INCLUSION_HASHES: usize = 64;
/// Largest receipt text (either form) accepted, in bytes.
pub const MAX_RECEIPT_LEN: usize = MAX_ENTRY_LEN / 3 * 4 + 8 + MAX_NOTE_LEN * 2 + 64 * 1024;

/// Why a receipt could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// The receipt is larger than [`MAX_RECEIPT_LEN`].
    #[error("receipt is {len} bytes, larger than the {max}-byte limit")]
    TooLarge {
        /// Receipt length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A tlog-proof line is malformed.
    #[error("malformed tlog-proof, line {line}: {reason}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// The JSON form is malformed.
    #[error("malformed JSON receipt: {0}")]
    Json(String),
    /// The embedded checkpoint is not a well-formed checkpoint note.
    #[error("receipt checkpoint is malformed: {0}")]
    Checkpoint(NoteError),
}

/// A self-contained, offline-verifiable proof that an entry is in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Canonical entry bytes (DESIGN §2).
    pub entry: Vec<u8>,
    /// The entry's leaf index.
    pub index: u64,
    /// Inclusion proof hashes, the leaf's sibling first.
    pub inclusion: Vec<Hash>,
    /// The checkpoint note, verbatim, with signatures and cosignatures.
    pub checkpoint: String,
}

/// Parses the signed checkpoint note and its body (syntax only).
fn parse_checkpoint(note: &str) -> Result<Checkpoint, ReceiptError> {
    let n = SignedNote::parse(note).map_err(ReceiptError::Checkpoint)?;
    Checkpoint::parse_body(&n.text).map_err(ReceiptError::Checkpoint)
}

/// Splits the first line (without its newline) off `rest`.
fn take_line<'a>(rest: &mut &'a str) -> Option<&'a str> {
    let (line, tail) = rest.split_once('\n')?;
    *rest = tail;
    Some(line)
}

fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonReceipt {
    version: u32,
    index: u64,
    entry: String,
    tree_size: u64,
    inclusion: Vec<String>,
    checkpoint: String,
}

impl Receipt {
    /// The tree size of the embedded checkpoint (syntax check only).
    pub fn tree_size(&self) -> Result<u64, ReceiptError> {
        parse_checkpoint(&self.checkpoint).map(|c| c.size)
    }

    /// The `c2sp.org/tlog-proof@v1` text.
    pub fn to_tlog_proof(&self) -> String {
        let mut s = String::with_capacity(
            64 + self.entry.len() * 4 / 3 + self.inclusion.len() * 45 + self.checkpoint.len(),
        );
        s.push_str(HEADER);
        s.push_str("\nextra ");
        s.push_str(&B64.encode(&self.entry));
        s.push_str("\nindex ");
        s.push_str(&self.index.to_string());
        s.push('\n');
        for h in &self.inclusion {
            s.push_str(&B64.encode(h));
            s.push('\n');
        }
        s.push('\n');
        s.push_str(&self.checkpoint);
        s
    }

    /// Parses a `c2sp.org/tlog-proof@v1` text. The `extra` line (the entry
    /// bytes) is required for DLog receipts; the checkpoint must be a
    /// well-formed signed checkpoint note.
    pub fn parse_tlog_proof(text: &str) -> Result<Self, ReceiptError> {
        if text.len() > MAX_RECEIPT_LEN {
            return Err(ReceiptError::TooLarge {
                len: text.len(),
                max: MAX_RECEIPT_LEN,
            });
        }
        let bad = |line, reason| ReceiptError::Syntax { line, reason };
        let mut rest = text;
        match take_line(&mut rest) {
            Some(HEADER) => {}
            _ => return Err(bad(1, "first line is not c2sp.org/tlog-proof@v1")),
        }
        let extra = take_line(&mut rest).ok_or(bad(2, "missing extra line"))?;
        let entry_b64 = extra
            .strip_prefix("extra ")
            .ok_or(bad(2, "missing \"extra <base64 entry>\" line"))?;
        if entry_b64.len() > MAX_ENTRY_LEN.div_ceil(3) * 4 {
            return Err(bad(2, "entry is larger than the payload limit"));
        }
        let entry = B64
            .decode(entry_b64)
            .map_err(|_| bad(2, "entry is not valid standard base64"))?;
        let index_line = take_line(&mut rest).ok_or(bad(3, "missing index line"))?;
        let index = index_line
            .strip_prefix("index ")
            .and_then(parse_decimal)
            .ok_or(bad(3, "not \"index <decimal, no leading zero>\""))?;
        let mut inclusion = Vec::new();
        loop {
            let n = 4 + inclusion.len();
            let line =
                take_line(&mut rest).ok_or(bad(n, "missing blank line before the checkpoint"))?;
            if line.is_empty() {
                break;
            }
            if inclusion.len() == MAX_INCLUSION_HASHES {
                return Err(bad(n, "more than 64 inclusion hashes"));
            }
            inclusion
                .push(decode_hash(line).ok_or(bad(n, "not canonical base64 of a 32-byte hash"))?);
        }
        parse_checkpoint(rest)?;
        Ok(Receipt {
            entry,
            index,
            inclusion,
            checkpoint: rest.to_string(),
        })
    }

    /// The JSON form (compact, one line). A receipt whose checkpoint does
    /// not parse gets `"tree_size":0`; such a receipt never verifies.
    pub fn to_json(&self) -> String {
        let j = JsonReceipt {
            version: 1,
            index: self.index,
            entry: B64.encode(&self.entry),
            tree_size: self.tree_size().unwrap_or(0),
            inclusion: self.inclusion.iter().map(|h| B64.encode(h)).collect(),
            checkpoint: self.checkpoint.clone(),
        };
        serde_json::to_string(&j).unwrap_or_default()
    }

    /// Parses the JSON form. `version` must be 1, unknown fields are
    /// rejected, and `tree_size` must equal the checkpoint's tree size.
    pub fn from_json(text: &str) -> Result<Self, ReceiptError> {
        if text.len() > MAX_RECEIPT_LEN {
            return Err(ReceiptError::TooLarge {
                len: text.len(),
                max: MAX_RECEIPT_LEN,
            });
        }
        let j: JsonReceipt =
            serde_json::from_str(text).map_err(|e| ReceiptError::Json(e.to_string()))?;
        if j.version != 1 {
            return Err(ReceiptError::Json(format!(
                "version {} is not supported (expected 1)",
                j.version
            )));
        }
        if j.inclusion.len() > MAX_INCLUSION_HASHES {
            return Err(ReceiptError::Json("more than 64 inclusion hashes".into()));
        }
        let entry = B64
            .decode(&j.entry)
            .map_err(|_| ReceiptError::Json("entry is not valid standard base64".into()))?;
        if entry.len() > MAX_ENTRY_LEN {
            return Err(ReceiptError::Json(
                "entry is larger than the payload limit".into(),
            ));
        }
        let inclusion = j
            .inclusion
            .iter()
            .enumerate()
            .map(|(i, h)| {
                decode_hash(h).ok_or_else(|| {
                    ReceiptError::Json(format!(
                        "inclusion[{i}] is not canonical base64 of a 32-byte hash"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let size = parse_checkpoint(&j.checkpoint)?.size;
        if size != j.tree_size {
            return Err(ReceiptError::Json(format!(
                "tree_size {} differs from the checkpoint's tree size {size}",
                j.tree_size
            )));
        }
        Ok(Receipt {
            entry,
            index: j.index,
            inclusion,
            checkpoint: j.checkpoint,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dlog_crypto::note::NoteSigner;
    use ed25519_dalek::SigningKey;
    use proptest::prelude::*;

    fn checkpoint(size: u64) -> String {
        let s = NoteSigner::new("node-1", SigningKey::from_bytes(&[1; 32])).unwrap();
        let body = Checkpoint::new("dlog/demo", size, [2; 32])
            .unwrap()
            .to_body();
        let mut n = SignedNote::new(body.clone()).unwrap();
        n.add_signature(s.sign(&body));
        n.to_string()
    }

    fn receipt() -> Receipt {
        Receipt {
            entry: vec![1, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 1, b'x'],
            index: 5,
            inclusion: vec![[7; 32], [8; 32], [9; 32]],
            checkpoint: checkpoint(8),
        }
    }

    #[test]
    fn tlog_proof_layout() {
        let r = receipt();
        let text = r.to_tlog_proof();
        let want = format!(
            "c2sp.org/tlog-proof@v1\nextra {}\nindex 5\n{}\n{}\n{}\n\n{}",
            B64.encode(&r.entry),
            B64.encode([7u8; 32]),
            B64.encode([8u8; 32]),
            B64.encode([9u8; 32]),
            r.checkpoint
        );
        assert_eq!(text, want);
        assert_eq!(Receipt::parse_tlog_proof(&text).unwrap(), r);
        // No inclusion hashes (a tree of one leaf).
        let single = Receipt {
            index: 0,
            inclusion: vec![],
            checkpoint: checkpoint(1),
            ..r
        };
        assert_eq!(
            Receipt::parse_tlog_proof(&single.to_tlog_proof()).unwrap(),
            single
        );
    }

    #[test]
    fn json_layout() {
        let r = receipt();
        let j = r.to_json();
        assert!(
            j.starts_with("{\"version\":1,\"index\":5,\"entry\":\""),
            "{j}"
        );
        assert!(j.contains("\"tree_size\":8,\"inclusion\":[\""));
        assert_eq!(Receipt::from_json(&j).unwrap(), r);
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["checkpoint"].as_str().unwrap(), r.checkpoint);
    }

    #[test]
    fn tlog_proof_errors() {
        let good = receipt().to_tlog_proof();
        let line = |s: &str| match Receipt::parse_tlog_proof(s) {
            Err(ReceiptError::Syntax { line, .. }) => line,
            other => panic!("{other:?}"),
        };
        assert_eq!(line(&good.replacen("tlog-proof@v1", "tlog-proof@v2", 1)), 1);
        assert_eq!(line(&good.replacen("extra ", "extra: ", 1)), 2);
        assert_eq!(line(&good.replacen("index 5", "index 05", 1)), 3);
        assert_eq!(line(&good.replacen("index 5", "index -5", 1)), 3);
        assert_eq!(
            line(&good.replacen("index 5", "index 18446744073709551616", 1)),
            3
        );
        let h = B64.encode([8u8; 32]);
        assert_eq!(line(&good.replacen(&h, &h[..40], 1)), 5);
        // Drop the extra line entirely.
        let no_extra: String = good
            .lines()
            .filter(|l| !l.starts_with("extra"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(line(&no_extra), 2);
        assert_eq!(line("c2sp.org/tlog-proof@v1\nextra AQ==\nindex 0\n"), 4);
        // A mangled checkpoint.
        let bad_cp = good.replacen("dlog/demo\n8\n", "dlog/demo\n08\n", 1);
        assert!(matches!(
            Receipt::parse_tlog_proof(&bad_cp),
            Err(ReceiptError::Checkpoint(_))
        ));
        let trunc = &good[..good.len() - 3];
        assert!(Receipt::parse_tlog_proof(trunc).is_err());
        let too_many: String = std::iter::repeat_n(format!("{h}\n"), 65).collect();
        let s = format!(
            "c2sp.org/tlog-proof@v1\nextra AQ==\nindex 0\n{too_many}\n{}",
            checkpoint(1)
        );
        assert_eq!(line(&s), 68);
    }

    #[test]
    fn json_errors() {
        let r = receipt();
        let j = r.to_json();
        let e = |s: &str| Receipt::from_json(s).unwrap_err();
        assert!(matches!(
            e(&j.replacen("\"version\":1", "\"version\":2", 1)),
            ReceiptError::Json(_)
        ));
        assert!(matches!(
            e(&j.replacen("\"tree_size\":8", "\"tree_size\":9", 1)),
            ReceiptError::Json(_)
        ));
        assert!(matches!(
            e(&j.replacen("{", "{\"x\":1,", 1)),
            ReceiptError::Json(_)
        ));
        assert!(matches!(e("[]"), ReceiptError::Json(_)));
        assert!(matches!(e(&"[".repeat(10_000)), ReceiptError::Json(_)));
        let bad_hash = j.replacen(&B64.encode([7u8; 32]), "AAAA", 1);
        assert_eq!(
            e(&bad_hash).to_string(),
            "malformed JSON receipt: inclusion[0] is not canonical base64 of a 32-byte hash"
        );
    }

    fn arb_receipt() -> impl Strategy<Value = Receipt> {
        (
            proptest::collection::vec(any::<u8>(), 0..100),
            any::<u64>(),
            proptest::collection::vec(any::<[u8; 32]>(), 0..10),
            any::<u64>(),
        )
            .prop_map(|(entry, index, inclusion, size)| Receipt {
                entry,
                index,
                inclusion,
                checkpoint: checkpoint(size),
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn roundtrips(r in arb_receipt()) {
            prop_assert_eq!(Receipt::parse_tlog_proof(&r.to_tlog_proof()).unwrap(), r.clone());
            prop_assert_eq!(Receipt::from_json(&r.to_json()).unwrap(), r);
        }

        #[test]
        fn parsers_never_panic(s in "(?s).{0,400}") {
            let _ = Receipt::parse_tlog_proof(&s);
            let _ = Receipt::from_json(&s);
            let with_header = format!("c2sp.org/tlog-proof@v1\n{s}");
            let _ = Receipt::parse_tlog_proof(&with_header);
        }

        #[test]
        fn mutated_receipts_never_panic(r in arb_receipt(), pos: usize, byte: u8) {
            let mut bytes = r.to_tlog_proof().into_bytes();
            let p = pos % bytes.len();
            bytes[p] = byte;
            if let Ok(s) = String::from_utf8(bytes) {
                let _ = Receipt::parse_tlog_proof(&s);
            }
            let mut bytes = r.to_json().into_bytes();
            let p = pos % bytes.len();
            bytes[p] = byte;
            if let Ok(s) = String::from_utf8(bytes) {
                let _ = Receipt::from_json(&s);
            }
        }
    }
}
