//! The store interface: the engine turns an admission into a [`Plan`] (one
//! entry per limit of every quota covering the request) and a store checks
//! and counts the whole plan atomically.

use std::fmt;
use std::future::Future;

use smallvec::SmallVec;

use crate::caller::CallerId;
use crate::rules::LimitName;

/// Plan entries kept inline: one request rarely meets more than a couple
/// of quotas.
pub(crate) const INLINE: usize = 8;

/// Whose budget a counter is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScopeId<'a> {
    /// The namespace's.
    Namespace,
    /// A workload's.
    Workload(&'a str),
    /// A pod's.
    Pod(&'a str),
    /// A caller's (`None`: requests without the caller header share one
    /// budget).
    Caller(Option<CallerId>),
}

impl fmt::Display for ScopeId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopeId::Namespace => f.write_str("ns"),
            ScopeId::Workload(w) => write!(f, "w.{w}"),
            ScopeId::Pod(p) => write!(f, "p.{p}"),
            ScopeId::Caller(Some(c)) => write!(f, "c.{c}"),
            ScopeId::Caller(None) => f.write_str("c.none"),
        }
    }
}

/// One limit to check and count.
#[derive(Debug, Clone)]
pub struct PlanEntry<'a> {
    /// Namespace of the quota.
    pub namespace: &'a str,
    /// Name of the quota.
    pub quota: &'a str,
    /// Whose counter.
    pub scope: ScopeId<'a>,
    /// Which limit.
    pub limit: LimitName,
    /// Identity of this counter across snapshots and windows (quota, limit
    /// and scope), for the memory store.
    pub counter_id: u64,
    /// Window start and end in ms since the epoch (0 and `u64::MAX` for
    /// concurrency).
    pub window: (u64, u64),
    /// Budget per window.
    pub max: u64,
    /// What this request adds.
    pub add: u64,
    /// Exceeding it refuses the whole plan (reject and downgrade quotas);
    /// otherwise it is counted past the limit (warn quotas).
    pub hard: bool,
    /// The quota refuses requests while the shared store is unreachable.
    pub fail_closed: bool,
}

/// Everything one admission checks, in evaluation order (reject quotas
/// first, so a reject wins over a downgrade).
#[derive(Debug, Clone)]
pub struct Plan<'a> {
    /// Now, ms since the epoch.
    pub now_ms: u64,
    /// Unique id of this reservation (its concurrency lease).
    pub lease: u64,
    /// The limits.
    pub entries: SmallVec<[PlanEntry<'a>; INLINE]>,
}

/// Counter values, one per plan entry.
pub type Counts = SmallVec<[i64; INLINE]>;

/// What a store did with a plan.
#[derive(Debug)]
pub enum Reserved<T> {
    /// Every hard limit had room: all entries were counted. `used` holds
    /// each counter after the increment.
    Admitted {
        /// What settles or releases the reservation.
        ticket: T,
        /// Counters after this request.
        used: Counts,
        /// Counted on the local fallback, not the shared store.
        local: bool,
    },
    /// Entry `entry` (hard) has no room; nothing was counted.
    Refused {
        /// Index in the plan.
        entry: usize,
        /// Its counter now.
        used: i64,
        /// Decided on the local fallback.
        local: bool,
    },
    /// The shared store is unreachable and entry `entry`'s quota fails
    /// closed; nothing was counted.
    Unavailable {
        /// Index in the plan.
        entry: usize,
    },
}

/// A store of quota counters.
///
/// Implementations must apply a plan atomically: either every entry is
/// counted or none is, and no other plan sees a state in between.
pub trait QuotaStore: Send + Sync + 'static {
    /// What identifies a reservation's counters for settle and release.
    type Ticket: Send + Sync + 'static;

    /// Checks every hard entry and, when all have room, counts every entry.
    fn reserve(&self, plan: &Plan<'_>) -> impl Future<Output = Reserved<Self::Ticket>> + Send;

    /// Adds `deltas[i]` (actual minus reserved, may be negative) to the
    /// ticket's entry `i` in the window it was reserved in, and frees its
    /// concurrency slots. Returns the counters after, `None` where the
    /// window is gone or the store could not be reached.
    fn settle(
        &self,
        ticket: Self::Ticket,
        deltas: &[i64],
    ) -> impl Future<Output = SmallVec<[Option<i64>; INLINE]>> + Send;

    /// Frees the ticket's concurrency slots without waiting (a reservation
    /// dropped unsettled); token and cost counts stay as reserved.
    fn release(&self, ticket: Self::Ticket);

    /// Adds to a provider's request and token counters of the minute
    /// holding `now_ms` and returns both totals after.
    fn provider_add(
        &self,
        namespace: &str,
        provider: &str,
        requests: i64,
        tokens: i64,
        now_ms: u64,
    ) -> impl Future<Output = (i64, i64)> + Send;

    /// Health and counters for metrics.
    fn stats(&self) -> StoreStats;
}

/// What a store reports for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// The shared store is being bypassed (local counting or fail-closed).
    pub degraded: bool,
    /// Times the store went from reachable to unreachable or back.
    pub transitions: u64,
    /// Store operations that failed (timeouts, connection errors).
    pub errors: u64,
    /// Admissions decided on the local fallback.
    pub local_admissions: u64,
    /// Admissions refused because a fail-closed quota could not be checked.
    pub fail_closed_refusals: u64,
    /// Settlements waiting to be replayed on the shared store.
    pub pending_settlements: u64,
    /// Settlements given up (queue full) and logged.
    pub dropped_settlements: u64,
}
