//! DLog notary: notarization payloads, tlog-proof receipts and their offline
//! verification (DESIGN §6).
//!
//! * [`payload`]: the `dlog-notary/v1` entry payload and streaming file digests.
//! * [`receipt`]: [`Receipt`], a C2SP `tlog-proof` (text) or its JSON form.
//! * [`verify`]: [`verify_receipt`] and [`verify_notarized_file`], which need
//!   only a [`TrustPolicy`](dlog_crypto::TrustPolicy) — no server, no network.
//!
//! Parsing is bounded and never panics; the only IO is reading the file to
//! hash ([`payload::hash_file`], [`verify::verify_notarized_file`]).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod payload;
pub mod receipt;
pub mod verify;

pub use payload::{DigestAlg, NotaryPayload, PayloadError};
pub use receipt::{Receipt, ReceiptError};
pub use verify::{
    verify_notarized_digest, verify_notarized_file, verify_receipt, VerifiedNotarization,
    VerifiedReceipt, VerifyError,
};
