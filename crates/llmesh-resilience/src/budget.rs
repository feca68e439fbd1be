//! Retry budgets (Finagle / Linkerd style): retries may add at most a fixed
//! share of the original traffic, plus a small floor so that low-traffic
//! clients can still retry.
//!
//! A per-request retry limit alone lets a failing upstream receive up to
//! `1 + max_retries` times its normal load exactly when it is least able to
//! take it; a budget caps the extra load for the whole client instead.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::ring::CounterRing;

const DEPOSITS: usize = 0;
const WITHDRAWALS: usize = 1;
/// Fixed-point scale of the ratio: integer arithmetic keeps the cap exact
/// (no float rounding letting one retry too many through).
const SCALE: u64 = 1000;
/// The window is kept in per-second buckets; this bounds the ring's size.
const MAX_TTL_SECS: u64 = 3600;

/// A sliding-window retry budget, shared by every request of one client (or
/// route). `Send + Sync`; each call holds a lock for a few integer updates.
///
/// Within the window, successful withdrawals are at most
/// `ratio * deposits + min_per_second * ttl_secs` (deposits and withdrawals
/// counted in that same window). The window is the last `ttl_secs` one-second
/// buckets, current one included, so it spans between `ttl - 1 s` and `ttl`
/// of history; bucket boundaries are whole seconds after the first call.
#[derive(Debug)]
pub struct RetryBudget {
    /// Credit per deposit, in 1/SCALE of a retry.
    per_deposit: u64,
    /// Credit always available in the window (the floor), in 1/SCALE.
    reserve: u64,
    window: Mutex<CounterRing>,
}

impl RetryBudget {
    /// A budget letting retries add `ratio` of the original requests (0.2 =
    /// 20 %; stored with three decimals, negative or NaN means 0), plus
    /// `min_per_second` retries per second of the window whatever the
    /// traffic, over a sliding window of `ttl`.
    ///
    /// `ttl` is rounded up to whole seconds and kept within 1 s..=1 h: the
    /// window is a ring of one bucket per second, allocated here once.
    pub fn new(ratio: f64, min_per_second: u32, ttl: Duration) -> Self {
        let ttl_secs = ttl
            .as_secs()
            .saturating_add(u64::from(ttl.subsec_nanos() > 0))
            .clamp(1, MAX_TTL_SECS);
        let per_deposit = if ratio.is_finite() && ratio > 0.0 {
            // Saturating float-to-int cast; rounding keeps 0.2 exactly 200.
            (ratio * SCALE as f64).round() as u64
        } else {
            0
        };
        Self {
            per_deposit,
            reserve: u64::from(min_per_second)
                .saturating_mul(ttl_secs)
                .saturating_mul(SCALE),
            window: Mutex::new(CounterRing::new(ttl_secs as usize, Duration::from_secs(1))),
        }
    }

    /// Records an original (first-attempt) request. Call it once per request,
    /// before any retry of it is considered.
    pub fn deposit(&self, now: Instant) {
        self.lock().add(now, DEPOSITS, 1);
    }

    /// Takes one retry (or failover, or hedge) from the budget: `true` if the
    /// attempt may go ahead, `false` if the budget is spent and the caller
    /// should return the failure it has instead.
    pub fn try_withdraw(&self, now: Instant) -> bool {
        let mut window = self.lock();
        let [deposits, withdrawals] = window.totals(now);
        if self.credit(deposits) < withdrawals.saturating_add(1).saturating_mul(SCALE) {
            return false;
        }
        window.add(now, WITHDRAWALS, 1);
        true
    }

    /// How many retries would succeed now (for metrics and debugging).
    pub fn remaining(&self, now: Instant) -> u64 {
        let [deposits, withdrawals] = self.lock().totals(now);
        (self.credit(deposits) / SCALE).saturating_sub(withdrawals)
    }

    /// Total credit of the window, in 1/SCALE of a retry.
    fn credit(&self, deposits: u64) -> u64 {
        self.reserve
            .saturating_add(deposits.saturating_mul(self.per_deposit))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CounterRing> {
        // The ring stays consistent even if a holder panicked (every update
        // is a saturating add), so a poisoned lock is simply reused.
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn drain(b: &RetryBudget, now: Instant) -> u64 {
        let mut n = 0;
        while b.try_withdraw(now) {
            n += 1;
            assert!(n < 1_000_000, "budget never runs out");
        }
        n
    }

    #[test]
    fn ratio_plus_floor() {
        let t0 = Instant::now();
        let b = RetryBudget::new(0.2, 1, S * 10);
        for _ in 0..100 {
            b.deposit(t0);
        }
        assert_eq!(b.remaining(t0), 30);
        assert_eq!(drain(&b, t0), 20 + 10);
        assert_eq!(b.remaining(t0), 0);
    }

    #[test]
    fn zero_budget_never_retries() {
        let t0 = Instant::now();
        let b = RetryBudget::new(0.0, 0, S * 10);
        b.deposit(t0);
        assert!(!b.try_withdraw(t0));
        let nan = RetryBudget::new(f64::NAN, 0, S);
        nan.deposit(t0);
        assert!(!nan.try_withdraw(t0));
    }

    #[test]
    fn recovers_as_window_slides() {
        let t0 = Instant::now();
        let b = RetryBudget::new(0.5, 0, S * 10);
        for _ in 0..10 {
            b.deposit(t0);
        }
        assert_eq!(drain(&b, t0 + S * 2), 5);
        // Deposits of t0 expire at t0 + 10 s, withdrawals of t0 + 2 s at
        // t0 + 12 s: in between, the budget is overdrawn.
        b.deposit(t0 + S * 10);
        b.deposit(t0 + S * 10);
        assert!(!b.try_withdraw(t0 + S * 10));
        assert_eq!(drain(&b, t0 + S * 12), 1);
    }

    #[test]
    fn fractional_ttl_rounds_up() {
        let t0 = Instant::now();
        let b = RetryBudget::new(0.0, 2, Duration::from_millis(1500));
        assert_eq!(drain(&b, t0), 4);
    }
}
