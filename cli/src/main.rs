//! `dlog`: the DLog command line.
//!
//! Exit codes: 0 success, 1 verification failed (or damage found), 2 usage or
//! input error.

mod auditor;
mod backend;
mod bench;
mod cluster;
mod defaults;
mod notary;
mod tiles;
mod witness;

/// mimalloc instead of glibc malloc: node processes allocate and free large
/// frames and batches all the time, which glibc answers with fresh pages
/// (page faults and zeroing) over and over.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{anyhow, bail, Context, Result};
use backend::LocalLog;
use backend::{Log, Target};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use clap::{Args, Parser, Subcommand, ValueEnum};
use dlog_ledger::{Entry, EntryKind, LedgerError, OpenMode};
use dlog_notary::payload::{DigestAlg, NotaryPayload};
use dlog_notary::receipt::Receipt;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "dlog",
    version,
    about = "DLog: a verifiable, append-only ledger",
    after_help = "Exit codes:\n  0  done\n  1  verification failed, or damage found\n  2  error: usage, input, no node answered (an append that got this far says `appended as entry N`)\n  3  appended (its index is printed, its receipt written), but the receipt lacks the\n     cosignatures the trust file requires: upgrade it later with `dlog proof inclusion`\n\nA closed stdout (`dlog ... | head`) ends a command quietly; receipts are written before anything is printed.\n\nDefaults: ~/.config/dlog/config.toml (or $XDG_CONFIG_HOME/dlog/config.toml, or $DLOG_CONFIG) may set\ncluster, trust and dir; the environment (DLOG_CLUSTER, DLOG_TRUST, DLOG_DIR) overrides it, flags override both."
)]
struct Cli {
    /// Data directory of the local log (default ./dlog-data), or the
    /// directory of `dlog cluster` (default ./dlog-cluster).
    #[arg(long, global = true, env = "DLOG_DIR")]
    dir: Option<PathBuf>,
    /// A cluster's client.toml: act on that cluster instead of the local log.
    #[arg(long, global = true, env = "DLOG_CLUSTER", num_args = 0..=1,
          default_missing_value = bench::cluster::TEMP_CLUSTER)]
    cluster: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a log: data directory, node signing key (0600) and trust.toml.
    Init {
        /// Checkpoint origin line.
        #[arg(long, default_value = "dlog/local")]
        origin: String,
        /// A sealed segment holds 2^K entries.
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u8).range(1..=30))]
        segment_bits: u8,
        /// Largest payload in bytes.
        #[arg(long, default_value_t = dlog_ledger::entry::DEFAULT_MAX_PAYLOAD)]
        max_payload: u32,
        /// Name of the node's signing key (appears in checkpoints).
        #[arg(long, default_value = "node-1")]
        name: String,
        /// The Merkle tree's hash: blake3, or sha256 (RFC 6962, verifiable by
        /// C2SP tools and Go's sumdb/tlog). Chosen once, for the log's life.
        #[arg(long, default_value = "blake3")]
        hash: dlog_crypto::HashAlg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Append one entry (argument, --file, or stdin), or each stdin line with --lines.
    Append(AppendArgs),
    /// Print entries by index.
    Get {
        /// Index of the (first) entry.
        index: u64,
        /// Number of entries to print.
        #[arg(long, default_value_t = 1)]
        count: u64,
        /// Print JSON lines (index, kind, timestamp, payload in base64).
        #[arg(long)]
        json: bool,
    },
    /// Print the last entries; -f keeps following new ones.
    Tail {
        /// How many entries.
        #[arg(short = 'n', default_value_t = 10)]
        n: u64,
        /// Follow: print new entries as they are appended.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Print the latest signed checkpoint (C2SP signed note).
    Checkpoint {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// On a cluster: take what the answering node holds, without a
        /// linearizable round through the leader (faster; says how stale it
        /// may be: `behind_ms` in JSON, a line on stderr otherwise).
        #[arg(long)]
        any_node: bool,
    },
    /// Inclusion and consistency proofs.
    #[command(subcommand)]
    Proof(ProofCmd),
    /// Verify a receipt offline against a trust file (no data directory needed).
    Verify {
        /// The trust file.
        #[arg(long, env = "DLOG_TRUST")]
        trust: PathBuf,
        /// The receipt (.tlog-proof or its JSON form).
        receipt: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Notarize files: append their digests, write FILE.tlog-proof receipts.
    Notarize {
        /// Files to notarize.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Digest algorithm.
        #[arg(long, value_enum, default_value_t = Alg::Blake3)]
        alg: Alg,
        /// A label stored with the digest.
        #[arg(long)]
        label: Option<String>,
        /// Receipt path (one file) or directory (many files).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Notary verification.
    #[command(subcommand)]
    Notary(NotaryCmd),
    /// The log as C2SP tlog-tiles: static files any web server can publish.
    #[command(subcommand)]
    Tiles(tiles::TilesCmd),
    /// Re-read everything: CRCs, leaves, segment roots, chain. Exit 1 on damage.
    Scrub {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Repair a damaged log: --from CLIENT.toml re-fetches every damaged
    /// sealed segment from the cluster (a stopped node's ledger; the
    /// entries must hash to the root the log commits to); --cut-at N cuts
    /// a damaged open segment at its first damaged entry (which you must
    /// name). What is replaced or cut is kept under DIR/evidence/.
    #[command(group(clap::ArgGroup::new("how").required(true).args(["cut_at", "from"])))]
    Repair {
        /// The first damaged entry of the open segment, as `dlog scrub` names it.
        #[arg(long)]
        cut_at: Option<u64>,
        /// A cluster's client.toml to fetch damaged sealed segments from.
        #[arg(long)]
        from: Option<PathBuf>,
        /// Also cut entries a signed checkpoint covers (receipts past the
        /// cut will not verify against the log's next checkpoints).
        #[arg(long)]
        drop_signed: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Measure append, proof and verify speed against same-run baselines;
    /// --cluster: a temporary 3-node cluster against a 3-member etcd.
    Bench(bench::BenchArgs),
    /// Transport keys: X25519 (WireGuard) and ML-KEM-768 (post-quantum PSK).
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Run a replicated node.
    #[command(subcommand)]
    Node(cluster::NodeCmd),
    /// A local multi-node cluster: up, down, status, add-node, remove-node.
    #[command(subcommand)]
    Cluster(cluster::ClusterCmd),
    /// An auditor: follows a cluster's log, re-verifies it, cosigns it.
    #[command(subcommand)]
    Auditor(auditor::AuditorCmd),
    /// A C2SP tlog-witness for other logs: init, run, status.
    #[command(subcommand)]
    Witness(witness::WitnessCmd),
    /// Print a shell completion script: `dlog completions bash >
    /// /etc/bash_completion.d/dlog` (or zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (dlog.1), or write one page per subcommand into
    /// --out DIR.
    Man {
        /// Write dlog.1 and dlog-*.1 into this directory.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Write a new key file (mode 0600) and print its public keys.
    Gen {
        /// Where to write the key file (never overwritten).
        #[arg(long, default_value = "wg.key")]
        out: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the public keys of a key file.
    Show {
        /// The key file.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct AppendArgs {
    /// The entry's data (else --file, else stdin).
    data: Option<String>,
    /// Read the entry's data from a file.
    #[arg(long, conflicts_with = "data")]
    file: Option<PathBuf>,
    /// Append each line of stdin as its own entry (batched).
    #[arg(long, conflicts_with_all = ["data", "file", "receipt"])]
    lines: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Append an empty entry (stdin or --file with no bytes is refused
    /// otherwise: an empty stdin is usually a mistake).
    #[arg(long)]
    allow_empty: bool,
    /// Write a .tlog-proof receipt for the entry. When the trust file
    /// requires cosignatures and none covers the entry in time, the
    /// receipt carries the voters' signatures and the exit code is 3.
    #[arg(long)]
    receipt: Option<PathBuf>,
}

#[derive(Subcommand)]
enum ProofCmd {
    /// Receipt proving entry INDEX is in the log.
    Inclusion {
        /// The entry.
        index: u64,
        /// Tree size to prove against (default: the latest checkpoint).
        #[arg(long)]
        size: Option<u64>,
        /// Write the receipt here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the JSON form.
        #[arg(long)]
        json: bool,
        /// Read the log from its published tiles (a directory or an
        /// http(s) URL prefix) instead of a log or a node; needs --trust.
        #[arg(long, requires = "trust")]
        tiles: Option<String>,
        /// The trust file the tiles' checkpoint must meet (with --tiles).
        #[arg(long, env = "DLOG_TRUST")]
        trust: Option<PathBuf>,
    },
    /// Proof that the tree of size --to extends the tree of size --from
    /// (or of the checkpoint in --old). The JSON names both signed
    /// checkpoints where they are known; with --old, the old one is yours,
    /// checked against the log's tree (exit 1 if the log has another root
    /// at its size: a fork).
    Consistency {
        /// Old tree size.
        #[arg(long, required_unless_present = "old", conflicts_with = "old")]
        from: Option<u64>,
        /// A checkpoint you hold (a signed note, or a receipt carrying
        /// one): the old tree is its tree. Its voter signatures are checked
        /// under --trust, else the log's own trust file (a local log's, or
        /// the one client.toml names).
        #[arg(long)]
        old: Option<PathBuf>,
        /// New tree size (default: the latest checkpoint).
        #[arg(long)]
        to: Option<u64>,
        /// Read the log from its published tiles (a directory or an
        /// http(s) URL prefix); needs --trust.
        #[arg(long, requires = "trust")]
        tiles: Option<String>,
        /// The trust file the tiles' checkpoint (and --old) must meet.
        #[arg(long, env = "DLOG_TRUST")]
        trust: Option<PathBuf>,
        /// Print JSON (the only format).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum NotaryCmd {
    /// Re-hash FILE and check its receipt offline; with --receipts DIR,
    /// every receipt under DIR against its document (exit 1 if any fails).
    Verify {
        /// The document; with --receipts, the directory the documents are
        /// under (default: beside their receipts).
        file: Option<PathBuf>,
        /// Its receipt (default FILE.tlog-proof).
        receipt: Option<PathBuf>,
        /// Verify every `*.tlog-proof` under this directory: the document
        /// of `DIR/a/x.txt.tlog-proof` is `FILE/a/x.txt`.
        #[arg(long, conflicts_with = "receipt")]
        receipts: Option<PathBuf>,
        /// The trust file.
        #[arg(long, env = "DLOG_TRUST")]
        trust: PathBuf,
        /// Print JSON (one line per document with --receipts).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Alg {
    Blake3,
    Sha256,
}

impl From<Alg> for DigestAlg {
    fn from(a: Alg) -> Self {
        match a {
            Alg::Blake3 => DigestAlg::Blake3,
            Alg::Sha256 => DigestAlg::Sha256,
        }
    }
}

/// A verification that ran and failed: exit code 1.
#[derive(Debug)]
struct VerifyFailed(String);

impl std::fmt::Display for VerifyFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for VerifyFailed {}

fn main() -> ExitCode {
    // `dlog --cluster append x`: the value is missing and a subcommand
    // would be taken for it.
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--cluster") {
        if let Some(v) = args.get(i + 1) {
            let names: Vec<String> = <Cli as clap::CommandFactory>::command()
                .get_subcommands()
                .map(|c| c.get_name().to_string())
                .collect();
            if names.contains(v) && !Path::new(v).exists() && v != "bench" {
                eprintln!("dlog: error: --cluster needs the cluster's client.toml before `{v}` (e.g. `dlog --cluster demo/client.toml {v} ...`)");
                return ExitCode::from(2);
            }
        }
    }
    let json = args.iter().any(|a| a == "--json");
    // Defaults from the config file, as the environment clap reads (flags
    // and the real environment win). Single-threaded still.
    if let Err(e) = defaults::apply() {
        eprintln!("dlog: error: {}", describe(&e));
        return ExitCode::from(2);
    }
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let mut cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    // `dlog bench` runs against a cluster only when asked on the command
    // line (`--cluster` without a value), never because DLOG_CLUSTER is set.
    let temp = Path::new(bench::cluster::TEMP_CLUSTER);
    if matches.value_source("cluster") != Some(clap::parser::ValueSource::CommandLine)
        && matches!(cli.cmd, Cmd::Bench(_))
    {
        cli.cluster = None;
    }
    if let Some(c) = &cli.cluster {
        let bench = matches!(cli.cmd, Cmd::Bench(_));
        if bench != (c == temp) {
            eprintln!(
                "dlog: error: {}",
                if bench {
                    "`dlog bench --cluster` starts its own temporary cluster and takes no client.toml"
                } else {
                    "--cluster needs the cluster's client.toml"
                }
            );
            return ExitCode::from(2);
        }
    }
    // A verb whose stdout is closed (`dlog ... | head -1`) ends quietly at
    // its next write, as `cat` would; every receipt it owes is written
    // before anything is printed about it. The long-running processes keep
    // Rust's default (EPIPE as an error on their sockets).
    let serves = matches!(
        cli.cmd,
        Cmd::Node(_)
            | Cmd::Bench(_)
            | Cmd::Auditor(auditor::AuditorCmd::Run { .. })
            | Cmd::Witness(witness::WitnessCmd::Run { .. })
    );
    if !serves {
        // SAFETY: called before any other thread exists; SIG_DFL is a
        // valid disposition for SIGPIPE.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let corrupt = e
                .downcast_ref::<LedgerError>()
                .is_some_and(LedgerError::is_corruption);
            let failed = e.downcast_ref::<VerifyFailed>().is_some() || corrupt;
            if json {
                // A --json caller reads stdout: the error is there too.
                println!(
                    "{}",
                    serde_json::json!({"error": describe(&e), "failed": failed})
                );
            }
            if failed {
                eprintln!("dlog: FAILED: {}", describe(&e));
                ExitCode::from(1)
            } else {
                eprintln!("dlog: error: {}", describe(&e));
                ExitCode::from(2)
            }
        }
    }
}

/// The error and its causes on one line, skipping a cause whose text the
/// message already carries (many error types print their source too).
fn describe(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg
}

fn run(cli: Cli) -> Result<ExitCode> {
    let dir = cli
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("dlog-data"));
    let target = Target {
        dir: &dir,
        cluster: cli.cluster.as_deref(),
    };
    match cli.cmd {
        Cmd::Init {
            origin,
            segment_bits,
            max_payload,
            name,
            hash,
            json,
        } => {
            let dir = target.local_only("init", "a cluster is created with `dlog cluster up`")?;
            let trust = LocalLog::init(dir, &origin, segment_bits, max_payload, &name, hash)?;
            let trust_path = dir.join(backend::TRUST_FILE);
            if json {
                println!(
                    "{}",
                    serde_json::json!({"dir": dir, "origin": origin, "trust": trust_path, "voters": trust.voters.iter().map(|v| v.to_vkey()).collect::<Vec<_>>()})
                );
            } else {
                println!("created log {origin} in {}", dir.display());
                println!("signing key: {}", trust.voters[0].to_vkey());
                println!(
                    "trust file:  {}  (give it to verifiers)",
                    trust_path.display()
                );
            }
        }
        Cmd::Append(a) => return append(&target, a),
        Cmd::Get { index, count, json } => {
            let log = target.read()?;
            let end = index
                .checked_add(count)
                .ok_or_else(|| anyhow!("range overflows"))?;
            let out = std::io::stdout();
            let mut out = out.lock();
            for i in index..end {
                let e = log.entry(i)?;
                if json || count == 1 {
                    print_entry(&mut out, i, &e, json)?;
                } else {
                    // Several entries as text: one line each, the index first,
                    // newlines and tabs escaped so lines stay entries.
                    let text = match std::str::from_utf8(&e.payload) {
                        Ok(t) => t
                            .replace('\\', "\\\\")
                            .replace('\n', "\\n")
                            .replace('\t', "\\t"),
                        Err(_) => format!("base64:{}", B64.encode(&e.payload)),
                    };
                    writeln!(out, "{i}\t{text}")?;
                }
            }
        }
        Cmd::Tail { n, follow, json } => return tail(&target, n, follow, json),
        Cmd::Checkpoint { json, any_node } => {
            let log = target.read()?;
            let cp = if any_node {
                log.checkpoint_any_node()?
            } else {
                log.checkpoint()?
            };
            if json {
                let root = dlog_crypto::note::Checkpoint::from_note(&cp.note)
                    .map(|c| B64.encode(c.root))
                    .unwrap_or_default();
                println!(
                    "{}",
                    serde_json::json!({"size": cp.size, "root": root, "note": cp.note, "log_size": cp.log_size, "behind_ms": cp.behind_ms})
                );
            } else {
                print!("{}", cp.note);
                if any_node {
                    match cp.behind_ms {
                        Some(ms) => eprintln!("# from a node at most {ms} ms behind the leader"),
                        None => eprintln!("# from a node that cannot tell how far behind it is"),
                    }
                }
            }
        }
        Cmd::Proof(ProofCmd::Inclusion {
            index,
            size,
            out,
            json,
            tiles: Some(tiles),
            trust: Some(trust),
        }) => {
            let tiles::OpenTiles {
                mut reader,
                note,
                size: cp_size,
                ..
            } = tiles::open(&tiles, &trust)?;
            if size.is_some_and(|s| s != cp_size) {
                bail!("the tiles serve proofs under their checkpoint, of size {cp_size}");
            }
            if index >= cp_size {
                bail!("entry {index} is not in the tiles' tree of size {cp_size}");
            }
            let receipt = Receipt {
                entry: reader.entry(index)?,
                index,
                inclusion: reader.inclusion_proof(index, cp_size)?,
                checkpoint: note,
            };
            emit_receipt(&receipt, out.as_deref(), json)?;
        }
        Cmd::Proof(ProofCmd::Inclusion {
            index,
            size,
            out,
            json,
            ..
        }) => {
            let receipt = target.read()?.receipt(index, size)?;
            emit_receipt(&receipt, out.as_deref(), json)?;
        }
        Cmd::Proof(ProofCmd::Consistency {
            from,
            old,
            to,
            tiles,
            trust,
            ..
        }) => return consistency(&target, from, old.as_deref(), to, tiles, trust.as_deref()),
        Cmd::Verify {
            trust,
            receipt,
            json,
        } => return verify(&trust, &receipt, json),
        Cmd::Notarize {
            files,
            alg,
            label,
            out,
            json,
        } => return notarize(&target, &files, alg.into(), label, out, json),
        Cmd::Notary(NotaryCmd::Verify {
            file,
            receipt,
            receipts: Some(dir),
            trust,
            json,
        }) => {
            debug_assert!(receipt.is_none());
            return notary::verify_many(&dir, file.as_deref(), &trust, json);
        }
        Cmd::Notary(NotaryCmd::Verify {
            file,
            receipt,
            receipts: None,
            trust,
            json,
        }) => {
            let file = file.context("name the document (FILE), or --receipts DIR")?;
            let receipt = receipt.unwrap_or_else(|| notary::beside(&file));
            return notary_verify(&file, &receipt, &trust, json);
        }
        Cmd::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "dlog", &mut std::io::stdout());
        }
        Cmd::Man { out } => {
            let cmd = <Cli as clap::CommandFactory>::command();
            match out {
                None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?,
                Some(dir) => {
                    std::fs::create_dir_all(&dir)
                        .with_context(|| format!("create {}", dir.display()))?;
                    clap_mangen::generate_to(cmd, &dir)
                        .with_context(|| format!("write man pages into {}", dir.display()))?;
                    println!("man pages written to {} (dlog.1, dlog-*.1)", dir.display());
                }
            }
        }
        Cmd::Tiles(cmd) => return tiles::run(&target, cmd),
        Cmd::Scrub { json } => {
            let dir = target.local_only(
                "scrub",
                "run it on a node's ledger directory, e.g. `dlog --dir D/node-1/data/ledger scrub`",
            )?;
            let log = LocalLog::open(dir, OpenMode::ReadOnly)?;
            let report = log.ledger.scrub()?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                for p in &report.problems {
                    println!("DAMAGED: {p}");
                }
                println!(
                    "scrub: {} segments, {} entries ({} intact, {} damaged{}), {} bytes checked, {} problem(s)",
                    report.segments,
                    report.entries_total,
                    report.entries,
                    report.entries_damaged,
                    if report.problems.iter().any(|p| p.detail.contains("cannot be located")) {
                        ", more past a lost frame boundary"
                    } else {
                        ""
                    },
                    report.bytes,
                    report.problems.len()
                );
            }
            if !report.is_clean() {
                return Ok(ExitCode::from(1));
            }
        }
        Cmd::Repair {
            from: Some(from),
            json,
            ..
        } => {
            let dir = target.local_only(
                "repair",
                "stop the damaged node and run `dlog --dir D/node-N/data/ledger repair --from D/client.toml`",
            )?;
            return repair_from(dir, &from, json);
        }
        Cmd::Repair {
            cut_at,
            drop_signed,
            json,
            ..
        } => {
            let dir = target.local_only(
                "repair",
                "stop the damaged node and run `dlog --dir D/node-N/data/ledger repair ...` on its ledger",
            )?;
            let cut_at = cut_at.context("--cut-at or --from")?;
            let cut = dlog_ledger::repair::cut_at_damage(dir, cut_at, drop_signed)?;
            if json {
                println!("{}", serde_json::to_string(&cut)?);
            } else {
                println!(
                    "cut segment {} at entry {}: {} bytes moved to {}{}; the log now holds {} entries",
                    cut.segment,
                    cut.at,
                    cut.bytes,
                    cut.evidence.display(),
                    cut.dropped_checkpoint
                        .map_or(String::new(), |c| format!(" (with the checkpoint of size {c})")),
                    cut.at
                );
            }
        }
        Cmd::Node(c) => return cluster::node(c),
        Cmd::Auditor(c) => return auditor::auditor(c),
        Cmd::Witness(c) => return witness::witness(c),
        Cmd::Cluster(c) => {
            let dir = cli.dir.unwrap_or_else(|| PathBuf::from("dlog-cluster"));
            return cluster::cluster(c, &dir);
        }
        Cmd::Bench(args) => return bench::run(&args, cli.cluster.is_some()),
        Cmd::Keys(KeysCmd::Gen { out, json }) => {
            let key = dlog_wg::keys::generate()?;
            dlog_wg::keys::write_key_file(&out, &key)?;
            print_public_keys(&out, &key, json);
        }
        Cmd::Keys(KeysCmd::Show { file, json }) => {
            let key = dlog_wg::keys::load_key_file(&file)?;
            print_public_keys(&file, &key, json);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_public_keys(path: &Path, key: &dlog_wg::keys::KeyFile, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::json!({"file": path, "public_key": key.public_key_b64(), "kem_public_key": key.kem_public_key_b64()})
        );
    } else {
        println!("key file:        {}", path.display());
        println!("public_key     = \"{}\"", key.public_key_b64());
        println!("kem_public_key = \"{}\"", key.kem_public_key_b64());
    }
}

fn print_entry(out: &mut impl Write, index: u64, e: &Entry, json: bool) -> Result<()> {
    if json {
        let text = std::str::from_utf8(&e.payload).ok();
        writeln!(
            out,
            "{}",
            serde_json::json!({
                "index": index,
                "kind": e.kind,
                "timestamp_ns": e.timestamp_ns,
                "payload": B64.encode(&e.payload),
                "text": text,
            })
        )?;
    } else {
        out.write_all(&e.payload)?;
        if !e.payload.ends_with(b"\n") {
            out.write_all(b"\n")?;
        }
    }
    Ok(())
}

fn append(target: &Target, a: AppendArgs) -> Result<ExitCode> {
    let data = match (&a.data, &a.file, a.lines) {
        (_, _, true) => None,
        (Some(d), _, _) => Some(d.clone().into_bytes()),
        (None, Some(f), _) => {
            Some(std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?)
        }
        (None, None, _) => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf)?;
            Some(buf)
        }
    };
    if data.as_ref().is_some_and(|d| d.is_empty()) && !a.allow_empty {
        bail!(
            "the entry is empty ({}); pass --allow-empty to append an empty entry",
            if a.file.is_some() {
                "the file has no bytes"
            } else if a.data.is_some() {
                "an empty argument"
            } else {
                "stdin had no bytes"
            }
        );
    }
    let mut log = target.write()?;
    let Some(data) = data else {
        return append_lines(log.as_mut(), a.json);
    };
    let (index, timestamp_ns) = log.append(&[(EntryKind::Data, &data)])?;
    // From here on the entry is in the log: whatever happens, its index is
    // printed and a receipt written (retrying would append it twice).
    let mut cosigned = true;
    if let Some(path) = &a.receipt {
        let r = match log.receipt(index, None) {
            Ok(r) => r,
            Err(e) => match log.voter_receipt(index) {
                Ok(Some(r)) => {
                    eprintln!(
                        "dlog: appended as entry {index}, but no checkpoint with the cosignatures the trust file requires covers it yet ({}); {} carries the voters' signatures only: upgrade it later with `dlog proof inclusion {index} --out {}`",
                        describe(&e),
                        path.display(),
                        path.display()
                    );
                    cosigned = false;
                    r
                }
                _ => {
                    print_index(index, timestamp_ns, a.json, Some(false));
                    return Err(e.context(format!(
                        "appended as entry {index}, but no receipt could be written"
                    )));
                }
            },
        };
        write_file(path, r.to_tlog_proof().as_bytes())?;
    }
    print_index(
        index,
        timestamp_ns,
        a.json,
        a.receipt.is_some().then_some(cosigned),
    );
    Ok(if cosigned {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_NOT_COSIGNED)
    })
}

/// Exit code of an append that was acknowledged but whose receipt lacks
/// the cosignatures the trust file requires (it can be upgraded later).
const EXIT_NOT_COSIGNED: u8 = 3;

fn print_index(index: u64, timestamp_ns: u64, json: bool, cosigned: Option<bool>) {
    if json {
        let mut j = serde_json::json!({"index": index, "timestamp_ns": timestamp_ns});
        if let Some(c) = cosigned {
            j["cosigned"] = serde_json::json!(c);
        }
        println!("{j}");
    } else if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        println!("appended entry {index}");
    } else {
        println!("{index}");
    }
}

/// Bulk append: each stdin line is an entry. Lines already buffered are
/// committed together (up to 4096 entries or 4 MiB), each batch durable with
/// one fsync (locally) or one Raft entry (cluster); indices are printed once a
/// batch is durable.
fn append_lines(log: &mut dyn Log, json: bool) -> Result<ExitCode> {
    const MAX_BATCH: usize = 4096;
    const MAX_BYTES: usize = 4 << 20;
    let stdin = std::io::stdin();
    let mut input = std::io::BufReader::with_capacity(1 << 20, stdin.lock());
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut lines: Vec<Vec<u8>> = Vec::with_capacity(MAX_BATCH);
    let mut total = 0u64;
    loop {
        lines.clear();
        let mut bytes = 0;
        let mut eof = false;
        while lines.len() < MAX_BATCH && bytes < MAX_BYTES {
            let mut line = Vec::new();
            if input.read_until(b'\n', &mut line)? == 0 {
                eof = true;
                break;
            }
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            bytes += line.len();
            lines.push(line);
            // Stop at what is already buffered, so a slow writer still gets acks.
            if !input.buffer().contains(&b'\n') {
                break;
            }
        }
        if !lines.is_empty() {
            let items: Vec<(EntryKind, &[u8])> = lines
                .iter()
                .map(|l| (EntryKind::Data, l.as_slice()))
                .collect();
            let (first, ts) = log.append(&items)?;
            total += items.len() as u64;
            for i in first..first + items.len() as u64 {
                if json {
                    writeln!(out, "{{\"index\":{i},\"timestamp_ns\":{ts}}}")?;
                } else {
                    writeln!(out, "{i}")?;
                }
            }
            out.flush()?;
        }
        if eof {
            break;
        }
    }
    out.flush()?;
    eprintln!("appended {total} entries");
    Ok(ExitCode::SUCCESS)
}

fn tail(target: &Target, n: u64, follow: bool, json: bool) -> Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut log = target.read()?;
    let mut next = log.size()?.saturating_sub(n);
    loop {
        let size = log.size()?;
        {
            let mut out = stdout.lock();
            for i in next..size {
                print_entry(&mut out, i, &log.entry(i)?, json)?;
            }
            out.flush()?;
        }
        next = size;
        if !follow {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        if target.cluster.is_none() {
            // A local reader sees new appends by reopening the files.
            log = target.read()?;
        }
    }
}

fn emit_receipt(r: &Receipt, out: Option<&Path>, json: bool) -> Result<()> {
    let text = if json {
        r.to_json() + "\n"
    } else {
        r.to_tlog_proof()
    };
    match out {
        Some(p) => write_file(p, text.as_bytes()),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

/// Writes a receipt (or any output file) durably: a temporary file,
/// fsync, rename, fsync of the directory.
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    dlog_ledger::fsutil::write_atomic(path, bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn read_receipt(path: &Path) -> Result<Receipt> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read receipt {}", path.display()))?;
    let parsed = if text.trim_start().starts_with('{') {
        Receipt::from_json(&text)
    } else {
        Receipt::parse_tlog_proof(&text)
    };
    parsed.map_err(|e| anyhow!("malformed receipt {}: {e}", path.display()))
}

fn verify_outcome<T>(r: Result<T, dlog_notary::verify::VerifyError>) -> Result<T> {
    r.map_err(|e| {
        if e.is_malformed() {
            anyhow!("malformed input: {e}")
        } else {
            anyhow::Error::new(VerifyFailed(e.to_string()))
        }
    })
}

/// `dlog repair --from`: every sealed segment scrub finds damaged is
/// fetched from the cluster and replaced (proved against the chain hash
/// the next segment commits to), then the log is scrubbed again.
fn repair_from(dir: &Path, from: &Path, json: bool) -> Result<ExitCode> {
    if dlog_ledger::fsutil::is_locked(dir)? {
        bail!(
            "a process holds the log in {} (its node?): stop it first",
            dir.display()
        );
    }
    let (damaged, bits, open_tail) = {
        let ro = dlog_ledger::Ledger::open(dir, OpenMode::ReadOnly)?;
        let report = ro.scrub()?;
        let sealed = ro.sealed_segments();
        let mut segs: Vec<u64> = report
            .problems
            .iter()
            .map(|p| p.segment)
            .filter(|&s| s < sealed)
            .collect();
        segs.dedup();
        // The open segment from its damage to as far as the file reached
        // (every entry scrub found) and the checkpoint covers.
        let open_tail = ro.damage().map(|d| {
            let cp = ro.checkpoint().map_or(0, |c| c.size);
            (d.entry, report.entries_total.max(cp))
        });
        (segs, ro.meta().segment_bits, open_tail)
    };
    if damaged.is_empty() && open_tail.is_none() {
        if !json {
            println!("no damaged sealed segment in {}", dir.display());
        } else {
            println!("{}", serde_json::json!({"replaced": []}));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let rt = cluster::runtime()?;
    // Ranges to fetch: each damaged sealed segment, and the open tail.
    let mut ranges: Vec<(u64, u64)> = damaged
        .iter()
        .map(|&s| (s << bits, (s + 1) << bits))
        .collect();
    ranges.extend(open_tail);
    let fetched: Vec<Vec<Vec<u8>>> = rt.block_on(async {
        let client = dlog_client::Client::open(from).await?;
        let mut out = Vec::new();
        for &(first, end) in &ranges {
            let mut entries = Vec::with_capacity((end - first) as usize);
            while first + (entries.len() as u64) < end {
                let start = first + entries.len() as u64;
                let want = (end - start).min(u32::MAX as u64) as u32;
                let got = client
                    .entries(None, start, want, false)
                    .await
                    .with_context(|| format!("fetching entry {start} from the cluster"))?;
                entries.extend(got);
            }
            entries.truncate((end - first) as usize);
            out.push(entries);
        }
        client.close().await;
        anyhow::Ok(out)
    })?;
    let mut fetched = fetched.into_iter();
    let fetched_sealed: Vec<(u64, Vec<Vec<u8>>)> = damaged
        .iter()
        .map(|&s| (s, fetched.next().unwrap_or_default()))
        .collect();
    let fetched_tail = open_tail.map(|(from, _)| (from, fetched.next().unwrap_or_default()));
    // The open tail first: a sealed replacement ends with a read-write
    // open, which damage in the open segment would stop.
    let mut replaced = Vec::new();
    if let Some((from, entries)) = fetched_tail {
        let r = dlog_ledger::repair::replace_open_tail(dir, from, &entries)?;
        if !json {
            println!(
                "rewrote open segment {} from entry {from} ({} entries fetched, verified against the stored checkpoint); the damaged file is in {}",
                r.segment,
                r.entries,
                r.evidence.display()
            );
        }
        replaced.push(r);
    }
    for (s, entries) in fetched_sealed {
        let r = dlog_ledger::repair::replace_sealed(dir, s, &entries)?;
        if !json {
            println!(
                "replaced segment {s} ({} entries, verified against the log's chain); the damaged file is in {}",
                r.entries,
                r.evidence.display()
            );
        }
        replaced.push(r);
    }
    let report = dlog_ledger::Ledger::open(dir, OpenMode::ReadOnly)?.scrub()?;
    if json {
        println!(
            "{}",
            serde_json::json!({"replaced": replaced, "scrub": report})
        );
    } else {
        println!(
            "scrub: {} entries, {} problem(s)",
            report.entries_total,
            report.problems.len()
        );
    }
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `dlog proof consistency`: the proof from the log (or its tiles),
/// checked here; with `--old`, the caller's checkpoint checked against the
/// log's tree at its size.
fn consistency(
    target: &Target,
    from: Option<u64>,
    old: Option<&Path>,
    to: Option<u64>,
    tiles: Option<String>,
    trust: Option<&Path>,
) -> Result<ExitCode> {
    let old_note = old.map(read_checkpoint_note).transpose()?;
    let from = match (&old_note, from) {
        (Some(note), _) => {
            dlog_crypto::note::Checkpoint::from_note(note)
                .map_err(|e| anyhow!("--old: {e}"))?
                .size
        }
        (None, Some(f)) => f,
        (None, None) => bail!("give --from SIZE or --old CHECKPOINT"),
    };
    let (mut c, policy) = match tiles {
        Some(tiles) => {
            let trust = trust.ok_or_else(|| anyhow!("--tiles needs --trust"))?;
            let mut t = tiles::open(&tiles, trust)?;
            let to = to.unwrap_or(t.size);
            if from > to || to > t.size {
                bail!("the tiles hold a tree of {}; asked {from} -> {to}", t.size);
            }
            let c = backend::Consistency {
                alg: t.alg,
                old_size: from,
                new_size: to,
                old_root: t.reader.root_at(from)?,
                new_root: t.reader.root_at(to)?,
                proof: t.reader.consistency_proof(from, to)?,
                old_checkpoint: None,
                new_checkpoint: (to == t.size).then(|| t.note.clone()),
            };
            (c, Some(backend::load_trust(trust)?))
        }
        None => {
            let log = target.read()?;
            let c = log.consistency(from, to)?;
            let policy = match trust {
                Some(t) => Some(backend::load_trust(t)?),
                None if old_note.is_some() => log.trust()?,
                None => None,
            };
            (c, policy)
        }
    };
    c.check().map_err(|e| {
        anyhow::Error::new(VerifyFailed(format!(
            "the log's consistency proof {from} -> {} does not verify: {e}",
            c.new_size
        )))
    })?;
    if let Some(note) = old_note {
        let mut policy = policy
            .ok_or_else(|| anyhow!("--old needs a trust file to check it under: give --trust"))?;
        // The log's statement is its voters' signatures; a checkpoint the
        // caller held need not carry auditors' cosignatures.
        policy.cosignatures = 0;
        if policy.hash != c.alg {
            bail!(
                "the trust file says the tree hashes with {}, the log with {}",
                policy.hash,
                c.alg
            );
        }
        let v = policy
            .verify_checkpoint(&note)
            .map_err(|e| anyhow!("--old: {e}"))?;
        if v.checkpoint().root != c.old_root {
            return Err(VerifyFailed(format!(
                "your checkpoint of size {from} has root {}, but the log's tree of size {from} has root {}: the log has forked, or the checkpoint is another log's",
                B64.encode(v.checkpoint().root),
                B64.encode(c.old_root)
            ))
            .into());
        }
        c.old_checkpoint = Some(note);
    }
    println!("{}", c.to_json());
    Ok(ExitCode::SUCCESS)
}

/// A checkpoint note from a file holding the note itself or a receipt
/// (its checkpoint).
fn read_checkpoint_note(path: &Path) -> Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let t = text.trim_start();
    if t.starts_with('{') || t.starts_with("c2sp.org/tlog-proof@v1") {
        return Ok(read_receipt(path)?.checkpoint);
    }
    Ok(text)
}

fn verify(trust: &Path, receipt: &Path, json: bool) -> Result<ExitCode> {
    let policy = backend::load_trust(trust)?;
    let r = read_receipt(receipt)?;
    let v = verify_outcome(dlog_notary::verify::verify_receipt(&policy, &r))?;
    let cp = v.checkpoint();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "verified": true,
                "index": v.index(),
                "tree_size": cp.checkpoint().size,
                "origin": cp.checkpoint().origin,
                "timestamp_ns": v.entry().timestamp_ns,
                "signers": cp.signers(),
                "cosignatures": cp.cosignatures().iter().map(|(n, t)| serde_json::json!({"name": n, "time": t})).collect::<Vec<_>>(),
            })
        );
    } else {
        let witnesses = cp
            .cosignatures()
            .iter()
            .map(|(n, t)| format!("{n} at {t}"))
            .collect::<Vec<_>>();
        println!(
            "verified: entry {} is in {} at tree size {} (signed by {}{})",
            v.index(),
            cp.checkpoint().origin,
            cp.checkpoint().size,
            cp.signers().join(", "),
            if witnesses.is_empty() {
                String::new()
            } else {
                format!("; cosigned by {} (Unix seconds)", witnesses.join(", "))
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn notarize(
    target: &Target,
    files: &[PathBuf],
    alg: DigestAlg,
    label: Option<String>,
    out: Option<PathBuf>,
    json: bool,
) -> Result<ExitCode> {
    let out_is_dir = out.as_ref().is_some_and(|o| o.is_dir());
    if files.len() > 1 && out.is_some() && !out_is_dir {
        bail!("--out must be a directory when notarizing several files");
    }
    // Every receipt's path, checked before anything is appended: under
    // --out DIR the files' relative paths are kept; no two files share a
    // receipt, and no receipt this run did not write is overwritten.
    let paths = receipt_paths(files, out.as_deref(), out_is_dir)?;
    let mut owner: std::collections::HashMap<&Path, &Path> = Default::default();
    for (f, path) in files.iter().zip(&paths) {
        if let Some(other) = owner.insert(path, f) {
            bail!(
                "{} and {} would both get the receipt {}; nothing was notarized",
                other.display(),
                f.display(),
                path.display()
            );
        }
        if path.exists() {
            bail!(
                "{} already exists (a receipt this run did not write is never overwritten); nothing was notarized",
                path.display()
            );
        }
    }
    let mut payloads = Vec::with_capacity(files.len());
    for f in files {
        let digest = dlog_notary::payload::hash_file(f, alg)
            .with_context(|| format!("cannot hash {}", f.display()))?;
        let p = NotaryPayload {
            alg,
            digest,
            label: label.clone(),
        };
        payloads.push(p.encode().map_err(|e| anyhow!("{e}"))?);
    }
    let mut log = target.write()?;
    let items: Vec<(EntryKind, &[u8])> = payloads
        .iter()
        .map(|p| (EntryKind::Notarization, p.as_slice()))
        .collect();
    let (first, _) = log.append(&items)?;
    // Every receipt is written (durably) before anything is printed, so a
    // closed stdout costs none.
    for (i, path) in paths.iter().enumerate() {
        let r = log.receipt(first + i as u64, None).with_context(|| {
            format!("appended as entries {first}.., receipt {}", path.display())
        })?;
        write_file(path, r.to_tlog_proof().as_bytes())?;
    }
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    for (i, (f, path)) in files.iter().zip(&paths).enumerate() {
        let index = first + i as u64;
        if json {
            writeln!(
                w,
                "{}",
                serde_json::json!({"file": f, "index": index, "receipt": path, "payload": String::from_utf8_lossy(&payloads[i])})
            )?;
        } else {
            writeln!(
                w,
                "{} -> entry {index}, receipt {}",
                f.display(),
                path.display()
            )?;
        }
    }
    w.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Where the receipt of each file goes: beside it, at `out` (one file),
/// or under the directory `out` at the file's path relative to the
/// deepest directory holding every file given (`a/x.txt b/x.txt --out r`
/// → `r/a/x.txt.tlog-proof`, `r/b/x.txt.tlog-proof`). Paths are compared
/// as written, made absolute against the current directory; `..` is
/// resolved lexically.
fn receipt_paths(files: &[PathBuf], out: Option<&Path>, out_is_dir: bool) -> Result<Vec<PathBuf>> {
    let with_ext = |p: &Path| {
        let mut s = p.as_os_str().to_owned();
        s.push(".tlog-proof");
        PathBuf::from(s)
    };
    let Some(o) = out.filter(|_| !files.is_empty()) else {
        return Ok(files.iter().map(|f| with_ext(f)).collect());
    };
    if !out_is_dir {
        return Ok(vec![o.to_path_buf()]);
    }
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let absolute: Vec<Vec<std::ffi::OsString>> = files
        .iter()
        .map(|f| {
            let mut parts: Vec<std::ffi::OsString> = Vec::new();
            for c in cwd.join(f).components() {
                match c {
                    std::path::Component::Normal(n) => parts.push(n.to_owned()),
                    std::path::Component::ParentDir => {
                        parts.pop();
                    }
                    _ => {}
                }
            }
            parts
        })
        .collect();
    // The common directory: the longest prefix of every file's parent.
    let mut common = absolute[0].len().saturating_sub(1);
    for p in &absolute[1..] {
        let parent = &p[..p.len().saturating_sub(1)];
        common = common.min(
            parent
                .iter()
                .zip(&absolute[0])
                .take_while(|(a, b)| a == b)
                .count(),
        );
    }
    files
        .iter()
        .zip(&absolute)
        .map(|(f, parts)| {
            if parts.len() <= common {
                bail!("{}: no file name", f.display());
            }
            let rel: PathBuf = parts[common..].iter().collect();
            Ok(o.join(with_ext(&rel)))
        })
        .collect()
}

fn notary_verify(file: &Path, receipt: &Path, trust: &Path, json: bool) -> Result<ExitCode> {
    let policy = backend::load_trust(trust)?;
    let r = read_receipt(receipt)?;
    let v = verify_outcome(dlog_notary::verify::verify_notarized_file(
        &policy, &r, file,
    ))?;
    if json {
        println!(
            "{}",
            serde_json::json!({"verified": true, "file": file, "index": v.index(), "tree_size": v.checkpoint().checkpoint().size, "timestamp_ns": v.entry().timestamp_ns})
        );
    } else {
        println!(
            "verified: {} was notarized as entry {} of {} (tree size {})",
            file.display(),
            v.index(),
            v.checkpoint().checkpoint().origin,
            v.checkpoint().checkpoint().size
        );
    }
    Ok(ExitCode::SUCCESS)
}
