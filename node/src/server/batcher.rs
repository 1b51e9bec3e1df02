//! Group commit on the leader: client appends gathered into Raft entries.

use super::leader::write_err;
use super::{bad, Inner, Job};
use crate::rpc::{Reply, RpcError};
use crate::session::Placed;
use crate::types::{CallTag, Items, Request};
use dlog_ledger::now_ns;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, Semaphore};

/// A batch smaller than this (entries or payload bytes) waits while
/// [`SMALL_IN_FLIGHT`] batches are in flight, and grows meanwhile; larger
/// batches are pipelined up to `batch.in_flight`. Many small appenders thus
/// share few Raft entries, and a bulk loader still keeps several in flight.
const PIPELINE_MIN_ENTRIES: usize = 256;
const PIPELINE_MIN_BYTES: usize = 64 << 10;

/// Small batches in flight at once. Two, not one: openraft 0.9 sends each
/// follower one AppendEntries at a time and, after a commit, a heartbeat
/// carrying the new commit index; a second batch already appended rides in
/// place of that heartbeat instead of waiting for its round trip (64
/// appenders: 24.5k -> 26.2k appends/s, medians of 6 paired runs).
const SMALL_IN_FLIGHT: usize = 2;

/// How much a job weighs against the batch bounds.
pub(super) trait Weigh {
    /// Client entries.
    fn entries(&self) -> usize;
    /// Payload bytes.
    fn bytes(&self) -> usize;
}

impl Weigh for Job {
    fn entries(&self) -> usize {
        self.items.len()
    }
    fn bytes(&self) -> usize {
        self.items.payload_bytes()
    }
}

/// The `[batch]` bounds of one Raft entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Bounds {
    /// Most client entries.
    pub entries: usize,
    /// Most payload bytes.
    pub bytes: usize,
}

/// The gathering policy, free of IO and clocks: client jobs joined into
/// one Raft entry within [`Bounds`], and when to propose it.
#[derive(Debug)]
pub(super) struct Gathered<J> {
    jobs: Vec<J>,
    n: usize,
    bytes: usize,
    max: Bounds,
}

impl<J: Weigh> Gathered<J> {
    /// A batch opened by `first`, which is taken whatever it weighs (one
    /// call's limits were checked at the RPC, and are within the bounds).
    pub fn new(first: J, max: Bounds) -> Gathered<J> {
        let mut g = Gathered {
            jobs: Vec::new(),
            n: 0,
            bytes: 0,
            max,
        };
        g.push(first);
        g
    }

    fn push(&mut self, j: J) {
        self.n += j.entries();
        self.bytes += j.bytes();
        self.jobs.push(j);
    }

    /// Adds `j`, or returns it when it would break a bound (it opens the
    /// next batch), so a Raft entry stays small enough for one frame.
    pub fn add(&mut self, j: J) -> Option<J> {
        if self.n + j.entries() > self.max.entries || self.bytes + j.bytes() > self.max.bytes {
            return Some(j);
        }
        self.push(j);
        None
    }

    /// Large enough to be pipelined at once.
    pub fn is_big(&self) -> bool {
        self.n >= PIPELINE_MIN_ENTRIES || self.bytes >= PIPELINE_MIN_BYTES
    }

    /// Whether to propose the batch now rather than wait, gathering, for
    /// one of the `in_flight` batches to finish: it is big, a job is
    /// waiting for the next batch (`carry`), no job can come any more
    /// (`closed`), or fewer than [`SMALL_IN_FLIGHT`] batches are in flight.
    pub fn ready(&self, in_flight: usize, carry: bool, closed: bool) -> bool {
        self.is_big() || carry || closed || in_flight < SMALL_IN_FLIGHT
    }

    /// The jobs, in the order they came.
    pub fn into_jobs(self) -> Vec<J> {
        self.jobs
    }
}

/// Leader timestamps that never go backwards, whatever the clock does.
#[derive(Debug, Default)]
pub(super) struct Stamps {
    last: u64,
}

impl Stamps {
    /// The timestamp of the next batch, given the clock's `now_ns`.
    pub fn next(&mut self, now_ns: u64) -> u64 {
        self.last = self.last.max(now_ns);
        self.last
    }
}

/// Adds the jobs already queued in `rx` until one does not fit, which is
/// left in `carry` (nothing is taken while `carry` holds a job).
fn take_queued(batch: &mut Gathered<Job>, rx: &mut mpsc::Receiver<Job>, carry: &mut Option<Job>) {
    while carry.is_none() {
        match rx.try_recv() {
            Ok(j) => *carry = batch.add(j),
            Err(_) => break,
        }
    }
}

/// The leader's batcher: gathers client jobs into Raft entries and
/// proposes them, at most `batch.in_flight` at once.
pub(super) async fn run(inner: Arc<Inner>, mut rx: mpsc::Receiver<Job>) {
    let sem = Arc::new(Semaphore::new(inner.cfg.batch.in_flight));
    let max = Bounds {
        entries: inner.cfg.batch.max_entries,
        bytes: inner.cfg.batch.max_bytes,
    };
    let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    let mut stamps = Stamps::default();
    // A job that did not fit the previous batch opens the next one.
    let mut carry: Option<Job> = None;
    loop {
        let first = match carry.take() {
            Some(j) => j,
            None => match rx.recv().await {
                Some(j) => j,
                None => return,
            },
        };
        let mut batch = Gathered::new(first, max);
        let mut closed = false;
        loop {
            take_queued(&mut batch, &mut rx, &mut carry);
            if batch.ready(in_flight.load(Ordering::Acquire), carry.is_some(), closed) {
                break;
            }
            // Small, and a batch is in flight: wait for it, gathering more.
            tokio::select! {
                _ = done.notified() => {}
                j = rx.recv() => match j {
                    Some(j) => carry = batch.add(j),
                    None => closed = true,
                },
            }
        }
        let Ok(permit) = sem.clone().acquire_owned().await else {
            return;
        };
        // Group commit as late as possible: what queued while every slot
        // was busy joins this entry instead of waiting for the next one.
        take_queued(&mut batch, &mut rx, &mut carry);
        in_flight.fetch_add(1, Ordering::AcqRel);
        let flight = (in_flight.clone(), done.clone());
        let jobs = batch.into_jobs();
        let ts = stamps.next(now_ns());
        let mut parts = Vec::with_capacity(jobs.len());
        let mut calls = Vec::with_capacity(jobs.len());
        let mut waiters = Vec::with_capacity(jobs.len());
        for j in jobs {
            waiters.push(j.reply);
            calls.push(CallTag {
                count: j.items.len() as u32,
                tag: j.tag,
            });
            parts.push(j.items);
        }
        let items = Items::concat(&parts);
        let inner2 = inner.clone();
        let submitted = Instant::now();
        tokio::spawn(async move {
            let res = inner2
                .raft
                .client_write(Request::AppendCalls {
                    timestamp_ns: ts,
                    items,
                    calls,
                })
                .await;
            drop(permit);
            flight.0.fetch_sub(1, Ordering::AcqRel);
            flight.1.notify_one();
            match res {
                Ok(r) => {
                    let c = &inner2.counters;
                    c.batches.fetch_add(1, Ordering::Relaxed);
                    c.commit_seconds.observe(submitted.elapsed().as_secs_f64());
                    c.batch_entries.observe(r.data.count as f64);
                    inner2.appended.notify_one();
                    for (tx, placed) in waiters.into_iter().zip(call_results(&r.data)) {
                        let _ = tx.send(placed.map(|p| Reply::Appended {
                            first: p.first,
                            count: p.count,
                            timestamp_ns: p.timestamp_ns,
                        }));
                    }
                }
                Err(e) => {
                    let err = write_err(&inner2, e);
                    for tx in waiters {
                        let _ = tx.send(Err(err.clone()));
                    }
                }
            }
        });
    }
}

/// Each call's answer from an applied [`Request::AppendCalls`].
pub(super) fn call_results(
    r: &crate::types::Response,
) -> impl Iterator<Item = std::result::Result<Placed, RpcError>> + '_ {
    r.calls.iter().map(|p| {
        p.ok_or_else(|| {
            bad(
                "not appended: this session tag is below the session's floor (the call was \
                 acknowledged already), or the batch was refused",
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A job of `(entries, bytes)`, numbered to check the order.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct J(usize, usize, usize);

    impl Weigh for J {
        fn entries(&self) -> usize {
            self.0
        }
        fn bytes(&self) -> usize {
            self.1
        }
    }

    const B: Bounds = Bounds {
        entries: 8192,
        bytes: 1 << 20,
    };

    #[test]
    fn a_job_that_does_not_fit_opens_the_next_batch() {
        let mut g = Gathered::new(J(8000, 10, 0), B);
        assert_eq!(g.add(J(100, 10, 1)), None);
        assert_eq!(
            g.add(J(100, 10, 2)),
            Some(J(100, 10, 2)),
            "8200 > 8192 entries"
        );
        let mut g = Gathered::new(J(1, 1 << 19, 0), B);
        assert_eq!(
            g.add(J(1, (1 << 19) + 1, 1)),
            Some(J(1, (1 << 19) + 1, 1)),
            "bytes"
        );
        assert_eq!(g.add(J(1, 1 << 19, 2)), None, "exactly at the bound fits");
        assert_eq!(g.into_jobs().len(), 2);
        // The first job is taken whatever it weighs.
        let g = Gathered::new(J(9000, 2 << 20, 0), B);
        assert_eq!(g.into_jobs(), vec![J(9000, 2 << 20, 0)]);
    }

    #[test]
    fn small_batches_wait_while_two_are_in_flight() {
        let small = Gathered::new(J(10, 100, 0), B);
        assert!(small.ready(0, false, false));
        assert!(small.ready(1, false, false));
        assert!(!small.ready(2, false, false), "waits, gathering more");
        assert!(!small.ready(7, false, false));
        assert!(
            small.ready(2, true, false),
            "a job is waiting for the next batch"
        );
        assert!(small.ready(2, false, true), "no job can come any more");
        let many = Gathered::new(J(PIPELINE_MIN_ENTRIES, 100, 0), B);
        assert!(many.ready(7, false, false), "big by entries: pipelined");
        let heavy = Gathered::new(J(1, PIPELINE_MIN_BYTES, 0), B);
        assert!(heavy.ready(7, false, false), "big by bytes: pipelined");
    }

    #[test]
    fn stamps_never_go_backwards() {
        let mut s = Stamps::default();
        assert_eq!(s.next(100), 100);
        assert_eq!(s.next(90), 100, "the clock stepped back");
        assert_eq!(s.next(100), 100);
        assert_eq!(s.next(250), 250);
    }

    proptest! {
        /// Gathering any stream of jobs (each within one call's limits)
        /// yields batches within the bounds, in order, losing none.
        #[test]
        fn batches_keep_bounds_and_order(
            jobs in proptest::collection::vec((1usize..3000, 0usize..400_000), 1..60),
        ) {
            let jobs: Vec<J> = jobs.iter().enumerate().map(|(i, &(n, b))| J(n, b, i)).collect();
            let mut batches: Vec<Vec<J>> = Vec::new();
            let mut it = jobs.iter().copied();
            let mut carry = it.next();
            while let Some(first) = carry.take() {
                let mut g = Gathered::new(first, B);
                for j in it.by_ref() {
                    if let Some(back) = g.add(j) {
                        carry = Some(back);
                        break;
                    }
                }
                batches.push(g.into_jobs());
            }
            for b in &batches {
                prop_assert!(b.iter().map(|j| j.0).sum::<usize>() <= B.entries);
                prop_assert!(b.iter().map(|j| j.1).sum::<usize>() <= B.bytes);
            }
            let flat: Vec<J> = batches.concat();
            prop_assert_eq!(flat, jobs);
        }
    }
}
