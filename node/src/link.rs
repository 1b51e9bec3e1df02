//! What one follower's link delivers, learned from AppendEntries round
//! trips: it sizes the next request and sets its deadline. Pure: no IO, no
//! clock (elapsed times are arguments).
//!
//! A request takes about `rtt + bytes / rate`. Small requests (heartbeats)
//! measure the round trip; requests that fill a good part of the budget
//! measure the rate. Each request is sized to occupy the link for about one
//! budget (so the follower hears its leader often, and a
//! lost request costs little), and its deadline grows with its bytes
//! (so a large request on a slow link is not cut off and resent forever).
//! A timeout lowers the rate to what the link at most delivered.

use std::time::Duration;

/// The rate assumed before anything is measured: a LAN or loopback, where
/// no request is split.
const START_RATE: f64 = 256.0 * 1024.0 * 1024.0;
/// The smallest rate the estimate goes down to (bytes/s): 1 KB/s.
const MIN_RATE: f64 = 1024.0;
/// Weight of a new rate sample.
const ALPHA: f64 = 0.3;
/// Slack on the expected transfer time before a request is given up.
const SLACK: f64 = 3.0;
/// The share of a slow link one follower's catch-up may take: the rest is
/// left for heartbeats and the other followers, whose messages a saturated
/// link would queue or drop past their election timeouts.
const PACE: f64 = 0.7;

/// One follower's link.
#[derive(Debug, Clone)]
pub struct LinkEstimate {
    /// Bytes per second the link delivered lately.
    rate: f64,
    /// The shortest round trip seen lately (of small requests).
    rtt: Duration,
    /// How long one request should occupy the link.
    budget: Duration,
    /// The deadline of a request with no bytes to speak of (a heartbeat).
    base: Duration,
}

impl LinkEstimate {
    /// A fresh estimate: requests of about `budget` of link time, deadlines
    /// of at least `base` (the heartbeat interval).
    pub fn new(budget: Duration, base: Duration) -> LinkEstimate {
        LinkEstimate {
            rate: START_RATE,
            rtt: Duration::ZERO,
            budget,
            base,
        }
    }

    /// The estimated rate, bytes per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// The most bytes one request should carry (a request of one entry is
    /// sent whatever its size).
    pub fn max_bytes(&self) -> usize {
        (self.rate * self.budget.as_secs_f64()).max(1.0) as usize
    }

    /// The deadline of a request of `bytes`: the base, plus the round trip
    /// and the expected transfer time with slack.
    pub fn deadline(&self, bytes: usize) -> Duration {
        let transfer = SLACK * bytes as f64 / self.rate;
        self.base + self.rtt + Duration::from_secs_f64(transfer.min(3600.0))
    }

    /// The entries of a request of `entries` and `bytes` that fit
    /// [`LinkEstimate::max_bytes`]; `None` when the whole request fits.
    pub fn entries_that_fit(&self, entries: usize, bytes: usize) -> Option<usize> {
        let max = self.max_bytes();
        if entries <= 1 || bytes <= max {
            return None;
        }
        // Entries of one request are of similar size (group-committed batches).
        let fit = (entries as u128 * max as u128 / bytes as u128) as usize;
        Some(fit.clamp(1, entries - 1))
    }

    /// How long to wait after a request of `bytes` that took `elapsed`
    /// before the next one, so a catch-up that fills the link leaves a
    /// share of it free (70%). Zero unless the request was limited by
    /// the link (it took at least half the budget).
    pub fn pause_after(&self, bytes: usize, elapsed: Duration) -> Duration {
        if elapsed < self.budget / 2 {
            return Duration::ZERO;
        }
        let paced = Duration::from_secs_f64((bytes as f64 / (PACE * self.rate)).min(60.0));
        paced.saturating_sub(elapsed).min(self.budget)
    }

    /// A request of `bytes` was answered after `elapsed`.
    pub fn delivered(&mut self, bytes: usize, elapsed: Duration) {
        if bytes < self.max_bytes() / 4 {
            // Too small to measure the rate: a round trip.
            self.rtt = if self.rtt.is_zero() {
                elapsed
            } else {
                // Follow increases slowly, decreases at once.
                elapsed.min(self.rtt.mul_f64(0.9) + elapsed.mul_f64(0.1))
            };
            return;
        }
        let transfer = elapsed
            .saturating_sub(self.rtt)
            .max(Duration::from_micros(100));
        let sample = bytes as f64 / transfer.as_secs_f64();
        self.rate = ((1.0 - ALPHA) * self.rate + ALPHA * sample).max(MIN_RATE);
    }

    /// A request of `bytes` got no answer within `waited`: the link
    /// delivered less than that.
    pub fn timed_out(&mut self, bytes: usize, waited: Duration) {
        let at_most = bytes as f64 / waited.as_secs_f64().max(1e-3);
        self.rate = (self.rate.min(at_most) / 2.0).max(MIN_RATE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HB: Duration = Duration::from_millis(200);

    /// A link of `rate` bytes/s and `rtt`, carrying requests sized by the
    /// estimate: returns the bytes delivered in `secs` of virtual time.
    fn run(est: &mut LinkEstimate, rate: f64, rtt: Duration, backlog: usize, secs: f64) -> usize {
        let (mut t, mut done) = (0.0, 0usize);
        let entry = 10_000usize;
        while t < secs && done < backlog {
            let entries = (backlog - done).div_ceil(entry).min(16);
            let bytes = (entries * entry).min(backlog - done);
            let (entries, bytes) = match est.entries_that_fit(entries, bytes) {
                Some(n) => (n, n * entry),
                None => (entries, bytes),
            };
            let _ = entries;
            let need = rtt.as_secs_f64() + bytes as f64 / rate;
            let deadline = est.deadline(bytes).as_secs_f64();
            if need <= deadline {
                t += need;
                done += bytes;
                est.delivered(bytes, Duration::from_secs_f64(need));
            } else {
                // Lost: the link was busy for the whole deadline.
                t += deadline;
                est.timed_out(bytes, Duration::from_secs_f64(deadline));
            }
            // A heartbeat between requests measures the round trip.
            est.delivered(100, rtt + Duration::from_secs_f64(100.0 / rate));
            t += rtt.as_secs_f64();
        }
        done
    }

    #[test]
    fn a_slow_link_is_learned_and_kept_busy() {
        // 1 Mbit/s, 10 ms: a backlog of 2 MB moves at well over half the rate.
        let mut est = LinkEstimate::new(HB, HB);
        let rate = 125_000.0;
        let done = run(&mut est, rate, Duration::from_millis(10), 2_000_000, 40.0);
        assert_eq!(done, 2_000_000, "the backlog is delivered");
        let est_rate = est.rate();
        assert!(
            (rate * 0.5..rate * 1.5).contains(&est_rate),
            "rate {est_rate}"
        );
        // A request occupies the link for about the budget.
        let t = est.max_bytes() as f64 / rate;
        assert!((0.1..0.4).contains(&t), "{t} s per request");
    }

    #[test]
    fn a_fast_link_splits_nothing() {
        let mut est = LinkEstimate::new(HB, HB);
        run(
            &mut est,
            500e6,
            Duration::from_micros(300),
            50_000_000,
            10.0,
        );
        assert!(est.max_bytes() > 16 << 20, "{}", est.max_bytes());
        assert_eq!(est.entries_that_fit(16, 16 << 20), None);
    }

    #[test]
    fn a_link_that_speeds_up_is_followed() {
        let mut est = LinkEstimate::new(HB, HB);
        run(
            &mut est,
            125_000.0,
            Duration::from_millis(10),
            1_000_000,
            30.0,
        );
        run(&mut est, 10e6, Duration::from_millis(1), 100_000_000, 5.0);
        assert!(est.rate() > 5e6, "{}", est.rate());
    }

    #[test]
    fn deadlines_grow_with_bytes_and_heartbeats_stay_short() {
        let mut est = LinkEstimate::new(HB, HB);
        est.timed_out(1_000_000, Duration::from_secs(1));
        assert!(est.deadline(0) < Duration::from_millis(250));
        assert!(est.deadline(1_000_000) > Duration::from_secs(2));
        assert_eq!(
            est.entries_that_fit(1, 10 << 20),
            None,
            "one entry always goes"
        );
        assert_eq!(est.entries_that_fit(4, 4 * est.max_bytes()), Some(1));
    }

    proptest! {
        /// Whatever it observes, the estimate stays usable: a positive
        /// rate, a request of at least one entry, a finite deadline.
        #[test]
        fn never_degenerate(ops in proptest::collection::vec((any::<bool>(), 0usize..50_000_000, 0u64..100_000), 0..200)) {
            let mut est = LinkEstimate::new(HB, HB);
            for (ok, bytes, us) in ops {
                let d = Duration::from_micros(us);
                if ok { est.delivered(bytes, d) } else { est.timed_out(bytes, d) }
                prop_assert!(est.rate() >= MIN_RATE && est.rate().is_finite());
                prop_assert!(est.max_bytes() >= 1);
                prop_assert!(est.deadline(bytes) < Duration::from_secs(4000));
                if let Some(n) = est.entries_that_fit(16, bytes) {
                    prop_assert!((1..16).contains(&n));
                }
            }
        }
    }
}
