//! DLog node: the ledger replicated with openraft, every byte over embedded WireGuard.
#![deny(missing_docs)]

pub mod config;
pub mod error;
pub mod failover;
pub mod link;
pub mod log_store;
pub mod metrics;
pub mod network;
pub mod rpc;
pub mod server;
pub mod session;
pub mod snapshot;
pub mod state_machine;
pub mod types;
pub mod witness;

pub use dlog_client::{client, Client};
pub use error::{NodeError, Result};
#[cfg(feature = "test-support")]
pub use server::faults::start_with;
pub use server::{run, run_until, runtime, start, RunningNode};
