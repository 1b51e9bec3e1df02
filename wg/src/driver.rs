//! The tokio IO shell around [`Core`]: one UDP socket, one task.
//!
//! [`Endpoint::bind`] spawns a single task that owns the [`Core`] (all
//! tunnels and the TCP/IP stack) and the UDP socket. Applications talk to it
//! through bounded channels: [`Endpoint::connect`] and [`Listener::accept`]
//! return [`Stream`]s (`AsyncRead + AsyncWrite`) whose data moves in chunks
//! through per-stream channels of [`STREAM_CHANNEL_CHUNKS`] chunks; when the
//! application stops reading, the channel fills, the driver stops draining
//! the TCP socket and the TCP window closes (backpressure end to end).
//!
//! The driver is the only place that reads the clock.
//!
//! Datagrams move in batches: received with `recvmmsg` and UDP GRO (the
//! kernel hands over runs of same-size datagrams as one buffer), sent with
//! UDP GSO (a run of same-size datagrams to one destination is one
//! `sendmsg`), both through `quinn-udp`. The core is polled once per batch.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::PollSender;

use crate::config::Config;
use crate::core::{Core, Event, PeerInfo, Stats, Transmit};
use crate::error::{Error, Result};
use crate::keys::PeerKey;

/// Largest chunk moved through a stream channel.
const MAX_CHUNK: usize = 64 << 10;
/// Chunks buffered per stream and direction between the app and the driver.
pub const STREAM_CHANNEL_CHUNKS: usize = 8;
/// Accepted streams queued per listener before the backlog fills.
const ACCEPT_QUEUE: usize = 64;
/// Events kept for [`Endpoint::take_events`].
const EVENT_LOG: usize = 1024;

/// UDP socket buffers: bursts of a few hundred KiB per stream must not be
/// dropped by the kernel (the OS may cap this at `net.core.rmem_max`).
const UDP_BUFFER: usize = 4 << 20;

/// Receive buffers per `recvmmsg` call; each takes a GRO run of up to 64 KiB.
const RX_BATCH: usize = 8;
const RX_BUF: usize = 65_536 + 64;
/// Bytes per GSO send (the kernel's limit is 64 KiB of UDP payload).
const GSO_BYTES: usize = 65_000;

fn bind_udp(listen: SocketAddr) -> Result<(UdpSocket, quinn_udp::UdpSocketState)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let ctx = || format!("binding UDP {listen}");
    let s = Socket::new(
        Domain::for_address(listen),
        Type::DGRAM,
        Some(Protocol::UDP),
    )
    .map_err(|e| Error::io(ctx(), e))?;
    let _ = s.set_recv_buffer_size(UDP_BUFFER);
    let _ = s.set_send_buffer_size(UDP_BUFFER);
    s.set_nonblocking(true).map_err(|e| Error::io(ctx(), e))?;
    s.bind(&listen.into()).map_err(|e| Error::io(ctx(), e))?;
    let std_sock: std::net::UdpSocket = s.into();
    let state =
        quinn_udp::UdpSocketState::new((&std_sock).into()).map_err(|e| Error::io(ctx(), e))?;
    // quinn-udp sets "don't fragment" (QUIC does its own MTU discovery).
    // PQ exchange messages are ~2.3 KB, so restore the kernel default: they
    // must still be IP-fragmented across a 1500-byte path.
    #[cfg(target_os = "linux")]
    {
        use rustix::net::sockopt;
        let r = if listen.is_ipv4() {
            sockopt::set_ip_mtu_discover(&std_sock, sockopt::Ipv4PathMtuDiscovery::WANT)
        } else {
            sockopt::set_ipv6_mtu_discover(&std_sock, sockopt::Ipv6PathMtuDiscovery::WANT)
        };
        r.map_err(|e| Error::io(ctx(), e.into()))?;
    }
    let udp = UdpSocket::from_std(std_sock).map_err(|e| Error::io(ctx(), e))?;
    Ok((udp, state))
}

/// Test hook: impairments applied to every datagram the driver sends.
/// Real packets are dropped, duplicated or delayed past the next one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Netem {
    /// Probability of dropping a datagram.
    pub loss: f64,
    /// Probability of sending a datagram twice.
    pub duplicate: f64,
    /// Probability of holding a datagram back until after the next one.
    pub reorder: f64,
    /// Seed of the impairment RNG.
    pub seed: u64,
}

struct NetemState {
    cfg: Netem,
    rng: u64,
    held: Option<(Transmit, u32)>,
}

impl NetemState {
    fn next(&mut self) -> f64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

enum Cmd {
    Connect {
        peer: PeerKey,
        port: u16,
        reply: oneshot::Sender<Result<Stream>>,
    },
    Listen {
        port: u16,
        reply: oneshot::Sender<Result<mpsc::Receiver<Stream>>>,
    },
    Unlisten(u16),
    PeerStatus {
        peer: PeerKey,
        reply: oneshot::Sender<Option<PeerStatus>>,
    },
    RotateNow {
        peer: PeerKey,
        reply: oneshot::Sender<bool>,
    },
    Sockets(oneshot::Sender<Vec<String>>),
    Shutdown,
}

/// What the endpoint knows about one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// PSK epoch of the active session (0 = classical only).
    pub epoch: u64,
    /// Whether the active session has completed a handshake.
    pub established: bool,
    /// The peer's current UDP endpoint.
    pub endpoint: Option<SocketAddr>,
}

struct Shared {
    stats: Mutex<Stats>,
    events: Mutex<VecDeque<Event>>,
}

/// A running WireGuard endpoint. Cheap to clone; the driver task stops on
/// [`Endpoint::shutdown`] or when every `Endpoint` and [`Listener`] is dropped
/// (open streams then end with an error).
#[derive(Clone)]
pub struct Endpoint {
    cmd: mpsc::Sender<Cmd>,
    shared: Arc<Shared>,
    local: SocketAddr,
    public: PeerKey,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("local", &self.local)
            .field("public", &self.public)
            .finish()
    }
}

impl Endpoint {
    /// Binds the UDP socket at `listen` and starts the driver task on the
    /// current tokio runtime.
    pub async fn bind(cfg: Config, listen: SocketAddr) -> Result<Endpoint> {
        Self::bind_with(cfg, listen, None).await
    }

    /// Like [`Endpoint::bind`], with an optional impairment hook for tests.
    pub async fn bind_with(
        cfg: Config,
        listen: SocketAddr,
        netem: Option<Netem>,
    ) -> Result<Endpoint> {
        let now = Instant::now();
        let core = Core::new(&cfg, now)?;
        let (udp, udp_state) = bind_udp(listen)?;
        let local = udp
            .local_addr()
            .map_err(|e| Error::io("UDP local address", e))?;
        let (cmd_tx, cmd_rx) = mpsc::channel(256);
        let shared = Arc::new(Shared {
            stats: Mutex::new(Stats::default()),
            events: Mutex::new(VecDeque::new()),
        });
        let public = core.public_key();
        let driver = Driver {
            core,
            udp,
            udp_state,
            out: Vec::new(),
            cmd_rx,
            notify: Arc::new(Notify::new()),
            shared: shared.clone(),
            conns: Vec::new(),
            evs: Vec::new(),
            connecting: Vec::new(),
            listeners: HashMap::new(),
            netem: netem.map(|cfg| NetemState {
                cfg,
                rng: cfg.seed | 1,
                held: None,
            }),
            connect_timeout: cfg.connect_timeout,
        };
        tokio::spawn(driver.run());
        Ok(Endpoint {
            cmd: cmd_tx,
            shared,
            local,
            public,
        })
    }

    /// The UDP address the endpoint is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// This endpoint's public key.
    pub fn public_key(&self) -> PeerKey {
        self.public
    }

    /// Opens a stream to `port` on `peer` (which must be in the peer table).
    ///
    /// Errors: [`Error::UnknownPeer`], [`Error::ConnectionRefused`],
    /// [`Error::ConnectTimeout`] (after `Config::connect_timeout`),
    /// [`Error::EndpointClosed`].
    pub async fn connect(&self, peer: &PeerKey, port: u16) -> Result<Stream> {
        let (reply, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Connect {
                peer: *peer,
                port,
                reply,
            })
            .await
            .map_err(|_| Error::EndpointClosed)?;
        rx.await.map_err(|_| Error::EndpointClosed)?
    }

    /// Accepts streams on `port` from any peer of the table.
    pub async fn listen(&self, port: u16) -> Result<Listener> {
        let (reply, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Listen { port, reply })
            .await
            .map_err(|_| Error::EndpointClosed)?;
        let accepted = rx.await.map_err(|_| Error::EndpointClosed)??;
        Ok(Listener {
            port,
            accepted,
            cmd: self.cmd.clone(),
        })
    }

    /// Counters of the core (PQ rotations, drops by cause, ...).
    pub fn stats(&self) -> Stats {
        self.shared.stats.lock().map(|s| *s).unwrap_or_default()
    }

    /// Takes the events recorded so far (unknown keys, PQ installs, ...).
    pub fn take_events(&self) -> Vec<Event> {
        self.shared
            .events
            .lock()
            .map(|mut e| e.drain(..).collect())
            .unwrap_or_default()
    }

    /// State of the session with `peer`.
    pub async fn peer_status(&self, peer: &PeerKey) -> Result<Option<PeerStatus>> {
        let (reply, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::PeerStatus { peer: *peer, reply })
            .await
            .map_err(|_| Error::EndpointClosed)?;
        rx.await.map_err(|_| Error::EndpointClosed)
    }

    /// Starts a PQ key rotation with `peer` now, if this side initiates them.
    pub async fn rotate_now(&self, peer: &PeerKey) -> Result<bool> {
        let (reply, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::RotateNow { peer: *peer, reply })
            .await
            .map_err(|_| Error::EndpointClosed)?;
        rx.await.map_err(|_| Error::EndpointClosed)
    }

    /// One line per open stream (TCP state, queues) for diagnostics; with the
    /// environment variable `DLOG_WG_DEBUG_SOCKETS` set, also smoltcp's
    /// timer, RTT estimator and congestion state.
    pub async fn socket_states(&self) -> Result<Vec<String>> {
        let (reply, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Sockets(reply))
            .await
            .map_err(|_| Error::EndpointClosed)?;
        rx.await.map_err(|_| Error::EndpointClosed)
    }

    /// Stops the driver task; open streams end with an error.
    pub async fn shutdown(&self) {
        let _ = self.cmd.send(Cmd::Shutdown).await;
    }
}

/// Accepts streams on one port. Dropping it stops listening.
#[derive(Debug)]
pub struct Listener {
    port: u16,
    accepted: mpsc::Receiver<Stream>,
    cmd: mpsc::Sender<Cmd>,
}

impl Listener {
    /// The next stream; its [`Stream::peer`] is the authenticated remote peer.
    pub async fn accept(&mut self) -> Result<Stream> {
        self.accepted.recv().await.ok_or(Error::EndpointClosed)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.cmd.try_send(Cmd::Unlisten(self.port));
    }
}

type NetResult = std::result::Result<Bytes, io::ErrorKind>;

/// A TCP byte stream inside the tunnel.
///
/// [`Stream::into_split`] gives independently owned read and write halves,
/// so one task can read while another writes.
pub struct Stream {
    read: ReadHalf,
    write: WriteHalf,
}

/// The receiving half of a [`Stream`]. Dropping it discards whatever the
/// peer sends later (the peer is never stalled).
pub struct ReadHalf {
    rx: mpsc::Receiver<NetResult>,
    buf: Bytes,
    notify: Arc<Notify>,
    peer: PeerInfo,
}

/// The sending half of a [`Stream`]. Dropping it closes the sending side
/// (a FIN after the queued bytes).
pub struct WriteHalf {
    tx: PollSender<Bytes>,
    notify: Arc<Notify>,
    /// Set (before `notify`) when this side queued bytes or closed, so the
    /// driver looks at this stream's channel only when it has news.
    kick: Arc<AtomicBool>,
    peer: PeerInfo,
}

impl WriteHalf {
    fn kick(&self) {
        self.kick.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    /// The authenticated peer at the other end.
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    /// Queues `bytes` without copying them (a large buffer is handed to the
    /// driver in pieces of at most 64 KiB, still without copying).
    pub async fn send_bytes(&mut self, mut bytes: Bytes) -> io::Result<()> {
        while !bytes.is_empty() {
            let piece = bytes.split_to(bytes.len().min(MAX_CHUNK));
            std::future::poll_fn(|cx| self.tx.poll_reserve(cx))
                .await
                .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
            self.push(piece)?;
        }
        Ok(())
    }

    /// Hands one piece (at most 64 KiB) to the driver; the channel slot must
    /// be reserved already.
    fn push(&mut self, piece: Bytes) -> io::Result<()> {
        self.tx
            .send_item(piece)
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
        self.kick();
        Ok(())
    }
}

impl ReadHalf {
    /// The authenticated peer at the other end.
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("peer", &self.read.peer)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ReadHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadHalf")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for WriteHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteHalf")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl Stream {
    /// The authenticated peer at the other end (public key, name, role).
    pub fn peer(&self) -> &PeerInfo {
        &self.read.peer
    }

    /// Splits into halves that can be used from different tasks.
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        (self.read, self.write)
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.buf.is_empty() {
                let n = self.buf.len().min(out.remaining());
                out.put_slice(&self.buf[..n]);
                self.buf.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(self.rx.poll_recv(cx)) {
                Some(Ok(b)) => {
                    self.buf = b;
                    self.notify.notify_one();
                }
                Some(Err(k)) => return Poll::Ready(Err(io::Error::from(k))),
                None => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if ready!(self.tx.poll_reserve(cx)).is_err() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let n = buf.len().min(MAX_CHUNK);
        Poll::Ready(self.push(Bytes::copy_from_slice(&buf[..n])).map(|()| n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tx.close();
        self.kick();
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, out)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.write).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.write).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.write).poll_shutdown(cx)
    }
}

impl Drop for WriteHalf {
    fn drop(&mut self) {
        self.tx.close();
        self.kick();
    }
}

impl Drop for ReadHalf {
    fn drop(&mut self) {
        // Let the driver see the closed channel and discard further input.
        self.rx.close();
        self.notify.notify_one();
    }
}

struct Conn {
    h: SocketHandle,
    /// The peer at the other end.
    peer: PeerKey,
    to_net: mpsc::Receiver<Bytes>,
    /// The stream's [`Stream::kick`] flag.
    kick: Arc<AtomicBool>,
    /// `to_net` may hold chunks or a close (not yet seen empty since a kick).
    more: bool,
    pending: Option<Bytes>,
    from_net: Option<mpsc::Sender<NetResult>>,
    write_closed: bool,
    saw_fin: bool,
}

struct Connecting {
    h: SocketHandle,
    peer: PeerInfo,
    port: u16,
    deadline: Instant,
    reply: oneshot::Sender<Result<Stream>>,
}

struct Driver {
    core: Core,
    udp: UdpSocket,
    udp_state: quinn_udp::UdpSocketState,
    /// Datagrams to send, in order, before batching.
    out: Vec<Transmit>,
    cmd_rx: mpsc::Receiver<Cmd>,
    notify: Arc<Notify>,
    shared: Arc<Shared>,
    conns: Vec<Conn>,
    /// Core events not yet published.
    evs: Vec<Event>,
    connecting: Vec<Connecting>,
    listeners: HashMap<u16, mpsc::Sender<Stream>>,
    netem: Option<NetemState>,
    connect_timeout: Duration,
}

impl Driver {
    async fn run(mut self) {
        let mut rxbufs = vec![vec![0u8; RX_BUF]; RX_BATCH];
        let mut meta = vec![quinn_udp::RecvMeta::default(); RX_BATCH];
        loop {
            let now = Instant::now();
            self.receive(now, &mut rxbufs, &mut meta);
            self.take_events();
            loop {
                match self.cmd_rx.try_recv() {
                    Ok(c) => {
                        if !self.command(now, c) {
                            return self.stop();
                        }
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return self.stop(),
                }
            }
            self.pump();
            self.core.poll(now);
            self.accept_all();
            self.finish_connects(now);
            self.pump();
            self.flush().await;
            self.publish();
            let deadline = self.core.poll_at(now);
            if deadline <= Instant::now() {
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                biased;
                r = self.udp.readable() => {
                    if let Err(e) = r {
                        tracing::error!("UDP socket failed: {e}");
                        return self.stop();
                    }
                }
                c = self.cmd_rx.recv() => match c {
                    Some(c) => {
                        if !self.command(Instant::now(), c) {
                            return self.stop();
                        }
                    }
                    None => return self.stop(),
                },
                _ = self.notify.notified() => {}
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {}
            }
        }
    }

    /// Feeds the core what the socket holds (bounded per loop iteration).
    fn receive(&mut self, now: Instant, bufs: &mut [Vec<u8>], meta: &mut [quinn_udp::RecvMeta]) {
        let mut datagrams = 0;
        while datagrams < 1024 {
            let mut slices: Vec<io::IoSliceMut<'_>> =
                bufs.iter_mut().map(|b| io::IoSliceMut::new(b)).collect();
            let r = self.udp.try_io(tokio::io::Interest::READABLE, || {
                self.udp_state.recv((&self.udp).into(), &mut slices, meta)
            });
            let n = match r {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!("UDP receive: {e}");
                    break;
                }
            };
            for (m, buf) in meta.iter().zip(slices.iter()).take(n) {
                let stride = if m.stride == 0 { m.len } else { m.stride };
                for d in buf[..m.len.min(buf.len())].chunks(stride.max(1)) {
                    self.core.handle_datagram(now, m.addr, d);
                    datagrams += 1;
                }
            }
        }
    }

    fn stop(&mut self) {
        for c in self.conns.drain(..) {
            if let Some(tx) = c.from_net {
                let _ = tx.try_send(Err(io::ErrorKind::ConnectionAborted));
            }
        }
    }

    fn command(&mut self, now: Instant, c: Cmd) -> bool {
        match c {
            Cmd::Connect { peer, port, reply } => {
                let Some(info) = self.core.peer_info(&peer) else {
                    let _ = reply.send(Err(Error::UnknownPeer(peer.to_b64())));
                    return true;
                };
                match self.core.connect(now, &peer, port) {
                    Ok(h) => self.connecting.push(Connecting {
                        h,
                        peer: info,
                        port,
                        deadline: now + self.connect_timeout,
                        reply,
                    }),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Cmd::Listen { port, reply } => match self.core.listen(port) {
                Ok(()) => {
                    let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
                    self.listeners.insert(port, tx);
                    let _ = reply.send(Ok(rx));
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Cmd::Unlisten(port) => {
                self.listeners.remove(&port);
                self.core.unlisten(port);
            }
            Cmd::PeerStatus { peer, reply } => {
                let st = self
                    .core
                    .peer_epoch(&peer)
                    .map(|(epoch, established)| PeerStatus {
                        epoch,
                        established,
                        endpoint: self.core.peer_endpoint(&peer),
                    });
                let _ = reply.send(st);
            }
            Cmd::RotateNow { peer, reply } => {
                let _ = reply.send(self.core.rotate_now(now, &peer));
            }
            Cmd::Sockets(reply) => {
                let mut v = Vec::new();
                for c in &self.conns {
                    let sock = self.core.socket(c.h);
                    v.push(format!(
                        "{:?} local={:?} remote={:?} send_queue={} recv_queue={} pending={} write_closed={} reader={}",
                        sock.state(),
                        sock.local_endpoint(),
                        sock.remote_endpoint(),
                        sock.send_queue(),
                        sock.recv_queue(),
                        c.pending.as_ref().map_or(0, |b| b.len()),
                        c.write_closed,
                        c.from_net.is_some(),
                    ));
                    if std::env::var("DLOG_WG_DEBUG_SOCKETS").is_ok() {
                        let d = format!("{sock:?}");
                        let keep: Vec<&str> = d
                            .split(", ")
                            .filter(|f| {
                                [
                                    "timer",
                                    "rtte",
                                    "remote_win",
                                    "local_seq",
                                    "remote_last",
                                    "remote_next",
                                    "cwnd",
                                    "congestion",
                                    "dup_acks",
                                    "rto",
                                    "local_rx_last",
                                    "state",
                                ]
                                .iter()
                                .any(|k| f.contains(k))
                            })
                            .collect();
                        v.push(keep.join(", "));
                    }
                }
                let _ = reply.send(v);
            }
            Cmd::Shutdown => return false,
        }
        true
    }

    fn new_stream(&mut self, h: SocketHandle, peer: PeerInfo) -> Stream {
        let (app_tx, to_net) = mpsc::channel(STREAM_CHANNEL_CHUNKS);
        let (from_net, app_rx) = mpsc::channel(STREAM_CHANNEL_CHUNKS);
        let kick = Arc::new(AtomicBool::new(false));
        self.conns.push(Conn {
            h,
            peer: peer.public_key,
            to_net,
            kick: kick.clone(),
            more: true,
            pending: None,
            from_net: Some(from_net),
            write_closed: false,
            saw_fin: false,
        });
        Stream {
            read: ReadHalf {
                rx: app_rx,
                buf: Bytes::new(),
                notify: self.notify.clone(),
                peer: peer.clone(),
            },
            write: WriteHalf {
                tx: PollSender::new(app_tx),
                notify: self.notify.clone(),
                kick,
                peer,
            },
        }
    }

    fn accept_all(&mut self) {
        let ports: Vec<u16> = self.listeners.keys().copied().collect();
        for port in ports {
            while let Some(tx) = self.listeners.get(&port) {
                if tx.is_closed() {
                    self.listeners.remove(&port);
                    self.core.unlisten(port);
                    break;
                }
                if tx.capacity() == 0 {
                    break;
                }
                let Some((h, info)) = self.core.accept(port) else {
                    break;
                };
                let s = self.new_stream(h, info);
                if let Some(tx) = self.listeners.get(&port) {
                    let _ = tx.try_send(s);
                }
            }
        }
    }

    fn finish_connects(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.connecting.len() {
            let st = self.core.socket(self.connecting[i].h).state();
            let done = match st {
                tcp::State::SynSent | tcp::State::SynReceived
                    if now < self.connecting[i].deadline =>
                {
                    None
                }
                tcp::State::SynSent | tcp::State::SynReceived => Some(Err(true)),
                tcp::State::Closed => Some(Err(false)),
                _ => Some(Ok(())),
            };
            let Some(done) = done else {
                i += 1;
                continue;
            };
            let c = self.connecting.swap_remove(i);
            match done {
                Ok(()) => {
                    let s = self.new_stream(c.h, c.peer);
                    let _ = c.reply.send(Ok(s));
                }
                Err(timeout) => {
                    self.core.socket(c.h).abort();
                    self.core.remove_socket(c.h);
                    let e = if timeout {
                        Error::ConnectTimeout {
                            peer: c.peer.name,
                            port: c.port,
                        }
                    } else {
                        Error::ConnectionRefused {
                            peer: c.peer.name,
                            port: c.port,
                        }
                    };
                    let _ = c.reply.send(Err(e));
                }
            }
        }
    }

    fn pump(&mut self) {
        let mut i = 0;
        while i < self.conns.len() {
            let c = &mut self.conns[i];
            let s = self.core.socket(c.h);
            // Application -> TCP (the channel only when the stream kicked:
            // with many idle streams, polling every channel is the cost).
            if c.kick.swap(false, Ordering::Acquire) {
                c.more = true;
            }
            loop {
                if c.pending.is_none() && !c.write_closed {
                    if !c.more {
                        break;
                    }
                    match c.to_net.try_recv() {
                        Ok(b) => c.pending = Some(b),
                        Err(mpsc::error::TryRecvError::Empty) => {
                            c.more = false;
                            break;
                        }
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            c.write_closed = true;
                            s.close();
                            break;
                        }
                    }
                }
                let Some(b) = c.pending.as_mut() else {
                    break;
                };
                if !s.can_send() {
                    break;
                }
                match s.send_slice(b) {
                    Ok(n) if n > 0 => {
                        b.advance(n);
                        if b.is_empty() {
                            c.pending = None;
                        }
                    }
                    _ => break,
                }
            }
            // TCP -> application.
            while let Some(tx) = &c.from_net {
                if !s.can_recv() {
                    break;
                }
                match tx.try_reserve() {
                    Ok(permit) => {
                        if let Ok(b) = s.recv(|buf| {
                            let n = buf.len().min(MAX_CHUNK);
                            (n, Bytes::copy_from_slice(&buf[..n]))
                        }) {
                            permit.send(Ok(b));
                        }
                    }
                    Err(mpsc::error::TrySendError::Full(())) => break,
                    Err(mpsc::error::TrySendError::Closed(())) => break,
                }
            }
            let state = s.state();
            if matches!(
                state,
                tcp::State::CloseWait
                    | tcp::State::LastAck
                    | tcp::State::Closing
                    | tcp::State::TimeWait
            ) {
                c.saw_fin = true;
            }
            if c.from_net.is_some() && !s.can_recv() && !s.may_recv() {
                let tx = c.from_net.take();
                if state == tcp::State::Closed && !c.saw_fin {
                    if let Some(tx) = tx {
                        let _ = tx.try_send(Err(io::ErrorKind::ConnectionReset));
                    }
                }
            }
            if c.from_net.as_ref().is_some_and(|t| t.is_closed()) {
                c.from_net = None;
            }
            if c.from_net.is_none() {
                // Nobody reads any more: discard so the peer is not stalled.
                while s.can_recv() {
                    if s.recv(|b| (b.len(), ())).is_err() {
                        break;
                    }
                }
            }
            let app_done = c.from_net.is_none() && c.write_closed && c.pending.is_none();
            let finished = app_done && matches!(state, tcp::State::Closed | tcp::State::TimeWait);
            let dead = state == tcp::State::Closed && c.from_net.is_none();
            if finished || dead {
                let h = c.h;
                self.core.remove_socket(h);
                self.conns.swap_remove(i);
                continue;
            }
            i += 1;
        }
    }

    async fn flush(&mut self) {
        let mut out = std::mem::take(&mut self.out);
        while let Some(t) = self.core.pop_transmit() {
            match self.netem.as_mut() {
                None => out.push(t),
                Some(n) => {
                    let (loss, dup, reorder) = (n.next(), n.next(), n.next());
                    if loss < n.cfg.loss {
                        continue;
                    }
                    if reorder < n.cfg.reorder && n.held.is_none() {
                        n.held = Some((t, 0));
                        continue;
                    }
                    let held = n.held.take();
                    if dup < n.cfg.duplicate {
                        out.push(Transmit {
                            dst: t.dst,
                            data: t.data.clone(),
                        });
                    }
                    out.push(t);
                    if let Some((h, _)) = held {
                        out.push(h);
                    }
                }
            }
        }
        // A held datagram waits at most one extra loop iteration.
        if let Some(n) = self.netem.as_mut() {
            match n.held.take() {
                Some((t, age)) if age >= 1 => out.push(t),
                Some((t, age)) => n.held = Some((t, age + 1)),
                None => {}
            }
        }
        self.send_batched(&out).await;
        out.clear();
        self.out = out;
    }

    /// Sends `out` in order; runs of equal-size datagrams to one destination
    /// (the last of a run may be shorter) go out as one GSO `sendmsg`.
    async fn send_batched(&mut self, out: &[Transmit]) {
        let max_segs = self.udp_state.max_gso_segments().max(1);
        let mut batch: Vec<u8> = Vec::new();
        let mut i = 0;
        while i < out.len() {
            let first = &out[i];
            let seg = first.data.len();
            let mut j = i + 1;
            if max_segs > 1 && seg > 0 {
                while j < out.len()
                    && j - i < max_segs
                    && out[j].dst == first.dst
                    && (j - i + 1) * seg <= GSO_BYTES
                    && out[j].data.len() <= seg
                {
                    let short = out[j].data.len() < seg;
                    j += 1;
                    if short {
                        break;
                    }
                }
            }
            if j - i == 1 {
                self.send_one(first.dst, &first.data, None).await;
            } else {
                batch.clear();
                for t in &out[i..j] {
                    batch.extend_from_slice(&t.data);
                }
                self.send_one(first.dst, &batch, Some(seg)).await;
            }
            i = j;
        }
    }

    async fn send_one(&self, dst: SocketAddr, contents: &[u8], segment_size: Option<usize>) {
        let t = quinn_udp::Transmit {
            destination: dst,
            ecn: None,
            contents,
            segment_size,
            src_ip: None,
        };
        loop {
            let r = self.udp.try_io(tokio::io::Interest::WRITABLE, || {
                self.udp_state.try_send((&self.udp).into(), &t)
            });
            match r {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(e) = self.udp.writable().await {
                        tracing::debug!("UDP send to {dst}: {e}");
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!("UDP send to {dst}: {e}");
                    if let Some(seg) = segment_size {
                        // GSO refused (e.g. by the device): one by one.
                        for d in contents.chunks(seg) {
                            Box::pin(self.send_one(dst, d, None)).await;
                        }
                    }
                    return;
                }
            }
        }
    }

    /// Moves the core's events to `evs`, acting on those that concern open
    /// streams. Called right after datagrams were handled (where a restart
    /// is detected), before any new stream can be made with the peer.
    fn take_events(&mut self) {
        while let Some(e) = self.core.pop_event() {
            if let Event::PeerRestarted { peer } = &e {
                self.reset_streams(peer);
            }
            self.evs.push(e);
        }
    }

    /// The peer came back with new tunnel state: it has none of our TCP
    /// connections any more, so each stream with it is aborted now (its
    /// reader sees a reset) instead of failing on its next use, which
    /// would cost that call (a Raft vote, say) a timeout.
    fn reset_streams(&mut self, peer: &PeerKey) {
        let mut n = 0;
        for c in self.conns.iter().filter(|c| c.peer == *peer) {
            self.core.socket(c.h).abort();
            n += 1;
        }
        if n > 0 {
            tracing::debug!(%peer, streams = n, "peer restarted: its streams were reset");
        }
    }

    fn publish(&mut self) {
        if let Ok(mut s) = self.shared.stats.lock() {
            *s = self.core.stats();
        }
        self.take_events();
        if self.evs.is_empty() {
            return;
        }
        if let Ok(mut q) = self.shared.events.lock() {
            for e in self.evs.drain(..) {
                if q.len() >= EVENT_LOG {
                    q.pop_front();
                }
                q.push_back(e);
            }
        }
        // A poisoned log drops them, as before: `evs` never grows unbounded.
        self.evs.clear();
    }
}
