//! `dlog auditor run` and `dlog auditor status`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use dlog_auditor::{AuditorConfig, AuditorError, State};

/// `dlog auditor ...`.
#[derive(Subcommand)]
pub enum AuditorCmd {
    /// Follow a cluster's log, re-verify every entry, cosign what was
    /// verified; in the foreground until SIGINT/SIGTERM. Exit 1 if the log
    /// fails verification (the evidence is kept in the state file).
    Run {
        /// The auditor's configuration (auditor.toml).
        #[arg(long)]
        config: PathBuf,
    },
    /// What the auditor verified and cosigned, from its state file (no
    /// network), and whether its process is alive (its state-directory
    /// lock and a heartbeat at most 10 s old). Exit 1 if it raised an alarm
    /// or is not alive.
    Status {
        /// The auditor's configuration (auditor.toml).
        #[arg(long)]
        config: PathBuf,
        /// Print JSON (the state file's fields, less the frontier).
        #[arg(long)]
        json: bool,
    },
}

/// Runs an auditor subcommand.
pub fn auditor(cmd: AuditorCmd) -> Result<ExitCode> {
    match cmd {
        AuditorCmd::Run { config } => {
            crate::cluster::init_tracing();
            let cfg = AuditorConfig::load(&config)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            match rt.block_on(dlog_auditor::run(cfg, dlog_node::server::shutdown_signal())) {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e @ AuditorError::Alarm(_)) => {
                    eprintln!("{e}");
                    Ok(ExitCode::from(1))
                }
                Err(e) => Err(e.into()),
            }
        }
        AuditorCmd::Status { config, json } => {
            let cfg = AuditorConfig::load(&config)?;
            let state = State::load(&cfg.state_dir)?
                .unwrap_or_else(|| State::new(&cfg.name, &cfg.trust.origin));
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let ago = |t: Option<u64>| t.map(|t| now.saturating_sub(t));
            let live = dlog_auditor::state::Liveness::of(&cfg.state_dir)
                .with_context(|| format!("{}", cfg.state_dir.display()))?;
            if json {
                let mut v = serde_json::to_value(&state)?;
                if let Some(o) = v.as_object_mut() {
                    o.remove("frontier");
                    o.insert(
                        "behind".into(),
                        state.log_size_seen.saturating_sub(state.size).into(),
                    );
                    o.insert("round_secs_ago".into(), ago(state.round_at).into());
                    o.insert("alive".into(), live.is_alive().into());
                    o.insert("liveness".into(), live.describe().into());
                }
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("auditor   {} of {}", state.name, state.origin);
                println!("process   {}", live.describe());
                println!(
                    "verified  {} entries, root {}{}",
                    state.size,
                    state.root,
                    ago(state.verified_at).map_or(String::new(), |s| format!(" ({s} s ago)"))
                );
                println!(
                    "log       {} entries seen in checkpoints ({} not verified yet)",
                    state.log_size_seen,
                    state.log_size_seen.saturating_sub(state.size)
                );
                match &state.cosigned {
                    Some(c) => println!(
                        "cosigned  size {} ({} s ago)",
                        c.size,
                        now.saturating_sub(c.time)
                    ),
                    None => println!("cosigned  nothing yet"),
                }
                println!(
                    "rounds    {}{}",
                    state.rounds,
                    ago(state.round_at).map_or(String::new(), |s| format!(", last {s} s ago"))
                );
                for (node, sw) in &state.sweeps {
                    println!(
                        "re-read   {node}: {} entries, {} ({} s ago)",
                        sw.size,
                        if sw.ok { "all good" } else { "FAILED" },
                        now.saturating_sub(sw.time)
                    );
                }
                println!("incidents {}", state.incidents.len());
                for i in state.incidents.iter().rev().take(5) {
                    println!(
                        "  {} s ago  {}  {}",
                        now.saturating_sub(i.time),
                        i.node.as_deref().unwrap_or("-"),
                        i.detail
                    );
                }
                match &state.alarm {
                    Some(a) => println!("ALARM     {}\n{}", a.detail, a.checkpoint),
                    None => println!("health    ok"),
                }
            }
            Ok(if state.alarm.is_some() || !live.is_alive() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
