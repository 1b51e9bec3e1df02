//! `dlog witness init|run|status`: a C2SP tlog-witness for other logs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use clap::Subcommand;
use dlog_auditor::witness::config::{self, WitnessConfig};
use dlog_auditor::witness::store;

/// `dlog witness ...`.
#[derive(Subcommand)]
pub enum WitnessCmd {
    /// Write DIR/witness.toml and DIR/witness.key (0600), and print the
    /// witness's C2SP cosigner vkey. Logs to witness are added as `[[log]]`
    /// tables (origin, vkey) in witness.toml.
    Init {
        /// The witness's name (its cosigner key's name), e.g.
        /// witness.example/w1.
        #[arg(long)]
        name: String,
        /// Where to write the files.
        #[arg(long)]
        dir: PathBuf,
        /// HTTP listen address (default 127.0.0.1:7380, loopback).
        #[arg(long)]
        listen: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve C2SP tlog-witness `POST /add-checkpoint` (and `GET /metrics`)
    /// in the foreground until SIGINT/SIGTERM.
    Run {
        /// The witness's configuration (witness.toml).
        #[arg(long)]
        config: PathBuf,
    },
    /// Each log's last cosigned size, root and time, from the state
    /// directory; with the witness running, its requests by status code.
    Status {
        /// The witness's configuration (witness.toml).
        #[arg(long)]
        config: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a witness subcommand.
pub fn witness(cmd: WitnessCmd) -> Result<ExitCode> {
    match cmd {
        WitnessCmd::Init {
            name,
            dir,
            listen,
            json,
        } => {
            let vkey = config::init(&dir, &name, listen.as_deref())?;
            let file = dir.join("witness.toml");
            if json {
                println!(
                    "{}",
                    serde_json::json!({"config": file, "vkey": vkey, "name": name})
                );
            } else {
                println!("witness {name}: {}", file.display());
                println!("cosigner vkey: {vkey}");
                println!("add the logs it witnesses as [[log]] tables (origin, vkey) in that file");
            }
            Ok(ExitCode::SUCCESS)
        }
        WitnessCmd::Run { config } => {
            crate::cluster::init_tracing();
            let cfg = WitnessConfig::load(&config)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            rt.block_on(async {
                let (tx, rx) = tokio::sync::watch::channel(false);
                tokio::spawn(async move {
                    dlog_node::server::shutdown_signal().await;
                    let _ = tx.send(true);
                });
                dlog_auditor::witness::http::run(&cfg, rx, |addr, w| {
                    // One line a script can wait for.
                    println!(
                        "witness {} listening on http://{addr} ({} logs)",
                        w.vkey(),
                        cfg.logs.len()
                    );
                })
                .await
                .map_err(|e| anyhow!(e))
            })?;
            Ok(ExitCode::SUCCESS)
        }
        WitnessCmd::Status { config, json } => status(&config, json),
    }
}

fn status(config: &Path, json: bool) -> Result<ExitCode> {
    let cfg = WitnessConfig::load(config)?;
    let states = store::read_all(&cfg.state_dir)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // The running witness's counters, if it answers on its address.
    let metrics = ureq::get(format!("http://{}/metrics", cfg.listen))
        .config()
        .timeout_global(Some(std::time::Duration::from_secs(2)))
        .build()
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok());
    let codes: Vec<(String, u64)> = metrics
        .as_deref()
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("dlog_witness_requests_total{code=\"")?;
            let (code, n) = rest.split_once("\"} ")?;
            Some((code.to_string(), n.trim().parse().ok()?))
        })
        .collect();
    let logs: Vec<serde_json::Value> = cfg
        .logs
        .iter()
        .map(|l| {
            let st = states
                .iter()
                .find(|(o, _)| o == &l.origin)
                .and_then(|(_, r)| *r);
            serde_json::json!({
                "origin": l.origin,
                "hash": l.hash.to_string(),
                "size": st.map(|r| r.cosigned.size),
                "root": st.map(|r| B64.encode(r.cosigned.root)),
                "time": st.map(|r| r.time),
            })
        })
        .collect();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "vkey": cfg.vkey,
                "listen": cfg.listen.to_string(),
                "running": metrics.is_some(),
                "requests": codes.iter().map(|(c, n)| (c.clone(), serde_json::json!(n))).collect::<serde_json::Map<_, _>>(),
                "logs": logs,
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("witness {}", cfg.vkey);
    match &metrics {
        Some(_) => {
            let list: Vec<String> = codes.iter().map(|(c, n)| format!("{c}: {n}")).collect();
            println!(
                "running on http://{}; requests by code: {}",
                cfg.listen,
                list.join(", ")
            );
        }
        None => println!("not answering on http://{} (not running?)", cfg.listen),
    }
    for l in &logs {
        let origin = l["origin"].as_str().unwrap_or_default();
        match l["size"].as_u64() {
            Some(size) => println!(
                "  {origin}: cosigned size {size}, root {}, {} s ago",
                l["root"].as_str().unwrap_or_default(),
                now.saturating_sub(l["time"].as_u64().unwrap_or(0))
            ),
            None => println!("  {origin}: nothing cosigned yet"),
        }
    }
    Ok(ExitCode::SUCCESS)
}
