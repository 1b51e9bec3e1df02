//! DLog's storage engine: canonical entries, hash-chained segment files with a
//! BLAKE3 Merkle root per segment, recovery and scrub.
//!
//! * [`entry`] and [`segment`] are pure codecs over bytes (fuzzed, no IO).
//! * [`store`] is the file store: group of segment files, crash recovery,
//!   proofs from stored nodes (never from payloads).
//! * [`scrub`] re-reads everything and names what is damaged; [`repair`]
//!   cuts a damaged open segment, keeping the cut bytes as evidence.
#![deny(missing_docs)]

pub mod commit;
pub mod entry;
pub mod error;
pub mod fsutil;
pub mod repair;
pub mod scrub;
pub mod segment;
pub mod store;
pub mod tiles;

pub use commit::{BatchError, GroupCommit};
pub use entry::{Entry, EntryError, EntryKind};
pub use error::{LedgerError, Result};
pub use fsutil::now_ns;
pub use scrub::{Problem, ScrubReport};
pub use store::{Appended, CreateOptions, Damage, Ledger, LogMeta, OpenMode, StoredCheckpoint};

/// Entry points for fuzz targets: pure parsers over arbitrary bytes.
pub mod fuzzing {
    /// Decodes an entry; must never panic.
    pub fn entry_decode(data: &[u8]) {
        let _ = crate::entry::Entry::decode(data);
    }

    /// Scans bytes as a segment file; must never panic.
    pub fn segment_scan(data: &[u8]) {
        let _ = crate::segment::scan(data, 1 << 20, 0);
    }
}
