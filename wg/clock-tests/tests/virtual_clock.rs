//! dlog-wg's sans-IO core with boringtun's own timers on the simulation's
//! virtual clock (boringtun's `mock-instant` feature; the mock clock is per
//! thread, and every test runs on its own thread).
//!
//! In the main workspace boringtun reads the real monotonic clock, so its
//! rekey (120 s), reject (180 s), handshake-attempt (90 s) and expiry
//! (540 s) timers never fire in a simulation that runs in milliseconds.
//! Here they do: minutes of protocol time, deterministically, in well under
//! a second of real time each.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::sim::*;
use common::*;
use dlog_wg::config::PqMode;
use mock_instant::MockClock;

fn sim(pq: PqMode) -> (Vec<NodeSpec>, Sim) {
    let ns = nodes(2);
    let t = table(&ns);
    let mut sim = Sim::new(&ns, &[t.clone(), t], pq, Duration::from_secs(120));
    sim.on_advance = MockClock::advance;
    (ns, sim)
}

/// Runs the simulation for `d` of virtual time.
fn idle(sim: &mut Sim, d: Duration) {
    let until = sim.t + d;
    sim.run_until(d, |s| s.t >= until);
}

/// The mock clock really is what boringtun reads: it moves with the
/// simulation and with nothing else.
#[test]
fn boringtun_reads_the_virtual_clock() {
    let (ns, mut sim) = sim(PqMode::Off);
    let before = MockClock::time();
    open(&mut sim, &ns);
    idle(&mut sim, Duration::from_secs(30));
    let moved = MockClock::time() - before;
    assert_eq!(moved, sim.elapsed(), "mock clock and simulation disagree");
    assert!(moved >= Duration::from_secs(30));
}

/// Traffic for ten virtual minutes on one stream: boringtun rekeys every
/// REKEY_AFTER_TIME (120 s) and the stream never stalls (each message must
/// arrive within 5 s) or breaks.
fn rekeys_under_traffic(pq: PqMode) -> Sim {
    let (ns, mut sim) = sim(pq);
    let (c, s) = open(&mut sim, &ns);
    let first = sim.handshake_initiations;
    let real = Instant::now();
    for i in 0..600u64 {
        let msg = pattern(i, 500);
        transfer(&mut sim, 0, c, 1, s, &msg, Duration::from_secs(5));
        transfer(&mut sim, 1, s, 0, c, &msg, Duration::from_secs(5));
        idle(&mut sim, Duration::from_secs(1));
    }
    let rekeys = sim.handshake_initiations - first;
    assert!(
        rekeys >= 4,
        "only {rekeys} handshakes in {:?} of traffic",
        sim.elapsed()
    );
    assert!(real.elapsed() < Duration::from_secs(30));
    sim
}

#[test]
fn classical_sessions_rekey_under_traffic() {
    let sim = rekeys_under_traffic(PqMode::Off);
    assert_eq!(sim.cores[0].stats().pq_rotations, 0);
}

/// Our PQ rotation (a new session every 120 s) and boringtun's own rekeys
/// run on the same clock and must not trip over each other.
#[test]
fn pq_rotation_and_boringtun_rekeys_coexist() {
    let sim = rekeys_under_traffic(PqMode::Required);
    let st = sim.cores[0].stats();
    assert!(st.pq_rotations >= 4, "{st:?}");
    assert_eq!(st.pq_failures, 0, "{st:?}");
    assert_eq!(st.decapsulate_errors, 0, "{st:?}");
}

/// Idle (no keepalive) for `idle_for`; then a new stream must come up
/// within a few virtual seconds, over a new handshake.
///
/// boringtun's initiator rekeys once REKEY_AFTER_TIME (120 s) after the
/// session began if it sent data on it, even when idle since; the session
/// that rekey makes carries nothing, so it is the one that ages out.
fn new_stream_after_idle(idle_for: Duration) {
    let (ns, mut sim) = sim(PqMode::Off);
    let (c, s) = open(&mut sim, &ns);
    transfer(&mut sim, 0, c, 1, s, b"before", Duration::from_secs(5));
    idle(&mut sim, idle_for);
    assert_eq!(
        sim.cores[0].peer_epoch(&key(&ns[1])),
        Some((0, false)),
        "no session may survive {idle_for:?} without traffic"
    );
    let handshakes = sim.handshake_initiations;
    let at = sim.t;
    let (c2, s2) = open(&mut sim, &ns);
    transfer(&mut sim, 0, c2, 1, s2, b"after", Duration::from_secs(10));
    let took = sim.t - at;
    assert!(
        took < Duration::from_secs(3),
        "new stream after {idle_for:?} idle took {took:?}"
    );
    assert!(
        sim.handshake_initiations > handshakes,
        "the session did not expire: no new handshake"
    );
}

/// Past REJECT_AFTER_TIME (180 s) after the idle rekey at 120 s, boringtun
/// refuses the keys.
#[test]
fn rejected_session_is_replaced_at_once() {
    new_stream_after_idle(Duration::from_secs(320));
}

/// Past REJECT_AFTER_TIME × 3 (540 s) after that rekey boringtun reports
/// `ConnectionExpired` and drops all state; the next stream must not wait
/// for its 90 s handshake-attempt window.
#[test]
fn expired_session_recovers_without_a_long_stall() {
    new_stream_after_idle(Duration::from_secs(700));
}

/// The network drops everything for longer than boringtun's 90 s
/// handshake-attempt window (after which boringtun gives up); when it
/// heals, the stream the application kept trying on must recover within
/// seconds, not wait for a new 90 s cycle.
#[test]
fn outage_longer_than_the_attempt_window_heals_in_seconds() {
    let (ns, mut sim) = sim(PqMode::Off);
    let (c, s) = open(&mut sim, &ns);
    transfer(&mut sim, 0, c, 1, s, b"before", Duration::from_secs(5));
    sim.loss = 1.0;
    let data = pattern(9, 20_000);
    let mut flow = Flow::default();
    let until = sim.t + Duration::from_secs(120);
    sim.run_until(Duration::from_secs(120), |sm| {
        flow.pump(sm, (0, c), (1, s), &data);
        sm.t >= until
    });
    let handshakes = sim.handshake_initiations;
    sim.loss = 0.0;
    let healed = sim.t;
    let ok = sim.run_until(Duration::from_secs(60), |sm| {
        flow.pump(sm, (0, c), (1, s), &data)
    });
    flow.assert_delivered(ok, &data);
    let took = sim.t - healed;
    // The TCP retransmission timer is capped at 6 s and our handshake retry
    // at 5 s: recovery is bounded by those, not by boringtun's 90 s.
    assert!(took < Duration::from_secs(15), "recovered in {took:?}");
    assert!(sim.handshake_initiations > handshakes);
}
