//! Real node processes on loopback, talking only through their WireGuard tunnels.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dlog_ledger::EntryKind;
use dlog_node::client::Client;
use dlog_node::cluster::{self, ClusterSpec};

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
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let _g = up(
        dir,
        &ClusterSpec {
            nodes: 3,
            segment_bits: 6,
            origin: "dlog/test".into(),
            ..Default::default()
        },
    );
    let client = Arc::new(
        Client::open(&dir.join("client.toml"))
            .await
            .expect("client"),
    );
    let t0 = Instant::now();
    let (leader, name) = cluster::wait_for_leader(&client, Duration::from_secs(20))
        .await
        .expect("leader");
    eprintln!("leader {leader} ({name}) after {:?}", t0.elapsed());

    // 8 concurrent clients, 250 appends of 4 entries each.
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..8u32 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..250u32 {
                let p: Vec<Vec<u8>> = (0..4)
                    .map(|j| format!("w{w} i{i} j{j}").into_bytes())
                    .collect();
                let items: Vec<(EntryKind, &[u8])> =
                    p.iter().map(|x| (EntryKind::Data, x.as_slice())).collect();
                let a = c.append(&items).await.expect("append");
                assert_eq!(a.count, 4);
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
        "8000 entries in 2000 appends from 8 clients: {el:?} ({:.0} entries/s)",
        8000.0 / el.as_secs_f64()
    );
    // Every acknowledged entry is where the ack said.
    for (first, p) in acked.iter().step_by(37) {
        for (j, payload) in p.iter().enumerate() {
            let e = client.get(first + j as u64).await.unwrap();
            let (_, _, got) = dlog_ledger::entry::decode_ref(&e).unwrap();
            assert_eq!(got, payload.as_slice());
        }
    }
    // A majority-signed checkpoint that verifies with the trust file.
    let cp = client.checkpoint_covering(7999).await.expect("checkpoint");
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

    // Byte-identical segment files on all three replicas.
    let names = client.node_names();
    wait_sizes(&client, &names, 8000, Duration::from_secs(10)).await;
    let nodes = cluster::node_dirs(dir).unwrap();
    let a = segments(&nodes[0]);
    assert!(a.len() > 100, "sealed segments exist");
    for n in &nodes[1..] {
        assert_eq!(segments(n), a, "{} differs", n.display());
    }

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
}
