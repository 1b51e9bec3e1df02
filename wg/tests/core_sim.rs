//! The sans-IO core on a virtual clock: deterministic network, no sockets,
//! no sleeping. Minutes of protocol time run in milliseconds. (boringtun's
//! own timers run on the virtual clock in `wg/clock-tests`.)

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::sim::*;
use common::*;
use dlog_wg::config::PqMode;
use dlog_wg::core::{Core, Event};

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
    // Each rotation is a handshake, counted once on each side.
    let hs = sim.cores[0].stats().handshakes + sim.cores[1].stats().handshakes;
    assert!(hs >= 2 * 6, "{hs} handshake messages accepted");
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
