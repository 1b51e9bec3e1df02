//! Separate `dlog-wg-peer` processes talking over UDP on 127.0.0.1.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

fn spawn_cluster(
    n: usize,
    pq: &str,
    bytes: usize,
    extra: &[&str],
) -> (Vec<NodeSpec>, Vec<Proc>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ns = nodes(n);
    let table_path = dir.path().join("peers.toml");
    std::fs::write(&table_path, table(&ns)).unwrap();
    let mut procs = Vec::new();
    for (i, nd) in ns.iter().enumerate() {
        let key_path = dir.path().join(format!("{}.key", nd.name));
        dlog_wg::keys::write_key_file(&key_path, &nd.keys).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dlog-wg-peer"));
        cmd.arg("--key")
            .arg(&key_path)
            .arg("--table")
            .arg(&table_path)
            .arg("--listen")
            .arg(nd.udp.to_string())
            .arg("--pq")
            .arg(pq)
            .args(extra);
        for (j, other) in ns.iter().enumerate() {
            if i != j {
                cmd.arg("--check")
                    .arg(format!("{}:7000:{bytes}", other.name));
            }
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        procs.push(Proc { child, lines: rx });
    }
    (ns, procs, dir)
}

/// Waits for every process to print DONE; returns all output lines.
fn wait_done(procs: &mut [Proc], within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut all = Vec::new();
    for p in procs.iter_mut() {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match p.lines.recv_timeout(left) {
                Ok(l) if l == "DONE" => break,
                Ok(l) => all.push(l),
                Err(_) => {
                    for p in procs.iter_mut() {
                        let _ = p.child.kill();
                    }
                    panic!("peer did not finish in time; output so far: {all:?}");
                }
            }
        }
    }
    for p in procs.iter_mut() {
        drop(p.child.stdin.take());
    }
    for p in procs.iter_mut() {
        let st = p.child.wait().unwrap();
        assert!(st.success(), "peer exited with {st}");
    }
    all
}

#[test]
fn two_processes_100_mib_each_way_checksummed() {
    let (_ns, mut procs, _dir) = spawn_cluster(2, "required", 100 << 20, &[]);
    let out = wait_done(&mut procs, Duration::from_secs(90));
    eprintln!("{out:#?}");
    assert_eq!(
        out.iter().filter(|l| l.starts_with("OK ")).count(),
        2,
        "{out:?}"
    );
    assert!(!out.iter().any(|l| l.starts_with("FAIL")));
}

#[test]
fn five_processes_full_mesh() {
    let (_ns, mut procs, _dir) = spawn_cluster(5, "preferred", 1 << 20, &[]);
    let out = wait_done(&mut procs, Duration::from_secs(90));
    assert_eq!(
        out.iter().filter(|l| l.starts_with("OK ")).count(),
        20,
        "{out:?}"
    );
    assert!(!out.iter().any(|l| l.starts_with("FAIL")));
}

#[test]
fn key_file_with_open_permissions_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ns = nodes(1);
    let key_path = dir.path().join("k");
    dlog_wg::keys::write_key_file(&key_path, &ns[0].keys).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o640)).unwrap();
    }
    let table_path = dir.path().join("t.toml");
    std::fs::write(&table_path, table(&ns)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dlog-wg-peer"))
        .arg("--key")
        .arg(&key_path)
        .arg("--table")
        .arg(&table_path)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chmod 600"), "{err}");
    let _ = std::io::stdout().flush();
}
