//! The etcd baseline of `dlog bench --cluster`: a 3-member etcd cluster on
//! loopback (separate `etcd` processes, temporary data directories, stopped
//! by PID), driven through etcd's v3 JSON gRPC gateway over HTTP/1.1
//! keep-alive connections, one connection per worker thread.

use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How to install the baseline on Debian.
pub const INSTALL_HINT: &str = "apt-get install etcd-server etcd-client";

/// The `etcd` binary on `PATH`, if any.
pub fn find() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file())
}

/// `etcd --version`'s first line, e.g. `etcd Version: 3.4.23`.
pub fn version(bin: &Path) -> String {
    Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| "unknown version".into())
}

struct Member {
    name: String,
    client_url: String,
    child: Child,
}

/// A running etcd cluster; its processes are stopped on drop.
pub struct EtcdCluster {
    members: Vec<Member>,
    /// `http://127.0.0.1:port/v3` (or `/v3beta`): the gateway of the leader.
    pub gateway: String,
    /// The gateway path prefix that answered (`/v3` or `/v3beta`).
    pub prefix: &'static str,
    /// Name of the leader member.
    pub leader: String,
}

/// `n` distinct free loopback ports (the listeners are held together, so
/// the kernel cannot hand out one port twice; another process may still
/// take one before etcd binds it, which the caller's retry covers).
fn free_tcp_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .max_idle_connections_per_host(1)
        .build()
        .into()
}

/// One JSON POST; the body of a 200 answer.
fn post(agent: &ureq::Agent, url: &str, body: &str) -> Result<String, ureq::Error> {
    agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(body)?
        .body_mut()
        .read_to_string()
}

impl EtcdCluster {
    /// Starts `members` etcd processes in `dir`/etcd-N and waits until they
    /// are healthy and have a leader.
    pub fn start(bin: &Path, dir: &Path, members: usize, timeout: Duration) -> Result<EtcdCluster> {
        let free = free_tcp_ports(2 * members)?;
        let ports: Vec<(u16, u16)> = free.chunks(2).map(|p| (p[0], p[1])).collect();
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("etcd-{}=http://127.0.0.1:{peer}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!("dlog-bench-{}", std::process::id());
        let mut cluster = EtcdCluster {
            members: Vec::new(),
            gateway: String::new(),
            prefix: "/v3",
            leader: String::new(),
        };
        for (i, (client, peer)) in ports.iter().enumerate() {
            let name = format!("etcd-{}", i + 1);
            let mdir = dir.join(&name);
            std::fs::create_dir_all(&mdir)
                .with_context(|| format!("cannot create {}", mdir.display()))?;
            let log = std::fs::File::create(mdir.join("etcd.log"))?;
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let child = spawn_detached(
                Command::new(bin)
                    .arg("--name")
                    .arg(&name)
                    .arg("--data-dir")
                    .arg(mdir.join("data"))
                    .args(["--listen-client-urls", &client_url])
                    .args(["--advertise-client-urls", &client_url])
                    .args(["--listen-peer-urls", &peer_url])
                    .args(["--initial-advertise-peer-urls", &peer_url])
                    .args(["--initial-cluster", &initial])
                    .args(["--initial-cluster-token", &token])
                    .args(["--initial-cluster-state", "new"])
                    .args(["--logger", "zap", "--log-outputs", "stderr"])
                    .stdin(Stdio::null())
                    .stdout(log.try_clone()?)
                    .stderr(log),
            )
            .with_context(|| format!("cannot start {}", bin.display()))?;
            cluster.members.push(Member {
                name,
                client_url,
                child,
            });
        }
        cluster.wait_ready(timeout)?;
        Ok(cluster)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let a = agent(Duration::from_secs(2));
        let end = Instant::now() + timeout;
        loop {
            for m in &mut self.members {
                if let Some(st) = m.child.try_wait()? {
                    bail!(
                        "etcd member {} exited ({st}) while starting; see its etcd.log",
                        m.name
                    );
                }
            }
            let last = match self.find_leader(&a) {
                Ok(()) => return Ok(()),
                Err(e) => e.to_string(),
            };
            if super::cluster::interrupted() {
                bail!("interrupted");
            }
            if Instant::now() >= end {
                bail!("the etcd cluster did not become ready within {timeout:?}: {last}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every member healthy, the gateway path probed, the leader found.
    fn find_leader(&mut self, a: &ureq::Agent) -> Result<()> {
        for m in &self.members {
            let body = a
                .get(format!("{}/health", m.client_url))
                .call()?
                .body_mut()
                .read_to_string()?;
            let v: serde_json::Value = serde_json::from_str(&body)?;
            if v["health"] != "true" {
                bail!("{} not healthy: {body}", m.name);
            }
        }
        // etcd 3.4 serves /v3; 3.3 only /v3beta.
        let mut statuses = Vec::new();
        for m in &self.members {
            let mut got = None;
            for prefix in ["/v3", "/v3beta"] {
                match post(
                    a,
                    &format!("{}{prefix}/maintenance/status", m.client_url),
                    "{}",
                ) {
                    Ok(b) => {
                        got = Some((prefix, b));
                        break;
                    }
                    Err(ureq::Error::StatusCode(404)) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            let (prefix, body) =
                got.ok_or_else(|| anyhow!("{}: no v3 JSON gateway found", m.name))?;
            self.prefix = prefix;
            let v: serde_json::Value = serde_json::from_str(&body)?;
            statuses.push((m, v));
        }
        for (m, v) in &statuses {
            let leader = &v["leader"];
            if leader.is_null() || leader == "0" {
                bail!("{} knows no leader yet", m.name);
            }
            if &v["header"]["member_id"] == leader {
                self.gateway = format!("{}{}", m.client_url, self.prefix);
                self.leader = m.name.clone();
                return Ok(());
            }
        }
        bail!("no member reports itself as the leader yet")
    }

    /// Stops every member: SIGTERM, then SIGKILL after a grace period.
    pub fn stop(&mut self) {
        for m in &self.members {
            // SAFETY: signalling a process this bench started (not reaped yet).
            unsafe { libc::kill(m.child.id() as i32, libc::SIGTERM) };
        }
        let end = Instant::now() + Duration::from_secs(5);
        for m in &mut self.members {
            while matches!(m.child.try_wait(), Ok(None)) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(m.child.try_wait(), Ok(None)) {
                let _ = m.child.kill();
            }
            let _ = m.child.wait();
        }
        self.members.clear();
    }

    /// PIDs of the members.
    pub fn pids(&self) -> Vec<u32> {
        self.members.iter().map(|m| m.child.id()).collect()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts a child in its own process group (a terminal's Ctrl-C reaches only
/// the bench, which then stops it), and asks the kernel to SIGTERM it if the
/// bench dies without cleaning up.
fn spawn_detached(cmd: &mut Command) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    // SAFETY: prctl is async-signal-safe; nothing else runs in the hook.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Result of one timed put phase.
pub struct PutPhase {
    /// Puts completed.
    pub ops: u64,
    /// Wall time from start until the last worker finished.
    pub elapsed: Duration,
    /// Sorted per-put latencies.
    pub lat: Vec<Duration>,
}

impl PutPhase {
    /// Puts per second.
    pub fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// `workers` threads, each with its own keep-alive connection, putting
/// distinct keys with `value_len`-byte values: `warmup` unrecorded, then
/// `window` recorded.
pub fn puts(
    gateway: &str,
    workers: usize,
    value_len: usize,
    warmup: Duration,
    window: Duration,
) -> Result<PutPhase> {
    let url = format!("{gateway}/kv/put");
    let value = B64.encode(vec![b'x'; value_len]);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(workers + 1));
    let mut handles = Vec::new();
    for w in 0..workers {
        let (url, value, barrier) = (url.clone(), value.clone(), barrier.clone());
        handles.push(std::thread::spawn(move || -> Result<Vec<Duration>> {
            let a = agent(Duration::from_secs(15));
            barrier.wait();
            let warm_end = Instant::now() + warmup;
            let deadline = warm_end + window;
            let mut lat = Vec::new();
            let mut n = 0u64;
            while Instant::now() < deadline && !super::cluster::interrupted() {
                let key = B64.encode(format!("bench/{workers}/{w}/{n}"));
                let body = format!(r#"{{"key":"{key}","value":"{value}"}}"#);
                let t = Instant::now();
                let resp = post(&a, &url, &body).map_err(|e| anyhow!("etcd put: {e}"))?;
                if t >= warm_end {
                    lat.push(t.elapsed());
                }
                if !resp.contains("\"header\"") {
                    bail!("etcd put: unexpected answer {resp}");
                }
                n += 1;
            }
            Ok(lat)
        }));
    }
    barrier.wait();
    let start = Instant::now() + warmup;
    let mut lat = Vec::new();
    let mut err = None;
    for h in handles {
        match h.join() {
            Ok(Ok(l)) => lat.extend(l),
            Ok(Err(e)) => err = Some(e),
            Err(_) => err = Some(anyhow!("etcd worker panicked")),
        }
    }
    let elapsed = start.elapsed();
    if let Some(e) = err {
        return Err(e);
    }
    if super::cluster::interrupted() {
        bail!("interrupted");
    }
    lat.sort();
    Ok(PutPhase {
        ops: lat.len() as u64,
        elapsed,
        lat,
    })
}
