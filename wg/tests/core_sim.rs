//! The sans-IO core on a virtual clock: deterministic network, no sockets,
//! no sleeping. Minutes of protocol time run in milliseconds.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use dlog_wg::config::PqMode;
use dlog_wg::core::{Core, Event};
use dlog_wg::keys::PeerKey;
use smoltcp::iface::SocketHandle;

const LATENCY: Duration = Duration::from_millis(1);

struct Sim {
    t: Instant,
    start: Instant,
    cores: Vec<Core>,
    addrs: Vec<SocketAddr>,
    inflight: Vec<(Instant, usize, SocketAddr, Vec<u8>)>,
    rng: u64,
    loss: f64,
    delivered: u64,
}

impl Sim {
    fn new(specs: &[NodeSpec], tables: &[String], pq: PqMode, rotation: Duration) -> Sim {
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
        }
    }

    fn rand(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    fn collect(&mut self) {
        for i in 0..self.cores.len() {
            while let Some(tx) = self.cores[i].pop_transmit() {
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
    fn step(&mut self, limit: Instant) {
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
        self.t = next.max(self.t + Duration::from_micros(1));
        let now = self.t;
        let (due, rest): (Vec<_>, Vec<_>) =
            self.inflight.drain(..).partition(|(at, ..)| *at <= now);
        self.inflight = rest;
        for (_, to, from, data) in due {
            self.delivered += 1;
            self.cores[to].handle_datagram(now, from, &data);
        }
    }

    fn run_until(&mut self, max: Duration, mut cond: impl FnMut(&mut Sim) -> bool) -> bool {
        let limit = self.t + max;
        while self.t < limit {
            if cond(self) {
                return true;
            }
            self.step(limit);
        }
        cond(self)
    }

    fn elapsed(&self) -> Duration {
        self.t - self.start
    }
}

fn key(n: &NodeSpec) -> PeerKey {
    n.keys.public_key()
}

/// Connects core 0 to core 1's port 80, returns (client, server) handles.
fn open(sim: &mut Sim, ns: &[NodeSpec]) -> (SocketHandle, SocketHandle) {
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

/// Moves `data` from core `a`'s socket to core `b`'s socket.
fn transfer(
    sim: &mut Sim,
    a: usize,
    ha: SocketHandle,
    b: usize,
    hb: SocketHandle,
    data: &[u8],
    max: Duration,
) {
    let mut sent = 0;
    let mut got = Vec::new();
    let ok = sim.run_until(max, |s| {
        if sent < data.len() {
            if let Ok(n) = s.cores[a].socket(ha).send_slice(&data[sent..]) {
                sent += n;
            }
        }
        let sock = s.cores[b].socket(hb);
        let mut buf = [0u8; 8192];
        while let Ok(n) = sock.recv_slice(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got.len() >= data.len()
    });
    assert!(ok, "transfer incomplete: {} of {}", got.len(), data.len());
    assert!(got == data, "data corrupted");
}

#[test]
fn handshake_pq_and_tcp_in_virtual_milliseconds() {
    let ns = nodes(2);
    let t = table(&ns);
    let mut sim = Sim::new(
        &ns,
        &[t.clone(), t],
        PqMode::Required,
        Duration::from_secs(120),
    );
    let real = Instant::now();
    let (c, s) = open(&mut sim, &ns);
    // One handshake, one PQ exchange, one PQ handshake, the SYN (retransmitted once
    // after being held back while no PQ key existed).
    assert!(
        sim.elapsed() < Duration::from_secs(3),
        "took {:?}",
        sim.elapsed()
    );
    assert_eq!(sim.cores[0].peer_epoch(&key(&ns[1])).unwrap().0, 1);
    transfer(
        &mut sim,
        0,
        c,
        1,
        s,
        &pattern(1, 300_000),
        Duration::from_secs(30),
    );
    transfer(
        &mut sim,
        1,
        s,
        0,
        c,
        &pattern(2, 300_000),
        Duration::from_secs(30),
    );
    assert!(real.elapsed() < Duration::from_secs(20));
}

#[test]
fn rotation_every_interval_keeps_the_stream() {
    let ns = nodes(2);
    let t = table(&ns);
    let mut sim = Sim::new(
        &ns,
        &[t.clone(), t],
        PqMode::Required,
        Duration::from_secs(120),
    );
    let (c, s) = open(&mut sim, &ns);
    // Ten minutes of virtual time with a message every second.
    for i in 0..600u64 {
        let msg = pattern(i, 1000);
        transfer(&mut sim, 0, c, 1, s, &msg, Duration::from_secs(5));
        let until = sim.t + Duration::from_secs(1);
        sim.run_until(Duration::from_secs(1), |s| s.t >= until);
    }
    let epoch = sim.cores[0].peer_epoch(&key(&ns[1])).unwrap().0;
    assert!(epoch >= 5, "epoch {epoch} after 10 virtual minutes");
    assert!(sim.cores[0].stats().pq_rotations >= 5);
    assert!(sim.cores[1].stats().pq_rotations >= 5);
    assert_eq!(sim.cores[0].stats().pq_failures, 0);
}

#[test]
fn lossy_network_still_delivers() {
    let ns = nodes(2);
    let t = table(&ns);
    let mut sim = Sim::new(
        &ns,
        &[t.clone(), t],
        PqMode::Required,
        Duration::from_secs(120),
    );
    sim.loss = 0.1;
    let (c, s) = open(&mut sim, &ns);
    transfer(
        &mut sim,
        0,
        c,
        1,
        s,
        &pattern(3, 100_000),
        Duration::from_secs(600),
    );
    transfer(
        &mut sim,
        1,
        s,
        0,
        c,
        &pattern(4, 100_000),
        Duration::from_secs(600),
    );
}

#[test]
fn restarted_peer_is_recovered_without_a_long_stall() {
    let ns = nodes(2);
    let t = table(&ns);
    let mut sim = Sim::new(
        &ns,
        &[t.clone(), t.clone()],
        PqMode::Required,
        Duration::from_secs(120),
    );
    let (c, s) = open(&mut sim, &ns);
    transfer(&mut sim, 0, c, 1, s, b"before", Duration::from_secs(5));
    // Core 1 loses all state.
    let cfg = config(&ns[1], &t, PqMode::Required);
    sim.cores[1] = Core::new(&cfg, sim.t).unwrap();
    let restarted_at = sim.t;
    // Core 0 keeps sending on its old connection (which the new core resets);
    // then opens a new one.
    let _ = sim.cores[0].socket(c).send_slice(b"into the void");
    let (c2, s2) = open(&mut sim, &ns);
    transfer(&mut sim, 0, c2, 1, s2, b"after", Duration::from_secs(10));
    let took = sim.t - restarted_at;
    assert!(took < Duration::from_secs(20), "recovery took {took:?}");
    assert!(sim.cores[1].peer_epoch(&key(&ns[0])).unwrap().0 >= 1);
}

#[test]
fn unknown_key_is_dropped_before_the_stack() {
    let ns = nodes(3);
    // Core 0 knows only core 1; core 2 (a stranger) knows core 0.
    let t0 = table(&ns[..2]);
    let t2 = format!("{}{}", peer_toml(&ns[0], true), peer_toml(&ns[2], true));
    let mut sim = Sim::new(
        &ns,
        &[t0.clone(), t0, t2],
        PqMode::Preferred,
        Duration::from_secs(120),
    );
    sim.cores[0].listen(80).unwrap();
    let now = sim.t;
    sim.cores[2].connect(now, &key(&ns[0]), 80).unwrap();
    sim.run_until(Duration::from_secs(10), |_| false);
    assert!(sim.cores[0].stats().dropped_unknown_key >= 1);
    assert!(sim.cores[0].accept(80).is_none());
    let mut saw = false;
    while let Some(e) = sim.cores[0].pop_event() {
        saw |= matches!(e, Event::UnknownKey { key, .. } if key == ns[2].keys.public_key());
    }
    assert!(saw);
}

#[test]
fn handshake_floods_are_rate_limited_with_cookies() {
    use boringtun::noise::{Tunn, TunnResult};
    use boringtun::x25519::{PublicKey, StaticSecret};
    let ns = nodes(2);
    let t = table(&ns);
    let mut sim = Sim::new(
        &ns,
        &[t.clone(), t],
        PqMode::Preferred,
        Duration::from_secs(120),
    );
    // A stranger floods core 0 with fresh handshake initiations.
    let stranger = StaticSecret::from([42u8; 32]);
    let target = PublicKey::from(key(&ns[0]).0);
    let mut tunn = Tunn::new(stranger, target, None, None, 1, None);
    let from: SocketAddr = "192.0.2.99:4444".parse().unwrap();
    let mut buf = [0u8; 256];
    let now = sim.t;
    for _ in 0..1000 {
        if let TunnResult::WriteToNetwork(p) = tunn.format_handshake_initiation(&mut buf, true) {
            let p = p.to_vec();
            sim.cores[0].handle_datagram(now, from, &p);
        }
    }
    let st = sim.cores[0].stats();
    assert!(st.cookies_sent > 0, "{st:?}");
    assert!(
        st.dropped_unknown_key > 0 && st.dropped_unknown_key < 1000,
        "{st:?}"
    );
    // Legitimate peers still get through after the limiter resets.
    let (c, s) = open(&mut sim, &ns);
    transfer(&mut sim, 0, c, 1, s, b"still fine", Duration::from_secs(10));
}
