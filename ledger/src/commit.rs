//! Group commit: many concurrent appenders share one write and one fsync.
//!
//! Leader/follower, with no dedicated thread: an appender queues its entry;
//! if no commit is running it becomes the leader, takes everything queued,
//! appends it as one batch (one `fdatasync`) and wakes the others. While a
//! leader is in `fdatasync`, new appenders queue up for the next batch, so the
//! batch size grows with the load and the fsync cost is shared.

use crate::entry::EntryKind;
use crate::error::LedgerError;
use crate::store::{Appended, Ledger};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

type Slot = Arc<OnceLock<std::result::Result<u64, Arc<LedgerError>>>>;

struct Queue {
    pending: Vec<(EntryKind, Vec<u8>, Slot)>,
    committing: bool,
    max_batch: usize,
}

/// A ledger shared by concurrent appenders, with group commit.
pub struct GroupCommit {
    ledger: Mutex<Ledger>,
    queue: Mutex<Queue>,
    done: Condvar,
    clock: Box<dyn Fn() -> u64 + Send + Sync>,
    after_commit: Box<dyn Fn(&mut Ledger, &Appended) + Send + Sync>,
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
    /// Wraps a ledger opened read-write. `clock` gives Unix nanoseconds for
    /// timestamps (the ledger itself reads no clock).
    pub fn new(ledger: Ledger, clock: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        GroupCommit {
            ledger: Mutex::new(ledger),
            queue: Mutex::new(Queue {
                pending: Vec::new(),
                committing: false,
                max_batch: 64 * 1024,
            }),
            done: Condvar::new(),
            clock: Box::new(clock),
            after_commit: Box::new(|_, _| {}),
        }
    }

    /// Runs `hook` after every durable batch, still under the ledger lock
    /// (e.g. to sign and store a checkpoint).
    pub fn with_after_commit(
        mut self,
        hook: impl Fn(&mut Ledger, &Appended) + Send + Sync + 'static,
    ) -> Self {
        self.after_commit = Box::new(hook);
        self
    }

    /// Appends one entry; returns its index once it is durable.
    pub fn append(
        &self,
        kind: EntryKind,
        payload: Vec<u8>,
    ) -> std::result::Result<u64, BatchError> {
        let slot: Slot = Arc::new(OnceLock::new());
        let mut q = self.lock_queue();
        q.pending.push((kind, payload, slot.clone()));
        loop {
            if let Some(r) = slot.get() {
                return r.clone().map_err(BatchError);
            }
            if !q.committing {
                q.committing = true;
                let take = q.pending.len().min(q.max_batch);
                let batch: Vec<_> = q.pending.drain(..take).collect();
                drop(q);
                self.commit(batch);
                q = self.lock_queue();
                q.committing = false;
                self.done.notify_all();
                continue;
            }
            q = self.done.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn commit(&self, batch: Vec<(EntryKind, Vec<u8>, Slot)>) {
        let items: Vec<(EntryKind, &[u8])> =
            batch.iter().map(|(k, p, _)| (*k, p.as_slice())).collect();
        let mut ledger = self.lock_ledger();
        match ledger.append((self.clock)(), &items) {
            Ok(a) => {
                (self.after_commit)(&mut ledger, &a);
                for (i, (_, _, slot)) in batch.iter().enumerate() {
                    let _ = slot.set(Ok(a.first + i as u64));
                }
            }
            Err(e) => {
                let e = Arc::new(e);
                for (_, _, slot) in &batch {
                    let _ = slot.set(Err(e.clone()));
                }
            }
        }
    }

    /// Runs `f` with the ledger locked (reads, proofs, checkpoints).
    pub fn with_ledger<T>(&self, f: impl FnOnce(&mut Ledger) -> T) -> T {
        f(&mut self.lock_ledger())
    }

    /// Takes the ledger back.
    pub fn into_inner(self) -> Ledger {
        self.ledger.into_inner().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }
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
}
