//! `dlog-wg-peer`: a small standalone tunnel peer for multi-process tests and
//! manual experiments.
//!
//! ```text
//! dlog-wg-peer --key KEYFILE --table TABLE.toml --listen 127.0.0.1:PORT
//!              [--pq required|preferred|off] [--rotate SECS] [--serve PORT]
//!              [--check NAME:PORT:BYTES]... [--mtu N] [--socket-buffer BYTES]
//!              [--sink] [--tcp-sink ADDR]
//! ```
//!
//! Serves a checksum service on `--serve` (default 7000): it reads
//! `len:u64` and `len` bytes and answers their BLAKE3 hash. Then for every
//! `--check` it connects to the named peer, sends BYTES pseudo-random bytes,
//! compares the hash and prints `OK name bytes MB/s` or `FAIL name reason`,
//! then `DONE`. It keeps serving until stdin closes. With
//! `DLOG_WG_PEER_DEBUG` set it prints its counters and sockets every 5 s.
//!
//! Benchmark far end: with `--sink`, the service on `--serve` reads
//! `len:u64` and `len` bytes and answers one byte (no hashing), and
//! `--tcp-sink ADDR` serves the same protocol over plain TCP (the baseline),
//! printing `TCP <addr>` once bound. `READY` is printed when both listen.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use dlog_wg::config::{Config, PeerTable, PqMode};
use dlog_wg::keys::load_key_file;
use dlog_wg::Endpoint;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Args {
    key: PathBuf,
    table: PathBuf,
    listen: std::net::SocketAddr,
    pq: PqMode,
    rotate: Option<u64>,
    serve: u16,
    checks: Vec<(String, u16, usize)>,
    mtu: Option<usize>,
    socket_buffer: Option<usize>,
    sink: bool,
    tcp_sink: Option<std::net::SocketAddr>,
}

fn usage(msg: &str) -> ! {
    eprintln!("dlog-wg-peer: {msg}\nusage: dlog-wg-peer --key F --table F --listen ADDR [--pq MODE] [--rotate SECS] [--serve PORT] [--check NAME:PORT:BYTES]...");
    std::process::exit(2)
}

fn parse() -> Args {
    let mut a = std::env::args().skip(1);
    let (mut key, mut table, mut listen) = (None, None, None);
    let mut pq = PqMode::Preferred;
    let mut rotate = None;
    let mut serve = 7000;
    let mut checks = Vec::new();
    let (mut mtu, mut socket_buffer, mut sink, mut tcp_sink) = (None, None, false, None);
    while let Some(flag) = a.next() {
        if flag == "--sink" {
            sink = true;
            continue;
        }
        let v = a
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--key" => key = Some(PathBuf::from(v)),
            "--table" => table = Some(PathBuf::from(v)),
            "--listen" => listen = Some(v.parse().unwrap_or_else(|_| usage("bad --listen"))),
            "--pq" => {
                pq = match v.as_str() {
                    "required" => PqMode::Required,
                    "preferred" => PqMode::Preferred,
                    "off" => PqMode::Off,
                    _ => usage("bad --pq"),
                }
            }
            "--rotate" => rotate = Some(v.parse().unwrap_or_else(|_| usage("bad --rotate"))),
            "--serve" => serve = v.parse().unwrap_or_else(|_| usage("bad --serve")),
            "--mtu" => mtu = Some(v.parse().unwrap_or_else(|_| usage("bad --mtu"))),
            "--socket-buffer" => {
                socket_buffer = Some(v.parse().unwrap_or_else(|_| usage("bad --socket-buffer")))
            }
            "--tcp-sink" => tcp_sink = Some(v.parse().unwrap_or_else(|_| usage("bad --tcp-sink"))),
            "--check" => {
                let p: Vec<&str> = v.split(':').collect();
                if p.len() != 3 {
                    usage("bad --check");
                }
                checks.push((
                    p[0].to_string(),
                    p[1].parse().unwrap_or_else(|_| usage("bad --check port")),
                    p[2].parse().unwrap_or_else(|_| usage("bad --check bytes")),
                ));
            }
            _ => usage(&format!("unknown flag {flag}")),
        }
    }
    Args {
        key: key.unwrap_or_else(|| usage("--key is required")),
        table: table.unwrap_or_else(|| usage("--table is required")),
        listen: listen.unwrap_or_else(|| usage("--listen is required")),
        pq,
        rotate,
        serve,
        checks,
        mtu,
        socket_buffer,
        sink,
        tcp_sink,
    }
}

/// Benchmark sink: `len:u64`, `len` bytes, answer one byte; repeat.
async fn sink<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut s: S) {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let mut hdr = [0u8; 8];
        if s.read_exact(&mut hdr).await.is_err() {
            return;
        }
        let mut left = u64::from_be_bytes(hdr) as usize;
        while left > 0 {
            match s.read(&mut buf[..left.min(1 << 16)]).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left -= n,
            }
        }
        if s.write_all(&[1]).await.is_err() {
            return;
        }
    }
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn check(
    ep: &Endpoint,
    key: dlog_wg::keys::PeerKey,
    port: u16,
    bytes: usize,
    seed: u64,
) -> Result<f64, String> {
    // The other process may have its tunnel up but not yet its listener
    // (processes start independently): a refusal is retried for a while.
    let patience = Instant::now() + Duration::from_secs(10);
    let mut s = loop {
        match ep.connect(&key, port).await {
            Ok(s) => break s,
            Err(dlog_wg::Error::ConnectionRefused { .. }) if Instant::now() < patience => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    let started = Instant::now();
    s.write_all(&(bytes as u64).to_be_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut h = blake3::Hasher::new();
    let chunk = pattern(seed, 1 << 20);
    let mut left = bytes;
    let mut i = 0u8;
    while left > 0 {
        let n = left.min(chunk.len());
        let mut c = chunk[..n].to_vec();
        c[0] = i;
        i = i.wrapping_add(1);
        h.update(&c);
        s.write_all(&c).await.map_err(|e| e.to_string())?;
        left -= n;
    }
    let mut theirs = [0u8; 32];
    s.read_exact(&mut theirs).await.map_err(|e| e.to_string())?;
    if theirs != *h.finalize().as_bytes() {
        return Err("checksum mismatch".into());
    }
    Ok(bytes as f64 / started.elapsed().as_secs_f64() / 1e6)
}

/// Server side of a check: `len:u64`, then `len` bytes; answers their BLAKE3.
async fn serve(mut s: dlog_wg::Stream) {
    let mut hdr = [0u8; 8];
    if s.read_exact(&mut hdr).await.is_err() {
        return;
    }
    let mut left = u64::from_be_bytes(hdr) as usize;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    while left > 0 {
        match s.read(&mut buf[..left.min(1 << 16)]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                h.update(&buf[..n]);
                left -= n;
            }
        }
    }
    let _ = s.write_all(h.finalize().as_bytes()).await;
    let _ = s.shutdown().await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = parse();
    let keys = load_key_file(&args.key).unwrap_or_else(|e| {
        eprintln!("dlog-wg-peer: {e}");
        std::process::exit(2)
    });
    let text = std::fs::read_to_string(&args.table).unwrap_or_else(|e| {
        eprintln!("dlog-wg-peer: reading {}: {e}", args.table.display());
        std::process::exit(2)
    });
    let table = PeerTable::from_toml_str(&text).unwrap_or_else(|e| {
        eprintln!("dlog-wg-peer: {e}");
        std::process::exit(2)
    });
    let mut cfg = Config::new(keys, table.clone());
    cfg.pq = args.pq;
    if let Some(r) = args.rotate {
        cfg.rotation_interval = Duration::from_secs(r);
    }
    cfg.connect_timeout = Duration::from_secs(20);
    if let Some(m) = args.mtu {
        cfg.mtu = m;
    }
    if let Some(b) = args.socket_buffer {
        cfg.socket_buffer = b;
    }
    let ep = Endpoint::bind(cfg, args.listen).await.unwrap_or_else(|e| {
        eprintln!("dlog-wg-peer: {e}");
        std::process::exit(2)
    });
    let mut l = ep.listen(args.serve).await.unwrap_or_else(|e| {
        eprintln!("dlog-wg-peer: {e}");
        std::process::exit(2)
    });
    let sink_mode = args.sink;
    tokio::spawn(async move {
        while let Ok(s) = l.accept().await {
            if sink_mode {
                tokio::spawn(sink(s));
            } else {
                tokio::spawn(serve(s));
            }
        }
    });
    if let Some(addr) = args.tcp_sink {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| {
                eprintln!("dlog-wg-peer: binding TCP {addr}: {e}");
                std::process::exit(2)
            });
        println!(
            "TCP {}",
            l.local_addr().map(|a| a.to_string()).unwrap_or_default()
        );
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let _ = s.set_nodelay(true);
                tokio::spawn(sink(s));
            }
        });
    }
    println!("READY");
    if std::env::var("DLOG_WG_PEER_DEBUG").is_ok() {
        let ep = ep.clone();
        let keys: Vec<_> = table
            .peers()
            .iter()
            .map(|p| (p.name.clone(), p.public_key))
            .collect();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                eprintln!("[{}] {:?}", ep.public_key(), ep.stats());
                for (n, k) in &keys {
                    if let Ok(Some(st)) = ep.peer_status(k).await {
                        eprintln!("  peer {n}: {st:?}");
                    }
                }
                for l in ep.socket_states().await.unwrap_or_default() {
                    eprintln!("  {l}");
                }
            }
        });
    }
    let mut tasks = Vec::new();
    for (i, (name, port, bytes)) in args.checks.into_iter().enumerate() {
        let Some(peer) = table.by_name(&name) else {
            println!("FAIL {name} not in the peer table");
            continue;
        };
        let key = peer.public_key;
        let ep = ep.clone();
        tasks.push(tokio::spawn(async move {
            match check(&ep, key, port, bytes, i as u64 + 1).await {
                Ok(mbps) => println!("OK {name} {bytes} {mbps:.1}"),
                Err(e) => println!("FAIL {name} {e}"),
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let st = ep.stats();
    println!(
        "STATS rotations={} unknown_key={} blocked={}",
        st.pq_rotations, st.dropped_unknown_key, st.dropped_pq_blocked
    );
    println!("DONE");
    // Serve until stdin closes.
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 64];
    while let Ok(n) = stdin.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
}
