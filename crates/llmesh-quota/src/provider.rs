//! Provider pacing: the providers' published limits, less their headroom,
//! counted per minute in the shared store.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use llmesh_api::ProviderLimits;

use crate::decision::ProviderBudget;
use crate::engine::QuotaEngine;
use crate::runtime::{lock, ProviderView};
use crate::store::QuotaStore;
use crate::window::{unix_ms, Window};

impl<S: QuotaStore> QuotaEngine<S> {
    /// Whether `provider`'s published limits, less their headroom, leave
    /// room this minute, from the shared counts as last seen by
    /// [`QuotaEngine::record_provider`]. No I/O.
    pub fn provider_budget(&self, provider: &str, now: SystemTime) -> ProviderBudget {
        let Some((_, limits)) = self.rules.providers.get(provider) else {
            return ProviderBudget::Available;
        };
        let now_ms = unix_ms(now);
        let (start, end) = Window::Minute.bounds(now_ms);
        let view = lock(&self.rt.providers)
            .get(provider)
            .copied()
            .unwrap_or_default();
        budget_of(limits, view, start, end)
    }

    /// Counts `requests` and `tokens` (may be negative: a correction of an
    /// estimate) against `provider`'s shared per-minute counters and
    /// returns its budget after. Providers without published limits cost
    /// nothing.
    pub async fn record_provider(
        &self,
        provider: &str,
        requests: u64,
        tokens: i64,
        now: SystemTime,
    ) -> ProviderBudget {
        let Some((ns, limits)) = self.rules.providers.get(provider) else {
            return ProviderBudget::Available;
        };
        let now_ms = unix_ms(now);
        let (start, end) = Window::Minute.bounds(now_ms);
        let (r, t) = self
            .rt
            .store
            .provider_add(ns, provider, requests as i64, tokens, now_ms)
            .await;
        let view = ProviderView {
            window_start: start,
            requests: r,
            tokens: t,
        };
        let view = {
            let mut views = lock(&self.rt.providers);
            match views.get_mut(provider) {
                Some(v) => {
                    *v = v.newer(view);
                    *v
                }
                None => {
                    views.insert(Arc::from(provider), view);
                    view
                }
            }
        };
        budget_of(limits, view, start, end)
    }
}

fn budget_of(limits: &ProviderLimits, view: ProviderView, start: u64, end: u64) -> ProviderBudget {
    if view.window_start != start {
        return ProviderBudget::Available;
    }
    let keep = |max: u64| (max * u64::from(100 - limits.headroom_percent.min(90)) / 100).max(1);
    let over = |limit: Option<u64>, used: i64| limit.is_some_and(|l| used >= keep(l) as i64);
    if over(limits.requests_per_minute, view.requests)
        || over(limits.tokens_per_minute, view.tokens)
    {
        ProviderBudget::Exhausted {
            until: UNIX_EPOCH + Duration::from_millis(end),
        }
    } else {
        ProviderBudget::Available
    }
}
