//! Latency tracking per backend: a peak-sensitive moving average (for the
//! latency balancer and outlier detection) and a recent-sample percentile
//! (for the cost balancer's latency budget).

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Samples kept by [`Percentile`].
pub const PERCENTILE_WINDOW: usize = 128;

/// A time-decayed, peak-sensitive moving average of latency (the "peak EWMA"
/// of Finagle and Linkerd).
///
/// A sample above the current value replaces it at once, so a backend that
/// slows down is avoided immediately; a sample below it only pulls the value
/// down by the weight `1 - 0.5^(elapsed / half_life)`, where `elapsed` is the
/// time since the previous sample, so recovery is trusted gradually and a
/// burst of samples at the same instant does not drown the history.
///
/// `Send + Sync`; `observe` and `get` hold a lock for a few float operations.
#[derive(Debug)]
pub struct Ewma {
    /// `ln 2 / half_life` in 1/ns: the decay rate.
    rate_per_nanos: f64,
    inner: Mutex<Option<EwmaInner>>,
}

#[derive(Debug, Clone, Copy)]
struct EwmaInner {
    /// Current value, in nanoseconds.
    value: f64,
    last: Instant,
}

impl Ewma {
    /// An empty average whose old samples lose half their weight every
    /// `half_life` (a zero half-life follows the last sample exactly).
    pub fn new(half_life: Duration) -> Self {
        let nanos = half_life.as_nanos() as f64;
        let rate_per_nanos = if nanos > 0.0 {
            std::f64::consts::LN_2 / nanos
        } else {
            f64::INFINITY
        };
        Self {
            rate_per_nanos,
            inner: Mutex::new(None),
        }
    }

    /// Adds a sample taken at `now`. The first sample becomes the value.
    pub fn observe(&self, sample: Duration, now: Instant) {
        let sample_ns = sample.as_nanos() as f64;
        let mut inner = self.lock();
        let next = match *inner {
            Some(prev) if sample_ns < prev.value => {
                // `now` before `last` (threads racing to the lock) counts as
                // no time elapsed: the sample then barely moves the value.
                let elapsed = now.saturating_duration_since(prev.last).as_nanos() as f64;
                let keep = (-elapsed * self.rate_per_nanos).exp();
                // 0 * inf is NaN for a zero half-life with no time elapsed.
                let keep = if keep.is_nan() { 0.0 } else { keep };
                EwmaInner {
                    value: prev.value * keep + sample_ns * (1.0 - keep),
                    last: now.max(prev.last),
                }
            }
            Some(prev) => EwmaInner {
                value: sample_ns,
                last: now.max(prev.last),
            },
            None => EwmaInner {
                value: sample_ns,
                last: now,
            },
        };
        *inner = Some(next);
    }

    /// The current average, `None` before the first sample.
    pub fn get(&self) -> Option<Duration> {
        self.lock()
            .map(|i| Duration::from_nanos(i.value.round() as u64))
    }

    /// Forgets every sample (e.g. after the backend was replaced), so the
    /// latency balancer probes it again first.
    pub fn reset(&self) {
        *self.lock() = None;
    }

    fn lock(&self) -> MutexGuard<'_, Option<EwmaInner>> {
        // Plain data, always valid: a poisoned lock is reused as is.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The last [`PERCENTILE_WINDOW`] latency samples, for percentiles.
///
/// `observe` is O(1). `p90` is cached: it is recomputed (an O(n) selection in
/// a scratch buffer owned by the struct, no allocation) only on the first
/// call after new samples, so reading it per request costs a lock and a copy
/// when nothing changed. `Send + Sync`.
#[derive(Debug)]
pub struct Percentile {
    inner: Mutex<PercentileInner>,
}

#[derive(Debug)]
struct PercentileInner {
    /// Samples in nanoseconds; the first `len` are valid.
    samples: [u64; PERCENTILE_WINDOW],
    len: usize,
    /// Slot the next sample overwrites.
    next: usize,
    scratch: [u64; PERCENTILE_WINDOW],
    /// p90 of the current samples (`Some(None)` when empty), `None` when
    /// stale.
    cached_p90: Option<Option<u64>>,
}

impl Default for Percentile {
    fn default() -> Self {
        Self::new()
    }
}

impl Percentile {
    /// An empty ring.
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(PercentileInner {
                samples: [0; PERCENTILE_WINDOW],
                len: 0,
                next: 0,
                scratch: [0; PERCENTILE_WINDOW],
                cached_p90: None,
            }),
        }
    }

    /// Adds a sample, replacing the oldest once the ring is full.
    pub fn observe(&self, sample: Duration) {
        let nanos = u64::try_from(sample.as_nanos()).unwrap_or(u64::MAX);
        let mut inner = self.lock();
        let slot = inner.next;
        if let Some(s) = inner.samples.get_mut(slot) {
            *s = nanos;
        }
        inner.next = (slot + 1) % PERCENTILE_WINDOW;
        inner.len = (inner.len + 1).min(PERCENTILE_WINDOW);
        inner.cached_p90 = None;
    }

    /// Number of samples held (at most [`PERCENTILE_WINDOW`]).
    pub fn len(&self) -> usize {
        self.lock().len
    }

    /// Whether no sample was observed yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The 90th percentile (nearest rank) of the held samples, `None` before
    /// the first one.
    pub fn p90(&self) -> Option<Duration> {
        let mut inner = self.lock();
        let p90 = match inner.cached_p90 {
            Some(p90) => p90,
            None => {
                let p90 = inner.quantile(0.9);
                inner.cached_p90 = Some(p90);
                p90
            }
        };
        p90.map(Duration::from_nanos)
    }

    /// The `q` quantile (0..=1, nearest rank; clamped) of the held samples,
    /// `None` before the first one. Not cached: O(n) per call.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        self.lock().quantile(q).map(Duration::from_nanos)
    }

    fn lock(&self) -> MutexGuard<'_, PercentileInner> {
        // Plain data, always valid: a poisoned lock is reused as is.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl PercentileInner {
    fn quantile(&mut self, q: f64) -> Option<u64> {
        let len = self.len;
        if len == 0 {
            return None;
        }
        let (src, dst) = (self.samples.get(..len)?, self.scratch.get_mut(..len)?);
        dst.copy_from_slice(src);
        // Nearest rank: the smallest sample with at least q of them at or
        // below it.
        let q = if q.is_nan() { 1.0 } else { q.clamp(0.0, 1.0) };
        let rank = ((q * len as f64).ceil() as usize).clamp(1, len);
        dst.select_nth_unstable(rank - 1);
        dst.get(rank - 1).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const S: Duration = Duration::from_secs(1);

    #[test]
    fn ewma_empty_then_first_sample() {
        let e = Ewma::new(S * 10);
        assert_eq!(e.get(), None);
        e.observe(MS * 200, Instant::now());
        assert_eq!(e.get(), Some(MS * 200));
        e.reset();
        assert_eq!(e.get(), None);
    }

    #[test]
    fn ewma_peaks_at_once_and_decays_by_half_life() {
        let t0 = Instant::now();
        let e = Ewma::new(S * 10);
        e.observe(MS * 100, t0);
        e.observe(MS * 900, t0 + S);
        assert_eq!(e.get(), Some(MS * 900), "a slower sample is taken at once");
        // One half-life later a 100 ms sample takes it halfway down.
        e.observe(MS * 100, t0 + S * 11);
        assert_eq!(e.get(), Some(MS * 500));
        // No time elapsed: a lower sample does not move it.
        e.observe(MS * 100, t0 + S * 11);
        assert_eq!(e.get(), Some(MS * 500));
        // Long after: the old value is forgotten.
        e.observe(MS * 100, t0 + S * 1000);
        assert_eq!(e.get(), Some(MS * 100));
    }

    #[test]
    fn ewma_zero_half_life_follows_last_sample() {
        let t0 = Instant::now();
        let e = Ewma::new(Duration::ZERO);
        e.observe(MS * 300, t0);
        e.observe(MS * 100, t0);
        assert_eq!(e.get(), Some(MS * 100));
    }

    #[test]
    fn ewma_earlier_now_is_harmless() {
        let t0 = Instant::now() + S * 5;
        let e = Ewma::new(S);
        e.observe(MS * 300, t0);
        e.observe(MS * 100, t0 - S);
        assert_eq!(e.get(), Some(MS * 300));
        e.observe(MS * 100, t0 + S);
        assert_eq!(e.get(), Some(MS * 200));
    }

    #[test]
    fn p90_nearest_rank() {
        let p = Percentile::new();
        assert_eq!(p.p90(), None);
        assert!(p.is_empty());
        for i in (1..=10).rev() {
            p.observe(MS * i);
        }
        assert_eq!(p.p90(), Some(MS * 9));
        assert_eq!(p.quantile(0.5), Some(MS * 5));
        assert_eq!(p.quantile(1.0), Some(MS * 10));
        assert_eq!(p.quantile(0.0), Some(MS));
        p.observe(MS * 1000);
        assert_eq!(p.p90(), Some(MS * 10), "cache refreshed after a new sample");
    }

    #[test]
    fn percentile_keeps_only_last_window() {
        let p = Percentile::new();
        for _ in 0..PERCENTILE_WINDOW {
            p.observe(S * 100);
        }
        for _ in 0..PERCENTILE_WINDOW {
            p.observe(MS);
        }
        assert_eq!(p.len(), PERCENTILE_WINDOW);
        assert_eq!(p.p90(), Some(MS));
    }
}
