//! `dlog bench --witness`: a `dlog witness run` process on loopback under
//! many logs' add-checkpoint requests with 1-line consistency proofs,
//! against the disk's raw fdatasync rate measured in the same run (the
//! witness makes its state durable once per cosignature).

use super::{fsync_samples, pct, Report};
use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use dlog_crypto::keys::NodeKey;
use dlog_crypto::note::{Checkpoint, SignedNote};
use dlog_crypto::HashAlg;
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// Logs submitting, and checkpoints per log (sizes 1, 2, 4, … 2^(STEPS-1):
/// each step doubles the tree, so its consistency proof is one hash).
const LOGS: usize = 256;
const STEPS: u32 = 60;
/// Client threads (each with its own keep-alive connection).
const CLIENTS: usize = 16;

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the witness benchmark in `scratch`.
pub fn run(json: bool, scratch: &Path) -> Result<ExitCode> {
    let mut r = Report {
        json,
        fields: serde_json::Map::new(),
    };
    let t = Instant::now();
    let fs = fsync_samples(&scratch.join("fsync-baseline"), Duration::from_secs(1))?;
    let fsync_rate = fs.len() as f64 / t.elapsed().as_secs_f64();
    r.line(
        "baseline.fdatasync_per_s",
        fsync_rate,
        "op/s",
        "raw 4 KiB append + fdatasync, 1 thread",
    );
    // The logs, their keys and every request body, made before timing.
    let alg = HashAlg::Sha256;
    let mut toml = String::new();
    let mut bodies: Vec<Vec<String>> = Vec::with_capacity(LOGS);
    for i in 0..LOGS {
        let origin = format!("bench.example/log-{i}");
        let key = NodeKey::generate(&origin).map_err(|e| anyhow!("{e}"))?;
        toml.push_str(&format!(
            "\n[[log]]\norigin = {origin:?}\nvkey = {:?}\n",
            key.vkey()
        ));
        let signer = key.note_signer();
        let mut root = alg.hash_leaf(origin.as_bytes());
        let mut size = 1u64;
        let mut list = Vec::with_capacity(STEPS as usize);
        let note = |size: u64, root| -> Result<String> {
            let cp = Checkpoint::new(&origin, size, root).map_err(|e| anyhow!("{e}"))?;
            let mut n = SignedNote::new(cp.to_body()).map_err(|e| anyhow!("{e}"))?;
            n.add_signature(signer.sign(&n.text));
            Ok(n.to_string())
        };
        list.push(format!("old 0\n\n{}", note(size, root)?));
        for k in 1..STEPS {
            // The tree of 2·size leaves: the old tree and a right subtree
            // of `size` leaves whose root is `right`; the proof is `right`.
            let right = alg.hash_leaf(&u64::from(k).to_be_bytes());
            let (old, new_root) = (size, alg.hash_children(&root, &right));
            size *= 2;
            root = new_root;
            list.push(format!(
                "old {old}\n{}\n\n{}",
                B64.encode(right),
                note(size, root)?
            ));
        }
        bodies.push(list);
    }
    let wdir = scratch.join("witness");
    std::fs::create_dir_all(&wdir)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    dlog_auditor::witness::config::init(
        &wdir,
        "bench.example/witness",
        Some(&format!("127.0.0.1:{port}")),
    )?;
    let config = wdir.join("witness.toml");
    let mut text = std::fs::read_to_string(&config)?;
    text.push_str(&toml);
    std::fs::write(&config, text)?;
    let exe = std::env::current_exe()?;
    let mut child = Child(
        Command::new(exe)
            .args(["witness", "run", "--config"])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start dlog witness run")?,
    );
    let mut line = String::new();
    std::io::BufReader::new(child.0.stdout.take().ok_or_else(|| anyhow!("no stdout"))?)
        .read_line(&mut line)?;
    if !line.contains("listening") {
        bail!("the witness did not start: {line:?}");
    }
    let url = format!("http://127.0.0.1:{port}/add-checkpoint");

    let started = Instant::now();
    let results: Vec<Result<Vec<Duration>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|t| {
                let bodies = &bodies;
                let url = &url;
                s.spawn(move || -> Result<Vec<Duration>> {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .build()
                        .into();
                    let mine: Vec<&Vec<String>> = bodies.iter().skip(t).step_by(CLIENTS).collect();
                    let mut lat = Vec::with_capacity(mine.len() * STEPS as usize);
                    // Round-robin over this client's logs: one request per
                    // log per pass, each waiting for the answer.
                    for step in 0..STEPS as usize {
                        for log in &mine {
                            let t0 = Instant::now();
                            let mut resp = agent
                                .post(url.as_str())
                                .send(log[step].as_bytes())
                                .map_err(|e| anyhow!("{e}"))?;
                            let status = resp.status().as_u16();
                            let body = resp.body_mut().read_to_string().unwrap_or_default();
                            lat.push(t0.elapsed());
                            if status != 200 {
                                bail!("step {step}: {status} {body}");
                            }
                        }
                    }
                    Ok(lat)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a client panicked")))
            })
            .collect()
    });
    let secs = started.elapsed().as_secs_f64();
    let mut lat = Vec::new();
    for res in results {
        lat.extend(res?);
    }
    lat.sort();
    let rate = lat.len() as f64 / secs;
    r.line(
        "witness.add_checkpoint_per_s",
        rate,
        "req/s",
        &format!(
            "{} cosigned, {LOGS} logs, 1-line proofs, {CLIENTS} keep-alive clients; {:.2}x the raw fdatasync rate",
            lat.len(),
            rate / fsync_rate
        ),
    );
    r.line(
        "witness.add_checkpoint_p50_ms",
        pct(&lat, 0.5) / 1000.0,
        "ms",
        "",
    );
    r.line(
        "witness.add_checkpoint_p99_ms",
        pct(&lat, 0.99) / 1000.0,
        "ms",
        "",
    );
    // A flood of requests for an origin it does not witness: refused
    // after a parse and a map lookup.
    let unknown = format!(
        "old 0\n\nbench.example/nobody\n1\n{}\n\n\u{2014} bench.example/nobody AAAAAAAA\n",
        B64.encode([0u8; 32])
    );
    let window = Duration::from_secs(1);
    let t = Instant::now();
    let counts: Vec<Result<u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (url, unknown) = (&url, &unknown);
                s.spawn(move || -> Result<u64> {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .build()
                        .into();
                    let mut n = 0;
                    while t.elapsed() < window {
                        let mut resp = agent
                            .post(url.as_str())
                            .send(unknown.as_bytes())
                            .map_err(|e| anyhow!("{e}"))?;
                        let _ = resp.body_mut().read_to_string();
                        if resp.status().as_u16() != 404 {
                            bail!("an unknown origin got {}", resp.status());
                        }
                        n += 1;
                    }
                    Ok(n)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a client panicked")))
            })
            .collect()
    });
    let mut refused = 0;
    for c in counts {
        refused += c?;
    }
    r.line(
        "witness.unknown_origin_per_s",
        refused as f64 / t.elapsed().as_secs_f64(),
        "req/s",
        "404s, same clients (the HTTP round trip's own ceiling here)",
    );
    if json {
        println!("{}", serde_json::Value::Object(r.fields));
    }
    Ok(ExitCode::SUCCESS)
}
