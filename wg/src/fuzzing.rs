//! Entry points for fuzzers and property tests: untrusted bytes in, no panics.
//!
//! A fuzz crate (`cargo fuzz`) can call these directly:
//!
//! * [`datagram`]: a UDP datagram into a [`Core`] that has one configured
//!   peer, followed by a poll (routing, boringtun, rate limiter, timers).
//! * [`inner_packet`]: a decrypted inner IP packet from that peer (allowed-IP
//!   check, PQ control messages, the TCP/IP stack).
//! * [`frame_decoder`]: bytes into the stream frame decoder.
//! * [`ctrl_message`]: bytes into the PQ control-message decoder.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::{Config, PeerEntry, PeerTable, PqMode, Role};
use crate::core::Core;
use crate::frame::FrameDecoder;
use crate::keys::KeyFile;

struct Fixture {
    core: Core,
    start: Instant,
    steps: u64,
}

thread_local! {
    static FIXTURE: RefCell<Option<Fixture>> = const { RefCell::new(None) };
}

/// The keys of the fixture's local endpoint and its one peer (deterministic).
pub fn fixture_keys() -> (KeyFile, KeyFile) {
    (
        KeyFile::from_secret_bytes([1u8; 32], [2u8; 64]),
        KeyFile::from_secret_bytes([3u8; 32], [4u8; 64]),
    )
}

/// The fixture's peer's UDP address.
pub fn fixture_peer_addr() -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 2], 51820))
}

fn build() -> Fixture {
    let (me, peer) = fixture_keys();
    let table = PeerTable::from_entries(vec![PeerEntry {
        name: "peer".into(),
        public_key: peer.public_key(),
        kem_public_key: Some(peer.kem_public_key()),
        endpoint: Some(fixture_peer_addr()),
        address: "10.0.0.2".parse().unwrap_or(std::net::Ipv4Addr::LOCALHOST),
        role: Role::Client,
        keepalive: None,
    }])
    .unwrap_or_default();
    let mut cfg = Config::new(me, table);
    cfg.address = Some([10, 0, 0, 1].into());
    cfg.pq = PqMode::Preferred;
    let start = Instant::now();
    let mut core = match Core::new(&cfg, start) {
        Ok(c) => c,
        Err(e) => panic!("fuzz fixture: {e}"),
    };
    let _ = core.listen(80);
    Fixture {
        core,
        start,
        steps: 0,
    }
}

fn with_core(f: impl FnOnce(&mut Core, Instant)) {
    FIXTURE.with(|fx| {
        let mut fx = fx.borrow_mut();
        let fx = fx.get_or_insert_with(build);
        fx.steps += 1;
        let now = fx.start + Duration::from_millis(fx.steps * 7);
        f(&mut fx.core, now);
        while fx.core.pop_transmit().is_some() {}
        while fx.core.pop_event().is_some() {}
    });
}

/// Feeds `data` as a datagram from the peer's address, then polls.
pub fn datagram(data: &[u8]) {
    with_core(|core, now| {
        core.handle_datagram(now, fixture_peer_addr(), data);
        core.poll(now);
    });
}

/// Feeds `data` as if WireGuard had decrypted it from the peer.
pub fn inner_packet(data: &[u8]) {
    with_core(|core, now| {
        core.fuzz_inner(now, data);
        core.poll(now);
    });
}

/// Feeds `data` to a frame decoder (max 1 KiB) in two pieces and drains it.
pub fn frame_decoder(data: &[u8]) {
    let mut d = FrameDecoder::new(1024);
    let cut = data.first().map_or(0, |b| *b as usize).min(data.len());
    d.feed(&data[..cut]);
    while let Ok(Some(f)) = d.next_frame() {
        assert!(f.len() <= 1024);
    }
    d.feed(&data[cut..]);
    while let Ok(Some(f)) = d.next_frame() {
        assert!(f.len() <= 1024);
    }
    let _ = d.finish();
}

/// Feeds `data` to the PQ control-message decoder.
pub fn ctrl_message(data: &[u8]) {
    if let Some(m) = crate::pq::CtrlMsg::decode(data) {
        assert_eq!(m.encode(), data);
    }
}
