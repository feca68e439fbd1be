//! The shared store: Redis, one server-side script per reserve and per
//! settle (one round trip each), keys that expire with their window, and a
//! local fallback while Redis is unreachable.

mod config;
mod keys;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use redis::aio::ConnectionManager;
use redis::Script;
use smallvec::SmallVec;

pub(crate) use self::config::manager_config;
pub use self::config::RedisConfig;
pub use self::keys::{counter_key, provider_key};
use crate::memory::{MemTicket, MemoryStore};
use crate::store::{Counts, Plan, QuotaStore, Reserved, StoreStats, INLINE};
use crate::window::{unix_ms, Window};

/// Quota counters in Redis, shared by every sidecar pointing at it.
#[derive(Debug, Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cfg: RedisConfig,
    conn: ConnectionManager,
    reserve: Script,
    settle: Script,
    local: MemoryStore,
    degraded: AtomicBool,
    /// Increases at each recovery: a failure of a call started before the
    /// latest recovery is that call's own, not a new outage.
    epoch: AtomicU64,
    next_probe_ms: AtomicU64,
    transitions: AtomicU64,
    errors: AtomicU64,
    local_admissions: AtomicU64,
    fail_closed_refusals: AtomicU64,
    dropped_settlements: AtomicU64,
    pending: Mutex<VecDeque<(SharedTicket, SmallVec<[i64; INLINE]>)>>,
    replaying: AtomicBool,
}

/// The keys a reservation counted in Redis.
#[derive(Debug, Clone)]
pub struct SharedTicket {
    keys: SmallVec<[(String, bool); INLINE]>,
    lease: u64,
}

/// Where a reservation was counted.
#[derive(Debug)]
pub enum RedisTicket {
    /// In Redis.
    Shared(SharedTicket),
    /// On the local fallback during an outage; settled there too.
    Local(MemTicket),
}

impl RedisStore {
    /// A store for `cfg.url`. Connects lazily: a Redis that is down at
    /// start-up only puts the store in degraded mode. Must be called
    /// inside a tokio runtime.
    pub fn new(cfg: RedisConfig) -> Result<RedisStore, redis::RedisError> {
        let client = redis::Client::open(cfg.url.as_str())?;
        let conn = ConnectionManager::new_lazy_with_config(client, manager_config(&cfg))?;
        Ok(RedisStore {
            inner: Arc::new(Inner {
                local: MemoryStore::with_divisor(cfg.local_share_divisor),
                cfg,
                conn,
                reserve: Script::new(include_str!("redis_store/reserve.lua")),
                settle: Script::new(include_str!("redis_store/settle.lua")),
                degraded: AtomicBool::new(false),
                epoch: AtomicU64::new(0),
                next_probe_ms: AtomicU64::new(0),
                transitions: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                local_admissions: AtomicU64::new(0),
                fail_closed_refusals: AtomicU64::new(0),
                dropped_settlements: AtomicU64::new(0),
                pending: Mutex::default(),
                replaying: AtomicBool::new(false),
            }),
        })
    }

    /// The local fallback (tests and diagnostics).
    pub fn local(&self) -> &MemoryStore {
        &self.inner.local
    }

    /// The connection, for callers sharing it (usage records, reports).
    pub fn connection(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }
}

fn wall_ms() -> u64 {
    unix_ms(SystemTime::now())
}

impl Inner {
    /// Whether this call should try Redis: always while healthy; while
    /// degraded, one call per probe interval.
    fn try_shared(&self) -> bool {
        if !self.degraded.load(Ordering::Acquire) {
            return true;
        }
        let now = wall_ms();
        let next = self.next_probe_ms.load(Ordering::Acquire);
        now >= next
            && self
                .next_probe_ms
                .compare_exchange(
                    next,
                    now + self.cfg.probe_interval.as_millis() as u64,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// A call started at `epoch` failed.
    fn failed(&self, what: &str, err: &str, epoch: u64) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if epoch != self.epoch() {
            // Started on the connection that failed before the recovery.
            return;
        }
        self.next_probe_ms.store(
            wall_ms() + self.cfg.probe_interval.as_millis() as u64,
            Ordering::Release,
        );
        if !self.degraded.swap(true, Ordering::AcqRel) {
            self.transitions.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                store = "redis",
                op = what,
                error = err,
                "quota store unreachable: counting locally (limits / {}) or failing closed, as each quota says",
                self.cfg.local_share_divisor.max(1)
            );
        }
    }

    fn succeeded(self: &Arc<Self>) {
        if self.degraded.swap(false, Ordering::AcqRel) {
            self.epoch.fetch_add(1, Ordering::AcqRel);
            self.transitions.fetch_add(1, Ordering::Relaxed);
            let pending = self
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len();
            tracing::info!(
                store = "redis",
                pending_settlements = pending,
                "quota store reachable again: new reservations are shared again"
            );
        }
        if !self.pending_is_empty() && !self.replaying.swap(true, Ordering::AcqRel) {
            let me = self.clone();
            tokio::spawn(async move {
                me.replay().await;
                me.replaying.store(false, Ordering::Release);
            });
        }
    }

    fn pending_is_empty(&self) -> bool {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    fn hold(&self, ticket: SharedTicket, deltas: SmallVec<[i64; INLINE]>) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.len() >= self.cfg.max_pending_settlements {
            let n = self.dropped_settlements.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::error!(
                    store = "redis",
                    dropped_settlements = n,
                    "quota settlement queue full: corrections dropped (reservations stay counted as reserved; slots free with their lease)"
                );
            }
            return;
        }
        pending.push_back((ticket, deltas));
    }

    /// Applies the settlements held during an outage, oldest first.
    async fn replay(self: &Arc<Self>) {
        loop {
            let next = self
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop_front();
            let Some((ticket, deltas)) = next else { return };
            let epoch = self.epoch();
            if let Err(e) = self.settle_shared(&ticket, &deltas).await {
                self.failed("replay", &e, epoch);
                self.pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push_front((ticket, deltas));
                return;
            }
        }
    }

    async fn reserve_shared(&self, plan: &Plan<'_>) -> Result<Reserved<RedisTicket>, String> {
        let mut inv = self.reserve.prepare_invoke();
        inv.arg(plan.lease)
            .arg(plan.now_ms)
            .arg(self.cfg.lease.as_millis() as u64);
        let slack = self.cfg.key_slack.as_millis() as u64;
        let mut keys: SmallVec<[(String, bool); INLINE]> = SmallVec::new();
        for e in &plan.entries {
            let key = counter_key(e);
            let concurrency = e.window.1 == u64::MAX;
            let ttl = if concurrency {
                slack
            } else {
                e.window.1.saturating_sub(plan.now_ms) + slack
            };
            inv.key(key.as_str())
                .arg(if concurrency { "z" } else { "c" })
                .arg(e.max)
                .arg(e.add)
                .arg(if e.hard { "1" } else { "0" })
                .arg(ttl);
            keys.push((key, concurrency));
        }
        let mut conn = self.conn.clone();
        let reply: Vec<i64> =
            tokio::time::timeout(self.cfg.command_timeout, inv.invoke_async(&mut conn))
                .await
                .map_err(|_| "timed out".to_string())?
                .map_err(|e| e.to_string())?;
        match reply.first() {
            Some(1) if reply.len() == plan.entries.len() + 1 => Ok(Reserved::Admitted {
                ticket: RedisTicket::Shared(SharedTicket {
                    keys,
                    lease: plan.lease,
                }),
                used: reply[1..].iter().copied().collect::<Counts>(),
                local: false,
            }),
            Some(0) if reply.len() == 3 => Ok(Reserved::Refused {
                entry: (reply[1] - 1).max(0) as usize,
                used: reply[2],
                local: false,
            }),
            _ => Err(format!("unexpected reserve reply {reply:?}")),
        }
    }

    async fn settle_shared(
        &self,
        ticket: &SharedTicket,
        deltas: &[i64],
    ) -> Result<SmallVec<[Option<i64>; INLINE]>, String> {
        // Counters that do not move (requests, exact reservations) are
        // left out: only slots and corrections travel.
        let mut sent: SmallVec<[usize; INLINE]> = SmallVec::new();
        let mut inv = self.settle.prepare_invoke();
        inv.arg(ticket.lease);
        for (i, (key, concurrency)) in ticket.keys.iter().enumerate() {
            let delta = deltas.get(i).copied().unwrap_or(0);
            if !*concurrency && delta == 0 {
                continue;
            }
            inv.key(key.as_str())
                .arg(if *concurrency { "z" } else { "c" })
                .arg(delta);
            sent.push(i);
        }
        let mut after: SmallVec<[Option<i64>; INLINE]> = ticket.keys.iter().map(|_| None).collect();
        if sent.is_empty() {
            return Ok(after);
        }
        let mut conn = self.conn.clone();
        let reply: Vec<i64> =
            tokio::time::timeout(self.cfg.command_timeout, inv.invoke_async(&mut conn))
                .await
                .map_err(|_| "timed out".to_string())?
                .map_err(|e| e.to_string())?;
        for (i, v) in sent.into_iter().zip(reply) {
            after[i] = (v >= 0).then_some(v);
        }
        Ok(after)
    }

    fn reserve_local(&self, plan: &Plan<'_>) -> Reserved<RedisTicket> {
        if let Some(entry) = plan.entries.iter().position(|e| e.fail_closed) {
            self.fail_closed_refusals.fetch_add(1, Ordering::Relaxed);
            return Reserved::Unavailable { entry };
        }
        self.local_admissions.fetch_add(1, Ordering::Relaxed);
        match self.local.reserve_now(plan) {
            Reserved::Admitted { ticket, used, .. } => Reserved::Admitted {
                ticket: RedisTicket::Local(ticket),
                used,
                local: true,
            },
            Reserved::Refused { entry, used, .. } => Reserved::Refused {
                entry,
                used,
                local: true,
            },
            Reserved::Unavailable { entry } => Reserved::Unavailable { entry },
        }
    }

    async fn settle_any(
        self: &Arc<Self>,
        ticket: RedisTicket,
        deltas: &[i64],
    ) -> SmallVec<[Option<i64>; INLINE]> {
        let epoch = self.epoch();
        match ticket {
            RedisTicket::Local(t) => self.local.settle_now(t, deltas),
            // While degraded (and not this call's turn to probe), hold the
            // settlement without paying a timeout.
            RedisTicket::Shared(t) if !self.try_shared() => {
                let n = t.keys.len();
                self.hold(t, deltas.iter().copied().collect());
                (0..n).map(|_| None).collect()
            }
            RedisTicket::Shared(t) => match self.settle_shared(&t, deltas).await {
                Ok(after) => {
                    self.succeeded();
                    after
                }
                Err(e) => {
                    self.failed("settle", &e, epoch);
                    let n = t.keys.len();
                    self.hold(t, deltas.iter().copied().collect());
                    (0..n).map(|_| None).collect()
                }
            },
        }
    }

    async fn provider_shared(
        &self,
        namespace: &str,
        provider: &str,
        requests: i64,
        tokens: i64,
        now_ms: u64,
    ) -> Result<(i64, i64), String> {
        let (start, end) = Window::Minute.bounds(now_ms);
        let ttl = end.saturating_sub(now_ms) + self.cfg.key_slack.as_millis() as u64;
        let rpm = provider_key(namespace, provider, "rpm", start);
        let tpm = provider_key(namespace, provider, "tpm", start);
        let mut pipe = redis::pipe();
        pipe.cmd("INCRBY")
            .arg(&rpm)
            .arg(requests)
            .cmd("PEXPIRE")
            .arg(&rpm)
            .arg(ttl)
            .ignore()
            .cmd("INCRBY")
            .arg(&tpm)
            .arg(tokens)
            .cmd("PEXPIRE")
            .arg(&tpm)
            .arg(ttl)
            .ignore();
        let mut conn = self.conn.clone();
        tokio::time::timeout(self.cfg.command_timeout, pipe.query_async(&mut conn))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())
    }
}

impl QuotaStore for RedisStore {
    type Ticket = RedisTicket;

    async fn reserve(&self, plan: &Plan<'_>) -> Reserved<RedisTicket> {
        let inner = &self.inner;
        if inner.try_shared() {
            let epoch = inner.epoch();
            match inner.reserve_shared(plan).await {
                Ok(r) => {
                    inner.succeeded();
                    return r;
                }
                Err(e) => inner.failed("reserve", &e, epoch),
            }
        }
        inner.reserve_local(plan)
    }

    async fn settle(&self, ticket: RedisTicket, deltas: &[i64]) -> SmallVec<[Option<i64>; INLINE]> {
        self.inner.settle_any(ticket, deltas).await
    }

    fn release(&self, ticket: RedisTicket) {
        match ticket {
            RedisTicket::Local(t) => self.inner.local.release(t),
            RedisTicket::Shared(t) => {
                let zeros: SmallVec<[i64; INLINE]> = t.keys.iter().map(|_| 0).collect();
                // Without a runtime (dropped during shutdown) the slot
                // frees when its lease ends.
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    let inner = self.inner.clone();
                    rt.spawn(async move {
                        inner.settle_any(RedisTicket::Shared(t), &zeros).await;
                    });
                }
            }
        }
    }

    async fn provider_add(
        &self,
        namespace: &str,
        provider: &str,
        requests: i64,
        tokens: i64,
        now_ms: u64,
    ) -> (i64, i64) {
        let inner = &self.inner;
        if inner.try_shared() {
            let epoch = inner.epoch();
            match inner
                .provider_shared(namespace, provider, requests, tokens, now_ms)
                .await
            {
                Ok(v) => {
                    inner.succeeded();
                    return v;
                }
                Err(e) => inner.failed("provider", &e, epoch),
            }
        }
        inner
            .local
            .provider_add_now(namespace, provider, requests, tokens, now_ms)
    }

    fn stats(&self) -> StoreStats {
        let i = &self.inner;
        StoreStats {
            degraded: i.degraded.load(Ordering::Relaxed),
            transitions: i.transitions.load(Ordering::Relaxed),
            errors: i.errors.load(Ordering::Relaxed),
            local_admissions: i.local_admissions.load(Ordering::Relaxed),
            fail_closed_refusals: i.fail_closed_refusals.load(Ordering::Relaxed),
            pending_settlements: i
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len() as u64,
            dropped_settlements: i.dropped_settlements.load(Ordering::Relaxed),
        }
    }
}
