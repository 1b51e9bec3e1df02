//! Local multi-node clusters on loopback: key and config generation, and
//! starting/stopping node processes.
//!
//! Layout written by [`generate`] under a directory `D`:
//!
//! ```text
//! D/peers.toml            dlog-wg peer table: every node, the client, the admin
//! D/trust.toml            origin, voter vkeys, quorum = majority
//! D/client.toml, D/client.key    a `client` peer (append + read)
//! D/admin.toml,  D/admin.key     an `admin` peer (membership)
//! D/node-N/node.toml      node config (see `dlog_node::config`)
//! D/node-N/wg.key, node.key     transport and signing keys (0600)
//! D/node-N/data/          the node's data (created at first start)
//! D/node-N/node.log, node.pid   written by start()
//! D/auditor-N/auditor.toml  auditor config (with `ClusterSpec::auditors`)
//! D/auditor-N/wg.key, auditor.key   transport and cosigning keys (0600)
//! D/auditor-N/state/        the auditor's state file
//! D/auditor-N/auditor.log, auditor.pid   written by start_auditors()
//! ```
#![deny(missing_docs)]

mod error;

use std::ffi::OsString;
use std::fmt::Write as _;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dlog_crypto::keys::NodeKey;
use dlog_crypto::trust::TrustPolicy;

use dlog_client::{Client, NodeId, NodeStatus};

pub use error::{Error, Result};

/// What to generate.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Number of voters.
    pub nodes: usize,
    /// Extra nodes generated as learners (not in the initial membership), for add-node.
    pub spare_nodes: usize,
    /// Checkpoint origin (default `dlog/<name>`).
    pub origin: String,
    /// Segment bits.
    pub segment_bits: u8,
    /// Raft snapshot interval in log entries (`None`: the node default).
    pub snapshot_every: Option<u64>,
    /// Auditors: keys and configs, `auditor` peers, cosigner keys in the
    /// trust file.
    pub auditors: usize,
    /// Auditor cosignatures the trust file requires (at most `auditors`).
    pub cosignatures: usize,
    /// Tunnel MTU written into every node and client config (`None`: the
    /// default, for loopback).
    pub mtu: Option<usize>,
    /// The log's tree hash (node configs' `log.hash` and the trust file).
    pub hash: dlog_crypto::HashAlg,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            nodes: 3,
            spare_nodes: 0,
            origin: "dlog/local".into(),
            segment_bits: 16,
            snapshot_every: None,
            auditors: 0,
            cosignatures: 0,
            mtu: None,
            hash: dlog_crypto::HashAlg::Blake3,
        }
    }
}

/// Paths of a generated cluster.
#[derive(Debug, Clone)]
pub struct ClusterLayout {
    /// The directory.
    pub dir: PathBuf,
    /// `node-N/node.toml` per node (voters first, then spares).
    pub node_configs: Vec<PathBuf>,
    /// `client.toml`.
    pub client_config: PathBuf,
    /// `admin.toml`.
    pub admin_config: PathBuf,
    /// `trust.toml`.
    pub trust: PathBuf,
    /// `auditor-N/auditor.toml` per auditor.
    pub auditor_configs: Vec<PathBuf>,
}

fn free_udp_port() -> Result<u16> {
    let s = UdpSocket::bind("127.0.0.1:0").map_err(Error::io("bind", "127.0.0.1:0"))?;
    Ok(s.local_addr()
        .map_err(Error::io("local_addr", "udp"))?
        .port())
}

fn write_new(path: &Path, text: &str) -> Result<()> {
    if path.exists() {
        return Err(Error::config(path, "-", "exists; refusing to overwrite"));
    }
    dlog_ledger::store::write_atomic(path, text.as_bytes())?;
    Ok(())
}

/// Edits the `nodes = [...]` list of the cluster's `client.toml` and
/// `admin.toml` (the nodes a client asks first, and whose statuses `dlog
/// cluster status` shows), keeping every other line as it is.
fn edit_config_nodes(dir: &Path, edit: impl Fn(&mut Vec<String>)) -> Result<()> {
    #[derive(serde::Deserialize)]
    struct Nodes {
        nodes: Vec<String>,
    }
    for who in ["client", "admin"] {
        let path = dir.join(format!("{who}.toml"));
        let text = std::fs::read_to_string(&path).map_err(Error::io("read", &path))?;
        let mut nodes = toml::from_str::<Nodes>(&text)
            .map_err(|e| Error::config(&path, "nodes", e.message()))?
            .nodes;
        edit(&mut nodes);
        let list = nodes
            .iter()
            .map(|n| toml::Value::String(n.clone()).to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let mut found = false;
        let mut out = String::with_capacity(text.len() + 16);
        for line in text.lines() {
            if !found && line.trim_start().starts_with("nodes") && line.contains('[') {
                if !line.contains(']') {
                    return Err(Error::config(
                        &path,
                        "nodes",
                        "a list over several lines; edit it by hand",
                    ));
                }
                found = true;
                let _ = writeln!(out, "nodes = [{list}]");
            } else {
                let _ = writeln!(out, "{line}");
            }
        }
        if !found {
            return Err(Error::config(&path, "nodes", "no `nodes = [...]` line"));
        }
        dlog_ledger::store::write_atomic(&path, out.as_bytes())?;
    }
    Ok(())
}

fn write_secret(path: &Path, text: &str) -> Result<()> {
    Ok(dlog_ledger::fsutil::write_secret(path, text.as_bytes())?)
}

fn peer_block(
    out: &mut String,
    name: &str,
    key: &dlog_wg::keys::KeyFile,
    endpoint: Option<u16>,
    addr: &str,
    role: &str,
) {
    let _ = writeln!(
        out,
        "[[peer]]\nname = \"{name}\"\npublic_key = \"{}\"\nkem_public_key = \"{}\"",
        key.public_key_b64(),
        key.kem_public_key_b64()
    );
    if let Some(p) = endpoint {
        let _ = writeln!(out, "endpoint = \"127.0.0.1:{p}\"");
    }
    let _ = writeln!(out, "address = \"{addr}\"\nrole = \"{role}\"\n");
}

/// Generates keys and configs for a loopback cluster in `dir` (which must not
/// hold one already).
pub fn generate(dir: &Path, spec: &ClusterSpec) -> Result<ClusterLayout> {
    if spec.nodes == 0 {
        return Err(Error::config(
            dir,
            "nodes",
            "a cluster needs at least one node",
        ));
    }
    if dir.join("peers.toml").exists() {
        return Err(Error::Process(format!(
            "a cluster already exists in {d} (start it again: `dlog cluster start --dir {d}`; \
             or choose another directory)",
            d = dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(Error::io("create directory", dir))?;
    let mut log_id = [0u8; 16];
    getrandom::fill(&mut log_id).map_err(|e| Error::Process(format!("getrandom: {e}")))?;
    let log_id: String = log_id.iter().map(|b| format!("{b:02x}")).collect();
    let total = spec.nodes + spec.spare_nodes;
    let mut peers =
        String::from("# DLog peer table: every process of the cluster, by WireGuard key.\n\n");
    let mut verifiers = Vec::new();
    let mut members = String::new();
    let mut node_configs = Vec::new();
    let mut ports = Vec::new();
    for i in 1..=total {
        let name = format!("node-{i}");
        let ndir = dir.join(&name);
        std::fs::create_dir_all(&ndir).map_err(Error::io("create directory", &ndir))?;
        let wg = dlog_wg::keys::generate()?;
        dlog_wg::keys::write_key_file(&ndir.join("wg.key"), &wg)?;
        let nk =
            NodeKey::generate(&name).map_err(|e| Error::Process(format!("key generation: {e}")))?;
        write_secret(&ndir.join("node.key"), &nk.to_toml_string())?;
        let port = free_udp_port()?;
        ports.push(port);
        let role = if i <= spec.nodes { "voter" } else { "learner" };
        peer_block(
            &mut peers,
            &name,
            &wg,
            Some(port),
            &format!("10.77.0.{i}"),
            role,
        );
        if i <= spec.nodes {
            verifiers.push(nk.note_signer().verifier());
            let _ = write!(
                members,
                "{}{{ id = {i}, name = \"{name}\" }}",
                if i > 1 { ", " } else { "" }
            );
        }
    }
    // The tunnel MTU line of every node and client config (none: the default).
    let mtu_line = spec.mtu.map(|m| format!("mtu = {m}\n")).unwrap_or_default();
    for i in 1..=total {
        let name = format!("node-{i}");
        let cfg = format!(
            "# DLog node config (generated by `dlog cluster up`).\n\
             name = \"{name}\"\nid = {i}\ndata_dir = \"data\"\nlisten = \"127.0.0.1:{port}\"\n\
             wg_key = \"wg.key\"\nnode_key = \"node.key\"\npeers = \"../peers.toml\"\ntrust = \"../trust.toml\"\n\
             {mtu}# The nodes of this directory share this machine's cores.\nworkers = {workers}\n\n\
             [log]\norigin = \"{origin}\"\nlog_id = \"{log_id}\"\nsegment_bits = {bits}\n{hash}\n\
             [cluster]\nbootstrap = {boot}\nmembers = [{members}]\n",
            port = ports[i - 1],
            origin = spec.origin,
            bits = spec.segment_bits,
            boot = i == 1,
            workers = workers_per_node(total),
            mtu = mtu_line,
            hash = match spec.hash {
                dlog_crypto::HashAlg::Blake3 => String::new(),
                h => format!("hash = \"{h}\"\n"),
            },
        );
        let mut cfg = cfg;
        if let Some(n) = spec.snapshot_every {
            let _ = write!(cfg, "\n[raft]\nsnapshot_every = {n}\n");
        }
        let p = dir.join(&name).join("node.toml");
        write_new(&p, &cfg)?;
        if i > spec.nodes {
            // Not started by `start`: it joins later as a learner (add-node).
            write_new(
                &dir.join(&name).join("spare"),
                "spare node: start it, then add it as a learner\n",
            )?;
        }
        node_configs.push(p);
    }
    let nodes_list = (1..=spec.nodes)
        .map(|i| format!("\"node-{i}\""))
        .collect::<Vec<_>>()
        .join(", ");
    for (who, role, octet) in [("client", "client", 1), ("admin", "admin", 2)] {
        let key = dlog_wg::keys::generate()?;
        dlog_wg::keys::write_key_file(&dir.join(format!("{who}.key")), &key)?;
        peer_block(
            &mut peers,
            who,
            &key,
            None,
            &format!("10.77.1.{octet}"),
            role,
        );
        write_new(
            &dir.join(format!("{who}.toml")),
            &format!(
                "# DLog {who} config: `dlog --cluster {who}.toml ...`\n\
                 wg_key = \"{who}.key\"\npeers = \"peers.toml\"\nnodes = [{nodes_list}]\ntrust = \"trust.toml\"\n{mtu}",
                mtu = mtu_line,
            ),
        )?;
    }
    let mut cosigners = Vec::new();
    let mut auditor_configs = Vec::new();
    let all_nodes = (1..=total)
        .map(|i| format!("\"node-{i}\""))
        .collect::<Vec<_>>()
        .join(", ");
    for i in 1..=spec.auditors {
        let name = format!("auditor-{i}");
        let adir = dir.join(&name);
        std::fs::create_dir_all(&adir).map_err(Error::io("create directory", &adir))?;
        let wg = dlog_wg::keys::generate()?;
        dlog_wg::keys::write_key_file(&adir.join("wg.key"), &wg)?;
        let key =
            NodeKey::generate(&name).map_err(|e| Error::Process(format!("key generation: {e}")))?;
        write_secret(&adir.join("auditor.key"), &key.to_toml_string())?;
        cosigners.push(key.cosigner().verifier());
        peer_block(
            &mut peers,
            &name,
            &wg,
            None,
            &format!("10.77.2.{i}"),
            "auditor",
        );
        let p = adir.join("auditor.toml");
        write_new(
            &p,
            &format!(
                "# DLog auditor config: `dlog auditor run --config auditor.toml`.\n\
                 name = \"{name}\"\nwg_key = \"wg.key\"\nkey = \"auditor.key\"\npeers = \"../peers.toml\"\n\
                 # Read in turn, round by round: every replica's copy gets checked.\n\
                 nodes = [{all_nodes}]\ntrust = \"../trust.toml\"\nstate_dir = \"state\"\npoll_ms = 1000\n"
            ),
        )?;
        auditor_configs.push(p);
    }
    write_new(&dir.join("peers.toml"), &peers)?;
    let quorum = spec.nodes / 2 + 1;
    let trust = TrustPolicy::new(
        spec.origin.clone(),
        verifiers,
        quorum,
        cosigners,
        spec.cosignatures,
    )
    .map_err(|e| Error::config(&dir.join("trust.toml"), "cosignatures", e))?
    .with_hash(spec.hash);
    write_new(&dir.join("trust.toml"), &trust_file_text(&trust))?;
    Ok(ClusterLayout {
        dir: dir.to_path_buf(),
        node_configs,
        client_config: dir.join("client.toml"),
        admin_config: dir.join("admin.toml"),
        trust: dir.join("trust.toml"),
        auditor_configs,
    })
}

/// The node directories of a cluster, in order (`node-1`, `node-2`, ...).
pub fn node_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<(u64, PathBuf)> = Vec::new();
    for ent in std::fs::read_dir(dir).map_err(Error::io("read directory", dir))? {
        let ent = ent.map_err(Error::io("read directory", dir))?;
        let name = ent.file_name().to_string_lossy().to_string();
        if let Some(n) = name.strip_prefix("node-").and_then(|n| n.parse().ok()) {
            if ent.path().join("node.toml").exists() {
                v.push((n, ent.path()));
            }
        }
    }
    v.sort();
    Ok(v.into_iter().map(|x| x.1).collect())
}

/// Async worker threads for each of `nodes` processes sharing this machine:
/// its cores divided among them, at least one. Fewer threads than cores
/// across all processes means fewer cross-thread wake-ups, which is what
/// small appends pay for.
fn workers_per_node(nodes: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / nodes.max(1)).max(1)
}

/// Starts one node process: `program args... <node_dir>/node.toml`, detached
/// in its own process group, logs to `node.log`, pid in `node.pid`.
pub fn start_node(node_dir: &Path, program: &Path, args: &[OsString]) -> Result<u32> {
    spawn(node_dir, "node", program, args)
}

/// Starts `program args... <dir>/<stem>.toml` detached, logging to
/// `<stem>.log`, its pid in `<stem>.pid`.
fn spawn(node_dir: &Path, stem: &str, program: &Path, args: &[OsString]) -> Result<u32> {
    use std::os::unix::process::CommandExt;
    let log_path = node_dir.join(format!("{stem}.log"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(Error::io("open", &log_path))?;
    let err = log.try_clone().map_err(Error::io("open", &log_path))?;
    let child = Command::new(program)
        .args(args)
        .arg(node_dir.join(format!("{stem}.toml")))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|e| Error::Process(format!("cannot start {}: {e}", program.display())))?;
    let pid = child.id();
    dlog_ledger::store::write_atomic(
        &node_dir.join(format!("{stem}.pid")),
        pid.to_string().as_bytes(),
    )?;
    // The child is reaped by whoever waits for it; a CLI exits and leaves it running.
    std::mem::forget(child);
    Ok(pid)
}

/// Starts every node of the cluster in `dir` (not the spares, not the
/// removed ones).
pub fn start(dir: &Path, program: &Path, args: &[OsString]) -> Result<Vec<u32>> {
    member_dirs(dir)?
        .iter()
        .map(|d| start_node(d, program, args))
        .collect()
}

/// The node directories of the members: neither spare (never started) nor
/// removed (`cluster remove-node` leaves a `removed` file: such a node must
/// never run again with its stale membership).
fn member_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(node_dirs(dir)?
        .into_iter()
        .filter(|d| !d.join("spare").exists() && !d.join("removed").exists())
        .collect())
}

/// What [`start_again`] did.
#[derive(Debug, Default)]
pub struct Restarted {
    /// Nodes started now.
    pub started: Vec<String>,
    /// Nodes that were already running.
    pub running: Vec<String>,
    /// Auditors started now.
    pub auditors_started: Vec<String>,
    /// The leader elected (or found).
    pub leader: String,
}

/// `dlog cluster start`: starts whatever of an existing cluster in `dir` is
/// not running (its member nodes, then its auditors) and waits for a
/// leader. Running processes (by their pid files) are left alone, so it is
/// safe to run on a cluster that is partly or fully up.
pub async fn start_again(
    dir: &Path,
    node_args: (&Path, &[OsString]),
    auditor_args: &[OsString],
    timeout: Duration,
) -> Result<Restarted> {
    let (program, args) = node_args;
    if !dir.join("peers.toml").exists() {
        return Err(Error::Process(format!(
            "no cluster in {d} (create one: `dlog cluster up --dir {d}`)",
            d = dir.display()
        )));
    }
    let name_of = |d: &Path| {
        d.file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default()
    };
    let mut done = Restarted::default();
    // Running means holding its directory's lock (the kernel drops it with
    // the process, so a killed process never looks alive, zombie or not).
    let holds = |d: &Path| dlog_ledger::fsutil::is_locked(d).unwrap_or(false);
    for d in member_dirs(dir)? {
        if holds(&d.join("data").join("ledger")) {
            done.running.push(name_of(&d));
        } else {
            start_node(&d, program, args)?;
            done.started.push(name_of(&d));
        }
    }
    let client = Client::open(&dir.join("client.toml")).await?;
    let leader = wait_for_leader(&client, timeout).await;
    client.close().await;
    done.leader = leader?.1;
    for d in auditor_dirs(dir)? {
        if !holds(&d.join("state")) {
            spawn(&d, "auditor", program, auditor_args)?;
            done.auditors_started.push(name_of(&d));
        }
    }
    Ok(done)
}

/// The auditor directories of a cluster (`auditor-1`, `auditor-2`, ...).
pub fn auditor_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<(u64, PathBuf)> = Vec::new();
    for ent in std::fs::read_dir(dir).map_err(Error::io("read directory", dir))? {
        let ent = ent.map_err(Error::io("read directory", dir))?;
        let name = ent.file_name().to_string_lossy().to_string();
        if let Some(n) = name.strip_prefix("auditor-").and_then(|n| n.parse().ok()) {
            if ent.path().join("auditor.toml").exists() {
                v.push((n, ent.path()));
            }
        }
    }
    v.sort();
    Ok(v.into_iter().map(|x| x.1).collect())
}

/// Starts every auditor of the cluster in `dir`: `program args...
/// <auditor_dir>/auditor.toml`, detached, logs to `auditor.log`.
pub fn start_auditors(dir: &Path, program: &Path, args: &[OsString]) -> Result<Vec<u32>> {
    auditor_dirs(dir)?
        .iter()
        .map(|d| spawn(d, "auditor", program, args))
        .collect()
}

/// Stops one auditor like [`stop_node`].
pub fn stop_auditor(auditor_dir: &Path, grace: Duration) -> Result<()> {
    stop_process(auditor_dir, "auditor", grace)
}

fn pid_of(node_dir: &Path, stem: &str) -> Option<i32> {
    std::fs::read_to_string(node_dir.join(format!("{stem}.pid")))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence.
    let r = unsafe { libc::kill(pid, 0) } == 0;
    if r {
        // Reap it if it is our zombie child.
        let mut st = 0;
        // SAFETY: non-blocking waitpid on a pid; status is a local.
        let w = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
        return w <= 0;
    }
    false
}

/// Sends `signal` to one node's process (from its pid file); `SIGKILL` for crash tests.
pub fn signal_node(node_dir: &Path, signal: i32) -> Result<()> {
    let pid = pid_of(node_dir, "node")
        .ok_or_else(|| Error::Process(format!("no pid file in {}", node_dir.display())))?;
    // SAFETY: sending a signal to a pid we started.
    if unsafe { libc::kill(pid, signal) } != 0 {
        return Err(Error::Process(format!(
            "kill {pid}: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Stops one node: SIGTERM, then SIGKILL after `grace`. Returns once it is gone.
pub fn stop_node(node_dir: &Path, grace: Duration) -> Result<()> {
    stop_process(node_dir, "node", grace)
}

fn stop_process(node_dir: &Path, stem: &str, grace: Duration) -> Result<()> {
    let Some(pid) = pid_of(node_dir, stem) else {
        return Ok(());
    };
    if alive(pid) {
        // SAFETY: signalling a pid we started.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let end = Instant::now() + grace;
        while alive(pid) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        if alive(pid) {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let end = Instant::now() + Duration::from_secs(5);
            while alive(pid) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    let _ = std::fs::remove_file(node_dir.join(format!("{stem}.pid")));
    Ok(())
}

/// `dlog cluster down`: stops every auditor and node of the cluster in `dir`.
pub fn stop(dir: &Path) -> Result<()> {
    for d in auditor_dirs(dir)? {
        stop_auditor(&d, Duration::from_secs(5))?;
    }
    for d in node_dirs(dir)? {
        stop_node(&d, Duration::from_secs(5))?;
    }
    Ok(())
}

/// `dlog cluster up`: generates a cluster in `dir`, starts its nodes with
/// `program args... <node.toml>` and returns once a leader is elected.
/// On failure to elect, the started nodes are stopped again.
pub async fn up(
    dir: &Path,
    spec: &ClusterSpec,
    program: &Path,
    args: &[OsString],
    timeout: Duration,
) -> Result<(ClusterLayout, String)> {
    let layout = generate(dir, spec)?;
    start(dir, program, args)?;
    let client = Client::open(&layout.client_config).await?;
    let leader = wait_for_leader(&client, timeout).await;
    client.close().await;
    match leader {
        Ok((_, name)) => Ok((layout, name)),
        Err(e) => {
            let _ = stop(dir);
            Err(e)
        }
    }
}

fn node_id(node_dir: &Path) -> Result<NodeId> {
    let name = node_dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    name.strip_prefix("node-")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| Error::Process(format!("{} is not a node directory", node_dir.display())))
}

/// `dlog cluster add-node`: starts the first spare node of the cluster
/// (generated with [`ClusterSpec::spare_nodes`]), adds it as a learner, waits
/// until it caught up (segment transfer by snapshot, then log replay), and
/// promotes it to voter. `admin` is a [`Client`] opened from `D/admin.toml`
/// (one process per key at a time: WireGuard knows one endpoint per key).
/// Adds it to `client.toml` and `admin.toml`, so clients and `dlog cluster
/// status` see it. Returns the node's name.
pub async fn add_node(
    dir: &Path,
    admin: &Client,
    program: &Path,
    args: &[OsString],
    timeout: Duration,
) -> Result<String> {
    let spare = node_dirs(dir)?
        .into_iter()
        .find(|d| d.join("spare").exists())
        .ok_or_else(|| {
            Error::Process(
                "no spare node left: nodes are generated with the cluster (`dlog cluster up --spare N`), since every node must know every key at start".into(),
            )
        })?;
    let id = node_id(&spare)?;
    let name = format!("node-{id}");
    start_node(&spare, program, args)?;
    let _ = std::fs::remove_file(spare.join("spare"));
    async {
        admin.add_learner(id, &name).await?;
        let end = Instant::now() + timeout;
        loop {
            let (_, leader) = wait_for_leader(admin, timeout).await?;
            let target = admin.status(&leader).await?.applied_index;
            if admin
                .status(&name)
                .await
                .is_ok_and(|s| s.applied_index >= target)
            {
                break;
            }
            if Instant::now() >= end {
                return Err(Error::Timeout(format!("{name} did not catch up")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (_, leader) = wait_for_leader(admin, timeout).await?;
        let mut voters = admin.status(&leader).await?.voters;
        voters.push(id);
        admin.change_membership(&voters).await?;
        Ok::<_, Error>(())
    }
    .await?;
    edit_config_nodes(dir, |nodes| {
        if !nodes.contains(&name) {
            nodes.push(name.clone());
        }
    })
    .and_then(|()| trust_add_voter(dir, &spare))
    .map_err(|e| {
        Error::Process(format!(
            "{name} was added and promoted to voter, but the configs were not updated: {e}"
        ))
    })?;
    Ok(name)
}

/// The cluster's trust file.
fn load_trust_file(dir: &Path) -> Result<(PathBuf, TrustPolicy)> {
    let path = dir.join("trust.toml");
    let text = std::fs::read_to_string(&path).map_err(Error::io("read", &path))?;
    let t = TrustPolicy::from_toml_str(&text).map_err(|e| Error::config(&path, "-", e))?;
    Ok((path, t))
}

/// Adds the key of the node in `node_dir` to the trust file's voters (the
/// quorum stays): the trust file only grows, so every receipt it verified
/// before still verifies (see ARCHITECTURE.md, "Trust across membership
/// changes").
fn trust_add_voter(dir: &Path, node_dir: &Path) -> Result<()> {
    let key_path = node_dir.join("node.key");
    let text = std::fs::read_to_string(&key_path).map_err(Error::io("read", &key_path))?;
    let key = NodeKey::from_toml_str(&text).map_err(|e| Error::config(&key_path, "-", e))?;
    let (path, mut trust) = load_trust_file(dir)?;
    let v = key.note_signer().verifier();
    if trust.voters.iter().any(|x| x.to_vkey() == v.to_vkey()) {
        return Ok(());
    }
    trust.voters.push(v);
    dlog_ledger::store::write_atomic(&path, trust_file_text(&trust).as_bytes())?;
    Ok(())
}

/// A cluster's trust.toml, with its header.
fn trust_file_text(trust: &TrustPolicy) -> String {
    format!(
        "# Trust file of the DLog log {}: give it to verifiers. It holds no secret.\n\
         # It only grows: a removed node's key stays, so the receipts it signed keep verifying.\n{}",
        trust.origin,
        trust.to_toml_string()
    )
}

/// `dlog cluster remove-node`: removes a voter from the membership (with an
/// admin [`Client`]), drops it from `client.toml` and `admin.toml`, then
/// stops its process.
pub async fn remove_node(dir: &Path, admin: &Client, name: &str, timeout: Duration) -> Result<()> {
    let node_dir = dir.join(name);
    let id = node_id(&node_dir)?;
    let (_, trust) = load_trust_file(dir)?;
    let res = async {
        let (_, leader) = wait_for_leader(admin, timeout).await?;
        let voters: Vec<NodeId> = admin
            .status(&leader)
            .await?
            .voters
            .into_iter()
            .filter(|v| *v != id)
            .collect();
        // The checkpoints after the change must still meet the trust file
        // every verifier holds: as many listed signers as its quorum.
        let listed = voters
            .iter()
            .filter(|v| {
                let n = format!("node-{v}");
                trust.voters.iter().any(|t| t.name() == n)
            })
            .count();
        if listed < trust.quorum {
            return Err(Error::Process(format!(
                "removing {name} would leave {listed} voter(s) that trust.toml lists, fewer than \
                 its quorum of {}: no checkpoint could be signed for the verifiers (add a node first)",
                trust.quorum
            )));
        }
        admin.change_membership(&voters).await?;
        Ok::<_, Error>(())
    }
    .await;
    res?;
    // Out of the membership: never to run again (`cluster start` skips
    // it), stopped whatever becomes of the config edit.
    let marked = dlog_ledger::store::write_atomic(&node_dir.join("removed"), b"removed\n");
    let stopped = stop_node(&node_dir, Duration::from_secs(5));
    marked?;
    edit_config_nodes(dir, |nodes| nodes.retain(|n| n != name))?;
    stopped
}

/// Waits until some node reports itself leader; returns its id and name.
pub async fn wait_for_leader(client: &Client, timeout: Duration) -> Result<(NodeId, String)> {
    let end = Instant::now() + timeout;
    loop {
        for (name, st) in client.statuses().await {
            if let Ok(s) = st {
                if s.state == "leader" {
                    return Ok((s.id, name));
                }
            }
        }
        if Instant::now() >= end {
            return Err(Error::NoLeader(format!("none elected within {timeout:?}")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `dlog cluster status`: every node's status (or why it did not answer).
pub async fn status(
    client_config: &Path,
) -> Result<Vec<(String, dlog_client::Result<NodeStatus>)>> {
    let c = Client::open(client_config).await?;
    let s = c.statuses().await;
    c.close().await;
    Ok(s)
}
