//! A sliding window of counters kept in a fixed ring of time buckets.
//!
//! Shared by the retry budget (deposits / withdrawals per second) and the
//! circuit breaker (successes / failures per tenth of its window). The ring is
//! allocated once, at construction; updates touch at most every bucket once
//! per call (only when a long idle gap has to be cleared) and usually one, so
//! the request path never allocates.

use std::time::{Duration, Instant};

/// Number of independent counters per bucket (budget: deposits and
/// withdrawals; breaker: successes and failures).
pub(crate) const COUNTERS: usize = 2;

/// Sliding-window counters over `slots.len()` buckets of `width` each.
///
/// Not synchronised: owners keep it behind their own lock together with the
/// rest of their state, so one short critical section covers everything.
#[derive(Debug)]
pub(crate) struct CounterRing {
    /// Bucket width in nanoseconds, at least 1.
    width_nanos: u128,
    slots: Box<[[u64; COUNTERS]]>,
    /// Time origin, fixed by the first call: constructors take no `now`, and
    /// only differences matter.
    epoch: Option<Instant>,
    /// Absolute index (since `epoch`) of the newest bucket in the ring.
    head: u64,
    /// Sum of every live bucket, kept incrementally so reading is O(1).
    totals: [u64; COUNTERS],
}

impl CounterRing {
    /// A ring of `buckets` buckets (at least 1) of `width` (at least 1 ns);
    /// the window it covers is `buckets * width`.
    pub(crate) fn new(buckets: usize, width: Duration) -> Self {
        Self {
            width_nanos: width.as_nanos().max(1),
            slots: vec![[0; COUNTERS]; buckets.max(1)].into_boxed_slice(),
            epoch: None,
            head: 0,
            totals: [0; COUNTERS],
        }
    }

    /// Adds `n` to counter `which` in the bucket of `now`.
    pub(crate) fn add(&mut self, now: Instant, which: usize, n: u64) {
        let slot = self.advance(now);
        if let (Some(bucket), Some(total)) = (self.slots.get_mut(slot), self.totals.get_mut(which))
        {
            if let Some(c) = bucket.get_mut(which) {
                *c = c.saturating_add(n);
                *total = total.saturating_add(n);
            }
        }
    }

    /// The sums over the window ending at `now`.
    pub(crate) fn totals(&mut self, now: Instant) -> [u64; COUNTERS] {
        self.advance(now);
        self.totals
    }

    /// Forgets everything (e.g. when a breaker closes, so failures that
    /// opened it cannot re-trip it at once).
    pub(crate) fn clear(&mut self) {
        self.slots.iter_mut().for_each(|b| *b = [0; COUNTERS]);
        self.totals = [0; COUNTERS];
    }

    /// Moves the head to the bucket of `now`, expiring the buckets that fell
    /// out of the window, and returns the slot index of `now`'s bucket.
    fn advance(&mut self, now: Instant) -> usize {
        let epoch = *self.epoch.get_or_insert(now);
        // A `now` earlier than the head (callers on several threads read the
        // clock before taking the lock) lands in the head bucket: time never
        // runs backwards for the ring.
        let abs = now.saturating_duration_since(epoch).as_nanos() / self.width_nanos;
        let abs = u64::try_from(abs).unwrap_or(u64::MAX);
        let len = self.slots.len() as u64;
        if abs > self.head {
            // Clear every bucket between the old head and the new one; after
            // a gap of a whole window or more, that is all of them.
            let gap = (abs - self.head).min(len);
            for step in 1..=gap {
                let slot = ((self.head.wrapping_add(step)) % len) as usize;
                if let Some(bucket) = self.slots.get_mut(slot) {
                    for (total, c) in self.totals.iter_mut().zip(bucket.iter_mut()) {
                        *total = total.saturating_sub(*c);
                        *c = 0;
                    }
                }
            }
            self.head = abs;
        }
        (self.head % len) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn counts_within_window_and_expires_after() {
        let t0 = Instant::now();
        let mut r = CounterRing::new(10, S);
        r.add(t0, 0, 3);
        r.add(t0 + S * 4, 1, 2);
        assert_eq!(r.totals(t0 + S * 9), [3, 2]);
        // The first bucket leaves the window after 10 s.
        assert_eq!(r.totals(t0 + S * 10), [0, 2]);
        assert_eq!(r.totals(t0 + S * 14), [0, 0]);
    }

    #[test]
    fn long_gap_clears_everything() {
        let t0 = Instant::now();
        let mut r = CounterRing::new(4, S);
        for i in 0..4 {
            r.add(t0 + S * i, 0, 1);
        }
        assert_eq!(r.totals(t0 + S * 3), [4, 0]);
        assert_eq!(r.totals(t0 + S * 1000), [0, 0]);
        r.add(t0 + S * 1000, 0, 1);
        assert_eq!(r.totals(t0 + S * 1001), [1, 0]);
    }

    #[test]
    fn earlier_now_goes_to_head_bucket() {
        let t0 = Instant::now();
        let mut r = CounterRing::new(2, S);
        r.add(t0 + S * 5, 0, 1);
        r.add(t0 + S, 0, 1);
        assert_eq!(r.totals(t0 + S * 5), [2, 0]);
        assert_eq!(r.totals(t0 + S * 7), [0, 0]);
    }

    #[test]
    fn clear_resets() {
        let t0 = Instant::now();
        let mut r = CounterRing::new(3, S);
        r.add(t0, 1, 7);
        r.clear();
        assert_eq!(r.totals(t0), [0, 0]);
    }
}
