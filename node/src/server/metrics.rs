//! The node's metrics page: Raft, ledger, batcher and tunnel figures in
//! Prometheus text.

use super::Inner;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

impl Inner {
    /// Tunnel counters in Prometheus text.
    fn endpoint_stats(&self, out: &mut String) {
        let st = self.pool.endpoint().stats();
        for (name, help, v) in [
            (
                "dlog_wg_rx_datagrams_total",
                "UDP datagrams received by the tunnel.",
                st.rx_datagrams,
            ),
            (
                "dlog_wg_tx_datagrams_total",
                "UDP datagrams sent by the tunnel.",
                st.tx_datagrams,
            ),
            (
                "dlog_wg_dropped_unknown_key_total",
                "Handshakes from keys not in the peer table, dropped.",
                st.dropped_unknown_key,
            ),
            (
                "dlog_wg_pq_rotations_total",
                "Post-quantum pre-shared keys installed.",
                st.pq_rotations,
            ),
            (
                "dlog_wg_pq_failures_total",
                "Post-quantum key exchanges that failed.",
                st.pq_failures,
            ),
            (
                "dlog_wg_sessions_restarted_total",
                "Peers seen back with new tunnel state.",
                st.sessions_restarted,
            ),
            (
                "dlog_wg_handshakes_total",
                "WireGuard handshakes completed.",
                st.handshakes,
            ),
        ] {
            crate::metrics::write_one(out, name, "counter", help, v as f64);
        }
    }
}

pub(super) fn inner_metrics(inner: Arc<Inner>) -> impl Fn() -> String + Send + Sync + 'static {
    use crate::metrics::{write_metric, write_one};
    move || {
        let m = inner.raft.metrics().borrow().clone();
        let (size, cp, age, (sessions, results), duplicates) = {
            let g = inner.sm.lock();
            let l = g.ledger().ok();
            (
                l.map(|l| l.size()).unwrap_or(0),
                l.and_then(|l| l.checkpoint().map(|c| c.size)).unwrap_or(0),
                g.checkpoint_age().unwrap_or(-1.0),
                g.sessions(),
                g.duplicates,
            )
        };
        let c = &inner.counters;
        let mut out = String::new();
        let last = m.last_log_index.unwrap_or(0);
        if let Some(rep) = &m.replication {
            write_metric(
                &mut out,
                "dlog_raft_follower_lag",
                "gauge",
                "Leader: Raft entries a follower's log lacks.",
                rep.iter().map(|(id, matched)| {
                    let matched = matched.map(|l| l.index).unwrap_or(0);
                    (
                        format!("node=\"{id}\""),
                        last.saturating_sub(matched) as f64,
                    )
                }),
            );
        }
        inner.endpoint_stats(&mut out);
        c.commit_seconds.render(
            "dlog_commit_seconds",
            "Leader: Raft append batch submitted to committed and applied.",
            &mut out,
        );
        c.append_seconds.render(
            "dlog_append_seconds",
            "Leader: client append received to acknowledged.",
            &mut out,
        );
        c.batch_entries.render(
            "dlog_batch_entries",
            "Leader: entries per Raft append batch.",
            &mut out,
        );
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        for (name, kind, help, v) in [
            (
                "dlog_sessions",
                "gauge",
                "Client sessions in the replicated session table.",
                sessions as f64,
            ),
            (
                "dlog_session_results",
                "gauge",
                "Append results held for retries.",
                results as f64,
            ),
            (
                "dlog_duplicate_appends_total",
                "counter",
                "Copies of tagged appends recognised and not stored again.",
                duplicates as f64,
            ),
            (
                "dlog_checkpoint_age_seconds",
                "gauge",
                "Seconds since this replica stored its latest checkpoint (-1: none since start).",
                age,
            ),
            (
                "dlog_appends_total",
                "counter",
                "Leader: client entries acknowledged.",
                load(&c.appends),
            ),
            (
                "dlog_batches_total",
                "counter",
                "Leader: Raft append batches committed.",
                load(&c.batches),
            ),
            (
                "dlog_refused_calls_total",
                "counter",
                "Calls refused (role, or not the signer's leader).",
                load(&c.refused),
            ),
            (
                "dlog_checkpoints_total",
                "counter",
                "Leader: checkpoints committed with a majority of signatures.",
                load(&c.checkpoints),
            ),
            (
                "dlog_raft_term",
                "gauge",
                "Current Raft term.",
                m.current_term as f64,
            ),
            (
                "dlog_raft_leader",
                "gauge",
                "Raft id of the known leader (0: none).",
                m.current_leader.unwrap_or(0) as f64,
            ),
            (
                "dlog_raft_applied",
                "gauge",
                "Last applied Raft log index.",
                m.last_applied.map(|l| l.index).unwrap_or(0) as f64,
            ),
            (
                "dlog_ledger_size",
                "gauge",
                "Entries in this replica's ledger.",
                size as f64,
            ),
            (
                "dlog_checkpoint_size",
                "gauge",
                "Tree size of this replica's latest stored checkpoint.",
                cp as f64,
            ),
        ] {
            write_one(&mut out, name, kind, help, v);
        }
        out
    }
}
