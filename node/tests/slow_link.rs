//! A follower behind a slow link (1 Mbit/s, `tc tbf` on the loopback of a
//! network namespace of this test's own) catches up at no less than half
//! the link's rate. Real node processes, real WireGuard.
//!
//! Needs root (a network namespace and `tc`); without it the test says so
//! and passes without running.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use dlog_client::Client;
use dlog_devcluster::{self as cluster, ClusterSpec};
use dlog_ledger::EntryKind;

/// The link: 1 Mbit/s, as an operator would shape a WAN.
const TBF: &[&str] = &["rate", "1mbit", "burst", "6kb", "latency", "10ms"];
const LINK_BYTES_PER_S: f64 = 125_000.0;

struct Guard(PathBuf);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = cluster::stop(&self.0);
    }
}

fn run(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

/// Moves this thread (and every thread and process it starts from now on)
/// into a new network namespace with its loopback up.
fn own_network() -> bool {
    // SAFETY: unshare affects the calling thread only.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        eprintln!(
            "SKIPPED: no network namespace ({}); run as root",
            std::io::Error::last_os_error()
        );
        return false;
    }
    if !run("ip", &["link", "set", "lo", "up"]) {
        eprintln!("SKIPPED: `ip link set lo up` failed (iproute2 missing?)");
        return false;
    }
    true
}

async fn sizes(c: &Client) -> Vec<(String, u64, u64, String)> {
    c.statuses()
        .await
        .into_iter()
        .filter_map(|(n, s)| s.ok().map(|s| (n, s.ledger_size, s.term, s.state)))
        .collect()
}

#[test]
#[ignore = "issue 21, open: elections are not stable while the shaped link is saturated (run with --ignored)"]
fn a_follower_behind_a_slow_link_catches_up_at_half_its_rate() {
    if !own_network() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(scenario());
}

async fn scenario() {
    let tmp = tempfile::tempdir().unwrap();
    let dir: &Path = tmp.path();
    let layout = cluster::generate(
        dir,
        &ClusterSpec {
            // A shaper drops datagrams larger than its burst: WireGuard's usual MTU.
            mtu: Some(1420),
            ..ClusterSpec::default()
        },
    )
    .expect("generate");
    let program = PathBuf::from(env!("CARGO_BIN_EXE_dlog-node"));
    cluster::start(dir, &program, &[] as &[OsString]).expect("start");
    let _guard = Guard(dir.to_path_buf());
    let client = Client::open(&layout.client_config).await.unwrap();
    let (_, leader) = cluster::wait_for_leader(&client, Duration::from_secs(30))
        .await
        .unwrap();
    client.append(&[(EntryKind::Data, b"warm")]).await.unwrap();
    let lagging = client
        .node_names()
        .into_iter()
        .find(|n| *n != leader)
        .unwrap();
    let ldir = dir.join(&lagging);
    cluster::signal_node(&ldir, libc::SIGSTOP).unwrap();

    // 4,000 entries of 200 bytes while it is paused (80 appenders of 50).
    let payload = vec![b'x'; 200];
    let mut set = tokio::task::JoinSet::new();
    let client = std::sync::Arc::new(client);
    for _ in 0..80 {
        let (c, p) = (client.clone(), payload.clone());
        set.spawn(async move {
            let items: Vec<(EntryKind, &[u8])> =
                (0..50).map(|_| (EntryKind::Data, &p[..])).collect();
            c.append(&items).await.unwrap();
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    let before = sizes(&client).await;
    let target = before.iter().map(|s| s.1).max().unwrap();
    let term = before.iter().find(|s| s.0 == leader).unwrap().2;
    let behind = target - before.iter().find(|s| s.0 == lagging).map_or(0, |s| s.1);
    assert!(behind >= 4000, "{before:?}");

    let mut tc = vec!["qdisc", "add", "dev", "lo", "root", "tbf"];
    tc.extend_from_slice(TBF);
    assert!(run("tc", &tc), "tc tbf");
    let t0 = Instant::now();
    cluster::signal_node(&ldir, libc::SIGCONT).unwrap();
    let bytes = behind as f64 * (payload.len() as f64 + 14.0);
    // At half the link's rate, with 5 s for the tunnel and Raft to notice.
    let allowed = Duration::from_secs_f64(bytes / (LINK_BYTES_PER_S * 0.5) + 5.0);
    let mut changes = std::collections::BTreeSet::new();
    let caught_up = loop {
        let now = sizes(&client).await;
        // The leader never changes meanwhile.
        // Leadership is reported, not asserted: see issue 21's note (the
        // healthy follower's tunnel to the leader stalls while the link is
        // saturated, and it campaigns).
        for (n, _, t, st) in &now {
            if *t != term || (st == "leader" && *n != leader) {
                changes.insert((n.clone(), *t, st.clone()));
            }
        }
        if now.iter().any(|s| s.0 == lagging && s.1 >= target) {
            break t0.elapsed();
        }
        assert!(
            t0.elapsed() < allowed * 2,
            "{lagging} still behind after {:?}: {now:?}",
            t0.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let rate = bytes / caught_up.as_secs_f64();
    eprintln!(
        "{behind} entries ({:.0} KB) caught up over 1 Mbit/s in {caught_up:?}: {:.0} KB/s, {:.0}% of the link",
        bytes / 1e3,
        rate / 1e3,
        100.0 * rate / LINK_BYTES_PER_S
    );
    eprintln!("terms and states other than the first leader's seen meanwhile: {changes:?}");
    assert!(
        caught_up <= allowed,
        "caught up in {caught_up:?}, more than {allowed:?} (half the link's rate)"
    );
}
