//! The flusher thread: fsyncs of the Raft log, group-committed, with
//! callbacks in append order.

use crate::error::{NodeError, Result};
use crate::types::TypeConfig;
use openraft::storage::LogFlushed;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

/// Appended records waiting for their fsync.
pub(super) struct FlushJob {
    /// The file written to, and its path (`None` for an empty append, which
    /// still reports in order).
    pub(super) file: Option<(Arc<File>, PathBuf)>,
    pub(super) callback: LogFlushed<TypeConfig>,
}

/// Fault injection: while set, the flusher holds every fsync (and so every
/// callback) back, as a disk that stalls would.
#[derive(Default)]
pub(super) struct FlushHold {
    held: Mutex<bool>,
    released: Condvar,
}

impl FlushHold {
    #[cfg(feature = "test-support")]
    pub(super) fn set(&self, on: bool) {
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = on;
        self.released.notify_all();
    }

    pub(super) fn wait_released(&self) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        while *held {
            held = self.released.wait(held).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Starts the flusher thread: one `fdatasync` per file for everything queued,
/// then every callback in order.
pub(super) fn spawn_flusher(
    dir: &Path,
    hold: Arc<FlushHold>,
) -> Result<std::sync::mpsc::Sender<FlushJob>> {
    let (tx, rx) = std::sync::mpsc::channel::<FlushJob>();
    std::thread::Builder::new()
        .name("dlog-raft-flush".into())
        .spawn(move || {
            // A failed fsync fails every later job too, empty ones included:
            // after one, Linux may report a later fsync of the same pages as
            // a success although they were lost, and an empty append is how
            // a stepping-down leader waits for its own appends.
            let mut failed: Option<String> = None;
            while let Ok(first) = rx.recv() {
                hold.wait_released();
                let mut jobs = vec![first];
                jobs.extend(rx.try_iter());
                let mut synced: Vec<&Arc<File>> = Vec::new();
                let was_failed = failed.is_some();
                for (file, path) in jobs.iter().filter_map(|j| j.file.as_ref()) {
                    if failed.is_some() || synced.iter().any(|f| Arc::ptr_eq(f, file)) {
                        continue;
                    }
                    match file.sync_data() {
                        Ok(()) => synced.push(file),
                        Err(e) => failed = Some(format!("fsync {}: {e}", path.display())),
                    }
                }
                if let (false, Some(why)) = (was_failed, &failed) {
                    tracing::error!(error = %why, "raft log fsync failed; every later append fails");
                }
                for j in jobs {
                    let res = match &failed {
                        None => Ok(()),
                        Some(why) => Err(std::io::Error::other(why.clone())),
                    };
                    j.callback.log_io_completed(res);
                }
            }
        })
        .map_err(NodeError::io("spawn raft log flusher for", dir))?;
    Ok(tx)
}
