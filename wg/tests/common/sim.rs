//! A deterministic network of sans-IO cores on a virtual clock: no sockets,
//! no sleeping; minutes of protocol time run in milliseconds.
//!
//! boringtun keeps its own clock. In the main workspace it is the real
//! monotonic clock, so only our own timers (PQ rotation, handshake retry,
//! TCP) see virtual time. `wg/clock-tests` builds boringtun with its
//! `mock-instant` feature and passes [`Sim::on_advance`] a function that
//! moves that mock clock with the simulation, so boringtun's rekey and
//! expiry timers run on the same virtual clock.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use dlog_wg::config::PqMode;
use dlog_wg::core::Core;
use dlog_wg::keys::PeerKey;
use smoltcp::iface::SocketHandle;

pub const LATENCY: Duration = Duration::from_millis(1);

pub struct Sim {
    pub t: Instant,
    pub start: Instant,
    pub cores: Vec<Core>,
    pub addrs: Vec<SocketAddr>,
    pub inflight: Vec<(Instant, usize, SocketAddr, Vec<u8>)>,
    pub rng: u64,
    pub loss: f64,
    pub delivered: u64,
    /// WireGuard handshake initiations sent (message type 1), all cores.
    pub handshake_initiations: u64,
    /// Called with every step of virtual time (moves boringtun's mock clock).
    pub on_advance: fn(Duration),
}

impl Sim {
    pub fn new(specs: &[NodeSpec], tables: &[String], pq: PqMode, rotation: Duration) -> Sim {
        let start = Instant::now();
        let mut cores = Vec::new();
        let mut addrs = Vec::new();
        for (i, n) in specs.iter().enumerate() {
            let mut c = config(n, &tables[i], pq);
            c.rotation_interval = rotation;
            cores.push(Core::new(&c, start).unwrap());
            addrs.push(n.udp);
        }
        Sim {
            t: start,
            start,
            cores,
            addrs,
            inflight: Vec::new(),
            rng: 0x9E37_79B9_7F4A_7C15,
            loss: 0.0,
            delivered: 0,
            handshake_initiations: 0,
            on_advance: |_| {},
        }
    }

    pub fn rand(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn collect(&mut self) {
        for i in 0..self.cores.len() {
            while let Some(tx) = self.cores[i].pop_transmit() {
                if tx.data.first() == Some(&1) && tx.data.len() == 148 {
                    self.handshake_initiations += 1;
                }
                let Some(to) = self.addrs.iter().position(|a| *a == tx.dst) else {
                    continue;
                };
                if self.rand() < self.loss {
                    continue;
                }
                self.inflight
                    .push((self.t + LATENCY, to, self.addrs[i], tx.data));
            }
        }
    }

    /// Advances to the next event (delivery or timer), at most to `limit`.
    pub fn step(&mut self, limit: Instant) {
        for c in &mut self.cores {
            c.poll(self.t);
        }
        self.collect();
        let mut next = limit;
        for (at, ..) in &self.inflight {
            next = next.min(*at);
        }
        for c in &mut self.cores {
            next = next.min(c.poll_at(self.t));
        }
        let next = next.max(self.t + Duration::from_micros(1));
        (self.on_advance)(next - self.t);
        self.t = next;
        let now = self.t;
        let (due, rest): (Vec<_>, Vec<_>) =
            self.inflight.drain(..).partition(|(at, ..)| *at <= now);
        self.inflight = rest;
        for (_, to, from, data) in due {
            self.delivered += 1;
            self.cores[to].handle_datagram(now, from, &data);
        }
    }

    pub fn run_until(&mut self, max: Duration, mut cond: impl FnMut(&mut Sim) -> bool) -> bool {
        let limit = self.t + max;
        while self.t < limit {
            if cond(self) {
                return true;
            }
            self.step(limit);
        }
        cond(self)
    }

    pub fn elapsed(&self) -> Duration {
        self.t - self.start
    }
}

pub fn key(n: &NodeSpec) -> PeerKey {
    n.keys.public_key()
}

/// Connects core 0 to core 1's port 80, returns (client, server) handles.
pub fn open(sim: &mut Sim, ns: &[NodeSpec]) -> (SocketHandle, SocketHandle) {
    sim.cores[1].listen(80).ok();
    let t = sim.t;
    let c = sim.cores[0].connect(t, &key(&ns[1]), 80).unwrap();
    let mut server = None;
    assert!(
        sim.run_until(Duration::from_secs(30), |s| {
            if server.is_none() {
                server = s.cores[1].accept(80).map(|(h, info)| {
                    assert_eq!(info.public_key, key(&ns[0]));
                    h
                });
            }
            server.is_some() && s.cores[0].socket(c).may_send()
        }),
        "connection not established"
    );
    (c, server.unwrap())
}

/// A one-way transfer in progress: how much of `data` the sender's socket
/// took and what the receiver's socket gave back.
#[derive(Default)]
pub struct Flow {
    pub sent: usize,
    pub got: Vec<u8>,
}

impl Flow {
    /// Feeds the rest of `data` into socket `from` and drains socket `to`
    /// (each a core index and a handle); true once everything arrived.
    pub fn pump(
        &mut self,
        sim: &mut Sim,
        from: (usize, SocketHandle),
        to: (usize, SocketHandle),
        data: &[u8],
    ) -> bool {
        if self.sent < data.len() {
            if let Ok(n) = sim.cores[from.0]
                .socket(from.1)
                .send_slice(&data[self.sent..])
            {
                self.sent += n;
            }
        }
        let sock = sim.cores[to.0].socket(to.1);
        let mut buf = [0u8; 8192];
        while let Ok(n) = sock.recv_slice(&mut buf) {
            if n == 0 {
                break;
            }
            self.got.extend_from_slice(&buf[..n]);
        }
        self.got.len() >= data.len()
    }

    /// Asserts that the flow finished (`ok`) and delivered `data` intact.
    pub fn assert_delivered(&self, ok: bool, data: &[u8]) {
        assert!(
            ok,
            "transfer incomplete: {} of {}",
            self.got.len(),
            data.len()
        );
        assert!(self.got == data, "data corrupted");
    }
}

/// Moves `data` from core `a`'s socket to core `b`'s socket.
pub fn transfer(
    sim: &mut Sim,
    a: usize,
    ha: SocketHandle,
    b: usize,
    hb: SocketHandle,
    data: &[u8],
    max: Duration,
) {
    let mut flow = Flow::default();
    let ok = sim.run_until(max, |s| flow.pump(s, (a, ha), (b, hb), data));
    flow.assert_delivered(ok, data);
}
