//! Client sessions: exactly-once appends across retries (the Raft thesis,
//! §6.3). Pure logic, no IO: the table lives in the replicated state and
//! every replica updates it identically while applying.
//!
//! A client picks a random session id and numbers its appends `1, 2, …`.
//! Each append carries `(session, seq, floor)`, where every seq below
//! `floor` has been acknowledged to the client (so the cluster may forget
//! its result). A client retries an unacknowledged append with the same
//! tag, on any node. The first copy of a tag that Raft applies is appended;
//! every later copy is answered with the first one's placement and appends
//! nothing.
//!
//! The table is bounded: at most [`MAX_SESSIONS`] sessions and
//! [`MAX_RESULTS`] results in all (the sessions idle longest, by leader
//! timestamp, are dropped first), sessions idle for [`SESSION_IDLE_NS`] of
//! log time are dropped, and at most [`MAX_PENDING`] results per session
//! are kept. A dropped result makes a later copy of its call look new: the
//! bounds are far above what a client has in flight within its retry
//! deadline. Expiry uses the leader's
//! timestamps in the log, never a replica's clock, so every replica drops
//! the same sessions at the same entry.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use serde::{Deserialize, Serialize};

/// Sessions kept at most; the least recently used one goes first.
pub const MAX_SESSIONS: usize = 4096;
/// A session idle this long (log time) is forgotten: 10 minutes, far past
/// any client's retry deadline.
pub const SESSION_IDLE_NS: u64 = 600 * 1_000_000_000;
/// Results kept per session above its floor (appends in flight at once).
pub const MAX_PENDING: usize = 1024;
/// Results kept over all sessions: the table travels in the applied state
/// (written every 200 ms while applying) and in snapshots, so it must stay
/// small; past this the least recently used sessions are dropped.
pub const MAX_RESULTS: usize = 16_384;

pub use dlog_client::SessionTag;

/// Where an append's entries went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placed {
    /// Index of the first entry.
    pub first: u64,
    /// Number of entries.
    pub count: u64,
    /// Their timestamp.
    pub timestamp_ns: u64,
}

/// What to do with a tagged append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not seen before: append it, then [`Sessions::record`] it.
    New,
    /// Already applied: answer with this, append nothing.
    Duplicate(Placed),
    /// Below the session's floor: the client had it acknowledged already,
    /// and its result is forgotten. Append nothing; refuse.
    Stale,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    /// Leader timestamp of the session's last append.
    last_ns: u64,
    /// Seqs below this are acknowledged; their results are dropped.
    floor: u64,
    /// Results of applied appends at or above `floor`.
    done: BTreeMap<u64, Placed>,
}

/// The session table of the replicated state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sessions {
    sessions: BTreeMap<u64, Session>,
    /// Results held over all sessions.
    #[serde(default)]
    results: usize,
    /// Log time of the next sweep for idle sessions (one a second).
    #[serde(default)]
    next_sweep_ns: u64,
}

/// Log time between two sweeps for idle sessions.
const SWEEP_EVERY_NS: u64 = 1_000_000_000;

impl Sessions {
    /// Number of sessions held.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// True when no session is held.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Classifies `tag` at log time `now_ns` and moves its session's floor
    /// (forgetting the results below it). Call in apply order, before the
    /// append; a [`Verdict::New`] must be followed by [`Sessions::record`].
    pub fn check(&mut self, tag: &SessionTag, now_ns: u64) -> Verdict {
        let s = self.sessions.entry(tag.session).or_default();
        s.last_ns = s.last_ns.max(now_ns);
        if tag.floor > s.floor {
            s.floor = tag.floor;
            let before = s.done.len();
            s.done = s.done.split_off(&tag.floor);
            self.results -= before - s.done.len();
        }
        if tag.seq < s.floor {
            return Verdict::Stale;
        }
        match s.done.get(&tag.seq) {
            Some(p) => Verdict::Duplicate(*p),
            None => Verdict::New,
        }
    }

    /// Records where the append of `tag` went.
    pub fn record(&mut self, tag: &SessionTag, placed: Placed) {
        let s = self.sessions.entry(tag.session).or_default();
        if s.done.insert(tag.seq, placed).is_none() {
            self.results += 1;
        }
        while s.done.len() > MAX_PENDING {
            s.done.pop_first();
            self.results -= 1;
        }
    }

    /// Drops sessions idle since before `now_ns - SESSION_IDLE_NS`, then
    /// the least recently used ones beyond [`MAX_SESSIONS`].
    /// Idle sessions are swept at most once a second of log time; the
    /// bound on the count holds after every call.
    pub fn expire(&mut self, now_ns: u64) {
        if now_ns >= self.next_sweep_ns {
            self.next_sweep_ns = now_ns.saturating_add(SWEEP_EVERY_NS);
            let cutoff = now_ns.saturating_sub(SESSION_IDLE_NS);
            let mut dropped = 0;
            self.sessions.retain(|_, s| {
                let keep = s.last_ns >= cutoff;
                if !keep {
                    dropped += s.done.len();
                }
                keep
            });
            self.results -= dropped;
        }
        self.evict_over(MAX_SESSIONS, MAX_RESULTS);
    }

    /// Drops the least recently used sessions (oldest `(last_ns, id)`
    /// first) until at most `max_sessions` sessions and `max_results`
    /// results remain. Usually one goes (a new session on a full table):
    /// a heap built in O(n) finds it, where a sort of the whole table, run
    /// on every new session once the table is full, cost O(n log n).
    /// Replicated state: which sessions go must depend on the table only.
    fn evict_over(&mut self, max_sessions: usize, max_results: usize) {
        if self.sessions.len() <= max_sessions && self.results <= max_results {
            return;
        }
        let mut oldest: BinaryHeap<Reverse<(u64, u64)>> = self
            .sessions
            .iter()
            .map(|(&id, s)| Reverse((s.last_ns, id)))
            .collect();
        while self.sessions.len() > max_sessions || self.results > max_results {
            let Some(Reverse((_, id))) = oldest.pop() else {
                break;
            };
            if let Some(s) = self.sessions.remove(&id) {
                self.results -= s.done.len();
            }
        }
    }

    /// Results held over all sessions.
    pub fn results(&self) -> usize {
        self.results
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tag(session: u64, seq: u64, floor: u64) -> SessionTag {
        SessionTag {
            session,
            seq,
            floor,
        }
    }

    fn placed(first: u64) -> Placed {
        Placed {
            first,
            count: 1,
            timestamp_ns: 7,
        }
    }

    #[test]
    fn a_retry_gets_the_first_placement_and_a_stale_one_is_refused() {
        let mut t = Sessions::default();
        assert_eq!(t.check(&tag(1, 1, 1), 10), Verdict::New);
        t.record(&tag(1, 1, 1), placed(0));
        assert_eq!(t.check(&tag(1, 1, 1), 11), Verdict::Duplicate(placed(0)));
        // Another session with the same seq is unrelated.
        assert_eq!(t.check(&tag(2, 1, 1), 11), Verdict::New);
        // The floor passes seq 1: its result is forgotten, a copy is stale.
        assert_eq!(t.check(&tag(1, 2, 2), 12), Verdict::New);
        t.record(&tag(1, 2, 2), placed(1));
        assert_eq!(t.check(&tag(1, 1, 1), 13), Verdict::Stale);
        assert_eq!(t.check(&tag(1, 2, 1), 13), Verdict::Duplicate(placed(1)));
    }

    #[test]
    fn idle_and_excess_sessions_are_dropped_oldest_first() {
        let mut t = Sessions::default();
        for id in 0..(MAX_SESSIONS as u64 + 10) {
            t.check(&tag(id, 1, 1), 1_000 + id);
            t.record(&tag(id, 1, 1), placed(id));
        }
        t.expire(2_000);
        assert_eq!(t.len(), MAX_SESSIONS);
        // The 10 oldest went; the newest stayed.
        assert_eq!(t.check(&tag(0, 1, 1), 10_000), Verdict::New);
        let newest = MAX_SESSIONS as u64 + 9;
        assert_eq!(
            t.check(&tag(newest, 1, 1), 10_000),
            Verdict::Duplicate(placed(newest))
        );
        t.expire(10_000 + SESSION_IDLE_NS);
        assert_eq!(t.len(), 2, "only the two just used survive idling");
    }

    #[test]
    fn the_results_over_all_sessions_stay_bounded() {
        let mut t = Sessions::default();
        // 40 sessions that each keep 1000 results in flight (floor 1).
        for id in 0..40u64 {
            for seq in 1..=1000 {
                t.check(&tag(id, seq, 1), id);
                t.record(&tag(id, seq, 1), placed(seq));
            }
            t.expire(id);
            assert!(t.results() <= MAX_RESULTS, "{}", t.results());
        }
        let held: usize = t.sessions.values().map(|s| s.done.len()).sum();
        assert_eq!(held, t.results());
        assert_eq!(t.len(), MAX_RESULTS / 1000);
        // The oldest went first.
        assert!(!t.sessions.contains_key(&0) && t.sessions.contains_key(&39));
        // A JSON copy (the applied state) is a few MB at most.
        assert!(serde_json::to_vec(&t).unwrap().len() < 2 << 20);
    }

    /// The eviction before the heap: sort everything, drop oldest first.
    fn evict_by_sorting(t: &mut Sessions, max_sessions: usize, max_results: usize) {
        let mut by_age: Vec<(u64, u64)> =
            t.sessions.iter().map(|(&id, s)| (s.last_ns, id)).collect();
        by_age.sort_unstable();
        for (_, id) in by_age {
            if t.sessions.len() <= max_sessions && t.results <= max_results {
                break;
            }
            if let Some(s) = t.sessions.remove(&id) {
                t.results -= s.done.len();
            }
        }
    }

    proptest! {
        /// The heap drops exactly the sessions a full sort dropped: every
        /// replica, whichever build it runs, keeps the same table.
        #[test]
        fn eviction_drops_the_same_sessions_as_a_full_sort(
            sessions in proptest::collection::vec((0u64..50, 0u64..8, 1usize..6), 0..60),
            max_sessions in 0usize..40,
            max_results in 0usize..100,
        ) {
            let mut t = Sessions::default();
            for (i, (last_ns, session, results)) in sessions.into_iter().enumerate() {
                // Distinct ids, with ties on last_ns (the id breaks them).
                let id = i as u64 * 8 + session;
                for seq in 1..=results as u64 {
                    t.check(&tag(id, seq, 1), last_ns);
                    t.record(&tag(id, seq, 1), placed(seq));
                }
            }
            let mut reference = t.clone();
            t.evict_over(max_sessions, max_results);
            evict_by_sorting(&mut reference, max_sessions, max_results);
            prop_assert_eq!(t, reference);
        }

        /// Whatever the order, the retries and the interleaving of sessions,
        /// each (session, seq) is appended at most once, every later copy
        /// gets the first copy's placement, and nothing acknowledged-and-
        /// forgotten is appended again.
        #[test]
        fn each_tag_is_appended_at_most_once(
            ops in proptest::collection::vec((0u64..3, 1u64..20, 0u64..20), 0..300),
        ) {
            let mut t = Sessions::default();
            let mut first_place: BTreeMap<(u64, u64), Placed> = BTreeMap::new();
            let mut floors: BTreeMap<u64, u64> = BTreeMap::new();
            let mut next = 0u64;
            for (i, (session, seq, floor)) in ops.into_iter().enumerate() {
                let tg = tag(session, seq, floor);
                let f = floors.entry(session).or_default();
                *f = (*f).max(floor);
                match t.check(&tg, i as u64) {
                    Verdict::New => {
                        prop_assert!(seq >= *f);
                        prop_assert!(!first_place.contains_key(&(session, seq)), "appended twice");
                        let p = placed(next);
                        next += 1;
                        t.record(&tg, p);
                        first_place.insert((session, seq), p);
                    }
                    Verdict::Duplicate(p) => {
                        prop_assert_eq!(Some(&p), first_place.get(&(session, seq)));
                    }
                    Verdict::Stale => prop_assert!(seq < *f),
                }
            }
        }
    }
}
