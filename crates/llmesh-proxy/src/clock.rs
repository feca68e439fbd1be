//! The proxy's two clocks, in one place.
//!
//! `std::time::Instant::now`, `Instant::elapsed` and `SystemTime::now` are
//! refused in this crate by clippy (`disallowed-methods` in its
//! `clippy.toml`): breakers, budgets, backoff, deadlines and latencies all
//! read [`now`], which is tokio's clock, so a test with paused time drives
//! them; wall-clock time (Retry-After dates, quota windows, usage records)
//! is read through [`wall`].

use std::time::{Duration, Instant, SystemTime};

/// Monotonic time: tokio's clock (paused and advanced in tests).
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Time since `start` on [`now`]'s clock.
pub fn since(start: Instant) -> Duration {
    now().saturating_duration_since(start)
}

/// Wall-clock time.
#[allow(clippy::disallowed_methods)]
pub fn wall() -> SystemTime {
    SystemTime::now()
}
