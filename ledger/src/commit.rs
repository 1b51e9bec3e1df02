//! Group commit: many concurrent appenders share one write and one fsync.
//!
//! A dedicated committer thread takes everything queued, appends it as one
//! batch (one `fdatasync`) and then wakes exactly the appenders of that batch,
//! each on its own park token: no shared condition variable, so no thundering
//! herd. While the committer is in `fdatasync`, new appenders queue up for the
//! next batch, so the batch grows with the load and the fsync cost is shared.

use crate::entry::EntryKind;
use crate::error::LedgerError;
use crate::store::{Appended, Ledger};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

/// Largest batch the committer writes at once.
const MAX_BATCH: usize = 64 * 1024;
/// Longest the committer waits for the previous batch's appenders to return.
const LINGER: Duration = Duration::from_micros(300);

type Outcome = std::result::Result<u64, Arc<LedgerError>>;

struct Slot {
    result: OnceLock<Outcome>,
    waiter: Thread,
}

struct Request {
    kind: EntryKind,
    payload: Vec<u8>,
    slot: Arc<Slot>,
}

#[derive(Default)]
struct Queue {
    pending: Vec<Request>,
    committer: Committer,
    /// Size of the last batch: with closed-loop appenders the same crowd
    /// comes back, so the committer lingers briefly until it has.
    target: usize,
    shutdown: bool,
}

/// What the committer thread is doing, so appenders wake it only when needed.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Committer {
    /// Writing a batch: it looks at the queue when done.
    #[default]
    Busy,
    /// Nothing queued: wake it on any append.
    Idle,
    /// Some queued: wake it when `target` requests are.
    Lingering,
}

type Hook = Box<dyn Fn(&mut Ledger, &Appended) + Send + Sync>;

struct Inner {
    /// `None` only after [`GroupCommit::into_inner`] took it back.
    ledger: Mutex<Option<Ledger>>,
    queue: Mutex<Queue>,
    work: Condvar,
    clock: Box<dyn Fn() -> u64 + Send + Sync>,
    after_commit: Mutex<Option<Hook>>,
}

/// A ledger shared by concurrent appenders, with group commit.
pub struct GroupCommit {
    inner: Arc<Inner>,
    committer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

/// An error shared by every appender of a failed batch.
#[derive(Debug, Clone, thiserror::Error)]
#[error("batch append failed: {0}")]
pub struct BatchError(pub Arc<LedgerError>);

impl GroupCommit {
    /// Wraps a ledger opened read-write and starts the committer thread.
    /// `clock` gives Unix nanoseconds for timestamps (the ledger reads no clock).
    pub fn new(ledger: Ledger, clock: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        let inner = Arc::new(Inner {
            ledger: Mutex::new(Some(ledger)),
            queue: Mutex::new(Queue::default()),
            work: Condvar::new(),
            clock: Box::new(clock),
            after_commit: Mutex::new(None),
        });
        let worker = inner.clone();
        let committer = std::thread::Builder::new()
            .name("dlog-commit".into())
            .spawn(move || worker.run())
            .expect("spawn the committer thread");
        GroupCommit {
            inner,
            committer: Some(committer),
        }
    }

    /// Runs `hook` after every durable batch, still under the ledger lock
    /// (e.g. to sign and store a checkpoint).
    pub fn with_after_commit(
        self,
        hook: impl Fn(&mut Ledger, &Appended) + Send + Sync + 'static,
    ) -> Self {
        *lock(&self.inner.after_commit) = Some(Box::new(hook));
        self
    }

    /// Appends one entry; returns its index once it is durable.
    pub fn append(&self, kind: EntryKind, payload: Vec<u8>) -> Result<u64, BatchError> {
        let slot = Arc::new(Slot {
            result: OnceLock::new(),
            waiter: std::thread::current(),
        });
        {
            let mut q = lock(&self.inner.queue);
            if q.shutdown {
                return Err(BatchError(Arc::new(LedgerError::NotWritable(
                    "shutting down".into(),
                ))));
            }
            q.pending.push(Request {
                kind,
                payload,
                slot: slot.clone(),
            });
            let wake = match q.committer {
                Committer::Busy => false,
                Committer::Idle => true,
                Committer::Lingering => q.pending.len() >= q.target,
            };
            if wake {
                q.committer = Committer::Busy;
                self.inner.work.notify_one();
            }
        }
        loop {
            if let Some(r) = slot.result.get() {
                return r.clone().map_err(BatchError);
            }
            std::thread::park();
        }
    }

    /// Runs `f` with the ledger locked (reads, proofs, checkpoints).
    pub fn with_ledger<T>(&self, f: impl FnOnce(&mut Ledger) -> T) -> T {
        f(lock(&self.inner.ledger)
            .as_mut()
            .expect("ledger present until into_inner"))
    }

    /// Stops the committer (after the queued batch) and takes the ledger back.
    pub fn into_inner(mut self) -> Ledger {
        self.stop();
        lock(&self.inner.ledger)
            .take()
            .expect("ledger present until into_inner")
    }

    fn stop(&mut self) {
        lock(&self.inner.queue).shutdown = true;
        self.inner.work.notify_one();
        if let Some(h) = self.committer.take() {
            let _ = h.join();
        }
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Inner {
    fn run(&self) {
        loop {
            let batch = {
                let mut q = lock(&self.queue);
                while q.pending.is_empty() && !q.shutdown {
                    q.committer = Committer::Idle;
                    q = self.work.wait(q).unwrap_or_else(|p| p.into_inner());
                }
                if q.pending.is_empty() {
                    return;
                }
                // Linger (briefly, bounded) for the last batch's crowd to return.
                let deadline = Instant::now() + LINGER;
                while q.pending.len() < q.target && !q.shutdown {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    q.committer = Committer::Lingering;
                    q = self
                        .work
                        .wait_timeout(q, deadline - now)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
                q.committer = Committer::Busy;
                let take = q.pending.len().min(MAX_BATCH);
                q.target = take;
                if take == q.pending.len() {
                    std::mem::take(&mut q.pending)
                } else {
                    q.pending.drain(..take).collect::<Vec<_>>()
                }
            };
            self.commit(batch);
        }
    }

    fn commit(&self, batch: Vec<Request>) {
        let items: Vec<(EntryKind, &[u8])> = batch
            .iter()
            .map(|r| (r.kind, r.payload.as_slice()))
            .collect();
        let outcome = {
            let mut guard = lock(&self.ledger);
            match guard.as_mut() {
                None => Err(LedgerError::NotWritable("ledger was taken back".into())),
                Some(ledger) => {
                    let res = ledger.append((self.clock)(), &items);
                    if let Ok(a) = &res {
                        if let Some(hook) = lock(&self.after_commit).as_ref() {
                            hook(ledger, a);
                        }
                    }
                    res
                }
            }
        };
        match outcome {
            Ok(a) => {
                for (i, r) in batch.iter().enumerate() {
                    let _ = r.slot.result.set(Ok(a.first + i as u64));
                    r.slot.waiter.unpark();
                }
            }
            Err(e) => {
                let e = Arc::new(e);
                for r in &batch {
                    let _ = r.slot.result.set(Err(e.clone()));
                    r.slot.waiter.unpark();
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CreateOptions, OpenMode};

    #[test]
    fn concurrent_appenders_get_distinct_durable_indices() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::create(
            dir.path(),
            &CreateOptions {
                segment_bits: 5,
                ..CreateOptions::default()
            },
        )
        .unwrap();
        let gc = Arc::new(GroupCommit::new(l, || 42));
        let mut handles = Vec::new();
        for t in 0..8u8 {
            let gc = gc.clone();
            handles.push(std::thread::spawn(move || {
                (0..50u8)
                    .map(|i| (gc.append(EntryKind::Data, vec![t, i]).unwrap(), vec![t, i]))
                    .collect::<Vec<_>>()
            }));
        }
        let mut all: Vec<(u64, Vec<u8>)> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort();
        assert_eq!(all.len(), 400);
        for (n, (i, _)) in all.iter().enumerate() {
            assert_eq!(*i, n as u64);
        }
        drop(Arc::try_unwrap(gc).unwrap().into_inner());
        let l = Ledger::open(dir.path(), OpenMode::ReadOnly).unwrap();
        for (i, p) in all {
            assert_eq!(
                crate::Entry::decode(&l.entry(i).unwrap()).unwrap().payload,
                p
            );
        }
    }

    #[test]
    fn a_failed_batch_fails_its_appenders_only() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::create(
            dir.path(),
            &CreateOptions {
                max_payload: 4,
                ..CreateOptions::default()
            },
        )
        .unwrap();
        let gc = GroupCommit::new(l, || 1);
        assert!(gc.append(EntryKind::Data, vec![0; 5]).is_err());
        assert_eq!(gc.append(EntryKind::Data, vec![0; 4]).unwrap(), 0);
        assert_eq!(gc.into_inner().size(), 1);
    }
}
