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

/// CPU time consumed by the calling thread: what the PQ benchmarks report,
/// so that other load on a shared machine does not count.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

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

/// A `dlog-wg-peer --sink` process as the far end: its tunnel sink on port
/// 7000 and its plain-TCP sink (the baseline).
struct FarEnd {
    child: std::process::Child,
    tcp: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for FarEnd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns the far end and binds the local endpoint (on `rt`); returns the
/// far end, the local endpoint and the far end's key.
fn far_end(mtu: usize, rt: &Runtime) -> (FarEnd, Endpoint, dlog_wg::keys::PeerKey) {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let ka = dlog_wg::keys::generate().unwrap();
    let kb = dlog_wg::keys::generate().unwrap();
    let (ua, ub) = (free_udp(), free_udp());
    let t = table(&[(ka.clone(), ua), (kb.clone(), ub)]);
    std::fs::write(dir.path().join("peers.toml"), &t).unwrap();
    dlog_wg::keys::write_key_file(&dir.path().join("b.key"), &kb).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dlog-wg-peer"))
        .arg("--key")
        .arg(dir.path().join("b.key"))
        .arg("--table")
        .arg(dir.path().join("peers.toml"))
        .args([
            "--listen",
            &ub.to_string(),
            "--pq",
            "required",
            "--serve",
            "7000",
        ])
        .args([
            "--mtu",
            &mtu.to_string(),
            "--socket-buffer",
            &(1 << 20).to_string(),
        ])
        .args(["--sink", "--tcp-sink", "127.0.0.1:0"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut tcp = None;
    for l in lines.by_ref() {
        let l = l.unwrap();
        if let Some(a) = l.strip_prefix("TCP ") {
            tcp = Some(a.parse().unwrap());
        }
        if l == "READY" {
            break;
        }
    }
    // Keep draining the far end's output so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let mut c = Config::new(ka.clone(), PeerTable::from_toml_str(&t).unwrap());
    c.pq = PqMode::Required;
    c.mtu = mtu;
    c.socket_buffer = 1 << 20;
    let ep = rt.block_on(Endpoint::bind(c, ua)).unwrap();
    (
        FarEnd {
            child,
            tcp: tcp.expect("far end printed its TCP address"),
            _dir: dir,
        },
        ep,
        kb.public_key(),
    )
}

/// Bulk throughput between two processes: this one sends, a
/// `dlog-wg-peer --sink` process receives, through the tunnel and (baseline)
/// over plain TCP to the same process, measured in the same run; the plain
/// TCP baseline runs first and last.
fn throughput_two_processes(c: &mut Criterion) {
    let data = vec![0x5au8; BULK];
    let mut g = c.benchmark_group("throughput_2proc");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Bytes(BULK as u64));
    let rt = rt();
    let mut ends = Vec::new();
    for mtu in [1420usize, 65_000] {
        ends.push((mtu, far_end(mtu, &rt)));
    }
    let tcp_round = |g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
                     name: &str| {
        let mut s = rt
            .block_on(tokio::net::TcpStream::connect(ends[0].1 .0.tcp))
            .unwrap();
        s.set_nodelay(true).unwrap();
        g.bench_function(name, |b| b.iter(|| rt.block_on(bulk(&mut s, &data))));
    };
    tcp_round(&mut g, "plain_tcp");
    for (mtu, (_far, ep, key)) in &ends {
        let mut s = rt.block_on(ep.connect(key, 7000)).unwrap();
        g.bench_with_input(BenchmarkId::new("tunnel_mtu", mtu), mtu, |b, _| {
            b.iter(|| rt.block_on(bulk(&mut s, &data)))
        });
    }
    tcp_round(&mut g, "plain_tcp_again");
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

/// A fixed X25519 secret (clamped) for in-memory `Tunn` pairs.
fn fixed_secret(b: u8) -> StaticSecret {
    let mut k = [b; 32];
    k[0] &= 248;
    k[31] &= 127;
    k[31] |= 64;
    StaticSecret::from(k)
}

/// CPU for one PQ rotation of a peer pair, both sides, from the pieces:
/// ephemeral ML-KEM key generation, three encapsulations and
/// decapsulations, the BLAKE3 PSK derivation, two new `Tunn`s and the
/// WireGuard handshake that confirms it (thread CPU time).
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
    let (sa, sb) = (fixed_secret(1), fixed_secret(3));
    let (pa, pb) = (PublicKey::from(&sa), PublicKey::from(&sb));
    let rotation_once = || {
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
    };
    c.bench_function("pq_rotation_cpu_per_pair", |b| {
        b.iter_custom(|iters| {
            let t0 = thread_cpu();
            for _ in 0..iters {
                rotation_once();
            }
            thread_cpu() - t0
        })
    });
}

/// The ceiling under the tunnel: boringtun's data path alone, one core, no
/// TCP, no sockets. One iteration encapsulates an IPv4 packet of `size`
/// bytes on one established `Tunn` and decapsulates it on its peer, which
/// is the crypto every tunnelled byte costs (ChaCha20-Poly1305 seal + open,
/// WireGuard's only cipher). A two-process transfer on a 2-core machine
/// cannot beat twice this rate (each core doing half of both halves) and
/// reaches it only if TCP, copies and syscalls were free.
fn wireguard_data_path(c: &mut Criterion) {
    let (sa, sb) = (fixed_secret(1), fixed_secret(3));
    let (pa, pb) = (PublicKey::from(&sa), PublicKey::from(&sb));
    let mut ta = Tunn::new(sa, pb, None, None, 1, None);
    let mut tb = Tunn::new(sb, pa, None, None, 2, None);
    let mut buf = vec![0u8; 70_000];
    let mut out = vec![0u8; 70_000];
    let init = match ta.format_handshake_initiation(&mut buf, false) {
        TunnResult::WriteToNetwork(p) => p.to_vec(),
        _ => panic!("no handshake initiation"),
    };
    let resp = match tb.decapsulate(None, &init, &mut buf) {
        TunnResult::WriteToNetwork(p) => p.to_vec(),
        _ => panic!("no handshake response"),
    };
    if let TunnResult::WriteToNetwork(k) = ta.decapsulate(None, &resp, &mut buf) {
        // The initiator's first keepalive confirms the session to the responder.
        let k = k.to_vec();
        let _ = tb.decapsulate(None, &k, &mut out);
    }
    let mut g = c.benchmark_group("wireguard_data_path");
    g.sample_size(20).measurement_time(Duration::from_secs(4));
    for size in [1420usize, 65_000] {
        // A minimal IPv4 header (version 4, IHL 5, total length) and payload.
        let mut packet = vec![0x5au8; size];
        packet[0] = 0x45;
        packet[2..4].copy_from_slice(&(size as u16).to_be_bytes());
        packet[12..16].copy_from_slice(&[10, 0, 0, 1]);
        packet[16..20].copy_from_slice(&[10, 0, 0, 2]);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("encap_decap", size), &size, |b, _| {
            b.iter(|| {
                let n = match ta.encapsulate(&packet, &mut buf) {
                    TunnResult::WriteToNetwork(d) => d.len(),
                    _ => panic!("encapsulate failed"),
                };
                match tb.decapsulate(None, &buf[..n], &mut out) {
                    TunnResult::WriteToTunnelV4(p, _) => assert_eq!(p.len(), size),
                    _ => panic!("decapsulate failed"),
                }
            })
        });
    }
    g.finish();
}

/// A whole PQ rotation through the real sans-IO cores, as the endpoints run
/// it: `rotate_now`, the control messages inside the current tunnel, both
/// sides' KEM work, new `Tunn`s, the responder's anonymous handshake parse
/// (routing by static key) and the WireGuard handshake, until both sides
/// carry the new epoch. Datagrams go straight from one core to the other on a
/// virtual clock; the time spent inside each core's calls is summed per
/// side (thread CPU time, not wall time), and the per-side averages are
/// printed after the criterion figure (which is both sides together).
fn pq_rotation_core(c: &mut Criterion) {
    use dlog_wg::core::Core;
    use std::time::Instant;
    let (ka, kb) = dlog_wg::fuzzing::fixture_keys();
    let (ua, ub): (SocketAddr, SocketAddr) = (
        "127.0.0.1:1".parse().unwrap(),
        "127.0.0.1:2".parse().unwrap(),
    );
    let t = table(&[(ka.clone(), ua), (kb.clone(), ub)]);
    let mk = |k: &KeyFile| {
        let mut c = Config::new(k.clone(), PeerTable::from_toml_str(&t).unwrap());
        c.pq = PqMode::Required;
        c
    };
    let addrs = [ua, ub];
    let keys = [ka.public_key(), kb.public_key()];
    // Runs the two cores for up to `rounds` steps of 100 µs of virtual time
    // until `done`, adding the time spent inside each core to `spent`.
    let shuttle = |cores: &mut [Core; 2],
                   now: &mut Instant,
                   spent: &mut [Duration; 2],
                   rounds: usize,
                   done: &dyn Fn(&[Core; 2]) -> bool|
     -> bool {
        for _ in 0..rounds {
            if done(cores) {
                return true;
            }
            *now += Duration::from_micros(100);
            for i in 0..2 {
                let t0 = thread_cpu();
                cores[i].poll(*now);
                let mut out = Vec::new();
                while let Some(tx) = cores[i].pop_transmit() {
                    out.push(tx.data);
                }
                spent[i] += thread_cpu() - t0;
                let j = 1 - i;
                let t0 = thread_cpu();
                for d in out {
                    cores[j].handle_datagram(*now, addrs[i], &d);
                }
                spent[j] += thread_cpu() - t0;
            }
        }
        done(cores)
    };
    let epochs = |c: &[Core; 2]| {
        (
            c[0].peer_epoch(&keys[1]).unwrap(),
            c[1].peer_epoch(&keys[0]).unwrap(),
        )
    };
    // A pair with its first PQ key in place. boringtun's handshake rate
    // limiter resets on the wall clock (once per real second), and this
    // loop rotates far faster than that, so the pair is rebuilt (untimed)
    // every 40 rotations, before the limiter would answer with cookies.
    let fresh = |now: &mut Instant| -> [Core; 2] {
        let mut cores = [
            Core::new(&mk(&ka), *now).unwrap(),
            Core::new(&mk(&kb), *now).unwrap(),
        ];
        cores[0].connect(*now, &keys[1], 9).unwrap();
        let up = shuttle(&mut cores, now, &mut [Duration::ZERO; 2], 100_000, &|c| {
            let ((ea, ua), (eb, ub)) = epochs(c);
            ea > 0 && ea == eb && ua && ub
        });
        assert!(up, "tunnel with a PQ key did not come up");
        cores
    };
    let mut now = Instant::now();
    let mut cores = fresh(&mut now);
    let mut on_pair = 0;
    // The PQ initiator is the side with the smaller X25519 public key.
    let init = if keys[0].0 < keys[1].0 { 0 } else { 1 };
    let other = 1 - init;
    let mut rotations = 0u32;
    let mut per_side = [Duration::ZERO; 2];
    c.bench_function("pq_rotation_core_per_pair", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                if on_pair == 40 {
                    cores = fresh(&mut now);
                    on_pair = 0;
                }
                on_pair += 1;
                // Untimed: let the old tunnel of the previous rotation
                // drain, until a new rotation may start.
                let target = epochs(&cores).0 .0 + 1;
                let mut spent = [Duration::ZERO; 2];
                let mut started = false;
                for _ in 0..200 {
                    now += Duration::from_millis(500);
                    let t0 = thread_cpu();
                    if cores[init].rotate_now(now, &keys[other]) {
                        // Timed: the ephemeral key and the first
                        // encapsulation, and sending InitHello.
                        spent[init] += thread_cpu() - t0;
                        started = true;
                        break;
                    }
                    shuttle(&mut cores, &mut now, &mut [Duration::ZERO; 2], 1, &|_| {
                        false
                    });
                }
                assert!(started, "no rotation could start");
                // Timed: the rest of the exchange and the WireGuard
                // handshake, until both sides carry the new epoch.
                let ok = shuttle(&mut cores, &mut now, &mut spent, 10_000, &|c| {
                    let ((ea, ua), (eb, ub)) = epochs(c);
                    ea >= target && eb >= target && ua && ub
                });
                assert!(ok, "rotation did not complete: {:?}", epochs(&cores));
                total += spent[0] + spent[1];
                per_side[0] += spent[init];
                per_side[1] += spent[other];
                rotations += 1;
            }
            total
        })
    });
    if rotations > 0 {
        eprintln!(
            "pq_rotation_core: per rotation, initiator {:.1} µs, responder {:.1} µs (over {rotations})",
            per_side[0].as_secs_f64() * 1e6 / f64::from(rotations),
            per_side[1].as_secs_f64() * 1e6 / f64::from(rotations),
        );
    }
}

/// Thread-CPU-time benchmark of one operation.
fn cpu<R>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    mut f: impl FnMut() -> R,
) {
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let t0 = thread_cpu();
            for _ in 0..iters {
                std::hint::black_box(f());
            }
            thread_cpu() - t0
        })
    });
}

/// The pieces of a rotation, to see where the time goes (thread CPU time),
/// with the previous ML-KEM backend (RustCrypto `ml-kem`) as the baseline.
fn pq_parts(c: &mut Criterion) {
    use dlog_crypto::kem::KemSecretKey;
    let sk = KemSecretKey::from_seed([9u8; 64]);
    let pk = sk.public_key();
    let (ct, _) = pk.encapsulate().unwrap();
    let mut g = c.benchmark_group("pq_parts");
    cpu(&mut g, "mlkem768_keygen", || {
        KemSecretKey::generate().unwrap()
    });
    cpu(&mut g, "mlkem768_encapsulate", || pk.encapsulate().unwrap());
    cpu(&mut g, "mlkem768_decapsulate", || sk.decapsulate(&ct));
    {
        // Same operations with RustCrypto's ml-kem, the backend before.
        use ml_kem::array::Array;
        use ml_kem::kem::{Decapsulate, KeyExport};
        type Dk = ml_kem::DecapsulationKey<ml_kem::MlKem768>;
        let dk = Dk::from_seed(Array([9u8; 64]));
        let ek = dk.encapsulation_key().clone();
        let (ct, _) = ek.encapsulate_deterministic(&Array([3u8; 32]));
        let _ = ek.to_bytes();
        cpu(&mut g, "rustcrypto_mlkem768_keygen", || {
            Dk::from_seed(Array([9u8; 64]))
        });
        cpu(&mut g, "rustcrypto_mlkem768_encapsulate", || {
            ek.encapsulate_deterministic(&Array([3u8; 32]))
        });
        cpu(&mut g, "rustcrypto_mlkem768_decapsulate", || {
            dk.decapsulate(&ct)
        });
    }
    let x = StaticSecret::from([5u8; 32]);
    let xp = PublicKey::from(&StaticSecret::from([6u8; 32]));
    cpu(&mut g, "x25519_dh", || x.diffie_hellman(&xp));
    cpu(&mut g, "x25519_public_from_secret", || PublicKey::from(&x));
    cpu(&mut g, "mlkem768_public_key_decode", || {
        dlog_crypto::kem::KemPublicKey::from_bytes(pk.as_bytes()).unwrap()
    });
    g.finish();
}

criterion_group!(
    benches,
    pq_rotation,
    pq_rotation_core,
    pq_parts,
    round_trip,
    wireguard_data_path,
    throughput_two_processes,
    throughput
);
criterion_main!(benches);
