//! DLog transport: embedded userspace WireGuard.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod config;
pub mod core;
pub mod error;
pub mod frame;
pub mod fuzzing;
pub mod keys;
pub mod pq;

pub use error::{Error, Result};
pub mod driver;
pub use driver::{Endpoint, Listener, Netem, PeerStatus, Stream};
