//! DLog node: the ledger replicated with openraft, every byte over embedded WireGuard.
#![deny(missing_docs)]

pub mod error;
pub mod log_store;
pub mod state_machine;
pub mod types;

pub use error::{NodeError, Result};
