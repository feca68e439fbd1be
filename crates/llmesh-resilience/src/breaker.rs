//! Per-backend circuit breaker: stops sending to a backend that keeps
//! failing, then lets a few probe requests through to see if it recovered.
//!
//! Closed --(N consecutive failures, or failure rate over the window)--> Open
//! Open --(open time elapsed, first `try_acquire`)--> HalfOpen
//! HalfOpen --(all probes succeed)--> Closed
//! HalfOpen --(a probe fails)--> Open, for twice as long as last time (capped)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::ring::CounterRing;

const SUCCESSES: usize = 0;
const FAILURES: usize = 1;
/// The failure-rate window is kept in this many buckets, so it slides in
/// steps of a tenth of its length.
const WINDOW_BUCKETS: usize = 10;

/// When a [`CircuitBreaker`] opens and for how long.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Open after this many failures in a row (0 = this trigger is off).
    pub consecutive_failures: u32,
    /// Open when the share of failures over `window` reaches this (0..=1;
    /// 0 = this trigger is off)...
    pub failure_rate: f64,
    /// ...provided the window holds at least this many outcomes, so that two
    /// failures out of three requests do not open it.
    pub min_requests: u32,
    /// Length of the failure-rate window.
    pub window: Duration,
    /// How long the first trip keeps the breaker open.
    pub open_for: Duration,
    /// Cap of the open time, which doubles each time a half-open probe fails.
    pub max_open_for: Duration,
    /// Probes admitted at once while half-open; that many must succeed to
    /// close (0 is taken as 1).
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    /// 5 consecutive failures, or 50 % failures over 30 s with at least 20
    /// requests; open 30 s, doubling up to 5 min; 1 probe.
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: 0.5,
            min_requests: 20,
            window: Duration::from_secs(30),
            open_for: Duration::from_secs(30),
            max_open_for: Duration::from_secs(300),
            half_open_probes: 1,
        }
    }
}

/// The externally visible state of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Requests flow.
    Closed,
    /// Requests are refused until the open time ends.
    Open,
    /// A limited number of probes are let through.
    HalfOpen,
}

impl BreakerState {
    /// `"closed"`, `"open"` or `"half_open"` (for logs and labels).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    /// 0 (closed), 1 (open) or 2 (half-open), for a gauge.
    pub fn as_gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { in_flight: u32, successes: u32 },
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    consecutive: u32,
    outcomes: CounterRing,
    /// Doublings to apply to the next open time: grows with each trip,
    /// shrinks again while the breaker stays closed.
    level: u32,
    /// When the breaker last closed, to forgive past trips over time.
    closed_at: Option<Instant>,
}

/// A circuit breaker for one backend. `Send + Sync`; every method holds an
/// internal lock for a few field updates only, and never allocates.
///
/// Outcomes are not tied to the permit that admitted them: a request started
/// while closed that finishes during half-open counts as a probe result. That
/// is deliberate (it is fresh evidence about the backend) and keeps the API a
/// plain `bool`.
#[derive(Debug)]
pub struct CircuitBreaker {
    cfg: BreakerConfig,
    inner: Mutex<Inner>,
    trips: AtomicU64,
}

impl CircuitBreaker {
    /// A closed breaker with configuration `cfg`.
    pub fn new(cfg: BreakerConfig) -> Self {
        let width = cfg.window / WINDOW_BUCKETS as u32;
        Self {
            inner: Mutex::new(Inner {
                phase: Phase::Closed,
                consecutive: 0,
                outcomes: CounterRing::new(WINDOW_BUCKETS, width),
                level: 0,
                closed_at: None,
            }),
            cfg,
            trips: AtomicU64::new(0),
        }
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &BreakerConfig {
        &self.cfg
    }

    /// The state at `now`, without changing it: an open breaker whose open
    /// time has ended reports `HalfOpen` (the next [`try_acquire`] makes that
    /// real).
    ///
    /// [`try_acquire`]: Self::try_acquire
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.lock().phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { until } if now < until => BreakerState::Open,
            Phase::Open { .. } | Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Whether [`try_acquire`](Self::try_acquire) would admit a request at
    /// `now`, without taking a probe slot. Use it to list candidates, then
    /// call `try_acquire` on the one chosen.
    pub fn would_admit(&self, now: Instant) -> bool {
        match self.lock().phase {
            Phase::Closed => true,
            Phase::Open { until } => now >= until,
            Phase::HalfOpen { in_flight, .. } => in_flight < self.probes(),
        }
    }

    /// Asks to send one request: always yes when closed; no while open; when
    /// the open time has passed, the breaker turns half-open and admits up to
    /// `half_open_probes` requests in flight. Every `true` must be followed by
    /// one [`on_success`](Self::on_success) or
    /// [`on_failure`](Self::on_failure).
    pub fn try_acquire(&self, now: Instant) -> bool {
        let probes = self.probes();
        let mut inner = self.lock();
        match inner.phase {
            Phase::Closed => true,
            Phase::Open { until } if now < until => false,
            Phase::Open { .. } => {
                inner.phase = Phase::HalfOpen {
                    in_flight: 1,
                    successes: 0,
                };
                true
            }
            Phase::HalfOpen {
                in_flight,
                successes,
            } if in_flight < probes => {
                inner.phase = Phase::HalfOpen {
                    in_flight: in_flight + 1,
                    successes,
                };
                true
            }
            Phase::HalfOpen { .. } => false,
        }
    }

    /// Records a successful request. Half-open: once `half_open_probes`
    /// probes have succeeded, the breaker closes with a clean window.
    pub fn on_success(&self, now: Instant) {
        let probes = self.probes();
        let mut inner = self.lock();
        match inner.phase {
            Phase::Closed => {
                inner.consecutive = 0;
                inner.outcomes.add(now, SUCCESSES, 1);
            }
            Phase::HalfOpen {
                in_flight,
                successes,
            } => {
                let successes = successes + 1;
                if successes >= probes {
                    inner.phase = Phase::Closed;
                    inner.consecutive = 0;
                    // Failures from before the trip must not re-open it.
                    inner.outcomes.clear();
                    inner.closed_at = Some(now);
                } else {
                    let in_flight = in_flight.saturating_sub(1);
                    inner.phase = Phase::HalfOpen {
                        in_flight,
                        successes,
                    };
                }
            }
            // A late answer to a request sent before the trip: the open time
            // stands.
            Phase::Open { .. } => {}
        }
    }

    /// Records a failed request. Closed: may trip the breaker (consecutive
    /// count or failure rate). Half-open: re-opens at once, for twice the
    /// previous open time (capped at `max_open_for`).
    pub fn on_failure(&self, now: Instant) {
        let mut inner = self.lock();
        match inner.phase {
            Phase::Closed => {
                inner.consecutive = inner.consecutive.saturating_add(1);
                inner.outcomes.add(now, FAILURES, 1);
                if self.should_trip(&mut inner, now) {
                    // Each `open_for` spent closed forgives one doubling, so
                    // a backend that recovered for long starts over at base.
                    if let Some(closed_at) = inner.closed_at {
                        let healthy = now.saturating_duration_since(closed_at);
                        let forgiven = healthy.as_nanos() / self.cfg.open_for.as_nanos().max(1);
                        let forgiven = u32::try_from(forgiven).unwrap_or(u32::MAX);
                        inner.level = inner.level.saturating_sub(forgiven);
                    }
                    self.trip(&mut inner, now);
                }
            }
            Phase::HalfOpen { .. } => self.trip(&mut inner, now),
            Phase::Open { .. } => {}
        }
    }

    /// Opens the breaker until `now + for_` whatever its state (outlier
    /// ejection). Counts as a trip; does not change the doubling level.
    pub fn force_open(&self, now: Instant, for_: Duration) {
        let mut inner = self.lock();
        inner.phase = Phase::Open {
            until: now.checked_add(for_).unwrap_or(now),
        };
        inner.consecutive = 0;
        inner.outcomes.clear();
        self.trips.fetch_add(1, Ordering::Relaxed);
    }

    /// How many times the breaker has opened since it was created.
    pub fn trips(&self) -> u64 {
        self.trips.load(Ordering::Relaxed)
    }

    /// When the current open period ends (`None` unless open).
    pub fn open_until(&self) -> Option<Instant> {
        match self.lock().phase {
            Phase::Open { until } => Some(until),
            _ => None,
        }
    }

    fn should_trip(&self, inner: &mut Inner, now: Instant) -> bool {
        let cfg = &self.cfg;
        if cfg.consecutive_failures > 0 && inner.consecutive >= cfg.consecutive_failures {
            return true;
        }
        if cfg.failure_rate > 0.0 {
            let [ok, failed] = inner.outcomes.totals(now);
            let total = ok.saturating_add(failed);
            if total >= u64::from(cfg.min_requests.max(1)) {
                return failed as f64 >= cfg.failure_rate * total as f64;
            }
        }
        false
    }

    /// Opens for `open_for * 2^level` (capped), then raises the level.
    fn trip(&self, inner: &mut Inner, now: Instant) {
        let open_for = crate::Backoff {
            base: self.cfg.open_for,
            max: self.cfg.max_open_for,
        }
        .ceiling(inner.level);
        inner.phase = Phase::Open {
            until: now.checked_add(open_for).unwrap_or(now),
        };
        inner.level = inner.level.saturating_add(1).min(64);
        inner.consecutive = 0;
        inner.outcomes.clear();
        self.trips.fetch_add(1, Ordering::Relaxed);
    }

    fn probes(&self) -> u32 {
        self.cfg.half_open_probes.max(1)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update leaves `Inner` valid, so a panic elsewhere while the
        // lock was held does not make its content unusable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests;
