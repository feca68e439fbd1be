//! A compiled `LLMRoute`: backends, match conditions and the resilience
//! settings the proxy's attempt loop reads.

use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use llmesh_api::ErrorClass;

use crate::snapshot::Provider;

/// Upstream deadlines of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP and TLS connect.
    pub connect: Duration,
    /// Until response headers (and a stream's first event).
    pub first_byte: Duration,
    /// Largest gap between body chunks.
    pub idle: Duration,
    /// Whole call, retries included.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            first_byte: Duration::from_secs(60),
            idle: Duration::from_secs(60),
            total: Duration::from_secs(600),
        }
    }
}

/// A set of error classes, as a bit mask (cheap to test per attempt).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassSet(u16);

impl ClassSet {
    /// The set of `classes`.
    pub fn of(classes: &[ErrorClass]) -> ClassSet {
        ClassSet(classes.iter().fold(0, |m, c| m | Self::bit(*c)))
    }
    fn bit(c: ErrorClass) -> u16 {
        1 << (c as u16)
    }
    /// Whether `c` is in the set.
    pub fn contains(self, c: ErrorClass) -> bool {
        self.0 & Self::bit(c) != 0
    }
}

/// How a backend is chosen: the balancer's own strategy type, so the
/// compiled route hands it over as is.
pub use llmesh_resilience::Strategy as StrategyKind;

/// Retry settings of a route.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetrySettings {
    /// Extra attempts after the first.
    pub attempts: u32,
    /// Retried classes.
    pub on: ClassSet,
    /// First backoff step.
    pub backoff_base: Duration,
    /// Largest backoff.
    pub backoff_max: Duration,
    /// Retries may add this share of the request rate (0..1).
    pub budget_ratio: f64,
    /// Retries per second always allowed.
    pub budget_min_per_second: u32,
}

/// Circuit breaker settings for each backend of a route.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerSettings {
    /// Failures in a row that open it (0 = off).
    pub consecutive_failures: u32,
    /// Failure share in the window that opens it (0 = off).
    pub failure_rate: f64,
    /// Calls the window must hold before the rate counts.
    pub min_requests: u32,
    /// Rate window.
    pub window: Duration,
    /// Time open before probing.
    pub open_for: Duration,
    /// Probes while half-open.
    pub half_open_probes: u32,
    /// Eject backends slower than this many times their peers' median
    /// (0 = off).
    pub slow_outlier_factor: f64,
}

/// One compiled backend of a route or a fallback chain.
#[derive(Debug, Clone)]
pub struct Backend {
    /// The provider.
    pub provider: Arc<Provider>,
    /// Upstream model, or `None` to send the requested name.
    pub model: Option<String>,
    /// Share of traffic within its priority group.
    pub weight: u32,
    /// Priority group, 0 first.
    pub priority: u32,
}

impl Backend {
    /// The model name to send upstream for a request that asked for `requested`.
    pub fn upstream_model<'a>(&'a self, requested: &'a str) -> &'a str {
        self.model.as_deref().unwrap_or(requested)
    }
}

/// A fallback chain: the classes it handles and its backends, in order.
#[derive(Debug, Clone)]
pub struct Fallback {
    /// Handled classes.
    pub on: ClassSet,
    /// Backends, tried in order.
    pub backends: Vec<Backend>,
}

/// A compiled `LLMRoute`.
#[derive(Debug)]
pub struct Route {
    /// `metadata.name`.
    pub name: String,
    /// Namespace the resource came from.
    pub namespace: String,
    /// Model patterns as written.
    pub models: Vec<String>,
    /// Header conditions (all must match).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Evaluation order.
    pub order: i32,
    /// Backend choice.
    pub strategy: StrategyKind,
    /// Backends (at least one).
    pub backends: Vec<Backend>,
    /// Sum of backend weights (positive).
    pub total_weight: u64,
    /// Retries; `None` = no retries.
    pub retry: Option<RetrySettings>,
    /// Fallback chains in the order written.
    pub fallbacks: Vec<Fallback>,
    /// Breaker settings; `None` = no breaker.
    pub breaker: Option<BreakerSettings>,
    /// Hedge delay; `None` = no hedging.
    pub hedge: Option<Duration>,
    /// Deadlines.
    pub timeouts: Timeouts,
    /// Mid-stream continuations allowed per response; 0 = end a broken
    /// stream with an error event.
    pub max_continuations: u32,
    /// Paths passed through to one provider.
    pub passthrough: Option<Passthrough>,
    /// The exact response cache; `None` = no exact cache.
    pub cache: Option<CacheSettings>,
    /// The semantic response cache; `None` = no semantic cache.
    pub semantic_cache: Option<SemanticSettings>,
    /// Retries of an answer that does not match the request's JSON
    /// schema; `None` = answers are not validated.
    pub schema_retries: Option<u32>,
    /// The schema the route adds to requests that ask for none
    /// (`spec.structuredOutput.schema`); only on routes that validate.
    pub enforced_schema: Option<Arc<EnforcedSchema>>,
    /// Shadow traffic to a candidate backend.
    pub mirror: Option<MirrorSettings>,
    /// The canary's candidate, the last of `backends`, while it gets a
    /// share of requests; `None` otherwise.
    pub canary: Option<crate::canary::CanarySettings>,
}

/// Shadow traffic of a route (`spec.mirror`), compiled.
#[derive(Debug, Clone)]
pub struct MirrorSettings {
    /// The candidate.
    pub backend: Backend,
    /// Share of requests mirrored, 0 to 1.
    pub fraction: f64,
    /// Shadow calls per minute, per sidecar.
    pub max_per_minute: Option<u32>,
    /// USD per hour spent on shadow calls, per sidecar.
    pub max_cost_per_hour: Option<f64>,
}

/// A route's own JSON schema (`spec.structuredOutput.schema`), compiled.
#[derive(Debug)]
pub struct EnforcedSchema {
    /// Its name in requests (OpenAI `json_schema.name`).
    pub name: String,
    /// The schema as written.
    pub schema: serde_json::Value,
    /// The schema compiled, to validate answers with.
    pub validator: Arc<jsonschema::Validator>,
}

/// A route's exact response cache, compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// How long an answer is served.
    pub ttl: Duration,
    /// Which requests are cached.
    pub mode: llmesh_api::CacheMode,
    /// Where answers are kept.
    pub store: llmesh_api::CacheStore,
    /// Most answers in memory.
    pub max_entries: u32,
    /// Most bytes in memory.
    pub max_bytes: u64,
}

/// A route's semantic response cache, compiled.
#[derive(Debug, Clone)]
pub struct SemanticSettings {
    /// The provider serving the embeddings model.
    pub provider: Arc<Provider>,
    /// The embeddings model.
    pub model: String,
    /// Vector length asked for, if any.
    pub dimensions: Option<u32>,
    /// Cosine similarity from which a stored prompt matches.
    pub threshold: f32,
    /// How long an answer is served.
    pub ttl: Duration,
    /// Which requests are cached.
    pub mode: llmesh_api::CacheMode,
    /// Where prompts and answers are kept.
    pub store: llmesh_api::CacheStore,
    /// Most answers kept (per sidecar, or per request context in Redis).
    pub max_entries: u32,
    /// Bound on the embeddings call.
    pub timeout: Duration,
}

impl SemanticSettings {
    /// Whether the two compare prompts the same way and keep the same
    /// answers (the provider's key may differ).
    pub fn same_index(&self, other: &SemanticSettings) -> bool {
        self.provider.name == other.provider.name
            && self.provider.base_url.original == other.provider.base_url.original
            && self.model == other.model
            && self.dimensions == other.dimensions
            && self.threshold == other.threshold
            && self.ttl == other.ttl
            && self.mode == other.mode
            && self.store == other.store
            && self.max_entries == other.max_entries
    }
}

/// A route's governed pass-through.
#[derive(Debug)]
pub struct Passthrough {
    /// Path patterns as written (exact, or a prefix ending in `*`).
    pub paths: Vec<String>,
    /// Where they go.
    pub provider: Arc<Provider>,
}

impl Passthrough {
    /// The pattern that allows `path`, if one does.
    pub fn allows(&self, path: &str) -> Option<&str> {
        self.paths
            .iter()
            .find(|p| match p.strip_suffix('*') {
                Some(prefix) => path.starts_with(prefix),
                None => path == p.as_str(),
            })
            .map(String::as_str)
    }
}

impl Route {
    /// Picks a backend by weight. `roll` is a uniform random number; taking
    /// it as an argument keeps the table free of RNG state and testable.
    pub fn pick(&self, roll: u64) -> &Backend {
        let mut point = roll % self.total_weight.max(1);
        for b in &self.backends {
            let w = u64::from(b.weight);
            if point < w {
                return b;
            }
            point -= w;
        }
        // Unreachable while total_weight is the sum of the weights; the
        // first backend is a safe answer either way.
        &self.backends[0]
    }

    /// Whether the request's headers satisfy this route's conditions.
    pub fn headers_match(&self, headers: &HeaderMap) -> bool {
        self.headers
            .iter()
            .all(|(name, want)| headers.get(name) == Some(want))
    }

    /// The fallback chain for `class`, if any.
    pub fn fallback_for(&self, class: ErrorClass) -> Option<&Fallback> {
        self.fallbacks.iter().find(|f| f.on.contains(class))
    }
}

/// A model name resolved to its route.
#[derive(Debug, Clone, Copy)]
pub struct RouteMatch<'a> {
    /// Position of the route in [`crate::Snapshot::routes`].
    pub index: usize,
    /// The route.
    pub route: &'a Arc<Route>,
    /// The entry of `spec.models` that matched.
    pub pattern: &'a str,
}
