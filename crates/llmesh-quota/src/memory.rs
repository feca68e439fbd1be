//! The embedded store: counters in one map behind one lock, exact for one
//! process. Also the Redis store's fallback, with each limit divided by
//! the number of sidecars expected to share it.

use std::collections::HashMap;
use std::future::{ready, Future};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use smallvec::SmallVec;

use crate::rules::stable_hash;
use crate::store::{Counts, Plan, QuotaStore, Reserved, StoreStats, INLINE};
use crate::window::Window;

/// How long a counter outlives its window, so a late settle still finds it.
const SLACK_MS: u64 = 60_000;
/// Expired counters are swept at most this often.
const SWEEP_EVERY_MS: u64 = 1_000;

/// (counter id, window start).
type Key = (u64, u64);

#[derive(Debug, Clone, Copy)]
struct Slot {
    value: i64,
    /// ms since the epoch; `u64::MAX` for concurrency counters.
    expires_ms: u64,
}

#[derive(Debug, Default)]
struct Inner {
    counters: HashMap<Key, Slot>,
    next_sweep_ms: u64,
}

/// Counters in process memory: fixed windows aligned to the clock, exact
/// for one process, no allocation on the admission path once the map has
/// grown to its working size.
#[derive(Debug)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    divisor: u64,
    admissions: AtomicU64,
}

/// The counters a memory reservation touched.
#[derive(Debug)]
pub struct MemTicket {
    keys: SmallVec<[(Key, bool); INLINE]>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// An empty store enforcing the limits as written.
    pub fn new() -> MemoryStore {
        MemoryStore::with_divisor(1)
    }

    /// An empty store enforcing each limit divided by `divisor` (at least
    /// 1 unit): the share of one sidecar among `divisor` sharing a budget.
    pub fn with_divisor(divisor: u32) -> MemoryStore {
        MemoryStore {
            inner: Mutex::new(Inner::default()),
            divisor: u64::from(divisor.max(1)),
            admissions: AtomicU64::new(0),
        }
    }

    /// Admissions counted here.
    pub fn admissions(&self) -> u64 {
        self.admissions.load(Ordering::Relaxed)
    }

    /// The synchronous reserve behind [`QuotaStore::reserve`].
    pub fn reserve_now(&self, plan: &Plan<'_>) -> Reserved<MemTicket> {
        let mut inner = self.lock();
        inner.sweep(plan.now_ms);
        for (i, e) in plan.entries.iter().enumerate() {
            if !e.hard {
                continue;
            }
            let cur = inner
                .counters
                .get(&(e.counter_id, e.window.0))
                .map_or(0, |s| s.value);
            let max = (e.max / self.divisor).max(1) as i64;
            if full(cur, e.add, max) {
                return Reserved::Refused {
                    entry: i,
                    used: cur,
                    local: true,
                };
            }
        }
        let mut used = Counts::new();
        let mut keys = SmallVec::new();
        for e in &plan.entries {
            let key = (e.counter_id, e.window.0);
            let expires_ms = e.window.1.saturating_add(SLACK_MS);
            let slot = inner.counters.entry(key).or_insert(Slot {
                value: 0,
                expires_ms,
            });
            slot.value = slot.value.saturating_add(e.add as i64);
            used.push(slot.value);
            keys.push((key, e.window.1 == u64::MAX));
        }
        self.admissions.fetch_add(1, Ordering::Relaxed);
        Reserved::Admitted {
            ticket: MemTicket { keys },
            used,
            local: true,
        }
    }

    /// The synchronous settle behind [`QuotaStore::settle`].
    pub fn settle_now(&self, ticket: MemTicket, deltas: &[i64]) -> SmallVec<[Option<i64>; INLINE]> {
        let mut inner = self.lock();
        ticket
            .keys
            .iter()
            .enumerate()
            .map(|(i, (key, concurrency))| {
                let delta = if *concurrency {
                    -1
                } else {
                    deltas.get(i).copied().unwrap_or(0)
                };
                inner.counters.get_mut(key).map(|s| {
                    s.value = s.value.saturating_add(delta);
                    s.value
                })
            })
            .collect()
    }

    /// Current value of a counter (tests and the usage board).
    pub fn get(&self, counter_id: u64, window_start: u64) -> Option<i64> {
        self.lock()
            .counters
            .get(&(counter_id, window_start))
            .map(|s| s.value)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a counter half
        // written (each update is one assignment), so a poisoned lock is
        // still consistent.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn provider_add_now(
        &self,
        namespace: &str,
        provider: &str,
        requests: i64,
        tokens: i64,
        now_ms: u64,
    ) -> (i64, i64) {
        let (start, end) = Window::Minute.bounds(now_ms);
        let mut inner = self.lock();
        let mut add = |what: &str, n: i64| {
            let key = (stable_hash(&("provider", namespace, provider, what)), start);
            let slot = inner.counters.entry(key).or_insert(Slot {
                value: 0,
                expires_ms: end + SLACK_MS,
            });
            slot.value = slot.value.saturating_add(n);
            slot.value
        };
        (add("rpm", requests), add("tpm", tokens))
    }
}

/// Whether a counter at `cur` has no room for `add` more under `max`. A
/// request adding nothing (a cost limit without an estimate) is refused
/// once the counter has reached the limit.
pub(crate) fn full(cur: i64, add: u64, max: i64) -> bool {
    let after = cur.saturating_add(add as i64);
    after > max || (add == 0 && cur >= max)
}

impl Inner {
    fn sweep(&mut self, now_ms: u64) {
        if now_ms < self.next_sweep_ms {
            return;
        }
        self.next_sweep_ms = now_ms + SWEEP_EVERY_MS;
        self.counters.retain(|_, s| {
            if s.expires_ms == u64::MAX {
                s.value > 0
            } else {
                s.expires_ms > now_ms
            }
        });
    }
}

impl QuotaStore for MemoryStore {
    type Ticket = MemTicket;

    fn reserve(&self, plan: &Plan<'_>) -> impl Future<Output = Reserved<MemTicket>> + Send {
        ready(self.reserve_now(plan))
    }

    fn settle(
        &self,
        ticket: MemTicket,
        deltas: &[i64],
    ) -> impl Future<Output = SmallVec<[Option<i64>; INLINE]>> + Send {
        ready(self.settle_now(ticket, deltas))
    }

    fn release(&self, ticket: MemTicket) {
        let zero: SmallVec<[i64; INLINE]> = ticket.keys.iter().map(|_| 0).collect();
        self.settle_now(ticket, &zero);
    }

    fn provider_add(
        &self,
        namespace: &str,
        provider: &str,
        requests: i64,
        tokens: i64,
        now_ms: u64,
    ) -> impl Future<Output = (i64, i64)> + Send {
        ready(self.provider_add_now(namespace, provider, requests, tokens, now_ms))
    }

    fn stats(&self) -> StoreStats {
        // The memory store is always reachable; its own admissions are
        // not "local fallback" ones.
        StoreStats::default()
    }
}
