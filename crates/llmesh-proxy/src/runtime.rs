//! Live state behind each route of a table: upstream clients, breakers,
//! latency averages, retry budgets and round-robin positions.
//!
//! The table is rebuilt on every policy change, but this state must not be:
//! a reload that only touched another route must not close an open breaker
//! or forget latencies. So state lives in a registry keyed by what it
//! describes, and each new table takes the existing entries it still uses.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use llmesh_api::ErrorClass;
use llmesh_policy::{Backend, BreakerSettings, Route};
use llmesh_resilience::{BackendState, BreakerConfig, RetryBudget};

use crate::upstream::UpstreamClient;

/// One backend of a route, ready to call.
pub struct BackendRuntime {
    /// The route's name (the `route` label of its series).
    pub route: Arc<str>,
    /// The compiled backend (provider, model, weight, priority).
    pub backend: Backend,
    /// Pooled client for its provider.
    pub client: UpstreamClient,
    /// Breaker, outstanding count, latency.
    pub state: Arc<BackendState>,
    /// Its metric series, looked up once.
    pub series: Arc<crate::metrics::SeriesCache>,
    /// The model version it last answered with (kept across reloads).
    pub version: Arc<ModelVersion>,
    /// The provider's credential, when the sidecar obtains it itself.
    pub credential: Option<Arc<crate::identity::CredentialSource>>,
}

/// The model version a backend answers with (the `model` of its answers,
/// e.g. `gpt-4o-2024-08-06` for `gpt-4o`).
#[derive(Default)]
pub struct ModelVersion(arc_swap::ArcSwapOption<String>);

impl ModelVersion {
    /// The version the backend last answered with, if any yet.
    pub fn current(&self) -> Option<Arc<String>> {
        self.0.load_full()
    }

    /// Records that the backend answered as `answered`: `Some(previous)`
    /// when that is a change from an earlier answer (once per change,
    /// however many calls race), `None` when it is the same or the first.
    pub fn observe(&self, answered: &str) -> Option<Option<Arc<String>>> {
        if self.0.load().as_deref().is_some_and(|v| v == answered) {
            return None;
        }
        let new = Arc::new(answered.to_string());
        let prev = self.0.rcu(|cur| match cur {
            Some(v) if **v == answered => cur.clone(),
            _ => Some(new.clone()),
        });
        match prev {
            // Another call stored it first.
            Some(v) if *v == answered => None,
            other => Some(other),
        }
    }
}

/// How a call to a backend went, as its breaker, latency estimators and
/// `llmesh_attempts_total` count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// It answered; `ttfb` (time to first byte or event) feeds the latency
    /// balancers when the answer is a first attempt's, not a continuation's.
    Answered {
        /// Time to the first byte, if measured.
        ttfb: Option<Duration>,
    },
    /// It failed with this class. A failure the request caused (invalid,
    /// too long, filtered) is the backend answering properly: the breaker
    /// counts it as a success.
    Failed(ErrorClass),
    /// A hedge's losing attempt, cancelled: its breaker permit is returned
    /// as a success so a half-open probe slot is never lost.
    Cancelled,
    /// A stream that had answered broke, stalled or was continued
    /// elsewhere: a breaker failure (its attempt was already counted).
    StreamBroke,
}

impl BackendRuntime {
    /// Whether its provider's credential can be had (always, for a static
    /// key): a backend without one is skipped like an open breaker.
    pub fn credential_ready(&self) -> bool {
        self.credential.as_ref().is_none_or(|c| c.usable())
    }

    /// The one place a call's outcome counts against its backend: breaker,
    /// latency estimators and the attempts metric.
    pub fn record(&self, metrics: &crate::metrics::Metrics, outcome: AttemptOutcome, now: Instant) {
        let model = self.backend.model.as_deref().unwrap_or("");
        let provider = self.backend.provider.name.as_str();
        let breaker = &self.state.breaker;
        let label = match outcome {
            AttemptOutcome::Answered { ttfb } => {
                breaker.on_success(now);
                if let Some(t) = ttfb {
                    self.state.ttft.observe(t, now);
                    self.state.latency.observe(t);
                    self.series
                        .first_byte(metrics, &self.route, provider, model, t.as_secs_f64());
                }
                // The most frequent series is cached: no label lookup.
                self.series
                    .attempt_ok(metrics, &self.route, provider, model);
                return;
            }
            AttemptOutcome::Failed(class) => {
                match class {
                    ErrorClass::InvalidRequest
                    | ErrorClass::ContextLength
                    | ErrorClass::ContentFilter => breaker.on_success(now),
                    _ => breaker.on_failure(now),
                }
                class.as_str()
            }
            AttemptOutcome::Cancelled => {
                breaker.on_success(now);
                "hedge_cancelled"
            }
            AttemptOutcome::StreamBroke => {
                breaker.on_failure(now);
                return;
            }
        };
        metrics
            .attempts
            .with_label_values(&[&self.route, provider, model, label])
            .inc();
    }
}

/// Everything live for one route.
pub struct RouteRuntime {
    /// The route's own backends, parallel to `route.backends`.
    pub backends: Vec<BackendRuntime>,
    /// Fallback chains, parallel to `route.fallbacks`.
    pub fallbacks: Vec<Vec<BackendRuntime>>,
    /// Retry budget, when the route retries.
    pub budget: Option<Arc<RetryBudget>>,
    /// Round-robin position.
    pub rr: Arc<AtomicU64>,
    /// The client of the route's pass-through provider, if it has one.
    pub passthrough: Option<crate::upstream::UpstreamClient>,
    /// The route's response cache, if it has one.
    pub cache: Option<Arc<crate::cache::RouteCache>>,
    /// The client of the semantic cache's embeddings provider.
    pub embedder: Option<crate::upstream::UpstreamClient>,
    /// Shadow traffic's candidate, when the route mirrors.
    pub mirror: Option<Mirror>,
}

/// Long-lived state, carried from table to table.
#[derive(Default)]
pub struct Registry {
    backends: Mutex<HashMap<String, Arc<BackendState>>>,
    budgets: Mutex<HashMap<String, Arc<RetryBudget>>>,
    counters: Mutex<HashMap<String, Arc<AtomicU64>>>,
    versions: Mutex<HashMap<String, Arc<ModelVersion>>>,
    credentials: Mutex<HashMap<String, Arc<crate::identity::CredentialSource>>>,
    mirrors: Mutex<HashMap<String, Arc<Budget>>>,
    /// Kubernetes Events of this sidecar, in `--source kubernetes` mode
    /// (set once at start-up).
    pub events: std::sync::OnceLock<Arc<crate::events::Events>>,
    /// The credential metric families (set once at start-up).
    pub credential_metrics: std::sync::OnceLock<crate::identity::CredentialMetrics>,
    /// Response caches of the routes that have one.
    pub caches: crate::cache::Caches,
}

/// Half-life of the time-to-first-byte average.
const EWMA_HALF_LIFE: Duration = Duration::from_secs(10);
/// Retry budget window (Linkerd's default).
const BUDGET_TTL: Duration = Duration::from_secs(10);

fn breaker_config(s: Option<&BreakerSettings>) -> BreakerConfig {
    match s {
        Some(b) => BreakerConfig {
            consecutive_failures: b.consecutive_failures,
            failure_rate: b.failure_rate,
            min_requests: b.min_requests,
            window: b.window,
            open_for: b.open_for,
            max_open_for: (b.open_for * 10).max(Duration::from_secs(300)),
            half_open_probes: b.half_open_probes,
        },
        // No breaker configured: one that never opens.
        None => BreakerConfig {
            consecutive_failures: 0,
            failure_rate: 0.0,
            ..BreakerConfig::default()
        },
    }
}

/// The entry for `key`: already taken by this table, else the live one
/// from the registry, else a new one.
fn reuse<T>(
    live: &Mutex<HashMap<String, Arc<T>>>,
    taken: &mut HashMap<String, Arc<T>>,
    key: String,
    make: impl FnOnce() -> T,
) -> Arc<T> {
    if let Some(v) = taken.get(&key) {
        return v.clone();
    }
    let existing = live.lock().ok().and_then(|m| m.get(&key).cloned());
    let v = existing.unwrap_or_else(|| Arc::new(make()));
    taken.insert(key, v.clone());
    v
}

/// Collects the entries a new table uses; entries no longer used are
/// dropped when the table is committed.
pub struct Builder<'a> {
    registry: &'a Registry,
    backends: HashMap<String, Arc<BackendState>>,
    budgets: HashMap<String, Arc<RetryBudget>>,
    counters: HashMap<String, Arc<AtomicU64>>,
    versions: HashMap<String, Arc<ModelVersion>>,
    credentials: HashMap<String, Arc<crate::identity::CredentialSource>>,
    mirrors: HashMap<String, Arc<Budget>>,
    caches: crate::cache::CacheBuilder,
}

impl Registry {
    /// Starts building the state of a new table.
    pub fn builder(&self) -> Builder<'_> {
        Builder {
            registry: self,
            backends: HashMap::new(),
            budgets: HashMap::new(),
            counters: HashMap::new(),
            versions: HashMap::new(),
            credentials: HashMap::new(),
            mirrors: HashMap::new(),
            caches: crate::cache::CacheBuilder::default(),
        }
    }
}

impl Builder<'_> {
    /// State of backend `b` in `route` (chain "" for the route's own
    /// backends, "fallback-N" for chain N).
    pub fn backend_state(&mut self, route: &Route, chain: &str, b: &Backend) -> Arc<BackendState> {
        // Settings are part of the key: a changed breaker starts fresh.
        let key = format!(
            "{}/{}/{chain}/{}/{}/{:?}",
            route.namespace,
            route.name,
            b.provider.name,
            b.model.as_deref().unwrap_or("*"),
            route.breaker
        );
        reuse(&self.registry.backends, &mut self.backends, key, || {
            BackendState::new(breaker_config(route.breaker.as_ref()), EWMA_HALF_LIFE)
        })
    }

    /// The route's retry budget, if it retries.
    pub fn budget(&mut self, route: &Route) -> Option<Arc<RetryBudget>> {
        let r = route.retry?;
        let key = format!(
            "{}/{}/{}/{}",
            route.namespace, route.name, r.budget_ratio, r.budget_min_per_second
        );
        Some(reuse(
            &self.registry.budgets,
            &mut self.budgets,
            key,
            || RetryBudget::new(r.budget_ratio, r.budget_min_per_second, BUDGET_TTL),
        ))
    }

    /// The model version backend `b` of `route` last answered with.
    pub fn model_version(&mut self, route: &Route, b: &Backend) -> Arc<ModelVersion> {
        let key = format!(
            "{}/{}/{}/{}",
            route.namespace,
            route.name,
            b.provider.name,
            b.model.as_deref().unwrap_or("*")
        );
        reuse(
            &self.registry.versions,
            &mut self.versions,
            key,
            ModelVersion::default,
        )
    }

    /// The credential source of `provider`, if the sidecar obtains its
    /// credential itself (token exchanges go through `client`).
    pub fn credential(
        &mut self,
        provider: &llmesh_policy::Provider,
        client: &crate::upstream::UpstreamClient,
    ) -> Option<Arc<crate::identity::CredentialSource>> {
        let identity = provider.identity.as_ref()?;
        let key = crate::identity::CredentialSource::key(provider, identity);
        let metrics = self.registry.credential_metrics.get().cloned();
        let events = self.registry.events.get().cloned();
        let src = reuse(
            &self.registry.credentials,
            &mut self.credentials,
            key,
            || {
                crate::identity::CredentialSource::new(
                    provider,
                    identity.clone(),
                    client.clone(),
                    metrics,
                    events,
                )
            },
        );
        src.start();
        Some(src)
    }

    /// The counters of the route's mirror caps (a changed cap starts
    /// afresh).
    pub fn mirror_budget(&mut self, route: &Route) -> Option<Arc<Budget>> {
        let m = route.mirror.as_ref()?;
        let key = format!(
            "{}/{}/{:?}/{:?}",
            route.namespace, route.name, m.max_per_minute, m.max_cost_per_hour
        );
        Some(reuse(
            &self.registry.mirrors,
            &mut self.mirrors,
            key,
            Budget::default,
        ))
    }

    /// The route's round-robin position.
    pub fn counter(&mut self, route: &Route) -> Arc<AtomicU64> {
        let key = format!("{}/{}", route.namespace, route.name);
        reuse(
            &self.registry.counters,
            &mut self.counters,
            key,
            AtomicU64::default,
        )
    }

    /// The route's response cache, if it has one.
    pub fn cache(&mut self, route: &Route) -> Option<Arc<crate::cache::RouteCache>> {
        self.caches.cache(&self.registry.caches, route)
    }

    /// Makes this table's entries the registry's (called when it is
    /// published, so a refused policy changes nothing).
    pub fn commit(self) {
        let Builder {
            registry,
            backends,
            budgets,
            counters,
            versions,
            credentials,
            mirrors,
            caches,
        } = self;
        if let Ok(mut m) = registry.mirrors.lock() {
            *m = mirrors;
        }
        if let Ok(mut m) = registry.credentials.lock() {
            *m = credentials;
        }
        caches.commit(&registry.caches);
        if let Ok(mut m) = registry.backends.lock() {
            *m = backends;
        }
        if let Ok(mut m) = registry.budgets.lock() {
            *m = budgets;
        }
        if let Ok(mut m) = registry.counters.lock() {
            *m = counters;
        }
        if let Ok(mut m) = registry.versions.lock() {
            *m = versions;
        }
    }
}

/// A route's mirror: its candidate backend and its caps' counters.
pub struct Mirror {
    /// The candidate, wired like any backend (client, breaker, credential).
    pub backend: BackendRuntime,
    /// Calls and spend in the current windows (kept across reloads).
    pub budget: Arc<Budget>,
}

/// A mirror's per-sidecar caps: calls this minute, USD this hour.
#[derive(Default)]
pub struct Budget(Mutex<Windows>);

#[derive(Default)]
struct Windows {
    minute: u64,
    calls: u32,
    hour: u64,
    spent: f64,
}

impl Budget {
    /// Takes one call if the caps allow it at `unix` seconds.
    pub(crate) fn take(&self, s: &llmesh_policy::MirrorSettings, unix: u64) -> bool {
        let Ok(mut w) = self.0.lock() else {
            return false;
        };
        if w.minute != unix / 60 {
            w.minute = unix / 60;
            w.calls = 0;
        }
        if w.hour != unix / 3600 {
            w.hour = unix / 3600;
            w.spent = 0.0;
        }
        if s.max_per_minute.is_some_and(|m| w.calls >= m)
            || s.max_cost_per_hour.is_some_and(|m| w.spent >= m)
        {
            return false;
        }
        w.calls += 1;
        true
    }

    pub(crate) fn spend(&self, usd: f64) {
        if let Ok(mut w) = self.0.lock() {
            w.spent += usd;
        }
    }
}
