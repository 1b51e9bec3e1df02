//! The sans-IO tunnel core: WireGuard sessions, routing, PQ key rotation and
//! the userspace TCP/IP stack, driven by the caller.
//!
//! The core never reads a clock and never touches a socket. The caller
//! (normally [`crate::Endpoint`]'s driver task) feeds it
//!
//! * received UDP datagrams: [`Core::handle_datagram`],
//! * the passage of time: [`Core::poll`], at the latest at [`Core::poll_at`],
//!
//! and takes out datagrams to send with [`Core::pop_transmit`] and
//! observations with [`Core::pop_event`]. TCP sockets are reached through
//! [`Core::connect`], [`Core::listen`], [`Core::accept`] and [`Core::socket`].
//!
//! One caveat on purity: boringtun's `Tunn` keeps its own internal timers
//! from the process clock (WireGuard's REKEY/REJECT timers). Everything the
//! core decides itself (ticks, handshake retries, PQ rotation, pending-session
//! timeouts, TCP) uses only the `now` it is given. boringtun's timers read
//! a mock clock when it is built with its `mock-instant` feature; the tests
//! in `wg/clock-tests` (their own workspace, so that feature stays out of
//! every other build) move that clock with the simulation, so rekey, reject
//! and expiry run on virtual time too.
//!
//! Packet path in: datagram → route (handshake initiation: decrypt the
//! initiator's static key, drop unknown keys; other messages: by our
//! receiver index) → `Tunn::decapsulate` → allowed-IP check (the inner source
//! must be the peer's tunnel address, the destination ours) → control
//! messages (PQ exchange) are consumed here → if `pq = "required"` and no PQ
//! key is installed, drop → smoltcp.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use dlog_crypto::kem::KemSecretKey;
/// Handle of a TCP socket inside the core (re-exported from smoltcp).
pub use smoltcp::iface::SocketHandle;
use smoltcp::iface::{Config as IfConfig, Interface, SocketSet};
use smoltcp::phy::{ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
/// The TCP socket type behind [`Core::socket`] (re-exported from smoltcp).
pub use smoltcp::socket::tcp::Socket as TcpSocket;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, Ipv4Packet};

use crate::config::{Config, PeerEntry, PqMode, Role};
use crate::error::{Error, Result};
use crate::keys::PeerKey;
use crate::pq;

/// Timer granularity: boringtun timers and our own are checked this often.
pub const TICK: Duration = Duration::from_millis(250);
/// First handshake retransmission delay (doubles, capped at 5 s).
const HANDSHAKE_RETRY: Duration = Duration::from_secs(1);
/// How long an old session is kept to drain in-flight packets after a switch.
const PREVIOUS_LINGER: Duration = Duration::from_secs(15);
/// PQ InitHello retransmission delay (doubles, capped at 5 s).
const PQ_RETRY: Duration = Duration::from_secs(1);
/// A pending session whose handshake has not completed by then is dropped.
const PENDING_TIMEOUT: Duration = Duration::from_secs(10);
/// Retry a failed PQ exchange after this long.
const PQ_FAIL_BACKOFF: Duration = Duration::from_secs(5);
/// Outbound traffic within this window makes an expired session re-handshake.
const DEMAND_WINDOW: Duration = Duration::from_secs(60);
/// Sending into silence this long makes us re-handshake with a fresh session.
const SILENCE: Duration = Duration::from_secs(5);
/// Listening sockets kept per port (simultaneous handshakes in progress).
const LISTEN_BACKLOG: usize = 16;
/// Handshakes per second before boringtun's rate limiter demands cookies.
const HANDSHAKE_RATE_LIMIT: u64 = 200;
/// A stream with unacknowledged data that heard nothing for this long gets
/// duplicate ACKs replayed into it (see [`Core::tcp_watchdog`]).
const TCP_KICK_AFTER: Duration = Duration::from_millis(1500);
/// smoltcp's clock runs this many times faster than real time.
///
/// smoltcp's TCP has fixed timer bounds made for embedded links: a minimum
/// RTO of 1 s, doubling on every timeout up to 60 s, and it only resets a
/// backed-off RTO on a fresh RTT sample (Karn), which a sender in loss
/// recovery, resending old data one segment per timeout, may not get for a
/// long time. At 5% loss a stream then sits in 16-60 s waits. Timers
/// computed from measured RTTs are unaffected by the scale (RTT and RTO are
/// measured on the same clock), but the clamps become 100 ms .. 6 s of real
/// time (Linux uses 200 ms .. 120 s) and the initial RTO 100 ms; sockets
/// set their delayed ACK back to 10 ms of real time.
pub const TCP_CLOCK_SCALE: u32 = 10;
/// Outbound packets held per peer while `pq = "required"` waits for a key.
const MAX_HELD: usize = 64;
/// Inner packets queued towards smoltcp before dropping.
const MAX_RX_QUEUE: usize = 4096;
/// Events kept for the caller before the oldest are dropped.
const MAX_EVENTS: usize = 1024;
const BUF_LEN: usize = 65_536 + 256;

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Destination UDP address.
    pub dst: SocketAddr,
    /// The WireGuard message.
    pub data: Vec<u8>,
}

/// Who is at the other end of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's X25519 public key (its identity).
    pub public_key: PeerKey,
    /// The name from the peer table.
    pub name: String,
    /// The role from the peer table.
    pub role: Role,
    /// The peer's tunnel address.
    pub address: Ipv4Addr,
}

/// Something worth logging or testing for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A handshake from a key that is not in the peer table was dropped.
    UnknownKey {
        /// The initiator's public key.
        key: PeerKey,
        /// Where it came from.
        from: SocketAddr,
    },
    /// A decrypted packet with a source address the peer may not use was dropped.
    NotAllowedIp {
        /// The peer.
        peer: PeerKey,
        /// The inner source address.
        src: Ipv4Addr,
    },
    /// Traffic with this peer is held back because `pq = "required"` and no
    /// PQ key is installed (reported once per cause).
    PqBlocked {
        /// The peer.
        peer: PeerKey,
        /// Why.
        reason: String,
    },
    /// A new post-quantum PSK is in use with this peer.
    PqKeyInstalled {
        /// The peer.
        peer: PeerKey,
        /// Its epoch.
        epoch: u64,
    },
    /// The handshake with a freshly derived PSK did not complete.
    PqExchangeFailed {
        /// The peer.
        peer: PeerKey,
        /// The epoch that failed.
        epoch: u64,
    },
    /// The peer came back with new tunnel state (restart); sessions were replaced.
    PeerRestarted {
        /// The peer.
        peer: PeerKey,
    },
    /// An expired session was re-established at once (no 90 s stall).
    SessionRestarted {
        /// The peer.
        peer: PeerKey,
    },
    /// The peer's UDP endpoint changed (roaming).
    Roamed {
        /// The peer.
        peer: PeerKey,
        /// Its new endpoint.
        endpoint: SocketAddr,
    },
}

/// Counters, for tests and monitoring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Datagrams handed to [`Core::handle_datagram`].
    pub rx_datagrams: u64,
    /// Datagrams produced for sending.
    pub tx_datagrams: u64,
    /// Handshakes from keys not in the peer table.
    pub dropped_unknown_key: u64,
    /// Decrypted packets failing the allowed-IP check.
    pub dropped_not_allowed_ip: u64,
    /// Application packets dropped because `pq = "required"` and no PQ key yet.
    pub dropped_pq_blocked: u64,
    /// Datagrams or inner packets that did not parse.
    pub dropped_malformed: u64,
    /// Datagrams for no known tunnel index.
    pub dropped_unknown_index: u64,
    /// Datagrams boringtun rejected (bad MAC, AEAD tag, replay, ...).
    pub decapsulate_errors: u64,
    /// Cookie replies sent because handshakes were rate-limited.
    pub cookies_sent: u64,
    /// PQ keys installed (every successful rotation, all peers).
    pub pq_rotations: u64,
    /// PQ exchanges whose handshake did not complete.
    pub pq_failures: u64,
    /// Sessions re-established after expiry.
    pub sessions_restarted: u64,
    /// Handshake messages accepted: initiations answered (as responder) and
    /// responses accepted (as initiator), so one per handshake this side
    /// completed its part of.
    pub handshakes: u64,
    /// Endpoint changes (roaming).
    pub roams: u64,
    /// Stalled TCP senders nudged into fast retransmission by the watchdog.
    pub tcp_kicks: u64,
}

/// What the watchdog remembers about an inbound TCP flow.
struct InboundFlow {
    last_rx: Instant,
    last_ack: Option<Vec<u8>>,
}

struct Session {
    tunn: Tunn,
    index: u32,
    epoch: u64,
    pq: bool,
    remote_index: Option<u32>,
    created: Instant,
    hs_started: Option<Instant>,
    hs_next_retry: Option<Instant>,
    hs_backoff: Duration,
    restart: bool,
    expired_logged: bool,
}

impl Session {
    fn established(&self) -> bool {
        self.tunn.time_since_last_handshake().is_some()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PqRole {
    Initiator,
    Responder,
    Disabled,
}

struct PeerState {
    entry: PeerEntry,
    public: PublicKey,
    endpoint: Option<SocketAddr>,
    active: Session,
    pending: Option<Session>,
    previous: Option<(Session, Instant)>,
    pq_role: PqRole,
    parties: Option<pq::Parties>,
    pq_init: Option<(pq::Initiator, Instant, Duration)>,
    reserved_index: Option<u32>,
    next_rotation: Instant,
    next_epoch: u64,
    resp_cache: Option<(u64, Vec<u8>)>,
    last_demand: Option<Instant>,
    last_rx: Option<Instant>,
    held: Vec<Vec<u8>>,
    blocked_reported: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Slot {
    Active,
    Pending,
    Previous,
}

struct VirtDevice {
    rx: VecDeque<Vec<u8>>,
    /// Packets smoltcp emitted: a buffer and the packet's length in it.
    tx: VecDeque<(Vec<u8>, usize)>,
    /// Emptied transmit buffers, reused so no packet costs an allocation or
    /// a memset of its length (smoltcp writes every byte of a packet it
    /// emits, checksum fields and option padding included, as a device that
    /// recycles its buffers needs).
    free: Vec<Vec<u8>>,
    mtu: usize,
}

/// Most transmit buffers kept for reuse.
const FREE_TX_BUFFERS: usize = 64;

struct RxTok(Vec<u8>);
struct TxTok<'a> {
    tx: &'a mut VecDeque<(Vec<u8>, usize)>,
    free: &'a mut Vec<Vec<u8>>,
}

impl smoltcp::phy::RxToken for RxTok {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl smoltcp::phy::TxToken for TxTok<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut v = self.free.pop().unwrap_or_default();
        if v.len() < len {
            v.resize(len, 0);
        }
        let r = f(&mut v[..len]);
        self.tx.push_back((v, len));
        r
    }
}

impl Device for VirtDevice {
    type RxToken<'a> = RxTok;
    type TxToken<'a> = TxTok<'a>;

    fn receive(
        &mut self,
        _t: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let p = self.rx.pop_front()?;
        Some((
            RxTok(p),
            TxTok {
                tx: &mut self.tx,
                free: &mut self.free,
            },
        ))
    }

    fn transmit(&mut self, _t: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        Some(TxTok {
            tx: &mut self.tx,
            free: &mut self.free,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ip;
        c.max_transmission_unit = self.mtu;
        // Inner packets are authenticated by WireGuard and source-checked:
        // IP/TCP checksums add nothing but CPU time.
        c.checksum = ChecksumCapabilities::ignored();
        c
    }
}

/// The sans-IO endpoint state machine. See the module docs.
pub struct Core {
    secret: StaticSecret,
    public: PublicKey,
    kem: KemSecretKey,
    address: Ipv4Addr,
    pq_mode: PqMode,
    rotation: Duration,
    socket_buffer: usize,
    rate_limiter: Arc<RateLimiter>,
    peers: Vec<PeerState>,
    by_key: HashMap<[u8; 32], usize>,
    by_addr: HashMap<Ipv4Addr, usize>,
    by_index: HashMap<u32, usize>,
    next_index: u32,
    origin: Instant,
    next_tick: Instant,
    next_rl_reset: Instant,
    iface: Interface,
    dev: VirtDevice,
    sockets: SocketSet<'static>,
    listeners: HashMap<u16, Vec<SocketHandle>>,
    next_port: u16,
    outbox: VecDeque<Transmit>,
    events: VecDeque<Event>,
    unknown_reported: HashSet<[u8; 32]>,
    tcp_highest: HashMap<(Ipv4Addr, u16, u16), u32>,
    tcp_inbound: HashMap<(Ipv4Addr, u16, u16), InboundFlow>,
    stats: Stats,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("address", &self.address)
            .field("peers", &self.peers.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    // Index randomness is not security critical; fall back to a constant.
    let _ = getrandom::fill(&mut b);
    u32::from_le_bytes(b)
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl Core {
    /// Builds a core from a configuration. `now` is the caller's clock origin.
    ///
    /// Errors: invalid configuration (no local address, duplicate address,
    /// bad MTU).
    pub fn new(cfg: &Config, now: Instant) -> Result<Core> {
        let (address, entries) = cfg.resolve()?;
        let secret = cfg.keys.static_secret();
        let public = PublicKey::from(&secret);
        let rate_limiter = Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT));
        let mut dev = VirtDevice {
            rx: VecDeque::new(),
            tx: VecDeque::new(),
            free: Vec::new(),
            mtu: cfg.mtu,
        };
        let mut iface = Interface::new(
            IfConfig::new(HardwareAddress::Ip),
            &mut dev,
            smoltcp::time::Instant::from_micros(0),
        );
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(address), 32));
        });
        iface
            .routes_mut()
            .add_default_ipv4_route(address)
            .map_err(|_| Error::Config("cannot install default route".into()))?;
        let mut core = Core {
            kem: cfg.keys.kem_secret().clone(),
            secret,
            public,
            address,
            pq_mode: cfg.pq,
            rotation: cfg.rotation_interval,
            socket_buffer: cfg.socket_buffer.max(4096),
            rate_limiter,
            peers: Vec::new(),
            by_key: HashMap::new(),
            by_addr: HashMap::new(),
            by_index: HashMap::new(),
            next_index: random_u32(),
            origin: now,
            next_tick: now,
            next_rl_reset: now + Duration::from_secs(1),
            iface,
            dev,
            sockets: SocketSet::new(Vec::new()),
            listeners: HashMap::new(),
            next_port: 49_152 + (random_u32() % 8192) as u16,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            unknown_reported: HashSet::new(),
            tcp_highest: HashMap::new(),
            tcp_inbound: HashMap::new(),
            stats: Stats::default(),
            buf: vec![0u8; BUF_LEN],
        };
        let me = core.public.to_bytes();
        let my_kem = core.kem.public_key();
        for entry in entries {
            let idx = core.peers.len();
            let peer_pub = PublicKey::from(entry.public_key.0);
            let index = core.alloc_index(idx);
            let active = core.new_session(&peer_pub, entry.keepalive, index, 0, None, now);
            let (pq_role, parties) = match (&cfg.pq, &entry.kem_public_key) {
                (PqMode::Off, _) => (PqRole::Disabled, None),
                (mode, None) => {
                    if *mode == PqMode::Required {
                        tracing::error!(
                            peer = %entry.name,
                            "peer has no kem_public_key in the peer table and pq = \"required\": \
                             no traffic will flow with it"
                        );
                    }
                    (PqRole::Disabled, None)
                }
                (_, Some(theirs)) => {
                    let initiator = me < entry.public_key.0;
                    let p = if initiator {
                        pq::Parties {
                            wg_i: me,
                            wg_r: entry.public_key.0,
                            kem_i: my_kem.clone(),
                            kem_r: theirs.clone(),
                        }
                    } else {
                        pq::Parties {
                            wg_i: entry.public_key.0,
                            wg_r: me,
                            kem_i: theirs.clone(),
                            kem_r: my_kem.clone(),
                        }
                    };
                    let role = if initiator {
                        PqRole::Initiator
                    } else {
                        PqRole::Responder
                    };
                    (role, Some(p))
                }
            };
            core.by_key.insert(entry.public_key.0, idx);
            core.by_addr.insert(entry.address, idx);
            core.peers.push(PeerState {
                endpoint: entry.endpoint,
                entry,
                public: peer_pub,
                active,
                pending: None,
                previous: None,
                pq_role,
                parties,
                pq_init: None,
                reserved_index: None,
                next_rotation: now,
                next_epoch: 1,
                resp_cache: None,
                last_demand: None,
                last_rx: None,
                held: Vec::new(),
                blocked_reported: false,
            });
        }
        Ok(core)
    }

    fn new_session(
        &self,
        peer: &PublicKey,
        keepalive: Option<u16>,
        index: u32,
        epoch: u64,
        psk: Option<[u8; 32]>,
        now: Instant,
    ) -> Session {
        Session {
            tunn: Tunn::new(
                self.secret.clone(),
                *peer,
                psk,
                keepalive,
                index,
                Some(self.rate_limiter.clone()),
            ),
            index,
            epoch,
            pq: psk.is_some(),
            remote_index: None,
            created: now,
            hs_started: None,
            hs_next_retry: None,
            hs_backoff: HANDSHAKE_RETRY,
            restart: false,
            expired_logged: false,
        }
    }

    fn alloc_index(&mut self, peer: usize) -> u32 {
        loop {
            self.next_index = self.next_index.wrapping_add(1);
            let idx = self.next_index & 0x00FF_FFFF;
            if idx != 0 && !self.by_index.contains_key(&idx) {
                self.by_index.insert(idx, peer);
                return idx;
            }
        }
    }

    /// smoltcp's (scaled) time for `now`; see [`TCP_CLOCK_SCALE`].
    fn smol(&self, now: Instant) -> smoltcp::time::Instant {
        let real = now.saturating_duration_since(self.origin).as_micros() as i64;
        smoltcp::time::Instant::from_micros(real.saturating_mul(i64::from(TCP_CLOCK_SCALE)))
    }

    fn event(&mut self, e: Event) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    fn push_tx(&mut self, dst: SocketAddr, data: &[u8]) {
        self.stats.tx_datagrams += 1;
        self.outbox.push_back(Transmit {
            dst,
            data: data.to_vec(),
        });
    }

    /// Our tunnel address.
    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    /// Our public key.
    pub fn public_key(&self) -> PeerKey {
        PeerKey(self.public.to_bytes())
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The next datagram to send, if any.
    pub fn pop_transmit(&mut self) -> Option<Transmit> {
        self.outbox.pop_front()
    }

    /// The next event, if any.
    pub fn pop_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Information about a peer of the table.
    pub fn peer_info(&self, key: &PeerKey) -> Option<PeerInfo> {
        self.by_key.get(&key.0).map(|&i| self.info(i))
    }

    fn info(&self, i: usize) -> PeerInfo {
        let e = &self.peers[i].entry;
        PeerInfo {
            public_key: e.public_key,
            name: e.name.clone(),
            role: e.role,
            address: e.address,
        }
    }

    /// The PSK epoch in use with a peer (0 = classical WireGuard only) and
    /// whether its session is established.
    pub fn peer_epoch(&self, key: &PeerKey) -> Option<(u64, bool)> {
        self.by_key.get(&key.0).map(|&i| {
            let p = &self.peers[i];
            (p.active.epoch, p.active.established())
        })
    }

    /// The peer's current UDP endpoint.
    pub fn peer_endpoint(&self, key: &PeerKey) -> Option<SocketAddr> {
        self.by_key
            .get(&key.0)
            .and_then(|&i| self.peers[i].endpoint)
    }

    fn app_allowed(&self, i: usize) -> bool {
        self.pq_mode != PqMode::Required || self.peers[i].active.pq
    }

    // ------------------------------------------------------------------
    // Datagrams in
    // ------------------------------------------------------------------

    /// Feeds one received UDP datagram. Never panics, whatever the bytes.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.stats.rx_datagrams += 1;
        if data.len() < 8 || data[1..4] != [0, 0, 0] {
            self.stats.dropped_malformed += 1;
            return;
        }
        match data[0] {
            1 => self.handle_init(now, from, data),
            2..=4 => {
                let at = if data[0] == 2 { 8 } else { 4 };
                let Some(ridx) = le32(data, at) else {
                    self.stats.dropped_malformed += 1;
                    return;
                };
                let local = ridx >> 8;
                let Some(&pi) = self.by_index.get(&local) else {
                    self.stats.dropped_unknown_index += 1;
                    return;
                };
                let p = &self.peers[pi];
                let slot = if p.active.index == local {
                    Slot::Active
                } else if p.pending.as_ref().is_some_and(|s| s.index == local) {
                    Slot::Pending
                } else if p.previous.as_ref().is_some_and(|s| s.0.index == local) {
                    Slot::Previous
                } else {
                    self.stats.dropped_unknown_index += 1;
                    return;
                };
                self.decap(now, pi, slot, from, data);
            }
            _ => self.stats.dropped_malformed += 1,
        }
    }

    fn handle_init(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let mut buf = std::mem::take(&mut self.buf);
        let half = match self
            .rate_limiter
            .verify_packet(Some(from.ip()), data, &mut buf)
        {
            Ok(Packet::HandshakeInit(hi)) => {
                // The handshake that confirms a PQ rotation goes straight to
                // the new tunnel the exchange prepared: its sender index was
                // announced in InitHello and it comes from the peer's
                // endpoint. That tunnel authenticates the initiator itself
                // (a different static key fails with no state change), so
                // the anonymous parse below, one X25519 operation, is skipped.
                let sender = le32(data, 4).map(|i| i >> 8);
                let rotation = self.peers.iter().position(|p| {
                    sender.is_some()
                        && p.endpoint == Some(from)
                        && p.pending
                            .as_ref()
                            .is_some_and(|s| s.pq && s.remote_index == sender)
                });
                if let Some(pi) = rotation {
                    self.buf = buf;
                    self.decap(now, pi, Slot::Pending, from, data);
                    return;
                }
                parse_handshake_anon(&self.secret, &self.public, &hi)
            }
            Ok(_) => Err(WireGuardError::WrongPacketType),
            Err(TunnResult::WriteToNetwork(cookie)) => {
                let c = cookie.to_vec();
                self.buf = buf;
                self.stats.cookies_sent += 1;
                self.push_tx(from, &c);
                return;
            }
            Err(_) => Err(WireGuardError::InvalidMac),
        };
        self.buf = buf;
        let half = match half {
            Ok(h) => h,
            Err(_) => {
                self.stats.decapsulate_errors += 1;
                return;
            }
        };
        let Some(&pi) = self.by_key.get(&half.peer_static_public) else {
            self.stats.dropped_unknown_key += 1;
            let key = PeerKey(half.peer_static_public);
            if self.unknown_reported.len() < 4096 && self.unknown_reported.insert(key.0) {
                tracing::warn!(%from, key = %key, "dropped handshake from a key not in the peer table");
            }
            self.event(Event::UnknownKey { key, from });
            return;
        };
        let ri = half.peer_index >> 8;
        let p = &mut self.peers[pi];
        let slot = if p
            .pending
            .as_ref()
            .is_some_and(|s| s.remote_index == Some(ri))
        {
            Slot::Pending
        } else if p.active.remote_index.is_none() || p.active.remote_index == Some(ri) {
            p.active.remote_index = Some(ri);
            Slot::Active
        } else {
            // A tunnel index we do not know: the peer restarted (or lost its
            // state). Answer with a fresh classical session as a candidate;
            // the current one stays until the candidate is confirmed by data,
            // so a replayed initiation cannot tear anything down. At most
            // one new candidate per second, so replays cannot churn them.
            if p.pending.as_ref().is_some_and(|s| {
                s.restart && now.saturating_duration_since(s.created) < Duration::from_secs(1)
            }) {
                self.stats.decapsulate_errors += 1;
                return;
            }
            let index = self.alloc_index(pi);
            let p = &self.peers[pi];
            let mut s = self.new_session(&p.public, p.entry.keepalive, index, 0, None, now);
            s.remote_index = Some(ri);
            s.restart = true;
            tracing::info!(peer = %self.peers[pi].entry.name, "handshake with a new tunnel index: peer restarted?");
            self.replace_pending(pi, Some(s));
            Slot::Pending
        };
        self.decap(now, pi, slot, from, data);
    }

    fn replace_pending(&mut self, pi: usize, s: Option<Session>) {
        if let Some(old) = std::mem::replace(&mut self.peers[pi].pending, s) {
            if self.peers[pi].reserved_index != Some(old.index) {
                self.by_index.remove(&old.index);
            }
        }
    }

    fn session_mut(&mut self, pi: usize, slot: Slot) -> Option<&mut Session> {
        let p = &mut self.peers[pi];
        match slot {
            Slot::Active => Some(&mut p.active),
            Slot::Pending => p.pending.as_mut(),
            Slot::Previous => p.previous.as_mut().map(|s| &mut s.0),
        }
    }

    fn decap(&mut self, now: Instant, pi: usize, slot: Slot, from: SocketAddr, data: &[u8]) {
        let mut buf = std::mem::take(&mut self.buf);
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut inner: Option<(Vec<u8>, Ipv4Addr)> = None;
        let mut ok = false;
        let mut v6 = false;
        let ty = data[0];
        if let Some(s) = self.session_mut(pi, slot) {
            match s.tunn.decapsulate(Some(from.ip()), data, &mut buf) {
                TunnResult::Done => ok = true,
                TunnResult::Err(e) => {
                    tracing::debug!(?e, "decapsulate failed");
                }
                TunnResult::WriteToNetwork(b) => {
                    ok = true;
                    out.push(b.to_vec());
                    while let TunnResult::WriteToNetwork(b) =
                        s.tunn.decapsulate(None, &[], &mut buf)
                    {
                        out.push(b.to_vec());
                    }
                }
                TunnResult::WriteToTunnelV4(pkt, src) => {
                    ok = true;
                    inner = Some((pkt.to_vec(), src));
                }
                TunnResult::WriteToTunnelV6(..) => {
                    ok = true;
                    v6 = true;
                }
            }
            if ok && ty == 2 {
                if let Some(sender) = le32(data, 4) {
                    s.remote_index = Some(sender >> 8);
                }
            }
            if s.established() {
                s.hs_started = None;
                s.hs_next_retry = None;
                s.hs_backoff = HANDSHAKE_RETRY;
                s.expired_logged = false;
            }
        }
        self.buf = buf;
        if ok && (ty == 1 || ty == 2) {
            self.stats.handshakes += 1;
        }
        if !ok {
            self.stats.decapsulate_errors += 1;
            return;
        }
        self.peers[pi].last_rx = Some(now);
        // Roaming: the endpoint follows authenticated packets (not cookie
        // replies, whose authenticity is weaker).
        if ty != 3 && self.peers[pi].endpoint != Some(from) {
            let first = self.peers[pi].endpoint.is_none();
            self.peers[pi].endpoint = Some(from);
            if !first {
                self.stats.roams += 1;
                tracing::info!(peer = %self.peers[pi].entry.name, %from, "peer roamed");
            }
            let peer = self.peers[pi].entry.public_key;
            self.event(Event::Roamed {
                peer,
                endpoint: from,
            });
        }
        for o in out {
            self.push_tx(from, &o);
        }
        if v6 {
            self.stats.dropped_not_allowed_ip += 1;
        }
        if slot == Slot::Pending
            && self.peers[pi]
                .pending
                .as_ref()
                .is_some_and(|s| s.established())
        {
            self.promote(now, pi);
        }
        if let Some((pkt, src)) = inner {
            self.deliver_inner(now, pi, src, pkt);
        }
    }

    fn promote(&mut self, now: Instant, pi: usize) {
        let Some(new) = self.peers[pi].pending.take() else {
            return;
        };
        if self.peers[pi].reserved_index == Some(new.index) {
            self.peers[pi].reserved_index = None;
        }
        let restart = new.restart;
        let pq_key = new.pq;
        let epoch = new.epoch;
        let old = std::mem::replace(&mut self.peers[pi].active, new);
        if let Some((prev, _)) = self.peers[pi].previous.take() {
            self.by_index.remove(&prev.index);
        }
        self.peers[pi].previous = Some((old, now + PREVIOUS_LINGER));
        let peer = self.peers[pi].entry.public_key;
        if restart {
            let p = &mut self.peers[pi];
            p.active.restart = false;
            p.pq_init = None;
            if let Some(r) = p.reserved_index.take() {
                self.by_index.remove(&r);
            }
            let p = &mut self.peers[pi];
            p.resp_cache = None;
            p.next_rotation = now;
            p.blocked_reported = false;
            self.event(Event::PeerRestarted { peer });
        }
        if pq_key {
            self.stats.pq_rotations += 1;
            let p = &mut self.peers[pi];
            p.next_epoch = p.next_epoch.max(epoch + 1);
            if p.pq_role == PqRole::Initiator {
                p.next_rotation = now + self.rotation;
            }
            tracing::info!(peer = %p.entry.name, epoch, "post-quantum PSK installed");
            self.event(Event::PqKeyInstalled { peer, epoch });
            for pkt in std::mem::take(&mut self.peers[pi].held) {
                self.send_ip(now, pi, &pkt, false);
            }
        }
    }

    fn deliver_inner(&mut self, now: Instant, pi: usize, src: Ipv4Addr, pkt: Vec<u8>) {
        let Ok(ip) = Ipv4Packet::new_checked(&pkt[..]) else {
            self.stats.dropped_malformed += 1;
            return;
        };
        let allowed = self.peers[pi].entry.address;
        let dst = ip.dst_addr();
        if src != allowed || ip.src_addr() != allowed || dst != self.address {
            self.stats.dropped_not_allowed_ip += 1;
            let peer = self.peers[pi].entry.public_key;
            tracing::warn!(peer = %self.peers[pi].entry.name, %src, %dst, %allowed,
                "dropped packet: source or destination not allowed for this peer");
            self.event(Event::NotAllowedIp { peer, src });
            return;
        }
        if u8::from(ip.next_header()) == pq::CTRL_PROTO {
            let payload = ip.payload().to_vec();
            self.handle_ctrl(now, pi, &payload);
            return;
        }
        if !self.app_allowed(pi) {
            self.stats.dropped_pq_blocked += 1;
            self.report_blocked(
                pi,
                "no post-quantum PSK installed yet and pq = \"required\"",
            );
            return;
        }
        if self.dev.rx.len() >= MAX_RX_QUEUE {
            return;
        }
        self.note_inbound_tcp(now, &pkt);
        self.dev.rx.push_back(pkt);
    }

    /// Fuzzing hook: treat `pkt` as decrypted from the first peer.
    pub(crate) fn fuzz_inner(&mut self, now: Instant, pkt: &[u8]) {
        if self.peers.is_empty() {
            return;
        }
        let src = self.peers[0].entry.address;
        self.deliver_inner(now, 0, src, pkt.to_vec());
    }

    fn report_blocked(&mut self, pi: usize, reason: &str) {
        if !self.peers[pi].blocked_reported {
            self.peers[pi].blocked_reported = true;
            let peer = self.peers[pi].entry.public_key;
            tracing::warn!(peer = %self.peers[pi].entry.name, "traffic held back: {reason}");
            self.event(Event::PqBlocked {
                peer,
                reason: reason.to_string(),
            });
        }
    }

    // ------------------------------------------------------------------
    // PQ control messages
    // ------------------------------------------------------------------

    fn handle_ctrl(&mut self, now: Instant, pi: usize, payload: &[u8]) {
        let role = self.peers[pi].pq_role;
        if role == PqRole::Disabled {
            return;
        }
        let Some(msg) = pq::CtrlMsg::decode(payload) else {
            self.stats.dropped_malformed += 1;
            return;
        };
        match (msg, role) {
            (pq::CtrlMsg::InitHello { epoch, .. }, PqRole::Responder) => {
                if let Some((e, bytes)) = &self.peers[pi].resp_cache {
                    if *e == epoch {
                        let b = bytes.clone();
                        self.send_ctrl(now, pi, &b);
                        return;
                    }
                }
                if epoch <= self.peers[pi].active.epoch {
                    return;
                }
                let index = self.alloc_index(pi);
                let Some(parties) = self.peers[pi].parties.clone() else {
                    return;
                };
                let Some((psk, resp, idx_i)) = pq::respond(&self.kem, &parties, payload, index)
                else {
                    self.by_index.remove(&index);
                    return;
                };
                let p = &self.peers[pi];
                let mut s =
                    self.new_session(&p.public, p.entry.keepalive, index, epoch, Some(psk), now);
                s.remote_index = Some(idx_i);
                self.replace_pending(pi, Some(s));
                self.peers[pi].resp_cache = Some((epoch, resp.clone()));
                self.send_ctrl(now, pi, &resp);
            }
            (pq::CtrlMsg::RespHello { epoch, .. }, PqRole::Initiator) => {
                let Some((st, _, _)) = &self.peers[pi].pq_init else {
                    return;
                };
                if st.epoch != epoch {
                    return;
                }
                let Some(parties) = self.peers[pi].parties.clone() else {
                    return;
                };
                let Some((psk, idx_r)) = pq::finish(st, &self.kem, &parties, payload) else {
                    return;
                };
                let index = st.index;
                self.peers[pi].pq_init = None;
                let p = &self.peers[pi];
                let mut s =
                    self.new_session(&p.public, p.entry.keepalive, index, epoch, Some(psk), now);
                s.remote_index = Some(idx_r);
                self.replace_pending(pi, Some(s));
                self.start_handshake(now, pi, Slot::Pending);
            }
            _ => {}
        }
    }

    fn start_handshake(&mut self, now: Instant, pi: usize, slot: Slot) {
        let Some(ep) = self.peers[pi].endpoint else {
            return;
        };
        let mut buf = std::mem::take(&mut self.buf);
        let mut pkt = None;
        if let Some(s) = self.session_mut(pi, slot) {
            if let TunnResult::WriteToNetwork(b) =
                s.tunn.format_handshake_initiation(&mut buf, true)
            {
                pkt = Some(b.to_vec());
            }
            s.hs_started.get_or_insert(now);
            s.hs_next_retry = Some(now + s.hs_backoff);
        }
        self.buf = buf;
        if let Some(b) = pkt {
            self.push_tx(ep, &b);
        }
    }

    fn send_ctrl(&mut self, now: Instant, pi: usize, payload: &[u8]) {
        let total = 20 + payload.len();
        let mut pkt = vec![0u8; total];
        pkt[0] = 0x45;
        pkt[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        pkt[8] = 64;
        pkt[9] = pq::CTRL_PROTO;
        pkt[12..16].copy_from_slice(&self.address.octets());
        pkt[16..20].copy_from_slice(&self.peers[pi].entry.address.octets());
        let mut sum: u32 = 0;
        for c in pkt[..20].chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        pkt[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        pkt[20..].copy_from_slice(payload);
        self.send_ip(now, pi, &pkt, true);
    }

    fn send_ip(&mut self, now: Instant, pi: usize, pkt: &[u8], ctrl: bool) {
        if !ctrl {
            self.peers[pi].last_demand = Some(now);
            if !self.app_allowed(pi) {
                self.stats.dropped_pq_blocked += 1;
                let reason = if self.peers[pi].pq_role == PqRole::Disabled {
                    "pq = \"required\" but the peer has no ML-KEM key (or PQ is off)"
                } else {
                    "no post-quantum PSK installed yet and pq = \"required\""
                };
                self.report_blocked(pi, reason);
                // Hold a few packets (e.g. the first SYN) until the PQ key is
                // in place instead of costing the sender a 1 s retransmission.
                let p = &mut self.peers[pi];
                if p.pq_role != PqRole::Disabled && p.held.len() < MAX_HELD {
                    p.held.push(pkt.to_vec());
                }
                // As PQ responder we must still bring the classical session
                // up, or a peer that does not know we (re)started would never
                // start the exchange.
                if p.pq_role == PqRole::Responder
                    && !p.active.established()
                    && p.active.hs_started.is_none()
                {
                    self.start_handshake(now, pi, Slot::Active);
                }
                return;
            }
        }
        let Some(ep) = self.peers[pi].endpoint else {
            return;
        };
        let mut buf = std::mem::take(&mut self.buf);
        let s = &mut self.peers[pi].active;
        let had_session = s.established();
        let mut pkt_out = None;
        match s.tunn.encapsulate(pkt, &mut buf) {
            TunnResult::WriteToNetwork(b) => pkt_out = Some(b.to_vec()),
            TunnResult::Err(e) => tracing::debug!(?e, "encapsulate failed"),
            _ => {}
        }
        if !had_session && s.hs_started.is_none() {
            s.hs_started = Some(now);
            s.hs_next_retry = Some(now + s.hs_backoff);
        }
        self.buf = buf;
        if let Some(b) = pkt_out {
            self.push_tx(ep, &b);
        }
    }

    // ------------------------------------------------------------------
    // Time
    // ------------------------------------------------------------------

    /// Advances timers and the TCP stack to `now`; call it after feeding
    /// datagrams, after touching sockets, and at [`Core::poll_at`].
    pub fn poll(&mut self, now: Instant) {
        if now >= self.next_tick {
            self.tick(now);
            self.next_tick = now + TICK;
        }
        let ts = self.smol(now);
        // Bounded rounds: ingress, egress, and the packets they produce.
        for _ in 0..4 {
            self.iface.poll(ts, &mut self.dev, &mut self.sockets);
            if self.dev.tx.is_empty() {
                break;
            }
            while let Some((buf, len)) = self.dev.tx.pop_front() {
                self.route_out(now, &buf[..len]);
                if self.dev.free.len() < FREE_TX_BUFFERS {
                    self.dev.free.push(buf);
                }
            }
        }
    }

    fn route_out(&mut self, now: Instant, pkt: &[u8]) {
        let Ok(ip) = Ipv4Packet::new_checked(pkt) else {
            return;
        };
        let dst = ip.dst_addr();
        let retransmission = self.is_tcp_retransmission(&ip);
        let fixed = self.ack_at_snd_max(&ip, pkt);
        let pkt = fixed.as_deref().unwrap_or(pkt);
        match self.by_addr.get(&dst) {
            Some(&pi) => {
                self.send_ip(now, pi, pkt, false);
                if retransmission {
                    // Redundancy for retransmissions: smoltcp backs its RTO
                    // off (up to 60 s) on every loss of a retransmitted
                    // segment and only resets it on fresh RTT samples, so on
                    // a lossy path a few unlucky tail losses stall a stream
                    // for minutes. Sending retransmissions twice (as two
                    // WireGuard packets) squares their loss probability.
                    self.send_ip(now, pi, pkt, false);
                }
            }
            None => tracing::debug!(%dst, "no peer for destination"),
        }
    }

    /// A pure ACK whose sequence number is below the highest one this flow
    /// has sent, rewritten to carry that highest one (`SND.MAX`); `None`
    /// when nothing needs changing.
    ///
    /// On a retransmission timeout smoltcp goes back to `SND.UNA` and resets
    /// `SND.NXT` to it, and its pure ACKs carry `SND.NXT`. The peer may
    /// already hold data up to `SND.MAX`, so those ACKs arrive with a sequence
    /// number below its `RCV.NXT`: unacceptable segments (RFC 9293 3.10.7.4)
    /// whose acknowledgement field is ignored. When both directions of a
    /// stream are in that state (an echo under loss), each side discards
    /// every ACK of the other and both retransmit forever with backed-off
    /// timers. Linux never moves `SND.NXT` back for ACKs; this does the same
    /// on the wire. A pure ACK consumes no sequence space, so the rewrite
    /// changes nothing else.
    fn ack_at_snd_max(&self, ip: &Ipv4Packet<&[u8]>, pkt: &[u8]) -> Option<Vec<u8>> {
        if ip.next_header() != smoltcp::wire::IpProtocol::Tcp {
            return None;
        }
        let tcp = smoltcp::wire::TcpPacket::new_checked(ip.payload()).ok()?;
        if !tcp.payload().is_empty() || tcp.syn() || tcp.fin() || tcp.rst() || !tcp.ack() {
            return None;
        }
        let key = (ip.dst_addr(), tcp.src_port(), tcp.dst_port());
        let high = *self.tcp_highest.get(&key)?;
        let seq = tcp.seq_number().0 as u32;
        if high.wrapping_sub(seq) as i32 <= 0 {
            return None;
        }
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let ihl = usize::from(ip.header_len());
        let mut out = pkt.to_vec();
        let mut t = smoltcp::wire::TcpPacket::new_checked(out.get_mut(ihl..)?).ok()?;
        t.set_seq_number(smoltcp::wire::TcpSeqNumber(high as i32));
        t.fill_checksum(&src.into(), &dst.into());
        Some(out)
    }

    /// Tracks the highest sequence number sent per TCP flow; true if this
    /// segment carries data at or below it (a retransmission).
    fn is_tcp_retransmission(&mut self, ip: &Ipv4Packet<&[u8]>) -> bool {
        if ip.next_header() != smoltcp::wire::IpProtocol::Tcp {
            return false;
        }
        let Ok(tcp) = smoltcp::wire::TcpPacket::new_checked(ip.payload()) else {
            return false;
        };
        let len = tcp.payload().len() as u32 + u32::from(tcp.syn()) + u32::from(tcp.fin());
        if len == 0 {
            return false;
        }
        let key = (ip.dst_addr(), tcp.src_port(), tcp.dst_port());
        let end = (tcp.seq_number() + len as usize).0 as u32;
        if tcp.syn() || tcp.rst() {
            self.tcp_highest.insert(key, end);
            return false;
        }
        if self.tcp_highest.len() > 65_536 {
            self.tcp_highest.clear();
        }
        match self.tcp_highest.get_mut(&key) {
            Some(high) => {
                // Serial-number arithmetic: is `end` after `high`?
                if end.wrapping_sub(*high) as i32 > 0 {
                    *high = end;
                    false
                } else {
                    true
                }
            }
            None => {
                self.tcp_highest.insert(key, end);
                false
            }
        }
    }

    fn note_inbound_tcp(&mut self, now: Instant, pkt: &[u8]) {
        let Ok(ip) = Ipv4Packet::new_checked(pkt) else {
            return;
        };
        if ip.next_header() != smoltcp::wire::IpProtocol::Tcp {
            return;
        }
        let Ok(tcp) = smoltcp::wire::TcpPacket::new_checked(ip.payload()) else {
            return;
        };
        let key = (ip.src_addr(), tcp.src_port(), tcp.dst_port());
        if tcp.rst() || tcp.fin() {
            self.tcp_inbound.remove(&key);
            return;
        }
        if self.tcp_inbound.len() > 65_536 {
            self.tcp_inbound.clear();
        }
        // The ACK information of the newest segment, as a pure ACK: the same
        // headers with the payload (and PSH) removed. A peer whose receive
        // window is zero drops segments that carry data, ACK included; the
        // pure version is always acceptable.
        let ack = if tcp.ack() && !tcp.syn() {
            let ip_hl = usize::from(ip.header_len());
            let tcp_hl = usize::from(tcp.header_len());
            pkt.get(..ip_hl + tcp_hl).map(|h| {
                let mut h = h.to_vec();
                let total = (ip_hl + tcp_hl) as u16;
                h[2..4].copy_from_slice(&total.to_be_bytes());
                h[ip_hl + 13] &= !0x08; // PSH
                h
            })
        } else {
            None
        };
        let e = self.tcp_inbound.entry(key).or_insert(InboundFlow {
            last_rx: now,
            last_ack: None,
        });
        e.last_rx = now;
        if ack.is_some() {
            e.last_ack = ack;
        }
    }

    /// smoltcp only resets its retransmission timeout on fresh RTT samples,
    /// so after a few losses a sender can sit for up to 60 s before trying
    /// again; and a sender whose own receive window is zero ignores the ACKs
    /// riding on its peer's window probes. When a socket with unsent or
    /// unacknowledged data has heard nothing from its peer for
    /// [`TCP_KICK_AFTER`], replay the ACK of the peer's newest segment three
    /// times as pure ACKs (information the peer did send): either it is new
    /// and unblocks the sender, or it is a duplicate ACK and makes the sender
    /// fast-retransmit its oldest segment at once.
    fn tcp_watchdog(&mut self, now: Instant) {
        let mut stalled = Vec::new();
        for (_, sock) in self.sockets.iter() {
            #[allow(irrefutable_let_patterns)]
            if let smoltcp::socket::Socket::Tcp(t) = sock {
                if t.send_queue() == 0 || !t.is_active() {
                    continue;
                }
                if let (Some(r), Some(l)) = (t.remote_endpoint(), t.local_endpoint()) {
                    let IpAddress::Ipv4(ra) = r.addr;
                    stalled.push((ra, r.port, l.port));
                }
            }
        }
        for key in stalled {
            let Some(e) = self.tcp_inbound.get_mut(&key) else {
                continue;
            };
            if now.saturating_duration_since(e.last_rx) < TCP_KICK_AFTER {
                continue;
            }
            e.last_rx = now;
            if let Some(ack) = &e.last_ack {
                for _ in 0..3 {
                    self.dev.rx.push_back(ack.clone());
                }
                self.stats.tcp_kicks += 1;
            }
        }
    }

    /// When [`Core::poll`] must be called next at the latest.
    pub fn poll_at(&mut self, now: Instant) -> Instant {
        let ts = self.smol(now);
        let smol = self.iface.poll_at(ts, &self.sockets).map(|t| {
            // Round up: waking before smoltcp's deadline would spin.
            let v = t.total_micros().max(0) as u64;
            self.origin + Duration::from_micros(v.div_ceil(u64::from(TCP_CLOCK_SCALE)))
        });
        match smol {
            Some(t) if t < self.next_tick => t.max(now),
            _ => self.next_tick,
        }
    }

    fn tick(&mut self, now: Instant) {
        if now >= self.next_rl_reset {
            self.rate_limiter.reset_count();
            self.next_rl_reset = now + Duration::from_secs(1);
        }
        for pi in 0..self.peers.len() {
            self.tick_peer(now, pi);
        }
        self.tcp_watchdog(now);
    }

    fn tick_peer(&mut self, now: Instant, pi: usize) {
        // Drop the drained previous session.
        if self.peers[pi].previous.as_ref().is_some_and(|p| now >= p.1) {
            if let Some((prev, _)) = self.peers[pi].previous.take() {
                self.by_index.remove(&prev.index);
            }
        }
        // Pending session that never completed its handshake.
        if let Some(s) = &self.peers[pi].pending {
            if now.saturating_duration_since(s.created) >= PENDING_TIMEOUT {
                let (epoch, pqk, restart) = (s.epoch, s.pq, s.restart);
                self.replace_pending(pi, None);
                if pqk && !restart {
                    self.stats.pq_failures += 1;
                    let peer = self.peers[pi].entry.public_key;
                    tracing::warn!(peer = %self.peers[pi].entry.name, epoch,
                        "post-quantum PSK not confirmed by a WireGuard handshake within 10 s: \
                         wrong ML-KEM key in a peer table, or the peer is unreachable");
                    self.event(Event::PqExchangeFailed { peer, epoch });
                    if self.peers[pi].pq_role == PqRole::Initiator {
                        self.peers[pi].next_rotation = now + PQ_FAIL_BACKOFF;
                    }
                }
            }
        }
        for slot in [Slot::Active, Slot::Pending] {
            self.timers(now, pi, slot);
        }
        self.silence_check(now, pi);
        self.pq_tick(now, pi);
    }

    /// We keep sending but hear nothing: the peer probably restarted and
    /// dropped our session (it cannot tell us: it has no key for it).
    /// Instead of waiting for WireGuard's 15 s rule, or failing forever
    /// because our session carries a PSK the peer no longer has, handshake
    /// a fresh classical candidate session; PQ keys are re-derived on it.
    fn silence_check(&mut self, now: Instant, pi: usize) {
        let p = &self.peers[pi];
        if p.pending.is_some() || p.endpoint.is_none() || !(p.active.established() || p.active.pq) {
            return;
        }
        let silent_since = p.last_rx.unwrap_or(p.active.created).max(p.active.created);
        let sending = p.last_demand.is_some_and(|d| {
            d > silent_since && now.saturating_duration_since(d) < Duration::from_secs(1)
        });
        if !sending || now.saturating_duration_since(silent_since) < SILENCE {
            return;
        }
        tracing::info!(peer = %p.entry.name, "no answer for 5 s while sending: re-handshaking with a fresh session");
        let index = self.alloc_index(pi);
        let p = &self.peers[pi];
        let mut s = self.new_session(&p.public, p.entry.keepalive, index, 0, None, now);
        s.restart = true;
        self.replace_pending(pi, Some(s));
        self.start_handshake(now, pi, Slot::Pending);
    }

    fn wants_session(&self, now: Instant, pi: usize) -> bool {
        let p = &self.peers[pi];
        p.entry.keepalive.is_some()
            || p.pq_init.is_some()
            || p.last_demand
                .is_some_and(|t| now.saturating_duration_since(t) < DEMAND_WINDOW)
    }

    fn timers(&mut self, now: Instant, pi: usize, slot: Slot) {
        let Some(ep) = self.peers[pi].endpoint else {
            return;
        };
        let wants = self.wants_session(now, pi);
        let mut buf = std::mem::take(&mut self.buf);
        let mut out = Vec::new();
        let mut restarted = false;
        if let Some(s) = self.session_mut(pi, slot) {
            match s.tunn.update_timers(&mut buf) {
                TunnResult::WriteToNetwork(b) => out.push(b.to_vec()),
                TunnResult::Err(WireGuardError::ConnectionExpired) => {
                    // boringtun gave up (or the keys aged out); without this,
                    // the next attempt would wait for fresh traffic or ~90 s.
                    if wants || slot == Slot::Pending {
                        if let TunnResult::WriteToNetwork(b) =
                            s.tunn.format_handshake_initiation(&mut buf, true)
                        {
                            out.push(b.to_vec());
                        }
                        s.hs_started = Some(now);
                        s.hs_next_retry = Some(now + HANDSHAKE_RETRY);
                        s.hs_backoff = HANDSHAKE_RETRY;
                        restarted = true;
                    } else if !s.expired_logged {
                        s.expired_logged = true;
                        tracing::debug!("session expired; idle, not re-handshaking");
                    }
                }
                _ => {}
            }
            // Our own, faster handshake retry (boringtun retries every 5 s).
            if !s.established() {
                if let (Some(_), Some(at)) = (s.hs_started, s.hs_next_retry) {
                    if now >= at && (wants || slot == Slot::Pending) {
                        if let TunnResult::WriteToNetwork(b) =
                            s.tunn.format_handshake_initiation(&mut buf, true)
                        {
                            out.push(b.to_vec());
                        }
                        s.hs_backoff = (s.hs_backoff * 2).min(Duration::from_secs(5));
                        s.hs_next_retry = Some(now + s.hs_backoff);
                    }
                }
            }
        }
        self.buf = buf;
        if restarted {
            self.stats.sessions_restarted += 1;
            let peer = self.peers[pi].entry.public_key;
            tracing::info!(peer = %self.peers[pi].entry.name, "session expired; re-handshaking now");
            self.event(Event::SessionRestarted { peer });
        }
        for o in out {
            self.push_tx(ep, &o);
        }
    }

    fn pq_tick(&mut self, now: Instant, pi: usize) {
        if self.peers[pi].pq_role != PqRole::Initiator
            || self.peers[pi].pending.is_some()
            || self.peers[pi].endpoint.is_none()
        {
            return;
        }
        if let Some((st, at, backoff)) = &mut self.peers[pi].pq_init {
            if now >= *at {
                *backoff = (*backoff * 2).min(Duration::from_secs(5));
                *at = now + *backoff;
                let b = st.init_bytes.clone();
                self.send_ctrl(now, pi, &b);
            }
            return;
        }
        if now < self.peers[pi].next_rotation {
            return;
        }
        let Some(parties) = self.peers[pi].parties.clone() else {
            return;
        };
        let epoch = self.peers[pi]
            .next_epoch
            .max(self.peers[pi].active.epoch + 1);
        self.peers[pi].next_epoch = epoch + 1;
        let index = self.alloc_index(pi);
        match pq::initiate(epoch, index, &parties) {
            Ok(st) => {
                let b = st.init_bytes.clone();
                self.peers[pi].reserved_index = Some(index);
                self.peers[pi].pq_init = Some((st, now + PQ_RETRY, PQ_RETRY));
                self.peers[pi].next_rotation = now + self.rotation;
                self.send_ctrl(now, pi, &b);
            }
            Err(e) => {
                self.by_index.remove(&index);
                tracing::error!("PQ exchange could not start: {e}");
                self.peers[pi].next_rotation = now + PQ_FAIL_BACKOFF;
            }
        }
    }

    /// Starts a PQ key rotation with `peer` now (if we are its PQ initiator
    /// and no rotation is in progress). Returns whether one was started.
    pub fn rotate_now(&mut self, now: Instant, peer: &PeerKey) -> bool {
        let Some(&pi) = self.by_key.get(&peer.0) else {
            return false;
        };
        if self.peers[pi].pq_role != PqRole::Initiator
            || self.peers[pi].pq_init.is_some()
            || self.peers[pi].pending.is_some()
        {
            return false;
        }
        self.peers[pi].next_rotation = now;
        self.pq_tick(now, pi);
        self.peers[pi].pq_init.is_some()
    }

    // ------------------------------------------------------------------
    // Sockets
    // ------------------------------------------------------------------

    fn new_socket(&self) -> tcp::Socket<'static> {
        let n = self.socket_buffer;
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; n]),
            tcp::SocketBuffer::new(vec![0u8; n]),
        );
        s.set_nagle_enabled(false);
        // smoltcp's 10 ms delayed ACK, in real time (see TCP_CLOCK_SCALE).
        s.set_ack_delay(Some(smoltcp::time::Duration::from_millis(
            10 * u64::from(TCP_CLOCK_SCALE),
        )));
        // Without congestion control smoltcp blasts whole windows; losses then
        // cost go-back-N retransmissions with RTOs backing off to 60 s.
        s.set_congestion_control(tcp::CongestionControl::Reno);
        s
    }

    /// Opens a TCP connection to `port` on `peer`. Returns the socket handle;
    /// poll the socket's state to see it established.
    pub fn connect(&mut self, now: Instant, peer: &PeerKey, port: u16) -> Result<SocketHandle> {
        let Some(&pi) = self.by_key.get(&peer.0) else {
            return Err(Error::UnknownPeer(peer.to_b64()));
        };
        let remote = (IpAddress::Ipv4(self.peers[pi].entry.address), port);
        let mut sock = self.new_socket();
        let local_port = self.next_port;
        self.next_port = if self.next_port == u16::MAX {
            49_152
        } else {
            self.next_port + 1
        };
        sock.connect(
            self.iface.context(),
            remote,
            (IpAddress::Ipv4(self.address), local_port),
        )
        .map_err(|e| Error::Config(format!("connect: {e}")))?;
        self.peers[pi].last_demand = Some(now);
        Ok(self.sockets.add(sock))
    }

    /// Starts accepting connections on `port`.
    pub fn listen(&mut self, port: u16) -> Result<()> {
        if port == 0 || self.listeners.contains_key(&port) {
            return Err(Error::PortInUse(port));
        }
        let mut v = Vec::with_capacity(LISTEN_BACKLOG);
        for _ in 0..LISTEN_BACKLOG {
            let mut s = self.new_socket();
            s.listen(port)
                .map_err(|e| Error::Config(format!("listen: {e}")))?;
            v.push(self.sockets.add(s));
        }
        self.listeners.insert(port, v);
        Ok(())
    }

    /// Stops accepting on `port` (half-open connections are aborted).
    pub fn unlisten(&mut self, port: u16) {
        if let Some(v) = self.listeners.remove(&port) {
            for h in v {
                self.sockets.remove(h);
            }
        }
    }

    /// Takes one established connection from `port`'s backlog, with the
    /// authenticated peer at the other end.
    pub fn accept(&mut self, port: u16) -> Option<(SocketHandle, PeerInfo)> {
        let handles = self.listeners.get(&port)?.clone();
        for (i, h) in handles.iter().enumerate() {
            let s = self.sockets.get::<tcp::Socket>(*h);
            let st = s.state();
            if matches!(st, tcp::State::Listen | tcp::State::SynReceived) {
                continue;
            }
            let remote = s.remote_endpoint();
            let mut fresh = self.new_socket();
            if fresh.listen(port).is_err() {
                return None;
            }
            let nh = self.sockets.add(fresh);
            if let Some(v) = self.listeners.get_mut(&port) {
                v[i] = nh;
            }
            let peer = remote.and_then(|r| match r.addr {
                IpAddress::Ipv4(a) => self.by_addr.get(&a).copied(),
            });
            match peer {
                Some(pi) => return Some((*h, self.info(pi))),
                None => {
                    self.sockets.remove(*h);
                    continue;
                }
            }
        }
        None
    }

    /// The TCP socket behind a handle returned by [`Core::connect`] or [`Core::accept`].
    pub fn socket(&mut self, h: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(h)
    }

    /// Frees a socket.
    pub fn remove_socket(&mut self, h: SocketHandle) {
        self.sockets.remove(h);
    }

    /// The peer at the remote end of a connected socket.
    pub fn socket_peer(&mut self, h: SocketHandle) -> Option<PeerInfo> {
        let r = self.sockets.get::<tcp::Socket>(h).remote_endpoint()?;
        let IpAddress::Ipv4(a) = r.addr;
        self.by_addr.get(&a).map(|&pi| self.info(pi))
    }
}
