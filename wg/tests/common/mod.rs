//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use dlog_wg::config::{Config, PeerTable, PqMode};
use dlog_wg::keys::KeyFile;

pub mod sim;

/// A test node: keys, tunnel address, UDP address.
#[derive(Clone)]
pub struct NodeSpec {
    pub name: String,
    pub keys: KeyFile,
    pub addr: Ipv4Addr,
    pub udp: SocketAddr,
}

pub fn free_udp_port() -> SocketAddr {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap()
}

pub fn nodes(n: usize) -> Vec<NodeSpec> {
    (0..n)
        .map(|i| NodeSpec {
            name: format!("n{i}"),
            keys: dlog_wg::keys::generate().unwrap(),
            addr: Ipv4Addr::new(10, 77, 0, i as u8 + 1),
            udp: free_udp_port(),
        })
        .collect()
}

pub fn peer_toml(n: &NodeSpec, with_kem: bool) -> String {
    let mut s = format!(
        "[[peer]]\nname = \"{}\"\npublic_key = \"{}\"\naddress = \"{}\"\nendpoint = \"{}\"\nrole = \"voter\"\n",
        n.name,
        n.keys.public_key_b64(),
        n.addr,
        n.udp
    );
    if with_kem {
        s.push_str(&format!(
            "kem_public_key = \"{}\"\n",
            n.keys.kem_public_key_b64()
        ));
    }
    s
}

pub fn table(nodes: &[NodeSpec]) -> String {
    nodes.iter().map(|n| peer_toml(n, true)).collect()
}

pub fn config(me: &NodeSpec, table_toml: &str, pq: PqMode) -> Config {
    let mut c = Config::new(
        me.keys.clone(),
        PeerTable::from_toml_str(table_toml).unwrap(),
    );
    c.pq = pq;
    c.connect_timeout = Duration::from_secs(8);
    c
}

/// Deterministic pseudo-random bytes.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
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

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}
