//! Everything the request path tracks about one backend, bundled.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::balance::Candidate;
use crate::breaker::{BreakerConfig, CircuitBreaker};
use crate::latency::{Ewma, Percentile};

/// Live state of one backend, shared (`Send + Sync`, usually in an `Arc`) by
/// every request that may go to it.
///
/// What each part should be fed is the caller's choice; the intended use:
/// `ttft` gets the time to first token (or to response headers) of each
/// success, `latency` the same or the total latency, and `breaker` every
/// outcome.
#[derive(Debug)]
pub struct BackendState {
    /// Requests in flight (maintained by [`InFlight`] / [`OwnedInFlight`]).
    pub outstanding: AtomicU64,
    /// Failure circuit breaker.
    pub breaker: CircuitBreaker,
    /// Moving average of time to first token, for the latency balancer.
    pub ttft: Ewma,
    /// Recent latency samples, for the cost balancer's p90.
    pub latency: Percentile,
}

impl BackendState {
    /// Fresh state: breaker closed with `cfg`, EWMA with `ewma_half_life`
    /// (e.g. 10 s), no samples, nothing in flight.
    pub fn new(cfg: BreakerConfig, ewma_half_life: Duration) -> Self {
        Self {
            outstanding: AtomicU64::new(0),
            breaker: CircuitBreaker::new(cfg),
            ttft: Ewma::new(ewma_half_life),
            latency: Percentile::new(),
        }
    }

    /// Counts one request in flight until the returned guard is dropped.
    pub fn start(&self) -> InFlight<'_> {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        InFlight { state: self }
    }

    /// Like [`start`](Self::start) but owning an `Arc`, for a guard that must
    /// live as long as a streamed response body (`'static`).
    pub fn start_owned(self: &Arc<Self>) -> OwnedInFlight {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        OwnedInFlight {
            state: Arc::clone(self),
        }
    }

    /// The balancer's view of this backend at `now`. `available` is
    /// [`CircuitBreaker::would_admit`], which takes no probe slot: the caller
    /// calls `breaker.try_acquire(now)` on the candidate it picks, and picks
    /// again without it if that fails (another request took the last probe
    /// slot in between).
    pub fn candidate(&self, weight: u32, cost_per_mtok: f64, now: Instant) -> Candidate {
        Candidate {
            weight,
            outstanding: self.outstanding.load(Ordering::Relaxed),
            ewma: self.ttft.get(),
            p90: self.latency.p90(),
            cost_per_mtok,
            available: self.breaker.would_admit(now),
        }
    }
}

/// Decrements `outstanding` on drop. Not `Clone`: one guard, one request.
#[derive(Debug)]
#[must_use = "the request counts as in flight only while the guard lives"]
pub struct InFlight<'a> {
    state: &'a BackendState,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.state.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// [`InFlight`] holding an `Arc` to its backend.
#[derive(Debug)]
#[must_use = "the request counts as in flight only while the guard lives"]
pub struct OwnedInFlight {
    state: Arc<BackendState>,
}

impl OwnedInFlight {
    /// The backend this request is counted against.
    pub fn backend(&self) -> &Arc<BackendState> {
        &self.state
    }
}

impl Drop for OwnedInFlight {
    fn drop(&mut self) {
        self.state.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn guards_count_in_flight() {
        let b = Arc::new(BackendState::new(BreakerConfig::default(), S * 10));
        let g1 = b.start();
        let g2 = b.start_owned();
        assert_eq!(b.outstanding.load(Ordering::Relaxed), 2);
        drop(g1);
        assert_eq!(g2.backend().outstanding.load(Ordering::Relaxed), 1);
        drop(g2);
        assert_eq!(b.outstanding.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn candidate_reflects_state() {
        let t0 = Instant::now();
        let b = BackendState::new(BreakerConfig::default(), S * 10);
        let c = b.candidate(3, 0.5, t0);
        assert_eq!(
            (c.weight, c.outstanding, c.ewma, c.p90, c.available),
            (3, 0, None, None, true)
        );
        b.ttft.observe(S, t0);
        b.latency.observe(S * 2);
        let _g = b.start();
        b.breaker.force_open(t0, S * 5);
        let c = b.candidate(3, 0.5, t0);
        assert_eq!(c.cost_per_mtok, 0.5);
        assert_eq!(
            (c.outstanding, c.ewma, c.p90, c.available),
            (1, Some(S), Some(S * 2), false)
        );
        assert!(
            b.candidate(3, 0.5, t0 + S * 5).available,
            "half-open admits a probe"
        );
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<BackendState>();
        check::<OwnedInFlight>();
        check::<InFlight<'static>>();
    }
}
