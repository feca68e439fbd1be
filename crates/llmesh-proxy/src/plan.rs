//! The attempt plan: which backend a request tries next, and whether it
//! waits, retries, fails over or stops.
//!
//! A [`Plan`] is a state machine with no I/O and no clock of its own: the
//! attempt stage asks it for the next [`Step`] (`Try`, `Wait` or `Stop`),
//! makes the attempt, and tells it the [`Outcome`]; every decision reads the
//! time it is given. The same plan picks the backend a broken stream
//! continues on ([`Plan::continuation`]) and the second backend of a hedge
//! ([`Plan::hedge_partner`]), so retries, failover, hedging and
//! continuation follow one set of rules: the route's strategy and priority
//! groups, its breakers, its retry budget, the providers' pacing, and the
//! request's data classes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use llmesh_api::ErrorClass;
use llmesh_policy::{Provider, Route};
use llmesh_resilience::{balance, BackendState, Backoff, Candidate, Strategy};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use smallvec::SmallVec;

use crate::runtime::{BackendRuntime, RouteRuntime};
use crate::table::Table;

/// Where a backend sits in its route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// The route's own backend at this index.
    Own(usize),
    /// Backend `.1` of fallback chain `.0`.
    Chain(usize, usize),
}

/// A backend to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    /// The backend.
    pub slot: Slot,
    /// Race a second backend if this one has produced nothing after this
    /// long (the route's hedge, on the first attempt only).
    pub hedge: Option<Duration>,
}

/// What the attempt stage does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Try this backend.
    Try(Pick),
    /// Wait this long (a retry's backoff or the upstream's Retry-After),
    /// then ask again.
    Wait(Duration),
    /// Stop trying.
    Stop(Stop),
}

/// Why the plan stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The failure of the attempt on this backend is the answer.
    Failed(Slot),
    /// No backend could be tried at all (every breaker open, nothing
    /// cleared for the request's data).
    NoHealthyBackend,
}

/// How an attempt on a picked backend went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It answered: the plan is done.
    Answered,
    /// It failed with this class; `retry_after` is the upstream's.
    Failed {
        /// The error class.
        class: ErrorClass,
        /// The upstream's Retry-After, if any.
        retry_after: Option<Duration>,
    },
    /// It was not made: the prompt cannot fit the backend's context window
    /// (treated as a context-length failure without a call).
    Skipped,
    /// It was not made: the backend's breaker gave its last probe slot to
    /// another request. The plan picks again.
    Busy,
}

/// What the plan decided after an outcome, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The request has its answer.
    Answered,
    /// Pick again (a busy breaker).
    Again,
    /// Retry on the route's own backends after `wait`.
    Retry {
        /// The class retried.
        class: ErrorClass,
        /// The wait before the retry.
        wait: Duration,
    },
    /// Move to (or on in) fallback chain `chain`.
    Failover {
        /// The class failed over.
        class: ErrorClass,
        /// The chain's index.
        chain: usize,
    },
    /// A retry or failover was refused by the route's retry budget.
    BudgetExhausted,
    /// The last failure is final.
    Final,
}

/// What the plan needs of the request besides the route.
#[derive(Debug, Clone)]
pub struct PlanInput {
    /// Data classes every chosen provider must be cleared for.
    pub restricted: Vec<String>,
    /// The route's total deadline for the request.
    pub deadline: Instant,
    /// Pace under the providers' published limits (the table's engine).
    pub pacing: Option<Arc<llmesh_quota::QuotaEngine>>,
    /// Seed of the plan's random choices (balancing, jitter).
    pub seed: u64,
    /// Only this provider may serve (a Responses follow-up goes back to
    /// the provider that holds the conversation).
    pub pin: Option<Arc<str>>,
}

/// The attempt plan of one request (see the module doc).
pub struct Plan {
    table: Arc<Table>,
    route_index: usize,
    input: PlanInput,
    rng: SmallRng,
    /// The fallback chain in use, and the position in it.
    chain: Option<usize>,
    chain_pos: usize,
    /// Own backends tried since the last reset (bit per index).
    tried: u64,
    retries: u32,
    attempts: u32,
    decisions: u32,
    max_attempts: u32,
    hedged: bool,
    offered_hedge: bool,
    waiting: Option<Duration>,
    last: Option<Slot>,
    stopped: Option<Stop>,
    /// The canary's candidate, when this request is one of its share and
    /// has not tried it yet.
    canary: Option<usize>,
}

/// The backend at `slot` of route `route_index` in `table`.
pub fn backend_at(table: &Table, route_index: usize, slot: Slot) -> Option<&BackendRuntime> {
    let rt = table.routes.get(route_index)?;
    match slot {
        Slot::Own(i) => rt.backends.get(i),
        Slot::Chain(c, i) => rt.fallbacks.get(c)?.get(i),
    }
}

fn bit(i: usize) -> u64 {
    1u64 << i.min(63)
}

/// The cheapest way to rank by price: input plus output per million tokens.
fn price_per_mtok(b: &llmesh_policy::Backend) -> f64 {
    b.model
        .as_deref()
        .and_then(|m| b.provider.model(m))
        .and_then(|info| info.price)
        .map_or(f64::NAN, |p| (p.input + p.output) * 1e6)
}

/// A provider may receive the request: cleared for its classes, and the
/// pinned provider if there is one.
fn cleared(p: &Provider, input: &PlanInput) -> bool {
    input.pin.as_deref().is_none_or(|pin| p.name == pin)
        && (input.restricted.is_empty() || crate::dataguard::cleared(p, &input.restricted))
}

/// What selection reads of one backend, read once per selection (one
/// breaker lock per backend, not one per pass and group).
struct Seen {
    admits: bool,
    cleared: bool,
    room: bool,
    outstanding: u64,
    ewma: Option<Duration>,
    p90: Option<Duration>,
}

impl Plan {
    /// The plan of a request routed to route `route_index` of `table`.
    pub fn new(table: Arc<Table>, route_index: usize, input: PlanInput) -> Plan {
        let max_attempts = table.snap.routes.get(route_index).map_or(1, |route| {
            1 + route.retry.map_or(0, |r| r.attempts)
                + route
                    .fallbacks
                    .iter()
                    .map(|f| f.backends.len() as u32)
                    .sum::<u32>()
        });
        let mut rng = SmallRng::seed_from_u64(input.seed);
        let canary = table
            .snap
            .routes
            .get(route_index)
            .and_then(|r| r.canary.as_ref())
            .filter(|c| rng.random_range(0..100u32) < c.percent)
            .map(|c| c.index);
        Plan {
            rng,
            table,
            route_index,
            input,
            chain: None,
            chain_pos: 0,
            tried: 0,
            retries: 0,
            attempts: 0,
            decisions: 0,
            max_attempts,
            hedged: false,
            offered_hedge: false,
            waiting: None,
            last: None,
            stopped: None,
            canary,
        }
    }

    /// The route.
    pub fn route(&self) -> Option<&Arc<Route>> {
        self.table.snap.routes.get(self.route_index)
    }

    fn runtime(&self) -> Option<&RouteRuntime> {
        self.table.routes.get(self.route_index)
    }

    /// The backend at `slot`.
    pub fn backend(&self, slot: Slot) -> Option<&BackendRuntime> {
        backend_at(&self.table, self.route_index, slot)
    }

    /// Calls made so far (hedges included): `x-llmesh-attempts`.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Notes that a request starts on the route (the retry budget counts
    /// requests to bound retries by).
    pub fn deposit(&self, now: Instant) {
        if let Some(b) = self.runtime().and_then(|rt| rt.budget.as_ref()) {
            b.deposit(now);
        }
    }

    /// The next step.
    pub fn next(&mut self, now: Instant) -> Step {
        if let Some(stop) = self.stopped {
            return Step::Stop(stop);
        }
        if let Some(wait) = self.waiting.take() {
            return Step::Wait(wait);
        }
        loop {
            let picked = match self.chain {
                None => self
                    .canary_pick(now)
                    .or_else(|| self.select_own(now, 0, |_| true).map(|(i, _)| i))
                    .map(|i| {
                        self.tried |= bit(i);
                        Slot::Own(i)
                    }),
                Some(c) => self.next_in_chain(c, now),
            };
            let Some(slot) = picked else {
                // Nothing available here. If the route's own backends are
                // all out, a chain for connect failures takes over, once.
                if self.chain.is_none() {
                    let connect = self.route().and_then(|r| {
                        r.fallbacks
                            .iter()
                            .position(|f| f.on.contains(ErrorClass::Connect))
                    });
                    if let Some(c) = connect {
                        self.chain = Some(c);
                        self.chain_pos = 0;
                        continue;
                    }
                }
                let stop = self.last.map_or(Stop::NoHealthyBackend, Stop::Failed);
                self.stopped = Some(stop);
                return Step::Stop(stop);
            };
            let hedge = self
                .route()
                .and_then(|r| r.hedge)
                .filter(|_| self.chain.is_none() && !self.hedged);
            self.offered_hedge = hedge.is_some();
            return Step::Try(Pick { slot, hedge });
        }
    }

    /// Tells the plan how the attempt on `slot` went.
    pub fn record(&mut self, slot: Slot, outcome: Outcome, now: Instant) -> Verdict {
        let made = matches!(outcome, Outcome::Answered | Outcome::Failed { .. });
        if made {
            self.attempts += 1;
            self.hedged |= self.offered_hedge;
        }
        self.offered_hedge = false;
        let (class, retry_after) = match outcome {
            Outcome::Busy => return Verdict::Again,
            Outcome::Answered => {
                self.stopped = Some(Stop::Failed(slot));
                return Verdict::Answered;
            }
            Outcome::Skipped => (ErrorClass::ContextLength, None),
            Outcome::Failed { class, retry_after } => (class, retry_after),
        };
        self.last = Some(slot);
        self.decisions += 1;
        let finish = |plan: &mut Plan, v: Verdict| {
            plan.stopped = Some(Stop::Failed(slot));
            v
        };
        if class == ErrorClass::InvalidRequest
            || self.attempts >= self.max_attempts
            || self.decisions > 64
        {
            return finish(self, Verdict::Final);
        }
        let Some(route) = self.route().cloned() else {
            return finish(self, Verdict::Final);
        };
        // 1. Retry on the route's own backends.
        if let Some(r) = route
            .retry
            .filter(|r| self.chain.is_none() && r.on.contains(class) && self.retries < r.attempts)
        {
            // Retry-After speaks for the backend that sent it: another
            // backend is tried at once; the same one only after it, and not
            // at all if it is longer than we would wait.
            let tried = self.tried;
            let fresh = self
                .select_own(now, 0, |_| true)
                .is_some_and(|(i, _)| tried & bit(i) == 0);
            let wait = match retry_after {
                Some(_) if fresh => Some(Duration::ZERO),
                Some(ra) if ra > r.backoff_max => None,
                Some(ra) => Some(ra),
                None => Some(
                    Backoff {
                        base: r.backoff_base,
                        max: r.backoff_max,
                    }
                    .delay(self.retries, self.rng.random()),
                ),
            };
            if let Some(wait) = wait {
                if !self.budget_allows(now) {
                    return finish(self, Verdict::BudgetExhausted);
                }
                if now + wait >= self.input.deadline {
                    return finish(self, Verdict::Final);
                }
                self.retries += 1;
                // Each retry prefers a backend not tried yet; once all
                // were, any may be tried again.
                if !fresh {
                    self.tried = 0;
                }
                if !wait.is_zero() {
                    self.waiting = Some(wait);
                }
                return Verdict::Retry { class, wait };
            }
        }
        // 2. A fallback chain for this class.
        let target = match self.chain {
            Some(c) if route.fallbacks.get(c).is_some_and(|f| f.on.contains(class)) => Some(c),
            _ => route.fallbacks.iter().position(|f| f.on.contains(class)),
        };
        if let Some(c) = target {
            if !self.budget_allows(now) {
                return finish(self, Verdict::BudgetExhausted);
            }
            if self.chain != Some(c) {
                self.chain = Some(c);
                self.chain_pos = 0;
            }
            return Verdict::Failover { class, chain: c };
        }
        finish(self, Verdict::Final)
    }

    /// The second backend of a hedge: one of the route's own not tried yet,
    /// within the retry budget, whose breaker gives a permit. It counts as
    /// an attempt.
    pub fn hedge_partner(&mut self, now: Instant) -> Option<usize> {
        let tried = self.tried;
        let (i, _) = self
            .select_own(now, 0, |_| true)
            .filter(|&(i, _)| tried & bit(i) == 0)?;
        if !self.budget_allows(now) {
            return None;
        }
        let b = self.runtime()?.backends.get(i)?;
        if !b.state.breaker.try_acquire(now) {
            return None;
        }
        self.attempts += 1;
        Some(i)
    }

    /// The backend a stream broken on `current` continues on: one of the
    /// route's own, by the same strategy, priority groups, pacing and
    /// clearance as any attempt, able to continue a partial answer
    /// (`can_continue`), whose breaker gives a permit.
    pub fn continuation(
        &mut self,
        current: &BackendState,
        now: Instant,
        can_continue: impl Fn(&Provider) -> bool,
    ) -> Option<usize> {
        let mut refused = 0u64;
        loop {
            let (i, _) = self.select_own(now, refused, |b| {
                !std::ptr::eq(b.state.as_ref(), current) && can_continue(&b.backend.provider)
            })?;
            let b = self.runtime()?.backends.get(i)?;
            if b.state.breaker.try_acquire(now) {
                self.attempts += 1;
                return Some(i);
            }
            refused |= bit(i);
            if refused.count_ones() as usize >= self.runtime()?.backends.len() {
                return None;
            }
        }
    }

    fn budget_allows(&self, now: Instant) -> bool {
        self.runtime()
            .and_then(|rt| rt.budget.as_ref())
            .is_none_or(|b| b.try_withdraw(now))
    }

    /// The canary's candidate, once, for a request of its share, while it
    /// may take the request; afterwards (it failed, or could not take it)
    /// the route's own backends serve.
    fn canary_pick(&mut self, now: Instant) -> Option<usize> {
        let i = self.canary.take()?;
        let b = self.table.routes.get(self.route_index)?.backends.get(i)?;
        (cleared(&b.backend.provider, &self.input)
            && b.state.breaker.would_admit(now)
            && b.credential_ready())
        .then_some(i)
    }

    /// A backend of the route's own, by its strategy, from the best
    /// priority group that has an available backend. Backends already tried
    /// are avoided while others are available, and so are providers whose
    /// published per-minute budget is used up; `excluded` and backends
    /// `eligible` refuses never are. The flag says whether the pick is
    /// untried.
    fn select_own(
        &mut self,
        now: Instant,
        excluded: u64,
        eligible: impl Fn(&BackendRuntime) -> bool,
    ) -> Option<(usize, bool)> {
        let (roll, roll2): (u64, u64) = (self.rng.random(), self.rng.random());
        let route = self.table.snap.routes.get(self.route_index)?;
        let rt = self.table.routes.get(self.route_index)?;
        // The canary's candidate is never picked by the strategy: only for
        // its share of requests, by `canary_pick`.
        let excluded = excluded | route.canary.as_ref().map_or(0, |c| bit(c.index));
        let restricted = &self.input;
        let tried = self.tried;
        // The common case, one backend, needs no balancing.
        if let [only] = rt.backends.as_slice() {
            let ok = excluded & 1 == 0
                && eligible(only)
                && cleared(&only.backend.provider, restricted)
                && only.state.breaker.would_admit(now)
                && only.credential_ready();
            return ok.then_some((0, tried & 1 == 0));
        }
        let needs_p90 = matches!(route.strategy, Strategy::Cost { .. });
        let wall = crate::clock::wall();
        let seen: SmallVec<[Seen; 8]> =
            rt.backends
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let usable = excluded & bit(i) == 0 && eligible(b);
                    Seen {
                        admits: usable && b.state.breaker.would_admit(now) && b.credential_ready(),
                        cleared: usable && cleared(&b.backend.provider, restricted),
                        room: self.input.pacing.as_ref().is_none_or(|e| {
                            crate::quota::has_room(e, &b.backend.provider.name, wall)
                        }),
                        outstanding: b
                            .state
                            .outstanding
                            .load(std::sync::atomic::Ordering::Relaxed),
                        ewma: b.state.ttft.get(),
                        // p90 sorts a sample window: only the cost strategy pays.
                        p90: if needs_p90 {
                            b.state.latency.p90()
                        } else {
                            None
                        },
                    }
                })
                .collect();
        let paced = seen.iter().any(|s| !s.room);
        let passes: &[(bool, bool)] = if paced {
            &[(true, true), (false, true), (true, false), (false, false)]
        } else {
            &[(true, false), (false, false)]
        };
        let mut cands: SmallVec<[Candidate; 8]> = SmallVec::new();
        for &(avoid_tried, avoid_paced) in passes {
            // Priority groups in ascending order, without collecting them.
            let mut group = rt.backends.iter().map(|b| b.backend.priority).min();
            while let Some(g) = group {
                cands.clear();
                cands.extend(
                    rt.backends
                        .iter()
                        .zip(&seen)
                        .enumerate()
                        .map(|(i, (b, s))| Candidate {
                            weight: b.backend.weight,
                            outstanding: s.outstanding,
                            ewma: s.ewma,
                            p90: s.p90,
                            cost_per_mtok: price_per_mtok(&b.backend),
                            available: b.backend.priority == g
                                && !(avoid_tried && tried & bit(i) != 0)
                                && (!avoid_paced || s.room)
                                && s.admits
                                && s.cleared,
                        }),
                );
                if let Some(i) = balance::pick(&route.strategy, &cands, &rt.rr, roll, roll2) {
                    return Some((i, tried & bit(i) == 0));
                }
                group = rt
                    .backends
                    .iter()
                    .map(|b| b.backend.priority)
                    .filter(|&p| p > g)
                    .min();
            }
        }
        None
    }

    /// The next available backend of fallback chain `c`, moving past it.
    fn next_in_chain(&mut self, c: usize, now: Instant) -> Option<Slot> {
        let table = self.table.clone();
        let chain = table.routes.get(self.route_index)?.fallbacks.get(c)?;
        while let Some(b) = chain.get(self.chain_pos) {
            let i = self.chain_pos;
            self.chain_pos += 1;
            if cleared(&b.backend.provider, &self.input)
                && b.state.breaker.would_admit(now)
                && b.credential_ready()
            {
                return Some(Slot::Chain(c, i));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests;
