//! Real node processes on loopback, talking only through their WireGuard tunnels.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dlog_client::{Client, ErrorCode};
use dlog_devcluster::{self as cluster, ClusterSpec};
use dlog_ledger::EntryKind;

fn program() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_dlog-node"))
}

/// Stops every node when the test ends, even on panic.
struct Guard(PathBuf);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = cluster::stop(&self.0);
    }
}

fn up(dir: &Path, spec: &ClusterSpec) -> Guard {
    cluster::generate(dir, spec).expect("generate");
    cluster::start(dir, &program(), &[] as &[OsString]).expect("start");
    Guard(dir.to_path_buf())
}

/// A temporary cluster directory; kept (and printed) when `DLOG_KEEP` is set.
fn test_dir() -> (Option<tempfile::TempDir>, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    if std::env::var_os("DLOG_KEEP").is_some() {
        let p = t.keep();
        eprintln!("test dir: {}", p.display());
        (None, p)
    } else {
        let p = t.path().to_path_buf();
        (Some(t), p)
    }
}

/// The local ports of a process's internet sockets (TCP, UDP; IPv4 and
/// IPv6), from `/proc`: its socket descriptors matched against the kernel's
/// socket tables by inode.
fn sockets_of(pid: u32) -> (Vec<u16>, Vec<u16>) {
    let mut inodes = std::collections::HashSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let Ok(target) = std::fs::read_link(fd.unwrap().path()) else {
            continue; // closed meanwhile
        };
        let t = target.to_string_lossy();
        if let Some(i) = t.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')) {
            inodes.insert(i.to_string());
        }
    }
    let ports = |tables: &[&str]| -> Vec<u16> {
        let mut v = Vec::new();
        for table in tables {
            // tcp6/udp6 are missing where IPv6 is disabled.
            let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
                continue;
            };
            for line in text.lines().skip(1) {
                let f: Vec<&str> = line.split_whitespace().collect();
                // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
                if f.len() > 9 && inodes.contains(f[9]) {
                    let port = f[1].rsplit(':').next().unwrap();
                    v.push(u16::from_str_radix(port, 16).unwrap());
                }
            }
        }
        v
    };
    (ports(&["tcp", "tcp6"]), ports(&["udp", "udp6"]))
}

fn segments(node_dir: &Path) -> Vec<(String, Vec<u8>)> {
    let seg = node_dir.join("data/ledger/segments");
    let mut v: Vec<_> = std::fs::read_dir(&seg)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().to_string(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

async fn wait_sizes(c: &Client, names: &[String], size: u64, within: Duration) {
    let end = Instant::now() + within;
    loop {
        let mut ok = true;
        for n in names {
            match c.status(n).await {
                Ok(s) if s.ledger_size >= size => {}
                _ => ok = false,
            }
        }
        if ok {
            return;
        }
        assert!(Instant::now() < end, "nodes did not reach size {size}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_sign_and_refuse() {
    let (_tmp, dir) = test_dir();
    let dir = dir.as_path();
    let t0 = Instant::now();
    let (layout, name) = cluster::up(
        dir,
        &ClusterSpec {
            nodes: 3,
            spare_nodes: 1,
            segment_bits: 6,
            origin: "dlog/test".into(),
            snapshot_every: Some(200),
            ..Default::default()
        },
        &program(),
        &[],
        Duration::from_secs(20),
    )
    .await
    .expect("cluster up");
    let _g = Guard(dir.to_path_buf());
    let leader = &name;
    let client = Arc::new(Client::open(&layout.client_config).await.expect("client"));
    eprintln!("cluster up, leader {leader}, after {:?}", t0.elapsed());
    // One follower is down for the whole load; it catches up when restarted.
    let nodes = cluster::node_dirs(dir).unwrap();
    let down = nodes
        .iter()
        .take(3)
        .find(|d| !d.ends_with(leader))
        .unwrap()
        .clone();
    cluster::stop_node(&down, Duration::from_secs(5)).unwrap();

    // 8 concurrent clients, 250 appends of 50 entries each: 100,000 entries.
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..8u32 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..250u32 {
                let p: Vec<Vec<u8>> = (0..50)
                    .map(|j| format!("w{w} i{i} j{j}").into_bytes())
                    .collect();
                let items: Vec<(EntryKind, &[u8])> =
                    p.iter().map(|x| (EntryKind::Data, x.as_slice())).collect();
                let a = c.append(&items).await.expect("append");
                assert_eq!(a.count, 50);
                acked.push((a.first, p));
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    let el = t0.elapsed();
    eprintln!(
        "100000 entries in 2000 appends of 50 from 8 clients: {el:?} ({:.0} entries/s)",
        100_000.0 / el.as_secs_f64()
    );
    // Under load, a node process has one socket open: its WireGuard UDP
    // socket on its `listen` port (metrics are off by default).
    for node in nodes.iter().take(3).filter(|d| **d != down) {
        let pid: u32 = std::fs::read_to_string(node.join("node.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let (tcp, udp) = sockets_of(pid);
        let listen = dlog_node::config::NodeConfig::load(&node.join("node.toml"))
            .unwrap()
            .listen;
        assert!(tcp.is_empty(), "{}: TCP sockets {tcp:?}", node.display());
        assert_eq!(
            udp,
            [listen.port()],
            "{}: UDP sockets (local ports)",
            node.display()
        );
    }
    // Every acknowledged entry is where the ack said.
    for (first, p) in acked.iter().step_by(37) {
        for (j, payload) in p.iter().enumerate() {
            let e = client.get(first + j as u64).await.unwrap();
            let (_, _, got) = dlog_ledger::entry::decode_ref(&e).unwrap();
            assert_eq!(got, payload.as_slice());
        }
    }
    // A majority-signed checkpoint that verifies with the trust file.
    let cp = client
        .checkpoint_covering(99_999)
        .await
        .expect("checkpoint");
    let trust = client.trust().unwrap();
    let v = trust.verify_checkpoint(&cp.note).expect("verifies");
    assert!(v.signers().len() >= 2, "{:?}", v.signers());
    let lin = client
        .checkpoint(true)
        .await
        .expect("linearizable checkpoint");
    assert!(lin.size >= cp.size);
    // Inclusion proof verifies against the checkpoint root.
    let idx = 1234;
    let proof = client.inclusion_proof(idx, cp.size).await.unwrap();
    let entry = client.get(idx).await.unwrap();
    let root = v.checkpoint().root;
    dlog_crypto::tree::verify_inclusion::<dlog_crypto::Blake3Hasher>(
        &<dlog_crypto::Blake3Hasher as dlog_crypto::TreeHasher>::hash_leaf(&entry),
        idx,
        cp.size,
        &proof,
        &root,
    )
    .expect("inclusion verifies");

    // A client key calling a voter RPC is refused by role.
    let err = client
        .call(dlog_node::rpc::Call::SignCheckpoint {
            size: 1,
            root: [0; 32],
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("Refused") && err.contains("role"), "{err}");
    let err = client
        .add_learner(9, "node-1")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("Refused"), "{err}");
    // The stopped follower restarts and catches up; a fresh node joins after
    // the 100,000 entries (by snapshot: the log was purged behind snapshots).
    let t0 = Instant::now();
    cluster::start_node(&down, &program(), &[]).unwrap();
    let admin = Client::open(&dir.join("admin.toml")).await.expect("admin");
    let added = cluster::add_node(dir, &admin, &program(), &[], Duration::from_secs(60))
        .await
        .expect("add node");
    let mut names = client.node_names();
    names.push(added.clone());
    wait_sizes(&client, &names, 100_000, Duration::from_secs(60)).await;
    eprintln!(
        "restarted {} and added {added}: all caught up after {:?}",
        down.display(),
        t0.elapsed()
    );
    let log = std::fs::read_to_string(dir.join(&added).join("node.log")).unwrap();
    assert!(
        log.contains("installed snapshot (segment transfer)"),
        "{added} did not catch up by snapshot"
    );
    drop(admin);
    cluster::stop(dir).unwrap();
    // Byte-identical segment files on all four replicas.
    let nodes = cluster::node_dirs(dir).unwrap();
    assert_eq!(nodes.len(), 4);
    let a = segments(&nodes[0]);
    assert!(a.len() > 100, "sealed segments exist");
    for n in &nodes[1..] {
        assert_eq!(segments(n), a, "{} differs", n.display());
    }
    // The joined node verifies: its own root matches the signed checkpoint.
    let l4 = open_ro(&dir.join(&added));
    assert_eq!(l4.root_at(cp.size).unwrap(), root);
}

fn open_ro(node_dir: &Path) -> dlog_ledger::Ledger {
    dlog_ledger::Ledger::open(
        &node_dir.join("data/ledger"),
        dlog_ledger::OpenMode::ReadOnly,
    )
    .unwrap()
}

async fn leader_of(c: &Client, within: Duration) -> String {
    cluster::wait_for_leader(c, within).await.expect("leader").1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_leader_five_times_then_add_a_node_by_snapshot() {
    let (_tmp, dir) = test_dir();
    let dir = dir.as_path();
    let spec = ClusterSpec {
        nodes: 3,
        spare_nodes: 1,
        segment_bits: 5,
        origin: "dlog/crash".into(),
        snapshot_every: Some(300),
        ..Default::default()
    };
    let _g = up(dir, &spec);
    let client = Arc::new(
        Client::open(&dir.join("client.toml"))
            .await
            .expect("client"),
    );
    leader_of(&client, Duration::from_secs(20)).await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4u32 {
        let c = client.clone();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let p = format!("writer {w} #{i}").into_bytes();
                if let Ok(a) = c.append(&[(EntryKind::Data, &p)]).await {
                    acked.push((a.first, p));
                }
                i += 1;
            }
            acked
        }));
    }
    let mut checkpoints = Vec::new();
    let mut failovers = Vec::new();
    let nodes = cluster::node_dirs(dir).unwrap();
    for round in 0..5 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        if let Ok(cp) = client.checkpoint(false).await {
            checkpoints.push(cp);
        }
        let leader = leader_of(&client, Duration::from_secs(20)).await;
        let term = match client
            .call_node(&leader, dlog_node::rpc::Call::Status)
            .await
        {
            Ok(dlog_node::rpc::Reply::Status(s)) => s.term,
            r => panic!("status of {leader}: {r:?}"),
        };
        let ldir = dir.join(&leader);
        cluster::signal_node(&ldir, libc::SIGKILL).unwrap();
        let killed = Instant::now();
        // A survivor is elected, and a new leader serves writes.
        let survivors: Vec<String> = client
            .node_names()
            .into_iter()
            .filter(|n| *n != leader)
            .collect();
        let probe = format!("probe {round}").into_bytes();
        let (elected, served) = tokio::join!(
            async {
                loop {
                    for n in &survivors {
                        let st = client
                            .call_node_within(
                                n,
                                dlog_node::rpc::Call::Status,
                                Duration::from_millis(500),
                            )
                            .await;
                        if let Ok(dlog_node::rpc::Reply::Status(s)) = st {
                            if s.state == "leader" && s.term > term {
                                return killed.elapsed();
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            async {
                client
                    .append(&[(EntryKind::Data, &probe)])
                    .await
                    .expect("write after failover");
                killed.elapsed()
            }
        );
        eprintln!(
            "round {round}: killed {leader}; a survivor leads after {elected:?}, \
             writes served again after {served:?}"
        );
        failovers.push(served);
        cluster::stop_node(&ldir, Duration::from_secs(1)).unwrap();
        cluster::start_node(&ldir, &program(), &[]).unwrap();
    }
    // "A new leader serves writes within a few seconds": a follower waits
    // out the leader lease and its election timeout (2.25-3 s of silence
    // with the default [raft] timing) before it campaigns; 6 s leaves room
    // for a loaded test machine, not for a lost election or a client stuck
    // on a dead node.
    let slowest = failovers.iter().max().copied().unwrap_or_default();
    assert!(
        slowest < Duration::from_secs(6),
        "failover took up to {slowest:?}: {failovers:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(
        acked.len() > 100,
        "only {} appends acknowledged",
        acked.len()
    );
    let cp = client.checkpoint(true).await.expect("final checkpoint");
    checkpoints.push(cp.clone());

    // A fresh node joins as a learner, catches up (by snapshot: the log was
    // purged behind snapshots), and is promoted to voter.
    let t0 = Instant::now();
    let admin = Client::open(&dir.join("admin.toml")).await.expect("admin");
    let added = cluster::add_node(dir, &admin, &program(), &[], Duration::from_secs(30))
        .await
        .expect("add node");
    assert_eq!(added, "node-4");
    eprintln!(
        "node-4 added, caught up (snapshot) and promoted in {:?}",
        t0.elapsed()
    );
    let st = admin.status("node-4").await.unwrap();
    assert!(st.voters.contains(&4), "{st:?}");
    // The client configs list it now: a client opened from them, and
    // `dlog cluster status`, see all four.
    let listed = |who: &str| {
        dlog_node::config::ClientConfig::load(&dir.join(format!("{who}.toml")))
            .unwrap()
            .nodes
    };
    assert_eq!(listed("client"), ["node-1", "node-2", "node-3", "node-4"]);
    assert_eq!(listed("admin"), listed("client"));
    let all = listed("client");
    let a = client
        .append(&[(EntryKind::Data, b"after promotion")])
        .await
        .expect("append");
    let final_size = a.first + 1;
    // Everyone converges.
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let mut ok = true;
        for n in &all {
            match admin.call_node(n, dlog_node::rpc::Call::Status).await {
                Ok(dlog_node::rpc::Reply::Status(s)) if s.ledger_size >= final_size => {}
                _ => ok = false,
            }
        }
        if ok {
            break;
        }
        assert!(Instant::now() < end, "replicas did not converge");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every checkpoint seen is consistent with the final log.
    let trust = client.trust().unwrap().clone();
    for c in &checkpoints {
        let v = trust.verify_checkpoint(&c.note).expect("majority-signed");
        let old = v.checkpoint();
        let proof = client.consistency_proof(old.size, cp.size).await.unwrap();
        let newv = trust.verify_checkpoint(&cp.note).unwrap();
        dlog_crypto::tree::verify_consistency::<dlog_crypto::Blake3Hasher>(
            old.size,
            cp.size,
            &old.root,
            &newv.checkpoint().root,
            &proof,
        )
        .expect("consistent");
    }
    // The snapshot-installed node holds the same bytes (no writes in flight).
    assert_eq!(
        segments(&dir.join("node-4")),
        segments(&nodes[0]),
        "node-4 differs"
    );
    // A promoted spare's signature counts: with one of the first three
    // voters down, a checkpoint needs node-4's (3 of 4), and the trust file
    // verifies it offline.
    let leader = leader_of(&client, Duration::from_secs(10)).await;
    let down = nodes
        .iter()
        .find(|d| !d.ends_with(&leader))
        .unwrap()
        .clone();
    cluster::stop_node(&down, Duration::from_secs(5)).unwrap();
    let a = client
        .append(&[(EntryKind::Data, b"three of four voters")])
        .await
        .expect("append with one voter of four down");
    let cp4 = client
        .checkpoint_covering(a.first)
        .await
        .expect("a checkpoint with one voter of four down");
    let signers: Vec<String> = dlog_crypto::note::SignedNote::parse(&cp4.note)
        .unwrap()
        .signatures
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert!(
        signers.len() >= 3 && signers.iter().any(|n| n == "node-4"),
        "signers {signers:?}"
    );
    trust
        .verify_checkpoint(&cp4.note)
        .expect("verifies with the trust file");
    cluster::start_node(&down, &program(), &[]).unwrap();
    // Remove it again; the three go on.
    cluster::remove_node(dir, &admin, "node-4", Duration::from_secs(10))
        .await
        .expect("remove node");
    assert_eq!(listed("client"), ["node-1", "node-2", "node-3"]);
    assert_eq!(listed("admin"), listed("client"));
    let st = admin
        .status(&leader_of(&client, Duration::from_secs(10)).await)
        .await
        .unwrap();
    assert_eq!(st.voters, vec![1, 2, 3]);
    let last = client
        .append(&[(EntryKind::Data, b"after removal")])
        .await
        .expect("append");
    wait_sizes(
        &client,
        &client.node_names(),
        last.first + 1,
        Duration::from_secs(10),
    )
    .await;
    drop(admin);
    cluster::stop(dir).unwrap();
    // No acknowledged entry is lost; all replicas hold byte-identical segments.
    let l = open_ro(&nodes[0]);
    for (idx, p) in &acked {
        let e = l.entry(*idx).unwrap();
        let (_, _, got) = dlog_ledger::entry::decode_ref(&e).unwrap();
        assert_eq!(
            got,
            p.as_slice(),
            "acknowledged entry {idx} changed or lost"
        );
    }
    // Exactly once: retries after the kills (same session tag) stored no
    // second copy of any append.
    let mut seen = std::collections::HashSet::new();
    for i in 0..l.size() {
        let e = l.entry(i).unwrap();
        let p = dlog_ledger::entry::decode_ref(&e).unwrap().2.to_vec();
        assert!(
            seen.insert(p.clone()),
            "entry {i} repeats {:?}",
            String::from_utf8_lossy(&p)
        );
    }
    eprintln!(
        "{} acknowledged appends verified, none stored twice; log size {}",
        acked.len(),
        l.size()
    );
    let log4 = std::fs::read_to_string(dir.join("node-4/node.log")).unwrap();
    assert!(
        log4.contains("installed snapshot (segment transfer)"),
        "node-4 did not catch up by snapshot"
    );
    let a = segments(&nodes[0]);
    for n in nodes.iter().take(3).skip(1) {
        assert_eq!(segments(n), a, "{} differs", n.display());
    }
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p) as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn performance_numbers() {
    let (_tmp, dir) = test_dir();
    let dir = dir.as_path();
    let _g = up(
        dir,
        &ClusterSpec {
            nodes: 3,
            origin: "dlog/perf".into(),
            ..Default::default()
        },
    );
    let client = Arc::new(
        Client::open(&dir.join("client.toml"))
            .await
            .expect("client"),
    );
    leader_of(&client, Duration::from_secs(20)).await;
    // Warm up the tunnels and the leader pick.
    for _ in 0..20 {
        client
            .append(&[(EntryKind::Data, &[0u8; 100])])
            .await
            .unwrap();
    }
    // 1 appender.
    let mut lat = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        client
            .append(&[(EntryKind::Data, &[1u8; 100])])
            .await
            .unwrap();
        lat.push(t.elapsed());
    }
    eprintln!(
        "PERF 1 appender: p50 {:?} p99 {:?}",
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99)
    );
    // 64 concurrent single-entry appenders for 3 s.
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while t0.elapsed() < Duration::from_secs(3) {
                let t = Instant::now();
                c.append(&[(EntryKind::Data, &[2u8; 100])]).await.unwrap();
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let el = t0.elapsed();
    eprintln!(
        "PERF 64 appenders: {:.0} appends/s, p50 {:?} p99 {:?}",
        lat.len() as f64 / el.as_secs_f64(),
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99)
    );
    // Batches of 1000 100-byte entries from 4 tasks for 3 s.
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let p = vec![3u8; 100];
            let items: Vec<(EntryKind, &[u8])> =
                (0..1000).map(|_| (EntryKind::Data, p.as_slice())).collect();
            let mut n = 0u64;
            while t0.elapsed() < Duration::from_secs(3) {
                n += c.append(&items).await.unwrap().count;
            }
            n
        }));
    }
    let mut n = 0;
    for t in tasks {
        n += t.await.unwrap();
    }
    eprintln!(
        "PERF batches of 1000: {:.0} entries/s",
        n as f64 / t0.elapsed().as_secs_f64()
    );
    // Append to a receipt (majority-signed checkpoint covering the entry).
    let mut lat = Vec::new();
    for _ in 0..30 {
        let t = Instant::now();
        let a = client
            .append(&[(EntryKind::Notarization, b"dlog-notary/v1\nsha256 00\n")])
            .await
            .unwrap();
        let cp = client.checkpoint_covering(a.first).await.unwrap();
        let _proof = client.inclusion_proof(a.first, cp.size).await.unwrap();
        lat.push(t.elapsed());
    }
    eprintln!(
        "PERF append to receipt: p50 {:?} p99 {:?}",
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99)
    );
}

/// The wire protocol on one raw stream: calls in flight at once are answered
/// by id, in the order they finish; a frame that does not decode is answered
/// by id with `BadRequest` and the stream goes on; another protocol version is
/// answered with `Version` and the stream is closed. Many concurrent calls of
/// one client share one stream.
async fn multiplexed_stream_answers_by_id(client: &Client, dir: &Path) {
    use dlog_node::rpc::{decode, encode_framed, Call, ErrorCode, FrameHead, Reply, ResponseFrame};
    use tokio::io::AsyncWriteExt;

    #[derive(serde::Serialize)]
    struct Req {
        version: u16,
        id: u64,
        call: Call,
    }
    let peers = dlog_node::config::load_peers(&dir.join("peers.toml"), dir, "peers").unwrap();
    let node = peers.by_name("node-1").unwrap().public_key;
    let ep = client.endpoint();
    let stream = ep.connect(&node, dlog_node::rpc::RPC_PORT).await.unwrap();
    let (r, mut w) = stream.into_split();
    let mut wire = Vec::new();
    let slow = Call::WaitCheckpoint {
        covering: 1 << 40,
        wait_ms: 400,
    };
    wire.extend_from_slice(
        &encode_framed(&Req {
            version: dlog_node::rpc::PROTOCOL_VERSION,
            id: 5,
            call: slow,
        })
        .unwrap(),
    );
    wire.extend_from_slice(
        &encode_framed(&Req {
            version: dlog_node::rpc::PROTOCOL_VERSION,
            id: 7,
            call: Call::Status,
        })
        .unwrap(),
    );
    // A valid head, then bytes that are no call.
    let mut bad = bincode::serialize(&FrameHead {
        version: dlog_node::rpc::PROTOCOL_VERSION,
        id: 9,
    })
    .unwrap();
    bad.extend_from_slice(&[0xff; 7]);
    wire.extend_from_slice(&(bad.len() as u32).to_be_bytes());
    wire.extend_from_slice(&bad);
    wire.extend_from_slice(
        &encode_framed(&Req {
            version: dlog_node::rpc::PROTOCOL_VERSION,
            id: 11,
            call: Call::Get { index: 0 },
        })
        .unwrap(),
    );
    // All four leave in one write.
    w.write_all(&wire).await.unwrap();
    let mut reader = dlog_wg::frame::FrameReader::new(r, 1 << 20);
    let mut order = Vec::new();
    for _ in 0..4 {
        let f = reader.recv().await.unwrap().expect("an answer");
        let resp: ResponseFrame = decode(&f).unwrap();
        match resp.id {
            5 => assert!(
                matches!(resp.result, Ok(Reply::Checkpoint { .. })),
                "{resp:?}"
            ),
            7 => assert!(matches!(resp.result, Ok(Reply::Status(_))), "{resp:?}"),
            9 => assert!(
                matches!(&resp.result, Err(e) if e.code == ErrorCode::BadRequest),
                "{resp:?}"
            ),
            11 => assert!(matches!(resp.result, Ok(Reply::Entry(_))), "{resp:?}"),
            other => panic!("answer to a call never made: {other}"),
        }
        order.push(resp.id);
    }
    // The long poll was sent first and answered last.
    assert_eq!(order.last(), Some(&5), "{order:?}");
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(sorted, [5, 7, 9, 11]);
    // Another version: one `Version` answer, then the node closes the stream.
    w.write_all(
        &encode_framed(&Req {
            version: dlog_node::rpc::PROTOCOL_VERSION + 1,
            id: 13,
            call: Call::Status,
        })
        .unwrap(),
    )
    .await
    .unwrap();
    let f = reader.recv().await.unwrap().expect("an answer");
    let resp: ResponseFrame = decode(&f).unwrap();
    assert_eq!(resp.id, 13);
    assert!(
        matches!(&resp.result, Err(e) if e.code == ErrorCode::Version),
        "{resp:?}"
    );
    assert!(reader.recv().await.unwrap().is_none(), "stream closed");
    drop(w);

    // 256 concurrent calls through the client: all answered, one stream.
    let calls = (0..256u64).map(|_| client.get(0));
    for r in futures::future::join_all(calls).await {
        assert!(r.is_ok(), "{r:?}");
    }
    let states = ep.socket_states().await.unwrap();
    let open = states
        .iter()
        .filter(|s| s.starts_with("Established"))
        .count();
    assert_eq!(open, 1, "{states:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_key_gets_nothing_and_config_errors_name_the_field() {
    let (_tmp, dir) = test_dir();
    let dir = dir.as_path();
    let layout = cluster::generate(
        dir,
        &ClusterSpec {
            nodes: 1,
            origin: "dlog/acl".into(),
            ..Default::default()
        },
    )
    .unwrap();
    // Port in use: a config error naming `listen`.
    let cfg = dlog_node::config::NodeConfig::load(&layout.node_configs[0]).unwrap();
    let hold = std::net::UdpSocket::bind(cfg.listen).unwrap();
    let err = dlog_node::start(cfg.clone()).await.unwrap_err().to_string();
    assert!(
        err.contains("node.toml") && err.contains("`listen`"),
        "{err}"
    );
    drop(hold);
    // The metrics port in use: names `metrics`.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut m = cfg.clone();
    m.metrics = Some(busy.local_addr().unwrap());
    let err = dlog_node::start(m).await.unwrap_err().to_string();
    assert!(
        err.contains("node.toml") && err.contains("`metrics`"),
        "{err}"
    );
    drop(busy);
    // The signing key of another node: names `node_key` (signatures are
    // matched to voters by name).
    let other = dir.join("other.key");
    std::fs::write(
        &other,
        dlog_crypto::keys::NodeKey::generate("node-9")
            .unwrap()
            .to_toml_string(),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let mut k = cfg.clone();
    k.node_key = other;
    let err = dlog_node::start(k).await.unwrap_err().to_string();
    assert!(
        err.contains("node.toml") && err.contains("`node_key`") && err.contains("node-9"),
        "{err}"
    );
    // A data directory of another cluster: names `data_dir`.
    dlog_node::state_machine::StateMachine::open(&cfg.data_dir, &cfg.shape())
        .unwrap()
        .close();
    let mut other = cfg.clone();
    other.log.log_id = "ffeeddccbbaa99887766554433221100".into();
    let err = dlog_node::start(other).await.unwrap_err().to_string();
    assert!(
        err.contains("node.toml") && err.contains("`data_dir`") && err.contains("another cluster"),
        "{err}"
    );
    // A config with a missing field names the file and the field.
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "name = \"x\"\nid = 1\n").unwrap();
    let err = dlog_node::config::NodeConfig::load(&bad)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bad.toml") && err.contains("data_dir"),
        "{err}"
    );

    let mut cfg = cfg;
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    cfg.metrics = Some(metrics);
    let node = dlog_node::start(cfg).await.expect("node starts");
    // A stranger: knows the node, but the node does not know its key.
    let key = dlog_wg::keys::generate().unwrap();
    dlog_wg::keys::write_key_file(&dir.join("stranger.key"), &key).unwrap();
    let mut peers = std::fs::read_to_string(dir.join("peers.toml")).unwrap();
    peers.push_str(&format!(
        "[[peer]]\nname = \"stranger\"\npublic_key = \"{}\"\naddress = \"10.77.9.9\"\nrole = \"client\"\n",
        key.public_key_b64()
    ));
    std::fs::write(dir.join("stranger-peers.toml"), peers).unwrap();
    std::fs::write(
        dir.join("stranger.toml"),
        "wg_key = \"stranger.key\"\npeers = \"stranger-peers.toml\"\nnodes = [\"node-1\"]\ntimeout_ms = 1500\n",
    )
    .unwrap();
    let stranger = Client::open(&dir.join("stranger.toml")).await.unwrap();
    let err = stranger
        .append(&[(EntryKind::Data, b"x")])
        .await
        .unwrap_err();
    eprintln!("stranger: {err}");
    assert!(
        matches!(
            err,
            dlog_client::Error::Timeout(_)
                | dlog_client::Error::Transport(_)
                | dlog_client::Error::Unreachable { .. }
        ),
        "{err}"
    );
    // The real client works against the same node.
    let client = Client::open(&dir.join("client.toml")).await.unwrap();
    cluster::wait_for_leader(&client, Duration::from_secs(10))
        .await
        .unwrap();
    let a = client.append(&[(EntryKind::Data, b"ok")]).await.unwrap();
    // A long poll for a checkpoint answers once one covers the entry, and a
    // poll for one that never comes answers with what is there after its wait.
    let cp = client.checkpoint_covering(a.first).await.unwrap();
    assert!(cp.size > a.first);
    let t = Instant::now();
    let r = client
        .call(dlog_node::rpc::Call::WaitCheckpoint {
            covering: 1 << 40,
            wait_ms: 300,
        })
        .await
        .unwrap();
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(290) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    assert!(
        matches!(r, dlog_node::rpc::Reply::Checkpoint { size, .. } if size == cp.size),
        "{r:?}"
    );
    multiplexed_stream_answers_by_id(&client, dir).await;
    // The loopback metrics endpoint answers in Prometheus text.
    let body = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(metrics).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    assert!(
        body.contains("dlog_appends_total 1") && body.contains("dlog_raft_leader 1"),
        "{body}"
    );
    assert!(
        body.contains("# TYPE dlog_appends_total counter\n")
            && body.contains("# TYPE dlog_raft_term gauge\n"),
        "{body}"
    );
    // The node completed handshakes (with the client, at least).
    let handshakes: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix("dlog_wg_handshakes_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{body}"));
    assert!(handshakes >= 1, "{body}");
    // The client's session holds the one append's result.
    assert!(
        body.contains("dlog_sessions 1\n")
            && body.contains("dlog_session_results 1\n")
            && body.contains("dlog_duplicate_appends_total 0\n"),
        "{body}"
    );
    // The one append shows in the latency and batch-size histograms.
    for h in [
        "dlog_commit_seconds",
        "dlog_append_seconds",
        "dlog_batch_entries",
    ] {
        assert!(
            body.contains(&format!("{h}_bucket{{le=\"+Inf\"}} 1\n"))
                && body.contains(&format!("{h}_count 1\n")),
            "{h}: {body}"
        );
    }
    assert!(
        body.contains("dlog_batch_entries_bucket{le=\"1\"} 1\n"),
        "{body}"
    );
    let unknown = body
        .lines()
        .find_map(|l| l.strip_prefix("dlog_wg_dropped_unknown_key_total "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert!(
        unknown.is_some_and(|n| n > 0),
        "stranger's handshakes not counted: {body}"
    );
    // Callers that give up in the middle of a frame larger than one write
    // (here after 1 to 4 ms) never leave half a frame on the shared stream:
    // every later call on it is answered.
    let ep = client.endpoint();
    let streams = || async {
        let states = ep.socket_states().await.unwrap();
        states
            .into_iter()
            .filter(|s| s.starts_with("Established"))
            .map(|s| {
                s.split(" send_queue")
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect::<Vec<_>>()
    };
    client.status("node-1").await.unwrap();
    let before = streams().await;
    assert_eq!(before.len(), 1, "{before:?}");
    // Many at once, so the tunnel pushes back and writers wait mid-frame.
    let big = vec![b'x'; 1 << 20];
    let mut gave_up = 0;
    for round in 0..3u64 {
        let calls = (0..24u64).map(|i| {
            client.call_node_within(
                "node-1",
                dlog_node::rpc::Call::Append {
                    items: vec![(EntryKind::Data, big.clone())].into(),
                    tag: None,
                },
                Duration::from_millis(1 + (i + round) % 4),
            )
        });
        for (i, r) in futures::future::join_all(calls)
            .await
            .into_iter()
            .enumerate()
        {
            match r {
                Err(dlog_client::Error::Timeout(_)) => gave_up += 1,
                Ok(_) | Err(dlog_client::Error::Remote(_)) => {}
                Err(e) => panic!("round {round} call {i}: {e}"),
            }
        }
    }
    assert!(gave_up > 0, "no caller gave up mid-way");
    for _ in 0..20 {
        client
            .call_node_within(
                "node-1",
                dlog_node::rpc::Call::Status,
                Duration::from_secs(5),
            )
            .await
            .expect("the stream still carries whole frames");
    }
    // The same stream all along: the node never had to close it.
    assert_eq!(streams().await, before);
    node.shutdown().await;
}

/// Three nodes generated into `dir` and run in this process, a client, and
/// the leader's id and name once one is elected.
struct InProcess {
    configs: Vec<dlog_node::config::NodeConfig>,
    nodes: Vec<dlog_node::RunningNode>,
    client: Client,
    leader: (u64, String),
}

/// Waits (at most 20 s) until every in-process node's status satisfies
/// `ok`; fails naming `what` and the statuses otherwise.
async fn all_nodes(
    nodes: &[dlog_node::RunningNode],
    what: &str,
    ok: impl Fn(&dlog_node::rpc::NodeStatus) -> bool,
) {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let st: Vec<_> = nodes.iter().map(|n| n.status()).collect();
        if st.iter().all(&ok) {
            return;
        }
        assert!(Instant::now() < end, "not every node {what}: {st:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Commits a first append (which commits the leader's term) and waits
/// until every node has joined that term under the leader (a node started
/// last may still be catching up); returns the term.
async fn settle(nodes: &[dlog_node::RunningNode], client: &Client, lid: u64) -> u64 {
    client
        .append(&[(EntryKind::Data, b"first")])
        .await
        .expect("append");
    let term = nodes[(lid - 1) as usize].status().term;
    all_nodes(nodes, "joined the leader's term", |st| {
        st.term == term && st.leader == Some(lid)
    })
    .await;
    term
}

async fn in_process_cluster(dir: &Path, origin: &str) -> InProcess {
    in_process_cluster_with(dir, origin, |_| None).await
}

/// [`in_process_cluster`], node `i`'s tunnel sending through `netem(i)`.
async fn in_process_cluster_with(
    dir: &Path,
    origin: &str,
    netem: impl Fn(usize) -> Option<dlog_wg::Netem>,
) -> InProcess {
    let layout = cluster::generate(
        dir,
        &ClusterSpec {
            nodes: 3,
            segment_bits: 4,
            origin: origin.into(),
            ..Default::default()
        },
    )
    .unwrap();
    let configs: Vec<_> = layout
        .node_configs
        .iter()
        .map(|p| dlog_node::config::NodeConfig::load(p).unwrap())
        .collect();
    let mut nodes = Vec::new();
    for (i, cfg) in configs.iter().enumerate() {
        nodes.push(dlog_node::start_with(cfg.clone(), netem(i)).await.unwrap());
    }
    let client = Client::open(&layout.client_config).await.unwrap();
    let leader = cluster::wait_for_leader(&client, Duration::from_secs(20))
        .await
        .unwrap();
    InProcess {
        configs,
        nodes,
        client,
        leader,
    }
}

/// "No leader flapping on an idle or lightly lossy network": every node's
/// tunnel drops 3% of the datagrams it sends (and holds back 1% past the
/// next one); idle for 8 s, then 8 s of an append every 20 ms, and after a
/// quiet 2 s nobody has called an election: one leader, one term
/// throughout, every append acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lightly_lossy_network_keeps_its_leader() {
    let (_tmp, dir) = test_dir();
    let dir = dir.as_path();
    let InProcess {
        nodes,
        client,
        leader: (lid, _),
        ..
    } = in_process_cluster_with(dir, "dlog/lossy", |i| {
        Some(dlog_wg::Netem {
            loss: 0.03,
            duplicate: 0.0,
            reorder: 0.01,
            seed: 0x5eed + i as u64,
        })
    })
    .await;
    let term = settle(&nodes, &client, lid).await;
    let check = |when: &str| {
        for n in &nodes {
            let st = n.status();
            assert!(
                st.term == term && st.leader == Some(lid),
                "{when}: {} sees term {} leader {:?}, was term {term} leader {lid}",
                st.name,
                st.term,
                st.leader
            );
        }
    };
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(8) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        check("idle");
    }
    let mut appends = 0u32;
    let mut slowest = Duration::ZERO;
    let t1 = Instant::now();
    while t1.elapsed() < Duration::from_secs(8) {
        let p = format!("lossy {appends}").into_bytes();
        let t = Instant::now();
        client
            .append(&[(EntryKind::Data, &p)])
            .await
            .expect("append");
        slowest = slowest.max(t.elapsed());
        appends += 1;
        check("under load");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    check("after");
    eprintln!(
        "3% loss: one leader and term {term} for 18 s; {appends} appends, slowest {slowest:?}"
    );
    for n in nodes {
        n.shutdown().await;
    }
}

/// The leader's fsync runs beside the followers' (vendor/openraft's patch):
/// with the leader's disk stalled, the two followers' durable copies commit
/// an append at once, and the leader stays leader. But the leader's copy
/// counts only once durable: with the leader's and one follower's disks
/// stalled (one durable copy of three), nothing is acknowledged until a
/// stall ends; nor with both followers' disks stalled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_commits_without_its_own_fsync_but_not_without_a_majority() {
    let (_tmp, dir) = test_dir();
    let dir = dir.as_path();
    let InProcess {
        nodes,
        client,
        leader: (lid, _),
        ..
    } = in_process_cluster(dir, "dlog/fsync").await;
    let client = Arc::new(client);
    let term = settle(&nodes, &client, lid).await;
    let leader = &nodes[(lid - 1) as usize];
    let followers: Vec<_> = nodes.iter().filter(|n| n.status().id != lid).collect();

    // The leader's disk stalls: the followers' fsyncs alone commit appends,
    // well within the time a blocked leader would need to lose its term
    // (its heartbeats stop: a new leader after >= 2.25 s).
    leader.hold_log_flushes(true);
    for i in 0..20 {
        let p = format!("leader disk stalled {i}").into_bytes();
        tokio::time::timeout(
            Duration::from_millis(1000),
            client.append(&[(EntryKind::Data, &p)]),
        )
        .await
        .unwrap_or_else(|_| {
            panic!("append {i} not acknowledged with only the leader's disk stalled")
        })
        .expect("append");
    }
    let st = leader.status();
    assert!(
        st.term == term && st.leader == Some(lid),
        "leadership changed: {st:?}"
    );

    // One durable copy of three (the leader's still stalled, one follower's
    // too): not acknowledged, however long it waits.
    followers[0].hold_log_flushes(true);
    let c = client.clone();
    let pending =
        tokio::spawn(async move { c.append(&[(EntryKind::Data, b"one durable copy")]).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !pending.is_finished(),
        "acknowledged with one durable copy of three: {:?}",
        pending.await
    );
    // A follower's disk recovers: two durable copies, acknowledged.
    followers[0].hold_log_flushes(false);
    tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("acknowledged once two copies are durable")
        .unwrap()
        .expect("append");
    leader.hold_log_flushes(false);

    // Both followers' disks stall: the leader's durable copy alone does not
    // commit either.
    for f in &followers {
        f.hold_log_flushes(true);
    }
    let c = client.clone();
    let pending = tokio::spawn(async move { c.append(&[(EntryKind::Data, b"leader only")]).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !pending.is_finished(),
        "acknowledged with only the leader's copy durable: {:?}",
        pending.await
    );
    followers[1].hold_log_flushes(false);
    tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("acknowledged once two copies are durable")
        .unwrap()
        .expect("append");
    followers[0].hold_log_flushes(false);
    let st = leader.status();
    assert!(
        st.term == term && st.leader == Some(lid),
        "leadership changed: {st:?}"
    );
    for n in nodes {
        n.shutdown().await;
    }
}

/// A leader replicates before its own fsync ends, so after a power cut its
/// log may lack entries committed under its id. Restarted, it must not lead
/// again in its old term (openraft 0.9 would resume at once and hand those
/// entries' log ids to new ones): it comes back a follower, a newer term
/// elects a leader, and every acknowledged append is on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_leader_does_not_resume_its_term() {
    let (_tmp, dir) = test_dir();
    let dir = dir.as_path();
    let InProcess {
        configs,
        mut nodes,
        client,
        leader: (lid, _),
    } = in_process_cluster(dir, "dlog/restart").await;
    let term = settle(&nodes, &client, lid).await;
    let li = (lid - 1) as usize;
    // Committed by the followers while the leader's own copy is not durable.
    nodes[li].hold_log_flushes(true);
    let acked = client
        .append(&[(EntryKind::Data, b"committed, leader not durable")])
        .await
        .expect("append");
    let old = nodes.remove(li);
    old.hold_log_flushes(false);
    old.shutdown().await;
    let restarted = restart_old_leader(&configs[li], lid, term).await;
    nodes.insert(li, restarted);
    // A newer term has a leader, and every node agrees on it.
    all_nodes(&nodes, "a leader of a newer term", |st| {
        st.term > term && st.leader.is_some()
    })
    .await;
    let last = client
        .append(&[(EntryKind::Data, b"after the restart")])
        .await
        .expect("append after the restart");
    assert!(last.first > acked.first);
    let size = last.first + 1;
    all_nodes(&nodes, "every append applied", |st| {
        st.ledger_size >= size && st.diverged.is_none()
    })
    .await;
    for n in nodes {
        n.shutdown().await;
    }
}

/// A client reads what was acknowledged wherever its call lands: a
/// follower that has not applied an entry yet (its disk stalls, so it
/// cannot take it in) forwards reads of it to the leader instead of
/// answering that the index is out of range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_follower_forwards_reads_it_cannot_answer() {
    use dlog_node::rpc::{Call, Reply};
    let (_tmp, dir) = test_dir();
    let dir = dir.as_path();
    let InProcess {
        nodes,
        client,
        leader: (lid, _),
        ..
    } = in_process_cluster(dir, "dlog/lagging-reads").await;
    settle(&nodes, &client, lid).await;
    let lagging = nodes.iter().find(|n| n.status().id != lid).unwrap();
    lagging.hold_log_flushes(true);
    let a = client
        .append(&[(EntryKind::Data, b"not on the lagging follower yet")])
        .await
        .expect("append");
    let name = lagging.status().name;
    assert!(lagging.status().ledger_size <= a.first, "it lags");
    let got = client
        .call_node(&name, Call::Get { index: a.first })
        .await
        .expect("a read of an acknowledged entry is answered");
    let Reply::Entry(e) = got else {
        panic!("{got:?}")
    };
    let (_, _, payload) = dlog_ledger::entry::decode_ref(&e).unwrap();
    assert_eq!(payload, b"not on the lagging follower yet");
    let proof = client
        .call_node(
            &name,
            Call::Inclusion {
                index: a.first,
                size: a.first + 1,
            },
        )
        .await;
    assert!(matches!(proof, Ok(Reply::Proof(_))), "{proof:?}");
    // Past the end of the log it is still a clear error, from the leader.
    let past = client
        .call_node(
            &name,
            Call::Get {
                index: a.first + 1000,
            },
        )
        .await;
    assert!(
        matches!(&past, Err(dlog_client::Error::Remote(e)) if e.code == ErrorCode::BadRequest),
        "{past:?}"
    );
    // A checkpoint read says how stale it may be: a ReadIndex round's
    // answer is current; the stalled follower's bound grows with its stall
    // (or is unknown), the healthy follower's stays small.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let behind = |r: Result<Reply, dlog_client::Error>| match r {
        Ok(Reply::Checkpoint { behind_ms, .. }) => behind_ms,
        r => panic!("{r:?}"),
    };
    let stalled = behind(
        client
            .call_node(
                &name,
                Call::Checkpoint {
                    linearizable: false,
                },
            )
            .await,
    );
    assert!(stalled.is_none_or(|ms| ms >= 300), "{stalled:?}");
    let healthy = nodes
        .iter()
        .map(|n| n.status())
        .find(|s| s.id != lid && s.name != name)
        .unwrap()
        .name;
    let ms = behind(
        client
            .call_node(
                &healthy,
                Call::Checkpoint {
                    linearizable: false,
                },
            )
            .await,
    )
    .expect("a healthy follower knows");
    assert!(ms < 2000, "{ms} ms");
    assert_eq!(client.checkpoint(true).await.unwrap().behind_ms, Some(0));
    lagging.hold_log_flushes(false);
    for n in nodes {
        n.shutdown().await;
    }
}

/// A leader whose ledger went bad (a flipped byte in a sealed segment's
/// node file, read through its map) asks the followers to sign roots they
/// do not compute. Both refuse (RootDiffers), so the leader marks itself
/// diverged, records the evidence and leaves Raft; the two others elect a
/// leader and go on, checkpoints included, and neither marks itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_root_differs_from_the_majority_steps_out() {
    let (_tmp, dir) = test_dir();
    let dir = dir.as_path();
    let InProcess {
        configs,
        nodes,
        client,
        leader: (lid, _),
    } = in_process_cluster(dir, "dlog/odd-leader").await;
    let term = settle(&nodes, &client, lid).await;
    let li = (lid - 1) as usize;
    // Three sealed segments of 16 (segment_bits 4), then a few entries one
    // by one, so the leader has swapped in the mapped node files.
    let p: Vec<Vec<u8>> = (0..47).map(|i| format!("e{i}").into_bytes()).collect();
    let items: Vec<(EntryKind, &[u8])> = p.iter().map(|x| (EntryKind::Data, &x[..])).collect();
    client.append(&items).await.expect("append");
    for i in 0..3 {
        client
            .append(&[(EntryKind::Data, format!("one by one {i}").as_bytes())])
            .await
            .expect("append");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    all_nodes(&nodes, "checkpointed 51", |st| st.checkpoint_size == 51).await;
    // Bit rot in the leader's node file of segment 2: its root (the last
    // node) is what the next checkpoint's root is computed from.
    let tree = configs[li]
        .data_dir
        .join("ledger/segments/00000000000000000002.tree");
    {
        // In place: the leader has the file mapped (a truncating write
        // could fault its reads).
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&tree)
            .unwrap();
        let last = f.metadata().unwrap().len() - 1;
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, last).unwrap();
        f.write_all_at(&[b[0] ^ 0x01], last).unwrap();
    }
    client
        .append(&[(EntryKind::Data, b"checkpointed by the others")])
        .await
        .expect("append");
    // The leader found itself the odd one out and left.
    let end = Instant::now() + Duration::from_secs(20);
    let why = loop {
        if let Some(why) = nodes[li].status().diverged {
            break why;
        }
        assert!(Instant::now() < end, "the odd leader did not stand down");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(why.contains("compute another root"), "{why}");
    let marker = configs[li]
        .data_dir
        .join(dlog_node::state_machine::DIVERGED_FILE);
    assert!(marker.exists(), "evidence recorded");
    let others: Vec<_> = nodes.iter().filter(|n| n.status().id != lid).collect();
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let st: Vec<_> = others.iter().map(|n| n.status()).collect();
        if st
            .iter()
            .all(|s| s.term > term && s.leader.is_some_and(|l| l != lid) && s.diverged.is_none())
        {
            break;
        }
        assert!(Instant::now() < end, "no new leader: {st:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let a = client
        .append(&[(EntryKind::Data, b"after the odd leader left")])
        .await
        .expect("append after the odd leader left");
    let cp = client
        .checkpoint_covering(a.first)
        .await
        .expect("the others checkpoint on their own");
    assert!(cp.size > a.first);
    for n in nodes {
        n.shutdown().await;
    }
}

/// A power cut on a leader whose disk lags. The followers commit appends
/// under its term that never reach its disk; then the power goes: its whole
/// data directory reverts to an image taken while it was idle and fully
/// synced (everything written after that is lost, as with unsynced pages).
/// It restarts with a log that lacks committed entries of its own term: it
/// must neither resume that term nor hand those entries' log ids to new
/// ones. Every acknowledged append survives on every node and all three end
/// with byte-identical segment files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_on_a_lagging_leader_loses_no_acknowledged_append() {
    power_cut_on_a_lagging_leader(PowerCut::Everything).await;
}

/// As above, but only the Raft log loses its unsynced tail: the ledger had
/// applied and synced the entries the followers committed (its sync does
/// not wait for the Raft log's), so the node restarts having applied more
/// than its log holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_of_a_lagging_leaders_raft_log_alone_loses_nothing() {
    power_cut_on_a_lagging_leader(PowerCut::RaftLogOnly).await;
}

/// What a power cut loses on the leader in [`power_cut_on_a_lagging_leader`].
#[derive(Clone, Copy, Debug)]
enum PowerCut {
    /// The whole data directory reverts to its idle image.
    Everything,
    /// Only the Raft log does; the ledger keeps what it applied and synced
    /// (at shutdown) after the image.
    RaftLogOnly,
}

async fn power_cut_on_a_lagging_leader(cut: PowerCut) {
    let (_tmp, dir) = test_dir();
    let dir = dir.as_path();
    let InProcess {
        configs,
        mut nodes,
        client,
        leader: (lid, _),
    } = in_process_cluster(dir, "dlog/power-cut").await;
    let term = settle(&nodes, &client, lid).await;
    let li = (lid - 1) as usize;
    let mut acked = Vec::new();
    for i in 0..20 {
        append_acked(&client, &mut acked, format!("synced everywhere {i}")).await;
    }
    // Idle: every node applied and checkpointed everything, the leader's
    // flusher has long synced its log. Its image now is what its disk holds.
    let size = acked.last().unwrap().0 + 1;
    all_nodes(&nodes, "idle and checkpointed", |st| {
        st.ledger_size >= size && st.checkpoint_size == st.ledger_size
    })
    .await;
    // Followers too report how old their latest checkpoint is.
    for n in &nodes {
        let m = n.metrics_text();
        let age: f64 = m
            .lines()
            .find_map(|l| l.strip_prefix("dlog_checkpoint_age_seconds "))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{m}"));
        assert!((0.0..20.0).contains(&age), "{m}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let data = match cut {
        PowerCut::Everything => configs[li].data_dir.clone(),
        PowerCut::RaftLogOnly => configs[li].data_dir.join("raft"),
    };
    let image = dir.join("leader-image");
    copy_dir(&data, &image);

    // Its disk stalls; the followers commit under its term.
    nodes[li].hold_log_flushes(true);
    for i in 0..20 {
        append_acked(
            &client,
            &mut acked,
            format!("committed, leader not durable {i}"),
        )
        .await;
    }
    if let PowerCut::RaftLogOnly = cut {
        all_nodes(&nodes, "applied the appends", |st| {
            st.ledger_size >= size + 20
        })
        .await;
    }
    let old = nodes.remove(li);
    old.hold_log_flushes(false);
    old.shutdown().await;
    // The power cut: nothing written after the image survives.
    std::fs::remove_dir_all(&data).unwrap();
    copy_dir(&image, &data);

    let restarted = restart_old_leader(&configs[li], lid, term).await;
    if let PowerCut::RaftLogOnly = cut {
        // The case under test: its ledger (loaded before any new leader
        // exists to replicate to it) is ahead of its Raft log.
        let st = restarted.status();
        assert!(st.ledger_size >= size + 20, "ledger lost its sync: {st:?}");
    }
    nodes.insert(li, restarted);
    all_nodes(&nodes, "a leader of a newer term", |st| {
        st.term > term && st.leader.is_some()
    })
    .await;
    for i in 0..20 {
        append_acked(&client, &mut acked, format!("after the power cut {i}")).await;
    }
    let size = acked.last().unwrap().0 + 1;
    all_nodes(&nodes, "every append applied", |st| {
        st.ledger_size >= size && st.diverged.is_none()
    })
    .await;
    for n in nodes {
        n.shutdown().await;
    }
    let node_dirs: Vec<PathBuf> = configs
        .iter()
        .map(|c| c.data_dir.parent().unwrap().to_path_buf())
        .collect();
    let a = segments(&node_dirs[0]);
    for n in &node_dirs[1..] {
        assert_eq!(segments(n), a, "{} differs", n.display());
    }
    for n in &node_dirs {
        let l = open_ro(n);
        assert_eq!(l.size(), size, "{}: extra or missing entries", n.display());
        for (idx, p) in &acked {
            let e = l.entry(*idx).unwrap();
            let (_, _, got) = dlog_ledger::entry::decode_ref(&e).unwrap();
            assert_eq!(
                got,
                p.as_bytes(),
                "{}: acknowledged entry {idx} changed or lost",
                n.display()
            );
        }
    }
}

/// Appends `p` and records it with the index it was acknowledged at.
async fn append_acked(client: &Client, acked: &mut Vec<(u64, String)>, p: String) {
    let r = client
        .append(&[(EntryKind::Data, p.as_bytes())])
        .await
        .expect("append");
    acked.push((r.first, p));
}

/// Copies a directory tree (regular files and directories only).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let ty = e.file_type().unwrap();
        if ty.is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else if ty.is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Starts a stopped leader again from `cfg` (retrying the bind: the old
/// endpoint may hold its UDP port a moment after shutdown), waits until it
/// has loaded its vote, and checks that it did not resume term `term` as
/// leader `lid` without an election (a newer leader needs >= 2.25 s, so the
/// check runs well before one could exist).
async fn restart_old_leader(
    cfg: &dlog_node::config::NodeConfig,
    lid: u64,
    term: u64,
) -> dlog_node::RunningNode {
    let t0 = Instant::now();
    let restarted = loop {
        match dlog_node::start_with(cfg.clone(), None).await {
            Ok(n) => break n,
            Err(e) if t0.elapsed() < Duration::from_secs(5) => {
                eprintln!("restart: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("restart: {e}"),
        }
    };
    let t0 = Instant::now();
    let mut st = restarted.status();
    while st.term < term && t0.elapsed() < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(10)).await;
        st = restarted.status();
    }
    assert!(
        st.term >= term,
        "restarted node did not load its state: {st:?}"
    );
    assert!(
        !(st.term == term && st.leader == Some(lid)),
        "restarted leader resumed term {term} without an election: {st:?}"
    );
    restarted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_leader_stops_acknowledging_and_its_tail_is_discarded() {
    let (_tmp, dir) = test_dir();
    let dir = dir.as_path();
    let InProcess {
        nodes,
        client,
        leader: (lid, lname),
        ..
    } = in_process_cluster(dir, "dlog/partition").await;
    let mut acked = Vec::new();
    for i in 0..50u32 {
        let p = format!("before {i}").into_bytes();
        acked.push((
            client.append(&[(EntryKind::Data, &p)]).await.unwrap().first,
            p,
        ));
    }
    // Every follower has caught up (and knows the leader).
    all_nodes(&nodes, "caught up", |st| st.ledger_size >= 50).await;
    // Cut the leader off from both followers, both ways.
    let names: Vec<String> = (1..=3).map(|i| format!("node-{i}")).collect();
    let others: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| *n != lname)
        .collect();
    let li = (lid - 1) as usize;
    nodes[li].partition(&others);
    for (i, n) in nodes.iter().enumerate() {
        if i != li {
            n.partition(&[lname.as_str()]);
        }
    }
    // A follower does not hold a client's append for a leader it no longer
    // hears: after `election_min_ms` (750) of silence it answers a
    // retryable NoLeader (before: the forward waited 15 s, and the client's
    // attempt timed out on a healthy node).
    let t = Instant::now();
    let r = client
        .call_node_within(
            others[0],
            dlog_node::rpc::Call::Append {
                items: vec![(EntryKind::Data, b"via a follower".to_vec())].into(),
                tag: None,
            },
            Duration::from_secs(5),
        )
        .await;
    let took = t.elapsed();
    assert!(
        matches!(&r, Err(dlog_client::Error::Remote(e)) if e.code == ErrorCode::NoLeader),
        "{r:?}"
    );
    assert!(took < Duration::from_secs(2), "NoLeader after {took:?}");
    eprintln!("a follower refused to forward to the silent leader after {took:?}: {r:?}");
    // The minority leader does not acknowledge.
    let lost = b"written to the minority".to_vec();
    let r = client
        .call_node_within(
            &lname,
            dlog_node::rpc::Call::Append {
                items: vec![(EntryKind::Data, lost.clone())].into(),
                tag: None,
            },
            Duration::from_secs(3),
        )
        .await;
    assert!(r.is_err(), "minority acknowledged: {r:?}");
    // The majority elects and goes on (the client skips the old leader).
    let t0 = Instant::now();
    for i in 0..50u32 {
        let p = format!("after {i}").into_bytes();
        acked.push((
            client.append(&[(EntryKind::Data, &p)]).await.unwrap().first,
            p,
        ));
    }
    eprintln!(
        "majority served 50 appends {:?} after the partition",
        t0.elapsed()
    );
    // Heal: the old leader steps down and takes the majority's log.
    for n in &nodes {
        n.heal();
    }
    let a = client
        .append(&[(EntryKind::Data, b"healed")])
        .await
        .unwrap();
    let want = a.first + 1;
    all_nodes(&nodes, "converged", |st| st.ledger_size >= want).await;
    for n in nodes {
        n.shutdown().await;
    }
    let dirs = cluster::node_dirs(dir).unwrap();
    let l = open_ro(&dirs[li]);
    for (idx, p) in &acked {
        let e = l.entry(*idx).unwrap();
        assert_eq!(dlog_ledger::entry::decode_ref(&e).unwrap().2, p.as_slice());
    }
    for i in 0..l.size() {
        let e = l.entry(i).unwrap();
        assert_ne!(
            dlog_ledger::entry::decode_ref(&e).unwrap().2,
            lost.as_slice(),
            "unacknowledged tail kept"
        );
    }
    let first = segments(&dirs[0]);
    for d in &dirs[1..] {
        assert_eq!(segments(d), first);
    }
}

/// Exactly-once appends: copies of one tagged append (a client retrying
/// after a lost answer, sent concurrently, through followers, after a
/// restart of every node) are stored once and all answered with the first
/// copy's place; a copy from below the session's floor is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_append_is_stored_once() {
    use dlog_node::rpc::{Call, ErrorCode, Reply};
    use dlog_node::session::SessionTag;
    let (_tmp, dir) = test_dir();
    let dir = dir.as_path();
    let InProcess {
        configs,
        mut nodes,
        client,
        ..
    } = in_process_cluster(dir, "dlog/once").await;
    let names = client.node_names();
    let send = |node: String, payload: &'static [u8], seq: u64, floor: u64| {
        let client = &client;
        async move {
            let call = || Call::Append {
                items: vec![(EntryKind::Data, payload.to_vec())].into(),
                tag: Some(SessionTag {
                    session: 0x5e55_1011,
                    seq,
                    floor,
                }),
            };
            // Followers forward to the leader. A node that knows no leader
            // yet (just elected, just restarted) gets the same tag again,
            // as the client library would resend it.
            let end = Instant::now() + Duration::from_secs(20);
            loop {
                match client.call_node(&node, call()).await {
                    Ok(Reply::Appended { first, count, .. }) => return Ok((first, count)),
                    Ok(r) => panic!("unexpected answer {r:?}"),
                    Err(dlog_client::Error::Remote(e))
                        if matches!(e.code, ErrorCode::NoLeader | ErrorCode::NotLeader)
                            && Instant::now() < end =>
                    {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    };
    client
        .append(&[(EntryKind::Data, b"untagged")])
        .await
        .unwrap();
    // The same tag, five copies at once through all three nodes.
    let copies = (0..5).map(|i| send(names[i % 3].clone(), b"once", 1, 1));
    let got: Vec<(u64, u64)> = futures::future::join_all(copies)
        .await
        .into_iter()
        .map(|r| r.expect("a copy is answered"))
        .collect();
    assert!(got.iter().all(|g| *g == got[0]), "copies answered {got:?}");
    assert_eq!(got[0].1, 1);
    // Later copies, one after the other, through each node.
    for n in &names {
        assert_eq!(send(n.clone(), b"once", 1, 1).await.unwrap(), got[0]);
    }
    let second = send(names[1].clone(), b"twice", 2, 1).await.unwrap();
    assert_eq!(second.0, got[0].0 + 1);
    // Every node restarts: the session table is part of the applied state.
    for n in nodes.drain(..) {
        n.shutdown().await;
    }
    for cfg in &configs {
        nodes.push(dlog_node::start(cfg.clone()).await.unwrap());
    }
    cluster::wait_for_leader(&client, Duration::from_secs(20))
        .await
        .unwrap();
    let again = async {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            match send(names[2].clone(), b"once", 1, 1).await {
                Ok(r) => return r,
                Err(e) if Instant::now() < end => {
                    eprintln!("retrying after restart: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("no answer after restart: {e}"),
            }
        }
    };
    assert_eq!(again.await, got[0], "a copy after the restart");
    // Seq 3 says everything below 3 was acknowledged: seq 1 is now stale.
    let third = send(names[0].clone(), b"thrice", 3, 3).await.unwrap();
    assert_eq!(third.0, second.0 + 1);
    let stale = send(names[0].clone(), b"once", 1, 1).await.unwrap_err();
    match &stale {
        dlog_client::Error::Remote(e) => {
            assert_eq!(e.code, ErrorCode::BadRequest, "{}", e.message);
            assert!(e.message.contains("floor"), "{}", e.message);
        }
        e => panic!("stale copy: {e:?}"),
    }
    let size = third.0 + 1;
    wait_sizes(&client, &names, size, Duration::from_secs(20)).await;
    // Every replica counts the copies it recognised since its restart: at
    // least the one after the restart and the stale one (a replay of the
    // log after the restart may recognise earlier ones again).
    for n in &nodes {
        let m = n.metrics_text();
        let count: u64 = m
            .lines()
            .find_map(|l| l.strip_prefix("dlog_duplicate_appends_total "))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{m}"));
        assert!(count >= 2, "{m}");
    }
    for n in nodes {
        n.shutdown().await;
    }
    // Each payload is in the log exactly once, on every replica.
    for d in cluster::node_dirs(dir).unwrap() {
        let l = open_ro(&d);
        assert_eq!(l.size(), size);
        let mut seen = std::collections::BTreeMap::new();
        for i in 0..l.size() {
            let e = l.entry(i).unwrap();
            let p = dlog_ledger::entry::decode_ref(&e).unwrap().2.to_vec();
            *seen.entry(p).or_insert(0) += 1;
        }
        for p in [&b"untagged"[..], b"once", b"twice", b"thrice"] {
            assert_eq!(seen.get(p), Some(&1), "{}: {:?}", d.display(), seen);
        }
    }
}
