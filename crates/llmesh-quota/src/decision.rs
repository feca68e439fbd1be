//! What the proxy hands the engine, and what it gets back.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::caller::CallerId;
use crate::reservation::Reservation;
use crate::rules::{LimitName, Unit, MICRO_USD};
use crate::store::QuotaStore;
use crate::AnyStore;

/// One request asking to be admitted.
#[derive(Debug, Clone)]
pub struct Admission<'a> {
    /// The sidecar's namespace (`POD_NAMESPACE`).
    pub namespace: &'a str,
    /// The sidecar's workload (`LLMESH_WORKLOAD`).
    pub workload: &'a str,
    /// The sidecar's pod (`POD_NAME`).
    pub pod: &'a str,
    /// Hashed callers, by header name (lower case): see
    /// [`crate::QuotaEngine::caller_headers`]. Empty when no quota is per
    /// caller.
    pub callers: &'a [(&'a str, CallerId)],
    /// The model name the client asked for.
    pub model: &'a str,
    /// Prompt tokens, counted with a tokenizer.
    pub input_tokens: u64,
    /// Completion tokens reserved: the request's `max_tokens`, or a
    /// configured default.
    pub output_tokens: u64,
    /// Estimated cost in USD, reserved against cost limits (0 when the
    /// price is not known before routing: cost limits then refuse once the
    /// spend already settled reaches them).
    pub est_cost_usd: f64,
    /// The time of the request.
    pub now: SystemTime,
}

/// A limit of a quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitRef {
    /// Namespace of the quota.
    pub namespace: Arc<str>,
    /// Name of the quota.
    pub quota: Arc<str>,
    /// Which limit.
    pub limit: LimitName,
}

/// A limit's usage went past one of its alert thresholds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// The limit.
    pub limit: LimitRef,
    /// The threshold, in percent of the limit.
    pub threshold: u32,
    /// The counter (in the limit's unit; micro-USD for costs).
    pub used: i64,
    /// The limit (same unit).
    pub max: u64,
}

/// Rate-limit figures of one limit, for `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitInfo {
    /// The limit, in its unit.
    pub limit: u64,
    /// What is left in this window.
    pub remaining: u64,
    /// Time until the window resets.
    pub reset: Duration,
    /// What the limit counts.
    pub unit: Unit,
}

impl RateLimitInfo {
    /// `x-ratelimit-limit-*`, `x-ratelimit-remaining-*` and
    /// `x-ratelimit-reset-*` (seconds, rounded up), named after the unit:
    /// `requests`, `tokens`, `cost-usd` or `concurrent`.
    pub fn headers(&self) -> [(&'static str, String); 3] {
        let (limit, remaining, reset) = match self.unit {
            Unit::Requests => (
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
            ),
            Unit::Tokens => (
                "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens",
                "x-ratelimit-reset-tokens",
            ),
            Unit::MicroUsd => (
                "x-ratelimit-limit-cost-usd",
                "x-ratelimit-remaining-cost-usd",
                "x-ratelimit-reset-cost-usd",
            ),
            Unit::InFlight => (
                "x-ratelimit-limit-concurrent",
                "x-ratelimit-remaining-concurrent",
                "x-ratelimit-reset-concurrent",
            ),
        };
        let amount = |v: u64| match self.unit {
            Unit::MicroUsd => format!("{:.6}", v as f64 / MICRO_USD),
            _ => v.to_string(),
        };
        [
            (limit, amount(self.limit)),
            (remaining, amount(self.remaining)),
            (reset, format!("{}s", ceil_secs(self.reset))),
        ]
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// A limit of a `reject` quota (or of a `downgrade` quota after the
    /// downgrade) has no room for this request.
    LimitReached,
    /// The shared store is unreachable and the quota says `fail-closed`.
    StoreUnavailable,
}

/// A refused request.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// The limit that refused it.
    pub limit: LimitRef,
    /// Why.
    pub reason: RejectReason,
    /// When to try again.
    pub retry_after: Duration,
    /// The limit's figures (for `LimitReached`).
    pub rate: Option<RateLimitInfo>,
    /// Thresholds this refusal reached (a refusal counts as 100%).
    pub alerts: Vec<Alert>,
}

impl Rejection {
    /// 429 for a limit, 503 while a fail-closed quota cannot be checked.
    pub fn status(&self) -> u16 {
        match self.reason {
            RejectReason::LimitReached => 429,
            RejectReason::StoreUnavailable => 503,
        }
    }

    /// `retry-after` (whole seconds, at least 1), the limit's
    /// `x-ratelimit-*` headers, and `x-llmesh-quota: <quota>/<limit>`.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = Vec::with_capacity(5);
        h.push((
            "retry-after",
            ceil_secs(self.retry_after).max(1).to_string(),
        ));
        if let Some(rate) = &self.rate {
            h.extend(rate.headers());
        }
        h.push((
            "x-llmesh-quota",
            format!("{}/{}", self.limit.quota, self.limit.limit.as_str()),
        ));
        h
    }

    /// A one-line reason for the client's error message (no caller ids).
    pub fn message(&self) -> String {
        match self.reason {
            RejectReason::LimitReached => format!(
                "quota {:?}: {} reached; retry in {}s",
                &*self.limit.quota,
                self.limit.limit.as_str(),
                ceil_secs(self.retry_after).max(1)
            ),
            RejectReason::StoreUnavailable => format!(
                "quota {:?} cannot be checked (quota store unavailable, fail-closed)",
                &*self.limit.quota
            ),
        }
    }
}

/// The engine's answer to an admission.
#[derive(Debug)]
pub enum Decision<S: QuotaStore = AnyStore> {
    /// Serve it; settle the reservation when the call ends.
    Allow(Reservation<S>),
    /// Serve it, though it goes past the limits of `warn` quotas; count
    /// and log `exceeded`.
    Warn {
        /// Settle when the call ends.
        reservation: Reservation<S>,
        /// The limits it went past.
        exceeded: Vec<LimitRef>,
    },
    /// Serve it as `to_model` (a `downgrade` quota's limit is reached).
    Downgrade {
        /// The model to route as.
        to_model: Arc<str>,
        /// The quota that downgraded it.
        by: LimitRef,
        /// Settle when the call ends.
        reservation: Reservation<S>,
    },
    /// Refuse it.
    Reject(Rejection),
}

impl<S: QuotaStore> Decision<S> {
    /// The reservation, unless refused.
    pub fn reservation(&self) -> Option<&Reservation<S>> {
        match self {
            Decision::Allow(r) => Some(r),
            Decision::Warn { reservation, .. } | Decision::Downgrade { reservation, .. } => {
                Some(reservation)
            }
            Decision::Reject(_) => None,
        }
    }

    /// Takes the reservation, unless refused.
    pub fn into_reservation(self) -> Option<Reservation<S>> {
        match self {
            Decision::Allow(r) => Some(r),
            Decision::Warn { reservation, .. } | Decision::Downgrade { reservation, .. } => {
                Some(reservation)
            }
            Decision::Reject(_) => None,
        }
    }

    /// Short label for metrics: `allow`, `warn`, `downgrade`, `reject`.
    pub fn label(&self) -> &'static str {
        match self {
            Decision::Allow(_) => "allow",
            Decision::Warn { .. } => "warn",
            Decision::Downgrade { .. } => "downgrade",
            Decision::Reject(_) => "reject",
        }
    }
}

/// What settling a reservation reported.
#[derive(Debug, Clone, Default)]
pub struct Settled {
    /// Thresholds the real usage went past.
    pub alerts: Vec<Alert>,
}

/// Usage of one limit, for a gauge.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaUsage {
    /// The limit.
    pub limit: LimitRef,
    /// The quota's scope: `namespace`, `workload`, `pod` or `caller`.
    pub scope: &'static str,
    /// The last value this sidecar saw in the current window; for scopes
    /// other than namespace, the highest over the scope ids it saw.
    pub used: i64,
    /// The limit.
    pub max: u64,
    /// `used / max`.
    pub ratio: f64,
    /// Time until the window resets (`None` for concurrency).
    pub resets_in: Option<Duration>,
}

/// Whether a provider's published limits leave room this minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderBudget {
    /// Room left (or no limits published).
    Available,
    /// This minute's budget (less headroom) is used up until `until`:
    /// prefer other backends.
    Exhausted {
        /// When the minute ends.
        until: SystemTime,
    },
}

impl QuotaUsage {
    /// What is left of the limit (0 once it is reached or passed).
    pub fn remaining(&self) -> u64 {
        (self.max as i64 - self.used).max(0) as u64
    }
}

pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000) as u64
}
