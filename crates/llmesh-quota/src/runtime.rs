//! What outlives policy snapshots: the store, the usage board behind the
//! gauges, the alerts already raised and the providers' minute totals.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::decision::Alert;
use crate::engine::{Meta, RuleSet};
use crate::rules::stable_hash;
use crate::store::QuotaStore;
use crate::AnyStore;

/// State that outlives policy snapshots: build one per sidecar and hand it
/// to every [`crate::QuotaEngine`] built from a new snapshot.
#[derive(Debug)]
pub struct QuotaRuntime<S: QuotaStore = AnyStore> {
    pub(crate) inner: Arc<RuntimeInner<S>>,
}

impl<S: QuotaStore> Clone for QuotaRuntime<S> {
    fn clone(&self) -> Self {
        QuotaRuntime {
            inner: self.inner.clone(),
        }
    }
}

#[derive(Debug)]
pub(crate) struct RuntimeInner<S> {
    pub(crate) store: S,
    /// counter id -> last value seen, for the usage gauges.
    pub(crate) board: Mutex<HashMap<u64, BoardEntry>>,
    /// (counter id, window start, threshold) -> window end: alerts already
    /// raised, so each fires once per window in this sidecar.
    fired: Mutex<HashMap<(u64, u64, u32), u64>>,
    /// provider name -> this minute's shared counts as last seen.
    pub(crate) providers: Mutex<HashMap<Arc<str>, ProviderView>>,
    /// Unique reservation ids (concurrency leases in a shared store).
    lease_seq: AtomicU64,
    lease_prefix: u64,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct BoardEntry {
    pub(crate) limit_id: u64,
    pub(crate) window: (u64, u64),
    pub(crate) used: i64,
}

/// A provider's shared per-minute counts as one store answer gave them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ProviderView {
    pub(crate) window_start: u64,
    pub(crate) requests: i64,
    pub(crate) tokens: i64,
}

impl ProviderView {
    /// The later of two answers. Counts are recorded from spawned tasks,
    /// so answers can arrive out of order: one from an earlier minute, or
    /// with fewer requests than already seen (the request count only
    /// grows within a minute), is stale and does not replace `self`.
    pub(crate) fn newer(self, other: ProviderView) -> ProviderView {
        let stale = other.window_start < self.window_start
            || (other.window_start == self.window_start && other.requests < self.requests);
        if stale {
            self
        } else {
            other
        }
    }
}

impl<S: QuotaStore> QuotaRuntime<S> {
    /// A runtime over `store`.
    pub fn new(store: S) -> QuotaRuntime<S> {
        // Distinct per process so two sidecars' leases never share an id.
        let lease_prefix = stable_hash(&(
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
            std::thread::current().id(),
        ));
        QuotaRuntime {
            inner: Arc::new(RuntimeInner {
                store,
                board: Mutex::default(),
                fired: Mutex::default(),
                providers: Mutex::default(),
                lease_seq: AtomicU64::new(0),
                lease_prefix,
            }),
        }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.inner.store
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update under these locks is a single insert or assignment, so
    // a poisoned lock still holds consistent data.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<S> RuntimeInner<S> {
    /// Remembers a counter's value for the usage gauges.
    pub(crate) fn note(&self, counter_id: u64, limit_id: u64, window: (u64, u64), used: i64) {
        let mut board = lock(&self.board);
        // Drop finished windows now and then, so callers seen once do not
        // stay forever.
        if board.len() > 4096 {
            let now = window.0;
            board.retain(|_, b| b.window.1 > now && (b.window.1 != u64::MAX || b.used > 0));
        }
        board.insert(
            counter_id,
            BoardEntry {
                limit_id,
                window,
                used,
            },
        );
    }

    pub(crate) fn next_lease(&self) -> u64 {
        self.lease_prefix
            .wrapping_add(self.lease_seq.fetch_add(1, Ordering::Relaxed))
    }

    /// Alerts for thresholds crossed going from `before` to `after`, each
    /// once per window (concurrency: each time it rises across).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn crossings(
        &self,
        rules: &RuleSet,
        m: Meta,
        counter_id: u64,
        window: (u64, u64),
        before: i64,
        after: i64,
        out: &mut Vec<Alert>,
    ) {
        let rule = &rules.rules[m.rule as usize];
        let max = rule.limits[m.limit as usize].max;
        let reached = |v: i64, t: u32| i128::from(v) * 100 >= i128::from(max) * i128::from(t);
        for &t in &rule.thresholds {
            if reached(before, t) || !reached(after, t) {
                continue;
            }
            if window.1 != u64::MAX {
                let mut fired = lock(&self.fired);
                if fired.len() > 4096 {
                    let now = window.0;
                    fired.retain(|_, end| *end > now);
                }
                if fired.insert((counter_id, window.0, t), window.1).is_some() {
                    continue;
                }
            }
            out.push(Alert {
                limit: rules.limit_ref(m),
                threshold: t,
                used: after,
                max,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ProviderView;

    fn v(window_start: u64, requests: i64, tokens: i64) -> ProviderView {
        ProviderView {
            window_start,
            requests,
            tokens,
        }
    }

    #[test]
    fn a_late_answer_does_not_roll_the_provider_view_back() {
        // The answer with 3 requests was given before the one with 4 but
        // arrived after it.
        assert_eq!(v(60, 4, 44).newer(v(60, 3, 44)), v(60, 4, 44));
        assert_eq!(v(120, 1, 0).newer(v(60, 9, 90)), v(120, 1, 0));
        // Same count, a token correction: the newer answer wins.
        assert_eq!(v(60, 4, 44).newer(v(60, 4, 30)), v(60, 4, 30));
        assert_eq!(v(60, 4, 44).newer(v(120, 1, 5)), v(120, 1, 5));
    }
}
