//! DLog transport: embedded userspace WireGuard with a userspace TCP stack
//! and a hybrid post-quantum pre-shared key.
//!
//! Every byte DLog processes exchange travels inside WireGuard (DESIGN §7).
//! No TUN device, no root, no kernel module: each process opens one
//! [`Endpoint`] with its keys, one UDP socket and a peer table, and gets
//! ordinary async byte streams.
//!
//! ```no_run
//! # async fn demo() -> dlog_wg::Result<()> {
//! use dlog_wg::config::{Config, PeerTable, PqMode};
//! use dlog_wg::{keys, Endpoint};
//!
//! let me = keys::load_key_file("node-1.key".as_ref())?;          // mode 0600
//! let peers = PeerTable::from_toml_str(&std::fs::read_to_string("peers.toml").unwrap())?;
//! let bob = peers.by_name("node-2").unwrap().public_key;
//! let mut cfg = Config::new(me, peers);
//! cfg.pq = PqMode::Required;
//! let ep = Endpoint::bind(cfg, "127.0.0.1:51820".parse().unwrap()).await?;
//!
//! let mut listener = ep.listen(7000).await?;                     // server side
//! let stream = ep.connect(&bob, 7000).await?;                    // client side
//! let mut rpc = dlog_wg::frame::Framed::new(stream, 1 << 20);    // frames
//! rpc.send(b"hello").await?;
//! let incoming = listener.accept().await?;
//! let who = incoming.peer();         // authenticated public key, name, role
//! # let _ = who; Ok(()) }
//! ```
//!
//! # Module map
//!
//! * [`keys`]: key files (X25519 + ML-KEM-768), generate / write (0600) / load.
//! * [`config`]: the TOML peer table ([`config::PeerTable`]) and [`config::Config`].
//! * [`core`]: the sans-IO state machine — tunnels, routing, allowed IPs,
//!   timers, PQ rotation and the smoltcp TCP/IP stack. Time is an argument.
//! * [`driver`]: the tokio shell — [`Endpoint`], [`Listener`], [`Stream`].
//! * [`pq`]: the hybrid PQ PSK exchange, pure.
//! * [`frame`]: length-delimited frames with a maximum size.
//! * [`fuzzing`]: byte-slice entry points for fuzzers and property tests.
//!
//! # Architecture invariants
//!
//! * [`core::Core`] does no IO, spawns nothing and reads no clock (boringtun's
//!   own WireGuard timers aside, see [`core`]); the driver is the only code
//!   that touches sockets or `Instant::now()`.
//! * One task owns all tunnels and the TCP/IP stack; applications talk to it
//!   over bounded channels, so a slow reader closes its TCP window instead of
//!   growing a buffer.
//! * A datagram from a key not in the peer table is dropped before any
//!   tunnel state is touched; a decrypted packet whose inner source is not
//!   the sender's tunnel address is dropped before the TCP/IP stack.
//! * Network input never panics and never surfaces as an error of the
//!   endpoint: it is dropped and counted ([`core::Stats`]).
//! * A stream never outlives its peer's incarnation: when the core sees the
//!   peer come back with new tunnel state ([`core::Event::PeerRestarted`]),
//!   the driver resets every stream with it at once, so a pooled connection
//!   fails now rather than on its next call.
//!
//! # Post-quantum threat model
//!
//! WireGuard's key exchange is X25519: an adversary who records today's
//! traffic and later owns a cryptographically relevant quantum computer can
//! recover session keys and decrypt everything ("harvest now, decrypt
//! later"). WireGuard's remedy is its optional 32-byte pre-shared key, mixed
//! into every handshake: if the PSK is secret, the session keys are too,
//! whatever happens to X25519.
//!
//! This crate derives that PSK from ML-KEM-768 (FIPS 203), Rosenpass-style:
//! both sides' static ML-KEM keys plus a fresh ephemeral key are used in an
//! exchange that runs inside the (classically) authenticated tunnel, and the
//! PSK is `BLAKE3-derive_key` over the three shared secrets and a transcript
//! hash binding both WireGuard keys and both ML-KEM keys (details in [`pq`]).
//! The PSK rotates every [`config::Config::rotation_interval`] (120 s by
//! default) make-before-break: a new tunnel with the new PSK handshakes while
//! the old one keeps carrying traffic; the old one drains for a few seconds.
//!
//! What this protects against: passive recording followed by a quantum
//! break of X25519 (confidentiality of everything after the first PSK is
//! installed), and an active quantum attacker who does not hold a static
//! ML-KEM secret key. What it does not: theft of a process's key file
//! (both keys are in it), an attacker who breaks ML-KEM *and* X25519, traffic
//! analysis (sizes, timing, endpoints), and — with `pq = "preferred"` — data
//! sent before the first PQ key is installed or to peers without an ML-KEM
//! key. With `pq = "required"`, no application byte flows in either direction
//! until a PQ PSK is installed; the exchange messages themselves are only
//! classically protected, which is fine because they carry only public
//! values (ML-KEM ciphertexts and an ephemeral public key).
//!
//! # Known limits
//!
//! * IPv4 inside the tunnel only; one `/32` tunnel address per peer.
//! * PQ exchange messages are ~2.3 KB inner packets; across a path MTU
//!   below that, the outer UDP datagram is IP-fragmented.
//! * smoltcp's TCP has fixed timer bounds (RTO 1 s .. 60 s, doubling), no
//!   SACK, go-back-N after a timeout, and only resets a backed-off RTO on
//!   fresh RTT samples. The core runs smoltcp's clock 10x faster than real
//!   time ([`core::TCP_CLOCK_SCALE`]: RTO bounds 100 ms .. 6 s, RTT-derived
//!   timers unchanged), sends pure ACKs at the highest sequence number sent
//!   (smoltcp's go-back-N otherwise makes both ends of a bidirectional
//!   stream discard each other's ACKs forever), sends TCP retransmissions
//!   twice and replays the peer's last ACK into a stalled sender. With 5%
//!   loss, duplication and reordering, 4 echo streams of 256 KiB complete
//!   in a few seconds in the tests; throughput under loss is still far
//!   below a SACK-capable stack's.
//!
//! # Throughput
//!
//! UDP IO is batched (GSO sends, `recvmmsg` + GRO receives via
//! `quinn-udp`). Bulk transfer between two processes on loopback (bench
//! `throughput_2proc`, same run as plain TCP): ~250 MiB/s at MTU 1420
//! (~13% of plain TCP), ~460 MiB/s at MTU 65,000 (~24%). One task per
//! endpoint does all crypto and TCP work, so one core bounds it.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod config;
pub mod core;
pub mod driver;
pub mod error;
pub mod frame;
pub mod fuzzing;
pub mod keys;
pub mod pq;

pub use driver::{Endpoint, Listener, Netem, PeerStatus, ReadHalf, Stream, WriteHalf};
pub use error::{Error, Result};
