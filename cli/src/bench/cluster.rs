//! `dlog bench --cluster`: a fresh temporary 3-node cluster of real
//! `dlog node run` processes (every byte through WireGuard on loopback, every
//! append fsynced by a majority), measured through the same client library
//! the CLI uses; then, in the same run, a 3-member etcd cluster on the same
//! machine as the baseline, because only ratios travel between machines.
//!
//! Order: DLog bulk and append -> receipt (etcd not running yet); then etcd
//! starts and the 64-client, then the 1-client windows of DLog and etcd
//! alternate (the other cluster idle), reported as medians of the windows and
//! the median of the per-round ratios, so that a neighbour's burst of CPU or
//! disk use on a shared machine hits both sides alike.
//! Every process started here is stopped by PID at the end, on error, and on
//! SIGINT/SIGTERM; the temporary directory is removed unless `--keep`.

use super::etcd::{self as bench_etcd, EtcdCluster};
use crate::bench::BenchArgs;
use crate::bench::{median, pct};
use anyhow::{anyhow, bail, Context, Result};
use dlog_client::Client;
use dlog_devcluster::{self as cluster, ClusterSpec};
use dlog_ledger::EntryKind;
use dlog_notary::receipt::Receipt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The value `--cluster` takes when given without one (`dlog bench --cluster`).
pub const TEMP_CLUSTER: &str = "<temporary bench cluster>";

const NODES: usize = 3;
const ETCD_MEMBERS: usize = 3;

// Targets of issue 4.
const T_BATCH_PER_S: f64 = 300_000.0;
const T_CONC_PER_S: f64 = 20_000.0;
const T_CONC_P99_US: f64 = 30_000.0;
const T_CONC_VS_ETCD: f64 = 4.0;
const T_SINGLE_P50_US: f64 = 1_000.0;
const T_RECEIPT_P99_US: f64 = 50_000.0;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether SIGINT or SIGTERM arrived; long loops stop early when it did.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

#[derive(Clone, Copy)]
enum Goal {
    AtLeast(f64),
    AtMost(f64),
}

struct Row {
    key: String,
    value: f64,
    unit: &'static str,
    goal: Option<Goal>,
    note: String,
}

struct Table {
    json: bool,
    rows: Vec<Row>,
    extra: serde_json::Map<String, serde_json::Value>,
}

impl Table {
    fn add(&mut self, key: &str, value: f64, unit: &'static str, goal: Option<Goal>, note: &str) {
        let row = Row {
            key: key.into(),
            value,
            unit,
            goal,
            note: note.into(),
        };
        if !self.json {
            print_row(&row);
        }
        self.rows.push(row);
    }

    fn set(&mut self, key: &str, v: serde_json::Value) {
        self.extra.insert(key.into(), v);
    }

    fn header(&self) {
        if !self.json {
            println!(
                "{:<38} {:>12} {:<9} {:<12} {:<7} note",
                "figure", "value", "unit", "target", "verdict"
            );
        }
    }

    fn to_json(&self) -> serde_json::Value {
        let mut m = self.extra.clone();
        let mut targets = serde_json::Map::new();
        let mut notes = serde_json::Map::new();
        for r in &self.rows {
            m.insert(r.key.clone(), serde_json::json!(r.value));
            if !r.note.is_empty() {
                notes.insert(r.key.clone(), serde_json::json!(r.note));
            }
            if let Some(g) = r.goal {
                targets.insert(
                    r.key.clone(),
                    serde_json::json!({"target": goal_text(g), "met": met(g, r.value)}),
                );
            }
        }
        m.insert("targets".into(), serde_json::Value::Object(targets));
        m.insert("notes".into(), serde_json::Value::Object(notes));
        serde_json::Value::Object(m)
    }
}

fn goal_text(g: Goal) -> String {
    match g {
        Goal::AtLeast(x) => format!(">= {x}"),
        Goal::AtMost(x) => format!("<= {x}"),
    }
}

fn met(g: Goal, v: f64) -> bool {
    match g {
        Goal::AtLeast(x) => v >= x,
        Goal::AtMost(x) => v <= x,
    }
}

fn print_row(r: &Row) {
    let (target, verdict) = match r.goal {
        Some(g) => (goal_text(g), if met(g, r.value) { "ok" } else { "MISSED" }),
        None => (String::new(), ""),
    };
    println!(
        "{:<38} {:>12.1} {:<9} {:<12} {:<7} {}",
        r.key, r.value, r.unit, target, verdict, r.note
    );
}

/// CPU seconds (user + system) of some processes and of this one.
struct Cpu {
    pids: Vec<u32>,
    /// The DLog leader's metrics URL.
    metrics: Option<String>,
}

/// Counters of a node's metrics endpoint.
#[derive(Clone, Copy, Default)]
struct Counters {
    appends: f64,
    batches: f64,
    /// `(sum, count)` of the leader's commit and append histograms (newer nodes).
    commit: Option<(f64, f64)>,
    append: Option<(f64, f64)>,
}

/// Reads a node's counters from its metrics endpoint.
fn counters(url: &str) -> Option<Counters> {
    let a: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    let text = a.get(url).call().ok()?.body_mut().read_to_string().ok()?;
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    let hist = |name: &str| {
        Some((
            get(&format!("{name}_sum "))?,
            get(&format!("{name}_count "))?,
        ))
    };
    Some(Counters {
        appends: get("dlog_appends_total ")?,
        batches: get("dlog_batches_total ")?,
        commit: hist("dlog_commit_seconds"),
        append: hist("dlog_append_seconds"),
    })
}

/// Mean of a histogram between two samples, in milliseconds.
fn mean_ms(a: Option<(f64, f64)>, b: Option<(f64, f64)>) -> Option<f64> {
    let ((s0, c0), (s1, c1)) = (a?, b?);
    (c1 > c0).then(|| 1e3 * (s1 - s0) / (c1 - c0))
}

#[derive(Clone, Copy)]
struct Sample {
    servers: f64,
    client: f64,
    counters: Option<Counters>,
    at: Instant,
}

fn cpu_secs(pid: &str) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = s.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / tck
}

impl Cpu {
    fn sample(&self) -> Sample {
        Sample {
            servers: self.pids.iter().map(|p| cpu_secs(&p.to_string())).sum(),
            client: cpu_secs("self"),
            counters: self.metrics.as_deref().and_then(counters),
            at: Instant::now(),
        }
    }

    /// Over the phase since `before` (warm-up included): CPU of the servers
    /// and of the bench, and for DLog the leader's Raft batches (each one
    /// commit round: majority fsync + apply) and entries per batch.
    fn since(&self, before: Sample, servers: &str) -> String {
        let now = self.sample();
        let wall = now.at.duration_since(before.at).as_secs_f64().max(1e-9);
        let mut s = format!(
            "CPU: {servers} {:.0}%, bench {:.0}% of a core",
            100.0 * (now.servers - before.servers) / wall,
            100.0 * (now.client - before.client) / wall,
        );
        if let (Some(c0), Some(c1)) = (before.counters, now.counters) {
            if c1.batches > c0.batches {
                s += &format!(
                    "; leader: {:.0} Raft batches/s, {:.1} entries each",
                    (c1.batches - c0.batches) / wall,
                    (c1.appends - c0.appends) / (c1.batches - c0.batches)
                );
            }
            if let Some(m) = mean_ms(c0.commit, c1.commit) {
                s += &format!(", mean commit {m:.1} ms");
            }
            if let Some(m) = mean_ms(c0.append, c1.append) {
                s += &format!(", mean append arrival->ack {m:.1} ms");
            }
        }
        s
    }
}

/// One timed phase of concurrent workers.
struct Phase {
    /// Operations completed in the measured window.
    ops: u64,
    /// Entries they carried.
    entries: u64,
    /// From the end of the warm-up until the last worker finished.
    elapsed: Duration,
    /// Sorted latencies of the measured operations.
    lat: Vec<Duration>,
}

impl Phase {
    fn mean_ms(&self) -> f64 {
        let total: Duration = self.lat.iter().sum();
        1e3 * total.as_secs_f64() / self.lat.len().max(1) as f64
    }

    fn entries_per_s(&self) -> f64 {
        self.entries as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// `workers` tasks each run `op` in a loop: `warmup` unrecorded, then
/// `window` recorded (same tasks, same pooled connections). `op` returns the
/// number of entries it appended.
async fn drive<F, Fut>(workers: usize, warmup: Duration, window: Duration, op: F) -> Result<Phase>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<u64>> + Send + 'static,
{
    let barrier = Arc::new(tokio::sync::Barrier::new(workers + 1));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (op, barrier) = (op.clone(), barrier.clone());
        set.spawn(async move {
            barrier.wait().await;
            let warm_end = Instant::now() + warmup;
            let deadline = warm_end + window;
            let (mut lat, mut entries) = (Vec::new(), 0u64);
            while Instant::now() < deadline && !interrupted() {
                let t = Instant::now();
                let n = op().await?;
                if t >= warm_end {
                    lat.push(t.elapsed());
                    entries += n;
                }
            }
            Ok::<_, anyhow::Error>((lat, entries))
        });
    }
    barrier.wait().await;
    let start = Instant::now() + warmup;
    let (mut lat, mut entries) = (Vec::new(), 0);
    while let Some(r) = set.join_next().await {
        let (l, e) = r.map_err(|e| anyhow!("bench task failed: {e}"))??;
        lat.extend(l);
        entries += e;
    }
    let elapsed = Instant::now().saturating_duration_since(start);
    if interrupted() {
        bail!("interrupted");
    }
    lat.sort();
    Ok(Phase {
        ops: lat.len() as u64,
        entries,
        elapsed,
        lat,
    })
}

/// Stops the node processes this bench started and removes its directory
/// (unless kept), whatever way the bench ends.
struct Cleanup {
    /// Removed at the end unless `keep`.
    dir: PathBuf,
    /// The cluster directory whose nodes (by their PID files) are running.
    nodes: Option<PathBuf>,
    keep: bool,
}

impl Cleanup {
    fn stop_nodes(&mut self) -> Result<()> {
        if let Some(d) = self.nodes.take() {
            cluster::stop(&d).with_context(|| format!("stopping the nodes of {}", d.display()))?;
        }
        Ok(())
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Err(e) = self.stop_nodes() {
            eprintln!("dlog bench: {e:#}");
        }
        if self.keep {
            eprintln!("dlog bench: kept {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Options that only `dlog bench --cluster` reads.
pub struct ClusterOpts {
    /// Batches in flight in the bulk phase.
    pub in_flight: usize,
    /// Warm-up before each phase.
    pub warmup: Duration,
    /// Keep the directory.
    pub keep: bool,
    /// Skip the etcd baseline.
    pub no_etcd: bool,
}

/// Runs `dlog bench --cluster`.
pub fn run(a: &BenchArgs, o: &ClusterOpts) -> Result<ExitCode> {
    if a.batch == 0 || a.appenders == 0 || o.in_flight == 0 {
        bail!("--batch, --appenders and --in-flight must be at least 1");
    }
    if !(a.seconds > 0.0 && a.seconds.is_finite()) {
        bail!("--seconds must be positive");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    {
        use tokio::signal::unix::{signal, SignalKind};
        let _g = rt.enter();
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        rt.spawn(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            INTERRUPTED.store(true, Ordering::Relaxed);
        });
    }
    let parent = a.scratch.clone().unwrap_or_else(std::env::temp_dir);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let dir = parent.join(format!("dlog-bench-cluster-{}-{stamp}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut cleanup = Cleanup {
        dir: dir.clone(),
        nodes: None,
        keep: o.keep,
    };
    let mut t = Table {
        json: a.json,
        rows: Vec::new(),
        extra: serde_json::Map::new(),
    };
    let res = rt.block_on(async {
        tokio::select! {
            r = body(a, o, &dir, &mut cleanup, &mut t) => r,
            _ = async { while !interrupted() { tokio::time::sleep(Duration::from_millis(50)).await } } => {
                Err(anyhow!("interrupted"))
            }
        }
    });
    drop(cleanup);
    rt.shutdown_timeout(Duration::from_secs(1));
    match res {
        Ok(()) => {
            if a.json {
                println!("{}", t.to_json());
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if interrupted() => {
            Err(e.context("interrupted; the processes it started are stopped"))
        }
        Err(e) => Err(e),
    }
}

async fn body(
    a: &BenchArgs,
    o: &ClusterOpts,
    dir: &Path,
    cleanup: &mut Cleanup,
    t: &mut Table,
) -> Result<()> {
    let window = Duration::from_secs_f64(a.seconds);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    if !a.json {
        println!(
            "dlog bench --cluster: {NODES} `dlog node run` processes on loopback (WireGuard, Raft, fsync) on {cores} cores; payload {} B; warm-up {:.1} s + {:.1} s per phase",
            a.payload,
            o.warmup.as_secs_f64(),
            a.seconds
        );
        println!(
            "directory {} ({})",
            dir.display(),
            if o.keep {
                "kept"
            } else {
                "removed at the end; --keep keeps it"
            }
        );
    }
    for (k, v) in [
        ("mode", serde_json::json!("cluster")),
        ("nodes", serde_json::json!(NODES)),
        ("cores", serde_json::json!(cores)),
        ("payload", serde_json::json!(a.payload)),
        ("batch", serde_json::json!(a.batch)),
        ("in_flight", serde_json::json!(o.in_flight)),
        ("appenders", serde_json::json!(a.appenders)),
        ("seconds", serde_json::json!(a.seconds)),
        ("warmup", serde_json::json!(o.warmup.as_secs_f64())),
    ] {
        t.set(k, v);
    }

    // The cluster, as `dlog cluster up` makes it.
    let cdir = dir.join("dlog");
    let spec = ClusterSpec {
        nodes: NODES,
        origin: "dlog/bench".into(),
        ..ClusterSpec::default()
    };
    let layout = cluster::generate(&cdir, &spec)?;
    // Each node serves its counters on a loopback port: the bench reads the
    // leader's to show how appends were grouped into Raft entries.
    let mut metrics = Vec::new();
    for cfg in &layout.node_configs {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let text = std::fs::read_to_string(cfg)?;
        let text = text.replacen(
            "\n[log]",
            &format!("metrics = \"127.0.0.1:{port}\"\n\n[log]"),
            1,
        );
        std::fs::write(cfg, text)?;
        metrics.push(format!("http://127.0.0.1:{port}/metrics"));
    }
    let exe = std::env::current_exe()?;
    let args = ["node", "run", "--config"].map(std::ffi::OsString::from);
    cleanup.nodes = Some(cdir.clone());
    let pids = cluster::start(&cdir, &exe, &args)?;
    t.set("node_pids", serde_json::json!(pids));
    let leader = {
        let c = Client::open(&layout.client_config).await?;
        let l = cluster::wait_for_leader(&c, Duration::from_secs(30)).await;
        c.close().await;
        l?.1
    };
    // Point the client at the leader first, as a long-lived client would end
    // up anyway (a follower forwards appends: one more hop).
    let mut order = vec![leader.clone()];
    order.extend(
        (1..=NODES)
            .map(|i| format!("node-{i}"))
            .filter(|n| *n != leader),
    );
    let bench_toml = cdir.join("bench-client.toml");
    std::fs::write(
        &bench_toml,
        format!(
            "wg_key = \"client.key\"\npeers = \"peers.toml\"\nnodes = [{}]\ntrust = \"trust.toml\"\n",
            order
                .iter()
                .map(|n| format!("\"{n}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )?;
    let client = Arc::new(Client::open(&bench_toml).await?);
    let leader_idx: usize = leader
        .strip_prefix("node-")
        .and_then(|i| i.parse::<usize>().ok())
        .ok_or_else(|| anyhow!("unexpected leader name {leader}"))?;
    let cpu = Cpu {
        pids: pids.clone(),
        metrics: metrics.get(leader_idx - 1).cloned(),
    };
    if !a.json {
        println!("leader {leader}; node PIDs {pids:?}\n");
    }
    t.header();
    let payload: Arc<Vec<u8>> = Arc::new(vec![b'x'; a.payload]);
    let res = async {
        // The disk's own speed, in this run: a replicated append costs at
        // least one fsync (a follower's, with the leader's beside it) plus
        // two tunnel round trips, so this bounds the 1-appender latency from
        // below on a machine whose disk varies from hour to hour.
        let mut fsync = crate::bench::fsync_samples(&dir.join("fsync-baseline"), Duration::from_secs(1))?;
        fsync.sort();
        let fsync_p50 = pct(&fsync, 0.5);
        t.add(
            "baseline.fsync_p50_us",
            fsync_p50,
            "us",
            None,
            &format!("raw write(4 KiB)+fdatasync in the nodes' file system, {} in 1 s, cluster idle", fsync.len()),
        );
        // Bulk appends write about 0.9 KB per entry across three nodes
        // (segment, Raft log, side files); on a shared disk the bulk figure
        // follows what the disk absorbs at the time.
        let bw = crate::bench::write_bandwidth(&dir.join("write-baseline"), 256 << 20)?;
        t.add(
            "baseline.write_mb_s",
            bw / 1e6,
            "MB/s",
            None,
            "raw 256 MiB of 1 MiB writes + one fdatasync, same file system, cluster idle",
        );
        let dlog = dlog_phases(a, o, window, &client, &payload, &cpu, t).await?;
        let etcd = start_etcd(o, dir, t)?;
        let ecpu = etcd.as_ref().map(|e| Cpu {
            pids: e.pids(),
            metrics: None,
        });
        let (conc, single) = concurrent_and_single(
            a,
            o,
            window,
            &client,
            &payload,
            &cpu,
            etcd.as_ref().zip(ecpu.as_ref()),
            t,
        )
        .await?;
        t.add(
            "ratio.single_p50_over_fsync",
            median(single.dp50.clone()) / fsync_p50.max(1e-9),
            "x",
            None,
            "1-appender p50 / raw fsync p50, same run (1 = one fsync and nothing else: the leader's and a follower's run side by side)",
        );
        let Some(etcd) = etcd else {
            return Ok(());
        };
        drop(etcd);
        if interrupted() {
            bail!("interrupted");
        }
        if !a.json {
            println!();
        }
        let ratios = |d: &[f64], e: &[f64], f: fn(f64, f64) -> f64| {
            median(d.iter().zip(e).map(|(d, e)| f(*d, *e)).collect())
        };
        t.add(
            "ratio.concurrent_dlog_over_etcd",
            ratios(&conc.drate, &conc.erate, |d, e| d / e.max(1e-9)),
            "x",
            Some(Goal::AtLeast(T_CONC_VS_ETCD)),
            &format!(
                "DLog appends/s / etcd puts/s, {} clients each; median of {} alternating windows",
                a.appenders, conc.rounds
            ),
        );
        t.add(
            "ratio.single_p50_etcd_over_dlog",
            ratios(&single.dp50, &single.ep50, |d, e| e / d.max(1e-9)),
            "x",
            None,
            &format!(
                "etcd put p50 / DLog append p50, 1 client each (above 1: DLog faster); median of {} alternating windows",
                single.rounds
            ),
        );
        t.add(
            "ratio.batch_entries_over_etcd_puts",
            dlog.batch_per_s / median(conc.erate.clone()).max(1e-9),
            "x",
            None,
            "DLog bulk entries/s / etcd concurrent puts/s",
        );
        Ok(())
    }
    .await;
    if let Ok(c) = Arc::try_unwrap(client) {
        c.close().await;
    }
    cleanup.stop_nodes()?;
    res
}

/// Starts the etcd baseline unless skipped (`None`, with the reason printed).
fn start_etcd(o: &ClusterOpts, dir: &Path, t: &mut Table) -> Result<Option<EtcdCluster>> {
    if o.no_etcd {
        t.set("etcd", serde_json::json!({"skipped": "--no-etcd"}));
        if !t.json {
            println!("\netcd baseline skipped (--no-etcd)");
        }
        return Ok(None);
    }
    let Some(bin) = bench_etcd::find() else {
        let why = format!(
            "no etcd binary on PATH; install it with `{}`",
            bench_etcd::INSTALL_HINT
        );
        t.set("etcd", serde_json::json!({"skipped": why}));
        if !t.json {
            println!("\netcd baseline SKIPPED: {why}");
        }
        return Ok(None);
    };
    let version = bench_etcd::version(&bin);
    // A port taken between probing and etcd's bind fails one start; the
    // DLog figures of the run should not be lost to it.
    const ATTEMPTS: usize = 3;
    let mut attempt = 1;
    let etcd = loop {
        match EtcdCluster::start(
            &bin,
            &dir.join(format!("etcd-{attempt}")),
            ETCD_MEMBERS,
            Duration::from_secs(30),
        ) {
            Ok(e) => break e,
            Err(e) if attempt < ATTEMPTS && !interrupted() => {
                eprintln!("etcd baseline: start {attempt} of {ATTEMPTS} failed ({e:#}); retrying");
                attempt += 1;
            }
            Err(e) => return Err(e.context("etcd baseline")),
        }
    };
    t.set(
        "etcd",
        serde_json::json!({"version": version, "binary": bin, "gateway": etcd.gateway, "leader": etcd.leader}),
    );
    t.set("etcd_pids", serde_json::json!(etcd.pids()));
    if !t.json {
        println!(
            "\netcd baseline: {version}, {ETCD_MEMBERS} members on loopback, JSON gateway {} (leader {}), HTTP/1.1 keep-alive, one connection per worker thread",
            etcd.gateway, etcd.leader
        );
        println!(
            "64-client and 1-client figures: DLog and etcd windows alternate (the other cluster idle), medians of the windows\n"
        );
    }
    Ok(Some(etcd))
}

/// Both sides of one comparison: `workers` single-entry DLog appenders and
/// `workers` etcd put clients. With etcd, their windows alternate (3 rounds)
/// so that a neighbour's burst of CPU or disk use hits both sides alike.
struct Alternated {
    rounds: usize,
    /// Per-round DLog appends/s and p50 (us).
    drate: Vec<f64>,
    dp50: Vec<f64>,
    /// All DLog latencies, sorted.
    dlat: Vec<Duration>,
    dmean_ms: Vec<f64>,
    dnote: String,
    /// The same for etcd (empty without etcd).
    erate: Vec<f64>,
    ep50: Vec<f64>,
    elat: Vec<Duration>,
    enote: String,
}

impl Alternated {
    fn windows(&self) -> String {
        if self.rounds > 1 {
            format!("median of {} windows; ", self.rounds)
        } else {
            String::new()
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn alternate(
    a: &BenchArgs,
    o: &ClusterOpts,
    window: Duration,
    client: &Arc<Client>,
    payload: &Arc<Vec<u8>>,
    cpu: &Cpu,
    etcd: Option<(&EtcdCluster, &Cpu)>,
    workers: usize,
) -> Result<Alternated> {
    let rounds = if etcd.is_some() { 3 } else { 1 };
    let mut r = Alternated {
        rounds,
        drate: Vec::new(),
        dp50: Vec::new(),
        dlat: Vec::new(),
        dmean_ms: Vec::new(),
        dnote: String::new(),
        erate: Vec::new(),
        ep50: Vec::new(),
        elat: Vec::new(),
        enote: String::new(),
    };
    for round in 0..rounds {
        let warm = if round == 0 {
            o.warmup
        } else {
            o.warmup.min(Duration::from_millis(300))
        };
        let before = cpu.sample();
        let p = drive(workers, warm, window, append_op(client, payload, 1)).await?;
        r.dnote = cpu.since(before, "nodes");
        r.drate.push(p.entries_per_s());
        r.dp50.push(pct(&p.lat, 0.5));
        r.dmean_ms.push(p.mean_ms());
        r.dlat.extend(p.lat.iter().copied());
        if let Some((e, ecpu)) = etcd {
            let before = ecpu.sample();
            let q = bench_etcd::puts(&e.gateway, workers, a.payload, warm, window)?;
            r.enote = ecpu.since(before, "etcd");
            r.erate.push(q.rate());
            r.ep50.push(pct(&q.lat, 0.5));
            r.elat.extend(q.lat);
        }
    }
    r.dlat.sort();
    r.elat.sort();
    Ok(r)
}

/// (b) 64 concurrent single-entry appenders (the leader group-commits
/// them) and (c) one appender, each against etcd when it runs.
#[allow(clippy::too_many_arguments)]
async fn concurrent_and_single(
    a: &BenchArgs,
    o: &ClusterOpts,
    window: Duration,
    client: &Arc<Client>,
    payload: &Arc<Vec<u8>>,
    cpu: &Cpu,
    etcd: Option<(&EtcdCluster, &Cpu)>,
    t: &mut Table,
) -> Result<(Alternated, Alternated)> {
    let c = alternate(a, o, window, client, payload, cpu, etcd, a.appenders).await?;
    let w = c.windows();
    t.add(
        "cluster.concurrent_appends_per_s",
        median(c.drate.clone()),
        "append/s",
        Some(Goal::AtLeast(T_CONC_PER_S)),
        &format!(
            "{} appenders, one entry each; {w}client mean {:.1} ms; last window {}",
            a.appenders,
            median(c.dmean_ms.clone()),
            c.dnote
        ),
    );
    t.add(
        "cluster.concurrent_p50_us",
        pct(&c.dlat, 0.5),
        "us",
        None,
        "",
    );
    t.add(
        "cluster.concurrent_p99_us",
        pct(&c.dlat, 0.99),
        "us",
        Some(Goal::AtMost(T_CONC_P99_US)),
        "",
    );
    if etcd.is_some() {
        t.add(
            "etcd.put_concurrent_per_s",
            median(c.erate.clone()),
            "put/s",
            None,
            &format!(
                "{} clients, {} B values; {w}last window {}",
                a.appenders, a.payload, c.enote
            ),
        );
        t.add(
            "etcd.put_concurrent_p50_us",
            pct(&c.elat, 0.5),
            "us",
            None,
            "",
        );
        t.add(
            "etcd.put_concurrent_p99_us",
            pct(&c.elat, 0.99),
            "us",
            None,
            "",
        );
    }
    let s = alternate(a, o, window, client, payload, cpu, etcd, 1).await?;
    let w = s.windows();
    t.add(
        "cluster.single_p50_us",
        pct(&s.dlat, 0.5),
        "us",
        Some(Goal::AtMost(T_SINGLE_P50_US)),
        &format!(
            "one appender, {} appends; {w}client mean {:.2} ms; last window {}",
            s.dlat.len(),
            median(s.dmean_ms.clone()),
            s.dnote
        ),
    );
    t.add("cluster.single_p99_us", pct(&s.dlat, 0.99), "us", None, "");
    if etcd.is_some() {
        t.add(
            "etcd.put_single_p50_us",
            pct(&s.elat, 0.5),
            "us",
            None,
            &format!(
                "1 client, {} puts; {w}last window {}",
                s.elat.len(),
                s.enote
            ),
        );
        t.add("etcd.put_single_p99_us", pct(&s.elat, 0.99), "us", None, "");
    }
    Ok((c, s))
}

/// An operation appending `entries` entries of `payload`; returns the count.
fn append_op(
    client: &Arc<Client>,
    payload: &Arc<Vec<u8>>,
    entries: usize,
) -> impl Fn() -> Pin<Box<dyn Future<Output = Result<u64>> + Send>> + Clone + Send + 'static {
    let (c, p) = (client.clone(), payload.clone());
    move || {
        let (c, p) = (c.clone(), p.clone());
        Box::pin(async move {
            let items: Vec<(EntryKind, &[u8])> = (0..entries)
                .map(|_| (EntryKind::Data, p.as_slice()))
                .collect();
            let got = c.append(&items).await?;
            anyhow::ensure!(
                got.count == entries as u64,
                "asked to append {entries}, the cluster acknowledged {}",
                got.count
            );
            Ok(got.count)
        })
    }
}

/// DLog figures the etcd ratios need.
struct DlogFigures {
    batch_per_s: f64,
}

async fn dlog_phases(
    a: &BenchArgs,
    o: &ClusterOpts,
    window: Duration,
    client: &Arc<Client>,
    payload: &Arc<Vec<u8>>,
    cpu: &Cpu,
    t: &mut Table,
) -> Result<DlogFigures> {
    // (a) Bulk: batches in flight, as a bulk loader would run.
    let before = cpu.sample();
    let bulk = drive(
        o.in_flight,
        o.warmup,
        window,
        append_op(client, payload, a.batch),
    )
    .await?;
    let note = cpu.since(before, "nodes");
    t.add(
        "cluster.batch_entries_per_s",
        bulk.entries_per_s(),
        "entry/s",
        Some(Goal::AtLeast(T_BATCH_PER_S)),
        &format!(
            "acknowledged; batches of {}, {} in flight ({} batches, client mean {:.1} ms); {note}",
            a.batch,
            o.in_flight,
            bulk.ops,
            bulk.mean_ms()
        ),
    );
    t.add(
        "cluster.batch_p50_us",
        pct(&bulk.lat, 0.5),
        "us",
        None,
        "per acknowledged batch",
    );
    t.add("cluster.batch_p99_us", pct(&bulk.lat, 0.99), "us", None, "");

    // (d) Append -> receipt under a majority-signed checkpoint: the calls of
    // `dlog --cluster C append X --receipt R`, in the same order.
    let trust = client
        .trust()
        .cloned()
        .ok_or_else(|| anyhow!("the generated client.toml has no trust file"))?;
    let mut lat = Vec::new();
    let (mut wait_cp, mut rest) = (Vec::new(), Vec::new());
    let mut receipts = Vec::new();
    let before = cpu.sample();
    let warm_end = Instant::now() + o.warmup;
    let deadline = warm_end + window;
    while Instant::now() < deadline && !interrupted() {
        let t0 = Instant::now();
        let got = client
            .append(&[(EntryKind::Data, payload.as_slice())])
            .await?;
        let t1 = Instant::now();
        let cp = client.checkpoint_covering(got.first).await?;
        let t2 = Instant::now();
        let inclusion = client.inclusion_proof(got.first, cp.size).await?;
        let entry = client.get(got.first).await?;
        let r = Receipt {
            entry,
            index: got.first,
            inclusion,
            checkpoint: cp.note,
        };
        let t3 = Instant::now();
        if t0 >= warm_end {
            lat.push(t3 - t0);
            wait_cp.push(t2 - t1);
            rest.push(t3 - t2);
            receipts.push(r);
        }
    }
    if interrupted() {
        bail!("interrupted");
    }
    let note = cpu.since(before, "nodes");
    // Every receipt must verify offline against the trust file (not timed).
    for r in &receipts {
        dlog_notary::verify::verify_receipt(&trust, r)
            .map_err(|e| anyhow!("receipt for entry {} does not verify: {e}", r.index))?;
    }
    lat.sort();
    wait_cp.sort();
    rest.sort();
    t.add(
        "cluster.receipt_p50_us",
        pct(&lat, 0.5),
        "us",
        None,
        &format!(
            "append + majority-signed checkpoint + proof, {} receipts, all verified; {note}",
            lat.len()
        ),
    );
    t.add(
        "cluster.receipt_p99_us",
        pct(&lat, 0.99),
        "us",
        Some(Goal::AtMost(T_RECEIPT_P99_US)),
        "",
    );
    t.add(
        "cluster.receipt_checkpoint_wait_p50_us",
        pct(&wait_cp, 0.5),
        "us",
        None,
        "of which: waiting for a signed checkpoint covering it (the node answers the long poll once it stores one; rounds start at most every 10 ms)",
    );
    t.add(
        "cluster.receipt_proof_p50_us",
        pct(&rest, 0.5),
        "us",
        None,
        "of which: inclusion proof + entry",
    );

    // The replicas agree on what was acknowledged. A node still busy
    // applying the last phase's backlog gets a few seconds to answer; one
    // that stays silent fails the run.
    let mut sizes = Vec::new();
    for name in client.node_names() {
        let end = Instant::now() + Duration::from_secs(5);
        let s = loop {
            match client.status(&name).await {
                Ok(s) => break s,
                Err(e) if Instant::now() >= end => {
                    bail!("{name} does not answer after the bench: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        match s.diverged {
            None => sizes.push(s.ledger_size),
            Some(d) => bail!("{name} diverged: {d}"),
        }
    }
    t.set("cluster.ledger_sizes", serde_json::json!(sizes));
    Ok(DlogFigures {
        batch_per_s: bulk.entries_per_s(),
    })
}
