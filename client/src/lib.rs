//! DLog's client protocol, and the client every DLog program outside the
//! node uses (the CLI, the auditor, benchmarks).
//!
//! * [`wire`]: the call and reply types, versioned; Raft messages travel
//!   as opaque bytes that only `dlog-node` decodes, so clients never link
//!   openraft.
//! * [`codec`]: length-delimited bincode frames, bounded decoding.
//! * [`access`]: the role table: which peer role may make which call.
//! * [`pool`]: one multiplexed stream per peer over the WireGuard tunnel.
//! * [`client`]: [`Client`], retries across nodes, exactly-once appends,
//!   checkpoints verified against the trust file.
//! * [`config`]: `client.toml`, and the file loaders the node shares.
#![deny(missing_docs)]

pub mod access;
pub mod client;
pub mod codec;
pub mod config;
pub mod error;
pub mod items;
pub mod pool;
pub mod wire;

pub use client::{Appended, Client, ServedCheckpoint};
pub use config::ClientConfig;
pub use error::{Error, Result};
pub use items::Items;
pub use pool::Pool;
pub use wire::{
    Call, ErrorCode, NodeId, NodeStatus, RaftKind, Reply, RpcError, SessionTag, PROTOCOL_VERSION,
    RPC_PORT,
};
