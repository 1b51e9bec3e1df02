//! Property tests over the fuzzing entry points: arbitrary bytes never panic.

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use dlog_wg::frame::{encode_frame, FrameDecoder};
use dlog_wg::fuzzing;
use proptest::prelude::*;

fn peer_tunn() -> Tunn {
    let (me, peer) = fuzzing::fixture_keys();
    let secret = StaticSecret::from({
        // The fixture clamps keys; rebuild the peer's secret the same way.
        let mut k = [3u8; 32];
        k[0] &= 248;
        k[31] &= 127;
        k[31] |= 64;
        k
    });
    assert_eq!(PublicKey::from(&secret).to_bytes(), peer.public_key().0);
    Tunn::new(
        secret,
        PublicKey::from(me.public_key().0),
        None,
        None,
        7,
        None,
    )
}

fn valid_init() -> Vec<u8> {
    let mut t = peer_tunn();
    let mut buf = vec![0u8; 2048];
    match t.format_handshake_initiation(&mut buf, true) {
        TunnResult::WriteToNetwork(b) => b.to_vec(),
        _ => panic!("no initiation"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_datagrams_never_panic(data in proptest::collection::vec(any::<u8>(), 0..1600)) {
        fuzzing::datagram(&data);
    }

    #[test]
    fn typed_datagrams_never_panic(ty in 1u8..=4, rest in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut d = vec![ty, 0, 0, 0];
        d.extend(rest);
        fuzzing::datagram(&d);
    }

    #[test]
    fn mutated_handshakes_never_panic(flips in proptest::collection::vec((0usize..148, any::<u8>()), 0..4)) {
        let mut d = valid_init();
        for (i, x) in flips {
            d[i] ^= x;
        }
        fuzzing::datagram(&d);
    }

    #[test]
    fn arbitrary_inner_packets_never_panic(data in proptest::collection::vec(any::<u8>(), 0..1600)) {
        fuzzing::inner_packet(&data);
    }

    #[test]
    fn ipv4_shaped_inner_packets_never_panic(proto in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..2400)) {
        let total = 20 + body.len();
        let mut p = vec![0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0, 0, 64, proto, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1];
        p.extend(body);
        fuzzing::inner_packet(&p);
    }

    #[test]
    fn arbitrary_frames_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        fuzzing::frame_decoder(&data);
    }

    #[test]
    fn arbitrary_ctrl_messages_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2400)) {
        fuzzing::ctrl_message(&data);
    }

    #[test]
    fn frames_roundtrip_in_any_split(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..10), split in 1usize..50) {
        let mut wire = Vec::new();
        for p in &payloads {
            wire.extend(encode_frame(p, 256).unwrap());
        }
        let mut d = FrameDecoder::new(256);
        let mut out = Vec::new();
        for c in wire.chunks(split) {
            d.feed(c);
            while let Some(f) = d.next_frame().unwrap() {
                out.push(f);
            }
        }
        d.finish().unwrap();
        prop_assert_eq!(out, payloads);
    }
}
