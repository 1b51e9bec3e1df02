//! How quickly a cluster serves writes again after its leader dies.
//!
//! openraft 0.9 alone leaves two slow paths after a leader crash, both seen
//! in the kill -9 test (failover of 4.5 s, and up to 11 s):
//!
//! 1. **Forwarding to a dead leader.** A follower forwards a client's append
//!    to the leader it knows. When that leader has died, the forward waits
//!    for an answer that never comes, the client's attempt times out, and
//!    the client wrongly avoids a healthy follower for a while. Here a
//!    follower keeps the time it last heard from a leader
//!    ([`LeaderContact`]); a forward gives up (a retryable `NoLeader`) as
//!    soon as the leader has been silent for `raft.election_min_ms` or
//!    another leader is known ([`leader_lost`]), and a new forward to a
//!    silent leader is not started at all. The client retries the same
//!    session tag, so an append the dead leader did commit is stored once.
//!
//! 2. **The shorter log calls the election.** openraft draws each node's
//!    election timeout once, at start. When the survivor whose log is
//!    *shorter* times out first, the other rejects it (its log is longer)
//!    but stays a follower until its own timeout; if the shorter-log node
//!    has the higher id, the longer-log node even adopts its vote and waits
//!    a second timeout (Raft's 1.5–4.5 s instead of 1.5–3 s). Here a voter
//!    that rejects a vote *because its own log is longer*, while it has not
//!    heard from a leader for a whole lease, campaigns at once
//!    ([`should_campaign`], [`campaign`]): the candidate that can win
//!    starts the moment the one that cannot has shown the leader is gone.
//!    It never disrupts a live leader: a voter that heard from one within
//!    the lease does not campaign, and the others reject its votes anyway.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use openraft::raft::{VoteRequest, VoteResponse};

use crate::types::{NodeId, Raft};

/// When this node last heard from a leader: the arrival of an
/// AppendEntries or snapshot chunk sent under a committed vote (a leader's).
#[derive(Debug)]
pub struct LeaderContact {
    start: Instant,
    /// Nanoseconds after `start`, plus one; 0 = never.
    last: AtomicU64,
    /// A [`campaign`] is running.
    campaigning: AtomicBool,
}

impl Default for LeaderContact {
    fn default() -> Self {
        LeaderContact {
            start: Instant::now(),
            last: AtomicU64::new(0),
            campaigning: AtomicBool::new(false),
        }
    }
}

impl LeaderContact {
    /// Records a Raft message that arrived now under `vote`: a committed
    /// vote is a leader's, anything else (a candidate's) is not contact.
    pub fn heard_under(&self, vote: &openraft::Vote<NodeId>) {
        if vote.is_committed() {
            self.heard();
        }
    }

    /// Records a message from the leader, now.
    pub fn heard(&self) {
        let ns = self.start.elapsed().as_nanos() as u64 + 1;
        self.last.fetch_max(ns, Ordering::Relaxed);
    }

    /// How long the leader has been silent (since this node started, if it
    /// never heard from one).
    pub fn silent_for(&self) -> Duration {
        let now = self.start.elapsed();
        match self.last.load(Ordering::Relaxed) {
            0 => now,
            ns => now.saturating_sub(Duration::from_nanos(ns - 1)),
        }
    }
}

/// Whether a voter that just answered `req` with `resp` should start an
/// election at once: it refused a candidate of a newer term only because
/// its own log is longer (so the candidate cannot win and this node can),
/// and no leader has spoken to it for `lease` (so the refusal was not the
/// leader lease protecting a live leader). Pure; see the module docs.
pub fn should_campaign(
    req: &VoteRequest<NodeId>,
    resp: &VoteResponse<NodeId>,
    silent_for: Duration,
    lease: Duration,
) -> bool {
    !resp.vote_granted
        && req.vote > resp.vote
        && resp.last_log_id > req.last_log_id
        && silent_for >= lease
}

/// Campaigns now: triggers an election, and if it ends without a leader
/// because a candidate of the same term holds the other votes (openraft
/// orders candidates of one term by node id), triggers one more, whose
/// newer term that candidate grants. At most one campaign runs at a time;
/// each election waits at most `patience` (the heartbeat: an answer over
/// loopback or a LAN takes far less) before the second is tried. After
/// that, openraft's own timer takes over.
pub async fn campaign(raft: Raft, contact: &LeaderContact, me: NodeId, patience: Duration) {
    if contact.campaigning.swap(true, Ordering::AcqRel) {
        return;
    }
    for attempt in 0..2 {
        let mut rx = raft.server_metrics();
        let term = rx.borrow().vote.leader_id().term;
        if raft.trigger().elect().await.is_err() {
            break;
        }
        tracing::info!(
            attempt,
            "refused a candidate with a shorter log: campaigning at once"
        );
        // The election of a newer term ends when a leader of it is known
        // (a committed vote), or when this node's vote goes to another
        // candidate (uncommitted): then one more, newer term is worth it.
        let ended = tokio::time::timeout(
            patience,
            rx.wait_for(|m| {
                let v = &m.vote;
                v.leader_id().term > term
                    && (v.is_committed() || v.leader_id().voted_for() != Some(me))
            }),
        )
        .await;
        let lost_to_a_peer = matches!(&ended, Ok(Ok(m)) if !m.vote.is_committed());
        drop(ended);
        if !lost_to_a_peer {
            break;
        }
    }
    contact.campaigning.store(false, Ordering::Release);
}

/// Resolves, with the reason, once forwarding to `leader` should stop: this
/// node knows another leader (or none), or `leader` has been silent for
/// `silence`. Resolves at once if that is already so. Wakes on openraft's
/// server metrics, which change with the leader or vote, not per applied
/// entry.
pub async fn leader_lost(
    raft: &Raft,
    contact: &LeaderContact,
    leader: NodeId,
    silence: Duration,
) -> String {
    let mut rx = raft.server_metrics();
    loop {
        let now = rx.borrow_and_update().current_leader;
        if now != Some(leader) {
            return match now {
                Some(l) => format!("the leader changed to node {l}"),
                None => "the leader is gone; an election is under way".into(),
            };
        }
        let quiet = contact.silent_for();
        if quiet >= silence {
            return format!(
                "the leader has been silent for {} ms; an election is due",
                quiet.as_millis()
            );
        }
        tokio::select! {
            r = rx.changed() => {
                if r.is_err() {
                    return "this node is shutting down".into();
                }
            }
            _ = tokio::time::sleep(silence - quiet) => {}
        }
    }
}

/// How stale a follower's state may be. Each message from the leader
/// announces how far the leader has committed; once this replica has
/// applied that far, it holds everything the leader had committed when it
/// sent the message. So the time since the newest such message bounds what
/// it may lack (a follower whose disk stalls falls behind, and the bound
/// grows with it).
#[derive(Debug, Default)]
pub struct CommitNews {
    recent: std::sync::Mutex<std::collections::VecDeque<(u64, Instant)>>,
}

impl CommitNews {
    /// Messages remembered (older ones are dropped).
    const KEEP: usize = 64;

    /// Messages closer than this to the newest one are merged into it.
    const MERGE: Duration = Duration::from_millis(5);

    /// A leader's message announcing commit index `commit` arrived at `at`.
    pub fn heard(&self, commit: u64, at: Instant) {
        let mut g = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        // Under load messages come every few microseconds: merging keeps
        // the remembered ones spread over time. The merged entry keeps the
        // earlier time and the larger commit, which only makes the bound
        // more conservative.
        if let Some(last) = g.back_mut() {
            if at.saturating_duration_since(last.1) < Self::MERGE {
                last.0 = last.0.max(commit);
                return;
            }
        }
        if g.len() == Self::KEEP {
            g.pop_front();
        }
        g.push_back((commit, at));
    }

    /// Time since the newest remembered message whose commit index this
    /// replica has applied (`applied`); `None` when it has applied none of
    /// them (it is catching up: how far behind is not known here).
    pub fn behind(&self, applied: u64, now: Instant) -> Option<Duration> {
        let g = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        g.iter()
            .rev()
            .find(|(c, _)| *c <= applied)
            .map(|(_, at)| now.saturating_duration_since(*at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, LogId, Vote};

    fn log(term: u64, index: u64) -> Option<LogId<NodeId>> {
        Some(LogId::new(CommittedLeaderId::new(term, 1), index))
    }

    fn req(term: u64, node: NodeId, last: Option<LogId<NodeId>>) -> VoteRequest<NodeId> {
        VoteRequest::new(Vote::new(term, node), last)
    }

    fn resp(
        vote: Vote<NodeId>,
        granted: bool,
        last: Option<LogId<NodeId>>,
    ) -> VoteResponse<NodeId> {
        VoteResponse::new(vote, last, granted)
    }

    const LEASE: Duration = Duration::from_millis(1500);
    const SILENT: Duration = Duration::from_millis(2000);

    #[test]
    fn staleness_counts_from_the_newest_commit_applied() {
        let news = CommitNews::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        news.heard(5, t0);
        news.heard(7, t0 + ms(10));
        news.heard(9, t0 + ms(20));
        let now = t0 + ms(30);
        assert_eq!(news.behind(7, now), Some(ms(20)));
        assert_eq!(news.behind(100, now), Some(ms(10)));
        assert_eq!(news.behind(4, now), None, "applied less than any announced");
        // Within 5 ms of the newest: merged (earlier time, larger commit).
        news.heard(11, t0 + ms(22));
        assert_eq!(
            news.behind(9, now),
            Some(ms(20)),
            "9 merged into 11: the older bound"
        );
        assert_eq!(news.behind(11, now), Some(ms(10)));
        for i in 0..CommitNews::KEEP as u64 {
            news.heard(20 + i, now + ms(10 * (i + 1)));
        }
        assert_eq!(news.behind(11, now), None, "old news is forgotten");
    }

    #[test]
    fn refusing_a_shorter_log_after_the_lease_campaigns() {
        // node 3 (term 6, log up to 5-100) asks node 2 (term 5, log 5-120).
        let r = req(6, 3, log(5, 100));
        let mine = Vote::new_committed(5, 1);
        assert!(should_campaign(
            &r,
            &resp(mine, false, log(5, 120)),
            SILENT,
            LEASE
        ));
        // Longer by term, not index.
        assert!(should_campaign(
            &req(6, 3, log(4, 200)),
            &resp(mine, false, log(5, 120)),
            SILENT,
            LEASE
        ));
        // No log at all on the candidate.
        assert!(should_campaign(
            &req(6, 3, None),
            &resp(mine, false, log(1, 0)),
            SILENT,
            LEASE
        ));
    }

    #[test]
    fn no_campaign_when_the_vote_was_granted_or_the_logs_say_otherwise() {
        let mine = Vote::new_committed(5, 1);
        // Granted: the candidate wins.
        let r = req(6, 3, log(5, 120));
        assert!(!should_campaign(
            &r,
            &resp(Vote::new(6, 3), true, log(5, 120)),
            SILENT,
            LEASE
        ));
        // Refused, but the logs are equal: the refusal was about the vote.
        assert!(!should_campaign(
            &r,
            &resp(Vote::new(6, 4), false, log(5, 120)),
            SILENT,
            LEASE
        ));
        // The candidate's log is longer.
        assert!(!should_campaign(
            &req(6, 3, log(5, 130)),
            &resp(mine, false, log(5, 120)),
            SILENT,
            LEASE
        ));
    }

    #[test]
    fn no_campaign_inside_the_lease_or_for_a_stale_candidate() {
        let mine = Vote::new_committed(5, 1);
        let r = req(6, 3, log(5, 100));
        // A leader spoke within the lease: the refusal protects it.
        assert!(!should_campaign(
            &r,
            &resp(mine, false, log(5, 120)),
            Duration::from_millis(300),
            LEASE
        ));
        // A delayed request of an election already over (this node's vote is newer).
        assert!(!should_campaign(
            &req(6, 3, log(5, 100)),
            &resp(Vote::new_committed(7, 2), false, log(7, 130)),
            SILENT,
            LEASE
        ));
    }

    #[test]
    fn contact_measures_silence() {
        let c = LeaderContact::default();
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            c.silent_for() >= Duration::from_millis(20),
            "never heard: silent since start"
        );
        c.heard();
        assert!(c.silent_for() < Duration::from_millis(20));
        std::thread::sleep(Duration::from_millis(15));
        let s = c.silent_for();
        assert!(
            s >= Duration::from_millis(15) && s < Duration::from_secs(5),
            "{s:?}"
        );
    }
}
