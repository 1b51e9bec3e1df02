//! The `dlog` binary against a real 3-node cluster on loopback: separate node
//! processes, every byte inside WireGuard, receipts verified offline.

mod common;
use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// Stops the cluster's processes even when an assertion fails.
struct Down<'a>(&'a Path);
impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = run(self.0, &["cluster", "down"], None);
    }
}

fn leader_pid(dir: &Path) -> (String, u32) {
    let st = json_lines(&expect(dir, &["cluster", "status", "--json"], None, 0)).remove(0);
    let node = st["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["status"]["state"] == "leader")
        .expect("a leader")
        .clone();
    let name = node["name"].as_str().unwrap().to_string();
    let pid = std::fs::read_to_string(dir.join(&name).join("node.pid")).unwrap();
    (name, pid.trim().parse().unwrap())
}

#[test]
fn cluster_appends_receipts_failover_and_membership() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    expect(
        &dir,
        &[
            "cluster",
            "up",
            "--nodes",
            "3",
            "--spare",
            "1",
            "--segment-bits",
            "6",
        ],
        None,
        0,
    );
    let _down = Down(&dir);
    let client = dir.join("client.toml");
    let trust = dir.join("trust.toml");
    let c = client.to_str().unwrap();
    let nowhere = tmp.path().join("nowhere");

    // Appends through the tunnel; a receipt carries a majority of voter signatures.
    let r = tmp.path().join("r.tlog-proof");
    let i = expect(
        &nowhere,
        &[
            "--cluster",
            c,
            "append",
            "first",
            "--receipt",
            r.to_str().unwrap(),
        ],
        None,
        0,
    );
    assert_eq!(i.trim(), "0");
    let ok = expect(
        &nowhere,
        &[
            "verify",
            "--trust",
            trust.to_str().unwrap(),
            r.to_str().unwrap(),
            "--json",
        ],
        None,
        0,
    );
    let v = json_lines(&ok).remove(0);
    assert!(v["signers"].as_array().unwrap().len() >= 2, "{v}");
    let lines: String = (0..500).map(|k| format!("bulk {k}\n")).collect();
    let out = expect(
        &nowhere,
        &["--cluster", c, "append", "--lines"],
        Some(lines.as_bytes()),
        0,
    );
    assert_eq!(out.lines().count(), 500);
    // A linearizable checkpoint is current; one from any node says how
    // stale it may be.
    let cp = |extra: &[&str]| {
        let mut args = vec!["--cluster", c, "checkpoint", "--json"];
        args.extend_from_slice(extra);
        json_lines(&expect(&nowhere, &args, None, 0)).remove(0)
    };
    assert_eq!(cp(&[])["behind_ms"], 0, "{}", cp(&[]));
    let any = cp(&["--any-node"]);
    assert!(
        any["behind_ms"].is_u64() || any["behind_ms"].is_null(),
        "{any}"
    );
    assert!(any["size"].as_u64().unwrap() >= 1, "{any}");

    // Kill -9 the leader: a new leader serves writes, nothing acknowledged is lost.
    let (old_leader, pid) = leader_pid(&dir);
    // SAFETY: kill(2) on a pid our cluster started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let started = Instant::now();
    let mut appended = None;
    while started.elapsed() < Duration::from_secs(30) {
        let o = run(
            &nowhere,
            &["--cluster", c, "append", "after failover"],
            None,
        );
        if o.status.success() {
            appended = Some(String::from_utf8_lossy(&o.stdout).trim().to_string());
            break;
        }
    }
    let index: u64 = appended
        .expect("writes resume after the leader is killed")
        .parse()
        .unwrap();
    eprintln!(
        "writes resumed {:?} after killing {old_leader}",
        started.elapsed()
    );
    assert!(index >= 501);
    let got = json_lines(&expect(
        &nowhere,
        &["--cluster", c, "get", "1", "--count", "500", "--json"],
        None,
        0,
    ));
    for (k, g) in got.iter().enumerate() {
        assert_eq!(g["text"].as_str().unwrap(), format!("bulk {k}"));
    }
    // Consistency from the first receipt's tree to now.
    let j = json_lines(&expect(
        &nowhere,
        &[
            "--cluster",
            c,
            "proof",
            "consistency",
            "--from",
            "1",
            "--json",
        ],
        None,
        0,
    ))
    .remove(0);
    assert_eq!(j["old_size"], 1);

    // Restart the killed node; add the spare node; both catch up.
    let node_dir = dir.join(&old_leader);
    let exe = env!("CARGO_BIN_EXE_dlog");
    let log = std::fs::File::create(node_dir.join("restart.log")).unwrap();
    let mut restarted = std::process::Command::new(exe)
        .args(["node", "run", "--config"])
        .arg(node_dir.join("node.toml"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    std::fs::write(node_dir.join("node.pid"), restarted.id().to_string()).unwrap();
    // The trust file a verifier was handed before the membership changes.
    let held = tmp.path().join("held-trust.toml");
    std::fs::copy(&trust, &held).unwrap();
    expect(&dir, &["cluster", "add-node", "--timeout", "60"], None, 0);
    // The trust file grew by node-4's key, quorum unchanged; nothing left it.
    let t = std::fs::read_to_string(&trust).unwrap();
    for n in ["node-1+", "node-2+", "node-3+", "node-4+"] {
        assert!(t.contains(n), "{n} missing from trust.toml:\n{t}");
    }
    assert!(t.contains("quorum = 2"), "{t}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = json_lines(&expect(&dir, &["cluster", "status", "--json"], None, 0)).remove(0);
        // add-node listed node-4 in client.toml once it had caught up and
        // was promoted: status shows all four.
        let nodes = st["nodes"].as_array().unwrap();
        let caught_up = nodes.iter().all(|n| {
            n["status"]["ledger_size"]
                .as_u64()
                .is_some_and(|s| s > index)
        });
        let four_voters = nodes
            .iter()
            .any(|n| n["status"]["voters"] == serde_json::json!([1, 2, 3, 4]));
        if nodes.len() == 4 && caught_up && four_voters {
            break;
        }
        assert!(Instant::now() < deadline, "nodes did not catch up: {st}");
        std::thread::sleep(Duration::from_millis(300));
    }
    // A receipt after all that still verifies offline.
    let r2 = tmp.path().join("r2.tlog-proof");
    expect(
        &nowhere,
        &[
            "--cluster",
            c,
            "proof",
            "inclusion",
            &index.to_string(),
            "--out",
            r2.to_str().unwrap(),
        ],
        None,
        0,
    );
    // ... with the trust file after the change and with the one held before.
    for t in [&trust, &held] {
        expect(
            &nowhere,
            &[
                "verify",
                "--trust",
                t.to_str().unwrap(),
                r2.to_str().unwrap(),
            ],
            None,
            0,
        );
    }
    // Remove a voter: the rest keeps serving writes. Its key stays in the
    // trust file (receipts it signed keep verifying), and it never runs again.
    let out = expect(&dir, &["cluster", "remove-node", "node-2"], None, 0);
    assert!(out.contains("node-2 removed"), "{out}");
    assert!(std::fs::read_to_string(&trust).unwrap().contains("node-2+"));
    assert!(dir.join("node-2").join("removed").exists());
    let r3 = tmp.path().join("r3.tlog-proof");
    expect(
        &nowhere,
        &[
            "--cluster",
            c,
            "append",
            "after removal",
            "--receipt",
            r3.to_str().unwrap(),
        ],
        None,
        0,
    );
    // Every receipt, from before and after both changes, verifies with the
    // trust file of today; the first one with the trust file held before.
    for r in [&r, &r2, &r3] {
        expect(
            &nowhere,
            &[
                "verify",
                "--trust",
                trust.to_str().unwrap(),
                r.to_str().unwrap(),
            ],
            None,
            0,
        );
    }
    expect(
        &nowhere,
        &[
            "verify",
            "--trust",
            held.to_str().unwrap(),
            r.to_str().unwrap(),
        ],
        None,
        0,
    );
    // A removal that would leave fewer listed voters than the trust file's
    // quorum (here: a trust file asking for 3, two voters would remain) is
    // refused before the membership changes.
    let today = std::fs::read_to_string(&trust).unwrap();
    std::fs::write(&trust, today.replace("quorum = 2", "quorum = 3")).unwrap();
    let e = expect_err(&dir, &["cluster", "remove-node", "node-3"], None, 2);
    assert!(e.contains("fewer than its quorum of 3"), "{e}");
    std::fs::write(&trust, &today).unwrap();
    assert!(!dir.join("node-3").join("removed").exists());
    // Local-only verbs refuse clearly through --cluster.
    let e = expect_err(&nowhere, &["--cluster", c, "scrub"], None, 2);
    assert!(e.contains("local data directory"), "{e}");
    drop(_down);
    let _ = restarted.wait();
}

/// `dlog bench --cluster` with tiny sizes and no etcd: exits 0, prints its
/// figures as JSON, and leaves no node process or directory behind.
#[test]
fn bench_cluster_smoke() {
    let tmp = tempfile::tempdir().unwrap();
    let nowhere = tmp.path().join("nowhere");
    let out = expect(
        &nowhere,
        &[
            "bench",
            "--cluster",
            "--no-etcd",
            "--json",
            "--seconds",
            "0.3",
            "--warmup",
            "0.1",
            "--batch",
            "10",
            "--in-flight",
            "2",
            "--appenders",
            "4",
            "--scratch",
            tmp.path().to_str().unwrap(),
        ],
        None,
        0,
    );
    let j = json_lines(&out).remove(0);
    assert_eq!(j["mode"], "cluster", "{j}");
    for key in [
        "cluster.batch_entries_per_s",
        "cluster.batch_p50_us",
        "cluster.batch_p99_us",
        "cluster.concurrent_appends_per_s",
        "cluster.concurrent_p50_us",
        "cluster.concurrent_p99_us",
        "cluster.single_p50_us",
        "cluster.single_p99_us",
        "cluster.receipt_p50_us",
        "cluster.receipt_p99_us",
    ] {
        assert!(j[key].as_f64().is_some_and(|v| v > 0.0), "{key} in {j}");
    }
    for (key, target) in [
        ("cluster.batch_entries_per_s", ">= 300000"),
        ("cluster.concurrent_appends_per_s", ">= 20000"),
        ("cluster.concurrent_p99_us", "<= 30000"),
        ("cluster.single_p50_us", "<= 1000"),
        ("cluster.receipt_p99_us", "<= 50000"),
    ] {
        assert_eq!(j["targets"][key]["target"], target, "{j}");
        assert!(j["targets"][key]["met"].is_boolean(), "{j}");
    }
    assert_eq!(j["etcd"]["skipped"], "--no-etcd");
    let pids = j["node_pids"].as_array().unwrap();
    assert_eq!(pids.len(), 3);
    for p in pids {
        // Gone, or at most a zombie; and never still running a bench node.
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", p.as_u64().unwrap()));
        let running =
            cmdline.is_ok_and(|c| String::from_utf8_lossy(&c).contains("dlog-bench-cluster"));
        assert!(!running, "node process {p} is still running");
    }
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("dlog-bench-cluster")
        })
        .collect();
    assert!(left.is_empty(), "bench directory left behind");

    // `--cluster` takes no value for bench, and needs one elsewhere.
    let e = expect_err(&nowhere, &["bench", "--cluster", "x.toml"], None, 2);
    assert!(e.contains("takes no client.toml"), "{e}");
    let e = expect_err(&nowhere, &["get", "0", "--cluster"], None, 2);
    assert!(e.contains("needs the cluster's client.toml"), "{e}");
}

/// The status of an auditor, from `dlog auditor status --json`.
fn auditor_status(dir: &Path, n: u32) -> (serde_json::Value, i32) {
    let cfg = dir.join(format!("auditor-{n}/auditor.toml"));
    let out = run(
        dir,
        &[
            "auditor",
            "status",
            "--config",
            cfg.to_str().unwrap(),
            "--json",
        ],
        None,
    );
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "auditor status: {e}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (v, out.status.code().unwrap_or(-1))
}

/// `dlog --cluster CLIENT append TEXT --receipt OUT`, then `dlog verify
/// --trust TRUST OUT --json`: the index printed and the verification.
fn append_verified(
    client: &Path,
    trust: &Path,
    text: &str,
    out: &Path,
) -> (String, serde_json::Value) {
    let nowhere = out.with_extension("nowhere");
    let (c, r) = (client.to_str().unwrap(), out.to_str().unwrap());
    let i = expect(
        &nowhere,
        &["--cluster", c, "append", text, "--receipt", r],
        None,
        0,
    );
    let t = trust.to_str().unwrap();
    let v = expect(&nowhere, &["verify", "--trust", t, r, "--json"], None, 0);
    (i.trim().to_string(), json_lines(&v).remove(0))
}

/// Waits (bounded) until `check` holds for both auditors' statuses.
fn wait_auditors(dir: &Path, what: &str, check: impl Fn(&serde_json::Value) -> bool) {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let st: Vec<_> = (1..=2).map(|n| auditor_status(dir, n).0).collect();
        if st.iter().all(&check) {
            return;
        }
        assert!(Instant::now() < end, "auditors: {what}: {st:#?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `cluster up --auditors 2 --cosignatures 2`: two auditor processes follow
/// the log through their own tunnels, receipts carry both cosignatures and
/// verify offline under a trust file that requires them, and a byte flipped
/// in one node's stored segment after it was verified is caught by the
/// auditors' re-reads and named by node.
#[test]
fn auditors_cosign_receipts_and_catch_a_flipped_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let nowhere = tmp.path().join("nowhere");
    let out = expect(
        &dir,
        &[
            "cluster",
            "up",
            "--auditors",
            "2",
            "--cosignatures",
            "2",
            "--segment-bits",
            "6",
        ],
        None,
        0,
    );
    let _down = Down(&dir);
    assert!(out.contains("auditor-2/auditor.toml"), "{out}");
    let c = dir.join("client.toml");
    let c = c.to_str().unwrap();
    let trust = dir.join("trust.toml");

    let lines: String = (0..300).map(|k| format!("audited {k:03}\n")).collect();
    expect(
        &nowhere,
        &["--cluster", c, "append", "--lines"],
        Some(lines.as_bytes()),
        0,
    );
    let r = tmp.path().join("r.tlog-proof");
    let (i, v) = append_verified(&dir.join("client.toml"), &trust, "last", &r);
    assert_eq!(i, "300");
    let mut names: Vec<_> = v["cosignatures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["auditor-1", "auditor-2"], "{v}");
    // The same receipt without its cosignatures fails that trust file.
    let text = std::fs::read_to_string(&r).unwrap();
    let stripped: String = text
        .lines()
        .filter(|l| !l.starts_with("— auditor-"))
        .map(|l| format!("{l}\n"))
        .collect();
    let r2 = tmp.path().join("stripped.tlog-proof");
    std::fs::write(&r2, stripped).unwrap();
    let e = expect_err(
        &nowhere,
        &[
            "verify",
            "--trust",
            trust.to_str().unwrap(),
            r2.to_str().unwrap(),
        ],
        None,
        1,
    );
    assert!(e.contains("cosignature"), "{e}");

    // Both auditors verified every entry and re-read every node's copy.
    wait_auditors(&dir, "verify 301 entries and re-read all nodes", |s| {
        s["size"] == 301
            && s["alarm"].is_null()
            && ["node-1", "node-2", "node-3"]
                .iter()
                .all(|n| s["sweeps"][n]["ok"] == true && s["sweeps"][n]["size"] == 301)
    });
    let st = json_lines(&expect(&dir, &["cluster", "status", "--json"], None, 0)).remove(0);
    let auditors = st["auditors"].as_array().unwrap();
    assert_eq!(auditors.len(), 2, "{st}");
    assert!(
        auditors
            .iter()
            .all(|a| a["verified"] == 301 && a["alarm"].is_null()),
        "{st}"
    );
    for n in 1..=2 {
        let (s, code) = auditor_status(&dir, n);
        assert_eq!(code, 0, "{s}");
        assert!(s["cosigned"]["size"].as_u64().unwrap() >= 301, "{s}");
        // (Incidents may come from a slow moment on a busy machine; none
        // is about a replica's bytes.)
        let bad = s["incidents"].as_array().unwrap().iter().any(|i| {
            let d = i["detail"].as_str().unwrap_or("");
            d.contains("orrupt") || d.contains("another root") || d.contains("bad entry")
        });
        assert!(!bad, "{s}");
    }

    // Rot one byte of node-2's first sealed segment (entry "audited 017").
    // In place, one byte, as rot would: node-2 keeps the file mapped.
    let seg = dir.join("node-2/data/ledger/segments/00000000000000000000.seg");
    let bytes = std::fs::read(&seg).unwrap();
    let at = bytes
        .windows(11)
        .position(|w| w == b"audited 017")
        .expect("the entry in the segment");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all_at(&[bytes[at + 8] ^ 0x01], (at + 8) as u64)
            .unwrap();
    }
    wait_auditors(&dir, "name node-2's entry 17 in an incident", |s| {
        s["sweeps"]["node-2"]["ok"] == false
            && s["incidents"].as_array().unwrap().iter().any(|i| {
                i["node"] == "node-2" && i["detail"].as_str().unwrap_or("").contains("entry 17")
            })
    });
    let node2: i32 = std::fs::read_to_string(dir.join("node-2/node.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: kill(2) with signal 0 only checks that our node-2 still runs.
    assert_eq!(unsafe { libc::kill(node2, 0) }, 0, "node-2 died");
    // One replica's rot is not the log's fault: no alarm, still healthy,
    // and the other nodes' copies still check out.
    for n in 1..=2 {
        let (s, code) = auditor_status(&dir, n);
        assert_eq!(code, 0, "{s}");
        assert!(s["alarm"].is_null(), "{s}");
        assert_eq!(s["sweeps"]["node-1"]["ok"], true, "{s}");
    }
    let text = expect(
        &dir,
        &[
            "auditor",
            "status",
            "--config",
            dir.join("auditor-1/auditor.toml").to_str().unwrap(),
        ],
        None,
        0,
    );
    assert!(
        text.contains("node-2: ") && text.contains("FAILED"),
        "{text}"
    );

    // Kill -9 the leader: the auditors follow the new one (their
    // cosignatures go to the leader under their own keys, redirected by
    // followers), and a new receipt carries both cosignatures again.
    let (old_leader, pid) = leader_pid(&dir);
    // SAFETY: kill(2) on a pid our cluster started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    // An election, a checkpoint and both auditors noticing the new leader
    // take a few seconds: give this client a longer deadline.
    let slow = dir.join("client-slow.toml");
    let mut text = std::fs::read_to_string(dir.join("client.toml")).unwrap();
    text.push_str("timeout_ms = 45000\n");
    std::fs::write(&slow, text).unwrap();
    let r3 = tmp.path().join("r3.tlog-proof");
    let (i, v) = append_verified(&slow, &trust, "after failover", &r3);
    assert_eq!(i, "301");
    assert_eq!(v["cosignatures"].as_array().unwrap().len(), 2, "{v}");
    assert!(
        !v["signers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == old_leader.as_str()),
        "{v}"
    );

    // A replica forged consistently: entry 40's payload changed, its frame
    // CRC and its leaf and parent hashes in the segment's node file
    // recomputed, so the node's own checks pass and it serves the forged
    // entry. Only the auditors' recomputation from the entries can tell;
    // they name the node.
    let forged = ["node-3", "node-1"]
        .into_iter()
        .find(|n| *n != old_leader)
        .unwrap();
    forge_entry(&dir.join(forged).join("data/ledger/segments"), 40, 6);
    wait_auditors(&dir, "name the forged copy", |s| {
        s["sweeps"][forged]["ok"] == false
            && s["incidents"].as_array().unwrap().iter().any(|i| {
                i["node"] == forged && i["detail"].as_str().unwrap_or("").contains("another root")
            })
    });
    for n in 1..=2 {
        let (s, code) = auditor_status(&dir, n);
        assert_eq!(code, 0, "{s}");
        assert!(s["alarm"].is_null(), "{s}");
    }
}

/// Rewrites entry `index` of segment 0 (2^`bits` entries, sealed) in
/// `segments` so that the node's own checks still pass: one payload byte,
/// the frame CRC, and the leaf and every parent hash in the `.tree` file.
fn forge_entry(segments: &Path, index: u64, bits: u32) {
    use dlog_crypto::{Blake3Hasher, TreeHasher};
    use std::os::unix::fs::FileExt;
    let seg = segments.join("00000000000000000000.seg");
    let tree = segments.join("00000000000000000000.tree");
    let bytes = std::fs::read(&seg).unwrap();
    let payload = format!("audited {index:03}");
    let p = bytes
        .windows(payload.len())
        .position(|w| w == payload.as_bytes())
        .expect("the entry in the segment");
    // frame := len u32 | crc u32 | entry; entry := 14-byte header | payload
    let entry_at = p - 14;
    let frame_at = entry_at - 8;
    let len = u32::from_be_bytes(bytes[frame_at..frame_at + 4].try_into().unwrap()) as usize;
    let mut entry = bytes[entry_at..entry_at + len].to_vec();
    entry[14 + 8] = b'X';
    let crc = dlog_ledger::segment::frame_crc(index, &entry);
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(&crc.to_be_bytes(), (frame_at + 4) as u64)
        .unwrap();
    f.write_all_at(&entry, entry_at as u64).unwrap();
    // .tree: every level of the segment, leaves first, 32 bytes a node.
    let mut nodes = std::fs::read(&tree).unwrap();
    let at = |level: u32, i: u64| -> usize {
        let before: u64 = (0..level).map(|l| (1u64 << bits) >> l).sum();
        ((before + i) * 32) as usize
    };
    let mut i = index;
    let leaf = Blake3Hasher::hash_leaf(&entry);
    nodes[at(0, i)..at(0, i) + 32].copy_from_slice(&leaf);
    for level in 1..=bits {
        i >>= 1;
        let l: [u8; 32] = nodes[at(level - 1, 2 * i)..at(level - 1, 2 * i) + 32]
            .try_into()
            .unwrap();
        let r: [u8; 32] = nodes[at(level - 1, 2 * i + 1)..at(level - 1, 2 * i + 1) + 32]
            .try_into()
            .unwrap();
        let h = Blake3Hasher::hash_children(&l, &r);
        nodes[at(level, i)..at(level, i) + 32].copy_from_slice(&h);
    }
    assert_eq!(nodes.len(), at(bits, 0) + 32, "the .tree layout");
    let t = std::fs::OpenOptions::new().write(true).open(&tree).unwrap();
    t.write_all_at(&nodes, 0).unwrap();
}
