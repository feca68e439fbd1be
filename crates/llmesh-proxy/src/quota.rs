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

use bytes::Bytes;
use http::HeaderMap;
use llmesh_policy::Route;
use llmesh_quota::{
    Admission, Alert, AnyStore, CallerHasher, CallerId, Decision, LimitRef, MemoryStore,
    ProviderBudget, QuotaEngine, QuotaRuntime, QuotaStore, RateLimitInfo, RedisConfig, RedisStore,
    Reservation, Unit, UsageConfig, UsageRecord, UsageWriter, MICRO_USD,
};
use llmesh_wire::{Dialect, Usage};
use tracing::Instrument;

use crate::error::ProxyError;
use crate::Shared;

/// Where quota counters live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSetting {
    /// In this process (exact for one sidecar).
    Memory,
    /// Shared by every sidecar through Redis at this URL.
    Redis(String),
}

impl StoreSetting {
    /// `memory` or a `redis://` / `rediss://` URL.
    pub fn parse(text: &str) -> Result<StoreSetting, String> {
        let t = text.trim();
        if t.is_empty() || t == "memory" {
            return Ok(StoreSetting::Memory);
        }
        if t.starts_with("redis://") || t.starts_with("rediss://") {
            return Ok(StoreSetting::Redis(t.to_string()));
        }
        Err(format!(
            "quota store must be `memory` or a redis:// URL, not {:?}",
            t.chars().take(64).collect::<String>()
        ))
    }
}

/// Start-up settings of quota enforcement.
#[derive(Debug, Clone)]
pub struct QuotaSettings {
    /// The counters' store.
    pub store: StoreSetting,
    /// While Redis is unreachable each sidecar enforces every limit divided
    /// by this (the number of sidecars expected to share a budget).
    pub local_share: u32,
    /// Completion tokens reserved for a request that sets no `max_tokens`.
    pub default_max_tokens: u64,
    /// Longest wait for one Redis command before the request is decided
    /// on the local share.
    pub redis_timeout: Duration,
    /// Key for hashing caller header values (same on every sidecar).
    pub caller_hash_key: Vec<u8>,
}

impl Default for QuotaSettings {
    fn default() -> Self {
        QuotaSettings {
            store: StoreSetting::Memory,
            local_share: 1,
            default_max_tokens: 1024,
            redis_timeout: RedisConfig::default().command_timeout,
            caller_hash_key: Vec::new(),
        }
    }
}

/// Quota state of a sidecar, outliving policy snapshots.
pub struct QuotaState {
    /// Counters and alerts, kept across reloads.
    pub runtime: QuotaRuntime,
    hasher: CallerHasher,
    /// Writes usage records to the Redis stream (Redis store only).
    pub usage: Option<UsageWriter>,
    default_max_tokens: u64,
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
    shared: Arc<Shared>,
    reservation: Mutex<Option<Reservation>>,
    input: AtomicU64,
    output: AtomicU64,
    micro_usd: AtomicU64,
    /// The hashed caller, for usage records.
    pub caller: Option<CallerId>,
}

impl Charge {
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
        let shared = self.shared.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(async move {
                    let settled = r.settle(input, output, cost).await;
                    raise_alerts(&shared, &settled.alerts);
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
}

/// The request's admission by the quotas covering it.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn admit(
    shared: &Arc<Shared>,
    engine: &QuotaEngine,
    route: &Route,
    requested: &str,
    headers: &HeaderMap,
    raw: &Bytes,
    client: Dialect,
    max_output: u64,
    prompt_tokens: &mut Option<u64>,
) -> Result<Admitted, ProxyError> {
    let id = shared.identity();
    let Some(needs_tokens) = engine.coverage(&id.namespace, &id.workload, requested) else {
        return Ok(Admitted::default());
    };
    let state = &shared.quota;
    let output = if max_output > 0 {
        max_output
    } else {
        state.default_max_tokens
    };
    let input = if needs_tokens {
        match *prompt_tokens {
            Some(n) => n,
            None => {
                let (raw, c) = (raw.clone(), client);
                let n =
                    tokio::task::spawn_blocking(move || crate::tokens::estimate_prompt(c, &raw))
                        .await
                        .unwrap_or(0);
                *prompt_tokens = Some(n);
                n
            }
        }
    } else {
        0
    };
    // The price of the backend the route tries first; settlement corrects
    // the estimate with what the call really cost.
    let est_cost = route
        .backends
        .iter()
        .find_map(|b| {
            b.provider
                .model(b.upstream_model(requested))
                .and_then(|m| m.price)
        })
        .map_or(0.0, |p| p.cost(input, 0, output));
    let mut callers: Vec<(&str, CallerId)> = Vec::new();
    for h in engine.caller_headers() {
        if let Some(v) = headers.get(h.as_ref()).and_then(|v| v.to_str().ok()) {
            callers.push((h, state.hasher.hash(v)));
        }
    }
    let caller = callers.first().map(|(_, c)| *c);
    let span = crate::trace::quota_span();
    let decision = engine
        .admit(&Admission {
            namespace: &id.namespace,
            workload: &id.workload,
            pod: &id.pod,
            callers: &callers,
            model: requested,
            input_tokens: input,
            output_tokens: output,
            est_cost_usd: est_cost,
            now: SystemTime::now(),
        })
        .instrument(span.clone())
        .await;
    crate::trace::quota_decision(&span, decision.label());
    let m = &shared.metrics;
    let label = decision.label();
    let (reservation, downgrade_to) = match decision {
        Decision::Reject(rej) => {
            raise_alerts(shared, &rej.alerts);
            m.quota_decisions
                .with_label_values(&[label, &quota_label(&rej.limit)])
                .inc();
            tracing::warn!(
                quota = quota_label(&rej.limit).as_str(),
                limit = rej.limit.limit.as_str(),
                status = rej.status(),
                "request refused by quota"
            );
            return Err(ProxyError::Quota {
                status: rej.status(),
                message: rej.message(),
                headers: rej.headers(),
            });
        }
        Decision::Allow(r) => {
            if !r.is_empty() {
                m.quota_decisions.with_label_values(&[label, ""]).inc();
            }
            (r, None)
        }
        Decision::Warn {
            reservation,
            exceeded,
        } => {
            for l in &exceeded {
                tracing::warn!(
                    quota = quota_label(l).as_str(),
                    limit = l.limit.as_str(),
                    "request over a warn quota's limit; served"
                );
            }
            let q = exceeded.first().map(quota_label).unwrap_or_default();
            m.quota_decisions.with_label_values(&[label, &q]).inc();
            (reservation, None)
        }
        Decision::Downgrade {
            to_model,
            by,
            reservation,
        } => {
            m.quota_decisions
                .with_label_values(&[label, &quota_label(&by)])
                .inc();
            (reservation, Some(to_model))
        }
    };
    raise_alerts(shared, reservation.alerts());
    let rate = reservation.rate_limit();
    let charge = (!reservation.is_empty()).then(|| {
        Arc::new(Charge {
            shared: shared.clone(),
            reservation: Mutex::new(Some(reservation)),
            input: AtomicU64::new(0),
            output: AtomicU64::new(0),
            micro_usd: AtomicU64::new(0),
            caller,
        })
    });
    Ok(Admitted {
        charge,
        downgrade_to,
        rate,
    })
}

/// `namespace/name` of a quota.
fn quota_label(l: &LimitRef) -> String {
    format!("{}/{}", l.namespace, l.quota)
}

/// Counts and logs thresholds crossed.
fn raise_alerts(shared: &Shared, alerts: &[Alert]) {
    for a in alerts {
        let q = quota_label(&a.limit);
        let threshold = a.threshold.to_string();
        shared
            .metrics
            .quota_alerts
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

/// Whether `provider`'s published limits leave room this minute.
pub(crate) fn has_room(engine: &QuotaEngine, provider: &str) -> bool {
    engine.provider_budget(provider, SystemTime::now()) == ProviderBudget::Available
}

/// Counts a request and its tokens against a provider's shared per-minute
/// budget, off the request path.
pub(crate) fn pace(shared: &Arc<Shared>, provider: &str, requests: u64, tokens: u64) {
    let table = shared.table.load();
    let Some(engine) = table.quota.clone() else {
        return;
    };
    if !engine.paces(provider) {
        return;
    }
    let provider = provider.to_string();
    if let Ok(h) = tokio::runtime::Handle::try_current() {
        h.spawn(async move {
            let tokens = i64::try_from(tokens).unwrap_or(i64::MAX);
            engine
                .record_provider(&provider, requests, tokens, SystemTime::now())
                .await;
        });
    }
}

/// Queues a usage record (Redis store only).
pub(crate) fn record_usage(shared: &Shared, rec: UsageRecord) {
    if let Some(w) = &shared.quota.usage {
        w.record(rec);
    }
}

/// Sets the quota gauges from the active engine and the store, at scrape
/// time.
pub fn refresh_gauges(shared: &Shared) {
    let m = &shared.metrics;
    let table = shared.table.load();
    m.quota_used.reset();
    m.quota_limit.reset();
    m.quota_remaining.reset();
    m.provider_budget_exhausted.reset();
    let now = SystemTime::now();
    if let Some(engine) = &table.quota {
        for u in engine.usage(now) {
            let q = quota_label(&u.limit);
            let scale = if u.limit.limit.unit() == Unit::MicroUsd {
                MICRO_USD
            } else {
                1.0
            };
            let labels = [q.as_str(), u.limit.limit.as_str(), u.scope];
            m.quota_used
                .with_label_values(&labels)
                .set(u.used as f64 / scale);
            m.quota_limit
                .with_label_values(&labels)
                .set(u.max as f64 / scale);
            m.quota_remaining
                .with_label_values(&labels)
                .set(u.remaining() as f64 / scale);
        }
        for p in table.snap.providers.values() {
            if engine.paces(&p.name) {
                let out = !has_room(engine, &p.name);
                m.provider_budget_exhausted
                    .with_label_values(&[&p.name])
                    .set(i64::from(out));
            }
        }
    }
    let st = shared.quota.runtime.store().stats();
    m.quota_store_degraded.set(i64::from(st.degraded));
    sync_counter(&m.quota_store_errors, st.errors);
    sync_counter(&m.quota_local_admissions, st.local_admissions);
    sync_counter(&m.quota_fail_closed, st.fail_closed_refusals);
    sync_counter(&m.quota_dropped_settlements, st.dropped_settlements);
    m.quota_pending_settlements
        .set(i64::try_from(st.pending_settlements).unwrap_or(i64::MAX));
    if let Some(w) = &shared.quota.usage {
        let u = w.stats();
        sync_counter(
            &m.usage_records.with_label_values(&["delivered"]),
            u.delivered,
        );
        sync_counter(&m.usage_records.with_label_values(&["dropped"]), u.dropped);
        sync_counter(&m.usage_write_failures, u.failed_writes);
        m.usage_records_queued
            .set(i64::try_from(u.queued).unwrap_or(i64::MAX));
    }
}

/// Moves a counter up to a total kept elsewhere.
fn sync_counter(c: &prometheus::IntCounter, total: u64) {
    let cur = c.get();
    if total > cur {
        c.inc_by(total - cur);
    }
}

/// Writes the usage records still held, waiting at most `deadline`.
pub async fn flush(shared: &Shared, deadline: Duration) {
    if let Some(w) = &shared.quota.usage {
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
