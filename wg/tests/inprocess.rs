//! Endpoints in one process over real UDP sockets on 127.0.0.1.

mod common;

use std::time::Duration;

use common::*;
use dlog_wg::config::PqMode;
use dlog_wg::Endpoint;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

async fn echo_server(mut l: dlog_wg::Listener) {
    loop {
        let Ok(mut s) = l.accept().await else { return };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = s.shutdown().await;
        });
    }
}

/// Sends `len` bytes, reads the echo, checks it.
async fn echo_roundtrip(ep: &Endpoint, peer: &dlog_wg::keys::PeerKey, port: u16, seed: u64, len: usize) {
    let s = ep.connect(peer, port).await.expect("connect");
    let data = pattern(seed, len);
    let (mut r, mut w) = tokio::io::split(s);
    let d2 = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&d2).await.unwrap();
        w.shutdown().await.unwrap();
        w
    });
    let mut got = Vec::with_capacity(len);
    r.read_to_end(&mut got).await.unwrap();
    let _w = writer.await.unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "echo mismatch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_streams_both_ways() {
    init_tracing();
    let ns = nodes(2);
    let t = table(&ns);
    let a = Endpoint::bind(config(&ns[0], &t, PqMode::Preferred), ns[0].udp).await.unwrap();
    let b = Endpoint::bind(config(&ns[1], &t, PqMode::Preferred), ns[1].udp).await.unwrap();
    tokio::spawn(echo_server(a.listen(7000).await.unwrap()));
    tokio::spawn(echo_server(b.listen(7000).await.unwrap()));
    timeout(Duration::from_secs(30), async {
        echo_roundtrip(&a, &b.public_key(), 7000, 1, 100_000).await;
        echo_roundtrip(&b, &a.public_key(), 7000, 2, 100_000).await;
    })
    .await
    .expect("timed out");
    // The accepted stream names the authenticated peer.
    let mut l = a.listen(7001).await.unwrap();
    let _c = b.connect(&a.public_key(), 7001).await.unwrap();
    let s = timeout(Duration::from_secs(5), l.accept()).await.unwrap().unwrap();
    assert_eq!(s.peer().public_key, b.public_key());
    assert_eq!(s.peer().name, "n1");
}
