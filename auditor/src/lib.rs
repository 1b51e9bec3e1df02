//! DLog auditor: an independent follower that re-verifies every entry of a
//! log and cosigns (C2SP tlog-cosignature) only checkpoints it proved to be
//! its own verified tree or a prefix of it.
//!
//! * [`audit`]: the checks, sans-IO: strict entry decoding, timestamps that
//!   never go backwards, the Merkle frontier, roots and consistency proofs
//!   against voter-signed checkpoints.
//! * [`state`]: the state file (verified frontier, cosignatures, incidents,
//!   alarm), written atomically after every round.
//! * [`config`]: the `auditor.toml` file.
//! * [`mod@run`]: the process: rounds over its own WireGuard tunnel as an
//!   `auditor` peer (read + cosign, never append).
//! * [`witness`]: a C2SP tlog-witness (HTTP `add-checkpoint`) for other
//!   logs, standalone (`dlog witness run`) or inside the auditor.
//!
//! The auditor trusts no node: entries are hashed here, checkpoints are
//! checked against the trust file's voter keys, and every node's copy is
//! read in turn. One bad replica is an incident; a signed checkpoint that
//! no replica's entries match is an alarm, after which it never cosigns
//! that log again.
#![deny(missing_docs)]

pub mod audit;
pub mod config;
pub mod run;
pub mod state;
pub mod witness;

pub use config::AuditorConfig;
pub use run::{run, AuditorError};
pub use state::State;
