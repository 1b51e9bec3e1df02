//! A C2SP tlog-witness (v1.0.0): cosigns the checkpoints of the logs it is
//! configured for, each only if it is consistent with the one it cosigned
//! before, and remembers durably what it cosigned.
//!
//! * [`protocol`]: the request parser and the decision, sans-IO.
//! * [`store`]: the per-origin state files (one `fdatasync` per cosign).
//! * [`config`]: `witness.toml` and `dlog witness init`.
//! * [`http`]: the HTTP server (`POST /add-checkpoint`, `GET /metrics`).
//! * [`bridge`]: the other direction: an auditor asking external witnesses
//!   to cosign its own log's checkpoints.
//!
//! [`Witness`] ties them: a request is parsed, its origin looked up (an
//! unknown one costs a parse and a map lookup), and then, under that
//! origin's lock, decided, persisted and cosigned, so two requests for one
//! origin never race (the spec's rollback hazard).

pub mod bridge;
pub mod config;
pub mod http;
pub mod protocol;
pub mod store;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use dlog_crypto::note::Cosigner;

use config::WitnessConfig;
use protocol::{decide, origin_of, parse_request, Refusal, WitnessedLog};
use store::{Record, StateFile, StoreError};

/// An HTTP answer: status, content type, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

impl Answer {
    fn text(status: u16, body: impl Into<String>) -> Answer {
        Answer {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
}

struct Origin {
    log: WitnessedLog,
    state: tokio::sync::Mutex<StateFile>,
}

/// Status codes counted in [`Witness::metrics_text`].
const CODES: [u16; 7] = [200, 400, 403, 404, 409, 422, 500];

/// Most requests kept as evidence (a valid signature on a checkpoint that
/// does not extend what was cosigned) per run.
const MAX_EVIDENCE: u64 = 1000;

/// A witness: its key, its logs and their state.
pub struct Witness {
    cosigner: Cosigner,
    origins: HashMap<String, Origin>,
    evidence_dir: PathBuf,
    counts: [AtomicU64; CODES.len()],
    evidence: AtomicU64,
    busy_us: AtomicU64,
    /// The state directory's lock, held while the witness is open.
    _lock: std::fs::File,
}

impl Witness {
    /// Opens every configured origin's state (an origin whose state file
    /// is damaged is an error: it is never witnessed from a guess).
    pub fn open(cfg: &WitnessConfig) -> Result<Witness, StoreError> {
        let locked = |detail: String| StoreError {
            path: cfg.state_dir.clone(),
            detail,
        };
        std::fs::create_dir_all(&cfg.state_dir).map_err(|e| locked(e.to_string()))?;
        let lock = dlog_ledger::fsutil::lock_dir(&cfg.state_dir).map_err(|e| match e {
            dlog_ledger::LedgerError::Locked(_) => locked(
                "another witness is running on this state directory (its lock is held)".into(),
            ),
            e => locked(e.to_string()),
        })?;
        let mut origins = HashMap::new();
        for log in &cfg.logs {
            let state = StateFile::open(&cfg.state_dir, &log.origin)?;
            origins.insert(
                log.origin.clone(),
                Origin {
                    log: log.clone(),
                    state: tokio::sync::Mutex::new(state),
                },
            );
        }
        Ok(Witness {
            cosigner: cfg.cosigner.clone(),
            origins,
            evidence_dir: cfg.state_dir.join("evidence"),
            counts: Default::default(),
            evidence: AtomicU64::new(0),
            busy_us: AtomicU64::new(0),
            _lock: lock,
        })
    }

    /// The cosigner vkey.
    pub fn vkey(&self) -> String {
        self.cosigner.vkey()
    }

    /// `POST /add-checkpoint` with `body`.
    pub async fn add_checkpoint(&self, body: &[u8]) -> Answer {
        let started = Instant::now();
        let a = self.answer(body).await;
        if let Some(i) = CODES.iter().position(|&c| c == a.status) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.busy_us
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        a
    }

    async fn answer(&self, body: &[u8]) -> Answer {
        let req = match parse_request(body) {
            Ok(r) => r,
            Err(e) => return refused(&e),
        };
        let origin = match origin_of(&req) {
            Ok(o) => o,
            Err(e) => return refused(&e),
        };
        let Some(o) = self.origins.get(origin) else {
            return refused(&Refusal::UnknownOrigin);
        };
        let mut state = o.state.lock().await;
        let last = state.last();
        match decide(&o.log, last.as_ref().map(|r| &r.cosigned), &req) {
            Ok(acc) => {
                // Timestamps never go back, even if the clock does.
                let time = unix_now().max(last.map_or(0, |r| r.time));
                let record = Record {
                    cosigned: acc.state,
                    time,
                };
                // Durable before the answer: a crash after this line and
                // before the answer leaves a state the client's retry sees
                // (409 with the new size), never a rollback.
                if let Err(e) = state.save(record) {
                    tracing::error!("witness: {e}");
                    return Answer::text(500, format!("the witness cannot store its state: {e}\n"));
                }
                drop(state);
                let sig = self.cosigner.cosign(&acc.text, time);
                Answer::text(200, format!("{}\n", sig.to_line()))
            }
            Err(e) => {
                let evidence = matches!(e, Refusal::BadProof(_))
                    || (matches!(e, Refusal::Conflict { .. })
                        && last.is_some_and(|l| Some(l.cosigned.size) == size_of(&req.note)));
                drop(state);
                if evidence {
                    self.keep_evidence(origin, body);
                }
                refused(&e)
            }
        }
    }

    /// Keeps a signed request that contradicts what was cosigned (it may
    /// prove the log misbehaved), bounded in number.
    fn keep_evidence(&self, origin: &str, body: &[u8]) {
        let n = self.evidence.fetch_add(1, Ordering::Relaxed);
        if n >= MAX_EVIDENCE {
            return;
        }
        let name = format!(
            "{}-{}-{n}.txt",
            store::file_name(origin).trim_end_matches(".state"),
            unix_now()
        );
        let path = self.evidence_dir.join(name);
        let r =
            std::fs::create_dir_all(&self.evidence_dir).and_then(|_| std::fs::write(&path, body));
        match r {
            Ok(()) => tracing::warn!(
                "witness: {origin}: a signed checkpoint inconsistent with the cosigned one, kept in {}",
                path.display()
            ),
            Err(e) => tracing::warn!("witness: {origin}: cannot keep evidence: {e}"),
        }
    }

    /// Requests answered with `status` so far.
    pub fn count(&self, status: u16) -> u64 {
        CODES
            .iter()
            .position(|&c| c == status)
            .map_or(0, |i| self.counts[i].load(Ordering::Relaxed))
    }

    /// Prometheus text: requests by status code, time spent answering.
    pub fn metrics_text(&self) -> String {
        let mut s = String::from(
            "# HELP dlog_witness_requests_total add-checkpoint requests by status code.\n\
             # TYPE dlog_witness_requests_total counter\n",
        );
        for (i, c) in CODES.iter().enumerate() {
            s.push_str(&format!(
                "dlog_witness_requests_total{{code=\"{c}\"}} {}\n",
                self.counts[i].load(Ordering::Relaxed)
            ));
        }
        s.push_str(&format!(
            "# HELP dlog_witness_busy_seconds_total Time spent answering add-checkpoint.\n\
             # TYPE dlog_witness_busy_seconds_total counter\n\
             dlog_witness_busy_seconds_total {}\n\
             # HELP dlog_witness_logs Logs this witness witnesses.\n\
             # TYPE dlog_witness_logs gauge\n\
             dlog_witness_logs {}\n",
            self.busy_us.load(Ordering::Relaxed) as f64 / 1e6,
            self.origins.len()
        ));
        s
    }
}

fn size_of(note: &str) -> Option<u64> {
    note.split('\n').nth(1)?.parse().ok()
}

fn refused(e: &Refusal) -> Answer {
    match e {
        Refusal::Conflict { size } => Answer {
            status: 409,
            content_type: "text/x.tlog.size",
            body: format!("{size}\n"),
        },
        e => Answer::text(e.status(), format!("{e}\n")),
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
