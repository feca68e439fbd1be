//! The state every connection shares: the active table (swapped whole),
//! metric families, start-up settings, upstream clients, the live state of
//! breakers and budgets, and the quota store.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

use arc_swap::ArcSwap;

use crate::config::{Identity, ProxyConfig};
use crate::metrics::Metrics;
use crate::table::{Compiled, Table};
use crate::upstream::ClientCache;
use crate::{clock, quota, runtime};

/// State shared by every connection.
pub struct Shared {
    /// The active table; swapped whole.
    pub table: ArcSwap<Table>,
    /// Metric families.
    pub metrics: Metrics,
    /// Start-up settings.
    pub cfg: ProxyConfig,
    /// Upstream clients kept across reloads.
    pub clients: ClientCache,
    /// Breakers, budgets and latencies kept across reloads.
    pub registry: runtime::Registry,
    /// Quota counters and the usage writer, kept across reloads.
    pub quota: quota::QuotaState,
    /// Responses API conversation state.
    pub conversations: Arc<crate::conversation::Store>,
    /// Set once a policy is loaded.
    pub ready: AtomicBool,
    pub(crate) generation: AtomicU64,
    pub(crate) last_error: Mutex<Option<String>>,
}

impl Shared {
    /// The pod identity.
    pub fn identity(&self) -> &Identity {
        &self.cfg.identity
    }

    /// Makes `compiled` the active table, whole (next generation number,
    /// its quota engine), with one store.
    pub fn publish(&self, compiled: Compiled) {
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let table = Table::new(compiled, generation, |snap| self.quota.engine_for(snap));
        // Quotas count tokens: have the tokenizer ready before they need it.
        if table.quota.is_some() {
            crate::tokens::preload();
        }
        let routes = table.snap.routes.len();
        let providers = table.snap.providers.len();
        let inert = table.snap.inert.join(", ");
        self.table.store(Arc::new(table));
        self.ready.store(true, Ordering::Release);
        let m = &self.metrics;
        m.reloads.with_label_values(&["success"]).inc();
        m.generation.set(generation as i64);
        m.last_reload_ok.set(1);
        let now = clock::wall()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        m.last_reload_time.set(now);
        self.set_last_error(None);
        tracing::info!(generation, routes, providers, "policy loaded");
        if !inert.is_empty() {
            tracing::warn!(
                resources = inert.as_str(),
                "resources accepted but not enforced by this version"
            );
        }
    }

    /// The reason of the last failed reload, if the last reload failed.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|g| g.clone())
    }

    pub(crate) fn set_last_error(&self, e: Option<String>) {
        if let Ok(mut g) = self.last_error.lock() {
            *g = e;
        }
    }
}
