//! Transport benchmarks: tunnel throughput and round trip against a plain
//! TCP baseline measured in the same run, and the CPU cost of a PQ rotation.
//!
//! The two tunnel endpoints run on separate tokio runtimes (separate OS
//! threads), talking over real UDP sockets on 127.0.0.1; the baseline is
//! tokio TCP over loopback with the same runtime layout.
//!
//! `cargo bench -p dlog-wg --bench transport`

use std::net::SocketAddr;
use std::time::Duration;

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dlog_wg::config::{Config, PeerTable, PqMode};
use dlog_wg::keys::KeyFile;
use dlog_wg::Endpoint;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::runtime::Runtime;

const BULK: usize = 16 << 20;

fn rt() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn free_udp() -> SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn table(keys: &[(KeyFile, SocketAddr)]) -> String {
    keys.iter()
        .enumerate()
        .map(|(i, (k, a))| {
            format!(
                "[[peer]]\nname = \"b{i}\"\npublic_key = \"{}\"\nkem_public_key = \"{}\"\naddress = \"10.9.0.{}\"\nendpoint = \"{a}\"\nrole = \"voter\"\n",
                k.public_key_b64(),
                k.kem_public_key_b64(),
                i + 1
            )
        })
        .collect()
}

/// Server side: for each stream, read `len:u64` then `len` bytes, reply 1
/// byte; or, for len == 0, echo 64-byte messages forever.
async fn serve_stream<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let mut hdr = [0u8; 8];
        if s.read_exact(&mut hdr).await.is_err() {
            return;
        }
        let len = u64::from_be_bytes(hdr) as usize;
        if len == 0 {
            let mut m = [0u8; 64];
            while s.read_exact(&mut m).await.is_ok() {
                if s.write_all(&m).await.is_err() {
                    return;
                }
            }
            return;
        }
        let mut left = len;
        while left > 0 {
            let n = match s.read(&mut buf[..left.min(1 << 16)]).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            left -= n;
        }
        if s.write_all(&[1]).await.is_err() {
            return;
        }
    }
}

async fn bulk<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, data: &[u8]) {
    s.write_all(&(data.len() as u64).to_be_bytes())
        .await
        .unwrap();
    s.write_all(data).await.unwrap();
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack).await.unwrap();
}

async fn ping<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, m: &mut [u8; 64]) {
    s.write_all(m).await.unwrap();
    s.read_exact(m).await.unwrap();
}

struct Pair {
    client_rt: Runtime,
    _server_rt: Runtime,
    client: Endpoint,
    server_key: dlog_wg::keys::PeerKey,
}

fn tunnel_pair(mtu: usize) -> Pair {
    let ka = dlog_wg::keys::generate().unwrap();
    let kb = dlog_wg::keys::generate().unwrap();
    let (ua, ub) = (free_udp(), free_udp());
    let t = table(&[(ka.clone(), ua), (kb.clone(), ub)]);
    let mk = |k: &KeyFile| {
        let mut c = Config::new(k.clone(), PeerTable::from_toml_str(&t).unwrap());
        c.pq = PqMode::Required;
        c.mtu = mtu;
        c.socket_buffer = 1 << 20;
        c
    };
    let server_rt = rt();
    let cb = mk(&kb);
    server_rt.block_on(async {
        let b = Endpoint::bind(cb, ub).await.unwrap();
        let mut l = b.listen(9000).await.unwrap();
        tokio::spawn(async move {
            let _keep = b;
            while let Ok(s) = l.accept().await {
                tokio::spawn(serve_stream(s));
            }
        });
    });
    let client_rt = rt();
    let ca = mk(&ka);
    let client = client_rt.block_on(Endpoint::bind(ca, ua)).unwrap();
    Pair {
        client_rt,
        _server_rt: server_rt,
        client,
        server_key: kb.public_key(),
    }
}

struct TcpPair {
    client_rt: Runtime,
    _server_rt: Runtime,
    addr: SocketAddr,
}

fn tcp_pair() -> TcpPair {
    let server_rt = rt();
    let addr = server_rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                s.set_nodelay(true).unwrap();
                tokio::spawn(serve_stream(s));
            }
        });
        addr
    });
    TcpPair {
        client_rt: rt(),
        _server_rt: server_rt,
        addr,
    }
}

fn throughput(c: &mut Criterion) {
    let data = vec![0x5au8; BULK];
    let mut g = c.benchmark_group("throughput");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Bytes(BULK as u64));
    {
        let tp = tcp_pair();
        let mut s = tp
            .client_rt
            .block_on(tokio::net::TcpStream::connect(tp.addr))
            .unwrap();
        s.set_nodelay(true).unwrap();
        g.bench_function("plain_tcp", |b| {
            b.iter(|| tp.client_rt.block_on(bulk(&mut s, &data)))
        });
    }
    for mtu in [1420usize, 65_000] {
        let p = tunnel_pair(mtu);
        let mut s = p
            .client_rt
            .block_on(p.client.connect(&p.server_key, 9000))
            .unwrap();
        g.bench_with_input(BenchmarkId::new("tunnel_mtu", mtu), &mtu, |b, _| {
            b.iter(|| p.client_rt.block_on(bulk(&mut s, &data)))
        });
    }
    g.finish();
}

fn round_trip(c: &mut Criterion) {
    let mut g = c.benchmark_group("rtt_64B");
    g.sample_size(50).measurement_time(Duration::from_secs(5));
    {
        let tp = tcp_pair();
        let mut s = tp
            .client_rt
            .block_on(tokio::net::TcpStream::connect(tp.addr))
            .unwrap();
        s.set_nodelay(true).unwrap();
        tp.client_rt
            .block_on(s.write_all(&0u64.to_be_bytes()))
            .unwrap();
        let mut m = [7u8; 64];
        g.bench_function("plain_tcp", |b| {
            b.iter(|| tp.client_rt.block_on(ping(&mut s, &mut m)))
        });
    }
    {
        let p = tunnel_pair(1420);
        let mut s = p
            .client_rt
            .block_on(p.client.connect(&p.server_key, 9000))
            .unwrap();
        p.client_rt
            .block_on(s.write_all(&0u64.to_be_bytes()))
            .unwrap();
        let mut m = [7u8; 64];
        g.bench_function("tunnel", |b| {
            b.iter(|| p.client_rt.block_on(ping(&mut s, &mut m)))
        });
    }
    g.finish();
}

/// CPU for one PQ rotation of a peer pair, both sides: ephemeral ML-KEM key
/// generation, three encapsulations and decapsulations, the BLAKE3 PSK
/// derivation, two new `Tunn`s and the WireGuard handshake that confirms it.
fn pq_rotation(c: &mut Criterion) {
    use dlog_wg::pq;
    let (ka, kb) = dlog_wg::fuzzing::fixture_keys();
    let parties = pq::Parties {
        wg_i: ka.public_key().0,
        wg_r: kb.public_key().0,
        kem_i: ka.kem_public_key(),
        kem_r: kb.kem_public_key(),
    };
    let ska = dlog_crypto::kem::KemSecretKey::from_seed([2u8; 64]);
    let skb = dlog_crypto::kem::KemSecretKey::from_seed([4u8; 64]);
    let clamp = |b: u8| {
        let mut k = [b; 32];
        k[0] &= 248;
        k[31] &= 127;
        k[31] |= 64;
        StaticSecret::from(k)
    };
    let (sa, sb) = (clamp(1), clamp(3));
    let (pa, pb) = (PublicKey::from(&sa), PublicKey::from(&sb));
    c.bench_function("pq_rotation_cpu_per_pair", |b| {
        b.iter(|| {
            let st = pq::initiate(1, 5, &parties).unwrap();
            let (psk_r, resp, _) = pq::respond(&skb, &parties, &st.init_bytes, 6).unwrap();
            let (psk_i, _) = pq::finish(&st, &ska, &parties, &resp).unwrap();
            assert_eq!(psk_i, psk_r);
            let mut ta = Tunn::new(sa.clone(), pb, Some(psk_i), None, 5, None);
            let mut tb = Tunn::new(sb.clone(), pa, Some(psk_r), None, 6, None);
            let mut b1 = [0u8; 256];
            let mut b2 = [0u8; 256];
            let mut b3 = [0u8; 256];
            let init = match ta.format_handshake_initiation(&mut b1, true) {
                TunnResult::WriteToNetwork(p) => p.to_vec(),
                _ => unreachable!(),
            };
            let resp = match tb.decapsulate(None, &init, &mut b2) {
                TunnResult::WriteToNetwork(p) => p.to_vec(),
                _ => unreachable!(),
            };
            assert!(matches!(
                ta.decapsulate(None, &resp, &mut b3),
                TunnResult::WriteToNetwork(_)
            ));
        })
    });
}

/// The pieces of a rotation, to see where the time goes.
fn pq_parts(c: &mut Criterion) {
    use dlog_crypto::kem::KemSecretKey;
    let sk = KemSecretKey::from_seed([9u8; 64]);
    let pk = sk.public_key();
    let (ct, _) = pk.encapsulate().unwrap();
    let mut g = c.benchmark_group("pq_parts");
    g.bench_function("mlkem768_keygen", |b| {
        b.iter(|| KemSecretKey::generate().unwrap())
    });
    g.bench_function("mlkem768_encapsulate", |b| {
        b.iter(|| pk.encapsulate().unwrap())
    });
    g.bench_function("mlkem768_decapsulate", |b| b.iter(|| sk.decapsulate(&ct)));
    g.bench_function("mlkem768_public_key_decode", |b| {
        b.iter(|| dlog_crypto::kem::KemPublicKey::from_bytes(pk.as_bytes()).unwrap())
    });
    g.finish();
}

criterion_group!(benches, pq_rotation, pq_parts, round_trip, throughput);
criterion_main!(benches);
