//! `LLMQuota` on the request path: admission after the route is known,
//! one charge per request that every attempt billed for it adds to, and
//! the settlement with the summed usage once the last of them is
//! accounted (for streams, when the stream ends).
//!
//! The engine itself (windows, the shared Redis store, fallbacks) is the
//! `llmesh-quota` crate; this module turns its decisions into responses,
//! headers, metrics and usage records.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use llmesh_quota::{
    Alert, AnyStore, CallerHasher, CallerId, LimitRef, MemoryStore, ProviderBudget, QuotaEngine,
    QuotaRuntime, RateLimitInfo, RedisConfig, RedisStore, Reservation, UsageConfig, UsageRecord,
    UsageWriter, MICRO_USD,
};
use llmesh_wire::Usage;

use prometheus::IntCounterVec;

pub use crate::config::{QuotaSettings, StoreSetting};

/// Quota state of a sidecar, outliving policy snapshots.
pub struct QuotaState {
    /// Counters and alerts, kept across reloads.
    pub runtime: QuotaRuntime,
    pub(crate) hasher: CallerHasher,
    /// Writes usage records to the Redis stream (Redis store only).
    pub usage: Option<UsageWriter>,
    pub(crate) default_max_tokens: u64,
}

/// Why quota enforcement could not start.
#[derive(Debug, thiserror::Error)]
pub enum QuotaStartError {
    /// The Redis URL is not usable.
    #[error("quota store {url}: {source}")]
    Redis {
        /// The URL, without credentials.
        url: String,
        /// The client's complaint.
        source: redis::RedisError,
    },
}

/// A URL with any password replaced, for messages.
fn shown_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

impl QuotaState {
    /// Connects (lazily) to the store. Must run inside a tokio runtime.
    pub fn start(s: &QuotaSettings) -> Result<QuotaState, QuotaStartError> {
        let (store, usage) = match &s.store {
            StoreSetting::Memory => (AnyStore::Memory(MemoryStore::new()), None),
            StoreSetting::Redis(url) => {
                let cfg = RedisConfig {
                    url: url.clone(),
                    local_share_divisor: s.local_share.max(1),
                    command_timeout: s.redis_timeout,
                    ..RedisConfig::default()
                };
                let err = |source| QuotaStartError::Redis {
                    url: shown_url(url),
                    source,
                };
                let store = RedisStore::new(cfg.clone()).map_err(err)?;
                let writer = UsageWriter::new(UsageConfig {
                    redis: cfg,
                    ..UsageConfig::default()
                })
                .map_err(err)?;
                tracing::info!(store = shown_url(url).as_str(), "quota store: redis");
                (AnyStore::Redis(store), Some(writer))
            }
        };
        Ok(QuotaState {
            runtime: QuotaRuntime::new(store),
            hasher: CallerHasher::new(&s.caller_hash_key),
            usage,
            default_max_tokens: s.default_max_tokens,
        })
    }

    /// The engine of a new snapshot, or `None` when it has no quota and no
    /// provider limits (the request path then skips every quota step).
    pub fn engine_for(&self, snap: &llmesh_policy::Snapshot) -> Option<Arc<QuotaEngine>> {
        let e = QuotaEngine::from_snapshot(snap, &self.runtime);
        (!e.is_empty() || e.paces_any()).then(|| Arc::new(e))
    }
}

/// What a request holds against its quotas until its last billed attempt
/// is accounted. Every `Call` of the request shares it; when the last one
/// lets go, the reservation is settled with the sum of their usage.
pub struct Charge {
    /// `llmesh_quota_alerts_total`, for thresholds crossed at settlement.
    alerts: IntCounterVec,
    reservation: Mutex<Option<Reservation>>,
    input: AtomicU64,
    output: AtomicU64,
    micro_usd: AtomicU64,
    /// The hashed caller, for usage records.
    pub caller: Option<CallerId>,
}

impl Charge {
    /// A charge holding `reservation` for a request of `caller`.
    pub(crate) fn new(
        reservation: Reservation,
        caller: Option<CallerId>,
        alerts: IntCounterVec,
    ) -> Charge {
        Charge {
            alerts,
            reservation: Mutex::new(Some(reservation)),
            input: AtomicU64::new(0),
            output: AtomicU64::new(0),
            micro_usd: AtomicU64::new(0),
            caller,
        }
    }

    /// Adds an attempt's billed usage.
    pub fn add(&self, usage: &Usage, cost_usd: f64) {
        self.input.fetch_add(usage.input_tokens, Ordering::Relaxed);
        self.output
            .fetch_add(usage.output_tokens, Ordering::Relaxed);
        self.micro_usd
            .fetch_add(llmesh_quota::micro_usd(cost_usd), Ordering::Relaxed);
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let Some(r) = self
            .reservation
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return;
        };
        let input = *self.input.get_mut();
        let output = *self.output.get_mut();
        let cost = *self.micro_usd.get_mut() as f64 / MICRO_USD;
        let counter = self.alerts.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(async move {
                    let settled = r.settle(input, output, cost).await;
                    raise_alerts(&counter, &settled.alerts);
                });
            }
            // No runtime (shutting down): dropping the reservation frees
            // its slots and keeps the reserved amounts counted.
            Err(_) => drop(r),
        }
    }
}

/// What admission decided for a request that goes ahead.
#[derive(Default)]
pub struct Admitted {
    /// Shared by the request's calls; `None` when no quota covers it.
    pub charge: Option<Arc<Charge>>,
    /// Serve the request as this model (a downgrade quota is full).
    pub downgrade_to: Option<Arc<str>>,
    /// The tightest limit after admission, for `x-ratelimit-*` headers.
    pub rate: Option<RateLimitInfo>,
    /// The prompt's tokens, when a token limit needed them counted.
    pub prompt_tokens: Option<u64>,
}

/// `namespace/name` of a quota.
pub(crate) fn quota_label(l: &LimitRef) -> String {
    format!("{}/{}", l.namespace, l.quota)
}

/// Counts and logs thresholds crossed.
pub(crate) fn raise_alerts(counter: &IntCounterVec, alerts: &[Alert]) {
    for a in alerts {
        let q = quota_label(&a.limit);
        let threshold = a.threshold.to_string();
        counter
            .with_label_values(&[&q, a.limit.limit.as_str(), &threshold])
            .inc();
        tracing::warn!(
            quota = q.as_str(),
            limit = a.limit.limit.as_str(),
            threshold = a.threshold,
            used = a.used,
            max = a.max,
            "quota alert threshold reached"
        );
    }
}

/// A connection to the quota store's Redis at `url` for the sidecar's
/// other shared state (the responses store, the response cache): connects
/// lazily and reconnects, so a Redis down at start-up only fails calls.
pub(crate) fn side_connection(
    url: &str,
    response_timeout: std::time::Duration,
) -> Option<redis::aio::ConnectionManager> {
    let client = redis::Client::open(url).ok()?;
    let cfg = redis::aio::ConnectionManagerConfig::new()
        .set_response_timeout(Some(response_timeout))
        .set_connection_timeout(Some(std::time::Duration::from_millis(500)));
    redis::aio::ConnectionManager::new_lazy_with_config(client, cfg).ok()
}

/// Whether `provider`'s published limits leave room this minute.
pub(crate) fn has_room(engine: &QuotaEngine, provider: &str, now: SystemTime) -> bool {
    engine.provider_budget(provider, now) == ProviderBudget::Available
}

/// Counts a request and its tokens against a provider's shared per-minute
/// budget, off the request path. `engine` is the request's table's, so
/// pacing never reads another table.
pub(crate) fn pace(engine: Option<&Arc<QuotaEngine>>, provider: &str, requests: u64, tokens: u64) {
    let Some(engine) = engine.filter(|e| e.paces(provider)).cloned() else {
        return;
    };
    let provider = provider.to_string();
    if let Ok(h) = tokio::runtime::Handle::try_current() {
        h.spawn(async move {
            let tokens = i64::try_from(tokens).unwrap_or(i64::MAX);
            engine
                .record_provider(&provider, requests, tokens, crate::clock::wall())
                .await;
        });
    }
}

/// One call's usage, for the usage stream.
pub(crate) struct CallUsage<'a> {
    pub(crate) route: &'a str,
    pub(crate) provider: &'a str,
    pub(crate) model: &'a str,
    pub(crate) usage: &'a Usage,
    pub(crate) cost_usd: f64,
    pub(crate) status: u16,
    pub(crate) caller: Option<CallerId>,
}

/// Queues the usage record of a call of the pod `id` (Redis store only).
/// No prompt or completion text.
pub(crate) fn record_usage(state: &QuotaState, id: &crate::config::Identity, call: CallUsage<'_>) {
    let Some(w) = &state.usage else {
        return;
    };
    w.record(UsageRecord {
        ts: crate::clock::wall(),
        namespace: id.namespace.clone(),
        workload: id.workload.clone(),
        pod: id.pod.clone(),
        route: call.route.to_string(),
        provider: call.provider.to_string(),
        model: call.model.to_string(),
        input_tokens: call.usage.input_tokens,
        output_tokens: call.usage.output_tokens,
        cached_input_tokens: call.usage.cached_input_tokens,
        cache_write_input_tokens: call.usage.cache_write_input_tokens,
        cost_usd: call.cost_usd,
        status: call.status,
        caller_hash: call.caller,
    });
}

/// Writes the usage records still held, waiting at most `deadline`.
pub async fn flush(state: &QuotaState, deadline: Duration) {
    if let Some(w) = &state.usage {
        let s = w.shutdown(deadline).await;
        tracing::info!(
            delivered = s.delivered,
            dropped = s.dropped,
            "usage records flushed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_setting_parses() {
        assert_eq!(StoreSetting::parse("memory"), Ok(StoreSetting::Memory));
        assert_eq!(StoreSetting::parse(""), Ok(StoreSetting::Memory));
        assert_eq!(
            StoreSetting::parse("redis://127.0.0.1:6379/0"),
            Ok(StoreSetting::Redis("redis://127.0.0.1:6379/0".into()))
        );
        assert!(StoreSetting::parse("etcd://x").is_err());
    }

    #[test]
    fn urls_shown_without_password() {
        assert_eq!(
            shown_url("redis://user:pw@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(shown_url("redis://host:6379"), "redis://host:6379");
    }
}
