//! Resilience building blocks for llmesh's request path: retry backoff and
//! `Retry-After`, retry budgets, circuit breakers, latency tracking, backend
//! selection and slow-outlier detection.
//!
//! Everything here is synchronous and runtime-free: each time-dependent call
//! takes `now: Instant` (callers pass `tokio::time::Instant::now().into_std()`,
//! so tests can run on tokio's paused clock) and randomness comes in as
//! arguments, so behaviour is deterministic under test. The types meant for
//! the request path are `Send + Sync`, never allocate per call and hold their
//! internal lock only for a few field updates.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used)]
#![deny(missing_docs)]

pub mod backoff;
pub mod balance;
pub mod breaker;
pub mod budget;
pub mod latency;
pub mod outlier;
mod ring;
pub mod state;

pub use backoff::{parse_retry_after, Backoff};
pub use balance::{pick, pick_with_rng, Candidate, Strategy};
pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker};
pub use budget::RetryBudget;
pub use latency::{Ewma, Percentile, PERCENTILE_WINDOW};
pub use outlier::slow_outliers;
pub use state::{BackendState, InFlight, OwnedInFlight};
