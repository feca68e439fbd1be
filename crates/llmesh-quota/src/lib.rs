//! The llmesh quota engine.
//!
//! `LLMQuota` limits (requests per second and minute, tokens per minute
//! and day, cost per day and month, concurrent requests) per namespace,
//! workload, pod or caller, enforced across every sidecar sharing a store.
//!
//! - A [`QuotaRuntime`] holds what outlives policy snapshots: the store,
//!   the usage board, the alerts already raised and the providers' counts.
//!   Build one per sidecar.
//! - A [`QuotaEngine`] is built per snapshot over that runtime
//!   ([`QuotaEngine::from_snapshot`]); a hot reload keeps every count.
//! - [`QuotaEngine::admit`] reserves the request's tokens, cost and slot
//!   before the call and answers a [`Decision`]; the [`Reservation`] is
//!   settled with the real usage after the call (streams: when the stream
//!   ends), or released by `Drop` if the call is abandoned.
//! - Stores implement [`QuotaStore`]: [`MemoryStore`] (exact for one
//!   process) and [`RedisStore`] (shared; one atomic script per reserve and
//!   per settle; local fallback or fail-closed while Redis is down).
//! - [`UsageWriter`] appends one [`UsageRecord`] per request to a Redis
//!   stream; [`cost`] reads it back for `llmesh cost`.
//! - [`spend`] reads a quota's shared counters back (the controller's
//!   `status` and threshold Events).
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used)]
#![deny(missing_docs)]

mod caller;
pub mod cost;
mod decision;
mod engine;
mod memory;
mod provider;
mod redis_store;
mod reservation;
mod rules;
mod runtime;
pub mod spend;
mod store;
mod usage;
mod window;

use smallvec::SmallVec;

pub use caller::{CallerHasher, CallerId};
pub use decision::{
    Admission, Alert, Decision, LimitRef, ProviderBudget, QuotaUsage, RateLimitInfo, RejectReason,
    Rejection, Settled,
};
pub use engine::QuotaEngine;
pub use memory::{MemTicket, MemoryStore};
pub use redis_store::{
    counter_key, provider_key, RedisConfig, RedisStore, RedisTicket, SharedTicket,
};
pub use reservation::Reservation;
pub use rules::{micro_usd, Limit, LimitName, Rule, Unit, DEFAULT_CALLER_HEADER, MICRO_USD};
pub use runtime::QuotaRuntime;
pub use store::{Counts, Plan, PlanEntry, QuotaStore, Reserved, ScopeId, StoreStats};
pub use usage::{UsageConfig, UsageRecord, UsageStats, UsageWriter, USAGE_STREAM};
pub use window::{unix_ms, Window};

/// The store a sidecar is configured with.
#[derive(Debug)]
pub enum AnyStore {
    /// In process memory (the embedded default).
    Memory(MemoryStore),
    /// Shared through Redis.
    Redis(RedisStore),
}

/// A reservation's ticket in an [`AnyStore`].
#[derive(Debug)]
pub enum AnyTicket {
    /// Of the memory store.
    Memory(MemTicket),
    /// Of the Redis store.
    Redis(RedisTicket),
}

impl QuotaStore for AnyStore {
    type Ticket = AnyTicket;

    async fn reserve(&self, plan: &Plan<'_>) -> Reserved<AnyTicket> {
        match self {
            AnyStore::Memory(m) => map_ticket(m.reserve_now(plan), AnyTicket::Memory),
            AnyStore::Redis(r) => map_ticket(r.reserve(plan).await, AnyTicket::Redis),
        }
    }

    async fn settle(&self, ticket: AnyTicket, deltas: &[i64]) -> SmallVec<[Option<i64>; 8]> {
        match (self, ticket) {
            (AnyStore::Memory(m), AnyTicket::Memory(t)) => m.settle_now(t, deltas),
            (AnyStore::Redis(r), AnyTicket::Redis(t)) => r.settle(t, deltas).await,
            // A ticket always comes from the store that issued it.
            _ => SmallVec::new(),
        }
    }

    fn release(&self, ticket: AnyTicket) {
        match (self, ticket) {
            (AnyStore::Memory(m), AnyTicket::Memory(t)) => m.release(t),
            (AnyStore::Redis(r), AnyTicket::Redis(t)) => r.release(t),
            _ => {}
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
        match self {
            AnyStore::Memory(m) => {
                m.provider_add(namespace, provider, requests, tokens, now_ms)
                    .await
            }
            AnyStore::Redis(r) => {
                r.provider_add(namespace, provider, requests, tokens, now_ms)
                    .await
            }
        }
    }

    fn stats(&self) -> StoreStats {
        match self {
            AnyStore::Memory(m) => m.stats(),
            AnyStore::Redis(r) => r.stats(),
        }
    }
}

fn map_ticket<T, U>(r: Reserved<T>, f: impl FnOnce(T) -> U) -> Reserved<U> {
    match r {
        Reserved::Admitted {
            ticket,
            used,
            local,
        } => Reserved::Admitted {
            ticket: f(ticket),
            used,
            local,
        },
        Reserved::Refused { entry, used, local } => Reserved::Refused { entry, used, local },
        Reserved::Unavailable { entry } => Reserved::Unavailable { entry },
    }
}
