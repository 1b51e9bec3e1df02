//! The auditor's state file: what it verified and cosigned, what went wrong.
//!
//! `<state_dir>/auditor-state.json`, replaced atomically (write, fsync,
//! rename, fsync of the directory) after every round. It holds the frontier
//! of the verified tree, so a restarted auditor resumes where it stopped
//! without re-reading the log, and `dlog auditor status` reads it without
//! a tunnel.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::audit::Frontier;

/// The state file's name.
pub const STATE_FILE: &str = "auditor-state.json";
/// Incidents kept (the newest).
pub const MAX_INCIDENTS: usize = 32;

/// Something that went wrong on one node or in one round, not against the
/// log itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// Unix seconds.
    pub time: u64,
    /// The node it concerns, if one.
    pub node: Option<String>,
    /// What happened.
    pub detail: String,
}

/// Evidence that the log, as its voters signed it, is not what its entries
/// say. The auditor stops cosigning for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alarm {
    /// Unix seconds.
    pub time: u64,
    /// What failed.
    pub detail: String,
    /// The signed checkpoint note that failed.
    pub checkpoint: String,
}

/// The last checkpoint this auditor cosigned and the nodes accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cosigned {
    /// Tree size.
    pub size: u64,
    /// Cosignature time (Unix seconds).
    pub time: u64,
    /// The witnessed checkpoint as the leader stored it.
    pub note: String,
}

/// Everything the auditor persists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The auditor's name.
    pub name: String,
    /// The log's origin.
    pub origin: String,
    /// Entries verified.
    pub size: u64,
    /// Root of the verified tree (base64; informative, recomputed from `frontier`).
    pub root: String,
    /// The frontier of the verified tree (base64 hashes, largest subtree first).
    pub frontier: Vec<String>,
    /// The last verified entry's timestamp.
    pub last_timestamp_ns: u64,
    /// When the verified tree last grew (Unix seconds).
    pub verified_at: Option<u64>,
    /// The largest checkpoint size seen from the cluster.
    pub log_size_seen: u64,
    /// When the last round ended (Unix seconds).
    pub round_at: Option<u64>,
    /// Rounds run.
    pub rounds: u64,
    /// The last cosignature the cluster accepted.
    pub cosigned: Option<Cosigned>,
    /// The newest incidents.
    pub incidents: Vec<Incident>,
    /// Set once the log failed verification.
    pub alarm: Option<Alarm>,
    /// Per node: the last time its whole copy was read again and checked
    /// against the verified tree (see [`mod@crate::run`]).
    #[serde(default)]
    pub sweeps: std::collections::BTreeMap<String, Sweep>,
}

/// The outcome of re-reading one node's whole copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sweep {
    /// Entries re-read.
    pub size: u64,
    /// When it ended (Unix seconds).
    pub time: u64,
    /// Whether every entry was served and they gave the verified root.
    pub ok: bool,
}

/// A state file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{}: {detail}", path.display())]
pub struct StateError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub detail: String,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl State {
    /// A fresh state: nothing verified.
    pub fn new(name: &str, origin: &str) -> State {
        let mut s = State {
            name: name.into(),
            origin: origin.into(),
            size: 0,
            root: String::new(),
            frontier: Vec::new(),
            last_timestamp_ns: 0,
            verified_at: None,
            log_size_seen: 0,
            round_at: None,
            rounds: 0,
            cosigned: None,
            incidents: Vec::new(),
            alarm: None,
            sweeps: Default::default(),
        };
        s.set_tree(&Frontier::new(), 0);
        s
    }

    /// The path of the state file in `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(STATE_FILE)
    }

    /// Reads the state file in `dir`; `Ok(None)` when there is none.
    pub fn load(dir: &Path) -> Result<Option<State>, StateError> {
        let path = State::path(dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(StateError {
                    path,
                    detail: e.to_string(),
                })
            }
        };
        State::from_json(&text)
            .map(Some)
            .map_err(|detail| StateError { path, detail })
    }

    /// Parses a state file's text and checks its tree (sans-IO; fuzzed).
    pub fn from_json(text: &str) -> Result<State, String> {
        let s: State = serde_json::from_str(text).map_err(|e| e.to_string())?;
        s.tree()?;
        Ok(s)
    }

    /// The verified tree, checked: the frontier fits the size and gives the
    /// recorded root.
    pub fn tree(&self) -> Result<Frontier, String> {
        let mut nodes = Vec::with_capacity(self.frontier.len());
        for h in &self.frontier {
            let raw = b64()
                .decode(h)
                .ok()
                .and_then(|v| <[u8; 32]>::try_from(v).ok())
                .ok_or_else(|| format!("frontier hash {h:?} is not 32 bytes of base64"))?;
            nodes.push(raw);
        }
        let f = Frontier::from_parts(self.size, nodes).ok_or_else(|| {
            format!(
                "the frontier has {} hashes; size {} needs {}",
                self.frontier.len(),
                self.size,
                self.size.count_ones()
            )
        })?;
        if b64().encode(f.root()) != self.root {
            return Err("the frontier does not give the recorded root".into());
        }
        Ok(f)
    }

    /// Records a new verified tree.
    pub fn set_tree(&mut self, f: &Frontier, last_timestamp_ns: u64) {
        self.size = f.size();
        self.frontier = f.nodes().iter().map(|h| b64().encode(h)).collect();
        self.root = b64().encode(f.root());
        self.last_timestamp_ns = last_timestamp_ns;
    }

    /// Keeps an incident (the newest [`MAX_INCIDENTS`]).
    pub fn incident(&mut self, time: u64, node: Option<&str>, detail: String) {
        self.incidents.push(Incident {
            time,
            node: node.map(str::to_string),
            detail,
        });
        let over = self.incidents.len().saturating_sub(MAX_INCIDENTS);
        self.incidents.drain(..over);
    }

    /// Writes the state file into `dir` durably.
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        let path = State::path(dir);
        let fail = |detail: String| StateError {
            path: path.clone(),
            detail,
        };
        std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
        let mut text = serde_json::to_string_pretty(self).map_err(|e| fail(e.to_string()))?;
        text.push('\n');
        dlog_ledger::store::write_atomic(&path, text.as_bytes()).map_err(|e| fail(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dlog_crypto::hash::{Blake3Hasher, TreeHasher};

    #[test]
    fn roundtrip_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(State::load(dir.path()).unwrap(), None);
        let mut f = Frontier::new();
        for i in 0..11u8 {
            f.push(Blake3Hasher::hash_leaf(&[i]));
        }
        let mut s = State::new("auditor-1", "dlog/t");
        s.set_tree(&f, 77);
        for i in 0..40 {
            s.incident(i, Some("node-2"), format!("incident {i}"));
        }
        assert_eq!(s.incidents.len(), MAX_INCIDENTS);
        assert_eq!(s.incidents[0].detail, "incident 8");
        s.save(dir.path()).unwrap();
        let back = State::load(dir.path()).unwrap().unwrap();
        assert_eq!(back, s);
        assert_eq!(back.tree().unwrap(), f);

        let path = State::path(dir.path());
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("\"size\": 11", "\"size\": 12")).unwrap();
        assert!(State::load(dir.path())
            .unwrap_err()
            .detail
            .contains("frontier"));
        std::fs::write(&path, "{").unwrap();
        assert!(State::load(dir.path()).is_err());
    }
}

/// The file an auditor rewrites every [`HEARTBEAT_EVERY`] while it runs:
/// the Unix time in milliseconds. Not fsynced (liveness, not data).
pub const HEARTBEAT_FILE: &str = "heartbeat";
/// How often a running auditor beats.
pub const HEARTBEAT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// A beat older than this means the auditor is stalled (stopped, hung, or
/// its disk refuses writes), even though its process still holds the lock.
pub const HEARTBEAT_BOUND: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether the auditor of a state directory is alive, judged from its
/// state-directory lock (held exactly while its process lives) and its
/// heartbeat (at most [`HEARTBEAT_BOUND`] old).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// Running and beating: the last beat's age in milliseconds.
    Alive {
        /// Age of the last beat.
        beat_ms: u64,
    },
    /// The process holds the lock but has not beaten within the bound.
    Stalled {
        /// Age of the last beat (`None`: it never beat).
        beat_ms: Option<u64>,
    },
    /// No process holds the state directory: not running.
    NotRunning,
}

impl Liveness {
    /// Reads the liveness of the auditor whose state is in `dir`.
    pub fn of(dir: &Path) -> std::io::Result<Liveness> {
        let locked = dlog_ledger::fsutil::is_locked(dir).map_err(std::io::Error::other)?;
        if !locked {
            return Ok(Liveness::NotRunning);
        }
        let beat = std::fs::read_to_string(dir.join(HEARTBEAT_FILE))
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok());
        let now = now_ms();
        let age = beat.map(|b| now.saturating_sub(b));
        Ok(match age {
            Some(a) if a <= HEARTBEAT_BOUND.as_millis() as u64 => Liveness::Alive { beat_ms: a },
            _ => Liveness::Stalled { beat_ms: age },
        })
    }

    /// Whether the auditor is alive.
    pub fn is_alive(&self) -> bool {
        matches!(self, Liveness::Alive { .. })
    }

    /// One line for an operator, with the bound it was judged by.
    pub fn describe(&self) -> String {
        let bound = HEARTBEAT_BOUND.as_secs();
        match self {
            Liveness::Alive { beat_ms } => {
                format!("running (heartbeat {:.1} s ago, bound {bound} s)", *beat_ms as f64 / 1e3)
            }
            Liveness::Stalled { beat_ms: Some(a) } => format!(
                "STALLED: its process holds the state directory but has not beaten for {:.0} s (bound {bound} s)",
                *a as f64 / 1e3
            ),
            Liveness::Stalled { beat_ms: None } => format!(
                "STALLED: its process holds the state directory but never beat (bound {bound} s)"
            ),
            Liveness::NotRunning => {
                "DOWN: not running (no process holds its state directory)".to_string()
            }
        }
    }
}

/// Now, in Unix milliseconds.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Writes one heartbeat into `dir` (temp file and rename: a reader never
/// sees half a number).
pub fn beat(dir: &Path) -> std::io::Result<()> {
    let tmp = dir.join(format!("{HEARTBEAT_FILE}.tmp"));
    std::fs::write(&tmp, now_ms().to_string())?;
    std::fs::rename(&tmp, dir.join(HEARTBEAT_FILE))
}
