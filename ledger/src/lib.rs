//! DLog's storage engine: canonical entries, hash-chained segment files with a
//! BLAKE3 Merkle root per segment, recovery and scrub.
#![deny(missing_docs)]

pub mod entry;

pub use entry::{Entry, EntryError, EntryKind};
