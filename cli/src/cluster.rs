//! `dlog node`, `dlog cluster`, and the everyday verbs against a cluster
//! (`--cluster client.toml` or `DLOG_CLUSTER`): the CLI opens its own
//! WireGuard tunnel as a `client` peer and talks to the nodes through it.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use dlog_client::Client;
use dlog_devcluster::{self as cluster, ClusterSpec};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// `dlog node ...`.
#[derive(Subcommand)]
pub enum NodeCmd {
    /// Run one node in the foreground until SIGINT/SIGTERM.
    Run {
        /// The node's configuration (node.toml).
        #[arg(long)]
        config: PathBuf,
    },
}

/// `dlog cluster ...`.
#[derive(Subcommand)]
pub enum ClusterCmd {
    /// Generate keys and configs for a loopback cluster, start its nodes as
    /// background processes, and return once a leader is elected.
    Up {
        /// Voting nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Extra nodes generated (not started) for `cluster add-node`.
        #[arg(long, default_value_t = 0)]
        spare: usize,
        /// Auditors to generate and start (D/auditor-N/auditor.toml); their
        /// cosigner keys go into trust.toml.
        #[arg(long, default_value_t = 0)]
        auditors: usize,
        /// Auditor cosignatures trust.toml requires on a checkpoint (receipts
        /// then wait for the auditors); at most --auditors.
        #[arg(long, default_value_t = 0)]
        cosignatures: usize,
        /// Checkpoint origin.
        #[arg(long, default_value = "dlog/cluster")]
        origin: String,
        /// A sealed segment holds 2^K entries.
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u8).range(1..=30))]
        segment_bits: u8,
        /// The Merkle tree's hash: blake3, or sha256 (RFC 6962, verifiable by
        /// C2SP tools and Go's sumdb/tlog).
        #[arg(long, default_value = "blake3")]
        hash: dlog_crypto::HashAlg,
        /// Seconds to wait for a leader.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Stop the cluster's node processes.
    Down,
    /// Start a stopped cluster again (its member nodes, then its auditors;
    /// whatever already runs is left alone) and return once a leader is
    /// elected.
    Start {
        /// Seconds to wait for a leader.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Every node's role, term, applied index, sizes and health (all asked
    /// at once, 3 s each at most), and every auditor's progress and
    /// liveness; exit 1 without a leader, on an auditor's alarm, or with an
    /// auditor down.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Start the next spare node (see `up --spare`), add it as a learner, let
    /// it catch up by segment transfer, promote it to voter.
    AddNode {
        /// Seconds to wait for it to catch up.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Remove a voter from the membership and stop its process.
    RemoveNode {
        /// The node's name, e.g. node-2.
        name: String,
        /// Seconds to wait for a leader.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    let workers = std::env::var("DLOG_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// `dlog node run`.
pub fn node(cmd: NodeCmd) -> Result<ExitCode> {
    let NodeCmd::Run { config } = cmd;
    init_tracing();
    dlog_node::runtime(&config)?.block_on(dlog_node::run(&config))?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DLOG_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only on a terminal: node and auditor logs are files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// `dlog cluster ...` on the cluster directory `dir`.
pub fn cluster(cmd: ClusterCmd, dir: &Path) -> Result<ExitCode> {
    let rt = runtime()?;
    match cmd {
        ClusterCmd::Up {
            nodes,
            spare,
            auditors,
            cosignatures,
            origin,
            segment_bits,
            hash,
            timeout,
        } => {
            if nodes == 0 {
                bail!("--nodes must be at least 1");
            }
            if cosignatures > auditors {
                bail!("--cosignatures {cosignatures} needs at least as many --auditors");
            }
            let exe = std::env::current_exe()?;
            let args = ["node", "run", "--config"].map(std::ffi::OsString::from);
            let spec = ClusterSpec {
                nodes,
                spare_nodes: spare,
                origin,
                segment_bits,
                auditors,
                cosignatures,
                hash,
                ..ClusterSpec::default()
            };
            let (layout, leader) = rt.block_on(cluster::up(
                dir,
                &spec,
                &exe,
                &args,
                Duration::from_secs(timeout),
            ))?;
            let auditor_args = ["auditor", "run", "--config"].map(std::ffi::OsString::from);
            if let Err(e) = cluster::start_auditors(dir, &exe, &auditor_args) {
                let _ = cluster::stop(dir);
                return Err(e).context("starting the auditors");
            }
            println!(
                "cluster of {nodes} nodes is up in {}; leader {leader}",
                dir.display()
            );
            println!("client config: {}", layout.client_config.display());
            for a in &layout.auditor_configs {
                println!(
                    "auditor:       {}  (dlog auditor status --config {})",
                    a.display(),
                    a.display()
                );
            }
            println!(
                "trust file:    {}  (give it to verifiers)",
                layout.trust.display()
            );
            println!(
                "try:  dlog --cluster {} append \"hello\" --receipt r.tlog-proof",
                layout.client_config.display()
            );
            println!(
                "      dlog verify --trust {} r.tlog-proof",
                layout.trust.display()
            );
            println!("stop: dlog cluster down --dir {}", dir.display());
        }
        ClusterCmd::Start { timeout } => {
            let exe = std::env::current_exe()?;
            let args = ["node", "run", "--config"].map(std::ffi::OsString::from);
            let auditor_args = ["auditor", "run", "--config"].map(std::ffi::OsString::from);
            let done = rt.block_on(cluster::start_again(
                dir,
                (&exe, &args),
                &auditor_args,
                Duration::from_secs(timeout),
            ))?;
            let list = |v: &[String]| {
                if v.is_empty() {
                    "none".to_string()
                } else {
                    v.join(", ")
                }
            };
            println!(
                "cluster in {} is up; leader {}\nstarted: {} (already running: {}); auditors started: {}",
                dir.display(),
                done.leader,
                list(&done.started),
                list(&done.running),
                list(&done.auditors_started)
            );
        }
        ClusterCmd::Down => {
            cluster::stop(dir)?;
            println!("stopped the nodes and auditors of {}", dir.display());
        }
        ClusterCmd::Status { json } => {
            let statuses = rt.block_on(cluster::status(&dir.join("client.toml")))?;
            let mut leader = false;
            let mut rows = Vec::new();
            for (name, st) in &statuses {
                match st {
                    Ok(s) => {
                        leader |= s.state == "leader";
                        rows.push(serde_json::json!({"name": name, "ok": true, "status": s}));
                        if !json {
                            println!(
                                "{name:<10} {:<9} term {:<4} applied {:<8} ledger {:<10} checkpoint {:<10} {}",
                                s.state,
                                s.term,
                                s.applied_index,
                                s.ledger_size,
                                s.checkpoint_size,
                                s.diverged.as_deref().map_or("healthy".to_string(), |d| format!("DIVERGED: {d}"))
                            );
                        }
                    }
                    Err(dlog_client::Error::Unreachable { waited, tried }) => {
                        // "node-1 at udp ADDR: what happened", for this node.
                        let what = tried.concat();
                        let what = what.strip_prefix(name.as_str()).unwrap_or(&what).trim();
                        let what = format!("no answer in {:.1} s, {what}", waited.as_secs_f64());
                        rows.push(serde_json::json!({"name": name, "ok": false, "down": true, "error": what}));
                        if !json {
                            println!("{name:<10} DOWN      {what}");
                        }
                    }
                    Err(e) => {
                        rows.push(
                            serde_json::json!({"name": name, "ok": false, "error": e.to_string()}),
                        );
                        if !json {
                            println!("{name:<10} unreachable: {e}");
                        }
                    }
                }
            }
            // Auditors, from their state files (they serve nothing).
            let mut auditors = Vec::new();
            let mut alarm = false;
            let mut down_auditors: Vec<String> = Vec::new();
            for adir in cluster::auditor_dirs(dir)? {
                let name = adir
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                let loaded = dlog_auditor::AuditorConfig::load(&adir.join("auditor.toml"))
                    .map_err(|e| e.to_string())
                    .and_then(|c| {
                        dlog_auditor::State::load(&c.state_dir).map_err(|e| e.to_string())
                    });
                let live = dlog_auditor::AuditorConfig::load(&adir.join("auditor.toml"))
                    .ok()
                    .and_then(|c| dlog_auditor::state::Liveness::of(&c.state_dir).ok());
                let alive = live.as_ref().is_some_and(|l| l.is_alive());
                let live_text = live.map_or("liveness unknown".into(), |l| l.describe());
                if !alive {
                    down_auditors.push(name.clone());
                }
                match loaded {
                    Ok(Some(st)) => {
                        alarm |= st.alarm.is_some();
                        let health = match &st.alarm {
                            Some(a) => format!("ALARM: {}", a.detail),
                            None if alive => "healthy".to_string(),
                            None => live_text.clone(),
                        };
                        if !json {
                            println!(
                                "{name:<10} auditor   verified {:<8} cosigned {:<10} incidents {:<4} {health}",
                                st.size,
                                st.cosigned.as_ref().map_or(0, |c| c.size),
                                st.incidents.len(),
                            );
                        }
                        auditors.push(serde_json::json!({
                            "name": name,
                            "verified": st.size,
                            "cosigned": st.cosigned.as_ref().map(|c| c.size),
                            "incidents": st.incidents.len(),
                            "alarm": st.alarm.as_ref().map(|a| a.detail.clone()),
                            "alive": alive,
                            "liveness": live_text,
                        }));
                    }
                    Ok(None) => {
                        if !json {
                            println!("{name:<10} auditor   no state yet; {live_text}");
                        }
                        auditors.push(serde_json::json!({"name": name, "verified": 0, "alive": alive, "liveness": live_text}));
                    }
                    Err(e) => {
                        alarm = true;
                        if !json {
                            println!("{name:<10} auditor   unreadable: {e}");
                        }
                        auditors.push(serde_json::json!({"name": name, "error": e.to_string()}));
                    }
                }
            }
            if json {
                println!(
                    "{}",
                    serde_json::json!({"leader": leader, "nodes": rows, "auditors": auditors})
                );
            }
            if rows.iter().all(|r| r["down"] == true) {
                eprintln!(
                    "dlog: no node answered: the cluster is down (start it: dlog cluster start --dir {})",
                    dir.display()
                );
                return Ok(ExitCode::from(1));
            }
            if !leader {
                eprintln!("dlog: the cluster has no leader");
                return Ok(ExitCode::from(1));
            }
            if !down_auditors.is_empty() {
                eprintln!(
                    "dlog: auditor(s) not alive: {} (restart: dlog cluster start --dir {})",
                    down_auditors.join(", "),
                    dir.display()
                );
                return Ok(ExitCode::from(1));
            }
            if alarm {
                eprintln!("dlog: an auditor raised an alarm or cannot be read (dlog auditor status --config ...)");
                return Ok(ExitCode::from(1));
            }
        }
        ClusterCmd::AddNode { timeout } => {
            let exe = std::env::current_exe()?;
            let args = ["node", "run", "--config"].map(std::ffi::OsString::from);
            let name = rt.block_on(async {
                let admin = Client::open(&dir.join("admin.toml")).await?;
                let res =
                    cluster::add_node(dir, &admin, &exe, &args, Duration::from_secs(timeout)).await;
                admin.close().await;
                res
            })?;
            println!("{name} caught up and is now a voter");
        }
        ClusterCmd::RemoveNode { name, timeout } => {
            rt.block_on(async {
                let admin = Client::open(&dir.join("admin.toml")).await?;
                let res =
                    cluster::remove_node(dir, &admin, &name, Duration::from_secs(timeout)).await;
                admin.close().await;
                res
            })?;
            println!("{name} removed from the cluster and stopped");
        }
    }
    Ok(ExitCode::SUCCESS)
}
