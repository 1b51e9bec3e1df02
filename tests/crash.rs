//! Crash safety: a real `dlog append --lines` is killed with SIGKILL at random
//! moments, again and again. After every kill the log must hold every
//! acknowledged entry unchanged, and every new checkpoint must be consistent
//! with every earlier one.

mod common;
use common::*;
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KILLS: usize = 60;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The stored checkpoint's size and root, and the log's durable size.
fn checkpoint_and_size(d: &std::path::Path) -> ((u64, [u8; 32]), u64) {
    let j = json_lines(&expect(d, &["checkpoint", "--json"], None, 0)).remove(0);
    (
        (
            j["size"].as_u64().unwrap(),
            b64(j["root"].as_str().unwrap()).try_into().unwrap(),
        ),
        j["log_size"].as_u64().unwrap(),
    )
}

fn checkpoint(d: &std::path::Path) -> (u64, [u8; 32]) {
    checkpoint_and_size(d).0
}

#[test]
fn kill_9_loses_no_acknowledged_entry() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test seed {seed}");
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    // Small segments, so kills also land while sealing.
    expect(&d, &["init", "--segment-bits", "7"], None, 0);
    // Every entry known to be in the log, with its text: acknowledged ones, and
    // unacknowledged ones found durable after a kill.
    let mut acked: Vec<(u64, String)> = Vec::new();
    // One past the highest acknowledged index.
    let mut confirmed = 0u64;
    let mut checkpoints = vec![checkpoint(&d)];
    let started = Instant::now();
    for round in 0..KILLS {
        let mut child = dlog(&d)
            .args(["append", "--lines", "--json"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let written = Arc::new(Mutex::new(Vec::<String>::new()));
        let w = written.clone();
        let writer = std::thread::spawn(move || {
            for j in 0.. {
                let line = format!("round {round} line {j} {}", "x".repeat(j % 50));
                w.lock().unwrap().push(line.clone());
                if stdin.write_all(format!("{line}\n").as_bytes()).is_err() {
                    break;
                }
                if j % 64 == 0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        });
        let reader = std::thread::spawn(move || {
            // An acknowledgement is a whole line; a kill may cut the last one.
            let mut acks = Vec::new();
            let mut out = BufReader::new(stdout);
            let mut line = Vec::new();
            while out.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
                if line.last() != Some(&b'\n') {
                    break;
                }
                let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
                acks.push(v["index"].as_u64().unwrap());
                line.clear();
            }
            acks
        });
        std::thread::sleep(Duration::from_millis(5 + rng.next() % 60));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        writer.join().unwrap();
        let acks = reader.join().unwrap();
        let written = written.lock().unwrap();
        // The k-th acknowledgement of this run is the k-th line written.
        let first_new = acked.len() as u64;
        for (k, idx) in acks.iter().enumerate() {
            assert_eq!(
                *idx,
                first_new + k as u64,
                "round {round}: acks must be dense"
            );
            acked.push((*idx, written[k].clone()));
            confirmed = idx + 1;
        }
        // Every acknowledged entry is there, unchanged.
        let ((size, root), log_size) = checkpoint_and_size(&d);
        assert!(
            size >= confirmed,
            "round {round}: checkpoint {size} < acknowledged {confirmed}"
        );
        assert!(log_size >= size);
        assert_entries(&d, &acked[first_new as usize..]);
        // Unacknowledged tail entries may survive (they were durable before the
        // kill), but only as the lines that were written, in order.
        if log_size > acked.len() as u64 {
            let extra = json_lines(&expect(
                &d,
                &[
                    "get",
                    &acked.len().to_string(),
                    "--count",
                    &(log_size - acked.len() as u64).to_string(),
                    "--json",
                ],
                None,
                0,
            ));
            for (k, g) in extra.iter().enumerate() {
                let text = written[acks.len() + k].clone();
                assert_eq!(g["text"].as_str().unwrap(), text);
                acked.push((g["index"].as_u64().unwrap(), text));
            }
        }
        // The new checkpoint is consistent with every earlier one.
        for &(old, old_root) in checkpoints.iter().rev().take(3).chain(checkpoints.first()) {
            let j = json_lines(&expect(
                &d,
                &[
                    "proof",
                    "consistency",
                    "--from",
                    &old.to_string(),
                    "--to",
                    &size.to_string(),
                    "--json",
                ],
                None,
                0,
            ))
            .remove(0);
            let proof: Vec<[u8; 32]> = j["proof"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| b64(v.as_str().unwrap()).try_into().unwrap())
                .collect();
            dlog_crypto::tree::verify_consistency::<dlog_crypto::Blake3Hasher>(
                old, size, &old_root, &root, &proof,
            )
            .unwrap_or_else(|e| {
                panic!("round {round}: checkpoint {size} inconsistent with {old}: {e}")
            });
        }
        checkpoints.push((size, root));
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "crash test over its time budget"
        );
    }
    // Finally: everything re-reads clean and every acknowledged entry is intact.
    let report = expect(&d, &["scrub"], None, 0);
    assert!(report.contains("0 problem"), "{report}");
    assert_entries(&d, &acked);
    eprintln!(
        "{KILLS} kills, {} entries acknowledged and intact",
        acked.len()
    );
}
