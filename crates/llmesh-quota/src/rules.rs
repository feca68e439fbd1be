//! Quota rules compiled from `llmesh_policy`'s validated quotas: every
//! limit turned into an integer budget over a window, so the stores only
//! add and compare integers (costs are counted in micro-USD).

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use llmesh_api::{QuotaAction, QuotaScope, StoreUnavailable, TokenKind};
use llmesh_policy::{parse_usd, Quota};

use crate::window::Window;

/// Micro-USD per USD: costs are integers in the stores.
pub const MICRO_USD: f64 = 1_000_000.0;

/// Caller header used when a `caller` quota names none.
pub const DEFAULT_CALLER_HEADER: &str = "x-llmesh-user";

/// One limit of an `LLMQuota`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitName {
    /// `requestsPerSecond`.
    RequestsPerSecond,
    /// `requestsPerMinute`.
    RequestsPerMinute,
    /// `tokensPerMinute`.
    TokensPerMinute,
    /// `tokensPerDay`.
    TokensPerDay,
    /// `costPerDay` (counted in micro-USD).
    CostPerDay,
    /// `costPerMonth` (counted in micro-USD).
    CostPerMonth,
    /// `concurrentRequests`.
    ConcurrentRequests,
}

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Requests.
    Requests,
    /// Tokens.
    Tokens,
    /// Micro-USD.
    MicroUsd,
    /// Requests in flight.
    InFlight,
}

impl LimitName {
    /// The field name in the resource, for logs, headers and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitName::RequestsPerSecond => "requestsPerSecond",
            LimitName::RequestsPerMinute => "requestsPerMinute",
            LimitName::TokensPerMinute => "tokensPerMinute",
            LimitName::TokensPerDay => "tokensPerDay",
            LimitName::CostPerDay => "costPerDay",
            LimitName::CostPerMonth => "costPerMonth",
            LimitName::ConcurrentRequests => "concurrentRequests",
        }
    }

    /// Short name used in store keys.
    pub fn key(self) -> &'static str {
        match self {
            LimitName::RequestsPerSecond => "rps",
            LimitName::RequestsPerMinute => "rpm",
            LimitName::TokensPerMinute => "tpm",
            LimitName::TokensPerDay => "tpd",
            LimitName::CostPerDay => "cpd",
            LimitName::CostPerMonth => "cpm",
            LimitName::ConcurrentRequests => "conc",
        }
    }

    /// The window the limit counts over; `None` for concurrency.
    pub fn window(self) -> Option<Window> {
        match self {
            LimitName::RequestsPerSecond => Some(Window::Second),
            LimitName::RequestsPerMinute | LimitName::TokensPerMinute => Some(Window::Minute),
            LimitName::TokensPerDay | LimitName::CostPerDay => Some(Window::Day),
            LimitName::CostPerMonth => Some(Window::Month),
            LimitName::ConcurrentRequests => None,
        }
    }

    /// What the limit counts.
    pub fn unit(self) -> Unit {
        match self {
            LimitName::RequestsPerSecond | LimitName::RequestsPerMinute => Unit::Requests,
            LimitName::TokensPerMinute | LimitName::TokensPerDay => Unit::Tokens,
            LimitName::CostPerDay | LimitName::CostPerMonth => Unit::MicroUsd,
            LimitName::ConcurrentRequests => Unit::InFlight,
        }
    }
}

/// One compiled limit: `max` units per window.
#[derive(Debug, Clone)]
pub struct Limit {
    /// Which limit.
    pub name: LimitName,
    /// Budget per window, in the limit's unit (micro-USD for costs).
    pub max: u64,
    /// Stable hash of (namespace, quota, limit): the identity of its
    /// counters across snapshots.
    pub(crate) id: u64,
}

/// A model name pattern: exact, or a prefix when written with a trailing `*`.
#[derive(Debug, Clone)]
pub(crate) enum ModelPattern {
    Exact(String),
    Prefix(String),
}

impl ModelPattern {
    fn matches(&self, model: &str) -> bool {
        match self {
            ModelPattern::Exact(m) => m == model,
            ModelPattern::Prefix(p) => model.starts_with(p.as_str()),
        }
    }
}

/// A compiled `LLMQuota`.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Namespace of the resource (and of the requests it covers).
    pub namespace: Arc<str>,
    /// `metadata.name`.
    pub name: Arc<str>,
    /// Who shares one budget.
    pub scope: QuotaScope,
    /// For scope caller: the header naming the caller (lower case).
    pub caller_header: Option<Arc<str>>,
    pub(crate) workloads: Vec<String>,
    pub(crate) models: Vec<ModelPattern>,
    /// The limits, in the order of the resource's fields.
    pub limits: Vec<Limit>,
    /// Which tokens the token limits count.
    pub token_kind: TokenKind,
    /// What happens at a limit.
    pub action: QuotaAction,
    /// For action downgrade: the model to serve instead.
    pub downgrade_to: Option<Arc<str>>,
    /// Usage percentages that raise an alert, ascending.
    pub thresholds: Vec<u32>,
    /// What to do while the shared store is unreachable.
    pub on_store_unavailable: StoreUnavailable,
}

impl Rule {
    /// Compiles a validated quota. Its fields were checked by
    /// `llmesh_policy`; a cost that still fails to parse is skipped.
    pub fn from_quota(q: &Quota) -> Rule {
        let spec = &q.spec;
        let l = &spec.limits;
        let usd = |v: &Option<String>| {
            v.as_deref()
                .and_then(|t| parse_usd(t).ok())
                .map(|usd| (usd * MICRO_USD).round() as u64)
        };
        let candidates = [
            (LimitName::RequestsPerSecond, l.requests_per_second),
            (LimitName::RequestsPerMinute, l.requests_per_minute),
            (LimitName::TokensPerMinute, l.tokens_per_minute),
            (LimitName::TokensPerDay, l.tokens_per_day),
            (LimitName::CostPerDay, usd(&l.cost_per_day)),
            (LimitName::CostPerMonth, usd(&l.cost_per_month)),
            (
                LimitName::ConcurrentRequests,
                l.concurrent_requests.map(u64::from),
            ),
        ];
        let limits = candidates
            .into_iter()
            .filter_map(|(name, max)| {
                max.map(|max| Limit {
                    name,
                    max,
                    id: stable_hash(&(q.namespace.as_str(), q.name.as_str(), name.key())),
                })
            })
            .collect();
        let models = spec
            .models
            .iter()
            .map(|m| match m.strip_suffix('*') {
                Some(p) => ModelPattern::Prefix(p.to_string()),
                None => ModelPattern::Exact(m.clone()),
            })
            .collect();
        let mut thresholds = spec.alert_thresholds.clone();
        thresholds.sort_unstable();
        thresholds.dedup();
        let caller_header = (spec.scope == QuotaScope::Caller).then(|| {
            Arc::from(
                spec.caller_header
                    .as_deref()
                    .unwrap_or(DEFAULT_CALLER_HEADER)
                    .to_ascii_lowercase(),
            )
        });
        Rule {
            namespace: Arc::from(q.namespace.as_str()),
            name: Arc::from(q.name.as_str()),
            scope: spec.scope,
            caller_header,
            workloads: spec.workloads.clone(),
            models,
            limits,
            token_kind: spec.limits.token_kind,
            action: spec.action,
            downgrade_to: spec.downgrade_to.as_deref().map(Arc::from),
            thresholds,
            on_store_unavailable: spec.on_store_unavailable,
        }
    }

    /// Whether the rule covers a request of `workload` for `model` in
    /// `namespace`.
    pub fn covers(&self, namespace: &str, workload: &str, model: &str) -> bool {
        *self.namespace == *namespace
            && (self.workloads.is_empty() || self.workloads.iter().any(|w| w == workload))
            && (self.models.is_empty() || self.models.iter().any(|m| m.matches(model)))
    }
}

/// Units a reservation adds to a token limit counting `kind`.
pub(crate) fn tokens_of(kind: TokenKind, input: u64, output: u64) -> u64 {
    match kind {
        TokenKind::Input => input,
        TokenKind::Output => output,
        TokenKind::Total => input.saturating_add(output),
    }
}

/// USD to integer micro-USD (negative and non-finite amounts count as 0).
pub fn micro_usd(usd: f64) -> u64 {
    if usd.is_finite() && usd > 0.0 {
        (usd * MICRO_USD).round() as u64
    } else {
        0
    }
}

/// A hash with fixed keys (`DefaultHasher::new()`), the same for every
/// snapshot of this process, naming counters in the memory store and the
/// usage board. Collisions at 64 bits are negligible for the few thousand
/// counters a sidecar holds.
pub(crate) fn stable_hash<T: Hash + ?Sized>(v: &T) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}
